//! Guards the tokio media engine end to end: two media streams talking over
//! real UDP sockets on 127.0.0.1, with RTCP on the port above RTP, DTMF both
//! ways through the handles, and final statistics that match what was sent
//! (every packet received, none lost, RTT measured by SR/RR).
//!
//! Runs in real time for about two seconds of audio.

use std::time::Duration;

use media::codec::{CodecSpec, OpusConfig, SampleRate};
use media::rtp_session::PayloadType;
use media::stream::{
    EngineConfig, FrameKind, IdleAudio, MediaConfig, MediaEngine, MediaEvent, OpenOptions,
    StreamHandle,
};

const FRAMES: usize = 100;

fn tone(rate: SampleRate, hz: f64, frame: usize) -> Vec<i16> {
    let n = rate.frame_samples();
    (0..n)
        .map(|i| {
            let t = (frame * n + i) as f64 / f64::from(rate.hz());
            (8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
        })
        .collect()
}

fn config(codec: CodecSpec, pt: u8, rate: SampleRate) -> MediaConfig {
    let placeholder = "127.0.0.1:9".parse().unwrap();
    let mut config = MediaConfig::new(codec, PayloadType::new(pt).unwrap(), placeholder);
    config.app_rate = rate;
    config.telephone_event_pt = PayloadType::new(101);
    config.rtcp_interval = Duration::from_millis(400);
    // Nothing but the tone and the digits: once both are sent the counters stand still, so
    // one side's sent count can be compared with the other's received count.
    config.idle = IdleAudio::Nothing;
    config
}

/// Plays a tone into `handle` for FRAMES frames while collecting what it
/// receives; returns the received frames that carry the tone and the DTMF digits seen.
async fn talk(
    mut handle: StreamHandle,
    hz: f64,
    dtmf: &'static str,
) -> (StreamHandle, Vec<i16>, String) {
    let rate = handle.app_rate();
    let sender = handle.outbound_sender().expect("frame channels");
    let mut inbound = handle.take_inbound().unwrap();
    let mut events = handle.take_events().unwrap();
    let producer = tokio::spawn(async move {
        for k in 0..FRAMES {
            let frame =
                media::stream::AudioFrame::new(&tone(rate, hz, k), FrameKind::Voice).unwrap();
            sender.send(frame).await.unwrap();
        }
    });
    handle.send_dtmf(dtmf).await.unwrap();
    let mut received = Vec::new();
    let mut digits = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2600);
    loop {
        tokio::select! {
            frame = inbound.recv() => {
                let frame = frame.unwrap();
                if frame.kind() == FrameKind::Voice && frame.iter().any(|s| s.unsigned_abs() > 4000) {
                    received.extend_from_slice(frame.samples());
                }
            }
            Some(event) = events.recv() => {
                if let MediaEvent::Dtmf(digit) = event {
                    digits.push(digit.digit);
                }
            }
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    producer.await.unwrap();
    (handle, received, digits)
}

/// Zero crossings per second of `pcm` at `rate`: twice the tone frequency.
fn crossings_per_second(pcm: &[i16], rate: SampleRate) -> f64 {
    let crossings = pcm.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    crossings as f64 * f64::from(rate.hz()) / pcm.len() as f64
}

async fn run(codec: CodecSpec, pt: u8, rate: SampleRate, ports: (u16, u16)) {
    let engine = MediaEngine::start(EngineConfig {
        port_min: ports.0,
        port_max: ports.1,
        workers: 2,
        ..EngineConfig::default()
    })
    .unwrap();
    let a = engine
        .open(config(codec, pt, rate), OpenOptions::default())
        .unwrap();
    let b = engine
        .open(config(codec, pt, rate), OpenOptions::default())
        .unwrap();
    a.set_remote(b.local_addr(), None).unwrap();
    b.set_remote(a.local_addr(), None).unwrap();

    let (a_result, b_result) = tokio::join!(talk(a, 400.0, "12"), talk(b, 1000.0, "#"));
    let (a, a_heard, a_digits) = a_result;
    let (b, b_heard, b_digits) = b_result;
    assert_eq!(a_digits, "#", "A receives B's digit");
    assert_eq!(b_digits, "12", "B receives A's digits");

    // Each side hears the other's tone (silence around DTMF excluded).
    assert!(
        a_heard.len() > FRAMES / 2 * rate.frame_samples(),
        "A heard {} samples",
        a_heard.len()
    );
    assert!(b_heard.len() > FRAMES / 2 * rate.frame_samples());
    let a_hz = crossings_per_second(&a_heard, rate) / 2.0;
    let b_hz = crossings_per_second(&b_heard, rate) / 2.0;
    assert!(
        (a_hz - 1000.0).abs() < 60.0,
        "A hears about 1000 Hz, got {a_hz}"
    );
    assert!(
        (b_hz - 400.0).abs() < 40.0,
        "B hears about 400 Hz, got {b_hz}"
    );

    // Everything one sent, the other received; RTCP measured the RTT.
    let a_stats = a.stats().await.unwrap();
    let b_stats = b.stats().await.unwrap();
    for (name, own, peer) in [("A", &a_stats, &b_stats), ("B", &b_stats, &a_stats)] {
        assert!(
            own.stream.packets_sent >= FRAMES as u64,
            "{name} sent {}",
            own.stream.packets_sent
        );
        let in_flight = own.stream.packets_sent - peer.stream.packets_received;
        assert!(
            in_flight <= 2,
            "{name}: sent {} received by peer {}",
            own.stream.packets_sent,
            peer.stream.packets_received
        );
        assert_eq!(own.stream.packets_lost, 0);
        assert_eq!(own.rejected_datagrams, 0);
        let rtt = own
            .stream
            .rtt_ms
            .unwrap_or_else(|| panic!("{name} measured no RTT"));
        assert!(rtt < 50.0, "{name} RTT {rtt} ms on loopback");
        assert!(own.stream.jitter_ms < 10.0);
        assert!(own.stream.mos > 4.0, "{name} MOS {}", own.stream.mos);
        assert_eq!(own.dtmf_received, peer.dtmf_sent);
    }
    let closed = a.close().await.unwrap();
    assert!(closed.stats.stream.packets_sent >= a_stats.stream.packets_sent);
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcmu_streams_over_loopback() {
    run(CodecSpec::Pcmu, 0, SampleRate::Hz8000, (41200, 41299)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_streams_over_loopback_at_16k() {
    run(
        CodecSpec::Opus(OpusConfig::default()),
        111,
        SampleRate::Hz16000,
        (41300, 41399),
    )
    .await;
}

/// The engine records both directions (caller = decoded inbound on the
/// left, agent = outbound on the right) and reports the file on close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_records_both_directions() {
    let engine = MediaEngine::start(EngineConfig {
        port_min: 41400,
        port_max: 41499,
        workers: 1,
        ..EngineConfig::default()
    })
    .unwrap();
    let writer = media::record::RecordingWriter::spawn().unwrap();
    let path = std::env::temp_dir().join(format!("dialcore-stream-{}.wav", std::process::id()));
    let recording = writer.open(&path, SampleRate::Hz8000).unwrap();
    let a = engine
        .open(
            config(CodecSpec::Pcmu, 0, SampleRate::Hz8000),
            OpenOptions {
                recording: Some(recording),
                ..OpenOptions::default()
            },
        )
        .unwrap();
    let b = engine
        .open(
            config(CodecSpec::Pcmu, 0, SampleRate::Hz8000),
            OpenOptions::default(),
        )
        .unwrap();
    a.set_remote(b.local_addr(), None).unwrap();
    b.set_remote(a.local_addr(), None).unwrap();
    for k in 0..25 {
        a.send_frame(&tone(SampleRate::Hz8000, 500.0, k))
            .await
            .unwrap();
        b.send_frame(&tone(SampleRate::Hz8000, 700.0, k))
            .await
            .unwrap();
    }
    // Let the queued frames play out (the engine runs in real time).
    tokio::time::sleep(Duration::from_millis(700)).await;
    let closed = a.close().await.unwrap();
    b.close().await.unwrap();
    let summary = closed
        .recording
        .expect("recorded")
        .expect("recording finished");
    assert!(summary.frames >= 25, "{} frames recorded", summary.frames);
    let mut reader = hound::WavReader::open(&path).unwrap();
    assert_eq!(reader.spec().channels, 2);
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let (left, right): (Vec<i16>, Vec<i16>) = samples.chunks(2).map(|p| (p[0], p[1])).unzip();
    let loud = |side: &[i16]| side.iter().any(|s| s.unsigned_abs() > 4000);
    assert!(loud(&left), "caller side holds B's tone");
    assert!(loud(&right), "agent side holds A's own tone");
    let _ = std::fs::remove_file(&path);
}
