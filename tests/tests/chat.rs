//! The chat route against OpenAI and Azure mock upstreams: what goes upstream, what comes
//! back, and that a stream is relayed as it is produced. Also `/models`, `/health` and CORS.

// Helpers outside `#[test]` functions fail the test the same way; clippy's test exemption
// does not reach them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use support::*;
use tokio::sync::Notify;
use uniproxy_config::{Platform, Secret};

/// The body of an OpenAI answer, byte for byte as the upstream sends it (key order, spacing).
const UPSTREAM_BODY: &str = r#"{
  "id": "chatcmpl-BFfJeRdAVFPUVWxV3OYH1tSR5KvrI",
  "object": "chat.completion",
  "created": 1743073438,
  "model": "gpt-4o-mini-2024-07-18",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Hello! How can I assist you today?",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 8,
    "completion_tokens": 10,
    "total_tokens": 18,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
  },
  "service_tier": "default",
  "system_fingerprint": "fp_898ac29719"
}
"#;

#[tokio::test]
async fn non_stream_goes_upstream_with_the_configured_model_and_key() {
    let mock = MockUpstream::always(Reply::raw_json(200, UPSTREAM_BODY)).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;

    for (i, path) in ["/v1/chat/completions", "/chat/completions"].into_iter().enumerate() {
        let mut req = post_request(path, &chat_request("my-alias", false));
        req.headers_mut().insert("authorization", "Bearer client-key-123".parse().unwrap());
        let resp = send(proxy.addr, req).await;

        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        assert_eq!(resp.text(), UPSTREAM_BODY, "{path}: the client gets the upstream's body");
        assert_eq!(resp.header("content-type"), Some("application/json"));
        let overhead = resp.header("x-uniproxy-overhead-ms").expect("overhead header");
        let ms: f64 = overhead.parse().unwrap_or_else(|e| panic!("{overhead:?}: {e}"));
        assert!(ms.is_finite() && ms >= 0.0, "overhead {ms}");

        mock.wait_for_requests(i + 1).await;
        let up = mock.requests().pop().unwrap();
        assert_eq!(up.method, Method::POST);
        assert_eq!(up.path_and_query, "/v1/chat/completions");
        assert_eq!(up.header("authorization"), Some(format!("Bearer {UPSTREAM_KEY}").as_str()));
        assert_eq!(
            up.headers.get_all("authorization").iter().count(),
            1,
            "only the upstream key goes upstream"
        );
        assert!(
            !String::from_utf8_lossy(&up.body).contains("client-key-123")
                && up.headers.values().all(|v| v.to_str().unwrap_or("") != "Bearer client-key-123"),
            "the client's key must not reach the upstream"
        );
        assert_eq!(up.header("content-type"), Some("application/json"));
        let hosts: Vec<_> = up.headers.get_all("host").iter().collect();
        assert_eq!(hosts, [mock.url().trim_start_matches("http://")], "one Host, with the port");
        let body = up.json();
        assert_eq!(body["model"], ACTUAL_NAME);
        assert_eq!(body["messages"], chat_request("x", false)["messages"]);
    }
}

#[tokio::test]
async fn an_answer_without_object_reaches_the_client_with_it() {
    // GitHub Copilot's and Z.ai's OpenAI-compatible APIs send no `object`; clients that check
    // the answer's shape (pydantic-ai) refuse it, and the proxy used to answer 502.
    let answer = UPSTREAM_BODY.replacen("\n  \"object\": \"chat.completion\",", "", 1);
    assert_ne!(answer, UPSTREAM_BODY);
    let mock = MockUpstream::always(Reply::raw_json(200, &answer)).await;
    let mut settings = openai_settings(&mock);
    settings.platform = Platform::Custom;
    let proxy = Proxy::start(settings).await;

    let resp = proxy.post("/v1/chat/completions", &chat_request("a", false)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let body = resp.text();
    assert_eq!(body, format!("{{\"object\":\"chat.completion\",{}", &answer[1..]));
    assert_eq!(proxy.only_entry().await.entry.response, body, "the log keeps what the client got");
}

#[tokio::test]
async fn a_custom_tool_call_goes_back_to_an_openai_upstream_as_the_client_sent_it() {
    // The spec's ChatCompletionMessageCustomToolCall, as the proxy passes it in an answer: the
    // client sends it back in the history, and the proxy used to refuse it (400, missing field
    // `function`).
    let answer = r#"{"id":"chatcmpl-C1","object":"chat.completion","created":1754000000,"model":"gpt-5","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_2","type":"custom","custom":{"name":"code_exec","input":"print(2)"}}],"refusal":null},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":60,"completion_tokens":12,"total_tokens":72}}"#;
    for platform in [Platform::OpenAi, Platform::AzureOpenAi, Platform::Custom] {
        let mock = MockUpstream::always(Reply::raw_json(200, answer)).await;
        let mut settings = openai_settings(&mock);
        settings.platform = platform;
        if platform == Platform::AzureOpenAi {
            settings = azure_settings(&mock, "/openai/v1");
        }
        let proxy = Proxy::start(settings).await;
        // Read by the fast path, and (an audio part) by the typed parse.
        let audio =
            json!({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}});
        for question in [json!("Print 1."), json!([{"type": "text", "text": "Print 1."}, audio])] {
            let req = json!({
                "model": "gpt-5",
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "custom", "custom": {"name": "code_exec", "input": "print(1)"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "1"}
                ],
                "tools": [{"type": "custom", "custom": {"name": "code_exec"}}]
            });
            let resp = proxy.post("/v1/chat/completions", &req).await;
            assert_eq!(resp.status, 200, "{platform:?}: {}", resp.text());
            assert_eq!(resp.text(), answer, "{platform:?}: the answer's custom call as sent");
            let sent = mock.requests().pop().unwrap().json();
            assert_eq!(sent["messages"], req["messages"], "{platform:?}");
            assert_eq!(sent["tools"], req["tools"], "{platform:?}");
        }
    }
}

/// A whole answer in the legacy shape a client that offered only `functions` reads: `call` as
/// `function_call`, no `tool_calls`, finish reason `function_call`.
fn assert_legacy_answer(resp: &HttpResponse, call: &Value) {
    assert_eq!(resp.status, 200, "{}", resp.text());
    let choice = &resp.json()["choices"][0];
    assert_eq!(&choice["message"]["function_call"], call, "{choice}");
    assert_eq!(choice["message"].get("tool_calls"), None, "{choice}");
    assert_eq!(choice["finish_reason"], "function_call");
}

#[tokio::test]
async fn google_answers_a_legacy_functions_request_with_a_function_call() {
    // Gemini calls two functions at once; a client that offered `functions` looks for one
    // `function_call`, as OpenAI answers it, and used to get `tool_calls`.
    let call =
        |city: &str| json!({"functionCall": {"name": "get_weather", "args": {"city": city}}});
    let candidate = |parts: Value, finish: Option<&str>| {
        let mut c = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(finish) = finish {
            c["finishReason"] = json!(finish);
        }
        json!({"candidates": [c], "modelVersion": "gemini-2.5-flash"})
    };
    let whole = candidate(json!([call("Paris"), call("Lyon")]), Some("STOP"));
    let events = vec![
        Step::event(&candidate(json!([call("Paris")]), None)),
        Step::event(&candidate(json!([call("Lyon")]), None)),
        Step::event(&candidate(json!([{"text": ""}]), Some("STOP"))),
    ];
    let mock = MockUpstream::gemini(events, whole).await;
    let mut req = chat_request("a", false);
    req["functions"] = json!([{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let paris = json!({"name": "get_weather", "arguments": r#"{"city":"Paris"}"#});

    for supports_streaming in [true, false] {
        let mut settings = openai_settings(&mock);
        settings.platform = Platform::Google;
        settings.base_url = Some(format!("{}/v1beta", mock.url()));
        settings.supports_streaming = supports_streaming;
        let proxy = Proxy::start(settings).await;

        let resp = proxy.post("/v1/chat/completions", &req).await;
        assert_legacy_answer(&resp, &paris);

        req["stream"] = json!(true);
        let resp = proxy.post("/v1/chat/completions", &req).await;
        req["stream"] = json!(false);
        assert_eq!(resp.status, 200, "{}", resp.text());
        let chunks = sse_json(&resp.body);
        let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
        let calls: Vec<&Value> = deltas.iter().filter_map(|d| d.get("function_call")).collect();
        assert_eq!(calls, [&paris], "streaming: {supports_streaming}: {chunks:?}");
        assert!(deltas.iter().all(|d| d.get("tool_calls").is_none()), "{chunks:?}");
        let finishes: Vec<&Value> = chunks
            .iter()
            .map(|c| &c["choices"][0]["finish_reason"])
            .filter(|f| f.is_string())
            .collect();
        assert_eq!(finishes, [&json!("function_call")], "{chunks:?}");
    }
}

/// A mock Claude that answers `answer` whole and streams `events` (each the data of the event
/// its `type` names), and the proxy in front of it.
async fn claude_behind_the_proxy(answer: &'static str, events: &[&str]) -> (MockUpstream, Proxy) {
    let stream: String = events
        .iter()
        .map(|data| {
            let kind =
                serde_json::from_str::<Value>(data).unwrap()["type"].as_str().unwrap().to_owned();
            format!("event: {kind}\ndata: {data}\n\n")
        })
        .collect();
    let mock = MockUpstream::start(move |r| {
        if r.json()["stream"] == true {
            Reply::sse(vec![Step::raw(&stream)])
        } else {
            Reply::raw_json(200, answer)
        }
    })
    .await;
    let mut settings = openai_settings(&mock);
    settings.platform = Platform::Anthropic;
    let proxy = Proxy::start(settings).await;
    (mock, proxy)
}

#[tokio::test]
async fn claude_serves_a_legacy_functions_loop_with_function_calls() {
    // An old function-calling agent (LangChain's OpenAIFunctionsAgent): `functions`, the
    // assistant's `function_call` and a `function` message given back. Claude got a 400.
    let answer = r#"{"model":"claude-sonnet-4-5-20250929","id":"msg_01Aq9w938a90dw8q","type":"message","role":"assistant","content":[{"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"get_weather","input":{"city":"Lyon"}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":384,"output_tokens":57}}"#;
    let events = [
        r#"{"type":"message_start","message":{"model":"claude-sonnet-4-5-20250929","id":"msg_01","type":"message","role":"assistant","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":384,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"\"Lyon\"}"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":57}}"#,
        r#"{"type":"message_stop"}"#,
    ];
    let (mock, proxy) = claude_behind_the_proxy(answer, &events).await;

    let mut req = chat_request("gpt-3.5-turbo", false);
    req["functions"] = json!([{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    req["messages"] = json!([
        {"role": "user", "content": "Weather in Paris, then Lyon?"},
        {"role": "assistant", "content": null, "function_call": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
        {"role": "function", "name": "get_weather", "content": "18 C"},
    ]);
    let lyon = json!({"name": "get_weather", "arguments": r#"{"city":"Lyon"}"#});
    let resp = proxy.post("/v1/chat/completions", &req).await;
    assert_legacy_answer(&resp, &lyon);
    let sent = mock.only_request().json();
    let (call, result) = (&sent["messages"][1]["content"][0], &sent["messages"][2]["content"][0]);
    assert_eq!((&call["type"], &result["type"]), (&json!("tool_use"), &json!("tool_result")));
    assert_eq!(call["id"], result["tool_use_id"], "{sent}");
    assert_eq!(sent["tool_choice"]["disable_parallel_tool_use"], true, "{sent}");

    req["stream"] = json!(true);
    let resp = proxy.post("/v1/chat/completions", &req).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let chunks = sse_json(&resp.body);
    let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
    assert!(deltas.iter().all(|d| d.get("tool_calls").is_none()), "{chunks:?}");
    let calls: Vec<&Value> = deltas.iter().filter_map(|d| d.get("function_call")).collect();
    assert_eq!(calls[0]["name"], "get_weather", "{chunks:?}");
    let arguments: String =
        calls.iter().filter_map(|c| c["arguments"].as_str()).collect::<Vec<_>>().concat();
    assert_eq!(arguments, r#"{"city": "Lyon"}"#);
    let finishes: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| f.is_string())
        .collect();
    assert_eq!(finishes, [&json!("function_call")], "{chunks:?}");
}

/// What Gemini refuses in a conversation with tool calls: turns of one role in a row (but a
/// user turn after the results: "Please ensure that multiturn requests alternate between user
/// and model"), and a call turn whose next content is not a response to each call and nothing
/// else (a text beside them: "Requests ending with a model turn are not supported"), in the
/// calls' order (Vertex AI `v1` pairs them by order).
fn gemini_refuses(contents: &[Value]) -> Option<String> {
    for (i, pair) in contents.windows(2).enumerate() {
        let parts = pair[1]["parts"].as_array()?;
        let results = |c: &Value| {
            c["parts"]
                .as_array()
                .is_some_and(|p| p.iter().all(|p| p.get("functionResponse").is_some()))
        };
        if pair[0]["role"] == pair[1]["role"] && !results(&pair[0]) {
            return Some(format!("contents[{}]: multiturn requests must alternate", i + 1));
        }
        let calls: Vec<&Value> =
            pair[0]["parts"].as_array()?.iter().filter_map(|p| p.get("functionCall")).collect();
        let answers: Vec<&Value> = parts.iter().filter_map(|p| p.get("functionResponse")).collect();
        let paired = calls.len() == parts.len()
            && calls.len() == answers.len()
            && calls
                .iter()
                .zip(&answers)
                .all(|(c, r)| c["name"] == r["name"] && c["id"] == r["id"]);
        if !calls.is_empty() && !paired {
            return Some(format!("contents[{}]: the responses do not answer the calls", i + 1));
        }
    }
    None
}

#[tokio::test]
async fn google_tool_loop_with_a_user_message_amid_the_results_is_one_gemini_accepts() {
    // An agent answers two parallel calls in the order its tools finish, with a note from the
    // user between the results and a question after them.
    let mock = MockUpstream::start(|r| {
        let contents = r.json()["contents"].as_array().cloned().unwrap_or_default();
        if let Some(why) = gemini_refuses(&contents) {
            let error = json!({"error": {"code": 400, "message": why, "status": "INVALID_ARGUMENT"}});
            return Reply::json(400, &error);
        }
        let parts = if contents.len() == 1 {
            let call = |id: &str, city: &str| json!({"functionCall": {"id": id, "name": "get_weather", "args": {"city": city}}});
            json!([call("fc_1", "Paris"), call("fc_2", "Rome")])
        } else {
            json!([{"text": "Paris 18C, Rome 21C."}])
        };
        let candidate = json!({"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0});
        Reply::json(200, &json!({"candidates": [candidate], "modelVersion": "gemini-2.5-flash"}))
    })
    .await;
    let mut settings = openai_settings(&mock);
    settings.platform = Platform::Google;
    settings.base_url = Some(format!("{}/v1beta", mock.url()));
    let proxy = Proxy::start(settings).await;

    let mut req = chat_request("a", false);
    req["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    req["messages"] = json!([{"role": "user", "content": "Weather in Paris and Rome?"}]);
    let resp = proxy.post("/v1/chat/completions", &req).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let message = resp.json()["choices"][0]["message"].clone();
    let ids: Vec<&str> = message["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["fc_1", "fc_2"], "{message}");

    let messages = req["messages"].as_array_mut().unwrap();
    messages.extend([
        message.clone(),
        json!({"role": "tool", "tool_call_id": "fc_2", "content": "21C"}),
        json!({"role": "user", "content": "In Celsius, please."}),
        json!({"role": "tool", "tool_call_id": "fc_1", "content": "18C"}),
        json!({"role": "user", "content": "And which is warmer?"}),
    ]);
    let resp = proxy.post("/v1/chat/completions", &req).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["choices"][0]["message"]["content"], "Paris 18C, Rome 21C.");
}

#[tokio::test]
async fn stream_is_relayed_before_the_upstream_finishes() {
    let release = Arc::new(Notify::new());
    let mut steps = vec![
        Step::event(&chunk(json!({"role": "assistant", "content": "", "refusal": null}), None)),
        Step::event(&chunk(json!({"content": "Hel"}), None)),
        Step::Wait(release.clone()),
    ];
    steps.extend(text_stream(&["lo", "!"]).into_iter().skip(1));
    let mock = MockUpstream::always(Reply::sse(steps)).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;

    let mut s =
        open_stream(proxy.addr, post_request("/v1/chat/completions", &chat_request("a", true)))
            .await;
    assert_eq!(s.status, 200);
    assert_eq!(s.headers.get("content-type").unwrap(), "text/event-stream");
    assert!(s.headers.contains_key("x-uniproxy-overhead-ms"));

    // Read until "Hel" arrives. The upstream is parked on `release`, so a proxy that
    // buffers the stream never gets here and the read times out.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\"Hel\"") {
        let (data, _) = s
            .next_chunk_within(Duration::from_secs(5))
            .await
            .expect("the stream ended before the first content chunk");
        seen.extend_from_slice(&data);
    }
    assert!(!String::from_utf8_lossy(&seen).contains("[DONE]"));
    release.notify_one();
    seen.extend_from_slice(&s.rest().await);

    let data = sse_data(&seen);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks = sse_json(&seen);
    let text = streamed_text(&chunks);
    assert_eq!(text, "Hello!");
    assert!(
        chunks.iter().all(|c| !c["choices"].as_array().unwrap().is_empty()),
        "a client that did not ask for usage gets no usage-only chunk: {chunks:?}"
    );
    assert_eq!(chunks.iter().filter(|c| c["choices"][0]["finish_reason"] == "stop").count(), 1);

    let up = mock.only_request().json();
    assert_eq!(up["stream"], true);
    assert_eq!(up["stream_options"]["include_usage"], true, "the proxy asks for usage: {up}");
    assert_eq!(up["model"], ACTUAL_NAME);
}

#[tokio::test]
async fn stream_usage_chunk_reaches_a_client_that_asked_for_it() {
    let mock = MockUpstream::always(Reply::sse(text_stream(&["Hi", " there"]))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;

    let mut req = chat_request("a", true);
    req["stream_options"] = json!({"include_usage": true});
    let resp = proxy.post("/v1/chat/completions", &req).await;
    assert_eq!(resp.status, 200, "{}", resp.text());

    let data = sse_data(&resp.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks = sse_json(&resp.body);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]), "the usage chunk comes last: {chunks:?}");
    assert_eq!(last["usage"]["total_tokens"], 26);
    assert_eq!(last["usage"]["prompt_tokens"], 23);
    // The chunks pass through as the upstream wrote them, fields the proxy does not model
    // included.
    assert!(chunks.iter().all(|c| c["obfuscation"].is_string() && c["id"] == UPSTREAM_ID));
    assert_eq!(mock.only_request().json()["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn a_token_count_written_as_null_loses_no_answer() {
    // Some OpenAI-compatible servers write counts they do not know as null.
    let odd = json!({"prompt_tokens": 10, "completion_tokens": null, "total_tokens": null});
    let mut answer = completion("counted oddly");
    answer["usage"] = odd.clone();
    let mut usage = usage_chunk();
    usage["usage"] = odd;
    let mut steps: Vec<Step> = text_stream(&["Hi"]).into_iter().take(3).collect();
    steps.push(Step::event(&usage));
    steps.push(Step::done());
    let mock = MockUpstream::start(move |r| {
        if r.json()["stream"] == true {
            Reply::sse(steps.clone())
        } else {
            Reply::json(200, &answer)
        }
    })
    .await;
    let mut settings = openai_settings(&mock);
    settings.platform = Platform::Custom;
    let proxy = Proxy::start(settings).await;

    let resp = proxy.post("/v1/chat/completions", &chat_request("a", false)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["choices"][0]["message"]["content"], "counted oddly");
    // The stream asks for usage only because the proxy does: the odd count must not end it.
    let resp = proxy.post("/v1/chat/completions", &chat_request("a", true)).await;
    let data = sse_data(&resp.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    assert!(!resp.text().contains("\"error\""), "{}", resp.text());
    for e in proxy.entries(2).await {
        let u = &e.entry.usage;
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (Some(10), Some(0), Some(10))
        );
    }
}

#[tokio::test]
async fn a_stream_its_client_leaves_keeps_the_tokens_already_reported() {
    // Anthropic reports the input at message_start, Google its running count in each event:
    // billed whether or not the client stays to the end.
    let anthropic = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5-20250929\",\"id\":\"msg_01Left\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":50,\"cache_read_input_tokens\":30,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"LEFT-A\"}}\n\n";
    let google = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"LEFT-G\"}],\"role\": \"model\"}}],\"usageMetadata\": {\"promptTokenCount\": 12,\"candidatesTokenCount\": 2,\"totalTokenCount\": 14},\"modelVersion\": \"gemini-2.0-flash\"}\n\n";
    for (platform, base, events, marker, prompt) in [
        (Platform::Anthropic, "/v1", anthropic, "LEFT-A", 80),
        (Platform::Google, "/v1beta", google, "LEFT-G", 12),
    ] {
        let steps = vec![Step::raw(events), Step::Sleep(Duration::from_secs(30))];
        let mock = MockUpstream::always(Reply::sse(steps)).await;
        let mut settings = openai_settings(&mock);
        settings.platform = platform;
        settings.base_url = Some(format!("{}{base}", mock.url()));
        let proxy = Proxy::start(settings).await;
        let mut s =
            open_stream(proxy.addr, post_request("/v1/chat/completions", &chat_request("a", true)))
                .await;
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains(marker) {
            seen.extend_from_slice(&s.next_chunk().await.expect("the first piece").0);
        }
        drop(s);
        let e = proxy.only_entry().await;
        assert_eq!(e.entry.status, 499, "{platform:?}: {e:#?}");
        assert_eq!(e.entry.usage.prompt_tokens, Some(prompt), "{platform:?}: {e:#?}");
    }
}

#[tokio::test]
async fn an_upstream_that_refuses_stream_options_gets_streams_without_them() {
    // Mistral's API refuses the usage the proxy asks for on its own.
    let refusal = r#"{"object":"error","message":{"detail":[{"type":"extra_forbidden","loc":["body","stream_options","include_usage"],"msg":"Extra inputs are not permitted","input":true}]},"type":"invalid_request_error","param":null,"code":null}"#;
    let mock = MockUpstream::start(move |r| {
        if r.json().get("stream_options").is_some() {
            Reply::raw_json(422, refusal)
        } else {
            Reply::sse(text_stream(&["Hi", " there"]))
        }
    })
    .await;
    let mut settings = openai_settings(&mock);
    settings.platform = Platform::Custom;
    let mut proxy = Proxy::start(settings).await;

    let resp = proxy.post("/v1/chat/completions", &chat_request("a", true)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(sse_data(&resp.body).last().map(String::as_str), Some("[DONE]"));
    mock.wait_for_requests(2).await;
    let sent: Vec<Value> = mock.requests().iter().map(|r| r.json()).collect();
    assert_eq!(sent[0]["stream_options"]["include_usage"], true, "asked the first time");
    assert!(sent[1].get("stream_options").is_none(), "not the second: {}", sent[1]);

    // From then on, not at all: one request each.
    let resp = proxy.post("/v1/chat/completions", &chat_request("a", true)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    mock.wait_for_requests(3).await;
    assert!(mock.requests()[2].json().get("stream_options").is_none());

    // A client that asks for the usage itself gets the upstream's answer to that.
    let mut asking = chat_request("a", true);
    asking["stream_options"] = json!({"include_usage": true});
    let resp = proxy.post("/v1/chat/completions", &asking).await;
    assert_eq!(resp.status, 422, "{}", resp.text());
    mock.wait_for_requests(4).await;
    assert_eq!(mock.requests().len(), 4, "no second try for the client's own member");

    proxy.finish().await;
    let entries = proxy.entries(3).await;
    assert_eq!(entries[0].entry.attempts, 2, "the refused try is counted");
    assert!(
        !entries[0].entry.upstream_request.contains("stream_options"),
        "the log keeps what went"
    );
}

#[tokio::test]
async fn sampling_members_a_reasoning_model_refuses_are_left_out_from_then_on() {
    // OpenAI's answer to a temperature sent to an o-series or gpt-5 model.
    let refusal = |param: &str| {
        format!(
            r#"{{"error":{{"message":"Unsupported value: '{param}' does not support 0.7 with this model. Only the default (1) value is supported.","type":"invalid_request_error","param":"{param}","code":"unsupported_value"}}}}"#
        )
    };
    let mock = MockUpstream::start(move |r| {
        let body = r.json();
        for param in ["temperature", "top_p"] {
            if body.get(param).is_some() {
                return Reply::raw_json(400, &refusal(param));
            }
        }
        Reply::raw_json(200, UPSTREAM_BODY)
    })
    .await;
    let mut proxy = Proxy::start(openai_settings(&mock)).await;

    let mut req = chat_request("gpt-4o", false);
    req["temperature"] = json!(0.7);
    req["top_p"] = json!(0.9);
    req["seed"] = json!(7);
    let resp = proxy.post("/v1/chat/completions", &req).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    // One refusal per member, then the answer.
    mock.wait_for_requests(3).await;
    let sent: Vec<Value> = mock.requests().iter().map(|r| r.json()).collect();
    assert!(sent[1].get("temperature").is_none() && sent[1]["top_p"] == 0.9, "{}", sent[1]);
    assert!(sent[2].get("temperature").is_none() && sent[2].get("top_p").is_none());
    assert_eq!(sent[2]["seed"], 7, "what was not refused goes as sent");

    // From then on both are left out at once.
    let resp = proxy.post("/v1/chat/completions", &req).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    mock.wait_for_requests(4).await;
    assert_eq!(mock.requests().len(), 4);

    // A refusal of anything else reaches the client as before.
    let mut other = chat_request("gpt-4o", false);
    other["logprobs"] = json!(true);
    let mock2 = MockUpstream::always(Reply::raw_json(
        400,
        r#"{"error":{"message":"logprobs is not supported with this model.","type":"invalid_request_error","param":"logprobs","code":"unsupported_parameter"}}"#,
    ))
    .await;
    let proxy2 = Proxy::start(openai_settings(&mock2)).await;
    let resp = proxy2.post("/v1/chat/completions", &other).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert_eq!(mock2.requests().len(), 1);

    proxy.finish().await;
    let entries = proxy.entries(2).await;
    assert_eq!(entries[0].entry.attempts, 3);
    assert_eq!(entries[0].entry.dropped_fields, ["temperature", "top_p"]);
    assert_eq!(entries[1].entry.attempts, 1);
}

#[tokio::test]
async fn strict_tools_go_to_claude_until_a_model_refuses_them() {
    // Anthropic's answer to a strict tool sent to a model before structured outputs.
    let refusal = r#"{"type":"error","error":{"type":"invalid_request_error","message":"'claude-sonnet-4-20250514' does not support strict tools."},"request_id":"req_011CUMRGW7J4PNrRx6bq1kDe"}"#;
    let answer = r#"{"model":"claude-sonnet-4-20250514","id":"msg_01Aq9w938a90dw8q","type":"message","role":"assistant","content":[{"type":"tool_use","id":"toolu_01A09q90qw90lq917835lq9","name":"get_weather","input":{"city":"Paris"}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":384,"output_tokens":57}}"#;
    let mock = MockUpstream::start(move |r| {
        let strict = r.json()["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t.get("strict").is_some()));
        if strict { Reply::raw_json(400, refusal) } else { Reply::raw_json(200, answer) }
    })
    .await;
    let mut settings = openai_settings(&mock);
    settings.platform = Platform::Anthropic;
    let mut proxy = Proxy::start(settings).await;

    let mut req = chat_request("gpt-4o", false);
    req["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "strict": true, "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}}}]);
    let resp = proxy.post("/v1/chat/completions", &req).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        r#"{"city":"Paris"}"#
    );
    mock.wait_for_requests(2).await;
    let sent: Vec<Value> = mock.requests().iter().map(|r| r.json()).collect();
    assert_eq!(sent[0]["tools"][0]["strict"], true, "asked the first time: {}", sent[0]);
    assert!(sent[1]["tools"][0].get("strict").is_none(), "not the second: {}", sent[1]);

    // From then on, not at all: one request.
    let resp = proxy.post("/v1/chat/completions", &req).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    mock.wait_for_requests(3).await;
    assert!(mock.requests()[2].json()["tools"][0].get("strict").is_none());

    proxy.finish().await;
    let entries = proxy.entries(2).await;
    assert_eq!(entries[0].entry.attempts, 2, "the refused try is counted");
    assert_eq!(entries[0].entry.dropped_fields, ["tools[0].function.strict"]);
    assert_eq!(entries[1].entry.attempts, 1);
}

#[tokio::test]
async fn a_json_object_from_claude_comes_as_the_content_of_the_answer() {
    // Anthropic's JSON mode: the proxy asks for the object through a tool, and the call's
    // input is the answer; as Anthropic answers and streams such a call.
    let answer = r#"{"model":"claude-sonnet-4-5-20250929","id":"msg_01XhBJhJkQUTSbJm2AS8fHxN","type":"message","role":"assistant","content":[{"type":"tool_use","id":"toolu_01UZq2xHtHmvbCa4Pkno6VkA","name":"json_answer","input":{"city":"Paris","temperature_c":18}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":412,"output_tokens":48}}"#;
    let events = [
        r#"{"type":"message_start","message":{"model":"claude-sonnet-4-5-20250929","id":"msg_01","type":"message","role":"assistant","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":412,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_01","name":"json_answer","input":{}}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Paris\""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":", \"temperature_c\": 18}"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":48}}"#,
        r#"{"type":"message_stop"}"#,
    ];
    let (mock, proxy) = claude_behind_the_proxy(answer, &events).await;

    let mut req = chat_request("gpt-4o", false);
    req["response_format"] = json!({"type": "json_object"});
    let resp = proxy.post("/v1/chat/completions", &req).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(content).unwrap(),
        json!({"city": "Paris", "temperature_c": 18})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["choices"][0]["message"].get("tool_calls").is_none(), "{v}");
    let sent = mock.only_request().json();
    assert_eq!(sent["tool_choice"], json!({"type": "tool", "name": "json_answer"}), "{sent}");

    req["stream"] = json!(true);
    let resp = proxy.post("/v1/chat/completions", &req).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let chunks = sse_json(&resp.body);
    let text = streamed_text(&chunks);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"city": "Paris", "temperature_c": 18})
    );
    assert!(chunks.iter().all(|c| c["choices"][0]["delta"].get("tool_calls").is_none()));
    assert_eq!(chunks.iter().filter(|c| c["choices"][0]["finish_reason"] == "stop").count(), 1);
}

#[tokio::test]
async fn an_https_upstream_is_reached_over_http2_or_http11_as_alpn_settles() {
    // The HTTPS path (rustls, ALPN, hyper-util's pool; a plain-HTTP upstream takes our own
    // pool instead), with a certificate the proxy is told to trust.
    for (alpn, version) in [
        (&[b"h2".as_slice(), b"http/1.1"][..], http::Version::HTTP_2),
        (&[b"http/1.1".as_slice()][..], http::Version::HTTP_11),
    ] {
        let reply = |r: &Recorded| {
            if r.json()["stream"] == true {
                Reply::sse(text_stream(&["Hel", "lo"]))
            } else {
                Reply::raw_json(200, UPSTREAM_BODY)
            }
        };
        let (mock, tls) = MockUpstream::start_tls(reply, alpn).await;
        assert!(mock.url().starts_with("https://localhost:"));
        let launch = Launch { tls: Some(tls), ..Launch::default() };
        let proxy = Proxy::launch(openai_settings(&mock), launch).await;
        for _ in 0..3 {
            answers_whole_and_streamed(&proxy).await;
        }
        let requests = mock.requests();
        assert_eq!(requests.len(), 6);
        for r in &requests {
            assert_eq!(r.version, version);
            assert_eq!(r.path_and_query, "/v1/chat/completions");
            assert_eq!(r.headers["authorization"], format!("Bearer {UPSTREAM_KEY}"));
            assert_eq!(r.json()["model"], ACTUAL_NAME);
        }
    }
}

/// Asks `proxy` once whole and once streamed, as the HTTPS tests' mocks answer: the whole
/// answer is `UPSTREAM_BODY`'s, the stream says "Hello".
async fn answers_whole_and_streamed(proxy: &Proxy) {
    let resp = proxy.post("/v1/chat/completions", &chat_request("a", false)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.json()["choices"][0]["message"]["content"],
        "Hello! How can I assist you today?"
    );
    let resp = proxy.post("/v1/chat/completions", &chat_request("a", true)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let text = streamed_text(&sse_json(&resp.body));
    assert_eq!(text, "Hello");
    assert_eq!(sse_data(&resp.body).last().map(String::as_str), Some("[DONE]"));
}

/// `alice:s3cret` as Basic credentials.
const PROXY_AUTH: &str = "Basic YWxpY2U6czNjcmV0";

#[tokio::test]
async fn an_https_upstream_is_reached_through_https_proxy_in_a_connect_tunnel() {
    // As curl and the Python service's HTTP client do: a CONNECT to the upstream's host and
    // port, the proxy's credentials from its URL, TLS to the upstream inside the tunnel.
    let reply = |r: &Recorded| {
        if r.json()["stream"] == true {
            Reply::sse(text_stream(&["Hel", "lo"]))
        } else {
            Reply::raw_json(200, UPSTREAM_BODY)
        }
    };
    let alpn = [b"h2".as_slice(), b"http/1.1"];
    let (mock, tls) = MockUpstream::start_tls_as("api.upstream.test", reply, &alpn).await;
    let outbound = OutboundProxy::start(mock.addr(), Some(PROXY_AUTH)).await;
    let port = mock.addr().port();
    let mut settings = openai_settings(&mock);
    settings.base_url = Some(format!("https://api.upstream.test:{port}/v1"));
    settings.https_proxy = Some(Secret::new(format!("http://alice:s3cret@{}", outbound.addr)));
    settings.no_proxy = vec!["other.test".into()];
    let proxy = Proxy::launch(settings, Launch { tls: Some(tls), ..Launch::default() }).await;
    answers_whole_and_streamed(&proxy).await;

    let heads = outbound.heads();
    assert!(!heads.is_empty());
    for head in &heads {
        assert!(
            head.starts_with(&format!("CONNECT api.upstream.test:{port} HTTP/1.1\r\n")),
            "{head}"
        );
        assert!(head.contains(&format!("Proxy-Authorization: {PROXY_AUTH}\r\n")), "{head}");
    }
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.version, http::Version::HTTP_2, "ALPN inside the tunnel");
        assert_eq!(r.path_and_query, "/v1/chat/completions");
        assert!(r.headers.get("proxy-authorization").is_none(), "the upstream never sees it");
    }
    for entry in proxy.entries(2).await {
        let headers = serde_json::to_string(&entry).unwrap();
        assert!(!headers.contains("s3cret") && !headers.contains(PROXY_AUTH), "{headers}");
    }
}

#[tokio::test]
async fn upstreams_are_reached_through_an_https_proxy() {
    // TLS to the proxy itself, its certificate checked as the upstream's is; inside it a
    // CONNECT tunnel with TLS to the upstream (an HTTPS upstream), or requests in absolute
    // form (a plain-HTTP one), as curl and httpx do with an https:// proxy URL.
    let (server, client) = certified(&["api.upstream.test", "127.0.0.1"], &[b"h2", b"http/1.1"]);
    let mut proxy_server = server.clone();
    proxy_server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let reply = |r: &Recorded| {
        if r.json()["stream"] == true {
            Reply::sse(text_stream(&["Hel", "lo"]))
        } else {
            Reply::raw_json(200, UPSTREAM_BODY)
        }
    };
    let mock = MockUpstream::start_tls_with(reply, server).await;
    let outbound =
        OutboundProxy::start_tls(mock.addr(), Some(PROXY_AUTH), Some(proxy_server.clone())).await;
    let port = mock.addr().port();
    let mut settings = openai_settings(&mock);
    settings.base_url = Some(format!("https://api.upstream.test:{port}/v1"));
    settings.https_proxy = Some(Secret::new(format!("https://alice:s3cret@{}", outbound.addr)));
    let launch = Launch { tls: Some(client.clone()), ..Launch::default() };
    let proxy = Proxy::launch(settings, launch).await;
    answers_whole_and_streamed(&proxy).await;
    let heads = outbound.heads();
    assert!(!heads.is_empty());
    for head in &heads {
        let connect = format!("CONNECT api.upstream.test:{port} HTTP/1.1\r\n");
        assert!(head.starts_with(&connect), "{head}");
        assert!(head.contains(&format!("Proxy-Authorization: {PROXY_AUTH}\r\n")), "{head}");
    }
    assert!(mock.requests().iter().all(|r| r.version == http::Version::HTTP_2));

    let plain = MockUpstream::always(Reply::raw_json(200, UPSTREAM_BODY)).await;
    let outbound = OutboundProxy::start_tls(plain.addr(), None, Some(proxy_server)).await;
    let port = plain.addr().port();
    let mut settings = openai_settings(&plain);
    settings.platform = Platform::Custom;
    settings.base_url = Some(format!("http://ollama.lan.test:{port}/v1"));
    settings.http_proxy = Some(Secret::new(format!("https://{}", outbound.addr)));
    let proxy = Proxy::launch(settings, Launch { tls: Some(client), ..Launch::default() }).await;
    let resp = proxy.post("/v1/chat/completions", &chat_request("a", false)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let expected = format!("POST http://ollama.lan.test:{port}/v1/chat/completions HTTP/1.1\r\n");
    assert!(outbound.heads()[0].starts_with(&expected), "{:?}", outbound.heads());
    assert_eq!(plain.only_request().path_and_query, "/v1/chat/completions");
}

#[tokio::test]
async fn an_https_proxy_whose_certificate_is_not_trusted_is_not_used() {
    let (server, client) = certified(&["api.upstream.test"], &[b"http/1.1"]);
    let (untrusted, _) = certified(&["127.0.0.1"], &[b"http/1.1"]);
    let mock = MockUpstream::start_tls_with(|_| Reply::raw_json(200, UPSTREAM_BODY), server).await;
    let outbound = OutboundProxy::start_tls(mock.addr(), None, Some(untrusted)).await;
    let mut settings = openai_settings(&mock);
    settings.base_url = Some(format!("https://api.upstream.test:{}/v1", mock.addr().port()));
    settings.https_proxy = Some(Secret::new(format!("https://{}", outbound.addr)));
    settings.max_retries = 0;
    let proxy = Proxy::launch(settings, Launch { tls: Some(client), ..Launch::default() }).await;
    let resp = proxy.post("/v1/chat/completions", &chat_request("a", false)).await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert!(outbound.heads().is_empty(), "no CONNECT sent: {:?}", outbound.heads());
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn a_plain_http_upstream_is_reached_through_http_proxy_in_absolute_form() {
    let mock = MockUpstream::always(Reply::raw_json(200, UPSTREAM_BODY)).await;
    let outbound = OutboundProxy::start(mock.addr(), Some(PROXY_AUTH)).await;
    let port = mock.addr().port();
    let mut settings = openai_settings(&mock);
    settings.platform = Platform::Custom;
    settings.base_url = Some(format!("http://ollama.lan.test:{port}/v1"));
    settings.all_proxy = Some(Secret::new(format!("alice:s3cret@{}", outbound.addr)));
    let proxy = Proxy::start(settings).await;

    for _ in 0..2 {
        let resp = proxy.post("/v1/chat/completions", &chat_request("a", false)).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let heads = outbound.heads();
    assert_eq!(heads.len(), 1, "one kept-alive connection to the proxy: {heads:?}");
    let expected = format!("POST http://ollama.lan.test:{port}/v1/chat/completions HTTP/1.1\r\n");
    assert!(heads[0].starts_with(&expected), "{}", heads[0]);
    assert!(heads[0].contains(&format!("proxy-authorization: {PROXY_AUTH}\r\n")), "{}", heads[0]);
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].path_and_query, "/v1/chat/completions");
    assert_eq!(requests[0].headers["host"], format!("ollama.lan.test:{port}"));
}

#[tokio::test]
async fn a_no_proxy_entry_with_a_port_or_brackets_sends_its_upstream_direct() {
    // `[::ffff:127.0.0.1]` is the mock's address, but no loopback one to the route, which
    // would send a loopback upstream direct whatever NO_PROXY says.
    let mock = MockUpstream::always(Reply::raw_json(200, UPSTREAM_BODY)).await;
    let outbound = OutboundProxy::start(mock.addr(), None).await;
    let port = mock.addr().port();
    for (no_proxy, direct) in [
        (format!("[::ffff:127.0.0.1]:{port}"), true),
        ("[::ffff:127.0.0.1]".to_owned(), true),
        (format!("[::ffff:127.0.0.1]:{}", port.wrapping_add(1)), false),
    ] {
        let mut settings = openai_settings(&mock);
        settings.platform = Platform::Custom;
        settings.base_url = Some(format!("http://[::ffff:127.0.0.1]:{port}/v1"));
        settings.http_proxy = Some(Secret::new(format!("http://{}", outbound.addr)));
        settings.no_proxy = vec!["other.test".into(), no_proxy.clone()];
        let before = outbound.heads().len();
        let proxy = Proxy::start(settings).await;
        let resp = proxy.post("/v1/chat/completions", &chat_request("a", false)).await;
        assert_eq!(resp.status, 200, "{no_proxy}: {}", resp.text());
        let proxied = outbound.heads().len() - before;
        assert_eq!(proxied == 0, direct, "{no_proxy}: {:?}", outbound.heads());
    }
}

#[tokio::test]
async fn upstreams_are_reached_through_a_socks5_proxy() {
    // An HTTPS upstream by name (socks5h: the proxy resolves it), with the proxy's user and
    // password; then a plain-HTTP one, whose URL has no port (80 is asked for, not 443).
    let reply = |_: &Recorded| Reply::raw_json(200, UPSTREAM_BODY);
    let (mock, tls) = MockUpstream::start_tls_as("api.upstream.test", reply, &[b"h2"]).await;
    let socks = SocksProxy::start(mock.addr(), Some(("bob", "hunter2"))).await;
    let port = mock.addr().port();
    let mut settings = openai_settings(&mock);
    settings.base_url = Some(format!("https://api.upstream.test:{port}/v1"));
    settings.all_proxy = Some(Secret::new(format!("socks5h://bob:hunter2@{}", socks.addr)));
    let proxy = Proxy::launch(settings, Launch { tls: Some(tls), ..Launch::default() }).await;
    let resp = proxy.post("/v1/chat/completions", &chat_request("a", false)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(socks.asked(), [format!("api.upstream.test:{port}")]);
    assert_eq!(mock.requests().len(), 1);
    let entry = serde_json::to_string(&proxy.entries(1).await).unwrap();
    assert!(!entry.contains("hunter2"), "{entry}");

    let mock = MockUpstream::always(Reply::raw_json(200, UPSTREAM_BODY)).await;
    let socks = SocksProxy::start(mock.addr(), None).await;
    let mut settings = openai_settings(&mock);
    settings.platform = Platform::Custom;
    settings.base_url = Some("http://ollama.lan.test/v1".to_owned());
    settings.http_proxy = Some(Secret::new(format!("socks5h://{}", socks.addr)));
    let proxy = Proxy::start(settings).await;
    let resp = proxy.post("/v1/chat/completions", &chat_request("a", false)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(socks.asked(), ["ollama.lan.test:80"]);
    let up = mock.only_request();
    assert_eq!(up.path_and_query, "/v1/chat/completions", "origin form inside the tunnel");
    assert_eq!(up.headers["host"], "ollama.lan.test");
}

#[tokio::test]
async fn a_407_from_an_upstream_behind_a_socks5_proxy_is_the_upstreams_answer() {
    // Only a proxy that takes requests in absolute form answers for the upstream; through a
    // SOCKS5 tunnel a 407 comes from the upstream itself, and reaches the client as it would
    // without the proxy.
    let refusal = r#"{"error":{"message":"proxy auth","type":"invalid_request_error"}}"#;
    let mock = MockUpstream::always(Reply::raw_json(407, refusal)).await;
    let socks = SocksProxy::start(mock.addr(), None).await;
    let mut answers = Vec::new();
    for through_socks in [false, true] {
        let mut settings = openai_settings(&mock);
        settings.platform = Platform::Custom;
        settings.max_retries = 0;
        if through_socks {
            settings.base_url = Some("http://ollama.lan.test/v1".to_owned());
            settings.http_proxy = Some(Secret::new(format!("socks5h://{}", socks.addr)));
        }
        let proxy = Proxy::start(settings).await;
        let resp = proxy.post("/v1/chat/completions", &chat_request("a", false)).await;
        answers.push((resp.status, resp.json()["error"]["code"].clone()));
    }
    assert_eq!(socks.asked(), ["ollama.lan.test:80"]);
    assert_ne!(answers[1].1, "upstream_unreachable", "{answers:?}");
    assert_eq!(answers[0], answers[1]);
}

/// Asks `proxy` once, whose outbound proxy refuses its credentials: the client gets 502
/// `upstream_unreachable` and the proxy's refusal, the upstream `mock` nothing, and the
/// entry's error (returned) says why.
async fn refused_by_the_proxy(proxy: &Proxy, mock: &MockUpstream) -> String {
    let resp = proxy.post("/v1/chat/completions", &chat_request("a", false)).await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(resp.json()["error"]["code"], "upstream_unreachable");
    let message = resp.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("refused the connection: 407 Proxy Authentication Required"));
    assert!(mock.requests().is_empty());
    let entry = proxy.entries(1).await.remove(0);
    let error = entry.entry.error_message.unwrap_or_default();
    assert!(error.contains("407 Proxy Authentication Required"), "{error}");
    error
}

/// A proxy that answers every connection's first request head with `answer`, and closes it.
async fn refusing_proxy(
    answer: &'static [u8],
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut conn).await.is_none() {
                    return;
                }
                let _ = conn.write_all(answer).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_refused_connect_tells_the_client_and_the_log_the_proxys_status_and_reason() {
    let mock = MockUpstream::always(Reply::raw_json(200, UPSTREAM_BODY)).await;
    for (answer, said) in [
        (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".as_slice(), "403 Forbidden"),
        (b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", "502 Bad Gateway"),
        (
            b"HTTP/1.0 407 Proxy Authentication Required\r\n\
              Proxy-Authenticate: Basic realm=\"corp\"\r\n\r\n",
            "407 Proxy Authentication Required",
        ),
    ] {
        let (addr, task) = refusing_proxy(answer).await;
        let mut settings = openai_settings(&mock);
        settings.base_url = Some("https://api.upstream.test/v1".into());
        settings.https_proxy = Some(Secret::new(format!("http://alice:s3cret@{addr}")));
        settings.max_retries = 0;
        let proxy = Proxy::start(settings).await;

        let resp = proxy.post("/v1/chat/completions", &chat_request("a", false)).await;
        assert_eq!(resp.status, 502, "{said}: {}", resp.text());
        let error = assert_openai_error(&resp.json()).clone();
        assert_eq!(error["code"], "upstream_unreachable");
        assert_eq!(
            error["message"],
            format!(
                "could not reach the upstream: the outbound proxy (HTTPS_PROXY) refused the \
                 connection: {said}"
            )
        );
        let entry = proxy.entries(1).await.remove(0);
        let logged = entry.entry.error_message.unwrap_or_default();
        assert!(logged.contains(&format!("through the outbound proxy http://{addr}")), "{logged}");
        assert!(logged.contains(said), "{logged}");
        assert!(!logged.contains("s3cret") && !resp.text().contains("s3cret"), "{logged}");
        task.abort();
    }
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn a_proxy_that_refuses_the_tunnel_is_an_unreachable_upstream() {
    let (mock, tls) = MockUpstream::start_tls_as(
        "api.upstream.test",
        |_| Reply::raw_json(200, UPSTREAM_BODY),
        &[b"http/1.1"],
    )
    .await;
    let outbound = OutboundProxy::start(mock.addr(), Some(PROXY_AUTH)).await;
    let mut settings = openai_settings(&mock);
    settings.base_url = Some(format!("https://api.upstream.test:{}/v1", mock.addr().port()));
    settings.https_proxy = Some(Secret::new(format!("http://{}", outbound.addr)));
    settings.max_retries = 0;
    let proxy = Proxy::launch(settings, Launch { tls: Some(tls), ..Launch::default() }).await;

    refused_by_the_proxy(&proxy, &mock).await;
}

#[tokio::test]
async fn a_proxy_that_refuses_an_absolute_form_request_is_an_unreachable_upstream() {
    // Its 407 is the outbound proxy's refusal of uniproxy's credentials, not the upstream's
    // answer: passed on, it would tell the client that the client's own proxy wants them.
    // The client gets what a refused CONNECT gives (see the test above).
    let mock = MockUpstream::always(Reply::raw_json(200, UPSTREAM_BODY)).await;
    let outbound = OutboundProxy::start(mock.addr(), Some(PROXY_AUTH)).await;
    let mut settings = openai_settings(&mock);
    settings.platform = Platform::Custom;
    settings.base_url = Some(format!("http://ollama.lan.test:{}/v1", mock.addr().port()));
    settings.http_proxy = Some(Secret::new(format!("http://alice:wrong@{}", outbound.addr)));
    settings.max_retries = 0;
    let proxy = Proxy::start(settings).await;

    let error = refused_by_the_proxy(&proxy, &mock).await;
    assert!(!error.contains("wrong"), "{error}");
}

/// An outbound proxy that refuses uniproxy's credentials (407) is the settings at fault, as
/// an upstream's 401 is: neither the proxy nor the client's SDK tries again, each try being
/// another refused login at the proxy (many lock the account after a few). With the default
/// MAX_RETRIES the proxy sent the wrong password three times per request, and the client's
/// SDK retried the 502 twice more. A proxy's other refusals are retried as before.
#[tokio::test]
async fn a_proxy_that_refuses_its_credentials_is_not_asked_again() {
    let mock = MockUpstream::always(Reply::raw_json(200, UPSTREAM_BODY)).await;
    let outbound = OutboundProxy::start(mock.addr(), Some(PROXY_AUTH)).await;
    for (upstream, plain) in [("https", false), ("http", true)] {
        let mut settings = openai_settings(&mock);
        settings.platform = Platform::Custom;
        let port = mock.addr().port();
        settings.base_url = Some(format!("{upstream}://api.upstream.test:{port}/v1"));
        let value = Secret::new(format!("http://alice:wrong@{}", outbound.addr));
        if plain {
            settings.http_proxy = Some(value);
        } else {
            settings.https_proxy = Some(value);
        }
        settings.max_retries = 2;
        let proxy = Proxy::start(settings).await;
        let before = outbound.heads().len();
        let resp = proxy.post("/v1/chat/completions", &chat_request("a", false)).await;
        assert_eq!(resp.status, 502, "{upstream}: {}", resp.text());
        assert_eq!(resp.json()["error"]["code"], "upstream_unreachable");
        assert_eq!(resp.header("x-should-retry"), Some("false"), "{upstream}");
        assert_eq!(outbound.heads().len() - before, 1, "{upstream}: one try");
        assert_eq!(proxy.only_entry().await.entry.attempts, 1);
    }

    // A 502 of the proxy's own (it could not reach the upstream) is worth another try.
    let (addr, task) =
        refusing_proxy(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n").await;
    let mut settings = openai_settings(&mock);
    settings.base_url = Some("https://api.upstream.test/v1".into());
    settings.https_proxy = Some(Secret::new(format!("http://{addr}")));
    settings.max_retries = 1;
    let proxy = Proxy::start(settings).await;
    let resp = proxy.post("/v1/chat/completions", &chat_request("a", false)).await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(resp.header("x-should-retry"), None);
    assert_eq!(proxy.only_entry().await.entry.attempts, 2);
    task.abort();
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn a_proxy_that_never_answers_the_connect_is_the_connect_timeout() {
    // The proxy's answer to the CONNECT is when the upstream is connected (a proxy that
    // cannot reach it answers when its own connect gives up): CONNECT_TIMEOUT bounds it, as
    // curl's --connect-timeout does, not the first-byte timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            open.push(conn);
        }
    });
    let mock = MockUpstream::always(Reply::raw_json(200, UPSTREAM_BODY)).await;
    // A SOCKS5 proxy that never answers its handshake, the same; and an https:// proxy that
    // never answers the TLS hello, for an HTTPS upstream and for a plain-HTTP one.
    for (upstream, proxy_url) in [
        ("https", format!("http://{addr}")),
        ("https", format!("socks5h://{addr}")),
        ("https", format!("https://{addr}")),
        ("http", format!("https://{addr}")),
    ] {
        let mut settings = openai_settings(&mock);
        settings.platform = Platform::Custom;
        settings.base_url = Some(format!("{upstream}://api.upstream.test/v1"));
        settings.https_proxy = Some(Secret::new(proxy_url.clone()));
        settings.http_proxy = Some(Secret::new(proxy_url.clone()));
        settings.connect_timeout = Duration::from_millis(300);
        settings.first_byte_timeout = Duration::from_secs(5);
        settings.max_retries = 0;
        let proxy = Proxy::start(settings).await;

        let resp = proxy.post("/v1/chat/completions", &chat_request("a", false)).await;
        assert_eq!(resp.status, 504, "{proxy_url}: {}", resp.text());
        assert_eq!(resp.json()["error"]["code"], "upstream_timeout");
        let message = resp.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains("CONNECT_TIMEOUT"), "{proxy_url}: {message}");
    }
    held.abort();
}

fn azure_settings(mock: &MockUpstream, base_path: &str) -> uniproxy_config::Settings {
    let mut s = openai_settings(mock);
    s.platform = Platform::AzureOpenAi;
    s.base_url = Some(format!("{}{base_path}", mock.url()));
    s.api_key = Secret::new("azure-key-0123");
    s.api_version = "2025-01-01-preview".to_owned();
    s
}

/// An Azure answer, in the shape Azure sends (content filter results, prompt filter results).
fn azure_completion() -> serde_json::Value {
    let mut c = completion("The capital of France is **Paris**.");
    c["choices"][0]["content_filter_results"] =
        json!({"hate": {"filtered": false, "severity": "safe"}});
    c["prompt_filter_results"] = json!([{"prompt_index": 0, "content_filter_results": {
        "jailbreak": {"detected": false, "filtered": false}}}]);
    c
}

#[tokio::test]
async fn azure_deployment_url_uses_api_version_and_api_key_header() {
    let mock = MockUpstream::always(Reply::json(200, &azure_completion())).await;
    let proxy = Proxy::start(azure_settings(&mock, "/openai/deployments/my-dep")).await;

    let mut req = post_request("/v1/chat/completions", &chat_request("whatever", false));
    req.headers_mut().insert("authorization", "Bearer client-key".parse().unwrap());
    let resp = send(proxy.addr, req).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json(), azure_completion());

    let up = mock.only_request();
    assert_eq!(
        up.path_and_query,
        "/openai/deployments/my-dep/chat/completions?api-version=2025-01-01-preview"
    );
    assert_eq!(up.header("api-key"), Some("azure-key-0123"));
    assert!(up.header("authorization").is_none(), "Azure gets no Authorization header");
    assert_eq!(up.json()["model"], ACTUAL_NAME);
}

#[tokio::test]
async fn azure_v1_url_has_no_api_version() {
    let mock = MockUpstream::always(Reply::json(200, &azure_completion())).await;
    let proxy = Proxy::start(azure_settings(&mock, "/openai/v1")).await;

    let resp = proxy.post("/chat/completions", &chat_request("whatever", false)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let up = mock.only_request();
    assert_eq!(up.path_and_query, "/openai/v1/chat/completions");
    assert_eq!(up.header("api-key"), Some("azure-key-0123"));
    assert!(up.header("authorization").is_none());
}

#[tokio::test]
async fn azure_stream_with_filter_chunks_passes_through() {
    let safe = json!({"hate": {"filtered": false, "severity": "safe"},
        "self_harm": {"filtered": false, "severity": "safe"},
        "sexual": {"filtered": false, "severity": "safe"},
        "violence": {"filtered": false, "severity": "safe"}});
    let prompt_filter = json!({"id": "", "object": "", "created": 0, "model": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": safe}],
        "choices": [], "usage": null});
    let piece = |delta: serde_json::Value| {
        json!({"id": "chatcmpl-8JCbt5d4luUIhYCI7YH4dQK7hnHx2", "object": "chat.completion.chunk",
            "created": 1_699_587_397, "model": "gpt-35-turbo",
            "choices": [{"index": 0, "finish_reason": null, "delta": delta}], "usage": null})
    };
    // Azure's asynchronous filter: chunks with no `delta`, empty ids and models.
    let offsets = json!({"check_offset": 65, "start_offset": 65, "end_offset": 1056});
    let filter_pass = json!({"id": "", "object": "", "created": 0, "model": "",
        "choices": [{"index": 0, "finish_reason": null, "content_filter_results": safe,
            "content_filter_offsets": offsets}], "usage": null});
    let filter_blocked = json!({"id": "", "object": "", "created": 0, "model": "",
        "choices": [{"index": 0, "finish_reason": "content_filter",
            "content_filter_results": {"protected_material_text": {"detected": true, "filtered": true}},
            "content_filter_offsets": offsets}], "usage": null});
    let sent = [
        prompt_filter,
        piece(json!({"role": "assistant"})),
        piece(json!({"content": "Hey"})),
        piece(json!({"content": " Jude"})),
        filter_pass,
        filter_blocked,
    ];
    let mut steps: Vec<Step> = sent.iter().map(Step::event).collect();
    steps.push(Step::done());
    let mock = MockUpstream::always(Reply::sse(steps)).await;
    let proxy = Proxy::start(azure_settings(&mock, "/openai/deployments/my-dep")).await;

    let resp = proxy.post("/v1/chat/completions", &chat_request("a", true)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(sse_json(&resp.body), sent, "every Azure chunk reaches the client unchanged");
    assert_eq!(sse_data(&resp.body).last().map(String::as_str), Some("[DONE]"));
    let up = mock.only_request();
    assert!(up.path_and_query.starts_with("/openai/deployments/my-dep/chat/completions?"));
    assert_eq!(up.json()["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn events_of_several_data_lines_reach_the_client_as_events_of_several_lines() {
    // Each event's JSON cut after its first member, over two `data:` lines: an SSE decoder
    // joins them with a newline, which JSON reads as whitespace.
    let sent = [
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "Hello"}), None),
        chunk(json!({}), Some("stop")),
    ];
    let mut steps: Vec<Step> = sent
        .iter()
        .map(|c| {
            let text = c.to_string();
            let cut = text.find(',').unwrap();
            Step::raw(&format!("data: {}\ndata: {}\n\n", &text[..cut], &text[cut..]))
        })
        .collect();
    steps.push(Step::done());
    let mock = MockUpstream::always(Reply::sse(steps)).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;

    let resp = proxy.post("/v1/chat/completions", &chat_request("a", true)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(sse_json(&resp.body), sent, "every chunk reaches the client whole");
    assert_eq!(proxy.only_entry().await.entry.status, 200);
}

#[tokio::test]
async fn models_lists_the_actual_name() {
    let mock = MockUpstream::always(Reply::hang()).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    for path in ["/models", "/v1/models"] {
        let resp = proxy.get(path).await;
        assert_eq!(resp.status, 200, "{path}");
        let body = resp.json();
        assert_eq!(body["object"], "list");
        let data = body["data"].as_array().unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(data[0]["id"], ACTUAL_NAME);
        assert_eq!(data[0]["object"], "model");
        assert!(data[0]["created"].as_u64().is_some_and(|t| t > 1_600_000_000));
    }
    assert!(mock.requests().is_empty(), "/models is answered locally");
}

#[tokio::test]
async fn every_answer_names_its_log_entry_in_x_request_id() {
    let mock = MockUpstream::start(|r| {
        if r.json()["messages"][1]["content"] == "fail" {
            Reply::json(500, &openai_error("boom", "server_error", None))
        } else if r.json()["stream"] == true {
            Reply::sse(text_stream(&["Hi"]))
        } else {
            Reply::raw_json(200, UPSTREAM_BODY)
        }
    })
    .await;
    let mut settings = openai_settings(&mock);
    settings.max_retries = 0;
    let proxy = Proxy::start(settings).await;
    let mut ids = Vec::new();
    for (stream, content, status) in [(false, "a", 200), (true, "a", 200), (false, "fail", 500)] {
        let mut req = chat_request("a", stream);
        req["messages"][1]["content"] = json!(content);
        let resp = proxy.post("/v1/chat/completions", &req).await;
        assert_eq!(resp.status, status, "{}", resp.text());
        ids.push(resp.header("x-request-id").expect("x-request-id").to_owned());
        let overhead = resp.header("x-uniproxy-overhead-ms").expect("overhead, errors too");
        assert!(overhead.parse::<f64>().is_ok_and(f64::is_finite), "{overhead}");
    }
    // The entry the id names, not the upstream's `id` in the body.
    let logged: Vec<String> =
        proxy.entries(3).await.into_iter().map(|e| e.entry.request_id).collect();
    assert_eq!(ids, logged);
    assert!(ids.iter().all(|id| id.starts_with("chatcmpl-") && id != UPSTREAM_ID), "{ids:?}");
}

#[tokio::test]
async fn retrieving_any_model_answers_the_actual_one() {
    let mock = MockUpstream::always(Reply::hang()).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let listed = proxy.get("/v1/models").await.json()["data"][0].clone();
    // Every name a chat request may carry goes to ACTUAL_NAME, so every name retrieves it:
    // the configured one, another vendor's, and ids with a slash (Ollama, Hugging Face).
    let name = format!("/v1/models/{ACTUAL_NAME}");
    for path in [name.as_str(), "/models/gpt-4o", "/v1/models/meta-llama/Llama-3.1-8B/"] {
        let resp = proxy.get(path).await;
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_eq!(resp.json(), listed, "{path}");
    }
    let resp = proxy.post("/v1/models/gpt-4o", &json!({})).await;
    assert_eq!(resp.status, 405);
    assert_openai_error(&resp.json());
    assert_eq!(resp.header("allow"), Some("GET, HEAD, OPTIONS"));
    assert!(mock.requests().is_empty(), "/models/{{model}} is answered locally");
}

#[tokio::test]
async fn health_reports_platform_model_version_and_uptime() {
    let mock = MockUpstream::always(Reply::hang()).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let resp = proxy.get("/health").await;
    assert_eq!(resp.status, 200);
    let body = resp.json();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["platform"], "openai");
    assert_eq!(body["model"], ACTUAL_NAME);
    assert!(body["version"].as_str().is_some_and(|v| v.split('.').count() == 3), "{body}");
    assert!(body["uptime_seconds"].is_u64(), "{body}");
    assert!(mock.requests().is_empty());
}

/// A page's script sees only the response headers CORS exposes: the OpenAI SDKs in a
/// browser need `x-request-id` (`_request_id`) and `retry-after-ms` / `retry-after` (how long
/// to wait before retrying), which are not CORS-safelisted.
#[tokio::test]
async fn cors_exposes_the_headers_the_sdks_read() {
    let busy = json!({"error": {"message": "slow down", "type": "rate_limit_error"}});
    let reply = Reply::json(429, &busy)
        .with_header("retry-after", "7")
        .with_header("retry-after-ms", "7000");
    let mock = MockUpstream::always(reply).await;
    let mut settings = openai_settings(&mock);
    settings.cors_allow_origins = vec!["https://app.example".to_owned()];
    settings.max_retries = 0;
    let proxy = Proxy::start(settings).await;

    let mut r = post_request("/v1/chat/completions", &chat_request("a", false));
    r.headers_mut().insert("origin", "https://app.example".parse().unwrap());
    let resp = send(proxy.addr, r).await;
    assert_eq!(resp.status, 429);
    assert_eq!(resp.header("retry-after"), Some("7"));
    assert!(resp.header("x-request-id").is_some());
    let exposed = resp.header("access-control-expose-headers").expect("expose-headers");
    let exposed: Vec<String> = exposed.split(',').map(|h| h.trim().to_ascii_lowercase()).collect();
    let sdk_reads = [
        "x-request-id",
        "retry-after",
        "retry-after-ms",
        "x-should-retry",
        "x-uniproxy-overhead-ms",
    ];
    for name in sdk_reads {
        assert!(exposed.iter().any(|h| h == name), "{name} not exposed: {exposed:?}");
    }
}

/// A browser's preflight from `origin` for a `POST` to `path` with the SDKs' headers.
fn preflight(path: &str, origin: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut r = request(Method::OPTIONS, path, bytes::Bytes::new());
    let h = r.headers_mut();
    h.insert("origin", origin.parse().unwrap());
    h.insert("access-control-request-method", "POST".parse().unwrap());
    h.insert("access-control-request-headers", "authorization, content-type".parse().unwrap());
    r
}

#[tokio::test]
async fn cors_preflight_answers_only_allowed_origins() {
    let mock = MockUpstream::always(Reply::json(200, &completion("hi"))).await;
    let mut settings = openai_settings(&mock);
    settings.cors_allow_origins = vec!["https://app.example".to_owned()];
    let proxy = Proxy::start(settings).await;

    let preflight = |origin| preflight("/v1/chat/completions", origin);
    let ok = send(proxy.addr, preflight("https://app.example")).await;
    assert_eq!(ok.status, 204);
    assert_eq!(ok.header("access-control-allow-origin"), Some("https://app.example"));
    let methods = ok.header("access-control-allow-methods").expect("allow-methods");
    assert!(methods.contains("POST"), "{methods}");
    let headers = ok.header("access-control-allow-headers").expect("allow-headers");
    assert!(headers.contains("authorization") && headers.contains("content-type"), "{headers}");
    let vary: Vec<_> = ok.headers.get_all("vary").iter().collect();
    assert_eq!(vary, ["origin"], "one vary: origin");

    let denied = send(proxy.addr, preflight("https://evil.example")).await;
    for name in [
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-allow-credentials",
    ] {
        assert!(denied.headers.get(name).is_none(), "{name} sent to a disallowed origin");
    }

    // The actual request from the allowed origin carries the CORS header too.
    let mut r = post_request("/v1/chat/completions", &chat_request("a", false));
    r.headers_mut().insert("origin", "https://app.example".parse().unwrap());
    let resp = send(proxy.addr, r).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("access-control-allow-origin"), Some("https://app.example"));

    // A page of another origin posts without asking first (a form, or a `text/plain`
    // fetch): refused before anything reaches the upstream, and recorded.
    let mut r = post_request("/v1/chat/completions", &chat_request("a", false));
    r.headers_mut().insert("origin", "https://evil.example".parse().unwrap());
    r.headers_mut().insert("content-type", "text/plain".parse().unwrap());
    let resp = send(proxy.addr, r).await;
    let e = expect_error(&resp, 403);
    assert_eq!(e["code"], "cross_origin_refused", "{e}");
    assert!(e["message"].as_str().unwrap().contains("CORS_ALLOW_ORIGINS"), "{e}");
    assert!(resp.header("access-control-allow-origin").is_none());
    assert_eq!(mock.requests().len(), 1, "only the allowed origin's request went upstream");

    // The proxy's own origin (the Host it is reached at), and no Origin at all (every client
    // but a browser), are served.
    let own = format!("http://{}", proxy.addr);
    let mut r = post_request("/v1/chat/completions", &chat_request("a", false));
    r.headers_mut().insert("origin", own.parse().unwrap());
    r.headers_mut().insert("host", proxy.addr.to_string().parse().unwrap());
    assert_eq!(send(proxy.addr, r).await.status, 200);
    let plain = send(proxy.addr, post_request("/v1/chat/completions", &chat_request("a", false)));
    assert_eq!(plain.await.status, 200);
    // The log viewer's login form, as Chrome posts it under a `no-referrer` policy; a
    // sandboxed page of another site says `null` too, and its browser says where it is.
    for (site, status) in [("same-origin", 200), ("cross-site", 403)] {
        let mut r = post_request("/v1/chat/completions", &chat_request("a", false));
        r.headers_mut().insert("origin", "null".parse().unwrap());
        r.headers_mut().insert("sec-fetch-site", site.parse().unwrap());
        assert_eq!(send(proxy.addr, r).await.status, status, "{site}");
    }
    let statuses: Vec<u16> = proxy.entries(6).await.iter().map(|e| e.entry.status).collect();
    assert_eq!(statuses, [200, 403, 200, 200, 200, 403]);
}

/// The Vercel AI SDK's default `openai(model)` posts to `/v1/responses`, which the proxy does
/// not serve. From a web page the browser asks first; a preflight answered 404 is only "Failed
/// to fetch" to the page, so the preflight of an allowed origin is answered, and the post
/// itself gets the 404 that says what is not served, readable by the page.
#[tokio::test]
async fn a_page_posting_to_an_endpoint_not_served_reads_why() {
    let mock = MockUpstream::always(Reply::json(200, &completion("hi"))).await;
    let mut settings = openai_settings(&mock);
    settings.cors_allow_origins = vec!["https://app.example".to_owned()];
    let proxy = Proxy::start(settings).await;

    let preflight = |origin| preflight("/v1/responses", origin);
    let ok = send(proxy.addr, preflight("https://app.example")).await;
    assert_eq!(ok.status, 204);
    assert_eq!(ok.header("access-control-allow-origin"), Some("https://app.example"));
    assert_eq!(ok.header("access-control-allow-methods"), Some("POST"));
    let headers = ok.header("access-control-allow-headers").expect("allow-headers");
    assert!(headers.contains("authorization") && headers.contains("content-type"), "{headers}");

    // Another origin's preflight is not answered, as on a served path.
    let denied = send(proxy.addr, preflight("https://evil.example")).await;
    assert_eq!(denied.status, 404);
    assert!(denied.header("access-control-allow-origin").is_none());

    // The AI SDK's request, as it sends it.
    let body = json!({"model": "gpt-4o", "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}]});
    let mut r = post_request("/v1/responses", &body);
    r.headers_mut().insert("origin", "https://app.example".parse().unwrap());
    let resp = send(proxy.addr, r).await;
    let e = expect_error(&resp, 404);
    assert!(e["message"].as_str().unwrap().contains("/v1/responses"), "{e}");
    assert_eq!(resp.header("access-control-allow-origin"), Some("https://app.example"));
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn on_loopback_with_no_keys_only_local_host_names_are_answered() {
    // A page at http://attacker.example:8000, its name rebound to 127.0.0.1, is of the same
    // origin as what it reaches there: only the Host it names tells it apart.
    let mock = MockUpstream::always(Reply::json(200, &completion("hi"))).await;
    let mut settings = openai_settings(&mock);
    settings.allowed_hosts = vec!["api.example.com".to_owned()];
    let proxy = Proxy::start(settings).await;
    let with_host = |method: Method, path: &str, host: &str| {
        let body = if method == Method::POST {
            bytes::Bytes::from(chat_request("a", false).to_string())
        } else {
            bytes::Bytes::new()
        };
        let mut r = request(method, path, body);
        r.headers_mut().insert("host", host.parse().unwrap());
        r
    };
    for (method, path) in [
        (Method::GET, "/api/logs"),
        (Method::GET, "/v1/models"),
        (Method::POST, "/v1/chat/completions"),
    ] {
        let resp = send(proxy.addr, with_host(method.clone(), path, "attacker.example:8000")).await;
        let e = expect_error(&resp, 403);
        assert_eq!(e["code"], "host_not_allowed", "{path}: {e}");
        assert!(e["message"].as_str().unwrap().contains("ALLOWED_HOSTS"), "{e}");
    }
    assert!(mock.requests().is_empty());
    for host in ["localhost:8000", "LOCALHOST", "127.0.0.1:9", "[::1]:8000", "API.example.com"] {
        let resp = send(proxy.addr, with_host(Method::GET, "/v1/models", host)).await;
        assert_eq!(resp.status, 200, "{host}: {}", resp.text());
    }
    let health = send(proxy.addr, with_host(Method::GET, "/health", "attacker.example")).await;
    assert_eq!(health.status, 200, "health answers any name");
    // The refused chat request is recorded, as every chat request is.
    assert_eq!(proxy.only_entry().await.entry.status, 403);

    // With a key, the page cannot use the proxy anyway: any name is answered.
    let mut settings = openai_settings(&mock);
    settings.proxy_api_keys = vec![uniproxy_config::Secret::new("client-key")];
    let keyed = Proxy::start(settings).await;
    let resp = send(keyed.addr, with_host(Method::GET, "/health", "proxy.internal")).await;
    assert_eq!(resp.status, 200);
    let mut r = with_host(Method::GET, "/v1/models", "proxy.internal");
    r.headers_mut().insert("authorization", "Bearer client-key".parse().unwrap());
    assert_eq!(send(keyed.addr, r).await.status, 200);

    // ADMIN_KEY protects the admin side only: without client keys, the page could still
    // spend the upstream key through the chat side, so that side keeps to local names.
    let mut settings = openai_settings(&mock);
    settings.admin_key = Some(uniproxy_config::Secret::new("admin-key"));
    let admin_only = Proxy::start(settings).await;
    for (method, path) in [(Method::GET, "/v1/models"), (Method::POST, "/v1/chat/completions")] {
        let resp =
            send(admin_only.addr, with_host(method.clone(), path, "attacker.example:8000")).await;
        let e = expect_error(&resp, 403);
        assert_eq!(e["code"], "host_not_allowed", "{path}: {e}");
    }
    assert!(mock.requests().is_empty(), "the upstream was not asked");
    let mut r = with_host(Method::GET, "/api/logs", "proxy.internal");
    r.headers_mut().insert("authorization", "Bearer admin-key".parse().unwrap());
    assert_eq!(send(admin_only.addr, r).await.status, 200, "the admin side has its key");
    let resp = send(admin_only.addr, with_host(Method::GET, "/v1/models", "localhost")).await;
    assert_eq!(resp.status, 200);
}

/// The host a request is for is its target's authority when it has one: HTTP/2's
/// `:authority` (hyper puts it in the URI, and there is no `Host` header), and an HTTP/1
/// target in absolute form (whose `Host` the server must ignore). Read from the `Host` header
/// alone, both went past the DNS-rebinding check.
#[tokio::test]
async fn the_host_check_reads_http2_authority_and_absolute_form_targets() {
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = MockUpstream::always(Reply::json(200, &completion("hi"))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for (authority, status) in [("attacker.example:8000", 403), ("localhost:8000", 200)] {
        let mut req = post_request("/v1/chat/completions", &chat_request("a", false));
        *req.uri_mut() = format!("http://{authority}/v1/chat/completions").parse().unwrap();
        let resp = h2.send_request(req).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status().as_u16(), status, "{authority}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        if status == 403 {
            let e = serde_json::from_slice::<Value>(&body).unwrap();
            assert_eq!(assert_openai_error(&e)["code"], "host_not_allowed", "{e}");
        }
    }
    // HTTP/1.1 in absolute form: the target's host counts, not the `Host` header's.
    let body = chat_request("a", false).to_string();
    let mut conn = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST http://attacker.example/v1/chat/completions HTTP/1.1\r\nhost: localhost\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(format!("{head}{body}").as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, conn.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("host_not_allowed"), "{answer}");
    assert_eq!(mock.requests().len(), 1, "only the request for localhost went upstream");
}

#[tokio::test]
async fn shutdown_refuses_new_connections_and_lets_a_stream_finish() {
    let release = Arc::new(Notify::new());
    let mut steps: Vec<Step> = text_stream(&["Hel"]).into_iter().take(2).collect();
    steps.push(Step::Wait(release.clone()));
    steps.extend(text_stream(&["lo"]).into_iter().skip(1));
    let mock = MockUpstream::always(Reply::sse(steps)).await;
    let mut proxy = Proxy::start(openai_settings(&mock)).await;

    let mut s =
        open_stream(proxy.addr, post_request("/v1/chat/completions", &chat_request("a", true)))
            .await;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\"Hel\"") {
        seen.extend_from_slice(&s.next_chunk().await.expect("a chunk").0);
    }
    proxy.shutdown();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while tokio::net::TcpStream::connect(proxy.addr).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!proxy.stopped_within(Duration::from_millis(200)).await, "the stream is in flight");

    release.notify_one();
    seen.extend_from_slice(&s.rest().await);
    let text = streamed_text(&sse_json(&seen));
    assert_eq!(text, "Hello");
    assert_eq!(sse_data(&seen).last().map(String::as_str), Some("[DONE]"));
    assert!(proxy.stopped_within(Duration::from_secs(5)).await, "serve returns once it is done");
}

#[tokio::test]
async fn the_log_holds_what_went_upstream_byte_for_byte_storing_the_clients_texts_once() {
    // As Anthropic answers (fixtures/anthropic), for the translated case.
    let anthropic_answer = r#"{"model":"claude-sonnet-4-5-20250929","id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","content":[{"type":"text","text":"Paris."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1210,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":4,"service_tier":"standard"}}"#;
    for platform in [Platform::OpenAi, Platform::Anthropic] {
        let answer = if platform == Platform::OpenAi { UPSTREAM_BODY } else { anthropic_answer };
        let mock = MockUpstream::always(Reply::raw_json(200, answer)).await;
        let mut settings = openai_settings(&mock);
        settings.platform = platform;
        let mut proxy = Proxy::start_logged(settings).await;
        // A long history as a client writes it: the model first, then the messages.
        let history = "Earlier, the user asked about the weather in Paris. ".repeat(100);
        let raw = format!(
            r#"{{"model":"my-alias","messages":[{{"role":"system","content":"{history}"}},{{"role":"user","content":"And now, é?"}}],"temperature":0.2}}"#
        );
        let mut req = request(Method::POST, "/v1/chat/completions", Bytes::from(raw.clone()));
        req.headers_mut().insert("content-type", "application/json".parse().unwrap());
        let resp = send(proxy.addr, req).await;
        assert_eq!(resp.status, 200, "{platform:?}: {}", resp.text());

        let sent = mock.only_request().body;
        let entry = proxy.only_entry().await.entry;
        assert_eq!(entry.client_request, raw);
        assert_eq!(entry.upstream_request.as_bytes(), &sent[..], "{platform:?}: read back whole");
        assert!(!entry.upstream_copies.is_empty(), "{platform:?}");

        // The row holds the history once: the upstream request's column keeps only what the
        // proxy wrote around the client's bytes.
        let conn = rusqlite::Connection::open(proxy.database_path()).unwrap();
        let (kept, client): (i64, i64) = conn
            .query_row(
                "SELECT length(upstream_request), length(client_request) FROM bodies",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert!(kept < 200 && client > 5_000, "{platform:?}: {kept} bytes kept of {}", sent.len());

        // The JSON log's line: from an OpenAI-compatible upstream, the members the proxy set
        // (the client's request with them is what went upstream); from a translated one, the
        // request whole.
        proxy.finish().await;
        let log = std::fs::read_to_string(proxy.log_file_path()).unwrap();
        let line = log.lines().find(|l| l.contains(r#""msg":"request content""#)).unwrap();
        let v: Value = serde_json::from_str(line).unwrap();
        let sent: Value = serde_json::from_slice(&sent).unwrap();
        if platform == Platform::OpenAi {
            assert_eq!(v.get("upstream_request"), None, "{line}");
            let mut rebuilt = v["client_request"].as_object().unwrap().clone();
            for (key, value) in v["upstream_changes"].as_object().unwrap() {
                if value.is_null() {
                    rebuilt.remove(key);
                } else {
                    rebuilt.insert(key.clone(), value.clone());
                }
            }
            assert_eq!(Value::Object(rebuilt), sent, "{line}");
            assert_eq!(v["upstream_changes"]["model"], ACTUAL_NAME, "{line}");
            assert_eq!(line.matches(&history).count(), 1, "the history once");
        } else {
            assert_eq!(v.get("upstream_changes"), None, "{line}");
            assert_eq!(v["upstream_request"], sent, "{line}");
            assert_eq!(line.matches(&history).count(), 2, "the client's and the translated");
        }
    }
}
