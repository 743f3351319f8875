#![no_main]
//! Fuzzes `message::StreamFramer`: the input is split into pushes at positions taken from its
//! first byte, and every framed message is parsed; nothing may panic, and a framed message
//! must never exceed the configured limit.
use sip_stack::message::{parse, FramerOutput, StreamFramer};

const MAX: usize = 8 * 1024;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split).max(1);
    let mut framer = StreamFramer::new(MAX);
    for piece in stream.chunks(chunk) {
        framer.push(piece);
        loop {
            match framer.next_output() {
                Ok(Some(FramerOutput::Message(bytes))) => {
                    assert!(bytes.len() <= MAX);
                    let _ = parse(&bytes);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
});
