//! The streaming relay: an HTTP body that reads the upstream's SSE body, decodes it, runs
//! each event through the platform's stream translator and yields the frames for the client.
//!
//! It is a `Body`, not a task: hyper polls it when the client's socket can take more, every
//! frame is flushed as soon as the upstream has nothing more ready, and when the client goes
//! away hyper drops it, which drops the upstream body and closes that connection at once.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;
use uniproxy_translate::{StreamTranslator, sse};
use uniproxy_wire::ErrorResponse;

use crate::connection::ConnectionCut;
use crate::error::{ProxyError, redact_key};
use crate::record::{RequestRecord, Waiting, ended_early, now_ms};
use crate::state::{AppState, InFlightGuard};

/// The upstream's body, whatever produced it (the network, or the mock platform).
pub type UpstreamBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// Raw frames kept for the log are capped at this many bytes.
const RAW_CAP: usize = 8 << 20;

/// See the module docs.
pub struct SseRelay {
    upstream: Option<UpstreamBody>,
    decoder: sse::Decoder,
    translator: Box<dyn StreamTranslator>,
    pending: VecDeque<Bytes>,
    /// Reused for every event's frames.
    out: Vec<Bytes>,
    ended: bool,
    idle: Pin<Box<Sleep>>,
    deadline: Pin<Box<Sleep>>,
    idle_for: std::time::Duration,
    state: Arc<AppState>,
    record: Option<RequestRecord>,
    /// The finished record, when the request log's queue had no room for it: the body ends
    /// once it is queued, so that a full queue slows the stream's client and not the runtime
    /// thread.
    waiting: Option<Waiting>,
    raw: Option<BytesMut>,
    /// Time spent in this body's own work (decoding, translating).
    busy: std::time::Duration,
    /// The request's place under CONCURRENCY_LIMIT, held until the stream ends.
    guard: Option<InFlightGuard>,
    /// Whether the translator has made a frame for the client (an event may make none: an
    /// empty keep-alive, a comment's).
    framed: bool,
    /// How the stream failed before any frame but an upstream's error went to the client's
    /// queue (see [`open`](Self::open)).
    opening: Option<Opening>,
    /// Ends the deadline's watchdog (see [`ConnectionCut`]) when the relay goes.
    _watchdog: Option<tokio::sync::oneshot::Sender<()>>,
    /// The client's connection, which says whether it was cut for a client that read nothing.
    cut: Option<ConnectionCut>,
    /// Resolves when the shutdown's grace period is over ([`AppState::cut_off`]).
    cut_off: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// How a stream failed before any frame went to its client ([`SseRelay::open`]).
#[derive(Debug)]
pub enum Opening {
    /// Its first event that made a frame was an error the upstream reported (Claude's
    /// `overloaded_error` event, an OpenRouter chunk with an `error`, Groq's error event),
    /// with the HTTP status that error stands for: the caller retries the request as it
    /// would that status, or answers with it.
    Refused {
        /// The status.
        status: u16,
        /// The error.
        error: Box<ErrorResponse>,
    },
    /// The upstream sent no event before the stream broke off, ended, timed out, or the
    /// shutdown cut it: the request's error, as for a whole answer.
    Failed(ProxyError),
}

/// How long after the request's deadline a stream that its client does not read is cut.
/// A client that reads gets the deadline's error event on time; this is for one that doesn't.
const UNREAD_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// `bytes` without the proxy's key (`key`), quoted or masked (see [`redact_key`]).
fn redacted(bytes: Bytes, key: &str) -> Bytes {
    let text = String::from_utf8_lossy(&bytes);
    let mut out = text.clone().into_owned();
    redact_key(&mut out, key);
    if out == text { bytes } else { Bytes::from(out) }
}

impl SseRelay {
    /// A relay for `upstream`; `record` is completed and written when the stream ends or the
    /// client goes away.
    pub fn new(
        upstream: UpstreamBody,
        translator: Box<dyn StreamTranslator>,
        state: Arc<AppState>,
        record: RequestRecord,
        deadline: Instant,
        guard: Option<InFlightGuard>,
        cut: Option<ConnectionCut>,
    ) -> Self {
        let watchdog = cut
            .as_ref()
            .map(|cut| cut.watchdog(tokio::time::Instant::from_std(deadline) + UNREAD_GRACE));
        let idle_for = state.settings.stream_idle_timeout;
        let raw = state.settings.log_raw_chunks.then(BytesMut::new);
        let cut_state = state.clone();
        let cut_off = Box::pin(async move { cut_state.cut_off().await });
        SseRelay {
            upstream: Some(upstream),
            // An event may be as large as a whole answer may be (`sse::MAX_EVENT`); one larger
            // ends the stream.
            decoder: sse::Decoder::new(),
            translator,
            pending: VecDeque::new(),
            out: Vec::new(),
            ended: false,
            idle: Box::pin(tokio::time::sleep(idle_for)),
            deadline: Box::pin(tokio::time::sleep_until(deadline.into())),
            idle_for,
            state,
            record: Some(record),
            waiting: None,
            raw,
            busy: std::time::Duration::ZERO,
            guard,
            framed: false,
            opening: None,
            _watchdog: watchdog,
            cut,
            cut_off,
        }
    }

    fn take_events(&mut self, events: Vec<sse::SseEvent>) {
        for ev in events {
            let erred = self.translator.assembled().error.is_some();
            match self.translator.push_into(&ev, &mut self.out) {
                Ok(()) => {
                    if !erred && self.translator.assembled().error.is_some() {
                        // An error the upstream reported in the stream: its frame may quote
                        // the proxy's key, as its error answers may.
                        let key = self.state.settings.api_key.expose();
                        for frame in &mut self.out {
                            *frame = redacted(std::mem::take(frame), key);
                        }
                    }
                    if !self.framed && !self.out.is_empty() {
                        self.framed = true;
                        // The first frame is an error the upstream reported: see `open`.
                        let a = self.translator.assembled();
                        if let (Some(status), Some(error)) = (a.error_status, &a.error) {
                            let error = Box::new(error.clone());
                            self.opening = Some(Opening::Refused { status, error });
                        }
                    }
                    self.pending.extend(self.out.drain(..));
                }
                Err(e) => {
                    self.fail(e.to_error_response(), e.to_string());
                    self.fault_before_frames(|| ProxyError::Translate(e));
                    return;
                }
            }
            if self.translator.is_done() {
                self.end_upstream();
                return;
            }
        }
    }

    fn fail(&mut self, error: ErrorResponse, detail: String) {
        self.pending.push_back(sse::encode(&error));
        if let Some(r) = self.record.as_mut() {
            r.error_type = error.error.kind().map(str::to_owned);
            r.error_message = Some(detail);
        }
        self.end_upstream();
    }

    /// Ends the stream for a wait that ran out (`phase`, set by `setting`): an error event
    /// saying `message`, or, before any frame, the request's 504.
    fn time_out(&mut self, message: &'static str, phase: &'static str, setting: &'static str) {
        let error = ErrorResponse::new(message, "timeout_error").with_code("upstream_timeout");
        self.fail(error, message.to_owned());
        self.fault_before_frames(|| ProxyError::UpstreamTimeout { phase, setting });
    }

    /// Keeps `fault` as the stream's failure when no frame was made for the client yet.
    fn fault_before_frames(&mut self, fault: impl FnOnce() -> ProxyError) {
        if !self.framed && self.opening.is_none() {
            self.opening = Some(Opening::Failed(fault()));
        }
    }

    fn end_upstream(&mut self) {
        self.upstream = None;
        self.ended = true;
    }

    fn finish_upstream(&mut self) {
        if let Some(ev) = self.decoder.finish() {
            self.take_events(vec![ev]);
        }
        if !self.ended {
            match self.translator.finish() {
                Ok(frames) => self.pending.extend(frames),
                Err(e) => self.fail(e.to_error_response(), e.to_string()),
            }
            // Ended before any event made a frame: the upstream answered nothing.
            let nothing = "the stream ended before its first event";
            self.fault_before_frames(|| ProxyError::UpstreamDropped(nothing.into()));
        }
        self.end_upstream();
    }

    /// Completes and takes the record. `client_gone`: the client left before the end.
    fn finished_record(&mut self, client_gone: bool) -> Option<RequestRecord> {
        let mut r = self.record.take()?;
        let a = self.translator.assembled();
        r.finished_ms = now_ms();
        r.usage.clone_from(&a.usage);
        if let Some(e) = &a.error
            && r.error_message.is_none()
        {
            r.error_type = e.error.kind().map(str::to_owned);
            let mut message = e.error.message.clone();
            redact_key(&mut message, self.state.settings.api_key.expose());
            r.error_message = Some(message);
        }
        if client_gone {
            ended_early(&mut r, self.state.cutting_off(), "the end of the stream");
        }
        r.response = serde_json::to_vec(a).map(Bytes::from).unwrap_or_default();
        if a.error.is_some() {
            r.response = redacted(r.response.clone(), self.state.settings.api_key.expose());
        }
        r.raw_chunks = self.raw.take().map(BytesMut::freeze);
        r.overhead += self.busy;
        Some(r)
    }

    /// Reads the upstream once: what it sent, its end, or a timeout or the shutdown's cut once
    /// it has nothing ready. `Ready` when that left frames for the client or ended the
    /// stream, or when the upstream may have more at once.
    fn poll_upstream(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(upstream) = self.upstream.as_mut() else {
            self.ended = true;
            return Poll::Ready(());
        };
        match Pin::new(upstream).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let started = Instant::now();
                if let Ok(data) = frame.into_data() {
                    let mut events = Vec::new();
                    let fed = self.decoder.feed_into(&data, &mut events);
                    self.take_events(events);
                    if let Err(e) = fed
                        && !self.ended
                    {
                        self.fail(e.to_error_response(), e.to_string());
                        self.fault_before_frames(|| ProxyError::Translate(e));
                    }
                }
                let idle_until = tokio::time::Instant::now() + self.idle_for;
                self.idle.as_mut().reset(idle_until);
                self.busy += started.elapsed();
            }
            Poll::Ready(Some(Err(e))) => {
                let error = ErrorResponse::new(
                    "the upstream connection failed mid-stream",
                    "upstream_error",
                )
                .with_code("upstream_stream_error");
                self.fail(error, format!("the upstream connection failed mid-stream: {e}"));
                self.fault_before_frames(|| ProxyError::UpstreamBody(e));
            }
            Poll::Ready(None) => {
                let started = Instant::now();
                self.finish_upstream();
                self.busy += started.elapsed();
            }
            Poll::Pending => {
                if self.cut_off.as_mut().poll(cx).is_ready() {
                    // The error a whole answer cut off gets, recorded as every request
                    // the shutdown cut off is.
                    let error = ProxyError::ShuttingDown.to_error_response();
                    self.pending.push_back(sse::encode(&error));
                    if let Some(r) = self.record.as_mut() {
                        ended_early(r, true, "the end of the stream");
                    }
                    self.fault_before_frames(|| ProxyError::ShuttingDown);
                    self.end_upstream();
                    return Poll::Ready(());
                }
                if self.deadline.as_mut().poll(cx).is_ready() {
                    let message =
                        "the upstream stream exceeded the request timeout (REQUEST_TIMEOUT)";
                    self.time_out(message, "the request timeout", "REQUEST_TIMEOUT");
                    return Poll::Ready(());
                }
                if self.idle.as_mut().poll(cx).is_ready() {
                    let message = "the upstream sent nothing for too long (STREAM_IDLE_TIMEOUT)";
                    self.time_out(message, "the stream's idle timeout", "STREAM_IDLE_TIMEOUT");
                    return Poll::Ready(());
                }
                return Poll::Pending;
            }
        }
        Poll::Ready(())
    }

    /// Reads the upstream until the stream's first frames for the client are ready (or the
    /// stream has ended), before the response's head goes out, and says how the stream failed
    /// if it did before any frame was made for it: nothing of the stream has gone to the
    /// client, so the request fails as a whole answer would, with a status.
    pub async fn open(&mut self) -> Option<Opening> {
        std::future::poll_fn(|cx| {
            while self.pending.is_empty() && !self.ended {
                std::task::ready!(self.poll_upstream(cx));
            }
            Poll::Ready(())
        })
        .await;
        self.opening.take()
    }

    /// The relay given up before its head went out (see [`open`](Self::open)): its record,
    /// not written, with the usage the stream reported (an error chunk may say what was
    /// billed, as OpenRouter's does), and the request's place under CONCURRENCY_LIMIT.
    pub fn abandon(mut self) -> (Option<RequestRecord>, Option<InFlightGuard>) {
        let mut record = self.record.take();
        if let Some(r) = record.as_mut() {
            r.usage.clone_from(&self.translator.assembled().usage);
        }
        (record, self.guard.take())
    }

    fn emit(&mut self, frame: Bytes) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(r) = self.record.as_mut()
            && r.first_byte_ms.is_none()
        {
            r.first_byte_ms = Some(now_ms());
        }
        if let Some(raw) = self.raw.as_mut()
            && raw.len() + frame.len() <= RAW_CAP
        {
            raw.extend_from_slice(&frame);
        }
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }
}

impl Body for SseRelay {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        loop {
            if let Some(frame) = this.pending.pop_front() {
                // Frames made from one upstream read go out as one HTTP chunk: fewer chunk
                // headers and writes, and the client still gets each event the moment the
                // upstream sent it.
                if this.pending.is_empty() {
                    return this.emit(frame);
                }
                let len = frame.len() + this.pending.iter().map(Bytes::len).sum::<usize>();
                let mut joined = BytesMut::with_capacity(len);
                joined.extend_from_slice(&frame);
                for f in this.pending.drain(..) {
                    joined.extend_from_slice(&f);
                }
                return this.emit(joined.freeze());
            }
            if this.ended {
                if let Some(r) = this.finished_record(false) {
                    this.waiting = this.state.recorder.record_polled(r);
                }
                if let Some(waiting) = this.waiting.as_mut() {
                    std::task::ready!(waiting.poll(cx));
                    this.waiting = None;
                }
                return Poll::Ready(None);
            }
            std::task::ready!(this.poll_upstream(cx));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.pending.is_empty() && self.record.is_none() && self.waiting.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for SseRelay {
    fn drop(&mut self) {
        // Gone while the finished record waited for room: `waiting`, dropped with the relay,
        // queues it. Still holding the record: the client went away before the end.
        if let Some(mut r) = self.finished_record(true) {
            let stalled = self.cut.as_ref().is_some_and(ConnectionCut::client_stalled);
            let late = self.deadline.deadline() <= tokio::time::Instant::now();
            if (stalled || late) && !self.state.cutting_off() {
                // Cut because the client stopped reading: by its socket (nothing taken for
                // CLIENT_TIMEOUT) or by the watchdog (past the deadline).
                r.status = 504;
                r.error_type = Some("timeout_error".to_owned());
                r.error_message = Some(
                    if stalled {
                        "the client did not read the stream: it took nothing for \
                         CLIENT_TIMEOUT, and its connection was closed"
                    } else {
                        "the client did not read the stream within the request timeout \
                         (REQUEST_TIMEOUT): its connection was closed"
                    }
                    .to_owned(),
                );
            }
            self.state.recorder.record_now(r);
        }
    }
}
