//! The official-style Rust client (async-openai) against the proxy: what a real SDK parses
//! out of the proxy's answers, text and parallel tool calls, stream and non-stream.

// Helpers outside `#[test]` functions fail the test the same way; clippy's test exemption
// does not reach them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::chat::{
    ChatCompletionMessageToolCalls, ChatCompletionResponseStream, CreateChatCompletionRequest,
    CreateChatCompletionStreamResponse, FinishReason,
};
use serde_json::{Value, json};
use support::*;

fn client(proxy: &Proxy) -> Client<OpenAIConfig> {
    Client::with_config(
        OpenAIConfig::new().with_api_base(format!("{}/v1", proxy.url())).with_api_key("client-key"),
    )
}

fn request(stream: bool) -> CreateChatCompletionRequest {
    let mut r = chat_request("my-alias", stream);
    r["tools"] = json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                "required": ["city"]}}},
        {"type": "function", "function": {"name": "get_stock_price",
            "parameters": {"type": "object", "properties": {"ticker": {"type": "string"}}}}}
    ]);
    serde_json::from_value(r).unwrap()
}

fn text_request(stream: bool) -> CreateChatCompletionRequest {
    serde_json::from_value(chat_request("my-alias", stream)).unwrap()
}

const WEATHER_ARGS: &str = r#"{"city": "Edinburgh", "country": "GB"}"#;
const STOCK_ARGS: &str = r#"{"ticker": "AAPL"}"#;

/// Two tool calls in one message, as OpenAI answers a parallel call.
fn parallel_tool_completion() -> Value {
    let mut c = completion("");
    c["choices"][0]["message"] = json!({
        "role": "assistant", "content": null, "refusal": null, "annotations": [],
        "tool_calls": [
            {"id": "call_fdNz3vOBKYgOIpMdWotB9MjY", "type": "function",
                "function": {"name": "get_weather", "arguments": WEATHER_ARGS}},
            {"id": "call_h1DWI1POMJLb0KwIyQHWXD4p", "type": "function",
                "function": {"name": "get_stock_price", "arguments": STOCK_ARGS}}
        ]
    });
    c["choices"][0]["finish_reason"] = json!("tool_calls");
    c
}

/// The same two calls streamed: each call's first chunk carries id, type, name and `""`,
/// then argument fragments carry only the index.
fn parallel_tool_stream() -> Vec<Step> {
    let call = |index: u32, id: &str, name: &str| {
        chunk(
            json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                "function": {"name": name, "arguments": ""}}]}),
            None,
        )
    };
    let args = |index: u32, part: &str| {
        chunk(json!({"tool_calls": [{"index": index, "function": {"arguments": part}}]}), None)
    };
    let mut events =
        vec![chunk(json!({"role": "assistant", "content": null, "refusal": null}), None)];
    events.push(call(0, "call_JMW1whyEaYG438VE1OIflxA2", "get_weather"));
    for part in [r#"{"ci"#, r#"ty": "#, r#""Edinburgh", "#, r#""country": "GB"}"#] {
        events.push(args(0, part));
    }
    events.push(call(1, "call_DNYTawLBoN8fj3KN6fsbDQ3k", "get_stock_price"));
    for part in [r#"{"tick"#, r#"er": "AAPL"}"#] {
        events.push(args(1, part));
    }
    events.push(chunk(json!({}), Some("tool_calls")));
    events.push(usage_chunk());
    let mut steps: Vec<Step> = events.iter().map(Step::event).collect();
    steps.push(Step::done());
    steps
}

async fn next(
    stream: &mut ChatCompletionResponseStream,
) -> Option<CreateChatCompletionStreamResponse> {
    std::future::poll_fn(|cx| stream.as_mut().poll_next(cx))
        .await
        .map(|r| r.unwrap_or_else(|e| panic!("the SDK could not read a chunk: {e}")))
}

async fn collect(
    stream: &mut ChatCompletionResponseStream,
) -> Vec<CreateChatCompletionStreamResponse> {
    let mut out = Vec::new();
    while let Some(chunk) = tokio::time::timeout(PATIENCE, next(stream)).await.unwrap() {
        out.push(chunk);
    }
    out
}

#[tokio::test]
async fn sdk_create_reads_text_and_finish_reason() {
    let mock = MockUpstream::always(Reply::json(200, &completion("Hello from upstream."))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;

    let resp = client(&proxy).chat().create(text_request(false)).await.unwrap();
    assert_eq!(resp.id, UPSTREAM_ID);
    assert_eq!(resp.model, ACTUAL_NAME);
    assert_eq!(resp.choices.len(), 1);
    assert_eq!(resp.choices[0].message.content.as_deref(), Some("Hello from upstream."));
    assert_eq!(resp.choices[0].finish_reason, Some(FinishReason::Stop));
    assert_eq!(resp.usage.map(|u| u.total_tokens), Some(18));

    let up = mock.only_request();
    assert_eq!(up.json()["model"], ACTUAL_NAME);
    assert_eq!(up.header("authorization"), Some(format!("Bearer {UPSTREAM_KEY}").as_str()));
}

#[tokio::test]
async fn sdk_create_reads_parallel_tool_calls() {
    let mock = MockUpstream::always(Reply::json(200, &parallel_tool_completion())).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;

    let resp = client(&proxy).chat().create(request(false)).await.unwrap();
    let choice = &resp.choices[0];
    assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
    let calls: Vec<(String, String, String)> = choice
        .message
        .tool_calls
        .as_ref()
        .expect("tool calls")
        .iter()
        .map(|c| match c {
            ChatCompletionMessageToolCalls::Function(f) => {
                (f.id.clone(), f.function.name.clone(), f.function.arguments.clone())
            }
            ChatCompletionMessageToolCalls::Custom(c) => panic!("unexpected custom call {c:?}"),
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("call_fdNz3vOBKYgOIpMdWotB9MjY".into(), "get_weather".into(), WEATHER_ARGS.into()),
            ("call_h1DWI1POMJLb0KwIyQHWXD4p".into(), "get_stock_price".into(), STOCK_ARGS.into()),
        ]
    );
    let up = mock.only_request().json();
    assert_eq!(up["tools"].as_array().map(Vec::len), Some(2), "the tools go upstream: {up}");
}

#[tokio::test]
async fn sdk_stream_reads_text_and_finish_reason() {
    let mock = MockUpstream::always(Reply::sse(text_stream(&["Hello", ",", " world"]))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;

    let mut stream = client(&proxy).chat().create_stream(text_request(true)).await.unwrap();
    let chunks = collect(&mut stream).await;
    let text: String =
        chunks.iter().filter_map(|c| c.choices.first()?.delta.content.clone()).collect();
    assert_eq!(text, "Hello, world");
    let finishes: Vec<_> = chunks.iter().filter_map(|c| c.choices.first()?.finish_reason).collect();
    assert_eq!(finishes, [FinishReason::Stop]);
    assert!(chunks.iter().all(|c| !c.choices.is_empty()), "no usage chunk was asked for");
    assert!(chunks.iter().all(|c| c.id == UPSTREAM_ID && c.model == ACTUAL_NAME));
}

#[tokio::test]
async fn sdk_stream_reads_parallel_tool_calls() {
    let mock = MockUpstream::always(Reply::sse(parallel_tool_stream())).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;

    let mut stream = client(&proxy).chat().create_stream(request(true)).await.unwrap();
    let chunks = collect(&mut stream).await;
    // Assemble the calls by index, as SDK users do.
    let mut calls: BTreeMap<u32, (String, String, String)> = BTreeMap::new();
    for c in &chunks {
        for tc in c.choices.iter().flat_map(|ch| ch.delta.tool_calls.iter().flatten()) {
            let entry = calls.entry(tc.index).or_default();
            if let Some(id) = &tc.id {
                entry.0.push_str(id);
            }
            if let Some(f) = &tc.function {
                entry.1.push_str(f.name.as_deref().unwrap_or(""));
                entry.2.push_str(f.arguments.as_deref().unwrap_or(""));
            }
        }
    }
    let calls: Vec<_> = calls.into_values().collect();
    assert_eq!(
        calls,
        [
            ("call_JMW1whyEaYG438VE1OIflxA2".into(), "get_weather".into(), WEATHER_ARGS.into()),
            ("call_DNYTawLBoN8fj3KN6fsbDQ3k".into(), "get_stock_price".into(), STOCK_ARGS.into()),
        ]
    );
    let finishes: Vec<_> = chunks.iter().filter_map(|c| c.choices.first()?.finish_reason).collect();
    assert_eq!(finishes, [FinishReason::ToolCalls]);
    let up = mock.only_request().json();
    assert_eq!(up["stream"], true);
    assert_eq!(up["tools"].as_array().map(Vec::len), Some(2));
}
