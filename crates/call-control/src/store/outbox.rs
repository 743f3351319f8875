//! The webhook outbox: one row per (event, subscribed webhook), written before the event is
//! reported, read by the dispatcher until delivered or given up. It survives restarts.

use super::numbered;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{get_int, get_json, get_ts, sql_count, ts, write_error, Result, Store, StoreError};

/// A delivery waiting in the outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Delivery id (`dlv_...`), also sent as `X-Dialcore-Delivery`.
    pub id: String,
    /// Organisation of the event.
    pub org_id: String,
    /// The webhook it goes to.
    pub webhook_id: String,
    /// Event name, e.g. `call.ended`.
    pub event: String,
    /// The JSON body to POST.
    pub payload: serde_json::Value,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due.
    pub next_attempt_at: DateTime<Utc>,
    /// When the event was enqueued.
    pub created_at: DateTime<Utc>,
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// Answered 2xx.
    Delivered,
    /// Given up after the last attempt.
    Dead,
}

/// A delivery with its state (for tests and inspection).
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryRecord {
    /// The delivery.
    pub entry: OutboxEntry,
    /// Where it stands.
    pub state: DeliveryState,
    /// The error of the last failed attempt.
    pub last_error: Option<String>,
}

const COLUMNS: &str =
    "id, org_id, webhook_id, event, payload, attempts, next_attempt_at, created_at, state, last_error";

impl Store {
    /// Adds a pending delivery ([`StoreError::Conflict`] if its id exists or its webhook
    /// does not).
    pub async fn enqueue_delivery(&self, entry: &OutboxEntry) -> Result<()> {
        sqlx::query(&numbered(
            "INSERT INTO webhook_outbox (id, org_id, webhook_id, event, payload, attempts, \
             next_attempt_at, state, last_error, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
        ))
        .bind(&entry.id)
        .bind(&entry.org_id)
        .bind(&entry.webhook_id)
        .bind(&entry.event)
        .bind(serde_json::to_string(&entry.payload)?)
        .bind(i64::from(entry.attempts))
        .bind(ts(&entry.next_attempt_at))
        .bind(state_text(DeliveryState::Pending))
        .bind(ts(&entry.created_at))
        .bind(ts(&entry.created_at))
        .execute(&self.pool)
        .await
        .map_err(|error| {
            write_error(error, || {
                format!(
                    "delivery {} exists or webhook {} does not",
                    entry.id, entry.webhook_id
                )
            })
        })?;
        Ok(())
    }

    /// Up to `limit` pending deliveries due at `now`, the most overdue first.
    pub async fn due_deliveries(&self, now: DateTime<Utc>, limit: u64) -> Result<Vec<OutboxEntry>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM webhook_outbox WHERE state = ? AND next_attempt_at <= ? \
             ORDER BY next_attempt_at, id LIMIT ?"
        );
        let rows = sqlx::query(&numbered(&sql))
            .bind(state_text(DeliveryState::Pending))
            .bind(ts(&now))
            .bind(sql_count(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Claims for `claimant` until `claimed_until` up to `limit` pending deliveries due at
    /// `now` that no other claimant holds, the most overdue first, and returns them. Of
    /// several dispatchers (one per node) claiming at once, each delivery goes to one: on
    /// PostgreSQL the rows are locked `FOR UPDATE SKIP LOCKED`, on SQLite the single writer
    /// serialises the claims. A claim ends when the attempt is recorded
    /// ([`Store::reschedule_delivery`] and the others) or runs out.
    pub async fn claim_due_deliveries(
        &self,
        claimant: &str,
        now: DateTime<Utc>,
        claimed_until: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<OutboxEntry>> {
        let skip_locked = match self.backend() {
            super::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            super::Backend::Sqlite => "",
        };
        let unclaimed = "(claimed_until IS NULL OR claimed_until < ?)";
        let sql = format!(
            "UPDATE webhook_outbox SET claimed_by = ?, claimed_until = ? \
             WHERE state = ? AND {unclaimed} AND id IN \
             (SELECT id FROM webhook_outbox WHERE state = ? AND next_attempt_at <= ? \
             AND {unclaimed} ORDER BY next_attempt_at, id LIMIT ?{skip_locked}) \
             RETURNING {COLUMNS}"
        );
        let now = ts(&now);
        let pending = state_text(DeliveryState::Pending);
        let rows = sqlx::query(&numbered(&sql))
            .bind(claimant)
            .bind(ts(&claimed_until))
            .bind(pending)
            .bind(&now)
            .bind(pending)
            .bind(&now)
            .bind(&now)
            .bind(sql_count(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut claimed = rows
            .iter()
            .map(entry_from_row)
            .collect::<Result<Vec<_>>>()?;
        claimed.sort_by(|a, b| (a.next_attempt_at, &a.id).cmp(&(b.next_attempt_at, &b.id)));
        Ok(claimed)
    }

    /// When the earliest pending delivery is due (`None` when none is pending).
    pub async fn next_delivery_at(&self) -> Result<Option<DateTime<Utc>>> {
        let row = sqlx::query(&numbered(
            "SELECT next_attempt_at FROM webhook_outbox WHERE state = ? \
             ORDER BY next_attempt_at LIMIT 1",
        ))
        .bind(state_text(DeliveryState::Pending))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| get_ts(&row, "next_attempt_at")).transpose()
    }

    /// Marks a delivery delivered.
    pub async fn mark_delivered(&self, id: &str) -> Result<()> {
        self.set_delivery_state(id, DeliveryState::Delivered, None, None, None)
            .await
    }

    /// Records a failed attempt and when to try again.
    pub async fn reschedule_delivery(
        &self,
        id: &str,
        attempts: u32,
        next_attempt_at: DateTime<Utc>,
        last_error: &str,
    ) -> Result<()> {
        self.set_delivery_state(
            id,
            DeliveryState::Pending,
            Some(attempts),
            Some(next_attempt_at),
            Some(last_error),
        )
        .await
    }

    /// Gives a delivery up after its last failed attempt.
    pub async fn mark_dead(&self, id: &str, last_error: &str) -> Result<()> {
        self.set_delivery_state(id, DeliveryState::Dead, None, None, Some(last_error))
            .await
    }

    /// A delivery with its state ([`StoreError::NotFound`] for an unknown id).
    pub async fn get_delivery(&self, id: &str) -> Result<DeliveryRecord> {
        let sql = format!("SELECT {COLUMNS} FROM webhook_outbox WHERE id = ?");
        let row = sqlx::query(&numbered(&sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        let state: String = row.try_get("state")?;
        let state = match state.as_str() {
            "pending" => DeliveryState::Pending,
            "delivered" => DeliveryState::Delivered,
            "dead" => DeliveryState::Dead,
            _ => {
                return Err(StoreError::Corrupt {
                    column: "state",
                    value: state,
                })
            }
        };
        Ok(DeliveryRecord {
            entry: entry_from_row(&row)?,
            state,
            last_error: row.try_get("last_error")?,
        })
    }

    async fn set_delivery_state(
        &self,
        id: &str,
        state: DeliveryState,
        attempts: Option<u32>,
        next_attempt_at: Option<DateTime<Utc>>,
        last_error: Option<&str>,
    ) -> Result<()> {
        let done = sqlx::query(&numbered(
            "UPDATE webhook_outbox SET state = ?, attempts = COALESCE(?, attempts), \
             next_attempt_at = COALESCE(?, next_attempt_at), \
             last_error = COALESCE(?, last_error), updated_at = ?, claimed_by = NULL, \
             claimed_until = NULL WHERE id = ?",
        ))
        .bind(state_text(state))
        .bind(attempts.map(i64::from))
        .bind(next_attempt_at.as_ref().map(ts))
        .bind(last_error)
        .bind(ts(&Utc::now()))
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

fn state_text(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::Pending => "pending",
        DeliveryState::Delivered => "delivered",
        DeliveryState::Dead => "dead",
    }
}

fn entry_from_row(row: &AnyRow) -> Result<OutboxEntry> {
    Ok(OutboxEntry {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        webhook_id: row.try_get("webhook_id")?,
        event: row.try_get("event")?,
        payload: get_json(row, "payload")?,
        attempts: get_int(row, "attempts")?,
        next_attempt_at: get_ts(row, "next_attempt_at")?,
        created_at: get_ts(row, "created_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids;
    use crate::model::events;
    use crate::store::test_support::{at, temp_store};
    use crate::store::webhooks::tests::webhook;
    use serde_json::json;

    fn entry(webhook_id: &str, due_secs: i64) -> OutboxEntry {
        OutboxEntry {
            id: ids::new_id(ids::DELIVERY),
            org_id: "org_a".into(),
            webhook_id: webhook_id.into(),
            event: events::CALL_ENDED.into(),
            payload: json!({"type": "call.ended", "data": {"id": "call_1"}}),
            attempts: 0,
            next_attempt_at: at(due_secs),
            created_at: at(0),
        }
    }

    #[tokio::test]
    async fn each_due_delivery_is_claimed_by_one_dispatcher_until_its_attempt_is_recorded() {
        let (store, _dir) = temp_store().await;
        let hook = webhook("org_a", events::ALL, 0);
        store.insert_webhook(&hook).await.expect("webhook");
        let mut all = Vec::new();
        for due in 0..40 {
            let delivery = entry(&hook.id, due % 7);
            store.enqueue_delivery(&delivery).await.expect("enqueue");
            all.push(delivery.id);
        }
        let not_yet = entry(&hook.id, 1_000);
        store.enqueue_delivery(&not_yet).await.expect("enqueue");
        // Four dispatchers claim at once, in small batches, until nothing is left.
        let claimers: Vec<_> = (0..4)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        let claimed = store
                            .claim_due_deliveries(&format!("node-{n}"), at(10), at(100), 3)
                            .await
                            .expect("claim");
                        if claimed.is_empty() {
                            return mine;
                        }
                        mine.extend(claimed.into_iter().map(|entry| entry.id));
                    }
                })
            })
            .collect();
        let mut claimed = Vec::new();
        for claimer in claimers {
            claimed.extend(claimer.await.expect("claimer"));
        }
        claimed.sort();
        all.sort();
        assert_eq!(claimed, all, "every due delivery claimed, and only once");
        // Claimed ones are not claimed again while the claim holds...
        assert!(store
            .claim_due_deliveries("node-9", at(50), at(150), 100)
            .await
            .expect("claim")
            .is_empty());
        // ...an attempt recorded ends the claim (due again at 20)...
        store
            .reschedule_delivery(&all[0], 1, at(20), "503")
            .await
            .expect("reschedule");
        let again = store
            .claim_due_deliveries("node-9", at(50), at(150), 100)
            .await
            .expect("claim");
        assert_eq!(again.len(), 1);
        assert_eq!(
            (again[0].id.as_str(), again[0].attempts),
            (all[0].as_str(), 1)
        );
        // ...and a claim that runs out (its node died) is taken by another node.
        let orphans = store
            .claim_due_deliveries("node-9", at(101), at(200), 100)
            .await
            .expect("claim");
        assert_eq!(orphans.len(), all.len() - 1);
        assert!(orphans.iter().all(|entry| entry.id != not_yet.id));
    }

    #[tokio::test]
    async fn due_reschedule_delivered_and_dead() {
        let (store, _dir) = temp_store().await;
        let hook = webhook("org_a", events::ALL, 0);
        store.insert_webhook(&hook).await.expect("webhook");
        let first = entry(&hook.id, 0);
        let second = entry(&hook.id, 5);
        let later = entry(&hook.id, 100);
        for delivery in [&later, &second, &first] {
            store.enqueue_delivery(delivery).await.expect("enqueue");
        }
        assert_eq!(store.next_delivery_at().await.expect("next"), Some(at(0)));

        let due = store.due_deliveries(at(10), 10).await.expect("due");
        assert_eq!(
            due,
            vec![first.clone(), second.clone()],
            "most overdue first"
        );
        assert_eq!(store.due_deliveries(at(10), 1).await.expect("due").len(), 1);

        store.mark_delivered(&first.id).await.expect("delivered");
        store
            .reschedule_delivery(&second.id, 1, at(20), "HTTP 500")
            .await
            .expect("reschedule");
        assert!(store
            .due_deliveries(at(10), 10)
            .await
            .expect("due")
            .is_empty());
        let due = store.due_deliveries(at(20), 10).await.expect("due");
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].id.as_str(), due[0].attempts),
            (second.id.as_str(), 1)
        );
        assert_eq!(due[0].next_attempt_at, at(20));

        store.mark_dead(&second.id, "HTTP 502").await.expect("dead");
        let record = store.get_delivery(&second.id).await.expect("record");
        assert_eq!(record.state, DeliveryState::Dead);
        assert_eq!(record.last_error.as_deref(), Some("HTTP 502"));
        assert_eq!(record.entry.attempts, 1);
        assert_eq!(
            store.get_delivery(&first.id).await.expect("record").state,
            DeliveryState::Delivered
        );
        assert_eq!(store.next_delivery_at().await.expect("next"), Some(at(100)));
        assert_eq!(
            store.due_deliveries(at(1000), 10).await.expect("due"),
            vec![later.clone()]
        );
        assert!(matches!(
            store.mark_delivered("dlv_missing").await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn pending_deliveries_survive_a_reopen() {
        let (store, dir) = temp_store().await;
        let hook = webhook("org_a", events::ALL, 0);
        store.insert_webhook(&hook).await.expect("webhook");
        let pending = entry(&hook.id, 3);
        store.enqueue_delivery(&pending).await.expect("enqueue");
        store.close().await;
        let reopened = dir.reopen().await;
        assert_eq!(
            reopened.due_deliveries(at(3), 10).await.expect("due"),
            vec![pending]
        );
    }

    #[tokio::test]
    async fn deliveries_need_their_webhook_and_go_with_it() {
        let (store, _dir) = temp_store().await;
        assert!(matches!(
            store.enqueue_delivery(&entry("whk_missing", 0)).await,
            Err(StoreError::Conflict(_))
        ));
        let hook = webhook("org_a", events::ALL, 0);
        store.insert_webhook(&hook).await.expect("webhook");
        store
            .enqueue_delivery(&entry(&hook.id, 0))
            .await
            .expect("enqueue");
        store
            .delete_webhook("org_a", &hook.id)
            .await
            .expect("delete");
        assert!(store
            .due_deliveries(at(10), 10)
            .await
            .expect("due")
            .is_empty());
    }
}
