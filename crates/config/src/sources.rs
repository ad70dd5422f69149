//! Where settings come from, and reading each layer into raw strings.
//!
//! Values stay strings (or lists of strings, for TOML arrays) until
//! `settings.rs` parses them, so every error can say where a value came from.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use config::{FileFormat, Source, ValueKind};

use crate::error::{ConfigError, Origin, Problem, ProblemKind};

/// Every setting, by its environment name. In the TOML file the key is the
/// lowercase name; in the environment and `.env` the name may also carry
/// the `UNIPROXY_` prefix, which wins over the bare name.
pub const SETTINGS: &[&str] = &[
    "TYPE",
    "API_KEY",
    "BASE_URL",
    "ACTUAL_NAME",
    "ENABLED",
    "MAX_TOKENS",
    "SUPPORTS_STREAMING",
    "SUPPORTS_FUNCTION_CALLING",
    "HOST",
    "PORT",
    "DATABASE_URL",
    "LOG_FILE_PATH",
    "API_VERSION",
    "CONNECT_TIMEOUT",
    "REQUEST_TIMEOUT",
    "FIRST_BYTE_TIMEOUT",
    "STREAM_IDLE_TIMEOUT",
    "MAX_BODY_SIZE",
    "CORS_ALLOW_ORIGINS",
    "PROXY_API_KEYS",
    "MAX_RETRIES",
    "CONCURRENCY_LIMIT",
    "LOG_RETENTION_DAYS",
    "LOG_MAX_ROWS",
    "LOG_RAW_CHUNKS",
    "LOG_BODIES",
    "LOG_FILE_MAX_BYTES",
    "LOG_FILE_KEEP",
    "UI_ENABLED",
    "ADMIN_KEY",
];

/// Settings whose values are never shown in errors.
pub(crate) const SECRETS: &[&str] = &["API_KEY", "PROXY_API_KEYS", "ADMIN_KEY"];

/// The prefix that namespaces every setting in the environment.
const PREFIX: &str = "UNIPROXY_";

/// The environment variable that names the TOML file in [`Sources::from_process`].
const CONFIG_VAR: &str = "UNIPROXY_CONFIG";

/// The setting name an environment variable sets, if it is one of ours.
fn setting_of(var: &str) -> Option<&'static str> {
    let bare = var.strip_prefix(PREFIX).unwrap_or(var);
    SETTINGS.iter().copied().find(|name| *name == bare)
}

/// The inputs of [`load`](crate::load): an optional TOML file, an optional
/// `.env` file and a snapshot of the environment.
///
/// Nothing is read from the process by `load` itself, so tests build a
/// `Sources` by hand and never touch the real environment:
///
/// ```
/// let sources = uniproxy_config::Sources {
///     env: vec![("PORT".into(), "0".into())],
///     ..Default::default()
/// };
/// assert_eq!(uniproxy_config::load(&sources)?.port, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct Sources {
    /// The TOML file (lowercase keys, flat). It must exist when given.
    pub file: Option<PathBuf>,
    /// The `.env` file. It must exist when given. It is only read: the
    /// process environment is never changed.
    pub dotenv: Option<PathBuf>,
    /// Environment variables as `(name, value)`; a later entry wins over an
    /// earlier one of the same name. Names that are not settings are ignored.
    pub env: Vec<(String, String)>,
}

impl Sources {
    /// Takes the sources from the running process: the environment variables
    /// that are settings (with or without the `UNIPROXY_` prefix), the TOML
    /// file `config_file` or else the one named by `UNIPROXY_CONFIG`, and
    /// `./.env` if that file exists.
    ///
    /// A setting whose value is not valid UTF-8 is kept with its invalid bytes
    /// replaced by U+FFFD, and [`load`](crate::load) then reports it as a problem
    /// instead of silently using a damaged key. Variables with non-UTF-8
    /// names cannot be settings and are skipped.
    #[must_use]
    pub fn from_process(config_file: Option<PathBuf>) -> Self {
        let mut env = Vec::new();
        let mut config_from_env = None;
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            if name == CONFIG_VAR {
                if !value.is_empty() {
                    config_from_env = Some(PathBuf::from(value));
                }
            } else if setting_of(name).is_some() {
                env.push((name.to_owned(), value.to_string_lossy().into_owned()));
            }
        }
        let dotenv = Path::new(".env").is_file().then(|| PathBuf::from(".env"));
        Sources { file: config_file.or(config_from_env), dotenv, env }
    }
}

impl fmt::Debug for Sources {
    /// Shows the variable names but not their values, which may be keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Sources")
            .field("file", &self.file)
            .field("dotenv", &self.dotenv)
            .field("env", &names)
            .finish()
    }
}

/// A value before typed parsing.
#[derive(Debug, Clone)]
pub(crate) enum RawValue {
    /// A single value; TOML numbers and booleans become their text.
    Text(String),
    /// A TOML array of strings.
    List(Vec<String>),
}

/// A raw value and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pub(crate) value: RawValue,
    pub(crate) origin: Origin,
}

/// All layers, read and ready for lookups.
pub(crate) struct Layers {
    file: Option<(PathBuf, HashMap<String, RawValue>)>,
    dotenv: Option<(PathBuf, HashMap<String, String>)>,
    env: HashMap<String, String>,
}

impl Layers {
    /// Reads the file and `.env` layers. Problems in the TOML file that do
    /// not stop reading (unknown keys, tables) are appended to `problems`.
    pub(crate) fn read(
        sources: &Sources,
        problems: &mut Vec<Problem>,
    ) -> Result<Self, ConfigError> {
        let file = match &sources.file {
            Some(path) => Some((path.clone(), read_toml(path, problems)?)),
            None => None,
        };
        let dotenv = match &sources.dotenv {
            Some(path) => Some((path.clone(), read_dotenv(path)?)),
            None => None,
        };
        let env = sources
            .env
            .iter()
            .filter(|(name, _)| setting_of(name).is_some())
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        Ok(Layers { file, dotenv, env })
    }

    /// The winning value of a setting: the environment over `.env` over the
    /// file, `UNIPROXY_NAME` over `NAME` within a layer. An empty value counts
    /// as not set, except for `API_KEY`, where empty means empty.
    pub(crate) fn get(&self, name: &'static str) -> Option<Raw> {
        let keep_empty = name == "API_KEY";
        let set = |value: &str| keep_empty || !value.trim().is_empty();
        let prefixed = format!("{PREFIX}{name}");
        for var in [prefixed.as_str(), name] {
            if let Some(value) = self.env.get(var).filter(|v| set(v)) {
                let origin = Origin::Environment { var: var.to_owned() };
                return Some(Raw { value: RawValue::Text(value.clone()), origin });
            }
        }
        if let Some((path, vars)) = &self.dotenv {
            for var in [prefixed.as_str(), name] {
                if let Some(value) = vars.get(var).filter(|v| set(v)) {
                    let origin = Origin::Dotenv { path: path.clone(), var: var.to_owned() };
                    return Some(Raw { value: RawValue::Text(value.clone()), origin });
                }
            }
        }
        if let Some((path, keys)) = &self.file {
            let key = name.to_ascii_lowercase();
            let value = keys.get(&key).filter(|v| match v {
                RawValue::Text(text) => set(text),
                RawValue::List(_) => true,
            });
            if let Some(value) = value {
                let origin = Origin::File { path: path.clone(), key };
                return Some(Raw { value: value.clone(), origin });
            }
        }
        None
    }
}

/// Reads the flat TOML file into raw values, through the `config` crate.
fn read_toml(
    path: &Path,
    problems: &mut Vec<Problem>,
) -> Result<HashMap<String, RawValue>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::ReadFile { path: path.to_owned(), source })?;
    let table = config::File::from_str(&text, FileFormat::Toml).collect().map_err(|e| {
        ConfigError::ParseFile { path: path.to_owned(), source: redact_toml_error(&e).into() }
    })?;
    let mut keys: Vec<(String, config::Value)> = table.into_iter().collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = HashMap::new();
    for (key, value) in keys {
        let origin = Origin::File { path: path.to_owned(), key: key.clone() };
        let known = SETTINGS.iter().find(|name| name.eq_ignore_ascii_case(&key));
        match known {
            Some(name) if name.to_ascii_lowercase() == key => {}
            Some(name) => {
                let hint = Some(format!("keys are lowercase: use `{}`", name.to_ascii_lowercase()));
                problems.push(Problem {
                    setting: key,
                    origin,
                    value: None,
                    kind: ProblemKind::UnknownKey { hint },
                });
                continue;
            }
            None => {
                let hint = key
                    .strip_prefix("uniproxy_")
                    .filter(|rest| SETTINGS.iter().any(|n| n.eq_ignore_ascii_case(rest)))
                    .map(|rest| format!("the file takes no `uniproxy_` prefix: use `{rest}`"));
                problems.push(Problem {
                    setting: key,
                    origin,
                    value: None,
                    kind: ProblemKind::UnknownKey { hint },
                });
                continue;
            }
        }
        let raw = match value.kind {
            ValueKind::Nil => continue,
            ValueKind::Array(items) => {
                let list: Option<Vec<String>> =
                    items.into_iter().map(|item| scalar_text(item.kind)).collect();
                match list {
                    Some(list) => RawValue::List(list),
                    None => {
                        problems.push(not_scalar(&key, origin, "an array of strings"));
                        continue;
                    }
                }
            }
            kind => match scalar_text(kind) {
                Some(text) => RawValue::Text(text),
                None => {
                    problems.push(not_scalar(&key, origin, "a single value, not a table"));
                    continue;
                }
            },
        };
        out.insert(key, raw);
    }
    Ok(out)
}

/// The text of a TOML scalar; `None` for tables and arrays.
fn scalar_text(kind: ValueKind) -> Option<String> {
    match kind {
        ValueKind::String(s) => Some(s),
        ValueKind::Boolean(b) => Some(b.to_string()),
        ValueKind::I64(n) => Some(n.to_string()),
        ValueKind::I128(n) => Some(n.to_string()),
        ValueKind::U64(n) => Some(n.to_string()),
        ValueKind::U128(n) => Some(n.to_string()),
        ValueKind::Float(n) => Some(n.to_string()),
        ValueKind::Nil | ValueKind::Table(_) | ValueKind::Array(_) => None,
    }
}

fn not_scalar(key: &str, origin: Origin, expected: &str) -> Problem {
    Problem {
        setting: key.to_ascii_uppercase(),
        origin,
        value: None,
        kind: ProblemKind::Invalid { expected: expected.to_owned() },
    }
}

/// A TOML syntax error without the quoted source line, which may hold a key.
#[derive(Debug)]
struct TomlSyntaxError(String);

impl fmt::Display for TomlSyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TomlSyntaxError {}

/// Keeps the position and the parser's explanation, and drops the snippet
/// lines (`  |`, `3 | api_key = sk-…`, `  |   ^`) that quote the file.
fn redact_toml_error(error: &config::ConfigError) -> TomlSyntaxError {
    let text = error.to_string();
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| {
            let rest = line.trim_start().trim_start_matches(|c: char| c.is_ascii_digit());
            !rest.trim_start().starts_with('|')
        })
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    TomlSyntaxError(kept.join("; "))
}

/// Reads `.env` without touching the process environment. A later line wins
/// over an earlier one, as in python-dotenv.
fn read_dotenv(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::ReadDotenv {
        path: path.to_owned(),
        source: dotenvy::Error::Io(e),
    })?;
    // Editors on Windows may save a byte-order mark, which is not part of the name.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut vars = HashMap::new();
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        match item {
            Ok((name, value)) => {
                if setting_of(&name).is_some() {
                    vars.insert(name, value);
                }
            }
            Err(dotenvy::Error::LineParse(line, _)) => {
                return Err(dotenv_syntax(path, text, &line));
            }
            Err(source) => return Err(ConfigError::ReadDotenv { path: path.to_owned(), source }),
        }
    }
    Ok(vars)
}

/// Builds the syntax error for `.env` without quoting the line.
fn dotenv_syntax(path: &Path, text: &str, line: &str) -> ConfigError {
    let first = line.lines().next().unwrap_or_default().trim();
    let number = text.lines().position(|l| !first.is_empty() && l.trim() == first).map(|i| i + 1);
    let variable = first
        .trim_start_matches("export ")
        .split_once('=')
        .map(|(name, _)| name.trim())
        .filter(|name| {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        })
        .map(str::to_owned);
    ConfigError::DotenvSyntax { path: path.to_owned(), line: number, variable }
}
