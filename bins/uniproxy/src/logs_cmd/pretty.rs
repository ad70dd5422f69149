//! Re-indenting JSON text for `logs show`.
//!
//! The text is checked with serde and then re-indented token by token rather
//! than parsed into a `Value`, so that the output shows the body byte for byte
//! as it was sent: numbers (a `Value` writes `1.0e3` as `1000.0`) and string
//! escapes (`\u00e9` stays as it is) are kept. The keys keep their order either
//! way (uniproxy-wire turns on serde_json's `preserve_order`), but a tool that
//! reads the store without it would sort them.

/// The JSON text indented by two spaces (as `serde_json::to_string_pretty`
/// lays it out), or `None` when the text is not JSON.
pub(crate) fn pretty_json(text: &str) -> Option<String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    let mut depth = 0usize;
    let (mut in_string, mut escaped, mut after_open) = (false, false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        if c.is_ascii_whitespace() {
            continue;
        }
        if after_open {
            after_open = false;
            if c == '}' || c == ']' {
                // An empty object or array stays on one line: `{}`, `[]`.
                depth = depth.saturating_sub(1);
                out.push(c);
                continue;
            }
            newline(&mut out, depth);
        }
        match c {
            '{' | '[' => {
                out.push(c);
                depth += 1;
                after_open = true;
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            '"' => {
                in_string = true;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    Some(out)
}

fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("  ");
    }
}

#[cfg(test)]
mod tests {
    use super::pretty_json;

    #[test]
    fn matches_serde_layout_and_keeps_key_order() {
        let text = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"a \"quoted\", {x}: [y]"}],"tools":[],"meta":{},"temperature":0.70}"#;
        let expected = "{\n  \"model\": \"gpt-4o\",\n  \"messages\": [\n    {\n      \"role\": \"user\",\n      \"content\": \"a \\\"quoted\\\", {x}: [y]\"\n    }\n  ],\n  \"tools\": [],\n  \"meta\": {},\n  \"temperature\": 0.70\n}";
        assert_eq!(pretty_json(text).as_deref(), Some(expected));
    }

    #[test]
    fn rejects_non_json() {
        assert_eq!(pretty_json("data: {\"a\":1}\n\n"), None);
        assert_eq!(pretty_json(""), None);
    }
}
