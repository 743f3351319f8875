//! Agents.

use super::numbered;
use sqlx::any::AnyRow;
use sqlx::Row;

use chrono::{DateTime, Utc};

use super::{get_enum, get_json, get_ts, ts, write_error, Result, RowFilter, Store, StoreError};
use crate::model::{Agent, AgentStatus};

/// What [`Store::remove_agent`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentRemoval {
    /// The agent had no calls, test runs or batches: its row is gone.
    Deleted,
    /// Calls, test runs or batches name the agent: it is kept with status `archived`.
    Archived,
}

/// Whether a call, test run or test batch names agent `agents.id` (SQL, for `agents` rows).
const IN_USE: &str = "(EXISTS (SELECT 1 FROM calls c WHERE c.agent_id = agents.id) \
     OR EXISTS (SELECT 1 FROM test_call_runs r WHERE r.agent_id = agents.id) \
     OR EXISTS (SELECT 1 FROM test_call_batches b WHERE b.agent_id = agents.id))";

const COLUMNS: &str = "id, org_id, name, prompt, greeting, status, runtime, \
                       default_call_settings, created_at, updated_at";

impl Store {
    /// Stores a new agent ([`StoreError::Conflict`] if its id exists).
    pub async fn insert_agent(&self, agent: &Agent) -> Result<()> {
        sqlx::query(&numbered(
            "INSERT INTO agents (id, org_id, name, prompt, greeting, status, runtime, \
             default_call_settings, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&agent.id)
        .bind(&agent.org_id)
        .bind(&agent.name)
        .bind(&agent.prompt)
        .bind(&agent.greeting)
        .bind(agent.status.as_str())
        .bind(serde_json::to_string(&self.seal_runtime(&agent.runtime)?)?)
        .bind(serde_json::to_string(&agent.default_call_settings)?)
        .bind(ts(&agent.created_at))
        .bind(ts(&agent.updated_at))
        .execute(&self.pool)
        .await
        .map_err(|error| write_error(error, || format!("agent {} exists", agent.id)))?;
        self.directory_changed().await;
        Ok(())
    }

    /// The organisation's agent `id` ([`StoreError::NotFound`] otherwise).
    pub async fn get_agent(&self, org_id: &str, id: &str) -> Result<Agent> {
        let agent = self
            .get_scoped("agents", COLUMNS, org_id, id, agent_from_row)
            .await?;
        self.open_agent(agent)
    }

    /// Every agent of every organisation, decrypted (the routing directory).
    pub(crate) async fn all_agents(&self) -> Result<Vec<Agent>> {
        let sql = format!("SELECT {COLUMNS} FROM agents");
        let rows = sqlx::query(&numbered(&sql)).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| self.open_agent(agent_from_row(row)?))
            .collect()
    }

    /// The agent as read, its header values decrypted.
    fn open_agent(&self, mut agent: Agent) -> Result<Agent> {
        agent.runtime = self.open_runtime(&agent.runtime)?;
        Ok(agent)
    }

    /// One page of the organisation's agents, newest first, and how many it has in all;
    /// archived agents only with `include_archived`.
    pub async fn list_agents(
        &self,
        org_id: &str,
        include_archived: bool,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<Agent>, u64)> {
        let archived = (!include_archived).then_some(AgentStatus::Archived.as_str());
        let filter = RowFilter::owned_by(org_id).and_ne("status", archived);
        let (agents, total) = self
            .list_filtered("agents", COLUMNS, &filter, limit, offset, agent_from_row)
            .await?;
        let agents = agents
            .into_iter()
            .map(|agent| self.open_agent(agent))
            .collect::<Result<_>>()?;
        Ok((agents, total))
    }

    /// Removes the organisation's agent `id` without leaving a record that points nowhere:
    /// an agent that calls, test runs or test batches name is archived (status `archived`,
    /// `updated_at` = `now`); one that nothing names is deleted, its phone numbers becoming
    /// unassigned. [`StoreError::NotFound`] when there is no such agent.
    pub async fn remove_agent(
        &self,
        org_id: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<AgentRemoval> {
        let mut tx = self.pool.begin().await?;
        let archived = sqlx::query(&numbered(&format!(
            "UPDATE agents SET status = ?, updated_at = ? \
             WHERE org_id = ? AND id = ? AND {IN_USE}"
        )))
        .bind(AgentStatus::Archived.as_str())
        .bind(ts(&now))
        .bind(org_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let removal = if archived.rows_affected() > 0 {
            AgentRemoval::Archived
        } else {
            let deleted = sqlx::query(&numbered(&format!(
                "DELETE FROM agents WHERE org_id = ? AND id = ? AND NOT {IN_USE}"
            )))
            .bind(org_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if deleted.rows_affected() == 0 {
                return Err(StoreError::NotFound);
            }
            AgentRemoval::Deleted
        };
        tx.commit().await?;
        self.directory_changed().await;
        Ok(removal)
    }

    /// Writes every field of the agent (as given, `updated_at` included).
    pub async fn update_agent(&self, agent: &Agent) -> Result<()> {
        let done = sqlx::query(&numbered(
            "UPDATE agents SET name = ?, prompt = ?, greeting = ?, status = ?, runtime = ?, \
             default_call_settings = ?, updated_at = ? WHERE org_id = ? AND id = ?",
        ))
        .bind(&agent.name)
        .bind(&agent.prompt)
        .bind(&agent.greeting)
        .bind(agent.status.as_str())
        .bind(serde_json::to_string(&self.seal_runtime(&agent.runtime)?)?)
        .bind(serde_json::to_string(&agent.default_call_settings)?)
        .bind(ts(&agent.updated_at))
        .bind(&agent.org_id)
        .bind(&agent.id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.directory_changed().await;
        Ok(())
    }

    /// Deletes the organisation's agent `id`; phone numbers assigned to it become unassigned.
    pub async fn delete_agent(&self, org_id: &str, id: &str) -> Result<()> {
        let done = sqlx::query(&numbered("DELETE FROM agents WHERE org_id = ? AND id = ?"))
            .bind(org_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.directory_changed().await;
        Ok(())
    }
}

fn agent_from_row(row: &AnyRow) -> Result<Agent> {
    Ok(Agent {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        name: row.try_get("name")?,
        prompt: row.try_get("prompt")?,
        greeting: row.try_get("greeting")?,
        status: get_enum(row, "status")?,
        runtime: get_json(row, "runtime")?,
        default_call_settings: get_json(row, "default_call_settings")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ids;
    use crate::model::{AgentCallSettings, AgentStatus, Runtime, ScriptStep};
    use crate::store::test_support::{at, temp_store};

    /// An agent of `org_id` created at made-up second `secs`.
    pub(crate) fn agent(org_id: &str, secs: i64) -> Agent {
        Agent {
            id: ids::new_id(ids::AGENT),
            org_id: org_id.into(),
            name: format!("agent {secs}"),
            prompt: "You remind {{name}} of the appointment.".into(),
            greeting: Some("Hello {{name}}".into()),
            status: AgentStatus::Active,
            runtime: Runtime::Scripted {
                steps: vec![ScriptStep::Say {
                    text: Some("hi".into()),
                    audio: None,
                }],
            },
            default_call_settings: AgentCallSettings {
                max_duration_secs: 60,
                ..AgentCallSettings::default()
            },
            created_at: at(secs),
            updated_at: at(secs),
        }
    }

    #[tokio::test]
    async fn crud_round_trips() {
        let (store, _dir) = temp_store().await;
        let mut agent = agent("org_a", 0);
        store.insert_agent(&agent).await.expect("insert");
        assert_eq!(
            store.get_agent("org_a", &agent.id).await.expect("get"),
            agent
        );
        assert!(matches!(
            store.insert_agent(&agent).await,
            Err(StoreError::Conflict(_))
        ));

        agent.name = "renamed".into();
        agent.status = AgentStatus::Paused;
        agent.runtime = Runtime::Echo;
        agent.greeting = None;
        agent.updated_at = at(10);
        store.update_agent(&agent).await.expect("update");
        assert_eq!(
            store.get_agent("org_a", &agent.id).await.expect("get"),
            agent
        );

        store
            .delete_agent("org_a", &agent.id)
            .await
            .expect("delete");
        assert!(matches!(
            store.get_agent("org_a", &agent.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.delete_agent("org_a", &agent.id).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn organisations_are_isolated() {
        let (store, _dir) = temp_store().await;
        let mut theirs = agent("org_b", 0);
        store.insert_agent(&theirs).await.expect("insert");
        assert!(matches!(
            store.get_agent("org_a", &theirs.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.delete_agent("org_a", &theirs.id).await,
            Err(StoreError::NotFound)
        ));
        theirs.org_id = "org_a".into();
        theirs.name = "stolen".into();
        assert!(matches!(
            store.update_agent(&theirs).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(
            store
                .list_agents("org_a", false, 50, 0)
                .await
                .expect("list")
                .1,
            0
        );
        let kept = store
            .get_agent("org_b", &theirs.id)
            .await
            .expect("still there");
        assert_eq!(kept.name, "agent 0");
    }

    #[tokio::test]
    async fn pages_newest_first_with_total() {
        let (store, _dir) = temp_store().await;
        for secs in 0..5 {
            store
                .insert_agent(&agent("org_a", secs))
                .await
                .expect("insert");
        }
        store
            .insert_agent(&agent("org_b", 99))
            .await
            .expect("insert");
        let (page, total) = store
            .list_agents("org_a", false, 2, 0)
            .await
            .expect("page 1");
        assert_eq!(total, 5);
        let names: Vec<_> = page.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["agent 4", "agent 3"]);
        let (page, total) = store
            .list_agents("org_a", false, 2, 4)
            .await
            .expect("last page");
        assert_eq!((page.len(), total), (1, 5));
        assert_eq!(page[0].name, "agent 0");
        let (page, total) = store
            .list_agents("org_a", false, 2, 10)
            .await
            .expect("past the end");
        assert_eq!((page.len(), total), (0, 5));
    }

    #[tokio::test]
    async fn an_agent_with_calls_is_archived_one_without_is_deleted() {
        let (store, _dir) = temp_store().await;
        let used = agent("org_a", 0);
        let unused = agent("org_a", 1);
        store.insert_agent(&used).await.expect("insert");
        store.insert_agent(&unused).await.expect("insert");
        let call = crate::store::calls::tests::call(
            "org_a",
            &used.id,
            crate::model::CallDirection::Outbound,
            2,
        );
        store.insert_call(&call).await.expect("call");

        assert!(matches!(
            store.remove_agent("org_b", &used.id, at(3)).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(
            store
                .remove_agent("org_a", &used.id, at(3))
                .await
                .expect("remove"),
            AgentRemoval::Archived
        );
        let kept = store.get_agent("org_a", &used.id).await.expect("kept");
        assert_eq!(
            (kept.status, kept.updated_at),
            (AgentStatus::Archived, at(3))
        );
        assert_eq!(
            store
                .remove_agent("org_a", &unused.id, at(3))
                .await
                .expect("remove"),
            AgentRemoval::Deleted
        );
        assert!(matches!(
            store.get_agent("org_a", &unused.id).await,
            Err(StoreError::NotFound)
        ));

        // A test run naming an agent keeps it too (the run's row as version 2 of the schema
        // has it, so that this test does not depend on the run's Rust shape).
        let tested = agent("org_a", 4);
        store.insert_agent(&tested).await.expect("insert");
        sqlx::query(&numbered(
            "INSERT INTO test_call_runs (id, org_id, target_type, target_id, agent_id, direction, \
             target_number, scenario_prompt, mode, status, network_profile, charge_multiplier, \
             estimated_cost_cents, created_at, updated_at) VALUES \
             ('tcr_1', 'org_a', 'agent', ?, ?, 'outbound', '+15550100000', 'hi', 'bot', \
              'completed', 'clean', 2, 8, ?, ?)",
        ))
        .bind(&tested.id)
        .bind(&tested.id)
        .bind(ts(&at(4)))
        .bind(ts(&at(4)))
        .execute(&store.pool)
        .await
        .expect("run");
        assert_eq!(
            store
                .remove_agent("org_a", &tested.id, at(5))
                .await
                .expect("remove"),
            AgentRemoval::Archived
        );

        let (listed, total) = store
            .list_agents("org_a", false, 50, 0)
            .await
            .expect("list");
        assert_eq!(
            (listed.len(), total),
            (0, 0),
            "archived agents are not listed"
        );
        let (listed, total) = store.list_agents("org_a", true, 50, 0).await.expect("list");
        let ids: Vec<&str> = listed.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(
            (total, ids),
            (2, vec![tested.id.as_str(), used.id.as_str()])
        );
    }
}
