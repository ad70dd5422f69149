//! Parsing `uniproxy logs …` into a [`Command`].
//!
//! One pass collects every option the subcommands know; then each
//! subcommand checks that it was given only options it understands. That
//! keeps a single table of options instead of six parsers.

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::prelude::*;
use uniproxy_logstore::{MAX_SEARCH_BYTES, Query, StatsQuery, StatusFilter};

use super::LogsError;
use super::time::{parse_duration_ms, parse_time_ms};

/// The parsed command line.
#[derive(Debug)]
pub(crate) struct Invocation {
    /// `--config PATH`, when given after `logs`.
    pub(crate) config: Option<PathBuf>,
    /// What to do.
    pub(crate) command: Command,
}

/// One subcommand with its resolved options.
#[derive(Debug)]
pub(crate) enum Command {
    Help,
    List {
        query: Query,
        json: bool,
    },
    Show {
        id: i64,
        raw: bool,
        json: bool,
    },
    Tail {
        lines: u32,
        follow: bool,
        json: bool,
    },
    Stats {
        query: StatsQuery,
        json: bool,
    },
    Export {
        query: Query,
        format: Format,
        output: Option<PathBuf>,
    },
    Prune {
        older_than_days: Option<u32>,
        max_rows: Option<u64>,
        max_bytes: Option<u64>,
        dry_run: bool,
    },
    Import {
        file: Option<PathBuf>,
    },
}

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Jsonl,
    Csv,
}

/// A value that is not one of a fixed set.
#[derive(Debug, thiserror::Error)]
#[error("`{value}` is not one of {expected}")]
pub(crate) struct NotOneOf {
    value: String,
    expected: &'static str,
}

fn format(s: &str) -> Result<Format, NotOneOf> {
    match s {
        "jsonl" | "json" => Ok(Format::Jsonl),
        "csv" => Ok(Format::Csv),
        _ => Err(NotOneOf { value: s.to_owned(), expected: "jsonl, csv" }),
    }
}

/// A number of days, `30` or, as `--since` writes durations, `30d`.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a number of days (30, or 30d)")]
pub(crate) struct NotDays(String);

fn days(s: &str) -> Result<u32, NotDays> {
    let number = s.strip_suffix('d').unwrap_or(s);
    match number.parse() {
        Ok(n) if number.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(NotDays(s.to_owned())),
    }
}

/// Every option, as given; `given` records the long names in order.
#[derive(Default)]
struct Raw {
    config: Option<PathBuf>,
    help: bool,
    status: Option<StatusFilter>,
    model: Option<String>,
    platform: Option<String>,
    stream: Option<bool>,
    since: Option<i64>,
    from: Option<i64>,
    until: Option<i64>,
    search: Option<String>,
    limit: Option<u32>,
    before: Option<i64>,
    json: bool,
    raw: bool,
    follow: bool,
    lines: Option<u32>,
    format: Option<Format>,
    output: Option<PathBuf>,
    older_than: Option<u32>,
    max_rows: Option<u64>,
    max_bytes: Option<u64>,
    dry_run: bool,
    /// `prune --all`.
    all: bool,
    id: Option<i64>,
    positional: Vec<String>,
    given: Vec<&'static str>,
}

const FILTERS: &[&str] = &[
    "--status",
    "--model",
    "--platform",
    "--stream",
    "--no-stream",
    "--since",
    "--from",
    "--until",
    "--search",
];

/// The default page size of `logs list`.
pub(crate) const DEFAULT_LIMIT: u32 = 20;
/// The default number of entries `logs tail` shows.
pub(crate) const DEFAULT_TAIL: u32 = 10;

/// Parses the arguments after `logs`. `now_ms` resolves `--since` and
/// durations given as times.
pub(crate) fn parse(args: Vec<OsString>, now_ms: i64) -> Result<Invocation, LogsError> {
    let mut p = lexopt::Parser::from_args(args);
    let mut r = Raw::default();
    let time = |s: &str| parse_time_ms(s, now_ms);
    while let Some(arg) = p.next()? {
        let name = match arg {
            Short('c') | Long("config") => {
                r.config = Some(PathBuf::from(p.value()?));
                "--config"
            }
            Short('h') | Long("help") => {
                r.help = true;
                "--help"
            }
            Long("status") => {
                r.status = Some(p.value()?.parse()?);
                "--status"
            }
            Long("model") => {
                r.model = Some(p.value()?.string()?);
                "--model"
            }
            Long("platform") => {
                r.platform = Some(p.value()?.string()?);
                "--platform"
            }
            Long("stream") => {
                r.stream = Some(true);
                "--stream"
            }
            Long("no-stream") => {
                r.stream = Some(false);
                "--no-stream"
            }
            Long("since") => {
                r.since = Some(p.value()?.parse_with(parse_duration_ms)?);
                "--since"
            }
            Long("from") => {
                r.from = Some(p.value()?.parse_with(time)?);
                "--from"
            }
            Long("until") => {
                r.until = Some(p.value()?.parse_with(time)?);
                "--until"
            }
            Long("search") => {
                r.search = Some(p.value()?.string()?);
                "--search"
            }
            Long("limit") => {
                r.limit = Some(p.value()?.parse()?);
                "--limit"
            }
            Long("before") => {
                r.before = Some(p.value()?.parse()?);
                "--before"
            }
            Long("json") => {
                r.json = true;
                "--json"
            }
            Long("raw") => {
                r.raw = true;
                "--raw"
            }
            Short('f') | Long("follow") => {
                r.follow = true;
                "--follow"
            }
            Short('n') | Long("lines") => {
                r.lines = Some(p.value()?.parse()?);
                "--lines"
            }
            Long("format") => {
                r.format = Some(p.value()?.parse_with(format)?);
                "--format"
            }
            Short('o') | Long("output") => {
                r.output = Some(PathBuf::from(p.value()?));
                "--output"
            }
            Long("older-than") => {
                r.older_than = Some(p.value()?.parse_with(days)?);
                "--older-than"
            }
            Long("max-rows") => {
                r.max_rows = Some(p.value()?.parse()?);
                "--max-rows"
            }
            Long("max-bytes") => {
                r.max_bytes = Some(p.value()?.parse()?);
                "--max-bytes"
            }
            Long("dry-run") => {
                r.dry_run = true;
                "--dry-run"
            }
            Long("all") => {
                r.all = true;
                "--all"
            }
            // The id of `logs show ID`.
            Value(v) if r.id.is_none() && r.positional == ["show"] => {
                r.id = Some(v.parse()?);
                continue;
            }
            Value(v) => {
                r.positional.push(v.string()?);
                continue;
            }
            other => return Err(other.unexpected().into()),
        };
        r.given.push(name);
    }
    let config = r.config.clone();
    let command = command(r, now_ms)?;
    Ok(Invocation { config, command })
}

#[derive(Clone, Copy)]
enum Sub {
    List,
    Show,
    Tail,
    Stats,
    Export,
    Prune,
    Import,
}

fn command(r: Raw, now_ms: i64) -> Result<Command, LogsError> {
    let sub = match r.positional.first().map(String::as_str) {
        _ if r.help => return Ok(Command::Help),
        Some("help") => return Ok(Command::Help),
        Some(sub) => sub,
        None => return Err(LogsError::NoSubcommand),
    };
    let (sub, name, allowed): (Sub, &'static str, &[&[&str]]) = match sub {
        "list" => (Sub::List, "list", &[FILTERS, &["--limit", "--before", "--json"]]),
        "show" => (Sub::Show, "show", &[&["--raw", "--json"]]),
        "tail" => (Sub::Tail, "tail", &[&["--follow", "--lines", "--json"]]),
        "stats" => (Sub::Stats, "stats", &[&["--since", "--from", "--until", "--model", "--json"]]),
        "export" => (Sub::Export, "export", &[FILTERS, &["--format", "--output"]]),
        "prune" => {
            const LIMITS: &[&str] =
                &["--older-than", "--max-rows", "--max-bytes", "--all", "--dry-run"];
            (Sub::Prune, "prune", &[LIMITS])
        }
        "import" => (Sub::Import, "import", &[]),
        other => return Err(LogsError::UnknownSubcommand(other.to_owned())),
    };
    for &option in &r.given {
        if option != "--config" && !allowed.iter().any(|set| set.contains(&option)) {
            return Err(LogsError::NotFor { option, command: name });
        }
    }
    for (a, b) in [
        ("--since", "--from"),
        ("--stream", "--no-stream"),
        ("--all", "--older-than"),
        ("--all", "--max-rows"),
        ("--all", "--max-bytes"),
    ] {
        if r.given.contains(&a) && r.given.contains(&b) {
            return Err(LogsError::Conflict(a, b));
        }
    }
    // `import` takes a file.
    let positionals = if matches!(sub, Sub::Import) { 2 } else { 1 };
    if let Some(extra) = r.positional.get(positionals) {
        return Err(LogsError::Extra(extra.clone()));
    }
    if let Some(search) = r.search.as_ref().filter(|s| s.len() > MAX_SEARCH_BYTES) {
        // SQLite refuses a `LIKE` pattern that long: the operator's to shorten.
        return Err(LogsError::SearchTooLong { bytes: search.len() });
    }
    let from_ms = r.since.map(|d| now_ms.saturating_sub(d)).or(r.from);
    let query = Query {
        from_ms,
        to_ms: r.until,
        status: r.status,
        model: r.model.clone(),
        platform: r.platform.clone(),
        stream: r.stream,
        search: r.search.clone(),
        before_id: r.before,
        limit: r.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, 1_000),
        with_total: false,
    };
    Ok(match sub {
        Sub::List => Command::List { query, json: r.json },
        Sub::Show => {
            let id = r.id.ok_or(LogsError::Missing { command: "show", what: "an entry ID" })?;
            Command::Show { id, raw: r.raw, json: r.json }
        }
        Sub::Tail => Command::Tail {
            lines: r.lines.unwrap_or(DEFAULT_TAIL).min(1_000),
            follow: r.follow,
            json: r.json,
        },
        Sub::Stats => Command::Stats {
            query: StatsQuery { from_ms, to_ms: r.until, model: r.model, bucket_ms: None },
            json: r.json,
        },
        Sub::Export => {
            let format = r.format.ok_or(LogsError::Missing {
                command: "export",
                what: "--format jsonl or --format csv",
            })?;
            Command::Export { query, format, output: r.output }
        }
        Sub::Prune => {
            for (option, zero) in [
                ("--older-than", r.older_than == Some(0)),
                ("--max-rows", r.max_rows == Some(0)),
                ("--max-bytes", r.max_bytes == Some(0)),
            ] {
                if zero {
                    return Err(LogsError::ZeroLimit { option });
                }
            }
            Command::Prune {
                older_than_days: r.older_than,
                // `--all` keeps no entry (its limits are refused beside it, above).
                max_rows: if r.all { Some(0) } else { r.max_rows },
                max_bytes: r.max_bytes,
                dry_run: r.dry_run,
            }
        }
        Sub::Import => Command::Import { file: r.positional.get(1).map(PathBuf::from) },
    })
}
