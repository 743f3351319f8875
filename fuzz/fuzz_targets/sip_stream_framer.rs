#![no_main]
// Fuzz target sip_stream_framer: filled in by the owner of that parser.
libfuzzer_sys::fuzz_target!(|_data: &[u8]| {});
