//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong in the log store.
///
/// Each variant keeps its cause as [`std::error::Error::source`], so the
/// message only says what the store was doing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The directory that should hold the database could not be created.
    #[error("cannot create the log directory {path}")]
    CreateDir {
        /// The directory we tried to create.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The database file could not be opened or set up.
    #[error("cannot open the log database {path}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The SQLite failure.
        #[source]
        source: rusqlite::Error,
    },
    /// A schema migration failed; the database stays at the previous version.
    #[error("cannot migrate the log schema to version {version}")]
    Migration {
        /// The version the failed migration would have produced.
        version: u32,
        /// The SQLite failure.
        #[source]
        source: rusqlite::Error,
    },
    /// The database has a schema this build cannot use.
    #[error("log schema version {found} cannot be used by this build (expected {expected})")]
    SchemaVersion {
        /// The version stored in the file (`PRAGMA user_version`).
        found: u32,
        /// The version this build writes.
        expected: u32,
    },
    /// No connection could be taken from the pool.
    #[error("no log database connection available")]
    Pool(#[source] r2d2::Error),
    /// An SQLite statement failed.
    #[error("log database {op} failed")]
    Sqlite {
        /// What the store was doing, such as `"insert"` or `"list"`.
        op: &'static str,
        /// The SQLite failure.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored column did not decode (a damaged or hand-edited row).
    #[error("stored column `{column}` of entry {id} is malformed")]
    Corrupt {
        /// The row id.
        id: i64,
        /// The column name.
        column: &'static str,
        /// The decoding failure.
        #[source]
        source: serde_json::Error,
    },
    /// A stored upstream request does not rebuild from the client request's runs it names
    /// (a damaged or hand-edited row).
    #[error("stored upstream request of entry {id} does not fit the client request it copies")]
    UpstreamCopies {
        /// The row id.
        id: i64,
    },
    /// The database has tables uniproxy did not create: another program's (the service
    /// uniproxy replaces kept its own database where `DATABASE_URL` pointed).
    #[error(
        "the database is another program's: it has tables uniproxy did not create ({})",
        tables.join(", ")
    )]
    Foreign {
        /// Its tables.
        tables: Vec<String>,
    },
    /// Reading file metadata (for the size or the identity of the file) failed.
    #[error("cannot inspect {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// A spill file could not be read, moved aside or listed (see [`replay`](crate::replay)).
    #[error("cannot {action} the spill file {path}")]
    SpillFile {
        /// What failed: read, move aside, list.
        action: &'static str,
        /// The file, or for a listing its folder.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The operating system refused to start the writer thread.
    #[error("cannot start the log writer thread")]
    SpawnWriter(#[source] std::io::Error),
    /// The writer thread panicked; entries still in its batch may be lost.
    #[error("the log writer thread panicked")]
    WriterPanicked,
}

/// Wraps a [`rusqlite::Error`] with the operation that failed.
pub(crate) fn sql(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { op, source }
}
