//! Starts the real dialcore service for end-to-end tests: its library on free
//! loopback ports, a temporary SQLite database and recordings directory, and
//! a known API key. Include with `#[path = "support/service.rs"] mod service;`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use call_control::config::Config;
use call_control::service::{Service, ServiceHandle};
use serde_json::{json, Value};

/// The API key every test service is bootstrapped with.
pub const API_KEY: &str = "sk_test_dialcore_e2e";

/// A running service and a client for its REST API.
pub struct TestService {
    pub handle: Option<ServiceHandle>,
    pub http: SocketAddr,
    pub sip: SocketAddr,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    pub key: String,
}

/// The configuration of a test service living in `dir`.
pub fn config_in(dir: &Path) -> Config {
    let mut config = Config::default();
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.sip.listen = "127.0.0.1:0".parse().expect("addr");
    config.database.url = format!("sqlite://{}", dir.join("dialcore.db").display());
    config.recordings.dir = dir.join("recordings");
    config.api.key = Some(API_KEY.to_string());
    config.webhooks.base_delay_ms = 100;
    config.webhooks.max_attempts = 5;
    // Every peer of these tests (SIPp, agents, webhook receivers) listens on loopback.
    config.security.allow_private_destinations = true;
    config
}

impl TestService {
    /// A service on free ports with a fresh database.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Like [`TestService::start`], with the configuration adjusted first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = config_in(dir.path());
        adjust(&mut config);
        Self::start_in(dir, config).await
    }

    /// A service on an existing directory (for restart tests).
    pub async fn start_in(dir: tempfile::TempDir, config: Config) -> Self {
        let handle = Service::start(config).await.expect("service starts");
        Self {
            http: handle.http_addr,
            sip: handle.sip_addr,
            handle: Some(handle),
            dir,
            client: reqwest::Client::new(),
            key: API_KEY.to_string(),
        }
    }

    /// The text values of `sql`'s first column as the database file holds them, read over
    /// a connection of its own (what a copy of the file gives away).
    pub async fn stored(&self, sql: &str) -> Vec<String> {
        use sqlx::Row;
        let url = format!("sqlite://{}", self.dir.path().join("dialcore.db").display());
        let options =
            <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url).expect("url");
        let pool = sqlx::SqlitePool::connect_with(options)
            .await
            .expect("database file");
        let rows = sqlx::query(sql).fetch_all(&pool).await.expect("query");
        pool.close().await;
        rows.iter()
            .map(|row| row.try_get::<String, _>(0).expect("text"))
            .collect()
    }

    /// Stops the service gracefully and gives back its directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await.expect("graceful shutdown");
        }
        self.dir
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with('/')
            && !path.starts_with("/api/")
            && !path.starts_with("/healthz")
            && !path.starts_with("/metrics")
            && !path.starts_with("/openapi")
        {
            format!("http://{}/api/public/v1{path}", self.http)
        } else {
            format!("http://{}{path}", self.http)
        }
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("HTTP request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.request(
            reqwest::Method::POST,
            path,
            Some(body),
            Some(&self.key),
            &[],
        )
        .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, None, Some(&self.key), &[])
            .await
    }

    /// Creates an object and returns its `data`, failing the test on any error.
    pub async fn create(&self, path: &str, body: Value) -> Value {
        let (status, value) = self.post(path, body).await;
        assert_eq!(status, 201, "POST {path}: {value}");
        value["data"].clone()
    }

    /// Places an outbound call of `agent_id` to `phone_number` (`POST /calls`, which must
    /// answer 201) and returns the call.
    pub async fn place_call(&self, agent_id: &str, phone_number: &str) -> Value {
        self.create(
            "/calls",
            json!({"agent_id": agent_id, "phone_number": phone_number}),
        )
        .await
    }

    /// An active echo agent with a number on a trunk pointing at `carrier`.
    pub async fn echo_agent_with_number(&self, carrier: SocketAddr, number: &str) -> Agent {
        self.agent_with_number(carrier, number, json!({"type": "echo"}), &[])
            .await
    }

    /// An active agent with `runtime` and `number` on a trunk whose carrier calls in from
    /// loopback (`127.0.0.0/8`), as SIPp does in these tests.
    pub async fn loopback_agent(&self, number: &str, runtime: Value) -> Agent {
        let carrier = "127.0.0.1:5999".parse().expect("literal address");
        self.agent_with_number(carrier, number, runtime, &["127.0.0.0/8"])
            .await
    }

    /// An active agent with the given runtime, a trunk to `carrier` (allowing
    /// inbound calls from `allowed`) and one number on it.
    pub async fn agent_with_number(
        &self,
        carrier: SocketAddr,
        number: &str,
        runtime: Value,
        allowed: &[&str],
    ) -> Agent {
        let agent = self
            .create(
                "/agents",
                json!({
                    "name": "Test agent",
                    "prompt": "You are calling {{name}} about {{topic}}.",
                    "greeting": "Hello {{name}}!",
                    "status": "active",
                    "runtime": runtime,
                }),
            )
            .await;
        let trunk = self
            .create(
                "/trunks",
                json!({
                    "name": "SIPp carrier",
                    "host": carrier.ip().to_string(),
                    "port": carrier.port(),
                    "transport": "udp",
                    "allowed_networks": allowed,
                }),
            )
            .await;
        let number = self
            .create(
                "/phone-numbers",
                json!({
                    "number": number,
                    "trunk_id": trunk["id"],
                    "agent_id": agent["id"],
                }),
            )
            .await;
        Agent {
            id: agent["id"].as_str().expect("agent id").to_string(),
            trunk_id: trunk["id"].as_str().expect("trunk id").to_string(),
            number_id: number["id"].as_str().expect("number id").to_string(),
        }
    }

    /// Polls a call until its status is terminal, for at most `within`.
    pub async fn wait_terminal(&self, call_id: &str, within: Duration) -> Value {
        self.wait_status(
            &format!("/calls/{call_id}"),
            &["ended", "failed", "cancelled"],
            Duration::from_millis(50),
            within,
        )
        .await
    }

    /// Polls the resource at `path` every `every` until its `status` is one of
    /// `over`, for at most `within`, and returns its `data`.
    pub async fn wait_status(
        &self,
        path: &str,
        over: &[&str],
        every: Duration,
        within: Duration,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (status, value) = self.get(path).await;
            assert_eq!(status, 200, "GET {path}: {value}");
            let data = value["data"].clone();
            if data["status"].as_str().is_some_and(|s| over.contains(&s)) {
                return data;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} not over in {within:?}: {data}"
            );
            tokio::time::sleep(every).await;
        }
    }

    /// Waits until a call with this filter appears in the list, and returns it.
    pub async fn wait_for_call(&self, query: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (_, value) = self.get(&format!("/calls?{query}")).await;
            if let Some(call) = value["data"].as_array().and_then(|calls| calls.first()) {
                return call.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no call matching {query}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Downloads the stereo WAV recording of `call` (caller left, agent right).
    pub async fn recording(&self, call: &Value) -> hound::WavReader<std::io::Cursor<Vec<u8>>> {
        let url = call["recording_url"].as_str().expect("recording_url");
        let response = self
            .client
            .get(self.url(url))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("GET recording");
        assert_eq!(response.status(), 200);
        let wav = response.bytes().await.expect("WAV bytes");
        let reader = hound::WavReader::new(std::io::Cursor::new(wav.to_vec())).expect("a WAV file");
        assert_eq!(reader.spec().channels, 2, "caller left, agent right");
        reader
    }

    pub fn recordings_dir(&self) -> PathBuf {
        self.dir.path().join("recordings")
    }
}

/// Ids of an agent set up by [`TestService::agent_with_number`].
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: String,
    pub trunk_id: String,
    pub number_id: String,
}
