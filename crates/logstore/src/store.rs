//! [`LogStore`]: the pool, opening, inserting and reading single entries.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use r2d2::{Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{CachedStatement, Connection, OpenFlags, Row, TransactionBehavior, params};

use crate::copies;
use crate::error::sql;
use crate::schema::{self, SCHEMA_VERSION};
use crate::{Entry, EntrySummary, Headers, NewEntry, StoreError, Usage};

/// How a [`LogStore`] opens its database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// How long a statement waits for another connection's lock before it
    /// fails with "database is locked".
    pub busy_timeout: Duration,
    /// The most connections the pool keeps open (readers and the writer share them).
    pub pool_size: u32,
    /// Open read-only: no migration, no writes (an inspection tool, or a
    /// mounted snapshot). The schema must already be at [`SCHEMA_VERSION`].
    pub read_only: bool,
    /// A hard cap on the database file size, enforced by SQLite
    /// (`PRAGMA max_page_count`). Writes beyond it fail with "database or
    /// disk is full", which the [`Writer`](crate::Writer) spills. `None` means
    /// no cap; use [`LogStore::prune`] for ordinary retention.
    pub max_size_bytes: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(5),
            pool_size: 4,
            read_only: false,
            max_size_bytes: None,
        }
    }
}

/// Identifies a file (the one a pool was opened on, the spill file an append holds), to
/// notice when its path names another; off Unix, only a missing path is noticed.
#[cfg(unix)]
pub(crate) type FileId = (u64, u64);
#[cfg(not(unix))]
pub(crate) type FileId = ();

#[cfg(unix)]
pub(crate) fn file_id(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}
#[cfg(not(unix))]
pub(crate) fn file_id(_meta: &std::fs::Metadata) -> FileId {}

struct Current {
    pool: Pool<SqliteConnectionManager>,
    file: Option<FileId>,
    /// The `-wal` and `-shm` files the pool's connections opened beside `file`, as they were
    /// once it was open: what [`LogStore::reopen_if_replaced`] may remove is only these.
    sides: [Option<FileId>; 2],
}

/// The files SQLite keeps beside a database in WAL mode.
const SIDE_SUFFIXES: [&str; 2] = ["-wal", "-shm"];

/// `path` with `suffix` appended (`log.db` → `log.db-wal`).
fn side_path(path: &Path, suffix: &str) -> PathBuf {
    let mut side = path.as_os_str().to_owned();
    side.push(suffix);
    side.into()
}

/// The ids of the `-wal` and `-shm` files beside `path`, where they exist.
fn side_ids(path: &Path) -> [Option<FileId>; 2] {
    SIDE_SUFFIXES.map(|suffix| std::fs::metadata(side_path(path, suffix)).ok().map(|m| file_id(&m)))
}

struct Inner {
    /// `None` for an in-memory store.
    path: Option<PathBuf>,
    options: StoreOptions,
    current: RwLock<Current>,
}

/// The request log: a pool of SQLite connections in WAL mode.
///
/// Cheap to clone; every clone shares the pool. All methods block, so async
/// code calls them through `spawn_blocking` or sends writes to a [`Writer`](crate::Writer).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.inner.path)
            .field("options", &self.inner.options)
            .finish()
    }
}

pub(crate) type Conn = PooledConnection<SqliteConnectionManager>;

impl LogStore {
    /// Opens (creating if needed) the database at `path`, creating its parent
    /// directories and migrating the schema to [`SCHEMA_VERSION`].
    ///
    /// # Errors
    ///
    /// [`StoreError::CreateDir`] if the directory cannot be created,
    /// [`StoreError::Open`] if the file cannot be opened or set up,
    /// [`StoreError::Migration`] or [`StoreError::SchemaVersion`] if the schema
    /// cannot be brought to this build's version, and [`StoreError::Pool`] if
    /// the connection pool cannot be built.
    pub fn open(path: &Path, options: StoreOptions) -> Result<LogStore, StoreError> {
        let current = open_file(path, &options)?;
        Ok(LogStore {
            inner: Arc::new(Inner {
                path: Some(path.to_path_buf()),
                options,
                current: RwLock::new(current),
            }),
        })
    }

    /// The tables of the database at `path` that uniproxy did not create (see
    /// [`StoreError::Foreign`]): empty when there is no file, or an empty one, or a uniproxy
    /// log database. The file is opened read-only and never created.
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] if the file exists but cannot be read as a database.
    pub fn foreign_tables(path: &Path) -> Result<Vec<String>, StoreError> {
        if !path.is_file() {
            return Ok(Vec::new());
        }
        let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(open_err)?;
        schema::foreign_tables(&conn).map_err(open_err)
    }

    /// Opens a private in-memory database (for tests and tools). It uses one
    /// connection, so readers and writers take turns.
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] or [`StoreError::Migration`] if SQLite cannot set it up.
    pub fn open_in_memory() -> Result<LogStore, StoreError> {
        let options = StoreOptions { pool_size: 1, ..StoreOptions::default() };
        let init_options = options.clone();
        let manager = SqliteConnectionManager::memory()
            .with_init(move |conn| init_connection(conn, &init_options));
        let pool = Pool::builder()
            .max_size(1)
            .test_on_check_out(false)
            .build(manager)
            .map_err(StoreError::Pool)?;
        let mut conn = pool.get().map_err(StoreError::Pool)?;
        schema::migrate(&mut conn)?;
        drop(conn);
        Ok(LogStore {
            inner: Arc::new(Inner {
                path: None,
                options,
                current: RwLock::new(Current { pool, file: None, sides: [None, None] }),
            }),
        })
    }

    /// The database file, or `None` for an in-memory store.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The options the store was opened with.
    #[must_use]
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    pub(crate) fn conn(&self) -> Result<Conn, StoreError> {
        let pool = self.inner.current.read().unwrap_or_else(PoisonError::into_inner).pool.clone();
        pool.get().map_err(StoreError::Pool)
    }

    /// Checks that the path still names the file the pool opened, and if it
    /// does not (deleted, moved away, or replaced by another file), opens the
    /// path again, creating and migrating a fresh database if it is missing,
    /// and switches every clone of this store to the new pool. Connections
    /// already checked out finish on the old file.
    ///
    /// SQLite keeps writing happily into a file that was unlinked, so without
    /// this check the log would silently vanish. Returns `true` if it reopened.
    /// In-memory stores always return `false`.
    ///
    /// Before it switches, the old file gets what its WAL holds (a checkpoint
    /// through the old pool, which still has both open): SQLite skips that
    /// checkpoint when it closes a file that was moved, so a database moved
    /// away (`mv log.db archive.db`) would lose its last entries. Then the
    /// `-wal` and `-shm` at the path are removed if they are the old file's
    /// (SQLite would replay an old WAL into the new file), and left alone if
    /// they are another file's: another process may be using the new file.
    /// An old WAL that could not be checkpointed is kept beside, renamed
    /// `NAME-wal.orphaned-MS`, rather than lost.
    ///
    /// # Errors
    ///
    /// The errors of [`LogStore::open`] when reopening fails; the store then
    /// keeps its old pool.
    pub fn reopen_if_replaced(&self) -> Result<bool, StoreError> {
        let Some(path) = &self.inner.path else { return Ok(false) };
        let now = std::fs::metadata(path).ok().map(|meta| file_id(&meta));
        let (opened, sides, old_pool) = {
            let current = self.inner.current.read().unwrap_or_else(PoisonError::into_inner);
            (current.file, current.sides, current.pool.clone())
        };
        if now.is_some() && now == opened {
            return Ok(false);
        }
        if !self.inner.options.read_only {
            let checkpointed = old_pool.get().ok().is_some_and(|conn| {
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get::<_, i64>(0))
                    .is_ok_and(|busy| busy == 0)
            });
            for ((suffix, now), ours) in SIDE_SUFFIXES.iter().zip(side_ids(path)).zip(sides) {
                if now.is_none() || now != ours {
                    continue;
                }
                let side = side_path(path, suffix);
                let gone = if *suffix == "-wal" && !checkpointed {
                    let ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis());
                    std::fs::rename(&side, side_path(path, &format!("-wal.orphaned-{ms}")))
                } else {
                    std::fs::remove_file(&side)
                };
                match gone {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(StoreError::Io { path: side, source }),
                }
            }
        }
        drop(old_pool);
        let fresh = open_file(path, &self.inner.options)?;
        *self.inner.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(true)
    }

    /// Writes to the database without storing anything, to learn whether it takes writes
    /// again (after a full disk or a lock held elsewhere): a committed transaction that sets
    /// the schema version to the one the file has.
    ///
    /// # Errors
    ///
    /// As [`LogStore::insert`].
    pub fn probe_write(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx =
            conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql("probe"))?;
        let version: i64 =
            tx.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(sql("probe"))?;
        tx.execute_batch(&format!("PRAGMA user_version = {version}")).map_err(sql("probe"))?;
        tx.commit().map_err(sql("probe"))
    }

    /// Stores one entry and returns its row id.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`] if the write fails (locked past the busy
    /// timeout, disk full, read-only), [`StoreError::Pool`] if no connection
    /// is available.
    pub fn insert(&self, entry: &NewEntry) -> Result<i64, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("insert"))?;
        let id = {
            let mut statements = InsertStatements::prepare(&tx)?;
            statements.insert(entry)?
        };
        tx.commit().map_err(sql("insert"))?;
        Ok(id)
    }

    /// Stores many entries in one transaction: all of them or none.
    ///
    /// # Errors
    ///
    /// As [`LogStore::insert`]; on error nothing of the batch is stored.
    pub fn insert_batch(&self, entries: &[NewEntry]) -> Result<(), StoreError> {
        self.insert_batch_with(entries, || {})
    }

    /// Stores the entries whose request id is not stored yet, in one transaction, and
    /// returns how many it stored. An entry counts as stored when an entry with its request
    /// id was received within the batch's time span (the earliest to the latest
    /// `received_ms` of `entries`): the check reads that span of the time index, not the
    /// whole table, and it runs inside the transaction, so two callers storing the same
    /// entries at once store each of them once. Entries of one batch that share a request
    /// id are all stored.
    ///
    /// # Errors
    ///
    /// As [`LogStore::insert`]; on error nothing of the batch is stored.
    pub fn insert_missing(&self, entries: &[NewEntry]) -> Result<usize, StoreError> {
        let span = entries.iter().map(|e| e.received_ms);
        let (Some(from), Some(to)) = (span.clone().min(), span.max()) else { return Ok(0) };
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("insert"))?;
        let mut stored = std::collections::HashSet::new();
        {
            let mut select = tx
                .prepare_cached(
                    "SELECT request_id FROM requests WHERE received_ms BETWEEN ?1 AND ?2",
                )
                .map_err(sql("insert"))?;
            let mut rows = select.query(params![from, to]).map_err(sql("insert"))?;
            while let Some(row) = rows.next().map_err(sql("insert"))? {
                stored.insert(row.get::<_, String>(0).map_err(sql("insert"))?);
            }
        }
        let mut inserted = 0;
        {
            let mut statements = InsertStatements::prepare(&tx)?;
            for entry in entries.iter().filter(|e| !stored.contains(&e.request_id)) {
                statements.insert(entry)?;
                inserted += 1;
            }
        }
        tx.commit().map_err(sql("insert"))?;
        Ok(inserted)
    }

    /// [`insert_batch`](Self::insert_batch), calling `between` after each entry.
    pub(crate) fn insert_batch_with(
        &self,
        entries: &[NewEntry],
        mut between: impl FnMut(),
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("insert"))?;
        {
            let mut statements = InsertStatements::prepare(&tx)?;
            for entry in entries {
                statements.insert(entry)?;
                between();
            }
        }
        tx.commit().map_err(sql("insert"))
    }

    /// Reads one entry with its bodies, or `None` if there is no such id.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`] if the read fails, [`StoreError::Corrupt`] if a
    /// stored column does not decode.
    pub fn get(&self, id: i64) -> Result<Option<Entry>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(GET_SQL).map_err(sql("get"))?;
        let mut rows = stmt.query([id]).map_err(sql("get"))?;
        let Some(row) = rows.next().map_err(sql("get"))? else { return Ok(None) };
        entry_from_row(row).map(Some)
    }

    /// The number of stored entries.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`] if the read fails.
    pub fn count(&self) -> Result<u64, StoreError> {
        let conn = self.conn()?;
        let n: i64 = conn
            .query_row("SELECT count(*) FROM requests", [], |row| row.get(0))
            .map_err(sql("count"))?;
        Ok(to_u64(n))
    }

    /// The size of the database in bytes: pages in use plus free pages, plus
    /// the write-ahead log not yet checkpointed into the main file.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`] if the pragmas fail, [`StoreError::Io`] if the
    /// WAL file exists but cannot be inspected.
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        let conn = self.conn()?;
        let pages: i64 =
            conn.query_row("PRAGMA page_count", [], |row| row.get(0)).map_err(sql("size"))?;
        let page_size: i64 =
            conn.query_row("PRAGMA page_size", [], |row| row.get(0)).map_err(sql("size"))?;
        let mut size = to_u64(pages).saturating_mul(to_u64(page_size));
        if let Some(path) = &self.inner.path {
            let mut wal = path.clone().into_os_string();
            wal.push("-wal");
            let wal = PathBuf::from(wal);
            match std::fs::metadata(&wal) {
                Ok(meta) => size = size.saturating_add(meta.len()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StoreError::Io { path: wal, source }),
            }
        }
        Ok(size)
    }

    /// Runs `PRAGMA integrity_check`; `true` means the file is sound.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`] if the check cannot run at all.
    pub fn integrity_check(&self) -> Result<bool, StoreError> {
        let conn = self.conn()?;
        let result: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .map_err(sql("integrity check"))?;
        Ok(result == "ok")
    }

    /// The schema version stored in the file.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`] if the pragma fails.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        let conn = self.conn()?;
        schema::user_version(&conn).map_err(sql("schema version"))
    }
}

fn open_file(path: &Path, options: &StoreOptions) -> Result<Current, StoreError> {
    let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };
    let flags = if options.read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::CreateDir { path: dir.to_path_buf(), source })?;
        }
        OpenFlags::default()
    };

    // Migrate on a plain connection first: errors surface at once instead of
    // after the pool's connection timeout.
    let mut setup = Connection::open_with_flags(path, flags).map_err(open_err)?;
    setup.busy_timeout(options.busy_timeout).map_err(open_err)?;
    if options.read_only {
        let found = schema::user_version(&setup).map_err(open_err)?;
        let tables = schema::foreign_tables(&setup).map_err(open_err)?;
        if !tables.is_empty() {
            return Err(StoreError::Foreign { tables });
        }
        if found != SCHEMA_VERSION {
            return Err(StoreError::SchemaVersion { found, expected: SCHEMA_VERSION });
        }
    } else {
        schema::migrate(&mut setup)?;
    }
    let file = std::fs::metadata(path)
        .map(|meta| file_id(&meta))
        .map_err(|source| StoreError::Io { path: path.to_path_buf(), source })?;
    drop(setup);

    let init_options = options.clone();
    let manager = SqliteConnectionManager::file(path)
        .with_flags(flags)
        .with_init(move |conn| init_connection(conn, &init_options));
    let pool = Pool::builder()
        .max_size(options.pool_size.max(1))
        .min_idle(Some(1))
        .connection_timeout(options.busy_timeout.max(Duration::from_secs(1)) * 2)
        .test_on_check_out(false)
        .build(manager)
        .map_err(StoreError::Pool)?;
    // A read makes SQLite open (and create) the WAL and its index.
    pool.get()
        .map_err(StoreError::Pool)?
        .query_row("PRAGMA schema_version", [], |row| row.get::<_, i64>(0))
        .map_err(open_err)?;
    Ok(Current { pool, file: Some(file), sides: side_ids(path) })
}

/// Per-connection settings (pragmas that do not persist in the file).
fn init_connection(conn: &mut Connection, options: &StoreOptions) -> rusqlite::Result<()> {
    conn.busy_timeout(options.busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(32);
    copies::register_sql_function(conn)?;
    // NORMAL in WAL mode: a commit survives a process crash; a power loss may
    // lose the last transactions but never corrupts the file.
    //
    // The WAL stays bounded: the committing connection checkpoints it into the
    // main file once it passes 1 000 pages (SQLite's default
    // `wal_autocheckpoint`: 16 MiB with our 16 KiB pages, 4 MiB on older 4 KiB
    // files), and SQLite then writes it again from the start. Only a reader
    // that holds old pages can make it grow past that; `journal_size_limit`
    // truncates it back to 64 MiB at the next reset.
    //
    // `secure_delete = FAST` zeroes what a delete or a page split leaves behind in the pages
    // it writes anyway (no more I/O); the pages it frees, prune's vacuum gives back. Without
    // it, entries pruned to remove a secret pasted into a prompt (`logs prune --all`) stay
    // readable in the file.
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16000; \
         PRAGMA journal_size_limit = 67108864; PRAGMA secure_delete = FAST;",
    )?;
    if let Some(max) = options.max_size_bytes {
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
        let pages = to_i64(max) / page_size.max(512);
        let _now: i64 =
            conn.query_row(&format!("PRAGMA max_page_count = {}", pages.max(1)), [], |row| {
                row.get(0)
            })?;
    }
    Ok(())
}

pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn opt_u64(value: Option<i64>) -> Option<u64> {
    value.map(to_u64)
}

const INSERT_REQUEST_SQL: &str = "INSERT INTO requests (request_id, received_ms, first_byte_ms, finished_ms, \
     latency_ms, ttft_ms, client_model, actual_model, platform, stream, status, error_type, error_message, \
     prompt_tokens, completion_tokens, total_tokens, cached_tokens, reasoning_tokens, client_addr, user_agent, \
     key_hash, attempts, dropped_fields, body_bytes) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)";

const INSERT_BODY_SQL: &str = "INSERT INTO bodies (id, request_headers, client_request, upstream_request, response, \
     raw_chunks, upstream_copies) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

struct InsertStatements<'conn> {
    request: CachedStatement<'conn>,
    body: CachedStatement<'conn>,
}

impl<'conn> InsertStatements<'conn> {
    fn prepare(conn: &'conn Connection) -> Result<Self, StoreError> {
        // Uncached statements would be re-parsed for every batch; these stay
        // in the connection's statement cache.
        let request = conn.prepare_cached(INSERT_REQUEST_SQL).map_err(sql("insert"))?;
        let body = conn.prepare_cached(INSERT_BODY_SQL).map_err(sql("insert"))?;
        Ok(Self { request, body })
    }

    fn insert(&mut self, e: &NewEntry) -> Result<i64, StoreError> {
        let usage = &e.usage;
        let headers = e.request_headers.redacted();
        // Almost every entry drops nothing; skip the serializer for those.
        let dropped = if e.dropped_fields.is_empty() {
            Cow::Borrowed("[]")
        } else {
            Cow::Owned(
                serde_json::to_string(&e.dropped_fields).unwrap_or_else(|_| String::from("[]")),
            )
        };
        // The upstream request as the client's runs and the bytes between them, when the
        // caller named runs that hold; whole otherwise.
        let stripped = if e.upstream_copies.is_empty() {
            None
        } else {
            copies::strip(&e.client_request, &e.upstream_request, &e.upstream_copies)
                .map(|kept| (kept, copies::encode(&e.upstream_copies)))
        };
        let (upstream, spans) = match &stripped {
            Some((kept, spans)) => (kept.as_str(), Some(spans.as_str())),
            None => (e.upstream_request.as_str(), None),
        };
        let body_bytes = e.client_request.len()
            + upstream.len()
            + spans.map_or(0, str::len)
            + e.response.len()
            + e.raw_chunks.as_ref().map_or(0, String::len)
            + headers.len();
        let body_bytes = u64::try_from(body_bytes).unwrap_or(u64::MAX);
        let id = self
            .request
            .insert(params![
                e.request_id,
                e.received_ms,
                e.first_byte_ms,
                e.finished_ms,
                e.latency_ms(),
                e.ttft_ms(),
                e.client_model,
                e.actual_model,
                e.platform,
                e.stream,
                e.status,
                e.error_type,
                e.error_message,
                usage.prompt_tokens.map(to_i64),
                usage.completion_tokens.map(to_i64),
                usage.total_tokens.map(to_i64),
                usage.cached_tokens.map(to_i64),
                usage.reasoning_tokens.map(to_i64),
                e.client_addr,
                e.user_agent,
                e.key_hash,
                e.attempts,
                dropped,
                to_i64(body_bytes),
            ])
            .map_err(sql("insert"))?;
        self.body
            .execute(params![
                id,
                headers,
                e.client_request,
                upstream,
                e.response,
                e.raw_chunks,
                spans
            ])
            .map_err(sql("insert"))?;
        Ok(id)
    }
}

/// The columns of [`EntrySummary`], in the order [`summary_from_row`] reads them.
pub(crate) const SUMMARY_COLUMNS: &str = "r.id, r.request_id, r.received_ms, r.first_byte_ms, r.finished_ms, \
     r.latency_ms, r.ttft_ms, r.client_model, r.actual_model, r.platform, r.stream, r.status, r.error_type, \
     r.error_message, r.prompt_tokens, r.completion_tokens, r.total_tokens, r.cached_tokens, r.reasoning_tokens, \
     r.attempts, r.key_hash, r.client_addr, r.body_bytes";

const SUMMARY_LEN: usize = 23;

const GET_SQL: &str = "SELECT r.id, r.request_id, r.received_ms, r.first_byte_ms, r.finished_ms, \
     r.latency_ms, r.ttft_ms, r.client_model, r.actual_model, r.platform, r.stream, r.status, r.error_type, \
     r.error_message, r.prompt_tokens, r.completion_tokens, r.total_tokens, r.cached_tokens, r.reasoning_tokens, \
     r.attempts, r.key_hash, r.client_addr, r.body_bytes, \
     r.user_agent, r.dropped_fields, b.request_headers, b.client_request, b.upstream_request, b.response, \
     b.raw_chunks, b.upstream_copies FROM requests r LEFT JOIN bodies b ON b.id = r.id WHERE r.id = ?1";

pub(crate) fn summary_from_row(row: &Row<'_>) -> rusqlite::Result<EntrySummary> {
    Ok(EntrySummary {
        id: row.get(0)?,
        request_id: row.get(1)?,
        received_ms: row.get(2)?,
        first_byte_ms: row.get(3)?,
        finished_ms: row.get(4)?,
        latency_ms: row.get(5)?,
        ttft_ms: row.get(6)?,
        client_model: row.get(7)?,
        actual_model: row.get(8)?,
        platform: row.get(9)?,
        stream: row.get(10)?,
        status: row.get(11)?,
        error_type: row.get(12)?,
        error_message: row.get(13)?,
        usage: Usage {
            prompt_tokens: opt_u64(row.get(14)?),
            completion_tokens: opt_u64(row.get(15)?),
            total_tokens: opt_u64(row.get(16)?),
            cached_tokens: opt_u64(row.get(17)?),
            reasoning_tokens: opt_u64(row.get(18)?),
        },
        attempts: row.get(19)?,
        key_hash: row.get(20)?,
        client_addr: row.get(21)?,
        body_bytes: to_u64(row.get(22)?),
    })
}

fn entry_from_row(row: &Row<'_>) -> Result<Entry, StoreError> {
    let s = summary_from_row(row).map_err(sql("get"))?;
    let n = SUMMARY_LEN;
    let text = |i: usize| -> Result<Option<String>, StoreError> { row.get(i).map_err(sql("get")) };
    let user_agent = text(n)?;
    let dropped = text(n + 1)?.unwrap_or_default();
    let dropped_fields: Vec<String> = if dropped.is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(&dropped).map_err(|source| StoreError::Corrupt {
            id: s.id,
            column: "dropped_fields",
            source,
        })?
    };
    let client_request = text(n + 3)?.unwrap_or_default();
    let mut upstream_request = text(n + 4)?.unwrap_or_default();
    let upstream_copies = match text(n + 7)? {
        Some(spans) => {
            let spans = copies::decode(&spans).map_err(|source| StoreError::Corrupt {
                id: s.id,
                column: "upstream_copies",
                source,
            })?;
            upstream_request = copies::rebuild(&client_request, &upstream_request, &spans)
                .ok_or(StoreError::UpstreamCopies { id: s.id })?;
            spans
        }
        None => Vec::new(),
    };
    Ok(Entry {
        id: s.id,
        latency_ms: s.latency_ms,
        ttft_ms: s.ttft_ms,
        entry: NewEntry {
            request_id: s.request_id,
            received_ms: s.received_ms,
            first_byte_ms: s.first_byte_ms,
            finished_ms: s.finished_ms,
            client_model: s.client_model,
            actual_model: s.actual_model,
            platform: s.platform,
            stream: s.stream,
            status: s.status,
            error_type: s.error_type,
            error_message: s.error_message,
            usage: s.usage,
            request_headers: Headers::stored(text(n + 2)?.unwrap_or_default()),
            client_request,
            upstream_request,
            upstream_copies,
            response: text(n + 5)?.unwrap_or_default(),
            raw_chunks: text(n + 6)?,
            client_addr: s.client_addr,
            user_agent,
            dropped_fields,
            key_hash: s.key_hash,
            attempts: s.attempts,
        },
    })
}
