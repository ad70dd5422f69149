//! How upstream connections are made: straight to the upstream, or through the proxy that
//! `HTTPS_PROXY`, `HTTP_PROXY` or `ALL_PROXY` name for it, as curl and Python's HTTP clients
//! (the service uniproxy replaces among them) read those variables. Through an HTTP proxy an
//! HTTPS upstream is reached in a `CONNECT` tunnel, with TLS inside it, and a plain-HTTP one by
//! sending each request to the proxy in absolute form (to an `https://` proxy, either over TLS
//! to the proxy itself); through a SOCKS5 proxy (`socks5h://`:
//! the proxy resolves the upstream's name; `socks5://`: the proxy resolves it here) either one
//! is a tunnel. `NO_PROXY` and loopback upstreams go direct.
//!
//! There is one upstream, so the route is worked out once, at start-up ([`Route::for_upstream`]),
//! and a setting that cannot be used for it stops the start with the setting's name.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper::header::HeaderValue;
use hyper::http::uri::Scheme;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::proxy::SocksV5;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tower_service::Service;
use uniproxy_config::{Secret, Settings};

/// Where the upstream's connections go. In each proxy route, `proxy` is the proxy's URL
/// without credentials (`http://host:port/`, `socks5h://host:port/`) and `setting` the
/// setting that named it.
#[derive(Clone, Debug, PartialEq)]
pub enum Route {
    /// Straight to the upstream.
    Direct,
    /// An HTTPS upstream through an HTTP proxy: a `CONNECT` tunnel, TLS inside it.
    Tunnel {
        /// The proxy.
        proxy: Uri,
        /// The `Proxy-Authorization` the proxy URL's `user:password@` makes.
        auth: Option<HeaderValue>,
        /// The setting.
        setting: &'static str,
    },
    /// A plain-HTTP upstream through an HTTP proxy: each request sent to the proxy in
    /// absolute form.
    Forward {
        /// The proxy.
        proxy: Uri,
        /// The `Proxy-Authorization` each request carries.
        auth: Option<HeaderValue>,
        /// The setting.
        setting: &'static str,
    },
    /// Either kind of upstream through a SOCKS5 proxy.
    Socks {
        /// The proxy, with its port.
        proxy: Uri,
        /// The user and password the proxy URL gives.
        auth: Option<(Secret, Secret)>,
        /// `socks5h://`: the proxy resolves the upstream's name; `socks5://`: it is resolved
        /// here.
        remote_dns: bool,
        /// The setting.
        setting: &'static str,
    },
}

/// A proxy setting that applies to the upstream but cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{setting} cannot be used for the upstream: {reason}")]
pub struct RouteError {
    /// The setting's name.
    pub setting: &'static str,
    /// What is wrong with it (never its value, which may hold a password).
    pub reason: &'static str,
}

impl Route {
    /// The route to the upstream `settings.base_url` names, under its proxy settings.
    ///
    /// # Errors
    /// [`RouteError`] when the proxy setting that applies is not an `http://`, `https://`,
    /// `socks5://` or `socks5h://` proxy URL (SOCKS4 proxies are not supported), or does not
    /// parse.
    pub fn for_upstream(settings: &Settings) -> Result<Route, RouteError> {
        let Some(base) = settings.base_url.as_deref().and_then(|u| u.parse::<Uri>().ok()) else {
            return Ok(Route::Direct);
        };
        let Some(host) = base.host() else { return Ok(Route::Direct) };
        if is_loopback(host) {
            return Ok(Route::Direct);
        }
        let (own, own_name) = match base.scheme_str() {
            Some("https") => (&settings.https_proxy, "HTTPS_PROXY"),
            Some("http") => (&settings.http_proxy, "HTTP_PROXY"),
            _ => return Ok(Route::Direct),
        };
        let Some((value, setting)) = own
            .as_ref()
            .map(|v| (v, own_name))
            .or_else(|| settings.all_proxy.as_ref().map(|v| (v, "ALL_PROXY")))
        else {
            return Ok(Route::Direct);
        };
        // NO_PROXY first: a proxy it keeps the upstream from does not apply, so whatever its
        // setting says cannot stop the start (a SOCKS ALL_PROXY set for other tools, with the
        // upstream in NO_PROXY). The matcher applies NO_PROXY only to a proxy it can read: an
        // address of none is given to it here for that.
        let default_port = if base.scheme() == Some(&Scheme::HTTPS) { 443 } else { 80 };
        let port = base.port_u16().unwrap_or(default_port);
        // Entries apart by spaces too, as curl reads them (`localhost 10.0.0.0/8`): requests
        // and httpx would take such a value whole, as a name no host has, and proxy every host
        // it lists.
        let no_proxy: Vec<&str> = (settings.no_proxy.iter())
            .flat_map(|e| e.split_whitespace())
            .filter_map(|e| no_proxy_host(e, port))
            .collect();
        // `*` is every host, an IP address too (the matcher tries it on names only), as for
        // curl, requests and httpx.
        if no_proxy.contains(&"*") {
            return Ok(Route::Direct);
        }
        let no_proxy = no_proxy.join(",");
        let bare = (host.strip_suffix('.'))
            .and_then(|h| format!("{}://{h}/", base.scheme_str()?).parse::<Uri>().ok());
        let checked = bare.as_ref().unwrap_or(&base);
        let matcher = Matcher::builder().all("http://0.0.0.0:1").no(no_proxy).build();
        if matcher.intercept(checked).is_none() {
            return Ok(Route::Direct);
        }
        let value = userinfo_escaped(value.expose().trim());
        let value = value.as_str();
        let invalid = |reason| RouteError { setting, reason };
        // The matcher reads a value as curl does (`host:port` is `http://host:port`, the
        // user and password percent-decoded into Basic credentials).
        let Some(found) = Matcher::builder().all(value).build().intercept(&base) else {
            return Err(invalid(
                "not a proxy URL (http://host:port, http://user:password@host:port, host:port, \
                 or socks5h://host:port)",
            ));
        };
        let socks = match found.uri().scheme_str() {
            Some("http" | "https") => false,
            Some("socks5" | "socks5h") => true,
            _ => {
                return Err(invalid(
                    "only http://, https://, socks5:// and socks5h:// proxies are supported \
                     (not SOCKS4)",
                ));
            }
        };
        // A port written but out of range is no port to hyper-util, whose connector then takes
        // 80: a typo would send the upstream's traffic to another service (curl refuses it).
        let authority = found.uri().authority().map_or("", |a| a.as_str());
        let written =
            authority.rsplit_once(':').is_some_and(|(_, p)| !p.is_empty() && !p.contains(']'));
        if written && found.uri().port_u16().is_none_or(|p| p == 0) {
            return Err(invalid("the proxy's port is not a number from 1 to 65535"));
        }
        let proxy = found.uri().clone();
        let auth = found.basic_auth().cloned();
        Ok(match (socks, base.scheme() == Some(&Scheme::HTTPS)) {
            (false, true) => Route::Tunnel { proxy, auth, setting },
            (false, false) => Route::Forward { proxy, auth, setting },
            (true, _) => Route::Socks {
                // curl's default for a SOCKS proxy (hyper-util would connect to port 80).
                proxy: match proxy.port() {
                    Some(_) => proxy.clone(),
                    None => with_port(&proxy, 1080).ok_or_else(|| invalid("not a proxy URL"))?,
                },
                auth: found.raw_auth().map(|(user, pass)| (Secret::from(user), Secret::from(pass))),
                remote_dns: proxy.scheme_str() == Some("socks5h"),
                setting,
            },
        })
    }

    /// Whether the connection to the proxy itself is TLS (an `https://` proxy).
    pub fn proxy_over_tls(&self) -> bool {
        match self {
            Route::Tunnel { proxy, .. } | Route::Forward { proxy, .. } => {
                proxy.scheme() == Some(&Scheme::HTTPS)
            }
            Route::Direct | Route::Socks { .. } => false,
        }
    }

    /// The proxy, for the start-up log: its address only, never its credentials.
    pub fn describe(&self) -> Option<String> {
        match self {
            Route::Direct => None,
            Route::Tunnel { proxy, setting, .. }
            | Route::Forward { proxy, setting, .. }
            | Route::Socks { proxy, setting, .. } => {
                Some(format!("{} ({setting})", address(proxy)))
            }
        }
    }
}

/// A proxy's URL as shown: scheme and host, never a user or password.
fn address(proxy: &Uri) -> String {
    let authority = proxy.authority().map_or("", |a| a.as_str());
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{}://{host}", proxy.scheme_str().unwrap_or("http"))
}

/// The host a `NO_PROXY` entry names for an upstream on `port`, as the matcher reads it, or
/// `None` when the entry is for another port. Python's `requests` and `httpx` honour
/// `host:port` (`api.example.com:8443`, `10.0.0.5:8080`, `[fd00::1]:443`) for that port, and
/// an address in brackets (`[fd00::1]`) is the address, as in a URL; the matcher would take
/// either whole as a name no host has, and send the upstream's traffic through the proxy the
/// entry meant to bypass. A port is the upstream's when it is the one its URL says or implies
/// (`:443` covers `https://host/`). Names are compared without a trailing dot (a fully
/// qualified name's root), as curl compares them: `openai.com.` covers `api.openai.com`.
fn no_proxy_host(entry: &str, port: u16) -> Option<&str> {
    let entry = entry.trim();
    let (host, written) = match entry.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, tail)) => (host, Some(tail.strip_prefix(':')?)),
            None => (entry, None),
        },
        // One colon: `host:port`; more: an IPv6 address or range, written bare.
        None => match entry.split_once(':') {
            Some((host, tail)) if !tail.contains(':') => (host, Some(tail)),
            _ => (entry, None),
        },
    };
    if written.is_some_and(|p| p.parse::<u16>().ok() != Some(port)) {
        return None;
    }
    Some(host.strip_suffix('.').unwrap_or(host))
}

/// A proxy URL with each `@` of its user and password but the last written `%40`, as Python's
/// `requests` and `httpx` read `http://user:p@ss@host:3128` (user `user`, password `p@ss`, the
/// host after the last `@`). The matcher splits at the first `@`, and would send the password
/// `p` to the host `ss@host`: the proxy would refuse a password that works for them.
fn userinfo_escaped(value: &str) -> String {
    let start = value.find("://").map_or(0, |i| i + 3);
    let end = value[start..].find(['/', '?', '#']).map_or(value.len(), |i| start + i);
    let authority = &value[start..end];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains('@') => {
            let userinfo = userinfo.replace('@', "%40");
            format!("{}{userinfo}@{host}{}", &value[..start], &value[end..])
        }
        _ => value.to_owned(),
    }
}

/// `uri` with `port` written out.
fn with_port(uri: &Uri, port: u16) -> Option<Uri> {
    let host = uri.host()?;
    let mut parts = uri.clone().into_parts();
    parts.authority = Some(format!("{host}:{port}").parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// `localhost`, `*.localhost` or a loopback address, which no proxy can reach for us (curl's
/// and Go's rule for `localhost`; a local Ollama behind a corporate proxy variable is never
/// meant to go through it).
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.strip_suffix('.').unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The connector hyper-util's client makes upstream connections with, on [`Route`].
#[derive(Clone)]
pub enum Connector {
    /// Straight to the destination.
    Direct(HttpConnector),
    /// A `CONNECT` tunnel through the proxy to the destination (an HTTPS upstream).
    Tunnel(Box<HttpTunnel>),
    /// A connection to the proxy, which takes requests in absolute form (a plain-HTTP
    /// upstream); the proxy's URL; TLS for an `https://` proxy, its handshake within
    /// `CONNECT_TIMEOUT` as the TCP connect is.
    Forward(HttpConnector, Uri, Option<ProxyTls>, Duration),
    /// A SOCKS5 tunnel through the proxy to the destination (either kind of upstream).
    Socks(Box<Socks>),
}

/// What a `CONNECT` tunnel needs (see [`Route::Tunnel`]). The tunnel is made here rather than
/// by hyper-util's, whose error drops the proxy's status and reason ("unsuccessful" for a 403
/// or a 502): they are what tells the operator what to fix.
#[derive(Clone)]
pub struct HttpTunnel {
    http: HttpConnector,
    tls: Option<ProxyTls>,
    proxy: Uri,
    auth: Option<HeaderValue>,
    setting: &'static str,
    /// `CONNECT_TIMEOUT`, which bounds the whole of making the tunnel: the proxy's answer to
    /// the `CONNECT` is when the upstream is connected.
    limit: Duration,
}

/// TLS to an `https://` proxy itself: `rustls` with the upstream's roots, HTTP/1.1 by ALPN (a
/// `CONNECT` over HTTP/2 is another protocol).
#[derive(Clone)]
pub struct ProxyTls(TlsConnector);

impl ProxyTls {
    /// For `proxy` when it is an `https://` one.
    fn for_proxy(proxy: &Uri, tls: &rustls::ClientConfig) -> Option<Self> {
        (proxy.scheme() == Some(&Scheme::HTTPS)).then(|| {
            let mut config = tls.clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            ProxyTls(TlsConnector::from(Arc::new(config)))
        })
    }

    /// `tcp`, the connection to `proxy`, with TLS on it when there is a `ProxyTls`.
    async fn wrap(this: Option<&Self>, proxy: &Uri, tcp: TokioIo<TcpStream>) -> io::Result<Io> {
        let Some(ProxyTls(tls)) = this else { return Ok(Io::Plain(tcp)) };
        let host = proxy.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(Io::Tls(Box::new(TokioIo::new(tls.connect(name, tcp.into_inner()).await?))))
    }
}

/// What a SOCKS5 connection needs (see [`Route::Socks`]).
#[derive(Clone)]
pub struct Socks {
    http: HttpConnector,
    proxy: Uri,
    auth: Option<(Secret, Secret)>,
    remote_dns: bool,
    /// `CONNECT_TIMEOUT`, for the whole of it.
    limit: Duration,
}

impl std::fmt::Debug for Connector {
    /// The kind and the proxy's address: never its credentials (hyper-util's SOCKS connector
    /// would print them).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Connector::Direct(_) => f.write_str("Direct"),
            Connector::Tunnel(tunnel) => write!(f, "Tunnel({})", address(&tunnel.proxy)),
            Connector::Forward(_, proxy, ..) => write!(f, "Forward({})", address(proxy)),
            Connector::Socks(socks) => write!(f, "Socks({})", address(&socks.proxy)),
        }
    }
}

impl Connector {
    /// The connector for `route`, its TCP connections made by `http`, TLS to an `https://`
    /// proxy with `tls`; a tunnel is made within `connect_timeout`, its `CONNECT` or SOCKS5
    /// handshake answered included.
    pub fn new(
        route: &Route,
        http: HttpConnector,
        connect_timeout: Duration,
        tls: &rustls::ClientConfig,
    ) -> Self {
        match route {
            Route::Direct => Connector::Direct(http),
            Route::Tunnel { proxy, auth, setting } => Connector::Tunnel(Box::new(HttpTunnel {
                http,
                tls: ProxyTls::for_proxy(proxy, tls),
                proxy: proxy.clone(),
                auth: auth.clone(),
                setting,
                limit: connect_timeout,
            })),
            Route::Forward { proxy, .. } => {
                let tls = ProxyTls::for_proxy(proxy, tls);
                Connector::Forward(http, proxy.clone(), tls, connect_timeout)
            }
            Route::Socks { proxy, auth, remote_dns, .. } => Connector::Socks(Box::new(Socks {
                http,
                proxy: proxy.clone(),
                auth: auth.clone(),
                remote_dns: *remote_dns,
                limit: connect_timeout,
            })),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Connector::Direct(http) | Connector::Forward(http, ..) => {
                http.poll_ready(cx).map_err(Into::into)
            }
            Connector::Socks(socks) => socks.http.poll_ready(cx).map_err(Into::into),
            Connector::Tunnel(tunnel) => tunnel.http.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        match self {
            Connector::Direct(http) => {
                let connecting = http.call(dst);
                Box::pin(
                    async move { Ok(Conn { io: Io::Plain(connecting.await?), proxied: false }) },
                )
            }
            // The TCP connect's own timeout covers only the hop to the proxy; the CONNECT's
            // answer, TLS to an `https://` proxy and the SOCKS5 handshake are made within the
            // connect timeout too.
            Connector::Tunnel(tunnel) => {
                let tunnel = (**tunnel).clone();
                let (proxy, limit) = (address(&tunnel.proxy), tunnel.limit);
                Box::pin(async move {
                    let io = via_proxy(proxy, limit, tunnel.connect(dst)).await?;
                    Ok(Conn { io, proxied: false })
                })
            }
            Connector::Forward(http, proxy, tls, limit) => {
                let connecting = http.call(proxy.clone());
                let (uri, tls, limit) = (proxy.clone(), tls.clone(), *limit);
                let proxy = address(proxy);
                Box::pin(async move {
                    let made = async {
                        let tcp = connecting.await?;
                        Ok(ProxyTls::wrap(tls.as_ref(), &uri, tcp).await?)
                    };
                    Ok(Conn { io: via_proxy(proxy, limit, made).await?, proxied: true })
                })
            }
            Connector::Socks(socks) => {
                let socks = (**socks).clone();
                let (proxy, limit) = (address(&socks.proxy), socks.limit);
                Box::pin(async move {
                    let made = async { Ok(Io::Plain(socks.connect(dst).await?)) };
                    Ok(Conn { io: via_proxy(proxy, limit, made).await?, proxied: false })
                })
            }
        }
    }
}

/// The connection `made` makes through the proxy at `proxy` (its address, for the error),
/// within `limit` (`CONNECT_TIMEOUT`); its failure, or a timeout (as the upstream client reads
/// one), behind that address.
async fn via_proxy(
    proxy: String,
    limit: Duration,
    made: impl Future<Output = Result<Io, BoxError>>,
) -> Result<Io, BoxError> {
    let source = match tokio::time::timeout(limit, made).await {
        Ok(Ok(io)) => return Ok(io),
        Ok(Err(source)) => source,
        Err(_) => io::Error::new(
            io::ErrorKind::TimedOut,
            "the tunnel was not made within the connect timeout",
        )
        .into(),
    };
    Err(ViaProxy { proxy, source }.into())
}

/// The longest head a proxy may answer a `CONNECT` with (hyper-util's limit too).
const MAX_CONNECT_HEAD: usize = 8192;

impl HttpTunnel {
    /// A connection to `dst` through the proxy, its `CONNECT` answered with a 2xx.
    async fn connect(mut self, dst: Uri) -> Result<Io, BoxError> {
        let tcp = self.http.call(self.proxy.clone()).await?;
        let mut io = ProxyTls::wrap(self.tls.as_ref(), &self.proxy, tcp).await?;
        match &mut io {
            Io::Plain(tcp) => self.handshake(&dst, tcp.inner_mut()).await?,
            Io::Tls(tls) => self.handshake(&dst, tls.inner_mut()).await?,
        }
        Ok(io)
    }

    /// The `CONNECT` to `dst` on `stream`, answered with a 2xx.
    async fn handshake(
        &self,
        dst: &Uri,
        stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    ) -> Result<(), BoxError> {
        let host = dst.host().ok_or("the upstream URL has no host")?;
        let port = dst.port_u16().unwrap_or(443);
        let mut request =
            format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n").into_bytes();
        if let Some(auth) = &self.auth {
            request.extend_from_slice(b"Proxy-Authorization: ");
            request.extend_from_slice(auth.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        stream.write_all(&request).await?;
        let mut buf = vec![0u8; MAX_CONNECT_HEAD];
        let mut filled = 0;
        loop {
            let read = stream.read(&mut buf[filled..]).await?;
            if read == 0 {
                return Err("the proxy closed the connection before answering the CONNECT".into());
            }
            filled += read;
            let mut headers = [httparse::EMPTY_HEADER; 100];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&buf[..filled]) {
                Ok(httparse::Status::Complete(end)) => {
                    let status = response.code.unwrap_or(0);
                    if !(200..300).contains(&status) {
                        let reason = response.reason.unwrap_or_default();
                        return Err(ProxyRefused::new(self.setting, status, reason).into());
                    }
                    // Nothing may come before the upstream's TLS answers uniproxy's hello.
                    if end < filled {
                        return Err("the proxy sent data after its answer to the CONNECT".into());
                    }
                    return Ok(());
                }
                Ok(httparse::Status::Partial) if filled < buf.len() => {}
                Ok(httparse::Status::Partial) => {
                    return Err("the proxy's answer to the CONNECT is too long".into());
                }
                Err(e) => return Err(format!("the proxy's answer to the CONNECT: {e}").into()),
            }
        }
    }
}

impl Socks {
    /// A connection to `dst` through the proxy. The TCP connection is made here, not by
    /// hyper-util's SOCKS connector, whose error would drop the cause (a refused or timed-out
    /// connect).
    async fn connect(mut self, dst: Uri) -> Result<TokioIo<TcpStream>, BoxError> {
        let target = self.target(&dst).await?;
        let io = self.http.call(self.proxy.clone()).await?;
        let mut handshake = SocksV5::new(self.proxy.clone(), Established(Some(io)));
        if let Some((user, pass)) = &self.auth {
            handshake = handshake.with_auth(user.expose().to_owned(), pass.expose().to_owned());
        }
        handshake.call(target).await.map_err(|e| e.to_string().into())
    }

    /// The destination to ask the proxy for: `dst` with its port written out (hyper-util
    /// takes 443 for a URL without one, which a plain-HTTP upstream's is not), and for
    /// `socks5://` its name resolved, without blocking the runtime (hyper-util's own
    /// `local_dns` resolves on the calling thread).
    async fn target(&self, dst: &Uri) -> Result<Uri, BoxError> {
        let default = if dst.scheme_str() == Some("https") { 443 } else { 80 };
        let port = dst.port_u16().unwrap_or(default);
        let host = dst.host().ok_or("the upstream URL has no host")?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let target = if self.remote_dns || bare.parse::<IpAddr>().is_ok() {
            format!("http://{host}:{port}")
        } else {
            let mut found = tokio::net::lookup_host((bare, port)).await?;
            let addr = found.next().ok_or("the upstream's name resolves to no address")?;
            format!("http://{addr}")
        };
        Ok(target.parse()?)
    }
}

/// A connector that hands over a connection already made, once: hyper-util's SOCKS connector
/// then runs its handshake on it.
struct Established(Option<TokioIo<TcpStream>>);

impl Service<Uri> for Established {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = std::future::Ready<Result<TokioIo<TcpStream>, io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        std::future::ready(self.0.take().ok_or_else(|| io::Error::other("used twice")))
    }
}

/// The error of a request a proxy taking absolute-form requests answered with 407: the proxy
/// refused uniproxy's credentials (or wants some), which is no answer of the upstream's, so the
/// client gets "could not reach the upstream" and the refusal, as when a tunnel's `CONNECT` is
/// refused.
pub fn forward_refused(proxy: &Uri, setting: &'static str, status: u16, reason: &str) -> BoxError {
    let source = ProxyRefused::new(setting, status, reason).into();
    ViaProxy { proxy: address(proxy), source }.into()
}

/// The outbound proxy's refusal: the status and reason it answered a `CONNECT` (or, for a
/// plain-HTTP upstream, a request) with. Told to the client as well as logged: it names the
/// setting, never the proxy's address or credentials.
#[derive(Debug, thiserror::Error)]
#[error("the outbound proxy ({setting}) refused the connection: {status} {reason}")]
pub struct ProxyRefused {
    /// The setting that named the proxy.
    pub setting: &'static str,
    /// The status it answered with.
    pub status: u16,
    /// Its reason phrase, at most 100 characters of it.
    pub reason: String,
}

impl ProxyRefused {
    fn new(setting: &'static str, status: u16, reason: &str) -> Self {
        let reason = reason.trim().chars().filter(|c| !c.is_control()).take(100).collect();
        ProxyRefused { setting, status, reason }
    }
}

/// A connection through the outbound proxy that could not be made, for the log (the client
/// gets "could not reach the upstream", and a [`ProxyRefused`] among the causes): the cause
/// (the proxy's refusal, a refused or timed-out TCP connect) behind the proxy's address.
#[derive(Debug, thiserror::Error)]
#[error("through the outbound proxy {proxy}: {source}")]
struct ViaProxy {
    proxy: String,
    source: BoxError,
}

/// An upstream connection, which says whether it goes to a proxy that takes absolute-form
/// requests (hyper-util then leaves each request's URL whole).
#[derive(Debug)]
pub struct Conn {
    io: Io,
    proxied: bool,
}

/// A TCP connection, or TLS on one to an `https://` proxy.
#[derive(Debug)]
enum Io {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match &self.io {
            Io::Plain(tcp) => tcp.connected().proxy(self.proxied),
            Io::Tls(_) => Connected::new().proxy(self.proxied),
        }
    }
}

/// `$call` on the connection, whichever it is.
macro_rules! on_io {
    ($conn:expr, $io:ident => $call:expr) => {
        match &mut $conn.get_mut().io {
            Io::Plain($io) => $call,
            Io::Tls($io) => {
                let $io = &mut **$io;
                $call
            }
        }
    };
}

impl Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        on_io!(self, io => Pin::new(io).poll_read(cx, buf))
    }
}

impl Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        on_io!(self, io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_io!(self, io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_io!(self, io => Pin::new(io).poll_shutdown(cx))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(tcp) => tcp.is_write_vectored(),
            Io::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        on_io!(self, io => Pin::new(io).poll_write_vectored(cx, bufs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uniproxy_config::Secret;

    fn settings(base_url: &str) -> Settings {
        let mut s = Settings::mock_defaults();
        s.base_url = Some(base_url.to_owned());
        s
    }

    /// The proxy, its HTTP `Proxy-Authorization` and the setting that named it.
    fn proxy_of(route: &Route) -> Option<(String, Option<String>, &'static str)> {
        let basic = |auth: &Option<HeaderValue>| {
            auth.as_ref().and_then(|a| a.to_str().ok()).map(str::to_owned)
        };
        match route {
            Route::Direct => None,
            Route::Tunnel { proxy, auth, setting } | Route::Forward { proxy, auth, setting } => {
                Some((proxy.to_string(), basic(auth), setting))
            }
            Route::Socks { proxy, setting, .. } => Some((proxy.to_string(), None, setting)),
        }
    }

    #[test]
    fn each_scheme_takes_its_own_variable_then_all_proxy() {
        let mut s = settings("https://api.openai.com/v1");
        assert_eq!(Route::for_upstream(&s).unwrap(), Route::Direct, "nothing set");
        s.all_proxy = Some(Secret::from("http://all.corp:1080"));
        s.http_proxy = Some(Secret::from("http://plain.corp:8080"));
        let route = Route::for_upstream(&s).unwrap();
        assert_eq!(proxy_of(&route), Some(("http://all.corp:1080/".into(), None, "ALL_PROXY")));
        s.https_proxy = Some(Secret::from("proxy.corp:3128"));
        let route = Route::for_upstream(&s).unwrap();
        assert_eq!(
            proxy_of(&route),
            Some(("http://proxy.corp:3128/".into(), None, "HTTPS_PROXY")),
            "a bare host:port is an http:// proxy, as for curl"
        );
        s.base_url = Some("http://ollama.lan:11434/v1".into());
        let route = Route::for_upstream(&s).unwrap();
        assert_eq!(proxy_of(&route), Some(("http://plain.corp:8080/".into(), None, "HTTP_PROXY")));
        assert_eq!(route.describe().as_deref(), Some("http://plain.corp:8080 (HTTP_PROXY)"));
    }

    #[test]
    fn credentials_become_basic_auth_and_never_show() {
        let mut s = settings("https://api.anthropic.com/v1");
        s.https_proxy = Some(Secret::from("http://al%40ice:s3cr%3At@proxy.corp:3128"));
        let route = Route::for_upstream(&s).unwrap();
        // "al@ice:s3cr:t", percent-decoded, in base64.
        let (_, auth, _) = proxy_of(&route).unwrap();
        assert_eq!(auth.as_deref(), Some("Basic YWxAaWNlOnMzY3I6dA=="));
        let shown = route.describe().unwrap();
        assert_eq!(shown, "http://proxy.corp:3128 (HTTPS_PROXY)");
        assert!(!format!("{route:?}").contains("s3cr"), "{route:?}");
        // Written without escapes, as requests and httpx read it: the host after the last `@`,
        // the password after the first `:`.
        for value in ["http://al@ice:s3cr:t@proxy.corp:3128", "al@ice:s3cr:t@proxy.corp:3128"] {
            s.https_proxy = Some(Secret::from(value));
            let route = Route::for_upstream(&s).unwrap();
            let (proxy, auth, _) = proxy_of(&route).unwrap();
            assert_eq!(proxy, "http://proxy.corp:3128/", "{value}");
            assert_eq!(auth.as_deref(), Some("Basic YWxAaWNlOnMzY3I6dA=="), "{value}");
            assert!(!format!("{route:?}").contains("s3cr"), "{route:?}");
        }
        s.https_proxy = Some(Secret::from("http://bob:p@ss@w@rd@proxy.corp:3128"));
        let (proxy, auth, _) = proxy_of(&Route::for_upstream(&s).unwrap()).unwrap();
        assert_eq!(proxy, "http://proxy.corp:3128/");
        // "bob:p@ss@w@rd".
        assert_eq!(auth.as_deref(), Some("Basic Ym9iOnBAc3NAd0ByZA=="));
    }

    #[test]
    fn no_proxy_and_loopback_go_direct() {
        for (base, no_proxy) in [
            ("https://api.openai.com/v1", vec!["openai.com"]),
            ("https://api.openai.com/v1", vec![".openai.com"]),
            ("https://api.openai.com/v1", vec!["*"]),
            ("https://10.1.2.3/v1", vec!["*"]),
            ("https://[fd00::1]/v1", vec!["example.com", " * "]),
            ("https://10.1.2.3/v1", vec!["10.0.0.0/8"]),
            ("https://api.openai.com/v1", vec!["openai.com."]),
            ("https://api.openai.com/v1", vec![".openai.com."]),
            ("https://api.openai.com./v1", vec!["openai.com"]),
            ("https://api.openai.com./v1", vec!["api.openai.com"]),
            ("https://api.example.com:8443/v1", vec!["api.example.com:8443"]),
            ("https://api.example.com/v1", vec!["api.example.com:443"]),
            ("http://api.example.com/v1", vec!["example.com:80"]),
            ("http://10.0.0.5:8080/v1", vec!["10.0.0.5:8080"]),
            ("https://[fd00::1]/v1", vec!["[fd00::1]"]),
            ("https://[fd00::1]/v1", vec!["[fd00::1]:443"]),
            ("https://[fd00::1]:8443/v1", vec!["[fd00::1]:8443"]),
            ("https://[fd00::1]/v1", vec!["fd00::1"]),
            ("https://[fd00::1]/v1", vec!["fd00::/8"]),
            ("https://10.1.2.3/v1", vec![" 10.0.0.0/8 "]),
            ("https://api.openai.com/v1", vec!["localhost api.openai.com"]),
            ("https://10.1.2.3/v1", vec!["localhost\t10.0.0.0/8"]),
            ("http://localhost:11434/v1", vec![]),
            ("http://127.0.0.1:11434/v1", vec![]),
            ("http://[::1]:11434/v1", vec![]),
            ("http://ollama.localhost:11434/v1", vec![]),
        ] {
            let mut s = settings(base);
            s.all_proxy = Some(Secret::from("http://proxy.corp:3128"));
            s.no_proxy = no_proxy.iter().map(|h| (*h).to_owned()).collect();
            assert_eq!(Route::for_upstream(&s).unwrap(), Route::Direct, "{base} {no_proxy:?}");
        }
        let mut s = settings("https://api.openai.com/v1");
        s.all_proxy = Some(Secret::from("http://proxy.corp:3128"));
        s.no_proxy = vec!["example.com".into(), "penai.com".into()];
        assert!(matches!(Route::for_upstream(&s).unwrap(), Route::Tunnel { .. }));
        // An entry with a port covers its host on that port only.
        for (base, no_proxy) in [
            ("https://api.example.com/v1", "api.example.com:8443"),
            ("https://api.example.com:8443/v1", "api.example.com:443"),
            ("https://[fd00::1]/v1", "[fd00::1]:8443"),
            ("http://10.0.0.5:8080/v1", "10.0.0.5:80"),
            ("https://api.example.com/v1", "api.example.com:x"),
        ] {
            let mut s = settings(base);
            s.all_proxy = Some(Secret::from("http://proxy.corp:3128"));
            s.no_proxy = vec![no_proxy.to_owned()];
            assert_ne!(Route::for_upstream(&s).unwrap(), Route::Direct, "{base} {no_proxy}");
        }
    }

    #[test]
    fn a_proxy_that_cannot_be_used_stops_the_start_with_its_name() {
        for (value, expected) in [
            ("socks4://127.0.0.1:1080", "only http://, https://, socks5:// and socks5h://"),
            ("ftp://proxy.corp", "not a proxy URL"),
            ("http://", "not a proxy URL"),
            ("http://proxy.corp:0", "port is not a number from 1 to 65535"),
            ("http://proxy.corp:65616", "port is not a number from 1 to 65535"),
            ("proxy.corp:312800", "port is not a number from 1 to 65535"),
            ("http://user:pw@[fd00::1]:99999", "port is not a number from 1 to 65535"),
        ] {
            let mut s = settings("https://api.openai.com/v1");
            s.https_proxy = Some(Secret::from(value));
            let e = Route::for_upstream(&s).unwrap_err();
            assert_eq!(e.setting, "HTTPS_PROXY");
            assert!(e.to_string().contains(expected), "{value}: {e}");
        }
        // Without a port, or with an empty one, a proxy is on port 80 (as for Python's HTTP
        // clients; curl takes 1080), an https:// one on 443.
        for value in
            ["http://proxy.corp", "http://proxy.corp:/", "http://[fd00::1]", "https://p.corp"]
        {
            let mut s = settings("https://api.openai.com/v1");
            s.https_proxy = Some(Secret::from(value));
            assert!(matches!(Route::for_upstream(&s), Ok(Route::Tunnel { .. })), "{value}");
        }
        // Nor can one that NO_PROXY keeps from the upstream: it does not apply.
        for no_proxy in ["*", "openai.com", "api.openai.com"] {
            let mut s = settings("https://api.openai.com/v1");
            s.all_proxy = Some(Secret::from("socks5h://127.0.0.1:1080"));
            s.no_proxy = vec![no_proxy.to_owned()];
            assert_eq!(Route::for_upstream(&s).unwrap(), Route::Direct, "{no_proxy}");
            s.https_proxy = Some(Secret::from("http://"));
            assert_eq!(Route::for_upstream(&s).unwrap(), Route::Direct, "{no_proxy}");
        }
        // A variable for the other scheme is not read, so it cannot stop the start.
        let mut s = settings("https://api.openai.com/v1");
        s.http_proxy = Some(Secret::from("socks4://127.0.0.1:1080"));
        assert_eq!(Route::for_upstream(&s).unwrap(), Route::Direct);
    }

    #[test]
    fn a_socks5_proxy_takes_curls_default_port_and_keeps_its_password_hidden() {
        let mut s = settings("http://ollama.lan:11434/v1");
        s.all_proxy = Some(Secret::from("socks5h://bob:hunter2@tunnel.corp"));
        let route = Route::for_upstream(&s).unwrap();
        let Route::Socks { proxy, auth, setting, .. } = &route else { panic!("{route:?}") };
        assert_eq!(proxy.to_string(), "socks5h://tunnel.corp:1080/");
        assert_eq!(*setting, "ALL_PROXY");
        let (_, basic, _) = proxy_of(&route).unwrap();
        assert!(basic.is_none(), "no HTTP Proxy-Authorization for a SOCKS proxy");
        let (user, pass) = auth.as_ref().unwrap();
        assert_eq!((user.expose(), pass.expose()), ("bob", "hunter2"));
        assert_eq!(route.describe().as_deref(), Some("socks5h://tunnel.corp:1080 (ALL_PROXY)"));
        let tls = crate::upstream::Client::tls_config(false);
        let connector = Connector::new(&route, HttpConnector::new(), Duration::from_secs(1), &tls);
        for shown in [format!("{route:?}"), format!("{connector:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }
}
