//! A request read only as far as a platform that forwards the client's bytes needs.

use uniproxy_wire::{ChatCompletionRequest, StreamOptions};

use crate::scan::Reader;

/// A client's request body read only as far as forwarding it needs: the members the proxy
/// rewrites, typed, and every member's key and value as the client wrote them.
///
/// [`RequestHead::read`] walks the body once and checks every value as the parse of a
/// [`ChatCompletionRequest`](crate::ChatCompletionRequest) would, so a body it reads is one
/// that parse accepts. It reads the shapes requests have (messages of text, text and image
/// parts, tool calls; tools, response formats, sampling settings, members this version does
/// not model) and gives `None` for the rest: audio, file and refusal parts, a key written with
/// an escape, a member the typed parse reads given twice, a kept number with an exponent, and
/// anything that is not a request. The caller then parses the body in full, which gives the
/// typed request or the precise error.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestHead<'a> {
    /// The model the client asked for; empty when absent.
    pub model: String,
    /// The legacy token limit.
    pub max_tokens: Option<u32>,
    /// The token limit, reasoning included.
    pub max_completion_tokens: Option<u32>,
    /// Whether the client asked for a stream.
    pub stream: Option<bool>,
    /// The stream options.
    pub stream_options: Option<StreamOptions>,
    /// Whether the request offers the model tools or legacy functions.
    offers_tools: bool,
    /// The body read.
    raw: &'a [u8],
    /// Each member's key (as written between its quotes) and value, slices of `raw`, in order.
    members: Vec<(&'a [u8], &'a [u8])>,
}

/// The members of a request, for the check that none is given twice.
#[derive(Clone, Copy)]
enum Field {
    Model,
    Messages,
    MaxTokens,
    MaxCompletionTokens,
    Stream,
    StreamOptions,
    Tools,
    ToolChoice,
    Functions,
    FunctionCall,
    ResponseFormat,
    ParallelToolCalls,
    Logprobs,
    Store,
    Temperature,
    TopP,
    PresencePenalty,
    FrequencyPenalty,
    N,
    TopLogprobs,
    Seed,
    User,
    ReasoningEffort,
    ServiceTier,
    Stop,
    Modalities,
    LogitBias,
    Metadata,
    Prediction,
}

/// The members of a message, for the same check.
#[derive(Clone, Copy)]
enum MessageField {
    Role,
    Content,
    Name,
    Refusal,
    ToolCalls,
    ToolCallId,
    FunctionCall,
    ReasoningContent,
}

// Each field is a bit of a `u32`.
const _: () =
    assert!((Field::Prediction as u32) < 32 && (MessageField::ReasoningContent as u32) < 32);

/// Marks field `bit` seen; `None` if it was already (the typed parse refuses a field given
/// twice).
fn once(seen: &mut u32, bit: u32) -> Option<()> {
    let mask = 1 << bit;
    (*seen & mask == 0).then(|| *seen |= mask)
}

impl<'a> RequestHead<'a> {
    /// Reads `raw`, a client's body; `None` for a body this read leaves to the full parse (see
    /// the type's docs).
    #[must_use]
    pub fn read(raw: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(raw).ok()?;
        let mut head = RequestHead {
            model: String::new(),
            max_tokens: None,
            max_completion_tokens: None,
            stream: None,
            stream_options: None,
            offers_tools: false,
            raw,
            members: Vec::with_capacity(12),
        };
        let mut seen = 0;
        let mut r = Reader::new(text);
        r.members(|r, key| {
            let ((), value) = r.spanned(|r| head.member(r, key, &mut seen))?;
            head.members.push((key, value.as_bytes()));
            Some(())
        })?;
        r.end()?;
        // `messages` is the one member the typed request requires.
        (seen & 1 << Field::Messages as u32 != 0).then_some(head)
    }

    /// Reads the value of the member `key`.
    fn member(&mut self, r: &mut Reader<'a>, key: &[u8], seen: &mut u32) -> Option<()> {
        let field = match key {
            b"model" => Field::Model,
            b"messages" => Field::Messages,
            b"max_tokens" => Field::MaxTokens,
            b"max_completion_tokens" => Field::MaxCompletionTokens,
            b"stream" => Field::Stream,
            b"stream_options" => Field::StreamOptions,
            b"tools" => Field::Tools,
            b"tool_choice" => Field::ToolChoice,
            b"functions" => Field::Functions,
            b"function_call" => Field::FunctionCall,
            b"response_format" => Field::ResponseFormat,
            b"parallel_tool_calls" => Field::ParallelToolCalls,
            b"logprobs" => Field::Logprobs,
            b"store" => Field::Store,
            b"temperature" => Field::Temperature,
            b"top_p" => Field::TopP,
            b"presence_penalty" => Field::PresencePenalty,
            b"frequency_penalty" => Field::FrequencyPenalty,
            b"n" => Field::N,
            b"top_logprobs" => Field::TopLogprobs,
            b"seed" => Field::Seed,
            b"user" => Field::User,
            b"reasoning_effort" => Field::ReasoningEffort,
            b"service_tier" => Field::ServiceTier,
            b"stop" => Field::Stop,
            b"modalities" => Field::Modalities,
            b"logit_bias" => Field::LogitBias,
            b"metadata" => Field::Metadata,
            b"prediction" => Field::Prediction,
            // A member this version does not model: kept as a `serde_json::Value`.
            _ => return r.skip_kept(),
        };
        once(seen, field as u32)?;
        match field {
            Field::Model => self.model = r.string()?.into_owned(),
            Field::Messages => r.elements(message)?,
            Field::MaxTokens => self.max_tokens = r.nullable(Reader::unsigned)?,
            Field::MaxCompletionTokens => {
                self.max_completion_tokens = r.nullable(Reader::unsigned)?
            }
            Field::Stream => self.stream = r.nullable(Reader::boolean)?,
            Field::StreamOptions => self.stream_options = r.parse()?,
            Field::Tools | Field::Functions => {
                let read = if matches!(field, Field::Tools) { tool } else { function_definition };
                let mut count = 0;
                r.nullable(|r| {
                    r.elements(|r| {
                        count += 1;
                        read(r)
                    })
                })?;
                self.offers_tools |= count > 0;
            }
            // A mode, a named function, or a form this version does not know, kept as a value;
            // a response format is the same: one the typed parse does not take is kept whole.
            Field::ToolChoice | Field::ResponseFormat => r.skip_kept()?,
            // The legacy choice: a mode or `{"name": …}`.
            Field::FunctionCall => {
                r.nullable(|r| match r.peek()? {
                    b'"' => r.kept_string(),
                    _ => named_function(r),
                })?;
            }
            Field::ParallelToolCalls | Field::Logprobs | Field::Store => {
                r.nullable(Reader::boolean)?;
            }
            Field::Temperature | Field::TopP | Field::PresencePenalty | Field::FrequencyPenalty => {
                r.nullable(Reader::number)?;
            }
            Field::N | Field::TopLogprobs => {
                r.nullable(Reader::unsigned::<u32>)?;
            }
            Field::Seed => {
                r.parse::<Option<i64>>()?;
            }
            Field::User | Field::ReasoningEffort | Field::ServiceTier => {
                r.nullable(Reader::kept_string)?;
            }
            // One string or several.
            Field::Stop => {
                r.nullable(|r| match r.peek()? {
                    b'[' => strings(r),
                    _ => r.kept_string(),
                })?;
            }
            Field::Modalities => {
                r.nullable(strings)?;
            }
            Field::LogitBias | Field::Metadata => {
                r.nullable(|r| (r.peek()? == b'{').then(|| r.skip_kept())?)?;
            }
            // Any value.
            Field::Prediction => r.skip_kept()?,
        }
        Some(())
    }

    /// The head of `request`, a request parsed from `raw` whose members are `members`: the
    /// members the proxy rewrites are taken out of the request.
    pub(crate) fn taken_from(
        request: &mut ChatCompletionRequest,
        raw: &'a [u8],
        members: Vec<(&'a [u8], &'a [u8])>,
    ) -> Self {
        RequestHead {
            model: std::mem::take(&mut request.model),
            max_tokens: request.max_tokens,
            max_completion_tokens: request.max_completion_tokens,
            stream: request.stream,
            stream_options: request.stream_options.take(),
            offers_tools: request.has_tools(),
            raw,
            members,
        }
    }

    /// The body read.
    #[must_use]
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Each member's key (as written between its quotes, escapes not decoded) and value, as
    /// the client wrote them, in order.
    pub fn members(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + '_ {
        self.members.iter().copied()
    }

    /// Whether the client asked for a stream.
    #[must_use]
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// Whether the client asked for the usage chunk at the end of a stream.
    #[must_use]
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.include_usage) == Some(true)
    }

    /// Whether the request offers the model tools or legacy functions.
    #[must_use]
    pub fn has_tools(&self) -> bool {
        self.offers_tools
    }
}

/// A message. Its own match rather than [`object_with`]'s table: every request has messages,
/// and the table's search and indirect calls cost ~1k instructions on a 1 KB request.
fn message(r: &mut Reader<'_>) -> Option<()> {
    let mut seen = 0;
    r.members(|r, key| {
        let field = match key {
            b"role" => MessageField::Role,
            b"content" => MessageField::Content,
            b"name" => MessageField::Name,
            b"refusal" => MessageField::Refusal,
            b"tool_calls" => MessageField::ToolCalls,
            b"tool_call_id" => MessageField::ToolCallId,
            b"function_call" => MessageField::FunctionCall,
            b"reasoning_content" => MessageField::ReasoningContent,
            _ => return r.skip_kept(),
        };
        once(&mut seen, field as u32)?;
        match field {
            MessageField::Role => r.kept_string(),
            MessageField::Content => r
                .nullable(|r| match r.peek()? {
                    b'[' => r.elements(part),
                    _ => r.kept_string(),
                })
                .map(drop),
            MessageField::Name
            | MessageField::Refusal
            | MessageField::ToolCallId
            | MessageField::ReasoningContent => r.nullable(Reader::kept_string).map(drop),
            MessageField::ToolCalls => r.nullable(|r| r.elements(tool_call)).map(drop),
            MessageField::FunctionCall => r.nullable(function_call).map(drop),
        }
    })?;
    // A message must say who wrote it.
    (seen & 1 << MessageField::Role as u32 != 0).then_some(())
}

/// An array of strings.
fn strings(r: &mut Reader<'_>) -> Option<()> {
    r.elements(|r| r.kept_string())
}

/// Reads a member's value.
type ReadValue = fn(&mut Reader<'_>) -> Option<()>;

/// A member a typed structure reads: its name, whether it is required, and how its value is
/// read.
type Member = (&'static [u8], bool, ReadValue);

/// An object of a typed structure with the members `fields` (each given at most once, the
/// required ones given) and any others, kept as values.
fn object_with(r: &mut Reader<'_>, fields: &[Member]) -> Option<()> {
    let mut seen = 0;
    r.members(|r, key| match fields.iter().position(|(name, _, _)| *name == key) {
        Some(i) => {
            once(&mut seen, i as u32)?;
            (fields[i].2)(r)
        }
        None => r.skip_kept(),
    })?;
    let required = fields
        .iter()
        .enumerate()
        .filter(|(_, (_, required, _))| *required)
        .fold(0, |all, (i, _)| all | 1 << i);
    (seen & required == required).then_some(())
}

/// A tool: its type, and the function for a function tool.
fn tool(r: &mut Reader<'_>) -> Option<()> {
    object_with(
        r,
        &[
            (b"type", true, |r| r.kept_string()),
            (b"function", false, |r| r.nullable(function_definition).map(drop)),
        ],
    )
}

/// A function the model may call: a name, and a description, a JSON schema and a strictness.
fn function_definition(r: &mut Reader<'_>) -> Option<()> {
    object_with(
        r,
        &[
            (b"name", true, |r| r.kept_string()),
            (b"description", false, |r| r.nullable(Reader::kept_string).map(drop)),
            (b"parameters", false, |r| r.skip_kept()),
            (b"strict", false, |r| r.nullable(Reader::boolean).map(drop)),
        ],
    )
}

/// `{"name": …}`.
fn named_function(r: &mut Reader<'_>) -> Option<()> {
    object_with(r, &[(b"name", true, |r| r.kept_string())])
}

/// A function call: its name and its arguments as text.
fn function_call(r: &mut Reader<'_>) -> Option<()> {
    object_with(
        r,
        &[(b"name", true, |r| r.kept_string()), (b"arguments", true, |r| r.kept_string())],
    )
}

/// A tool call: an id, a type, and for a `function` call the function call. A call of another
/// type (`custom`, whose `custom` member the typed parse keeps as a value) needs none; its
/// type is read to know which it is.
fn tool_call(r: &mut Reader<'_>) -> Option<()> {
    let mut kind = None;
    let mut function = false;
    let mut seen = 0;
    r.members(|r, key| match key {
        b"id" => {
            once(&mut seen, 0)?;
            r.kept_string()
        }
        b"type" => {
            once(&mut seen, 1)?;
            kind = Some(r.string()?);
            Some(())
        }
        b"function" => {
            once(&mut seen, 2)?;
            function = r.nullable(function_call)?.is_some();
            Some(())
        }
        _ => r.skip_kept(),
    })?;
    let kind = kind?;
    (seen & 1 != 0 && (function || kind != "function")).then_some(())
}

/// A content part. The typed parse takes any value as a part of a type it does not know and
/// checks the shape of the types it knows: text and image parts are read here, the others
/// (audio, files, refusals) left to it.
fn part(r: &mut Reader<'_>) -> Option<()> {
    if r.peek()? != b'{' {
        return r.skip_kept();
    }
    let mut kind = None;
    // Whether `text` is a string and `image_url` an image, for a part whose type says so.
    let (mut text, mut image) = (false, false);
    let mut seen = 0;
    r.members(|r, key| match key {
        b"type" => {
            once(&mut seen, 0)?;
            match r.peek()? {
                b'"' => kind = Some(r.string()?),
                _ => r.skip_kept()?,
            }
            Some(())
        }
        b"text" => {
            once(&mut seen, 1)?;
            text = r.peek()? == b'"';
            r.skip_kept()
        }
        b"image_url" => {
            once(&mut seen, 2)?;
            image = image_url(r)?;
            Some(())
        }
        _ => r.skip_kept(),
    })?;
    match kind.as_deref() {
        Some("text") => text.then_some(()),
        Some("image_url") => image.then_some(()),
        Some("input_audio" | "file" | "refusal") => None,
        _ => Some(()),
    }
}

/// A value, kept, and whether it is an image reference: a `url` string and a `detail` that is
/// a string or `null`.
fn image_url(r: &mut Reader<'_>) -> Option<bool> {
    if r.peek()? != b'{' {
        r.skip_kept()?;
        return Some(false);
    }
    let (mut url, mut detail_ok) = (false, true);
    let mut seen = 0;
    r.members(|r, key| match key {
        b"url" => {
            once(&mut seen, 0)?;
            url = r.peek()? == b'"';
            r.skip_kept()
        }
        b"detail" => {
            once(&mut seen, 1)?;
            detail_ok = matches!(r.peek()?, b'"' | b'n');
            r.skip_kept()
        }
        _ => r.skip_kept(),
    })?;
    Some(url && detail_ok)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use uniproxy_wire::from_slice;

    use super::*;
    use crate::{ProviderConfig, ProviderKind};

    /// What the typed parse and the head's read make of a value.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Class {
        /// Both take it.
        Read,
        /// The typed parse takes it; the read leaves it to that parse.
        Typed,
        /// The typed parse refuses it.
        Bad,
    }
    use Class::{Bad, Read, Typed};

    /// Values for each member of a message, as written, with their class.
    const MESSAGE_MEMBERS: &[(&str, &[(&str, Class)])] = &[
        (
            "role",
            &[
                (r#""user""#, Read),
                (r#""critic""#, Read),
                (r#""\u0075ser""#, Read),
                ("null", Bad),
                ("1", Bad),
            ],
        ),
        (
            "content",
            &[
                (r#""Hello there""#, Read),
                ("null", Read),
                (r#""a\nb\"c\\d\/""#, Read),
                (r#""\ud83d\ude00 é😀""#, Read),
                (r#""\udc00""#, Bad),
                (r#""\ud83d""#, Bad),
                (r#""\q""#, Bad),
                (r#"[{"type":"text","text":"hi"}]"#, Read),
                (r#"[{"type":"text"}]"#, Bad),
                (r#"[{"type":"te\u0078t","text":1}]"#, Bad),
                (
                    r#"[{"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}}]"#,
                    Read,
                ),
                (
                    r#"[{"type":"image_url","image_url":{"url":"u","detail":null,"x":{}}},{"text":"a","type":"text"}]"#,
                    Read,
                ),
                (r#"[{"type":"image_url","image_url":{"url":1}}]"#, Bad),
                (r#"[{"type":"image_url","image_url":{"url":"u","detail":2}}]"#, Bad),
                (r#"[{"type":"image_url","image_url":"u"}]"#, Bad),
                (r#"[{"type":"input_audio","input_audio":{"data":"AAA=","format":"wav"}}]"#, Typed),
                (r#"[{"type":"refusal","refusal":1}]"#, Bad),
                (r#"[{"type":"future_part","text":1,"image_url":[]}]"#, Read),
                (r#"[1,"x",null,[]]"#, Read),
                (r#"[{"type":5,"text":1}]"#, Read),
                (r#"[{"type":"text","text":"a","text":"b"}]"#, Typed),
                ("[]", Read),
                ("[1e400]", Bad),
                ("1", Bad),
            ],
        ),
        ("name", &[(r#""bob""#, Read), ("null", Read), ("1", Bad)]),
        ("refusal", &[("null", Read), (r#""no""#, Read), ("[]", Bad)]),
        ("reasoning_content", &[(r#""thinking""#, Read), ("false", Bad)]),
        ("tool_call_id", &[(r#""call_1""#, Read), ("null", Read), ("{}", Bad)]),
        (
            "tool_calls",
            &[
                ("null", Read),
                ("[]", Read),
                (
                    r#"[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"city\":\"Paris\"}"},"index":0}]"#,
                    Read,
                ),
                (r#"[{"id":"c","type":"function"}]"#, Bad),
                (r#"[{"id":"c","type":"function","function":{"name":"f"}}]"#, Bad),
                (
                    r#"[{"id":"c","id":"d","type":"function","function":{"name":"f","arguments":""}}]"#,
                    Bad,
                ),
                (r#"[{"id":"c","type":"function","function":null}]"#, Bad),
                (
                    r#"[{"id":"call_1","type":"custom","custom":{"name":"code_exec","input":"print(1)"}}]"#,
                    Read,
                ),
                (r#"[{"id":"c","type":"custom","function":null}]"#, Read),
                (r#"[{"id":"c","type":"future","future":{"x":[1,null]}}]"#, Read),
                (r#"[{"id":"c","type":"func\u0074ion"}]"#, Bad),
                (r#"[{"type":"custom","custom":{"name":"c","input":""}}]"#, Bad),
                (r#"[{"id":"c","type":"custom","custom":{"input":1e400}}]"#, Bad),
                ("{}", Bad),
            ],
        ),
        (
            "function_call",
            &[
                ("null", Read),
                (r#"{"name":"f","arguments":"{}"}"#, Read),
                (r#"{"name":"f"}"#, Bad),
                ("1", Bad),
            ],
        ),
        (
            "cache_control",
            &[(r#"{"type":"ephemeral"}"#, Read), ("1e5", Typed), (r#""\u00e9""#, Read)],
        ),
        ("x_\\u0061", &[("1", Typed)]),
    ];

    /// Values for each member of a request (`messages` aside), as written, with their class.
    const REQUEST_MEMBERS: &[(&str, &[(&str, Class)])] = &[
        ("model", &[(r#""alias""#, Read), (r#""m\u00e9""#, Read), ("null", Bad), ("5", Bad)]),
        (
            "max_tokens",
            &[
                ("77", Read),
                ("null", Read),
                ("0", Read),
                ("4294967295", Read),
                ("4294967296", Bad),
                ("-1", Bad),
                ("5.0", Bad),
                ("-0", Bad),
            ],
        ),
        ("max_completion_tokens", &[("9000", Read), ("null", Read), ("1e2", Bad)]),
        (
            "stream",
            &[("true", Read), ("false", Read), ("null", Read), ("1", Bad), (r#""true""#, Bad)],
        ),
        (
            "stream_options",
            &[
                (r#"{"include_usage":true}"#, Read),
                ("null", Read),
                ("{}", Read),
                (r#"{"include_usage":false,"x":[1,{"y":null}]}"#, Read),
                (r#"{"include_usage":1}"#, Bad),
                ("[]", Bad),
            ],
        ),
        (
            "tools",
            &[
                ("null", Read),
                ("[]", Read),
                (r#"[{"type":"function","function":{"name":"f"}}]"#, Read),
                (
                    r#"[{"type":"function","function":{"name":"get_weather","description":"The \"weather\"","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]},"strict":true}},{"type":"custom","custom":{"name":"c"}}]"#,
                    Read,
                ),
                (r#"[{"type":"function","function":null}]"#, Read),
                (r#"[{"function":{"name":"f"}}]"#, Bad),
                (r#"[{"type":"function","function":{"description":"d"}}]"#, Bad),
                (r#"[{"type":"function","function":{"name":"f","strict":1}}]"#, Bad),
                (
                    r#"[{"type":"function","function":{"name":"f","parameters":{"maximum":1e5}}}]"#,
                    Typed,
                ),
                ("{}", Bad),
            ],
        ),
        (
            "tool_choice",
            &[
                ("null", Read),
                (r#""auto""#, Read),
                (r#"{"type":"function","function":{"name":"f"}}"#, Read),
                (r#"{"type":"allowed_tools","mode":"auto"}"#, Read),
                ("1", Read),
                ("1e400", Bad),
            ],
        ),
        ("functions", &[("null", Read), (r#"[{"name":"f"}]"#, Read), ("[{}]", Bad)]),
        (
            "function_call",
            &[
                ("null", Read),
                (r#""none""#, Read),
                (r#"{"name":"f","x":[]}"#, Read),
                (r#"{"name":1}"#, Bad),
                (r#"{"name":"f","name":"g"}"#, Bad),
                ("1", Bad),
            ],
        ),
        (
            "response_format",
            &[
                ("null", Read),
                (r#"{"type":"json_object"}"#, Read),
                (
                    r#"{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"object"},"strict":true}}"#,
                    Read,
                ),
                (r#"{"type":"json_schema"}"#, Read),
                ("1", Read),
                ("1e400", Bad),
            ],
        ),
        ("parallel_tool_calls", &[("true", Read), ("null", Read), ("0", Bad)]),
        ("logprobs", &[("false", Read), (r#""no""#, Bad)]),
        ("store", &[("true", Read), ("[]", Bad)]),
        (
            "temperature",
            &[
                ("0.2", Read),
                ("1", Read),
                ("null", Read),
                ("-0", Read),
                ("1E2", Typed),
                ("1e400", Bad),
                (r#""0.2""#, Bad),
            ],
        ),
        ("top_p", &[("1", Read), ("0.95", Read)]),
        ("presence_penalty", &[("-2.0", Read), ("true", Bad)]),
        ("frequency_penalty", &[("0", Read)]),
        ("n", &[("1", Read), ("null", Read), ("-1", Bad), ("1.5", Bad)]),
        ("top_logprobs", &[("5", Read), ("99999999999", Bad)]),
        (
            "seed",
            &[
                ("42", Read),
                ("-7", Read),
                ("null", Read),
                ("-9223372036854775808", Read),
                ("9223372036854775808", Bad),
                ("1.0", Bad),
            ],
        ),
        (
            "user",
            &[
                (r#""u-1""#, Read),
                ("null", Read),
                ("1", Bad),
                (r#""\ud83d\ude00""#, Read),
                (r#""\ud83d""#, Bad),
            ],
        ),
        ("reasoning_effort", &[(r#""low""#, Read)]),
        ("service_tier", &[(r#""default""#, Read), ("{}", Bad)]),
        (
            "stop",
            &[
                (r#""x""#, Read),
                (r#"["a","b"]"#, Read),
                ("[]", Read),
                ("null", Read),
                ("[1]", Bad),
                ("1", Bad),
            ],
        ),
        ("modalities", &[(r#"["text"]"#, Read), ("null", Read), (r#""text""#, Bad)]),
        ("logit_bias", &[(r#"{"50256":-100}"#, Read), ("null", Read), ("{}", Read), ("[]", Bad)]),
        ("metadata", &[(r#"{"a":{"b":[1,2.5,"c"]}}"#, Read), (r#"{"\u0061":"b"}"#, Typed)]),
        (
            "prediction",
            &[
                (r#"{"type":"content","content":"x"}"#, Read),
                ("null", Read),
                ("1", Read),
                ("1e3", Typed),
            ],
        ),
        ("x_vendor", &[(r#"{"k":[true,null]}"#, Read), (r#""a\nb""#, Read), ("1e400", Bad)]),
        ("mod\\u0065l", &[(r#""m""#, Typed)]),
    ];

    /// The members `(key, index of the value)` picks from `pool`, written with `space` around
    /// their tokens, with the class of the whole: the worst of its values', and `Bad` for a
    /// known member given twice (unknown members may repeat).
    fn members(
        pool: &[(&str, &[(&str, Class)])],
        picks: &[(usize, usize)],
        space: &str,
    ) -> (Vec<String>, Class) {
        let mut class = Read;
        let mut keys = Vec::new();
        let mut members = Vec::new();
        for &(k, v) in picks {
            let (key, values) = pool[k % pool.len()];
            let (value, c) = values[v % values.len()];
            class = worst(class, c);
            // The key as the typed parse reads it.
            let read_as = if key == "mod\\u0065l" { "model" } else { key };
            if keys.contains(&read_as) && !key.starts_with("x_") && key != "cache_control" {
                class = worst(class, Bad);
            }
            keys.push(read_as);
            members.push(format!("\"{key}\"{space}:{space}{value}"));
        }
        (members, class)
    }

    /// An object of `members`, with `space` around its tokens.
    fn object(members: &[String], space: &str) -> String {
        format!("{{{space}{}{space}}}", members.join(&format!(",{space}")))
    }

    fn worst(a: Class, b: Class) -> Class {
        match (a, b) {
            (Bad, _) | (_, Bad) => Bad,
            (Typed, _) | (_, Typed) => Typed,
            _ => Read,
        }
    }

    /// The upstream requests built from the head and from the typed request, for a platform
    /// that takes the OpenAI format.
    fn assert_builds_alike(kind: ProviderKind, raw: &[u8]) {
        let config = ProviderConfig::new(kind, "http://127.0.0.1:1/openai/v1", "k", "gpt-4o-mini");
        let openai = crate::provider(&config).unwrap();
        let head = openai.read_head(raw).unwrap();
        let typed: ChatCompletionRequest = from_slice(raw).unwrap();
        assert_eq!(head.model, typed.model);
        assert_eq!(head.max_tokens, typed.max_tokens);
        assert_eq!(head.max_completion_tokens, typed.max_completion_tokens);
        assert_eq!(head.stream, typed.stream);
        assert_eq!(head.stream_options, typed.stream_options);
        assert_eq!(head.wants_stream_usage(), typed.wants_stream_usage());
        assert_eq!(head.has_tools(), typed.has_tools());
        assert_eq!(head.members, crate::scan::raw_members(raw).unwrap());
        let from_head = openai.build_request_head(head).unwrap();
        let from_typed = openai.build_request_from(typed, raw).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&from_head.body),
            String::from_utf8_lossy(&from_typed.body)
        );
        assert_eq!(from_head.copied, from_typed.copied);
        assert_eq!(from_head.url, from_typed.url);
    }

    proptest! {
        #[test]
        fn the_head_is_read_from_what_the_typed_parse_takes_and_builds_the_same_request(
            // Half the values picked are the first of their member's, which both take.
            messages in proptest::collection::vec(proptest::collection::vec(
                (0usize..64, prop_oneof![Just(0usize), 0usize..64]), 0..5), 0..4),
            role_first in any::<bool>(),
            picks in proptest::collection::vec(
                (0usize..64, prop_oneof![Just(0usize), 0usize..64]), 0..8),
            at in 0usize..8,
            space in proptest::sample::select(vec!["", " ", "\n  "]),
            edits in proptest::collection::vec((any::<proptest::sample::Index>(), 0u8..3, any::<u8>()), 0..2),
        ) {
            let mut class = Read;
            let mut written = Vec::new();
            for picks in &messages {
                // Most messages name their role.
                let mut picks = picks.clone();
                if role_first {
                    picks.insert(0, (0, 0));
                }
                let (message, c) = members(MESSAGE_MEMBERS, &picks, space);
                let has_role = picks.iter().any(|&(k, _)| k % MESSAGE_MEMBERS.len() == 0);
                class = worst(worst(class, c), if has_role { Read } else { Bad });
                written.push(object(&message, space));
            }
            let (mut request, c) = members(REQUEST_MEMBERS, &picks, space);
            class = worst(class, c);
            let messages = format!("\"messages\"{space}:{space}[{}]", written.join(&format!(",{space}")));
            request.insert(at.min(request.len()), messages);
            let raw = object(&request, space);
            let mut raw = raw.into_bytes();
            let unedited = edits.is_empty();
            for (at, how, byte) in edits {
                let at = at.index(raw.len());
                let byte = b"{}[]\",:\\ 0-.eE+tfnul\x01\n"[usize::from(byte) % 22];
                match how {
                    0 => raw[at] = byte,
                    1 => raw.insert(at, byte),
                    _ => drop(raw.remove(at)),
                }
            }
            let text = String::from_utf8_lossy(&raw).into_owned();
            let typed = from_slice::<ChatCompletionRequest>(&raw);
            let head = RequestHead::read(&raw);
            if unedited {
                prop_assert_eq!(typed.is_ok(), class != Bad, "{}", text);
                prop_assert_eq!(head.is_some(), class == Read, "{}", text);
            }
            // Whatever the body, a head is read only from one the typed parse takes, and builds
            // the same upstream request.
            if head.is_some() {
                prop_assert!(typed.is_ok(), "{}", text);
                for kind in [ProviderKind::OpenAi, ProviderKind::Custom, ProviderKind::AzureOpenAi] {
                    assert_builds_alike(kind, &raw);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn a_head_is_read_only_from_what_the_typed_parse_takes_whatever_the_values(
            request_values in proptest::collection::vec(
                (0usize..64, crate::scan::tests::json()), 0..4),
            message_values in proptest::collection::vec(
                (0usize..64, crate::scan::tests::json()), 0..4),
            part_values in proptest::collection::vec(
                (proptest::sample::select(vec!["type", "text", "image_url", "url", "detail"]),
                 crate::scan::tests::json()), 0..3),
            pretty in any::<bool>(),
        ) {
            // Any value at the members the read checks: of the request, of a message, of a
            // content part; with a `type` that names a known part now and then.
            let mut part = serde_json::Map::new();
            part.insert("type".into(), "text".into());
            for (key, value) in part_values {
                part.insert(key.into(), value);
            }
            let mut message = serde_json::Map::new();
            message.insert("role".into(), "user".into());
            message.insert("content".into(), serde_json::Value::Array(vec![part.into()]));
            for (k, value) in message_values {
                message.insert(MESSAGE_MEMBERS[k % MESSAGE_MEMBERS.len()].0.into(), value);
            }
            let mut request = serde_json::Map::new();
            request.insert("messages".into(), serde_json::Value::Array(vec![message.into()]));
            for (k, value) in request_values {
                request.insert(REQUEST_MEMBERS[k % REQUEST_MEMBERS.len()].0.into(), value);
            }
            let raw = if pretty {
                serde_json::to_vec_pretty(&request).unwrap()
            } else {
                serde_json::to_vec(&request).unwrap()
            };
            if RequestHead::read(&raw).is_some() {
                prop_assert!(from_slice::<ChatCompletionRequest>(&raw).is_ok(), "{}", String::from_utf8_lossy(&raw));
                assert_builds_alike(ProviderKind::OpenAi, &raw);
            }
        }
    }

    #[test]
    fn a_typical_request_is_read_and_builds_what_the_typed_parse_builds() {
        let raw = br#"{
  "model": "gpt-4o-mini",
  "messages": [
    {"role": "system", "content": "Answer precisely.\nCite keys verbatim."},
    {"role": "user", "content": "What is connection pooling? \u00e9 \ud83d\ude00", "name": "bob"},
    {"role": "assistant", "content": null, "refusal": null}
  ],
  "temperature": 0.2, "top_p": 1, "max_tokens": 512, "user": "bench-user-0001",
  "stream": true, "stream_options": {"include_usage": true}, "stop": ["\n\n"], "seed": -3,
  "metadata": {"team": "search"}, "x_vendor_option": [1, 2.5, null]
}"#;
        let head = RequestHead::read(raw).unwrap();
        assert_eq!(head.model, "gpt-4o-mini");
        assert_eq!(head.max_tokens, Some(512));
        assert!(head.is_stream() && head.wants_stream_usage());
        let keys: Vec<&[u8]> = head.members().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), 12);
        let (key, messages) = head.members().nth(1).unwrap();
        assert_eq!(key, b"messages");
        assert!(messages.starts_with(b"[\n    {") && messages.ends_with(b"null}\n  ]"));
        for kind in [ProviderKind::OpenAi, ProviderKind::Custom, ProviderKind::AzureOpenAi] {
            assert_builds_alike(kind, raw);
        }
    }

    #[test]
    fn a_request_with_tools_tool_calls_and_an_image_is_read() {
        let raw = br#"{"model":"gpt-4o","messages":[
{"role":"system","content":"You can look up the weather."},
{"role":"user","content":[{"type":"text","text":"What is on this sign, and the weather there?"},{"type":"image_url","image_url":{"url":"https://example.com/sign.png","detail":"high"}}]},
{"role":"assistant","content":null,"tool_calls":[{"id":"call_abc","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
{"role":"tool","tool_call_id":"call_abc","content":"{\"temp_c\":21}"}],
"tools":[{"type":"function","function":{"name":"get_weather","description":"Current weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false},"strict":true}}],
"tool_choice":"auto","parallel_tool_calls":false,"response_format":{"type":"text"},"stream":false}"#;
        assert!(RequestHead::read(raw).is_some());
        for kind in [ProviderKind::OpenAi, ProviderKind::Custom, ProviderKind::AzureOpenAi] {
            assert_builds_alike(kind, raw);
        }
    }

    #[test]
    fn a_custom_tool_call_is_read_and_builds_what_the_typed_parse_builds() {
        // The spec's ChatCompletionMessageCustomToolCall: the proxy passes such calls in
        // answers, so a client sends them back; the fast read and the typed parse both take it.
        let raw = br#"{"model":"gpt-5","messages":[
{"role":"user","content":"Run print(1)."},
{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"custom","custom":{"name":"code_exec","input":"print(1)"}}]},
{"role":"tool","tool_call_id":"call_1","content":"1"}],
"tools":[{"type":"custom","custom":{"name":"code_exec","description":"Runs Python."}}]}"#;
        assert!(RequestHead::read(raw).is_some());
        for kind in [ProviderKind::OpenAi, ProviderKind::Custom, ProviderKind::AzureOpenAi] {
            assert_builds_alike(kind, raw);
        }
        // And the typed build alone (a body `raw_members` cannot split) writes the call as sent.
        let config = ProviderConfig::new(ProviderKind::OpenAi, "http://127.0.0.1:1/v1", "k", "m");
        let openai = crate::provider(&config).unwrap();
        let up = openai.build_request(from_slice(raw).unwrap()).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&up.body).unwrap();
        let sent: serde_json::Value = serde_json::from_slice(raw).unwrap();
        assert_eq!(body["messages"], sent["messages"]);
    }

    #[test]
    fn a_platform_that_reads_no_heads_builds_from_the_typed_parse() {
        let raw = br#"{"model":"alias","messages":[{"role":"user","content":"Hello"}],"max_tokens":99999,"stream":true}"#;
        let config = ProviderConfig::new(
            ProviderKind::Anthropic,
            "http://127.0.0.1:1/v1",
            "k",
            "claude-sonnet-4-5",
        );
        let anthropic = crate::provider(&config).unwrap();
        assert!(anthropic.read_head(raw).is_none());
        let mut head = RequestHead::read(raw).unwrap();
        head.stream = None;
        let mut typed: ChatCompletionRequest = from_slice(raw).unwrap();
        typed.stream = None;
        let from_head = anthropic.build_request_head(head).unwrap();
        let from_typed = anthropic.build_request_from(typed, raw).unwrap();
        assert_eq!(from_head.body, from_typed.body);
        assert!(!String::from_utf8_lossy(&from_head.body).contains("\"stream\""));
    }
}
