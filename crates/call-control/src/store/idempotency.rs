//! Idempotency keys: the first response to a request carrying `X-Idempotency-Key`, kept so
//! that a retry (even after a restart) gets the same answer and creates nothing.

use chrono::Utc;
use sqlx::Row;

use super::{get_int, ts, Result, Store};

impl Store {
    /// The stored response (HTTP status, body) for the organisation's idempotency key.
    pub async fn idempotency_get(&self, org_id: &str, key: &str) -> Result<Option<(u16, String)>> {
        let row = sqlx::query(
            "SELECT status_code, body FROM idempotency_keys \
             WHERE org_id = ? AND idempotency_key = ?",
        )
        .bind(org_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Some((get_int(&row, "status_code")?, row.try_get("body")?))),
            None => Ok(None),
        }
    }

    /// Stores the response for the organisation's idempotency key; the first one stored
    /// wins (a later put for the same key changes nothing).
    pub async fn idempotency_put(
        &self,
        org_id: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO idempotency_keys (org_id, idempotency_key, status_code, body, created_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (org_id, idempotency_key) DO NOTHING",
        )
        .bind(org_id)
        .bind(key)
        .bind(i64::from(status))
        .bind(body)
        .bind(ts(&Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::test_support::{temp_store, url_in};
    use crate::store::Store;

    #[tokio::test]
    async fn first_response_wins_per_organisation() {
        let (store, _dir) = temp_store().await;
        assert_eq!(
            store.idempotency_get("org_a", "k1").await.expect("get"),
            None
        );
        store
            .idempotency_put("org_a", "k1", 201, r#"{"data":{"id":"call_1"}}"#)
            .await
            .expect("put");
        store
            .idempotency_put("org_a", "k1", 500, "later")
            .await
            .expect("second put is ignored");
        assert_eq!(
            store.idempotency_get("org_a", "k1").await.expect("get"),
            Some((201, r#"{"data":{"id":"call_1"}}"#.to_owned()))
        );
        assert_eq!(
            store.idempotency_get("org_b", "k1").await.expect("get"),
            None
        );
    }

    #[tokio::test]
    async fn survives_a_reopen_of_the_same_file() {
        let (store, dir) = temp_store().await;
        store
            .idempotency_put("org_a", "retry-me", 201, "body")
            .await
            .expect("put");
        store.close().await;
        drop(store);
        let reopened = Store::open(&url_in(&dir)).await.expect("reopen");
        assert_eq!(
            reopened
                .idempotency_get("org_a", "retry-me")
                .await
                .expect("get"),
            Some((201, "body".to_owned()))
        );
    }
}
