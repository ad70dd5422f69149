//! Gemini answer → OpenAI `chat.completion`, and the pieces the stream shares: finish reasons,
//! usage, call ids, errors.

use uniproxy_wire::{
    ChatCompletion, Choice, CompletionTokensDetails, ErrorResponse, FinishReason, FunctionCall,
    Map, Message, PromptTokensDetails, ToolCall, Usage,
};

use super::signature_extra;
use super::wire::{
    Candidate, GeminiFinishReason, GenerateContentResponse, GoogleError, GoogleErrorBody,
    PromptFeedback, UsageMetadata,
};
use crate::error::first_or_only;
use crate::{ResponseContext, TranslateError, error_type_for_status, fallback_error};

/// How the client takes the model's function calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallShape {
    /// As `tool_calls`, each with its id.
    Tools,
    /// As one legacy `function_call` (the client offered only `functions`), as OpenAI answers
    /// such a request. The shape holds one call, and OpenAI never makes parallel calls for
    /// `functions`; Gemini has no switch for them, so a candidate's first call is given and
    /// any others are left out.
    Legacy,
}

impl CallShape {
    /// The shape the client of `ctx` takes.
    pub(crate) fn of(ctx: &ResponseContext) -> Self {
        if ctx.legacy_functions { CallShape::Legacy } else { CallShape::Tools }
    }

    /// The finish reason of a candidate that stopped having called functions.
    pub(crate) fn finish_reason(self) -> FinishReason {
        match self {
            CallShape::Tools => FinishReason::ToolCalls,
            CallShape::Legacy => FinishReason::FunctionCall,
        }
    }
}

/// The OpenAI finish reason for Gemini's. A candidate that stopped having called functions
/// (`called`, with the shape the client takes them in, when the caller knows it did) stopped
/// to have them run: `tool_calls`, or `function_call` for a legacy client.
pub(crate) fn finish_reason(
    reason: &GeminiFinishReason,
    called: Option<CallShape>,
) -> FinishReason {
    let reason = stop_reason(reason);
    match called {
        Some(shape) if reason == FinishReason::Stop => shape.finish_reason(),
        _ => reason,
    }
}

/// The OpenAI finish reason for Gemini's, as if no function was called.
fn stop_reason(reason: &GeminiFinishReason) -> FinishReason {
    match reason {
        GeminiFinishReason::Stop => FinishReason::Stop,
        GeminiFinishReason::MaxTokens => FinishReason::Length,
        GeminiFinishReason::Safety
        | GeminiFinishReason::Recitation
        | GeminiFinishReason::Blocklist
        | GeminiFinishReason::ProhibitedContent
        | GeminiFinishReason::Spii
        | GeminiFinishReason::ImageSafety
        | GeminiFinishReason::ImageProhibitedContent
        | GeminiFinishReason::ImageRecitation => FinishReason::ContentFilter,
        // OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL, … and reasons newer
        // than this code: the model stopped for a reason OpenAI has no word for. `stop` keeps
        // strict clients working (or the calls' reason, when it called functions); the answer
        // is whatever the candidate holds.
        GeminiFinishReason::Other(_) => FinishReason::Stop,
    }
}

/// OpenAI usage from Gemini's counts: thoughts count as completion (reasoning) tokens, and
/// tool use's input as prompt tokens, so that prompt plus completion is Gemini's total.
pub(crate) fn usage(u: &UsageMetadata) -> Usage {
    let prompt = u
        .prompt_token_count
        .unwrap_or(0)
        .saturating_add(u.tool_use_prompt_token_count.unwrap_or(0));
    let thoughts = u.thoughts_token_count.unwrap_or(0);
    let completion = u.candidates_token_count.unwrap_or(0).saturating_add(thoughts);
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: u.total_token_count.unwrap_or(prompt.saturating_add(completion)),
        prompt_tokens_details: u
            .cached_content_token_count
            .map(|c| PromptTokensDetails { cached_tokens: Some(c), ..Default::default() }),
        completion_tokens_details: u
            .thoughts_token_count
            .map(|t| CompletionTokensDetails { reasoning_tokens: Some(t), ..Default::default() }),
        extra: Map::new(),
    }
}

/// Makes call ids for function calls that come without one: `call_<id>_<n>`, from the
/// response's id (without its `chatcmpl-` prefix) and a counter over the whole response.
#[derive(Debug, Clone)]
pub(crate) struct CallIds {
    base: String,
    next: u32,
}

impl CallIds {
    pub(crate) fn new(ctx: &ResponseContext) -> Self {
        let base = ctx.id.strip_prefix("chatcmpl-").unwrap_or(&ctx.id).to_owned();
        CallIds { base, next: 0 }
    }

    /// The id Gemini gave, or a new one.
    pub(crate) fn id(&mut self, given: Option<&str>) -> String {
        match given {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => {
                let id = format!("call_{}_{}", self.base, self.next);
                self.next += 1;
                id
            }
        }
    }
}

/// The refusal text for a blocked prompt.
pub(crate) fn block_message(feedback: &PromptFeedback) -> String {
    let reason = feedback.block_reason.as_deref().unwrap_or("BLOCK_REASON_UNSPECIFIED");
    match feedback.block_reason_message.as_deref() {
        Some(m) if !m.is_empty() => {
            format!("Gemini blocked the prompt (block reason: {reason}): {m}")
        }
        _ => format!("Gemini blocked the prompt (block reason: {reason})"),
    }
}

/// What one candidate says, in OpenAI terms.
pub(crate) struct CandidateParts {
    pub(crate) text: String,
    pub(crate) reasoning: String,
    pub(crate) calls: Vec<ToolCall>,
}

/// Splits a candidate's parts into text, thoughts and calls. Parts with no OpenAI counterpart
/// (generated images, executable code) are left out.
pub(crate) fn candidate_parts(c: &Candidate, ids: &mut CallIds) -> CandidateParts {
    let mut out =
        CandidateParts { text: String::new(), reasoning: String::new(), calls: Vec::new() };
    for part in c.content.iter().flat_map(|c| &c.parts) {
        if let Some(call) = &part.function_call {
            let arguments = match &call.args {
                Some(args) => serde_json::Value::Object(args.clone()).to_string(),
                None => "{}".to_owned(),
            };
            out.calls.push(ToolCall {
                id: ids.id(call.id.as_deref()),
                kind: "function".to_owned(),
                function: Some(FunctionCall {
                    name: call.name.clone(),
                    arguments,
                    extra: Map::new(),
                }),
                extra: part.thought_signature.as_deref().map(signature_extra).unwrap_or_default(),
            });
        } else if let Some(text) = &part.text {
            if part.thought == Some(true) {
                out.reasoning.push_str(text);
            } else {
                out.text.push_str(text);
            }
        }
    }
    out
}

/// A whole Gemini answer as a `chat.completion`.
pub(crate) fn to_completion(r: &GenerateContentResponse, ctx: &ResponseContext) -> ChatCompletion {
    let mut ids = CallIds::new(ctx);
    let shape = CallShape::of(ctx);
    let mut choices = Vec::new();
    for (pos, c) in r.candidates().iter().enumerate() {
        let parts = candidate_parts(c, &mut ids);
        let called = !parts.calls.is_empty();
        let mut message = Message::answer(parts.text);
        if called && message.content().is_some_and(|c| c.joined_text().is_empty()) {
            message.content = Some(None);
        }
        if !parts.reasoning.is_empty() {
            message.reasoning_content = Some(Some(parts.reasoning));
        }
        if called {
            match shape {
                CallShape::Tools => message.tool_calls = Some(parts.calls),
                // The first call, without its id (the legacy shape has none; the `function`
                // message that answers it names the function).
                CallShape::Legacy => {
                    message.function_call = parts.calls.into_iter().next().and_then(|c| c.function);
                }
            }
        }
        let called = called.then_some(shape);
        choices.push(Choice {
            index: c.index.unwrap_or(pos as u32),
            message,
            // No finish reason on a whole answer: it is whole (`finish_reason` is never null
            // in a completion).
            finish_reason: Some(Some(finish_reason(
                c.finish_reason.as_ref().unwrap_or(&GeminiFinishReason::Stop),
                called,
            ))),
            logprobs: Some(None),
            extra: Map::new(),
        });
    }
    if choices.is_empty()
        && let Some(feedback) = r.prompt_feedback.as_ref().filter(|f| f.is_block())
    {
        let mut message = Message::answer("");
        message.content = Some(None);
        message.refusal = Some(Some(block_message(feedback)));
        choices.push(Choice {
            index: 0,
            message,
            finish_reason: Some(Some(FinishReason::ContentFilter)),
            logprobs: Some(None),
            extra: Map::new(),
        });
    }
    choices.sort_by_key(|c| c.index);
    ChatCompletion {
        id: ctx.id.clone(),
        object: "chat.completion".to_owned(),
        created: ctx.created,
        model: r.model_version.clone().unwrap_or_else(|| ctx.model.clone()),
        choices,
        usage: r.usage_metadata.as_ref().map(usage),
        system_fingerprint: None,
        service_tier: None,
        extra: Map::new(),
    }
}

/// The OpenAI error type for a Google status name, if it has one of its own.
fn error_type_for_google_status(status: &str) -> Option<&'static str> {
    Some(match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => "invalid_request_error",
        "UNAUTHENTICATED" => "authentication_error",
        "PERMISSION_DENIED" => "permission_error",
        "NOT_FOUND" => "invalid_request_error",
        "RESOURCE_EXHAUSTED" => "rate_limit_error",
        "DEADLINE_EXCEEDED" => "timeout_error",
        "INTERNAL" | "UNAVAILABLE" | "UNKNOWN" | "DATA_LOSS" => "server_error",
        _ => return None,
    })
}

/// A Google error in the OpenAI shape: the message, a type from the status name (or the HTTP
/// status), and the status name as `code`. `details` is not passed on: it holds debug text
/// for Google's engineers, and for a bad key a piece of the key itself.
pub(crate) fn error_response(error: &GoogleError, http_status: u16) -> ErrorResponse {
    let kind = error
        .status
        .as_deref()
        .and_then(error_type_for_google_status)
        .unwrap_or_else(|| error_type_for_status(http_status));
    let message = if error.message.is_empty() {
        format!("upstream answered {http_status}")
    } else {
        error.message.clone()
    };
    let out = ErrorResponse::new(message, kind);
    match &error.status {
        Some(s) => out.with_code(s.clone()),
        None => out,
    }
}

/// An error answer: Google's envelope (alone, or as the first element of the JSON array the
/// non-SSE stream endpoint sends), or the body's text.
pub(crate) fn translate_error(status: u16, body: &[u8]) -> TranslateError {
    let (status, error) = match first_or_only::<GoogleErrorBody>(body) {
        Some(b) => {
            // Google refuses a bad key with 400 `INVALID_ARGUMENT`, its reason in the details:
            // it stands for the 401 it is, so that a caller tells it from a bad request.
            let status = if refuses_key(&b.error) { 401 } else { status };
            (status, error_response(&b.error, status))
        }
        None => (status, fallback_error(status, body)),
    };
    TranslateError::Upstream { status, error: Box::new(error) }
}

/// Whether a Google error says the API key is not valid (reason `API_KEY_INVALID`).
fn refuses_key(error: &GoogleError) -> bool {
    let Some(serde_json::Value::Array(details)) = error.extra.get("details") else { return false };
    details
        .iter()
        .any(|d| d.get("reason").and_then(serde_json::Value::as_str) == Some("API_KEY_INVALID"))
}
