//! Webhooks: signed event deliveries from a persisted outbox.
//!
//! [`Webhooks::emit`] writes one outbox row per subscribed webhook before it
//! returns (so an event the service has reported is never lost, even across
//! a restart) and wakes the dispatcher. The dispatcher task reads due rows
//! from the store, POSTs them, and marks them delivered (2xx), reschedules
//! them with exponential backoff, or gives up after the configured number
//! of attempts. Delivery is at least once: the event id in the body and the
//! `X-Dialcore-Delivery` header stay the same across retries, so receivers
//! can drop duplicates.
//!
//! Every request carries `X-Dialcore-Signature: v1=<hex>`, the HMAC-SHA256
//! of `"{timestamp}.{body}"` under the webhook's secret, with the timestamp
//! (unix seconds) in `X-Dialcore-Timestamp` ([`sign`]).
//!
//! The receiver's address is checked when the request connects
//! ([`crate::destinations`]): a URL whose host is, or resolves to, a loopback, private or
//! link-local address is refused unless `[security] allow_private_destinations` is set, and
//! the delivery is given up at once with the reason kept on it. Redirects are not followed
//! (a 3xx is a failed attempt) and no proxy from the environment is used, so the address
//! checked is the address the request goes to.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{watch, Notify};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::destinations::{DestinationError, DestinationPolicy};
use crate::ids::new_id;
use crate::redact::loggable_url;
use crate::store::{OutboxEntry, Store, StoreError};

/// Header naming the event type.
pub const HEADER_EVENT: &str = "X-Dialcore-Event";
/// Header carrying the outbox entry id (stable across retries).
pub const HEADER_DELIVERY: &str = "X-Dialcore-Delivery";
/// Header carrying the signing time in unix seconds.
pub const HEADER_TIMESTAMP: &str = "X-Dialcore-Timestamp";
/// Header carrying the signature.
pub const HEADER_SIGNATURE: &str = "X-Dialcore-Signature";

/// Longest delay between two attempts, whatever the attempt number.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Rows fetched per dispatcher round.
const BATCH: u64 = 64;
/// Deliveries in flight at once.
const MAX_IN_FLIGHT: usize = 32;

/// Errors of the webhooks module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The store failed.
    #[error("webhook store: {0}")]
    Store(#[from] StoreError),
    /// The HTTP client could not be built.
    #[error("webhook HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Settings of the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchConfig {
    /// Attempts before a delivery is given up.
    pub max_attempts: u32,
    /// Delay after the first failed attempt; doubles after each further one.
    pub base_delay: Duration,
    /// Timeout of one HTTP request.
    pub timeout: Duration,
    /// How often the outbox is polled when nothing wakes the dispatcher.
    pub poll_interval: Duration,
    /// Which receivers' addresses may be connected to.
    pub destinations: DestinationPolicy,
}

impl DispatchConfig {
    /// The settings of `config.webhooks`.
    pub fn from_config(config: &Config) -> Self {
        let base_delay = config.webhooks.base_delay();
        Self {
            max_attempts: config.webhooks.max_attempts.max(1),
            base_delay,
            timeout: config.webhooks.timeout(),
            poll_interval: (base_delay / 2)
                .clamp(Duration::from_millis(20), Duration::from_secs(1)),
            destinations: DestinationPolicy::from_config(config),
        }
    }
}

/// The webhook outbox and its dispatcher. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Who claims deliveries in the outbox: the node's id.
    claimant: String,
    wake: Notify,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Spawns the dispatcher on the current tokio runtime. Deliveries left
    /// pending by a previous run are picked up at once.
    pub fn start(store: Store, config: &Config) -> Webhooks {
        Self::start_claiming(
            store,
            DispatchConfig::from_config(config),
            config.node.id.clone(),
        )
    }

    /// [`Webhooks::start`] with explicit dispatcher settings (claiming deliveries under an
    /// id of its own).
    pub fn start_with(store: Store, dispatch: DispatchConfig) -> Webhooks {
        Self::start_claiming(store, dispatch, crate::ids::new_id("dispatcher"))
    }

    fn start_claiming(store: Store, dispatch: DispatchConfig, claimant: String) -> Webhooks {
        let (stop, stopped) = watch::channel(false);
        let inner = Arc::new(Inner {
            store,
            claimant,
            wake: Notify::new(),
            stop,
        });
        let client = reqwest::Client::builder()
            .timeout(dispatch.timeout)
            .user_agent(concat!("dialcore-webhooks/", env!("CARGO_PKG_VERSION")))
            // A redirect would send the request where no check was made (and turn the
            // POST into a GET); a proxy would resolve the receiver's name itself.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver(dispatch.destinations)))
            .build();
        match client {
            Ok(client) => {
                let dispatcher = Dispatcher {
                    inner: Arc::clone(&inner),
                    client,
                    config: dispatch,
                    in_flight: Arc::new(Mutex::new(HashSet::new())),
                };
                tokio::spawn(dispatcher.run(stopped));
            }
            Err(error) => warn!(%error, "webhook dispatcher not started: no HTTP client"),
        }
        Webhooks { inner }
    }

    /// Records `event` with `data` for every webhook of `org_id` subscribed
    /// to it (persisted before this returns) and wakes the dispatcher.
    /// Returns how many deliveries were queued.
    pub async fn emit(
        &self,
        org_id: &str,
        event: &str,
        data: serde_json::Value,
    ) -> Result<usize, WebhookError> {
        let hooks = self.inner.store.webhooks_for_event(org_id, event).await?;
        if hooks.is_empty() {
            return Ok(0);
        }
        let now = Utc::now();
        let body = envelope(&new_id("evt"), event, now, data);
        for hook in &hooks {
            let entry = OutboxEntry {
                id: new_id("dlv"),
                org_id: org_id.to_owned(),
                webhook_id: hook.id.clone(),
                event: event.to_owned(),
                payload: body.clone(),
                attempts: 0,
                next_attempt_at: now,
                created_at: now,
            };
            self.inner.store.enqueue_delivery(&entry).await?;
        }
        debug!(
            org_id,
            event,
            deliveries = hooks.len(),
            "webhook event queued"
        );
        self.inner.wake.notify_one();
        Ok(hooks.len())
    }

    /// [`Webhooks::emit`] of `object` that waits out a store that cannot serve now
    /// ([`crate::store::retry::patiently`]): what the service announces is not dropped
    /// because the database was slow. Other failures are logged.
    pub async fn emit_patiently<T: serde::Serialize>(&self, org_id: &str, event: &str, object: &T) {
        let data = match serde_json::to_value(object) {
            Ok(data) => data,
            Err(error) => {
                error!(%error, event, "webhook body not serializable; webhook not queued");
                return;
            }
        };
        let unavailable = |error: &WebhookError| matches!(error, WebhookError::Store(failure) if failure.is_unavailable());
        let queued = crate::store::retry::patiently("webhook event", unavailable, || {
            self.emit(org_id, event, data.clone())
        })
        .await;
        if let Err(error) = queued {
            error!(%error, event, "webhook not queued");
        }
    }

    /// Stops the dispatcher after its current round. Pending deliveries stay
    /// in the outbox for the next run.
    pub fn stop(&self) {
        let _ = self.inner.stop.send(true);
        self.inner.wake.notify_one();
    }
}

/// The JSON body of one event: `{"id", "type", "created_at", "data"}`.
pub fn envelope(
    event_id: &str,
    event: &str,
    created_at: DateTime<Utc>,
    data: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "id": event_id,
        "type": event,
        "created_at": created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    })
}

/// The `X-Dialcore-Signature` value for `body` sent at `timestamp` (unix
/// seconds): `v1=` and the hex HMAC-SHA256 of `"{timestamp}.{body}"`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature header as a receiver would (constant-time compare).
pub fn verify(secret: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(hex_mac) = header.trim().strip_prefix("v1=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_mac) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The delay before attempt `attempts + 1` after `attempts` failed ones
/// (`attempts >= 1`): `base * 2^(attempts - 1)`, at most [`MAX_BACKOFF`].
pub fn backoff(base: Duration, attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(31);
    base.checked_mul(1u32 << exponent)
        .map_or(MAX_BACKOFF, |delay| delay.min(MAX_BACKOFF))
}

/// What happened to one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    Delivered,
    Failed(String),
    /// The receiver's address is not allowed: retrying changes nothing.
    Refused(String),
}

/// Resolves receivers' names and keeps only the addresses the policy allows, so the
/// connection goes to a checked address (URLs with a literal IP skip resolvers: [`Delivery::post`]
/// checks those).
struct CheckedResolver(DestinationPolicy);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0;
        Box::pin(async move {
            // The port is the URL's: the connector sets it on each address.
            let addrs = policy.resolve(name.as_str(), 0).await?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The destination refusal somewhere in `error`'s sources, if that is why it failed.
fn refusal(error: &reqwest::Error) -> Option<&DestinationError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<DestinationError>() {
            return Some(refused);
        }
        source = current.source();
    }
    None
}

/// How much longer than one request's timeout a claim on a delivery lasts.
const CLAIM_SLACK: Duration = Duration::from_secs(30);

struct Dispatcher {
    inner: Arc<Inner>,
    client: reqwest::Client,
    config: DispatchConfig,
    in_flight: Arc<Mutex<HashSet<String>>>,
}

impl Dispatcher {
    async fn run(self, mut stopped: watch::Receiver<bool>) {
        info!("webhook dispatcher started");
        loop {
            if *stopped.borrow() {
                break;
            }
            if let Err(error) = self.round().await {
                warn!(%error, "webhook dispatcher round failed");
            }
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                _ = stopped.changed() => {}
            }
        }
        debug!("webhook dispatcher stopped");
    }

    /// Starts a delivery task for every due row not already in flight.
    async fn round(&self) -> Result<(), WebhookError> {
        let room = MAX_IN_FLIGHT.saturating_sub(self.lock_in_flight().len());
        if room == 0 {
            return Ok(());
        }
        let now = Utc::now();
        // Longer than an attempt takes: the claim ends when the attempt is recorded.
        let hold = self.config.timeout + CLAIM_SLACK;
        let due = self
            .inner
            .store
            .claim_due_deliveries(
                &self.inner.claimant,
                now,
                now + chrono::Duration::from_std(hold).unwrap_or(chrono::Duration::MAX),
                BATCH.min(room as u64),
            )
            .await?;
        for entry in due {
            if !self.lock_in_flight().insert(entry.id.clone()) {
                continue;
            }
            let task = Delivery {
                inner: Arc::clone(&self.inner),
                client: self.client.clone(),
                config: self.config,
                in_flight: Arc::clone(&self.in_flight),
            };
            tokio::spawn(task.deliver(entry));
        }
        Ok(())
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

struct Delivery {
    inner: Arc<Inner>,
    client: reqwest::Client,
    config: DispatchConfig,
    in_flight: Arc<Mutex<HashSet<String>>>,
}

impl Delivery {
    async fn deliver(self, entry: OutboxEntry) {
        let id = entry.id.clone();
        if let Err(error) = self.attempt(entry).await {
            warn!(delivery = %id, %error, "webhook bookkeeping failed; retried next round");
        }
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        // The row may be due again already (a zero base delay).
        self.inner.wake.notify_one();
    }

    async fn attempt(&self, entry: OutboxEntry) -> Result<(), WebhookError> {
        let store = &self.inner.store;
        let hook = match store.get_webhook_any(&entry.webhook_id).await {
            Ok(hook) => hook,
            Err(StoreError::NotFound) => {
                store.mark_dead(&entry.id, "webhook deleted").await?;
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        };
        let outcome = self.post(&hook.url, &hook.secret, &entry).await;
        let attempts = entry.attempts.saturating_add(1);
        match outcome {
            Attempt::Delivered => {
                debug!(delivery = %entry.id, event = %entry.event, attempts, "webhook delivered");
                store.mark_delivered(&entry.id).await?;
            }
            Attempt::Refused(error) => {
                warn!(delivery = %entry.id, webhook = %hook.id, %error, "webhook refused");
                store.mark_dead(&entry.id, &error).await?;
            }
            Attempt::Failed(error) if attempts >= self.config.max_attempts => {
                warn!(delivery = %entry.id, url = %loggable_url(&hook.url), attempts, %error,
                    "webhook given up");
                store.mark_dead(&entry.id, &error).await?;
            }
            Attempt::Failed(error) => {
                let delay = backoff(self.config.base_delay, attempts);
                let next =
                    Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                debug!(delivery = %entry.id, attempts, ?delay, %error, "webhook retry scheduled");
                store
                    .reschedule_delivery(&entry.id, attempts, next, &error)
                    .await?;
            }
        }
        Ok(())
    }

    async fn post(&self, url: &str, secret: &str, entry: &OutboxEntry) -> Attempt {
        let parsed = match reqwest::Url::parse(url) {
            Ok(parsed) => parsed,
            Err(error) => return Attempt::Failed(format!("invalid URL: {error}")),
        };
        // A literal IP is connected to without a resolver: checked here.
        if let Some(host) = parsed.host_str() {
            if let Err(refused) = self.config.destinations.check_literal(host) {
                return Attempt::Refused(refused.to_string());
            }
        }
        let body = match serde_json::to_vec(&entry.payload) {
            Ok(body) => body,
            Err(error) => return Attempt::Failed(format!("payload: {error}")),
        };
        let timestamp = Utc::now().timestamp();
        let signature = sign(secret, timestamp, &body);
        let response = self
            .client
            .post(parsed)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(HEADER_EVENT, &entry.event)
            .header(HEADER_DELIVERY, &entry.id)
            .header(HEADER_TIMESTAMP, timestamp.to_string())
            .header(HEADER_SIGNATURE, signature)
            .body(body)
            .send()
            .await;
        match response {
            Ok(response) if response.status().is_success() => Attempt::Delivered,
            Ok(response) => Attempt::Failed(format!("HTTP {}", response.status().as_u16())),
            Err(error) => match refusal(&error) {
                Some(refused) => Attempt::Refused(refused.to_string()),
                // reqwest's message names the URL, whose query may hold the receiver's token.
                None => Attempt::Failed(error.without_url().to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests;
