//! A request's headers as the store keeps them: one JSON object, credentials redacted.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::redact::redact_headers_cow;
use crate::{REDACTED, is_secret_header};

/// The request headers of a [`NewEntry`](crate::NewEntry), as JSON text.
///
/// Any text converts into one (`"…".into()`, `String::into`); the store then
/// checks it and redacts every credential before writing (see
/// [`redact_headers`](crate::redact_headers)). Headers built with
/// [`HeadersBuilder`] are redacted as they are written and skip that check,
/// which is most of what a header dump costs the writer. Reads and dereferences
/// as the text (`&str`).
///
/// ```
/// use uniproxy_logstore::{Headers, HeadersBuilder};
///
/// let mut b = HeadersBuilder::with_capacity(64);
/// b.header("content-type", b"application/json");
/// b.header("Authorization", b"Bearer sk-secret");
/// let built: Headers = b.finish();
/// assert_eq!(built, r#"{"content-type":"application/json","Authorization":"[redacted]"}"#);
///
/// // Text from elsewhere is redacted by the store when written.
/// let dumped = Headers::from(r#"{"authorization":"Bearer sk-secret"}"#);
/// assert_eq!(dumped.len(), 36);
/// ```
#[derive(Clone, Default)]
pub struct Headers {
    json: String,
    /// Known to hold no credential: built by [`HeadersBuilder`] or read back from the store.
    checked: bool,
}

/// Two headers are equal when their text is, however each was made.
impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}

impl Eq for Headers {}

impl Headers {
    /// The JSON text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.json
    }

    /// Text read back from the store, which redacted it when it was written.
    pub(crate) fn stored(json: String) -> Self {
        Self { json, checked: true }
    }

    /// Whether the text is known to hold no credential, so the store can write it unchecked.
    #[cfg(test)]
    pub(crate) fn is_checked(&self) -> bool {
        self.checked
    }

    /// The text as the store writes it: as it is when known to hold no credential, else
    /// through [`redact_headers`](crate::redact_headers).
    pub(crate) fn redacted(&self) -> Cow<'_, str> {
        if self.checked { Cow::Borrowed(&self.json) } else { redact_headers_cow(&self.json) }
    }
}

impl Deref for Headers {
    type Target = str;
    fn deref(&self) -> &str {
        &self.json
    }
}

impl From<String> for Headers {
    fn from(json: String) -> Self {
        Self { json, checked: false }
    }
}

impl From<&str> for Headers {
    fn from(json: &str) -> Self {
        Self::from(json.to_owned())
    }
}

impl PartialEq<str> for Headers {
    fn eq(&self, other: &str) -> bool {
        self.json == other
    }
}

impl PartialEq<&str> for Headers {
    fn eq(&self, other: &&str) -> bool {
        self.json == *other
    }
}

impl fmt::Debug for Headers {
    /// Unchecked text is shown redacted: a debug print must not leak the key it would store.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.redacted(), f)
    }
}

impl Serialize for Headers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.json)
    }
}

impl<'de> Deserialize<'de> for Headers {
    /// Read as text from elsewhere: checked again when stored.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
}

/// Writes a [`Headers`] object one header at a time, every credential's value
/// replaced by [`REDACTED`] as it goes (the names in
/// [`SECRET_HEADERS`](crate::SECRET_HEADERS), in any case).
///
/// A value that is not UTF-8 is kept with U+FFFD in place of its invalid bytes.
/// Call [`header`](Self::header) once per name and
/// [`header_values`](Self::header_values) for a name sent more than once.
#[derive(Debug, Clone)]
pub struct HeadersBuilder {
    out: Vec<u8>,
    /// A header called `name` makes the object look like one header in the name/value shape,
    /// which [`redact_headers`](crate::redact_headers) redacts by another rule: such an object
    /// is left to the store's check.
    named: bool,
}

impl HeadersBuilder {
    /// An empty object, with room for about `bytes` of text.
    #[must_use]
    pub fn with_capacity(bytes: usize) -> Self {
        let mut out = Vec::with_capacity(bytes.max(2));
        out.push(b'{');
        Self { out, named: false }
    }

    /// Adds a header sent once.
    pub fn header(&mut self, name: &str, value: &[u8]) {
        let secret = self.member(name);
        self.value(secret, value);
    }

    /// Adds a header sent more than once: its values as an array, in order.
    pub fn header_values<'v>(&mut self, name: &str, values: impl IntoIterator<Item = &'v [u8]>) {
        let secret = self.member(name);
        self.out.push(b'[');
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.value(secret, value);
        }
        self.out.push(b']');
    }

    /// The finished object.
    #[must_use]
    pub fn finish(mut self) -> Headers {
        self.out.push(b'}');
        // Only &str names and serde_json's or checked ASCII values went in.
        let json = String::from_utf8(self.out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Headers { json, checked: !self.named }
    }

    /// Opens the member `name`; returns whether its value is a secret.
    fn member(&mut self, name: &str) -> bool {
        if self.out.len() > 1 {
            self.out.push(b',');
        }
        // A header name is a token (RFC 9110): nothing to escape, as for almost every value.
        if plain(name.as_bytes()) {
            self.out.push(b'"');
            self.out.extend_from_slice(name.as_bytes());
            self.out.push(b'"');
        } else {
            // Writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut self.out, name);
        }
        self.out.push(b':');
        self.named |= name == "name";
        is_secret_header(name)
    }

    fn value(&mut self, secret: bool, value: &[u8]) {
        if secret {
            self.out.push(b'"');
            self.out.extend_from_slice(REDACTED.as_bytes());
            self.out.push(b'"');
        } else if plain(value) {
            self.out.push(b'"');
            self.out.extend_from_slice(value);
            self.out.push(b'"');
        } else {
            let _ = serde_json::to_writer(&mut self.out, &String::from_utf8_lossy(value));
        }
    }
}

/// Printable ASCII with nothing a JSON string must escape.
fn plain(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::redact_headers;

    #[test]
    fn built_headers_are_what_the_stores_check_would_keep() {
        let mut b = HeadersBuilder::with_capacity(0);
        b.header("content-type", b"application/json");
        b.header("X-Api-Key", b"sk-1");
        b.header_values("cookie", [&b"a=1"[..], b"b=2"]);
        b.header_values("accept", [&b"text/plain"[..], b"*/*"]);
        b.header("x-quote", b"say \"hi\"\\");
        b.header("x-latin1", b"caf\xe9");
        b.header("we\"ird", b"v");
        let built = b.finish();
        assert!(built.is_checked());
        let parsed: serde_json::Value = serde_json::from_str(&built).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({
                "content-type": "application/json",
                "X-Api-Key": "[redacted]",
                "cookie": ["[redacted]", "[redacted]"],
                "accept": ["text/plain", "*/*"],
                "x-quote": "say \"hi\"\\",
                "x-latin1": "caf\u{fffd}",
                "we\"ird": "v",
            })
        );
        // What the check would keep as it is, byte for byte; a repeated secret header's array
        // of placeholders it would fold into one placeholder (the object written again).
        let mut b = HeadersBuilder::with_capacity(0);
        b.header("content-type", b"application/json");
        b.header("X-Api-Key", b"sk-1");
        b.header_values("accept", [&b"text/plain"[..], b"*/*"]);
        b.header("x-latin1", b"caf\xe9");
        let built = b.finish();
        assert_eq!(redact_headers(&built), built.as_str());
    }

    #[test]
    fn an_empty_builder_is_an_empty_object() {
        let built = HeadersBuilder::with_capacity(16).finish();
        assert_eq!(built, "{}");
        assert!(built.is_checked());
    }

    #[test]
    fn a_header_called_name_is_left_to_the_stores_check() {
        let mut b = HeadersBuilder::with_capacity(64);
        b.header("name", b"authorization");
        b.header("value", b"Bearer sk-1");
        let built = b.finish();
        assert!(!built.is_checked());
        assert!(redact_headers(&built).contains(REDACTED));
    }

    #[test]
    fn text_from_elsewhere_is_unchecked_and_prints_redacted() {
        let h = Headers::from(r#"{"authorization":"Bearer sk-1"}"#);
        assert!(!h.is_checked());
        assert_eq!(format!("{h:?}"), r#""{\"authorization\":\"[redacted]\"}""#);
        let back: Headers = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert!(!back.is_checked());
        assert_eq!(back, h);
        assert_eq!(Headers::stored(String::from("{}")), Headers::from("{}"));
    }
}
