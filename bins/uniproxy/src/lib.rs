//! The uniproxy server: hyper 1.x on tokio, wiring the translator, the log store and the
//! settings together. Its own code is HTTP plumbing; platform differences live in
//! `uniproxy-translate`.
//!
//! Start with [`serve`]; `main.rs` only reads the settings and calls it.

pub mod admin;
pub mod chat;
pub mod connection;
pub mod error;
pub mod listen;
pub mod logging;
pub mod logs_cmd;
pub mod metrics;
pub mod outbound;
pub mod pool;
pub mod record;
pub mod relay;
mod reqlog;
pub mod retry;
pub mod routes;
pub mod state;
pub mod ui;
pub mod upstream;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use slog::{error, info, warn};
use tokio::net::TcpListener;

pub use state::AppState;

/// How long in-flight requests get to finish after a shutdown signal.
pub const GRACE_PERIOD: Duration = Duration::from_secs(30);

/// How long a client may take to send its request head (against slowloris); the default of
/// [`AppState::header_read_timeout`].
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests finish
/// (for at most [`AppState::grace_period`], [`GRACE_PERIOD`] unless a test changed it); the
/// requests still in flight then are cut off, and recorded as such.
///
/// # Errors
/// Only when the listener itself fails; a failing connection is logged and dropped.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let client = state.new_client();
    serve_with(state, listener, shutdown, client, true).await
}

/// [`serve`] for one of several runtime threads sharing a listener: `client` is this thread's
/// upstream pool, and only one thread runs the log store's retention job (`maintenance`).
///
/// # Errors
/// Only when the listener itself fails.
pub async fn serve_with(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    client: upstream::Client,
    maintenance: bool,
) -> std::io::Result<()> {
    let maintenance = maintenance.then(|| {
        (tokio::spawn(retention(state.clone())), tokio::spawn(watch_store(state.clone())))
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper closes an idle HTTP/1 connection when its next head does not come within the
    // header read timeout; an idle HTTP/2 connection gets as long (`idle_for` below).
    builder.http1().timer(TokioTimer::new()).header_read_timeout(state.header_read_timeout);
    // HTTP/2's limits are hyper's and h2's defaults (16 KiB of headers, 20 streams reset
    // before they were accepted, 1,024 reset for errors, 400 KiB of send buffer a stream),
    // but for the streams a connection may open (hyper's 200 is "not part of its stability")
    // and pings: without them a peer that vanished without a word holds its connection
    // until the request's own timeouts end its streams.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .keep_alive_interval(state.header_read_timeout)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let builder = Arc::new(builder);
    // Shared by this thread's connections and their requests: a clone of the client itself
    // (hyper-util's client, the pool, the parsed upstream) cost ~0.4k instructions a request.
    let client = Arc::new(client);
    // Tells connections still waiting for their first byte that the server is stopping.
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    // The open connections, so that those still open when the grace period is over are cut
    // off here, and their requests recorded, before this returns.
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(state.log, "accept failed"; "error" => %e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // The set keeps only open connections.
        while connections.try_join_next().is_some() {}
        let first_byte_within = state.header_read_timeout;
        let send_timeout = state.settings.client_timeout;
        let state = state.clone();
        let client = client.clone();
        let peer = peer.to_string();
        let cut = connection::ConnectionCut::default();
        let cut_here = cut.clone();
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            // An HTTP/2 stream counts as open until its answer's body ends (HTTP/1 needs no
            // count: hyper itself times out an idle connection).
            let open = (req.version() == hyper::Version::HTTP_2).then(|| cut_here.open_stream());
            let arrival = routes::Arrival::new(
                state.clone(),
                req,
                Some(peer.clone()),
                Some(cut_here.clone()),
            );
            let client = client.clone();
            async move {
                let response = arrival.handle(&client).await;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| connection::Counted::new(body, open)),
                )
            }
        });
        let builder = builder.clone();
        let idle_after = first_byte_within;
        let mut closing = closing_rx.clone();
        connections.spawn(async move {
            // hyper's header read timeout starts only once it knows the HTTP version, and the
            // auto builder waits for the bytes that tell with no timeout at all: a client that
            // connects and sends nothing, or only the start of HTTP/2's preface, would hold
            // its socket for ever.
            let h2 = tokio::select! {
                told = tokio::time::timeout(first_byte_within, version_told(&stream)) => {
                    match told {
                        Ok(Ok(Some(h2))) => h2,
                        _ => return,
                    }
                }
                _ = closing.wait_for(|c| *c) => return,
            };
            let io = connection::ClientIo::new(stream, send_timeout, cut.clone());
            let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service).into_owned());
            // A client that resets its connection is not the server's problem. A stream
            // whose client stopped reading past its deadline is cut (dropping the connection);
            // a client that takes nothing for CLIENT_TIMEOUT fails its connection's writes.
            let idle = async {
                if h2 {
                    cut.idle_for(idle_after).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            let idle = tokio::select! {
                _ = conn.as_mut() => return,
                () = cut.wait() => return,
                _ = closing.wait_for(|c| *c) => false,
                () = idle => true,
            };
            // The server is stopping, or the HTTP/2 connection idle: no new request, and
            // those in flight finish (HTTP/2's GOAWAY). A request the client sent before it
            // saw the GOAWAY is still taken (the first GOAWAY of a graceful shutdown names
            // the last possible stream) and answered; a connection that then stays idle as
            // long again without closing is dropped.
            conn.as_mut().graceful_shutdown();
            let bound = async {
                if idle {
                    cut.idle_for(idle_after).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = conn => {}
                () = cut.wait() => {}
                () = bound => {}
            }
        });
    }
    let _ = closing.send(true);
    drop(listener);
    if let Some((retention, watch)) = maintenance {
        retention.abort();
        watch.abort();
    }
    info!(state.log, "shutting down: finishing in-flight requests");
    // Each connection, told by `closing`, stops taking requests and ends once those in flight
    // are answered.
    tokio::select! {
        () = async { while connections.join_next().await.is_some() {} } => {
            info!(state.log, "all connections closed");
        }
        () = tokio::time::sleep(state.grace_period) => {
            warn!(state.log, "grace period over; closing the remaining connections");
            // A request waiting on the upstream answers 503 and a stream ends with an error
            // event, recorded as cut off (`chat::Pending`, `SseRelay`); a moment to write
            // them, then what is left is dropped (a request's dropped future records it too).
            state.cut_off_in_flight();
            let _ = tokio::time::timeout(CUT_OFF_WRITES, async {
                while connections.join_next().await.is_some() {}
            })
            .await;
            connections.abort_all();
            while connections.join_next().await.is_some() {}
        }
    }
    Ok(())
}

/// How long the answers of requests cut off at the end of the grace period get to be written.
const CUT_OFF_WRITES: Duration = Duration::from_millis(500);

/// The HTTP/2 streams one connection may have open at once (nginx's
/// `http2_max_concurrent_streams`).
const H2_MAX_STREAMS: u32 = 128;

/// How long an HTTP/2 client has to answer a ping before its connection is closed.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// HTTP/2's connection preface, which a client speaking HTTP/2 without TLS sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits until the bytes at the start of `stream` tell its HTTP version, as hyper's auto
/// builder reads it: the whole HTTP/2 preface, or a first byte that is not the preface's.
/// Whether it is HTTP/2; `None` when the client closes first. Any HTTP/1 request tells at its
/// first byte; only a client that stops within the preface waits here, looked at again every
/// 10 ms.
async fn version_told(stream: &tokio::net::TcpStream) -> std::io::Result<Option<bool>> {
    let mut start = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut start).await?;
        if n == 0 {
            return Ok(None);
        }
        if start[..n] != H2_PREFACE[..n] {
            return Ok(Some(false));
        }
        if n == start.len() {
            return Ok(Some(true));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How often the log store's state is read, to log its changes.
const STORE_WATCH_EVERY: Duration = Duration::from_secs(1);

/// Logs the log store's changes of state, which `/health` shows too: its database failing
/// (records go to the spill file), nothing writable at all (records wait in memory, and chat
/// requests are refused once the queue is full), and each recovery. What was spilled is
/// loaded into the database at start and whenever the database is written again
/// ([`SpillReplay`]).
async fn watch_store(state: Arc<AppState>) {
    let spill = state::spill_path(&state.settings).display().to_string();
    let (mut db_ok, mut stalled, mut reopens) = (true, false, 0);
    let store_path = state
        .recorder
        .db()
        .and_then(|db| db.path())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut replay = SpillReplay::default();
    replay.request(&state);
    loop {
        tokio::time::sleep(STORE_WATCH_EVERY).await;
        let Some(s) = state.recorder.store_stats() else { return };
        let cause = s.last_error.as_deref().unwrap_or("unknown");
        if s.stalled && !stalled {
            error!(state.log, "the log store can write neither its database nor its spill file: \
                records wait in memory, and chat requests are refused (503) once its queue is full";
                "error" => cause, "spill" => &spill, "queued" => s.queued);
        } else if !s.stalled && stalled && !s.db_ok {
            info!(state.log, "the log store writes again, to its spill file";
                "spill" => &spill, "spilled" => s.spilled);
        }
        if !s.db_ok && db_ok && !s.stalled {
            error!(state.log, "the log store cannot write its database: records go to the spill \
                file until it can"; "error" => cause, "spill" => &spill);
        } else if s.db_ok && !db_ok {
            info!(state.log, "the log store's database is written again";
                "written" => s.written, "spilled" => s.spilled);
            replay.request(&state);
        }
        if s.reopens > reopens {
            warn!(state.log, "the log store's database file was deleted, moved or replaced: \
                entries go to the file at its path again (a new one if none was there); a file \
                moved away keeps what was written to it";
                "database" => store_path.as_str());
        }
        replay.poll(&state);
        (db_ok, stalled, reopens) = (s.db_ok, s.stalled, s.reopens);
    }
}

/// Loads the entries the log store spilled into its database, on a thread of its own (it is
/// blocking I/O, and a large file takes a while): the spill file, moved aside first so the
/// writer starts a new one, and any file an earlier replay left (one that failed, was cut
/// off by a restart, or found a line it could not read). Entries stored already are
/// skipped, so a file read twice stores nothing twice. One replay at a time: one asked for
/// while another runs starts when it ends.
#[derive(Default)]
struct SpillReplay {
    running: Option<std::thread::JoinHandle<()>>,
    again: bool,
}

impl SpillReplay {
    /// Starts a replay now, or once the running one ends.
    fn request(&mut self, state: &AppState) {
        self.again = true;
        self.poll(state);
    }

    /// Reaps an ended replay and starts the one asked for since.
    fn poll(&mut self, state: &AppState) {
        if self.running.as_ref().is_some_and(|t| !t.is_finished()) || !self.again {
            return;
        }
        self.running = None;
        self.again = false;
        let Some(store) = state.recorder.db().cloned() else { return };
        let spill = uniproxy_logstore::JsonLinesSpill::new(state::spill_path(&state.settings));
        let log = state.log.clone();
        match std::thread::Builder::new()
            .name("spill-replay".into())
            .spawn(move || replay_spill(&store, &spill, &log))
        {
            Ok(thread) => self.running = Some(thread),
            Err(e) => {
                warn!(state.log, "cannot start the thread that loads spilled log entries; \
                    it is tried again when the database recovers"; "error" => %e);
            }
        }
    }
}

/// [`SpillReplay`]'s work.
fn replay_spill(
    store: &uniproxy_logstore::LogStore,
    spill: &uniproxy_logstore::JsonLinesSpill,
    log: &slog::Logger,
) {
    let shown = spill.path().display().to_string();
    let mut files = match spill.taken() {
        Ok(files) => files,
        Err(e) => {
            warn!(log, "cannot look for spill files left by an earlier replay";
                "error" => error_chain(&e));
            Vec::new()
        }
    };
    match spill.take(record::now_ms()) {
        Ok(taken) => files.extend(taken),
        Err(e) => warn!(log, "cannot move the spill file aside to load it"; "spill" => &shown,
            "error" => error_chain(&e)),
    }
    for file in files {
        let file_shown = file.display().to_string();
        let replayed = uniproxy_logstore::replay(store, &file, |line, e| {
            warn!(log, "a line of a spill file is not a log entry (an interrupted write); skipped";
                "file" => &file_shown, "line" => line, "error" => %e);
        });
        match replayed {
            Ok(r) if r.unreadable == 0 => {
                // Said before the file goes: whoever sees it gone finds the line written.
                info!(log, "loaded the log entries spilled while the database could not be written";
                    "stored" => r.stored, "already_stored" => r.already_stored, "file" => &file_shown);
                match std::fs::remove_file(&file) {
                    // `uniproxy logs import` loaded the same file meanwhile.
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        warn!(log, "cannot remove a loaded spill file; loading it again stores \
                            nothing twice"; "file" => &file_shown, "error" => %e);
                    }
                    _ => {}
                }
            }
            Ok(r) => warn!(log, "loaded the spilled log entries that could be read; the file is \
                kept for the lines that could not"; "stored" => r.stored,
                "already_stored" => r.already_stored, "unreadable" => r.unreadable,
                "file" => &file_shown),
            Err(e) => {
                error!(log, "loading spilled log entries failed; they stay in the file, to be \
                    loaded when the database is written again, at the next start, or by \
                    `uniproxy logs import FILE`"; "file" => &file_shown, "error" => error_chain(&e));
                return;
            }
        }
    }
}

/// An error and its causes, on one line (`what failed: why: why that`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// How often old log entries are pruned and their space given back to the file system.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// How often the entries written since the last prune are counted against LOG_MAX_ROWS.
const MAX_ROWS_CHECK_EVERY: Duration = Duration::from_secs(1);

/// How many entries past LOG_MAX_ROWS start a prune before the hour is up: a tenth of the
/// limit, so that a busy proxy prunes about once per tenth of its log rather than once per
/// entry.
fn max_rows_slack(max_rows: u64) -> u64 {
    (max_rows / 10).max(1)
}

/// Prunes the log store now and every hour, as LOG_RETENTION_DAYS and LOG_MAX_ROWS say, and
/// in between whenever LOG_MAX_ROWS is set and more than a tenth of it was written since the
/// last prune: an hour of a flood (even of refused requests, whose entries any client can
/// make) would otherwise grow the log far past the limit. Those prunes only delete; the
/// hourly one also gives the space back.
async fn retention(state: Arc<AppState>) {
    let days = state.settings.log_retention_days;
    let rows = state.settings.log_max_rows;
    if days == 0 && rows == 0 {
        return;
    }
    // Without LOG_MAX_ROWS there is nothing to count between the hourly prunes.
    let pause = if rows > 0 { MAX_ROWS_CHECK_EVERY } else { RETENTION_EVERY };
    let written = || state.recorder.store_stats().map_or(0, |s| s.written);
    let mut next_full = tokio::time::Instant::now();
    // Entries written when the last prune started, and deleted by the prunes in between.
    let (mut at_last, mut deleted) = (written(), 0);
    loop {
        let full = tokio::time::Instant::now() >= next_full;
        let now_written = written();
        if !full && (rows == 0 || now_written.saturating_sub(at_last) < max_rows_slack(rows)) {
            tokio::time::sleep(pause).await;
            continue;
        }
        at_last = now_written;
        let s = state.clone();
        let owed = deleted;
        let pruned = tokio::task::spawn_blocking(move || {
            let retention = uniproxy_logstore::Retention {
                older_than_days: (days > 0).then_some(days),
                max_rows: (rows > 0).then_some(rows),
                max_bytes: None,
                now_ms: record::now_ms(),
            };
            let db = s.recorder.db()?;
            Some(db.prune_in_place(&retention).and_then(|report| {
                // The hourly prune gives back the space of what every prune since deleted.
                if full && report.deleted() + owed > 0 {
                    db.reclaim_space()?;
                }
                Ok(report)
            }))
        })
        .await;
        match pruned {
            Ok(Some(Ok(report))) => deleted += report.deleted(),
            Ok(Some(Err(e))) => warn!(state.log, "pruning the log store failed"; "error" => %e),
            _ => {}
        }
        if full {
            if deleted > 0 {
                info!(state.log, "pruned old log entries"; "deleted" => deleted);
            }
            deleted = 0;
            next_full = tokio::time::Instant::now() + RETENTION_EVERY;
        }
        tokio::time::sleep(pause).await;
    }
}
