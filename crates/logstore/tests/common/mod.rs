//! Shared builders for the store tests.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use uniproxy_logstore::{NewEntry, Usage};

/// 2023-11-14T22:13:20Z, a fixed "now" for every test.
pub const T0: i64 = 1_700_000_000_000;

/// A small, complete entry; `i` makes it unique.
pub fn entry(i: u64) -> NewEntry {
    let received = T0 + i64::try_from(i).unwrap() * 1_000;
    NewEntry {
        request_id: format!("chatcmpl-{i:06}"),
        received_ms: received,
        first_byte_ms: Some(received + 100),
        finished_ms: received + 500,
        client_model: "gpt-4o".into(),
        actual_model: "gpt-4o-2024-08-06".into(),
        platform: "openai".into(),
        stream: i.is_multiple_of(2),
        status: 200,
        error_type: None,
        error_message: None,
        usage: Usage {
            prompt_tokens: Some(10),
            completion_tokens: Some(5),
            total_tokens: Some(15),
            cached_tokens: None,
            reasoning_tokens: None,
        },
        client_request: format!(
            r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"question {i}"}}]}}"#
        ),
        upstream_request: format!(
            r#"{{"model":"gpt-4o-2024-08-06","messages":[{{"role":"user","content":"question {i}"}}]}}"#
        ),
        upstream_copies: Vec::new(),
        response: format!(
            r#"{{"id":"chatcmpl-{i:06}","choices":[{{"message":{{"role":"assistant","content":"answer {i}"}}}}]}}"#
        ),
        raw_chunks: None,
        client_addr: Some("127.0.0.1:5000".into()),
        user_agent: Some("test/1.0".into()),
        request_headers: r#"{"content-type":"application/json"}"#.into(),
        dropped_fields: Vec::new(),
        key_hash: Some("ab12cd".into()),
        attempts: 1,
    }
}

/// Polls `check` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    check()
}
