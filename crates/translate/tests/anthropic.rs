//! Data-driven tests of the Anthropic translator: every case is a file under
//! `tests/data/anthropic/`, compared with its `.expected.*` sibling (`UPDATE_EXPECT=1`
//! rewrites them; review the diff).
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Lets `cargo bolero test` link this target too (see tests/fuzz.rs).
#[cfg(fuzzing)]
use bolero as _;

mod support;

use bytes::Bytes;
use proptest::prelude::*;
use uniproxy_translate::{Provider, ProviderKind, sse};

const BASE_URL: &str = "https://api.anthropic.com/v1";

fn anthropic() -> Box<dyn Provider> {
    support::test_provider(ProviderKind::Anthropic, BASE_URL)
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn requests() {
    let p = anthropic();
    let mut failures = Vec::new();
    for case in support::cases("tests/data/anthropic/requests", ".openai.json") {
        let input = std::fs::read(&case).unwrap();
        let out = support::pretty(&support::build(&*p, &input));
        let expected = support::sibling(&case, ".openai.json", ".expected.json");
        failures.extend(support::check(&expected, &out));
    }
    support::report(failures);
}

/// `error-<status>-….response.json` is answered with that status, every other case with 200.
fn status_of(name: &str) -> u16 {
    name.strip_prefix("error-")
        .and_then(|rest| rest.split('-').next())
        .map(|s| s.parse().expect("error-<status>- names a status"))
        .unwrap_or(200)
}

#[test]
fn responses() {
    let p = anthropic();
    let mut failures = Vec::new();
    for case in support::cases("tests/data/anthropic/responses", ".response.json") {
        let body = std::fs::read(&case).unwrap();
        let (status, ctx) = (status_of(&file_name(&case)), support::context_of(&case));
        let out = support::pretty(&support::respond(&*p, status, &body, &ctx));
        let expected = support::sibling(&case, ".response.json", ".expected.json");
        failures.extend(support::check(&expected, &out));
    }
    support::report(failures);
}

/// `*.usage.sse` cases are replayed as if the client asked for `stream_options.include_usage`,
/// `*.json-object.*` ones (here and in the answers) as if it asked for a JSON object.
#[test]
fn streams() {
    let p = anthropic();
    let mut failures = Vec::new();
    for case in support::cases("tests/data/anthropic/streams", ".sse") {
        let bytes = std::fs::read(&case).unwrap();
        let out = support::replay_every_way(&*p, &bytes, &support::context_of(&case));
        let expected = support::sibling(&case, ".sse", ".expected.jsonl");
        failures.extend(support::check(&expected, &out));
    }
    support::report(failures);
}

/// One Anthropic event, valid or nearly so, for the property tests.
fn event() -> impl Strategy<Value = (Option<String>, String)> {
    let index = 0u32..4;
    let text = "[a-z\"{}\\\\ ]{0,6}";
    prop_oneof![
        Just(r#"{"type":"message_start","message":{"model":"m","usage":{"input_tokens":3}}}"#.to_owned()),
        index.clone().prop_map(|i| format!(
            r#"{{"type":"content_block_start","index":{i},"content_block":{{"type":"text","text":""}}}}"#
        )),
        index.clone().prop_map(|i| format!(
            r#"{{"type":"content_block_start","index":{i},"content_block":{{"type":"tool_use","id":"t{i}","name":"f","input":{{}}}}}}"#
        )),
        index.clone().prop_map(|i| format!(
            r#"{{"type":"content_block_start","index":{i},"content_block":{{"type":"thinking","thinking":""}}}}"#
        )),
        (index.clone(), text).prop_map(|(i, t)| format!(
            r#"{{"type":"content_block_delta","index":{i},"delta":{{"type":"text_delta","text":{}}}}}"#,
            serde_json::Value::String(t)
        )),
        (index.clone(), text).prop_map(|(i, t)| format!(
            r#"{{"type":"content_block_delta","index":{i},"delta":{{"type":"input_json_delta","partial_json":{}}}}}"#,
            serde_json::Value::String(t)
        )),
        (index.clone(), text).prop_map(|(i, t)| format!(
            r#"{{"type":"content_block_delta","index":{i},"delta":{{"type":"thinking_delta","thinking":{}}}}}"#,
            serde_json::Value::String(t)
        )),
        index.clone().prop_map(|i| format!(r#"{{"type":"content_block_stop","index":{i}}}"#)),
        prop_oneof![Just("end_turn"), Just("tool_use"), Just("max_tokens"), Just("new_reason")]
            .prop_map(|r| format!(
                r#"{{"type":"message_delta","delta":{{"stop_reason":"{r}"}},"usage":{{"output_tokens":2}}}}"#
            )),
        Just(r#"{"type":"message_stop"}"#.to_owned()),
        Just(r#"{"type": "ping"}"#.to_owned()),
        Just(r#"{"type":"error","error":{"type":"api_error","message":"boom"}}"#.to_owned()),
        Just(r#"{"type":"brand_new"}"#.to_owned()),
        "[ -~]{0,20}",
    ]
    .prop_map(|data| {
        let name = serde_json::from_str::<serde_json::Value>(&data)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned));
        (name, data)
    })
}

proptest! {
    #[test]
    fn arbitrary_event_sequences_never_panic(
        events in proptest::collection::vec(event(), 0..40),
        include_usage: bool,
    ) {
        let p = anthropic();
        let mut stream = p.stream(&support::context(include_usage));
        for (name, data) in events {
            let _ = stream.push(&sse::SseEvent::new(name, Bytes::from(data)));
        }
        let _ = stream.finish();
        prop_assert!(stream.is_done());
        // A stream that ended without an error left every tool call with arguments.
        let assembled = stream.assembled();
        for call in assembled.choices.iter().flat_map(|c| &c.tool_calls).filter(|_| assembled.error.is_none()) {
            prop_assert!(!call.arguments.is_empty());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let p = anthropic();
        let mut stream = p.stream(&support::context(true));
        let mut decoder = sse::Decoder::new();
        for event in decoder.feed(&bytes).unwrap().into_iter().chain(decoder.finish()) {
            let _ = stream.push(&event);
        }
        let _ = stream.finish();
        prop_assert!(stream.is_done());
    }
}
