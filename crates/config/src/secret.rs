//! A string that must never be printed: API keys and admin keys.

use std::borrow::Cow;
use std::fmt;

/// A secret string, such as an upstream API key or a proxy client key.
///
/// `Debug` and `Display` print `[redacted]`, so a secret cannot leak through
/// `{:?}` of [`Settings`](crate::Settings) or through a log line. Call
/// [`expose`](Self::expose) at the one place that really needs the text,
/// and [`matches`](Self::matches) to check a key a client sent.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Returns the secret text. Use it only where the value leaves the
    /// process on purpose, such as an upstream `Authorization` header.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Returns `true` when the secret is the empty string.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares `candidate` with the secret in time that depends only on the
    /// lengths, not on where the first differing byte is, so that a client
    /// cannot guess a key byte by byte from response times.
    #[must_use]
    pub fn matches(&self, candidate: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), candidate.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How a secret value appears in an error message: its length, never its text.
pub(crate) fn mask(value: &str) -> String {
    format!("**** ({} chars)", value.chars().count())
}

/// `text` with what a URL in it may carry as credentials replaced by
/// `****`: the password (`user:****@`, or `****@` for a userinfo without
/// one, which is often a token) and the query and fragment (`?****`). What
/// is left (scheme, user, host, path) still shows what is wrong.
pub(crate) fn redact_url(text: &str) -> Cow<'_, str> {
    let Some((scheme, rest)) = text.split_once("://") else { return Cow::Borrowed(text) };
    let (main, query) = rest.split_at(rest.find(['?', '#']).unwrap_or(rest.len()));
    // Up to the last `@`, so that a password with an unescaped `/` or `@` is hidden too.
    let userinfo = main.rsplit_once('@');
    if userinfo.is_none() && query.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = format!("{scheme}://");
    match userinfo {
        Some((userinfo, host_and_path)) => {
            if let Some((user, _password)) = userinfo.split_once(':') {
                out.push_str(user);
                out.push(':');
            }
            out.push_str("****@");
            out.push_str(host_and_path);
        }
        None => out.push_str(main),
    }
    if let Some(separator) = query.chars().next() {
        out.push(separator);
        out.push_str("****");
    }
    Cow::Owned(out)
}
