//! Crash consistency: a writer killed with SIGKILL leaves a sound database.
//!
//! The test binary runs this same test as the child, in a directory holding the marker
//! file; there the test writes until it is killed instead of checking.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use uniproxy_logstore::{JsonLinesSpill, LogStore, StoreOptions, Writer, WriterOptions};

const MARKER: &str = "crash-child.marker";

/// The child's half: write until killed.
fn write_until_killed() {
    let store = LogStore::open(Path::new("crash.db"), StoreOptions::default()).unwrap();
    let writer = Writer::spawn(
        store,
        Box::new(JsonLinesSpill::new("spill.jsonl")),
        WriterOptions::default(),
    )
    .unwrap();
    let handle = writer.handle();
    let start = Instant::now();
    let mut i = 0;
    // Write until killed (the time limit only guards against an orphan).
    while start.elapsed() < Duration::from_secs(60) {
        let mut e = common::entry(i);
        e.response = "z".repeat(4_000);
        handle.send(e).unwrap();
        i += 1;
    }
}

#[test]
fn killed_writer_leaves_a_sound_database() {
    if Path::new(MARKER).exists() {
        write_until_killed();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(MARKER), b"").unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["killed_writer_leaves_a_sound_database", "--exact", "--test-threads=1"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let db = dir.path().join("crash.db");
    let writing = common::wait_until(Duration::from_secs(30), || {
        db.exists()
            && LogStore::open(&db, StoreOptions { read_only: true, ..StoreOptions::default() })
                .and_then(|s| s.count())
                .is_ok_and(|n| n > 2_000)
    });
    assert!(writing, "the child never wrote");
    // Let it get well into its next transactions, then kill it mid-write.
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap(); // SIGKILL on Unix.
    let status = child.wait().unwrap();
    assert!(!status.success());

    let store = LogStore::open(&db, StoreOptions::default()).unwrap();
    assert!(store.integrity_check().unwrap());
    let rows = store.count().unwrap();
    assert!(rows > 2_000, "{rows}");
    // Transactions are whole: every metadata row has its bodies row.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let bodies: i64 = conn.query_row("SELECT count(*) FROM bodies", [], |r| r.get(0)).unwrap();
    assert_eq!(bodies as u64, rows);
    // And the committed rows are a prefix of what was sent: no holes.
    let max: i64 = conn.query_row("SELECT max(id) FROM requests", [], |r| r.get(0)).unwrap();
    assert_eq!(max as u64, rows);
    assert!(!dir.path().join("spill.jsonl").exists(), "nothing should have needed the spill");
}
