//! Webhook subscriptions.

use super::numbered;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::sealed::WEBHOOK_SECRET;
use super::{get_json, get_ts, ts, write_error, Result, Store, StoreError};
use crate::model::Webhook;

const COLUMNS: &str = "id, org_id, url, events, secret, created_at";

impl Store {
    /// Stores a new webhook ([`StoreError::Conflict`] if its id exists).
    pub async fn insert_webhook(&self, webhook: &Webhook) -> Result<()> {
        sqlx::query(&numbered(
            "INSERT INTO webhooks (id, org_id, url, events, secret, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        ))
        .bind(&webhook.id)
        .bind(&webhook.org_id)
        .bind(&webhook.url)
        .bind(serde_json::to_string(&webhook.events)?)
        .bind(self.seal(WEBHOOK_SECRET, &webhook.secret)?)
        .bind(ts(&webhook.created_at))
        .execute(&self.pool)
        .await
        .map_err(|error| write_error(error, || format!("webhook {} exists", webhook.id)))?;
        Ok(())
    }

    /// The organisation's webhook `id`, secret included ([`StoreError::NotFound`] otherwise).
    pub async fn get_webhook(&self, org_id: &str, id: &str) -> Result<Webhook> {
        let webhook = self
            .get_scoped("webhooks", COLUMNS, org_id, id, webhook_from_row)
            .await?;
        self.open_webhook(webhook)
    }

    /// One page of the organisation's webhooks, newest first, and how many in all.
    pub async fn list_webhooks(
        &self,
        org_id: &str,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<Webhook>, u64)> {
        let (webhooks, total) = self
            .list_scoped("webhooks", COLUMNS, org_id, limit, offset, webhook_from_row)
            .await?;
        let webhooks = webhooks
            .into_iter()
            .map(|webhook| self.open_webhook(webhook))
            .collect::<Result<_>>()?;
        Ok((webhooks, total))
    }

    /// Deletes the organisation's webhook `id` and its pending deliveries.
    pub async fn delete_webhook(&self, org_id: &str, id: &str) -> Result<()> {
        let done = sqlx::query(&numbered(
            "DELETE FROM webhooks WHERE org_id = ? AND id = ?",
        ))
        .bind(org_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// The organisation's webhooks subscribed to `event`, secrets included, oldest first.
    pub async fn webhooks_for_event(&self, org_id: &str, event: &str) -> Result<Vec<Webhook>> {
        let sql =
            format!("SELECT {COLUMNS} FROM webhooks WHERE org_id = ? ORDER BY created_at, id");
        let rows = sqlx::query(&numbered(&sql))
            .bind(org_id)
            .fetch_all(&self.pool)
            .await?;
        let mut subscribed = Vec::new();
        for row in &rows {
            let webhook = webhook_from_row(row)?;
            if webhook.events.iter().any(|name| name == event) {
                subscribed.push(self.open_webhook(webhook)?);
            }
        }
        Ok(subscribed)
    }

    /// The webhook `id` of any organisation, secret included (dispatcher use).
    pub async fn get_webhook_any(&self, id: &str) -> Result<Webhook> {
        let webhook = self
            .get_any("webhooks", COLUMNS, id, webhook_from_row)
            .await?;
        self.open_webhook(webhook)
    }

    /// The webhook as read, its secret decrypted.
    fn open_webhook(&self, mut webhook: Webhook) -> Result<Webhook> {
        webhook.secret = self.open_secret(WEBHOOK_SECRET, &webhook.secret)?;
        Ok(webhook)
    }
}

fn webhook_from_row(row: &AnyRow) -> Result<Webhook> {
    Ok(Webhook {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        url: row.try_get("url")?,
        events: get_json(row, "events")?,
        secret: row.try_get("secret")?,
        created_at: get_ts(row, "created_at")?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ids;
    use crate::model::events;
    use crate::store::test_support::{at, temp_store};

    /// A webhook of `org_id` subscribed to `subscribed`, created at made-up second `secs`.
    pub(crate) fn webhook(org_id: &str, subscribed: &[&str], secs: i64) -> Webhook {
        Webhook {
            id: ids::new_id(ids::WEBHOOK),
            org_id: org_id.into(),
            url: format!("http://127.0.0.1:9/hook/{secs}"),
            events: subscribed.iter().map(|name| name.to_string()).collect(),
            secret: ids::new_webhook_secret(),
            created_at: at(secs),
        }
    }

    #[tokio::test]
    async fn crud_and_event_subscriptions() {
        let (store, _dir) = temp_store().await;
        let ended = webhook("org_a", &[events::CALL_ENDED], 0);
        let all = webhook("org_a", events::ALL, 1);
        let other_org = webhook("org_b", events::ALL, 2);
        for hook in [&ended, &all, &other_org] {
            store.insert_webhook(hook).await.expect("insert");
        }
        assert_eq!(
            store.get_webhook("org_a", &ended.id).await.expect("get"),
            ended
        );
        assert_eq!(
            store.get_webhook_any(&other_org.id).await.expect("any"),
            other_org
        );

        let for_ended = store
            .webhooks_for_event("org_a", events::CALL_ENDED)
            .await
            .expect("subscribed");
        assert_eq!(for_ended, vec![ended.clone(), all.clone()]);
        let for_ringing = store
            .webhooks_for_event("org_a", events::CALL_RINGING)
            .await
            .expect("subscribed");
        assert_eq!(for_ringing, vec![all.clone()]);
        assert!(store
            .webhooks_for_event("org_c", events::CALL_ENDED)
            .await
            .expect("none")
            .is_empty());

        let (page, total) = store.list_webhooks("org_a", 1, 0).await.expect("list");
        assert_eq!(total, 2);
        assert_eq!(page, vec![all.clone()]);

        assert!(matches!(
            store.delete_webhook("org_b", &ended.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.get_webhook("org_b", &ended.id).await,
            Err(StoreError::NotFound)
        ));
        store
            .delete_webhook("org_a", &ended.id)
            .await
            .expect("delete");
        assert!(matches!(
            store.get_webhook("org_a", &ended.id).await,
            Err(StoreError::NotFound)
        ));
    }
}
