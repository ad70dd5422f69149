//! Header redaction: every shape, the fast path for already-redacted headers,
//! and the cases where the fast path must hand over to the full parse.
#![allow(clippy::unwrap_used)]

use uniproxy_logstore::redact_headers;

/// `(input, expected output)`: `None` means "returned byte for byte", `Some`
/// is compared as JSON (a rewritten object may reorder its keys).
const CASES: &[(&str, Option<&str>)] = &[
    // No secret header: kept as it is, whitespace and all.
    (r#"{ "accept" : "*/*", "x-n": 1, "x-nested": {"authorization": "kept"} }"#, None),
    // Already redacted by the server (the proxy's case): kept as it is.
    (
        r#"{"content-type":"application/json","authorization":"[redacted]","Cookie":"[redacted]"}"#,
        None,
    ),
    // A secret header with a value: redacted.
    (
        r#"{"authorization":"Bearer sk-1","accept":"*/*"}"#,
        Some(r#"{"authorization":"[redacted]","accept":"*/*"}"#),
    ),
    (r#"{"Set-Cookie":["a=1","b=2"]}"#, Some(r#"{"Set-Cookie":"[redacted]"}"#)),
    (r#"{"Set-Cookie":["[redacted]"]}"#, Some(r#"{"Set-Cookie":"[redacted]"}"#)),
    (
        r#"{"cookie":{"value":"[redacted]"},"api-key":null,"x-api-key":7}"#,
        Some(r#"{"cookie":"[redacted]","api-key":"[redacted]","x-api-key":"[redacted]"}"#),
    ),
    (r#"{"authorization":"[redacted] sk-8"}"#, Some(r#"{"authorization":"[redacted]"}"#)),
    (r#"{"authorization":"\u005bredacted]"}"#, None),
    (r#"{" x-api-key ":"k"}"#, Some(r#"{" x-api-key ":"[redacted]"}"#)),
    // An escaped key is still a secret key.
    (r#"{"authoriz\u0061tion":"Bearer sk-2"}"#, Some(r#"{"authorization":"[redacted]"}"#)),
    // A repeated secret key whose last copy is redacted: the first must not survive.
    (
        r#"{"authorization":"Bearer sk-3","authorization":"[redacted]"}"#,
        Some(r#"{"authorization":"[redacted]"}"#),
    ),
    // `[redacted]` in another header does not clear a secret one.
    (
        r#"{"x-note":"[redacted]","api-key":"k4"}"#,
        Some(r#"{"x-note":"[redacted]","api-key":"[redacted]"}"#),
    ),
    // The pair and name/value shapes.
    (
        r#"[["authorization","Bearer x"],["accept","*/*"]]"#,
        Some(r#"[["authorization","[redacted]"],["accept","*/*"]]"#),
    ),
    (r#"[["authorization","[redacted]"]]"#, None),
    (
        r#"{"name":"Authorization","value":"Bearer y"}"#,
        Some(r#"{"name":"Authorization","value":"[redacted]"}"#),
    ),
    (r#"{"name":"accept","value":"*/*"}"#, None),
    // A secret key beside `name`/`value` is redacted too.
    (
        r#"{"name":"accept","value":"*/*","cookie":"c=5"}"#,
        Some(r#"{"name":"accept","value":"*/*","cookie":"[redacted]"}"#),
    ),
    // Not JSON, or JSON followed by more text: replaced whole.
    ("authorization: Bearer sk-6", Some(r#""[redacted: headers were not valid json]""#)),
    (
        r#"{"accept":"*/*"} authorization: Bearer sk-7"#,
        Some(r#""[redacted: headers were not valid json]""#),
    ),
    (r#"{"accept":"*/*""#, Some(r#""[redacted: headers were not valid json]""#)),
    ("  ", Some("{}")),
];

#[test]
fn redaction_cases() {
    for (input, expected) in CASES {
        let out = redact_headers(input);
        match expected {
            None => assert_eq!(&out, input),
            Some(expected) => {
                let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
                assert_eq!(parsed, serde_json::from_str::<serde_json::Value>(expected).unwrap());
                assert!(
                    !out.contains("sk-") && !out.contains("k4") && !out.contains("c=5"),
                    "{out}"
                );
            }
        }
    }
}
