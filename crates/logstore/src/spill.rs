//! Where the writer puts entries the database cannot take.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::NewEntry;

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
/// any time. Lines read back with `serde_json::from_str::<NewEntry>` can be
/// replayed into the store with [`LogStore::insert_batch`](crate::LogStore::insert_batch).
/// Note that request headers are redacted before they are written here too.
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
        let mut file = OpenOptions::new().create(true).append(true).open(&self.path)?;
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
