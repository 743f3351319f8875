//! Criterion benchmarks of the whole per-frame media path of one call leg,
//! through the sans-IO `MediaStream` core: one iteration is one 20 ms frame
//! in both directions, as the engine runs it on every tick:
//!
//! - `pipeline/opus_frame`: RTP datagram in -> parse -> jitter buffer ->
//!   Opus decode (48 kHz) -> Opus encode of the application's frame -> RTP
//!   datagram out;
//! - `pipeline/raw_opus_decode_encode`: the baseline, libopus alone through
//!   audiopus with the same settings: decode one packet, encode one frame;
//! - `pipeline/opus16_frame`, `pipeline/raw_opus16_decode_encode`: the same two
//!   with the codec at 16 kHz, as phone calls run it (`CodecSpec::for_calls`);
//! - `pipeline/pcmu_frame`: `opus_frame` for G.711 mu-law at 8 kHz.
//!
//! The incoming datagrams come from a second stream's packets, re-stamped
//! with running sequence numbers and timestamps and split off a pooled
//! `BytesMut` as the engine does, so virtual time advances 20 ms per
//! iteration and the jitter buffer sees a steady stream. Input audio is
//! speech-like (harmonics under a syllable envelope plus a little noise), so
//! no codec shortcut for silence kicks in. Each benchmark checks its output
//! once before timing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
#[path = "support/audio.rs"]
mod audio;

use audio::{audiopus_rate, opus_config_at, raw_libopus_encoder_at, speech_like};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use media::codec::{CodecSpec, SampleRate};
use media::rtcp::NtpTime;
use media::rtp_session::{PayloadType, RtpSender, SeqNo, Ssrc};
use media::stream::{FrameKind, MediaConfig, MediaStream};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// One second of input, cycled through frame by frame.
const FRAMES: usize = 50;
const FRAME: Duration = Duration::from_millis(20);

/// The payloads a peer would send for `frames`.
fn peer_payloads(codec: CodecSpec, frames: &[Vec<i16>]) -> Vec<Vec<u8>> {
    let mut encoder = codec.make_encoder().expect("encoder");
    let mut out = [0u8; 1500];
    frames
        .iter()
        .map(|frame| {
            let len = encoder.encode(frame, &mut out).expect("encode");
            assert!(len > 10, "speech-like input gives a real payload");
            out[..len].to_vec()
        })
        .collect()
}

/// A receiving-and-sending stream plus the peer that feeds it.
struct Pipeline {
    stream: MediaStream,
    peer: RtpSender,
    payloads: Vec<Vec<u8>>,
    outgoing: Vec<Vec<i16>>,
    pool: BytesMut,
    scratch: [u8; 1500],
    pt: PayloadType,
    step: u32,
    t0: Instant,
    k: u32,
    source: SocketAddr,
}

impl Pipeline {
    fn new(codec: CodecSpec, pt: u8, rate: SampleRate) -> Pipeline {
        let frames = speech_like(rate, FRAMES);
        let payloads = peer_payloads(codec, &frames);
        let remote: SocketAddr = "127.0.0.1:30000".parse().expect("address");
        let pt = PayloadType::new(pt).expect("payload type");
        let mut config = MediaConfig::new(codec, pt, remote);
        config.app_rate = rate;
        let t0 = Instant::now();
        let stream = MediaStream::new(config, t0, NtpTime(1 << 40), &mut StdRng::seed_from_u64(1))
            .expect("stream");
        Pipeline {
            stream,
            peer: RtpSender::with_initial(Ssrc(0x5eed), SeqNo(65000), 1 << 31, codec.clock_rate()),
            payloads,
            outgoing: frames,
            pool: BytesMut::with_capacity(64 * 1024),
            scratch: [0; 1500],
            pt,
            step: codec.clock_rate() / 50,
            t0,
            k: 0,
            source: remote,
        }
    }

    /// The next datagram from the peer, split off the pool.
    fn datagram(&mut self, now: Instant) -> Bytes {
        let payload = &self.payloads[self.k as usize % FRAMES];
        let len = self
            .peer
            .build(now, payload, self.step, false, self.pt, &mut self.scratch)
            .expect("peer packet");
        if self.pool.capacity() < len {
            self.pool.reserve(64 * 1024);
        }
        self.pool.extend_from_slice(&self.scratch[..len]);
        self.pool.split().freeze()
    }

    /// One 20 ms frame both ways; returns the inbound frame kind and the
    /// length of the RTP datagram sent.
    fn frame(&mut self) -> (FrameKind, usize) {
        let now = self.t0 + FRAME * self.k;
        let datagram = self.datagram(now);
        self.stream
            .handle_datagram(now, self.source, datagram)
            .expect("accepted");
        let outgoing = &self.outgoing[self.k as usize % FRAMES];
        let kind = self.stream.tick(now, Some(outgoing)).expect("tick");
        let mut sent = 0;
        while let Some(transmit) = self.stream.poll_transmit() {
            sent = black_box(transmit.payload).len().max(sent);
        }
        self.k += 1;
        (kind, sent)
    }

    /// Runs until playout has started and checks that frames are decoded
    /// and packets sent.
    fn warm_up(&mut self) {
        for _ in 0..100 {
            self.frame();
        }
        for _ in 0..50 {
            let (kind, sent) = self.frame();
            assert_eq!(kind, FrameKind::Voice, "steady state plays decoded voice");
            assert!(sent > 12 + 10, "an RTP packet with a real payload goes out");
        }
        assert!(
            self.stream.frame().iter().any(|s| s.unsigned_abs() > 1000),
            "decoded audio is audible"
        );
    }
}

fn pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    opus_pair(
        &mut group,
        SampleRate::Hz48000,
        "opus_frame",
        "raw_opus_decode_encode",
    );
    // As phone calls run it (`CodecSpec::for_calls`): the codec at the 16 kHz of the
    // application side.
    opus_pair(
        &mut group,
        SampleRate::Hz16000,
        "opus16_frame",
        "raw_opus16_decode_encode",
    );
    let mut pcmu = Pipeline::new(CodecSpec::Pcmu, 0, SampleRate::Hz8000);
    pcmu.warm_up();
    group.bench_function("pcmu_frame", |b| b.iter(|| pcmu.frame()));
    group.finish();
}

/// `frame`: the pipeline of Opus running at `rate`; `raw`: libopus alone with the same
/// settings (decode one packet, encode one frame), the baseline.
fn opus_pair(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rate: SampleRate,
    frame: &str,
    raw: &str,
) {
    let mut opus = Pipeline::new(CodecSpec::Opus(opus_config_at(rate)), 111, rate);
    opus.warm_up();
    group.bench_function(frame, |b| b.iter(|| opus.frame()));

    let samples = rate.frame_samples();
    let frames = speech_like(rate, FRAMES);
    let payloads = peer_payloads(CodecSpec::Opus(opus_config_at(rate)), &frames);
    let encoder = raw_libopus_encoder_at(rate);
    let mut decoder = audiopus::coder::Decoder::new(audiopus_rate(rate), audiopus::Channels::Mono)
        .expect("raw decoder");
    let mut pcm = vec![0i16; samples];
    let mut out = [0u8; 1500];
    let mut raw_frame = |index: usize| {
        let packet = audiopus::packet::Packet::try_from(&payloads[index][..]).expect("packet");
        let signals = audiopus::MutSignals::try_from(&mut pcm[..]).expect("signals");
        let decoded = decoder
            .decode(Some(packet), signals, false)
            .expect("raw decode");
        let encoded = encoder
            .encode(&frames[index], &mut out)
            .expect("raw encode");
        (decoded, encoded)
    };
    let (decoded, encoded) = raw_frame(0);
    assert!(
        decoded == samples && encoded > 10,
        "raw libopus decodes and encodes"
    );
    let mut index = 0;
    group.bench_function(raw, |b| {
        b.iter(|| {
            index = (index + 1) % FRAMES;
            black_box(raw_frame(index))
        })
    });
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
