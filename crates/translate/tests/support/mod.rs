//! The data-driven harness shared by the translator tests: cases are files under
//! `tests/data/<platform>/`, and each output is compared with its `.expected.*` sibling.
//! Run with `UPDATE_EXPECT=1` to rewrite the expectations; review the diff.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde_json::{Value, json};
use uniproxy_translate::{Provider, ProviderConfig, ProviderKind, ResponseContext, provider, sse};
use uniproxy_wire::{ChatCompletionRequest, from_slice};

/// The provider every case of a platform is run with.
pub fn test_provider(kind: ProviderKind, base_url: &str) -> Box<dyn Provider> {
    let mut config = ProviderConfig::new(kind, base_url, "test-key", "test-model");
    config.max_tokens = 4096;
    provider(&config).expect("test provider config is valid")
}

/// Files in `dir` (relative to the crate) whose names end in `suffix`, sorted. Panics when
/// there are none, so a moved folder cannot make a test pass by testing nothing.
pub fn cases(dir: &str, suffix: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no `*{suffix}` cases in {}", root.display());
    out
}

/// `dir/name.in_suffix` → `dir/name.out_suffix`.
pub fn sibling(path: &Path, in_suffix: &str, out_suffix: &str) -> PathBuf {
    let name = path.file_name().unwrap().to_string_lossy();
    let stem = name.strip_suffix(in_suffix).unwrap();
    path.with_file_name(format!("{stem}{out_suffix}"))
}

/// Compares `actual` with the file, or rewrites the file when `UPDATE_EXPECT=1`.
/// Returns a description of the mismatch instead of panicking, so one run reports every case.
pub fn check(expected: &Path, actual: &str) -> Option<String> {
    #[allow(clippy::disallowed_methods)] // Test-only switch, as in expect-test.
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    if update {
        std::fs::write(expected, actual).unwrap();
        return None;
    }
    let want = std::fs::read_to_string(expected).unwrap_or_default();
    if want == actual {
        None
    } else {
        Some(format!(
            "{} differs (UPDATE_EXPECT=1 rewrites it)\n--- expected\n{want}\n--- actual\n{actual}",
            expected.display()
        ))
    }
}

/// Fails with every mismatch at once.
pub fn report(failures: Vec<String>) {
    assert!(failures.is_empty(), "{} case(s) failed:\n\n{}", failures.len(), failures.join("\n\n"));
}

/// Pretty JSON with a trailing newline.
pub fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap();
    s.push('\n');
    s
}

/// Builds the upstream request for an OpenAI request file: the method, URL, headers (sorted)
/// and body, or the error the client would get.
pub fn build(p: &dyn Provider, openai_request: &[u8]) -> Value {
    let request: ChatCompletionRequest = from_slice(openai_request).unwrap();
    match p.build_request(request) {
        Ok(up) => {
            let mut headers: Vec<(String, String)> = up
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                .collect();
            headers.sort();
            let headers: serde_json::Map<String, Value> =
                headers.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            let body: Value = serde_json::from_slice(&up.body).unwrap();
            json!({ "method": up.method.as_str(), "url": up.url, "headers": headers,
                    "dropped": up.dropped, "body": body })
        }
        Err(e) => json!({ "status": e.status(), "error": e.to_error_response() }),
    }
}

/// The context the cases are answered with.
pub fn context(include_usage: bool) -> ResponseContext {
    ResponseContext {
        id: "chatcmpl-test".to_owned(),
        created: 1_700_000_000,
        model: "test-model".to_owned(),
        include_usage,
        json_object: false,
        legacy_functions: false,
    }
}

/// The context a case file is answered with: as if the client asked for the usage chunk when
/// its name has `.usage.`, for a JSON object when it has `.json-object.`, and offered only
/// legacy functions when it has `.functions.`.
pub fn context_of(case: &Path) -> ResponseContext {
    let name = case.file_name().unwrap().to_string_lossy();
    let usage = name.contains(".usage.");
    ResponseContext {
        json_object: name.contains(".json-object."),
        legacy_functions: name.contains(".functions."),
        ..context(usage)
    }
}

/// Translates a non-stream answer: `{"status", "completion"}` or `{"status", "error"}`.
pub fn respond(p: &dyn Provider, status: u16, body: &[u8], ctx: &ResponseContext) -> Value {
    match p.translate_response(status, Bytes::copy_from_slice(body), ctx) {
        Ok(t) => {
            let sent: Value = serde_json::from_slice(&t.body).unwrap();
            assert_eq!(
                sent,
                serde_json::to_value(&t.completion).unwrap(),
                "body and completion agree"
            );
            json!({ "status": status, "completion": t.completion })
        }
        Err(e) => json!({ "status": e.status(), "error": e.to_error_response() }),
    }
}

/// Replays SSE bytes, cut into pieces at `cuts`, through a fresh stream translator. Returns one
/// line per frame sent to the client (the frame's data), then `ASSEMBLED <json>`.
pub fn replay(p: &dyn Provider, bytes: &[u8], ctx: &ResponseContext, cuts: &[usize]) -> String {
    let mut stream = p.stream(ctx);
    let mut decoder = sse::Decoder::new();
    let mut frames: Vec<Bytes> = Vec::new();
    let mut start = 0;
    let mut push = |events: Vec<sse::SseEvent>, frames: &mut Vec<Bytes>| {
        for ev in events {
            match stream.push(&ev) {
                Ok(f) => frames.extend(f),
                Err(e) => frames.push(Bytes::from(format!("data: ERR {} {e}\n\n", e.status()))),
            }
        }
    };
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let cut = cut.min(bytes.len()).max(start);
        push(decoder.feed(&bytes[start..cut]).unwrap(), &mut frames);
        start = cut;
    }
    push(decoder.finish().into_iter().collect(), &mut frames);
    match stream.finish() {
        Ok(f) => frames.extend(f),
        Err(e) => frames.push(Bytes::from(format!("data: ERR {} {e}\n\n", e.status()))),
    }
    let mut out = String::new();
    for f in frames {
        let text = std::str::from_utf8(&f).unwrap();
        let data = text.strip_prefix("data: ").and_then(|t| t.strip_suffix("\n\n"));
        out.push_str(data.unwrap_or_else(|| panic!("not a data frame: {text:?}")));
        out.push('\n');
    }
    out.push_str("ASSEMBLED ");
    out.push_str(&serde_json::to_string(stream.assembled()).unwrap());
    out.push('\n');
    out
}

/// Replays a stream whole, byte by byte, and at a few odd cuts, and checks every way gives the
/// same output; returns it.
pub fn replay_every_way(p: &dyn Provider, bytes: &[u8], ctx: &ResponseContext) -> String {
    let whole = replay(p, bytes, ctx, &[]);
    let bytewise: Vec<usize> = (1..bytes.len()).collect();
    assert_eq!(whole, replay(p, bytes, ctx, &bytewise), "byte-by-byte replay differs");
    let odd: Vec<usize> = (0..bytes.len()).step_by(7).collect();
    assert_eq!(whole, replay(p, bytes, ctx, &odd), "7-byte replay differs");
    whole
}
