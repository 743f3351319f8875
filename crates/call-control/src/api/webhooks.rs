//! `/webhooks`: event subscriptions. The signing secret is write-only: reads show `has_secret`.
//! When the request gives no secret, one is generated and returned once, in the create response.

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use chrono::Utc;
use rand::distributions::{Alphanumeric, DistString};
use serde_json::json;

use super::envelope::{self, Page};
use super::error::ApiError;
use super::extract::{Id, JsonBody, Params};
use super::middleware::OrgId;
use super::validation::{is_url, Body};
use super::AppState;
use crate::destinations::DestinationPolicy;
use crate::ids;
use crate::model::{events, Webhook};

/// Shortest accepted signing secret.
const MIN_SECRET: usize = 16;
/// Longest accepted signing secret.
const MAX_SECRET: usize = 256;

/// `POST /webhooks`
#[utoipa::path(
    post,
    path = "/api/public/v1/webhooks",
    tag = "webhooks",
    operation_id = "createWebhook",
    summary = "Subscribe a URL to events",
    params(crate::api::openapi::IdempotencyKey),
    request_body = crate::api::openapi::WebhookCreate,
    responses((status = 201, description = "The webhook created; without a secret in the request, the generated one is shown this once", body = crate::api::openapi::Envelope<crate::api::openapi::WebhookCreated>), crate::api::openapi::CreateErrors)
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    JsonBody(bytes): JsonBody,
) -> Result<Response, ApiError> {
    let mut body = Body::parse(&bytes)?;
    body.require(&["url", "events"]);
    let url = body.string("url", 2048);
    if url
        .as_deref()
        .is_some_and(|u| !is_url(u, &["http", "https"]))
    {
        body.invalid("url", "must be an http:// or https:// URL");
    } else if let Some(Err(refused)) = url
        .as_deref()
        .map(|u| DestinationPolicy::from_config(&state.config).check_url(u))
    {
        // Names are checked when the delivery connects; a literal IP can be refused now.
        body.invalid("url", refused.to_string());
    }
    let events = body.string_list("events", 64);
    if let Some(list) = &events {
        if list.is_empty() {
            body.invalid("events", "must name at least one event");
        }
        for (i, event) in list.iter().enumerate() {
            if !events::ALL.contains(&event.as_str()) {
                body.invalid(
                    &format!("events[{i}]"),
                    format!("{event:?} is not one of {}", events::ALL.join(", ")),
                );
            }
        }
    }
    let given_secret = body.string("secret", MAX_SECRET);
    if given_secret
        .as_deref()
        .is_some_and(|s| s.chars().count() < MIN_SECRET)
    {
        body.invalid(
            "secret",
            format!("must be {MIN_SECRET} to {MAX_SECRET} characters long"),
        );
    }
    body.finish()?;
    let generated = given_secret.is_none();
    let secret = given_secret.unwrap_or_else(new_secret);
    let mut unique: Vec<String> = Vec::new();
    for event in events.unwrap_or_default() {
        if !unique.contains(&event) {
            unique.push(event);
        }
    }
    let webhook = Webhook {
        id: ids::new_id(ids::WEBHOOK),
        org_id: org.0,
        url: url.unwrap_or_default(),
        events: unique,
        secret: secret.clone(),
        created_at: Utc::now(),
    };
    state.store.insert_webhook(&webhook).await?;
    let mut data = serde_json::to_value(&webhook)
        .map_err(|err| ApiError::Internal(format!("serializing a webhook: {err}")))?;
    if generated {
        // Shown once so the receiver can verify signatures; never readable again.
        data["secret"] = json!(secret);
    }
    envelope::created(data)
}

/// `GET /webhooks`
#[utoipa::path(
    get,
    path = "/api/public/v1/webhooks",
    tag = "webhooks",
    operation_id = "listWebhooks",
    summary = "List webhooks, newest first",
    params(crate::api::openapi::PageParams),
    responses((status = 200, description = "A page of webhooks", body = crate::api::openapi::ListEnvelope<Webhook>), crate::api::openapi::ListErrors)
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Params(query): Params,
) -> Result<Response, ApiError> {
    let page = Page::only(&query)?;
    let (webhooks, total) = state
        .store
        .list_webhooks(&org.0, page.limit.into(), page.offset)
        .await?;
    envelope::list(webhooks, page, total)
}

/// `GET /webhooks/{id}`
#[utoipa::path(
    get,
    path = "/api/public/v1/webhooks/{id}",
    tag = "webhooks",
    operation_id = "getWebhook",
    summary = "Read a webhook (its secret is never shown)",
    params(crate::api::openapi::IdParam),
    responses((status = 200, description = "The webhook", body = crate::api::openapi::Envelope<Webhook>), crate::api::openapi::ReadErrors)
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let webhook = state
        .store
        .get_webhook(&org.0, &id)
        .await
        .map_err(|err| ApiError::from_store(err, "webhook", &id))?;
    envelope::ok(&webhook)
}

/// `DELETE /webhooks/{id}`
#[utoipa::path(
    delete,
    path = "/api/public/v1/webhooks/{id}",
    tag = "webhooks",
    operation_id = "deleteWebhook",
    summary = "Delete a webhook",
    params(crate::api::openapi::IdParam),
    responses((status = 200, description = "The webhook is deleted", body = crate::api::openapi::Envelope<crate::api::openapi::Deleted>), crate::api::openapi::DeleteErrors)
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Id(id): Id,
) -> Result<Response, ApiError> {
    state
        .store
        .delete_webhook(&org.0, &id)
        .await
        .map_err(|err| ApiError::from_store(err, "webhook", &id))?;
    envelope::ok(json!({ "id": id, "deleted": true }))
}

/// A new signing secret: `whsec_` and 32 random alphanumerics.
fn new_secret() -> String {
    format!(
        "whsec_{}",
        Alphanumeric.sample_string(&mut rand::thread_rng(), 32)
    )
}
