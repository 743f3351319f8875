//! Test-call runs and batches. Runs are written before they are started, so that a restart
//! finds the ones in flight and marks them failed ([`Store::fail_unfinished_test_runs`]).
//!
//! The organisation's concurrent-run limit is checked by the same SQL statement that inserts
//! the batch (or the single run), inside one transaction with the runs, so two requests
//! racing cannot together go past it.

use super::numbered;
use std::collections::HashSet;

use chrono::Utc;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, Row};

use super::{
    get_enum, get_int, get_opt_ts, get_ts, sql_count, total_of, ts, write_error, Result, RowFilter,
    Store, StoreError,
};
use crate::model::{TestBatchStatus, TestCallBatch, TestCallRun, TestRunStatus, TestTargetType};

const RUN_COLUMNS: &str = "id, org_id, target_type, target_id, agent_id, direction, \
    target_number, scenario_prompt, mode, status, network_profile, thresholds, \
    charge_multiplier, estimated_cost_cents, call_id, sip_call_id, measurements, error_message, \
    batch_id, started_at, completed_at, created_at, updated_at, node_id";
const RUN_COLUMN_COUNT: usize = 24;

const BATCH_COLUMNS: &str = "id, org_id, target_type, target_id, agent_id, direction, mode, \
    target_number, scenario_prompt, scenario_prompts, network_profile, thresholds, \
    charge_multiplier, estimated_cost_cents, run_count, stagger_seconds, status, total_runs, \
    completed_runs, failed_runs, run_ids, aggregate, created_at, updated_at, completed_at, \
    name, error_message, requested_by_id, started_at";
const BATCH_COLUMN_COUNT: usize = 29;

/// The statuses of a run in flight, as SQL text.
const ACTIVE_STATUSES: &str = "('queued', 'in_progress')";

type Query<'q> = sqlx::query::Query<'q, Any, AnyArguments<'q>>;

/// Filters of `GET /test-calls`; `None` matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestRunFilter {
    /// Only runs whose target is of this type.
    pub target_type: Option<TestTargetType>,
    /// Only runs with this status.
    pub status: Option<TestRunStatus>,
    /// Only runs testing this agent.
    pub agent_id: Option<String>,
    /// Only runs of this batch.
    pub batch_id: Option<String>,
}

/// Filters of `GET /test-call-batches`; `None` matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestBatchFilter {
    /// Only batches with this status.
    pub status: Option<TestBatchStatus>,
}

/// Whether new runs fitted under the organisation's concurrent-run limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestCallAdmission {
    /// The runs (and their batch) are stored.
    Admitted,
    /// Nothing was stored: `active` runs are in flight and the new ones would pass the limit.
    OverLimit {
        /// Runs of the organisation queued or in progress.
        active: u64,
    },
}

/// What restart recovery changed, so that webhooks can be sent for it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecoveredTestCalls {
    /// Runs that were in flight, now `failed`.
    pub runs: Vec<TestCallRun>,
    /// Batches that were in progress, now over.
    pub batches: Vec<TestCallBatch>,
}

impl Store {
    /// Stores a new run ([`StoreError::Conflict`] if its id exists).
    pub async fn insert_test_run(&self, run: &TestCallRun) -> Result<()> {
        let sql = format!(
            "INSERT INTO test_call_runs ({RUN_COLUMNS}) VALUES ({})",
            placeholders(RUN_COLUMN_COUNT)
        );
        bind_run(sqlx::query(&numbered(&sql)), run)?
            .execute(self.pool())
            .await
            .map_err(|error| write_error(error, || format!("test run {} exists", run.id)))?;
        Ok(())
    }

    /// Stores a new batch and its runs, all or nothing.
    pub async fn insert_test_batch(
        &self,
        batch: &TestCallBatch,
        runs: &[TestCallRun],
    ) -> Result<()> {
        self.store_test_calls(Some(batch), runs, None).await?;
        Ok(())
    }

    /// Stores `runs` (and their `batch`, when they form one) unless the organisation's runs
    /// in flight plus the new ones would exceed `max_active`; check and insert are atomic.
    ///
    /// Every run must belong to the organisation of the batch (or of the first run).
    pub async fn admit_test_calls(
        &self,
        batch: Option<&TestCallBatch>,
        runs: &[TestCallRun],
        max_active: u64,
    ) -> Result<TestCallAdmission> {
        self.store_test_calls(batch, runs, Some(max_active)).await
    }

    async fn store_test_calls(
        &self,
        batch: Option<&TestCallBatch>,
        runs: &[TestCallRun],
        max_active: Option<u64>,
    ) -> Result<TestCallAdmission> {
        let Some(org_id) = batch
            .map(|batch| batch.org_id.as_str())
            .or_else(|| runs.first().map(|run| run.org_id.as_str()))
        else {
            return Ok(TestCallAdmission::Admitted);
        };
        // The guard only holds a row back when a limit is given (`? IS NULL` otherwise).
        let guard = format!(
            "WHERE ? IS NULL OR (SELECT COUNT(*) FROM test_call_runs WHERE org_id = ? \
             AND status IN {ACTIVE_STATUSES}) + ? <= ?"
        );
        let limit = max_active.map(sql_count);
        let new_runs = sql_count(runs.len() as u64);

        let mut tx = self.pool().begin().await?;
        // The first statement writes, so on SQLite the transaction holds the write lock from
        // the moment it counts; on PostgreSQL the organisation's lock is taken first. Either
        // way no other writer can slip a run in between.
        self.lock_org(&mut tx, org_id).await?;
        let (guarded, rest) = match batch {
            Some(batch) => {
                let sql = format!(
                    "INSERT INTO test_call_batches ({BATCH_COLUMNS}) SELECT {} {guard}",
                    placeholders(BATCH_COLUMN_COUNT)
                );
                let done = bind_batch(sqlx::query(&numbered(&sql)), batch)
                    .map(|query| bind_guard(query, limit, org_id, new_runs))?
                    .execute(&mut *tx)
                    .await
                    .map_err(|error| {
                        write_error(error, || format!("test batch {} exists", batch.id))
                    })?;
                (done.rows_affected(), runs)
            }
            None => {
                let first = &runs[0];
                let sql = format!(
                    "INSERT INTO test_call_runs ({RUN_COLUMNS}) SELECT {} {guard}",
                    placeholders(RUN_COLUMN_COUNT)
                );
                let done = bind_run(sqlx::query(&numbered(&sql)), first)
                    .map(|query| bind_guard(query, limit, org_id, new_runs))?
                    .execute(&mut *tx)
                    .await
                    .map_err(|error| {
                        write_error(error, || format!("test run {} exists", first.id))
                    })?;
                (done.rows_affected(), &runs[1..])
            }
        };
        if guarded == 0 {
            let active = count_active(&mut tx, org_id).await?;
            tx.rollback().await?;
            return Ok(TestCallAdmission::OverLimit { active });
        }
        let sql = format!(
            "INSERT INTO test_call_runs ({RUN_COLUMNS}) VALUES ({})",
            placeholders(RUN_COLUMN_COUNT)
        );
        for run in rest {
            bind_run(sqlx::query(&numbered(&sql)), run)?
                .execute(&mut *tx)
                .await
                .map_err(|error| write_error(error, || format!("test run {} exists", run.id)))?;
        }
        tx.commit().await?;
        Ok(TestCallAdmission::Admitted)
    }

    /// Writes the whole run (all but its id, organisation and creation time), sets
    /// `updated_at` to now and returns the stored record ([`StoreError::NotFound`] if the
    /// run does not exist).
    pub async fn update_test_run(&self, run: &TestCallRun) -> Result<TestCallRun> {
        let sql = format!(
            "UPDATE test_call_runs SET target_type = ?, target_id = ?, agent_id = ?, \
             direction = ?, target_number = ?, scenario_prompt = ?, mode = ?, status = ?, \
             network_profile = ?, thresholds = ?, charge_multiplier = ?, \
             estimated_cost_cents = ?, call_id = ?, sip_call_id = ?, measurements = ?, \
             error_message = ?, batch_id = ?, started_at = ?, completed_at = ?, updated_at = ? \
             WHERE org_id = ? AND id = ? RETURNING {RUN_COLUMNS}"
        );
        let row = bind_run_fields(sqlx::query(&numbered(&sql)), run)?
            .bind(ts(&Utc::now()))
            .bind(&run.org_id)
            .bind(&run.id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?;
        run_from_row(&row)
    }

    /// The organisation's run `id` ([`StoreError::NotFound`] otherwise).
    pub async fn get_test_run(&self, org_id: &str, id: &str) -> Result<TestCallRun> {
        self.get_scoped("test_call_runs", RUN_COLUMNS, org_id, id, run_from_row)
            .await
    }

    /// The run `id` of any organisation (runner use).
    pub async fn get_test_run_any(&self, id: &str) -> Result<TestCallRun> {
        self.get_any("test_call_runs", RUN_COLUMNS, id, run_from_row)
            .await
    }

    /// One page of the organisation's runs matching `filter`, newest first, and how many
    /// match in all.
    pub async fn list_test_runs(
        &self,
        org_id: &str,
        filter: &TestRunFilter,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<TestCallRun>, u64)> {
        let rows = RowFilter::owned_by(org_id)
            .and_eq("target_type", filter.target_type.map(|kind| kind.as_str()))
            .and_eq("status", filter.status.map(|status| status.as_str()))
            .and_eq("agent_id", filter.agent_id.as_deref())
            .and_eq("batch_id", filter.batch_id.as_deref());
        self.list_filtered(
            "test_call_runs",
            RUN_COLUMNS,
            &rows,
            limit,
            offset,
            run_from_row,
        )
        .await
    }

    /// Runs of the organisation queued or in progress.
    pub async fn count_active_test_runs(&self, org_id: &str) -> Result<u64> {
        let mut conn = self.pool().acquire().await?;
        count_active(&mut conn, org_id).await
    }

    /// Every run of batch `batch_id`, in the batch's `run_ids` order (runner use).
    pub async fn test_runs_of_batch(&self, batch_id: &str) -> Result<Vec<TestCallRun>> {
        let batch = self.get_test_batch_any(batch_id).await?;
        let sql = format!("SELECT {RUN_COLUMNS} FROM test_call_runs WHERE batch_id = ?");
        let rows = sqlx::query(&numbered(&sql))
            .bind(batch_id)
            .fetch_all(self.pool())
            .await?;
        let mut runs = rows.iter().map(run_from_row).collect::<Result<Vec<_>>>()?;
        runs.sort_by_key(|run| {
            batch
                .run_ids
                .iter()
                .position(|id| *id == run.id)
                .unwrap_or(usize::MAX)
        });
        Ok(runs)
    }

    /// The organisation's batch `id` ([`StoreError::NotFound`] otherwise).
    pub async fn get_test_batch(&self, org_id: &str, id: &str) -> Result<TestCallBatch> {
        self.get_scoped(
            "test_call_batches",
            BATCH_COLUMNS,
            org_id,
            id,
            batch_from_row,
        )
        .await
    }

    /// The batch `id` of any organisation (runner use).
    pub async fn get_test_batch_any(&self, id: &str) -> Result<TestCallBatch> {
        self.get_any("test_call_batches", BATCH_COLUMNS, id, batch_from_row)
            .await
    }

    /// One page of the organisation's batches matching `filter`, newest first, and how many
    /// match in all.
    pub async fn list_test_batches(
        &self,
        org_id: &str,
        filter: &TestBatchFilter,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<TestCallBatch>, u64)> {
        let rows = RowFilter::owned_by(org_id)
            .and_eq("status", filter.status.map(|status| status.as_str()));
        self.list_filtered(
            "test_call_batches",
            BATCH_COLUMNS,
            &rows,
            limit,
            offset,
            batch_from_row,
        )
        .await
    }

    /// Records that a run of batch `batch_id` started at `at`: the batch's `started_at`
    /// is its first run's start, so only the first call sets it.
    pub async fn mark_test_batch_started(
        &self,
        batch_id: &str,
        at: &chrono::DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(&numbered(
            "UPDATE test_call_batches SET started_at = ?, updated_at = ? \
             WHERE id = ? AND started_at IS NULL",
        ))
        .bind(ts(at))
        .bind(ts(&Utc::now()))
        .bind(batch_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Counts one finished run of batch `batch_id` (`succeeded`: it completed, else it
    /// failed) in a single atomic update; the batch becomes `completed` with its last run.
    /// A batch whose runs are all counted already is returned unchanged.
    pub async fn record_batch_run_result(
        &self,
        batch_id: &str,
        succeeded: bool,
    ) -> Result<TestCallBatch> {
        let now = ts(&Utc::now());
        let sql = format!(
            "UPDATE test_call_batches SET \
             completed_runs = completed_runs + ?, \
             failed_runs = failed_runs + ?, \
             status = CASE WHEN status = ? AND completed_runs + failed_runs + 1 >= total_runs \
                 THEN ? ELSE status END, \
             completed_at = CASE WHEN completed_at IS NULL \
                 AND completed_runs + failed_runs + 1 >= total_runs THEN ? ELSE completed_at END, \
             updated_at = ? \
             WHERE id = ? AND completed_runs + failed_runs < total_runs \
             RETURNING {BATCH_COLUMNS}"
        );
        let row = sqlx::query(&numbered(&sql))
            .bind(i64::from(succeeded))
            .bind(i64::from(!succeeded))
            .bind(TestBatchStatus::InProgress.as_str())
            .bind(TestBatchStatus::Completed.as_str())
            .bind(&now)
            .bind(&now)
            .bind(batch_id)
            .fetch_optional(self.pool())
            .await?;
        match row {
            Some(row) => batch_from_row(&row),
            None => self.get_test_batch_any(batch_id).await,
        }
    }

    /// Stores the batch's aggregate of its runs' measurements and returns the batch.
    pub async fn set_batch_aggregate(
        &self,
        batch_id: &str,
        aggregate: &serde_json::Value,
    ) -> Result<TestCallBatch> {
        let sql = format!(
            "UPDATE test_call_batches SET aggregate = ?, updated_at = ? WHERE id = ? \
             RETURNING {BATCH_COLUMNS}"
        );
        let row = sqlx::query(&numbered(&sql))
            .bind(serde_json::to_string(aggregate)?)
            .bind(ts(&Utc::now()))
            .bind(batch_id)
            .fetch_optional(self.pool())
            .await?
            .ok_or(StoreError::NotFound)?;
        batch_from_row(&row)
    }

    /// Restart (or shutdown) recovery of node `node_id`: every run of any organisation
    /// that the node runs (or that was recorded before nodes had ids) still queued or in
    /// progress becomes `failed` with `reason` as its error message, and every batch still
    /// in progress with no run active any more (on any node) is closed with counters
    /// recounted from its runs: `failed` with `batch_reason` as its error message when this
    /// recovery failed one of its runs, `completed` when all had finished already. Returns
    /// what changed.
    pub async fn fail_unfinished_test_runs(
        &self,
        node_id: &str,
        reason: &str,
        batch_reason: &str,
    ) -> Result<RecoveredTestCalls> {
        let now = ts(&Utc::now());
        let mut tx = self.pool().begin().await?;
        let sql = format!(
            "UPDATE test_call_runs SET status = ?, error_message = ?, completed_at = ?, \
             updated_at = ? WHERE status IN {ACTIVE_STATUSES} \
             AND (node_id = ? OR node_id IS NULL) RETURNING {RUN_COLUMNS}"
        );
        let rows = sqlx::query(&numbered(&sql))
            .bind(TestRunStatus::Failed.as_str())
            .bind(reason)
            .bind(&now)
            .bind(&now)
            .bind(node_id)
            .fetch_all(&mut *tx)
            .await?;
        let mut runs = rows.iter().map(run_from_row).collect::<Result<Vec<_>>>()?;
        runs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let interrupted: HashSet<&str> = runs
            .iter()
            .filter_map(|run| run.batch_id.as_deref())
            .collect();

        let open: Vec<String> = sqlx::query(&numbered(&format!(
            "SELECT id FROM test_call_batches WHERE status = ? AND NOT EXISTS \
             (SELECT 1 FROM test_call_runs AS r WHERE r.batch_id = test_call_batches.id \
             AND r.status IN {ACTIVE_STATUSES}) ORDER BY created_at, id"
        )))
        .bind(TestBatchStatus::InProgress.as_str())
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<_, sqlx::Error>>()?;
        let completed_of_batch = "(SELECT COUNT(*) FROM test_call_runs AS r \
             WHERE r.batch_id = test_call_batches.id AND r.status = 'completed')";
        let sql = format!(
            "UPDATE test_call_batches SET completed_runs = {completed_of_batch}, \
             failed_runs = total_runs - {completed_of_batch}, status = ?, \
             error_message = COALESCE(error_message, ?), \
             completed_at = COALESCE(completed_at, ?), updated_at = ? \
             WHERE id = ? RETURNING {BATCH_COLUMNS}"
        );
        let mut batches = Vec::with_capacity(open.len());
        for id in &open {
            let (status, error_message) = if interrupted.contains(id.as_str()) {
                (TestBatchStatus::Failed, Some(batch_reason))
            } else {
                (TestBatchStatus::Completed, None)
            };
            let row = sqlx::query(&numbered(&sql))
                .bind(status.as_str())
                .bind(error_message)
                .bind(&now)
                .bind(&now)
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            batches.push(batch_from_row(&row)?);
        }
        tx.commit().await?;
        Ok(RecoveredTestCalls { runs, batches })
    }
}

async fn count_active(conn: &mut sqlx::AnyConnection, org_id: &str) -> Result<u64> {
    let sql = format!(
        "SELECT COUNT(*) FROM test_call_runs WHERE org_id = ? AND status IN {ACTIVE_STATUSES}"
    );
    let row = sqlx::query(&numbered(&sql))
        .bind(org_id)
        .fetch_one(conn)
        .await?;
    total_of(&row)
}

fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}

fn opt_json(value: &Option<serde_json::Value>) -> Result<Option<String>> {
    Ok(value.as_ref().map(serde_json::to_string).transpose()?)
}

fn get_opt_json(row: &AnyRow, column: &'static str) -> Result<Option<serde_json::Value>> {
    let text: Option<String> = row.try_get(column)?;
    Ok(text.map(|text| serde_json::from_str(&text)).transpose()?)
}

/// Binds the admission guard's values after a row's: the limit (`NULL` for none), the
/// organisation whose active runs it counts, and how many runs the request adds.
fn bind_guard<'q>(
    query: Query<'q>,
    limit: Option<i64>,
    org_id: &'q str,
    new_runs: i64,
) -> Query<'q> {
    query.bind(limit).bind(org_id).bind(new_runs).bind(limit)
}

/// Binds every column of `run`, in [`RUN_COLUMNS`] order.
fn bind_run<'q>(query: Query<'q>, run: &'q TestCallRun) -> Result<Query<'q>> {
    let query = query.bind(&run.id).bind(&run.org_id);
    Ok(bind_run_fields(query, run)?
        .bind(ts(&run.created_at))
        .bind(ts(&run.updated_at))
        .bind(&run.node_id))
}

/// Binds the columns of `run` an update may change, `target_type` to `completed_at`
/// in [`RUN_COLUMNS`] order.
fn bind_run_fields<'q>(query: Query<'q>, run: &'q TestCallRun) -> Result<Query<'q>> {
    Ok(query
        .bind(run.target_type.as_str())
        .bind(&run.target_id)
        .bind(&run.agent_id)
        .bind(run.direction.as_str())
        .bind(&run.target_number)
        .bind(&run.scenario_prompt)
        .bind(run.mode.as_str())
        .bind(run.status.as_str())
        .bind(&run.network_profile)
        .bind(opt_json(&run.thresholds)?)
        .bind(i64::from(run.charge_multiplier))
        .bind(run.estimated_cost_cents)
        .bind(&run.call_id)
        .bind(&run.sip_call_id)
        .bind(opt_json(&run.measurements)?)
        .bind(&run.error_message)
        .bind(&run.batch_id)
        .bind(run.started_at.as_ref().map(ts))
        .bind(run.completed_at.as_ref().map(ts)))
}

fn bind_batch<'q>(query: Query<'q>, batch: &'q TestCallBatch) -> Result<Query<'q>> {
    Ok(query
        .bind(&batch.id)
        .bind(&batch.org_id)
        .bind(batch.target_type.as_str())
        .bind(&batch.target_id)
        .bind(&batch.agent_id)
        .bind(batch.direction.as_str())
        .bind(batch.mode.as_str())
        .bind(&batch.target_number)
        .bind(&batch.scenario_prompt)
        .bind(serde_json::to_string(&batch.scenario_prompts)?)
        .bind(&batch.network_profile)
        .bind(opt_json(&batch.thresholds)?)
        .bind(i64::from(batch.charge_multiplier))
        .bind(batch.estimated_cost_cents)
        .bind(i64::from(batch.run_count))
        .bind(i64::from(batch.stagger_seconds))
        .bind(batch.status.as_str())
        .bind(i64::from(batch.total_runs))
        .bind(i64::from(batch.completed_runs))
        .bind(i64::from(batch.failed_runs))
        .bind(serde_json::to_string(&batch.run_ids)?)
        .bind(opt_json(&batch.aggregate)?)
        .bind(ts(&batch.created_at))
        .bind(ts(&batch.updated_at))
        .bind(batch.completed_at.as_ref().map(ts))
        .bind(&batch.name)
        .bind(&batch.error_message)
        .bind(&batch.requested_by_id)
        .bind(batch.started_at.as_ref().map(ts)))
}

fn run_from_row(row: &AnyRow) -> Result<TestCallRun> {
    Ok(TestCallRun {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        target_type: get_enum(row, "target_type")?,
        target_id: row.try_get("target_id")?,
        agent_id: row.try_get("agent_id")?,
        direction: get_enum(row, "direction")?,
        target_number: row.try_get("target_number")?,
        scenario_prompt: row.try_get("scenario_prompt")?,
        mode: get_enum(row, "mode")?,
        status: get_enum(row, "status")?,
        network_profile: row.try_get("network_profile")?,
        thresholds: get_opt_json(row, "thresholds")?,
        charge_multiplier: get_int(row, "charge_multiplier")?,
        estimated_cost_cents: row.try_get("estimated_cost_cents")?,
        call_id: row.try_get("call_id")?,
        sip_call_id: row.try_get("sip_call_id")?,
        measurements: get_opt_json(row, "measurements")?,
        error_message: row.try_get("error_message")?,
        batch_id: row.try_get("batch_id")?,
        started_at: get_opt_ts(row, "started_at")?,
        completed_at: get_opt_ts(row, "completed_at")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
        node_id: row.try_get("node_id")?,
    })
}

fn batch_from_row(row: &AnyRow) -> Result<TestCallBatch> {
    let scenario_prompts: String = row.try_get("scenario_prompts")?;
    let run_ids: String = row.try_get("run_ids")?;
    Ok(TestCallBatch {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        target_type: get_enum(row, "target_type")?,
        target_id: row.try_get("target_id")?,
        agent_id: row.try_get("agent_id")?,
        name: row.try_get("name")?,
        direction: get_enum(row, "direction")?,
        mode: get_enum(row, "mode")?,
        target_number: row.try_get("target_number")?,
        scenario_prompt: row.try_get("scenario_prompt")?,
        scenario_prompts: serde_json::from_str(&scenario_prompts)?,
        network_profile: row.try_get("network_profile")?,
        thresholds: get_opt_json(row, "thresholds")?,
        charge_multiplier: get_int(row, "charge_multiplier")?,
        estimated_cost_cents: row.try_get("estimated_cost_cents")?,
        run_count: get_int(row, "run_count")?,
        stagger_seconds: get_int(row, "stagger_seconds")?,
        status: get_enum(row, "status")?,
        total_runs: get_int(row, "total_runs")?,
        completed_runs: get_int(row, "completed_runs")?,
        failed_runs: get_int(row, "failed_runs")?,
        run_ids: serde_json::from_str(&run_ids)?,
        aggregate: get_opt_json(row, "aggregate")?,
        error_message: row.try_get("error_message")?,
        requested_by_id: row.try_get("requested_by_id")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
        started_at: get_opt_ts(row, "started_at")?,
        completed_at: get_opt_ts(row, "completed_at")?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ids;
    use crate::model::{TestDirection, TestMode};
    use crate::store::test_support::{at, temp_store};

    fn run(org_id: &str, agent_id: &str, secs: i64) -> TestCallRun {
        TestCallRun {
            id: ids::new_id(ids::TEST_CALL_RUN),
            org_id: org_id.into(),
            target_type: TestTargetType::Agent,
            target_id: agent_id.into(),
            agent_id: agent_id.into(),
            direction: TestDirection::Outbound,
            target_number: "+15550100000".into(),
            scenario_prompt: Some("say hello\nhangup".into()),
            mode: TestMode::Bot,
            status: TestRunStatus::Queued,
            network_profile: "clean".into(),
            thresholds: None,
            charge_multiplier: 2,
            estimated_cost_cents: 8,
            call_id: None,
            sip_call_id: None,
            measurements: None,
            error_message: None,
            batch_id: None,
            started_at: None,
            completed_at: None,
            created_at: at(secs),
            updated_at: at(secs),
            node_id: Some("node-a".into()),
        }
    }

    fn batch_of(org_id: &str, count: usize, secs: i64) -> (TestCallBatch, Vec<TestCallRun>) {
        let id = ids::new_id(ids::TEST_CALL_BATCH);
        let runs: Vec<TestCallRun> = (0..count)
            .map(|_| TestCallRun {
                batch_id: Some(id.clone()),
                ..run(org_id, "agt_1", secs)
            })
            .collect();
        let batch = TestCallBatch {
            id,
            org_id: org_id.into(),
            target_type: TestTargetType::Agent,
            target_id: "agt_1".into(),
            agent_id: "agt_1".into(),
            name: Some("nightly".into()),
            direction: TestDirection::Outbound,
            mode: TestMode::Bot,
            target_number: "+15550100000".into(),
            scenario_prompt: None,
            scenario_prompts: vec!["a".into(), "b".into()],
            network_profile: "jittery".into(),
            thresholds: Some(json!({"mos_min": 3.0})),
            charge_multiplier: 2,
            estimated_cost_cents: 8 * count as i64,
            run_count: count as u32,
            stagger_seconds: 1,
            status: TestBatchStatus::InProgress,
            total_runs: count as u32,
            completed_runs: 0,
            failed_runs: 0,
            run_ids: runs.iter().map(|run| run.id.clone()).collect(),
            aggregate: None,
            error_message: None,
            requested_by_id: Some("key_1".into()),
            created_at: at(secs),
            updated_at: at(secs),
            started_at: None,
            completed_at: None,
        };
        (batch, runs)
    }

    #[tokio::test]
    async fn insert_get_update_and_isolate_runs() {
        let (store, _dir) = temp_store().await;
        let mut record = run("org_a", "agt_1", 0);
        record.thresholds = Some(json!({"response_latency_p95_ms": 900}));
        store.insert_test_run(&record).await.expect("insert");
        assert_eq!(
            store.get_test_run("org_a", &record.id).await.expect("get"),
            record
        );
        assert!(matches!(
            store.get_test_run("org_b", &record.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.insert_test_run(&record).await,
            Err(StoreError::Conflict(_))
        ));

        record.status = TestRunStatus::Completed;
        record.call_id = Some("call_1".into());
        record.sip_call_id = Some("call_2".into());
        record.measurements = Some(json!({"mos": 4.3, "passed": true, "failed_thresholds": []}));
        record.started_at = Some(at(1));
        record.completed_at = Some(at(9));
        let before = Utc::now();
        let updated = store.update_test_run(&record).await.expect("update");
        assert!(
            updated.updated_at >= before,
            "updated_at is set by the store"
        );
        record.updated_at = updated.updated_at;
        assert_eq!(updated, record);
        assert_eq!(
            store.get_test_run_any(&record.id).await.expect("get any"),
            record
        );

        let mut theirs = record.clone();
        theirs.org_id = "org_b".into();
        assert!(matches!(
            store.update_test_run(&theirs).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn list_filters_pages_and_counts_active() {
        let (store, _dir) = temp_store().await;
        let mut completed = run("org_a", "agt_1", 0);
        completed.status = TestRunStatus::Completed;
        store.insert_test_run(&completed).await.expect("insert");
        let mut by_number = run("org_a", "agt_1", 1);
        by_number.target_type = TestTargetType::PhoneNumber;
        by_number.target_id = "num_1".into();
        by_number.status = TestRunStatus::InProgress;
        store.insert_test_run(&by_number).await.expect("insert");
        store
            .insert_test_run(&run("org_a", "agt_2", 2))
            .await
            .expect("insert");
        store
            .insert_test_run(&run("org_b", "agt_1", 3))
            .await
            .expect("insert");

        let all = TestRunFilter::default();
        let (page, total) = store
            .list_test_runs("org_a", &all, 2, 0)
            .await
            .expect("list");
        assert_eq!((page.len(), total), (2, 3));
        assert_eq!(page[0].agent_id, "agt_2", "newest first");
        let (page, _) = store
            .list_test_runs("org_a", &all, 2, 2)
            .await
            .expect("list");
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].id, completed.id);

        let filter = TestRunFilter {
            target_type: Some(TestTargetType::PhoneNumber),
            ..TestRunFilter::default()
        };
        let (page, total) = store
            .list_test_runs("org_a", &filter, 50, 0)
            .await
            .expect("list");
        assert_eq!(total, 1);
        assert_eq!(page[0].id, by_number.id);
        let filter = TestRunFilter {
            status: Some(TestRunStatus::Queued),
            agent_id: Some("agt_2".into()),
            ..TestRunFilter::default()
        };
        assert_eq!(
            store
                .list_test_runs("org_a", &filter, 50, 0)
                .await
                .expect("list")
                .1,
            1
        );

        assert_eq!(
            store.count_active_test_runs("org_a").await.expect("count"),
            2
        );
        assert_eq!(
            store.count_active_test_runs("org_b").await.expect("count"),
            1
        );
        assert_eq!(
            store.count_active_test_runs("org_c").await.expect("count"),
            0
        );
    }

    #[tokio::test]
    async fn admission_keeps_the_limit_atomically() {
        let (store, _dir) = temp_store().await;
        let first = run("org_a", "agt_1", 0);
        assert_eq!(
            store
                .admit_test_calls(None, std::slice::from_ref(&first), 3)
                .await
                .expect("admit"),
            TestCallAdmission::Admitted
        );
        let (batch, runs) = batch_of("org_a", 3, 1);
        assert_eq!(
            store
                .admit_test_calls(Some(&batch), &runs, 3)
                .await
                .expect("admit"),
            TestCallAdmission::OverLimit { active: 1 }
        );
        assert!(matches!(
            store.get_test_batch("org_a", &batch.id).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(
            store.count_active_test_runs("org_a").await.expect("count"),
            1
        );
        // Another organisation has its own limit.
        let (theirs, their_runs) = batch_of("org_b", 3, 1);
        assert_eq!(
            store
                .admit_test_calls(Some(&theirs), &their_runs, 3)
                .await
                .expect("admit"),
            TestCallAdmission::Admitted
        );
        let (batch, runs) = batch_of("org_a", 2, 2);
        assert_eq!(
            store
                .admit_test_calls(Some(&batch), &runs, 3)
                .await
                .expect("admit"),
            TestCallAdmission::Admitted
        );
        assert_eq!(
            store.count_active_test_runs("org_a").await.expect("count"),
            3
        );
        assert_eq!(
            store
                .admit_test_calls(None, &[run("org_a", "agt_1", 3)], 3)
                .await
                .expect("admit"),
            TestCallAdmission::OverLimit { active: 3 }
        );

        // Concurrent requests: exactly as many runs as the limit allows get in.
        let (store2, _dir2) = temp_store().await;
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store2.clone();
                tokio::spawn(async move {
                    store
                        .admit_test_calls(None, &[run("org_a", "agt_1", i)], 5)
                        .await
                        .expect("admit")
                })
            })
            .collect();
        let mut admitted = 0;
        for task in tasks {
            if task.await.expect("task") == TestCallAdmission::Admitted {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5);
        assert_eq!(
            store2.count_active_test_runs("org_a").await.expect("count"),
            5
        );
    }

    #[tokio::test]
    async fn batch_counters_complete_the_batch_once() {
        let (store, _dir) = temp_store().await;
        let (batch, runs) = batch_of("org_a", 3, 0);
        store
            .insert_test_batch(&batch, &runs)
            .await
            .expect("insert");
        assert_eq!(
            store.get_test_batch("org_a", &batch.id).await.expect("get"),
            batch
        );
        assert!(matches!(
            store.get_test_batch("org_b", &batch.id).await,
            Err(StoreError::NotFound)
        ));
        let ordered: Vec<_> = store
            .test_runs_of_batch(&batch.id)
            .await
            .expect("runs")
            .into_iter()
            .map(|run| run.id)
            .collect();
        assert_eq!(ordered, batch.run_ids);

        let after = store
            .record_batch_run_result(&batch.id, true)
            .await
            .expect("record");
        assert_eq!((after.completed_runs, after.failed_runs), (1, 0));
        assert_eq!(after.status, TestBatchStatus::InProgress);
        assert_eq!(after.completed_at, None);
        store
            .record_batch_run_result(&batch.id, false)
            .await
            .expect("record");
        let done = store
            .record_batch_run_result(&batch.id, true)
            .await
            .expect("record");
        assert_eq!((done.completed_runs, done.failed_runs), (2, 1));
        assert_eq!(done.status, TestBatchStatus::Completed);
        assert!(done.completed_at.is_some());
        let again = store
            .record_batch_run_result(&batch.id, false)
            .await
            .expect("record");
        assert_eq!((again.completed_runs, again.failed_runs), (2, 1));
        assert!(matches!(
            store.record_batch_run_result("tcb_missing", true).await,
            Err(StoreError::NotFound)
        ));

        let aggregate = json!({"response_latency_ms": {"p50": 120.0, "p95": 180.0}});
        let with = store
            .set_batch_aggregate(&batch.id, &aggregate)
            .await
            .expect("aggregate");
        assert_eq!(with.aggregate, Some(aggregate));

        let all = TestBatchFilter::default();
        let (page, total) = store
            .list_test_batches("org_a", &all, 50, 0)
            .await
            .expect("list");
        assert_eq!((page.len(), total), (1, 1));
        assert_eq!(
            store
                .list_test_batches("org_b", &all, 50, 0)
                .await
                .expect("list")
                .1,
            0
        );
        let status = |status| TestBatchFilter {
            status: Some(status),
        };
        let count = |filter: TestBatchFilter| {
            let store = store.clone();
            async move {
                store
                    .list_test_batches("org_a", &filter, 50, 0)
                    .await
                    .expect("list")
                    .1
            }
        };
        assert_eq!(count(status(TestBatchStatus::Completed)).await, 1);
        assert_eq!(count(status(TestBatchStatus::InProgress)).await, 0);
        assert_eq!(count(status(TestBatchStatus::Failed)).await, 0);
    }

    #[tokio::test]
    async fn a_batch_started_when_its_first_run_did() {
        let (store, _dir) = temp_store().await;
        let (batch, runs) = batch_of("org_a", 2, 0);
        store
            .insert_test_batch(&batch, &runs)
            .await
            .expect("insert");
        store
            .mark_test_batch_started(&batch.id, &at(5))
            .await
            .expect("first start");
        store
            .mark_test_batch_started(&batch.id, &at(6))
            .await
            .expect("second start");
        let started = store.get_test_batch("org_a", &batch.id).await.expect("get");
        assert_eq!(started.started_at, Some(at(5)), "the first run's start");
        assert_eq!(started.name.as_deref(), Some("nightly"));
        assert_eq!(started.requested_by_id.as_deref(), Some("key_1"));
    }

    /// A database written by version 2 of the schema (caller-chosen fractional multipliers,
    /// scenario prompts required) opens with its runs and batches intact.
    #[tokio::test]
    async fn a_version_2_database_keeps_its_test_calls() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let old = dir.path().join("migrations");
        std::fs::create_dir(&old).expect("dir");
        let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        for file in ["0001_init.sql", "0002_test_calls.sql"] {
            std::fs::copy(here.join(file), old.join(file)).expect("copy");
        }
        let url = crate::store::test_support::sqlite_url_in(dir.path());
        {
            use std::str::FromStr;
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
                .expect("url")
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options)
                .await
                .expect("connect");
            sqlx::migrate::Migrator::new(old.as_path())
                .await
                .expect("version 2 migrations")
                .run(&pool)
                .await
                .expect("version 2 schema");
            let stamp = ts(&at(0));
            sqlx::query(&numbered(
                "INSERT INTO test_call_batches (id, org_id, target_type, target_id, agent_id, \
                 direction, mode, target_number, scenario_prompt, scenario_prompts, \
                 network_profile, charge_multiplier, estimated_cost_cents, run_count, \
                 stagger_seconds, status, total_runs, completed_runs, failed_runs, run_ids, \
                 created_at, updated_at) VALUES ('tcb_old', 'org_a', 'agent', 'agt_1', \
                 'agt_1', 'outbound', 'bot', '+15550100000', 'hello', '[]', 'clean', 1.0, 4, 1, \
                 0, 'failed', 1, 0, 1, '[\"tcr_old\"]', ?, ?)",
            ))
            .bind(&stamp)
            .bind(&stamp)
            .execute(&pool)
            .await
            .expect("old batch");
            sqlx::query(&numbered(
                "INSERT INTO test_call_runs (id, org_id, target_type, target_id, agent_id, \
                 direction, target_number, scenario_prompt, mode, status, network_profile, \
                 charge_multiplier, estimated_cost_cents, error_message, batch_id, started_at, \
                 created_at, updated_at) VALUES ('tcr_old', 'org_a', 'agent', 'agt_1', \
                 'agt_1', 'outbound', '+15550100000', 'hello', 'bot', 'failed', 'clean', 2.6, \
                 4, 'service_restart: gone', 'tcb_old', ?, ?, ?)",
            ))
            .bind(ts(&at(1)))
            .bind(&stamp)
            .bind(&stamp)
            .execute(&pool)
            .await
            .expect("old run");
            pool.close().await;
        }
        let store = Store::open(&url)
            .await
            .expect("migrates to the current schema");
        let run = store.get_test_run("org_a", "tcr_old").await.expect("run");
        assert_eq!(run.charge_multiplier, 3, "rounded to a whole number");
        assert_eq!(run.scenario_prompt.as_deref(), Some("hello"));
        let batch = store
            .get_test_batch("org_a", "tcb_old")
            .await
            .expect("batch");
        assert_eq!(batch.charge_multiplier, 1);
        assert_eq!(batch.name, None);
        assert_eq!(batch.requested_by_id, None);
        assert_eq!(batch.started_at, Some(at(1)), "its run's start");
        assert_eq!(
            batch.error_message.as_deref(),
            Some("service_restart: gone"),
            "the reason its runs were failed with"
        );
        let mut fresh = run.clone();
        fresh.id = ids::new_id(ids::TEST_CALL_RUN);
        fresh.scenario_prompt = None;
        fresh.batch_id = None;
        store.insert_test_run(&fresh).await.expect("insert");
        let read = store.get_test_run("org_a", &fresh.id).await.expect("get");
        assert_eq!(read.scenario_prompt, None, "a run without a scenario");
    }

    #[tokio::test]
    async fn counting_the_same_batch_concurrently_loses_no_result() {
        let (store, _dir) = temp_store().await;
        let (batch, runs) = batch_of("org_a", 10, 0);
        store
            .insert_test_batch(&batch, &runs)
            .await
            .expect("insert");
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let store = store.clone();
                let id = batch.id.clone();
                tokio::spawn(async move {
                    store
                        .record_batch_run_result(&id, i % 3 != 0)
                        .await
                        .expect("record")
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        let done = store.get_test_batch_any(&batch.id).await.expect("get");
        assert_eq!((done.completed_runs, done.failed_runs), (6, 4));
        assert_eq!(done.status, TestBatchStatus::Completed);
    }

    #[tokio::test]
    async fn restart_recovery_fails_runs_in_flight_and_closes_their_batches() {
        let (store, _dir) = temp_store().await;
        // A lone run in progress, a finished lone run, and a batch of three with one run
        // completed, one in progress and one still queued.
        let mut lone = run("org_a", "agt_1", 0);
        lone.status = TestRunStatus::InProgress;
        lone.started_at = Some(at(0));
        store.insert_test_run(&lone).await.expect("insert");
        let mut finished = run("org_a", "agt_1", 1);
        finished.status = TestRunStatus::Completed;
        store.insert_test_run(&finished).await.expect("insert");
        let (batch, mut runs) = batch_of("org_b", 3, 2);
        runs[0].status = TestRunStatus::Completed;
        runs[1].status = TestRunStatus::InProgress;
        store
            .insert_test_batch(&batch, &runs)
            .await
            .expect("insert");
        store
            .record_batch_run_result(&batch.id, true)
            .await
            .expect("record");
        // A batch whose runs all finished but whose last count was lost.
        let (lost, mut lost_runs) = batch_of("org_a", 1, 3);
        lost_runs[0].status = TestRunStatus::Completed;
        store
            .insert_test_batch(&lost, &lost_runs)
            .await
            .expect("insert");
        // A batch another node runs, one of its runs still in progress there, and a
        // run recorded before nodes had ids.
        let (elsewhere, mut elsewhere_runs) = batch_of("org_a", 2, 4);
        elsewhere_runs[0].status = TestRunStatus::Completed;
        elsewhere_runs[1].status = TestRunStatus::InProgress;
        for run in &mut elsewhere_runs {
            run.node_id = Some("node-b".into());
        }
        store
            .insert_test_batch(&elsewhere, &elsewhere_runs)
            .await
            .expect("insert");
        let mut unowned = run("org_a", "agt_1", 5);
        unowned.status = TestRunStatus::Queued;
        unowned.node_id = None;
        store.insert_test_run(&unowned).await.expect("insert");

        let recovered = store
            .fail_unfinished_test_runs(
                "node-a",
                "service restarted during the run",
                "service restarted during the batch",
            )
            .await
            .expect("recover");
        // Oldest first; the batch's runs share a creation time and follow by id.
        let mut in_batch = [runs[1].id.as_str(), runs[2].id.as_str()];
        in_batch.sort_unstable();
        let failed: Vec<_> = recovered.runs.iter().map(|run| run.id.as_str()).collect();
        assert_eq!(
            failed,
            [
                lone.id.as_str(),
                in_batch[0],
                in_batch[1],
                unowned.id.as_str()
            ]
        );
        for run in &recovered.runs {
            assert_eq!(run.status, TestRunStatus::Failed);
            assert_eq!(
                run.error_message.as_deref(),
                Some("service restarted during the run")
            );
            assert!(run.completed_at.is_some());
        }
        assert_eq!(recovered.batches.len(), 2);
        let interrupted = store.get_test_batch("org_b", &batch.id).await.expect("get");
        assert_eq!(interrupted.status, TestBatchStatus::Failed);
        assert_eq!(
            (interrupted.completed_runs, interrupted.failed_runs),
            (1, 2)
        );
        assert!(interrupted.completed_at.is_some());
        assert_eq!(
            interrupted.error_message.as_deref(),
            Some("service restarted during the batch")
        );
        assert!(recovered.batches.contains(&interrupted));
        let closed = store.get_test_batch("org_a", &lost.id).await.expect("get");
        assert_eq!(closed.status, TestBatchStatus::Completed);
        assert_eq!(closed.error_message, None, "nothing cut it short");
        assert_eq!((closed.completed_runs, closed.failed_runs), (1, 0));

        assert_eq!(
            store
                .get_test_run("org_a", &finished.id)
                .await
                .expect("get")
                .status,
            TestRunStatus::Completed
        );
        assert_eq!(
            store.count_active_test_runs("org_a").await.expect("count"),
            1,
            "node-b's run goes on"
        );
        let running = store
            .get_test_batch("org_a", &elsewhere.id)
            .await
            .expect("get");
        assert_eq!(running.status, TestBatchStatus::InProgress, "not closed");
        assert_eq!(
            store.count_active_test_runs("org_b").await.expect("count"),
            0
        );
        // A second recovery finds nothing left to change.
        assert_eq!(
            store
                .fail_unfinished_test_runs("node-a", "again", "again")
                .await
                .expect("recover"),
            RecoveredTestCalls::default()
        );
    }
}
