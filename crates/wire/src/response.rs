use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Map, Message, Usage, open_enum};

open_enum! {
    /// Why the model stopped.
    pub enum FinishReason {
        /// A natural stop or a stop sequence.
        Stop = "stop",
        /// The token limit.
        Length = "length",
        /// The model called tools.
        ToolCalls = "tool_calls",
        /// Content was filtered.
        ContentFilter = "content_filter",
        /// The model called a legacy function.
        FunctionCall = "function_call",
    }
}

/// A `chat.completion` object: the answer to a non-stream request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// The completion id.
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model that answered.
    pub model: String,
    /// The generated choices.
    pub choices: Vec<Choice>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The backend configuration fingerprint.
    #[serde(default, with = "crate::nullable", skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<Option<String>>,
    /// The service tier used.
    #[serde(default, with = "crate::nullable", skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<Option<String>>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

/// One choice of a completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// The choice's index.
    pub index: u32,
    /// The generated message.
    pub message: Message,
    /// Why the model stopped.
    #[serde(default, with = "crate::nullable", skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<Option<FinishReason>>,
    /// Log probabilities.
    #[serde(default, with = "crate::nullable", skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Option<Value>>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}
