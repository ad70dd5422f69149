#![allow(clippy::unwrap_used, clippy::expect_used)]
// Each test file uses a different part of this module, and its items are `pub` so that the
// test files can reach them; neither says anything about the code.
#![allow(dead_code, unreachable_pub)]

//! What the end-to-end tests share: a programmable mock upstream ([`MockUpstream`]), the
//! proxy started in-process ([`Proxy`]), and a small HTTP client that shows status, headers
//! and body chunks as they arrive ([`send`], [`open_stream`]).
//!
//! Payloads the mocks send are written here and in the tests, in the shape of the real
//! OpenAI and Azure wire recordings; no test reads a fixture from outside the repository.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use uniproxy::AppState;
use uniproxy_config::{Platform, Secret, Settings};
use uniproxy_logstore::{Entry, LogStore, Query, StoreOptions};

/// The key the proxy must send upstream.
pub const UPSTREAM_KEY: &str = "sk-upstream-secret";
/// The model the proxy must send upstream, whatever the client asked for.
pub const ACTUAL_NAME: &str = "gpt-4o-mini-2024-07-18";
/// How long any single wait in a test may take before the test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// An outbound HTTP proxy (HTTPS_PROXY), in front of a mock upstream.
// ---------------------------------------------------------------------------------------

/// A forward proxy that takes `CONNECT host:port` (answering 200 and joining the connection
/// to `target`, whatever host was asked for) and absolute-form requests (passed whole to
/// `target`), and keeps the head of each connection's first request. With `require`, a
/// connection whose head lacks `Proxy-Authorization: require` gets 407 and is closed.
pub struct OutboundProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

/// A proxy's refusal, as squid writes it (a length, and the scheme it takes).
const PROXY_REFUSAL: &[u8] = b"HTTP/1.1 407 Proxy Authentication Required\r\n\
    Proxy-Authenticate: Basic realm=\"proxy\"\r\nContent-Length: 0\r\n\r\n";

impl OutboundProxy {
    pub async fn start(target: SocketAddr, require: Option<&str>) -> Self {
        OutboundProxy::start_tls(target, require, None).await
    }

    /// [`OutboundProxy::start`], speaking TLS with `tls` (an `https://` proxy) when given.
    pub async fn start_tls(
        target: SocketAddr,
        require: Option<&str>,
        tls: Option<rustls::ServerConfig>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (kept, require) = (heads.clone(), require.map(str::to_owned));
        let tls = tls.map(|config| tokio_rustls::TlsAcceptor::from(Arc::new(config)));
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let (kept, require, tls) = (kept.clone(), require.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(tls) => {
                            let Ok(client) = tls.accept(client).await else { return };
                            OutboundProxy::serve(client, target, kept, require).await;
                        }
                        None => OutboundProxy::serve(client, target, kept, require).await,
                    }
                });
            }
        });
        OutboundProxy { addr, heads, task }
    }

    async fn serve(
        mut client: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        target: SocketAddr,
        kept: Arc<Mutex<Vec<String>>>,
        require: Option<String>,
    ) {
        use tokio::io::AsyncWriteExt;
        let Some(head) = read_head(&mut client).await else { return };
        let text = String::from_utf8_lossy(&head).into_owned();
        kept.lock().unwrap().push(text.clone());
        let authorized = require.as_ref().is_none_or(|auth| {
            text.lines().any(|l| {
                l.split_once(':').is_some_and(|(name, value)| {
                    name.eq_ignore_ascii_case("proxy-authorization") && value.trim() == auth
                })
            })
        });
        if !authorized {
            let _ = client.write_all(PROXY_REFUSAL).await;
            return;
        }
        let Ok(mut upstream) = TcpStream::connect(target).await else { return };
        if text.starts_with("CONNECT ") {
            let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
            if client.write_all(ok).await.is_err() {
                return;
            }
        } else if upstream.write_all(&head).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }

    /// The head of each connection's first request, in the order they came.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// A SOCKS5 proxy (RFC 1928; with `require`, user and password, RFC 1929) that joins every
/// connection to `target`, whatever it was asked for, and keeps each request's destination
/// as `host:port`.
pub struct SocksProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl SocksProxy {
    pub async fn start(target: SocketAddr, require: Option<(&str, &str)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (kept, require) = (asked.clone(), require.map(|(u, p)| (u.to_owned(), p.to_owned())));
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let (kept, require) = (kept.clone(), require.clone());
                tokio::spawn(async move {
                    let _ = SocksProxy::serve(client, target, require, kept).await;
                });
            }
        });
        SocksProxy { addr, asked, task }
    }

    async fn serve(
        mut client: TcpStream,
        target: SocketAddr,
        require: Option<(String, String)>,
        kept: Arc<Mutex<Vec<String>>>,
    ) -> io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut head = [0u8; 2];
        client.read_exact(&mut head).await?;
        let mut methods = vec![0u8; usize::from(head[1])];
        client.read_exact(&mut methods).await?;
        let method = if require.is_some() { 2 } else { 0 };
        if head[0] != 5 || !methods.contains(&method) {
            return client.write_all(&[5, 0xff]).await;
        }
        client.write_all(&[5, method]).await?;
        if let Some((user, pass)) = require {
            let mut version_and_len = [0u8; 2];
            client.read_exact(&mut version_and_len).await?;
            let mut given_user = vec![0u8; usize::from(version_and_len[1])];
            client.read_exact(&mut given_user).await?;
            let mut len = [0u8; 1];
            client.read_exact(&mut len).await?;
            let mut given_pass = vec![0u8; usize::from(len[0])];
            client.read_exact(&mut given_pass).await?;
            let ok = given_user == user.as_bytes() && given_pass == pass.as_bytes();
            client.write_all(&[1, if ok { 0 } else { 1 }]).await?;
            if !ok {
                return Ok(());
            }
        }
        let mut request = [0u8; 4];
        client.read_exact(&mut request).await?;
        let host = match request[3] {
            1 => {
                let mut ip = [0u8; 4];
                client.read_exact(&mut ip).await?;
                std::net::Ipv4Addr::from(ip).to_string()
            }
            3 => {
                let mut len = [0u8; 1];
                client.read_exact(&mut len).await?;
                let mut name = vec![0u8; usize::from(len[0])];
                client.read_exact(&mut name).await?;
                String::from_utf8_lossy(&name).into_owned()
            }
            _ => {
                let mut ip = [0u8; 16];
                client.read_exact(&mut ip).await?;
                format!("[{}]", std::net::Ipv6Addr::from(ip))
            }
        };
        let mut port = [0u8; 2];
        client.read_exact(&mut port).await?;
        kept.lock().unwrap().push(format!("{host}:{}", u16::from_be_bytes(port)));
        let mut upstream = TcpStream::connect(target).await?;
        client.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0]).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await.map(|_| ())
    }

    /// Each connection's destination, `host:port`, in the order they came.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for SocksProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Drop for OutboundProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A self-signed certificate for `names` (host names or IP addresses): a server's TLS
/// configuration with it (and `alpn`), and a client's that trusts it.
pub fn certified(names: &[&str], alpn: &[&[u8]]) -> (rustls::ServerConfig, rustls::ClientConfig) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    let cert = certified.cert.der().clone();
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(certified.key_pair.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (server, client)
}

// ---------------------------------------------------------------------------------------
// The mock upstream.
// ---------------------------------------------------------------------------------------

/// One request the mock upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The HTTP version it came in.
    pub version: http::Version,
    /// The method.
    pub method: Method,
    /// The path and query, as sent.
    pub path_and_query: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Recorded {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the proxy sent a JSON body upstream")
    }

    /// A header's value as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("a text header"))
    }
}

/// One step of a mock response body.
#[derive(Clone)]
pub enum Step {
    /// Write these bytes as one chunk.
    Data(Bytes),
    /// Pause.
    Sleep(Duration),
    /// Pause until the test triggers this `Notify`.
    Wait(Arc<Notify>),
    /// Break the connection here: the body fails, and hyper closes the connection without
    /// ending the chunked body, as a reset upstream does.
    Reset,
    /// Send these bytes every so often, for ever: a stream that never ends.
    Forever(Duration, Bytes),
}

impl Step {
    /// One SSE event, `data: {json}\n\n`, as OpenAI frames them.
    pub fn event(value: &Value) -> Step {
        Step::Data(Bytes::from(format!("data: {value}\n\n")))
    }

    /// The end of an OpenAI stream.
    pub fn done() -> Step {
        Step::Data(Bytes::from_static(b"data: [DONE]\n\n"))
    }

    /// Raw bytes.
    pub fn raw(text: &str) -> Step {
        Step::Data(Bytes::from(text.to_owned()))
    }

    /// Raw bytes that need not be UTF-8.
    pub fn bytes(bytes: &[u8]) -> Step {
        Step::Data(Bytes::copy_from_slice(bytes))
    }
}

/// How the mock upstream answers one request.
#[derive(Clone)]
pub struct Reply {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    /// A `Content-Length` to announce instead of the body's real length.
    declared_len: Option<u64>,
    head_delay: Duration,
    hang: bool,
    steps: Vec<Step>,
}

impl Reply {
    /// A JSON body with a status.
    pub fn json(status: u16, body: &Value) -> Reply {
        Reply::raw_json(status, &body.to_string())
    }

    /// A JSON body given as text (byte for byte), with a status.
    pub fn raw_json(status: u16, body: &str) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            declared_len: None,
            head_delay: Duration::ZERO,
            hang: false,
            steps: vec![Step::raw(body)],
        }
    }

    /// A `text/event-stream` body made of `steps`.
    pub fn sse(steps: Vec<Step>) -> Reply {
        Reply {
            status: 200,
            content_type: "text/event-stream; charset=utf-8",
            headers: Vec::new(),
            declared_len: None,
            head_delay: Duration::ZERO,
            hang: false,
            steps,
        }
    }

    /// Never answers: not even the response head.
    pub fn hang() -> Reply {
        Reply { hang: true, ..Reply::sse(Vec::new()) }
    }

    /// A 200 whose `Content-Length` promises all of `body` but whose connection breaks after
    /// `cut_at` bytes of it: an answer cut off in the middle of its JSON.
    pub fn truncated(body: &str, cut_at: usize) -> Reply {
        let mut r = Reply::raw_json(200, "");
        r.steps = vec![Step::raw(&body[..cut_at]), Step::Reset];
        r.declared_len = Some(body.len() as u64);
        r
    }

    /// A 200 JSON answer of `len` bytes (`{"pad":"   …`), sent in 1 MiB chunks that share
    /// one buffer, so that the mock does not hold `len` bytes.
    pub fn huge(len: usize) -> Reply {
        const CHUNK: usize = 1 << 20;
        let head = Step::raw(r#"{"pad":""#);
        let chunk = Bytes::from(vec![b' '; CHUNK]);
        let mut steps = vec![head];
        steps.extend(std::iter::repeat_n(Step::Data(chunk), len.div_ceil(CHUNK)));
        let mut r = Reply::raw_json(200, "");
        r.steps = steps;
        r
    }

    /// A 200 whose body is `value` gzip-compressed, with `Content-Encoding: gzip`, though
    /// the proxy never asked for it.
    pub fn gzip_json(value: &Value) -> Reply {
        let mut r = Reply::raw_json(200, "");
        r.steps = vec![Step::Data(Bytes::from(gzip_stored(value.to_string().as_bytes())))];
        r.with_header("content-encoding", "gzip")
    }

    /// The same answer with one more header.
    #[must_use]
    pub fn with_header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_owned()));
        self
    }

    /// The same answer with another `Content-Type`.
    #[must_use]
    pub fn with_content_type(mut self, content_type: &'static str) -> Reply {
        self.content_type = content_type;
        self
    }

    /// The same answer, its head sent only after `delay`.
    #[must_use]
    pub fn after(mut self, delay: Duration) -> Reply {
        self.head_delay = delay;
        self
    }
}

/// Set when the proxy dropped a response body before the mock had sent all of it.
#[derive(Default)]
struct DropFlag {
    dropped: AtomicBool,
    notify: Notify,
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

/// A small hyper server on `127.0.0.1:0` standing in for the upstream. Each test programs
/// its answers; every request is recorded.
pub struct MockUpstream {
    addr: SocketAddr,
    /// Serving HTTPS (see [`MockUpstream::start_tls`]).
    tls: bool,
    requests: Arc<Mutex<Vec<Recorded>>>,
    received: Arc<Notify>,
    dropped: Arc<DropFlag>,
    task: JoinHandle<()>,
}

impl MockUpstream {
    /// A mock that answers every request with `reply`.
    pub async fn always(reply: Reply) -> MockUpstream {
        MockUpstream::start(move |_| reply.clone()).await
    }

    /// A mock that answers its first `n` requests with `first` and every later one with
    /// `then`.
    pub async fn first_n_then(n: usize, first: Reply, then: Reply) -> MockUpstream {
        let seen = std::sync::atomic::AtomicUsize::new(0);
        MockUpstream::start(move |_| {
            if seen.fetch_add(1, Ordering::SeqCst) < n { first.clone() } else { then.clone() }
        })
        .await
    }

    /// A mock of Gemini: `streamGenerateContent` answers with `events`, `generateContent`
    /// with `whole`.
    pub async fn gemini(events: Vec<Step>, whole: Value) -> MockUpstream {
        MockUpstream::start(move |r| {
            if r.path_and_query.contains("streamGenerateContent") {
                Reply::sse(events.clone())
            } else {
                Reply::json(200, &whole)
            }
        })
        .await
    }

    /// A mock that answers each request with what `handler` returns for it.
    pub async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        MockUpstream::serve(handler, None).await
    }

    /// A mock that serves HTTPS as `localhost`, with a certificate made for the test and the
    /// application protocols `alpn` (`h2`, `http/1.1`) to offer; also returns a client
    /// configuration that trusts that certificate and nothing else.
    pub async fn start_tls(
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
        alpn: &[&[u8]],
    ) -> (Self, rustls::ClientConfig) {
        MockUpstream::start_tls_as("localhost", handler, alpn).await
    }

    /// [`MockUpstream::start_tls`] with a certificate for `name` (reached through a proxy
    /// that knows where the mock is; [`MockUpstream::url`] still says `localhost`).
    pub async fn start_tls_as(
        name: &str,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
        alpn: &[&[u8]],
    ) -> (Self, rustls::ClientConfig) {
        let (server, client) = certified(&[name], alpn);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        (MockUpstream::serve(handler, Some(acceptor)).await, client)
    }

    /// [`MockUpstream::start_tls`] with `server` (see [`certified`]).
    pub async fn start_tls_with(
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
        server: rustls::ServerConfig,
    ) -> Self {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        MockUpstream::serve(handler, Some(acceptor)).await
    }

    async fn serve(
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let received = Arc::new(Notify::new());
        let dropped = Arc::new(DropFlag::default());
        let handler: Arc<Handler> = Arc::new(handler);
        let shared = (requests.clone(), received.clone(), dropped.clone());
        let https = tls.is_some();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (requests, received, dropped) = shared.clone();
                let handler = handler.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let (requests, received, dropped) =
                        (requests.clone(), received.clone(), dropped.clone());
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await?.to_bytes();
                        let recorded = Recorded {
                            version: parts.version,
                            method: parts.method,
                            path_and_query: parts
                                .uri
                                .path_and_query()
                                .map_or_else(String::new, ToString::to_string),
                            headers: parts.headers,
                            body,
                        };
                        let reply = handler(&recorded);
                        requests.lock().unwrap().push(recorded);
                        received.notify_waiters();
                        Ok::<_, hyper::Error>(respond(reply, dropped).await)
                    }
                });
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        // HTTP/1.1 or HTTP/2, as ALPN settled it.
                        Some(tls) => {
                            let Ok(stream) = tls.accept(stream).await else { return };
                            let builder = hyper_util::server::conn::auto::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            );
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                        None => {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        MockUpstream { addr, tls: https, requests, received, dropped, task }
    }

    /// `http://127.0.0.1:PORT` (`https://localhost:PORT` for HTTPS), without a trailing
    /// slash.
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The only request received; fails the test when there were none or several.
    pub fn only_request(&self) -> Recorded {
        let all = self.requests();
        assert_eq!(all.len(), 1, "the upstream should have received exactly one request");
        all.into_iter().next().unwrap()
    }

    /// Waits until at least `n` requests have arrived; fails the test after [`PATIENCE`].
    pub async fn wait_for_requests(&self, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let notified = self.received.notified();
            if self.requests.lock().unwrap().len() >= n {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the upstream did not receive {n} request(s) in time");
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), notified).await;
        }
    }

    /// Whether the proxy dropped a response body (the connection, or the body alone) before
    /// the mock finished sending it, waiting at most `within` for it to happen.
    pub async fn body_dropped_within(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.dropped.notify.notified();
            if self.dropped.dropped.load(Ordering::SeqCst) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(20)), notified).await;
        }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn respond(reply: Reply, dropped: Arc<DropFlag>) -> Response<MockBody> {
    if reply.hang {
        std::future::pending::<()>().await;
    }
    if !reply.head_delay.is_zero() {
        tokio::time::sleep(reply.head_delay).await;
    }
    let exact_len = reply
        .steps
        .iter()
        .try_fold(0u64, |n, s| match s {
            Step::Data(b) => Some(n + b.len() as u64),
            Step::Sleep(_) | Step::Wait(_) | Step::Reset | Step::Forever(..) => None,
        })
        // A whole answer gets a Content-Length, as OpenAI's do; a stream is chunked.
        .filter(|_| !reply.content_type.starts_with("text/event-stream"))
        .or(reply.declared_len);
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(play(reply.steps, tx));
    let body = MockBody { rx, exact_len, finished: false, dropped };
    let mut builder = Response::builder()
        .status(reply.status)
        .header("content-type", reply.content_type)
        .header("x-request-id", "req_mock");
    for (name, value) in &reply.headers {
        builder = builder.header(*name, value);
    }
    builder.body(body).unwrap()
}

/// Plays the steps into the body's channel; stops as soon as the body is gone.
async fn play(steps: Vec<Step>, tx: mpsc::Sender<Result<Bytes, io::Error>>) {
    for step in steps {
        match step {
            Step::Data(bytes) => {
                if tx.send(Ok(bytes)).await.is_err() {
                    return;
                }
            }
            Step::Sleep(d) => {
                tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    () = tx.closed() => return,
                }
            }
            Step::Wait(notify) => {
                tokio::select! {
                    () = notify.notified() => {}
                    () = tx.closed() => return,
                }
            }
            Step::Reset => {
                let _ = tx
                    .send(Err(io::Error::new(io::ErrorKind::ConnectionReset, "mock reset")))
                    .await;
                return;
            }
            Step::Forever(every, bytes) => loop {
                if tx.send(Ok(bytes.clone())).await.is_err() {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = tx.closed() => return,
                }
            },
        }
    }
}

/// The mock's response body: frames from [`play`]; dropping it before its end sets the
/// mock's drop flag.
struct MockBody {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    exact_len: Option<u64>,
    finished: bool,
    dropped: Arc<DropFlag>,
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(bytes))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(Some(Err(e))) => {
                // A reset the test asked for is not the proxy dropping the body.
                self.finished = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.finished = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.exact_len.map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

impl Drop for MockBody {
    fn drop(&mut self) {
        if !self.finished {
            self.dropped.dropped.store(true, Ordering::SeqCst);
            self.dropped.notify.notify_waiters();
        }
    }
}

/// A request head read from `conn` a byte at a time, up to its blank line (nothing of what
/// follows it is taken); `None` when the connection ends or fails first.
pub async fn read_head(conn: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(head)
}

/// `data` as a gzip member whose deflate stream is made of stored (uncompressed) blocks: real
/// gzip that any decoder reads (RFC 1952 and RFC 1951 §3.2.4), with no compression library.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut blocks = data.chunks(0xffff).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        let len = u16::try_from(block.len()).unwrap();
        out.push(u8::from(blocks.peek().is_none()));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE), bit by bit: the mock's bodies are small.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

// ---------------------------------------------------------------------------------------
// OpenAI-shaped payloads for the mocks.
// ---------------------------------------------------------------------------------------

/// The id the mock's completions carry.
pub const UPSTREAM_ID: &str = "chatcmpl-Dx0Xq5Xx9rHB2ehcHZCRDsnuymUXc";

/// A `chat.completion.chunk` as OpenAI streams it (with `include_usage`: `"usage":null`).
pub fn chunk(delta: Value, finish_reason: Option<&str>) -> Value {
    json!({
        "id": UPSTREAM_ID,
        "object": "chat.completion.chunk",
        "created": 1_782_955_818,
        "model": ACTUAL_NAME,
        "service_tier": "default",
        "system_fingerprint": "fp_d0469e1700",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        "usage": null,
        "obfuscation": "CduGPpSo"
    })
}

/// The usage-only chunk OpenAI sends after the finish chunk when asked for usage.
pub fn usage_chunk() -> Value {
    json!({
        "id": UPSTREAM_ID,
        "object": "chat.completion.chunk",
        "created": 1_782_955_818,
        "model": ACTUAL_NAME,
        "service_tier": "default",
        "system_fingerprint": "fp_d0469e1700",
        "choices": [],
        "usage": {
            "prompt_tokens": 23, "completion_tokens": 3, "total_tokens": 26,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        },
        "obfuscation": "c4"
    })
}

/// A whole text stream as OpenAI sends it with `include_usage`: role chunk, one chunk per
/// piece, the finish chunk, the usage chunk, `[DONE]`.
pub fn text_stream(pieces: &[&str]) -> Vec<Step> {
    let mut steps = vec![Step::event(&chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        None,
    ))];
    for piece in pieces {
        steps.push(Step::event(&chunk(json!({"content": piece}), None)));
    }
    steps.push(Step::event(&chunk(json!({}), Some("stop"))));
    steps.push(Step::event(&usage_chunk()));
    steps.push(Step::done());
    steps
}

/// A non-stream completion with text `content`, as OpenAI sends it.
pub fn completion(content: &str) -> Value {
    json!({
        "id": UPSTREAM_ID,
        "object": "chat.completion",
        "created": 1_743_073_438,
        "model": ACTUAL_NAME,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": 8, "completion_tokens": 10, "total_tokens": 18,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        },
        "service_tier": "default",
        "system_fingerprint": "fp_898ac29719"
    })
}

/// An OpenAI error body.
pub fn openai_error(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// A simple client request.
pub fn chat_request(model: &str, stream: bool) -> Value {
    let mut r = json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello."}
        ]
    });
    if stream {
        r["stream"] = json!(true);
    }
    r
}

/// Asserts an error answer: `status`, JSON, in the OpenAI error shape; returns its `error`.
pub fn expect_error(resp: &HttpResponse, status: u16) -> Value {
    assert_eq!(resp.status, status, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_openai_error(&resp.json()).clone()
}

/// Asserts that `body` is an OpenAI error with all four keys, and returns its `error`.
pub fn assert_openai_error(body: &Value) -> &Value {
    let error = body.get("error").unwrap_or_else(|| panic!("no `error` in {body}"));
    let object = error.as_object().unwrap_or_else(|| panic!("`error` is not an object: {body}"));
    for key in ["message", "type", "param", "code"] {
        assert!(object.contains_key(key), "`error.{key}` is missing in {body}");
    }
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "empty message: {body}");
    assert!(error["type"].is_string(), "`error.type` is not a string: {body}");
    error
}

// ---------------------------------------------------------------------------------------
// The proxy, in-process.
// ---------------------------------------------------------------------------------------

/// Settings for an OpenAI upstream at `mock`.
pub fn openai_settings(mock: &MockUpstream) -> Settings {
    let mut s = Settings::mock_defaults();
    s.platform = Platform::OpenAi;
    s.base_url = Some(format!("{}/v1", mock.url()));
    s.api_key = Secret::new(UPSTREAM_KEY);
    s.actual_name = ACTUAL_NAME.to_owned();
    s.host = "127.0.0.1".to_owned();
    s.port = 0;
    s
}

/// The proxy, serving in this process on `127.0.0.1:0`. Dropping it stops it.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
    /// The state, kept to drain the log store and the logger in [`Proxy::finish`].
    state: Option<Arc<AppState>>,
    database_path: PathBuf,
    log_file_path: PathBuf,
    spill_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// How [`Proxy::launch`] builds the proxy beyond its settings.
#[derive(Default)]
pub struct Launch {
    /// Log as `main` does (JSON lines to LOG_FILE_PATH, text to stderr) instead of nowhere.
    pub json_log: bool,
    /// Overrides [`AppState::header_read_timeout`].
    pub header_read_timeout: Option<Duration>,
    /// Overrides [`AppState::grace_period`].
    pub grace_period: Option<Duration>,
    /// The log store writer's options, instead of [`AppState::new`]'s.
    pub writer: Option<uniproxy_logstore::WriterOptions>,
    /// Overrides [`AppState::tls`] (the roots an HTTPS upstream is checked against).
    pub tls: Option<rustls::ClientConfig>,
}

impl Proxy {
    /// Starts the proxy with `settings`; the database and log paths go to a temporary folder.
    pub async fn start(settings: Settings) -> Proxy {
        Proxy::launch(settings, Launch::default()).await
    }

    /// Starts the proxy with `settings`, logging to its JSON log file as the binary does.
    pub async fn start_logged(settings: Settings) -> Proxy {
        Proxy::launch(settings, Launch { json_log: true, ..Launch::default() }).await
    }

    /// Starts the proxy with `settings` and `launch`; the database and log paths go to a
    /// temporary folder.
    pub async fn launch(mut settings: Settings, launch: Launch) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        settings.database_path = dir.path().join("proxy.db");
        settings.log_file_path = dir.path().join("proxy.log");
        let log = if launch.json_log {
            let file = uniproxy::logging::RotatingFile::open(&settings.log_file_path, 0, 0)
                .expect("a log file in the temporary folder");
            uniproxy::logging::root(Some(file))
        } else {
            slog::Logger::root(slog::Discard, slog::o!()).into()
        };
        let (database_path, log_file_path) =
            (settings.database_path.clone(), settings.log_file_path.clone());
        let spill_path = uniproxy::state::spill_path(&settings);
        let mut state = match launch.writer {
            Some(writer) => AppState::with_writer(settings, log, writer),
            None => AppState::new(settings, log),
        }
        .expect("settings a provider accepts");
        if let Some(t) = launch.header_read_timeout {
            state.header_read_timeout = t;
        }
        if let Some(t) = launch.grace_period {
            state.grace_period = t;
        }
        if let Some(tls) = launch.tls {
            state.tls = tls;
        }
        let state = Arc::new(state);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(uniproxy::serve(state.clone(), listener, async move {
            let _ = rx.await;
        }));
        Proxy {
            addr,
            shutdown: Some(tx),
            task,
            state: Some(state),
            database_path,
            log_file_path,
            spill_path,
            _dir: dir,
        }
    }

    /// The log store's database.
    pub fn database_path(&self) -> &Path {
        &self.database_path
    }

    /// The JSON log file (written only by a proxy from [`Proxy::start_logged`]).
    pub fn log_file_path(&self) -> &Path {
        &self.log_file_path
    }

    /// Where the log store spills entries its database does not take.
    pub fn spill_path(&self) -> &Path {
        &self.spill_path
    }

    /// Opens the log store read-only, as `uniproxy logs` does.
    pub fn store(&self) -> LogStore {
        let options = StoreOptions { read_only: true, ..StoreOptions::default() };
        LogStore::open(&self.database_path, options).expect("the proxy's log store opens")
    }

    /// Waits until the store holds at least `n` entries (the writer batches for up to
    /// ~100 ms), then returns every entry, oldest first; fails the test after [`PATIENCE`].
    pub async fn entries(&self, n: usize) -> Vec<Entry> {
        let store = self.store();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let count = store.count().unwrap() as usize;
            if count >= n {
                break;
            }
            assert!(Instant::now() < deadline, "the store holds {count} entries, not {n}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        all_entries(&store)
    }

    /// The only entry in the store, once it is there; fails the test if there are several.
    pub async fn only_entry(&self) -> Entry {
        let mut all = self.entries(1).await;
        assert_eq!(all.len(), 1, "one entry expected: {all:#?}");
        all.pop().unwrap()
    }

    /// Stops the proxy as `main` does after SIGTERM: stop serving (requests in flight
    /// finish), drain the log store's queue, and drop the last logger so that the JSON log
    /// file is complete. The database and the log file stay until the `Proxy` is dropped.
    pub async fn finish(&mut self) {
        self.shutdown();
        assert!(self.stopped_within(PATIENCE).await, "serve returned in time");
        let mut state = self.state.take().expect("finish is called once");
        // Connection tasks drop their clones of the state as they end.
        let deadline = Instant::now() + PATIENCE;
        let state = loop {
            match Arc::try_unwrap(state) {
                Ok(s) => break s,
                Err(shared) => {
                    assert!(Instant::now() < deadline, "a connection still holds the state");
                    state = shared;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        tokio::task::spawn_blocking(move || {
            state.recorder.shutdown();
            // Dropping the state drops the last logger: slog-async joins its thread, which
            // writes the last lines first.
            drop(state);
        })
        .await
        .unwrap();
    }

    /// Signals shutdown, as SIGTERM does in the binary: `serve` stops accepting at once and
    /// lets requests in flight finish.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits at most `within` for `serve` to return after [`Proxy::shutdown`].
    pub async fn stopped_within(&mut self, within: Duration) -> bool {
        match tokio::time::timeout(within, &mut self.task).await {
            Ok(result) => {
                result.expect("serve did not panic").expect("serve returned Ok");
                true
            }
            Err(_) => false,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// POSTs `body` as JSON to `path`.
    pub async fn post(&self, path: &str, body: &Value) -> HttpResponse {
        send(self.addr, post_request(path, body)).await
    }

    /// GETs `path`.
    pub async fn get(&self, path: &str) -> HttpResponse {
        send(self.addr, request(Method::GET, path, Bytes::new())).await
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------
// A raw HTTP/1.1 client: one fresh connection per request.
// ---------------------------------------------------------------------------------------

/// A complete response.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl HttpResponse {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("a text header"))
    }
}

/// A request with a body; `Host` is set, as clients do.
pub fn request(method: Method, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .body(Full::new(body))
        .unwrap()
}

/// A JSON POST.
pub fn post_request(path: &str, body: &Value) -> Request<Full<Bytes>> {
    let mut r = request(Method::POST, path, Bytes::from(body.to_string()));
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    r
}

/// Sends `req` on a new connection and reads the whole answer; fails after [`PATIENCE`].
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> HttpResponse {
    tokio::time::timeout(PATIENCE, async {
        let mut s = open_stream(addr, req).await;
        let body = s.rest().await;
        HttpResponse { status: s.status, headers: s.headers.clone(), body }
    })
    .await
    .expect("the proxy answered in time")
}

/// A response whose body is read chunk by chunk, as it arrives. Dropping it closes the
/// connection at once.
pub struct StreamingResponse {
    /// The status.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    body: Incoming,
    conn: JoinHandle<()>,
}

impl StreamingResponse {
    /// The next body chunk and when it arrived; `None` at the end. Fails the test on a body
    /// error or after `within`.
    pub async fn next_chunk_within(&mut self, within: Duration) -> Option<(Bytes, Instant)> {
        let frame = tokio::time::timeout(within, async {
            loop {
                match self.body.frame().await {
                    None => return None,
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            return Some(data);
                        }
                    }
                    Some(Err(e)) => panic!("the response body failed: {e}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no body chunk arrived within {within:?}"));
        frame.map(|data| (data, Instant::now()))
    }

    /// The next body chunk; fails the test after [`PATIENCE`].
    pub async fn next_chunk(&mut self) -> Option<(Bytes, Instant)> {
        self.next_chunk_within(PATIENCE).await
    }

    /// The rest of the body.
    pub async fn rest(&mut self) -> Bytes {
        let mut out = Vec::new();
        while let Some((data, _)) = self.next_chunk().await {
            out.extend_from_slice(&data);
        }
        Bytes::from(out)
    }
}

impl Drop for StreamingResponse {
    fn drop(&mut self) {
        // Dropping the connection task drops the socket: the peer sees the close at once.
        self.conn.abort();
    }
}

/// Sends `req` on a new connection and returns once the response head has arrived.
pub async fn open_stream(addr: SocketAddr, req: Request<Full<Bytes>>) -> StreamingResponse {
    let stream = TcpStream::connect(addr).await.expect("the proxy accepts connections");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let response = tokio::time::timeout(PATIENCE, sender.send_request(req))
        .await
        .expect("the response head arrived in time")
        .expect("the proxy sent a response");
    let (parts, body) = response.into_parts();
    StreamingResponse { status: parts.status.as_u16(), headers: parts.headers, body, conn }
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body).expect("an SSE body is UTF-8");
    text.split("\n\n")
        .filter(|event| !event.trim().is_empty())
        .map(|event| {
            event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

/// The JSON `data:` payloads of an SSE body, `[DONE]` left out; asserts that every other
/// payload is JSON.
pub fn sse_json(body: &[u8]) -> Vec<Value> {
    sse_data(body)
        .into_iter()
        .filter(|d| d != "[DONE]")
        .map(|d| serde_json::from_str(&d).unwrap_or_else(|e| panic!("not JSON ({e}): {d}")))
        .collect()
}

/// The text a stream's chunks carry: the first choice's `delta.content`, joined.
pub fn streamed_text(chunks: &[Value]) -> String {
    chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect()
}

/// Every entry of `store`, oldest first.
pub fn all_entries(store: &LogStore) -> Vec<Entry> {
    let mut ids = Vec::new();
    let mut query = Query { limit: 1000, ..Query::default() };
    loop {
        let page = store.list(&query).unwrap();
        ids.extend(page.items.iter().map(|e| e.id));
        match page.next_before_id {
            Some(before) => query.before_id = Some(before),
            None => break,
        }
    }
    ids.sort_unstable();
    ids.into_iter().map(|id| store.get(id).unwrap().expect("a listed entry")).collect()
}

/// An address nobody listens on: a port bound and released at once.
pub async fn unused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// The names of the spill files in `folder`: the spill file, and any moved aside to be loaded.
pub fn spill_files(folder: &Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains(".spill.jsonl"))
        .collect()
}
