//! Translates a recorded Anthropic SSE stream into the OpenAI chunks a client would get.
//!
//! Run with `cargo run -p uniproxy-translate --example anthropic_stream -- FILE.sse`
//! (add `--usage` to act as if the client asked for `stream_options.include_usage`).

use std::io::Write;

use uniproxy_translate::{ProviderConfig, ProviderKind, ResponseContext, provider, sse};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut path = None;
    let mut include_usage = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--usage" => include_usage = true,
            _ => path = Some(arg),
        }
    }
    let Some(path) = path else {
        return Err("usage: anthropic_stream [--usage] FILE.sse".into());
    };
    let bytes = std::fs::read(&path)?;

    let config =
        ProviderConfig::new(ProviderKind::Anthropic, "https://api.anthropic.com/v1", "", "claude");
    let anthropic = provider(&config)?;
    let ctx = ResponseContext {
        id: "chatcmpl-example".to_owned(),
        created: 0,
        model: "claude".to_owned(),
        include_usage,
        json_object: false,
        legacy_functions: false,
    };
    let mut stream = anthropic.stream(&ctx);
    let mut decoder = sse::Decoder::new();
    let mut out = std::io::stdout().lock();
    for event in decoder.feed(&bytes)?.into_iter().chain(decoder.finish()) {
        for frame in stream.push(&event)? {
            out.write_all(&frame)?;
        }
    }
    for frame in stream.finish()? {
        out.write_all(&frame)?;
    }
    writeln!(out, ": assembled {}", serde_json::to_string(stream.assembled())?)?;
    Ok(())
}
