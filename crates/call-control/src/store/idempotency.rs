//! Idempotency keys: the first successful response to a request carrying
//! `X-Idempotency-Key`, kept with a fingerprint of the request (method, path, body) so that a
//! retry (even after a restart) gets the same answer and creates nothing, and the same key
//! sent with a different request can be told apart.

use chrono::Utc;
use sqlx::Row;

use super::{get_int, ts, Result, Store};

/// A response kept for an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// Response body.
    pub body: String,
    /// Fingerprint of the request it answered (`None` for rows kept before fingerprints).
    pub fingerprint: Option<String>,
}

impl Store {
    /// The response kept for the organisation's idempotency key.
    pub async fn idempotency_get(&self, org_id: &str, key: &str) -> Result<Option<StoredResponse>> {
        let row = sqlx::query(
            "SELECT status_code, body, request_fingerprint FROM idempotency_keys \
             WHERE org_id = ? AND idempotency_key = ?",
        )
        .bind(org_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(Some(StoredResponse {
                status: get_int(&row, "status_code")?,
                body: row.try_get("body")?,
                fingerprint: row.try_get("request_fingerprint")?,
            })),
            None => Ok(None),
        }
    }

    /// Keeps the response to the request with `fingerprint` for the organisation's
    /// idempotency key; the first one kept wins (a later put for the same key changes
    /// nothing).
    pub async fn idempotency_put(
        &self,
        org_id: &str,
        key: &str,
        fingerprint: &str,
        status: u16,
        body: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO idempotency_keys \
             (org_id, idempotency_key, request_fingerprint, status_code, body, created_at) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (org_id, idempotency_key) DO NOTHING",
        )
        .bind(org_id)
        .bind(key)
        .bind(fingerprint)
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
    use super::StoredResponse;
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
            .idempotency_put("org_a", "k1", "fp1", 201, r#"{"data":{"id":"call_1"}}"#)
            .await
            .expect("put");
        store
            .idempotency_put("org_a", "k1", "fp2", 200, "later")
            .await
            .expect("second put is ignored");
        assert_eq!(
            store.idempotency_get("org_a", "k1").await.expect("get"),
            Some(StoredResponse {
                status: 201,
                body: r#"{"data":{"id":"call_1"}}"#.to_owned(),
                fingerprint: Some("fp1".to_owned()),
            })
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
            .idempotency_put("org_a", "retry-me", "fp", 201, "body")
            .await
            .expect("put");
        store.close().await;
        drop(store);
        let reopened = Store::open(&url_in(&dir)).await.expect("reopen");
        assert_eq!(
            reopened
                .idempotency_get("org_a", "retry-me")
                .await
                .expect("get")
                .map(|stored| (stored.status, stored.body)),
            Some((201, "body".to_owned()))
        );
    }
}
