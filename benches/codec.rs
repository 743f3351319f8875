//! Criterion benchmarks (codec): written by the engineer who owns this topic.
fn main() {}
