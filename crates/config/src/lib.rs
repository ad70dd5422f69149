//! Settings for uniproxy, loaded in layers: built-in defaults, then an
//! optional TOML file, then a `.env` file, then the process environment.
//!
//! The main types are [`Sources`] (what to read), [`load`] (which reads it),
//! [`Settings`] (the typed result), [`Platform`] (the `TYPE` setting),
//! [`Secret`] (keys that never print) and [`ConfigError`], whose
//! [`Invalid`](ConfigError::Invalid) variant lists every [`Problem`] at
//! once, each with the [`Origin`] of the offending value.
//!
//! Setting names are those of the original Python service (`TYPE`,
//! `API_KEY`, `BASE_URL`, `ACTUAL_NAME`, `PORT`, …), so an old `.env` works
//! unchanged. Each may also be written `UNIPROXY_NAME`, which wins over
//! `NAME` in the same layer. In the TOML file the keys are the lowercase
//! names. `config/uniproxy.toml` and `.env.example` document every setting.
//!
//! [`load`] reads nothing but what [`Sources`] names, so tests never touch
//! the real environment; [`Sources::from_process`] takes a snapshot of it.
//!
//! ```
//! use uniproxy_config::{Platform, Sources, load};
//!
//! let sources = Sources {
//!     env: vec![
//!         ("TYPE".into(), "anthropic".into()),
//!         ("API_KEY".into(), "sk-ant-test".into()),
//!         ("ACTUAL_NAME".into(), "claude-sonnet-4-5".into()),
//!         ("UNIPROXY_PORT".into(), "9000".into()),
//!     ],
//!     ..Sources::default()
//! };
//! let settings = load(&sources)?;
//! assert_eq!(settings.platform, Platform::Anthropic);
//! assert_eq!(settings.base_url.as_deref(), Some("https://api.anthropic.com/v1"));
//! assert_eq!(settings.api_key.expose(), "sk-ant-test");
//! assert_eq!(settings.listen_addr(), "0.0.0.0:9000");
//! assert!(!format!("{settings:?}").contains("sk-ant-test"));
//!
//! // Every problem is reported at once, each with where it came from.
//! let bad = Sources {
//!     env: vec![("TYPE".into(), "bogus".into()), ("PORT".into(), "notaport".into())],
//!     ..Sources::default()
//! };
//! let error = load(&bad).unwrap_err();
//! assert_eq!(error.problems().len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod error;
mod parse;
mod platform;
mod secret;
mod settings;
mod sources;

pub use error::{ConfigError, Origin, Problem, ProblemKind};
pub use platform::Platform;
pub use secret::Secret;
pub use settings::{Settings, load};
pub use sources::{SETTINGS, Sources};
