//! record (in progress).
