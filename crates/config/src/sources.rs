//! Where settings come from, and reading each layer into raw strings.
//!
//! Values stay strings (or lists of strings, for TOML arrays) until
//! `settings.rs` parses them, so every error can say where a value came from.
//! `.env` is parsed by the `dotenv` module with python-dotenv's grammar
//! (described in the crate docs), and its `${NAME}` expanded from the values
//! above it, else from the whole environment. Names in `.env` and the
//! environment match the settings in any case ([`rank`] orders the spellings).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use config::{FileFormat, Source, ValueKind};

use crate::dotenv::{self, Statement};
use crate::error::{ConfigError, Origin, Problem, ProblemKind};

/// Every setting, by its environment name. In the TOML file the key is the
/// lowercase name; in the environment and `.env` the name matches in any
/// case and may also carry the `UNIPROXY_` prefix, which wins over the bare
/// name.
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
    "CLIENT_TIMEOUT",
    "MAX_BODY_SIZE",
    "CORS_ALLOW_ORIGINS",
    "ALLOWED_HOSTS",
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
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
];

/// Settings whose values are never shown in errors.
/// (A proxy URL may hold a password.)
pub(crate) const SECRETS: &[&str] =
    &["API_KEY", "PROXY_API_KEYS", "ADMIN_KEY", "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"];

/// The prefix that namespaces every setting in the environment.
const PREFIX: &str = "UNIPROXY_";

/// The environment variable that names the TOML file in [`Sources::from_process`].
const CONFIG_VAR: &str = "UNIPROXY_CONFIG";

/// The setting name an environment variable sets, if it is one of ours.
/// Names match in any case, as pydantic-settings matched them: `type`,
/// `Type` and `uniproxy_type` all set `TYPE`.
fn setting_of(var: &str) -> Option<&'static str> {
    let bare = strip_prefix(var).unwrap_or(var);
    SETTINGS.iter().copied().find(|name| name.eq_ignore_ascii_case(bare))
}

/// `var` without the `UNIPROXY_` prefix, written in any case.
fn strip_prefix(var: &str) -> Option<&str> {
    let (head, rest) = var.split_at_checked(PREFIX.len())?;
    head.eq_ignore_ascii_case(PREFIX).then_some(rest)
}

/// The outbound proxy's variables, whose lowercase names win over the upper-case ones, as
/// curl and Python's `urllib` (so `requests` and `httpx`) read them: `https_proxy` is the
/// spelling curl reads first, and `http_proxy` the only one it reads.
const LOWERCASE_FIRST: &[&str] = &["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"];

/// How strongly `var` names `setting`, strongest first: `UNIPROXY_NAME`,
/// the prefixed name in another case, `NAME`, then `NAME` in another case;
/// for the outbound proxy's variables ([`LOWERCASE_FIRST`]), the bare lowercase
/// `name` before `NAME`. `None` when `var` names something else.
fn rank(var: &str, setting: &str) -> Option<u8> {
    let (bare, prefixed) = match strip_prefix(var) {
        Some(bare) => (bare, true),
        None => (var, false),
    };
    if !bare.eq_ignore_ascii_case(setting) {
        return None;
    }
    let upper_case = !var.bytes().any(|b| b.is_ascii_lowercase());
    if !prefixed && LOWERCASE_FIRST.contains(&setting) {
        let lower_case = !var.bytes().any(|b| b.is_ascii_uppercase());
        return Some(if lower_case { 2 } else { 3 + u8::from(!upper_case) });
    }
    Some(if prefixed { 0 } else { 2 } + u8::from(!upper_case))
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
    /// The `.env` file, read with python-dotenv's grammar (see the
    /// [crate docs](crate#the-env-file)). It must exist when given. It is
    /// only read: the process environment is never changed.
    pub dotenv: Option<PathBuf>,
    /// Environment variables as `(name, value)`; a later entry wins over an
    /// earlier one of the same name. Names that are not settings are ignored
    /// as settings, but `${NAME}` in a `.env` value may refer to any of them.
    pub env: Vec<(String, String)>,
}

impl Sources {
    /// Takes the sources from the running process: every environment
    /// variable (settings, with or without the `UNIPROXY_` prefix, and the
    /// rest for `${NAME}` in `.env`), the TOML file `config_file` or else the
    /// one named by `UNIPROXY_CONFIG`, and `./.env` if that file exists.
    ///
    /// A value that is not valid UTF-8 is kept with its invalid bytes
    /// replaced by U+FFFD, and [`load`](crate::load) then reports it as a
    /// problem when it is a setting, instead of silently using a damaged key.
    /// Variables with non-UTF-8 names cannot be settings and are skipped.
    #[must_use]
    pub fn from_process(config_file: Option<PathBuf>) -> Self {
        let mut env = Vec::new();
        let mut config_from_env = None;
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            if name == CONFIG_VAR && !value.is_empty() {
                config_from_env = Some(PathBuf::from(&value));
            }
            env.push((name.to_owned(), value.to_string_lossy().into_owned()));
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
    dotenv: Option<(PathBuf, Vars)>,
    env: Vars,
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
            Some(path) => Some((path.clone(), read_dotenv(path, &sources.env)?)),
            None => None,
        };
        let mut env = Vars::default();
        for (name, value) in &sources.env {
            env.set(name, Some(value));
        }
        Ok(Layers { file, dotenv, env })
    }

    /// The winning value of a setting: the environment over `.env` over the
    /// file; within a layer, `UNIPROXY_NAME` over `NAME`, each in upper case
    /// over other cases (the outbound proxy's bare lowercase names first: see
    /// [`rank`]). An empty value counts as not set, except for
    /// `API_KEY`, where empty means empty.
    pub(crate) fn get(&self, name: &'static str) -> Option<Raw> {
        let keep_empty = name == "API_KEY";
        // Kubernetes gives every pod `NAME_PORT=tcp://IP:PORT` for each service NAME in its
        // namespace (Docker's links did the same): for a service called uniproxy, that is
        // UNIPROXY_PORT, which is no port setting, and would stop the proxy at start-up.
        let service_link = |value: &str| name == "PORT" && value.trim_start().starts_with("tcp://");
        let set = |value: &str| (keep_empty || !value.trim().is_empty()) && !service_link(value);
        if let Some((var, value)) = self.env.find(name, set) {
            let origin = Origin::Environment { var: var.clone() };
            return Some(Raw { value: RawValue::Text(value.clone()), origin });
        }
        if let Some((path, vars)) = &self.dotenv
            && let Some((var, value)) = vars.find(name, set)
        {
            let origin = Origin::Dotenv { path: path.clone(), var: var.clone() };
            return Some(Raw { value: RawValue::Text(value.clone()), origin });
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

/// The variables of the environment or of `.env` that are settings, as
/// `(name as written, value)`, in the order they were set.
#[derive(Default)]
struct Vars(Vec<(String, String)>);

impl Vars {
    /// Sets `name`, replacing an earlier variable of exactly that name; a
    /// bare `.env` key (`value` `None`) only removes it.
    fn set(&mut self, name: &str, value: Option<&str>) {
        self.0.retain(|(n, _)| n != name);
        if let Some(value) = value.filter(|_| setting_of(name).is_some()) {
            self.0.push((name.to_owned(), value.to_owned()));
        }
    }

    /// The variable that sets `setting` (see [`rank`]) with a value that
    /// counts as `set`; the later one when two rank the same.
    fn find(&self, setting: &str, set: impl Fn(&str) -> bool) -> Option<&(String, String)> {
        self.0
            .iter()
            .rev()
            .filter(|(_, value)| set(value))
            .filter_map(|pair| rank(&pair.0, setting).map(|rank| (rank, pair)))
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, pair)| pair)
    }
}

/// Reads the flat TOML file into raw values, through the `config` crate.
fn read_toml(
    path: &Path,
    problems: &mut Vec<Problem>,
) -> Result<HashMap<String, RawValue>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ConfigError::ReadFile { path: path.to_owned(), error })?;
    let table = config::File::from_str(&text, FileFormat::Toml).collect().map_err(|e| {
        ConfigError::ParseFile { path: path.to_owned(), error: redact_toml_error(&e).into() }
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

/// Reads `.env` without touching the process environment, with the grammar
/// of python-dotenv (see the `dotenv` module): a later line wins over an
/// earlier one, and `${NAME}` expands from the values above it, else from
/// `env`. A line python-dotenv cannot parse is an error when its key is a
/// setting, and skipped otherwise, as python-dotenv skips it.
fn read_dotenv(path: &Path, env: &[(String, String)]) -> Result<Vars, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| ConfigError::ReadDotenv { path: path.to_owned(), error })?;
    let env: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // Every key so far, settings or not, for `${NAME}`; a bare key expands to "".
    let mut above: HashMap<String, Option<String>> = HashMap::new();
    let mut vars = Vars::default();
    for statement in dotenv::parse(&text) {
        match statement {
            Statement::Set { key, value } => {
                let value = value.map(|value| {
                    dotenv::expand(&value, |name| match above.get(name) {
                        Some(value) => Some(value.as_deref().unwrap_or_default()),
                        None => env.get(name).copied(),
                    })
                });
                vars.set(&key, value.as_deref());
                above.insert(key, value);
            }
            Statement::Invalid { key: Some(key), line } if setting_of(&key).is_some() => {
                return Err(ConfigError::DotenvSyntax {
                    path: path.to_owned(),
                    line: Some(line),
                    variable: Some(key),
                });
            }
            Statement::Invalid { .. } => {}
        }
    }
    Ok(vars)
}
