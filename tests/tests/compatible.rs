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
