//! Gemini answer → OpenAI `chat.completion`, and the pieces the stream shares: finish reasons,
//! usage, call ids, errors.

use uniproxy_wire::{
    ChatCompletion, Choice, CompletionTokensDetails, ErrorResponse, FinishReason, FunctionCall,
    Map, Message, PromptTokensDetails, ToolCall, Usage,
};

use super::signature_extra;
use super::wire::{
    Candidate, GeminiFinishReason, GenerateContentResponse, GoogleError, GoogleErrorBody, Part,
    PromptFeedback, UsageMetadata,
};
use crate::error::first_or_only;
use crate::{CallShape, ResponseContext, TranslateError, error_type_for_status, fallback_error};

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
        // strict clients working (or the calls' reason, when it called functions), when the
        // candidate said something; one that said nothing is no answer ([`empty_answer`]).
        GeminiFinishReason::Other(_) => FinishReason::Stop,
    }
}

/// OpenAI usage from Gemini's counts: thoughts count as completion (reasoning) tokens, and
/// tool use's input as prompt tokens, so that prompt plus completion is Gemini's total.
pub(crate) fn usage(u: &UsageMetadata) -> Usage {
    let mut out = Usage::default();
    write_usage(&mut out, u);
    out
}

/// Writes [`usage`]'s counts into `out`, keeping what it already holds (its maps, the details
/// it has): a stream repeats its usage in every event, and a new `Usage` each time, 300 bytes
/// with three maps, was a tenth of an event's work.
pub(crate) fn write_usage(out: &mut Usage, u: &UsageMetadata) {
    let prompt = u
        .prompt_token_count
        .unwrap_or(0)
        .saturating_add(u.tool_use_prompt_token_count.unwrap_or(0));
    let thoughts = u.thoughts_token_count.unwrap_or(0);
    let completion = u.candidates_token_count.unwrap_or(0).saturating_add(thoughts);
    out.prompt_tokens = prompt;
    out.completion_tokens = completion;
    out.total_tokens = u.total_token_count.unwrap_or(prompt.saturating_add(completion));
    match (u.cached_content_token_count, &mut out.prompt_tokens_details) {
        (Some(c), Some(details)) => details.cached_tokens = Some(c),
        (c, details) => {
            *details =
                c.map(|c| PromptTokensDetails { cached_tokens: Some(c), ..Default::default() });
        }
    }
    match (u.thoughts_token_count, &mut out.completion_tokens_details) {
        (Some(t), Some(details)) => details.reasoning_tokens = Some(t),
        (t, details) => {
            *details = t.map(|t| CompletionTokensDetails {
                reasoning_tokens: Some(t),
                ..Default::default()
            });
        }
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

/// A part of an answer that a chat completion has no place for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Uncarried {
    /// `inlineData` (an image model's image, a speech model's audio), with its MIME type.
    InlineData(String),
    /// `fileData`, with its MIME type when given.
    FileData(Option<String>),
    /// `executableCode`, the code the code execution tool ran.
    ExecutableCode,
    /// `codeExecutionResult`, what that code gave.
    CodeExecutionResult,
}

impl Uncarried {
    /// How many kinds a candidate's list keeps: enough to name what the answer held, and no
    /// more however many parts a stream sends.
    const KEPT: usize = 4;

    /// The kind of `part`, when it is one of these.
    fn of(part: &Part) -> Option<Self> {
        if let Some(blob) = &part.inline_data {
            Some(Uncarried::InlineData(blob.mime_type.clone()))
        } else if let Some(file) = &part.file_data {
            Some(Uncarried::FileData(file.mime_type.clone()))
        } else if part.extra.contains_key("executableCode") {
            Some(Uncarried::ExecutableCode)
        } else if part.extra.contains_key("codeExecutionResult") {
            Some(Uncarried::CodeExecutionResult)
        } else {
            None
        }
    }

    /// Adds the kind of `part`, if it is one, to `list`.
    fn note(list: &mut Vec<Uncarried>, part: &Part) {
        if let Some(kind) = Uncarried::of(part) {
            kind.add_to(list);
        }
    }

    /// Adds this kind to `list`, once, while it has room.
    pub(crate) fn add_to(self, list: &mut Vec<Uncarried>) {
        if list.len() < Uncarried::KEPT && !list.contains(&self) {
            list.push(self);
        }
    }

    /// What it is, for a person: "an image (image/png)".
    fn describe(&self) -> String {
        match self {
            Uncarried::InlineData(mime) if mime.starts_with("image/") => {
                format!("an image ({mime})")
            }
            Uncarried::InlineData(mime) if mime.starts_with("audio/") => format!("audio ({mime})"),
            Uncarried::InlineData(mime) => format!("inline data ({mime})"),
            Uncarried::FileData(Some(mime)) => format!("a file ({mime})"),
            Uncarried::FileData(None) => "a file".to_owned(),
            Uncarried::ExecutableCode => "executable code".to_owned(),
            Uncarried::CodeExecutionResult => "a code execution result".to_owned(),
        }
    }
}

/// The `code` of the error that stands for an answer with nothing in it for the client.
pub(crate) const EMPTY_ANSWER: &str = "upstream_empty_answer";

/// Why a candidate that gave no text and no function call is no answer, if it is none: it
/// stopped for a reason that is no normal end (`MALFORMED_FUNCTION_CALL`, `OTHER`,
/// `UNEXPECTED_TOOL_CALL`, `NO_IMAGE`, any reason with no OpenAI counterpart), or it held only
/// parts a chat completion cannot carry (`uncarried`). A client would read an empty `stop` as
/// the model's whole answer (an agent loop ends there), where the upstream failed to answer:
/// the proxy answers as for an upstream failure (502, or an error event), with this message,
/// naming the reason and Gemini's `finishMessage`. Thoughts are no answer and do not count.
///
/// `None` for an empty candidate that stopped normally (`STOP`: the model chose to say
/// nothing), that ran out of tokens (`length`) or that a filter stopped (`content_filter`):
/// the finish reason says what happened.
pub(crate) fn empty_answer(
    reason: Option<&GeminiFinishReason>,
    finish_message: Option<&str>,
    uncarried: &[Uncarried],
) -> Option<String> {
    let other = match reason {
        None | Some(GeminiFinishReason::Stop) => None,
        Some(GeminiFinishReason::Other(name)) => Some(name.as_str()),
        Some(_) => return None,
    };
    let mut message = match (uncarried, other) {
        ([], None) => return None,
        ([], Some(name)) => {
            format!("Gemini ended the answer without content (finish reason {name})")
        }
        (kinds, other) => {
            let mut names: Vec<String> = kinds.iter().map(Uncarried::describe).collect();
            let last = names.pop().unwrap_or_default();
            let held =
                if names.is_empty() { last } else { format!("{} and {last}", names.join(", ")) };
            let mut m =
                format!("Gemini answered with {held}, which a chat completion cannot carry");
            if let Some(name) = other {
                m.push_str(&format!(" (finish reason {name})"));
            }
            m
        }
    };
    if let Some(text) = finish_message.map(str::trim).filter(|m| !m.is_empty()) {
        message.push_str(": ");
        message.push_str(text);
    }
    Some(message)
}

/// The error for a whole answer that is no answer ([`empty_answer`]): what the proxy answers
/// for an upstream that failed, which the OpenAI SDKs retry.
pub(crate) fn empty_answer_error(message: String) -> ErrorResponse {
    ErrorResponse::new(message, "upstream_error").with_code(EMPTY_ANSWER)
}

/// What one candidate says, in OpenAI terms.
pub(crate) struct CandidateParts {
    pub(crate) text: String,
    pub(crate) reasoning: String,
    pub(crate) calls: Vec<ToolCall>,
    /// The kinds of the parts left out (see [`Uncarried`]).
    pub(crate) uncarried: Vec<Uncarried>,
}

impl CandidateParts {
    /// Whether the candidate gave the client something: text or a call.
    pub(crate) fn answers(&self) -> bool {
        !self.text.is_empty() || !self.calls.is_empty()
    }
}

/// Splits a candidate's parts into text, thoughts and calls. Parts with no OpenAI counterpart
/// (generated images, executable code) are left out, their kinds noted.
pub(crate) fn candidate_parts(c: &Candidate, ids: &mut CallIds) -> CandidateParts {
    let mut out = CandidateParts {
        text: String::new(),
        reasoning: String::new(),
        calls: Vec::new(),
        uncarried: Vec::new(),
    };
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
        } else {
            Uncarried::note(&mut out.uncarried, part);
        }
    }
    out
}

/// A whole Gemini answer as a `chat.completion`.
///
/// # Errors
/// The message of [`empty_answer`] when every candidate is no answer, the lowest index's: a
/// client that asked for `n` answers and got some can use those (the others are empty `stop`s,
/// as before), one that got none must hear the upstream failed.
pub(crate) fn to_completion(
    r: &GenerateContentResponse,
    ctx: &ResponseContext,
) -> Result<ChatCompletion, String> {
    let mut ids = CallIds::new(ctx);
    let shape = CallShape::of(ctx);
    let mut choices = Vec::new();
    // The first (lowest index) candidate that is no answer, and whether all are.
    let mut empty: Option<(u32, String)> = None;
    let mut all_empty = true;
    for (pos, c) in r.candidates().iter().enumerate() {
        let parts = candidate_parts(c, &mut ids);
        let index = c.index.unwrap_or(pos as u32);
        let why = if parts.answers() {
            None
        } else {
            empty_answer(c.finish_reason.as_ref(), c.finish_message.as_deref(), &parts.uncarried)
        };
        match why {
            Some(why) if empty.as_ref().is_none_or(|(i, _)| index < *i) => {
                empty = Some((index, why));
            }
            Some(_) => {}
            None => all_empty = false,
        }
        let called = !parts.calls.is_empty();
        let mut message = Message::answer(parts.text);
        if called && message.content().is_some_and(|c| c.joined_text().is_empty()) {
            message.content = Some(None);
        }
        if !parts.reasoning.is_empty() {
            message.reasoning_content = Some(Some(parts.reasoning));
        }
        if called {
            shape.give_calls(&mut message, parts.calls);
        }
        let called = called.then_some(shape);
        choices.push(Choice {
            index,
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
    if let Some((_, why)) = empty
        && all_empty
    {
        return Err(why);
    }
    choices.sort_by_key(|c| c.index);
    Ok(ChatCompletion {
        id: ctx.id.clone(),
        object: "chat.completion".to_owned(),
        created: ctx.created,
        model: r.model_version.clone().unwrap_or_else(|| ctx.model.clone()),
        choices,
        usage: r.usage_metadata.as_ref().map(usage),
        system_fingerprint: None,
        service_tier: None,
        extra: Map::new(),
    })
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
/// status), and the status name as `code` (OpenAI's `context_length_exceeded`, with `param`
/// `messages`, for an input longer than the model takes). `details` is not passed on: it
/// holds debug text for Google's engineers, and for a bad key a piece of the key itself.
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
        // OpenAI's code for the same cause, which clients written for it branch on: "The
        // input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
        Some(s)
            if s == "INVALID_ARGUMENT"
                && error.message.contains("exceeds the maximum number of tokens allowed") =>
        {
            out.with_param("messages").with_code("context_length_exceeded")
        }
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
