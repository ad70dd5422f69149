//! The proxy's errors and the one place that turns them into responses.

use serde_json::Value;
use uniproxy_translate::TranslateError;
use uniproxy_wire::{ErrorResponse, WireError};

/// Everything that can go wrong with a request, grouped by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No such route.
    #[error("no route for {method} {path}")]
    NotFound {
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
    /// The route exists but not with this method.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The method.
        method: String,
        /// The path.
        path: String,
    },
    /// The client sent no valid proxy key.
    #[error(
        "missing or invalid API key: send one of the proxy's keys as `Authorization: Bearer KEY`"
    )]
    Unauthorized,
    /// A web page of another origin (not in CORS_ALLOW_ORIGINS) posted to the proxy: a
    /// browser sends such a form or `text/plain` fetch without asking first, so without this
    /// any page its user visits could spend the upstream key through an open proxy.
    #[error(
        "requests from web pages of origin {origin} are refused: add it to CORS_ALLOW_ORIGINS \
         to let that page use the proxy"
    )]
    CrossOrigin {
        /// The page's origin.
        origin: String,
    },
    /// The request names a host the proxy does not answer to (see `AppState::answers_to`).
    #[error(
        "this proxy listens on loopback with no key for this endpoint, and answers only requests for localhost \
         or an IP address, not for {host:?} (a web page could reach it under a name of its own: \
         DNS rebinding): add the name to ALLOWED_HOSTS, or set PROXY_API_KEYS"
    )]
    HostNotAllowed {
        /// The `Host` asked for.
        host: String,
    },
    /// An HTTP/1.1 request without a `Host` header, or any request with more than one:
    /// RFC 9112, 3.2 makes it a 400, and the proxy's host checks read that header.
    #[error(
        "{}",
        if *count == 0 {
            "an HTTP/1.1 request needs a Host header (RFC 9112, 3.2)".to_owned()
        } else {
            format!("a request carries one Host header, not {count} (RFC 9112, 3.2)")
        }
    )]
    HostHeader {
        /// How many `Host` headers the request had.
        count: usize,
    },
    /// The proxy is shutting down, and its grace period for requests in flight is over.
    #[error("the proxy is shutting down and could not finish this request in time; retry")]
    ShuttingDown,
    /// The body is larger than MAX_BODY_SIZE.
    #[error("request body is larger than the limit of {limit} bytes (MAX_BODY_SIZE)")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body comes compressed (`Content-Encoding`), which the proxy does not undo.
    #[error(
        "request bodies with Content-Encoding `{coding}` are not supported: send the body uncompressed"
    )]
    UnsupportedEncoding {
        /// The encoding named.
        coding: String,
    },
    /// The client's body could not be read.
    #[error("could not read the request body")]
    BodyRead(#[source] hyper::Error),
    /// The client hung up before its whole body arrived (recorded as 499; nobody gets the
    /// response).
    #[error("the client closed the connection before the whole body arrived")]
    BodyCut(#[source] hyper::Error),
    /// The client did not send its whole body within REQUEST_TIMEOUT (a slow client).
    #[error("the request body did not arrive within the request timeout (REQUEST_TIMEOUT)")]
    BodyTimeout,
    /// The client sent no byte of its body for CLIENT_TIMEOUT (a stalled or idle client).
    #[error(
        "the client sent nothing of its request body for {} s (CLIENT_TIMEOUT)",
        .timeout.as_secs_f64()
    )]
    BodyStalled {
        /// CLIENT_TIMEOUT.
        timeout: std::time::Duration,
    },
    /// The body is not valid JSON or has a value of the wrong type.
    #[error("{0}")]
    InvalidBody(#[source] WireError),
    /// The log store can write nothing (a full disk) and its queue is full: the request is
    /// refused before its upstream is asked, since its record could not be kept.
    #[error(
        "the log store cannot keep records for now (see /health: log_store.last_error); \
         requests are refused until it can, so that no answer goes unrecorded"
    )]
    LogStoreStuck,
    /// ENABLED=false.
    #[error("the model is disabled (ENABLED=false)")]
    Disabled,
    /// The request has tools and SUPPORTS_FUNCTION_CALLING=false.
    #[error("this model does not support tools or functions (SUPPORTS_FUNCTION_CALLING=false)")]
    FunctionCallingDisabled,
    /// More requests in flight than CONCURRENCY_LIMIT.
    #[error("too many requests in flight (CONCURRENCY_LIMIT={limit}); retry shortly")]
    Overloaded {
        /// The limit.
        limit: usize,
    },
    /// The request cannot be translated, or the upstream answered an error.
    #[error(transparent)]
    Translate(#[from] TranslateError),
    /// The upstream refused the proxy's own key (a 401): clients never send the upstream's
    /// credentials, so the proxy's configuration is at fault, not the client.
    #[error(
        "the upstream refused the proxy's API key (API_KEY): the proxy's configuration needs fixing"
    )]
    UpstreamAuth(#[source] TranslateError),
    /// The upstream could not be reached.
    #[error("could not reach the upstream")]
    UpstreamConnect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The upstream's connection failed once the request may have reached it (closed or
    /// reset before an answer began): not retried, as the model may have run.
    #[error("the upstream closed the connection without answering")]
    UpstreamDropped(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The upstream took too long.
    #[error("the upstream did not answer within {phase} ({setting})")]
    UpstreamTimeout {
        /// Which wait ran out.
        phase: &'static str,
        /// The setting that sets it.
        setting: &'static str,
    },
    /// The upstream's body could not be read.
    #[error("the upstream's answer was cut off")]
    UpstreamBody(#[source] hyper::Error),
    /// The upstream's body is larger than the proxy will buffer.
    #[error("the upstream's answer is larger than {limit} bytes")]
    UpstreamTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A query parameter of an admin endpoint has a value it cannot take.
    #[error("`{value}` is not a valid value for `{param}`: {expected}")]
    InvalidParam {
        /// The parameter.
        param: &'static str,
        /// The value sent.
        value: String,
        /// What the parameter takes.
        expected: &'static str,
    },
    /// No log entry has this id.
    #[error("no log entry with id {id}")]
    EntryNotFound {
        /// The id asked for.
        id: i64,
    },
    /// The log store could not be read.
    #[error("the log store could not be read")]
    Store(#[source] uniproxy_logstore::StoreError),
    /// The proxy runs without a log store.
    #[error("this proxy keeps no log store")]
    NoStore,
    /// A blocking task (a store read) panicked or was cancelled.
    #[error("a background task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl ProxyError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            ProxyError::NotFound { .. } => 404,
            ProxyError::MethodNotAllowed { .. } => 405,
            ProxyError::Unauthorized => 401,
            ProxyError::CrossOrigin { .. } | ProxyError::HostNotAllowed { .. } => 403,
            ProxyError::BodyTooLarge { .. } => 413,
            ProxyError::UnsupportedEncoding { .. } => 415,
            ProxyError::BodyRead(_)
            | ProxyError::InvalidBody(_)
            | ProxyError::HostHeader { .. } => 400,
            ProxyError::BodyCut(_) => 499,
            ProxyError::BodyTimeout | ProxyError::BodyStalled { .. } => 408,
            ProxyError::Disabled => 503,
            ProxyError::FunctionCallingDisabled => 400,
            ProxyError::Overloaded { .. } => 429,
            ProxyError::Translate(e) => e.status(),
            ProxyError::UpstreamAuth(_)
            | ProxyError::UpstreamConnect(_)
            | ProxyError::UpstreamDropped(_) => 502,
            ProxyError::UpstreamTimeout { .. } => 504,
            ProxyError::UpstreamBody(_) | ProxyError::UpstreamTooLarge { .. } => 502,
            ProxyError::InvalidParam { .. } => 400,
            ProxyError::EntryNotFound { .. } => 404,
            ProxyError::Store(_) | ProxyError::Task(_) => 500,
            ProxyError::NoStore | ProxyError::LogStoreStuck | ProxyError::ShuttingDown => 503,
        }
    }

    /// The body for the client, in the OpenAI error shape. Internals (socket errors) stay in
    /// the log; the client gets what it can act on.
    pub fn to_error_response(&self) -> ErrorResponse {
        match self {
            ProxyError::NotFound { .. } => {
                ErrorResponse::new(self.to_string(), "invalid_request_error").with_code("not_found")
            }
            ProxyError::MethodNotAllowed { .. } => {
                ErrorResponse::new(self.to_string(), "invalid_request_error")
                    .with_code("method_not_allowed")
            }
            ProxyError::Unauthorized => {
                ErrorResponse::new(self.to_string(), "authentication_error")
                    .with_code("invalid_api_key")
            }
            ProxyError::CrossOrigin { .. } => {
                ErrorResponse::new(self.to_string(), "permission_error")
                    .with_code("cross_origin_refused")
            }
            ProxyError::HostNotAllowed { .. } => {
                ErrorResponse::new(self.to_string(), "permission_error")
                    .with_code("host_not_allowed")
            }
            ProxyError::HostHeader { .. } => {
                ErrorResponse::new(self.to_string(), "invalid_request_error")
                    .with_code("invalid_host_header")
            }
            ProxyError::BodyTooLarge { .. } => {
                ErrorResponse::new(self.to_string(), "invalid_request_error")
                    .with_code("request_too_large")
            }
            ProxyError::UnsupportedEncoding { .. } => {
                ErrorResponse::new(self.to_string(), "invalid_request_error")
                    .with_code("unsupported_content_encoding")
            }
            ProxyError::BodyRead(_) => {
                ErrorResponse::new(self.to_string(), "invalid_request_error")
            }
            ProxyError::BodyCut(_) => ErrorResponse::new(self.to_string(), "client_closed"),
            ProxyError::BodyTimeout => {
                ErrorResponse::new(self.to_string(), "invalid_request_error")
                    .with_code("request_timeout")
            }
            ProxyError::BodyStalled { .. } => {
                ErrorResponse::new(self.to_string(), "invalid_request_error")
                    .with_code("request_body_timeout")
            }
            ProxyError::InvalidBody(e) => {
                let r = ErrorResponse::new(self.to_string(), "invalid_request_error");
                if let Some(param) = e.missing() {
                    // OpenAI's code for the same.
                    r.with_param(param).with_code("missing_required_parameter")
                } else if let Some(param) = e.duplicate() {
                    // Named whole: a member of the body itself has an empty path.
                    r.with_param(param).with_code("invalid_value")
                } else if e.path().is_empty() || e.is_syntax() {
                    r.with_code("invalid_json")
                } else {
                    r.with_param(e.path()).with_code("invalid_type")
                }
            }
            ProxyError::Disabled => {
                ErrorResponse::new(self.to_string(), "server_error").with_code("model_disabled")
            }
            ProxyError::FunctionCallingDisabled => {
                ErrorResponse::new(self.to_string(), "invalid_request_error")
                    .with_param("tools")
                    .with_code("unsupported_parameter")
            }
            ProxyError::Overloaded { .. } => {
                ErrorResponse::new(self.to_string(), "rate_limit_error")
                    .with_code("proxy_overloaded")
            }
            // Translators complete upstream errors (every key the SDKs read is there).
            ProxyError::Translate(e) => e.to_error_response(),
            ProxyError::UpstreamAuth(_) => ErrorResponse::new(self.to_string(), "upstream_error")
                .with_code("upstream_auth_failed"),
            ProxyError::UpstreamConnect(e) => {
                // The outbound proxy's refusal is what the operator must fix; it names the
                // setting and the proxy's answer, not its address or credentials.
                let message = match refusal(&**e) {
                    Some(refused) => format!("{self}: {refused}"),
                    None => self.to_string(),
                };
                ErrorResponse::new(message, "upstream_error").with_code("upstream_unreachable")
            }
            ProxyError::UpstreamTimeout { .. } => {
                ErrorResponse::new(self.to_string(), "timeout_error").with_code("upstream_timeout")
            }
            ProxyError::UpstreamBody(_)
            | ProxyError::UpstreamDropped(_)
            | ProxyError::UpstreamTooLarge { .. } => {
                ErrorResponse::new(self.to_string(), "upstream_error")
                    .with_code("bad_upstream_response")
            }
            ProxyError::InvalidParam { param, .. } => {
                ErrorResponse::new(self.to_string(), "invalid_request_error")
                    .with_param(*param)
                    .with_code("invalid_value")
            }
            ProxyError::EntryNotFound { .. } => {
                ErrorResponse::new(self.to_string(), "invalid_request_error").with_code("not_found")
            }
            ProxyError::Store(_) | ProxyError::Task(_) => {
                ErrorResponse::new(self.to_string(), "server_error").with_code("internal_error")
            }
            ProxyError::NoStore => {
                ErrorResponse::new(self.to_string(), "server_error").with_code("no_log_store")
            }
            ProxyError::LogStoreStuck => ErrorResponse::new(self.to_string(), "server_error")
                .with_code("log_store_unavailable"),
            ProxyError::ShuttingDown => {
                ErrorResponse::new(self.to_string(), "server_error").with_code("server_shutdown")
            }
        }
    }

    /// The error for an upstream's error answer: a 401 is [`ProxyError::UpstreamAuth`], and the
    /// error loses the proxy's key in every member and what stands beside it, and a numeric
    /// code becomes its text, for the client and the log (see `sanitize`).
    pub fn from_upstream(mut e: TranslateError, api_key: &str) -> ProxyError {
        let status = e.status();
        if let TranslateError::Upstream { error, .. } | TranslateError::NoAnswer { error, .. } =
            &mut e
        {
            sanitize(error, api_key);
        }
        if status == 401 { ProxyError::UpstreamAuth(e) } else { ProxyError::Translate(e) }
    }

    /// Whether the outbound proxy refused uniproxy's credentials for it (its 407): settings at
    /// fault, as an upstream's 401 is, which no retry mends and each retry repeats, a refused
    /// login at the proxy (many lock an account after a few).
    pub fn proxy_refused_credentials(&self) -> bool {
        let ProxyError::UpstreamConnect(e) = self else { return false };
        refusal(&**e).is_some_and(|refused| refused.status == 407)
    }

    /// Whether the request is turned away for who sent it (no valid key, a foreign web page,
    /// a host name the proxy does not answer to, or none), before anything of it is read.
    pub fn turns_away(&self) -> bool {
        matches!(
            self,
            ProxyError::Unauthorized
                | ProxyError::CrossOrigin { .. }
                | ProxyError::HostNotAllowed { .. }
                | ProxyError::HostHeader { .. }
        )
    }

    /// Whether the error is answered before the request's body is read to its end (the
    /// request turned away, the proxy's log stuck, a body too large, slow, compressed or
    /// broken), so the connection cannot carry another request. A request over
    /// CONCURRENCY_LIMIT is refused once its body is read (see `chat::handle`).
    pub fn leaves_body_unread(&self) -> bool {
        self.turns_away()
            || matches!(
                self,
                ProxyError::BodyTooLarge { .. }
                    | ProxyError::UnsupportedEncoding { .. }
                    | ProxyError::BodyRead(_)
                    | ProxyError::BodyCut(_)
                    | ProxyError::BodyTimeout
                    | ProxyError::BodyStalled { .. }
                    | ProxyError::LogStoreStuck
                    | ProxyError::ShuttingDown
            )
    }

    /// The full chain of causes, for the log.
    pub fn detail(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            // Many errors already print their cause; add only what is new.
            let text = s.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = s.source();
        }
        out
    }
}

/// The outbound proxy's refusal among `e` and its causes.
fn refusal<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a crate::outbound::ProxyRefused> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<crate::outbound::ProxyRefused>() {
            return Some(refused);
        }
        source = s.source();
    }
    None
}

/// An upstream's error as the client and the log get it. The `error` object keeps what the
/// upstream put in it beside the four members (Azure's `innererror` with its content-filter
/// results), but the proxy's key leaves every string of it, quoted whole or masked (Google's
/// errors quote the key in a `DebugInfo` detail, and a `custom` upstream may be Google's
/// OpenAI-compatible endpoint); a number as `code` becomes its text, since the spec's `code`
/// is a string and some servers send the HTTP status (OpenRouter's 429); and what stands
/// beside `error` goes (OpenRouter's `user_id` names the operator's account).
fn sanitize(response: &mut ErrorResponse, key: &str) {
    response.extra.clear();
    let e = &mut response.error;
    redact_key(&mut e.message, key);
    if let Some(Some(param)) = &mut e.param {
        redact_key(param, key);
    }
    if let Some(code) = &mut e.code {
        let text = match code.take() {
            Some(Value::Null) | None => None,
            Some(Value::String(text)) => Some(text),
            Some(other) => Some(other.to_string()),
        };
        *code = text.map(|mut text| {
            redact_key(&mut text, key);
            Value::String(text)
        });
    }
    for value in e.extra.values_mut() {
        redact_strings(value, key);
    }
}

/// [`redact_key`] on every string in `value`.
fn redact_strings(value: &mut Value, key: &str) {
    match value {
        Value::String(text) => redact_key(text, key),
        Value::Array(items) => items.iter_mut().for_each(|v| redact_strings(v, key)),
        Value::Object(members) => members.values_mut().for_each(|v| redact_strings(v, key)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The first `max` bytes of `bytes` as text, without the proxy's key (`key`; see
/// [`redact_key`]). The key is looked for in a key's length more than is kept: cut first, a
/// key across the cut would keep its start.
pub(crate) fn redacted_start(bytes: &[u8], max: usize, key: &str) -> String {
    let looked_at = &bytes[..bytes.len().min(max.saturating_add(key.len()))];
    let mut text = String::from_utf8_lossy(looked_at).into_owned();
    redact_key(&mut text, key);
    let mut cut = text.len().min(max);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text
}

/// The shortest key [`redact_key`] looks for verbatim: a shorter one (a placeholder such as
/// `x` for a local server that needs none) would match ordinary words.
const MIN_KEY_LEN: usize = 8;

/// Takes the proxy's key out of an upstream's error message: the key itself where an upstream
/// quotes it, and any masked key (OpenAI's 401 says "Incorrect API key provided:
/// sk-proj-ab\*\*\*…\*\*\*wxyz.", a prefix and the last four characters) whole.
pub(crate) fn redact_key(message: &mut String, key: &str) {
    if key.len() >= MIN_KEY_LEN && message.contains(key) {
        *message = message.replace(key, "[redacted]");
    }
    if message.contains("***") {
        *message = message
            .split(' ')
            .map(|word| {
                if !word.contains("***") {
                    return word.to_owned();
                }
                // Punctuation after the key stays.
                let key = word.trim_end_matches(|c: char| c.is_ascii_punctuation() && c != '*');
                format!("[redacted]{}", &word[key.len()..])
            })
            .collect::<Vec<_>>()
            .join(" ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(message: &str, key: &str) -> String {
        let mut m = message.to_owned();
        redact_key(&mut m, key);
        m
    }

    #[test]
    fn the_proxys_key_leaves_an_upstreams_message_quoted_or_masked() {
        let key = "sk-proj-UPSTREAMKEY0123456789";
        // OpenAI's own 401 text, masked.
        assert_eq!(
            redacted(
                "Incorrect API key provided: sk-proj-***********************6789. You can find your API key at https://platform.openai.com/account/api-keys.",
                key
            ),
            "Incorrect API key provided: [redacted]. You can find your API key at https://platform.openai.com/account/api-keys."
        );
        assert_eq!(
            redacted(&format!("bad key {key}, try again"), key),
            "bad key [redacted], try again"
        );
        // Nothing else changes; a short key is not looked for.
        assert_eq!(redacted("invalid x-api-key", key), "invalid x-api-key");
        assert_eq!(redacted("no access to gpt-x", "x"), "no access to gpt-x");
    }

    #[test]
    fn a_key_across_the_cut_of_a_quoted_start_leaves_nothing_of_itself() {
        let key = "sk-upstream-secret";
        let body = format!("{}{key} and more", "x".repeat(500));
        let start = redacted_start(body.as_bytes(), 512, key);
        assert!(!start.contains("sk-up"), "{start}");
        assert!(start.starts_with(&"x".repeat(500)) && start.len() <= 512, "{start}");
        assert_eq!(redacted_start("héllo".as_bytes(), 2, key), "h", "cut at a character");
    }
}
