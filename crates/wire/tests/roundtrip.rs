#![allow(clippy::unwrap_used)]
//! Every file under `tests/data/` goes through its wire type and must come back with the same
//! meaning: deserialize, serialize, and compare as `serde_json::Value` with the input.
//!
//! Adding a case is adding a file:
//! - `requests/*.json` → [`ChatCompletionRequest`]
//! - `responses/*.json` → [`ChatCompletion`]
//! - `chunks/*.sse` → [`ChatCompletionChunk`], one per `data:` line (`[DONE]` excepted)
//! - `errors/*.json` → [`ErrorResponse`]
//! - `models/*.json` → [`ModelList`]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uniproxy_wire::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ErrorResponse, ModelList,
    from_slice,
};

/// The files of `tests/data/{dir}`, sorted. Any file without the expected extension is an error,
/// so a misnamed case cannot be skipped silently.
fn fixtures(dir: &str, ext: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", root.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    for file in &files {
        assert!(
            file.extension().is_some_and(|e| e == ext),
            "{} is not a .{ext} file; every file in tests/data/{dir} is a case",
            file.display()
        );
    }
    files
}

/// The JSON pointer of the first place where two values differ, to make a failure readable.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys()) {
                let here = format!("{at}/{key}");
                match (x.get(key), y.get(key)) {
                    (Some(v), Some(w)) => {
                        if let Some(d) = first_difference(v, w, &here) {
                            return Some(d);
                        }
                    }
                    _ => return Some(here),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, &format!("{at}/{i}"))),
        _ if a == b => None,
        _ => Some(if at.is_empty() { "/".to_owned() } else { at.to_owned() }),
    }
}

/// Round-trips one JSON text through `T`; returns a description of the failure, if any.
fn round_trip<T: DeserializeOwned + Serialize>(json: &str) -> Result<(), String> {
    let input: Value =
        serde_json::from_str(json).map_err(|e| format!("the case itself is not JSON: {e}"))?;
    let parsed: T = from_slice(json.as_bytes())
        .map_err(|e| format!("does not parse as {}: {e}", std::any::type_name::<T>()))?;
    let output = serde_json::to_value(&parsed).unwrap();
    if input == output {
        return Ok(());
    }
    Err(format!(
        "round trip changed the value at {}\n--- input\n{}\n--- output\n{}",
        first_difference(&input, &output, "").unwrap_or_default(),
        serde_json::to_string_pretty(&input).unwrap(),
        serde_json::to_string_pretty(&output).unwrap(),
    ))
}

/// Checks every `.json` case of `dir` with `T`; returns how many there were.
fn check_json_dir<T: DeserializeOwned + Serialize>(dir: &str, failures: &mut String) -> usize {
    let files = fixtures(dir, "json");
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        if let Err(why) = round_trip::<T>(&text) {
            writeln!(failures, "\n=== {}: {why}", file.display()).unwrap();
        }
    }
    files.len()
}

/// The payloads of an SSE body's `data:` lines, with the line number of each, `[DONE]` excepted.
/// Comment lines (`: OPENROUTER PROCESSING`), blank lines and `event:` lines are not chunks.
fn sse_data(body: &str) -> Vec<(usize, &str)> {
    body.lines()
        .enumerate()
        .filter_map(|(i, line)| Some((i + 1, line.strip_prefix("data:")?.trim_start())))
        .filter(|(_, data)| *data != "[DONE]")
        .collect()
}

#[test]
fn every_fixture_round_trips() {
    let mut failures = String::new();

    let requests = check_json_dir::<ChatCompletionRequest>("requests", &mut failures);
    let responses = check_json_dir::<ChatCompletion>("responses", &mut failures);
    let errors = check_json_dir::<ErrorResponse>("errors", &mut failures);
    let models = check_json_dir::<ModelList>("models", &mut failures);

    let streams = fixtures("chunks", "sse");
    let mut chunks = 0;
    for file in &streams {
        let body = std::fs::read_to_string(file).unwrap();
        if !body.ends_with("data: [DONE]\n\n") {
            writeln!(failures, "\n=== {}: does not end with `data: [DONE]`", file.display())
                .unwrap();
        }
        let data = sse_data(&body);
        if data.is_empty() {
            writeln!(failures, "\n=== {}: has no chunk", file.display()).unwrap();
        }
        for (line, json) in data {
            chunks += 1;
            if let Err(why) = round_trip::<ChatCompletionChunk>(json) {
                writeln!(failures, "\n=== {}:{line}: {why}", file.display()).unwrap();
            }
        }
    }

    assert!(failures.is_empty(), "fixtures that do not round-trip:{failures}");
    // Guards against a test that passes because it found nothing to check.
    assert!(requests >= 15, "only {requests} request cases");
    assert!(responses >= 10, "only {responses} response cases");
    assert!(streams.len() >= 8, "only {} stream cases", streams.len());
    assert!(chunks >= 50, "only {chunks} chunks");
    assert!(errors >= 5, "only {errors} error cases");
    assert!(models >= 1, "no models case");
}

#[test]
fn round_trip_reports_a_changed_value() {
    // The checker itself must notice a lost field, or every case above would pass vacuously.
    #[derive(serde::Deserialize, Serialize)]
    struct Lossy {
        kept: u32,
    }
    let why = round_trip::<Lossy>(r#"{"kept":1,"nested":{"dropped":[1,2]}}"#).unwrap_err();
    assert!(why.contains("at /nested\n"), "{why}");
    assert!(round_trip::<Lossy>(r#"{"kept":1}"#).is_ok());
}
