//! Guards the engine's central claim: a couple of worker tasks drive
//! hundreds of streams (no task per stream) over real sockets without
//! losing their pace. 300 PCMU stream pairs (600 streams, 1200 sockets)
//! talk over 127.0.0.1 for about a second and a half; every stream must
//! receive its peer's packets with no loss. Prints the CPU time the process
//! spent per stream and frame (Linux `/proc/self/stat`), the figure that
//! BENCHMARKS.md turns into streams per core.
//!
//! A load test, so not part of the suite: zero loss over 1200 sockets says
//! nothing when a debug build shares two cores with other work (the kernel
//! drops datagrams from full socket buffers). Run it alone, in release:
//! `cargo test --release -p media --test stream_scale -- --ignored --nocapture`.

use std::time::Duration;

use media::codec::CodecSpec;
use media::rtp_session::PayloadType;
use media::stream::{EngineConfig, MediaConfig, MediaEngine, OpenOptions};

const PAIRS: usize = 300;

/// User plus system CPU time of this process, in clock ticks (1/100 s).
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: run alone in release with --ignored (see the module docs)"]
async fn two_workers_drive_six_hundred_streams() {
    let engine = MediaEngine::start(EngineConfig {
        port_min: 42000,
        port_max: 44999,
        workers: 2,
        ..EngineConfig::default()
    })
    .unwrap();
    let placeholder = "127.0.0.1:9".parse().unwrap();
    let mut config = MediaConfig::new(CodecSpec::Pcmu, PayloadType::PCMU, placeholder);
    config.rtcp_mux = true;
    let mut handles = Vec::new();
    for _ in 0..PAIRS {
        let a = engine.open(config.clone(), OpenOptions::default()).unwrap();
        let b = engine.open(config.clone(), OpenOptions::default()).unwrap();
        a.set_remote(b.local_addr(), None).unwrap();
        b.set_remote(a.local_addr(), None).unwrap();
        handles.push(a);
        handles.push(b);
    }
    // Drain inbound frames so the channels never fill (the engine would
    // drop frames, not stall, but a real application reads them).
    let mut readers = Vec::new();
    for handle in &mut handles {
        let mut inbound = handle.take_inbound().unwrap();
        readers.push(tokio::spawn(async move {
            let mut frames = 0u32;
            while inbound.recv().await.is_some() {
                frames += 1;
            }
            frames
        }));
    }
    let cpu_before = cpu_ticks();
    let run = Duration::from_millis(1500);
    tokio::time::sleep(run).await;
    let cpu_after = cpu_ticks();

    let mut lost = 0;
    let mut min_received = u64::MAX;
    for handle in &handles {
        let stats = handle.stats().await.unwrap();
        lost += stats.stream.packets_lost;
        min_received = min_received.min(stats.stream.packets_received);
    }
    let frames = (run.as_millis() / 20) as u64;
    assert_eq!(lost, 0, "no stream lost a packet");
    assert!(
        min_received >= frames * 2 / 3,
        "every stream kept pace: the slowest received {min_received} of about {frames}"
    );
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let cpu_us = (after - before) * 10_000;
        let stream_frames = frames * handles.len() as u64;
        eprintln!(
            "engine: {} streams, {} ms CPU over {} ms, {:.2} us CPU per stream-frame",
            handles.len(),
            cpu_us / 1000,
            run.as_millis(),
            cpu_us as f64 / stream_frames as f64
        );
    }
    for handle in handles {
        handle.close().await.unwrap();
    }
    for reader in readers {
        assert!(reader.await.unwrap() > 0);
    }
}
