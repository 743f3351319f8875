//! What a call costs, the heartbeat of live calls, and how a call a crash interrupted is
//! ended.
//!
//! A call holds one minute of credit from the moment it is admitted (see
//! [`crate::store::Store::admit_call`]); at its end it is charged each started minute
//! after answer and the hold is released ([`crate::store::Store::finish_call`]). While it
//! is live, the engine stamps it every [`HEARTBEAT_INTERVAL`] in one batched write for
//! all live calls (never on the audio path), so that after a crash recovery ends it where
//! it was last known alive, not at the restart. The same heartbeat keeps each answered
//! call's hold ahead of its charge: before a call starts a minute it does not hold, the
//! hold grows by what that minute costs ([`hold_needed_cents`]); when the balance, less
//! every hold, cannot cover it, the call is ended (`insufficient_credits`), so a tenant
//! cannot talk past its balance.

use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::call::CallCommand;
use super::Shared;
use crate::model::Call;

/// How often the live calls' `last_seen_at` is written: after a crash a call is ended at
/// most this long before it really stopped.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);

/// Who charges a call when it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pricing {
    /// The engine: each started minute after answer ([`charge_cents`]).
    PerMinute,
    /// The test run it is the agent's leg of, at the run's own price (the estimate the
    /// user consented to, both legs and the multiplier included): the engine charges
    /// nothing more.
    TestRun,
}

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

/// What an answered call must hold at `now` so that its charge stays covered until the
/// heartbeat after next: every minute it will have started by then.
pub fn hold_needed_cents(
    answered_at: DateTime<Utc>,
    now: DateTime<Utc>,
    per_minute_cents: i64,
) -> i64 {
    let talked = (now - answered_at).to_std().unwrap_or(Duration::ZERO);
    charge_cents(true, talked + 2 * HEARTBEAT_INTERVAL, per_minute_cents)
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
        beat(&shared, Utc::now()).await;
    }
}

/// One heartbeat at `now`: one batched write of every live call's `last_seen_at`, then
/// the holds of the answered calls that are about to start a minute they do not hold are
/// grown, and the calls whose organisation cannot cover it are told to end.
pub(super) async fn beat(shared: &Arc<Shared>, now: DateTime<Utc>) {
    let live: Vec<String> = shared
        .live
        .iter()
        .map(|entry| entry.key().clone())
        .collect();
    if live.is_empty() {
        return;
    }
    let answered = match shared.store.heartbeat_calls(&live, now).await {
        Ok(answered) => answered,
        Err(error) => {
            warn!(%error, calls = live.len(), "heartbeat of live calls not written");
            return;
        }
    };
    let per_minute = shared.per_minute_cents;
    for hold in answered {
        let Some(held) = hold.reserved_cents else {
            continue;
        };
        let missing = hold_needed_cents(hold.answered_at, now, per_minute) - held;
        if missing <= 0 {
            continue;
        }
        match shared
            .store
            .extend_hold(&hold.org_id, &hold.call_id, missing)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                info!(call_id = %hold.call_id, "credit exhausted; ending the call");
                if let Some(commands) = shared.live.get(&hold.call_id) {
                    let _ = commands.send(CallCommand::CreditExhausted);
                }
            }
            Err(error) => warn!(call_id = %hold.call_id, %error, "credit hold not extended"),
        }
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
    fn the_hold_covers_the_minute_the_next_heartbeats_reach() {
        let answered = at(0);
        let secs = |s: i64| at(0) + chrono::Duration::seconds(s);
        assert_eq!(hold_needed_cents(answered, secs(10), 5), 5, "first minute");
        assert_eq!(hold_needed_cents(answered, secs(55), 5), 5);
        assert_eq!(
            hold_needed_cents(answered, secs(57), 5),
            10,
            "second minute ahead"
        );
        assert_eq!(hold_needed_cents(answered, secs(125), 5), 15);
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
