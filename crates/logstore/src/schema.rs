//! The schema, created and migrated by version (`PRAGMA user_version`).

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

/// The migrations in order; applying the first `n` gives schema version `n`.
///
/// Never edit a released entry: add a new one. Each runs in its own
/// transaction together with the `user_version` bump.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/001_initial.sql"),
    include_str!("migrations/002_keys_attempts_bytes.sql"),
    include_str!("migrations/003_fewer_indexes.sql"),
    include_str!("migrations/004_upstream_copies.sql"),
];

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

pub(crate) fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// The tables of a database that uniproxy did not create: every migration sets
/// `user_version` in the transaction that creates its tables, so a database with tables
/// and version 0 is another program's. Empty for a fresh file or one of ours.
pub(crate) fn foreign_tables(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    if user_version(conn)? != 0 {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )?;
    stmt.query_map([], |row| row.get(0))?.collect()
}

/// Brings a writable connection's database up to [`SCHEMA_VERSION`].
///
/// A fresh file first gets 16 KiB pages and `auto_vacuum = INCREMENTAL` (both
/// can only be set before the first table exists) and WAL journaling.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let found =
        user_version(conn).map_err(|source| StoreError::Migration { version: 0, source })?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaVersion { found, expected: SCHEMA_VERSION });
    }
    let tables =
        foreign_tables(conn).map_err(|source| StoreError::Migration { version: 0, source })?;
    if !tables.is_empty() {
        // Adding ours beside them would mix two programs' data in one file, and a table of
        // the same name stops the migration half-way.
        return Err(StoreError::Foreign { tables });
    }
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(|source| StoreError::Migration { version: 0, source })?;
    if tables == 0 {
        // 16 KiB pages: a typical entry's bodies (about 3 KB) fill a 4 KiB page
        // alone, wasting a fifth of every page written to the WAL and copied
        // again at checkpoint; five fit a 16 KiB page. This measured 18 -> 12 µs
        // of writer CPU per entry. The page size must be set first (before
        // `auto_vacuum`, which fixes it) and only a fresh file takes it; an
        // existing database keeps its own.
        conn.execute_batch("PRAGMA page_size = 16384; PRAGMA auto_vacuum = INCREMENTAL")
            .map_err(|source| StoreError::Migration { version: 0, source })?;
    }
    let _mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|source| StoreError::Migration { version: 0, source })?;
    if found == SCHEMA_VERSION {
        // Nothing to do: no write lock taken, so a busy database does not read as a failed
        // migration (`uniproxy logs prune` while another process writes).
        return Ok(());
    }

    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = u32::try_from(index + 1).expect("the migration list is short");
        let step = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Another process may have migrated while we waited for the lock.
            if user_version(&tx)? >= version {
                return Ok(());
            }
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()
        };
        step(conn).map_err(|source| StoreError::Migration { version, source })?;
    }
    Ok(())
}
