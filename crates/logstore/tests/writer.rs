//! `Writer` behaviour: concurrency, batching, and every fault path ending in
//! "nothing lost".
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::io::BufRead;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{entry, wait_until};
use rusqlite::Connection;
use uniproxy_logstore::{
    JsonLinesSpill, LogStore, NewEntry, Query, Spill, StoreOptions, TrySendError, Writer,
    WriterOptions, YieldEvery,
};

const WAIT: Duration = Duration::from_secs(20);

fn options() -> WriterOptions {
    WriterOptions {
        queue_capacity: 256,
        batch_max: 64,
        batch_window: Duration::from_millis(5),
        ..Default::default()
    }
}

/// Reads the request ids out of a JSON-lines spill file.
fn spilled_ids(path: &Path) -> Vec<String> {
    let Ok(file) = std::fs::File::open(path) else { return Vec::new() };
    std::io::BufReader::new(file)
        .lines()
        .map(|line| serde_json::from_str::<NewEntry>(&line.unwrap()).unwrap().request_id)
        .collect()
}

/// Every request id stored, read through keyset paging.
fn stored_ids(store: &LogStore) -> Vec<String> {
    let mut ids = Vec::new();
    let mut query = Query { limit: 1000, ..Query::default() };
    loop {
        let page = store.list(&query).unwrap();
        ids.extend(page.items.into_iter().map(|e| e.request_id));
        match page.next_before_id {
            Some(cursor) => query.before_id = Some(cursor),
            None => return ids,
        }
    }
}

#[test]
fn concurrent_senders_and_readers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(&dir.path().join("log.db"), StoreOptions::default()).unwrap();
    let spill_path = dir.path().join("spill.jsonl");
    let writer =
        Writer::spawn(store.clone(), Box::new(JsonLinesSpill::new(&spill_path)), options())
            .unwrap();

    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 1_500;
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let handle = writer.handle();
            scope.spawn(move || {
                for i in 0..PER_THREAD {
                    let mut e = entry(t * PER_THREAD + i);
                    // Half through the non-blocking path, retried when full.
                    if i % 2 == 0 {
                        while let Err(err) = handle.try_send(e) {
                            match err {
                                TrySendError::Full(back) => e = *back,
                                TrySendError::Closed(_) => panic!("closed early"),
                            }
                            std::thread::yield_now();
                        }
                    } else {
                        handle.send(e).unwrap();
                    }
                }
            });
        }
        // Readers at the same time (WAL lets them run beside the writer).
        for _ in 0..2 {
            let store = store.clone();
            scope.spawn(move || {
                let mut last = 0;
                for _ in 0..50 {
                    let n = store.count().unwrap();
                    assert!(n >= last, "count went backwards");
                    last = n;
                    store.list(&Query { limit: 20, ..Query::default() }).unwrap();
                    store.stats(&uniproxy_logstore::StatsQuery::default()).unwrap();
                }
            });
        }
    });
    let handle = writer.handle();
    let report = writer.shutdown().unwrap();
    let total = THREADS * PER_THREAD;
    assert_eq!(report.stats.written, total, "{:?}", report.stats);
    assert_eq!(report.stats.spilled, 0);
    assert_eq!(report.stats.queued, 0);
    assert!(report.stats.db_ok);
    assert!(report.unwritten.is_empty());

    let ids: HashSet<_> = stored_ids(&store).into_iter().collect();
    assert_eq!(ids.len() as u64, total);
    assert_eq!(store.count().unwrap(), total);

    // After shutdown the entry comes back instead of vanishing.
    let back = handle.try_send(entry(1)).unwrap_err();
    assert!(matches!(back, TrySendError::Closed(_)));
    assert_eq!(back.into_entry().request_id, "chatcmpl-000001");
    assert!(handle.send(entry(2)).is_err());
}

#[test]
fn batches_wait_at_most_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(&dir.path().join("log.db"), StoreOptions::default()).unwrap();
    let options =
        WriterOptions { batch_window: Duration::from_millis(20), ..WriterOptions::default() };
    let writer =
        Writer::spawn(store.clone(), Box::new(JsonLinesSpill::new(dir.path().join("s"))), options)
            .unwrap();
    writer.handle().send(entry(1)).unwrap();
    // One lone entry is written after the window, without waiting for more.
    assert!(wait_until(Duration::from_secs(5), || store.count().unwrap() == 1));
    drop(writer); // Drop shuts down too.
}

/// Sends `n` entries numbered from `start`, one by one.
fn send_range(writer: &Writer, start: u64, n: u64) {
    let handle = writer.handle();
    for i in start..start + n {
        handle.send(entry(i)).unwrap();
    }
}

/// Checks the books: every sent id is in the database or the spill, once.
fn assert_accounted(sent: u64, db_ids: &[String], spill_ids: &[String]) {
    let mut all: Vec<_> = db_ids.iter().chain(spill_ids).cloned().collect();
    all.sort();
    let len = all.len();
    all.dedup();
    assert_eq!(len, all.len(), "an entry was stored twice");
    assert_eq!(all.len() as u64, sent, "entries missing");
}

/// A store that gives up on a lock after 50 ms, and a writer spilling to `spill.jsonl` beside
/// it: what a test that locks the database from outside needs.
struct Lockable {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: LogStore,
    spill_path: std::path::PathBuf,
    writer: Writer,
}

fn lockable() -> Lockable {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let store_options =
        StoreOptions { busy_timeout: Duration::from_millis(50), ..StoreOptions::default() };
    let store = LogStore::open(&path, store_options).unwrap();
    let spill_path = dir.path().join("spill.jsonl");
    let writer =
        Writer::spawn(store.clone(), Box::new(JsonLinesSpill::new(&spill_path)), options())
            .unwrap();
    Lockable { _dir: dir, path, store, spill_path, writer }
}

#[test]
fn locked_database_spills_then_recovers() {
    let Lockable { _dir, path, store, spill_path, writer } = lockable();

    send_range(&writer, 0, 100);
    assert!(wait_until(WAIT, || writer.stats().written == 100));

    // Another process holds the write lock far past the busy timeout.
    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    send_range(&writer, 100, 100);
    assert!(wait_until(WAIT, || writer.stats().spilled == 100), "{:?}", writer.stats());
    let stats = writer.stats();
    assert!(!stats.db_ok);
    assert!(stats.failed_batches > 0);
    assert!(stats.last_error.as_deref().unwrap().contains("locked"), "{stats:?}");

    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    send_range(&writer, 200, 100);
    assert!(wait_until(WAIT, || writer.stats().written == 200), "{:?}", writer.stats());
    let report = writer.shutdown().unwrap();
    assert!(report.stats.db_ok, "a good batch clears the flag");
    assert_eq!(report.stats.written + report.stats.spilled, 300);

    let spilled = spilled_ids(&spill_path);
    assert_eq!(spilled.len() as u64, report.stats.spilled);
    assert_accounted(300, &stored_ids(&store), &spilled);
}

#[test]
fn an_idle_writer_finds_its_database_writable_again_without_a_new_entry() {
    let Lockable { _dir, path, store, writer, .. } = lockable();
    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    send_range(&writer, 0, 10);
    assert!(wait_until(WAIT, || writer.stats().spilled == 10), "{:?}", writer.stats());
    assert!(!writer.stats().db_ok);

    // The lock goes; nothing more is sent, and the database counts as writable again (which
    // is what starts the spill's replay in the server).
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    assert!(wait_until(WAIT, || writer.stats().db_ok), "{:?}", writer.stats());
    let report = writer.shutdown().unwrap();
    assert_eq!(report.stats.written, 0);
    assert_eq!(store.count().unwrap(), 0, "the probe stores nothing");
    assert!(store.integrity_check().unwrap());
}

#[test]
fn read_only_database_spills_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    LogStore::open(&path, StoreOptions::default()).unwrap();
    // Tests run as root, where chmod does not stop writes: open read-only instead.
    let ro =
        LogStore::open(&path, StoreOptions { read_only: true, ..StoreOptions::default() }).unwrap();
    let spill_path = dir.path().join("spill.jsonl");
    let writer =
        Writer::spawn(ro.clone(), Box::new(JsonLinesSpill::new(&spill_path)), options()).unwrap();
    send_range(&writer, 0, 300);
    let report = writer.shutdown().unwrap();
    assert_eq!(report.stats.written, 0);
    assert_eq!(report.stats.spilled, 300);
    assert!(!report.stats.db_ok);
    assert!(report.stats.last_error.unwrap().contains("readonly"));
    assert_eq!(ro.count().unwrap(), 0);
    assert_accounted(300, &[], &spilled_ids(&spill_path));
}

#[test]
fn full_disk_spills_the_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    // Room for a few hundred KB only: `max_page_count`, as a full disk would.
    let store_options = StoreOptions { max_size_bytes: Some(400_000), ..StoreOptions::default() };
    let store = LogStore::open(&path, store_options).unwrap();
    let spill_path = dir.path().join("spill.jsonl");
    let writer =
        Writer::spawn(store.clone(), Box::new(JsonLinesSpill::new(&spill_path)), options())
            .unwrap();
    let handle = writer.handle();
    for i in 0..200 {
        let mut e = entry(i);
        e.response = "y".repeat(10_000);
        handle.send(e).unwrap();
    }
    let report = writer.shutdown().unwrap();
    let stats = &report.stats;
    assert!(stats.written > 0, "{stats:?}");
    assert!(stats.spilled > 0, "{stats:?}");
    assert_eq!(stats.written + stats.spilled, 200);
    assert!(stats.last_error.as_deref().unwrap().contains("full"), "{stats:?}");
    assert_eq!(store.count().unwrap(), stats.written);
    assert!(store.integrity_check().unwrap());
    assert_accounted(200, &stored_ids(&store), &spilled_ids(&spill_path));
}

#[test]
fn deleted_database_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let store = LogStore::open(&path, StoreOptions::default()).unwrap();
    let spill_path = dir.path().join("spill.jsonl");
    let writer =
        Writer::spawn(store.clone(), Box::new(JsonLinesSpill::new(&spill_path)), options())
            .unwrap();
    send_range(&writer, 0, 100);
    assert!(wait_until(WAIT, || writer.stats().written == 100));

    // Only the main file: the stale -wal and -shm are the dangerous case.
    std::fs::remove_file(&path).unwrap();
    send_range(&writer, 100, 150);
    let report = writer.shutdown().unwrap();
    assert_eq!(report.stats.reopens, 1, "{:?}", report.stats);
    assert_eq!(report.stats.written + report.stats.spilled, 250);

    // The new file holds what came after the deletion; every clone of the
    // store now reads it.
    let fresh = LogStore::open(&path, StoreOptions::default()).unwrap();
    assert!(fresh.integrity_check().unwrap());
    let after = stored_ids(&fresh);
    assert_eq!(store.count().unwrap(), fresh.count().unwrap());
    let sent_after: Vec<_> = (100..250).map(|i| entry(i).request_id).collect();
    let mut got = after.clone();
    got.extend(spilled_ids(&spill_path));
    got.sort();
    assert_eq!(got, sent_after);
}

#[test]
fn a_database_moved_away_keeps_every_entry_and_the_path_gets_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let store = LogStore::open(&path, StoreOptions::default()).unwrap();
    let spill_path = dir.path().join("spill.jsonl");
    let writer =
        Writer::spawn(store.clone(), Box::new(JsonLinesSpill::new(&spill_path)), options())
            .unwrap();
    send_range(&writer, 0, 100);
    assert!(wait_until(WAIT, || writer.stats().written == 100));

    // An operator archives the log; its last entries are still in the WAL beside the path.
    let archive = dir.path().join("archive.db");
    std::fs::rename(&path, &archive).unwrap();
    send_range(&writer, 100, 30);
    let report = writer.shutdown().unwrap();
    assert_eq!(report.stats.reopens, 1, "{:?}", report.stats);
    assert_eq!(report.stats.written, 130, "{:?}", report.stats);
    drop(store);

    let moved = LogStore::open(&archive, StoreOptions::default()).unwrap();
    assert!(moved.integrity_check().unwrap());
    let mut ids = stored_ids(&moved);
    ids.sort();
    assert_eq!(ids, (0..100).map(|i| entry(i).request_id).collect::<Vec<_>>());
    let fresh = LogStore::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(fresh.count().unwrap(), 30);
}

#[test]
fn the_wal_of_another_store_on_a_new_file_at_the_path_is_left_alone() {
    // Two proxies on one DATABASE_URL, and the file removed with its WAL: the first to write
    // again makes a new file, whose WAL the second must not remove when it notices.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let first = LogStore::open(&path, StoreOptions::default()).unwrap();
    let writer = Writer::spawn(
        first.clone(),
        Box::new(JsonLinesSpill::new(dir.path().join("spill.jsonl"))),
        options(),
    )
    .unwrap();
    send_range(&writer, 0, 10);
    assert!(wait_until(WAIT, || writer.stats().written == 10));
    for suffix in ["", "-wal", "-shm"] {
        std::fs::remove_file(dir.path().join(format!("log.db{suffix}"))).unwrap();
    }
    let second = LogStore::open(&path, StoreOptions::default()).unwrap();
    for i in 10..15 {
        second.insert(&entry(i)).unwrap();
    }
    assert!(dir.path().join("log.db-wal").exists(), "the second store's entries are in its WAL");

    send_range(&writer, 15, 5);
    let report = writer.shutdown().unwrap();
    assert_eq!(report.stats.reopens, 1, "{:?}", report.stats);
    assert_eq!(report.stats.written, 15, "{:?}", report.stats);
    assert_eq!(second.count().unwrap(), 10, "the second store sees both stores' entries");
    drop((first, second));
    let after = LogStore::open(&path, StoreOptions::default()).unwrap();
    assert!(after.integrity_check().unwrap());
    let mut ids = stored_ids(&after);
    ids.sort();
    assert_eq!(ids, (10..20).map(|i| entry(i).request_id).collect::<Vec<_>>());
}

/// A spill that fails while `failures_left` (shared, so a test can change it) is above zero,
/// counting it down, then keeps what it gets.
struct FlakySpill {
    failures_left: Arc<AtomicUsize>,
    kept: Arc<Mutex<Vec<NewEntry>>>,
}

impl FlakySpill {
    fn failing(times: usize) -> Self {
        FlakySpill { failures_left: Arc::new(AtomicUsize::new(times)), kept: Arc::default() }
    }
}

impl Spill for FlakySpill {
    fn spill(&mut self, entries: &[NewEntry]) -> std::io::Result<()> {
        let left = self.failures_left.load(Ordering::SeqCst);
        if left > 0 {
            self.failures_left.store(left.saturating_sub(1), Ordering::SeqCst);
            return Err(std::io::Error::other("No space left on device"));
        }
        self.kept.lock().unwrap().extend_from_slice(entries);
        Ok(())
    }
}

/// A store on an existing database, opened read-only: every write fails (tests run as root,
/// where chmod does not stop writes).
fn read_only_store(dir: &Path) -> LogStore {
    let path = dir.join("log.db");
    LogStore::open(&path, StoreOptions::default()).unwrap();
    LogStore::open(&path, StoreOptions { read_only: true, ..StoreOptions::default() }).unwrap()
}

#[test]
fn failing_spill_is_retried_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let spill = FlakySpill::failing(3);
    let kept = Arc::clone(&spill.kept);
    let writer = Writer::spawn(read_only_store(dir.path()), Box::new(spill), options()).unwrap();
    send_range(&writer, 0, 50);
    let report = writer.shutdown().unwrap();
    assert_eq!(report.stats.spill_failures, 3);
    assert_eq!(report.stats.spilled, 50);
    assert!(report.unwritten.is_empty());
    assert_eq!(kept.lock().unwrap().len(), 50);
}

/// A writer that can write nowhere (a read-only database, a failing spill), batches of one,
/// its queue `queue_capacity` long, once its first entry has stalled it; and the spill, whose
/// `failures_left` a test can set to zero (the disk has room again).
fn stalled_writer(
    dir: &Path,
    queue_capacity: usize,
    shutdown_timeout: Duration,
) -> (Writer, FlakySpill) {
    let spill = FlakySpill::failing(usize::MAX);
    let shared = FlakySpill {
        failures_left: Arc::clone(&spill.failures_left),
        kept: Arc::clone(&spill.kept),
    };
    let options = WriterOptions { queue_capacity, batch_max: 1, shutdown_timeout, ..options() };
    let writer = Writer::spawn(read_only_store(dir), Box::new(spill), options).unwrap();
    writer.handle().try_send(entry(0)).unwrap();
    assert!(wait_until(WAIT, || writer.stats().stalled), "{:?}", writer.stats());
    (writer, shared)
}

#[test]
fn a_writer_that_can_write_nowhere_says_it_is_stuck_once_its_queue_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, spill) = stalled_writer(dir.path(), 8, options().shutdown_timeout);
    let (failures_left, kept) = (spill.failures_left, spill.kept);
    let handle = writer.handle();

    // The first entry failed in the database and the spill: stalled, but with room left.
    assert!(!handle.is_stuck(), "the queue still has room");
    // The writer retries its batch and takes nothing new: eight more fill the queue.
    for i in 1..=8 {
        handle.try_send(entry(i)).unwrap();
    }
    assert!(matches!(handle.try_send(entry(9)), Err(TrySendError::Full(_))));
    assert!(handle.is_stuck(), "{:?}", writer.stats());
    assert!(!writer.stats().db_ok);

    // Room on the disk again: the spill takes everything, and the writer is not stuck.
    failures_left.store(0, Ordering::SeqCst);
    assert!(wait_until(WAIT, || writer.stats().spilled == 9), "{:?}", writer.stats());
    assert!(!writer.stats().stalled);
    assert!(!handle.is_stuck());
    let report = writer.shutdown().unwrap();
    assert!(report.unwritten.is_empty());
    assert_eq!(kept.lock().unwrap().len(), 9);
}

#[test]
fn close_lets_a_sender_waiting_on_a_stuck_writer_go() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, _spill) = stalled_writer(dir.path(), 2, Duration::from_millis(100));
    assert_eq!(writer.shutdown_timeout(), Duration::from_millis(100));
    let handle = writer.handle();
    handle.try_send(entry(1)).unwrap();
    handle.try_send(entry(2)).unwrap();
    // A blocking sender (a thread that may wait) now waits for room that never comes.
    let waiting = {
        let handle = handle.clone();
        std::thread::spawn(move || handle.send(entry(3)))
    };
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiting.is_finished(), "it waits for room");
    writer.close();
    assert!(wait_until(WAIT, || waiting.is_finished()), "the sender still waits");
    // It returns: its entry given back, or taken once the writer, closed, handed the batch in
    // hand back and made room.
    let given_back = waiting.join().unwrap().err().map(|e| e.0.request_id);
    assert!(matches!(handle.try_send(entry(4)), Err(TrySendError::Closed(_))));
    let report = writer.shutdown().unwrap();
    let mut ids: Vec<String> = report.unwritten.into_iter().map(|e| e.request_id).collect();
    ids.extend(given_back);
    ids.sort();
    assert_eq!(ids, [0, 1, 2, 3].map(|i| entry(i).request_id), "every entry comes back once");
}

#[test]
fn shutdown_hands_back_what_nobody_took() {
    let dir = tempfile::tempdir().unwrap();
    let spill = FlakySpill::failing(usize::MAX);
    let options = WriterOptions { shutdown_timeout: Duration::from_millis(200), ..options() };
    let writer = Writer::spawn(read_only_store(dir.path()), Box::new(spill), options).unwrap();
    send_range(&writer, 0, 10);
    let report = writer.shutdown().unwrap();
    assert_eq!(report.unwritten.len(), 10);
    assert_eq!(report.stats.written + report.stats.spilled, 0);
    assert!(report.stats.spill_failures > 0);
}

#[test]
fn the_queue_is_bounded_in_bytes_not_just_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let store_options =
        StoreOptions { busy_timeout: Duration::from_secs(10), ..StoreOptions::default() };
    let store = LogStore::open(&path, store_options).unwrap();
    // Batches of one: the writer goes to the database (and stalls there) with the first entry
    // at once. With a batch window it would keep taking entries for a few milliseconds, and
    // on a busy machine the sends below fell inside that window (CI saw 11 accepted).
    let options = WriterOptions { queue_bytes: 40_000, batch_max: 1, ..options() };
    let writer = Writer::spawn(
        store.clone(),
        Box::new(JsonLinesSpill::new(dir.path().join("spill.jsonl"))),
        options,
    )
    .unwrap();
    let handle = writer.handle();
    let big = |i: u64| {
        let mut e = entry(i);
        e.response = "x".repeat(10_000);
        e
    };

    // The writer stalls on the lock with the first entry; the rest wait in the queue.
    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    handle.try_send(big(0)).unwrap();
    assert!(wait_until(WAIT, || writer.stats().queued == 0), "the writer took the first entry");
    let mut accepted = 1;
    let refused = loop {
        match handle.try_send(big(accepted)) {
            Ok(()) => accepted += 1,
            Err(TrySendError::Full(e)) => break e,
            Err(e) => panic!("unexpected: {e}"),
        }
        assert!(accepted < 100, "a 40 kB budget must refuse long before 100 entries of 10 kB");
    };
    // About four 10 kB entries fit a 40 kB budget; the count bound (256) was never near.
    assert!((4..=6).contains(&accepted), "accepted {accepted}");

    // Nothing is lost: the refused entry goes in through the blocking send once there is room.
    blocker.execute_batch("COMMIT").unwrap();
    drop(blocker);
    handle.send(*refused).unwrap();
    let sent = accepted + 1;
    assert!(wait_until(WAIT, || writer.stats().written == sent), "{:?}", writer.stats());
    writer.shutdown().unwrap();
    assert_eq!(store.count().unwrap(), sent);
}

#[test]
fn yield_every_yields_once_the_interval_has_passed() {
    let mut never = YieldEvery::new(Duration::from_secs(3600));
    assert!(!never.tick());
    assert!(!never.tick());
    let mut always = YieldEvery::new(Duration::ZERO);
    assert!(always.tick());
    assert!(always.tick());
    // Long enough that no stall of a loaded test machine between two calls reaches it.
    let mut pace = YieldEvery::new(Duration::from_millis(500));
    assert!(!pace.tick());
    std::thread::sleep(Duration::from_millis(510));
    assert!(pace.tick());
    // The interval starts again from the yield.
    assert!(!pace.tick());
}

#[test]
fn a_writer_that_yields_between_entries_stores_every_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(&dir.path().join("log.db"), StoreOptions::default()).unwrap();
    // Batches below `batch_max` take the yielding path, here after every entry.
    let options = WriterOptions {
        batch_max: 10_000,
        batch_window: Duration::from_millis(50),
        yield_every: Some(Duration::ZERO),
        ..options()
    };
    let spill = dir.path().join("spill.jsonl");
    let writer =
        Writer::spawn(store.clone(), Box::new(JsonLinesSpill::new(&spill)), options).unwrap();
    send_range(&writer, 0, 300);
    let report = writer.shutdown().unwrap();
    assert_eq!(report.stats.written, 300);
    assert!(report.unwritten.is_empty());
    assert_accounted(300, &stored_ids(&store), &spilled_ids(&spill));
    assert!(spilled_ids(&spill).is_empty());
}
