//! Listing entries: filters and keyset paging.

use std::str::FromStr;

use rusqlite::OptionalExtension;
use rusqlite::types::Value;

use crate::error::sql;
use crate::store::{SUMMARY_COLUMNS, summary_from_row, to_u64};
use crate::{EntrySummary, LogStore, StoreError};

/// Which statuses a [`Query`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusFilter {
    /// Exactly this status, such as 429.
    Exact(u16),
    /// A class by its first digit: `Class(2)` is 2xx, `Class(5)` is 5xx.
    Class(u8),
    /// Every failed request: status 400 and up, or an `error_type` set.
    Error,
}

/// The error of parsing a [`StatusFilter`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a status filter (expected a status such as 429, a class such as 5xx, or `error`)"
)]
pub struct ParseStatusFilterError(pub String);

impl FromStr for StatusFilter {
    type Err = ParseStatusFilterError;

    /// Parses `429`, `5xx` (any case), or `error`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let bad = || ParseStatusFilterError(s.to_owned());
        if t == "error" || t == "errors" {
            return Ok(StatusFilter::Error);
        }
        if let Some(digit) = t.strip_suffix("xx") {
            return match digit.parse::<u8>() {
                Ok(d @ 1..=5) if digit.len() == 1 => Ok(StatusFilter::Class(d)),
                _ => Err(bad()),
            };
        }
        match t.parse::<u16>() {
            Ok(code @ 100..=999) => Ok(StatusFilter::Exact(code)),
            _ => Err(bad()),
        }
    }
}

/// A listing request. Every filter is optional; they combine with AND.
///
/// Results are newest first: by `received_ms` descending, ties by id
/// descending. To page, pass the previous page's [`Page::next_before_id`] as
/// `before_id`: each page then starts with an index seek, as fast at page
/// 10 000 as at page 1, unlike `OFFSET`.
///
/// Costs on a large log: no filter, a time range, an exact status, or an
/// exact status with a time range read the index in order and stop after
/// `limit` rows. A status class, [`StatusFilter::Error`], the model, platform
/// and stream filters are checked row by row while walking the time index,
/// so a page costs about `limit / (share of rows that match)` rows: cheap for
/// common values, up to a scan of the range for very rare ones. (Sorting all
/// matches through the model indexes was measured slower: 360 ms against
/// under 1 ms for a model on a third of a million rows.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only entries received at or after this time (unix ms).
    pub from_ms: Option<i64>,
    /// Only entries received before this time (unix ms, exclusive).
    pub to_ms: Option<i64>,
    /// Only these statuses.
    pub status: Option<StatusFilter>,
    /// Only entries whose client model or actual model is exactly this.
    pub model: Option<String>,
    /// Only this platform.
    pub platform: Option<String>,
    /// Only streamed (`true`) or only non-streamed (`false`) requests.
    pub stream: Option<bool>,
    /// Free text searched (`LIKE '%text%'`, ASCII case-insensitive) in the
    /// request id, client request, upstream request, response and error message.
    ///
    /// This reads the bodies of every row it passes over: there is no text
    /// index. Combine it with a time range on large logs; a search that
    /// matches nothing scans the whole range.
    ///
    /// At most [`MAX_SEARCH_BYTES`]: SQLite refuses a longer `LIKE` pattern, and a
    /// longer search fails with [`StoreError::Sqlite`].
    pub search: Option<String>,
    /// Only entries after this one in the listing order (the keyset cursor:
    /// the previous page's [`Page::next_before_id`]). If that entry has been
    /// pruned meanwhile, the page is empty.
    pub before_id: Option<i64>,
    /// The page size; 0 means 50, and more than 1 000 is cut to 1 000.
    pub limit: u32,
    /// Also count every entry matching the filters (ignoring `before_id`).
    /// This reads every matching row, so it costs a full scan of the range.
    pub with_total: bool,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The entries, newest first.
    pub items: Vec<T>,
    /// The cursor for the next (older) page, or `None` on the last page.
    pub next_before_id: Option<i64>,
    /// The number of matching entries, if [`Query::with_total`] was set.
    pub total: Option<u64>,
}

/// The longest [`Query::search`], in bytes, the store can run.
///
/// SQLite refuses a `LIKE` pattern over 50,000 bytes (`SQLITE_MAX_LIKE_PATTERN_LENGTH`), and
/// the search's longest form takes up to 7 bytes for each of its own (a control character
/// written `\u0001` in JSON, its backslash escaped for `LIKE`), plus the two `%`.
pub const MAX_SEARCH_BYTES: usize = 7_000;

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1_000;

/// Escapes `%`, `_` and `\` for `LIKE … ESCAPE '\'`.
fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The forms `text` takes inside a JSON string, for searching bodies, which are JSON text:
/// as written, JSON-escaped (`"`, `\`, control characters: what a phrase with a quote or a
/// line break is in a body), and JSON-escaped with every non-ASCII character as `\uXXXX`
/// (Python's `json.dumps` and others write `Grüße` as `Gr\u00fc\u00dfe`; LIKE's case
/// folding takes `\u00FC` too). Each once. Text with a NUL has only its escaped forms: SQLite
/// ends a `LIKE` pattern at a NUL, so `%\0…%` would match what comes before it, or anything.
fn json_forms(text: &str) -> Vec<String> {
    let escaped = |ascii: bool| {
        let mut out = String::with_capacity(text.len() + 8);
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if c.is_control() || (ascii && !c.is_ascii()) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out
    };
    let mut forms = Vec::with_capacity(3);
    if !text.contains('\0') {
        forms.push(text.to_owned());
    }
    for form in [escaped(false), escaped(true)] {
        if !forms.contains(&form) {
            forms.push(form);
        }
    }
    forms
}

/// Builds the WHERE clause (without the cursor) and its parameters.
pub(crate) fn filter_clause(q: &Query) -> (String, Vec<Value>) {
    let mut terms: Vec<std::borrow::Cow<'static, str>> = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    if let Some(from) = q.from_ms {
        terms.push("r.received_ms >= ?".into());
        args.push(Value::Integer(from));
    }
    if let Some(to) = q.to_ms {
        terms.push("r.received_ms < ?".into());
        args.push(Value::Integer(to));
    }
    match q.status {
        None => {}
        Some(StatusFilter::Exact(200)) => terms.push("r.status = 200".into()),
        Some(StatusFilter::Exact(code)) => {
            // The second term, in the index's own words, lets the planner use the partial
            // index of failures (requests_failed).
            terms.push("r.status = ? AND r.status <> 200".into());
            args.push(Value::Integer(i64::from(code)));
        }
        Some(StatusFilter::Class(digit)) => {
            // Unary `+` keeps the planner off the status index: a range on it
            // would need a sort of every match to get the time order.
            terms.push("+r.status BETWEEN ? AND ?".into());
            args.push(Value::Integer(i64::from(digit) * 100));
            args.push(Value::Integer(i64::from(digit) * 100 + 99));
        }
        Some(StatusFilter::Error) => {
            terms.push("(+r.status >= 400 OR r.error_type IS NOT NULL)".into())
        }
    }
    if let Some(model) = &q.model {
        // Unary `+`: the OR over two indexes would sort every match.
        terms.push("(+r.client_model = ? OR +r.actual_model = ?)".into());
        args.push(Value::Text(model.clone()));
        args.push(Value::Text(model.clone()));
    }
    if let Some(platform) = &q.platform {
        terms.push("r.platform = ?".into());
        args.push(Value::Text(platform.clone()));
    }
    if let Some(stream) = q.stream {
        terms.push("r.stream = ?".into());
        args.push(Value::Integer(i64::from(stream)));
    }
    if let Some(text) = q.search.as_deref().filter(|t| !t.is_empty()) {
        // The ids and the error message are plain text; the bodies JSON, in any of its forms.
        let forms = json_forms(text);
        let upstream = "(CASE WHEN b.upstream_copies IS NULL THEN b.upstream_request \
             ELSE uniproxy_upstream_request(b.upstream_request, b.upstream_copies, b.client_request) END)";
        let in_bodies: Vec<String> = forms
            .iter()
            .map(|_| {
                format!(
                    "b.client_request LIKE ? ESCAPE '\\' OR {upstream} LIKE ? ESCAPE '\\' \
                     OR b.response LIKE ? ESCAPE '\\'"
                )
            })
            .collect();
        // The ids and the error message are searched as they are, which a pattern cannot say
        // when the text has a NUL (see `json_forms`): such a search looks in the bodies only.
        let plain = (!text.contains('\0')).then(|| like_pattern(text));
        let in_plain = if plain.is_some() {
            "r.request_id LIKE ? ESCAPE '\\' OR r.error_message LIKE ? ESCAPE '\\' OR "
        } else {
            ""
        };
        terms.push(
            format!(
                "({in_plain}EXISTS (SELECT 1 FROM bodies b WHERE b.id = r.id AND ({})))",
                in_bodies.join(" OR ")
            )
            .into(),
        );
        if let Some(plain) = plain {
            args.push(Value::Text(plain.clone()));
            args.push(Value::Text(plain));
        }
        for form in &forms {
            let pattern = like_pattern(form);
            for _ in 0..3 {
                args.push(Value::Text(pattern.clone()));
            }
        }
    }
    // Anonymous `?` parameters are numbered in push order.
    let clause = if terms.is_empty() { String::from("1") } else { terms.join(" AND ") };
    (clause, args)
}

/// The listing's SQL: `clause` from [`filter_clause`], then the cursor's terms, if any.
fn list_sql(clause: &str, cursor: &str) -> String {
    format!(
        "SELECT {SUMMARY_COLUMNS} FROM requests r WHERE {clause}{cursor} ORDER BY r.received_ms DESC, r.id DESC LIMIT ?"
    )
}

impl LogStore {
    /// Lists entries matching `query`, newest first, one page at a time.
    ///
    /// Metadata only: bodies stay in their own table and are read only by
    /// [`Query::search`] and [`LogStore::get`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`] if the query fails, [`StoreError::Pool`] if no
    /// connection is available.
    pub fn list(&self, query: &Query) -> Result<Page<EntrySummary>, StoreError> {
        let limit = match query.limit {
            0 => DEFAULT_LIMIT,
            n => n.min(MAX_LIMIT),
        };
        let (clause, mut args) = filter_clause(query);
        let conn = self.conn()?;

        let total = if query.with_total {
            let count_sql = format!("SELECT count(*) FROM requests r WHERE {clause}");
            let mut stmt = conn.prepare_cached(&count_sql).map_err(sql("count"))?;
            let n: i64 = stmt
                .query_row(rusqlite::params_from_iter(args.iter()), |row| row.get(0))
                .map_err(sql("count"))?;
            Some(to_u64(n))
        } else {
            None
        };

        let cursor = match query.before_id {
            Some(before) => {
                let received: Option<i64> = conn
                    .prepare_cached("SELECT received_ms FROM requests WHERE id = ?1")
                    .and_then(|mut stmt| stmt.query_row([before], |row| row.get(0)).optional())
                    .map_err(sql("list"))?;
                let Some(received) = received else {
                    return Ok(Page { items: Vec::new(), next_before_id: None, total });
                };
                args.push(Value::Integer(received));
                args.push(Value::Integer(before));
                " AND (r.received_ms, r.id) < (?, ?)"
            }
            None => "",
        };
        // Fetch one extra row to know whether another page follows.
        args.push(Value::Integer(i64::from(limit) + 1));
        let list_sql = list_sql(&clause, cursor);
        let mut stmt = conn.prepare_cached(&list_sql).map_err(sql("list"))?;
        let mut items = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), summary_from_row)
            .map_err(sql("list"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("list"))?;
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next_before_id = if more { items.last().map(|e| e.id) } else { None };
        Ok(Page { items, next_before_id, total })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The query plan of the listing for `q`, one line per step.
    fn plan(store: &LogStore, q: &Query) -> String {
        let (clause, mut args) = filter_clause(q);
        args.push(Value::Integer(51));
        let conn = store.conn().unwrap();
        let mut stmt =
            conn.prepare(&format!("EXPLAIN QUERY PLAN {}", list_sql(&clause, ""))).unwrap();
        stmt.query_map(rusqlite::params_from_iter(args.iter()), |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
            .join("\n")
    }

    #[test]
    fn a_failure_status_is_found_through_the_index_of_failures() {
        let store = LogStore::open_in_memory().unwrap();
        let status = |s: &str| Query { status: Some(s.parse().unwrap()), ..Query::default() };
        for failure in ["429", "500", "499"] {
            let plan = plan(&store, &status(failure));
            assert!(plan.contains("requests_failed"), "{failure}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "read in time order, not sorted: {plan}");
        }
        // Successes are nearly every row: walk the time index.
        for other in ["200", "2xx", "error"] {
            let plan = plan(&store, &status(other));
            assert!(plan.contains("requests_received_ms"), "{other}: {plan}");
        }
        let plan = plan(&store, &Query { model: Some("gpt-4o".into()), ..Query::default() });
        assert!(plan.contains("requests_received_ms"), "{plan}");
    }
}
