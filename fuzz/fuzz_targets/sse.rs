//! Any bytes as a `/watch` event stream, fed whole, in two chunks and byte by byte: no panic,
//! and the same events (or the same refusal) whatever the chunking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scaletestd::coder::sse::parse_chunks;

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let at = (split as usize).min(stream.len());
    let whole = parse_chunks(256, &mut std::iter::once(stream));
    let two = parse_chunks(256, &mut [&stream[..at], &stream[at..]].into_iter());
    let bytes = parse_chunks(256, &mut stream.chunks(1));
    assert_eq!(whole, two);
    assert_eq!(whole, bytes);
});
