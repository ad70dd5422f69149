//! Fuzz targets: no input, valid or not, makes the request parser, the SSE decoder or a
//! translator panic, and the decoder gives the same events however the bytes are split.
//!
//! `cargo test` replays each target's corpus (`tests/__fuzz__/fuzz__<target>/corpus/`) plus a
//! batch of generated inputs. To fuzz for real, for a fixed budget (not in CI's time):
//!
//! ```sh
//! cargo install cargo-bolero --locked
//! cargo bolero test -p uniproxy-translate request_parse_and_build \
//!     --engine libfuzzer --sanitizer NONE --rustc-bootstrap -T 10min
//! ```
//!
//! (`--rustc-bootstrap` lets libfuzzer build on the stable toolchain; `--corpus-dir DIR`
//! keeps the finds out of the repository.) Found inputs land in the corpus folder, and
//! failing ones in `crashes/` (replayed by `cargo test` too, so a fixed bug stays fixed). The committed corpus is our own test data
//! plus about 150 of the fuzzer's finds per target; `cargo bolero reduce` after a long run
//! keeps a coverage-minimal set locally (thousands of files: too many to commit).
#![allow(clippy::unwrap_used)]

use bolero::check;
use bytes::Bytes;
use uniproxy_translate::{Provider, ProviderConfig, ProviderKind, ResponseContext, provider, sse};
use uniproxy_wire::{ChatCompletionRequest, from_slice};

const KINDS: [ProviderKind; 6] = [
    ProviderKind::OpenAi,
    ProviderKind::Custom,
    ProviderKind::AzureOpenAi,
    ProviderKind::Anthropic,
    ProviderKind::Google,
    ProviderKind::Mock,
];

fn providers() -> Vec<Box<dyn Provider>> {
    KINDS
        .iter()
        .map(|&kind| {
            let base = match kind {
                ProviderKind::AzureOpenAi => "https://r.openai.azure.com/openai/deployments/d",
                _ => "http://127.0.0.1:9/v1",
            };
            provider(&ProviderConfig::new(kind, base, "fuzz-key", "fuzz-model")).unwrap()
        })
        .collect()
}

/// The context, its switches taken from the input's first byte.
fn ctx(input: &[u8]) -> ResponseContext {
    let flags = input.first().copied().unwrap_or(0);
    ResponseContext {
        id: "chatcmpl-fuzz".to_owned(),
        created: 1,
        model: "fuzz-model".to_owned(),
        include_usage: flags & 1 == 1,
        json_object: flags & 2 == 2,
        legacy_functions: flags & 4 == 4,
    }
}

#[test]
fn request_parse_and_build() {
    // Built per input: the closure must be unwind-safe, and building is cheap.
    check!().for_each(|input: &[u8]| {
        let providers = providers();
        if let Ok(request) = from_slice::<ChatCompletionRequest>(input) {
            for p in &providers {
                let _ = p.build_request(request.clone());
            }
        }
    });
}

#[test]
fn sse_decoder_split_invariance() {
    check!().for_each(|input: &[u8]| {
        // The first byte picks where to split the rest.
        let Some((&k, bytes)) = input.split_first() else { return };
        let whole = {
            let mut d = sse::Decoder::new();
            let mut events = d.feed(bytes).unwrap();
            events.extend(d.finish());
            events
        };
        let step = usize::from(k % 13) + 1;
        let mut d = sse::Decoder::new();
        let mut split = Vec::new();
        for piece in bytes.chunks(step) {
            split.extend(d.feed(piece).unwrap());
        }
        split.extend(d.finish());
        assert_eq!(whole, split, "split every {step} bytes");
        // With a limit the input reaches, split or not: the same events before the same error.
        let max_event = usize::from(k % 32) + 1;
        let read = |step: usize| {
            let mut d = sse::Decoder::with_max_event(max_event);
            let mut events = Vec::new();
            let failed = bytes.chunks(step).any(|piece| d.feed_into(piece, &mut events).is_err());
            events.extend(d.finish());
            (events, failed)
        };
        assert_eq!(
            read(bytes.len().max(1)),
            read(step),
            "limit {max_event}, split every {step} bytes"
        );
    });
}

#[test]
fn stream_translators() {
    // Built per input: the closure must be unwind-safe, and building is cheap.
    check!().for_each(|input: &[u8]| {
        let providers = providers();
        for p in &providers {
            let mut stream = p.stream(&ctx(input));
            let mut decoder = sse::Decoder::new();
            let events = decoder.feed(input).unwrap_or_default();
            for event in events.into_iter().chain(decoder.finish()) {
                let _ = stream.push(&event);
            }
            let _ = stream.finish();
            let _ = serde_json::to_string(stream.assembled()).unwrap();
        }
    });
}

#[test]
fn responses_and_errors() {
    // Built per input: the closure must be unwind-safe, and building is cheap.
    check!().for_each(|input: &[u8]| {
        let providers = providers();
        let status = match input.first() {
            Some(b) if b % 4 == 0 => 400 + u16::from(*b % 100),
            _ => 200,
        };
        for p in &providers {
            let _ = p.translate_response(status, Bytes::copy_from_slice(input), &ctx(input));
            let _ = p.translate_error(status, input);
        }
    });
}
