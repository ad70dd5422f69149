//! The binary's command line. Being an integration test of this package, it also makes
//! `cargo test --workspace` build `target/<profile>/uniproxy` before any test runs, which the
//! end-to-end tests in `tests/` drive as a process.

use std::process::{Command, Stdio};

fn uniproxy(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_uniproxy"))
        .args(args)
        .env_clear()
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs")
}

/// Help and the version, asked for, are the output: on stdout, as `uniproxy logs --help` is
/// (they went to stderr, so `uniproxy --help | less` showed nothing and
/// `$(uniproxy --version)` was empty).
#[test]
fn version_and_help_exit_0_on_stdout() {
    for args in [&["--version"][..], &["-V"]] {
        let out = uniproxy(args);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text, format!("uniproxy {}\n", env!("CARGO_PKG_VERSION")), "{args:?}");
        assert!(out.stderr.is_empty(), "{args:?}");
    }
    for args in [&["--help"][..], &["-h"], &["logs", "--help"]] {
        let out = uniproxy(args);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("USAGE") && text.contains("--config"), "{args:?}: {text}");
        assert!(out.stderr.is_empty(), "{args:?}");
    }
    // Every option the parser takes is named, short forms included.
    let text = String::from_utf8_lossy(&uniproxy(&["--help"]).stdout).into_owned();
    for option in ["-c, --config PATH", "-h, --help", "-V, --version"] {
        assert!(text.contains(option), "{option}: {text}");
    }
}

#[test]
fn an_unknown_argument_exits_2_with_usage() {
    let out = uniproxy(&["--frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("--frobnicate") && text.contains("USAGE"), "{text}");
}

#[test]
fn a_missing_config_file_exits_2_naming_it() {
    let out = uniproxy(&["--config", "/nonexistent/uniproxy.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("/nonexistent/uniproxy.toml"), "{text}");
}

/// `uniproxy logs` with the environment of a cron job that prunes the log: the `.env` names
/// the platform, but the upstream key lives only in the service's own environment. Reading
/// and pruning the log needs no key, so a problem with an upstream setting does not stop it;
/// a problem with a setting of the log itself still does.
#[test]
fn logs_commands_need_only_the_log_settings() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("proxy.db");
    drop(
        uniproxy_logstore::LogStore::open(&db, uniproxy_logstore::StoreOptions::default()).unwrap(),
    );
    let logs = |env: &[(&str, &str)], args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_uniproxy"))
            .arg("logs")
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .env("DATABASE_URL", &db)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("the binary runs")
    };
    let no_key = [("TYPE", "openai"), ("ACTUAL_NAME", "gpt-4o"), ("PORT", "eighty")];
    for args in [&["list"][..], &["prune", "--older-than", "30", "--dry-run"], &["stats"]] {
        let out = logs(&no_key, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }

    let bad_log_setting = [("TYPE", "openai"), ("LOG_MAX_ROWS", "many")];
    let out = logs(&bad_log_setting, &["prune"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("LOG_MAX_ROWS"), "{stderr}");
    assert!(!stderr.contains("API_KEY"), "only the log's settings are checked: {stderr}");
}
