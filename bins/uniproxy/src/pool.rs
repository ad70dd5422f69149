//! The connection pool for a plain-HTTP upstream (a local server: Ollama, vLLM, llama.cpp).
//!
//! One host, HTTP/1.1 only (there is no h2c), one runtime thread: a list of idle
//! connections, newest last, is all the pool needs. hyper-util's general pool, which the
//! HTTPS upstreams keep, hashes its key three times a request, spawns a task per response to
//! wait for the connection to be free again, and moves its futures around: callgrind through
//! the proxy, 1 KB requests, 92,000 instructions a request on the runtime thread with it and
//! 85,000 with this.
//!
//! A connection goes back to the list when its response body has been read to the end (see
//! [`PooledBody`]), or, for a body dropped before that, once hyper has read the rest of the
//! response; if the rest never comes, the connection closes. A request that a reused
//! connection could not start (the server closed it while it was idle) is sent again on
//! another connection. All three as hyper-util does.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Uri;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;

/// An idle connection is closed after this long unused (hyper-util's default, kept).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// At most this many idle connections are kept (as for the HTTPS pool).
pub const MAX_IDLE: usize = 1024;

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made.
    #[error("could not connect")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed while the request was sent or the answer awaited.
    #[error("the connection failed")]
    Send(#[source] hyper::Error),
}

impl SendError {
    /// Whether the failure was in making the connection.
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

struct Idle {
    sender: http1::SendRequest<Full<Bytes>>,
    since: Instant,
}

struct Shared {
    idle: Mutex<VecDeque<Idle>>,
    idle_timeout: Duration,
    max_idle: usize,
    /// Whether a task is sweeping out the expired connections (one at most).
    sweeping: AtomicBool,
}

impl Shared {
    /// Newest first; the expired ones are dropped on the way.
    fn take(&self) -> Option<http1::SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(entry) = idle.pop_back() {
            if !entry.sender.is_closed() && entry.since.elapsed() < self.idle_timeout {
                return Some(entry.sender);
            }
        }
        None
    }

    fn put(&self, sender: http1::SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // The oldest are at the front: drop what expired, and make room.
        while idle.front().is_some_and(|e| {
            e.sender.is_closed() || now.duration_since(e.since) >= self.idle_timeout
        }) {
            idle.pop_front();
        }
        if idle.len() >= self.max_idle {
            idle.pop_front();
        }
        idle.push_back(Idle { sender, since: now });
    }

    /// Drops what expired; `true` while something is left to watch.
    fn sweep(&self) -> bool {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        idle.retain(|e| !e.sender.is_closed() && now.duration_since(e.since) < self.idle_timeout);
        !idle.is_empty()
    }

    /// Starts the sweeper if none runs. Every idle timeout it closes the connections idle
    /// longer than that (so none stays idle past two), as hyper-util's does; it stops when
    /// the list is empty, and the next connection put in it starts another.
    fn sweep_later(self: &Arc<Self>) {
        if self.sweeping.load(Ordering::Relaxed) || self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.sweeping.store(false, Ordering::Release);
            return;
        };
        let shared = Arc::downgrade(self);
        let every = self.idle_timeout;
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(shared) = shared.upgrade() else { return };
                if !shared.sweep() {
                    shared.sweeping.store(false, Ordering::Release);
                    return;
                }
            }
        });
    }
}

/// The pool; cheap to clone (clones share the connections). Made on, and used from, one
/// runtime thread: connections are driven by tasks spawned where they were made.
#[derive(Clone)]
pub struct Pool {
    connector: HttpConnector,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool that makes its connections with `connector`.
    pub fn new(connector: HttpConnector) -> Self {
        Pool::with_limits(connector, IDLE_TIMEOUT, MAX_IDLE)
    }

    /// [`Pool::new`] with other limits (for tests).
    pub fn with_limits(connector: HttpConnector, idle_timeout: Duration, max_idle: usize) -> Self {
        let idle = Mutex::new(VecDeque::new());
        let sweeping = AtomicBool::new(false);
        Pool { connector, shared: Arc::new(Shared { idle, idle_timeout, max_idle, sweeping }) }
    }

    /// Sends `req` (its URI in origin form, its `Host` header set) to `target` (the
    /// upstream's scheme and authority; only what a connection needs) on an idle connection
    /// or a new one.
    ///
    /// # Errors
    /// [`SendError::Connect`] when no connection could be made, [`SendError::Send`] when the
    /// connection failed after the request may have reached the upstream.
    pub async fn send(
        &self,
        target: &Uri,
        mut req: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<PooledBody>, SendError> {
        loop {
            let (mut sender, reused) = match self.shared.take() {
                Some(sender) => (sender, true),
                None => (self.connect(target).await?, false),
            };
            // A reused connection may still be finishing its last response: wait for it.
            if reused && sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(response) => {
                    let back = Some(Back { sender, pool: Arc::downgrade(&self.shared) });
                    return Ok(response.map(|inner| PooledBody { inner, back }));
                }
                Err(mut e) => match e.take_message() {
                    // Not started, on a connection the server had closed: another one.
                    Some(again) if reused => req = again,
                    _ => return Err(SendError::Send(e.into_error())),
                },
            }
        }
    }

    async fn connect(&self, target: &Uri) -> Result<http1::SendRequest<Full<Bytes>>, SendError> {
        let mut connector = self.connector.clone();
        let io = connector.call(target.clone()).await.map_err(|e| SendError::Connect(e.into()))?;
        let (sender, conn) =
            http1::handshake(io).await.map_err(|e| SendError::Connect(e.into()))?;
        // The connection is driven by its own task; it ends when the connection closes.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

/// Where a connection goes back once its response has been read.
#[derive(Debug)]
struct Back {
    sender: http1::SendRequest<Full<Bytes>>,
    pool: Weak<Shared>,
}

impl Back {
    fn home(self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.put(self.sender);
            pool.sweep_later();
        }
    }

    /// For a body dropped before its end was read: the connection goes back once it is free
    /// again, which it is if hyper has read the rest of the response (a stream's last chunk
    /// usually comes with its last event, which is where the relay stops reading). If the
    /// rest had not come, hyper closes the connection, and it is dropped.
    fn home_when_free(mut self) {
        if self.sender.is_ready() {
            return self.home();
        }
        if self.sender.is_closed() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if self.sender.ready().await.is_ok() {
                    self.home();
                }
            });
        }
    }
}

/// A response body from the pool: the connection goes back to the pool at its end.
#[derive(Debug)]
pub struct PooledBody {
    inner: Incoming,
    back: Option<Back>,
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if let Some(back) = self.back.take() {
            back.home_when_free();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            // An error: the connection is not reused (dropping it closes it).
            Poll::Ready(Some(Err(_))) => {
                this.back = None;
                false
            }
            Poll::Pending => false,
        };
        if ended && let Some(back) = this.back.take() {
            back.home();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A scripted HTTP/1.1 server for the tests of this module and of `upstream.rs`: what goes on
/// the wire, and when connections are opened and closed.
#[cfg(test)]
pub(crate) mod test_server {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use hyper::Uri;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// What the server answers every request with.
    pub(crate) const ANSWER: &str = "{\"ok\":true}";

    /// How the server ends each exchange.
    #[derive(Clone, Copy, PartialEq)]
    pub(crate) enum After {
        /// Keeps the connection open.
        KeepAlive,
        /// Says `Connection: close` and closes.
        SaysClose,
        /// Closes without a word, as a server whose keep-alive ran out does.
        Closes,
        /// Sends the head and part of the body, then nothing more.
        Stalls,
    }

    /// A server that answers every request with [`ANSWER`]; it counts the connections it
    /// accepted and the ones that ended, keeps the request heads (lowercased), and closes an
    /// idle connection when told to.
    pub(crate) struct Server {
        /// `http://127.0.0.1:PORT/`.
        pub(crate) target: Uri,
        pub(crate) accepted: Arc<AtomicUsize>,
        pub(crate) ended: Arc<AtomicUsize>,
        pub(crate) heads: Arc<Mutex<Vec<String>>>,
        /// Closes the connection that waits for its next request.
        pub(crate) close: Arc<tokio::sync::Notify>,
        /// Says that it has.
        pub(crate) closed: tokio::sync::mpsc::UnboundedReceiver<()>,
    }

    pub(crate) async fn server(after: After) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, ended) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let close = Arc::new(tokio::sync::Notify::new());
        let (tell, closed) = tokio::sync::mpsc::unbounded_channel();
        let (a, e, h, c) = (accepted.clone(), ended.clone(), heads.clone(), close.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let (e, h, c, tell) = (e.clone(), h.clone(), c.clone(), tell.clone());
                tokio::spawn(async move {
                    if exchange(socket, after, &h, &c).await {
                        let _ = tell.send(());
                    }
                    e.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        let target = format!("http://{addr}/").parse().unwrap();
        Server { target, accepted, ended, heads, close, closed }
    }

    /// Reads what `socket` has into `buf`; `false` once the client has closed it.
    async fn read_more(socket: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
        let mut chunk = [0; 4096];
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Answers requests on `socket` until the client closes it, `after` says to stop, or
    /// `close` is notified while it waits for a request (then `true`).
    async fn exchange(
        mut socket: TcpStream,
        after: After,
        heads: &Mutex<Vec<String>>,
        close: &tokio::sync::Notify,
    ) -> bool {
        let mut buf = Vec::new();
        loop {
            // The head, then a body of its Content-Length.
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                tokio::select! {
                    more = read_more(&mut socket, &mut buf) => if !more { return false },
                    () = close.notified(), if buf.is_empty() => return true,
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            while buf.len() < head_end + length {
                if !read_more(&mut socket, &mut buf).await {
                    return false;
                }
            }
            buf.drain(..head_end + length);
            heads.lock().unwrap().push(head);
            if after == After::Stalls {
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial\":";
                if socket.write_all(head.as_bytes()).await.is_ok() {
                    // Until the client closes.
                    while read_more(&mut socket, &mut Vec::new()).await {}
                }
                return false;
            }
            let close = if after == After::SaysClose { "connection: close\r\n" } else { "" };
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{close}\
                 content-length: {}\r\n\r\n{ANSWER}",
                ANSWER.len()
            );
            if socket.write_all(reply.as_bytes()).await.is_err() || after != After::KeepAlive {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tokio::net::TcpListener;

    use super::test_server::{ANSWER, After, server};
    use super::*;

    impl Pool {
        /// How many idle connections are kept now.
        fn idle(&self) -> usize {
            self.shared.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
        }
    }

    fn request(path: &str) -> hyper::Request<Full<Bytes>> {
        hyper::Request::post(path)
            .header(hyper::header::HOST, "upstream")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(b"{\"model\":\"m\"}")))
            .unwrap()
    }

    fn pool() -> Pool {
        Pool::new(HttpConnector::new())
    }

    async fn read(response: hyper::Response<PooledBody>) -> Bytes {
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap().to_bytes()
    }

    /// Waits (at most a second) until `f` holds.
    async fn until(f: impl Fn() -> bool) -> bool {
        for _ in 0..200 {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        f()
    }

    #[tokio::test]
    async fn a_connection_is_used_again_once_its_answer_was_read() {
        let server = server(After::KeepAlive).await;
        let pool = pool();
        for _ in 0..5 {
            let response = pool.send(&server.target, request("/v1/chat")).await.unwrap();
            assert_eq!(read(response).await, ANSWER);
        }
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle(), 1);
        // The request went as given: origin form, the caller's Host.
        let heads = server.heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 5);
        assert!(heads[0].starts_with("post /v1/chat http/1.1\r\n"), "{}", heads[0]);
        assert!(heads[0].contains("\r\nhost: upstream\r\n"), "{}", heads[0]);
    }

    #[tokio::test]
    async fn requests_at_once_get_a_connection_each_and_all_are_kept() {
        let server = server(After::KeepAlive).await;
        let pool = pool();
        let (a, b, c) = tokio::join!(
            pool.send(&server.target, request("/a")),
            pool.send(&server.target, request("/b")),
            pool.send(&server.target, request("/c")),
        );
        assert_eq!(pool.idle(), 0);
        for response in [a, b, c] {
            read(response.unwrap()).await;
        }
        assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
        assert_eq!(pool.idle(), 3);
    }

    #[tokio::test]
    async fn no_more_than_max_idle_are_kept_the_oldest_go() {
        let server = server(After::KeepAlive).await;
        let pool = Pool::with_limits(HttpConnector::new(), IDLE_TIMEOUT, 2);
        let (a, b, c) = tokio::join!(
            pool.send(&server.target, request("/a")),
            pool.send(&server.target, request("/b")),
            pool.send(&server.target, request("/c")),
        );
        for response in [a, b, c] {
            read(response.unwrap()).await;
        }
        assert_eq!(pool.idle(), 2);
        // The one let go is closed: the server sees its end.
        assert!(until(|| server.ended.load(Ordering::SeqCst) == 1).await);
    }

    #[tokio::test]
    async fn a_body_dropped_after_its_last_bytes_came_keeps_its_connection() {
        // As the stream relay does: it stops at the last event, before the body's end.
        let server = server(After::KeepAlive).await;
        let pool = pool();
        for _ in 0..5 {
            let response = pool.send(&server.target, request("/a")).await.unwrap();
            drop(response);
            assert!(until(|| pool.idle() == 1).await);
        }
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(server.ended.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_body_dropped_mid_way_takes_its_connection_down() {
        let server = server(After::Stalls).await;
        let pool = pool();
        let mut body = pool.send(&server.target, request("/a")).await.unwrap().into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "{\"partial\":");
        drop(body);
        assert!(until(|| server.ended.load(Ordering::SeqCst) == 1).await);
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn a_connection_the_server_closes_is_not_used_again() {
        for after in [After::SaysClose, After::Closes] {
            let server = server(after).await;
            let pool = pool();
            for n in 1..=3 {
                let response = pool.send(&server.target, request("/a")).await.unwrap();
                assert_eq!(read(response).await, ANSWER);
                // The server's end reaches the connection's task.
                assert!(until(|| server.ended.load(Ordering::SeqCst) == n).await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
        }
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced_without_an_error() {
        // The server closes an idle connection, and the next request comes at once: before
        // the connection's task has run, so the pool still holds it. hyper gives the request
        // back unsent, and it goes on a new connection.
        let mut server = server(After::KeepAlive).await;
        for n in 1..=10 {
            let pool = pool();
            read(pool.send(&server.target, request("/a")).await.unwrap()).await;
            assert_eq!(pool.idle(), 1);
            server.close.notify_one();
            server.closed.recv().await.unwrap();
            let response = pool.send(&server.target, request("/b")).await.unwrap();
            assert_eq!(read(response).await, ANSWER);
            assert_eq!(server.accepted.load(Ordering::SeqCst), 2 * n);
            // The new connection is the one kept; the closed one is gone.
            assert_eq!(pool.idle(), 1);
        }
    }

    #[tokio::test]
    async fn idle_connections_expire_and_are_closed() {
        let server = server(After::KeepAlive).await;
        let pool = Pool::with_limits(HttpConnector::new(), Duration::from_millis(100), MAX_IDLE);
        read(pool.send(&server.target, request("/a")).await.unwrap()).await;
        assert_eq!(pool.idle(), 1);
        // The sweeper closes it without another request.
        assert!(until(|| server.ended.load(Ordering::SeqCst) == 1).await);
        assert_eq!(pool.idle(), 0);
        read(pool.send(&server.target, request("/b")).await.unwrap()).await;
        assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_that_comes_back_after_the_sweeper_stopped_still_expires() {
        let server = server(After::KeepAlive).await;
        let pool = Pool::with_limits(HttpConnector::new(), Duration::from_millis(100), MAX_IDLE);
        read(pool.send(&server.target, request("/a")).await.unwrap()).await;
        // In use while the sweeper finds the list empty and stops.
        let response = pool.send(&server.target, request("/b")).await.unwrap();
        assert!(until(|| !pool.shared.sweeping.load(Ordering::SeqCst)).await);
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
        read(response).await;
        assert_eq!(pool.idle(), 1);
        assert!(until(|| server.ended.load(Ordering::SeqCst) == 1).await);
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn no_server_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target: Uri = format!("http://{}/", listener.local_addr().unwrap()).parse().unwrap();
        drop(listener);
        let e = pool().send(&target, request("/a")).await.unwrap_err();
        assert!(e.is_connect(), "{e:?}");
    }
}
