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
    /// The upstream answered with an error; its status and message are kept.
    #[error("upstream answered {status}: {}", .error.error.message)]
    Upstream {
        /// The upstream's HTTP status.
        status: u16,
        /// The upstream's error in the OpenAI shape.
        error: Box<ErrorResponse>,
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
}

impl TranslateError {
    /// The HTTP status to answer with: 4xx when the client's request is at fault, the
    /// upstream's status when it answered an error, 502 when it answered nonsense.
    pub fn status(&self) -> u16 {
        match self {
            TranslateError::Unsupported { .. }
            | TranslateError::InvalidRequest { .. }
            | TranslateError::InvalidToolArguments { .. } => 400,
            TranslateError::Upstream { status, .. } => *status,
            TranslateError::Malformed { .. } | TranslateError::OutOfOrder { .. } => 502,
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
            TranslateError::Upstream { error, .. } => (**error).clone(),
            TranslateError::Malformed { source, .. } => {
                ErrorResponse::new(format!("{self}: {source}"), "upstream_error")
                    .with_code("bad_upstream_response")
            }
            TranslateError::OutOfOrder { .. } => {
                ErrorResponse::new(self.to_string(), "upstream_error")
                    .with_code("bad_upstream_response")
            }
        }
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
/// the body's start (when it is text) or the status alone.
pub fn fallback_error(status: u16, body: &[u8]) -> ErrorResponse {
    let text = String::from_utf8_lossy(body);
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
