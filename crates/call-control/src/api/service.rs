//! Service endpoints without authentication: `/healthz`, `/metrics`, `/openapi.json`.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{openapi, AppState};
use crate::metrics::Snapshot;

/// `GET /healthz`: 200 when the store answers, 503 otherwise.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    operation_id = "healthz",
    summary = "Liveness and store health",
    security(()),
    responses(
        (status = 200, description = "Healthy", body = super::openapi::Health),
        (status = 503, description = "The store does not answer", body = super::openapi::Health)
    )
)]
pub async fn healthz(State(state): State<AppState>) -> Response {
    let live_calls = state.engine.live_calls();
    match state.store.ping().await {
        Ok(()) => Json(json!({
            "status": "ok",
            "database": "ok",
            "live_calls": live_calls,
        }))
        .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "health check: store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "unavailable",
                    "database": "error",
                    "live_calls": live_calls,
                })),
            )
                .into_response()
        }
    }
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    operation_id = "metrics",
    summary = "Prometheus metrics (text exposition format 0.0.4)",
    security(()),
    responses((status = 200, description = "Metrics", content_type = "text/plain", body = String))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut snapshot = Snapshot {
        live_calls: u64::try_from(state.engine.live_calls()).unwrap_or(u64::MAX),
        inbound_calls_created: state.engine.inbound_calls_created(),
        ..Snapshot::default()
    };
    match state.store.call_status_counts().await {
        Ok(counts) => snapshot.calls_by_status = counts,
        Err(err) => tracing::warn!(error = %err, "metrics: counting calls failed"),
    }
    match state.store.outbox_state_counts().await {
        Ok(counts) => snapshot.webhook_outbox = counts,
        Err(err) => tracing::warn!(error = %err, "metrics: counting the outbox failed"),
    }
    let mut response = state.metrics.render(&snapshot).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    operation_id = "getOpenApi",
    summary = "This OpenAPI 3.1 document",
    security(()),
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object))
)]
pub async fn openapi() -> Response {
    Json(openapi::document()).into_response()
}

/// `GET /api/public/v1/openapi.json`: the same document under the API base path.
#[utoipa::path(
    get,
    path = "/api/public/v1/openapi.json",
    tag = "service",
    operation_id = "getOpenApiV1",
    summary = "This OpenAPI 3.1 document",
    security(()),
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object))
)]
pub async fn openapi_v1() -> Response {
    openapi().await
}
