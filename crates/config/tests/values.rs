//! Parsing of individual values: DATABASE_URL forms, booleans, numbers,
//! sizes, durations, lists and keys.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::{load_env, load_env_err, write};
use uniproxy_config::{ProblemKind, Sources, load};

#[test]
fn database_url_forms() {
    let cases = [
        ("sqlite:///./data/proxy.db", "./data/proxy.db"),
        ("sqlite+aiosqlite:///./data/proxy.db", "./data/proxy.db"),
        ("sqlite:////abs/path.db", "/abs/path.db"),
        ("sqlite+aiosqlite:////var/lib/uniproxy/log.db", "/var/lib/uniproxy/log.db"),
        ("sqlite:///relative.db", "relative.db"),
        ("SQLite:///relative.db?check_same_thread=false", "relative.db"),
        ("./plain/path.db", "./plain/path.db"),
        ("/abs/plain.db", "/abs/plain.db"),
        ("plain.db", "plain.db"),
    ];
    for (url, path) in cases {
        assert_eq!(load_env(&[("DATABASE_URL", url)]).database_path, PathBuf::from(path), "{url}");
    }
}

#[test]
fn database_url_other_schemes_are_errors_naming_what_is_allowed() {
    for url in
        ["postgres://user:pw@localhost/db", "mysql://localhost/db", "sqlite://", "sqlite:///"]
    {
        let e = load_env_err(&[("DATABASE_URL", url)]);
        assert_eq!(e.problems().len(), 1, "{url}");
        let text = e.to_string();
        assert!(text.contains("DATABASE_URL"), "{text}");
        assert!(text.contains("sqlite:///"), "{text}");
        assert!(text.contains("plain file path"), "{text}");
    }
}

/// `sqlite:///./data/` names a directory: said so, instead of a start-up failing later with
/// "cannot inspect ./data/: Not a directory".
#[test]
fn database_url_naming_a_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let there = dir.path().to_str().unwrap().to_owned();
    for url in ["sqlite:///./data/", "./data/", &format!("sqlite:///{there}"), &there] {
        let e = load_env_err(&[("DATABASE_URL", url)]);
        let text = e.to_string();
        assert!(text.contains("DATABASE_URL") && text.contains("not a directory"), "{url}: {text}");
    }
}

/// `LOG_FILE_PATH=logs/` (or a directory that is there) means the default file in it.
#[test]
fn log_file_path_naming_a_directory_keeps_proxy_log_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("logs/", PathBuf::from("logs/proxy.log")),
        ("./var/log/uniproxy/", PathBuf::from("./var/log/uniproxy/proxy.log")),
        (dir.path().to_str().unwrap(), dir.path().join("proxy.log")),
        ("./logs/requests.jsonl", PathBuf::from("./logs/requests.jsonl")),
        ("requests", PathBuf::from("requests")),
    ];
    for (value, path) in cases {
        assert_eq!(load_env(&[("LOG_FILE_PATH", value)]).log_file_path, path, "{value}");
    }
}

#[test]
fn booleans_in_every_spelling() {
    let truthy = ["true", "TRUE", "True", "1", "yes", "YES", "on", "On", "t", "y", " true "];
    let falsy = ["false", "FALSE", "False", "0", "no", "No", "off", "OFF", "f", "n"];
    for v in truthy {
        let s = load_env(&[("ENABLED", v), ("LOG_RAW_CHUNKS", v), ("UI_ENABLED", v)]);
        assert!(s.enabled && s.log_raw_chunks && s.ui_enabled, "{v:?}");
    }
    for v in falsy {
        let s = load_env(&[
            ("ENABLED", v),
            ("SUPPORTS_STREAMING", v),
            ("SUPPORTS_FUNCTION_CALLING", v),
            ("LOG_BODIES", v),
            ("UI_ENABLED", v),
        ]);
        assert!(!s.enabled, "{v:?}");
        assert!(!s.supports_streaming && !s.supports_function_calling, "{v:?}");
        assert!(!s.log_bodies && !s.ui_enabled, "{v:?}");
    }
    for v in ["maybe", "2", "enabled", "tru"] {
        let e = load_env_err(&[("ENABLED", v)]);
        assert!(e.to_string().contains("true/false"), "{e}");
    }
}

#[test]
fn api_key_keeps_leading_zeros() {
    let s = load_env(&[("TYPE", "openai"), ("API_KEY", "0123"), ("ACTUAL_NAME", "gpt-4o")]);
    assert_eq!(s.api_key.expose(), "0123");
    let s = load_env(&[("ADMIN_KEY", "007"), ("PROXY_API_KEYS", "0001,0002")]);
    assert_eq!(s.admin_key.as_ref().map(|k| k.expose()), Some("007"));
    assert_eq!(s.proxy_api_keys[0].expose(), "0001");
}

#[test]
fn values_stay_strings_until_typed() {
    // ACTUAL_NAME that looks like a number is kept as written.
    let s = load_env(&[
        ("TYPE", "custom"),
        ("ACTUAL_NAME", "007"),
        ("API_VERSION", "2025-04-01-preview"),
    ]);
    assert_eq!(s.actual_name, "007");
    assert_eq!(s.api_version, "2025-04-01-preview");
}

#[test]
fn proxy_api_keys_from_a_list() {
    let s = load_env(&[("PROXY_API_KEYS", " key-a, key-b ,,key-c ")]);
    let keys: Vec<&str> = s.proxy_api_keys.iter().map(|k| k.expose()).collect();
    assert_eq!(keys, ["key-a", "key-b", "key-c"]);
}

#[test]
fn proxy_api_keys_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "keys.txt", "# team A\nkey-a\n\n  key-b  \n# old: key-z\nkey-c\n");
    let value = format!("@{}", path.display());
    let s = load_env(&[("PROXY_API_KEYS", &value)]);
    let keys: Vec<&str> = s.proxy_api_keys.iter().map(|k| k.expose()).collect();
    assert_eq!(keys, ["key-a", "key-b", "key-c"]);
}

#[test]
fn proxy_api_keys_that_yield_no_key_are_an_error() {
    // Silently turning client authentication off would be worse than failing.
    let dir = tempfile::tempdir().unwrap();
    let empty = write(dir.path(), "keys.txt", "# nothing yet\n\n");
    let e = load_env_err(&[("PROXY_API_KEYS", &format!("@{}", empty.display()))]);
    assert!(e.to_string().contains("at least one key"), "{e}");

    let missing = dir.path().join("missing.txt");
    let e = load_env_err(&[("PROXY_API_KEYS", &format!("@{}", missing.display()))]);
    assert!(e.to_string().contains("missing.txt"), "the path is shown: {e}");

    let e = load_env_err(&[("PROXY_API_KEYS", ", ,")]);
    assert_eq!(e.problems().len(), 1);
}

#[test]
fn cors_origins() {
    assert!(load_env(&[("CORS_ALLOW_ORIGINS", "")]).cors_allow_origins.is_empty());
    assert_eq!(load_env(&[("CORS_ALLOW_ORIGINS", "*")]).cors_allow_origins, ["*"]);
    let s = load_env(&[("CORS_ALLOW_ORIGINS", "https://app.example.com/, http://localhost:3000")]);
    assert_eq!(s.cors_allow_origins, ["https://app.example.com", "http://localhost:3000"]);
    let e = load_env_err(&[(
        "CORS_ALLOW_ORIGINS",
        "https://ok.example, app.example.com, https://x.example/path",
    )]);
    assert_eq!(e.problems().len(), 2, "{e}");
}

#[test]
fn allowed_hosts_are_names_in_lower_case_or_a_star() {
    assert!(load_env(&[]).allowed_hosts.is_empty());
    assert_eq!(load_env(&[("ALLOWED_HOSTS", "*")]).allowed_hosts, ["*"]);
    let s = load_env(&[("ALLOWED_HOSTS", "API.example.com, proxy.internal")]);
    assert_eq!(s.allowed_hosts, ["api.example.com", "proxy.internal"]);
    let e = load_env_err(&[("ALLOWED_HOSTS", "ok.example, bad.example:8000, http://x.example")]);
    assert_eq!(e.problems().len(), 2, "{e}");
}

#[test]
fn timeouts_accept_seconds_and_units() {
    let s = load_env(&[
        ("CONNECT_TIMEOUT", "2.5"),
        ("REQUEST_TIMEOUT", "5m"),
        ("FIRST_BYTE_TIMEOUT", "500ms"),
        ("STREAM_IDLE_TIMEOUT", "30s"),
        ("CLIENT_TIMEOUT", "15"),
    ]);
    assert_eq!(s.connect_timeout, Duration::from_millis(2500));
    assert_eq!(s.request_timeout, Duration::from_secs(300));
    assert_eq!(s.first_byte_timeout, Duration::from_millis(500));
    assert_eq!(s.stream_idle_timeout, Duration::from_secs(30));
    assert_eq!(s.client_timeout, Duration::from_secs(15));
    for bad in ["0", "-1", "ten", "1.", ".5", "5 weeks", "1e3"] {
        let e = load_env_err(&[("CONNECT_TIMEOUT", bad)]);
        assert_eq!(e.problems().len(), 1, "{bad}");
    }
    // A hundred years is as good as never; a timeout past what the clock can add to now
    // (10^19 seconds) was a panic on every request.
    let s = load_env(&[("REQUEST_TIMEOUT", "876000h"), ("STREAM_IDLE_TIMEOUT", "3153600000")]);
    assert_eq!(s.request_timeout, Duration::from_secs(3_153_600_000));
    assert_eq!(s.stream_idle_timeout, Duration::from_secs(3_153_600_000));
    for bad in ["10000000000000000000", "876001h", "3153600000.5"] {
        let e = load_env_err(&[("REQUEST_TIMEOUT", bad)]);
        assert_eq!(e.problems().len(), 1, "{bad}");
        assert!(e.to_string().contains("up to a hundred years"), "{e}");
    }
}

#[test]
fn sizes_accept_plain_integers_and_units() {
    let cases = [
        ("10485760", 10_485_760),
        ("10MiB", 10 * 1024 * 1024),
        ("512KB", 512_000),
        ("512 kib", 512 * 1024),
        ("1GB", 1_000_000_000),
        ("64b", 64),
    ];
    for (text, bytes) in cases {
        let s = load_env(&[("MAX_BODY_SIZE", text), ("LOG_FILE_MAX_BYTES", text)]);
        assert_eq!(s.max_body_size as u64, bytes, "{text}");
        assert_eq!(s.log_file_max_bytes, bytes, "{text}");
    }
    for bad in ["0", "10 MB!", "lots", "-5", "99999999999999999999"] {
        assert_eq!(load_env_err(&[("MAX_BODY_SIZE", bad)]).problems().len(), 1, "{bad}");
    }
}

#[test]
fn integers() {
    let s = load_env(&[
        ("MAX_TOKENS", "8192"),
        ("MAX_RETRIES", "0"),
        ("CONCURRENCY_LIMIT", "64"),
        ("LOG_RETENTION_DAYS", "30"),
        ("LOG_MAX_ROWS", "1000000"),
        ("LOG_FILE_KEEP", "0"),
        ("PORT", "65535"),
    ]);
    assert_eq!(s.max_tokens, 8192);
    assert_eq!(s.max_retries, 0);
    assert_eq!(s.concurrency_limit, 64);
    assert_eq!(s.log_retention_days, 30);
    assert_eq!(s.log_max_rows, 1_000_000);
    assert_eq!(s.log_file_keep, 0);
    assert_eq!(s.port, 65535);

    let e = load_env_err(&[("PORT", "65536"), ("MAX_TOKENS", "0"), ("MAX_RETRIES", "1.5")]);
    assert_eq!(e.problems().len(), 3, "{e}");
    assert!(e.to_string().contains("an integer from 0 to 65535"), "{e}");
    assert!(e.to_string().contains("an integer from 1 to"), "{e}");

    // As pydantic read them in the old service's `.env` (checked against pydantic 2.13).
    for (text, n) in [("4_096", 4096), ("4096.0", 4096), ("+4096", 4096), ("1_0.00", 10)] {
        assert_eq!(load_env(&[("MAX_TOKENS", text), ("PORT", text)]).max_tokens, n, "{text}");
    }
    for bad in ["4096.", "_4096", "4__096", "4096_", ".0", "4096.5", "4096.0_0", "1e3", "0x10"] {
        assert_eq!(load_env_err(&[("MAX_TOKENS", bad)]).problems().len(), 1, "{bad}");
    }
}

#[test]
fn host_must_be_an_ip_or_host_name() {
    for ok in ["0.0.0.0", "127.0.0.1", "::", "::1", "localhost", "proxy.internal", "my-host"] {
        assert_eq!(load_env(&[("HOST", ok)]).host, ok);
    }
    for bad in ["http://localhost", "local host", "-bad", "a..b", "host:8000"] {
        let e = load_env_err(&[("HOST", bad)]);
        assert!(matches!(e.problems()[0].kind, ProblemKind::Invalid { .. }), "{bad}");
    }
}

#[test]
fn admin_key_is_optional() {
    assert_eq!(load_env(&[]).admin_key, None);
    assert_eq!(load_env(&[("ADMIN_KEY", "")]).admin_key, None);
    let s = load_env(&[("UNIPROXY_ADMIN_KEY", "adm")]);
    assert!(s.admin_key.unwrap().matches("adm"));
}

#[test]
fn non_utf8_environment_values_are_reported() {
    // `Sources::from_process` replaces invalid bytes with U+FFFD.
    let e = load_env_err(&[("TYPE", "openai"), ("API_KEY", "sk-\u{fffd}x"), ("ACTUAL_NAME", "m")]);
    let text = e.to_string();
    assert!(text.contains("valid UTF-8"), "{text}");
    assert!(!text.contains("sk-"), "{text}");
}

#[test]
fn a_string_port_in_toml_is_parsed_like_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "u.toml", "port = \"8080\"\nenabled = \"yes\"\n");
    let s = load(&Sources { file: Some(file), ..Sources::default() }).unwrap();
    assert_eq!(s.port, 8080);
    assert!(s.enabled);
}

/// A byte-order mark, as Windows editors may save, is not part of
/// the first key.
#[test]
fn proxy_api_keys_from_a_file_with_a_byte_order_mark() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "keys.txt", "\u{feff}key-a\r\nkey-b\r\n");
    let s = load_env(&[("PROXY_API_KEYS", &format!("@{}", path.display()))]);
    let keys: Vec<&str> = s.proxy_api_keys.iter().map(|k| k.expose()).collect();
    assert_eq!(keys, ["key-a", "key-b"]);
}

/// List settings also take a JSON array of strings, the form
/// pydantic-settings read for list settings.
#[test]
fn list_settings_accept_a_json_array() {
    let s = load_env(&[("CORS_ALLOW_ORIGINS", r#"["https://a.example","https://b.example/"]"#)]);
    assert_eq!(s.cors_allow_origins, ["https://a.example", "https://b.example"]);
    let s = load_env(&[("PROXY_API_KEYS", r#" ["key-a", "key,b"] "#)]);
    let keys: Vec<&str> = s.proxy_api_keys.iter().map(|k| k.expose()).collect();
    assert_eq!(keys, ["key-a", "key,b"]);
    // An explicitly empty array is no list, as `[]` in the TOML file is.
    assert!(load_env(&[("PROXY_API_KEYS", "[]")]).proxy_api_keys.is_empty());
    assert!(load_env(&[("CORS_ALLOW_ORIGINS", "[]")]).cors_allow_origins.is_empty());

    // Items are still checked, and what is not a JSON array of strings is a problem.
    let e = load_env_err(&[("CORS_ALLOW_ORIGINS", r#"["https://ok.example","app.example"]"#)]);
    assert_eq!(e.problems().len(), 1, "{e}");
    for bad in [r#"["https://a.example","#, r#"["https://a.example", 3]"#] {
        let e = load_env_err(&[("CORS_ALLOW_ORIGINS", bad)]);
        assert!(e.to_string().contains("a JSON array of strings"), "{e}");
    }
    let e = load_env_err(&[("PROXY_API_KEYS", r#"["sk-secret-1", "#)]);
    assert!(!e.to_string().contains("sk-secret-1"), "{e}");
}

/// The log must survive a restart and `uniproxy logs` reads its
/// file, so an in-memory database is refused when the settings load.
#[test]
fn an_in_memory_database_is_refused() {
    for url in [":memory:", "sqlite:///:memory:", "sqlite+aiosqlite:///:memory:", "file::memory:"] {
        let e = load_env_err(&[("DATABASE_URL", url)]);
        assert_eq!(e.problems().len(), 1, "{url}");
        assert_eq!(e.problems()[0].setting, "DATABASE_URL");
        assert!(e.to_string().contains("not an in-memory database"), "{e}");
    }
    // A file whose name merely mentions memory is a file.
    assert_eq!(
        load_env(&[("DATABASE_URL", "memory.db")]).database_path,
        PathBuf::from("memory.db")
    );
}
