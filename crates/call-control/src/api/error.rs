//! The API's errors and their one mapping to HTTP: `{"error": {"code", "message", "details"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::envelope;
use super::validation::FieldErrors;
use crate::store::StoreError;

/// `details.reason` of a 401: what the client has to send.
pub const UNAUTHORIZED_REASON: &str = "Include Authorization: Bearer <your_api_key>";

/// Everything a request can fail with; each variant maps to one status and error code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Missing, malformed or unknown API key (401 `unauthorized`).
    #[error("missing or invalid API key")]
    Unauthorized,
    /// The API key was revoked (401 `unauthorized`, `details.reason` `revoked`).
    #[error("this API key was revoked")]
    KeyRevoked {
        /// The id of the key's record.
        key_id: String,
    },
    /// No such object in the caller's organisation (404 `<resource>_not_found`).
    #[error("{resource} {id} not found")]
    NotFound {
        /// What was looked for (`agent`, `call`, `recording`, ...).
        resource: &'static str,
        /// The id asked for.
        id: String,
    },
    /// No route for the path (404 `not_found`).
    #[error("no route for {method} {path}")]
    NoRoute {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// The route exists but not with this method (405 `method_not_allowed`).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body is not a JSON object (400 `invalid_json`).
    #[error("{message}")]
    InvalidJson {
        /// What the parser said.
        message: String,
    },
    /// The body is larger than the server accepts (413 `payload_too_large`).
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// Bad fields (422 `validation_error`, `details.fields` names each).
    #[error("the request has invalid fields")]
    Validation {
        /// Field name to problem.
        fields: FieldErrors,
    },
    /// `phone_number` of POST /calls is not E.164 (422 `invalid_phone_number`).
    #[error("{value:?} is not an E.164 phone number")]
    InvalidPhoneNumber {
        /// The field holding it.
        field: &'static str,
        /// The value sent.
        value: String,
    },
    /// `from_number` does not belong to the organisation and the agent (422 `invalid_from_number`).
    #[error(
        "from_number {number} is not a number of this organisation assigned to agent {agent_id}"
    )]
    InvalidFromNumber {
        /// The number sent.
        number: String,
        /// The agent of the call.
        agent_id: String,
    },
    /// The agent has no phone number to call from (422 `no_phone_number_configured`).
    #[error("agent {agent_id} has no phone number assigned to call from")]
    NoPhoneNumberConfigured {
        /// The agent of the call.
        agent_id: String,
    },
    /// The agent is `draft` or `paused` (422 `agent_not_active`).
    #[error("agent {agent_id} is {status}, not active")]
    AgentNotActive {
        /// The agent of the call.
        agent_id: String,
        /// Its status.
        status: String,
    },
    /// The agent is archived: it can be read, not changed (422 `agent_archived`).
    #[error("agent {agent_id} is archived: it can be read but not changed")]
    AgentArchived {
        /// The archived agent.
        agent_id: String,
    },
    /// The balance, less what the organisation's live calls hold, does not cover one minute
    /// (402 `insufficient_credits`).
    #[error(
        "balance of {balance_cents} cents, less {reserved_cents} cents held by live calls, is below the {required_cents} cents one minute costs"
    )]
    InsufficientCredits {
        /// Current balance.
        balance_cents: i64,
        /// Held by the organisation's live calls.
        reserved_cents: i64,
        /// Needed to start a call.
        required_cents: i64,
    },
    /// The organisation has `[api] max_concurrent_calls_per_org` calls live (429
    /// `concurrent_call_limit`).
    #[error("{live_calls} calls are live; the organisation may have at most {limit} at once")]
    ConcurrentCallLimit {
        /// `api.max_concurrent_calls_per_org`.
        limit: u32,
        /// Calls of the organisation live now.
        live_calls: u64,
    },
    /// A test-call request without `consent_to_charge: true` (400 `consent_required`);
    /// the details carry the estimate the request would be charged against.
    #[error(
        "consent_to_charge must be true: these test calls are estimated to cost {estimated_cost_cents} cents"
    )]
    ConsentRequired {
        /// Estimated cost of every run asked for.
        estimated_cost_cents: i64,
    },
    /// The balance does not cover the estimated cost of the test calls asked for (402
    /// `insufficient_credits`).
    #[error(
        "balance of {balance_cents} cents is below the {estimated_cost_cents} cents the test calls are estimated to cost"
    )]
    InsufficientCreditsForTest {
        /// Current balance.
        balance_cents: i64,
        /// Estimated cost of every run asked for.
        estimated_cost_cents: i64,
    },
    /// The organisation's test runs in flight plus those asked for would pass its limit
    /// (429 `rate_limited`).
    #[error(
        "{active} test runs are queued or in progress; {requested} more would pass the limit of {limit}"
    )]
    TestRunLimit {
        /// `test_calls.max_concurrent_runs`.
        limit: u32,
        /// Runs of the organisation queued or in progress.
        active: u64,
        /// Runs the request would create.
        requested: u32,
    },
    /// The key used up its window (429 `rate_limited`, `Retry-After`).
    #[error("rate limit of {limit} requests per minute reached")]
    RateLimited {
        /// Requests per minute.
        limit: u32,
        /// When requests are accepted again.
        reset_at: DateTime<Utc>,
        /// Current time, to compute `Retry-After`.
        now: DateTime<Utc>,
    },
    /// The idempotency key already answered a different request (422
    /// `idempotency_key_reused`).
    #[error(
        "X-Idempotency-Key {key:?} was already used for a different request; send a new key for a new request"
    )]
    IdempotencyKeyReused {
        /// The key sent.
        key: String,
    },
    /// A state conflict (409 with a specific code).
    #[error("{message}")]
    Conflict {
        /// Machine-readable code (`phone_number_exists`, `call_not_live`, ...).
        code: &'static str,
        /// Human-readable explanation.
        message: String,
    },
    /// The call was stored but the engine could not take it (503 `call_not_placed`).
    #[error("call {call_id} could not be placed: {reason}")]
    CallNotPlaced {
        /// The stored (now failed) call.
        call_id: String,
        /// Why.
        reason: String,
    },
    /// A `Range` request outside the file (416 `range_not_satisfiable`, with
    /// `Content-Range: bytes */<length>`).
    #[error("the requested range is outside the {length} bytes of the file")]
    RangeNotSatisfiable {
        /// Length of the file in bytes.
        length: u64,
    },
    /// The request was not answered in time (408 `request_timeout`).
    #[error("the request was not answered within {} ms", limit.as_millis())]
    RequestTimeout {
        /// The limit (`[http] request_timeout_ms`).
        limit: std::time::Duration,
    },
    /// The key may not do this (403 `forbidden`): e.g. an admin endpoint asked with a key
    /// outside the bootstrap organisation.
    #[error("{reason}")]
    Forbidden {
        /// Why.
        reason: &'static str,
    },
    /// The node cannot take this now (503 `unavailable`, with `Retry-After`): it drains.
    #[error("{reason}")]
    Unavailable {
        /// Why.
        reason: &'static str,
    },
    /// A store failure: 503 `unavailable` with `Retry-After` when the database cannot
    /// serve now ([`StoreError::is_unavailable`]), 500 `internal_error` otherwise; details
    /// are logged, not returned.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Any other server-side failure (500 `internal_error`).
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 404 for `resource` with `id`.
    pub fn not_found(resource: &'static str, id: impl Into<String>) -> ApiError {
        ApiError::NotFound {
            resource,
            id: id.into(),
        }
    }

    /// Maps a store error, turning `NotFound` into a 404 for `resource` `id`.
    pub fn from_store(err: StoreError, resource: &'static str, id: &str) -> ApiError {
        match err {
            StoreError::NotFound => ApiError::not_found(resource, id),
            other => ApiError::Store(other),
        }
    }

    /// HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized | ApiError::KeyRevoked { .. } => StatusCode::UNAUTHORIZED,
            ApiError::NotFound { .. } | ApiError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::InvalidJson { .. } | ApiError::ConsentRequired { .. } => {
                StatusCode::BAD_REQUEST
            }
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Validation { .. }
            | ApiError::InvalidPhoneNumber { .. }
            | ApiError::InvalidFromNumber { .. }
            | ApiError::NoPhoneNumberConfigured { .. }
            | ApiError::AgentNotActive { .. }
            | ApiError::AgentArchived { .. }
            | ApiError::IdempotencyKeyReused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::InsufficientCredits { .. } | ApiError::InsufficientCreditsForTest { .. } => {
                StatusCode::PAYMENT_REQUIRED
            }
            ApiError::RateLimited { .. }
            | ApiError::TestRunLimit { .. }
            | ApiError::ConcurrentCallLimit { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::CallNotPlaced { .. } | ApiError::Unavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::Store(StoreError::Conflict(_)) => StatusCode::CONFLICT,
            ApiError::Store(failure) if failure.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Machine-readable error code.
    pub fn code(&self) -> String {
        match self {
            ApiError::Unauthorized | ApiError::KeyRevoked { .. } => "unauthorized".into(),
            ApiError::NotFound { resource, .. } => format!("{resource}_not_found"),
            ApiError::NoRoute { .. } => "not_found".into(),
            ApiError::MethodNotAllowed => "method_not_allowed".into(),
            ApiError::InvalidJson { .. } => "invalid_json".into(),
            ApiError::PayloadTooLarge => "payload_too_large".into(),
            ApiError::Validation { .. } => "validation_error".into(),
            ApiError::InvalidPhoneNumber { .. } => "invalid_phone_number".into(),
            ApiError::InvalidFromNumber { .. } => "invalid_from_number".into(),
            ApiError::NoPhoneNumberConfigured { .. } => "no_phone_number_configured".into(),
            ApiError::AgentNotActive { .. } => "agent_not_active".into(),
            ApiError::AgentArchived { .. } => "agent_archived".into(),
            ApiError::IdempotencyKeyReused { .. } => "idempotency_key_reused".into(),
            ApiError::InsufficientCredits { .. } | ApiError::InsufficientCreditsForTest { .. } => {
                "insufficient_credits".into()
            }
            ApiError::ConsentRequired { .. } => "consent_required".into(),
            ApiError::ConcurrentCallLimit { .. } => "concurrent_call_limit".into(),
            ApiError::RateLimited { .. } | ApiError::TestRunLimit { .. } => "rate_limited".into(),
            ApiError::Conflict { code, .. } => (*code).into(),
            ApiError::CallNotPlaced { .. } => "call_not_placed".into(),
            ApiError::Unavailable { .. } => "unavailable".into(),
            ApiError::Forbidden { .. } => "forbidden".into(),
            ApiError::RangeNotSatisfiable { .. } => "range_not_satisfiable".into(),
            ApiError::RequestTimeout { .. } => "request_timeout".into(),
            ApiError::Store(StoreError::Conflict(_)) => "conflict".into(),
            ApiError::Store(failure) if failure.is_unavailable() => "unavailable".into(),
            ApiError::Store(_) | ApiError::Internal(_) => "internal_error".into(),
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::Unauthorized => json!({ "reason": UNAUTHORIZED_REASON }),
            ApiError::KeyRevoked { key_id } => json!({ "reason": "revoked", "key_id": key_id }),
            ApiError::IdempotencyKeyReused { key } => json!({
                "fields": { "X-Idempotency-Key": "already used for a request with another method, path or body" },
                "idempotency_key": key,
            }),
            ApiError::NotFound { id, .. } => json!({ "id": id }),
            ApiError::Validation { fields } => json!({ "fields": fields }),
            ApiError::InvalidPhoneNumber { field, value } => json!({
                "fields": { *field: "must be an E.164 number (+ then 2 to 15 digits)" },
                "value": value,
            }),
            ApiError::InvalidFromNumber { number, agent_id } => json!({
                "fields": { "from_number": "must be a number of this organisation assigned to the agent" },
                "from_number": number,
                "agent_id": agent_id,
            }),
            ApiError::NoPhoneNumberConfigured { agent_id }
            | ApiError::AgentArchived { agent_id } => {
                json!({ "agent_id": agent_id })
            }
            ApiError::AgentNotActive { agent_id, status } => {
                json!({ "agent_id": agent_id, "status": status })
            }
            ApiError::InsufficientCredits {
                balance_cents,
                reserved_cents,
                required_cents,
            } => json!({
                "balance_cents": balance_cents,
                "reserved_cents": reserved_cents,
                "required_cents": required_cents,
            }),
            ApiError::ConcurrentCallLimit { limit, live_calls } => {
                json!({ "limit": limit, "live_calls": live_calls })
            }
            ApiError::RateLimited {
                limit, reset_at, ..
            } => json!({
                "limit": limit,
                "reset_at": reset_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            }),
            ApiError::CallNotPlaced { call_id, .. } => json!({ "call_id": call_id }),
            ApiError::RangeNotSatisfiable { length } => json!({ "length": length }),
            ApiError::ConsentRequired {
                estimated_cost_cents,
            } => json!({
                "fields": { "consent_to_charge": "must be true" },
                "estimated_cost_cents": estimated_cost_cents,
            }),
            ApiError::InsufficientCreditsForTest {
                balance_cents,
                estimated_cost_cents,
            } => json!({
                "balance_cents": balance_cents,
                "required_cents": estimated_cost_cents,
                "estimated_cost_cents": estimated_cost_cents,
            }),
            ApiError::TestRunLimit {
                limit,
                active,
                requested,
            } => json!({ "limit": limit, "active": active, "requested": requested }),
            _ => json!({}),
        }
    }

    /// The message shown to clients: internal failures are not described.
    fn public_message(&self) -> String {
        match self {
            ApiError::Store(StoreError::Conflict(message)) => message.clone(),
            ApiError::Store(failure) if failure.is_unavailable() => {
                "the database is unavailable; retry later".into()
            }
            ApiError::Store(_) | ApiError::Internal(_) => "internal server error".into(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let body = json!({
            "error": {
                "code": self.code(),
                "message": self.public_message(),
                "details": self.details(),
            },
            "meta": envelope::meta(),
        });
        let mut response = (status, axum::Json(body)).into_response();
        if let ApiError::RateLimited { reset_at, now, .. } = &self {
            let wait = ((*reset_at - *now).num_milliseconds() + 999)
                .div_euclid(1000)
                .max(1);
            if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        let unavailable = match &self {
            ApiError::Store(failure) => failure.is_unavailable(),
            ApiError::Unavailable { .. } => true,
            _ => false,
        };
        if unavailable {
            // The wait SIP peers are given for the same failure.
            let wait = crate::engine::inbound::RETRY_AFTER.as_secs();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        }
        if let ApiError::ConcurrentCallLimit { .. } = &self {
            // A slot frees when one of the organisation's calls ends: no time is known.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let ApiError::RangeNotSatisfiable { length } = &self {
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{length}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
        }
        if matches!(self, ApiError::Unauthorized | ApiError::KeyRevoked { .. }) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"dialcore\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(error: ApiError) -> (StatusCode, Option<String>, Value) {
        let response = error.into_response();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|value| value.to_str().expect("ASCII").to_owned());
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        (
            status,
            retry_after,
            serde_json::from_slice(&body).expect("JSON"),
        )
    }

    #[tokio::test]
    async fn a_store_that_cannot_serve_now_is_503_unavailable_with_retry_after() {
        let timeout = ApiError::Store(StoreError::Database(sqlx::Error::PoolTimedOut));
        let (status, retry_after, body) = answer(timeout).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("5"));
        assert_eq!(body["error"]["code"], "unavailable");

        let unreadable = ApiError::Store(StoreError::Corrupt {
            column: "status",
            value: "weird".into(),
        });
        let (status, retry_after, body) = answer(unreadable).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(retry_after, None);
        assert_eq!(body["error"]["code"], "internal_error");
    }
}
