//! Guards the RTCP parser against hostile bytes (it must never panic) and
//! the writer/parser pair: every compound packet written parses back equal.

use std::time::Instant;

use media::rtcp::{
    parse_compound, Bye, CompoundWriter, NtpTime, ReportBlock, RtcpConfig, RtcpPacket, RtcpSession,
    SdesChunk, SenderInfo, SenderReport,
};
use media::rtp_session::Ssrc;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn report_block() -> impl Strategy<Value = ReportBlock> {
    (
        any::<u32>(),
        any::<u8>(),
        -0x80_0000i32..=0x7f_ffff,
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(
                ssrc,
                fraction_lost,
                cumulative_lost,
                extended_highest_seq,
                jitter,
                last_sr,
                delay_since_last_sr,
            )| {
                ReportBlock {
                    ssrc: Ssrc(ssrc),
                    fraction_lost,
                    cumulative_lost,
                    extended_highest_seq,
                    jitter,
                    last_sr,
                    delay_since_last_sr,
                }
            },
        )
}

/// Bytes that look like RTCP (version 2, a plausible type, a length that
/// often fits) so fuzzing reaches the bodies.
fn rtcp_like() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        200u8..=204,
        prop::collection::vec(any::<u8>(), 0..120),
    )
        .prop_map(|(first, packet_type, body)| {
            let words = (body.len() / 4) as u16;
            let mut packet = vec![0x80 | (first & 0x3f), packet_type];
            packet.extend_from_slice(&words.to_be_bytes());
            packet.extend_from_slice(&body);
            packet
        })
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_compound(&bytes);
    }

    #[test]
    fn parse_rtcp_like_never_panics(packets in prop::collection::vec(rtcp_like(), 1..4)) {
        let bytes: Vec<u8> = packets.concat();
        let _ = parse_compound(&bytes);
        let mut rng = StdRng::seed_from_u64(0);
        let mut session = RtcpSession::new(RtcpConfig::new("x"), Instant::now(), &mut rng);
        let _ = session.handle_packet(Instant::now(), NtpTime(1 << 40), Ssrc(1), &bytes);
    }

    #[test]
    fn write_then_parse_round_trips(
        ssrc in any::<u32>(),
        ntp in any::<u64>(),
        counts in any::<(u32, u32, u32)>(),
        blocks in prop::collection::vec(report_block(), 0..4),
        rr_blocks in prop::collection::vec(report_block(), 0..4),
        cname in "[ -~]{0,255}",
        bye in prop::collection::vec(any::<u32>(), 0..5),
        reason in prop::option::of("[ -~]{0,255}"),
    ) {
        let info = SenderInfo {
            ntp: NtpTime(ntp),
            rtp_timestamp: counts.0,
            packet_count: counts.1,
            octet_count: counts.2,
        };
        let sources: Vec<Ssrc> = bye.into_iter().map(Ssrc).collect();
        let mut buf = [0u8; 2048];
        let mut writer = CompoundWriter::new(&mut buf);
        writer.sender_report(Ssrc(ssrc), &info, &blocks).expect("fits");
        writer.receiver_report(Ssrc(ssrc), &rr_blocks).expect("fits");
        writer.source_description(Ssrc(ssrc), &cname).expect("fits");
        writer.bye(&sources, reason.as_deref()).expect("fits");
        let len = writer.len();
        prop_assert_eq!(len % 4, 0);
        let parsed = parse_compound(&buf[..len]).expect("own packets parse");
        prop_assert_eq!(parsed, vec![
            RtcpPacket::SenderReport(SenderReport { ssrc: Ssrc(ssrc), info, reports: blocks }),
            RtcpPacket::ReceiverReport(media::rtcp::ReceiverReport { ssrc: Ssrc(ssrc), reports: rr_blocks }),
            RtcpPacket::SourceDescription(vec![SdesChunk { ssrc: Ssrc(ssrc), cname: Some(cname) }]),
            RtcpPacket::Bye(Bye { sources, reason }),
        ]);
    }
}
