//! Criterion benchmarks (jitter): written by the engineer who owns this topic.
fn main() {}
