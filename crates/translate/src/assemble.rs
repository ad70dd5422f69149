//! The message a stream added up to, for the log store.

use std::collections::BTreeMap;

use serde::Serialize;
use uniproxy_wire::{
    ChatCompletion, ChatCompletionChunk, Choice, ErrorResponse, FinishReason, FunctionCall, Map,
    Message, MessageContent, Role, ThinkingBlock, ThinkingBlockDelta, ToolCall, Usage,
};

/// What a stream said, put together: per choice the content, reasoning, refusal, tool calls and
/// finish reason, plus usage and the error that ended it, if any.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Assembled {
    /// The completion id.
    pub id: String,
    /// The model that answered.
    pub model: String,
    /// Unix seconds.
    pub created: u64,
    /// The choices, in the order they first came.
    pub choices: Vec<AssembledChoice>,
    /// Where the choices not at the place of their index are.
    #[serde(skip)]
    choices_at: Places,
    /// The usage, when the upstream reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The error that ended the stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorResponse>,
    /// For an error the upstream reported in the stream, the HTTP status it stands for (what
    /// the platform answers when the same error is not streamed); `None` for the stream's own
    /// faults (it broke off, or broke its platform's protocol).
    #[serde(skip)]
    pub error_status: Option<u16>,
    /// Whether text was left out, past [`MAX_KEPT`] bytes (the client got it all).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The bytes of text kept so far.
    #[serde(skip)]
    kept: usize,
}

/// The most text (content, reasoning, refusal, thinking, tool calls' names and arguments) an
/// assembled stream keeps, as much as a whole answer may hold: an endless or huge stream would
/// otherwise grow its record, in memory and then in the log, without bound. A chunk is kept
/// whole or not at all, so the record ends at most a chunk past it.
pub const MAX_KEPT: usize = 64 << 20;

/// One choice of an assembled stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AssembledChoice {
    /// The choice's index.
    pub index: u32,
    /// The text.
    pub content: String,
    /// The reasoning text.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reasoning_content: String,
    /// Whole thinking blocks with their signatures (Claude's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub thinking_blocks: Vec<ThinkingBlock>,
    /// The refusal text.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub refusal: String,
    /// The tool calls: by index when the upstream numbers them 0, 1, 2…, as they all do;
    /// otherwise in the order they first came.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<AssembledToolCall>,
    /// The legacy function call, given to a client that offered only `functions`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCall>,
    /// Where the tool calls not at the place of their index are.
    #[serde(skip)]
    tool_calls_at: Places,
    /// Why the model stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
}

/// One tool call of an assembled stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AssembledToolCall {
    /// The call id.
    pub id: String,
    /// The call's type when it is not `function`: `custom`, whose name and input are `name`
    /// and `arguments` here.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The function name.
    pub name: String,
    /// The arguments' JSON text (a custom call's input).
    pub arguments: String,
}

impl Assembled {
    /// An empty assembly.
    pub fn new(id: impl Into<String>, created: u64, model: impl Into<String>) -> Self {
        Assembled { id: id.into(), model: model.into(), created, ..Default::default() }
    }

    /// Whether a chunk's text is still kept ([`MAX_KEPT`]); once not, the record says it was
    /// truncated.
    pub(crate) fn keeps_text(&mut self) -> bool {
        self.truncated |= self.kept >= MAX_KEPT;
        !self.truncated
    }

    /// Counts `bytes` more of text kept.
    pub(crate) fn kept(&mut self, bytes: usize) {
        self.kept = self.kept.saturating_add(bytes);
    }

    /// The choice with this index, created on first use.
    pub fn choice(&mut self, index: u32) -> &mut AssembledChoice {
        let new = || AssembledChoice { index, ..Default::default() };
        self.choices_at.find_or_push(&mut self.choices, index, new)
    }

    /// Adds a fragment of a custom tool call (OpenAI's `custom` tools): its name, and a piece
    /// of its input, assembled as a function call's are.
    pub fn custom_call_fragment(
        &mut self,
        choice: u32,
        index: u32,
        id: Option<&str>,
        name: Option<&str>,
        input: Option<&str>,
    ) {
        let call = self.tool_call_fragment(choice, index, id, name, input);
        call.kind.get_or_insert_with(|| "custom".to_owned());
    }

    /// The index a tool-call fragment without one stands for. Gemini's OpenAI-compatible
    /// endpoint sends each call whole, without `index` and with an empty id; taken as 0, its
    /// calls `f` and `g` were one call `fg` with their arguments run together. A fragment
    /// with an id other than the last call's, or without an id but with a name, starts a new
    /// call after the last; any other (arguments only, or the last call's id) goes on with
    /// the last.
    pub(crate) fn unindexed_call(
        &mut self,
        choice: u32,
        id: Option<&str>,
        name: Option<&str>,
    ) -> u32 {
        let choice = self.choice(choice);
        let Some(last) = choice.tool_calls.last() else { return 0 };
        let last_at = choice.tool_calls.len() - 1;
        let index_of = |at: usize| {
            let moved = choice.tool_calls_at.elsewhere.iter().find(|(_, place)| **place == at);
            moved.map_or_else(|| u32::try_from(at).unwrap_or(u32::MAX), |(&index, _)| index)
        };
        let new_call = match id.filter(|id| !id.is_empty()) {
            Some(id) => id != last.id,
            None => name.is_some_and(|name| !name.is_empty()),
        };
        if !new_call {
            return index_of(last_at);
        }
        // After every index used so far, in place or elsewhere.
        let in_place = choice.tool_calls.len() - choice.tool_calls_at.elsewhere.len();
        let past_in_place = u32::try_from(in_place).unwrap_or(u32::MAX);
        let past_elsewhere =
            choice.tool_calls_at.elsewhere.keys().next_back().map(|i| i.saturating_add(1));
        past_in_place.max(past_elsewhere.unwrap_or(0))
    }

    /// Adds a piece of a legacy function call (`delta.function_call`, to a client that offered
    /// `functions`).
    pub(crate) fn function_call_fragment(
        &mut self,
        choice: u32,
        name: Option<&str>,
        arguments: Option<&str>,
    ) {
        let (name, arguments) = (name.unwrap_or_default(), arguments.unwrap_or_default());
        self.kept(name.len() + arguments.len());
        let call = self.choice(choice).function_call.get_or_insert_with(|| FunctionCall {
            name: String::new(),
            arguments: String::new(),
            extra: Map::new(),
        });
        call.name.push_str(name);
        call.arguments.push_str(arguments);
    }

    /// Adds a tool call fragment: the first fragment of a call brings its id and name. Gives
    /// back the call.
    pub fn tool_call_fragment(
        &mut self,
        choice: u32,
        index: u32,
        id: Option<&str>,
        name: Option<&str>,
        arguments: Option<&str>,
    ) -> &mut AssembledToolCall {
        let kept = [id, name, arguments].iter().flatten().map(|t| t.len()).sum();
        self.kept(kept);
        let choice = self.choice(choice);
        let call =
            choice.tool_calls_at.find_or_push(&mut choice.tool_calls, index, Default::default);
        // The id comes whole, in the first fragment; some servers repeat it (and the name) in
        // every one, which must not grow it.
        if let Some(id) = id.filter(|_| call.id.is_empty()) {
            call.id.push_str(id);
        }
        if let Some(name) = name.filter(|&n| call.name != n) {
            call.name.push_str(name);
        }
        if let Some(args) = arguments {
            call.arguments.push_str(args);
        }
        call
    }

    /// What [`add_chunk`](Self::add_chunk) does with a chunk of this head whose one choice
    /// carries `text` as its content and nothing else, without the chunk.
    pub(crate) fn add_content(
        &mut self,
        id: &str,
        created: u64,
        model: &str,
        choice: u32,
        text: &str,
    ) {
        self.head(id, created, model);
        if self.keeps_text() {
            self.kept(text.len());
            self.choice(choice).content.push_str(text);
        }
    }

    /// Takes a chunk's id, creation time and model where they are not known yet.
    fn head(&mut self, id: &str, created: u64, model: &str) {
        if self.id.is_empty() {
            self.id.push_str(id);
        }
        if self.model.is_empty() {
            self.model.push_str(model);
        }
        if self.created == 0 {
            self.created = created;
        }
    }

    /// Adds everything a chunk carries.
    pub fn add_chunk(&mut self, chunk: &ChatCompletionChunk) {
        self.head(&chunk.id, chunk.created, &chunk.model);
        let keep = self.keeps_text();
        for c in &chunk.choices {
            if let Some(delta) = &c.delta
                && keep
            {
                let mut kept = 0;
                let choice = self.choice(c.index);
                if let Some(Some(text)) = &delta.content {
                    choice.content.push_str(text);
                    kept += text.len();
                }
                if let Some(Some(text)) = &delta.reasoning_content {
                    choice.reasoning_content.push_str(text);
                    kept += text.len();
                }
                for b in delta.thinking_blocks.iter().flatten() {
                    let at = usize::try_from(b.index).unwrap_or(usize::MAX);
                    let at = at.min(choice.thinking_blocks.len());
                    kept += match &b.block {
                        ThinkingBlock::Thinking { thinking, signature, .. } => {
                            thinking.len() + signature.as_ref().map_or(0, String::len)
                        }
                        ThinkingBlock::RedactedThinking { data, .. } => data.len(),
                    };
                    choice.thinking_blocks.insert(at, b.block.clone());
                }
                if let Some(Some(text)) = &delta.refusal {
                    choice.refusal.push_str(text);
                    kept += text.len();
                }
                self.kept(kept);
                if let Some(f) = &delta.function_call {
                    let (name, arguments) = (f.name.as_deref(), f.arguments.as_deref());
                    self.function_call_fragment(c.index, name, arguments);
                }
                for tc in delta.tool_calls.iter().flatten() {
                    let f = tc.function.as_ref();
                    self.tool_call_fragment(
                        c.index,
                        tc.index,
                        tc.id.as_deref(),
                        f.and_then(|f| f.name.as_deref()),
                        f.and_then(|f| f.arguments.as_deref()),
                    );
                }
            }
            if let Some(reason) = c.finish_reason() {
                self.choice(c.index).finish_reason = Some(reason.clone());
            }
        }
        if let Some(usage) = chunk.usage() {
            self.usage = Some(usage.clone());
        }
    }

    /// Whether any choice has finished.
    pub fn finished(&self) -> bool {
        self.choices.iter().any(|c| c.finish_reason.is_some())
    }

    /// The assembly as a `chat.completion`, the shape of a non-stream answer.
    pub fn to_completion(&self) -> ChatCompletion {
        let mut choices: Vec<Choice> = self
            .choices
            .iter()
            .map(|c| {
                let tool_calls: Vec<ToolCall> = c
                    .tool_calls
                    .iter()
                    .map(|t| match &t.kind {
                        Some(kind) => {
                            let custom = serde_json::json!({"name": t.name, "input": t.arguments});
                            ToolCall {
                                id: t.id.clone(),
                                kind: kind.clone(),
                                function: None,
                                extra: Map::from_iter([(kind.clone(), custom)]),
                            }
                        }
                        None => ToolCall {
                            id: t.id.clone(),
                            kind: "function".to_owned(),
                            function: Some(FunctionCall {
                                name: t.name.clone(),
                                arguments: t.arguments.clone(),
                                extra: Map::new(),
                            }),
                            extra: Map::new(),
                        },
                    })
                    .collect();
                let mut message = Message::text(Role::Assistant, c.content.clone());
                if c.content.is_empty() && (!tool_calls.is_empty() || c.function_call.is_some()) {
                    message.content = Some(None);
                }
                message.function_call.clone_from(&c.function_call);
                if !c.reasoning_content.is_empty() {
                    message.reasoning_content = Some(Some(c.reasoning_content.clone()));
                }
                if !c.thinking_blocks.is_empty() {
                    message.thinking_blocks = Some(c.thinking_blocks.clone());
                }
                if !c.refusal.is_empty() {
                    message.refusal = Some(Some(c.refusal.clone()));
                }
                if !tool_calls.is_empty() {
                    message.tool_calls = Some(tool_calls);
                }
                Choice {
                    index: c.index,
                    message,
                    finish_reason: Some(c.finish_reason.clone()),
                    logprobs: None,
                    extra: Map::new(),
                }
            })
            .collect();
        choices.sort_by_key(|c| c.index);
        ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: self.usage.clone(),
            system_fingerprint: None,
            service_tier: None,
            extra: Map::new(),
        }
    }
}

/// Where the entries of a list numbered by the upstream are (choices, tool calls): the index is
/// the upstream's number, which a stream can set to anything (an `"index": 4000000000` once made
/// room for four billion tool calls, 288 GB, and aborted the process). Entries are pushed as
/// they first come, so memory follows what the upstream sent; while it numbers them 0, 1, 2…
/// in order, as every platform does, entry `i` is at place `i` and found with one comparison,
/// and only the entries after the first other number are looked up in a map.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Places {
    /// Index → place, for the entries from the first that was not at its index's place on.
    elsewhere: BTreeMap<u32, usize>,
}

impl Places {
    /// The entry for `index` in `entries`, pushed (made by `new`) when there is none.
    pub(crate) fn find_or_push<'a, T>(
        &mut self,
        entries: &'a mut Vec<T>,
        index: u32,
        new: impl FnOnce() -> T,
    ) -> &'a mut T {
        // Entries before the first in `elsewhere` are at their index's place.
        let in_place = entries.len().saturating_sub(self.elsewhere.len());
        let at = usize::try_from(index).ok().filter(|&i| i < in_place);
        let at = at.or_else(|| self.elsewhere.get(&index).copied()).filter(|&i| i < entries.len());
        let at = match at {
            Some(at) => at,
            None => {
                let at = entries.len();
                if !self.elsewhere.is_empty() || usize::try_from(index).ok() != Some(at) {
                    self.elsewhere.insert(index, at);
                }
                entries.push(new());
                at
            }
        };
        &mut entries[at]
    }
}

/// The text of a message's content, for translators that need plain text.
pub fn content_text(content: Option<&MessageContent>) -> String {
    content.map(MessageContent::joined_text).unwrap_or_default()
}

/// Replays a complete answer as a stream, for clients that asked for a stream from an
/// upstream that cannot stream: per choice a role-and-content chunk (tool calls included,
/// whole, and the message's other members, such as a reasoning text, with the choice's log
/// probabilities) and a finish chunk; then the usage chunk when `include_usage`; then `[DONE]`.
pub fn completion_to_frames(completion: &ChatCompletion, include_usage: bool) -> Vec<bytes::Bytes> {
    use uniproxy_wire::{ChunkChoice, Delta, FunctionCallDelta, ToolCallDelta};
    let new_chunk = || {
        let mut c = ChatCompletionChunk::new(
            completion.id.clone(),
            completion.created,
            completion.model.clone(),
        );
        c.system_fingerprint.clone_from(&completion.system_fingerprint);
        c
    };
    let mut frames = Vec::new();
    for choice in &completion.choices {
        let m = &choice.message;
        let tool_calls = m.tool_calls.as_ref().map(|calls| {
            calls
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    // A custom call goes whole, its `custom` member with it; an `index` the
                    // answer's call has (Ollama numbers them) is the delta's own, written once.
                    let mut extra = t.extra.clone();
                    extra.shift_remove("index");
                    ToolCallDelta {
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                        id: Some(t.id.clone()),
                        kind: Some(t.kind.clone()),
                        function: t.function.as_ref().map(|f| FunctionCallDelta {
                            name: Some(f.name.clone()),
                            arguments: Some(f.arguments.clone()),
                            extra: Map::new(),
                        }),
                        extra,
                    }
                })
                .collect()
        });
        let delta = Delta {
            role: Some(Role::Assistant),
            content: Some(m.content().map(MessageContent::joined_text)),
            refusal: m.refusal.clone(),
            reasoning_content: m.reasoning_content.clone(),
            thinking_blocks: m.thinking_blocks.as_ref().map(|blocks| {
                let numbered = blocks.iter().cloned().enumerate();
                numbered
                    .map(|(i, block)| ThinkingBlockDelta {
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                        block,
                    })
                    .collect()
            }),
            tool_calls,
            function_call: m.function_call.as_ref().map(|f| FunctionCallDelta {
                name: Some(f.name.clone()),
                arguments: Some(f.arguments.clone()),
                extra: Map::new(),
            }),
            // What the message has besides (Ollama's and OpenRouter's `reasoning`, OpenAI's
            // `annotations`) goes in the delta, where a stream from the same server has it.
            extra: m.extra.clone(),
        };
        let mut chunk = new_chunk();
        let mut c = ChunkChoice::new(choice.index, delta);
        if let Some(Some(logprobs)) = &choice.logprobs {
            // A stream gives a token's log probabilities with the chunk that has the token.
            c.logprobs = Some(Some(logprobs.clone()));
        }
        chunk.choices.push(c);
        frames.push(crate::sse::encode(&chunk));
        let mut finish = new_chunk();
        let mut c = ChunkChoice::new(choice.index, Delta::default());
        c.finish_reason = Some(choice.finish_reason.clone().flatten());
        finish.choices.push(c);
        frames.push(crate::sse::encode(&finish));
    }
    if include_usage && let Some(usage) = &completion.usage {
        let mut chunk = new_chunk();
        chunk.usage = Some(Some(usage.clone()));
        frames.push(crate::sse::encode(&chunk));
    }
    frames.push(bytes::Bytes::from_static(crate::sse::DONE_FRAME));
    frames
}

#[cfg(test)]
mod tests {
    use uniproxy_wire::{ChunkChoice, Delta};

    use super::*;

    #[test]
    fn an_id_and_name_repeated_in_every_fragment_are_kept_once() {
        let mut a = Assembled::default();
        a.tool_call_fragment(0, 0, Some("call_A"), Some("get_w"), Some("{\"ci"));
        a.tool_call_fragment(0, 0, Some("call_A"), Some("get_w"), Some("ty\":\"Paris\"}"));
        a.tool_call_fragment(0, 0, Some("call_A"), None, Some(""));
        // As OpenAI sends them: the id and name in the first fragment only.
        a.tool_call_fragment(0, 1, Some("call_B"), Some("now"), Some(""));
        a.tool_call_fragment(0, 1, None, None, Some("{}"));
        let calls = &a.choices[0].tool_calls;
        let got: Vec<_> =
            calls.iter().map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str())).collect();
        assert_eq!(got, [("call_A", "get_w", "{\"city\":\"Paris\"}"), ("call_B", "now", "{}")]);
    }

    /// An upstream's `"index": 4000000000` made room for four billion calls (288 GB): the
    /// allocation failed and aborted the process, with every stream in flight.
    #[test]
    fn a_tool_call_index_far_beyond_the_calls_sent_takes_one_place() {
        let mut a = Assembled::default();
        a.tool_call_fragment(0, 0, Some("call_A"), Some("a"), Some("{}"));
        a.tool_call_fragment(0, 1000, Some("call_B"), Some("b"), Some("{\"x\":"));
        assert_eq!(a.choices[0].tool_calls.len(), 2, "no room made for indexes never sent");
        a.tool_call_fragment(0, 4_000_000_000, Some("call_C"), Some("c"), Some("{}"));
        a.tool_call_fragment(0, 1000, None, None, Some("1}"));
        // After a number out of line, even the next one in line is found through the map.
        a.tool_call_fragment(0, 1, Some("call_D"), Some("d"), Some("{}"));
        a.tool_call_fragment(0, 4_000_000_000, Some("call_C"), Some("c"), None);
        let calls = &a.choices[0].tool_calls;
        let got: Vec<_> = calls.iter().map(|c| (c.name.as_str(), c.arguments.as_str())).collect();
        assert_eq!(got, [("a", "{}"), ("b", "{\"x\":1}"), ("c", "{}"), ("d", "{}")]);
        let completion = a.to_completion();
        let sent = completion.choices[0].message.tool_calls.as_ref().unwrap();
        assert_eq!(
            sent.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            ["call_A", "call_B", "call_C", "call_D"]
        );
    }

    #[test]
    fn choices_and_tool_calls_are_found_whatever_their_numbers() {
        // Choices numbered 0, 1, 2… in any order of arrival, and far out.
        let mut a = Assembled::default();
        for (choice, text) in [(1, "b"), (0, "a"), (u32::MAX, "z"), (2, "c"), (0, "a"), (1, "b")] {
            a.choice(choice).content.push_str(text);
        }
        let got: Vec<_> = a.choices.iter().map(|c| (c.index, c.content.as_str())).collect();
        assert_eq!(got, [(1, "bb"), (0, "aa"), (u32::MAX, "z"), (2, "c")]);
        // Tool calls as every platform numbers them: each at its index's place, none looked up.
        let mut a = Assembled::default();
        for round in 0..2 {
            for index in 0..5 {
                a.tool_call_fragment(
                    0,
                    index,
                    None,
                    None,
                    Some(if round == 0 { "{" } else { "}" }),
                );
            }
        }
        assert!(a.choices[0].tool_calls.iter().all(|c| c.arguments == "{}"));
        assert_eq!(a.choices[0].tool_calls.len(), 5);
        assert!(a.choices[0].tool_calls_at.elsewhere.is_empty());
    }

    #[test]
    fn a_custom_tool_call_replayed_as_a_stream_goes_whole() {
        let answer = br#"{"id":"chatcmpl-C1","object":"chat.completion","created":1754000000,"model":"gpt-5","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"custom","custom":{"name":"code_exec","input":"print(1)"}}]},"finish_reason":"tool_calls"}]}"#;
        let completion: ChatCompletion = uniproxy_wire::from_slice(answer).unwrap();
        let frames = completion_to_frames(&completion, false);
        let first = std::str::from_utf8(&frames[0]).unwrap();
        let chunk: serde_json::Value =
            serde_json::from_str(first.strip_prefix("data: ").unwrap().trim_end()).unwrap();
        assert_eq!(
            chunk["choices"][0]["delta"]["tool_calls"],
            serde_json::json!([{"index":0,"id":"call_1","type":"custom","custom":{"name":"code_exec","input":"print(1)"}}])
        );
    }

    /// Ollama's answers number their tool calls (`"index": 0` in each call of the message);
    /// replayed as a stream (SUPPORTS_STREAMING=false) each call went with that `index` and the
    /// delta's own, the one member twice, which a client that parses strictly (serde's derive,
    /// as async-openai's types do) refuses.
    #[test]
    fn an_ollama_answers_numbered_tool_calls_replay_with_one_index_each() {
        let answer = br#"{"choices":[{"finish_reason":"tool_calls","index":0,"message":{"content":"","role":"assistant","tool_calls":[{"function":{"arguments":"{\"city\":\"Paris\"}","name":"final_result"},"id":"call_o2vnpxrw","index":0,"type":"function"},{"function":{"arguments":"{}","name":"now"},"id":"call_k1","index":1,"type":"function"}]}}],"created":1776298298,"id":"chatcmpl-273","model":"gpt-oss:20b","object":"chat.completion","system_fingerprint":"fp_ollama"}"#;
        let completion: ChatCompletion = uniproxy_wire::from_slice(answer).unwrap();
        let frames = completion_to_frames(&completion, false);
        let first = std::str::from_utf8(&frames[0]).unwrap();
        let data = first.strip_prefix("data: ").unwrap().trim_end();
        assert_eq!(data.matches("\"index\":").count(), 3, "the choice's and one per call: {data}");
        let chunk: ChatCompletionChunk = uniproxy_wire::from_slice(data.as_bytes()).unwrap();
        let calls = chunk.choices[0].delta.as_ref().unwrap().tool_calls.as_ref().unwrap();
        let got: Vec<_> = calls.iter().map(|c| (c.index, c.id.as_deref().unwrap())).collect();
        assert_eq!(got, [(0, "call_o2vnpxrw"), (1, "call_k1")]);
    }

    /// With SUPPORTS_STREAMING=false an answer is replayed as a stream; its message's members
    /// the wire types do not model, Ollama's `reasoning` among them, and the choice's
    /// `logprobs` were left out, though the server's own stream has them in its deltas.
    #[test]
    fn a_replayed_answer_keeps_its_reasoning_and_log_probabilities() {
        let answer = br#"{"choices":[{"finish_reason":"stop","index":0,"logprobs":{"content":[{"token":"Paris.","logprob":-0.01,"bytes":[80,97,114,105,115,46],"top_logprobs":[]}]},"message":{"content":"Paris.","reasoning":"The capital of France is Paris.","role":"assistant"}}],"created":1776298297,"id":"chatcmpl-395","model":"gpt-oss:20b","object":"chat.completion","system_fingerprint":"fp_ollama","usage":{"completion_tokens":122,"prompt_tokens":134,"total_tokens":256}}"#;
        let completion: ChatCompletion = uniproxy_wire::from_slice(answer).unwrap();
        let frames = completion_to_frames(&completion, false);
        let first = std::str::from_utf8(&frames[0]).unwrap();
        let chunk: serde_json::Value =
            serde_json::from_str(first.strip_prefix("data: ").unwrap().trim_end()).unwrap();
        let choice = &chunk["choices"][0];
        assert_eq!(choice["delta"]["reasoning"], "The capital of France is Paris.");
        assert_eq!(choice["delta"]["content"], "Paris.");
        assert_eq!(choice["logprobs"]["content"][0]["token"], "Paris.");
    }

    #[test]
    fn a_legacy_function_call_is_assembled_and_replayed_as_one() {
        let mut a = Assembled::new("chatcmpl-1", 7, "gemini");
        for (name, arguments) in [(Some("get_weather"), "{\"city\""), (None, ":\"Paris\"}")] {
            let mut chunk = ChatCompletionChunk::new("chatcmpl-1", 7, "gemini");
            let call = uniproxy_wire::FunctionCallDelta {
                name: name.map(str::to_owned),
                arguments: Some(arguments.to_owned()),
                extra: Map::new(),
            };
            let delta = Delta { function_call: Some(call), ..Default::default() };
            chunk.choices.push(ChunkChoice::new(0, delta));
            a.add_chunk(&chunk);
        }
        a.choice(0).finish_reason = Some(FinishReason::FunctionCall);
        let completion = a.to_completion();
        let message = serde_json::to_value(&completion.choices[0].message).unwrap();
        assert_eq!(
            message,
            serde_json::json!({"role":"assistant","content":null,"function_call":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}})
        );

        // Replayed as a stream (SUPPORTS_STREAMING=false): the call goes as `function_call`.
        let frames = completion_to_frames(&completion, false);
        let first = std::str::from_utf8(&frames[0]).unwrap();
        let chunk: serde_json::Value =
            serde_json::from_str(first.strip_prefix("data: ").unwrap().trim_end()).unwrap();
        assert_eq!(chunk["choices"][0]["delta"]["function_call"], message["function_call"]);
    }

    #[test]
    fn an_endless_stream_keeps_a_bounded_record_and_says_so() {
        let piece = "x".repeat(1 << 20);
        let chunk = |delta: Delta, reason: Option<FinishReason>| {
            let mut c = ChatCompletionChunk::new("chatcmpl-1", 1, "m");
            let mut choice = ChunkChoice::new(0, delta);
            choice.finish_reason = reason.map(Some);
            c.choices.push(choice);
            c
        };
        let text = Delta { content: Some(Some(piece.clone())), ..Default::default() };
        let mut a = Assembled::default();
        for _ in 0..(MAX_KEPT >> 20) + 8 {
            a.add_chunk(&chunk(text.clone(), None));
            a.add_content("chatcmpl-1", 1, "m", 0, &piece);
        }
        let kept = a.choices[0].content.len();
        assert!((MAX_KEPT..=MAX_KEPT + (1 << 20)).contains(&kept), "{kept}");
        assert!(a.truncated);
        // What ends the stream is still taken; the record says it is not whole.
        a.add_chunk(&chunk(Delta::default(), Some(FinishReason::Stop)));
        assert_eq!(a.choices[0].finish_reason, Some(FinishReason::Stop));
        a.choices[0].content.clear();
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["truncated"], true);
        assert_eq!(serde_json::to_value(Assembled::default()).unwrap().get("truncated"), None);
    }

    #[test]
    fn content_added_without_a_chunk_is_the_chunk_added() {
        for start in [Assembled::default(), Assembled::new("chatcmpl-0", 7, "before")] {
            let (mut by_chunk, mut by_content) = (start.clone(), start);
            for (choice, text) in [(0, "Hel"), (2, "lo"), (0, ", \"world\"")] {
                let mut chunk = ChatCompletionChunk::new("msg_1", 1_741_569_952, "claude");
                let delta = Delta { content: Some(Some(text.to_owned())), ..Default::default() };
                chunk.choices.push(ChunkChoice::new(choice, delta));
                by_chunk.add_chunk(&chunk);
                by_content.add_content("msg_1", 1_741_569_952, "claude", choice, text);
                assert_eq!(by_content, by_chunk);
            }
            assert_eq!(by_content.choices.len(), 2);
        }
    }
}
