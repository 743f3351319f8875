//! Fuzz target for the SDP parser: arbitrary bytes must never panic, and whatever parses
//! must print to text that parses again and prints the same (printing is canonical).
#![no_main]

use sip_stack::sdp::SessionDescription;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(sdp) = SessionDescription::parse_bytes(data) {
        let printed = sdp.to_string();
        let again = SessionDescription::parse(&printed).expect("printed SDP parses again");
        assert_eq!(again.to_string(), printed, "printing is canonical");
    }
});
