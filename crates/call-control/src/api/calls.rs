//! `/calls`: place outbound calls, list and read call records, hang up (the recording is
//! served by `super::recordings`).

use std::collections::BTreeMap;

use axum::body::to_bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use chrono::Utc;

use super::envelope::{self, Page};
use super::error::ApiError;
use super::extract::{Id, JsonBody, Params};
use super::middleware::{IdempotencyClaim, OrgId};
use super::template;
use super::validation::{query_enum, Body, FieldErrors};
use super::AppState;
use crate::engine::billing;
use crate::ids;
use crate::model::{
    format_duration_secs, is_e164, AgentStatus, Call, CallDirection, CallOutcome, CallSettings,
    CallStatus,
};
use crate::store::{Admission, CallAdmission, CallFilter, KeptResponse, StoreError};

/// Longest call `max_duration` accepted, in seconds (one day).
pub const MAX_DURATION_SECS: u32 = 86_400;
/// Longest `join_timeout` accepted, in seconds.
pub const MAX_JOIN_TIMEOUT_SECS: u32 = 600;
/// Most entries in `variables`.
const MAX_VARIABLES: usize = 100;
/// Longest value of one variable.
const MAX_VARIABLE_VALUE: usize = 10_000;
/// Longest greeting override.
const MAX_GREETING: usize = 5_000;

/// `call_settings` as the request gave them (absent fields fall back to the agent's).
#[derive(Debug, Default)]
pub(super) struct RequestedSettings {
    recording_enabled: Option<bool>,
    transcription_enabled: Option<bool>,
    greeting: Option<String>,
    max_duration_secs: Option<u32>,
    join_timeout_secs: Option<u32>,
}

/// An outbound call as a request asks for it, validated field by field.
#[derive(Debug)]
pub(super) struct OutboundRequest {
    /// The agent placing the call.
    pub agent_id: String,
    /// The callee, E.164.
    pub phone_number: String,
    /// The caller id asked for (one of the agent's numbers).
    pub from_number: Option<String>,
    /// Template variables.
    pub variables: BTreeMap<String, String>,
    /// `call_settings` as given.
    pub settings: RequestedSettings,
}

/// `POST /calls`: validates, picks the caller id and trunk, checks credits, renders the
/// prompt and greeting, stores the call `queued`, hands it to the engine and answers 201.
#[utoipa::path(
    post,
    path = "/api/public/v1/calls",
    tag = "calls",
    operation_id = "createCall",
    summary = "Place an outbound call",
    description = "Validates, picks the caller id (from_number, or one of the agent's numbers) and its trunk, renders {{variables}} into the prompt and greeting, then in one transaction reserves one minute of credit (the balance less what the organisation's live calls hold must cover it: else 402 insufficient_credits), takes one of the organisation's `[api] max_concurrent_calls_per_org` live-call slots (else 429 concurrent_call_limit), stores the call `queued` and, with `X-Idempotency-Key`, this response under the key; only then hands the call to the engine. At its end the call is charged each started minute after answer and the rest released. A retry with the same key replays this response and dials nothing, also after a crash; while the first request has not stored its call yet, a retry gets 409 idempotency_key_in_use.",
    params(crate::api::openapi::IdempotencyKey),
    request_body = crate::api::openapi::CallCreate,
    responses((status = 201, description = "The call, stored queued and handed to the engine", body = crate::api::openapi::Envelope<Call>), crate::api::openapi::PlaceCallErrors)
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    claim: Option<Extension<IdempotencyClaim>>,
    JsonBody(bytes): JsonBody,
) -> Result<Response, ApiError> {
    state.accepting_calls()?;
    let mut body = Body::parse(&bytes)?;
    body.require(&["agent_id", "phone_number"]);
    let agent_id = body.string("agent_id", 64);
    let phone_number = body.string("phone_number", 64);
    let from_number = body.string("from_number", 64);
    let variables = variables(&mut body);
    let settings = requested_settings(&mut body);
    body.finish()?;
    let (Some(agent_id), Some(phone_number)) = (agent_id, phone_number) else {
        return Err(ApiError::Internal(
            "required fields passed validation".into(),
        ));
    };
    let request = OutboundRequest {
        agent_id,
        phone_number,
        from_number,
        variables,
        settings,
    };
    let claim = claim.map(|Extension(claim)| claim);
    let (_, response) = place_outbound(
        &state,
        &org.0,
        request,
        "phone_number",
        claim.as_ref(),
        |call| envelope::created(call),
    )
    .await?;
    Ok(response)
}

/// Places an outbound call as `POST /calls` does (also `POST /agents/{id}/test-call`):
/// checks the numbers (`number_field` names the callee's field in errors), the agent and
/// the caller id; builds the success response with `respond`; stores the call `queued`
/// holding a minute of credit and a live-call slot, with that response under the request's
/// idempotency key (`claim`), in one transaction; then hands the call to the engine.
/// Returns the call and the response.
pub(super) async fn place_outbound(
    state: &AppState,
    org: &str,
    request: OutboundRequest,
    number_field: &'static str,
    claim: Option<&IdempotencyClaim>,
    respond: impl FnOnce(&Call) -> Result<Response, ApiError>,
) -> Result<(Call, Response), ApiError> {
    let active = |status: AgentStatus| status == AgentStatus::Active;
    place_outbound_with(state, org, request, number_field, active, claim, respond).await
}

/// [`place_outbound`] for an agent whose status passes `may_call` (else 422
/// `agent_not_active`): `POST /agents/{id}/test-call` also calls with agents not live yet.
pub(super) async fn place_outbound_with(
    state: &AppState,
    org: &str,
    request: OutboundRequest,
    number_field: &'static str,
    may_call: fn(AgentStatus) -> bool,
    claim: Option<&IdempotencyClaim>,
    respond: impl FnOnce(&Call) -> Result<Response, ApiError>,
) -> Result<(Call, Response), ApiError> {
    let org = org.to_owned();
    let OutboundRequest {
        agent_id,
        phone_number,
        from_number,
        variables,
        settings,
    } = request;
    if !is_e164(&phone_number) {
        return Err(ApiError::InvalidPhoneNumber {
            field: number_field,
            value: phone_number,
        });
    }
    if let Some(from) = from_number.as_ref().filter(|n| !is_e164(n)) {
        return Err(ApiError::InvalidPhoneNumber {
            field: "from_number",
            value: from.clone(),
        });
    }

    let agent = state
        .store
        .get_agent(&org, &agent_id)
        .await
        .map_err(|err| ApiError::from_store(err, "agent", &agent_id))?;
    if !may_call(agent.status) {
        return Err(ApiError::AgentNotActive {
            agent_id,
            status: agent.status.to_string(),
        });
    }
    let numbers = state.store.numbers_of_agent(&org, &agent.id).await?;
    let from = match &from_number {
        Some(wanted) => numbers
            .iter()
            .find(|n| &n.number == wanted)
            .ok_or_else(|| ApiError::InvalidFromNumber {
                number: wanted.clone(),
                agent_id: agent.id.clone(),
            })?,
        None => numbers
            .first()
            .ok_or_else(|| ApiError::NoPhoneNumberConfigured {
                agent_id: agent.id.clone(),
            })?,
    };
    let trunk = state
        .store
        .get_trunk(&org, &from.trunk_id)
        .await
        .map_err(|err| ApiError::from_store(err, "trunk", &from.trunk_id))?;

    let call_id = ids::new_id(ids::CALL);
    let prompt = template::render(&agent.prompt, &variables);
    let greeting_template = settings.greeting.clone().or_else(|| agent.greeting.clone());
    let greeting = greeting_template
        .as_deref()
        .map(|g| template::render(g, &variables));
    let mut missing = prompt.missing.clone();
    for name in greeting.iter().flat_map(|g| g.missing.iter()) {
        if !missing.contains(name) {
            missing.push(name.clone());
        }
    }
    if !missing.is_empty() {
        tracing::info!(call_id = %call_id, missing = ?missing,
            "template variables not given; rendered as empty text");
    }

    let defaults = &agent.default_call_settings;
    let max_duration_secs = settings
        .max_duration_secs
        .unwrap_or(defaults.max_duration_secs);
    let join_timeout_secs = settings
        .join_timeout_secs
        .unwrap_or(defaults.join_timeout_secs);
    let now = Utc::now();
    let call = Call {
        id: call_id,
        org_id: org.clone(),
        agent_id: agent.id.clone(),
        status: CallStatus::Queued,
        outcome: None,
        direction: CallDirection::Outbound,
        phone_number: phone_number.clone(),
        from_number: from.number.clone(),
        to_number: phone_number,
        variables,
        call_settings: CallSettings {
            recording_enabled: settings
                .recording_enabled
                .unwrap_or(defaults.recording_enabled),
            transcription_enabled: settings
                .transcription_enabled
                .unwrap_or(defaults.transcription_enabled),
            greeting: settings.greeting,
            max_duration: Some(format_duration_secs(max_duration_secs)),
            join_timeout: Some(format_duration_secs(join_timeout_secs)),
        },
        max_duration_secs,
        join_timeout_secs,
        sip_call_id: None,
        sip_final_code: None,
        q850_cause: None,
        end_reason: None,
        error_message: None,
        duration_seconds: None,
        transcript: Vec::new(),
        recording_url: None,
        media_stats: None,
        node_id: Some(state.config.node.id.clone()),
        rendered_prompt: Some(prompt.text),
        rendered_greeting: greeting.map(|g| g.text),
        created_at: now,
        started_at: None,
        answered_at: None,
        ended_at: None,
        updated_at: now,
    };
    let response = respond(&call)?;
    let (parts, body) = response.into_parts();
    let body = to_bytes(body, usize::MAX)
        .await
        .map_err(|err| ApiError::Internal(format!("buffering a response: {err}")))?;
    let kept = claim.map(|claim| KeptResponse {
        key: claim.key.clone(),
        fingerprint: claim.fingerprint.clone(),
        status: parts.status.as_u16(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    admit(state, &call, kept.as_ref()).await?;
    state
        .metrics
        .record_call_created(CallDirection::Outbound.as_str());
    tracing::info!(call_id = %call.id, agent_id = %agent.id, trunk_id = %trunk.id, "call queued");
    if let Err(err) = state.engine.place_call(call.clone(), agent, trunk).await {
        let reason = err.to_string();
        tracing::error!(call_id = %call.id, error = %reason, "engine refused the call");
        let mut failed = call.clone();
        failed.status = CallStatus::Failed;
        failed.outcome = Some(CallOutcome::Error);
        failed.end_reason = Some("engine_error".into());
        failed.ended_at = Some(Utc::now());
        failed.duration_seconds = Some(0.0);
        // Nothing was used: the reservation goes back whole, and the key is free again
        // (only a success is kept for replay).
        state.store.finish_call(&failed, 0).await?;
        if let Some(kept) = &kept {
            state
                .store
                .idempotency_forget(&org, &kept.key, &kept.fingerprint)
                .await?;
        }
        return Err(ApiError::CallNotPlaced {
            call_id: call.id,
            reason,
        });
    }
    Ok((
        call,
        Response::from_parts(parts, axum::body::Body::from(body)),
    ))
}

/// Stores `call` holding a minute of credit and a live-call slot of its organisation (with
/// `kept` under its idempotency key), or says why not: 402 `insufficient_credits`, 429
/// `concurrent_call_limit`, 409 `idempotency_key_in_use` (another request took the key
/// between the middleware's look-up and now, e.g. on another node).
async fn admit(state: &AppState, call: &Call, kept: Option<&KeptResponse>) -> Result<(), ApiError> {
    let admission = Admission {
        reserve_cents: billing::reservation_cents(state.config.credits.per_minute_cents),
        max_live_calls: crate::engine::max_live_calls(&state.config),
    };
    match state.store.admit_call(call, admission, kept).await? {
        CallAdmission::Admitted => {
            // Inbound calls are admitted from memory: they must count this one at once.
            state
                .engine
                .admitted_by_api(&call.org_id, admission.reserve_cents);
            Ok(())
        }
        CallAdmission::InsufficientCredits {
            balance_cents,
            reserved_cents,
            required_cents,
        } => Err(ApiError::InsufficientCredits {
            balance_cents,
            reserved_cents,
            required_cents,
        }),
        CallAdmission::ConcurrentCallLimit { live_calls, limit } => {
            Err(ApiError::ConcurrentCallLimit { limit, live_calls })
        }
        CallAdmission::IdempotencyKeyTaken => Err(ApiError::Conflict {
            code: "idempotency_key_in_use",
            message: "a request with this idempotency key is still being served".into(),
        }),
    }
}

/// `GET /calls`: filters `status`, `agent_id`, `direction`; newest first.
#[utoipa::path(
    get,
    path = "/api/public/v1/calls",
    tag = "calls",
    operation_id = "listCalls",
    summary = "List calls, newest first",
    params(crate::api::openapi::CallListParams),
    responses((status = 200, description = "A page of calls", body = crate::api::openapi::ListEnvelope<Call>), crate::api::openapi::ListErrors)
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Params(query): Params,
) -> Result<Response, ApiError> {
    let mut errors = FieldErrors::new();
    let page = Page::from_query(&query, &mut errors);
    let filter = CallFilter {
        status: query_enum(&query, "status", CallStatus::ALL, &mut errors),
        agent_id: query.get("agent_id").cloned(),
        direction: query_enum(&query, "direction", CallDirection::ALL, &mut errors),
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation { fields: errors });
    }
    let (calls, total) = state
        .store
        .list_calls(&org.0, &filter, page.limit.into(), page.offset)
        .await?;
    envelope::list(calls, page, total)
}

/// `GET /calls/{id}`
#[utoipa::path(
    get,
    path = "/api/public/v1/calls/{id}",
    tag = "calls",
    operation_id = "getCall",
    summary = "Read a call",
    params(crate::api::openapi::IdParam),
    responses((status = 200, description = "The call", body = crate::api::openapi::Envelope<Call>), crate::api::openapi::ReadErrors)
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let call = state
        .store
        .get_call(&org.0, &id)
        .await
        .map_err(|err| ApiError::from_store(err, "call", &id))?;
    envelope::ok(&call)
}

/// `POST /calls/{id}/hangup`: cancels a call not yet answered or hangs up an answered one;
/// 202 with the call as stored (its final status follows once the engine has ended it).
#[utoipa::path(
    post,
    path = "/api/public/v1/calls/{id}/hangup",
    tag = "calls",
    operation_id = "hangupCall",
    summary = "Cancel a call not yet answered, or hang up an answered one",
    params(crate::api::openapi::IdParam, crate::api::openapi::IdempotencyKey),
    responses((status = 202, description = "The call as stored; its terminal status follows once the engine has ended it", body = crate::api::openapi::Envelope<Call>), crate::api::openapi::HangupErrors)
)]
pub async fn hangup(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Id(id): Id,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let call = state
        .store
        .get_call(&org.0, &id)
        .await
        .map_err(|err| ApiError::from_store(err, "call", &id))?;
    if call.status.is_terminal() {
        return Err(ApiError::Conflict {
            code: "call_already_ended",
            message: format!("call {id} already {}", call.status),
        });
    }
    if !state.engine.hangup(&call.id) {
        // A call another node runs is hung up there (once: a forwarded request is not
        // forwarded again).
        let forwarded = headers.contains_key(crate::peers::FORWARDED_BY);
        if let Some(node) = state.peers.owner_elsewhere(&call).filter(|_| !forwarded) {
            let authorization = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            return forward_hangup(&state, node, &call, authorization).await;
        }
        return Err(ApiError::Conflict {
            code: "call_not_live",
            message: format!("call {id} is not live on this node"),
        });
    }
    let call = match state.store.get_call(&org.0, &id).await {
        Ok(current) => current,
        Err(StoreError::NotFound) => call,
        Err(other) => return Err(other.into()),
    };
    envelope::respond(StatusCode::ACCEPTED, &call)
}

/// Hangs up `call` on node `node`, which runs it, and answers what that node answered.
async fn forward_hangup(
    state: &AppState,
    node: &str,
    call: &Call,
    authorization: &str,
) -> Result<Response, ApiError> {
    use crate::peers::PeerError;
    match state
        .peers
        .hang_up(&state.store, node, call, authorization)
        .await
    {
        Ok(reply) => {
            let status =
                StatusCode::from_u16(reply.status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            Ok(axum::response::IntoResponse::into_response((
                status,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                reply.body,
            )))
        }
        Err(PeerError::Store(error)) => Err(error.into()),
        Err(error @ PeerError::Unreachable { .. }) => {
            tracing::warn!(call_id = %call.id, %error, "hang-up not forwarded");
            Err(ApiError::Unavailable {
                reason: "the node that runs the call did not answer; retry",
            })
        }
        Err(error) => Err(ApiError::Conflict {
            code: "call_not_live",
            message: error.to_string(),
        }),
    }
}

fn variables(body: &mut Body) -> BTreeMap<String, String> {
    let Some(variables) = body.string_map("variables") else {
        return BTreeMap::new();
    };
    if variables.len() > MAX_VARIABLES {
        body.invalid("variables", format!("at most {MAX_VARIABLES} variables"));
    }
    for (name, value) in &variables {
        if !template::is_variable_name(name) {
            body.invalid(
                &format!("variables.{name}"),
                "names are 1-128 of A-Z, a-z, 0-9, _, - and .",
            );
        } else if value.chars().count() > MAX_VARIABLE_VALUE {
            body.invalid(
                &format!("variables.{name}"),
                format!("must be at most {MAX_VARIABLE_VALUE} characters long"),
            );
        }
    }
    variables
}

fn requested_settings(body: &mut Body) -> RequestedSettings {
    let mut requested = RequestedSettings::default();
    let Some(mut settings) = body.object("call_settings") else {
        return requested;
    };
    requested.recording_enabled = settings.bool("recording_enabled");
    requested.transcription_enabled = settings.bool("transcription_enabled");
    requested.greeting = settings.text("greeting", MAX_GREETING).flatten();
    requested.max_duration_secs =
        settings.duration("max_duration", "max_duration_secs", MAX_DURATION_SECS);
    requested.join_timeout_secs =
        settings.duration("join_timeout", "join_timeout_secs", MAX_JOIN_TIMEOUT_SECS);
    body.absorb(settings);
    requested
}
