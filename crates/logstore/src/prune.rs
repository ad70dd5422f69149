//! Retention: deleting old entries in small batches and reclaiming the space.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::error::sql;
use crate::store::{to_i64, to_u64};
use crate::{LogStore, StoreError};

/// How much to keep. Every limit that is set applies; the oldest entries go first, by the time
/// they were received (an entry's id is the order it was written in, which a replayed spill
/// file or a long stream puts out of step).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Retention {
    /// Delete entries received more than this many days before `now_ms`.
    pub older_than_days: Option<u32>,
    /// Keep at most this many entries.
    pub max_rows: Option<u64>,
    /// Keep at most about this many bytes: the stored body bytes of each entry
    /// plus [`ROW_OVERHEAD_BYTES`] for its metadata. The file itself also
    /// holds index and page slack, so it ends somewhat larger.
    pub max_bytes: Option<u64>,
    /// The current time (unix ms); the store reads no clock.
    pub now_ms: i64,
}

/// The metadata bytes counted per entry by [`Retention::max_bytes`].
pub const ROW_OVERHEAD_BYTES: u64 = 256;

/// What [`LogStore::prune`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PruneReport {
    /// Entries deleted because they were too old.
    pub deleted_by_age: u64,
    /// Entries deleted to get under `max_rows`.
    pub deleted_by_rows: u64,
    /// Entries deleted to get under `max_bytes`.
    pub deleted_by_bytes: u64,
    /// [`LogStore::size_bytes`] before pruning.
    pub size_before: u64,
    /// [`LogStore::size_bytes`] after pruning and reclaiming.
    pub size_after: u64,
}

impl PruneReport {
    /// All entries deleted.
    #[must_use]
    pub fn deleted(&self) -> u64 {
        self.deleted_by_age + self.deleted_by_rows + self.deleted_by_bytes
    }
}

/// Rows deleted per transaction. Small enough that a batch takes a few ms,
/// so the writer thread, waiting on the busy timeout, gets the lock between
/// batches.
const DELETE_BATCH: i64 = 1_000;

/// The pause between delete batches that lets a waiting writer in.
const BATCH_PAUSE: Duration = Duration::from_millis(2);

const MS_PER_DAY: i64 = 86_400_000;

/// The newest entry a prune deletes, in age order: by `received_ms`, then by `id` among
/// entries received in the same millisecond. Age is not insertion order: an entry replayed
/// from the spill file, or written late by a long stream, has a higher id than newer ones.
#[derive(Debug, Clone, Copy)]
struct Upto {
    received_ms: i64,
    id: i64,
}

impl Upto {
    /// Every entry received before `ms`.
    fn before(ms: i64) -> Upto {
        Upto { received_ms: ms.saturating_sub(1), id: i64::MAX }
    }
}

/// Deletes the entries up to `upto` in age order (see [`Upto`]), oldest first, one batch per
/// transaction. The walk follows the `received_ms` index.
fn delete_up_to(conn: &mut Connection, upto: Upto) -> Result<u64, StoreError> {
    let select = "SELECT id FROM requests WHERE (received_ms, id) <= (?1, ?2) \
                  ORDER BY received_ms, id LIMIT ?3";
    let mut deleted = 0;
    loop {
        let tx =
            conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql("prune"))?;
        // Bodies first, with the same subquery, so a crash between the two
        // statements cannot happen (one transaction) and both see one set.
        tx.prepare_cached(&format!("DELETE FROM bodies WHERE id IN ({select})"))
            .and_then(|mut s| s.execute(params![upto.received_ms, upto.id, DELETE_BATCH]))
            .map_err(sql("prune"))?;
        let n = tx
            .prepare_cached(&format!("DELETE FROM requests WHERE id IN ({select})"))
            .and_then(|mut s| s.execute(params![upto.received_ms, upto.id, DELETE_BATCH]))
            .map_err(sql("prune"))?;
        tx.commit().map_err(sql("prune"))?;
        deleted += n as u64;
        if (n as i64) < DELETE_BATCH {
            return Ok(deleted);
        }
        std::thread::sleep(BATCH_PAUSE);
    }
}

impl LogStore {
    /// Deletes what `retention` does not keep, then gives the space back to
    /// the file system (WAL checkpoint with truncation, then incremental vacuum).
    ///
    /// Deletion runs in transactions of 1 000 entries with a short pause in
    /// between, so a [`Writer`](crate::Writer) running at the same time keeps
    /// writing. Reclaiming needs no exclusive lock either: it frees the pages
    /// at the end of the file without rewriting the rest.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`] if a statement fails; batches already deleted
    /// stay deleted.
    pub fn prune(&self, retention: &Retention) -> Result<PruneReport, StoreError> {
        let mut report = self.prune_in_place(retention)?;
        if report.deleted() > 0 {
            reclaim(&*self.conn()?)?;
            report.size_after = self.size_bytes()?;
        }
        Ok(report)
    }

    /// Deletes what `retention` does not keep, as [`LogStore::prune`] does, but leaves the
    /// freed pages in the file, where new entries reuse them: the file stops growing without
    /// the checkpoint that reclaiming takes, which waits for every reader and holds writers
    /// back meanwhile. Cheap enough to run as often as entries arrive (a proxy keeping
    /// `max_rows` under a flood); [`LogStore::prune`] now and then gives the space back.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`] if a statement fails; batches already deleted
    /// stay deleted.
    pub fn prune_in_place(&self, retention: &Retention) -> Result<PruneReport, StoreError> {
        let mut report = PruneReport { size_before: self.size_bytes()?, ..PruneReport::default() };
        let mut conn = self.conn()?;

        if let Some(days) = retention.older_than_days {
            let cutoff =
                retention.now_ms.saturating_sub(i64::from(days).saturating_mul(MS_PER_DAY));
            report.deleted_by_age = delete_up_to(&mut conn, Upto::before(cutoff))?;
        }

        if let Some(max_rows) = retention.max_rows {
            let count: i64 = conn
                .query_row("SELECT count(*) FROM requests", [], |row| row.get(0))
                .map_err(sql("prune"))?;
            let excess = to_u64(count).saturating_sub(max_rows);
            if excess > 0 {
                // The newest entry to delete: the excess-th oldest.
                let last: Option<Upto> = conn
                    .query_row(
                        "SELECT received_ms, id FROM requests \
                         ORDER BY received_ms, id LIMIT 1 OFFSET ?1",
                        [to_i64(excess) - 1],
                        |row| Ok(Upto { received_ms: row.get(0)?, id: row.get(1)? }),
                    )
                    .optional()
                    .map_err(sql("prune"))?;
                if let Some(last) = last {
                    report.deleted_by_rows = delete_up_to(&mut conn, last)?;
                }
            }
        }

        if let Some(max_bytes) = retention.max_bytes {
            let total: i64 = conn
                .query_row(
                    "SELECT coalesce(sum(body_bytes), 0) + count(*) * ?1 FROM requests",
                    [to_i64(ROW_OVERHEAD_BYTES)],
                    |row| row.get(0),
                )
                .map_err(sql("prune"))?;
            let mut excess = to_u64(total).saturating_sub(max_bytes);
            if excess > 0 {
                // Walk from the oldest entry until enough bytes are covered.
                let mut last = None;
                {
                    let mut stmt = conn
                        .prepare(
                            "SELECT received_ms, id, body_bytes FROM requests \
                             ORDER BY received_ms, id",
                        )
                        .map_err(sql("prune"))?;
                    let mut rows = stmt.query([]).map_err(sql("prune"))?;
                    while let Some(row) = rows.next().map_err(sql("prune"))? {
                        let received_ms: i64 = row.get(0).map_err(sql("prune"))?;
                        let id: i64 = row.get(1).map_err(sql("prune"))?;
                        let bytes: i64 = row.get(2).map_err(sql("prune"))?;
                        last = Some(Upto { received_ms, id });
                        excess = excess.saturating_sub(to_u64(bytes) + ROW_OVERHEAD_BYTES);
                        if excess == 0 {
                            break;
                        }
                    }
                }
                if let Some(last) = last {
                    report.deleted_by_bytes = delete_up_to(&mut conn, last)?;
                }
            }
        }

        drop(conn);
        report.size_after = self.size_bytes()?;
        Ok(report)
    }

    /// Returns free pages to the file system and truncates the WAL, without
    /// deleting anything. [`LogStore::prune`] calls it after deleting.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`] if a pragma fails.
    pub fn reclaim_space(&self) -> Result<(), StoreError> {
        let conn = self.conn()?;
        reclaim(&conn)
    }
}

fn reclaim(conn: &Connection) -> Result<(), StoreError> {
    // Copy the WAL into the main file first so freed pages are in it, then
    // free them (incremental_vacuum returns one row per page, so step it to
    // the end), then checkpoint again so the truncation reaches the file.
    checkpoint(conn)?;
    {
        let mut stmt = conn.prepare("PRAGMA incremental_vacuum").map_err(sql("vacuum"))?;
        let mut rows = stmt.query([]).map_err(sql("vacuum"))?;
        while rows.next().map_err(sql("vacuum"))?.is_some() {}
    }
    checkpoint(conn)
}

fn checkpoint(conn: &Connection) -> Result<(), StoreError> {
    // Returns (busy, wal pages, checkpointed pages). A busy result means a
    // reader still needs old pages; the next prune finishes the job.
    let _: (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .map_err(sql("checkpoint"))?;
    Ok(())
}
