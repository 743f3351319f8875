//! Criterion benchmarks (sip): written by the engineer who owns this topic.
fn main() {}
