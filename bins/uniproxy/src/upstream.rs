//! The pooled HTTP client that talks to the upstream: HTTPS through rustls (HTTP/1.1 and
//! HTTP/2 by ALPN) or plain HTTP for local servers, keep-alive, connect timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use uniproxy_translate::UpstreamRequest;

use crate::error::ProxyError;

/// The upstream client; cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    inner: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
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

    /// A client with its own connection pool. Each runtime thread makes its own, so a pooled
    /// connection is always driven by the thread that uses it.
    pub fn new(connect_timeout: Duration, tls: rustls::ClientConfig) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let inner = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Client { inner }
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
    ) -> Result<hyper::Response<Incoming>, ProxyError> {
        let mut builder = hyper::Request::builder().method(up.method.clone()).uri(&up.url);
        if let Some(headers) = builder.headers_mut() {
            headers.clone_from(&up.headers);
            headers.insert(
                hyper::header::USER_AGENT,
                hyper::header::HeaderValue::from_static(concat!(
                    "uniproxy/",
                    env!("CARGO_PKG_VERSION")
                )),
            );
        }
        let request = builder.body(Full::new(up.body.clone())).map_err(|_| {
            ProxyError::Translate(uniproxy_translate::TranslateError::InvalidRequest {
                param: "BASE_URL".to_owned(),
                reason: "not a valid URL",
            })
        })?;
        match tokio::time::timeout(first_byte, self.inner.request(request)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                if e.is_connect() && is_timeout(&e) {
                    Err(ProxyError::UpstreamTimeout {
                        phase: "the connect timeout",
                        setting: "CONNECT_TIMEOUT",
                    })
                } else {
                    Err(ProxyError::UpstreamConnect(e))
                }
            }
            Err(_) => Err(ProxyError::UpstreamTimeout {
                phase: "the first-byte timeout",
                setting: "FIRST_BYTE_TIMEOUT",
            }),
        }
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
