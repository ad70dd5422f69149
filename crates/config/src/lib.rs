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
//! unchanged. In `.env` and the environment they match in any case, as
//! pydantic-settings matched them (`type`, `Actual_Name`). Each may also be
//! written `UNIPROXY_NAME`, which wins over `NAME` in the same layer; and
//! when one layer has a name in several cases, the upper-case one wins, except
//! for the outbound proxy's `https_proxy`, `http_proxy`, `all_proxy` and
//! `no_proxy`, whose lowercase names win, as curl and Python read them. In
//! the TOML file the keys are the lowercase names. List settings
//! (`CORS_ALLOW_ORIGINS`, `PROXY_API_KEYS`) take comma-separated values or,
//! as pydantic-settings read them, a JSON array of strings. `config/uniproxy.toml`
//! and `.env.example` document every setting.
//!
//! # The `.env` file
//!
//! `.env` is read as python-dotenv 1.2.2 reads it (`dotenv_values`), which
//! is how the Python service read it:
//!
//! - Each statement is `[export ]KEY[=VALUE]`, with optional blanks around
//!   `=` and an optional `# comment` after the value. Blank lines and `#`
//!   lines are skipped; lines end in LF, CRLF or CR; a leading byte-order
//!   mark is dropped. A bare `KEY` without `=` sets nothing (and undoes an
//!   earlier `KEY=…`).
//! - An unquoted value is the rest of the line, cut before a `#` that
//!   follows whitespace, without trailing whitespace: `My Old Proxy` keeps
//!   its spaces and `sk-a#b` its `#`. A `#` right after `=` and its blanks
//!   starts the value, not a comment: `KEY= # none` sets `# none`.
//! - A single-quoted value knows the escapes `\\` and `\'`; a double-quoted
//!   one `\\ \' \" \a \b \f \n \r \t \v`. Quoted values may span lines.
//! - `${NAME}` and `${NAME:-default}` expand in every value, quoted or not,
//!   from the values set above in the file, else from the environment
//!   ([`Sources::env`]), else to the default or nothing. `$NAME` without
//!   braces is kept as written, so a key like `sk-pa$word` loads unchanged.
//! - A statement that does not parse (an unterminated quote, text after a
//!   closing quote) is an error naming its file, line and variable, never
//!   its value, when it is for one of the settings; otherwise it is skipped,
//!   as python-dotenv skips it.
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

mod dotenv;
mod error;
mod parse;
mod platform;
mod secret;
mod settings;
mod sources;

pub use error::{ConfigError, Origin, Problem, ProblemKind};
pub use platform::Platform;
pub use secret::Secret;
pub use settings::{Settings, load, load_partial};
pub use sources::{SETTINGS, Sources};
