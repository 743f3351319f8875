//! Twilio's REST API for ending a call, so that voice-AI frameworks which
//! hang up through it (Pipecat's `TwilioFrameSerializer` with `base_url`,
//! and the like) end dialcore calls unchanged.
//!
//! One endpoint, at the server root: `POST
//! /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` with the form
//! field `Status`, authenticated with HTTP Basic (the organisation id as the
//! user, an API key of it as the password). `AccountSid` and `CallSid` are
//! what the agent WebSocket's `start` carries as `accountSid` and `callSid`.
//! Answers and errors are in Twilio's shapes (a Call resource; `{code,
//! message, more_info, status}`), not the `/api/public/v1` envelope.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tracing::{error, info};

use super::openapi::TwilioErrorBody;
use super::AppState;
use crate::model::{Call, CallDirection, CallOutcome, CallStatus};
use crate::store::StoreError;

/// The route, in axum's syntax, whose parameters fill whole segments: the `.json` suffix of
/// [`PATH`] is part of `CallSid` here, and the handler strips it.
pub const ROUTE: &str = "/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}";
/// The path as Twilio spells it, and as the OpenAPI document shows it.
pub const PATH: &str = "/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json";
/// The API version in Twilio's paths and resources.
const API_VERSION: &str = "2010-04-01";
/// How long an update waits for the call to end before answering with its
/// state then (the BYE or CANCEL is usually answered within milliseconds).
const END_WAIT: Duration = Duration::from_secs(5);
/// Longest password (API key) looked up.
const MAX_SECRET_LEN: usize = 256;

/// `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`: Twilio's
/// "update a call", for hanging up.
///
/// Request: HTTP Basic authentication, user = the organisation id (the
/// `accountSid` of the stream's `start`), password = one of its API keys;
/// body `application/x-www-form-urlencoded` with `Status=completed` (hang up
/// the call, answered or not, like `POST /calls/{id}/hangup`: outcome
/// `agent_hangup` or `cancelled`, `end_reason` `api_hangup`) or
/// `Status=canceled` (cancel a call not answered yet; an answered call is
/// left as it is). `CallSid` is the call id (`start.callSid`).
///
/// Response 200: the call as Twilio's Call resource (`sid`, `account_sid`,
/// `status` in Twilio's values `queued`, `ringing`, `in-progress`,
/// `completed`, `canceled`, `busy`, `no-answer`, `failed`, `direction`
/// `inbound` or `outbound-api`, `to`, `from`, RFC 2822 dates
/// `date_created`, `date_updated`, `start_time`, `end_time`, `duration` in
/// whole seconds as a string, `uri`, ...), read once the call has ended (or
/// after 5 s). Errors, as `{"code", "message", "more_info", "status"}`: 401
/// code 20003 for missing or wrong credentials or an `AccountSid` that is not
/// the key's organisation; 404 code 20404 for an unknown call, a path
/// without `.json`, or a call that has already ended; 400 code 20001 when
/// `Status` is missing or not `completed`/`canceled`; 429 code 20429 past the
/// key's rate limit; 409 when the call is not live on this node.
#[utoipa::path(
    post,
    path = "/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json",
    tag = "twilio",
    operation_id = "twilioUpdateCall",
    summary = "Hang up a call through Twilio's REST API (\"update a call\")",
    description = "For voice-AI frameworks that end calls through Twilio's API (Pipecat's TwilioFrameSerializer with base_url, ...). HTTP Basic: user = the organisation id (`accountSid` of the agent WebSocket's `start`), password = one of its API keys. `Status=completed` hangs the call up, answered or not (like POST /calls/{id}/hangup: end_reason `api_hangup`); `Status=canceled` cancels a call not answered yet and leaves an answered one as it is. Answers with Twilio's Call resource once the call has ended (or after 5 s), errors in Twilio's format, not the /api/public/v1 envelope.",
    security(("twilioBasic" = [])),
    params(
        ("AccountSid" = String, Path, description = "The organisation id (`start.accountSid`); another organisation's is 401"),
        ("CallSid" = String, Path, description = "The call id (`start.callSid`)")
    ),
    request_body(content = crate::api::openapi::TwilioCallUpdate, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "The call as Twilio's Call resource", body = TwilioCall), crate::api::openapi::TwilioErrors)
)]
pub async fn update_call(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    match update(&state, path, uri.path(), &headers, form).await {
        Ok(call) => (StatusCode::OK, Json(call)).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn update(
    state: &AppState,
    path: Result<Path<(String, String)>, PathRejection>,
    uri: &str,
    headers: &HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<TwilioCall, TwilioError> {
    let not_found = || TwilioError::NotFound(uri.to_owned());
    let (user, key) = basic_credentials(headers).ok_or(TwilioError::Authenticate)?;
    let org = state
        .store
        .org_for_key(&key)
        .await
        .map_err(TwilioError::store)?
        .ok_or(TwilioError::Authenticate)?;
    // The account's own credentials only (Twilio's API keys have their own
    // SIDs; dialcore's keys are used as the account's token).
    if user != org {
        return Err(TwilioError::Authenticate);
    }
    let now = Utc::now();
    state
        .rate_limiter
        .check(&key, now)
        .map_err(|_| TwilioError::TooManyRequests)?;
    let Ok(Path((account_sid, resource))) = path else {
        return Err(not_found());
    };
    if account_sid != org {
        return Err(TwilioError::Authenticate);
    }
    let Some(call_sid) = resource.strip_suffix(".json").filter(|sid| !sid.is_empty()) else {
        return Err(not_found());
    };
    let call = match state.store.get_call(&org, call_sid).await {
        Ok(call) => call,
        Err(StoreError::NotFound) => return Err(not_found()),
        Err(other) => return Err(TwilioError::store(other)),
    };
    let requested = requested_status(form)?;
    // Twilio answers an update of a call that is over as not found.
    if call.status.is_terminal() {
        return Err(not_found());
    }
    let answered = matches!(call.status, CallStatus::InProgress);
    if requested == Requested::Canceled && answered {
        info!(call_id = %call.id, "Twilio cancel of an answered call: left as it is");
        return Ok(TwilioCall::from_call(&call));
    }
    if !state.engine.hangup(&call.id) {
        if let Some(node) = state.peers.owner_elsewhere(&call) {
            return hang_up_elsewhere(state, node, &call, &key).await;
        }
        return match state.store.get_call(&org, &call.id).await {
            Ok(current) if current.status.is_terminal() => Err(not_found()),
            Ok(_) | Err(StoreError::NotFound) => Err(TwilioError::Conflict(format!(
                "call {} is not live on this node",
                call.id
            ))),
            Err(other) => Err(TwilioError::store(other)),
        };
    }
    info!(call_id = %call.id, status = requested.as_str(), "call hung up through Twilio's API");
    if tokio::time::timeout(END_WAIT, state.engine.wait_call_ended(&call.id))
        .await
        .is_err()
    {
        info!(call_id = %call.id, "call not over yet; answering with its state now");
    }
    match state.store.get_call(&org, &call.id).await {
        Ok(current) => Ok(TwilioCall::from_call(&current)),
        Err(StoreError::NotFound) => Ok(TwilioCall::from_call(&call)),
        Err(other) => Err(TwilioError::store(other)),
    }
}

/// Hangs up `call` on node `node`, which runs it (with the account's key), then answers
/// with the call as it is once over, or after [`END_WAIT`].
async fn hang_up_elsewhere(
    state: &AppState,
    node: &str,
    call: &crate::model::Call,
    key: &str,
) -> Result<TwilioCall, TwilioError> {
    let reply = state
        .peers
        .hang_up(&state.store, node, call, &format!("Bearer {key}"))
        .await
        .map_err(|error| TwilioError::Conflict(error.to_string()))?;
    if !reply.status.is_success() {
        return Err(TwilioError::Conflict(format!(
            "call {} is not live on node {node} ({})",
            call.id, reply.status
        )));
    }
    let deadline = tokio::time::Instant::now() + END_WAIT;
    loop {
        let current = state
            .store
            .get_call(&call.org_id, &call.id)
            .await
            .map_err(TwilioError::store)?;
        if current.status.is_terminal() || tokio::time::Instant::now() >= deadline {
            return Ok(TwilioCall::from_call(&current));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The `Status` an update asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Requested {
    Completed,
    Canceled,
}

impl Requested {
    fn as_str(self) -> &'static str {
        match self {
            Requested::Completed => "completed",
            Requested::Canceled => "canceled",
        }
    }
}

fn requested_status(
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Result<Requested, TwilioError> {
    let Form(fields) = form.map_err(|rejection| {
        TwilioError::InvalidParameter(format!(
            "the body must be a form (application/x-www-form-urlencoded) with Status=completed \
             or Status=canceled: {}",
            rejection.body_text()
        ))
    })?;
    match fields.get("Status").map(String::as_str) {
        Some("completed") => Ok(Requested::Completed),
        Some("canceled") => Ok(Requested::Canceled),
        Some(other) => Err(TwilioError::InvalidParameter(format!(
            "Status must be completed or canceled, not {other:?} (only hanging up is supported)"
        ))),
        None => Err(TwilioError::InvalidParameter(
            "Status is required: completed or canceled (other call updates, such as Url or \
             Twiml, are not supported)"
                .into(),
        )),
    }
}

/// `Authorization: Basic base64(user:password)`.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(BASE64.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    let plausible = !password.is_empty()
        && password.len() <= MAX_SECRET_LEN
        && password.bytes().all(|b| b.is_ascii_graphic());
    plausible.then(|| (user.to_owned(), password.to_owned()))
}

/// A call as Twilio's Call resource (the fields of its API's JSON, in its
/// formats: RFC 2822 dates, numbers as strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TwilioCall {
    /// The organisation id (`AccountSid`).
    account_sid: String,
    /// Always null here (dialcore has no such data).
    #[schema(required = true)]
    annotation: Option<String>,
    /// Always null here (dialcore has no such data).
    #[schema(required = true)]
    answered_by: Option<String>,
    /// `2010-04-01`.
    #[schema(pattern = "^2010-04-01$")]
    api_version: &'static str,
    /// Always null here (dialcore has no such data).
    #[schema(required = true)]
    caller_name: Option<String>,
    /// When the call record was created, RFC 2822.
    date_created: String,
    /// Last change, RFC 2822.
    date_updated: String,
    /// `inbound`, or `outbound-api` (placed through the API).
    #[schema(pattern = "^(inbound|outbound-api)$")]
    direction: &'static str,
    /// Whole seconds from answer to end, as a string; null unless `completed`.
    #[schema(required = true)]
    duration: Option<String>,
    /// When a completed call ended, RFC 2822.
    #[schema(required = true)]
    end_time: Option<String>,
    /// Always null here (dialcore has no such data).
    #[schema(required = true)]
    forwarded_from: Option<String>,
    /// Caller, E.164.
    from: String,
    /// Caller for display: `(415) 867-5309` for North American numbers.
    from_formatted: String,
    /// Always null here (dialcore has no such data).
    #[schema(required = true)]
    group_sid: Option<String>,
    /// Always null here (dialcore has no such data).
    #[schema(required = true)]
    parent_call_sid: Option<String>,
    /// Always null here (dialcore has no such data).
    #[schema(required = true)]
    phone_number_sid: Option<String>,
    /// Always null here (dialcore has no such data).
    #[schema(required = true)]
    price: Option<String>,
    /// `USD`.
    price_unit: &'static str,
    /// Milliseconds from creation to the start of signalling, as a string.
    queue_time: String,
    /// The call id (`CallSid`).
    sid: String,
    /// When signalling started, RFC 2822.
    #[schema(required = true)]
    start_time: Option<String>,
    /// Twilio's status of the call.
    #[schema(pattern = "^(queued|ringing|in-progress|completed|canceled|busy|no-answer|failed)$")]
    status: &'static str,
    /// Callee, E.164.
    to: String,
    /// Callee for display.
    to_formatted: String,
    /// Always null here (dialcore has no such data).
    #[schema(required = true)]
    trunk_sid: Option<String>,
    /// This resource's path.
    uri: String,
}

impl TwilioCall {
    /// The resource of `call`.
    pub fn from_call(call: &Call) -> TwilioCall {
        let completed = call.status == CallStatus::Ended;
        let queue_time = call
            .started_at
            .map(|started| (started - call.created_at).num_milliseconds().max(0))
            .unwrap_or(0);
        TwilioCall {
            account_sid: call.org_id.clone(),
            annotation: None,
            answered_by: None,
            api_version: API_VERSION,
            caller_name: None,
            date_created: rfc2822(call.created_at),
            date_updated: rfc2822(call.updated_at),
            direction: match call.direction {
                CallDirection::Inbound => "inbound",
                CallDirection::Outbound => "outbound-api",
            },
            // Twilio leaves it empty for busy, failed, unanswered and ongoing calls.
            duration: completed.then(|| {
                let seconds = call.duration_seconds.unwrap_or(0.0).max(0.0);
                format!("{}", seconds.round() as u64)
            }),
            end_time: call.ended_at.filter(|_| completed).map(rfc2822),
            forwarded_from: None,
            from_formatted: formatted(&call.from_number),
            from: call.from_number.clone(),
            group_sid: None,
            parent_call_sid: None,
            phone_number_sid: None,
            price: None,
            price_unit: "USD",
            queue_time: queue_time.to_string(),
            sid: call.id.clone(),
            start_time: call.started_at.map(rfc2822),
            status: twilio_status(call.status, call.outcome),
            to_formatted: formatted(&call.to_number),
            to: call.to_number.clone(),
            trunk_sid: None,
            uri: format!(
                "/{API_VERSION}/Accounts/{}/Calls/{}.json",
                call.org_id, call.id
            ),
        }
    }
}

/// Twilio's name for where a call is.
fn twilio_status(status: CallStatus, outcome: Option<CallOutcome>) -> &'static str {
    match status {
        CallStatus::Queued | CallStatus::Initiated => "queued",
        CallStatus::Ringing => "ringing",
        CallStatus::InProgress => "in-progress",
        CallStatus::Ended => "completed",
        CallStatus::Cancelled => "canceled",
        CallStatus::Failed => match outcome {
            Some(CallOutcome::Busy) => "busy",
            Some(CallOutcome::NoAnswer) => "no-answer",
            Some(CallOutcome::Cancelled) => "canceled",
            _ => "failed",
        },
    }
}

/// `Tue, 31 Aug 2010 20:36:28 +0000`.
fn rfc2822(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S +0000").to_string()
}

/// A number for display, as Twilio shows it: `(415) 867-5309` for a North
/// American number, E.164 otherwise.
fn formatted(number: &str) -> String {
    match number.strip_prefix("+1") {
        Some(rest) if rest.len() == 10 && rest.bytes().all(|b| b.is_ascii_digit()) => {
            format!("({}) {}-{}", &rest[..3], &rest[3..6], &rest[6..])
        }
        _ => number.to_owned(),
    }
}

/// A failure, answered in Twilio's error format.
#[derive(Debug, thiserror::Error)]
enum TwilioError {
    /// Missing or wrong credentials, or another account (401, 20003).
    #[error("Authenticate")]
    Authenticate,
    /// No such resource (404, 20404); carries the path.
    #[error("The requested resource {0} was not found")]
    NotFound(String),
    /// A form field is missing or wrong (400, 20001).
    #[error("{0}")]
    InvalidParameter(String),
    /// The key's rate limit is used up (429, 20429).
    #[error("Too Many Requests")]
    TooManyRequests,
    /// The call cannot be changed from here (409, 20409).
    #[error("{0}")]
    Conflict(String),
    /// The store failed (500, 20500); logged, never shown.
    #[error("Internal Server Error")]
    Internal,
}

impl TwilioError {
    fn store(error: StoreError) -> TwilioError {
        error!(%error, "store failed during a Twilio API request");
        TwilioError::Internal
    }

    fn status(&self) -> StatusCode {
        match self {
            TwilioError::Authenticate => StatusCode::UNAUTHORIZED,
            TwilioError::NotFound(_) => StatusCode::NOT_FOUND,
            TwilioError::InvalidParameter(_) => StatusCode::BAD_REQUEST,
            TwilioError::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            TwilioError::Conflict(_) => StatusCode::CONFLICT,
            TwilioError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> u32 {
        match self {
            TwilioError::Authenticate => 20003,
            TwilioError::NotFound(_) => 20404,
            TwilioError::InvalidParameter(_) => 20001,
            TwilioError::TooManyRequests => 20429,
            TwilioError::Conflict(_) => 20409,
            TwilioError::Internal => 20500,
        }
    }

    /// The body: `{"code", "message", "more_info", "status"}`.
    fn body(&self) -> serde_json::Value {
        let code = self.code();
        json!(TwilioErrorBody {
            code,
            message: self.to_string(),
            more_info: format!("https://www.twilio.com/docs/errors/{code}"),
            status: self.status().as_u16(),
        })
    }
}

impl IntoResponse for TwilioError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(self.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Twilio API\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use chrono::Timelike;

    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(authorization).expect("header"),
        );
        headers
    }

    #[test]
    fn basic_credentials_are_user_and_password() {
        let encoded = BASE64.encode("org_1:sk_live:with:colons");
        assert_eq!(
            basic_credentials(&headers(&format!("Basic {encoded}"))),
            Some(("org_1".into(), "sk_live:with:colons".into()))
        );
        assert_eq!(
            basic_credentials(&headers(&format!("basic  {encoded} "))),
            Some(("org_1".into(), "sk_live:with:colons".into()))
        );
        assert_eq!(basic_credentials(&headers("Bearer sk_1")), None);
        assert_eq!(basic_credentials(&headers("Basic not-base64!")), None);
        let no_colon = BASE64.encode("org_1");
        assert_eq!(
            basic_credentials(&headers(&format!("Basic {no_colon}"))),
            None
        );
        let empty = BASE64.encode("org_1:");
        assert_eq!(basic_credentials(&headers(&format!("Basic {empty}"))), None);
        assert_eq!(basic_credentials(&HeaderMap::new()), None);
    }

    #[test]
    fn statuses_are_twilios() {
        use CallStatus::*;
        assert_eq!(twilio_status(Queued, None), "queued");
        assert_eq!(twilio_status(Initiated, None), "queued");
        assert_eq!(twilio_status(Ringing, None), "ringing");
        assert_eq!(twilio_status(InProgress, None), "in-progress");
        assert_eq!(
            twilio_status(Ended, Some(CallOutcome::AgentHangup)),
            "completed"
        );
        assert_eq!(
            twilio_status(Cancelled, Some(CallOutcome::Cancelled)),
            "canceled"
        );
        assert_eq!(twilio_status(Failed, Some(CallOutcome::Busy)), "busy");
        assert_eq!(
            twilio_status(Failed, Some(CallOutcome::NoAnswer)),
            "no-answer"
        );
        assert_eq!(twilio_status(Failed, Some(CallOutcome::Error)), "failed");
    }

    #[test]
    fn dates_are_rfc_2822_in_gmt() {
        let at = DateTime::parse_from_rfc3339("2010-08-31T20:36:28.123Z")
            .expect("date")
            .with_timezone(&Utc);
        assert_eq!(rfc2822(at), "Tue, 31 Aug 2010 20:36:28 +0000");
        assert_eq!(
            DateTime::parse_from_rfc2822(&rfc2822(at)).expect("parses back"),
            at.with_nanosecond(0).expect("whole second")
        );
    }

    #[test]
    fn north_american_numbers_are_formatted_for_display() {
        assert_eq!(formatted("+14158675309"), "(415) 867-5309");
        assert_eq!(formatted("+442071234567"), "+442071234567");
        assert_eq!(formatted("+1415"), "+1415");
    }

    #[test]
    fn errors_have_twilios_shape() {
        let error = TwilioError::NotFound("/2010-04-01/Accounts/a/Calls/c.json".into());
        assert_eq!(
            error.body(),
            json!({
                "code": 20404,
                "message": "The requested resource /2010-04-01/Accounts/a/Calls/c.json was not found",
                "more_info": "https://www.twilio.com/docs/errors/20404",
                "status": 404,
            })
        );
        assert_eq!(error.into_response().status(), StatusCode::NOT_FOUND);
        let response = TwilioError::Authenticate.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Basic realm=\"Twilio API\""
        );
    }
}
