//! Where the writer puts entries the database cannot take.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::store::file_id;
use crate::{LogStore, NewEntry, StoreError};

/// A fallback destination for entries the database could not store.
///
/// The [`Writer`](crate::Writer) calls it with a whole failed batch. Return
/// `Ok` only once the entries are durable; on `Err` the writer retries the
/// same batch later (database first, then the spill again), so an
/// implementation must not keep a partial write it reported as failed, or
/// accept duplicates.
pub trait Spill: Send {
    /// Stores `entries` somewhere other than the database.
    ///
    /// # Errors
    ///
    /// Any I/O failure; the writer keeps the batch and retries.
    fn spill(&mut self, entries: &[NewEntry]) -> std::io::Result<()>;
}

/// Appends each entry as one JSON line (the serde form of [`NewEntry`]) to a
/// file, and syncs it before returning.
///
/// The file is opened for each batch, so a log rotator may move it away at
/// any time; [`take`](Self::take) moves it aside and [`replay`] stores its
/// entries back, skipping those the store holds already. Each append holds the
/// file's lock. Note that request headers are redacted before they are written
/// here too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonLinesSpill {
    path: PathBuf,
}

impl JsonLinesSpill {
    /// A spill that appends to `path`, creating it and its folder when they are missing (the
    /// folder may have been removed since the proxy started: the spill is the last resort).
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file this spill appends to.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file to append, holding its lock, and makes sure it is still the file at the
    /// path: [`take`](Self::take) may have moved it aside between the open and the lock, and
    /// [`replay`], which locks a file it took before reading it, would then miss this
    /// append. Then the path is opened again (a new file).
    fn open_locked(&self) -> io::Result<File> {
        let open = || OpenOptions::new().create(true).append(true).open(&self.path);
        // A take moves the file once; a path replaced at every try is not ours to fight.
        for _ in 0..8 {
            let file = open()?;
            // Best effort: on a file system without locks the spill still works, and only
            // the narrow race above is open.
            file.lock().ok();
            if still_at(&file, &self.path)? {
                return Ok(file);
            }
        }
        open()
    }

    /// Moves the spill file to a name of its own beside it (`FILE.importing-MS`, with `-2`,
    /// `-3`… when that is taken), so that a writer spilling meanwhile starts a new file and
    /// the moved one can be [`replay`]ed alone. Never over another file: a hard link, which
    /// fails on a taken name, then the unlink. `Ok(None)` when there is no file.
    ///
    /// A writer that opened the file before the move finishes its batch in the moved file,
    /// under the file's lock, which [`replay`] waits for; one that opened it but locks it
    /// only after the move sees that and opens the path again.
    ///
    /// # Errors
    ///
    /// [`StoreError::SpillFile`] when the file cannot be moved.
    pub fn take(&self, now_ms: i64) -> Result<Option<PathBuf>, StoreError> {
        for n in 1..=1_000u32 {
            let mut aside = self.path.as_os_str().to_owned();
            aside.push(format!("{TAKEN}{now_ms}"));
            if n > 1 {
                aside.push(format!("-{n}"));
            }
            let aside = PathBuf::from(aside);
            match std::fs::hard_link(&self.path, &aside) {
                Ok(()) => {
                    std::fs::remove_file(&self.path)
                        .map_err(spill_file("move aside", &self.path))?;
                    return Ok(Some(aside));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(spill_file("move aside", &self.path)(e)),
            }
        }
        Err(spill_file("move aside", &self.path)(io::ErrorKind::AlreadyExists.into()))
    }

    /// The files [`take`](Self::take) moved aside that are still there, oldest first: a
    /// replay that failed, was cut short, or found lines it could not read leaves its file.
    ///
    /// # Errors
    ///
    /// [`StoreError::SpillFile`] when the folder cannot be read (a missing folder has no
    /// files).
    pub fn taken(&self) -> Result<Vec<PathBuf>, StoreError> {
        let Some(name) = self.path.file_name() else { return Ok(Vec::new()) };
        let mut prefix = name.to_owned();
        prefix.push(TAKEN);
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(spill_file("list", dir)(e)),
        };
        let mut taken = Vec::new();
        for entry in entries {
            let entry = entry.map_err(spill_file("list", dir))?;
            if entry.file_name().as_encoded_bytes().starts_with(prefix.as_encoded_bytes()) {
                taken.push(entry.path());
            }
        }
        // The names differ only in the time (13 digits for a few centuries) and the `-N`.
        taken.sort();
        Ok(taken)
    }
}

/// What [`JsonLinesSpill::take`] puts between the spill file's name and the time.
const TAKEN: &str = ".importing-";

/// What a [`replay`] did with a spill file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayReport {
    /// Entries stored.
    pub stored: u64,
    /// Entries skipped because they were stored already (the file was replayed before).
    pub already_stored: u64,
    /// Lines that are not entries (the torn end of an interrupted write), each one passed
    /// to the caller.
    pub unreadable: u64,
}

/// Entries stored per transaction by [`replay`].
const REPLAY_BATCH: usize = 500;

/// Stores the entries of a spill file (one [`NewEntry`] a line, as [`JsonLinesSpill`] writes
/// them) that `store` does not hold yet, 500 to a transaction, with
/// [`LogStore::insert_missing`]: replaying a file twice, or two callers replaying it at once,
/// stores each entry once. The file's lock is taken first: a writer that opened it before
/// [`JsonLinesSpill::take`] moved it finishes its append, and one that locks it later finds
/// it moved and writes to a new file. A line that is not an entry is counted and passed to
/// `unreadable` with its number (from 1) and the parse error; the rest is stored. The file is
/// left where it is: remove it once the report says every line was read.
///
/// # Errors
///
/// [`StoreError::SpillFile`] when the file cannot be read; the errors of
/// [`LogStore::insert_missing`]. What was stored before the error stays stored.
pub fn replay(
    store: &LogStore,
    path: &Path,
    mut unreadable: impl FnMut(usize, &serde_json::Error),
) -> Result<ReplayReport, StoreError> {
    let read = || spill_file("read", path);
    let file = File::open(path).map_err(read())?;
    // Best effort, as in the spill: without locks, only a writer's narrow race is open.
    file.lock().ok();
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut report = ReplayReport::default();
    let mut batch = Vec::with_capacity(REPLAY_BATCH);
    let mut text = Vec::new();
    let mut line = 0;
    loop {
        text.clear();
        // The last line may lack its line break: a hand-made file, or a write cut off.
        if reader.read_until(b'\n', &mut text).map_err(read())? == 0 {
            break;
        }
        line += 1;
        if text.trim_ascii().is_empty() {
            continue;
        }
        match serde_json::from_slice::<NewEntry>(&text) {
            Ok(entry) => batch.push(entry),
            Err(e) => {
                report.unreadable += 1;
                unreadable(line, &e);
            }
        }
        if batch.len() == REPLAY_BATCH {
            store_batch(store, &mut batch, &mut report)?;
        }
    }
    store_batch(store, &mut batch, &mut report)?;
    Ok(report)
}

/// Stores `batch`'s entries that the store lacks, counts them in `report`, and empties it.
fn store_batch(
    store: &LogStore,
    batch: &mut Vec<NewEntry>,
    report: &mut ReplayReport,
) -> Result<(), StoreError> {
    let stored = store.insert_missing(batch)?;
    report.stored += stored as u64;
    report.already_stored += (batch.len() - stored) as u64;
    batch.clear();
    Ok(())
}

/// Whether `file` is the file at `path` (not moved aside or removed since it was opened).
fn still_at(file: &File, path: &Path) -> io::Result<bool> {
    let open = file_id(&file.metadata()?);
    match std::fs::metadata(path) {
        Ok(at) => Ok(file_id(&at) == open),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The error of `action` failing on the spill file `path`, for `map_err`.
fn spill_file(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::SpillFile { action, path, source }
}

impl Spill for JsonLinesSpill {
    fn spill(&mut self, entries: &[NewEntry]) -> std::io::Result<()> {
        // Serialize everything first, so a failure leaves no half batch behind.
        let mut buf = Vec::with_capacity(entries.len() * 1024);
        for entry in entries {
            let mut redacted;
            let entry = match entry.request_headers.redacted() {
                // An empty dump is spilled as it is (the store writes it redacted).
                std::borrow::Cow::Owned(text) if !entry.request_headers.is_empty() => {
                    redacted = entry.clone();
                    redacted.request_headers = text.into();
                    &redacted
                }
                _ => entry,
            };
            serde_json::to_writer(&mut buf, entry)?;
            buf.push(b'\n');
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = self.open_locked()?;
        let start = file.metadata()?.len();
        let written = file.write_all(&buf).and_then(|()| file.sync_data());
        if written.is_err() {
            // Cut a partial batch back off (disk full), so the retry does not
            // leave a broken line or duplicates; the retry writes it again.
            let _ = file.set_len(start);
        }
        written
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::HeadersBuilder;

    #[test]
    fn spilled_headers_are_redacted_as_the_store_would_write_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = JsonLinesSpill::new(dir.path().join("spill.jsonl"));
        let dumped = NewEntry {
            request_headers: r#"{"Authorization":"Bearer sk-live-1","accept":"*/*"}"#.into(),
            ..NewEntry::default()
        };
        let mut b = HeadersBuilder::with_capacity(64);
        b.header("x-api-key", b"k-2");
        b.header("accept", b"*/*");
        let built = NewEntry { request_headers: b.finish(), ..NewEntry::default() };
        let empty = NewEntry::default();
        spill.spill(&[dumped, built, empty]).unwrap();

        let text = std::fs::read_to_string(spill.path()).unwrap();
        assert!(!text.contains("sk-live-1") && !text.contains("k-2"), "{text}");
        let headers: Vec<String> = text
            .lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                v["request_headers"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(
            headers,
            [
                r#"{"Authorization":"[redacted]","accept":"*/*"}"#,
                r#"{"x-api-key":"[redacted]","accept":"*/*"}"#,
                "",
            ]
        );
    }

    fn entry(id: &str, received_ms: i64) -> NewEntry {
        NewEntry {
            request_id: id.into(),
            received_ms,
            finished_ms: received_ms + 5,
            status: 200,
            client_request: format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"{id}"}}]}}"#
            ),
            ..NewEntry::default()
        }
    }

    fn stored_ids(store: &LogStore) -> Vec<String> {
        let page = store.list(&crate::Query::default()).unwrap();
        let mut ids: Vec<String> = page.items.into_iter().map(|e| e.request_id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn a_taken_file_is_replayed_once_and_its_torn_line_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            LogStore::open(&dir.path().join("log.db"), crate::StoreOptions::default()).unwrap();
        let mut spill = JsonLinesSpill::new(dir.path().join("proxy.log.spill.jsonl"));
        assert_eq!(spill.take(7).unwrap(), None, "no file, nothing taken");
        // "b" is stored already (the writer's batch went through after all).
        store.insert(&entry("b", 1_000)).unwrap();
        spill.spill(&[entry("a", 1_000), entry("b", 1_000)]).unwrap();
        spill.spill(&[entry("c", 2_000)]).unwrap();
        let mut text = std::fs::read(spill.path()).unwrap();
        text.extend_from_slice(b"\n{\"request_id\":\"d\",\"recei");
        std::fs::write(spill.path(), &text).unwrap();

        let taken = spill.take(7).unwrap().unwrap();
        assert_eq!(taken, dir.path().join("proxy.log.spill.jsonl.importing-7"));
        assert!(!spill.path().exists(), "moved, not copied");
        // The writer spills on into a new file; taking it at the same millisecond finds a name.
        spill.spill(&[entry("e", 3_000)]).unwrap();
        let second = spill.take(7).unwrap().unwrap();
        assert_eq!(second, dir.path().join("proxy.log.spill.jsonl.importing-7-2"));
        assert_eq!(spill.taken().unwrap(), [taken.clone(), second.clone()]);

        let mut bad = Vec::new();
        let report = replay(&store, &taken, |line, e| bad.push((line, e.is_eof()))).unwrap();
        assert_eq!(report, ReplayReport { stored: 2, already_stored: 1, unreadable: 1 });
        assert_eq!(bad, [(5, true)], "line 4 is blank; 5 is cut off");
        assert_eq!(stored_ids(&store), ["a", "b", "c"]);
        assert!(taken.exists(), "the caller removes it");

        let again = replay(&store, &taken, |_, _| {}).unwrap();
        assert_eq!(again, ReplayReport { stored: 0, already_stored: 3, unreadable: 1 });
        assert_eq!(replay(&store, &second, |_, _| {}).unwrap().stored, 1);
        assert_eq!(stored_ids(&store), ["a", "b", "c", "e"]);
    }

    /// A writer that opened the spill file before it was taken aside, and still appends to
    /// it: the replay waits for its lock, and stores what it wrote.
    #[test]
    fn a_replay_waits_for_a_writer_still_appending_to_the_file_it_took() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open_in_memory().unwrap();
        let mut spill = JsonLinesSpill::new(dir.path().join("spill.jsonl"));
        spill.spill(&[entry("a", 1)]).unwrap();
        let mut writing = OpenOptions::new().append(true).open(spill.path()).unwrap();
        writing.lock().unwrap();
        let taken = spill.take(9).unwrap().unwrap();
        let replaying = {
            let (store, taken) = (store.clone(), taken.clone());
            std::thread::spawn(move || replay(&store, &taken, |_, _| {}).unwrap())
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!replaying.is_finished(), "the replay waits for the writer's lock");
        let mut line = serde_json::to_vec(&entry("b", 2)).unwrap();
        line.push(b'\n');
        writing.write_all(&line).unwrap();
        drop(writing);
        let report = replaying.join().unwrap();
        assert_eq!(report, ReplayReport { stored: 2, already_stored: 0, unreadable: 0 });
        assert_eq!(stored_ids(&store), ["a", "b"]);
    }

    /// The spill file's lock, held here, and a writer spilling `entry` on a thread of its own,
    /// given 50 ms to open the file and wait for the lock.
    fn spill_behind_a_lock(
        spill: &JsonLinesSpill,
        entry: NewEntry,
    ) -> (File, std::thread::JoinHandle<()>) {
        let holder = File::open(spill.path()).unwrap();
        holder.lock().unwrap();
        let writer = {
            let mut spill = spill.clone();
            std::thread::spawn(move || spill.spill(&[entry]).unwrap())
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        (holder, writer)
    }

    /// A writer that opened the spill file but takes its lock only after the file was taken
    /// aside (a replay holding the lock meanwhile) writes to a new file at the path.
    #[test]
    fn a_writer_that_finds_its_file_taken_writes_to_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = JsonLinesSpill::new(dir.path().join("spill.jsonl"));
        spill.spill(&[entry("a", 1)]).unwrap();
        let (holder, writer) = spill_behind_a_lock(&spill, entry("b", 2));
        assert!(!writer.is_finished(), "the writer waits for the lock");
        let taken = spill.take(9).unwrap().unwrap();
        drop(holder);
        writer.join().unwrap();
        let ids = |path: &Path| -> Vec<String> {
            std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<NewEntry>(l).unwrap().request_id)
                .collect()
        };
        assert_eq!(ids(&taken), ["a"], "nothing written after the take");
        assert_eq!(ids(spill.path()), ["b"]);

        // The same, with a new file at the path by the time the writer has the lock: it
        // appends there.
        let (holder, writer) = spill_behind_a_lock(&spill, entry("d", 4));
        let taken = spill.take(10).unwrap().unwrap();
        spill.clone().spill(&[entry("c", 3)]).unwrap();
        drop(holder);
        writer.join().unwrap();
        assert_eq!(ids(&taken), ["b"]);
        assert_eq!(ids(spill.path()), ["c", "d"]);
    }

    #[test]
    fn a_last_line_without_its_line_break_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open_in_memory().unwrap();
        let path = dir.path().join("hand-made.jsonl");
        let lines = [entry("a", 1), entry("b", 2)].map(|e| serde_json::to_string(&e).unwrap());
        std::fs::write(&path, lines.join("\n")).unwrap();
        let report = replay(&store, &path, |line, e| panic!("line {line}: {e}")).unwrap();
        assert_eq!(report, ReplayReport { stored: 2, already_stored: 0, unreadable: 0 });
        let missing = replay(&store, &dir.path().join("nope"), |_, _| {}).unwrap_err();
        assert!(matches!(missing, StoreError::SpillFile { action: "read", .. }), "{missing:?}");
    }

    #[test]
    fn a_missing_folder_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs").join("proxy.log.spill.jsonl");
        let mut spill = JsonLinesSpill::new(&path);
        spill.spill(&[NewEntry { request_id: "a".into(), ..NewEntry::default() }]).unwrap();
        std::fs::remove_dir_all(dir.path().join("logs")).unwrap();
        spill.spill(&[NewEntry { request_id: "b".into(), ..NewEntry::default() }]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(r#""request_id":"b""#), "{text}");
    }
}
