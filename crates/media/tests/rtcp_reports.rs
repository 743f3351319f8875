//! Guards RTCP: SR/RR/SDES/BYE writing and parsing, SR-versus-RR choice,
//! report blocks from receive statistics, RTT from an SR/RR exchange with
//! made-up clocks, the report scheduler, and errors on malformed datagrams.

use std::time::{Duration, Instant, UNIX_EPOCH};

use media::rtcp::{
    is_rtcp, parse_compound, Bye, CompoundWriter, NtpTime, ReceiverReport, ReportBlock, RtcpConfig,
    RtcpError, RtcpPacket, RtcpSession, SdesChunk, SenderInfo, SenderReport,
};
use media::rtp_session::{PayloadType, RtpSender, SeqNo, Ssrc};
use media::stats::ReceiveStats;
use rand::rngs::StdRng;
use rand::SeedableRng;

const MS: Duration = Duration::from_millis(1);

fn ntp_at(unix_ms: u64) -> NtpTime {
    NtpTime::from_unix(Duration::from_millis(unix_ms))
}

fn send_audio(sender: &mut RtpSender, at: Instant, count: u32) -> Vec<Vec<u8>> {
    let mut buf = [0u8; 256];
    (0..count)
        .map(|i| {
            let len = sender
                .build(
                    at + 20 * MS * i,
                    &[0; 160],
                    160,
                    false,
                    PayloadType::PCMU,
                    &mut buf,
                )
                .expect("fits");
            buf[..len].to_vec()
        })
        .collect()
}

fn receive(stats: &mut ReceiveStats, packets: &[Vec<u8>], at: Instant) {
    for (i, packet) in packets.iter().enumerate() {
        let parsed = media::rtp_session::parse_packet(packet).expect("valid RTP");
        stats.on_packet(
            at + 20 * MS * i as u32,
            parsed.ssrc,
            parsed.seq,
            parsed.timestamp,
            8000,
            true,
        );
    }
}

#[test]
fn ntp_time_conversion() {
    let ntp = NtpTime::from_unix(Duration::new(1, 500_000_000));
    assert_eq!(ntp.0 >> 32, 2_208_988_801);
    assert_eq!(ntp.0 & 0xffff_ffff, 1 << 31);
    assert_eq!(
        ntp.compact(),
        ((2_208_988_801u64 & 0xffff) << 16 | 0x8000) as u32
    );
    assert_eq!(
        NtpTime::from_system_time(UNIX_EPOCH + Duration::from_secs(1)),
        NtpTime::from_unix(Duration::from_secs(1))
    );
}

#[test]
fn writer_and_parser_round_trip() {
    let block = ReportBlock {
        ssrc: Ssrc(0xdead_beef),
        fraction_lost: 64,
        cumulative_lost: -3,
        extended_highest_seq: 0x0001_0005,
        jitter: 42,
        last_sr: 0x1234_5678,
        delay_since_last_sr: 65_536,
    };
    let info = SenderInfo {
        ntp: ntp_at(1_700_000_000_123),
        rtp_timestamp: 99,
        packet_count: 7,
        octet_count: 1120,
    };
    let mut buf = [0u8; 512];
    let mut writer = CompoundWriter::new(&mut buf);
    writer
        .sender_report(Ssrc(1), &info, &[block])
        .expect("fits");
    writer.receiver_report(Ssrc(1), &[]).expect("fits");
    writer
        .source_description(Ssrc(1), "agent@dialcore")
        .expect("fits");
    writer
        .bye(&[Ssrc(1), Ssrc(2)], Some("hangup"))
        .expect("fits");
    let len = writer.len();
    assert_eq!(len % 4, 0);
    assert!(is_rtcp(&buf[..len]));
    let packets = parse_compound(&buf[..len]).expect("valid compound");
    assert_eq!(
        packets,
        vec![
            RtcpPacket::SenderReport(SenderReport {
                ssrc: Ssrc(1),
                info,
                reports: vec![block],
            }),
            RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: Ssrc(1),
                reports: vec![],
            }),
            RtcpPacket::SourceDescription(vec![SdesChunk {
                ssrc: Ssrc(1),
                cname: Some("agent@dialcore".into()),
            }]),
            RtcpPacket::Bye(Bye {
                sources: vec![Ssrc(1), Ssrc(2)],
                reason: Some("hangup".into()),
            }),
        ]
    );
}

#[test]
fn writer_limits() {
    let mut small = [0u8; 8];
    assert!(matches!(
        CompoundWriter::new(&mut small).receiver_report(Ssrc(1), &[]),
        Ok(())
    ));
    assert!(matches!(
        CompoundWriter::new(&mut small).source_description(Ssrc(1), "x"),
        Err(RtcpError::BufferTooSmall {
            needed: 12,
            available: 8
        })
    ));
    let mut buf = [0u8; 2048];
    let long = "x".repeat(256);
    assert_eq!(
        CompoundWriter::new(&mut buf).source_description(Ssrc(1), &long),
        Err(RtcpError::TextTooLong { len: 256 })
    );
    let sources = vec![Ssrc(1); 32];
    assert_eq!(
        CompoundWriter::new(&mut buf).bye(&sources, None),
        Err(RtcpError::TooManyItems { count: 32 })
    );
}

#[test]
fn malformed_datagrams_are_errors() {
    assert_eq!(parse_compound(&[]), Err(RtcpError::Empty));
    assert!(matches!(
        parse_compound(&[0x80, 201, 0]),
        Err(RtcpError::TooShort { len: 3, .. })
    ));
    assert_eq!(
        parse_compound(&[0x40, 201, 0, 1, 0, 0, 0, 1]),
        Err(RtcpError::BadVersion { version: 1 })
    );
    assert_eq!(
        parse_compound(&[0x80, 201, 0, 5, 0, 0, 0, 1]),
        Err(RtcpError::BadLength {
            declared: 24,
            available: 8
        })
    );
    // RR claiming one report block but holding none.
    assert!(matches!(
        parse_compound(&[0x81, 201, 0, 1, 0, 0, 0, 1]),
        Err(RtcpError::Truncated {
            packet_type: 201,
            ..
        })
    ));
    // Padding on a packet that is not the last one.
    let mut two = vec![0xa0, 201, 0, 1, 0, 0, 0, 4];
    two.extend_from_slice(&[0x80, 201, 0, 1, 0, 0, 0, 1]);
    assert!(matches!(
        parse_compound(&two),
        Err(RtcpError::BadPadding { padding: 4, .. })
    ));
    // Unknown types are skipped, not errors.
    assert_eq!(
        parse_compound(&[0x80, 204, 0, 0]),
        Ok(vec![RtcpPacket::Other { packet_type: 204 }])
    );
}

#[test]
fn sr_when_sending_rr_when_not() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(1);
    let mut session = RtcpSession::new(RtcpConfig::new("a@test"), t0, &mut rng);
    let mut sender = RtpSender::with_initial(Ssrc(10), SeqNo(0), 1000, 8000);
    let mut stats = ReceiveStats::new();
    let mut buf = [0u8; 512];

    let len = session
        .write_report(t0, ntp_at(0), &sender, &mut stats, &mut buf)
        .expect("fits");
    let packets = parse_compound(&buf[..len]).expect("valid");
    assert!(
        matches!(&packets[0], RtcpPacket::ReceiverReport(rr) if rr.ssrc == Ssrc(10) && rr.reports.is_empty())
    );

    send_audio(&mut sender, t0, 5);
    let at = t0 + 100 * MS;
    let len = session
        .write_report(at, ntp_at(100), &sender, &mut stats, &mut buf)
        .expect("fits");
    let packets = parse_compound(&buf[..len]).expect("valid");
    let RtcpPacket::SenderReport(sr) = &packets[0] else {
        panic!("expected an SR, got {packets:?}");
    };
    assert_eq!(sr.info.packet_count, 5);
    assert_eq!(sr.info.octet_count, 800);
    assert_eq!(sr.info.ntp, ntp_at(100));
    // Last packet at t0+80 ms with timestamp 1640; 20 ms later is 160 more.
    assert_eq!(sr.info.rtp_timestamp, 1000 + 4 * 160 + 160);
    assert!(
        matches!(&packets[1], RtcpPacket::SourceDescription(c) if c[0].cname.as_deref() == Some("a@test"))
    );

    let len = session
        .write_report(t0 + 200 * MS, ntp_at(200), &sender, &mut stats, &mut buf)
        .expect("fits");
    let packets = parse_compound(&buf[..len]).expect("valid");
    assert!(
        matches!(&packets[0], RtcpPacket::ReceiverReport(_)),
        "nothing sent since"
    );
}

#[test]
fn rtt_from_sr_rr_exchange() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(2);
    let mut alice = RtcpSession::new(RtcpConfig::new("alice"), t0, &mut rng);
    let mut bob = RtcpSession::new(RtcpConfig::new("bob"), t0, &mut rng);
    let mut alice_rtp = RtpSender::with_initial(Ssrc(0xa), SeqNo(100), 0, 8000);
    let bob_rtp = RtpSender::with_initial(Ssrc(0xb), SeqNo(200), 0, 8000);
    let mut alice_rx = ReceiveStats::new();
    let mut bob_rx = ReceiveStats::new();
    let mut buf = [0u8; 512];

    // Alice sends audio, Bob receives it 50 ms later.
    let audio = send_audio(&mut alice_rtp, t0, 10);
    receive(&mut bob_rx, &audio, t0 + 50 * MS);

    // Wall clocks differ by an hour: only Alice's matters for her RTT.
    let alice_wall = |ms: u64| ntp_at(1_700_000_000_000 + ms);
    let bob_wall = |ms: u64| ntp_at(1_700_003_600_000 + ms);

    // Alice's SR at 200 ms reaches Bob at 250 ms.
    let len = alice
        .write_report(
            t0 + 200 * MS,
            alice_wall(200),
            &alice_rtp,
            &mut alice_rx,
            &mut buf,
        )
        .expect("fits");
    bob.handle_packet(t0 + 250 * MS, bob_wall(250), Ssrc(0xb), &buf[..len])
        .expect("valid");
    // Bob answers 300 ms later with an RR about Alice.
    let len = bob
        .write_report(
            t0 + 550 * MS,
            bob_wall(550),
            &bob_rtp,
            &mut bob_rx,
            &mut buf,
        )
        .expect("fits");
    let packets = parse_compound(&buf[..len]).expect("valid");
    let RtcpPacket::ReceiverReport(rr) = &packets[0] else {
        panic!("Bob sent nothing: RR expected, got {packets:?}");
    };
    let block = rr.reports[0];
    assert_eq!(block.ssrc, Ssrc(0xa));
    assert_eq!(block.last_sr, alice_wall(200).compact());
    assert_eq!(block.delay_since_last_sr, 300 * 65_536 / 1000);
    assert_eq!(block.cumulative_lost, 0);
    assert_eq!(block.extended_highest_seq, 109);

    // It reaches Alice 50 ms later: RTT = 600 - 200 - 300 = 100 ms.
    assert_eq!(alice.rtt(), None);
    alice
        .handle_packet(t0 + 600 * MS, alice_wall(600), Ssrc(0xa), &buf[..len])
        .expect("valid");
    let rtt = alice.rtt().expect("RTT measured");
    assert!(
        rtt.abs_diff(100 * MS) < Duration::from_micros(100),
        "RTT {rtt:?}"
    );
    assert_eq!(alice.peer_report(), Some(&block));
    assert_eq!(alice.peer_cname(), Some("bob"));
}

#[test]
fn scheduler_first_report_sooner_then_randomized_interval() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(3);
    let mut session = RtcpSession::new(RtcpConfig::new("s"), t0, &mut rng);
    let sender = RtpSender::with_initial(Ssrc(1), SeqNo(0), 0, 8000);
    let mut stats = ReceiveStats::new();
    let mut buf = [0u8; 512];

    let first = session.poll_timeout().expect("scheduled");
    let delay = first - t0;
    assert!(
        (1250 * MS..=3750 * MS).contains(&delay),
        "first after {delay:?}"
    );
    let early = session
        .poll_transmit(first - MS, ntp_at(0), &sender, &mut stats, &mut buf)
        .expect("no error");
    assert_eq!(early, None);
    assert_eq!(session.poll_timeout(), Some(first));

    let mut at = first;
    let mut intervals = Vec::new();
    for _ in 0..50 {
        let len = session
            .poll_transmit(at, ntp_at(0), &sender, &mut stats, &mut buf)
            .expect("no error")
            .expect("due");
        assert!(parse_compound(&buf[..len]).is_ok());
        let next = session.poll_timeout().expect("scheduled");
        intervals.push(next - at);
        at = next;
    }
    assert!(intervals
        .iter()
        .all(|i| (2500 * MS..=7500 * MS).contains(i)));
    let mean = intervals.iter().sum::<Duration>() / intervals.len() as u32;
    assert!(
        (4 * 1000 * MS..=6 * 1000 * MS).contains(&mean),
        "mean {mean:?}"
    );
    assert!(intervals.windows(2).any(|w| w[0] != w[1]), "randomized");

    let len = session
        .write_bye(at, ntp_at(0), &sender, &mut stats, Some("done"), &mut buf)
        .expect("fits");
    let packets = parse_compound(&buf[..len]).expect("valid");
    assert!(matches!(packets.last(), Some(RtcpPacket::Bye(bye)) if bye.sources == [Ssrc(1)]));
    assert_eq!(session.poll_timeout(), None);
}

#[test]
fn bye_from_peer_is_noted() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(4);
    let mut session = RtcpSession::new(RtcpConfig::new("s"), t0, &mut rng);
    let mut buf = [0u8; 64];
    let mut writer = CompoundWriter::new(&mut buf);
    writer.receiver_report(Ssrc(2), &[]).expect("fits");
    writer.bye(&[Ssrc(2)], None).expect("fits");
    let len = writer.len();
    assert!(!session.bye_received());
    session
        .handle_packet(t0, ntp_at(0), Ssrc(1), &buf[..len])
        .expect("valid");
    assert!(session.bye_received());
}
