//! RFC 3261 section 17 transactions (in progress).
