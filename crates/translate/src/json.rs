//! Compact JSON out, as `serde_json::to_vec` writes it, byte for byte, with strings escaped
//! eight bytes at a time.
//!
//! serde_json escapes a string a byte at a time through a table, about six instructions a
//! byte: for a translated request that is most of its cost (a 20 KB history is text). This
//! serializer writes the same bytes (a proptest holds the two to it) and leaves numbers to
//! serde_json itself. Anything it does not write the way serde_json does — a map key that is
//! not a string, serde_json's raw values — is an error here, and [`to_vec`] then asks
//! serde_json.

use serde::ser::{self, Serialize};

/// `value` as compact JSON, in a vector of at least `capacity`.
///
/// # Errors
/// What `serde_json::to_vec` gives for `value` (our own types never fail).
pub(crate) fn to_vec<T: Serialize + ?Sized>(
    value: &T,
    capacity: usize,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(capacity);
    write_into(&mut out, value)?;
    Ok(out)
}

/// Appends `value` as compact JSON to `out`; on an error `out` is as it was.
///
/// # Errors
/// What `serde_json::to_writer` gives for `value` (our own types never fail).
pub(crate) fn write_into<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> Result<(), serde_json::Error> {
    let len = out.len();
    if value.serialize(&mut Writer { out: &mut *out }).is_ok() {
        return Ok(());
    }
    out.truncate(len);
    let written = serde_json::to_writer(&mut *out, value);
    if written.is_err() {
        out.truncate(len);
    }
    written
}

/// Appends `text` as a JSON string, escaped as serde_json escapes it: `"` and `\` with a
/// backslash, `\b \t \n \f \r` by name, other control characters as `\u00xx`; nothing else.
pub(crate) fn escape_into(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Eight bytes at a time while none needs escaping, then the next eight (or the few
        // left) one at a time.
        while let Some(word) = bytes.get(i..i + 8) {
            let word = u64::from_le_bytes(<[u8; 8]>::try_from(word).unwrap_or([0; 8]));
            if needs_escape(word) {
                break;
            }
            i += 8;
        }
        let end = bytes.len().min(i + 8);
        while i < end {
            let byte = bytes[i];
            i += 1;
            let kind = ESCAPE[usize::from(byte)];
            if kind == 0 {
                continue;
            }
            out.extend_from_slice(&bytes[run..i - 1]);
            if kind == b'u' {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0xf)]);
            } else {
                out.extend_from_slice(&[b'\\', kind]);
            }
            run = i;
        }
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// For each byte, what follows the backslash that escapes it (`u` for `\u00xx`), or 0.
static ESCAPE: [u8; 256] = {
    let mut table = [0; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Whether any of eight bytes is a control character, a quote or a backslash (the test
/// serde_json's own reader uses to skip strings).
#[inline]
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = u64::MAX / 255;
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (control | quote | backslash) & (ONES << 7) != 0
}

/// Something serde_json writes its own way; [`to_vec`] asks serde_json.
fn unsupported() -> serde_json::Error {
    ser::Error::custom("left to serde_json")
}

/// The names serde_json gives its raw values and arbitrary-precision numbers.
fn is_serde_json_private(name: &str) -> bool {
    name.starts_with("$serde_json::private::")
}

/// What a value and a map key write alike: strings, characters, unit variants (their names)
/// and newtype structs (their content).
macro_rules! strings {
    () => {
        fn serialize_str(self, v: &str) -> Result<(), serde_json::Error> {
            escape_into(self.out, v);
            Ok(())
        }
        fn serialize_char(self, v: char) -> Result<(), serde_json::Error> {
            escape_into(self.out, v.encode_utf8(&mut [0; 4]));
            Ok(())
        }
        fn serialize_unit_variant(
            self,
            _name: &'static str,
            _index: u32,
            variant: &'static str,
        ) -> Result<(), serde_json::Error> {
            self.serialize_str(variant)
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(
            self,
            name: &'static str,
            value: &T,
        ) -> Result<(), serde_json::Error> {
            if is_serde_json_private(name) {
                return Err(unsupported());
            }
            value.serialize(self)
        }
    };
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    /// A number, as serde_json writes it.
    fn number<T: Serialize>(&mut self, value: T) -> Result<(), serde_json::Error> {
        serde_json::to_writer(&mut *self.out, &value)
    }
}

/// An array or object being written: whether a comma comes before the next element, and
/// what closes it.
struct Compound<'w, 'a> {
    writer: &'w mut Writer<'a>,
    first: bool,
    close: &'static [u8],
}

impl Compound<'_, '_> {
    fn comma(&mut self) {
        if !self.first {
            self.writer.out.push(b',');
        }
        self.first = false;
    }

    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &str,
        value: &T,
    ) -> Result<(), serde_json::Error> {
        self.comma();
        escape_into(self.writer.out, key);
        self.writer.out.push(b':');
        value.serialize(&mut *self.writer)
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), serde_json::Error> {
        self.comma();
        value.serialize(&mut *self.writer)
    }

    fn close(self) -> Result<(), serde_json::Error> {
        self.writer.out.extend_from_slice(self.close);
        Ok(())
    }
}

impl<'w, 'a> Writer<'a> {
    fn open(&'w mut self, open: &[u8], close: &'static [u8]) -> Compound<'w, 'a> {
        self.out.extend_from_slice(open);
        Compound { writer: self, first: true, close }
    }

    /// `{"variant":` then a compound that also closes that object.
    fn open_variant(
        &'w mut self,
        variant: &str,
        open: &[u8],
        close: &'static [u8],
    ) -> Compound<'w, 'a> {
        self.out.push(b'{');
        escape_into(self.out, variant);
        self.out.push(b':');
        self.open(open, close)
    }
}

impl<'w, 'a> ser::Serializer for &'w mut Writer<'a> {
    type Ok = ();
    type Error = serde_json::Error;
    type SerializeSeq = Compound<'w, 'a>;
    type SerializeTuple = Compound<'w, 'a>;
    type SerializeTupleStruct = Compound<'w, 'a>;
    type SerializeTupleVariant = Compound<'w, 'a>;
    type SerializeMap = Compound<'w, 'a>;
    type SerializeStruct = Compound<'w, 'a>;
    type SerializeStructVariant = Compound<'w, 'a>;

    fn serialize_bool(self, v: bool) -> Result<(), serde_json::Error> {
        self.out.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), serde_json::Error> {
        self.number(v)
    }
    fn serialize_i16(self, v: i16) -> Result<(), serde_json::Error> {
        self.number(v)
    }
    fn serialize_i32(self, v: i32) -> Result<(), serde_json::Error> {
        self.number(v)
    }
    fn serialize_i64(self, v: i64) -> Result<(), serde_json::Error> {
        self.number(v)
    }
    fn serialize_i128(self, v: i128) -> Result<(), serde_json::Error> {
        self.number(v)
    }
    fn serialize_u8(self, v: u8) -> Result<(), serde_json::Error> {
        self.number(v)
    }
    fn serialize_u16(self, v: u16) -> Result<(), serde_json::Error> {
        self.number(v)
    }
    fn serialize_u32(self, v: u32) -> Result<(), serde_json::Error> {
        self.number(v)
    }
    fn serialize_u64(self, v: u64) -> Result<(), serde_json::Error> {
        self.number(v)
    }
    fn serialize_u128(self, v: u128) -> Result<(), serde_json::Error> {
        self.number(v)
    }
    fn serialize_f32(self, v: f32) -> Result<(), serde_json::Error> {
        self.number(v)
    }
    fn serialize_f64(self, v: f64) -> Result<(), serde_json::Error> {
        self.number(v)
    }
    strings!();
    fn serialize_bytes(self, v: &[u8]) -> Result<(), serde_json::Error> {
        serde_json::to_writer(&mut *self.out, v)
    }
    fn serialize_none(self) -> Result<(), serde_json::Error> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), serde_json::Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), serde_json::Error> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), serde_json::Error> {
        self.serialize_unit()
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), serde_json::Error> {
        let mut variant = self.open_variant(variant, b"", b"}");
        variant.element(value)?;
        variant.close()
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'w, 'a>, serde_json::Error> {
        Ok(self.open(b"[", b"]"))
    }
    fn serialize_tuple(self, _len: usize) -> Result<Compound<'w, 'a>, serde_json::Error> {
        Ok(self.open(b"[", b"]"))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Compound<'w, 'a>, serde_json::Error> {
        Ok(self.open(b"[", b"]"))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'w, 'a>, serde_json::Error> {
        Ok(self.open_variant(variant, b"[", b"]}"))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'w, 'a>, serde_json::Error> {
        Ok(self.open(b"{", b"}"))
    }
    fn serialize_struct(
        self,
        name: &'static str,
        _len: usize,
    ) -> Result<Compound<'w, 'a>, serde_json::Error> {
        if is_serde_json_private(name) {
            return Err(unsupported());
        }
        Ok(self.open(b"{", b"}"))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'w, 'a>, serde_json::Error> {
        Ok(self.open_variant(variant, b"{", b"}}"))
    }
}

/// The compound traits whose elements have no key: arrays, tuples, a tuple variant's fields.
macro_rules! elements {
    ($($trait:ident::$method:ident),*) => {$(
        impl ser::$trait for Compound<'_, '_> {
            type Ok = ();
            type Error = serde_json::Error;
            fn $method<T: Serialize + ?Sized>(
                &mut self,
                value: &T,
            ) -> Result<(), serde_json::Error> {
                self.element(value)
            }
            fn end(self) -> Result<(), serde_json::Error> {
                self.close()
            }
        }
    )*};
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = serde_json::Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), serde_json::Error> {
        self.comma();
        key.serialize(KeyWriter { out: self.writer.out })
    }
    fn serialize_value<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<(), serde_json::Error> {
        self.writer.out.push(b':');
        value.serialize(&mut *self.writer)
    }
    fn end(self) -> Result<(), serde_json::Error> {
        self.close()
    }
}

/// The compound traits whose fields are named: structs and a struct variant's fields.
macro_rules! fields {
    ($($trait:ident),*) => {$(
        impl ser::$trait for Compound<'_, '_> {
            type Ok = ();
            type Error = serde_json::Error;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), serde_json::Error> {
                self.field(key, value)
            }
            fn end(self) -> Result<(), serde_json::Error> {
                self.close()
            }
        }
    )*};
}

fields!(SerializeStruct, SerializeStructVariant);

/// A map key: a string is written as one; anything else (serde_json quotes numbers and
/// booleans, and refuses the rest) is left to serde_json.
struct KeyWriter<'a> {
    out: &'a mut Vec<u8>,
}

/// The key kinds [`KeyWriter`] leaves to serde_json.
macro_rules! unsupported_keys {
    ($($method:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $method(self, $(_: $arg),*) -> Result<(), serde_json::Error> {
            Err(unsupported())
        })*
    };
}

impl ser::Serializer for KeyWriter<'_> {
    type Ok = ();
    type Error = serde_json::Error;
    type SerializeSeq = ser::Impossible<(), serde_json::Error>;
    type SerializeTuple = ser::Impossible<(), serde_json::Error>;
    type SerializeTupleStruct = ser::Impossible<(), serde_json::Error>;
    type SerializeTupleVariant = ser::Impossible<(), serde_json::Error>;
    type SerializeMap = ser::Impossible<(), serde_json::Error>;
    type SerializeStruct = ser::Impossible<(), serde_json::Error>;
    type SerializeStructVariant = ser::Impossible<(), serde_json::Error>;

    strings!();

    unsupported_keys!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
    );

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), serde_json::Error> {
        Err(unsupported())
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), serde_json::Error> {
        Err(unsupported())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, serde_json::Error> {
        Err(unsupported())
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, serde_json::Error> {
        Err(unsupported())
    }
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, serde_json::Error> {
        Err(unsupported())
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, serde_json::Error> {
        Err(unsupported())
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, serde_json::Error> {
        Err(unsupported())
    }
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, serde_json::Error> {
        Err(unsupported())
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, serde_json::Error> {
        Err(unsupported())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let all: String = (0u8..=0x7f).map(char::from).chain(['é', '😀', '\u{2028}']).collect();
        for text in [
            String::new(),
            all.clone(),
            all.repeat(3),
            "eight by\"eight by\\eight by".to_owned(),
            "no escapes at all, just a long sentence of words".to_owned(),
        ] {
            let mut out = Vec::new();
            escape_into(&mut out, &text);
            assert_eq!(out, serde_json::to_vec(&text).unwrap(), "{text:?}");
        }
    }

    #[derive(serde::Serialize)]
    enum Shapes {
        Unit,
        Newtype(u8),
        Tuple(i32, String),
        Struct { a: Option<f64>, b: Vec<char> },
    }

    #[test]
    fn every_shape_is_written_as_serde_json_writes_it() {
        let mut by_number = BTreeMap::new();
        by_number.insert(7u32, "seven");
        let value = serde_json::json!({"a": [1, -2, 3.5, 1e300, null, true], "b\n": {"": ""}});
        let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (to_vec(&value, 0).unwrap(), serde_json::to_vec(&value).unwrap()),
            (to_vec(&Shapes::Unit, 0).unwrap(), serde_json::to_vec(&Shapes::Unit).unwrap()),
            (
                to_vec(&Shapes::Newtype(9), 0).unwrap(),
                serde_json::to_vec(&Shapes::Newtype(9)).unwrap(),
            ),
            (
                to_vec(&Shapes::Tuple(-1, "x".into()), 0).unwrap(),
                serde_json::to_vec(&Shapes::Tuple(-1, "x".into())).unwrap(),
            ),
            (
                to_vec(&Shapes::Struct { a: Some(f64::NAN), b: vec!['"'] }, 0).unwrap(),
                serde_json::to_vec(&Shapes::Struct { a: Some(f64::NAN), b: vec!['"'] }).unwrap(),
            ),
            // serde_json quotes a number key: left to it.
            (to_vec(&by_number, 0).unwrap(), serde_json::to_vec(&by_number).unwrap()),
            (
                to_vec(&(1u8, [0u8; 0], ()), 0).unwrap(),
                serde_json::to_vec(&(1u8, [0u8; 0], ())).unwrap(),
            ),
        ];
        for (ours, theirs) in cases {
            assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(theirs).unwrap());
        }
        // A map key serde_json refuses is refused the same way.
        let mut by_list = BTreeMap::new();
        by_list.insert(vec![1u8], 1);
        assert!(to_vec(&by_list, 0).is_err() && serde_json::to_vec(&by_list).is_err());
    }

    /// Fails unless `value` is written as serde_json writes it.
    pub(crate) fn assert_written_as_serde_json_writes<T: Serialize>(value: &T, label: &str) {
        let ours = to_vec(value, 0).unwrap();
        let theirs = serde_json::to_vec(value).unwrap();
        assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&theirs), "{label}");
    }

    /// Every request case under `tests/data/{platform}/requests` that parses, with its name.
    pub(crate) fn request_cases(platform: &str) -> Vec<(String, crate::ChatCompletionRequest)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(platform)
            .join("requests");
        let mut cases = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".openai.json")
                && let Ok(request) = uniproxy_wire::from_slice(&std::fs::read(&path).unwrap())
            {
                cases.push((name, request));
            }
        }
        assert!(cases.len() > 10, "{platform}: {} cases", cases.len());
        cases
    }

    /// Fails unless every request case of `platform` that `build` turns into a platform body
    /// (more than ten of them) is written as serde_json writes it.
    pub(crate) fn assert_built_cases_written_as_serde_json_writes<B: Serialize>(
        platform: &str,
        build: impl Fn(crate::ChatCompletionRequest) -> Option<B>,
    ) {
        let mut built = 0;
        for (name, request) in request_cases(platform) {
            if let Some(body) = build(request) {
                assert_written_as_serde_json_writes(&body, &name);
                built += 1;
            }
        }
        assert!(built > 10, "{platform}: {built} requests built");
    }

    #[test]
    fn the_wire_types_of_the_test_cases_are_written_as_serde_json_writes_them() {
        use crate::{ProviderConfig, ProviderKind, ResponseContext};
        for platform in ["anthropic", "gemini"] {
            for (name, request) in request_cases(platform) {
                assert_written_as_serde_json_writes(&request, &name);
            }
        }
        // Translated answers: the body the provider wrote is serde_json's for its completion.
        let ctx = ResponseContext {
            id: "chatcmpl-1".into(),
            created: 1,
            model: "m".into(),
            include_usage: false,
            json_object: false,
            legacy_functions: false,
        };
        for (platform, kind) in
            [("anthropic", ProviderKind::Anthropic), ("gemini", ProviderKind::Google)]
        {
            let config = ProviderConfig::new(kind, "http://127.0.0.1:1/v1", "k", "m");
            let provider = crate::provider(&config).unwrap();
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data")
                .join(platform)
                .join("responses");
            let mut answers = 0;
            for entry in std::fs::read_dir(dir).unwrap() {
                let body = std::fs::read(entry.unwrap().path()).unwrap();
                if let Ok(t) = provider.translate_response(200, body.into(), &ctx) {
                    assert_eq!(t.body, serde_json::to_vec(&t.completion).unwrap());
                    answers += 1;
                }
            }
            assert!(answers > 3, "{platform}: {answers} answers");
        }
    }

    proptest! {
        #[test]
        fn any_string_is_escaped_as_serde_json_escapes_it(
            text in "(\\PC|[\\x00-\\x1f\"\\\\\u{7f}])*",
        ) {
            let mut out = Vec::new();
            escape_into(&mut out, &text);
            prop_assert_eq!(out, serde_json::to_vec(&text).unwrap());
        }

        #[test]
        fn any_json_value_is_written_as_serde_json_writes_it(value in crate::scan::tests::json()) {
            prop_assert_eq!(to_vec(&value, 16).unwrap(), serde_json::to_vec(&value).unwrap());
        }
    }
}
