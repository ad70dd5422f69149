//! `POST /chat/completions`: parse once, check the settings, translate, send, relay, record.

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, header};
use uniproxy_translate::{
    ResponseContext, RetryHint, TranslateError, UpstreamRequest, completion_to_frames,
};
use uniproxy_wire::{ChatCompletionRequest, from_slice};

use crate::connection::ConnectionCut;
use crate::error::{ProxyError, redacted_start};
use crate::record::{RequestRecord, ended_early, key_hash, now_ms, redacted_headers};
use crate::relay::{Opening, SseRelay, UpstreamBody};
use crate::retry::{self, send_with_retries};
use crate::routes::{ProxyBody, error_response_with, json_response};
use crate::state::AppState;
use crate::upstream::Client;

/// The most of an upstream's non-stream answer the proxy will buffer, as much as one event of
/// a stream may hold (`sse::MAX_EVENT`).
const MAX_UPSTREAM_BODY: usize = uniproxy_translate::sse::MAX_EVENT;

/// The headers of an upstream's error answer that say when to try again, passed on with the
/// error: the OpenAI SDKs wait as `retry-after-ms` or `retry-after` say before they retry
/// (without them, about a second, into the same limit). OpenAI and Anthropic send
/// `retry-after` with a 429.
const RETRY_HEADERS: [header::HeaderName; 2] =
    [header::HeaderName::from_static("retry-after-ms"), header::RETRY_AFTER];

/// Handles one chat completion request. Every outcome, success or failure, is recorded, and
/// every answer carries the record's id as `x-request-id` (as api.openai.com's answers carry
/// theirs, which the SDKs give as `_request_id`): the entry to look for in the log.
pub async fn chat(
    state: Arc<AppState>,
    client: &Client,
    req: Request<Incoming>,
    client_addr: Option<String>,
    cut: Option<ConnectionCut>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let record = arrival_record(&state, &req, client_addr, true);
    let request_id = header::HeaderValue::from_str(&record.request_id).ok();
    let mut pending = Pending::new(&state, record, started);
    let response = match handle(&state, client, req, cut, &mut pending).await {
        // The record is written (or, for a stream, carried by the relay).
        Ok(response) => response,
        Err(e) => fail(pending, &e).await,
    };
    named(response, request_id)
}

/// The answer with its entry's id as `x-request-id`.
fn named(
    mut response: Response<ProxyBody>,
    id: Option<header::HeaderValue>,
) -> Response<ProxyBody> {
    if let Some(id) = id {
        response.headers_mut().insert(X_REQUEST_ID, id);
    }
    response
}

/// Records a chat request refused for its key (none, or not one of PROXY_API_KEYS) or for
/// the web page it came from (`e`), as any other failure, and gives its answer: the log
/// shows who knocked, from where, how often.
/// Nothing of the key sent is kept, not even its hash (it may be an upstream's key).
pub async fn refused(
    state: &AppState,
    req: &Request<Incoming>,
    client_addr: Option<String>,
    e: &ProxyError,
) -> Response<ProxyBody> {
    let record = arrival_record(state, req, client_addr, false);
    let request_id = header::HeaderValue::from_str(&record.request_id).ok();
    let response = fail(Pending::new(state, record, Instant::now()), e).await;
    named(response, request_id)
}

/// Records a failed request and gives the client its error.
async fn fail(mut pending: Pending<'_>, e: &ProxyError) -> Response<ProxyBody> {
    // The error's body is built and serialized once, for the client and the record.
    let error = e.to_error_response();
    let body = serde_json::to_vec(&error).map(Bytes::from).unwrap_or_default();
    let mut detail = e.detail();
    // An answer that is an error says all in the error; one that did not read, its start.
    let answered_error = matches!(
        e,
        ProxyError::UpstreamAuth(_) | ProxyError::Translate(TranslateError::Upstream { .. })
    );
    if let Some(answer) = pending.upstream_answer.take()
        && !answered_error
    {
        answer_start(&mut detail, &answer, pending.state.settings.api_key.expose());
    }
    let overhead = overhead_header(pending.overhead());
    let record = &mut pending.record;
    record.status = e.status();
    if let ProxyError::Translate(TranslateError::NoAnswer { usage: Some(usage), .. }) = e {
        record.usage = Some((**usage).clone());
    }
    record.error_type = error.error.kind().map(str::to_owned);
    record.error_message = Some(detail);
    record.response = body.clone();
    // A record that could not be kept (waiting for room would hold the request until the disk
    // has space), or a stranger's refusal while the store can keep nothing: counted, not
    // written.
    let stuck = matches!(e, ProxyError::LogStoreStuck)
        || e.turns_away() && pending.state.recorder.refusing();
    if stuck {
        pending.count_only();
    } else {
        pending.finish().await;
    }
    let mut response = error_response_with(e, body);
    for (name, value) in pending.retry_headers.drain(..) {
        response.headers_mut().insert(name, value);
    }
    response.headers_mut().insert("x-uniproxy-overhead-ms", overhead);
    response
}

/// The answer that streams `relay`'s frames; `overhead`, the proxy's time before it.
fn stream_response(relay: SseRelay, overhead: Duration) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Box::new(relay)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", header::HeaderValue::from_static("no"));
    headers.insert("x-uniproxy-overhead-ms", overhead_header(overhead));
    response
}

/// The most of an unreadable answer a record's error quotes.
const ANSWER_START: usize = 512;

/// Adds the start of an upstream's answer that did not read as its platform's to the record's
/// error: what the upstream sent is the first thing to look at. The proxy's key (`key`) stays
/// out of it.
fn answer_start(detail: &mut String, answer: &[u8], key: &str) {
    let text = redacted_start(answer, ANSWER_START, key);
    let more = if answer.len() > ANSWER_START { "…" } else { "" };
    detail.push_str(&format!("; the upstream's answer began: {}{more}", text.trim_end()));
}

/// Whether a 2xx answer's content type says it is not an event stream: JSON (a whole answer
/// from a server that does not stream) or HTML (a page in front of the server). Anything else,
/// a missing type included, is read as the stream asked for.
fn not_a_stream(content_type: &header::HeaderValue) -> bool {
    let t = content_type.as_bytes();
    let starts = |p: &[u8]| t.len() >= p.len() && t[..p.len()].eq_ignore_ascii_case(p);
    starts(b"application/json") || starts(b"text/html")
}

/// The answer's header that names its log entry.
const X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// What a request's record knows from its head, before anything else is read; `authorized`:
/// whether it carries a client key, the only key whose hash is kept.
fn arrival_record(
    state: &AppState,
    req: &Request<Incoming>,
    client_addr: Option<String>,
    authorized: bool,
) -> RequestRecord {
    RequestRecord {
        received_ms: now_ms(),
        platform: state.provider.kind().as_str(),
        actual_model: state.settings.actual_name.clone(),
        request_headers: redacted_headers(req.headers()),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        client_addr,
        request_id: state.next_id(),
        // Only a proxy key is hashed: without PROXY_API_KEYS, or with a key that is none of
        // them, the header may carry anything, an upstream key included, and nothing of it is
        // kept.
        key_hash: (authorized && !state.settings.proxy_api_keys.is_empty())
            .then(|| crate::routes::client_key(req.headers()).map(key_hash))
            .flatten(),
        ..Default::default()
    }
}

/// Records a chat request whose handler never ran (see [`routes::Arrival`]), as any request
/// cut off early is: a client's leaving (499), or the proxy's cut (503). Its body was not read.
///
/// [`routes::Arrival`]: crate::routes::Arrival
pub fn record_unhandled(
    state: &AppState,
    req: &Request<Incoming>,
    client_addr: Option<String>,
    authorized: bool,
) {
    let mut record = arrival_record(state, req, client_addr, authorized);
    record.finished_ms = now_ms();
    ended_early(&mut record, state.cutting_off(), "its request was read");
    state.recorder.record_now(record);
}

/// A request's record until it is handed on (to the recorder, or to a stream's relay), with
/// the time spent waiting on the upstream so far (the client's body's is the record's).
///
/// hyper drops a request's future when its client hangs up before the answer: it reads the
/// connection while the handler runs (and `serve` drops it when the shutdown's grace period
/// is over). Dropped before the hand-on, the record is written from here, as the client's
/// leaving (499) or the proxy's cut (503), with what was known by then.
struct Pending<'a> {
    state: &'a AppState,
    started: Instant,
    record: RequestRecord,
    upstream_wait: Duration,
    handed_on: bool,
    /// The [`RETRY_HEADERS`] of the upstream's error answer, for the client's.
    retry_headers: Vec<(header::HeaderName, header::HeaderValue)>,
    /// A whole answer being translated: if it does not read as its platform's, its start goes
    /// in the record's error.
    upstream_answer: Option<Bytes>,
}

impl<'a> Pending<'a> {
    fn new(state: &'a AppState, record: RequestRecord, started: Instant) -> Self {
        Pending {
            state,
            started,
            record,
            upstream_wait: Duration::ZERO,
            handed_on: false,
            retry_headers: Vec::new(),
            upstream_answer: None,
        }
    }

    /// The record, for its writer: from here on its outcome is that writer's to record.
    fn hand_on(&mut self) -> RequestRecord {
        self.handed_on = true;
        std::mem::take(&mut self.record)
    }

    /// The record back from a stream's relay abandoned before its head went out (none: the
    /// relay had already written it, which it does not before its end).
    fn take_back(&mut self, record: Option<RequestRecord>) {
        if let Some(record) = record {
            self.record = record;
            self.handed_on = false;
        }
    }

    /// The time spent so far in the proxy itself: all of it but the waits on the client's
    /// body and the upstream.
    fn overhead(&self) -> Duration {
        let waits = self.upstream_wait + self.record.client_wait;
        self.started.elapsed().saturating_sub(waits)
    }

    /// Counts the record in the metrics without writing it (see [`ProxyError::LogStoreStuck`]).
    fn count_only(&mut self) {
        let record = self.hand_on();
        self.state.recorder.count_only(&record);
    }

    /// The record, handed on as it ends now: its end time and the proxy's own time set.
    fn ended(&mut self) -> RequestRecord {
        let overhead = self.overhead();
        let mut record = self.hand_on();
        record.finished_ms = now_ms();
        record.overhead = overhead;
        record
    }

    /// Writes the record of a request whose answer is ready (a whole one, or an error).
    async fn finish(&mut self) {
        let mut record = self.ended();
        if record.first_byte_ms.is_none() {
            record.first_byte_ms = Some(record.finished_ms);
        }
        self.state.recorder.record(record).await;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.handed_on {
            return;
        }
        let mut record = self.ended();
        ended_early(&mut record, self.state.cutting_off(), "the answer");
        self.state.recorder.record_now(record);
    }
}

fn overhead_header(overhead: Duration) -> header::HeaderValue {
    // Written as the request log writes it: `format!("{:.3}")` of a float was 1% of a request.
    let mut ms = Vec::with_capacity(12);
    crate::reqlog::millis3(&mut ms, overhead);
    header::HeaderValue::from_maybe_shared(bytes::Bytes::from(ms))
        .unwrap_or(header::HeaderValue::from_static("0"))
}

/// Reads the client's body, at most `limit` bytes, by `deadline` (REQUEST_TIMEOUT), each
/// read within `gap` of the one before (CLIENT_TIMEOUT: the time between two reads, as
/// nginx's `client_body_timeout`, so that a client that stops sending is let go long before
/// the request's deadline, while a long upload that keeps coming is not cut).
///
/// One timer for both bounds, polled only when the body is not there yet: a body that came
/// with its head, as most do, is read without touching the timer. Its deadline moves
/// lazily: a read only notes the time, and the timer, when it fires early, is set again
/// from the last read.
async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    deadline: Instant,
    gap: Duration,
) -> Result<Bytes, ProxyError> {
    // A compressed body would read as bad JSON ("line 1 column 1"): say what is wrong instead.
    // Every coding counts, in a list (`identity, gzip`) or in a header of its own: the body
    // went through all of them (RFC 9110, 8.4).
    let codings = req.headers().get_all(header::CONTENT_ENCODING).iter();
    let codings = codings.flat_map(|v| v.as_bytes().split(|&b| b == b','));
    if let Some(coding) = codings
        .map(<[u8]>::trim_ascii)
        .find(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"))
    {
        let coding = String::from_utf8_lossy(coding).into_owned();
        return Err(ProxyError::UnsupportedEncoding { coding });
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let mut body = Limited::new(req.into_body(), limit);
    // The first data frame as it came (no copy for a body in one frame), then all of them.
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut last_read = Instant::now();
    let mut timer = pin!(tokio::time::sleep_until(deadline.min(last_read + gap).into()));
    loop {
        let frame = tokio::select! {
            biased;
            frame = body.frame() => frame,
            () = &mut timer => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(ProxyError::BodyTimeout);
                }
                let next = last_read + gap;
                if now >= next {
                    return Err(ProxyError::BodyStalled { timeout: gap });
                }
                timer.as_mut().reset(deadline.min(next).into());
                continue;
            }
        };
        let Some(frame) = frame else { break };
        last_read = Instant::now();
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                return Err(match e.downcast::<hyper::Error>() {
                    Ok(e) if hung_up(&e) => ProxyError::BodyCut(*e),
                    Ok(e) => ProxyError::BodyRead(*e),
                    Err(_) => ProxyError::BodyTooLarge { limit },
                });
            }
        };
        let Ok(data) = frame.into_data() else { continue };
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            None => joined.extend_from_slice(&data),
            Some(earlier) => {
                joined.reserve(earlier.len() + data.len());
                joined.extend_from_slice(&earlier);
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

/// Whether reading a body failed because the client's connection ended early (end of file
/// before the promised length, a reset), rather than because the body broke its framing.
/// Over HTTP/2 also when the client reset the request's stream or sent GOAWAY (h2's error
/// names no I/O source: a connection that ended is h2's own "broken pipe").
fn hung_up(e: &hyper::Error) -> bool {
    fn cut(io: &std::io::Error) -> bool {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
        matches!(io.kind(), UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe)
    }
    if e.is_incomplete_message() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return cut(io);
        }
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            // A reset or GOAWAY h2 itself sent (a body that broke HTTP/2's rules) is not the
            // client's leaving: `is_remote` is only what the client sent.
            return h2.is_remote() || h2.get_io().is_some_and(cut);
        }
        source = s.source();
    }
    false
}

/// Awaits a wait on the client (its body) or the upstream (a send with its retries and their
/// backoff, or the reading of an answer), adding the time it took to `total` whatever its
/// outcome: a request that fails there did not spend that time in the proxy.
///
/// The wait comes pinned where the caller keeps it: taken by value, an `async fn` keeps its
/// argument and the future it awaits as two copies in its state, and the send's 1.9 KB,
/// counted twice, was a third of the request's 8.7 KB future, which hyper copies into place
/// for every request.
///
/// The time is added when the wait ends or is dropped: a request whose client leaves
/// mid-wait is recorded with the time it waited (see [`Pending`]).
async fn waited<F: Future>(total: &mut Duration, wait: Pin<&mut F>) -> F::Output {
    let _clock = WaitClock { total, started: Instant::now() };
    wait.await
}

/// Adds the time since `started` to `total` when dropped.
struct WaitClock<'a> {
    total: &'a mut Duration,
    started: Instant,
}

impl Drop for WaitClock<'_> {
    fn drop(&mut self) {
        *self.total += self.started.elapsed();
    }
}

/// An upstream's body read whole, up to [`MAX_UPSTREAM_BODY`] and by `deadline`.
///
/// # Errors
/// [`ProxyError::UpstreamBody`] when it breaks off, [`ProxyError::UpstreamTooLarge`] beyond
/// the limit, [`ProxyError::UpstreamTimeout`] past the deadline.
pub(crate) async fn read_upstream(
    body: UpstreamBody,
    deadline: Instant,
) -> Result<Bytes, ProxyError> {
    let read = async {
        let mut body = body;
        let mut out = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(ProxyError::UpstreamBody)?;
            if let Ok(data) = frame.into_data() {
                if out.len() + data.len() > MAX_UPSTREAM_BODY {
                    return Err(ProxyError::UpstreamTooLarge { limit: MAX_UPSTREAM_BODY });
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(out.freeze())
    };
    match tokio::time::timeout_at(deadline.into(), read).await {
        Ok(r) => r,
        Err(_) => Err(ProxyError::UpstreamTimeout {
            phase: "the request timeout",
            setting: "REQUEST_TIMEOUT",
        }),
    }
}

/// At most this many resends of one request for members the upstream refused: one for each
/// member a provider can leave out (OpenAI's five sampling members, the stream's usage and
/// `max_completion_tokens`; Claude's strict tools), so a provider that keeps finding refusals
/// cannot loop.
const MAX_RESENDS: u32 = 7;

async fn handle(
    state: &Arc<AppState>,
    client: &Client,
    req: Request<Incoming>,
    cut: Option<ConnectionCut>,
    pending: &mut Pending<'_>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let settings = &state.settings;
    let deadline = pending.started + settings.request_timeout;
    // An upstream's error, or an answer that is one, without the proxy's key.
    let upstream_error = |e| ProxyError::from_upstream(e, settings.api_key.expose());
    if state.recorder.refusing() {
        return Err(ProxyError::LogStoreStuck);
    }
    // The body gets the request's deadline, and a client that stops sending it is let go
    // after CLIENT_TIMEOUT. The time the client takes to send it is not the proxy's
    // (`x-uniproxy-overhead-ms`).
    let read = pin!(read_body(req, settings.max_body_size, deadline, settings.client_timeout));
    let body = waited(&mut pending.record.client_wait, read).await?;
    // The place under CONCURRENCY_LIMIT is taken once the body is here, not before.
    // CONCURRENCY_LIMIT is there for the upstream (its quota, its connections: the README
    // and SECURITY.md say to set it to what the upstream can take), and a request waiting
    // for its client's body asks nothing of it. Taken before, a few clients that send
    // their heads and then trickle their bodies (a byte every CLIENT_TIMEOUT less a second)
    // held every place until REQUEST_TIMEOUT and locked everyone else out. What reading
    // bodies costs the proxy is bounded without the limit: MAX_BODY_SIZE per connection,
    // and only as fast as the client sends it. A request over the limit is refused once
    // its body is read and checked, so its connection can carry the next request, a bad
    // request hears what is wrong with it whatever the load, and the refusal's record says
    // what was asked (the model, a stream or not, the body).
    pending.record.client_request = body.clone();
    let Prepared { mut up, ctx, client_stream, upstream_stream } =
        prepare(state, &body, &mut pending.record)?;
    let Some(guard) = state.enter() else {
        return Err(ProxyError::Overloaded { limit: settings.concurrency_limit });
    };
    // Held by a stream's relay once it has started; given back by one abandoned at its start.
    let mut guard = Some(guard);

    let mut resends = 0;
    // MAX_RETRIES, for every retry of this request, however its tries failed.
    let mut retries = settings.max_retries;
    let (status, upstream_body) = loop {
        let (status, upstream_body, whole): (u16, UpstreamBody, bool) = match &up.local_answer {
            Some(local) => {
                pending.record.attempts += 1;
                let body = Full::new(local.body.clone()).map_err(|never| match never {});
                (local.status, body.boxed_unsync(), false)
            }
            None => {
                let before = pending.record.attempts;
                let response = {
                    let record = &mut pending.record;
                    let sent = pin!(send_with_retries(
                        state,
                        client,
                        &up,
                        deadline,
                        &record.request_id,
                        &mut record.attempts,
                        retries,
                    ));
                    waited(&mut pending.upstream_wait, sent).await
                };
                let tries = pending.record.attempts.saturating_sub(before);
                retries = retries.saturating_sub(tries.saturating_sub(1));
                let response = response?;
                if !response.status().is_success() {
                    pending.retry_headers = RETRY_HEADERS
                        .iter()
                        .filter_map(|n| Some((n.clone(), response.headers().get(n)?.clone())))
                        .collect();
                    // A spent quota: no retry succeeds until someone pays, and the SDKs retry
                    // a 429 twice by default, each a refused call upstream.
                    if response.extensions().get::<RetryHint>() == Some(&RetryHint::Never) {
                        let no = header::HeaderValue::from_static("false");
                        pending
                            .retry_headers
                            .push((header::HeaderName::from_static("x-should-retry"), no));
                    }
                }
                let whole = response.headers().get(header::CONTENT_TYPE).is_some_and(not_a_stream);
                (response.status().as_u16(), response.into_body(), whole)
            }
        };
        if (200..300).contains(&status) {
            if !upstream_stream || whole {
                break (status, upstream_body);
            }
            // A stream is read up to its first frames before its head goes out: a stream that
            // opens with an error is that error's, and may be tried again (`SseRelay::open`).
            pending.record.status = 200;
            let translator = state.provider.stream(&ctx);
            let overhead = pending.overhead();
            pending.record.overhead = overhead;
            let mut relay = SseRelay::new(
                upstream_body,
                translator,
                state.clone(),
                pending.hand_on(),
                deadline,
                guard.take(),
                cut.clone(),
            );
            let opened = waited(&mut pending.upstream_wait, pin!(relay.open())).await;
            let Some(opening) = opened else {
                return Ok(stream_response(relay, overhead));
            };
            let (record, place) = relay.abandon();
            pending.take_back(record);
            guard = place;
            let (status, error) = match opening {
                Opening::Refused { status, error } => (status, error),
                Opening::Failed(e) => return Err(e),
            };
            let attempts = pending.record.attempts;
            let id = &pending.record.request_id;
            let again = pin!(retry::again(state, id, status, attempts, retries, deadline));
            if waited(&mut pending.upstream_wait, again).await {
                retries -= 1;
                // The record's usage is its answer's, as for the tries retried before any
                // stream (an error answer's tokens are not kept either).
                pending.record.usage = None;
                continue;
            }
            let error = TranslateError::Upstream { status, error };
            return Err(upstream_error(error));
        }
        let read = pin!(read_upstream(upstream_body, deadline));
        let error = waited(&mut pending.upstream_wait, read).await?;
        // What the provider can leave out and the upstream refused goes again without it
        // (see `Provider::refused`): the usage a stream asks for (the proxy's own addition,
        // unless the client asked for it too), a sampling member the configured model takes
        // only at its default, `max_completion_tokens`, Claude's strict tools. Each is left
        // out from then on, so a request resends at most once per member.
        let own_usage = upstream_stream && !ctx.include_usage;
        let resend = resends < MAX_RESENDS && state.provider.refused(status, &error, own_usage);
        if resend {
            let said = redacted_start(&error, 300, state.settings.api_key.expose());
            slog::warn!(state.log, "the upstream refuses a member the proxy leaves out from now on; sending again";
                "id" => &pending.record.request_id, "status" => status,
                "error" => said);
            resends += 1;
            pending.retry_headers.clear();
            up = prepare(state, &body, &mut pending.record)?.up;
            continue;
        }
        let error = state.provider.translate_error(status, &error);
        return Err(upstream_error(error));
    };

    // A server that answers a stream request with the whole answer (JSON), or with a page
    // (HTML), is read whole: the answer is replayed as a stream, and a page is an error.
    let read = pin!(read_upstream(upstream_body, deadline));
    let body = waited(&mut pending.upstream_wait, read).await?;
    // Kept for the record's error, should the answer not read as its platform's.
    pending.upstream_answer = Some(body.clone());
    let mut response = if client_stream {
        // SUPPORTS_STREAMING=false, or the whole answer to a stream request: replayed as a
        // valid stream.
        let translated =
            state.provider.translate_response(status, body, &ctx).map_err(upstream_error)?;
        pending.record.usage.clone_from(&translated.completion.usage);
        let mut sse = BytesMut::new();
        for frame in completion_to_frames(&translated.completion, ctx.include_usage) {
            sse.extend_from_slice(&frame);
        }
        // The completion as the translator serialized it (not serialized again).
        pending.record.response = translated.body;
        let mut r = Response::new(Either::Left(Full::new(sse.freeze())));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/event-stream"));
        r.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
        r
    } else {
        // An answer can be an error (OpenRouter answers 200 once the model has started).
        let answer = state.provider.translate_answer(status, body, &ctx).map_err(upstream_error)?;
        pending.record.usage = answer.usage;
        pending.record.response = answer.body.clone();
        json_response(200, answer.body)
    };
    pending.upstream_answer = None;
    pending.record.status = 200;
    response.headers_mut().insert("x-uniproxy-overhead-ms", overhead_header(pending.overhead()));
    pending.finish().await;
    Ok(response)
}

/// What the request becomes before anything is sent: the upstream's request and what the
/// answer's translation needs.
struct Prepared {
    up: UpstreamRequest,
    ctx: ResponseContext,
    client_stream: bool,
    upstream_stream: bool,
}

/// Parses the client's body, checks it against the settings and builds the upstream's
/// request, filling in what the record learns on the way. Not `async`: the parsed request
/// (776 bytes) would stay in the request future's state for the whole exchange.
///
/// A platform that takes the OpenAI format reads most bodies only as far as forwarding them
/// needs (`read_head`: the members the proxy rewrites, every value checked as the typed parse
/// checks it); the others, and any body that read leaves alone, get the typed parse.
fn prepare(
    state: &AppState,
    body: &Bytes,
    record: &mut RequestRecord,
) -> Result<Prepared, ProxyError> {
    if let Some(mut head) = state.provider.read_head(body) {
        let (client_stream, upstream_stream) =
            admit(state, record, &head.model, head.is_stream(), head.has_tools())?;
        let ctx = context(state, record, head.wants_stream_usage(), false, false);
        if client_stream && !upstream_stream {
            head.stream = None;
            head.stream_options = None;
        }
        let up = state.provider.build_request_head(head)?;
        return Ok(prepared(record, up, ctx, client_stream, upstream_stream));
    }
    let mut request: ChatCompletionRequest = match from_slice(body) {
        Ok(request) => request,
        Err(e) => {
            // Refused, but still filed under the model and stream flag it asked for, when the
            // body says them plainly: what an operator filters the log by.
            if let Ok(head) = serde_json::from_slice::<BodyHead>(body) {
                let model = head.model.as_ref().and_then(serde_json::Value::as_str);
                record.client_model = model.unwrap_or_default().to_owned();
                record.stream =
                    head.stream.as_ref().and_then(serde_json::Value::as_bool) == Some(true);
            }
            return Err(ProxyError::InvalidBody(e));
        }
    };
    let (client_stream, upstream_stream) =
        admit(state, record, &request.model, request.is_stream(), request.has_tools())?;
    let ctx = context(
        state,
        record,
        request.wants_stream_usage(),
        request.wants_json_object(),
        request.offers_only_functions(),
    );
    if client_stream && !upstream_stream {
        request.stream = None;
        request.stream_options = None;
    }
    let up = state.provider.build_request_from(request, body)?;
    Ok(prepared(record, up, ctx, client_stream, upstream_stream))
}

/// The model and stream flag of a body that is JSON but not a valid request, as any values
/// (one of another type counts as absent where it is read).
#[derive(serde::Deserialize)]
struct BodyHead {
    model: Option<serde_json::Value>,
    stream: Option<serde_json::Value>,
}

/// Notes the parsed request's model and stream flag in the record and checks the request
/// against the settings; gives whether the client asked for a stream and whether the upstream
/// is asked for one.
fn admit(
    state: &AppState,
    record: &mut RequestRecord,
    model: &str,
    stream: bool,
    has_tools: bool,
) -> Result<(bool, bool), ProxyError> {
    let settings = &state.settings;
    record.client_request_json = true;
    model.clone_into(&mut record.client_model);
    record.stream = stream;
    if !settings.enabled {
        return Err(ProxyError::Disabled);
    }
    if has_tools && !settings.supports_function_calling {
        return Err(ProxyError::FunctionCallingDisabled);
    }
    Ok((stream, stream && settings.supports_streaming))
}

/// What the answer's translation needs to know of the request. A head is read only for a
/// platform that takes the OpenAI format, which needs nothing done for a JSON object or for
/// legacy functions.
fn context(
    state: &AppState,
    record: &RequestRecord,
    include_usage: bool,
    json_object: bool,
    legacy_functions: bool,
) -> ResponseContext {
    ResponseContext {
        id: record.request_id.clone(),
        created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        model: state.settings.actual_name.clone(),
        include_usage,
        json_object,
        legacy_functions,
    }
}

/// The upstream's request built: the record keeps its body, what it copied of the client's,
/// and the fields it dropped.
fn prepared(
    record: &mut RequestRecord,
    mut up: UpstreamRequest,
    ctx: ResponseContext,
    client_stream: bool,
    upstream_stream: bool,
) -> Prepared {
    record.upstream_request = up.body.clone();
    record.upstream_copies = std::mem::take(&mut up.copied);
    record.upstream_changes = up.changes.take();
    record.dropped_fields.clone_from(&up.dropped);
    Prepared { up, ctx, client_stream, upstream_stream }
}
