//! The `.env` grammar of python-dotenv 1.2.2, whose `dotenv_values` the
//! original Python service read its settings with: [`parse`] splits the text
//! into statements as its `parser.py` does, and [`expand`] expands `${NAME}`
//! as its `variables.py` does. The crate docs describe the grammar for users.
//!
//! Each step either matches and moves the reader on, or fails and moves
//! nothing, like python-dotenv's reader, so a statement that does not parse
//! is skipped from exactly where python-dotenv stops. The one deliberate
//! difference: a leading byte-order mark is dropped, where python-dotenv
//! 1.2.2 makes it part of the first name (its current source drops it too).

/// One statement of a `.env` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Statement {
    /// `KEY=value`, or a bare `KEY` (value `None`).
    Set { key: String, value: Option<String> },
    /// A statement python-dotenv cannot parse. `key` is its key when parsing
    /// got that far; `line` is the 1-based line where the statement starts.
    Invalid { key: Option<String>, line: usize },
}

/// Parses `.env` text into its statements, in order. Values are returned as
/// written, before [`expand`].
pub(crate) fn parse(text: &str) -> Vec<Statement> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = Reader { text, pos: 0 };
    let mut statements = Vec::new();
    loop {
        reader.skip(is_space);
        if reader.rest().is_empty() {
            return statements;
        }
        let start = reader.pos;
        match statement(&mut reader) {
            Ok(Some((key, value))) => statements.push(Statement::Set { key, value }),
            Ok(None) => {}
            Err(key) => {
                statements.push(Statement::Invalid { key, line: line_of(text, start) });
                // Skip the rest of the line where parsing stopped, and its line end.
                reader.skip(|c| c != '\r' && c != '\n');
                let _ = reader.eat("\r") || reader.eat("\n");
            }
        }
    }
}

/// Parses one statement: `Ok(None)` for a comment, `Ok(Some((key, value)))`
/// for a binding, and `Err(key)` when it does not parse, with its key when
/// parsing got that far.
fn statement(r: &mut Reader<'_>) -> Result<Option<(String, Option<String>)>, Option<String>> {
    if let Some(after) = r.rest().strip_prefix("export") {
        let blanks = after.len() - after.trim_start_matches(is_blank).len();
        if blanks > 0 {
            r.pos += "export".len() + blanks;
        }
    }
    if r.rest().starts_with('#') {
        r.skip(|c| c != '\r' && c != '\n');
        let _ = r.eat("\r\n") || r.eat("\n") || r.eat("\r");
        return Ok(None);
    }
    let key = key(r).ok_or(None)?;
    r.skip(is_blank);
    let value = if r.eat("=") {
        r.skip(is_blank);
        Some(value(r).ok_or_else(|| Some(key.clone()))?)
    } else {
        None
    };
    // An optional comment, then the end of the line.
    let blanks = r.rest().len() - r.rest().trim_start_matches(is_blank).len();
    if r.rest()[blanks..].starts_with('#') {
        r.skip(|c| c != '\r' && c != '\n');
    }
    r.skip(is_blank);
    if r.eat("\r\n") || r.eat("\n") || r.eat("\r") || r.rest().is_empty() {
        Ok(Some((key, value)))
    } else {
        Err(Some(key))
    }
}

/// Parses a key: `[^=#\s]+`, or any text in single quotes.
fn key(r: &mut Reader<'_>) -> Option<String> {
    if let Some(inner) = r.rest().strip_prefix('\'') {
        let end = inner.find('\'').filter(|&end| end > 0)?;
        r.pos += end + 2;
        return Some(inner[..end].to_owned());
    }
    let name = r.skip(|c| c != '=' && c != '#' && !is_space(c));
    (!name.is_empty()).then(|| name.to_owned())
}

/// Parses the value after `=`: quoted, or the rest of the line.
fn value(r: &mut Reader<'_>) -> Option<String> {
    let rest = r.rest();
    match rest.chars().next() {
        Some(quote @ ('\'' | '"')) => {
            let inner = &rest[1..];
            let end = closing_quote(inner, quote)?;
            r.pos += end + 2;
            let escapes: &[char] = if quote == '\'' {
                &['\\', '\'']
            } else {
                &['\\', '\'', '"', 'a', 'b', 'f', 'n', 'r', 't', 'v']
            };
            Some(unescape(&inner[..end], escapes))
        }
        _ => {
            let line = r.skip(|c| c != '\r' && c != '\n');
            // An inline comment starts at a `#` that follows whitespace.
            let cut = line
                .char_indices()
                .zip(line.chars().skip(1))
                .find(|((_, before), c)| *c == '#' && is_space(*before))
                .map_or(line.len(), |((i, before), _)| i + before.len_utf8());
            Some(line[..cut].trim_end_matches(is_space).to_owned())
        }
    }
}

/// Where the value in `inner` (the text after an opening `quote`) ends, as
/// python-dotenv's regex `'((?:\\'|[^'])*)'` finds it: at the first quote
/// not preceded by a backslash, or else at the last quote of all.
fn closing_quote(inner: &str, quote: char) -> Option<usize> {
    let first_bare =
        inner.match_indices(quote).map(|(i, _)| i).find(|&i| !inner[..i].ends_with('\\'));
    first_bare.or_else(|| inner.rfind(quote))
}

/// Replaces each `\` + one of `escapes` by the character it stands for,
/// left to right, leaving any other backslash as written.
fn unescape(text: &str, escapes: &[char]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match chars.peek().copied() {
            Some(next) if c == '\\' && escapes.contains(&next) => {
                chars.next();
                out.push(match next {
                    'a' => '\x07',
                    'b' => '\x08',
                    'f' => '\x0c',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'v' => '\x0b',
                    other => other,
                });
            }
            _ => out.push(c),
        }
    }
    out
}

/// Expands `${NAME}` and `${NAME:-default}` in `value` as python-dotenv
/// does: `lookup(NAME)`, else the default, else empty. `$NAME` without
/// braces stays as written.
pub(crate) fn expand<'a>(value: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        // `${` NAME (no `}` or `:`), then optionally `:-` DEFAULT (no `}`), then `}`.
        let name_end = after.find(['}', ':']).unwrap_or(after.len());
        let name = &after[..name_end];
        let tail = &after[name_end..];
        let default_and_end = if tail.starts_with('}') {
            Some((None, name_end + 1))
        } else if let Some(default) = tail.strip_prefix(":-") {
            default.find('}').map(|end| (Some(&default[..end]), name_end + 2 + end + 1))
        } else {
            None
        };
        match default_and_end {
            Some((default, end)) => {
                out.push_str(lookup(name).or(default).unwrap_or_default());
                rest = &after[end..];
            }
            None => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Python's `\s`: Unicode whitespace, which includes the separators
/// U+001C to U+001F that Rust's `char::is_whitespace` leaves out.
fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Whitespace within a line (Python's `[^\S\r\n]`).
fn is_blank(c: char) -> bool {
    is_space(c) && c != '\r' && c != '\n'
}

/// The 1-based line of byte offset `pos`, counting LF, CRLF and CR.
fn line_of(text: &str, pos: usize) -> usize {
    let before = &text[..pos];
    1 + before.matches('\n').count() + before.matches('\r').count() - before.matches("\r\n").count()
}

/// A position in the text; it only moves forward.
struct Reader<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    /// Moves past `prefix` if the text continues with it.
    fn eat(&mut self, prefix: &str) -> bool {
        let found = self.rest().starts_with(prefix);
        if found {
            self.pos += prefix.len();
        }
        found
    }

    /// Moves past the characters that satisfy `keep` and returns them.
    fn skip(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let rest = self.rest();
        let taken = &rest[..rest.len() - rest.trim_start_matches(keep).len()];
        self.pos += taken.len();
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statements of `text` on one line: `KEY="value"`, a bare `KEY`, and
    /// `!KEY@LINE` for a statement that does not parse.
    fn render(text: &str) -> String {
        let rendered: Vec<String> = parse(text)
            .into_iter()
            .map(|statement| match statement {
                Statement::Set { key, value: Some(value) } => format!("{key}={value:?}"),
                Statement::Set { key, value: None } => key,
                Statement::Invalid { key, line } => format!("!{}@{line}", key.unwrap_or_default()),
            })
            .collect();
        rendered.join(" ")
    }

    /// Each expectation is what python-dotenv 1.2.2 parses from the text
    /// (`dotenv_values` with interpolation off, and its warnings).
    #[test]
    fn grammar_matches_python_dotenv() {
        let cases = [
            ("A=1", r#"A="1""#),
            ("export A=1", r#"A="1""#),
            ("export=1", r#"export="1""#),
            ("A = 1 ", r#"A="1""#),
            ("A=", r#"A="""#),
            ("A", "A"),
            ("A=x\nA", r#"A="x" A"#),
            ("A=My Old Proxy", r#"A="My Old Proxy""#),
            ("A= https://a , https://b ", r#"A="https://a , https://b""#),
            ("A=a#b # c", r#"A="a#b""#),
            ("A=#x", r##"A="#x""##),
            // The blanks after `=` are not part of the value, so this `#` starts it.
            ("A=  # c", r##"A="# c""##),
            ("A=b\u{a0}#c", r#"A="b""#),
            ("A=sk-pa$word", r#"A="sk-pa$word""#),
            ("A='x # y'  # c", r#"A="x # y""#),
            (r"A='it\'s'", r#"A="it's""#),
            (r"A='a\\'", r#"A="a\\""#),
            (r"A='x\\'y'", r#"A="x\\'y""#),
            (r"A='a\nb'", r#"A="a\\nb""#),
            (r#"A="t\tn\nq\"s\'b\\""#, r#"A="t\tn\nq\"s'b\\""#),
            (r#"A="\a\b\f\r\v\x""#, r#"A="\u{7}\u{8}\u{c}\r\u{b}\\x""#),
            (r##"A="a\\'"#c"##, r#"A="a\\'""#),
            ("A=\"multi\nline\"", r#"A="multi\nline""#),
            ("A=''", r#"A="""#),
            ("A=\"\"", r#"A="""#),
            ("'K k'=v", r#"K k="v""#),
            ("A=1\r\nB=2\rC=3", r#"A="1" B="2" C="3""#),
            ("\u{feff}A=1", r#"A="1""#),
            ("#c\n  # d\nA=1 #e\n\n", r#"A="1""#),
            // Statements python-dotenv skips up to the end of the line where
            // parsing stopped; the statements after them still count.
            ("A='unterminated\nB=2", r#"!A@1 B="2""#),
            ("A=\"x\" junk\nB=2", r#"!A@1 B="2""#),
            // The quoted value runs to the next quote, on line 2, and stops there.
            ("A='abc\nB='x'\nC=3", r#"!A@1 C="3""#),
            ("A 1\nB=2", r#"!A@1 B="2""#),
            ("K\u{1c}X=1", "!K@1"),
            ("=x\nB=1", r#"!@1 B="1""#),
            ("export  =1\nB=2", r#"!@1 B="2""#),
            ("A=\"x\"\\\nB=1", r#"!A@1 B="1""#),
            ("A=1\r\n\r\n\nB='x", r#"A="1" !B@4"#),
            ("'A=1\nB=2", r#"!@1 B="2""#),
        ];
        for (text, expected) in cases {
            assert_eq!(render(text), expected, "{text:?}");
        }
    }

    /// Each expectation is what python-dotenv 1.2.2 expands the value to,
    /// with `HOME=/root` and `EMPTY=` set and nothing else.
    #[test]
    fn expansion_matches_python_dotenv() {
        let env = |name: &str| match name {
            "HOME" => Some("/root"),
            "EMPTY" => Some(""),
            _ => None,
        };
        let cases = [
            ("sk-pa$word$HOME", "sk-pa$word$HOME"),
            ("sk-ab$1x", "sk-ab$1x"),
            ("sk-${HOME}", "sk-/root"),
            ("${NOPE:-def}", "def"),
            ("${HOME:-def}", "/root"),
            ("${EMPTY:-def}", ""),
            ("${NOPE}", ""),
            ("${NOPE:-}", ""),
            ("${X:Y}", "${X:Y}"),
            ("${X:-a:b}", "a:b"),
            ("${}", ""),
            ("${A${B}}", "}"),
            ("${HOME", "${HOME"),
            ("${NOPE:-x", "${NOPE:-x"),
            ("$${HOME}$", "$/root$"),
        ];
        for (value, expected) in cases {
            assert_eq!(expand(value, env), expected, "{value:?}");
        }
    }
}
