//! What every request handler shares, built once at start-up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use slog::Logger;
use uniproxy_config::{Platform, Settings};
use uniproxy_translate::{Provider, ProviderConfig, ProviderKind, TranslateError, provider};

use crate::record::Recorder;
use crate::upstream::Client;

/// The shared state: settings, the platform's translator, the upstream client, the logger.
pub struct AppState {
    /// The settings, fixed for the process's life (changing them needs a restart).
    pub settings: Settings,
    /// The configured platform's translator.
    pub provider: Box<dyn Provider>,
    /// The upstream client.
    pub client: Client,
    /// The root logger.
    pub log: Logger,
    /// Where request records go.
    pub recorder: Recorder,
    /// When the server started.
    pub started: Instant,
    /// When the server started, in Unix seconds.
    pub started_unix: u64,
    ids: AtomicU64,
    id_seed: u64,
}

impl AppState {
    /// Builds the state from settings.
    ///
    /// # Errors
    /// When the settings cannot work for the platform (an Azure URL without a deployment).
    pub fn new(settings: Settings, log: Logger) -> Result<Self, TranslateError> {
        let config = provider_config(&settings);
        let provider = provider(&config)?;
        let https = settings.base_url.as_deref().is_some_and(|u| u.starts_with("https://"));
        let client = Client::new(settings.connect_timeout, https);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let recorder = Recorder::new(log.clone(), settings.log_bodies);
        Ok(AppState {
            provider,
            client,
            recorder,
            started: Instant::now(),
            started_unix: now.as_secs(),
            ids: AtomicU64::new(0),
            // Ids must differ across restarts; the start time's nanoseconds mixed with the
            // process id are enough for that (they are ids, not secrets).
            id_seed: (now.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32),
            log,
            settings,
        })
    }

    /// A new completion id, `chatcmpl-` and 24 hex digits.
    pub fn next_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        format!("chatcmpl-{:016x}{:08x}", mix(self.id_seed ^ n), n as u32)
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
