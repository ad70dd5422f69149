//! Shared helpers for the integration tests: building `Sources` and files.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use uniproxy_config::{ConfigError, Settings, Sources, load};

/// Sources with only the given environment variables.
pub fn env(pairs: &[(&str, &str)]) -> Sources {
    Sources {
        env: pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        ..Sources::default()
    }
}

/// Loads settings from the given environment variables; panics on error.
pub fn load_env(pairs: &[(&str, &str)]) -> Settings {
    match load(&env(pairs)) {
        Ok(settings) => settings,
        Err(e) => panic!("{e}"),
    }
}

/// Loads from the given environment variables and returns the error.
pub fn load_env_err(pairs: &[(&str, &str)]) -> ConfigError {
    match load(&env(pairs)) {
        Ok(settings) => panic!("expected an error, got {settings:?}"),
        Err(e) => e,
    }
}

/// Writes `content` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// Loads from a `.env` with the given text and the given environment.
pub fn load_dotenv(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let dotenv = write(dir.path(), ".env", text);
    load(&Sources { dotenv: Some(dotenv), ..self::env(env) })
}
