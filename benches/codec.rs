//! Criterion benchmarks of the codec hot path: one 20 ms frame per
//! iteration, through the `media::codec` traits (as the media stream calls
//! them) and, as a baseline, straight into libopus through audiopus with the
//! same settings, so the cost of the wrapper shows.
//!
//! Input is speech-like (140 Hz harmonics under a syllable envelope plus a
//! little noise), never silence, so neither DTX nor the encoder's silence
//! shortcuts skip work.

#[path = "support/audio.rs"]
mod audio;

use audio::{opus_config, raw_libopus_encoder, speech_like};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use media::codec::{AudioDecoder, AudioEncoder, CodecSpec, SampleRate, MAX_PAYLOAD_BYTES};

/// One second of input, cycled through frame by frame.
const FRAMES: usize = 50;

fn opus(c: &mut Criterion) {
    let frames = speech_like(SampleRate::Hz48000, FRAMES);
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

fn g711(c: &mut Criterion) {
    let frames = speech_like(SampleRate::Hz8000, FRAMES);
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
