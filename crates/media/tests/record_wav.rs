//! Guards the call recording format: a stereo WAV, caller on the left and
//! agent on the right, at the recording's rate, with missing frames from
//! either side written as silence so both channels keep the same timeline,
//! both through the blocking `Recorder` and the non-blocking writer thread.

use std::path::PathBuf;

use media::codec::SampleRate;
use media::record::{Recorder, RecordingWriter, BATCH_FRAMES};

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "dialcore-record-test-{}-{name}.wav",
        std::process::id()
    ))
}

/// A frame whose samples encode the side and frame index, so each sample
/// read back can be traced to where it came from.
fn marked_frame(rate: SampleRate, side: i16, index: usize) -> Vec<i16> {
    vec![side * 1000 + (index % 500) as i16; rate.frame_samples()]
}

fn read_back(path: &PathBuf) -> (hound::WavSpec, Vec<i16>, Vec<i16>) {
    let mut reader = hound::WavReader::open(path).expect("readable WAV");
    let spec = reader.spec();
    let samples: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.expect("valid sample"))
        .collect();
    let left = samples.iter().step_by(2).copied().collect();
    let right = samples.iter().skip(1).step_by(2).copied().collect();
    (spec, left, right)
}

#[test]
fn blocking_recorder_writes_caller_left_agent_right() {
    for rate in [SampleRate::Hz8000, SampleRate::Hz16000] {
        let path = temp_path(&format!("blocking-{}", rate.hz()));
        let mut recorder = Recorder::create(&path, rate).expect("create");
        for i in 0..10 {
            recorder
                .write_frame(
                    Some(&marked_frame(rate, 1, i)),
                    Some(&marked_frame(rate, -1, i)),
                )
                .expect("write");
        }
        let summary = recorder.finalize().expect("finalize");
        assert_eq!(summary.frames, 10);

        let (spec, left, right) = read_back(&path);
        assert_eq!(spec.channels, 2);
        assert_eq!(spec.sample_rate, rate.hz());
        assert_eq!(spec.bits_per_sample, 16);
        assert_eq!(left.len(), 10 * rate.frame_samples());
        assert_eq!(right.len(), left.len());
        assert!(left.iter().all(|&s| s > 0), "caller on the left");
        assert!(right.iter().all(|&s| s < 0), "agent on the right");
        std::fs::remove_file(path).expect("cleanup");
    }
}

#[tokio::test]
async fn writer_thread_keeps_channels_aligned_across_gaps() {
    let rate = SampleRate::Hz16000;
    let writer = RecordingWriter::spawn().expect("writer thread");
    let path = temp_path("threaded");
    let mut handle = writer.open(&path, rate).expect("open");
    // More than two batches, with each side missing on different ticks.
    let ticks = 2 * BATCH_FRAMES + 7;
    for i in 0..ticks {
        let caller = (i % 3 != 0).then(|| marked_frame(rate, 1, i));
        let agent = (i % 5 != 0).then(|| marked_frame(rate, 2, i));
        handle
            .write_frame(caller.as_deref(), agent.as_deref())
            .expect("non-blocking write");
    }
    let summary = handle.finish().await.expect("finish");
    assert_eq!(summary.frames, ticks as u64);
    assert_eq!(summary.dropped_frames, 0);
    assert_eq!(summary.path, path);

    let (spec, left, right) = read_back(&path);
    assert_eq!((spec.channels, spec.sample_rate), (2, 16000));
    assert_eq!(left.len(), ticks * rate.frame_samples());
    assert_eq!(right.len(), left.len());
    for (i, (left, right)) in left
        .chunks(rate.frame_samples())
        .zip(right.chunks(rate.frame_samples()))
        .enumerate()
    {
        let expect_left = if i % 3 != 0 {
            1000 + (i % 500) as i16
        } else {
            0
        };
        let expect_right = if i % 5 != 0 {
            2000 + (i % 500) as i16
        } else {
            0
        };
        assert!(left.iter().all(|&s| s == expect_left), "tick {i} left");
        assert!(right.iter().all(|&s| s == expect_right), "tick {i} right");
    }
    std::fs::remove_file(path).expect("cleanup");
}

#[tokio::test]
async fn dropped_handle_still_finalizes_its_file() {
    let rate = SampleRate::Hz8000;
    let writer = RecordingWriter::spawn().expect("writer thread");
    let path = temp_path("dropped");
    let mut handle = writer.open(&path, rate).expect("open");
    for i in 0..3 {
        handle
            .write_frame(Some(&marked_frame(rate, 1, i)), None)
            .expect("write");
    }
    drop(handle);
    // A second recording on the same thread finishes after the first one's
    // close command, so the first file is complete once this returns.
    let probe = writer.open(temp_path("probe"), rate).expect("open probe");
    let probe_summary = probe.finish().await.expect("finish probe");
    std::fs::remove_file(probe_summary.path).expect("cleanup probe");

    let (_, left, right) = read_back(&path);
    assert_eq!(left.len(), 3 * 160);
    assert!(right.iter().all(|&s| s == 0));
    std::fs::remove_file(path).expect("cleanup");
}
