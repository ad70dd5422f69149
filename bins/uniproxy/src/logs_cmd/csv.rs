//! Writing CSV records (RFC 4180 quoting).
//!
//! Twenty lines instead of the `csv` crate: we only write, every field is
//! already a string, and the quoting rule is short.

use std::io::{self, Write};

/// Writes one record: fields separated by commas, ended by `\r\n` (RFC 4180).
/// A field holding a comma, a quote, CR or LF, or starting or ending with a
/// space, is put in quotes with its quotes doubled; quoted fields may span lines.
pub(crate) fn write_record<S: AsRef<str>>(out: &mut dyn Write, fields: &[S]) -> io::Result<()> {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        let field = field.as_ref();
        let needs_quotes = field.contains([',', '"', '\r', '\n'])
            || field.starts_with(' ')
            || field.ends_with(' ');
        if needs_quotes {
            out.write_all(b"\"")?;
            out.write_all(field.replace('"', "\"\"").as_bytes())?;
            out.write_all(b"\"")?;
        } else {
            out.write_all(field.as_bytes())?;
        }
    }
    out.write_all(b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::write_record;

    #[test]
    fn quotes_only_what_needs_it() {
        let mut out = Vec::new();
        write_record(&mut out, &["plain", "a,b", "say \"hi\"", "two\nlines", "", " pad"]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",,\" pad\"\r\n"
        );
    }
}
