//! What the server keeps per client connection, beside hyper's own state: the way to cut it
//! from outside hyper, and the HTTP/2 streams it has open ([`ConnectionCut`]), and its socket
//! with a send timeout ([`ClientIo`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Ends a client's connection from outside hyper, and says why it ended, for the records of
/// the requests it carried.
///
/// Two things cut a connection. A stream's watchdog ([`SseRelay`]) cuts it when the stream
/// is still open a second past the request's deadline: a stream whose client stops reading
/// is not polled, so its own timers never fire, and it would hold its place under
/// CONCURRENCY_LIMIT, its upstream connection and its record until the client closed. The
/// server's connection task waits on [`wait`](Self::wait) beside the connection, and drops
/// the connection when it fires. And the socket itself ([`ClientIo`]) fails the connection
/// when the client has taken no byte of an answer for CLIENT_TIMEOUT, stream or not: hyper
/// then drops the connection, and with it the answer it held (a whole answer of tens of
/// megabytes stayed in memory until the client closed).
///
/// [`SseRelay`]: crate::relay::SseRelay
#[derive(Clone, Default)]
pub struct ConnectionCut(Arc<CutState>);

#[derive(Default)]
struct CutState {
    notify: tokio::sync::Notify,
    /// Set when the client took nothing for CLIENT_TIMEOUT ([`ClientIo`]).
    stalled: AtomicBool,
    /// HTTP/2 streams open: handed to the service and not yet answered whole.
    open: AtomicUsize,
    /// HTTP/2 streams opened so far.
    opened: AtomicU64,
    /// Told when the last open stream ends.
    idle: tokio::sync::Notify,
}

/// An HTTP/2 stream open on its connection, from hyper's hand-over to the end of its answer's
/// body (held by the response body): a connection with one is not idle.
pub struct OpenStream(ConnectionCut);

impl Drop for OpenStream {
    fn drop(&mut self) {
        if self.0.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.0.idle.notify_one();
        }
    }
}

impl ConnectionCut {
    /// Resolves once the connection is to be cut.
    pub async fn wait(&self) {
        self.0.notify.notified().await;
    }

    /// Cuts the connection (its task, waiting on [`wait`](Self::wait), drops it).
    pub fn cut(&self) {
        self.0.notify.notify_one();
    }

    /// Cuts the connection at `at` unless the stream it watches ends first, which it tells
    /// by dropping the sender returned (a stream's watchdog: see [`ConnectionCut`]).
    pub fn watchdog(&self, at: tokio::time::Instant) -> tokio::sync::oneshot::Sender<()> {
        let (done, done_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(self.clone().watch(tokio::time::sleep_until(at), done_rx));
        done
    }

    /// Cuts the connection once `time_up` resolves, unless `ended` (the stream's end) has.
    /// Both may be found ready at once (the stream's last bytes went out in the runtime's
    /// turn that found the timer run out): the stream was answered whole then, and its
    /// connection is kept, so the end is looked at first.
    async fn watch(self, time_up: impl Future<Output = ()>, ended: impl Future) {
        tokio::select! {
            biased;
            _ = ended => {}
            () = time_up => self.cut(),
        }
    }

    /// Whether the connection failed because its client took no byte of an answer for
    /// CLIENT_TIMEOUT.
    pub fn client_stalled(&self) -> bool {
        self.0.stalled.load(Ordering::Relaxed)
    }

    /// Counts an HTTP/2 stream open until the value given is dropped.
    pub fn open_stream(&self) -> OpenStream {
        self.0.open.fetch_add(1, Ordering::AcqRel);
        self.0.opened.fetch_add(1, Ordering::Relaxed);
        OpenStream(self.clone())
    }

    /// Resolves once the connection has had no stream open for `limit` (and at most twice
    /// that): an idle HTTP/2 connection, which hyper would keep for ever, since a live client
    /// answers its pings. One timer per idle spell, none per stream.
    pub async fn idle_for(&self, limit: Duration) {
        loop {
            while self.0.open.load(Ordering::Acquire) > 0 {
                self.0.idle.notified().await;
            }
            let opened = self.0.opened.load(Ordering::Relaxed);
            tokio::time::sleep(limit).await;
            let open = self.0.open.load(Ordering::Acquire);
            if open == 0 && self.0.opened.load(Ordering::Relaxed) == opened {
                return;
            }
        }
    }
}

/// A response body that holds its stream's [`OpenStream`] (HTTP/2 only) until it ends.
pub struct Counted<B> {
    body: B,
    _open: Option<OpenStream>,
}

impl<B> Counted<B> {
    /// `body`, counted as `open` until dropped.
    pub fn new(body: B, open: Option<OpenStream>) -> Self {
        Counted { body, _open: open }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A client's socket that fails its writes once the client has taken no byte for
/// `send_timeout` (CLIENT_TIMEOUT), as nginx's `send_timeout`: the time between two
/// successful writes, not the whole answer, which REQUEST_TIMEOUT bounds for a stream.
///
/// Nothing is done per request or per write but noting that a write went through: the
/// timer is made the first time the socket is full, set when a write finds it full after
/// one went through, and polled only while it stays full. Only HTTP/1 answers show here;
/// an HTTP/2 stream whose client stops reading is held by flow control, not by the socket
/// (see `serve_with`).
pub struct ClientIo<T> {
    io: T,
    send_timeout: Duration,
    /// Made when the socket is first found full.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs: the socket was full and no write went through since.
    armed: bool,
    cut: ConnectionCut,
}

impl<T> ClientIo<T> {
    /// `io`, whose writes fail once its client takes nothing for `send_timeout`; `cut`
    /// learns of it.
    pub fn new(io: T, send_timeout: Duration, cut: ConnectionCut) -> Self {
        ClientIo { io, send_timeout, timer: None, armed: false, cut }
    }

    /// The socket is full: starts the timer if it is not running, and fails once it ran out.
    fn full<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if !self.armed {
            self.armed = true;
            let at = tokio::time::Instant::now() + self.send_timeout;
            match self.timer.as_mut() {
                Some(timer) => timer.as_mut().reset(at),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        if let Some(timer) = self.timer.as_mut()
            && timer.as_mut().poll(cx).is_ready()
        {
            self.cut.0.stalled.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took nothing of the answer for CLIENT_TIMEOUT",
            )));
        }
        Poll::Pending
    }

    /// A write that did not find the socket full.
    fn wrote<R>(&mut self, done: Poll<io::Result<R>>, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        match done {
            Poll::Pending => self.full(cx),
            done => {
                self.armed = false;
                done
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(done, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(done, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A flush moves no byte of its own (a TCP socket's is done at once): not progress.
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::ConnectionCut;

    /// Whether `cut` was cut (its `wait` resolves at once).
    async fn was_cut(cut: &ConnectionCut) -> bool {
        tokio::time::timeout(Duration::ZERO, cut.wait()).await.is_ok()
    }

    #[tokio::test]
    async fn a_stream_that_ends_as_its_watchdog_fires_keeps_its_connection() {
        // A slow reader takes a stream's last bytes past its deadline and the grace after
        // it: the stream ends, and the watchdog's time is up, in the same turn of the
        // runtime. The stream was answered whole, so its connection must stay: the cut
        // closed a keep-alive connection under the request the client sent next on it,
        // which was recorded as a 499, the client's leaving. Both at once, every time.
        for _ in 0..64 {
            let cut = ConnectionCut::default();
            let (stream_open, ended) = tokio::sync::oneshot::channel::<()>();
            drop(stream_open);
            cut.clone().watch(std::future::ready(()), ended).await;
            assert!(!was_cut(&cut).await, "the connection of a stream that ended was cut");
        }
    }

    #[tokio::test]
    async fn a_stream_still_open_at_its_watchdogs_time_has_its_connection_cut() {
        let cut = ConnectionCut::default();
        let _stream_open = cut.watchdog(tokio::time::Instant::now());
        tokio::time::timeout(Duration::from_secs(10), cut.wait())
            .await
            .expect("the watchdog cuts the connection of a stream still open");
    }
}
