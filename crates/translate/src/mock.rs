//! The built-in mock model: answers locally and deterministically, so the proxy serves a
//! working model with no configuration, and tests need no upstream.
//!
//! It echoes the last user message; when the request offers tools (and `tool_choice` is not
//! `none`) it calls one, with arguments made from the tool's required parameters; after a tool
//! result it says what the tool returned. Streams go word by word. Usage counts words as
//! tokens. A token limit below the answer's length cuts it and finishes with `length`.

use bytes::{Bytes, BytesMut};
use serde_json::{Map as JsonMap, Value, json};
use uniproxy_wire::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice, ChunkChoice, Delta,
    FinishReason, FunctionCall, FunctionCallDelta, Map, Message, MessageContent, Role, ToolCall,
    ToolCallDelta, ToolChoice, ToolChoiceMode, Usage,
};

use crate::json_bytes;
use crate::openai_compat::{OpenAiStream, cap_tokens, translate_openai_error};
use crate::sse::{self, SseEvent};
use crate::{
    Assembled, LocalAnswer, Provider, ProviderConfig, ProviderKind, ResponseContext,
    StreamTranslator, TranslateError, Translated, UpstreamRequest,
};

/// The mock provider.
#[derive(Debug)]
pub struct Mock {
    config: ProviderConfig,
}

/// What the mock decided to answer.
enum Answer {
    Text { words: Vec<String>, finish: FinishReason },
    Call { id: String, name: String, arguments: String },
}

impl Mock {
    /// A mock answering as `config.model`, limited to `config.max_tokens` words.
    pub fn new(config: ProviderConfig) -> Self {
        Mock { config }
    }

    fn answer(&self, request: &ChatCompletionRequest) -> Answer {
        let last = request.messages.last();
        let wants_tool = request.has_tools()
            && !matches!(request.tool_choice, Some(ToolChoice::Mode(ToolChoiceMode::None)))
            && !matches!(last.map(|m| &m.role), Some(Role::Tool | Role::Function));
        if wants_tool && let Some((name, params)) = chosen_tool(request) {
            return Answer::Call {
                id: format!("call_mock_{}", request.messages.len()),
                arguments: arguments_for(params, &last_user_text(request)).to_string(),
                name,
            };
        }
        let text = match last {
            Some(m) if matches!(m.role, Role::Tool | Role::Function) => {
                format!("The tool returned: {}", content_of(m))
            }
            _ => {
                let t = last_user_text(request);
                if t.trim().is_empty() {
                    "Hello from the uniproxy mock model.".to_owned()
                } else {
                    t
                }
            }
        };
        let mut words = split_words(&text);
        let limit = request.token_limit().unwrap_or(u32::MAX).min(self.config.max_tokens) as usize;
        let finish = if words.len() > limit {
            words.truncate(limit);
            FinishReason::Length
        } else {
            FinishReason::Stop
        };
        Answer::Text { words, finish }
    }
}

fn content_of(m: &Message) -> String {
    m.content().map(MessageContent::joined_text).unwrap_or_default()
}

fn last_user_text(request: &ChatCompletionRequest) -> String {
    request.messages.iter().rev().find(|m| m.role == Role::User).map(content_of).unwrap_or_default()
}

/// Splits text into words that keep their following whitespace, so they join back exactly.
fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_space = false;
    for ch in text.chars() {
        if ch.is_whitespace() {
            in_space = true;
        } else if in_space && !current.is_empty() {
            words.push(std::mem::take(&mut current));
            in_space = false;
        }
        current.push(ch);
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

fn chosen_tool(request: &ChatCompletionRequest) -> Option<(String, Option<&Value>)> {
    let named = match &request.tool_choice {
        Some(ToolChoice::Named(n)) => Some(n.function.name.as_str()),
        _ => None,
    };
    let functions = request
        .tools
        .iter()
        .flatten()
        .filter_map(|t| t.function.as_ref())
        .chain(request.functions.iter().flatten());
    let mut first = None;
    for f in functions {
        if named.is_none_or(|n| n == f.name) {
            first = Some((f.name.clone(), f.parameters.as_ref()));
            break;
        }
    }
    first
}

/// Arguments with every required parameter set to a value of its type.
fn arguments_for(params: Option<&Value>, text: &str) -> Value {
    let mut args = JsonMap::new();
    let Some(schema) = params else { return Value::Object(args) };
    let props = schema.get("properties").and_then(Value::as_object);
    for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
        let Some(name) = name.as_str() else { continue };
        let ty =
            props.and_then(|p| p.get(name)).and_then(|p| p.get("type")).and_then(Value::as_str);
        let value = match ty {
            Some("integer" | "number") => json!(0),
            Some("boolean") => json!(false),
            Some("array") => json!([]),
            Some("object") => json!({}),
            _ => json!(text),
        };
        args.insert(name.to_owned(), value);
    }
    Value::Object(args)
}

fn usage(request: &ChatCompletionRequest, completion: usize) -> Usage {
    let prompt: usize =
        request.messages.iter().map(|m| split_words(&content_of(m)).len() + 1).sum();
    Usage {
        prompt_tokens: prompt as u64,
        completion_tokens: completion as u64,
        total_tokens: (prompt + completion) as u64,
        ..Default::default()
    }
}

/// Placeholders the translators replace with the response context's id and time.
const ID: &str = "chatcmpl-mock";

impl Provider for Mock {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Mock
    }

    fn build_request(
        &self,
        mut request: ChatCompletionRequest,
    ) -> Result<UpstreamRequest, TranslateError> {
        request.model.clone_from(&self.config.model);
        let max = self.config.max_tokens;
        cap_tokens(&mut request, max, |r| r.max_tokens = Some(max));
        let answer = self.answer(&request);
        let model = self.config.model.as_str();
        let body = if request.is_stream() {
            stream_body(&request, &answer, model)
        } else {
            let (message, finish, tokens) = match &answer {
                Answer::Text { words, finish } => {
                    (Message::answer(words.concat()), finish.clone(), words.len())
                }
                Answer::Call { id, name, arguments } => {
                    let mut m = Message::answer("");
                    m.content = Some(None);
                    m.tool_calls = Some(vec![ToolCall {
                        id: id.clone(),
                        kind: "function".to_owned(),
                        function: Some(FunctionCall {
                            name: name.clone(),
                            arguments: arguments.clone(),
                            extra: Map::new(),
                        }),
                        extra: Map::new(),
                    }]);
                    (m, FinishReason::ToolCalls, split_words(arguments).len())
                }
            };
            let completion = ChatCompletion {
                id: ID.to_owned(),
                object: "chat.completion".to_owned(),
                created: 0,
                model: model.to_owned(),
                choices: vec![Choice {
                    index: 0,
                    message,
                    finish_reason: Some(Some(finish)),
                    logprobs: Some(None),
                    extra: Map::new(),
                }],
                usage: Some(usage(&request, tokens)),
                system_fingerprint: None,
                service_tier: None,
                extra: Map::new(),
            };
            json_bytes(ProviderKind::Mock, &completion, 0)?
        };
        let sent = json_bytes(ProviderKind::Mock, &request, 0)?;
        let mut up = UpstreamRequest::post(
            "mock://local/chat/completions".to_owned(),
            http::HeaderMap::new(),
            sent,
            Vec::new(),
        );
        up.local_answer = Some(LocalAnswer { status: 200, body });
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
        let mut completion: ChatCompletion = uniproxy_wire::from_bytes(&body)
            .map_err(|source| TranslateError::Malformed { provider: ProviderKind::Mock, source })?;
        completion.id.clone_from(&ctx.id);
        completion.created = ctx.created;
        let body = json_bytes(ProviderKind::Mock, &completion, 0)?;
        Ok(Translated { completion, body })
    }

    fn translate_error(&self, status: u16, body: &[u8]) -> TranslateError {
        translate_openai_error(status, body)
    }

    fn stream(&self, ctx: &ResponseContext) -> Box<dyn StreamTranslator> {
        Box::new(MockStream { ctx: ctx.clone(), inner: OpenAiStream::new(ctx) })
    }
}

fn stream_body(request: &ChatCompletionRequest, answer: &Answer, model: &str) -> Bytes {
    let chunk = |delta: Delta, finish: Option<FinishReason>| {
        let mut c = ChatCompletionChunk::new(ID, 0, model);
        let mut choice = ChunkChoice::new(0, delta);
        choice.finish_reason = Some(finish);
        c.choices.push(choice);
        c
    };
    let mut chunks = vec![chunk(
        Delta {
            role: Some(Role::Assistant),
            content: Some(Some(String::new())),
            ..Default::default()
        },
        None,
    )];
    let (finish, tokens) = match answer {
        Answer::Text { words, finish } => {
            for w in words {
                chunks.push(chunk(
                    Delta { content: Some(Some(w.clone())), ..Default::default() },
                    None,
                ));
            }
            (finish.clone(), words.len())
        }
        Answer::Call { id, name, arguments } => {
            let call = |id: Option<String>, name: Option<String>, args: &str| ToolCallDelta {
                index: 0,
                kind: id.as_ref().map(|_| "function".to_owned()),
                id,
                function: Some(FunctionCallDelta {
                    name,
                    arguments: Some(args.to_owned()),
                    extra: Map::new(),
                }),
                extra: Map::new(),
            };
            chunks.push(chunk(
                Delta {
                    tool_calls: Some(vec![call(Some(id.clone()), Some(name.clone()), "")]),
                    ..Default::default()
                },
                None,
            ));
            chunks.push(chunk(
                Delta { tool_calls: Some(vec![call(None, None, arguments)]), ..Default::default() },
                None,
            ));
            (FinishReason::ToolCalls, split_words(arguments).len())
        }
    };
    chunks.push(chunk(Delta::default(), Some(finish)));
    let mut usage_chunk = ChatCompletionChunk::new(ID, 0, model);
    usage_chunk.usage = Some(Some(usage(request, tokens)));
    chunks.push(usage_chunk);
    let mut out = BytesMut::new();
    for c in &chunks {
        out.extend_from_slice(&sse::encode(c));
    }
    out.extend_from_slice(sse::DONE_FRAME);
    out.freeze()
}

/// The mock's stream: its own chunks, given the response's id and time.
struct MockStream {
    ctx: ResponseContext,
    inner: OpenAiStream,
}

impl StreamTranslator for MockStream {
    fn push(&mut self, event: &SseEvent) -> Result<Vec<Bytes>, TranslateError> {
        let Ok(mut chunk) = uniproxy_wire::from_bytes::<ChatCompletionChunk>(&event.data) else {
            return self.inner.push(event);
        };
        chunk.id.clone_from(&self.ctx.id);
        chunk.created = self.ctx.created;
        let event = SseEvent::new(None, encode_json(&chunk));
        self.inner.push(&event)
    }

    fn finish(&mut self) -> Result<Vec<Bytes>, TranslateError> {
        self.inner.finish()
    }

    fn is_done(&self) -> bool {
        self.inner.is_done()
    }

    fn assembled(&self) -> &Assembled {
        self.inner.assembled()
    }
}

fn encode_json(chunk: &ChatCompletionChunk) -> Bytes {
    let framed = sse::encode(chunk);
    // `encode` frames as `data: …\n\n`; the translator wants the JSON alone.
    framed.slice(6..framed.len().saturating_sub(2))
}
