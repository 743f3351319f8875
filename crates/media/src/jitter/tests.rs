//! Unit tests of the jitter buffer, one edge case each.

use super::*;

/// Samples per 20 ms frame at 48 kHz.
const FRAME: u32 = 960;
const SSRC: u32 = 0x1234_5678;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn packet(seq: u16, timestamp: u32) -> JitterPacket {
    JitterPacket {
        ssrc: SSRC,
        seq,
        timestamp,
        marker: false,
        payload: Bytes::copy_from_slice(&seq.to_be_bytes()),
    }
}

/// Packet `k` of a stream starting at `seq0`/`ts0`.
fn nth(seq0: u16, ts0: u32, k: u32) -> JitterPacket {
    packet(seq0.wrapping_add(k as u16), ts0.wrapping_add(k * FRAME))
}

/// Feeds `arrivals` (microseconds after `t0`, packet) and pops every 20 ms
/// from `t0 + phase` for `pops` frames, pushing what has arrived before
/// each pop. Returns every playout.
fn simulate(
    buffer: &mut JitterBuffer,
    t0: Instant,
    mut arrivals: Vec<(u64, JitterPacket)>,
    phase: Duration,
    pops: u32,
) -> Vec<Playout> {
    arrivals.sort_by_key(|(at, _)| *at);
    let mut arrivals = arrivals.into_iter().peekable();
    let mut out = Vec::new();
    for i in 0..pops {
        let now = t0 + phase + ms(20) * i;
        while let Some((at, _)) = arrivals.peek() {
            let at = t0 + Duration::from_micros(*at);
            if at > now {
                break;
            }
            let (_, p) = arrivals.next().expect("peeked");
            buffer.push(at, p);
        }
        out.push(buffer.pop(now));
    }
    out
}

/// The sequence numbers of the frames played, in order.
fn played(out: &[Playout]) -> Vec<u16> {
    out.iter()
        .filter_map(|p| match p {
            Playout::Frame { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}

fn steady(seq0: u16, ts0: u32, count: u32) -> Vec<(u64, JitterPacket)> {
    (0..count)
        .map(|k| (u64::from(k) * 20_000, nth(seq0, ts0, k)))
        .collect()
}

fn buffer() -> JitterBuffer {
    JitterBuffer::new(JitterConfig::default()).unwrap()
}

/// Strictly increasing (modulo 2^16): in order, none twice.
fn increasing(seqs: &[u16]) -> bool {
    seqs.windows(2)
        .all(|w| (1..1000).contains(&w[1].wrapping_sub(w[0])))
}

#[test]
fn silence_before_the_first_packet_and_during_the_initial_delay() {
    let mut jb = buffer();
    let t0 = Instant::now();
    assert_eq!(jb.pop(t0), Playout::Silence);
    assert_eq!(jb.poll_timeout(), Some(t0 + ms(20)));
    jb.push(t0 + ms(5), packet(1, 0));
    assert_eq!(jb.pop(t0 + ms(20)), Playout::Silence);
    assert_eq!(jb.pop(t0 + ms(60)), Playout::Silence);
    assert!(matches!(jb.pop(t0 + ms(65)), Playout::Frame { seq: 1, .. }));
}

#[test]
fn poll_timeout_before_any_pop_is_the_end_of_the_initial_delay() {
    let mut jb = buffer();
    let t0 = Instant::now();
    assert_eq!(jb.poll_timeout(), None);
    jb.push(t0, packet(1, 0));
    assert_eq!(jb.poll_timeout(), Some(t0 + ms(60)));
}

#[test]
fn in_order_stream_plays_every_frame_with_a_small_delay() {
    let mut jb = buffer();
    let t0 = Instant::now();
    let out = simulate(&mut jb, t0, steady(100, 5000, 500), ms(7), 520);
    let seqs = played(&out);
    assert!(increasing(&seqs));
    let stats = jb.stats();
    assert_eq!(stats.played, seqs.len() as u64);
    // Two frames dropped, a second apart, to come down from the initial
    // 60 ms (67 ms with the pop phase) to within a frame of the 10 ms floor.
    assert_eq!((stats.concealed, stats.discarded), (2, 2), "{stats:?}");
    assert_eq!(stats.played + stats.concealed, 500);
    assert_eq!((stats.lost, stats.late, stats.duplicates), (0, 0, 0));
    assert_eq!(stats.current_delay, ms(27), "{stats:?}");
    assert!(stats.mean_delay <= ms(40), "{stats:?}");
}

#[test]
fn reordered_packets_come_out_in_order() {
    let mut jb = buffer();
    let t0 = Instant::now();
    let mut arrivals = steady(0, 0, 300);
    for pair in arrivals.chunks_mut(2).step_by(5) {
        let (a, b) = (pair[0].0, pair[1].0);
        pair[0].0 = b;
        pair[1].0 = a;
    }
    let out = simulate(&mut jb, t0, arrivals, ms(10), 320);
    let seqs = played(&out);
    assert!(increasing(&seqs));
    let stats = jb.stats();
    assert_eq!(stats.reordered, 30);
    assert_eq!(stats.late + stats.lost, 0, "{stats:?}");
    assert_eq!(
        stats.played + stats.concealed,
        u64::from(seqs[seqs.len() - 1]) + 1
    );
}

#[test]
fn duplicates_are_reported_and_played_once() {
    let mut jb = buffer();
    let t0 = Instant::now();
    assert_eq!(jb.push(t0, packet(7, 0)), PushOutcome::Accepted);
    assert_eq!(jb.push(t0 + ms(1), packet(7, 0)), PushOutcome::Duplicate);
    assert!(matches!(jb.pop(t0 + ms(60)), Playout::Frame { seq: 7, .. }));
    // After playout, a copy of a played packet is still a duplicate.
    assert_eq!(jb.push(t0 + ms(61), packet(7, 0)), PushOutcome::Duplicate);
    assert_eq!(jb.stats().duplicates, 2);
    assert_eq!(jb.stats().late, 0);
}

#[test]
fn missing_frame_is_concealed_with_the_next_payload_as_fec() {
    let mut jb = buffer();
    let t0 = Instant::now();
    let arrivals: Vec<_> = steady(0, 0, 20)
        .into_iter()
        .filter(|(_, p)| p.seq != 10)
        .collect();
    let out = simulate(&mut jb, t0, arrivals, ms(5), 25);
    let conceal = out
        .iter()
        .find(|p| matches!(p, Playout::Conceal { .. }))
        .expect("one frame concealed");
    assert_eq!(
        conceal,
        &Playout::Conceal {
            fec: Some(Bytes::copy_from_slice(&11u16.to_be_bytes()))
        }
    );
    let stats = jb.stats();
    assert_eq!((stats.lost, stats.late), (1, 0));
}

#[test]
fn packet_after_its_playout_is_late_not_lost() {
    let mut jb = buffer();
    let t0 = Instant::now();
    let mut arrivals = steady(0, 0, 40);
    // Packet 20 arrives 300 ms late, long after its frame was concealed.
    arrivals[20].0 += 300_000;
    let out = simulate(&mut jb, t0, arrivals, ms(5), 80);
    assert!(!played(&out).contains(&20));
    let stats = jb.stats();
    assert_eq!((stats.late, stats.lost), (1, 0), "{stats:?}");
    // Accounting: every sequence number in the played range exactly once.
    assert_eq!(stats.played + stats.concealed, 40);
    // The late packet taught the buffer: the target delay grew.
    assert!(stats.target_delay >= ms(150), "{stats:?}");
}

#[test]
fn burst_loss_is_concealed_and_counted() {
    let mut jb = buffer();
    let t0 = Instant::now();
    let arrivals: Vec<_> = steady(0, 0, 100)
        .into_iter()
        .filter(|(_, p)| !(30..36).contains(&p.seq))
        .collect();
    let out = simulate(&mut jb, t0, arrivals, ms(5), 110);
    let seqs = played(&out);
    assert_eq!(seqs.len(), 94 - jb.stats().discarded as usize);
    let stats = jb.stats();
    assert_eq!(stats.lost, 6);
    assert_eq!(stats.played + stats.concealed, 100);
}

#[test]
fn sequence_and_timestamp_wrap_around() {
    let mut jb = buffer();
    let t0 = Instant::now();
    let ts0 = u32::MAX - 20 * FRAME;
    let out = simulate(&mut jb, t0, steady(65_500, ts0, 200), ms(5), 210);
    let seqs = played(&out);
    assert!(seqs.len() >= 195, "{}", seqs.len());
    assert!(increasing(&seqs));
    assert!(seqs.contains(&65_535) && seqs.contains(&0));
    let stats = jb.stats();
    assert_eq!((stats.lost, stats.late, stats.resets), (0, 0, 0));
}

#[test]
fn ssrc_change_resets_the_stream_and_keeps_stats() {
    let mut jb = buffer();
    let t0 = Instant::now();
    let mut arrivals = steady(0, 0, 50);
    for (at, mut p) in steady(40_000, 123_456, 50) {
        p.ssrc = 99;
        arrivals.push((at + 1_000_000, p));
    }
    let out = simulate(&mut jb, t0, arrivals, ms(5), 110);
    let seqs = played(&out);
    assert!(seqs.contains(&10) && seqs.contains(&40_010));
    let stats = jb.stats();
    assert_eq!(stats.resets, 1);
    assert_eq!(stats.lost, 0);
    // A straggler from the old SSRC does not flip the stream back.
    assert_eq!(
        jb.push(t0 + ms(2300), packet(49, 0)),
        PushOutcome::StaleSsrc
    );
    assert_eq!(jb.stats().resets, 1);
}

#[test]
fn dtx_gap_is_silence_not_loss() {
    let mut jb = buffer();
    let t0 = Instant::now();
    let mut arrivals = steady(0, 0, 50);
    // After packet 49 the sender is silent for 2 s (100 frames); sequence
    // numbers continue, the timestamp jumps, the marker bit is set.
    for (at, mut p) in steady(50, 150 * FRAME, 50) {
        p.marker = p.seq == 50;
        arrivals.push((at + 3_000_000, p));
    }
    let out = simulate(&mut jb, t0, arrivals, ms(5), 210);
    let seqs = played(&out);
    assert_eq!(seqs.len() as u64 + jb.stats().discarded, 100);
    let stats = jb.stats();
    assert_eq!(
        (stats.lost, stats.late, stats.concealed - stats.discarded),
        (0, 0, 0)
    );
    assert!(stats.silence_frames >= 90, "{stats:?}");
}

#[test]
fn long_outage_counts_every_missing_packet_as_lost() {
    let mut jb = buffer();
    let t0 = Instant::now();
    // 500 packets; 100..400 (6 s, more than the ring) never arrive.
    let arrivals: Vec<_> = steady(0, 0, 500)
        .into_iter()
        .filter(|(_, p)| !(100..400).contains(&p.seq))
        .collect();
    let out = simulate(&mut jb, t0, arrivals, ms(5), 510);
    let seqs = played(&out);
    assert!(seqs.contains(&99) && seqs.contains(&400) && seqs.contains(&499));
    let stats = jb.stats();
    assert_eq!(stats.lost, 300);
    assert_eq!(stats.played + stats.concealed, 500);
    assert_eq!(stats.resets, 0);
    // Playout resumed on time: the delay did not grow by the outage.
    assert!(stats.current_delay <= ms(60), "{stats:?}");
}

#[test]
fn huge_sequence_jump_resyncs_after_two_packets() {
    let mut jb = buffer();
    let t0 = Instant::now();
    let mut arrivals = steady(0, 0, 50);
    for (at, p) in steady(30_000, 50 * FRAME, 50) {
        arrivals.push((at + 1_000_000, p));
    }
    let out = simulate(&mut jb, t0, arrivals, ms(5), 110);
    let seqs = played(&out);
    assert!(seqs.contains(&45) && seqs.contains(&30_049), "{out:?}");
    let stats = jb.stats();
    assert_eq!(stats.resets, 1);
    // The old stream's last buffered packets are flushed, not lost.
    assert_eq!(stats.lost, 0, "{stats:?}");
    assert!(stats.discarded <= 3, "{stats:?}");
}

#[test]
fn one_stray_packet_does_not_resync() {
    let mut jb = buffer();
    let t0 = Instant::now();
    let mut arrivals = steady(0, 0, 100);
    arrivals.push((500_000, packet(30_000, 7)));
    let out = simulate(&mut jb, t0, arrivals, ms(5), 110);
    assert!(increasing(&played(&out)));
    let stats = jb.stats();
    assert_eq!((stats.resets, stats.lost), (0, 0));
}

#[test]
fn timestamp_jump_resyncs() {
    let mut jb = buffer();
    let t0 = Instant::now();
    let mut arrivals = steady(0, 0, 50);
    for (at, p) in steady(50, 2_000_000_000, 50) {
        arrivals.push((at + 1_000_000, p));
    }
    let out = simulate(&mut jb, t0, arrivals, ms(5), 110);
    let seqs = played(&out);
    assert!(seqs.contains(&10) && seqs.contains(&90));
    assert_eq!(jb.stats().resets, 1);
}

#[test]
fn spike_grows_the_target_at_once_and_it_decays_within_seconds() {
    let mut jb = buffer();
    let t0 = Instant::now();
    let mut arrivals = steady(0, 0, 1000);
    // At 2 s, a 200 ms queue builds and drains over ten packets.
    for (k, arrival) in arrivals.iter_mut().enumerate().skip(100).take(10) {
        arrival.0 += 200_000 - (k as u64 - 100) * 20_000;
    }
    let t_spike = 100 * 20_000 + 200_000;
    let mut target_after_spike = Duration::ZERO;
    let mut arrivals_iter = arrivals.into_iter().peekable();
    let mut inserted_after = 0;
    for i in 0..1000u64 {
        let now_us = i * 20_000 + 5_000;
        while let Some((at, _)) = arrivals_iter.peek() {
            if *at > now_us {
                break;
            }
            let (at, p) = arrivals_iter.next().expect("peeked");
            jb.push(t0 + Duration::from_micros(at), p);
        }
        jb.pop(t0 + Duration::from_micros(now_us));
        if now_us > t_spike && now_us < t_spike + 40_000 {
            target_after_spike = target_after_spike.max(jb.stats().target_delay);
            inserted_after = jb.stats().inserted;
        }
    }
    assert!(target_after_spike >= ms(150), "{target_after_spike:?}");
    assert!(inserted_after >= 1);
    // 18 s later the target is back at the floor.
    assert!(jb.stats().target_delay <= ms(20), "{:?}", jb.stats());
}

#[test]
fn delay_stays_under_max_delay_when_packets_pile_up() {
    let mut jb = JitterBuffer::new(JitterConfig {
        max_delay: ms(200),
        ..JitterConfig::default()
    })
    .unwrap();
    let t0 = Instant::now();
    // The first packet arrives, then nothing for a second, then everything
    // the sender sent meanwhile arrives at once (a stalled path flushing).
    let mut arrivals = vec![(0, nth(0, 0, 0))];
    for k in 1..200u32 {
        let at = (u64::from(k) * 20_000).max(1_000_000);
        arrivals.push((at, nth(0, 0, k)));
    }
    simulate(&mut jb, t0, arrivals, ms(5), 200);
    let stats = jb.stats();
    assert!(stats.current_delay <= ms(220), "{stats:?}");
}

#[test]
fn configuration_is_validated() {
    let bad = |config: JitterConfig| JitterBuffer::new(config).unwrap_err();
    let base = JitterConfig::default();
    assert_eq!(
        bad(JitterConfig {
            clock_rate: 0,
            ..base.clone()
        }),
        JitterError::ZeroClockRate
    );
    assert!(matches!(
        bad(JitterConfig {
            frame_ms: 7,
            ..base.clone()
        }),
        JitterError::Frame { frame_ms: 7, .. }
    ));
    assert!(matches!(
        bad(JitterConfig {
            min_delay: ms(300),
            max_delay: ms(200),
            ..base.clone()
        }),
        JitterError::DelayRange { .. }
    ));
    assert!(matches!(
        bad(JitterConfig {
            initial_delay: ms(5),
            ..base.clone()
        }),
        JitterError::InitialDelay { .. }
    ));
    assert!(matches!(
        bad(JitterConfig {
            capacity: 8,
            ..base.clone()
        }),
        JitterError::Capacity { required: 29, .. }
    ));
    assert!(JitterBuffer::new(JitterConfig::with_clock_rate(8000)).is_ok());
}

#[test]
fn reset_drops_the_stream_but_keeps_stats() {
    let mut jb = buffer();
    let t0 = Instant::now();
    simulate(&mut jb, t0, steady(0, 0, 20), ms(5), 20);
    let played_before = jb.stats().played;
    jb.reset();
    assert!(jb.is_empty());
    assert_eq!(jb.stats().played, played_before);
    assert_eq!(
        jb.push(t0 + ms(1000), packet(500, 7)),
        PushOutcome::Accepted
    );
}
