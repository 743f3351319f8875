//! Guards the call-quality numbers: RFC 3550 A.1 sequence validation (wrap,
//! probation, jumps, restarts), A.3 loss and fraction lost per interval,
//! A.8 jitter on traces with a known answer, RTT from LSR/DLSR, and the
//! G.107 E-model reference points and monotonicity.

use std::time::{Duration, Instant};

use media::rtp_session::{SeqNo, Ssrc};
use media::stats::{
    mos_from_r, round_trip_time, CodecQuality, EModel, JitterEstimator, ReceiveStats, SeqStatus,
    SequenceTracker, StreamStats,
};

const MS: Duration = Duration::from_millis(1);

fn feed(tracker: &mut SequenceTracker, seqs: impl IntoIterator<Item = u16>) -> Vec<SeqStatus> {
    seqs.into_iter().map(|s| tracker.update(SeqNo(s))).collect()
}

#[test]
fn probation_then_valid() {
    let mut tracker = SequenceTracker::new(SeqNo(500));
    assert_eq!(tracker.update(SeqNo(500)), SeqStatus::Probation);
    assert!(!tracker.is_valid());
    assert_eq!(tracker.expected(), 0);
    assert_eq!(
        tracker.update(SeqNo(501)),
        SeqStatus::Valid { extended: 501 }
    );
    assert!(tracker.is_valid());
    assert_eq!(
        (tracker.expected(), tracker.received(), tracker.lost()),
        (1, 1, 0)
    );
}

#[test]
fn probation_restarts_on_a_gap() {
    let mut tracker = SequenceTracker::new(SeqNo(10));
    let statuses = feed(&mut tracker, [10, 20, 21]);
    assert_eq!(
        statuses,
        [
            SeqStatus::Probation,
            SeqStatus::Probation,
            SeqStatus::Valid { extended: 21 }
        ]
    );
}

#[test]
fn loss_and_fraction_lost_across_wrap() {
    let mut tracker = SequenceTracker::new(SeqNo(65530));
    // 65530 is on probation; counting starts at 65531. Lost: 65533, 0, 5.
    let sent = (65530..=65535u16).chain(0..=9);
    let lost = [65533u16, 0, 5];
    feed(&mut tracker, sent.filter(|s| !lost.contains(s)));
    assert_eq!(tracker.extended_max(), 65536 + 9);
    assert_eq!(tracker.expected(), 15);
    assert_eq!(tracker.received(), 12);
    assert_eq!(tracker.lost(), 3);
    let first = tracker.take_interval();
    assert_eq!((first.expected, first.received, first.lost), (15, 12, 3));
    assert_eq!(first.fraction_lost, (3 * 256 / 15) as u8);

    // Next interval: 10..=29 with 12 and 13 lost.
    feed(&mut tracker, (10..=29).filter(|s| *s != 12 && *s != 13));
    let second = tracker.take_interval();
    assert_eq!((second.expected, second.received, second.lost), (20, 18, 2));
    assert_eq!(second.fraction_lost, 25); // floor(2 * 256 / 20)
    assert_eq!(tracker.lost(), 5);
    assert_eq!(tracker.cumulative_lost_field(), 5);

    // An empty interval reports nothing lost.
    let third = tracker.take_interval();
    assert_eq!((third.expected, third.fraction_lost), (0, 0));
}

#[test]
fn reordering_and_duplicates() {
    let mut tracker = SequenceTracker::new(SeqNo(65534));
    let statuses = feed(&mut tracker, [65534, 65535, 1, 0, 2, 2]);
    assert_eq!(statuses[2], SeqStatus::Valid { extended: 65537 });
    assert_eq!(
        statuses[3],
        SeqStatus::Valid { extended: 65536 },
        "reordered packet keeps its cycle"
    );
    assert_eq!(statuses[5], SeqStatus::Valid { extended: 65538 });
    assert_eq!(tracker.expected(), 4);
    assert_eq!(tracker.received(), 5, "the duplicate counts, as in A.1");
    assert_eq!(tracker.lost(), -1);
    let interval = tracker.take_interval();
    assert_eq!(interval.fraction_lost, 0, "negative loss reports 0");
    // A late packet from before the first counted one.
    assert_eq!(tracker.update(SeqNo(65533)), SeqStatus::Stale);
    // A late packet from the previous cycle.
    let mut tracker = SequenceTracker::new(SeqNo(65000));
    feed(
        &mut tracker,
        (65000..=65535).chain(0..=9).filter(|s| *s != 65530),
    );
    assert_eq!(
        tracker.update(SeqNo(65530)),
        SeqStatus::Valid { extended: 65530 }
    );
    assert_eq!(tracker.lost(), 0);
}

#[test]
fn big_jump_then_restart() {
    let mut tracker = SequenceTracker::new(SeqNo(100));
    feed(&mut tracker, 100..=110);
    assert_eq!(tracker.received(), 10);
    // A jump of 20000 is not loss.
    assert_eq!(tracker.update(SeqNo(20110)), SeqStatus::Jump);
    assert_eq!(tracker.received(), 10);
    // In-sequence packets of the old stream keep going.
    assert_eq!(
        tracker.update(SeqNo(111)),
        SeqStatus::Valid { extended: 111 }
    );
    // The sender really restarted: two sequential packets confirm it.
    assert_eq!(tracker.update(SeqNo(30000)), SeqStatus::Jump);
    assert_eq!(
        tracker.update(SeqNo(30001)),
        SeqStatus::Restarted { extended: 30001 }
    );
    assert_eq!(tracker.received(), 1);
    assert_eq!(tracker.total_received(), 12);
    assert_eq!(tracker.total_lost(), 0);
    // A gap below MAX_DROPOUT is loss, not a jump.
    assert_eq!(
        tracker.update(SeqNo(32000)),
        SeqStatus::Valid { extended: 32000 }
    );
    assert_eq!(tracker.lost(), 1998);
}

#[test]
fn jitter_on_alternating_delay_matches_recursion() {
    // 20 ms packets (160 ticks at 8 kHz); odd packets arrive 5 ms late, so
    // every transit difference is 5 ms = 40 ticks and after n differences
    // J = 40 (1 - (15/16)^n).
    let t0 = Instant::now();
    let mut jitter = JitterEstimator::new();
    let n = 200u32;
    for i in 0..=n {
        let late = if i % 2 == 1 { 5 * MS } else { Duration::ZERO };
        jitter.update(t0 + 20 * MS * i + late, 7_000 + 160 * i, 8000);
    }
    let expected = 40.0 * (1.0 - (15.0f64 / 16.0).powi(n as i32));
    assert!(
        (jitter.jitter() - expected).abs() < 1e-6,
        "{}",
        jitter.jitter()
    );
    assert!((jitter.jitter_ms() - expected / 8.0).abs() < 1e-6);
    assert_eq!(jitter.jitter_field(), 40);
}

#[test]
fn jitter_first_steps_exact() {
    // Transit differences 0, 80, 40 ticks: J = 0, 5, 5 + (40 - 5) / 16.
    let t0 = Instant::now();
    let mut jitter = JitterEstimator::new();
    jitter.update(t0, 0, 8000);
    jitter.update(t0 + 20 * MS, 160, 8000);
    assert_eq!(jitter.jitter(), 0.0);
    jitter.update(t0 + 50 * MS, 320, 8000);
    assert!((jitter.jitter() - 5.0).abs() < 1e-9);
    jitter.update(t0 + 65 * MS, 480, 8000);
    assert!((jitter.jitter() - (5.0 + 35.0 / 16.0)).abs() < 1e-9);
}

#[test]
fn jitter_is_zero_across_timestamp_wrap_at_48k() {
    let t0 = Instant::now();
    let mut jitter = JitterEstimator::new();
    let start = u32::MAX - 960 * 5;
    for i in 0..20u32 {
        jitter.update(t0 + 20 * MS * i, start.wrapping_add(960 * i), 48_000);
    }
    assert!(jitter.jitter() < 1e-6);
}

#[test]
fn receive_stats_totals_over_ssrc_change() {
    let t0 = Instant::now();
    let mut stats = ReceiveStats::new();
    for i in 0..10u16 {
        if i == 4 {
            continue;
        }
        stats.on_packet(
            t0 + 20 * MS * u32::from(i),
            Ssrc(1),
            SeqNo(i),
            160 * u32::from(i),
            8000,
            true,
        );
    }
    assert_eq!(stats.packets_lost(), 1);
    let update = stats.on_packet(t0 + 300 * MS, Ssrc(2), SeqNo(900), 0, 8000, true);
    assert!(update.ssrc_changed);
    for i in 1..5u16 {
        stats.on_packet(
            t0 + (300 + 20 * u32::from(i)) * MS,
            Ssrc(2),
            SeqNo(900 + i),
            0,
            8000,
            true,
        );
    }
    assert_eq!(stats.ssrc(), Some(Ssrc(2)));
    assert_eq!(stats.packets(), 14);
    assert_eq!(stats.packets_received(), 8 + 4);
    assert_eq!(stats.packets_lost(), 1);
    let interval = stats.take_reception_interval().expect("valid source");
    assert_eq!(interval.ssrc, Ssrc(2));
    assert_eq!(interval.extended_highest_seq, 904);
    assert_eq!(interval.cumulative_lost, 0);
}

#[test]
fn telephone_events_do_not_feed_jitter() {
    let t0 = Instant::now();
    let mut stats = ReceiveStats::new();
    for i in 0..20u32 {
        // Every event packet carries the event-start timestamp.
        stats.on_packet(t0 + 50 * MS * i, Ssrc(1), SeqNo(i as u16), 0, 8000, false);
    }
    assert_eq!(stats.jitter_ms(), 0.0);
}

#[test]
fn round_trip_time_from_lsr_dlsr() {
    let units = |ms: u32| ms * 65_536 / 1000;
    let lsr = 0x8000_0000u32;
    let arrival = lsr.wrapping_add(units(350));
    let rtt = round_trip_time(arrival, lsr, units(250)).expect("valid");
    assert!(
        rtt.abs_diff(100 * MS) < Duration::from_micros(50),
        "{rtt:?}"
    );
    // Across the 32-bit wrap.
    let lsr = u32::MAX - units(10);
    let arrival = lsr.wrapping_add(units(120));
    let rtt = round_trip_time(arrival, lsr, units(20)).expect("valid");
    assert!(
        rtt.abs_diff(100 * MS) < Duration::from_micros(50),
        "{rtt:?}"
    );
    assert_eq!(round_trip_time(arrival, 0, 0), None, "no SR received yet");
    assert_eq!(round_trip_time(1000, 500, 501), Some(Duration::ZERO));
    assert_eq!(round_trip_time(1000, 500, 5000), None);
}

#[test]
fn e_model_g711_reference_points() {
    let mut model = EModel::new(CodecQuality::PCMU);
    assert!((model.r_factor() - 93.2).abs() < 1e-9);
    assert!((model.mos() - 4.41).abs() < 0.01);
    model.one_way_delay = 20 * MS;
    assert!((model.r_factor() - 92.72).abs() < 1e-9);
    assert!((model.mos() - 4.40).abs() < 0.01, "{}", model.mos());
    // Id at the knee of the delay curve: 0.024 * 177.3.
    model.one_way_delay = Duration::from_micros(177_300);
    assert!((model.delay_impairment() - 4.2552).abs() < 1e-6);
    model.one_way_delay = 300 * MS;
    assert!((model.delay_impairment() - (7.2 + 0.11 * 122.7)).abs() < 1e-6);

    // Ie,eff at 1 % random loss: 95 / 26.1 with PLC, 95 / 5.3 without.
    let mut lossy = EModel::new(CodecQuality::PCMU);
    lossy.loss_percent = 1.0;
    assert!((lossy.effective_equipment_impairment() - 95.0 / 26.1).abs() < 1e-9);
    let mut no_plc = EModel::new(CodecQuality::G711_NO_PLC);
    no_plc.loss_percent = 1.0;
    assert!((no_plc.effective_equipment_impairment() - 95.0 / 5.3).abs() < 1e-9);
    // Bursty loss hurts more than random loss.
    lossy.burst_ratio = 2.0;
    assert!(lossy.effective_equipment_impairment() > 95.0 / 26.1);
}

#[test]
fn mos_mapping_reference_points() {
    assert_eq!(mos_from_r(-5.0), 1.0);
    assert_eq!(mos_from_r(0.0), 1.0);
    assert_eq!(mos_from_r(100.0), 4.5);
    assert_eq!(mos_from_r(120.0), 4.5);
    assert_eq!(mos_from_r(f64::NAN), 1.0);
    assert!((mos_from_r(50.0) - 2.575).abs() < 1e-9);
    assert!((mos_from_r(80.0) - 4.024).abs() < 1e-9);
    assert!((mos_from_r(70.0) - 3.6).abs() < 0.01);
    assert!((mos_from_r(60.0) - 3.1).abs() < 0.01);
}

#[test]
fn mos_decreases_with_loss_and_delay() {
    for codec in [
        CodecQuality::PCMU,
        CodecQuality::OPUS,
        CodecQuality::G711_NO_PLC,
    ] {
        let mut previous = f64::INFINITY;
        for loss in 0..=40 {
            let mut model = EModel::new(codec);
            model.loss_percent = f64::from(loss) / 2.0;
            let mos = model.mos();
            assert!(
                mos < previous || (mos == 1.0 && previous == 1.0),
                "{codec:?} loss {loss}"
            );
            assert!((1.0..=4.5).contains(&mos));
            previous = mos;
        }
        let mut previous = f64::INFINITY;
        for delay_ms in (0..=600).step_by(10) {
            let mut model = EModel::new(codec);
            model.one_way_delay = delay_ms * MS;
            let mos = model.mos();
            assert!(mos < previous, "{codec:?} delay {delay_ms}");
            previous = mos;
        }
    }
}

#[test]
fn codec_lookup_and_stream_snapshot() {
    assert_eq!(
        CodecQuality::from_encoding_name("pcmu"),
        Some(CodecQuality::PCMU)
    );
    assert_eq!(
        CodecQuality::from_encoding_name("OPUS"),
        Some(CodecQuality::OPUS)
    );
    assert_eq!(CodecQuality::from_encoding_name("G729"), None);

    let t0 = Instant::now();
    let mut stats = ReceiveStats::new();
    for i in 0..101u16 {
        if i % 10 == 5 {
            continue;
        }
        stats.on_packet(
            t0 + 20 * MS * u32::from(i),
            Ssrc(1),
            SeqNo(i),
            160 * u32::from(i),
            8000,
            true,
        );
    }
    let snapshot = StreamStats::compute(CodecQuality::PCMU, 500, &stats, Some(40 * MS), 60 * MS);
    assert_eq!(snapshot.codec, "PCMU");
    assert_eq!(snapshot.packets_sent, 500);
    assert_eq!(snapshot.packets_received, 91);
    assert_eq!(snapshot.packets_lost, 10);
    assert!((snapshot.loss_percent - 10.0).abs() < 1e-9);
    assert!(snapshot.jitter_ms < 1e-6);
    assert_eq!(snapshot.rtt_ms, Some(40.0));
    let mut model = EModel::new(CodecQuality::PCMU);
    model.one_way_delay = 80 * MS;
    model.loss_percent = 10.0;
    assert!((snapshot.mos - model.mos()).abs() < 1e-12);
}
