//! Guards RFC 4733 telephone-events end to end: every one of the 16 DTMF
//! digits goes through the sender and the receiver with its duration, at the
//! 8 kHz and 48 kHz clocks; repeated end packets give one digit, and lost,
//! duplicated or late packets do not create or lose digits.

use std::time::{Duration, Instant};

use media::codec::dtmf::{
    DtmfDigit, DtmfPacket, DtmfReceiver, DtmfSender, DtmfSenderConfig, TelephoneEvent,
};

const ALL_DIGITS: &str = "0123456789*#ABCD";

/// Delivers `packets` to a receiver at their send times, RTP timestamps
/// based at `base`, and collects the digits (running the end timeout last).
fn deliver(
    receiver: &mut DtmfReceiver,
    packets: impl IntoIterator<Item = DtmfPacket>,
    base: u32,
) -> Vec<DtmfDigit> {
    let t0 = Instant::now();
    let mut digits = Vec::new();
    let mut last = t0;
    for packet in packets {
        last = t0 + packet.send_offset;
        receiver
            .handle_packet(
                last,
                base.wrapping_add(packet.timestamp_offset),
                &packet.payload,
            )
            .expect("valid payload");
        digits.extend(std::iter::from_fn(|| receiver.poll_digit()));
    }
    if let Some(deadline) = receiver.poll_timeout() {
        assert!(deadline > last);
        receiver.handle_timeout(deadline);
    }
    digits.extend(std::iter::from_fn(|| receiver.poll_digit()));
    digits
}

#[test]
fn every_digit_round_trips_with_its_duration() {
    for clock_rate in [8000, 48000] {
        for duration_ms in [40u64, 90, 100, 250] {
            let sender = DtmfSender::new(DtmfSenderConfig {
                clock_rate,
                digit_duration: Duration::from_millis(duration_ms),
                gap: Duration::from_millis(60),
                ..DtmfSenderConfig::default()
            })
            .expect("valid config");
            let packets = sender.packets(ALL_DIGITS).expect("valid digits");
            let mut receiver = DtmfReceiver::new(clock_rate).expect("valid clock");
            // Start near the top of the timestamp space to cross the wrap.
            let digits = deliver(&mut receiver, packets, u32::MAX - 10_000);
            let received: String = digits.iter().map(|d| d.digit).collect();
            assert_eq!(received, ALL_DIGITS, "{clock_rate} Hz, {duration_ms} ms");
            assert!(
                digits
                    .iter()
                    .all(|d| u64::from(d.duration_ms) == duration_ms),
                "{clock_rate} Hz: {digits:?}"
            );
        }
    }
}

#[test]
fn packet_sequence_follows_rfc_4733() {
    let sender = DtmfSender::new(DtmfSenderConfig::default()).expect("valid config");
    let packets = sender.packets("19").expect("valid digits");
    let events: Vec<TelephoneEvent> = packets
        .iter()
        .map(|p| TelephoneEvent::decode(&p.payload).expect("valid payload"))
        .collect();
    for digit_event in [1u8, 9] {
        let of_digit: Vec<(&DtmfPacket, &TelephoneEvent)> = packets
            .iter()
            .zip(&events)
            .filter(|(_, e)| e.event == digit_event)
            .collect();
        // Marker on the first packet only; one timestamp for the event.
        assert!(of_digit[0].0.marker);
        assert!(of_digit[1..].iter().all(|(p, _)| !p.marker));
        let timestamp = of_digit[0].0.timestamp_offset;
        assert!(of_digit
            .iter()
            .all(|(p, _)| p.timestamp_offset == timestamp));
        // Durations grow by 20 ms (160 units) until the end, sent 3 times.
        let durations: Vec<u16> = of_digit.iter().map(|(_, e)| e.duration).collect();
        assert!(durations
            .windows(2)
            .all(|w| w[1] == w[0] + 160 || w[1] == w[0]));
        let ends: Vec<bool> = of_digit.iter().map(|(_, e)| e.end).collect();
        assert_eq!(&ends[ends.len() - 3..], &[true, true, true]);
        assert!(ends[..ends.len() - 3].iter().all(|e| !e));
        // Sent every 20 ms.
        assert!(of_digit
            .windows(2)
            .all(|w| w[1].0.send_offset - w[0].0.send_offset == Duration::from_millis(20)));
    }
    // The second digit starts after the first one's duration and gap.
    let second = packets
        .iter()
        .find(|p| p.marker && p.timestamp_offset > 0)
        .expect("second digit");
    assert_eq!(second.timestamp_offset, 8 * 200);
    assert_eq!(second.send_offset, Duration::from_millis(200));
}

#[test]
fn lost_end_packets_and_duplicates_still_give_one_digit_each() {
    let sender = DtmfSender::new(DtmfSenderConfig::default()).expect("valid config");
    let packets = sender.packets("4*").expect("valid digits");
    // Drop every end packet of the first digit, duplicate every packet of
    // the second, and replay a stale packet of the first at the end.
    let first_event = TelephoneEvent::decode(&packets[0].payload)
        .expect("valid")
        .event;
    let mut mangled: Vec<DtmfPacket> = Vec::new();
    for packet in &packets {
        let event = TelephoneEvent::decode(&packet.payload).expect("valid");
        if event.event == first_event {
            if !event.end {
                mangled.push(*packet);
            }
        } else {
            mangled.push(*packet);
            mangled.push(*packet);
        }
    }
    let mut stale = packets[1];
    stale.send_offset = mangled.last().expect("packets").send_offset;
    mangled.push(stale);

    let mut receiver = DtmfReceiver::new(8000).expect("valid clock");
    let digits = deliver(&mut receiver, mangled, 12345);
    let received: Vec<(char, u32)> = digits.iter().map(|d| (d.digit, d.duration_ms)).collect();
    // The first digit's last update said 80 ms: its final 100 ms was lost.
    assert_eq!(received, [('4', 80), ('*', 100)]);
    assert_eq!(digits[0].rtp_timestamp, 12345);
}

#[test]
fn hostile_payloads_are_errors() {
    let mut receiver = DtmfReceiver::new(8000).expect("valid clock");
    let now = Instant::now();
    assert!(receiver.handle_packet(now, 0, &[]).is_err());
    assert!(receiver.handle_packet(now, 0, &[1, 2, 3]).is_err());
    // Event 16 (flash) is not a DTMF digit.
    assert!(receiver.handle_packet(now, 0, &[16, 0x8A, 0, 160]).is_err());
    assert_eq!(receiver.poll_digit(), None);
    assert_eq!(receiver.poll_timeout(), None);
}
