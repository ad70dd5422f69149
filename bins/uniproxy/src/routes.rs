//! Routing, CORS, client keys, and the small endpoints (`/models`, `/models/{model}`,
//! `/health`). The admin
//! endpoints live in [`admin`], the log viewer in [`ui`].

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Incoming};
use hyper::{Method, Request, Response, header};
use serde_json::json;
use uniproxy_wire::{Model, ModelList};

use crate::connection::ConnectionCut;
use crate::error::ProxyError;
use crate::relay::SseRelay;
use crate::state::{AppState, Side};
use crate::ui::Asset;
use crate::upstream::Client;
use crate::{admin, chat, ui};

/// Every response body: a complete body, or a relayed stream.
/// The relay is boxed: it is large, and most responses are not streams.
pub type ProxyBody = Either<Full<Bytes>, Box<SseRelay>>;

/// A JSON response.
pub fn json_response(status: u16, body: Bytes) -> Response<ProxyBody> {
    body_response(status, "application/json", body)
}

/// A complete response with this content type.
pub fn body_response(status: u16, content_type: &'static str, body: Bytes) -> Response<ProxyBody> {
    let mut r = Response::new(Either::Left(Full::new(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    r
}

/// The response for an error, in the OpenAI shape.
pub fn error_response(e: &ProxyError) -> Response<ProxyBody> {
    let body = serde_json::to_vec(&e.to_error_response()).unwrap_or_default();
    error_response_with(e, Bytes::from(body))
}

/// The response for an error whose body (`e.to_error_response()`, serialized) is at hand.
pub fn error_response_with(e: &ProxyError, body: Bytes) -> Response<ProxyBody> {
    let mut r = json_response(e.status(), body);
    if let ProxyError::Overloaded { .. } = e {
        r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    if let ProxyError::Unauthorized = e {
        // A 401 must name the scheme to authenticate with (RFC 9110, 11.6.1); some HTTP
        // clients (Java's HttpURLConnection, older OkHttp) fail on one without it, and the
        // error's body is never read.
        r.headers_mut().insert(header::WWW_AUTHENTICATE, www_authenticate());
    }
    if matches!(e, ProxyError::UpstreamAuth(_) | ProxyError::Disabled)
        || e.proxy_refused_credentials()
    {
        // Settings at fault (the upstream refuses API_KEY; ENABLED=false; the outbound proxy
        // refuses its credentials), which only a restart changes: the OpenAI SDKs retry a 502
        // or 503 twice by default unless told not to, and each retry of a refused key is
        // another refused call upstream.
        r.headers_mut().insert("x-should-retry", header::HeaderValue::from_static("false"));
    }
    if let ProxyError::UnsupportedEncoding { .. } = e {
        // Which codings a body may come in (RFC 9110, 12.5.3 and 15.5.16): none but itself.
        r.headers_mut()
            .insert(header::ACCEPT_ENCODING, header::HeaderValue::from_static("identity"));
    }
    if e.leaves_body_unread() {
        // hyper closes a connection whose request body was not read to its end: said, so
        // that the client sends its next request on a new one instead of into a closed one.
        r.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    }
    r
}

/// The challenge of the proxy's 401s: a bearer token, as the keys are sent.
fn www_authenticate() -> header::HeaderValue {
    header::HeaderValue::from_static("Bearer realm=\"uniproxy\"")
}

/// The routes the proxy serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Chat,
    Models,
    /// `GET /models/{model}`: the SDKs' `models.retrieve`.
    Model,
    Health,
    Metrics,
    Logs,
    LogEntry(i64),
    Stats,
    Ui,
    UiAsset(Asset),
    UiLogin,
    UiLogout,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anyone.
    Open,
    /// A client with one of PROXY_API_KEYS (anyone when none is set).
    Client,
    /// An admin: see [`admin`](crate::admin).
    Admin,
}

fn route_of(path: &str) -> Option<Route> {
    let path = path.trim_end_matches('/');
    if let Some(id) = path.strip_prefix("/api/logs/") {
        return id.parse().ok().map(Route::LogEntry);
    }
    // `/openai/v1` and `/openai` are Azure's (its v1 API, and its clients' data plane).
    let prefixes = ["/v1", "/openai/v1", "/openai"];
    let unprefixed = prefixes.iter().find_map(|p| path.strip_prefix(p)).unwrap_or(path);
    if unprefixed.starts_with("/models/") {
        return Some(Route::Model);
    }
    // Azure OpenAI's clients (`AzureOpenAI(azure_endpoint=…)` in the OpenAI SDKs, Azure's own)
    // put the deployment in the path, where the other clients put the model in the body
    // (they put it there too).
    if let Some(rest) = path.strip_prefix("/openai/deployments/") {
        return match rest.split_once('/') {
            Some((deployment, "chat/completions")) if !deployment.is_empty() => Some(Route::Chat),
            _ => None,
        };
    }
    if let Some(name) = path.strip_prefix("/ui/") {
        return match name {
            "login" => Some(Route::UiLogin),
            "logout" => Some(Route::UiLogout),
            _ => Asset::from_name(name).map(Route::UiAsset),
        };
    }
    match path {
        "/chat/completions" | "/v1/chat/completions" | "/openai/v1/chat/completions" => {
            Some(Route::Chat)
        }
        "/models" | "/v1/models" | "/openai/v1/models" | "/openai/models" => Some(Route::Models),
        "/health" | "/v1/health" => Some(Route::Health),
        "/metrics" => Some(Route::Metrics),
        "/api/logs" => Some(Route::Logs),
        "/api/stats" => Some(Route::Stats),
        "/ui" => Some(Route::Ui),
        _ => None,
    }
}

fn allowed_method(route: Route) -> Method {
    match route {
        Route::Chat | Route::UiLogin | Route::UiLogout => Method::POST,
        Route::Models
        | Route::Model
        | Route::Health
        | Route::Metrics
        | Route::Logs
        | Route::LogEntry(_)
        | Route::Stats
        | Route::Ui
        | Route::UiAsset(_) => Method::GET,
    }
}

/// The `Allow` header of a route, for a 405 and for `OPTIONS`: every method it answers (RFC
/// 9110, 10.2.1), `HEAD` and `OPTIONS` included, not only the one it is for.
fn allow(route: Route) -> header::HeaderValue {
    header::HeaderValue::from_static(if allowed_method(route) == Method::POST {
        "POST, OPTIONS"
    } else {
        "GET, HEAD, OPTIONS"
    })
}

fn access(route: Route) -> Access {
    match route {
        // The page checks the key itself, to answer with a login form rather than JSON.
        Route::Health | Route::Ui | Route::UiAsset(_) | Route::UiLogin | Route::UiLogout => {
            Access::Open
        }
        Route::Chat | Route::Models | Route::Model => Access::Client,
        Route::Metrics | Route::Logs | Route::LogEntry(_) | Route::Stats => Access::Admin,
    }
}

/// The side of the proxy a route belongs to, for the `Host` check against DNS rebinding;
/// `None` for `/health`, which answers any name.
fn side(route: Route) -> Option<Side> {
    match access(route) {
        Access::Client => Some(Side::Client),
        Access::Admin => Some(Side::Admin),
        // The log viewer is open only in that it checks the admin key itself.
        Access::Open if is_ui(route) => Some(Side::Admin),
        Access::Open => None,
    }
}

fn is_ui(route: Route) -> bool {
    matches!(route, Route::Ui | Route::UiAsset(_) | Route::UiLogin | Route::UiLogout)
}

/// A request from hyper's hand-over until its handler first runs.
///
/// hyper drops the future of a request in flight when its client closes the connection (the
/// server does not keep half-closed connections), and it may do so before polling the future
/// once: when the close comes with the request, from a client that sends and hangs up at
/// once (measured: 78 of 200 such requests had no record). The handler then never runs, so
/// it records nothing. A chat request dropped so is recorded from here instead, as one that
/// leaves later is.
pub struct Arrival {
    state: Arc<AppState>,
    /// The request, until [`handle`](Self::handle) takes it.
    req: Option<Request<Incoming>>,
    client_addr: Option<String>,
    /// Its connection's, for a stream's watchdog and its record.
    cut: Option<ConnectionCut>,
}

impl Arrival {
    /// A request as hyper hands it over, with what the server knows of its connection.
    pub fn new(
        state: Arc<AppState>,
        req: Request<Incoming>,
        client_addr: Option<String>,
        cut: Option<ConnectionCut>,
    ) -> Self {
        Arrival { state, req: Some(req), client_addr, cut }
    }

    /// Dispatches the request (see [`handle`]).
    pub async fn handle(mut self, client: &Client) -> Response<ProxyBody> {
        let state = self.state.clone();
        match self.req.take() {
            Some(req) => handle(state, client, req, self.client_addr.take(), self.cut.take()).await,
            // `new` puts the request in, and only this, which takes `self`, takes it out.
            None => {
                error_response(&ProxyError::NotFound { method: String::new(), path: String::new() })
            }
        }
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        let Some(req) = self.req.take() else { return };
        // Every chat request is recorded, with a client key or not (see [`chat::refused`]).
        if route_of(req.uri().path()) == Some(Route::Chat) && req.method() == Method::POST {
            let authorized = authorized(&self.state, &req);
            chat::record_unhandled(&self.state, &req, self.client_addr.take(), authorized);
        }
    }
}

/// Dispatches one request.
pub async fn handle(
    state: Arc<AppState>,
    client: &Client,
    req: Request<Incoming>,
    client_addr: Option<String>,
    cut: Option<ConnectionCut>,
) -> Response<ProxyBody> {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut response = dispatch(&state, client, req, client_addr, cut).await;
    if let Some(origin) = origin {
        cors_headers(&state, &origin, response.headers_mut());
    }
    response
}

async fn dispatch(
    state: &Arc<AppState>,
    client: &Client,
    req: Request<Incoming>,
    client_addr: Option<String>,
    cut: Option<ConnectionCut>,
) -> Response<ProxyBody> {
    let path = req.uri().path().to_owned();
    let route = route_of(&path).filter(|r| state.settings.ui_enabled || !is_ui(*r));
    // Only a chat request and the login form have their body read; any other answer leaves
    // a body unread, and hyper then closes the connection (at once for a body larger than
    // what it has read with the head). Said, as for the chat route's refusals, so that a
    // client posting to an endpoint the proxy does not serve (`/v1/embeddings`,
    // `/v1/responses`) sends its next request on a new connection instead of into a closed one.
    let reads_body = route
        .is_some_and(|r| matches!(r, Route::Chat | Route::UiLogin) && req.method() == Method::POST);
    let body_left = !reads_body && !req.body().is_end_stream();
    let mut response = route_to(state, client, req, route, path, client_addr, cut).await;
    if body_left {
        response
            .headers_mut()
            .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    }
    response
}

/// [`dispatch`] once the route is known (`None`: no route for the path).
async fn route_to(
    state: &Arc<AppState>,
    client: &Client,
    req: Request<Incoming>,
    route: Option<Route>,
    path: String,
    client_addr: Option<String>,
    cut: Option<ConnectionCut>,
) -> Response<ProxyBody> {
    if let Some(e) = host_header_fault(&req) {
        if route == Some(Route::Chat) {
            return chat::refused(state, &req, client_addr, &e).await;
        }
        return error_response(&e);
    }
    let Some(route) = route else {
        // A browser asks before it posts; a failed preflight is only "Failed to fetch" to the
        // page. Answered, the request itself gets the 404 that names what is not served (the
        // Vercel AI SDK's default `openai(model)` posts to `/v1/responses`).
        if req.method() == Method::OPTIONS
            && let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD)
            && req.headers().get(header::ORIGIN).is_some_and(|o| origin_allowed(state, o).is_some())
        {
            return preflight(state, &req, None, asked.clone());
        }
        return error_response(&ProxyError::NotFound { method: req.method().to_string(), path });
    };
    if req.method() == Method::OPTIONS {
        return preflight(state, &req, Some(allow(route)), allow(route));
    }
    let allowed = allowed_method(route);
    if req.method() != allowed && !(allowed == Method::GET && req.method() == Method::HEAD) {
        let mut r = error_response(&ProxyError::MethodNotAllowed {
            method: req.method().to_string(),
            path,
        });
        r.headers_mut().insert(header::ALLOW, allow(route));
        return r;
    }
    let host = request_host(&req);
    let refused = if side(route).is_some_and(|side| !state.answers_to(host, side)) {
        let host = String::from_utf8_lossy(host.unwrap_or_default()).into_owned();
        Some(ProxyError::HostNotAllowed { host })
    } else if req.method() == Method::POST {
        foreign_origin(state, req.headers(), host).map(|origin| ProxyError::CrossOrigin { origin })
    } else {
        None
    };
    if let Some(e) = refused {
        if route == Route::Chat {
            return chat::refused(state, &req, client_addr, &e).await;
        }
        return error_response(&e);
    }
    let permitted = match access(route) {
        Access::Open => true,
        Access::Client => authorized(state, &req),
        Access::Admin => admin::authorized(state, req.headers()),
    };
    if !permitted {
        if route == Route::Chat {
            return chat::refused(state, &req, client_addr, &ProxyError::Unauthorized).await;
        }
        return error_response(&ProxyError::Unauthorized);
    }
    let query = req.uri().query().map(str::to_owned);
    match route {
        Route::Chat => {
            // Cut off at the end of the shutdown's grace period: the request's record says so
            // (`chat::Pending`), and the client gets a 503 rather than a dropped connection.
            tokio::select! {
                biased;
                response = chat::chat(state.clone(), client, req, client_addr, cut) => response,
                () = state.cut_off() => error_response(&ProxyError::ShuttingDown),
            }
        }
        Route::Models => models(state),
        Route::Model => model(state),
        Route::Health => health(state),
        Route::Metrics => admin::metrics(state),
        Route::Logs => admin::logs(state, query.as_deref()).await,
        Route::LogEntry(id) => admin::entry(state, id).await,
        Route::Stats => admin::stats(state, query.as_deref()).await,
        Route::Ui => ui::index(state, &req),
        Route::UiAsset(asset) => ui::asset(asset),
        Route::UiLogin => ui::login(state, req).await,
        Route::UiLogout => ui::logout(state, req.headers()),
    }
}

/// A request's `Host` headers, against RFC 9112, 3.2: an HTTP/1.1 request has exactly one (an
/// HTTP/1.0 one may have none; HTTP/2 names its host in `:authority`), and no request has two,
/// which the host checks could read differently from a front proxy.
fn host_header_fault<B>(req: &Request<B>) -> Option<ProxyError> {
    let count = req.headers().get_all(header::HOST).iter().count();
    let fault = count > 1 || count == 0 && req.version() == hyper::Version::HTTP_11;
    fault.then_some(ProxyError::HostHeader { count })
}

/// The host a request is for: the authority of its target when it has one (HTTP/2's
/// `:authority`, which hyper puts in the URI and not in a `Host` header, and an HTTP/1
/// request in absolute form, whose `Host` the server must ignore: RFC 9112, 3.2.2), else
/// its `Host` header.
fn request_host<B>(req: &Request<B>) -> Option<&[u8]> {
    match req.uri().authority() {
        Some(authority) => Some(authority.as_str().as_bytes()),
        None => req.headers().get(header::HOST).map(header::HeaderValue::as_bytes),
    }
}

/// Whether the request carries one of the proxy's keys (always, when none are configured).
fn authorized(state: &AppState, req: &Request<Incoming>) -> bool {
    let keys = &state.settings.proxy_api_keys;
    if keys.is_empty() {
        return true;
    }
    let token = client_key(req.headers());
    // Every key is compared, so the time taken does not tell which key came close.
    token.is_some_and(|t| keys.iter().fold(false, |found, k| k.matches(t) | found))
}

/// The key a client sends: a bearer token, or (Azure OpenAI's clients) an `api-key` header.
pub fn client_key(headers: &hyper::HeaderMap) -> Option<&str> {
    bearer(headers).or_else(|| headers.get("api-key")?.to_str().ok().map(str::trim))
}

/// The bearer token of an `Authorization` header.
pub fn bearer(headers: &hyper::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme name is case-insensitive (RFC 9110, 11.1): `BEARER` is `Bearer`.
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .map(str::trim)
}

/// The one model the proxy serves.
fn served_model(state: &AppState) -> Model {
    Model::new(
        state.settings.actual_name.clone(),
        state.started_unix,
        state.provider.kind().as_str(),
    )
}

fn models(state: &AppState) -> Response<ProxyBody> {
    let list = ModelList::from(served_model(state));
    json_response(200, Bytes::from(serde_json::to_vec(&list).unwrap_or_default()))
}

/// Any name a client asks for is served by the configured model, as a chat request naming it
/// would be: the answer is that model (its `id` is ACTUAL_NAME), so a client that checks its
/// model name before use gets the model it will talk to rather than a 404.
fn model(state: &AppState) -> Response<ProxyBody> {
    json_response(200, Bytes::from(serde_json::to_vec(&served_model(state)).unwrap_or_default()))
}

fn health(state: &AppState) -> Response<ProxyBody> {
    let body = json!({
        "status": if state.settings.enabled { "ok" } else { "disabled" },
        "platform": state.provider.kind().as_str(),
        "model": state.settings.actual_name,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "log_store": state.recorder.health(),
    });
    json_response(200, Bytes::from(body.to_string()))
}

fn origin_allowed(state: &AppState, origin: &header::HeaderValue) -> Option<header::HeaderValue> {
    let allowed = &state.settings.cors_allow_origins;
    if allowed.iter().any(|a| a == "*") {
        return Some(header::HeaderValue::from_static("*"));
    }
    let o = origin.to_str().ok()?;
    allowed.iter().any(|a| a.eq_ignore_ascii_case(o)).then(|| origin.clone())
}

/// The origin of a web page that sent this request, when the proxy does not serve that
/// origin: neither allowed by CORS_ALLOW_ORIGINS nor the proxy's own (the log viewer's own
/// login form: the browser says `Sec-Fetch-Site: same-origin`, or, an older one, an `Origin`
/// naming the host the request came to, `host` (see [`request_host`]); with the viewer's
/// `no-referrer` policy Chrome's form posts say `Origin: null`). `None` for a request with no
/// `Origin`, which is what every client but a browser sends.
fn foreign_origin(
    state: &AppState,
    headers: &hyper::HeaderMap,
    host: Option<&[u8]>,
) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?;
    let same_origin = headers.get("sec-fetch-site").is_some_and(|site| site == "same-origin");
    if same_origin || origin_allowed(state, origin).is_some() {
        return None;
    }
    let text = String::from_utf8_lossy(origin.as_bytes()).into_owned();
    let authority = text.split_once("://").map(|(_, rest)| rest);
    let own = authority.zip(host).is_some_and(|(a, h)| a.as_bytes().eq_ignore_ascii_case(h));
    (!own).then_some(text)
}

fn cors_headers(state: &AppState, origin: &header::HeaderValue, headers: &mut hyper::HeaderMap) {
    if let Some(allow) = origin_allowed(state, origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        // A page's script reads only the headers named here (beyond the CORS-safelisted
        // few): the OpenAI SDKs take `x-request-id` as the answer's `_request_id`, wait as
        // `retry-after-ms` / `retry-after` say before retrying a 429 or 503, and do not retry
        // what says `x-should-retry: false`.
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            header::HeaderValue::from_static(
                "x-request-id, x-uniproxy-overhead-ms, retry-after, retry-after-ms, x-should-retry",
            ),
        );
        headers.append(header::VARY, header::HeaderValue::from_static("origin"));
    }
}

/// The answer to `OPTIONS`: `allow` names a route's methods (none for a path no route serves),
/// and `methods` are those a page of an allowed origin may use there.
fn preflight(
    state: &AppState,
    req: &Request<Incoming>,
    allow: Option<header::HeaderValue>,
    methods: header::HeaderValue,
) -> Response<ProxyBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::new())));
    *r.status_mut() = hyper::StatusCode::NO_CONTENT;
    if let Some(allow) = allow {
        r.headers_mut().insert(header::ALLOW, allow);
    }
    let origin = req.headers().get(header::ORIGIN);
    if let Some(allowed) = origin.and_then(|o| origin_allowed(state, o)) {
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
        let asked = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            asked.unwrap_or(header::HeaderValue::from_static("authorization, content-type")),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, header::HeaderValue::from_static("600"));
        // `vary: origin` comes with the headers every answer to an allowed origin gets
        // (`cors_headers`).
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        let token = |value: &str| {
            let mut h = hyper::HeaderMap::new();
            h.insert(header::AUTHORIZATION, value.parse().unwrap());
            bearer(&h).map(str::to_owned)
        };
        for value in ["Bearer k1", "bearer k1", "BEARER k1", "Bearer  k1 "] {
            assert_eq!(token(value).as_deref(), Some("k1"), "{value}");
        }
        for value in ["Basic azE=", "Bearerk1", "k1"] {
            assert_eq!(token(value), None, "{value}");
        }
    }
}
