//! `/api-keys`: the organisation's API keys, as records (id, display prefix, times), never
//! the keys themselves; `DELETE /api-keys/{id}` revokes one. Keys are created by the
//! operator (`dialcore keys create --org NAME`); `dialcore keys list` and `keys revoke`
//! work on the same records.

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use chrono::Utc;

use super::envelope::{self, Page};
use super::error::ApiError;
use super::extract::{Id, Params};
use super::middleware::OrgId;
use super::AppState;

/// `GET /api-keys`
#[utoipa::path(
    get,
    path = "/api/public/v1/api-keys",
    tag = "api_keys",
    operation_id = "listApiKeys",
    summary = "List the organisation's API keys (revoked ones included), newest first; never the keys themselves",
    params(crate::api::openapi::PageParams),
    responses((status = 200, description = "A page of API key records", body = crate::api::openapi::ListEnvelope<crate::store::ApiKeyRecord>), crate::api::openapi::ListErrors)
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Params(query): Params,
) -> Result<Response, ApiError> {
    let page = Page::only(&query)?;
    let (keys, total) = state
        .store
        .list_api_keys(&org.0, page.limit.into(), page.offset)
        .await?;
    envelope::list(keys, page, total)
}

/// `DELETE /api-keys/{id}`
#[utoipa::path(
    delete,
    path = "/api/public/v1/api-keys/{id}",
    tag = "api_keys",
    operation_id = "revokeApiKey",
    summary = "Revoke an API key: every request with it is answered 401 (`details.reason` `revoked`) from then on",
    params(crate::api::openapi::IdParam),
    responses((status = 200, description = "The key's record, `revoked_at` set (revoking a revoked key changes nothing)", body = crate::api::openapi::Envelope<crate::store::ApiKeyRecord>), crate::api::openapi::DeleteErrors)
)]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let key = state
        .store
        .revoke_api_key(Some(&org.0), &id, Utc::now())
        .await
        .map_err(|err| ApiError::from_store(err, "api_key", &id))?;
    envelope::ok(&key)
}
