//! OpenAI request → Anthropic Messages request.

use std::collections::HashSet;

use serde_json::{Value, json};
use uniproxy_wire::{
    ChatCompletionRequest, ContentPart, FileData, FunctionCall, FunctionCallChoice, ImageUrl, Map,
    Message, MessageContent, NamedToolChoice, ResponseFormat, Role, ThinkingBlock, Tool, ToolCall,
    ToolChoice as OpenAiToolChoice, ToolChoiceMode,
};

use super::wire::{
    ImageSource, InputBlock, InputMessage, InputRole, MessagesRequest, Metadata, OutputConfig,
    OutputFormat, SystemBlock, ThinkingConfig, ToolChoice, ToolDefinition, ToolResultContent,
};
use crate::openai_compat::cap_tokens;
use crate::{ProviderKind, TranslateError};

/// The tool a JSON object is asked for through (Anthropic's JSON mode: a tool whose input is
/// the answer); its input is the answer's content.
pub(crate) const JSON_TOOL: &str = "json_answer";

/// Anthropic's smallest thinking budget.
const MIN_THINKING_BUDGET: u32 = 1024;

/// Extra request fields known to be harmless hints that Anthropic lacks: an end user's id for
/// OpenAI's abuse checks, OpenAI's prompt-cache settings, and GPT-5's `verbosity` (how long an
/// answer should be). Any other is refused (`moderation` among them: the client asked for a
/// check that would not run).
const HARMLESS_EXTRA: &[&str] = &[
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    "verbosity",
];

/// The thinking budget for an OpenAI `reasoning_effort`, or `None` for no thinking.
/// The budget is later cut to half of `max_tokens` (see [`fit_budget`]).
fn thinking_budget(effort: &str) -> Result<Option<u32>, TranslateError> {
    Ok(match effort {
        "none" => None,
        "minimal" => Some(1024),
        "low" => Some(2048),
        "medium" => Some(4096),
        "high" => Some(8192),
        "xhigh" => Some(16384),
        "max" => Some(32768),
        _ => return Err(unsupported("reasoning_effort")),
    })
}

/// Fits a budget into the token limit: thinking counts against `max_tokens` and Anthropic
/// wants the budget below it, so it takes at most half and leaves the rest for the answer,
/// but never less than Anthropic's minimum of 1024 (`max_tokens` above 1024 is checked first).
fn fit_budget(budget: u32, max_tokens: u32) -> u32 {
    budget.min(max_tokens / 2).max(MIN_THINKING_BUDGET)
}

fn unsupported(field: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported { provider: ProviderKind::Anthropic, field: field.into() }
}

fn invalid(param: impl Into<String>, reason: &'static str) -> TranslateError {
    TranslateError::InvalidRequest { param: param.into(), reason }
}

/// The media type and the data of a `data:` URL without its scheme (`rest`), which must be
/// base64: Anthropic takes nothing else.
fn base64_data<'a>(rest: &'a str, path: &str) -> Result<(&'a str, &'a str), TranslateError> {
    let Some((meta, data)) = rest.split_once(',') else {
        return Err(invalid(path, "is a data: URL without data"));
    };
    let Some(media_type) = meta.strip_suffix(";base64") else {
        return Err(invalid(path, "is a data: URL that is not base64"));
    };
    Ok((crate::media_type(media_type), data))
}

/// Builds one Messages request; collects the JSON paths of the fields it leaves out.
pub(crate) struct RequestBuilder {
    dropped: Vec<String>,
    /// Tool call ids of earlier assistant messages, so tool results can be checked.
    call_ids: HashSet<String>,
    messages: Vec<InputMessage>,
    system: Vec<SystemBlock>,
    /// Whether a tool's `strict: true` goes to Anthropic (not to a model that refused it).
    strict_tools: bool,
    /// The paths of the assistant messages that gave thinking blocks back.
    gave_thinking: Vec<String>,
    /// Legacy `function_call`s of earlier assistant messages not answered yet: the id made up
    /// for each (the legacy shape has none) and the function's name, which the `function`
    /// message that answers it gives.
    legacy_calls: Vec<(String, String)>,
}

impl RequestBuilder {
    pub(crate) fn new() -> Self {
        RequestBuilder {
            dropped: Vec::new(),
            call_ids: HashSet::new(),
            messages: Vec::new(),
            system: Vec::new(),
            strict_tools: true,
            gave_thinking: Vec::new(),
            legacy_calls: Vec::new(),
        }
    }

    /// Leaves a tool's `strict` out (named in `dropped`): the model refused strict tools.
    pub(crate) fn without_strict_tools(mut self) -> Self {
        self.strict_tools = false;
        self
    }

    /// Whether the last assistant message so far calls tools without starting with its
    /// thinking: the conversation is in a tool loop, whose results follow, that Anthropic
    /// refuses to think in.
    fn in_tool_loop_without_thinking(&self) -> bool {
        let last = self.messages.iter().rev().find(|m| m.role == InputRole::Assistant);
        last.is_some_and(|m| {
            m.content.iter().any(|b| matches!(b, InputBlock::ToolUse { .. }))
                && !m.content.first().is_some_and(InputBlock::is_thinking)
        })
    }

    /// Takes the thinking blocks given back out of the conversation (thinking is off, and
    /// Anthropic refuses them in the last assistant turn then), naming them as dropped.
    fn strip_thinking(&mut self) {
        for path in std::mem::take(&mut self.gave_thinking) {
            self.dropped.push(format!("{path}.thinking_blocks"));
        }
        for message in std::mem::take(&mut self.messages) {
            let mut content = message.content;
            content.retain(|b| !b.is_thinking());
            if !content.is_empty() {
                self.push(message.role, content);
            }
        }
    }

    fn drop_field(&mut self, path: impl Into<String>) {
        self.dropped.push(path.into());
    }

    fn drop_extra(&mut self, path: &str, extra: &Map) {
        for key in extra.keys() {
            self.dropped.push(if path.is_empty() { key.clone() } else { format!("{path}.{key}") });
        }
    }

    /// [`drop_extra`](Self::drop_extra) for a part or a tool, but for its `cache_control`
    /// (Anthropic's prompt caching, which gateways take on OpenAI parts and tools as it is),
    /// given back to go on the block.
    fn cache_control(&mut self, path: &str, mut extra: Map) -> Option<Value> {
        // One that is not an object is no `cache_control` Anthropic takes: dropped, and said.
        let cache_control = extra
            .get("cache_control")
            .is_some_and(Value::is_object)
            .then(|| extra.shift_remove("cache_control"))
            .flatten();
        self.drop_extra(path, &extra);
        cache_control
    }

    /// Translates `request` for `model`, with `max` as the default and cap of the token limit.
    /// Returns the body and the dropped fields.
    pub(crate) fn build(
        mut self,
        mut request: ChatCompletionRequest,
        model: &str,
        max: u32,
    ) -> Result<(MessagesRequest, Vec<String>), TranslateError> {
        cap_tokens(&mut request, max, |r| r.max_tokens = Some(max));
        let max_tokens = request.token_limit().unwrap_or(max);
        let is_stream = request.is_stream();
        // Destructured so that a field added to the wire type is a compile error here until
        // it is decided whether Anthropic can express it.
        let ChatCompletionRequest {
            model: _,
            messages,
            tools,
            tool_choice,
            parallel_tool_calls,
            functions,
            function_call,
            response_format,
            mut temperature,
            mut top_p,
            n,
            stop,
            max_tokens: _,
            max_completion_tokens: _,
            presence_penalty,
            frequency_penalty,
            logit_bias,
            logprobs,
            top_logprobs,
            seed,
            user,
            stream: _,
            stream_options: _,
            reasoning_effort,
            metadata,
            store,
            service_tier,
            modalities,
            prediction,
            extra,
        } = request;

        // Legacy `functions` are tools to Claude; a client that offered only them gets at
        // most one call (OpenAI never makes parallel calls for `functions`, and the legacy
        // answer holds one), and `function_call` is its tool choice.
        let legacy = functions.as_ref().is_some_and(|f| !f.is_empty())
            && tools.as_ref().is_none_or(Vec::is_empty);
        let mut tools = tools;
        for function in functions.into_iter().flatten() {
            let tool =
                Tool { kind: "function".to_owned(), function: Some(function), extra: Map::new() };
            tools.get_or_insert_with(Vec::new).push(tool);
        }
        // The field the tool choice came from, for its errors: a client that sent only
        // `function_call` is told about `function_call`.
        let choice_field = if tool_choice.is_none() && function_call.is_some() {
            "function_call"
        } else {
            "tool_choice"
        };
        let tool_choice = match (tool_choice, function_call) {
            (Some(choice), Some(_)) => {
                self.drop_field("function_call");
                Some(choice)
            }
            // The legacy field takes `none`, `auto` or a name, nothing else.
            (None, Some(FunctionCallChoice::Mode(ToolChoiceMode::Other(_)))) => {
                return Err(unsupported("function_call"));
            }
            (None, Some(FunctionCallChoice::Mode(mode))) => Some(OpenAiToolChoice::Mode(mode)),
            (None, Some(FunctionCallChoice::Named(named))) => {
                Some(OpenAiToolChoice::Named(NamedToolChoice {
                    kind: "function".to_owned(),
                    function: named,
                    extra: Map::new(),
                }))
            }
            (choice, None) => choice,
        };
        let parallel_tool_calls = if legacy { Some(false) } else { parallel_tool_calls };
        // Structured outputs (`output_config.format`): a schema, as OpenAI's strict mode; the
        // answer is the JSON as text. Without a schema, a JSON object comes through a tool.
        let json_object = matches!(response_format, Some(ResponseFormat::JsonObject { .. }));
        let output_config = match response_format {
            None | Some(ResponseFormat::Text { .. }) => None,
            Some(ResponseFormat::JsonSchema { json_schema, .. }) => {
                let Some(schema) = json_schema.schema else {
                    let path = "response_format.json_schema.schema";
                    return Err(invalid(
                        path,
                        "is required: Claude's structured outputs follow a schema",
                    ));
                };
                // Always strict (constrained decoding); the model sees no name or description.
                if json_schema.description.is_some() {
                    self.drop_field("response_format.json_schema.description");
                }
                let schema = super::schema::strict(schema);
                Some(OutputConfig { format: OutputFormat::JsonSchema { schema } })
            }
            Some(ResponseFormat::JsonObject { .. }) => None,
            Some(ResponseFormat::Other(_)) => return Err(unsupported("response_format")),
        };
        if n.is_some_and(|n| n > 1) {
            return Err(unsupported("n"));
        }
        if logprobs == Some(true) {
            return Err(unsupported("logprobs"));
        }
        if top_logprobs.is_some_and(|n| n > 0) {
            return Err(unsupported("top_logprobs"));
        }
        if modalities.as_ref().is_some_and(|m| m.iter().any(|m| m != "text")) {
            return Err(unsupported("modalities"));
        }
        // `top_k`, which OpenAI lacks and clients send as an extension (as for vLLM), is
        // Anthropic's own.
        let mut top_k = None;
        // A member sent as `null` is not set (clients that write every member, generated
        // ones, send `"audio": null`).
        for (key, value) in extra.into_iter().filter(|(_, v)| !v.is_null()) {
            if key == "top_k" {
                match value {
                    Value::Number(n) if n.as_u64().is_some() => top_k = Some(n),
                    _ => return Err(invalid("top_k", "must be a whole number")),
                }
            } else if HARMLESS_EXTRA.contains(&key.as_str()) {
                self.drop_field(key);
            } else {
                return Err(unsupported(key));
            }
        }
        let harmless = [
            ("n", n.is_some()),
            ("logprobs", logprobs.is_some()),
            ("top_logprobs", top_logprobs.is_some()),
            ("modalities", modalities.is_some()),
            ("presence_penalty", presence_penalty.is_some()),
            ("frequency_penalty", frequency_penalty.is_some()),
            ("logit_bias", logit_bias.is_some()),
            ("seed", seed.is_some()),
            ("metadata", metadata.is_some()),
            ("store", store.is_some()),
            ("service_tier", service_tier.is_some()),
            ("prediction", prediction.is_some()),
        ];
        for (field, present) in harmless {
            if present {
                self.drop_field(field);
            }
        }

        for (i, message) in messages.into_iter().enumerate() {
            self.message(i, message)?;
        }
        self.trim_prefill();
        self.system_only_as_user();

        let tools = tools.filter(|t| !t.is_empty());
        let (tools, tool_choice) = match tools {
            Some(tools) => {
                // With `allowed_tools`, only those go: Anthropic has no list of allowed tools.
                let allowed = match &tool_choice {
                    Some(OpenAiToolChoice::AllowedTools(choice)) => {
                        Some(crate::allowed_tools(choice, &tools, ProviderKind::Anthropic)?)
                    }
                    _ => None,
                };
                let mut defs = Vec::with_capacity(tools.len());
                for (i, tool) in tools.into_iter().enumerate() {
                    let name = tool.function.as_ref().map(|f| f.name.as_str());
                    if let Some(names) = &allowed
                        && !name.is_some_and(|n| names.contains(n))
                    {
                        self.drop_field(format!("tools[{i}]"));
                        continue;
                    }
                    defs.push(self.tool(i, tool)?);
                }
                let choice = tool_choice_for(tool_choice.as_ref(), parallel_tool_calls)?;
                (Some(defs), choice)
            }
            None => {
                match &tool_choice {
                    None => {}
                    Some(OpenAiToolChoice::Mode(ToolChoiceMode::None | ToolChoiceMode::Auto)) => {
                        self.drop_field("tool_choice");
                    }
                    Some(_) => {
                        return Err(invalid(choice_field, "asks for a tool but there are none"));
                    }
                }
                if parallel_tool_calls.is_some() {
                    self.drop_field("parallel_tool_calls");
                }
                (None, None)
            }
        };
        let (tools, tool_choice) =
            if json_object { json_answer(tools, tool_choice)? } else { (tools, tool_choice) };

        // Anthropic refuses thinking where the request cannot have it: a tool choice that
        // forces a tool, and a tool loop whose last assistant message does not start with its
        // thinking block, signature and all (which only a client that gives `thinking_blocks`
        // back sends). Its error says to switch thinking off there; so does this.
        let forced = matches!(tool_choice, Some(ToolChoice::Any { .. } | ToolChoice::Tool { .. }));
        let mut budget = reasoning_effort.as_deref().map(thinking_budget).transpose()?.flatten();
        if budget.is_some() && (forced || self.in_tool_loop_without_thinking()) {
            budget = None;
            self.drop_field("reasoning_effort");
        }
        if budget.is_none() && !self.gave_thinking.is_empty() {
            self.strip_thinking();
        }
        let thinking = match budget {
            Some(budget) => {
                if max_tokens <= MIN_THINKING_BUDGET {
                    return Err(invalid(
                        "reasoning_effort",
                        "Anthropic thinking needs a token limit above 1024",
                    ));
                }
                // Thinking allows only the default sampling: a temperature of 1, no top_p and
                // no top_k.
                if temperature.as_ref().is_some_and(|t| t.as_f64() != Some(1.0)) {
                    temperature = None;
                    self.drop_field("temperature");
                }
                if top_p.take().is_some() {
                    self.drop_field("top_p");
                }
                if top_k.take().is_some() {
                    self.drop_field("top_k");
                }
                Some(ThinkingConfig::Enabled { budget_tokens: fit_budget(budget, max_tokens) })
            }
            None => None,
        };
        // Claude's current models take a temperature or a top_p, not both ("`temperature` and
        // `top_p` cannot both be specified for this model"), and clients send both (OpenAI's
        // defaults written out): the temperature stays.
        if temperature.is_some() && top_p.take().is_some() {
            self.drop_field("top_p");
        }

        // Anthropic refuses a stop sequence that is empty or only whitespace ("\n" is a common
        // one): it cannot stop there, so the sequence is left out and said.
        let many = matches!(stop, Some(uniproxy_wire::Stop::Many(_)));
        let mut stop_sequences = stop.map(|s| s.to_vec()).unwrap_or_default();
        for (i, sequence) in stop_sequences.iter().enumerate() {
            if sequence.trim().is_empty() {
                self.drop_field(if many { format!("stop[{i}]") } else { "stop".to_owned() });
            }
        }
        stop_sequences.retain(|s| !s.trim().is_empty());
        let stop_sequences = (!stop_sequences.is_empty()).then_some(stop_sequences);
        let body = MessagesRequest {
            model: model.to_owned(),
            max_tokens,
            system: self.system,
            messages: self.messages,
            metadata: user.map(|user_id| Metadata { user_id }),
            stop_sequences,
            stream: is_stream.then_some(true),
            temperature,
            top_p,
            top_k,
            tools,
            tool_choice,
            thinking,
            output_config,
        };
        Ok((body, self.dropped))
    }

    fn message(&mut self, i: usize, message: Message) -> Result<(), TranslateError> {
        let Message {
            role,
            content,
            name,
            refusal,
            tool_calls,
            tool_call_id,
            function_call,
            reasoning_content,
            thinking_blocks,
            extra,
        } = message;
        let path = format!("messages[{i}]");
        // A `function` message's name says which call it answers; other names do not go.
        if name.is_some() && role != Role::Function {
            self.drop_field(format!("{path}.name"));
        }
        self.drop_extra(&path, &extra);
        let content = content.flatten();
        match role {
            Role::System | Role::Developer => {
                for (text, cache_control) in self.texts(&path, content)? {
                    if !text.trim().is_empty() {
                        self.system.push(SystemBlock::text(text, cache_control));
                    }
                }
            }
            Role::User => {
                let blocks = self.blocks(&path, content)?;
                // An empty message says nothing, and Anthropic refuses one.
                if !blocks.is_empty() {
                    self.push(InputRole::User, blocks);
                }
            }
            Role::Assistant => {
                if reasoning_content.is_some() {
                    // Anthropic takes earlier thinking back only with its signature: as
                    // `thinking_blocks`, below.
                    self.drop_field(format!("{path}.reasoning_content"));
                }
                if refusal.is_some() {
                    self.drop_field(format!("{path}.refusal"));
                }
                // Thinking first, as Anthropic wants it.
                let mut blocks = self.thinking_given(&path, thinking_blocks);
                blocks.extend(self.blocks(&path, content)?);
                for (j, call) in tool_calls.into_iter().flatten().enumerate() {
                    blocks.push(self.tool_use(&format!("{path}.tool_calls[{j}]"), call)?);
                }
                if let Some(call) = function_call {
                    blocks.push(self.legacy_call(&path, call)?);
                }
                if !blocks.is_empty() {
                    self.push(InputRole::Assistant, blocks);
                }
            }
            Role::Tool => {
                let Some(id) = tool_call_id else {
                    return Err(invalid(format!("{path}.tool_call_id"), "is required"));
                };
                if !self.call_ids.contains(&id) {
                    return Err(invalid(
                        format!("{path}.tool_call_id"),
                        "answers no tool call of an earlier assistant message",
                    ));
                }
                self.push_tool_result(&path, tool_use_id(id), content)?;
            }
            Role::Function => {
                // The latest call of that name not answered yet.
                let Some(name) = name else {
                    return Err(invalid(format!("{path}.name"), "a function message needs one"));
                };
                let Some(at) = self.legacy_calls.iter().rposition(|(_, n)| *n == name) else {
                    return Err(invalid(
                        format!("{path}.name"),
                        "answers no function_call of an earlier assistant message",
                    ));
                };
                let (tool_use_id, _) = self.legacy_calls.remove(at);
                self.push_tool_result(&path, tool_use_id, content)?;
            }
            Role::Other(_) => return Err(unsupported(format!("{path}.role"))),
        }
        Ok(())
    }

    /// The thinking blocks an assistant message gives back (as Anthropic answered them). One
    /// without its signature, which Anthropic refuses, is left out.
    fn thinking_given(&mut self, path: &str, given: Option<Vec<ThinkingBlock>>) -> Vec<InputBlock> {
        let mut blocks = Vec::new();
        for (j, block) in given.into_iter().flatten().enumerate() {
            let at = format!("{path}.thinking_blocks[{j}]");
            // What else the block holds goes unsent, and is named: Anthropic takes no
            // `cache_control` on a thinking block. Not its stream `index`, which the proxy wrote
            // itself and a client that joins the stream's blocks may keep.
            let mut unsent = |mut extra: Map| {
                extra.shift_remove("index");
                self.drop_extra(&at, &extra);
            };
            match block {
                ThinkingBlock::Thinking { thinking, signature: Some(signature), extra }
                    if !signature.is_empty() =>
                {
                    unsent(extra);
                    blocks.push(InputBlock::Thinking { thinking, signature });
                }
                ThinkingBlock::RedactedThinking { data, extra } => {
                    unsent(extra);
                    blocks.push(InputBlock::RedactedThinking { data });
                }
                ThinkingBlock::Thinking { .. } => self.drop_field(at),
            }
        }
        if !blocks.is_empty() {
            self.gave_thinking.push(path.to_owned());
        }
        blocks
    }

    /// Trims the whitespace off the end of a last assistant turn (a prefill the answer goes on
    /// from): Anthropic refuses one that ends in whitespace (400 "messages: final assistant
    /// content cannot end with trailing whitespace"), and clients write prefills such as
    /// `"Answer: "`. Blank texts make no block, so the trimmed text is never empty.
    fn trim_prefill(&mut self) {
        let Some(last) = self.messages.last_mut().filter(|m| m.role == InputRole::Assistant) else {
            return;
        };
        if let Some(InputBlock::Text { text, .. }) = last.content.last_mut() {
            text.truncate(text.trim_end().len());
        }
    }

    /// A conversation of system (or developer) messages only, which OpenAI answers as a
    /// prompt: Anthropic refuses a request without messages (400 "messages: at least one
    /// message is required"), so the instructions go as the user's turn.
    fn system_only_as_user(&mut self) {
        if self.messages.is_empty() && !self.system.is_empty() {
            let blocks = std::mem::take(&mut self.system)
                .into_iter()
                .map(|b| InputBlock::Text { text: b.text, cache_control: b.cache_control })
                .collect();
            self.messages.push(InputMessage { role: InputRole::User, content: blocks });
        }
    }

    /// Appends blocks to the conversation, merging consecutive turns of one role.
    fn push(&mut self, role: InputRole, blocks: Vec<InputBlock>) {
        match self.messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => self.messages.push(InputMessage { role, content: blocks }),
        }
    }

    /// Adds the result of the call `tool_use_id`, the content of the `tool` or `function`
    /// message at `path`, to the user turn that follows the calls, after the results already
    /// there: Anthropic wants the results first in that turn.
    fn push_tool_result(
        &mut self,
        path: &str,
        tool_use_id: String,
        content: Option<MessageContent>,
    ) -> Result<(), TranslateError> {
        let content = match content {
            Some(MessageContent::Text(text)) => ToolResultContent::Text(text),
            None => ToolResultContent::Text(String::new()),
            parts @ Some(MessageContent::Parts(_)) => {
                ToolResultContent::Blocks(self.blocks(path, parts)?)
            }
        };
        let block = InputBlock::ToolResult { tool_use_id, content };
        match self.messages.last_mut() {
            Some(last) if last.role == InputRole::User => {
                let at = last
                    .content
                    .iter()
                    .position(|b| !matches!(b, InputBlock::ToolResult { .. }))
                    .unwrap_or(last.content.len());
                last.content.insert(at, block);
            }
            _ => self.messages.push(InputMessage { role: InputRole::User, content: vec![block] }),
        }
        Ok(())
    }

    /// The texts of a system or developer message, each with its `cache_control`.
    fn texts(
        &mut self,
        path: &str,
        content: Option<MessageContent>,
    ) -> Result<Vec<(String, Option<Value>)>, TranslateError> {
        match content {
            None => Ok(Vec::new()),
            Some(MessageContent::Text(text)) => Ok(vec![(text, None)]),
            Some(MessageContent::Parts(parts)) => parts
                .into_iter()
                .enumerate()
                .map(|(j, part)| match part {
                    ContentPart::Text { text, extra } => {
                        Ok((text, self.cache_control(&format!("{path}.content[{j}]"), extra)))
                    }
                    ContentPart::ImageUrl { .. }
                    | ContentPart::InputAudio { .. }
                    | ContentPart::File { .. }
                    | ContentPart::Refusal { .. }
                    | ContentPart::Unknown(_) => Err(unsupported(format!("{path}.content[{j}]"))),
                })
                .collect(),
        }
    }

    /// The blocks of a user, assistant or tool message's content. Blank texts make no block:
    /// Anthropic refuses a text block that is empty or only whitespace (clients send
    /// `"content": ""` beside tool calls).
    fn blocks(
        &mut self,
        path: &str,
        content: Option<MessageContent>,
    ) -> Result<Vec<InputBlock>, TranslateError> {
        let parts = match content {
            None => return Ok(Vec::new()),
            Some(MessageContent::Text(text)) if text.trim().is_empty() => return Ok(Vec::new()),
            Some(MessageContent::Text(text)) => {
                return Ok(vec![InputBlock::Text { text, cache_control: None }]);
            }
            Some(MessageContent::Parts(parts)) => parts,
        };
        let mut blocks = Vec::with_capacity(parts.len());
        for (j, part) in parts.into_iter().enumerate() {
            let part_path = format!("{path}.content[{j}]");
            let block = match part {
                // A refusal the assistant gave earlier is what it said.
                ContentPart::Text { text, extra }
                | ContentPart::Refusal { refusal: text, extra } => {
                    let cache_control = self.cache_control(&part_path, extra);
                    if text.trim().is_empty() {
                        continue;
                    }
                    InputBlock::Text { text, cache_control }
                }
                ContentPart::ImageUrl { image_url, extra } => {
                    let cache_control = self.cache_control(&part_path, extra);
                    self.image(&format!("{part_path}.image_url"), image_url, cache_control)?
                }
                ContentPart::File { file, extra } => {
                    let cache_control = self.cache_control(&part_path, extra);
                    self.file(&format!("{part_path}.file"), file, cache_control)?
                }
                ContentPart::InputAudio { .. } => return Err(unsupported(part_path)),
                ContentPart::Unknown(_) => return Err(unsupported(format!("{part_path}.type"))),
            };
            blocks.push(block);
        }
        Ok(blocks)
    }

    /// A file sent inline (`file_data`, a base64 `data:` URL): a PDF becomes a document block
    /// titled with the file's name, an image an image block. Uploaded files (`file_id`) live in
    /// OpenAI's storage, which Anthropic cannot read.
    fn file(
        &mut self,
        path: &str,
        file: FileData,
        cache_control: Option<Value>,
    ) -> Result<InputBlock, TranslateError> {
        let FileData { file_data, file_id, filename, extra } = file;
        self.drop_extra(path, &extra);
        let (Some(url), None) = (file_data, file_id) else {
            return Err(unsupported(format!("{path}.file_id")));
        };
        let data_path = format!("{path}.file_data");
        let Some(rest) = url.strip_prefix("data:") else {
            return Err(invalid(data_path, "is not a data: URL"));
        };
        let (media_type, data) = base64_data(rest, &data_path)?;
        let source =
            ImageSource::Base64 { media_type: media_type.to_owned(), data: data.to_owned() };
        if media_type == "application/pdf" {
            Ok(InputBlock::Document { source, title: filename, cache_control })
        } else if media_type.starts_with("image/") {
            if filename.is_some() {
                self.drop_field(format!("{path}.filename"));
            }
            Ok(InputBlock::Image { source, cache_control })
        } else {
            Err(invalid(data_path, "is neither a PDF nor an image, the files Anthropic reads"))
        }
    }

    fn image(
        &mut self,
        path: &str,
        image: ImageUrl,
        cache_control: Option<Value>,
    ) -> Result<InputBlock, TranslateError> {
        let ImageUrl { url, detail, extra } = image;
        if detail.is_some() {
            self.drop_field(format!("{path}.detail"));
        }
        self.drop_extra(path, &extra);
        let source = if let Some(rest) = url.strip_prefix("data:") {
            let (media_type, data) = base64_data(rest, &format!("{path}.url"))?;
            ImageSource::Base64 { media_type: media_type.to_owned(), data: data.to_owned() }
        } else if url.starts_with("https://") || url.starts_with("http://") {
            ImageSource::Url { url }
        } else {
            return Err(invalid(format!("{path}.url"), "is neither an http(s) nor a data: URL"));
        };
        Ok(InputBlock::Image { source, cache_control })
    }

    fn tool_use(&mut self, path: &str, call: ToolCall) -> Result<InputBlock, TranslateError> {
        let ToolCall { id, kind, function, extra } = call;
        // A custom call (or a newer type) has no tool_use block to become: refused as its
        // tool is (`tools[i].type`).
        let Some(function) = function.filter(|_| kind == "function") else {
            return Err(unsupported(format!("{path}.type")));
        };
        self.drop_extra(path, &extra);
        let input = self.tool_input(&format!("{path}.function"), &function)?;
        self.call_ids.insert(id.clone());
        Ok(InputBlock::ToolUse { id: tool_use_id(id), name: function.name, input })
    }

    /// A legacy `function_call` of the assistant message at `path`, as a `tool_use` whose id
    /// is made up from the message's place (the legacy shape has none), kept for the
    /// `function` message that answers it.
    fn legacy_call(
        &mut self,
        path: &str,
        call: FunctionCall,
    ) -> Result<InputBlock, TranslateError> {
        let input = self.tool_input(&format!("{path}.function_call"), &call)?;
        let id = tool_use_id(format!("legacy_{}", path.replace(['[', ']', '.'], "")));
        self.legacy_calls.push((id.clone(), call.name.clone()));
        Ok(InputBlock::ToolUse { id, name: call.name, input })
    }

    /// A call's arguments (at `path.arguments`) as Claude's `input` object; `""` is `{}`.
    fn tool_input(&mut self, path: &str, function: &FunctionCall) -> Result<Value, TranslateError> {
        self.drop_extra(path, &function.extra);
        let args_path = format!("{path}.arguments");
        let input = if function.arguments.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str::<Value>(&function.arguments).map_err(|source| {
                TranslateError::InvalidToolArguments { param: args_path.clone(), source }
            })?
        };
        if !input.is_object() {
            return Err(invalid(args_path, "is not a JSON object"));
        }
        Ok(input)
    }

    fn tool(&mut self, i: usize, tool: Tool) -> Result<ToolDefinition, TranslateError> {
        let path = format!("tools[{i}]");
        let Tool { kind, function, extra } = tool;
        let Some(function) = function.filter(|_| kind == "function") else {
            return Err(unsupported(format!("{path}.type")));
        };
        let cache_control = self.cache_control(&path, extra);
        let fpath = format!("{path}.function");
        // `strict: false` is Anthropic's default, so it need not go.
        let strict = function.strict.filter(|&s| s && self.strict_tools);
        if function.strict.is_some() && strict.is_none() {
            self.drop_field(format!("{fpath}.strict"));
        }
        self.drop_extra(&fpath, &function.extra);
        // A strict tool's input is decoded as structured outputs are, with their limits.
        let input_schema = match input_schema(function.parameters) {
            schema if strict.is_some() => super::schema::strict(schema),
            schema => schema,
        };
        Ok(ToolDefinition {
            name: function.name,
            description: function.description,
            input_schema,
            strict,
            cache_control,
        })
    }
}

/// A tool call's id as Anthropic takes it (`^[a-zA-Z0-9_-]+$`): any other character becomes
/// `_`, the same in the call and in its result. Ids Anthropic made pass as they are; others
/// come from a conversation begun elsewhere (Moonshot's `functions.get_weather:0`).
fn tool_use_id(id: String) -> String {
    let fits = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if id.chars().all(fits) {
        id
    } else {
        id.chars().map(|c| if fits(c) { c } else { '_' }).collect()
    }
}

/// A tool's `input_schema`, which Anthropic requires to say `"type": "object"`: OpenAI takes
/// no parameters, `{}`, and an object schema that leaves the type out, all as an object's.
fn input_schema(parameters: Option<Value>) -> Value {
    match parameters {
        None => json!({"type": "object", "properties": {}}),
        Some(Value::Object(mut schema)) if !schema.contains_key("type") => {
            if schema.is_empty() {
                schema.insert("properties".to_owned(), json!({}));
            }
            schema.insert("type".to_owned(), json!("object"));
            Value::Object(schema)
        }
        Some(schema) => schema,
    }
}

/// The tools and tool choice that ask for a JSON object: the model must answer through
/// [`JSON_TOOL`], or, when the client's tools are offered and it may choose, through one of
/// them or that one. A choice that already forces a client's tool is left as it is: its answer
/// is a call.
fn json_answer(
    tools: Option<Vec<ToolDefinition>>,
    choice: Option<ToolChoice>,
) -> Result<(Option<Vec<ToolDefinition>>, Option<ToolChoice>), TranslateError> {
    let mut tools = tools.unwrap_or_default();
    if tools.iter().any(|t| t.name == JSON_TOOL) {
        return Err(invalid(
            "response_format",
            "json_object is asked of Claude through a tool named json_answer, and a tool of \
             the request has that name",
        ));
    }
    let choice = match choice {
        Some(forced @ (ToolChoice::Any { .. } | ToolChoice::Tool { .. })) => {
            return Ok((Some(tools), Some(forced)));
        }
        Some(ToolChoice::Auto { disable_parallel_tool_use }) if !tools.is_empty() => {
            ToolChoice::Any { disable_parallel_tool_use }
        }
        None if !tools.is_empty() => ToolChoice::Any { disable_parallel_tool_use: None },
        Some(ToolChoice::Auto { .. } | ToolChoice::None) | None => {
            ToolChoice::Tool { name: JSON_TOOL.to_owned(), disable_parallel_tool_use: None }
        }
    };
    tools.push(ToolDefinition {
        name: JSON_TOOL.to_owned(),
        description: Some(
            "Give your answer as a JSON object: the input of this tool is the answer, exactly \
             as the user gets it."
                .to_owned(),
        ),
        input_schema: json!({"type": "object"}),
        strict: None,
        cache_control: None,
    });
    Ok((Some(tools), Some(choice)))
}

/// `tool_choice` and `parallel_tool_calls` for a request that has tools (an `allowed_tools`
/// choice already checked by [`crate::allowed_tools`]).
fn tool_choice_for(
    choice: Option<&OpenAiToolChoice>,
    parallel: Option<bool>,
) -> Result<Option<ToolChoice>, TranslateError> {
    let disable = (parallel == Some(false)).then_some(true);
    Ok(match choice {
        None => disable.map(|d| ToolChoice::Auto { disable_parallel_tool_use: Some(d) }),
        Some(OpenAiToolChoice::Mode(mode)) => match mode {
            ToolChoiceMode::Auto => Some(ToolChoice::Auto { disable_parallel_tool_use: disable }),
            ToolChoiceMode::Required => {
                Some(ToolChoice::Any { disable_parallel_tool_use: disable })
            }
            // No tool is called, so there is nothing to run in parallel.
            ToolChoiceMode::None => Some(ToolChoice::None),
            ToolChoiceMode::Other(_) => return Err(unsupported("tool_choice")),
        },
        Some(OpenAiToolChoice::Named(named)) => Some(ToolChoice::Tool {
            name: named.function.name.clone(),
            disable_parallel_tool_use: disable,
        }),
        Some(OpenAiToolChoice::AllowedTools(choice)) => {
            Some(if choice.allowed_tools.mode == ToolChoiceMode::Required {
                ToolChoice::Any { disable_parallel_tool_use: disable }
            } else {
                ToolChoice::Auto { disable_parallel_tool_use: disable }
            })
        }
        Some(OpenAiToolChoice::Other(_)) => return Err(unsupported("tool_choice")),
    })
}

#[cfg(test)]
mod tests {
    use super::{fit_budget, thinking_budget};

    #[test]
    fn each_reasoning_effort_has_its_budget_within_the_token_limit() {
        let ladder = ["none", "minimal", "low", "medium", "high", "xhigh", "max"]
            .map(|effort| thinking_budget(effort).unwrap().map(|b| fit_budget(b, 100_000)));
        let want = [None, Some(1024), Some(2048), Some(4096), Some(8192), Some(16384), Some(32768)];
        assert_eq!(ladder, want);
        // Half of the limit at most, but never below Anthropic's minimum.
        assert_eq!(thinking_budget("max").unwrap().map(|b| fit_budget(b, 8000)), Some(4000));
        assert_eq!(thinking_budget("max").unwrap().map(|b| fit_budget(b, 1500)), Some(1024));
        assert!(thinking_budget("extreme").is_err());
    }
}
