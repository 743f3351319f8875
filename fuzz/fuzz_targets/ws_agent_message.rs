//! Fuzz target for what a customer's AI sends over the agent WebSocket: any
//! bytes must parse or fail cleanly (never panic), and a `media` payload that
//! parses must decode as audio for calls at 8 and 16 kHz in both wire formats.
#![no_main]

use call_control::runtime::websocket::messages::{parse, AgentMessage};
use call_control::runtime::websocket::payload::{Downlink, WireFormat};
use media::codec::SampleRate;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(AgentMessage::Media { payload }) = parse(text) else {
        return;
    };
    for format in [WireFormat::Mulaw8k, WireFormat::L16At16k] {
        for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
            let mut downlink = Downlink::new(format, rate).expect("supported rates");
            let mut out = Vec::new();
            downlink.decode(&payload, &mut out).expect("decodes");
            downlink.flush(&mut out).expect("flushes");
        }
    }
});
