//! Service endpoints without authentication: `/healthz`, `/metrics`, `/openapi.json`.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{openapi, AppState};
use crate::metrics::Snapshot;

/// `GET /healthz`: 200 when the store answers, 503 otherwise.
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
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut snapshot = Snapshot {
        live_calls: u64::try_from(state.engine.live_calls()).unwrap_or(u64::MAX),
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

/// `GET /openapi.json` (also under the API base path).
pub async fn openapi() -> Response {
    Json(openapi::document()).into_response()
}
