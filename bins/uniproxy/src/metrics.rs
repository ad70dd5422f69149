//! Prometheus metrics for `GET /metrics`, in the Prometheus text format (0.0.4) written by
//! `prometheus-client`'s encoder.
//!
//! Counting costs no lock: every series the proxy can produce is created at start-up as plain
//! atomics in arrays indexed by (status, stream flag). The platform is fixed per process, so it
//! is a label value held once, not a dimension. `prometheus-client`'s own `Family` would take a
//! read lock on each lookup and its `Histogram` a mutex on each observation, so the values live
//! here and a [`Collector`] hands them to the library's encoder at scrape time. The log store's
//! writer counters and the in-flight gauge are read at scrape time too.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use uniproxy_logstore::WriterHandle;

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Status codes that get their own label value. Any other status is counted under its class
/// (`"4xx"`), which PromQL's `status=~"4.."` still matches.
const STATUSES: [u16; 19] =
    [200, 400, 401, 403, 404, 405, 408, 409, 413, 422, 429, 499, 500, 501, 502, 503, 504, 520, 529];
/// The status label values: the codes above, then the classes 1xx to 5xx, then `other`.
const STATUS_SLOTS: usize = STATUSES.len() + 6;

/// Bucket bounds, in seconds, of the upstream latency and time-to-first-token histograms.
const LATENCY_BUCKETS: [f64; 14] =
    [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];
/// Bucket bounds, in seconds, of the proxy overhead histogram (the proxy's own work is fast).
const OVERHEAD_BUCKETS: [f64; 12] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

fn status_slot(status: u16) -> usize {
    match STATUSES.iter().position(|&s| s == status) {
        Some(i) => i,
        None => match status / 100 {
            c @ 1..=5 => STATUSES.len() + usize::from(c) - 1,
            _ => STATUS_SLOTS - 1,
        },
    }
}

fn status_label(slot: usize) -> String {
    match STATUSES.get(slot) {
        Some(code) => code.to_string(),
        None if slot < STATUS_SLOTS - 1 => format!("{}xx", slot - STATUSES.len() + 1),
        None => "other".to_owned(),
    }
}

/// A histogram over fixed bounds, as atomics: observing is a few relaxed atomic adds.
#[derive(Debug)]
struct AtomicHistogram {
    bounds: &'static [f64],
    /// One more than `bounds`: the last counts what is above every bound.
    counts: Box<[AtomicU64]>,
    /// The sum in microseconds, so that it can be an integer atomic.
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    fn new(bounds: &'static [f64]) -> Self {
        AtomicHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.iter().position(|&b| secs <= b).unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The per-bucket counts (the encoder makes them cumulative), the count and the sum.
    fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut buckets = Vec::with_capacity(self.counts.len());
        let mut count = 0;
        for (i, c) in self.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            count += n;
            buckets.push((self.bounds.get(i).copied().unwrap_or(f64::INFINITY), n));
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (buckets, count, sum)
    }
}

/// What one finished request adds to the metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observation {
    /// The status the client got.
    pub status: u16,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Time spent waiting on the upstream (the whole latency minus the proxy's overhead);
    /// `None` for a request the proxy answered itself without asking it (a wrong key, a
    /// malformed body), which would pull the histogram towards zero.
    pub upstream: Option<Duration>,
    /// Time spent in the proxy itself.
    pub overhead: Duration,
    /// Time to the first streamed byte, for successful streams only.
    pub ttft: Option<Duration>,
    /// Prompt tokens reported by the upstream.
    pub prompt_tokens: u64,
    /// Completion tokens reported by the upstream.
    pub completion_tokens: u64,
    /// Whether the request ended on a timeout.
    pub timed_out: bool,
}

/// The counters themselves, shared by the recording side and the scrape-time collector.
struct Counters {
    platform: &'static str,
    /// Indexed by `status_slot * 2 + stream`.
    requests: Box<[AtomicU64]>,
    /// Indexed by the stream flag.
    upstream: [AtomicHistogram; 2],
    overhead: [AtomicHistogram; 2],
    ttft: AtomicHistogram,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    retries: AtomicU64,
    timeouts: AtomicU64,
    in_flight: Arc<AtomicUsize>,
    store: Option<WriterHandle>,
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counters").field("platform", &self.platform).finish_non_exhaustive()
    }
}

/// The proxy's metrics: owned by [`AppState`](crate::AppState), fed by the
/// [`Recorder`](crate::record::Recorder) and the retry loop, rendered by [`Metrics::render`].
pub struct Metrics {
    counters: Arc<Counters>,
    registry: Registry,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").field("platform", &self.counters.platform).finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics for a proxy of `platform`; `in_flight` and the store's writer are read at scrape
    /// time.
    pub fn new(
        platform: &'static str,
        in_flight: Arc<AtomicUsize>,
        store: Option<WriterHandle>,
    ) -> Self {
        let counters = Arc::new(Counters {
            platform,
            requests: (0..STATUS_SLOTS * 2).map(|_| AtomicU64::new(0)).collect(),
            upstream: [
                AtomicHistogram::new(&LATENCY_BUCKETS),
                AtomicHistogram::new(&LATENCY_BUCKETS),
            ],
            overhead: [
                AtomicHistogram::new(&OVERHEAD_BUCKETS),
                AtomicHistogram::new(&OVERHEAD_BUCKETS),
            ],
            ttft: AtomicHistogram::new(&LATENCY_BUCKETS),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            in_flight,
            store,
        });
        let mut registry = Registry::with_prefix("uniproxy");
        registry.register_collector(Box::new(counters.clone()));
        Metrics { counters, registry }
    }

    /// Counts one finished request.
    pub fn observe(&self, o: &Observation) {
        let c = &self.counters;
        let stream = usize::from(o.stream);
        if let Some(n) = c.requests.get(status_slot(o.status) * 2 + stream) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        if let (Some(h), Some(upstream)) = (c.upstream.get(stream), o.upstream) {
            h.observe(upstream);
        }
        if let Some(h) = c.overhead.get(stream) {
            h.observe(o.overhead);
        }
        if let Some(t) = o.ttft {
            c.ttft.observe(t);
        }
        // Saturating, not wrapping: the counts are the upstream's to say.
        for (counter, n) in
            [(&c.prompt_tokens, o.prompt_tokens), (&c.completion_tokens, o.completion_tokens)]
        {
            let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |sum| {
                Some(sum.saturating_add(n))
            });
        }
        if o.timed_out {
            c.timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one upstream retry.
    pub fn retried(&self) {
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail, and the collector below returns only the encoder's
        // own errors, which come from the writer.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

impl Collector for Counters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let platform = ("platform", self.platform);
        {
            let mut m = encoder.encode_descriptor(
                "requests",
                "Chat requests finished, by the status the client got and the stream flag.",
                None,
                MetricType::Counter,
            )?;
            for slot in 0..STATUS_SLOTS {
                let status = status_label(slot);
                for stream in [false, true] {
                    let n = self
                        .requests
                        .get(slot * 2 + usize::from(stream))
                        .map_or(0, |a| a.load(Ordering::Relaxed));
                    // Series that never happened stay out, except 200, so dashboards have a
                    // series from the first scrape.
                    if n == 0 && status != "200" {
                        continue;
                    }
                    let labels = [
                        platform,
                        ("status", status.as_str()),
                        ("stream", if stream { "true" } else { "false" }),
                    ];
                    m.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&n, None)?;
                }
            }
        }
        histogram(
            &mut encoder,
            "upstream_latency",
            "Time spent waiting on the upstream per request (latency minus proxy overhead).",
            platform,
            &self.upstream,
        )?;
        histogram(
            &mut encoder,
            "proxy_overhead",
            "Time spent in the proxy itself per request, upstream wait excluded.",
            platform,
            &self.overhead,
        )?;
        {
            let (buckets, count, sum) = self.ttft.snapshot();
            let mut m = encoder.encode_descriptor(
                "time_to_first_token",
                "Time from the request to the first streamed byte, for successful streams.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            m.encode_family(&[platform])?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        counter(
            &mut encoder,
            "prompt_tokens",
            "Prompt tokens reported by the upstream.",
            platform,
            self.prompt_tokens.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "completion_tokens",
            "Completion tokens reported by the upstream.",
            platform,
            self.completion_tokens.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "upstream_retries",
            "Upstream requests sent again after a connect failure or a transient status.",
            platform,
            self.retries.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "upstream_timeouts",
            "Requests that ended on a timeout (first byte, stream idle or the whole request).",
            platform,
            self.timeouts.load(Ordering::Relaxed),
        )?;
        let in_flight = i64::try_from(self.in_flight.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        encoder
            .encode_descriptor(
                "requests_in_flight",
                "Chat requests being served now (a stream counts until it ends).",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&in_flight)?;
        if let Some(store) = &self.store {
            let s = store.stats();
            encoder
                .encode_descriptor(
                    "log_queue_depth",
                    "Log entries waiting for the log store's writer thread.",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&i64::try_from(s.queued).unwrap_or(i64::MAX))?;
            encoder
                .encode_descriptor(
                    "log_entries_written",
                    "Log entries written to the database.",
                    None,
                    MetricType::Counter,
                )?
                .encode_counter::<NoLabelSet, _, u64>(&s.written, None)?;
            encoder
                .encode_descriptor(
                    "log_entries_spilled",
                    "Log entries written to the spill file because the database failed.",
                    None,
                    MetricType::Counter,
                )?
                .encode_counter::<NoLabelSet, _, u64>(&s.spilled, None)?;
            encoder
                .encode_descriptor(
                    "log_store_degraded",
                    "1 while the log store cannot write its database (entries go to the spill file).",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&i64::from(!s.db_ok))?;
            encoder
                .encode_descriptor(
                    "log_store_stalled",
                    "1 while the log store can write neither its database nor its spill file \
                     (chat requests are refused once its queue is full).",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&i64::from(s.stalled))?;
        }
        Ok(())
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    platform: (&str, &str),
    value: u64,
) -> Result<(), fmt::Error> {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_family(&[platform])?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    platform: (&str, &str),
    by_stream: &[AtomicHistogram; 2],
) -> Result<(), fmt::Error> {
    let mut m =
        encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for (stream, h) in [("false", &by_stream[0]), ("true", &by_stream[1])] {
        let (buckets, count, sum) = h.snapshot();
        let labels = [platform, ("stream", stream)];
        m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new("mock", Arc::new(AtomicUsize::new(3)), None)
    }

    #[test]
    fn a_known_sequence_renders_the_expected_lines() {
        let m = metrics();
        m.observe(&Observation {
            status: 200,
            stream: false,
            upstream: Some(Duration::from_millis(120)),
            overhead: Duration::from_micros(300),
            prompt_tokens: 10,
            completion_tokens: 5,
            ..Observation::default()
        });
        m.observe(&Observation {
            status: 200,
            stream: true,
            upstream: Some(Duration::from_millis(800)),
            overhead: Duration::from_micros(700),
            ttft: Some(Duration::from_millis(90)),
            prompt_tokens: 7,
            completion_tokens: 20,
            ..Observation::default()
        });
        m.observe(&Observation {
            status: 504,
            stream: false,
            upstream: Some(Duration::from_secs(40)),
            timed_out: true,
            ..Observation::default()
        });
        // Answered by the proxy itself: counted, but in no upstream latency.
        m.observe(&Observation { status: 418, upstream: None, ..Observation::default() });
        m.retried();
        m.retried();
        let text = m.render();
        for line in [
            "# TYPE uniproxy_requests_total counter",
            r#"uniproxy_requests_total{platform="mock",status="200",stream="false"} 1"#,
            r#"uniproxy_requests_total{platform="mock",status="200",stream="true"} 1"#,
            r#"uniproxy_requests_total{platform="mock",status="504",stream="false"} 1"#,
            r#"uniproxy_requests_total{platform="mock",status="4xx",stream="false"} 1"#,
            "# TYPE uniproxy_upstream_latency_seconds histogram",
            r#"uniproxy_upstream_latency_seconds_bucket{platform="mock",stream="false",le="0.25"} 1"#,
            r#"uniproxy_upstream_latency_seconds_bucket{platform="mock",stream="false",le="30"} 1"#,
            r#"uniproxy_upstream_latency_seconds_bucket{platform="mock",stream="false",le="60"} 2"#,
            r#"uniproxy_upstream_latency_seconds_bucket{platform="mock",stream="false",le="+Inf"} 2"#,
            r#"uniproxy_upstream_latency_seconds_count{platform="mock",stream="false"} 2"#,
            r#"uniproxy_upstream_latency_seconds_sum{platform="mock",stream="true"} 0.8"#,
            r#"uniproxy_proxy_overhead_seconds_bucket{platform="mock",stream="true",le="0.001"} 1"#,
            r#"uniproxy_proxy_overhead_seconds_bucket{platform="mock",stream="true",le="0.0005"} 0"#,
            r#"uniproxy_time_to_first_token_seconds_bucket{platform="mock",le="0.1"} 1"#,
            r#"uniproxy_time_to_first_token_seconds_count{platform="mock"} 1"#,
            r#"uniproxy_prompt_tokens_total{platform="mock"} 17"#,
            r#"uniproxy_completion_tokens_total{platform="mock"} 25"#,
            r#"uniproxy_upstream_retries_total{platform="mock"} 2"#,
            r#"uniproxy_upstream_timeouts_total{platform="mock"} 1"#,
            "uniproxy_requests_in_flight 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // A series that never happened is left out.
        assert!(!text.contains(r#"status="429""#), "{text}");
    }

    #[test]
    fn the_store_counters_appear_with_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = uniproxy_logstore::LogStore::open(
            &dir.path().join("log.db"),
            uniproxy_logstore::StoreOptions::default(),
        )
        .unwrap();
        let writer = uniproxy_logstore::Writer::spawn(
            store,
            Box::new(uniproxy_logstore::JsonLinesSpill::new(dir.path().join("spill.jsonl"))),
            uniproxy_logstore::WriterOptions::default(),
        )
        .unwrap();
        let m = Metrics::new("mock", Arc::new(AtomicUsize::new(0)), Some(writer.handle()));
        let text = m.render();
        for line in [
            "uniproxy_log_queue_depth 0",
            "uniproxy_log_entries_written_total 0",
            "uniproxy_log_entries_spilled_total 0",
            "uniproxy_log_store_degraded 0",
            "uniproxy_log_store_stalled 0",
            "uniproxy_requests_in_flight 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        writer.shutdown().unwrap();
    }

    #[test]
    fn status_slots_round_trip() {
        assert_eq!(status_label(status_slot(200)), "200");
        assert_eq!(status_label(status_slot(499)), "499");
        assert_eq!(status_label(status_slot(418)), "4xx");
        assert_eq!(status_label(status_slot(599)), "5xx");
        assert_eq!(status_label(status_slot(999)), "other");
        assert_eq!(status_label(status_slot(0)), "other");
    }
}
