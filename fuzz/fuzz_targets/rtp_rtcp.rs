#![no_main]
// Fuzz target rtp_rtcp: filled in by the owner of that parser.
libfuzzer_sys::fuzz_target!(|_data: &[u8]| {});
