//! The proxy's hot paths, on realistic 1 KB and 20 KB bodies: request parse + rewrite +
//! serialize, each platform's request building, non-stream answer translation, stream
//! translation per event, and the SSE decoder.
//!
//! Run with `cargo bench -p uniproxy-translate --bench translate`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;
use uniproxy_translate::{Provider, ProviderConfig, ProviderKind, ResponseContext, provider, sse};
use uniproxy_wire::{ChatCompletionRequest, from_slice};

/// A chat request of about `size` bytes: a system prompt, a short exchange, and a last user
/// message padded with prose (the shape of the load harness's chat_1k / chat_20k bodies).
fn chat_request(size: usize) -> Vec<u8> {
    let prose = "Latency spikes appear when traffic ramps up after idle periods; check pool \
                 idle timeouts, DNS caching and upstream rate limits before anything else. ";
    let mut last = String::from("Summarise the incident notes below in five bullet points.\n");
    let base = 700;
    while last.len() + base < size {
        last.push_str(prose);
    }
    serde_json::to_vec(&json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a senior backend engineer helping a team operate an API gateway. Answer precisely."},
            {"role": "user", "content": "We run an LLM proxy in front of several providers. What could cause latency spikes?"},
            {"role": "assistant", "content": "Common causes: cold connection pools, uncached DNS, autoscaling lag, and upstream rate limiting."},
            {"role": "user", "content": last}
        ],
        "temperature": 0.2,
        "top_p": 1,
        "max_tokens": 256,
        "user": "bench-user-1",
        "stream": false
    }))
    .unwrap()
}

/// An agent's request: three tools with JSON schemas, and a conversation with a tool call, its
/// result and an image part.
fn agent_request() -> Vec<u8> {
    let tool = |name: &str, what: &str| {
        json!({"type": "function", "function": {
            "name": name,
            "description": format!("Looks up the {what} for a city. Returns JSON with the fields named in the schema."),
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "description": "The city, e.g. \"Paris\""},
                "units": {"type": "string", "enum": ["metric", "imperial"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 14}
            }, "required": ["city"], "additionalProperties": false},
            "strict": true
        }})
    };
    serde_json::to_vec(&json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a travel assistant. Use the tools; answer in two sentences."},
            {"role": "user", "content": [
                {"type": "text", "text": "Where is this photo from, and what will the weather be there this week?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/photos/bridge.jpg", "detail": "low"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_7Qp2", "type": "function",
                "function": {"name": "get_forecast", "arguments": "{\"city\":\"Lisbon\",\"days\":7}"}}]},
            {"role": "tool", "tool_call_id": "call_7Qp2", "content": "{\"days\":[{\"max_c\":24,\"rain_mm\":0}]}"}
        ],
        "tools": [tool("get_weather", "current weather"), tool("get_forecast", "forecast"), tool("get_air_quality", "air quality")],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "temperature": 0.3,
        "stream": false
    }))
    .unwrap()
}

fn config(kind: ProviderKind) -> ProviderConfig {
    ProviderConfig::new(kind, "http://127.0.0.1:18080/v1", "sk-bench", "bench-model")
}

fn ctx(include_usage: bool) -> ResponseContext {
    ResponseContext {
        id: "chatcmpl-bench".into(),
        created: 1_700_000_000,
        model: "bench-model".into(),
        include_usage,
        json_object: false,
        legacy_functions: false,
    }
}

const WORDS: [&str; 8] =
    ["The ", "proxy ", "forwards ", "each ", "event ", "as ", "it ", "arrives. "];

/// An OpenAI stream as gpt-4o-mini sends it with `include_usage`: the role chunk with `first`,
/// a chunk per delta, the finish chunk with `finish`, the usage chunk, [DONE].
fn openai_events(
    first: serde_json::Value,
    deltas: impl IntoIterator<Item = serde_json::Value>,
    finish: &str,
) -> Vec<u8> {
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        json!({"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1_700_000_000u64,
               "model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1",
               "choices":[{"index":0,"delta":delta,"logprobs":null,"finish_reason":finish}],
               "usage":null,"obfuscation":"aB3dE"})
    };
    let mut out = String::new();
    let mut push = |v: serde_json::Value| out.push_str(&format!("data: {v}\n\n"));
    push(chunk(first, json!(null)));
    for delta in deltas {
        push(chunk(delta, json!(null)));
    }
    push(chunk(json!({}), json!(finish)));
    push(
        json!({"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1_700_000_000u64,
                "model":"gpt-4o-mini-2024-07-18","choices":[],
                "usage":{"prompt_tokens":250,"completion_tokens":96,"total_tokens":346}}),
    );
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

/// An OpenAI stream: role chunk, 96 content chunks, finish chunk, usage chunk, [DONE].
fn openai_stream() -> Vec<u8> {
    let role = json!({"role":"assistant","content":"","refusal":null});
    openai_events(role, (0..96).map(|i| json!({"content": WORDS[i % 8]})), "stop")
}

/// An OpenAI stream of tool calls: role chunk, three calls of 32 argument fragments each
/// (the first brings the id and name), finish chunk, usage chunk, [DONE].
fn openai_tool_call_stream() -> Vec<u8> {
    let role = json!({"role":"assistant","content":null,"refusal":null});
    let calls = (0..3).flat_map(|call| {
        let first = json!({"tool_calls":[{"index":call,"id":format!("call_{call}"),"type":"function",
            "function":{"name":"get_weather","arguments":""}}]});
        let fragments = (0..31).map(move |i| {
            json!({"tool_calls":[{"index":call,"function":{"arguments":WORDS[i % 8]}}]})
        });
        std::iter::once(first).chain(fragments)
    });
    openai_events(role, calls, "tool_calls")
}

/// An Anthropic stream with 96 text deltas (padded JSON and a ping, as recorded streams have).
fn anthropic_stream() -> Vec<u8> {
    let mut out = String::new();
    let mut ev = |name: &str, data: serde_json::Value| {
        out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    };
    ev(
        "message_start",
        json!({"type":"message_start","message":{"id":"msg_01XyZ","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":250,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}),
    );
    ev(
        "content_block_start",
        json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
    );
    ev("ping", json!({"type":"ping"}));
    for i in 0..96 {
        ev(
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":WORDS[i % 8]}}),
        );
    }
    ev("content_block_stop", json!({"type":"content_block_stop","index":0}));
    ev(
        "message_delta",
        json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":96}}),
    );
    ev("message_stop", json!({"type":"message_stop"}));
    out.into_bytes()
}

/// A Gemini stream (CRLF framing, usage repeated) with 96 text events.
fn gemini_stream() -> Vec<u8> {
    let mut out = String::new();
    for i in 0..96 {
        let finish = if i == 95 { json!("STOP") } else { json!(null) };
        let mut cand =
            json!({"content":{"parts":[{"text":WORDS[i % 8]}],"role":"model"},"index":0});
        if !finish.is_null() {
            cand["finishReason"] = finish;
        }
        let v = json!({"candidates":[cand],
            "usageMetadata":{"promptTokenCount":250,"candidatesTokenCount":i + 1,"totalTokenCount":251 + i},
            "modelVersion":"gemini-2.5-flash","responseId":"resp-bench"});
        out.push_str(&format!("data: {v}\r\n\r\n"));
    }
    out.into_bytes()
}

fn openai_completion() -> Vec<u8> {
    serde_json::to_vec(&json!({"id":"chatcmpl-AbC123","object":"chat.completion","created":1_700_000_000u64,
        "model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant",
        "content":WORDS.concat().repeat(12),"refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],
        "usage":{"prompt_tokens":250,"completion_tokens":96,"total_tokens":346,
        "prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},
        "completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},
        "service_tier":"default","system_fingerprint":"fp_0ba0d124f1"})).unwrap()
}

fn anthropic_message() -> Vec<u8> {
    serde_json::to_vec(&json!({"id":"msg_01XyZ","type":"message","role":"assistant","model":"claude-sonnet-4-5",
        "content":[{"type":"text","text":WORDS.concat().repeat(12)}],"stop_reason":"end_turn","stop_sequence":null,
        "usage":{"input_tokens":250,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":96}})).unwrap()
}

fn gemini_response() -> Vec<u8> {
    serde_json::to_vec(&json!({"candidates":[{"content":{"parts":[{"text":WORDS.concat().repeat(12)}],"role":"model"},
        "finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":250,"candidatesTokenCount":96,"totalTokenCount":346},
        "modelVersion":"gemini-2.5-flash","responseId":"resp-bench"})).unwrap()
}

fn requests(c: &mut Criterion) {
    let mut g = c.benchmark_group("request");
    for size in [1_000usize, 20_000] {
        let body = chat_request(size);
        g.throughput(Throughput::Bytes(body.len() as u64));
        let label = format!("{}k", size / 1000);
        g.bench_with_input(
            BenchmarkId::new("parse_rewrite_serialize", &label),
            &body,
            |b, body| {
                b.iter(|| {
                    let mut r: ChatCompletionRequest = from_slice(black_box(body)).unwrap();
                    r.model.clear();
                    r.model.push_str("bench-model");
                    serde_json::to_vec(&r).unwrap()
                })
            },
        );
        for (name, kind) in [
            ("openai", ProviderKind::OpenAi),
            ("anthropic", ProviderKind::Anthropic),
            ("gemini", ProviderKind::Google),
        ] {
            let p = provider(&config(kind)).unwrap();
            g.bench_with_input(
                BenchmarkId::new(format!("parse_build_{name}"), &label),
                &body,
                |b, body| {
                    b.iter(|| {
                        let r: ChatCompletionRequest = from_slice(black_box(body)).unwrap();
                        p.build_request(r).unwrap()
                    })
                },
            );
            // What the server calls: the client's bytes at hand.
            g.bench_with_input(
                BenchmarkId::new(format!("parse_build_from_{name}"), &label),
                &body,
                |b, body| {
                    b.iter(|| {
                        let r: ChatCompletionRequest = from_slice(black_box(body)).unwrap();
                        p.build_request_from(r, body).unwrap()
                    })
                },
            );
        }
        // What the server calls first for a platform that takes the OpenAI format: the body
        // read only as far as forwarding it needs.
        let p = provider(&config(ProviderKind::OpenAi)).unwrap();
        g.bench_with_input(BenchmarkId::new("read_head_build_openai", &label), &body, |b, body| {
            b.iter(|| p.build_request_head(p.read_head(black_box(body)).unwrap()).unwrap())
        });
    }
    // An agent's request (tools, a tool call, an image), both ways.
    let body = agent_request();
    let p = provider(&config(ProviderKind::OpenAi)).unwrap();
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("parse_build_from_openai/agent", |b| {
        b.iter(|| {
            let r: ChatCompletionRequest = from_slice(black_box(&body)).unwrap();
            p.build_request_from(r, &body).unwrap()
        })
    });
    g.bench_function("read_head_build_openai/agent", |b| {
        b.iter(|| p.build_request_head(p.read_head(black_box(&body)).unwrap()).unwrap())
    });
    g.finish();
}

fn responses(c: &mut Criterion) {
    let mut g = c.benchmark_group("response");
    for (name, kind, body) in [
        ("openai", ProviderKind::OpenAi, openai_completion()),
        ("anthropic", ProviderKind::Anthropic, anthropic_message()),
        ("gemini", ProviderKind::Google, gemini_response()),
    ] {
        let p = provider(&config(kind)).unwrap();
        let body = Bytes::from(body);
        let ctx = ctx(false);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| p.translate_response(200, black_box(body.clone()), &ctx).unwrap())
        });
        // What the server calls for a non-stream client: only the body and the usage.
        g.bench_function(format!("{name}_answer"), |b| {
            b.iter(|| p.translate_answer(200, black_box(body.clone()), &ctx).unwrap())
        });
    }
    g.finish();
}

/// Decodes and translates a whole 100-event stream; criterion reports time per stream, and
/// the element throughput gives time per event.
fn streams(c: &mut Criterion) {
    let mut g = c.benchmark_group("stream_100_events");
    for (name, kind, bytes) in [
        ("openai", ProviderKind::OpenAi, openai_stream()),
        ("openai_tool_calls", ProviderKind::OpenAi, openai_tool_call_stream()),
        ("anthropic", ProviderKind::Anthropic, anthropic_stream()),
        ("gemini", ProviderKind::Google, gemini_stream()),
    ] {
        let p: Box<dyn Provider> = provider(&config(kind)).unwrap();
        let ctx = ctx(true);
        let events = sse::Decoder::new().feed(&bytes).unwrap().len() as u64;
        g.throughput(Throughput::Elements(events));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut stream = p.stream(&ctx);
                let mut decoder = sse::Decoder::new();
                let mut frames = 0usize;
                // Network reads of ~4 KB, as a socket delivers them.
                for piece in bytes.chunks(4096) {
                    for ev in decoder.feed(piece).unwrap() {
                        frames += stream.push(&ev).unwrap().len();
                    }
                }
                frames += stream.finish().unwrap().len();
                black_box(frames)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("sse_decoder");
    let bytes = openai_stream();
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("whole", |b| {
        b.iter(|| sse::Decoder::new().feed(black_box(&bytes)).unwrap().len())
    });
    g.bench_function("4k_reads", |b| {
        b.iter(|| {
            let mut d = sse::Decoder::new();
            bytes.chunks(4096).map(|p| d.feed(black_box(p)).unwrap().len()).sum::<usize>()
        })
    });
    // One event of 1 MiB (an image, a long tool call), in the reads a socket gives.
    let long = format!("data: {}\n\n", "x".repeat(1 << 20)).into_bytes();
    g.throughput(Throughput::Bytes(long.len() as u64));
    g.bench_function("1mib_event_4k_reads", |b| {
        b.iter(|| {
            let mut d = sse::Decoder::new();
            long.chunks(4096).map(|p| d.feed(black_box(p)).unwrap().len()).sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, requests, responses, streams);
criterion_main!(benches);
