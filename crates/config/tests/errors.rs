//! Errors: every problem at once, with origins, and secrets never shown.

mod support;

use std::error::Error as _;

use support::{load_env, load_env_err, write};
use uniproxy_config::{ConfigError, Origin, ProblemKind, Secret, Sources, load};

#[test]
fn every_problem_is_reported_at_once() {
    let e = load_env_err(&[("TYPE", "bogus"), ("PORT", "notaport"), ("ENABLED", "maybe")]);
    let problems = e.problems();
    let names: Vec<&str> = problems.iter().map(|p| p.setting.as_str()).collect();
    assert_eq!(names, ["TYPE", "ENABLED", "PORT"]);
    for p in problems {
        assert!(matches!(p.origin, Origin::Environment { .. }), "{p}");
        assert!(matches!(p.kind, ProblemKind::Invalid { .. }), "{p}");
    }
    let text = e.to_string();
    assert_eq!(text.lines().count(), 4, "a header and one line per problem:\n{text}");
    assert!(text.starts_with("invalid configuration (3 problems)"), "{text}");
    for needle in [
        "TYPE",
        "\"bogus\"",
        "openai",
        "PORT",
        "\"notaport\"",
        "0 to 65535",
        "ENABLED",
        "\"maybe\"",
        "environment",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn secrets_are_masked_in_errors() {
    let e = load_env_err(&[
        ("TYPE", "openai"),
        ("API_KEY", "sk-supersecret-abcd"),
        ("ACTUAL_NAME", "m"),
        ("PROXY_API_KEYS", "pk-hidden\u{fffd}"),
        ("ADMIN_KEY", "adm-hidden\u{fffd}"),
        ("PORT", "x"),
    ]);
    let text = e.to_string();
    let debug = format!("{e:?}");
    for secret in ["supersecret", "abcd", "pk-hidden", "adm-hidden"] {
        assert!(!text.contains(secret), "{secret} leaked in:\n{text}");
        assert!(!debug.contains(secret), "{secret} leaked in:\n{debug}");
    }
    assert!(text.contains("**** (11 chars)"), "{text}");

    // An empty API_KEY shows its length too.
    let e = load_env_err(&[("TYPE", "openai"), ("API_KEY", ""), ("ACTUAL_NAME", "m")]);
    assert!(e.to_string().contains("**** (0 chars)"), "{e}");
}

#[test]
fn secret_lists_in_toml_are_masked() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "u.toml", "api_key = [\"sk-in-array\"]\n");
    let e = load(&Sources { file: Some(file), ..Sources::default() }).unwrap_err();
    let text = e.to_string();
    assert!(!text.contains("sk-in-array"), "{text}");
    assert!(text.contains("not an array"), "{text}");
}

/// A URL in an error shows neither its password nor its query.
#[test]
fn urls_in_errors_hide_passwords_and_queries() {
    let e = load_env_err(&[("DATABASE_URL", "postgresql://u:pw-secret@h/db")]);
    let text = e.to_string();
    assert!(!text.contains("pw-secret"), "{text}");
    assert!(text.contains("\"postgresql://u:****@h/db\""), "{text}");

    let e = load_env_err(&[
        ("TYPE", "google"),
        ("API_KEY", "k"),
        ("ACTUAL_NAME", "gemini-2.5-flash"),
        ("BASE_URL", "https://generativelanguage.googleapis.com/v1beta?key=AIzaSECRET1"),
    ]);
    let text = e.to_string();
    assert!(!text.contains("AIzaSECRET1"), "{text}");
    assert!(text.contains("\"https://generativelanguage.googleapis.com/v1beta?****\""), "{text}");
    assert!(text.contains("no query"), "{text}");

    // A userinfo without a password is often a token; a fragment may hold one too.
    let e = load_env_err(&[(
        "CORS_ALLOW_ORIGINS",
        "https://tok3n@a.example, https://b.example/#t0ken",
    )]);
    let text = e.to_string();
    assert!(!text.contains("tok3n") && !text.contains("t0ken"), "{text}");
    assert!(
        text.contains("https://****@a.example") && text.contains("https://b.example/#****"),
        "{text}"
    );
}

#[test]
fn debug_of_settings_never_shows_a_key() {
    let s = load_env(&[
        ("TYPE", "anthropic"),
        ("API_KEY", "sk-ant-verysecret"),
        ("ACTUAL_NAME", "claude-sonnet-4-5"),
        ("PROXY_API_KEYS", "client-key-1,client-key-2"),
        ("ADMIN_KEY", "admin-key-xyz"),
        ("https_proxy", "http://alice:proxy-pass-1@proxy.corp:3128"),
    ]);
    let debug = format!("{s:?}");
    for secret in
        ["sk-ant-verysecret", "client-key-1", "client-key-2", "admin-key-xyz", "proxy-pass-1"]
    {
        assert!(!debug.contains(secret), "{secret} leaked in {debug}");
    }
    assert!(debug.contains("[redacted]"));
    assert!(debug.contains("claude-sonnet-4-5"));
}

#[test]
fn secret_behaviour() {
    let s = Secret::new("abc");
    assert_eq!(format!("{s}"), "[redacted]");
    assert_eq!(format!("{s:?}"), "[redacted]");
    assert_eq!(s.expose(), "abc");
    assert!(s.matches("abc"));
    assert!(!s.matches("abd"));
    assert!(!s.matches("ab"));
    assert!(!s.is_empty());
    assert!(Secret::default().is_empty());
}

#[test]
fn unknown_and_misspelled_toml_keys_are_problems() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "u.toml",
        "PORT = 1\nprot = 2\nuniproxy_host = \"x\"\n[server]\nport = 3\n",
    );
    let e = load(&Sources { file: Some(file), ..Sources::default() }).unwrap_err();
    let text = e.to_string();
    assert_eq!(e.problems().len(), 4, "{text}");
    assert!(text.contains("keys are lowercase: use `port`"), "{text}");
    assert!(text.contains("unknown key `prot`"), "{text}");
    assert!(text.contains("use `host`"), "{text}");
    assert!(text.contains("unknown key `server`"), "{text}");
}

/// The binary prints a configuration error with `{e}`, so the reason is in
/// the message itself, and not repeated as `source()`.
#[test]
fn a_missing_config_file_names_the_os_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let reason = std::fs::read(&path).unwrap_err().to_string();
    let e = load(&Sources { file: Some(path.clone()), ..Sources::default() }).unwrap_err();
    assert!(matches!(&e, ConfigError::ReadFile { path: p, .. } if *p == path), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("nope.toml") && text.ends_with(&format!(": {reason}")), "{text}");
    assert!(e.source().is_none(), "the reason is not repeated by the chain");

    let e = load(&Sources { dotenv: Some(path), ..Sources::default() }).unwrap_err();
    assert!(matches!(e, ConfigError::ReadDotenv { .. }), "{e:?}");
    assert!(e.to_string().ends_with(&format!(": {reason}")), "{e}");
}

#[test]
fn a_toml_syntax_error_shows_where_and_why_but_not_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "u.toml", "port = 1\napi_key = sk-unquoted-secret\n");
    let e = load(&Sources { file: Some(file), ..Sources::default() }).unwrap_err();
    assert!(matches!(e, ConfigError::ParseFile { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.starts_with("cannot parse config file "), "{text}");
    assert!(text.contains("u.toml: TOML parse error at line 2, column 11"), "{text}");
    assert!(text.contains("string"), "the parser's explanation: {text}");
    assert!(!text.contains("sk-unquoted-secret"), "{text}");
    assert!(!format!("{e:?}").contains("sk-unquoted-secret"));
    assert!(e.source().is_none(), "the cause is not repeated by the chain");
}

#[test]
fn a_dotenv_syntax_error_does_not_quote_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let dotenv = write(dir.path(), ".env", "# comment\nPORT=1\nAPI_KEY='sk-unterminated\n");
    let e = load(&Sources { dotenv: Some(dotenv), ..Sources::default() }).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ConfigError::DotenvSyntax { .. }), "{e:?}");
    assert!(!text.contains("sk-unterminated"), "{text}");
    assert!(!format!("{e:?}").contains("sk-unterminated"));
    assert!(text.contains("API_KEY"), "{text}");
}
