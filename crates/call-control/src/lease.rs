//! The node's lease on its row in the `nodes` table, and the end of lost nodes' calls.
//!
//! Every third of `[node] lease` the node renews its lease, then looks for nodes whose
//! leases expired: each one it takes ([`Store::claim_lost_nodes`], exactly one survivor
//! does) has its unfinished calls ended as `failed`, `end_reason` `node_lost`, with their
//! `call.ended` webhooks. A node that finds its own row taken (it was silent for longer
//! than its lease: a pause, or the database out of its reach) says so loudly: its calls
//! have been ended by another node. A node that stops cleanly removes its row.
//!
//! On one node the same runs, and finds nothing to take.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::engine::recovery;
use crate::store::{LeaseRenewal, Store, StoreError};
use crate::webhooks::Webhooks;

/// What a lease round needs.
#[derive(Clone)]
pub struct LeaseKeeper {
    store: Store,
    webhooks: Webhooks,
    node_id: String,
    advertised_address: Option<String>,
    lease: Duration,
    recordings_dir: PathBuf,
    per_minute_cents: i64,
}

/// The running lease task ([`LeaseKeeper::spawn`]).
pub struct LeaseTask {
    keeper: LeaseKeeper,
    stop: Arc<Notify>,
    task: JoinHandle<()>,
}

impl LeaseKeeper {
    /// A keeper of node `node_id`'s lease of length `lease`, ending lost nodes' calls with
    /// the recordings directory and price given.
    pub fn new(
        store: Store,
        webhooks: Webhooks,
        node_id: String,
        advertised_address: Option<String>,
        lease: Duration,
        recordings_dir: PathBuf,
        per_minute_cents: i64,
    ) -> LeaseKeeper {
        LeaseKeeper {
            store,
            webhooks,
            node_id,
            advertised_address,
            lease,
            recordings_dir,
            per_minute_cents,
        }
    }

    fn expiry(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(15))
    }

    /// Takes the lease as a node that starts now.
    pub async fn register(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.store
            .register_node(
                &self.node_id,
                self.advertised_address.as_deref(),
                now,
                self.expiry(now),
            )
            .await
    }

    /// One round at `now`: renews the lease, then ends the calls of every node whose lease
    /// expired and that this node took. Returns the nodes taken.
    pub async fn round(&self, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        let renewal = self
            .store
            .renew_node_lease(
                &self.node_id,
                self.advertised_address.as_deref(),
                now,
                self.expiry(now),
            )
            .await?;
        if renewal == LeaseRenewal::Taken {
            error!(
                node_id = %self.node_id,
                "this node's lease had expired and another node took it: the calls it was \
                 running have been recorded as node_lost"
            );
        }
        let lost = self.store.claim_lost_nodes(&self.node_id, now).await?;
        for node in &lost {
            recovery::end_node_calls(
                &self.store,
                &self.webhooks,
                &self.recordings_dir,
                self.per_minute_cents,
                node,
                recovery::Interruption::NodeLost,
            )
            .await?;
        }
        Ok(lost)
    }

    /// Registers the node and renews its lease every third of it until
    /// [`LeaseTask::stop`].
    pub async fn spawn(self) -> Result<LeaseTask, StoreError> {
        self.register(Utc::now()).await?;
        let stop = Arc::new(Notify::new());
        let keeper = self.clone();
        let stopped = Arc::clone(&stop);
        let period = self.lease / 3;
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = stopped.notified() => return,
                }
                match keeper.round(Utc::now()).await {
                    Ok(lost) if !lost.is_empty() => info!(?lost, "lost nodes' calls ended"),
                    Ok(_) => {}
                    Err(error) => warn!(%error, "node lease not renewed; retrying"),
                }
            }
        });
        Ok(LeaseTask {
            keeper: self,
            stop,
            task,
        })
    }
}

impl LeaseTask {
    /// Stops renewing and removes the node's row: a node that stops cleanly is not lost.
    pub async fn stop(self) {
        self.stop.notify_one();
        let _ = self.task.await;
        if let Err(error) = self
            .keeper
            .store
            .deregister_node(&self.keeper.node_id)
            .await
        {
            warn!(%error, "node row not removed; other nodes will find its lease expired");
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration as Span;

    use super::*;
    use crate::config::Config;
    use crate::model::{events, CallDirection, CallOutcome, CallStatus};
    use crate::store::test_support::{call, temp_store, webhook};
    use crate::store::{Admission, CallAdmission};

    fn keeper(
        store: &Store,
        webhooks: &Webhooks,
        node: &str,
        dir: &std::path::Path,
    ) -> LeaseKeeper {
        LeaseKeeper::new(
            store.clone(),
            webhooks.clone(),
            node.to_owned(),
            None,
            Duration::from_secs(15),
            dir.to_path_buf(),
            2,
        )
    }

    #[tokio::test]
    async fn a_survivor_ends_a_lost_nodes_calls_once_and_leaves_the_living_ones_alone() {
        let (store, _db) = temp_store().await;
        let key = store.create_key("acme", 100).await.expect("org");
        let org = store.org_for_key(&key).await.expect("lookup").expect("org");
        store
            .insert_webhook(&webhook(&org, &[events::CALL_ENDED], 0))
            .await
            .expect("webhook");
        let recordings = tempfile::tempdir().expect("recordings dir");
        let webhooks = Webhooks::start(store.clone(), &Config::default());
        let a = keeper(&store, &webhooks, "node-a", recordings.path());
        let b = keeper(&store, &webhooks, "node-b", recordings.path());

        let t0 = Utc::now() - Span::seconds(600);
        a.register(t0).await.expect("a registers");
        b.register(t0).await.expect("b registers");
        // node-b runs an answered call and a ringing one; node-a runs one of its own.
        let mut talking = call(&org, "agt_1", CallDirection::Inbound, 0);
        talking.node_id = Some("node-b".into());
        talking.status = CallStatus::InProgress;
        talking.started_at = Some(t0);
        talking.answered_at = Some(t0 + Span::seconds(1));
        let mut ringing = call(&org, "agt_1", CallDirection::Outbound, 1);
        ringing.node_id = Some("node-b".into());
        ringing.status = CallStatus::Ringing;
        ringing.started_at = Some(t0);
        let mut own = call(&org, "agt_1", CallDirection::Inbound, 2);
        own.node_id = Some("node-a".into());
        own.status = CallStatus::InProgress;
        own.answered_at = Some(t0);
        let admission = Admission {
            reserve_cents: 2,
            max_live_calls: None,
        };
        for live in [&talking, &ringing, &own] {
            assert_eq!(
                store
                    .admit_call(live, admission, None)
                    .await
                    .expect("admit"),
                CallAdmission::Admitted
            );
        }
        let last_seen = t0 + Span::seconds(61);
        store
            .heartbeat_calls(std::slice::from_ref(&talking.id), last_seen)
            .await
            .expect("heartbeat");

        // Within the lease: nothing is lost.
        let t1 = t0 + Span::seconds(10);
        assert!(a.round(t1).await.expect("round").is_empty());
        // node-b falls silent; node-a renews past node-b's expiry and takes it.
        let t2 = t0 + Span::seconds(20);
        assert_eq!(a.round(t2).await.expect("round"), vec!["node-b".to_owned()]);

        let lost = store.get_call_any(&talking.id).await.expect("call");
        assert_eq!(lost.status, CallStatus::Failed);
        assert_eq!(lost.outcome, Some(CallOutcome::Error));
        assert_eq!(lost.end_reason.as_deref(), Some("node_lost"));
        assert_eq!(
            lost.ended_at,
            Some(last_seen),
            "ended where last seen alive"
        );
        assert_eq!(lost.duration_seconds, Some(60.0));
        let never_answered = store.get_call_any(&ringing.id).await.expect("call");
        assert_eq!(never_answered.status, CallStatus::Failed);
        assert_eq!(never_answered.end_reason.as_deref(), Some("node_lost"));
        let alive = store.get_call_any(&own.id).await.expect("call");
        assert_eq!(
            alive.status,
            CallStatus::InProgress,
            "node-a's call goes on"
        );
        assert_eq!(alive.ended_at, None);

        // Each lost call's call.ended is in the outbox, once (delivered or not: the
        // dispatcher may have tried the hook already).
        let rows = sqlx::query("SELECT event, payload FROM webhook_outbox")
            .fetch_all(store.pool())
            .await
            .expect("outbox");
        let mut ended = Vec::new();
        for row in &rows {
            use sqlx::Row;
            let event: String = row.get("event");
            let payload: serde_json::Value =
                serde_json::from_str(&row.get::<String, _>("payload")).expect("JSON");
            assert_eq!(event, events::CALL_ENDED);
            assert_eq!(payload["data"]["end_reason"], "node_lost");
            ended.push(payload["data"]["id"].as_str().expect("call id").to_owned());
        }
        ended.sort_unstable();
        let mut expected = vec![talking.id.clone(), ringing.id.clone()];
        expected.sort_unstable();
        assert_eq!(ended, expected);
        // One minute charged for the answered call, both holds of node-b released.
        let usage = store.org_usage(&org).await.expect("usage");
        assert_eq!((usage.balance_cents, usage.live_calls), (98, 1));

        // A later round (here by node-b's restart under a new lease) finds nothing more.
        let t3 = t2 + Span::seconds(1);
        b.register(t3).await.expect("b is back");
        assert!(a.round(t3).await.expect("round").is_empty());
        webhooks.stop();
    }
}
