//! The request log of uniproxy: every proxied request, with its bodies and
//! metadata, in one SQLite file.
//!
//! The crate knows nothing of HTTP or of our wire types; it stores strings and
//! numbers, and any Rust program can use it without an async runtime.
//!
//! - [`LogStore`] opens the database (WAL mode, schema migrated by version)
//!   and offers a synchronous API: [`insert`](LogStore::insert),
//!   [`list`](LogStore::list) with filters and keyset paging,
//!   [`get`](LogStore::get), [`stats`](LogStore::stats) with latency
//!   percentiles and a time series, and [`prune`](LogStore::prune).
//! - [`NewEntry`] is what the caller stores; [`Entry`] and [`EntrySummary`]
//!   are what it reads back.
//! - [`Writer`] is a thread that takes entries from a bounded queue through
//!   [`WriterHandle`]s and writes them in batched transactions. When the
//!   database cannot be written, it hands the batch to a [`Spill`] (such as
//!   [`JsonLinesSpill`]) instead, so nothing is lost; [`replay`] stores a spill
//!   file's entries once the database can take them (those stored already are
//!   skipped, with [`LogStore::insert_missing`]).
//! - [`redact_headers`] removes credentials from a header dump; the store
//!   applies it to every entry before writing, except to [`Headers`] built
//!   with [`HeadersBuilder`], which redacts as it writes.
//!
//! Metadata and bodies live in two tables keyed by the same id, so listing
//! and counting a million entries never reads a body.
//!
//! # Example
//!
//! ```
//! use uniproxy_logstore::{LogStore, NewEntry, Query, StatusFilter, StoreOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let store = LogStore::open(&dir.path().join("log.db"), StoreOptions::default())?;
//!
//! let id = store.insert(&NewEntry {
//!     request_id: "chatcmpl-1".into(),
//!     received_ms: 1_700_000_000_000,
//!     first_byte_ms: Some(1_700_000_000_150),
//!     finished_ms: 1_700_000_000_900,
//!     client_model: "gpt-4o".into(),
//!     actual_model: "claude-sonnet-4".into(),
//!     platform: "anthropic".into(),
//!     status: 200,
//!     client_request: r#"{"model":"gpt-4o","messages":[]}"#.into(),
//!     request_headers: r#"{"authorization":"Bearer sk-secret"}"#.into(),
//!     attempts: 1,
//!     ..NewEntry::default()
//! })?;
//!
//! let page = store.list(&Query { status: Some(StatusFilter::Class(2)), ..Query::default() })?;
//! assert_eq!(page.items.len(), 1);
//! assert_eq!(page.items[0].latency_ms, 900);
//!
//! let entry = store.get(id)?.expect("just inserted");
//! assert_eq!(entry.entry.request_headers, r#"{"authorization":"[redacted]"}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod copies;
mod entry;
mod error;
mod headers;
mod prune;
mod query;
mod redact;
mod schema;
mod spill;
mod stats;
mod store;
mod writer;

pub use copies::CopiedSpan;
pub use entry::{Entry, EntrySummary, NewEntry, Usage};
pub use error::StoreError;
pub use headers::{Headers, HeadersBuilder};
pub use prune::{PruneReport, ROW_OVERHEAD_BYTES, Retention};
pub use query::{MAX_SEARCH_BYTES, Page, ParseStatusFilterError, Query, StatusFilter};
pub use redact::{REDACTED, SECRET_HEADERS, is_secret_header, redact_headers};
pub use schema::SCHEMA_VERSION;
pub use spill::{JsonLinesSpill, ReplayReport, Spill, replay};
pub use stats::{Bucket, Percentiles, Stats, StatsQuery};
pub use store::{LogStore, StoreOptions};
pub use writer::{
    SendError, ShutdownReport, TrySendError, Writer, WriterHandle, WriterOptions, WriterStats,
    YieldEvery,
};
