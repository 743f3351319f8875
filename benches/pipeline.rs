//! Criterion benchmarks (pipeline): written by the engineer who owns this topic.
fn main() {}
