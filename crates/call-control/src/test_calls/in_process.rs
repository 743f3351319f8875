//! `bot` mode: the agent's runtime (made by the engine's own factory, as
//! for a real call) and the bot's brain joined in-process, no SIP. One call
//! record, the agent's leg, without SIP fields.

use bot_loopback::bot::{run_in_process, RunSpec};
use bot_loopback::measure::Party;
use chrono::Utc;
use tracing::{info, warn};

use super::bookkeeping::RunEnd;
use super::legs::{agent_leg, outcome_of, Legs};
use super::Inner;
use crate::model::{
    Agent, Call, CallDirection, CallOutcome, CallStatus, TestCallRun, TestDirection,
};
use crate::runtime::CallMetadata;

/// Runs `run` in-process and returns how it ended.
pub(crate) async fn execute(
    inner: &Inner,
    run: &TestCallRun,
    agent: &Agent,
    spec: RunSpec,
    legs: &Legs,
) -> RunEnd {
    let (direction, from) = match run.direction {
        TestDirection::Outbound => (CallDirection::Outbound, inner.agent_caller_id(run).await),
        TestDirection::Inbound => (
            CallDirection::Inbound,
            inner.config.test_calls.bot_number.clone(),
        ),
    };
    let mut call = agent_leg(
        run,
        agent,
        &inner.config,
        direction,
        &from,
        &run.target_number,
    );
    call.status = CallStatus::InProgress;
    call.started_at = Some(Utc::now());
    call.answered_at = call.started_at;
    if let Err(error) = inner.store.insert_call(&call).await {
        warn!(%error, "agent leg not recorded");
        return RunEnd::failed(format!("store: {error}"));
    }
    legs.set_agent(&call.id);
    inner.link_agent_leg(run, &call.id).await;
    let metadata = CallMetadata {
        call_id: call.id.clone(),
        org_id: call.org_id.clone(),
        agent_id: agent.id.clone(),
        direction: direction.into(),
        from_number: call.from_number.clone(),
        to_number: call.to_number.clone(),
        prompt: call.rendered_prompt.clone().unwrap_or_default(),
        greeting: call.rendered_greeting.clone(),
        variables: call.variables.clone(),
        sip_call_id: None,
        sample_rate: 8000,
    };
    let runtime = match inner.engine.runtimes().create(agent, &metadata) {
        Ok(runtime) => runtime,
        Err(error) => {
            warn!(%error, "agent runtime unavailable");
            end_call(
                inner,
                &mut call,
                CallStatus::Failed,
                CallOutcome::Error,
                "runtime_unavailable",
            )
            .await;
            return RunEnd::failed(format!("runtime_unavailable: {error}"));
        }
    };
    info!(call_id = %call.id, runtime = runtime.kind(), "in-process test call");
    match run_in_process(runtime, metadata, spec).await {
        Ok(report) => {
            let (started_at, answered_at, ended_at) =
                (report.invite_at, report.answered_at, report.ended_at);
            call.started_at = started_at.or(call.started_at);
            call.answered_at = answered_at.or(call.answered_at);
            if let (Some(answered), Some(ended)) = (call.answered_at, ended_at) {
                call.duration_seconds =
                    Some((ended - answered).num_milliseconds().max(0) as f64 / 1000.0);
            }
            call.ended_at = ended_at;
            let reason = match report.hangup_by {
                Party::Bot => "test_bot_hangup",
                Party::Agent => "agent_hangup",
            };
            end_call(
                inner,
                &mut call,
                CallStatus::Ended,
                outcome_of(&report),
                reason,
            )
            .await;
            RunEnd::reported(report)
        }
        Err(error) => {
            warn!(%error, "in-process test call failed");
            end_call(
                inner,
                &mut call,
                CallStatus::Failed,
                CallOutcome::Error,
                "test_bot_error",
            )
            .await;
            RunEnd::failed(format!("test_bot: {error}"))
        }
    }
}

/// Records the end of the in-process agent leg.
async fn end_call(
    inner: &Inner,
    call: &mut Call,
    status: CallStatus,
    outcome: CallOutcome,
    reason: &str,
) {
    let now = Utc::now();
    call.status = status;
    call.outcome = Some(outcome);
    call.end_reason = Some(reason.to_owned());
    call.ended_at = call.ended_at.or(Some(now));
    call.duration_seconds = call.duration_seconds.or(Some(0.0));
    call.updated_at = now;
    if let Err(error) = inner.store.update_call(call).await {
        warn!(%error, "agent leg end not recorded");
    }
}
