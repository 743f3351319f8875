//! The running service: opens the store, bootstraps the first API key, starts the webhook
//! dispatcher, the call engine (SIP and media) and the HTTP API, and stops them in order on
//! shutdown.
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

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::info;

use crate::api::{router, AppState};
use crate::config::Config;
use crate::engine::CallEngine;
use crate::store::Store;
use crate::webhooks::Webhooks;

/// Starts the service (see [`Service::start`]).
#[derive(Debug)]
pub struct Service;

/// A running service. Dropping it leaves its tasks running; call [`ServiceHandle::shutdown`].
pub struct ServiceHandle {
    /// The configuration it runs with.
    pub config: Arc<Config>,
    /// The store it writes to.
    pub store: Store,
    /// The webhook dispatcher.
    pub webhooks: Webhooks,
    /// The call engine (SIP user agent and media).
    pub engine: CallEngine,
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// Where the SIP listener is bound (UDP and TCP).
    pub sip_addr: SocketAddr,
    http_stop: oneshot::Sender<()>,
    http_task: JoinHandle<()>,
    /// The API key generated at bootstrap (only on a database that had none and with no
    /// `api.key` configured); it has been printed once.
    pub generated_api_key: Option<String>,
}

impl Service {
    /// Starts everything from `config`: creates the recordings directory, opens the store
    /// (running migrations), bootstraps organisation `default` and its key (printing a
    /// generated key once on stdout), and starts the webhook dispatcher, which picks up
    /// deliveries a previous run left pending.
    pub async fn start(config: Config) -> anyhow::Result<ServiceHandle> {
        let config = Arc::new(config);
        std::fs::create_dir_all(&config.recordings.dir).with_context(|| {
            format!(
                "cannot create the recordings directory {}",
                config.recordings.dir.display()
            )
        })?;
        let store = Store::open(&config.database.url)
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
        let engine = CallEngine::start(&config, store.clone(), webhooks.clone())
            .await
            .context("cannot start the call engine (SIP listener and media)")?;
        let sip_addr = engine.sip_addr();
        let state = AppState::new(
            store.clone(),
            engine.clone(),
            Arc::clone(&config),
            webhooks.clone(),
        );
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", config.http.listen))?;
        let http_addr = listener.local_addr().context("HTTP listener address")?;
        let (http_stop, stopped) = oneshot::channel::<()>();
        let app = router(state);
        let http_task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "HTTP server failed");
            }
        });
        info!(database = %config.database.url, http = %http_addr, sip = %sip_addr, "service started");
        Ok(ServiceHandle {
            config,
            store,
            webhooks,
            engine,
            http_addr,
            sip_addr,
            http_stop,
            http_task,
            generated_api_key,
        })
    }
}

impl ServiceHandle {
    /// Stops the service: the HTTP API stops taking requests, live calls are hung up and
    /// recorded as such, the webhook dispatcher stops after its current round (pending
    /// deliveries stay in the outbox for the next run) and the store is closed once its
    /// running queries finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.http_stop.send(());
        let _ = self.http_task.await;
        // Live calls are hung up and their records written before anything else stops.
        self.engine.shutdown().await;
        self.webhooks.stop();
        self.store.close().await;
        info!("service stopped");
        Ok(())
    }
}

impl std::fmt::Debug for ServiceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceHandle")
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
}
