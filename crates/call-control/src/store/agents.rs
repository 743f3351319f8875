//! Agents.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::{get_enum, get_json, get_ts, ts, write_error, Result, Store, StoreError};
use crate::model::Agent;

const COLUMNS: &str = "id, org_id, name, prompt, greeting, status, runtime, \
                       default_call_settings, created_at, updated_at";

impl Store {
    /// Stores a new agent ([`StoreError::Conflict`] if its id exists).
    pub async fn insert_agent(&self, agent: &Agent) -> Result<()> {
        sqlx::query(
            "INSERT INTO agents (id, org_id, name, prompt, greeting, status, runtime, \
             default_call_settings, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&agent.id)
        .bind(&agent.org_id)
        .bind(&agent.name)
        .bind(&agent.prompt)
        .bind(&agent.greeting)
        .bind(agent.status.as_str())
        .bind(serde_json::to_string(&agent.runtime)?)
        .bind(serde_json::to_string(&agent.default_call_settings)?)
        .bind(ts(&agent.created_at))
        .bind(ts(&agent.updated_at))
        .execute(&self.pool)
        .await
        .map_err(|error| write_error(error, || format!("agent {} exists", agent.id)))?;
        Ok(())
    }

    /// The organisation's agent `id` ([`StoreError::NotFound`] otherwise).
    pub async fn get_agent(&self, org_id: &str, id: &str) -> Result<Agent> {
        self.get_scoped("agents", COLUMNS, org_id, id, agent_from_row)
            .await
    }

    /// One page of the organisation's agents, newest first, and how many it has in all.
    pub async fn list_agents(
        &self,
        org_id: &str,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<Agent>, u64)> {
        self.list_scoped("agents", COLUMNS, org_id, limit, offset, agent_from_row)
            .await
    }

    /// Writes every field of the agent (as given, `updated_at` included).
    pub async fn update_agent(&self, agent: &Agent) -> Result<()> {
        let done = sqlx::query(
            "UPDATE agents SET name = ?, prompt = ?, greeting = ?, status = ?, runtime = ?, \
             default_call_settings = ?, updated_at = ? WHERE org_id = ? AND id = ?",
        )
        .bind(&agent.name)
        .bind(&agent.prompt)
        .bind(&agent.greeting)
        .bind(agent.status.as_str())
        .bind(serde_json::to_string(&agent.runtime)?)
        .bind(serde_json::to_string(&agent.default_call_settings)?)
        .bind(ts(&agent.updated_at))
        .bind(&agent.org_id)
        .bind(&agent.id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Deletes the organisation's agent `id`; phone numbers assigned to it become unassigned.
    pub async fn delete_agent(&self, org_id: &str, id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM agents WHERE org_id = ? AND id = ?")
            .bind(org_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

fn agent_from_row(row: &SqliteRow) -> Result<Agent> {
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
        assert_eq!(store.list_agents("org_a", 50, 0).await.expect("list").1, 0);
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
        let (page, total) = store.list_agents("org_a", 2, 0).await.expect("page 1");
        assert_eq!(total, 5);
        let names: Vec<_> = page.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["agent 4", "agent 3"]);
        let (page, total) = store.list_agents("org_a", 2, 4).await.expect("last page");
        assert_eq!((page.len(), total), (1, 5));
        assert_eq!(page[0].name, "agent 0");
        let (page, total) = store
            .list_agents("org_a", 2, 10)
            .await
            .expect("past the end");
        assert_eq!((page.len(), total), (0, 5));
    }
}
