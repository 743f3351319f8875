//! Test calls (DESIGN.md, "REST API: test calls"): `/test-calls` (one run),
//! `/test-call-batches` (the same scenario run up to 20 times in parallel) and
//! `POST /agents/{id}/test-call` (a real outbound call with an agent).
//!
//! A create request is checked in a fixed order: the body (422 `validation_error` naming
//! each bad field, scenario scripts parsed by the runner; `charge_multiplier` is read-only),
//! `consent_to_charge` (400
//! `consent_required`, whose details carry `estimated_cost_cents`), the target (404 `agent_not_found` / `phone_number_not_found`; 422
//! for a number assigned to no agent), the organisation's runs in flight (429
//! `rate_limited`), the balance against the estimated cost (402 `insufficient_credits`).
//! The runs are then stored `queued` (the concurrent-run limit is checked again by the
//! insert itself, so racing requests cannot pass it) and handed to the [`TestRunner`].
//!
//! What a request leaves out: `mode` is `bot`, `direction` `outbound`, `network_profile`
//! `clean`, and without a `scenario_prompt` the bot runs its default scenario. The price
//! multiplier is the operator's (`[test_calls] charge_multiplier`): runs and batches show it,
//! and a request may repeat that value but never set another, so no caller changes what it
//! pays.

use std::path::Path;
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use chrono::Utc;
use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;

use super::calls::{self, OutboundRequest, RequestedSettings};
use super::envelope::{self, Page};
use super::error::ApiError;
use super::extract::{Id, JsonBody, Params};
use super::middleware::{ApiKeyId, IdempotencyClaim, OrgId};
use super::validation::{one_of, query_enum, Body, FieldErrors};
use super::AppState;
use crate::ids;
use crate::model::{
    is_e164, test_call_cost_cents, Agent, AgentStatus, TestBatchStatus, TestCallBatch, TestCallRun,
    TestDirection, TestMode, TestRunStatus, TestTargetType, TestThresholds,
    DEFAULT_NETWORK_PROFILE, MAX_BATCH_RUNS, MAX_STAGGER_SECONDS, MIN_BATCH_RUNS, NETWORK_PROFILES,
};
use crate::store::{TestBatchFilter, TestCallAdmission, TestRunFilter};
use crate::test_calls::TestRunner;

/// Longest scenario prompt, in characters.
pub const MAX_SCENARIO_LEN: usize = 20_000;
/// Most prompts in a batch's `scenario_prompts`.
pub const MAX_SCENARIO_PROMPTS: usize = 100;
/// Longest batch `name`, in characters.
pub const MAX_BATCH_NAME_LEN: usize = 200;
/// Lowest MOS an estimate gives (and so the lowest `thresholds.mos_min`).
pub const MOS_MIN: f64 = 1.0;
/// Highest MOS an estimate gives (and so the highest `thresholds.mos_min`).
pub const MOS_MAX: f64 = 4.5;

/// The fields runs and batches share, validated.
#[derive(Debug)]
struct Target {
    target_type: TestTargetType,
    target_id: String,
    direction: TestDirection,
    target_number: Option<String>,
    mode: TestMode,
    network_profile: String,
    thresholds: Option<Value>,
    /// The operator's (`[test_calls] charge_multiplier`), never the request's.
    charge_multiplier: u32,
    consent: Option<bool>,
}

/// The agent under test and the number the test call goes to.
struct Resolved {
    agent: Agent,
    target_number: String,
}

/// `POST /test-calls`: one run, answered 201 with the run `queued`.
#[utoipa::path(
    post,
    path = "/api/public/v1/test-calls",
    tag = "test_calls",
    operation_id = "createTestCall",
    summary = "Run a test call: the test bot calls the agent or is called by it",
    description = "Checked in this order: 422 validation_error (scenario scripts are parsed), 400 consent_required (details.estimated_cost_cents), 404 agent_not_found / phone_number_not_found (422 when the number is assigned to no agent), 429 rate_limited (the organisation's runs in flight plus this one would pass test_calls.max_concurrent_runs), 402 insufficient_credits (the balance is below the estimate). Answers at once with the run `queued`.",
    params(crate::api::openapi::IdempotencyKey),
    request_body = crate::api::openapi::TestCallCreate,
    responses((status = 201, description = "The run, queued", body = crate::api::openapi::Envelope<TestCallRun>), crate::api::openapi::TestCallErrors)
)]
pub async fn create_run(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    JsonBody(bytes): JsonBody,
) -> Result<Response, ApiError> {
    state.accepting_calls()?;
    let org = org.0;
    let mut body = Body::parse(&bytes)?;
    body.require(&["target_type", "target_id"]);
    let target = target_fields(&mut body, state.config.test_calls.charge_multiplier);
    let audio_dir = state.config.test_calls.audio_dir.as_deref();
    let scenario_prompt = scenario(&mut body, "scenario_prompt", audio_dir);
    body.finish()?;
    let Some(target) = target else {
        return Err(ApiError::Internal(
            "required fields passed validation".into(),
        ));
    };
    let (estimated_cost_cents, resolved) = accept(&state, &org, &target, 1).await?;

    let now = Utc::now();
    let run = queued_run(
        (&org, &state.config.node.id),
        &target,
        &resolved,
        scenario_prompt,
        estimated_cost_cents,
        None,
        now,
    );
    let span = tracing::info_span!("test_run", run_id = %run.id, agent_id = %run.agent_id);
    async {
        admit(&state, None, std::slice::from_ref(&run)).await?;
        tracing::info!(mode = %run.mode, direction = %run.direction, estimated_cost_cents,
            "test run queued");
        state
            .test_runner
            .launch(vec![run.clone()], None, vec![Duration::ZERO]);
        envelope::created(&run)
    }
    .instrument(span)
    .await
}

/// `GET /test-calls`: filters `target_type`, `status`, `agent_id`, `batch_id`; newest first.
#[utoipa::path(
    get,
    path = "/api/public/v1/test-calls",
    tag = "test_calls",
    operation_id = "listTestCalls",
    summary = "List test-call runs, newest first",
    params(crate::api::openapi::TestRunListParams),
    responses((status = 200, description = "A page of runs", body = crate::api::openapi::ListEnvelope<TestCallRun>), crate::api::openapi::ListErrors)
)]
pub async fn list_runs(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Params(query): Params,
) -> Result<Response, ApiError> {
    let mut errors = FieldErrors::new();
    let page = Page::from_query(&query, &mut errors);
    let filter = TestRunFilter {
        target_type: query_enum(&query, "target_type", TestTargetType::ALL, &mut errors),
        status: query_enum(&query, "status", TestRunStatus::ALL, &mut errors),
        agent_id: query.get("agent_id").cloned(),
        batch_id: query.get("batch_id").cloned(),
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation { fields: errors });
    }
    let (runs, total) = state
        .store
        .list_test_runs(&org.0, &filter, page.limit.into(), page.offset)
        .await?;
    envelope::list(runs, page, total)
}

/// `GET /test-calls/{id}` (404 `test_call_not_found`).
#[utoipa::path(
    get,
    path = "/api/public/v1/test-calls/{id}",
    tag = "test_calls",
    operation_id = "getTestCall",
    summary = "Read a test-call run",
    params(crate::api::openapi::IdParam),
    responses((status = 200, description = "The run", body = crate::api::openapi::Envelope<TestCallRun>), crate::api::openapi::ReadErrors)
)]
pub async fn get_run(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let run = state
        .store
        .get_test_run(&org.0, &id)
        .await
        .map_err(|err| ApiError::from_store(err, "test_call", &id))?;
    envelope::ok(&run)
}

/// `POST /test-call-batches`: `run_count` runs `stagger_seconds` apart, answered 201 with
/// the batch `in_progress` and its `run_ids`; `requested_by_id` is the id of the API key.
#[utoipa::path(
    post,
    path = "/api/public/v1/test-call-batches",
    tag = "test_calls",
    operation_id = "createTestCallBatch",
    summary = "Run the same scenario run_count times in parallel",
    description = "The checks and errors of POST /test-calls, for run_count runs (1-20) started stagger_seconds apart; scenario_prompts rotate over the runs. Answers at once with the batch `in_progress` and its run_ids; `requested_by_id` is the id of the API key that asked.",
    params(crate::api::openapi::IdempotencyKey),
    request_body = crate::api::openapi::TestCallBatchCreate,
    responses((status = 201, description = "The batch, in progress, with its run_ids", body = crate::api::openapi::Envelope<TestCallBatch>), crate::api::openapi::TestCallErrors)
)]
pub async fn create_batch(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Extension(key): Extension<ApiKeyId>,
    JsonBody(bytes): JsonBody,
) -> Result<Response, ApiError> {
    state.accepting_calls()?;
    let org = org.0;
    let mut body = Body::parse(&bytes)?;
    body.require(&["target_type", "target_id", "run_count"]);
    let target = target_fields(&mut body, state.config.test_calls.charge_multiplier);
    let name = body.string("name", MAX_BATCH_NAME_LEN);
    let run_count = body.u32_in("run_count", MIN_BATCH_RUNS, MAX_BATCH_RUNS);
    let stagger_seconds = body
        .u32_in("stagger_seconds", 0, MAX_STAGGER_SECONDS)
        .unwrap_or(0);
    if body.has("scenario_prompt") && body.has("scenario_prompts") {
        body.invalid(
            "scenario_prompts",
            "give either scenario_prompt or scenario_prompts, not both",
        );
    }
    let audio_dir = state.config.test_calls.audio_dir.as_deref();
    let single = scenario(&mut body, "scenario_prompt", audio_dir);
    let rotation = scenarios(&mut body, audio_dir);
    body.finish()?;
    let (Some(target), Some(run_count)) = (target, run_count) else {
        return Err(ApiError::Internal(
            "required fields passed validation".into(),
        ));
    };
    let (estimated_cost_cents, resolved) = accept(&state, &org, &target, run_count).await?;

    let now = Utc::now();
    let batch_id = ids::new_id(ids::TEST_CALL_BATCH);
    let per_run_cost = estimate(&state, &target, 1);
    let mut batch = TestCallBatch {
        id: batch_id.clone(),
        org_id: org.clone(),
        target_type: target.target_type,
        target_id: target.target_id.clone(),
        agent_id: resolved.agent.id.clone(),
        name,
        direction: target.direction,
        mode: target.mode,
        target_number: resolved.target_number.clone(),
        scenario_prompt: single,
        scenario_prompts: rotation.unwrap_or_default(),
        network_profile: target.network_profile.clone(),
        thresholds: target.thresholds.clone(),
        charge_multiplier: target.charge_multiplier,
        estimated_cost_cents,
        run_count,
        stagger_seconds,
        status: TestBatchStatus::InProgress,
        total_runs: run_count,
        completed_runs: 0,
        failed_runs: 0,
        run_ids: Vec::new(),
        aggregate: None,
        error_message: None,
        requested_by_id: Some(key.0),
        created_at: now,
        updated_at: now,
        started_at: None,
        completed_at: None,
    };
    let runs: Vec<TestCallRun> = (0..run_count as usize)
        .map(|index| {
            let scenario_prompt = batch.scenario_for(index).map(str::to_owned);
            queued_run(
                (&org, &state.config.node.id),
                &target,
                &resolved,
                scenario_prompt,
                per_run_cost,
                Some(batch_id.clone()),
                now,
            )
        })
        .collect();
    batch.run_ids = runs.iter().map(|run| run.id.clone()).collect();
    let delays = stagger(run_count, stagger_seconds);

    let span = tracing::info_span!("test_batch", batch_id = %batch.id, agent_id = %batch.agent_id);
    async {
        admit(&state, Some(&batch), &runs).await?;
        tracing::info!(run_count, stagger_seconds, mode = %batch.mode,
            direction = %batch.direction, estimated_cost_cents, "test batch queued");
        state.test_runner.launch(runs, Some(batch.clone()), delays);
        envelope::created(&batch)
    }
    .instrument(span)
    .await
}

/// `GET /test-call-batches`: filter `status`; newest first.
#[utoipa::path(
    get,
    path = "/api/public/v1/test-call-batches",
    tag = "test_calls",
    operation_id = "listTestCallBatches",
    summary = "List test-call batches, newest first",
    params(crate::api::openapi::BatchListParams),
    responses((status = 200, description = "A page of batches", body = crate::api::openapi::ListEnvelope<TestCallBatch>), crate::api::openapi::ListErrors)
)]
pub async fn list_batches(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Params(query): Params,
) -> Result<Response, ApiError> {
    let mut errors = FieldErrors::new();
    let page = Page::from_query(&query, &mut errors);
    let filter = TestBatchFilter {
        status: query_enum(&query, "status", TestBatchStatus::ALL, &mut errors),
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation { fields: errors });
    }
    let (batches, total) = state
        .store
        .list_test_batches(&org.0, &filter, page.limit.into(), page.offset)
        .await?;
    envelope::list(batches, page, total)
}

/// `GET /test-call-batches/{id}` (404 `test_call_batch_not_found`): progress and, once
/// over, the aggregate of the runs' measurements.
#[utoipa::path(
    get,
    path = "/api/public/v1/test-call-batches/{id}",
    tag = "test_calls",
    operation_id = "getTestCallBatch",
    summary = "Read a test-call batch: progress, then the aggregate",
    params(crate::api::openapi::IdParam),
    responses((status = 200, description = "The batch", body = crate::api::openapi::Envelope<TestCallBatch>), crate::api::openapi::ReadErrors)
)]
pub async fn get_batch(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let batch = state
        .store
        .get_test_batch(&org.0, &id)
        .await
        .map_err(|err| ApiError::from_store(err, "test_call_batch", &id))?;
    envelope::ok(&batch)
}

/// The answer of `POST /agents/{id}/test-call`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct AgentTestCall {
    call_id: String,
    status: &'static str,
    to: String,
    agent_id: String,
}

/// `POST /agents/{id}/test-call` {`to`, `from_number`}: a real outbound call with the
/// agent, placed exactly as `POST /calls` places it; 201 `{call_id, status, to, agent_id}`.
///
/// Unlike `POST /calls`, the agent need not be live: the endpoint exists to verify an
/// agent before it goes live ([`testable`]).
#[utoipa::path(
    post,
    path = "/api/public/v1/agents/{id}/test-call",
    tag = "test_calls",
    operation_id = "createAgentTestCall",
    summary = "Place a real outbound call with the agent",
    description = "Placed exactly as POST /calls places it (same checks and errors, `to` in the role of phone_number), except that the agent may be draft or paused: the endpoint verifies an agent before it goes live (an archived agent is 422 `agent_not_active`).",
    params(crate::api::openapi::IdParam, crate::api::openapi::IdempotencyKey),
    request_body = crate::api::openapi::AgentTestCallCreate,
    responses((status = 201, description = "The call placed", body = crate::api::openapi::Envelope<AgentTestCall>), crate::api::openapi::PlaceCallErrors)
)]
pub async fn agent_test_call(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Id(agent_id): Id,
    claim: Option<Extension<IdempotencyClaim>>,
    JsonBody(bytes): JsonBody,
) -> Result<Response, ApiError> {
    state.accepting_calls()?;
    let mut body = Body::parse(&bytes)?;
    body.require(&["to"]);
    let to = body.string("to", 64);
    let from_number = body.string("from_number", 64);
    body.finish()?;
    let Some(to) = to else {
        return Err(ApiError::Internal(
            "required fields passed validation".into(),
        ));
    };
    let request = OutboundRequest {
        agent_id,
        phone_number: to,
        from_number,
        variables: Default::default(),
        settings: RequestedSettings::default(),
    };
    let claim = claim.map(|Extension(claim)| claim);
    let (call, response) = calls::place_outbound_with(
        &state,
        &org.0,
        request,
        "to",
        testable,
        claim.as_ref(),
        |call| {
            envelope::created(AgentTestCall {
                call_id: call.id.clone(),
                status: "initiated",
                to: call.to_number.clone(),
                agent_id: call.agent_id.clone(),
            })
        },
    )
    .await?;
    tracing::info!(call_id = %call.id, agent_id = %call.agent_id, "agent test call placed");
    Ok(response)
}

/// Whether an agent with `status` may be tested: a `draft` agent before it goes live, an
/// `active` one, and a `paused` one (paused to be fixed, verified before it is resumed). A
/// test call is the organisation's own deliberate call, not traffic the status holds back.
fn testable(status: AgentStatus) -> bool {
    matches!(
        status,
        AgentStatus::Draft | AgentStatus::Active | AgentStatus::Paused
    )
}

/// Reads the target, direction, mode, network and pricing fields, recording each problem;
/// `charge_multiplier` is the operator's `configured` one.
fn target_fields(body: &mut Body, configured: u32) -> Option<Target> {
    let target_type = body_enum(body, "target_type", TestTargetType::ALL);
    let target_id = body.string("target_id", 64);
    let direction = body_enum(body, "direction", TestDirection::ALL);
    let target_number = body.string("target_number", 64);
    if let Some(number) = target_number.as_deref().filter(|n| !is_e164(n)) {
        body.invalid(
            "target_number",
            format!("{number:?} is not an E.164 number (+ then 2 to 15 digits)"),
        );
    }
    let mode = body_enum(body, "mode", TestMode::ALL);
    let network_profile = body.string("network_profile", 32);
    if let Some(profile) = network_profile
        .as_deref()
        .filter(|p| !NETWORK_PROFILES.contains(p))
    {
        body.invalid(
            "network_profile",
            format!(
                "{profile:?} is not a network profile: must be one of {}",
                NETWORK_PROFILES.join(", ")
            ),
        );
    }
    let thresholds = thresholds(body);
    read_only_multiplier(body, configured);
    let consent = body.bool("consent_to_charge");
    Some(Target {
        target_type: target_type?,
        target_id: target_id?,
        direction: direction.unwrap_or(TestDirection::Outbound),
        target_number,
        mode: mode.unwrap_or(TestMode::Bot),
        network_profile: network_profile.unwrap_or_else(|| DEFAULT_NETWORK_PROFILE.to_owned()),
        thresholds,
        charge_multiplier: configured,
        consent,
    })
}

/// `charge_multiplier` is read-only: a request may repeat the operator's `configured` value
/// (clients that send the documented default keep working) or send `null` (not given), and
/// gets 422 for any other, so that no caller believes it pays another price than it does.
fn read_only_multiplier(body: &mut Body, configured: u32) {
    let Some(given) = body.value("charge_multiplier") else {
        return;
    };
    if given.as_f64() != Some(f64::from(configured)) {
        body.invalid(
            "charge_multiplier",
            format!(
                "is read-only: the operator sets it ([test_calls] charge_multiplier, \
                 {configured} here); leave it out"
            ),
        );
    }
}

/// A scenario prompt: non-blank text that, when it is a script, parses.
fn scenario(body: &mut Body, field: &str, audio_dir: Option<&Path>) -> Option<String> {
    let prompt = body.string(field, MAX_SCENARIO_LEN)?;
    check_scenario(body, field, &prompt, audio_dir).then_some(prompt)
}

/// `scenario_prompts`: a non-empty list of scenario prompts.
fn scenarios(body: &mut Body, audio_dir: Option<&Path>) -> Option<Vec<String>> {
    let prompts = body.string_list("scenario_prompts", MAX_SCENARIO_LEN)?;
    if prompts.is_empty() || prompts.len() > MAX_SCENARIO_PROMPTS {
        body.invalid(
            "scenario_prompts",
            format!("must hold 1 to {MAX_SCENARIO_PROMPTS} prompts"),
        );
        return None;
    }
    let mut valid = true;
    for (index, prompt) in prompts.iter().enumerate() {
        valid &= check_scenario(
            body,
            &format!("scenario_prompts[{index}]"),
            prompt,
            audio_dir,
        );
    }
    valid.then_some(prompts)
}

fn check_scenario(body: &mut Body, field: &str, prompt: &str, audio_dir: Option<&Path>) -> bool {
    if prompt.trim().is_empty() {
        body.invalid(field, "must not be blank");
        return false;
    }
    match TestRunner::check_scenario(prompt, audio_dir) {
        Ok(()) => true,
        Err(message) => {
            body.invalid(field, format!("invalid scenario script: {message}"));
            false
        }
    }
}

/// `thresholds`: an object of optional gates, each a number at least 0 (`None` when it
/// sets none).
fn thresholds(body: &mut Body) -> Option<Value> {
    let mut nested = body.object("thresholds")?;
    let mut gate = |field: &str| number_in(&mut nested, field, 0.0, None);
    let mut gates = TestThresholds {
        response_latency_p95_ms: gate("response_latency_p95_ms"),
        response_latency_p50_ms: gate("response_latency_p50_ms"),
        mos_min: None,
        dead_air_ms_max: gate("dead_air_ms_max"),
        loss_percent_max: gate("loss_percent_max"),
    };
    // The E-model's MOS lies within 1.0 ..= 4.5: a gate outside could never hold.
    gates.mos_min = number_in(&mut nested, "mos_min", MOS_MIN, Some(MOS_MAX));
    body.absorb(nested);
    if gates.gates().is_empty() {
        return None;
    }
    serde_json::to_value(&gates).ok()
}

/// A finite number of at least `min` (and at most `max`, when given); absent gives `None`.
fn number_in(body: &mut Body, field: &str, min: f64, max: Option<f64>) -> Option<f64> {
    if !body.has(field) {
        return None;
    }
    let value = body.number(field);
    match value {
        Some(value)
            if value.is_finite() && value >= min && !matches!(max, Some(max) if value > max) =>
        {
            Some(value)
        }
        _ => {
            let range = match max {
                Some(max) => format!("must be a number from {min} to {max}"),
                None => format!("must be a number of at least {min}"),
            };
            body.invalid(field, range);
            None
        }
    }
}

/// A string field that must name a value of an enumeration.
fn body_enum<T>(body: &mut Body, field: &str, all: &[T]) -> Option<T>
where
    T: std::str::FromStr + std::fmt::Display,
{
    let text = body.string(field, 32)?;
    match text.parse() {
        Ok(value) => Some(value),
        Err(_) => {
            body.invalid(field, one_of(all));
            None
        }
    }
}

/// The checks every test-call request passes before anything is stored, in order: consent
/// to the estimated cost of `run_count` runs, the target resolved to an agent and a number,
/// room under the concurrency cap, and credit. Answers the estimate and the resolved target.
async fn accept(
    state: &AppState,
    org: &str,
    target: &Target,
    run_count: u32,
) -> Result<(i64, Resolved), ApiError> {
    let estimated_cost_cents = estimate(state, target, run_count);
    require_consent(target, estimated_cost_cents)?;
    let resolved = resolve(state, org, target).await?;
    check_capacity(state, org, run_count).await?;
    check_balance(state, org, estimated_cost_cents).await?;
    Ok((estimated_cost_cents, resolved))
}

/// A new run of `target`, queued and not yet started on node `node_id`.
fn queued_run(
    (org, node_id): (&str, &str),
    target: &Target,
    resolved: &Resolved,
    scenario_prompt: Option<String>,
    estimated_cost_cents: i64,
    batch_id: Option<String>,
    now: chrono::DateTime<Utc>,
) -> TestCallRun {
    TestCallRun {
        id: ids::new_id(ids::TEST_CALL_RUN),
        org_id: org.to_owned(),
        target_type: target.target_type,
        target_id: target.target_id.clone(),
        agent_id: resolved.agent.id.clone(),
        direction: target.direction,
        target_number: resolved.target_number.clone(),
        scenario_prompt,
        mode: target.mode,
        status: TestRunStatus::Queued,
        network_profile: target.network_profile.clone(),
        thresholds: target.thresholds.clone(),
        charge_multiplier: target.charge_multiplier,
        estimated_cost_cents,
        call_id: None,
        sip_call_id: None,
        measurements: None,
        error_message: None,
        batch_id,
        started_at: None,
        completed_at: None,
        created_at: now,
        updated_at: now,
        node_id: Some(node_id.to_owned()),
    }
}

/// 400 unless the request consents to be charged; the error tells the estimate, so that a
/// client can show it before consenting.
fn require_consent(target: &Target, estimated_cost_cents: i64) -> Result<(), ApiError> {
    if target.consent == Some(true) {
        Ok(())
    } else {
        Err(ApiError::ConsentRequired {
            estimated_cost_cents,
        })
    }
}

/// The agent under test and the number called: the bot's for `outbound` (unless the
/// request names one); for `inbound`, the target phone number, else one of the agent's
/// numbers, else the bot's.
async fn resolve(state: &AppState, org: &str, target: &Target) -> Result<Resolved, ApiError> {
    let (agent_id, number) = match target.target_type {
        TestTargetType::Agent => (target.target_id.clone(), None),
        TestTargetType::PhoneNumber => {
            let number = state
                .store
                .get_number(org, &target.target_id)
                .await
                .map_err(|err| ApiError::from_store(err, "phone_number", &target.target_id))?;
            let Some(agent_id) = number.agent_id.clone() else {
                let mut fields = FieldErrors::new();
                fields.insert(
                    "target_id".into(),
                    format!(
                        "phone number {} ({}) is not assigned to an agent",
                        number.id, number.number
                    ),
                );
                return Err(ApiError::Validation { fields });
            };
            (agent_id, Some(number.number))
        }
    };
    let agent = state
        .store
        .get_agent(org, &agent_id)
        .await
        .map_err(|err| ApiError::from_store(err, "agent", &agent_id))?;
    if agent.status == crate::model::AgentStatus::Archived {
        return Err(ApiError::AgentNotActive {
            agent_id,
            status: agent.status.to_string(),
        });
    }
    let bot_number = &state.config.test_calls.bot_number;
    let target_number = match (&target.target_number, target.direction) {
        (Some(number), _) => number.clone(),
        (None, TestDirection::Outbound) => bot_number.clone(),
        (None, TestDirection::Inbound) => match number {
            Some(number) => number,
            None => state
                .store
                .numbers_of_agent(org, &agent.id)
                .await?
                .first()
                .map(|number| number.number.clone())
                .unwrap_or_else(|| bot_number.clone()),
        },
    };
    Ok(Resolved {
        agent,
        target_number,
    })
}

/// 429 when the organisation's runs in flight plus `requested` would pass the limit.
async fn check_capacity(state: &AppState, org: &str, requested: u32) -> Result<(), ApiError> {
    let limit = state.config.test_calls.max_concurrent_runs;
    let active = state.store.count_active_test_runs(org).await?;
    if active + u64::from(requested) > u64::from(limit) {
        return Err(ApiError::TestRunLimit {
            limit,
            active,
            requested,
        });
    }
    Ok(())
}

/// Estimated cost of `runs` runs: each priced at `test_calls.max_run_seconds`.
fn estimate(state: &AppState, target: &Target, runs: u32) -> i64 {
    test_call_cost_cents(
        f64::from(state.config.test_calls.max_run_seconds),
        state.config.credits.per_minute_cents,
        target.charge_multiplier,
        target.mode,
    )
    .saturating_mul(i64::from(runs))
}

/// 402 when the balance is below `estimated_cost_cents`.
async fn check_balance(
    state: &AppState,
    org: &str,
    estimated_cost_cents: i64,
) -> Result<(), ApiError> {
    let balance_cents = state.store.balance_cents(org).await?;
    if balance_cents < estimated_cost_cents {
        return Err(ApiError::InsufficientCreditsForTest {
            balance_cents,
            estimated_cost_cents,
        });
    }
    Ok(())
}

/// Stores the runs (and batch) if they still fit under the limit (429 otherwise).
async fn admit(
    state: &AppState,
    batch: Option<&TestCallBatch>,
    runs: &[TestCallRun],
) -> Result<(), ApiError> {
    let limit = state.config.test_calls.max_concurrent_runs;
    match state
        .store
        .admit_test_calls(batch, runs, u64::from(limit))
        .await?
    {
        TestCallAdmission::Admitted => Ok(()),
        TestCallAdmission::OverLimit { active } => Err(ApiError::TestRunLimit {
            limit,
            active,
            requested: u32::try_from(runs.len()).unwrap_or(u32::MAX),
        }),
    }
}

/// When each run of a batch starts: run `i` after `i * stagger_seconds`.
fn stagger(run_count: u32, stagger_seconds: u32) -> Vec<Duration> {
    (0..run_count)
        .map(|index| Duration::from_secs(u64::from(index) * u64::from(stagger_seconds)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> (Option<Target>, Result<(), ApiError>) {
        let mut body = Body::parse(value.to_string().as_bytes()).expect("object");
        let target = target_fields(&mut body, 2);
        (target, body.finish())
    }

    fn fields(result: Result<(), ApiError>) -> FieldErrors {
        match result {
            Err(ApiError::Validation { fields }) => fields,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_fill_what_the_request_leaves_out() {
        let (target, result) = parse(json!({"target_type": "agent", "target_id": "agt_1"}));
        result.expect("valid");
        let target = target.expect("target");
        assert_eq!(target.direction, TestDirection::Outbound);
        assert_eq!(
            target.mode,
            TestMode::Bot,
            "the API it copies defaults to bot"
        );
        assert_eq!(target.network_profile, "clean");
        assert_eq!(target.charge_multiplier, 2);
        assert_eq!(target.thresholds, None);
        assert_eq!(target.consent, None);
        assert_eq!(target.target_number, None);
    }

    #[test]
    fn every_bad_field_is_named() {
        let (_, result) = parse(json!({
            "target_type": "robot", "target_id": 7, "direction": "sideways",
            "target_number": "555", "mode": "carrier-pigeon", "network_profile": "moon",
            "thresholds": {"mos_min": -1, "latency": 3, "dead_air_ms_max": "long"},
            "charge_multiplier": 0.5, "consent_to_charge": "yes", "extra": 1
        }));
        let fields = fields(result);
        for field in [
            "target_type",
            "target_id",
            "direction",
            "target_number",
            "mode",
            "network_profile",
            "thresholds.mos_min",
            "thresholds.latency",
            "thresholds.dead_air_ms_max",
            "charge_multiplier",
            "consent_to_charge",
            "extra",
        ] {
            assert!(fields.contains_key(field), "{field} not named: {fields:?}");
        }
        assert_eq!(fields["target_type"], "must be one of agent, phone_number");
    }

    #[test]
    fn thresholds_keep_only_the_gates_given() {
        let (target, result) = parse(json!({
            "target_type": "phone_number", "target_id": "num_1",
            "thresholds": {"response_latency_p95_ms": 900, "mos_min": 3.6},
            "consent_to_charge": true, "mode": "sip",
        }));
        result.expect("valid");
        let target = target.expect("target");
        assert_eq!(
            target.thresholds,
            Some(json!({"response_latency_p95_ms": 900.0, "mos_min": 3.6}))
        );
        assert_eq!(target.consent, Some(true));
        assert_eq!(target.mode, TestMode::Sip);
        let (target, result) = parse(json!({
            "target_type": "agent", "target_id": "agt_1", "thresholds": {}
        }));
        result.expect("valid");
        assert_eq!(target.expect("target").thresholds, None);
    }

    #[test]
    fn the_charge_multiplier_is_the_operators() {
        for same in [json!(2), json!(2.0), json!(null)] {
            let (target, result) = parse(json!({
                "target_type": "agent", "target_id": "agt_1", "charge_multiplier": same,
            }));
            result.expect("repeating the configured value is harmless");
            assert_eq!(target.expect("target").charge_multiplier, 2);
        }
        for other in [json!(1), json!(1.5), json!(3), json!("2"), json!(0)] {
            let (_, result) = parse(json!({
                "target_type": "agent", "target_id": "agt_1", "charge_multiplier": other,
            }));
            let fields = fields(result);
            assert!(
                fields["charge_multiplier"].starts_with("is read-only"),
                "{other}: {fields:?}"
            );
            assert!(fields["charge_multiplier"].contains("2 here"), "{fields:?}");
        }
    }

    #[test]
    fn drafts_and_paused_agents_may_be_tested() {
        for status in [AgentStatus::Draft, AgentStatus::Active, AgentStatus::Paused] {
            assert!(testable(status), "{status}");
        }
    }

    #[test]
    fn scenarios_are_checked_by_the_runner_parser() {
        let mut body = Body::parse(
            json!({"scenario_prompt": "   ", "scenario_prompts": ["say hi\nhangup", "wait forever"]})
                .to_string()
                .as_bytes(),
        )
        .expect("object");
        assert_eq!(scenario(&mut body, "scenario_prompt", None), None);
        assert_eq!(scenarios(&mut body, None), None);
        let fields = fields(body.finish());
        assert_eq!(fields["scenario_prompt"], "must not be blank");
        assert!(
            fields["scenario_prompts[1]"].starts_with("invalid scenario script:"),
            "{fields:?}"
        );
        assert!(!fields.contains_key("scenario_prompts[0]"));

        let mut body = Body::parse(br#"{"scenario_prompt": "Hello, I want to book a table."}"#)
            .expect("object");
        assert_eq!(
            scenario(&mut body, "scenario_prompt", None).as_deref(),
            Some("Hello, I want to book a table.")
        );
        body.finish().expect("free text is a valid scenario");
    }

    #[test]
    fn stagger_spaces_the_runs() {
        assert_eq!(
            stagger(3, 5),
            [
                Duration::ZERO,
                Duration::from_secs(5),
                Duration::from_secs(10)
            ]
        );
        assert_eq!(stagger(2, 0), [Duration::ZERO, Duration::ZERO]);
    }
}
