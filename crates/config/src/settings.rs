//! The typed settings and the loader that builds them from [`Sources`].

use std::borrow::Cow;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::Platform;
use crate::error::{ConfigError, Origin, Problem, ProblemKind};
use crate::parse::{self, Parsed};
use crate::platform::PLATFORM_EXPECTED;
use crate::secret::{Secret, mask, redact_url};
use crate::sources::{Layers, Raw, RawValue, SECRETS, Sources};

const DEFAULT_MOCK_NAME: &str = "uniproxy-mock";
const DEFAULT_HOST: &str = "0.0.0.0";
const DEFAULT_PORT: u16 = 8000;
const DEFAULT_DATABASE: &str = "./data/proxy.db";
const DEFAULT_LOG_FILE: &str = "./logs/proxy.log";
const DEFAULT_MAX_TOKENS: u32 = 4096;
const DEFAULT_API_VERSION: &str = "2024-10-21";
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_BODY_SIZE: usize = 10 * 1024 * 1024;
const DEFAULT_MAX_RETRIES: u32 = 2;
const DEFAULT_LOG_FILE_MAX_BYTES: u64 = 100 * 1024 * 1024;
const DEFAULT_LOG_FILE_KEEP: u32 = 5;

/// The proxy's settings, typed and validated.
///
/// Each field names the setting that fills it. Every setting can be given
/// as `NAME` or `UNIPROXY_NAME` (in any case) in the environment or `.env`,
/// or as the lowercase `name` in the TOML file. `Debug` never shows a key,
/// because keys are [`Secret`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `TYPE`: the upstream platform. Default: [`Platform::Mock`].
    pub platform: Platform,
    /// `API_KEY`: the upstream key. Required (non-empty) for openai, anthropic,
    /// google and azure_openai. Default: empty.
    pub api_key: Secret,
    /// `BASE_URL`: the upstream base URL without a trailing slash; defaults per
    /// platform ([`Platform::default_base_url`]), required for azure_openai,
    /// and `None` only for the mock, which ignores it.
    pub base_url: Option<String>,
    /// `ACTUAL_NAME`: the upstream model (or the name reported on `/models`).
    /// Required except for the mock, where it defaults to `uniproxy-mock`.
    pub actual_name: String,
    /// `ENABLED`: whether the model is served. Default: true.
    pub enabled: bool,
    /// `MAX_TOKENS`: the default completion limit. Default: 4096.
    pub max_tokens: u32,
    /// `SUPPORTS_STREAMING`: whether streaming is offered. Default: true.
    pub supports_streaming: bool,
    /// `SUPPORTS_FUNCTION_CALLING`: whether tools are offered. Default: true.
    pub supports_function_calling: bool,
    /// `HOST`: the listen address, an IP address or host name (IPv6 without
    /// brackets). Default: `0.0.0.0`.
    pub host: String,
    /// `PORT`: the listen port; 0 picks a free port. Default: 8000.
    pub port: u16,
    /// `DATABASE_URL`: the SQLite log database. Accepts `sqlite:///rel.db`,
    /// `sqlite+aiosqlite:///rel.db`, `sqlite:////abs.db` or a plain path, but
    /// not an in-memory database (`:memory:`): the log must outlive a restart.
    /// Default: `sqlite:///./data/proxy.db`, that is `./data/proxy.db`.
    pub database_path: PathBuf,
    /// `LOG_FILE_PATH`: the JSON log file; a directory (`logs/`, or one that is there)
    /// means `proxy.log` in it. Default: `./logs/proxy.log`.
    pub log_file_path: PathBuf,
    /// `API_VERSION`: the Azure OpenAI `api-version`. Default: `2024-10-21`.
    pub api_version: String,
    /// `CONNECT_TIMEOUT`: seconds to connect upstream. Default: 10.
    pub connect_timeout: Duration,
    /// `REQUEST_TIMEOUT`: seconds for a whole request, a stream included (a longer stream is
    /// cut off with an error event), the client's body too. Default: 600.
    pub request_timeout: Duration,
    /// `FIRST_BYTE_TIMEOUT`: seconds until the upstream's first response
    /// byte. Default: `REQUEST_TIMEOUT`.
    pub first_byte_timeout: Duration,
    /// `STREAM_IDLE_TIMEOUT`: seconds allowed between two stream events. Default: 300.
    pub stream_idle_timeout: Duration,
    /// `CLIENT_TIMEOUT`: seconds a client may go without sending a byte of its
    /// request body (408 then), or without taking a byte of its answer (its
    /// connection is closed then), as nginx's `client_body_timeout` and
    /// `send_timeout`: the time between two reads or writes, not the whole
    /// transfer, which REQUEST_TIMEOUT bounds. Default: 60.
    pub client_timeout: Duration,
    /// `MAX_BODY_SIZE`: the largest request body in bytes; accepts units
    /// such as `10MiB` or `512KB`. Default: 10485760 (10 MiB).
    pub max_body_size: usize,
    /// `CORS_ALLOW_ORIGINS`: comma-separated origins, a JSON array of them
    /// (`["https://a.example"]`), or `*`. Empty (the default) turns CORS off.
    pub cors_allow_origins: Vec<String>,
    /// `ALLOWED_HOSTS`: host names (lower case, no port), comma-separated, a JSON array of
    /// them, or `*`, that a proxy listening on loopback with no keys answers to besides
    /// `localhost` and IP addresses (a reverse proxy's public name). Empty by default.
    pub allowed_hosts: Vec<String>,
    /// `PROXY_API_KEYS`: keys clients must send, comma-separated, as a JSON
    /// array, or `@PATH` to a file with one key per line (blank lines and `#`
    /// lines ignored). Unset (the default) or `[]` means the proxy does not
    /// check client keys; any other value that yields no key is an error.
    pub proxy_api_keys: Vec<Secret>,
    /// `MAX_RETRIES`: retries of a failed upstream request. Default: 2.
    pub max_retries: u32,
    /// `CONCURRENCY_LIMIT`: requests served at once; 0 (the default) is unlimited.
    pub concurrency_limit: usize,
    /// `LOG_RETENTION_DAYS`: days log rows are kept; 0 (the default) keeps them forever.
    pub log_retention_days: u32,
    /// `LOG_MAX_ROWS`: rows the log database keeps; 0 (the default) is no limit.
    pub log_max_rows: u64,
    /// `LOG_RAW_CHUNKS`: also store the raw upstream stream chunks. Default: false.
    pub log_raw_chunks: bool,
    /// `LOG_BODIES`: the JSON log file carries request and response content.
    /// Default: true.
    pub log_bodies: bool,
    /// `LOG_FILE_MAX_BYTES`: the JSON log file's size before it rotates;
    /// accepts units. Default: 104857600 (100 MiB).
    pub log_file_max_bytes: u64,
    /// `LOG_FILE_KEEP`: rotated JSON log files kept. Default: 5.
    pub log_file_keep: u32,
    /// `UI_ENABLED`: serve the web UI. Default: true.
    pub ui_enabled: bool,
    /// `ADMIN_KEY`: the key for admin endpoints; `None` when not set.
    pub admin_key: Option<Secret>,
    /// `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`: the proxy the upstream is reached through
    /// (`http://host:port`, `http://user:password@host:port`, `host:port`,
    /// `https://host:port`, or SOCKS5's `socks5h://host:port`), read as curl and Python's HTTP clients read them, in any case:
    /// the first for an HTTPS upstream, the second for a plain-HTTP one, the third for either
    /// when its own is unset. `None` when unset or empty. Secrets, as they may hold a password.
    pub https_proxy: Option<Secret>,
    /// `HTTP_PROXY`: see [`Settings::https_proxy`].
    pub http_proxy: Option<Secret>,
    /// `ALL_PROXY`: see [`Settings::https_proxy`].
    pub all_proxy: Option<Secret>,
    /// `NO_PROXY`: upstream hosts reached without the proxy: names (each also covers its
    /// subdomains), IP addresses (bare or in brackets), CIDR ranges, or `*` for every host;
    /// an entry with a port (`host:8443`, `[fd00::1]:443`) covers its host on that port. Comma-separated or a
    /// list (a value starting with `[` that is no JSON array is comma-separated, as curl reads
    /// `[::1],localhost`). A loopback upstream (`localhost`, `127.0.0.1`, `::1`) never goes
    /// through a proxy.
    pub no_proxy: Vec<String>,
    /// Whether `TYPE` was set nowhere, so that the mock was chosen.
    type_defaulted: bool,
}

impl Settings {
    /// The settings when nothing is configured: the mock platform and every
    /// default. Equal to `load(&Sources::default())`.
    #[must_use]
    pub fn mock_defaults() -> Self {
        Settings {
            platform: Platform::Mock,
            api_key: Secret::default(),
            base_url: None,
            actual_name: DEFAULT_MOCK_NAME.to_owned(),
            enabled: true,
            max_tokens: DEFAULT_MAX_TOKENS,
            supports_streaming: true,
            supports_function_calling: true,
            host: DEFAULT_HOST.to_owned(),
            port: DEFAULT_PORT,
            database_path: PathBuf::from(DEFAULT_DATABASE),
            log_file_path: PathBuf::from(DEFAULT_LOG_FILE),
            api_version: DEFAULT_API_VERSION.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            first_byte_timeout: DEFAULT_REQUEST_TIMEOUT,
            stream_idle_timeout: DEFAULT_STREAM_IDLE_TIMEOUT,
            client_timeout: DEFAULT_CLIENT_TIMEOUT,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            cors_allow_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            proxy_api_keys: Vec::new(),
            max_retries: DEFAULT_MAX_RETRIES,
            concurrency_limit: 0,
            log_retention_days: 0,
            log_max_rows: 0,
            log_raw_chunks: false,
            log_bodies: true,
            log_file_max_bytes: DEFAULT_LOG_FILE_MAX_BYTES,
            log_file_keep: DEFAULT_LOG_FILE_KEEP,
            ui_enabled: true,
            admin_key: None,
            https_proxy: None,
            http_proxy: None,
            all_proxy: None,
            no_proxy: Vec::new(),
            type_defaulted: true,
        }
    }

    /// Whether `TYPE` was set nowhere, so that the built-in mock was chosen.
    /// The binary prints this on start-up.
    #[must_use]
    pub fn type_was_defaulted(&self) -> bool {
        self.type_defaulted
    }

    /// The address to bind: `host:port`, with brackets around IPv6
    /// (`[::1]:8000`).
    #[must_use]
    pub fn listen_addr(&self) -> String {
        if self.host.parse::<Ipv6Addr>().is_ok() {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Loads settings from `sources`: built-in defaults, then the TOML file,
/// then `.env`, then the environment, each layer overriding the one before.
/// Within the environment and within `.env`, `UNIPROXY_NAME` overrides `NAME`,
/// and a name in upper case overrides the same name in another case.
///
/// Nothing else is read: not the process environment, not the current
/// directory (except the file an `@PATH` in `PROXY_API_KEYS` names).
///
/// # Errors
///
/// - [`ConfigError::Invalid`] listing every invalid or missing setting, with
///   where each value came from.
/// - [`ConfigError::ReadFile`] / [`ConfigError::ParseFile`] when the TOML file
///   cannot be read or parsed.
/// - [`ConfigError::ReadDotenv`] when the `.env` file cannot be read, and
///   [`ConfigError::DotenvSyntax`] when a statement in it for one of the
///   settings does not parse (other statements that do not parse are
///   skipped, as python-dotenv skips them).
pub fn load(sources: &Sources) -> Result<Settings, ConfigError> {
    let (settings, problems) = load_partial(sources)?;
    if problems.is_empty() { Ok(settings) } else { Err(ConfigError::Invalid { problems }) }
}

/// Loads settings as [`load`] does, but returns the problems beside the settings instead of
/// failing on them: each invalid or missing setting keeps its default. For a tool that needs
/// only some settings and must not fail on the others (`uniproxy logs` reads the log store,
/// and a cron job pruning it has no upstream key to give); it decides which problems count.
///
/// # Errors
///
/// The errors of [`load`] that stop reading altogether: [`ConfigError::ReadFile`],
/// [`ConfigError::ParseFile`], [`ConfigError::ReadDotenv`] and [`ConfigError::DotenvSyntax`].
/// Never [`ConfigError::Invalid`]: its problems are the second value.
pub fn load_partial(sources: &Sources) -> Result<(Settings, Vec<Problem>), ConfigError> {
    let mut problems = Vec::new();
    let layers = Layers::read(sources, &mut problems)?;
    let mut check = Check { layers: &layers, problems };
    let settings = build(&mut check);
    Ok((settings, check.problems))
}

/// Lookups that record a problem for every value that does not parse.
struct Check<'a> {
    layers: &'a Layers,
    problems: Vec<Problem>,
}

impl Check<'_> {
    /// The parsed value of a scalar setting: `Ok(None)` when it is set
    /// nowhere, `Err(())` when it is invalid (the problem is recorded).
    fn scalar<T>(
        &mut self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Parsed<T>,
    ) -> Result<Option<(T, Origin)>, ()> {
        let Some(raw) = self.layers.get(name) else { return Ok(None) };
        let text = match &raw.value {
            RawValue::Text(text) => text.trim(),
            RawValue::List(_) => {
                self.invalid(name, &raw, "a single value, not an array".into());
                return Err(());
            }
        };
        if text.contains('\u{fffd}') {
            self.invalid(name, &raw, "valid UTF-8".into());
            return Err(());
        }
        match parse(text) {
            Ok(value) => Ok(Some((value, raw.origin))),
            Err(expected) => {
                self.invalid(name, &raw, expected.into());
                Err(())
            }
        }
    }

    /// The parsed value, or `default` when unset or invalid.
    fn get<T>(
        &mut self,
        name: &'static str,
        default: T,
        parse: impl FnOnce(&str) -> Parsed<T>,
    ) -> T {
        match self.scalar(name, parse) {
            Ok(Some((value, _))) => value,
            Ok(None) | Err(()) => default,
        }
    }

    fn invalid(&mut self, name: &'static str, raw: &Raw, expected: Cow<'static, str>) {
        let value = match &raw.value {
            RawValue::Text(text) if SECRETS.contains(&name) => mask(text.trim()),
            RawValue::Text(text) => format!("{:?}", redact_url(text)),
            RawValue::List(items) if SECRETS.contains(&name) => {
                format!("[{} items, hidden]", items.len())
            }
            RawValue::List(items) => {
                let items: Vec<_> = items.iter().map(|item| redact_url(item)).collect();
                format!("{items:?}")
            }
        };
        self.problems.push(Problem {
            setting: name.to_owned(),
            origin: raw.origin.clone(),
            value: Some(value),
            kind: ProblemKind::Invalid { expected: expected.into_owned() },
        });
    }

    fn missing(&mut self, name: &'static str, reason: String) {
        self.problems.push(Problem {
            setting: name.to_owned(),
            origin: Origin::Default,
            value: None,
            kind: ProblemKind::Missing { reason },
        });
    }

    /// The raw value of a list setting, where a JSON array of strings
    /// (`["a","b"]`, the form pydantic-settings reads for lists) becomes a
    /// list. `None` when it is set nowhere or is not a valid JSON array (the
    /// problem is recorded).
    fn list_raw(&mut self, name: &'static str) -> Option<Raw> {
        let raw = self.layers.get(name)?;
        let RawValue::Text(text) = &raw.value else { return Some(raw) };
        if !text.trim_start().starts_with('[') {
            return Some(raw);
        }
        match serde_json::from_str::<Vec<String>>(text) {
            Ok(items) => Some(Raw { value: RawValue::List(items), origin: raw.origin }),
            // NO_PROXY is curl's variable, whose values may start with a bracketed IPv6
            // address (`[::1],localhost`): one that is no JSON array is comma-separated.
            Err(_) if name == "NO_PROXY" => Some(raw),
            Err(_) => {
                self.invalid(
                    name,
                    &raw,
                    "a JSON array of strings, or comma-separated values".into(),
                );
                None
            }
        }
    }

    /// A comma-separated list, a JSON array or a TOML array, each item parsed.
    fn list<T>(&mut self, name: &'static str, parse: impl Fn(&str) -> Parsed<T>) -> Vec<T> {
        let Some(raw) = self.list_raw(name) else { return Vec::new() };
        let items: Vec<&str> = match &raw.value {
            RawValue::Text(text) => text.split(',').map(str::trim).collect(),
            RawValue::List(items) => items.iter().map(|s| s.trim()).collect(),
        };
        let mut out = Vec::new();
        for item in items.into_iter().filter(|s| !s.is_empty()) {
            match parse(item) {
                Ok(value) => out.push(value),
                Err(expected) => {
                    let shown =
                        Raw { value: RawValue::Text(item.to_owned()), origin: raw.origin.clone() };
                    self.invalid(name, &shown, expected.into());
                }
            }
        }
        out
    }

    /// `PROXY_API_KEYS`: a list, or `@PATH` to a file of keys.
    fn proxy_api_keys(&mut self) -> Vec<Secret> {
        const NAME: &str = "PROXY_API_KEYS";
        let Some(raw) = self.list_raw(NAME) else { return Vec::new() };
        let (keys, what): (Vec<String>, Cow<'static, str>) = match &raw.value {
            RawValue::Text(text) => match text.trim().strip_prefix('@') {
                Some(path) => {
                    let path = path.trim();
                    match std::fs::read_to_string(path) {
                        // An editor on Windows may save a byte-order mark, which is
                        // not part of the first key.
                        Ok(content) => (
                            content
                                .trim_start_matches('\u{feff}')
                                .lines()
                                .map(str::trim)
                                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                                .map(str::to_owned)
                                .collect(),
                            format!("the key file {path} to list at least one key").into(),
                        ),
                        Err(e) => {
                            // The path is not a key, so it may be shown.
                            self.problems.push(Problem {
                                setting: NAME.to_owned(),
                                origin: raw.origin.clone(),
                                value: Some(format!("{:?}", text.trim())),
                                kind: ProblemKind::Invalid {
                                    expected: format!("@PATH naming a readable file of keys ({e})"),
                                },
                            });
                            return Vec::new();
                        }
                    }
                }
                None => (
                    text.split(',')
                        .map(str::trim)
                        .filter(|k| !k.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    "comma-separated keys, or @PATH to a file with one key per line".into(),
                ),
            },
            RawValue::List(items) => (
                items
                    .iter()
                    .map(|k| k.trim())
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect(),
                "non-empty keys, or [] for none".into(),
            ),
        };
        // A value that yields no keys would silently turn client authentication
        // off; only an explicitly empty array (`proxy_api_keys = []` in TOML,
        // `PROXY_API_KEYS=[]` in JSON) may.
        let explicit_empty = matches!(&raw.value, RawValue::List(items) if items.is_empty());
        if keys.is_empty() && !explicit_empty {
            self.invalid(NAME, &raw, what);
        }
        keys.into_iter().map(Secret::from).collect()
    }
}

/// Reads every setting, recording problems in `check`, and returns the
/// settings (meaningful only when no problem was recorded).
fn build(check: &mut Check<'_>) -> Settings {
    let mut s = Settings::mock_defaults();

    // TYPE decides what else is required; `None` when it is invalid, so that
    // platform-specific checks are skipped rather than guessed.
    let type_raw = check.layers.get("TYPE");
    let platform = match check
        .scalar("TYPE", |v| Platform::from_name(v).ok_or_else(|| PLATFORM_EXPECTED.to_owned()))
    {
        Ok(Some((platform, _))) => Some(platform),
        Ok(None) => Some(Platform::Mock),
        Err(()) => None,
    };
    s.type_defaulted = type_raw.is_none();
    let type_origin = type_raw.map(|raw| raw.origin);
    let because = |p: Platform| match &type_origin {
        Some(origin) => format!("required when TYPE is {p} (TYPE from {origin})"),
        None => format!("required when TYPE is {p}"),
    };

    // API_KEY is the one setting where an empty value counts as set (see `Layers::get`).
    let api_key = check.scalar("API_KEY", |v| Ok(v.to_owned()));
    let base_url = check.scalar("BASE_URL", parse::base_url);
    let actual_name = check.scalar("ACTUAL_NAME", parse::non_empty);
    if let Some(platform) = platform {
        s.platform = platform;
        match api_key {
            Ok(Some((key, origin))) => {
                if key.is_empty() && platform.requires_api_key() {
                    let raw = Raw { value: RawValue::Text(key.clone()), origin };
                    check.invalid(
                        "API_KEY",
                        &raw,
                        format!("a non-empty key, {}", because(platform)).into(),
                    );
                }
                s.api_key = Secret::from(key);
            }
            Ok(None) if platform.requires_api_key() => check.missing("API_KEY", because(platform)),
            Ok(None) | Err(()) => {}
        }
        match (platform, base_url) {
            (Platform::Mock, _) | (_, Err(())) => s.base_url = None,
            (_, Ok(Some((url, _)))) => s.base_url = Some(url),
            (_, Ok(None)) => match platform.default_base_url() {
                Some(url) => s.base_url = Some(url.to_owned()),
                None => check.missing(
                    "BASE_URL",
                    format!(
                        "{}, like https://RESOURCE.openai.azure.com/openai/deployments/DEPLOYMENT",
                        because(platform)
                    ),
                ),
            },
        }
        match actual_name {
            Ok(Some((name, _))) => s.actual_name = name,
            Ok(None) if platform != Platform::Mock => {
                check.missing("ACTUAL_NAME", because(platform))
            }
            Ok(None) | Err(()) => {}
        }
        if let Some(url) = &s.base_url {
            s.base_url = Some(platform.complete_base_url(url, &s.actual_name));
        }
    }

    s.enabled = check.get("ENABLED", s.enabled, parse::boolean);
    s.max_tokens = check.get("MAX_TOKENS", s.max_tokens, |v| parse::integer(v, 1));
    s.supports_streaming = check.get("SUPPORTS_STREAMING", s.supports_streaming, parse::boolean);
    s.supports_function_calling =
        check.get("SUPPORTS_FUNCTION_CALLING", s.supports_function_calling, parse::boolean);
    s.host = check.get("HOST", s.host, parse::host);
    s.port = check.get("PORT", s.port, |v| parse::integer(v, 0));
    s.database_path = check.get("DATABASE_URL", s.database_path, parse::database_path);
    s.log_file_path = check.get("LOG_FILE_PATH", s.log_file_path, parse::log_file_path);
    s.api_version = check.get("API_VERSION", s.api_version, parse::api_version);
    s.connect_timeout = check.get("CONNECT_TIMEOUT", s.connect_timeout, parse::duration);
    s.request_timeout = check.get("REQUEST_TIMEOUT", s.request_timeout, parse::duration);
    s.first_byte_timeout = check.get("FIRST_BYTE_TIMEOUT", s.request_timeout, parse::duration);
    s.stream_idle_timeout =
        check.get("STREAM_IDLE_TIMEOUT", s.stream_idle_timeout, parse::duration);
    s.client_timeout = check.get("CLIENT_TIMEOUT", s.client_timeout, parse::duration);
    s.max_body_size = check.get("MAX_BODY_SIZE", s.max_body_size, |v| {
        parse::byte_size(v).and_then(|n| {
            usize::try_from(n).map_err(|_| "a size that fits in memory on this machine".to_owned())
        })
    });
    s.cors_allow_origins = check.list("CORS_ALLOW_ORIGINS", parse::cors_origin);
    s.allowed_hosts = check.list("ALLOWED_HOSTS", parse::allowed_host);
    s.proxy_api_keys = check.proxy_api_keys();
    s.max_retries = check.get("MAX_RETRIES", s.max_retries, |v| parse::integer(v, 0));
    s.concurrency_limit =
        check.get("CONCURRENCY_LIMIT", s.concurrency_limit, |v| parse::integer(v, 0));
    s.log_retention_days =
        check.get("LOG_RETENTION_DAYS", s.log_retention_days, |v| parse::integer(v, 0));
    s.log_max_rows = check.get("LOG_MAX_ROWS", s.log_max_rows, |v| parse::integer(v, 0));
    s.log_raw_chunks = check.get("LOG_RAW_CHUNKS", s.log_raw_chunks, parse::boolean);
    s.log_bodies = check.get("LOG_BODIES", s.log_bodies, parse::boolean);
    s.log_file_max_bytes = check.get("LOG_FILE_MAX_BYTES", s.log_file_max_bytes, parse::byte_size);
    s.log_file_keep = check.get("LOG_FILE_KEEP", s.log_file_keep, |v| parse::integer(v, 0));
    s.ui_enabled = check.get("UI_ENABLED", s.ui_enabled, parse::boolean);
    s.admin_key = check.get("ADMIN_KEY", None, |v| Ok(Some(Secret::from(v))));
    let proxy = |v: &str| Ok((!v.is_empty()).then(|| Secret::from(v)));
    s.https_proxy = check.get("HTTPS_PROXY", None, proxy);
    s.http_proxy = check.get("HTTP_PROXY", None, proxy);
    s.all_proxy = check.get("ALL_PROXY", None, proxy);
    s.no_proxy = check.list("NO_PROXY", |v| Ok(v.to_owned()));
    s
}
