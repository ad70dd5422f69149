#![allow(clippy::unwrap_used)]
//! What the wire types promise beyond a plain round trip: nothing invented, nothing dropped,
//! errors that name the bad value, and the helpers the proxy relies on.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uniproxy_wire::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChunkChoice, ContentPart, Delta,
    ErrorResponse, FinishReason, FunctionCallChoice, ImageDetail, Message, MessageContent,
    ModelList, ResponseFormat, Role, Stop, ToolChoice, ToolChoiceMode, from_slice,
};

fn request(json: Value) -> ChatCompletionRequest {
    from_slice(json.to_string().as_bytes()).unwrap()
}

fn request_fixture(name: &str) -> (Value, ChatCompletionRequest) {
    let path = format!("{}/tests/data/requests/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    (serde_json::from_str(&text).unwrap(), from_slice(text.as_bytes()).unwrap())
}

// ---------------------------------------------------------------------------------------------
// Nothing invented: absent stays absent, null stays null.

#[test]
fn minimal_request_serializes_to_model_and_messages_only() {
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}"#;
    let parsed: ChatCompletionRequest = from_slice(body.as_bytes()).unwrap();
    assert_eq!(serde_json::to_string(&parsed).unwrap(), body);
}

#[test]
fn constructors_write_no_null() {
    let message = Message::text(Role::User, "Hi");
    assert_eq!(serde_json::to_string(&message).unwrap(), r#"{"role":"user","content":"Hi"}"#);

    // A chunk's choice is the exception: OpenAI writes both keys as null on every
    // intermediate choice, and strict clients expect them.
    let mut chunk = ChatCompletionChunk::new("chatcmpl-1", 7, "gpt-4o");
    chunk.choices.push(ChunkChoice::new(0, Delta::default()));
    assert_eq!(
        serde_json::to_string(&chunk).unwrap(),
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":null,"logprobs":null}]}"#
    );

    let models = ModelList::single("mock", 0, "uniproxy");
    assert_eq!(
        serde_json::to_value(&models).unwrap(),
        json!({"object":"list","data":[{"id":"mock","object":"model","created":0,"owned_by":"uniproxy"}]})
    );
}

#[test]
fn nullable_fields_keep_absent_null_and_value_apart() {
    let cases = [
        (r#"{}"#, None),
        (r#"{"content":null}"#, Some(None)),
        (r#"{"content":"x"}"#, Some(Some("x".to_owned()))),
    ];
    for (json, content) in cases {
        let delta: Delta = from_slice(json.as_bytes()).unwrap();
        assert_eq!(delta.content, content, "{json}");
        assert_eq!(serde_json::to_string(&delta).unwrap(), json);
    }
}

#[test]
fn nullable_module_works_on_other_types() {
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Probe {
        #[serde(
            default,
            with = "uniproxy_wire::nullable",
            skip_serializing_if = "Option::is_none"
        )]
        n: Option<Option<u32>>,
    }
    for (value, json) in
        [(None, "{}"), (Some(None), r#"{"n":null}"#), (Some(Some(3)), r#"{"n":3}"#)]
    {
        let probe = Probe { n: value };
        assert_eq!(serde_json::to_string(&probe).unwrap(), json);
        assert_eq!(serde_json::from_str::<Probe>(json).unwrap(), probe);
    }
}

#[test]
fn integer_and_float_numbers_keep_their_form() {
    let body =
        r#"{"model":"m","messages":[],"temperature":0,"top_p":0.7,"frequency_penalty":-0.0}"#;
    let parsed: ChatCompletionRequest = from_slice(body.as_bytes()).unwrap();
    assert_eq!(serde_json::to_string(&parsed).unwrap(), body);
}

// ---------------------------------------------------------------------------------------------
// Nothing dropped: the proxy rewrites the model and everything else stays.

#[test]
fn rewriting_the_model_changes_nothing_else() {
    let dir = format!("{}/tests/data/requests", env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let (mut expected, mut parsed) = request_fixture(&name);
        parsed.model = "llama3.1:8b".to_owned();
        expected["model"] = json!("llama3.1:8b");
        assert_eq!(serde_json::to_value(&parsed).unwrap(), expected, "{name}");
        seen += 1;
    }
    assert!(seen >= 15, "only {seen} requests");
}

#[test]
fn unknown_fields_land_in_extra() {
    let (_, parsed) = request_fixture("unknown-top-level-fields.json");
    assert_eq!(parsed.extra["web_search_options"]["search_context_size"], "low");
    assert_eq!(parsed.extra["moderation"], json!({"input": true}));
    assert_eq!(parsed.stream_options.unwrap().extra["include_obfuscation"], false);
}

#[test]
fn unknown_role_is_kept() {
    let body = br#"{"model":"m","messages":[{"role":"critic","content":"Too long."}]}"#;
    let parsed: ChatCompletionRequest = from_slice(body).unwrap();
    assert_eq!(parsed.messages[0].role, Role::Other("critic".to_owned()));
    assert_eq!(parsed.messages[0].role.as_str(), "critic");
    assert_eq!(serde_json::to_string(&parsed).unwrap().as_bytes(), body);
}

#[test]
fn every_known_role_parses_to_its_variant() {
    let (_, parsed) = request_fixture("every-role-string-content.json");
    let roles: Vec<Role> = parsed.messages.iter().map(|m| m.role.clone()).collect();
    assert_eq!(
        roles,
        [
            Role::System,
            Role::Developer,
            Role::User,
            Role::Assistant,
            Role::Tool,
            Role::Assistant,
            Role::Function,
            Role::Assistant
        ]
    );
    let tool_call = &parsed.messages[3];
    assert_eq!(tool_call.content, Some(None));
    assert_eq!(
        tool_call.tool_calls.as_ref().unwrap()[0].as_function().unwrap().name,
        "get_capital"
    );
    assert_eq!(parsed.messages[4].tool_call_id.as_deref(), Some("call_ZR5UUuTt3pf61kjwAJIYdVMj"));
    assert_eq!(parsed.messages[6].name.as_deref(), Some("get_weather"));
}

#[test]
fn a_custom_tool_call_is_kept_and_a_function_call_needs_its_function() {
    // The spec's ChatCompletionMessageCustomToolCall, sent back in the history.
    let (input, parsed) = request_fixture("custom-tool-call-history.json");
    let call = &parsed.messages[1].tool_calls.as_ref().unwrap()[0];
    assert_eq!((call.id.as_str(), call.kind.as_str()), ("call_1", "custom"));
    assert_eq!(call.function, None);
    assert_eq!(call.as_function(), None);
    assert_eq!(
        Value::Object(call.extra.clone()),
        json!({"custom": input["messages"][1]["tool_calls"][0]["custom"]})
    );

    // A call of a type this version does not know is kept as well.
    let future = json!({"id":"call_2","type":"future","future":{"x":[1]}});
    let parsed = request(json!({"messages":[{"role":"assistant","tool_calls":[future]}]}));
    let out = serde_json::to_value(&parsed.messages[0].tool_calls).unwrap();
    assert_eq!(out, json!([future]));

    // A `function` call without its function is refused, naming the member as OpenAI does.
    for call in
        [json!({"id":"c","type":"function"}), json!({"id":"c","type":"function","function":null})]
    {
        let body = json!({"messages":[{"role":"user","content":"a"},{"role":"assistant","tool_calls":[call]}]});
        let err = from_slice::<ChatCompletionRequest>(body.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.path(), "messages[1].tool_calls[0]", "{call}");
        assert_eq!(err.missing().as_deref(), Some("messages[1].tool_calls[0].function"), "{call}");
    }
}

#[test]
fn unknown_finish_reason_is_kept() {
    let body = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"…"},"finish_reason":"pause_turn"}]}"#;
    let parsed: ChatCompletion = from_slice(body.as_bytes()).unwrap();
    let reason = parsed.choices[0].finish_reason.clone().unwrap().unwrap();
    assert_eq!(reason, FinishReason::Other("pause_turn".to_owned()));
    assert_eq!(serde_json::to_string(&parsed).unwrap(), body);

    let chunk = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"error"}]}"#;
    let parsed: ChatCompletionChunk = from_slice(chunk.as_bytes()).unwrap();
    assert_eq!(parsed.choices[0].finish_reason(), Some(&FinishReason::Other("error".to_owned())));
}

#[test]
fn content_parts_parse_to_their_variants_and_unknown_parts_are_kept() {
    let (input, parsed) = request_fixture("content-parts.json");
    let Some(MessageContent::Parts(parts)) = parsed.messages[0].content() else {
        panic!("expected parts");
    };
    assert!(matches!(&parts[0], ContentPart::Text { text, .. } if text == "What is in these?"));
    assert!(matches!(
        &parts[1],
        ContentPart::ImageUrl { image_url, .. } if image_url.detail == Some(ImageDetail::High)
    ));
    assert!(
        matches!(&parts[2], ContentPart::ImageUrl { image_url, .. } if image_url.detail.is_none())
    );
    assert!(
        matches!(&parts[3], ContentPart::InputAudio { input_audio, .. } if input_audio.format == "wav")
    );
    assert!(matches!(
        &parts[4],
        ContentPart::File { file, .. } if file.filename.as_deref() == Some("filename.pdf") && file.file_data.is_some()
    ));
    assert!(matches!(&parts[5], ContentPart::File { file, .. } if file.file_id.is_some()));
    assert_eq!(parts[6], ContentPart::Unknown(input["messages"][0]["content"][6].clone()));

    let Some(MessageContent::Parts(parts)) = parsed.messages[1].content() else {
        panic!("expected parts");
    };
    assert!(
        matches!(&parts[0], ContentPart::Refusal { refusal, .. } if refusal == "I can't help with that.")
    );

    // A text part with a field this version does not model keeps it in the part's `extra`.
    let Some(MessageContent::Parts(parts)) = parsed.messages[2].content() else {
        panic!("expected parts");
    };
    assert!(
        matches!(&parts[0], ContentPart::Text { extra, .. } if extra["cache_control"]["type"] == "ephemeral")
    );
}

#[test]
fn tool_choice_and_function_call_forms() {
    for (choice, expected) in [
        (json!("none"), ToolChoice::Mode(ToolChoiceMode::None)),
        (json!("auto"), ToolChoice::Mode(ToolChoiceMode::Auto)),
        (json!("required"), ToolChoice::Mode(ToolChoiceMode::Required)),
    ] {
        let parsed = request(json!({"model":"m","messages":[],"tool_choice":choice}));
        assert_eq!(parsed.tool_choice, Some(expected));
    }
    let (_, named) = request_fixture("tool-choice-named.json");
    assert!(
        matches!(named.tool_choice, Some(ToolChoice::Named(ref n)) if n.function.name == "get_current_weather")
    );
    let (_, allowed) = request_fixture("tool-choice-allowed-tools.json");
    let Some(ToolChoice::AllowedTools(allowed)) = allowed.tool_choice else {
        panic!("not read as allowed_tools: {:?}", allowed.tool_choice)
    };
    assert_eq!(allowed.allowed_tools.mode, ToolChoiceMode::Required);
    let names: Vec<_> = allowed
        .allowed_tools
        .tools
        .iter()
        .filter_map(|t| t.function.as_ref())
        .map(|f| &f.name)
        .collect();
    assert_eq!(names, ["search"]);
    let (input, other) = request_fixture("tool-choice-custom.json");
    assert_eq!(other.tool_choice, Some(ToolChoice::Other(input["tool_choice"].clone())));

    let (_, legacy) = request_fixture("legacy-functions-call-string.json");
    assert_eq!(legacy.function_call, Some(FunctionCallChoice::Mode(ToolChoiceMode::Auto)));
    let (_, legacy) = request_fixture("legacy-functions-call-named.json");
    assert!(
        matches!(legacy.function_call, Some(FunctionCallChoice::Named(ref n)) if n.name == "get_current_weather")
    );
}

#[test]
fn response_format_and_stop_forms() {
    let (_, text) = request_fixture("response-format-text.json");
    assert!(matches!(text.response_format, Some(ResponseFormat::Text { .. })));
    let (_, object) = request_fixture("response-format-json-object.json");
    assert!(matches!(object.response_format, Some(ResponseFormat::JsonObject { .. })));
    let (_, schema) = request_fixture("response-format-json-schema.json");
    assert!(matches!(
        schema.response_format,
        Some(ResponseFormat::JsonSchema { ref json_schema, .. }) if json_schema.name == "CityLocation" && json_schema.strict == Some(true)
    ));
    let grammar = json!({"type":"grammar","grammar":"root ::= \"yes\""});
    let parsed = request(json!({"model":"m","messages":[],"response_format":grammar}));
    assert_eq!(parsed.response_format, Some(ResponseFormat::Other(grammar)));

    let (_, one) = request_fixture("sampling-integer-temperature.json");
    assert_eq!(one.stop, Some(Stop::One("\n\n".to_owned())));
    let (_, many) = request_fixture("sampling-float-temperature.json");
    assert_eq!(many.stop.unwrap().to_vec(), ["END", "###"]);
}

// ---------------------------------------------------------------------------------------------
// Errors name the bad value.

#[test]
fn wrong_type_names_the_message_field() {
    let body = br#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":7}]}"#;
    let err = from_slice::<ChatCompletionRequest>(body).unwrap_err();
    assert_eq!(err.path(), "messages[2].content");
    assert!(!err.is_syntax());
    assert!(err.to_string().contains("`messages[2].content`"), "{err}");
    assert!(!err.message().contains(" at line "), "{}", err.message());
}

#[test]
fn wrong_type_inside_a_known_part_is_an_error_at_the_part() {
    // The part is buffered to pick its variant, so the path ends at the part itself; the message
    // says what was wrong inside it.
    let body = br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":5}}]}]}"#;
    let err = from_slice::<ChatCompletionRequest>(body).unwrap_err();
    assert_eq!(err.path(), "messages[0].content[1]");
    assert!(err.message().contains("expected a string"), "{}", err.message());

    let body =
        br#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":5}]}]}"#;
    let err = from_slice::<ChatCompletionRequest>(body).unwrap_err();
    assert_eq!(err.path(), "messages[0].content[0]");

    let body = br#"{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AAAA"}}]}]}"#;
    let err = from_slice::<ChatCompletionRequest>(body).unwrap_err();
    assert_eq!(err.path(), "messages[0].content[0]");
    assert!(err.message().contains("format"), "{}", err.message());
}

#[test]
fn wrong_type_at_the_top_level_names_the_field() {
    let body = br#"{"model":"m","messages":[],"temperature":"hot"}"#;
    let err = from_slice::<ChatCompletionRequest>(body).unwrap_err();
    assert_eq!(err.path(), "temperature");
    assert!(!err.is_syntax());

    let body =
        br#"{"model":"m","messages":[],"tools":[{"type":"function","function":{"name":5}}]}"#;
    let err = from_slice::<ChatCompletionRequest>(body).unwrap_err();
    assert_eq!(err.path(), "tools[0].function.name");
}

#[test]
fn missing_messages_is_named() {
    let err = from_slice::<ChatCompletionRequest>(br#"{"model":"m"}"#).unwrap_err();
    assert!(!err.is_syntax());
    assert!(err.message().contains("messages"), "{}", err.message());
    assert!(err.to_string().contains("messages"), "{err}");
}

#[test]
fn not_json_is_a_syntax_error() {
    for body in [&b"not json"[..], b"", b"\xff\xfe"] {
        let err = from_slice::<ChatCompletionRequest>(body).unwrap_err();
        assert!(err.is_syntax(), "{body:?}: {err}");
        assert_eq!(err.path(), "");
        assert!(err.to_string().starts_with("invalid JSON body"), "{err}");
    }
    // A body cut short is a syntax error at the value being read.
    let err = from_slice::<ChatCompletionRequest>(br#"{"model":"#).unwrap_err();
    assert!(err.is_syntax(), "{err}");
    assert_eq!(err.path(), "model");
}

#[test]
fn trailing_garbage_is_an_error() {
    let err =
        from_slice::<ChatCompletionRequest>(br#"{"model":"m","messages":[]} {}"#).unwrap_err();
    assert!(err.is_syntax(), "{err}");
    assert!(err.to_string().contains("trailing"), "{err}");
    // Trailing whitespace is not garbage.
    from_slice::<ChatCompletionRequest>(b"{\"model\":\"m\",\"messages\":[]}\n  \r\n").unwrap();
}

#[test]
fn error_response_new_writes_all_four_fields() {
    let error =
        ErrorResponse::new("Unsupported value: 'messages[0].role'.", "invalid_request_error")
            .with_param("messages[0].role");
    assert_eq!(
        serde_json::to_value(&error).unwrap(),
        json!({"error":{
            "message":"Unsupported value: 'messages[0].role'.",
            "type":"invalid_request_error",
            "param":"messages[0].role",
            "code":null
        }})
    );
    assert_eq!(error.error.kind(), Some("invalid_request_error"));

    let error =
        ErrorResponse::new("No such model.", "invalid_request_error").with_code("model_not_found");
    let value = serde_json::to_value(&error).unwrap();
    assert_eq!(value["error"]["param"], Value::Null);
    assert_eq!(value["error"]["code"], "model_not_found");
    assert_eq!(value["error"].as_object().unwrap().len(), 4);
}

#[test]
fn upstream_error_shapes_are_kept() {
    let err: ErrorResponse = from_slice(
        br#"{"error":{"code":429,"message":"Provider returned error"},"user_id":"user_1"}"#,
    )
    .unwrap();
    assert_eq!(err.error.code, Some(Some(json!(429))));
    assert_eq!(err.error.kind(), None);
    assert_eq!(err.extra["user_id"], "user_1");
    // An error without `type`, `param` or `code` is not given them.
    assert_eq!(
        serde_json::to_string(&err).unwrap(),
        r#"{"error":{"message":"Provider returned error","code":429},"user_id":"user_1"}"#
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers.

#[test]
fn joined_text_concatenates_text_parts_only() {
    assert_eq!(MessageContent::Text("plain".to_owned()).joined_text(), "plain");
    let (_, parsed) = request_fixture("content-parts.json");
    assert_eq!(parsed.messages[0].content().unwrap().joined_text(), "What is in these?");
    assert_eq!(parsed.messages[1].content().unwrap().joined_text(), "");

    let content: MessageContent = serde_json::from_value(json!([
        {"type":"text","text":"Hello, "},
        {"type":"image_url","image_url":{"url":"https://example.com/a.png"}},
        {"type":"text","text":"world"}
    ]))
    .unwrap();
    assert_eq!(content.joined_text(), "Hello, world");
    assert_eq!(MessageContent::Parts(vec![]).joined_text(), "");
}

#[test]
fn request_helpers() {
    let plain = request(json!({"model":"m","messages":[]}));
    assert!(!plain.is_stream());
    assert!(!plain.wants_stream_usage());
    assert_eq!(plain.token_limit(), None);
    assert!(!plain.has_tools());

    let stream = request(
        json!({"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}),
    );
    assert!(stream.is_stream());
    assert!(stream.wants_stream_usage());

    let no_usage = request(
        json!({"model":"m","messages":[],"stream":false,"stream_options":{"include_usage":false}}),
    );
    assert!(!no_usage.is_stream());
    assert!(!no_usage.wants_stream_usage());
    let options_only =
        request(json!({"model":"m","messages":[],"stream":true,"stream_options":{}}));
    assert!(!options_only.wants_stream_usage());

    assert_eq!(
        request(json!({"model":"m","messages":[],"max_tokens":100})).token_limit(),
        Some(100)
    );
    let both =
        request(json!({"model":"m","messages":[],"max_tokens":100,"max_completion_tokens":2048}));
    assert_eq!(both.token_limit(), Some(2048));

    assert!(!request(json!({"model":"m","messages":[],"tools":[]})).has_tools());
    assert!(!request(json!({"model":"m","messages":[],"functions":[]})).has_tools());
    let (_, tools) = request_fixture("tool-choice-auto.json");
    assert!(tools.has_tools());
    let (_, functions) = request_fixture("legacy-functions-call-string.json");
    assert!(functions.has_tools());
    // The legacy shape of the answer's call is for a request that offers functions alone.
    assert!(functions.offers_only_functions());
    assert!(!tools.offers_only_functions());
    let f = json!([{"name":"f"}]);
    let t = json!([{"type":"function","function":{"name":"g"}}]);
    assert!(!request(json!({"messages":[],"functions":f,"tools":t})).offers_only_functions());
    assert!(request(json!({"messages":[],"functions":f,"tools":[]})).offers_only_functions());
    assert!(!request(json!({"messages":[],"functions":[]})).offers_only_functions());
}

#[test]
fn chunk_helpers() {
    let text = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null,"obfuscation":"Qx"}"#;
    let chunk: ChatCompletionChunk = from_slice(text.as_bytes()).unwrap();
    assert_eq!(chunk.usage, Some(None));
    assert!(chunk.usage().is_none());
    assert_eq!(chunk.choices[0].finish_reason(), None);
    assert_eq!(chunk.extra["obfuscation"], "Qx");

    let usage = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":1310,"completion_tokens":24,"total_tokens":1334,"prompt_tokens_details":{"cached_tokens":1152},"completion_tokens_details":{"reasoning_tokens":16}}}"#;
    let chunk: ChatCompletionChunk = from_slice(usage.as_bytes()).unwrap();
    let usage = chunk.usage().unwrap();
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens),
        (1310, 24, 1334)
    );
    assert_eq!(usage.cached_tokens(), Some(1152));
    assert_eq!(usage.reasoning_tokens(), Some(16));

    // Azure's asynchronous content filter sends choices without a delta.
    let annotation = r#"{"id":"","object":"","created":0,"model":"","choices":[{"index":0,"finish_reason":"content_filter","content_filter_results":{}}]}"#;
    let chunk: ChatCompletionChunk = from_slice(annotation.as_bytes()).unwrap();
    assert_eq!(chunk.choices[0].delta, None);
    assert_eq!(chunk.choices[0].finish_reason(), Some(&FinishReason::ContentFilter));
    assert_eq!(serde_json::to_string(&chunk).unwrap(), annotation);
}
