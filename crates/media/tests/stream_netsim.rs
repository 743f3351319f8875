//! Guards the sans-IO media stream as a whole: two `MediaStream`s connected
//! in memory through the seeded network simulator, in virtual time (no
//! sleeping). Speech-like PCM sent by one comes out of the other (SNR floor
//! for PCMU, correlation floor for Opus), loss is concealed (and recovered
//! from Opus FEC), the statistics add up (packets sent = received + lost),
//! and DTMF survives the trip.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::codec::{CodecSpec, OpusConfig, SampleRate};
use media::netsim::{NetSim, NetSimConfig};
use media::rtcp::NtpTime;
use media::rtp_session::PayloadType;
use media::stream::{Component, FrameKind, MediaConfig, MediaEvent, MediaStream};
use rand::rngs::StdRng;
use rand::SeedableRng;

const MS: Duration = Duration::from_millis(1);

fn a_addr() -> SocketAddr {
    "10.0.0.1:4000".parse().unwrap()
}

fn b_addr() -> SocketAddr {
    "10.0.0.2:5000".parse().unwrap()
}

/// Speech-like audio: 140 Hz harmonics under a syllable envelope.
fn speech(rate: SampleRate, seconds: usize) -> Vec<i16> {
    let hz = f64::from(rate.hz());
    let tau = 2.0 * std::f64::consts::PI;
    (0..seconds * rate.hz() as usize)
        .map(|n| {
            let t = n as f64 / hz;
            let envelope = 0.55 + 0.45 * (tau * 3.0 * t).sin();
            let voiced: f64 = (1..=12)
                .map(|k| (tau * 140.0 * f64::from(k) * t).sin() / f64::from(k))
                .sum();
            (envelope * 6000.0 * voiced) as i16
        })
        .collect()
}

struct Run {
    sent: Vec<i16>,
    received: Vec<i16>,
    kinds: Vec<FrameKind>,
    a: MediaStream,
    b: MediaStream,
    network_lost: u64,
    events: Vec<MediaEvent>,
}

/// Streams `seconds` of speech from A to B over `network`; B sends
/// silence back over a clean path. RTCP travels outside the simulator.
fn run(
    codec: CodecSpec,
    pt: u8,
    rate: SampleRate,
    network: NetSimConfig,
    seconds: usize,
    dtmf: Option<&str>,
) -> Run {
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(7);
    let mut config = MediaConfig::new(codec, PayloadType::new(pt).unwrap(), b_addr());
    config.app_rate = rate;
    config.telephone_event_pt = PayloadType::new(101);
    config.rtcp_interval = Duration::from_secs(1);
    let mut a = MediaStream::new(config.clone(), t0, NtpTime(1 << 45), &mut rng).unwrap();
    config.remote = a_addr();
    let mut b = MediaStream::new(config, t0, NtpTime(1 << 45), &mut rng).unwrap();
    let mut sim: NetSim<Bytes> = NetSim::new(network, 11).unwrap();
    let sent = speech(rate, seconds);
    let frame = rate.frame_samples();
    let frames = sent.len() / frame;
    let mut received = Vec::new();
    let mut kinds = Vec::new();
    let mut events = Vec::new();
    let mut back = Vec::new();
    // Half a second more on B's side, for the jitter buffer to drain.
    let total_ms = (frames + 25) * 20;
    for ms in 0..total_ms as u32 {
        let now = t0 + MS * ms;
        while let Some(arrival) = sim.poll_arrival(now) {
            b.handle_datagram(now, a_addr(), arrival.packet).unwrap();
        }
        if ms % 20 != 0 {
            continue;
        }
        let k = (ms / 20) as usize;
        if k == 50 {
            if let Some(digits) = dtmf {
                a.send_dtmf(now, digits).unwrap();
            }
        }
        if k < frames {
            a.tick(now, Some(&sent[k * frame..(k + 1) * frame]))
                .unwrap();
            while let Some(transmit) = a.poll_transmit() {
                let datagram = Bytes::copy_from_slice(transmit.payload);
                match transmit.component {
                    Component::Rtp => {
                        sim.send(now, datagram);
                    }
                    Component::Rtcp => back.push(datagram),
                }
            }
        }
        for datagram in back.drain(..) {
            b.handle_datagram(now, SocketAddr::new(a_addr().ip(), 4001), datagram)
                .unwrap();
        }
        kinds.push(b.tick(now, None).unwrap());
        received.extend_from_slice(b.frame());
        while let Some(transmit) = b.poll_transmit() {
            let source = match transmit.component {
                Component::Rtp => b_addr(),
                Component::Rtcp => SocketAddr::new(b_addr().ip(), 5001),
            };
            let datagram = Bytes::copy_from_slice(transmit.payload);
            a.handle_datagram(now, source, datagram).unwrap();
        }
        events.extend(std::iter::from_fn(|| b.poll_event()));
    }
    let stats = sim.stats();
    Run {
        sent,
        received,
        kinds,
        a,
        b,
        network_lost: stats.lost_random + stats.lost_burst,
        events,
    }
}

/// Best normalized correlation of `received` against `sent` over lags up to
/// `max_lag`, and the SNR at that lag, on the window `start..start + len`
/// of `sent`.
fn best_match(
    sent: &[i16],
    received: &[i16],
    start: usize,
    len: usize,
    max_lag: usize,
) -> (f64, f64) {
    let reference = &sent[start..start + len];
    let energy: f64 = reference.iter().map(|&s| f64::from(s).powi(2)).sum();
    let mut best = (f64::MIN, 0.0);
    for lag in 0..max_lag {
        let Some(window) = received.get(start + lag..start + lag + len) else {
            break;
        };
        let cross: f64 = reference
            .iter()
            .zip(window)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum();
        let window_energy: f64 = window.iter().map(|&s| f64::from(s).powi(2)).sum();
        if window_energy == 0.0 {
            continue;
        }
        let correlation = cross / (energy * window_energy).sqrt();
        if correlation > best.0 {
            let noise: f64 = reference
                .iter()
                .zip(window)
                .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
                .sum();
            best = (correlation, 10.0 * (energy / noise.max(1.0)).log10());
        }
    }
    best
}

/// Median best correlation and SNR over quarter-second windows, one per
/// second after the first, searching lags up to 300 ms (network plus jitter
/// buffer delay). SILK (Opus voice mode) models the spectrum rather than the
/// waveform, so its correlation floor is lower than G.711's.
fn quality(run: &Run, rate: SampleRate) -> (f64, f64) {
    let second = rate.hz() as usize;
    let window = second / 4;
    let mut correlations = Vec::new();
    let mut snrs = Vec::new();
    let mut start = second;
    while start + window + second / 2 <= run.sent.len() {
        let (correlation, snr) =
            best_match(&run.sent, &run.received, start, window, second * 3 / 10);
        correlations.push(correlation);
        snrs.push(snr);
        start += second;
    }
    correlations.sort_by(f64::total_cmp);
    snrs.sort_by(f64::total_cmp);
    (correlations[correlations.len() / 2], snrs[snrs.len() / 2])
}

fn assert_stats_add_up(run: &Run) {
    let sent = run.a.stats().stream.packets_sent;
    let b = run.b.stats();
    let accounted = b.stream.packets_received + b.stream.packets_lost;
    // Packets lost at the very end are not known to be lost (RFC 3550 A.3
    // counts up to the highest sequence number received).
    assert!(
        accounted <= sent && sent - accounted <= 3,
        "sent {sent}, received {} + lost {}",
        b.stream.packets_received,
        b.stream.packets_lost
    );
    assert!(
        b.stream.packets_lost <= run.network_lost && run.network_lost - b.stream.packets_lost <= 3
    );
    assert_eq!(b.rejected_datagrams, 0);
    assert_eq!(b.decode_errors, 0);
    let conceal_frames = run
        .kinds
        .iter()
        .filter(|k| matches!(k, FrameKind::Concealed | FrameKind::Recovered))
        .count();
    assert_eq!(b.concealed_ms, conceal_frames as u64 * 20);
    assert!(run.a.rtt().is_some(), "RTCP measured the round trip");
}

#[test]
fn pcmu_over_a_clean_path_is_faithful() {
    let run = run(
        CodecSpec::Pcmu,
        0,
        SampleRate::Hz8000,
        NetSimConfig::clean(),
        6,
        Some("*9"),
    );
    let (correlation, snr) = quality(&run, SampleRate::Hz8000);
    assert!(correlation > 0.99, "correlation {correlation}");
    assert!(snr > 25.0, "PCMU SNR {snr} dB");
    assert_stats_add_up(&run);
    let stats = run.b.stats();
    assert_eq!(stats.stream.packets_lost, 0);
    assert!(stats.stream.mos > 4.2, "MOS {}", stats.stream.mos);
    let digits: Vec<_> = run
        .events
        .iter()
        .filter_map(|event| match event {
            MediaEvent::Dtmf(digit) => Some((digit.digit, digit.duration_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(digits, [('*', 100), ('9', 100)]);
}

#[test]
fn pcmu_over_a_lossy_path_conceals_loss() {
    let run = run(
        CodecSpec::Pcmu,
        0,
        SampleRate::Hz8000,
        NetSimConfig::lossy(),
        10,
        None,
    );
    assert!(
        run.network_lost > 5,
        "the lossy profile lost {}",
        run.network_lost
    );
    assert_stats_add_up(&run);
    let stats = run.b.stats();
    assert!(stats.concealed_ms >= 20 * (run.network_lost - 3));
    assert!(stats.stream.loss_percent > 0.5);
    assert!(stats.stream.mos < run_clean_mos(), "loss lowers the MOS");
    let (correlation, _) = quality(&run, SampleRate::Hz8000);
    assert!(correlation > 0.9, "correlation {correlation}");
}

fn run_clean_mos() -> f64 {
    let run = run(
        CodecSpec::Pcmu,
        0,
        SampleRate::Hz8000,
        NetSimConfig::clean(),
        3,
        None,
    );
    run.b.stats().stream.mos
}

#[test]
fn opus_over_clean_and_lossy_paths() {
    let opus = CodecSpec::Opus(OpusConfig {
        bitrate: 48_000,
        complexity: 10,
        expected_loss_percent: 10,
        ..OpusConfig::default()
    });
    let clean = run(
        opus,
        111,
        SampleRate::Hz16000,
        NetSimConfig::clean(),
        6,
        Some("4"),
    );
    let (correlation, snr) = quality(&clean, SampleRate::Hz16000);
    eprintln!("opus clean: correlation {correlation:.3}, SNR {snr:.1} dB");
    assert!(correlation > 0.65, "Opus clean correlation {correlation}");
    assert_stats_add_up(&clean);
    assert!(clean
        .events
        .iter()
        .any(|event| matches!(event, MediaEvent::Dtmf(d) if d.digit == '4')));

    let lossy = run(
        opus,
        111,
        SampleRate::Hz16000,
        NetSimConfig::lossy(),
        10,
        None,
    );
    assert_stats_add_up(&lossy);
    let (correlation, snr) = quality(&lossy, SampleRate::Hz16000);
    eprintln!("opus lossy: correlation {correlation:.3}, SNR {snr:.1} dB");
    assert!(correlation > 0.55, "Opus lossy correlation {correlation}");
    let stats = lossy.b.stats();
    assert!(stats.concealed_ms > 0);
    assert!(
        stats.recovered_frames > 0,
        "single losses are recovered from in-band FEC"
    );
}
