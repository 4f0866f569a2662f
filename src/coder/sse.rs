//! An incremental parser for the server-sent events of Coder's `/watch` endpoints.
//!
//! Coder writes `event: <type>\n`, then `data: <json>\n` when the event has data, then a
//! blank line. The parser takes bytes as they arrive, in chunks of any size, and yields whole
//! events; it follows the SSE rules for `\r\n`, comments and multi-line data, and refuses an
//! event larger than its bound rather than growing without limit.

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field; `message` when absent, as the SSE spec says.
    pub kind: String,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("event stream line over {0} bytes")]
    TooLarge(usize),
    #[error("event stream is not UTF-8")]
    NotUtf8,
}

#[derive(Debug)]
pub struct Parser {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for a newline: a long line arriving in many chunks
    /// is scanned once, not once per chunk.
    scanned: usize,
    kind: Option<String>,
    data: Option<String>,
    max: usize,
}

impl Parser {
    /// A parser refusing lines and events over `max` bytes.
    pub fn new(max: usize) -> Self {
        Parser {
            buf: Vec::new(),
            scanned: 0,
            kind: None,
            data: None,
            max,
        }
    }

    /// Feeds bytes; returns the events they completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, SseError> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        let mut from = self.scanned;
        while let Some(nl) = self.buf[from..].iter().position(|&b| b == b'\n') {
            let end = from + nl;
            // The same bound whether the line came in one chunk or many.
            if end - start > self.max {
                return Err(SseError::TooLarge(self.max));
            }
            let mut line = &self.buf[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = std::str::from_utf8(line)
                .map_err(|_| SseError::NotUtf8)?
                .to_string();
            start = end + 1;
            from = start;
            if let Some(ev) = self.line(&line)? {
                events.push(ev);
            }
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        if self.buf.len() > self.max {
            return Err(SseError::TooLarge(self.max));
        }
        Ok(events)
    }

    fn line(&mut self, line: &str) -> Result<Option<Event>, SseError> {
        if line.is_empty() {
            let kind = self.kind.take();
            let data = self.data.take();
            if kind.is_none() && data.is_none() {
                return Ok(None);
            }
            return Ok(Some(Event {
                kind: kind.unwrap_or_else(|| "message".into()),
                data: data.unwrap_or_default(),
            }));
        }
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.kind = Some(value.to_string()),
            "data" => {
                let len = self.data.as_ref().map_or(0, String::len);
                if len + value.len() + 1 > self.max {
                    return Err(SseError::TooLarge(self.max));
                }
                match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                }
            }
            _ => {} // id, retry and unknown fields: not used by Coder's streams
        }
        Ok(None)
    }
}

/// Every event of a stream that arrives in `chunks`, or the first refusal. Whatever the
/// chunking, the answer is the same: the fuzz target `sse` and its seed replay hold it to that.
pub fn parse_chunks(
    max: usize,
    chunks: &mut dyn Iterator<Item = &[u8]>,
) -> Result<Vec<Event>, SseError> {
    let mut p = Parser::new(max);
    let mut out = Vec::new();
    for c in chunks {
        out.extend(p.push(c)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coder_stream_in_arbitrary_chunks() {
        let stream = b"event: ping\n\nevent: data\ndata: {\"a\":1}\n\n: comment\r\nevent: error\r\ndata: {\"message\":\"x\"}\r\n\r\n";
        for size in 1..stream.len() {
            let mut p = Parser::new(1024);
            let mut got = Vec::new();
            for chunk in stream.chunks(size) {
                got.extend(p.push(chunk).unwrap());
            }
            assert_eq!(
                got,
                vec![
                    Event {
                        kind: "ping".into(),
                        data: "".into()
                    },
                    Event {
                        kind: "data".into(),
                        data: "{\"a\":1}".into()
                    },
                    Event {
                        kind: "error".into(),
                        data: "{\"message\":\"x\"}".into()
                    },
                ],
                "chunk size {size}"
            );
        }
    }

    #[test]
    fn multi_line_data_joins_with_newline() {
        let mut p = Parser::new(1024);
        let ev = p.push(b"data: a\ndata: b\n\n").unwrap();
        assert_eq!(ev[0].data, "a\nb");
        assert_eq!(ev[0].kind, "message");
    }

    #[test]
    fn oversized_line_is_refused() {
        let mut p = Parser::new(16);
        assert_eq!(p.push(&[b'x'; 40]), Err(SseError::TooLarge(16)));
    }

    /// The fuzz target's property (`fuzz/fuzz_targets/sse.rs`) over its seeds, split at
    /// every byte: the same events, or the same refusal, whole, in two chunks and byte by
    /// byte. The test command replays these; `scripts/fuzz` fuzzes from them.
    #[test]
    fn fuzz_seeds_split_anywhere_give_the_same_events() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/sse");
        let mut events = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz/seeds/sse") {
            let seed = std::fs::read(entry.unwrap().path()).unwrap();
            // A fuzz input's first byte is where it splits; the rest is the stream.
            let stream = &seed[1..];
            let whole = parse_chunks(256, &mut std::iter::once(stream));
            events += whole.as_ref().map_or(0, |e| e.len());
            assert_eq!(whole, parse_chunks(256, &mut stream.chunks(1)));
            for at in 0..=stream.len() {
                assert_eq!(
                    whole,
                    parse_chunks(256, &mut [&stream[..at], &stream[at..]].into_iter()),
                    "{at}"
                );
            }
        }
        assert!(events >= 2, "{events} events in the seeds");
    }
}
