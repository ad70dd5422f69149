//! `config/uniproxy.toml` and `.env.example` document every setting, and
//! what they document loads.

mod support;

use std::path::PathBuf;

use support::write;
use uniproxy_config::{Platform, SETTINGS, Settings, Sources, load};

fn repo_file(name: &str) -> (PathBuf, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(name);
    let text = std::fs::read_to_string(&path).expect("the file is part of the repository");
    (path, text)
}

/// `# key = value` lines with the `# ` removed.
fn uncomment(text: &str, is_setting: impl Fn(&str) -> bool) -> String {
    text.lines()
        .filter_map(|line| line.strip_prefix("# "))
        .filter(|line| line.split_once('=').is_some_and(|(k, _)| is_setting(k.trim())))
        .map(|line| format!("{line}\n"))
        .collect()
}

#[test]
fn the_toml_file_loads_as_shipped_and_fully_uncommented() {
    let (path, text) = repo_file("config/uniproxy.toml");
    let s = load(&Sources { file: Some(path), ..Sources::default() }).unwrap();
    assert_eq!(s, Settings::mock_defaults());

    // The crate's own list: a setting added there must be documented here too.
    assert!(SETTINGS.len() >= 30, "the settings list shrank: {SETTINGS:?}");
    let is_key = |k: &str| SETTINGS.iter().any(|s| s.to_ascii_lowercase() == k);
    let all = uncomment(&text, is_key);
    for name in SETTINGS {
        let key = name.to_ascii_lowercase();
        let count = all.lines().filter(|l| l.starts_with(&format!("{key} "))).count();
        assert_eq!(count, 1, "`{key}` should be documented exactly once");
    }
    // Everything but `type`, which would make `type_was_defaulted()` false,
    // loads to the defaults; `admin_key` has no default, so its example is set.
    let dir = tempfile::tempdir().unwrap();
    let without_type: String =
        all.lines().filter(|l| !l.starts_with("type ")).map(|l| format!("{l}\n")).collect();
    let file = write(dir.path(), "all.toml", &without_type);
    let s = load(&Sources { file: Some(file), ..Sources::default() }).unwrap();
    let mut expected = Settings::mock_defaults();
    expected.admin_key = Some("change-me".into());
    expected.https_proxy = Some("http://proxy.example.com:3128".into());
    assert_eq!(s, expected);

    let file = write(dir.path(), "all.toml", &all);
    let s = load(&Sources { file: Some(file), ..Sources::default() }).unwrap();
    assert_eq!(s.platform, Platform::Mock);
    assert!(!s.type_was_defaulted());
}

#[test]
fn the_env_example_documents_every_setting_and_each_block_loads() {
    let (path, text) = repo_file(".env.example");
    let s = load(&Sources { dotenv: Some(path), ..Sources::default() }).unwrap();
    assert_eq!(s, Settings::mock_defaults(), "a fresh copy changes nothing");

    let is_name = |k: &str| SETTINGS.contains(&k);
    for name in SETTINGS {
        assert!(text.contains(&format!("# {name}=")), "{name} is not documented");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut platforms = Vec::new();
    for (i, block) in text.split("\n\n").enumerate() {
        let body = uncomment(block, is_name);
        if body.is_empty() {
            continue;
        }
        let dotenv = write(dir.path(), &format!("block{i}.env"), &body);
        match load(&Sources { dotenv: Some(dotenv), ..Sources::default() }) {
            Ok(s) => platforms.push(s.platform),
            Err(e) => panic!("block {i} does not load:\n{body}\n{e}"),
        }
    }
    for p in Platform::ALL {
        assert!(platforms.contains(&p), "no example block for {p}");
    }
}
