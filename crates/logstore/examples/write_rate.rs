//! Measures how fast one `Writer` stores realistic entries, and how many bytes
//! each entry takes on disk.
//!
//! Run with `cargo run --release -p uniproxy-logstore --example write_rate -- [ENTRIES] [BODY_BYTES] [direct]`,
//! e.g. `-- 50000 2048`. With `direct`, it calls `insert_batch` in chunks of
//! 512 instead of going through the writer thread.
#![allow(clippy::unwrap_used, reason = "a measuring tool: any failure should stop it loudly")]

#[path = "../benches/fixtures/realistic.rs"]
mod realistic;

use std::time::Instant;

use uniproxy_logstore::{JsonLinesSpill, LogStore, StoreOptions, Writer, WriterOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: u64 = args.first().map_or(Ok(50_000), |s| s.parse())?;
    let size: usize = args.get(1).map_or(Ok(2_048), |s| s.parse())?;
    let direct = args.get(2).is_some_and(|s| s == "direct");

    let entries: Vec<_> = (0..n).map(|i| realistic::realistic(size, i)).collect();
    let body_bytes: u64 = entries.iter().map(uniproxy_logstore::NewEntry::body_bytes).sum();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("rate.db");
    let store = LogStore::open(&path, StoreOptions::default())?;

    let start = Instant::now();
    if direct {
        for chunk in entries.chunks(512) {
            store.insert_batch(chunk)?;
        }
    } else {
        let writer = Writer::spawn(
            store.clone(),
            Box::new(JsonLinesSpill::new(dir.path().join("spill.jsonl"))),
            WriterOptions::default(),
        )?;
        let handle = writer.handle();
        for entry in entries {
            handle.send(entry)?;
        }
        let report = writer.shutdown()?;
        assert_eq!(report.stats.written, n);
    }
    let elapsed = start.elapsed();
    store.reclaim_space()?;
    let on_disk = std::fs::metadata(&path)?.len();
    eprintln!(
        "{n} entries of {} B in {elapsed:.2?}: {:.0} entries/s, {:.1} MB/s of bodies, {} B on disk per entry{}",
        body_bytes / n.max(1),
        n as f64 / elapsed.as_secs_f64(),
        body_bytes as f64 / elapsed.as_secs_f64() / 1e6,
        on_disk / n.max(1),
        if direct { " (direct insert_batch)" } else { "" },
    );
    Ok(())
}
