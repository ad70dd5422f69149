//! Pure translators between the OpenAI Chat Completions API and LLM platforms.
//!
//! A [`Provider`] turns an OpenAI [`ChatCompletionRequest`] into the HTTP request its platform
//! expects ([`UpstreamRequest`]: method, URL, headers with auth, body), turns the platform's
//! answer back into a [`ChatCompletion`] or an OpenAI error, and makes a [`StreamTranslator`]:
//! a state machine fed the upstream's server-sent events one at a time (decoded from raw
//! bytes by [`sse::Decoder`]) that returns the `chat.completion.chunk` frames to send and keeps
//! the [`Assembled`] message for the log.
//!
//! What each platform does with each member of a request and an answer (what is mapped, what
//! is dropped and named in [`UpstreamRequest::dropped`], what is refused with a 400, how stop
//! reasons and usage come back) is in the docs of its module: [`anthropic`], [`gemini`],
//! [`openai_compat`] (OpenAI, Azure OpenAI and OpenAI-compatible servers).
//!
//! The crate does no I/O: no sockets, no files, no clock, no randomness. Ids and timestamps
//! come in through [`ResponseContext`]. Build providers with [`provider`]:
//!
//! ```
//! use uniproxy_translate::{ProviderConfig, ProviderKind, ResponseContext, provider, sse};
//! use uniproxy_wire::{ChatCompletionRequest, from_slice};
//!
//! let config = ProviderConfig::new(ProviderKind::OpenAi, "https://api.openai.com/v1", "sk-test", "gpt-4o-mini");
//! let openai = provider(&config)?;
//! let request: ChatCompletionRequest =
//!     from_slice(br#"{"model":"my-alias","messages":[{"role":"user","content":"Hi"}],"stream":true}"#)?;
//! let ctx = ResponseContext::new("chatcmpl-1", 1_700_000_000, "gpt-4o-mini", &request);
//! let upstream = openai.build_request(request)?;
//! assert_eq!(upstream.url, "https://api.openai.com/v1/chat/completions");
//! let body: serde_json::Value = serde_json::from_slice(&upstream.body)?;
//! assert_eq!(body["model"], "gpt-4o-mini");
//!
//! // Feed the upstream's stream, split anywhere, and collect the frames for the client.
//! let mut stream = openai.stream(&ctx);
//! let mut decoder = sse::Decoder::new();
//! let mut frames = Vec::new();
//! for piece in [&b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choi"[..],
//!               b"ces\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"] {
//!     for event in decoder.feed(piece)? {
//!         frames.extend(stream.push(&event)?);
//!     }
//! }
//! frames.extend(stream.finish()?);
//! assert_eq!(stream.assembled().choices[0].content, "Hello");
//! assert_eq!(frames.last().map(|f| &f[..]), Some(&sse::DONE_FRAME[..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// `cargo bolero test` instruments every test target of this crate for coverage; linking
// bolero (which carries the fuzzer's coverage hooks) into each one lets them all link.
#[cfg(all(test, fuzzing))]
use bolero as _;

pub mod anthropic;
mod assemble;
mod error;
pub mod gemini;
mod head;
mod json;
pub mod mock;
pub mod openai_compat;
mod scan;
pub mod sse;

pub use anthropic::Anthropic;
pub use assemble::{
    Assembled, AssembledChoice, AssembledToolCall, MAX_KEPT, completion_to_frames, content_text,
};
use bytes::Bytes;
pub use error::{
    RetryHint, TranslateError, complete_error, error_type_for_status, fallback_error, retry_hint,
};
pub use gemini::Gemini;
pub use head::RequestHead;
pub use openai_compat::OpenAiCompat;
pub use uniproxy_wire::{ChatCompletion, ChatCompletionRequest};

/// The platforms a [`Provider`] can speak to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProviderKind {
    /// OpenAI itself.
    OpenAi,
    /// Any OpenAI-compatible server (Ollama, vLLM, LM Studio, …).
    Custom,
    /// Azure OpenAI.
    AzureOpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini.
    Google,
    /// The built-in mock model: answers locally and deterministically.
    Mock,
}

impl ProviderKind {
    /// The name used in the `TYPE` setting.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Custom => "custom",
            ProviderKind::AzureOpenAi => "azure_openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Google => "google",
            ProviderKind::Mock => "mock",
        }
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a provider needs to know about its upstream.
#[derive(Clone)]
pub struct ProviderConfig {
    /// The platform.
    pub kind: ProviderKind,
    /// The API base URL, without a trailing slash.
    pub base_url: String,
    /// The upstream API key; empty for none.
    pub api_key: String,
    /// The model every request is sent to (`ACTUAL_NAME`).
    pub model: String,
    /// The Azure `api-version` query parameter.
    pub api_version: String,
    /// The token limit applied when a request sets none, and the cap for those that ask more.
    pub max_tokens: u32,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &"[redacted]")
            .field("model", &self.model)
            .field("api_version", &self.api_version)
            .field("max_tokens", &self.max_tokens)
            .finish()
    }
}

impl ProviderConfig {
    /// A config with the default Azure API version and a 4096-token limit.
    pub fn new(
        kind: ProviderKind,
        base_url: impl Into<String>,
        api_key: impl Into<String>,
        model: impl Into<String>,
    ) -> Self {
        let base_url: String = base_url.into();
        ProviderConfig {
            kind,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key: api_key.into(),
            model: model.into(),
            api_version: "2024-10-21".to_owned(),
            max_tokens: 4096,
        }
    }
}

/// The HTTP request to send upstream.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// The method (always POST today).
    pub method: http::Method,
    /// The full URL, query included. It never carries a key: keys go in headers, so URLs can
    /// be logged.
    pub url: String,
    /// Headers, auth included.
    pub headers: http::HeaderMap,
    /// The JSON body.
    pub body: Bytes,
    /// Harmless request fields the platform lacks and that were left out, as JSON paths.
    pub dropped: Vec<String>,
    /// Set by the mock platform: the answer is already here and nothing goes upstream.
    pub local_answer: Option<LocalAnswer>,
    /// The runs of `body` that are the client's bytes as given to
    /// [`Provider::build_request_from`], in order and apart, so that a log can keep the body
    /// as those runs of the client's request and the bytes between them. Empty from
    /// [`Provider::build_request`].
    pub copied: Vec<CopiedSpan>,
    /// When `body` is the client's JSON object as given to [`Provider::build_request_from`]
    /// with some of its top-level members set (an OpenAI-compatible upstream): those members,
    /// as a JSON object. Each replaces the client's member of that name; `null` stands for a
    /// member the client sent and `body` leaves out. A log can keep it rather than a second
    /// copy of the client's request. `None` when the body was written another way.
    pub changes: Option<Bytes>,
}

/// The shortest run of copied bytes worth naming in [`UpstreamRequest::copied`]: a log keeps
/// each run as three numbers, so a short value (`0.7`, `true`) is cheaper kept as it is.
pub(crate) const MIN_COPIED: usize = 32;

/// The smallest request whose translated body is searched for the client's strings. Below it
/// the search costs more than the log saves: callgrind through the proxy, Anthropic upstream,
/// 1 KB requests: +10.3k instructions on the runtime thread, +1.2k on the log writer (a row
/// that small costs SQLite by the row, not by the byte). At 20 KB it doubles the requests a
/// second the log keeps up with.
pub(crate) const STRING_RUNS_FROM: usize = 4096;

/// A run of an upstream body that is bytes of the client's request:
/// `body[at..at + len] == raw[from..from + len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopiedSpan {
    /// Where the run starts in the upstream body.
    pub at: usize,
    /// Where it starts in the client's request.
    pub from: usize,
    /// Its length in bytes.
    pub len: usize,
}

impl UpstreamRequest {
    /// A JSON POST to `url`: what every platform sends.
    pub(crate) fn post(
        url: String,
        headers: http::HeaderMap,
        body: Bytes,
        dropped: Vec<String>,
    ) -> Self {
        UpstreamRequest {
            method: http::Method::POST,
            url,
            headers,
            body,
            dropped,
            local_answer: None,
            copied: Vec::new(),
            changes: None,
        }
    }
}

/// A base URL's host, without its port and in lower case, and its path without the `/` it
/// starts with: what a provider reads of `BASE_URL` to know which API it speaks to.
pub(crate) fn host_and_path(url: &str) -> (String, &str) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = host.split(':').next().unwrap_or(host);
    (host.to_ascii_lowercase(), path)
}

/// A `data:` URL's declared media type as the platforms take it: without its parameters
/// (`image/png;name=a.png`, `application/pdf;charset=binary`: RFC 2397 allows them, Anthropic
/// takes only the bare type, and a PDF would not be known as one), and `image/jpg`, which
/// clients write and no registry has, as `image/jpeg` (Anthropic refuses it, Gemini does not
/// list it).
pub(crate) fn media_type(declared: &str) -> &str {
    let bare = declared.split(';').next().unwrap_or(declared).trim();
    if bare.eq_ignore_ascii_case("image/jpg") { "image/jpeg" } else { bare }
}

/// The function names an `allowed_tools` choice allows, each one that `tools` (the request's)
/// define; its mode is checked to be `auto` or `required`. The translators send only those
/// tools: neither Anthropic nor Gemini has a list of allowed tools beside the tools defined
/// that works for both modes.
///
/// # Errors
/// [`TranslateError::Unsupported`] for another `type` or `mode` and a tool that is not a
/// function; [`TranslateError::InvalidRequest`] for an empty list and a name no tool of the
/// request has.
pub(crate) fn allowed_tools(
    choice: &uniproxy_wire::AllowedToolsChoice,
    tools: &[uniproxy_wire::Tool],
    provider: ProviderKind,
) -> Result<std::collections::HashSet<String>, TranslateError> {
    use uniproxy_wire::ToolChoiceMode;
    let unsupported = |field: String| TranslateError::Unsupported { provider, field };
    if choice.kind != "allowed_tools" {
        return Err(unsupported("tool_choice.type".to_owned()));
    }
    if !matches!(choice.allowed_tools.mode, ToolChoiceMode::Auto | ToolChoiceMode::Required) {
        return Err(unsupported("tool_choice.allowed_tools.mode".to_owned()));
    }
    if choice.allowed_tools.tools.is_empty() {
        let param = "tool_choice.allowed_tools.tools".to_owned();
        return Err(TranslateError::InvalidRequest { param, reason: "is empty" });
    }
    let mut names = std::collections::HashSet::new();
    for (i, tool) in choice.allowed_tools.tools.iter().enumerate() {
        let at = format!("tool_choice.allowed_tools.tools[{i}]");
        let Some(function) = tool.function.as_ref().filter(|_| tool.kind == "function") else {
            return Err(unsupported(format!("{at}.type")));
        };
        if !tools.iter().any(|t| t.function.as_ref().is_some_and(|f| f.name == function.name)) {
            let param = format!("{at}.function.name");
            return Err(TranslateError::InvalidRequest {
                param,
                reason: "names no tool of the request",
            });
        }
        names.insert(function.name.clone());
    }
    Ok(names)
}

/// Serializes a body the crate built. Our own types always serialize; the error exists only
/// so that no `unwrap` stands on the path.
///
/// `size` is what the body is expected to take, such as the size of the answer it translates:
/// `serde_json::to_vec` grows its vector from 128 bytes, and regrowing it was an eighth of
/// translating an answer. The bytes are serde_json's; [`json::to_vec`] escapes strings faster.
pub(crate) fn json_bytes<T: serde::Serialize>(
    provider: ProviderKind,
    value: &T,
    size: usize,
) -> Result<Bytes, TranslateError> {
    json::to_vec(value, size.max(1024))
        .map(Bytes::from)
        .map_err(|source| TranslateError::Malformed { provider, source })
}

/// An answer made without an upstream (the mock platform): treat it as the upstream's.
#[derive(Debug, Clone)]
pub struct LocalAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The body: JSON, or an SSE stream.
    pub body: Bytes,
}

/// How the client takes the model's function calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallShape {
    /// As `tool_calls`, each with its id.
    Tools,
    /// As one legacy `function_call` (the client offered only `functions`), as OpenAI answers
    /// such a request. The shape holds one call, and OpenAI never makes parallel calls for
    /// `functions`: the answer's first call is given and any others are left out (Claude is
    /// asked for one; Gemini has no switch for it).
    Legacy,
}

impl CallShape {
    /// The shape the client of `ctx` takes.
    pub(crate) fn of(ctx: &ResponseContext) -> Self {
        if ctx.legacy_functions { CallShape::Legacy } else { CallShape::Tools }
    }

    /// The finish reason of an answer that stopped having called functions.
    pub(crate) fn finish_reason(self) -> uniproxy_wire::FinishReason {
        match self {
            CallShape::Tools => uniproxy_wire::FinishReason::ToolCalls,
            CallShape::Legacy => uniproxy_wire::FinishReason::FunctionCall,
        }
    }

    /// `reason`, a translator's finish reason for an answer, as this shape says it: a stop to
    /// have tools run is `function_call` for a legacy client.
    pub(crate) fn finish(self, reason: uniproxy_wire::FinishReason) -> uniproxy_wire::FinishReason {
        match reason {
            uniproxy_wire::FinishReason::ToolCalls => self.finish_reason(),
            other => other,
        }
    }

    /// Puts an answer's `calls` (at least one) into `message` in this shape. A legacy call
    /// goes without its id: the legacy shape has none, and the `function` message that
    /// answers it names the function.
    pub(crate) fn give_calls(
        self,
        message: &mut uniproxy_wire::Message,
        calls: Vec<uniproxy_wire::ToolCall>,
    ) {
        match self {
            CallShape::Tools => message.tool_calls = Some(calls),
            CallShape::Legacy => {
                message.function_call = calls.into_iter().next().and_then(|c| c.function);
            }
        }
    }
}

/// Per-response facts the translators need and must not make up themselves.
#[derive(Debug, Clone)]
pub struct ResponseContext {
    /// The completion id to use when the upstream gives none (`chatcmpl-…`).
    pub id: String,
    /// The Unix time to use when the upstream gives none.
    pub created: u64,
    /// The model name to report when the upstream gives none.
    pub model: String,
    /// Whether the client asked for the usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// Whether the client asked for a JSON object (`response_format` `json_object`): a
    /// platform asked for one through a tool (Anthropic) gives the tool's input as the
    /// answer's content.
    pub json_object: bool,
    /// Whether the client offered only legacy `functions` (no `tools`): OpenAI answers such a
    /// request with one `function_call` and finish reason `function_call`, and a platform
    /// whose calls are translated (Gemini) answers so too; a legacy client looks for nothing
    /// else.
    pub legacy_functions: bool,
}

impl ResponseContext {
    /// The context for answering `request`.
    pub fn new(
        id: impl Into<String>,
        created: u64,
        model: impl Into<String>,
        request: &ChatCompletionRequest,
    ) -> Self {
        ResponseContext {
            id: id.into(),
            created,
            model: model.into(),
            include_usage: request.wants_stream_usage(),
            json_object: request.wants_json_object(),
            legacy_functions: request.offers_only_functions(),
        }
    }
}

/// A translated non-stream answer.
#[derive(Debug, Clone)]
pub struct Translated {
    /// The answer.
    pub completion: ChatCompletion,
    /// The body to send the client: the upstream's own bytes when no translation was needed.
    pub body: Bytes,
}

/// A non-stream answer as the client gets it, with what the log keeps of it: the cheaper
/// sibling of [`Translated`] (see [`Provider::translate_answer`]).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The token usage, when the answer reports it.
    pub usage: Option<uniproxy_wire::Usage>,
    /// The body to send the client.
    pub body: Bytes,
}

impl From<Translated> for Answer {
    fn from(t: Translated) -> Self {
        Answer { usage: t.completion.usage, body: t.body }
    }
}

/// One platform's translation, both ways.
pub trait Provider: Send + Sync {
    /// The platform.
    fn kind(&self) -> ProviderKind;

    /// Builds the upstream request for an OpenAI request. The request's `model` is replaced by
    /// the configured one; the token limit is applied.
    ///
    /// # Errors
    /// [`TranslateError::Unsupported`] or [`TranslateError::InvalidRequest`] when the platform
    /// cannot express the request.
    fn build_request(
        &self,
        request: ChatCompletionRequest,
    ) -> Result<UpstreamRequest, TranslateError>;

    /// [`build_request`](Self::build_request) for a request parsed from `raw`, the client's
    /// body. The caller may have changed `model`, `stream` and `stream_options` since; every
    /// other field must be as parsed. A platform that speaks the OpenAI format copies the
    /// client's bytes for the members it does not rewrite instead of serializing them again;
    /// the others name the client's strings they wrote back byte for byte (the texts of the
    /// messages, mostly) in [`UpstreamRequest::copied`].
    ///
    /// # Errors
    /// As [`build_request`](Self::build_request).
    fn build_request_from(
        &self,
        request: ChatCompletionRequest,
        raw: &[u8],
    ) -> Result<UpstreamRequest, TranslateError> {
        let mut up = self.build_request(request)?;
        if raw.len() >= STRING_RUNS_FROM {
            up.copied = scan::string_runs(raw, &up.body);
        }
        Ok(up)
    }

    /// For a platform that takes the OpenAI format: `raw`, a client's body, read only as far
    /// as [`build_request_head`](Self::build_request_head) needs ([`RequestHead::read`]),
    /// without building the typed request. `None` for the other platforms (the default) and for
    /// a body the read leaves to the full parse: the caller then parses the typed request and
    /// calls [`build_request_from`](Self::build_request_from).
    fn read_head<'a>(&self, raw: &'a [u8]) -> Option<RequestHead<'a>> {
        let _ = raw;
        None
    }

    /// [`build_request_from`](Self::build_request_from) for a body [`read_head`](Self::read_head)
    /// read, whose typed members the caller may have changed since. A platform that does not
    /// read heads parses the typed request here.
    ///
    /// # Errors
    /// As [`build_request`](Self::build_request).
    fn build_request_head(&self, head: RequestHead<'_>) -> Result<UpstreamRequest, TranslateError> {
        let raw = head.raw();
        let mut request: ChatCompletionRequest =
            uniproxy_wire::from_bytes(raw).map_err(|_| TranslateError::InvalidRequest {
                param: String::new(),
                reason: "the body does not parse as a request",
            })?;
        request.model = head.model;
        request.max_tokens = head.max_tokens;
        request.max_completion_tokens = head.max_completion_tokens;
        request.stream = head.stream;
        request.stream_options = head.stream_options;
        self.build_request_from(request, raw)
    }

    /// Translates a non-stream answer.
    ///
    /// # Errors
    /// [`TranslateError::Upstream`] for an error status (the upstream's message in the OpenAI
    /// shape); [`TranslateError::Malformed`] for a body the platform never sends.
    fn translate_response(
        &self,
        status: u16,
        body: Bytes,
        ctx: &ResponseContext,
    ) -> Result<Translated, TranslateError>;

    /// [`translate_response`](Self::translate_response) for a caller that needs only the
    /// client's body and the usage. A platform whose answer passes through unchanged checks the
    /// members a client relies on here, without building the typed completion: an answer it
    /// refuses gets `translate_response`'s error, and one it accepts goes to the client as sent,
    /// even if a member it does not check would fail `translate_response`'s typed parse.
    ///
    /// # Errors
    /// As [`translate_response`](Self::translate_response).
    fn translate_answer(
        &self,
        status: u16,
        body: Bytes,
        ctx: &ResponseContext,
    ) -> Result<Answer, TranslateError> {
        self.translate_response(status, body, ctx).map(Answer::from)
    }

    /// Translates an error answer (any non-2xx status) into the OpenAI shape.
    fn translate_error(&self, status: u16, body: &[u8]) -> TranslateError;

    /// Whether the error answer (`status`, `body`) refuses something the provider may leave out
    /// of a request without changing the answer's shape: a sampling member of the client's
    /// (OpenAI's reasoning models take `temperature`, `top_p`, the penalties and `logit_bias`
    /// only at their defaults, and the proxy, not the client, picked the model), or, when
    /// `own_usage` (the provider asked for a stream's usage on its own, the client did not),
    /// `stream_options` (Mistral's API and older Azure API versions refuse it), the token
    /// limit as `max_completion_tokens` (older Azure API versions do not know it; it goes as
    /// `max_tokens` then), or a tool's `strict` (Claude models before structured outputs
    /// refuse strict tools). If so, the
    /// provider leaves it out from then on (a member named in [`UpstreamRequest::dropped`]),
    /// and the caller builds the request again and resends it. `false` by default.
    fn refused(&self, status: u16, body: &[u8], own_usage: bool) -> bool {
        let _ = (status, body, own_usage);
        false
    }

    /// A state machine for one streamed answer.
    fn stream(&self, ctx: &ResponseContext) -> Box<dyn StreamTranslator>;
}

/// Upstream stream events in, OpenAI `chat.completion.chunk` frames out.
pub trait StreamTranslator: Send {
    /// Translates one upstream event into zero or more SSE frames (`data: …\n\n`) for the client.
    ///
    /// # Errors
    /// When the event breaks the platform's protocol. An error the upstream reports inside
    /// the stream is not an `Err`: it becomes an error frame and is kept in
    /// [`Assembled::error`].
    fn push(&mut self, event: &sse::SseEvent) -> Result<Vec<Bytes>, TranslateError>;

    /// [`push`](Self::push), appending the frames to `out` (a relay reuses one buffer for a
    /// whole stream instead of allocating a vector per event).
    ///
    /// # Errors
    /// As [`push`](Self::push).
    fn push_into(
        &mut self,
        event: &sse::SseEvent,
        out: &mut Vec<Bytes>,
    ) -> Result<(), TranslateError> {
        out.extend(self.push(event)?);
        Ok(())
    }

    /// The upstream body ended: the final frames (`data: [DONE]`, or an error frame when the
    /// stream ended before its end).
    ///
    /// # Errors
    /// When the stream's state cannot be completed.
    fn finish(&mut self) -> Result<Vec<Bytes>, TranslateError>;

    /// Whether the stream has ended (its end event or an error): no more frames follow.
    fn is_done(&self) -> bool;

    /// What the stream said so far.
    fn assembled(&self) -> &Assembled;
}

/// Builds the provider for a platform.
///
/// # Errors
/// [`TranslateError::Config`] when the configuration cannot work for the platform
/// (an Azure base URL that names no deployment and no `/openai/v1`).
pub fn provider(config: &ProviderConfig) -> Result<Box<dyn Provider>, TranslateError> {
    Ok(match config.kind {
        ProviderKind::OpenAi | ProviderKind::Custom | ProviderKind::AzureOpenAi => {
            Box::new(OpenAiCompat::new(config.clone())?)
        }
        ProviderKind::Mock => Box::new(mock::Mock::new(config.clone())),
        ProviderKind::Anthropic => Box::new(anthropic::Anthropic::new(config.clone())?),
        ProviderKind::Google => Box::new(gemini::Gemini::new(config.clone())?),
    })
}
