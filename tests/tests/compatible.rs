//! What OpenAI-compatible servers (`TYPE=custom`) and the relays in front of them send that
//! OpenAI does not, and what the client gets of it.

// Helpers outside `#[test]` functions fail the test the same way; clippy's test exemption
// does not reach them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::*;
use uniproxy_config::Platform;

/// Settings for a `custom` upstream at `mock`, as a local server is configured: no key.
fn custom_settings(mock: &MockUpstream) -> uniproxy_config::Settings {
    let mut settings = openai_settings(mock);
    settings.platform = Platform::Custom;
    settings.api_key = uniproxy_config::Secret::default();
    settings
}

#[tokio::test]
async fn an_empty_data_keep_alive_does_not_end_the_stream() {
    // Relays in front of OpenAI-compatible servers keep a slow stream open with events whose
    // `data:` is empty; the proxy took one for a malformed chunk and ended the stream there.
    let steps = vec![
        Step::event(&chunk(json!({"role": "assistant", "content": ""}), None)),
        Step::event(&chunk(json!({"content": "Hello"}), None)),
        Step::raw("data:\n\n"),
        Step::raw("data: \n\n"),
        Step::event(&chunk(json!({"content": " there"}), None)),
        Step::event(&chunk(json!({}), Some("stop"))),
        Step::done(),
    ];
    let mock = MockUpstream::always(Reply::sse(steps)).await;
    let proxy = Proxy::start(custom_settings(&mock)).await;

    let resp = proxy.post("/v1/chat/completions", &chat_request("gpt-4o", true)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let data = sse_data(&resp.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    assert!(data.iter().all(|d| !d.is_empty() && !d.contains("\"error\"")), "{data:?}");
    assert_eq!(streamed_text(&sse_json(&resp.body)), "Hello there");

    let entry = proxy.only_entry().await.entry;
    assert_eq!((entry.status, entry.error_type.as_deref()), (200, None), "{entry:#?}");
}

#[tokio::test]
async fn a_tool_call_streamed_alone_not_in_a_list_reaches_the_client_in_one() {
    // text-generation-inference before 3.x streams each tool-call fragment as the delta's
    // `tool_calls` itself, an object, with no `object` member and an empty id. The proxy
    // refused the first such chunk as malformed and ended the stream with an error.
    let fragment = |arguments: &str, finish: Option<&str>| {
        json!({
            "id": "", "created": 1_712_000_000, "model": "mistralai/Mistral-7B-Instruct-v0.2",
            "system_fingerprint": "2.0.1-native",
            "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": {
                "index": 0, "id": "", "type": "function",
                "function": {"name": null, "arguments": arguments}}},
                "logprobs": null, "finish_reason": finish}],
            "usage": null
        })
    };
    let steps = vec![
        Step::event(&fragment("{\"", None)),
        Step::event(&fragment(
            "function\": {\"_name\": \"get_weather\", \"city\": \"Paris\"}}",
            None,
        )),
        Step::event(&fragment("", Some("eos_token"))),
        Step::done(),
    ];
    let mock = MockUpstream::always(Reply::sse(steps)).await;
    let proxy = Proxy::start(custom_settings(&mock)).await;

    let mut req = chat_request("gpt-4o", true);
    req["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let resp = proxy.post("/v1/chat/completions", &req).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let chunks = sse_json(&resp.body);
    assert_eq!(chunks.len(), 3, "{chunks:?}");
    let mut arguments = String::new();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        let calls = chunk["choices"][0]["delta"]["tool_calls"].as_array();
        let calls = calls.unwrap_or_else(|| panic!("tool_calls is no list: {chunk}"));
        assert_eq!(calls.len(), 1, "{chunk}");
        assert_eq!(calls[0]["index"], 0, "{chunk}");
        arguments.push_str(calls[0]["function"]["arguments"].as_str().unwrap());
    }
    assert_eq!(arguments, "{\"function\": {\"_name\": \"get_weather\", \"city\": \"Paris\"}}");
    assert_eq!(sse_data(&resp.body).last().map(String::as_str), Some("[DONE]"));

    let entry = proxy.only_entry().await.entry;
    assert_eq!((entry.status, entry.error_type.as_deref()), (200, None), "{entry:#?}");
    let response: serde_json::Value = serde_json::from_str(&entry.response).unwrap();
    assert_eq!(response["choices"][0]["tool_calls"][0]["arguments"], arguments.as_str());
    assert_eq!(response["choices"][0]["finish_reason"], "eos_token");
}

/// llama.cpp's server's error in a stream, a prompt past its context, as it writes it.
const LLAMA_CPP_CONTEXT_ERROR: &str = concat!(
    r#"error: {"code":400,"message":"the request exceeds the available context size, try increasing it","type":"exceed_context_size_error","n_prompt_tokens":5000,"n_ctx":4096}"#,
    "\n\n"
);

#[tokio::test]
async fn an_error_llama_cpp_sends_in_a_stream_reaches_the_client_and_the_log() {
    // llama.cpp's server writes an error in a stream as an `error:` field, then `[DONE]`. The
    // proxy's decoder dropped the field, as a browser would: the client got a stream that
    // ended well, cut short or empty, and the log a 200 with no error.
    let first = json!({"choices": [{"finish_reason": null, "index": 0,
        "delta": {"role": "assistant", "content": null}}],
        "created": 1_760_000_000, "id": "chatcmpl-Vx1", "model": "qwen3-8b",
        "system_fingerprint": "b6710-3d4053f7", "object": "chat.completion.chunk"});
    let steps = vec![Step::event(&first), Step::raw(LLAMA_CPP_CONTEXT_ERROR), Step::done()];
    let mock = MockUpstream::always(Reply::sse(steps)).await;
    let proxy = Proxy::start(custom_settings(&mock)).await;

    let resp = proxy.post("/v1/chat/completions", &chat_request("gpt-4o", true)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let chunks = sse_json(&resp.body);
    let last = chunks.last().unwrap();
    let error = assert_openai_error(last);
    assert_eq!(
        error["message"], "the request exceeds the available context size, try increasing it",
        "{chunks:?}"
    );
    assert_eq!(error["type"], "exceed_context_size_error");
    assert!(!sse_data(&resp.body).contains(&"[DONE]".to_owned()), "an error ends the stream");

    let entry = proxy.only_entry().await.entry;
    assert_eq!(entry.error_type.as_deref(), Some("exceed_context_size_error"), "{entry:#?}");

    // The same error as the stream's first event: nothing went to the client yet, so it is
    // answered as the 400 its `code` says, as OpenAI answers a prompt too long.
    let steps = vec![Step::raw(LLAMA_CPP_CONTEXT_ERROR), Step::done()];
    let mock = MockUpstream::always(Reply::sse(steps)).await;
    let proxy = Proxy::start(custom_settings(&mock)).await;
    let resp = proxy.post("/v1/chat/completions", &chat_request("gpt-4o", true)).await;
    let error = expect_error(&resp, 400);
    assert_eq!(error["type"], "exceed_context_size_error");
    assert_eq!(mock.requests().len(), 1, "a 400 is not retried");
    assert_eq!(proxy.only_entry().await.entry.status, 400);
}

#[tokio::test]
async fn lm_studio_at_its_root_says_which_status_it_answered_and_to_add_v1() {
    // LM Studio answers a path it does not serve, its root's /chat/completions among them,
    // with 200 and an error string. The client heard "upstream answered 502", a status
    // LM Studio never sent, and not what to change.
    let body = r#"{"error":"Unexpected endpoint or method. (POST /chat/completions)"}"#;
    let mock = MockUpstream::always(Reply::raw_json(200, body)).await;
    let mut settings = custom_settings(&mock);
    settings.base_url = Some(mock.url());
    let proxy = Proxy::start(settings).await;

    for stream in [false, true] {
        let resp = proxy.post("/v1/chat/completions", &chat_request("gpt-4o", stream)).await;
        let error = expect_error(&resp, 502);
        let message = error["message"].as_str().unwrap();
        assert!(
            message.starts_with(
                "upstream answered 200: Unexpected endpoint or method. (POST /chat/completions)"
            ),
            "stream {stream}: {message}"
        );
        assert!(message.contains("add /v1 to BASE_URL"), "stream {stream}: {message}");
        assert_eq!(error["type"], "server_error");
    }
}

#[tokio::test]
async fn a_chunk_whose_choices_are_null_does_not_end_the_stream() {
    // Some OpenAI-compatible servers send a chunk with `"choices": null` (pydantic-ai and
    // pipecat guard their stream readers against it). The proxy refused it as malformed and
    // ended the stream with an error, the usage it carried lost.
    let mut usage = usage_chunk();
    usage["choices"] = json!(null);
    let steps = vec![
        Step::event(&chunk(json!({"role": "assistant", "content": "Hi"}), None)),
        Step::event(&chunk(json!({}), Some("stop"))),
        Step::event(&usage),
        Step::done(),
    ];
    let mock = MockUpstream::always(Reply::sse(steps)).await;
    let proxy = Proxy::start(custom_settings(&mock)).await;

    let mut req = chat_request("gpt-4o", true);
    req["stream_options"] = json!({"include_usage": true});
    let resp = proxy.post("/v1/chat/completions", &req).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let data = sse_data(&resp.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks = sse_json(&resp.body);
    assert!(chunks.iter().all(|c| c.get("error").is_none()), "{chunks:?}");
    assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 26, "{chunks:?}");

    let entry = proxy.only_entry().await.entry;
    assert_eq!((entry.status, entry.error_type.as_deref()), (200, None), "{entry:#?}");
    assert_eq!(entry.usage.total_tokens, Some(26), "{entry:#?}");
}
