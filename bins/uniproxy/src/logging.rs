//! slog set-up: JSON lines to LOG_FILE_PATH (rotated by size, N files kept) and a
//! human-readable line to stderr. Both drains run on slog-async's thread, so no log write
//! ever blocks a runtime worker. The per-request lines bypass slog (see `reqlog`) but go to
//! the same buffered outputs, a whole line at a time.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use slog::{Drain, Logger, o};

/// A file that starts over when it reaches `max_bytes`, keeping `keep` old files as
/// `NAME.1` (newest) … `NAME.keep`. Found deleted or moved away (an operator freeing space,
/// an outside log rotator), it is opened again at its path.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    /// The open file's device and inode (Unix), to tell whether the path still names it.
    id: Option<(u64, u64)>,
    /// When the path was last checked.
    checked: Instant,
    written: u64,
    max_bytes: u64,
    keep: u32,
}

/// Opens `path` to append, creating it and its folder.
fn create(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// How often a [`RotatingFile`]'s path is checked for a file that is not the one it writes.
const CHECK_PATH_EVERY: Duration = Duration::from_secs(1);

/// A file's device and inode; `None` off Unix, where only a missing path is noticed.
fn file_id(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

impl RotatingFile {
    /// Opens (appending) or creates the file and its folder.
    ///
    /// # Errors
    /// When the folder cannot be created or the file cannot be opened.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<Self> {
        let file = create(path)?;
        let meta = file.metadata()?;
        Ok(RotatingFile {
            path: path.to_owned(),
            file,
            id: file_id(&meta),
            checked: Instant::now(),
            written: meta.len(),
            max_bytes,
            keep,
        })
    }

    /// Opens the file at its path again when the path no longer names the file being
    /// written: deleted (its space is not given back while it is open, and nobody sees the
    /// lines) or moved away. Checked at most every [`CHECK_PATH_EVERY`].
    fn reopen_if_gone(&mut self) -> io::Result<()> {
        if self.checked.elapsed() < CHECK_PATH_EVERY {
            return Ok(());
        }
        self.checked = Instant::now();
        let same = match std::fs::metadata(&self.path) {
            Ok(meta) => {
                let same = self.id.is_none() || file_id(&meta) == self.id;
                // Emptied in place (logrotate's `copytruncate`): its size starts over.
                if same && meta.len() < self.written {
                    self.written = meta.len();
                }
                same
            }
            Err(_) => false,
        };
        if !same {
            self.file.flush()?;
            self.reopen()?;
        }
        Ok(())
    }

    /// Opens the file at its path (again), and takes its identity and length.
    fn reopen(&mut self) -> io::Result<()> {
        self.file = create(&self.path)?;
        let meta = self.file.metadata()?;
        self.id = file_id(&meta);
        self.written = meta.len();
        Ok(())
    }

    /// Cuts the last `n` bytes written off the file (a write that failed part-way).
    fn take_back(&mut self, n: usize) {
        if n > 0
            && let Ok(meta) = self.file.metadata()
        {
            let _ = self.file.set_len(meta.len().saturating_sub(n as u64));
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let name = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        let old = self.rotated()?;
        // Past `keep`, the proxy's files are the run of numbers a larger LOG_FILE_KEEP left
        // before a restart (`keep + 1`, `keep + 2`, … with none missing): lowering it cleans
        // up at the next rotation. A number past that run is not a file rotation made (an
        // operator's copy under a date, `NAME.20261128`), and is left alone.
        let mut last = self.keep;
        for &n in old.iter().rev().filter(|&&n| n > self.keep) {
            if last.checked_add(1) != Some(n) {
                break;
            }
            last = n;
        }
        // Highest first. The files at or past `keep` go, those a larger LOG_FILE_KEEP left
        // included.
        for n in old.into_iter().filter(|&n| n <= last) {
            if n >= self.keep {
                std::fs::remove_file(name(n)).or_else(ignore_missing)?;
            } else {
                std::fs::rename(name(n), name(n + 1)).or_else(ignore_missing)?;
            }
        }
        if self.keep == 0 {
            std::fs::remove_file(&self.path).or_else(ignore_missing)?;
        } else {
            std::fs::rename(&self.path, name(1))?;
        }
        self.reopen()
    }

    /// The numbers `n` of the old files there are, `NAME.n` with `n ≥ 1`, highest first.
    /// Read from the folder once: trying each number up to `keep` cost a system call per
    /// number, and LOG_FILE_KEEP may be as large as 4294967295, which kept the log's thread
    /// renaming missing files for hours at every rotation.
    fn rotated(&self) -> io::Result<Vec<u32>> {
        let Some(file_name) = self.path.file_name() else { return Ok(Vec::new()) };
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
        let mut prefix = file_name.as_encoded_bytes().to_vec();
        prefix.push(b'.');
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir.unwrap_or(Path::new(".")))? {
            let name = entry?.file_name();
            let Some(digits) = name.as_encoded_bytes().strip_prefix(prefix.as_slice()) else {
                continue;
            };
            // Exactly as `rotate` writes the number: `NAME.01` is not `NAME.1`.
            let n = std::str::from_utf8(digits).ok().and_then(|d| d.parse::<u32>().ok());
            if let Some(n) = n.filter(|&n| n >= 1)
                && n.to_string().as_bytes() == digits
            {
                found.push(n);
            }
        }
        found.sort_unstable_by(|a, b| b.cmp(a));
        Ok(found)
    }
}

/// Writes all of `buf` to `out`; on an error, gives it with how many bytes went out first.
fn write_whole(out: &mut impl Write, buf: &[u8]) -> Result<(), (io::Error, usize)> {
    let mut done = 0;
    while done < buf.len() {
        match out.write(&buf[done..]) {
            Ok(0) => return Err((io::ErrorKind::WriteZero.into(), done)),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((e, done)),
        }
    }
    Ok(())
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound { Ok(()) } else { Err(e) }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.reopen_if_gone()?;
        if self.max_bytes > 0
            && self.written > 0
            && self.written + buf.len() as u64 > self.max_bytes
        {
            self.rotate()?;
        }
        // All or nothing: a write cut short (a full disk) is taken back, so the file holds
        // whole lines only, and the caller (a `BufWriter`) keeps the bytes to write again.
        match write_whole(&mut self.file, buf) {
            Ok(()) => {
                self.written += buf.len() as u64;
                Ok(buf.len())
            }
            Err((e, done)) => {
                self.take_back(done);
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// How long a log line may wait in a buffer before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A buffer this full is written at once.
const BUFFER_BYTES: usize = 64 << 10;

/// A buffered writer shared with a flusher thread: a busy proxy writes its log in large
/// blocks (one `write` for many lines instead of one per line), and a quiet one still shows
/// each line within `FLUSH_EVERY`.
pub struct Buffered<W: Write + Send + 'static>(Arc<Mutex<io::BufWriter<W>>>);

// Not derived: a derive would ask for `W: Clone`, and the clones share one `W`.
impl<W: Write + Send + 'static> Clone for Buffered<W> {
    fn clone(&self) -> Self {
        Buffered(self.0.clone())
    }
}

impl<W: Write + Send + 'static> Buffered<W> {
    /// Wraps `inner` and starts its flusher thread, which ends when the last clone is dropped.
    pub fn new(inner: W, name: &str) -> Self {
        let shared = Arc::new(Mutex::new(io::BufWriter::with_capacity(BUFFER_BYTES, inner)));
        let weak: Weak<Mutex<io::BufWriter<W>>> = Arc::downgrade(&shared);
        // If the thread cannot start, lines are still written when the buffer fills and at exit.
        let _ = std::thread::Builder::new().name(format!("log-flush-{name}")).spawn(move || {
            loop {
                std::thread::sleep(FLUSH_EVERY);
                let Some(w) = weak.upgrade() else { return };
                if let Ok(mut w) = w.lock() {
                    let _ = w.flush();
                }
            }
        });
        Buffered(shared)
    }

    /// Writes what the buffer holds now ([`Write::flush`] leaves that to the flusher thread).
    ///
    /// # Errors
    /// When the output refuses the write.
    pub fn flush_now(&self) -> io::Result<()> {
        match self.0.lock() {
            Ok(mut w) => w.flush(),
            Err(p) => p.into_inner().flush(),
        }
    }
}

impl<W: Write + Send + 'static> Write for Buffered<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.lock() {
            Ok(mut w) => w.write(buf),
            Err(p) => p.into_inner().write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self.0.lock() {
            Ok(mut w) => w.write_all(buf),
            Err(p) => p.into_inner().write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        // slog-json and slog-term flush after every record; the flusher thread does it instead.
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for Buffered<W> {
    fn drop(&mut self) {
        if Arc::strong_count(&self.0) == 1
            && let Ok(mut w) = self.0.lock()
        {
            let _ = w.flush();
        }
    }
}

/// The logger and the outputs behind it.
///
/// The per-request lines do not go through slog: the recorder's thread formats them (bodies
/// embedded as JSON, not escaped into strings) and writes them, whole lines at a time, into
/// the same buffered outputs the logger uses.
pub struct Logs {
    /// The logger for everything else.
    pub logger: Logger,
    /// The JSON log file, when there is one.
    pub json: Option<Buffered<RotatingFile>>,
    /// Standard error, for the one-line request summaries.
    pub stderr: Option<Buffered<io::Stderr>>,
}

/// A logger without outputs of its own (tests): request lines are not written.
impl From<Logger> for Logs {
    fn from(logger: Logger) -> Self {
        Logs { logger, json: None, stderr: None }
    }
}

/// The root logger: JSON to `file` (when given), text to stderr.
///
/// Both outputs run on one slog-async thread (one channel send per record), each record is
/// formatted into a small buffer and handed to its output in one piece, and the outputs are
/// [`Buffered`].
pub fn root(file: Option<RotatingFile>) -> Logs {
    let stderr_out = Buffered::new(io::stderr(), "stderr");
    let json_out = file.map(|file| Buffered::new(file, "file"));
    let stderr = io::BufWriter::new(stderr_out.clone());
    // A failing log write (a full disk) must not panic the logging thread: results are
    // ignored rather than fused.
    let term =
        slog_term::CompactFormat::new(slog_term::PlainDecorator::new(stderr)).build().ignore_res();
    let drain: Box<dyn Drain<Ok = (), Err = slog::Never> + Send> = match json_out.clone() {
        Some(file) => {
            let json = slog_json::Json::new(io::BufWriter::new(file))
                .add_default_keys()
                .set_flush(true)
                .build()
                .ignore_res();
            Box::new(slog::Duplicate::new(json, term).ignore_res())
        }
        None => Box::new(term),
    };
    // Blocking on overflow: a log line is never dropped; the proxy slows down instead when
    // the disk cannot keep up. Request lines do not come this way (see `reqlog`), so the
    // queue carries only the occasional operational line.
    let drain = slog_async::Async::new(drain)
        .chan_size(1024)
        .overflow_strategy(slog_async::OverflowStrategy::Block)
        .build()
        .fuse();
    Logs { logger: Logger::root(drain, o!()), json: json_out, stderr: Some(stderr_out) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"))
    }

    fn numbered(path: &Path, n: u32) -> PathBuf {
        PathBuf::from(format!("{}.{n}", path.display()))
    }

    #[test]
    fn a_full_file_becomes_dot_one_and_the_oldest_kept_goes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs").join("proxy.log");
        let mut file = RotatingFile::open(&path, 20, 2).unwrap();
        // Lines of 9 bytes: two fit in 20, the third starts a file.
        for n in 1..=7 {
            file.write_all(format!("line-{n:03}\n").as_bytes()).unwrap();
        }
        file.flush().unwrap();
        assert_eq!(read(&path), "line-007\n");
        assert_eq!(read(&numbered(&path, 1)), "line-005\nline-006\n");
        assert_eq!(read(&numbered(&path, 2)), "line-003\nline-004\n");
        assert!(!numbered(&path, 3).exists(), "two kept");
        // A line longer than the limit goes whole into a file of its own.
        file.write_all(b"a line over twenty bytes\n").unwrap();
        file.write_all(b"line-008\n").unwrap();
        assert_eq!(read(&numbered(&path, 1)), "a line over twenty bytes\n");
        assert_eq!(read(&numbered(&path, 2)), "line-007\n");
        assert_eq!(read(&path), "line-008\n");
    }

    /// Takes `room` bytes, then says the disk is full.
    struct FillsUp {
        room: usize,
        taken: Vec<u8>,
    }

    impl Write for FillsUp {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "No space left on device"));
            }
            let n = buf.len().min(self.room).min(5);
            self.room -= n;
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_write_the_disk_cuts_short_is_taken_back_whole() {
        // The disk fills part-way through a batch of lines: what went out is counted…
        let mut disk = FillsUp { room: 12, taken: Vec::new() };
        let (e, done) = write_whole(&mut disk, b"line-1\nline-2\n").unwrap_err();
        assert_eq!((e.kind(), done), (io::ErrorKind::StorageFull, 12));
        let mut roomy = FillsUp { room: 100, taken: Vec::new() };
        assert!(write_whole(&mut roomy, b"line-1\nline-2\n").is_ok(), "short writes go on");
        assert_eq!(roomy.taken, b"line-1\nline-2\n");
        // …and cut off the file again, which keeps its whole lines only.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.log");
        let mut file = RotatingFile::open(&path, 0, 0).unwrap();
        file.write_all(b"line-0\n").unwrap();
        file.file.write_all(b"line-1\nline").unwrap();
        file.take_back(11);
        file.write_all(b"line-3\n").unwrap();
        assert_eq!(read(&path), "line-0\nline-3\n");
    }

    #[test]
    fn a_file_emptied_in_place_is_not_rotated_early() {
        // logrotate's `copytruncate` empties the file under the proxy.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.log");
        let mut file = RotatingFile::open(&path, 30, 2).unwrap();
        file.write_all(b"line-1 of twenty\n").unwrap();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
        file.checked = Instant::now().checked_sub(CHECK_PATH_EVERY).unwrap();
        file.write_all(b"line-2 of twenty\n").unwrap();
        assert_eq!(read(&path), "line-2 of twenty\n");
        assert!(!numbered(&path, 1).exists(), "nothing to rotate yet");
    }

    /// LOG_FILE_KEEP takes any u32: rotating once tried every number up to it, a system call
    /// each, so at 4294967295 the log's thread spent hours renaming missing files at every
    /// rotation while the JSON log got nothing. Only the files there are are moved now.
    #[test]
    fn keeping_very_many_rotates_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.log");
        std::fs::write(numbered(&path, 1), "the newest old file\n").unwrap();
        std::fs::write(numbered(&path, 3), "an older one\n").unwrap();
        std::fs::write(dir.path().join("proxy.log.01"), "not one of ours\n").unwrap();
        let mut file = RotatingFile::open(&path, 12, u32::MAX).unwrap();
        let (done, rotated) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in ["first line\n", "second line\n", "third line\n"] {
                file.write_all(line.as_bytes()).unwrap();
            }
            done.send(()).unwrap();
        });
        rotated.recv_timeout(Duration::from_secs(30)).expect("two rotations within 30 s");
        assert_eq!(read(&path), "third line\n");
        assert_eq!(read(&numbered(&path, 1)), "second line\n");
        assert_eq!(read(&numbered(&path, 2)), "first line\n");
        assert_eq!(read(&numbered(&path, 3)), "the newest old file\n");
        assert_eq!(read(&numbered(&path, 5)), "an older one\n");
        assert_eq!(read(&dir.path().join("proxy.log.01")), "not one of ours\n");
    }

    #[test]
    fn old_files_past_a_lowered_keep_go_at_the_next_rotation() {
        // LOG_FILE_KEEP was 5, and is 2 since a restart.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.log");
        for n in 1..=5 {
            std::fs::write(numbered(&path, n), format!("old {n}\n")).unwrap();
        }
        let mut file = RotatingFile::open(&path, 12, 2).unwrap();
        for line in ["first line\n", "second line\n"] {
            file.write_all(line.as_bytes()).unwrap();
        }
        assert_eq!(read(&path), "second line\n");
        assert_eq!(read(&numbered(&path, 1)), "first line\n");
        assert_eq!(read(&numbered(&path, 2)), "old 1\n");
        for n in 3..=6 {
            assert!(!numbered(&path, n).exists(), "{n} is past LOG_FILE_KEEP");
        }
        // And with none kept, none are left.
        let mut file = RotatingFile::open(&path, 12, 0).unwrap();
        file.write_all(b"third line\n").unwrap();
        assert_eq!(read(&path), "third line\n");
        assert!(!numbered(&path, 1).exists() && !numbered(&path, 2).exists());
    }

    /// Only the run of numbers a larger LOG_FILE_KEEP left goes: a copy an operator put
    /// beside the log under a date or a timestamp (`proxy.log.20261128`) is not the proxy's,
    /// and is not removed for being numbered past LOG_FILE_KEEP.
    #[test]
    fn a_copy_numbered_by_date_is_not_taken_for_an_old_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.log");
        for n in [1, 3, 4] {
            std::fs::write(numbered(&path, n), format!("old {n}\n")).unwrap();
        }
        for copy in [20261128, 1_764_288_000] {
            std::fs::write(numbered(&path, copy), "the operator's copy\n").unwrap();
        }
        let mut file = RotatingFile::open(&path, 12, 2).unwrap();
        for line in ["first line\n", "second line\n"] {
            file.write_all(line.as_bytes()).unwrap();
        }
        assert_eq!(read(&numbered(&path, 1)), "first line\n");
        assert_eq!(read(&numbered(&path, 2)), "old 1\n");
        // 3 and 4 are what a LOG_FILE_KEEP of 4 left (2 was removed by hand).
        for n in 3..=5 {
            assert!(!numbered(&path, n).exists(), "{n} is past LOG_FILE_KEEP");
        }
        for copy in [20261128, 1_764_288_000] {
            assert_eq!(read(&numbered(&path, copy)), "the operator's copy\n", "{copy}");
        }
    }

    #[test]
    fn keeping_none_starts_the_file_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.log");
        let mut file = RotatingFile::open(&path, 12, 0).unwrap();
        for line in ["first line\n", "second line\n", "third line\n"] {
            file.write_all(line.as_bytes()).unwrap();
        }
        assert_eq!(read(&path), "third line\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no old files");
    }

    #[test]
    fn a_reopened_file_counts_what_it_holds_and_a_gap_in_the_old_files_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.log");
        std::fs::write(&path, "from before\n").unwrap();
        std::fs::write(numbered(&path, 2), "the oldest\n").unwrap();
        // `.1` is missing (removed by hand): the chain moves what there is.
        let mut file = RotatingFile::open(&path, 15, 3).unwrap();
        file.write_all(b"after restart\n").unwrap();
        assert_eq!(read(&path), "after restart\n");
        assert_eq!(read(&numbered(&path, 1)), "from before\n");
        assert_eq!(read(&numbered(&path, 3)), "the oldest\n");
        assert!(!numbered(&path, 2).exists());
    }

    #[test]
    fn a_file_deleted_or_moved_away_is_opened_again_at_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.log");
        let mut file = RotatingFile::open(&path, 0, 0).unwrap();
        file.write_all(b"line-1\n").unwrap();
        // Deleted to free space: within the check interval lines still go to the old file…
        std::fs::remove_file(&path).unwrap();
        file.write_all(b"line-2\n").unwrap();
        assert!(!path.exists());
        // …and after it, to a new one at the path.
        file.checked -= CHECK_PATH_EVERY;
        file.write_all(b"line-3\n").unwrap();
        assert_eq!(read(&path), "line-3\n");
        // Moved away by an outside rotator: the moved file keeps what it had.
        let moved = dir.path().join("proxy.log.old");
        std::fs::rename(&path, &moved).unwrap();
        file.checked -= CHECK_PATH_EVERY;
        file.write_all(b"line-4\n").unwrap();
        assert_eq!(read(&moved), "line-3\n");
        assert_eq!(read(&path), "line-4\n");
        // Left alone, the same file goes on.
        file.checked -= CHECK_PATH_EVERY;
        file.write_all(b"line-5\n").unwrap();
        assert_eq!(read(&path), "line-4\nline-5\n");
        // Its folder removed too: both are made again.
        let nested = dir.path().join("logs").join("proxy.log");
        let mut file = RotatingFile::open(&nested, 0, 0).unwrap();
        std::fs::remove_dir_all(dir.path().join("logs")).unwrap();
        file.checked -= CHECK_PATH_EVERY;
        file.write_all(b"line-6\n").unwrap();
        assert_eq!(read(&nested), "line-6\n");
    }
}
