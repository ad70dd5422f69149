//! Writing CSV records (RFC 4180 quoting).
//!
//! Twenty lines instead of the `csv` crate: we only write, every field is
//! already a string, and the quoting rule is short.

use std::io::{self, Write};

/// Writes one record: fields separated by commas, ended by `\r\n` (RFC 4180).
/// A field holding a comma, a quote, CR or LF, or starting or ending with a
/// space, is put in quotes with its quotes doubled; quoted fields may span lines.
///
/// A field a spreadsheet would read as a formula (starting with `=`, `+`, `-`, `@`, a tab
/// or CR, and not a number) gets a leading `'`, which spreadsheets read as "text": a
/// client's model name or prompt must not run in the operator's spreadsheet (OWASP's CSV
/// injection advice). The JSON Lines export keeps every value as it is.
pub(crate) fn write_record<S: AsRef<str>>(out: &mut dyn Write, fields: &[S]) -> io::Result<()> {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        let field = field.as_ref();
        let formula =
            field.starts_with(['=', '+', '-', '@', '\t', '\r']) && field.parse::<f64>().is_err();
        let texted;
        let field = if formula {
            texted = format!("'{field}");
            texted.as_str()
        } else {
            field
        };
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

    #[test]
    fn a_field_a_spreadsheet_would_run_is_written_as_text() {
        let mut out = Vec::new();
        let fields =
            ["=cmd|' /C calc'!A0", "+SUM(1,1)", "@SUM(1)", "-2+3", "\t=1", "-5", "1e3", "a=b"];
        write_record(&mut out, &fields).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "'=cmd|' /C calc'!A0,\"'+SUM(1,1)\",'@SUM(1),'-2+3,'\t=1,-5,1e3,a=b\r\n"
        );
    }
}
