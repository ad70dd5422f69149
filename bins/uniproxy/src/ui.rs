//! The log viewer at `GET /ui`: one HTML page, one script and one stylesheet, embedded in the
//! binary at build time (no build step, no CDN), reading the JSON endpoints of
//! [`admin`].
//!
//! When the admin side needs a key, `/ui` answers with a login form instead of the page. The
//! form posts the key to `/ui/login`, which opens a session ([`admin::Sessions`]) and sets an
//! HttpOnly, SameSite=Strict cookie holding its random token; the page's own requests then
//! carry it. `/ui/logout` ends the session.
//! The script and the stylesheet hold no data and are served to anyone.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};

use crate::admin;
use crate::routes::ProxyBody;
use crate::state::AppState;

const INDEX_HTML: &str = include_str!("../ui/index.html");
const LOGIN_HTML: &str = include_str!("../ui/login.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");

/// The page's Content-Security-Policy: nothing but this origin's own files, no inline script.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
                       img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
                       form-action 'self'";

/// The largest login form body read.
const MAX_LOGIN_BODY: usize = 4096;

/// The embedded files under `/ui/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    /// `app.js`.
    Script,
    /// `app.css`.
    Style,
}

impl Asset {
    /// The asset at `name` (the path after `/ui/`).
    pub fn from_name(name: &str) -> Option<Asset> {
        match name {
            "app.js" => Some(Asset::Script),
            "app.css" => Some(Asset::Style),
            _ => None,
        }
    }
}

fn page(status: StatusCode, content_type: &'static str, body: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from_static(body.as_bytes()))));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, header::HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    r
}

fn login_page(status: StatusCode) -> Response<ProxyBody> {
    page(status, "text/html; charset=utf-8", LOGIN_HTML)
}

/// `GET /ui`: the page, or the login form (401) when a key is needed and none came.
pub fn index(state: &AppState, req: &Request<Incoming>) -> Response<ProxyBody> {
    if admin::authorized(state, req.headers()) {
        page(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML)
    } else {
        login_page(StatusCode::UNAUTHORIZED)
    }
}

/// `GET /ui/app.js` and `GET /ui/app.css`.
pub fn asset(asset: Asset) -> Response<ProxyBody> {
    match asset {
        Asset::Script => page(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS),
        Asset::Style => page(StatusCode::OK, "text/css; charset=utf-8", APP_CSS),
    }
}

fn redirect_to_ui(cookie: Option<String>) -> Response<ProxyBody> {
    let mut r = Response::new(Either::Left(Full::new(Bytes::new())));
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut().insert(header::LOCATION, header::HeaderValue::from_static("/ui"));
    r.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    if let Some(v) = cookie.and_then(|c| header::HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /ui/login` with a form field `key`: on a valid key, the session cookie and a redirect
/// to `/ui`; otherwise the login form again (401).
pub async fn login(state: &AppState, req: Request<Incoming>) -> Response<ProxyBody> {
    let secure = secure_cookie(req.headers());
    let Ok(body) = Limited::new(req.into_body(), MAX_LOGIN_BODY).collect().await else {
        // What is left of the body is not read, and hyper closes the connection: said.
        let mut page = login_page(StatusCode::BAD_REQUEST);
        page.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        return page;
    };
    let body = body.to_bytes();
    let key = form_urlencoded::parse(&body).find(|(k, _)| k == "key").map(|(_, v)| v.into_owned());
    let keys = admin::admin_keys(state);
    if keys.is_empty() {
        return redirect_to_ui(None);
    }
    if !key.is_some_and(|k| admin::is_admin_key(state, &k)) {
        return login_page(StatusCode::UNAUTHORIZED);
    }
    let Some(token) = state.sessions.open(Instant::now()) else {
        return login_page(StatusCode::SERVICE_UNAVAILABLE);
    };
    redirect_to_ui(Some(format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        admin::SESSION_COOKIE,
        admin::SESSION_LIFETIME.as_secs()
    )))
}

/// `; Secure` for a login that came through an HTTPS front (`X-Forwarded-Proto: https`, or
/// `Forwarded: proto=https`), so that the browser never sends the session over plain HTTP. A
/// header that lies can only keep the cookie off plain HTTP, which is no harm.
fn secure_cookie(headers: &hyper::HeaderMap) -> &'static str {
    let says_https = |name: &str, https: &dyn Fn(&str) -> bool| {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).any(https)
    };
    let proto = says_https("x-forwarded-proto", &|v| {
        v.split(',').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
    });
    // RFC 7239 lets a value be a quoted string: `proto="https"` says the same as `proto=https`.
    let forwarded = says_https("forwarded", &|v| {
        v.split([';', ',']).filter_map(|pair| pair.split_once('=')).any(|(name, value)| {
            let value = value.trim();
            let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
            name.trim().eq_ignore_ascii_case("proto") && value.eq_ignore_ascii_case("https")
        })
    });
    if proto || forwarded { "; Secure" } else { "" }
}

/// `POST /ui/logout`: ends the session the cookie names and clears the cookie.
pub fn logout(state: &AppState, headers: &hyper::HeaderMap) -> Response<ProxyBody> {
    if let Some(token) = admin::session_cookie(headers) {
        state.sessions.close(token);
    }
    redirect_to_ui(Some(format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        admin::SESSION_COOKIE
    )))
}
