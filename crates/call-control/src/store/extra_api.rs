//! Store queries the REST API needs beyond the contract: health check and metric counts.

use super::numbered;
use std::collections::BTreeMap;

use sqlx::Row;

use super::{Result, Store};

impl Store {
    /// Checks that the database answers a trivial query.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query(&numbered("SELECT 1"))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Number of call records per status, across organisations (for `/metrics`).
    pub async fn call_status_counts(&self) -> Result<BTreeMap<String, u64>> {
        self.group_counts("SELECT status, COUNT(*) FROM calls GROUP BY status")
            .await
    }

    /// Number of webhook outbox rows per delivery state, across organisations (for `/metrics`).
    pub async fn outbox_state_counts(&self) -> Result<BTreeMap<String, u64>> {
        self.group_counts("SELECT state, COUNT(*) FROM webhook_outbox GROUP BY state")
            .await
    }

    async fn group_counts(&self, sql: &'static str) -> Result<BTreeMap<String, u64>> {
        let rows = sqlx::query(&numbered(sql)).fetch_all(self.pool()).await?;
        let mut counts = BTreeMap::new();
        for row in rows {
            let key: String = row.try_get(0)?;
            let count: i64 = row.try_get(1)?;
            counts.insert(key, u64::try_from(count).unwrap_or(0));
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::temp_store;

    #[tokio::test]
    async fn counts_are_empty_on_a_new_store() {
        let (store, _dir) = temp_store().await;
        store.ping().await.expect("ping");
        assert!(store.call_status_counts().await.expect("calls").is_empty());
        assert!(store
            .outbox_state_counts()
            .await
            .expect("outbox")
            .is_empty());
    }
}
