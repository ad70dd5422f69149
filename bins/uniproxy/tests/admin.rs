//! The admin side against the server in-process: /api/logs, /api/logs/{id}, /api/stats,
//! /metrics, the /ui page and its login, the key rules, and UI_ENABLED=false.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use uniproxy::AppState;
use uniproxy_config::{Secret, Settings};

/// A server on 127.0.0.1:0 with a temporary log store; it stops when this is dropped.
struct Server {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

async fn start(configure: impl FnOnce(&mut Settings)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::mock_defaults();
    settings.database_path = dir.path().join("log.db");
    settings.log_file_path = dir.path().join("proxy.log");
    configure(&mut settings);
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let state = Arc::new(AppState::new(settings, log).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(uniproxy::serve(state, listener, async {
        let _ = stopped.await;
    }));
    let client = Client::builder(TokioExecutor::new()).build_http();
    Server { addr, client, _stop: stop, _dir: dir }
}

impl Server {
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let res = self.client.request(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Reply { status, headers, body }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, path, headers, "").await
    }

    async fn chat(&self, key: Option<&str>, body: Value) -> Reply {
        let auth = key.map(|k| format!("Bearer {k}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        self.send(Method::POST, "/v1/chat/completions", &headers, &body.to_string()).await
    }

    /// Records are written by the store's writer thread: waits until `n` rows are listed.
    async fn wait_for_rows(&self, n: usize, headers: &[(&str, &str)]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.get("/api/logs", headers).await;
            assert_eq!(r.status, 200, "{}", r.text());
            let page = r.json();
            if page["items"].as_array().unwrap().len() >= n {
                return page;
            }
            assert!(Instant::now() < deadline, "rows did not appear: {page}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

const XSS: &str = "<script>window.__pwned=1</script><img src=x onerror=window.__pwned=2>";

fn hello(text: &str, stream: bool) -> Value {
    json!({ "model": "client-model", "stream": stream, "messages": [{ "role": "user", "content": text }] })
}

#[tokio::test]
async fn the_log_endpoints_list_filter_open_and_aggregate() {
    let s = start(|_| {}).await;
    assert_eq!(s.chat(None, hello("first question", false)).await.status, 200);
    assert_eq!(s.chat(None, hello(XSS, true)).await.status, 200);
    assert_eq!(s.chat(None, json!({ "model": "m", "messages": "not a list" })).await.status, 400);
    let page = s.wait_for_rows(3, &[]).await;
    let items = page["items"].as_array().unwrap();
    // Newest first, with the summary fields the page shows.
    assert_eq!(items[0]["status"], 400);
    assert_eq!(items[1]["stream"], true);
    assert_eq!(items[2]["client_model"], "client-model");
    assert_eq!(items[2]["actual_model"], "uniproxy-mock");
    assert!(items[2]["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(page["next_before"].is_null());

    // Filters and paging.
    let ok = s.get("/api/logs?status=2xx", &[]).await.json();
    assert_eq!(ok["items"].as_array().unwrap().len(), 2);
    let errors = s.get("/api/logs?status=error", &[]).await.json();
    assert_eq!(errors["items"].as_array().unwrap().len(), 1);
    let found = s.get("/api/logs?search=window.__pwned", &[]).await.json();
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    let first = s.get("/api/logs?limit=1", &[]).await.json();
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    let before = first["next_before"].as_i64().unwrap();
    let second = s.get(&format!("/api/logs?limit=1&before={before}&total=true"), &[]).await.json();
    assert_eq!(second["items"][0]["id"].as_i64().unwrap(), before - 1);
    assert_eq!(second["total"], 3);

    // One entry in full: the bodies as sent and as they went upstream, and the answer.
    let id = items[1]["id"].as_i64().unwrap();
    let entry = s.get(&format!("/api/logs/{id}"), &[]).await;
    assert_eq!(entry.status, 200);
    let entry = entry.json();
    assert!(entry["client_request"].as_str().unwrap().contains("window.__pwned"));
    assert!(entry["upstream_request"].as_str().unwrap().contains("uniproxy-mock"));
    assert!(entry["response"].as_str().unwrap().contains("choices"));
    assert!(entry["request_headers"].as_str().unwrap().contains("content-type"));

    // Aggregates with a series.
    let stats = s.get("/api/stats", &[]).await.json();
    assert_eq!(stats["requests"], 3);
    assert_eq!(stats["errors"], 1);
    assert!(stats["latency"]["p50"].is_i64());
    assert!(!stats["series"].as_array().unwrap().is_empty());
    assert!(stats["bucket_ms"].as_i64().unwrap() > 0);

    // Errors come in the OpenAI shape.
    let missing = s.get("/api/logs/999999", &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "not_found");
    let bad = s.get("/api/logs?status=sometimes", &[]).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["param"], "status");
    assert_eq!(s.get("/api/stats?from=yesterday", &[]).await.status, 400);

    // The metrics saw the same traffic.
    let m = s.get("/metrics", &[]).await;
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").starts_with("text/plain; version=0.0.4"));
    let text = m.text();
    for line in [
        r#"uniproxy_requests_total{platform="mock",status="200",stream="false"} 1"#,
        r#"uniproxy_requests_total{platform="mock",status="200",stream="true"} 1"#,
        r#"uniproxy_requests_total{platform="mock",status="400",stream="false"} 1"#,
        r#"uniproxy_time_to_first_token_seconds_count{platform="mock"} 1"#,
        "uniproxy_requests_in_flight 0",
        "uniproxy_log_entries_written_total 3",
        "uniproxy_log_entries_spilled_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}

#[tokio::test]
async fn the_page_and_its_files_are_served_with_a_strict_policy() {
    let s = start(|_| {}).await;
    let page = s.get("/ui", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert!(page.header("content-security-policy").contains("script-src 'self'"));
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    assert!(page.text().contains("/ui/app.js"));
    let js = s.get("/ui/app.js", &[]).await;
    assert_eq!(js.header("content-type"), "text/javascript; charset=utf-8");
    assert!(!js.text().contains(".innerHTML"), "the page must not build HTML from strings");
    let css = s.get("/ui/app.css", &[]).await;
    assert_eq!(css.header("content-type"), "text/css; charset=utf-8");
    assert_eq!(s.get("/ui/other.js", &[]).await.status, 404);
    assert_eq!(s.send(Method::POST, "/ui", &[], "").await.status, 405);
}

#[tokio::test]
async fn proxy_keys_guard_the_admin_side_and_the_login_sets_a_cookie() {
    let s = start(|s| s.proxy_api_keys = vec![Secret::from("client-key")]).await;
    assert_eq!(s.chat(Some("client-key"), hello("hi", false)).await.status, 200);
    for path in ["/api/logs", "/api/logs/1", "/api/stats", "/metrics"] {
        let r = s.get(path, &[]).await;
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.json()["error"]["type"], "authentication_error");
        let r = s.get(path, &[("authorization", "Bearer wrong")]).await;
        assert_eq!(r.status, 401, "{path}");
    }
    let auth = [("authorization", "Bearer client-key")];
    s.wait_for_rows(1, &auth).await;
    assert_eq!(s.get("/metrics", &auth).await.status, 200);
    // /health stays open.
    assert_eq!(s.get("/health", &[]).await.status, 200);

    // The page: a login form without a key, the page with the session cookie.
    let login = s.get("/ui", &[]).await;
    assert_eq!(login.status, 401);
    assert!(login.text().contains("action=\"/ui/login\""));
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let wrong = s.send(Method::POST, "/ui/login", &form, "key=nope").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.headers.get("set-cookie").is_none());
    let ok = s.send(Method::POST, "/ui/login", &form, "key=client-key").await;
    assert_eq!(ok.status, 303);
    assert_eq!(ok.header("location"), "/ui");
    let cookie = ok.header("set-cookie").to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains("client-key"), "the cookie must not hold the key");
    let pair = cookie.split(';').next().unwrap().to_owned();
    assert_eq!(s.get("/ui", &[("cookie", &pair)]).await.status, 200);
    assert_eq!(s.get("/api/logs", &[("cookie", &pair)]).await.status, 200);
    assert_eq!(s.get("/api/logs", &[("cookie", "uniproxy_admin=forged")]).await.status, 401);
    // Each login is its own session: a second one gets another token, and both work.
    let again = s.send(Method::POST, "/ui/login", &form, "key=client-key").await;
    let other = again.header("set-cookie").split(';').next().unwrap().to_owned();
    assert_ne!(other, pair);
    assert_eq!(s.get("/api/logs", &[("cookie", &other)]).await.status, 200);
    // Logging out ends the session on the server, not only in the browser: the cookie, kept
    // elsewhere, no longer opens anything. The other session stays open.
    let out = s.send(Method::POST, "/ui/logout", &[("cookie", &pair)], "").await;
    assert!(out.header("set-cookie").contains("Max-Age=0"));
    assert_eq!(s.get("/api/logs", &[("cookie", &pair)]).await.status, 401);
    assert_eq!(s.get("/ui", &[("cookie", &pair)]).await.status, 401);
    assert_eq!(s.get("/api/logs", &[("cookie", &other)]).await.status, 200);
}

#[tokio::test]
async fn an_admin_key_separates_the_admin_side_from_clients() {
    let s = start(|s| {
        s.proxy_api_keys = vec![Secret::from("client-key")];
        s.admin_key = Some(Secret::from("admin-key"));
    })
    .await;
    let client = [("authorization", "Bearer client-key")];
    let admin = [("authorization", "Bearer admin-key")];
    assert_eq!(s.get("/api/logs", &client).await.status, 401);
    assert_eq!(s.get("/metrics", &client).await.status, 401);
    assert_eq!(s.get("/api/logs", &admin).await.status, 200);
    assert_eq!(s.get("/metrics", &admin).await.status, 200);
    // The admin key is not a client key.
    assert_eq!(s.chat(Some("admin-key"), hello("hi", false)).await.status, 401);
    assert_eq!(s.chat(Some("client-key"), hello("hi", false)).await.status, 200);
    let form = [("content-type", "application/x-www-form-urlencoded")];
    assert_eq!(s.send(Method::POST, "/ui/login", &form, "key=client-key").await.status, 401);
    assert_eq!(s.send(Method::POST, "/ui/login", &form, "key=admin-key").await.status, 303);
}

#[tokio::test]
async fn ui_enabled_false_turns_the_page_off_but_not_the_api() {
    let s = start(|s| s.ui_enabled = false).await;
    for path in ["/ui", "/ui/", "/ui/app.js", "/ui/app.css"] {
        assert_eq!(s.get(path, &[]).await.status, 404, "{path}");
    }
    assert_eq!(s.send(Method::POST, "/ui/login", &[], "key=x").await.status, 404);
    assert_eq!(s.get("/api/logs", &[]).await.status, 200);
    assert_eq!(s.get("/metrics", &[]).await.status, 200);
}
