//! `uniproxy logs`: each command on a database filled with known entries,
//! in-process through `logs_cmd::run_with`, and through the real binary.
#![allow(clippy::unwrap_used)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};
use uniproxy::logs_cmd::{self, Options};
use uniproxy_config::Settings;
use uniproxy_logstore::{LogStore, NewEntry, StoreOptions, Usage, redact_headers};

/// 2025-01-31T12:00:00Z.
const T0: i64 = 1_738_324_800_000;
/// The tests' "now": one hour after `T0`.
const NOW: i64 = T0 + 3_600_000;
const MIN: i64 = 60_000;
const DAY: i64 = 86_400_000;

/// A client message with a comma, quotes and a newline, to exercise CSV quoting.
const TRICKY: &str = "Hello, \"world\"\nsecond line";

// The bodies are written out as text rather than with `json!`: `show` must be seen to keep the
// bytes and the order in which a client sent them, whatever serde_json's features.

fn chat_request(model: &str, content: &str, stream: bool) -> String {
    let content = serde_json::to_string(content).unwrap();
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":{content}}}],"stream":{stream},"temperature":0.2}}"#
    )
}

fn anthropic_request(model: &str, content: &str) -> String {
    let content = serde_json::to_string(content).unwrap();
    format!(
        r#"{{"model":"{model}","system":"You are terse.","messages":[{{"role":"user","content":[{{"type":"text","text":{content}}}]}}],"max_tokens":4096}}"#
    )
}

fn chat_response(id: &str, model: &str, text: &str) -> String {
    format!(
        r#"{{"id":"{id}","object":"chat.completion","created":1738324800,"model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}}}"#
    )
}

/// Entry `n`: received at `received_ms`, `[client model, actual model]`, its latency and TTFT.
fn entry(
    n: u32,
    received_ms: i64,
    [client_model, actual_model]: [&str; 2],
    (latency, ttft): (i64, Option<i64>),
    stream: bool,
    status: u16,
) -> NewEntry {
    let request_id = format!("chatcmpl-{n:04}");
    NewEntry {
        request_id: request_id.clone(),
        received_ms,
        first_byte_ms: ttft.map(|t| received_ms + t),
        finished_ms: received_ms + latency,
        client_model: client_model.into(),
        actual_model: actual_model.into(),
        platform: "anthropic".into(),
        stream,
        status,
        client_request: chat_request(client_model, &format!("question {n}"), stream),
        upstream_request: anthropic_request(actual_model, &format!("question {n}")),
        response: if status == 200 {
            chat_response(&request_id, client_model, &format!("answer {n}"))
        } else {
            String::new()
        },
        request_headers: json!({
            "content-type": "application/json",
            "authorization": "Bearer sk-proxy-secret",
            "user-agent": "OpenAI/Python 1.54.0"
        })
        .to_string()
        .into(),
        client_addr: Some("127.0.0.1:53124".into()),
        user_agent: Some("OpenAI/Python 1.54.0".into()),
        key_hash: Some("3f9a1c".into()),
        attempts: 1,
        ..NewEntry::default()
    }
}

/// The five entries of every test, ids 1 to 5 in this order.
fn entries() -> Vec<NewEntry> {
    let mut old =
        entry(1, T0 - 40 * DAY, ["gpt-4o", "claude-sonnet-4"], (1_000, Some(200)), false, 200);
    old.usage = Usage {
        prompt_tokens: Some(10),
        completion_tokens: Some(20),
        total_tokens: Some(30),
        ..Usage::default()
    };

    let mut tricky =
        entry(2, T0 - 10 * MIN, ["gpt-4o", "claude-sonnet-4"], (2_000, Some(300)), true, 200);
    tricky.client_request = chat_request("gpt-4o", TRICKY, true);
    tricky.usage = Usage {
        prompt_tokens: Some(30),
        completion_tokens: Some(40),
        total_tokens: Some(70),
        ..Usage::default()
    };

    let mut limited =
        entry(3, T0 - 5 * MIN, ["gpt-4o-mini", "claude-haiku"], (100, None), false, 429);
    limited.error_type = Some("rate_limit".into());
    limited.error_message = Some("upstream said: slow down, please".into());
    limited.attempts = 3;

    let mut failed = entry(4, T0, ["gpt-4o", "claude-sonnet-4"], (3_000, None), true, 502);
    failed.error_type = Some("upstream_error".into());
    failed.error_message = Some("connection reset by peer\nwhile reading the body".into());

    let mut recent =
        entry(5, T0 + MIN, ["gpt-4o", "claude-sonnet-4"], (500, Some(100)), false, 200);
    recent.usage = Usage {
        prompt_tokens: Some(5),
        completion_tokens: Some(6),
        total_tokens: Some(11),
        ..Usage::default()
    };
    recent.dropped_fields = vec!["logprobs".into()];
    recent.raw_chunks = Some("event: message_start\ndata: {\"type\":\"message_start\"}\n\n".into());

    vec![old, tricky, limited, failed, recent]
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    settings: Settings,
}

fn fixture_with(entries: &[NewEntry]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("proxy.db");
    let store = LogStore::open(&path, StoreOptions::default()).unwrap();
    store.insert_batch(entries).unwrap();
    drop(store);
    let mut settings = Settings::mock_defaults();
    settings.database_path = path.clone();
    Fixture { _dir: dir, path, settings }
}

fn fixture() -> Fixture {
    fixture_with(&entries())
}

fn args(list: &[&str]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

struct Output {
    code: ExitCode,
    out: String,
    err: String,
}

fn run_opts(settings: &Settings, list: &[&str], options: &mut Options<'_>) -> Output {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = logs_cmd::run_with(args(list), settings, &mut out, &mut err, options);
    Output { code, out: String::from_utf8(out).unwrap(), err: String::from_utf8(err).unwrap() }
}

fn run(settings: &Settings, list: &[&str]) -> Output {
    run_opts(settings, list, &mut Options { now_ms: NOW, ..Options::default() })
}

/// The ids in the first column of a table, in order.
fn table_ids(out: &str) -> Vec<i64> {
    out.lines().filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect()
}

/// The ids of JSON lines, in order.
fn json_ids(out: &str) -> Vec<i64> {
    out.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_i64().unwrap()).collect()
}

#[test]
fn list_is_newest_first_with_a_readable_table() {
    let f = fixture();
    let o = run(&f.settings, &["list"]);
    assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
    assert_eq!(table_ids(&o.out), [5, 4, 3, 2, 1]);
    let header = o.out.lines().next().unwrap();
    assert!(header.contains("TIME (UTC)") && header.contains("STATUS"), "{header}");
    let row3 = o.out.lines().find(|l| l.trim_start().starts_with("3 ")).unwrap();
    assert!(row3.contains("2025-01-31T11:55:00.000Z"), "{row3}");
    assert!(row3.contains("429") && row3.contains("gpt-4o-mini → claude-haiku"), "{row3}");
    assert!(row3.contains("rate_limit: upstream said: slow down, please"), "{row3}");
    let row5 = o.out.lines().find(|l| l.trim_start().starts_with("5 ")).unwrap();
    assert!(row5.contains(" 500 ") && row5.contains(" 100 ") && row5.contains("5/6"), "{row5}");
    assert!(!o.out.contains("next page"), "{}", o.out);
}

#[test]
fn list_filters() {
    let f = fixture();
    let ids = |a: &[&str]| {
        let mut all = vec!["list", "--json"];
        all.extend_from_slice(a);
        let o = run(&f.settings, &all);
        assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
        json_ids(&o.out)
    };
    assert_eq!(ids(&["--status", "error"]), [4, 3]);
    assert_eq!(ids(&["--status", "429"]), [3]);
    assert_eq!(ids(&["--status", "5xx"]), [4]);
    assert_eq!(ids(&["--status", "200"]), [5, 2, 1]);
    assert_eq!(ids(&["--model", "claude-haiku"]), [3]);
    assert_eq!(ids(&["--stream"]), [4, 2]);
    assert_eq!(ids(&["--no-stream"]), [5, 3, 1]);
    assert_eq!(ids(&["--since", "2h"]), [5, 4, 3, 2]);
    assert_eq!(ids(&["--from", "2025-01-31T11:52:00Z", "--until", "2025-01-31T12:00:00Z"]), [3]);
    assert_eq!(ids(&["--until", &T0.to_string()]), [3, 2, 1]);
    assert_eq!(ids(&["--search", "slow down"]), [3]);
    assert_eq!(ids(&["--search", "question 2"]), [2]);

    let o = run(&f.settings, &["list", "--json", "--limit", "1"]);
    let first: Value = serde_json::from_str(o.out.lines().next().unwrap()).unwrap();
    assert_eq!(first["request_id"], "chatcmpl-0005");
    assert_eq!(first["latency_ms"], 500);
}

#[test]
fn list_pages_with_the_before_cursor() {
    let f = fixture();
    let o = run(&f.settings, &["list", "--limit", "2"]);
    assert_eq!(table_ids(&o.out), [5, 4]);
    assert!(o.out.contains("next page: --before 4"), "{}", o.out);
    let o = run(&f.settings, &["list", "--limit", "2", "--before", "4"]);
    assert_eq!(table_ids(&o.out), [3, 2]);
    assert!(o.out.contains("next page: --before 2"), "{}", o.out);
    let o = run(&f.settings, &["list", "--limit", "2", "--before", "2"]);
    assert_eq!(table_ids(&o.out), [1]);
    assert!(!o.out.contains("next page"), "{}", o.out);
    // With --json the cursor goes to stderr, keeping stdout one entry per line.
    let o = run(&f.settings, &["list", "--json", "--limit", "2"]);
    assert_eq!(json_ids(&o.out), [5, 4]);
    assert_eq!(o.err, "next page: --before 4\n");
}

#[test]
fn show_prints_metadata_and_pretty_bodies() {
    let f = fixture();
    let o = run(&f.settings, &["show", "2"]);
    assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
    assert!(o.out.contains("request id     chatcmpl-0002"), "{}", o.out);
    assert!(o.out.contains("2025-01-31T11:50:00.000Z"), "{}", o.out);
    assert!(o.out.contains("gpt-4o → claude-sonnet-4 (anthropic)"), "{}", o.out);
    // Both requests and the response, indented, keys in the order they were sent.
    let client = o.out.split("== client request ==\n").nth(1).unwrap();
    assert!(
        client.starts_with("{\n  \"model\": \"gpt-4o\",\n  \"messages\": [\n    {\n"),
        "{client}"
    );
    assert!(client.contains(r#""content": "Hello, \"world\"\nsecond line""#), "{client}");
    let upstream = o.out.split("== upstream request ==\n").nth(1).unwrap();
    assert!(
        upstream.starts_with("{\n  \"model\": \"claude-sonnet-4\",\n  \"system\""),
        "{upstream}"
    );
    let response = o.out.split("== response ==\n").nth(1).unwrap();
    assert!(response.contains("\n  \"object\": \"chat.completion\",\n"), "{response}");
    let headers = o.out.split("== request headers (redacted) ==\n").nth(1).unwrap();
    assert!(headers.contains("\"authorization\": \"[redacted]\""), "{headers}");
    assert!(!o.out.contains("sk-proxy-secret"));

    let o = run(&f.settings, &["show", "5"]);
    assert!(o.out.contains("dropped fields logprobs"), "{}", o.out);
    assert!(o.out.contains("== raw stream chunks ==\nevent: message_start\n"), "{}", o.out);

    let o = run(&f.settings, &["show", "3"]);
    assert!(o.out.contains("error type     rate_limit"), "{}", o.out);
    assert!(o.out.contains("error          upstream said: slow down, please"), "{}", o.out);
    assert!(o.out.contains("== response ==\n(empty)"), "{}", o.out);

    // --raw keeps the bodies as stored.
    let o = run(&f.settings, &["show", "2", "--raw"]);
    assert!(o.out.contains(&entries()[1].client_request), "{}", o.out);

    let o = run(&f.settings, &["show", "999"]);
    assert_eq!(o.code, ExitCode::FAILURE);
    assert_eq!(o.err, "uniproxy logs: no log entry with id 999\n");
}

#[test]
fn stats_on_known_data() {
    let f = fixture();
    let o = run(&f.settings, &["stats", "--json"]);
    assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
    let s: Value = serde_json::from_str(&o.out).unwrap();
    assert_eq!(s["requests"], 5);
    assert_eq!(s["errors"], 2);
    assert_eq!(s["error_rate"], 0.4);
    assert_eq!(s["prompt_tokens"], 45);
    assert_eq!(s["completion_tokens"], 66);
    // Latencies 100, 500, 1000, 2000, 3000; TTFTs 100, 200, 300 (nearest rank).
    assert_eq!(s["latency"], json!({"p50": 1000, "p90": 3000, "p99": 3000}));
    assert_eq!(s["ttft"], json!({"p50": 200, "p90": 300, "p99": 300}));

    let o = run(&f.settings, &["stats"]);
    assert!(o.out.contains("requests    5\n"), "{}", o.out);
    assert!(o.out.contains("errors      2 (40.0%)\n"), "{}", o.out);
    assert!(o.out.contains("prompt 45  completion 66  total 111"), "{}", o.out);
    assert!(o.out.contains("latency ms  p50 1000  p90 3000  p99 3000\n"), "{}", o.out);
    assert!(o.out.contains("ttft ms     p50 200  p90 300  p99 300\n"), "{}", o.out);

    // The last two hours, one model: entries 2, 4 and 5.
    let o = run(&f.settings, &["stats", "--json", "--since", "2h", "--model", "claude-sonnet-4"]);
    let s: Value = serde_json::from_str(&o.out).unwrap();
    assert_eq!(s["requests"], 3);
    assert_eq!(s["errors"], 1);
}

/// What the store keeps of an entry: its headers redacted.
fn stored(mut e: NewEntry) -> NewEntry {
    e.request_headers = redact_headers(&e.request_headers).into();
    e
}

#[test]
fn export_jsonl_round_trips_every_entry() {
    let f = fixture();
    let o = run(&f.settings, &["export", "--format", "jsonl"]);
    assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
    let lines: Vec<&str> = o.out.lines().collect();
    assert_eq!(lines.len(), 5);
    let mut expected: Vec<NewEntry> = entries().into_iter().map(stored).collect();
    expected.reverse(); // newest first
    for (line, want) in lines.iter().zip(&expected) {
        let got: NewEntry = serde_json::from_str(line).unwrap();
        assert_eq!(&got, want);
    }

    // To a file, with the filters of list.
    let file = f.path.with_file_name("errors.jsonl");
    let file_arg = file.to_str().unwrap();
    let o = run(&f.settings, &["export", "--format", "jsonl", "--status", "error", "-o", file_arg]);
    assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
    assert_eq!(o.out, "");
    assert_eq!(o.err, format!("exported 2 entries to {file_arg}\n"));
    assert_eq!(json_ids(&std::fs::read_to_string(&file).unwrap()), [4, 3]);
}

/// A small RFC 4180 reader, independent of the writer under test.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut records, mut record, mut field) = (Vec::new(), Vec::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(!quoted && field.is_empty() && record.is_empty(), "the CSV ends mid-record");
    records
}

#[test]
fn export_csv_quotes_commas_quotes_and_newlines() {
    let f = fixture();
    let o = run(&f.settings, &["export", "--format", "csv"]);
    assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
    let records = parse_csv(&o.out);
    assert_eq!(records.len(), 6, "a header and five entries");
    let header = &records[0];
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert!(records.iter().all(|r| r.len() == header.len()));
    let ids: Vec<&str> = records[1..].iter().map(|r| r[col("id")].as_str()).collect();
    assert_eq!(ids, ["5", "4", "3", "2", "1"]);
    let tricky = &records[4];
    assert_eq!(tricky[col("client_request")], entries()[1].client_request);
    assert!(tricky[col("client_request")].contains(r#""content":"Hello, \"world\"\nsecond line""#));
    assert_eq!(
        records[2][col("error_message")],
        "connection reset by peer\nwhile reading the body"
    );
    assert_eq!(tricky[col("received")], "2025-01-31T11:50:00.000Z");
    assert_eq!(records[3][col("error_message")], "upstream said: slow down, please");
    assert_eq!(records[1][col("dropped_fields")], r#"["logprobs"]"#);
    assert_eq!(records[1][col("ttft_ms")], "100");
    assert_eq!(records[3][col("ttft_ms")], "");
    // A field with a newline inside quotes is one field, not a broken row.
    assert!(
        o.out.contains("\"event: message_start\ndata: {\"\"type\"\":\"\"message_start\"\"}\n\n\"")
    );
}

#[test]
fn export_draws_a_progress_bar_on_a_terminal_for_large_exports() {
    let many: Vec<NewEntry> = (0..1_200)
        .map(|i| entry(i, T0 + i64::from(i), ["gpt-4o", "gpt-4o"], (10, Some(5)), false, 200))
        .collect();
    let f = fixture_with(&many);
    let mut options = Options { now_ms: NOW, err_is_terminal: true, ..Options::default() };
    let o = run_opts(&f.settings, &["export", "--format", "jsonl"], &mut options);
    assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
    assert_eq!(o.out.lines().count(), 1_200);
    assert!(o.err.starts_with("\r["), "{:?}", &o.err[..40]);
    assert!(o.err.ends_with("\r[=============================>] 1200/1200\n"), "{:?}", o.err);
    assert!(o.err.matches('\r').count() <= 101, "redrawn at most every 1%");

    // Not a terminal: no bar.
    let o = run(&f.settings, &["export", "--format", "csv"]);
    assert_eq!(o.err, "");
    assert_eq!(parse_csv(&o.out).len(), 1_201);
}

/// `--since 7d` takes a duration, so an operator writes `--older-than 30d` too: the same
/// 30 days, not an unreadable argument; anything else names what it takes.
#[test]
fn prune_older_than_takes_days_with_or_without_a_d() {
    let f = fixture();
    let plain = run(&f.settings, &["prune", "--older-than", "30", "--dry-run"]);
    let with_d = run(&f.settings, &["prune", "--older-than", "30d", "--dry-run"]);
    assert_eq!(with_d.code, ExitCode::SUCCESS, "{}", with_d.err);
    assert_eq!(with_d.out, plain.out);
    for bad in ["30h", "-5", "d", "1.5"] {
        let o = run(&f.settings, &["prune", "--older-than", bad, "--dry-run"]);
        assert_eq!(o.code, ExitCode::from(2), "{bad}");
        assert!(o.err.contains("not a number of days (30, or 30d)"), "{bad}: {}", o.err);
    }
    assert_eq!(count(&f.path), 5);
}

fn count(path: &Path) -> u64 {
    LogStore::open(path, StoreOptions { read_only: true, ..StoreOptions::default() })
        .unwrap()
        .count()
        .unwrap()
}

#[test]
fn prune_deletes_old_rows_and_reports_counts() {
    let f = fixture();
    let o = run(&f.settings, &["prune", "--older-than", "30", "--dry-run"]);
    assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
    assert_eq!(
        o.out,
        "would delete 1 entries (1 older than 30 days)\ndry run: nothing deleted; 5 entries stored\n"
    );
    assert_eq!(count(&f.path), 5);

    let o = run(&f.settings, &["prune", "--older-than", "30"]);
    assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
    assert!(
        o.out.starts_with("deleted 1 entries (1 older than 30 days)\ndatabase size "),
        "{}",
        o.out
    );
    assert!(o.out.ends_with("; 4 entries left\n"), "{}", o.out);
    assert_eq!(count(&f.path), 4);
    assert_eq!(json_ids(&run(&f.settings, &["list", "--json"]).out), [5, 4, 3, 2]);

    // The dry run counts what the real prune then deletes, limit by limit.
    let o = run(&f.settings, &["prune", "--older-than", "30", "--max-rows", "2", "--dry-run"]);
    assert!(
        o.out.starts_with("would delete 2 entries (0 older than 30 days, 2 beyond 2 rows)\n"),
        "{}",
        o.out
    );
    let o = run(&f.settings, &["prune", "--max-rows", "2"]);
    assert!(o.out.starts_with("deleted 2 entries (2 beyond 2 rows)\n"), "{}", o.out);
    assert_eq!(json_ids(&run(&f.settings, &["list", "--json"]).out), [5, 4]);

    // A limit of 0, which in the settings means none: refused, not every entry deleted.
    for option in ["--older-than", "--max-rows", "--max-bytes"] {
        let o = run(&f.settings, &["prune", option, "0"]);
        assert_eq!(o.code, ExitCode::from(2), "{option}");
        assert!(o.err.contains(&format!("{option} 0 would delete every entry")), "{}", o.err);
    }
    assert_eq!(count(&f.path), 2);

    // No limit given and none configured: a usage error.
    let o = run(&f.settings, &["prune"]);
    assert_eq!(o.code, ExitCode::from(2));
    assert!(o.err.contains("nothing to prune by"), "{}", o.err);
    // LOG_MAX_ROWS from the settings when no limit is given.
    let mut settings = f.settings.clone();
    settings.log_max_rows = 1;
    let o = run(&settings, &["prune", "--dry-run"]);
    assert!(o.out.starts_with("would delete 1 entries (1 beyond 1 rows)\n"), "{}", o.out);
}

/// Emptying the log (a secret pasted into a prompt, a test run's entries) is one command,
/// with the proxy running, rather than stopping it to delete the database file.
#[test]
fn prune_all_deletes_every_entry_and_takes_no_other_limit() {
    let f = fixture();
    let o = run(&f.settings, &["prune", "--all", "--dry-run"]);
    assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
    assert_eq!(
        o.out,
        "would delete 5 entries (every entry)\ndry run: nothing deleted; 5 entries stored\n"
    );
    for other in [["--older-than", "30"], ["--max-rows", "3"], ["--max-bytes", "1000"]] {
        let o = run(&f.settings, &["prune", "--all", other[0], other[1]]);
        assert_eq!(o.code, ExitCode::from(2), "{other:?}");
        assert!(
            o.err.contains(&format!("--all and {} cannot be used together", other[0])),
            "{}",
            o.err
        );
    }
    assert_eq!(count(&f.path), 5);
    let o = run(&f.settings, &["prune", "--all"]);
    assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
    assert!(o.out.starts_with("deleted 5 entries (every entry)\ndatabase size "), "{}", o.out);
    assert!(o.out.ends_with("; 0 entries left\n"), "{}", o.out);
    assert_eq!(count(&f.path), 0);
    let o = run(&f.settings, &["prune", "--max-rows", "0"]);
    assert!(o.err.contains("give at least 1, or --all to delete every entry"), "{}", o.err);
}

#[test]
fn the_dry_run_counts_by_age_as_the_prune_does_when_ids_are_out_of_age_order() {
    // Entry 1 is today's and small; entry 2, written after it (a spill file replayed), is a
    // day older and large. A byte budget that keeps one of them keeps the newer.
    let newer = entry(1, T0, ["gpt-4o", "claude-sonnet-4"], (100, None), false, 200);
    let mut older = entry(2, T0 - DAY, ["gpt-4o", "claude-sonnet-4"], (100, None), false, 200);
    older.response = chat_response("chatcmpl-0002", "gpt-4o", &"x".repeat(100_000));
    let f = fixture_with(&[newer, older]);
    let budget = "20000";
    let o = run(&f.settings, &["prune", "--max-bytes", budget, "--dry-run"]);
    assert!(o.out.starts_with("would delete 1 entries (1 beyond 20000 bytes)\n"), "{}", o.out);
    let o = run(&f.settings, &["prune", "--max-bytes", budget]);
    assert!(o.out.starts_with("deleted 1 entries (1 beyond 20000 bytes)\n"), "{}", o.out);
    assert_eq!(json_ids(&run(&f.settings, &["list", "--json"]).out), [1]);
}

#[test]
fn tail_shows_the_last_entries_oldest_first() {
    let f = fixture();
    let o = run(&f.settings, &["tail", "-n", "2"]);
    assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
    assert_eq!(table_ids(&o.out), [4, 5]);
    let o = run(&f.settings, &["tail", "--json"]);
    assert_eq!(json_ids(&o.out), [1, 2, 3, 4, 5]);
}

#[test]
fn tail_follow_prints_an_entry_written_after_it_started() {
    let f = fixture();
    let writer = LogStore::open(&f.path, StoreOptions::default()).unwrap();
    let mut late = entry(6, NOW, ["gpt-4o", "claude-sonnet-4"], (700, Some(90)), true, 200);
    late.error_message = Some("written while tail -f ran".into());
    let mut calls = Vec::new();
    let mut options = Options {
        now_ms: NOW,
        poll_interval: Duration::from_millis(10),
        stop_following: Box::new(|polls| {
            calls.push(polls);
            if polls == 1 {
                writer.insert(&late).unwrap();
            }
            polls >= 3
        }),
        ..Options::default()
    };
    let o = run_opts(&f.settings, &["tail", "-f", "-n", "1"], &mut options);
    drop(options);
    assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
    assert_eq!(calls, [1, 2, 3]);
    assert_eq!(table_ids(&o.out), [5, 6]);
    assert!(o.out.contains("written while tail -f ran"), "{}", o.out);
}

#[test]
fn a_database_from_an_older_build_is_a_clear_error_and_left_as_it_is() {
    let f = fixture();
    let older = uniproxy_logstore::SCHEMA_VERSION - 1;
    rusqlite::Connection::open(&f.path)
        .unwrap()
        .pragma_update(None, "user_version", older)
        .unwrap();
    let o = run(&f.settings, &["list"]);
    assert_eq!(o.code, ExitCode::FAILURE);
    assert_eq!(
        o.err,
        format!(
            "uniproxy logs: the log database at {} has schema version {older}, this build reads \
             {}: start the proxy once (it migrates the file), then run this again\n",
            f.path.display(),
            uniproxy_logstore::SCHEMA_VERSION
        )
    );
    let version: u32 = rusqlite::Connection::open(&f.path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, older, "reading does not migrate");
}

#[test]
fn a_missing_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::mock_defaults();
    settings.database_path = dir.path().join("nowhere.db");
    for command in
        [&["list"][..], &["stats"][..], &["show", "1"][..], &["prune", "--older-than", "1"][..]]
    {
        let o = run(&settings, command);
        assert_eq!(o.code, ExitCode::FAILURE, "{command:?}");
        assert_eq!(
            o.err,
            format!(
                "uniproxy logs: no log database at {} (DATABASE_URL); has the proxy run?\n",
                settings.database_path.display()
            )
        );
    }
    assert!(!settings.database_path.exists(), "reading must not create the database");
}

#[test]
fn bad_arguments_print_the_usage_and_exit_2() {
    let f = fixture();
    for (command, message) in [
        (&[][..], "missing the command"),
        (&["frobnicate"][..], "unknown command `frobnicate`"),
        (&["list", "--follow"][..], "--follow does not apply to `logs list`"),
        (
            &["list", "--since", "2h", "--from", "2025-01-01"][..],
            "--since and --from cannot be used together",
        ),
        (&["list", "--status", "2xxx"][..], "is not a status filter"),
        (&["list", "--since", "yesterday"][..], "is not a duration"),
        (&["show"][..], "`logs show` needs an entry ID"),
        (&["show", "abc"][..], "cannot parse argument"),
        (&["export"][..], "needs --format jsonl or --format csv"),
        (&["export", "--format", "xml"][..], "`xml` is not one of jsonl, csv"),
        (&["list", "extra"][..], "unexpected argument `extra`"),
    ] {
        let o = run(&f.settings, command);
        assert_eq!(o.code, ExitCode::from(2), "{command:?}");
        assert!(o.err.contains(message), "{command:?}: {}", o.err);
        assert!(o.err.contains("USAGE:"), "{command:?}");
        assert_eq!(o.out, "");
    }
    let o = run(&f.settings, &["--help"]);
    assert_eq!(o.code, ExitCode::SUCCESS);
    assert!(o.out.starts_with("uniproxy logs"));
}

/// The real binary, with only the settings given here.
fn binary(dir: &Path, args: &[&str], database_url: Option<&str>) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_uniproxy"));
    command.args(args).current_dir(dir);
    for name in
        ["UNIPROXY_CONFIG", "DATABASE_URL", "UNIPROXY_DATABASE_URL", "TYPE", "UNIPROXY_TYPE"]
    {
        command.env_remove(name);
    }
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    command.output().unwrap()
}

#[test]
fn the_binary_reads_database_url_and_config_files() {
    let f = fixture();
    let dir = f.path.parent().unwrap();
    let url = format!("sqlite:///{}", f.path.display());
    let o = binary(dir, &["logs", "list", "--status", "error"], Some(&url));
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(table_ids(&String::from_utf8(o.stdout).unwrap()), [4, 3]);

    // --config before or after `logs`.
    let toml = dir.join("uniproxy.toml");
    std::fs::write(&toml, format!("database_url = \"{url}\"\n")).unwrap();
    let toml = toml.to_str().unwrap();
    for args in [
        &["--config", toml, "logs", "tail", "--json"][..],
        &["logs", "tail", "--json", "--config", toml][..],
    ] {
        let o = binary(dir, args, None);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(json_ids(&String::from_utf8(o.stdout).unwrap()), [1, 2, 3, 4, 5]);
    }

    // A missing database, and bad arguments.
    let o = binary(dir, &["logs", "stats"], Some("sqlite:///missing.db"));
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(o.stderr).unwrap(),
        "uniproxy logs: no log database at missing.db (DATABASE_URL); has the proxy run?\n"
    );
    let o = binary(dir, &["logs", "list", "--limit", "many"], Some(&url));
    assert_eq!(o.status.code(), Some(2));
    // Bad settings still exit 2.
    let o = binary(dir, &["logs", "list"], Some("postgres://db/logs"));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("DATABASE_URL"));
}

#[test]
fn import_loads_spilled_entries_once_and_keeps_what_it_cannot_read() {
    let f = fixture();
    let mut settings = f.settings.clone();
    settings.log_file_path = f.path.with_file_name("proxy.log");
    let spill = uniproxy::state::spill_path(&settings);

    let o = run(&settings, &["import"]);
    assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
    assert_eq!(o.out, format!("nothing to import: no file at {}\n", spill.display()));

    // What the proxy's writer spills: two new entries and one the database has (entry 5,
    // spilled after a write that failed late), then a line cut off by a crash.
    let mut spilled = vec![
        entry(6, T0 + MIN, ["gpt-4o", "claude-sonnet-4"], (500, None), false, 200),
        entry(7, T0 + 2 * MIN, ["gpt-4o", "claude-sonnet-4"], (500, None), false, 200),
    ];
    spilled.push(entries().pop().unwrap());
    let mut writer = uniproxy_logstore::JsonLinesSpill::new(&spill);
    uniproxy_logstore::Spill::spill(&mut writer, &spilled).unwrap();
    let mut file = std::fs::OpenOptions::new().append(true).open(&spill).unwrap();
    std::io::Write::write_all(&mut file, b"{\"request_id\":\"chatcmpl-0008\",\"recei").unwrap();
    drop(file);

    let o = run(&settings, &["import"]);
    // What could be read is stored; the rest is kept, and the exit says it was not all.
    assert_eq!(o.code, ExitCode::FAILURE, "{}", o.err);
    let kept = format!("{}.importing-{NOW}", spill.display());
    assert_eq!(
        o.out,
        format!(
            "imported 2 entries from {}; 1 were stored already; 1 unreadable lines, kept in \
             {kept}\n",
            spill.display()
        )
    );
    assert!(o.err.starts_with(&format!("line 4 of {kept} is not a log entry")), "{}", o.err);
    assert!(o.err.contains(&format!("1 lines of {kept} are not log entries")), "{}", o.err);
    assert_eq!(count(&f.path), 7);
    let shown = run(&settings, &["show", "7", "--json"]);
    let e: Value = serde_json::from_str(&shown.out).unwrap();
    assert_eq!(e["request_id"], "chatcmpl-0007", "{e}");
    assert!(!spill.exists(), "moved aside: a running proxy spills into a new file");

    // Again, from the kept file: everything readable is stored already.
    let o = run(&settings, &["import", &kept]);
    assert_eq!(o.code, ExitCode::FAILURE, "{}", o.err);
    assert!(o.out.starts_with(&format!("imported 0 entries from {kept}; 3 were stored already")));
    // A file named that is not there is an error, not "nothing to import".
    let o = run(&settings, &["import", "/nonexistent/spill.jsonl"]);
    assert_eq!(o.code, ExitCode::FAILURE);
    assert!(o.err.contains("cannot read /nonexistent/spill.jsonl"), "{}", o.err);
    assert!(o.err.contains("No such file or directory"), "the system's words: {}", o.err);
    assert_eq!(count(&f.path), 7);

    // A clean file is removed once it is stored (and moved aside beside the kept one, not
    // over it, though the clock reads the same).
    let late = [entry(9, T0 + 3 * MIN, ["gpt-4o", "claude-sonnet-4"], (500, None), false, 200)];
    uniproxy_logstore::Spill::spill(&mut writer, &late).unwrap();
    let o = run(&settings, &["import"]);
    assert_eq!(o.out, format!("imported 1 entries from {}\n", spill.display()), "{}", o.err);
    assert_eq!(count(&f.path), 8);
    let left: Vec<_> = std::fs::read_dir(f.path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("spill"))
        .collect();
    assert_eq!(
        left,
        [format!("proxy.log.spill.jsonl.importing-{NOW}")],
        "the kept file only: {}",
        o.out
    );

    // `import` takes one file and no options.
    assert_eq!(run(&settings, &["import", "a", "b"]).code, ExitCode::from(2));
    assert_eq!(run(&settings, &["import", "--json"]).code, ExitCode::from(2));
}

#[test]
fn what_a_client_wrote_cannot_drive_the_terminal_or_the_spreadsheet() {
    // A model name with a colour, a terminal title and a line break, and a body that was no
    // JSON (stored as it came) with an escape in it.
    let model = "\u{1b}[31mRED\u{1b}[0m\u{1b}]0;pwned\u{7}\nnl";
    let mut e = entry(1, NOW - 1_000, [model, "claude"], (100, None), false, 400);
    e.client_request = "not json \u{1b}[2J".into();
    let formula = entry(2, NOW - 500, ["=cmd|' /C calc'!A0", "claude"], (100, None), false, 200);
    let f = fixture_with(&[e, formula]);
    for args in [&["list"][..], &["tail"][..], &["show", "1"][..]] {
        let o = run(&f.settings, args);
        assert_eq!(o.code, ExitCode::SUCCESS, "{args:?}: {}", o.err);
        assert!(!o.out.contains(['\u{1b}', '\u{7}']), "{args:?}: {:?}", o.out);
        assert!(o.out.contains("\\x1b[31mRED"), "{args:?}: {:?}", o.out);
    }
    // One row a line: the header and the two entries.
    assert_eq!(run(&f.settings, &["list"]).out.lines().count(), 3);
    let o = run(&f.settings, &["export", "--format", "csv"]);
    assert!(o.out.contains(",'=cmd|' /C calc'!A0,"), "{}", o.out);
}

/// A search the store cannot run (SQLite refuses a `LIKE` pattern that long) is the
/// operator's to shorten, said as such, not SQLite's error.
#[test]
fn a_search_longer_than_the_store_can_run_is_refused() {
    let f = fixture();
    let longest = "a".repeat(uniproxy_logstore::MAX_SEARCH_BYTES);
    let o = run(&f.settings, &["list", "--search", &longest]);
    assert_eq!(o.code, ExitCode::SUCCESS, "{}", o.err);
    let o = run(&f.settings, &["list", "--search", &format!("{longest}a")]);
    assert_eq!(o.code, ExitCode::from(2));
    assert!(o.err.contains("--search is 7001 bytes, longer than the 7000"), "{}", o.err);
    assert!(!o.err.contains(&"a".repeat(100)), "the search is not echoed: {}", o.err);
    assert!(!o.err.contains("LIKE"), "{}", o.err);
}
