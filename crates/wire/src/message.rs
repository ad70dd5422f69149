use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::{Map, open_enum};

open_enum! {
    /// The author of a message.
    pub enum Role {
        /// Instructions from the application (older models).
        System = "system",
        /// Instructions from the application (newer models).
        Developer = "developer",
        /// The end user.
        User = "user",
        /// The model.
        Assistant = "assistant",
        /// The result of a tool call.
        Tool = "tool",
        /// The result of a legacy function call.
        Function = "function",
    }
}

/// One message of a conversation, in a request or in a response.
///
/// A single struct serves every role: the role decides which fields matter, and translators
/// check that (a `tool` message needs `tool_call_id`). Keeping it flat lets a message with a
/// role this crate does not know pass through untouched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "a message object ({\"role\": …, \"content\": …})")]
pub struct Message {
    /// Who wrote the message.
    pub role: Role,
    /// The text or content parts; `Some(None)` is an explicit `null` (an assistant message
    /// that only calls tools).
    #[serde(default, with = "crate::nullable", skip_serializing_if = "Option::is_none")]
    pub content: Option<Option<MessageContent>>,
    /// An optional name for the participant, or the function name of a `function` message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The model's refusal message (assistant messages).
    #[serde(default, with = "crate::nullable", skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Option<String>>,
    /// Tool calls made by the model (assistant messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The call this message answers (tool messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Legacy function call made by the model (assistant messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCall>,
    /// Reasoning text, as DeepSeek and other OpenAI-compatible servers return it.
    #[serde(default, with = "crate::nullable", skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<Option<String>>,
    /// The model's thinking with what it takes to give it back (assistant messages): Claude's
    /// signed thinking blocks, in the shape LiteLLM gives them. Not an OpenAI member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_blocks: Option<Vec<ThinkingBlock>>,
    /// Fields this version does not model; forwarded untouched.
    #[serde(flatten)]
    pub extra: Map,
}

impl Message {
    /// A message with a role and plain text content.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            content: Some(Some(MessageContent::Text(text.into()))),
            name: None,
            refusal: None,
            tool_calls: None,
            tool_call_id: None,
            function_call: None,
            reasoning_content: None,
            thinking_blocks: None,
            extra: Map::new(),
        }
    }

    /// An assistant message as an answer writes it: `refusal` is there, `null`, as in
    /// OpenAI's answers (the spec's `ChatCompletionResponseMessage` requires it).
    pub fn answer(text: impl Into<String>) -> Self {
        Message { refusal: Some(None), ..Message::text(Role::Assistant, text) }
    }

    /// The content, if present and not `null`.
    pub fn content(&self) -> Option<&MessageContent> {
        self.content.as_ref().and_then(Option::as_ref)
    }
}

/// A block of the model's thinking, as Anthropic writes it: the signature (or the encrypted
/// `data` of a redacted block) lets a later request give the thinking back, which Claude
/// wants at the start of the assistant turn of a tool loop when thinking is on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ThinkingBlock {
    /// Thinking in the clear.
    Thinking {
        /// The text.
        thinking: String,
        /// Anthropic's signature over the text; a block without one cannot be given back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
        /// Fields this version does not model (a client's `cache_control`).
        #[serde(flatten)]
        extra: Map,
    },
    /// Thinking the safety systems flagged, encrypted.
    RedactedThinking {
        /// The encrypted thinking.
        data: String,
        /// Fields this version does not model.
        #[serde(flatten)]
        extra: Map,
    },
}

/// Message content: a string, or an array of parts.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Text, images, audio, files and refusals.
    Parts(Vec<ContentPart>),
}

impl MessageContent {
    /// The text of the content: the string, or the text parts joined without separator.
    pub fn joined_text(&self) -> String {
        match self {
            MessageContent::Text(s) => s.clone(),
            MessageContent::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect(),
        }
    }
}

impl Serialize for MessageContent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            MessageContent::Text(s) => serializer.serialize_str(s),
            MessageContent::Parts(p) => p.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for MessageContent {
    // Hand-written rather than `untagged` so the common case (a string) is not buffered and an
    // error inside a part keeps its path.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = MessageContent;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MessageContent, E> {
                Ok(MessageContent::Text(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<MessageContent, E> {
                Ok(MessageContent::Text(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<MessageContent, A::Error> {
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(1));
                while let Some(part) = seq.next_element()? {
                    parts.push(part);
                }
                Ok(MessageContent::Parts(parts))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// One part of an array content.
// `remote = "Self"` turns the derives into inherent functions for the known parts, which the trait
// impls below call; an `untagged` `Unknown` in the derive would swallow a malformed known part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// Text.
    Text {
        /// The text.
        text: String,
        /// Fields this version does not model.
        #[serde(flatten)]
        extra: Map,
    },
    /// An image by URL or `data:` URL.
    ImageUrl {
        /// The image.
        image_url: ImageUrl,
        /// Fields this version does not model.
        #[serde(flatten)]
        extra: Map,
    },
    /// Base64 audio.
    InputAudio {
        /// The audio.
        input_audio: InputAudio,
        /// Fields this version does not model.
        #[serde(flatten)]
        extra: Map,
    },
    /// A file by id or inline data.
    File {
        /// The file.
        file: FileData,
        /// Fields this version does not model.
        #[serde(flatten)]
        extra: Map,
    },
    /// A refusal (assistant messages).
    Refusal {
        /// The refusal text.
        refusal: String,
        /// Fields this version does not model.
        #[serde(flatten)]
        extra: Map,
    },
    /// A part type this version does not know; kept as sent.
    #[serde(skip)]
    Unknown(Value),
}

impl Serialize for ContentPart {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ContentPart::Unknown(value) => value.serialize(serializer),
            known => ContentPart::serialize(known, serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ContentPart {
    // A part whose `type` this version knows must have that type's shape, so a malformed one is
    // an error at its path (`messages[0].content[1]`) instead of passing through as `Unknown`.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        match value.get("type").and_then(Value::as_str) {
            Some("text" | "image_url" | "input_audio" | "file" | "refusal") => {
                ContentPart::deserialize(value).map_err(serde::de::Error::custom)
            }
            _ => Ok(ContentPart::Unknown(value)),
        }
    }
}

/// An image reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "an object ({\"url\": …})")]
pub struct ImageUrl {
    /// An `http(s)` URL or a `data:` URL with base64 data.
    pub url: String,
    /// How closely the model should look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<ImageDetail>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

open_enum! {
    /// The detail level of an image.
    pub enum ImageDetail {
        /// Let the model choose.
        Auto = "auto",
        /// Low resolution.
        Low = "low",
        /// High resolution.
        High = "high",
    }
}

/// Base64 audio input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputAudio {
    /// Base64 audio data.
    pub data: String,
    /// `wav` or `mp3`.
    pub format: String,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

/// A file input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileData {
    /// Base64 data URL of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_data: Option<String>,
    /// The id of an uploaded file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    /// The file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

/// A tool call made by the model: a `function` call, or a call of another type (`custom`,
/// whose `custom` member holds the tool's name and its free-form `input`; or a type newer than
/// this version), kept with its members in `extra` so that it goes back to an upstream as
/// the client sent it.
// `remote = "Self"` turns the derives into inherent functions, which the trait impls below
// call: a `function` call must have its function, which serde's attributes cannot say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    remote = "Self",
    expecting = "a tool call object ({\"id\": …, \"type\": \"function\", \"function\": …})"
)]
pub struct ToolCall {
    /// The call id, echoed by the tool message that answers it.
    pub id: String,
    /// `function`, `custom`, or a newer type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function and its arguments: always there for a `function` call (the parse refuses
    /// one without); the spec gives the other types none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCall>,
    /// Fields this version does not model (a custom call's `custom`).
    #[serde(flatten)]
    pub extra: Map,
}

impl ToolCall {
    /// The function called, for a `function` call; `None` for the other types, which
    /// translators to platforms that have only function calls refuse.
    pub fn as_function(&self) -> Option<&FunctionCall> {
        self.function.as_ref().filter(|_| self.kind == "function")
    }
}

impl Serialize for ToolCall {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ToolCall::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for ToolCall {
    // A call whose `type` says `function` must have the function, as OpenAI requires: the
    // error names `function` as missing, at the call's path.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let call = ToolCall::deserialize(deserializer)?;
        if call.kind == "function" && call.function.is_none() {
            return Err(serde::de::Error::missing_field("function"));
        }
        Ok(call)
    }
}

/// A function name and its arguments as a JSON string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "an object ({\"name\": …, \"arguments\": …})")]
pub struct FunctionCall {
    /// The function to call.
    pub name: String,
    /// The arguments, as a JSON text the model wrote (it may be invalid JSON).
    pub arguments: String,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}
