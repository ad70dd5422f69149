//! Header redaction: no credential reaches the store.

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
    SECRET_HEADERS.iter().any(|secret| secret.eq_ignore_ascii_case(name.trim()))
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
    // Cheap pre-check: most header dumps are fine, and the writer calls this
    // for every entry, so skip the parse when no secret name can be present.
    let lower = headers_json.to_ascii_lowercase();
    let maybe_secret = SECRET_HEADERS.iter().any(|name| lower.contains(name));
    match serde_json::from_str::<Value>(headers_json) {
        Ok(_) if !maybe_secret => headers_json.to_owned(),
        Ok(mut value) => {
            if redact_value(&mut value) {
                value.to_string()
            } else {
                headers_json.to_owned()
            }
        }
        Err(_) if headers_json.trim().is_empty() => String::from("{}"),
        Err(_) => String::from("\"[redacted: headers were not valid json]\""),
    }
}

/// Redacts in place; returns whether anything changed.
fn redact_value(value: &mut Value) -> bool {
    let mut changed = false;
    match value {
        Value::Object(map) => {
            // An object with "name"/"value" keys is one header, not a map.
            let named = map.get("name").and_then(Value::as_str).map(is_secret_header);
            if let Some(secret) = named {
                if secret && let Some(v) = map.get_mut("value") {
                    changed |= set_redacted(v);
                }
                return changed;
            }
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
