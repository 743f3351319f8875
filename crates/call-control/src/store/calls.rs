//! Call records. A call's state is written here before anyone is told about it.

use super::numbered;
use chrono::Utc;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{
    get_enum, get_int, get_json, get_opt_int, get_opt_ts, get_ts, ts, write_error, Result,
    RowFilter, Store, StoreError,
};
use crate::model::{Call, CallDirection, CallStatus};

const COLUMNS: &str = "id, org_id, agent_id, status, outcome, direction, phone_number, \
    from_number, to_number, variables, call_settings, max_duration_secs, join_timeout_secs, \
    sip_call_id, sip_final_code, q850_cause, end_reason, error_message, duration_seconds, \
    transcript, recording_url, media_stats, rendered_prompt, rendered_greeting, created_at, started_at, \
    answered_at, ended_at, updated_at, node_id";

/// A call a previous run left unfinished, as restart recovery finds it.
#[derive(Clone, Debug, PartialEq)]
pub struct UnfinishedCall {
    /// The record as last written.
    pub call: Call,
    /// The last heartbeat written while the call was live (`None` if none came).
    pub last_seen_at: Option<chrono::DateTime<Utc>>,
}

/// Filters of `GET /calls`; `None` matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// Only calls with this status.
    pub status: Option<CallStatus>,
    /// Only calls of this agent.
    pub agent_id: Option<String>,
    /// Only calls in this direction.
    pub direction: Option<CallDirection>,
}

impl Store {
    /// Stores a new call record ([`StoreError::Conflict`] if its id exists), holding no
    /// reservation: calls the engine runs are stored with [`Store::admit_call`] instead.
    pub async fn insert_call(&self, call: &Call) -> Result<()> {
        insert_call_on(&self.pool, call, None).await
    }

    /// The organisation's call `id` ([`StoreError::NotFound`] otherwise).
    pub async fn get_call(&self, org_id: &str, id: &str) -> Result<Call> {
        let sql = format!("SELECT {COLUMNS} FROM calls WHERE org_id = ? AND id = ?");
        let row = sqlx::query(&numbered(&sql))
            .bind(org_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        call_from_row(&row)
    }

    /// The call `id` of any organisation (engine use).
    pub async fn get_call_any(&self, id: &str) -> Result<Call> {
        self.get_any("calls", COLUMNS, id, call_from_row).await
    }

    /// One page of the organisation's calls matching `filter`, newest first, and how many
    /// match in all.
    pub async fn list_calls(
        &self,
        org_id: &str,
        filter: &CallFilter,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<Call>, u64)> {
        let rows = RowFilter::owned_by(org_id)
            .and_eq("status", filter.status.map(|status| status.as_str()))
            .and_eq("agent_id", filter.agent_id.as_deref())
            .and_eq(
                "direction",
                filter.direction.map(|direction| direction.as_str()),
            );
        self.list_filtered("calls", COLUMNS, &rows, limit, offset, call_from_row)
            .await
    }

    /// Writes the whole call record, setting `updated_at` to now (the value in `call` is
    /// ignored); [`StoreError::NotFound`] if the call does not exist.
    pub async fn update_call(&self, call: &Call) -> Result<()> {
        update_call_on(&self.pool, call).await
    }

    /// Writes the whole records of `calls` in one transaction (the engine's record writer
    /// batches the calls' state changes so); [`StoreError::NotFound`] when one of them is
    /// not stored, and then none is written.
    pub async fn update_calls(&self, calls: &[&Call]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for call in calls {
            update_call_on(&mut *tx, call).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every call, of any organisation, that node `node_id` runs and is not over (restart
    /// recovery, or the end of a lost node's calls): its status is not terminal, or it
    /// shows the terminal status decided while a CANCEL of ours was out but has no
    /// `ended_at` yet; each with its last heartbeat. With `with_unowned`, also the calls
    /// recorded before nodes had ids (`node_id` null), which the node that starts takes
    /// as its own.
    pub async fn unfinished_calls(
        &self,
        node_id: &str,
        with_unowned: bool,
    ) -> Result<Vec<UnfinishedCall>> {
        let owned = if with_unowned {
            "(node_id = ? OR node_id IS NULL)"
        } else {
            "node_id = ?"
        };
        let sql = format!(
            "SELECT {COLUMNS}, last_seen_at FROM calls \
             WHERE (status NOT IN (?, ?, ?) OR ended_at IS NULL) AND {owned} \
             ORDER BY created_at, id"
        );
        let rows = sqlx::query(&numbered(&sql))
            .bind(CallStatus::Ended.as_str())
            .bind(CallStatus::Failed.as_str())
            .bind(CallStatus::Cancelled.as_str())
            .bind(node_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(UnfinishedCall {
                    call: call_from_row(row)?,
                    last_seen_at: get_opt_ts(row, "last_seen_at")?,
                })
            })
            .collect()
    }
}

/// Writes the whole record of `call` through `executor` (see [`Store::update_call`]).
pub(super) async fn update_call_on<'e, E>(executor: E, call: &Call) -> Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let sql = format!(
        "UPDATE calls SET agent_id = ?, status = ?, outcome = ?, direction = ?, \
         phone_number = ?, from_number = ?, to_number = ?, variables = ?, call_settings = ?, \
         max_duration_secs = ?, join_timeout_secs = ?, sip_call_id = ?, sip_final_code = ?, \
         q850_cause = ?, end_reason = ?, error_message = ?, duration_seconds = {DURATION}, transcript = ?, \
         recording_url = ?, media_stats = ?, rendered_prompt = ?, rendered_greeting = ?, \
         started_at = ?, answered_at = ?, ended_at = ?, updated_at = ? \
         WHERE org_id = ? AND id = ?"
    );
    let done = bind_call_fields(sqlx::query(&numbered(&sql)), call)?
        .bind(call.started_at.as_ref().map(ts))
        .bind(call.answered_at.as_ref().map(ts))
        .bind(call.ended_at.as_ref().map(ts))
        .bind(ts(&Utc::now()))
        .bind(&call.org_id)
        .bind(&call.id)
        .execute(executor)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds the columns of `call` from `agent_id` to `rendered_greeting`, in [`COLUMNS`]
/// order (`duration_seconds` as the two parameters of [`DURATION`]).
fn bind_call_fields<'q>(query: Query<'q>, call: &'q Call) -> Result<Query<'q>> {
    Ok(query
        .bind(&call.agent_id)
        .bind(call.status.as_str())
        .bind(call.outcome.map(|outcome| outcome.as_str()))
        .bind(call.direction.as_str())
        .bind(&call.phone_number)
        .bind(&call.from_number)
        .bind(&call.to_number)
        .bind(serde_json::to_string(&call.variables)?)
        .bind(serde_json::to_string(&call.call_settings)?)
        .bind(i64::from(call.max_duration_secs))
        .bind(i64::from(call.join_timeout_secs))
        .bind(&call.sip_call_id)
        .bind(call.sip_final_code.map(i64::from))
        .bind(call.q850_cause.map(i64::from))
        .bind(&call.end_reason)
        .bind(&call.error_message)
        .bind(i64::from(call.duration_seconds.is_some()))
        .bind(call.duration_seconds.unwrap_or_default())
        .bind(serde_json::to_string(&call.transcript)?)
        .bind(&call.recording_url)
        .bind(
            call.media_stats
                .as_ref()
                .map(serde_json::to_string)
                .transpose()?,
        )
        .bind(&call.rendered_prompt)
        .bind(&call.rendered_greeting))
}

/// The `duration_seconds` value as two parameters, whether there is one and the number:
/// sqlx 0.8's `Any` driver sends a NULL `f64` as a PostgreSQL `float4`, and a statement
/// first prepared with that NULL then refuses every 8-byte duration on that connection
/// ("incorrect binary data format"). A flag and an always-present `f64` keep the
/// parameter's type the same on every execution.
const DURATION: &str = "CASE WHEN ? = 1 THEN ? END";

/// Inserts `call` through `executor` (the pool, or a transaction), holding `reserved_cents`.
pub(super) async fn insert_call_on<'e, E>(
    executor: E,
    call: &Call,
    reserved_cents: Option<i64>,
) -> Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let sql = format!(
        "INSERT INTO calls ({COLUMNS}, reserved_cents) VALUES \
         (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {DURATION}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    );
    let sql = numbered(&sql);
    let query = sqlx::query(&sql).bind(&call.id).bind(&call.org_id);
    bind_call_fields(query, call)?
        .bind(ts(&call.created_at))
        .bind(call.started_at.as_ref().map(ts))
        .bind(call.answered_at.as_ref().map(ts))
        .bind(call.ended_at.as_ref().map(ts))
        .bind(ts(&call.updated_at))
        .bind(&call.node_id)
        .bind(reserved_cents)
        .execute(executor)
        .await
        .map_err(|error| write_error(error, || format!("call {} exists", call.id)))?;
    Ok(())
}

pub(super) fn call_from_row(row: &AnyRow) -> Result<Call> {
    let outcome: Option<String> = row.try_get("outcome")?;
    let outcome = outcome
        .map(|text| {
            text.parse().map_err(|_| StoreError::Corrupt {
                column: "outcome",
                value: text,
            })
        })
        .transpose()?;
    let media_stats: Option<String> = row.try_get("media_stats")?;
    Ok(Call {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        agent_id: row.try_get("agent_id")?,
        status: get_enum(row, "status")?,
        outcome,
        direction: get_enum(row, "direction")?,
        phone_number: row.try_get("phone_number")?,
        from_number: row.try_get("from_number")?,
        to_number: row.try_get("to_number")?,
        variables: get_json(row, "variables")?,
        call_settings: get_json(row, "call_settings")?,
        max_duration_secs: get_int(row, "max_duration_secs")?,
        join_timeout_secs: get_int(row, "join_timeout_secs")?,
        sip_call_id: row.try_get("sip_call_id")?,
        sip_final_code: get_opt_int(row, "sip_final_code")?,
        q850_cause: get_opt_int(row, "q850_cause")?,
        end_reason: row.try_get("end_reason")?,
        error_message: row.try_get("error_message")?,
        duration_seconds: row.try_get("duration_seconds")?,
        transcript: get_json(row, "transcript")?,
        recording_url: row.try_get("recording_url")?,
        media_stats: media_stats
            .map(|text| serde_json::from_str(&text))
            .transpose()?,
        rendered_prompt: row.try_get("rendered_prompt")?,
        rendered_greeting: row.try_get("rendered_greeting")?,
        created_at: get_ts(row, "created_at")?,
        started_at: get_opt_ts(row, "started_at")?,
        answered_at: get_opt_ts(row, "answered_at")?,
        ended_at: get_opt_ts(row, "ended_at")?,
        updated_at: get_ts(row, "updated_at")?,
        node_id: row.try_get("node_id")?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ids;
    use crate::model::{CallOutcome, CallSettings, MediaStats, TranscriptEntry};
    use crate::store::test_support::{at, temp_store};

    /// A queued call of `org_id` and `agent_id` created at made-up second `secs`.
    pub(crate) fn call(org_id: &str, agent_id: &str, direction: CallDirection, secs: i64) -> Call {
        Call {
            id: ids::new_id(ids::CALL),
            org_id: org_id.into(),
            agent_id: agent_id.into(),
            status: CallStatus::Queued,
            outcome: None,
            direction,
            phone_number: "+14155550100".into(),
            from_number: "+14155550199".into(),
            to_number: "+14155550100".into(),
            variables: BTreeMap::from([("name".into(), "Ada".into())]),
            call_settings: CallSettings {
                max_duration: Some("60s".into()),
                ..CallSettings::default()
            },
            max_duration_secs: 60,
            join_timeout_secs: 30,
            sip_call_id: None,
            sip_final_code: None,
            q850_cause: None,
            end_reason: None,
            error_message: None,
            duration_seconds: None,
            transcript: Vec::new(),
            recording_url: None,
            media_stats: None,
            node_id: Some("node-a".into()),
            rendered_prompt: Some("Remind Ada.".into()),
            rendered_greeting: Some("Hello Ada".into()),
            created_at: at(secs),
            started_at: None,
            answered_at: None,
            ended_at: None,
            updated_at: at(secs),
        }
    }

    #[tokio::test]
    async fn insert_get_and_update_the_whole_record() {
        let (store, _dir) = temp_store().await;
        let mut call = call("org_a", "agt_1", CallDirection::Outbound, 0);
        store.insert_call(&call).await.expect("insert");
        assert_eq!(store.get_call("org_a", &call.id).await.expect("get"), call);
        assert!(matches!(
            store.insert_call(&call).await,
            Err(StoreError::Conflict(_))
        ));

        call.status = CallStatus::Ended;
        call.outcome = Some(CallOutcome::MaxDuration);
        call.sip_call_id = Some("abc@127.0.0.1".into());
        call.sip_final_code = Some(200);
        call.q850_cause = Some(16);
        call.end_reason = Some("bye".into());
        call.error_message = Some("Connection refused (os error 111)".into());
        call.duration_seconds = Some(60.02);
        call.transcript = vec![TranscriptEntry {
            role: "agent".into(),
            text: "Hello Ada".into(),
            at: at(2),
        }];
        call.recording_url = Some(format!("/api/public/v1/calls/{}/recording", call.id));
        call.media_stats = Some(MediaStats {
            codec: "PCMU".into(),
            packets_sent: 3000,
            packets_received: 2990,
            packets_lost: 10,
            loss_percent: 0.33,
            jitter_ms: 1.5,
            concealed_ms: 200,
            mos: 4.3,
            foreign_datagrams: 7,
        });
        call.started_at = Some(at(0));
        call.answered_at = Some(at(1));
        call.ended_at = Some(at(61));
        let before = Utc::now();
        store.update_call(&call).await.expect("update");
        let stored = store.get_call_any(&call.id).await.expect("get any");
        assert!(
            stored.updated_at >= before,
            "updated_at is set by the store"
        );
        call.updated_at = stored.updated_at;
        assert_eq!(stored, call);

        let mut missing = call.clone();
        missing.id = "call_missing".into();
        assert!(matches!(
            store.update_call(&missing).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.get_call_any("call_missing").await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn organisations_are_isolated() {
        let (store, _dir) = temp_store().await;
        let mut theirs = call("org_b", "agt_1", CallDirection::Inbound, 0);
        store.insert_call(&theirs).await.expect("insert");
        assert!(matches!(
            store.get_call("org_a", &theirs.id).await,
            Err(StoreError::NotFound)
        ));
        theirs.org_id = "org_a".into();
        assert!(matches!(
            store.update_call(&theirs).await,
            Err(StoreError::NotFound)
        ));
        let (calls, total) = store
            .list_calls("org_a", &CallFilter::default(), 50, 0)
            .await
            .expect("list");
        assert!(calls.is_empty());
        assert_eq!(total, 0);
    }

    #[tokio::test]
    async fn list_filters_and_pages() {
        let (store, _dir) = temp_store().await;
        let mut ended = call("org_a", "agt_1", CallDirection::Outbound, 0);
        ended.status = CallStatus::Ended;
        store.insert_call(&ended).await.expect("insert");
        store
            .insert_call(&call("org_a", "agt_1", CallDirection::Inbound, 1))
            .await
            .expect("insert");
        store
            .insert_call(&call("org_a", "agt_2", CallDirection::Outbound, 2))
            .await
            .expect("insert");
        store
            .insert_call(&call("org_b", "agt_1", CallDirection::Outbound, 3))
            .await
            .expect("insert");

        let all = CallFilter::default();
        let (page, total) = store.list_calls("org_a", &all, 2, 0).await.expect("list");
        assert_eq!((page.len(), total), (2, 3));
        assert_eq!(page[0].agent_id, "agt_2", "newest first");

        let by_agent = CallFilter {
            agent_id: Some("agt_1".into()),
            ..CallFilter::default()
        };
        assert_eq!(
            store
                .list_calls("org_a", &by_agent, 50, 0)
                .await
                .expect("list")
                .1,
            2
        );

        let queued_outbound = CallFilter {
            status: Some(CallStatus::Queued),
            direction: Some(CallDirection::Outbound),
            agent_id: None,
        };
        let (page, total) = store
            .list_calls("org_a", &queued_outbound, 50, 0)
            .await
            .expect("list");
        assert_eq!(total, 1);
        assert_eq!(page[0].agent_id, "agt_2");

        let everything = CallFilter {
            status: Some(CallStatus::Ended),
            agent_id: Some("agt_1".into()),
            direction: Some(CallDirection::Outbound),
        };
        let (page, total) = store
            .list_calls("org_a", &everything, 1, 1)
            .await
            .expect("list");
        assert_eq!((page.len(), total), (0, 1), "offset past the only match");
    }

    #[tokio::test]
    async fn unfinished_calls_are_those_not_over() {
        let (store, _dir) = temp_store().await;
        let mut ids_unfinished = Vec::new();
        for (secs, status) in CallStatus::ALL.iter().enumerate() {
            let mut record = call("org_a", "agt_1", CallDirection::Outbound, secs as i64);
            record.status = *status;
            if status.is_terminal() {
                record.ended_at = Some(at(secs as i64 + 1));
            }
            store.insert_call(&record).await.expect("insert");
            if !status.is_terminal() {
                ids_unfinished.push(record.id);
            }
        }
        // Cancelled as the CANCEL went out, never confirmed before a crash.
        let mut cancelling = call("org_a", "agt_1", CallDirection::Outbound, 100);
        cancelling.status = CallStatus::Cancelled;
        store.insert_call(&cancelling).await.expect("insert");
        ids_unfinished.push(cancelling.id);
        // Another node's live call, and one recorded before nodes had ids.
        let mut elsewhere = call("org_a", "agt_1", CallDirection::Inbound, 200);
        elsewhere.node_id = Some("node-b".into());
        store.insert_call(&elsewhere).await.expect("insert");
        let mut unowned = call("org_a", "agt_1", CallDirection::Inbound, 300);
        unowned.node_id = None;
        store.insert_call(&unowned).await.expect("insert");
        let of = |node: &'static str, with_unowned: bool| {
            let store = store.clone();
            async move {
                store
                    .unfinished_calls(node, with_unowned)
                    .await
                    .expect("unfinished")
                    .into_iter()
                    .map(|unfinished| unfinished.call.id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(of("node-a", false).await, ids_unfinished);
        assert_eq!(of("node-b", false).await, vec![elsewhere.id.clone()]);
        ids_unfinished.push(unowned.id.clone());
        assert_eq!(of("node-a", true).await, ids_unfinished);
        assert_eq!(of("node-c", true).await, vec![unowned.id]);
    }
}
