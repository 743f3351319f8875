//! `/agents`: create, list, read, update and delete the organisation's agents.

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use chrono::Utc;
use serde_json::json;

use super::calls::{MAX_DURATION_SECS, MAX_JOIN_TIMEOUT_SECS};
use super::envelope::{self, Page};
use super::error::ApiError;
use super::extract::{Id, JsonBody, Params};
use super::middleware::OrgId;
use super::validation::{is_url, Body, FieldErrors};
use super::AppState;
use crate::destinations::{DestinationPolicy, SETTING, SETTING_ENV};
use crate::ids;
use crate::model::{Agent, AgentCallSettings, AgentStatus, Runtime, ScriptStep};
use crate::store::AgentRemoval;

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
    check_audio_files(&mut body, &agent.runtime, &state);
    check_destination(&mut body, &agent.runtime, &state);
    body.finish()?;
    state.store.insert_agent(&agent).await?;
    envelope::created(readable(&agent))
}

/// `GET /agents`: archived agents only with `?include_archived=true`.
#[utoipa::path(
    get,
    path = "/api/public/v1/agents",
    tag = "agents",
    operation_id = "listAgents",
    summary = "List agents, newest first (archived ones only when asked for)",
    params(crate::api::openapi::AgentListParams),
    responses((status = 200, description = "A page of agents", body = crate::api::openapi::ListEnvelope<Agent>), crate::api::openapi::ListErrors)
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Params(query): Params,
) -> Result<Response, ApiError> {
    let mut errors = FieldErrors::new();
    let page = Page::from_query(&query, &mut errors);
    let include_archived = match query.get("include_archived").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            errors.insert(
                "include_archived".into(),
                format!("{other:?} is not one of true, false"),
            );
            false
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation { fields: errors });
    }
    let (agents, total) = state
        .store
        .list_agents(&org.0, include_archived, page.limit.into(), page.offset)
        .await?;
    envelope::list(agents.iter().map(readable).collect(), page, total)
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
    envelope::ok(readable(&agent))
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
    if agent.status == AgentStatus::Archived {
        return Err(ApiError::AgentArchived { agent_id: id });
    }
    let mut body = Body::parse(&bytes)?;
    let new_runtime = body.has("runtime");
    apply(&mut body, &mut agent);
    if new_runtime {
        check_audio_files(&mut body, &agent.runtime, &state);
        check_destination(&mut body, &agent.runtime, &state);
    }
    body.finish()?;
    agent.updated_at = Utc::now();
    state
        .store
        .update_agent(&agent)
        .await
        .map_err(|err| ApiError::from_store(err, "agent", &id))?;
    envelope::ok(readable(&agent))
}

/// `DELETE /agents/{id}`: an agent that calls or test runs name is archived (kept with status
/// `archived`, so that their records never point at an id that no longer exists), one that
/// nothing names is deleted. The answer says which: `{"id", "deleted", "archived"}`.
#[utoipa::path(
    delete,
    path = "/api/public/v1/agents/{id}",
    tag = "agents",
    operation_id = "deleteAgent",
    summary = "Delete an agent, or archive it when calls or test runs name it",
    params(crate::api::openapi::IdParam),
    responses((status = 200, description = "The agent is deleted or archived", body = crate::api::openapi::Envelope<crate::api::openapi::AgentDeleted>), crate::api::openapi::DeleteErrors)
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let removal = state
        .store
        .remove_agent(&org.0, &id, Utc::now())
        .await
        .map_err(|err| ApiError::from_store(err, "agent", &id))?;
    let archived = removal == AgentRemoval::Archived;
    envelope::ok(json!({ "id": id, "deleted": !archived, "archived": archived }))
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
    if let Some(status) = body.enumeration("status", SETTABLE_STATUSES) {
        agent.status = status;
    }
    let headers_given = body
        .peek("runtime")
        .is_some_and(|runtime| runtime.get("headers").is_some());
    if let Some(mut runtime) = runtime(body) {
        keep_written_headers(&mut runtime, &agent.runtime, headers_given);
        agent.runtime = runtime;
    }
    if let Some(mut settings) = body.object("default_call_settings") {
        let current = &mut agent.default_call_settings;
        if let Some(v) = settings.duration("max_duration", "max_duration_secs", MAX_DURATION_SECS) {
            current.max_duration_secs = v;
        }
        if let Some(v) =
            settings.duration("join_timeout", "join_timeout_secs", MAX_JOIN_TIMEOUT_SECS)
        {
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

/// What reads show of a WebSocket agent's header values (they are write-only: they often
/// carry the agent's bearer token). Written back in a `PATCH`, it keeps the stored value.
pub const REDACTED_HEADER_VALUE: &str = "<redacted>";

/// The agent as reads show it: header names kept, their values [`REDACTED_HEADER_VALUE`].
fn readable(agent: &Agent) -> Agent {
    let mut agent = agent.clone();
    if let Runtime::Websocket { headers, .. } = &mut agent.runtime {
        for value in headers.values_mut() {
            *value = REDACTED_HEADER_VALUE.to_owned();
        }
    }
    agent
}

/// Write-only header values in a `PATCH` of a WebSocket runtime: a header given as
/// [`REDACTED_HEADER_VALUE`] keeps its stored value (a client may send back what it read),
/// and a runtime given without `headers` keeps every stored header (`"headers": {}` clears
/// them).
fn keep_written_headers(new: &mut Runtime, current: &Runtime, headers_given: bool) {
    let (
        Runtime::Websocket { headers, .. },
        Runtime::Websocket {
            headers: stored, ..
        },
    ) = (new, current)
    else {
        return;
    };
    if !headers_given {
        headers.clone_from(stored);
        return;
    }
    headers.retain(|name, value| {
        if value != REDACTED_HEADER_VALUE {
            return true;
        }
        match stored.get(name) {
            Some(kept) => {
                value.clone_from(kept);
                true
            }
            None => false,
        }
    });
}

/// The statuses a client may set (`archived` comes from `DELETE` only).
const SETTABLE_STATUSES: &[AgentStatus] =
    &[AgentStatus::Draft, AgentStatus::Active, AgentStatus::Paused];

/// The `type`s of a runtime.
const RUNTIME_TYPES: &[&str] = &["echo", "websocket", "scripted"];

/// The `action`s of a scripted step.
const STEP_ACTIONS: &[&str] = &["say", "tone", "dtmf", "wait", "wait_for_dtmf", "hangup"];

/// Longest `say` text of a scripted step.
const MAX_SAY_TEXT: usize = 10_000;
/// Longest path of a `say` audio file.
const MAX_AUDIO_PATH: usize = 4_096;
/// Longest wait of a scripted step, in milliseconds.
const MAX_WAIT_MS: u32 = 600_000;

/// Every `say` file of a scripted runtime must be a plain name of a file inside
/// `[agents] audio_dir` (checked again when the call opens it): a tenant never names a path
/// on the server.
fn check_audio_files(body: &mut Body, runtime: &Runtime, state: &AppState) {
    let Runtime::Scripted { steps } = runtime else {
        return;
    };
    let dir = state.config.agents.audio_dir.as_deref();
    for (index, step) in steps.iter().enumerate() {
        let ScriptStep::Say {
            audio: Some(name), ..
        } = step
        else {
            continue;
        };
        let path = std::path::Path::new(name);
        if let Err(error) = crate::audio_files::resolve(dir, path, "[agents] audio_dir") {
            body.invalid(&format!("runtime.steps[{index}].audio"), error.to_string());
        }
    }
}

/// A WebSocket agent whose URL is a literal loopback, private or link-local IP, or a
/// `ws://` URL with headers (sent unencrypted), is refused now unless `[security]
/// allow_private_destinations`; a name is checked when a call connects.
fn check_destination(body: &mut Body, runtime: &Runtime, state: &AppState) {
    let Runtime::Websocket { url, headers, .. } = runtime else {
        return;
    };
    let policy = DestinationPolicy::from_config(&state.config);
    if let Err(refused) = policy.check_url(url) {
        body.invalid("runtime.url", refused.to_string());
    } else if !policy.allows_private()
        && !headers.is_empty()
        && url
            .get(..5)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("ws://"))
    {
        body.invalid(
            "runtime.url",
            format!(
                "{url:?} is ws:// and the agent has headers, which would cross the network \
                 unencrypted: use wss:// (or set {SETTING}, or {SETTING_ENV}=true)"
            ),
        );
    }
}

/// Takes `runtime`, field by field: every problem is named with its path
/// (`runtime.steps[2].action: "jump" is not one of say, tone, ...`).
fn runtime(body: &mut Body) -> Option<Runtime> {
    let mut nested = body.object("runtime")?;
    nested.require(&["type"]);
    let runtime = match nested.choice("type", RUNTIME_TYPES) {
        Some("echo") => Some(Runtime::Echo),
        Some("websocket") => websocket(&mut nested),
        Some("scripted") => scripted(&mut nested),
        _ => {
            nested.ignore_rest();
            None
        }
    };
    let valid = !nested.has_errors();
    body.absorb(nested);
    runtime.filter(|_| valid)
}

fn websocket(body: &mut Body) -> Option<Runtime> {
    body.require(&["url"]);
    let url = body.string("url", 2_048);
    if url.as_deref().is_some_and(|u| !is_url(u, &["ws", "wss"])) {
        body.invalid("url", "must be a ws:// or wss:// URL");
    }
    let headers = body.string_map("headers").unwrap_or_default();
    let format = body.nullable_string("format", 64).flatten();
    if let Err(problem) = crate::runtime::websocket::WireFormat::parse(format.as_deref()) {
        body.invalid("format", problem);
    }
    Some(Runtime::Websocket {
        url: url?,
        headers,
        format,
    })
}

fn scripted(body: &mut Body) -> Option<Runtime> {
    body.require(&["steps"]);
    let items = body.object_list("steps")?;
    if items.len() > MAX_STEPS {
        body.invalid("steps", format!("a script has at most {MAX_STEPS} steps"));
    }
    let mut steps = Vec::with_capacity(items.len());
    for mut item in items {
        if let Some(step) = step(&mut item) {
            steps.push(step);
        }
        body.absorb(item);
    }
    Some(Runtime::Scripted { steps })
}

/// One scripted step, its fields checked for its `action`.
fn step(body: &mut Body) -> Option<ScriptStep> {
    body.require(&["action"]);
    let step = match body.choice("action", STEP_ACTIONS)? {
        "say" => {
            let text = body.string("text", MAX_SAY_TEXT);
            let audio = body.string("audio", MAX_AUDIO_PATH);
            if text.is_none() && audio.is_none() && !body.has_errors() {
                body.invalid("text", "a say step needs text or audio");
            }
            ScriptStep::Say { text, audio }
        }
        "tone" => {
            body.require(&["frequency_hz", "duration_ms"]);
            ScriptStep::Tone {
                frequency_hz: body.u32_in("frequency_hz", 20, 8_000)?,
                duration_ms: body.u32_in("duration_ms", 1, 60_000)?,
            }
        }
        "dtmf" => {
            body.require(&["digits"]);
            let digits = body.string("digits", 64)?;
            if !digits
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'*' | b'#' | b'A'..=b'D'))
            {
                body.invalid(
                    "digits",
                    format!("{digits:?} is not 1-64 of 0-9, *, #, A-D"),
                );
            }
            ScriptStep::Dtmf { digits }
        }
        "wait" => {
            body.require(&["ms"]);
            ScriptStep::Wait {
                ms: body.u32_in("ms", 0, MAX_WAIT_MS)?.into(),
            }
        }
        "wait_for_dtmf" => {
            body.require(&["timeout_ms"]);
            ScriptStep::WaitForDtmf {
                timeout_ms: body.u32_in("timeout_ms", 0, MAX_WAIT_MS)?.into(),
            }
        }
        _ => ScriptStep::Hangup,
    };
    Some(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> std::collections::BTreeMap<String, String> {
        let mut body = Body::parse(json.as_bytes()).expect("object");
        let _ = runtime(&mut body);
        match body.finish() {
            Ok(()) => Default::default(),
            Err(ApiError::Validation { fields }) => fields,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn runtime_problems_name_the_field() {
        assert!(fields(r#"{"runtime": {"type": "echo"}}"#).is_empty());
        let bad_url = fields(r#"{"runtime": {"type": "websocket", "url": "http://x"}}"#);
        assert_eq!(bad_url["runtime.url"], "must be a ws:// or wss:// URL");
        let wideband = |format: &str| {
            fields(&format!(
                r#"{{"runtime": {{"type": "websocket", "url": "wss://agent.example/s", "format": "{format}"}}}}"#
            ))
        };
        assert!(wideband("twilio").is_empty());
        assert!(wideband("audio/l16;rate=16000").is_empty());
        assert!(wideband("audio/l16;rate=8000").contains_key("runtime.format"));
        let unknown = fields(r#"{"runtime": {"type": "grpc", "url": "x"}}"#);
        assert_eq!(
            unknown,
            [(
                "runtime.type".to_owned(),
                "\"grpc\" is not one of echo, websocket, scripted".to_owned()
            )]
            .into()
        );
        let script = fields(
            r#"{"runtime": {"type": "scripted", "steps": [
                {"action": "hangup"}, {"action": "dtmf", "digits": "12x"},
                {"action": "jump"}, {"action": "wait"}, 7]}}"#,
        );
        assert_eq!(
            script["runtime.steps[1].digits"],
            "\"12x\" is not 1-64 of 0-9, *, #, A-D"
        );
        assert_eq!(
            script["runtime.steps[2].action"],
            "\"jump\" is not one of say, tone, dtmf, wait, wait_for_dtmf, hangup"
        );
        assert_eq!(script["runtime.steps[3].ms"], "is required");
        assert_eq!(script["runtime.steps[4]"], "must be an object, not 7");
        assert!(script.values().all(|m| !m.contains('`')), "{script:?}");
    }

    #[test]
    fn a_valid_script_is_built_step_by_step() {
        let mut body = Body::parse(
            br#"{"runtime": {"type": "scripted", "steps": [
                {"action": "say", "text": "hello"},
                {"action": "tone", "frequency_hz": 440, "duration_ms": 200},
                {"action": "wait", "ms": 500}, {"action": "wait_for_dtmf", "timeout_ms": 10},
                {"action": "dtmf", "digits": "1#"}, {"action": "hangup"}]}}"#,
        )
        .expect("object");
        let runtime = runtime(&mut body).expect("valid");
        body.finish().expect("no errors");
        let Runtime::Scripted { steps } = runtime else {
            panic!("scripted");
        };
        assert_eq!(steps.len(), 6);
        assert_eq!(steps[2], ScriptStep::Wait { ms: 500 });
        assert_eq!(steps[5], ScriptStep::Hangup);
    }
}
