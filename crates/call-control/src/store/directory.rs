//! The routing directory: what an inbound INVITE needs (trunks and their allowed networks,
//! phone numbers, agents), held in memory so that routing a call reads nothing from the
//! database.
//!
//! The store keeps one [`Directory`] per process. Every write of a trunk, number or agent
//! through the store reloads it before the write returns, so an API request that created a
//! number is answered only once the next INVITE can find that number. A reload reads the
//! three tables whole (one snapshot, swapped in at once, so a call never sees a number
//! whose trunk is not there yet); reloads run one at a time, so the last one to run has
//! seen every write committed before it. When a reload fails (the database is down), the
//! directory empties and routing falls back to reading the database, which then reports
//! its failure: a deleted number must not keep answering calls from a stale copy.
//!
//! On PostgreSQL, where several nodes share the database, every such write is also
//! announced (`NOTIFY dialcore_directory`), and each node follows the announcements
//! ([`Store::follow_directory_changes`]) and reloads its own directory, so a number
//! created through one node routes on every node within milliseconds.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{Result, Store, StoreError};
use crate::model::{Agent, PhoneNumber, Trunk};

/// The cached tables (see the module docs).
#[derive(Debug)]
pub(crate) struct Directory {
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    /// Held while a snapshot is read from the database.
    reload: tokio::sync::Mutex<()>,
    /// Names this directory in its announcements, so that it skips its own.
    instance: String,
}

impl Default for Directory {
    fn default() -> Directory {
        Directory {
            snapshot: RwLock::default(),
            reload: tokio::sync::Mutex::default(),
            instance: crate::ids::new_id("dir"),
        }
    }
}

/// The PostgreSQL channel that writes of trunks, numbers and agents are announced on.
const CHANNEL: &str = "dialcore_directory";

/// How long a node waits before listening again when its listening connection failed.
const RELISTEN_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// One consistent copy of the routing tables.
#[derive(Debug)]
struct Snapshot {
    /// Every trunk, oldest first (the order of [`Store::all_trunks`]).
    trunks: Vec<Trunk>,
    /// Index into `trunks` by trunk id.
    trunk_index: HashMap<String, usize>,
    /// Phone numbers by their E.164 number.
    numbers: HashMap<String, PhoneNumber>,
    /// Agents by organisation and id.
    agents: HashMap<(String, String), Agent>,
}

impl Directory {
    fn current(&self) -> Option<Arc<Snapshot>> {
        self.snapshot
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, snapshot: Option<Arc<Snapshot>>) {
        *self
            .snapshot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = snapshot;
    }
}

impl Store {
    /// Loads the routing directory (the service does this at start, so that the first
    /// INVITE finds it loaded).
    pub async fn load_directory(&self) -> Result<()> {
        self.reload_directory().await.map(drop)
    }

    /// Reloads the directory after a write of a trunk, number or agent (see the module
    /// docs); a failed reload empties it and is logged, the write itself stands.
    pub(crate) async fn directory_changed(&self) {
        if let Err(error) = self.reload_directory().await {
            tracing::warn!(%error, "routing directory not reloaded: routing reads the database");
        }
        if self.backend() == super::Backend::Postgres {
            let announced = sqlx::query(&super::numbered("SELECT pg_notify(?, ?) IS NULL"))
                .bind(CHANNEL)
                .bind(&self.directory.instance)
                .execute(self.pool())
                .await;
            if let Err(error) = announced {
                // The other nodes pick the change up at their next periodic reload.
                tracing::warn!(%error, "directory change not announced to the other nodes");
            }
        }
    }

    /// On PostgreSQL, follows the other nodes' announcements of directory changes on a
    /// connection of its own to `url` and reloads the directory at each (and after the
    /// connection was lost, for what it missed), until `stop` resolves. On SQLite there is
    /// no one to hear: returns at once.
    pub async fn follow_directory_changes(
        &self,
        url: &str,
        stop: impl std::future::Future<Output = ()>,
    ) {
        if self.backend() != super::Backend::Postgres {
            return;
        }
        tokio::pin!(stop);
        loop {
            let listened = tokio::select! {
                listened = self.listen_for_changes(url) => listened,
                () = &mut stop => return,
            };
            if let Err(error) = listened {
                tracing::warn!(%error, "not listening for directory changes; retrying");
            }
            tokio::select! {
                () = tokio::time::sleep(RELISTEN_DELAY) => {}
                () = &mut stop => return,
            }
        }
    }

    /// Listens on [`CHANNEL`] until the connection fails.
    async fn listen_for_changes(&self, url: &str) -> Result<()> {
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen(CHANNEL).await?;
        // What changed while this node was not listening.
        self.directory_reloaded_for("listening").await;
        loop {
            match listener.try_recv().await? {
                Some(notice) if notice.payload() == self.directory.instance => {}
                Some(_) => self.directory_reloaded_for("another node changed it").await,
                // The connection was lost; the next receive reconnects (and may have
                // missed announcements).
                None => self.directory_reloaded_for("reconnected").await,
            }
        }
    }

    async fn directory_reloaded_for(&self, why: &'static str) {
        match self.reload_directory().await {
            Ok(_) => tracing::debug!(why, "routing directory reloaded"),
            Err(error) => {
                tracing::warn!(%error, why, "routing directory not reloaded: routing reads the database")
            }
        }
    }

    async fn reload_directory(&self) -> Result<Arc<Snapshot>> {
        let _one_at_a_time = self.directory.reload.lock().await;
        let loaded = self.read_snapshot().await;
        let snapshot = loaded.as_ref().ok().cloned();
        self.directory.set(snapshot);
        loaded
    }

    async fn read_snapshot(&self) -> Result<Arc<Snapshot>> {
        let trunks = self.all_trunks().await?;
        let numbers = self.all_numbers().await?;
        let agents = self.all_agents().await?;
        let trunk_index = trunks
            .iter()
            .enumerate()
            .map(|(index, trunk)| (trunk.id.clone(), index))
            .collect();
        Ok(Arc::new(Snapshot {
            trunks,
            trunk_index,
            numbers: numbers
                .into_iter()
                .map(|number| (number.number.clone(), number))
                .collect(),
            agents: agents
                .into_iter()
                .map(|agent| ((agent.org_id.clone(), agent.id.clone()), agent))
                .collect(),
        }))
    }

    /// The directory, loaded from the database first if it is empty (before the service
    /// loaded it, or after a failed reload).
    async fn directory(&self) -> Result<Arc<Snapshot>> {
        match self.directory.current() {
            Some(snapshot) => Ok(snapshot),
            None => self.reload_directory().await,
        }
    }

    /// Whether any trunk allows `ip` to send us calls (`allowed` decides one trunk's
    /// networks), from the directory without copying it.
    pub async fn routing_any_trunk(&self, allowed: impl Fn(&Trunk) -> bool) -> Result<bool> {
        Ok(self.directory().await?.trunks.iter().any(allowed))
    }

    /// [`Store::get_trunk_any`], from the directory.
    pub async fn routing_trunk(&self, id: &str) -> Result<Trunk> {
        let snapshot = self.directory().await?;
        let index = snapshot
            .trunk_index
            .get(id)
            .copied()
            .ok_or(StoreError::NotFound)?;
        Ok(snapshot.trunks[index].clone())
    }

    /// [`Store::find_number`], from the directory.
    pub async fn routing_number(&self, number: &str) -> Result<Option<PhoneNumber>> {
        Ok(self.directory().await?.numbers.get(number).cloned())
    }

    /// [`Store::get_agent`], from the directory.
    pub async fn routing_agent(&self, org_id: &str, id: &str) -> Result<Agent> {
        self.directory()
            .await?
            .agents
            .get(&(org_id.to_owned(), id.to_owned()))
            .cloned()
            .ok_or(StoreError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::ids;
    use crate::model::PhoneNumber;
    use crate::store::agents::tests::agent;
    use crate::store::test_support::{at, temp_store};
    use crate::store::trunks::tests::trunk;
    use crate::store::StoreError;

    #[tokio::test]
    async fn on_postgres_another_nodes_write_shows_in_this_nodes_directory_at_once() {
        let (store, db) = temp_store().await;
        if store.backend() != crate::store::Backend::Postgres {
            eprintln!("SQLite run: directory changes are announced on PostgreSQL only");
            return;
        }
        // This node's store, loaded and following; the other node's, writing.
        let here = db.reopen().await;
        here.load_directory().await.expect("loaded");
        let stop = std::sync::Arc::new(tokio::sync::Notify::new());
        let following = {
            let here = here.clone();
            let url = db.url().to_owned();
            let stop = std::sync::Arc::clone(&stop);
            tokio::spawn(async move {
                here.follow_directory_changes(&url, async move { stop.notified().await })
                    .await
            })
        };
        let trunk = trunk("org_a", 0);
        let agent = agent("org_a", 0);
        // Listening starts with a reload: give it a moment, then write elsewhere.
        tokio::time::sleep(Duration::from_millis(200)).await;
        store.insert_trunk(&trunk).await.expect("trunk");
        store.insert_agent(&agent).await.expect("agent");
        let number = PhoneNumber {
            id: ids::new_id(ids::PHONE_NUMBER),
            org_id: "org_a".into(),
            number: "+14155550177".into(),
            trunk_id: trunk.id.clone(),
            agent_id: Some(agent.id.clone()),
            created_at: at(1),
            updated_at: at(1),
        };
        store.insert_number(&number).await.expect("number");
        let written = tokio::time::Instant::now();
        loop {
            if here.routing_number(&number.number).await.expect("routed") == Some(number.clone()) {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(2),
                "the number never reached the other node's directory"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(here.routing_trunk(&trunk.id).await.expect("trunk"), trunk);
        stop.notify_one();
        following.await.expect("stops when told");
    }

    #[tokio::test]
    async fn writes_show_at_once_and_routing_reads_nothing_from_the_database() {
        let (store, dir) = temp_store().await;
        let trunk = trunk("org_a", 0);
        let agent = agent("org_a", 0);
        store.insert_trunk(&trunk).await.expect("trunk");
        store.insert_agent(&agent).await.expect("agent");
        let mut number = PhoneNumber {
            id: ids::new_id(ids::PHONE_NUMBER),
            org_id: "org_a".into(),
            number: "+14155550100".into(),
            trunk_id: trunk.id.clone(),
            agent_id: Some(agent.id.clone()),
            created_at: at(1),
            updated_at: at(1),
        };
        store.insert_number(&number).await.expect("number");
        assert_eq!(
            store.routing_number("+14155550100").await.expect("routed"),
            Some(number.clone())
        );
        assert_eq!(store.routing_trunk(&trunk.id).await.expect("trunk"), trunk);
        assert_eq!(
            store
                .routing_agent("org_a", &agent.id)
                .await
                .expect("agent"),
            agent
        );
        assert!(matches!(
            store.routing_agent("org_b", &agent.id).await,
            Err(StoreError::NotFound)
        ));

        number.agent_id = None;
        store.update_number(&number).await.expect("update");
        let routed = store.routing_number("+14155550100").await.expect("routed");
        assert_eq!(routed.and_then(|n| n.agent_id), None, "the update shows");

        // A handle whose only connection the test holds: loaded first, it routes
        // without the database.
        let starved = dir.starved(Duration::from_millis(100)).await;
        starved.load_directory().await.expect("loaded");
        let held = starved.pool().acquire().await.expect("the one connection");
        assert!(starved
            .routing_number("+14155550100")
            .await
            .expect("from memory")
            .is_some());
        let known = starved
            .routing_any_trunk(|t| t.id == trunk.id)
            .await
            .expect("from memory");
        assert!(known);
        // A reload that fails empties the directory: routing then asks the database
        // and reports its failure, never a stale "yes" or a "no such number".
        starved.directory_changed().await;
        let failure = starved
            .routing_number("+14155550100")
            .await
            .expect_err("the database is unreachable");
        assert!(matches!(failure, StoreError::Database(_)), "{failure}");
        drop(held);
        assert!(starved
            .routing_number("+14155550100")
            .await
            .expect("reloaded once the database answers")
            .is_some());

        store
            .delete_number("org_a", &number.id)
            .await
            .expect("delete");
        assert_eq!(
            store.routing_number("+14155550100").await.expect("routed"),
            None
        );
    }
}
