//! CPU time of the writer thread per entry, for proxy-like entries (a ~1 KB
//! chat request: three bodies of about 3 KB in all, headers already redacted).
//! Wall time on a shared machine is noisy; the writer's own CPU time is the
//! number that tells whether a change helps.
//!
//! Run with `cargo bench -p uniproxy-logstore --bench writer_cpu -- [ENTRIES] [RUNS] [PER_SECOND]`.
//! It prints the median of the runs (each into a fresh database). With
//! `PER_SECOND`, sends are paced to that rate, so batches are smaller.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "fixtures/realistic.rs"]
mod realistic;
use realistic::realistic;

include!("fixtures/writer_cpu.rs");

fn main() {
    // `cargo bench` passes `--bench`; take the numeric arguments, in order.
    let mut numbers = std::env::args().skip(1).filter_map(|a| a.parse::<u64>().ok());
    let n = numbers.next().unwrap_or(20_000);
    let runs = numbers.next().unwrap_or(5);
    let per_second = numbers.next().unwrap_or(0);
    let mut cpu = Vec::new();
    let mut rate = Vec::new();
    for _ in 0..runs {
        let entries: Vec<_> = (0..n).map(proxy_entry).collect();
        let dir = tempfile::tempdir().unwrap();
        let run = writer_cpu(
            entries,
            dir.path(),
            uniproxy_logstore::WriterOptions::default(),
            per_second,
        );
        cpu.push(run.cpu_us);
        rate.push(run.rate);
    }
    cpu.sort_by(f64::total_cmp);
    rate.sort_by(f64::total_cmp);
    eprintln!(
        "writer CPU per entry: median {:.2} µs (min {:.2}, max {:.2}); median {:.0} entries/s; {runs} runs of {n}",
        cpu[cpu.len() / 2],
        cpu[0],
        cpu[cpu.len() - 1],
        rate[rate.len() / 2],
    );
}
