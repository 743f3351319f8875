//! The running service: opens the store, bootstraps the first API key, starts the webhook
//! dispatcher, the call engine (SIP and media), the test-call runner and the HTTP API, and
//! stops them in order on shutdown: HTTP first (no new requests), then the test runs in flight
//! (failed as interrupted), then the live calls (hung up and recorded), then the webhook
//! dispatcher (pending deliveries stay in the outbox), then the store.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use call_control::config::Config;
//! use call_control::service::{wait_for_shutdown_signal, Service};
//!
//! let service = Service::start(Config::default()).await?;
//! wait_for_shutdown_signal().await?;
//! service.shutdown().await
//! # }
//! ```

use crate::lease::{LeaseKeeper, LeaseTask};
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::api::{self, AppState};
use crate::config::Config;
use crate::engine::CallEngine;
use crate::http_server;
use crate::store::Store;
use crate::test_calls::{self, TestRunner};
use crate::webhooks::Webhooks;

/// Starts the service (see [`Service::start`]).
#[derive(Debug)]
pub struct Service;

/// A running service. Dropping it leaves its tasks running; call [`ServiceHandle::shutdown`].
pub struct ServiceHandle {
    /// Bound address of the HTTP API (the real port when `http.listen` asked for port 0).
    pub http_addr: SocketAddr,
    /// Bound SIP address, UDP and TCP (the real port when `sip.listen` asked for port 0).
    pub sip_addr: SocketAddr,
    /// The configuration it runs with.
    pub config: Arc<Config>,
    /// The store it writes to.
    pub store: Store,
    /// The webhook dispatcher.
    pub webhooks: Webhooks,
    /// The call engine.
    pub engine: CallEngine,
    /// The test-call runner.
    pub test_runner: TestRunner,
    /// The API key generated at bootstrap (only on a database that had none and with no
    /// `api.key` configured); it has been printed once.
    pub generated_api_key: Option<String>,
    stop_http: oneshot::Sender<()>,
    http: JoinHandle<()>,
    purger: JoinHandle<()>,
    rate_sync: JoinHandle<()>,
    lease: LeaseTask,
}

/// How often expired idempotency keys are forgotten.
const PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// Forgets expired idempotency keys now and every [`PURGE_INTERVAL`].
async fn purge_expired(store: Store) {
    let mut interval = tokio::time::interval(PURGE_INTERVAL);
    loop {
        interval.tick().await;
        match store.purge_idempotency(chrono::Utc::now()).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "expired idempotency keys forgotten"),
            Err(error) => warn!(%error, "expired idempotency keys not purged"),
        }
    }
}

impl Service {
    /// Starts everything from `config`: creates the recordings directory, opens the store
    /// (running migrations), bootstraps organisation `default` and its key (printing a
    /// generated key once on stdout), starts the webhook dispatcher (which picks up
    /// deliveries a previous run left pending), the call engine on `sip.listen` (which
    /// records calls a previous run left unfinished), fails the test runs a previous run left
    /// unfinished, and starts the test runner and the HTTP API on `http.listen`.
    pub async fn start(config: Config) -> anyhow::Result<ServiceHandle> {
        let config = Arc::new(config);
        std::fs::create_dir_all(&config.recordings.dir).with_context(|| {
            format!(
                "cannot create the recordings directory {}",
                config.recordings.dir.display()
            )
        })?;
        let store = Store::open_with(&config.database.url, &config.secret)
            .await
            .with_context(|| format!("cannot open database {}", config.database.url))?;
        let generated_api_key = store
            .bootstrap(
                config.api.key.as_deref(),
                config.credits.starting_balance_cents,
            )
            .await
            .context("cannot bootstrap the first API key")?;
        if let Some(key) = &generated_api_key {
            println!(
                "dialcore: created organisation \"{}\" with this API key (shown only once):\n  {key}",
                crate::store::DEFAULT_ORG
            );
        }
        let webhooks = Webhooks::start(store.clone(), &config);
        let engine = match CallEngine::start(&config, store.clone(), webhooks.clone()).await {
            Ok(engine) => engine,
            Err(error) => {
                webhooks.stop();
                store.close().await;
                return Err(error).context(format!(
                    "cannot start the call engine on {}",
                    config.sip.listen
                ));
            }
        };
        if let Err(error) = test_calls::recover(&store, &webhooks, &config.node.id).await {
            engine.shutdown().await;
            webhooks.stop();
            store.close().await;
            return Err(error).context("cannot recover the test runs of the last run");
        }
        let test_runner = TestRunner::new(
            store.clone(),
            engine.clone(),
            webhooks.clone(),
            Arc::clone(&config),
        );
        let listener = match tokio::net::TcpListener::bind(config.http.listen).await {
            Ok(listener) => listener,
            Err(error) => {
                engine.shutdown().await;
                webhooks.stop();
                store.close().await;
                return Err(error)
                    .context(format!("cannot listen for HTTP on {}", config.http.listen));
            }
        };
        let http_addr = listener.local_addr()?;
        let sip_addr = engine.sip_addr();
        let lease = LeaseKeeper::new(
            store.clone(),
            webhooks.clone(),
            config.node.id.clone(),
            config.node.advertised_address_for(http_addr),
            config.node.lease,
            config.recordings.dir.clone(),
            config.credits.per_minute_cents,
        );
        let lease = match lease.spawn().await {
            Ok(lease) => lease,
            Err(error) => {
                engine.shutdown().await;
                webhooks.stop();
                store.close().await;
                return Err(error).context("cannot take this node's lease in the database");
            }
        };
        let state = AppState::new(
            store.clone(),
            engine.clone(),
            Arc::clone(&config),
            webhooks.clone(),
        )
        .with_test_runner(test_runner.clone());
        let rate_sync = tokio::spawn(api::rate_limit::sync(
            Arc::clone(&state.rate_limiter),
            store.clone(),
            config.node.id.clone(),
        ));
        let app = api::router(state);
        let (stop_http, stopped) = oneshot::channel::<()>();
        let http_config = config.http.clone();
        let http = tokio::spawn(http_server::serve(listener, app, http_config, async move {
            // A dropped sender stops the server as well.
            let _ = stopped.await;
        }));
        info!(
            http = %http_addr,
            sip = %sip_addr,
            database = %config.database.url,
            node_id = %config.node.id,
            advertised = config.node.advertised_address_for(http_addr).as_deref().unwrap_or("none"),
            max_calls = config.node.max_calls,
            "service started"
        );
        let store_for_purge = store.clone();
        Ok(ServiceHandle {
            http_addr,
            sip_addr,
            config,
            store,
            webhooks,
            engine,
            test_runner,
            generated_api_key,
            stop_http,
            http,
            purger: tokio::spawn(purge_expired(store_for_purge)),
            rate_sync,
            lease,
        })
    }
}

impl ServiceHandle {
    /// The address other nodes reach this node's HTTP API at (`[node] advertised_address`,
    /// else the bound HTTP address when it is not an unspecified one such as `0.0.0.0`).
    pub fn advertised_address(&self) -> Option<String> {
        self.config.node.advertised_address_for(self.http_addr)
    }

    /// Resolves once the node is asked to drain (`POST /admin/drain`).
    pub fn drain_requested(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.engine.drain_started()
    }

    /// Drains the node ([`CallEngine::drain`]: no new calls; the API and the live calls go
    /// on) and waits until its live calls have ended, for at most `timeout`. Returns the
    /// calls still live then; [`ServiceHandle::shutdown`] hangs them up as `shutdown`.
    pub async fn drain(&self, timeout: std::time::Duration) -> usize {
        self.engine.drain();
        let live = self.engine.live_calls();
        if live > 0 {
            info!(
                live,
                timeout_s = timeout.as_secs(),
                "draining: waiting for the live calls"
            );
        }
        if tokio::time::timeout(timeout, self.engine.wait_idle())
            .await
            .is_err()
        {
            let left = self.engine.live_calls();
            warn!(left, "drain timeout: the calls still live are hung up");
            return left;
        }
        0
    }

    /// Stops the service gracefully: the HTTP server stops accepting and finishes the
    /// requests in flight (for at most `[http] shutdown_grace_ms`); test runs in flight are failed as interrupted; every live call is
    /// hung up and recorded as such; the webhook
    /// dispatcher stops after its current round (pending deliveries stay in the outbox for
    /// the next run); the store is closed once its running queries finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop_http.send(());
        let served = self.http.await;
        self.purger.abort();
        self.rate_sync.abort();
        self.test_runner.shutdown().await;
        self.engine.shutdown().await;
        if let Err(error) =
            test_calls::fail_interrupted(&self.store, &self.webhooks, &self.config.node.id).await
        {
            warn!(%error, "interrupted test runs not recorded; the next start fails them");
        }
        self.lease.stop().await;
        self.webhooks.stop();
        self.store.close().await;
        info!("service stopped");
        served.map_err(|error| anyhow::anyhow!("HTTP server task failed: {error}"))
    }
}

impl std::fmt::Debug for ServiceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceHandle")
            .field("http_addr", &self.http_addr)
            .field("sip_addr", &self.sip_addr)
            .field("database", &self.config.database.url)
            .finish_non_exhaustive()
    }
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = terminate.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(dir: &tempfile::TempDir, api_key: Option<&str>) -> Config {
        let mut config = Config::default();
        config.database.url = format!("sqlite://{}", dir.path().join("svc.db").display());
        config.recordings.dir = dir.path().join("recordings");
        config.api.key = api_key.map(str::to_owned);
        config.credits.starting_balance_cents = 250;
        config.http.listen = "127.0.0.1:0".parse().expect("address");
        config.sip.listen = "127.0.0.1:0".parse().expect("address");
        config.security.allow_private_destinations = true;
        config
    }

    #[tokio::test]
    async fn generates_a_key_once_and_keeps_it_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = Service::start(config_in(&dir, None)).await.expect("starts");
        let key = service.generated_api_key.clone().expect("generated");
        assert!(dir.path().join("recordings").is_dir());
        let org = service
            .store
            .org_for_key(&key)
            .await
            .expect("lookup")
            .expect("known");
        assert_eq!(
            service.store.balance_cents(&org).await.expect("balance"),
            250
        );
        service.shutdown().await.expect("stops");

        let again = Service::start(config_in(&dir, None))
            .await
            .expect("restarts");
        assert_eq!(again.generated_api_key, None);
        assert!(again
            .store
            .org_for_key(&key)
            .await
            .expect("lookup")
            .is_some());
        again.shutdown().await.expect("stops");
    }

    #[tokio::test]
    async fn serves_http_on_the_bound_port_and_shuts_down() {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = Service::start(config_in(&dir, Some("sk_test_http")))
            .await
            .expect("starts");
        assert_ne!(service.http_addr.port(), 0);
        assert_ne!(service.sip_addr.port(), 0);
        assert_eq!(
            service.advertised_address(),
            Some(service.http_addr.to_string()),
            "advertised by default at the bound loopback address"
        );
        let client = reqwest::Client::new();
        let health = client
            .get(format!("http://{}/healthz", service.http_addr))
            .send()
            .await
            .expect("healthz answers");
        assert!(health.status().is_success(), "{}", health.status());
        let unauthorized = client
            .get(format!("http://{}/api/public/v1/agents", service.http_addr))
            .send()
            .await
            .expect("answers");
        assert_eq!(unauthorized.status().as_u16(), 401);
        let agents = client
            .get(format!("http://{}/api/public/v1/agents", service.http_addr))
            .bearer_auth("sk_test_http")
            .send()
            .await
            .expect("answers");
        assert_eq!(agents.status().as_u16(), 200);
        let http_addr = service.http_addr;
        service.shutdown().await.expect("stops");
        assert!(client
            .get(format!("http://{http_addr}/healthz"))
            .send()
            .await
            .is_err());
    }

    #[tokio::test]
    async fn configured_key_is_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = Service::start(config_in(&dir, Some("sk_test_fixed")))
            .await
            .expect("starts");
        assert_eq!(service.generated_api_key, None);
        assert!(service
            .store
            .org_for_key("sk_test_fixed")
            .await
            .expect("lookup")
            .is_some());
        service.shutdown().await.expect("stops");
    }

    /// Sends an out-of-dialog OPTIONS to `sip` and returns the answer.
    async fn probe(sip: std::net::SocketAddr, branch: &str) -> String {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let me = socket.local_addr().expect("bound");
        let options = format!(
            "OPTIONS sip:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:probe@{me}>;tag={branch}\r\nTo: <sip:{sip}>\r\n\
             Call-ID: {branch}@probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        socket.send_to(options.as_bytes(), sip).await.expect("sent");
        let mut buffer = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            socket.recv_from(&mut buffer),
        )
        .await
        .expect("answered")
        .expect("received");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }

    #[tokio::test]
    async fn a_drained_node_answers_its_probes_503_refuses_new_calls_and_drains_at_once_when_idle()
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = Service::start(config_in(&dir, Some("sk_test_boot")))
            .await
            .expect("starts");
        let other_key = service
            .store
            .create_key("tenant", 100)
            .await
            .expect("another organisation's key");
        let base = format!("http://{}/api/public/v1", service.http_addr);
        let client = reqwest::Client::new();
        assert!(probe(service.sip_addr, "up")
            .await
            .starts_with("SIP/2.0 200"));

        let drain = |key: &str| {
            client
                .post(format!("{base}/admin/drain"))
                .bearer_auth(key)
                .send()
        };
        let refused = drain(&other_key).await.expect("answers");
        assert_eq!(
            refused.status().as_u16(),
            403,
            "only the bootstrap organisation"
        );
        assert!(!service.engine.is_draining());
        assert!(probe(service.sip_addr, "still")
            .await
            .starts_with("SIP/2.0 200"));

        let requested = service.drain_requested();
        let accepted = drain("sk_test_boot").await.expect("answers");
        assert_eq!(accepted.status().as_u16(), 202);
        let body: serde_json::Value = accepted.json().await.expect("JSON");
        assert_eq!(body["data"]["status"], "draining");
        tokio::time::timeout(std::time::Duration::from_secs(1), requested)
            .await
            .expect("the service learns of the drain");

        let answer = probe(service.sip_addr, "drained").await;
        assert!(answer.starts_with("SIP/2.0 503"), "{answer}");
        assert!(answer.contains("Retry-After: "), "{answer}");
        let call = client
            .post(format!("{base}/calls"))
            .bearer_auth("sk_test_boot")
            .json(&serde_json::json!({"agent_id": "agt_x", "phone_number": "+14155550100"}))
            .send()
            .await
            .expect("answers");
        assert_eq!(call.status().as_u16(), 503);
        assert!(call.headers().contains_key("retry-after"));
        let body: serde_json::Value = call.json().await.expect("JSON");
        assert_eq!(body["error"]["code"], "unavailable");
        // Reads still work while draining.
        let agents = client
            .get(format!("{base}/agents"))
            .bearer_auth("sk_test_boot")
            .send()
            .await
            .expect("answers");
        assert_eq!(agents.status().as_u16(), 200);

        let left = service.drain(std::time::Duration::from_secs(5)).await;
        assert_eq!(left, 0, "no live call: the drain is over at once");
        service.shutdown().await.expect("stops");
    }
}
