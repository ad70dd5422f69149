//! Upstream retries: on connect failures (not an outbound proxy's 407, its credentials
//! refused: settings at fault) and on 429, 500, 502, 503, 504 and 529, before any
//! byte went to the client, with exponential backoff and jitter, honouring `Retry-After` (and
//! Google's `RetryInfo`; a 429 for a spent quota is not retried), up to MAX_RETRIES and within
//! the request's deadline; an upstream that asks for a longer wait than the longest backoff
//! (20 s) is not asked again before then, its error goes to the client. A stream whose first
//! event is such an error (Claude's `overloaded_error` event, an OpenRouter error chunk) is
//! retried the same way, since nothing of it has gone to the client ([`again`]); a stream that
//! has started is never retried: every retry decision is made before the response head goes
//! to the client. MAX_RETRIES counts every retry of a request, whichever way it failed.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use slog::warn;
use uniproxy_translate::{RetryHint, UpstreamRequest, retry_hint};

use crate::chat::read_upstream;
use crate::error::ProxyError;
use crate::relay::UpstreamBody;
use crate::state::AppState;
use crate::upstream::Client;

/// The first backoff; each retry doubles it.
const BASE_BACKOFF: Duration = Duration::from_millis(250);
/// No single wait is longer than this, whatever `Retry-After` says.
const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// Whether an upstream status is worth another try.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504 | 529)
}

/// The upstream's word on when to try again: `retry-after-ms` (Azure's, the finer one, which the
/// OpenAI SDKs read first), else `Retry-After` in seconds (the HTTP-date form is rare from API
/// servers and is ignored). A wait too long for a `Duration` (`Retry-After: 1e20`) is the
/// longest one, which [`backoff`] does not wait.
fn retry_after(headers: &hyper::HeaderMap) -> Option<Duration> {
    let number = |name: &str| -> Option<f64> {
        let v = headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok()?;
        (v.is_finite() && v >= 0.0).then_some(v)
    };
    // Not `Duration::from_secs_f64`, which panics on a number that large.
    let seconds = |s: f64| Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX);
    match number("retry-after-ms") {
        Some(ms) => Some(seconds(ms / 1000.0)),
        None => number("retry-after").map(seconds),
    }
}

/// The wait before retry number `attempt` (1-based): `BASE·2^(attempt-1)`, scaled by a jitter
/// in [0.5, 1.0), or the upstream's `Retry-After` when it gave one. `None` when the upstream
/// asks for a longer wait than [`MAX_BACKOFF`]: a try before then is one the upstream said
/// it would refuse (and may count against the limit), so the error goes to the client with
/// the upstream's `Retry-After`, which the SDKs wait for.
fn backoff(attempt: u32, jitter: u64, hint: Option<Duration>) -> Option<Duration> {
    if let Some(h) = hint {
        return (h <= MAX_BACKOFF).then_some(h);
    }
    let exp = BASE_BACKOFF.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let scale = 0.5 + (jitter % 1000) as f64 / 2000.0;
    Some(exp.mul_f64(scale).min(MAX_BACKOFF))
}

/// Sends `up`, retrying as the module docs say, at most `retries` times. Returns the final
/// response (which may still be an error status: the caller translates it). `attempts` counts
/// the tries as they start, on top of those the request made before (a resend, a stream that
/// opened with an error), so that it holds the number made even when this future is dropped
/// or fails.
///
/// # Errors
/// The last connect failure or timeout when no try got an answer.
pub async fn send_with_retries(
    state: &AppState,
    client: &Client,
    up: &UpstreamRequest,
    deadline: Instant,
    request_id: &str,
    attempts: &mut u32,
    retries: u32,
) -> Result<hyper::Response<UpstreamBody>, ProxyError> {
    let before = *attempts;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        *attempts = before.saturating_add(attempt);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let first_byte = state.settings.first_byte_timeout.min(remaining);
        let mut limited = false;
        let result = match client.send(up, first_byte).await {
            Ok(r) if r.status() == hyper::StatusCode::TOO_MANY_REQUESTS => {
                limited = true;
                read_limit(r, deadline).await
            }
            other => other,
        };
        let (retry, hint, why) = match &result {
            Ok(r) if r.extensions().get::<RetryHint>() == Some(&RetryHint::Never) => {
                (false, None, String::new())
            }
            Ok(r) if retryable_status(r.status().as_u16()) => {
                (true, retry_after(r.headers()), format!("status {}", r.status().as_u16()))
            }
            Ok(_) => (false, None, String::new()),
            Err(e @ ProxyError::UpstreamConnect(_)) if !e.proxy_refused_credentials() => {
                (true, None, e.detail())
            }
            // A 429 whose body broke off is a 429 all the same.
            Err(e @ (ProxyError::UpstreamBody(_) | ProxyError::UpstreamTooLarge { .. }))
                if limited =>
            {
                (true, None, e.detail())
            }
            Err(_) => (false, None, String::new()),
        };
        if !retry || attempt > retries {
            return result;
        }
        let Some(wait) = backoff(attempt, state.jitter(), hint) else {
            return result;
        };
        if Instant::now() + wait >= deadline {
            return result;
        }
        // Dropping the response here closes that connection's body unread; it is small.
        drop(result);
        wait_and_say(state, request_id, attempt, &why, wait).await;
    }
}

/// Whether a request whose stream began with an error the upstream reported (`status`, see
/// `SseRelay::open`) is tried again, once it has made `attempt` tries and has `retries`
/// left: as for that status unstreamed, after the backoff, which this waits out.
pub async fn again(
    state: &AppState,
    request_id: &str,
    status: u16,
    attempt: u32,
    retries: u32,
    deadline: Instant,
) -> bool {
    if !retryable_status(status) || retries == 0 {
        return false;
    }
    let Some(wait) = backoff(attempt, state.jitter(), None) else { return false };
    if Instant::now() + wait >= deadline {
        return false;
    }
    let why = format!("an error event with status {status} to open the stream");
    wait_and_say(state, request_id, attempt, &why, wait).await;
    true
}

/// Logs and counts a retry, and waits `wait` before it.
async fn wait_and_say(state: &AppState, request_id: &str, attempt: u32, why: &str, wait: Duration) {
    warn!(state.log, "retrying upstream";
        "id" => request_id, "attempt" => attempt, "reason" => why,
        "wait_ms" => wait.as_millis() as u64);
    state.metrics.retried();
    tokio::time::sleep(wait).await;
}

/// A 429 read whole, for what its body says of trying again ([`retry_hint`]): a spent quota
/// (OpenAI's `insufficient_quota`) is marked [`RetryHint::Never`] in the response's
/// extensions, since no retry can succeed; Google's `RetryInfo` delay, which Google gives in
/// the body only, becomes `retry-after-ms` and `retry-after` (whole seconds, rounded up), for
/// the proxy's own wait and for the client's, as the OpenAI SDKs wait as those say. The body
/// goes on as it came.
///
/// # Errors
/// As [`read_upstream`]: a body cut off, too large, or not whole by the deadline.
async fn read_limit(
    response: hyper::Response<UpstreamBody>,
    deadline: Instant,
) -> Result<hyper::Response<UpstreamBody>, ProxyError> {
    let (mut parts, body) = response.into_parts();
    let body = read_upstream(body, deadline).await?;
    let hint = retry_hint(&body);
    if let RetryHint::After(delay) = hint
        && !parts.headers.contains_key("retry-after-ms")
        && !parts.headers.contains_key(hyper::header::RETRY_AFTER)
    {
        // A delay of more milliseconds than a u64 holds is the longest wait, not its low bits
        // (`18446744073709552s` was `retry-after-ms: 384`, a wait of 384 ms).
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let seconds = delay.as_secs().saturating_add(u64::from(delay.subsec_nanos() > 0));
        parts.headers.insert("retry-after-ms", hyper::header::HeaderValue::from(ms));
        parts.headers.insert(hyper::header::RETRY_AFTER, hyper::header::HeaderValue::from(seconds));
    }
    parts.extensions.insert(hint);
    let body = Full::new(body).map_err(|never| match never {}).boxed_unsync();
    Ok(hyper::Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_honours_retry_after() {
        for attempt in 1..=4u32 {
            let base = BASE_BACKOFF * (1 << (attempt - 1));
            for jitter in [0, 499, 999] {
                let d = backoff(attempt, jitter, None).unwrap();
                assert!(d >= base / 2 && d < base, "attempt {attempt}: {d:?} vs {base:?}");
            }
        }
        assert_eq!(backoff(1, 0, Some(Duration::from_secs(3))), Some(Duration::from_secs(3)));
        assert_eq!(backoff(1, 0, Some(MAX_BACKOFF)), Some(MAX_BACKOFF));
        // Asked to wait longer than the proxy will, it does not try again early: the upstream
        // said that try would fail.
        assert_eq!(backoff(1, 0, Some(Duration::from_secs(3600))), None);
        assert_eq!(backoff(40, 0, None), Some(MAX_BACKOFF));
    }

    #[test]
    fn retry_after_parses_seconds_only() {
        let mut h = hyper::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(hyper::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(hyper::header::RETRY_AFTER, "0.5".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(500)));
        h.insert(hyper::header::RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        // Azure's milliseconds come first, beside the seconds or alone.
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        h.insert(hyper::header::RETRY_AFTER, "1".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        h.insert("retry-after-ms", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(1)));
        // A number too large for a `Duration` (an upstream's to send) is the longest wait,
        // not a panic, and one the proxy does not wait: the client gets the error.
        for (name, huge) in [("retry-after-ms", "1e30"), ("retry-after", "99999999999999999999")] {
            let mut h = hyper::HeaderMap::new();
            h.insert(name, huge.parse().unwrap());
            assert_eq!(retry_after(&h), Some(Duration::MAX), "{name}: {huge}");
            assert_eq!(backoff(1, 0, retry_after(&h)), None);
        }
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        for s in [429, 500, 502, 503, 504, 529] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 413, 422, 501] {
            assert!(!retryable_status(s), "{s}");
        }
    }
}
