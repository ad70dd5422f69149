//! The reliability and security rules, proved against a fault-injecting mock upstream and
//! misbehaving clients: every upstream fault and every bad request gets a clean OpenAI-shaped
//! answer and a log entry, and the proxy serves the next request; retries follow their rules;
//! timeouts and limits hold; no key reaches a response, the log file or the database.
//!
//! Entries are read back from the log store read-only, as `uniproxy logs` does, after the
//! writer thread has flushed them.

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
use tokio::net::TcpStream;
use uniproxy_config::Settings;
use uniproxy_logstore::Entry;

/// Asserts that a stream answered 200 and ended with an error event (no `[DONE]`); returns
/// the event's `error` object.
fn expect_error_event(resp: &HttpResponse) -> Value {
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(!sse_data(&resp.body).iter().any(|d| d == "[DONE]"), "{}", resp.text());
    let events = sse_json(&resp.body);
    let last = events.last().unwrap_or_else(|| panic!("no events: {}", resp.text()));
    assert_openai_error(last).clone()
}

async fn chat(proxy: &Proxy, stream: bool) -> HttpResponse {
    proxy.post("/v1/chat/completions", &chat_request("a", stream)).await
}

/// Asserts that the proxy still serves: a normal request right after the fault gets its 200.
async fn serves_next(proxy: &Proxy, mock: &MockUpstream) {
    let before = mock.requests().len();
    let ok = chat(proxy, false).await;
    assert_eq!(ok.status, 200, "the proxy serves the next request: {}", ok.text());
    assert_eq!(ok.json()["choices"][0]["message"]["content"], "ok");
    assert_eq!(mock.requests().len(), before + 1);
}

/// The first request meets `fault`; every later one gets a normal answer.
async fn faulty_upstream(fault: Reply) -> MockUpstream {
    MockUpstream::first_n_then(1, fault, Reply::json(200, &completion("ok"))).await
}

/// Runs one fault: a request (stream or not) that meets `fault`, then a normal request.
/// Returns the faulty request's answer and its log entry.
async fn run_fault(
    fault: Reply,
    stream: bool,
    settings: impl FnOnce(&mut uniproxy_config::Settings),
) -> (HttpResponse, Entry) {
    let mock = faulty_upstream(fault).await;
    let mut s = openai_settings(&mock);
    settings(&mut s);
    let proxy = Proxy::start(s).await;
    let started = Instant::now();
    let resp = chat(&proxy, stream).await;
    assert!(started.elapsed() < Duration::from_secs(5), "answered in {:?}", started.elapsed());
    assert_eq!(mock.requests().len(), 1, "a fault after the head is never retried");
    serves_next(&proxy, &mock).await;
    let entries = proxy.entries(2).await;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].entry.status, 200);
    (resp, entries.into_iter().next().unwrap())
}

fn assert_entry(entry: &Entry, status: u16, error_type: &str) {
    let e = &entry.entry;
    assert_eq!(e.status, status, "{e:#?}");
    assert_eq!(e.error_type.as_deref(), Some(error_type), "{e:#?}");
    assert!(e.error_message.as_deref().is_some_and(|m| !m.is_empty()), "{e:#?}");
}

// ---------------------------------------------------------------------------------------
// Upstream faults.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn connection_refused_is_retried_then_502_and_logged() {
    let mut settings = Settings::mock_defaults();
    settings.platform = uniproxy_config::Platform::OpenAi;
    settings.base_url = Some(format!("http://{}/v1", unused_addr().await));
    let proxy = Proxy::start(settings).await;
    let started = Instant::now();
    let e = expect_error(&chat(&proxy, false).await, 502);
    assert_eq!(e["code"], "upstream_unreachable");
    // Two backoffs of at least 125 ms and 250 ms (jitter halves them at most).
    assert!(started.elapsed() >= Duration::from_millis(375), "{:?}", started.elapsed());
    let entry = proxy.only_entry().await;
    assert_entry(&entry, 502, "upstream_error");
    assert_eq!(entry.entry.attempts, 3, "one try and MAX_RETRIES=2 retries");
    assert_eq!(proxy.get("/health").await.status, 200, "the proxy is still up");
}

#[tokio::test]
async fn an_upstream_that_closes_after_reading_the_request_is_not_asked_again() {
    // The request reached the upstream (a model that died mid-generation, a proxy in front
    // that gave up): sending it again could run, and bill, the model twice.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = received.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                // Read until the JSON body's end, then close without a word.
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    if seen.ends_with(b"}") {
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                }
            });
        }
    });
    let mut settings = Settings::mock_defaults();
    settings.platform = uniproxy_config::Platform::OpenAi;
    settings.base_url = Some(format!("http://{addr}/v1"));
    let proxy = Proxy::start(settings).await;
    let e = expect_error(&chat(&proxy, false).await, 502);
    assert_eq!(e["code"], "bad_upstream_response", "{e}");
    let entry = proxy.only_entry().await;
    assert_entry(&entry, 502, "upstream_error");
    assert_eq!(entry.entry.attempts, 1, "{:#?}", entry.entry);
    assert_eq!(received.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn reset_mid_stream_ends_with_an_error_event_and_keeps_what_arrived() {
    let mut steps: Vec<Step> = text_stream(&["Hel"]).into_iter().take(2).collect();
    // The pause lets the mock flush what it wrote before it breaks the connection.
    steps.push(Step::Sleep(Duration::from_millis(100)));
    steps.push(Step::Reset);
    let (resp, entry) = run_fault(Reply::sse(steps), true, |_| {}).await;
    let e = expect_error_event(&resp);
    assert_eq!(e["type"], "upstream_error");
    assert_eq!(e["code"], "upstream_stream_error");
    assert!(resp.text().contains("Hel"));
    assert_entry(&entry, 200, "upstream_error");
    assert!(entry.entry.response.contains("Hel"), "{}", entry.entry.response);
    assert_eq!(entry.entry.attempts, 1);
}

#[tokio::test]
async fn answer_cut_off_mid_json_is_502() {
    let body = completion("a long enough answer").to_string();
    let (resp, entry) = run_fault(Reply::truncated(&body, 40), false, |_| {}).await;
    let e = expect_error(&resp, 502);
    assert_eq!(e["code"], "bad_upstream_response");
    assert_entry(&entry, 502, "upstream_error");
}

#[tokio::test]
async fn complete_body_of_truncated_json_is_502() {
    let body = completion("x").to_string();
    let (resp, entry) =
        run_fault(Reply::raw_json(200, &body[..body.len() / 2]), false, |_| {}).await;
    assert_eq!(expect_error(&resp, 502)["code"], "bad_upstream_response");
    assert_entry(&entry, 502, "upstream_error");
}

/// Garbage before any event the client could get is the request's 502, as a whole answer's
/// garbage is; after the first chunk, an error event ends the stream.
#[tokio::test]
async fn garbage_sse_is_a_502_or_ends_the_stream_with_an_error_event() {
    let garbage = || {
        vec![
            Step::bytes(b"\xff\xfe\x00garbage\x80\n\n"),
            Step::raw("data: {not json at all\n\n"),
            Step::raw("event: ???\ndata: \x01\x02\n\n"),
            Step::bytes(&[0xc3, 0x28, b'\n', b'\n']),
        ]
    };
    let (resp, entry) = run_fault(Reply::sse(garbage()), true, |_| {}).await;
    let e = expect_error(&resp, 502);
    assert_eq!(e["type"], "upstream_error", "{e}");
    assert_entry(&entry, 502, "upstream_error");

    let mut steps = vec![Step::event(&chunk(json!({"role": "assistant", "content": "Hi"}), None))];
    steps.extend(garbage());
    let (resp, entry) = run_fault(Reply::sse(steps), true, |_| {}).await;
    let e = expect_error_event(&resp);
    assert_eq!(e["type"], "upstream_error", "{e}");
    assert_entry(&entry, 200, "upstream_error");
}

/// A stream that fails before its first event, however it fails, is answered with the status
/// a whole answer failing so gets: nothing of it went to the client. It was a 200 whose
/// stream broke off at once, which the SDKs neither retry nor see a status for.
#[tokio::test]
async fn a_stream_that_fails_before_its_first_event_is_answered_with_a_status() {
    // Idle past STREAM_IDLE_TIMEOUT, or comments only past REQUEST_TIMEOUT: a 504, as
    // FIRST_BYTE_TIMEOUT is.
    let idle = vec![Step::raw(": keep-alive\n\n"), Step::Sleep(Duration::from_secs(30))];
    let pings = vec![Step::Forever(Duration::from_millis(50), Bytes::from_static(b": ping\n\n"))];
    let short = |setting: &'static str| {
        move |s: &mut Settings| match setting {
            "STREAM_IDLE_TIMEOUT" => s.stream_idle_timeout = Duration::from_millis(300),
            _ => s.request_timeout = Duration::from_millis(800),
        }
    };
    for (steps, setting) in [(idle, "STREAM_IDLE_TIMEOUT"), (pings, "REQUEST_TIMEOUT")] {
        let (resp, entry) = run_fault(Reply::sse(steps), true, short(setting)).await;
        let e = expect_error(&resp, 504);
        assert!(e["message"].as_str().unwrap().contains(setting), "{e}");
        assert_entry(&entry, 504, "timeout_error");
    }
    // Ended with no event, or cut off: a 502.
    for steps in
        [vec![Step::raw(": keep-alive\n\n")], vec![Step::raw("data: {\"id\""), Step::Reset]]
    {
        let (resp, entry) = run_fault(Reply::sse(steps), true, |_| {}).await;
        let e = expect_error(&resp, 502);
        assert_eq!(e["code"], "bad_upstream_response", "{e}");
        assert_entry(&entry, 502, "upstream_error");
    }
}

/// A tool call numbered 4000000000 made room for four billion calls in the record ("memory
/// allocation of 288000000072 bytes failed"): the process aborted, and with it every request in
/// flight and every record not yet written.
#[tokio::test]
async fn a_tool_call_numbered_four_billion_is_relayed_and_recorded() {
    let fragment = |first: bool, arguments: &str| {
        let mut call = json!({"index": 4_000_000_000u32, "function": {"arguments": arguments}});
        if first {
            call["id"] = json!("call_1");
            call["type"] = json!("function");
            call["function"]["name"] = json!("f");
        }
        Step::event(&chunk(json!({"tool_calls": [call]}), None))
    };
    let steps = vec![
        fragment(true, "{\"a\":"),
        fragment(false, "1}"),
        Step::event(&chunk(json!({}), Some("tool_calls"))),
        Step::done(),
    ];
    let (resp, entry) = run_fault(Reply::sse(steps), true, |_| {}).await;
    assert_eq!(resp.status, 200);
    assert!(resp.text().contains("4000000000"), "relayed as it came: {}", resp.text());
    assert_eq!(sse_data(&resp.body).last().map(String::as_str), Some("[DONE]"));
    let recorded: Value = serde_json::from_str(&entry.entry.response).unwrap();
    assert_eq!(
        recorded["choices"][0]["tool_calls"],
        json!([{"id": "call_1", "name": "f", "arguments": "{\"a\":1}"}])
    );
}

/// One line of 10 MB from the upstream took 14 s to decode (40 MB: 221 s), a runtime thread
/// pinned all along, and nothing bounded what it buffered. An event may be as large as a whole
/// answer may (64 MiB); one larger ends the stream with an error event.
#[tokio::test]
async fn an_event_over_64_mib_ends_the_stream_with_an_error_event() {
    let mut steps = text_stream(&["Hel"]).into_iter().take(2).collect::<Vec<_>>();
    steps.push(Step::raw("data: "));
    let line = Bytes::from(vec![b'x'; 1 << 20]);
    steps.extend(std::iter::repeat_n(Step::Data(line), 65));
    let (resp, entry) = run_fault(Reply::sse(steps), true, |_| {}).await;
    let e = expect_error_event(&resp);
    assert_eq!(e["code"], "bad_upstream_response");
    let message = e["message"].as_str().unwrap();
    assert_eq!(message, "upstream stream event larger than 67108864 bytes");
    assert!(resp.text().contains("Hel"));
    assert_entry(&entry, 200, "upstream_error");
}

#[tokio::test]
async fn stream_that_never_ends_is_cut_at_the_request_timeout() {
    // The upstream keeps the connection busy with SSE comments, so the idle timeout never
    // fires: only REQUEST_TIMEOUT can end it.
    let mut steps: Vec<Step> = text_stream(&["Hel"]).into_iter().take(2).collect();
    steps.push(Step::Forever(Duration::from_millis(50), Bytes::from_static(b": ping\n\n")));
    let (resp, entry) = run_fault(Reply::sse(steps), true, |s| {
        s.stream_idle_timeout = Duration::from_millis(300);
        s.request_timeout = Duration::from_millis(1200);
    })
    .await;
    let e = expect_error_event(&resp);
    assert_eq!(e["type"], "timeout_error");
    assert!(e["message"].as_str().unwrap().contains("REQUEST_TIMEOUT"), "{e}");
    assert_entry(&entry, 200, "timeout_error");
    assert!(entry.entry.response.contains("Hel"));
}

#[tokio::test]
async fn html_200_is_502() {
    let html = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>\
                <body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>";
    let reply = Reply::raw_json(200, html).with_content_type("text/html");
    // Where a stream was expected too: the page is read whole, and nothing has gone to the
    // client yet, so it is a 502 as well, not a 200 stream of one error event.
    for stream in [false, true] {
        let (resp, entry) = run_fault(reply.clone(), stream, |_| {}).await;
        assert_eq!(expect_error(&resp, 502)["code"], "bad_upstream_response");
        assert_entry(&entry, 502, "upstream_error");
        // The record says what came instead.
        let logged = entry.entry.error_message.unwrap_or_default();
        assert!(
            logged.contains("; the upstream's answer began: <!DOCTYPE html><html><head><title>502"),
            "{logged}"
        );
    }
}

#[tokio::test]
async fn a_whole_answer_to_a_stream_request_is_replayed_as_a_stream() {
    // A server that does not stream answers `stream: true` with the whole completion.
    let mock = MockUpstream::always(Reply::json(200, &completion("all at once"))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let resp = chat(&proxy, true).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let text = streamed_text(&sse_json(&resp.body));
    assert_eq!(text, "all at once");
    assert_eq!(sse_data(&resp.body).last().map(String::as_str), Some("[DONE]"));
    assert_eq!(mock.only_request().json()["stream"], true, "the stream was asked for");
    let e = proxy.only_entry().await;
    assert_eq!((e.entry.status, e.entry.stream), (200, true), "{e:#?}");
}

#[test]
fn gzip_helper_is_real_gzip() {
    // The CRC-32 check value from the catalogue of parametrised CRC algorithms.
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    let gz = gzip_stored(b"hello");
    assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
    assert_eq!(gz.len(), 10 + 5 + 5 + 8);
}

#[tokio::test]
async fn gzip_body_nobody_asked_for_is_502() {
    let (resp, entry) = run_fault(Reply::gzip_json(&completion("zipped")), false, |_| {}).await;
    assert_eq!(expect_error(&resp, 502)["code"], "bad_upstream_response");
    assert_entry(&entry, 502, "upstream_error");
}

#[tokio::test]
async fn body_over_64_mib_is_502() {
    let (resp, entry) = run_fault(Reply::huge(65 << 20), false, |_| {}).await;
    let e = expect_error(&resp, 502);
    assert_eq!(e["code"], "bad_upstream_response");
    assert!(e["message"].as_str().unwrap().contains("larger than"), "{e}");
    assert_entry(&entry, 502, "upstream_error");
}

// ---------------------------------------------------------------------------------------
// Retries.
// ---------------------------------------------------------------------------------------

fn error_reply(status: u16) -> Reply {
    Reply::json(status, &openai_error("try again later", "server_error", None))
}

#[tokio::test]
async fn two_503s_then_200_is_200_after_three_tries() {
    let mock =
        MockUpstream::first_n_then(2, error_reply(503), Reply::json(200, &completion("ok"))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let resp = chat(&proxy, false).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(mock.requests().len(), 3);
    assert_eq!(proxy.only_entry().await.entry.attempts, 3);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let limited = error_reply(429).with_header("retry-after", "1");
    let mock = MockUpstream::first_n_then(1, limited, Reply::json(200, &completion("ok"))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let started = Instant::now();
    assert_eq!(chat(&proxy, false).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(950), "{:?}", started.elapsed());
    assert_eq!(mock.requests().len(), 2);
    assert_eq!(proxy.only_entry().await.entry.attempts, 2);
}

/// A `Retry-After` too large for a `Duration` panicked the request's task: the client's
/// connection dropped with no answer, and the record said the client had left (499).
#[tokio::test]
async fn a_retry_after_too_large_to_wait_is_the_longest_wait_not_a_panic() {
    for (name, huge) in [("retry-after", "1e20"), ("retry-after-ms", "1e30")] {
        let mock = MockUpstream::always(error_reply(429).with_header(name, huge)).await;
        let mut settings = openai_settings(&mock);
        // The longest wait (20 s) does not fit before the deadline: the 429 is the answer.
        settings.request_timeout = Duration::from_secs(5);
        let proxy = Proxy::start(settings).await;
        let resp = chat(&proxy, false).await;
        expect_error(&resp, 429);
        assert_eq!(resp.header(name), Some(huge), "the upstream's word reaches the client");
        assert_eq!(mock.requests().len(), 1, "{name}");
        assert_eq!(proxy.only_entry().await.entry.status, 429, "{name}");
    }
}

/// An upstream that asked for a minute's wait was asked again after 20 s (the longest wait the
/// proxy takes), and again 20 s later: two tries it had said it would refuse, and the client
/// heard of the 429 only after 40 s, to wait its minute then.
#[tokio::test]
async fn a_retry_after_longer_than_the_proxy_waits_goes_to_the_client_at_once() {
    let mock = MockUpstream::always(error_reply(429).with_header("retry-after", "60")).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(10), chat(&proxy, false))
        .await
        .expect("the 429 comes at once, not after the proxy's own waits");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    expect_error(&resp, 429);
    assert_eq!(resp.header("retry-after"), Some("60"));
    assert_eq!(mock.requests().len(), 1);
    let entry = proxy.only_entry().await.entry;
    assert_eq!((entry.status, entry.attempts), (429, 1));
}

/// OpenAI answers a spent quota with a 429, as it does a rate limit. The proxy asked twice
/// more (and each SDK try three times): no try succeeds until someone pays.
#[tokio::test]
async fn a_429_for_a_spent_quota_is_not_retried() {
    let quota = json!({"error": {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}});
    let mock = MockUpstream::always(Reply::json(429, &quota)).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let resp = chat(&proxy, false).await;
    let e = expect_error(&resp, 429);
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("insufficient_quota"), Some("insufficient_quota"))
    );
    // Nor by the SDKs, which retry a 429 unless told not to.
    assert_eq!(resp.header("x-should-retry"), Some("false"));
    assert_eq!(mock.requests().len(), 1);
    let entry = proxy.only_entry().await.entry;
    assert_eq!((entry.status, entry.attempts), (429, 1));
}

/// Gemini says when to try again in its 429's body (`RetryInfo`), never as `Retry-After`: the
/// proxy tried again after a quarter of a second, and the client, told nothing, about a second
/// later; each try refused, the quota counting them.
#[tokio::test]
async fn geminis_retry_delay_is_waited_for_and_reaches_the_client_as_retry_after() {
    let exhausted = json!({"error": {
        "code": 429, "message": "You exceeded your current quota, please check your plan.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
             "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.2s"}]}});
    let answer = json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4},
        "modelVersion": "gemini-2.5-flash"});
    let gemini = |mock: &MockUpstream| {
        let mut settings = openai_settings(mock);
        settings.platform = uniproxy_config::Platform::Google;
        settings.base_url = Some(format!("{}/v1beta", mock.url()));
        settings
    };
    let mock =
        MockUpstream::first_n_then(1, Reply::json(429, &exhausted), Reply::json(200, &answer))
            .await;
    let proxy = Proxy::start(gemini(&mock)).await;
    let started = Instant::now();
    let resp = chat(&proxy, false).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(started.elapsed() >= Duration::from_millis(1150), "{:?}", started.elapsed());
    assert_eq!(mock.requests().len(), 2);
    // Retries spent, the client hears when to come back.
    let mock = MockUpstream::always(Reply::json(429, &exhausted)).await;
    let mut settings = gemini(&mock);
    settings.max_retries = 0;
    let proxy = Proxy::start(settings).await;
    for stream in [false, true] {
        let resp = chat(&proxy, stream).await;
        let e = expect_error(&resp, 429);
        assert_eq!(e["code"], "RESOURCE_EXHAUSTED", "{e}");
        assert_eq!(resp.header("retry-after-ms"), Some("1200"));
        assert_eq!(resp.header("retry-after"), Some("2"));
    }
}

/// A `retryDelay` of more milliseconds than a u64 holds (an upstream's to send) was cut to its
/// low 64 bits: `18446744073709552s` became `retry-after-ms: 384`, which the proxy (and the
/// SDKs after it) took for a wait of 384 ms, and asked again at once.
#[tokio::test]
async fn a_retry_delay_too_long_for_milliseconds_is_the_longest_wait_not_a_short_one() {
    let exhausted = json!({"error": {
        "code": 429, "message": "Resource has been exhausted.", "status": "RESOURCE_EXHAUSTED",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                     "retryDelay": "18446744073709552s"}]}});
    let mock = MockUpstream::always(Reply::json(429, &exhausted)).await;
    let mut settings = openai_settings(&mock);
    settings.platform = uniproxy_config::Platform::Google;
    settings.base_url = Some(format!("{}/v1beta", mock.url()));
    let proxy = Proxy::start(settings).await;
    let resp = chat(&proxy, false).await;
    expect_error(&resp, 429);
    assert_eq!(resp.header("retry-after-ms"), Some(u64::MAX.to_string().as_str()));
    assert_eq!(resp.header("retry-after"), Some("18446744073709552"));
    assert_eq!(mock.requests().len(), 1, "a wait that long is not the proxy's to take");
}

#[tokio::test]
async fn the_upstreams_retry_after_reaches_the_client() {
    // Retries spent (none allowed here), the 429 goes to the client with the upstream's word on
    // when to try again, which the OpenAI SDKs wait for; other headers stay behind.
    let limited = error_reply(429)
        .with_header("retry-after", "7")
        .with_header("retry-after-ms", "6500")
        .with_header("x-ratelimit-remaining-requests", "0");
    let mock = MockUpstream::always(limited).await;
    let mut settings = openai_settings(&mock);
    settings.max_retries = 0;
    let proxy = Proxy::start(settings).await;
    for stream in [false, true] {
        let resp = chat(&proxy, stream).await;
        expect_error(&resp, 429);
        assert_eq!(resp.header("retry-after"), Some("7"));
        assert_eq!(resp.header("retry-after-ms"), Some("6500"));
        assert_eq!(resp.header("x-ratelimit-remaining-requests"), None);
    }
    // An upstream error without them carries none.
    let mock = MockUpstream::always(error_reply(503)).await;
    let mut settings = openai_settings(&mock);
    settings.max_retries = 0;
    let proxy = Proxy::start(settings).await;
    assert_eq!(chat(&proxy, false).await.header("retry-after"), None);
}

#[tokio::test]
async fn max_retries_0_means_one_try() {
    let mock = MockUpstream::always(error_reply(503)).await;
    let mut settings = openai_settings(&mock);
    settings.max_retries = 0;
    let proxy = Proxy::start(settings).await;
    expect_error(&chat(&proxy, false).await, 503);
    assert_eq!(mock.requests().len(), 1);
    assert_eq!(proxy.only_entry().await.entry.attempts, 1);
}

#[tokio::test]
async fn client_errors_are_never_retried() {
    let reply = Reply::json(400, &openai_error("bad", "invalid_request_error", None));
    let mock = MockUpstream::always(reply).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    expect_error(&chat(&proxy, false).await, 400);
    assert_eq!(mock.requests().len(), 1);
    assert_eq!(proxy.only_entry().await.entry.attempts, 1);
}

#[tokio::test]
async fn stream_that_started_is_never_retried() {
    let steps = vec![
        Step::event(&chunk(json!({"role": "assistant", "content": "Hi"}), None)),
        Step::Sleep(Duration::from_millis(100)),
        Step::Reset,
    ];
    let sse = Reply::sse(text_stream(&["ok"]));
    let mock = MockUpstream::first_n_then(1, Reply::sse(steps), sse).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let e = expect_error_event(&chat(&proxy, true).await);
    assert_eq!(e["code"], "upstream_stream_error");
    let entry = proxy.only_entry().await;
    assert_eq!(entry.entry.attempts, 1);
    assert_eq!(mock.requests().len(), 1, "the upstream saw one request");
}

/// Claude's overload reported in a stream, as Anthropic documents it: a 200, then an `error`
/// event before anything else.
const CLAUDE_OVERLOADED: &str = "event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";

/// A whole Claude stream that says `text`.
fn claude_stream(text: &str) -> String {
    let delta = json!({"type": "content_block_delta", "index": 0,
        "delta": {"type": "text_delta", "text": text}});
    [
        r#"{"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":1}}}"#.to_owned(),
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#.to_owned(),
        delta.to_string(),
        r#"{"type":"content_block_stop","index":0}"#.to_owned(),
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":6}}"#.to_owned(),
        r#"{"type":"message_stop"}"#.to_owned(),
    ]
    .iter()
    .map(|data| {
        let kind = serde_json::from_str::<Value>(data).unwrap()["type"].as_str().unwrap().to_owned();
        format!("event: {kind}\ndata: {data}\n\n")
    })
    .collect()
}

fn claude_settings(mock: &MockUpstream) -> Settings {
    let mut settings = openai_settings(mock);
    settings.platform = uniproxy_config::Platform::Anthropic;
    settings
}

/// A stream that opens with an error the upstream reported failed before anything of it went
/// to the client: it is retried as that error's status would be. The client got a 200 and
/// the error event, and no retry.
#[tokio::test]
async fn a_stream_that_opens_with_an_overload_is_retried() {
    let overloaded = Reply::sse(vec![Step::raw(CLAUDE_OVERLOADED)]);
    let whole = Reply::sse(vec![Step::raw(&claude_stream("Hello there!"))]);
    let mock = MockUpstream::first_n_then(1, overloaded, whole).await;
    let proxy = Proxy::start(claude_settings(&mock)).await;
    let resp = chat(&proxy, true).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(streamed_text(&sse_json(&resp.body)), "Hello there!", "{}", resp.text());
    assert!(!resp.text().contains("Overloaded"), "{}", resp.text());
    assert_eq!(mock.requests().len(), 2);
    let entry = proxy.only_entry().await;
    assert_eq!((entry.entry.status, entry.entry.attempts), (200, 2));
    assert!(entry.entry.error_type.is_none(), "{:?}", entry.entry.error_type);
}

/// Past MAX_RETRIES, or for an error no retry mends, a stream that opens with an error is
/// answered as that error would be unstreamed: its status and the error, in the OpenAI shape,
/// without the proxy's key. A 200 with an error event made SDKs raise mid-stream, where
/// they neither retry nor see the status.
#[tokio::test]
async fn a_stream_that_opens_with_an_error_is_answered_with_its_status() {
    let mock = MockUpstream::always(Reply::sse(vec![Step::raw(CLAUDE_OVERLOADED)])).await;
    let mut settings = claude_settings(&mock);
    settings.max_retries = 1;
    let proxy = Proxy::start(settings).await;
    let e = expect_error(&chat(&proxy, true).await, 529);
    assert_eq!(
        (e["type"].as_str(), e["message"].as_str()),
        (Some("overloaded_error"), Some("Overloaded"))
    );
    assert_eq!(mock.requests().len(), 2, "one retry");
    let entry = proxy.only_entry().await;
    assert_eq!((entry.entry.status, entry.entry.attempts), (529, 2));
    assert_eq!(entry.entry.error_type.as_deref(), Some("overloaded_error"));

    // OpenRouter's error chunk, with the status it stands for as `code`: a 400 is not retried.
    let refusal = json!({"id": "gen-1", "object": "chat.completion.chunk", "created": 1762179802,
        "model": "minimax/minimax-m2", "provider": "Minimax",
        "error": {"code": 400, "message": format!("key {UPSTREAM_KEY} refused: tokens exceed the limit")},
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]});
    // After a comment and an empty keep-alive, neither of which makes a frame for the client.
    let steps = vec![Step::raw(": OPENROUTER PROCESSING\n\ndata: \n\n"), Step::event(&refusal)];
    let mock = MockUpstream::always(Reply::sse(steps)).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let resp = chat(&proxy, true).await;
    let e = expect_error(&resp, 400);
    assert!(e["message"].as_str().unwrap().contains("tokens exceed the limit"), "{e}");
    assert!(!resp.text().contains(UPSTREAM_KEY), "{}", resp.text());
    assert_eq!(mock.requests().len(), 1);
    let entry = proxy.only_entry().await;
    assert_eq!((entry.entry.status, entry.entry.attempts), (400, 1));
    assert!(!entry.entry.error_message.unwrap_or_default().contains(UPSTREAM_KEY));
}

/// A stream that opens with an error answered with its status keeps, in its record, the
/// tokens the error chunk says were billed (OpenRouter's carries `usage`), as the record of
/// the same error in a stream that had started does: abandoned at its start, the relay gave
/// back a record without them.
#[tokio::test]
async fn a_stream_that_opens_with_an_error_keeps_the_usage_it_reports() {
    let error = json!({"id": "gen-1762179802-UN8pkJI4AGZvryk0kFnb", "provider": "Minimax",
        "error": {"code": 400, "message": "Token limit reached"},
        "model": "minimax/minimax-m2:free", "object": "chat.completion.chunk", "created": 1762179802,
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
            "finish_reason": null, "native_finish_reason": null, "logprobs": null}],
        "usage": {"prompt_tokens": 43, "completion_tokens": 10, "total_tokens": 53, "cost": 0,
            "is_byok": false, "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 11, "image_tokens": 0}}});
    let steps = vec![Step::raw(": OPENROUTER PROCESSING\n\n"), Step::event(&error), Step::done()];
    let mock = MockUpstream::always(Reply::sse(steps)).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let e = expect_error(&chat(&proxy, true).await, 400);
    assert_eq!(e["message"], "Token limit reached", "{e}");
    let entry = proxy.only_entry().await.entry;
    assert_eq!(entry.status, 400);
    let usage = &entry.usage;
    let tokens = (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens);
    assert_eq!(tokens, (Some(43), Some(10), Some(53)), "{usage:?}");
    assert_eq!(usage.reasoning_tokens, Some(11), "{usage:?}");

    // Retried, the try's usage is not the answer's: the record of a retry that fails
    // otherwise says no usage, as for any retried try.
    let mut overloaded = error.clone();
    overloaded["error"] = json!({"code": 502, "message": "Provider returned error"});
    let tries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = tries.clone();
    let mock = MockUpstream::start(move |_| {
        if counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            Reply::sse(vec![Step::event(&overloaded), Step::done()])
        } else {
            Reply::json(400, &openai_error("bad request", "invalid_request_error", None))
        }
    })
    .await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    expect_error(&chat(&proxy, true).await, 400);
    let entry = proxy.only_entry().await.entry;
    assert_eq!((entry.status, entry.attempts), (400, 2));
    assert_eq!(entry.usage.total_tokens, None, "{:?}", entry.usage);
}

/// MAX_RETRIES counts every retry of a request: a 503, then a stream that opens with an
/// overload, then the answer is three tries, and MAX_RETRIES=1 stops after two.
#[tokio::test]
async fn max_retries_counts_the_retries_of_either_kind() {
    let tries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = tries.clone();
    let mock = MockUpstream::start(move |_| {
        match counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => Reply::json(
                503,
                &json!({"type": "error", "error": {"type": "api_error", "message": "try again"}}),
            ),
            1 => Reply::sse(vec![Step::raw(CLAUDE_OVERLOADED)]),
            _ => Reply::sse(vec![Step::raw(&claude_stream("ok"))]),
        }
    })
    .await;
    let proxy = Proxy::start(claude_settings(&mock)).await;
    let resp = chat(&proxy, true).await;
    assert_eq!(streamed_text(&sse_json(&resp.body)), "ok", "{}", resp.text());
    assert_eq!(proxy.only_entry().await.entry.attempts, 3);

    tries.store(0, std::sync::atomic::Ordering::SeqCst);
    let mut settings = claude_settings(&mock);
    settings.max_retries = 1;
    let proxy = Proxy::start(settings).await;
    expect_error(&chat(&proxy, true).await, 529);
    assert_eq!(proxy.only_entry().await.entry.attempts, 2);
    assert_eq!(mock.requests().len(), 5);
}

/// A request's record counts every try it made, those before a stream that opened with an
/// error included, when the retry after it fails without an answer (here, no head within
/// FIRST_BYTE_TIMEOUT): it said 1 try for the 2 the upstream got.
#[tokio::test]
async fn the_tries_before_a_failed_retry_are_counted() {
    let overloaded = Reply::sse(vec![Step::raw(CLAUDE_OVERLOADED)]);
    let mock = MockUpstream::first_n_then(1, overloaded, Reply::hang()).await;
    let mut settings = claude_settings(&mock);
    settings.first_byte_timeout = Duration::from_millis(300);
    settings.max_retries = 1;
    let proxy = Proxy::start(settings).await;
    let e = expect_error(&chat(&proxy, true).await, 504);
    assert!(e["message"].as_str().unwrap().contains("FIRST_BYTE_TIMEOUT"), "{e}");
    assert_eq!(mock.requests().len(), 2);
    let entry = proxy.only_entry().await.entry;
    assert_eq!((entry.status, entry.attempts), (504, 2));
}

#[tokio::test]
async fn retries_stop_at_the_request_timeout() {
    let mock = MockUpstream::always(error_reply(503).with_header("retry-after", "1")).await;
    let mut settings = openai_settings(&mock);
    settings.max_retries = 10;
    settings.request_timeout = Duration::from_millis(1500);
    let proxy = Proxy::start(settings).await;
    let started = Instant::now();
    expect_error(&chat(&proxy, false).await, 503);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(950) && took < Duration::from_millis(1500), "{took:?}");
    // A third try would start after the deadline: the proxy answers instead of waiting.
    assert_eq!(mock.requests().len(), 2);
    assert_eq!(proxy.only_entry().await.entry.attempts, 2);
}

// ---------------------------------------------------------------------------------------
// Concurrency limit.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn beyond_the_concurrency_limit_is_429_with_retry_after() {
    let slow = Reply::json(200, &completion("ok")).after(Duration::from_millis(800));
    let mock = MockUpstream::always(slow).await;
    let mut settings = openai_settings(&mock);
    settings.concurrency_limit = 2;
    let proxy = Proxy::start(settings).await;
    let addr = proxy.addr;
    let in_flight: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(send(
                addr,
                post_request("/v1/chat/completions", &chat_request("a", false)),
            ))
        })
        .collect();
    mock.wait_for_requests(2).await;

    let started = Instant::now();
    let third = proxy.post("/v1/chat/completions", &chat_request("model-asked", true)).await;
    assert!(started.elapsed() < Duration::from_millis(300), "refused at once, not queued");
    let e = expect_error(&third, 429);
    assert_eq!(e["code"], "proxy_overloaded");
    assert_eq!(third.header("retry-after"), Some("1"));

    for r in in_flight {
        assert_eq!(r.await.unwrap().status, 200);
    }
    assert_eq!(chat(&proxy, false).await.status, 200, "places are free again");
    let entries = proxy.entries(4).await;
    let statuses: Vec<u16> = entries.iter().map(|e| e.entry.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 3, "{statuses:?}");
    // The refusal's record says what was asked.
    let refused = entries.iter().find(|e| e.entry.status == 429).unwrap();
    let asked = (refused.entry.client_model.as_str(), refused.entry.stream);
    assert_eq!(asked, ("model-asked", true), "{refused:#?}");
    assert!(refused.entry.client_request.contains("Say hello."), "{refused:#?}");
}

// ---------------------------------------------------------------------------------------
// Timeouts.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn connect_timeout_is_504() {
    // A listener that never accepts, its accept queue filled: Linux drops further SYNs, so
    // a connect hangs as it does towards a host that does not answer, all on 127.0.0.1.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    let mut full = false;
    for _ in 0..16 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            Ok(Err(e)) => panic!("connect failed instead of hanging: {e}"),
            Err(_) => {
                full = true;
                break;
            }
        }
    }
    assert!(full, "the accept queue never filled up");

    let mut settings = Settings::mock_defaults();
    settings.platform = uniproxy_config::Platform::OpenAi;
    settings.base_url = Some(format!("http://{addr}/v1"));
    settings.connect_timeout = Duration::from_millis(300);
    let proxy = Proxy::start(settings).await;
    let started = Instant::now();
    let e = expect_error(&chat(&proxy, false).await, 504);
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(e["message"].as_str().unwrap().contains("CONNECT_TIMEOUT"), "{e}");
    assert_entry(&proxy.only_entry().await, 504, "timeout_error");
    drop(listener);
}

#[tokio::test]
async fn first_byte_timeout_is_504_stream_or_not() {
    for stream in [false, true] {
        let mock = faulty_upstream(Reply::hang()).await;
        let mut settings = openai_settings(&mock);
        settings.first_byte_timeout = Duration::from_millis(300);
        let proxy = Proxy::start(settings).await;
        // A stream gets a plain 504 too: nothing had gone to the client yet.
        let e = expect_error(&chat(&proxy, stream).await, 504);
        assert!(e["message"].as_str().unwrap().contains("FIRST_BYTE_TIMEOUT"), "{e}");
        let entry = proxy.only_entry().await;
        assert_entry(&entry, 504, "timeout_error");
        assert_eq!(entry.entry.attempts, 1, "a timeout is not retried");
        assert_eq!(entry.entry.stream, stream);
        serves_next(&proxy, &mock).await;
    }
}

/// The `overhead_ms` of the JSON log's request lines, in order.
fn logged_overheads(proxy: &Proxy) -> Vec<f64> {
    std::fs::read_to_string(proxy.log_file_path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("({e}): {l}")))
        .filter(|l| l["msg"] == "request")
        .map(|l| l["overhead_ms"].as_f64().unwrap_or_else(|| panic!("no overhead_ms: {l}")))
        .collect()
}

#[tokio::test]
async fn time_lost_to_a_failing_upstream_is_not_counted_as_the_proxys_own() {
    // Refused: a try and two retries after backoffs of at least 125 and 250 ms, then 502.
    let mut settings = Settings::mock_defaults();
    settings.platform = uniproxy_config::Platform::OpenAi;
    settings.base_url = Some(format!("http://{}/v1", unused_addr().await));
    let mut refused = Proxy::start_logged(settings).await;
    let started = Instant::now();
    expect_error(&chat(&refused, false).await, 502);
    assert!(started.elapsed() >= Duration::from_millis(375));
    // An upstream that never answers: 504 after the first-byte timeout.
    let mock = faulty_upstream(Reply::hang()).await;
    let mut settings = openai_settings(&mock);
    settings.first_byte_timeout = Duration::from_millis(300);
    let mut hung = Proxy::start_logged(settings).await;
    expect_error(&chat(&hung, false).await, 504);
    for proxy in [&mut refused, &mut hung] {
        proxy.finish().await;
        let overheads = logged_overheads(proxy);
        assert_eq!(overheads.len(), 1);
        // The proxy's own work is well under a millisecond; the waits were 300 ms or more.
        assert!(overheads[0] < 100.0, "overhead_ms {overheads:?}");
    }
}

#[tokio::test]
async fn time_a_client_takes_to_send_its_body_is_not_counted_as_the_proxys_own() {
    let mock = MockUpstream::always(Reply::json(200, &completion("ok"))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let body = chat_request("a", false).to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    conn.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let overhead: f64 = answer
        .lines()
        .find_map(|l| l.strip_prefix("x-uniproxy-overhead-ms: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no overhead in {answer}"));
    assert!(overhead < 200.0, "the 400 ms upload counted: {overhead} ms");
}

#[tokio::test]
async fn stream_idle_timeout_is_an_error_event_and_logged() {
    let mut steps: Vec<Step> = text_stream(&["Hel"]).into_iter().take(2).collect();
    steps.push(Step::Sleep(Duration::from_secs(30)));
    let (resp, entry) = run_fault(Reply::sse(steps), true, |s| {
        s.stream_idle_timeout = Duration::from_millis(300);
    })
    .await;
    let e = expect_error_event(&resp);
    assert!(e["message"].as_str().unwrap().contains("STREAM_IDLE_TIMEOUT"), "{e}");
    assert_entry(&entry, 200, "timeout_error");
}

#[tokio::test]
async fn body_that_trickles_past_the_request_timeout_is_504() {
    let steps = vec![
        Step::raw(r#"{"id":"chatcmpl-1","#),
        Step::Forever(Duration::from_millis(50), Bytes::from_static(b" ")),
    ];
    let reply = Reply::sse(steps).with_content_type("application/json");
    let (resp, entry) = run_fault(reply, false, |s| {
        s.request_timeout = Duration::from_millis(800);
    })
    .await;
    let e = expect_error(&resp, 504);
    assert!(e["message"].as_str().unwrap().contains("REQUEST_TIMEOUT"), "{e}");
    assert_entry(&entry, 504, "timeout_error");
}

// ---------------------------------------------------------------------------------------
// Slow clients.
// ---------------------------------------------------------------------------------------

/// Writes `head` and then nothing; returns how long the server kept the connection open.
async fn stall_after(proxy: &Proxy, head: &[u8]) -> Duration {
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(head).await.unwrap();
    let started = Instant::now();
    let mut sink = Vec::new();
    // Whether the server closes cleanly, resets, or answers 408 first does not matter.
    let _ = tokio::time::timeout(PATIENCE, conn.read_to_end(&mut sink))
        .await
        .expect("the server closed the stalled connection");
    started.elapsed()
}

#[tokio::test]
async fn slowloris_is_disconnected_after_the_header_read_timeout() {
    let mock = MockUpstream::always(Reply::json(200, &completion("ok"))).await;
    let launch =
        Launch { header_read_timeout: Some(Duration::from_millis(500)), ..Launch::default() };
    let proxy = Proxy::launch(openai_settings(&mock), launch).await;

    let partial = b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-ty";
    let took = stall_after(&proxy, partial).await;
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(3), "{took:?}");

    let took = stall_after(&proxy, b"").await;
    assert!(took < Duration::from_secs(3), "a silent connection is closed too: {took:?}");
    // The start of HTTP/2's preface, which leaves the version untold.
    for start in [&b"P"[..], b"PRI * HTTP/2.0\r\n"] {
        let took = stall_after(&proxy, start).await;
        assert!(took < Duration::from_secs(3), "{took:?} after {start:?}");
    }

    serves_next(&proxy, &mock).await;
}

/// An upstream that streams fast and for ever (256 KiB events every millisecond), and
/// answers a non-stream request with a short completion.
async fn endless_stream_upstream() -> MockUpstream {
    MockUpstream::start(|r| {
        if r.json()["stream"] != true {
            return Reply::json(200, &completion("ok"));
        }
        let piece = chunk(json!({"content": "x".repeat(256 * 1024)}), None);
        let mut steps = text_stream(&[]).into_iter().take(1).collect::<Vec<_>>();
        let piece = Bytes::from(format!("data: {piece}\n\n"));
        steps.push(Step::Forever(Duration::from_millis(1), piece));
        Reply::sse(steps)
    })
    .await
}

/// Sends a chat request on a new connection and reads nothing of the answer.
async fn ask_and_never_read(proxy: &Proxy, stream: bool) -> TcpStream {
    let body = chat_request("a", stream).to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    conn
}

#[tokio::test]
async fn a_stream_its_client_stops_reading_is_cut_at_the_request_timeout() {
    // The client sends its request and never reads. Once the socket buffers are full the
    // relay is not polled, so only the watchdog can end it.
    let mock = endless_stream_upstream().await;
    let mut settings = openai_settings(&mock);
    settings.request_timeout = Duration::from_millis(1500);
    let proxy = Proxy::start(settings).await;

    let conn = ask_and_never_read(&proxy, true).await;
    let entry = proxy.only_entry().await;
    assert_eq!(entry.entry.status, 504, "{entry:#?}");
    assert!(entry.entry.error_message.unwrap_or_default().contains("did not read"));
    // Its place under CONCURRENCY_LIMIT and its upstream connection are free again.
    drop(conn);
    serves_next(&proxy, &mock).await;
}

#[tokio::test]
async fn a_whole_answer_its_client_does_not_read_is_cut_after_the_client_timeout() {
    // 32 MiB: more than the socket buffers on both sides take, so the proxy's writes stall.
    let answer = completion(&"x".repeat(32 << 20));
    let size = answer.to_string().len();
    let mock = MockUpstream::first_n_then(
        1,
        Reply::json(200, &answer),
        Reply::json(200, &completion("ok")),
    )
    .await;
    let mut settings = openai_settings(&mock);
    settings.client_timeout = Duration::from_millis(300);
    let proxy = Proxy::start(settings).await;

    let mut conn = ask_and_never_read(&proxy, false).await;
    // Long past the client timeout, then read: what the socket buffers held, then the end.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, conn.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the proxy keeps the connection of a client that reads nothing");
    assert!(got.len() < size, "cut before the whole answer: {} of {size} bytes", got.len());
    serves_next(&proxy, &mock).await;
}

#[tokio::test]
async fn a_stream_its_client_stops_reading_is_cut_after_the_client_timeout() {
    let mock = endless_stream_upstream().await;
    let mut settings = openai_settings(&mock);
    // Far beyond the test's patience: only the client timeout can end it in time.
    settings.request_timeout = Duration::from_secs(60);
    settings.client_timeout = Duration::from_millis(300);
    let proxy = Proxy::start(settings).await;

    let conn = ask_and_never_read(&proxy, true).await;
    let entry = proxy.only_entry().await;
    assert_eq!(entry.entry.status, 504, "{entry:#?}");
    let message = entry.entry.error_message.unwrap_or_default();
    assert!(message.contains("did not read") && message.contains("CLIENT_TIMEOUT"), "{message}");
    drop(conn);
    serves_next(&proxy, &mock).await;
}

/// An HTTP/2 connection without TLS (prior knowledge) to the proxy; the task that runs it
/// ends when the proxy closes it.
async fn h2c(
    proxy: &Proxy,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    (
        sender,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

/// Sends a chat request on `sender` and reads the whole answer.
async fn h2c_chat(
    sender: &mut hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>,
    stream: bool,
) -> (u16, Bytes) {
    use http_body_util::BodyExt;
    let mut req = post_request("/v1/chat/completions", &chat_request("a", stream));
    *req.uri_mut() = "http://127.0.0.1/v1/chat/completions".parse().unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_header_read_timeout() {
    // A stream that pauses longer than the idle limit in all, to show that an open stream
    // keeps its connection.
    let mock = MockUpstream::start(|r| {
        if r.json()["stream"] != true {
            return Reply::json(200, &completion("ok"));
        }
        let mut steps = Vec::new();
        for step in text_stream(&["a", "b", "c"]) {
            steps.push(Step::Sleep(Duration::from_millis(250)));
            steps.push(step);
        }
        Reply::sse(steps)
    })
    .await;
    let idle = Duration::from_millis(400);
    let launch = Launch { header_read_timeout: Some(idle), ..Launch::default() };
    let proxy = Proxy::launch(openai_settings(&mock), launch).await;

    let (mut sender, conn) = h2c(&proxy).await;
    let (status, body) = h2c_chat(&mut sender, true).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("[DONE]"), "{body:?}");
    let (status, _) = h2c_chat(&mut sender, false).await;
    assert_eq!(status, 200);

    let idle_since = Instant::now();
    tokio::time::timeout(PATIENCE, conn)
        .await
        .expect("the proxy closes an idle h2c connection")
        .unwrap();
    assert!(idle_since.elapsed() >= idle, "not before the limit: {:?}", idle_since.elapsed());
    assert_eq!(proxy.entries(2).await.iter().filter(|e| e.entry.status == 200).count(), 2);
}

/// One HTTP/2 frame: length, type, flags, stream, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = len[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The (type, stream) of each HTTP/2 frame in `bytes`.
fn h2_frames(bytes: &[u8]) -> Vec<(u8, u32)> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        let stream =
            u32::from_be_bytes([bytes[at + 5], bytes[at + 6], bytes[at + 7], bytes[at + 8]]);
        frames.push((bytes[at + 3], stream & 0x7fff_ffff));
        at += 9 + len;
    }
    frames
}

#[tokio::test]
async fn an_http2_request_that_crosses_the_idle_goaway_is_answered() {
    // A request a client sends before it sees the idle GOAWAY is taken by h2 (the first
    // GOAWAY of a graceful shutdown names the last possible stream), so it must be answered,
    // even when it takes longer than the idle limit.
    let slow = Reply::json(200, &completion("ok")).after(Duration::from_millis(1500));
    let mock = MockUpstream::always(slow).await;
    let idle = Duration::from_millis(400);
    let launch = Launch { header_read_timeout: Some(idle), ..Launch::default() };
    let proxy = Proxy::launch(openai_settings(&mock), launch).await;

    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    tcp.write_all(&h2_frame(4, 0, 0, &[])).await.unwrap();
    // The idle GOAWAY goes out at about 400 ms; the request follows at 550 ms, unread.
    tokio::time::sleep(Duration::from_millis(550)).await;
    let body = chat_request("a", false).to_string();
    let mut head = Vec::new();
    let length = body.len().to_string();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/v1/chat/completions"),
        (":authority", "127.0.0.1"),
        ("content-type", "application/json"),
        ("content-length", length.as_str()),
    ] {
        // A literal header field without indexing, new name (RFC 7541, 6.2.2).
        head.push(0);
        head.push(u8::try_from(name.len()).unwrap());
        head.extend_from_slice(name.as_bytes());
        head.push(u8::try_from(value.len()).unwrap());
        head.extend_from_slice(value.as_bytes());
    }
    tcp.write_all(&h2_frame(1, 0x4, 1, &head)).await.unwrap();
    tcp.write_all(&h2_frame(0, 0x1, 1, body.as_bytes())).await.unwrap();

    let mut got = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut got)).await;
    let frames = h2_frames(&got);
    assert!(frames.contains(&(1, 1)), "stream 1 got no HEADERS: {frames:?}");
    assert!(frames.contains(&(0, 1)), "stream 1 got no DATA: {frames:?}");
    let entry = proxy.only_entry().await;
    assert_eq!(entry.entry.status, 200, "{entry:#?}");
}

#[tokio::test]
async fn an_oversized_request_head_is_refused_and_nothing_reaches_the_upstream() {
    let mock = MockUpstream::always(Reply::json(200, &completion("ok"))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    // 1 MiB of headers: far past hyper's head limit (about 400 KiB).
    let mut head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n".to_vec();
    for i in 0..1024 {
        head.extend_from_slice(format!("x-filler-{i}: {}\r\n", "a".repeat(1000)).as_bytes());
    }
    head.extend_from_slice(b"content-length: 2\r\n\r\n{}");
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    // The server may stop reading (and reset) before the whole head is written.
    let _ = conn.write_all(&head).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, conn.read_to_end(&mut answer))
        .await
        .expect("the server answers or closes an oversized head");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 431"),
        "an oversized head is refused (431) or the connection closed: {text:?}"
    );
    assert!(mock.requests().is_empty(), "nothing went upstream");
    serves_next(&proxy, &mock).await;
}

#[tokio::test]
async fn body_that_never_arrives_is_cut_at_the_request_timeout() {
    let mock = MockUpstream::always(Reply::json(200, &completion("ok"))).await;
    let mut settings = openai_settings(&mock);
    settings.request_timeout = Duration::from_millis(800);
    let proxy = Proxy::start(settings).await;
    let head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n\
                 content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":";
    let took = stall_after(&proxy, head).await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    let entry = proxy.only_entry().await;
    assert_eq!(entry.entry.status, 408, "{entry:#?}");
    assert!(mock.requests().is_empty());
    serves_next(&proxy, &mock).await;
}

/// A chat request's head and the start of its body (`content-length: 100`), then nothing.
const STALLED_BODY: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n\
    content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":";

#[tokio::test]
async fn a_body_that_stops_coming_is_408_after_the_client_timeout() {
    let mock = MockUpstream::always(Reply::json(200, &completion("ok"))).await;
    let mut settings = openai_settings(&mock);
    settings.client_timeout = Duration::from_millis(300);
    let proxy = Proxy::start(settings).await;

    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(STALLED_BODY).await.unwrap();
    let mut answer = Vec::new();
    // Answered, and the connection closed: its body was not read to its end.
    tokio::time::timeout(PATIENCE, conn.read_to_end(&mut answer))
        .await
        .expect("the server answers and closes a stalled body")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.to_ascii_lowercase().contains("connection: close"), "{text}");
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let e = assert_openai_error(&body);
    assert_eq!(e["code"], "request_body_timeout", "{e}");
    assert!(e["message"].as_str().unwrap().contains("CLIENT_TIMEOUT"), "{e}");

    let entry = proxy.only_entry().await;
    assert_entry(&entry, 408, "invalid_request_error");
    assert!(entry.entry.error_message.unwrap().contains("CLIENT_TIMEOUT"));
    assert!(mock.requests().is_empty());
    serves_next(&proxy, &mock).await;
}

#[tokio::test]
async fn a_body_that_keeps_coming_slowly_is_not_cut_by_the_client_timeout() {
    let mock = MockUpstream::always(Reply::json(200, &completion("ok"))).await;
    let mut settings = openai_settings(&mock);
    settings.client_timeout = Duration::from_millis(400);
    let proxy = Proxy::start(settings).await;

    // Longer than the client timeout in all, never silent for as long.
    let body = chat_request("a", false).to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    for piece in body.as_bytes().chunks(body.len().div_ceil(6)) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        conn.write_all(piece).await.unwrap();
    }
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, conn.read_to_end(&mut answer)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(proxy.only_entry().await.entry.status, 200);
}

#[tokio::test]
async fn clients_still_sending_their_bodies_hold_no_place_under_the_concurrency_limit() {
    let mock = MockUpstream::always(Reply::json(200, &completion("ok"))).await;
    let mut settings = openai_settings(&mock);
    settings.concurrency_limit = 1;
    let proxy = Proxy::start(settings).await;

    // Two clients that send their heads and then nothing (for less than any timeout).
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
        conn.write_all(STALLED_BODY).await.unwrap();
        stalled.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ok = chat(&proxy, false).await;
    assert_eq!(ok.status, 200, "not locked out by bodies still on their way: {}", ok.text());
    drop(stalled);
    // The two that left are recorded as such (499); the served one as 200.
    let mut statuses: Vec<u16> = proxy.entries(3).await.iter().map(|e| e.entry.status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 499, 499]);
}

// ---------------------------------------------------------------------------------------
// Bad client input.
// ---------------------------------------------------------------------------------------

async fn post_bytes(proxy: &Proxy, body: &[u8]) -> HttpResponse {
    let mut req = request(Method::POST, "/v1/chat/completions", Bytes::copy_from_slice(body));
    req.headers_mut().insert("content-type", "application/json".parse().unwrap());
    send(proxy.addr, req).await
}

#[tokio::test]
async fn malformed_requests_are_4xx_naming_the_field() {
    // Anthropic: the translator checks what OpenAI itself would check (an OpenAI upstream
    // gets such requests as they are and its 400 reaches the client).
    let mock = MockUpstream::always(Reply::json(200, &completion("ok"))).await;
    let mut settings = Settings::mock_defaults();
    settings.platform = uniproxy_config::Platform::Anthropic;
    settings.base_url = Some(mock.url());
    settings.actual_name = "claude-sonnet-4-5".to_owned();
    let proxy = Proxy::start(settings).await;

    let user = json!({"role": "user", "content": "hi"});
    let call = |args: &str| json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": args}}]});
    let cases: Vec<(Value, &str)> = vec![
        (json!({"model": "a", "messages": [user], "temperature": "hot"}), "temperature"),
        (
            json!({"model": "a", "messages": [{"role": "user", "content": 5}]}),
            "messages[0].content",
        ),
        (json!({"model": 7, "messages": [user]}), "model"),
        (
            json!({"model": "a", "messages": [{"role": "wizard", "content": "hi"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "a", "messages": [user, {"role": "tool", "tool_call_id": "call_9", "content": "42"}]}),
            "messages[1].tool_call_id",
        ),
        (
            json!({"model": "a", "messages": [user, call("{not json"), {"role": "tool", "tool_call_id": "call_1", "content": "42"}]}),
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            json!({"model": "a", "messages": [user, call("[1,2]"), {"role": "tool", "tool_call_id": "call_1", "content": "42"}]}),
            "messages[1].tool_calls[0].function.arguments",
        ),
    ];
    for (body, param) in &cases {
        let e = expect_error(&proxy.post("/v1/chat/completions", body).await, 400);
        assert_eq!(e["param"], *param, "{body}: {e}");
        assert_eq!(e["type"], "invalid_request_error");
    }
    // Non-UTF-8 bytes inside a JSON string.
    let e = expect_error(
        &post_bytes(
            &proxy,
            b"{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"caf\xe9\"}]}",
        )
        .await,
        400,
    );
    assert_eq!(e["code"], "invalid_json");
    assert!(mock.requests().is_empty(), "nothing malformed goes upstream");
    let entries = proxy.entries(cases.len() + 1).await;
    assert!(entries.iter().all(|e| e.entry.status == 400), "every bad request is logged");
    // Filed under the model each asked for, where the body says it plainly (not `7`).
    let models: Vec<&str> = entries.iter().map(|e| e.entry.client_model.as_str()).collect();
    assert_eq!(models, ["a", "a", "", "a", "a", "a", "a", "a"]);
    assert_eq!(proxy.get("/health").await.status, 200);
}

/// Sends a head announcing a 100 MB body (or a chunked one), then up to 100 MB of body in
/// 1 MiB pieces while reading the answer; returns the answer and how much body went out.
async fn send_100_mb(proxy: &Proxy, chunked: bool) -> (String, usize) {
    const TOTAL: usize = 100 << 20;
    let conn = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut rd, mut wr) = conn.into_split();
    let framing = if chunked {
        "transfer-encoding: chunked".to_owned()
    } else {
        format!("content-length: {TOTAL}")
    };
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n{framing}\r\n\r\n"
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        let piece = vec![b' '; 1 << 20];
        let mut sent = 0;
        while sent < TOTAL {
            let r = if chunked {
                let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
                framed.extend_from_slice(&piece);
                framed.extend_from_slice(b"\r\n");
                wr.write_all(&framed).await
            } else {
                wr.write_all(&piece).await
            };
            if r.is_err() {
                break;
            }
            sent += piece.len();
        }
        sent
    });
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    // Read until the head and the whole small body are in; a reset after that is fine.
    let _ = tokio::time::timeout(PATIENCE, async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    drop(rd);
    writer.abort();
    let sent = writer.await.unwrap_or(TOTAL);
    (String::from_utf8_lossy(&answer).into_owned(), sent)
}

#[tokio::test]
async fn body_of_100_mb_is_413_early_and_the_proxy_carries_on() {
    let mock = MockUpstream::always(Reply::json(200, &completion("ok"))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    for chunked in [false, true] {
        let started = Instant::now();
        let (answer, _) = send_100_mb(&proxy, chunked).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "chunked={chunked}: {answer}");
        assert!(answer.contains("MAX_BODY_SIZE"), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }
    serves_next(&proxy, &mock).await;
    let statuses: Vec<u16> = proxy.entries(3).await.iter().map(|e| e.entry.status).collect();
    assert_eq!(statuses, [413, 413, 200]);
}

// ---------------------------------------------------------------------------------------
// Keys never leak; every request's content lands in the store and the log file.
// ---------------------------------------------------------------------------------------

const PROXY_KEY: &str = "pk-PROXYKEY-7f3a9c1e";
const UPSTREAM_SECRET: &str = "sk-UPSTREAMKEY-b84d20e6";

/// Answers by what the request says: a failure, a stream, or a completion.
async fn content_upstream() -> MockUpstream {
    MockUpstream::start(|r| {
        let body = String::from_utf8_lossy(&r.body).into_owned();
        if body.contains("please fail") {
            Reply::json(
                400,
                &openai_error(
                    "UPSTREAM-ERR-E3 your request was refused",
                    "invalid_request_error",
                    None,
                ),
            )
        } else if body.contains("STREAM-FAILS") {
            // A stream that fails part way with an error event quoting the upstream key, as
            // an upstream's auth layer may.
            let mut steps: Vec<Step> = text_stream(&["A5"]).into_iter().take(2).collect();
            steps.push(Step::event(&openai_error(
                &format!("UPSTREAM-ERR-E6 the key {UPSTREAM_SECRET} was revoked"),
                "invalid_request_error",
                None,
            )));
            Reply::sse(steps)
        } else if body.contains("PARTIAL") {
            let mut steps: Vec<Step> = text_stream(&["PARTIAL-A4"]).into_iter().take(2).collect();
            steps.push(Step::Sleep(Duration::from_secs(30)));
            Reply::sse(steps)
        } else if body.contains("\"stream\":true") {
            Reply::sse(text_stream(&["STREAM", "ED-A2"]))
        } else {
            Reply::json(200, &completion("ANSWER-A1"))
        }
    })
    .await
}

fn ask(text: &str, stream: bool) -> Value {
    let mut r = chat_request("a", stream);
    r["messages"][1]["content"] = json!(text);
    r
}

fn with_key(
    mut r: http::Request<http_body_util::Full<Bytes>>,
    key: &str,
) -> http::Request<http_body_util::Full<Bytes>> {
    r.headers_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

#[tokio::test]
async fn no_key_reaches_a_response_the_log_file_or_the_database() {
    let mock = content_upstream().await;
    let mut settings = openai_settings(&mock);
    settings.api_key = uniproxy_config::Secret::new(UPSTREAM_SECRET);
    settings.proxy_api_keys = vec![uniproxy_config::Secret::new(PROXY_KEY)];
    settings.log_raw_chunks = true;
    let mut proxy = Proxy::start_logged(settings).await;

    let path = "/v1/chat/completions";
    let mut responses = Vec::new();
    for (body, stream) in
        [("MARKER-Q1", false), ("MARKER-Q2", true), ("please fail", false), ("STREAM-FAILS", true)]
    {
        responses.push(
            send(proxy.addr, with_key(post_request(path, &ask(body, stream)), PROXY_KEY)).await,
        );
    }
    let mut bad = request(Method::POST, path, Bytes::from_static(b"{\"model\":"));
    bad.headers_mut().insert("content-type", "application/json".parse().unwrap());
    responses.push(send(proxy.addr, with_key(bad, PROXY_KEY)).await);
    // The upstream key sent by mistake, and a wrong key: 401.
    responses.push(
        send(proxy.addr, with_key(post_request(path, &ask("x", false)), UPSTREAM_SECRET)).await,
    );
    responses.push(send(proxy.addr, with_key(post_request(path, &ask("x", false)), "wrong")).await);
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 400, 200, 400, 401, 401]);
    assert!(responses[3].text().contains("UPSTREAM-ERR-E6"), "{}", responses[3].text());
    for r in &responses {
        let all = format!("{:?}{}", r.headers, r.text());
        assert!(!all.contains(PROXY_KEY) && !all.contains(UPSTREAM_SECRET), "{all}");
    }
    assert!(mock.requests().iter().all(|r| {
        !format!("{:?}{}", r.headers, String::from_utf8_lossy(&r.body)).contains(PROXY_KEY)
    }));

    let entries = proxy.entries(7).await;
    let expected = uniproxy::record::key_hash(PROXY_KEY);
    for e in &entries[..5] {
        let hash = e.entry.key_hash.as_deref().expect("a key hash");
        assert_eq!(hash, expected);
        assert!(!PROXY_KEY.contains(hash) && hash.len() < PROXY_KEY.len());
    }
    // The failed stream's raw frames are kept (LOG_RAW_CHUNKS), its error event with them,
    // the key taken out.
    let raw = entries
        .iter()
        .find_map(|e| e.entry.raw_chunks.as_deref().filter(|r| r.contains("UPSTREAM-ERR-E6")))
        .expect("the failed stream's raw frames");
    assert!(raw.contains("the key [redacted] was revoked"), "{raw}");
    // The refused ones are recorded with no hash of the key they sent (the upstream's, once).
    for e in &entries[5..] {
        assert_eq!((e.entry.status, e.entry.key_hash.as_deref()), (401, None), "{e:#?}");
    }
    proxy.finish().await;

    // Every text and blob of every row of every table.
    let db = rusqlite::Connection::open_with_flags(
        proxy.database_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(tables.len() >= 2, "{tables:?}");
    let mut cells = 0;
    for table in &tables {
        let mut stmt = db.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..columns {
                let bytes = match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => b,
                    _ => continue,
                };
                cells += 1;
                let text = String::from_utf8_lossy(bytes);
                assert!(!text.contains(PROXY_KEY), "{table}: {text}");
                assert!(!text.contains(UPSTREAM_SECRET), "{table}: {text}");
            }
        }
    }
    assert!(cells > 20, "the dump read the rows ({cells} cells)");

    // The log file, and every other file the proxy wrote (WAL, spill), byte for byte.
    let log = std::fs::read_to_string(proxy.log_file_path()).unwrap();
    assert!(log.contains("MARKER-Q1"), "the log file has the content lines: {log}");
    let dir = proxy.database_path().parent().unwrap();
    for file in std::fs::read_dir(dir).unwrap() {
        let path = file.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        for key in [PROXY_KEY, UPSTREAM_SECRET] {
            assert!(
                !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                "{key} in {}",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn content_answers_and_errors_land_in_the_store_and_the_log_file() {
    let mock = content_upstream().await;
    let mut proxy = Proxy::start_logged(openai_settings(&mock)).await;
    let path = "/v1/chat/completions";
    assert_eq!(proxy.post(path, &ask("MARKER-Q1", false)).await.status, 200);
    let streamed = proxy.post(path, &ask("MARKER-Q2", true)).await;
    assert!(streamed.text().contains("ED-A2"));
    expect_error(&proxy.post(path, &ask("please fail MARKER-Q3", false)).await, 400);

    // A client that leaves mid-stream: 499 and what had arrived.
    let mut s = open_stream(proxy.addr, post_request(path, &ask("PARTIAL MARKER-Q4", true))).await;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("PARTIAL-A4") {
        seen.extend_from_slice(&s.next_chunk().await.expect("more of the stream").0);
    }
    drop(s);

    let entries = proxy.entries(4).await;
    let find = |marker: &str| {
        entries
            .iter()
            .find(|e| e.entry.client_request.contains(marker))
            .unwrap_or_else(|| panic!("no entry for {marker}: {entries:#?}"))
    };
    let e1 = &find("MARKER-Q1").entry;
    assert_eq!((e1.status, e1.stream), (200, false));
    assert!(e1.response.contains("ANSWER-A1"), "{}", e1.response);
    assert!(e1.upstream_request.contains("MARKER-Q1"));
    let e2 = &find("MARKER-Q2").entry;
    assert_eq!((e2.status, e2.stream), (200, true));
    assert!(e2.response.contains("STREAMED-A2"), "the assembled answer: {}", e2.response);
    let e3 = &find("MARKER-Q3").entry;
    assert_eq!(e3.status, 400);
    assert!(e3.error_message.as_deref().unwrap().contains("UPSTREAM-ERR-E3"), "{e3:#?}");
    assert!(e3.response.contains("UPSTREAM-ERR-E3"));
    let e4 = &find("MARKER-Q4").entry;
    assert_eq!(e4.status, 499, "{e4:#?}");
    assert_eq!(e4.error_type.as_deref(), Some("client_closed"));
    assert!(e4.response.contains("PARTIAL-A4"), "what had arrived: {}", e4.response);

    proxy.finish().await;
    let lines: Vec<Value> = std::fs::read_to_string(proxy.log_file_path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let content = |marker: &str| {
        lines
            .iter()
            .find(|l| {
                l["msg"] == "request content"
                    && l["client_request"]["messages"][1]["content"]
                        .as_str()
                        .is_some_and(|c| c.contains(marker))
            })
            .unwrap_or_else(|| panic!("no content line for {marker}"))
    };
    // The bodies are embedded as the JSON they are, not as strings.
    let q1 = content("MARKER-Q1");
    assert_eq!(q1["upstream_changes"]["model"], ACTUAL_NAME, "{q1}");
    assert!(
        q1["response"]["choices"][0]["message"]["content"].as_str().unwrap().contains("ANSWER-A1")
    );
    assert!(content("MARKER-Q2")["response"].to_string().contains("STREAMED-A2"));
    assert!(
        content("MARKER-Q3")["response"]["error"]["message"]
            .to_string()
            .contains("UPSTREAM-ERR-E3")
    );
    assert!(content("MARKER-Q4")["response"].to_string().contains("PARTIAL-A4"));
    let summaries: Vec<u64> = lines
        .iter()
        .filter(|l| l["msg"] == "request")
        .filter_map(|l| l["status"].as_u64())
        .collect();
    for status in [200, 400, 499] {
        assert!(summaries.contains(&status), "{summaries:?}");
    }
}

/// Makes the database at `db` unwritable for the running proxy, as tests running as root can:
/// the file and its `-wal` and `-shm` removed, and a folder in its place (the writer reopens
/// the path and fails). Removing the folder makes the path usable again.
fn make_unwritable(db: &std::path::Path) {
    for side in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_owned();
        p.push(side);
        let _ = std::fs::remove_file(p);
    }
    std::fs::create_dir(db).unwrap();
}

/// A proxy whose log store has a small queue (four entries, batches of one), so that it fills
/// within a few requests, and a writer that retries for `shutdown_timeout` at shutdown.
async fn proxy_with_a_small_store_queue(mock: &MockUpstream, shutdown_timeout: Duration) -> Proxy {
    small_store_queue(openai_settings(mock), shutdown_timeout).await
}

async fn small_store_queue(settings: uniproxy_config::Settings, shutdown: Duration) -> Proxy {
    let writer = uniproxy_logstore::WriterOptions {
        queue_capacity: 4,
        batch_max: 1,
        shutdown_timeout: shutdown,
        ..uniproxy_logstore::WriterOptions::default()
    };
    let launch = Launch { json_log: true, writer: Some(writer), ..Launch::default() };
    Proxy::launch(settings, launch).await
}

#[tokio::test]
async fn a_stranger_is_refused_at_once_while_the_log_store_can_keep_nothing() {
    let mock = MockUpstream::always(Reply::json(200, &completion("ANSWERED"))).await;
    let mut settings = openai_settings(&mock);
    settings.proxy_api_keys = vec![uniproxy_config::Secret::new("client-key")];
    let proxy = small_store_queue(settings, Duration::from_secs(10)).await;
    fill_the_disk(&proxy);
    let ask = |key: &'static str| {
        let mut r = post_request("/v1/chat/completions", &chat_request("a", false));
        r.headers_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
        send(proxy.addr, r)
    };
    let mut answered = 0;
    while ask("client-key").await.status == 200 {
        answered += 1;
        assert!(answered < 50, "never turned away");
    }
    // Its record would wait for room that does not come: the 401 comes at once, counted.
    let started = Instant::now();
    assert_eq!(ask("wrong-key").await.status, 401);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    let mut scrape = request(Method::GET, "/metrics", Bytes::new());
    scrape.headers_mut().insert("authorization", "Bearer client-key".parse().unwrap());
    let metrics = send(proxy.addr, scrape).await.text();
    assert!(metrics.contains(r#"status="401",stream="false"} 1"#), "{metrics}");
    // Its latency is none of the upstream's: the histogram counts the answered ones and the
    // one turned away for the store (it asked no upstream either, so it is left out too).
    let count = format!(
        r#"uniproxy_upstream_latency_seconds_count{{platform="openai",stream="false"}} {answered}"#
    );
    assert!(metrics.lines().any(|l| l == count), "no {count:?} in\n{metrics}");
}

/// "The disk is full": nothing can be written where the database and the spill file go (a
/// folder at each path).
fn fill_the_disk(proxy: &Proxy) {
    make_unwritable(proxy.database_path());
    std::fs::create_dir(proxy.spill_path()).unwrap();
}

#[tokio::test]
async fn a_full_disk_turns_chat_requests_away_instead_of_holding_them_and_loses_no_record() {
    let mock = MockUpstream::always(Reply::json(200, &completion("ANSWERED"))).await;
    let mut proxy = proxy_with_a_small_store_queue(&mock, Duration::from_secs(10)).await;
    let db = proxy.database_path().to_owned();
    fill_the_disk(&proxy);

    // Answered while the queues take the records; then turned away before the upstream.
    let path = "/v1/chat/completions";
    let mut answered = 0;
    let refused = loop {
        let r = proxy.post(path, &chat_request("a", false)).await;
        match r.status {
            200 => answered += 1,
            503 => break r,
            other => panic!("{other}: {}", r.text()),
        }
        assert!(answered < 50, "never turned away");
    };
    assert!(answered >= 4, "the queue took {answered}");
    let e = assert_openai_error(&refused.json()).clone();
    assert_eq!(e["code"], "log_store_unavailable", "{e}");
    assert_eq!(e["type"], "server_error");
    assert_eq!(mock.requests().len(), answered, "the upstream was not asked");
    let health = proxy.get("/health").await.json();
    assert_eq!(health["log_store"]["state"], "stalled", "{health}");
    let metrics = proxy.get("/metrics").await.text();
    for line in ["uniproxy_log_store_stalled 1", "uniproxy_log_store_degraded 1"] {
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in\n{metrics}");
    }
    // Long enough for the state to be logged (it is read every second).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Room again: what waited is written, and requests are taken again.
    std::fs::remove_dir(&db).unwrap();
    std::fs::remove_dir(proxy.spill_path()).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r = proxy.post(path, &chat_request("a", false)).await;
        if r.status == 200 {
            answered += 1;
            break;
        }
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(Instant::now() < deadline, "still turned away");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let entries = proxy.entries(answered).await;
    assert_eq!(entries.len(), answered, "every answered request, and no refused one");
    let metrics = proxy.get("/metrics").await.text();
    assert!(metrics.lines().any(|l| l == "uniproxy_log_store_stalled 0"), "{metrics}");
    assert!(entries.iter().all(|e| e.entry.status == 200));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.finish().await;
    let log = std::fs::read_to_string(proxy.log_file_path()).unwrap();
    assert!(log.contains("can write neither its database nor its spill file"), "{log}");
    assert!(log.contains("the log store's database is written again"), "{log}");
}

#[tokio::test]
async fn a_shutdown_on_a_full_disk_ends_and_logs_the_records_it_could_not_store() {
    // Slow answers, so that requests taken before the store got stuck end after it did.
    let reply = Reply::json(200, &completion("ANSWERED")).after(Duration::from_millis(300));
    let mock = MockUpstream::always(reply).await;
    let mut proxy = proxy_with_a_small_store_queue(&mock, Duration::from_millis(300)).await;
    fill_the_disk(&proxy);
    // Twelve at once: the store's queue takes four and the batch in hand one, the request
    // log's thread waits on it with the sixth, and the rest wait in the request log's queue.
    let requests: Vec<_> = (0..12)
        .map(|_| {
            let request = post_request("/v1/chat/completions", &chat_request("a", false));
            tokio::spawn(send(proxy.addr, request))
        })
        .collect();
    let deadline = Instant::now() + PATIENCE;
    while proxy.get("/health").await.json()["log_store"]["state"] != "stalled" {
        assert!(Instant::now() < deadline, "the store did not stall");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The disk stays full. SIGTERM: the proxy stops within its bounds instead of waiting
    // for room for good, and the records it could not keep are in its log, whole.
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), proxy.finish()).await.expect("shutdown hung");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    for r in requests {
        assert_eq!(r.await.unwrap().status, 200, "taken before the store stalled");
    }
    let log = std::fs::read_to_string(proxy.log_file_path()).unwrap();
    let mut ids: Vec<String> = log
        .lines()
        .filter(|l| l.contains(r#""msg":"log entry not stored""#))
        .map(|l| {
            let line: Value = serde_json::from_str(l).unwrap();
            let entry: Value = serde_json::from_str(line["entry"].as_str().unwrap()).unwrap();
            entry["request_id"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12, "each answered request's record, once:\n{log}");
}

#[tokio::test]
async fn entries_spilled_while_the_database_failed_are_loaded_once_it_is_written_again() {
    let mock = MockUpstream::always(Reply::json(200, &completion("ANSWERED"))).await;
    let launch = Launch { json_log: true, ..Launch::default() };
    let mut proxy = Proxy::launch(openai_settings(&mock), launch).await;
    let spill = proxy.spill_path().to_owned();
    // The database becomes unwritable (a directory where its file was); the spill works.
    let db = proxy.database_path().to_owned();
    make_unwritable(&db);
    for _ in 0..3 {
        assert_eq!(proxy.post("/v1/chat/completions", &chat_request("a", false)).await.status, 200);
    }
    let deadline = Instant::now() + PATIENCE;
    while proxy.get("/health").await.json()["log_store"]["spilled"] != 3 {
        assert!(Instant::now() < deadline, "not spilled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(std::fs::read_to_string(&spill).unwrap().lines().count(), 3);
    // Logged within the watch's second.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The database back: the next entry is written there, and within the watch's second the
    // spilled ones are loaded beside it and the spill file is gone.
    std::fs::remove_dir(&db).unwrap();
    assert_eq!(proxy.post("/v1/chat/completions", &chat_request("a", false)).await.status, 200);
    // The writer makes the database again with its next batch.
    while proxy.get("/health").await.json()["log_store"]["written"] != 1 {
        assert!(Instant::now() < deadline + PATIENCE, "not written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let entries = proxy.entries(4).await;
    assert_eq!(entries.len(), 4);
    assert!(entries.iter().all(|e| e.entry.response.contains("ANSWERED")));
    let ids: std::collections::HashSet<_> = entries.iter().map(|e| &e.entry.request_id).collect();
    assert_eq!(ids.len(), 4, "each request once");
    // The spill file is moved aside, loaded, then removed.
    let folder = spill.parent().unwrap();
    while !spill_files(folder).is_empty() {
        let left = spill_files(folder);
        assert!(Instant::now() < deadline + PATIENCE, "still there: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.finish().await;
    let log = std::fs::read_to_string(proxy.log_file_path()).unwrap();
    assert!(log.contains("cannot write its database: records go to the spill file"), "{log}");
    assert!(log.contains("the log store's database is written again"), "{log}");
    assert!(
        log.contains("loaded the log entries spilled while the database could not be written"),
        "{log}"
    );
    assert!(log.contains(r#""already_stored":0,"stored":3"#), "{log}");
}

#[tokio::test]
async fn a_whole_answer_its_http2_client_does_not_read_goes_with_the_idle_connection() {
    // Over HTTP/2 an unread answer waits in h2's flow control, not in the socket, so
    // CLIENT_TIMEOUT does not see it; hyper takes the body whole, the stream stops counting
    // as open, and the idle limit ends the connection with the answer it held.
    let answer = completion(&"x".repeat(32 << 20));
    let mock = MockUpstream::always(Reply::json(200, &answer)).await;
    let idle = Duration::from_millis(400);
    let launch = Launch { header_read_timeout: Some(idle), ..Launch::default() };
    let proxy = Proxy::launch(openai_settings(&mock), launch).await;
    let (mut sender, conn) = h2c(&proxy).await;
    let mut request = post_request("/v1/chat/completions", &chat_request("a", false));
    *request.uri_mut() = "http://127.0.0.1/v1/chat/completions".parse().unwrap();
    let answer = sender.send_request(request).await.unwrap();
    assert_eq!(answer.status(), 200);
    // Never read: the proxy closes the connection once idle.
    tokio::time::timeout(PATIENCE, conn).await.expect("the connection is closed").unwrap();
    drop(answer);
}

/// LOG_MAX_ROWS holds while the proxy runs, not only once an hour: a flood of requests with
/// a wrong key (whose entries any client can make) grew the log without bound until the next
/// hourly prune.
#[tokio::test]
async fn a_flood_of_refused_requests_is_pruned_to_log_max_rows_within_seconds() {
    let mock = MockUpstream::always(Reply::json(200, &completion("x"))).await;
    let mut settings = openai_settings(&mock);
    settings.proxy_api_keys = vec![uniproxy_config::Secret::new("proxy-key-1")];
    settings.log_max_rows = 5;
    let proxy = Proxy::start(settings).await;
    for _ in 0..40 {
        let mut r = post_request("/v1/chat/completions", &chat_request("a", false));
        r.headers_mut().insert("authorization", "Bearer wrong".parse().unwrap());
        assert_eq!(send(proxy.addr, r).await.status, 401);
    }
    let deadline = Instant::now() + PATIENCE;
    while proxy.get("/health").await.json()["log_store"]["written"] != 40 {
        assert!(Instant::now() < deadline, "not written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store = proxy.store();
    loop {
        let count = store.count().unwrap();
        if count <= 5 {
            break;
        }
        assert!(Instant::now() < deadline, "the store holds {count} entries, LOG_MAX_ROWS is 5");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The entries kept are whole rows of the refused requests.
    let kept = all_entries(&store);
    assert_eq!(kept.len(), 5);
    assert!(kept.iter().all(|e| e.entry.status == 401));
    assert!(mock.requests().is_empty());
}

/// Opens an h2c connection and starts a chat request on stream 1 whose body promises
/// 1,000 bytes and sends its first 14: the request is in the proxy's hands, its body not.
async fn h2c_request_cut_mid_body(proxy: &Proxy) -> TcpStream {
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    tcp.write_all(&h2_frame(4, 0, 0, &[])).await.unwrap();
    let mut head = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/v1/chat/completions"),
        (":authority", "127.0.0.1"),
        ("content-type", "application/json"),
        ("content-length", "1000"),
    ] {
        // A literal header field without indexing, new name (RFC 7541, 6.2.2).
        head.push(0);
        head.push(u8::try_from(name.len()).unwrap());
        head.extend_from_slice(name.as_bytes());
        head.push(u8::try_from(value.len()).unwrap());
        head.extend_from_slice(value.as_bytes());
    }
    // HEADERS with END_HEADERS, then DATA without END_STREAM.
    tcp.write_all(&h2_frame(1, 0x4, 1, &head)).await.unwrap();
    tcp.write_all(&h2_frame(0, 0, 1, b"{\"model\": \"a\"")).await.unwrap();
    tcp
}

/// Reads the proxy's SETTINGS and its acknowledgement of the client's: the proxy reads the
/// connection, so the request's frames, sent before, are in its hands.
async fn settle(tcp: &mut TcpStream) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    // SETTINGS (the proxy's) and the acknowledgement of ours.
    while h2_frames(&got).iter().filter(|(kind, _)| *kind == 4).count() < 2 {
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "the proxy closed the connection: {:?}", h2_frames(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn an_http2_client_that_resets_its_stream_mid_body_is_recorded_as_499() {
    // An h2 client that gives up on a request while sending its body (RST_STREAM CANCEL, as
    // an HTTP/2 client cancels a request) has left, as an HTTP/1.1 client that hangs up
    // mid-body has: it was recorded as a 400 "could not read the request body".
    let mock = MockUpstream::always(Reply::json(200, &completion("ok"))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let mut tcp = h2c_request_cut_mid_body(&proxy).await;
    settle(&mut tcp).await;
    tcp.write_all(&h2_frame(3, 0, 1, &8u32.to_be_bytes())).await.unwrap();
    let left = proxy.only_entry().await.entry;
    assert_eq!(left.status, 499, "{left:#?}");
    assert_eq!(left.error_type.as_deref(), Some("client_closed"), "{left:#?}");
    assert!(mock.requests().is_empty(), "nothing went upstream");
    drop(tcp);
    serves_next(&proxy, &mock).await;
}

#[tokio::test]
async fn an_http2_client_that_hangs_up_mid_body_is_recorded_as_499() {
    // The connection closes with the body a tenth sent: h2 ends the request's body with a
    // "broken pipe" error of its own, which was recorded as a 400.
    let mock = MockUpstream::always(Reply::json(200, &completion("ok"))).await;
    let proxy = Proxy::start(openai_settings(&mock)).await;
    let mut tcp = h2c_request_cut_mid_body(&proxy).await;
    settle(&mut tcp).await;
    drop(tcp);
    let left = proxy.only_entry().await.entry;
    assert_eq!(left.status, 499, "{left:#?}");
    assert_eq!(left.error_type.as_deref(), Some("client_closed"), "{left:#?}");
    assert!(
        left.error_message.as_deref().is_some_and(|m| m.contains("before the whole body")),
        "{left:#?}"
    );
    serves_next(&proxy, &mock).await;
}
