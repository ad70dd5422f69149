//! The record of one request, written once after its response ends (like pingora's
//! `logging` phase): counted in the metrics at once, then handed to the request log's thread
//! (`reqlog`), which writes a summary line to stderr and the JSON log, the content to the JSON
//! log, and an entry to the log store.

use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use slog::{Logger, error, info};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::error::{SendError, TrySendError};
use tokio::sync::mpsc::{self, OwnedPermit};
use uniproxy_logstore::{Headers, HeadersBuilder, NewEntry, Writer, WriterHandle};
use uniproxy_wire::Usage;

use crate::logging::Logs;
use crate::metrics::{Metrics, Observation};
use crate::reqlog::Msg;

/// Everything known about one request when it ends.
#[derive(Debug, Default)]
pub struct RequestRecord {
    /// The completion id given to the client.
    pub request_id: String,
    /// Unix milliseconds when the request arrived.
    pub received_ms: i64,
    /// Unix milliseconds when the first byte of the answer went to the client.
    pub first_byte_ms: Option<i64>,
    /// Unix milliseconds when the response ended.
    pub finished_ms: i64,
    /// The model the client asked for.
    pub client_model: String,
    /// The model the request was sent to.
    pub actual_model: String,
    /// The platform.
    pub platform: &'static str,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The status the client got (499: the client went away first; 503 with `server_shutdown`:
    /// the proxy cut the request off at the end of its shutdown's grace period).
    pub status: u16,
    /// The OpenAI error type, for failures.
    pub error_type: Option<String>,
    /// The error message and its causes, for failures.
    pub error_message: Option<String>,
    /// Token usage.
    pub usage: Option<Usage>,
    /// The body as the client sent it.
    pub client_request: Bytes,
    /// Whether `client_request` parsed as JSON (the other bodies always are, when not empty:
    /// the proxy wrote them or checked them).
    pub client_request_json: bool,
    /// The body as it went upstream.
    pub upstream_request: Bytes,
    /// The runs of `upstream_request` that are `client_request`'s bytes (the log store keeps
    /// them once).
    pub upstream_copies: Vec<uniproxy_translate::CopiedSpan>,
    /// The members the proxy set on the client's request, when that is all it changed (an
    /// OpenAI-compatible upstream): the JSON log writes them instead of the request again.
    pub upstream_changes: Option<Bytes>,
    /// The answer as the client received it (for a stream, the assembled message).
    pub response: Bytes,
    /// The raw stream frames, when LOG_RAW_CHUNKS is on.
    pub raw_chunks: Option<Bytes>,
    /// The client's address.
    pub client_addr: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// The request headers with secrets redacted, as a JSON object.
    pub request_headers: Headers,
    /// Fields the translator left out.
    pub dropped_fields: Vec<String>,
    /// A short hash of the client's proxy key, to tell traffic apart by key.
    pub key_hash: Option<String>,
    /// How many times the upstream was tried.
    pub attempts: u32,
    /// Time spent in the proxy itself, the waits on the upstream and the client's body
    /// excluded.
    pub overhead: Duration,
    /// Time spent waiting for the client's body.
    pub client_wait: Duration,
}

/// Marks a record whose request was dropped before `unfinished` was (its future or its
/// stream's body dropped): the client hung up (499), or, once the shutdown's grace period is
/// over (`cut_off`), the proxy cut it off (503). An error already recorded is kept.
pub(crate) fn ended_early(r: &mut RequestRecord, cut_off: bool, unfinished: &str) {
    let (status, kind, why) = if cut_off {
        (503, "server_shutdown", "the proxy shut down (its grace period was over) before")
    } else {
        (499, "client_closed", "the client closed the connection before")
    };
    r.status = status;
    r.error_type.get_or_insert_with(|| kind.to_owned());
    r.error_message.get_or_insert_with(|| format!("{why} {unfinished}"));
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A body as text: borrowed when it is UTF-8 (always, for a body that parsed as JSON; the
/// check is the fast validated one), replaced characters otherwise.
pub(crate) fn text(b: &Bytes) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

/// The headers as a JSON object, with every secret header's value replaced by `[redacted]`
/// (the log store's [`HeadersBuilder`] writes it, and the store trusts what it wrote); a
/// header sent more than once has an array of its values.
pub fn redacted_headers(headers: &hyper::HeaderMap) -> Headers {
    let mut out = HeadersBuilder::with_capacity(48 * headers.len() + 2);
    if headers.keys_len() == headers.len() {
        // No name sent twice (almost every request): the values as they come, no lookups.
        for (name, v) in headers {
            out.header(name.as_str(), v.as_bytes());
        }
    } else {
        for name in headers.keys() {
            let mut values = headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (Some(v), None) => out.header(name.as_str(), v.as_bytes()),
                (first, second) => out.header_values(
                    name.as_str(),
                    first.into_iter().chain(second).chain(values).map(|v| v.as_bytes()),
                ),
            }
        }
    }
    out.finish()
}

/// A short, stable hash of a client key: enough to tell keys apart in the log, useless for
/// recovering the key.
pub fn key_hash(key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let mut hash = String::with_capacity(12);
    for &b in digest.iter().take(6) {
        crate::state::push_hex(&mut hash, u64::from(b), 2);
    }
    hash
}

impl RequestRecord {
    /// Milliseconds from arrival to the end of the response.
    pub(crate) fn latency_ms(&self) -> i64 {
        self.finished_ms - self.received_ms
    }

    /// Milliseconds from arrival to the first byte of the answer.
    pub(crate) fn ttft_ms(&self) -> Option<i64> {
        self.first_byte_ms.map(|t| t - self.received_ms)
    }

    /// Prompt and completion tokens (0 without usage).
    pub(crate) fn tokens(&self) -> (u64, u64) {
        self.usage.as_ref().map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens))
    }

    /// The token counts as both logs keep them: all unknown (`None`) when the answer said
    /// none (an error, a server that counts nothing), the cached and reasoning tokens when the
    /// upstream told them.
    pub(crate) fn logged_usage(&self) -> uniproxy_logstore::Usage {
        self.usage.as_ref().map_or_else(uniproxy_logstore::Usage::default, |u| {
            // A server that left the total out (or wrote `null`) still used its tokens.
            let sum = u.prompt_tokens.saturating_add(u.completion_tokens);
            uniproxy_logstore::Usage {
                prompt_tokens: Some(u.prompt_tokens),
                completion_tokens: Some(u.completion_tokens),
                total_tokens: Some(if u.total_tokens == 0 { sum } else { u.total_tokens }),
                cached_tokens: u.cached_tokens(),
                reasoning_tokens: u.reasoning_tokens(),
            }
        })
    }

    /// The log store's entry for this record (its strings move; the bodies become text).
    pub(crate) fn into_entry(self) -> NewEntry {
        // The record holds the last handle on its bodies by now, so most become the entry's
        // strings without a copy (`Vec::from` takes a unique buffer as it is).
        let text = |b: Bytes| match String::from_utf8(Vec::from(b)) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        let usage = self.logged_usage();
        NewEntry {
            request_id: self.request_id,
            received_ms: self.received_ms,
            first_byte_ms: self.first_byte_ms,
            finished_ms: self.finished_ms,
            client_model: self.client_model,
            actual_model: self.actual_model,
            platform: self.platform.to_owned(),
            stream: self.stream,
            status: self.status,
            error_type: self.error_type,
            error_message: self.error_message,
            usage,
            client_request: text(self.client_request),
            upstream_request: text(self.upstream_request),
            upstream_copies: self
                .upstream_copies
                .iter()
                .map(|s| uniproxy_logstore::CopiedSpan { at: s.at, from: s.from, len: s.len })
                .collect(),
            response: text(self.response),
            raw_chunks: self.raw_chunks.map(text),
            client_addr: self.client_addr,
            user_agent: self.user_agent,
            request_headers: self.request_headers,
            dropped_fields: self.dropped_fields,
            key_hash: self.key_hash,
            attempts: self.attempts,
        }
    }
}

/// How many bytes the records that cannot wait (their request was dropped: the client left)
/// may weigh (their bodies, headers and the record itself: [`Msg::weight`]) while they wait
/// for room in the request log's queue, handed to its porter thread; past that, the recorder
/// waits in place (see [`Queue::now`]). The log store's own queue is 64 MiB.
const OVERFLOW_BYTES: usize = 64 << 20;

/// How long a record waits for a slot in the request log's queue on a runtime thread, the last
/// resort (see [`Queue::now`]), before the porter takes it over its budget.
const IN_PLACE_WAIT: Duration = Duration::from_secs(1);

/// How many finished requests may wait for the request log's thread. It takes them every few
/// milliseconds (about 50 at 25,000 requests/s), and records carry their bodies: 256 of
/// 20 KB requests (three bodies each) is about 15 MB; the store's own queue is behind it.
const QUEUE: usize = 256;

/// What the records waiting for the request log's thread may weigh together ([`Msg::weight`]),
/// as well as being at most [`QUEUE`]: 256 records of megabyte bodies (an agent's long
/// context) held 256 MB and more. A record heavier than this waits for an empty queue. The
/// 20 KB benchmark's 256 records weigh about 15 MB, so its queue is bound by the count.
const QUEUE_BYTES: usize = 64 << 20;

/// Where records go: the metrics at once, then, through one channel send, the request log's
/// thread (see `reqlog.rs`), which writes the JSON log's and stderr's lines and hands the
/// entry to the log store's writer thread. When the queue is full (the disk is behind), a
/// request waits for room in its own task: the runtime thread serves its other connections
/// meanwhile, and the proxy slows to what the disk can take without dropping a record.
pub struct Recorder {
    log: Logger,
    queue: Queue,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    store: Option<WriterHandle>,
    /// The store itself, for pruning.
    db: Option<uniproxy_logstore::LogStore>,
    /// The writer, taken at shutdown to drain it.
    writer: Mutex<Option<Writer>>,
    /// Every record is counted here too.
    metrics: Arc<Metrics>,
}

impl Recorder {
    /// A recorder writing to `logs`' outputs, and to the store when a writer is given;
    /// `log_bodies` adds the content line to the JSON log. Every record is also counted in
    /// `metrics`.
    ///
    /// # Errors
    /// When the request log's thread cannot be started.
    pub fn new(
        logs: Logs,
        log_bodies: bool,
        db: Option<uniproxy_logstore::LogStore>,
        writer: Option<Writer>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let store = writer.as_ref().map(Writer::handle);
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let sink = crate::reqlog::Sink {
            log: logs.logger.clone(),
            json: logs.json,
            stderr: logs.stderr,
            log_bodies,
            store: store.clone(),
            json_failing: false,
            clock: crate::reqlog::Clock::default(),
        };
        let thread = std::thread::Builder::new()
            .name("request-log".into())
            .spawn(move || crate::reqlog::run(&mut rx, sink))?;
        Ok(Recorder {
            queue: Queue::new(tx, QUEUE_BYTES, OVERFLOW_BYTES, logs.logger.clone())?,
            log: logs.logger,
            thread: Mutex::new(Some(thread)),
            db,
            store,
            writer: Mutex::new(writer),
            metrics,
        })
    }

    /// The log store, for the admin endpoints' reads (blocking: call it from
    /// `spawn_blocking`); `None` without a store.
    pub fn db(&self) -> Option<&uniproxy_logstore::LogStore> {
        self.db.as_ref()
    }

    /// Whether the log store can keep no more records for now: its writer can write neither
    /// the database nor the spill file (a full disk) and its queue is full. A chat request is
    /// refused while this holds, before its upstream is asked (see [`ProxyError::LogStoreStuck`]).
    ///
    /// [`ProxyError::LogStoreStuck`]: crate::error::ProxyError::LogStoreStuck
    pub fn refusing(&self) -> bool {
        self.store.as_ref().is_some_and(WriterHandle::is_stuck)
    }

    /// The log store writer's counters; `None` without a store.
    pub fn store_stats(&self) -> Option<uniproxy_logstore::WriterStats> {
        self.store.as_ref().map(WriterHandle::stats)
    }

    /// Counts a record in the metrics without writing it: a request refused because its
    /// record could not be kept.
    pub fn count_only(&self, r: &RequestRecord) {
        self.observe(r);
    }

    /// The log store's state, for `/health`.
    pub fn health(&self) -> serde_json::Value {
        let Some(store) = &self.store else {
            return serde_json::json!({ "state": "unavailable" });
        };
        let s = store.stats();
        serde_json::json!({
            "state": if s.stalled { "stalled" } else if s.db_ok { "ok" } else { "degraded" },
            "written": s.written,
            "queued": s.queued,
            "spilled": s.spilled,
            "failed_batches": s.failed_batches,
            "last_error": s.last_error,
        })
    }

    /// Writes every queued record's lines, drains the store's queue (every entry is written or
    /// spilled) and stops both threads. Blocking: call it after the runtime has stopped.
    ///
    /// A store that can write nowhere (a full disk) would hold the request log's thread, and
    /// the stop behind it, for good: once it has been stuck for the writer's shutdown timeout
    /// (10 s by default), it is closed, and the records it could not take go to the log whole, as
    /// "log entry not stored" lines, the last resort.
    pub fn shutdown(&self) {
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(thread) = thread {
            std::thread::scope(|scope| {
                let (done, stopped) = std::sync::mpsc::channel::<()>();
                scope.spawn(move || self.close_store_once_stuck(&stopped));
                // Records the porter holds go first; then the stop, queued behind every record.
                self.queue.overflow.close(&self.log);
                if block_on(self.queue.tx.send(Msg::Stop)).is_ok() && thread.join().is_err() {
                    error!(self.log, "the request log's thread panicked");
                }
                drop(done);
            });
        }
        let writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        let Some(writer) = writer else { return };
        match writer.shutdown() {
            Ok(report) => {
                for entry in report.unwritten {
                    // The log file is the last resort.
                    crate::reqlog::not_stored(
                        &self.log,
                        "neither the database nor the spill took it",
                        &entry,
                    );
                }
                info!(self.log, "log store closed"; "written" => report.stats.written, "spilled" => report.stats.spilled);
            }
            Err(e) => error!(self.log, "log store did not close cleanly"; "error" => %e),
        }
    }

    /// [`shutdown`](Self::shutdown)'s watch, until `stopped` says the request log's thread
    /// has ended: closes the store's queue once the store has been stuck (its batch taken by
    /// neither the database nor the spill) for the writer's shutdown timeout.
    fn close_store_once_stuck(&self, stopped: &std::sync::mpsc::Receiver<()>) {
        let Some(store) = &self.store else { return };
        let writer = || self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(limit) = writer().as_ref().map(Writer::shutdown_timeout) else { return };
        let mut stuck_since = None;
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            stopped.recv_timeout(Duration::from_millis(20))
        {
            if !store.stats().stalled {
                stuck_since = None;
                continue;
            }
            let since = *stuck_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= limit {
                if let Some(writer) = writer().as_ref() {
                    error!(self.log, "shutting down with a log store that can write neither its \
                        database nor its spill file: the records it holds go to this log";
                        "queued" => store.stats().queued);
                    writer.close();
                }
                return;
            }
        }
    }

    /// Writes the record: counted now, logged and stored by the request log's thread. When
    /// the queue is full, waits for room here, in the request's task (first come, first
    /// served); the runtime thread meanwhile serves its other connections. Cancelled while it
    /// waits (the client left), it queues the record without waiting, as `record_now` does.
    pub async fn record(&self, r: RequestRecord) {
        if let Some(mut waiting) = self.record_polled(r) {
            std::future::poll_fn(|cx| waiting.poll(cx)).await;
        }
    }

    /// Writes the record, for a caller that cannot wait at all (a request dropped before its
    /// end: a stream's body, or a request's future whose client hung up). When the queue is
    /// full, the record waits for room off the runtime's threads, up to 64 MiB of such
    /// records; past that, right here, for a second at most (then the porter takes it over
    /// its budget): the proxy then slows to what the disk can take, rather than growing
    /// memory without bound or dropping the record.
    pub fn record_now(&self, r: RequestRecord) {
        self.observe(&r);
        self.queue.now(Msg::Record(Box::new(r), None));
    }

    /// [`record`](Self::record) for a caller that polls instead of awaiting (a stream's body
    /// at its end): counted, and queued now when there is room; otherwise given back as a
    /// [`Waiting`], to poll until it is queued.
    pub(crate) fn record_polled(&self, r: RequestRecord) -> Option<Waiting> {
        self.observe(&r);
        let queue = &self.queue;
        let mut msg = Msg::Record(Box::new(r), None);
        if !queue.room.try_take(&mut msg) {
            return Some(Waiting::new(msg, queue));
        }
        match queue.tx.try_send(msg) {
            Ok(()) => None,
            Err(TrySendError::Full(msg)) => Some(Waiting::new(msg, queue)),
            Err(TrySendError::Closed(msg)) => {
                lost(&self.log, msg);
                None
            }
        }
    }

    fn observe(&self, r: &RequestRecord) {
        let millis = |ms: i64| Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        let (prompt, completion) = r.tokens();
        self.metrics.observe(&Observation {
            status: r.status,
            stream: r.stream,
            upstream: (r.attempts > 0)
                .then(|| millis(r.latency_ms()).saturating_sub(r.overhead + r.client_wait)),
            overhead: r.overhead,
            // Successful streams only: a 200 stream that ended on an error event is not one
            // (`/api/stats` leaves it out too).
            ttft: r
                .ttft_ms()
                .filter(|_| r.stream && r.status == 200 && r.error_type.is_none())
                .map(millis),
            prompt_tokens: prompt,
            completion_tokens: completion,
            timed_out: r.error_type.as_deref() == Some("timeout_error"),
        });
    }
}

/// The request log's queue, with what queueing a record without waiting needs.
#[derive(Clone)]
struct Queue {
    tx: mpsc::Sender<Msg>,
    /// The bytes its records may still take.
    room: QueueBytes,
    /// Where records that cannot wait go when the queue is full.
    overflow: Arc<Overflow>,
    log: Logger,
}

impl Queue {
    /// The queue `tx`, its records weighing up to `bytes` together, with a porter thread for
    /// up to `overflow_bytes` of records that cannot wait.
    fn new(
        tx: mpsc::Sender<Msg>,
        bytes: usize,
        overflow_bytes: usize,
        log: Logger,
    ) -> std::io::Result<Self> {
        let room = QueueBytes::new(bytes);
        let overflow = Overflow::start(tx.clone(), room.clone(), overflow_bytes, log.clone())?;
        Ok(Queue { tx, room, overflow: Arc::new(overflow), log })
    }

    /// Queues `msg` without waiting in a task, as [`Recorder::record_now`] says: at once when
    /// there is room; else handed to the porter thread, which waits for room for each record
    /// in turn, unless the records it holds would pass their byte budget; else right here, on
    /// the caller's thread (a runtime thread, whose other connections wait with it: the last
    /// resort, when the disk cannot keep up with clients that keep leaving).
    fn now(&self, mut msg: Msg) {
        if self.room.try_take(&mut msg) {
            msg = match self.tx.try_send(msg) {
                Ok(()) => return,
                Err(TrySendError::Closed(msg)) => return lost(&self.log, msg),
                Err(TrySendError::Full(msg)) => msg,
            };
        }
        let msg = match self.overflow.hand(msg, false) {
            Ok(()) => return,
            Err(msg) => msg,
        };
        // In place, the record waits for a slot only, not for its share of the bytes: the
        // shares may be held by this very thread's tasks, given them but not yet run while
        // the thread waits here, and nothing would give them back. A record past the budget
        // now and then, while a runtime thread is held up, is the lesser harm.
        // And for a slot for [`IN_PLACE_WAIT`] at most, for the same reason: slots go to
        // those who asked first, and one given to a task of this thread (woken, not yet run)
        // is used only once the thread runs it. Behind as many of them as the queue has
        // slots, the wait would never end, and the thread's connections with it. Past the
        // wait, the porter takes the record over its budget, and the thread runs its tasks.
        let msg = match block_on_until(self.tx.reserve(), Instant::now() + IN_PLACE_WAIT) {
            Some(Ok(slot)) => return slot.send(msg),
            Some(Err(_)) => return lost(&self.log, msg),
            None => msg,
        };
        let msg = match self.overflow.hand(msg, true) {
            Ok(()) => return,
            Err(msg) => msg,
        };
        // The porter has stopped: this is the shutdown, the runtime's tasks are gone.
        if let Err(e) = block_on(self.tx.send(msg)) {
            lost(&self.log, e.0);
        }
    }
}

/// The bytes the request log's queue has room for ([`QUEUE_BYTES`]): a record takes its
/// weight ([`Msg::weight`], at most the whole) before it goes in, and gives it back when the
/// request log's thread has handled it (the share travels in the message).
#[derive(Clone)]
struct QueueBytes {
    free: Arc<tokio::sync::Semaphore>,
    /// All of them: no record takes more.
    all: u32,
}

impl QueueBytes {
    fn new(bytes: usize) -> Self {
        let all = u32::try_from(bytes).unwrap_or(u32::MAX);
        QueueBytes { free: Arc::new(tokio::sync::Semaphore::new(all as usize)), all }
    }

    /// The share `msg` still needs: its weight, at most all the room there is; none for a
    /// record that holds its share already, or a stop.
    fn needed(&self, msg: &Msg) -> Option<u32> {
        matches!(msg, Msg::Record(_, None))
            .then(|| u32::try_from(msg.weight()).unwrap_or(u32::MAX).min(self.all))
    }

    /// Gives `msg` its share if the room is free now; whether it has its share.
    fn try_take(&self, msg: &mut Msg) -> bool {
        let Some(share) = self.needed(msg) else { return true };
        let share = self.free.clone().try_acquire_many_owned(share).ok();
        let taken = share.is_some();
        give(msg, share);
        taken
    }

    /// Gives `msg` its share once the room is free.
    async fn take(&self, mut msg: Msg) -> Msg {
        let share = self.share_for(&msg).await;
        give(&mut msg, share);
        msg
    }

    /// The share `msg` still needs, once the room is free (none if it needs none).
    fn share_for(
        &self,
        msg: &Msg,
    ) -> impl Future<Output = Option<OwnedSemaphorePermit>> + Send + 'static {
        let (free, needed) = (self.free.clone(), self.needed(msg));
        async move {
            // The semaphore is never closed: `None` is not possible once a share is needed.
            match needed {
                Some(share) => free.acquire_many_owned(share).await.ok(),
                None => None,
            }
        }
    }
}

/// Puts `share` in `msg`, a record without one.
fn give(msg: &mut Msg, share: Option<OwnedSemaphorePermit>) {
    if let Msg::Record(_, held @ None) = msg {
        *held = share;
    }
}

/// Records that could not wait for room in the request log's queue (their request was
/// dropped), in the order they came, and the porter thread that waits for room for each.
/// Waiting on a thread of its own, they hold up neither a runtime thread nor a thread of the
/// blocking pool.
struct Overflow {
    /// To the porter; `None` once [`close`](Self::close)d.
    tx: Mutex<Option<std::sync::mpsc::Sender<(Msg, usize)>>>,
    porter: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Bytes the porter's records weigh ([`Msg::weight`]), and how many it may hold.
    held: Arc<AtomicUsize>,
    budget: usize,
}

impl Overflow {
    fn start(
        queue: mpsc::Sender<Msg>,
        room: QueueBytes,
        budget: usize,
        log: Logger,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<(Msg, usize)>();
        let held = Arc::new(AtomicUsize::new(0));
        let porter = {
            let held = held.clone();
            std::thread::Builder::new().name("request-log-wait".into()).spawn(move || {
                for (msg, bytes) in rx {
                    if let Err(e) = block_on(async { queue.send(room.take(msg).await).await }) {
                        lost(&log, e.0);
                    }
                    held.fetch_sub(bytes, Ordering::AcqRel);
                }
            })?
        };
        Ok(Overflow { tx: Mutex::new(Some(tx)), porter: Mutex::new(Some(porter)), held, budget })
    }

    /// Gives `msg` to the porter, or gives it back when the porter holds its budget already
    /// (one record is always taken; any, `over_budget`) or has stopped.
    fn hand(&self, msg: Msg, over_budget: bool) -> Result<(), Msg> {
        let bytes = msg.weight();
        let before = self.held.fetch_add(bytes, Ordering::AcqRel);
        let tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        let handed = match tx.as_ref() {
            Some(tx) if over_budget || before == 0 || before + bytes <= self.budget => {
                tx.send((msg, bytes)).map_err(|e| e.0.0)
            }
            _ => Err(msg),
        };
        if handed.is_err() {
            self.held.fetch_sub(bytes, Ordering::AcqRel);
        }
        handed
    }

    /// Bytes the porter's records weigh.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// Stops taking records and waits until the porter has queued every one it holds.
    fn close(&self, log: &Logger) {
        drop(self.tx.lock().unwrap_or_else(PoisonError::into_inner).take());
        let porter = self.porter.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(porter) = porter
            && porter.join().is_err()
        {
            error!(log, "the request log's waiting thread panicked");
        }
    }
}

/// A record waiting for room in the request log's queue, and the future of that room (see
/// [`Recorder::record_polled`]). Dropped before it is queued (its request's task cancelled,
/// the client gone), it queues the record with [`Queue::now`].
pub(crate) struct Waiting {
    msg: Option<Msg>,
    room: Pin<Box<dyn Future<Output = Room> + Send>>,
    queue: Queue,
}

/// The record's share of the queue's bytes if it waited for it, and a slot in the queue, or
/// the news that its thread is gone.
type Room = (Option<OwnedSemaphorePermit>, Result<OwnedPermit<Msg>, SendError<()>>);

impl Waiting {
    /// `msg`, waiting for its share of `queue`'s bytes if it has none yet, then for a slot.
    fn new(msg: Msg, queue: &Queue) -> Self {
        let (tx, share) = (queue.tx.clone(), queue.room.share_for(&msg));
        let room = async move { (share.await, tx.reserve_owned().await) };
        Waiting { msg: Some(msg), room: Box::pin(room), queue: queue.clone() }
    }

    /// Queues the record once there is room: `Ready` when it is queued (or reported lost, the
    /// thread being gone).
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let (share, room) = std::task::ready!(self.room.as_mut().poll(cx));
        if let Some(mut msg) = self.msg.take() {
            give(&mut msg, share);
            match room {
                Ok(room) => drop(room.send(msg)),
                Err(_) => lost(&self.queue.log, msg),
            }
        }
        Poll::Ready(())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(msg) = self.msg.take() {
            // What the wait was given of the record's share goes back first: still held
            // while the record waits again, it could be the very room the record waits for.
            self.room = Box::pin(std::future::pending());
            self.queue.now(msg);
        }
    }
}

/// Runs `future` to its end on this thread, parked between polls: the waits for room that
/// cannot be left to a task (off the runtime, or at shutdown). No runtime is entered, so it
/// works on any thread; tokio's channels need none.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    loop {
        if let Some(output) = block_on_until(future.as_mut(), Instant::now() + IN_PLACE_WAIT) {
            return output;
        }
    }
}

/// [`block_on`] until `deadline`: `None` if `future` has not ended by then (it is dropped).
fn block_on_until<F: Future>(future: F, deadline: Instant) -> Option<F::Output> {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return Some(output);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        std::thread::park_timeout(left);
    }
}

/// The request log's thread is gone (it panicked): the record goes to the logger whole.
fn lost(log: &Logger, msg: Msg) {
    if let Msg::Record(r, _) = msg {
        crate::reqlog::not_stored(log, "the request log's thread is gone", &r.into_entry());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Recorder {
        /// A recorder whose queue is `tx`, no thread behind it: the test takes the records.
        fn over(tx: mpsc::Sender<Msg>) -> Self {
            Recorder::over_with(tx, OVERFLOW_BYTES)
        }

        /// [`over`](Self::over), its porter holding up to `overflow_bytes`.
        fn over_with(tx: mpsc::Sender<Msg>, overflow_bytes: usize) -> Self {
            Recorder::over_bytes(tx, QUEUE_BYTES, overflow_bytes)
        }

        /// [`over`](Self::over), its records weighing up to `bytes` together and its porter
        /// holding up to `overflow_bytes`.
        fn over_bytes(tx: mpsc::Sender<Msg>, bytes: usize, overflow_bytes: usize) -> Self {
            let metrics = Metrics::new("mock", Arc::default(), None);
            let log = Logger::root(slog::Discard, slog::o!());
            Recorder {
                queue: Queue::new(tx, bytes, overflow_bytes, log.clone()).unwrap(),
                log,
                thread: Mutex::new(None),
                store: None,
                db: None,
                writer: Mutex::new(None),
                metrics: Arc::new(metrics),
            }
        }
    }

    fn record_of(id: &str) -> RequestRecord {
        RequestRecord { request_id: id.to_owned(), status: 200, ..Default::default() }
    }

    /// [`drained`] for a plain thread: the ids of the records taken until `n` came or 10 s
    /// passed.
    fn drained_here(rx: &mut mpsc::Receiver<Msg>, n: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut ids = Vec::new();
        while ids.len() < n && std::time::Instant::now() < deadline {
            if let Ok(Msg::Record(r, _)) = rx.try_recv() {
                ids.push(r.request_id);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        ids
    }

    /// The ids of the records taken from the queue as the request log's thread takes them,
    /// until `n` came or 10 s passed.
    async fn drained(rx: &mut mpsc::Receiver<Msg>, n: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut ids = Vec::new();
        while ids.len() < n && std::time::Instant::now() < deadline {
            while let Ok(msg) = rx.try_recv() {
                if let Msg::Record(r, _) = msg {
                    ids.push(r.request_id);
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        ids
    }

    /// With the queue full, every request that ends waits in its own task: none takes a
    /// blocking thread or parks the runtime's. Room goes to them in the
    /// order they came, and a request cancelled while it waits still gets its record queued.
    #[test]
    fn a_full_queue_holds_up_only_the_requests_that_end() {
        watched(full_queue_scenario);
    }

    fn full_queue_scenario() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (tx, mut rx) = mpsc::channel(2);
        let recorder = Arc::new(Recorder::over(tx));
        rt.block_on(async {
            recorder.record(record_of("a")).await;
            recorder.record(record_of("b")).await;
            // Full. Forty more requests end, more than the old recorder sent off the runtime.
            let waiting: Vec<_> = (0..40)
                .map(|i| {
                    let recorder = recorder.clone();
                    tokio::spawn(async move { recorder.record(record_of(&format!("w{i}"))).await })
                })
                .collect();
            // The runtime thread still runs its other tasks.
            let ticks = Arc::new(AtomicUsize::new(0));
            let ticker = {
                let ticks = ticks.clone();
                tokio::spawn(async move {
                    for _ in 0..5 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        ticks.fetch_add(1, Ordering::Relaxed);
                    }
                })
            };
            ticker.await.unwrap();
            assert_eq!(ticks.load(Ordering::Relaxed), 5);
            assert_eq!(recorder.queue.overflow.held(), 0, "each waits in its own task");
            assert!(waiting.iter().all(|w| !w.is_finished()));

            // One of them is cancelled while it waits (its client left).
            waiting[39].abort();
            tokio::task::yield_now().await;

            // The thread takes records: the waiting ones follow, in order.
            let ids = drained(&mut rx, 42).await;
            for w in waiting.into_iter().take(39) {
                w.await.unwrap();
            }
            assert_eq!(ids.len(), 42, "records lost: {ids:?}");
            // The cancelled one is sent from another thread, so it may come in anywhere.
            assert!(ids.contains(&"w39".to_owned()), "the cancelled request's record is kept");
            let tasks: Vec<&String> = ids.iter().filter(|id| *id != "w39").collect();
            let mut expected: Vec<String> = ["a", "b"].map(String::from).to_vec();
            expected.extend((0..39).map(|i| format!("w{i}")));
            assert_eq!(tasks, expected.iter().collect::<Vec<_>>(), "first come, first served");
        });
    }

    /// A stream's record, written where its body ends (a poll): with the queue full, the body
    /// waits for room, woken when there is some; given up (the client left), the record is
    /// still queued.
    #[test]
    fn a_polled_record_waits_for_room_and_is_kept_when_abandoned() {
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let recorder = Recorder::over(tx);
        rt.block_on(async {
            assert!(recorder.record_polled(record_of("a")).is_none(), "room: queued at once");
            let mut waiting = recorder.record_polled(record_of("b")).expect("full: it waits");
            let woken = Arc::new(Count(AtomicUsize::new(0)));
            let waker = Waker::from(woken.clone());
            let mut cx = Context::from_waker(&waker);
            assert!(waiting.poll(&mut cx).is_pending());
            assert_eq!(drained(&mut rx, 1).await, ["a"]);
            assert_eq!(woken.0.load(Ordering::SeqCst), 1, "woken when there is room");
            assert!(waiting.poll(&mut cx).is_ready());
            assert_eq!(drained(&mut rx, 1).await, ["b"]);

            // Full again, and the body is dropped while its record waits.
            assert!(recorder.record_polled(record_of("c")).is_none());
            let waiting = recorder.record_polled(record_of("d")).expect("full: it waits");
            drop(waiting);
            assert_eq!(drained(&mut rx, 2).await, ["c", "d"]);
        });
    }

    /// A request still waiting for room when the runtime shuts down (the grace period is
    /// over) keeps its record: dropped with the runtime, it is queued all the same.
    #[test]
    fn a_record_waiting_at_shutdown_is_kept() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let recorder = Arc::new(Recorder::over(tx));
        rt.block_on(async {
            recorder.record(record_of("a")).await;
            let r = recorder.clone();
            tokio::spawn(async move { r.record(record_of("b")).await });
            tokio::task::yield_now().await;
        });
        // The request log's thread, still running, takes records a little later.
        let taker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drained_here(&mut rx, 2)
        });
        drop(rt);
        assert_eq!(taker.join().unwrap(), ["a", "b"], "the waiting record was lost");
    }

    /// Runs `scenario` on a thread of its own, watched: a recorder that parks the thread it
    /// is called on hangs the scenario, and fails the test after 30 s instead of hanging it.
    fn watched(scenario: impl FnOnce() + Send + 'static) {
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            scenario();
            let _ = done_tx.send(());
        });
        match done.recv_timeout(Duration::from_secs(30)) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("the scenario hung"),
            // Ended: either done, or the scenario panicked (its assertion is in the output).
            r => r.expect("the scenario failed"),
        }
    }

    fn record_with_body(id: &str, bytes: usize) -> RequestRecord {
        RequestRecord { client_request: Bytes::from(vec![b' '; bytes]), ..record_of(id) }
    }

    /// Records that cannot wait at all (their request was dropped: the client left) wait for
    /// room off the runtime's threads when the queue is full, however many (the recorder
    /// before waited in place past 32, holding up the runtime thread's other connections),
    /// and arrive in the order they came once there is room.
    #[test]
    fn records_that_cannot_wait_are_queued_off_the_runtime_once_there_is_room() {
        watched(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (tx, mut rx) = mpsc::channel(1);
            let recorder = Recorder::over(tx);
            rt.block_on(async {
                for i in 0..100 {
                    recorder.record_now(record_with_body(&format!("r{i}"), 10));
                }
                let weight = 10 + crate::reqlog::RECORD_BYTES;
                assert_eq!(recorder.queue.overflow.held(), 99 * weight, "99 wait with the porter");
                // The runtime thread still runs its other tasks.
                tokio::time::sleep(Duration::from_millis(5)).await;
                let ids = drained(&mut rx, 100).await;
                let expected: Vec<String> = (0..100).map(|i| format!("r{i}")).collect();
                assert_eq!(ids, expected, "every record, first come first served");
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while recorder.queue.overflow.held() > 0 {
                    assert!(std::time::Instant::now() < deadline, "the porter's count");
                    tokio::task::yield_now().await;
                }
            });
        });
    }

    /// A record waiting in place waits behind the records that asked for a slot before it,
    /// and a slot given to a task of its own thread (woken, not yet run) is used only once the
    /// thread runs again: it waits a second at most, then the porter takes it over its budget.
    /// Waiting for good, the runtime thread hung, and every connection on it.
    #[test]
    fn a_record_waits_in_place_a_second_at_most() {
        watched(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (tx, mut rx) = mpsc::channel(1);
            let recorder = Arc::new(Recorder::over_with(tx, 1));
            recorder.record_now(record_of("full"));
            recorder.record_now(record_of("p"));
            assert!(recorder.queue.overflow.held() > 0, "p waits with the porter");
            rt.block_on(async {
                let r = recorder.clone();
                let a = tokio::spawn(async move { r.record(record_of("a")).await });
                tokio::task::yield_now().await;
                assert!(!a.is_finished(), "a waits in its task, after the porter");
                // The taker starts once b waits in place: the slot "p" leaves goes to a,
                // whose task is this thread's.
                let taker = std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(200));
                    drained_here(&mut rx, 4)
                });
                recorder.record_now(record_of("b"));
                a.await.unwrap();
                // p and a wait side by side (the porter's thread may ask after a's task).
                let mut ids = taker.join().unwrap();
                let at = |id: &str| ids.iter().position(|i| i == id);
                assert!(at("a") < at("b"), "{ids:?}");
                ids[1..].sort();
                assert_eq!(ids, ["full", "a", "b", "p"]);
            });
        });
    }

    /// Past its byte budget the porter takes no more, and the record waits where it is (one
    /// record is always taken, whatever it weighs); at shutdown the porter's records are
    /// queued before the stop.
    #[test]
    fn past_the_porters_budget_a_record_waits_in_place() {
        watched(past_the_budget_scenario);
    }

    fn past_the_budget_scenario() {
        let (tx, mut rx) = mpsc::channel(1);
        let recorder = Arc::new(Recorder::over_with(tx, 100));
        recorder.record_now(record_with_body("a", 10));
        recorder.record_now(record_with_body("b", 500));
        let record = crate::reqlog::RECORD_BYTES;
        assert_eq!(recorder.queue.overflow.held(), 500 + record, "the first to wait is taken");
        let sent = Arc::new(AtomicUsize::new(0));
        let waiter = {
            let (recorder, sent) = (recorder.clone(), sent.clone());
            std::thread::spawn(move || {
                recorder.record_now(record_with_body("c", 10));
                sent.store(1, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(sent.load(Ordering::SeqCst), 0, "c waits in place");
        let mut ids = drained_here(&mut rx, 3);
        waiter.join().unwrap();
        // The porter (b) and the thread waiting in place (c) wait for room side by side, on
        // threads of their own: either may come first.
        if let Some(waited) = ids.get_mut(1..) {
            waited.sort();
        }
        assert_eq!(ids, ["a", "b", "c"]);

        // Shutdown: the porter's record goes before the stop.
        recorder.record_now(record_of("d"));
        recorder.record_now(record_with_body("e", 10));
        assert_eq!(recorder.queue.overflow.held(), 10 + record);
        let taker = std::thread::spawn(move || {
            let mut got = Vec::new();
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    Msg::Record(r, _) => got.push(r.request_id),
                    Msg::Stop => {
                        got.push("stop".into());
                        break;
                    }
                }
            }
            got
        });
        recorder.queue.overflow.close(&recorder.log);
        block_on(recorder.queue.tx.send(Msg::Stop)).unwrap();
        assert_eq!(taker.join().unwrap(), ["d", "e", "stop"]);
        // Closed: a record that cannot wait now waits in place.
        assert!(recorder.queue.overflow.hand(Msg::Stop, false).is_err());
    }

    /// What `record_with_body(_, BODY)` weighs ([`Msg::weight`]).
    const BODY: usize = 10_000;
    const WEIGHT: usize = BODY + crate::reqlog::RECORD_BYTES;

    /// A recorder whose queue has 16 slots but room for the bytes of three records of
    /// [`BODY`], its porter holding up to `overflow_bytes`, and the queue's receiving end.
    fn room_for_three(overflow_bytes: usize) -> (Recorder, mpsc::Receiver<Msg>) {
        let (tx, rx) = mpsc::channel(16);
        (Recorder::over_bytes(tx, 3 * WEIGHT, overflow_bytes), rx)
    }

    /// The queue holds records up to a weight as well as up to a count: past the weight, a
    /// record waits for room however many slots are free (in its task, with the porter, or
    /// polled), and a record heavier than the whole waits for an empty queue. Bound by its
    /// count alone, 256 records of megabyte bodies held hundreds of megabytes.
    #[test]
    fn the_queue_holds_records_up_to_a_weight() {
        watched(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (recorder, mut rx) = room_for_three(OVERFLOW_BYTES);
            let recorder = Arc::new(recorder);
            rt.block_on(async {
                for id in ["a", "b", "c"] {
                    recorder.record(record_with_body(id, BODY)).await;
                }
                // Thirteen slots free, no bytes.
                let waiting = {
                    let recorder = recorder.clone();
                    tokio::spawn(async move { recorder.record(record_with_body("d", BODY)).await })
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
                assert!(!waiting.is_finished(), "d waits for bytes");
                recorder.record_now(record_with_body("e", BODY));
                assert_eq!(recorder.queue.overflow.held(), WEIGHT, "e waits with the porter");
                let mut polled =
                    recorder.record_polled(record_with_body("f", BODY)).expect("f waits");
                assert_eq!(rx.len(), 3, "only a, b and c are queued");

                // Each record taken gives its bytes back, and the waiting ones follow.
                // The first take may bring d and e with it (their room is given back as it
                // takes): the second waits only for what is left.
                let mut ids = drained(&mut rx, 3).await;
                waiting.await.unwrap();
                std::future::poll_fn(|cx| polled.poll(cx)).await;
                ids.extend(drained(&mut rx, 6 - ids.len()).await);
                assert_eq!(&ids[..3], ["a", "b", "c"]);
                let mut rest = ids[3..].to_vec();
                rest.sort();
                assert_eq!(rest, ["d", "e", "f"], "{ids:?}");

                // Heavier than the whole: it goes in once the queue is empty.
                recorder.record(record_with_body("g", BODY)).await;
                let heavy = {
                    let recorder = recorder.clone();
                    tokio::spawn(async move {
                        recorder.record(record_with_body("huge", 10 * WEIGHT)).await;
                    })
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
                assert!(!heavy.is_finished(), "it waits for g to be taken");
                assert_eq!(drained(&mut rx, 1).await, ["g"]);
                heavy.await.unwrap();
                assert_eq!(drained(&mut rx, 1).await, ["huge"]);
            });
        });
    }

    /// A record that waits in place (the porter busy) waits for a slot, not for its share of
    /// the bytes: the shares the records taken give back go first to the requests waiting in
    /// line, and those may be this very thread's tasks, which cannot run while it waits.
    /// Waiting for a share there, the runtime thread hung for good.
    #[test]
    fn a_record_waiting_in_place_does_not_wait_for_shares_its_thread_holds() {
        watched(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (recorder, mut rx) = room_for_three(WEIGHT);
            let recorder = Arc::new(recorder);
            let taker = rt.block_on(async {
                for id in ["a", "b", "c"] {
                    recorder.record_now(record_with_body(id, BODY));
                }
                let waiting: Vec<_> = ["d", "e", "f"]
                    .into_iter()
                    .map(|id| {
                        let recorder = recorder.clone();
                        tokio::spawn(async move {
                            recorder.record(record_with_body(id, BODY)).await;
                        })
                    })
                    .collect();
                tokio::task::yield_now().await;
                recorder.record_now(record_with_body("p", BODY));
                assert_eq!(recorder.queue.overflow.held(), WEIGHT, "p waits with the porter");
                let taker = std::thread::spawn(move || drained_here(&mut rx, 8));
                // The porter is busy: q waits here, while a, b and c, once taken, give their
                // shares to d, e and f, which wait on this thread.
                recorder.record_now(record_with_body("q", BODY));
                for w in waiting {
                    w.await.unwrap();
                }
                taker
            });
            let mut ids = taker.join().unwrap();
            ids.sort();
            assert_eq!(ids, ["a", "b", "c", "d", "e", "f", "p", "q"]);
        });
    }

    /// A record dropped while it waits for its share (its client left) gives back what it
    /// was given of that share before it is queued again. Kept, a record heavier than half
    /// the budget, its porter busy, waited in place for room that it held itself: the runtime
    /// thread, and every record after it, hung for good.
    #[test]
    fn a_waiting_record_dropped_gives_its_share_back_first() {
        watched(|| {
            let (recorder, mut rx) = room_for_three(WEIGHT);
            recorder.record_now(record_with_body("a", BODY));
            let mut heavy =
                recorder.record_polled(record_with_body("heavy", 10 * WEIGHT)).expect("it waits");
            let mut cx = Context::from_waker(Waker::noop());
            assert!(heavy.poll(&mut cx).is_pending(), "it waits for the whole budget");
            recorder.record_now(record_with_body("e", BODY));
            assert_eq!(recorder.queue.overflow.held(), WEIGHT, "e waits with the porter");
            let taker = std::thread::spawn(move || drained_here(&mut rx, 3));
            // The client leaves: the porter is busy, so it waits for room here.
            drop(heavy);
            let mut ids = taker.join().unwrap();
            ids[1..].sort();
            assert_eq!(ids, ["a", "e", "heavy"]);
        });
    }

    /// Records without a body weigh against the porter's budget too: their headers (a client
    /// may send hundreds of kilobytes of them) and the record itself. Counted as nothing, any
    /// number of them waited with the porter while the disk was behind, as clients that sent
    /// a request and left kept coming.
    #[test]
    fn records_without_a_body_count_against_the_porters_budget() {
        watched(|| {
            let (tx, mut rx) = mpsc::channel(1);
            let record = crate::reqlog::RECORD_BYTES;
            let recorder = Recorder::over_with(tx, 4 * record);
            recorder.record_now(record_of("full"));
            let hand = |r: RequestRecord| {
                recorder.queue.overflow.hand(Msg::Record(Box::new(r), None), false)
            };
            for i in 0..4 {
                assert!(hand(record_of(&format!("r{i}"))).is_ok(), "r{i} fits");
            }
            assert!(hand(record_of("r4")).is_err(), "past the budget, in place");
            assert_eq!(recorder.queue.overflow.held(), 4 * record);
            let drained = drained_here(&mut rx, 5);
            assert_eq!(drained, ["full", "r0", "r1", "r2", "r3"]);
            while recorder.queue.overflow.held() > 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Headers weigh what they hold.
            recorder.record_now(record_of("full"));
            let mut h = hyper::HeaderMap::new();
            h.insert("x-pad", "a".repeat(8 * record).parse().unwrap());
            let heavy =
                || RequestRecord { request_headers: redacted_headers(&h), ..record_of("h") };
            assert!(hand(heavy()).is_ok(), "one record is always taken");
            assert!(hand(heavy()).is_err());
            assert!(recorder.queue.overflow.held() > 8 * record);
            assert_eq!(drained_here(&mut rx, 2), ["full", "h"]);
        });
    }

    #[test]
    fn key_hash_is_the_first_six_bytes_of_sha256_in_hex() {
        use sha2::Digest;
        for key in ["", "sk-bench", "client-key-123", "ключ"] {
            let digest = sha2::Sha256::digest(key.as_bytes());
            let expected: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
            assert_eq!(key_hash(key), expected);
        }
    }

    #[test]
    fn headers_are_json_with_secrets_redacted_and_repeats_kept() {
        let mut h = hyper::HeaderMap::new();
        h.insert("authorization", "Bearer sk-secret".parse().unwrap());
        h.append("x-api-key", "k1".parse().unwrap());
        h.append("x-api-key", "k2".parse().unwrap());
        h.append("accept", "a/b".parse().unwrap());
        h.append("accept", "c/\"d\"".parse().unwrap());
        h.insert("x-bytes", hyper::header::HeaderValue::from_bytes(b"caf\xe9").unwrap());
        h.insert("x-tab", hyper::header::HeaderValue::from_bytes(b"a\tb\\c").unwrap());
        let text = redacted_headers(&h);
        assert!(!text.contains("sk-secret") && !text.contains("k1"), "{text:?}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "authorization": "[redacted]",
                "x-api-key": ["[redacted]", "[redacted]"],
                "accept": ["a/b", "c/\"d\""],
                "x-bytes": "caf\u{fffd}",
                "x-tab": "a\tb\\c",
            })
        );
        assert_eq!(redacted_headers(&hyper::HeaderMap::new()), "{}");
        // No header sent twice: the same object, in the order the map holds the names.
        let mut h = hyper::HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        h.insert("authorization", "Bearer sk-secret".parse().unwrap());
        h.insert("x-tab", hyper::header::HeaderValue::from_bytes(b"a\tb").unwrap());
        assert_eq!(
            redacted_headers(&h),
            r#"{"content-type":"application/json","authorization":"[redacted]","x-tab":"a\tb"}"#
        );
    }
}
