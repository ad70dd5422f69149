//! Gemini `streamGenerateContent?alt=sse` events in, OpenAI `chat.completion.chunk`s out.
//!
//! Each event is a whole `GenerateContentResponse` holding the next piece of each candidate.
//! Gemini sends no end marker and repeats `finishReason` and cumulative `usageMetadata` as it
//! likes, so the finish chunks, the usage chunk and `[DONE]` come from [`finish`], when the
//! body ends; or, for a stream that is no answer (every candidate ended without text or calls
//! for a reason that is no normal end, or held only parts a chunk cannot carry), the error
//! event a whole answer's 502 would be.
//!
//! [`finish`]: crate::StreamTranslator::finish

use std::borrow::Cow;

use bytes::Bytes;
use uniproxy_wire::{
    ChatCompletionChunk, ChunkChoice, Delta, ErrorResponse, FinishReason, FunctionCallDelta, Map,
    Role, ToolCall, ToolCallDelta,
};

use super::response::{
    CallIds, Uncarried, block_message, candidate_parts, empty_answer, empty_answer_error,
    error_response, finish_reason, usage, write_usage,
};
use super::wire::{GeminiFinishReason, GenerateContentResponse, UsageMetadata};
use crate::CallShape;
use crate::assemble::Places;
use crate::scan::{
    Fill, Holes, Reader, TemplateSlot, count, member_value, named_fields, string_at, unique_string,
};
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
    /// Whether text or a call went out: the candidate answered something.
    answered: bool,
    /// The last finish reason Gemini gave, as it gave it, and its last `finishMessage`: a
    /// candidate that answered nothing may be no answer ([`empty_answer`]).
    reason: Option<GeminiFinishReason>,
    finish_message: Option<String>,
    /// The kinds of the parts left out.
    uncarried: Vec<Uncarried>,
}

/// An event read in full that held one candidate's one piece of text and nothing else the
/// stream reads but the usage, kept to read the next ones: those that are its bytes with
/// another text and other counts in `usageMetadata` (see [`Holes`]). Every event of a Gemini
/// stream repeats the usage, its counts growing, so a template must let them change; they
/// are read by [`read_usage`], and anything it is unsure of goes to serde.
#[derive(Debug)]
struct EventTemplate {
    holes: Holes,
    /// Which hole holds the text (the other, if any, holds `usageMetadata`).
    text: usize,
    /// The candidate's index.
    index: u32,
    /// The text is a thought.
    thought: bool,
    /// Where the holes of the event being matched are (kept to reuse the allocation).
    spans: Vec<(usize, usize)>,
}

impl EventTemplate {
    /// The template of `json`, parsed as `r`, when `r` is such an event.
    fn new(json: &str, r: &GenerateContentResponse) -> Option<Self> {
        // An error ends the stream; a prompt's feedback beside candidates is not read; a
        // finish reason, fixed in the template, is the same in every event that fits it, and
        // taken from the first.
        let [c] = r.candidates() else { return None };
        let [part] = c.content.as_ref()?.parts.as_slice() else { return None };
        if part.function_call.is_some() {
            return None;
        }
        let mut holes = vec![(unique_string(json, part.text.as_deref()?)?, Fill::String)];
        if r.usage_metadata.is_some() {
            holes.push((member_value(json, "usageMetadata")?, Fill::Member));
            holes.sort_by_key(|&((start, _), _)| start);
        }
        Some(EventTemplate {
            holes: Holes::new(json, &holes)?,
            text: holes.iter().position(|&(_, fill)| fill == Fill::String)?,
            index: c.index.unwrap_or(0),
            thought: part.thought == Some(true),
            spans: Vec::with_capacity(2),
        })
    }
}

/// `usageMetadata` as serde reads it into [`UsageMetadata`], for what [`usage`] takes from it;
/// other members are checked as serde checks what it keeps in `extra` ([`Reader::skip_kept`]),
/// which `usage` does not read. `None` for a member given twice, and for whatever the reader
/// leaves to serde.
fn read_usage(r: &mut Reader<'_>) -> Option<UsageMetadata> {
    let mut usage = UsageMetadata::default();
    let counts: &mut [(&[u8], &mut Option<u64>)] = &mut [
        (b"promptTokenCount", &mut usage.prompt_token_count),
        (b"candidatesTokenCount", &mut usage.candidates_token_count),
        (b"thoughtsTokenCount", &mut usage.thoughts_token_count),
        (b"cachedContentTokenCount", &mut usage.cached_content_token_count),
        (b"toolUsePromptTokenCount", &mut usage.tool_use_prompt_token_count),
        (b"totalTokenCount", &mut usage.total_token_count),
    ];
    named_fields(r, counts, count, |r, _| r.skip_kept())?;
    Some(usage)
}

/// The Gemini stream state machine. No I/O, no clock: ids and times come from the context.
#[derive(Debug)]
pub(crate) struct GeminiStream {
    ctx: ResponseContext,
    /// How the client takes the calls.
    shape: CallShape,
    /// `modelVersion`, once an event has named it.
    model: Option<String>,
    ids: CallIds,
    candidates: Vec<CandidateState>,
    /// Where the candidates not at the place of their index are (an upstream's numbers are
    /// its own: found without a scan, whatever they are).
    candidates_at: Places,
    assembled: Assembled,
    done: bool,
    /// The last text event read in full (see [`EventTemplate`]).
    template: TemplateSlot<EventTemplate>,
}

impl GeminiStream {
    pub(crate) fn new(ctx: &ResponseContext) -> Self {
        GeminiStream {
            ctx: ctx.clone(),
            shape: CallShape::of(ctx),
            model: None,
            ids: CallIds::new(ctx),
            candidates: Vec::new(),
            candidates_at: Places::default(),
            assembled: Assembled::new(ctx.id.clone(), ctx.created, String::new()),
            done: false,
            template: TemplateSlot::default(),
        }
    }

    fn candidate(&mut self, index: u32) -> &mut CandidateState {
        let new = || CandidateState {
            index,
            started: false,
            calls: 0,
            finish: None,
            text_frame: None,
            answered: false,
            reason: None,
            finish_message: None,
            uncarried: Vec::new(),
        };
        self.candidates_at.find_or_push(&mut self.candidates, index, new)
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
        if self.candidate(index).text_frame.is_none() {
            let head = self.chunk();
            self.candidate(index).text_frame = TextFrame::new(head, index);
        }
        let state = self.candidate(index);
        match state.text_frame.as_ref().map(|f| f.with(text)) {
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

    /// The chunk of what a candidate said in one event, if it said anything.
    fn parts_chunk(
        &mut self,
        index: u32,
        text: &str,
        reasoning: &str,
        calls: Vec<ToolCall>,
        out: &mut Vec<Bytes>,
    ) {
        let state = self.candidate(index);
        state.answered |= !text.is_empty() || !calls.is_empty();
        if state.started && reasoning.is_empty() && calls.is_empty() && !text.is_empty() {
            out.push(self.text_chunk(index, text));
            return;
        }
        let first_call = state.calls;
        let mut delta = Delta::default();
        if !reasoning.is_empty() {
            delta.reasoning_content = Some(Some(reasoning.to_owned()));
        }
        if !text.is_empty() {
            delta.content = Some(Some(text.to_owned()));
        }
        if self.shape == CallShape::Legacy {
            // One call, whole, and none after it (see `CallShape::Legacy`).
            if first_call == 0
                && let Some(f) = calls.into_iter().next().and_then(|c| c.function)
            {
                delta.function_call = Some(FunctionCallDelta {
                    name: Some(f.name),
                    arguments: Some(f.arguments),
                    extra: Map::new(),
                });
                self.candidate(index).calls = 1;
            }
        } else if !calls.is_empty() {
            let calls: Vec<ToolCallDelta> = calls
                .into_iter()
                .zip(first_call..)
                .map(|(call, i)| ToolCallDelta {
                    index: i,
                    id: Some(call.id),
                    kind: Some(call.kind),
                    function: call.function.map(|f| FunctionCallDelta {
                        name: Some(f.name),
                        arguments: Some(f.arguments),
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

    /// Keeps a text event read in full as the template for the next ones.
    fn keep_template(&mut self, json: &str, r: &GenerateContentResponse) {
        self.template.keep(|| EventTemplate::new(json, r));
    }

    /// The event `json` as the template reads it: the candidate's index, whether its text is a
    /// thought, the text, and the usage when the event carries one.
    fn templated<'a>(
        &mut self,
        json: &'a str,
    ) -> Option<(u32, bool, Cow<'a, str>, Option<UsageMetadata>)> {
        let t = self.template.get_mut()?;
        let mut usage = None;
        t.holes.matches(json, &mut t.spans, |r| {
            usage = r.nullable(read_usage)?;
            Some(())
        })?;
        let text = string_at(json.as_bytes(), *t.spans.get(t.text)?)?;
        let (index, thought) = (t.index, t.thought);
        self.template.fit();
        Some((index, thought, text, usage))
    }

    /// What [`event`](Self::event) does with an event the template read.
    fn templated_event(
        &mut self,
        index: u32,
        thought: bool,
        text: &str,
        usage_metadata: Option<UsageMetadata>,
    ) -> Vec<Bytes> {
        if let Some(u) = &usage_metadata {
            self.take_usage(u);
        }
        let (text, reasoning) = if thought { ("", text) } else { (text, "") };
        let mut out = Vec::with_capacity(1);
        self.parts_chunk(index, text, reasoning, Vec::new(), &mut out);
        out
    }

    /// Takes an event's usage (cumulative, as Google reports it) into the record: a stream
    /// that ends early (a client that leaves) still records its tokens.
    fn take_usage(&mut self, u: &UsageMetadata) {
        match &mut self.assembled.usage {
            Some(have) => write_usage(have, u),
            none => *none = Some(usage(u)),
        }
    }

    /// Why the stream is no answer, when no candidate answered anything and each is no answer
    /// ([`empty_answer`]; the lowest index's reason): it then ends with the error a whole
    /// answer gets, not with empty `stop`s. A candidate that answered keeps the others' finish
    /// as before.
    fn empty_answer(&self) -> Option<String> {
        let mut first: Option<(u32, String)> = None;
        for c in &self.candidates {
            if c.answered {
                return None;
            }
            let why = empty_answer(c.reason.as_ref(), c.finish_message.as_deref(), &c.uncarried)?;
            if first.as_ref().is_none_or(|(i, _)| c.index < *i) {
                first = Some((c.index, why));
            }
        }
        first.map(|(_, why)| why)
    }

    /// Ends the stream with an error frame; `status`, for an error the upstream reported, the
    /// HTTP status it stands for ([`Assembled::error_status`]).
    fn fail(&mut self, error: ErrorResponse, status: Option<u16>) -> Vec<Bytes> {
        let frame = sse::encode(&error);
        if self.assembled.model.is_empty() {
            // No chunk went out to name it: the record still says which model failed.
            self.assembled.model = self.model.as_deref().unwrap_or(&self.ctx.model).to_owned();
        }
        self.assembled.error = Some(error);
        self.assembled.error_status = status;
        self.done = true;
        vec![frame]
    }

    fn event(&mut self, r: GenerateContentResponse) -> Vec<Bytes> {
        if let Some(error) = &r.error {
            let status = error.code.and_then(|c| u16::try_from(c).ok()).unwrap_or(500);
            return self.fail(error_response(error, status), Some(status));
        }
        if self.model.is_none() && r.model_version.is_some() {
            self.model.clone_from(&r.model_version);
            // The frames hold the model.
            self.candidates.iter_mut().for_each(|c| c.text_frame = None);
        }
        if let Some(u) = &r.usage_metadata {
            self.take_usage(u);
        }
        let mut out = Vec::new();
        for (pos, c) in r.candidates().iter().enumerate() {
            let index = c.index.unwrap_or(pos as u32);
            let parts = candidate_parts(c, &mut self.ids);
            let state = self.candidate(index);
            if let Some(f) = &c.finish_reason {
                state.finish = Some(finish_reason(f, None));
                state.reason = Some(f.clone());
            }
            if c.finish_message.is_some() {
                state.finish_message.clone_from(&c.finish_message);
            }
            for kind in parts.uncarried {
                kind.add_to(&mut state.uncarried);
            }
            self.parts_chunk(index, &parts.text, &parts.reasoning, parts.calls, &mut out);
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
        let json = std::str::from_utf8(data).ok();
        if let Some((index, thought, text, usage)) = json.and_then(|json| self.templated(json)) {
            return Ok(self.templated_event(index, thought, &text, usage));
        }
        let parsed = match json {
            Some(json) => serde_json::from_str(json),
            None => serde_json::from_slice(data),
        };
        let response: GenerateContentResponse = parsed.map_err(|source| {
            TranslateError::Malformed { provider: ProviderKind::Google, source }
        })?;
        if let Some(json) = json {
            self.keep_template(json, &response);
        }
        Ok(self.event(response))
    }

    fn finish(&mut self) -> Result<Vec<Bytes>, TranslateError> {
        if self.done {
            return Ok(Vec::new());
        }
        if self.candidates.iter().all(|c| c.finish.is_none()) {
            // No end marker and no finish reason: the body was cut (or ended with an error
            // object the SSE decoder cannot see, as Vertex sends them bare).
            return Ok(self.fail(crate::error::incomplete_stream(), None));
        }
        if let Some(why) = self.empty_answer() {
            return Ok(self.fail(empty_answer_error(why), None));
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
                FinishReason::Stop if state.calls > 0 => self.shape.finish_reason(),
                other => other,
            };
            let mut choice = ChunkChoice::new(state.index, Delta::default());
            choice.finish_reason = Some(Some(reason));
            let mut chunk = self.chunk();
            chunk.choices.push(choice);
            chunks.push(chunk);
        }
        // The record has the usage already, whether or not the client asked for it.
        if let Some(u) = self.assembled.usage.clone()
            && self.ctx.include_usage
        {
            let mut chunk = self.chunk();
            chunk.usage = Some(Some(u));
            chunks.push(chunk);
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
            json_object: false,
            legacy_functions: false,
        }
    }

    #[test]
    fn text_with_a_call_is_no_text_chunk() {
        let mut s = GeminiStream::new(&context());
        let mut chunks = Vec::new();
        for parts in [
            r#"[{"text": "Let me look."}]"#,
            r#"[{"text": " Calling."},{"functionCall": {"name": "get_weather","args": {"city": "Paris"}}}]"#,
        ] {
            let data = format!(
                r#"{{"candidates": [{{"content": {{"parts": {parts},"role": "model"}},"index": 0}}]}}"#
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

    /// An error in Gemini's stream says the status it stands for, its `code`.
    #[test]
    fn an_error_in_the_stream_says_its_status() {
        let mut s = GeminiStream::new(&context());
        let data = r#"{"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}"#;
        s.push(&SseEvent::new(None, data)).unwrap();
        assert!(s.is_done());
        let a = s.assembled();
        assert_eq!(
            a.error.as_ref().map(|e| e.error.message.as_str()),
            Some("The model is overloaded. Please try again later.")
        );
        assert_eq!(a.error_status, Some(503));
    }

    /// How the text of an [`event`] goes.
    #[derive(Debug, Clone, Copy)]
    enum Shape {
        Text,
        Thought,
        /// Beside a function call in the same part. Gemini's `Part` is a oneof and never
        /// carries both; an upstream that did must still be read as the full parse reads it
        /// (the call wins, the text is dropped).
        WithCall,
        /// In two parts.
        Split,
    }

    /// A string as JSON text.
    fn json(text: &str) -> String {
        serde_json::to_string(text).unwrap()
    }

    /// A Gemini stream event as Gemini writes them (`": "` after keys, `","` between members):
    /// one candidate's text, the candidate's index (none: the first), and `usage` as the
    /// `usageMetadata` member's text, if any.
    fn event(
        index: Option<u32>,
        text: &str,
        shape: Shape,
        usage: Option<&str>,
        finish: bool,
    ) -> String {
        let text = json(text);
        let parts = match shape {
            Shape::Text => format!(r#"{{"text": {text}}}"#),
            Shape::Thought => format!(r#"{{"text": {text},"thought": true}}"#),
            Shape::WithCall => format!(
                r#"{{"text": {text},"functionCall": {{"name": "get_weather","args": {{"city": "Paris"}}}}}}"#
            ),
            Shape::Split => format!(r#"{{"text": {text}}},{{"text": "+"}}"#),
        };
        let finish = if finish { r#","finishReason": "STOP""# } else { "" };
        let index = index.map(|i| format!(r#","index": {i}"#)).unwrap_or_default();
        let usage = usage.map(|u| format!(r#""usageMetadata": {u},"#)).unwrap_or_default();
        format!(
            r#"{{"candidates": [{{"content": {{"parts": [{parts}],"role": "model"}}{finish}{index}}}],{usage}"modelVersion": "gemini-2.5-flash","responseId": "kLewaKa5ONqI"}}"#
        )
    }

    /// Whether `data` fits the stream's template, asked without marking the template used.
    fn fits(s: &mut GeminiStream, data: &str) -> bool {
        let Some(t) = s.template.get_mut() else { return false };
        let mut spans = Vec::new();
        t.holes.matches(data, &mut spans, |r| r.nullable(read_usage).map(drop)).is_some()
            && spans.get(t.text).and_then(|&span| string_at(data.as_bytes(), span)).is_some()
    }

    /// What a stream sends for `events` (an error as `ERR …`), and how many events it read
    /// through a template.
    fn run(mut s: GeminiStream, events: &[String]) -> (Vec<Bytes>, Assembled, usize) {
        let (mut out, mut templated) = (Vec::new(), 0);
        for data in events {
            templated += usize::from(fits(&mut s, data));
            match s.push(&SseEvent::new(None, data.clone())) {
                Ok(frames) => out.extend(frames),
                Err(e) => out.push(Bytes::from(format!("ERR {e}"))),
            }
        }
        match s.finish() {
            Ok(frames) => out.extend(frames),
            Err(e) => out.push(Bytes::from(format!("ERR {e}"))),
        }
        (out, s.assembled.clone(), templated)
    }

    fn usage_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0u64..1000, 0u64..1000).prop_map(|(p, c)| format!(
                r#"{{"promptTokenCount": {p},"candidatesTokenCount": {c},"totalTokenCount": {},"promptTokensDetails": [{{"modality": "TEXT","tokenCount": {p}}}]}}"#,
                p + c
            )),
            1 => Just("null".to_owned()),
            1 => Just("{}".to_owned()),
            1 => (0u64..1000).prop_map(|t| format!(r#"{{"thoughtsTokenCount": {t},"cachedContentTokenCount": null}}"#)),
            // What the reader leaves to serde: a float count, a count given twice, numbers
            // that may be out of range, escapes; and what serde refuses.
            1 => Just(r#"{"promptTokenCount": 16.0}"#.to_owned()),
            1 => Just(r#"{"promptTokenCount": 1,"promptTokenCount": 2}"#.to_owned()),
            1 => Just(r#"{"x": 1e999}"#.to_owned()),
            1 => Just(r#"{"x": 1e2}"#.to_owned()),
            1 => Just(r#"{"x": "\ud800"}"#.to_owned()),
            1 => Just(r#"{"x": "\u00e9"}"#.to_owned()),
            1 => Just(r#"{"x": {"\ud800": 1}}"#.to_owned()),
            1 => Just(format!(r#"{{"x": 1{}}}"#, "0".repeat(400))),
            1 => Just(r#"{"promptTokenCount": -1}"#.to_owned()),
            1 => Just(r#"{"promptTokenCount": 18446744073709551616}"#.to_owned()),
            1 => Just(r#"[1, 2]"#.to_owned()),
        ]
    }

    proptest::proptest! {
        #[test]
        fn a_stream_read_through_templates_is_the_stream_read_in_full(
            // Each event takes one of a few shapes (mostly the first, so that templates are
            // built and fit), with its own text and usage.
            shapes in proptest::collection::vec(
                (
                    proptest::option::weighted(0.8, 0u32..2),
                    proptest::prop_oneof![
                        3 => proptest::strategy::Just(Shape::Text),
                        1 => proptest::strategy::Just(Shape::Thought),
                        1 => proptest::strategy::Just(Shape::WithCall),
                        1 => proptest::strategy::Just(Shape::Split),
                    ],
                    // Usage or not; Gemini may repeat the finish reason.
                    proptest::bool::weighted(0.9),
                    proptest::bool::weighted(0.2),
                ),
                3,
            ),
            events in proptest::collection::vec(
                (
                    proptest::prop_oneof![4 => proptest::strategy::Just(0usize), 1 => 1usize..3],
                    proptest::prop_oneof![
                        "[a-z \"\\\\\n\u{1}é😀]{0,10}",
                        proptest::strategy::Just("model".to_owned()),
                        proptest::strategy::Just("TEXT".to_owned()),
                    ],
                    usage_text(),
                ),
                1..14,
            ),
            include_usage in proptest::bool::ANY,
        ) {
            let events: Vec<String> = events
                .iter()
                .map(|(pick, text, usage)| {
                    let (index, shape, with_usage, finish) = shapes[*pick];
                    event(index, text, shape, with_usage.then_some(usage.as_str()), finish)
                })
                .collect();
            let ctx = ResponseContext { include_usage, ..context() };
            let (out, assembled, _) = run(GeminiStream::new(&ctx), &events);
            let mut full = GeminiStream::new(&ctx);
            full.template = TemplateSlot::off();
            let (want_out, want_assembled, none) = run(full, &events);
            proptest::prop_assert_eq!(none, 0);
            proptest::prop_assert_eq!(out, want_out);
            proptest::prop_assert_eq!(assembled, want_assembled);
        }
    }

    #[test]
    fn templates_that_fit_keep_being_built() {
        // Twelve runs of three events, the candidates taking turns: each run's first makes a
        // template that its next two fit, however many runs came before.
        let events: Vec<String> = (0..36)
            .map(|i| event(Some(i / 3 % 2), &format!("w{i}"), Shape::Text, None, false))
            .collect();
        let (_, assembled, templated) = run(GeminiStream::new(&context()), &events);
        assert_eq!(templated, 24);
        assert_eq!(assembled.choices.len(), 2);
    }

    #[test]
    fn events_that_differ_in_text_and_counts_take_the_template() {
        let counts = |c: u64| {
            format!(
                r#"{{"promptTokenCount": 16,"candidatesTokenCount": {c},"totalTokenCount": {}}}"#,
                16 + c
            )
        };
        let events: Vec<String> = (0..6)
            .map(|i| event(Some(0), &format!("w{i} \"é\""), Shape::Text, Some(&counts(i)), false))
            .chain([event(Some(0), "", Shape::Text, Some(&counts(9)), true)])
            .collect();
        let ctx = ResponseContext { include_usage: true, ..context() };
        let (out, assembled, templated) = run(GeminiStream::new(&ctx), &events);
        // The first is read in full; the next five fit; the last has a finish reason.
        assert_eq!(templated, 5);
        assert_eq!(
            assembled.choices[0].content,
            "w0 \"é\"w1 \"é\"w2 \"é\"w3 \"é\"w4 \"é\"w5 \"é\""
        );
        let usage: serde_json::Value =
            serde_json::from_slice(&out[out.len() - 2].slice(6..)).unwrap();
        assert_eq!(usage["usage"]["completion_tokens"], 9);
        // An event for another candidate, or with a thought, does not fit.
        let mut s = GeminiStream::new(&ctx);
        s.push(&SseEvent::new(None, events[0].clone())).unwrap();
        let fits = |s: &mut GeminiStream, index, shape, counts: Option<&str>| {
            s.templated(&event(index, "x", shape, counts, false)).is_some()
        };
        assert!(!fits(&mut s, Some(1), Shape::Text, Some(&counts(1))));
        assert!(!fits(&mut s, Some(0), Shape::Thought, Some(&counts(1))));
        assert!(!fits(&mut s, Some(0), Shape::Text, None));
        assert!(fits(&mut s, Some(0), Shape::Text, Some(&counts(1))));
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
                    parts.push(format!(r#"{{"text": {},"thought": true}}"#, json(thought)));
                }
                parts.push(format!(r#"{{"text": {}}}"#, json(text)));
                let model_version = version.as_deref().map(json);
                let model_version = model_version
                    .map(|v| format!(r#","modelVersion": {v}"#))
                    .unwrap_or_default();
                let data = Bytes::from(format!(
                    r#"{{"candidates": [{{"content": {{"parts": [{}],"role": "model"}},"index": {index}}}],"usageMetadata": {{"promptTokenCount": 16,"candidatesTokenCount": 4,"totalTokenCount": 20}}{model_version}}}"#,
                    parts.join(",")
                ));
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
