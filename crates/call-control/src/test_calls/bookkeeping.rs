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
    inner.webhooks.emit_patiently(org_id, event, object).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn measurements(mos: f64, p95: f64) -> Measurements {
        serde_json::from_value(json!({
            "response_latency_ms": {"p50": p95 / 2.0, "p95": p95, "max": p95},
            "response_latencies_ms": [],
            "dead_air_ms_max": 300, "dead_air_count": 0, "one_way_audio": false,
            "mos": mos, "post_dial_delay_ms": null, "answer_delay_ms": 0,
            "time_to_first_agent_audio_ms": 200, "barge_in_stop_ms": null,
            "barge_in_attempts": 0, "barge_in_stopped": 0, "packets_sent": 250,
            "packets_received": 250, "packets_lost": 0, "loss_percent": 0.0,
            "jitter_ms": 0.5, "dtmf_sent": "", "dtmf_heard": "", "hangup_by": "bot",
            "duration_ms": 5000, "utterances": 1, "expect_timeouts": 0,
            "network_profile": "clean"
        }))
        .expect("measurements literal")
    }

    fn run(status: TestRunStatus, measurements: Option<Value>) -> TestCallRun {
        let mut run: TestCallRun = serde_json::from_value(json!({
            "id": "tcr_1", "target_type": "agent", "target_id": "agt_1", "agent_id": "agt_1",
            "direction": "outbound", "target_number": "+15550100000",
            "scenario_prompt": "say hello", "mode": "sip", "status": "queued",
            "network_profile": "clean", "charge_multiplier": 2, "estimated_cost_cents": 16,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
        }))
        .expect("run literal");
        run.status = status;
        run.measurements = measurements;
        run
    }

    fn batch(total_runs: u32, thresholds: Option<Value>) -> TestCallBatch {
        serde_json::from_value(json!({
            "id": "tcb_1", "target_type": "agent", "target_id": "agt_1", "agent_id": "agt_1",
            "direction": "outbound", "mode": "sip", "target_number": "+15550100000",
            "network_profile": "clean", "thresholds": thresholds, "charge_multiplier": 2,
            "estimated_cost_cents": 32, "run_count": total_runs, "stagger_seconds": 0,
            "status": "in_progress", "total_runs": total_runs, "completed_runs": 0,
            "failed_runs": 0, "run_ids": [], "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z"
        }))
        .expect("batch literal")
    }

    #[test]
    fn measurements_carry_the_verdict_only_with_thresholds() {
        let m = measurements(4.2, 300.0);
        let plain = measurements_json(&m, None);
        assert_eq!(plain, serde_json::to_value(&m).expect("json"));
        assert!(plain.get("passed").is_none());

        let gated = measurements_json(
            &m,
            Some(&json!({"mos_min": 4.3, "response_latency_p95_ms": 1000})),
        );
        assert_eq!(gated["passed"], false);
        let failed = gated["failed_thresholds"].as_array().expect("list");
        assert_eq!(failed.len(), 1, "{gated}");
        assert_eq!(failed[0]["name"], "mos_min");

        let held = measurements_json(&m, Some(&json!({"response_latency_p95_ms": 1000})));
        assert_eq!(held["passed"], true);
        assert_eq!(held["failed_thresholds"], json!([]));
    }

    #[test]
    fn the_batch_passes_only_when_every_run_ended_completed_and_passed() {
        let gates = json!({"mos_min": 4.0});
        let passed = |mos| measurements_json(&measurements(mos, 200.0), Some(&gates));
        let good = run(TestRunStatus::Completed, Some(passed(4.3)));

        let all_good = aggregate_json(
            &batch(2, Some(gates.clone())),
            &[good.clone(), good.clone()],
        );
        assert_eq!(all_good["passed"], true, "{all_good}");
        assert_eq!(all_good["measured_runs"], 2);
        assert_eq!(all_good["runs"], 2);

        let one_failed = aggregate_json(
            &batch(2, Some(gates.clone())),
            &[good.clone(), run(TestRunStatus::Failed, None)],
        );
        assert_eq!(one_failed["passed"], false);
        assert_eq!(one_failed["measured_runs"], 1);

        let one_below = aggregate_json(
            &batch(2, Some(gates.clone())),
            &[
                good.clone(),
                run(TestRunStatus::Completed, Some(passed(3.5))),
            ],
        );
        assert_eq!(one_below["passed"], false);

        let unfinished = aggregate_json(&batch(3, Some(gates)), &[good.clone(), good.clone()]);
        assert_eq!(
            unfinished["passed"], false,
            "a run still going has not passed"
        );

        let ungated = aggregate_json(&batch(1, None), &[good]);
        assert!(ungated.get("passed").is_none());
    }

    #[test]
    fn an_unanswered_call_fails_the_run_with_the_sip_code() {
        let report = RunReport {
            measurements: measurements(4.4, 0.0),
            sip_call_id: Some("abc@127.0.0.1".into()),
            sip_final_code: Some(486),
            codec: None,
            invite_at: Some(Utc::now()),
            ringing_at: None,
            answered_at: None,
            ended_at: Some(Utc::now()),
            hangup_by: bot_loopback::measure::Party::Agent,
            error: None,
        };
        let end = RunEnd::reported(report.clone());
        assert_eq!(end.error.as_deref(), Some("not_answered: SIP 486"));
        let answered = RunEnd::reported(RunReport {
            answered_at: Some(Utc::now()),
            sip_final_code: Some(200),
            ..report
        });
        assert!(answered.error.is_none());
    }
}
