//! Guards the "no allocation per packet" promise of the media stream: over
//! 1000 steady-state frames, a sender `MediaStream` (encode, RTP out, RTCP
//! reports) and a receiver (RTP in, jitter buffer, decode, resample) make no
//! heap allocation, for G.711 with resampling to 16 kHz and for Opus.
//!
//! The allocations are counted by dhat's global allocator in testing mode.
//! Datagrams are handed over as shared `Bytes` made outside the counted
//! sections (the engine splits them off a pooled `BytesMut`, which is
//! shared from the start). Received RTCP is not part of the loop: parsing a
//! report (every few seconds) allocates its packet list.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::codec::{CodecSpec, OpusConfig, SampleRate};
use media::rtcp::NtpTime;
use media::rtp_session::PayloadType;
use media::stream::{Component, FrameKind, MediaConfig, MediaStream};
use rand::rngs::StdRng;
use rand::SeedableRng;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const FRAME: Duration = Duration::from_millis(20);
const WARM_UP: u32 = 200;
const MEASURED: u32 = 1000;

fn blocks() -> u64 {
    dhat::HeapStats::get().total_blocks
}

/// Allocations made by the two streams over `MEASURED` frames after a
/// warm-up, and the number of voice frames the receiver played.
fn steady_state_allocations(codec: CodecSpec, pt: u8, rate: SampleRate) -> (u64, u32) {
    let remote: SocketAddr = "127.0.0.1:30000".parse().unwrap();
    let source: SocketAddr = "127.0.0.1:31000".parse().unwrap();
    let mut config = MediaConfig::new(codec, PayloadType::new(pt).unwrap(), remote);
    config.app_rate = rate;
    config.rtcp_interval = Duration::from_secs(1);
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(9);
    let mut sender = MediaStream::new(config.clone(), t0, NtpTime(1 << 40), &mut rng).unwrap();
    let mut receiver = MediaStream::new(config, t0, NtpTime(1 << 40), &mut rng).unwrap();
    let samples = rate.frame_samples();
    let tone: Vec<Vec<i16>> = (0..50)
        .map(|k| {
            (0..samples)
                .map(|i| {
                    let t = (k * samples + i) as f64 / f64::from(rate.hz());
                    (6000.0 * (2.0 * std::f64::consts::PI * 300.0 * t).sin()) as i16
                })
                .collect()
        })
        .collect();
    let mut datagram = [0u8; 1500];
    let mut allocations = 0;
    let mut voice = 0;
    for k in 0..WARM_UP + MEASURED {
        let now = t0 + FRAME * k;
        let before = blocks();
        sender.tick(now, Some(&tone[k as usize % 50])).unwrap();
        let mut len = 0;
        while let Some(transmit) = sender.poll_transmit() {
            if transmit.component == Component::Rtp {
                len = transmit.payload.len();
                datagram[..len].copy_from_slice(transmit.payload);
            }
        }
        let sent = blocks() - before;

        // Outside the count: the datagram as the engine would hand it over.
        let bytes = Bytes::copy_from_slice(&datagram[..len]);
        drop(bytes.clone()); // now shared: slicing it no longer allocates

        let before = blocks();
        receiver.handle_datagram(now, source, bytes).unwrap();
        let kind = receiver.tick(now, None).unwrap();
        while receiver.poll_transmit().is_some() {}
        let received = blocks() - before;
        if k >= WARM_UP {
            allocations += sent + received;
            voice += u32::from(kind == FrameKind::Voice);
        }
    }
    (allocations, voice)
}

#[test]
fn steady_state_makes_no_allocation() {
    let _profiler = dhat::Profiler::builder().testing().build();
    for (name, codec, pt, rate) in [
        ("PCMU 8 kHz", CodecSpec::Pcmu, 0, SampleRate::Hz8000),
        ("PCMU to 16 kHz", CodecSpec::Pcmu, 0, SampleRate::Hz16000),
        (
            "Opus 48 kHz",
            CodecSpec::Opus(OpusConfig::default()),
            111,
            SampleRate::Hz48000,
        ),
        (
            "Opus 16 kHz",
            CodecSpec::Opus(OpusConfig::default()),
            111,
            SampleRate::Hz16000,
        ),
    ] {
        let (allocations, voice) = steady_state_allocations(codec, pt, rate);
        assert!(voice >= MEASURED - 5, "{name}: {voice} voice frames");
        assert_eq!(
            allocations, 0,
            "{name}: {allocations} allocations over {MEASURED} frames"
        );
    }
}
