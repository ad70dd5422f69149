//! The upstream platform the proxy talks to (the `TYPE` setting).

use std::fmt;
use std::str::FromStr;

use crate::ConfigError;

/// The upstream platform, chosen with the `TYPE` setting.
///
/// The spelling of each variant in configuration is [`as_str`](Self::as_str);
/// parsing is case-insensitive and also accepts `azure` and `gemini`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// The built-in mock model; needs no network and no key. The default.
    Mock,
    /// OpenAI (`openai`).
    OpenAi,
    /// Anthropic Messages API (`anthropic`).
    Anthropic,
    /// Google Gemini API (`google`, alias `gemini`).
    Google,
    /// Azure OpenAI (`azure_openai`, alias `azure`).
    AzureOpenAi,
    /// Any OpenAI-compatible server, such as Ollama or vLLM (`custom`).
    Custom,
}

impl Platform {
    /// Every platform, in the order the documentation lists them.
    pub const ALL: [Platform; 6] = [
        Platform::OpenAi,
        Platform::Anthropic,
        Platform::Google,
        Platform::AzureOpenAi,
        Platform::Custom,
        Platform::Mock,
    ];

    /// The `TYPE` spelling: `mock`, `openai`, `anthropic`, `google`,
    /// `azure_openai` or `custom`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Mock => "mock",
            Platform::OpenAi => "openai",
            Platform::Anthropic => "anthropic",
            Platform::Google => "google",
            Platform::AzureOpenAi => "azure_openai",
            Platform::Custom => "custom",
        }
    }

    /// The `BASE_URL` used when none is configured. Azure OpenAI has none,
    /// because the URL names the customer's own resource, and the mock needs none.
    #[must_use]
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            Platform::OpenAi => Some("https://api.openai.com/v1"),
            Platform::Anthropic => Some("https://api.anthropic.com/v1"),
            Platform::Google => Some("https://generativelanguage.googleapis.com/v1beta"),
            Platform::Custom => Some("http://localhost:11434/v1"),
            Platform::AzureOpenAi | Platform::Mock => None,
        }
    }

    /// A `BASE_URL` given as a bare host, as the platforms' own SDKs take theirs and add the
    /// path to (`https://api.anthropic.com`, `https://generativelanguage.googleapis.com`,
    /// Azure's `azure_endpoint` `https://RESOURCE.openai.azure.com`), completed with that path:
    /// `/v1` (Anthropic), `/v1beta` (Google), or `/openai/deployments/DEPLOYMENT` (Azure
    /// OpenAI, the deployment being `deployment`, `ACTUAL_NAME`). The OpenAI SDK adds nothing to
    /// its base URL, so an OpenAI `BASE_URL` is completed only for `api.openai.com` itself (a
    /// gateway may serve at its root). A URL with a path, and a custom server's, is kept.
    ///
    /// The endpoint itself, pasted from a platform's docs or portal (`…/v1/chat/completions`,
    /// Azure's target URI without its query, `…/v1/messages`), is cut back to the base the
    /// proxy adds that path to, rather than sent to twice.
    #[must_use]
    pub fn complete_base_url(self, url: &str, deployment: &str) -> String {
        let endpoint = match self {
            Platform::OpenAi | Platform::AzureOpenAi | Platform::Custom => "/chat/completions",
            Platform::Anthropic => "/messages",
            Platform::Google | Platform::Mock => "",
        };
        let url = match url.strip_suffix(endpoint) {
            Some(base) if !endpoint.is_empty() && base.contains("://") => {
                base.trim_end_matches('/')
            }
            _ => url,
        };
        let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
        if after_scheme.contains('/') {
            return url.to_owned();
        }
        let path = match self {
            Platform::OpenAi if after_scheme.eq_ignore_ascii_case("api.openai.com") => {
                "/v1".to_owned()
            }
            Platform::Anthropic => "/v1".to_owned(),
            Platform::Google => "/v1beta".to_owned(),
            Platform::AzureOpenAi if !deployment.is_empty() => {
                format!("/openai/deployments/{deployment}")
            }
            Platform::OpenAi | Platform::AzureOpenAi | Platform::Custom | Platform::Mock => {
                String::new()
            }
        };
        format!("{url}{path}")
    }

    /// Whether `API_KEY` must be set and non-empty for this platform.
    #[must_use]
    pub fn requires_api_key(self) -> bool {
        match self {
            Platform::OpenAi | Platform::Anthropic | Platform::Google | Platform::AzureOpenAi => {
                true
            }
            Platform::Custom | Platform::Mock => false,
        }
    }

    /// Looks a platform up by its `TYPE` spelling, ignoring case and
    /// surrounding whitespace, and accepting the aliases `azure` and `gemini`.
    pub(crate) fn from_name(name: &str) -> Option<Platform> {
        match name.trim().to_ascii_lowercase().as_str() {
            "mock" => Some(Platform::Mock),
            "openai" => Some(Platform::OpenAi),
            "anthropic" => Some(Platform::Anthropic),
            "google" | "gemini" => Some(Platform::Google),
            "azure_openai" | "azure" => Some(Platform::AzureOpenAi),
            "custom" => Some(Platform::Custom),
            _ => None,
        }
    }
}

/// What `TYPE` accepts, for error messages.
pub(crate) const PLATFORM_EXPECTED: &str =
    "one of openai, anthropic, google (or gemini), azure_openai (or azure), custom, mock";

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = ConfigError;

    /// Parses a `TYPE` value.
    ///
    /// # Errors
    ///
    /// [`ConfigError::UnknownPlatform`] when the name is not a platform or alias.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::from_name(s).ok_or_else(|| ConfigError::UnknownPlatform { name: s.to_owned() })
    }
}
