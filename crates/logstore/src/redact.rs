//! Header redaction: no credential reaches the store.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde_json::Value;

/// The placeholder stored instead of a secret header value.
pub const REDACTED: &str = "[redacted]";

/// Header names (compared without regard to case) whose values are never stored.
pub const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "api-key",
    "x-api-key",
    "x-goog-api-key",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// Returns `true` if a header with this name carries a credential.
///
/// ```
/// assert!(uniproxy_logstore::is_secret_header("Authorization"));
/// assert!(!uniproxy_logstore::is_secret_header("content-type"));
/// ```
#[must_use]
pub fn is_secret_header(name: &str) -> bool {
    // Trimmed once, not once per secret name: the server and the writer ask for every header
    // of every request.
    let name = name.trim();
    SECRET_HEADERS.iter().any(|secret| secret.eq_ignore_ascii_case(name))
}

/// Replaces the value of every secret header in a JSON header dump with
/// [`REDACTED`].
///
/// Three shapes are understood, as they are the ones HTTP libraries produce:
/// an object (`{"authorization": "Bearer …"}`, values may be arrays), an array
/// of pairs (`[["authorization", "Bearer …"]]`), and an array of objects with
/// `name` and `value` keys. Text that redacts nothing is returned unchanged.
/// Text that is not JSON cannot be checked, so it is replaced whole by a JSON
/// string saying so: storing it could leak a key.
///
/// ```
/// let out = uniproxy_logstore::redact_headers(r#"{"Authorization":"Bearer sk-1","accept":"*/*"}"#);
/// assert_eq!(out, r#"{"Authorization":"[redacted]","accept":"*/*"}"#);
/// ```
#[must_use]
pub fn redact_headers(headers_json: &str) -> String {
    redact_headers_cow(headers_json).into_owned()
}

/// [`redact_headers`] without the copy when the text is kept as it is.
///
/// The writer calls this for every entry whose headers the store's own
/// [`HeadersBuilder`](crate::HeadersBuilder) did not write. Such text usually
/// comes already redacted (an older log replayed, an embedder's own dump), a
/// JSON object whose secret headers (if any) hold [`REDACTED`]. One
/// allocation-free pass over the text ([`check_object`]) proves that; anything
/// else takes the full parse.
pub(crate) fn redact_headers_cow(headers_json: &str) -> Cow<'_, str> {
    let verdict = check_object(headers_json);
    if verdict == Verdict::Clean {
        return Cow::Borrowed(headers_json);
    }
    match serde_json::from_str::<Value>(headers_json) {
        Ok(mut value) => {
            // A secret key that appears twice collapses to one in `value`; if
            // the check saw an unredacted one, write `value` (now redacted)
            // even when the copy that survived the parse was already redacted.
            if redact_value(&mut value) || verdict == Verdict::Secret {
                Cow::Owned(value.to_string())
            } else {
                Cow::Borrowed(headers_json)
            }
        }
        Err(_) if headers_json.trim().is_empty() => Cow::Borrowed("{}"),
        Err(_) => Cow::Borrowed("\"[redacted: headers were not valid json]\""),
    }
}

/// What [`check_object`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Valid JSON, an object without a `name` key, and every secret header in it
    /// holds exactly [`REDACTED`]: [`redact_value`] would change nothing.
    Clean,
    /// A secret header holds something else.
    Secret,
    /// Not an object, a `name` key (the name/value shape), or not JSON: the
    /// full parse decides.
    Unsure,
}

/// Checks a flat header object in one pass, allocating only for the values of
/// secret headers.
fn check_object(text: &str) -> Verdict {
    struct Check;
    impl<'de> serde::de::Visitor<'de> for Check {
        type Value = Verdict;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a header object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Verdict, A::Error> {
            let (mut secret, mut named) = (false, false);
            while let Some(key) = map.next_key::<Key>()? {
                // Possibly one header in the name/value shape: the full parse decides, but
                // keep reading so that the text is still validated.
                named |= key == Key::Name;
                if key == Key::Secret {
                    let value = map.next_value::<Value>()?;
                    secret |= value.as_str() != Some(REDACTED);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(if secret {
                Verdict::Secret
            } else if named {
                Verdict::Unsure
            } else {
                Verdict::Clean
            })
        }
    }
    /// What a key is, read without allocating (an escaped key is decoded
    /// into serde_json's scratch buffer).
    #[derive(PartialEq)]
    enum Key {
        Name,
        Secret,
        Other,
    }
    impl<'de> serde::Deserialize<'de> for Key {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl serde::de::Visitor<'_> for Visit {
                type Value = Key;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a header name")
                }
                fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key, E> {
                    Ok(if key == "name" {
                        Key::Name
                    } else if is_secret_header(key) {
                        Key::Secret
                    } else {
                        Key::Other
                    })
                }
            }
            d.deserialize_str(Visit)
        }
    }

    let mut de = serde_json::Deserializer::from_str(text);
    let verdict = serde::Deserializer::deserialize_any(&mut de, Check);
    match verdict {
        // `end` rejects trailing text, as `serde_json::from_str` does.
        Ok(verdict) if de.end().is_ok() => verdict,
        _ => Verdict::Unsure,
    }
}

/// Redacts in place; returns whether anything changed.
fn redact_value(value: &mut Value) -> bool {
    let mut changed = false;
    match value {
        Value::Object(map) => {
            // An object with "name"/"value" keys is one header, not a map.
            let named = map.get("name").and_then(Value::as_str).map(is_secret_header);
            if named == Some(true)
                && let Some(v) = map.get_mut("value")
            {
                changed |= set_redacted(v);
            }
            // Secret keys beside `name`/`value` are redacted too.
            for (name, v) in map.iter_mut() {
                if is_secret_header(name) {
                    changed |= set_redacted(v);
                }
            }
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                match item {
                    Value::Array(pair) if pair.len() == 2 => {
                        let secret =
                            pair.first().and_then(Value::as_str).is_some_and(is_secret_header);
                        if secret && let Some(v) = pair.get_mut(1) {
                            changed |= set_redacted(v);
                        }
                    }
                    Value::Object(_) => changed |= redact_value(item),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    changed
}

fn set_redacted(value: &mut Value) -> bool {
    if value.as_str() == Some(REDACTED) {
        return false;
    }
    *value = Value::String(REDACTED.to_owned());
    true
}
