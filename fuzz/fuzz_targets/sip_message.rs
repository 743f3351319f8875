#![no_main]
//! Fuzzes `message::parse_any` and every accessor on whatever parses (a message, or a valid
//! request with an extension method or a non-SIP Request-URI): none may panic, and `parse`
//! must agree with `parse_any`.
use sip_stack::message::{parse, parse_any, MessageExt, ParseConfig, Parsed};

fn accessors(message: &impl MessageExt) {
    let _ = message.top_via();
    let _ = message.via_count();
    let _ = message.cseq();
    let _ = message.call_id();
    let _ = message.from_tag();
    let _ = message.to_tag();
    let _ = message.from_uri();
    let _ = message.to_uri();
    let _ = message.contact_uri();
    let _ = message.record_route();
    let _ = message.route();
    let _ = message.content_length();
    let _ = message.max_forwards();
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let any = parse_any(data, &ParseConfig::default());
    match (&any, parse(data)) {
        (Ok(Parsed::Message(message)), Ok(same)) => {
            assert_eq!(message, &same);
            accessors(message);
            let _ = message.to_string();
        }
        (Ok(Parsed::Unsupported(request)), Err(error)) => {
            assert_eq!(request.error(), error);
            accessors(request);
        }
        (Err(error), Err(same)) => assert_eq!(error, &same),
        (any, parsed) => panic!("parse_any {any:?} and parse {parsed:?} disagree"),
    }
});
