//! The nodes of a cluster and their leases. Each node holds a row that its heartbeat renews
//! ([`Store::renew_node_lease`]); a node whose lease has expired is lost, and the first
//! surviving node to take its row away ([`Store::claim_lost_nodes`]) ends its unfinished
//! calls. Taking the row is one conditional `DELETE`, so of several survivors exactly one
//! does it.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{get_ts, numbered, ts, Result, Store};

/// A node as its row shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    /// `[node] id`.
    pub id: String,
    /// Where other nodes reach its HTTP API (`host:port`), if anywhere.
    pub advertised_address: Option<String>,
    /// When it (last) started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// When it is lost unless it renews.
    pub lease_expires_at: DateTime<Utc>,
}

/// What renewing a lease found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseRenewal {
    /// The row was there and is renewed.
    Renewed,
    /// There was no row: the node is new, or another node took it as lost (and ended
    /// its calls); it holds a fresh lease now.
    Taken,
}

impl Store {
    /// Registers node `id` as starting now, with a lease until `lease_expires_at`
    /// (overwriting the row of an earlier run of the same node).
    pub async fn register_node(
        &self,
        id: &str,
        advertised_address: Option<&str>,
        now: DateTime<Utc>,
        lease_expires_at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(&numbered(
            "INSERT INTO nodes (id, advertised_address, started_at, heartbeat_at, \
             lease_expires_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET \
             advertised_address = excluded.advertised_address, started_at = excluded.started_at, \
             heartbeat_at = excluded.heartbeat_at, lease_expires_at = excluded.lease_expires_at",
        ))
        .bind(id)
        .bind(advertised_address)
        .bind(ts(&now))
        .bind(ts(&now))
        .bind(ts(&lease_expires_at))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Renews node `id`'s lease until `lease_expires_at`. When its row is gone (taken by a
    /// survivor that found the lease expired) the row is written again and
    /// [`LeaseRenewal::Taken`] returned.
    pub async fn renew_node_lease(
        &self,
        id: &str,
        advertised_address: Option<&str>,
        now: DateTime<Utc>,
        lease_expires_at: DateTime<Utc>,
    ) -> Result<LeaseRenewal> {
        let renewed = sqlx::query(&numbered(
            "UPDATE nodes SET heartbeat_at = ?, lease_expires_at = ?, advertised_address = ? \
             WHERE id = ?",
        ))
        .bind(ts(&now))
        .bind(ts(&lease_expires_at))
        .bind(advertised_address)
        .bind(id)
        .execute(self.pool())
        .await?
        .rows_affected();
        if renewed == 1 {
            return Ok(LeaseRenewal::Renewed);
        }
        self.register_node(id, advertised_address, now, lease_expires_at)
            .await?;
        Ok(LeaseRenewal::Taken)
    }

    /// Removes node `id`'s row (a node that stops cleanly, so that no survivor takes it
    /// as lost).
    pub async fn deregister_node(&self, id: &str) -> Result<()> {
        sqlx::query(&numbered("DELETE FROM nodes WHERE id = ?"))
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The nodes whose leases expired before `now`, other than `own_id`, each taken away
    /// by this call: a node is returned to exactly one caller, which then ends its calls.
    pub async fn claim_lost_nodes(&self, own_id: &str, now: DateTime<Utc>) -> Result<Vec<String>> {
        let now = ts(&now);
        let expired: Vec<String> = sqlx::query(&numbered(
            "SELECT id FROM nodes WHERE lease_expires_at < ? AND id <> ? ORDER BY id",
        ))
        .bind(&now)
        .bind(own_id)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<std::result::Result<_, sqlx::Error>>()?;
        let mut claimed = Vec::with_capacity(expired.len());
        for id in expired {
            let taken = sqlx::query(&numbered(
                "DELETE FROM nodes WHERE id = ? AND lease_expires_at < ?",
            ))
            .bind(&id)
            .bind(&now)
            .execute(self.pool())
            .await?
            .rows_affected();
            if taken == 1 {
                claimed.push(id);
            }
        }
        Ok(claimed)
    }

    /// Every node with a row, by id.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        let rows = sqlx::query(
            "SELECT id, advertised_address, started_at, heartbeat_at, lease_expires_at \
             FROM nodes ORDER BY id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(NodeRecord {
                    id: row.try_get("id")?,
                    advertised_address: row.try_get("advertised_address")?,
                    started_at: get_ts(row, "started_at")?,
                    heartbeat_at: get_ts(row, "heartbeat_at")?,
                    lease_expires_at: get_ts(row, "lease_expires_at")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::store::test_support::{at, temp_store};

    #[tokio::test]
    async fn a_lease_that_expires_is_claimed_by_exactly_one_survivor() {
        let (store, _db) = temp_store().await;
        let t0 = at(1_000);
        let lease = Duration::seconds(15);
        store
            .register_node("node-a", Some("127.0.0.1:8080"), t0, t0 + lease)
            .await
            .unwrap();
        store
            .register_node("node-b", None, t0, t0 + lease)
            .await
            .unwrap();
        // Within the lease nothing is lost, and a node never claims itself.
        assert!(store
            .claim_lost_nodes("node-a", t0 + Duration::seconds(14))
            .await
            .unwrap()
            .is_empty());
        // node-a renews, node-b does not.
        let t1 = t0 + Duration::seconds(10);
        assert_eq!(
            store
                .renew_node_lease("node-a", Some("127.0.0.1:8080"), t1, t1 + lease)
                .await
                .unwrap(),
            LeaseRenewal::Renewed
        );
        let t2 = t0 + Duration::seconds(16);
        assert!(store
            .claim_lost_nodes("node-b", t2)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store.claim_lost_nodes("node-a", t2).await.unwrap(),
            vec!["node-b".to_owned()]
        );
        assert!(
            store
                .claim_lost_nodes("node-c", t2)
                .await
                .unwrap()
                .is_empty(),
            "a lost node is claimed once"
        );
        let nodes = store.nodes().await.unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].id, "node-a");
        assert_eq!(nodes[0].heartbeat_at, t1);
        assert_eq!(nodes[0].started_at, t0);
        assert_eq!(
            nodes[0].advertised_address.as_deref(),
            Some("127.0.0.1:8080")
        );
        // node-b comes back: it learns that its row was taken.
        assert_eq!(
            store
                .renew_node_lease("node-b", None, t2, t2 + lease)
                .await
                .unwrap(),
            LeaseRenewal::Taken
        );
        store.deregister_node("node-b").await.unwrap();
        assert_eq!(store.nodes().await.unwrap().len(), 1);
    }
}
