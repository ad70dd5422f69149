//! JSON scanned rather than parsed into serde values, where serde_json's generic walk (about
//! 35 ns for every key and every value, skipped or not) costs more than the work needs:
//! [`raw_members`] finds the members of an object in text that was already parsed (the request),
//! and [`Reader`] walks text token by token, checking it as serde_json would, so that a caller
//! takes the few values it needs and skips the rest (the chunks of a stream).

use std::borrow::Cow;

use crate::{CopiedSpan, MIN_COPIED};

/// The members of a JSON object, in order: each key as written between its quotes (escapes
/// not decoded) and each value as the slice of the input it is.
///
/// The input must already have been parsed (the request was): this only follows strings and
/// nesting to find where members end, a quote or backslash at a time inside strings, and gives
/// `None` when what it finds is not an object, so a caller falls back to serializing.
pub(crate) fn raw_members(json: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let mut members = Vec::with_capacity(8);
    let mut i = skip_ws(json, 0);
    if json.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(json, i + 1);
    if json.get(i) == Some(&b'}') {
        return (skip_ws(json, i + 1) == json.len()).then_some(members);
    }
    loop {
        if json.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(json, i + 1)?;
        let key = &json[i + 1..key_end];
        i = skip_ws(json, key_end + 1);
        if json.get(i) != Some(&b':') {
            return None;
        }
        let start = skip_ws(json, i + 1);
        let end = value_end(json, start)?;
        members.push((key, &json[start..end]));
        i = skip_ws(json, end);
        match json.get(i) {
            Some(b',') => i = skip_ws(json, i + 1),
            Some(b'}') => break,
            _ => return None,
        }
    }
    (skip_ws(json, i + 1) == json.len()).then_some(members)
}

/// The runs of `body` that are string values of `raw` (quotes included) at least
/// [`MIN_COPIED`] bytes long, for a body written from a request parsed from `raw`: a translated
/// request carries the client's texts, and serde_json writes most of them back byte for byte
/// (not those the client wrote with escapes serde_json does not use, such as `\u00e9`).
///
/// Each string is looked for after the last one found, then (when a platform puts a member
/// elsewhere, as Gemini's `systemInstruction` after `contents`) from the start. The search
/// stops once it has read four times the body, so what a request cannot use costs little.
pub(crate) fn string_runs(raw: &[u8], body: &[u8]) -> Vec<CopiedSpan> {
    let mut runs = Vec::new();
    let mut budget = body.len().saturating_mul(4);
    let mut cursor = 0;
    let mut i = 0;
    while let Some(quote) = memchr::memchr(b'"', raw.get(i..).unwrap_or_default()) {
        let start = i + quote;
        let Some(end) = string_end(raw, start + 1).map(|close| close + 1) else { break };
        i = end;
        let is_key = raw.get(skip_ws(raw, end)) == Some(&b':');
        if is_key || end - start < MIN_COPIED {
            continue;
        }
        let needle = &raw[start..end];
        let found = find_whole(body, cursor, needle, &mut budget)
            .or_else(|| (cursor > 0).then(|| find_whole(body, 0, needle, &mut budget))?);
        if let Some(at) = found {
            runs.push(CopiedSpan { at, from: start, len: needle.len() });
            cursor = at + needle.len();
        }
        if budget == 0 {
            break;
        }
    }
    // Found out of order, a run may overlap another (a string the body has once but the
    // request twice): keep the first of each overlap.
    runs.sort_unstable_by_key(|run| run.at);
    let mut end = 0;
    runs.retain(|run| {
        let keep = run.at >= end;
        if keep {
            end = run.at + run.len;
        }
        keep
    });
    runs
}

/// Where `needle`, a JSON string, is in `body` at or after `from`: each quote is compared with
/// it, which reads no further than the string that quote opens (the needle holds no other
/// quote), so the whole search reads each byte of `body` about once. The bytes passed are
/// taken from `budget`; nothing is found once it runs out.
fn find_whole(body: &[u8], mut from: usize, needle: &[u8], budget: &mut usize) -> Option<usize> {
    while *budget > 0 {
        let rest = body.get(from..)?;
        let Some(pos) = memchr::memchr(b'"', rest) else {
            *budget = budget.saturating_sub(rest.len());
            return None;
        };
        let at = from + pos;
        *budget = budget.saturating_sub(pos + 1);
        if body.get(at..at + needle.len()) == Some(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The index of the first byte at or after `i` that is not JSON whitespace. Pretty-printed
/// JSON (OpenAI's answers, many clients' requests) indents with runs of spaces after each line
/// break: those are skipped eight bytes at a time.
#[inline]
fn skip_ws(json: &[u8], mut i: usize) -> usize {
    const SPACES: u64 = u64::from_le_bytes([b' '; 8]);
    while matches!(json.get(i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        i += 1;
        while let Some(chunk) = json.get(i..i + 8) {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            // Zero bytes where the spaces are: the lowest byte that is not zero is the first
            // that is not a space.
            let others = u64::from_le_bytes(word) ^ SPACES;
            if others != 0 {
                i += (others.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
    }
    i
}

/// The index of the quote that closes a string whose contents start at `i`.
fn string_end(json: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let at = i + memchr::memchr2(b'"', b'\\', json.get(i..)?)?;
        if json[at] == b'"' {
            return Some(at);
        }
        // A backslash and the character it escapes (a `\uXXXX`'s digits need no care).
        i = at + 2;
    }
}

/// The index just past the value that starts at `i`.
fn value_end(json: &[u8], i: usize) -> Option<usize> {
    match json.get(i)? {
        b'"' => Some(string_end(json, i + 1)? + 1),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match json.get(j)? {
                    b'"' => j = string_end(json, j + 1)?,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        // A number, `true`, `false` or `null`.
        _ => {
            let len = json[i..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'))
                .unwrap_or(json.len() - i);
            (len > 0).then_some(i + len)
        }
    }
}

/// JSON text that a [`Reader`] (or serde_json) has accepted, kept to recognize the next text
/// that differs from it only in the contents of its string values: the chunks of a stream,
/// where every chunk repeats the same keys, id, model and fingerprint around a new piece of
/// content (and, from OpenAI, a new random `obfuscation` string).
///
/// Such a text is valid JSON whenever the template is (its new strings checked as the reader
/// checks strings), with the same structure, keys and non-string values: one string token
/// replaced by another changes nothing else. So a caller that knows what the template's text
/// meant needs only the strings that changed.
#[derive(Debug)]
pub(crate) struct Template {
    text: Box<[u8]>,
    /// The contents (between the quotes) of every string value, in order; keys are not slots.
    slots: Vec<(usize, usize)>,
}

impl Template {
    /// The template of `json`, which must be valid JSON (already checked by the caller's
    /// parse); `None` if it is not what this expects.
    pub(crate) fn new(json: &str) -> Option<Self> {
        let json = json.as_bytes();
        let mut slots = Vec::with_capacity(8);
        let mut i = 0;
        // Outside strings no quote can appear, so the next quote always opens a string.
        while let Some(found) = memchr::memchr(b'"', json.get(i..)?) {
            let start = i + found + 1;
            let (end, _) = checked_string_end(json, start)?;
            // A string followed by a colon is a key.
            if json.get(skip_ws(json, end + 1)) != Some(&b':') {
                slots.push((start, end));
            }
            i = end + 1;
        }
        Some(Template { text: json.into(), slots })
    }

    /// The slot whose string's contents start at `start` of the template's text.
    pub(crate) fn slot_at(&self, start: usize) -> Option<usize> {
        self.slots.iter().position(|&(s, _)| s == start)
    }

    /// When `json` is the template's text with other strings in its string values (each one
    /// checked as [`Reader`] checks a string, or byte for byte the template's own), where each
    /// of those strings' contents is in `json`, in slot order; `None` for anything else. As
    /// with the reader, a `\u` escape's four hex digits are checked, not that surrogates pair
    /// up: a caller decodes the strings it keeps with serde_json, which checks that.
    ///
    /// `json` is bytes: only the strings that changed are checked as UTF-8 (the rest is the
    /// template's, which was), so a match is UTF-8 whole and the caller need not check it.
    pub(crate) fn matches(&self, json: &[u8], spans: &mut Vec<(usize, usize)>) -> Option<()> {
        spans.clear();
        let (mut at, mut from) = (0, 0);
        for &(start, end) in &self.slots {
            // The text up to and including the string's opening quote.
            let fixed = self.text.get(from..start)?;
            if !json.get(at..)?.starts_with(fixed) {
                return None;
            }
            at += fixed.len();
            // The template's own string and its closing quote (checked when it was read), or
            // another string, checked now.
            let same = self.text.get(start..=end)?;
            let close = if json.get(at..)?.starts_with(same) {
                at + same.len() - 1
            } else {
                let close = checked_string_end(json, at)?.0;
                std::str::from_utf8(json.get(at..close)?).ok()?;
                close
            };
            spans.push((at, close));
            // The closing quote starts the next fixed part.
            at = close;
            from = end;
        }
        (json.get(at..)? == self.text.get(from..)?).then_some(())
    }
}

/// JSON text with a hole where one of its string values was: the bytes before that string's
/// contents and after them. It recognizes the next text that is the same but for that one
/// string (a stream's fragment events, each repeating the same bytes around a new piece of
/// text), which is then the same JSON but for that value, as with a [`Template`].
#[derive(Debug)]
pub(crate) struct Hole {
    /// Up to and including the string's opening quote.
    before: Box<[u8]>,
    /// From its closing quote on.
    after: Box<[u8]>,
}

impl Hole {
    /// `json` (valid JSON, already checked by the caller's parse) with a hole at the string
    /// value that reads as `value`; `None` unless exactly one string value does, since a
    /// caller that knows which member held `value` then knows which one the hole is.
    pub(crate) fn new(json: &str, value: &str) -> Option<Self> {
        let (start, end) = unique_string(json, value)?;
        let json = json.as_bytes();
        Some(Hole { before: json.get(..start)?.into(), after: json.get(end..)?.into() })
    }

    /// The string in the hole when `json` is the text with another string there (checked as
    /// [`Reader`] checks a string, and decoded as it decodes one); `None` for anything else.
    /// Only that string is checked as UTF-8: the rest is the text's, which was.
    pub(crate) fn string<'a>(&self, json: &'a [u8]) -> Option<Cow<'a, str>> {
        if !json.starts_with(&self.before) || !json.ends_with(&self.after) {
            return None;
        }
        let start = self.before.len();
        let (close, escaped) = checked_string_end(json, start)?;
        if close + self.after.len() != json.len() {
            return None;
        }
        utf8_decoded(json, start, close, escaped)
    }
}

/// Where the contents of the one string value of `json` (valid JSON) that reads as `value` are,
/// between its quotes; `None` unless exactly one string value reads so.
pub(crate) fn unique_string(json: &str, value: &str) -> Option<(usize, usize)> {
    let template = Template::new(json)?;
    let mut found = None;
    for &(start, end) in &template.slots {
        let reads_as = Reader::new(json.get(start - 1..=end)?).string()?;
        if reads_as == value {
            if found.is_some() {
                return None;
            }
            found = Some((start, end));
        }
    }
    found
}

/// Where the value of the member `key` of the object `json` (valid JSON) is; `None` if it is
/// not there, is there twice, or the reader leaves the text to serde_json (see [`Reader`]).
pub(crate) fn member_value(json: &str, key: &str) -> Option<(usize, usize)> {
    let mut reader = Reader::new(json);
    let mut found = None;
    let mut twice = false;
    reader.members(|r, k| {
        r.peek()?;
        let start = r.at;
        r.skip()?;
        if k == key.as_bytes() {
            twice |= found.replace((start, r.at)).is_some();
        }
        Some(())
    })?;
    reader.end()?;
    if twice { None } else { found }
}

/// What goes into one of the holes of [`Holes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fill {
    /// A string; the hole is its contents, between the quotes.
    String,
    /// A value of a member of the top-level object; the hole is the whole value.
    Member,
}

/// JSON text with holes where some of its values were, as [`Hole`] has one: it recognizes the
/// next text that is the same bytes with other values in the holes (another string where a
/// string was; for a [`Fill::Member`], any value its caller reads), which is the same JSON
/// but for those values. A stream's events that repeat the same bytes around a new piece of
/// text and new counts (Gemini's) are read this way.
#[derive(Debug)]
pub(crate) struct Holes {
    /// The bytes before each hole, and after the last.
    fixed: Vec<Box<[u8]>>,
    fills: Vec<Fill>,
}

impl Holes {
    /// `json` (valid JSON, already checked by the caller's parse) with holes at `holes`, in
    /// order and apart: a string's contents (as [`unique_string`] finds them) or a top-level
    /// member's value (as [`member_value`] does).
    pub(crate) fn new(json: &str, holes: &[((usize, usize), Fill)]) -> Option<Self> {
        let json = json.as_bytes();
        let mut fixed = Vec::with_capacity(holes.len() + 1);
        let mut at = 0;
        for &((start, end), _) in holes {
            fixed.push(json.get(at..start)?.into());
            at = end;
        }
        fixed.push(json.get(at..)?.into());
        Some(Holes { fixed, fills: holes.iter().map(|&(_, fill)| fill).collect() })
    }

    /// When `json` is the text with other values in the holes, where each one is, in order:
    /// a string checked as [`Reader`] checks one (decode it with [`string_at`]), a member's
    /// value read by `member`, which must read exactly one value and may refuse it; `None`
    /// for anything else.
    pub(crate) fn matches<'a>(
        &self,
        json: &'a str,
        spans: &mut Vec<(usize, usize)>,
        mut member: impl FnMut(&mut Reader<'a>) -> Option<()>,
    ) -> Option<()> {
        let bytes = json.as_bytes();
        spans.clear();
        let mut at = 0;
        for (fixed, fill) in self.fixed.iter().zip(&self.fills) {
            if !bytes.get(at..)?.starts_with(fixed) {
                return None;
            }
            at += fixed.len();
            let end = match fill {
                // The closing quote starts the next fixed part.
                Fill::String => checked_string_end(bytes, at)?.0,
                Fill::Member => {
                    // Inside the top-level object.
                    let mut reader = Reader { text: json, at, depth: 1 };
                    member(&mut reader)?;
                    reader.at
                }
            };
            spans.push((at, end));
            at = end;
        }
        (bytes.get(at..)? == &**self.fixed.last()?).then_some(())
    }
}

/// The string whose contents are `json[start..end]`, between quotes (a span that
/// [`Template::matches`] or [`Holes::matches`] gave, or one [`checked_string_end`] found),
/// checked as UTF-8 and decoded as [`Reader::string`] decodes one: borrowed, or by serde_json
/// if it holds an escape.
pub(crate) fn string_at(json: &[u8], (start, end): (usize, usize)) -> Option<Cow<'_, str>> {
    let escaped = memchr::memchr(b'\\', json.get(start..end)?).is_some();
    utf8_decoded(json, start, end, escaped)
}

/// [`string_at`] when whether the string holds an escape is known.
fn utf8_decoded(json: &[u8], start: usize, end: usize, escaped: bool) -> Option<Cow<'_, str>> {
    let quoted = std::str::from_utf8(json.get(start.checked_sub(1)?..=end)?).ok()?;
    decoded(quoted, 1, quoted.len() - 1, escaped)
}

/// Marks a member seen; `None` if it was already: serde refuses a field given twice.
pub(crate) fn once(seen: &mut bool) -> Option<()> {
    (!std::mem::replace(seen, true)).then_some(())
}

/// Reads an object whose members named in `named` (up to eight) are read by `read` into their
/// slots, each at most once; every other member goes to `other`.
pub(crate) fn named_fields<'a, T>(
    r: &mut Reader<'a>,
    named: &mut [(&[u8], &mut T)],
    read: impl Fn(&mut Reader<'a>) -> Option<T>,
    mut other: impl FnMut(&mut Reader<'a>, &'a [u8]) -> Option<()>,
) -> Option<()> {
    let mut seen = [false; 8];
    r.members(|r, key| match named.iter().position(|(name, _)| *name == key) {
        Some(i) => {
            once(seen.get_mut(i)?)?;
            *named[i].1 = read(r)?;
            Some(())
        }
        None => other(r, key),
    })
}

/// An optional count: `null` or a plain non-negative integer.
pub(crate) fn count(r: &mut Reader<'_>) -> Option<Option<u64>> {
    r.nullable(Reader::unsigned)
}

/// The template a stream reads its events through (a [`Hole`] or [`Holes`] and what the
/// stream knows of it), replaced by each event read in full that makes one; after
/// [`TemplateSlot::MAX_WASTED`] templates in a row that no event fit (an upstream whose every
/// event differs in more than a template lets change), it stops building them.
#[derive(Debug)]
pub(crate) struct TemplateSlot<T> {
    template: Option<T>,
    /// An event fit the template.
    used: bool,
    /// Templates in a row that no event fit.
    wasted: u8,
}

impl<T> Default for TemplateSlot<T> {
    fn default() -> Self {
        TemplateSlot { template: None, used: false, wasted: 0 }
    }
}

impl<T> TemplateSlot<T> {
    pub(crate) const MAX_WASTED: u8 = 8;

    /// Keeps the template `build` makes, unless it makes none or templates are no longer built.
    pub(crate) fn keep(&mut self, build: impl FnOnce() -> Option<T>) {
        if self.wasted >= Self::MAX_WASTED {
            return;
        }
        let Some(template) = build() else { return };
        if self.template.is_some() && !self.used {
            self.wasted += 1;
            if self.wasted >= Self::MAX_WASTED {
                self.template = None;
                return;
            }
        }
        self.template = Some(template);
        self.used = false;
    }

    /// The template, to match an event against; call [`fit`](Self::fit) when one fits.
    pub(crate) fn get_mut(&mut self) -> Option<&mut T> {
        self.template.as_mut()
    }

    /// An event fit the template.
    pub(crate) fn fit(&mut self) {
        self.used = true;
        self.wasted = 0;
    }

    /// Builds no templates (for tests that read a stream without them).
    #[cfg(test)]
    pub(crate) fn off() -> Self {
        TemplateSlot { template: None, used: false, wasted: Self::MAX_WASTED }
    }
}

/// Nesting this deep or deeper is left to serde_json (whose own limit is 128).
const MAX_DEPTH: usize = 100;

/// A reader that walks JSON text a token at a time, checking it as it goes, so that a caller can
/// take the few values it needs and skip the rest without building serde values for them.
///
/// Everything it accepts, serde_json accepts too: the grammar, no control characters in
/// strings, valid escapes, nothing after the value but whitespace ([`Reader::end`]). Each
/// method returns `None` where the text is not such JSON or is not what the caller asked for,
/// and also for what it leaves to serde_json: a key holding an escape (keys are compared as
/// written, and `"choi\u0063es"` is `choices`) and nesting [`MAX_DEPTH`] deep. The caller
/// then takes serde_json's full parse, which decides and gives the precise error: this may
/// refuse what serde_json accepts, never the other way round.
pub(crate) struct Reader<'a> {
    text: &'a str,
    at: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    pub(crate) fn new(text: &'a str) -> Self {
        Reader { text, at: 0, depth: 0 }
    }

    #[inline]
    fn json(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte that is not whitespace, not consumed.
    #[inline]
    pub(crate) fn peek(&mut self) -> Option<u8> {
        self.at = skip_ws(self.json(), self.at);
        self.json().get(self.at).copied()
    }

    #[inline]
    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// Reads an object, calling `each` with every member's key (as written between its quotes)
    /// and the reader at its value, which `each` must read or skip. A key holding an escape is
    /// refused, unless `escaped_keys` (for a value that is only skipped, where keys are not
    /// compared).
    #[inline]
    fn object(
        &mut self,
        escaped_keys: bool,
        mut each: impl FnMut(&mut Self, &'a [u8]) -> Option<()>,
    ) -> Option<()> {
        self.open(b'{')?;
        let mut first = true;
        while self.more(&mut first, b'}')? {
            self.eat(b'"')?;
            let (end, escaped) = checked_string_end(self.json(), self.at)?;
            if escaped && !escaped_keys {
                return None;
            }
            let key = &self.json()[self.at..end];
            self.at = end + 1;
            self.eat(b':')?;
            each(self, key)?;
        }
        Some(())
    }

    /// Reads an object, calling `each` with every member's key and the reader at its value
    /// (see the type's docs for the keys it refuses).
    #[inline]
    pub(crate) fn members(
        &mut self,
        each: impl FnMut(&mut Self, &'a [u8]) -> Option<()>,
    ) -> Option<()> {
        self.object(false, each)
    }

    /// Reads an array, calling `each` with the reader at every element.
    #[inline]
    pub(crate) fn elements(&mut self, mut each: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.open(b'[')?;
        let mut first = true;
        while self.more(&mut first, b']')? {
            each(self)?;
        }
        Some(())
    }

    /// `null` as `None`, anything else read by `read`.
    #[inline]
    pub(crate) fn nullable<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<Option<T>> {
        if self.null() { Some(None) } else { read(self).map(Some) }
    }

    #[inline]
    fn open(&mut self, byte: u8) -> Option<()> {
        if self.depth + 1 >= MAX_DEPTH {
            return None;
        }
        self.eat(byte)?;
        self.depth += 1;
        Some(())
    }

    /// Reads a separator or the closing `close`: `true` if another item follows.
    #[inline]
    fn more(&mut self, first: &mut bool, close: u8) -> Option<bool> {
        let next = self.peek()?;
        if next == close {
            self.at += 1;
            self.depth -= 1;
            return Some(false);
        }
        if !std::mem::take(first) {
            if next != b',' {
                return None;
            }
            self.at += 1;
        }
        Some(true)
    }

    /// Consumes a `null` if one is next.
    #[inline]
    fn null(&mut self) -> bool {
        let is_null = self.peek() == Some(b'n') && self.json()[self.at..].starts_with(b"null");
        if is_null {
            self.at += 4;
        }
        is_null
    }

    /// A string, borrowed unless it holds escapes (then decoded by serde_json, which also
    /// checks what this does not: that `\u` escapes pair up).
    #[inline]
    pub(crate) fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.at;
        let (end, escaped) = checked_string_end(self.json(), start)?;
        self.at = end + 1;
        decoded(self.text, start, end, escaped)
    }

    /// A string, checked as serde_json checks one it keeps but not decoded: as
    /// [`string`](Self::string) checks it, with every `\u` escape of a UTF-16 surrogate the
    /// leading half of a pair whose trailing half is the next escape.
    #[inline]
    pub(crate) fn kept_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        let (end, escaped) = checked_string_end(self.json(), self.at)?;
        if escaped && !surrogates_pair(self.json().get(self.at..end)?) {
            return None;
        }
        self.at = end + 1;
        Some(())
    }

    /// A non-negative integer that fits a `T` (`u32`, `u64`), written plainly: no sign,
    /// fraction or exponent.
    #[inline]
    pub(crate) fn unsigned<T: TryFrom<u64>>(&mut self) -> Option<T> {
        self.peek()?;
        let start = self.at;
        let end = number_end(self.json(), start)?;
        let mut n: u64 = 0;
        for &b in &self.json()[start..end] {
            if !b.is_ascii_digit() {
                return None;
            }
            n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        }
        self.at = end;
        T::try_from(n).ok()
    }

    /// `true` or `false`.
    #[inline]
    pub(crate) fn boolean(&mut self) -> Option<bool> {
        let (literal, value) = match self.peek()? {
            b't' => (&b"true"[..], true),
            b'f' => (&b"false"[..], false),
            _ => return None,
        };
        self.at = literal_end(self.json(), self.at, literal)?;
        Some(value)
    }

    /// A number, checked as serde_json checks one it keeps (see [`skip_kept`](Self::skip_kept)).
    #[inline]
    pub(crate) fn number(&mut self) -> Option<()> {
        matches!(self.peek()?, b'-' | b'0'..=b'9').then(|| self.skip_kept())?
    }

    /// Reads the next value with `read`; gives what `read` gave and the value's text.
    #[inline]
    pub(crate) fn spanned<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<(T, &'a str)> {
        self.peek()?;
        let start = self.at;
        let value = read(self)?;
        Some((value, self.text.get(start..self.at)?))
    }

    /// Parses the next value with serde_json, as a `T`.
    #[inline]
    pub(crate) fn parse<T: serde::Deserialize<'a>>(&mut self) -> Option<T> {
        self.peek()?;
        let mut values =
            serde_json::Deserializer::from_str(self.text.get(self.at..)?).into_iter::<T>();
        let value = values.next()?.ok()?;
        self.at += values.byte_offset();
        Some(value)
    }

    /// Skips the next value, checking it.
    pub(crate) fn skip(&mut self) -> Option<()> {
        let json = self.json();
        self.at = match self.peek()? {
            b'{' => return self.object(true, |r, _| r.skip()),
            b'[' => return self.elements(Self::skip),
            b'"' => checked_string_end(json, self.at + 1)?.0 + 1,
            b't' => literal_end(json, self.at, b"true")?,
            b'f' => literal_end(json, self.at, b"false")?,
            b'n' => literal_end(json, self.at, b"null")?,
            b'-' | b'0'..=b'9' => number_end(json, self.at)?,
            _ => return None,
        };
        Some(())
    }

    /// Skips the next value, checking it as serde_json checks a value it keeps (a
    /// `serde_json::Value`, as in a `#[serde(flatten)]` map) rather than one it skips, which it
    /// checks less: strings as [`kept_string`](Self::kept_string) checks them, and a number
    /// that may be out of `f64`'s range (an exponent, or 300 characters or more) and a key with
    /// an escape are refused.
    pub(crate) fn skip_kept(&mut self) -> Option<()> {
        let json = self.json();
        self.at = match self.peek()? {
            b'{' => return self.object(false, |r, _| r.skip_kept()),
            b'[' => return self.elements(Self::skip_kept),
            b'"' => return self.kept_string(),
            b'-' | b'0'..=b'9' => {
                let end = number_end(json, self.at)?;
                let number = json.get(self.at..end)?;
                if number.len() >= 300 || number.iter().any(|b| matches!(b, b'e' | b'E')) {
                    return None;
                }
                end
            }
            _ => return self.skip(),
        };
        Some(())
    }

    /// Checks that only whitespace is left.
    #[inline]
    pub(crate) fn end(&mut self) -> Option<()> {
        (self.peek().is_none() && self.depth == 0).then_some(())
    }
}

/// The index of the quote that closes a string whose contents start at `i`, and whether the
/// string holds an escape; `None` for a control character, a bad escape, or no closing quote.
#[inline]
fn checked_string_end(json: &[u8], mut i: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        i = next_special(json, i);
        match *json.get(i)? {
            b'"' => return Some((i, escaped)),
            b'\\' => {
                escaped = true;
                i = match json.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i + 2,
                    // serde_json checks only the four hex digits of a string it skips; a
                    // string it keeps is parsed by the caller's serde_json, which checks the rest.
                    b'u' => {
                        let hex = json.get(i + 2..i + 6)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        i + 6
                    }
                    _ => return None,
                };
            }
            // A control character.
            _ => return None,
        }
    }
}

/// Whether every `\u` escape of a UTF-16 surrogate in `contents` (a string's, its escapes
/// checked by [`checked_string_end`]) is a leading one followed at once by an escaped trailing
/// one, as serde_json requires of a string it decodes.
fn surrogates_pair(contents: &[u8]) -> bool {
    let hex = |at: usize| -> Option<u16> {
        let digits = std::str::from_utf8(contents.get(at..at + 4)?).ok()?;
        u16::from_str_radix(digits, 16).ok()
    };
    let mut i = 0;
    while let Some(found) = memchr::memchr(b'\\', contents.get(i..).unwrap_or_default()) {
        let at = i + found;
        if contents.get(at + 1) != Some(&b'u') {
            i = at + 2;
            continue;
        }
        let Some(unit) = hex(at + 2) else { return false };
        i = match unit {
            0xD800..=0xDBFF => {
                let trailing = contents.get(at + 6..at + 8) == Some(b"\\u")
                    && hex(at + 8).is_some_and(|next| (0xDC00..=0xDFFF).contains(&next));
                if !trailing {
                    return false;
                }
                at + 12
            }
            0xDC00..=0xDFFF => return false,
            _ => at + 6,
        };
    }
    true
}

/// The string whose contents run from `start` to the closing quote at `end` of `text` (checked
/// by [`checked_string_end`]): borrowed, or decoded by serde_json if it holds an escape.
#[inline]
fn decoded(text: &str, start: usize, end: usize, escaped: bool) -> Option<Cow<'_, str>> {
    if escaped {
        serde_json::from_str(text.get(start.checked_sub(1)?..=end)?).ok().map(Cow::Owned)
    } else {
        text.get(start..end).map(Cow::Borrowed)
    }
}

/// The index of the first quote, backslash or control character at or after `i` (or the
/// length), a word of eight bytes at a time as serde_json does: two words one by one, since
/// most strings (keys, roles, ids, schema descriptions) end within them, then two words a step
/// for the long ones (message contents). `memchr` spends more setting up than this spends on a
/// short string.
#[inline]
fn next_special(json: &[u8], i: usize) -> usize {
    let Some(mut rest) = json.get(i..) else { return i };
    let mut at = i;
    for _ in 0..2 {
        let Some((word, after)) = rest.split_first_chunk::<8>() else {
            return at + plain_run(rest);
        };
        let found = specials(word);
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
        rest = after;
    }
    let mut pairs = rest.chunks_exact(16);
    for pair in &mut pairs {
        if let (Some(lo), Some(hi)) = (pair.first_chunk::<8>(), pair.last_chunk::<8>()) {
            let (lo, hi) = (specials(lo), specials(hi));
            if lo | hi != 0 {
                // Each word is computed alone, so the lowest byte found in either is exact.
                let bit = if lo != 0 { lo.trailing_zeros() } else { 64 + hi.trailing_zeros() };
                return at + (bit / 8) as usize;
            }
        }
        at += 16;
    }
    let mut rest = pairs.remainder();
    if let Some((word, after)) = rest.split_first_chunk::<8>() {
        let found = specials(word);
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
        rest = after;
    }
    at + plain_run(rest)
}

/// How many bytes `bytes` starts with that are none of a quote, a backslash or a control
/// character.
fn plain_run(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|&&b| b >= 0x20 && b != b'"' && b != b'\\').count()
}

/// The high bit of each byte of `word` that is below 0x20, or equal to `"` or `\\` (a byte of
/// 0x80 or more never is). Exact for the lowest such byte, which is the one wanted: a borrow
/// only runs upward from a byte that is found. `!w & HIGHS` serves all three tests, since `"`
/// and `\\` leave a byte's high bit as it is.
#[inline]
fn specials(word: &[u8; 8]) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let w = u64::from_le_bytes(*word);
    (w.wrapping_sub(ONES * 0x20)
        | (w ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES)
        | (w ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES))
        & !w
        & HIGHS
}

fn literal_end(json: &[u8], i: usize, literal: &[u8]) -> Option<usize> {
    json.get(i..)?.starts_with(literal).then_some(i + literal.len())
}

/// The end of the number at `i`: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn number_end(json: &[u8], mut i: usize) -> Option<usize> {
    let digits = |from: usize| -> Option<usize> {
        let n = json.get(from..)?.iter().take_while(|b| b.is_ascii_digit()).count();
        (n > 0).then_some(from + n)
    };
    if json.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match json.get(i)? {
        b'0' => i + 1,
        _ => digits(i)?,
    };
    if json.get(i) == Some(&b'.') {
        i = digits(i + 1)?;
    }
    if matches!(json.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(json.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(i)?;
    }
    Some(i)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Checks what [`string_runs`] promises: runs in order, apart, each the client's bytes.
    fn assert_runs(raw: &[u8], body: &[u8], runs: &[CopiedSpan]) {
        let mut end = 0;
        for run in runs {
            assert!(run.at >= end && run.len >= MIN_COPIED, "{runs:?}");
            assert_eq!(body.get(run.at..run.at + run.len), raw.get(run.from..run.from + run.len));
            end = run.at + run.len;
        }
    }

    #[test]
    fn a_translated_request_names_the_clients_texts_it_wrote_back() {
        use crate::{ChatCompletionRequest, ProviderConfig, ProviderKind};
        let small = br#"{"model":"alias","messages":[{"role":"system","content":"You are a terse assistant who answers in one line."},{"role":"user","content":"What is the capital of France, and why?"},{"role":"assistant","content":"Paris: it is where the government sits."},{"role":"user","content":"Caf\u00e9 means what in English, please tell me?"}],"temperature":0.2}"#;
        // Searched from 4 KB on: the same request with trailing whitespace to get there.
        let raw = [&small[..], &[b' '; crate::STRING_RUNS_FROM]].concat();
        let raw = &raw[..];
        let system = r#""You are a terse assistant who answers in one line.""#;
        let user = r#""What is the capital of France, and why?""#;
        let assistant = r#""Paris: it is where the government sits.""#;
        // Anthropic keeps the order; Gemini puts `systemInstruction` after `contents`. The
        // last text is written `Café` upstream, not as the client escaped it.
        for (kind, order) in [
            (ProviderKind::Anthropic, [system, user, assistant]),
            (ProviderKind::Google, [user, assistant, system]),
        ] {
            let config = ProviderConfig::new(kind, "http://127.0.0.1:1", "k", "m");
            let provider = crate::provider(&config).unwrap();
            let request: ChatCompletionRequest = uniproxy_wire::from_slice(raw).unwrap();
            let up = provider.build_request_from(request.clone(), raw).unwrap();
            assert_runs(raw, &up.body, &up.copied);
            let named: Vec<_> = up
                .copied
                .iter()
                .map(|r| String::from_utf8_lossy(&raw[r.from..r.from + r.len]))
                .collect();
            assert_eq!(named, order, "{kind:?}: {}", String::from_utf8_lossy(&up.body));
            assert!(provider.build_request(request.clone()).unwrap().copied.is_empty());
            assert!(provider.build_request_from(request, small).unwrap().copied.is_empty());
        }
    }

    #[test]
    fn the_search_for_strings_stops_after_reading_four_bodies() {
        // 200 long strings the body does not have: each would be a full read of the body.
        let missing: Vec<String> = (0..200).map(|i| format!(r#""{i:040}""#)).collect();
        let raw = format!(r#"{{"a":[{}],"b":"{}"}}"#, missing.join(","), "x".repeat(40));
        let body = format!(r#"{{"b":"{}"}}"#, "x".repeat(40));
        assert!(string_runs(raw.as_bytes(), body.as_bytes()).is_empty(), "stopped before b");
        // With the budget left, the same string is found.
        let raw = format!(r#"{{"a":[{}],"b":"{}"}}"#, missing[0], "x".repeat(40));
        let runs = string_runs(raw.as_bytes(), body.as_bytes());
        assert_eq!(runs, [CopiedSpan { at: 5, from: raw.len() - 43, len: 42 }]);
    }

    proptest! {
        #[test]
        fn string_runs_are_the_clients_bytes(
            strings in proptest::collection::vec("[a-z\"é\\\\]{0,50}", 1..8),
            picks in proptest::collection::vec((0usize..8, "[a-z{},:]{0,6}"), 0..10),
        ) {
            let values: Vec<String> = strings.iter().map(|s| serde_json::Value::from(s.as_str()).to_string()).collect();
            let raw = format!("{{\"k\":[{}]}}", values.join(","));
            // A body of some of the client's strings, repeated or reordered, between other bytes.
            let mut body = String::new();
            for (i, junk) in &picks {
                body.push_str(junk);
                if let Some(v) = values.get(*i) {
                    body.push_str(v);
                }
            }
            let runs = string_runs(raw.as_bytes(), body.as_bytes());
            assert_runs(raw.as_bytes(), body.as_bytes(), &runs);
            prop_assert!(runs.iter().all(|r| r.from > 5), "keys are not named");
        }
    }

    /// Any JSON value, strings with quotes, backslashes, control characters and non-ASCII.
    pub(crate) fn json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[\"\\\\{}\\[\\],: a\\n\\u{1}é😀]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map("[\"\\\\a-z{}]{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn raw_members_finds_each_member_of_any_object(
            object in proptest::collection::btree_map("[\"\\\\a-z{}:,]{0,8}", json(), 0..8),
            pretty in any::<bool>(),
        ) {
            let object: serde_json::Map<String, serde_json::Value> = object.into_iter().collect();
            let text = if pretty {
                serde_json::to_vec_pretty(&object).unwrap()
            } else {
                serde_json::to_vec(&object).unwrap()
            };
            let found = raw_members(&text).unwrap();
            prop_assert_eq!(found.len(), object.len());
            for ((key, value), (k, v)) in found.into_iter().zip(&object) {
                let mut quoted = b"\"".to_vec();
                quoted.extend_from_slice(key);
                quoted.push(b'"');
                prop_assert_eq!(&serde_json::from_slice::<String>(&quoted).unwrap(), k);
                prop_assert_eq!(&serde_json::from_slice::<serde_json::Value>(value).unwrap(), v);
            }
        }
    }

    #[test]
    fn raw_members_refuses_what_is_not_one_object() {
        for text in [
            &b""[..],
            b"[]",
            b"\"x\"",
            b"{",
            b"{\"a\"}",
            b"{\"a\":1,}",
            b"{\"a\":1} {}",
            b"{\"a\":1 2}",
        ] {
            assert!(raw_members(text).is_none(), "{}", String::from_utf8_lossy(text));
        }
        assert_eq!(raw_members(b" { } ").unwrap(), Vec::<(&[u8], &[u8])>::new());
        assert_eq!(
            raw_members(br#"{"a" : [1, {"b": "}"}] , "c":-2.5e3}"#).unwrap(),
            vec![(&b"a"[..], &br#"[1, {"b": "}"}]"#[..]), (b"c", b"-2.5e3")]
        );
    }

    /// Each member's key and where its value starts, as a [`Reader`] walks them.
    fn checked_members(json: &[u8]) -> Option<Vec<(&[u8], usize)>> {
        let mut r = Reader::new(std::str::from_utf8(json).ok()?);
        let mut found = Vec::new();
        r.members(|r, key| {
            found.push((key, skip_ws(json, r.at)));
            r.skip()
        })?;
        r.end()?;
        Some(found)
    }

    proptest! {
        #[test]
        fn a_kept_string_is_one_serde_json_decodes(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                "a", "é", "\\n", "\\\\", "\\\\u", "\\u0041", "\\ud83d", "\\ude00", "\\uDBFF", "\\uDC00",
                "\\uD7FF", "\\uE000", "\\\"",
            ]), 0..6),
        ) {
            let quoted = format!("\"{}\"", pieces.concat());
            let mut r = Reader::new(&quoted);
            let kept = r.kept_string().is_some() && r.end().is_some();
            prop_assert_eq!(kept, serde_json::from_str::<String>(&quoted).is_ok(), "{}", quoted);
        }
    }

    proptest! {
        #[test]
        fn next_special_finds_what_a_byte_by_byte_scan_finds(
            len in 0usize..400,
            specials in proptest::collection::vec(
                (any::<proptest::sample::Index>(),
                 proptest::sample::select(b"\"\\\x00\x01\x1f \x7f\x80\xff".to_vec())), 0..4),
            from in any::<proptest::sample::Index>(),
        ) {
            let mut text = vec![b'a'; len];
            for (at, byte) in specials {
                if len > 0 {
                    text[at.index(len)] = byte;
                }
            }
            let from = from.index(len + 1);
            let naive = text[from..]
                .iter()
                .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
                .map_or(len, |p| from + p);
            prop_assert_eq!(next_special(&text, from), naive);
        }
    }

    proptest! {
        #[test]
        fn skip_ws_stops_where_a_byte_by_byte_scan_stops(
            text in proptest::collection::vec(
                proptest::sample::select(b"     \n\r\t\"a{".to_vec()), 0..40),
            from in any::<proptest::sample::Index>(),
        ) {
            let from = from.index(text.len() + 1);
            let naive = text[from..]
                .iter()
                .position(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
                .map_or(text.len(), |p| from + p);
            prop_assert_eq!(skip_ws(&text, from), naive);
        }
    }

    /// serde_json's verdict: is this one JSON value?
    fn serde_accepts(text: &[u8]) -> bool {
        serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok()
    }

    proptest! {
        #[test]
        fn checked_members_never_accepts_what_serde_json_refuses(
            object in proptest::collection::btree_map("[\"\\\\a-z{}:,]{0,8}", json(), 0..8),
            pretty in any::<bool>(),
            edits in proptest::collection::vec((any::<proptest::sample::Index>(), 0u8..4, any::<u8>()), 0..3),
        ) {
            let object: serde_json::Map<String, serde_json::Value> = object.into_iter().collect();
            let mut text = if pretty {
                serde_json::to_vec_pretty(&object).unwrap()
            } else {
                serde_json::to_vec(&object).unwrap()
            };
            let unedited = edits.is_empty();
            // Break it: replace, insert or delete a byte, or cut the text short.
            for (at, how, byte) in edits {
                if text.is_empty() {
                    break;
                }
                let at = at.index(text.len());
                let byte = b"{}[]\",:\\ 0-.eE+tfnul\x01\n"[usize::from(byte) % 22];
                match how {
                    0 => text[at] = byte,
                    1 => text.insert(at, byte),
                    2 => { text.remove(at); }
                    _ => text.truncate(at),
                }
            }
            match checked_members(&text) {
                Some(found) => {
                    prop_assert!(serde_accepts(&text), "accepted: {}", String::from_utf8_lossy(&text));
                    // The same members, values and all, as the plain scan finds.
                    let plain = raw_members(&text).unwrap();
                    prop_assert_eq!(found.len(), plain.len());
                    for ((key, start), (k, v)) in found.into_iter().zip(plain) {
                        prop_assert_eq!(key, k);
                        prop_assert_eq!(start, v.as_ptr() as usize - text.as_ptr() as usize);
                    }
                }
                // Refused: when unedited, only for an escape in a key.
                None if unedited => prop_assert!(object.keys().any(|k| k.contains(['"', '\\'])
                    || k.chars().any(char::is_control))),
                None => {}
            }
        }
    }

    #[test]
    fn checked_members_refuses_what_serde_json_refuses() {
        for text in [
            &b""[..],
            b"{",
            b"{}x",
            b"{\"a\":1,}",
            b"{\"a\":01}",
            b"{\"a\":-}",
            b"{\"a\":1.}",
            b"{\"a\":1e}",
            b"{\"a\":.5}",
            b"{\"a\":+1}",
            b"{\"a\":tru}",
            b"{\"a\":nulll}",
            b"{\"a\":[1,]}",
            b"{\"a\":{\"b\"}}",
            b"{\"a\":{\"b\":1,}}",
            b"{\"a\":\"tab\there\"}",
            b"{\"a\":\"\\x\"}",
            b"{\"a\":\"\\u12g4\"}",
            b"{\"a\":\"open}",
            b"{\"a\" 1}",
            b"{\"a\":1 \"b\":2}",
        ] {
            assert!(!serde_accepts(text), "serde_json takes {}", String::from_utf8_lossy(text));
            assert!(checked_members(text).is_none(), "{}", String::from_utf8_lossy(text));
        }
        // JSON, but not an object.
        assert!(checked_members(b"[]").is_none());
        assert!(checked_members(b"\"x\"").is_none());
        let text = br#" {"id":"c-1","n":-0.5e+3,"ok":true,"v":[null,{"x":"\u00e9\"\/"}],"e":{}} "#;
        let found = checked_members(text).unwrap();
        let keys: Vec<&[u8]> = found.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [&b"id"[..], b"n", b"ok", b"v", b"e"]);
        assert_eq!(&text[found[3].1..found[4].1 - 5], br#"[null,{"x":"\u00e9\"\/"}]"#);
        // Left to serde_json: an escaped key, and nesting deeper than the scan follows.
        assert!(checked_members(br#"{"choi\u0063es":[]}"#).is_none());
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(serde_accepts(deep.as_bytes()));
        assert!(checked_members(deep.as_bytes()).is_none());
    }

    /// Every string value of `v`, in the order serde_json writes them.
    fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
            serde_json::Value::Object(m) => m.values().for_each(|i| strings(i, out)),
            _ => {}
        }
    }

    /// `v` with its string values replaced, in order, by `new`'s.
    fn replaced(
        v: &serde_json::Value,
        new: &mut impl Iterator<Item = String>,
    ) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::String(_) => Value::String(new.next().unwrap_or_default()),
            Value::Array(items) => Value::Array(items.iter().map(|i| replaced(i, new)).collect()),
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, i)| (k.clone(), replaced(i, new))).collect())
            }
            other => other.clone(),
        }
    }

    proptest! {
        #[test]
        fn a_template_takes_its_text_with_other_strings_and_nothing_else(
            v in json(),
            new in proptest::collection::vec("[a-z\"\\\n\u{1}é😀]{0,9}", 64),
            edit in proptest::option::of((any::<proptest::sample::Index>(), 0u8..22)),
        ) {
            let template = Template::new(&v.to_string()).unwrap();
            let w = replaced(&v, &mut new.iter().cloned());
            let mut text = w.to_string().into_bytes();
            let mut spans = Vec::new();
            // Only the strings differ: it matches, and each span holds the new string.
            prop_assert!(template.matches(w.to_string().as_bytes(), &mut spans).is_some(), "{}", w);
            let mut want = Vec::new();
            strings(&w, &mut want);
            let got: Vec<String> = spans
                .iter()
                .map(|&(s, e)| serde_json::from_slice(&text[s - 1..=e]).unwrap())
                .collect();
            prop_assert_eq!(got, want);
            // Anything it matches is JSON of the template's shape: strings aside, the same.
            if let Some((at, byte)) = edit && !text.is_empty() {
                let at = at.index(text.len());
                text[at] = b"{}[]\",:\\ 0-.eE+tfnul\x01\n"[usize::from(byte)];
            }
            // Bytes, as a stream gives them: a byte edit may break a character, and a match
            // is UTF-8 whole.
            if template.matches(&text, &mut spans).is_some() {
                let text = std::str::from_utf8(&text)
                    .map_err(|e| TestCaseError::fail(format!("a match is not UTF-8: {e}")))?;
                let parsed: serde_json::Value = serde_json::from_str(text)
                    .map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
                let blank = |v: &serde_json::Value| replaced(v, &mut std::iter::repeat(String::new()));
                prop_assert_eq!(blank(&parsed), blank(&v));
            }
        }
    }

    proptest! {
        #[test]
        fn a_hole_takes_its_text_with_another_string_there_and_nothing_else(
            v in json(),
            pick in any::<proptest::sample::Index>(),
            new in "[a-z\"\\\n\u{1}é😀]{0,9}",
            edit in proptest::option::of((any::<proptest::sample::Index>(), 0u8..22)),
        ) {
            let mut old = Vec::new();
            strings(&v, &mut old);
            if old.is_empty() {
                return Ok(());
            }
            let k = pick.index(old.len());
            let text = v.to_string();
            let hole = Hole::new(&text, &old[k]);
            // A hole only where no other string value reads the same.
            let unique = old.iter().filter(|o| **o == old[k]).count() == 1;
            prop_assert_eq!(hole.is_some(), unique);
            let Some(hole) = hole else { return Ok(()) };
            let mut with = old.clone();
            with[k] = new.clone();
            let w = replaced(&v, &mut with.into_iter());
            let w = w.to_string();
            let got = hole.string(w.as_bytes());
            prop_assert_eq!(got.as_deref(), Some(new.as_str()));
            // Anything it takes is the text with that value replaced by what it read.
            let mut bytes = w.into_bytes();
            if let Some((at, byte)) = edit {
                let at = at.index(bytes.len());
                bytes[at] = b"{}[]\",:\\ 0-.eE+tfnul\x01\n"[usize::from(byte)];
            }
            if let Some(got) = hole.string(&bytes) {
                let edited = std::str::from_utf8(&bytes)
                    .map_err(|e| TestCaseError::fail(format!("a match is not UTF-8: {e}")))?;
                let parsed: serde_json::Value = serde_json::from_str(edited)
                    .map_err(|e| TestCaseError::fail(format!("{e}: {edited}")))?;
                let mut with = old.clone();
                with[k] = got.into_owned();
                prop_assert_eq!(parsed, replaced(&v, &mut with.into_iter()));
            }
        }
    }

    proptest! {
        #[test]
        fn holes_take_their_text_with_other_values_there_and_nothing_else(
            object in proptest::collection::btree_map("[a-z{}:,]{0,6}", json(), 1..6),
            pick in any::<proptest::sample::Index>(),
            member in proptest::option::of(any::<proptest::sample::Index>()),
            new in "[a-z\"\\\\\n\u{1}é😀]{0,9}",
            value in json(),
            edit in proptest::option::of((any::<proptest::sample::Index>(), 0u8..22)),
        ) {
            let v = serde_json::Value::Object(object.into_iter().collect());
            let text = v.to_string();
            let mut old = Vec::new();
            strings(&v, &mut old);
            if old.is_empty() {
                return Ok(());
            }
            let k = pick.index(old.len());
            let Some(string) = unique_string(&text, &old[k]) else {
                prop_assert!(old.iter().filter(|o| **o == old[k]).count() > 1);
                return Ok(());
            };
            prop_assert_eq!(&string_at(text.as_bytes(), string).unwrap(), &old[k]);
            // The string replaced, then (when it is not inside it) a member's value.
            let mut with = old.clone();
            with[k] = new.clone();
            let mut w = replaced(&v, &mut with.into_iter());
            let mut holes = vec![(string, Fill::String)];
            let keys: Vec<String> = w.as_object().unwrap().keys().cloned().collect();
            let key = member.map(|m| keys[m.index(keys.len())].clone());
            if let Some(key) = &key {
                let at = member_value(&text, key).unwrap();
                prop_assert_eq!(serde_json::from_str::<serde_json::Value>(&text[at.0..at.1]).unwrap(), v[key].clone());
                if at.0 <= string.0 && string.1 <= at.1 {
                    return Ok(());
                }
                w[key] = value.clone();
                holes.push((at, Fill::Member));
                holes.sort_by_key(|h| h.0.0);
            }
            let holes = Holes::new(&text, &holes).unwrap();
            let w = w.to_string();
            let mut spans = Vec::new();
            // (A member's value is read as a value serde keeps: the test parses the whole.)
            let kept = holes.matches(&w, &mut spans, Reader::skip_kept).is_some();
            prop_assert!(kept || Reader::new(&value.to_string()).skip_kept().is_none(), "{}", w);
            // Anything it takes is the JSON with the values read in the holes.
            let mut bytes = w.into_bytes();
            if let Some((at, byte)) = edit {
                let at = at.index(bytes.len());
                bytes[at] = b"{}[]\",:\\ 0-.eE+tfnul\x01\n"[usize::from(byte)];
            }
            let Ok(edited) = std::str::from_utf8(&bytes) else { return Ok(()) };
            if holes.matches(edited, &mut spans, Reader::skip_kept).is_some() {
                let parsed: serde_json::Value = serde_json::from_str(edited)
                    .map_err(|e| TestCaseError::fail(format!("{e}: {edited}")))?;
                let (mut got, mut member) = (None, None);
                for (&(start, end), fill) in spans.iter().zip(&holes.fills) {
                    match fill {
                        Fill::String => got = string_at(edited.as_bytes(), (start, end)),
                        Fill::Member => member = serde_json::from_str(&edited[start..end]).ok(),
                    }
                }
                let mut with = old.clone();
                with[k] = got.unwrap().into_owned();
                let mut want = replaced(&v, &mut with.into_iter());
                if let Some(key) = &key {
                    want[key] = member.unwrap();
                }
                prop_assert_eq!(parsed, want);
            }
        }
    }

    #[test]
    fn a_slot_stops_building_after_templates_no_event_fit_in_a_row() {
        const MAX: u8 = TemplateSlot::<u8>::MAX_WASTED;
        let mut slot = TemplateSlot::default();
        slot.keep(|| None);
        assert!(slot.get_mut().is_none());
        // Unused templates: the MAX-th in a row empties the slot for good.
        for n in 0..MAX + 3 {
            slot.keep(|| Some(n));
            assert_eq!(slot.get_mut().copied(), (n < MAX).then_some(n), "{n}");
        }
        // One that fits starts the count again; no template made leaves the last one.
        let mut slot = TemplateSlot::default();
        for n in 0..MAX - 1 {
            slot.keep(|| Some(n));
        }
        slot.fit();
        slot.keep(|| None);
        assert_eq!(slot.get_mut().copied(), Some(MAX - 2));
        for n in 0..MAX + 3 {
            slot.keep(|| Some(n));
            assert_eq!(slot.get_mut().copied(), (n < MAX).then_some(n), "{n}");
        }
        assert!(TemplateSlot::<u8>::off().get_mut().is_none());
        let mut off = TemplateSlot::off();
        off.keep(|| Some(1));
        assert!(off.get_mut().is_none());
    }

    #[test]
    fn a_member_value_is_found_once_and_holes_take_nothing_more() {
        let text = r#"{"candidates": [{"text": "a"}],"usage": {"n": 1} ,"id": "x"}"#;
        let at = member_value(text, "usage").unwrap();
        assert_eq!(&text[at.0..at.1], r#"{"n": 1}"#);
        assert_eq!(member_value(text, "missing"), None);
        assert_eq!(member_value(r#"{"a":1,"a":2}"#, "a"), None, "given twice");
        assert_eq!(member_value(r#"{"a":1,"a\u0062":2}"#, "a"), None, "an escaped key");
        let text_at = unique_string(text, "a").unwrap();
        let holes = Holes::new(text, &[(text_at, Fill::String), (at, Fill::Member)]).unwrap();
        let mut spans = Vec::new();
        let next = r#"{"candidates": [{"text": "b\n"}],"usage": [] ,"id": "x"}"#;
        assert!(holes.matches(next, &mut spans, Reader::skip_kept).is_some());
        assert_eq!(string_at(next.as_bytes(), spans[0]).unwrap(), "b\n");
        assert_eq!(&next[spans[1].0..spans[1].1], "[]");
        for bad in [
            r#"{"candidates": [{"text": "b"}],"usage": [] ,"id": "x"} "#,
            r#"{"candidates": [{"text": "b"}],"usage": [] ,"id": "x"}}"#,
            r#"{"candidates": [{"text": "b"}],"usage": [1 ,"id": "x"}"#,
            r#"{"candidates": [{"text": "b"}],"usage": 1e5 ,"id": "x"}"#,
            r#"{"candidates": [{"text": "b"}],"usage": [] ,"id": "y"}"#,
        ] {
            assert!(holes.matches(bad, &mut spans, Reader::skip_kept).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_hole_is_the_one_string_value_that_reads_as_asked() {
        let text =
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#;
        let hole = Hole::new(text, "Hi").unwrap();
        let next = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a\"\u00e9\n"}}"#;
        assert_eq!(hole.string(next.as_bytes()).as_deref(), Some("a\"é\n"));
        let plain = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}"#;
        assert!(matches!(hole.string(plain.as_bytes()), Some(Cow::Borrowed(" there"))));
        for bad in [
            // Another index, another delta type, two strings, a broken string, more after.
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"x"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","text":"x"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x","y":"z"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x\q"}}"#,
            "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"\t\"}}",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}} "#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\ud800"}}"#,
        ] {
            assert!(hole.string(bad.as_bytes()).is_none(), "{bad}");
        }
        // A key is no string value; a value that reads the same as another, escaped or not, is
        // no hole; nor is a value no string holds.
        assert!(Hole::new(r#"{"text":"text"}"#, "text").is_some());
        assert!(Hole::new(r#"{"a":"a/b","b":"a\/b"}"#, "a/b").is_none());
        assert!(Hole::new(r#"{"a":"x","b":"y"}"#, "z").is_none());
    }

    #[test]
    fn a_template_slots_string_values_not_keys() {
        let text = r#"{"id":"c1","n":[1,"two",{"k":"v"}],"e":"","esc":"a\"b"}"#;
        let t = Template::new(text).unwrap();
        let slots: Vec<&str> = t.slots.iter().map(|&(s, e)| &text[s..e]).collect();
        assert_eq!(slots, ["c1", "two", "v", "", r#"a\"b"#]);
        assert_eq!(t.slot_at(text.find("two").unwrap()), Some(1));
        assert_eq!(t.slot_at(text.find("id").unwrap()), None, "a key is no slot");
        let mut spans = Vec::new();
        let other = r#"{"id":"chatcmpl-9","n":[1,"","{\"k\":1}"],"e":"\u00e9","esc":"a\"b"}"#;
        // The third string holds what looks like an object: it is a string all the same.
        assert!(
            t.matches(other.as_bytes(), &mut spans).is_none(),
            "the object in n became a string"
        );
        let other = r#"{"id":"chatcmpl-9","n":[1,"",{"k":"{}"}],"e":"\u00e9","esc":"a\"b"}"#;
        assert!(t.matches(other.as_bytes(), &mut spans).is_some());
        assert_eq!(&other[spans[0].0..spans[0].1], "chatcmpl-9");
        for bad in [
            r#"{"id":"c1","n":[1,"two",{"k":"v"}],"e":"\x","esc":"a\"b"}"#,
            r#"{"id":"c1","n":[1,"two",{"k":"v"}],"e":"tab	","esc":"a\"b"}"#,
            r#"{"id":"c1","n":[2,"two",{"k":"v"}],"e":"","esc":"a\"b"}"#,
            r#"{"id":"c1","n":[1,"two",{"K":"v"}],"e":"","esc":"a\"b"}"#,
            r#"{"id":"c1","n":[1,"two",{"k":"v"}],"e":"","esc":"a\"b"} "#,
            r#"{"id":"c1","n":[1,"two",{"k":"v"}],"e":"","esc":"a\"b""#,
        ] {
            assert!(t.matches(bad.as_bytes(), &mut spans).is_none(), "{bad}");
        }
    }
}
