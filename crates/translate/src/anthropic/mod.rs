//! Anthropic Messages (`POST {BASE_URL}/messages`, headers `x-api-key` and
//! `anthropic-version: 2023-06-01`).
//!
//! # Request
//!
//! | OpenAI | Anthropic |
//! | --- | --- |
//! | `system` and `developer` messages, wherever they are | top-level `system`, one text block each, in order |
//! | consecutive messages of one role (`tool` counts as `user`) | one message |
//! | `tool` messages | `tool_result` blocks, first in the user turn that follows the calls |
//! | assistant `tool_calls` | `tool_use` blocks; `arguments` parsed to `input` (`""` → `{}`); in an id, a character outside `[a-zA-Z0-9_-]` (which Anthropic refuses) becomes `_`, in the call and its result alike |
//! | `image_url` with a `data:…;base64,` URL / an `http(s)` URL | `image` with a `base64` / `url` source |
//! | `file` parts with `file_data` (a base64 `data:` URL): a PDF / an image | `document` (titled with `filename`) / `image`, with a `base64` source |
//! | text (and earlier assistant refusal) parts | `text` blocks; blank ones (empty or whitespace, which Anthropic refuses) make none, and a user message left with none makes no message; a last assistant message (a prefill) ends without its trailing whitespace, which Anthropic refuses there |
//! | `response_format` `json_schema` | `output_config.format` `{type: json_schema, schema}` (structured outputs); the answer is the JSON as text. The validation keywords Claude's decoding refuses (`minimum`, `maxLength`, …, which Zod writes for every `.int()`) move into the node's `description`, and an object with `properties` gets `additionalProperties: false` (see `schema.rs`) |
//! | `response_format` `json_object` | Anthropic's JSON mode: a tool `json_answer` (`{"type": "object"}` input) the model must call (`tool_choice` `tool`), or, beside the client's tools when it may choose, `any` (one of them or that one); a choice that forces a client's tool stays as it is. The call's input is the answer's `content`, and its `tool_use` stop `stop` (see [`ResponseContext::json_object`](crate::ResponseContext::json_object)); a client tool of that name gets a 400 |
//! | `cache_control` (an object) on a text, image or file part (system messages' too) or on a tool, as gateways take it | `cache_control` on that block or tool (prompt caching) |
//! | `tools[].function` | `{name, description, input_schema}` (`{"type":"object","properties":{}}` when no parameters or `{}`; an object schema without `type` gets `"type": "object"`, which Anthropic requires) |
//! | `tools[].function.strict: true` | `strict: true` (strict tool use: the input follows the schema, whose refused keywords move into descriptions as for `json_schema`); left out, and named in `dropped`, once the model answers 400 that it does not support strict tools ([`crate::Provider::refused`]; the request is sent again) |
//! | `tool_choice` `auto` / `required` / `none` / named | `auto` / `any` / `none` / `tool` |
//! | `tool_choice` `allowed_tools` (mode `auto` / `required`) | only the allowed tools (the others named in `dropped`: Anthropic has no list of allowed tools), `auto` / `any`; a name no tool of the request has is a 400 |
//! | `parallel_tool_calls: false` (with tools) | `tool_choice.disable_parallel_tool_use: true` |
//! | legacy `functions` | tools, as `tools[].function` (beside any `tools`); offered alone, `disable_parallel_tool_use: true` (OpenAI makes one call for `functions`, and the legacy answer holds one) |
//! | legacy `function_call` `auto` / `none` / `{"name"}` | `tool_choice` `auto` / `none` / `tool` (a `tool_choice` given too wins, and `function_call` is named in `dropped`) |
//! | assistant legacy `function_call` | a `tool_use` block whose id is made up from the message's place (`legacy_messages3`) |
//! | `function` messages | a `tool_result` for the latest call of that `name` not answered yet (none: a 400 naming the `name`) |
//! | `stop` | `stop_sequences`, less the empty and whitespace-only ones (`"\n"`), which Anthropic refuses (named in `dropped`) |
//! | `max_completion_tokens`, else `max_tokens`, else the configured limit (and capped by it) | `max_tokens` (Anthropic requires it) |
//! | `temperature`, `top_p` | the same (Anthropic answers 400 itself for a temperature above 1); when both are set, `top_p` is left out (named in `dropped`), as Claude's current models take only one |
//! | `top_k` (an extension OpenAI lacks, which clients send for vLLM and the like) | `top_k` (a whole number, else a 400) |
//! | `user` | `metadata.user_id` |
//! | assistant `thinking_blocks` (as the answer gave them: signed `thinking`, `redacted_thinking`) | the same blocks, first in the assistant turn, when thinking is on; a `thinking` block without its `signature` is left out (named in `dropped`) |
//! | `reasoning_effort` `minimal` / `low` / `medium` / `high` / `xhigh` / `max` | `thinking.budget_tokens` 1024 / 2048 / 4096 / 8192 / 16384 / 32768, cut to half of `max_tokens` (so the answer keeps the other half) but never below Anthropic's minimum of 1024; `none` is no thinking |
//!
//! With thinking on, Anthropic accepts only the default sampling, so a `temperature` other
//! than 1 and any `top_p` or `top_k` are left out (and named in `dropped`) rather than failing the
//! request; a token limit of 1024 or less cannot hold the smallest budget and gets a 400
//! naming `reasoning_effort`. Thinking is left out (and `reasoning_effort` named in
//! `dropped`) where Anthropic refuses it: with a `tool_choice` that forces a tool, and in a
//! tool loop whose last assistant message does not give its `thinking_blocks` back (Anthropic
//! wants that message to start with its thinking, signature included). With thinking off,
//! thinking blocks given back are left out (named in `dropped`): Anthropic refuses them in a
//! last assistant turn then.
//!
//! **Dropped** (harmless, named in [`UpstreamRequest::dropped`](crate::UpstreamRequest)):
//! `presence_penalty`, `frequency_penalty`, `logit_bias`, `seed`, `service_tier`, `store`,
//! `metadata`, `prediction`, `n: 1`, `logprobs: false`, `top_logprobs: 0`, `modalities:
//! ["text"]`, `safety_identifier`, `prompt_cache_key`, `prompt_cache_retention`,
//! `prompt_cache_options`, `verbosity` (GPT-5's hint at an answer's length),
//! `tool_choice` `none`/`auto` and `parallel_tool_calls` without tools, `strict: false` on
//! tools (Anthropic's default),
//! image `detail`, a `json_schema`'s `description`, an image file's `filename`, message `name`,
//! assistant `reasoning_content` (Anthropic takes earlier thinking back only with its
//! signature: as `thinking_blocks`) and assistant `refusal`, and any unknown field inside a message, part or tool.
//!
//! **Refused** with a 400 naming the field ([`TranslateError::Unsupported`]):
//! `n > 1`, `logprobs: true`, `top_logprobs > 0`, a `json_schema` without a schema, audio output
//! `modalities`, `input_audio` parts, `file` parts by
//! `file_id` or of another media type than PDF and images, unknown part types, tools
//! that are not functions, unknown `tool_choice` and `function_call` forms, unknown roles,
//! unknown `reasoning_effort` values, and unknown top-level fields (`moderation`, `audio` and
//! `web_search_options` among them). Invalid tool call
//! `arguments` get [`TranslateError::InvalidToolArguments`]; a `tool` message that answers no
//! earlier call, and image URLs that are neither `data:` base64 nor `http(s)`, get
//! [`TranslateError::InvalidRequest`].
//!
//! # Answer
//!
//! Text blocks are joined into `content`, `thinking` blocks into `reasoning_content`,
//! `tool_use` blocks become `tool_calls` with their ids (`arguments` is the input object's
//! JSON). `thinking` and `redacted_thinking` blocks are also given whole, signatures included,
//! as the message's `thinking_blocks` (LiteLLM's member for them; not OpenAI's): a client
//! that gives the message back as it came (the OpenAI SDKs' `messages.append(message)`) keeps
//! Claude thinking through a tool loop. Other blocks (server tool blocks) carry nothing the
//! OpenAI shape can hold and are skipped. A client that offered only legacy `functions` gets
//! the legacy shape, as OpenAI answers it: the first call as `function_call` (no id; in a
//! stream, `delta.function_call`, the name first), any other left out, and `function_call`
//! for `tool_calls` as the finish reason. `stop_reason` `end_turn` / `stop_sequence` / `pause_turn`
//! → `stop`; `max_tokens` / `model_context_window_exceeded` → `length`; `tool_use` →
//! `tool_calls`; `refusal` → `content_filter`, with the message's `refusal` the
//! `stop_details.explanation` Anthropic gives (read leniently: any other shape is none), else
//! "Claude declined to answer (stop reason: refusal)", and `content: null` unless Claude wrote
//! text before it, which is kept (in a stream, a `delta.refusal` chunk before the finish
//! chunk); a reason this version does not know
//! (`compaction`, …) → `stop`, or `tool_calls` when the answer called tools, as OpenAI's finish
//! reasons are a closed set. Usage: `prompt_tokens` = `input_tokens` + cache creation + cache read (Anthropic's
//! `input_tokens` leaves the cache out), `prompt_tokens_details.cached_tokens` = cache read.
//! The id and time come from the [`ResponseContext`].
//!
//! Errors (`{"type":"error","error":{type,message}}`) keep their status (529 too) and message;
//! the type maps to OpenAI's (`not_found_error` → `invalid_request_error`, `api_error` →
//! `server_error`, `billing_error` → `insufficient_quota`, others by name). The `code` is
//! OpenAI's where a client written for OpenAI branches on it: `context_length_exceeded` (with
//! `param` `messages`) for a prompt too long for the model, `rate_limit_exceeded` for a rate
//! limit, `insufficient_quota` for a billing error; otherwise the Anthropic type. Other bodies
//! go through [`fallback_error`](crate::fallback_error).
//! Such an error in a 2xx answer (a gateway's) is an error too, with the status Anthropic
//! documents for its type; a 2xx answer of another type than `message`, or without `content`,
//! is malformed.
//!
//! # Stream
//!
//! See [`Anthropic`]: chunks are numbered by OpenAI's rules, not Anthropic's block indexes.

mod request;
mod response;
mod schema;
mod stream;
mod wire;

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};

use crate::error::learn_refusal;
use crate::json_bytes;
use crate::{
    Provider, ProviderConfig, ProviderKind, ResponseContext, StreamTranslator, TranslateError,
    Translated, UpstreamRequest,
};

/// The `anthropic-version` header every request carries.
const API_VERSION: &str = "2023-06-01";

/// The provider for Anthropic Messages.
///
/// Its stream translator turns Anthropic's events into OpenAI chunks: `message_start` gives
/// the role chunk (the role alone: an empty `content` there would be an empty text before a
/// tool call, which the Vercel AI SDK keeps as a text part, and OpenAI sends none), text and
/// thinking deltas give `content` and `reasoning_content` fragments,
/// the thinking blocks whole (signed `thinking`, `redacted_thinking`) a chunk with
/// `delta.thinking_blocks` once the thinking is over, when a block of another kind starts or
/// the message ends (each numbered by `index`, as tool calls are; all in one chunk, since
/// openai-node's stream helper keeps only the last value of a member it does not know), and
/// each `tool_use` block becomes a tool call numbered 0, 1, … in order of appearance,
/// whose first fragment carries the id, type and name (a call that got no argument text ends
/// with `{}`). `message_delta` gives the finish chunk; `message_stop` the usage chunk (when
/// the client asked for it) and `[DONE]`. Pings and unknown events are ignored; an `error`
/// event, or a body that ends before `message_stop`, ends the stream with an error frame.
///
/// ```
/// use uniproxy_translate::{Anthropic, Provider, ProviderConfig, ProviderKind, ResponseContext, sse};
/// use uniproxy_wire::{ChatCompletionRequest, from_slice};
///
/// let config = ProviderConfig::new(
///     ProviderKind::Anthropic, "https://api.anthropic.com/v1", "sk-ant-test", "claude-sonnet-4-5");
/// let anthropic = Anthropic::new(config)?;
/// let request: ChatCompletionRequest = from_slice(
///     br#"{"model":"claude","messages":[{"role":"user","content":"Hi"}],"stream":true}"#)?;
/// let ctx = ResponseContext::new("chatcmpl-1", 1_700_000_000, "claude", &request);
/// let upstream = anthropic.build_request(request)?;
/// assert_eq!(upstream.url, "https://api.anthropic.com/v1/messages");
///
/// let recorded = concat!(
///     "event: message_start\n",
///     "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-sonnet-4-5\",",
///     "\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
///     "event: content_block_start\n",
///     "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}   \n\n",
///     "event: ping\ndata: {\"type\": \"ping\"}\n\n",
///     "event: content_block_delta\n",
///     "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
///     "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
///     "event: message_delta\n",
///     "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n",
///     "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
/// );
/// let mut stream = anthropic.stream(&ctx);
/// let mut decoder = sse::Decoder::new();
/// let mut frames = Vec::new();
/// for event in decoder.feed(recorded.as_bytes())? {
///     frames.extend(stream.push(&event)?);
/// }
/// frames.extend(stream.finish()?);
/// let assembled = stream.assembled();
/// assert_eq!(assembled.choices[0].content, "Hello");
/// assert_eq!(assembled.model, "claude-sonnet-4-5");
/// assert_eq!(assembled.usage.as_ref().map(|u| u.total_tokens), Some(11));
/// assert_eq!(frames.last().map(|f| &f[..]), Some(&sse::DONE_FRAME[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Anthropic {
    config: ProviderConfig,
    url: String,
    headers: HeaderMap,
    /// The model refused strict tools (see [`Provider::refused`]): `strict` is left out since.
    no_strict_tools: AtomicBool,
}

impl Anthropic {
    /// Builds the provider; the URL and headers are made once, here.
    ///
    /// # Errors
    /// [`TranslateError::Config`] when the API key cannot be a header value.
    pub fn new(config: ProviderConfig) -> Result<Self, TranslateError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
        if !config.api_key.is_empty() {
            let mut key = HeaderValue::from_str(&config.api_key).map_err(|_| {
                TranslateError::Config { setting: "API_KEY", reason: "is not a valid header value" }
            })?;
            key.set_sensitive(true);
            headers.insert("x-api-key", key);
        }
        let url = format!("{}/messages", config.base_url.trim_end_matches('/'));
        Ok(Anthropic { config, url, headers, no_strict_tools: AtomicBool::new(false) })
    }
}

impl Provider for Anthropic {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Anthropic
    }

    fn build_request(
        &self,
        request: uniproxy_wire::ChatCompletionRequest,
    ) -> Result<UpstreamRequest, TranslateError> {
        let mut builder = request::RequestBuilder::new();
        if self.no_strict_tools.load(Ordering::Relaxed) {
            builder = builder.without_strict_tools();
        }
        let (body, dropped) = builder.build(request, &self.config.model, self.config.max_tokens)?;
        let body = json_bytes(ProviderKind::Anthropic, &body, 0)?;
        Ok(UpstreamRequest::post(self.url.clone(), self.headers.clone(), body, dropped))
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
        let completion = response::completion(&body, ctx)?;
        let body = json_bytes(ProviderKind::Anthropic, &completion, body.len())?;
        Ok(Translated { completion, body })
    }

    fn translate_error(&self, status: u16, body: &[u8]) -> TranslateError {
        response::translate_error(status, body)
    }

    fn refused(&self, status: u16, body: &[u8], _own_usage: bool) -> bool {
        // Models before structured outputs (Claude Sonnet 4, Opus 4) answer 400
        // "'claude-sonnet-4-20250514' does not support strict tools."
        learn_refusal(&self.no_strict_tools, status, body, b"does not support strict tools")
    }

    fn stream(&self, ctx: &ResponseContext) -> Box<dyn StreamTranslator> {
        Box::new(stream::AnthropicStream::new(ctx))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_request_case_is_written_as_serde_json_writes_it() {
        crate::json::tests::assert_built_cases_written_as_serde_json_writes("anthropic", |r| {
            let built = super::request::RequestBuilder::new().build(r, "claude-sonnet-4-5", 4096);
            built.ok().map(|(body, _)| body)
        });
    }
}
