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

#[test]
fn version_and_help_exit_0() {
    let out = uniproxy(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");

    let out = uniproxy(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
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
