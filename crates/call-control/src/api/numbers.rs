//! `/phone-numbers`: E.164 numbers the organisation owns, the trunk each lives on and the agent
//! it is assigned to. A number is unique across organisations (409 `phone_number_exists`).

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use chrono::Utc;
use serde_json::json;

use super::envelope::{self, Page};
use super::error::ApiError;
use super::extract::{Id, JsonBody, Params};
use super::middleware::OrgId;
use super::validation::Body;
use super::AppState;
use crate::ids;
use crate::model::{is_e164, AgentStatus, PhoneNumber};
use crate::store::StoreError;

/// `POST /phone-numbers`
#[utoipa::path(
    post,
    path = "/api/public/v1/phone-numbers",
    tag = "phone_numbers",
    operation_id = "createPhoneNumber",
    summary = "Create a phone number",
    params(crate::api::openapi::IdempotencyKey),
    request_body = crate::api::openapi::PhoneNumberCreate,
    responses((status = 201, description = "The phone number created", body = crate::api::openapi::Envelope<PhoneNumber>), crate::api::openapi::CreateErrors)
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    JsonBody(bytes): JsonBody,
) -> Result<Response, ApiError> {
    let mut body = Body::parse(&bytes)?;
    body.require(&["number", "trunk_id"]);
    let now = Utc::now();
    let mut number = PhoneNumber {
        id: ids::new_id(ids::PHONE_NUMBER),
        org_id: org.0,
        number: String::new(),
        trunk_id: String::new(),
        agent_id: None,
        created_at: now,
        updated_at: now,
    };
    apply(&state, &mut body, &mut number).await?;
    body.finish()?;
    state
        .store
        .insert_number(&number)
        .await
        .map_err(|err| conflict(err, &number.number))?;
    envelope::created(&number)
}

/// `GET /phone-numbers`
#[utoipa::path(
    get,
    path = "/api/public/v1/phone-numbers",
    tag = "phone_numbers",
    operation_id = "listPhoneNumbers",
    summary = "List phone numbers, newest first",
    params(crate::api::openapi::PageParams),
    responses((status = 200, description = "A page of phone numbers", body = crate::api::openapi::ListEnvelope<PhoneNumber>), crate::api::openapi::ListErrors)
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Params(query): Params,
) -> Result<Response, ApiError> {
    let page = Page::only(&query)?;
    let (numbers, total) = state
        .store
        .list_numbers(&org.0, page.limit.into(), page.offset)
        .await?;
    envelope::list(numbers, page, total)
}

/// `GET /phone-numbers/{id}`
#[utoipa::path(
    get,
    path = "/api/public/v1/phone-numbers/{id}",
    tag = "phone_numbers",
    operation_id = "getPhoneNumber",
    summary = "Read a phone number",
    params(crate::api::openapi::IdParam),
    responses((status = 200, description = "The phone number", body = crate::api::openapi::Envelope<PhoneNumber>), crate::api::openapi::ReadErrors)
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let number = state
        .store
        .get_number(&org.0, &id)
        .await
        .map_err(|err| ApiError::from_store(err, "phone_number", &id))?;
    envelope::ok(&number)
}

/// `PATCH /phone-numbers/{id}`: `"agent_id": null` unassigns the number.
#[utoipa::path(
    patch,
    path = "/api/public/v1/phone-numbers/{id}",
    tag = "phone_numbers",
    operation_id = "updatePhoneNumber",
    summary = "Change the given fields of a phone number",
    params(crate::api::openapi::IdParam),
    request_body = crate::api::openapi::PhoneNumberUpdate,
    responses((status = 200, description = "The phone number changed", body = crate::api::openapi::Envelope<PhoneNumber>), crate::api::openapi::UpdateErrors)
)]
pub async fn update(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Id(id): Id,
    JsonBody(bytes): JsonBody,
) -> Result<Response, ApiError> {
    let mut number = state
        .store
        .get_number(&org.0, &id)
        .await
        .map_err(|err| ApiError::from_store(err, "phone_number", &id))?;
    let mut body = Body::parse(&bytes)?;
    apply(&state, &mut body, &mut number).await?;
    body.finish()?;
    number.updated_at = Utc::now();
    state
        .store
        .update_number(&number)
        .await
        .map_err(|err| match err {
            StoreError::NotFound => ApiError::not_found("phone_number", &id),
            other => conflict(other, &number.number),
        })?;
    envelope::ok(&number)
}

/// `DELETE /phone-numbers/{id}`
#[utoipa::path(
    delete,
    path = "/api/public/v1/phone-numbers/{id}",
    tag = "phone_numbers",
    operation_id = "deletePhoneNumber",
    summary = "Delete a phone number",
    params(crate::api::openapi::IdParam),
    responses((status = 200, description = "The phone number is deleted", body = crate::api::openapi::Envelope<crate::api::openapi::Deleted>), crate::api::openapi::DeleteErrors)
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Id(id): Id,
) -> Result<Response, ApiError> {
    state
        .store
        .delete_number(&org.0, &id)
        .await
        .map_err(|err| ApiError::from_store(err, "phone_number", &id))?;
    envelope::ok(json!({ "id": id, "deleted": true }))
}

/// Takes the fields present in `body`; `trunk_id` and `agent_id` must name objects of the
/// number's organisation.
async fn apply(
    state: &AppState,
    body: &mut Body,
    number: &mut PhoneNumber,
) -> Result<(), ApiError> {
    if let Some(value) = body.string("number", 16) {
        if is_e164(&value) {
            number.number = value;
        } else {
            body.invalid("number", "must be an E.164 number (+ then 2 to 15 digits)");
        }
    }
    if let Some(trunk_id) = body.string("trunk_id", 64) {
        match state.store.get_trunk(&number.org_id, &trunk_id).await {
            Ok(_) => number.trunk_id = trunk_id,
            Err(StoreError::NotFound) => body.invalid("trunk_id", "no trunk with this id"),
            Err(other) => return Err(ApiError::Store(other)),
        }
    }
    if let Some(agent_id) = body.nullable_string("agent_id", 64) {
        match agent_id {
            None => number.agent_id = None,
            Some(agent_id) => match state.store.get_agent(&number.org_id, &agent_id).await {
                Ok(agent) if agent.status == AgentStatus::Archived => {
                    body.invalid("agent_id", format!("agent {agent_id} is archived"));
                }
                Ok(_) => number.agent_id = Some(agent_id),
                Err(StoreError::NotFound) => body.invalid("agent_id", "no agent with this id"),
                Err(other) => return Err(ApiError::Store(other)),
            },
        }
    }
    Ok(())
}

fn conflict(err: StoreError, number: &str) -> ApiError {
    match err {
        StoreError::Conflict(_) => ApiError::Conflict {
            code: "phone_number_exists",
            message: format!("{number} is already registered"),
        },
        other => ApiError::Store(other),
    }
}
