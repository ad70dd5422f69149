use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Map;

/// The error envelope: `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorDetail,
    /// Fields this version does not model (OpenRouter's `user_id`, …).
    #[serde(flatten)]
    pub extra: Map,
}

/// An error's details. Errors made with [`ErrorResponse::new`] write all four fields (`null`
/// when unknown), because the OpenAI SDKs read all four; an upstream's error keeps its shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A message for a person.
    pub message: String,
    /// The error class (`invalid_request_error`, `server_error`, …).
    #[serde(
        rename = "type",
        default,
        with = "crate::nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub kind: Option<Option<String>>,
    /// The offending request field as a JSON path (`messages[0].role`).
    #[serde(default, with = "crate::nullable", skip_serializing_if = "Option::is_none")]
    pub param: Option<Option<String>>,
    /// A machine-readable code: a string for OpenAI, an integer for some other servers.
    #[serde(default, with = "crate::nullable", skip_serializing_if = "Option::is_none")]
    pub code: Option<Option<Value>>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

impl ErrorResponse {
    /// An error with a message and a type.
    pub fn new(message: impl Into<String>, kind: impl Into<String>) -> Self {
        ErrorResponse {
            error: ErrorDetail {
                message: message.into(),
                kind: Some(Some(kind.into())),
                param: Some(None),
                code: Some(None),
                extra: Map::new(),
            },
            extra: Map::new(),
        }
    }

    /// Sets `param`.
    #[must_use]
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.error.param = Some(Some(param.into()));
        self
    }

    /// Sets `code` to a string.
    #[must_use]
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.error.code = Some(Some(Value::String(code.into())));
        self
    }
}

impl ErrorDetail {
    /// The error type, if present and not `null`.
    pub fn kind(&self) -> Option<&str> {
        self.kind.as_ref().and_then(Option::as_deref)
    }
}
