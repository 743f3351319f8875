#![no_main]
//! Fuzzes the RTP and RTCP parsers and the stateful receivers behind them
//! with the same datagram: none may panic, and what parses must stay inside
//! the datagram.
use std::net::SocketAddr;
use std::time::Instant;

use media::rtcp::{is_rtcp, parse_compound, NtpTime, RtcpConfig, RtcpSession};
use media::rtp_session::{
    parse_packet, PayloadFormat, PayloadType, ReceiverConfig, RtpReceiver, Ssrc,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = parse_packet(data) {
        assert!(parsed.payload.start <= parsed.payload.end && parsed.payload.end <= data.len());
    }
    let _ = parse_compound(data);
    let _ = is_rtcp(data);

    let formats = [0u8, 8, 96, 101]
        .into_iter()
        .filter_map(PayloadType::new)
        .map(|payload_type| PayloadFormat {
            payload_type,
            clock_rate: if payload_type.value() == 96 {
                48_000
            } else {
                8000
            },
            telephone_event: payload_type.value() == 101,
        })
        .collect();
    let peer = SocketAddr::from(([192, 0, 2, 1], 4000));
    let mut receiver = RtpReceiver::new(ReceiverConfig::new(formats), peer);
    let now = Instant::now();
    // The same bytes twice: the second pass exercises sequence tracking.
    let _ = receiver.handle_slice(now, peer, data);
    let _ = receiver.handle_slice(now, peer, data);
    let _ = receiver.stats_mut().take_reception_interval();

    let mut session = RtcpSession::with_seed(RtcpConfig::new("fuzz"), now, 0);
    let _ = session.handle_packet(now, NtpTime(1 << 40), Ssrc(1), data);
});
