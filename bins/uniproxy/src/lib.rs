//! The uniproxy server: hyper 1.x on tokio, wiring the translator, the log store and the
//! settings together. Its own code is HTTP plumbing; platform differences live in
//! `uniproxy-translate`.
//!
//! Start with [`serve`]; `main.rs` only reads the settings and calls it.

pub mod admin;
pub mod chat;
pub mod error;
pub mod listen;
pub mod logging;
pub mod logs_cmd;
pub mod metrics;
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
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
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
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(state.header_read_timeout);
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
        let state = state.clone();
        let client = client.clone();
        let peer = peer.to_string();
        let service = service_fn(move |req| {
            let state = state.clone();
            let client = client.clone();
            let peer = peer.clone();
            async move {
                Ok::<_, std::convert::Infallible>(
                    routes::handle(state, &client, req, Some(peer)).await,
                )
            }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let mut closing = closing_rx.clone();
        connections.spawn(async move {
            // hyper's header read timeout starts only once it knows the HTTP version, and the
            // auto builder waits for the bytes that tell with no timeout at all: a client that
            // connects and sends nothing would hold its socket for ever.
            let mut probe = [0u8; 1];
            tokio::select! {
                first = tokio::time::timeout(first_byte_within, stream.peek(&mut probe)) => {
                    if !matches!(first, Ok(Ok(n)) if n > 0) {
                        return;
                    }
                }
                _ = closing.wait_for(|c| *c) => return,
            }
            let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
            // A client that resets its connection is not the server's problem.
            let _ = watcher.watch(conn).await;
        });
    }
    let _ = closing.send(true);
    drop(listener);
    if let Some((retention, watch)) = maintenance {
        retention.abort();
        watch.abort();
    }
    info!(state.log, "shutting down: finishing in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => info!(state.log, "all connections closed"),
        () = tokio::time::sleep(state.grace_period) => {
            warn!(state.log, "grace period over; closing the remaining connections");
            // Dropping a request's future records it (`chat::Pending`, `SseRelay`): as cut off.
            state.cut_off_in_flight();
            connections.abort_all();
            while connections.join_next().await.is_some() {}
        }
    }
    Ok(())
}

/// How often the log store's state is read, to log its changes.
const STORE_WATCH_EVERY: Duration = Duration::from_secs(1);

/// Logs the log store's changes of state, which `/health` shows too: its database failing
/// (records go to the spill file), nothing writable at all (records wait in memory, and chat
/// requests are refused once the queue is full), and each recovery.
async fn watch_store(state: Arc<AppState>) {
    let spill = state::spill_path(&state.settings).display().to_string();
    let (mut db_ok, mut stalled) = (true, false);
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
            if s.spilled > 0 {
                info!(state.log, "the log store's database is written again; \
                    `uniproxy logs import` loads what went to the spill file meanwhile";
                    "spill" => &spill, "spilled" => s.spilled, "written" => s.written);
            } else {
                info!(state.log, "the log store's database is written again"; "written" => s.written);
            }
        }
        (db_ok, stalled) = (s.db_ok, s.stalled);
    }
}

/// How often old log entries are pruned.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Prunes the log store now and every hour, as LOG_RETENTION_DAYS and LOG_MAX_ROWS say.
async fn retention(state: Arc<AppState>) {
    let days = state.settings.log_retention_days;
    let rows = state.settings.log_max_rows;
    if days == 0 && rows == 0 {
        return;
    }
    loop {
        let s = state.clone();
        let pruned = tokio::task::spawn_blocking(move || {
            let retention = uniproxy_logstore::Retention {
                older_than_days: (days > 0).then_some(days),
                max_rows: (rows > 0).then_some(rows),
                max_bytes: None,
                now_ms: record::now_ms(),
            };
            s.recorder.prune(&retention)
        })
        .await;
        match pruned {
            Ok(Some(Ok(report))) if report.deleted() > 0 => {
                info!(state.log, "pruned old log entries"; "deleted" => report.deleted());
            }
            Ok(Some(Err(e))) => warn!(state.log, "pruning the log store failed"; "error" => %e),
            _ => {}
        }
        tokio::time::sleep(RETENTION_EVERY).await;
    }
}
