//! What every request handler shares, built once at start-up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use slog::Logger;
use uniproxy_config::{Platform, Settings};
use uniproxy_logstore::{
    JsonLinesSpill, LogStore, StoreError, StoreOptions, Writer, WriterOptions,
};
use uniproxy_translate::{Provider, ProviderConfig, ProviderKind, TranslateError, provider};

use crate::logging::Logs;
use crate::metrics::Metrics;
use crate::outbound::{Route, RouteError};
use crate::record::Recorder;
use crate::upstream::Client;

/// The shared state: settings, the platform's translator, the upstream client, the logger.
pub struct AppState {
    /// The settings, fixed for the process's life (changing them needs a restart).
    pub settings: Settings,
    /// The configured platform's translator.
    pub provider: Box<dyn Provider>,
    /// The TLS configuration every upstream client is made with.
    pub tls: rustls::ClientConfig,
    /// How upstream connections are made: directly, or through the outbound proxy.
    pub route: Route,
    /// The root logger.
    pub log: Logger,
    /// Where request records go.
    pub recorder: Recorder,
    /// When the server started.
    pub started: Instant,
    /// When the server started, in Unix seconds.
    pub started_unix: u64,
    /// Chat requests in flight (streams count until they end).
    pub in_flight: Arc<AtomicUsize>,
    /// The Prometheus metrics, for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The log viewer's sessions.
    pub sessions: crate::admin::Sessions,
    /// How long a client may take to send its request head ([`crate::HEADER_READ_TIMEOUT`]).
    /// Not a setting: nobody needs to tune it, and tests shorten it by setting this field.
    pub header_read_timeout: std::time::Duration,
    /// How long requests in flight get to finish after a shutdown signal
    /// ([`crate::GRACE_PERIOD`]). Not a setting either; tests shorten it.
    pub grace_period: std::time::Duration,
    /// Turns `true` once a shutdown's grace period is over: the requests still in flight are
    /// being cut off, and are recorded as such rather than as clients that left; those that
    /// wait on it answer so ([`AppState::cut_off`]).
    cut_off: tokio::sync::watch::Sender<bool>,
    /// Whether requests to the client side must name a host the proxy answers to
    /// ([`AppState::answers_to`]).
    guards_client_hosts: bool,
    /// The same for the admin side.
    guards_admin_hosts: bool,
    ids: AtomicU64,
    id_seed: u64,
}

/// The two sides of the proxy a key may protect, for [`AppState::answers_to`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Chat and models, which PROXY_API_KEYS protects.
    Client,
    /// The log viewer, `/api/*` and `/metrics`, which ADMIN_KEY protects, else PROXY_API_KEYS.
    Admin,
}

/// Whether a proxy with `settings` answers only requests addressed to a host it knows on
/// `side`: it listens on loopback, where its operator takes it to be private, and no key
/// protects that side. A web page can reach such a proxy under a name of its own that
/// resolves to 127.0.0.1 (DNS rebinding), and then read its log or spend its upstream key as
/// a page of the proxy's own origin; its requests name the page's host, which is how they are
/// told apart. ADMIN_KEY protects the admin side only: the chat side stays guarded without
/// PROXY_API_KEYS.
fn guards_hosts(settings: &Settings, side: Side) -> bool {
    let loopback = settings.host.eq_ignore_ascii_case("localhost")
        || settings.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let keyed = match side {
        Side::Client => !settings.proxy_api_keys.is_empty(),
        Side::Admin => {
            !settings.proxy_api_keys.is_empty()
                || settings.admin_key.as_ref().is_some_and(|k| !k.is_empty())
        }
    };
    loopback && !keyed && !settings.allowed_hosts.iter().any(|h| h == "*")
}

/// One request in flight; dropping it frees the place.
#[derive(Debug)]
pub struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The settings cannot work for the platform.
    #[error("the settings do not work for this platform")]
    Provider(#[from] TranslateError),
    /// The log store cannot be opened.
    #[error("cannot open the log store")]
    Store(#[from] StoreError),
    /// The request log's thread cannot be started.
    #[error("cannot start the request log's thread")]
    Thread(#[source] std::io::Error),
    /// The outbound proxy setting that applies to the upstream cannot be used.
    #[error(transparent)]
    Proxy(#[from] RouteError),
}

/// Where the log store spills entries it cannot write to the database: beside the JSON log.
pub fn spill_path(settings: &Settings) -> PathBuf {
    let mut p = settings.log_file_path.clone().into_os_string();
    p.push(".spill.jsonl");
    p.into()
}

/// The log database to use for DATABASE_URL's file, and the tables that made it move.
///
/// An old `.env` names the database of the service uniproxy replaces, which holds that
/// service's own tables: uniproxy does not add its tables to another program's file (nor
/// stop at a table of the same name). It keeps its log in a file of its own beside it,
/// `NAME.uniproxy.db`, and keeps using that one once the old file is gone. A file that cannot
/// be read as a database is left for the store's open to report.
pub fn database_file(configured: &Path) -> (PathBuf, Vec<String>) {
    let own = {
        let stem = configured.file_stem().unwrap_or(configured.as_os_str());
        let mut name = stem.to_os_string();
        name.push(".uniproxy.db");
        configured.with_file_name(name)
    };
    match LogStore::foreign_tables(configured) {
        Ok(tables) if !tables.is_empty() => (own, tables),
        _ if !configured.exists() && own.is_file() => (own, Vec::new()),
        _ => (configured.to_path_buf(), Vec::new()),
    }
}

impl AppState {
    /// Builds the state from settings: the platform's translator, the upstream client, and the
    /// log store with its writer thread. Call it before serving: opening the store is blocking
    /// file I/O.
    ///
    /// # Errors
    /// When the settings cannot work for the platform (an Azure URL without a deployment), or
    /// the log store cannot be opened.
    pub fn new(settings: Settings, logs: impl Into<Logs>) -> Result<Self, StartError> {
        // The byte budget bounds the queue; the count only sizes the preallocated channel
        // (10,000 slots cost 5 MB of idle memory).
        let writer = WriterOptions { queue_capacity: 4096, ..WriterOptions::default() };
        AppState::with_writer(settings, logs, writer)
    }

    /// [`AppState::new`] with the log store's writer built from `writer` (its queue's size,
    /// its batches), for a program that embeds the proxy, or a test.
    ///
    /// # Errors
    /// As [`AppState::new`].
    pub fn with_writer(
        settings: Settings,
        logs: impl Into<Logs>,
        writer: WriterOptions,
    ) -> Result<Self, StartError> {
        let logs = logs.into();
        let log = logs.logger.clone();
        let config = provider_config(&settings);
        let provider = provider(&config)?;
        let store = LogStore::open(&settings.database_path, StoreOptions::default())?;
        let spill = spill_path(&settings);
        if let Some(dir) = spill.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::CreateDir { path: dir.to_owned(), source })?;
        }
        let writer = Writer::spawn(store.clone(), Box::new(JsonLinesSpill::new(spill)), writer)?;
        let route = Route::for_upstream(&settings)?;
        // The roots check an HTTPS upstream, and an https:// outbound proxy too.
        let https = settings.base_url.as_deref().is_some_and(|u| u.starts_with("https://"))
            || route.proxy_over_tls();
        let tls = Client::tls_config(https);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let metrics = Arc::new(Metrics::new(
            provider.kind().as_str(),
            in_flight.clone(),
            Some(writer.handle()),
        ));
        let recorder =
            Recorder::new(logs, settings.log_bodies, Some(store), Some(writer), metrics.clone())
                .map_err(StartError::Thread)?;
        Ok(AppState {
            provider,
            tls,
            route,
            recorder,
            started: Instant::now(),
            started_unix: now.as_secs(),
            in_flight,
            metrics,
            sessions: crate::admin::Sessions::default(),
            header_read_timeout: crate::HEADER_READ_TIMEOUT,
            grace_period: crate::GRACE_PERIOD,
            cut_off: tokio::sync::watch::Sender::new(false),
            guards_client_hosts: guards_hosts(&settings, Side::Client),
            guards_admin_hosts: guards_hosts(&settings, Side::Admin),
            ids: AtomicU64::new(0),
            // Ids must differ across restarts; the start time's nanoseconds mixed with the
            // process id are enough for that (they are ids, not secrets).
            id_seed: (now.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32),
            log,
            settings,
        })
    }

    /// A new upstream client (its own connection pool) for one runtime thread.
    pub fn new_client(&self) -> Client {
        let base_url = self.settings.base_url.as_deref();
        Client::new(self.settings.connect_timeout, self.tls.clone(), base_url, &self.route)
    }

    /// Takes a place for a request, or `None` when CONCURRENCY_LIMIT places are taken.
    pub fn enter(&self) -> Option<InFlightGuard> {
        let limit = self.settings.concurrency_limit;
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlightGuard(self.in_flight.clone());
        (limit == 0 || before < limit).then_some(guard)
    }

    /// Says that the grace period is over and the requests still in flight are cut off.
    pub fn cut_off_in_flight(&self) {
        self.cut_off.send_replace(true);
    }

    /// Resolves once the requests in flight are cut off ([`AppState::cut_off_in_flight`]): a
    /// request waiting on it answers 503, a stream ends with an error event, rather than their
    /// connections being dropped without a word.
    pub async fn cut_off(&self) {
        let mut cut = self.cut_off.subscribe();
        let _ = cut.wait_for(|c| *c).await;
    }

    /// Whether a request that ends before its answer was cut off by the shutdown (rather
    /// than left by its client).
    pub fn cutting_off(&self) -> bool {
        *self.cut_off.borrow()
    }

    /// Whether the proxy answers a request to `side` whose `Host` is `host` (`None`: sent
    /// without one, as HTTP/1.0 and HTTP/2 may): always, unless it guards that side's hosts
    /// (see `guards_hosts`); then only `localhost`, an IP address, or a name in ALLOWED_HOSTS,
    /// with any port.
    pub fn answers_to(&self, host: Option<&[u8]>, side: Side) -> bool {
        let guards = match side {
            Side::Client => self.guards_client_hosts,
            Side::Admin => self.guards_admin_hosts,
        };
        let Some(host) = host.filter(|_| guards) else { return true };
        let Ok(host) = std::str::from_utf8(host) else { return false };
        if host.starts_with('[') {
            // An IPv6 address, the only host with colons in it.
            return true;
        }
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        let local = |n: &str| n.eq_ignore_ascii_case("localhost");
        name.parse::<std::net::IpAddr>().is_ok()
            || local(name)
            || name.rsplit_once('.').is_some_and(|(_, last)| local(last))
            || self.settings.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    /// A pseudo-random number for backoff jitter (not for secrets).
    pub fn jitter(&self) -> u64 {
        mix(self.id_seed ^ self.ids.fetch_add(1, Ordering::Relaxed).rotate_left(17))
    }

    /// A new completion id, `chatcmpl-` and 24 hex digits.
    pub fn next_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        // By hand: `format!` with two padded hex fields was 1% of a request's instructions.
        let mut id = String::with_capacity(33);
        id.push_str("chatcmpl-");
        push_hex(&mut id, mix(self.id_seed ^ n), 16);
        push_hex(&mut id, u64::from(n as u32), 8);
        id
    }
}

/// Appends the low `digits` hex digits of `value`, zero-padded, as `{:0digits$x}` would for a
/// value that fits.
pub(crate) fn push_hex(out: &mut String, value: u64, digits: u32) {
    for i in (0..digits).rev() {
        let nibble = (value >> (4 * i)) & 0xf;
        out.push(char::from(b"0123456789abcdef"[nibble as usize]));
    }
}

/// A fast 64-bit mixer (splitmix64's finaliser), so consecutive ids do not look consecutive.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The translator's view of the settings.
pub fn provider_config(settings: &Settings) -> ProviderConfig {
    let kind = match settings.platform {
        Platform::Mock => ProviderKind::Mock,
        Platform::OpenAi => ProviderKind::OpenAi,
        Platform::Anthropic => ProviderKind::Anthropic,
        Platform::Google => ProviderKind::Google,
        Platform::AzureOpenAi => ProviderKind::AzureOpenAi,
        Platform::Custom => ProviderKind::Custom,
    };
    let mut config = ProviderConfig::new(
        kind,
        settings.base_url.clone().unwrap_or_else(|| "mock://local".to_owned()),
        settings.api_key.expose(),
        settings.actual_name.clone(),
    );
    config.api_version.clone_from(&settings.api_version);
    config.max_tokens = settings.max_tokens;
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_hex_writes_what_format_writes() {
        for value in [0, 1, 0xa, 0xff, 0x1234_abcd, u64::from(u32::MAX), u64::MAX, mix(7)] {
            let mut out = String::new();
            push_hex(&mut out, value, 16);
            assert_eq!(out, format!("{value:016x}"));
            let mut out = String::new();
            push_hex(&mut out, value & 0xffff_ffff, 8);
            assert_eq!(out, format!("{:08x}", value & 0xffff_ffff));
            let mut out = String::new();
            push_hex(&mut out, value & 0xff, 2);
            assert_eq!(out, format!("{:02x}", value & 0xff));
        }
    }
}
