//! OpenAI, Azure OpenAI and any OpenAI-compatible server: the identity translation, with each
//! platform's URL and auth header. What the server sends passes through as sent, but for what
//! a client could not take: an answer or a chunk without the top-level members the format
//! requires gets them written in, and a 2xx answer that is only an error (OpenRouter's, once
//! the model has started) gives that error. What the upstream refuses and the proxy may leave
//! out (the stream usage it asks for on its own, a sampling member a reasoning model takes only
//! at its default) is left out once refused; a token limit refused as `max_completion_tokens`
//! goes as `max_tokens` from then on.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;
use uniproxy_wire::{
    ChatCompletion, ChatCompletionRequest, CompletionTokensDetails, ErrorResponse, Map,
    PromptTokensDetails, StreamOptions, Usage, from_slice,
};

use crate::error::first_or_only;
use crate::json_bytes;
use crate::scan::{
    Reader, Template, TemplateSlot, count, named_fields, once, raw_members, string_at,
};
use crate::sse::{self, SseEvent};
use crate::{
    Answer, Assembled, CopiedSpan, MIN_COPIED, Provider, ProviderConfig, ProviderKind, RequestHead,
    ResponseContext, StreamTranslator, TranslateError, Translated, UpstreamRequest, complete_error,
    fallback_error,
};

/// Which request field carries the token limit when the client set none.
#[derive(Debug, Clone, Copy)]
enum LimitField {
    MaxTokens,
    MaxCompletionTokens,
}

/// The provider for OpenAI, Azure OpenAI and OpenAI-compatible servers.
#[derive(Debug)]
pub struct OpenAiCompat {
    config: ProviderConfig,
    url: String,
    headers: HeaderMap,
    limit_field: LimitField,
    /// What the upstream refused and is left out since (see [`Provider::refused`]): a bit
    /// for each of [`LEAVABLE`], [`STREAM_USAGE`] and [`NEW_LIMIT`].
    left_out: AtomicU8,
    /// Whether `BASE_URL` is a bare host (kept as it is: a server may serve at its root), for
    /// the hint on a 404 ([`Provider::translate_error`]).
    bare_host: bool,
}

/// The bit of [`OpenAiCompat::left_out`] that stops a stream request asking for the usage.
const STREAM_USAGE: u8 = 1 << LEAVABLE.len();

/// The bit of [`OpenAiCompat::left_out`] that sends the token limit as `max_tokens`: the
/// upstream does not know `max_completion_tokens` (Azure before API version
/// 2024-09-01-preview, OpenAI-compatible servers configured as `openai`).
const NEW_LIMIT: u8 = STREAM_USAGE << 1;

/// The sampling members an OpenAI model may refuse and the proxy may leave out: OpenAI's
/// reasoning models take them only at their defaults.
const LEAVABLE: [&str; 5] =
    ["temperature", "top_p", "presence_penalty", "frequency_penalty", "logit_bias"];

/// Which of [`LEAVABLE`] an OpenAI error refuses: a 400, `unsupported_value` ("'temperature'
/// does not support 0.7 with this model. Only the default (1) value is supported.") or
/// `unsupported_parameter`, with the member as `param`.
fn refused_sampling(status: u16, body: &[u8]) -> Option<usize> {
    if status != 400 {
        return None;
    }
    let e = from_slice::<ErrorResponse>(body).ok()?.error;
    let code = e.code.flatten();
    let code = code.as_ref().and_then(serde_json::Value::as_str);
    if !matches!(code, Some("unsupported_value" | "unsupported_parameter")) {
        return None;
    }
    let param = e.param.flatten();
    LEAVABLE.iter().position(|name| param.as_deref() == Some(*name))
}

/// Whether an error (`status`, `body`) says the upstream does not know the member
/// `max_completion_tokens` at all: a 400 or 422 that names it, says it is unknown, and names
/// no `max_tokens` of its own. Not a refusal of its value ("Invalid 'max_completion_tokens':
/// integer below minimum value", a client's 0), which `max_tokens` would get too, nor a
/// reasoning model refusing `max_tokens` ("Use 'max_completion_tokens' instead"): either would
/// switch the proxy to `max_tokens` for good, and every later request to such a model would
/// be refused.
fn refuses_new_limit(status: u16, body: &[u8]) -> bool {
    const NEWER: &[u8] = b"max_completion_tokens";
    const UNKNOWN: [&[u8]; 7] = [
        b"unrecognized",
        b"unsupported",
        b"unknown",
        b"extra_forbidden",
        b"extra inputs",
        b"not permitted",
        b"not allowed",
    ];
    if !matches!(status, 400 | 422) {
        return false;
    }
    let text = body.to_ascii_lowercase();
    let find = |needle: &[u8]| text.windows(needle.len()).any(|w| w == needle);
    find(NEWER) && !find(b"max_tokens") && UNKNOWN.iter().any(|phrase| find(phrase))
}

/// The member of [`LEAVABLE`] that `key` (as written between quotes) is, when its bit is set
/// in `mask`.
fn left_out(mask: u8, key: &[u8]) -> Option<&'static str> {
    LEAVABLE
        .iter()
        .enumerate()
        .find(|(i, name)| mask & (1 << i) != 0 && name.as_bytes() == key)
        .map(|(_, name)| *name)
}

impl OpenAiCompat {
    /// Builds the provider; the URL and auth headers are made once, here.
    ///
    /// # Errors
    /// [`TranslateError::Config`] for an Azure base URL that names neither a deployment
    /// (`…/openai/deployments/NAME`) nor the v1 API (`…/openai/v1`), or an API key that cannot
    /// be a header value.
    pub fn new(config: ProviderConfig) -> Result<Self, TranslateError> {
        let base = config.base_url.trim_end_matches('/');
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let bad_key =
            || TranslateError::Config { setting: "API_KEY", reason: "is not a valid header value" };
        let (url, limit_field) = match config.kind {
            ProviderKind::AzureOpenAi => {
                // The deployment is the last segment: the portal's target URI
                // (`…/deployments/NAME/chat/completions`) once passed, and every request went
                // to `…/chat/completions/chat/completions` and answered 404.
                let deployment = base.rsplit_once("/openai/deployments/").map(|(_, name)| name);
                let url = if base.ends_with("/openai/v1") {
                    format!("{base}/chat/completions")
                } else if deployment.is_some_and(|name| !name.is_empty() && !name.contains('/')) {
                    format!("{base}/chat/completions?api-version={}", config.api_version)
                } else {
                    return Err(TranslateError::Config {
                        setting: "BASE_URL",
                        reason: "must end in /openai/deployments/NAME or /openai/v1 for Azure",
                    });
                };
                if !config.api_key.is_empty() {
                    let mut v = HeaderValue::from_str(&config.api_key).map_err(|_| bad_key())?;
                    v.set_sensitive(true);
                    headers.insert("api-key", v);
                }
                (url, LimitField::MaxCompletionTokens)
            }
            kind => {
                if !config.api_key.is_empty() {
                    let mut v = HeaderValue::from_str(&format!("Bearer {}", config.api_key))
                        .map_err(|_| bad_key())?;
                    v.set_sensitive(true);
                    headers.insert(header::AUTHORIZATION, v);
                }
                // OpenAI's reasoning models refuse `max_tokens`; other servers may not know
                // `max_completion_tokens`.
                let field = if kind == ProviderKind::OpenAi {
                    LimitField::MaxCompletionTokens
                } else {
                    LimitField::MaxTokens
                };
                (format!("{base}/chat/completions"), field)
            }
        };
        let bare_host =
            config.kind != ProviderKind::AzureOpenAi && crate::host_and_path(base).1.is_empty();
        Ok(OpenAiCompat {
            config,
            url,
            headers,
            limit_field,
            left_out: AtomicU8::new(0),
            bare_host,
        })
    }
}

/// Applies the configured token limit: set when the request has none, capped when it asks more.
pub(crate) fn cap_tokens(
    request: &mut ChatCompletionRequest,
    max: u32,
    when_unset: impl FnOnce(&mut ChatCompletionRequest),
) {
    if !cap_limits(&mut request.max_tokens, &mut request.max_completion_tokens, max) {
        when_unset(request);
    }
}

/// Caps the limits that are set at `max`; `false` when neither is.
fn cap_limits(
    max_tokens: &mut Option<u32>,
    max_completion_tokens: &mut Option<u32>,
    max: u32,
) -> bool {
    let mut any = false;
    for limit in [max_tokens, max_completion_tokens].into_iter().flatten() {
        *limit = (*limit).min(max);
        any = true;
    }
    any
}

/// Asks for the usage at the end of a stream.
fn ask_usage(stream_options: &mut Option<StreamOptions>) {
    stream_options
        .get_or_insert_with(|| StreamOptions { include_usage: None, extra: Default::default() })
        .include_usage = Some(true);
}

impl OpenAiCompat {
    /// The request as the upstream gets it: the configured model, the token limit applied, and
    /// usage asked for in a stream.
    fn rewrite(&self, mut request: ChatCompletionRequest) -> ChatCompletionRequest {
        request.model.clone_from(&self.config.model);
        self.limits(&mut request.max_tokens, &mut request.max_completion_tokens);
        if request.is_stream() && self.left_out.load(Ordering::Relaxed) & STREAM_USAGE == 0 {
            // Always ask for usage so the log has it; the client gets the usage chunk only
            // if it asked (see `OpenAiStream`).
            ask_usage(&mut request.stream_options);
        }
        request
    }

    /// [`rewrite`](Self::rewrite) for a request's head.
    fn rewrite_head(&self, head: &mut RequestHead<'_>) {
        head.model.clone_from(&self.config.model);
        self.limits(&mut head.max_tokens, &mut head.max_completion_tokens);
        if head.is_stream() && self.left_out.load(Ordering::Relaxed) & STREAM_USAGE == 0 {
            ask_usage(&mut head.stream_options);
        }
    }

    /// The token limits as the upstream gets them: capped at `MAX_TOKENS`, which is the limit
    /// when the client set none. OpenAI and Azure get `max_completion_tokens` alone: their
    /// reasoning models refuse `max_tokens`, which OpenAI has deprecated for every chat model,
    /// and the configured model may be one whatever the client thinks it talks to.
    fn limits(&self, max_tokens: &mut Option<u32>, max_completion_tokens: &mut Option<u32>) {
        let max = self.config.max_tokens;
        let learned = self.left_out.load(Ordering::Relaxed) & NEW_LIMIT != 0;
        let field = if learned { LimitField::MaxTokens } else { self.limit_field };
        if !cap_limits(max_tokens, max_completion_tokens, max) {
            match field {
                LimitField::MaxTokens => *max_tokens = Some(max),
                LimitField::MaxCompletionTokens => *max_completion_tokens = Some(max),
            }
        } else if let LimitField::MaxCompletionTokens = field
            && let Some(old) = max_tokens.take()
        {
            *max_completion_tokens = Some(max_completion_tokens.map_or(old, |new| new.min(old)));
        }
        // The upstream refused `max_completion_tokens`: a client's goes as `max_tokens` too.
        if learned && let Some(new) = max_completion_tokens.take() {
            *max_tokens = Some(max_tokens.map_or(new, |old| old.min(new)));
        }
    }
}

/// The members [`OpenAiCompat::rewrite`] may change, and the caller of
/// [`Provider::build_request_from`] too: they are written from the typed request (its
/// [`RequestHead`]), every other member from the client's bytes.
const REWRITTEN: [&str; 5] =
    ["model", "max_tokens", "max_completion_tokens", "stream", "stream_options"];

/// Which of [`REWRITTEN`] a key is, as written between its quotes, if it is one.
fn rewritten(key: &[u8]) -> Option<usize> {
    if key.contains(&b'\\') {
        // Escaped (`"mod\u0065l"` is `model`): decode it.
        let mut quoted = Vec::with_capacity(key.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(key);
        quoted.push(b'"');
        let key = serde_json::from_slice::<String>(&quoted).ok()?;
        return REWRITTEN.iter().position(|r| *r == key);
    }
    REWRITTEN.iter().position(|r| r.as_bytes() == key)
}

/// Starts a member of an object being written: a comma unless it is the first member, then
/// the key's opening quote.
fn open_key(body: &mut Vec<u8>) {
    if body.len() > 1 {
        body.push(b',');
    }
    body.push(b'"');
}

/// Appends `"key":` to an object being written; `key` is as written between quotes.
fn open_raw_member(body: &mut Vec<u8>, key: &[u8]) {
    open_key(body);
    body.extend_from_slice(key);
    body.extend_from_slice(b"\":");
}

/// Appends `part`, a slice of `raw`, to `body` and notes it in `copied`. A part that follows
/// the last run in both, with the same bytes between (a compact client's `":` and `,"`),
/// extends that run, so a client's members that go over unchanged are one run.
fn copy_from(body: &mut Vec<u8>, copied: &mut Vec<CopiedSpan>, raw: &[u8], part: &[u8]) {
    let at = body.len();
    body.extend_from_slice(part);
    // `part` is a slice of `raw` (`raw_members` found it there); its offset is the distance
    // between the two starts.
    let Some(from) = part.as_ptr().addr().checked_sub(raw.as_ptr().addr()) else { return };
    if from + part.len() > raw.len() {
        return;
    }
    if let Some(last) = copied.last_mut() {
        let (body_end, raw_end) = (last.at + last.len, last.from + last.len);
        if raw.get(raw_end..from).is_some_and(|gap| body.get(body_end..at) == Some(gap)) {
            last.len = at + part.len() - last.at;
            return;
        }
    }
    copied.push(CopiedSpan { at, from, len: part.len() });
}

/// Appends a member whose value is serialized.
fn typed_member<T: serde::Serialize>(
    body: &mut Vec<u8>,
    key: &str,
    value: &T,
    provider: ProviderKind,
) -> Result<(), TranslateError> {
    open_raw_member(body, key.as_bytes());
    serde_json::to_writer(&mut *body, value)
        .map_err(|source| TranslateError::Malformed { provider, source })
}

impl Provider for OpenAiCompat {
    fn kind(&self) -> ProviderKind {
        self.config.kind
    }

    fn build_request(
        &self,
        request: ChatCompletionRequest,
    ) -> Result<UpstreamRequest, TranslateError> {
        let mut request = self.rewrite(request);
        let mut dropped = Vec::new();
        let mask = self.left_out.load(Ordering::Relaxed);
        if mask != 0 {
            let r = &mut request;
            // In LEAVABLE's order: whether the member was there and is left out now.
            let left = [
                mask & 1 != 0 && r.temperature.take().is_some(),
                mask & 2 != 0 && r.top_p.take().is_some(),
                mask & 4 != 0 && r.presence_penalty.take().is_some(),
                mask & 8 != 0 && r.frequency_penalty.take().is_some(),
                mask & 16 != 0 && r.logit_bias.take().is_some(),
            ];
            for (name, left) in LEAVABLE.iter().zip(left) {
                if left {
                    dropped.push((*name).to_owned());
                }
            }
        }
        let body = json_bytes(self.config.kind, &request, 0)?;
        Ok(UpstreamRequest::post(self.url.clone(), self.headers.clone(), body, dropped))
    }

    fn build_request_from(
        &self,
        mut request: ChatCompletionRequest,
        raw: &[u8],
    ) -> Result<UpstreamRequest, TranslateError> {
        match raw_members(raw) {
            Some(members) => {
                self.build_request_head(RequestHead::taken_from(&mut request, raw, members))
            }
            None => self.build_request(request),
        }
    }

    fn read_head<'a>(&self, raw: &'a [u8]) -> Option<RequestHead<'a>> {
        RequestHead::read(raw)
    }

    fn build_request_head(
        &self,
        mut head: RequestHead<'_>,
    ) -> Result<UpstreamRequest, TranslateError> {
        // The client's own bytes for every member the proxy does not rewrite: copying them is
        // cheaper than serializing the messages again (serde_json escapes a string a byte at a
        // time), and the upstream gets what the client wrote.
        self.rewrite_head(&mut head);
        let kind = self.config.kind;
        let raw = head.raw();
        let mut body = Vec::with_capacity(raw.len() + 64);
        let mut copied = Vec::new();
        // Which of REWRITTEN the client sent.
        let mut sent = [false; REWRITTEN.len()];
        // The members the upstream refused, left out (see `Provider::refused`).
        let mask = self.left_out.load(Ordering::Relaxed);
        let mut left = Vec::new();
        body.push(b'{');
        for (key, value) in head.members() {
            if let Some(i) = rewritten(key) {
                sent[i] = true;
            } else if mask != 0
                && let Some(name) = left_out(mask, key)
            {
                left.push(name);
            } else {
                open_key(&mut body);
                copy_from(&mut body, &mut copied, raw, key);
                body.extend_from_slice(b"\":");
                copy_from(&mut body, &mut copied, raw, value);
            }
        }
        copied.retain(|span| span.len >= MIN_COPIED);
        let set_from = body.len();
        // In REWRITTEN's order, as `sent`.
        let written = [
            !head.model.is_empty(),
            head.max_tokens.is_some(),
            head.max_completion_tokens.is_some(),
            head.stream.is_some(),
            head.stream_options.is_some(),
        ];
        if written[0] {
            typed_member(&mut body, "model", &head.model, kind)?;
        }
        if let Some(v) = &head.max_tokens {
            typed_member(&mut body, "max_tokens", v, kind)?;
        }
        if let Some(v) = &head.max_completion_tokens {
            typed_member(&mut body, "max_completion_tokens", v, kind)?;
        }
        if let Some(v) = &head.stream {
            typed_member(&mut body, "stream", v, kind)?;
        }
        if let Some(v) = &head.stream_options {
            typed_member(&mut body, "stream_options", v, kind)?;
        }
        // The members just written, and a null for each the client sent that went.
        let set = &body[set_from..];
        let mut changes = Vec::with_capacity(set.len() + 2);
        changes.push(b'{');
        changes.extend_from_slice(set.strip_prefix(b",").unwrap_or(set));
        for ((name, sent), written) in REWRITTEN.iter().zip(sent).zip(written) {
            if sent && !written {
                open_raw_member(&mut changes, name.as_bytes());
                changes.extend_from_slice(b"null");
            }
        }
        for name in &left {
            open_raw_member(&mut changes, name.as_bytes());
            changes.extend_from_slice(b"null");
        }
        changes.push(b'}');
        body.push(b'}');
        let dropped = left.into_iter().map(str::to_owned).collect();
        let mut up =
            UpstreamRequest::post(self.url.clone(), self.headers.clone(), body.into(), dropped);
        up.copied = copied;
        up.changes = Some(changes.into());
        Ok(up)
    }

    fn translate_response(
        &self,
        status: u16,
        body: Bytes,
        ctx: &ResponseContext,
    ) -> Result<Translated, TranslateError> {
        if !(200..300).contains(&status) {
            return Err(self.translate_error(status, &body));
        }
        match uniproxy_wire::from_bytes::<ChatCompletion>(&body) {
            Ok(completion) => Ok(Translated { completion, body }),
            Err(source) => {
                // What the typed parse refused, read once as the object it may be: an error in
                // place of an answer gives that error; an answer that parses once the top-level
                // members it left out are filled in goes to the client with them; any other
                // keeps the first parse's error.
                let malformed = TranslateError::Malformed { provider: self.config.kind, source };
                let Ok(mut members) = from_slice::<Map>(&body) else { return Err(malformed) };
                if let Some(error) = error_in_answer(&members, &body, status, self.bare_host) {
                    return Err(error);
                }
                let mut changed = whole_created(&mut members);
                let messages = members.get_mut("choices").and_then(serde_json::Value::as_array_mut);
                for choice in messages.into_iter().flatten() {
                    if let Some(message) = choice.get_mut("message") {
                        changed |= arguments_as_text(message);
                    }
                }
                let body = match changed.then(|| serde_json::to_vec(&members)) {
                    Some(Ok(rewritten)) => Bytes::from(rewritten),
                    Some(Err(_)) => return Err(malformed),
                    None => body,
                };
                with_required_members(&body, &members, ctx)
                    .or_else(|| changed.then_some(body))
                    .and_then(|filled| {
                        let completion = uniproxy_wire::from_bytes(&filled).ok()?;
                        Some(Translated { completion, body: filled })
                    })
                    .ok_or(malformed)
            }
        }
    }

    fn translate_answer(
        &self,
        status: u16,
        body: Bytes,
        ctx: &ResponseContext,
    ) -> Result<Answer, TranslateError> {
        // The body goes to the client as it came: the members a client relies on are checked
        // (see `CompletionView`) and the usage read, without building the typed completion.
        // The check is a `Reader` walk; what it is unsure of goes to the same check done by
        // serde_json (`CompletionView`), which decides; what that refuses takes the full parse,
        // which gives the precise error. UTF-8 is checked first, not by `from_bytes`: the
        // check skips most strings, so a body that is not UTF-8 must reach the full parse.
        if (200..300).contains(&status)
            && let Ok(text) = std::str::from_utf8(&body)
        {
            if let Some(usage) = read_answer(&mut Reader::new(text)) {
                return Ok(Answer { usage, body });
            }
            if let Ok(view) = serde_json::from_str::<CompletionView<'_>>(text) {
                return Ok(Answer { usage: view.usage, body });
            }
        }
        self.translate_response(status, body, ctx).map(Answer::from)
    }

    fn translate_error(&self, status: u16, body: &[u8]) -> TranslateError {
        // `BASE_URL=http://localhost:11434`, Ollama's own address, is what users paste; the
        // server then answers `404 page not found` in plain text, which names no cause.
        let hint = (status == 404 && self.bare_host).then_some(BARE_HOST_HINT);
        openai_error(status, body, hint)
    }

    fn refused(&self, status: u16, body: &[u8], own_usage: bool) -> bool {
        let names = |member: &[u8]| {
            matches!(status, 400 | 422) && body.windows(member.len()).any(|w| w == member)
        };
        let bit = if let Some(i) = refused_sampling(status, body) {
            1 << i
        } else if own_usage && names(b"stream_options") {
            // Mistral answers 422 (`extra_forbidden` at `stream_options.include_usage`), older
            // Azure API versions 400 ("Unrecognized request argument supplied: stream_options").
            STREAM_USAGE
        } else if refuses_new_limit(status, body) {
            // Older Azure API versions: "Unrecognized request argument supplied:
            // max_completion_tokens"; servers that know only `max_tokens` (a client sent the
            // newer member to a custom one), 422 `extra_forbidden`. The limit goes as
            // `max_tokens` from then on, the client's own included. Once only: refused again,
            // the refusal reaches the client.
            let before = self.left_out.fetch_or(NEW_LIMIT, Ordering::Relaxed);
            return before & NEW_LIMIT == 0;
        } else {
            return false;
        };
        self.left_out.fetch_or(bit, Ordering::Relaxed);
        true
    }

    fn stream(&self, ctx: &ResponseContext) -> Box<dyn StreamTranslator> {
        Box::new(OpenAiStream::new(ctx))
    }
}

/// What an error from a bare-host `BASE_URL` that says the server has no such endpoint adds.
const BARE_HOST_HINT: &str = " (BASE_URL is a bare host, and the server has no \
    /chat/completions at its root; OpenAI-compatible servers such as Ollama, vLLM and LM Studio \
    serve it under /v1: add /v1 to BASE_URL)";

/// An OpenAI-shaped error body, or the body's text when it is not one.
pub(crate) fn translate_openai_error(status: u16, body: &[u8]) -> TranslateError {
    openai_error(status, body, None)
}

/// [`translate_openai_error`], with `hint` after the text of a body that is no OpenAI error.
fn openai_error(status: u16, body: &[u8], hint: Option<&str>) -> TranslateError {
    // Google's OpenAI-compatible endpoint sends its errors as a one-element array.
    let error = match first_or_only::<ErrorResponse>(body) {
        Some(e) => complete_error(e, status),
        None => {
            let mut e = fallback_error(status, body);
            e.error.message.push_str(hint.unwrap_or_default());
            e
        }
    };
    TranslateError::Upstream { status, error: Box::new(error) }
}

/// An answer's or a chunk's `error` member `err` (of `data`, which came with the HTTP status
/// `answered`) as an OpenAI error, with the status it stands for: OpenRouter's `code` is the
/// HTTP status it would have answered (it answers 200 once the model has started); `default`
/// for any other. An error that is no OpenAI error object (`{"error": "…"}`) is its text, with
/// the status the upstream did answer.
fn error_member(
    err: &serde_json::Value,
    data: &[u8],
    default: u16,
    answered: u16,
) -> (u16, ErrorResponse) {
    let status = err
        .get("code")
        .and_then(serde_json::Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..600).contains(c))
        .unwrap_or(default);
    let as_text = || {
        let mut e = fallback_error(answered, data);
        e.error.kind = Some(Some(crate::error::error_type_for_status(status).to_owned()));
        e
    };
    let error = serde_json::from_value::<ErrorResponse>(serde_json::json!({ "error": err }))
        .map_or_else(|_| as_text(), |e| complete_error(e, status));
    (status, error)
}

/// The error of a 2xx answer (`body`, whose members are `members`, answered with `answered`)
/// that is an error and no answer: an `error` member that is not `null`, and no `choices`.
/// `bare_host` adds the hint to add `/v1` to LM Studio's answer at its root, a 200 that says
/// `"Unexpected endpoint or method. (POST /chat/completions)"`.
fn error_in_answer(
    members: &Map,
    body: &[u8],
    answered: u16,
    bare_host: bool,
) -> Option<TranslateError> {
    let err = members.get("error").filter(|e| !e.is_null())?;
    if members.contains_key("choices") {
        return None;
    }
    let (status, mut error) = error_member(err, body, 502, answered);
    if bare_host && err.as_str().is_some_and(|e| e.starts_with("Unexpected endpoint")) {
        error.error.message.push_str(BARE_HOST_HINT);
    }
    Some(TranslateError::Upstream { status, error: Box::new(error) })
}

/// `body`, a JSON object, with the top-level members [`ChatCompletion`] requires and `body`
/// leaves out written in at its start (see [`required_members`]). Some servers that take the
/// OpenAI format leave some out (GitHub Copilot's and Z.ai's APIs send no `object`), and clients
/// that check the answer's shape (pydantic-ai, async-openai) refuse it. `members` are
/// `body`'s. `None` when nothing is missing; a member present as `null` counts as present, so
/// the caller's parse of the result still refuses it.
fn with_required_members(body: &[u8], members: &Map, ctx: &ResponseContext) -> Option<Bytes> {
    let has = REQUIRED.map(|name| members.contains_key(name));
    if has == [true; 4] {
        return None;
    }
    let values = (ctx.id.as_str(), ctx.created, ctx.model.as_str());
    members_first(body, &required_members(has, "chat.completion", values)).map(Bytes::from)
}

/// A `created` written as a number that is no whole count of seconds, made one: SambaNova's
/// API sends `"created":1750000000.123`, and clients that type the answer (async-openai, Go's
/// and .NET's) refuse a float where the API has an integer. A float is cut to its seconds, a
/// negative number is 0. `true` when `members` changed; any other value is left for the
/// typed parse to refuse.
fn whole_created(members: &mut Map) -> bool {
    let Some(created) = members.get_mut("created").filter(|c| !c.is_u64()) else { return false };
    let Some(seconds) = seconds(created) else { return false };
    *created = seconds.into();
    true
}

/// A time in whole seconds: an integer as it is, a float cut (`as` saturates, and makes a
/// negative number 0); `None` for what is no number.
fn seconds(value: &serde_json::Value) -> Option<u64> {
    value.as_u64().or_else(|| value.as_f64().map(|s| s as u64))
}

/// `created` as [`whole_created`] reads it, for the record of a stream whose chunks say it as a
/// float.
fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    serde_json::Value::deserialize(d).map(|value| seconds(&value))
}

/// The top-level members every answer and every chunk has, in the order of
/// [`ChunkView::required`].
const REQUIRED: [&str; 4] = ["id", "object", "created", "model"];

/// The members of [`REQUIRED`] that `has` says are missing, with the values the proxy writes in:
/// `object` is `object`; `id`, `created` and `model` are `values`.
fn required_members(
    has: [bool; 4],
    object: &'static str,
    (id, created, model): (&str, u64, &str),
) -> Vec<(&'static str, serde_json::Value)> {
    let values = [id.into(), object.into(), created.into(), model.into()];
    REQUIRED.into_iter().zip(values).zip(has).filter(|(_, has)| !has).map(|(m, _)| m).collect()
}

/// `object`, the bytes of a JSON object, with `members` written in at its start; `None` when it
/// does not start with `{`.
fn members_first(object: &[u8], members: &[(&str, serde_json::Value)]) -> Option<Vec<u8>> {
    let start = object.iter().position(|b| !b.is_ascii_whitespace())?;
    if object[start] != b'{' {
        return None;
    }
    let mut out = Vec::with_capacity(object.len() + 128);
    out.extend_from_slice(&object[..=start]);
    for (name, value) in members {
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        serde_json::to_writer(&mut out, value).ok()?;
        out.push(b',');
    }
    let rest = &object[start + 1..];
    if rest.trim_ascii_start().starts_with(b"}") {
        // `{}`: no member follows the ones written.
        out.pop();
    }
    out.extend_from_slice(rest);
    Some(out)
}

/// The members of an answer that [`ChatCompletion`] requires (id, object, created, model,
/// choices with an index and a message role), with the usage. Strings are borrowed where they
/// can be; every other member is skipped, so an answer whose optional members have the wrong
/// type (a numeric `system_fingerprint`) passes here though the full parse would refuse it:
/// the client gets it as the upstream sent it.
#[derive(Deserialize)]
#[allow(dead_code)] // Fields other than `usage` are read only to check their types.
struct CompletionView<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow)]
    object: Text<'a>,
    created: u64,
    #[serde(borrow)]
    model: Text<'a>,
    #[serde(borrow)]
    choices: Vec<AnswerChoice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct AnswerChoice<'a> {
    index: u32,
    #[serde(borrow)]
    message: AnswerMessage<'a>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct AnswerMessage<'a> {
    #[serde(borrow)]
    role: Text<'a>,
    /// Any shape, unless a call's arguments are a JSON value: those the typed parse's
    /// fallback writes as their text ([`arguments_as_text`]).
    #[serde(default, deserialize_with = "tool_calls_as_text")]
    tool_calls: (),
    #[serde(default, deserialize_with = "function_call_as_text")]
    function_call: (),
}

/// A message's `tool_calls`, refused if [`arguments_as_text`] would change it.
fn tool_calls_as_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    let mut calls = serde_json::Value::deserialize(d)?;
    text_already(calls_arguments_as_text(&mut calls))
}

/// A message's `function_call`, refused if [`arguments_as_text`] would change it.
fn function_call_as_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    let mut function = serde_json::Value::deserialize(d)?;
    text_already(function_arguments_as_text(Some(&mut function)))
}

fn text_already<E: serde::de::Error>(changed: bool) -> Result<(), E> {
    if changed {
        return Err(E::custom("a call's arguments are a JSON value, not its text"));
    }
    Ok(())
}

/// [`CompletionView`]'s check as a [`Reader`] walk: the usage if the answer passes, `None`
/// where the reader is unsure (then `CompletionView` decides). Strings are checked, not kept;
/// the usage is read by hand, as serde builds it (unknown members into `extra`), which was a
/// third of the check's instructions through serde's `flatten`.
fn read_answer(r: &mut Reader<'_>) -> Option<Option<Usage>> {
    let mut usage = None;
    // id, object, created, model and choices are required; usage is not.
    let mut seen = [false; 6];
    r.members(|r, key| {
        let slot = match key {
            b"id" => 0,
            b"object" => 1,
            b"created" => 2,
            b"model" => 3,
            b"choices" => 4,
            b"usage" => 5,
            _ => return r.skip(),
        };
        once(&mut seen[slot])?;
        match slot {
            2 => r.unsigned::<u64>().map(drop),
            4 => r.elements(read_answer_choice),
            5 => {
                usage = r.nullable(read_usage)?;
                Some(())
            }
            _ => r.string().map(drop),
        }
    })?;
    r.end()?;
    seen[..5].iter().all(|&s| s).then_some(usage)
}

/// A choice of an answer: a `u32` index and a message with a string role, both required.
fn read_answer_choice(r: &mut Reader<'_>) -> Option<()> {
    let mut seen = [false; 2];
    r.members(|r, key| match key {
        b"index" => {
            once(&mut seen[0])?;
            r.unsigned::<u32>().map(drop)
        }
        b"message" => {
            once(&mut seen[1])?;
            let mut seen = [false; 3];
            r.members(|r, key| match key {
                b"role" => {
                    once(&mut seen[0])?;
                    r.string().map(drop)
                }
                b"tool_calls" => {
                    once(&mut seen[1])?;
                    let call = |r: &mut Reader<'_>| {
                        let mut function = false;
                        r.members(|r, key| match key {
                            b"function" => {
                                once(&mut function)?;
                                r.nullable(read_answer_function).map(drop)
                            }
                            _ => r.skip(),
                        })
                    };
                    r.nullable(|r| r.elements(call)).map(drop)
                }
                b"function_call" => {
                    once(&mut seen[2])?;
                    r.nullable(read_answer_function).map(drop)
                }
                _ => r.skip(),
            })?;
            seen[0].then_some(())
        }
        _ => r.skip(),
    })?;
    (seen == [true; 2]).then_some(())
}

/// A call's function in an answer: `arguments`, if there, a string or `null` (anything else is
/// [`calls_as_text`]'s to decide), checked as serde_json checks it but not decoded: the
/// arguments are JSON text, so they always hold escapes, and decoding them was an allocation
/// and a copy per call of every answer with tool calls.
fn read_answer_function(r: &mut Reader<'_>) -> Option<()> {
    let mut arguments = false;
    r.members(|r, key| match key {
        b"arguments" => {
            once(&mut arguments)?;
            r.nullable(Reader::kept_string).map(drop)
        }
        _ => r.skip(),
    })
}

/// An unknown member of a usage object, kept as serde keeps it (`#[serde(flatten)] extra`).
/// A key given twice is left to serde.
fn extra_member(r: &mut Reader<'_>, extra: &mut uniproxy_wire::Map, key: &[u8]) -> Option<()> {
    let key = std::str::from_utf8(key).ok()?;
    if extra.contains_key(key) {
        return None;
    }
    let value = r.parse()?;
    extra.insert(key.to_owned(), value);
    Some(())
}

fn read_usage(r: &mut Reader<'_>) -> Option<Usage> {
    let mut usage = Usage::default();
    let mut details = [false; 2];
    let tokens: &mut [(&[u8], &mut u64)] = &mut [
        (b"prompt_tokens", &mut usage.prompt_tokens),
        (b"completion_tokens", &mut usage.completion_tokens),
        (b"total_tokens", &mut usage.total_tokens),
    ];
    named_fields(r, tokens, Reader::unsigned, |r, key| match key {
        b"prompt_tokens_details" => {
            once(&mut details[0])?;
            usage.prompt_tokens_details = r.nullable(read_prompt_details)?;
            Some(())
        }
        b"completion_tokens_details" => {
            once(&mut details[1])?;
            usage.completion_tokens_details = r.nullable(read_completion_details)?;
            Some(())
        }
        _ => extra_member(r, &mut usage.extra, key),
    })?;
    Some(usage)
}

fn read_prompt_details(r: &mut Reader<'_>) -> Option<PromptTokensDetails> {
    let mut details = PromptTokensDetails::default();
    let counts: &mut [(&[u8], &mut Option<u64>)] = &mut [
        (b"cached_tokens", &mut details.cached_tokens),
        (b"audio_tokens", &mut details.audio_tokens),
    ];
    named_fields(r, counts, count, |r, key| extra_member(r, &mut details.extra, key))?;
    Some(details)
}

fn read_completion_details(r: &mut Reader<'_>) -> Option<CompletionTokensDetails> {
    let mut details = CompletionTokensDetails::default();
    let counts: &mut [(&[u8], &mut Option<u64>)] = &mut [
        (b"reasoning_tokens", &mut details.reasoning_tokens),
        (b"audio_tokens", &mut details.audio_tokens),
        (b"accepted_prediction_tokens", &mut details.accepted_prediction_tokens),
        (b"rejected_prediction_tokens", &mut details.rejected_prediction_tokens),
    ];
    named_fields(r, counts, count, |r, key| extra_member(r, &mut details.extra, key))?;
    Some(details)
}

/// A string of a chunk, borrowed from the chunk's bytes unless it holds escapes.
///
/// `Option<Cow<'a, str>>` does not do this, `#[serde(borrow)]` or not: serde borrows only for
/// a bare `Cow` field, and copies into an `Option` of one.
#[derive(Debug, PartialEq, Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// The parts of a chunk the log needs once: read from the first chunks only, until they are
/// known, so the strings every chunk repeats are skipped, not checked, in all the others.
#[derive(Deserialize)]
struct ChunkHead<'a> {
    #[serde(default, borrow)]
    id: Option<Text<'a>>,
    #[serde(default, borrow)]
    model: Option<Text<'a>>,
    #[serde(default, deserialize_with = "whole_seconds")]
    created: Option<u64>,
}

/// The parts of every chunk the log needs, read without copying what it does not need, and
/// which of the members every chunk must have it has.
#[derive(Debug, Default, PartialEq, Deserialize)]
struct ChunkView<'a> {
    /// `null` is no choices: see [`null_as_empty`].
    #[serde(default, borrow, deserialize_with = "null_as_empty")]
    choices: Vec<ChoiceView<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default, rename = "id", deserialize_with = "present")]
    has_id: bool,
    #[serde(default, rename = "object", deserialize_with = "present")]
    has_object: bool,
    #[serde(default, rename = "created", deserialize_with = "created")]
    created: Created,
    #[serde(default, rename = "model", deserialize_with = "present")]
    has_model: bool,
}

impl ChunkView<'_> {
    /// Which of `id`, `object`, `created` and `model` the chunk has, in that order.
    fn required(&self) -> [bool; 4] {
        [self.has_id, self.has_object, self.created != Created::Absent, self.has_model]
    }
}

/// What a chunk's `created` is.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Created {
    #[default]
    Absent,
    /// A whole number of seconds, as the API has it.
    Whole,
    /// Anything else (`null` included): a float (SambaNova's API) is made whole for the client
    /// ([`whole_created`]).
    Other,
}

/// A chunk's `created`, as [`Created`] says.
fn created<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Created, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(if value.is_u64() { Created::Whole } else { Created::Other })
}

/// A chunk's `choices`, where `null` is none: some OpenAI-compatible servers send a chunk with
/// `"choices": null` (the usage's, say), which ended the client's stream with an error.
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<Vec<T>>::deserialize(d).map(Option::unwrap_or_default)
}

/// `true` for a member that is there, whatever its value (`null` included).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

#[derive(Debug, Default, PartialEq, Deserialize)]
struct ChoiceView<'a> {
    #[serde(default)]
    index: u32,
    #[serde(default, borrow)]
    delta: Option<DeltaView<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Text<'a>>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
struct DeltaView<'a> {
    #[serde(default, borrow)]
    content: Option<DeltaContent<'a>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Text<'a>>,
    /// Ollama and OpenRouter name the reasoning `reasoning`.
    #[serde(default, borrow)]
    reasoning: Option<Text<'a>>,
    #[serde(default, borrow)]
    refusal: Option<Text<'a>>,
    /// A list, or one call alone (text-generation-inference 2.x): see [`one_or_more_calls`].
    #[serde(default, borrow, deserialize_with = "one_or_more_calls")]
    tool_calls: Option<Vec<ToolCallView<'a>>>,
    /// The legacy call, to a client that offered `functions` (taken by the full parse only).
    #[serde(default, borrow)]
    function_call: Option<FunctionView<'a>>,
    /// Whether the delta says the `role`: OpenAI's first delta of a choice does, Ollama's
    /// every one.
    #[serde(default, rename = "role", deserialize_with = "present")]
    has_role: bool,
}

/// A delta's `content`: a string, as OpenAI sends it, or a list of parts, as Mistral's
/// reasoning models (Magistral) send it: `thinking` parts, whose text is the reasoning, and
/// `text` parts. A part of another type is not text the log keeps.
#[derive(Debug, PartialEq)]
enum DeltaContent<'a> {
    Text(Text<'a>),
    Parts { text: String, thinking: String },
}

impl<'de: 'a, 'a> Deserialize<'de> for DeltaContent<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);

        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = DeltaContent<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or a list of content parts")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(DeltaContent::Text(Text(Cow::Borrowed(v))))
            }

            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(DeltaContent::Text(Text(Cow::Owned(v.to_owned()))))
            }

            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(DeltaContent::Text(Text(Cow::Owned(v))))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let (mut text, mut thinking) = (String::new(), String::new());
                while let Some(part) = seq.next_element::<serde_json::Value>()? {
                    match part.get("type").and_then(serde_json::Value::as_str) {
                        Some("text") => part_text(&part, &mut text),
                        Some("thinking") => match part.get("thinking") {
                            Some(serde_json::Value::Array(parts)) => {
                                parts.iter().for_each(|p| part_text(p, &mut thinking));
                            }
                            Some(serde_json::Value::String(t)) => thinking.push_str(t),
                            _ => {}
                        },
                        _ => {}
                    }
                }
                Ok(DeltaContent::Parts { text, thinking })
            }
        }

        d.deserialize_any(Visit(std::marker::PhantomData))
    }
}

/// Appends the `text` of a text part to `out`.
fn part_text(part: &serde_json::Value, out: &mut String) {
    if part.get("type").and_then(serde_json::Value::as_str) == Some("text")
        && let Some(t) = part.get("text").and_then(serde_json::Value::as_str)
    {
        out.push_str(t);
    }
}

#[derive(Debug, Default, PartialEq, Deserialize)]
struct ToolCallView<'a> {
    /// Left out (or `null`) by Gemini's OpenAI-compatible endpoint, which sends each call
    /// whole: see [`Assembled::unindexed_call`].
    #[serde(default)]
    index: Option<u32>,
    #[serde(default, borrow)]
    id: Option<Text<'a>>,
    #[serde(default, borrow)]
    function: Option<FunctionView<'a>>,
    /// A custom tool call's name and input (taken by the full parse only).
    #[serde(default, borrow)]
    custom: Option<CustomView<'a>>,
    /// Whether the call came alone as the delta's `tool_calls`, not in a list.
    #[serde(skip)]
    alone: bool,
}

/// A delta's `tool_calls`: the list OpenAI sends, or `null`, or one call alone, not in a list,
/// as text-generation-inference streams them before 3.x (`"tool_calls":{"index":0,…}`), which
/// is taken as a list of that call, marked [`alone`](ToolCallView::alone): the client gets
/// it in a list ([`chunk_for_client`]).
fn one_or_more_calls<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<ToolCallView<'a>>>, D::Error> {
    struct Calls<'a>(std::marker::PhantomData<ToolCallView<'a>>);
    impl<'de: 'a, 'a> serde::de::Visitor<'de> for Calls<'a> {
        type Value = Option<Vec<ToolCallView<'a>>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of tool calls")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(Some)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            let call = ToolCallView::deserialize(serde::de::value::MapAccessDeserializer::new(map));
            Ok(Some(vec![ToolCallView { alone: true, ..call? }]))
        }
    }
    d.deserialize_any(Calls(std::marker::PhantomData))
}

#[derive(Debug, Default, PartialEq, Deserialize)]
struct CustomView<'a> {
    #[serde(default, borrow)]
    name: Option<Text<'a>>,
    #[serde(default, borrow)]
    input: Option<Text<'a>>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
struct FunctionView<'a> {
    #[serde(default, borrow)]
    name: Option<Text<'a>>,
    #[serde(default, borrow)]
    arguments: Option<Arguments<'a>>,
}

/// A call's `arguments`: the JSON text OpenAI sends as a string, or the text of the JSON value
/// some servers send in its place (llama.cpp's server and TGI send the object itself), with
/// `value` saying so: the client gets such a chunk with the text as a string
/// ([`arguments_as_text`]), and the log the same text.
#[derive(Debug, PartialEq)]
struct Arguments<'a> {
    text: Text<'a>,
    value: bool,
}

impl<'a> Arguments<'a> {
    fn text(text: Text<'a>) -> Self {
        Arguments { text, value: false }
    }

    fn value(value: &serde_json::Value) -> Self {
        Arguments { text: Text(Cow::Owned(value.to_string())), value: true }
    }
}

impl std::ops::Deref for Arguments<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Arguments<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};

        struct Visit<'a>(std::marker::PhantomData<&'a ()>);

        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Arguments<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the arguments as JSON text")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Arguments::text(Text(Cow::Borrowed(v))))
            }

            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Arguments::text(Text(Cow::Owned(v.to_owned()))))
            }

            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Arguments::text(Text(Cow::Owned(v))))
            }

            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Arguments::value(&v.into()))
            }

            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Arguments::value(&v.into()))
            }

            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Arguments::value(&v.into()))
            }

            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Arguments::value(&v.into()))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                let value = serde_json::Value::deserialize(SeqAccessDeserializer::new(seq))?;
                Ok(Arguments::value(&value))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let value = serde_json::Value::deserialize(MapAccessDeserializer::new(map))?;
                Ok(Arguments::value(&value))
            }
        }

        d.deserialize_any(Visit(std::marker::PhantomData))
    }
}

impl DeltaView<'_> {
    /// Whether a call's `arguments` came as a JSON value, not as its text, or a call came
    /// alone, not in a list: what [`chunk_for_client`] rewrites.
    fn has_calls_to_rewrite(&self) -> bool {
        let alone = self.tool_calls.iter().flatten().any(|c| c.alone);
        let calls = self.tool_calls.iter().flatten().filter_map(|c| c.function.as_ref());
        let mut functions = calls.chain(&self.function_call);
        alone || functions.any(|f| f.arguments.as_ref().is_some_and(|a| a.value))
    }
}

/// `data`, a chunk, with [`arguments_as_text`] done to each choice's delta, a tool call
/// given alone as a delta's `tool_calls` put in a list, the tool calls without an `index`
/// given the next of `indexes`, in order, a `created` that is no whole number of seconds
/// made one ([`whole_created`]), and the `role` of the choices `roles_again` names left out;
/// `None` when it is no JSON object or nothing changed.
fn chunk_for_client(data: &[u8], indexes: &[u32], roles_again: &[u32]) -> Option<Vec<u8>> {
    let mut chunk: serde_json::Value = uniproxy_wire::from_bytes(data).ok()?;
    let mut changed = chunk.as_object_mut().is_some_and(whole_created);
    let mut indexes = indexes.iter();
    for choice in chunk.get_mut("choices")?.as_array_mut()? {
        // As the view reads it: a choice without an index is the first.
        let index = choice.get("index").and_then(serde_json::Value::as_u64).unwrap_or(0);
        let again = roles_again.iter().any(|&r| u64::from(r) == index);
        if let Some(delta) = choice.get_mut("delta") {
            if again && let Some(delta) = delta.as_object_mut() {
                changed |= delta.shift_remove("role").is_some();
            }
            if let Some(calls) = delta.get_mut("tool_calls").filter(|calls| calls.is_object()) {
                *calls = serde_json::Value::Array(vec![calls.take()]);
                changed = true;
            }
            let calls = delta.get_mut("tool_calls").and_then(serde_json::Value::as_array_mut);
            for call in calls.into_iter().flatten() {
                let Some(call) = call.as_object_mut() else { continue };
                if call.get("index").is_none_or(serde_json::Value::is_null)
                    && let Some(&index) = indexes.next()
                {
                    call.insert("index".to_owned(), index.into());
                    changed = true;
                }
            }
            changed |= arguments_as_text(delta);
        }
    }
    changed.then(|| serde_json::to_vec(&chunk).ok()).flatten()
}

/// Writes the `arguments` of `message`'s (or a delta's) tool calls and legacy function call
/// that are a JSON value other than `null` as that value's JSON text, the string the API
/// has there; `true` if any was.
fn arguments_as_text(message: &mut serde_json::Value) -> bool {
    let calls = message.get_mut("tool_calls").is_some_and(calls_arguments_as_text);
    function_arguments_as_text(message.get_mut("function_call")) | calls
}

/// [`arguments_as_text`] for a list of tool calls.
fn calls_arguments_as_text(calls: &mut serde_json::Value) -> bool {
    let calls = calls.as_array_mut().into_iter().flatten();
    calls
        .fold(false, |changed, call| function_arguments_as_text(call.get_mut("function")) | changed)
}

/// [`arguments_as_text`] for one call's function (or the legacy function call).
fn function_arguments_as_text(function: Option<&mut serde_json::Value>) -> bool {
    match function.and_then(|f| f.get_mut("arguments")) {
        Some(arguments) if !arguments.is_string() && !arguments.is_null() => {
            *arguments = arguments.to_string().into();
            true
        }
        _ => false,
    }
}

/// A chunk's [`ChunkView`], read by a [`Reader`]: the view's few members are taken and all
/// others skipped in one checking walk, instead of serde_json visiting every key of every chunk
/// (id, object, created, model, fingerprint, logprobs...) through its generic machinery: 6.3k
/// to 5.1k instructions per event. What the reader does not take (see [`Reader`]), or a member
/// given twice, goes to the full parse, which gives the same view or the precise error; the
/// tests hold the two to the same answers. `text` is `data` if it is UTF-8 (the caller has
/// checked it once for this and for the template).
fn chunk_view<'a>(
    data: &'a [u8],
    text: Option<&'a str>,
) -> Result<ChunkView<'a>, serde_json::Error> {
    match text.and_then(|text| read_chunk(&mut Reader::new(text))) {
        Some(view) => Ok(view),
        None => uniproxy_wire::from_bytes(data),
    }
}

/// An optional string: `null` or a string.
fn text<'a>(r: &mut Reader<'a>) -> Option<Option<Text<'a>>> {
    r.nullable(|r| r.string().map(Text))
}

fn read_chunk<'a>(r: &mut Reader<'a>) -> Option<ChunkView<'a>> {
    let mut view = ChunkView::default();
    let mut seen = [false; 3];
    r.members(|r, key| {
        match key {
            b"choices" => {
                once(&mut seen[0])?;
                r.elements(|r| {
                    view.choices.push(read_choice(r)?);
                    Some(())
                })?;
            }
            b"usage" => {
                once(&mut seen[1])?;
                view.usage = r.parse()?;
            }
            b"error" => {
                once(&mut seen[2])?;
                view.error = r.parse()?;
            }
            // As serde's: present (whatever the value), and refused when there twice.
            b"id" | b"object" | b"model" => {
                once(match key {
                    b"id" => &mut view.has_id,
                    b"object" => &mut view.has_object,
                    _ => &mut view.has_model,
                })?;
                r.skip()?;
            }
            // A whole number of seconds; anything else is left to serde's read.
            b"created" => {
                if view.created != Created::Absent {
                    return None;
                }
                r.unsigned::<u64>()?;
                view.created = Created::Whole;
            }
            _ => r.skip()?,
        }
        Some(())
    })?;
    r.end()?;
    Some(view)
}

fn read_choice<'a>(r: &mut Reader<'a>) -> Option<ChoiceView<'a>> {
    let mut choice = ChoiceView::default();
    let mut seen = [false; 3];
    r.members(|r, key| {
        match key {
            b"index" => {
                once(&mut seen[0])?;
                choice.index = r.unsigned()?;
            }
            b"delta" => {
                once(&mut seen[1])?;
                choice.delta = r.nullable(read_delta)?;
            }
            b"finish_reason" => {
                once(&mut seen[2])?;
                choice.finish_reason = text(r)?;
            }
            _ => r.skip()?,
        }
        Some(())
    })?;
    Some(choice)
}

fn read_delta<'a>(r: &mut Reader<'a>) -> Option<DeltaView<'a>> {
    let mut delta = DeltaView::default();
    let (mut tool_calls_seen, mut content_seen) = (false, false);
    let mut content = None;
    let texts: &mut [(&[u8], &mut Option<Text<'a>>)] = &mut [
        (b"reasoning_content", &mut delta.reasoning_content),
        (b"reasoning", &mut delta.reasoning),
        (b"refusal", &mut delta.refusal),
    ];
    named_fields(r, texts, text, |r, key| {
        if key == b"function_call" {
            // Rare (legacy clients): the full parse takes it.
            return None;
        }
        if key == b"content" {
            // A string or `null`; a list of parts (Mistral's) is the full parse's.
            once(&mut content_seen)?;
            content = text(r)?.map(DeltaContent::Text);
            return Some(());
        }
        if key == b"role" {
            once(&mut delta.has_role)?;
            return r.skip();
        }
        if key != b"tool_calls" {
            return r.skip();
        }
        once(&mut tool_calls_seen)?;
        delta.tool_calls = r.nullable(|r| {
            let mut calls = Vec::new();
            r.elements(|r| {
                calls.push(read_tool_call(r)?);
                Some(())
            })?;
            Some(calls)
        })?;
        Some(())
    })?;
    delta.content = content;
    Some(delta)
}

fn read_tool_call<'a>(r: &mut Reader<'a>) -> Option<ToolCallView<'a>> {
    let mut call = ToolCallView::default();
    let mut seen = [false; 3];
    r.members(|r, key| {
        match key {
            b"index" => {
                once(&mut seen[0])?;
                call.index = Some(r.unsigned()?);
            }
            b"id" => {
                once(&mut seen[1])?;
                call.id = text(r)?;
            }
            b"function" => {
                once(&mut seen[2])?;
                call.function = r.nullable(read_function)?;
            }
            // Rare: the full parse takes it.
            b"custom" => return None,
            _ => r.skip()?,
        }
        Some(())
    })?;
    Some(call)
}

fn read_function<'a>(r: &mut Reader<'a>) -> Option<FunctionView<'a>> {
    let mut function = FunctionView::default();
    let mut arguments = None;
    let texts: &mut [(&[u8], &mut Option<Text<'a>>)] =
        &mut [(b"name", &mut function.name), (b"arguments", &mut arguments)];
    // Arguments that are no string (a JSON value) are the full parse's.
    named_fields(r, texts, text, |r, _| r.skip())?;
    function.arguments = arguments.map(Arguments::text);
    Some(function)
}

/// The chunk most of a stream is made of, one choice's new piece of `content` and nothing else
/// the log reads, kept as a [`Template`] so the next such chunk is read by comparing bytes:
/// everything but its string values must be the template's, and the only string the view
/// takes is the content (every other string value of such a chunk is one the view skips: id,
/// model, fingerprint, role, OpenAI's `obfuscation`). About 40% of a full read's instructions.
#[derive(Debug)]
struct ChunkTemplate {
    template: Template,
    /// The slot holding `choices[0].delta.content`.
    content: usize,
    /// That choice's `index`.
    index: u32,
    /// [`ChunkView::required`] of the chunk: a chunk that matches has the same members.
    required: [bool; 4],
    /// Where the strings of the chunk being matched are (kept to reuse its allocation).
    spans: Vec<(usize, usize)>,
}

impl ChunkTemplate {
    /// The template of `text`, whose view is `view`, when that view is exactly what
    /// [`ChunkTemplate::view`] gives (one choice's content and nothing else) and the content
    /// is borrowed (no escapes, so it is a slice of `text`).
    fn new(text: &str, view: &ChunkView<'_>) -> Option<Self> {
        let [choice] = view.choices.as_slice() else { return None };
        let Some(DeltaContent::Text(Text(Cow::Borrowed(content)))) = choice.delta.as_ref()?.content
        else {
            return None;
        };
        let required = view.required();
        if *view != content_view(choice.index, Text(Cow::Borrowed(content)), required) {
            return None;
        }
        // Where the borrowed content starts in `text`.
        let start = (content.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
        let template = Template::new(text)?;
        let content = template.slot_at(start)?;
        Some(ChunkTemplate { template, content, index: choice.index, required, spans: Vec::new() })
    }

    /// The view of `data` when it is the template's chunk with other strings: the template's
    /// view with this chunk's content. (A match is UTF-8: see [`Template::matches`].)
    fn view<'a>(&mut self, data: &'a [u8]) -> Option<ChunkView<'a>> {
        self.template.matches(data, &mut self.spans)?;
        let content = string_at(data, *self.spans.get(self.content)?)?;
        Some(content_view(self.index, Text(content), self.required))
    }
}

/// The view of a chunk that carries one choice's `content` and nothing else the log reads, and
/// the members of [`ChunkView::required`] that `required` says.
fn content_view(index: u32, content: Text<'_>, required: [bool; 4]) -> ChunkView<'_> {
    let [has_id, has_object, has_created, has_model] = required;
    ChunkView {
        choices: vec![ChoiceView {
            index,
            delta: Some(DeltaView {
                content: Some(DeltaContent::Text(content)),
                ..DeltaView::default()
            }),
            finish_reason: None,
        }],
        usage: None,
        error: None,
        has_id,
        has_object,
        created: if has_created { Created::Whole } else { Created::Absent },
        has_model,
    }
}

/// The identity stream: frames pass through byte for byte, but for the members every chunk
/// must have, written into a chunk that lacks them; the usage chunk the proxy asked for is held
/// back unless the client asked for it too; in-stream errors become OpenAI error frames.
#[derive(Debug)]
pub(crate) struct OpenAiStream {
    include_usage: bool,
    /// The context's id, creation time and model: the record's head takes them where the
    /// stream's first chunk does not say them.
    fallback: (String, u64, String),
    /// Whether the record's id, creation time and model are settled: said by a chunk, or
    /// taken from the context for a chunk that did not say them.
    head_settled: [bool; 3],
    assembled: Assembled,
    done: bool,
    /// The last content-only chunk read in full.
    template: TemplateSlot<ChunkTemplate>,
    /// The indexes the record gave the chunk's tool calls that came without one, in their
    /// order: the client's chunk gets them too.
    unindexed: Vec<u32>,
    /// The choices whose delta has said the role.
    roles_said: Vec<u32>,
    /// The chunk's choices that say the role again: the client's chunk says it once.
    roles_again: Vec<u32>,
}

impl OpenAiStream {
    pub(crate) fn new(ctx: &ResponseContext) -> Self {
        OpenAiStream {
            include_usage: ctx.include_usage,
            fallback: (ctx.id.clone(), ctx.created, ctx.model.clone()),
            head_settled: [false; 3],
            assembled: Assembled::new(String::new(), 0, String::new()),
            done: false,
            template: TemplateSlot::default(),
            unindexed: Vec::new(),
            roles_said: Vec::new(),
            roles_again: Vec::new(),
        }
    }

    /// Ends the stream with an error frame; `status`, for an error the upstream reported, the
    /// HTTP status it stands for ([`Assembled::error_status`]).
    fn fail(&mut self, error: ErrorResponse, status: Option<u16>) -> Vec<Bytes> {
        let frame = sse::encode(&error);
        self.assembled.error = Some(error);
        self.assembled.error_status = status;
        self.done = true;
        vec![frame]
    }

    /// A chunk without some of the members every chunk has, with them written in (as for an
    /// answer: see [`with_required_members`]): the record's head, which [`record`](Self::record)
    /// has filled by then, from the stream's own values where a chunk gave them, so that all
    /// its chunks agree, else the context's.
    fn with_required_members(&self, data: &[u8], has: [bool; 4]) -> Option<Vec<u8>> {
        let a = &self.assembled;
        let members = required_members(has, "chat.completion.chunk", (&a.id, a.created, &a.model));
        members_first(data, &members)
    }

    fn record(&mut self, data: &[u8], view: &ChunkView<'_>) {
        let a = &mut self.assembled;
        if self.head_settled != [true; 3] {
            let head = uniproxy_wire::from_bytes::<ChunkHead<'_>>(data).ok();
            let head = head.as_ref();
            let [has_id, _, has_created, has_model] = view.required();
            // What the chunk did not say, the client got from the context
            // (`with_required_members`): the record says the same. An empty value is not the
            // stream's either, but a later chunk may still say it: Azure's first chunk, the
            // prompt's filter results without choices, has `"id":""`, `"created":0` and
            // `"model":""`, and the answer's chunks that follow have the real ones.
            let settles = |has: bool| !has || !view.choices.is_empty();
            let (id, created, model) = &self.fallback;
            let [id_said, created_said, model_said] = &mut self.head_settled;
            let text = |v: Option<&str>| v.filter(|v| !v.is_empty()).map(str::to_owned);
            settle(&mut a.id, id_said, || text(head?.id.as_deref()), id, settles(has_id));
            let said_created = || head?.created.filter(|&v| v != 0);
            settle(&mut a.created, created_said, said_created, created, settles(has_created));
            let said_model = || text(head?.model.as_deref());
            settle(&mut a.model, model_said, said_model, model, settles(has_model));
        }
        let keep = a.keeps_text();
        for c in &view.choices {
            if let Some(d) = &c.delta
                && keep
            {
                let mut kept = 0;
                let choice = a.choice(c.index);
                match &d.content {
                    Some(DeltaContent::Text(t)) => {
                        choice.content.push_str(t);
                        kept += t.len();
                    }
                    Some(DeltaContent::Parts { text, thinking }) => {
                        choice.content.push_str(text);
                        choice.reasoning_content.push_str(thinking);
                        kept += text.len() + thinking.len();
                    }
                    None => {}
                }
                if let Some(t) = d.reasoning_content.as_ref().or(d.reasoning.as_ref()) {
                    choice.reasoning_content.push_str(t);
                    kept += t.len();
                }
                if let Some(t) = &d.refusal {
                    choice.refusal.push_str(t);
                    kept += t.len();
                }
                a.kept(kept);
                for tc in d.tool_calls.iter().flatten() {
                    let id = tc.id.as_deref();
                    let index = tc.index.unwrap_or_else(|| {
                        let name = tc.function.as_ref().and_then(|f| f.name.as_deref());
                        let index = a.unindexed_call(c.index, id, name);
                        self.unindexed.push(index);
                        index
                    });
                    if let Some(custom) = &tc.custom {
                        let (name, input) = (custom.name.as_deref(), custom.input.as_deref());
                        a.custom_call_fragment(c.index, index, id, name, input);
                        continue;
                    }
                    let f = tc.function.as_ref();
                    a.tool_call_fragment(
                        c.index,
                        index,
                        id,
                        f.and_then(|f| f.name.as_deref()),
                        f.and_then(|f| f.arguments.as_deref()),
                    );
                }
                if let Some(f) = &d.function_call {
                    a.function_call_fragment(c.index, f.name.as_deref(), f.arguments.as_deref());
                }
            }
            if let Some(r) = &c.finish_reason {
                a.choice(c.index).finish_reason = Some((**r).into());
            }
        }
        if let Some(u) = &view.usage {
            a.usage = Some(u.clone());
        }
    }
}

/// Settles one member of a stream's record head, unless `settled` already: to the value a
/// chunk said (`said`), or else to the context's (`fallback`), settled then only when
/// `final_if_unsaid` (otherwise a later chunk may still say it).
fn settle<T: Clone>(
    slot: &mut T,
    settled: &mut bool,
    said: impl FnOnce() -> Option<T>,
    fallback: &T,
    final_if_unsaid: bool,
) {
    if *settled {
        return;
    }
    match said() {
        Some(v) => (*slot, *settled) = (v, true),
        None => (*slot, *settled) = (fallback.clone(), final_if_unsaid),
    }
}

impl StreamTranslator for OpenAiStream {
    fn push(&mut self, event: &SseEvent) -> Result<Vec<Bytes>, TranslateError> {
        let mut out = Vec::with_capacity(1);
        self.push_into(event, &mut out)?;
        Ok(out)
    }

    fn push_into(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) -> Result<(), TranslateError> {
        if self.done {
            return Ok(());
        }
        let data = event.data.trim_ascii();
        if data.is_empty() {
            // An event whose `data:` is empty: a keep-alive some relays send while the model
            // thinks. It says nothing, and the client's SDK would fail on it as JSON.
            return Ok(());
        }
        if data == b"[DONE]" {
            self.done = true;
            out.push(Bytes::from_static(sse::DONE_FRAME));
            return Ok(());
        }
        if event.event.as_deref() == Some("error") {
            // Groq and others end a failing stream with a named error event (Groq's says the
            // status it stands for as `status_code`); llama.cpp's server with an `error:` field
            // (the decoder reads it as one), whose data is the error object itself, its `code`
            // the HTTP status.
            let value = from_slice::<serde_json::Value>(data).ok();
            let (status, error) = match from_slice::<ErrorResponse>(data) {
                Ok(e) => {
                    let status = value
                        .as_ref()
                        .and_then(|v| v.get("error")?.get("status_code")?.as_u64())
                        .and_then(|c| u16::try_from(c).ok())
                        .filter(|c| (400..600).contains(c))
                        .unwrap_or(500);
                    (status, complete_error(e, status))
                }
                Err(_) => match value {
                    Some(e) if e.get("message").is_some_and(serde_json::Value::is_string) => {
                        error_member(&e, data, 500, 200)
                    }
                    _ => (500, fallback_error(500, data)),
                },
            };
            out.extend(self.fail(error, Some(status)));
            return Ok(());
        }
        // A chunk the template takes is UTF-8; any other is checked once, here.
        let templated = self.template.get_mut().and_then(|tpl| tpl.view(data));
        let from_template = templated.is_some();
        if from_template {
            self.template.fit();
        }
        let text = if from_template { None } else { std::str::from_utf8(data).ok() };
        let view = match templated {
            Some(view) => view,
            None => chunk_view(data, text).map_err(|source| TranslateError::Malformed {
                provider: ProviderKind::OpenAi,
                source,
            })?,
        };
        // OpenRouter puts an `error` into an ordinary chunk, choices and all.
        if let Some(err) = &view.error {
            // The chunk's usage is still what the answer cost (OpenRouter sends it there).
            if let Some(u) = &view.usage {
                self.assembled.usage = Some(u.clone());
            }
            let (status, error) = error_member(err, data, 500, 200);
            out.extend(self.fail(error, Some(status)));
            return Ok(());
        }
        self.unindexed.clear();
        self.record(data, &view);
        // The next chunks may fit this one's shape. (`record` reads the head, id, model and
        // creation time, from the chunk's bytes however its view was read.)
        // (No chunk that says a role, or a `created` that is not whole, makes a template: its
        // view is no content view. The chunks that matched it would say them unseen.)
        if !from_template && let Some(text) = text {
            self.template.keep(|| ChunkTemplate::new(text, &view));
        }
        self.roles_again.clear();
        for c in view.choices.iter().filter(|c| c.delta.as_ref().is_some_and(|d| d.has_role)) {
            if self.roles_said.contains(&c.index) {
                self.roles_again.push(c.index);
            } else {
                self.roles_said.push(c.index);
            }
        }
        let usage_only = view.choices.is_empty() && view.usage.is_some();
        if usage_only && !self.include_usage {
            return Ok(());
        }
        // Arguments sent as a JSON value go to the client as their text, as the log has them;
        // tool calls without an index (Gemini's OpenAI-compatible endpoint) with the index the
        // log gave them, since the SDKs' stream helpers put the pieces of a call together by
        // it; a `created` that is no whole number of seconds (SambaNova's) as one; and a role
        // said again (Ollama says it in every delta) not again, since the SDKs' stream helpers
        // join what each delta says (openai-python's made the role "assistantassistant…",
        // which the next request sent back).
        let values = view.choices.iter().filter_map(|c| c.delta.as_ref());
        let rewritten = if values.clone().any(DeltaView::has_calls_to_rewrite)
            || !self.unindexed.is_empty()
            || view.created == Created::Other
            || !self.roles_again.is_empty()
        {
            chunk_for_client(data, &self.unindexed, &self.roles_again)
        } else {
            None
        };
        let data = rewritten.as_deref().unwrap_or(data);
        let has = view.required();
        if has != [true; 4]
            && let Some(filled) = self.with_required_members(data, has)
        {
            out.push(sse::frame_raw(&filled));
            return Ok(());
        }
        if rewritten.is_some() {
            out.push(sse::frame_raw(data));
            return Ok(());
        }
        // The event as it came when it was a plain `data:` line (no copy); re-framed otherwise.
        out.push(event.frame.clone().unwrap_or_else(|| sse::frame_raw(data)));
        Ok(())
    }

    fn finish(&mut self) -> Result<Vec<Bytes>, TranslateError> {
        if self.done {
            return Ok(Vec::new());
        }
        if self.assembled.finished() {
            // Some servers end the body without `[DONE]`; the client still gets it.
            self.done = true;
            return Ok(vec![Bytes::from_static(sse::DONE_FRAME)]);
        }
        Ok(self.fail(crate::error::incomplete_stream(), None))
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn assembled(&self) -> &Assembled {
        &self.assembled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_that_cannot_work_is_the_servers_fault_and_names_the_setting() {
        let azure = ProviderConfig::new(ProviderKind::AzureOpenAi, "https://r.azure.com", "k", "m");
        let bad_key = ProviderConfig::new(ProviderKind::OpenAi, "https://a/v1", "sk-\nx", "m");
        for (config, setting) in [(azure, "`BASE_URL`"), (bad_key, "`API_KEY`")] {
            let Err(e) = crate::provider(&config) else { panic!("{setting} is accepted") };
            assert!(matches!(e, TranslateError::Config { .. }), "{e:?}");
            assert_eq!(e.status(), 500, "not the client's fault: {e}");
            let body = e.to_error_response();
            assert_eq!(body.error.kind(), Some("server_error"));
            assert_eq!(
                body.error.code.clone().flatten(),
                Some(serde_json::Value::from("invalid_configuration"))
            );
            assert!(body.error.message.contains(setting), "{}", body.error.message);
            assert!(!body.error.message.contains("sk-"), "never the value");
        }
    }

    /// Ollama at its own address (`BASE_URL=http://localhost:11434`) answers
    /// `POST /chat/completions` with a plain `404 page not found`: the error says to add `/v1`.
    /// A server under a path, or a 404 that is an OpenAI error (a model not pulled), gets no hint.
    #[test]
    fn a_plain_404_from_a_bare_host_says_to_add_v1() {
        let message = |base: &str, body: &[u8]| {
            let config = ProviderConfig::new(ProviderKind::Custom, base, "", "llama3.2");
            let e = crate::provider(&config).unwrap().translate_error(404, body);
            assert_eq!(e.status(), 404);
            e.to_error_response().error.message
        };
        let hint = "add /v1 to BASE_URL";
        let plain = b"404 page not found";
        for base in ["http://localhost:11434", "http://localhost:11434/", "localhost:11434"] {
            let m = message(base, plain);
            assert!(
                m.starts_with("upstream answered 404: 404 page not found (") && m.contains(hint),
                "{base}: {m}"
            );
        }
        assert!(!message("http://localhost:11434/v1", plain).contains(hint));
        let not_pulled = br#"{"error":{"message":"model \"llama3.2\" not found, try pulling it first","type":"api_error","param":null,"code":null}}"#;
        let m = message("http://localhost:11434", not_pulled);
        assert!(m.starts_with("model \"llama3.2\" not found") && !m.contains(hint), "{m}");
    }

    /// The context of a stream whose chunks may leave out what the context says.
    fn local_ctx(include_usage: bool) -> ResponseContext {
        ResponseContext {
            id: "chatcmpl-local".into(),
            created: 1,
            model: "m".into(),
            include_usage,
            json_object: false,
            legacy_functions: false,
        }
    }

    fn answer_and_response(
        status: u16,
        body: &[u8],
    ) -> (Result<Answer, TranslateError>, Result<Translated, TranslateError>) {
        let config =
            ProviderConfig::new(ProviderKind::OpenAi, "https://api.openai.com/v1", "sk-test", "m");
        let openai = crate::provider(&config).unwrap();
        let request: ChatCompletionRequest =
            from_slice(br#"{"model":"a","messages":[{"role":"user","content":"Hi"}]}"#).unwrap();
        let ctx = ResponseContext::new("chatcmpl-1", 1, "m", &request);
        let body = Bytes::copy_from_slice(body);
        (
            openai.translate_answer(status, body.clone(), &ctx),
            openai.translate_response(status, body, &ctx),
        )
    }

    #[test]
    fn the_request_from_the_clients_bytes_is_the_serialized_request() {
        let bodies: [&[u8]; 7] = [
            br#"{"model":"alias","messages":[{"role":"user","content":"Hi \"there\"\n\u00e9t\u00e9"}]}"#,
            br#"{"model":"alias","messages":[{"role":"user","content":"Hi"}],"stream":true,"max_tokens":99999,"temperature":0.7}"#,
            br#"{"messages":[{"role":"system","content":[{"type":"text","text":"Be brief."}]},{"role":"user","content":"Hi"}],
                 "stream":true,"stream_options":{"include_usage":false,"x":1},"max_completion_tokens":5,
                 "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{}}}}],
                 "tool_choice":"auto","vendor_field":{"nested":[1,2,{"a":null}]}}"#,
            b"{\n  \"mod\\u0065l\" : \"escaped key\",\n  \"messages\" : [ { \"role\" : \"user\", \"content\" : \"pretty\" } ],\n  \"max_tokens\": null\n}",
            br#"{"model":"alias","messages":[{"role":"user","content":"Hi"}],"stream":false,"n":2,"seed":7,"user":"u-1","metadata":{"k":"v"}}"#,
            br#"{"model":"alias","messages":[{"role":"user","content":"Hi"}],"max_tokens":12,"max_completion_tokens":8000}"#,
            br#"{"model":"","messages":[]}"#,
        ];
        for kind in [ProviderKind::OpenAi, ProviderKind::Custom] {
            let mut config = ProviderConfig::new(kind, "http://127.0.0.1:1/v1", "k", "configured");
            config.max_tokens = 4096;
            let openai = crate::provider(&config).unwrap();
            for raw in bodies {
                let text = String::from_utf8_lossy(raw);
                let request: ChatCompletionRequest = from_slice(raw).unwrap();
                // As the server leaves it when SUPPORTS_STREAMING=false, and as it is.
                let mut unstreamed = request.clone();
                unstreamed.stream = None;
                unstreamed.stream_options = None;
                for request in [request, unstreamed] {
                    let typed = openai.build_request(request.clone()).unwrap();
                    let copied = openai.build_request_from(request, raw).unwrap();
                    assert_copied_spans(&copied, raw);
                    assert_changes(&copied, raw);
                    assert!(typed.changes.is_none(), "written from the typed request");
                    assert_eq!((&copied.url, &copied.headers), (&typed.url, &typed.headers));
                    let parse = |b: &[u8]| from_slice::<ChatCompletionRequest>(b).unwrap();
                    assert_eq!(parse(&copied.body), parse(&typed.body), "{text}");
                    let value: serde_json::Value = serde_json::from_slice(&copied.body).unwrap();
                    assert_eq!(value["model"], "configured", "{text}");
                    let count = |needle: &[u8]| {
                        copied.body.windows(needle.len()).filter(|w| *w == needle).count()
                    };
                    // The client's model member, escaped key or not, is replaced, not repeated.
                    assert_eq!(count(br#""model":"#), 1, "{text}");
                    assert_eq!(count(br"mod\u0065l"), 0, "{text}");
                }
            }
        }
        // The messages went over as the client wrote them, escapes and all.
        let config = ProviderConfig::new(ProviderKind::OpenAi, "http://127.0.0.1:1/v1", "k", "m");
        let openai = crate::provider(&config).unwrap();
        let raw = bodies[0];
        let copied = openai.build_request_from(from_slice(raw).unwrap(), raw).unwrap();
        let messages = br#""messages":[{"role":"user","content":"Hi \"there\"\n\u00e9t\u00e9"}]"#;
        assert!(copied.body.windows(messages.len()).any(|w| w == messages));
        // Bytes that are not an object (not what the request came from) take the typed path.
        let request: ChatCompletionRequest = from_slice(raw).unwrap();
        let typed = openai.build_request(request.clone()).unwrap();
        assert_eq!(openai.build_request_from(request, b"[1]").unwrap().body, typed.body);
    }

    /// Checks what [`UpstreamRequest::changes`] promises: the client's object with each of its
    /// members replaced, or left out where it is null, is the upstream body.
    fn assert_changes(up: &UpstreamRequest, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let changes = up.changes.as_deref().unwrap_or_else(|| panic!("no changes: {text}"));
        let changes: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(changes).unwrap();
        let mut rebuilt: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(raw).unwrap();
        for (key, value) in changes {
            if value.is_null() {
                assert!(rebuilt.remove(&key).is_some(), "{key} nulled but not sent: {text}");
            } else {
                rebuilt.insert(key, value);
            }
        }
        let body: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&up.body).unwrap();
        assert_eq!(rebuilt, body, "{text}");
    }

    /// Checks what [`UpstreamRequest::copied`] promises: runs in order, apart, long enough to
    /// name, each the client's bytes where it says.
    fn assert_copied_spans(up: &UpstreamRequest, raw: &[u8]) {
        let mut body_end = 0;
        let mut raw_end = 0;
        for span in &up.copied {
            let text = String::from_utf8_lossy(raw);
            assert!(span.len >= MIN_COPIED, "{span:?} in {text}");
            assert!(span.at >= body_end && span.from >= raw_end, "{:?} in {text}", up.copied);
            assert_eq!(
                up.body.get(span.at..span.at + span.len),
                raw.get(span.from..span.from + span.len),
                "{span:?} in {text}"
            );
            (body_end, raw_end) = (span.at + span.len, span.from + span.len);
        }
    }

    #[test]
    fn the_members_a_compact_client_wrote_go_over_as_one_run_of_its_bytes() {
        let config = ProviderConfig::new(ProviderKind::OpenAi, "http://127.0.0.1:1/v1", "k", "m");
        let openai = crate::provider(&config).unwrap();
        let raw = br#"{"model":"alias","messages":[{"role":"user","content":"Hello there"}],"stream":false,"temperature":0.7,"user":"u-1"}"#;
        let up = openai.build_request_from(from_slice(raw).unwrap(), raw).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&up.body),
            r#"{"messages":[{"role":"user","content":"Hello there"}],"temperature":0.7,"user":"u-1","model":"m","max_completion_tokens":4096,"stream":false}"#
        );
        // `messages` up to its closing bracket (the rewritten `stream` comes next in the
        // client's bytes), then `temperature` and `user` together, too short to name.
        let messages = br#"messages":[{"role":"user","content":"Hello there"}]"#;
        assert_eq!(up.copied, [CopiedSpan { at: 2, from: 18, len: messages.len() }]);
        assert_copied_spans(&up, raw);
        // What the proxy set, in a few bytes, for a log that has the client's request.
        assert_eq!(
            up.changes.as_deref(),
            Some(&br#"{"model":"m","max_completion_tokens":4096,"stream":false}"#[..])
        );
        // Written from the typed request, nothing is copied.
        assert!(openai.build_request(from_slice(raw).unwrap()).unwrap().copied.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn copied_spans_are_the_clients_bytes_whatever_the_layout(
            members in proptest::strategy::Strategy::prop_shuffle(proptest::sample::subsequence(
                vec![
                    r#""model":"alias""#,
                    r#""temperature":0.25"#,
                    r#""stream":true"#,
                    r#""metadata":{"team":"search","ticket":"ABC-1234567"}"#,
                    r#""max_tokens":77"#,
                    r#""user":"a-rather-long-user-identifier-0001""#,
                    r#""stream_options":{"include_usage":true}"#,
                ],
                0..=7,
            )),
            at in 0usize..8,
            content in "[a-zé\\\"]{0,40}",
            space in proptest::sample::select(vec!["", " ", "\n  "]),
        ) {
            let content = serde_json::Value::from(content).to_string();
            let messages = format!(r#""messages":[{{"role":"user","content":{content}}}]"#);
            let mut all: Vec<String> = members.iter().map(|m| m.replace(':', &format!("{space}:{space}"))).collect();
            all.insert(at.min(all.len()), messages);
            let raw = format!("{{{space}{}{space}}}", all.join(&format!(",{space}")));
            let config = ProviderConfig::new(ProviderKind::OpenAi, "http://127.0.0.1:1/v1", "k", "m");
            let openai = crate::provider(&config).unwrap();
            let request: ChatCompletionRequest = from_slice(raw.as_bytes()).unwrap();
            let up = openai.build_request_from(request, raw.as_bytes()).unwrap();
            assert_copied_spans(&up, raw.as_bytes());
            assert_changes(&up, raw.as_bytes());
            if space.is_empty() {
                // The messages member alone is longer than the shortest run named.
                proptest::prop_assert!(!up.copied.is_empty(), "{raw}");
            }
        }
    }

    #[test]
    fn the_answer_check_accepts_and_refuses_what_the_full_parse_does() {
        let full = br#"{"id":"chatcmpl-\u0041bc","object":"chat.completion","created":1741569952,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}],"refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":82,"completion_tokens":17,"total_tokens":99,"prompt_tokens_details":{"cached_tokens":64,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":3,"audio_tokens":0}},"service_tier":"default","system_fingerprint":"fp_1"}"#;
        // The check itself takes a real answer (no fall-back to the full parse).
        assert!(serde_json::from_slice::<CompletionView<'_>>(full).is_ok());
        let (answer, response) = answer_and_response(200, full);
        let (answer, response) = (answer.unwrap(), response.unwrap());
        assert_eq!(answer.body, response.body, "the upstream's bytes pass through");
        assert_eq!(answer.usage, response.completion.usage);
        let usage = answer.usage.unwrap();
        assert_eq!(
            (usage.total_tokens, usage.cached_tokens(), usage.reasoning_tokens()),
            (99, Some(64), Some(3))
        );

        let no_usage = br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":null}"#;
        let (answer, response) = answer_and_response(200, no_usage);
        assert!(answer.unwrap().usage.is_none());
        assert!(response.unwrap().completion.usage.is_none());

        let refused: [&[u8]; 10] = [
            b"",
            b"not json",
            br#"{"id":"c","object":"chat.completion","created":1,"model":"m"}"#,
            br#"{"id":"c","object":"chat.completion","created":"1","model":"m","choices":[]}"#,
            br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"content":"no role"}}]}"#,
            br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":-1,"message":{"role":"assistant"}}]}"#,
            br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":"Hi"}]}"#,
            br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[],"usage":"lots"}"#,
            b"{\"id\":\"c\xff\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"m\",\"choices\":[]}",
            br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[]} trailing"#,
        ];
        for body in refused {
            let (answer, response) = answer_and_response(200, body);
            let (answer, response) = (answer.unwrap_err(), response.unwrap_err());
            assert_eq!(
                answer.to_string(),
                response.to_string(),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(answer.status(), 502);
        }

        let error = br#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let (answer, response) = answer_and_response(429, error);
        let (answer, response) = (answer.unwrap_err(), response.unwrap_err());
        assert_eq!(answer.status(), 429);
        assert_eq!(answer.to_error_response(), response.to_error_response());
    }

    #[test]
    fn a_custom_tool_call_passes_in_an_answer_and_in_a_stream_as_sent() {
        // The spec's ChatCompletionMessageCustomToolCall: no `function`, a `custom` member.
        let answer = br#"{"id":"chatcmpl-C1","object":"chat.completion","created":1754000000,"model":"gpt-5","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"custom","custom":{"name":"code_exec","input":"print(1)"}}],"refusal":null},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":60,"completion_tokens":12,"total_tokens":72}}"#;
        let (answer_only, response) = answer_and_response(200, answer);
        assert_eq!(&answer_only.unwrap().body[..], &answer[..]);
        let response = response.unwrap();
        assert_eq!(&response.body[..], &answer[..]);
        let call = &response.completion.choices[0].message.tool_calls.as_ref().unwrap()[0];
        assert_eq!((call.kind.as_str(), call.function.as_ref()), ("custom", None));
        assert_eq!(call.extra["custom"]["input"], "print(1)");

        let ctx = local_ctx(false);
        let mut stream = OpenAiStream::new(&ctx);
        let chunks = [
            r#"{"id":"chatcmpl-C2","object":"chat.completion.chunk","created":1754000000,"model":"gpt-5","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"custom","custom":{"name":"code_exec","input":""}}]},"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-C2","object":"chat.completion.chunk","created":1754000000,"model":"gpt-5","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"custom":{"input":"print(1)"}}]},"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-C2","object":"chat.completion.chunk","created":1754000000,"model":"gpt-5","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        ];
        for chunk in chunks {
            let frames = stream.push(&SseEvent::new(None, chunk.to_owned())).unwrap();
            assert_eq!(frames, [sse::frame_raw(chunk.as_bytes())], "{chunk}");
        }
        let choice = &stream.assembled().choices[0];
        assert_eq!(choice.tool_calls[0].id, "call_1");
        assert_eq!(choice.finish_reason, Some(uniproxy_wire::FinishReason::ToolCalls));
        // The record has the call as it was: custom, its name and its input.
        let call = &choice.tool_calls[0];
        assert_eq!(
            (call.kind.as_deref(), call.name.as_str(), call.arguments.as_str()),
            (Some("custom"), "code_exec", "print(1)")
        );
        let completion = stream.assembled().to_completion();
        let calls = completion.choices[0].message.tool_calls.clone().unwrap_or_default();
        assert_eq!(calls[0].kind, "custom");
        assert_eq!(
            calls[0].extra["custom"],
            serde_json::json!({"name": "code_exec", "input": "print(1)"})
        );

        // A legacy call, to a client that offered `functions`.
        let mut stream = OpenAiStream::new(&ctx);
        let chunks = [
            r#"{"id":"chatcmpl-L","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":null,"function_call":{"name":"get_weather","arguments":""}},"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-L","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"function_call":{"arguments":"{\"city\":\"Paris\"}"}},"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-L","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"function_call"}]}"#,
        ];
        for chunk in chunks {
            stream.push(&SseEvent::new(None, chunk.to_owned())).unwrap();
        }
        let call = stream.assembled().choices[0].function_call.clone().unwrap();
        assert_eq!(
            (call.name.as_str(), call.arguments.as_str()),
            ("get_weather", r#"{"city":"Paris"}"#)
        );
    }

    #[test]
    fn arguments_sent_as_a_json_value_reach_the_client_as_its_text() {
        // llama.cpp's server (and TGI) write a call's arguments as the object itself.
        let llama = br#"{"choices":[{"finish_reason":"tool_calls","index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"type":"function","function":{"name":"get_weather","arguments":{"city":"Paris","days":3}},"id":"kXp9"}]}}],"created":1772960000,"model":"qwen3-8b","system_fingerprint":"b6710","object":"chat.completion","usage":{"completion_tokens":21,"prompt_tokens":190,"total_tokens":211},"id":"chatcmpl-Q2"}"#;
        let (answer, response) = answer_and_response(200, llama);
        let (answer, response) = (answer.unwrap(), response.unwrap());
        assert_eq!(answer.body, response.body);
        let text = r#"{"city":"Paris","days":3}"#;
        let call = &response.completion.choices[0].message.tool_calls.as_ref().unwrap()[0];
        let arguments = call.function.as_ref().map(|f| f.arguments.as_str());
        assert_eq!(arguments, Some(text), "the server's key order kept");
        let mut sent: serde_json::Value = serde_json::from_slice(llama).unwrap();
        sent["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = text.into();
        let got: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(got, sent, "only the arguments change");
        assert_eq!(answer.usage.map(|u| u.total_tokens), Some(211));

        // Other shapes the check does not read still pass as sent (the typed parse would
        // refuse them: see `CompletionView`).
        for calls in
            [r#"{}"#, r#"[1]"#, r#"[{"function":"f"}]"#, r#"[{"function":{"arguments":null}}]"#]
        {
            let body = format!(
                r#"{{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{{"index":0,"message":{{"role":"assistant","tool_calls":{calls}}}}}]}}"#
            );
            let answer = answer_and_response(200, body.as_bytes()).0.unwrap();
            assert_eq!(answer.body, body.as_bytes());
        }

        // The legacy function call, its arguments an array.
        let legacy = br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"function_call":{"name":"f","arguments":[1,"a"]}},"finish_reason":"function_call"}]}"#;
        let response = answer_and_response(200, legacy).1.unwrap();
        let call = response.completion.choices[0].message.function_call.clone().unwrap();
        assert_eq!(call.arguments, r#"[1,"a"]"#);

        // In a stream: the chunk that carries a value goes as the same chunk with the text, and
        // the record has the text; the reader and the full parse agree.
        let head = r#""id":"chatcmpl-S","object":"chat.completion.chunk","created":1772960000,"model":"qwen3-8b""#;
        let chunks: Vec<String> = [
            r#"{"index":0,"delta":{"role":"assistant","content":null},"finish_reason":null}"#,
            r#"{"index":0,"delta":{"tool_calls":[{"index":0,"id":"kXp9","type":"function","function":{"name":"get_weather","arguments":{"city":"Paris","days":3}}}]},"finish_reason":null}"#,
            r#"{"index":0,"delta":{},"finish_reason":"tool_calls"}"#,
        ]
        .iter()
        .map(|choice| format!(r#"{{{head},"choices":[{choice}]}}"#))
        .collect();
        let (stream, _) = read_both_ways(&chunks);
        let call = &stream.assembled().choices[0].tool_calls[0];
        assert_eq!((call.name.as_str(), call.arguments.as_str()), ("get_weather", text));
        let mut stream = OpenAiStream::new(&local_ctx(true));
        let frames: Vec<Bytes> = chunks
            .iter()
            .map(|c| stream.push(&SseEvent::new(None, c.clone())).unwrap().remove(0))
            .collect();
        assert_eq!(frames[0], sse::frame_raw(chunks[0].as_bytes()));
        assert_eq!(frames[2], sse::frame_raw(chunks[2].as_bytes()));
        let expected = chunks[1].replace(
            r#""arguments":{"city":"Paris","days":3}"#,
            r#""arguments":"{\"city\":\"Paris\",\"days\":3}""#,
        );
        assert_eq!(frames[1], sse::frame_raw(expected.as_bytes()));

        // With a top-level member left out as well: both written.
        let bare = chunks[1].replace(r#""object":"chat.completion.chunk","#, "");
        let mut stream = OpenAiStream::new(&local_ctx(true));
        let frame = stream.push(&SseEvent::new(None, bare)).unwrap().remove(0);
        let data = frame.strip_prefix(b"data: ").unwrap().trim_ascii_end();
        let chunk: serde_json::Value = serde_json::from_slice(data).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], text);
    }

    #[test]
    fn a_stream_whose_content_is_a_list_of_parts_passes_as_sent() {
        // Mistral's reasoning models (Magistral) stream `content` as a list of parts: the
        // thinking as `thinking` parts, then the answer (as parts, or as a string).
        let chunks = [
            r#"{"id":"9f1c","object":"chat.completion.chunk","created":1759300000,"model":"magistral-medium-2509","choices":[{"index":0,"delta":{"role":"assistant","content":[{"type":"thinking","thinking":[{"type":"text","text":"The user says \"hi\"."}]}]},"finish_reason":null}]}"#,
            r#"{"id":"9f1c","object":"chat.completion.chunk","created":1759300000,"model":"magistral-medium-2509","choices":[{"index":0,"delta":{"content":[{"type":"thinking","thinking":[{"type":"text","text":" Greet back."}]}]},"finish_reason":null}]}"#,
            r#"{"id":"9f1c","object":"chat.completion.chunk","created":1759300000,"model":"magistral-medium-2509","choices":[{"index":0,"delta":{"content":[{"type":"text","text":"Hello"}]},"finish_reason":null}]}"#,
            r#"{"id":"9f1c","object":"chat.completion.chunk","created":1759300000,"model":"magistral-medium-2509","choices":[{"index":0,"delta":{"content":"!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}"#,
        ];
        let mut stream = OpenAiStream::new(&local_ctx(true));
        for chunk in chunks {
            let frames = stream.push(&SseEvent::new(None, chunk.to_owned())).unwrap();
            assert_eq!(frames, [sse::frame_raw(chunk.as_bytes())]);
        }
        assert!(stream.assembled().error.is_none());
        let choice = &stream.assembled().choices[0];
        assert_eq!(choice.reasoning_content, r#"The user says "hi". Greet back."#);
        assert_eq!(choice.content, "Hello!");
        assert_eq!(stream.assembled().usage.as_ref().map(|u| u.total_tokens), Some(21));
    }

    /// Gemini's OpenAI-compatible endpoint streams each call whole, without `index` and with
    /// an empty id: each is a call of its own in the record, not one call `get_timeget_weather`
    /// with its arguments run together. The client gets the chunks as they came.
    #[test]
    fn tool_calls_without_an_index_are_recorded_apart() {
        let head = r#""created":1748902365,"id":"3SE-aKjdCcCEz7IPxpqjCA","model":"gemini-2.5-flash","object":"chat.completion.chunk""#;
        let call = |name: &str, args: &str| {
            format!(
                r#"{{"function":{{"arguments":{},"name":"{name}"}},"id":"","type":"function"}}"#,
                serde_json::Value::from(args)
            )
        };
        let (time, weather) = (call("get_time", "{}"), call("get_weather", r#"{"city":"Paris"}"#));
        let chunks = [
            format!(
                r#"{{"choices":[{{"delta":{{"role":"assistant","tool_calls":[{time},{weather}]}},"index":0}}],{head}}}"#
            ),
            format!(
                r#"{{"choices":[{{"delta":{{"role":"assistant","tool_calls":[{}]}},"index":0}}],{head}}}"#,
                call("get_news", "")
            ),
            format!(
                r#"{{"choices":[{{"delta":{{"tool_calls":[{{"function":{{"arguments":"{{\"topic\":\"rust\"}}"}}}}]}},"finish_reason":"tool_calls","index":0}}],{head}}}"#
            ),
        ];
        let mut stream = OpenAiStream::new(&local_ctx(false));
        // The client's chunks get the indexes the record gave the calls, and are otherwise as
        // sent: the SDKs' stream helpers put a call's pieces together by its index, and
        // failed on a call without one (`list indices must be integers or slices, not
        // NoneType` in openai-python's).
        let mut indexes = Vec::new();
        for (n, chunk) in chunks.iter().enumerate() {
            let frames = stream.push(&SseEvent::new(None, chunk.clone())).unwrap();
            let [frame] = frames.as_slice() else { panic!("{frames:?}") };
            let sent: serde_json::Value =
                serde_json::from_slice(frame.strip_prefix(b"data: ").unwrap()).unwrap();
            let mut given: serde_json::Value = serde_json::from_str(chunk).unwrap();
            let calls = sent["choices"][0]["delta"]["tool_calls"].as_array().unwrap();
            for (at, call) in calls.iter().enumerate() {
                indexes.push(call["index"].as_u64().unwrap());
                given["choices"][0]["delta"]["tool_calls"][at]["index"] = call["index"].clone();
            }
            if n > 0 {
                // The role, said again, is not said again to the client.
                given["choices"][0]["delta"].as_object_mut().unwrap().shift_remove("role");
            }
            assert_eq!(sent, given, "nothing else changes");
        }
        assert_eq!(indexes, [0, 1, 2, 2]);
        let calls: Vec<_> = stream.assembled().choices[0]
            .tool_calls
            .iter()
            .map(|c| (c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(
            calls,
            [
                ("get_time", "{}"),
                ("get_weather", r#"{"city":"Paris"}"#),
                ("get_news", r#"{"topic":"rust"}"#)
            ]
        );
    }

    /// A usage count written oddly (`0.0`) is bookkeeping: the chunk passes as it came, the
    /// record reads the count, and the client's stream goes on (it ended in an error frame).
    #[test]
    fn a_usage_detail_written_as_a_float_does_not_end_the_stream() {
        let chunks = [
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}]}"#,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":0.0},"completion_tokens_details":{"reasoning_tokens":0.0}}}"#,
        ];
        let mut stream = OpenAiStream::new(&local_ctx(true));
        for chunk in chunks {
            let frames = stream.push(&SseEvent::new(None, chunk.to_owned())).unwrap();
            assert_eq!(frames, [sse::frame_raw(chunk.as_bytes())]);
        }
        let usage = stream.assembled().usage.clone().unwrap();
        assert_eq!((usage.total_tokens, usage.reasoning_tokens()), (7, Some(0)));
    }

    #[test]
    fn an_azure_stream_is_recorded_with_the_id_and_model_of_its_answer() {
        // Azure OpenAI opens a stream with the prompt's filter results: no choices, and an
        // empty id, model and creation time. The answer's chunks carry the real ones.
        let chunks = [
            r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}"#,
            r#"{"choices":[{"content_filter_results":{},"delta":{"content":"","refusal":null,"role":"assistant"},"finish_reason":null,"index":0,"logprobs":null}],"created":1750697159,"id":"chatcmpl-Bleat","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","system_fingerprint":"fp_ee1d74bde0"}"#,
            r#"{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},"delta":{"content":"Hallo"},"finish_reason":"stop","index":0,"logprobs":null}],"created":1750697159,"id":"chatcmpl-Bleat","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","system_fingerprint":"fp_ee1d74bde0"}"#,
        ];
        let mut stream = OpenAiStream::new(&local_ctx(false));
        for chunk in chunks {
            let frames = stream.push(&SseEvent::new(None, chunk.to_owned())).unwrap();
            assert_eq!(frames, [sse::frame_raw(chunk.as_bytes())]);
        }
        let a = stream.assembled();
        assert_eq!(
            (a.id.as_str(), a.created, a.model.as_str()),
            ("chatcmpl-Bleat", 1750697159, "gpt-4o-2024-08-06")
        );
        // A stream that never says them is recorded with the context's.
        let mut stream = OpenAiStream::new(&local_ctx(false));
        stream.push(&SseEvent::new(None, chunks[0].to_owned())).unwrap();
        let a = stream.assembled();
        assert_eq!((a.id.as_str(), a.created, a.model.as_str()), ("chatcmpl-local", 1, "m"));
    }

    #[test]
    fn an_error_chunk_keeps_its_usage_in_the_record() {
        // OpenRouter ends a failing stream with a chunk holding the error and the usage.
        let chunk = r#"{"id":"gen-1762179802","provider":"Minimax","error":{"code":400,"message":"Token limit reached"},"model":"minimax/minimax-m2:free","object":"chat.completion.chunk","created":1762179802,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,"native_finish_reason":null,"logprobs":null}],"usage":{"prompt_tokens":43,"completion_tokens":10,"total_tokens":53,"cost":0,"is_byok":false,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":11,"image_tokens":0}}}"#;
        let mut stream = OpenAiStream::new(&local_ctx(false));
        stream.push(&SseEvent::new(None, chunk.to_owned())).unwrap();
        let a = stream.assembled();
        assert_eq!(a.error.as_ref().map(|e| e.error.message.as_str()), Some("Token limit reached"));
        assert_eq!(a.error_status, Some(400), "its code is the status it stands for");
        let usage =
            a.usage.as_ref().map(|u| (u.prompt_tokens, u.completion_tokens, u.total_tokens));
        assert_eq!(usage, Some((43, 10, 53)));
    }

    /// An error the upstream reports in its stream says the status it stands for, for a
    /// stream that opens with it (answered with that status, or retried): Groq's named error
    /// event as its `status_code`, an error without one as a 500. The stream's own faults
    /// stand for no upstream status.
    #[test]
    fn an_error_event_says_its_status() {
        let groq = r#"{"error":{"message":"Tool call validation failed: parameters for tool get_something_by_name did not match schema","type":"invalid_request_error","code":"tool_use_failed","failed_generation":"{}","status_code":400}}"#;
        let plain = r#"{"error":{"message":"Internal error","type":"server_error"}}"#;
        for (data, status) in [(groq, 400), (plain, 500), ("not json", 500)] {
            let mut stream = OpenAiStream::new(&local_ctx(false));
            stream.push(&SseEvent::new(Some("error".into()), data.to_owned())).unwrap();
            let a = stream.assembled();
            assert!(a.error.is_some(), "{data}");
            assert_eq!(a.error_status, Some(status), "{data}");
        }
        let mut stream = OpenAiStream::new(&local_ctx(false));
        stream.finish().unwrap();
        assert!(stream.assembled().error.is_some(), "a stream that ended before its end");
        assert_eq!(stream.assembled().error_status, None);
    }

    #[test]
    fn a_huge_stream_is_relayed_whole_and_recorded_up_to_the_limit() {
        let ctx = local_ctx(false);
        let mut stream = OpenAiStream::new(&ctx);
        let piece = "y".repeat(1 << 20);
        let chunk = format!(
            r#"{{"id":"chatcmpl-H","object":"chat.completion.chunk","created":1754000000,"model":"m","choices":[{{"index":0,"delta":{{"content":"{piece}"}},"finish_reason":null}}]}}"#
        );
        for _ in 0..(crate::MAX_KEPT >> 20) + 4 {
            let frames = stream.push(&SseEvent::new(None, chunk.clone())).unwrap();
            assert_eq!(frames.len(), 1, "the client gets every chunk");
        }
        let kept = stream.assembled().choices[0].content.len();
        assert!((crate::MAX_KEPT..=crate::MAX_KEPT + (1 << 20)).contains(&kept), "{kept}");
        assert!(stream.assembled().truncated);
    }

    #[test]
    fn a_refused_sampling_member_is_left_out_of_both_ways_of_building() {
        let config =
            ProviderConfig::new(ProviderKind::OpenAi, "https://api.openai.com/v1", "k", "o3");
        let openai = OpenAiCompat::new(config).unwrap();
        let refusal = |param: &str, code: &str| {
            format!(
                r#"{{"error":{{"message":"no","type":"invalid_request_error","param":"{param}","code":"{code}"}}}}"#
            )
        };
        // Not a member it may leave out, not that error, not that status: nothing changes.
        assert!(!openai.refused(400, refusal("messages", "unsupported_value").as_bytes(), false));
        assert!(!openai.refused(400, refusal("temperature", "invalid_type").as_bytes(), false));
        assert!(!openai.refused(
            422,
            refusal("temperature", "unsupported_value").as_bytes(),
            false
        ));
        assert!(!openai.refused(400, b"<html>", false));
        let raw = br#"{"model":"a","messages":[{"role":"user","content":"Hi"}],"temperature":0.7,"top_p":0.9}"#;
        let request = || from_slice::<ChatCompletionRequest>(raw).unwrap();
        let up = openai.build_request_from(request(), raw).unwrap();
        assert!(up.dropped.is_empty());

        assert!(openai.refused(400, refusal("temperature", "unsupported_value").as_bytes(), false));
        // The byte copy, and the typed build (bodies the walk leaves alone).
        for up in [
            openai.build_request_from(request(), raw).unwrap(),
            openai.build_request(request()).unwrap(),
        ] {
            let body: serde_json::Value = serde_json::from_slice(&up.body).unwrap();
            assert!(body.get("temperature").is_none(), "{body}");
            assert_eq!(body["top_p"], 0.9);
            assert_eq!(up.dropped, ["temperature"]);
        }
        let up = openai.build_request_from(request(), raw).unwrap();
        let changes: serde_json::Value =
            serde_json::from_slice(up.changes.as_deref().unwrap()).unwrap();
        assert_eq!(changes["temperature"], serde_json::Value::Null, "{changes}");
        // A request without the member has nothing to report.
        let plain = br#"{"model":"a","messages":[{"role":"user","content":"Hi"}]}"#;
        let up = openai.build_request_from(from_slice(plain).unwrap(), plain).unwrap();
        assert!(up.dropped.is_empty());
    }

    /// The README and the error say an Azure `BASE_URL` ends in `/openai/deployments/NAME`;
    /// the Azure portal's target URI, pasted without its query, has `/chat/completions` after
    /// the name, and was taken: every request then went to `…/chat/completions/chat/completions`.
    #[test]
    fn an_azure_base_url_ends_in_its_deployment_or_the_v1_api() {
        let azure = |base: &str| {
            OpenAiCompat::new(ProviderConfig::new(ProviderKind::AzureOpenAi, base, "k", "gpt-4o"))
        };
        for (base, url) in [
            (
                "https://r.openai.azure.com/openai/deployments/gpt-4o",
                "https://r.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            ),
            (
                "https://r.openai.azure.com/openai/deployments/gpt-4o/",
                "https://r.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            ),
            (
                "https://r.openai.azure.com/openai/v1",
                "https://r.openai.azure.com/openai/v1/chat/completions",
            ),
        ] {
            assert_eq!(azure(base).unwrap().url, url);
        }
        for base in [
            "https://r.openai.azure.com/openai/deployments/gpt-4o/chat/completions",
            "https://r.openai.azure.com/openai/deployments/",
            "https://r.openai.azure.com/openai",
        ] {
            match azure(base) {
                Err(TranslateError::Config { setting: "BASE_URL", .. }) => {}
                Err(other) => panic!("{base}: {other:?}"),
                Ok(provider) => panic!("{base} is taken, sending to {}", provider.url),
            }
        }
    }

    #[test]
    fn an_upstream_that_does_not_know_max_completion_tokens_gets_max_tokens_from_then_on() {
        let base = "https://r.openai.azure.com/openai/deployments/gpt-4o";
        let mut config = ProviderConfig::new(ProviderKind::AzureOpenAi, base, "k", "gpt-4o");
        config.api_version = "2024-06-01".to_owned();
        let azure = OpenAiCompat::new(config).unwrap();
        // `max_tokens` and `max_completion_tokens` as `provider` sends them, built both ways.
        let limits_of = |provider: &OpenAiCompat, raw: &[u8]| {
            let request = || from_slice::<ChatCompletionRequest>(raw).unwrap();
            let copied = provider.build_request_from(request(), raw).unwrap();
            let typed = provider.build_request(request()).unwrap();
            let [copied, typed] = [copied, typed].map(|up| {
                let body: serde_json::Value = serde_json::from_slice(&up.body).unwrap();
                (body.get("max_tokens").cloned(), body.get("max_completion_tokens").cloned())
            });
            assert_eq!(copied, typed, "both ways of building agree");
            copied
        };
        let limits = |raw: &[u8]| limits_of(&azure, raw);
        let unset = br#"{"model":"a","messages":[{"role":"user","content":"Hi"}]}"#;
        let clients =
            br#"{"model":"a","messages":[{"role":"user","content":"Hi"}],"max_tokens":50}"#;
        assert_eq!(limits(unset), (None, Some(4096.into())));
        assert_eq!(limits(clients), (None, Some(50.into())));

        // Azure's answer before API version 2024-09-01-preview.
        let refusal = br#"{"error":{"message":"Unrecognized request argument supplied: max_completion_tokens","type":"invalid_request_error","param":null,"code":null}}"#;
        assert!(!azure.refused(500, refusal, false), "not that status");
        assert!(azure.refused(400, refusal, false));
        assert_eq!(limits(unset), (Some(4096.into()), None));
        assert_eq!(limits(clients), (Some(50.into()), None));
        // A client's own `max_completion_tokens` goes as `max_tokens` too.
        let newer = br#"{"model":"a","messages":[{"role":"user","content":"Hi"}],"max_completion_tokens":70}"#;
        assert_eq!(limits(newer), (Some(70.into()), None));
        // Learned once: refused again, the refusal reaches the client.
        assert!(!azure.refused(400, refusal, false));

        // A custom server gets `max_tokens` from the start, and the client's newer member as
        // sent, until it refuses it (FastAPI servers: 422 `extra_forbidden`).
        let config = ProviderConfig::new(ProviderKind::Custom, "http://h/v1", "", "m");
        let custom = OpenAiCompat::new(config).unwrap();
        let custom_limits = |raw: &[u8]| limits_of(&custom, raw);
        assert_eq!(custom_limits(newer), (None, Some(70.into())));
        let extra = br#"{"detail":[{"type":"extra_forbidden","loc":["body","max_completion_tokens"],"msg":"Extra inputs are not permitted","input":70}]}"#;
        assert!(custom.refused(422, extra, false));
        assert_eq!(custom_limits(newer), (Some(70.into()), None));
        assert_eq!(custom_limits(clients), (Some(50.into()), None));
        assert!(!custom.refused(422, extra, false));
    }

    #[test]
    fn a_refused_value_of_the_limit_does_not_switch_the_member() {
        // OpenAI's answers to a client's `max_tokens: 0` (sent as `max_completion_tokens`) and a
        // reasoning model's refusal of `max_tokens`: neither says the member is unknown, and
        // switching to `max_tokens` would have every later request to the model refused.
        let config =
            ProviderConfig::new(ProviderKind::OpenAi, "https://api.openai.com/v1", "k", "o3");
        let openai = OpenAiCompat::new(config).unwrap();
        let value = br#"{"error":{"message":"Invalid 'max_completion_tokens': integer below minimum value. Expected a value >= 1, but got 0 instead.","type":"invalid_request_error","param":"max_completion_tokens","code":"integer_below_min_value"}}"#;
        let older = br#"{"error":{"message":"Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.","type":"invalid_request_error","param":"max_tokens","code":"unsupported_parameter"}}"#;
        for refusal in [&value[..], &older[..]] {
            assert!(!openai.refused(400, refusal, false));
        }
        let unset = br#"{"model":"a","messages":[{"role":"user","content":"Hi"}]}"#;
        let request = from_slice::<ChatCompletionRequest>(unset).unwrap();
        let up = openai.build_request_from(request, unset).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&up.body).unwrap();
        assert_eq!(body.get("max_completion_tokens"), Some(&4096.into()));
        assert_eq!(body.get("max_tokens"), None);
        // What does say the member is unknown, from OpenAI's side.
        let unknown = br#"{"error":{"message":"Unrecognized request argument supplied: max_completion_tokens","type":"invalid_request_error","param":null,"code":null}}"#;
        assert!(openai.refused(400, unknown, false));
    }

    #[test]
    fn a_2xx_answer_that_is_an_error_gives_that_error() {
        // OpenRouter answers 200 once the model has started, and an error in the body.
        let cases: [(&[u8], u16, &str); 4] = [
            (
                br#"{"error":{"code":502,"message":"Provider returned error","metadata":{"provider_name":"Groq"}},"user_id":"u1"}"#,
                502,
                "Provider returned error",
            ),
            (br#"{"error":{"code":429,"message":"Rate limited"}}"#, 429, "Rate limited"),
            (
                br#"{"error":{"message":"Engine overloaded","type":"server_error","code":"overloaded"}}"#,
                502,
                "Engine overloaded",
            ),
            (br#" {"error":"boom"}"#, 502, "upstream answered 200: boom"),
        ];
        for (body, status, message) in cases {
            let (answer, response) = answer_and_response(200, body);
            for e in [answer.unwrap_err(), response.unwrap_err()] {
                assert_eq!(e.status(), status, "{e:?}");
                assert_eq!(e.to_error_response().error.message, message);
            }
        }
        // An answer with choices is an answer, whatever else it says.
        let answer = br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[],"error":{"code":500,"message":"x"}}"#;
        assert!(answer_and_response(200, answer).1.is_ok());
        // A null error is none; an array is not an answer.
        for body in [&br#"{"error":null}"#[..], br#"[{"error":{"message":"x"}}]"#] {
            let e = answer_and_response(200, body).1.unwrap_err();
            assert!(matches!(e, TranslateError::Malformed { .. }), "{e:?}");
        }
    }

    #[test]
    fn an_answer_without_its_top_level_members_gets_them_from_the_context() {
        // Z.ai's and GitHub Copilot's answers have no `object`; the choices are whole.
        let no_object = br#"{"id":"c1","created":5,"model":"glm-4.6","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
        let (answer, response) = answer_and_response(200, no_object);
        let (answer, response) = (answer.unwrap(), response.unwrap());
        assert_eq!(answer.body, response.body);
        let mut expected = br#"{"object":"chat.completion","#.to_vec();
        expected.extend_from_slice(&no_object[1..]);
        assert_eq!(answer.body, expected, "the member is written in, the rest left as sent");
        assert_eq!(response.completion.object, "chat.completion");
        assert_eq!(answer.usage.map(|u| u.total_tokens), Some(3));

        // All four missing, in a pretty-printed answer: the context's id, time and model.
        let bare = b"  {\n  \"choices\": [{\"index\": 0, \"message\": {\"role\": \"assistant\", \"content\": \"Hi\"}}]\n}";
        let (answer, response) = answer_and_response(200, bare);
        let (answer, response) = (answer.unwrap(), response.unwrap());
        assert_eq!(answer.body, response.body);
        let c = response.completion;
        assert_eq!(
            (c.id.as_str(), c.object.as_str(), c.created, c.model.as_str()),
            ("chatcmpl-1", "chat.completion", 1, "m")
        );
        let parsed: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(parsed["choices"][0]["message"]["content"], "Hi");

        // Still refused: a required member that is there but null, an answer without choices,
        // a choice without its index, and no object at all; with the error of the answer as sent.
        let refused: [&[u8]; 5] = [
            br#"{"id":"c","object":"chat.completion","created":1,"model":null,"choices":[]}"#,
            br#"{"model":"m"}"#,
            br#"{}"#,
            br#"{"choices":[{"message":{"role":"assistant","content":"x"}}]}"#,
            br#"[{"choices":[]}]"#,
        ];
        for body in refused {
            let (answer, response) = answer_and_response(200, body);
            let sent = uniproxy_wire::from_bytes::<ChatCompletion>(body).unwrap_err();
            for e in [answer.unwrap_err(), response.unwrap_err()] {
                let TranslateError::Malformed { source, .. } = &e else { panic!("{e:?}") };
                assert_eq!(
                    source.to_string(),
                    sent.to_string(),
                    "{}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn chunk_strings_are_borrowed_unless_escaped() {
        let json = br#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"plain","refusal":null,"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":1}"}}]}}]}"#;
        let head: ChunkHead<'_> = serde_json::from_slice(json).unwrap();
        assert!(matches!(head.id.as_ref().map(|t| &t.0), Some(Cow::Borrowed("c1"))));
        let view: ChunkView<'_> = serde_json::from_slice(json).unwrap();
        let delta = view.choices[0].delta.as_ref().unwrap();
        assert!(matches!(&delta.content, Some(DeltaContent::Text(Text(Cow::Borrowed("plain"))))));
        assert!(delta.refusal.is_none());
        let args = delta.tool_calls.as_ref().unwrap()[0].function.as_ref().unwrap();
        // An escaped string cannot be a slice of the input: it is decoded into its own string.
        assert!(
            matches!(args.arguments.as_ref().map(|t| &t.text.0), Some(Cow::Owned(s)) if s == r#"{"a":1}"#)
        );
        assert!(serde_json::from_slice::<ChunkHead<'_>>(br#"{"id":5}"#).is_err());
    }

    /// [`chunk_view`] of bytes not yet checked as UTF-8.
    fn view_of(data: &[u8]) -> Result<ChunkView<'_>, serde_json::Error> {
        chunk_view(data, std::str::from_utf8(data).ok())
    }

    /// The view as the [`Reader`] reads it, or `None` where it leaves the chunk to serde_json.
    fn read_scanned(data: &[u8]) -> Option<ChunkView<'_>> {
        read_chunk(&mut Reader::new(std::str::from_utf8(data).ok()?))
    }

    /// A chunk as OpenAI-compatible servers send them, for the scan's tests.
    fn chunk() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::{Value, json};
        let text =
            prop_oneof![Just(Value::Null), "[a-z \"\\\\\n\u{1}é😀]{0,12}".prop_map(Value::String),];
        let tool_call = (0u32..3, text.clone(), text.clone(), text.clone()).prop_map(
            |(index, id, name, arguments)| {
                json!({"index": index, "id": id, "type": "function",
                       "function": {"name": name, "arguments": arguments}})
            },
        );
        let delta = (
            text.clone(),
            text.clone(),
            text.clone(),
            proptest::option::of(proptest::collection::vec(tool_call, 0..3)),
        )
            .prop_map(|(content, reasoning, refusal, tool_calls)| {
                let mut d = json!({"role": "assistant", "content": content,
                                   "reasoning_content": reasoning, "refusal": refusal});
                if let Some(calls) = tool_calls {
                    d["tool_calls"] = Value::Array(calls);
                }
                d
            });
        let choice = (0u32..3, delta, text.clone()).prop_map(|(index, delta, finish)| {
            json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": finish})
        });
        let usage =
            Just(json!({"prompt_tokens": 231, "completion_tokens": 96, "total_tokens": 327,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0}}));
        // Written by hand, so that a key may come twice; each value is of its field's type
        // mostly, and anything at all sometimes.
        type Raw = proptest::strategy::BoxedStrategy<String>;
        let any_value = crate::scan::tests::json().prop_map(|v| v.to_string()).boxed();
        let raw_object = |fields: Vec<(&'static str, Raw)>| -> Raw {
            let fields: Vec<(&'static str, Raw)> = fields
                .into_iter()
                .map(|(k, v)| (k, prop_oneof![12 => v, 1 => any_value.clone()].boxed()))
                .collect();
            let member = proptest::strategy::Union::new(
                fields.into_iter().map(|(k, v)| v.prop_map(move |v| format!("\"{k}\":{v}"))),
            );
            proptest::collection::vec(member, 0..5)
                .prop_map(|members| format!("{{{}}}", members.join(",")))
                .boxed()
        };
        let raw_array = |item: Raw| -> Raw {
            proptest::collection::vec(item, 0..3)
                .prop_map(|items| format!("[{}]", items.join(",")))
                .boxed()
        };
        let text_value = text.clone().prop_map(|v| v.to_string()).boxed();
        let small = (0u32..3).prop_map(|n| n.to_string()).boxed();
        let function = raw_object(vec![
            ("name", text_value.clone()),
            ("arguments", text_value.clone()),
            ("x", any_value.clone()),
        ]);
        let raw_tool_call = raw_object(vec![
            ("index", small.clone()),
            ("id", text_value.clone()),
            ("type", text_value.clone()),
            ("function", prop_oneof![function, Just("null".to_owned())].boxed()),
        ]);
        let raw_delta = raw_object(vec![
            ("content", text_value.clone()),
            ("reasoning_content", text_value.clone()),
            ("reasoning", text_value.clone()),
            ("refusal", text_value.clone()),
            ("role", text_value.clone()),
            ("tool_calls", prop_oneof![raw_array(raw_tool_call), Just("null".to_owned())].boxed()),
        ]);
        let raw_choice = raw_object(vec![
            ("index", small),
            ("delta", prop_oneof![raw_delta, Just("null".to_owned())].boxed()),
            ("finish_reason", text_value),
            ("logprobs", any_value.clone()),
        ]);
        let member = prop_oneof![
            1 => usage.prop_map(|u| ("usage", u)),
            1 => Just(("usage", Value::Null)),
            1 => crate::scan::tests::json().prop_map(|v| ("error", v)),
            1 => crate::scan::tests::json().prop_map(|v| ("choices", v)),
            1 => crate::scan::tests::json().prop_map(|v| ("usage", v)),
            1 => crate::scan::tests::json().prop_map(|v| ("id", v)),
            1 => crate::scan::tests::json().prop_map(|v| ("system_fingerprint", v)),
            1 => any::<u32>().prop_map(|n| ("created", Value::from(n))),
        ];
        // Mostly one good `choices`, as every chunk has, then up to three more of anything.
        let choices = prop_oneof![
            proptest::collection::vec(choice, 1..3).prop_map(|c| ("choices", Value::Array(c))),
            raw_array(raw_choice).prop_map(|c| ("choices", Value::String(c))),
        ];
        let head = Just(("id", Value::from("chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT")));
        (head, choices, proptest::collection::vec(member, 0..3)).prop_map(
            |(head, choices, rest)| {
                let members: Vec<_> = [head, choices].into_iter().chain(rest).collect();
                // Written by hand so that a member can be there twice, as a server may send it.
                // A string member holds raw JSON text, written as it is.
                let body: Vec<String> = members
                    .iter()
                    .map(|(k, v)| match v {
                        Value::String(raw) if *k == "choices" => format!("\"{k}\":{raw}"),
                        v => format!("\"{k}\":{v}"),
                    })
                    .collect();
                Value::String(format!("{{{}}}", body.join(",")))
            },
        )
    }

    proptest::proptest! {
        #[test]
        fn the_scanned_chunk_view_is_the_parsed_one(
            chunk in chunk(),
            edit in proptest::option::of((proptest::prelude::any::<proptest::sample::Index>(), 0u8..22)),
        ) {
            let mut text = chunk.as_str().unwrap().as_bytes().to_vec();
            if let Some((at, byte)) = edit && !text.is_empty() {
                let at = at.index(text.len());
                text[at] = b"{}[]\",:\\ 0-.eE+tfnul\x01\n"[usize::from(byte)];
            }
            let parsed = uniproxy_wire::from_bytes::<ChunkView<'_>>(&text);
            if let Some(view) = read_scanned(&text) {
                proptest::prop_assert_eq!(Some(view), parsed.ok());
            }
            // Whatever took it, chunk_view answers as the full parse does.
            proptest::prop_assert_eq!(view_of(&text).ok(), uniproxy_wire::from_bytes::<ChunkView<'_>>(&text).ok());
        }
    }

    /// Feeds `chunks` to a stream that uses templates and to one that never does, checking
    /// that every chunk gives both the same frames and that both end with the same answer;
    /// gives back the first, and how many chunks it read through a template.
    fn read_both_ways(chunks: &[String]) -> (OpenAiStream, usize) {
        let ctx = local_ctx(true);
        let mut fast = OpenAiStream::new(&ctx);
        let mut full = OpenAiStream::new(&ctx);
        full.template = TemplateSlot::off();
        let mut templated = 0;
        for chunk in chunks {
            let fits = fast.template.get_mut().and_then(|t| t.view(chunk.as_bytes())).is_some();
            templated += usize::from(fits);
            let event = SseEvent::new(None, chunk.clone());
            assert_eq!(fast.push(&event).unwrap(), full.push(&event).unwrap(), "{chunk}");
        }
        assert!(full.template.get_mut().is_none());
        assert_eq!(fast.finish().unwrap(), full.finish().unwrap());
        assert_eq!(fast.assembled(), full.assembled());
        (fast, templated)
    }

    /// A content chunk as OpenAI sends them (`fixtures/openai/stream-text-long.response.sse`),
    /// each string value given as its JSON text.
    fn content_chunk(
        id: &str,
        model: &str,
        role: bool,
        content: &str,
        obfuscation: &str,
    ) -> String {
        let role = if role { r#""role":"assistant","# } else { "" };
        format!(
            r#"{{"id":{id},"object":"chat.completion.chunk","created":1770933892,"model":{model},"service_tier":"default","system_fingerprint":"fp_de604bd877","choices":[{{"index":0,"delta":{{{role}"content":{content}}},"logprobs":null,"finish_reason":null}}],"usage":null,"obfuscation":{obfuscation}}}"#
        )
    }

    proptest::proptest! {
        #[test]
        fn a_chunk_read_through_a_template_reads_as_the_full_read_does(
            role in proptest::prelude::any::<bool>(),
            first in proptest::collection::vec("[a-z \"\\\\\n\u{1}é😀]{0,12}", 4),
            next in proptest::collection::vec("[a-z \"\\\\\n\u{1}é😀]{0,12}", 4),
            edit in proptest::option::of((proptest::prelude::any::<proptest::sample::Index>(), 0u8..22)),
        ) {
            let json = |s: &String| serde_json::Value::from(s.as_str()).to_string();
            let chunk = |v: &[String]| content_chunk(&json(&v[0]), &json(&v[1]), role, &json(&v[2]), &json(&v[3]));
            let first = chunk(&first);
            let view = view_of(first.as_bytes()).unwrap();
            let template = ChunkTemplate::new(&first, &view);
            // Made of a chunk whose content is a slice of it, so not escaped.
            let Some(DeltaContent::Text(Text(content))) =
                &view.choices[0].delta.as_ref().unwrap().content
            else {
                unreachable!("the chunk has content")
            };
            // A role is said once (Ollama says it in every delta): no template says it.
            proptest::prop_assert_eq!(template.is_some(), matches!(content, Cow::Borrowed(_)) && !role);
            let Some(mut template) = template else { return Ok(()) };
            let mut text = chunk(&next).into_bytes();
            if let Some((at, byte)) = edit {
                let at = at.index(text.len());
                text[at] = b"{}[]\",:\\ 0-.eE+tfnul\x01\n"[usize::from(byte)];
            }
            // Bytes, as they come: an edit may break a character, which no match may hide.
            let templated = template.view(&text);
            if edit.is_none() {
                let text = String::from_utf8_lossy(&text);
                proptest::prop_assert!(templated.is_some(), "only the strings changed: {}", text);
            }
            if let Some(view) = templated {
                proptest::prop_assert!(std::str::from_utf8(&text).is_ok(), "a match is UTF-8");
                proptest::prop_assert_eq!(Some(view), view_of(&text).ok());
            }
        }
    }

    #[test]
    fn a_stream_read_through_templates_is_the_stream_read_in_full() {
        let s = |t: &str| serde_json::Value::from(t).to_string();
        let id = s("chatcmpl-D8Z5oo6uDh67AD85p73ksdT1KxhE0");
        let model = s("gpt-4.1-nano-2025-04-14");
        let mut chunks = vec![
            r#"{"id":"chatcmpl-D8Z5oo6uDh67AD85p73ksdT1KxhE0","object":"chat.completion.chunk","created":1770933892,"model":"gpt-4.1-nano-2025-04-14","service_tier":"default","system_fingerprint":"fp_de604bd877","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"Qup1BsQ3"}"#.to_owned(),
        ];
        for (content, obfuscation) in [
            ("**", "yhjoJbEF"),
            ("Holiday", "dTh"),
            (" \"Name\"\n", "yoKF"),
            ("é😀", ""),
            ("\u{1}", "x"),
        ] {
            chunks.push(content_chunk(&id, &model, false, &s(content), &s(obfuscation)));
        }
        // The model is a string the view skips (`record` has it already): the template takes it.
        chunks.push(content_chunk(&id, &s("another-model"), false, &s(" still"), &s("q")));
        // Not content-only: read in full, and the template stays.
        chunks.push(chunks[1].replace(r#""finish_reason":null"#, r#""finish_reason":"length""#));
        chunks.push(chunks[1].replace(r#""content":"**""#, r#""content":null"#));
        // Another choice: a number differs, so it is read in full, and its own template...
        chunks.push(chunks[1].replace(r#""index":0"#, r#""index":1"#));
        // ...which the next chunk of choice 0 does not fit either.
        chunks.push(content_chunk(&id, &model, false, &s(" end"), &s("zz")));
        chunks.push(r#"{"id":"chatcmpl-D8Z5oo6uDh67AD85p73ksdT1KxhE0","object":"chat.completion.chunk","created":1770933892,"model":"gpt-4.1-nano-2025-04-14","service_tier":"default","system_fingerprint":"fp_de604bd877","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null,"obfuscation":"M"}"#.to_owned());
        chunks.push(r#"{"id":"chatcmpl-D8Z5oo6uDh67AD85p73ksdT1KxhE0","object":"chat.completion.chunk","created":1770933892,"model":"gpt-4.1-nano-2025-04-14","service_tier":"default","system_fingerprint":"fp_de604bd877","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":7,"total_tokens":16},"obfuscation":"Z"}"#.to_owned());

        let (fast, templated) = read_both_ways(&chunks);
        // The first content chunk's template takes the next five; the role chunk's, the
        // choice-1 chunk's and the last content chunk's take none, and the chunks that are
        // not content-only make none.
        assert_eq!(templated, 5);
        let choice = &fast.assembled().choices[0];
        // The `length` chunk carries "**" too.
        assert_eq!(choice.content, "**Holiday \"Name\"\né😀\u{1} still** end");
        assert_eq!(fast.assembled().choices[1].content, "**");
    }

    /// Ollama says the role in every delta; the client's chunks say it in the first only, and
    /// are otherwise as sent. openai-python's stream helper joins each delta's strings, and
    /// made the message's role "assistantassistant…", which the next request sent back.
    #[test]
    fn a_role_said_in_every_delta_reaches_the_client_once() {
        let chunk = |content: &str, finish: &str| {
            format!(
                r#"{{"id":"chatcmpl-192","object":"chat.completion.chunk","created":1744646668,"model":"qwen2.5-coder:7b-instruct-q8_0","system_fingerprint":"fp_ollama","choices":[{{"index":0,"delta":{{"role":"assistant","content":"{content}"}},"finish_reason":{finish}}}]}}"#
            )
        };
        let given = [
            chunk("My", "null"),
            chunk(" name", "null"),
            chunk(" is", "null"),
            chunk("", r#""stop""#),
        ];
        let mut stream = OpenAiStream::new(&local_ctx(false));
        for (at, given) in given.iter().enumerate() {
            let frames = stream.push(&SseEvent::new(None, given.clone())).unwrap();
            let [frame] = frames.as_slice() else { panic!("{frames:?}") };
            if at == 0 {
                assert_eq!(frame, &sse::frame_raw(given.as_bytes()), "the first as it came");
                continue;
            }
            let sent: serde_json::Value =
                serde_json::from_slice(frame.strip_prefix(b"data: ").unwrap()).unwrap();
            let mut expected: serde_json::Value = serde_json::from_str(given).unwrap();
            expected["choices"][0]["delta"].as_object_mut().unwrap().shift_remove("role");
            assert_eq!(sent, expected, "{at}: only the role goes");
            // The members keep their order.
            let text = std::str::from_utf8(frame).unwrap();
            assert!(text.contains(r#""delta":{"content":"#), "{text}");
        }
        assert_eq!(stream.assembled().choices[0].content, "My name is");
    }

    /// SambaNova's chunks say `created` as a float too: the client's chunks get the whole
    /// seconds, as its answers do, and are otherwise as sent. Relayed as floats, they failed
    /// every client that types the chunk (async-openai, Go's and .NET's).
    #[test]
    fn a_chunk_created_at_a_float_time_reaches_the_client_with_whole_seconds() {
        let chunk = |content: &str| {
            format!(
                r#"{{"choices":[{{"delta":{{"content":"{content}"}},"index":0,"logprobs":null}}],"created":1750000000.8315,"id":"3e1b2","model":"Meta-Llama-3.3-70B-Instruct","object":"chat.completion.chunk","system_fingerprint":"fastcoe"}}"#
            )
        };
        let mut stream = OpenAiStream::new(&local_ctx(false));
        // The same shape three times: a template made of the first must not let the others
        // through as they came.
        for content in ["Hel", "lo", "!"] {
            let given = chunk(content);
            let frames = stream.push(&SseEvent::new(None, given.clone())).unwrap();
            let [frame] = frames.as_slice() else { panic!("{frames:?}") };
            let sent: serde_json::Value =
                serde_json::from_slice(frame.strip_prefix(b"data: ").unwrap()).unwrap();
            let mut expected: serde_json::Value = serde_json::from_str(&given).unwrap();
            expected["created"] = 1_750_000_000.into();
            assert_eq!(sent, expected, "only `created` changes");
        }
        let a = stream.assembled();
        assert_eq!((a.created, a.choices[0].content.as_str()), (1_750_000_000, "Hello!"));
        // A whole number of seconds passes as it came, template or not.
        let whole = chunk("x").replace("1750000000.8315", "1750000001");
        for _ in 0..2 {
            let frames = stream.push(&SseEvent::new(None, whole.clone())).unwrap();
            assert_eq!(frames, [sse::frame_raw(whole.as_bytes())]);
        }
    }

    #[test]
    fn an_answer_created_at_a_float_time_is_answered_with_whole_seconds() {
        // SambaNova's API writes `created` as a float; typed clients refuse one.
        let sambanova = br#"{"id":"a1b2","object":"chat.completion","created":1750000000.8315,"model":"Meta-Llama-3.3-70B-Instruct","system_fingerprint":"fastcoe","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":36,"completion_tokens":2,"total_tokens":38,"time_to_first_token":0.0912,"total_latency":0.1104}}"#;
        let (answer, response) = answer_and_response(200, sambanova);
        let (answer, response) = (answer.unwrap(), response.unwrap());
        assert_eq!(answer.body, response.body);
        assert_eq!(response.completion.created, 1_750_000_000);
        let mut sent: serde_json::Value = serde_json::from_slice(sambanova).unwrap();
        sent["created"] = 1_750_000_000.into();
        let got: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(got, sent, "only `created` changes");
        let text = String::from_utf8(answer.body.to_vec()).unwrap();
        assert!(
            text.starts_with(
                r#"{"id":"a1b2","object":"chat.completion","created":1750000000,"model""#
            ),
            "{text}"
        );
        assert_eq!(answer.usage.map(|u| u.total_tokens), Some(38));

        // With a member left out as well: both put right. A negative time is 0.
        let both = br#"{"id":"c","created":-3,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"}}]}"#;
        let (answer, response) = answer_and_response(200, both);
        let (answer, response) = (answer.unwrap(), response.unwrap());
        assert_eq!(answer.body, response.body);
        let c = response.completion;
        assert_eq!((c.object.as_str(), c.created), ("chat.completion", 0));

        // A time that is no number is still refused.
        for created in [r#""1750000000""#, "null", "[1]"] {
            let body = format!(
                r#"{{"id":"c","object":"chat.completion","created":{created},"model":"m","choices":[]}}"#
            );
            let (answer, response) = answer_and_response(200, body.as_bytes());
            assert!(answer.is_err() && response.is_err(), "{body}");
        }
    }

    #[test]
    fn a_stream_created_at_a_float_time_is_relayed_and_recorded_in_whole_seconds() {
        let chunk = |content: &str| {
            format!(
                r#"{{"id":"a1b2","object":"chat.completion.chunk","created":1750000000.8315,"model":"Meta-Llama-3.3-70B-Instruct","choices":[{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":null}}]}}"#
            )
        };
        let chunks: Vec<String> = ["Hel", "lo", "!"].into_iter().map(chunk).collect();
        let (stream, _) = read_both_ways(&chunks);
        let a = stream.assembled();
        assert_eq!(
            (a.id.as_str(), a.created, a.model.as_str()),
            ("a1b2", 1_750_000_000, "Meta-Llama-3.3-70B-Instruct"),
            "the stream's own head, not the context's"
        );
        assert_eq!(a.choices[0].content, "Hello!");
        let mut stream = OpenAiStream::new(&local_ctx(true));
        let frame = stream.push(&SseEvent::new(None, chunks[0].clone())).unwrap().remove(0);
        let whole = chunks[0].replace("1750000000.8315", "1750000000");
        assert_eq!(&frame[..], format!("data: {whole}\n\n").as_bytes(), "whole seconds");
    }

    #[test]
    fn chunks_without_their_top_level_members_get_them_and_agree_with_each_other() {
        // Z.ai-like: no `object` in any chunk; the last two leave out the rest as well.
        let mut chunks = vec![
            r#"{"id":"c1","created":5,"model":"glm-4.6","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#.to_owned(),
        ];
        for content in ["Hel", "lo", " there", "!"] {
            chunks.push(format!(
                r#"{{"id":"c1","created":5,"model":"glm-4.6","choices":[{{"index":0,"delta":{{"content":"{content}"}}}}]}}"#
            ));
        }
        chunks.push(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#.to_owned());
        chunks.push(r#" { } "#.to_owned());
        // Present as null: left as it is (a client reads what the server sent).
        chunks.push(
            r#"{"id":"c1","object":null,"created":5,"model":"glm-4.6","choices":[]}"#.to_owned(),
        );
        let (stream, templated) = read_both_ways(&chunks);
        assert_eq!(templated, 3, "the content chunks still take the template");
        let mut stream2 = OpenAiStream::new(&local_ctx(true));
        let frames: Vec<String> = chunks
            .iter()
            .flat_map(|c| stream2.push(&SseEvent::new(None, c.clone())).unwrap())
            .map(|f| String::from_utf8(f.to_vec()).unwrap())
            .collect();
        assert_eq!(frames.len(), chunks.len());
        for (frame, chunk) in frames.iter().zip(&chunks).take(5) {
            assert_eq!(
                *frame,
                format!("data: {{\"object\":\"chat.completion.chunk\",{}\n\n", &chunk[1..])
            );
        }
        // The stream's own id, time and model, not the context's.
        assert_eq!(
            frames[5],
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"glm-4.6\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
        );
        assert_eq!(
            frames[6],
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"glm-4.6\" }\n\n",
            "the event's data is trimmed; no comma before the closing brace"
        );
        assert_eq!(frames[7], format!("data: {}\n\n", chunks[7]));
        let choice = &stream.assembled().choices[0];
        assert_eq!(choice.content, "Hello there!");
        assert_eq!(choice.finish_reason, Some(uniproxy_wire::FinishReason::Stop));

        // A stream that never names them gets the context's.
        let mut stream = OpenAiStream::new(&local_ctx(true));
        let frame = stream.push(&SseEvent::new(None, chunks[5].clone())).unwrap().remove(0);
        assert_eq!(
            &frame[..],
            b"data: {\"id\":\"chatcmpl-local\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
        );
        // And the record says what the client got.
        let a = stream.assembled();
        assert_eq!((a.id.as_str(), a.created, a.model.as_str()), ("chatcmpl-local", 1, "m"));
    }

    #[test]
    fn chunks_that_carry_more_than_content_make_no_template() {
        let head = r#""id":"c","object":"chat.completion.chunk","created":5,"model":"m""#;
        // Pairs that differ only in their strings; were the first a template, the second would
        // be read through it and lose what it carries besides its content.
        let shapes = [
            r#"{"index":0,"delta":{"content":"$"},"finish_reason":"$"}"#,
            r#"{"index":0,"delta":{"content":"$","reasoning_content":"$"},"finish_reason":null}"#,
            r#"{"index":0,"delta":{"content":"$","reasoning":"$"},"finish_reason":null}"#,
            r#"{"index":0,"delta":{"content":"$","refusal":"$"},"finish_reason":null}"#,
            r#"{"index":0,"delta":{"content":"$","tool_calls":[{"index":0,"id":"$","function":{"name":"$","arguments":"$"}}]},"finish_reason":null}"#,
            r#"{"index":0,"delta":{"content":"$"}},{"index":1,"delta":{"content":"$"}}"#,
        ];
        let mut chunks: Vec<String> = Vec::new();
        for choice in shapes {
            for fill in ["a", "b"] {
                chunks.push(format!(r#"{{{head},"choices":[{}]}}"#, choice.replace('$', fill)));
            }
        }
        for fill in ["a", "b"] {
            let usage = format!(
                r#"{{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"note":"{fill}"}}"#
            );
            chunks.push(format!(
                r#"{{{head},"choices":[{{"index":0,"delta":{{"content":"{fill}"}}}}],"usage":{usage}}}"#
            ));
        }
        for n in 1..=chunks.len() {
            let (mut fast, _) = read_both_ways(&chunks[..n]);
            assert!(fast.template.get_mut().is_none(), "{}", chunks[n - 1]);
        }
    }

    #[test]
    fn templates_that_fit_keep_being_built() {
        // Twelve runs of three content chunks, two choices taking turns: each run's first
        // makes a template that its next two fit, however many runs came before.
        let chunks: Vec<String> = (0..36)
            .map(|i| {
                format!(
                    r#"{{"id":"c","created":5,"model":"m","choices":[{{"index":{},"delta":{{"content":"w{i}"}}}}]}}"#,
                    i / 3 % 2
                )
            })
            .collect();
        let (fast, templated) = read_both_ways(&chunks);
        assert_eq!(templated, 24);
        assert_eq!(fast.assembled().choices.len(), 2);
    }

    #[test]
    fn a_chunk_read_through_a_template_still_gives_record_its_head() {
        // An empty id or model leaves `record` reading the next chunk's head, whose id and model
        // are strings a template lets change: they must still be taken.
        for (id, model) in [("", "m"), ("c", "")] {
            let chunks = [("", "a"), ("x", "b")].map(|(fill, content)| {
                let (id, model) = (format!("{id}{fill}"), format!("{model}{fill}"));
                format!(
                    r#"{{"id":"{id}","created":5,"model":"{model}","choices":[{{"index":0,"delta":{{"content":"{content}"}}}}]}}"#
                )
            });
            let (fast, _) = read_both_ways(&chunks);
            assert!(!fast.assembled().id.is_empty() && !fast.assembled().model.is_empty());
        }
    }

    #[test]
    fn chunks_as_servers_send_them_take_the_scan() {
        let chunks: [&[u8]; 5] = [
            br#"{"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_06737a9306","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            br#"{"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":" \"quoted\"\n\u00e9"},"logprobs":null,"finish_reason":null}]}"#,
            br#"{"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\""}}]},"logprobs":null,"finish_reason":null}]}"#,
            br#"{"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":231,"completion_tokens":96,"total_tokens":327,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"#,
            br#"{"id":"gen-1","provider":"OpenAI","model":"openai/gpt-4o","object":"chat.completion.chunk","created":1,"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}],"error":{"code":502,"message":"Upstream error"}}"#,
        ];
        for chunk in chunks {
            let scanned = read_scanned(chunk);
            assert!(scanned.is_some(), "{}", String::from_utf8_lossy(chunk));
            assert_eq!(scanned, uniproxy_wire::from_bytes::<ChunkView<'_>>(chunk).ok());
        }
        // A member twice is serde's error, at any depth, so the scan leaves it to serde.
        let call = |f: &str| format!(r#"{{"index":0,"delta":{{"tool_calls":[{f}]}}}}"#);
        let twice = [
            r#"{"choices":[],"choices":[]}"#.to_owned(),
            r#"{"choices":[],"usage":null,"usage":null}"#.to_owned(),
            r#"{"choices":[{"index":0,"index":1}]}"#.to_owned(),
            r#"{"choices":[{"delta":null,"delta":{}}]}"#.to_owned(),
            r#"{"choices":[{"finish_reason":null,"finish_reason":"stop"}]}"#.to_owned(),
            r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#.to_owned(),
            r#"{"choices":[{"delta":{"tool_calls":null,"tool_calls":[]}}]}"#.to_owned(),
            format!(r#"{{"choices":[{}]}}"#, call(r#"{"id":"a","id":"b"}"#)),
            format!(r#"{{"choices":[{}]}}"#, call(r#"{"function":null,"function":{}}"#)),
            format!(r#"{{"choices":[{}]}}"#, call(r#"{"function":{"name":"f","name":"g"}}"#)),
            format!(
                r#"{{"choices":[{}]}}"#,
                call(r#"{"function":{"arguments":"","arguments":""}}"#)
            ),
        ];
        for chunk in &twice {
            assert!(read_scanned(chunk.as_bytes()).is_none(), "{chunk}");
            assert!(view_of(chunk.as_bytes()).is_err(), "{chunk}");
        }
        // An index is a u32 written plainly; anything else is serde's to judge.
        for (index_text, parsed) in [
            ("2", Some(2)),
            ("-0", None),
            ("-1", None),
            ("1.5", None),
            ("1e2", None),
            ("4294967296", None),
            ("\"0\"", None),
            ("null", None),
        ] {
            for chunk in [
                format!(r#"{{"choices":[{{"index":{index_text},"delta":{{}}}}]}}"#),
                format!(r#"{{"choices":[{}]}}"#, call(&format!(r#"{{"index":{index_text}}}"#))),
            ] {
                let view = view_of(chunk.as_bytes());
                let index = view.ok().map(|v| {
                    let c = &v.choices[0];
                    c.delta
                        .as_ref()
                        .and_then(|d| d.tool_calls.as_ref())
                        .map_or(Some(c.index), |t| t[0].index)
                });
                // A call's `null` index is no index (Gemini's endpoint leaves it out).
                let parsed = match parsed {
                    None if index_text == "null" && chunk.contains("tool_calls") => Some(None),
                    other => other.map(Some),
                };
                assert_eq!(index, parsed, "{chunk}");
                if parsed.is_none_or(|i| i.is_none()) {
                    assert!(read_scanned(chunk.as_bytes()).is_none(), "{chunk}");
                }
            }
        }
        // Broken JSON in a member the view skips is still an error.
        assert!(view_of(br#"{"id":"x","created":01,"choices":[]}"#).is_err());
        assert!(view_of(br#"{"id":"tab	here","choices":[]}"#).is_err());
    }

    /// The answer check as the [`Reader`] does it, or `None` where it leaves it to serde.
    fn read_checked(body: &[u8]) -> Option<Option<Usage>> {
        read_answer(&mut Reader::new(std::str::from_utf8(body).ok()?))
    }

    /// Answers as servers send them, written by hand so that any member may come twice or hold
    /// anything (see `chunk`).
    fn answer() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        type Raw = proptest::strategy::BoxedStrategy<String>;
        let any_value = crate::scan::tests::json().prop_map(|v| v.to_string()).boxed();
        // Each field mostly there once, in any order, sometimes twice.
        let raw_object = |fields: Vec<(&'static str, Raw)>| -> Raw {
            let members: Vec<Raw> = fields
                .into_iter()
                .map(|(k, v)| {
                    prop_oneof![12 => v, 1 => any_value.clone()]
                        .prop_map(move |v| format!("\"{k}\":{v}"))
                        .boxed()
                })
                .collect();
            members
                .prop_perturb(|members, mut rng| {
                    let mut out: Vec<String> =
                        members.into_iter().filter(|_| rng.next_u32() % 100 < 85).collect();
                    for i in (1..out.len()).rev() {
                        out.swap(i, rng.next_u32() as usize % (i + 1));
                    }
                    if !out.is_empty() && rng.next_u32() % 10 == 0 {
                        let twice = out[rng.next_u32() as usize % out.len()].clone();
                        out.push(twice);
                    }
                    format!("{{{}}}", out.join(","))
                })
                .boxed()
        };
        let text =
            "[a-z \"\\\\\u{1}é]{0,8}".prop_map(|t| serde_json::Value::from(t).to_string()).boxed();
        let count =
            prop_oneof![(0u64..500).prop_map(|n| n.to_string()), Just("null".to_owned())].boxed();
        let tokens = (0u64..500).prop_map(|n| n.to_string()).boxed();
        let prompt_details = raw_object(vec![
            ("cached_tokens", count.clone()),
            ("audio_tokens", count.clone()),
            ("queue", any_value.clone()),
        ]);
        let completion_details = raw_object(vec![
            ("reasoning_tokens", count.clone()),
            ("audio_tokens", count.clone()),
            ("accepted_prediction_tokens", count.clone()),
            ("rejected_prediction_tokens", count),
            ("x", any_value.clone()),
        ]);
        let usage = raw_object(vec![
            ("prompt_tokens", tokens.clone()),
            ("completion_tokens", tokens.clone()),
            ("total_tokens", tokens),
            ("prompt_tokens_details", prompt_details),
            ("completion_tokens_details", completion_details),
            ("queue_time", any_value.clone()),
        ]);
        // Arguments mostly JSON text, sometimes a JSON value (llama.cpp's server, TGI).
        let function = raw_object(vec![
            ("name", text.clone()),
            ("arguments", prop_oneof![3 => text.clone(), 1 => any_value.clone()].boxed()),
        ]);
        let call = raw_object(vec![
            ("id", text.clone()),
            ("type", text.clone()),
            ("function", function.clone()),
        ]);
        let calls = proptest::collection::vec(call, 0..3)
            .prop_map(|c| format!("[{}]", c.join(",")))
            .boxed();
        let message = raw_object(vec![
            ("role", text.clone()),
            ("content", text.clone()),
            ("refusal", any_value.clone()),
            ("tool_calls", calls),
            ("function_call", function),
        ]);
        let choice = raw_object(vec![
            ("index", (0u32..3).prop_map(|n| n.to_string()).boxed()),
            ("message", message),
            ("finish_reason", text.clone()),
            ("logprobs", any_value.clone()),
        ]);
        let choices = proptest::collection::vec(choice, 0..3)
            .prop_map(|c| format!("[{}]", c.join(",")))
            .boxed();
        // Mostly every required member once, in order, then up to four of anything.
        let required = (text.clone(), text.clone(), 0u64..2_000_000_000, text.clone(), choices)
            .prop_map(|(id, object, created, model, choices)| {
                format!(
                    r#""id":{id},"object":{object},"created":{created},"model":{model},"choices":{choices}"#
                )
            });
        let usage = prop_oneof![3 => usage, 1 => Just("null".to_owned())]
            .prop_map(|u| format!(r#""usage":{u}"#));
        // Sometimes a member given twice.
        let rest = prop_oneof![
            6 => any_value.clone().prop_map(|v| format!(r#""system_fingerprint":{v}"#)),
            6 => text.clone().prop_map(|v| format!(r#""service_tier":{v}"#)),
            1 => text.prop_map(|v| format!(r#""id":{v}"#)),
            1 => any_value.prop_map(|v| format!(r#""usage":{v}"#)),
        ];
        (required, proptest::option::of(usage), proptest::collection::vec(rest, 0..3)).prop_map(
            |(required, usage, rest)| {
                let members: Vec<String> =
                    std::iter::once(required).chain(usage).chain(rest).collect();
                format!("{{{}}}", members.join(","))
            },
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(1024))]
        #[test]
        fn the_read_answer_check_is_the_parsed_one(
            answer in answer(),
            edit in proptest::option::of((proptest::prelude::any::<proptest::sample::Index>(), 0u8..22)),
        ) {
            let mut text = answer.into_bytes();
            if let Some((at, byte)) = edit && !text.is_empty() {
                let at = at.index(text.len());
                text[at] = b"{}[]\",:\\ 0-.eE+tfnul\x01\n"[usize::from(byte)];
            }
            if let Some(usage) = read_checked(&text) {
                let view = serde_json::from_slice::<CompletionView<'_>>(&text);
                proptest::prop_assert!(view.is_ok(), "{}", String::from_utf8_lossy(&text));
                proptest::prop_assert_eq!(usage, view.unwrap().usage);
            }
        }
    }

    #[test]
    fn answers_as_servers_send_them_take_the_reader() {
        let answers: [&[u8]; 3] = [
            br#"{"id":"chatcmpl-\u0041bc","object":"chat.completion","created":1741569952,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}],"refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":82,"completion_tokens":17,"total_tokens":99,"prompt_tokens_details":{"cached_tokens":64,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":3,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_1"}"#,
            // Groq: timings in the usage, and its own member beside it.
            br#"{"id":"chatcmpl-f51b2cd2","object":"chat.completion","created":1730241104,"model":"llama3-8b-8192","choices":[{"index":0,"message":{"role":"assistant","content":"Fast."},"logprobs":null,"finish_reason":"stop"}],"usage":{"queue_time":0.037,"prompt_tokens":18,"prompt_time":0.000680,"completion_tokens":556,"completion_time":0.463,"total_tokens":574,"total_time":0.464},"system_fingerprint":"fp_179b0f92c9","x_groq":{"id":"req_01jbd6g2qdfw2adyrt2az8hz4w"}}"#,
            // Pretty-printed, as OpenAI sends it, with no usage.
            b"{\n  \"id\": \"c\",\n  \"object\": \"chat.completion\",\n  \"created\": 1,\n  \"model\": \"m\",\n  \"choices\": [\n    {\n      \"index\": 0,\n      \"message\": { \"role\": \"assistant\", \"content\": \"Hi\" }\n    }\n  ]\n}\n",
        ];
        for body in answers {
            let read = read_checked(body);
            assert!(read.is_some(), "{}", String::from_utf8_lossy(body));
            let view: CompletionView<'_> = serde_json::from_slice(body).unwrap();
            assert_eq!(read.unwrap(), view.usage);
        }
        let groq = read_checked(answers[1]).unwrap().unwrap();
        assert_eq!((groq.prompt_tokens, groq.total_tokens), (18, 574));
        assert_eq!(groq.extra["queue_time"], 0.037);

        // What the serde check refuses, the reader refuses; what it is unsure of it leaves.
        let refused = [
            &br#"{"id":"c","object":"chat.completion","created":1,"model":"m"}"#[..],
            br#"{"id":"c","object":"chat.completion","created":-1,"model":"m","choices":[]}"#,
            br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0}]}"#,
            br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"message":{"role":"a"}}]}"#,
            br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":null}}]}"#,
            br#"{"id":"c","id":"d","object":"chat.completion","created":1,"model":"m","choices":[]}"#,
            br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[],"usage":{"total_tokens":1,"total_tokens":2}}"#,
            br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[],"usage":[1,2,3]}"#,
        ];
        for body in refused {
            assert!(read_checked(body).is_none(), "{}", String::from_utf8_lossy(body));
            assert!(serde_json::from_slice::<CompletionView<'_>>(body).is_err());
        }
        // Left to serde, which takes them: a struct written as an array, and counts a server
        // wrote as `null` or a string (an answer is not lost over its bookkeeping: `Usage`).
        let array_choice = br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[[0,{"role":"a"}]]}"#;
        let null_count = br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":null,"total_tokens":null}}"#;
        let string_detail = br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[],"usage":{"prompt_tokens_details":{"cached_tokens":"5"}}}"#;
        for body in [&array_choice[..], null_count, string_detail] {
            assert!(read_checked(body).is_none());
            assert!(serde_json::from_slice::<CompletionView<'_>>(body).is_ok());
        }
    }
}
