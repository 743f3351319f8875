//! Schemas of the envelope every answer comes in: `{data, meta}`, lists with `pagination`
//! beside them, and the error object. These types only describe the JSON that
//! `api::envelope` and `api::error` write.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::{IntoParams, IntoResponses, ToSchema};

/// `meta` of every answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Meta {
    /// Id of the request (`req_...`), also in the `X-Request-Id` header.
    pub request_id: String,
    /// When the answer was made, RFC 3339.
    pub ts: DateTime<Utc>,
}

/// `pagination` of a list answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Pagination {
    /// Page size asked for (default 50, at most 200).
    pub limit: u32,
    /// Items skipped.
    pub offset: u64,
    /// Items matching the filters, over every page.
    pub total: u64,
}

/// A success answer: `{"data": ..., "meta": ...}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    /// The object.
    pub data: T,
    /// Request id and time.
    pub meta: Meta,
}

/// A list answer: `{"data": [...], "meta": ..., "pagination": ...}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListEnvelope<T> {
    /// One page of objects.
    pub data: Vec<T>,
    /// Request id and time.
    pub meta: Meta,
    /// Where the page lies.
    pub pagination: Pagination,
}

/// An error answer: `{"error": {"code", "message", "details"}, "meta": ...}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorObject,
    /// Request id and time.
    pub meta: Meta,
}

/// The `error` object.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorObject {
    /// Machine-readable code: `unauthorized`, `validation_error`, `agent_not_found`, ...
    #[schema(examples("validation_error", "agent_not_found", "rate_limited"))]
    pub code: String,
    /// What happened, for people.
    pub message: String,
    /// Depends on the code: `fields` (field name to problem) for validation errors, `id` for
    /// not found, `reset_at` and `limit` for rate limits, `reason` for 401 (what to send, or
    /// `revoked` with the `key_id` for a revoked key),
    /// `length` for 416, ...
    #[schema(value_type = Object)]
    pub details: BTreeMap<String, serde_json::Value>,
}

/// The answer of `POST /webhooks`: the webhook and, when the service generated the signing
/// secret, that secret (shown this once, never readable again).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookCreated {
    /// The webhook as reads show it.
    #[serde(flatten)]
    pub webhook: crate::model::Webhook,
    /// The generated signing secret (`whsec_...`); absent when the request gave one.
    #[schema(nullable = false)]
    pub secret: Option<String>,
}

/// `{"id", "deleted": true}`: the answer of a DELETE.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    /// The id of the deleted object.
    pub id: String,
    /// Always true.
    pub deleted: bool,
}

/// `{"id", "deleted", "archived"}`: the answer of `DELETE /agents/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentDeleted {
    /// The agent's id.
    pub id: String,
    /// The agent is gone (nothing named it; its phone numbers are unassigned).
    pub deleted: bool,
    /// Calls, test runs or test batches name the agent: it was archived instead (status
    /// `archived`, still readable by id, hidden from lists unless `include_archived=true`,
    /// read-only, placing and answering no calls).
    pub archived: bool,
}

/// The answer of `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when the store does not answer (with 503).
    #[schema(pattern = "^(ok|unavailable)$")]
    pub status: String,
    /// `ok` or `error`.
    #[schema(pattern = "^(ok|error)$")]
    pub database: String,
    /// Calls live on this node.
    pub live_calls: u64,
}

/// The answer of `POST /admin/drain`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Drain {
    /// `draining`.
    #[schema(pattern = "^draining$")]
    pub status: String,
    /// Calls still live on this node.
    pub live_calls: u64,
}

/// `limit` and `offset` of every list.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size.
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<u32>,
    /// Items to skip.
    #[param(minimum = 0, default = 0)]
    pub offset: Option<u64>,
}

/// The `X-Idempotency-Key` header of POST routes.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// A retry with the same key (same organisation and path) returns the original status
    /// and body, with `Idempotent-Replayed: true`, and creates nothing. Kept in the database:
    /// survives restarts.
    #[param(
        rename = "X-Idempotency-Key",
        min_length = 1,
        max_length = 255,
        nullable = false
    )]
    pub key: Option<String>,
}

/// `{id}` of a path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdParam {
    /// The object's id.
    pub id: String,
}

/// Errors of reading one object.
#[derive(Debug, IntoResponses)]
pub enum ReadErrors {
    /// `unauthorized`: missing or invalid API key; `details.reason` says what to send
    /// (`Include Authorization: Bearer <your_api_key>`).
    #[response(
        status = 401,
        headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"dialcore\"`"))
    )]
    Unauthorized(ErrorBody),
    /// `<resource>_not_found` (objects of other organisations are not found either).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `rate_limited`: `details.reset_at` says when the key's window reopens (`Retry-After`).
    #[response(
        status = 429,
        headers(("Retry-After" = u64, description = "Seconds until requests are accepted again"))
    )]
    RateLimited(ErrorBody),
}

/// Errors of a list.
#[derive(Debug, IntoResponses)]
pub enum ListErrors {
    /// `unauthorized`: missing or invalid API key; `details.reason` says what to send
    /// (`Include Authorization: Bearer <your_api_key>`).
    #[response(
        status = 401,
        headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"dialcore\"`"))
    )]
    Unauthorized(ErrorBody),
    /// `validation_error`: a bad `limit`, `offset` or filter (`details.fields` names it).
    #[response(status = 422)]
    Invalid(ErrorBody),
    /// `rate_limited`: `details.reset_at` says when the key's window reopens (`Retry-After`).
    #[response(
        status = 429,
        headers(("Retry-After" = u64, description = "Seconds until requests are accepted again"))
    )]
    RateLimited(ErrorBody),
}

/// Errors of a create (POST with a JSON body).
#[derive(Debug, IntoResponses)]
pub enum CreateErrors {
    /// `invalid_json`: the body is not a JSON object.
    #[response(status = 400)]
    InvalidJson(ErrorBody),
    /// `unauthorized`: missing or invalid API key; `details.reason` says what to send
    /// (`Include Authorization: Bearer <your_api_key>`).
    #[response(
        status = 401,
        headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"dialcore\"`"))
    )]
    Unauthorized(ErrorBody),
    /// `idempotency_key_in_use` (a request with the same key is still being served), or
    /// a conflict with an existing object (e.g. `phone_number_exists`).
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// `payload_too_large`.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// `validation_error`: `details.fields` names each bad or unknown field;
    /// `idempotency_key_reused`: the key already answered a different request.
    #[response(status = 422)]
    Invalid(ErrorBody),
    /// `rate_limited`: `details.reset_at` says when the key's window reopens (`Retry-After`).
    #[response(
        status = 429,
        headers(("Retry-After" = u64, description = "Seconds until requests are accepted again"))
    )]
    RateLimited(ErrorBody),
}

/// Errors of a PATCH.
#[derive(Debug, IntoResponses)]
pub enum UpdateErrors {
    /// `invalid_json`: the body is not a JSON object.
    #[response(status = 400)]
    InvalidJson(ErrorBody),
    /// `unauthorized`: missing or invalid API key; `details.reason` says what to send
    /// (`Include Authorization: Bearer <your_api_key>`).
    #[response(
        status = 401,
        headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"dialcore\"`"))
    )]
    Unauthorized(ErrorBody),
    /// `<resource>_not_found`.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// A conflict with an existing object (e.g. `phone_number_exists`).
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// `payload_too_large`.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// `validation_error`: `details.fields` names each bad or unknown field;
    /// `agent_archived`: an archived agent is read-only.
    #[response(status = 422)]
    Invalid(ErrorBody),
    /// `rate_limited`: `details.reset_at` says when the key's window reopens (`Retry-After`).
    #[response(
        status = 429,
        headers(("Retry-After" = u64, description = "Seconds until requests are accepted again"))
    )]
    RateLimited(ErrorBody),
}

/// Errors of a DELETE.
#[derive(Debug, IntoResponses)]
pub enum DeleteErrors {
    /// `unauthorized`: missing or invalid API key; `details.reason` says what to send
    /// (`Include Authorization: Bearer <your_api_key>`).
    #[response(
        status = 401,
        headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"dialcore\"`"))
    )]
    Unauthorized(ErrorBody),
    /// `<resource>_not_found`.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `conflict`: other objects still refer to it.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// `rate_limited`: `details.reset_at` says when the key's window reopens (`Retry-After`).
    #[response(
        status = 429,
        headers(("Retry-After" = u64, description = "Seconds until requests are accepted again"))
    )]
    RateLimited(ErrorBody),
}

/// Errors of placing a call (`POST /calls`, `POST /agents/{id}/test-call`).
#[derive(Debug, IntoResponses)]
pub enum PlaceCallErrors {
    /// `invalid_json`: the body is not a JSON object.
    #[response(status = 400)]
    InvalidJson(ErrorBody),
    /// `unauthorized`: missing or invalid API key; `details.reason` says what to send
    /// (`Include Authorization: Bearer <your_api_key>`).
    #[response(
        status = 401,
        headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"dialcore\"`"))
    )]
    Unauthorized(ErrorBody),
    /// `insufficient_credits`: the balance, less what the organisation's live calls hold
    /// (one minute each), does not cover one minute (`details.balance_cents`,
    /// `details.reserved_cents`, `details.required_cents`).
    #[response(status = 402)]
    InsufficientCredits(ErrorBody),
    /// `agent_not_found`.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `idempotency_key_in_use`: a request with the same `X-Idempotency-Key` is still being
    /// served and its call is not stored yet (once it is stored, before it is dialled, a
    /// retry replays its 201).
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// `payload_too_large`.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// `validation_error`, `invalid_phone_number`, `invalid_from_number`,
    /// `no_phone_number_configured`, `agent_not_active` (also for an archived agent),
    /// `idempotency_key_reused`.
    #[response(status = 422)]
    Invalid(ErrorBody),
    /// `rate_limited`: `details.reset_at` says when the key's window reopens (`Retry-After`);
    /// or `concurrent_call_limit`: the organisation has `[api] max_concurrent_calls_per_org`
    /// calls live (`details.limit`, `details.live_calls`; a slot frees when one of them
    /// ends, `Retry-After: 1`).
    #[response(
        status = 429,
        headers(("Retry-After" = u64, description = "Seconds until requests are accepted again"))
    )]
    RateLimited(ErrorBody),
    /// `call_not_placed`: stored, but the engine refused it (`details.call_id`).
    #[response(status = 503)]
    NotPlaced(ErrorBody),
}

/// Errors of a test-call create, in the order they are checked.
#[derive(Debug, IntoResponses)]
pub enum TestCallErrors {
    /// `consent_required`: `consent_to_charge` is not true (`details.estimated_cost_cents`
    /// tells the price); `invalid_json`.
    #[response(status = 400)]
    ConsentRequired(ErrorBody),
    /// `unauthorized`: missing or invalid API key; `details.reason` says what to send
    /// (`Include Authorization: Bearer <your_api_key>`).
    #[response(
        status = 401,
        headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"dialcore\"`"))
    )]
    Unauthorized(ErrorBody),
    /// `insufficient_credits`: the balance is below the estimate.
    #[response(status = 402)]
    InsufficientCredits(ErrorBody),
    /// `agent_not_found`, `phone_number_not_found`.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `idempotency_key_in_use`.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// `payload_too_large`.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// `validation_error` (scenario scripts are parsed; a phone number assigned to no agent;
    /// a `charge_multiplier` other than the operator's), `agent_not_active` (an archived
    /// agent), `idempotency_key_reused`.
    #[response(status = 422)]
    Invalid(ErrorBody),
    /// `rate_limited`: the organisation's test runs in flight plus those asked for would pass
    /// the limit (`details.limit`, `details.active`, `details.requested`), or the key's
    /// request window is used up (`details.reset_at`, `Retry-After`).
    #[response(status = 429)]
    RateLimited(ErrorBody),
}

/// Errors of `POST /calls/{id}/hangup`.
#[derive(Debug, IntoResponses)]
pub enum HangupErrors {
    /// `unauthorized`: missing or invalid API key; `details.reason` says what to send
    /// (`Include Authorization: Bearer <your_api_key>`).
    #[response(
        status = 401,
        headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"dialcore\"`"))
    )]
    Unauthorized(ErrorBody),
    /// `call_not_found`.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `call_already_ended`, `call_not_live` (not live on this node), `idempotency_key_in_use`.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// `idempotency_key_reused`: the key already answered a different request.
    #[response(status = 422)]
    KeyReused(ErrorBody),
    /// `rate_limited`: `details.reset_at` says when the key's window reopens (`Retry-After`).
    #[response(
        status = 429,
        headers(("Retry-After" = u64, description = "Seconds until requests are accepted again"))
    )]
    RateLimited(ErrorBody),
}

/// Errors of `GET /calls/{id}/recording`.
#[derive(Debug, IntoResponses)]
pub enum RecordingErrors {
    /// `unauthorized`: missing or invalid API key; `details.reason` says what to send
    /// (`Include Authorization: Bearer <your_api_key>`).
    #[response(
        status = 401,
        headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"dialcore\"`"))
    )]
    Unauthorized(ErrorBody),
    /// `call_not_found`, or `recording_not_found` when the call has no recording.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `range_not_satisfiable`: the `Range` lies outside the file (`details.length`).
    #[response(
        status = 416,
        headers(("Content-Range" = String, description = "`bytes */<length of the file>`"))
    )]
    RangeNotSatisfiable(ErrorBody),
    /// `rate_limited`: `details.reset_at` says when the key's window reopens (`Retry-After`).
    #[response(
        status = 429,
        headers(("Retry-After" = u64, description = "Seconds until requests are accepted again"))
    )]
    RateLimited(ErrorBody),
}

/// A file: the bytes of the body.
#[derive(Debug)]
pub struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .content_media_type("application/octet-stream")
            .into()
    }
}

impl ToSchema for Binary {}

/// Query of `GET /calls`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallListParams {
    /// Page size.
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<u32>,
    /// Items to skip.
    #[param(minimum = 0, default = 0)]
    pub offset: Option<u64>,
    /// Only calls with this status.
    #[param(nullable = false)]
    pub status: Option<crate::model::CallStatus>,
    /// Only calls of this agent.
    #[param(nullable = false)]
    pub agent_id: Option<String>,
    /// Only calls in this direction.
    #[param(nullable = false)]
    pub direction: Option<crate::model::CallDirection>,
}

/// Query of `GET /test-calls`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TestRunListParams {
    /// Page size.
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<u32>,
    /// Items to skip.
    #[param(minimum = 0, default = 0)]
    pub offset: Option<u64>,
    /// Only runs whose target is of this type.
    #[param(nullable = false)]
    pub target_type: Option<crate::model::TestTargetType>,
    /// Only runs with this status.
    #[param(nullable = false)]
    pub status: Option<crate::model::TestRunStatus>,
    /// Only runs testing this agent.
    #[param(nullable = false)]
    pub agent_id: Option<String>,
    /// Only runs of this batch.
    #[param(nullable = false)]
    pub batch_id: Option<String>,
}

/// Query of `GET /test-call-batches`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BatchListParams {
    /// Page size.
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<u32>,
    /// Items to skip.
    #[param(minimum = 0, default = 0)]
    pub offset: Option<u64>,
    /// Only batches with this status.
    #[param(nullable = false)]
    pub status: Option<crate::model::TestBatchStatus>,
}

/// Query of `GET /agents`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AgentListParams {
    /// Page size.
    #[param(minimum = 1, maximum = 200, default = 50)]
    pub limit: Option<u32>,
    /// Items to skip.
    #[param(minimum = 0, default = 0)]
    pub offset: Option<u64>,
    /// Also list archived agents.
    #[param(nullable = false, default = false)]
    pub include_archived: Option<bool>,
}

/// The headers of `GET /calls/{id}/recording` that choose the bytes sent (RFC 9110).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct RecordingRange {
    /// One byte range, `bytes=<first>-[<last>]` or `bytes=-<suffix length>`: answered 206
    /// with `Content-Range`, or 416 when it lies outside the file.
    #[param(rename = "Range", pattern = r"^bytes=\d*-\d*$", nullable = false)]
    pub range: Option<String>,
    /// Send the range only if the file still has this `Last-Modified` date (else the whole
    /// file, 200).
    #[param(rename = "If-Range", nullable = false)]
    pub if_range: Option<String>,
}

/// The `408` any route answers when a request is not answered within the service's
/// `[http] request_timeout_ms` (in the error format, code `request_timeout`).
pub const REQUEST_TIMEOUT: &str =
    "`request_timeout`: the request was not answered within the service's `[http] request_timeout_ms`";
