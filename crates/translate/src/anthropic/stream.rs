//! Anthropic stream events → OpenAI `chat.completion.chunk`s: a pure state machine keyed by
//! the upstream's content block index.

use std::collections::HashMap;

use bytes::Bytes;
use uniproxy_wire::{
    ChatCompletionChunk, ChunkChoice, Delta, ErrorResponse, FinishReason, FunctionCallDelta, Map,
    Role, ToolCallDelta,
};

use super::response::{finish_reason, openai_error, openai_usage, tool_arguments};
use super::wire::{BlockDelta, ContentBlock, ErrorBody, StreamEvent, Usage};
use crate::sse::{self, SseEvent};
use crate::{Assembled, ProviderKind, ResponseContext, StreamTranslator, TranslateError};

/// What a started content block is, for routing its deltas.
#[derive(Debug, Clone, Copy)]
enum Block {
    Text,
    Thinking,
    /// A client tool call, numbered in order of appearance (OpenAI's tool call index).
    Tool {
        call: u32,
        /// Whether a non-empty argument fragment was sent; if none was, the call ends with
        /// `{}` so that it has valid arguments.
        has_arguments: bool,
    },
    /// A block the OpenAI shape cannot carry (`redacted_thinking`, server tools): its
    /// deltas are ignored.
    Other,
}

/// The Anthropic stream translator.
#[derive(Debug)]
pub(crate) struct AnthropicStream {
    id: String,
    created: u64,
    /// The context's model until `message_start` names the real one.
    model: String,
    include_usage: bool,
    /// `message_start` was seen and the role chunk sent.
    started: bool,
    blocks: HashMap<u32, Block>,
    next_call: u32,
    usage: Usage,
    /// The finish chunk was sent (at `message_delta`).
    finished: bool,
    assembled: Assembled,
    done: bool,
    /// The frame of a text chunk around its text (see [`TextFrame`]); `None` until the first
    /// text chunk, and again whenever the model changes.
    text_frame: Option<TextFrame>,
}

/// A text chunk's frame as [`sse::encode`] writes it, but for the text: most of a stream's
/// chunks differ only in that, and serializing each whole was 28% of the translation.
#[derive(Debug)]
struct TextFrame {
    /// The bytes before the text's JSON string, and after it.
    before: Bytes,
    after: Bytes,
}

/// A text no stream sends (NUL bytes around it), written where the text goes to find the place.
const MARK: &str = "\u{0}uniproxy text\u{0}";

impl TextFrame {
    /// The frame of a text chunk with `head`'s id, creation time and model, found by encoding
    /// it with [`MARK`] as its text; `None` if the mark is not found exactly once.
    fn new(mut head: ChatCompletionChunk) -> Option<Self> {
        let mark = Delta { content: Some(Some(MARK.to_owned())), ..Default::default() };
        head.choices.push(ChunkChoice::new(0, mark));
        let frame = sse::encode(&head);
        let mark = serde_json::to_vec(MARK).ok()?;
        // A plain search: the frame is a few hundred bytes, searched once per model, where
        // `memmem` spends more building its searcher than this spends searching.
        let find = |from: usize| {
            let found = frame.get(from..)?.windows(mark.len()).position(|w| w == mark.as_slice());
            found.map(|i| from + i)
        };
        let at = find(0)?;
        if find(at + 1).is_some() {
            return None;
        }
        Some(TextFrame { before: frame.slice(..at), after: frame.slice(at + mark.len()..) })
    }

    /// The frame with `text` in it.
    fn with(&self, text: &str) -> Option<Bytes> {
        let mut out = Vec::with_capacity(self.before.len() + text.len() + 2 + self.after.len());
        out.extend_from_slice(&self.before);
        serde_json::to_writer(&mut out, text).ok()?;
        out.extend_from_slice(&self.after);
        Some(Bytes::from(out))
    }
}

impl AnthropicStream {
    pub(crate) fn new(ctx: &ResponseContext) -> Self {
        AnthropicStream {
            id: ctx.id.clone(),
            created: ctx.created,
            model: ctx.model.clone(),
            include_usage: ctx.include_usage,
            started: false,
            blocks: HashMap::new(),
            next_call: 0,
            usage: Usage::default(),
            finished: false,
            assembled: Assembled::new(ctx.id.clone(), ctx.created, String::new()),
            done: false,
            text_frame: None,
        }
    }

    /// Translates one parsed event.
    fn event(&mut self, event: StreamEvent) -> Result<Vec<Bytes>, TranslateError> {
        let mut out = Vec::new();
        match event {
            StreamEvent::MessageStart { message } => {
                if !message.model.is_empty() {
                    self.model = message.model;
                    // The text frame holds the model.
                    self.text_frame = None;
                }
                if let Some(usage) = &message.usage {
                    self.usage.update(usage);
                }
                self.start(&mut out);
            }
            StreamEvent::ContentBlockStart { index, content_block } => {
                self.start(&mut out);
                self.block_start(index, content_block, &mut out);
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                let Some(block) = self.blocks.get_mut(&index) else {
                    return Err(TranslateError::OutOfOrder { index });
                };
                match (block, delta) {
                    (Block::Text, BlockDelta::TextDelta { text }) if !text.is_empty() => {
                        out.push(self.text_delta(text));
                    }
                    (Block::Thinking, BlockDelta::ThinkingDelta { thinking })
                        if !thinking.is_empty() =>
                    {
                        out.push(self.delta(Delta {
                            reasoning_content: Some(Some(thinking)),
                            ..Default::default()
                        }));
                    }
                    (
                        Block::Tool { call, has_arguments },
                        BlockDelta::InputJsonDelta { partial_json },
                    ) if !partial_json.is_empty() => {
                        *has_arguments = true;
                        let call = *call;
                        out.push(self.tool_delta(call, None, partial_json));
                    }
                    // Empty fragments, signatures (OpenAI has no field for them), deltas of
                    // blocks the OpenAI shape cannot carry, and delta types to come.
                    (
                        Block::Text | Block::Thinking | Block::Tool { .. } | Block::Other,
                        BlockDelta::TextDelta { .. }
                        | BlockDelta::ThinkingDelta { .. }
                        | BlockDelta::InputJsonDelta { .. }
                        | BlockDelta::SignatureDelta {}
                        | BlockDelta::Unknown,
                    ) => {}
                }
            }
            StreamEvent::ContentBlockStop { index } => {
                if let Some(block) = self.blocks.remove(&index) {
                    self.close(block, &mut out);
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(usage) = &usage {
                    self.usage.update(usage);
                }
                if let Some(reason) = delta.stop_reason {
                    self.finish_chunk(finish_reason(&reason), &mut out);
                }
            }
            StreamEvent::MessageStop => {
                let reason =
                    if self.next_call > 0 { FinishReason::ToolCalls } else { FinishReason::Stop };
                self.finish_chunk(reason, &mut out);
                // Blocks started after `message_delta` (a broken upstream) still end whole.
                self.close_open(&mut out);
                let usage = openai_usage(&self.usage);
                if self.include_usage {
                    let mut chunk = self.chunk();
                    chunk.usage = Some(Some(usage));
                    out.push(self.emit(&chunk));
                } else {
                    self.assembled.usage = Some(usage);
                }
                out.push(Bytes::from_static(sse::DONE_FRAME));
                self.done = true;
            }
            StreamEvent::Error { error } => out.push(self.fail(in_stream_error(&error))),
            StreamEvent::Ping | StreamEvent::Unknown => {}
        }
        Ok(out)
    }

    /// Sends the role chunk once, before anything else.
    fn start(&mut self, out: &mut Vec<Bytes>) {
        if !self.started {
            self.started = true;
            out.push(self.delta(Delta {
                role: Some(Role::Assistant),
                content: Some(Some(String::new())),
                ..Default::default()
            }));
        }
    }

    fn block_start(&mut self, index: u32, block: ContentBlock, out: &mut Vec<Bytes>) {
        let state = match block {
            ContentBlock::Text { text } => {
                if !text.is_empty() {
                    out.push(self.text_delta(text));
                }
                Block::Text
            }
            ContentBlock::Thinking { thinking } => {
                if !thinking.is_empty() {
                    out.push(self.delta(Delta {
                        reasoning_content: Some(Some(thinking)),
                        ..Default::default()
                    }));
                }
                Block::Thinking
            }
            ContentBlock::ToolUse { id, name, input } => {
                let call = self.next_call;
                self.next_call += 1;
                // The start normally carries `input: {}` and the arguments follow as deltas;
                // an input given whole at the start is sent as the first fragment.
                let given = input.as_object().is_some_and(|o| !o.is_empty());
                let arguments = if given { tool_arguments(&input) } else { String::new() };
                out.push(self.tool_delta(call, Some((id, name)), arguments));
                Block::Tool { call, has_arguments: given }
            }
            ContentBlock::Unknown => Block::Other,
        };
        if let Some(previous) = self.blocks.insert(index, state) {
            // A block index reused without a stop: end the old block first.
            self.close(previous, out);
        }
    }

    /// Ends a block: a tool call that got no arguments gets `{}`.
    fn close(&mut self, block: Block, out: &mut Vec<Bytes>) {
        match block {
            Block::Tool { call, has_arguments: false } => {
                out.push(self.tool_delta(call, None, "{}".to_owned()));
            }
            Block::Tool { has_arguments: true, .. }
            | Block::Text
            | Block::Thinking
            | Block::Other => {}
        }
    }

    /// Closes the blocks left open, in index order.
    fn close_open(&mut self, out: &mut Vec<Bytes>) {
        let mut open: Vec<(u32, Block)> = self.blocks.drain().collect();
        open.sort_by_key(|(index, _)| *index);
        for (_, block) in open {
            self.close(block, out);
        }
    }

    /// Sends the finish chunk once, closing any block left open.
    fn finish_chunk(&mut self, reason: FinishReason, out: &mut Vec<Bytes>) {
        if self.finished {
            return;
        }
        self.start(out);
        self.close_open(out);
        self.finished = true;
        let mut chunk = self.chunk();
        let mut choice = ChunkChoice::new(0, Delta::default());
        choice.finish_reason = Some(Some(reason));
        chunk.choices.push(choice);
        out.push(self.emit(&chunk));
    }

    fn chunk(&self) -> ChatCompletionChunk {
        ChatCompletionChunk::new(self.id.clone(), self.created, self.model.clone())
    }

    /// A text chunk, written from the [`TextFrame`]: the bytes [`delta`](Self::delta) would
    /// write for it.
    fn text_delta(&mut self, text: String) -> Bytes {
        if self.text_frame.is_none() {
            self.text_frame = TextFrame::new(self.chunk());
        }
        let frame = self.text_frame.as_ref().and_then(|f| f.with(&text));
        let delta = Delta { content: Some(Some(text)), ..Default::default() };
        let Some(frame) = frame else { return self.delta(delta) };
        let mut chunk = self.chunk();
        chunk.choices.push(ChunkChoice::new(0, delta));
        self.assembled.add_chunk(&chunk);
        frame
    }

    fn delta(&mut self, delta: Delta) -> Bytes {
        let mut chunk = self.chunk();
        chunk.choices.push(ChunkChoice::new(0, delta));
        self.emit(&chunk)
    }

    /// A tool call fragment: the first carries id, type and name.
    fn tool_delta(
        &mut self,
        call: u32,
        first: Option<(String, String)>,
        arguments: String,
    ) -> Bytes {
        let (id, name) = first.unzip();
        self.delta(Delta {
            tool_calls: Some(vec![ToolCallDelta {
                index: call,
                kind: id.as_ref().map(|_| "function".to_owned()),
                id,
                function: Some(FunctionCallDelta {
                    name,
                    arguments: Some(arguments),
                    extra: Map::new(),
                }),
                extra: Map::new(),
            }]),
            ..Default::default()
        })
    }

    fn emit(&mut self, chunk: &ChatCompletionChunk) -> Bytes {
        self.assembled.add_chunk(chunk);
        sse::encode(chunk)
    }

    /// Ends the stream with an error frame.
    fn fail(&mut self, error: ErrorResponse) -> Bytes {
        let frame = sse::encode(&error);
        if self.assembled.model.is_empty() {
            self.assembled.model.clone_from(&self.model);
        }
        self.assembled.error = Some(error);
        self.done = true;
        frame
    }
}

/// The status Anthropic answers with when the same error is not streamed.
fn in_stream_error(error: &ErrorBody) -> ErrorResponse {
    let status = match error.kind.as_str() {
        "overloaded_error" => 529,
        "rate_limit_error" => 429,
        _ => 500,
    };
    openai_error(error, status)
}

impl StreamTranslator for AnthropicStream {
    fn push(&mut self, event: &SseEvent) -> Result<Vec<Bytes>, TranslateError> {
        if self.done {
            return Ok(Vec::new());
        }
        let parsed = uniproxy_wire::from_bytes::<StreamEvent>(&event.data);
        match parsed {
            Ok(event) => self.event(event),
            Err(source) => {
                if event.event.as_deref() == Some("error") {
                    // An error event we cannot read is still the end of the stream.
                    let error = crate::fallback_error(500, &event.data);
                    return Ok(vec![self.fail(error)]);
                }
                Err(TranslateError::Malformed { provider: ProviderKind::Anthropic, source })
            }
        }
    }

    fn finish(&mut self) -> Result<Vec<Bytes>, TranslateError> {
        if self.done {
            return Ok(Vec::new());
        }
        Ok(vec![self.fail(ErrorResponse::new(
            "the upstream stream ended before the answer was complete",
            "upstream_error",
        ))])
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

    fn stream(id: &str, model: &str) -> AnthropicStream {
        let ctx = ResponseContext {
            id: id.to_owned(),
            created: 1_741_569_952,
            model: model.to_owned(),
            include_usage: false,
        };
        AnthropicStream::new(&ctx)
    }

    /// Names the model as `message_start` does.
    fn message_start(s: &mut AnthropicStream, model: &str) {
        let message = super::super::wire::MessageStart { model: model.to_owned(), usage: None };
        s.event(StreamEvent::MessageStart { message }).unwrap();
    }

    /// The chunk `delta` builds for `text`, as [`sse::encode`] writes it.
    fn encoded(s: &AnthropicStream, text: &str) -> Bytes {
        let mut chunk = s.chunk();
        let delta = Delta { content: Some(Some(text.to_owned())), ..Default::default() };
        chunk.choices.push(ChunkChoice::new(0, delta));
        sse::encode(&chunk)
    }

    proptest::proptest! {
        #[test]
        fn a_text_chunk_from_the_frame_is_the_encoded_chunk(
            id in "[a-z_\"\\\\\u{0}é😀]{0,12}",
            models in proptest::collection::vec("[a-z\"\\\\\u{0}\u{1f}é]{0,8}", 1..3),
            texts in proptest::collection::vec("[a-z \"\\\\\n\t\u{0}\u{1}\u{7f}é😀]{0,16}", 1..6),
        ) {
            let mut s = stream(&id, &models[0]);
            let mut plain = String::new();
            for (i, text) in texts.iter().enumerate() {
                // message_start may name another model mid-way: the frame must follow it.
                message_start(&mut s, &models[i % models.len()]);
                let want = encoded(&s, text);
                proptest::prop_assert_eq!(s.text_delta(text.clone()), want);
                plain.push_str(text);
            }
            proptest::prop_assert_eq!(&s.assembled.choices[0].content, &plain);
        }
    }

    #[test]
    fn the_frame_holds_the_chunks_head_and_follows_the_model() {
        let mut s = stream("msg_1", "claude-sonnet-4-5");
        assert!(s.text_frame.is_none());
        for text in ["Hello", ", \"world\"\n", "é😀"] {
            let want = encoded(&s, text);
            assert_eq!(s.text_delta(text.to_owned()), want);
        }
        let frame = s.text_frame.as_ref().unwrap();
        let before = String::from_utf8_lossy(&frame.before);
        assert!(before.contains(r#""id":"msg_1""#) && before.contains("claude-sonnet-4-5"));
        assert!(frame.before.ends_with(b"\"content\":"), "{:?}", frame.before);
        // A model that holds the mark itself: the mark is found twice, so no frame, and the
        // chunk is encoded whole, correctly all the same.
        message_start(&mut s, MARK);
        let want = encoded(&s, "x");
        assert_eq!(s.text_delta("x".to_owned()), want);
        assert!(s.text_frame.is_none());
    }
}
