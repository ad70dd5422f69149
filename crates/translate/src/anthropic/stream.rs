//! Anthropic stream events → OpenAI `chat.completion.chunk`s: a pure state machine keyed by
//! the upstream's content block index.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use uniproxy_wire::{
    ChatCompletionChunk, ChunkChoice, Delta, ErrorResponse, FinishReason, FunctionCallDelta, Map,
    Role, ThinkingBlock, ThinkingBlockDelta, ToolCallDelta,
};

use super::request::JSON_TOOL;
use super::response::{finish_reason, openai_error, openai_usage, refusal_text, tool_arguments};
use super::wire::{BlockDelta, ContentBlock, StreamEvent, Usage};
use crate::scan::{Hole, TemplateSlot};
use crate::sse::{self, SseEvent, TextFrame};
use crate::{
    Assembled, CallShape, ProviderKind, ResponseContext, StreamTranslator, TranslateError,
};

/// What a started content block is, for routing its deltas.
#[derive(Debug, Clone)]
enum Block {
    Text,
    /// Its text so far and its signature: the whole block goes out at its end, for the client
    /// to give back.
    Thinking {
        text: String,
        signature: String,
    },
    /// A client tool call, numbered in order of appearance (OpenAI's tool call index).
    Tool {
        call: u32,
        /// Whether a non-empty argument fragment was sent; if none was, the call ends with
        /// `{}` so that it has valid arguments.
        has_arguments: bool,
    },
    /// The call of the tool a JSON object was asked through (`request::JSON_TOOL`): its
    /// argument fragments are the answer's text.
    JsonAnswer {
        /// Whether a non-empty fragment was sent; if none was, the answer is `{}`.
        has_text: bool,
    },
    /// A block the OpenAI shape cannot carry (server tools), or one taken whole at its start
    /// (`redacted_thinking`): its deltas are ignored.
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
    /// The client asked for a JSON object, through the tool.
    json_object: bool,
    /// How the client takes calls: for one that offered only legacy `functions`, the first
    /// call goes as `function_call`, and any other is left out (Claude was asked for one).
    shape: CallShape,
    /// `message_start` was seen and the role chunk sent.
    started: bool,
    /// The open blocks by index (a few at most: a map without hashing).
    blocks: BTreeMap<u32, Block>,
    next_call: u32,
    /// The number of thinking blocks sent whole.
    next_thinking: u32,
    /// Thinking blocks ended and not sent yet: they go in one chunk when the thinking is
    /// over (see [`flush_thinking`](Self::flush_thinking)).
    thinking_blocks: Vec<ThinkingBlockDelta>,
    usage: Usage,
    /// The finish chunk was sent (at `message_delta`).
    finished: bool,
    assembled: Assembled,
    done: bool,
    /// The frame of a text chunk around its text (see [`TextFrame`]); `None` until the first
    /// text chunk, and again whenever the model changes.
    text_frame: Option<TextFrame>,
    /// The last fragment event read in full (see [`FragmentTemplate`]).
    template: TemplateSlot<FragmentTemplate>,
}

/// A `content_block_delta` event read in full, kept to read the next ones: a block's fragments
/// come as the same bytes around a new piece of text or JSON, so an event that is this one's
/// text with another string in the fragment's place (a [`Hole`]) is this event with that
/// fragment, without serde's walk (about half of an event's instructions, most of it in
/// buffering the event to find its `type`).
#[derive(Debug)]
struct FragmentTemplate {
    hole: Hole,
    index: u32,
    kind: Fragment,
}

/// The delta types that carry a fragment.
#[derive(Debug, Clone, Copy)]
enum Fragment {
    Text,
    Thinking,
    Json,
}

impl Fragment {
    /// The kind and the fragment of a delta that carries one.
    fn of(delta: &BlockDelta) -> Option<(Fragment, &str)> {
        match delta {
            BlockDelta::TextDelta { text } => Some((Fragment::Text, text)),
            BlockDelta::ThinkingDelta { thinking } => Some((Fragment::Thinking, thinking)),
            BlockDelta::InputJsonDelta { partial_json } => Some((Fragment::Json, partial_json)),
            BlockDelta::SignatureDelta { .. } | BlockDelta::Unknown => None,
        }
    }
}

impl AnthropicStream {
    pub(crate) fn new(ctx: &ResponseContext) -> Self {
        AnthropicStream {
            id: ctx.id.clone(),
            created: ctx.created,
            model: ctx.model.clone(),
            include_usage: ctx.include_usage,
            json_object: ctx.json_object,
            shape: CallShape::of(ctx),
            started: false,
            blocks: BTreeMap::new(),
            next_call: 0,
            next_thinking: 0,
            thinking_blocks: Vec::new(),
            usage: Usage::default(),
            finished: false,
            assembled: Assembled::new(ctx.id.clone(), ctx.created, String::new()),
            done: false,
            text_frame: None,
            template: TemplateSlot::default(),
        }
    }

    /// Keeps a fragment event read in full as the template for the next ones.
    fn keep_template(&mut self, text: &str, event: &StreamEvent) {
        let StreamEvent::ContentBlockDelta { index, delta } = event else { return };
        let Some((kind, fragment)) = Fragment::of(delta) else { return };
        self.template.keep(|| {
            Hole::new(text, fragment).map(|hole| FragmentTemplate { hole, index: *index, kind })
        });
    }

    /// The block index, kind and fragment of the event `data` when it fits the template.
    fn templated<'a>(&mut self, data: &'a [u8]) -> Option<(u32, Fragment, Cow<'a, str>)> {
        let template = self.template.get_mut()?;
        let fragment = template.hole.string(data)?;
        let (index, kind) = (template.index, template.kind);
        self.template.fit();
        Some((index, kind, fragment))
    }

    /// Translates one parsed event.
    fn event(&mut self, event: StreamEvent, out: &mut Vec<Bytes>) -> Result<(), TranslateError> {
        match event {
            StreamEvent::MessageStart { message } => {
                if !message.model.is_empty() {
                    self.model = message.model;
                    // The text frame holds the model.
                    self.text_frame = None;
                }
                if let Some(usage) = &message.usage {
                    self.take_usage(usage);
                }
                self.start(out);
            }
            StreamEvent::ContentBlockStart { index, content_block } => {
                self.start(out);
                self.block_start(index, content_block, out);
            }
            StreamEvent::ContentBlockDelta { index, delta } => match Fragment::of(&delta) {
                Some((kind, fragment)) => self.fragment(index, kind, fragment, out)?,
                None => match (self.blocks.get_mut(&index), delta) {
                    (
                        Some(Block::Thinking { signature, .. }),
                        BlockDelta::SignatureDelta { signature: piece },
                    ) => signature.push_str(&piece),
                    // Delta types to come, and signatures of other blocks.
                    (Some(_), _) => {}
                    (None, _) => return Err(TranslateError::OutOfOrder { index }),
                },
            },
            StreamEvent::ContentBlockStop { index } => {
                if let Some(block) = self.blocks.remove(&index) {
                    self.close(block, out);
                }
            }
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(usage) = &usage {
                    self.take_usage(usage);
                }
                if let Some(reason) = delta.stop_reason {
                    let called = self.next_call > 0;
                    if reason == "refusal" && !self.finished {
                        // OpenAI streams a refusal as `delta.refusal`: in a chunk of its own,
                        // after whatever text came, before the finish chunk.
                        self.start(out);
                        self.close_open(out);
                        self.flush_thinking(out);
                        out.push(self.delta(Delta {
                            content: Some(None),
                            refusal: Some(Some(refusal_text(delta.stop_explanation))),
                            ..Default::default()
                        }));
                    }
                    let reason = finish_reason(&reason, self.json_object, called);
                    self.finish_chunk(self.shape.finish(reason), out);
                }
            }
            StreamEvent::MessageStop => {
                let reason =
                    if self.next_call > 0 { FinishReason::ToolCalls } else { FinishReason::Stop };
                self.finish_chunk(self.shape.finish(reason), out);
                // Blocks started after `message_delta` (a broken upstream) still end whole.
                self.close_open(out);
                self.flush_thinking(out);
                // The usage as it stands (the record has it already); none made up when the
                // upstream sent none.
                if let Some(usage) = self.assembled.usage.clone()
                    && self.include_usage
                {
                    let mut chunk = self.chunk();
                    chunk.usage = Some(Some(usage));
                    out.push(self.emit(&chunk));
                }
                out.push(Bytes::from_static(sse::DONE_FRAME));
                self.done = true;
            }
            StreamEvent::Error { error } => {
                let status = super::response::error_status(&error.kind).unwrap_or(500);
                out.push(self.fail(openai_error(&error, status), Some(status)));
            }
            StreamEvent::Ping | StreamEvent::Unknown => {}
        }
        Ok(())
    }

    /// A fragment of the block at `index`, sent as a chunk of what that block is.
    fn fragment(
        &mut self,
        index: u32,
        kind: Fragment,
        fragment: &str,
        out: &mut Vec<Bytes>,
    ) -> Result<(), TranslateError> {
        let Some(block) = self.blocks.get_mut(&index) else {
            return Err(TranslateError::OutOfOrder { index });
        };
        if fragment.is_empty() {
            return Ok(());
        }
        match (block, kind) {
            (Block::Text, Fragment::Text) => out.push(self.text_delta(fragment)),
            (Block::Thinking { text, .. }, Fragment::Thinking) => {
                text.push_str(fragment);
                out.push(self.delta(Delta {
                    reasoning_content: Some(Some(fragment.to_owned())),
                    ..Default::default()
                }));
            }
            (Block::JsonAnswer { has_text }, Fragment::Json) => {
                *has_text = true;
                out.push(self.text_delta(fragment));
            }
            (Block::Tool { call, has_arguments }, Fragment::Json) => {
                *has_arguments = true;
                let call = *call;
                out.extend(self.tool_delta(call, None, fragment.to_owned()));
            }
            // Deltas of blocks the OpenAI shape cannot carry, or of another kind than their
            // block's.
            (
                Block::Text
                | Block::Thinking { .. }
                | Block::Tool { .. }
                | Block::JsonAnswer { .. }
                | Block::Other,
                Fragment::Text | Fragment::Thinking | Fragment::Json,
            ) => {}
        }
        Ok(())
    }

    /// Sends the role chunk once, before anything else.
    fn start(&mut self, out: &mut Vec<Bytes>) {
        if !self.started {
            self.started = true;
            out.push(self.delta(Delta { role: Some(Role::Assistant), ..Default::default() }));
        }
    }

    fn block_start(&mut self, index: u32, block: ContentBlock, out: &mut Vec<Bytes>) {
        if !matches!(block, ContentBlock::Thinking { .. } | ContentBlock::RedactedThinking { .. }) {
            self.flush_thinking(out);
        }
        let state = match block {
            ContentBlock::Text { text } => {
                if !text.is_empty() {
                    out.push(self.text_delta(&text));
                }
                Block::Text
            }
            ContentBlock::Thinking { thinking, signature } => {
                if !thinking.is_empty() {
                    out.push(self.delta(Delta {
                        reasoning_content: Some(Some(thinking.clone())),
                        ..Default::default()
                    }));
                }
                Block::Thinking { text: thinking, signature: signature.unwrap_or_default() }
            }
            ContentBlock::RedactedThinking { data } => {
                self.thinking_block(ThinkingBlock::RedactedThinking { data, extra: Map::new() });
                Block::Other
            }
            ContentBlock::ToolUse { name, input, .. } if self.json_object && name == JSON_TOOL => {
                // An input given whole at the start is the answer whole.
                let given = input.as_object().is_some_and(|o| !o.is_empty());
                if given {
                    out.push(self.text_delta(&tool_arguments(&input)));
                }
                Block::JsonAnswer { has_text: given }
            }
            ContentBlock::ToolUse { id, name, input } => {
                let call = self.next_call;
                self.next_call += 1;
                // The start normally carries `input: {}` and the arguments follow as deltas;
                // an input given whole at the start is sent as the first fragment.
                let given = input.as_object().is_some_and(|o| !o.is_empty());
                let arguments = if given { tool_arguments(&input) } else { String::new() };
                out.extend(self.tool_delta(call, Some((id, name)), arguments));
                Block::Tool { call, has_arguments: given }
            }
            ContentBlock::Unknown => Block::Other,
        };
        if let Some(previous) = self.blocks.insert(index, state) {
            // A block index reused without a stop: end the old block first.
            self.close(previous, out);
        }
    }

    /// Ends a block: a tool call that got no arguments gets `{}`; a signed thinking block
    /// is kept whole, to go out with the others.
    fn close(&mut self, block: Block, out: &mut Vec<Bytes>) {
        match block {
            Block::Tool { call, has_arguments: false } => {
                out.extend(self.tool_delta(call, None, "{}".to_owned()));
            }
            Block::JsonAnswer { has_text: false } => out.push(self.text_delta("{}")),
            Block::Thinking { text, signature } if !signature.is_empty() => {
                let block = ThinkingBlock::Thinking {
                    thinking: text,
                    signature: Some(signature),
                    extra: Map::new(),
                };
                self.thinking_block(block);
            }
            Block::Tool { has_arguments: true, .. }
            | Block::JsonAnswer { has_text: true }
            | Block::Text
            | Block::Thinking { .. }
            | Block::Other => {}
        }
    }

    /// Keeps a whole thinking block, numbered, for [`flush_thinking`](Self::flush_thinking).
    fn thinking_block(&mut self, block: ThinkingBlock) {
        let index = self.next_thinking;
        self.next_thinking += 1;
        self.thinking_blocks.push(ThinkingBlockDelta { index, block });
    }

    /// Sends the thinking blocks kept so far, all in one chunk: when a block that is not
    /// thinking starts, and before the finish chunk. A client that takes a member it does not
    /// know as it comes, the last value winning (openai-node's stream helper), then has every
    /// block, as one that merges list entries by `index` (openai-python's) does.
    fn flush_thinking(&mut self, out: &mut Vec<Bytes>) {
        if !self.thinking_blocks.is_empty() {
            let blocks = std::mem::take(&mut self.thinking_blocks);
            out.push(self.delta(Delta { thinking_blocks: Some(blocks), ..Default::default() }));
        }
    }

    /// Closes the blocks left open, in index order.
    fn close_open(&mut self, out: &mut Vec<Bytes>) {
        for (_, block) in std::mem::take(&mut self.blocks) {
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
        self.flush_thinking(out);
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
    fn text_delta(&mut self, text: &str) -> Bytes {
        if self.text_frame.is_none() {
            self.text_frame = TextFrame::new(self.chunk(), 0);
        }
        match self.text_frame.as_ref().map(|f| f.with(text)) {
            Some(frame) => {
                self.assembled.add_content(&self.id, self.created, &self.model, 0, text);
                frame
            }
            None => {
                self.delta(Delta { content: Some(Some(text.to_owned())), ..Default::default() })
            }
        }
    }

    fn delta(&mut self, delta: Delta) -> Bytes {
        let mut chunk = self.chunk();
        chunk.choices.push(ChunkChoice::new(0, delta));
        self.emit(&chunk)
    }

    /// A tool call fragment: the first carries id, type and name. For a legacy client, the
    /// first call's fragments as `function_call` (name first, no id), and nothing of others.
    fn tool_delta(
        &mut self,
        call: u32,
        first: Option<(String, String)>,
        arguments: String,
    ) -> Option<Bytes> {
        let (id, name) = first.unzip();
        if self.shape == CallShape::Legacy {
            return (call == 0).then(|| {
                self.delta(Delta {
                    function_call: Some(FunctionCallDelta {
                        name,
                        arguments: Some(arguments),
                        extra: Map::new(),
                    }),
                    ..Default::default()
                })
            });
        }
        Some(self.delta(Delta {
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
        }))
    }

    fn emit(&mut self, chunk: &ChatCompletionChunk) -> Bytes {
        self.assembled.add_chunk(chunk);
        sse::encode(chunk)
    }

    /// Takes an event's usage (cumulative, as Anthropic reports it), and keeps the record's up
    /// to date with it: a stream that ends early (an error, a cut, a client that leaves) still
    /// records the tokens it was billed.
    fn take_usage(&mut self, usage: &Usage) {
        self.usage.update(usage);
        self.assembled.usage = Some(openai_usage(&self.usage));
    }

    /// Ends the stream with an error frame; `status`, for an error the upstream reported, the
    /// HTTP status it stands for ([`Assembled::error_status`]).
    fn fail(&mut self, error: ErrorResponse, status: Option<u16>) -> Bytes {
        let frame = sse::encode(&error);
        if self.assembled.model.is_empty() {
            self.assembled.model.clone_from(&self.model);
        }
        self.assembled.error = Some(error);
        self.assembled.error_status = status;
        self.done = true;
        frame
    }
}

impl StreamTranslator for AnthropicStream {
    fn push(&mut self, event: &SseEvent) -> Result<Vec<Bytes>, TranslateError> {
        let mut out = Vec::with_capacity(1);
        self.push_into(event, &mut out)?;
        Ok(out)
    }

    fn push_into(&mut self, event: &SseEvent, out: &mut Vec<Bytes>) -> Result<(), TranslateError> {
        if self.done {
            return Ok(());
        }
        // An event the template takes is UTF-8; any other is checked once, here.
        if let Some((index, kind, fragment)) = self.templated(&event.data) {
            return self.fragment(index, kind, &fragment, out);
        }
        let text = std::str::from_utf8(&event.data).ok();
        let parsed = match text {
            Some(text) => serde_json::from_str::<StreamEvent>(text),
            None => serde_json::from_slice(&event.data),
        };
        match parsed {
            Ok(parsed) => {
                if let Some(text) = text {
                    self.keep_template(text, &parsed);
                }
                self.event(parsed, out)
            }
            Err(source) => {
                if event.event.as_deref() == Some("error") {
                    // An error event we cannot read is still the end of the stream.
                    let error = crate::fallback_error(500, &event.data);
                    out.push(self.fail(error, Some(500)));
                    return Ok(());
                }
                Err(TranslateError::Malformed { provider: ProviderKind::Anthropic, source })
            }
        }
    }

    fn finish(&mut self) -> Result<Vec<Bytes>, TranslateError> {
        if self.done {
            return Ok(Vec::new());
        }
        Ok(vec![self.fail(crate::error::incomplete_stream(), None)])
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
            json_object: false,
            legacy_functions: false,
        };
        AnthropicStream::new(&ctx)
    }

    /// Names the model as `message_start` does.
    fn message_start(s: &mut AnthropicStream, model: &str) {
        let message = super::super::wire::MessageStart { model: model.to_owned(), usage: None };
        s.event(StreamEvent::MessageStart { message }, &mut Vec::new()).unwrap();
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
                proptest::prop_assert_eq!(s.text_delta(text), want);
                plain.push_str(text);
            }
            proptest::prop_assert_eq!(&s.assembled.choices[0].content, &plain);
        }
    }

    /// An event as the stream decoder gives it.
    fn sse(name: &str, data: &str) -> SseEvent {
        SseEvent {
            event: Some(name.to_owned()),
            data: Bytes::from(data.to_owned()),
            ..Default::default()
        }
    }

    /// A `content_block_delta` event's data, as Anthropic writes it (`type` first).
    fn fragment(index: u32, kind: &str, key: &str, value: &str) -> String {
        let (kind, key, value) = (json(kind), json(key), json(value));
        format!(
            r#"{{"type":"content_block_delta","index":{index},"delta":{{"type":{kind},{key}:{value}}}}}"#
        )
    }

    fn json(s: &str) -> String {
        serde_json::to_string(s).unwrap()
    }

    /// A stream of Anthropic's shape: thinking, text and a tool call, each block's fragments
    /// taken from `pieces`.
    fn events(pieces: &[String]) -> Vec<SseEvent> {
        let mut ev = vec![
            sse(
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}"#,
            ),
            sse(
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
            ),
        ];
        let blocks = [
            (0, "thinking_delta", "thinking"),
            (1, "text_delta", "text"),
            (2, "input_json_delta", "partial_json"),
        ];
        for (index, kind, key) in blocks {
            if index == 1 {
                ev.push(sse(
                    "content_block_delta",
                    r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM"}}"#,
                ));
                ev.push(sse("content_block_stop", r#"{"type":"content_block_stop","index":0}"#));
                ev.push(sse(
                    "content_block_start",
                    r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
                ));
            }
            if index == 2 {
                ev.push(sse("content_block_stop", r#"{"type":"content_block_stop","index":1}"#));
                ev.push(sse(
                    "content_block_start",
                    r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}}"#,
                ));
            }
            for piece in pieces {
                ev.push(sse("content_block_delta", &fragment(index, kind, key, piece)));
            }
            // A ping between fragments, and a fragment with a member Anthropic may add.
            ev.push(sse("ping", r#"{"type": "ping"}"#));
            let extra = fragment(index, kind, key, "+").replacen('}', r#","cache":"x"}"#, 1);
            ev.push(sse("content_block_delta", &extra));
        }
        ev.push(sse("content_block_stop", r#"{"type":"content_block_stop","index":2}"#));
        ev.push(sse(
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":96}}"#,
        ));
        ev.push(sse("message_stop", r#"{"type":"message_stop"}"#));
        ev
    }

    /// What a stream sends for `events`, and how many events it read through a template.
    fn run(mut s: AnthropicStream, events: &[SseEvent]) -> (Vec<Bytes>, Assembled, usize) {
        let (mut out, mut templated) = (Vec::new(), 0);
        for ev in events {
            let fits = s.template.get_mut().is_some_and(|t| t.hole.string(&ev.data).is_some());
            templated += usize::from(fits);
            s.push_into(ev, &mut out).unwrap();
        }
        out.extend(s.finish().unwrap());
        (out, s.assembled.clone(), templated)
    }

    proptest::proptest! {
        #[test]
        fn a_stream_read_through_templates_is_the_stream_read_in_full(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    "[a-z {}:,\"\\\\\n\u{1}é😀]{0,12}",
                    proptest::strategy::Just("text_delta".to_owned()),
                    proptest::strategy::Just(String::new()),
                ],
                1..12,
            ),
        ) {
            let events = events(&pieces);
            let (out, assembled, templated) = run(stream("chatcmpl-1", "claude"), &events);
            let mut full = stream("chatcmpl-1", "claude");
            full.template = TemplateSlot::off();
            let (want_out, want_assembled, none) = run(full, &events);
            proptest::prop_assert_eq!(none, 0);
            proptest::prop_assert_eq!(out, want_out);
            proptest::prop_assert_eq!(assembled, want_assembled);
            // In each block, a fragment after one that made a template takes it, unless it
            // reads as a `type` (two strings then read the same) or the one before did.
            let fit = pieces.iter().zip(pieces.iter().skip(1)).filter(|(before, this)| {
                !["text_delta", "thinking_delta", "input_json_delta"]
                    .iter()
                    .any(|kind| before.as_str() == *kind || this.as_str() == *kind)
            });
            proptest::prop_assert!(templated >= 3 * fit.count(), "{}", templated);
        }
    }

    /// A stream that has read the first `n` events of [`events`] with one fragment a block.
    fn after(n: usize) -> AnthropicStream {
        let mut s = stream("chatcmpl-1", "claude");
        let mut out = Vec::new();
        for ev in &events(&["a".to_owned()])[..n] {
            s.push_into(ev, &mut out).unwrap();
        }
        s
    }

    #[test]
    fn a_fragment_of_another_block_or_kind_is_read_in_full() {
        // message_start, the thinking block's start and its one fragment.
        let mut s = after(3);
        assert_eq!(s.template.get_mut().unwrap().index, 0);
        for (fits, data) in [
            (true, fragment(0, "thinking_delta", "thinking", "b\"")),
            (false, fragment(1, "thinking_delta", "thinking", "b")),
            (false, fragment(0, "text_delta", "thinking", "b")),
            (false, fragment(0, "thinking_delta", "text", "b")),
        ] {
            assert_eq!(s.templated(data.as_bytes()).is_some(), fits, "{data}");
        }
    }

    #[test]
    fn templates_that_fit_keep_being_built() {
        // Twelve text blocks of three fragments: each block's first makes a template that
        // its next two fit, however many blocks came before.
        let mut events = events(&[])[..1].to_vec();
        for index in 0..12 {
            events.push(sse(
                "content_block_start",
                &format!(r#"{{"type":"content_block_start","index":{index},"content_block":{{"type":"text","text":""}}}}"#),
            ));
            for piece in ["a", "b", "c"] {
                events.push(sse(
                    "content_block_delta",
                    &fragment(index, "text_delta", "text", piece),
                ));
            }
            events.push(sse(
                "content_block_stop",
                &format!(r#"{{"type":"content_block_stop","index":{index}}}"#),
            ));
        }
        let (_, assembled, templated) = run(stream("chatcmpl-1", "claude"), &events);
        assert_eq!(templated, 24);
        assert_eq!(assembled.choices[0].content, "abc".repeat(12));
    }

    #[test]
    fn templates_no_event_fits_stop_being_built() {
        // message_start and the thinking block's start.
        let mut s = after(2);
        let mut out = Vec::new();
        // Events that carry a new `seq` each: no template fits.
        let event = |seq: u8| {
            let data = fragment(0, "thinking_delta", "thinking", "x").replacen(
                '}',
                &format!(r#","seq":{seq}}}"#),
                1,
            );
            sse("content_block_delta", &data)
        };
        // (How the slot counts them is tested with it, in `scan`.)
        let max = TemplateSlot::<FragmentTemplate>::MAX_WASTED;
        for n in 0..20u8 {
            s.push_into(&event(n), &mut out).unwrap();
            assert_eq!(s.template.get_mut().is_some(), n < max, "{n}");
        }
        assert_eq!(s.assembled.choices[0].reasoning_content, "x".repeat(20));
    }

    #[test]
    fn the_frame_is_built_once_and_again_when_the_model_changes() {
        let mut s = stream("msg_1", "claude-sonnet-4-5");
        assert!(s.text_frame.is_none());
        for text in ["Hello", ", \"world\"\n", "é😀"] {
            let want = encoded(&s, text);
            assert_eq!(s.text_delta(text), want);
            assert!(s.text_frame.is_some());
        }
        message_start(&mut s, "claude-opus-4-1");
        assert!(s.text_frame.is_none());
        let want = encoded(&s, "x");
        assert_eq!(s.text_delta("x"), want);
        // A model that holds the frame's mark itself: no frame, and the chunk is encoded
        // whole, correctly all the same.
        message_start(&mut s, "\u{0}uniproxy text\u{0}");
        let want = encoded(&s, "x");
        assert_eq!(s.text_delta("x"), want);
        assert!(s.text_frame.is_none());
    }
}
