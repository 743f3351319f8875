//! `/agents`: create, list, read, update and delete the organisation's agents.

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use chrono::Utc;
use serde_json::json;

use super::envelope::{self, Page};
use super::error::ApiError;
use super::extract::{Id, JsonBody, Params};
use super::middleware::OrgId;
use super::validation::{is_url, Body};
use super::AppState;
use crate::ids;
use crate::model::{Agent, AgentCallSettings, AgentStatus, Runtime, ScriptStep};

/// Longest agent name.
const MAX_NAME: usize = 200;
/// Longest prompt.
const MAX_PROMPT: usize = 100_000;
/// Longest greeting.
const MAX_GREETING: usize = 5_000;
/// Most steps in a scripted runtime.
const MAX_STEPS: usize = 1_000;

/// `POST /agents`
#[utoipa::path(
    post,
    path = "/api/public/v1/agents",
    tag = "agents",
    operation_id = "createAgent",
    summary = "Create an agent",
    params(crate::api::openapi::IdempotencyKey),
    request_body = crate::api::openapi::AgentCreate,
    responses((status = 201, description = "The agent created", body = crate::api::openapi::Envelope<Agent>), crate::api::openapi::CreateErrors)
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    JsonBody(bytes): JsonBody,
) -> Result<Response, ApiError> {
    let mut body = Body::parse(&bytes)?;
    body.require(&["name"]);
    let now = Utc::now();
    let mut agent = Agent {
        id: ids::new_id(ids::AGENT),
        org_id: org.0,
        name: String::new(),
        prompt: String::new(),
        greeting: None,
        status: AgentStatus::Draft,
        runtime: Runtime::Echo,
        default_call_settings: AgentCallSettings::default(),
        created_at: now,
        updated_at: now,
    };
    apply(&mut body, &mut agent);
    body.finish()?;
    state.store.insert_agent(&agent).await?;
    envelope::created(&agent)
}

/// `GET /agents`
#[utoipa::path(
    get,
    path = "/api/public/v1/agents",
    tag = "agents",
    operation_id = "listAgents",
    summary = "List agents, newest first",
    params(crate::api::openapi::PageParams),
    responses((status = 200, description = "A page of agents", body = crate::api::openapi::ListEnvelope<Agent>), crate::api::openapi::ListErrors)
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Params(query): Params,
) -> Result<Response, ApiError> {
    let page = Page::only(&query)?;
    let (agents, total) = state
        .store
        .list_agents(&org.0, page.limit.into(), page.offset)
        .await?;
    envelope::list(agents, page, total)
}

/// `GET /agents/{id}`
#[utoipa::path(
    get,
    path = "/api/public/v1/agents/{id}",
    tag = "agents",
    operation_id = "getAgent",
    summary = "Read an agent",
    params(crate::api::openapi::IdParam),
    responses((status = 200, description = "The agent", body = crate::api::openapi::Envelope<Agent>), crate::api::openapi::ReadErrors)
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let agent = state
        .store
        .get_agent(&org.0, &id)
        .await
        .map_err(|err| ApiError::from_store(err, "agent", &id))?;
    envelope::ok(&agent)
}

/// `PATCH /agents/{id}`: changes the fields present in the body.
#[utoipa::path(
    patch,
    path = "/api/public/v1/agents/{id}",
    tag = "agents",
    operation_id = "updateAgent",
    summary = "Change the given fields of an agent",
    params(crate::api::openapi::IdParam),
    request_body = crate::api::openapi::AgentUpdate,
    responses((status = 200, description = "The agent changed", body = crate::api::openapi::Envelope<Agent>), crate::api::openapi::UpdateErrors)
)]
pub async fn update(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Id(id): Id,
    JsonBody(bytes): JsonBody,
) -> Result<Response, ApiError> {
    let mut agent = state
        .store
        .get_agent(&org.0, &id)
        .await
        .map_err(|err| ApiError::from_store(err, "agent", &id))?;
    let mut body = Body::parse(&bytes)?;
    apply(&mut body, &mut agent);
    body.finish()?;
    agent.updated_at = Utc::now();
    state
        .store
        .update_agent(&agent)
        .await
        .map_err(|err| ApiError::from_store(err, "agent", &id))?;
    envelope::ok(&agent)
}

/// `DELETE /agents/{id}`
#[utoipa::path(
    delete,
    path = "/api/public/v1/agents/{id}",
    tag = "agents",
    operation_id = "deleteAgent",
    summary = "Delete an agent",
    params(crate::api::openapi::IdParam),
    responses((status = 200, description = "The agent is deleted", body = crate::api::openapi::Envelope<crate::api::openapi::Deleted>), crate::api::openapi::DeleteErrors)
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Id(id): Id,
) -> Result<Response, ApiError> {
    state
        .store
        .delete_agent(&org.0, &id)
        .await
        .map_err(|err| ApiError::from_store(err, "agent", &id))?;
    envelope::ok(json!({ "id": id, "deleted": true }))
}

/// Takes the agent fields present in `body` into `agent`, recording every bad one.
fn apply(body: &mut Body, agent: &mut Agent) {
    if let Some(name) = body.string("name", MAX_NAME) {
        agent.name = name;
    }
    if let Some(prompt) = body.text("prompt", MAX_PROMPT) {
        agent.prompt = prompt.unwrap_or_default();
    }
    if let Some(greeting) = body.text("greeting", MAX_GREETING) {
        agent.greeting = greeting;
    }
    if let Some(status) = body.typed::<AgentStatus>("status") {
        agent.status = status;
    }
    if let Some(runtime) = body.typed::<Runtime>("runtime") {
        if let Some(problem) = runtime_problem(&runtime) {
            body.invalid("runtime", problem);
        } else {
            agent.runtime = runtime;
        }
    }
    if let Some(mut settings) = body.object("default_call_settings") {
        let current = &mut agent.default_call_settings;
        if let Some(v) = settings.u32_in("max_duration_secs", 1, 86_400) {
            current.max_duration_secs = v;
        }
        if let Some(v) = settings.u32_in("join_timeout_secs", 1, 600) {
            current.join_timeout_secs = v;
        }
        if let Some(v) = settings.bool("recording_enabled") {
            current.recording_enabled = v;
        }
        if let Some(v) = settings.bool("transcription_enabled") {
            current.transcription_enabled = v;
        }
        body.absorb(settings);
    }
}

/// What is wrong with a runtime that parsed, if anything.
fn runtime_problem(runtime: &Runtime) -> Option<String> {
    match runtime {
        Runtime::Echo => None,
        Runtime::Websocket { url, format, .. } => {
            if !is_url(url, &["ws", "wss"]) {
                Some("url must be a ws:// or wss:// URL".into())
            } else {
                crate::runtime::websocket::WireFormat::parse(format.as_deref()).err()
            }
        }
        Runtime::Scripted { steps } => {
            if steps.len() > MAX_STEPS {
                return Some(format!("a script has at most {MAX_STEPS} steps"));
            }
            steps
                .iter()
                .enumerate()
                .find_map(|(i, step)| step_problem(step).map(|p| format!("steps[{i}]: {p}")))
        }
    }
}

fn step_problem(step: &ScriptStep) -> Option<&'static str> {
    match step {
        ScriptStep::Tone {
            frequency_hz,
            duration_ms,
        } if !(20..=8_000).contains(frequency_hz) || !(1..=60_000).contains(duration_ms) => {
            Some("tone needs frequency_hz 20-8000 and duration_ms 1-60000")
        }
        ScriptStep::Dtmf { digits }
            if digits.is_empty()
                || digits.len() > 64
                || !digits
                    .bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'*' | b'#' | b'A'..=b'D')) =>
        {
            Some("dtmf digits must be 1-64 of 0-9, *, #, A-D")
        }
        ScriptStep::Wait { ms } if *ms > 600_000 => Some("wait ms must be at most 600000"),
        ScriptStep::WaitForDtmf { timeout_ms } if *timeout_ms > 600_000 => {
            Some("wait_for_dtmf timeout_ms must be at most 600000")
        }
        ScriptStep::Say { text, audio } if text.is_none() && audio.is_none() => {
            Some("say needs text or audio")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_checks() {
        assert!(runtime_problem(&Runtime::Echo).is_none());
        let ws = Runtime::Websocket {
            url: "http://x".into(),
            headers: Default::default(),
            format: None,
        };
        assert!(runtime_problem(&ws).is_some());
        let wideband = |format: &str| Runtime::Websocket {
            url: "wss://agent.example/stream".into(),
            headers: Default::default(),
            format: Some(format.into()),
        };
        assert!(runtime_problem(&wideband("twilio")).is_none());
        assert!(runtime_problem(&wideband("audio/l16;rate=16000")).is_none());
        assert!(runtime_problem(&wideband("audio/l16;rate=8000")).is_some());
        let script = Runtime::Scripted {
            steps: vec![
                ScriptStep::Hangup,
                ScriptStep::Dtmf {
                    digits: "12x".into(),
                },
            ],
        };
        assert!(runtime_problem(&script)
            .expect("bad digits")
            .starts_with("steps[1]"));
    }
}
