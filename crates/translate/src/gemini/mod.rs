//! Google Gemini (`generateContent`), behind [`Provider`].
//!
//! Requests go to `{BASE_URL}/models/{model}:generateContent`, or
//! `:streamGenerateContent?alt=sse` when the client streams, with the key in the
//! `x-goog-api-key` header, never in the URL (URLs end up in logs).
//!
//! # Request: what maps to what
//!
//! | OpenAI | Gemini |
//! |---|---|
//! | `system` / `developer` messages (text only, wherever they stand) | `systemInstruction`, one text part each, in order |
//! | `user` text, `image_url` (`data:` URL), `input_audio` (wav/mp3), `file.file_data` | `user` content: `text`, `inlineData` (an empty text, which Gemini refuses, makes no part) |
//! | `image_url` with an `http(s)://` or `gs://` URL | `fileData` (`mimeType` guessed from the extension, else left out) |
//! | `assistant` text / refusal, `tool_calls`, legacy `function_call` | `model` content: `text`, `functionCall {id, name, args}` (args parsed; `""` is `{}`; no `id` for Vertex AI `v1`, which has no field for it and refuses the request) |
//! | `tool_calls[].extra_content.google.thought_signature` | `thoughtSignature` on that `functionCall` part (Gemini 3 wants it back; for a Gemini 3 model, a turn whose calls have none gets Google's `skip_thought_signature_validator` on its first) |
//! | consecutive `user` messages, consecutive `assistant` messages | one content: Gemini wants a model turn to follow a user turn |
//! | `tool` messages, legacy `function` messages | `functionResponse {id, name, response}` (no `id` for Vertex AI `v1`): the name is the matching call's; `response` is the content when it is a JSON object, else `{"result": <the JSON value or the text>}`; all in one `user` content right after the calls, which holds nothing else (Gemini refuses a text beside them: a `user` message sent before or amid the results goes after them, in a content of its own), in the order of the calls, which Vertex AI `v1` pairs them by |
//! | `tools[].function`, legacy `functions` | `tools[0].functionDeclarations`, parameters reduced by the `schema` module (properties keep the client's order, said to Gemini with `propertyOrdering`, which it otherwise takes as alphabetical; a parameter-less object is left out, as Gemini refuses empty `OBJECT`s; a schema with an object of unlisted keys, a map, goes as `parametersJsonSchema`) |
//! | `tool_choice` `auto` / `none` / `required` / named | `toolConfig.functionCallingConfig.mode` `AUTO` / `NONE` / `ANY` / `ANY` + `allowedFunctionNames` |
//! | `tool_choice` `allowed_tools` (mode `auto` / `required`) | only the allowed tools' declarations (the others named in `dropped`: Gemini takes a list of allowed functions only with `ANY`), mode `AUTO` / `ANY`; a name no tool of the request has is a 400 |
//! | `temperature`, `top_p`, `top_k` (extension), `n`, `stop`, `seed`, `presence_penalty`, `frequency_penalty` | `generationConfig.temperature`, `topP`, `topK`, `candidateCount`, `stopSequences`, `seed`, `presencePenalty`, `frequencyPenalty`; the penalties are left out, and named in `dropped`, once the model answers 400 that it takes none (Gemini 2.5 and later: "Penalty is not enabled"; [`Provider::refused`], the request is sent again) |
//! | `max_completion_tokens` / `max_tokens`, capped by `MAX_TOKENS` (and set to it when absent) | `generationConfig.maxOutputTokens` |
//! | `response_format` `json_object` / `json_schema` | `responseMimeType: application/json` (+ `responseSchema`, reduced; `responseJsonSchema` for a schema with a map) |
//! | `reasoning_effort` `none` / `minimal` / `low` / `medium` / `high` (and `xhigh`, `max`) | `thinkingConfig.thinkingBudget` 0 / 512 / 1024 / 8192 / 24576 (the largest every 2.5 model takes), at most half of `maxOutputTokens` and at least 512 (thoughts count against it, as for Claude), with `includeThoughts: true` (except for `none`) so the thoughts come back as `reasoning_content` |
//!
//! **Dropped** (named in [`UpstreamRequest::dropped`]): `logit_bias`, `user`, `metadata`, `store`,
//! `service_tier`, `parallel_tool_calls`, `prediction`, `logprobs: false`, `top_logprobs: 0`,
//! `modalities: ["text"]`, `messages[i].name`, assistant `reasoning_content` (Gemini takes
//! thoughts back only with signatures), `strict` on tools and schemas, `image_url.detail` (Gemini sets
//! resolution per request), a `file` part's `filename` (`inlineData` has no name), request fields
//! this version does not model (except the refused ones below), and the members this version
//! does not model of messages, content parts (and their `image_url`, `input_audio`, `file`) and
//! tools (`cache_control`, which only Claude takes), as `messages[i].content[j].cache_control`.
//!
//! **Refused** with a 400 naming the field: `logprobs: true`, `top_logprobs > 0`, output
//! `modalities` other than text, `audio`, `web_search_options`, `moderation` (a check the
//! client asked for that would not run), unknown roles, non-text content
//! in system, tool and assistant messages, refusal or unknown parts in user messages, OpenAI
//! file ids, URLs that are neither `data:`, `http(s)` nor `gs`, audio formats other than wav and
//! mp3, tools that are not functions, `tool_choice` forms this version does not know,
//! `required` or a named tool with no tools, unknown `reasoning_effort` values, seeds outside
//! 32 bits, `response_format` types this version does not know, and schemas the reducer cannot
//! express (a `$ref` outside the schema's `$defs` is refused at its path,
//! `tools[i].function.parameters….$ref`; a recursive one goes as JSON Schema).
//! A schema that expands past 4 MiB once its `$ref`s are inlined is an invalid request
//! (`invalid_value`) at the `$ref` that asked for the copies, saying so.
//! Tool messages whose `tool_call_id` matches no earlier call, and tool call arguments that
//! are not a JSON object, are invalid requests.
//!
//! # Response
//!
//! Text parts make `content`, `thought: true` parts make `reasoning_content`, `functionCall`
//! parts make `tool_calls` (Gemini's id when it gives one, else `call_<context id>_<n>`,
//! unique within the response; `thoughtSignature` rides along in
//! `extra_content.google.thought_signature`). A client that offered only legacy `functions`
//! gets the legacy shape, as OpenAI answers it: the candidate's first call as
//! `function_call {name, arguments}` (no id, no signature) and finish reason `function_call`;
//! the shape holds one call, OpenAI makes no parallel calls for `functions` and Gemini cannot
//! be told not to, so its other calls are left out. Other output parts (`inlineData` images and
//! audio, `fileData`, `executableCode`, `codeExecutionResult`) have no OpenAI counterpart and are
//! left out; beside text or calls, the answer is those. Finish reasons: `STOP` → `stop`, or
//! `tool_calls` (`function_call`) when the candidate called functions; `MAX_TOKENS` → `length`;
//! `SAFETY`, `RECITATION`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `SPII` and the `IMAGE_*` filters →
//! `content_filter`; any other reason (`MALFORMED_FUNCTION_CALL`, `UNEXPECTED_TOOL_CALL`,
//! `OTHER`, `NO_IMAGE`, …) → `stop` (or the calls' reason) for a candidate that gave text or
//! calls. A candidate without content still makes a choice (`STOP`: the model said nothing),
//! except one that is **no answer**: it gave no text and no call (thoughts do not count) and
//! stopped for one of those other reasons, or held only parts that are left out. When every
//! candidate is no answer, the answer is a 502 (`upstream_error`, code `upstream_empty_answer`,
//! which the OpenAI SDKs retry) whose message names what happened and Gemini's `finishMessage`
//! ("Gemini ended the answer without content (finish reason MALFORMED_FUNCTION_CALL): Malformed
//! function call: …", "Gemini answered with an image (image/png), which a chat completion cannot
//! carry"); with `n` > 1 and some candidates answered, the others stay empty `stop`s. Where a
//! candidate answered, `finishMessage` has no place in the OpenAI shape and is not passed on.
//! A blocked prompt (no candidates, `promptFeedback.blockReason`) makes one choice with
//! `finish_reason: content_filter`, `content: null` and a `refusal` naming the block reason.
//! Usage: `promptTokenCount` → `prompt_tokens`, `candidatesTokenCount + thoughtsTokenCount` →
//! `completion_tokens` (thoughts also as `reasoning_tokens`), `cachedContentTokenCount` →
//! `cached_tokens`, `totalTokenCount` (or the sum) → `total_tokens`. The id and time come from
//! the [`ResponseContext`]; the model is `modelVersion`, or the context's.
//!
//! Errors `{"error":{code,message,status}}` keep the HTTP status; the type comes from the
//! status name (`INVALID_ARGUMENT` → `invalid_request_error`, `UNAUTHENTICATED` →
//! `authentication_error`, `PERMISSION_DENIED` → `permission_error`, `RESOURCE_EXHAUSTED` →
//! `rate_limit_error`, `INTERNAL`/`UNAVAILABLE` → `server_error`, …) and the status name is the
//! `code`, except for an input longer than the model takes: OpenAI's `context_length_exceeded`
//! (with `param` `messages`), which clients written for OpenAI branch on. `details` is not
//! passed on (it can quote part of the API key); a 429's `RetryInfo` delay is read by
//! [`retry_hint`](crate::retry_hint), for the server to say as `Retry-After`. Other bodies
//! become [`fallback_error`](crate::fallback_error).
//!
//! # Stream
//!
//! The `stream` module: deltas per event, function calls whole (one tool call index
//! each, arguments in one fragment; for legacy `functions`, the first as `delta.function_call`
//! and no other), finish and usage chunks and `[DONE]` when the body ends.
//! A stream that is no answer (as above: nothing but thoughts went out, and every candidate is
//! no answer) ends with that error as an error frame instead of its finish chunks.
//! A `{"error":…}` event becomes an OpenAI error frame. Vertex may instead write a bare JSON
//! error object, not `data:`-prefixed: the SSE decoder cannot see it, so the stream ends as
//! though the body was cut; when no finish reason arrived before, the client gets an
//! `upstream_error` frame from `finish`, and otherwise the answer so far, finished.

mod request;
mod response;
mod schema;
mod stream;
mod wire;

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use serde_json::{Value, json};
use uniproxy_wire::{ChatCompletionRequest, Map};

use crate::error::learn_refusal;
use crate::openai_compat::cap_tokens;
use crate::{
    Provider, ProviderConfig, ProviderKind, ResponseContext, StreamTranslator, TranslateError,
    Translated, UpstreamRequest,
};
use crate::{host_and_path, json_bytes};

/// The provider for Google Gemini (the Developer API, or Vertex AI's `…/publishers/google`
/// base URL with a key that works in `x-goog-api-key`).
#[derive(Debug)]
pub struct Gemini {
    config: ProviderConfig,
    headers: HeaderMap,
    /// Whether the model wants its thought signatures back ([`wants_signatures`]).
    signs_calls: bool,
    /// Whether the API takes call ids on `functionCall` and `functionResponse` parts
    /// ([`takes_call_ids`]).
    call_ids: bool,
    /// Set once the model answered that it takes no penalties ([`Provider::refused`]).
    no_penalties: AtomicBool,
}

impl Gemini {
    /// Builds the provider; the auth header is made once, here.
    ///
    /// # Errors
    /// [`TranslateError::Config`] for an API key that cannot be a header value.
    pub fn new(config: ProviderConfig) -> Result<Self, TranslateError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if !config.api_key.is_empty() {
            let mut key = HeaderValue::from_str(&config.api_key).map_err(|_| {
                TranslateError::Config { setting: "API_KEY", reason: "is not a valid header value" }
            })?;
            key.set_sensitive(true);
            headers.insert("x-goog-api-key", key);
        }
        let signs_calls = wants_signatures(&config.model);
        let call_ids = takes_call_ids(&config.base_url);
        Ok(Gemini { config, headers, signs_calls, call_ids, no_penalties: AtomicBool::new(false) })
    }

    fn url(&self, stream: bool) -> String {
        let base = self.config.base_url.trim_end_matches('/');
        let model = self.config.model.strip_prefix("models/").unwrap_or(&self.config.model);
        if stream {
            format!("{base}/models/{model}:streamGenerateContent?alt=sse")
        } else {
            format!("{base}/models/{model}:generateContent")
        }
    }
}

impl Provider for Gemini {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Google
    }

    fn build_request(
        &self,
        mut request: ChatCompletionRequest,
    ) -> Result<UpstreamRequest, TranslateError> {
        let max = self.config.max_tokens;
        cap_tokens(&mut request, max, |r| r.max_tokens = Some(max));
        let mut unsent = Vec::new();
        if self.no_penalties.load(Ordering::Relaxed) {
            if request.presence_penalty.take().is_some() {
                unsent.push("presence_penalty".to_owned());
            }
            if request.frequency_penalty.take().is_some() {
                unsent.push("frequency_penalty".to_owned());
            }
        }
        let (mut body, mut dropped) = request::build(&request)?;
        dropped.append(&mut unsent);
        if self.signs_calls {
            sign_unsigned_calls(&mut body.contents);
        }
        if !self.call_ids {
            strip_call_ids(&mut body.contents);
        }
        let body = json_bytes(ProviderKind::Google, &body, 0)?;
        Ok(UpstreamRequest::post(
            self.url(request.is_stream()),
            self.headers.clone(),
            body,
            dropped,
        ))
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
        let answer: wire::GenerateContentResponse =
            uniproxy_wire::from_bytes(&body).map_err(|source| TranslateError::Malformed {
                provider: ProviderKind::Google,
                source,
            })?;
        if let Some(error) = &answer.error {
            let status = error.code.and_then(|c| u16::try_from(c).ok()).unwrap_or(502);
            let error = response::error_response(error, status);
            return Err(TranslateError::Upstream { status, error: Box::new(error) });
        }
        // The tokens of an answer with nothing to use are billed all the same: the record
        // keeps them.
        let no_answer = |error| TranslateError::NoAnswer {
            error: Box::new(error),
            usage: answer.usage_metadata.as_ref().map(|u| Box::new(response::usage(u))),
        };
        let completion = response::to_completion(&answer, ctx)
            .map_err(|why| no_answer(response::empty_answer_error(why)))?;
        if completion.choices.is_empty() {
            // No candidate and no block reason: nothing to answer with, as the stream says too.
            let error = uniproxy_wire::ErrorResponse::new(
                "Google answered with no candidates and no reason for it",
                "upstream_error",
            )
            .with_code("bad_upstream_response");
            return Err(no_answer(error));
        }
        let body = json_bytes(ProviderKind::Google, &completion, body.len())?;
        Ok(Translated { completion, body })
    }

    fn translate_error(&self, status: u16, body: &[u8]) -> TranslateError {
        response::translate_error(status, body)
    }

    fn refused(&self, status: u16, body: &[u8], _own_usage: bool) -> bool {
        // Gemini 2.5 and later take the penalties only at 0 and answer 400 INVALID_ARGUMENT
        // "Penalty is not enabled for models/gemini-2.5-flash" (or "… for this model").
        learn_refusal(&self.no_penalties, status, body, b"Penalty is not enabled")
    }

    fn stream(&self, ctx: &ResponseContext) -> Box<dyn StreamTranslator> {
        Box::new(stream::GeminiStream::new(ctx))
    }
}

/// Google's documented stand-in for a thought signature that was lost, which tells Gemini to
/// skip the check.
const SKIP_SIGNATURE_CHECK: &str = "skip_thought_signature_validator";

/// Whether `model` is Gemini 3 or later, which refuses a replayed model turn whose function
/// call has no thought signature (400 "Function call is missing a thought_signature").
fn wants_signatures(model: &str) -> bool {
    let name = model.rsplit('/').next().unwrap_or(model);
    let Some(version) = name.strip_prefix("gemini-") else { return false };
    let digits = version.bytes().take_while(u8::is_ascii_digit).count();
    version[..digits].parse::<u32>().is_ok_and(|major| major >= 3)
}

/// Whether the API at `base_url` takes an `id` on `functionCall` and `functionResponse`
/// parts. The Developer API (`generativelanguage.googleapis.com`) and Vertex AI's `v1beta1`
/// do; Vertex AI's `v1` has no such field (`google.cloud.aiplatform.v1.FunctionCall` and
/// `FunctionResponse`) and refuses the whole request: 400 `Invalid JSON payload received.
/// Unknown name "id" at 'contents[1].parts[0].function_call': Cannot find field.`
fn takes_call_ids(base_url: &str) -> bool {
    let (host, path) = host_and_path(base_url);
    let vertex =
        host == "aiplatform.googleapis.com" || host.ends_with("-aiplatform.googleapis.com");
    !(vertex && path.split('/').next() == Some("v1"))
}

/// Takes the call ids off every `functionCall` and `functionResponse` part, for an API that
/// has no field for them (Vertex AI `v1`, which pairs calls and results by name and order).
fn strip_call_ids(contents: &mut [wire::Content]) {
    for part in contents.iter_mut().flat_map(|c| c.parts.iter_mut()) {
        if let Some(call) = part.function_call.as_mut() {
            call.id = None;
        }
        if let Some(result) = part.function_response.as_mut() {
            result.id = None;
        }
    }
}

/// Gives each model turn whose function calls came back without their thought signature
/// (a client that rebuilt the assistant message and dropped `extra_content`) the stand-in, on
/// its first call: in a turn of parallel calls only the first carries one.
fn sign_unsigned_calls(contents: &mut [wire::Content]) {
    for content in contents.iter_mut().filter(|c| c.role.as_deref() == Some("model")) {
        let mut calls = content.parts.iter_mut().filter(|p| p.function_call.is_some());
        if let Some(first) = calls.next()
            && first.thought_signature.is_none()
            && calls.all(|p| p.thought_signature.is_none())
        {
            first.thought_signature = Some(SKIP_SIGNATURE_CHECK.to_owned());
        }
    }
}

/// The thought signature an OpenAI tool call carries back, where Google's own
/// OpenAI-compatible endpoint puts it: `extra_content.google.thought_signature`.
fn thought_signature_of(extra: &Map) -> Option<String> {
    extra.get("extra_content")?.get("google")?.get("thought_signature")?.as_str().map(str::to_owned)
}

/// The `extra` of an OpenAI tool call that carries a thought signature.
fn signature_extra(signature: &str) -> Map {
    let mut extra = Map::new();
    extra.insert(
        "extra_content".to_owned(),
        json!({ "google": { "thought_signature": Value::String(signature.to_owned()) } }),
    );
    extra
}

#[cfg(test)]
mod json_tests {
    #[test]
    fn every_request_case_is_written_as_serde_json_writes_it() {
        crate::json::tests::assert_built_cases_written_as_serde_json_writes("gemini", |r| {
            super::request::build(&r).ok().map(|(body, _)| body)
        });
    }
}

#[cfg(test)]
mod signature_tests {
    use super::*;
    use crate::ProviderConfig;

    #[test]
    fn gemini_3_and_later_want_signatures() {
        for (model, wants) in [
            ("gemini-3-pro-preview", true),
            ("gemini-3.1-flash-lite", true),
            ("models/gemini-3-flash", true),
            ("publishers/google/models/gemini-3-pro", true),
            ("gemini-10-ultra", true),
            ("gemini-2.5-pro", false),
            ("gemini-1.5-flash-002", false),
            ("gemini-exp-1206", false),
            ("gemma-3-27b-it", false),
        ] {
            assert_eq!(wants_signatures(model), wants, "{model}");
        }
    }

    /// The `thoughtSignature` of each `functionCall` part of the upstream body, in order.
    fn signatures(model: &str, calls: Value) -> Vec<Option<String>> {
        let config = ProviderConfig::new(ProviderKind::Google, "https://g.test/v1beta", "k", model);
        let gemini = crate::provider(&config).unwrap();
        let request: ChatCompletionRequest = serde_json::from_value(json!({
            "model": "x",
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "assistant", "content": null, "tool_calls": calls},
                {"role": "tool", "tool_call_id": "c1", "content": "18C"},
                {"role": "tool", "tool_call_id": "c2", "content": "21C"},
            ],
        }))
        .unwrap();
        let body: Value =
            serde_json::from_slice(&gemini.build_request(request).unwrap().body).unwrap();
        let parts = body["contents"][1]["parts"].as_array().unwrap().clone();
        parts
            .iter()
            .filter(|p| p.get("functionCall").is_some())
            .map(|p| p.get("thoughtSignature").and_then(Value::as_str).map(str::to_owned))
            .collect()
    }

    #[test]
    fn a_turn_that_lost_its_signature_gets_the_stand_in_on_its_first_call() {
        let call = |id: &str, city: &str| json!({"id": id, "type": "function", "function": {"name": "weather", "arguments": format!(r#"{{"city":"{city}"}}"#)}});
        let unsigned = json!([call("c1", "Paris"), call("c2", "Rome")]);
        let stand_in = Some(SKIP_SIGNATURE_CHECK.to_owned());
        assert_eq!(signatures("gemini-3-pro-preview", unsigned.clone()), [stand_in, None]);
        // A signature the client kept goes back as it is.
        let mut signed = unsigned.clone();
        signed[0]["extra_content"] = json!({"google": {"thought_signature": "CiQBjz1rX"}});
        assert_eq!(
            signatures("gemini-3-pro-preview", signed),
            [Some("CiQBjz1rX".to_owned()), None]
        );
        // Gemini 2.5 does not check them.
        assert_eq!(signatures("gemini-2.5-flash", unsigned), [None, None]);
    }
}

#[cfg(test)]
mod call_id_tests {
    use super::*;
    use crate::ProviderConfig;

    /// The `id` of each `functionCall` and `functionResponse` part of the upstream body.
    fn call_ids(base_url: &str) -> Vec<Option<String>> {
        let config = ProviderConfig::new(ProviderKind::Google, base_url, "k", "gemini-2.5-flash");
        let gemini = crate::provider(&config).unwrap();
        let request: ChatCompletionRequest = serde_json::from_value(json!({
            "model": "x",
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            ],
        }))
        .unwrap();
        let body: Value =
            serde_json::from_slice(&gemini.build_request(request).unwrap().body).unwrap();
        [
            &body["contents"][1]["parts"][0]["functionCall"],
            &body["contents"][2]["parts"][0]["functionResponse"],
        ]
        .iter()
        .map(|p| p.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect()
    }

    /// Vertex AI `v1` has no `id` on `FunctionCall` or `FunctionResponse` and answers a tool
    /// loop that sends one with 400 `Unknown name "id" at 'contents[1].parts[0].function_call'`.
    #[test]
    fn vertex_v1_gets_no_call_ids() {
        let kept = vec![Some("call_1".to_owned()), Some("call_1".to_owned())];
        for (base_url, ids) in [
            ("https://generativelanguage.googleapis.com/v1beta", kept.clone()),
            ("https://aiplatform.googleapis.com/v1beta1/publishers/google", kept),
            ("https://aiplatform.googleapis.com/v1/publishers/google", vec![None, None]),
            (
                "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/publishers/google",
                vec![None, None],
            ),
        ] {
            assert_eq!(call_ids(base_url), ids, "{base_url}");
        }
    }

    /// Vertex AI `v1` pairs calls and results by name and order: results the client gave in
    /// another order than the calls go in the calls' order, or two calls of one function
    /// would get each other's results.
    #[test]
    fn results_go_in_the_order_of_their_calls() {
        let config = ProviderConfig::new(
            ProviderKind::Google,
            "https://aiplatform.googleapis.com/v1/publishers/google",
            "k",
            "gemini-2.5-flash",
        );
        let gemini = crate::provider(&config).unwrap();
        let call = |id: &str, city: &str| json!({"id": id, "type": "function", "function": {"name": "weather", "arguments": format!(r#"{{"city":"{city}"}}"#)}});
        let request: ChatCompletionRequest = serde_json::from_value(json!({
            "model": "x",
            "messages": [
                {"role": "user", "content": "Weather in Paris, Rome and Oslo?"},
                {"role": "assistant", "content": null, "tool_calls": [call("c1", "Paris"), call("c2", "Rome"), call("c3", "Oslo")]},
                {"role": "tool", "tool_call_id": "c3", "content": "Oslo: 5C"},
                {"role": "tool", "tool_call_id": "c1", "content": "Paris: 18C"},
                {"role": "tool", "tool_call_id": "c2", "content": "Rome: 21C"},
            ],
        }))
        .unwrap();
        let body: Value =
            serde_json::from_slice(&gemini.build_request(request).unwrap().body).unwrap();
        let results: Vec<&Value> = body["contents"][2]["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["functionResponse"]["response"]["result"])
            .collect();
        assert_eq!(results, ["Paris: 18C", "Rome: 21C", "Oslo: 5C"]);
    }
}

#[cfg(test)]
mod penalty_tests {
    use super::*;
    use crate::ProviderConfig;

    /// The body's `generationConfig` and the dropped fields, for a request with both penalties.
    fn built(gemini: &dyn Provider) -> (Value, Vec<String>) {
        let request: ChatCompletionRequest = serde_json::from_value(json!({
            "model": "x",
            "messages": [{"role": "user", "content": "Hi"}],
            "presence_penalty": 0.5,
            "frequency_penalty": 0.3,
        }))
        .unwrap();
        let up = gemini.build_request(request).unwrap();
        let body: Value = serde_json::from_slice(&up.body).unwrap();
        (body["generationConfig"].clone(), up.dropped)
    }

    /// Gemini 2.5 refuses non-zero penalties; once it said so, they are left out and named.
    #[test]
    fn penalties_are_left_out_once_the_model_refuses_them() {
        let config = ProviderConfig::new(
            ProviderKind::Google,
            "https://generativelanguage.googleapis.com/v1beta",
            "k",
            "gemini-2.5-flash",
        );
        let gemini = crate::provider(&config).unwrap();
        let (config, dropped) = built(&*gemini);
        assert_eq!(config["presencePenalty"], json!(0.5));
        assert_eq!(config["frequencyPenalty"], json!(0.3));
        assert!(dropped.is_empty());

        let other = br#"{"error":{"code":400,"message":"Invalid value at 'generation_config.temperature'","status":"INVALID_ARGUMENT"}}"#;
        assert!(!gemini.refused(400, other, false));
        let refusal = br#"{
  "error": {
    "code": 400,
    "message": "Penalty is not enabled for models/gemini-2.5-flash",
    "status": "INVALID_ARGUMENT"
  }
}
"#;
        assert!(!gemini.refused(500, refusal, false), "not that status");
        assert!(gemini.refused(400, refusal, false));

        let (config, dropped) = built(&*gemini);
        assert_eq!(config.get("presencePenalty"), None);
        assert_eq!(config.get("frequencyPenalty"), None);
        assert_eq!(dropped, ["presence_penalty", "frequency_penalty"]);
    }
}
