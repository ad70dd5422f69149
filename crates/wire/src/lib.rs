//! OpenAI Chat Completions wire types.
//!
//! This crate holds the request ([`ChatCompletionRequest`]), the response ([`ChatCompletion`]),
//! the stream chunk ([`ChatCompletionChunk`]), [`Usage`], the error envelope ([`ErrorResponse`])
//! and the models list ([`ModelList`]) of the OpenAI Chat Completions API, as plain serde data.
//!
//! Two rules make these types safe to put in the middle of a conversation between a client and
//! an upstream that are both newer than this crate:
//!
//! - **Nothing is dropped.** Every object keeps the fields it does not model in an `extra` map
//!   and writes them back; string enums end in an `Other(String)` variant and content parts in
//!   an `Unknown(Value)` variant.
//! - **Nothing is invented.** An absent optional field is never written as `null`. Fields that
//!   real traffic sends as an explicit `null` (`content`, `refusal`, `finish_reason`, …) are
//!   `Option<Option<T>>`: `None` is absent, `Some(None)` is `null`.
//!
//! And one more, for what goes to a model: **order is kept.** The members of a JSON object in
//! an `extra` map or a [`serde_json::Value`] (a tool's parameter schema, a `json_schema`, a
//! call's arguments read as an object) are written back in the order they came. A model writes
//! a structured answer in its schema's order, so a schema that puts `reasoning` before
//! `answer` must reach it that way. This is serde_json's `preserve_order` feature, which this
//! crate turns on; Cargo turns a feature on for the whole program, so every
//! `serde_json::Map` in a program that uses this crate keeps its insertion order.
//!
//! Where the two rules give way, on purpose:
//! - an explicit `null` on the other optional fields (`"tools": null`, `"seed": null`) reads
//!   as absent and is written back absent, which means the same to the API;
//! - [`Usage`]'s three counts are always written, as the spec requires: a count the sender left
//!   out, or sent as `null`, is written as 0 (and one sent as a string of digits as its
//!   number);
//! - a thinking block of a type this crate does not know is an error, not kept;
//! - numbers are `serde_json`'s: an integer beyond 64 bits in an `extra` map comes back as
//!   a float.
//!
//! Parse with [`from_slice`] to get errors that name the JSON path of the bad value:
//!
//! ```
//! use uniproxy_wire::{from_slice, ChatCompletionRequest};
//!
//! let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}],"x-new":1}"#;
//! let mut request: ChatCompletionRequest = from_slice(body)?;
//! request.model = "llama3".into();
//! let out = serde_json::to_string(&request)?;
//! assert_eq!(out, r#"{"model":"llama3","messages":[{"role":"user","content":"Hi"}],"x-new":1}"#);
//!
//! let body = br#"{"model":"m","messages":[],"tools":[{"type":"function","function":{"name":"f","parameters":{"properties":{"why":{},"answer":{}}}}}]}"#;
//! let request: ChatCompletionRequest = from_slice(body)?;
//! assert_eq!(serde_json::to_vec(&request)?, body);
//!
//! let bad = br#"{"model":"gpt-4o","messages":[{"role":"user","content":7}]}"#;
//! let err = from_slice::<ChatCompletionRequest>(bad).unwrap_err();
//! assert_eq!(err.path(), "messages[0].content");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod message;
mod models;
pub mod nullable;
mod parse;
mod request;
mod response;
mod stream;
mod usage;

pub use error::{ErrorDetail, ErrorResponse};
pub use message::{
    ContentPart, FileData, FunctionCall, ImageDetail, ImageUrl, InputAudio, Message,
    MessageContent, Role, ThinkingBlock, ToolCall,
};
pub use models::{Model, ModelList};
pub use parse::{WireError, from_bytes, from_slice};
pub use request::{
    AllowedTools, AllowedToolsChoice, ChatCompletionRequest, FunctionCallChoice,
    FunctionDefinition, JsonSchemaFormat, NamedFunction, NamedToolChoice, ResponseFormat, Stop,
    StreamOptions, Tool, ToolChoice, ToolChoiceMode,
};
pub use response::{ChatCompletion, Choice, FinishReason};
pub use stream::{
    ChatCompletionChunk, ChunkChoice, Delta, FunctionCallDelta, ThinkingBlockDelta, ToolCallDelta,
};
pub use usage::{CompletionTokensDetails, PromptTokensDetails, Usage};

/// A JSON object: the type of every `extra` map.
pub type Map = serde_json::Map<String, serde_json::Value>;

/// Declares a string enum whose unknown values are kept in an `Other(String)` variant.
macro_rules! open_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value this version does not know; kept as sent.
            Other(String),
        }

        impl $name {
            /// The value as it appears on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => Self::$variant,)*
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a string")
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                        Ok($name::from(v))
                    }
                }
                deserializer.deserialize_str(V)
            }
        }
    };
}
pub(crate) use open_enum;
