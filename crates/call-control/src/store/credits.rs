//! Credit held by live calls, and their heartbeat.
//!
//! A call the engine runs is admitted with [`Store::admit_call`]: one conditional UPDATE of
//! the organisation's row reserves its credit only if the balance minus what the
//! organisation's live calls already hold covers it, and takes a live-call slot only if the
//! organisation is under its cap; the call record (and the idempotency key of the request
//! that placed it) go in the same transaction. The row lock makes concurrent admissions
//! queue, on SQLite and PostgreSQL alike, so N requests at once cannot overdraw.
//!
//! [`Store::finish_call`] writes a call's last record and settles it in one transaction:
//! the charge for the time used leaves the balance, the reservation and the slot are
//! released. Settling twice changes nothing. [`Store::heartbeat_calls`] stamps the live
//! calls' `last_seen_at` in one statement per batch, so that restart recovery can end a
//! call where it was last known alive.

use super::numbered;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::calls::{insert_call_on, update_call_on};
use super::idempotency::{claim_on, KeptResponse};
use super::{get_opt_ts, ts, Result, Store, StoreError};
use crate::model::Call;

/// Call ids stamped by one heartbeat statement.
const HEARTBEAT_BATCH: usize = 500;

/// What admitting a call asks of its organisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Credit to hold while the call runs, in cents.
    pub reserve_cents: i64,
    /// Most calls the organisation may have live (`None`: no limit).
    pub max_live_calls: Option<u32>,
}

/// Whether a call was admitted, and why not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallAdmission {
    /// The call is stored, holding its reservation and a live-call slot.
    Admitted,
    /// Nothing stored: the balance minus the reservations of live calls is below the
    /// reservation.
    InsufficientCredits {
        /// The organisation's balance.
        balance_cents: i64,
        /// What its live calls hold of it.
        reserved_cents: i64,
        /// What the call would hold.
        required_cents: i64,
    },
    /// Nothing stored: the organisation has its maximum of live calls.
    ConcurrentCallLimit {
        /// Calls of the organisation live now.
        live_calls: u64,
        /// The cap.
        limit: u32,
    },
    /// Nothing stored: the idempotency key is held by another request's response.
    IdempotencyKeyTaken,
}

/// What settling a call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// Charged for the time used.
    pub charged_cents: i64,
    /// The reservation released (0 for a call admitted without one).
    pub released_cents: i64,
    /// The organisation's balance after the charge.
    pub balance_cents: i64,
}

/// An answered live call and the credit it holds, as its heartbeat found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveHold {
    /// The call.
    pub call_id: String,
    /// Its organisation.
    pub org_id: String,
    /// When it was answered.
    pub answered_at: DateTime<Utc>,
    /// What it holds (`None`: admitted without a reservation, before holds existed).
    pub reserved_cents: Option<i64>,
}

/// An organisation's balance and what its live calls hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrgUsage {
    /// Balance in cents.
    pub balance_cents: i64,
    /// Credit held by live calls.
    pub reserved_cents: i64,
    /// Calls live now.
    pub live_calls: u64,
}

impl Store {
    /// Stores `call` holding `admission.reserve_cents` and a live-call slot of its
    /// organisation, with `kept` as the response of its idempotency key, all in one
    /// transaction; or stores nothing and says why ([`StoreError::NotFound`] for an unknown
    /// organisation).
    pub async fn admit_call(
        &self,
        call: &Call,
        admission: Admission,
        kept: Option<&KeptResponse>,
    ) -> Result<CallAdmission> {
        let limit = admission.max_live_calls.map(i64::from);
        let mut tx = self.pool().begin().await?;
        // The first statement writes: the transaction holds the organisation's row (the
        // write lock on SQLite) from the moment it looks at the balance.
        let admitted = sqlx::query(&numbered(
            "UPDATE orgs SET reserved_cents = reserved_cents + ?, live_calls = live_calls + 1 \
             WHERE id = ? AND balance_cents - reserved_cents >= ? \
             AND (? IS NULL OR live_calls < ?)",
        ))
        .bind(admission.reserve_cents)
        .bind(&call.org_id)
        .bind(admission.reserve_cents)
        .bind(limit)
        .bind(limit)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if admitted == 0 {
            let usage = usage_on(&mut *tx, &call.org_id).await?;
            tx.rollback().await?;
            return Ok(refusal(usage, admission));
        }
        insert_call_on(&mut *tx, call, Some(admission.reserve_cents)).await?;
        if let Some(kept) = kept {
            if !claim_on(&mut *tx, &call.org_id, kept, call.created_at).await? {
                tx.rollback().await?;
                return Ok(CallAdmission::IdempotencyKeyTaken);
            }
        }
        tx.commit().await?;
        Ok(CallAdmission::Admitted)
    }

    /// Writes the last record of `call` and settles it, in one transaction: `charge_cents`
    /// leave the organisation's balance, the call's reservation and live-call slot are
    /// released. `None` when the call was settled already (the record is still written,
    /// nothing is charged twice); [`StoreError::NotFound`] for an unknown call.
    pub async fn finish_call(&self, call: &Call, charge_cents: i64) -> Result<Option<Settlement>> {
        let mut tx = self.pool().begin().await?;
        let claimed = sqlx::query(&numbered(
            "UPDATE calls SET settled_at = ?, charged_cents = ? \
             WHERE org_id = ? AND id = ? AND settled_at IS NULL RETURNING reserved_cents",
        ))
        .bind(ts(&Utc::now()))
        .bind(charge_cents)
        .bind(&call.org_id)
        .bind(&call.id)
        .fetch_optional(&mut *tx)
        .await?;
        update_call_on(&mut *tx, call).await?;
        let settlement = match claimed {
            None => None,
            Some(row) => {
                let reserved: Option<i64> = row.try_get("reserved_cents")?;
                let released_cents = reserved.unwrap_or(0);
                let row = sqlx::query(&numbered(
                    "UPDATE orgs SET balance_cents = balance_cents - ?, \
                     reserved_cents = reserved_cents - ?, live_calls = live_calls - ? \
                     WHERE id = ? RETURNING balance_cents",
                ))
                .bind(charge_cents)
                .bind(released_cents)
                .bind(i64::from(reserved.is_some()))
                .bind(&call.org_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound)?;
                Some(Settlement {
                    charged_cents: charge_cents,
                    released_cents,
                    balance_cents: row.try_get("balance_cents")?,
                })
            }
        };
        tx.commit().await?;
        Ok(settlement)
    }

    /// Stamps `last_seen_at = now` on the calls `call_ids` that are not settled (one
    /// statement per 500 ids, one transaction); returns the answered ones among them, with
    /// what they hold (for [`Store::extend_hold`]).
    pub async fn heartbeat_calls(
        &self,
        call_ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<LiveHold>> {
        if call_ids.is_empty() {
            return Ok(Vec::new());
        }
        let stamp = ts(&now);
        let mut tx = self.pool().begin().await?;
        let mut answered = Vec::new();
        for batch in call_ids.chunks(HEARTBEAT_BATCH) {
            let sql = format!(
                "UPDATE calls SET last_seen_at = ? WHERE settled_at IS NULL AND id IN ({}) \
                 RETURNING id, org_id, answered_at, reserved_cents",
                vec!["?"; batch.len()].join(", ")
            );
            let sql = numbered(&sql);
            let mut query = sqlx::query(&sql).bind(&stamp);
            for id in batch {
                query = query.bind(id);
            }
            for row in query.fetch_all(&mut *tx).await? {
                let Some(answered_at) = get_opt_ts(&row, "answered_at")? else {
                    continue;
                };
                let reserved: Option<i64> = row.try_get("reserved_cents")?;
                answered.push(LiveHold {
                    call_id: row.try_get("id")?,
                    org_id: row.try_get("org_id")?,
                    answered_at,
                    reserved_cents: reserved,
                });
            }
        }
        tx.commit().await?;
        Ok(answered)
    }

    /// Adds `cents` to what the live call holds, if the organisation's balance minus every
    /// hold covers them (one transaction, the same rule as [`Store::admit_call`]); false
    /// when it does not, or when the call is settled or holds nothing.
    pub async fn extend_hold(&self, org_id: &str, call_id: &str, cents: i64) -> Result<bool> {
        let mut tx = self.pool().begin().await?;
        let held = sqlx::query(&numbered(
            "UPDATE orgs SET reserved_cents = reserved_cents + ? \
             WHERE id = ? AND balance_cents - reserved_cents >= ?",
        ))
        .bind(cents)
        .bind(org_id)
        .bind(cents)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if held == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let extended = sqlx::query(&numbered(
            "UPDATE calls SET reserved_cents = reserved_cents + ? \
             WHERE org_id = ? AND id = ? AND settled_at IS NULL AND reserved_cents IS NOT NULL",
        ))
        .bind(cents)
        .bind(org_id)
        .bind(call_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if extended == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The organisation's balance and what its live calls hold ([`StoreError::NotFound`]
    /// for an unknown one).
    pub async fn org_usage(&self, org_id: &str) -> Result<OrgUsage> {
        let mut conn = self.pool().acquire().await?;
        usage_on(&mut *conn, org_id).await
    }

    /// Every organisation's usage (the engine's admission ledger, refreshed from this).
    pub async fn all_org_usages(&self) -> Result<Vec<(String, OrgUsage)>> {
        let rows = sqlx::query(&numbered(
            "SELECT id, balance_cents, reserved_cents, live_calls FROM orgs",
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let live: i64 = row.try_get("live_calls")?;
                Ok((
                    row.try_get("id")?,
                    OrgUsage {
                        balance_cents: row.try_get("balance_cents")?,
                        reserved_cents: row.try_get("reserved_cents")?,
                        live_calls: u64::try_from(live).unwrap_or(0),
                    },
                ))
            })
            .collect()
    }

    /// Stores calls the engine admitted from its ledger (inbound calls, answered without
    /// waiting on the database), each holding its reservation and a live-call slot of its
    /// organisation, all in one transaction. Unconditional: the ledger decided, from a
    /// view of the balance at most one refresh old, and the heartbeat ends a call whose
    /// organisation cannot carry its next minute.
    pub async fn insert_admitted_calls(&self, admitted: &[(&Call, i64)]) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        for (call, reserve_cents) in admitted {
            let held = sqlx::query(&numbered(
                "UPDATE orgs SET reserved_cents = reserved_cents + ?, live_calls = live_calls + 1 \
                 WHERE id = ?",
            ))
            .bind(reserve_cents)
            .bind(&call.org_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if held == 0 {
                return Err(StoreError::NotFound);
            }
            insert_call_on(&mut *tx, call, Some(*reserve_cents)).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn usage_on<'e, E>(executor: E, org_id: &str) -> Result<OrgUsage>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query(&numbered(
        "SELECT balance_cents, reserved_cents, live_calls FROM orgs WHERE id = ?",
    ))
    .bind(org_id)
    .fetch_optional(executor)
    .await?
    .ok_or(StoreError::NotFound)?;
    let live: i64 = row.try_get("live_calls")?;
    Ok(OrgUsage {
        balance_cents: row.try_get("balance_cents")?,
        reserved_cents: row.try_get("reserved_cents")?,
        live_calls: u64::try_from(live).unwrap_or(0),
    })
}

/// Why an organisation with `usage` did not admit a call asking `admission`.
fn refusal(usage: OrgUsage, admission: Admission) -> CallAdmission {
    match admission.max_live_calls {
        Some(limit) if usage.live_calls >= u64::from(limit) => CallAdmission::ConcurrentCallLimit {
            live_calls: usage.live_calls,
            limit,
        },
        _ => CallAdmission::InsufficientCredits {
            balance_cents: usage.balance_cents,
            reserved_cents: usage.reserved_cents,
            required_cents: admission.reserve_cents,
        },
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::model::{CallDirection, CallStatus};
    use crate::store::calls::tests::call;
    use crate::store::test_support::temp_store;

    async fn org(store: &Store, balance: i64) -> String {
        let key = store.create_key("acme", balance).await.expect("key");
        store.org_for_key(&key).await.expect("lookup").expect("org")
    }

    fn admission(reserve_cents: i64, max_live_calls: Option<u32>) -> Admission {
        Admission {
            reserve_cents,
            max_live_calls,
        }
    }

    #[tokio::test]
    async fn reservations_cover_the_balance_and_settle_what_was_used() {
        let (store, _dir) = temp_store().await;
        let org = org(&store, 10).await;
        let first = call(&org, "agt_1", CallDirection::Outbound, 0);
        let second = call(&org, "agt_1", CallDirection::Outbound, 1);
        let third = call(&org, "agt_1", CallDirection::Outbound, 2);
        for admitted in [&first, &second] {
            assert_eq!(
                store
                    .admit_call(admitted, admission(4, None), None)
                    .await
                    .expect("admit"),
                CallAdmission::Admitted
            );
        }
        // 10 - 8 held = 2 left: the third is refused, and nothing of it is stored.
        assert_eq!(
            store
                .admit_call(&third, admission(4, None), None)
                .await
                .expect("admit"),
            CallAdmission::InsufficientCredits {
                balance_cents: 10,
                reserved_cents: 8,
                required_cents: 4
            }
        );
        assert!(matches!(
            store.get_call_any(&third.id).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(
            store.org_usage(&org).await.expect("usage"),
            OrgUsage {
                balance_cents: 10,
                reserved_cents: 8,
                live_calls: 2
            }
        );
        // The first used 3 cents: charged, its 4 released.
        let mut ended = first.clone();
        ended.status = CallStatus::Ended;
        assert_eq!(
            store.finish_call(&ended, 3).await.expect("settle"),
            Some(Settlement {
                charged_cents: 3,
                released_cents: 4,
                balance_cents: 7
            })
        );
        assert_eq!(
            store.get_call_any(&first.id).await.expect("get").status,
            CallStatus::Ended
        );
        // Settling again writes the record but charges nothing.
        assert_eq!(store.finish_call(&ended, 3).await.expect("again"), None);
        assert_eq!(
            store.org_usage(&org).await.expect("usage"),
            OrgUsage {
                balance_cents: 7,
                reserved_cents: 4,
                live_calls: 1
            }
        );
        // 7 - 4 = 3 left: still not enough for a 4-cent reservation.
        assert!(matches!(
            store
                .admit_call(&third, admission(4, None), None)
                .await
                .expect("admit"),
            CallAdmission::InsufficientCredits {
                balance_cents: 7,
                reserved_cents: 4,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn the_cap_counts_live_calls_until_they_settle() {
        let (store, _dir) = temp_store().await;
        let org = org(&store, 1000).await;
        let calls: Vec<_> = (0..3)
            .map(|i| call(&org, "agt_1", CallDirection::Inbound, i))
            .collect();
        for admitted in &calls[..2] {
            assert_eq!(
                store
                    .admit_call(admitted, admission(2, Some(2)), None)
                    .await
                    .expect("admit"),
                CallAdmission::Admitted
            );
        }
        assert_eq!(
            store
                .admit_call(&calls[2], admission(2, Some(2)), None)
                .await
                .expect("admit"),
            CallAdmission::ConcurrentCallLimit {
                live_calls: 2,
                limit: 2
            }
        );
        store.finish_call(&calls[0], 0).await.expect("settle");
        assert_eq!(
            store
                .admit_call(&calls[2], admission(2, Some(2)), None)
                .await
                .expect("admit"),
            CallAdmission::Admitted
        );
    }

    #[tokio::test]
    async fn the_idempotency_key_is_stored_with_the_call_or_not_at_all() {
        let (store, _dir) = temp_store().await;
        let org = org(&store, 1000).await;
        let first = call(&org, "agt_1", CallDirection::Outbound, 0);
        let kept = KeptResponse {
            key: "retry-1".into(),
            fingerprint: "fp".into(),
            status: 201,
            body: format!(r#"{{"data":{{"id":"{}"}}}}"#, first.id),
        };
        assert_eq!(
            store
                .admit_call(&first, admission(2, None), Some(&kept))
                .await
                .expect("admit"),
            CallAdmission::Admitted
        );
        let stored = store
            .idempotency_get(&org, "retry-1", first.created_at)
            .await
            .expect("get")
            .expect("kept with the call");
        assert_eq!((stored.status, stored.body), (201, kept.body.clone()));
        // A second call claiming the same key is stored not at all: no call, no reservation.
        let second = call(&org, "agt_1", CallDirection::Outbound, 1);
        assert_eq!(
            store
                .admit_call(&second, admission(2, None), Some(&kept))
                .await
                .expect("admit"),
            CallAdmission::IdempotencyKeyTaken
        );
        assert!(matches!(
            store.get_call_any(&second.id).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(
            store.org_usage(&org).await.expect("usage").live_calls,
            1,
            "the refused call holds nothing"
        );
    }

    #[tokio::test]
    async fn heartbeats_stamp_live_calls_only() {
        let (store, _dir) = temp_store().await;
        let org = org(&store, 1000).await;
        let mut live = call(&org, "agt_1", CallDirection::Outbound, 0);
        live.answered_at = Some(live.created_at);
        let settled = call(&org, "agt_1", CallDirection::Outbound, 1);
        for admitted in [&live, &settled] {
            store
                .admit_call(admitted, admission(2, None), None)
                .await
                .expect("admit");
        }
        store.finish_call(&settled, 0).await.expect("settle");
        let now = Utc::now();
        let ids = vec![live.id.clone(), settled.id.clone(), "call_gone".to_owned()];
        let holds = store.heartbeat_calls(&ids, now).await.expect("beat");
        assert_eq!(
            holds,
            vec![LiveHold {
                call_id: live.id.clone(),
                org_id: org.clone(),
                answered_at: live.created_at,
                reserved_cents: Some(2),
            }],
            "the answered live call and what it holds"
        );
        let seen: Vec<_> = store
            .unfinished_calls("node-a", false)
            .await
            .expect("unfinished")
            .into_iter()
            .map(|u| (u.call.id, u.last_seen_at))
            .collect();
        assert!(
            seen.contains(&(live.id.clone(), Some(now))),
            "the live call carries the heartbeat: {seen:?}"
        );
        let later = now + Duration::seconds(2);
        let many: Vec<String> = std::iter::repeat_n(live.id.clone(), HEARTBEAT_BATCH + 1).collect();
        assert_eq!(
            store
                .heartbeat_calls(&many, later)
                .await
                .expect("beat")
                .len(),
            2
        );
        assert!(store
            .heartbeat_calls(&[], later)
            .await
            .expect("beat")
            .is_empty());
    }

    #[tokio::test]
    async fn a_hold_grows_only_while_the_balance_covers_every_hold() {
        let (store, _dir) = temp_store().await;
        let org = org(&store, 10).await;
        let talking = call(&org, "agt_1", CallDirection::Outbound, 0);
        store
            .admit_call(&talking, admission(4, None), None)
            .await
            .expect("admit");
        assert!(store
            .extend_hold(&org, &talking.id, 4)
            .await
            .expect("extend"));
        let usage = store.org_usage(&org).await.expect("usage");
        assert_eq!(usage.reserved_cents, 8);
        assert!(
            !store
                .extend_hold(&org, &talking.id, 4)
                .await
                .expect("extend"),
            "10 less 8 held does not cover 4 more"
        );
        assert_eq!(
            store.org_usage(&org).await.expect("usage").reserved_cents,
            8
        );
        let settled = store
            .finish_call(&talking, 8)
            .await
            .expect("settle")
            .expect("once");
        assert_eq!(settled.released_cents, 8, "the grown hold is released");
        assert_eq!(settled.balance_cents, 2);
        assert_eq!(
            store.org_usage(&org).await.expect("usage").reserved_cents,
            0
        );
        assert!(
            !store
                .extend_hold(&org, &talking.id, 1)
                .await
                .expect("extend"),
            "a settled call holds nothing more"
        );
        assert_eq!(
            store.org_usage(&org).await.expect("usage").reserved_cents,
            0
        );
    }
}
