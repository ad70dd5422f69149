//! Server-sent events: a decoder that turns bytes into events whatever way the bytes are
//! split, and the encoder for the events the proxy sends.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when the upstream names its events (Anthropic does).
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: Bytes,
}

impl SseEvent {
    /// The data as text, if it is UTF-8.
    pub fn data_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.data).ok()
    }
}

/// An incremental SSE decoder (WHATWG event-stream rules).
///
/// It buffers partial lines, so an event may be split across reads anywhere, even inside a
/// UTF-8 character; it accepts `\n`, `\r\n` and `\r` line ends, skips comments (`: …`) and a
/// leading byte-order mark, and dispatches an event at each blank line. Events without data
/// (keep-alives) are not dispatched.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
    /// Where to resume looking for a line end in `buf`.
    scanned: usize,
    event: Option<String>,
    data: BytesMut,
    has_data: bool,
    started: bool,
    /// The previous chunk ended in `\r`: a `\n` at the start of the next one belongs to it.
    after_cr: bool,
}

impl Decoder {
    /// A new decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes and returns the events they complete.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        self.feed_into(chunk, &mut events);
        events
    }

    /// Feeds bytes and appends the events they complete to `out`.
    pub fn feed_into(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) {
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        self.buf.extend_from_slice(chunk);
        loop {
            let Some(rel) = self.buf[self.scanned..].iter().position(|&b| b == b'\n' || b == b'\r')
            else {
                self.scanned = self.buf.len();
                return;
            };
            let end = self.scanned + rel;
            let mut skip = 1;
            if self.buf[end] == b'\r' {
                match self.buf.get(end + 1) {
                    Some(b'\n') => skip = 2,
                    Some(_) => {}
                    // The `\n` of a `\r\n` may come in the next chunk.
                    None => self.after_cr = true,
                }
            }
            let line = self.buf.split_to(end + skip).freeze();
            self.scanned = 0;
            self.line(&line[..end], out);
        }
    }

    /// Ends the stream: an event left without its blank line is dispatched, as servers that
    /// close the connection right after the last `data:` line expect.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let mut out = Vec::new();
            self.line(&rest, &mut out);
            if let Some(ev) = out.pop() {
                return Some(ev);
            }
        }
        self.dispatch()
    }

    fn line(&mut self, mut line: &[u8], out: &mut Vec<SseEvent>) {
        if !self.started {
            self.started = true;
            line = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line);
        }
        if line.is_empty() {
            if let Some(ev) = self.dispatch() {
                out.push(ev);
            }
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.put_u8(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            // `id` and `retry` matter to browsers reconnecting, not to a proxy.
            _ => {}
        }
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(SseEvent { event, data: self.data.split().freeze() })
    }
}

/// `data: [DONE]\n\n`, the end of an OpenAI stream.
pub const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

/// Frames JSON text as one `data:` event.
pub fn frame_raw(json: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out.freeze()
}

/// Serializes a value as one `data:` event.
pub fn encode<T: Serialize>(value: &T) -> Bytes {
    let mut out = BytesMut::with_capacity(256).writer();
    out.get_mut().extend_from_slice(b"data: ");
    // Serializing our own wire types into memory cannot fail: they hold no maps with
    // non-string keys and no types whose Serialize impl errors.
    if serde_json::to_writer(&mut out, value).is_err() {
        out.get_mut().truncate(6);
        out.get_mut().extend_from_slice(b"{}");
    }
    out.get_mut().extend_from_slice(b"\n\n");
    out.into_inner().freeze()
}
