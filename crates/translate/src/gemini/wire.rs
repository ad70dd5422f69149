//! Gemini's own wire types (`generateContent`, camelCase JSON), local to this crate.
//!
//! Every object keeps the fields it does not model in an `extra` map, and a [`Part`] is a
//! struct of optional fields rather than an enum, so a part kind this version does not know
//! (`executableCode`, `videoMetadata`, …) reads without failing.

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};
use uniproxy_wire::Map;

/// A `generateContent` / `streamGenerateContent` request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateContentRequest {
    /// The conversation, `user` and `model` turns.
    pub(crate) contents: Vec<Content>,
    /// System and developer instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) system_instruction: Option<Content>,
    /// Function declarations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tools: Option<Vec<GeminiTool>>,
    /// How the model may call functions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tool_config: Option<ToolConfig>,
    /// Sampling and output options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) generation_config: Option<GenerationConfig>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub(crate) extra: Map,
}

/// One turn of the conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Content {
    /// `user` or `model`; absent on system instructions and on some Vertex answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) role: Option<String>,
    /// The parts; absent when a candidate was blocked or ran out of tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) parts: Vec<Part>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub(crate) extra: Map,
}

/// One part of a turn: text, a thought, inline or file data, a function call or its result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Part {
    /// Text (a thought summary when `thought` is true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) text: Option<String>,
    /// Whether the text is the model's thinking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) thought: Option<bool>,
    /// Opaque signature of the model's thinking, to be sent back with the part it came on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) thought_signature: Option<String>,
    /// Base64 data with its MIME type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) inline_data: Option<Blob>,
    /// Data by URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) file_data: Option<FileData>,
    /// A function call made by the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) function_call: Option<Box<FunctionCall>>,
    /// The result of a function call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) function_response: Option<Box<FunctionResponse>>,
    /// Part kinds and fields this version does not model.
    #[serde(flatten)]
    pub(crate) extra: Map,
}

impl Part {
    /// A text part.
    pub(crate) fn text(text: impl Into<String>) -> Self {
        Part { text: Some(text.into()), ..Default::default() }
    }
}

/// Inline base64 data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Blob {
    /// The MIME type.
    pub(crate) mime_type: String,
    /// Base64 data.
    pub(crate) data: String,
}

/// Data by URI.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FileData {
    /// The MIME type, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mime_type: Option<String>,
    /// The URI.
    pub(crate) file_uri: String,
}

/// A function call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FunctionCall {
    /// The call id; the Developer API sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    /// The function name.
    #[serde(default)]
    pub(crate) name: String,
    /// The arguments object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) args: Option<Map>,
    /// Fields this version does not model (`partialArgs`, `willContinue`).
    #[serde(flatten)]
    pub(crate) extra: Map,
}

/// The result of a function call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FunctionResponse {
    /// The id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    /// The function name.
    pub(crate) name: String,
    /// The result: always an object.
    pub(crate) response: Map,
}

/// A tool: function declarations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GeminiTool {
    /// The functions.
    pub(crate) function_declarations: Vec<FunctionDeclaration>,
}

/// A function the model may call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FunctionDeclaration {
    /// The name.
    pub(crate) name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) description: Option<String>,
    /// The arguments' schema, in Gemini's OpenAPI subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) parameters: Option<Value>,
    /// The arguments' schema as JSON Schema, where the subset cannot state it (instead of
    /// `parameters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) parameters_json_schema: Option<Value>,
}

/// Tool configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ToolConfig {
    /// Function calling mode.
    pub(crate) function_calling_config: FunctionCallingConfig,
}

/// `AUTO`, `ANY` or `NONE`, and the functions allowed under `ANY`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FunctionCallingConfig {
    /// The mode.
    pub(crate) mode: String,
    /// The functions the model may call (mode `ANY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) allowed_function_names: Option<Vec<String>>,
}

/// Sampling and output options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerationConfig {
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) stop_sequences: Option<Vec<String>>,
    /// Output MIME type (`application/json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) response_mime_type: Option<String>,
    /// Output schema, in Gemini's OpenAPI subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) response_schema: Option<Value>,
    /// Output schema as JSON Schema, where the subset cannot state it (instead of
    /// `response_schema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) response_json_schema: Option<Value>,
    /// Number of candidates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) candidate_count: Option<u32>,
    /// Token limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_output_tokens: Option<u32>,
    /// Temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) temperature: Option<Number>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) top_p: Option<Number>,
    /// Top-k sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) top_k: Option<Number>,
    /// Seed (32-bit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) seed: Option<i32>,
    /// Presence penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) presence_penalty: Option<Number>,
    /// Frequency penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) frequency_penalty: Option<Number>,
    /// Thinking options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) thinking_config: Option<ThinkingConfig>,
}

/// Thinking options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ThinkingConfig {
    /// Whether thought summaries come back as `thought: true` parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) include_thoughts: Option<bool>,
    /// Thinking tokens allowed (0 turns thinking off where the model allows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) thinking_budget: Option<u32>,
}

/// A `generateContent` answer, or one event of a stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateContentResponse {
    /// The candidates; absent (or empty) when the prompt was blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) candidates: Option<Vec<Candidate>>,
    /// Why the prompt was blocked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) prompt_feedback: Option<PromptFeedback>,
    /// Token counts, cumulative in a stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) usage_metadata: Option<UsageMetadata>,
    /// The model that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) model_version: Option<String>,
    /// The response id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) response_id: Option<String>,
    /// An error reported in place of an answer (Vertex, mid-stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<GoogleError>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub(crate) extra: Map,
}

impl GenerateContentResponse {
    /// The candidates, none when absent.
    pub(crate) fn candidates(&self) -> &[Candidate] {
        self.candidates.as_deref().unwrap_or_default()
    }
}

/// One candidate answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Candidate {
    /// The content; absent or without parts when blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) content: Option<Content>,
    /// Why generation stopped; absent until it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) finish_reason: Option<GeminiFinishReason>,
    /// Why it stopped, for a person (`Malformed function call: …`); only with a finish reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) finish_message: Option<String>,
    /// The candidate's index (absent for the first on some answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) index: Option<u32>,
    /// Fields this version does not model (`safetyRatings`, `citationMetadata`, …).
    #[serde(flatten)]
    pub(crate) extra: Map,
}

/// Why a candidate stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum GeminiFinishReason {
    /// A natural stop or a stop sequence (also after function calls).
    Stop,
    /// The token limit.
    MaxTokens,
    /// Flagged for safety.
    Safety,
    /// Flagged for recitation.
    Recitation,
    /// Forbidden terms.
    Blocklist,
    /// Prohibited content.
    ProhibitedContent,
    /// Sensitive personal data.
    Spii,
    /// Unsafe generated images.
    ImageSafety,
    /// Prohibited generated images.
    ImageProhibitedContent,
    /// Recited generated images.
    ImageRecitation,
    /// A reason this version does not know, or one with no OpenAI counterpart.
    #[serde(untagged)]
    Other(String),
}

/// Feedback on the prompt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PromptFeedback {
    /// Why the prompt was blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) block_reason: Option<String>,
    /// A message about the block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) block_reason_message: Option<String>,
    /// Fields this version does not model (`safetyRatings`).
    #[serde(flatten)]
    pub(crate) extra: Map,
}

impl PromptFeedback {
    /// Whether the feedback says the prompt was blocked.
    pub(crate) fn is_block(&self) -> bool {
        self.block_reason.is_some() || self.block_reason_message.is_some()
    }
}

/// Token counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UsageMetadata {
    /// Prompt tokens, cached ones included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) prompt_token_count: Option<u64>,
    /// Answer tokens, thoughts excluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) candidates_token_count: Option<u64>,
    /// Thinking tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) thoughts_token_count: Option<u64>,
    /// Prompt tokens read from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cached_content_token_count: Option<u64>,
    /// Input tokens of tool use (built-in tools' results), billed as input beside the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tool_use_prompt_token_count: Option<u64>,
    /// Everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) total_token_count: Option<u64>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub(crate) extra: Map,
}

/// `{"error":{…}}`, Google's error envelope.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct GoogleErrorBody {
    /// The error.
    pub(crate) error: GoogleError,
}

/// A Google API error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct GoogleError {
    /// The HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) code: Option<i64>,
    /// A message for a person.
    #[serde(default)]
    pub(crate) message: String,
    /// The gRPC status name (`INVALID_ARGUMENT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<String>,
    /// Fields this version does not model (`details`).
    #[serde(flatten)]
    pub(crate) extra: Map,
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::{GenerateContentRequest, GenerateContentResponse};

    /// Deserializes and serializes a captured-shape payload and compares as JSON values: nothing
    /// is lost or invented, unknown fields included.
    fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(text: &str) {
        let original: Value = serde_json::from_str(text).unwrap();
        let typed: T = serde_json::from_value(original.clone()).unwrap();
        assert_eq!(serde_json::to_value(&typed).unwrap(), original);
    }

    #[test]
    fn responses_round_trip() {
        for text in [
            include_str!("../../tests/data/gemini/responses/parallel-calls.response.json"),
            include_str!("../../tests/data/gemini/responses/thought-parts.response.json"),
            include_str!("../../tests/data/gemini/responses/finish-recitation.response.json"),
            include_str!("../../tests/data/gemini/responses/finish-unknown.response.json"),
            include_str!(
                "../../tests/data/gemini/responses/finish-malformed-function-call.response.json"
            ),
            include_str!("../../tests/data/gemini/responses/prompt-blocked.response.json"),
            include_str!("../../tests/data/gemini/responses/usage-thoughts-cache.response.json"),
        ] {
            round_trip::<GenerateContentResponse>(text);
        }
    }

    #[test]
    fn request_round_trips() {
        let expected: Value = serde_json::from_str(include_str!(
            "../../tests/data/gemini/requests/tool-roundtrip.expected.json"
        ))
        .unwrap();
        round_trip::<GenerateContentRequest>(&expected["body"].to_string());
    }
}
