use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{FinishReason, Map, Role, Usage};

/// A `chat.completion.chunk`: one event of a streamed answer.
///
/// Chunks can have no choices: a usage-only chunk at the end (when the client asked for
/// `stream_options.include_usage`), Azure's `prompt_filter_results`, moderation results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// The completion id, the same in every chunk.
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The model that answers.
    pub model: String,
    /// The deltas of this chunk.
    pub choices: Vec<ChunkChoice>,
    /// Usage: `null` on every chunk but the last when the client asked for it.
    #[serde(default, with = "crate::nullable", skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
    /// The backend configuration fingerprint.
    #[serde(default, with = "crate::nullable", skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<Option<String>>,
    /// The service tier used.
    #[serde(default, with = "crate::nullable", skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<Option<String>>,
    /// Fields this version does not model (`obfuscation`, …).
    #[serde(flatten)]
    pub extra: Map,
}

impl ChatCompletionChunk {
    /// A chunk with no choices, for the caller to fill.
    pub fn new(id: impl Into<String>, created: u64, model: impl Into<String>) -> Self {
        ChatCompletionChunk {
            id: id.into(),
            object: "chat.completion.chunk".to_owned(),
            created,
            model: model.into(),
            choices: Vec::new(),
            usage: None,
            system_fingerprint: None,
            service_tier: None,
            extra: Map::new(),
        }
    }

    /// The usage, if present and not `null`.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref().and_then(Option::as_ref)
    }
}

/// One choice's delta in a chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// The choice's index (several interleave when `n > 1`).
    pub index: u32,
    /// What this chunk adds; absent on Azure's content-filter result chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta>,
    /// Set on the choice's last chunk.
    #[serde(default, with = "crate::nullable", skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<Option<FinishReason>>,
    /// Log probabilities.
    #[serde(default, with = "crate::nullable", skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Option<Value>>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

impl ChunkChoice {
    /// A choice with the given delta, written as OpenAI writes an intermediate choice:
    /// `"logprobs":null,"finish_reason":null` (strict clients expect both keys).
    pub fn new(index: u32, delta: Delta) -> Self {
        ChunkChoice {
            index,
            delta: Some(delta),
            finish_reason: Some(None),
            logprobs: Some(None),
            extra: Map::new(),
        }
    }

    /// The finish reason, if present and not `null`.
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.finish_reason.as_ref().and_then(Option::as_ref)
    }
}

/// What a chunk adds to a choice's message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// `assistant`, on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// A text fragment.
    #[serde(default, with = "crate::nullable", skip_serializing_if = "Option::is_none")]
    pub content: Option<Option<String>>,
    /// A refusal fragment.
    #[serde(default, with = "crate::nullable", skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Option<String>>,
    /// A reasoning fragment (DeepSeek and other OpenAI-compatible servers; Anthropic thinking
    /// and Gemini thoughts are translated to it).
    #[serde(default, with = "crate::nullable", skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<Option<String>>,
    /// Whole thinking blocks (see [`Message::thinking_blocks`]); the text came before as
    /// `reasoning_content`. uniproxy sends a message's blocks in one chunk, once its thinking
    /// is over.
    ///
    /// [`Message::thinking_blocks`]: crate::Message::thinking_blocks
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_blocks: Option<Vec<ThinkingBlockDelta>>,
    /// Tool call fragments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// A legacy function call fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCallDelta>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

/// A whole thinking block in a chunk, numbered as tool calls are: clients that merge a
/// chunk's list entries by `index` (the OpenAI SDKs' stream helpers) refuse entries without
/// one, and keep blocks with their own index apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThinkingBlockDelta {
    /// Which thinking block of the message this is (0, 1, …).
    pub index: u32,
    /// The block.
    #[serde(flatten)]
    pub block: crate::ThinkingBlock,
}

/// A fragment of a tool call: the first carries id, type and name; the rest carry argument text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which tool call of the choice this fragment belongs to (0, 1, …).
    pub index: u32,
    /// The call id (first fragment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `function` (first fragment).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The name and an argument fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

/// A fragment of a function call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    /// The function name (first fragment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A fragment of the arguments' JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}
