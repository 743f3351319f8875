//! The REST API of DESIGN.md ("REST API", "Field names and service details"), on axum.
//!
//! Every route under [`BASE`] needs `Authorization: Bearer <key>`, is counted against the key's
//! rate limit and sees only its organisation's objects; POST routes honour
//! `X-Idempotency-Key`. `/healthz`, `/metrics` and `/openapi.json` are served at the root
//! without authentication (the OpenAPI document also under [`BASE`]).
//!
//! ```no_run
//! # async fn serve(state: call_control::api::AppState) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, call_control::api::router(state)).await
//! # }
//! ```

mod agents;
mod calls;
mod envelope;
mod error;
mod extract;
mod middleware;
mod numbers;
pub mod openapi;
mod openapi_schemas;
mod organization;
pub mod rate_limit;
mod recordings;
mod service;
pub mod template;
mod test_calls;
mod trunks;
mod twilio;
pub mod validation;
mod webhooks;

use std::sync::Arc;

use axum::http::{Method, Uri};
use axum::routing::{get, post};
use axum::Router;

pub use envelope::meta as response_meta;
pub use error::ApiError;
pub use middleware::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, REQUEST_ID};
pub use rate_limit::RateLimiter;

use crate::config::Config;
use crate::engine::CallEngine;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::test_calls::TestRunner;
use crate::webhooks::Webhooks;

/// Base path of the public API.
pub const BASE: &str = "/api/public/v1";

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Records of every organisation.
    pub store: Store,
    /// The call engine (places and hangs up calls).
    pub engine: CallEngine,
    /// Service configuration.
    pub config: Arc<Config>,
    /// Webhook dispatcher.
    pub webhooks: Webhooks,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Per-API-key request limiter.
    pub rate_limiter: Arc<RateLimiter>,
    /// Executes test-call runs and batches.
    pub test_runner: TestRunner,
}

impl AppState {
    /// State with fresh metrics, a rate limiter of `config.api.rate_limit_per_minute` and a
    /// test runner over the same store, engine and webhooks (replace it with
    /// [`AppState::with_test_runner`] to share one the service holds).
    pub fn new(
        store: Store,
        engine: CallEngine,
        config: Arc<Config>,
        webhooks: Webhooks,
    ) -> AppState {
        let rate_limiter = Arc::new(RateLimiter::new(config.api.rate_limit_per_minute));
        let test_runner = TestRunner::new(
            store.clone(),
            engine.clone(),
            webhooks.clone(),
            Arc::clone(&config),
        );
        AppState {
            store,
            engine,
            config,
            webhooks,
            metrics: Arc::new(Metrics::new()),
            rate_limiter,
            test_runner,
        }
    }

    /// The same state with `test_runner` executing the test calls the API accepts.
    pub fn with_test_runner(mut self, test_runner: TestRunner) -> AppState {
        self.test_runner = test_runner;
        self
    }
}

/// The whole HTTP application: public API, service endpoints, 404/405 in the error format.
pub fn router(state: AppState) -> Router {
    let idempotency = middleware::Idempotency::new(state.store.clone());
    let api = Router::new()
        .route(&path("/agents"), get(agents::list).post(agents::create))
        .route(
            &path("/agents/{id}"),
            get(agents::get)
                .patch(agents::update)
                .delete(agents::delete),
        )
        .route(
            &path("/phone-numbers"),
            get(numbers::list).post(numbers::create),
        )
        .route(
            &path("/phone-numbers/{id}"),
            get(numbers::get)
                .patch(numbers::update)
                .delete(numbers::delete),
        )
        .route(&path("/organization"), get(organization::get))
        .route(&path("/trunks"), get(trunks::list).post(trunks::create))
        .route(
            &path("/trunks/{id}"),
            get(trunks::get)
                .patch(trunks::update)
                .delete(trunks::delete),
        )
        .route(&path("/calls"), get(calls::list).post(calls::create))
        .route(&path("/calls/{id}"), get(calls::get))
        .route(&path("/calls/{id}/hangup"), post(calls::hangup))
        .route(&path("/calls/{id}/recording"), get(recordings::get))
        .route(
            &path("/agents/{id}/test-call"),
            post(test_calls::agent_test_call),
        )
        .route(
            &path("/test-calls"),
            get(test_calls::list_runs).post(test_calls::create_run),
        )
        .route(&path("/test-calls/{id}"), get(test_calls::get_run))
        .route(
            &path("/test-call-batches"),
            get(test_calls::list_batches).post(test_calls::create_batch),
        )
        .route(&path("/test-call-batches/{id}"), get(test_calls::get_batch))
        .route(
            &path("/webhooks"),
            get(webhooks::list).post(webhooks::create),
        )
        .route(
            &path("/webhooks/{id}"),
            get(webhooks::get).delete(webhooks::delete),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            idempotency,
            middleware::idempotency,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::authenticate,
        ));
    let open = Router::new()
        .route("/healthz", get(service::healthz))
        .route("/metrics", get(service::metrics))
        .route("/openapi.json", get(service::openapi))
        .route(twilio::ROUTE, post(twilio::update_call))
        .route(&path("/openapi.json"), get(service::openapi));
    api.merge(open)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        .with_state(state)
}

fn path(suffix: &str) -> String {
    format!("{BASE}{suffix}")
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
