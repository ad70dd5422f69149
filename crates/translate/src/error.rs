use std::borrow::Cow;

use serde::Deserialize;
use uniproxy_wire::ErrorResponse;

use crate::ProviderKind;

/// Why a request or an answer could not be translated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TranslateError {
    /// The request uses something the platform cannot express.
    #[error("`{field}` is not supported by {provider}")]
    Unsupported {
        /// The platform.
        provider: ProviderKind,
        /// The request field, as a JSON path.
        field: String,
    },
    /// The request is ill-formed in a way the wire types cannot see.
    #[error("invalid request at `{param}`: {reason}")]
    InvalidRequest {
        /// The request field, as a JSON path (`messages[3].tool_calls[0].function.arguments`).
        param: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Tool call arguments in the conversation are not a JSON object.
    #[error("invalid tool call arguments at `{param}`")]
    InvalidToolArguments {
        /// The request field, as a JSON path.
        param: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The provider's configuration cannot work for the platform: a setting the proxy's
    /// operator gave, not anything of the request. A server answers it as its own fault (500).
    #[error("the configuration cannot work: `{setting}` {reason}")]
    Config {
        /// The setting, by its environment name (`BASE_URL`, `API_KEY`).
        setting: &'static str,
        /// What is wrong with its value (never the value: it may be a key).
        reason: &'static str,
    },
    /// The upstream answered with an error; its status and message are kept.
    #[error("{}", upstream_message(*.status, &.error.error.message))]
    Upstream {
        /// The upstream's HTTP status.
        status: u16,
        /// The upstream's error in the OpenAI shape.
        error: Box<ErrorResponse>,
    },
    /// The upstream answered, but with nothing a client can use: no candidate, or none with
    /// text or a call (see [`Gemini`](crate::Gemini)). Answered as an upstream
    /// failure, 502, which the OpenAI SDKs retry; the message says what came.
    #[error("{}", .error.error.message)]
    NoAnswer {
        /// The error in the OpenAI shape (`upstream_error`).
        error: Box<ErrorResponse>,
        /// The tokens the upstream counted for it, when it said: they are billed all the same.
        usage: Option<Box<uniproxy_wire::Usage>>,
    },
    /// The upstream's answer is not what its platform sends.
    #[error("malformed {provider} response")]
    Malformed {
        /// The platform.
        provider: ProviderKind,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A stream event names a block that never started.
    #[error("stream delta for content block {index} arrived before its start")]
    OutOfOrder {
        /// The upstream's block index.
        index: u32,
    },
    /// A stream event is larger than the SSE decoder takes ([`crate::sse::MAX_EVENT`] unless
    /// set otherwise): an upstream that sends one line without end is not buffered for ever.
    #[error("upstream stream event larger than {limit} bytes")]
    EventTooLarge {
        /// The decoder's limit, in bytes.
        limit: usize,
    },
}

impl TranslateError {
    /// The HTTP status to answer with: 4xx when the client's request is at fault, the
    /// upstream's status when it answered an error, 502 when it answered nonsense.
    pub fn status(&self) -> u16 {
        match self {
            TranslateError::Unsupported { .. }
            | TranslateError::InvalidRequest { .. }
            | TranslateError::InvalidToolArguments { .. } => 400,
            TranslateError::Config { .. } => 500,
            TranslateError::Upstream { status, .. } => *status,
            TranslateError::NoAnswer { .. }
            | TranslateError::Malformed { .. }
            | TranslateError::OutOfOrder { .. }
            | TranslateError::EventTooLarge { .. } => 502,
        }
    }

    /// The error in the OpenAI shape, for the client.
    pub fn to_error_response(&self) -> ErrorResponse {
        match self {
            TranslateError::Unsupported { field, .. } => {
                ErrorResponse::new(self.to_string(), "invalid_request_error")
                    .with_param(field.clone())
                    .with_code("unsupported_parameter")
            }
            TranslateError::InvalidRequest { param, .. } => {
                ErrorResponse::new(self.to_string(), "invalid_request_error")
                    .with_param(param.clone())
                    .with_code("invalid_value")
            }
            TranslateError::InvalidToolArguments { param, source } => {
                ErrorResponse::new(format!("{self}: {source}"), "invalid_request_error")
                    .with_param(param.clone())
                    .with_code("invalid_value")
            }
            TranslateError::Config { .. } => ErrorResponse::new(self.to_string(), "server_error")
                .with_code("invalid_configuration"),
            TranslateError::Upstream { error, .. } | TranslateError::NoAnswer { error, .. } => {
                (**error).clone()
            }
            TranslateError::Malformed { source, .. } => {
                ErrorResponse::new(format!("{self}: {source}"), "upstream_error")
                    .with_code("bad_upstream_response")
            }
            TranslateError::OutOfOrder { .. } | TranslateError::EventTooLarge { .. } => {
                ErrorResponse::new(self.to_string(), "upstream_error")
                    .with_code("bad_upstream_response")
            }
        }
    }
}

/// For [`Provider::refused`](crate::Provider::refused): whether the upstream answered 400
/// with `says` in its body, the refusal of something the provider can leave out; if so, sets
/// `left_out`, and the provider leaves it out from then on.
pub(crate) fn learn_refusal(
    left_out: &std::sync::atomic::AtomicBool,
    status: u16,
    body: &[u8],
    says: &[u8],
) -> bool {
    let refused = status == 400 && memchr::memmem::find(body, says).is_some();
    if refused {
        left_out.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    refused
}

/// The error a stream ends with when the upstream's body ended before the answer did: the
/// same `code` as a connection that fails mid-stream, which the server reports.
pub(crate) fn incomplete_stream() -> ErrorResponse {
    ErrorResponse::new("the upstream stream ended before the answer was complete", "upstream_error")
        .with_code("upstream_stream_error")
}

/// An upstream error's text for the log: its message after the status, unless the message
/// says the status itself (as [`fallback_error`]'s do).
fn upstream_message(status: u16, message: &str) -> Cow<'_, str> {
    if message.starts_with("upstream answered ") {
        Cow::Borrowed(message)
    } else {
        Cow::Owned(format!("upstream answered {status}: {message}"))
    }
}

/// The OpenAI error `type` for an HTTP status, for upstream errors that carry none.
pub fn error_type_for_status(status: u16) -> &'static str {
    match status {
        400 | 404 | 405 | 409 | 413 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        408 | 504 => "timeout_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ if status >= 500 => "server_error",
        _ => "api_error",
    }
}

/// The OpenAI error for an upstream answer whose body is not an error the platform documents:
/// the message of a JSON object that has one as a non-blank string (`{"error": "…"}` from
/// Ollama's native API and Hugging Face TGI, `{"detail": "…"}` from FastAPI servers,
/// `{"message": "…"}`), else the body's start (when it is text), or the status alone.
pub fn fallback_error(status: u16, body: &[u8]) -> ErrorResponse {
    let text = String::from_utf8_lossy(body);
    let message = serde_json::from_slice::<MessageOnly>(body)
        .ok()
        .and_then(|m| m.error.or(m.detail).or(m.message))
        .filter(|m| !m.trim().is_empty());
    let text = message.map_or(text, Cow::Owned);
    let text = text.trim();
    let message = if text.is_empty() {
        format!("upstream answered {status} with an empty body")
    } else {
        let mut cut = text.len().min(512);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let ellipsis = if cut < text.len() { "…" } else { "" };
        format!("upstream answered {status}: {}{ellipsis}", &text[..cut])
    };
    ErrorResponse::new(message, error_type_for_status(status))
}

/// The messages [`fallback_error`] looks for, first to last; a member that is not a string
/// counts as absent, and any other member is ignored.
#[derive(serde::Deserialize)]
struct MessageOnly {
    #[serde(default, deserialize_with = "string_or_skip")]
    error: Option<String>,
    #[serde(default, deserialize_with = "string_or_skip")]
    detail: Option<String>,
    #[serde(default, deserialize_with = "string_or_skip")]
    message: Option<String>,
}

/// A string, or `None` for a value of any other type.
fn string_or_skip<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

/// An error envelope read from `body`, alone or as the first element of a JSON array, as
/// Google sends its errors (its native stream endpoint, and its OpenAI-compatible one).
/// Told apart by the first byte: serde would read a one-element array as the struct itself.
pub(crate) fn first_or_only<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    if body.trim_ascii_start().starts_with(b"[") {
        serde_json::from_slice::<Vec<T>>(body).ok().and_then(|v| v.into_iter().next())
    } else {
        serde_json::from_slice::<T>(body).ok()
    }
}

/// What an upstream's error answer says of trying it again, read from its body (see
/// [`retry_hint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryHint {
    /// The body says nothing of it.
    Unknown,
    /// A quota that is spent, OpenAI's and Azure's `insufficient_quota` (a 429, as rate
    /// limits are): no try succeeds until someone pays, however long it waits.
    Never,
    /// Google's `RetryInfo` detail: try again after this long. Google says it in the body
    /// only, not as `Retry-After`.
    After(std::time::Duration),
}

/// What an upstream's error body (its envelope alone, or as the first element of an array, as
/// Google sends it) says of trying again: [`RetryHint::Never`] for an OpenAI-shaped error whose
/// `code` or `type` is `insufficient_quota`, [`RetryHint::After`] for a Google error with a
/// `RetryInfo` detail whose `retryDelay` (a protobuf duration, `"34.4s"`) reads, else
/// [`RetryHint::Unknown`].
pub fn retry_hint(body: &[u8]) -> RetryHint {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: serde_json::Value,
    }
    let Some(Envelope { error }) = first_or_only::<Envelope>(body) else {
        return RetryHint::Unknown;
    };
    let says = |member: &str| error.get(member).and_then(serde_json::Value::as_str);
    if says("code") == Some("insufficient_quota") || says("type") == Some("insufficient_quota") {
        return RetryHint::Never;
    }
    let delay = error
        .get("details")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter(|d| {
            d.get("@type")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
        })
        .find_map(|d| d.get("retryDelay").and_then(serde_json::Value::as_str))
        .and_then(|d| d.trim().strip_suffix('s')?.parse::<f64>().ok())
        .and_then(|seconds| std::time::Duration::try_from_secs_f64(seconds).ok());
    delay.map_or(RetryHint::Unknown, RetryHint::After)
}

/// An upstream's OpenAI-shaped error with every key the OpenAI SDKs read: its own values are
/// kept, and what it left out (Ollama, vLLM and OpenRouter leave out some) is filled in — the
/// type from the status, `param` and `code` as `null`.
pub fn complete_error(mut response: ErrorResponse, status: u16) -> ErrorResponse {
    let e = &mut response.error;
    e.kind.get_or_insert_with(|| Some(error_type_for_status(status).to_owned()));
    e.param.get_or_insert(None);
    e.code.get_or_insert(None);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_quota_is_never_worth_a_retry_and_googles_retry_delay_is_read() {
        use std::time::Duration;
        // OpenAI's 429 for a spent quota; Azure's says the same.
        let openai = br#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        assert_eq!(retry_hint(openai), RetryHint::Never);
        // A rate limit says nothing of it: the headers do.
        let limited = br#"{"error":{"message":"Rate limit reached for gpt-4o","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        assert_eq!(retry_hint(limited), RetryHint::Unknown);
        // Gemini's RESOURCE_EXHAUSTED, alone or in the array of its stream endpoint.
        let gemini = r#"{"error":{"code":429,"message":"You exceeded your current quota, please check your plan.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"34.4s"}]}}"#;
        assert_eq!(retry_hint(gemini.as_bytes()), RetryHint::After(Duration::from_millis(34_400)));
        let array = format!("[{gemini}]");
        assert_eq!(retry_hint(array.as_bytes()), RetryHint::After(Duration::from_millis(34_400)));
        // Vertex's quota error has no RetryInfo; unreadable delays and bodies say nothing.
        let vertex = br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"RATE_LIMIT_EXCEEDED"}]}}"#;
        assert_eq!(retry_hint(vertex), RetryHint::Unknown);
        let odd = br#"{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"-1s"}]}}"#;
        assert_eq!(retry_hint(odd), RetryHint::Unknown);
        for body in [&b""[..], b"<html>Too Many Requests</html>", b"{\"error\":\"slow down\"}"] {
            assert_eq!(retry_hint(body), RetryHint::Unknown);
        }
    }

    #[test]
    fn a_fallback_error_takes_the_message_of_a_json_body_that_has_one_as_a_string() {
        let message = |status, body: &str| fallback_error(status, body.as_bytes()).error.message;
        // Ollama's native API, a FastAPI server, and a bare message, each with other members.
        assert_eq!(
            message(404, "{\n  \"error\": \"model 'llama9' not found\"\n}"),
            "upstream answered 404: model 'llama9' not found"
        );
        assert_eq!(message(404, r#"{"detail":"Not Found"}"#), "upstream answered 404: Not Found");
        assert_eq!(
            message(500, r#"{"message":"Internal error","status":500}"#),
            "upstream answered 500: Internal error"
        );
        assert_eq!(
            message(400, r#"{"message":"last","detail":"second","error":"first"}"#),
            "upstream answered 400: first"
        );
        // Not strings: the body as text, as for any other body.
        let validation = r#"{"detail":[{"loc":["body","messages"],"msg":"field required"}]}"#;
        assert_eq!(message(422, validation), format!("upstream answered 422: {validation}"));
        assert_eq!(
            message(502, "<html>Bad Gateway</html>"),
            "upstream answered 502: <html>Bad Gateway</html>"
        );
        assert_eq!(message(503, " "), "upstream answered 503 with an empty body");
        // As an error's text, the status is said once.
        let e = |error| TranslateError::Upstream { status: 502, error: Box::new(error) };
        let html = fallback_error(502, b"<html>Bad Gateway</html>");
        assert_eq!(e(html).to_string(), "upstream answered 502: <html>Bad Gateway</html>");
        let documented = ErrorResponse::new("Overloaded", "overloaded_error");
        assert_eq!(e(documented).to_string(), "upstream answered 502: Overloaded");
        assert_eq!(message(500, r#"{"error":" "}"#), r#"upstream answered 500: {"error":" "}"#);
        let e = fallback_error(404, br#"{"error":"gone"}"#).error;
        assert_eq!(e.kind, Some(Some("invalid_request_error".to_owned())));
    }
}
