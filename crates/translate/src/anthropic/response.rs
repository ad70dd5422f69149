//! Anthropic answer → OpenAI `chat.completion`, and Anthropic errors → OpenAI errors.

use uniproxy_wire::{
    ChatCompletion, Choice, ErrorResponse, FinishReason, FunctionCall, Map, Message,
    PromptTokensDetails, ThinkingBlock, ToolCall, Usage as OpenAiUsage, from_slice,
};

use super::request::JSON_TOOL;
use super::wire::{ContentBlock, ErrorBody, ErrorEnvelope, MessagesResponse, Usage};
use crate::{
    CallShape, ProviderKind, ResponseContext, TranslateError, error_type_for_status, fallback_error,
};

/// The OpenAI finish reason for an Anthropic `stop_reason`, in an answer that called tools of
/// the client's when `called`, and asked for a JSON object (through a tool) when
/// `json_object`.
///
/// A reason this version does not know (`compaction`, or one newer than this code) is `stop`,
/// or `tool_calls` when the answer called tools, as the Gemini translator maps its unknown
/// reasons: OpenAI's finish reasons are a closed set that strict clients check, and the answer
/// is whatever the message holds.
pub(crate) fn finish_reason(stop_reason: &str, json_object: bool, called: bool) -> FinishReason {
    match stop_reason {
        // `pause_turn`: a server tool's long turn paused; the client may send the answer back
        // to go on, and has what came so far.
        "end_turn" | "stop_sequence" | "pause_turn" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        // The call of the tool a JSON object was asked through is no call of the client's.
        "tool_use" if json_object && !called => FinishReason::Stop,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ if called => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// The refusal text of an answer Claude stopped with `refusal`: the `stop_details` explanation
/// Anthropic gave, or a short default (its older models give none), as a Gemini blocked prompt
/// fills `refusal`.
pub(crate) fn refusal_text(explanation: Option<String>) -> String {
    explanation.unwrap_or_else(|| "Claude declined to answer (stop reason: refusal)".to_owned())
}

/// OpenAI usage for Anthropic usage: Anthropic's `input_tokens` leaves out the tokens written
/// to and read from the cache, OpenAI's `prompt_tokens` counts them.
pub(crate) fn openai_usage(usage: &Usage) -> OpenAiUsage {
    let read = usage.cache_read_input_tokens;
    // Saturating: the counts are the upstream's to say, and must not overflow (a panic in a
    // debug build, a wrong total in a release one).
    let prompt = usage
        .input_tokens
        .unwrap_or(0)
        .saturating_add(usage.cache_creation_input_tokens.unwrap_or(0))
        .saturating_add(read.unwrap_or(0));
    let completion = usage.output_tokens.unwrap_or(0);
    OpenAiUsage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
        prompt_tokens_details: read.map(|cached| PromptTokensDetails {
            cached_tokens: Some(cached),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The OpenAI error type for an Anthropic one. OpenAI clients pick their exception by status,
/// so the type is for people and logs; the code is [`openai_error`]'s.
fn openai_error_type(kind: &str, status: u16) -> &'static str {
    match kind {
        "invalid_request_error" | "not_found_error" | "request_too_large" => {
            "invalid_request_error"
        }
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "billing_error" => "insufficient_quota",
        "rate_limit_error" => "rate_limit_error",
        "timeout_error" => "timeout_error",
        "api_error" => "server_error",
        "overloaded_error" => "overloaded_error",
        _ => error_type_for_status(status),
    }
}

/// The HTTP status Anthropic documents for an error type, for an error found where no status
/// says it: in a stream, or in a 2xx answer.
pub(crate) fn error_status(kind: &str) -> Option<u16> {
    Some(match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "api_error" => 500,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => return None,
    })
}

/// An Anthropic error in the OpenAI shape. Where OpenAI has a `code` for the same cause, and
/// clients written for it branch on that code, the error has OpenAI's: a prompt longer than
/// the model's context (`"prompt is too long: 210000 tokens > 200000 maximum"`, or the input and
/// `max_tokens` together) is `context_length_exceeded` with `param` `messages`, a rate limit
/// `rate_limit_exceeded`, a billing error `insufficient_quota`. Any other keeps the Anthropic
/// type as `code`.
pub(crate) fn openai_error(error: &ErrorBody, status: u16) -> ErrorResponse {
    let out = ErrorResponse::new(error.message.clone(), openai_error_type(&error.kind, status));
    match error.kind.as_str() {
        "invalid_request_error" if too_long(&error.message) => {
            out.with_param("messages").with_code("context_length_exceeded")
        }
        "rate_limit_error" => out.with_code("rate_limit_exceeded"),
        "billing_error" => out.with_code("insufficient_quota"),
        _ => out.with_code(error.kind.clone()),
    }
}

/// Whether an Anthropic `invalid_request_error` says the request does not fit the model's
/// context window.
fn too_long(message: &str) -> bool {
    message.starts_with("prompt is too long")
        || message.starts_with("input length and `max_tokens` exceed context limit")
}

/// An error answer: Anthropic's error body, or the body's text when it is not one.
pub(crate) fn translate_error(status: u16, body: &[u8]) -> TranslateError {
    let error = match from_slice::<ErrorEnvelope>(body) {
        Ok(envelope) => openai_error(&envelope.error, status),
        Err(_) => fallback_error(status, body),
    };
    TranslateError::Upstream { status, error: Box::new(error) }
}

/// A 2xx answer as a `chat.completion`.
pub(crate) fn completion(
    body: &[u8],
    ctx: &ResponseContext,
) -> Result<ChatCompletion, TranslateError> {
    let malformed =
        |source| TranslateError::Malformed { provider: ProviderKind::Anthropic, source };
    // serde also reads a struct from an array of its fields in order; an answer is an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{')
        && let Err(source) = uniproxy_wire::from_bytes::<Map>(body)
    {
        return Err(malformed(source));
    }
    let mut response: MessagesResponse = uniproxy_wire::from_bytes(body).map_err(malformed)?;
    match (response.kind.as_deref(), &response.error) {
        (None | Some("message"), _) => {}
        // An error in a 2xx answer (a gateway's, say) is still an error, not an empty answer.
        (Some("error"), Some(error)) => {
            let status = error_status(&error.kind).unwrap_or(502);
            let error = Box::new(openai_error(error, status));
            return Err(TranslateError::Upstream { status, error });
        }
        (Some(other), _) => {
            let why = format!("an answer of type `{other}`, not `message`");
            return Err(malformed(serde::de::Error::custom(why)));
        }
    }
    // Any JSON object would otherwise pass as an empty answer (a BASE_URL that names some
    // other service that answers 200).
    let Some(content) = response.content.take() else {
        return Err(malformed(serde::de::Error::missing_field("content")));
    };
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking_blocks = Vec::new();
    let mut calls = Vec::new();
    // The JSON object asked for through the tool (see `request::JSON_TOOL`).
    let mut json = None;
    for block in content {
        match block {
            ContentBlock::Text { text: t } => text.push_str(&t),
            ContentBlock::ToolUse { name, input, .. } if ctx.json_object && name == JSON_TOOL => {
                json = Some(tool_arguments(&input));
            }
            ContentBlock::Thinking { thinking, signature } => {
                reasoning.push_str(&thinking);
                thinking_blocks.push(ThinkingBlock::Thinking {
                    thinking,
                    signature,
                    extra: Map::new(),
                });
            }
            ContentBlock::RedactedThinking { data } => {
                thinking_blocks.push(ThinkingBlock::RedactedThinking { data, extra: Map::new() });
            }
            ContentBlock::ToolUse { id, name, input } => calls.push(ToolCall {
                id,
                kind: "function".to_owned(),
                function: Some(FunctionCall {
                    name,
                    arguments: tool_arguments(&input),
                    extra: Map::new(),
                }),
                extra: Map::new(),
            }),
            ContentBlock::Unknown => {}
        }
    }
    // The object is the answer; a forced tool call comes without text before it.
    let mut message = Message::answer(json.unwrap_or(text));
    let called = !calls.is_empty();
    if called {
        // OpenAI writes `content: null` when the model only calls tools.
        if message.content().is_some_and(|c| c.joined_text().is_empty()) {
            message.content = Some(None);
        }
        CallShape::of(ctx).give_calls(&mut message, calls);
    }
    if !reasoning.is_empty() {
        message.reasoning_content = Some(Some(reasoning));
    }
    if !thinking_blocks.is_empty() {
        // For the client to give back: Claude wants them in a tool loop with thinking on.
        message.thinking_blocks = Some(thinking_blocks);
    }
    if response.stop_reason.as_deref() == Some("refusal") {
        // As OpenAI answers a refusal: `content: null` unless Claude said something first,
        // which is kept.
        if !called && message.content().is_some_and(|c| c.joined_text().is_empty()) {
            message.content = Some(None);
        }
        message.refusal = Some(Some(refusal_text(response.stop_explanation.take())));
    }
    let model = if response.model.is_empty() { ctx.model.clone() } else { response.model };
    Ok(ChatCompletion {
        id: ctx.id.clone(),
        object: "chat.completion".to_owned(),
        created: ctx.created,
        model,
        choices: vec![Choice {
            index: 0,
            message,
            // No stop reason (a proxy in front that dropped it): the answer is whole, as a
            // stream's `message_stop` says; `finish_reason` is never null in a completion.
            finish_reason: Some(Some(CallShape::of(ctx).finish(finish_reason(
                response.stop_reason.as_deref().unwrap_or("end_turn"),
                ctx.json_object,
                called,
            )))),
            logprobs: Some(None),
            extra: Map::new(),
        }],
        usage: response.usage.as_ref().map(openai_usage),
        system_fingerprint: None,
        service_tier: None,
        extra: Map::new(),
    })
}

/// A tool call's input as the arguments' JSON text; a missing input is no arguments.
pub(crate) fn tool_arguments(input: &serde_json::Value) -> String {
    if input.is_null() { "{}".to_owned() } else { input.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_an_upstream_made_huge_saturate() {
        let usage = Usage {
            input_tokens: Some(u64::MAX),
            output_tokens: Some(7),
            cache_creation_input_tokens: Some(1),
            cache_read_input_tokens: Some(1),
        };
        let u = openai_usage(&usage);
        assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), (u64::MAX, 7, u64::MAX));
    }
}
