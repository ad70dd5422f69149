//! The record of one request, written once after its response ends (like pingora's
//! `logging` phase): a summary line to stderr and the JSON log, the content to the JSON log,
//! and an entry in the log store.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use slog::{Logger, info, warn};
use uniproxy_wire::Usage;

/// Everything known about one request when it ends.
#[derive(Debug, Default)]
pub struct RequestRecord {
    /// The completion id given to the client.
    pub request_id: String,
    /// Unix milliseconds when the request arrived.
    pub received_ms: i64,
    /// Unix milliseconds when the first byte of the answer went to the client.
    pub first_byte_ms: Option<i64>,
    /// Unix milliseconds when the response ended.
    pub finished_ms: i64,
    /// The model the client asked for.
    pub client_model: String,
    /// The model the request was sent to.
    pub actual_model: String,
    /// The platform.
    pub platform: &'static str,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The status the client got (499: the client went away first).
    pub status: u16,
    /// The OpenAI error type, for failures.
    pub error_type: Option<String>,
    /// The error message and its causes, for failures.
    pub error_message: Option<String>,
    /// Token usage.
    pub usage: Option<Usage>,
    /// The body as the client sent it.
    pub client_request: Bytes,
    /// The body as it went upstream.
    pub upstream_request: Bytes,
    /// The answer as the client received it (for a stream, the assembled message).
    pub response: Bytes,
    /// The raw stream frames, when LOG_RAW_CHUNKS is on.
    pub raw_chunks: Option<Bytes>,
    /// The client's address.
    pub client_addr: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// The request headers with secrets redacted, as a JSON object.
    pub request_headers: String,
    /// Fields the translator left out.
    pub dropped_fields: Vec<String>,
    /// A short hash of the client's proxy key, to tell traffic apart by key.
    pub key_hash: Option<String>,
    /// How many times the upstream was tried.
    pub attempts: u32,
    /// Time spent in the proxy itself, upstream wait excluded.
    pub overhead: Duration,
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Headers whose values are secrets: never stored, never logged.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "x-goog-api-key",
    "cookie",
    "set-cookie",
];

/// The headers as a JSON object, with every secret header's value replaced by `[redacted]`.
pub fn redacted_headers(headers: &hyper::HeaderMap) -> String {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        let v = if SECRET_HEADERS.contains(&name.as_str()) {
            "[redacted]".to_owned()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        map.insert(name.as_str().to_owned(), serde_json::Value::String(v));
    }
    serde_json::Value::Object(map).to_string()
}

/// Where records go.
pub struct Recorder {
    log: Logger,
    log_bodies: bool,
}

impl Recorder {
    /// A recorder writing to `log`; `log_bodies` adds the content line to the JSON log.
    pub fn new(log: Logger, log_bodies: bool) -> Self {
        Recorder { log, log_bodies }
    }

    /// The log store's state, for `/health`.
    pub fn health(&self) -> serde_json::Value {
        serde_json::json!({ "state": "log_file_only" })
    }

    /// Writes the record.
    pub fn record(&self, r: RequestRecord) {
        let latency_ms = r.finished_ms - r.received_ms;
        let ttft_ms = r.first_byte_ms.map(|t| t - r.received_ms);
        let (prompt, completion) =
            r.usage.as_ref().map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
        let overhead_ms = r.overhead.as_secs_f64() * 1000.0;
        let line = |log: &Logger| {
            if r.status >= 500 || r.status == 499 {
                warn!(log, "request";
                    "id" => &r.request_id, "status" => r.status, "stream" => r.stream,
                    "client_model" => &r.client_model, "model" => &r.actual_model,
                    "platform" => r.platform, "latency_ms" => latency_ms, "ttft_ms" => ttft_ms,
                    "overhead_ms" => overhead_ms, "prompt_tokens" => prompt,
                    "completion_tokens" => completion, "attempts" => r.attempts,
                    "error" => r.error_message.as_deref());
            } else {
                info!(log, "request";
                    "id" => &r.request_id, "status" => r.status, "stream" => r.stream,
                    "client_model" => &r.client_model, "model" => &r.actual_model,
                    "platform" => r.platform, "latency_ms" => latency_ms, "ttft_ms" => ttft_ms,
                    "overhead_ms" => overhead_ms, "prompt_tokens" => prompt,
                    "completion_tokens" => completion, "attempts" => r.attempts,
                    "error" => r.error_message.as_deref());
            }
        };
        line(&self.log);
        if self.log_bodies {
            let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
            info!(self.log, # "content", "request content";
                "id" => &r.request_id,
                "client_request" => text(&r.client_request),
                "upstream_request" => text(&r.upstream_request),
                "response" => text(&r.response),
                "headers" => &r.request_headers,
                "client_addr" => r.client_addr.as_deref(),
                "user_agent" => r.user_agent.as_deref(),
                "dropped" => r.dropped_fields.join(","));
        }
    }
}
