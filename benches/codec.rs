//! Criterion benchmarks of the codec hot path: one 20 ms frame per
//! iteration, through the `media::codec` traits (as the media stream calls
//! them) and, as a baseline, straight into libopus through audiopus with the
//! same settings, so the cost of the wrapper shows.
//!
//! Input is speech-like (140 Hz harmonics under a syllable envelope plus a
//! little noise), never silence, so neither DTX nor the encoder's silence
//! shortcuts skip work.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use media::codec::{
    AudioDecoder, AudioEncoder, CodecSpec, OpusConfig, SampleRate, MAX_PAYLOAD_BYTES,
};

/// One second of input, cycled through frame by frame.
const FRAMES: usize = 50;

fn speech_like(rate: SampleRate) -> Vec<Vec<i16>> {
    let hz = f64::from(rate.hz());
    let tau = 2.0 * std::f64::consts::PI;
    let mut noise_state: u32 = 0x1234_5678;
    let samples: Vec<i16> = (0..FRAMES * rate.frame_samples())
        .map(|n| {
            let t = n as f64 / hz;
            let envelope = 0.55 + 0.45 * (tau * 3.0 * t).sin();
            let voiced: f64 = (1..=12)
                .map(|k| (tau * 140.0 * f64::from(k) * t).sin() / f64::from(k))
                .sum();
            noise_state = noise_state
                .wrapping_mul(1_664_525)
                .wrapping_add(1_013_904_223);
            let noise = f64::from((noise_state >> 16) as i16) / 32768.0;
            (envelope * 7000.0 * voiced + 300.0 * noise) as i16
        })
        .collect();
    samples
        .chunks(rate.frame_samples())
        .map(<[i16]>::to_vec)
        .collect()
}

fn opus_config() -> OpusConfig {
    OpusConfig {
        sample_rate: SampleRate::Hz48000,
        bitrate: 32_000,
        fec: true,
        dtx: false,
        complexity: 5,
        expected_loss_percent: 5,
    }
}

fn opus(c: &mut Criterion) {
    let frames = speech_like(SampleRate::Hz48000);
    let spec = CodecSpec::Opus(opus_config());
    let mut group = c.benchmark_group("opus");

    // Check the outputs once before timing.
    let mut encoder = spec.make_encoder().expect("opus encoder");
    let mut decoder = spec.make_decoder().expect("opus decoder");
    let mut payload = [0u8; MAX_PAYLOAD_BYTES];
    let mut pcm = vec![0i16; 960];
    let packets: Vec<Vec<u8>> = frames
        .iter()
        .map(|frame| {
            let len = encoder.encode(frame, &mut payload).expect("encode");
            assert!(len > 10, "speech-like input must not be DTX'd");
            assert_eq!(
                decoder.decode(&payload[..len], &mut pcm).expect("decode"),
                960
            );
            payload[..len].to_vec()
        })
        .collect();
    assert!(
        pcm.iter().any(|&s| s.unsigned_abs() > 1000),
        "decoder output is audible"
    );

    let mut encoder = spec.make_encoder().expect("opus encoder");
    let mut index = 0;
    group.bench_function("encode_48k_20ms", |b| {
        b.iter(|| {
            index = (index + 1) % FRAMES;
            black_box(
                encoder
                    .encode(black_box(&frames[index]), &mut payload)
                    .expect("encode"),
            )
        })
    });

    let mut decoder = spec.make_decoder().expect("opus decoder");
    let mut index = 0;
    group.bench_function("decode_48k_20ms", |b| {
        b.iter(|| {
            index = (index + 1) % FRAMES;
            black_box(
                decoder
                    .decode(black_box(&packets[index]), &mut pcm)
                    .expect("decode"),
            )
        })
    });

    let raw = raw_libopus_encoder();
    let len = raw.encode(&frames[0], &mut payload).expect("raw encode");
    assert!(len > 10, "raw libopus encodes the same input");
    let mut index = 0;
    group.bench_function("raw_libopus_encode_48k_20ms", |b| {
        b.iter(|| {
            index = (index + 1) % FRAMES;
            black_box(
                raw.encode(black_box(&frames[index]), &mut payload)
                    .expect("raw encode"),
            )
        })
    });
    group.finish();
}

/// libopus through audiopus with the settings of [`opus_config`].
fn raw_libopus_encoder() -> audiopus::coder::Encoder {
    let config = opus_config();
    let mut encoder = audiopus::coder::Encoder::new(
        audiopus::SampleRate::Hz48000,
        audiopus::Channels::Mono,
        audiopus::Application::Voip,
    )
    .expect("raw encoder");
    encoder
        .set_complexity(config.complexity)
        .expect("complexity");
    encoder.set_inband_fec(config.fec).expect("fec");
    encoder.set_dtx(config.dtx).expect("dtx");
    encoder
        .set_bitrate(audiopus::Bitrate::BitsPerSecond(config.bitrate as i32))
        .expect("bitrate");
    encoder
        .set_packet_loss_perc(config.expected_loss_percent)
        .expect("loss");
    encoder
}

fn g711(c: &mut Criterion) {
    let frames = speech_like(SampleRate::Hz8000);
    let spec = CodecSpec::Pcmu;
    let mut encoder: Box<dyn AudioEncoder + Send> = spec.make_encoder().expect("pcmu encoder");
    let mut decoder: Box<dyn AudioDecoder + Send> = spec.make_decoder().expect("pcmu decoder");
    let mut payload = [0u8; MAX_PAYLOAD_BYTES];
    let mut pcm = [0i16; 160];

    // Check once: mu-law keeps every sample within its quantisation step.
    let len = encoder.encode(&frames[7], &mut payload).expect("encode");
    assert_eq!(
        decoder.decode(&payload[..len], &mut pcm).expect("decode"),
        160
    );
    for (&original, &decoded) in frames[7].iter().zip(&pcm) {
        let error = (i32::from(original) - i32::from(decoded)).abs();
        assert!(
            error <= i32::from(original).abs() / 16 + 16,
            "{original} -> {decoded}"
        );
    }

    let mut group = c.benchmark_group("g711");
    let mut index = 0;
    group.bench_function("pcmu_encode_decode_20ms", |b| {
        b.iter(|| {
            index = (index + 1) % FRAMES;
            let len = encoder
                .encode(black_box(&frames[index]), &mut payload)
                .expect("encode");
            black_box(decoder.decode(&payload[..len], &mut pcm).expect("decode"))
        })
    });
    group.finish();
}

criterion_group!(benches, opus, g711);
criterion_main!(benches);
