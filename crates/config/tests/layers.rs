//! Precedence: default < TOML file < .env < environment, and
//! `UNIPROXY_NAME` over `NAME` within a layer.

mod support;

use std::time::Duration;

use support::{load_env, write};
use uniproxy_config::{Origin, Platform, Sources, load};

/// A file, a .env and an environment that all set PORT, so each test can
/// remove layers from the top.
fn layered(dir: &std::path::Path) -> Sources {
    let file = write(dir, "uniproxy.toml", "port = 1001\nmax_tokens = 11\nhost = \"127.0.0.1\"\n");
    let dotenv = write(dir, ".env", "PORT=1002\nMAX_TOKENS=12\n");
    Sources { file: Some(file), dotenv: Some(dotenv), env: vec![("PORT".into(), "1003".into())] }
}

#[test]
fn environment_beats_dotenv_beats_file_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut sources = layered(dir.path());

    let s = load(&sources).unwrap();
    assert_eq!(s.port, 1003, "environment wins");
    assert_eq!(s.max_tokens, 12, ".env wins over the file");
    assert_eq!(s.host, "127.0.0.1", "the file wins over the default");
    assert_eq!(s.max_retries, 2, "the default when set nowhere");

    sources.env.clear();
    assert_eq!(load(&sources).unwrap().port, 1002);
    sources.dotenv = None;
    assert_eq!(load(&sources).unwrap().port, 1001);
    sources.file = None;
    assert_eq!(load(&sources).unwrap().port, 8000);
}

#[test]
fn prefixed_name_beats_bare_name_in_the_environment() {
    let s = load_env(&[("UNIPROXY_PORT", "2001"), ("PORT", "2002")]);
    assert_eq!(s.port, 2001);
    // Order in the list does not matter.
    let s = load_env(&[("PORT", "2002"), ("UNIPROXY_PORT", "2001")]);
    assert_eq!(s.port, 2001);
}

#[test]
fn a_kubernetes_service_link_is_not_a_port() {
    // A Service named uniproxy gives each pod of its namespace these, beside its own settings.
    let link = [
        ("UNIPROXY_PORT", "tcp://10.96.0.12:8000"),
        ("UNIPROXY_PORT_8000_TCP", "tcp://10.96.0.12:8000"),
        ("UNIPROXY_SERVICE_HOST", "10.96.0.12"),
    ];
    assert_eq!(load_env(&link).port, 8000, "the default");
    let mut with_port = link.to_vec();
    with_port.push(("PORT", "9000"));
    assert_eq!(load_env(&with_port).port, 9000);
}

#[test]
fn prefixed_name_beats_bare_name_in_dotenv() {
    let dir = tempfile::tempdir().unwrap();
    let dotenv = write(dir.path(), ".env", "UNIPROXY_PORT=3001\nPORT=3002\n");
    let s = load(&Sources { dotenv: Some(dotenv), ..Sources::default() }).unwrap();
    assert_eq!(s.port, 3001);
}

#[test]
fn a_bare_name_in_the_environment_beats_a_prefixed_name_in_dotenv() {
    let dir = tempfile::tempdir().unwrap();
    let dotenv = write(dir.path(), ".env", "UNIPROXY_PORT=3001\n");
    let sources = Sources {
        dotenv: Some(dotenv),
        env: vec![("PORT".into(), "3003".into())],
        ..Sources::default()
    };
    assert_eq!(load(&sources).unwrap().port, 3003);
}

#[test]
fn a_later_duplicate_wins() {
    assert_eq!(load_env(&[("PORT", "1"), ("PORT", "2")]).port, 2);
    let dir = tempfile::tempdir().unwrap();
    let dotenv = write(dir.path(), ".env", "PORT=1\nPORT=2\n");
    assert_eq!(load(&Sources { dotenv: Some(dotenv), ..Sources::default() }).unwrap().port, 2);
}

#[test]
fn empty_values_mean_not_set() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "u.toml",
        "type = \"openai\"\napi_key = \"sk-file\"\nactual_name = \"gpt-4o\"\nbase_url = \"https://example.com/v1\"\n",
    );
    let sources = Sources {
        file: Some(file),
        dotenv: None,
        env: vec![
            ("BASE_URL".into(), String::new()),
            ("UNIPROXY_ACTUAL_NAME".into(), "  ".into()),
            ("PORT".into(), String::new()),
        ],
    };
    let s = load(&sources).unwrap();
    assert_eq!(
        s.base_url.as_deref(),
        Some("https://example.com/v1"),
        "empty BASE_URL falls through"
    );
    assert_eq!(s.actual_name, "gpt-4o");
    assert_eq!(s.port, 8000);

    // An empty prefixed name falls through to the bare name in the same layer.
    assert_eq!(load_env(&[("UNIPROXY_PORT", ""), ("PORT", "4000")]).port, 4000);
    // An empty BASE_URL with a platform means the platform's default.
    let s =
        load_env(&[("TYPE", "openai"), ("API_KEY", "k"), ("ACTUAL_NAME", "m"), ("BASE_URL", "")]);
    assert_eq!(s.base_url.as_deref(), Some("https://api.openai.com/v1"));
}

#[test]
fn an_empty_api_key_is_a_value() {
    // The empty key from the environment overrides the file's key.
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "u.toml",
        "type = \"custom\"\napi_key = \"from-file\"\nactual_name = \"llama3\"\n",
    );
    let sources =
        Sources { file: Some(file), dotenv: None, env: vec![("API_KEY".into(), String::new())] };
    let s = load(&sources).unwrap();
    assert_eq!(s.platform, Platform::Custom);
    assert_eq!(s.api_key.expose(), "");
}

#[test]
fn the_toml_file_takes_typed_values_and_arrays() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "u.toml",
        r#"
type = "anthropic"
api_key = "0123"
actual_name = "claude-sonnet-4-5"
enabled = false
port = 9100
request_timeout = 1.5
max_body_size = "2MiB"
cors_allow_origins = ["https://a.example", "https://b.example:8443"]
proxy_api_keys = ["k1", "k2"]
log_raw_chunks = true
"#,
    );
    let s = load(&Sources { file: Some(file), ..Sources::default() }).unwrap();
    assert_eq!(s.platform, Platform::Anthropic);
    assert_eq!(s.api_key.expose(), "0123");
    assert!(!s.enabled);
    assert_eq!(s.port, 9100);
    assert_eq!(s.request_timeout, Duration::from_millis(1500));
    assert_eq!(s.max_body_size, 2 * 1024 * 1024);
    assert_eq!(s.cors_allow_origins, ["https://a.example", "https://b.example:8443"]);
    let keys: Vec<&str> = s.proxy_api_keys.iter().map(|k| k.expose()).collect();
    assert_eq!(keys, ["k1", "k2"]);
    assert!(s.log_raw_chunks);
}

#[test]
fn problems_name_the_layer_and_variable_used() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "u.toml", "port = \"filebad\"\n");
    let dotenv = write(dir.path(), ".env", "UNIPROXY_MAX_TOKENS=envbad\n");
    let sources = Sources {
        file: Some(file.clone()),
        dotenv: Some(dotenv.clone()),
        env: vec![("UNIPROXY_MAX_RETRIES".into(), "-1".into())],
    };
    let e = load(&sources).unwrap_err();
    let origin_of = |setting: &str| {
        e.problems().iter().find(|p| p.setting == setting).map(|p| p.origin.clone()).unwrap()
    };
    assert_eq!(origin_of("PORT"), Origin::File { path: file, key: "port".into() });
    assert_eq!(
        origin_of("MAX_TOKENS"),
        Origin::Dotenv { path: dotenv, var: "UNIPROXY_MAX_TOKENS".into() }
    );
    assert_eq!(
        origin_of("MAX_RETRIES"),
        Origin::Environment { var: "UNIPROXY_MAX_RETRIES".into() }
    );
    let text = e.to_string();
    assert!(text.contains("UNIPROXY_MAX_RETRIES"), "{text}");
    assert!(text.contains("key `port`"), "{text}");
}

#[test]
fn dotenv_is_read_without_changing_the_process_environment() {
    let dir = tempfile::tempdir().unwrap();
    let dotenv = write(dir.path(), ".env", "UNIPROXY_LOG_FILE_KEEP=9\n");
    let s = load(&Sources { dotenv: Some(dotenv), ..Sources::default() }).unwrap();
    assert_eq!(s.log_file_keep, 9);
    assert!(std::env::vars_os().all(|(k, _)| k != "UNIPROXY_LOG_FILE_KEEP"));
}

#[test]
fn from_process_takes_the_given_config_file() {
    let path = std::path::PathBuf::from("/nonexistent/uniproxy.toml");
    let sources = Sources::from_process(Some(path.clone()));
    assert_eq!(sources.file, Some(path));
    // Debug shows names only, never values.
    let debug = format!("{sources:?}");
    assert!(debug.contains("Sources"), "{debug}");
}

#[test]
fn proxy_variables_are_read_as_curl_names_them_in_either_case() {
    let s = load_env(&[
        ("https_proxy", "http://proxy.corp:3128"),
        ("HTTP_PROXY", "proxy.corp:8080"),
        ("ALL_PROXY", ""),
        ("no_proxy", "internal.corp, 10.0.0.0/8,.example.com"),
    ]);
    assert_eq!(s.https_proxy.as_ref().map(|p| p.expose()), Some("http://proxy.corp:3128"));
    assert_eq!(s.http_proxy.as_ref().map(|p| p.expose()), Some("proxy.corp:8080"));
    assert!(s.all_proxy.is_none(), "an empty value is unset, as for curl");
    assert_eq!(s.no_proxy, ["internal.corp", "10.0.0.0/8", ".example.com"]);
    let none = load_env(&[]);
    assert!(none.https_proxy.is_none() && none.http_proxy.is_none() && none.no_proxy.is_empty());
}

#[test]
fn a_lowercase_proxy_variable_wins_over_the_upper_case_one_as_for_curl_and_python() {
    // curl reads https_proxy before HTTPS_PROXY (and http_proxy only); Python's urllib, which
    // requests and httpx use, lets the lowercase name win: the same environment must send
    // uniproxy to the proxy it sends them to.
    let s = load_env(&[
        ("https_proxy", "http://lower.corp:3128"),
        ("HTTPS_PROXY", "http://upper.corp:3128"),
        ("HTTP_PROXY", "http://upper.corp:8080"),
        ("http_proxy", "http://lower.corp:8080"),
        ("ALL_PROXY", "http://upper.corp:1080"),
        ("all_proxy", "http://lower.corp:1080"),
        ("no_proxy", "lower.example"),
        ("NO_PROXY", "upper.example"),
    ]);
    assert_eq!(s.https_proxy.as_ref().map(|p| p.expose()), Some("http://lower.corp:3128"));
    assert_eq!(s.http_proxy.as_ref().map(|p| p.expose()), Some("http://lower.corp:8080"));
    assert_eq!(s.all_proxy.as_ref().map(|p| p.expose()), Some("http://lower.corp:1080"));
    assert_eq!(s.no_proxy, ["lower.example"]);
    // An empty lowercase one is unset, and the upper-case one applies (curl's rule).
    let s = load_env(&[("https_proxy", ""), ("HTTPS_PROXY", "http://upper.corp:3128")]);
    assert_eq!(s.https_proxy.as_ref().map(|p| p.expose()), Some("http://upper.corp:3128"));
    // The prefixed name still wins over both.
    let s = load_env(&[
        ("https_proxy", "http://lower.corp:3128"),
        ("UNIPROXY_HTTPS_PROXY", "http://mine.corp:3128"),
    ]);
    assert_eq!(s.https_proxy.as_ref().map(|p| p.expose()), Some("http://mine.corp:3128"));
    // Other settings keep the upper-case name first.
    let s = load_env(&[("PORT", "1"), ("port", "2")]);
    assert_eq!(s.port, 1);
}

#[test]
fn a_no_proxy_that_starts_with_a_bracketed_ipv6_address_is_comma_separated() {
    // A value curl takes (Go's tools write IPv6 entries so); it stopped the start as a JSON
    // array that does not parse.
    let s = load_env(&[("NO_PROXY", "[::1],localhost, .corp")]);
    assert_eq!(s.no_proxy, ["[::1]", "localhost", ".corp"]);
    let s = load_env(&[("NO_PROXY", r#"["a.example", "b.example"]"#)]);
    assert_eq!(s.no_proxy, ["a.example", "b.example"], "a JSON array is still one");
}
