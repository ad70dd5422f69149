//! The real `uniproxy` binary: graceful shutdown on SIGTERM, and the exit status for bad
//! settings.
//!
//! Cargo builds a binary for tests only in the binary's own package, so these tests look for
//! it next to their own executable (`target/<profile>/uniproxy`). `cargo test --workspace`
//! builds it before running any test (the bin package has integration tests of its own);
//! `cargo test -p uniproxy-e2e` alone may find a stale one.

// Helpers outside `#[test]` functions fail the test the same way; clippy's test exemption
// does not reach them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use tokio::net::TcpStream;

/// `target/<profile>/uniproxy`, found from this test's own path
/// (`target/<profile>/deps/process-HASH`).
fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let bin = profile_dir.join(format!("uniproxy{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the uniproxy binary is missing at {}: run `cargo test --workspace` (which builds it first) or `cargo build -p uniproxy` (with the same \
         profile and CARGO_TARGET_DIR) before these tests",
        bin.display()
    );
    bin
}

/// The binary with only the given settings: no inherited environment, and a fresh folder as
/// the working directory so that no `.env` is read.
fn command(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.current_dir(dir).env_clear().stdin(Stdio::null()).stdout(Stdio::null());
    cmd.env("DATABASE_URL", dir.join("proxy.db"));
    cmd.env("LOG_FILE_PATH", dir.join("logs").join("proxy.log"));
    cmd.envs(env.iter().copied());
    cmd
}

/// A port that was free a moment ago.
async fn free_port() -> u16 {
    unused_addr().await.port()
}

/// The binary with `env` on a port that was free a moment ago, once its `/health` answers;
/// its stderr goes to `dir/stderr.txt`. The workspace's other tests bind ports of their own
/// meanwhile, and one may take the port between the look and the bind (the binary then exits
/// 1, "cannot listen"), or answer a probe meant for the binary: then it starts again on
/// another port. Only this binary's `/health` counts. HOST is 127.0.0.1 unless `env` sets it
/// (to `localhost`, `0.0.0.0`: it is probed on 127.0.0.1, and on ::1 for `localhost`).
async fn spawn_ready(dir: &Path, env: &[(&str, &str)]) -> (KillOnDrop, SocketAddr) {
    let stderr_text = || std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
    for _ in 0..5 {
        let port = free_port().await;
        let port_text = port.to_string();
        let mut env = env.to_vec();
        if !env.iter().any(|(name, _)| *name == "HOST") {
            env.push(("HOST", "127.0.0.1"));
        }
        env.push(("PORT", port_text.as_str()));
        let stderr = std::fs::File::create(dir.join("stderr.txt")).unwrap();
        let mut child = KillOnDrop(command(dir, &env).stderr(stderr).spawn().unwrap());
        let v4: SocketAddr = ([127, 0, 0, 1], port).into();
        let v6: SocketAddr = (std::net::Ipv6Addr::LOCALHOST, port).into();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                let text = stderr_text();
                assert!(
                    status.code() == Some(1) && text.contains("cannot listen"),
                    "uniproxy exited early ({status}): {text}"
                );
                break;
            }
            for addr in [v4, v6] {
                if answers_health(addr).await && child.0.try_wait().unwrap().is_none() {
                    return (child, addr);
                }
            }
            assert!(Instant::now() < deadline, "uniproxy did not start: {}", stderr_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("five ports were taken before uniproxy could bind them: {}", stderr_text());
}

/// Whether a uniproxy answers `GET /health` at `addr` within a second: not whatever else
/// may hold the port, which may accept and never answer.
async fn answers_health(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let get = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        s.write_all(get.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.ok()?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        Some(answer.starts_with("HTTP/1.1 200") && answer.contains("\"uptime_seconds\""))
    };
    tokio::time::timeout(Duration::from_secs(1), probe).await.ok().flatten().unwrap_or(false)
}

/// Waits for the process to exit, at most `within`; kills it and fails the test otherwise.
async fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not exit within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kills the child when the test fails half-way, so that no server outlives it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let mock = MockUpstream::always(
        Reply::json(200, &completion("slow answer")).after(Duration::from_secs(2)),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let base_url = format!("{}/v1", mock.url());
    let env = [("TYPE", "openai"), ("BASE_URL", &base_url), ("API_KEY", "k"), ("ACTUAL_NAME", "m")];
    // Ready when /health answers (the accept loop, and with it the signal handler, runs).
    let (mut child, addr) = spawn_ready(dir.path(), &env).await;
    let stderr_text = || std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap_or_default();
    let health =
        support::send(addr, request(http::Method::GET, "/health", bytes::Bytes::new())).await;
    assert_eq!(health.json()["model"], "m");

    let in_flight = tokio::spawn(support::send(
        addr,
        post_request("/v1/chat/completions", &chat_request("x", false)),
    ));
    mock.wait_for_requests(1).await;
    let pid = child.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success(), "kill -TERM {pid} failed");

    // New connections are refused soon after the signal, while the request is still waiting
    // for its slow upstream.
    let signalled = Instant::now();
    loop {
        match TcpStream::connect(addr).await {
            // Refused once the listener is closed; reset when the connect raced the close
            // (the kernel had the handshake half done when the listening socket went away).
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                break;
            }
            Err(e) => panic!("unexpected connect error: {e}"),
            Ok(_) => {
                assert!(
                    signalled.elapsed() < Duration::from_millis(1500),
                    "still accepting connections 1.5 s after SIGTERM"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(!in_flight.is_finished(), "the slow request should still be in flight");

    let resp = in_flight.await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let body: Value = resp.json();
    assert_eq!(body["choices"][0]["message"]["content"], "slow answer");
    assert_eq!(mock.only_request().json()["model"], "m");

    let status = wait_exit(&mut child.0, PATIENCE).await;
    assert!(status.success(), "exit status {status}: {}", stderr_text());
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sighup_stops_it_as_gracefully_as_sigterm() {
    // A closed terminal or SSH session sends SIGHUP: the records must not go with it.
    let mock = MockUpstream::always(Reply::json(200, &completion("answered"))).await;
    let dir = tempfile::tempdir().unwrap();
    let base_url = format!("{}/v1", mock.url());
    let env = [("TYPE", "openai"), ("BASE_URL", &base_url), ("API_KEY", "k"), ("ACTUAL_NAME", "m")];
    let (mut child, addr) = spawn_ready(dir.path(), &env).await;
    let resp =
        support::send(addr, post_request("/v1/chat/completions", &chat_request("x", false))).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let status = wait_exit(&mut child.0, PATIENCE).await;
    assert_eq!(status.code(), Some(0), "{status}");
    let options = uniproxy_logstore::StoreOptions { read_only: true, ..Default::default() };
    let store = uniproxy_logstore::LogStore::open(&dir.path().join("proxy.db"), options).unwrap();
    assert_eq!(store.count().unwrap(), 1);
    let log = std::fs::read_to_string(dir.path().join("logs").join("proxy.log")).unwrap();
    assert!(log.contains("answered"), "the JSON log has the request: {log}");
}

#[tokio::test]
async fn the_open_files_limit_is_raised_to_the_hard_one() {
    // The usual soft limit (1,024) lets a thousand idle clients lock everyone else out.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().await.to_string();
    let stderr = std::fs::File::create(dir.path().join("stderr.txt")).unwrap();
    let script =
        r#"hard=$(ulimit -Hn); ulimit -Sn 256 || exit 3; echo "hard=$hard" >&2; exec "$0""#;
    let child = Command::new("/bin/sh")
        .args(["-c", script, binary().to_str().unwrap()])
        .current_dir(dir.path())
        .env_clear()
        .env("DATABASE_URL", dir.path().join("proxy.db"))
        .env("LOG_FILE_PATH", dir.path().join("logs").join("proxy.log"))
        .env("HOST", "127.0.0.1")
        .env("PORT", &port)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let text = || std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap_or_default();
    let deadline = Instant::now() + PATIENCE;
    while !text().contains("uniproxy listening") {
        assert!(child.0.try_wait().unwrap().is_none(), "exited: {}", text());
        assert!(Instant::now() < deadline, "did not start: {}", text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = text();
    let number = |after: &str| -> Option<u64> {
        let rest = &text[text.find(after)? + after.len()..];
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let open = number("open_files: ").unwrap_or_else(|| panic!("no open_files in {text}"));
    match number("hard=") {
        Some(hard) => assert_eq!(open, hard, "{text}"),
        None => assert!(text.contains("hard=unlimited") && open > 256, "{text}"),
    }
    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(wait_exit(&mut child.0, PATIENCE).await.success());
}

#[tokio::test]
async fn bad_settings_exit_2_naming_each_setting_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let child = command(
        dir.path(),
        &[("TYPE", "bogus"), ("PORT", "notaport"), ("ENABLED", "maybe"), ("HOST", "127.0.0.1")],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut child = KillOnDrop(child);
    let status = wait_exit(&mut child.0, PATIENCE).await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    for setting in ["TYPE", "PORT", "ENABLED"] {
        assert!(stderr.contains(setting), "stderr does not name {setting}: {stderr}");
    }
    for value in ["bogus", "notaport", "maybe"] {
        assert!(stderr.contains(value), "stderr does not show the value {value:?}: {stderr}");
    }
    assert!(!stderr.contains("listening"), "{stderr}");
    assert!(!dir.path().join("logs").exists(), "nothing was started, not even the log file");

    // With a valid PORT, the bad TYPE and ENABLED still stop the start before the port is
    // bound: nothing ever accepts a connection there.
    let port = free_port().await;
    let port_text = port.to_string();
    let child = command(
        dir.path(),
        &[("TYPE", "bogus"), ("PORT", &port_text), ("ENABLED", "maybe"), ("HOST", "127.0.0.1")],
    )
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut child = KillOnDrop(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        assert!(TcpStream::connect(addr).await.is_err(), "the port was bound despite bad settings");
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the process did not exit");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(status.code(), Some(2));
}

#[test]
fn logs_help_shows_where_the_settings_are_broken() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "API_KEY=\"sk-unterminated\nPORT=1\n").unwrap();
    for args in [&["logs", "--help"][..], &["logs", "help"][..]] {
        let o = command(dir.path(), &[]).args(args).stdout(Stdio::piped()).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("USAGE"), "{args:?}");
    }
    // Any other command reads the settings, and says what is wrong with them.
    let o = command(dir.path(), &[]).args(["logs", "list"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains(".env"));
}

#[tokio::test]
async fn only_a_proxy_open_beyond_loopback_without_keys_is_warned_about() {
    for (host, warned) in [("localhost", false), ("127.0.0.1", false), ("0.0.0.0", true)] {
        let dir = tempfile::tempdir().unwrap();
        let (_proxy, _) = spawn_ready(dir.path(), &[("HOST", host)]).await;
        // The start-up lines go through the logger's thread: the mock's warning comes last.
        let deadline = Instant::now() + PATIENCE;
        let stderr = loop {
            let text = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap();
            if text.contains("no TYPE configured") || Instant::now() > deadline {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(stderr.contains("non-loopback address"), warned, "HOST={host}: {stderr}");
    }
}

#[tokio::test]
async fn a_second_proxy_on_a_port_in_use_exits_1_and_the_first_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, addr) = spawn_ready(dir.path(), &[]).await;
    let port = addr.port().to_string();
    let env = [("HOST", "127.0.0.1"), ("PORT", port.as_str())];
    let health = || support::send(addr, request(http::Method::GET, "/health", bytes::Bytes::new()));

    // Each runtime thread has a socket of its own on the port (SO_REUSEPORT on Linux); a
    // second proxy must not slip in beside them and take a share of the connections.
    let other = tempfile::tempdir().unwrap();
    let second = command(other.path(), &env).stderr(Stdio::piped()).spawn().unwrap();
    let mut second = KillOnDrop(second);
    let status = wait_exit(&mut second.0, PATIENCE).await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{stderr}");
    for _ in 0..8 {
        assert_eq!(health().await.status, 200, "the first proxy answers every connection");
    }
    assert!(first.0.try_wait().unwrap().is_none(), "the first proxy still runs");
}

#[tokio::test]
async fn an_old_services_database_at_database_url_is_left_alone_and_the_log_kept_beside_it() {
    // An old `.env`'s DATABASE_URL, with the old service's file there: its own `requests`.
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("proxy.db");
    let conn = rusqlite::Connection::open(&old).unwrap();
    conn.execute_batch(
        "CREATE TABLE requests (id INTEGER PRIMARY KEY, created_at TEXT, prompt TEXT);
         INSERT INTO requests (created_at, prompt) VALUES ('2025-01-01', 'hi');",
    )
    .unwrap();
    drop(conn);
    let (proxy, addr) = spawn_ready(dir.path(), &[]).await;
    let asked =
        support::send(addr, post_request("/v1/chat/completions", &chat_request("a", false)));
    assert_eq!(asked.await.status, 200);
    let own = dir.path().join("proxy.uniproxy.db");
    let options = uniproxy_logstore::StoreOptions { read_only: true, ..Default::default() };
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stored = uniproxy_logstore::LogStore::open(&own, options.clone())
            .and_then(|s| s.list(&uniproxy_logstore::Query::default()));
        if stored.is_ok_and(|page| page.items.len() == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "no entry in {}", own.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The start-up warning goes through the logger's thread: it may come after the entry.
    let stderr = loop {
        let text = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap();
        if text.contains("another program's database") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        stderr.contains("another program's database") && stderr.contains("requests"),
        "{stderr}"
    );
    // The old file is as it was: one table, one row, no schema version.
    let conn = rusqlite::Connection::open(&old).unwrap();
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(count("SELECT count(*) FROM sqlite_schema"), 1);
    assert_eq!(count("SELECT count(*) FROM requests"), 1);
    assert_eq!(count("PRAGMA user_version"), 0);
    // The logs commands read the same file as the proxy.
    let o =
        command(dir.path(), &[]).args(["logs", "list", "--json"]).stdout(Stdio::piped()).output();
    let o = o.unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);
    drop(proxy);
}

#[tokio::test]
async fn entries_left_in_the_spill_files_are_loaded_at_start() {
    let dir = tempfile::tempdir().unwrap();
    // Left by an earlier run, written as the proxy's writer spills: the spill file, and one
    // an interrupted replay had moved aside, which holds an entry the database has already.
    let spill = dir.path().join("logs").join("proxy.log.spill.jsonl");
    let aside = dir.path().join("logs").join("proxy.log.spill.jsonl.importing-1738324800500");
    let entry = |id: &str| uniproxy_logstore::NewEntry {
        request_id: id.into(),
        received_ms: 1_738_324_800_000,
        finished_ms: 1_738_324_801_000,
        status: 200,
        ..uniproxy_logstore::NewEntry::default()
    };
    let mut spilled = uniproxy_logstore::JsonLinesSpill::new(&spill);
    uniproxy_logstore::Spill::spill(&mut spilled, &[entry("chatcmpl-1"), entry("chatcmpl-2")])
        .unwrap();
    uniproxy_logstore::Spill::spill(
        &mut uniproxy_logstore::JsonLinesSpill::new(&aside),
        &[entry("chatcmpl-0"), entry("chatcmpl-1")],
    )
    .unwrap();
    let db = dir.path().join("proxy.db");
    let store =
        uniproxy_logstore::LogStore::open(&db, uniproxy_logstore::StoreOptions::default()).unwrap();
    store.insert(&entry("chatcmpl-0")).unwrap();
    drop(store);

    let port = free_port().await.to_string();
    let env = [("HOST", "127.0.0.1"), ("PORT", port.as_str())];
    let child = command(dir.path(), &env).stderr(Stdio::piped()).spawn().unwrap();
    let mut child = KillOnDrop(child);
    let deadline = Instant::now() + PATIENCE;
    // Each file is moved aside (the spill file under a new name), loaded, then removed.
    let logs = dir.path().join("logs");
    while !spill_files(&logs).is_empty() {
        assert!(child.0.try_wait().unwrap().is_none(), "the proxy exited");
        let left = spill_files(&logs);
        assert!(Instant::now() < deadline, "the spill files are still there: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let options = uniproxy_logstore::StoreOptions { read_only: true, ..Default::default() };
    let store = uniproxy_logstore::LogStore::open(&db, options).unwrap();
    let page = store.list(&uniproxy_logstore::Query::default()).unwrap();
    let mut ids: Vec<_> = page.items.into_iter().map(|e| e.request_id).collect();
    ids.sort();
    assert_eq!(ids, ["chatcmpl-0", "chatcmpl-1", "chatcmpl-2"], "each entry once");
    // SIGTERM, so that the buffered stderr is written before the exit.
    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(wait_exit(&mut child.0, PATIENCE).await.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    let loaded: Vec<&str> =
        stderr.lines().filter(|l| l.contains("loaded the log entries spilled")).collect();
    assert_eq!(loaded.len(), 2, "{stderr}");
    // The file set aside first (chatcmpl-0 stored already), then the spill file (chatcmpl-1
    // loaded from the first).
    for (line, file) in loaded.iter().zip([&aside, &spill]) {
        assert!(line.contains("stored: 1") && line.contains("already_stored: 1"), "{line}");
        assert!(line.contains(&format!("file: {}", file.display())), "{line}");
    }
}
