//! Guards the jitter buffer's adaptation on simulated networks (the seeded
//! `netsim`, virtual time, no sleeping): late loss stays low under jitter
//! spikes, the delay stays near a frame on a clean path, clock drift does not
//! make the buffer grow or starve, the target comes back down after a spike,
//! and SSRC changes, DTX gaps and a bad mobile path are handled.

use std::time::{Duration, Instant};

use bytes::Bytes;
use media::jitter::{JitterBuffer, JitterConfig, JitterPacket, JitterStats, Playout};
use media::netsim::{Arrival, JitterModel, NetSim, NetSimConfig, Spike};

const FRAME: u32 = 960;
const SSRC: u32 = 0xABCD;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Packet `k` of a stream whose sequence numbers start near the wrap.
fn packet(k: u64) -> JitterPacket {
    JitterPacket {
        ssrc: SSRC,
        seq: (65_000 + k) as u16,
        timestamp: (k as u32)
            .wrapping_mul(FRAME)
            .wrapping_add(u32::MAX - 100_000),
        marker: k == 0,
        payload: Bytes::from_static(b"frame"),
    }
}

/// What a run saw at each pop.
#[derive(Debug, Default)]
struct Run {
    stats: JitterStats,
    /// (seconds since start, current delay, target delay) at each pop.
    delays: Vec<(f64, Duration, Duration)>,
    conceal_frames: u64,
    frames: u64,
}

/// Pops every 20 ms of the receiver's clock for `duration`, pushing each
/// arrival when it is due.
fn drive(arrivals: Vec<Arrival<JitterPacket>>, t0: Instant, duration: Duration) -> Run {
    let mut jb = JitterBuffer::new(JitterConfig::default()).unwrap();
    let mut run = Run::default();
    let mut arrivals = arrivals.into_iter().peekable();
    let pops = (duration.as_millis() / 20) as u32;
    for i in 0..pops {
        let now = t0 + ms(3) + ms(20) * i;
        while let Some(arrival) = arrivals.next_if(|a| a.at <= now) {
            jb.push(arrival.at, arrival.packet);
        }
        match jb.pop(now) {
            Playout::Frame { .. } => run.frames += 1,
            Playout::Conceal { .. } => run.conceal_frames += 1,
            Playout::Silence => {}
        }
        let stats = jb.stats();
        let secs = (now - t0).as_secs_f64();
        run.delays
            .push((secs, stats.current_delay, stats.target_delay));
    }
    run.stats = jb.stats();
    run
}

fn trace(config: NetSimConfig, seed: u64, t0: Instant, count: u64) -> Vec<Arrival<JitterPacket>> {
    NetSim::trace(config, seed, t0, count, packet)
}

fn max_delay_after(run: &Run, warmup_secs: f64) -> Duration {
    run.delays
        .iter()
        .filter(|(t, _, _)| *t > warmup_secs)
        .map(|(_, current, _)| *current)
        .max()
        .unwrap_or_default()
}

#[test]
fn jitter_spikes_and_one_percent_loss_keep_late_loss_under_one_percent() {
    let config = NetSimConfig {
        loss: 0.01,
        base_delay: ms(30),
        jitter: JitterModel::Normal { std_dev: ms(2) },
        spike: Some(Spike {
            probability: 0.01,
            extra: ms(20),
            length: 4,
        }),
        ..NetSimConfig::clean()
    };
    for seed in 0..4 {
        let t0 = Instant::now();
        let count = 9_000; // three minutes
        let run = drive(
            trace(config.clone(), seed, t0, count),
            t0,
            ms(20 * (count + 50)),
        );
        let stats = run.stats;
        let late = stats.late as f64 / stats.received as f64;
        assert!(late < 0.01, "seed {seed}: late {late:.4} {stats:?}");
        let lost = stats.lost as f64 / count as f64;
        assert!((0.005..0.02).contains(&lost), "seed {seed}: lost {lost:.4}");
        // The whole stream is the played range (up to trailing losses).
        let counted = stats.played + stats.concealed;
        assert!(counted <= count && counted + 5 >= count, "{stats:?}");
    }
}

#[test]
fn clean_path_keeps_the_delay_near_one_frame() {
    let t0 = Instant::now();
    let count = 3_000;
    let run = drive(
        trace(NetSimConfig::clean(), 11, t0, count),
        t0,
        ms(20 * (count + 50)),
    );
    let stats = run.stats;
    assert_eq!((stats.lost, stats.late), (0, 0), "{stats:?}");
    assert!(stats.mean_delay <= ms(40), "{stats:?}");
    assert!(max_delay_after(&run, 5.0) <= ms(40), "{stats:?}");
    assert_eq!(stats.played + stats.concealed, count);
}

#[test]
fn clock_drift_of_100_ppm_over_ten_minutes_keeps_the_delay_bounded() {
    for drift_ppm in [100.0, -100.0] {
        let t0 = Instant::now();
        let config = NetSimConfig {
            drift_ppm,
            ..NetSimConfig::clean()
        };
        let count = 30_000; // ten minutes
        let run = drive(trace(config, 5, t0, count), t0, ms(20 * (count + 20)));
        let stats = run.stats;
        let max = max_delay_after(&run, 5.0);
        assert!(
            max <= ms(60),
            "drift {drift_ppm}: max delay {max:?} {stats:?}"
        );
        let min_tail = run
            .delays
            .iter()
            .filter(|(t, _, _)| (10.0..590.0).contains(t))
            .map(|(_, current, _)| *current)
            .min()
            .unwrap();
        assert!(
            min_tail >= ms(5),
            "drift {drift_ppm}: starving {min_tail:?}"
        );
        // 60 ms of drift is three frames, dropped or inserted: no more.
        assert!(stats.discarded <= 6, "drift {drift_ppm}: {stats:?}");
        assert!(stats.inserted <= 6, "drift {drift_ppm}: {stats:?}");
        assert_eq!(
            (stats.lost, stats.late),
            (0, 0),
            "drift {drift_ppm}: {stats:?}"
        );
    }
}

#[test]
fn target_decays_back_within_seconds_after_a_spike() {
    let t0 = Instant::now();
    let count = 1_500;
    let mut arrivals = trace(NetSimConfig::clean(), 3, t0, count);
    // At 10 s a 200 ms queue builds and drains over ten packets.
    for arrival in &mut arrivals {
        if (500..510).contains(&arrival.index) {
            arrival.at += ms(200 - 20 * (arrival.index - 500));
        }
    }
    arrivals.sort_by_key(|a| a.at);
    let run = drive(arrivals, t0, ms(20 * count));
    let peak = run
        .delays
        .iter()
        .filter(|(t, _, _)| (10.0..11.0).contains(t))
        .map(|(_, _, target)| *target)
        .max()
        .unwrap();
    assert!(peak >= ms(150), "peak target {peak:?}");
    let later = run
        .delays
        .iter()
        .filter(|(t, _, _)| (18.0..30.0).contains(t));
    for (t, current, target) in later {
        assert!(*target <= ms(30), "at {t:.1}s target {target:?}");
        assert!(*current <= ms(60), "at {t:.1}s delay {current:?}");
    }
}

#[test]
fn ssrc_change_mid_stream_on_a_jittery_path() {
    let t0 = Instant::now();
    let count = 3_000;
    let arrivals = NetSim::trace(NetSimConfig::jittery(), 8, t0, count, |k| {
        let mut p = packet(k);
        if k >= 1_500 {
            p.ssrc = 0x7777;
            p.seq = (k + 20_000) as u16;
            p.timestamp = (k as u32) * FRAME + 1_000_000;
        }
        p
    });
    let run = drive(arrivals, t0, ms(20 * (count + 50)));
    let stats = run.stats;
    assert_eq!(stats.resets, 1, "{stats:?}");
    assert!(run.frames as f64 > 0.97 * count as f64, "{stats:?}");
    // The jittery preset loses 0.5%; the switch itself loses nothing more
    // than the old stream's last buffered packets (counted as discarded).
    assert!(stats.lost < 30, "{stats:?}");
    assert!(stats.late < 30, "{stats:?}");
}

#[test]
fn dtx_gaps_are_not_loss() {
    let t0 = Instant::now();
    let mut sim = NetSim::new(NetSimConfig::clean(), 21).unwrap();
    // Talk 3 s, silent 2 s, five times: sequence numbers stay contiguous,
    // timestamps follow the sender clock, the marker bit starts each spurt.
    let mut seq = 0u16;
    for frame in 0..1_250u32 {
        let talking = frame % 250 < 150;
        if !talking {
            continue;
        }
        let p = JitterPacket {
            ssrc: SSRC,
            seq,
            timestamp: frame * FRAME,
            marker: frame % 250 == 0,
            payload: Bytes::from_static(b"voice"),
        };
        seq = seq.wrapping_add(1);
        sim.send(t0 + ms(20) * frame, p);
    }
    let mut arrivals = Vec::new();
    while let Some(arrival) = sim.poll_arrival(t0 + ms(60_000)) {
        arrivals.push(arrival);
    }
    let run = drive(arrivals, t0, ms(20 * 1_300));
    let stats = run.stats;
    assert_eq!((stats.lost, stats.late), (0, 0), "{stats:?}");
    assert_eq!(stats.played + stats.discarded, 750, "{stats:?}");
    assert!(stats.silence_frames >= 400, "{stats:?}");
}

#[test]
fn bad_mobile_path_stays_within_max_delay_and_plays_most_frames() {
    for seed in 0..3 {
        let t0 = Instant::now();
        let count = 15_000; // five minutes
        let run = drive(
            trace(NetSimConfig::bad_mobile(), seed, t0, count),
            t0,
            ms(20 * (count + 50)),
        );
        let stats = run.stats;
        assert!(max_delay_after(&run, 1.0) <= ms(520), "{stats:?}");
        assert!(
            run.frames as f64 > 0.9 * count as f64,
            "seed {seed}: {stats:?}"
        );
        let late = stats.late as f64 / stats.received as f64;
        assert!(late < 0.03, "seed {seed}: late {late:.4} {stats:?}");
    }
}
