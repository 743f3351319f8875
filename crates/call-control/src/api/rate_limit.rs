//! Per-API-key rate limiting: a fixed one-minute window that opens at a key's first request.
//!
//! The limiter never reads the clock: callers pass the current wall time, so tests are exact.
//! Keys are remembered by their SHA-256 digest, never in plain text.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};
use dashmap::DashMap;
use sha2::{Digest, Sha256};

/// Length of one rate-limit window.
pub const WINDOW: TimeDelta = TimeDelta::seconds(60);
/// Closed windows are forgotten once every this many checks.
const PURGE_EVERY: u64 = 4096;

/// Counts requests per API key and refuses those beyond the limit of the current window.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    windows: DashMap<[u8; 32], Window>,
    checks: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: DateTime<Utc>,
    count: u32,
}

/// The state of a key's window after a request was counted or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStatus {
    /// Requests allowed per window.
    pub limit: u32,
    /// Requests still allowed in the current window.
    pub remaining: u32,
    /// When the current window closes and the count starts again.
    pub reset_at: DateTime<Utc>,
}

/// A request refused because its key used up the current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit of {limit} requests per minute reached; retry after {reset_at}")]
pub struct RateLimited {
    /// Requests allowed per window.
    pub limit: u32,
    /// When the window closes.
    pub reset_at: DateTime<Utc>,
}

impl RateLimiter {
    /// A limiter allowing `limit_per_minute` requests per key and window (0 is treated as 1).
    pub fn new(limit_per_minute: u32) -> RateLimiter {
        RateLimiter {
            limit: limit_per_minute.max(1),
            windows: DashMap::new(),
            checks: AtomicU64::new(0),
        }
    }

    /// Requests allowed per key and minute.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Counts one request of `api_key` at `now`, or refuses it when the window is used up.
    pub fn check(&self, api_key: &str, now: DateTime<Utc>) -> Result<RateStatus, RateLimited> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1 {
            self.purge(now);
        }
        let digest: [u8; 32] = Sha256::digest(api_key.as_bytes()).into();
        let mut window = self.windows.entry(digest).or_insert(Window {
            start: now,
            count: 0,
        });
        if now >= window.start + WINDOW || now < window.start {
            *window = Window {
                start: now,
                count: 0,
            };
        }
        let reset_at = window.start + WINDOW;
        if window.count >= self.limit {
            return Err(RateLimited {
                limit: self.limit,
                reset_at,
            });
        }
        window.count += 1;
        Ok(RateStatus {
            limit: self.limit,
            remaining: self.limit - window.count,
            reset_at,
        })
    }

    /// Forgets windows that closed before `now` (bounded memory for long-running services).
    pub fn purge(&self, now: DateTime<Utc>) {
        self.windows.retain(|_, window| window.start + WINDOW > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
            .expect("valid literal")
            .with_timezone(&Utc)
    }

    #[test]
    fn refuses_beyond_the_limit_until_the_window_closes() {
        let limiter = RateLimiter::new(2);
        let first = limiter.check("k", t0()).expect("first allowed");
        assert_eq!(first.remaining, 1);
        assert_eq!(first.reset_at, t0() + WINDOW);
        limiter
            .check("k", t0() + TimeDelta::seconds(10))
            .expect("second allowed");
        let refused = limiter
            .check("k", t0() + TimeDelta::seconds(59))
            .expect_err("third refused");
        assert_eq!(refused.reset_at, t0() + WINDOW);
        let again = limiter
            .check("k", t0() + TimeDelta::seconds(60))
            .expect("new window");
        assert_eq!(again.remaining, 1);
        assert_eq!(again.reset_at, t0() + TimeDelta::seconds(120));
    }

    #[test]
    fn keys_are_independent() {
        let limiter = RateLimiter::new(1);
        limiter.check("a", t0()).expect("a allowed");
        limiter.check("b", t0()).expect("b allowed");
        assert!(limiter.check("a", t0()).is_err());
    }

    #[test]
    fn purge_forgets_closed_windows() {
        let limiter = RateLimiter::new(1);
        limiter.check("a", t0()).expect("allowed");
        limiter.purge(t0() + TimeDelta::seconds(30));
        assert_eq!(limiter.windows.len(), 1);
        limiter.purge(t0() + TimeDelta::seconds(61));
        assert!(limiter.windows.is_empty());
    }
}
