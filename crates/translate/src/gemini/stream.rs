//! Gemini `streamGenerateContent?alt=sse` events in, OpenAI `chat.completion.chunk`s out.
//!
//! Each event is a whole `GenerateContentResponse` holding the next piece of each candidate.
//! Gemini sends no end marker and repeats `finishReason` and cumulative `usageMetadata` as it
//! likes, so the finish chunks, the usage chunk and `[DONE]` come from [`finish`], when the
//! body ends.
//!
//! [`finish`]: crate::StreamTranslator::finish

use bytes::Bytes;
use uniproxy_wire::{
    ChatCompletionChunk, ChunkChoice, Delta, ErrorResponse, FinishReason, FunctionCallDelta, Map,
    Role, ToolCallDelta, Usage,
};

use super::response::{
    CallIds, block_message, candidate_parts, error_response, finish_reason, usage,
};
use super::wire::GenerateContentResponse;
use crate::sse::{self, SseEvent, TextFrame};
use crate::{Assembled, ProviderKind, ResponseContext, StreamTranslator, TranslateError};

/// What the stream knows of one candidate.
#[derive(Debug, Clone)]
struct CandidateState {
    index: u32,
    /// Whether a chunk with `role: assistant` went out.
    started: bool,
    /// Tool calls so far: the next call's index.
    calls: u32,
    /// The last finish reason Gemini gave, mapped as if no function was called.
    finish: Option<FinishReason>,
    /// The frame of this candidate's text chunks (see [`TextFrame`]), once one was sent.
    text_frame: Option<TextFrame>,
}

/// The Gemini stream state machine. No I/O, no clock: ids and times come from the context.
#[derive(Debug)]
pub(crate) struct GeminiStream {
    ctx: ResponseContext,
    /// `modelVersion`, once an event has named it.
    model: Option<String>,
    ids: CallIds,
    candidates: Vec<CandidateState>,
    usage: Option<Usage>,
    assembled: Assembled,
    done: bool,
}

impl GeminiStream {
    pub(crate) fn new(ctx: &ResponseContext) -> Self {
        GeminiStream {
            ctx: ctx.clone(),
            model: None,
            ids: CallIds::new(ctx),
            candidates: Vec::new(),
            usage: None,
            assembled: Assembled::new(ctx.id.clone(), ctx.created, String::new()),
            done: false,
        }
    }

    fn candidate(&mut self, index: u32) -> &mut CandidateState {
        let pos = match self.candidates.iter().position(|c| c.index == index) {
            Some(pos) => pos,
            None => {
                self.candidates.push(CandidateState {
                    index,
                    started: false,
                    calls: 0,
                    finish: None,
                    text_frame: None,
                });
                self.candidates.len() - 1
            }
        };
        &mut self.candidates[pos]
    }

    fn chunk(&self) -> ChatCompletionChunk {
        let model = self.model.as_deref().unwrap_or(&self.ctx.model);
        ChatCompletionChunk::new(self.ctx.id.clone(), self.ctx.created, model)
    }

    /// A chunk with one choice's delta; the candidate's first carries the role.
    fn delta_chunk(&mut self, index: u32, mut delta: Delta) -> ChatCompletionChunk {
        let state = self.candidate(index);
        if !state.started {
            state.started = true;
            delta.role = Some(Role::Assistant);
        }
        let mut chunk = self.chunk();
        chunk.choices.push(ChunkChoice::new(index, delta));
        chunk
    }

    fn emit(&mut self, chunks: Vec<ChatCompletionChunk>) -> Vec<Bytes> {
        chunks.iter().map(|c| self.emit_one(c)).collect()
    }

    fn emit_one(&mut self, chunk: &ChatCompletionChunk) -> Bytes {
        self.assembled.add_chunk(chunk);
        sse::encode(chunk)
    }

    /// A chunk of a started candidate with only `text` in it, written from the candidate's
    /// [`TextFrame`]: the bytes [`emit_one`](Self::emit_one) would write for it.
    fn text_chunk(&mut self, index: u32, text: &str) -> Bytes {
        let head = self.chunk();
        let state = self.candidate(index);
        if state.text_frame.is_none() {
            state.text_frame = TextFrame::new(head, index);
        }
        match state.text_frame.as_ref().and_then(|f| f.with(text)) {
            Some(frame) => {
                let model = self.model.as_deref().unwrap_or(&self.ctx.model);
                self.assembled.add_content(&self.ctx.id, self.ctx.created, model, index, text);
                frame
            }
            None => {
                let delta = Delta { content: Some(Some(text.to_owned())), ..Default::default() };
                let chunk = self.delta_chunk(index, delta);
                self.emit_one(&chunk)
            }
        }
    }

    fn fail(&mut self, error: ErrorResponse) -> Vec<Bytes> {
        let frame = sse::encode(&error);
        if self.assembled.usage.is_none() {
            self.assembled.usage.clone_from(&self.usage);
        }
        self.assembled.error = Some(error);
        self.done = true;
        vec![frame]
    }

    fn event(&mut self, r: GenerateContentResponse) -> Vec<Bytes> {
        if let Some(error) = &r.error {
            let status = error.code.and_then(|c| u16::try_from(c).ok()).unwrap_or(500);
            return self.fail(error_response(error, status));
        }
        if self.model.is_none() && r.model_version.is_some() {
            self.model.clone_from(&r.model_version);
            // The frames hold the model.
            self.candidates.iter_mut().for_each(|c| c.text_frame = None);
        }
        if let Some(u) = &r.usage_metadata {
            self.usage = Some(usage(u));
        }
        let mut out = Vec::new();
        for (pos, c) in r.candidates().iter().enumerate() {
            let index = c.index.unwrap_or(pos as u32);
            let parts = candidate_parts(c, &mut self.ids);
            if let Some(f) = &c.finish_reason {
                self.candidate(index).finish = Some(finish_reason(f, false));
            }
            let state = self.candidate(index);
            if state.started
                && parts.reasoning.is_empty()
                && parts.calls.is_empty()
                && !parts.text.is_empty()
            {
                out.push(self.text_chunk(index, &parts.text));
                continue;
            }
            let first_call = state.calls;
            let mut delta = Delta::default();
            if !parts.reasoning.is_empty() {
                delta.reasoning_content = Some(Some(parts.reasoning));
            }
            if !parts.text.is_empty() {
                delta.content = Some(Some(parts.text));
            }
            if !parts.calls.is_empty() {
                let calls: Vec<ToolCallDelta> = parts
                    .calls
                    .into_iter()
                    .zip(first_call..)
                    .map(|(call, i)| ToolCallDelta {
                        index: i,
                        id: Some(call.id),
                        kind: Some(call.kind),
                        function: Some(FunctionCallDelta {
                            name: Some(call.function.name),
                            arguments: Some(call.function.arguments),
                            extra: Map::new(),
                        }),
                        extra: call.extra,
                    })
                    .collect();
                self.candidate(index).calls += calls.len() as u32;
                delta.tool_calls = Some(calls);
            }
            if delta != Delta::default() {
                let chunk = self.delta_chunk(index, delta);
                out.push(self.emit_one(&chunk));
            }
        }
        if r.candidates().is_empty()
            && let Some(feedback) = r.prompt_feedback.as_ref().filter(|f| f.is_block())
        {
            let delta = Delta {
                content: Some(None),
                refusal: Some(Some(block_message(feedback))),
                ..Default::default()
            };
            let chunk = self.delta_chunk(0, delta);
            out.push(self.emit_one(&chunk));
            self.candidate(0).finish = Some(FinishReason::ContentFilter);
        }
        out
    }
}

impl StreamTranslator for GeminiStream {
    fn push(&mut self, event: &SseEvent) -> Result<Vec<Bytes>, TranslateError> {
        if self.done {
            return Ok(Vec::new());
        }
        let data = event.data.trim_ascii();
        if data.is_empty() || data == b"[DONE]" {
            return Ok(Vec::new());
        }
        let response: GenerateContentResponse =
            uniproxy_wire::from_bytes(data).map_err(|source| TranslateError::Malformed {
                provider: ProviderKind::Google,
                source,
            })?;
        Ok(self.event(response))
    }

    fn finish(&mut self) -> Result<Vec<Bytes>, TranslateError> {
        if self.done {
            return Ok(Vec::new());
        }
        if self.candidates.iter().all(|c| c.finish.is_none()) {
            // No end marker and no finish reason: the body was cut (or ended with an error
            // object the SSE decoder cannot see, as Vertex sends them bare).
            return Ok(self.fail(ErrorResponse::new(
                "the upstream stream ended before the answer was complete",
                "upstream_error",
            )));
        }
        self.done = true;
        let mut states = self.candidates.clone();
        states.sort_by_key(|c| c.index);
        let mut chunks = Vec::new();
        for state in states {
            if !state.started {
                chunks.push(self.delta_chunk(state.index, Delta::default()));
            }
            let reason = match state.finish.unwrap_or(FinishReason::Stop) {
                FinishReason::Stop if state.calls > 0 => FinishReason::ToolCalls,
                other => other,
            };
            let mut choice = ChunkChoice::new(state.index, Delta::default());
            choice.finish_reason = Some(Some(reason));
            let mut chunk = self.chunk();
            chunk.choices.push(choice);
            chunks.push(chunk);
        }
        match self.usage.clone() {
            Some(u) if self.ctx.include_usage => {
                let mut chunk = self.chunk();
                chunk.usage = Some(Some(u));
                chunks.push(chunk);
            }
            // The log keeps the usage even when the client did not ask for it.
            u => self.assembled.usage = u,
        }
        let mut frames = self.emit(chunks);
        frames.push(Bytes::from_static(sse::DONE_FRAME));
        Ok(frames)
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

    fn context() -> ResponseContext {
        ResponseContext {
            id: "chatcmpl-1".to_owned(),
            created: 1_700_000_000,
            model: "asked".to_owned(),
            include_usage: false,
        }
    }

    #[test]
    fn text_with_a_call_is_no_text_chunk() {
        let mut s = GeminiStream::new(&context());
        let mut chunks = Vec::new();
        for parts in [
            r#"[{"text":"Let me look."}]"#,
            r#"[{"text":" Calling."},{"functionCall":{"name":"get_weather","args":{"city":"Paris"}}}]"#,
        ] {
            let data = format!(
                r#"{{"candidates":[{{"content":{{"parts":{parts},"role":"model"}},"index":0}}]}}"#
            );
            for frame in s.push(&SseEvent::new(None, data)).unwrap() {
                let json = frame.strip_prefix(b"data: ").unwrap();
                chunks.push(serde_json::from_slice::<ChatCompletionChunk>(json).unwrap());
            }
        }
        let delta = chunks[1].choices[0].delta.as_ref().unwrap();
        assert_eq!(delta.content, Some(Some(" Calling.".to_owned())));
        let calls = delta.tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].function.as_ref().unwrap().name.as_deref(), Some("get_weather"));
    }

    proptest::proptest! {
        /// Text chunks written from the candidates' frames are the chunks `sse::encode` writes,
        /// whichever candidate speaks and whenever `modelVersion` first comes.
        #[test]
        fn text_chunks_are_the_encoded_chunks(
            events in proptest::collection::vec(
                (
                    0u32..3,
                    "[a-z \"\\\\\n\u{1}é😀]{0,10}",
                    proptest::option::of("gemini-[a-z\"]{1,3}"),
                    proptest::option::of("[a-z ]{0,4}"),
                ),
                1..12,
            ),
        ) {
            let mut s = GeminiStream::new(&context());
            let mut model: Option<String> = None;
            let mut started = [false; 3];
            let mut texts = [String::new(), String::new(), String::new()];
            for (index, text, version, thought) in &events {
                // A thought first, when there is one, as Gemini sends them.
                let mut parts = Vec::new();
                if let Some(thought) = thought {
                    parts.push(serde_json::json!({"text": thought, "thought": true}));
                }
                parts.push(serde_json::json!({"text": text}));
                let mut event = serde_json::json!({
                    "candidates": [{"content": {"parts": parts, "role": "model"}, "index": index}],
                    "usageMetadata": {"promptTokenCount": 16, "candidatesTokenCount": 4, "totalTokenCount": 20},
                });
                if let Some(version) = version {
                    event["modelVersion"] = serde_json::json!(version);
                }
                let data = Bytes::from(event.to_string());
                let got = s.push(&SseEvent::new(None, data)).unwrap();
                if model.is_none() {
                    model.clone_from(version);
                }
                let mut want = Vec::new();
                let thought = thought.as_deref().unwrap_or_default();
                if !text.is_empty() || !thought.is_empty() {
                    let i = *index as usize;
                    let mut delta = Delta::default();
                    if !text.is_empty() {
                        delta.content = Some(Some(text.clone()));
                    }
                    if !thought.is_empty() {
                        delta.reasoning_content = Some(Some(thought.to_owned()));
                    }
                    if !started[i] {
                        started[i] = true;
                        delta.role = Some(Role::Assistant);
                    }
                    let mut chunk = ChatCompletionChunk::new("chatcmpl-1", 1_700_000_000, model.as_deref().unwrap_or("asked"));
                    chunk.choices.push(ChunkChoice::new(*index, delta));
                    want.push(sse::encode(&chunk));
                    texts[i].push_str(text);
                }
                proptest::prop_assert_eq!(got, want);
            }
            for c in &s.assembled.choices {
                proptest::prop_assert_eq!(&c.content, &texts[c.index as usize]);
            }
        }
    }
}
