//! `GET /organization`: the caller's organisation and its credit balance (operators add
//! credit with `dialcore credits add --org NAME --cents N`).

use axum::extract::State;
use axum::response::Response;
use axum::Extension;

use super::envelope;
use super::error::ApiError;
use super::middleware::OrgId;
use super::AppState;

/// `GET /organization`: id, name, `balance_cents`, created_at.
#[utoipa::path(
    get,
    path = "/api/public/v1/organization",
    tag = "organization",
    operation_id = "getOrganization",
    summary = "Read the API key's organisation and its credit balance",
    responses((status = 200, description = "The organisation", body = crate::api::openapi::Envelope<crate::model::Organization>), crate::api::openapi::ReadErrors)
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
) -> Result<Response, ApiError> {
    let organization = state
        .store
        .get_org(&org.0)
        .await
        .map_err(|err| ApiError::from_store(err, "organization", &org.0))?;
    envelope::ok(&organization)
}
