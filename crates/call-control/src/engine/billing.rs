//! What a call costs, the heartbeat of live calls, and how a call a crash interrupted is
//! ended.
//!
//! A call holds one minute of credit from the moment it is admitted (see
//! [`crate::store::Store::admit_call`]); at its end it is charged each started minute
//! after answer and the hold is released ([`crate::store::Store::finish_call`]). While it
//! is live, the engine stamps it every [`HEARTBEAT_INTERVAL`] in one batched write for
//! all live calls (never on the audio path), so that after a crash recovery ends it where
//! it was last known alive, not at the restart.

use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::warn;

use super::Shared;
use crate::model::Call;

/// How often the live calls' `last_seen_at` is written: after a crash a call is ended at
/// most this long before it really stopped.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// The credit a call holds while it runs: one minute, the least an answered call costs.
pub fn reservation_cents(per_minute_cents: i64) -> i64 {
    per_minute_cents
}

/// The charge for a call answered for `talked`: each started minute, at least one; nothing
/// for a call never answered.
pub fn charge_cents(answered: bool, talked: Duration, per_minute_cents: i64) -> i64 {
    if !answered {
        return 0;
    }
    let minutes = i64::try_from(talked.as_secs().div_ceil(60).max(1)).unwrap_or(i64::MAX);
    minutes.saturating_mul(per_minute_cents)
}

/// Where a call a crash interrupted ended: its last heartbeat, or when it was answered,
/// started or created if it came later (a call answered after its last heartbeat talked
/// for an unknown time under [`HEARTBEAT_INTERVAL`], counted as none).
pub fn interrupted_end(call: &Call, last_seen_at: Option<DateTime<Utc>>) -> DateTime<Utc> {
    [last_seen_at, call.answered_at, call.started_at]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(call.created_at)
}

/// How long `call` talked if it ended at `ended_at`.
pub fn talked(call: &Call, ended_at: DateTime<Utc>) -> Duration {
    call.answered_at.map_or(Duration::ZERO, |at| {
        (ended_at - at).to_std().unwrap_or(Duration::ZERO)
    })
}

/// Stamps the engine's live calls every [`HEARTBEAT_INTERVAL`] until the engine is gone.
pub async fn heartbeat_loop(shared: Weak<Shared>) {
    let mut ticks = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        beat(&shared).await;
    }
}

/// One heartbeat: one batched write of every live call's `last_seen_at`.
async fn beat(shared: &Arc<Shared>) {
    let live: Vec<String> = shared
        .live
        .iter()
        .map(|entry| entry.key().clone())
        .collect();
    if live.is_empty() {
        return;
    }
    if let Err(error) = shared.store.heartbeat_calls(&live, Utc::now()).await {
        warn!(%error, calls = live.len(), "heartbeat of live calls not written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CallDirection;
    use crate::store::test_support::at;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn each_started_minute_of_an_answered_call() {
        assert_eq!(charge_cents(false, secs(600), 2), 0);
        assert_eq!(charge_cents(true, Duration::ZERO, 2), 2);
        assert_eq!(charge_cents(true, secs(60), 2), 2);
        assert_eq!(charge_cents(true, secs(61), 2), 4);
        assert_eq!(charge_cents(true, secs(3600), 0), 0);
    }

    #[test]
    fn an_interrupted_call_ends_at_its_last_sign_of_life() {
        let mut call = crate::store::test_support::call("org", "agt", CallDirection::Outbound, 0);
        assert_eq!(interrupted_end(&call, None), at(0), "never started");
        call.started_at = Some(at(1));
        call.answered_at = Some(at(3));
        assert_eq!(interrupted_end(&call, None), at(3), "no heartbeat");
        assert_eq!(
            interrupted_end(&call, Some(at(2))),
            at(3),
            "beat before answer"
        );
        let end = interrupted_end(&call, Some(at(9)));
        assert_eq!(end, at(9));
        assert_eq!(talked(&call, end), secs(6));
        call.answered_at = None;
        assert_eq!(talked(&call, end), Duration::ZERO);
    }
}
