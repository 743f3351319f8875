//! Guards the RTP session: sender/receiver round trip through real bytes,
//! sequence and timestamp wrap, marker and telephone-event timestamps, SSRC
//! changes, payload type and version checks, and symmetric-RTP latching.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::rtp_session::{
    parse_packet, PayloadFormat, PayloadType, ReceiverConfig, RtpError, RtpReceiver, RtpSender,
    SeqNo, Ssrc,
};
use media::stats::SeqStatus;
use rand::rngs::StdRng;
use rand::SeedableRng;

const MS: Duration = Duration::from_millis(1);

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn pcmu() -> PayloadFormat {
    PayloadFormat {
        payload_type: PayloadType::PCMU,
        clock_rate: 8000,
        telephone_event: false,
    }
}

fn event_pt() -> PayloadType {
    PayloadType::new(101).expect("valid payload type")
}

fn formats() -> Vec<PayloadFormat> {
    vec![
        pcmu(),
        PayloadFormat {
            payload_type: event_pt(),
            clock_rate: 8000,
            telephone_event: true,
        },
    ]
}

fn receiver() -> RtpReceiver {
    RtpReceiver::new(ReceiverConfig::new(formats()), addr("192.0.2.10:4000"))
}

#[test]
fn round_trip_through_bytes() {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(7);
    let mut sender = RtpSender::new(8000, &mut rng);
    let mut rx = receiver();
    // The peer's SDP address, with the port NAT moved.
    let peer = addr("192.0.2.10:31000");
    let mut buf = [0u8; 1500];
    let first_seq = sender.next_seq();
    let mut first_ts = None;
    for i in 0..10u32 {
        let payload = [i as u8; 160];
        let len = sender
            .build(
                t0 + 20 * MS * i,
                &payload,
                160,
                false,
                PayloadType::PCMU,
                &mut buf,
            )
            .expect("buffer large enough");
        assert_eq!(len, 12 + 160);
        let got = rx
            .handle_packet(t0 + 20 * MS * i, peer, Bytes::copy_from_slice(&buf[..len]))
            .expect("valid packet");
        assert_eq!(got.ssrc, sender.ssrc());
        assert_eq!(got.seq, first_seq.wrapping_add(i as u16));
        let ts = *first_ts.get_or_insert(got.timestamp);
        assert_eq!(got.timestamp, ts.wrapping_add(160 * i));
        assert_eq!(got.marker, i == 0, "only the first packet is marked");
        assert_eq!(&got.payload[..], &payload[..]);
        assert!(!got.ssrc_changed);
    }
    assert_eq!(sender.packets_sent(), 10);
    assert_eq!(sender.octets_sent(), 1600);
    assert_eq!(rx.stats().packets(), 10);
    assert_eq!(rx.stats().packets_lost(), 0);
    assert_eq!(rx.last_activity(), Some(t0 + 180 * MS));
}

#[test]
fn payload_is_a_slice_of_the_datagram() {
    let t0 = Instant::now();
    let mut sender = RtpSender::with_initial(Ssrc(1), SeqNo(1), 0, 8000);
    let mut buf = [0u8; 64];
    let len = sender
        .build(t0, b"abcd", 160, false, PayloadType::PCMU, &mut buf)
        .expect("fits");
    let datagram = Bytes::copy_from_slice(&buf[..len]);
    let got = receiver()
        .handle_packet(t0, addr("192.0.2.10:4000"), datagram.clone())
        .expect("valid");
    assert_eq!(got.payload.as_ptr(), datagram[12..].as_ptr());
}

#[test]
fn sequence_and_timestamp_wrap() {
    let t0 = Instant::now();
    let mut sender = RtpSender::with_initial(Ssrc(9), SeqNo(65534), u32::MAX - 159, 8000);
    let mut rx = receiver();
    let peer = addr("192.0.2.10:4000");
    let mut buf = [0u8; 256];
    let mut seen = Vec::new();
    for i in 0..5u32 {
        let len = sender
            .build(
                t0 + 20 * MS * i,
                &[0; 160],
                160,
                false,
                PayloadType::PCMU,
                &mut buf,
            )
            .expect("fits");
        let got = rx
            .handle_slice(t0 + 20 * MS * i, peer, &buf[..len])
            .expect("valid");
        seen.push((got.seq.0, got.timestamp, got.sequence));
    }
    let seqs: Vec<u16> = seen.iter().map(|s| s.0).collect();
    let timestamps: Vec<u32> = seen.iter().map(|s| s.1).collect();
    assert_eq!(seqs, [65534, 65535, 0, 1, 2]);
    assert_eq!(timestamps, [u32::MAX - 159, 0, 160, 320, 480]);
    assert_eq!(seen[0].2, SeqStatus::Probation);
    assert_eq!(seen[1].2, SeqStatus::Valid { extended: 65535 });
    assert_eq!(seen[2].2, SeqStatus::Valid { extended: 65536 });
    assert_eq!(seen[4].2, SeqStatus::Valid { extended: 65538 });
    assert_eq!(rx.stats().packets_lost(), 0);
    assert!(
        rx.stats().jitter_ms() < 0.001,
        "steady 20 ms pacing has no jitter"
    );
}

#[test]
fn marker_after_silence_and_timestamp_gap() {
    let t0 = Instant::now();
    let mut sender = RtpSender::with_initial(Ssrc(1), SeqNo(10), 1000, 8000);
    let mut buf = [0u8; 256];
    let mut send = |sender: &mut RtpSender, at, elapsed, marker| {
        let len = sender
            .build(at, &[0; 160], elapsed, marker, PayloadType::PCMU, &mut buf)
            .expect("fits");
        parse_packet(&buf[..len]).expect("valid")
    };
    let p1 = send(&mut sender, t0, 160, false);
    let p2 = send(&mut sender, t0 + 20 * MS, 160, false);
    // 1 s of silence with nothing sent, then a new talkspurt.
    let p3 = send(&mut sender, t0 + 1020 * MS, 8160, true);
    assert!(p1.marker && !p2.marker && p3.marker);
    assert_eq!(p1.timestamp, 1000);
    assert_eq!(p2.timestamp, 1160);
    assert_eq!(p3.timestamp, 1160 + 8160);
    assert_eq!(
        p3.seq,
        SeqNo(12),
        "sequence numbers stay contiguous over silence"
    );
    assert_eq!(
        sender.rtp_timestamp_at(t0 + 1040 * MS),
        Some(1160 + 8160 + 160)
    );
}

#[test]
fn telephone_events_share_the_start_timestamp() {
    let t0 = Instant::now();
    let mut sender = RtpSender::with_initial(Ssrc(1), SeqNo(0), 0, 8000);
    let mut buf = [0u8; 256];
    let pt = event_pt();
    let mut packets = Vec::new();
    let len = sender
        .build(t0, &[0; 160], 160, false, PayloadType::PCMU, &mut buf)
        .expect("fits");
    packets.push(parse_packet(&buf[..len]).expect("valid"));
    let event = [5u8, 10, 0, 160];
    for (i, start) in [true, false, false, false, false, false]
        .into_iter()
        .enumerate()
    {
        let elapsed = if i < 3 { 160 } else { 0 };
        let len = sender
            .build_event(t0 + 20 * MS, &event, elapsed, start, pt, &mut buf)
            .expect("fits");
        packets.push(parse_packet(&buf[..len]).expect("valid"));
    }
    let len = sender
        .build(
            t0 + 80 * MS,
            &[0; 160],
            160,
            true,
            PayloadType::PCMU,
            &mut buf,
        )
        .expect("fits");
    packets.push(parse_packet(&buf[..len]).expect("valid"));

    let events = &packets[1..7];
    assert!(events
        .iter()
        .all(|p| p.timestamp == 160 && p.payload_type == pt));
    assert!(events[0].marker && events[1..].iter().all(|p| !p.marker));
    let seqs: Vec<u16> = packets.iter().map(|p| p.seq.0).collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        packets[7].timestamp,
        160 * 4,
        "audio resumes on the media clock"
    );
}

#[test]
fn ssrc_change_is_reported_and_stats_restart() {
    let t0 = Instant::now();
    let mut rx = receiver();
    let peer = addr("192.0.2.10:4000");
    let mut buf = [0u8; 256];
    let mut a = RtpSender::with_initial(Ssrc(1), SeqNo(100), 0, 8000);
    let mut b = RtpSender::with_initial(Ssrc(2), SeqNo(5000), 777, 8000);
    for i in 0..3u32 {
        let len = a
            .build(
                t0 + 20 * MS * i,
                &[1; 160],
                160,
                false,
                PayloadType::PCMU,
                &mut buf,
            )
            .expect("fits");
        let got = rx
            .handle_slice(t0 + 20 * MS * i, peer, &buf[..len])
            .expect("valid");
        assert!(!got.ssrc_changed);
    }
    let len = b
        .build(
            t0 + 60 * MS,
            &[2; 160],
            160,
            false,
            PayloadType::PCMU,
            &mut buf,
        )
        .expect("fits");
    let got = rx
        .handle_slice(t0 + 60 * MS, peer, &buf[..len])
        .expect("valid");
    assert!(got.ssrc_changed);
    assert_eq!(got.ssrc, Ssrc(2));
    assert_eq!(got.sequence, SeqStatus::Probation);
    assert_eq!(rx.stats().ssrc(), Some(Ssrc(2)));
    let len = b
        .build(
            t0 + 80 * MS,
            &[2; 160],
            160,
            false,
            PayloadType::PCMU,
            &mut buf,
        )
        .expect("fits");
    let got = rx
        .handle_slice(t0 + 80 * MS, peer, &buf[..len])
        .expect("valid");
    assert!(!got.ssrc_changed);
    assert_eq!(got.sequence, SeqStatus::Valid { extended: 5001 });
    assert_eq!(rx.stats().packets(), 5);
    assert_eq!(rx.stats().packets_lost(), 0);
}

#[test]
fn rejects_bad_version_unknown_payload_type_and_short_packets() {
    let t0 = Instant::now();
    let mut rx = receiver();
    let peer = addr("192.0.2.10:4000");
    let mut sender = RtpSender::with_initial(Ssrc(1), SeqNo(1), 0, 8000);
    let mut buf = [0u8; 64];
    let len = sender
        .build(t0, &[0; 8], 160, false, PayloadType::PCMA, &mut buf)
        .expect("fits");
    assert!(matches!(
        rx.handle_slice(t0, peer, &buf[..len]),
        Err(RtpError::UnexpectedPayloadType { payload_type }) if payload_type == PayloadType::PCMA
    ));
    buf[0] = 0x40;
    assert!(matches!(
        rx.handle_slice(t0, peer, &buf[..len]),
        Err(RtpError::BadVersion { version: 1 })
    ));
    assert!(matches!(
        rx.handle_slice(t0, peer, &buf[..11]),
        Err(RtpError::TooShort { len: 11, .. })
    ));
    assert_eq!(
        rx.last_activity(),
        None,
        "rejected packets are not activity"
    );
    assert!(!rx.is_latched(), "rejected packets do not latch");
}

#[test]
fn padding_is_removed_and_checked() {
    let mut packet = vec![0xa0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
    packet.extend_from_slice(&[9, 9, 0, 0, 3]);
    let parsed = parse_packet(&packet).expect("valid padding");
    assert_eq!(&packet[parsed.payload], &[9, 9]);
    *packet.last_mut().expect("non-empty") = 6;
    assert!(matches!(
        parse_packet(&packet),
        Err(RtpError::BadPadding {
            padding: 6,
            available: 5
        })
    ));
}

#[test]
fn hostile_extension_is_an_error() {
    // X bit, one-byte profile, one word of extension whose element claims
    // 16 bytes.
    let packet = [
        0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0, 1, 0x1f, 0, 0, 0,
    ];
    assert!(matches!(
        parse_packet(&packet),
        Err(RtpError::BadExtension {
            offset: 16,
            end: 20
        })
    ));
    // A valid one-byte element: id 1, 2 bytes, then padding.
    let packet = [
        0x90, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe, 0xde, 0, 1, 0x11, 7, 7, 0, 42,
    ];
    let parsed = parse_packet(&packet).expect("valid extension");
    assert_eq!(&packet[parsed.payload], &[42]);
}

/// A receiver that also takes media from the carrier network 203.0.113.0/24.
fn receiver_with_carrier_network() -> RtpReceiver {
    let mut config = ReceiverConfig::new(formats());
    config.allowed_networks = vec!["203.0.113.0/24".parse().expect("network")];
    RtpReceiver::new(config, addr("192.0.2.10:4000"))
}

fn pcmu_packets() -> impl FnMut(Instant) -> Vec<u8> {
    let mut sender = RtpSender::with_initial(Ssrc(1), SeqNo(1), 0, 8000);
    move |at| {
        let mut buf = [0u8; 256];
        let len = sender
            .build(at, &[0; 160], 160, false, PayloadType::PCMU, &mut buf)
            .expect("fits");
        buf[..len].to_vec()
    }
}

#[test]
fn latches_to_source_and_stays() {
    let t0 = Instant::now();
    let sdp = addr("192.0.2.10:4000");
    let nat = addr("203.0.113.5:61000");
    let other_media_server = addr("203.0.113.9:5000");
    let mut rx = receiver_with_carrier_network();
    assert_eq!(rx.remote_addr(), sdp);
    let mut packet = pcmu_packets();
    rx.handle_slice(t0, nat, &packet(t0)).expect("valid");
    assert!(rx.is_latched());
    assert_eq!(rx.remote_addr(), nat);
    let err = rx
        .handle_slice(t0 + 20 * MS, other_media_server, &packet(t0 + 20 * MS))
        .expect_err("other source refused");
    assert!(
        matches!(err, RtpError::UnexpectedSource { from, latched } if from == other_media_server && latched == nat)
    );
    // Even after a long silence: no re-latching unless configured.
    let late = t0 + Duration::from_secs(60);
    assert!(rx
        .handle_slice(late, other_media_server, &packet(late))
        .is_err());
    assert_eq!(rx.remote_addr(), nat);
    // A new SDP address (re-INVITE) latches afresh, within the allowed addresses.
    rx.set_sdp_addr(addr("192.0.2.11:4002"));
    assert_eq!(rx.remote_addr(), addr("192.0.2.11:4002"));
    rx.handle_slice(late, other_media_server, &packet(late))
        .expect("unlatched accepts an allowed network");
    assert_eq!(rx.remote_addr(), other_media_server);
}

#[test]
fn media_from_outside_the_signalled_peer_is_dropped_and_never_latched() {
    let t0 = Instant::now();
    let sdp = addr("192.0.2.10:4000");
    let attacker = addr("198.51.100.66:5000");
    let mut config = ReceiverConfig::new(formats());
    config.relatch_after = Some(Duration::from_secs(2));
    config.allowed_networks = vec!["203.0.113.0/24".parse().expect("network")];
    let mut rx = RtpReceiver::new(config, sdp);
    let mut packet = pcmu_packets();

    // First packet of the call from an attacker who guessed the port: dropped.
    let err = rx
        .handle_slice(t0, attacker, &packet(t0))
        .expect_err("foreign source");
    assert!(matches!(err, RtpError::ForeignSource { from } if from == attacker));
    assert!(!rx.is_latched());
    assert_eq!(rx.remote_addr(), sdp);
    assert_eq!(rx.stats().packets(), 0, "nothing of it reaches the stream");

    // The peer's own address, from the port its NAT chose: latched.
    let peer = addr("192.0.2.10:61000");
    rx.handle_slice(t0 + 20 * MS, peer, &packet(t0 + 20 * MS))
        .expect("the signalled peer");
    assert_eq!(rx.remote_addr(), peer);

    // The peer goes silent past relatch_after (hold, a lost uplink): the attacker still
    // cannot take the call over, whatever it sends, also malformed or with another type.
    let late = t0 + Duration::from_secs(10);
    for i in 0..50u32 {
        let at = late + 20 * MS * i;
        assert!(rx.handle_slice(at, attacker, &packet(at)).is_err());
    }
    assert!(matches!(
        rx.handle_slice(late, attacker, b"\x80\x7f junk"),
        Err(RtpError::ForeignSource { .. })
    ));
    assert_eq!(rx.remote_addr(), peer);
    assert_eq!(rx.foreign_datagrams(), 52);

    // An allowed carrier network (media from another box of the carrier) may re-latch.
    let carrier = addr("203.0.113.40:7000");
    rx.handle_slice(late + Duration::from_secs(2), carrier, &packet(late))
        .expect("allowed network after silence");
    assert_eq!(rx.remote_addr(), carrier);
    // IPv4-mapped IPv6 sources (a dual-stack socket) are the same address.
    let mapped: SocketAddr = "[::ffff:192.0.2.10]:61000".parse().expect("mapped");
    assert!(rx.is_allowed_source(mapped.ip()));
    assert!(!rx.is_allowed_source(
        "[::ffff:198.51.100.66]:1"
            .parse::<SocketAddr>()
            .expect("a")
            .ip()
    ));
}

#[test]
fn relatches_after_silence_when_configured() {
    let t0 = Instant::now();
    let first = addr("203.0.113.5:61000");
    let rebound = addr("203.0.113.5:61002");
    let mut config = ReceiverConfig::new(formats());
    config.latch_after_packets = 2;
    config.relatch_after = Some(Duration::from_secs(2));
    // The SDP names the peer's public address; its NAT moves the port.
    let mut rx = RtpReceiver::new(config, addr("203.0.113.5:4000"));
    let mut packet = pcmu_packets();
    rx.handle_slice(t0, first, &packet(t0)).expect("valid");
    assert!(!rx.is_latched(), "two packets needed");
    rx.handle_slice(t0 + 20 * MS, first, &packet(t0 + 20 * MS))
        .expect("valid");
    assert_eq!(rx.remote_addr(), first);
    let at = t0 + 1020 * MS;
    assert!(
        rx.handle_slice(at, rebound, &packet(at)).is_err(),
        "only 1 s silent"
    );
    let at = t0 + 2020 * MS;
    rx.handle_slice(at, rebound, &packet(at))
        .expect("silent 2 s: re-latch");
    assert_eq!(rx.remote_addr(), rebound);
}

#[test]
fn buffer_too_small_is_an_error() {
    let mut sender = RtpSender::with_initial(Ssrc(1), SeqNo(1), 0, 8000);
    let mut buf = [0u8; 20];
    assert!(matches!(
        sender.build(
            Instant::now(),
            &[0; 160],
            160,
            false,
            PayloadType::PCMU,
            &mut buf
        ),
        Err(RtpError::BufferTooSmall {
            needed: 172,
            available: 20
        })
    ));
    assert_eq!(sender.packets_sent(), 0);
    assert_eq!(sender.next_seq(), SeqNo(1));
}
