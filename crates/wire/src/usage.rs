use serde::{Deserialize, Serialize};

use crate::Map;

/// Token usage of a completion.
///
/// The three counts are read leniently: `null`, a float, a negative number or a string of
/// digits is read as what it says or 0, never an error. Some OpenAI-compatible servers send
/// `"completion_tokens": null`, and an answer must not be lost over its bookkeeping (the
/// proxy asks for a stream's usage itself, so a refused count would break a stream the client
/// never asked it of).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt, cached ones included.
    #[serde(default, deserialize_with = "count")]
    pub prompt_tokens: u64,
    /// Tokens generated, reasoning included.
    #[serde(default, deserialize_with = "count")]
    pub completion_tokens: u64,
    /// Prompt plus completion.
    #[serde(default, deserialize_with = "count")]
    pub total_tokens: u64,
    /// Breakdown of the prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    /// Breakdown of the completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

impl Usage {
    /// Cached prompt tokens, when reported.
    pub fn cached_tokens(&self) -> Option<u64> {
        self.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens)
    }

    /// Reasoning tokens, when reported.
    pub fn reasoning_tokens(&self) -> Option<u64> {
        self.completion_tokens_details.as_ref().and_then(|d| d.reasoning_tokens)
    }
}

/// Breakdown of the prompt tokens. Its counts are read as leniently as [`Usage`]'s: `null` (or
/// anything that is no count) is absent, and a float, a negative number or a string of digits
/// is what it says.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Tokens read from the prompt cache.
    #[serde(default, deserialize_with = "detail", skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Audio input tokens.
    #[serde(default, deserialize_with = "detail", skip_serializing_if = "Option::is_none")]
    pub audio_tokens: Option<u64>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

/// Breakdown of the completion tokens, read as leniently as [`PromptTokensDetails`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    /// Tokens spent reasoning.
    #[serde(default, deserialize_with = "detail", skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    /// Audio output tokens.
    #[serde(default, deserialize_with = "detail", skip_serializing_if = "Option::is_none")]
    pub audio_tokens: Option<u64>,
    /// Predicted tokens that appeared in the completion.
    #[serde(default, deserialize_with = "detail", skip_serializing_if = "Option::is_none")]
    pub accepted_prediction_tokens: Option<u64>,
    /// Predicted tokens that did not.
    #[serde(default, deserialize_with = "detail", skip_serializing_if = "Option::is_none")]
    pub rejected_prediction_tokens: Option<u64>,
    /// Fields this version does not model.
    #[serde(flatten)]
    pub extra: Map,
}

/// A token count as a server may write it: an integer, or `null`, a float, a negative number,
/// a string of digits (as what it says, or 0), or anything else (0): [`detail`]'s reading,
/// with 0 for what is absent there.
fn count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    detail(d).map(Option::unwrap_or_default)
}

/// A detail's token count as a server may write it: an integer; a float, rounded; a negative
/// number, 0; a string of digits, as what it says; `null`, and whatever is no number or
/// string of digits, absent.
fn detail<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Detail;

    impl<'de> serde::de::Visitor<'de> for Detail {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a token count")
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Option<u64>, E> {
            Ok(Some(v))
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Option<u64>, E> {
            Ok(Some(u64::try_from(v).unwrap_or(0)))
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Option<u64>, E> {
            // `as` saturates, and makes NaN 0.
            Ok(Some(if v > 0.0 { v.round() as u64 } else { 0 }))
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Option<u64>, E> {
            Ok(v.trim().parse().ok())
        }

        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Option<u64>, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Option<u64>, E> {
            Ok(None)
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Option<u64>, E> {
            Ok(None)
        }

        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<u64>, D::Error> {
            d.deserialize_any(Detail)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Option<u64>, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Option<u64>, A::Error> {
            while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }

    d.deserialize_any(Detail)
}

#[cfg(test)]
mod tests {
    use super::Usage;

    #[test]
    fn a_count_a_server_wrote_oddly_is_read_not_refused() {
        let read = |json: &str| {
            serde_json::from_str::<Usage>(json)
                .map(|u| (u.prompt_tokens, u.completion_tokens, u.total_tokens))
        };
        assert_eq!(
            read(r#"{"prompt_tokens":10,"completion_tokens":null,"total_tokens":null}"#).unwrap(),
            (10, 0, 0)
        );
        assert_eq!(
            read(r#"{"prompt_tokens":10.0,"completion_tokens":-3,"total_tokens":"12"}"#).unwrap(),
            (10, 0, 12)
        );
        assert_eq!(
            read(r#"{"prompt_tokens":true,"completion_tokens":[1],"total_tokens":{"a":1}}"#)
                .unwrap(),
            (0, 0, 0)
        );
        assert_eq!(read(r#"{}"#).unwrap(), (0, 0, 0));
        // The details' counts too: a server's `0.0` must not lose the answer.
        let details = |json: &str| {
            serde_json::from_str::<Usage>(json).map(|u| (u.cached_tokens(), u.reasoning_tokens()))
        };
        assert_eq!(
            details(r#"{"prompt_tokens_details":{"cached_tokens":0.0},"completion_tokens_details":{"reasoning_tokens":"7"}}"#).unwrap(),
            (Some(0), Some(7))
        );
        assert_eq!(
            details(r#"{"prompt_tokens_details":{"cached_tokens":null},"completion_tokens_details":{"reasoning_tokens":-2}}"#).unwrap(),
            (None, Some(0))
        );
        assert_eq!(
            details(r#"{"prompt_tokens_details":{"cached_tokens":"n/a","audio_tokens":[1]},"completion_tokens_details":{"reasoning_tokens":true}}"#).unwrap(),
            (None, None)
        );
        // The usage itself must still be an object (a list is no usage).
        assert!(serde_json::from_str::<Option<Usage>>("null").unwrap().is_none());
    }
}
