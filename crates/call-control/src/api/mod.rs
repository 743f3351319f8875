//! The REST API of DESIGN.md ("REST API", "Field names and service details"), on axum.
//!
//! Every route under [`BASE`] needs `Authorization: Bearer <key>`, is counted against the key's
//! rate limit and sees only its organisation's objects; POST routes honour
//! `X-Idempotency-Key`. `/healthz`, `/metrics` and `/openapi.json` are served at the root
//! without authentication (the OpenAPI document also under [`BASE`]); Twilio's hang-up,
//! `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json`, at the root with its own
//! HTTP Basic authentication (see `twilio`).
//!
//! ```no_run
//! # async fn serve(state: call_control::api::AppState) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, call_control::api::router(state)).await
//! # }
//! ```

mod admin;
mod agents;
mod api_keys;
mod calls;
mod envelope;
mod error;
mod extract;
mod middleware;
mod numbers;
pub mod openapi;
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
use axum::Router;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    /// The other nodes, for commands to the calls they run.
    pub peers: crate::peers::Peers,
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
        let config_node_id = config.node.id.clone();
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
            peers: crate::peers::Peers::new(config_node_id),
        }
    }

    /// 503 `unavailable` while the node drains ([`CallEngine::drain`]) or runs its most
    /// calls (`[node] max_calls`): new calls and test calls go to another node, or wait.
    pub(crate) fn accepting_calls(&self) -> Result<(), ApiError> {
        if self.engine.is_draining() {
            Err(ApiError::Unavailable {
                reason: "this node is draining and takes no new calls; retry on another node",
            })
        } else if self.engine.is_at_capacity() {
            Err(ApiError::Unavailable {
                reason: "this node runs its most calls ([node] max_calls); retry later or on \
                         another node",
            })
        } else {
            Ok(())
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
    let (api, twilio, open) = documented_routes();
    let api = api
        .route_layer(axum::middleware::from_fn_with_state(
            idempotency,
            middleware::idempotency,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::authenticate,
        ));
    let (router, _) = api.merge(twilio).merge(open).split_for_parts();
    router
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        .with_state(state)
}

/// Every route, each with its OpenAPI operation (the `#[utoipa::path]` of its handler):
/// those under [`BASE`] that need an API key, Twilio's hang-up at the root (HTTP Basic, its
/// own authentication, no bearer layer), and the open service routes. One `routes!` per
/// path. The router and `/openapi.json` are both built from this list.
pub(crate) fn documented_routes() -> (
    OpenApiRouter<AppState>,
    OpenApiRouter<AppState>,
    OpenApiRouter<AppState>,
) {
    let api = OpenApiRouter::with_openapi(openapi::frame())
        .routes(routes!(agents::list, agents::create))
        .routes(routes!(agents::get, agents::update, agents::delete))
        .routes(routes!(numbers::list, numbers::create))
        .routes(routes!(numbers::get, numbers::update, numbers::delete))
        .routes(routes!(organization::get))
        .routes(routes!(trunks::list, trunks::create))
        .routes(routes!(trunks::get, trunks::update, trunks::delete))
        .routes(routes!(calls::list, calls::create))
        .routes(routes!(calls::get))
        .routes(routes!(calls::hangup))
        .routes(routes!(recordings::get))
        .routes(routes!(test_calls::agent_test_call))
        .routes(routes!(test_calls::list_runs, test_calls::create_run))
        .routes(routes!(test_calls::get_run))
        .routes(routes!(test_calls::list_batches, test_calls::create_batch))
        .routes(routes!(test_calls::get_batch))
        .routes(routes!(webhooks::list, webhooks::create))
        .routes(routes!(webhooks::get, webhooks::delete))
        .routes(routes!(api_keys::list))
        .routes(routes!(api_keys::revoke))
        .routes(routes!(admin::drain));
    let open = OpenApiRouter::new()
        .routes(routes!(service::healthz))
        .routes(routes!(service::metrics))
        .routes(routes!(service::openapi))
        .routes(routes!(service::openapi_v1));
    (api, twilio_routes(), open)
}

/// Twilio's hang-up: documented at Twilio's path (`.../Calls/{CallSid}.json`), routed at
/// [`twilio::ROUTE`], the same path in axum's syntax (whose parameters fill whole segments:
/// the handler strips the `.json`).
fn twilio_routes() -> OpenApiRouter<AppState> {
    let (schemas, paths, method_router) = routes!(twilio::update_call);
    debug_assert_eq!(twilio::PATH.strip_suffix(".json"), Some(twilio::ROUTE));
    debug_assert!(paths.paths.contains_key(twilio::PATH));
    let mut frame = utoipa::openapi::OpenApi::default();
    frame.paths = paths;
    frame
        .components
        .get_or_insert_with(Default::default)
        .schemas
        .extend(schemas);
    OpenApiRouter::with_openapi(frame).route(twilio::ROUTE, method_router)
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
