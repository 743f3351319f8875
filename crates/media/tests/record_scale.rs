//! Guards what recording costs a server at scale: 1000 calls recorded at once,
//! their frames written in real time by one thread on 20 ms ticks (as the media
//! worker does), to files on disk. Measures the CPU of every thread of the
//! process (the ticking thread and the writer thread, system calls included)
//! and the resident memory the recordings add, per call. The goal for the
//! whole server is 1/2000 of a core and 128 kB per call.
//!
//! Measured on the shared 2-core VM (2026-12-03): about 1/12 000 core and
//! 12.9 kB per call (the design of a second-long batch per call, hound and a
//! BufWriter per file: 1/12 900 core, 158 kB). Half of the CPU is the kernel's
//! page-cache write path, whose cost is mostly per `write`: batches of 25
//! frames measured 1/15 700 core and 31.7 kB, of 50 frames 1/21 500 and 62.9 kB.
//! On a busier machine the writer thread lags more behind its 50 ms drains and
//! more batches are in flight: 1/10 200 core and 30.5 kB at a load of 4.5. The
//! bounds below catch a regression (a write per frame would be some 1/4 000
//! core, a 64 KiB buffer per file 70 kB more), not the goal.
//!
//! `cargo test --release -p media --test record_scale -- --ignored --nocapture`

use std::time::{Duration, Instant};

use media::codec::SampleRate;
use media::record::RecordingWriter;

const CALLS: usize = 1000;
const WARM_UP: Duration = Duration::from_secs(2);
const MEASURED: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(20);

/// CPU time of all the process's live threads.
fn process_cpu() -> Duration {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc") {
        let path = task.expect("task").path().join("schedstat");
        // A thread may have exited since the listing.
        if let Ok(stat) = std::fs::read_to_string(path) {
            let on_cpu: u64 = stat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse().ok())
                .expect("schedstat starts with ns on CPU");
            total += Duration::from_nanos(on_cpu);
        }
    }
    total
}

fn resident_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in kB")
}

#[test]
#[ignore = "a 12 s measurement writing 400 MB; run in release with --ignored --nocapture"]
fn a_thousand_recordings_cost_little_cpu_and_a_batch_of_memory_per_call() {
    let rate = SampleRate::Hz8000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let directory =
        std::env::temp_dir().join(format!("dialcore-record-scale-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("temp dir");
    let writer = RecordingWriter::spawn().expect("writer thread");
    let caller: Vec<i16> = (0..rate.frame_samples()).map(|i| (i * 97) as i16).collect();
    let agent: Vec<i16> = caller.iter().map(|s| s.wrapping_neg()).collect();

    let resident_before = resident_kb();
    let mut handles: Vec<_> = (0..CALLS)
        .map(|call| {
            writer
                .open(directory.join(format!("{call}.wav")), rate)
                .expect("open")
        })
        .collect();
    let start = Instant::now();
    let mut next_tick = start;
    let mut ticks = 0u64;
    let mut measured_from = None;
    let mut resident_peak = 0;
    loop {
        let now = Instant::now();
        if measured_from.is_none() && now >= start + WARM_UP {
            measured_from = Some((now, process_cpu(), ticks));
        }
        if let Some((from, _, _)) = measured_from {
            if now >= from + MEASURED {
                break;
            }
        }
        for handle in &mut handles {
            handle
                .write_frame(Some(&caller), Some(&agent))
                .expect("the writer keeps up");
        }
        ticks += 1;
        if ticks.is_multiple_of(25) {
            resident_peak = resident_peak.max(resident_kb());
        }
        next_tick += TICK;
        std::thread::sleep(next_tick.saturating_duration_since(Instant::now()));
    }
    let (from, cpu_from, ticks_from) = measured_from.expect("warmed up");
    let cpu = process_cpu() - cpu_from;
    let wall = from.elapsed();
    let core_per_call = cpu.as_secs_f64() / wall.as_secs_f64() / CALLS as f64;
    let resident_per_call = resident_peak.saturating_sub(resident_before) as f64 / CALLS as f64;
    println!(
        "{CALLS} recordings at 8 kHz, {} ticks in {wall:?}: {cpu:?} of CPU, 1/{:.0} core per call; \
         resident +{resident_per_call:.1} kB per call (peak {resident_peak} kB, {resident_before} kB before)",
        ticks - ticks_from,
        1.0 / core_per_call,
    );

    runtime.block_on(async {
        let mut finishing = tokio::task::JoinSet::new();
        for handle in handles {
            finishing.spawn(handle.finish());
        }
        while let Some(summary) = finishing.join_next().await {
            let summary = summary.expect("joined").expect("finish");
            assert_eq!(summary.frames, ticks);
            assert_eq!(summary.dropped_frames, 0);
        }
    });
    std::fs::remove_dir_all(&directory).expect("cleanup");
    assert!(
        core_per_call < 1.0 / 6_000.0,
        "recording costs 1/{:.0} core per call",
        1.0 / core_per_call
    );
    assert!(
        resident_per_call < 48.0,
        "recording holds {resident_per_call:.1} kB per call"
    );
}
