//! Anthropic Messages API wire types, local to this crate.
//!
//! Request types are written only (`Serialize`) and hold nothing the translator did not put
//! there. Response and stream types are read only (`Deserialize`): they ignore fields they do
//! not model, and content blocks, deltas and events of a type this version does not know read
//! as `Unknown` instead of failing, because Anthropic adds new ones (server tools, citations)
//! without a version bump.

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

/// A `POST /v1/messages` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct MessagesRequest {
    pub(crate) model: String,
    pub(crate) max_tokens: u32,
    /// Every system and developer message, in order, one text block each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) system: Vec<SystemBlock>,
    pub(crate) messages: Vec<InputMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) metadata: Option<Metadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stop_sequences: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) temperature: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) top_p: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) top_k: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tools: Option<Vec<ToolDefinition>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tool_choice: Option<ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) thinking: Option<ThinkingConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) output_config: Option<OutputConfig>,
}

/// `output_config`: the answer's format (structured outputs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct OutputConfig {
    pub(crate) format: OutputFormat,
}

/// A JSON answer that follows `schema`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum OutputFormat {
    JsonSchema { schema: Value },
}

/// A text block of the top-level `system` prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct SystemBlock {
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cache_control: Option<Value>,
}

impl SystemBlock {
    pub(crate) fn text(text: String, cache_control: Option<Value>) -> Self {
        SystemBlock { kind: "text", text, cache_control }
    }
}

/// `metadata`: only the end-user id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Metadata {
    pub(crate) user_id: String,
}

/// The two roles of the Messages API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum InputRole {
    User,
    Assistant,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct InputMessage {
    pub(crate) role: InputRole,
    pub(crate) content: Vec<InputBlock>,
}

/// A content block in a request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum InputBlock {
    /// `cache_control` (here and on images and documents) marks where a cached prefix ends
    /// (prompt caching).
    Text {
        text: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    Image {
        source: ImageSource,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    /// A PDF.
    Document {
        source: ImageSource,
        #[serde(skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    /// Earlier thinking given back (first in its assistant turn).
    Thinking {
        thinking: String,
        signature: String,
    },
    RedactedThinking {
        data: String,
    },
    ToolResult {
        tool_use_id: String,
        content: ToolResultContent,
    },
}

impl InputBlock {
    /// Whether the block is earlier thinking given back.
    pub(crate) fn is_thinking(&self) -> bool {
        matches!(self, InputBlock::Thinking { .. } | InputBlock::RedactedThinking { .. })
    }
}

/// Where an image or a document comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

/// A tool result: a string, or text and image blocks.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub(crate) enum ToolResultContent {
    Text(String),
    Blocks(Vec<InputBlock>),
}

/// A client tool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ToolDefinition {
    pub(crate) name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) description: Option<String>,
    pub(crate) input_schema: Value,
    /// Grammar-constrained tool input (Anthropic's strict tool use); only ever `true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) strict: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cache_control: Option<Value>,
}

/// How the model may use tools.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ToolChoice {
    Auto {
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Any {
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Tool {
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    None,
}

/// Extended thinking.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ThinkingConfig {
    Enabled { budget_tokens: u32 },
}

/// A non-stream answer (`type: "message"`). Members it does not name (`id`, `stop_sequence`,
/// …) are skipped: nothing in the translation needs them, and a `#[serde(flatten)]` map to
/// keep them made serde buffer the whole answer before reading it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct MessagesResponse {
    /// `message`; `error` for an error envelope (with `error`).
    #[serde(default, rename = "type")]
    pub(crate) kind: Option<String>,
    #[serde(default)]
    pub(crate) error: Option<ErrorBody>,
    #[serde(default)]
    pub(crate) model: String,
    /// Required of an answer (it may be empty); an error envelope has none.
    #[serde(default)]
    pub(crate) content: Option<Vec<ContentBlock>>,
    #[serde(default)]
    pub(crate) stop_reason: Option<String>,
    /// `stop_details.explanation` (see [`explanation`]).
    #[serde(default, rename = "stop_details", deserialize_with = "explanation")]
    pub(crate) stop_explanation: Option<String>,
    #[serde(default)]
    pub(crate) usage: Option<Usage>,
}

/// A content block in an answer, or in `content_block_start`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ContentBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
        /// In an answer; in a stream it comes as a `signature_delta`.
        #[serde(default)]
        signature: Option<String>,
    },
    RedactedThinking {
        data: String,
    },
    /// `server_tool_use`, `web_search_tool_result`, and types to come: nothing the OpenAI
    /// shape can carry.
    #[serde(other)]
    Unknown,
}

/// Token usage. Every field is optional: `message_delta` may repeat only some of them, and
/// the cache counters can be `null`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub(crate) struct Usage {
    #[serde(default)]
    pub(crate) input_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) output_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) cache_read_input_tokens: Option<u64>,
}

impl Usage {
    /// Takes the counters `newer` reports: `message_delta` usage is cumulative.
    pub(crate) fn update(&mut self, newer: &Usage) {
        let pairs = [
            (&mut self.input_tokens, newer.input_tokens),
            (&mut self.output_tokens, newer.output_tokens),
            (&mut self.cache_creation_input_tokens, newer.cache_creation_input_tokens),
            (&mut self.cache_read_input_tokens, newer.cache_read_input_tokens),
        ];
        for (mine, theirs) in pairs {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
    }
}

/// One stream event; the SSE `event:` name always equals `type`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum StreamEvent {
    MessageStart {
        message: MessageStart,
    },
    ContentBlockStart {
        index: u32,
        content_block: ContentBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<Usage>,
    },
    MessageStop,
    Ping,
    Error {
        error: ErrorBody,
    },
    /// An event type this version does not know: ignored.
    #[serde(other)]
    Unknown,
}

/// The message skeleton in `message_start`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct MessageStart {
    #[serde(default)]
    pub(crate) model: String,
    #[serde(default)]
    pub(crate) usage: Option<Usage>,
}

/// A fragment of a content block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    SignatureDelta {
        signature: String,
    },
    /// `citations_delta` and types to come.
    #[serde(other)]
    Unknown,
}

/// The top-level changes in `message_delta`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct MessageDeltaBody {
    #[serde(default)]
    pub(crate) stop_reason: Option<String>,
    /// `stop_details.explanation` (see [`explanation`]).
    #[serde(default, rename = "stop_details", deserialize_with = "explanation")]
    pub(crate) stop_explanation: Option<String>,
}

/// The `explanation` of a `stop_details` member, read leniently: Anthropic documents the
/// member only for refusals (`{"type": "refusal", "category", "explanation"}`, `null` on other
/// stops), and a shape this version does not expect (no object, no string, a blank one) is no
/// explanation rather than a malformed answer.
fn explanation<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let details = Value::deserialize(d)?;
    Ok(details
        .get("explanation")
        .and_then(Value::as_str)
        .filter(|e| !e.trim().is_empty())
        .map(str::to_owned))
}

/// An error body: `{"type":"error","error":{"type","message"},"request_id"}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct ErrorEnvelope {
    pub(crate) error: ErrorBody,
}

/// The error itself.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) message: String,
}
