//! Per-API-key rate limiting: a fixed one-minute window that opens at a key's first request.
//!
//! The limiter never reads the clock: callers pass the current wall time, so tests are exact.
//! Keys are remembered by their SHA-256 digest, never in plain text.
//!
//! On a cluster the limit is the key's, not each node's: every second [`sync`] writes this
//! node's counts to the database and reads what the other nodes counted in their open
//! windows, which a check adds to its own count. A request never waits on the database; a
//! key can exceed its limit by what the other nodes admitted since the last sync.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};
use dashmap::DashMap;
use sha2::{Digest, Sha256};

use crate::store::{RateWindow, Store, StoreError};

/// Length of one rate-limit window.
pub const WINDOW: TimeDelta = TimeDelta::seconds(60);
/// Closed windows are forgotten once every this many checks.
const PURGE_EVERY: u64 = 4096;

/// Counts requests per API key and refuses those beyond the limit of the current window.
#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    windows: DashMap<[u8; 32], Window>,
    /// What the other nodes of a cluster counted per key in their open windows, as of the
    /// last [`sync`].
    elsewhere: DashMap<[u8; 32], u32>,
    checks: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: DateTime<Utc>,
    count: u32,
    /// Counted since the last [`sync`].
    changed: bool,
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
            elsewhere: DashMap::new(),
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
        let elsewhere = self.elsewhere.get(&digest).map_or(0, |count| *count);
        let mut window = self.windows.entry(digest).or_insert(Window {
            start: now,
            count: 0,
            changed: false,
        });
        if now >= window.start + WINDOW || now < window.start {
            *window = Window {
                start: now,
                count: 0,
                changed: false,
            };
        }
        let reset_at = window.start + WINDOW;
        let counted = window.count.saturating_add(elsewhere);
        if counted >= self.limit {
            return Err(RateLimited {
                limit: self.limit,
                reset_at,
            });
        }
        window.count += 1;
        window.changed = true;
        Ok(RateStatus {
            limit: self.limit,
            remaining: self.limit - counted - 1,
            reset_at,
        })
    }

    /// Forgets windows that closed before `now` (bounded memory for long-running services).
    pub fn purge(&self, now: DateTime<Utc>) {
        self.windows.retain(|_, window| window.start + WINDOW > now);
    }

    /// The open windows counted in since the last call, as the store shares them.
    fn take_changed(&self, now: DateTime<Utc>) -> Vec<RateWindow> {
        let mut changed = Vec::new();
        for mut entry in self.windows.iter_mut() {
            if entry.changed && entry.start + WINDOW > now {
                entry.changed = false;
                changed.push(RateWindow {
                    key_digest: hex::encode(entry.key()),
                    start: entry.start,
                    count: entry.count,
                });
            }
        }
        changed
    }

    /// Takes what the other nodes counted per key (hex digests) instead of what they had.
    fn set_elsewhere(&self, counts: Vec<(String, u32)>) {
        let counts: Vec<([u8; 32], u32)> = counts
            .into_iter()
            .filter_map(|(digest, count)| {
                let mut key = [0u8; 32];
                hex::decode_to_slice(digest, &mut key).ok()?;
                Some((key, count))
            })
            .collect();
        self.elsewhere
            .retain(|key, _| counts.iter().any(|(k, _)| k == key));
        for (key, count) in counts {
            self.elsewhere.insert(key, count);
        }
    }

    /// One exchange with the other nodes through `store` at `now` (see the module docs).
    pub async fn sync_once(
        &self,
        store: &Store,
        node_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let changed = self.take_changed(now);
        match store
            .sync_rate_windows(node_id, &changed, WINDOW, now)
            .await
        {
            Ok(counts) => {
                self.set_elsewhere(counts);
                Ok(())
            }
            Err(error) => {
                // Written next time.
                for window in changed {
                    let mut key = [0u8; 32];
                    if hex::decode_to_slice(&window.key_digest, &mut key).is_ok() {
                        if let Some(mut own) = self.windows.get_mut(&key) {
                            own.changed = true;
                        }
                    }
                }
                Err(error)
            }
        }
    }
}

/// How often a node shares its counts with the other nodes.
pub const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Shares `limiter`'s counts through `store` every [`SYNC_INTERVAL`], as node `node_id`,
/// for as long as it runs. Only on PostgreSQL (one node on SQLite has no one to share with).
pub async fn sync(limiter: std::sync::Arc<RateLimiter>, store: Store, node_id: String) {
    if store.backend() != crate::store::Backend::Postgres {
        return;
    }
    let mut every = tokio::time::interval(SYNC_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(error) = limiter.sync_once(&store, &node_id, Utc::now()).await {
            tracing::debug!(%error, "rate-limit counts not shared this time");
        }
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

    #[tokio::test]
    async fn a_keys_limit_holds_across_the_nodes_that_share_a_database() {
        let (store, _db) = crate::store::test_support::temp_store().await;
        let (a, b) = (RateLimiter::new(10), RateLimiter::new(10));
        for _ in 0..6 {
            a.check("k", t0()).expect("under the limit on node A");
        }
        a.sync_once(&store, "node-a", t0() + TimeDelta::seconds(1))
            .await
            .expect("a shares");
        b.sync_once(&store, "node-b", t0() + TimeDelta::seconds(1))
            .await
            .expect("b learns");
        let at = t0() + TimeDelta::seconds(2);
        let last = (0..4)
            .map(|_| b.check("k", at).expect("the key's last 4"))
            .last()
            .expect("4 checks");
        assert_eq!(last.remaining, 0);
        assert!(b.check("k", at).is_err(), "6 on A and 4 on B use the 10");
        assert!(b.check("other", at).is_ok(), "other keys are their own");
        // Node A learns of B's 4 (and of nothing of its own).
        b.sync_once(&store, "node-b", at).await.expect("b shares");
        a.sync_once(&store, "node-a", at).await.expect("a learns");
        assert!(a.check("k", at).is_err());
        // Once A's and B's windows close the key starts again on both.
        let later = t0() + TimeDelta::seconds(63);
        a.sync_once(&store, "node-a", later).await.expect("a");
        b.sync_once(&store, "node-b", later).await.expect("b");
        assert_eq!(a.check("k", later).expect("new window").remaining, 9);
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
