//! Writer throughput with realistic entries: an OpenAI chat request and its
//! response, about 2 KB and 20 KB of body per entry, into a temp-file database.
//!
//! Run with `cargo bench -p uniproxy-logstore --bench writer -- --warm-up-time 1 --measurement-time 3`.
//! Besides criterion's timings it prints entries/s and bytes on disk per entry.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use uniproxy_logstore::{JsonLinesSpill, LogStore, NewEntry, StoreOptions, Writer, WriterOptions};

#[path = "fixtures/realistic.rs"]
mod realistic;
use realistic::realistic;

/// Writes `entries` through a fresh writer into a fresh database; returns the
/// time from the first send to the end of shutdown, and the store.
fn run(entries: Vec<NewEntry>, dir: &std::path::Path) -> (Duration, LogStore) {
    let store = LogStore::open(&dir.join("bench.db"), StoreOptions::default()).unwrap();
    let writer = Writer::spawn(
        store.clone(),
        Box::new(JsonLinesSpill::new(dir.join("spill.jsonl"))),
        WriterOptions::default(),
    )
    .unwrap();
    let handle = writer.handle();
    let n = entries.len() as u64;
    let start = Instant::now();
    for entry in entries {
        handle.send(entry).unwrap();
    }
    let report = writer.shutdown().unwrap();
    let elapsed = start.elapsed();
    assert_eq!(report.stats.written, n, "{:?}", report.stats);
    (elapsed, store)
}

fn writer_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("writer");
    group.sample_size(10);
    for (label, size, n) in [("2KB", 2_048usize, 20_000u64), ("20KB", 20_480, 4_000)] {
        let sample = realistic(size, 1);
        eprintln!(
            "{label}: bodies {} B (request {} B, upstream {} B, response {} B)",
            sample.body_bytes(),
            sample.client_request.len(),
            sample.upstream_request.len(),
            sample.response.len()
        );
        // One sizing run outside criterion: sustained rate and bytes on disk.
        let dir = tempfile::tempdir().unwrap();
        let (elapsed, store) = run((0..n * 2).map(|i| realistic(size, i)).collect(), dir.path());
        store.reclaim_space().unwrap();
        let on_disk = std::fs::metadata(dir.path().join("bench.db")).unwrap().len();
        eprintln!(
            "{label}: {} entries in {:.2?} = {:.0} entries/s, {:.1} MB/s of bodies; {} B on disk per entry",
            n * 2,
            elapsed,
            (n * 2) as f64 / elapsed.as_secs_f64(),
            (n * 2 * sample.body_bytes()) as f64 / elapsed.as_secs_f64() / 1e6,
            on_disk / (n * 2),
        );

        group.throughput(Throughput::Elements(n));
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let entries: Vec<_> = (0..n).map(|i| realistic(size, i)).collect();
                    let dir = tempfile::tempdir().unwrap();
                    total += run(entries, dir.path()).0;
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, writer_throughput);
criterion_main!(benches);
