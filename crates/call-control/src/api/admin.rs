//! Operator endpoints of a node, for keys of the bootstrap organisation only
//! ([`crate::store::DEFAULT_ORG`], whose first key `dialcore serve` creates or takes from
//! `[api] key`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde_json::json;

use super::envelope;
use super::error::ApiError;
use super::middleware::OrgId;
use super::AppState;
use crate::store::DEFAULT_ORG;

/// 403 unless `org` is the bootstrap organisation.
async fn bootstrap_only(state: &AppState, org: &OrgId) -> Result<(), ApiError> {
    let organization = state
        .store
        .get_org(&org.0)
        .await
        .map_err(|err| ApiError::from_store(err, "organization", &org.0))?;
    if organization.name == DEFAULT_ORG {
        Ok(())
    } else {
        Err(ApiError::Forbidden {
            reason: "admin endpoints take a key of the bootstrap organisation",
        })
    }
}

/// `POST /admin/drain`: the node stops taking calls (INVITEs and OPTIONS probes are
/// answered 503, so the SIP load balancer sends calls elsewhere; new API calls and test
/// calls get 503 `unavailable`), lets its live calls run up to `[node] drain_timeout`, then
/// hangs up the rest as `shutdown` and exits. 202 with the live calls left; asking again
/// changes nothing.
#[utoipa::path(
    post,
    path = "/api/public/v1/admin/drain",
    tag = "admin",
    operation_id = "drainNode",
    summary = "Drain this node: no new calls, live calls finish, then the process exits",
    responses(
        (status = 202, description = "Draining", body = crate::api::openapi::Envelope<crate::api::openapi::Drain>),
        (status = 403, description = "`forbidden`: not a key of the bootstrap organisation", body = crate::api::openapi::ErrorBody),
        crate::api::openapi::ReadErrors
    )
)]
pub async fn drain(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
) -> Result<Response, ApiError> {
    bootstrap_only(&state, &org).await?;
    state.engine.drain();
    let data = json!({
        "status": "draining",
        "live_calls": state.engine.live_calls(),
    });
    let mut response = envelope::ok(data)?;
    *response.status_mut() = StatusCode::ACCEPTED;
    Ok(response)
}
