//! Errors from loading settings, and the problems an invalid configuration has.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// One or more settings are invalid or missing. Every problem found is
    /// listed, not only the first, and `Display` prints one per line.
    #[error("{}", ProblemList(problems))]
    Invalid {
        /// Every problem found, in the order of the settings table.
        problems: Vec<Problem>,
    },
    /// The TOML configuration file could not be read. The message ends with
    /// the operating system's reason, such as "No such file or directory".
    #[error("cannot read config file {}: {error}", path.display())]
    ReadFile {
        /// The file named by `--config` or `UNIPROXY_CONFIG`.
        path: PathBuf,
        /// The I/O error, shown in the message rather than as `source()`.
        error: io::Error,
    },
    /// The TOML configuration file is not valid TOML. The message ends with
    /// the parser's position and explanation.
    #[error("cannot parse config file {}: {error}", path.display())]
    ParseFile {
        /// The file named by `--config` or `UNIPROXY_CONFIG`.
        path: PathBuf,
        /// The parser's error, with the quoted source line removed because
        /// that line may hold a key; shown in the message rather than as
        /// `source()`.
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The `.env` file could not be read (it is missing, unreadable or not
    /// UTF-8). The message ends with the reason.
    #[error("cannot read .env file {}: {error}", path.display())]
    ReadDotenv {
        /// The `.env` file.
        path: PathBuf,
        /// The I/O error, shown in the message rather than as `source()`.
        error: io::Error,
    },
    /// A statement of the `.env` file for one of the settings does not parse
    /// (python-dotenv would skip it: an unterminated quote, or text after a
    /// closing quote). Statements for other variables that do not parse are
    /// skipped, as python-dotenv skips them. The line itself is not quoted,
    /// because it may hold a key.
    #[error(
        ".env file {} has a syntax error{}{}",
        path.display(),
        line.map(|n| format!(" on line {n}")).unwrap_or_default(),
        variable.as_ref().map(|v| format!(" (variable {v})")).unwrap_or_default()
    )]
    DotenvSyntax {
        /// The `.env` file.
        path: PathBuf,
        /// The 1-based line number, when it could be found.
        line: Option<usize>,
        /// The variable name on that line, when there is one.
        variable: Option<String>,
    },
    /// A string is not a platform name (from [`Platform`](crate::Platform)'s `FromStr`).
    #[error("unknown platform `{name}`, expected {}", crate::platform::PLATFORM_EXPECTED)]
    UnknownPlatform {
        /// The name that was given.
        name: String,
    },
}

impl ConfigError {
    /// The problems of an [`Invalid`](ConfigError::Invalid) error; empty for
    /// every other variant.
    #[must_use]
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems } => problems,
            _ => &[],
        }
    }
}

/// Formats the problem list of [`ConfigError::Invalid`].
struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "invalid configuration ({n} problem{})", if n == 1 { "" } else { "s" })?;
        for problem in self.0 {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The setting's name as an environment variable (`PORT`), or the key
    /// as written for an unknown key in the TOML file.
    pub setting: String,
    /// Where the offending value came from; [`Origin::Default`] when the
    /// problem is that the setting is missing.
    pub origin: Origin,
    /// The offending value as it may be shown: quoted, or `**** (N chars)`
    /// for `API_KEY`, `PROXY_API_KEYS` and `ADMIN_KEY`. `None` when missing.
    pub value: Option<String>,
    /// What is wrong.
    pub kind: ProblemKind,
}

/// What is wrong in a [`Problem`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The value is not accepted.
    Invalid {
        /// What the setting accepts, such as "an integer from 0 to 65535".
        expected: String,
    },
    /// The setting is required but set nowhere.
    Missing {
        /// Why it is required, such as "required when TYPE is openai".
        reason: String,
    },
    /// The TOML file has a key that is not a setting.
    UnknownKey {
        /// A suggestion, such as "keys are lowercase: use `port`", if any.
        hint: Option<String>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ProblemKind::Invalid { expected } => {
                write!(f, "{}", self.setting)?;
                if let Some(value) = &self.value {
                    write!(f, " = {value}")?;
                }
                write!(f, " (from {}): expected {expected}", self.origin)
            }
            ProblemKind::Missing { reason } => write!(f, "{} is not set: {reason}", self.setting),
            ProblemKind::UnknownKey { hint } => {
                write!(f, "unknown key `{}` (from {})", self.setting, self.origin)?;
                match hint {
                    Some(hint) => write!(f, ": {hint}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default (or nowhere, for a missing setting).
    Default,
    /// The TOML configuration file.
    File {
        /// The file.
        path: PathBuf,
        /// The key as written in the file.
        key: String,
    },
    /// The `.env` file.
    Dotenv {
        /// The file.
        path: PathBuf,
        /// The variable name used, such as `UNIPROXY_PORT` or `PORT`.
        var: String,
    },
    /// The process environment.
    Environment {
        /// The variable name used, such as `UNIPROXY_PORT` or `PORT`.
        var: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("built-in default"),
            Origin::File { path, key } => {
                write!(f, "config file {}, key `{key}`", path.display())
            }
            Origin::Dotenv { path, var } => {
                write!(f, ".env file {}, variable {var}", path.display())
            }
            Origin::Environment { var } => write!(f, "environment variable {var}"),
        }
    }
}
