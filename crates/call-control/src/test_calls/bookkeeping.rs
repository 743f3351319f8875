//! The end of a run: its record (status, measurements and verdict, linked
//! call records), the charge, `test_call.completed`, and the batch: its
//! counters, and with its last run the aggregate and
//! `test_call_batch.completed`.

use bot_loopback::bot::RunReport;
use bot_loopback::measure::{Aggregate, Measurements, Thresholds};
use chrono::Utc;
use serde_json::Value;
use tracing::{info, warn};

use super::legs::Legs;
use super::Inner;
use crate::model::{events, test_call_cost_cents, TestCallBatch, TestCallRun, TestRunStatus};

/// How a run ended.
#[derive(Debug)]
pub(crate) struct RunEnd {
    /// The bot's report, when the call was placed.
    pub(crate) report: Option<RunReport>,
    /// Why the run failed; `None` when it completed.
    pub(crate) error: Option<String>,
    /// The agent's leg.
    pub(crate) call_id: Option<String>,
    /// The bot's leg (`sip` mode).
    pub(crate) sip_call_id: Option<String>,
}

impl RunEnd {
    /// The run could not be carried out.
    pub(crate) fn failed(reason: impl Into<String>) -> RunEnd {
        RunEnd {
            report: None,
            error: Some(reason.into()),
            call_id: None,
            sip_call_id: None,
        }
    }

    /// The bot reported: completed when its call was answered (and thus
    /// measured), else failed with the bot's error.
    pub(crate) fn reported(report: RunReport) -> RunEnd {
        let error = if report.answered_at.is_some() {
            None
        } else {
            Some(match &report.error {
                Some(error) => format!("not_answered: {error}"),
                None => match report.sip_final_code {
                    Some(code) => format!("not_answered: SIP {code}"),
                    None => "not_answered: the call was not answered".to_owned(),
                },
            })
        };
        RunEnd {
            report: Some(report),
            error,
            call_id: None,
            sip_call_id: None,
        }
    }

    /// Links the call records the run stored.
    pub(crate) fn with_legs(mut self, legs: &Legs) -> RunEnd {
        self.call_id = self.call_id.or_else(|| legs.agent());
        self.sip_call_id = self.sip_call_id.or_else(|| legs.bot());
        self
    }
}

/// The measurements as stored on a run: the bot's, plus `passed` and
/// `failed_thresholds` when the run carries thresholds. `None` for
/// thresholds the bot cannot read (they were validated on the way in).
pub(crate) fn measurements_json(measurements: &Measurements, thresholds: Option<&Value>) -> Value {
    let mut value = serde_json::to_value(measurements).unwrap_or(Value::Null);
    let Some(thresholds) = thresholds else {
        return value;
    };
    match serde_json::from_value::<Thresholds>(thresholds.clone()) {
        Ok(thresholds) => {
            let verdict = thresholds.evaluate(measurements);
            if let Value::Object(map) = &mut value {
                map.insert("passed".into(), Value::Bool(verdict.passed));
                map.insert(
                    "failed_thresholds".into(),
                    serde_json::to_value(&verdict.failed).unwrap_or(Value::Null),
                );
            }
        }
        Err(error) => warn!(%error, "thresholds not understood by the bot"),
    }
    value
}

/// Records the end of `run` and everything that follows from it. Store or
/// webhook failures are logged (restart recovery closes what is left).
pub(crate) async fn finish_run(inner: &Inner, mut run: TestCallRun, end: RunEnd) {
    // The runs of a batch end one at a time, so that the aggregate stored
    // with the last one covers every run when the batch turns terminal.
    let _batch_turn = match &run.batch_id {
        Some(batch_id) => Some(inner.batch_lock(batch_id).lock_owned().await),
        None => None,
    };
    let now = Utc::now();
    run.status = if end.error.is_none() {
        TestRunStatus::Completed
    } else {
        TestRunStatus::Failed
    };
    run.error_message = end.error;
    if let Some(report) = &end.report {
        run.measurements = Some(measurements_json(
            &report.measurements,
            run.thresholds.as_ref(),
        ));
    }
    run.call_id = end.call_id.or(run.call_id);
    run.sip_call_id = end.sip_call_id.or(run.sip_call_id);
    run.completed_at = Some(now);
    run.updated_at = now;
    let run = match inner.store.update_test_run(&run).await {
        Ok(stored) => stored,
        Err(error) => {
            warn!(%error, "run end not recorded");
            return;
        }
    };
    info!(
        status = %run.status,
        call_id = run.call_id.as_deref().unwrap_or(""),
        sip_call_id = run.sip_call_id.as_deref().unwrap_or(""),
        error = run.error_message.as_deref().unwrap_or(""),
        "test run recorded"
    );
    charge(inner, &run).await;
    emit(inner, &run.org_id, events::TEST_CALL_COMPLETED, &run).await;
    if let Some(batch_id) = &run.batch_id {
        count_in_batch(inner, batch_id, run.status == TestRunStatus::Completed).await;
    }
}

/// Charges the agent leg's real duration, priced like the estimate.
async fn charge(inner: &Inner, run: &TestCallRun) {
    let Some(call_id) = &run.call_id else {
        return;
    };
    let seconds = match inner.store.get_call_any(call_id).await {
        Ok(call) => call.duration_seconds.unwrap_or(0.0),
        Err(error) => {
            warn!(%error, call_id, "agent leg not readable: not charged");
            return;
        }
    };
    let cents = test_call_cost_cents(
        seconds,
        inner.config.credits.per_minute_cents,
        run.charge_multiplier,
        run.mode,
    );
    if cents > 0 {
        match inner.store.add_credits(&run.org_id, -cents).await {
            Ok(balance) => info!(cents, balance, "test run charged"),
            Err(error) => warn!(%error, cents, "test run not charged"),
        }
    }
}

/// Stores the batch's aggregate over its runs ended so far, then counts
/// the run; the run that closes the batch reports it.
async fn count_in_batch(inner: &Inner, batch_id: &str, succeeded: bool) {
    match inner.store.get_test_batch_any(batch_id).await {
        Ok(batch) => {
            let runs = match inner.store.test_runs_of_batch(batch_id).await {
                Ok(runs) => runs,
                Err(error) => {
                    warn!(%error, batch_id, "runs of the batch not readable");
                    Vec::new()
                }
            };
            let aggregate = aggregate_json(&batch, &runs);
            if let Err(error) = inner.store.set_batch_aggregate(batch_id, &aggregate).await {
                warn!(%error, batch_id, "batch aggregate not stored");
            }
        }
        Err(error) => warn!(%error, batch_id, "batch not readable"),
    }
    let batch = match inner
        .store
        .record_batch_run_result(batch_id, succeeded)
        .await
    {
        Ok(batch) => batch,
        Err(error) => {
            warn!(%error, batch_id, "batch counters not updated");
            return;
        }
    };
    if batch.completed_runs + batch.failed_runs < batch.total_runs {
        return;
    }
    inner.batch_over(batch_id);
    info!(
        batch_id,
        completed = batch.completed_runs,
        failed = batch.failed_runs,
        "test batch over"
    );
    emit(
        inner,
        &batch.org_id,
        events::TEST_CALL_BATCH_COMPLETED,
        &batch,
    )
    .await;
}

/// The batch detail's aggregate: median and p95 of the measurements of its
/// measured runs, how many were measured, and `passed` (every run ended,
/// completed and passed) when the batch carries thresholds.
pub(crate) fn aggregate_json(batch: &TestCallBatch, runs: &[TestCallRun]) -> Value {
    let measured: Vec<Measurements> = runs
        .iter()
        .filter_map(|run| run.measurements.clone())
        .filter_map(|value| serde_json::from_value(value).ok())
        .collect();
    let mut value = serde_json::to_value(Aggregate::of(&measured)).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert("measured_runs".into(), Value::from(measured.len()));
        if batch.thresholds.is_some() {
            let passed = runs.len() == batch.total_runs as usize
                && runs.iter().all(|run| {
                    run.status == TestRunStatus::Completed
                        && run
                            .measurements
                            .as_ref()
                            .and_then(|m| m.get("passed"))
                            .and_then(Value::as_bool)
                            .unwrap_or(false)
                });
            map.insert("passed".into(), Value::Bool(passed));
        }
    }
    value
}

async fn emit<T: serde::Serialize>(inner: &Inner, org_id: &str, event: &str, object: &T) {
    match serde_json::to_value(object) {
        Ok(data) => {
            if let Err(error) = inner.webhooks.emit(org_id, event, data).await {
                warn!(%error, event, "webhook not queued");
            }
        }
        Err(error) => warn!(%error, event, "webhook body not serializable"),
    }
}
