//! `/trunks`: the organisation's SIP trunks. The digest passwords are write-only: responses show
//! `has_password` and `inbound_auth: {username}` (the model's serialization), never a password.

use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use chrono::Utc;
use serde_json::json;

use super::envelope::{self, Page};
use super::error::ApiError;
use super::extract::{Id, JsonBody, Params};
use super::middleware::OrgId;
use super::validation::{is_cidr, is_host, Body};
use super::AppState;
use crate::destinations::DestinationPolicy;
use crate::ids;
use crate::model::{default_sip_port, InboundAuth, Trunk, TrunkTransport};

/// Longest trunk name.
const MAX_NAME: usize = 200;
/// Longest digest user name or password.
const MAX_CREDENTIAL: usize = 256;
/// Most entries in `allowed_networks`.
const MAX_NETWORKS: usize = 100;

/// `POST /trunks`
#[utoipa::path(
    post,
    path = "/api/public/v1/trunks",
    tag = "trunks",
    operation_id = "createTrunk",
    summary = "Create a trunk",
    params(crate::api::openapi::IdempotencyKey),
    request_body = crate::api::openapi::TrunkCreate,
    responses((status = 201, description = "The trunk created", body = crate::api::openapi::Envelope<Trunk>), crate::api::openapi::CreateErrors)
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    JsonBody(bytes): JsonBody,
) -> Result<Response, ApiError> {
    let mut body = Body::parse(&bytes)?;
    body.require(&["name", "host"]);
    let now = Utc::now();
    let mut trunk = Trunk {
        id: ids::new_id(ids::TRUNK),
        org_id: org.0,
        name: String::new(),
        host: String::new(),
        port: default_sip_port(),
        transport: TrunkTransport::Udp,
        username: None,
        password: None,
        allowed_networks: Vec::new(),
        inbound_auth: None,
        created_at: now,
        updated_at: now,
    };
    let new_host = body.has("host");
    apply(&mut body, &mut trunk);
    if new_host {
        check_host(&mut body, &trunk, &state);
    }
    body.finish()?;
    state.store.insert_trunk(&trunk).await?;
    refresh_networks(&state).await;
    envelope::created(&trunk)
}

/// `GET /trunks`
#[utoipa::path(
    get,
    path = "/api/public/v1/trunks",
    tag = "trunks",
    operation_id = "listTrunks",
    summary = "List trunks, newest first",
    params(crate::api::openapi::PageParams),
    responses((status = 200, description = "A page of trunks", body = crate::api::openapi::ListEnvelope<Trunk>), crate::api::openapi::ListErrors)
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Params(query): Params,
) -> Result<Response, ApiError> {
    let page = Page::only(&query)?;
    let (trunks, total) = state
        .store
        .list_trunks(&org.0, page.limit.into(), page.offset)
        .await?;
    envelope::list(trunks, page, total)
}

/// `GET /trunks/{id}`
#[utoipa::path(
    get,
    path = "/api/public/v1/trunks/{id}",
    tag = "trunks",
    operation_id = "getTrunk",
    summary = "Read a trunk",
    params(crate::api::openapi::IdParam),
    responses((status = 200, description = "The trunk", body = crate::api::openapi::Envelope<Trunk>), crate::api::openapi::ReadErrors)
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let trunk = state
        .store
        .get_trunk(&org.0, &id)
        .await
        .map_err(|err| ApiError::from_store(err, "trunk", &id))?;
    envelope::ok(&trunk)
}

/// `PATCH /trunks/{id}`: changes the fields present; `"password": null` removes the password,
/// `"inbound_auth": null` the authentication of inbound calls.
#[utoipa::path(
    patch,
    path = "/api/public/v1/trunks/{id}",
    tag = "trunks",
    operation_id = "updateTrunk",
    summary = "Change the given fields of a trunk",
    params(crate::api::openapi::IdParam),
    request_body = crate::api::openapi::TrunkUpdate,
    responses((status = 200, description = "The trunk changed", body = crate::api::openapi::Envelope<Trunk>), crate::api::openapi::UpdateErrors)
)]
pub async fn update(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Id(id): Id,
    JsonBody(bytes): JsonBody,
) -> Result<Response, ApiError> {
    let mut trunk = state
        .store
        .get_trunk(&org.0, &id)
        .await
        .map_err(|err| ApiError::from_store(err, "trunk", &id))?;
    let mut body = Body::parse(&bytes)?;
    let new_host = body.has("host");
    apply(&mut body, &mut trunk);
    if new_host {
        check_host(&mut body, &trunk, &state);
    }
    body.finish()?;
    trunk.updated_at = Utc::now();
    state
        .store
        .update_trunk(&trunk)
        .await
        .map_err(|err| ApiError::from_store(err, "trunk", &id))?;
    refresh_networks(&state).await;
    envelope::ok(&trunk)
}

/// `DELETE /trunks/{id}`
#[utoipa::path(
    delete,
    path = "/api/public/v1/trunks/{id}",
    tag = "trunks",
    operation_id = "deleteTrunk",
    summary = "Delete a trunk",
    params(crate::api::openapi::IdParam),
    responses((status = 200, description = "The trunk is deleted", body = crate::api::openapi::Envelope<crate::api::openapi::Deleted>), crate::api::openapi::DeleteErrors)
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Id(id): Id,
) -> Result<Response, ApiError> {
    state
        .store
        .delete_trunk(&org.0, &id)
        .await
        .map_err(|err| ApiError::from_store(err, "trunk", &id))?;
    refresh_networks(&state).await;
    envelope::ok(json!({ "id": id, "deleted": true }))
}

/// A host that is a literal loopback, private or link-local IP is refused now (unless
/// `[security] allow_private_destinations`); a name is checked when a call is placed.
fn check_host(body: &mut Body, trunk: &Trunk, state: &AppState) {
    if let Err(refused) = DestinationPolicy::from_config(&state.config).check_literal(&trunk.host) {
        body.invalid("host", refused.to_string());
    }
}

/// The trunk was written: the SIP listener's exemptions from the per-source TCP cap follow
/// (a failure here leaves the old list until the engine's periodic refresh).
async fn refresh_networks(state: &AppState) {
    if let Err(error) = state.engine.refresh_trunk_networks().await {
        tracing::warn!(%error, "trunk networks not refreshed after a trunk change");
    }
}

fn apply(body: &mut Body, trunk: &mut Trunk) {
    if let Some(name) = body.string("name", MAX_NAME) {
        trunk.name = name;
    }
    if let Some(host) = body.string("host", 253) {
        if is_host(&host) {
            trunk.host = host;
        } else {
            body.invalid("host", "must be a host name or an IP address");
        }
    }
    if let Some(port) = body.u32_in("port", 1, 65_535) {
        trunk.port = u16::try_from(port).expect("checked to be at most 65535");
    }
    if let Some(transport) = body.enumeration("transport", TrunkTransport::ALL) {
        trunk.transport = transport;
    }
    if let Some(username) = body.nullable_string("username", MAX_CREDENTIAL) {
        trunk.username = username;
    }
    if let Some(password) = body.nullable_string("password", MAX_CREDENTIAL) {
        trunk.password = password;
    }
    if let Some(networks) = body.string_list("allowed_networks", 64) {
        if networks.len() > MAX_NETWORKS {
            body.invalid(
                "allowed_networks",
                format!("at most {MAX_NETWORKS} networks"),
            );
        }
        for (i, network) in networks.iter().enumerate() {
            if !is_cidr(network) {
                body.invalid(
                    &format!("allowed_networks[{i}]"),
                    "must be an IPv4 or IPv6 network in CIDR notation (e.g. 203.0.113.0/24)",
                );
            }
        }
        trunk.allowed_networks = networks;
    }
    if let Some(inbound_auth) = body.nullable_object("inbound_auth") {
        trunk.inbound_auth = inbound_auth.and_then(|mut auth| {
            // Both are required each time: the password is never read back to merge with.
            auth.require(&["username", "password"]);
            let username = auth.string("username", MAX_CREDENTIAL);
            let password = auth.string("password", MAX_CREDENTIAL);
            body.absorb(auth);
            Some(InboundAuth {
                username: username?,
                password: password?,
            })
        });
    }
}
