//! dialcore: the root package holds end-to-end tests (`tests/`) and criterion benchmarks (`benches/`).
