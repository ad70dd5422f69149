//! The writer thread: a bounded queue in, batched transactions out, and a
//! spill when the database cannot take them.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{LogStore, NewEntry, Spill, StoreError};

/// How the [`Writer`] queues and batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterOptions {
    /// Entries the queue holds before [`WriterHandle::try_send`] reports it full
    /// and [`WriterHandle::send`] waits. At least 1.
    pub queue_capacity: usize,
    /// Bytes of bodies the queue holds before [`WriterHandle::try_send`] reports it full
    /// and [`WriterHandle::send`] waits: with large bodies, a count alone would let the
    /// queue grow to gigabytes while the database catches up. An entry is always taken when
    /// the queue is empty, however large.
    pub queue_bytes: u64,
    /// The most entries written in one transaction. At least 1.
    pub batch_max: usize,
    /// How long the thread waits for more entries after the first of a batch.
    /// Capped at 100 ms: it bounds what a crash can lose.
    pub batch_window: Duration,
    /// During shutdown, how long a batch that neither the database nor the
    /// spill accepts is retried before it is handed back in
    /// [`ShutdownReport::unwritten`].
    pub shutdown_timeout: Duration,
    /// While batches are smaller than `batch_max` (entries come slower than
    /// the writer stores them), the writer offers its core to other threads
    /// between entries once this much time has passed since it last did (see
    /// [`YieldEvery`]), so that a batch of a few milliseconds cannot keep a
    /// waiting thread, such as a server's event loop, off its core. A full
    /// batch means the writer is behind, and it keeps its core. `None`: never.
    pub yield_every: Option<Duration>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 10_000,
            queue_bytes: 64 << 20,
            batch_max: 512,
            batch_window: Duration::from_millis(50),
            shutdown_timeout: Duration::from_secs(10),
            yield_every: Some(Duration::from_micros(50)),
        }
    }
}

const MAX_BATCH_WINDOW: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Gives the thread's core away now and then during a long stretch of
/// background work.
///
/// A thread the scheduler wakes (a server's event loop with a request to
/// answer) may find every core busy and wait for the running thread's time
/// slice to end: milliseconds, when that thread is writing a batch of log
/// entries. Calling [`tick`](Self::tick) between units of work calls
/// [`std::thread::yield_now`] once `every` has passed since the last yield,
/// which lets such a thread run at once. The cost is a system call per
/// `every` of work, and a switch only when another thread is waiting.
#[derive(Debug, Clone)]
pub struct YieldEvery {
    every: Duration,
    last: Instant,
}

impl YieldEvery {
    /// Starts counting now.
    #[must_use]
    pub fn new(every: Duration) -> Self {
        Self { every, last: Instant::now() }
    }

    /// Yields if `every` has passed since the last yield (or since
    /// [`new`](Self::new)); returns whether it did.
    pub fn tick(&mut self) -> bool {
        if self.last.elapsed() < self.every {
            return false;
        }
        std::thread::yield_now();
        // Counted from when the thread has its core back: `every` is the
        // longest stretch of its own work between two yields.
        self.last = Instant::now();
        true
    }
}

/// Counters of a [`Writer`], read without taking a lock (except `last_error`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriterStats {
    /// Entries in the queue now.
    pub queued: u64,
    /// Entries stored in the database.
    pub written: u64,
    /// Entries handed to the [`Spill`] because the database failed.
    pub spilled: u64,
    /// Batch writes the database refused (each retry of a batch counts).
    pub failed_batches: u64,
    /// Spill attempts that failed (the batch was kept and retried).
    pub spill_failures: u64,
    /// Times the database file was found deleted or replaced and reopened.
    pub reopens: u64,
    /// The last failure, with its causes, for an admin page.
    pub last_error: Option<String>,
    /// `false` from a failed database write until the next one succeeds.
    pub db_ok: bool,
    /// `true` while a batch has failed in the database and in the spill alike (a full disk):
    /// the writer retries it, with backoff, and takes no new entries meanwhile, so the queue
    /// fills. See [`WriterHandle::is_stuck`].
    pub stalled: bool,
}

/// What [`Writer::shutdown`] hands back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// The final counters.
    pub stats: WriterStats,
    /// Entries that neither the database nor the spill accepted within
    /// [`WriterOptions::shutdown_timeout`]; the caller decides their fate.
    /// Empty in every normal case.
    pub unwritten: Vec<NewEntry>,
}

/// The error of [`WriterHandle::try_send`]; it gives the entry back.
#[derive(Debug, thiserror::Error)]
pub enum TrySendError {
    /// The queue is full; retry later, or use [`WriterHandle::send`] off the async runtime.
    #[error("the log queue is full")]
    Full(Box<NewEntry>),
    /// The writer has shut down; no retry will succeed.
    #[error("the log writer has shut down")]
    Closed(Box<NewEntry>),
}

impl TrySendError {
    /// The entry that was not queued.
    #[must_use]
    pub fn into_entry(self) -> NewEntry {
        match self {
            TrySendError::Full(entry) | TrySendError::Closed(entry) => *entry,
        }
    }
}

/// The error of [`WriterHandle::send`]: the writer has shut down. It gives the entry back.
#[derive(Debug, thiserror::Error)]
#[error("the log writer has shut down")]
pub struct SendError(pub Box<NewEntry>);

#[derive(Default)]
struct Shared {
    queued: AtomicU64,
    /// Body bytes of the queued entries.
    queued_bytes: AtomicU64,
    /// The byte budget of the queue.
    queue_bytes: u64,
    /// The queue's capacity in entries.
    queue_capacity: u64,
    written: AtomicU64,
    spilled: AtomicU64,
    failed_batches: AtomicU64,
    spill_failures: AtomicU64,
    reopens: AtomicU64,
    db_failing: AtomicBool,
    /// The batch in hand failed in the database and the spill; cleared once one takes it.
    stalled: AtomicBool,
    closed: AtomicBool,
    /// Senders between their `closed` check and the end of their send;
    /// shutdown drains until this is zero so no late entry is stranded.
    in_flight: AtomicUsize,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    /// Whether another entry fits the byte budget (an empty queue always takes one).
    fn has_room(&self) -> bool {
        let bytes = self.queued_bytes.load(Ordering::Relaxed);
        bytes == 0 || bytes < self.queue_bytes
    }

    fn stats(&self) -> WriterStats {
        WriterStats {
            queued: self.queued.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            spilled: self.spilled.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
            spill_failures: self.spill_failures.load(Ordering::Relaxed),
            reopens: self.reopens.load(Ordering::Relaxed),
            last_error: self.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            db_ok: !self.db_failing.load(Ordering::Relaxed),
            stalled: self.stalled.load(Ordering::Relaxed),
        }
    }

    fn set_error(&self, error: &dyn std::error::Error) {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(text);
    }
}

/// Decrements `in_flight` when a send finishes, however it finishes.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A cheap, cloneable sender to a [`Writer`]; `Send + Sync`.
#[derive(Clone)]
pub struct WriterHandle {
    /// `None` is the shutdown marker.
    tx: SyncSender<Option<NewEntry>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WriterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterHandle").field("stats", &self.shared.stats()).finish()
    }
}

fn boxed(message: Option<NewEntry>) -> Box<NewEntry> {
    // We only ever send `Some`, so the default is never used.
    Box::new(message.unwrap_or_default())
}

impl WriterHandle {
    /// Queues an entry without blocking: safe on an async runtime thread.
    ///
    /// # Errors
    ///
    /// [`TrySendError::Full`] when the queue is full (retry, or call
    /// [`send`](Self::send) from a blocking thread), [`TrySendError::Closed`]
    /// after shutdown. Both give the entry back.
    pub fn try_send(&self, entry: NewEntry) -> Result<(), TrySendError> {
        let _in_flight = InFlight::enter(&self.shared.in_flight);
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(TrySendError::Closed(Box::new(entry)));
        }
        if !self.shared.has_room() {
            return Err(TrySendError::Full(Box::new(entry)));
        }
        let bytes = entry.body_bytes();
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        self.shared.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.tx.try_send(Some(entry)).map_err(|e| {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            match e {
                mpsc::TrySendError::Full(m) => TrySendError::Full(boxed(m)),
                mpsc::TrySendError::Disconnected(m) => TrySendError::Closed(boxed(m)),
            }
        })
    }

    /// Queues an entry, waiting while the queue is full. Never call it on an
    /// async runtime thread.
    ///
    /// # Errors
    ///
    /// [`SendError`] after shutdown, with the entry.
    pub fn send(&self, entry: NewEntry) -> Result<(), SendError> {
        let _in_flight = InFlight::enter(&self.shared.in_flight);
        // Wait for the byte budget (the channel's own bound waits for the count).
        while !self.shared.has_room() {
            if self.shared.closed.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(SendError(Box::new(entry)));
        }
        let bytes = entry.body_bytes();
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        self.shared.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.tx.send(Some(entry)).map_err(|e| {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            self.shared.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            SendError(boxed(e.0))
        })
    }

    /// The writer's counters.
    #[must_use]
    pub fn stats(&self) -> WriterStats {
        self.shared.stats()
    }

    /// Whether a new entry would wait on the disk: the writer is
    /// [stalled](WriterStats::stalled) and its queue is full. Two atomic loads, no lock: a
    /// caller that can turn work away before doing it (a proxy, before it asks its upstream
    /// for an answer whose record could not be kept) checks it first.
    #[must_use]
    pub fn is_stuck(&self) -> bool {
        let shared = &self.shared;
        shared.stalled.load(Ordering::Relaxed)
            && (shared.queued.load(Ordering::Relaxed) >= shared.queue_capacity
                || !shared.has_room())
    }
}

/// The writer thread. Entries sent through its [`WriterHandle`]s are stored
/// in batches: one transaction per batch of up to `batch_max` entries or
/// `batch_window` of time, whichever ends first.
///
/// Nothing is dropped. When a batch cannot be written (locked past the busy
/// timeout, disk full, read-only, file gone) it goes whole to the [`Spill`],
/// and [`WriterStats::db_ok`] turns `false` until a later batch succeeds, or,
/// while no entry comes, a write without one (every second). If
/// the spill fails too, the batch is retried (database, then spill) with
/// backoff up to 5 s, while the queue fills and senders wait.
///
/// Before every batch the writer calls [`LogStore::reopen_if_replaced`]: if
/// the database file was deleted, moved away or replaced, a fresh database is
/// created at the same path (or the new file there is used) and writing
/// continues there; a moved file keeps every entry written to it.
///
/// Dropping a `Writer` shuts it down like [`Writer::shutdown`], discarding the report.
pub struct Writer {
    handle: WriterHandle,
    thread: Option<JoinHandle<Vec<NewEntry>>>,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("stats", &self.handle.stats()).finish()
    }
}

impl Writer {
    /// Starts the writer thread.
    ///
    /// # Errors
    ///
    /// [`StoreError::SpawnWriter`] if the operating system cannot start a thread.
    pub fn spawn(
        store: LogStore,
        spill: Box<dyn Spill>,
        options: WriterOptions,
    ) -> Result<Writer, StoreError> {
        let capacity = options.queue_capacity.max(1);
        let (tx, rx) = mpsc::sync_channel(capacity);
        let shared = Arc::new(Shared {
            queue_bytes: options.queue_bytes,
            queue_capacity: capacity as u64,
            ..Shared::default()
        });
        let worker = Worker {
            store,
            spill,
            batch_max: options.batch_max.max(1),
            batch_window: options.batch_window.min(MAX_BATCH_WINDOW),
            shutdown_timeout: options.shutdown_timeout,
            yield_every: options.yield_every,
            shared: Arc::clone(&shared),
            shutdown_deadline: None,
            unwritten: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name(String::from("logstore-writer"))
            .spawn(move || worker.run(&rx))
            .map_err(StoreError::SpawnWriter)?;
        Ok(Writer {
            handle: WriterHandle { tx, shared },
            thread: Some(thread),
            shutdown_timeout: options.shutdown_timeout,
        })
    }

    /// [`WriterOptions::shutdown_timeout`]: how long, once closed, the writer retries a batch
    /// that neither the database nor the spill accepts.
    #[must_use]
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    /// Closes the queue without waiting for the thread, as [`shutdown`](Self::shutdown)
    /// begins by doing: later sends fail and give their entry back, and a send waiting for
    /// room returns (its entry given back, or taken). The thread goes on with what is queued,
    /// retrying a batch that nothing accepts for the shutdown timeout, then handing it back;
    /// `shutdown` joins it and reports what it could not write. For a caller whose own sender
    /// waits on a writer that can write nowhere (a full disk), so that the sender can finish.
    pub fn close(&self) {
        self.handle.shared.closed.store(true, Ordering::SeqCst);
        // Wake the thread if it waits for a first entry (a full queue means it is busy).
        let _ = self.handle.tx.try_send(None);
    }

    /// A sender for this writer.
    #[must_use]
    pub fn handle(&self) -> WriterHandle {
        self.handle.clone()
    }

    /// The writer's counters.
    #[must_use]
    pub fn stats(&self) -> WriterStats {
        self.handle.stats()
    }

    /// Closes the queue (later sends fail and give their entry back), writes
    /// every queued entry to the database or the spill, and joins the thread.
    ///
    /// # Errors
    ///
    /// [`StoreError::WriterPanicked`] if the thread panicked.
    pub fn shutdown(mut self) -> Result<ShutdownReport, StoreError> {
        self.close_and_join()
    }

    fn close_and_join(&mut self) -> Result<ShutdownReport, StoreError> {
        let Some(thread) = self.thread.take() else {
            return Ok(ShutdownReport { stats: self.stats(), unwritten: Vec::new() });
        };
        self.handle.shared.closed.store(true, Ordering::SeqCst);
        // Wake the thread if it waits for a first entry. This may wait for
        // queue space, which the draining thread makes; if the thread is
        // already gone, the join below reports why.
        let _ = self.handle.tx.send(None);
        let unwritten = thread.join().map_err(|_| StoreError::WriterPanicked)?;
        Ok(ShutdownReport { stats: self.stats(), unwritten })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.close_and_join();
    }
}

struct Worker {
    store: LogStore,
    spill: Box<dyn Spill>,
    batch_max: usize,
    batch_window: Duration,
    shutdown_timeout: Duration,
    yield_every: Option<Duration>,
    shared: Arc<Shared>,
    shutdown_deadline: Option<Instant>,
    unwritten: Vec<NewEntry>,
}

/// How often an idle writer whose database fails tries it again.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How long the writer sleeps between looks at the queue while it gathers a batch.
const NAP: Duration = Duration::from_millis(5);

impl Worker {
    fn run(mut self, rx: &Receiver<Option<NewEntry>>) -> Vec<NewEntry> {
        let mut batch = Vec::with_capacity(self.batch_max);
        let mut stopping = false;
        while !stopping {
            // Block for the first entry of a batch; while the database fails, look at it again
            // now and then, so that it counts as written again (and the spill is loaded back)
            // without waiting for the next entry.
            let first = if self.shared.db_failing.load(Ordering::Relaxed) {
                match rx.recv_timeout(PROBE_EVERY) {
                    Ok(first) => first,
                    Err(RecvTimeoutError::Timeout) => {
                        self.probe();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => None,
                }
            } else {
                rx.recv().ok().flatten()
            };
            match first {
                Some(entry) => self.push(&mut batch, entry),
                None => break,
            }
            // Gather the rest of the batch by draining and napping rather than by waiting on
            // the channel: a thread blocked in `recv` is woken by every send, which under load
            // costs a context switch per entry; napping costs one wake-up per nap.
            let deadline = Instant::now() + self.batch_window;
            'gather: while batch.len() < self.batch_max {
                loop {
                    match rx.try_recv() {
                        Ok(Some(entry)) => {
                            self.push(&mut batch, entry);
                            if batch.len() >= self.batch_max {
                                break 'gather;
                            }
                        }
                        Ok(None) | Err(TryRecvError::Disconnected) => {
                            stopping = true;
                            break 'gather;
                        }
                        Err(TryRecvError::Empty) => break,
                    }
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left.min(NAP));
            }
            self.flush(&mut batch);
        }

        // Shutdown: `closed` is set, so no new send starts. Drain what is
        // queued plus whatever senders already past their check deliver.
        self.start_shutdown_clock();
        loop {
            while batch.len() < self.batch_max {
                match rx.try_recv() {
                    Ok(Some(entry)) => self.push(&mut batch, entry),
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.flush(&mut batch);
                continue;
            }
            if self.shared.in_flight.load(Ordering::SeqCst) == 0 {
                // Every sender is done; one last look for its entry.
                match rx.try_recv() {
                    Ok(Some(entry)) => self.push(&mut batch, entry),
                    Ok(None) => {}
                    Err(_) => break,
                }
            } else if let Ok(Some(entry)) = rx.recv_timeout(Duration::from_millis(1)) {
                self.push(&mut batch, entry);
            }
        }
        self.unwritten
    }

    /// Writes to the failing database without an entry (see [`LogStore::probe_write`]); if it
    /// takes the write, it counts as written again.
    fn probe(&self) {
        match self.reopen_if_replaced().and_then(|()| self.store.probe_write()) {
            Ok(()) => self.shared.db_failing.store(false, Ordering::Relaxed),
            Err(error) => self.shared.set_error(&error),
        }
    }

    /// Shutdown bounds how long a failing batch is retried.
    fn start_shutdown_clock(&mut self) {
        if self.shutdown_deadline.is_none() {
            self.shutdown_deadline = Some(Instant::now() + self.shutdown_timeout);
        }
    }

    fn push(&self, batch: &mut Vec<NewEntry>, entry: NewEntry) {
        self.shared.queued.fetch_sub(1, Ordering::Relaxed);
        self.shared.queued_bytes.fetch_sub(entry.body_bytes(), Ordering::Relaxed);
        batch.push(entry);
    }

    /// [`LogStore::reopen_if_replaced`], counted in [`WriterStats::reopens`].
    fn reopen_if_replaced(&self) -> Result<(), StoreError> {
        if self.store.reopen_if_replaced()? {
            self.shared.reopens.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn write_db(&self, batch: &[NewEntry]) -> Result<(), StoreError> {
        self.reopen_if_replaced()?;
        // A full batch means the writer is behind: it keeps its core until it catches up.
        match self.yield_every.filter(|_| batch.len() < self.batch_max) {
            Some(every) => {
                let mut pace = YieldEvery::new(every);
                self.store.insert_batch_with(batch, || {
                    pace.tick();
                })
            }
            None => self.store.insert_batch(batch),
        }
    }

    /// Stores the batch in the database or the spill, retrying until one
    /// takes it (or, during shutdown, until the deadline), and empties it.
    fn flush(&mut self, batch: &mut Vec<NewEntry>) {
        let n = batch.len() as u64;
        let mut backoff = Duration::from_millis(10);
        loop {
            match self.write_db(batch) {
                Ok(()) => {
                    self.shared.written.fetch_add(n, Ordering::Relaxed);
                    self.shared.db_failing.store(false, Ordering::Relaxed);
                    self.shared.stalled.store(false, Ordering::Relaxed);
                    batch.clear();
                    return;
                }
                Err(error) => {
                    self.shared.failed_batches.fetch_add(1, Ordering::Relaxed);
                    self.shared.db_failing.store(true, Ordering::Relaxed);
                    self.shared.set_error(&error);
                }
            }
            match self.spill.spill(batch) {
                Ok(()) => {
                    self.shared.spilled.fetch_add(n, Ordering::Relaxed);
                    self.shared.stalled.store(false, Ordering::Relaxed);
                    batch.clear();
                    return;
                }
                Err(error) => {
                    self.shared.spill_failures.fetch_add(1, Ordering::Relaxed);
                    self.shared.set_error(&error);
                    self.shared.stalled.store(true, Ordering::Relaxed);
                }
            }
            let mut pause = backoff;
            if self.shared.closed.load(Ordering::SeqCst) {
                self.start_shutdown_clock();
            }
            if let Some(deadline) = self.shutdown_deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    self.unwritten.append(batch);
                    return;
                }
                pause = pause.min(left);
            }
            std::thread::sleep(pause);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
