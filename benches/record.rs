//! Criterion benchmarks of the call recording (`media::record`), one second of
//! a call's audio (50 frames of 20 ms, speech-like on both sides) per iteration:
//!
//! - `record/handle_write_frame_1s_*`: what the audio path pays, one
//!   `RecordingHandle::write_frame` per frame with the writer thread running
//!   behind it (writing to `/dev/null`, so that the bench fills no disk). The
//!   handle runs far faster than real time here, so every 10 minutes of audio
//!   the bench waits for the writer to catch up, outside the timing; the
//!   writer is busy meanwhile, so the wake-ups a real call's batches cost the
//!   old per-batch design are undercounted.
//! - `record/writer_1s_8k`: what the writer thread pays, the second of audio
//!   written to a real file in batches of `BATCH_FRAMES` as the handle hands
//!   them over (the file is started over every few MB, outside the timing).
//!   Most of it is the kernel's page cache; `record/writer_1s_8k_null` writes
//!   to `/dev/null` instead, which leaves the conversion and the system
//!   calls' own cost.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "support/audio.rs"]
mod audio;

use audio::speech_like;
use criterion::{criterion_group, criterion_main, Criterion};
use media::codec::SampleRate;
use media::record::{Recorder, RecordingWriter, BATCH_FRAMES};

/// One second of 20 ms frames.
const SECOND: usize = 50;

/// Seconds of audio a handle bench writes before it waits for the writer
/// thread (which, writing faster than real time, would fall behind and make
/// the handle drop frames): well within the writer's queue.
const CATCH_UP_SECONDS: u64 = 600;

/// Bytes written to the writer bench's file before it is started over.
const ROTATE_BYTES: usize = 16 << 20;

/// Both sides of one second of a call: the caller, and the agent a little later
/// in the same signal (so the two channels differ).
fn call_second(rate: SampleRate) -> (Vec<Vec<i16>>, Vec<Vec<i16>>) {
    let mut frames = speech_like(rate, 2 * SECOND);
    let agent = frames.split_off(SECOND);
    (frames, agent)
}

fn interleaved(caller: &[Vec<i16>], agent: &[Vec<i16>]) -> Vec<i16> {
    caller
        .iter()
        .zip(agent)
        .flat_map(|(left, right)| left.iter().zip(right).flat_map(|(&l, &r)| [l, r]))
        .collect()
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dialcore-bench-{}-{name}.wav", std::process::id()))
}

fn read_back(path: &Path) -> Vec<i16> {
    hound::WavReader::open(path)
        .expect("a WAV file")
        .into_samples::<i16>()
        .map(|s| s.expect("a sample"))
        .collect()
}

fn handle(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let writer = RecordingWriter::spawn().expect("writer thread");
    let mut group = c.benchmark_group("record");
    for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
        let (caller, agent) = call_second(rate);

        // Check the output once before timing.
        let path = temp_path("handle-check");
        let mut check = writer.open(&path, rate).expect("open");
        for (left, right) in caller.iter().zip(&agent) {
            check.write_frame(Some(left), Some(right)).expect("write");
        }
        let summary = runtime.block_on(check.finish()).expect("finish");
        assert_eq!(summary.frames, SECOND as u64);
        assert_eq!(read_back(&path), interleaved(&caller, &agent));
        std::fs::remove_file(&path).expect("cleanup");

        group.bench_function(
            format!("handle_write_frame_1s_{}k", rate.hz() / 1000),
            |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let seconds = left.min(CATCH_UP_SECONDS);
                        let mut handle = writer.open("/dev/null", rate).expect("open /dev/null");
                        let start = Instant::now();
                        for _ in 0..seconds {
                            for (left, right) in caller.iter().zip(&agent) {
                                handle
                                    .write_frame(Some(black_box(left)), Some(black_box(right)))
                                    .expect("the queue holds CATCH_UP_SECONDS");
                            }
                        }
                        timed += start.elapsed();
                        // Waits for the writer to catch up, outside the timing.
                        let summary = runtime.block_on(handle.finish()).expect("finish");
                        assert_eq!(summary.dropped_frames, 0);
                        left -= seconds;
                    }
                    timed
                })
            },
        );
    }
    group.finish();
}

fn writer(c: &mut Criterion) {
    let rate = SampleRate::Hz8000;
    let (caller, agent) = call_second(rate);
    let second = interleaved(&caller, &agent);
    assert_eq!(SECOND % BATCH_FRAMES, 0, "a second is whole batches");
    let batch = second.len() / (SECOND / BATCH_FRAMES);
    let mut scratch = Vec::new();
    let path = temp_path("writer");

    // Check the output once before timing.
    let mut check = Recorder::create(&path, rate).expect("create");
    for samples in second.chunks(batch) {
        check
            .write_interleaved(samples, &mut scratch)
            .expect("write");
    }
    assert_eq!(check.finalize().expect("finalize").frames, SECOND as u64);
    assert_eq!(read_back(&path), second);

    let mut group = c.benchmark_group("record");
    for (name, path) in [
        ("writer_1s_8k", path.as_path()),
        ("writer_1s_8k_null", Path::new("/dev/null")),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut recorder = Recorder::create(path, rate).expect("create");
                let mut written = 0;
                for _ in 0..iters {
                    if written >= ROTATE_BYTES {
                        recorder.finalize().expect("finalize");
                        recorder = Recorder::create(path, rate).expect("create");
                        written = 0;
                    }
                    let start = Instant::now();
                    for samples in second.chunks(batch) {
                        recorder
                            .write_interleaved(black_box(samples), &mut scratch)
                            .expect("write");
                    }
                    timed += start.elapsed();
                    written += 2 * second.len();
                }
                recorder.finalize().expect("finalize");
                timed
            })
        });
    }
    group.finish();
    std::fs::remove_file(&path).expect("cleanup");
}

criterion_group!(benches, handle, writer);
criterion_main!(benches);
