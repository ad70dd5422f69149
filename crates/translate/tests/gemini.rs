//! Data-driven tests of the Gemini translator: `tests/data/gemini/{requests,responses,streams}`.
//! Run with `UPDATE_EXPECT=1` to rewrite the expectations; review the diff.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// Lets `cargo bolero test` link this target too (see tests/fuzz.rs).
#[cfg(fuzzing)]
use bolero as _;

mod support;

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Value, json};
use support::{
    build, cases, check, context, context_of, pretty, replay, replay_every_way, report, respond,
    sibling, test_provider,
};
use uniproxy_translate::{Provider, ProviderKind, sse};
use uniproxy_wire::{ChatCompletionRequest, from_slice};

const BASE: &str = "https://generativelanguage.googleapis.com/v1beta";

fn gemini() -> Box<dyn Provider> {
    test_provider(ProviderKind::Google, BASE)
}

#[test]
fn gemini_requests() {
    let p = gemini();
    let mut failures = Vec::new();
    for case in cases("tests/data/gemini/requests", ".openai.json") {
        let input = std::fs::read(&case).unwrap();
        let out = build(p.as_ref(), &input);
        if let Some(f) = check(&sibling(&case, ".openai.json", ".expected.json"), &pretty(&out)) {
            failures.push(f);
        }
    }
    report(failures);
}

/// The key travels only in `x-goog-api-key`, and the URL follows `stream`.
#[test]
fn gemini_url_and_key() {
    let p = gemini();
    for (stream, url) in [
        (false, format!("{BASE}/models/test-model:generateContent")),
        (true, format!("{BASE}/models/test-model:streamGenerateContent?alt=sse")),
    ] {
        let body = json!({"model":"x","messages":[{"role":"user","content":"Hi"}],"stream":stream});
        let request: ChatCompletionRequest = from_slice(body.to_string().as_bytes()).unwrap();
        let up = p.build_request(request).unwrap();
        assert_eq!(up.url, url);
        assert!(!up.url.contains("test-key") && !up.url.contains("key="));
        assert!(!String::from_utf8_lossy(&up.body).contains("test-key"));
        assert_eq!(up.headers.get("x-goog-api-key").unwrap(), "test-key");
        assert!(up.headers.get("x-goog-api-key").unwrap().is_sensitive());
        let with_key: Vec<_> = up
            .headers
            .iter()
            .filter(|(_, v)| v.to_str().unwrap_or_default().contains("test-key"))
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(with_key, ["x-goog-api-key"]);
    }
}

/// A schema whose `$defs` `d0` … `dN` each use the next one twice: 2^N copies, once inlined.
fn doubling(n: usize) -> Value {
    let mut defs: serde_json::Map<String, Value> = (0..n)
        .map(|k| {
            let next = json!({"$ref": format!("#/$defs/d{}", k + 1)});
            (format!("d{k}"), json!({"type": "object", "properties": {"l": next, "r": next}}))
        })
        .collect();
    defs.insert(format!("d{n}"), json!({"type": "string"}));
    json!({"type": "object", "properties": {"root": {"$ref": "#/$defs/d0"}}, "$defs": defs})
}

/// The `param` of the error that refuses the request, or the size of the body it makes.
fn refused_at(request: Value) -> Result<String, usize> {
    let request: ChatCompletionRequest = from_slice(request.to_string().as_bytes()).unwrap();
    match gemini().build_request(request) {
        Ok(up) => Err(up.body.len()),
        Err(e) => Ok(e.to_error_response().error.param.flatten().unwrap_or_default()),
    }
}

/// A 2 KB request asked for gigabytes: inlining copies, and these copies double at each step.
/// The reduction stops once a request's schemas have copied 4 MiB between them (for
/// `tools[].function.parameters`, see the case `tools-schema-ref-fan-out`).
#[test]
fn schemas_that_double_at_each_step_are_refused_before_they_are_copied() {
    let tool = |name: &str, parameters: Value| json!({"type": "function", "function": {"name": name, "parameters": parameters}});
    let request = |extra: Value| {
        let mut r = json!({"model": "x", "messages": [{"role": "user", "content": "Hi"}]});
        r.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        r
    };
    let format =
        json!({"type": "json_schema", "json_schema": {"name": "s", "schema": doubling(16)}});
    assert_eq!(
        refused_at(request(json!({"response_format": format}))).as_deref(),
        Ok("response_format.json_schema.schema.properties.root.$ref")
    );
    // Each of these fits alone (1.6 MiB copied); the request's schemas share the allowance.
    let tools: Vec<Value> = (0..3).map(|i| tool(&format!("t{i}"), doubling(14))).collect();
    assert!(refused_at(request(json!({"tools": &tools[..1]}))).is_err());
    assert_eq!(
        refused_at(request(json!({"tools": tools}))).as_deref(),
        Ok("tools[2].function.parameters.properties.root.$ref")
    );
    // A type list copies the schema's other keywords into each alternative: nested, it doubles.
    let mut nested = json!({"type": "string"});
    for _ in 0..16 {
        nested = json!({"type": ["string", "number"], "items": nested});
    }
    let parameters = json!({"type": "object", "properties": {"a": nested}});
    let refused = refused_at(request(json!({"tools": [tool("f", parameters)]}))).unwrap();
    assert!(refused.starts_with("tools[0].function.parameters.properties.a.items."), "{refused}");
    assert!(refused.ends_with(".type"), "{refused}");
}

/// Inlining is refused only past what real schemas copy (the `*-fan-out` request cases are the
/// refused ones): a definition of a dozen fields used by two thousand properties, 1.3 MB of
/// Gemini schema, still goes.
#[test]
fn a_definition_used_in_two_thousand_places_is_inlined_in_each() {
    let fields: serde_json::Map<String, Value> = (0..12)
        .map(|i| (format!("field_{i}"), json!({"type": "string", "description": "A line."})))
        .collect();
    let uses: serde_json::Map<String, Value> =
        (0..2000).map(|i| (format!("p{i}"), json!({"$ref": "#/$defs/Address"}))).collect();
    let schema = json!({
        "type": "object",
        "properties": uses,
        "$defs": {"Address": {"type": "object", "properties": fields}},
    });
    let body = json!({
        "model": "x",
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
    });
    let request: ChatCompletionRequest = from_slice(body.to_string().as_bytes()).unwrap();
    let up = gemini().build_request(request).unwrap();
    let sent: Value = serde_json::from_slice(&up.body).unwrap();
    let parameters = &sent["tools"][0]["functionDeclarations"][0]["parameters"];
    let inlined = parameters["properties"].as_object().unwrap();
    assert_eq!(inlined.len(), 2000);
    assert!(inlined.values().all(|p| p["properties"]["field_11"]["type"] == "STRING"));
    assert!(up.body.len() > 1_000_000, "{} bytes", up.body.len());
}

/// `error-<status>-….response.json` answers with that status; the rest with 200.
fn status_of(name: &str) -> u16 {
    name.strip_prefix("error-")
        .and_then(|rest| rest.split('-').next())
        .map(|s| s.parse().expect("status in the case name"))
        .unwrap_or(200)
}

#[test]
fn gemini_responses() {
    let p = gemini();
    let mut failures = Vec::new();
    for case in cases("tests/data/gemini/responses", ".response.json") {
        let body = std::fs::read(&case).unwrap();
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let out = respond(p.as_ref(), status_of(&name), &body, &context_of(&case));
        if let Some(f) = check(&sibling(&case, ".response.json", ".expected.json"), &pretty(&out)) {
            failures.push(f);
        }
    }
    report(failures);
}

#[test]
fn gemini_streams() {
    let p = gemini();
    let mut failures = Vec::new();
    for case in cases("tests/data/gemini/streams", ".sse") {
        let bytes = std::fs::read(&case).unwrap();
        let out = replay_every_way(p.as_ref(), &bytes, &context_of(&case));
        if let Some(f) = check(&sibling(&case, ".sse", ".expected.jsonl"), &out) {
            failures.push(f);
        }
    }
    report(failures);
}

/// A JSON value of any shape, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![
            "[a-z$#/]{0,12}",
            Just("#/$defs/A".to_owned()),
            Just("string".to_owned()),
            Just("null".to_owned()),
            Just("object".to_owned()),
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop_oneof![
            Just("type".to_owned()),
            Just("properties".to_owned()),
            Just("items".to_owned()),
            Just("$ref".to_owned()),
            Just("$defs".to_owned()),
            Just("A".to_owned()),
            Just("anyOf".to_owned()),
            Just("oneOf".to_owned()),
            Just("allOf".to_owned()),
            Just("enum".to_owned()),
            Just("const".to_owned()),
            Just("required".to_owned()),
            Just("candidates".to_owned()),
            Just("content".to_owned()),
            Just("parts".to_owned()),
            Just("text".to_owned()),
            Just("functionCall".to_owned()),
            Just("finishReason".to_owned()),
            Just("usageMetadata".to_owned()),
            Just("promptFeedback".to_owned()),
            Just("error".to_owned()),
            "[a-zA-Z]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary JSON events never make the stream translator panic.
    #[test]
    fn stream_never_panics_on_json(events in prop::collection::vec(any_json(), 0..5), usage in any::<bool>()) {
        let p = gemini();
        let mut stream = p.stream(&context(usage));
        for e in &events {
            let ev = sse::SseEvent::new(None, Bytes::from(e.to_string()));
            let _ = stream.push(&ev);
        }
        let _ = stream.finish();
        let _ = stream.assembled();
    }

    /// Arbitrary bytes never make the decoder and translator panic.
    #[test]
    fn stream_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let p = gemini();
        let _ = replay(p.as_ref(), &bytes, &context(true), &[3, 17, 64]);
    }

    /// The schema reducer (reached through the tool parameters and response schema) never
    /// panics on arbitrary JSON.
    #[test]
    fn schema_reducer_never_panics(schema in any_json()) {
        let p = gemini();
        let body = json!({
            "model": "x",
            "messages": [{"role": "user", "content": "Hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
        });
        let request: ChatCompletionRequest = from_slice(body.to_string().as_bytes()).unwrap();
        let _ = p.build_request(request);
    }

    /// Any answer body, at any status, translates or fails without a panic.
    #[test]
    fn response_never_panics(body in any_json(), status in prop_oneof![Just(200u16), Just(400u16), Just(503u16)]) {
        let p = gemini();
        let _ = p.translate_response(status, Bytes::from(body.to_string()), &context(false));
    }
}
