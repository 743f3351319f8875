//! Rate-limit windows shared by the nodes of a cluster: each node writes its own count of
//! requests per API key in the key's current window and reads the sum of the other nodes'
//! open windows, so that a key's limit holds across the cluster (to within one
//! synchronisation interval of the other nodes' requests). Keys are named by their digest.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Row;

use super::{get_ts, numbered, ts, Result, Store};

/// One key's window on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateWindow {
    /// Hex SHA-256 of the API key.
    pub key_digest: String,
    /// When the window opened.
    pub start: DateTime<Utc>,
    /// Requests counted in it.
    pub count: u32,
}

impl Store {
    /// Writes node `node_id`'s `windows` (those that changed), forgets its windows closed
    /// at `now` (each `window` long), and returns, per key, the requests the other nodes
    /// counted in their windows still open at `now`.
    pub async fn sync_rate_windows(
        &self,
        node_id: &str,
        windows: &[RateWindow],
        window: TimeDelta,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, u32)>> {
        let opened_after = ts(&(now - window));
        let mut tx = self.pool().begin().await?;
        for own in windows {
            sqlx::query(&numbered(
                "INSERT INTO api_rate_windows (key_digest, node_id, window_start, count) \
                 VALUES (?, ?, ?, ?) ON CONFLICT (key_digest, node_id) DO UPDATE SET \
                 window_start = excluded.window_start, count = excluded.count",
            ))
            .bind(&own.key_digest)
            .bind(node_id)
            .bind(ts(&own.start))
            .bind(i64::from(own.count))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(&numbered(
            "DELETE FROM api_rate_windows WHERE node_id = ? AND window_start <= ?",
        ))
        .bind(node_id)
        .bind(&opened_after)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(&numbered(
            "SELECT key_digest, CAST(SUM(count) AS BIGINT) AS total FROM api_rate_windows \
             WHERE node_id <> ? AND window_start > ? GROUP BY key_digest",
        ))
        .bind(node_id)
        .bind(&opened_after)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let total: i64 = row.try_get("total")?;
                Ok((
                    row.try_get("key_digest")?,
                    u32::try_from(total).unwrap_or(u32::MAX),
                ))
            })
            .collect()
    }

    /// Every node's windows of `key_digest` (for tests and inspection), by node.
    pub async fn rate_windows_of(&self, key_digest: &str) -> Result<Vec<(String, RateWindow)>> {
        let rows = sqlx::query(&numbered(
            "SELECT node_id, window_start, count FROM api_rate_windows WHERE key_digest = ? \
             ORDER BY node_id",
        ))
        .bind(key_digest)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let count: i64 = row.try_get("count")?;
                Ok((
                    row.try_get("node_id")?,
                    RateWindow {
                        key_digest: key_digest.to_owned(),
                        start: get_ts(row, "window_start")?,
                        count: u32::try_from(count).unwrap_or(u32::MAX),
                    },
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{at, temp_store};

    fn window(key: &str, start: i64, count: u32) -> RateWindow {
        RateWindow {
            key_digest: key.into(),
            start: at(start),
            count,
        }
    }

    #[tokio::test]
    async fn each_node_sees_the_others_open_windows_summed_per_key() {
        let (store, _db) = temp_store().await;
        let minute = TimeDelta::seconds(60);
        let seen = store
            .sync_rate_windows(
                "node-a",
                &[window("k1", 0, 5), window("k2", 10, 1)],
                minute,
                at(20),
            )
            .await
            .unwrap();
        assert!(seen.is_empty(), "no other node: {seen:?}");
        let seen = store
            .sync_rate_windows("node-b", &[window("k1", 15, 3)], minute, at(20))
            .await
            .unwrap();
        let mut seen = seen;
        seen.sort();
        assert_eq!(seen, vec![("k1".into(), 5), ("k2".into(), 1)]);
        store
            .sync_rate_windows("node-c", &[window("k1", 18, 2)], minute, at(20))
            .await
            .unwrap();
        let seen = store
            .sync_rate_windows("node-a", &[window("k1", 0, 6)], minute, at(30))
            .await
            .unwrap();
        assert_eq!(
            seen,
            vec![("k1".into(), 5)],
            "b's 3 and c's 2; a's own not counted"
        );
        // At 61 s node-a's k1 window (opened at 0) has closed, its k2 (opened at 10) not:
        // node-b counts only c's k1 and a's k2, and node-a's next sync forgets its k1.
        let mut seen = store
            .sync_rate_windows("node-b", &[], minute, at(61))
            .await
            .unwrap();
        seen.sort();
        assert_eq!(seen, vec![("k1".into(), 2), ("k2".into(), 1)]);
        store
            .sync_rate_windows("node-a", &[], minute, at(61))
            .await
            .unwrap();
        let left = store.rate_windows_of("k1").await.unwrap();
        let nodes: Vec<&str> = left.iter().map(|(node, _)| node.as_str()).collect();
        assert_eq!(nodes, ["node-b", "node-c"]);
        assert_eq!(left[0].1, window("k1", 15, 3));
    }
}
