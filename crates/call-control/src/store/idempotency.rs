//! Idempotency keys: the first successful response to a request carrying
//! `X-Idempotency-Key`, kept with a fingerprint of the request (method, path, body) so that a
//! retry (even after a restart) gets the same answer and creates nothing, and the same key
//! sent with a different request can be told apart.

use super::numbered;
use chrono::{DateTime, Duration, Utc};
use sqlx::Row;

use super::{get_int, ts, Result, Store};

/// How long a key is remembered: a retry within it gets the first answer, after it the key
/// may be used again (payment APIs keep theirs 24 hours).
pub const KEY_LIFETIME: Duration = Duration::hours(24);

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

/// A response to keep for an idempotency key, written by the handler itself in the
/// transaction that creates what the request asked for (see [`Store::admit_call`]), so that
/// no crash can leave the object created and the key unclaimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptResponse {
    /// The client's `X-Idempotency-Key`.
    pub key: String,
    /// Fingerprint of the request (method, path, body).
    pub fingerprint: String,
    /// HTTP status of the response.
    pub status: u16,
    /// Response body.
    pub body: String,
}

impl Store {
    /// The response kept for the organisation's idempotency key, unless it is older than
    /// [`KEY_LIFETIME`] at `now`.
    pub async fn idempotency_get(
        &self,
        org_id: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<StoredResponse>> {
        let row = sqlx::query(&numbered(
            "SELECT status_code, body, request_fingerprint FROM idempotency_keys \
             WHERE org_id = ? AND idempotency_key = ? AND created_at > ?",
        ))
        .bind(org_id)
        .bind(key)
        .bind(ts(&(now - KEY_LIFETIME)))
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
    /// idempotency key at `now`; the first one kept wins (a later put for the same key
    /// changes nothing) until it has expired.
    pub async fn idempotency_put(
        &self,
        org_id: &str,
        key: &str,
        fingerprint: &str,
        status: u16,
        body: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let kept = KeptResponse {
            key: key.to_owned(),
            fingerprint: fingerprint.to_owned(),
            status,
            body: body.to_owned(),
        };
        claim_on(&self.pool, org_id, &kept, now).await?;
        Ok(())
    }

    /// Forgets the organisation's key if it holds the response to the request with
    /// `fingerprint` (its request failed after all, so that a retry is served anew).
    pub async fn idempotency_forget(
        &self,
        org_id: &str,
        key: &str,
        fingerprint: &str,
    ) -> Result<()> {
        sqlx::query(&numbered(
            "DELETE FROM idempotency_keys \
             WHERE org_id = ? AND idempotency_key = ? AND request_fingerprint = ?",
        ))
        .bind(org_id)
        .bind(key)
        .bind(fingerprint)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets the keys that have expired at `now`; returns how many.
    pub async fn purge_idempotency(&self, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(&numbered(
            "DELETE FROM idempotency_keys WHERE created_at <= ?",
        ))
        .bind(ts(&(now - KEY_LIFETIME)))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

/// Claims the organisation's key for `kept` at `now` through `executor`: true when stored,
/// false when the key is held by a response that has not expired (which is kept).
pub(super) async fn claim_on<'e, E>(
    executor: E,
    org_id: &str,
    kept: &KeptResponse,
    now: DateTime<Utc>,
) -> Result<bool>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let done = sqlx::query(&numbered(
        "INSERT INTO idempotency_keys \
         (org_id, idempotency_key, request_fingerprint, status_code, body, created_at) \
         VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (org_id, idempotency_key) DO UPDATE SET \
         request_fingerprint = excluded.request_fingerprint, \
         status_code = excluded.status_code, body = excluded.body, \
         created_at = excluded.created_at \
         WHERE idempotency_keys.created_at <= ?",
    ))
    .bind(org_id)
    .bind(&kept.key)
    .bind(&kept.fingerprint)
    .bind(i64::from(kept.status))
    .bind(&kept.body)
    .bind(ts(&now))
    .bind(ts(&(now - KEY_LIFETIME)))
    .execute(executor)
    .await?;
    Ok(done.rows_affected() > 0)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::{StoredResponse, KEY_LIFETIME};
    use crate::store::test_support::temp_store;

    #[tokio::test]
    async fn first_response_wins_per_organisation() {
        let (store, _dir) = temp_store().await;
        assert_eq!(
            store
                .idempotency_get("org_a", "k1", Utc::now())
                .await
                .expect("get"),
            None
        );
        store
            .idempotency_put(
                "org_a",
                "k1",
                "fp1",
                201,
                r#"{"data":{"id":"call_1"}}"#,
                Utc::now(),
            )
            .await
            .expect("put");
        store
            .idempotency_put("org_a", "k1", "fp2", 200, "later", Utc::now())
            .await
            .expect("second put is ignored");
        assert_eq!(
            store
                .idempotency_get("org_a", "k1", Utc::now())
                .await
                .expect("get"),
            Some(StoredResponse {
                status: 201,
                body: r#"{"data":{"id":"call_1"}}"#.to_owned(),
                fingerprint: Some("fp1".to_owned()),
            })
        );
        assert_eq!(
            store
                .idempotency_get("org_b", "k1", Utc::now())
                .await
                .expect("get"),
            None
        );
    }

    #[tokio::test]
    async fn survives_a_reopen_of_the_same_file() {
        let (store, dir) = temp_store().await;
        store
            .idempotency_put("org_a", "retry-me", "fp", 201, "body", Utc::now())
            .await
            .expect("put");
        store.close().await;
        drop(store);
        let reopened = dir.reopen().await;
        assert_eq!(
            reopened
                .idempotency_get("org_a", "retry-me", Utc::now())
                .await
                .expect("get")
                .map(|stored| (stored.status, stored.body)),
            Some((201, "body".to_owned()))
        );
    }

    #[tokio::test]
    async fn keys_expire_after_24_hours_and_are_purged() {
        let (store, _dir) = temp_store().await;
        let t0 = Utc::now();
        store
            .idempotency_put("org_a", "k", "fp1", 201, "first", t0)
            .await
            .expect("put");
        let almost = t0 + KEY_LIFETIME - chrono::Duration::seconds(1);
        let kept = store
            .idempotency_get("org_a", "k", almost)
            .await
            .expect("get");
        assert_eq!(kept.map(|k| k.body), Some("first".to_owned()));
        let later = t0 + KEY_LIFETIME + chrono::Duration::seconds(1);
        assert_eq!(
            store
                .idempotency_get("org_a", "k", later)
                .await
                .expect("get"),
            None
        );
        // The key may be used again, for another request.
        store
            .idempotency_put("org_a", "k", "fp2", 200, "second", later)
            .await
            .expect("put again");
        let kept = store
            .idempotency_get("org_a", "k", later)
            .await
            .expect("get");
        assert_eq!(
            kept.map(|k| (k.fingerprint, k.body)),
            Some((Some("fp2".to_owned()), "second".to_owned()))
        );
        // Purging forgets only expired keys.
        store
            .idempotency_put("org_a", "old", "fp", 201, "old", t0)
            .await
            .expect("put");
        assert_eq!(store.purge_idempotency(later).await.expect("purge"), 1);
        assert!(store
            .idempotency_get("org_a", "k", later)
            .await
            .expect("get")
            .is_some());
    }
}
