//! The data stored for one proxied request.

use serde::{Deserialize, Serialize};

use crate::{CopiedSpan, Headers};

/// Token counts reported by the upstream, each absent when it was not reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt (input) tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    /// Completion (output) tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// Total tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
    /// Prompt tokens served from the upstream's cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Reasoning tokens inside the completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
}

/// One request as the caller hands it to the store: plain data, public fields.
///
/// Times are unix milliseconds chosen by the caller; the store reads no clock.
/// Bodies are stored exactly as given. `request_headers` is a JSON dump that
/// goes through [`redact_headers`](crate::redact_headers) before it is stored,
/// unless [`HeadersBuilder`](crate::HeadersBuilder) wrote it redacted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEntry {
    /// The caller's id for the request (a `chatcmpl-…` id or a uuid).
    pub request_id: String,
    /// When the request arrived.
    pub received_ms: i64,
    /// When the first response byte went to the client, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_ms: Option<i64>,
    /// When the response finished (or the client went away).
    pub finished_ms: i64,
    /// The model the client asked for.
    pub client_model: String,
    /// The model the upstream was asked for.
    pub actual_model: String,
    /// The upstream platform (`openai`, `anthropic`, …).
    pub platform: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The HTTP status the client got; 499 means the client closed the connection.
    pub status: u16,
    /// A short error class, if the request failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// The error detail, if the request failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Token counts.
    #[serde(default)]
    pub usage: Usage,
    /// The body as the client sent it.
    pub client_request: String,
    /// The body as it was sent upstream.
    pub upstream_request: String,
    /// Runs of `upstream_request` that are bytes of `client_request`: the store keeps the
    /// upstream request as those runs and the bytes between them, and gives it back whole.
    /// Empty, or spans that do not hold (see [`CopiedSpan`]), and it is stored whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream_copies: Vec<CopiedSpan>,
    /// The body as the client received it; for a stream, the assembled message JSON.
    pub response: String,
    /// The raw stream chunks, when the server is configured to keep them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_chunks: Option<String>,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    /// The client's `User-Agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The request headers as a JSON object; the store redacts credentials before writing.
    pub request_headers: Headers,
    /// Request fields a translator dropped because the upstream cannot take them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_fields: Vec<String>,
    /// A short hash of the client's key, to tell callers apart without storing the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_hash: Option<String>,
    /// How many times the upstream was tried.
    pub attempts: u32,
}

impl NewEntry {
    /// End-to-end latency, `finished_ms - received_ms`.
    #[must_use]
    pub fn latency_ms(&self) -> i64 {
        self.finished_ms.saturating_sub(self.received_ms)
    }

    /// Time to first byte, `first_byte_ms - received_ms`.
    #[must_use]
    pub fn ttft_ms(&self) -> Option<i64> {
        self.first_byte_ms.map(|t| t.saturating_sub(self.received_ms))
    }

    /// Bytes of body text this entry holds (headers, bodies and raw chunks), the upstream
    /// request whole.
    #[must_use]
    pub fn body_bytes(&self) -> u64 {
        let len = self.request_headers.len()
            + self.client_request.len()
            + self.upstream_request.len()
            + self.response.len()
            + self.raw_chunks.as_ref().map_or(0, String::len);
        u64::try_from(len).unwrap_or(u64::MAX)
    }
}

/// A stored entry with everything, bodies included (see [`LogStore::get`](crate::LogStore::get)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The store's row id; newer entries have larger ids.
    pub id: i64,
    /// `finished_ms - received_ms`.
    pub latency_ms: i64,
    /// `first_byte_ms - received_ms`, if a first byte was sent.
    pub ttft_ms: Option<i64>,
    /// The data as stored (headers redacted).
    #[serde(flatten)]
    pub entry: NewEntry,
}

/// The small metadata of one entry, as listed (no bodies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntrySummary {
    /// The store's row id.
    pub id: i64,
    /// The caller's id for the request.
    pub request_id: String,
    /// When the request arrived.
    pub received_ms: i64,
    /// When the first response byte went out.
    pub first_byte_ms: Option<i64>,
    /// When the response finished.
    pub finished_ms: i64,
    /// `finished_ms - received_ms`.
    pub latency_ms: i64,
    /// `first_byte_ms - received_ms`.
    pub ttft_ms: Option<i64>,
    /// The model the client asked for.
    pub client_model: String,
    /// The model the upstream was asked for.
    pub actual_model: String,
    /// The upstream platform.
    pub platform: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The HTTP status the client got.
    pub status: u16,
    /// A short error class, if the request failed.
    pub error_type: Option<String>,
    /// The error detail, if the request failed.
    pub error_message: Option<String>,
    /// Token counts.
    pub usage: Usage,
    /// How many times the upstream was tried.
    pub attempts: u32,
    /// A short hash of the client's key.
    pub key_hash: Option<String>,
    /// The client's address.
    pub client_addr: Option<String>,
    /// Bytes of body text stored for this entry.
    pub body_bytes: u64,
}
