//! Guards the RTP parser against hostile bytes (it must never panic) and the
//! sender/parser pair against drift: every built packet parses back to the
//! same fields and payload.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::rtp_session::{
    parse_packet, PayloadFormat, PayloadType, ReceiverConfig, RtpReceiver, RtpSender, SeqNo, Ssrc,
};
use proptest::prelude::*;

fn receiver() -> RtpReceiver {
    let formats = (0..128u8)
        .filter_map(PayloadType::new)
        .map(|payload_type| PayloadFormat {
            payload_type,
            clock_rate: 8000,
            telephone_event: payload_type.value() == 101,
        })
        .collect();
    let sdp: SocketAddr = "192.0.2.1:4000".parse().expect("test address");
    RtpReceiver::new(ReceiverConfig::new(formats), sdp)
}

/// Bytes that look like RTP (version 2, random flags) so the fuzzing
/// reaches the CSRC, extension and padding paths.
fn rtp_like() -> impl Strategy<Value = Vec<u8>> {
    (any::<u8>(), prop::collection::vec(any::<u8>(), 0..200)).prop_map(|(first, mut rest)| {
        rest.insert(0, 0x80 | (first & 0x3f));
        rest
    })
}

/// An RTP header with the extension bit and one of the RFC 8285 profiles.
fn with_extension() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![Just(0xbedeu16), Just(0x1000u16), any::<u16>()],
        0u16..8,
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(profile, words, tail)| {
            let mut packet = vec![0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
            packet.extend_from_slice(&profile.to_be_bytes());
            packet.extend_from_slice(&words.to_be_bytes());
            packet.extend_from_slice(&tail);
            packet
        })
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_packet(&bytes);
    }

    #[test]
    fn parse_rtp_like_never_panics(bytes in prop_oneof![rtp_like(), with_extension()]) {
        if let Ok(parsed) = parse_packet(&bytes) {
            prop_assert!(parsed.payload.start <= parsed.payload.end);
            prop_assert!(parsed.payload.end <= bytes.len());
        }
    }

    #[test]
    fn receiver_never_panics(packets in prop::collection::vec(rtp_like(), 1..20), port in 1u16..4) {
        let mut rx = receiver();
        let t0 = Instant::now();
        let from: SocketAddr = SocketAddr::from(([198, 51, 100, 1], port));
        for (i, bytes) in packets.into_iter().enumerate() {
            let _ = rx.handle_packet(t0 + Duration::from_millis(20 * i as u64), from, Bytes::from(bytes));
        }
        prop_assert!(rx.stats().loss_percent() <= 100.0);
    }

    #[test]
    fn build_then_parse_round_trips(
        ssrc in any::<u32>(),
        seq in any::<u16>(),
        timestamp in any::<u32>(),
        pt in 0u8..128,
        frames in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..200), 0u32..2000, any::<bool>()), 1..8),
    ) {
        let pt = PayloadType::new(pt).expect("in range");
        let mut sender = RtpSender::with_initial(Ssrc(ssrc), SeqNo(seq), timestamp, 8000);
        let mut expected_ts = timestamp;
        let mut buf = [0u8; 256];
        let t0 = Instant::now();
        for (i, (payload, elapsed, marker)) in frames.iter().enumerate() {
            if i > 0 {
                expected_ts = expected_ts.wrapping_add(*elapsed);
            }
            let len = sender.build(t0, payload, *elapsed, *marker, pt, &mut buf).expect("fits");
            let parsed = parse_packet(&buf[..len]).expect("own packets parse");
            prop_assert_eq!(parsed.ssrc, Ssrc(ssrc));
            prop_assert_eq!(parsed.seq, SeqNo(seq.wrapping_add(i as u16)));
            prop_assert_eq!(parsed.timestamp, expected_ts);
            prop_assert_eq!(parsed.marker, *marker || i == 0);
            prop_assert_eq!(parsed.payload_type, pt);
            prop_assert_eq!(&buf[parsed.payload], &payload[..]);
        }
    }
}
