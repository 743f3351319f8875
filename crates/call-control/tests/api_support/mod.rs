//! Shared harness of the `api_*` tests: the real router over a temporary SQLite file, the real
//! webhook dispatcher and call engine (SIP on a free loopback port), requests sent with
//! `tower::ServiceExt::oneshot`.

#![allow(dead_code)]

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use call_control::api::{self, AppState};
use call_control::config::Config;
use call_control::engine::CallEngine;
use call_control::store::Store;
use call_control::webhooks::Webhooks;
use serde_json::{json, Value};
use tower::ServiceExt;

/// Starting balance of the test organisations, in cents.
pub const BALANCE: i64 = 10_000;

/// A running API over a temporary database.
pub struct TestApi {
    /// The router under test.
    pub router: Router,
    /// Its state (store, engine, config, ...).
    pub state: AppState,
    /// API key of organisation `acme`.
    pub key: String,
    /// API key of organisation `other`.
    pub other_key: String,
    /// Holds the database file and the recordings.
    pub dir: Arc<tempfile::TempDir>,
}

/// One response: status, headers and JSON body (`Value::Null` when not JSON).
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Parsed JSON body.
    pub body: Value,
    /// Raw body bytes.
    pub bytes: Vec<u8>,
}

impl Reply {
    /// `error.code` of an error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// `data` of a success body.
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
}

/// A test configuration: rate limit `rate_limit`, everything on loopback and in `dir`.
pub fn config(dir: &tempfile::TempDir, rate_limit: u32) -> Config {
    let env = [
        ("DIALCORE_HTTP_LISTEN", "127.0.0.1:0".to_owned()),
        ("DIALCORE_SIP_LISTEN", "127.0.0.1:0".to_owned()),
        (
            "DIALCORE_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("api.db").display()),
        ),
        (
            "DIALCORE_RECORDINGS_DIR",
            dir.path().join("recordings").display().to_string(),
        ),
        ("DIALCORE_API_RATE_LIMIT_PER_MINUTE", rate_limit.to_string()),
        (
            "DIALCORE_CREDITS_STARTING_BALANCE_CENTS",
            BALANCE.to_string(),
        ),
        ("DIALCORE_CREDITS_PER_MINUTE_CENTS", "2".to_owned()),
        // Trunks, agents and webhook receivers of these tests listen on loopback.
        (
            "DIALCORE_SECURITY_ALLOW_PRIVATE_DESTINATIONS",
            "true".to_owned(),
        ),
    ];
    Config::from_env_and_toml(None, env.into_iter().map(|(k, v)| (k.to_owned(), v)))
        .expect("test configuration is valid")
}

impl TestApi {
    /// A fresh API with the default rate limit (high enough never to matter).
    pub async fn start() -> TestApi {
        TestApi::with_rate_limit(10_000).await
    }

    /// A fresh API whose keys may make `rate_limit` requests per minute.
    pub async fn with_rate_limit(rate_limit: u32) -> TestApi {
        TestApi::with_config(|config| config.api.rate_limit_per_minute = rate_limit).await
    }

    /// A fresh API with the test configuration changed by `edit`.
    pub async fn with_config(edit: impl FnOnce(&mut Config)) -> TestApi {
        let dir = Arc::new(tempfile::tempdir().expect("temporary directory"));
        let mut config = config(&dir, 10_000);
        edit(&mut config);
        let store = Store::open(&config.database.url)
            .await
            .expect("store opens");
        let key = store.create_key("acme", BALANCE).await.expect("key");
        let other_key = store.create_key("other", BALANCE).await.expect("key");
        TestApi::assemble(store, config, key, other_key, dir).await
    }

    /// The same database, opened again by a new store, engine and router (a restart).
    pub async fn reopen(self) -> TestApi {
        let TestApi {
            state,
            key,
            other_key,
            dir,
            ..
        } = self;
        state.engine.shutdown().await;
        state.webhooks.stop();
        state.store.close().await;
        let config = (*state.config).clone();
        drop(state);
        let store = Store::open(&config.database.url)
            .await
            .expect("store reopens");
        TestApi::assemble(store, config, key, other_key, dir).await
    }

    async fn assemble(
        store: Store,
        config: Config,
        key: String,
        other_key: String,
        dir: Arc<tempfile::TempDir>,
    ) -> TestApi {
        let webhooks = Webhooks::start(store.clone(), &config);
        let engine = CallEngine::start(&config, store.clone(), webhooks.clone())
            .await
            .expect("engine starts on loopback");
        let state = AppState::new(store, engine, Arc::new(config), webhooks);
        TestApi {
            router: api::router(state.clone()),
            state,
            key,
            other_key,
            dir,
        }
    }

    /// The organisation id behind `key`.
    pub async fn org_of(&self, key: &str) -> String {
        self.state
            .store
            .org_for_key(key)
            .await
            .expect("store answers")
            .expect("known key")
    }

    /// Sends a request with optional bearer key, JSON body and extra headers.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match body {
            Some(json) => {
                request = request.header("content-type", "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        self.dispatch(request.body(body).expect("valid request"))
            .await
    }

    /// POST of raw bytes with the `acme` key.
    pub async fn post_raw(&self, path: &str, bytes: &[u8]) -> Reply {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.key))
            .header("content-type", "application/json")
            .body(Body::from(bytes.to_vec()))
            .expect("valid request");
        self.dispatch(request).await
    }

    /// POST of raw bytes with the `acme` key and `X-Idempotency-Key: idempotency_key`.
    pub async fn post_raw_with_key(
        &self,
        path: &str,
        idempotency_key: &str,
        bytes: &[u8],
    ) -> Reply {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.key))
            .header("content-type", "application/json")
            .header("x-idempotency-key", idempotency_key)
            .body(Body::from(bytes.to_vec()))
            .expect("valid request");
        self.dispatch(request).await
    }

    /// `method path` with exactly `headers` (no API key added) and `bytes` as the body.
    pub async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        bytes: Vec<u8>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.dispatch(request.body(Body::from(bytes)).expect("valid request"))
            .await
    }

    async fn dispatch(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = to_bytes(response.into_body(), 64 << 20)
            .await
            .expect("body readable")
            .to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            bytes,
        }
    }

    /// GET with the `acme` key.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, Some(&self.key), None, &[])
            .await
    }

    /// POST of `body` with the `acme` key.
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(&self.key), Some(&body), &[])
            .await
    }

    /// PATCH of `body` with the `acme` key.
    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(Method::PATCH, path, Some(&self.key), Some(&body), &[])
            .await
    }

    /// DELETE with the `acme` key.
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, Some(&self.key), None, &[])
            .await
    }

    /// Creates a UDP trunk pointing at `port` on loopback; returns its id.
    pub async fn trunk(&self, port: u16) -> String {
        self.trunk_over(port, "udp").await
    }

    /// Creates a trunk pointing at `port` on loopback over `transport`; returns its id.
    pub async fn trunk_over(&self, port: u16, transport: &str) -> String {
        let reply = self
            .post(
                "/api/public/v1/trunks",
                json!({"name": "carrier", "host": "127.0.0.1", "port": port, "transport": transport,
                       "username": "user", "password": "s3cret-pass",
                       "allowed_networks": ["127.0.0.0/8"]}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        id_of(&reply)
    }

    /// Creates an agent with `status` and `prompt`; returns its id.
    pub async fn agent(&self, status: &str, prompt: &str) -> String {
        let reply = self
            .post(
                "/api/public/v1/agents",
                json!({"name": "reminder", "prompt": prompt, "greeting": "Hello {{name}}",
                       "status": status, "runtime": {"type": "echo"}}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        id_of(&reply)
    }

    /// Creates phone number `number` on `trunk_id`, assigned to `agent_id`; returns its id.
    pub async fn number(&self, number: &str, trunk_id: &str, agent_id: Option<&str>) -> String {
        let reply = self
            .post(
                "/api/public/v1/phone-numbers",
                json!({"number": number, "trunk_id": trunk_id, "agent_id": agent_id}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        id_of(&reply)
    }
}

/// `data.id` of a create response.
pub fn id_of(reply: &Reply) -> String {
    reply.data()["id"]
        .as_str()
        .expect("data.id is a string")
        .to_owned()
}

/// A loopback TCP port nobody listens on (bound, then released): connections are refused.
pub fn refused_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// A loopback UDP port nobody listens on (bound, then released).
pub fn silent_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("address").port()
}
