//! Parsers for setting values. Each returns the value or a description of
//! what is accepted, which becomes [`ProblemKind::Invalid`](crate::ProblemKind).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The result of a parser: the value, or what the setting accepts.
pub(crate) type Parsed<T> = Result<T, String>;

/// Booleans as pydantic accepts them, in any case.
pub(crate) fn boolean(s: &str) -> Parsed<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "t" | "y" => Ok(true),
        "false" | "0" | "no" | "off" | "f" | "n" => Ok(false),
        _ => Err("a boolean: true/false, 1/0, yes/no or on/off".to_owned()),
    }
}

/// An unsigned integer within `min..=max` of type `T`, in the forms pydantic takes one from an
/// old service's `.env`: a `+`, `_` between two digits (`4_096`), a fraction of zeros
/// (`4096.0`).
pub(crate) fn integer<T>(s: &str, min: T) -> Parsed<T>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Bounded,
{
    let expected = || format!("an integer from {min} to {}", T::MAX_VALUE);
    let s = s.strip_prefix('+').unwrap_or(s);
    let whole = match s.split_once('.') {
        Some((whole, zeros)) if !zeros.is_empty() && zeros.bytes().all(|b| b == b'0') => whole,
        Some(_) => return Err(expected()),
        None => s,
    };
    let digit_groups = whole.split('_');
    if !digit_groups.clone().all(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit())) {
        return Err(expected());
    }
    match digit_groups.collect::<String>().parse::<T>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(expected()),
    }
}

/// The upper bound of an integer type, for messages.
pub(crate) trait Bounded: Sized {
    const MAX_VALUE: Self;
}

macro_rules! bounded {
    ($($t:ty),*) => { $(impl Bounded for $t { const MAX_VALUE: Self = <$t>::MAX; })* };
}
bounded!(u16, u32, u64, usize);

/// The longest duration a setting takes: a hundred years, as good as never. The proxy adds a
/// timeout to the time now (`Instant + Duration`), which panics past about 292 billion years;
/// a `Duration` itself goes to 585 billion.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A positive duration up to [`MAX_DURATION`]: seconds as an integer or decimal (`10`, `0.5`),
/// or with a unit `ms`, `s`, `m` or `h` (`500ms`, `30s`, `5m`).
pub(crate) fn duration(s: &str) -> Parsed<Duration> {
    let expected = || {
        "a positive number of seconds up to a hundred years, optionally with a unit \
         (10, 1.5, 500ms, 30s, 5m, 1h)"
            .to_owned()
    };
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        _ => return Err(expected()),
    };
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(expected());
    }
    let value: f64 = number.parse().map_err(|_| expected())?;
    match Duration::try_from_secs_f64(value * factor) {
        Ok(d) if !d.is_zero() && d <= MAX_DURATION => Ok(d),
        _ => Err(expected()),
    }
}

/// A positive size in bytes: a plain integer, or with a unit `B`, `KB`,
/// `MB`, `GB` (powers of 1000) or `KiB`, `MiB`, `GiB` (powers of 1024).
pub(crate) fn byte_size(s: &str) -> Parsed<u64> {
    let expected =
        || "a positive number of bytes, optionally with a unit (10485760, 512KB, 10MiB)".to_owned();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(expected()),
    };
    let value: u64 = number.parse().map_err(|_| expected())?;
    match value.checked_mul(factor) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(expected()),
    }
}

/// A base URL: `http://` or `https://` with a host, no query or fragment.
/// Trailing slashes are removed and the scheme is lowercased.
pub(crate) fn base_url(s: &str) -> Parsed<String> {
    let expected = || {
        "an http:// or https:// URL with a host and no query, like https://api.openai.com/v1"
            .to_owned()
    };
    let (scheme, rest) = s.split_once("://").ok_or_else(expected)?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(expected());
    }
    if rest.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
        return Err(expected());
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if !valid_authority(authority) {
        return Err(expected());
    }
    Ok(format!("{scheme}://{}", rest.trim_end_matches('/')))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, optionally after `user@`.
fn valid_authority(authority: &str) -> bool {
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let Some((v6, after)) = inner.split_once(']') else { return false };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("v6", Some(port)),
                None => return false,
            },
        }
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    let host_ok = !host.is_empty()
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok());
    host_ok && port_ok
}

/// A CORS origin: `*`, or `scheme://host[:port]` with no path.
pub(crate) fn cors_origin(s: &str) -> Parsed<String> {
    let expected = || "`*` or origins like https://app.example.com, comma-separated".to_owned();
    if s == "*" {
        return Ok(s.to_owned());
    }
    let url = base_url(s).map_err(|_| expected())?;
    let after_scheme = url.split_once("://").map_or("", |(_, rest)| rest);
    if after_scheme.contains('/') || after_scheme.contains('@') {
        return Err(expected());
    }
    Ok(url)
}

/// An `ALLOWED_HOSTS` entry: `*`, or a host name, in lower case (`Host` is not case-sensitive).
pub(crate) fn allowed_host(s: &str) -> Parsed<String> {
    if s == "*" {
        return Ok(s.to_owned());
    }
    let expected =
        || "`*` or host names like api.example.com (no port), comma-separated".to_owned();
    match host(s) {
        Ok(name) if !name.contains(':') => Ok(name.to_ascii_lowercase()),
        _ => Err(expected()),
    }
}

/// A listen address: an IP address (IPv6 optionally in brackets) or a
/// host name. IPv6 is returned without brackets.
pub(crate) fn host(s: &str) -> Parsed<String> {
    let expected = || "an IP address or host name, like 0.0.0.0, ::1 or localhost".to_owned();
    let bare = s.strip_prefix('[').and_then(|v| v.strip_suffix(']')).unwrap_or(s);
    if bare.parse::<IpAddr>().is_ok() {
        return Ok(bare.to_owned());
    }
    let name = s.strip_suffix('.').unwrap_or(s);
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(s.to_owned())
    } else {
        Err(expected())
    }
}

/// The SQLite database file from `DATABASE_URL`, in the SQLAlchemy forms the
/// Python service used (`sqlite:///rel.db`, `sqlite+aiosqlite:///rel.db`,
/// `sqlite:////abs.db`) or as a plain path. Query parameters are ignored.
/// An in-memory database (`:memory:`, or a `file:` URI naming one) is
/// refused: the request log must survive a restart, and `uniproxy logs`
/// reads it from another process.
pub(crate) fn database_path(s: &str) -> Parsed<PathBuf> {
    let expected = || {
        "sqlite:///RELATIVE/PATH.db, sqlite:////ABSOLUTE/PATH.db (also sqlite+aiosqlite://), \
         or a plain file path"
            .to_owned()
    };
    let file = |path: &str| {
        let in_memory = path == ":memory:"
            || path.starts_with("file:")
                && (path.contains(":memory:") || path.contains("mode=memory"));
        if in_memory {
            Err("a database file, not an in-memory database: the request log must survive \
                 a restart, and `uniproxy logs` reads the file"
                .to_owned())
        } else if names_directory(path) {
            Err("a database file, not a directory (sqlite:///./data/proxy.db)".to_owned())
        } else {
            Ok(PathBuf::from(path))
        }
    };
    let Some((scheme, rest)) = s.split_once("://") else {
        return file(s);
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "sqlite" && !scheme.starts_with("sqlite+") {
        return Err(expected());
    }
    // SQLAlchemy: `sqlite://` + `/` + path, where an absolute path brings its own `/`.
    let path = rest.strip_prefix('/').ok_or_else(expected)?;
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path.is_empty() {
        return Err(expected());
    }
    file(path)
}

/// Whether `path` names a directory: it ends in a separator, or one is there.
fn names_directory(path: &str) -> bool {
    path.ends_with(['/', std::path::MAIN_SEPARATOR]) || Path::new(path).is_dir()
}

/// `LOG_FILE_PATH`: a file, or a directory (it ends in a separator, or one is there) to keep
/// `proxy.log` in, as `LOG_FILE_PATH=logs/` means.
pub(crate) fn log_file_path(s: &str) -> Parsed<PathBuf> {
    let path = non_empty(s)?;
    if names_directory(&path) {
        Ok(Path::new(&path).join("proxy.log"))
    } else {
        Ok(PathBuf::from(path))
    }
}

/// Any non-empty text (after trimming), for names and versions.
pub(crate) fn non_empty(s: &str) -> Parsed<String> {
    if s.is_empty() { Err("a non-empty value".to_owned()) } else { Ok(s.to_owned()) }
}

/// An Azure `api-version`: non-empty, without spaces.
pub(crate) fn api_version(s: &str) -> Parsed<String> {
    if s.is_empty() || s.contains(char::is_whitespace) || s.contains(['&', '?', '#', '/']) {
        Err("an Azure api-version such as 2024-10-21 or 2025-04-01-preview".to_owned())
    } else {
        Ok(s.to_owned())
    }
}
