//! The request log's own thread: every finished request's lines for the JSON log and stderr,
//! and its entry for the log store, made off the runtime's threads.
//!
//! A runtime thread hands over the [`RequestRecord`] as it is (the bodies are reference-counted
//! `Bytes`, nothing is copied) with one channel send (when the queue is full, the request waits
//! for room in its task: see [`Recorder`](crate::record::Recorder)). This thread formats the lines
//! itself instead of going through slog: the bodies are already JSON, so they are embedded as
//! JSON values rather than escaped into strings (the escaping was a tenth of the CPU per
//! request), and a batch of lines goes to each output in one write. It gathers records by
//! napping between looks at the channel, so a busy proxy wakes it once per nap rather than once
//! per request.

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use slog::{Logger, error};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::Receiver;
use uniproxy_logstore::NewEntry;
use uniproxy_logstore::{WriterHandle, YieldEvery};

use crate::logging::{Buffered, RotatingFile};
use crate::record::{RequestRecord, text};

/// How long the thread sleeps between looks at the channel while records keep coming.
const NAP: Duration = Duration::from_millis(2);
/// Pending bytes of lines that are written at once, not at the end of the round.
const WRITE_AT: usize = 256 << 10;
/// What the JSON lines' buffer holds without growing: [`WRITE_AT`] and a record's lines.
const JSON_CAPACITY: usize = WRITE_AT + (16 << 10);
/// What the stderr lines' buffer holds without growing.
const TEXT_CAPACITY: usize = 16 << 10;
/// A round of fewer records than this is a proxy below saturation (under 8,000 requests a
/// second at the 2 ms nap): the next round then gives its core away every [`YIELD_EVERY`] of
/// work, so a round cannot keep a runtime thread with a request to answer waiting for the
/// core. At saturation it keeps the core, as a switch per 50 µs would cost throughput.
const QUIET_ROUND: usize = 16;
/// The longest stretch of work between two yields in a quiet round (as the log store's writer).
const YIELD_EVERY: Duration = Duration::from_micros(50);

/// What the runtime sends to the thread.
pub(crate) enum Msg {
    /// A finished request, and the share of the queue's bytes it holds while it waits (see
    /// `record::QUEUE_BYTES`): `None` until it has it.
    Record(Box<RequestRecord>, Option<OwnedSemaphorePermit>),
    /// Write what is pending and stop.
    Stop,
}

/// What a record weighs beside its bodies and headers: the record itself and its short
/// strings (ids, models, the client's address, an error message).
pub(crate) const RECORD_BYTES: usize = 512;

impl Msg {
    /// What a record weighs while it waits: its bodies, its request headers (a client may
    /// send hundreds of kilobytes of them with no body at all) and [`RECORD_BYTES`], so that
    /// records without a body weigh something too.
    pub(crate) fn weight(&self) -> usize {
        match self {
            Msg::Record(r, _) => {
                r.client_request.len()
                    + r.upstream_request.len()
                    + r.response.len()
                    + r.upstream_changes.as_ref().map_or(0, bytes::Bytes::len)
                    + r.raw_chunks.as_ref().map_or(0, bytes::Bytes::len)
                    + r.request_headers.len()
                    + r.user_agent.as_ref().map_or(0, String::len)
                    + RECORD_BYTES
            }
            Msg::Stop => 0,
        }
    }
}

/// Where the thread writes.
pub(crate) struct Sink {
    pub log: Logger,
    pub json: Option<Buffered<RotatingFile>>,
    pub stderr: Option<Buffered<io::Stderr>>,
    pub log_bodies: bool,
    pub store: Option<WriterHandle>,
    /// Whether the last write to the JSON log failed: a full disk is reported once when it
    /// starts failing and once when it works again, not every few milliseconds.
    pub json_failing: bool,
    /// The lines' time, its second formatted once.
    pub clock: Clock,
}

/// The thread's loop: gather, format, write, until [`Msg::Stop`] or every sender is gone.
pub(crate) fn run(rx: &mut Receiver<Msg>, mut sink: Sink) {
    let mut json = Vec::with_capacity(JSON_CAPACITY);
    let mut text = Vec::with_capacity(TEXT_CAPACITY);
    // Block for a first record; then, while records keep coming, sleep between looks at the
    // channel: a sender only wakes a thread that is blocked in `recv`, so a busy proxy costs
    // one wake-up per nap rather than one per request.
    let mut quiet = true;
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        loop {
            let mut took = 0;
            let mut pace = quiet.then(|| YieldEvery::new(YIELD_EVERY));
            while let Some(msg) = next.take().or_else(|| rx.try_recv().ok()) {
                took += 1;
                match msg {
                    // Its share of the queue is given back once its lines are made and
                    // its entry is with the store, whose queue has its own bound.
                    Msg::Record(r, _share) => sink.add(&mut json, &mut text, *r),
                    Msg::Stop => {
                        sink.write(&mut json, &mut text);
                        sink.flush();
                        return;
                    }
                }
                if let Some(pace) = &mut pace {
                    pace.tick();
                }
            }
            quiet = took < QUIET_ROUND;
            sink.write(&mut json, &mut text);
            if took == 0 {
                break;
            }
            std::thread::sleep(NAP);
        }
    }
    sink.write(&mut json, &mut text);
    sink.flush();
}

impl Sink {
    /// Formats the record's lines and hands its entry to the store. The lines are written
    /// once [`WRITE_AT`] bytes are pending, so the buffers stay small however long records keep
    /// coming without a pause.
    fn add(&mut self, json: &mut Vec<u8>, text: &mut Vec<u8>, r: RequestRecord) {
        let now = self.clock.now();
        if self.json.is_some() {
            summary_json(json, &r, &now);
            if self.log_bodies {
                content_json(json, &r, &now);
            }
        }
        if self.stderr.is_some() {
            summary_text(text, &r, &now);
        }
        if let Some(store) = &self.store {
            // Blocking here is fine (this is not a runtime thread): when the store's queue is
            // full, the records wait in this thread's channel, and past that the proxy slows.
            if let Err(e) = store.send(r.into_entry()) {
                not_stored(&self.log, "the store is closed", &e.0);
            }
        }
        if json.len() >= WRITE_AT || text.len() >= WRITE_AT {
            self.write(json, text);
        }
    }

    /// Hands the formatted lines to the outputs (whole lines, one write per output).
    fn write(&mut self, json: &mut Vec<u8>, text: &mut Vec<u8>) {
        if let Some(out) = self.json.as_mut()
            && !json.is_empty()
        {
            match out.write_all(json) {
                // Taken by the buffer is not written yet: written again once it reaches the file.
                Ok(()) if self.json_failing => {
                    if out.flush_now().is_ok() {
                        self.json_failing = false;
                        slog::info!(self.log, "the JSON log is written again");
                    }
                }
                Ok(()) => {}
                Err(e) if !self.json_failing => {
                    self.json_failing = true;
                    error!(self.log, "cannot write the JSON log; request lines are lost until it works again (the log store still has every entry)"; "error" => %e);
                }
                Err(_) => {}
            }
        }
        if let Some(out) = self.stderr.as_mut()
            && !text.is_empty()
        {
            // Nowhere to report a failing stderr.
            let _ = out.write_all(text);
        }
        json.clear();
        text.clear();
        // A record of megabytes (a 10 MiB request, its content line holding it more than
        // once) grew the buffer to its size: it goes back to its usual size rather than hold
        // that for the process's life. Twice the usual is kept, which a busy round of
        // ordinary records reaches.
        if json.capacity() > 2 * JSON_CAPACITY {
            json.shrink_to(JSON_CAPACITY);
        }
        if text.capacity() > 2 * TEXT_CAPACITY {
            text.shrink_to(TEXT_CAPACITY);
        }
    }

    fn flush(&self) {
        if let Some(out) = &self.json
            && let Err(e) = out.flush_now()
        {
            error!(self.log, "cannot write the JSON log"; "error" => %e);
        }
        if let Some(out) = &self.stderr {
            let _ = out.flush_now();
        }
    }
}

/// A wall-clock time, read once for both outputs and written digit by digit (`format!` with
/// padded fields was a quarter of this thread's instructions).
struct Timestamp<'a> {
    second: &'a Second,
    nanos: u32,
}

/// The parts of a line's time that change once a second, formatted.
struct Second {
    /// Seconds since the Unix epoch.
    unix: i64,
    /// `2026-11-26T13:36:51.`
    rfc3339: Vec<u8>,
    /// `Nov 26 13:36:51.`
    short: Vec<u8>,
}

impl Second {
    fn new(unix: i64) -> Self {
        const MONTHS: [&str; 12] =
            ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        let t = time::OffsetDateTime::from_unix_timestamp(unix)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let mut clock = Vec::with_capacity(9);
        digits(&mut clock, i64::from(t.hour()), 2);
        clock.push(b':');
        digits(&mut clock, i64::from(t.minute()), 2);
        clock.push(b':');
        digits(&mut clock, i64::from(t.second()), 2);
        clock.push(b'.');
        let mut rfc3339 = Vec::with_capacity(20);
        digits(&mut rfc3339, i64::from(t.year()), 4);
        rfc3339.push(b'-');
        digits(&mut rfc3339, i64::from(u8::from(t.month())), 2);
        rfc3339.push(b'-');
        digits(&mut rfc3339, i64::from(t.day()), 2);
        rfc3339.push(b'T');
        rfc3339.extend_from_slice(&clock);
        let mut short = Vec::with_capacity(16);
        short.extend_from_slice(MONTHS[usize::from(u8::from(t.month())) - 1].as_bytes());
        short.push(b' ');
        digits(&mut short, i64::from(t.day()), 2);
        short.push(b' ');
        short.extend_from_slice(&clock);
        Second { unix, rfc3339, short }
    }
}

/// The thread's clock: the current second's parts are formatted once, not for every line
/// (they were a tenth of this thread's instructions).
#[derive(Default)]
pub(crate) struct Clock(Option<Second>);

impl Clock {
    /// Now (a system clock set before 1970 reads as 1970).
    fn now(&mut self) -> Timestamp<'_> {
        self.at(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default())
    }

    /// The time `since` the Unix epoch.
    fn at(&mut self, since: Duration) -> Timestamp<'_> {
        let unix = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
        let second = match self.0.take() {
            Some(second) if second.unix == unix => second,
            _ => Second::new(unix),
        };
        Timestamp { second: self.0.insert(second), nanos: since.subsec_nanos() }
    }
}

impl Timestamp<'_> {
    /// `2026-11-26T13:36:51.475173461Z`, as slog-json writes it.
    fn rfc3339(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.second.rfc3339);
        digits(out, i64::from(self.nanos), 9);
        out.push(b'Z');
    }

    /// `Nov 26 13:36:51.475`, as slog-term writes it.
    fn short(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.second.short);
        digits(out, i64::from(self.nanos / 1_000_000), 3);
    }
}

/// Appends `n` in decimal, zero-padded to at least `width` characters (the sign counts, as in
/// `format!("{n:0width$}")`).
fn digits(out: &mut Vec<u8>, n: i64, mut width: usize) {
    if n < 0 {
        out.push(b'-');
        width = width.saturating_sub(1);
    }
    let mut n = n.unsigned_abs();
    let mut buf = [b'0'; 20];
    let mut start = buf.len();
    loop {
        start -= 1;
        // `n % 10` is a single digit.
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[start.min(buf.len().saturating_sub(width))..]);
}

/// Appends a duration in milliseconds with three decimals, as `{:.3}` of them would.
pub(crate) fn millis3(out: &mut Vec<u8>, d: Duration) {
    let micros = (d.as_nanos() + 500) / 1000;
    digits(out, i64::try_from(micros / 1000).unwrap_or(i64::MAX), 1);
    out.push(b'.');
    // Below 1000.
    digits(out, (micros % 1000) as i64, 3);
}

/// Puts an entry that no store will hold into the operational log, whole, so it is not lost.
pub(crate) fn not_stored(log: &Logger, why: &str, entry: &NewEntry) {
    error!(log, "log entry not stored"; "why" => why, "entry" => serde_json::to_string(entry).unwrap_or_default());
}

/// `WARN` for the failures an operator should look at (upstream faults, clients that left).
fn level(r: &RequestRecord) -> &'static str {
    if r.status >= 500 || r.status == 499 { "WARN" } else { "INFO" }
}

/// Appends `value` as a JSON string.
fn string(out: &mut Vec<u8>, value: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Appends `,"key":`.
fn key(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

fn kv_str(out: &mut Vec<u8>, k: &str, value: Option<&str>) {
    key(out, k);
    match value {
        Some(v) => string(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

fn kv_num(out: &mut Vec<u8>, k: &str, value: impl serde::Serialize) {
    key(out, k);
    let _ = serde_json::to_writer(&mut *out, &value);
}

/// Appends a body: as the JSON it is when `is_json` (line breaks, which in JSON can only be
/// whitespace between tokens, become spaces so the entry stays on one line), else as a string.
fn kv_body(out: &mut Vec<u8>, k: &str, body: &Bytes, is_json: bool) {
    key(out, k);
    if is_json && !body.is_empty() {
        debug_assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok(),
            "{k} is not JSON: {}",
            String::from_utf8_lossy(body)
        );
        // Copied whole, then every line break overwritten in one pass that runs on vectors:
        // answers are pretty-printed (OpenAI's are), and a search per line break cost more.
        let start = out.len();
        out.extend_from_slice(body);
        for b in &mut out[start..] {
            // A store for every byte, not only for line breaks: what lets it run on vectors.
            *b = if matches!(*b, b'\n' | b'\r') { b' ' } else { *b };
        }
    } else {
        string(out, &text(body));
    }
}

/// Opens a line with the keys slog-json writes first.
fn open_line(out: &mut Vec<u8>, msg: &str, level: &str, ts: &Timestamp) {
    out.extend_from_slice(b"{\"msg\":\"");
    out.extend_from_slice(msg.as_bytes());
    out.extend_from_slice(b"\",\"level\":\"");
    out.extend_from_slice(level.as_bytes());
    out.extend_from_slice(b"\",\"ts\":\"");
    ts.rfc3339(out);
    out.push(b'"');
}

/// The summary line: one per request, without bodies.
fn summary_json(out: &mut Vec<u8>, r: &RequestRecord, ts: &Timestamp) {
    let usage = r.logged_usage();
    open_line(out, "request", level(r), ts);
    kv_str(out, "id", Some(&r.request_id));
    kv_num(out, "status", r.status);
    kv_num(out, "stream", r.stream);
    kv_str(out, "client_model", Some(&r.client_model));
    kv_str(out, "model", Some(&r.actual_model));
    kv_str(out, "platform", Some(r.platform));
    kv_num(out, "latency_ms", r.latency_ms());
    kv_num(out, "ttft_ms", r.ttft_ms());
    // Microseconds, as on the stderr line and in `x-uniproxy-overhead-ms`: the float of
    // `as_secs_f64() * 1000.0` printed `0.006194000000000001` for 6,194 ns.
    key(out, "overhead_ms");
    millis3(out, r.overhead);
    // As the store keeps them: `null` where the answer did not say (not 0 tokens).
    kv_num(out, "prompt_tokens", usage.prompt_tokens);
    kv_num(out, "completion_tokens", usage.completion_tokens);
    kv_num(out, "total_tokens", usage.total_tokens);
    kv_num(out, "cached_tokens", usage.cached_tokens);
    kv_num(out, "reasoning_tokens", usage.reasoning_tokens);
    kv_num(out, "attempts", r.attempts);
    kv_str(out, "error", r.error_message.as_deref());
    out.extend_from_slice(b"}\n");
}

/// The content line (`LOG_BODIES`): the bodies, embedded as JSON.
fn content_json(out: &mut Vec<u8>, r: &RequestRecord, ts: &Timestamp) {
    open_line(out, "request content", "INFO", ts);
    kv_str(out, "id", Some(&r.request_id));
    kv_body(out, "client_request", &r.client_request, r.client_request_json);
    // The request again, but for the few members the proxy set, when that is all it changed:
    // a long history is written once per line.
    match &r.upstream_changes {
        Some(changes) => kv_body(out, "upstream_changes", changes, true),
        None => kv_body(out, "upstream_request", &r.upstream_request, true),
    }
    kv_body(out, "response", &r.response, true);
    key(out, "headers");
    if r.request_headers.is_empty() {
        out.extend_from_slice(b"{}");
    } else {
        // Built by `record::redacted_headers` with serde_json: one line of JSON.
        out.extend_from_slice(r.request_headers.as_bytes());
    }
    kv_str(out, "client_addr", r.client_addr.as_deref());
    kv_str(out, "user_agent", r.user_agent.as_deref());
    key(out, "dropped");
    let _ = serde_json::to_writer(&mut *out, &r.dropped_fields);
    out.extend_from_slice(b"}\n");
}

/// The stderr line, in slog-term's compact shape.
fn summary_text(out: &mut Vec<u8>, r: &RequestRecord, ts: &Timestamp) {
    /// Appends `, name: `.
    fn name(out: &mut Vec<u8>, name: &str) {
        out.extend_from_slice(b", ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
    }
    let usage = r.logged_usage();
    ts.short(out);
    out.push(b' ');
    out.extend_from_slice(level(r).as_bytes());
    out.extend_from_slice(b" request, id: ");
    out.extend_from_slice(r.request_id.as_bytes());
    name(out, "status");
    digits(out, i64::from(r.status), 1);
    name(out, "stream");
    out.extend_from_slice(if r.stream { b"true" } else { b"false" });
    for (key, value) in
        [("client_model", &*r.client_model), ("model", &*r.actual_model), ("platform", r.platform)]
    {
        name(out, key);
        one_line(out, value);
    }
    name(out, "latency_ms");
    digits(out, r.latency_ms(), 1);
    name(out, "ttft_ms");
    match r.ttft_ms() {
        Some(t) => digits(out, t, 1),
        None => out.extend_from_slice(b"None"),
    }
    name(out, "overhead_ms");
    millis3(out, r.overhead);
    // `None` where the answer did not say, as for `ttft_ms` (the JSON log writes `null`): a
    // stream from a server that counts nothing used tokens all the same.
    for (key, value) in
        [("prompt_tokens", usage.prompt_tokens), ("completion_tokens", usage.completion_tokens)]
    {
        name(out, key);
        match value {
            Some(n) => digits(out, i64::try_from(n).unwrap_or(i64::MAX), 1),
            None => out.extend_from_slice(b"None"),
        }
    }
    name(out, "attempts");
    digits(out, i64::from(r.attempts), 1);
    if let Some(e) = &r.error_message {
        name(out, "error");
        one_line(out, e);
    }
    out.push(b'\n');
}

/// Appends `text` with its control characters escaped (`\n`, `\x1b`): a client's model name
/// or an upstream's error text cannot start a forged line or recolour the operator's terminal.
fn one_line(out: &mut Vec<u8>, text: &str) {
    if !text.chars().any(char::is_control) {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    for c in text.chars() {
        match c {
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            // Control characters are all below U+0100 (C0, DEL, C1).
            c if c.is_control() => {
                out.extend_from_slice(format!("\\x{:02x}", u32::from(c)).as_bytes())
            }
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> RequestRecord {
        RequestRecord {
            request_id: "chatcmpl-1".into(),
            received_ms: 1_000,
            first_byte_ms: Some(1_004),
            finished_ms: 1_010,
            client_model: "gpt-\"4\"".into(),
            actual_model: "m".into(),
            platform: "openai",
            status: 200,
            client_request: Bytes::from_static(b"{\"model\":\"a\",\n  \"messages\":[]}"),
            client_request_json: true,
            upstream_request: Bytes::from_static(b"{\"model\":\"m\",\"messages\":[]}"),
            response: Bytes::from_static(b"{\r\n\"id\":\"x\\n\"}"),
            request_headers: r#"{"authorization":"[redacted]"}"#.into(),
            dropped_fields: vec!["logprobs".into()],
            attempts: 1,
            ..RequestRecord::default()
        }
    }

    fn parse(line: &[u8]) -> serde_json::Value {
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        serde_json::from_slice(line).unwrap()
    }

    #[test]
    fn content_lines_embed_json_bodies_on_one_line() {
        let mut out = Vec::new();
        content_json(&mut out, &record(), &Clock::default().now());
        let v = parse(&out);
        assert_eq!(v["msg"], "request content");
        assert_eq!(v["client_request"], serde_json::json!({"model": "a", "messages": []}));
        assert_eq!(v["upstream_request"]["model"], "m");
        // The escaped line break inside a string stays a line break in the value.
        assert_eq!(v["response"]["id"], "x\n");
        assert_eq!(v["headers"]["authorization"], "[redacted]");
        assert_eq!(v["dropped"], serde_json::json!(["logprobs"]));
    }

    #[test]
    fn a_request_the_proxy_only_set_members_of_is_written_once() {
        let mut r = record();
        r.upstream_changes = Some(Bytes::from_static(b"{\"model\":\"m\",\"stream\":null}"));
        let mut out = Vec::new();
        content_json(&mut out, &r, &Clock::default().now());
        let v = parse(&out);
        assert_eq!(v["upstream_changes"], serde_json::json!({"model": "m", "stream": null}));
        assert_eq!(v.get("upstream_request"), None, "{v}");
        assert_eq!(v["client_request"], serde_json::json!({"model": "a", "messages": []}));
    }

    #[test]
    fn bodies_that_are_not_json_are_strings() {
        let mut r = record();
        r.client_request = Bytes::from_static(b"{not json\n");
        r.client_request_json = false;
        r.upstream_request = Bytes::new();
        let mut out = Vec::new();
        content_json(&mut out, &r, &Clock::default().now());
        let v = parse(&out);
        assert_eq!(v["client_request"], "{not json\n");
        assert_eq!(v["upstream_request"], "");

        r.client_request = Bytes::from_static(b"\xff\xfe");
        out.clear();
        content_json(&mut out, &r, &Clock::default().now());
        assert_eq!(parse(&out)["client_request"], "\u{fffd}\u{fffd}");
    }

    /// A sink writing the JSON log (bodies included) to `file` and nothing else.
    fn json_sink(file: RotatingFile, log: Logger) -> Sink {
        Sink {
            log,
            json: Some(Buffered::new(file, "test")),
            stderr: None,
            log_bodies: true,
            store: None,
            json_failing: false,
            clock: Clock::default(),
        }
    }

    #[test]
    fn a_busy_round_writes_as_it_goes_and_loses_no_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.log");
        let file = RotatingFile::open(&path, 0, 0).unwrap();
        let mut sink = json_sink(file, Logger::root(slog::Discard, slog::o!()));
        let big = format!("{{\"x\":\"{}\"}}", "y".repeat(20 << 10));
        let (mut json, mut text) = (Vec::new(), Vec::new());
        for i in 0..100 {
            let mut r = record();
            r.request_id = format!("chatcmpl-{i}");
            r.response = Bytes::from(big.clone());
            sink.add(&mut json, &mut text, r);
            // Never more than one record's lines past the threshold.
            assert!(json.len() < WRITE_AT + big.len() + 4096, "{} bytes pending", json.len());
        }
        sink.write(&mut json, &mut text);
        sink.flush();
        let written = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> =
            written.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 200, "a summary and a content line per record");
        assert_eq!(lines[199]["id"], "chatcmpl-99");
        assert_eq!(lines[199]["response"]["x"].as_str().map(str::len), Some(20 << 10));
    }

    #[test]
    fn a_record_of_megabytes_does_not_keep_its_buffer_grown() {
        let dir = tempfile::tempdir().unwrap();
        let file = RotatingFile::open(&dir.path().join("proxy.log"), 0, 0).unwrap();
        let mut sink = json_sink(file, Logger::root(slog::Discard, slog::o!()));
        let (mut json, mut text) = (Vec::with_capacity(JSON_CAPACITY), Vec::new());
        let mut r = record();
        r.client_request = Bytes::from(format!("{{\"x\":\"{}\"}}", "y".repeat(4 << 20)));
        sink.add(&mut json, &mut text, r);
        assert_eq!(json.len(), 0, "written at once");
        assert!(json.capacity() <= 2 * JSON_CAPACITY, "{} bytes kept", json.capacity());
        // Ordinary records keep their buffer.
        let mut ordinary = Vec::with_capacity(2 * JSON_CAPACITY);
        sink.write(&mut ordinary, &mut text);
        assert_eq!(ordinary.capacity(), 2 * JSON_CAPACITY);
    }

    /// Counts the error records logged.
    struct Errors(std::sync::Arc<std::sync::atomic::AtomicUsize>);
    impl slog::Drain for Errors {
        type Ok = ();
        type Err = slog::Never;
        fn log(&self, r: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
            if r.level() == slog::Level::Error {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_failing_json_log_is_reported_once_not_per_write() {
        let errors = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Every write to /dev/full fails with "no space left on device".
        let file = RotatingFile::open(std::path::Path::new("/dev/full"), 0, 0).unwrap();
        let mut sink = json_sink(file, Logger::root(Errors(errors.clone()), slog::o!()));
        for _ in 0..3 {
            // Larger than the output's buffer, so the write reaches the file.
            let (mut json, mut text) = (vec![b'x'; 2 * WRITE_AT], Vec::new());
            sink.write(&mut json, &mut text);
            assert!(json.is_empty(), "the lines are dropped, not kept to grow");
        }
        assert!(sink.json_failing);
        assert_eq!(errors.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn summary_lines_carry_the_numbers_and_escape_strings() {
        let mut r = record();
        r.status = 502;
        r.error_message = Some("upstream \"down\"".into());
        r.overhead = Duration::from_nanos(6_194);
        let mut out = Vec::new();
        summary_json(&mut out, &r, &Clock::default().now());
        let line = String::from_utf8(out.clone()).unwrap();
        assert!(line.contains(",\"overhead_ms\":0.006,"), "{line}");
        let v = parse(&out);
        assert_eq!(v["msg"], "request");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["client_model"], "gpt-\"4\"");
        assert_eq!((v["status"].as_u64(), v["latency_ms"].as_i64()), (Some(502), Some(10)));
        assert_eq!(v["ttft_ms"], 4);
        assert_eq!(v["error"], "upstream \"down\"");
        // No usage in the answer: the counts are unknown, not 0.
        for k in ["prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens"] {
            assert!(v[k].is_null(), "{k}: {line}");
        }
        r.usage = Some(uniproxy_wire::Usage {
            prompt_tokens: 12,
            completion_tokens: 5,
            total_tokens: 0,
            prompt_tokens_details: Some(uniproxy_wire::PromptTokensDetails {
                cached_tokens: Some(8),
                ..Default::default()
            }),
            completion_tokens_details: None,
            extra: uniproxy_wire::Map::new(),
        });
        let mut out = Vec::new();
        summary_json(&mut out, &r, &Clock::default().now());
        let v = parse(&out);
        let counts = ["prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens"]
            .map(|k| v[k].as_u64());
        assert_eq!(counts, [Some(12), Some(5), Some(17), Some(8)], "{v}");
        assert!(v["reasoning_tokens"].is_null());
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));

        let mut text = Vec::new();
        summary_text(&mut text, &r, &Clock::default().now());
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains(" WARN request, id: chatcmpl-1, status: 502,"), "{text}");
        assert!(text.ends_with("error: upstream \"down\"\n"), "{text}");
    }

    #[test]
    fn a_summary_line_stays_one_line_whatever_the_client_or_upstream_wrote() {
        let mut r = record();
        r.status = 502;
        r.client_model = "x\nNov 28 05:00:00.000 INFO forged line\u{1b}[31m".into();
        r.error_message = Some("upstream answered 500: line one\r\nline two\u{9b}".into());
        let mut text = Vec::new();
        summary_text(&mut text, &r, &Clock::default().now());
        let text = String::from_utf8(text).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        assert!(text.ends_with('\n'), "{text}");
        assert!(!text.contains('\u{1b}') && !text.contains('\u{9b}'), "{text}");
        assert!(text.contains("client_model: x\\nNov 28 05:00:00.000 INFO forged line\\x1b[31m,"));
        assert!(text.contains("error: upstream answered 500: line one\\r\\nline two\\x9b\n"));
    }

    #[test]
    fn times_and_numbers_are_written_as_the_formatter_would() {
        for (nanos, rfc3339, short_form) in [
            (
                1_767_582_245_000_000_007_i64,
                "2026-01-05T03:04:05.000000007Z",
                "Jan 05 03:04:05.000",
            ),
            (1_798_761_599_999_999_999, "2026-12-31T23:59:59.999999999Z", "Dec 31 23:59:59.999"),
        ] {
            let second = Second::new(nanos / 1_000_000_000);
            let t =
                Timestamp { second: &second, nanos: u32::try_from(nanos % 1_000_000_000).unwrap() };
            let (mut long, mut short) = (Vec::new(), Vec::new());
            t.rfc3339(&mut long);
            t.short(&mut short);
            assert_eq!(String::from_utf8(long).unwrap(), rfc3339);
            assert_eq!(String::from_utf8(short).unwrap(), short_form);
        }

        for n in [0, 7, 10, 999, 1_000, -3, -45, i64::MAX, i64::MIN] {
            for width in [1, 2, 3, 9] {
                let mut out = Vec::new();
                digits(&mut out, n, width);
                assert_eq!(String::from_utf8(out).unwrap(), format!("{n:0width$}"), "{n} {width}");
            }
        }
        for nanos in [0, 1, 499, 500, 848_123, 1_234_567, 999_999_999, 12_345_678_901] {
            let d = Duration::from_nanos(nanos);
            let mut out = Vec::new();
            millis3(&mut out, d);
            let expected = format!("{:.3}", d.as_secs_f64() * 1000.0);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{nanos} ns");
        }
    }

    #[test]
    fn the_clock_formats_a_new_second_when_it_comes() {
        let mut clock = Clock::default();
        let mut lines = Vec::new();
        for since in [
            Duration::new(1_767_582_245, 7),
            Duration::new(1_767_582_245, 999_999_999),
            Duration::new(1_767_582_246, 0),
            Duration::new(1_767_582_305, 500_000_000),
        ] {
            let (mut long, mut short) = (Vec::new(), Vec::new());
            let t = clock.at(since);
            t.rfc3339(&mut long);
            t.short(&mut short);
            lines.push((String::from_utf8(long).unwrap(), String::from_utf8(short).unwrap()));
        }
        let expected = [
            ("2026-01-05T03:04:05.000000007Z", "Jan 05 03:04:05.000"),
            ("2026-01-05T03:04:05.999999999Z", "Jan 05 03:04:05.999"),
            ("2026-01-05T03:04:06.000000000Z", "Jan 05 03:04:06.000"),
            ("2026-01-05T03:05:05.500000000Z", "Jan 05 03:05:05.500"),
        ];
        for ((long, short), (want_long, want_short)) in lines.iter().zip(expected) {
            assert_eq!((long.as_str(), short.as_str()), (want_long, want_short));
        }
    }

    #[test]
    fn the_stderr_line_keeps_slog_terms_shape() {
        let mut r = record();
        r.overhead = Duration::from_micros(1_848);
        r.usage = Some(uniproxy_wire::Usage {
            prompt_tokens: 12,
            completion_tokens: 5,
            ..uniproxy_wire::Usage::default()
        });
        let second = Second::new(1_767_582_245);
        let ts = Timestamp { second: &second, nanos: 123_456_789 };
        let mut text = Vec::new();
        summary_text(&mut text, &r, &ts);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "Jan 05 03:04:05.123 INFO request, id: chatcmpl-1, status: 200, stream: false, \
             client_model: gpt-\"4\", model: m, platform: openai, latency_ms: 10, ttft_ms: 4, \
             overhead_ms: 1.848, prompt_tokens: 12, completion_tokens: 5, attempts: 1\n"
        );
        r.usage = None;
        r.first_byte_ms = None;
        r.finished_ms = r.received_ms - 2;
        r.status = 499;
        r.error_message = Some("the client closed the connection".into());
        let mut text = Vec::new();
        summary_text(&mut text, &r, &ts);
        let text = String::from_utf8(text).unwrap();
        assert!(text.starts_with("Jan 05 03:04:05.123 WARN request"), "{text}");
        assert!(text.contains(", latency_ms: -2, ttft_ms: None, overhead_ms: 1.848,"), "{text}");
        assert!(text.contains(", prompt_tokens: None, completion_tokens: None, "), "{text}");
        assert!(text.ends_with(", error: the client closed the connection\n"), "{text}");
    }
}
