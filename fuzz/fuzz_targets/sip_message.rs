#![no_main]
//! Fuzzes `message::parse` and every accessor on whatever parses: none may panic.
use sip_stack::message::{parse, MessageExt};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(message) = parse(data) {
        let _ = message.top_via();
        let _ = message.cseq();
        let _ = message.call_id();
        let _ = message.from_tag();
        let _ = message.to_tag();
        let _ = message.contact_uri();
        let _ = message.record_route();
        let _ = message.route();
        let _ = message.content_length();
        let _ = message.max_forwards();
        let _ = message.to_string();
    }
});
