//! Every way a request can fail, each answered with its status in the OpenAI error shape;
//! the settings that refuse or reshape requests; and a client that leaves mid-stream.

// Helpers outside `#[test]` functions fail the test the same way; clippy's test exemption
// does not reach them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uniproxy_config::Platform;

/// Sends raw bytes as the body of a chat request.
async fn post_raw(proxy: &Proxy, body: &'static str) -> HttpResponse {
    let mut req =
        request(Method::POST, "/v1/chat/completions", Bytes::from_static(body.as_bytes()));
    req.headers_mut().insert("content-type", "application/json".parse().unwrap());
    send(proxy.addr, req).await
}

#[tokio::test]
async fn invalid_json_is_400() {
    let mock = MockUpstream::always(Reply::json(200, &completion("x"))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let e = expect_error(&post_raw(&proxy, r#"{"model": "a", "messages": ["#).await, 400);
    assert_eq!(e["type"], "invalid_request_error");
    let e = expect_error(&post_raw(&proxy, "not json at all").await, 400);
    assert_eq!(e["type"], "invalid_request_error");
    assert!(mock.requests().is_empty(), "nothing goes upstream");
}

/// A member given twice is refused naming it whole, at the top level too (where the bare path
/// is empty, and the error had no `param`).
#[tokio::test]
async fn a_member_given_twice_is_400_naming_it() {
    let mock = MockUpstream::always(Reply::json(200, &completion("x"))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let cases = [
        (r#"{"model":"a","model":"b","messages":[{"role":"user","content":"hi"}]}"#, "model"),
        (
            r#"{"model":"a","messages":[{"role":"user","role":"system","content":"hi"}]}"#,
            "messages[0].role",
        ),
    ];
    for (body, path) in cases {
        let e = expect_error(&post_raw(&proxy, body).await, 400);
        assert_eq!(e["param"], path, "{body}: {e}");
        assert_eq!(e["code"], "invalid_value", "{body}: {e}");
    }
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn wrong_type_is_400_naming_the_json_path() {
    let mock = MockUpstream::always(Reply::json(200, &completion("x"))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let cases = [
        (
            r#"{"model":"a","messages":[{"role":"user","content":"hi"}],"temperature":"hot"}"#,
            "temperature",
        ),
        (
            r#"{"model":"a","messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":"yes"}}"#,
            "stream_options.include_usage",
        ),
        (r#"{"model":"a","messages":"hi"}"#, "messages"),
    ];
    for (body, path) in cases {
        let e = expect_error(&post_raw(&proxy, body).await, 400);
        assert_eq!(e["param"], path, "{body}: {e}");
        assert_eq!(e["type"], "invalid_request_error");
    }
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn a_missing_member_is_400_naming_it_as_openai_does() {
    let mock = MockUpstream::always(Reply::json(200, &completion("x"))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let cases = [
        (r#"{"model":"a"}"#, "messages"),
        (r#"{"model":"a","messages":[{"content":"hi"}]}"#, "messages[0].role"),
        (
            r#"{"model":"a","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function"}]}]}"#,
            "messages[0].tool_calls[0].function",
        ),
    ];
    for (body, param) in cases {
        let e = expect_error(&post_raw(&proxy, body).await, 400);
        assert_eq!(e["param"], param, "{body}: {e}");
        assert_eq!(e["code"], "missing_required_parameter", "{e}");
        assert_eq!(e["type"], "invalid_request_error");
    }
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn a_compressed_body_is_415_naming_its_encoding() {
    let mock = MockUpstream::always(Reply::json(200, &completion("x"))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let with_coding = |coding: &str, body: Vec<u8>| {
        let mut r = request(Method::POST, "/v1/chat/completions", Bytes::from(body));
        r.headers_mut().insert("content-type", "application/json".parse().unwrap());
        r.headers_mut().insert("content-encoding", coding.parse().unwrap());
        r
    };
    let json = chat_request("a", false).to_string().into_bytes();
    let resp = send(proxy.addr, with_coding("gzip", gzip_stored(&json))).await;
    let e = expect_error(&resp, 415);
    assert_eq!(e["code"], "unsupported_content_encoding");
    assert!(e["message"].as_str().unwrap().contains("`gzip`"), "{e}");
    // The answer says which codings a body may come in: none (RFC 9110, 15.5.16).
    assert_eq!(resp.header("accept-encoding"), Some("identity"));
    assert!(mock.requests().is_empty());
    // Every coding the body went through counts, listed in one header or in several: only
    // the first was checked, and the body read as bad JSON.
    let listed = with_coding("identity, gzip", gzip_stored(&json));
    let mut repeated = with_coding("identity", gzip_stored(&json));
    repeated.headers_mut().append("content-encoding", "gzip".parse().unwrap());
    for r in [listed, repeated] {
        let e = expect_error(&send(proxy.addr, r).await, 415);
        assert!(e["message"].as_str().unwrap().contains("`gzip`"), "{e}");
    }
    assert!(mock.requests().is_empty());
    // `identity` is no encoding at all.
    assert_eq!(send(proxy.addr, with_coding("Identity", json.clone())).await.status, 200);
    assert_eq!(send(proxy.addr, with_coding("identity, IDENTITY", json)).await.status, 200);
    let statuses: Vec<u16> = proxy.entries(5).await.iter().map(|e| e.entry.status).collect();
    assert_eq!(statuses, [415, 415, 415, 200, 200]);
}

#[tokio::test]
async fn body_over_max_body_size_is_413() {
    let mock = MockUpstream::always(Reply::json(200, &completion("x"))).await;
    let mut settings = openai_settings(&mock);
    settings.max_body_size = 1024;
    let proxy = Proxy::start(settings).await;

    let mut big = chat_request("a", false);
    big["messages"][1]["content"] = json!("x".repeat(2048));
    let resp = proxy.post("/v1/chat/completions", &big).await;
    let e = expect_error(&resp, 413);
    assert!(e["message"].as_str().unwrap().contains("MAX_BODY_SIZE"), "{e}");
    assert_eq!(resp.header("connection"), Some("close"), "the body is left unread");

    // The same without a Content-Length (chunked): the limit holds while reading.
    let mut conn = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut raw = b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    let payload = big.to_string();
    for part in payload.as_bytes().chunks(500) {
        raw.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        raw.extend_from_slice(part);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    conn.write_all(&raw).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, conn.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    assert_openai_error(&serde_json::from_str(body).unwrap());

    // A body just under the limit goes through.
    let ok = proxy.post("/v1/chat/completions", &chat_request("a", false)).await;
    assert_eq!(ok.status, 200);
    assert_eq!(mock.requests().len(), 1, "only the small request went upstream");
}

#[tokio::test]
async fn upstream_error_status_and_message_are_kept() {
    for (status, kind, message) in [
        (
            429,
            "rate_limit_error",
            "Rate limit reached for gpt-4o-mini in organization org-x on requests per min (RPM): Limit 3, Used 3, Requested 1.",
        ),
        (
            500,
            "server_error",
            "The server had an error while processing your request. Sorry about that!",
        ),
        (
            400,
            "invalid_request_error",
            "Invalid value: 'tool'. Supported values are: 'system', 'assistant', 'user', 'function', and 'developer'.",
        ),
    ] {
        let code = (status == 429).then_some("rate_limit_exceeded");
        let mock =
            MockUpstream::always(Reply::json(status, &openai_error(message, kind, code))).await;
        let proxy = Proxy::start(openai_settings(&mock)).await;
        let resp = proxy.post("/v1/chat/completions", &chat_request("a", false)).await;
        let e = expect_error(&resp, status);
        assert_eq!(e["message"], message);
        assert_eq!(e["type"], kind);
        // A stream request that the upstream refuses gets the same, as JSON.
        let resp = proxy.post("/v1/chat/completions", &chat_request("a", true)).await;
        let e = expect_error(&resp, status);
        assert_eq!(e["message"], message);
    }
}

#[tokio::test]
async fn an_upstream_that_refuses_the_proxys_key_is_502_and_its_masked_key_stays_behind() {
    // OpenAI's 401, which quotes the key masked: its start and its last four characters.
    let message = "Incorrect API key provided: sk-upstr******cret. You can find your API key at https://platform.openai.com/account/api-keys.";
    let refusal = openai_error(message, "invalid_request_error", Some("invalid_api_key"));
    let mock = MockUpstream::always(Reply::json(401, &refusal)).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    for stream in [false, true] {
        // The client's key is not what was refused: not a 401 (the SDKs' AuthenticationError).
        let resp = proxy.post("/v1/chat/completions", &chat_request("a", stream)).await;
        let e = expect_error(&resp, 502);
        assert_eq!(e["code"], "upstream_auth_failed");
        assert!(e["message"].as_str().unwrap().contains("API_KEY"), "{e}");
        // The proxy's key stays refused until its settings change: no SDK retry can succeed,
        // and each would spend another refused call upstream.
        assert_eq!(resp.header("x-should-retry"), Some("false"));
        assert!(!resp.text().contains("cret"), "{}", resp.text());
    }
    for e in proxy.entries(2).await {
        assert_eq!(e.entry.status, 502);
        let logged = e.entry.error_message.unwrap_or_default();
        assert!(
            logged.contains("upstream answered 401: Incorrect API key provided: [redacted]. You"),
            "{logged}"
        );
        assert!(!logged.contains("cret") && !e.entry.response.contains("cret"), "{logged}");
    }
}

#[tokio::test]
async fn an_upstream_error_loses_the_key_in_any_member_and_what_stands_beside_it() {
    // Google's OpenAI-compatible endpoint (a `custom` upstream; its errors come as a
    // one-element array) quotes the key in a detail and gives the HTTP status as `code`;
    // OpenRouter answers 200 with an error once the model has
    // started, beside the operator's account id.
    let google = json!([{"error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
             "domain": "googleapis.com"},
            {"@type": "type.googleapis.com/google.rpc.DebugInfo",
             "detail": format!("Invalid API key: {UPSTREAM_KEY}")}
        ]
    }}]);
    let openrouter = json!({"error": {"code": 429, "message": format!("Rate limited for {UPSTREAM_KEY}"),
        "metadata": {"provider_name": "Groq"}}, "user_id": "user_2abcOperator"});
    let mock = MockUpstream::start(move |r| {
        if r.json()["user"] == "google" {
            Reply::json(400, &google)
        } else {
            Reply::json(200, &openrouter)
        }
    })
    .await;
    let mut settings = openai_settings(&mock);
    settings.platform = Platform::Custom;
    let proxy = Proxy::start(settings).await;
    for (user, status, code) in [("google", 400, "400"), ("openrouter", 429, "429")] {
        let mut request = chat_request("a", false);
        request["user"] = json!(user);
        let resp = proxy.post("/v1/chat/completions", &request).await;
        let e = expect_error(&resp, status);
        assert_eq!(e["code"], code, "the spec's code is a string: {e}");
        let text = resp.text();
        assert!(!text.contains("upstream-secret"), "{text}");
        assert!(!text.contains("user_2abc"), "{text}");
        if user == "google" {
            assert_eq!(e["details"][1]["detail"], "Invalid API key: [redacted]", "{e}");
        }
    }
    for e in proxy.entries(2).await {
        let logged = format!("{:?} {}", e.entry.error_message, e.entry.response);
        assert!(!logged.contains("upstream-secret"), "{logged}");
    }
}

#[tokio::test]
async fn google_refusing_the_proxys_key_is_502_as_any_upstreams_401() {
    // Google refuses a bad key with 400 INVALID_ARGUMENT, not 401.
    let refusal = json!({"error": {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                     "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]
    }});
    let mock = MockUpstream::always(Reply::json(400, &refusal)).await;
    let mut settings = openai_settings(&mock);
    settings.platform = Platform::Google;
    settings.base_url = Some(format!("{}/v1beta", mock.url()));
    let proxy = Proxy::start(settings).await;
    for stream in [false, true] {
        let resp = proxy.post("/v1/chat/completions", &chat_request("a", stream)).await;
        let e = expect_error(&resp, 502);
        assert_eq!(e["code"], "upstream_auth_failed", "{e}");
    }
}

#[tokio::test]
async fn a_gemini_answer_ended_without_content_is_a_502_and_a_stream_error_event() {
    // Gemini samples a broken function call now and then: the candidate ends with
    // MALFORMED_FUNCTION_CALL and nothing in it. An empty `stop` would end an agent loop with no
    // answer; an upstream failure is what the SDKs retry.
    let finish_message = "Malformed function call: print(default_api.now(";
    let usage = json!({"promptTokenCount": 30, "thoughtsTokenCount": 14, "totalTokenCount": 44});
    let ended = json!({
        "candidates": [{"content": {}, "finishReason": "MALFORMED_FUNCTION_CALL",
                        "finishMessage": finish_message, "index": 0}],
        "usageMetadata": usage,
        "modelVersion": "gemini-2.5-flash",
    });
    let thought = json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "I will call now().", "thought": true}]}, "index": 0}],
        "usageMetadata": usage,
        "modelVersion": "gemini-2.5-flash",
    });
    let events = vec![Step::event(&thought), Step::event(&ended)];
    let mock = MockUpstream::gemini(events, ended).await;
    let mut settings = openai_settings(&mock);
    settings.platform = Platform::Google;
    settings.base_url = Some(format!("{}/v1beta", mock.url()));
    let proxy = Proxy::start(settings).await;
    let said = "Gemini ended the answer without content (finish reason MALFORMED_FUNCTION_CALL): \
                Malformed function call: print(default_api.now(";

    let resp = proxy.post("/v1/chat/completions", &chat_request("a", false)).await;
    let e = expect_error(&resp, 502);
    assert_eq!(e["message"], said, "{e}");
    assert_eq!(
        (&e["type"], &e["code"]),
        (&json!("upstream_error"), &json!("upstream_empty_answer"))
    );

    let resp = proxy.post("/v1/chat/completions", &chat_request("a", true)).await;
    assert_eq!(resp.status, 200, "the stream had started: {}", resp.text());
    let data = sse_data(&resp.body);
    assert!(!data.iter().any(|d| d == "[DONE]"), "no answer must not look complete: {data:?}");
    let events = sse_json(&resp.body);
    assert!(events.iter().all(|c| c["choices"][0]["finish_reason"].is_null()), "{events:?}");
    assert_eq!(events[0]["choices"][0]["delta"]["reasoning_content"], "I will call now().");
    let e = assert_openai_error(events.last().unwrap());
    assert_eq!(e["message"], said, "{e}");
    assert_eq!(e["code"], "upstream_empty_answer", "{e}");
    assert_eq!(mock.requests().len(), 2, "one try each: the upstream answered 200");

    let entries = proxy.entries(2).await;
    for (entry, (status, stream)) in entries.iter().zip([(502, false), (200, true)]) {
        let e = &entry.entry;
        assert_eq!((e.status, e.stream), (status, stream), "{e:#?}");
        assert_eq!(e.error_type.as_deref(), Some("upstream_error"), "{e:#?}");
        let logged = e.error_message.as_deref().unwrap_or_default();
        assert!(logged.starts_with(said), "Gemini answered 200, not 502: {logged}");
        assert!(e.response.contains("upstream_empty_answer"), "{}", e.response);
    }
    // The whole answer's record says what came, as for any answer that is of no use.
    let logged = entries[0].entry.error_message.as_deref().unwrap_or_default();
    assert!(logged.contains("MALFORMED_FUNCTION_CALL\","), "the answer's start: {logged}");
    // Both records keep the tokens Gemini counted (and bills) for the answer of no use.
    for e in &entries {
        assert_eq!(e.entry.usage.prompt_tokens, Some(30), "{e:#?}");
    }
}

#[tokio::test]
async fn upstream_error_that_is_not_openai_shaped_still_reaches_the_client_in_that_shape() {
    // A load balancer's HTML page, and a terse error with only a message and a type.
    let html = "<html><body><h1>502 Bad Gateway</h1></body></html>";
    let mock = MockUpstream::start(move |r| {
        if r.json()["stream"] == true {
            Reply::raw_json(
                503,
                r#"{"error":{"message":"Engine overloaded","type":"server_error"}}"#,
            )
        } else {
            Reply::raw_json(502, html).with_content_type("text/html")
        }
    })
    .await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let e = expect_error(&proxy.post("/v1/chat/completions", &chat_request("a", false)).await, 502);
    assert!(e["message"].as_str().unwrap().contains("502 Bad Gateway"), "{e}");
    let e = expect_error(&proxy.post("/v1/chat/completions", &chat_request("a", true)).await, 503);
    assert_eq!(e["message"], "Engine overloaded");
}

#[tokio::test]
async fn an_upstream_error_with_a_bare_string_message_reaches_the_client_as_that_message() {
    // Ollama's native API and FastAPI servers answer errors as `{"error": "…"}` or
    // `{"detail": "…"}`: the client reads the message, not the JSON around it.
    let mock = MockUpstream::start(|r| {
        if r.json()["stream"] == true {
            Reply::raw_json(404, r#"{"detail":"Not Found"}"#)
        } else {
            Reply::raw_json(
                404,
                "{\n  \"error\": \"model 'llama9' not found, try pulling it first\"\n}",
            )
        }
    })
    .await;
    let mut settings = openai_settings(&mock);
    settings.platform = Platform::Custom;
    let proxy = Proxy::start(settings).await;
    let e = expect_error(&proxy.post("/v1/chat/completions", &chat_request("a", false)).await, 404);
    assert_eq!(
        e["message"],
        "upstream answered 404: model 'llama9' not found, try pulling it first"
    );
    assert_eq!(e["type"], "invalid_request_error");
    let e = expect_error(&proxy.post("/v1/chat/completions", &chat_request("a", true)).await, 404);
    assert_eq!(e["message"], "upstream answered 404: Not Found");
}

#[tokio::test]
async fn upstream_unreachable_is_502() {
    let addr = unused_addr().await;
    let unused = MockUpstream::always(Reply::hang()).await;
    let mut settings = openai_settings(&unused);
    settings.base_url = Some(format!("http://{addr}/v1"));
    let proxy = Proxy::start(settings).await;
    let e = expect_error(&proxy.post("/v1/chat/completions", &chat_request("a", false)).await, 502);
    assert_eq!(e["code"], "upstream_unreachable");
    let e = expect_error(&proxy.post("/v1/chat/completions", &chat_request("a", true)).await, 502);
    assert_eq!(e["code"], "upstream_unreachable");
}

#[tokio::test]
async fn upstream_that_never_answers_is_504() {
    let mock = MockUpstream::always(Reply::hang()).await;
    let mut settings = openai_settings(&mock);
    settings.first_byte_timeout = Duration::from_millis(300);
    let proxy = Proxy::start(settings).await;
    let started = Instant::now();
    let e = expect_error(&proxy.post("/v1/chat/completions", &chat_request("a", true)).await, 504);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(e["message"].as_str().unwrap().contains("FIRST_BYTE_TIMEOUT"), "{e}");
    assert_eq!(mock.requests().len(), 1, "the request did reach the upstream");
}

#[tokio::test]
async fn stream_that_breaks_midway_ends_with_an_error_event() {
    let mut steps: Vec<Step> = text_stream(&["Hel", "lo"]).into_iter().take(2).collect();
    steps.push(Step::Sleep(Duration::from_millis(50)));
    steps.push(Step::Reset);
    let mock = MockUpstream::always(Reply::sse(steps)).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;

    let resp = proxy.post("/v1/chat/completions", &chat_request("a", true)).await;
    assert_eq!(resp.status, 200, "the stream had started: {}", resp.text());
    let data = sse_data(&resp.body);
    assert!(
        !data.iter().any(|d| d == "[DONE]"),
        "a broken stream must not look complete: {data:?}"
    );
    let events = sse_json(&resp.body);
    assert_eq!(events.len(), 3, "two upstream events, then the error: {events:?}");
    assert_eq!(events[1]["choices"][0]["delta"]["content"], "Hel");
    let e = assert_openai_error(&events[2]);
    assert_eq!(e["type"], "upstream_error");

    // Counted, but not as a successful stream's time to first token (the metric's help says
    // "for successful streams", and `/api/stats` leaves a failed request's out too).
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = proxy.get("/metrics").await.text();
        if metrics.contains(r#"status="200",stream="true"} 1"#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metrics.contains(r#"status="200",stream="true"} 1"#), "not counted:\n{metrics}");
    let ttft = r#"uniproxy_time_to_first_token_seconds_count{platform="openai"} 0"#;
    assert!(metrics.lines().any(|l| l == ttft), "no {ttft:?} in\n{metrics}");
}

#[tokio::test]
async fn an_error_in_a_stream_loses_the_proxys_key() {
    // Groq and OpenRouter report an error inside the stream, as an event of its own.
    let mut steps: Vec<Step> = text_stream(&["Hel"]).into_iter().take(2).collect();
    let error = json!({"error": {"message": format!("key {UPSTREAM_KEY} is over quota"),
        "type": "rate_limit_error", "code": "rate_limit_exceeded"}});
    steps.push(Step::raw(&format!("data: {error}\n\n")));
    let mock = MockUpstream::always(Reply::sse(steps)).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;

    let resp = proxy.post("/v1/chat/completions", &chat_request("a", true)).await;
    let text = resp.text();
    assert!(text.contains("is over quota"), "the error reaches the client: {text}");
    assert!(!text.contains(UPSTREAM_KEY), "{text}");
    let entry = proxy.only_entry().await;
    let logged = format!("{:?} {}", entry.entry.error_message, entry.entry.response);
    assert!(logged.contains("is over quota"), "{logged}");
    assert!(!logged.contains(UPSTREAM_KEY), "{logged}");
}

/// Writes `head` (and no body) on a new connection and reads the answer to its end.
async fn answer_to_raw_head(addr: std::net::SocketAddr, head: &[u8]) -> String {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(head).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, socket.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// RFC 9112, 3.2: an HTTP/1.1 request without `Host`, or any with two, is a 400. The host
/// checks read that header, so two could be read one way here and another by a front proxy.
#[tokio::test]
async fn a_request_without_its_one_host_header_is_400() {
    let mock = MockUpstream::always(Reply::json(200, &completion("x"))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let chat = r#"{"model":"a","messages":[{"role":"user","content":"hi"}]}"#;
    let post = |host: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\n{host}content-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{chat}",
            chat.len()
        )
    };
    for (host, count) in
        [("", "a Host header"), ("host: 127.0.0.1\r\nhost: evil.example\r\n", "not 2")]
    {
        let answer = answer_to_raw_head(proxy.addr, post(host).as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{host:?}: {answer}");
        assert!(answer.contains(r#""code":"invalid_host_header""#), "{host:?}: {answer}");
        assert!(answer.contains(count), "{host:?}: {answer}");
    }
    // Both chat requests are in the log, as every refused chat request is.
    let entries = proxy.entries(2).await;
    assert!(entries.iter().all(|e| e.entry.status == 400), "{entries:#?}");
    let answer =
        answer_to_raw_head(proxy.addr, b"GET /health HTTP/1.1\r\nconnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // HTTP/1.0 had no Host header to send.
    let answer = answer_to_raw_head(proxy.addr, b"GET /health HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    let answer = answer_to_raw_head(
        proxy.addr,
        b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_is_405() {
    let mock = MockUpstream::always(Reply::json(200, &completion("x"))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;

    for path in ["/v1/completions", "/v2/chat/completions", "/"] {
        let e = expect_error(&proxy.get(path).await, 404);
        assert_eq!(e["code"], "not_found");
        let e = expect_error(&proxy.post(path, &chat_request("a", false)).await, 404);
        assert_eq!(e["code"], "not_found");
    }
    let resp = proxy.get("/v1/chat/completions").await;
    let e = expect_error(&resp, 405);
    assert_eq!(e["code"], "method_not_allowed");
    assert_eq!(resp.header("allow"), Some("POST, OPTIONS"), "every method it answers");
    let resp = proxy.post("/v1/models", &json!({})).await;
    expect_error(&resp, 405);
    assert_eq!(resp.header("allow"), Some("GET, HEAD, OPTIONS"));
    // `OPTIONS` says the same.
    for (path, allow) in
        [("/v1/chat/completions", "POST, OPTIONS"), ("/v1/models", "GET, HEAD, OPTIONS")]
    {
        let resp = send(proxy.addr, request(Method::OPTIONS, path, Bytes::new())).await;
        assert_eq!((resp.status, resp.header("allow")), (204, Some(allow)), "{path}");
    }
    assert!(mock.requests().is_empty());
}

/// An endpoint the proxy does not serve (`/v1/embeddings`, `/v1/responses`) or a wrong method
/// leaves the request's body unread, and hyper closes the connection after the answer (a body
/// larger than what came with the head): the answer says so, or a keep-alive client sends its
/// next request into a closed connection (a broken pipe, which the SDKs report as a
/// connection error).
#[tokio::test]
async fn an_answer_that_leaves_the_body_unread_says_connection_close() {
    let mock = MockUpstream::always(Reply::json(200, &completion("x"))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let big = json!({"model": "a", "input": "x".repeat(200_000)});
    for (path, status) in [("/v1/embeddings", 404), ("/v1/models", 405), ("/health", 405)] {
        let resp = proxy.post(path, &big).await;
        expect_error(&resp, status);
        assert_eq!(resp.header("connection"), Some("close"), "{path}");
    }
    // On the wire: the answer, then the connection closed, as it said.
    let mut conn = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let body = big.to_string();
    let head = format!(
        "POST /v1/embeddings HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let _ = conn.write_all(body.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, conn.read_to_end(&mut answer)).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 404"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    // A request without a body leaves nothing unread: its connection stays open.
    let resp = proxy.get("/v1/embeddings").await;
    expect_error(&resp, 404);
    assert_eq!(resp.header("connection"), None);
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn disabled_model_is_503() {
    let mock = MockUpstream::always(Reply::json(200, &completion("x"))).await;
    let mut settings = openai_settings(&mock);
    settings.enabled = false;
    let proxy = Proxy::start(settings).await;
    let resp = proxy.post("/v1/chat/completions", &chat_request("a", false)).await;
    let e = expect_error(&resp, 503);
    assert!(e["message"].as_str().unwrap().contains("ENABLED"), "{e}");
    // Only a restart with other settings changes it: the SDKs, which retry a 503, are told not to.
    assert_eq!(resp.header("x-should-retry"), Some("false"));
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn tools_without_function_calling_are_400_naming_the_setting() {
    let mock = MockUpstream::always(Reply::json(200, &completion("x"))).await;
    let mut settings = openai_settings(&mock);
    settings.supports_function_calling = false;
    let proxy = Proxy::start(settings).await;

    let mut req = chat_request("a", false);
    req["tools"] =
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    let e = expect_error(&proxy.post("/v1/chat/completions", &req).await, 400);
    assert!(e["message"].as_str().unwrap().contains("SUPPORTS_FUNCTION_CALLING"), "{e}");
    assert_eq!(e["param"], "tools");
    assert!(mock.requests().is_empty());

    // Without tools the same proxy answers.
    let ok = proxy.post("/v1/chat/completions", &chat_request("a", false)).await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn stream_without_streaming_support_is_replayed_from_one_answer() {
    let mock = MockUpstream::always(Reply::json(200, &completion("Hello, world."))).await;
    let mut settings = openai_settings(&mock);
    settings.supports_streaming = false;
    let proxy = Proxy::start(settings).await;

    let resp = proxy.post("/v1/chat/completions", &chat_request("a", true)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.header("content-type").unwrap().starts_with("text/event-stream"));

    let up = mock.only_request().json();
    assert!(up.get("stream").is_none_or(|s| s == false), "a non-stream request went up: {up}");
    assert!(up.get("stream_options").is_none(), "{up}");

    assert_eq!(sse_data(&resp.body).last().map(String::as_str), Some("[DONE]"));
    let chunks = sse_json(&resp.body);
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"), "{chunks:?}");
    let first = &chunks[0]["choices"][0];
    assert_eq!(first["delta"]["role"], "assistant", "{chunks:?}");
    let text = streamed_text(&chunks);
    assert_eq!(text, "Hello, world.");
    let last = &chunks.last().unwrap()["choices"][0];
    assert_eq!(last["finish_reason"], "stop", "{chunks:?}");
    let finishes = chunks.iter().filter(|c| c["choices"][0]["finish_reason"].is_string()).count();
    assert_eq!(finishes, 1);
}

#[tokio::test]
async fn max_tokens_is_applied_and_capped() {
    let with = |fields: &[(&str, u32)]| {
        let mut r = chat_request("a", false);
        for (k, v) in fields {
            r[*k] = json!(v);
        }
        r
    };
    // OpenAI: the limit goes in `max_completion_tokens` alone (its reasoning models refuse
    // `max_tokens`, whichever model the client thinks it talks to). Asked for more: capped;
    // asked for less: kept; both asked: the smaller.
    let openai = [
        (with(&[]), json!(null), json!(100)),
        (with(&[("max_tokens", 500)]), json!(null), json!(100)),
        (with(&[("max_completion_tokens", 5000)]), json!(null), json!(100)),
        (with(&[("max_completion_tokens", 50)]), json!(null), json!(50)),
        (with(&[("max_tokens", 7)]), json!(null), json!(7)),
        (with(&[("max_tokens", 70), ("max_completion_tokens", 50)]), json!(null), json!(50)),
    ];
    // Other servers may not know `max_completion_tokens`: what the client set stays.
    let custom = [
        (with(&[]), json!(100), json!(null)),
        (with(&[("max_tokens", 7)]), json!(7), json!(null)),
        (with(&[("max_completion_tokens", 5000)]), json!(null), json!(100)),
    ];
    for (platform, cases) in [(Platform::OpenAi, &openai[..]), (Platform::Custom, &custom[..])] {
        let mock = MockUpstream::always(Reply::json(200, &completion("x"))).await;
        let mut settings = openai_settings(&mock);
        settings.max_tokens = 100;
        settings.platform = platform;
        let proxy = Proxy::start(settings).await;
        for (i, (req, max_tokens, max_completion_tokens)) in cases.iter().enumerate() {
            let resp = proxy.post("/v1/chat/completions", req).await;
            assert_eq!(resp.status, 200);
            mock.wait_for_requests(i + 1).await;
            let up = mock.requests().pop().unwrap().json();
            let got = |k: &str| up.get(k).cloned().unwrap_or(Value::Null);
            assert_eq!(got("max_tokens"), *max_tokens, "{platform:?} {req}");
            assert_eq!(got("max_completion_tokens"), *max_completion_tokens, "{platform:?} {req}");
        }
    }
}

#[tokio::test]
async fn client_that_leaves_mid_stream_stops_the_upstream_stream() {
    // A slow stream: one piece every 100 ms for ten seconds.
    let mut steps = text_stream(&["first"]).into_iter().take(2).collect::<Vec<_>>();
    for _ in 0..100 {
        steps.push(Step::Sleep(Duration::from_millis(100)));
        steps.push(Step::event(&chunk(json!({"content": "."}), None)));
    }
    steps.extend(text_stream(&[]).into_iter().skip(1));
    let mock = MockUpstream::always(Reply::sse(steps)).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;

    let mut s =
        open_stream(proxy.addr, post_request("/v1/chat/completions", &chat_request("a", true)))
            .await;
    assert_eq!(s.status, 200);
    let (first, _) = s.next_chunk().await.expect("a first chunk");
    assert!(first.starts_with(b"data: "), "{first:?}");
    assert!(!mock.body_dropped_within(Duration::ZERO).await, "nothing dropped yet");

    let left = Instant::now();
    drop(s);
    assert!(
        mock.body_dropped_within(Duration::from_secs(2)).await,
        "the proxy kept reading the upstream stream after the client left"
    );
    assert!(left.elapsed() < Duration::from_secs(2));
}

/// POSTs `body` to `/v1/chat/completions` on a socket of the test's own, to hang up on
/// (or read from) as the test likes.
async fn post_on_a_socket(addr: std::net::SocketAddr, body: &Value) -> tokio::net::TcpStream {
    let body = serde_json::to_vec(body).unwrap();
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&body).await.unwrap();
    socket
}

#[tokio::test]
async fn client_that_leaves_before_the_answer_is_recorded_as_499() {
    // The answer would take 30 s; the client hangs up while the proxy waits for it. hyper
    // notices (it reads the connection while the handler runs) and drops the request's
    // future, so the record must be written from there, with what was known by then.
    let mock =
        MockUpstream::always(Reply::json(200, &completion("late")).after(Duration::from_secs(30)))
            .await;
    let mut proxy = Proxy::start_logged(openai_settings(&mock)).await;
    let mut req = chat_request("a", false);
    req["messages"][1]["content"] = json!("LEFT-EARLY");
    let socket = post_on_a_socket(proxy.addr, &req).await;
    mock.wait_for_requests(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left = Instant::now();
    drop(socket);

    let e = proxy.only_entry().await;
    assert!(left.elapsed() < Duration::from_secs(10), "recorded {:?} after", left.elapsed());
    assert_eq!(e.entry.status, 499, "{e:#?}");
    assert_eq!(e.entry.error_type.as_deref(), Some("client_closed"));
    assert!(
        e.entry.error_message.as_deref().is_some_and(|m| m.contains("before the answer")),
        "{e:#?}"
    );
    assert!(e.entry.client_request.contains("LEFT-EARLY"));
    assert_eq!(
        serde_json::from_str::<Value>(&e.entry.upstream_request).unwrap()["model"],
        ACTUAL_NAME
    );
    assert_eq!(e.entry.attempts, 1, "the try that was under way");
    assert_eq!(e.entry.response, "");
    assert_eq!(e.ttft_ms, None, "nothing reached the client");

    proxy.finish().await;
    let log = std::fs::read_to_string(proxy.log_file_path()).unwrap();
    let summary = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["msg"] == "request")
        .unwrap_or_else(|| panic!("no summary line: {log}"));
    assert_eq!(summary["status"], 499, "{summary}");
    // The proxy's own time, not the 200 ms and more it spent waiting on the upstream.
    let overhead = summary["overhead_ms"].as_f64().unwrap();
    assert!(overhead < 150.0, "{summary}");
}

#[tokio::test]
async fn clients_that_send_and_hang_up_at_once_are_each_recorded() {
    // The close comes with the request: hyper may drop the request's future before polling
    // it once, and the handler never runs.
    const N: usize = 100;
    let mock = MockUpstream::always(Reply::json(200, &completion("x"))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    for _ in 0..N {
        drop(post_on_a_socket(proxy.addr, &chat_request("a", false)).await);
    }
    proxy.entries(N).await;
    // Any entry beyond N would be a request recorded twice.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let entries = proxy.entries(N).await;
    assert_eq!(entries.len(), N);
    for e in &entries {
        match e.entry.status {
            200 => assert!(e.entry.client_request.contains("\"a\""), "{e:#?}"),
            499 => assert_eq!(e.entry.error_type.as_deref(), Some("client_closed"), "{e:#?}"),
            _ => panic!("{e:#?}"),
        }
    }
}

#[tokio::test]
async fn client_that_leaves_mid_body_is_recorded_as_499_and_a_broken_body_is_400() {
    let mock = MockUpstream::always(Reply::json(200, &completion("x"))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    // Content-Length promises 1,000 bytes; 14 come, then the client hangs up.
    let mut socket = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    socket
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n\
              content-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"model\": \"a\"",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(socket);
    let left = proxy.only_entry().await.entry;
    assert_eq!(left.status, 499, "{left:#?}");
    assert_eq!(left.error_type.as_deref(), Some("client_closed"));
    assert!(
        left.error_message.as_deref().is_some_and(|m| m.contains("before the whole body")),
        "{left:#?}"
    );

    // A chunked body that breaks its own framing is the client's mistake: 400.
    let mut socket = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    socket
        .write_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n\
              content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, socket.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("could not read the request body"), "{answer}");
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn requests_in_flight_when_the_grace_period_ends_are_recorded_as_cut_off() {
    // Both would take 30 s: an answer, and a stream after its first piece.
    let mock = MockUpstream::start(|r| {
        if r.json()["stream"] == true {
            let mut steps: Vec<Step> = text_stream(&["CUT-A2"]).into_iter().take(2).collect();
            steps.push(Step::Sleep(Duration::from_secs(30)));
            Reply::sse(steps)
        } else {
            Reply::json(200, &completion("late")).after(Duration::from_secs(30))
        }
    })
    .await;
    let launch = Launch { grace_period: Some(Duration::from_millis(300)), ..Launch::default() };
    let mut proxy = Proxy::launch(openai_settings(&mock), launch).await;
    let path = "/v1/chat/completions";
    let mut waiting = chat_request("a", false);
    waiting["messages"][1]["content"] = json!("CUT-Q1");
    let mut streaming = chat_request("a", true);
    streaming["messages"][1]["content"] = json!("CUT-Q2");
    let mut socket = post_on_a_socket(proxy.addr, &waiting).await;
    let mut s = open_stream(proxy.addr, post_request(path, &streaming)).await;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("CUT-A2") {
        seen.extend_from_slice(&s.next_chunk().await.expect("the first piece").0);
    }
    mock.wait_for_requests(2).await;

    // Shutdown: neither finishes within the grace period, so the proxy cuts both off. The
    // waiting client gets a 503, and the stream an error event, not a dropped connection.
    let stopping = Instant::now();
    proxy.finish().await;
    assert!(stopping.elapsed() < Duration::from_secs(10), "took {:?}", stopping.elapsed());
    let mut rest = Vec::new();
    socket.read_to_end(&mut rest).await.unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 503"), "{rest}");
    assert!(rest.contains(r#""code":"server_shutdown""#), "{rest}");
    while let Some((chunk, _)) = s.next_chunk().await {
        seen.extend_from_slice(&chunk);
    }
    let events = sse_data(&seen);
    let last = events.last().map(String::as_str).unwrap_or_default();
    assert!(last.contains(r#""code":"server_shutdown""#), "{events:?}");

    let entries = proxy.entries(2).await;
    assert_eq!(entries.len(), 2, "{entries:#?}");
    let find = |marker: &str| {
        let e = entries.iter().find(|e| e.entry.client_request.contains(marker));
        e.unwrap_or_else(|| panic!("no entry for {marker}: {entries:#?}")).entry.clone()
    };
    let (waited, streamed) = (find("CUT-Q1"), find("CUT-Q2"));
    for e in [&waited, &streamed] {
        assert_eq!(e.status, 503, "{e:#?}");
        assert_eq!(e.error_type.as_deref(), Some("server_shutdown"));
        assert!(e.error_message.as_deref().is_some_and(|m| m.contains("grace period")), "{e:#?}");
    }
    assert_eq!(waited.response, "");
    assert!(streamed.response.contains("CUT-A2"), "what had arrived: {}", streamed.response);
}

#[tokio::test]
async fn stream_that_goes_quiet_ends_with_a_timeout_event() {
    let mut steps: Vec<Step> = text_stream(&["Hel"]).into_iter().take(2).collect();
    steps.push(Step::Sleep(Duration::from_secs(30)));
    steps.extend(text_stream(&["lo"]).into_iter().skip(1));
    let mock = MockUpstream::always(Reply::sse(steps)).await;
    let mut settings = openai_settings(&mock);
    settings.stream_idle_timeout = Duration::from_millis(300);
    let proxy = Proxy::start(settings).await;

    let started = Instant::now();
    let resp = proxy.post("/v1/chat/completions", &chat_request("a", true)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(resp.status, 200);
    assert!(!sse_data(&resp.body).iter().any(|d| d == "[DONE]"));
    let events = sse_json(&resp.body);
    assert_eq!(events.len(), 3, "{events:?}");
    let e = assert_openai_error(&events[2]);
    assert_eq!(e["type"], "timeout_error");
    assert!(e["message"].as_str().unwrap().contains("STREAM_IDLE_TIMEOUT"), "{e}");
    assert!(
        mock.body_dropped_within(Duration::from_secs(2)).await,
        "the proxy stops reading the upstream once it gives up"
    );
}

#[tokio::test]
async fn answer_slower_than_request_timeout_is_504() {
    // The head comes at once, the body never finishes.
    let steps = vec![
        Step::raw(r#"{"id":"chatcmpl-1","object":"chat.completion","#),
        Step::Sleep(Duration::from_secs(30)),
    ];
    let mock = MockUpstream::always(Reply::sse(steps).with_content_type("application/json")).await;
    let mut settings = openai_settings(&mock);
    settings.request_timeout = Duration::from_millis(500);
    let proxy = Proxy::start(settings).await;

    let started = Instant::now();
    let e = expect_error(&proxy.post("/v1/chat/completions", &chat_request("a", false)).await, 504);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(e["message"].as_str().unwrap().contains("REQUEST_TIMEOUT"), "{e}");
}

#[tokio::test]
async fn upstream_success_that_is_not_a_completion_is_502() {
    let mock =
        MockUpstream::always(Reply::raw_json(200, r#"{"object":"chat.completion","choices":"#))
            .await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let e = expect_error(&proxy.post("/v1/chat/completions", &chat_request("a", false)).await, 502);
    assert_eq!(e["code"], "bad_upstream_response");
}

#[tokio::test]
async fn the_ui_session_cookie_is_secure_behind_an_https_front() {
    let mock = MockUpstream::always(Reply::json(200, &completion("x"))).await;
    let mut settings = openai_settings(&mock);
    settings.admin_key = Some(uniproxy_config::Secret::new("admin-key-1"));
    let proxy = Proxy::start(settings).await;
    let login = |forwarded: Option<(&'static str, &'static str)>| {
        let mut r = request(Method::POST, "/ui/login", Bytes::from_static(b"key=admin-key-1"));
        r.headers_mut()
            .insert("content-type", "application/x-www-form-urlencoded".parse().unwrap());
        if let Some((name, value)) = forwarded {
            r.headers_mut().insert(name, value.parse().unwrap());
        }
        send(proxy.addr, r)
    };
    for (forwarded, secure) in [
        (None, false),
        (Some(("x-forwarded-proto", "https")), true),
        (Some(("forwarded", "for=10.0.0.1;proto=https;host=logs.example")), true),
        // RFC 7239's quoted form, which some fronts write.
        (Some(("forwarded", r#"for="[2001:db8::1]";proto="https""#)), true),
        (Some(("forwarded", r#"for=10.0.0.1;proto="http""#)), false),
        (Some(("x-forwarded-proto", "http")), false),
    ] {
        let resp = login(forwarded).await;
        assert_eq!(resp.status, 303, "{forwarded:?}: {}", resp.text());
        let cookie = resp.header("set-cookie").unwrap_or_default().to_owned();
        assert!(cookie.contains("HttpOnly; SameSite=Strict"), "{cookie}");
        assert_eq!(cookie.ends_with("; Secure"), secure, "{forwarded:?}: {cookie}");
    }
}

/// The challenge of the proxy's 401s.
const WWW_AUTHENTICATE: &str = "Bearer realm=\"uniproxy\"";

#[tokio::test]
async fn azure_clients_are_served_with_their_api_key_header() {
    // `AzureOpenAI(azure_endpoint=…)` posts to the deployment's path with `api-version` in the
    // query and sends its key as `api-key`.
    let mock = MockUpstream::always(Reply::json(200, &completion("x"))).await;
    let mut settings = openai_settings(&mock);
    settings.proxy_api_keys = vec![uniproxy_config::Secret::new("proxy-key-1")];
    let proxy = Proxy::start(settings).await;
    let azure = |path: &str, key: &str| {
        let mut r = post_request(path, &chat_request("my-deployment", false));
        r.headers_mut().insert("api-key", key.parse().unwrap());
        r
    };
    let path = "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21";
    let resp = send(proxy.addr, azure(path, "proxy-key-1")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = send(proxy.addr, azure("/openai/v1/chat/completions", "proxy-key-1")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = send(proxy.addr, azure(path, "wrong-key")).await;
    assert_eq!(expect_error(&resp, 401)["type"], "authentication_error");
    for other in ["/openai/deployments//chat/completions", "/openai/deployments/d/completions"] {
        expect_error(&send(proxy.addr, azure(other, "proxy-key-1")).await, 404);
    }
    // The client's model list and retrieval, under both of Azure's prefixes.
    for models in ["/openai/models?api-version=2024-10-21", "/openai/v1/models/my-deployment"] {
        let mut get = request(hyper::Method::GET, models, bytes::Bytes::new());
        get.headers_mut().insert("api-key", "proxy-key-1".parse().unwrap());
        let resp = send(proxy.addr, get).await;
        assert_eq!(resp.status, 200, "{models}: {}", resp.text());
        assert!(resp.text().contains("gpt-4o"), "{models}: {}", resp.text());
    }
    let entries = proxy.entries(3).await;
    let statuses: Vec<u16> = entries.iter().map(|e| e.entry.status).collect();
    assert_eq!(statuses, [200, 200, 401]);
    assert!(entries[0].entry.key_hash.is_some(), "the key is known by its hash");
    assert_eq!(entries[0].entry.key_hash, entries[1].entry.key_hash);
    for e in &entries {
        assert!(!e.entry.request_headers.contains("key-1"), "{e:#?}");
    }
    // The upstream gets the configured key, never the client's.
    for up in mock.requests() {
        assert_eq!(up.header("api-key"), None);
        assert_eq!(up.header("authorization"), Some(format!("Bearer {UPSTREAM_KEY}").as_str()));
    }
}

#[tokio::test]
async fn proxy_keys_are_required_and_never_forwarded() {
    let mock = MockUpstream::always(Reply::json(200, &completion("x"))).await;
    let mut settings = openai_settings(&mock);
    settings.proxy_api_keys = vec![uniproxy_config::Secret::new("proxy-key-1")];
    let proxy = Proxy::start(settings).await;

    let with_key = |key: Option<&str>| {
        let mut r = post_request("/v1/chat/completions", &chat_request("a", false));
        if let Some(k) = key {
            r.headers_mut().insert("authorization", format!("Bearer {k}").parse().unwrap());
        }
        r
    };
    for key in [None, Some("wrong-key"), Some("proxy-key-")] {
        let resp = send(proxy.addr, with_key(key)).await;
        let e = expect_error(&resp, 401);
        assert_eq!(e["type"], "authentication_error", "{key:?}");
        assert!(resp.header("x-request-id").is_some(), "{key:?}");
        // Refused before its body was read: the connection is not kept, and the client is told.
        assert_eq!(resp.header("connection"), Some("close"), "{key:?}");
        // A 401 names the scheme to authenticate with (RFC 9110, 11.6.1): some HTTP clients
        // (Java's HttpURLConnection, older OkHttp) fail on a 401 without it, and never show
        // the error's body.
        assert_eq!(resp.header("www-authenticate"), Some(WWW_AUTHENTICATE), "{key:?}");
    }
    assert!(mock.requests().is_empty());
    for path in ["/v1/models", "/v1/models/gpt-4o"] {
        let resp = proxy.get(path).await;
        let e = expect_error(&resp, 401);
        assert_eq!(e["code"], "invalid_api_key", "{path}");
        assert_eq!(resp.header("www-authenticate"), Some(WWW_AUTHENTICATE), "{path}");
    }
    assert_eq!(proxy.get("/health").await.status, 200, "health needs no key");

    let ok = send(proxy.addr, with_key(Some("proxy-key-1"))).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.header("connection"), None);
    // The three refused chat requests are recorded (the admin and models ones are not), with
    // nothing of the key sent; the one let in has its key's hash.
    let entries = proxy.entries(4).await;
    let statuses: Vec<u16> = entries.iter().map(|e| e.entry.status).collect();
    assert_eq!(statuses, [401, 401, 401, 200]);
    for e in &entries[..3] {
        assert_eq!(e.entry.error_type.as_deref(), Some("authentication_error"), "{e:#?}");
        assert_eq!((e.entry.key_hash.as_deref(), e.entry.client_request.as_str()), (None, ""));
        assert!(!e.entry.request_headers.contains("proxy-key-"), "{e:#?}");
    }
    assert!(entries[3].entry.key_hash.is_some());
    let up = mock.only_request();
    assert_eq!(up.header("authorization"), Some(format!("Bearer {UPSTREAM_KEY}").as_str()));
    assert!(
        !format!("{:?}{}", up.headers, String::from_utf8_lossy(&up.body)).contains("proxy-key-1")
    );
}
