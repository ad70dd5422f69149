//! Server-sent events: a decoder that turns bytes into events whatever way the bytes are
//! split, and the encoder for the events the proxy sends.

use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use uniproxy_wire::{ChatCompletionChunk, ChunkChoice, Delta};

use crate::TranslateError;

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when the upstream names its events (Anthropic does).
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: Bytes,
    /// The event exactly as it arrived, when that was one `data: …` line and a blank line,
    /// `\n`-terminated: such an event can be forwarded as is, with no copy.
    pub frame: Option<Bytes>,
}

impl SseEvent {
    /// An event with a name and data, as a decoder would give it.
    pub fn new(event: Option<String>, data: impl Into<Bytes>) -> Self {
        SseEvent { event, data: data.into(), frame: None }
    }

    /// The data as text, if it is UTF-8.
    pub fn data_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.data).ok()
    }
}

/// The data lines of the event being read.
#[derive(Debug)]
enum Data {
    /// One line so far: its value's place in the buffer (nothing copied yet).
    One(Range<usize>),
    /// Several lines, joined.
    Many(BytesMut),
}

/// How large one event may be by default, in bytes from its start to its blank line: as large
/// as a whole answer that the server reads without a stream may be.
pub const MAX_EVENT: usize = 64 << 20;

/// An incremental SSE decoder (WHATWG event-stream rules).
///
/// It buffers partial lines, so an event may be split across reads anywhere, even inside a
/// UTF-8 character; it accepts `\n`, `\r\n` and `\r` line ends, skips comments (`: …`) and a
/// leading byte-order mark, and dispatches an event at each blank line. Events without data
/// (keep-alives) are not dispatched. One field the rules do not know is read: `error: …`, as
/// llama.cpp's server sends an error, is an event named `error` with that data. Lines are found with SIMD (`memchr`), each byte searched
/// once however the line is split, and an event with one data line is cut out of the buffer
/// without copying. An event larger than its limit ([`MAX_EVENT`] unless set with
/// [`with_max_event`](Self::with_max_event)) is an error, not a buffer that grows without end.
#[derive(Debug)]
pub struct Decoder {
    /// Bytes from the start of the current event (or of a line not yet complete).
    buf: BytesMut,
    /// Where the next line starts in `buf`.
    pos: usize,
    /// How many bytes from `pos` on are known to hold no line end: a line that comes in many
    /// reads is searched once, not once per read (which took 221 s for one line of 40 MB).
    searched: usize,
    event: Option<String>,
    data: Option<Data>,
    started: bool,
    /// The previous line ended in a `\r` at the end of the input: a `\n` next belongs to it.
    after_cr: bool,
    /// The largest event, in bytes.
    max_event: usize,
    /// An event was larger than `max_event`: the stream cannot be read on.
    failed: bool,
    /// Bytes searched for line ends, in all: what the tests count.
    #[cfg(test)]
    searched_in_all: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::with_max_event(MAX_EVENT)
    }
}

const BOM: &[u8] = "\u{feff}".as_bytes();

impl Decoder {
    /// A new decoder, for events of up to [`MAX_EVENT`] bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new decoder for events of up to `max_event` bytes, each counted from its start to its
    /// blank line (line ends inside it included).
    pub fn with_max_event(max_event: usize) -> Self {
        Decoder {
            buf: BytesMut::new(),
            pos: 0,
            searched: 0,
            event: None,
            data: None,
            started: false,
            after_cr: false,
            max_event,
            failed: false,
            #[cfg(test)]
            searched_in_all: 0,
        }
    }

    /// Feeds bytes and returns the events they complete.
    ///
    /// # Errors
    /// [`TranslateError::EventTooLarge`] once an event is larger than the decoder's limit; the
    /// events completed before it are lost with this method (not with
    /// [`feed_into`](Self::feed_into)), and every later call fails the same way.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, TranslateError> {
        let mut events = Vec::new();
        self.feed_into(chunk, &mut events)?;
        Ok(events)
    }

    /// Feeds bytes and appends the events they complete to `out`.
    ///
    /// # Errors
    /// [`TranslateError::EventTooLarge`] once an event is larger than the decoder's limit: the
    /// events completed before it are in `out`, the event's bytes are dropped, and every later
    /// call fails the same way.
    pub fn feed_into(
        &mut self,
        chunk: &[u8],
        out: &mut Vec<SseEvent>,
    ) -> Result<(), TranslateError> {
        if self.failed {
            return Err(self.error());
        }
        self.buf.extend_from_slice(chunk);
        if !self.started {
            if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return Ok(()); // Maybe a byte-order mark, split; wait for more.
            }
            if self.buf.starts_with(BOM) {
                self.buf.advance(BOM.len());
            }
            self.started = true;
        }
        loop {
            if self.after_cr && self.pos < self.buf.len() {
                self.after_cr = false;
                if self.buf[self.pos] == b'\n' {
                    if self.pos == 0 {
                        // It ends the previous event's terminator: not a byte of the next event.
                        self.buf.advance(1);
                    } else {
                        self.pos += 1;
                    }
                }
            }
            // A blank line (the end of most events) is known without a search; otherwise the
            // search starts where the last one stopped.
            let from = self.pos + self.searched;
            let found = match self.buf.get(self.pos) {
                Some(b'\n') => Some(self.pos),
                _ => {
                    let rest = self.buf.get(from..).unwrap_or_default();
                    #[cfg(test)]
                    {
                        self.searched_in_all += rest.len();
                    }
                    memchr::memchr2(b'\n', b'\r', rest).map(|i| from + i)
                }
            };
            let Some(end) = found else {
                self.searched = self.buf.len().saturating_sub(self.pos);
                // `buf` holds the event so far and nothing else; a line end at its end was
                // measured with its line.
                let partial = self.pos < self.buf.len();
                return if partial && self.buf.len() > self.max_event {
                    Err(self.fail())
                } else {
                    Ok(())
                };
            };
            // The event so far, up to this line's end (events before it were split off).
            if end > self.max_event {
                return Err(self.fail());
            }
            self.searched = 0;
            let start = self.pos;
            let next = if self.buf[end] == b'\r' {
                match self.buf.get(end + 1) {
                    Some(b'\n') => end + 2,
                    Some(_) => end + 1,
                    None => {
                        // The `\n` of a `\r\n` may come in the next chunk.
                        self.after_cr = true;
                        end + 1
                    }
                }
            } else {
                end + 1
            };
            self.pos = next;
            if let Some(ev) = self.line(start, end) {
                out.push(ev);
            }
        }
    }

    /// The error for an event over the limit, from now on: what was buffered is dropped.
    #[cold]
    fn fail(&mut self) -> TranslateError {
        self.failed = true;
        self.buf = BytesMut::new();
        (self.pos, self.searched) = (0, 0);
        (self.event, self.data) = (None, None);
        self.error()
    }

    fn error(&self) -> TranslateError {
        TranslateError::EventTooLarge { limit: self.max_event }
    }

    /// Ends the stream: an event left without its blank line is dispatched, as servers that
    /// close the connection right after the last `data:` line expect. (After an event too
    /// large, there is none.)
    pub fn finish(&mut self) -> Option<SseEvent> {
        if !self.started && !self.buf.is_empty() {
            self.started = true;
        }
        if self.pos < self.buf.len() {
            let (start, end) = (self.pos, self.buf.len());
            self.pos = end;
            self.line(start, end);
        }
        let end = self.pos;
        self.dispatch(end)
    }

    /// Handles the line `buf[start..end]` (without its terminator); `self.pos` is already past
    /// the terminator.
    fn line(&mut self, start: usize, end: usize) -> Option<SseEvent> {
        if start == end {
            return self.dispatch(self.pos);
        }
        let line = &self.buf[start..end];
        if line[0] == b':' {
            return None;
        }
        // The two fields streams send, known without a search; anything else searched.
        let colon = if line.starts_with(b"data:") {
            Some(4)
        } else if line.starts_with(b"event:") {
            Some(5)
        } else {
            memchr::memchr(b':', line)
        };
        let (field, value) = match colon {
            Some(i) => {
                let v = start + i + 1;
                let v = if self.buf.get(v) == Some(&b' ') && v < end { v + 1 } else { v };
                (&line[..i], v..end)
            }
            None => (line, end..end),
        };
        match field {
            b"data" | b"error" => {
                if field == b"error" {
                    // llama.cpp's server writes an error in a stream as an `error:` field
                    // (`error: {"code":500,"message":…}`), which a browser would drop, and the
                    // stream's end after it: read as an `error` event with that data, so that
                    // the error is not lost.
                    self.event = Some("error".to_owned());
                }
                self.data = Some(match self.data.take() {
                    None => Data::One(value),
                    Some(Data::One(first)) => {
                        let mut joined = BytesMut::with_capacity(first.len() + value.len() + 1);
                        joined.extend_from_slice(&self.buf[first]);
                        joined.put_u8(b'\n');
                        joined.extend_from_slice(&self.buf[value]);
                        Data::Many(joined)
                    }
                    Some(Data::Many(mut joined)) => {
                        joined.put_u8(b'\n');
                        joined.extend_from_slice(&self.buf[value]);
                        Data::Many(joined)
                    }
                });
            }
            b"event" => {
                let name = &self.buf[value];
                // Checked first: `from_utf8_lossy` costs more than the copy, even for ASCII.
                self.event = Some(match std::str::from_utf8(name) {
                    Ok(name) => name.to_owned(),
                    Err(_) => String::from_utf8_lossy(name).into_owned(),
                });
            }
            // `id` and `retry` matter to browsers reconnecting, not to a proxy.
            _ => {}
        }
        None
    }

    /// Ends the event whose bytes are `buf[..end]`.
    fn dispatch(&mut self, end: usize) -> Option<SseEvent> {
        let event = self.event.take();
        let data = self.data.take();
        let raw = self.buf.split_to(end.min(self.buf.len())).freeze();
        (self.pos, self.searched) = (0, 0);
        let data = data?;
        Some(match data {
            Data::One(value) => {
                // Exactly `data: VALUE\n\n`: the frame can go on as it came.
                let plain = event.is_none()
                    && value.start == 6
                    && raw.starts_with(b"data: ")
                    && raw.len() == value.end + 2
                    && raw.ends_with(b"\n\n");
                SseEvent { frame: plain.then(|| raw.clone()), data: raw.slice(value), event }
            }
            Data::Many(joined) => SseEvent { event, data: joined.freeze(), frame: None },
        })
    }
}

/// `data: [DONE]\n\n`, the end of an OpenAI stream.
pub const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

/// Frames JSON text as one `data:` event. Text of several lines (an upstream's event of
/// several `data:` lines, which a decoder joins with `\n`) goes as as many `data:` lines, which
/// a client's decoder joins back into the same text.
pub fn frame_raw(json: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(json.len() + 8);
    let mut rest = json;
    while let Some(end) = memchr::memchr(b'\n', rest) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&rest[..=end]);
        rest = &rest[end + 1..];
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(rest);
    out.extend_from_slice(b"\n\n");
    out.freeze()
}

/// Serializes a value as one `data:` event.
pub fn encode<T: Serialize>(value: &T) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    // Serializing our own wire types into memory cannot fail: they hold no maps with
    // non-string keys and no types whose Serialize impl errors.
    if crate::json::write_into(&mut out, value).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// A content chunk's frame as [`encode`] writes it, but for the text: the bytes before the
/// text's JSON string and after it. Most of a translated stream's chunks are one choice's new
/// text under the same id, creation time and model, and serializing each whole was a third
/// of a translation's instructions; with the frame, only the text is escaped.
#[derive(Debug, Clone)]
pub(crate) struct TextFrame {
    before: Bytes,
    after: Bytes,
}

/// A text no stream sends (NUL bytes around it), written where the text goes to find the place.
const MARK: &str = "\u{0}uniproxy text\u{0}";

impl TextFrame {
    /// The frame of a chunk with `head`'s id, creation time and model whose one choice,
    /// `index`, carries only content: found by encoding it with [`MARK`] as the content;
    /// `None` if the mark is not found exactly once.
    pub(crate) fn new(mut head: ChatCompletionChunk, index: u32) -> Option<Self> {
        let mark = Delta { content: Some(Some(MARK.to_owned())), ..Default::default() };
        head.choices.push(ChunkChoice::new(index, mark));
        let frame = encode(&head);
        let mark = serde_json::to_vec(MARK).ok()?;
        // A plain search: the frame is a few hundred bytes, searched once per model (and per
        // candidate, for Gemini), where `memmem` spends more building its searcher than this
        // spends searching.
        let find = |from: usize| {
            let found = frame.get(from..)?.windows(mark.len()).position(|w| w == mark.as_slice());
            found.map(|i| from + i)
        };
        let at = find(0)?;
        if find(at + 1).is_some() {
            return None;
        }
        Some(TextFrame { before: frame.slice(..at), after: frame.slice(at + mark.len()..) })
    }

    /// The chunk with `text` as its content: the bytes [`encode`] writes for it.
    pub(crate) fn with(&self, text: &str) -> Bytes {
        let mut out = Vec::with_capacity(self.before.len() + text.len() + 2 + self.after.len());
        out.extend_from_slice(&self.before);
        crate::json::escape_into(&mut out, text);
        out.extend_from_slice(&self.after);
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(bytes: &[u8]) -> Vec<SseEvent> {
        let mut d = Decoder::new();
        let mut v = d.feed(bytes).unwrap();
        v.extend(d.finish());
        v
    }

    /// A chunk of `head` whose choice `index` carries `text`, as [`encode`] writes it.
    fn encoded(head: &ChatCompletionChunk, index: u32, text: &str) -> Bytes {
        let mut chunk = head.clone();
        let delta = Delta { content: Some(Some(text.to_owned())), ..Default::default() };
        chunk.choices.push(ChunkChoice::new(index, delta));
        encode(&chunk)
    }

    proptest::proptest! {
        #[test]
        fn a_chunk_from_a_text_frame_is_the_encoded_chunk(
            id in "[a-z_\"\\\u{0}é😀]{0,12}",
            model in "[a-z\"\\\u{0}\u{1f}é]{0,8}",
            created in proptest::num::u64::ANY,
            index in 0u32..4,
            texts in proptest::collection::vec("[a-z \"\\\n\t\u{0}\u{1}\u{7f}é😀]{0,16}", 1..6),
        ) {
            let head = ChatCompletionChunk::new(id, created, model);
            let frame = TextFrame::new(head.clone(), index).unwrap();
            for text in &texts {
                proptest::prop_assert_eq!(frame.with(text), encoded(&head, index, text));
            }
        }
    }

    #[test]
    fn a_text_frame_is_the_bytes_around_the_content() {
        let head = ChatCompletionChunk::new("msg_1", 1_741_569_952, "claude-sonnet-4-5");
        let frame = TextFrame::new(head, 2).unwrap();
        let before = String::from_utf8_lossy(&frame.before);
        assert!(before.starts_with(r#"data: {"id":"msg_1""#), "{before}");
        assert!(before.contains("claude-sonnet-4-5") && before.contains(r#""index":2"#));
        assert!(before.ends_with(r#""content":"#), "{before}");
        assert!(frame.after.ends_with(b"}\n\n"), "{:?}", frame.after);
        // A head that holds the mark: found twice, so no frame.
        let head = ChatCompletionChunk::new("msg_1", 1, MARK);
        assert!(TextFrame::new(head, 0).is_none());
    }

    #[test]
    fn plain_events_keep_their_frame_and_others_do_not() {
        let ev = all(b"data: {\"a\":1}\n\ndata: x\r\n\r\nevent: e\ndata: y\n\n: c\ndata: z\n\ndata: 1\ndata: 2\n\n");
        let frames: Vec<Option<&[u8]>> = ev.iter().map(|e| e.frame.as_deref()).collect();
        assert_eq!(
            frames,
            vec![Some(&b"data: {\"a\":1}\n\n"[..]), None, None, None, None],
            "only an exact `data: …\\n\\n` event is forwarded as is"
        );
        let data: Vec<&[u8]> = ev.iter().map(|e| &e.data[..]).collect();
        assert_eq!(data, vec![&b"{\"a\":1}"[..], b"x", b"y", b"z", b"1\n2"]);
        assert_eq!(ev[2].event.as_deref(), Some("e"));
        // A name that is not UTF-8 is read with replacement characters.
        let ev = all(b"event: \xffbad\ndata: x\n\nevent: ok\ndata: y\n\n");
        let names: Vec<Option<&str>> = ev.iter().map(|e| e.event.as_deref()).collect();
        assert_eq!(names, [Some("\u{fffd}bad"), Some("ok")]);
    }

    #[test]
    fn a_frame_of_several_lines_decodes_to_the_same_data() {
        for data in [&b"{\"a\":1}"[..], b"{\"a\":\n1,\n\"b\":2}", b"\n{}\n", b""] {
            let framed = frame_raw(data);
            let back = all(&framed);
            assert_eq!(back.len(), 1, "{framed:?}");
            assert_eq!(&back[0].data[..], data, "{framed:?}");
        }
        assert_eq!(&frame_raw(b"{\n}")[..], b"data: {\ndata: }\n\n");
    }

    /// Found by the fuzzer: a `\r\n` terminator split after its `\r` put the `\n` at the
    /// start of the next event's bytes, so a plain event lost its pass-through frame.
    #[test]
    fn a_crlf_terminator_split_after_cr_does_not_leak_into_the_next_event() {
        let input = b"data: a\r\n\r\ndata: b\n\n";
        let whole = all(input);
        let cut = input.iter().position(|&b| b == b'\r').map(|i| i + 3).unwrap_or(0);
        let mut d = Decoder::new();
        let mut split = d.feed(&input[..cut]).unwrap();
        split.extend(d.feed(&input[cut..]).unwrap());
        split.extend(d.finish());
        assert_eq!(whole, split);
        assert_eq!(split[1].frame.as_deref(), Some(&b"data: b\n\n"[..]));
    }

    #[test]
    fn split_anywhere_gives_the_same_events() {
        let input = "\u{feff}data: h\u{e9}llo\r\n\r\n: ping\n\nevent: x\ndata: a\ndata: b\n\ndata:c\rdata: d\r\r\ndata: last";
        let whole = all(input.as_bytes());
        assert_eq!(whole.len(), 4);
        for step in 1..input.len() {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for piece in input.as_bytes().chunks(step) {
                got.extend(d.feed(piece).unwrap());
            }
            got.extend(d.finish());
            let strip = |v: &[SseEvent]| -> Vec<(Option<String>, Bytes)> {
                v.iter().map(|e| (e.event.clone(), e.data.clone())).collect()
            };
            assert_eq!(strip(&got), strip(&whole), "split every {step} bytes");
        }
        assert_eq!(&whole[3].data[..], b"last");
        assert_eq!(&whole[2].data[..], b"c\nd");
    }

    /// One line of 10 MB from the upstream took 14 s to decode, 40 MB 221 s, a runtime thread
    /// pinned all along: each read searched the whole line again for its end.
    #[test]
    fn a_line_that_comes_in_many_reads_is_searched_once() {
        let mut d = Decoder::new();
        let piece = [b'x'; 1024];
        assert_eq!(d.feed(b"data: ").unwrap(), []);
        for _ in 0..1024 {
            assert_eq!(d.feed(&piece).unwrap(), []);
        }
        let events = d.feed(b"\r\n\r\n").unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data.len(), 1 << 20);
        // Each byte once, but for the blank line, searched again after the line before it.
        let fed = 6 + (1 << 20) + 4;
        let searched = d.searched_in_all;
        assert!(searched <= fed + 2, "{searched} bytes searched in {fed} (the old way: 2^29)");
    }

    #[test]
    fn an_event_larger_than_the_limit_is_an_error_and_the_events_before_it_are_kept() {
        // One line without end, an event of many short lines, an event of a long line, each
        // in one read and in reads of 7 bytes.
        let inputs = [
            format!("data: a\n\ndata: {}", "x".repeat(100)),
            format!("data: a\n\n{}", ": ping\n".repeat(20)),
            format!("data: a\n\nevent: e\r\ndata: {}\r\n\r\n", "x".repeat(100)),
        ];
        for input in &inputs {
            for step in [input.len(), 7] {
                let mut d = Decoder::with_max_event(64);
                let mut events = Vec::new();
                let error = input
                    .as_bytes()
                    .chunks(step)
                    .find_map(|piece| d.feed_into(piece, &mut events).err());
                assert!(
                    matches!(error, Some(TranslateError::EventTooLarge { limit: 64 })),
                    "{input:?}"
                );
                let a = SseEvent {
                    event: None,
                    data: Bytes::from_static(b"a"),
                    frame: Some(Bytes::from_static(b"data: a\n\n")),
                };
                assert_eq!(events, [a]);
                // Nothing of the event is kept, and the decoder stays failed.
                assert!(d.buf.is_empty());
                assert!(d.feed(b"data: b\n\n").is_err());
                assert_eq!(d.finish(), None);
            }
        }
        // At the limit, counted from the event's start to its blank line, an event goes.
        let at_limit = format!("data: {}\n", "x".repeat(57));
        assert_eq!(at_limit.len(), 64);
        for step in [1, 5, 66] {
            let mut d = Decoder::with_max_event(64);
            let mut events = Vec::new();
            for piece in format!("{at_limit}\n{at_limit}\r\n").as_bytes().chunks(step) {
                d.feed_into(piece, &mut events).unwrap();
            }
            events.extend(d.finish());
            assert_eq!(events.len(), 2, "split every {step} bytes");
        }
        let mut d = Decoder::with_max_event(64);
        assert!(d.feed(format!("data: {}\n\n", "x".repeat(58)).as_bytes()).is_err());
    }
}
