use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use crate::{Map, Message, open_enum};

/// A `POST /chat/completions` body. [`ChatCompletionRequest::new`] makes one from the two
/// members every request has; the others are set as fields, or left at their default (unset).
///
/// ```
/// use uniproxy_wire::{ChatCompletionRequest, FunctionDefinition, Message, Role, Tool};
///
/// let mut request = ChatCompletionRequest::new("gpt-4o", vec![Message::text(Role::User, "Hi")]);
/// request.tools = Some(vec![Tool::function(FunctionDefinition {
///     name: "now".into(),
///     ..FunctionDefinition::default()
/// })]);
/// let json = serde_json::to_value(&request)?;
/// assert_eq!(json["tools"][0]["function"]["name"], "now");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "a JSON object, the chat completion request")]
pub struct ChatCompletionRequest {
    /// The model the client asked for (the proxy replaces it). Azure deployments name the
    /// model in the URL, so it may be absent (empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// Whether and which tool the model must call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Whether the model may call several tools at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Legacy functions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<FunctionDefinition>>,
    /// Legacy function choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCallChoice>,
    /// The output format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// Sampling temperature (a `Number`, so `0` stays `0` and `0.7` stays `0.7`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<Number>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<Number>,
    /// How many choices to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Legacy limit on generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Limit on generated tokens, reasoning included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Presence penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<Number>,
    /// Frequency penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<Number>,
    /// Token id → bias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<Map>,
    /// Whether to return log probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// How many top log probabilities per token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    /// Seed for deterministic sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// End-user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Whether to stream the answer as server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Stream options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Reasoning effort for reasoning models (`minimal`, `low`, `medium`, `high`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    /// Key-value metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map>,
    /// Whether to store the completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    /// The service tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    /// Output modalities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modalities: Option<Vec<String>>,
    /// Predicted output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<Value>,
    /// Fields this version does not model; forwarded untouched.
    #[serde(flatten)]
    pub extra: Map,
}

impl ChatCompletionRequest {
    /// A request for `model` with `messages`, every other member unset.
    pub fn new(model: impl Into<String>, messages: Vec<Message>) -> Self {
        ChatCompletionRequest { model: model.into(), messages, ..ChatCompletionRequest::default() }
    }

    /// Whether the client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// Whether the client asked for the usage chunk at the end of a stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.include_usage) == Some(true)
    }

    /// Whether the client asked for any JSON object as the answer (`response_format`
    /// `json_object`).
    pub fn wants_json_object(&self) -> bool {
        matches!(self.response_format, Some(ResponseFormat::JsonObject { .. }))
    }

    /// The token limit the client set, `max_completion_tokens` first.
    pub fn token_limit(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Whether the request offers the model tools or legacy functions.
    pub fn has_tools(&self) -> bool {
        self.tools.as_ref().is_some_and(|t| !t.is_empty())
            || self.functions.as_ref().is_some_and(|f| !f.is_empty())
    }

    /// Whether the request offers legacy functions and no tools: the answer's call is then a
    /// legacy `function_call`, as OpenAI gives it.
    pub fn offers_only_functions(&self) -> bool {
        self.functions.as_ref().is_some_and(|f| !f.is_empty())
            && self.tools.as_ref().is_none_or(Vec::is_empty)
    }
}

/// Stop sequences: one string or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "expected a string or an array of strings")]
pub enum Stop {
    /// One sequence.
    One(String),
    /// Several sequences.
    Many(Vec<String>),
}

impl Stop {
    /// The sequences as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }
}

/// Stream options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "an object ({\"include_usage\": …})")]
pub struct StreamOptions {
    /// Send a usage chunk before `[DONE]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "a tool object ({\"type\": \"function\", \"function\": …})")]
pub struct Tool {
    /// `function` (or a newer kind such as `custom`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The function, for function tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDefinition>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

impl Tool {
    /// A `function` tool.
    #[must_use]
    pub fn function(function: FunctionDefinition) -> Self {
        Tool { kind: "function".to_owned(), function: Some(function), extra: Map::new() }
    }
}

/// A function the model may call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "a function object ({\"name\": …, \"parameters\": …})")]
pub struct FunctionDefinition {
    /// The function name.
    pub name: String,
    /// What the function does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON schema of the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Whether the arguments must follow the schema exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

open_enum! {
    /// `none`, `auto` or `required`.
    pub enum ToolChoiceMode {
        /// Call no tool.
        None = "none",
        /// The model decides.
        Auto = "auto",
        /// Call at least one tool.
        Required = "required",
    }
}

/// Which tool the model must call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    /// `none`, `auto` or `required`.
    Mode(ToolChoiceMode),
    /// A named function.
    Named(NamedToolChoice),
    /// Only some of the request's tools.
    AllowedTools(AllowedToolsChoice),
    /// A form this version does not know (`custom`, …).
    Other(Value),
}

/// `{"type":"allowed_tools","allowed_tools":{"mode":…,"tools":[…]}}`: the model may call only
/// the tools listed, which the request's `tools` define.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllowedToolsChoice {
    /// `allowed_tools`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The tools and the mode.
    pub allowed_tools: AllowedTools,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

/// The tools an [`AllowedToolsChoice`] allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllowedTools {
    /// `auto` (call one of them or answer) or `required` (call one of them).
    pub mode: ToolChoiceMode,
    /// The tools, by name: `{"type":"function","function":{"name":…}}`.
    pub tools: Vec<Tool>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

/// `{"type":"function","function":{"name":…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "an object ({\"type\": \"function\", \"function\": {\"name\": …}})")]
pub struct NamedToolChoice {
    /// `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function to call.
    pub function: NamedFunction,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

/// A function named by the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "an object ({\"name\": …})")]
pub struct NamedFunction {
    /// The function name.
    pub name: String,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

/// The legacy `function_call` choice: `none`, `auto`, or `{"name":…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, expecting = "expected `none`, `auto` or an object {\"name\": …}")]
pub enum FunctionCallChoice {
    /// `none` or `auto`.
    Mode(ToolChoiceMode),
    /// A named function.
    Named(NamedFunction),
}

/// The output format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text.
    Text {
        /// Fields this version does not model.
        #[serde(flatten)]
        extra: Map,
    },
    /// Any JSON object.
    JsonObject {
        /// Fields this version does not model.
        #[serde(flatten)]
        extra: Map,
    },
    /// JSON following a schema.
    JsonSchema {
        /// The schema.
        json_schema: JsonSchemaFormat,
        /// Fields this version does not model.
        #[serde(flatten)]
        extra: Map,
    },
    /// A format this version does not know.
    #[serde(untagged)]
    Other(Value),
}

/// A named JSON schema for structured output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "an object ({\"name\": …, \"schema\": …})")]
pub struct JsonSchemaFormat {
    /// The schema's name.
    pub name: String,
    /// What the output is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// Whether the output must follow the schema exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}
