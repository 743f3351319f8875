//! Criterion benchmark of the jitter buffer's hot path: `jitter/push_pop`
//! is one packet in and one frame out, in steady state, with every tenth pair
//! of packets swapped (reordering), in virtual time.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use media::jitter::{JitterBuffer, JitterConfig, JitterPacket, Playout};

/// Samples per 20 ms frame at 48 kHz.
const FRAME: u32 = 960;

/// A receiver in steady state: the arrival counter and the pre-made payload.
struct Steady {
    buffer: JitterBuffer,
    t0: Instant,
    arrival: u64,
    payload: Bytes,
}

impl Steady {
    fn new() -> Self {
        Self {
            buffer: JitterBuffer::new(JitterConfig::default()).expect("default config is valid"),
            t0: Instant::now(),
            arrival: 0,
            payload: Bytes::from(vec![0x5a; 80]),
        }
    }

    /// Pushes the next arrival and pops one frame 5 ms later.
    fn step(&mut self) -> Playout {
        let i = self.arrival;
        self.arrival += 1;
        // Arrivals 10n and 10n+1 carry packets 10n+1 and 10n.
        let k = match i % 10 {
            0 => i + 1,
            1 => i - 1,
            _ => i,
        };
        let now = self.t0 + Duration::from_millis(20 * i);
        self.buffer.push(
            now,
            JitterPacket {
                ssrc: 1,
                seq: k as u16,
                timestamp: (k as u32).wrapping_mul(FRAME),
                marker: false,
                payload: self.payload.clone(),
            },
        );
        self.buffer.pop(now + Duration::from_millis(5))
    }
}

fn push_pop(c: &mut Criterion) {
    let mut steady = Steady::new();
    // Check once, before timing, that frames come out in order.
    let mut last = None;
    let mut frames = 0;
    for _ in 0..1_000 {
        if let Playout::Frame { seq, .. } = steady.step() {
            if let Some(last) = last {
                // In order; a frame may be dropped while the delay settles.
                let step = seq.wrapping_sub(last);
                assert!((1..=2).contains(&step), "{last} then {seq}");
            }
            last = Some(seq);
            frames += 1;
        }
    }
    assert!(frames >= 990, "only {frames} frames of 1000");
    let stats = steady.buffer.stats();
    assert_eq!((stats.lost, stats.late), (0, 0), "{stats:?}");

    let mut group = c.benchmark_group("jitter");
    group.bench_function("push_pop", |b| b.iter(|| black_box(steady.step())));
    group.finish();
}

criterion_group!(benches, push_pop);
criterion_main!(benches);
