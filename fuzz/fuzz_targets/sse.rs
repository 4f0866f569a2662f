//! Any bytes as a `/watch` event stream, fed whole, in two chunks and byte by byte: no panic,
//! and the same events (or the same refusal) whatever the chunking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scaletestd::coder::sse::{Event, Parser, SseError};

fn feed<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> Result<Vec<Event>, SseError> {
    let mut p = Parser::new(256);
    let mut out = Vec::new();
    for c in chunks {
        out.extend(p.push(c)?);
    }
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let at = (split as usize).min(stream.len());
    let whole = feed(std::iter::once(stream));
    let two = feed([&stream[..at], &stream[at..]].into_iter());
    let bytes = feed(stream.chunks(1));
    assert_eq!(whole, two);
    assert_eq!(whole, bytes);
});
