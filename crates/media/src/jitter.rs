//! jitter (in progress).
