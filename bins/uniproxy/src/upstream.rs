//! The pooled HTTP client that talks to the upstream: HTTPS through rustls (HTTP/1.1 and
//! HTTP/2 by ALPN, hyper-util's pool) or plain HTTP for local servers (HTTP/1.1, our own
//! single-host pool: see [`crate::pool`]), keep-alive, connect timeout; through an outbound
//! HTTP proxy when one applies ([`crate::outbound`]).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::ext::ReasonPhrase;
use hyper::header::HeaderValue;
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use uniproxy_translate::UpstreamRequest;

use crate::error::ProxyError;
use crate::outbound::{Connector, Route, forward_refused};
use crate::pool::Pool;
use crate::relay::UpstreamBody;

/// The upstream client; cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    inner: HyperClient<HttpsConnector<Connector>, Full<Bytes>>,
    /// A plain-HTTP upstream reached directly: its authority, its `Host` header (worked out
    /// once, see [`Plain::for_base_url`]) and the pool for it.
    plain: Option<Plain>,
    /// The `Proxy-Authorization` each request carries when requests go to an outbound proxy
    /// in absolute form (a plain-HTTP upstream; an HTTPS one's goes in the tunnel's CONNECT).
    forward_auth: Option<HeaderValue>,
    /// That proxy and the setting that names it, when requests go to one in absolute form:
    /// its 407 is its own refusal, not the upstream's answer.
    forward_proxy: Option<(Uri, &'static str)>,
}

#[derive(Clone, Debug)]
struct Plain {
    authority: Authority,
    host: HeaderValue,
    /// `http://authority/`: what a new connection is made to.
    target: Uri,
    pool: Pool,
    /// The first URL sent to, and its origin form: a platform sends every request to the same
    /// URL (Gemini: one for streams, one for answers), which is then not parsed again.
    origin: OnceLock<(String, Uri)>,
}

impl Client {
    /// The TLS configuration for upstream connections: Mozilla's roots plus the system's
    /// when the upstream is HTTPS (none otherwise, which keeps start-up fast for local
    /// upstreams). Built once; every client shares it.
    pub fn tls_config(https: bool) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        if https {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            // The system's roots add corporate CAs; an unreadable store is not fatal.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
        // The ring provider is passed explicitly: no process-wide default is installed, so
        // two servers (or an embedding program) in one process cannot disagree about it.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports rustls' default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth()
    }

    /// A client with its own connection pools for `base_url` (hyper-util's for HTTPS and for
    /// anything through an outbound proxy, ours for plain HTTP reached directly), whose
    /// connections go as `route` says. Each runtime thread makes its own, so a pooled
    /// connection is always driven by the thread that uses it.
    pub fn new(
        connect_timeout: Duration,
        tls: rustls::ClientConfig,
        base_url: Option<&str>,
        route: &Route,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let through = Connector::new(route, http.clone(), connect_timeout, &tls);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(through);
        let inner = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(crate::pool::IDLE_TIMEOUT)
            .pool_max_idle_per_host(crate::pool::MAX_IDLE)
            .build(connector);
        let (plain, forward_auth, forward_proxy) = match route {
            Route::Direct => (base_url.and_then(|url| Plain::for_base_url(url, http)), None, None),
            Route::Forward { proxy, auth, setting } => {
                (None, auth.clone(), Some((proxy.clone(), *setting)))
            }
            Route::Tunnel { .. } | Route::Socks { .. } => (None, None, None),
        };
        Client { inner, plain, forward_auth, forward_proxy }
    }

    /// Sends a request and waits for the response head, at most `first_byte`.
    ///
    /// # Errors
    /// [`ProxyError::UpstreamConnect`] when the upstream cannot be reached,
    /// [`ProxyError::UpstreamTimeout`] when no answer starts in time.
    pub async fn send(
        &self,
        up: &UpstreamRequest,
        first_byte: Duration,
    ) -> Result<hyper::Response<UpstreamBody>, ProxyError> {
        // Built before the first await, so that the builder and the parsed URL are not kept
        // in the future's state: hyper keeps each connection's request future in a box the
        // size of the largest one, for the connection's life.
        let (request, plain) = self.request(up)?;
        let sent = async {
            match plain {
                Some(plain) => (plain.pool.send(&plain.target, request).await)
                    .map(|response| response.map(BodyExt::boxed_unsync))
                    .map_err(|e| unreached(e.is_connect(), e)),
                None => match self.inner.request(request).await {
                    Ok(response)
                        if response.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED
                            && let Some((proxy, setting)) = &self.forward_proxy =>
                    {
                        let status = response.status();
                        let reason = match response.extensions().get::<ReasonPhrase>() {
                            Some(reason) => String::from_utf8_lossy(reason.as_bytes()).into_owned(),
                            None => status.canonical_reason().unwrap_or_default().to_owned(),
                        };
                        let refused = forward_refused(proxy, setting, status.as_u16(), &reason);
                        Err(ProxyError::UpstreamConnect(refused))
                    }
                    Ok(response) => Ok(response.map(BodyExt::boxed_unsync)),
                    Err(e) => Err(unreached(e.is_connect(), e)),
                },
            }
        };
        tokio::time::timeout(first_byte, sent).await.unwrap_or(Err(ProxyError::UpstreamTimeout {
            phase: "the first-byte timeout",
            setting: "FIRST_BYTE_TIMEOUT",
        }))
    }

    /// The request for `up`, and the plain-HTTP pool that takes it when `up` goes to the
    /// plain-HTTP upstream this client was made for.
    fn request(
        &self,
        up: &UpstreamRequest,
    ) -> Result<(hyper::Request<Full<Bytes>>, Option<&Plain>), ProxyError> {
        let invalid = || {
            ProxyError::Translate(uniproxy_translate::TranslateError::Config {
                setting: "BASE_URL",
                reason: "is not a valid URL",
            })
        };
        let (uri, plain) = self.target(&up.url).ok_or_else(invalid)?;
        let mut builder = hyper::Request::builder().method(up.method.clone()).uri(uri);
        if let Some(headers) = builder.headers_mut() {
            headers.clone_from(&up.headers);
            headers.insert(
                hyper::header::USER_AGENT,
                HeaderValue::from_static(concat!("uniproxy/", env!("CARGO_PKG_VERSION"))),
            );
            if let Some(plain) = plain {
                headers.insert(hyper::header::HOST, plain.host.clone());
            }
            if let Some(auth) = &self.forward_auth {
                headers.insert(hyper::header::PROXY_AUTHORIZATION, auth.clone());
            }
        }
        let request = builder.body(Full::new(up.body.clone())).map_err(|_| invalid())?;
        Ok((request, plain))
    }

    /// Where a request to `url` goes: the plain-HTTP pool with the URL's origin form (as
    /// hyper-util would send it) when `url` is on the upstream this client was made for, else
    /// the URL as it is for hyper-util; `None` when `url` is not a URI. The first URL sent to
    /// the pool is kept with its origin form, and not parsed again.
    fn target(&self, url: &str) -> Option<(Uri, Option<&Plain>)> {
        if let Some(plain) = &self.plain
            && let Some((known, origin)) = plain.origin.get()
            && known == url
        {
            return Some((origin.clone(), Some(plain)));
        }
        let uri: Uri = url.parse().ok()?;
        let Some(plain) = self.plain.as_ref().filter(|plain| {
            uri.scheme() == Some(&Scheme::HTTP) && uri.authority() == Some(&plain.authority)
        }) else {
            return Some((uri, None));
        };
        // The parsed parts reused: parsing the path again cost 0.3k instructions a request.
        let mut parts = uri.into_parts();
        parts.scheme = None;
        parts.authority = None;
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        let origin = Uri::from_parts(parts).ok()?;
        let _ = plain.origin.set((url.to_owned(), origin.clone()));
        Some((origin, Some(plain)))
    }
}

impl Plain {
    /// The pool for `base_url` when it is plain HTTP, with the `Host` header of its requests
    /// worked out once: the host, and the port unless it is 80, as hyper-util writes it.
    /// Plain HTTP always speaks HTTP/1.1 here (no h2c), where `Host` is required; HTTPS
    /// upstreams are left to hyper-util, which sends `Host` only over HTTP/1.1.
    fn for_base_url(base_url: &str, http: HttpConnector) -> Option<Plain> {
        let uri = base_url.parse::<Uri>().ok()?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return None;
        }
        let authority = uri.authority()?.clone();
        let host = uri.host()?;
        let value = match uri.port_u16().filter(|&p| p != 80) {
            Some(port) => HeaderValue::from_str(&format!("{host}:{port}")),
            None => HeaderValue::from_str(host),
        };
        let target = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .ok()?;
        Some(Plain {
            authority,
            host: value.ok()?,
            target,
            pool: Pool::new(http),
            origin: OnceLock::new(),
        })
    }
}

/// A send that got no answer head: the connect timeout when that is what ran out, the
/// upstream unreachable when it could not be connected to, and dropped when the connection
/// failed after that, once the request may have reached the upstream. (A pooled connection
/// that turns out closed before the request went out is retried by the pool itself.)
fn unreached(connect: bool, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ProxyError {
    let e = e.into();
    match (connect, is_timeout(&*e)) {
        (true, true) => {
            ProxyError::UpstreamTimeout { phase: "the connect timeout", setting: "CONNECT_TIMEOUT" }
        }
        (true, false) => ProxyError::UpstreamConnect(e),
        (false, _) => ProxyError::UpstreamDropped(e),
    }
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        if s.to_string().contains("timed out") {
            return true;
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::test_server::{ANSWER, After, server};

    #[test]
    fn the_host_header_is_worked_out_once_for_plain_http_as_hyper_util_would() {
        let host = |url: &str| {
            let tls = Client::tls_config(false);
            let client = Client::new(Duration::from_secs(1), tls, Some(url), &Route::Direct);
            client.plain.map(|p| (p.authority.to_string(), p.host.to_str().unwrap().to_owned()))
        };
        let pair = |a: &str, v: &str| Some((a.to_owned(), v.to_owned()));
        assert_eq!(host("http://127.0.0.1:11434/v1"), pair("127.0.0.1:11434", "127.0.0.1:11434"));
        // The scheme's own port is left out, as hyper-util leaves it out.
        assert_eq!(host("http://localhost:80/v1"), pair("localhost:80", "localhost"));
        assert_eq!(host("http://localhost/v1"), pair("localhost", "localhost"));
        assert_eq!(host("http://[::1]:8000"), pair("[::1]:8000", "[::1]:8000"));
        assert_eq!(host("http://user:pw@example.com:8080/v1"), {
            pair("user:pw@example.com:8080", "example.com:8080")
        });
        // HTTPS may speak HTTP/2, where hyper-util sends no Host: left to it.
        assert_eq!(host("https://api.openai.com/v1"), None);
        assert_eq!(host("not a url"), None);
        let none =
            Client::new(Duration::from_secs(1), Client::tls_config(false), None, &Route::Direct);
        assert!(none.plain.is_none());
    }

    fn upstream_request(url: String) -> UpstreamRequest {
        let mut headers = hyper::HeaderMap::new();
        headers.insert("x-test", HeaderValue::from_static("kept"));
        UpstreamRequest {
            method: hyper::Method::POST,
            url,
            headers,
            body: Bytes::from_static(b"{}"),
            dropped: Vec::new(),
            local_answer: None,
            copied: Vec::new(),
            changes: None,
        }
    }

    #[tokio::test]
    async fn a_plain_http_upstream_gets_origin_form_and_its_host_header() {
        let server = server(After::KeepAlive).await;
        let authority = server.target.authority().unwrap().to_string();
        let base = format!("http://{authority}/v1");
        let client = Client::new(
            Duration::from_secs(1),
            Client::tls_config(false),
            Some(&base),
            &Route::Direct,
        );
        for (i, (url, line)) in [
            (format!("{base}/chat/completions"), "POST /v1/chat/completions HTTP/1.1"),
            (
                format!("{base}/x?api-version=2024-10-21"),
                "POST /v1/x?api-version=2024-10-21 HTTP/1.1",
            ),
            (format!("http://{authority}"), "POST / HTTP/1.1"),
            // The first URL again: its origin form is kept from the first send.
            (format!("{base}/chat/completions"), "POST /v1/chat/completions HTTP/1.1"),
        ]
        .into_iter()
        .enumerate()
        {
            let response = client.send(&upstream_request(url), Duration::from_secs(5)).await;
            let body = response.unwrap().into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, ANSWER);
            let head = server.heads.lock().unwrap()[i].clone();
            assert!(head.starts_with(&line.to_ascii_lowercase()), "{head}");
            assert!(head.contains(&format!("\r\nhost: {authority}")), "{head}");
            assert!(head.contains("\r\nx-test: kept"), "{head}");
            assert!(head.contains("\r\nuser-agent: uniproxy/"), "{head}");
        }
    }
}
