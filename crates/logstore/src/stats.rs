//! Aggregates for dashboards: counts, tokens, latency percentiles, time series.

use std::collections::BTreeMap;

use rusqlite::types::Value;

use crate::error::sql;
use crate::store::to_u64;
use crate::{LogStore, StoreError};

/// What [`LogStore::stats`] aggregates over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsQuery {
    /// Entries received at or after this time (unix ms).
    pub from_ms: Option<i64>,
    /// Entries received before this time (unix ms, exclusive).
    pub to_ms: Option<i64>,
    /// Only entries whose client or actual model is exactly this.
    pub model: Option<String>,
    /// The width of each [`Stats::series`] bucket in ms; `None` or 0 gives no series.
    /// Buckets are aligned to multiples of the width since the unix epoch.
    pub bucket_ms: Option<i64>,
}

/// Nearest-rank percentiles of a set of durations in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Percentiles {
    /// The median.
    pub p50: i64,
    /// The 90th percentile.
    pub p90: i64,
    /// The 99th percentile.
    pub p99: i64,
}

/// One time bucket of [`Stats::series`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Bucket {
    /// The bucket start (unix ms).
    pub start_ms: i64,
    /// Requests received in the bucket.
    pub requests: u64,
    /// Failed requests (status 400 and up, or an error type set).
    pub errors: u64,
    /// Total tokens.
    pub tokens: u64,
    /// Median latency of the requests that asked the model (0 without any).
    pub p50_latency_ms: i64,
}

/// The result of [`LogStore::stats`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Stats {
    /// Requests in the range.
    pub requests: u64,
    /// Failed requests: status 400 and up (499, client closed, included), or
    /// an error type set.
    pub errors: u64,
    /// `errors / requests`, 0 when there are no requests.
    pub error_rate: f64,
    /// Sum of prompt tokens.
    pub prompt_tokens: u64,
    /// Sum of completion tokens.
    pub completion_tokens: u64,
    /// Sum of total tokens.
    pub total_tokens: u64,
    /// Sum of cached prompt tokens.
    pub cached_tokens: u64,
    /// Sum of reasoning tokens.
    pub reasoning_tokens: u64,
    /// End-to-end latency percentiles over the requests that asked the model (tried the
    /// upstream at least once: not the ones the proxy refused itself), `None` without any.
    pub latency: Option<Percentiles>,
    /// Time-to-first-byte percentiles over the requests that asked the model and were
    /// answered without an error.
    pub ttft: Option<Percentiles>,
    /// Per-bucket figures, oldest first; buckets without requests are left out.
    pub series: Vec<Bucket>,
}

/// The nearest-rank percentile of sorted data: the smallest value with at
/// least `p` percent of the data at or below it.
fn nearest_rank(sorted: &[i64], p: u32) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len();
    let rank = (n * p as usize).div_ceil(100).clamp(1, n);
    sorted.get(rank - 1).copied().unwrap_or_default()
}

fn percentiles(mut values: Vec<i64>) -> Option<Percentiles> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(Percentiles {
        p50: nearest_rank(&values, 50),
        p90: nearest_rank(&values, 90),
        p99: nearest_rank(&values, 99),
    })
}

#[derive(Default)]
struct BucketAcc {
    requests: u64,
    errors: u64,
    tokens: u64,
    latencies: Vec<i64>,
}

impl LogStore {
    /// Counts, error rate, token sums, latency and TTFT percentiles, and an
    /// optional time series over a range of receive times.
    ///
    /// SQLite has no percentile function, so this reads six small columns of
    /// every row in the range (an index range scan on `received_ms`) and
    /// sorts in memory: about 50 bytes per row, so a million-row range takes
    /// some tens of MB and well under a second.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`] if the query fails, [`StoreError::Pool`] if no
    /// connection is available.
    pub fn stats(&self, query: &StatsQuery) -> Result<Stats, StoreError> {
        let mut terms = Vec::new();
        let mut args = Vec::new();
        if let Some(from) = query.from_ms {
            terms.push("received_ms >= ?");
            args.push(Value::Integer(from));
        }
        if let Some(to) = query.to_ms {
            terms.push("received_ms < ?");
            args.push(Value::Integer(to));
        }
        if let Some(model) = &query.model {
            terms.push("(client_model = ? OR actual_model = ?)");
            args.push(Value::Text(model.clone()));
            args.push(Value::Text(model.clone()));
        }
        let clause = if terms.is_empty() { String::from("1") } else { terms.join(" AND ") };
        let stats_sql = format!(
            "SELECT received_ms, latency_ms, ttft_ms, (status >= 400 OR error_type IS NOT NULL), \
             prompt_tokens, completion_tokens, total_tokens, cached_tokens, reasoning_tokens, \
             attempts > 0 \
             FROM requests WHERE {clause}"
        );
        let bucket_ms = query.bucket_ms.filter(|&b| b > 0);

        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(&stats_sql).map_err(sql("stats"))?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args.iter())).map_err(sql("stats"))?;

        let mut stats = Stats::default();
        let mut latencies = Vec::new();
        let mut ttfts = Vec::new();
        let mut buckets: BTreeMap<i64, BucketAcc> = BTreeMap::new();
        let tokens = |v: Option<i64>| v.map_or(0, to_u64);
        while let Some(row) = rows.next().map_err(sql("stats"))? {
            let read = || -> rusqlite::Result<_> {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, Option<i64>>(2)?,
                    row.get::<_, bool>(3)?,
                    [row.get(4)?, row.get(5)?, row.get(6)?, row.get(7)?, row.get(8)?],
                    row.get::<_, bool>(9)?,
                ))
            };
            let (
                received,
                latency,
                ttft,
                failed,
                [prompt, completion, total, cached, reasoning],
                asked,
            ) = read().map_err(sql("stats"))?;
            stats.requests += 1;
            stats.errors += u64::from(failed);
            // Saturating: a count is what an upstream said, and a few near u64::MAX (a broken
            // or hostile server) must not overflow the sums.
            let add = |sum: &mut u64, n| *sum = sum.saturating_add(tokens(n));
            add(&mut stats.prompt_tokens, prompt);
            add(&mut stats.completion_tokens, completion);
            add(&mut stats.total_tokens, total);
            add(&mut stats.cached_tokens, cached);
            add(&mut stats.reasoning_tokens, reasoning);
            // A request refused in the proxy (a wrong key, a malformed body) asked nothing of
            // the model: its time says nothing of the model's, and a flood of them would pull
            // the percentiles to zero. An error's first byte is not a first token.
            if asked {
                latencies.push(latency);
            }
            if let Some(t) = ttft.filter(|_| asked && !failed) {
                ttfts.push(t);
            }
            if let Some(width) = bucket_ms {
                let acc = buckets.entry(received.div_euclid(width) * width).or_default();
                acc.requests += 1;
                acc.errors += u64::from(failed);
                acc.tokens = acc.tokens.saturating_add(tokens(total));
                if asked {
                    acc.latencies.push(latency);
                }
            }
        }
        if stats.requests > 0 {
            stats.error_rate = stats.errors as f64 / stats.requests as f64;
        }
        stats.latency = percentiles(latencies);
        stats.ttft = percentiles(ttfts);
        stats.series = buckets
            .into_iter()
            .map(|(start_ms, acc)| Bucket {
                start_ms,
                requests: acc.requests,
                errors: acc.errors,
                tokens: acc.tokens,
                p50_latency_ms: percentiles(acc.latencies).map_or(0, |p| p.p50),
            })
            .collect();
        Ok(stats)
    }
}
