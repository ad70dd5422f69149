//! The admin side: who may read the log, and the JSON endpoints scripts and the log viewer
//! read — `GET /api/logs`, `GET /api/logs/{id}`, `GET /api/stats` — plus `GET /metrics`.
//!
//! Who may: with `ADMIN_KEY` set, only that key; otherwise any `PROXY_API_KEYS` key; with
//! neither, anyone. A key comes as `Authorization: Bearer KEY`, or as the session cookie the
//! log viewer's login form sets (see [`Sessions`]).
//!
//! Store reads are blocking SQLite calls: they run in `spawn_blocking`, never on a runtime
//! worker.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{HeaderMap, Response, header};
use serde_json::json;
use uniproxy_config::Secret;
use uniproxy_logstore::{LogStore, MAX_SEARCH_BYTES, Query, StatsQuery, StatusFilter};

use crate::error::ProxyError;
use crate::record::now_ms;
use crate::routes::{ProxyBody, bearer, body_response, error_response, json_response};
use crate::state::AppState;

/// The name of the log viewer's session cookie.
pub const SESSION_COOKIE: &str = "uniproxy_admin";

/// The largest page `/api/logs` returns.
pub const MAX_PAGE: u32 = 200;

/// The keys that open the admin side: `ADMIN_KEY` when set, else the proxy's client keys.
/// Empty: the admin side is open.
pub fn admin_keys(state: &AppState) -> Vec<&Secret> {
    match &state.settings.admin_key {
        Some(k) if !k.is_empty() => vec![k],
        _ => state.settings.proxy_api_keys.iter().collect(),
    }
}

/// How long a log viewer session lasts after its login. The cookie says the same (`Max-Age`),
/// and the proxy holds it to that too: a cookie copied out of a browser stops working then.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The most log viewer sessions held at once. A login past it ends the session closest to its
/// end, so a script that logs in over and over cannot grow the table.
pub const MAX_SESSIONS: usize = 1024;

/// The log viewer's sessions. A login gets a random token (32 bytes from the OS, as hex) that
/// is the cookie's value; the table keeps its SHA-256 and when it ends. Logging out ends it,
/// as do [`SESSION_LIFETIME`] and a restart. The cookie holds nothing derived from the key.
#[derive(Debug, Default)]
pub struct Sessions {
    open: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Sessions {
    /// Opens a session that ends at `now` + [`SESSION_LIFETIME`] and gives its token, or
    /// `None` if the OS has no random bytes to give.
    pub fn open(&self, now: Instant) -> Option<String> {
        let mut token = [0u8; 32];
        getrandom::fill(&mut token).ok()?;
        let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
        let mut open = self.lock();
        if open.len() >= MAX_SESSIONS {
            open.retain(|_, ends| *ends > now);
        }
        if open.len() >= MAX_SESSIONS {
            let soonest = open.iter().min_by_key(|(_, ends)| **ends).map(|(k, _)| *k);
            if let Some(k) = soonest {
                open.remove(&k);
            }
        }
        open.insert(digest(&token), now + SESSION_LIFETIME);
        Some(token)
    }

    /// Whether `token` names a session that has not ended by `now`. An ended one is dropped.
    pub fn is_open(&self, token: &str, now: Instant) -> bool {
        let key = digest(token);
        let mut open = self.lock();
        match open.get(&key) {
            Some(ends) if *ends > now => true,
            Some(_) => {
                open.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Ends the session `token` names, if there is one.
    pub fn close(&self, token: &str) {
        self.lock().remove(&digest(token));
    }

    /// The table. Nothing panics while holding it, but a poisoned lock still holds a good map.
    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], Instant>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A token's SHA-256: the table never holds a token itself. The lookup by hash needs no
/// constant-time compare: the hash of a guess tells nothing about the tokens held.
fn digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// The session token in the request's cookie, if it has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, SESSION_COOKIE)
}

/// The value of cookie `name`, if the request has one.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Whether `candidate` is one of the admin keys. Every key is compared, so the time taken does
/// not tell which key came close.
pub fn is_admin_key(state: &AppState, candidate: &str) -> bool {
    admin_keys(state).iter().fold(false, |found, k| k.matches(candidate) | found)
}

/// Whether the request may read the admin side (always, when no key is configured).
pub fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let keys = admin_keys(state);
    if keys.is_empty() {
        return true;
    }
    if bearer(headers).is_some_and(|t| is_admin_key(state, t)) {
        return true;
    }
    session_cookie(headers).is_some_and(|token| state.sessions.is_open(token, Instant::now()))
}

/// The query string's pairs, percent-decoded.
fn params(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect()
}

fn param<'a>(params: &'a [(String, String)], names: &[&str]) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, v)| names.contains(&k.as_str()) && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

fn parsed<T: FromStr>(
    params: &[(String, String)],
    name: &'static str,
    expected: &'static str,
) -> Result<Option<T>, ProxyError> {
    param(params, &[name])
        .map(|v| {
            v.trim().parse::<T>().map_err(|_| ProxyError::InvalidParam {
                param: name,
                value: v.to_owned(),
                expected,
            })
        })
        .transpose()
}

/// The listing query `/api/logs` takes: the log store's [`Query`] filters.
///
/// # Errors
/// [`ProxyError::InvalidParam`] for a value a filter cannot take.
pub fn logs_query(query: Option<&str>) -> Result<Query, ProxyError> {
    let p = params(query);
    let status = param(&p, &["status"])
        .map(|v| {
            StatusFilter::from_str(v).map_err(|_| ProxyError::InvalidParam {
                param: "status",
                value: v.to_owned(),
                expected: "a status such as 429, a class such as 5xx, or `error`",
            })
        })
        .transpose()?;
    // Read wide, then capped: a limit beyond the page's is the page's, as the docs say.
    let limit: Option<u64> = parsed(&p, "limit", "a whole number")?;
    let search = param(&p, &["search", "q"]);
    if let Some(text) = search.filter(|t| t.len() > MAX_SEARCH_BYTES) {
        // The store could not run it (SQLite's limit on a LIKE pattern): the client's to fix,
        // not a 500. The message quotes only its start.
        let start: String = text.chars().take(40).collect();
        return Err(ProxyError::InvalidParam {
            param: "search",
            value: format!("{start}…"),
            expected: "text of at most 7000 bytes",
        });
    }
    Ok(Query {
        from_ms: parsed(&p, "from", "unix milliseconds")?,
        to_ms: parsed(&p, "to", "unix milliseconds")?,
        status,
        model: param(&p, &["model"]).map(str::to_owned),
        platform: param(&p, &["platform"]).map(str::to_owned),
        stream: parsed(&p, "stream", "`true` or `false`")?,
        search: search.map(str::to_owned),
        before_id: parsed(&p, "before", "an entry id")?,
        limit: limit.map_or(50, |l| u32::try_from(l).unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE)),
        with_total: parsed(&p, "total", "`true` or `false`")?.unwrap_or(false),
    })
}

/// The time a bucket of `/api/stats` covers when none is asked for: about 60 buckets.
fn default_bucket(from_ms: i64, to_ms: i64) -> i64 {
    const STEPS: [i64; 12] = [
        1_000, 5_000, 15_000, 60_000, 300_000, 900_000, 1_800_000, 3_600_000, 10_800_000,
        21_600_000, 43_200_000, 86_400_000,
    ];
    let want = to_ms.saturating_sub(from_ms) / 60;
    STEPS.iter().copied().find(|&s| s >= want).unwrap_or(86_400_000)
}

/// The aggregation `/api/stats` takes: `from` (default: 24 hours ago), `to` (default: now),
/// `model`, and `bucket` in ms (default: about 60 buckets over the range; at least 1 s).
///
/// # Errors
/// [`ProxyError::InvalidParam`] for a value that is not a number.
pub fn stats_query(query: Option<&str>, now: i64) -> Result<StatsQuery, ProxyError> {
    let p = params(query);
    let to = parsed(&p, "to", "unix milliseconds")?.unwrap_or(now);
    // Saturating: a client's extreme values (i64::MIN) must neither wrap nor panic.
    let from = parsed(&p, "from", "unix milliseconds")?.unwrap_or(to.saturating_sub(86_400_000));
    let bucket: Option<i64> = parsed(&p, "bucket", "milliseconds")?;
    // At most about 2 000 buckets, whatever was asked, so a tiny bucket cannot blow up the
    // answer on a wide range.
    let floor = (to.saturating_sub(from) / 2_000).max(1_000);
    let bucket = bucket.unwrap_or_else(|| default_bucket(from, to)).max(floor);
    Ok(StatsQuery {
        from_ms: Some(from),
        to_ms: Some(to),
        model: param(&p, &["model"]).map(str::to_owned),
        bucket_ms: Some(bucket),
    })
}

/// Runs a store read off the runtime's workers.
async fn read<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&LogStore) -> Result<T, uniproxy_logstore::StoreError> + Send + 'static,
) -> Result<T, ProxyError> {
    let s = state.clone();
    tokio::task::spawn_blocking(move || match s.recorder.db() {
        Some(db) => f(db).map_err(ProxyError::Store),
        None => Err(ProxyError::NoStore),
    })
    .await
    .map_err(ProxyError::Task)?
}

fn json<T: serde::Serialize>(value: &T) -> Response<ProxyBody> {
    json_response(200, Bytes::from(serde_json::to_vec(value).unwrap_or_default()))
}

fn failed(state: &AppState, e: &ProxyError) -> Response<ProxyBody> {
    if e.status() >= 500 {
        slog::error!(state.log, "admin request failed"; "error" => e.detail());
    }
    error_response(e)
}

/// `GET /api/logs`: `{items, next_before}` (and `total` with `total=true`), newest first.
pub async fn logs(state: &Arc<AppState>, query: Option<&str>) -> Response<ProxyBody> {
    let q = match logs_query(query) {
        Ok(q) => q,
        Err(e) => return failed(state, &e),
    };
    match read(state, move |db| db.list(&q)).await {
        Ok(page) => {
            let mut body = json!({ "items": page.items, "next_before": page.next_before_id });
            if let Some(total) = page.total {
                body["total"] = json!(total);
            }
            json(&body)
        }
        Err(e) => failed(state, &e),
    }
}

/// `GET /api/logs/{id}`: the whole entry, bodies included.
pub async fn entry(state: &Arc<AppState>, id: i64) -> Response<ProxyBody> {
    match read(state, move |db| db.get(id)).await {
        Ok(Some(entry)) => json(&entry),
        Ok(None) => failed(state, &ProxyError::EntryNotFound { id }),
        Err(e) => failed(state, &e),
    }
}

/// `GET /api/stats`: the store's aggregates over a range, with `from_ms`, `to_ms` and
/// `bucket_ms` echoed so a chart knows its axis.
pub async fn stats(state: &Arc<AppState>, query: Option<&str>) -> Response<ProxyBody> {
    let q = match stats_query(query, now_ms()) {
        Ok(q) => q,
        Err(e) => return failed(state, &e),
    };
    let (from, to, bucket) = (q.from_ms, q.to_ms, q.bucket_ms);
    match read(state, move |db| db.stats(&q)).await {
        Ok(stats) => {
            let mut body = serde_json::to_value(&stats).unwrap_or_default();
            if let Some(map) = body.as_object_mut() {
                map.insert("from_ms".into(), json!(from));
                map.insert("to_ms".into(), json!(to));
                map.insert("bucket_ms".into(), json!(bucket));
            }
            json(&body)
        }
        Err(e) => failed(state, &e),
    }
}

/// `GET /metrics`: the Prometheus text format.
pub fn metrics(state: &AppState) -> Response<ProxyBody> {
    body_response(200, crate::metrics::CONTENT_TYPE, Bytes::from(state.metrics.render()))
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Sessions {
        /// Sessions held, ended ones included until a login or a use drops them.
        fn len(&self) -> usize {
            self.lock().len()
        }

        /// Whether no session is held.
        fn is_empty(&self) -> bool {
            self.len() == 0
        }
    }

    #[test]
    fn logs_query_takes_the_store_filters() {
        let q = logs_query(Some(
            "status=5xx&model=gpt-4o&from=10&to=20&q=%3Cscript%3E&before=7&limit=900&stream=true",
        ))
        .unwrap();
        assert_eq!(q.status, Some(StatusFilter::Class(5)));
        assert_eq!(q.model.as_deref(), Some("gpt-4o"));
        assert_eq!((q.from_ms, q.to_ms), (Some(10), Some(20)));
        assert_eq!(q.search.as_deref(), Some("<script>"));
        assert_eq!(q.before_id, Some(7));
        assert_eq!(q.limit, MAX_PAGE);
        assert_eq!(q.stream, Some(true));
        let empty = logs_query(Some("status=&search=")).unwrap();
        assert_eq!((empty.status, empty.search, empty.limit), (None, None, 50));
    }

    #[test]
    fn bad_values_name_their_parameter() {
        for (q, name) in
            [("status=abc", "status"), ("from=yesterday", "from"), ("limit=-1", "limit")]
        {
            match logs_query(Some(q)) {
                Err(ProxyError::InvalidParam { param, .. }) => assert_eq!(param, name),
                other => panic!("{q}: {other:?}"),
            }
        }
    }

    #[test]
    fn stats_defaults_to_a_day_in_about_sixty_buckets() {
        let q = stats_query(None, 100_000_000).unwrap();
        assert_eq!(q.to_ms, Some(100_000_000));
        assert_eq!(q.from_ms, Some(100_000_000 - 86_400_000));
        assert_eq!(q.bucket_ms, Some(1_800_000));
        // A tiny bucket over a wide range is widened.
        let q = stats_query(Some("from=0&to=86400000&bucket=1"), 0).unwrap();
        assert_eq!(q.bucket_ms, Some(43_200));
        // The widest range a client can name: no overflow (a panic in a debug build), and
        // still at most about 2 000 buckets.
        let (min, max) = (i64::MIN, i64::MAX);
        for query in
            [format!("from={min}"), format!("to={min}"), format!("from={min}&to={max}&bucket=1")]
        {
            let q = stats_query(Some(&query), 100_000_000).unwrap();
            let (from, to) = (q.from_ms.unwrap(), q.to_ms.unwrap());
            let buckets = to.saturating_sub(from) / q.bucket_ms.unwrap();
            assert!(buckets <= 2_000, "{query}: {buckets} buckets");
        }
    }

    #[test]
    fn a_search_longer_than_the_store_can_run_is_refused() {
        let at_most = "a".repeat(MAX_SEARCH_BYTES);
        let q = logs_query(Some(&format!("search={at_most}"))).unwrap();
        assert_eq!(q.search.as_deref(), Some(at_most.as_str()));
        // Once a 500 `the log store could not be read` (`LIKE or GLOB pattern too complex`).
        for query in [format!("search={at_most}a"), format!("q={}", "%C3%BC".repeat(3_501))] {
            match logs_query(Some(&query)) {
                Err(e @ ProxyError::InvalidParam { param: "search", .. }) => {
                    let message = e.to_string();
                    assert!(message.contains(&MAX_SEARCH_BYTES.to_string()), "{message}");
                    assert!(message.len() < 200, "the value is not echoed whole: {message}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_limit_beyond_the_page_is_the_page() {
        for limit in ["900", "4294967296", "18446744073709551615"] {
            let q = logs_query(Some(&format!("limit={limit}"))).unwrap();
            assert_eq!(q.limit, MAX_PAGE, "{limit}");
        }
        assert_eq!(logs_query(Some("limit=0")).unwrap().limit, 1);
    }

    #[test]
    fn a_session_ends_with_its_lifetime_or_its_logout() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let a = sessions.open(now).unwrap();
        let b = sessions.open(now).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(sessions.is_open(&a, now + SESSION_LIFETIME - Duration::from_secs(1)));
        assert!(!sessions.is_open("forged", now));
        sessions.close(&b);
        assert!(!sessions.is_open(&b, now));
        assert!(!sessions.is_open(&a, now + SESSION_LIFETIME));
        assert!(sessions.is_empty(), "an ended session is dropped when it is seen");
    }

    #[test]
    fn logins_past_the_cap_end_the_oldest_session() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let first = sessions.open(start).unwrap();
        let second = sessions.open(start + Duration::from_secs(1)).unwrap();
        for i in 2..MAX_SESSIONS + 1 {
            sessions.open(start + Duration::from_secs(i as u64)).unwrap();
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        let now = start + Duration::from_secs(MAX_SESSIONS as u64 + 1);
        assert!(!sessions.is_open(&first, now), "the session closest to its end goes");
        assert!(sessions.is_open(&second, now));
        // Ended sessions go first, however many.
        let late = start + SESSION_LIFETIME + Duration::from_secs(2);
        sessions.open(late).unwrap();
        assert_eq!(sessions.len(), MAX_SESSIONS - 1);
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; uniproxy_admin=abc ; b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
