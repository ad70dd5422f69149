//! OpenAI request → Gemini `generateContent` body.

use std::collections::HashMap;

use serde_json::Value;
use uniproxy_wire::{
    ChatCompletionRequest, ContentPart, FunctionCallChoice, FunctionDefinition, Map, Message,
    MessageContent, ResponseFormat, Role, ToolCall, ToolChoice, ToolChoiceMode,
};

use super::schema;
use super::thought_signature_of;
use super::wire::{
    Blob, Content, FileData, FunctionCall, FunctionCallingConfig, FunctionDeclaration,
    FunctionResponse, GeminiTool, GenerateContentRequest, GenerationConfig, Part, ThinkingConfig,
    ToolConfig,
};
use crate::{ProviderKind, TranslateError};

/// Request fields outside the wire types' model that would change the answer, or ask for a
/// check that would not run (OpenAI's `moderation`), and that Gemini cannot express.
const REFUSED_EXTRAS: &[&str] = &["audio", "web_search_options", "moderation"];

fn unsupported(field: impl Into<String>) -> TranslateError {
    TranslateError::Unsupported { provider: ProviderKind::Google, field: field.into() }
}

fn invalid(param: impl Into<String>, reason: &'static str) -> TranslateError {
    TranslateError::InvalidRequest { param: param.into(), reason }
}

/// The error for a schema at `at` that cannot be reduced: one that expands past what the
/// reduction may copy is too large, not inexpressible (its `$ref`s are fine one by one).
fn schema_error(at: &str, e: schema::SchemaError) -> TranslateError {
    // The reason states the budget: keep the two together.
    const _: () = assert!(schema::MAX_COPIED == 4 << 20);
    let param = format!("{at}{}", e.path);
    if e.over_budget {
        invalid(
            param,
            "the schema expands past the 4 MiB the proxy copies when reducing it for Gemini \
             (`$ref`s inlined, type lists and `allOf`s copied out)",
        )
    } else {
        unsupported(param)
    }
}

/// Builds the Gemini body for a request whose token limit is already applied. Returns the body
/// and the JSON paths of the harmless fields left out.
///
/// # Errors
/// [`TranslateError::Unsupported`] for what Gemini cannot express,
/// [`TranslateError::InvalidRequest`] and [`TranslateError::InvalidToolArguments`] for an
/// ill-formed conversation.
pub(crate) fn build(
    request: &ChatCompletionRequest,
) -> Result<(GenerateContentRequest, Vec<String>), TranslateError> {
    let mut b = Builder::default();
    b.check_fields(request)?;
    b.messages(&request.messages)?;
    b.system_only_as_user();
    let (tools, names) = b.tools(request)?;
    let tool_config = tool_config(request, &names)?;
    let generation_config = b.generation_config(request)?;
    let body = GenerateContentRequest {
        contents: b.contents,
        system_instruction: (!b.system.is_empty()).then(|| Content {
            role: None,
            parts: b.system,
            extra: Map::new(),
        }),
        tools,
        tool_config,
        generation_config,
        extra: Map::new(),
    };
    Ok((body, b.dropped))
}

#[derive(Default)]
struct Builder {
    contents: Vec<Content>,
    system: Vec<Part>,
    dropped: Vec<String>,
    /// Tool call id → function name, from the assistant turns seen so far.
    call_names: HashMap<String, String>,
    /// The ids of the last model turn's calls, in order: its results go in that order.
    turn_calls: Vec<String>,
    /// Where the content of the last model turn's results is, once one came.
    results_at: Option<usize>,
    /// What reducing the request's schemas may still copy, for all of them together.
    schema_budget: schema::Budget,
}

impl Builder {
    fn drop(&mut self, path: impl Into<String>) {
        self.dropped.push(path.into());
    }

    /// Names in `dropped` the members of `extra`, what this version does not model of the
    /// client's object at `path` (a part's `cache_control`), which Gemini never sees; as the
    /// Anthropic translator names them. A member sent as `null` is not set.
    fn drop_extra(&mut self, path: &str, extra: &Map) {
        for (k, _) in extra.iter().filter(|(_, v)| !v.is_null()) {
            self.drop(format!("{path}.{k}"));
        }
    }

    /// [`drop_extra`](Self::drop_extra) for a content part at `path` and the object it holds.
    fn drop_part_extra(&mut self, path: &str, part: &ContentPart) {
        match part {
            ContentPart::Text { extra, .. } | ContentPart::Refusal { extra, .. } => {
                self.drop_extra(path, extra);
            }
            ContentPart::ImageUrl { image_url, extra } => {
                self.drop_extra(path, extra);
                self.drop_extra(&format!("{path}.image_url"), &image_url.extra);
            }
            ContentPart::InputAudio { input_audio, extra } => {
                self.drop_extra(path, extra);
                self.drop_extra(&format!("{path}.input_audio"), &input_audio.extra);
            }
            ContentPart::File { file, extra } => {
                self.drop_extra(path, extra);
                if file.filename.is_some() {
                    // `inlineData` has no name.
                    self.drop(format!("{path}.file.filename"));
                }
                self.drop_extra(&format!("{path}.file"), &file.extra);
            }
            // Refused where it stands.
            ContentPart::Unknown(_) => {}
        }
    }

    fn check_fields(&mut self, r: &ChatCompletionRequest) -> Result<(), TranslateError> {
        if r.logprobs == Some(true) {
            return Err(unsupported("logprobs"));
        }
        if r.logprobs == Some(false) {
            self.drop("logprobs");
        }
        if r.top_logprobs.is_some_and(|n| n > 0) {
            return Err(unsupported("top_logprobs"));
        }
        if r.top_logprobs.is_some() {
            self.drop("top_logprobs");
        }
        if let Some(m) = &r.modalities {
            if m.iter().any(|m| m != "text") {
                return Err(unsupported("modalities"));
            }
            self.drop("modalities");
        }
        let harmless = [
            ("logit_bias", r.logit_bias.is_some()),
            ("user", r.user.is_some()),
            ("metadata", r.metadata.is_some()),
            ("store", r.store.is_some()),
            ("service_tier", r.service_tier.is_some()),
            ("parallel_tool_calls", r.parallel_tool_calls.is_some()),
            ("prediction", r.prediction.is_some()),
        ];
        for (name, present) in harmless {
            if present {
                self.drop(name);
            }
        }
        if let Some(o) = &r.stream_options {
            // `include_usage` is honoured by the stream translator; Gemini always sends usage.
            for k in o.extra.keys() {
                self.drop(format!("stream_options.{k}"));
            }
        }
        // A member sent as `null` is not set (clients that write every member, generated
        // ones, send `"audio": null`).
        for (k, _) in r.extra.iter().filter(|(_, v)| !v.is_null()) {
            if REFUSED_EXTRAS.contains(&k.as_str()) {
                return Err(unsupported(k.clone()));
            }
            if k != "top_k" {
                self.drop(k.clone());
            }
        }
        Ok(())
    }

    fn messages(&mut self, messages: &[Message]) -> Result<(), TranslateError> {
        for (i, m) in messages.iter().enumerate() {
            let at = format!("messages[{i}]");
            if m.name.is_some() {
                self.drop(format!("{at}.name"));
            }
            self.drop_extra(&at, &m.extra);
            match &m.role {
                Role::System | Role::Developer => {
                    // One part for each: Gemini reads them as the client's parts, where
                    // joined they ran together ("Be brief.Answer in French.").
                    let texts = self.texts(m.content(), &at)?;
                    self.system.extend(texts.into_iter().filter(|t| !t.is_empty()).map(Part::text));
                }
                Role::User => {
                    let parts = self.user_parts(m.content(), &at)?;
                    self.push("user", parts);
                }
                Role::Assistant => {
                    let parts = self.assistant_parts(m, &at)?;
                    if self.contents.last().is_none_or(|c| c.role.as_deref() != Some("model")) {
                        self.turn_calls.clear();
                    }
                    self.turn_calls.extend(m.tool_calls.iter().flatten().map(|c| c.id.clone()));
                    self.push("model", parts);
                }
                Role::Tool => {
                    let Some(id) = &m.tool_call_id else {
                        return Err(invalid(
                            format!("{at}.tool_call_id"),
                            "a tool message needs one",
                        ));
                    };
                    let Some(name) = self.call_names.get(id).cloned() else {
                        return Err(invalid(
                            format!("{at}.tool_call_id"),
                            "matches no tool call of an earlier assistant message",
                        ));
                    };
                    let response = response_object(self.text_only(m.content(), &at)?);
                    self.push_result(FunctionResponse { id: Some(id.clone()), name, response });
                }
                Role::Function => {
                    let Some(name) = m.name.clone() else {
                        return Err(invalid(format!("{at}.name"), "a function message needs one"));
                    };
                    self.dropped.retain(|d| *d != format!("{at}.name"));
                    let response = response_object(self.text_only(m.content(), &at)?);
                    self.push_result(FunctionResponse { id: None, name, response });
                }
                Role::Other(_) => return Err(unsupported(format!("{at}.role"))),
            }
        }
        Ok(())
    }

    /// The text of a message that may only hold text.
    fn text_only(
        &mut self,
        content: Option<&MessageContent>,
        at: &str,
    ) -> Result<String, TranslateError> {
        Ok(self.texts(content, at)?.concat())
    }

    /// A conversation of system (or developer) messages only, which OpenAI answers as a
    /// prompt: Gemini refuses a request without `contents` (400 "contents is not specified"),
    /// so the instructions go as the user's turn.
    fn system_only_as_user(&mut self) {
        if self.contents.is_empty() && !self.system.is_empty() {
            let parts = std::mem::take(&mut self.system);
            self.push("user", parts);
        }
    }

    /// The texts of a message that may hold only text, one for each part.
    fn texts(
        &mut self,
        content: Option<&MessageContent>,
        at: &str,
    ) -> Result<Vec<String>, TranslateError> {
        match content {
            None => Ok(Vec::new()),
            Some(MessageContent::Text(t)) => Ok(vec![t.clone()]),
            Some(MessageContent::Parts(parts)) => {
                let mut texts = Vec::with_capacity(parts.len());
                for (j, p) in parts.iter().enumerate() {
                    match p {
                        ContentPart::Text { text: t, .. } => {
                            self.drop_part_extra(&format!("{at}.content[{j}]"), p);
                            texts.push(t.clone());
                        }
                        _ => return Err(unsupported(format!("{at}.content[{j}]"))),
                    }
                }
                Ok(texts)
            }
        }
    }

    /// Appends parts to the conversation, merging consecutive turns of one role: Gemini wants
    /// a model turn to follow a user turn ("Please ensure that multiturn requests alternate
    /// between user and model"), and an OpenAI conversation may hold two user messages in a
    /// row, or an assistant's text and its calls as two messages. A content of tool results
    /// takes nothing else (see [`push_result`](Self::push_result)).
    fn push(&mut self, role: &str, parts: Vec<Part>) {
        // Gemini refuses a turn without parts; an empty message says nothing.
        if parts.is_empty() {
            return;
        }
        if role == "model" {
            self.results_at = None;
        }
        let last = self.contents.len().checked_sub(1);
        match self.contents.last_mut() {
            Some(c) if c.role.as_deref() == Some(role) && last != self.results_at => {
                c.parts.extend(parts);
            }
            _ => self.contents.push(Content {
                role: Some(role.to_owned()),
                parts,
                extra: Map::new(),
            }),
        }
    }

    /// Adds a tool result to the content of the last model turn's results, which comes right
    /// after that turn and holds only results: Gemini wants a call turn's responses, all of
    /// them and nothing else, in the content that follows it (a text beside them is refused:
    /// 400 "Requests ending with a model turn are not supported"), so a user message sent
    /// before or amid the results goes after them. The results go in the order of the calls
    /// they answer, whatever order the client gave them in: Vertex AI `v1`, which takes no
    /// ids, pairs calls and results by name and order, so two calls of one function would
    /// otherwise get each other's results.
    fn push_result(&mut self, response: FunctionResponse) {
        let turn_calls = &self.turn_calls;
        let place = |r: &FunctionResponse| {
            r.id.as_ref().and_then(|id| turn_calls.iter().position(|c| c == id))
        };
        let at = place(&response);
        let part = Part { function_response: Some(Box::new(response)), ..Default::default() };
        let i = match self.results_at {
            Some(i) => i,
            None => {
                // Right after the last model turn.
                let i = self
                    .contents
                    .iter()
                    .rposition(|c| c.role.as_deref() == Some("model"))
                    .map_or(0, |i| i + 1);
                let content =
                    Content { role: Some("user".to_owned()), parts: Vec::new(), extra: Map::new() };
                self.contents.insert(i, content);
                self.results_at = Some(i);
                i
            }
        };
        let Some(results) = self.contents.get_mut(i) else {
            return;
        };
        // Before the first result of a later call; a result that answers no call of the turn
        // (a legacy `function` message) goes after those already there.
        let before = results.parts.iter().position(|p| {
            let later = p.function_response.as_deref().and_then(place);
            at.is_some_and(|at| later.is_some_and(|l| l > at))
        });
        results.parts.insert(before.unwrap_or(results.parts.len()), part);
    }

    fn user_parts(
        &mut self,
        content: Option<&MessageContent>,
        at: &str,
    ) -> Result<Vec<Part>, TranslateError> {
        // Gemini refuses an empty text ("Unable to submit request because it has an empty text
        // parameter"); it says nothing.
        let parts = match content {
            None => return Ok(Vec::new()),
            Some(MessageContent::Text(t)) if t.is_empty() => return Ok(Vec::new()),
            Some(MessageContent::Text(t)) => return Ok(vec![Part::text(t.clone())]),
            Some(MessageContent::Parts(parts)) => parts,
        };
        let mut out = Vec::with_capacity(parts.len());
        for (j, p) in parts.iter().enumerate() {
            let path = format!("{at}.content[{j}]");
            self.drop_part_extra(&path, p);
            out.push(match p {
                ContentPart::Text { text, .. } if text.is_empty() => continue,
                ContentPart::Text { text, .. } => Part::text(text.clone()),
                ContentPart::ImageUrl { image_url, .. } => {
                    if image_url.detail.is_some() {
                        // Gemini sets the resolution per request (`mediaResolution`), not per
                        // image.
                        self.drop(format!("{path}.image_url.detail"));
                    }
                    media_part(&image_url.url, &format!("{path}.image_url.url"))?
                }
                ContentPart::InputAudio { input_audio, .. } => {
                    let mime = match input_audio.format.as_str() {
                        "wav" => "audio/wav",
                        "mp3" => "audio/mp3",
                        _ => return Err(unsupported(format!("{path}.input_audio.format"))),
                    };
                    Part {
                        inline_data: Some(Blob {
                            mime_type: mime.to_owned(),
                            data: input_audio.data.clone(),
                        }),
                        ..Default::default()
                    }
                }
                ContentPart::File { file, .. } => match &file.file_data {
                    Some(data) if file.file_id.is_none() => {
                        media_part(data, &format!("{path}.file.file_data"))?
                    }
                    _ => return Err(unsupported(format!("{path}.file.file_id"))),
                },
                ContentPart::Refusal { .. } | ContentPart::Unknown(_) => {
                    return Err(unsupported(path));
                }
            });
        }
        Ok(out)
    }

    fn assistant_parts(&mut self, m: &Message, at: &str) -> Result<Vec<Part>, TranslateError> {
        let mut parts = Vec::new();
        if m.reasoning_content.as_ref().is_some_and(Option::is_some) {
            // Gemini takes thoughts back only with their signatures, which OpenAI clients
            // do not keep; the model does not need them to continue.
            self.drop(format!("{at}.reasoning_content"));
        }
        if m.thinking_blocks.is_some() {
            // Claude's signed thinking: nothing Gemini can take.
            self.drop(format!("{at}.thinking_blocks"));
        }
        match m.content() {
            Some(MessageContent::Text(t)) if !t.is_empty() => parts.push(Part::text(t.clone())),
            None | Some(MessageContent::Text(_)) => {}
            Some(MessageContent::Parts(ps)) => {
                for (j, p) in ps.iter().enumerate() {
                    match p {
                        ContentPart::Text { text, .. }
                        | ContentPart::Refusal { refusal: text, .. } => {
                            self.drop_part_extra(&format!("{at}.content[{j}]"), p);
                            if !text.is_empty() {
                                parts.push(Part::text(text.clone()));
                            }
                        }
                        _ => return Err(unsupported(format!("{at}.content[{j}]"))),
                    }
                }
            }
        }
        if let Some(Some(refusal)) = &m.refusal
            && !refusal.is_empty()
        {
            parts.push(Part::text(refusal.clone()));
        }
        for (j, call) in m.tool_calls.iter().flatten().enumerate() {
            let path = format!("{at}.tool_calls[{j}]");
            // A custom call (or a newer type) has no functionCall to become: refused as its
            // tool is (`tools[i].type`).
            let Some(function) = call.as_function() else {
                return Err(unsupported(format!("{path}.type")));
            };
            parts.push(self.call_part(call, function, &path)?);
        }
        if let Some(fc) = &m.function_call {
            let path = format!("{at}.function_call.arguments");
            let args = parse_args(&fc.arguments, &path)?;
            let call = FunctionCall {
                id: None,
                name: fc.name.clone(),
                args: Some(args),
                extra: Map::new(),
            };
            parts.push(Part { function_call: Some(Box::new(call)), ..Default::default() });
        }
        Ok(parts)
    }

    /// The part for `call`, a function call of `function`.
    fn call_part(
        &mut self,
        call: &ToolCall,
        function: &uniproxy_wire::FunctionCall,
        path: &str,
    ) -> Result<Part, TranslateError> {
        let args = parse_args(&function.arguments, &format!("{path}.function.arguments"))?;
        self.call_names.insert(call.id.clone(), function.name.clone());
        Ok(Part {
            function_call: Some(Box::new(FunctionCall {
                id: (!call.id.is_empty()).then(|| call.id.clone()),
                name: function.name.clone(),
                args: Some(args),
                extra: Map::new(),
            })),
            thought_signature: thought_signature_of(&call.extra),
            ..Default::default()
        })
    }

    /// The function declarations and the names they declare.
    fn tools(
        &mut self,
        r: &ChatCompletionRequest,
    ) -> Result<(Option<Vec<GeminiTool>>, Vec<String>), TranslateError> {
        // With `allowed_tools`, only those go (for `auto`, Gemini takes no list of allowed
        // functions).
        let allowed = match &r.tool_choice {
            Some(ToolChoice::AllowedTools(choice)) => {
                let tools = r.tools.as_deref().unwrap_or_default();
                Some(crate::allowed_tools(choice, tools, ProviderKind::Google)?)
            }
            _ => None,
        };
        let mut decls = Vec::new();
        for (i, tool) in r.tools.iter().flatten().enumerate() {
            let at = format!("tools[{i}]");
            if tool.kind != "function" {
                return Err(unsupported(format!("{at}.type")));
            }
            let Some(f) = &tool.function else {
                return Err(invalid(format!("{at}.function"), "a function tool needs one"));
            };
            if allowed.as_ref().is_some_and(|names| !names.contains(&f.name)) {
                self.drop(at);
                continue;
            }
            self.drop_extra(&at, &tool.extra);
            decls.push(self.declaration(f, &format!("{at}.function"))?);
        }
        for (i, f) in r.functions.iter().flatten().enumerate() {
            decls.push(self.declaration(f, &format!("functions[{i}]"))?);
        }
        let names = decls.iter().map(|d| d.name.clone()).collect();
        let tools = (!decls.is_empty()).then(|| vec![GeminiTool { function_declarations: decls }]);
        Ok((tools, names))
    }

    fn declaration(
        &mut self,
        f: &FunctionDefinition,
        at: &str,
    ) -> Result<FunctionDeclaration, TranslateError> {
        if f.strict.is_some() {
            self.drop(format!("{at}.strict"));
        }
        self.drop_extra(at, &f.extra);
        let (mut parameters, mut parameters_json_schema) = (None, None);
        if let Some(p) = &f.parameters {
            // A recursive schema (`None`) goes as JSON Schema, whose `$ref`s Gemini follows.
            let reduced = schema::reduce(p, &mut self.schema_budget)
                .map_err(|e| schema_error(&format!("{at}.parameters"), e))?;
            // Gemini refuses an OBJECT without properties. A function without parameters is
            // said by leaving them out; one that takes any keys (`additionalProperties`), or
            // an object of that kind inside, goes as JSON Schema, which can say it.
            let empty = reduced.as_ref().is_some_and(|reduced| {
                reduced.get("properties").and_then(Value::as_object).is_none_or(|p| p.is_empty())
                    && reduced.get("anyOf").is_none()
                    && reduced.get("type").is_none_or(|t| t == "OBJECT")
            });
            let as_json_schema = reduced.as_ref().is_none_or(schema::has_open_object)
                || (empty && schema::takes_any_keys(p));
            if as_json_schema {
                let copied = schema::for_json_schema(p, &mut self.schema_budget)
                    .map_err(|e| schema_error(&format!("{at}.parameters"), e))?;
                parameters_json_schema = Some(copied);
            } else if !empty {
                parameters = reduced;
            }
        }
        Ok(FunctionDeclaration {
            name: f.name.clone(),
            description: f.description.clone(),
            parameters,
            parameters_json_schema,
        })
    }

    fn generation_config(
        &mut self,
        r: &ChatCompletionRequest,
    ) -> Result<Option<GenerationConfig>, TranslateError> {
        let mut g = GenerationConfig {
            stop_sequences: r.stop.as_ref().map(|s| s.to_vec()).filter(|s| !s.is_empty()),
            candidate_count: r.n,
            max_output_tokens: r.token_limit(),
            temperature: r.temperature.clone(),
            top_p: r.top_p.clone(),
            presence_penalty: r.presence_penalty.clone(),
            frequency_penalty: r.frequency_penalty.clone(),
            ..Default::default()
        };
        if let Some(k) = r.extra.get("top_k").filter(|k| !k.is_null()) {
            match k {
                Value::Number(n) => g.top_k = Some(n.clone()),
                _ => return Err(invalid("top_k", "must be a number")),
            }
        }
        if let Some(seed) = r.seed {
            let seed =
                i32::try_from(seed).map_err(|_| invalid("seed", "Gemini takes a 32-bit seed"))?;
            g.seed = Some(seed);
        }
        match &r.response_format {
            None | Some(ResponseFormat::Text { .. }) => {}
            Some(ResponseFormat::JsonObject { .. }) => {
                g.response_mime_type = Some("application/json".to_owned());
            }
            Some(ResponseFormat::JsonSchema { json_schema, .. }) => {
                g.response_mime_type = Some("application/json".to_owned());
                if let Some(s) = &json_schema.schema {
                    let at = "response_format.json_schema.schema";
                    let reduced = schema::reduce(s, &mut self.schema_budget)
                        .map_err(|e| schema_error(at, e))?;
                    // An object without properties (a map) anywhere, or a recursive schema:
                    // as JSON Schema.
                    let as_json_schema = reduced.as_ref().is_none_or(|reduced| {
                        schema::is_open_object(reduced) || schema::has_open_object(reduced)
                    });
                    if as_json_schema {
                        let copied = schema::for_json_schema(s, &mut self.schema_budget)
                            .map_err(|e| schema_error(at, e))?;
                        g.response_json_schema = Some(copied);
                    } else {
                        g.response_schema = reduced;
                    }
                }
                if json_schema.strict.is_some() {
                    self.drop("response_format.json_schema.strict");
                }
            }
            Some(ResponseFormat::Other(_)) => return Err(unsupported("response_format.type")),
        }
        if let Some(effort) = &r.reasoning_effort {
            g.thinking_config = Some(thinking(effort, g.max_output_tokens)?);
        }
        Ok((g != GenerationConfig::default()).then_some(g))
    }
}

/// The smallest thinking budget every 2.5 model takes (Flash-Lite's floor).
const MIN_THINKING_BUDGET: u32 = 512;

/// `reasoning_effort` → a thinking budget, as Google's own OpenAI-compatible endpoint maps it
/// (low 1024, medium 8192, high 24576), with `none` turning thinking off and `minimal` the
/// smallest budget every 2.5 model takes. Thoughts are asked for so they come back as
/// `reasoning_content`. Gemini counts the thoughts against `maxOutputTokens` (`limit`), so
/// the budget takes at most half of it and leaves the rest for the answer, as Claude's does:
/// 24576 beside the default MAX_TOKENS of 4096 let a hard question's thinking use all of it,
/// and the answer came back empty, cut at `MAX_TOKENS`.
fn thinking(effort: &str, limit: Option<u32>) -> Result<ThinkingConfig, TranslateError> {
    let budget = match effort {
        "none" => return Ok(ThinkingConfig { include_thoughts: None, thinking_budget: Some(0) }),
        "minimal" => MIN_THINKING_BUDGET,
        "low" => 1024,
        "medium" => 8192,
        // The largest budget every 2.5 model takes (Flash's ceiling; Pro's is 32768).
        "high" | "xhigh" | "max" => 24576,
        _ => return Err(unsupported("reasoning_effort")),
    };
    let budget = limit.map_or(budget, |limit| budget.min(limit / 2).max(MIN_THINKING_BUDGET));
    Ok(ThinkingConfig { include_thoughts: Some(true), thinking_budget: Some(budget) })
}

fn tool_config(
    r: &ChatCompletionRequest,
    names: &[String],
) -> Result<Option<ToolConfig>, TranslateError> {
    let (mode, allowed, field) = match (&r.tool_choice, &r.function_call) {
        (Some(choice), _) => match choice {
            ToolChoice::Mode(ToolChoiceMode::Auto) => ("AUTO", None, "tool_choice"),
            ToolChoice::Mode(ToolChoiceMode::None) => ("NONE", None, "tool_choice"),
            ToolChoice::Mode(ToolChoiceMode::Required) => ("ANY", None, "tool_choice"),
            ToolChoice::Named(n) => ("ANY", Some(n.function.name.clone()), "tool_choice"),
            // Checked, and the other tools left out, in `tools`.
            ToolChoice::AllowedTools(choice) => {
                let required = choice.allowed_tools.mode == ToolChoiceMode::Required;
                (if required { "ANY" } else { "AUTO" }, None, "tool_choice")
            }
            ToolChoice::Mode(ToolChoiceMode::Other(_)) | ToolChoice::Other(_) => {
                return Err(unsupported("tool_choice"));
            }
        },
        (None, Some(FunctionCallChoice::Mode(m))) => match m {
            ToolChoiceMode::Auto => ("AUTO", None, "function_call"),
            ToolChoiceMode::None => ("NONE", None, "function_call"),
            _ => return Err(unsupported("function_call")),
        },
        (None, Some(FunctionCallChoice::Named(n))) => {
            ("ANY", Some(n.name.clone()), "function_call")
        }
        (None, None) => return Ok(None),
    };
    if names.is_empty() {
        // Forcing a call with nothing to call cannot be honoured; `auto` and `none` without
        // tools mean what Gemini does anyway.
        return if mode == "ANY" { Err(unsupported(field)) } else { Ok(None) };
    }
    if let Some(name) = &allowed
        && !names.contains(name)
    {
        let param =
            if field == "tool_choice" { "tool_choice.function.name" } else { "function_call.name" };
        return Err(invalid(param, "names no function declared in the request"));
    }
    Ok(Some(ToolConfig {
        function_calling_config: FunctionCallingConfig {
            mode: mode.to_owned(),
            allowed_function_names: allowed.map(|n| vec![n]),
        },
    }))
}

/// Tool call arguments as an object: `""` is `{}`.
fn parse_args(arguments: &str, param: &str) -> Result<Map, TranslateError> {
    if arguments.trim().is_empty() {
        return Ok(Map::new());
    }
    serde_json::from_str::<Map>(arguments)
        .map_err(|source| TranslateError::InvalidToolArguments { param: param.to_owned(), source })
}

/// A tool result as the object Gemini requires: a JSON object is taken as it is; anything
/// else (other JSON, or plain text) is wrapped as `{"result": …}`.
fn response_object(text: String) -> Map {
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(o)) => o,
        Ok(other) => Map::from_iter([("result".to_owned(), other)]),
        Err(_) => Map::from_iter([("result".to_owned(), Value::String(text))]),
    }
}

/// A `data:` URL → `inlineData`; an `http(s)` or `gs` URL → `fileData`.
fn media_part(url: &str, path: &str) -> Result<Part, TranslateError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let Some((meta, data)) = rest.split_once(',') else {
            return Err(invalid(path, "a data: URL needs a comma before its data"));
        };
        let Some(mime) = meta.strip_suffix(";base64") else {
            return Err(invalid(path, "a data: URL must be base64"));
        };
        let mime = crate::media_type(mime);
        let mime = if mime.is_empty() { "application/octet-stream" } else { mime };
        return Ok(Part {
            inline_data: Some(Blob { mime_type: mime.to_owned(), data: data.to_owned() }),
            ..Default::default()
        });
    }
    let lower = url.to_ascii_lowercase();
    if !["http://", "https://", "gs://"].iter().any(|p| lower.starts_with(p)) {
        return Err(unsupported(path));
    }
    Ok(Part {
        file_data: Some(FileData { mime_type: guess_mime(&lower), file_uri: url.to_owned() }),
        ..Default::default()
    })
}

/// The MIME type a URL's file extension suggests, if it suggests one.
fn guess_mime(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let file = path.rsplit('/').next().unwrap_or(path);
    let ext = file.rsplit_once('.')?.1;
    let mime = match ext {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "wav" => "audio/wav",
        "mp3" => "audio/mp3",
        "mp4" => "video/mp4",
        _ => return None,
    };
    Some(mime.to_owned())
}
