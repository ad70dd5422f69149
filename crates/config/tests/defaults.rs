//! With nothing configured, every setting takes its documented default.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::load_env;
use uniproxy_config::{Platform, Settings, Sources, load};

#[test]
fn nothing_configured_is_the_mock_with_every_default() {
    let s = load(&Sources::default()).unwrap();
    assert_eq!(s, Settings::mock_defaults());
    assert!(s.type_was_defaulted());
    assert_eq!(s.platform, Platform::Mock);
    assert_eq!(s.api_key.expose(), "");
    assert_eq!(s.base_url, None);
    assert_eq!(s.actual_name, "uniproxy-mock");
    assert!(s.enabled);
    assert_eq!(s.max_tokens, 4096);
    assert!(s.supports_streaming);
    assert!(s.supports_function_calling);
    assert_eq!(s.host, "0.0.0.0");
    assert_eq!(s.port, 8000);
    assert_eq!(s.database_path, PathBuf::from("./data/proxy.db"));
    assert_eq!(s.log_file_path, PathBuf::from("./logs/proxy.log"));
    assert_eq!(s.api_version, "2024-10-21");
    assert_eq!(s.connect_timeout, Duration::from_secs(10));
    assert_eq!(s.request_timeout, Duration::from_secs(600));
    assert_eq!(s.first_byte_timeout, Duration::from_secs(600));
    assert_eq!(s.stream_idle_timeout, Duration::from_secs(300));
    assert_eq!(s.client_timeout, Duration::from_secs(60));
    assert_eq!(s.max_body_size, 10_485_760);
    assert!(s.cors_allow_origins.is_empty());
    assert!(s.proxy_api_keys.is_empty());
    assert_eq!(s.max_retries, 2);
    assert_eq!(s.concurrency_limit, 0);
    assert_eq!(s.log_retention_days, 0);
    assert_eq!(s.log_max_rows, 0);
    assert!(!s.log_raw_chunks);
    assert!(s.log_bodies);
    assert_eq!(s.log_file_max_bytes, 104_857_600);
    assert_eq!(s.log_file_keep, 5);
    assert!(s.ui_enabled);
    assert_eq!(s.admin_key, None);
    assert_eq!(s.listen_addr(), "0.0.0.0:8000");
}

#[test]
fn an_explicit_type_is_not_reported_as_defaulted() {
    let s = load_env(&[("TYPE", "mock")]);
    assert_eq!(s.platform, Platform::Mock);
    assert!(!s.type_was_defaulted());
}

#[test]
fn first_byte_timeout_follows_request_timeout_unless_set() {
    let s = load_env(&[("REQUEST_TIMEOUT", "120")]);
    assert_eq!(s.request_timeout, Duration::from_secs(120));
    assert_eq!(s.first_byte_timeout, Duration::from_secs(120));

    let s = load_env(&[("REQUEST_TIMEOUT", "120"), ("FIRST_BYTE_TIMEOUT", "30")]);
    assert_eq!(s.first_byte_timeout, Duration::from_secs(30));
}

#[test]
fn unrelated_environment_variables_are_ignored() {
    let s = load_env(&[("PATH", "/usr/bin"), ("UNIPROXY_NOT_A_SETTING", "x"), ("HOME", "/root")]);
    assert_eq!(s, Settings::mock_defaults());
}

#[test]
fn port_zero_is_allowed() {
    assert_eq!(load_env(&[("PORT", "0")]).port, 0);
}

#[test]
fn listen_addr_brackets_ipv6() {
    assert_eq!(load_env(&[("HOST", "::1"), ("PORT", "0")]).listen_addr(), "[::1]:0");
    let s = load_env(&[("HOST", "[::]")]);
    assert_eq!(s.host, "::");
    assert_eq!(s.listen_addr(), "[::]:8000");
    assert_eq!(load_env(&[("HOST", "localhost")]).listen_addr(), "localhost:8000");
    assert_eq!(load_env(&[("HOST", "127.0.0.1")]).listen_addr(), "127.0.0.1:8000");
}
