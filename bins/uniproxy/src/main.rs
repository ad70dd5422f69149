//! `uniproxy`: reads the settings and serves. Exit status 2 for bad settings.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use slog::{info, warn};
use uniproxy::{AppState, error_chain, logging, serve_with};
use uniproxy_config::{Sources, load};

/// mimalloc's per-thread heaps: request buffers are allocated on the runtime's threads and
/// freed on the log threads, which contends on glibc malloc's arena locks (measured: about 7%
/// of the proxy's CPU under load).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hands the memory a load freed back to the system once the proxy is idle. mimalloc returns
/// the pages freed to it (purges them) a second after, but only when a later page is freed on
/// a thread; a load's buffers are freed on the log threads, and an idle runtime thread frees
/// nothing. Measured: after 6 s of 20 KB requests, 160 MiB stayed resident until the next
/// request (which brought it to 51 MiB); with this, 45 MiB three seconds after the load. A
/// page of its own (1 MiB is past mimalloc's largest size class) allocated and freed every two
/// seconds makes that free; under load it is one allocation in tens of thousands.
async fn release_freed_memory() {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(2));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        drop(std::hint::black_box(Vec::<u8>::with_capacity(1 << 20)));
    }
}

fn usage() -> &'static str {
    "uniproxy — an OpenAI-compatible proxy for one configured model\n\n\
     USAGE:\n    uniproxy [--config PATH]\n    uniproxy [--config PATH] logs COMMAND   (read the request log; see `uniproxy logs --help`)\n\n\
     OPTIONS:\n    -c, --config PATH   the TOML settings file\n    -h, --help          this text\n    -V, --version       the version\n\n\
     Settings come from defaults < the TOML file (--config or UNIPROXY_CONFIG) < ./.env <\n\
     the environment. See .env.example for every setting.\n"
}

fn main() -> ExitCode {
    let mut config_file: Option<PathBuf> = None;
    let mut args = lexopt::Parser::from_env();
    loop {
        match args.next() {
            Ok(Some(lexopt::Arg::Long("config") | lexopt::Arg::Short('c'))) => match args.value() {
                Ok(v) => config_file = Some(PathBuf::from(v)),
                Err(e) => return bad_usage(&e.to_string()),
            },
            // Asked for, help and the version are the output, as `uniproxy logs --help` is:
            // on stdout, so that `uniproxy --help | less` and `$(uniproxy --version)` work.
            Ok(Some(lexopt::Arg::Long("help") | lexopt::Arg::Short('h'))) => {
                return print_out(usage());
            }
            Ok(Some(lexopt::Arg::Long("version") | lexopt::Arg::Short('V'))) => {
                return print_out(&format!("uniproxy {}\n", env!("CARGO_PKG_VERSION")));
            }
            Ok(Some(lexopt::Arg::Value(v))) if v == "logs" => match args.raw_args() {
                Ok(rest) => {
                    return uniproxy::logs_cmd::run_from_process(config_file, rest.collect());
                }
                Err(e) => return bad_usage(&e.to_string()),
            },
            Ok(Some(other)) => return bad_usage(&other.unexpected().to_string()),
            Ok(None) => break,
            Err(e) => return bad_usage(&e.to_string()),
        }
    }
    let mut settings = match load(&Sources::from_process(config_file)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("uniproxy: {e}");
            return ExitCode::from(2);
        }
    };
    let configured_database = settings.database_path.clone();
    let (database, foreign) = uniproxy::state::database_file(&configured_database);
    settings.database_path = database;
    let file = match logging::RotatingFile::open(
        &settings.log_file_path,
        settings.log_file_max_bytes,
        settings.log_file_keep,
    ) {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!(
                "uniproxy: cannot open the log file {} ({e}); logging to stderr only",
                settings.log_file_path.display()
            );
            None
        }
    };
    let logs = logging::root(file);
    let log = logs.logger.clone();
    let defaulted = settings.type_was_defaulted();
    let open = settings.proxy_api_keys.is_empty();
    let addr = settings.listen_addr();
    // Built before the runtime: opening the log store is blocking file I/O.
    let state = match AppState::new(settings, logs) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("uniproxy: {}", error_chain(&e));
            return ExitCode::from(2);
        }
    };
    // Thread-per-core, like nginx's workers: one current-thread runtime per core, each
    // accepting on its own socket for the port (the kernel spreads connections over them: see
    // `listen`; the first socket is the main thread's), each with its own upstream connection
    // pool, so a request's work (both connections, parsing, translation) stays on one thread.
    // Measured against one multi-threaded runtime: about 15% less CPU per request.
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    // Read from the address bound, not from HOST: `localhost` is a name for a loopback one.
    let (bound, exposed, mut sockets) = match uniproxy::listen::bind(&addr, threads) {
        Ok((local, sockets)) => (local.to_string(), !local.ip().is_loopback(), sockets.into_iter()),
        Err(e) => {
            eprintln!("uniproxy: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(own) = sockets.next() else {
        eprintln!("uniproxy: cannot listen on {addr}: no socket");
        return ExitCode::FAILURE;
    };
    let open_files = raise_open_files_limit();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop = Arc::new(stop);
    let mut workers = Vec::new();
    for (n, socket) in (1..threads).zip(sockets) {
        let (state, stopped) = (state.clone(), stopped.clone());
        let spawned = std::thread::Builder::new().name(format!("uniproxy-{n}")).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async move {
                let listener = socket.listen()?;
                let mut stopped = stopped;
                let shutdown = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                let client = state.new_client();
                tokio::spawn(release_freed_memory());
                serve_with(state, listener, shutdown, client, false).await
            })
        });
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(e) => warn!(log, "could not start a runtime thread"; "error" => %e),
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("uniproxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = state.clone();
    let stop_workers = stop.clone();
    let code = runtime.block_on(async move {
        let signal = shutdown_signal();
        let listener = match own.listen() {
            Ok(l) => l,
            Err(e) => {
                eprintln!("uniproxy: cannot listen on {bound}: {e}");
                return ExitCode::FAILURE;
            }
        };
        tokio::spawn(release_freed_memory());
        info!(log, "uniproxy listening";
            "address" => format!("http://{bound}"),
            "platform" => served.provider.kind().as_str(),
            "model" => &served.settings.actual_name,
            "threads" => threads,
            "open_files" => open_files,
            "log_store" => served.settings.database_path.display().to_string());
        if let Some(proxy) = served.route.describe() {
            info!(log, "the upstream is reached through an outbound proxy"; "proxy" => proxy);
        }
        if open_files.is_some_and(|n| n < FEW_OPEN_FILES) {
            warn!(log, "the open-files limit is low: every connection takes one, so a few \
                hundred idle clients could lock every other one out; raise it (ulimit -n, \
                LimitNOFILE=)"; "open_files" => open_files);
        }
        if !foreign.is_empty() {
            warn!(
                log,
                "DATABASE_URL names another program's database (the service uniproxy replaces?): \
                uniproxy keeps its log in a file of its own beside it";
                "database_url" => configured_database.display().to_string(),
                "its_tables" => foreign.join(", "),
                "log_store" => served.settings.database_path.display().to_string()
            );
        }
        if exposed && open {
            warn!(
                log,
                "listening on a non-loopback address with no PROXY_API_KEYS: \
                anyone who can reach this port can spend your upstream API key"
            );
        }
        if defaulted {
            warn!(
                log,
                "no TYPE configured: serving the built-in mock model. \
                To use a real one, copy .env.example to .env and set TYPE, API_KEY and ACTUAL_NAME"
            );
        }
        let shutdown = async move {
            signal.await;
            let _ = stop_workers.send(true);
        };
        let client = served.new_client();
        match serve_with(served, listener, shutdown, client, true).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("uniproxy: {e}");
                ExitCode::FAILURE
            }
        }
    });
    // Whatever ended the main loop, the other threads stop too.
    let _ = stop.send(true);
    for worker in workers {
        match worker.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(state.log, "a runtime thread failed"; "error" => %e),
            Err(_) => warn!(state.log, "a runtime thread panicked"),
        }
    }
    // Dropping the runtime ends every task; then the log store's queue is drained (every
    // entry written or spilled), and dropping the last logger lets the async drains write
    // their last lines.
    drop(runtime);
    state.recorder.shutdown();
    drop(state);
    code
}

/// Below this many open files, the start says the limit is low.
const FEW_OPEN_FILES: u64 = 4096;

/// Raises the soft limit of open files to the hard one, as Go's runtime and nginx's
/// `worker_rlimit_nofile` do: every connection takes a file, and the usual soft limit of
/// 1,024 lets about a thousand idle clients (each held up to the header read timeout) lock
/// every other one out. Returns the limit in force, when it can be read.
fn raise_open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        // `None` is no limit at all; the kernel caps open files anyway (Linux's `nr_open` is
        // 2^20 by default, and it refuses an unlimited soft limit).
        let target = limit.maximum.unwrap_or(1 << 20);
        if limit.current.is_some_and(|current| current < target) {
            let raised = rustix::process::Rlimit { current: Some(target), ..limit };
            if setrlimit(Resource::Nofile, raised).is_ok() {
                limit = getrlimit(Resource::Nofile);
            }
        }
        Some(limit.current.unwrap_or(u64::MAX))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Writes `text` to stdout; a reader that went away (`uniproxy --help | head -1`) is no failure.
fn print_out(text: &str) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("uniproxy: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bad_usage(message: &str) -> ExitCode {
    eprintln!("uniproxy: {message}\n\n{}", usage());
    ExitCode::from(2)
}

/// Resolves on SIGINT, SIGTERM or SIGHUP (the terminal or SSH session the proxy runs in
/// closed; the settings are read at start only, so it is no reload). The handlers are
/// registered when this is called, not when the future is first polled, so a signal that
/// arrives while the server is still starting already counts as a request to shut down
/// gracefully.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        let hup = signal(SignalKind::hangup());
        async move {
            match (term, int, hup) {
                (Ok(mut term), Ok(mut int), Ok(mut hup)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                        _ = hup.recv() => {},
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
