//! Guards the jitter buffer's accounting under any arrival order: for
//! streams with bounded reordering, duplicates, losses and very late
//! packets, starting anywhere in the sequence and timestamp spaces (wrap
//! included), frames come out in order and never twice, every sequence number
//! of the played range is counted exactly once as played or concealed, and
//! late arrivals and duplicates are counted separately.

use std::time::{Duration, Instant};

use bytes::Bytes;
use media::jitter::{JitterBuffer, JitterConfig, JitterPacket, Playout, PushOutcome};
use proptest::prelude::*;

/// Samples per 20 ms frame at 48 kHz.
const FRAME: u32 = 960;
const FRAME_US: u64 = 20_000;

#[derive(Debug, Clone)]
struct Fate {
    lost: bool,
    delay_us: u64,
    copy_after_us: Option<u64>,
}

#[derive(Debug, Clone)]
struct Scenario {
    seq0: u16,
    ts0: u32,
    phase_us: u64,
    fates: Vec<Fate>,
}

fn fate() -> impl Strategy<Value = Fate> {
    (
        prop::bool::weighted(0.05),
        // Mostly within three frames (bounded displacement), sometimes very late.
        prop_oneof![19 => 0u64..60_000, 1 => 60_000u64..400_000],
        prop::option::weighted(0.05, 0u64..200_000),
    )
        .prop_map(|(lost, delay_us, copy_after_us)| Fate {
            lost,
            delay_us,
            copy_after_us,
        })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop_oneof![any::<u16>(), 65_300u16..=u16::MAX],
        prop_oneof![any::<u32>(), (u32::MAX - 200 * FRAME)..=u32::MAX],
        0u64..FRAME_US,
        prop::collection::vec(fate(), 20..300),
    )
        .prop_map(|(seq0, ts0, phase_us, fates)| Scenario {
            seq0,
            ts0,
            phase_us,
            fates,
        })
}

fn packet(scenario: &Scenario, k: u64) -> JitterPacket {
    JitterPacket {
        ssrc: 42,
        seq: scenario.seq0.wrapping_add(k as u16),
        timestamp: scenario.ts0.wrapping_add(k as u32 * FRAME),
        marker: k == 0,
        payload: Bytes::copy_from_slice(&k.to_be_bytes()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frames_in_order_once_and_every_sequence_number_counted(scenario in scenario()) {
        let mut arrivals: Vec<(u64, u64)> = Vec::new();
        for (k, fate) in scenario.fates.iter().enumerate() {
            let k = k as u64;
            if fate.lost {
                continue;
            }
            let at = k * FRAME_US + fate.delay_us;
            arrivals.push((at, k));
            if let Some(after) = fate.copy_after_us {
                arrivals.push((at + after, k));
            }
        }
        arrivals.sort();
        let copies = scenario.fates.iter().filter(|f| !f.lost && f.copy_after_us.is_some()).count() as u64;
        let end_us = arrivals.last().map_or(0, |(at, _)| *at) + 2_000_000;

        let mut jb = JitterBuffer::new(JitterConfig::default()).unwrap();
        let t0 = Instant::now();
        let mut next = 0;
        let (mut accepted, mut duplicate, mut too_late) = (0u64, 0u64, 0u64);
        let mut played = Vec::new();
        let mut now_us = scenario.phase_us;
        while now_us < end_us {
            while next < arrivals.len() && arrivals[next].0 <= now_us {
                let (at, k) = arrivals[next];
                next += 1;
                match jb.push(t0 + Duration::from_micros(at), packet(&scenario, k)) {
                    PushOutcome::Accepted => accepted += 1,
                    PushOutcome::Duplicate => duplicate += 1,
                    PushOutcome::TooLate => too_late += 1,
                    other => prop_assert!(false, "unexpected {other:?}"),
                }
            }
            if let Playout::Frame { payload, seq, timestamp } = jb.pop(t0 + Duration::from_micros(now_us)) {
                let k = u64::from(seq.wrapping_sub(scenario.seq0));
                prop_assert_eq!(payload, Bytes::copy_from_slice(&k.to_be_bytes()));
                prop_assert_eq!(timestamp, scenario.ts0.wrapping_add(k as u32 * FRAME));
                played.push(k);
            }
            now_us += FRAME_US;
        }

        let stats = jb.stats();
        // In order, none twice.
        prop_assert!(played.windows(2).all(|w| w[0] < w[1]), "{:?}", played);
        prop_assert_eq!(stats.played, played.len() as u64);
        prop_assert_eq!(stats.resets, 0);
        // Each arrival is accepted, a duplicate, or late.
        prop_assert_eq!(stats.duplicates, duplicate);
        prop_assert!(stats.duplicates <= copies);
        // Each accepted packet is played, discarded (to shrink the delay),
        // found late at playout, or still waiting.
        prop_assert_eq!(
            accepted + too_late,
            stats.played + stats.discarded + stats.late + jb.len() as u64
        );
        let Some(first) = played.first().copied() else {
            return Ok(());
        };
        let position = u64::from(jb.play_position().unwrap().wrapping_sub(scenario.seq0));
        // Every sequence number of the played range exactly once.
        prop_assert_eq!(stats.played + stats.concealed, position - first);
        // Lost means never arrived: exactly the lost ones of the played range.
        let never_arrived = (first..position)
            .filter(|&k| scenario.fates[k as usize].lost)
            .count() as u64;
        prop_assert_eq!(stats.lost, never_arrived);
    }
}

/// One hostile input: a packet with arbitrary fields, or a pop.
#[derive(Debug, Clone)]
enum Input {
    Push {
        after_us: u64,
        ssrc: u32,
        seq: u16,
        timestamp: u32,
        marker: bool,
    },
    Pop {
        after_us: u64,
    },
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        (
            0u64..50_000,
            0u32..3,
            any::<u16>(),
            any::<u32>(),
            any::<bool>()
        )
            .prop_map(|(after_us, ssrc, seq, timestamp, marker)| Input::Push {
                after_us,
                ssrc,
                seq,
                timestamp,
                marker,
            }),
        // Near-valid packets: small steps from a running position.
        (0u64..30_000, -3i32..6, -2i64..4).prop_map(|(after_us, seq_step, frames)| {
            Input::Push {
                after_us,
                ssrc: 1,
                seq: seq_step as u16,
                timestamp: (frames * i64::from(FRAME)) as u32,
                marker: false,
            }
        }),
        (0u64..40_000).prop_map(|after_us| Input::Pop { after_us }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary sequence numbers, timestamps and SSRCs never panic and keep
    /// the counters consistent.
    #[test]
    fn hostile_input_never_panics(inputs in prop::collection::vec(input(), 1..400)) {
        let mut jb = JitterBuffer::new(JitterConfig::default()).unwrap();
        let t0 = Instant::now();
        let mut now_us = 0u64;
        let (mut seq, mut timestamp) = (0u16, 0u32);
        let mut pushed = 0u64;
        for input in inputs {
            match input {
                Input::Push { after_us, ssrc, seq: s, timestamp: ts, marker } => {
                    now_us += after_us;
                    let (s, ts) = if ssrc == 1 && after_us < 30_000 {
                        // Relative steps for the near-valid stream.
                        seq = seq.wrapping_add(s);
                        timestamp = timestamp.wrapping_add(ts);
                        (seq, timestamp)
                    } else {
                        (s, ts)
                    };
                    jb.push(
                        t0 + Duration::from_micros(now_us),
                        JitterPacket { ssrc, seq: s, timestamp: ts, marker, payload: Bytes::new() },
                    );
                    pushed += 1;
                }
                Input::Pop { after_us } => {
                    now_us += after_us;
                    jb.pop(t0 + Duration::from_micros(now_us));
                }
            }
        }
        let stats = jb.stats();
        prop_assert_eq!(stats.received, pushed);
        prop_assert!(stats.played + stats.duplicates <= pushed);
        prop_assert!(jb.len() as u64 <= pushed);
        prop_assert!(stats.target_delay <= Duration::from_millis(500));
    }
}
