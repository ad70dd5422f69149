//! `uniproxy logs`: the request log from the command line.
//!
//! `list`, `show ID`, `tail [-f]`, `stats`, `export`, `prune` and `import`, on
//! the database that `DATABASE_URL` names (read through the same settings
//! layers as the server). Every command but `prune` and `import` opens the
//! database read-only;
//! in WAL mode a reader never blocks the running proxy's writer, nor the
//! other way round.
//!
//! [`run_from_process`] is what `main` calls. [`run_with`] takes the
//! settings and the output handles as arguments, so tests drive the commands
//! in-process; [`Options`] carries the clock, the `tail -f` poll
//! interval and a hook that stops following.

mod args;
mod csv;
mod pretty;
mod time;

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use uniproxy_config::{ConfigError, Settings, Sources, load_partial};
use uniproxy_logstore::{
    Entry, EntrySummary, JsonLinesSpill, LogStore, MAX_SEARCH_BYTES, PruneReport, Query,
    ROW_OVERHEAD_BYTES, Retention, StatsQuery, StoreError, StoreOptions,
};

use crate::error_chain;
use args::{Command, Format};
use time::format_utc;

/// The usage text of `uniproxy logs`.
pub const USAGE: &str = "\
uniproxy logs — read and prune the request log (the database DATABASE_URL names)

USAGE:
    uniproxy [--config PATH] logs COMMAND [OPTIONS]

COMMANDS:
    list         entries, newest first
                 [--status 200|4xx|5xx|error] [--model M] [--platform P] [--stream|--no-stream]
                 [--since DURATION | --from TIME] [--until TIME] [--search TEXT]
                 [--limit N (20)] [--before ID] [--json]
    show ID      one entry: metadata, the client and upstream requests, the response,
                 headers (redacted), dropped fields, errors [--raw] [--json]
    tail         the last entries [-n N (10)] [-f: then follow new ones until Ctrl-C] [--json]
    stats        totals, error rate, latency and TTFT percentiles
                 [--since DURATION | --from TIME] [--until TIME] [--model M] [--json]
    export       every matching entry with its bodies
                 --format jsonl|csv [--output FILE (stdout)] [the filters of list]
    prune        delete old entries and give the space back
                 [--older-than DAYS (30 or 30d)] [--max-rows N] [--max-bytes N] [--dry-run]
                 (without limits: LOG_RETENTION_DAYS and LOG_MAX_ROWS); --all deletes
                 every entry (the JSON log file is yours to delete: the proxy starts a
                 new one)
    import       load the entries the proxy spilled while it could not write the
                 database [FILE (LOG_FILE_PATH + .spill.jsonl)]; entries already
                 stored are skipped, and the file is removed once all are stored
                 (the proxy does this itself when the database works again)

TIME is RFC 3339 (2025-01-31T12:00:00Z), a date (2025-01-31), unix milliseconds,
or a DURATION ago. DURATION is 90s, 15m, 2h, 7d, 1w or a sum such as 1h30m.
Reading opens the database read-only and never blocks a running proxy.
";

/// Entries read per page by `export` and `prune --dry-run`.
const PAGE: u32 = 1_000;

/// Exports with more entries than this draw a progress bar (on a terminal).
const PROGRESS_MIN: u64 = 1_000;

/// Everything that can stop a `logs` command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogsError {
    /// The command line did not parse.
    #[error(transparent)]
    Args(#[from] lexopt::Error),
    /// No subcommand was given.
    #[error("missing the command: list, show, tail, stats, export, prune or import")]
    NoSubcommand,
    /// The subcommand is not one we know.
    #[error("unknown command `{0}`")]
    UnknownSubcommand(String),
    /// An option that the subcommand does not take.
    #[error("{option} does not apply to `logs {command}`")]
    NotFor {
        /// The option, by its long name.
        option: &'static str,
        /// The subcommand.
        command: &'static str,
    },
    /// Two options that exclude each other.
    #[error("{0} and {1} cannot be used together")]
    Conflict(&'static str, &'static str),
    /// A required argument is missing.
    #[error("`logs {command}` needs {what}")]
    Missing {
        /// The subcommand.
        command: &'static str,
        /// What it needs.
        what: &'static str,
    },
    /// A positional argument too many.
    #[error("unexpected argument `{0}`")]
    Extra(String),
    /// A `prune` limit of 0, which in LOG_RETENTION_DAYS and LOG_MAX_ROWS means no limit, but
    /// on the command line would delete every entry.
    #[error(
        "{option} 0 would delete every entry (in LOG_RETENTION_DAYS and LOG_MAX_ROWS, 0 means \
         no limit); give at least 1, or --all to delete every entry"
    )]
    ZeroLimit {
        /// The option.
        option: &'static str,
    },
    /// A `--search` longer than the log store can run ([`MAX_SEARCH_BYTES`]).
    #[error(
        "--search is {bytes} bytes, longer than the {max} bytes the log store can run",
        max = MAX_SEARCH_BYTES
    )]
    SearchTooLong {
        /// The search's length.
        bytes: usize,
    },
    /// `prune` was given no limit and none is configured.
    #[error(
        "nothing to prune by: give --older-than, --max-rows or --max-bytes \
         (or set LOG_RETENTION_DAYS or LOG_MAX_ROWS)"
    )]
    NoLimit,
    /// The database file does not exist.
    #[error("no log database at {} (DATABASE_URL); has the proxy run?", path.display())]
    NoDatabase {
        /// The path `DATABASE_URL` names.
        path: PathBuf,
    },
    /// A reading command found a database an older build wrote, not migrated yet: reading
    /// never changes the file, and the server migrates it when it starts.
    #[error(
        "the log database at {} has schema version {found}, this build reads {expected}: \
         start the proxy once (it migrates the file), then run this again",
        path.display()
    )]
    OldSchema {
        /// The path `DATABASE_URL` names.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// `show` was given an id that is not stored.
    #[error("no log entry with id {0}")]
    NotFound(i64),
    /// The export file could not be created.
    #[error("cannot create {}", path.display())]
    CreateOutput {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// An imported file could not be removed (reading and moving it are the store's:
    /// [`StoreError::SpillFile`]).
    #[error("cannot {action} {}", path.display())]
    ImportFile {
        /// What failed: remove.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// Lines of an imported file were not log entries: the rest was stored, and the file kept.
    #[error("{count} lines of {} are not log entries; the file is kept", path.display())]
    Unreadable {
        /// How many.
        count: u64,
        /// The file.
        path: PathBuf,
    },
    /// The log store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the output failed.
    #[error("cannot write the output")]
    Write(#[from] io::Error),
}

/// What a command takes from its surroundings; tests replace it.
pub struct Options<'a> {
    /// Unix milliseconds now: resolves `--since`, durations and `--older-than`.
    pub now_ms: i64,
    /// How long `tail -f` waits between two polls.
    pub poll_interval: Duration,
    /// Whether `err` is a terminal: the export progress bar is drawn only then.
    pub err_is_terminal: bool,
    /// Called after each `tail -f` poll with the number of polls so far;
    /// returning `true` stops following. The default never stops: Ctrl-C
    /// ends the process, which holds nothing that needs closing.
    pub stop_following: Box<dyn FnMut(u64) -> bool + 'a>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            now_ms: crate::record::now_ms(),
            poll_interval: Duration::from_millis(500),
            err_is_terminal: false,
            stop_following: Box::new(|_| false),
        }
    }
}

/// The settings `uniproxy logs` reads: where the log is, and how much of it to keep. A problem
/// with any other setting (a missing `API_KEY`) does not stop it.
const LOG_SETTINGS: &[&str] =
    &["DATABASE_URL", "LOG_FILE_PATH", "LOG_RETENTION_DAYS", "LOG_MAX_ROWS"];

/// `uniproxy [--config PATH] logs ARGS…`: parses `args`, loads the settings
/// (a `--config` after `logs` wins over `config`), runs the command on the
/// process's stdout and stderr, and returns the exit status: 0 on success,
/// 1 when the command fails, 2 for bad arguments or settings.
pub fn run_from_process(config: Option<PathBuf>, args: Vec<OsString>) -> ExitCode {
    let mut options = Options { err_is_terminal: io::stderr().is_terminal(), ..Options::default() };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut err = io::stderr();
    let invocation = match args::parse(args, options.now_ms) {
        Ok(i) => i,
        Err(e) => return report(&e, &mut out, &mut err),
    };
    // Help needs no settings: it shows even where the settings are broken.
    if matches!(invocation.command, Command::Help) {
        return match out.write_all(USAGE.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => report(&LogsError::from(e), &mut out, &mut err),
        };
    }
    // Only the log's own settings must be right: a cron job that prunes the log, or an
    // operator reading it while the upstream settings are broken, has no upstream key to give.
    let settings = match load_partial(&Sources::from_process(invocation.config.or(config))) {
        Ok((settings, problems)) => {
            let problems: Vec<_> = problems
                .into_iter()
                .filter(|p| LOG_SETTINGS.iter().any(|name| p.setting.eq_ignore_ascii_case(name)))
                .collect();
            if !problems.is_empty() {
                let _ = writeln!(err, "uniproxy: {}", ConfigError::Invalid { problems });
                return ExitCode::from(2);
            }
            settings
        }
        Err(e) => {
            let _ = writeln!(err, "uniproxy: {e}");
            return ExitCode::from(2);
        }
    };
    let result = execute(invocation.command, &settings, &mut out, &mut err, &mut options)
        .and_then(|()| out.flush().map_err(LogsError::from));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e, &mut out, &mut err),
    }
}

/// Runs `uniproxy logs ARGS…` (the arguments after `logs`) with `settings`,
/// writing to `out` and `err`, with the given [`Options`]. A `--config` in
/// `args` is accepted and ignored: the settings are already given.
pub fn run_with(
    args: Vec<OsString>,
    settings: &Settings,
    out: &mut dyn Write,
    err: &mut dyn Write,
    options: &mut Options<'_>,
) -> ExitCode {
    let result = args::parse(args, options.now_ms)
        .and_then(|invocation| execute(invocation.command, settings, out, err, options))
        .and_then(|()| out.flush().map_err(LogsError::from));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e, out, err),
    }
}

/// Prints `e` and picks the exit status: 2 for a bad command line (with the
/// usage), 1 for a failure, 0 when the reader of our output went away.
fn report(e: &LogsError, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    let _ = out.flush();
    match e {
        LogsError::Args(_)
        | LogsError::NoSubcommand
        | LogsError::UnknownSubcommand(_)
        | LogsError::NotFor { .. }
        | LogsError::Conflict(..)
        | LogsError::Missing { .. }
        | LogsError::Extra(_)
        | LogsError::NoLimit
        | LogsError::ZeroLimit { .. }
        | LogsError::SearchTooLong { .. } => {
            // lexopt's messages already include their cause: no chain here.
            let _ = writeln!(err, "uniproxy logs: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
        // `uniproxy logs list | head`: the pipe closed; that is not a failure.
        LogsError::Write(io) if io.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        LogsError::NoDatabase { .. }
        | LogsError::OldSchema { .. }
        | LogsError::NotFound(_)
        | LogsError::CreateOutput { .. }
        | LogsError::ImportFile { .. }
        | LogsError::Unreadable { .. }
        | LogsError::Store(_)
        | LogsError::Write(_) => {
            let _ = writeln!(err, "uniproxy logs: {}", error_chain(e));
            ExitCode::FAILURE
        }
    }
}

fn execute(
    command: Command,
    settings: &Settings,
    out: &mut dyn Write,
    err: &mut dyn Write,
    options: &mut Options<'_>,
) -> Result<(), LogsError> {
    match command {
        Command::Help => Ok(out.write_all(USAGE.as_bytes())?),
        Command::List { query, json } => list(&open(settings, true)?, &query, json, out, err),
        Command::Show { id, raw, json } => show(&open(settings, true)?, id, raw, json, out),
        Command::Tail { lines, follow, json } => {
            tail(&open(settings, true)?, lines, follow, json, out, options)
        }
        Command::Stats { query, json } => stats(&open(settings, true)?, &query, json, out),
        Command::Export { query, format, output } => {
            export(&open(settings, true)?, query, format, output.as_deref(), out, err, options)
        }
        Command::Prune { older_than_days, max_rows, max_bytes, dry_run } => {
            let mut retention =
                Retention { older_than_days, max_rows, max_bytes, now_ms: options.now_ms };
            if older_than_days.is_none() && max_rows.is_none() && max_bytes.is_none() {
                retention.older_than_days =
                    (settings.log_retention_days > 0).then_some(settings.log_retention_days);
                retention.max_rows = (settings.log_max_rows > 0).then_some(settings.log_max_rows);
                if retention.older_than_days.is_none() && retention.max_rows.is_none() {
                    return Err(LogsError::NoLimit);
                }
            }
            prune(&open(settings, dry_run)?, &retention, dry_run, out)
        }
        Command::Import { file } => import(settings, file, out, err, options.now_ms),
    }
}

/// Opens the configured database (the proxy's own beside another program's: see
/// [`database_file`](crate::state::database_file)), never creating it.
fn open(settings: &Settings, read_only: bool) -> Result<LogStore, LogsError> {
    let (path, _) = crate::state::database_file(&settings.database_path);
    let path = &path;
    if !path.is_file() {
        return Err(LogsError::NoDatabase { path: path.clone() });
    }
    // One connection is all a command uses.
    let options = StoreOptions { read_only, pool_size: 1, ..StoreOptions::default() };
    match LogStore::open(path, options) {
        Err(StoreError::SchemaVersion { found, expected }) if read_only && found < expected => {
            Err(LogsError::OldSchema { path: path.clone(), found, expected })
        }
        opened => Ok(opened?),
    }
}

fn write_json_line(out: &mut dyn Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(io::Error::from)?;
    out.write_all(b"\n")
}

// ---- list and tail: the table -------------------------------------------------------------

fn write_header(out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "{:>7}  {:<24}  {:<6}  {:<6}  {:>7}  {:>7}  {:<13}  MODEL  ERROR",
        "ID", "TIME (UTC)", "STATUS", "STREAM", "LAT ms", "TTFT ms", "TOKENS in/out",
    )
}

fn write_row(out: &mut dyn Write, e: &EntrySummary) -> io::Result<()> {
    let ttft = e.ttft_ms.map_or_else(|| String::from("-"), |t| t.to_string());
    let count = |n: Option<u64>| n.map_or_else(|| String::from("-"), |n| n.to_string());
    let tokens = format!("{}/{}", count(e.usage.prompt_tokens), count(e.usage.completion_tokens));
    let model = models(&e.client_model, &e.actual_model);
    let error = short_error(e.error_type.as_deref(), e.error_message.as_deref());
    let line = format!(
        "{:>7}  {:<24}  {:<6}  {:<6}  {:>7}  {:>7}  {:<13}  {model}  {error}",
        e.id,
        format_utc(e.received_ms),
        e.status,
        if e.stream { "yes" } else { "no" },
        e.latency_ms,
        ttft,
        tokens,
    );
    writeln!(out, "{}", line.trim_end())
}

fn models(client: &str, actual: &str) -> String {
    let models =
        if client == actual { client.to_owned() } else { format!("{client} → {actual}") };
    shown(&models, false).into_owned()
}

/// Text a client wrote, made safe for the operator's terminal: every control character but
/// (with `lines`) newline and tab is written as its escape (`\x1b`), so a client's model
/// name or body cannot recolour the output, retitle the terminal, or split a table row.
fn shown(text: &str, lines: bool) -> std::borrow::Cow<'_, str> {
    let kept = |c: char| !c.is_control() || (lines && (c == '\n' || c == '\t'));
    if text.chars().all(kept) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if kept(c) {
            out.push(c);
        } else {
            // Control characters are all below U+0100 (C0, DEL, C1).
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The error class and the start of the message, on one line.
fn short_error(kind: Option<&str>, message: Option<&str>) -> String {
    const MAX: usize = 60;
    let text = match (kind, message) {
        (Some(k), Some(m)) => format!("{k}: {m}"),
        (Some(s), None) | (None, Some(s)) => s.to_owned(),
        (None, None) => return String::new(),
    };
    let one_line: String =
        text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX + 1).collect();
    if one_line.chars().count() > MAX {
        format!("{}…", one_line.chars().take(MAX - 1).collect::<String>())
    } else {
        one_line
    }
}

fn list(
    store: &LogStore,
    query: &Query,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), LogsError> {
    let page = store.list(query)?;
    if json {
        for e in &page.items {
            write_json_line(out, e)?;
        }
        // Stdout stays one entry per line; the cursor goes to stderr.
        if let Some(before) = page.next_before_id {
            writeln!(err, "next page: --before {before}")?;
        }
        return Ok(());
    }
    if page.items.is_empty() {
        writeln!(out, "no entries")?;
        return Ok(());
    }
    write_header(out)?;
    for e in &page.items {
        write_row(out, e)?;
    }
    if let Some(before) = page.next_before_id {
        writeln!(out, "next page: --before {before}")?;
    }
    Ok(())
}

/// The listing fields of a full entry.
fn summary(e: &Entry) -> EntrySummary {
    let n = &e.entry;
    EntrySummary {
        id: e.id,
        request_id: n.request_id.clone(),
        received_ms: n.received_ms,
        first_byte_ms: n.first_byte_ms,
        finished_ms: n.finished_ms,
        latency_ms: e.latency_ms,
        ttft_ms: e.ttft_ms,
        client_model: n.client_model.clone(),
        actual_model: n.actual_model.clone(),
        platform: n.platform.clone(),
        stream: n.stream,
        status: n.status,
        error_type: n.error_type.clone(),
        error_message: n.error_message.clone(),
        usage: n.usage,
        attempts: n.attempts,
        key_hash: n.key_hash.clone(),
        client_addr: n.client_addr.clone(),
        body_bytes: n.body_bytes(),
    }
}

fn tail(
    store: &LogStore,
    lines: u32,
    follow: bool,
    json: bool,
    out: &mut dyn Write,
    options: &mut Options<'_>,
) -> Result<(), LogsError> {
    // Read a wider page than shown, so the follow cursor starts at the newest id
    // even when a long request finished (and got its id) after newer arrivals.
    let page = store.list(&Query { limit: lines.max(100), ..Query::default() })?;
    let mut last_id = page.items.iter().map(|e| e.id).max().unwrap_or(0);
    if !json {
        write_header(out)?;
    }
    let shown = page.items.len().min(lines as usize);
    for e in page.items.iter().take(shown).rev() {
        if json { write_json_line(out, e)? } else { write_row(out, e)? }
    }
    out.flush()?;
    if !follow {
        return Ok(());
    }
    let mut polls = 0;
    loop {
        std::thread::sleep(options.poll_interval);
        while let Some(entry) = next_after(store, last_id)? {
            last_id = entry.id;
            let e = summary(&entry);
            if json { write_json_line(out, &e)? } else { write_row(out, &e)? }
        }
        out.flush()?;
        polls += 1;
        if (options.stop_following)(polls) {
            return Ok(());
        }
    }
}

/// The entry stored right after `last_id`, in the order entries were written.
///
/// Ids come from `AUTOINCREMENT`, so the next one is almost always
/// `last_id + 1`. Should an id ever be skipped, the newest page shows the
/// ids beyond the gap, and the walk continues from the smallest of them.
fn next_after(store: &LogStore, last_id: i64) -> Result<Option<Entry>, LogsError> {
    if let Some(entry) = store.get(last_id + 1)? {
        return Ok(Some(entry));
    }
    let newest = store.list(&Query { limit: 100, ..Query::default() })?;
    match newest.items.iter().map(|e| e.id).filter(|&id| id > last_id + 1).min() {
        Some(id) => Ok(store.get(id)?),
        None => Ok(None),
    }
}

// ---- show ---------------------------------------------------------------------------------

fn show(
    store: &LogStore,
    id: i64,
    raw: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), LogsError> {
    let entry = store.get(id)?.ok_or(LogsError::NotFound(id))?;
    if json {
        write_json_line(out, &entry)?;
        return Ok(());
    }
    let e = &entry.entry;
    let ms = |v: Option<i64>| v.map_or_else(|| String::from("-"), |v| format!("{v} ms"));
    let count = |n: Option<u64>| n.map_or_else(|| String::from("-"), |n| n.to_string());
    let mut fields: Vec<(&str, String)> = vec![
        ("id", entry.id.to_string()),
        ("request id", e.request_id.clone()),
        ("received", format!("{} ({})", format_utc(e.received_ms), e.received_ms)),
        ("finished", format!("{} ({})", format_utc(e.finished_ms), e.finished_ms)),
        ("latency", ms(Some(entry.latency_ms))),
        ("ttft", ms(entry.ttft_ms)),
        ("status", e.status.to_string()),
        ("stream", String::from(if e.stream { "yes" } else { "no" })),
        ("model", format!("{} ({})", models(&e.client_model, &e.actual_model), e.platform)),
        (
            "tokens",
            format!(
                "prompt {}, completion {}, total {}, cached {}, reasoning {}",
                count(e.usage.prompt_tokens),
                count(e.usage.completion_tokens),
                count(e.usage.total_tokens),
                count(e.usage.cached_tokens),
                count(e.usage.reasoning_tokens)
            ),
        ),
        ("attempts", e.attempts.to_string()),
    ];
    let optional = [
        ("client", e.client_addr.as_ref()),
        ("user agent", e.user_agent.as_ref()),
        ("key hash", e.key_hash.as_ref()),
        ("error type", e.error_type.as_ref()),
        ("error", e.error_message.as_ref()),
    ];
    fields.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v.clone()))));
    if !e.dropped_fields.is_empty() {
        fields.push(("dropped fields", e.dropped_fields.join(", ")));
    }
    for (key, value) in fields {
        writeln!(out, "{key:<15}{}", shown(&value, false))?;
    }
    let mut bodies = vec![
        ("client request", e.client_request.as_str()),
        ("upstream request", e.upstream_request.as_str()),
        ("response", e.response.as_str()),
        ("request headers (redacted)", e.request_headers.as_str()),
    ];
    if let Some(chunks) = &e.raw_chunks {
        bodies.push(("raw stream chunks", chunks));
    }
    for (title, body) in bodies {
        writeln!(out, "\n== {title} ==")?;
        if body.is_empty() {
            writeln!(out, "(empty)")?;
            continue;
        }
        let pretty = if raw { None } else { pretty::pretty_json(body) };
        let text = pretty.as_deref().unwrap_or(body);
        writeln!(out, "{}", shown(text.trim_end_matches('\n'), true))?;
    }
    Ok(())
}

// ---- stats --------------------------------------------------------------------------------

fn stats(
    store: &LogStore,
    query: &StatsQuery,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), LogsError> {
    let s = store.stats(query)?;
    if json {
        write_json_line(out, &s)?;
        return Ok(());
    }
    let percentiles = |p: Option<uniproxy_logstore::Percentiles>| {
        p.map_or_else(
            || String::from("-"),
            |p| format!("p50 {}  p90 {}  p99 {}", p.p50, p.p90, p.p99),
        )
    };
    writeln!(out, "{:<12}{}", "requests", s.requests)?;
    writeln!(out, "{:<12}{} ({:.1}%)", "errors", s.errors, s.error_rate * 100.0)?;
    writeln!(
        out,
        "{:<12}prompt {}  completion {}  total {}  cached {}  reasoning {}",
        "tokens",
        s.prompt_tokens,
        s.completion_tokens,
        s.total_tokens,
        s.cached_tokens,
        s.reasoning_tokens
    )?;
    writeln!(out, "{:<12}{}", "latency ms", percentiles(s.latency))?;
    writeln!(out, "{:<12}{}", "ttft ms", percentiles(s.ttft))?;
    Ok(())
}

// ---- export -------------------------------------------------------------------------------

const CSV_COLUMNS: &[&str] = &[
    "id",
    "request_id",
    "received",
    "received_ms",
    "first_byte_ms",
    "finished_ms",
    "latency_ms",
    "ttft_ms",
    "client_model",
    "actual_model",
    "platform",
    "stream",
    "status",
    "error_type",
    "error_message",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "attempts",
    "key_hash",
    "client_addr",
    "user_agent",
    "dropped_fields",
    "request_headers",
    "client_request",
    "upstream_request",
    "response",
    "raw_chunks",
];

fn csv_fields(entry: &Entry) -> Vec<String> {
    let e = &entry.entry;
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let count = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    vec![
        entry.id.to_string(),
        e.request_id.clone(),
        format_utc(e.received_ms),
        e.received_ms.to_string(),
        opt(e.first_byte_ms),
        e.finished_ms.to_string(),
        entry.latency_ms.to_string(),
        opt(entry.ttft_ms),
        e.client_model.clone(),
        e.actual_model.clone(),
        e.platform.clone(),
        e.stream.to_string(),
        e.status.to_string(),
        text(&e.error_type),
        text(&e.error_message),
        count(e.usage.prompt_tokens),
        count(e.usage.completion_tokens),
        count(e.usage.total_tokens),
        count(e.usage.cached_tokens),
        count(e.usage.reasoning_tokens),
        e.attempts.to_string(),
        text(&e.key_hash),
        text(&e.client_addr),
        text(&e.user_agent),
        serde_json::to_string(&e.dropped_fields).unwrap_or_default(),
        e.request_headers.as_str().to_owned(),
        e.client_request.clone(),
        e.upstream_request.clone(),
        e.response.clone(),
        text(&e.raw_chunks),
    ]
}

fn export(
    store: &LogStore,
    mut query: Query,
    format: Format,
    output: Option<&Path>,
    out: &mut dyn Write,
    err: &mut dyn Write,
    options: &Options<'_>,
) -> Result<(), LogsError> {
    let mut file;
    let sink: &mut dyn Write =
        match output {
            Some(path) => {
                file = BufWriter::new(File::create(path).map_err(|source| {
                    LogsError::CreateOutput { path: path.to_path_buf(), source }
                })?);
                &mut file
            }
            None => out,
        };
    // Keyset paging keeps memory flat: one page of summaries, one entry at a time.
    query.before_id = None;
    query.limit = PAGE;
    // Counting reads every matching row; only the progress bar needs it.
    query.with_total = options.err_is_terminal;
    let mut page = store.list(&query)?;
    let total = page.total.unwrap_or(0);
    let mut progress =
        (options.err_is_terminal && total > PROGRESS_MIN).then_some(Progress { total, drawn: 0 });
    if format == Format::Csv {
        csv::write_record(sink, CSV_COLUMNS)?;
    }
    let mut done: u64 = 0;
    loop {
        for item in &page.items {
            // An entry pruned since the page was read is skipped.
            let Some(entry) = store.get(item.id)? else { continue };
            match format {
                Format::Jsonl => write_json_line(sink, &entry)?,
                Format::Csv => csv::write_record(sink, &csv_fields(&entry))?,
            }
            done += 1;
            if let Some(bar) = &mut progress {
                bar.update(err, done)?;
            }
        }
        match page.next_before_id {
            Some(before) => {
                query.before_id = Some(before);
                query.with_total = false;
                page = store.list(&query)?;
            }
            None => break,
        }
    }
    sink.flush()?;
    if let Some(bar) = &mut progress {
        bar.finish(err, done)?;
    }
    if let Some(path) = output {
        writeln!(err, "exported {done} entries to {}", path.display())?;
    }
    Ok(())
}

/// A one-line progress bar on stderr: `\r[=====>    ] 12345/67890`.
struct Progress {
    total: u64,
    drawn: u64,
}

impl Progress {
    const WIDTH: u64 = 30;

    fn update(&mut self, err: &mut dyn Write, done: u64) -> io::Result<()> {
        // Redraw every 1% (at most 100 times), not on every entry.
        if done - self.drawn < (self.total / 100).max(1) && done < self.total {
            return Ok(());
        }
        self.drawn = done;
        let filled = (done.min(self.total) * Self::WIDTH / self.total.max(1)) as usize;
        let bar = format!(
            "{}{}{}",
            "=".repeat(filled.saturating_sub(1)),
            if filled > 0 { ">" } else { "" },
            " ".repeat(Self::WIDTH as usize - filled)
        );
        write!(err, "\r[{bar}] {done}/{}", self.total)?;
        err.flush()
    }

    fn finish(&mut self, err: &mut dyn Write, done: u64) -> io::Result<()> {
        self.drawn = 0;
        self.total = self.total.max(done);
        self.update(err, self.total)?;
        writeln!(err)
    }
}

// ---- prune --------------------------------------------------------------------------------

fn prune(
    store: &LogStore,
    retention: &Retention,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<(), LogsError> {
    let report = if dry_run { would_prune(store, retention)? } else { store.prune(retention)? };
    let mut reasons = Vec::new();
    if let Some(days) = retention.older_than_days {
        reasons.push(format!("{} older than {days} days", report.deleted_by_age));
    }
    match retention.max_rows {
        // Only `--all` asks for no row at all.
        Some(0) => reasons.push("every entry".to_owned()),
        Some(rows) => reasons.push(format!("{} beyond {rows} rows", report.deleted_by_rows)),
        None => {}
    }
    if let Some(bytes) = retention.max_bytes {
        reasons.push(format!("{} beyond {bytes} bytes", report.deleted_by_bytes));
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    writeln!(out, "{verb} {} entries ({})", report.deleted(), reasons.join(", "))?;
    if dry_run {
        writeln!(out, "dry run: nothing deleted; {} entries stored", store.count()?)?;
    } else {
        writeln!(
            out,
            "database size {} -> {} bytes; {} entries left",
            report.size_before,
            report.size_after,
            store.count()?
        )?;
    }
    Ok(())
}

/// Loads the entries a spill file holds into the database (`file`, or the one the proxy
/// spills to), skipping those already stored (by request id, among the stored entries
/// received in the same span: importing a file twice stores nothing twice). The proxy's own
/// spill file is moved aside first, so that a running proxy spills into a new one meanwhile.
/// The file is removed once every entry in it is stored; a line that is not an entry (the
/// torn end of an interrupted write) is reported, and the file kept.
fn import(
    settings: &Settings,
    file: Option<PathBuf>,
    out: &mut dyn Write,
    err: &mut dyn Write,
    now_ms: i64,
) -> Result<(), LogsError> {
    let live = crate::state::spill_path(settings);
    let path = file.unwrap_or_else(|| live.clone());
    let nothing =
        |out: &mut dyn Write| writeln!(out, "nothing to import: no file at {}", path.display());
    if !path.exists() {
        if path != live {
            // A file named on the command line that is not there is a mistake, not nothing:
            // said as the system says it ("No such file or directory"), as opening it would.
            let source = std::fs::metadata(&path)
                .err()
                .unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound));
            return Err(LogsError::ImportFile { action: "read", path, source });
        }
        nothing(out)?;
        return Ok(());
    }
    let store = open(settings, false)?;
    let aside = if path == live {
        match JsonLinesSpill::new(&live).take(now_ms)? {
            Some(aside) => aside,
            // Taken by the proxy's own replay meanwhile.
            None => {
                nothing(out)?;
                return Ok(());
            }
        }
    } else {
        path.clone()
    };
    let replayed = uniproxy_logstore::replay(&store, &aside, |line, e| {
        let _ =
            writeln!(err, "line {line} of {} is not a log entry ({e}); skipped", aside.display());
    });
    let report = match replayed {
        Ok(report) => report,
        Err(e) => {
            writeln!(
                err,
                "uniproxy logs: the entries are in {0}; `uniproxy logs import {0}` stores the \
                 rest (entries already stored are skipped)",
                aside.display()
            )?;
            return Err(e.into());
        }
    };
    write!(out, "imported {} entries from {}", report.stored, path.display())?;
    if report.already_stored > 0 {
        write!(out, "; {} were stored already", report.already_stored)?;
    }
    if report.unreadable > 0 {
        writeln!(out, "; {} unreadable lines, kept in {}", report.unreadable, aside.display())?;
        // Stored what it could, but not all: a script must see that.
        return Err(LogsError::Unreadable { count: report.unreadable as u64, path: aside });
    } else {
        match std::fs::remove_file(&aside) {
            // Removed by the proxy's own replay of the same file meanwhile.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            removed => removed.map_err(|source| LogsError::ImportFile {
                action: "remove",
                path: aside.clone(),
                source,
            })?,
        }
        writeln!(out)?;
    }
    Ok(())
}

/// What [`LogStore::prune`] would delete, counted without deleting: the same
/// three steps in the same order (age, then rows, then bytes, oldest id first).
fn would_prune(store: &LogStore, retention: &Retention) -> Result<PruneReport, LogsError> {
    // (id, received_ms, body bytes) of every entry: 24 bytes each, no bodies read.
    let mut rows: Vec<(i64, i64, u64)> = Vec::new();
    let mut query = Query { limit: PAGE, ..Query::default() };
    loop {
        let page = store.list(&query)?;
        rows.extend(page.items.iter().map(|e| (e.id, e.received_ms, e.body_bytes)));
        match page.next_before_id {
            Some(before) => query.before_id = Some(before),
            None => break,
        }
    }
    // Oldest first, as `LogStore::prune` deletes: by the time received, then by id.
    rows.sort_unstable_by_key(|&(id, received, _)| (received, id));
    let size = store.size_bytes()?;
    let mut report = PruneReport { size_before: size, size_after: size, ..PruneReport::default() };
    if let Some(days) = retention.older_than_days {
        let cutoff = retention.now_ms.saturating_sub(i64::from(days).saturating_mul(86_400_000));
        let before = rows.len();
        rows.retain(|&(_, received, _)| received >= cutoff);
        report.deleted_by_age = (before - rows.len()) as u64;
    }
    if let Some(max_rows) = retention.max_rows {
        let excess = (rows.len() as u64).saturating_sub(max_rows);
        report.deleted_by_rows = excess;
        rows.drain(..excess as usize);
    }
    if let Some(max_bytes) = retention.max_bytes {
        let total: u64 = rows.iter().map(|&(_, _, b)| b + ROW_OVERHEAD_BYTES).sum();
        let mut excess = total.saturating_sub(max_bytes);
        for &(_, _, bytes) in &rows {
            if excess == 0 {
                break;
            }
            excess = excess.saturating_sub(bytes + ROW_OVERHEAD_BYTES);
            report.deleted_by_bytes += 1;
        }
    }
    Ok(report)
}
