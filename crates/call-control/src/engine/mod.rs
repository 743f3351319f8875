//! The call engine: outbound and inbound calls over the SIP user agent,
//! media over the media engine, one task per call.
//!
//! ```text
//!  API ──place_call/hangup──▶ CallEngine ──spawn──▶ call task (lifecycle, SIP leg, timers)
//!                                │                        │            │
//!                     inbound ◀──┤ UserAgent               │ persister  │ bridge task
//!                                │                        ▼            ▼
//!                                └─ live calls (dashmap)  store+webhooks  media stream <-> agent runtime
//! ```
//!
//! Each call's task owns its state; the API reaches it over a channel kept
//! in the live-call registry. The task drives the sans-IO [`lifecycle`]
//! with SIP events, commands, bridge reports and its one timer; its
//! records go through a per-call writer (persisted, then reported); its
//! audio runs in a separate bridge task that never waits on the database
//! ([`bot_loopback::bridge`], shared with the test bot).

pub mod call;
pub mod inbound;
pub mod lifecycle;
pub mod negotiate;
pub mod persist;
pub mod rejections;
pub mod test_route;
pub mod transcript;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use dashmap::DashMap;
use media::record::{RecordError, RecordingWriter};
use media::stream::{EngineConfig, EngineError as MediaError, MediaEngine, OpenOptions};
use sip_stack::auth::Credentials;
use sip_stack::message::TransportKind;
use sip_stack::sdp::{build_offer, Direction};
use sip_stack::transport::TransportConfig;
use sip_stack::ua::{OutgoingCall, UaConfig, UaError, UserAgent};
use tokio::sync::{mpsc, Notify};
use tracing::{info, warn, Instrument};

use self::call::{CallCommand, CallTask};
use self::lifecycle::Requester;
use self::rejections::RejectionLog;
use self::test_route::{TestRoute, TestRoutes};
use crate::config::Config;
use crate::model::{events, Agent, Call, CallOutcome, CallStatus, Trunk, TrunkTransport};
use crate::runtime::{BuiltinRuntimes, RuntimeFactory};
use crate::store::{Store, StoreError};
use crate::webhooks::Webhooks;

/// How long shutdown waits for live calls to end and be recorded.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Errors of the call engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The SIP user agent failed.
    #[error("SIP: {0}")]
    Sip(#[from] UaError),
    /// The media engine failed.
    #[error("media: {0}")]
    Media(#[from] MediaError),
    /// The recording writer failed.
    #[error("recording: {0}")]
    Recording(#[from] RecordError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The recordings directory could not be created.
    #[error("recordings directory {path}: {source}")]
    RecordingsDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The negotiated codec has no media implementation.
    #[error("unsupported codec {0}")]
    UnsupportedCodec(String),
    /// A payload type outside 0-127.
    #[error("invalid RTP payload type {0}")]
    InvalidPayloadType(u8),
    /// The call is already live.
    #[error("call {0} is already live")]
    AlreadyLive(String),
    /// The engine is shutting down and takes no new calls.
    #[error("the call engine is shutting down")]
    ShuttingDown,
}

/// State shared by the engine and its call tasks.
pub struct Shared {
    store: Store,
    webhooks: Webhooks,
    media: MediaEngine,
    recordings: Option<RecordingWriter>,
    recordings_dir: PathBuf,
    runtimes: Arc<dyn RuntimeFactory>,
    live: DashMap<String, mpsc::UnboundedSender<CallCommand>>,
    left: Notify,
    shutting_down: AtomicBool,
    sdp_ip: IpAddr,
    inactivity_timeout: Option<Duration>,
    per_minute_cents: i64,
    test_routes: TestRoutes,
    rejections: RejectionLog,
}

impl Shared {
    fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Adds a live call; `None` when it is live already or the engine stops.
    fn register(&self, call_id: &str) -> Option<mpsc::UnboundedReceiver<CallCommand>> {
        if self.is_shutting_down() {
            return None;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        match self.live.entry(call_id.to_owned()) {
            dashmap::Entry::Occupied(_) => None,
            dashmap::Entry::Vacant(slot) => {
                slot.insert(tx);
                Some(rx)
            }
        }
    }

    fn unregister(&self, call_id: &str) {
        self.live.remove(call_id);
        self.left.notify_waiters();
    }
}

/// The call engine. Cheap to clone.
#[derive(Clone)]
pub struct CallEngine {
    shared: Arc<Shared>,
    ua: UserAgent,
    sip_addr: SocketAddr,
}

impl std::fmt::Debug for CallEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallEngine")
            .field("sip_addr", &self.sip_addr)
            .field("live_calls", &self.shared.live.len())
            .finish_non_exhaustive()
    }
}

impl CallEngine {
    /// Starts the SIP user agent on `config.sip.listen` (UDP and TCP), the
    /// media engine on the RTP port range, the recording writer and the
    /// inbound call loop, after recording calls a previous run left
    /// unfinished as failed/ended with reason `service_restart`.
    pub async fn start(
        config: &Config,
        store: Store,
        webhooks: Webhooks,
    ) -> Result<CallEngine, EngineError> {
        let runtimes = Arc::new(BuiltinRuntimes::from_config(config));
        Self::start_with(config, store, webhooks, runtimes).await
    }

    /// [`CallEngine::start`] with other agent runtimes (the WebSocket
    /// runtime, the test bot) behind `runtimes`.
    pub async fn start_with(
        config: &Config,
        store: Store,
        webhooks: Webhooks,
        runtimes: Arc<dyn RuntimeFactory>,
    ) -> Result<CallEngine, EngineError> {
        recover(&store, &webhooks).await?;
        let dir = config.recordings.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| EngineError::RecordingsDir {
            path: dir.clone(),
            source,
        })?;
        let listen = config.sip.listen;
        let ua_config = UaConfig {
            transport: TransportConfig {
                udp: Some(listen),
                tcp: Some(listen),
                ..TransportConfig::default()
            },
            public_ip: config.sip.public_ip,
            ..UaConfig::default()
        };
        let (ua, incoming) = UserAgent::start(ua_config).await?;
        let sip_addr = ua
            .local_addr(TransportKind::Udp)
            .or_else(|| ua.local_addr(TransportKind::Tcp))
            .unwrap_or(listen);
        let media = MediaEngine::start(EngineConfig {
            bind_ip: listen.ip(),
            port_min: config.rtp.port_min,
            port_max: config.rtp.port_max,
            ..EngineConfig::default()
        })?;
        let sdp_ip = config
            .sip
            .public_ip
            .unwrap_or(if listen.ip().is_unspecified() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                listen.ip()
            });
        let inactivity = config.rtp.inactivity_timeout();
        let shared = Arc::new(Shared {
            store,
            webhooks,
            media,
            recordings: Some(RecordingWriter::spawn()?),
            recordings_dir: dir,
            runtimes,
            live: DashMap::new(),
            left: Notify::new(),
            shutting_down: AtomicBool::new(false),
            sdp_ip,
            inactivity_timeout: (!inactivity.is_zero()).then_some(inactivity),
            per_minute_cents: config.credits.per_minute_cents,
            test_routes: TestRoutes::default(),
            rejections: RejectionLog::default(),
        });
        tokio::spawn(inbound::accept_loop(Arc::clone(&shared), incoming));
        info!(%sip_addr, "call engine started");
        Ok(CallEngine {
            shared,
            ua,
            sip_addr,
        })
    }

    /// Places an outbound call already stored `queued`: the engine takes it
    /// from there (INVITE through `trunk`, statuses, timers, teardown).
    /// Returns once the call's task is started.
    pub async fn place_call(
        &self,
        call: Call,
        agent: Agent,
        trunk: Trunk,
    ) -> Result<(), EngineError> {
        if self.shared.is_shutting_down() {
            return Err(EngineError::ShuttingDown);
        }
        let call_id = call.id.clone();
        let commands = self
            .shared
            .register(&call_id)
            .ok_or_else(|| EngineError::AlreadyLive(call_id.clone()))?;
        let shared = Arc::clone(&self.shared);
        let ua = self.ua.clone();
        let span = tracing::info_span!("call", call_id = %call_id, direction = "outbound");
        tokio::spawn(
            async move {
                run_outbound(&shared, ua, call, agent, trunk, commands).await;
                shared.unregister(&call_id);
            }
            .instrument(span),
        );
        Ok(())
    }

    /// Registers a single-use inbound route for a test call: the next
    /// INVITE whose Request-URI user is `token` (see
    /// [`test_route::new_token`]) is answered for `route.agent_id` through
    /// the normal inbound path (answer, media, agent runtime, recording),
    /// without the trunk checks that other INVITEs pass. The receiver gets
    /// the agent leg's call id once its record is stored, or an error when
    /// no INVITE came within `ttl` (the route is then gone: the token is an
    /// unknown number again).
    pub fn expect_test_call(
        &self,
        token: String,
        route: TestRoute,
        ttl: Duration,
    ) -> tokio::sync::oneshot::Receiver<String> {
        self.shared.test_routes.expect(token, route, ttl)
    }

    /// The factory of agent runtimes the engine's calls use (the test
    /// runner's `bot` mode joins the same runtimes in-process).
    pub fn runtimes(&self) -> Arc<dyn RuntimeFactory> {
        Arc::clone(&self.shared.runtimes)
    }

    /// Hangs up a live call: cancels it when not answered yet (`cancelled`),
    /// sends BYE when answered (`ended`/`agent_hangup`). False when the call
    /// is not live.
    pub fn hangup(&self, call_id: &str) -> bool {
        match self.shared.live.get(call_id) {
            Some(commands) => commands.send(CallCommand::Hangup(Requester::Api)).is_ok(),
            None => false,
        }
    }

    /// Calls in progress.
    pub fn live_calls(&self) -> usize {
        self.shared.live.len()
    }

    /// Waits until no call is live (without hanging any up): every call
    /// that was live has ended and its last record is written.
    pub async fn wait_idle(&self) {
        loop {
            let left = self.shared.left.notified();
            if self.shared.live.is_empty() {
                return;
            }
            left.await;
        }
    }

    /// Waits until call `call_id` is no longer live: it has ended and its
    /// last record is written. Returns at once for a call that is not live.
    pub async fn wait_call_ended(&self, call_id: &str) {
        loop {
            let left = self.shared.left.notified();
            if !self.shared.live.contains_key(call_id) {
                return;
            }
            left.await;
        }
    }

    /// The bound SIP address (UDP; TCP listens on the same port).
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip_addr
    }

    /// Stops taking calls, hangs up every live call, and returns once their
    /// records are written (or after a grace period), then stops SIP.
    pub fn shutdown(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let shared = Arc::clone(&self.shared);
        let ua = self.ua.clone();
        async move {
            shared.shutting_down.store(true, Ordering::Release);
            let live: Vec<_> = shared.live.iter().map(|e| e.value().clone()).collect();
            info!(live = live.len(), "call engine shutting down");
            for commands in live {
                let _ = commands.send(CallCommand::Hangup(Requester::Shutdown));
            }
            let drained = async {
                loop {
                    let left = shared.left.notified();
                    if shared.live.is_empty() {
                        break;
                    }
                    left.await;
                }
            };
            if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
                warn!(
                    live = shared.live.len(),
                    "calls still live after the shutdown grace"
                );
            }
            ua.shutdown(Duration::from_secs(2)).await;
        }
    }
}

/// Sends the INVITE and runs the call to its end.
async fn run_outbound(
    shared: &Arc<Shared>,
    ua: UserAgent,
    call: Call,
    agent: Agent,
    trunk: Trunk,
    commands: mpsc::UnboundedReceiver<CallCommand>,
) {
    let host_ip = trunk.host.parse::<std::net::IpAddr>().ok();
    let media_networks = negotiate::media_networks(&trunk.allowed_networks, host_ip);
    let stream = match shared.media.open(
        negotiate::provisional_config(&media_networks),
        OpenOptions::default(),
    ) {
        Ok(stream) => stream,
        Err(error) => {
            warn!(%error, "no RTP port for the call");
            return fail_unsent(shared, call, "media_unavailable", None).await;
        }
    };
    let session_id = u64::from(rand::random::<u32>());
    let offer = build_offer(
        shared.sdp_ip,
        stream.local_addr().port(),
        &negotiate::offered_codecs(),
        Direction::SendRecv,
        session_id,
        1,
    );
    let outgoing = match outgoing_call(&call, &trunk).await {
        Ok(outgoing) => outgoing.with_sdp(offer.to_string()),
        Err(error) => {
            warn!(%error, trunk = %trunk.id, "trunk unreachable");
            let _ = stream.close().await;
            return fail_unsent(shared, call, "trunk_unreachable", Some(error.to_string())).await;
        }
    };
    let sip = match ua.invite(outgoing).await {
        Ok(sip) => sip,
        Err(error) => {
            warn!(%error, "INVITE not sent");
            let _ = stream.close().await;
            return fail_unsent(shared, call, "sip_unavailable", Some(error.to_string())).await;
        }
    };
    // In-dialog requests may come from the trunk's networks too, nowhere else.
    sip.trust_sources(media_networks.clone());
    info!(to = %call.phone_number, from = %call.from_number, trunk = %trunk.id, "INVITE sent");
    let mut task = CallTask::new(Arc::clone(shared), call, agent, sip, commands);
    task.invite_sent(offer, stream, media_networks);
    task.run().await;
}

/// The INVITE of `call` through `trunk`: Request-URI `sip:+E164@host:port`,
/// From the caller id, digest credentials when the trunk has them.
pub async fn outgoing_call(call: &Call, trunk: &Trunk) -> Result<OutgoingCall, UaError> {
    let host = if trunk.host.contains(':') && !trunk.host.starts_with('[') {
        format!("[{}]", trunk.host)
    } else {
        trunk.host.clone()
    };
    let transport = match trunk.transport {
        TrunkTransport::Udp => "",
        TrunkTransport::Tcp => ";transport=tcp",
    };
    let target = format!("sip:{}@{host}:{}{transport}", call.phone_number, trunk.port);
    let from = format!("sip:{}@{host}", call.from_number);
    let mut outgoing = OutgoingCall::to(&target, &from).await?;
    if let Some(username) = trunk.username.as_ref().filter(|u| !u.is_empty()) {
        outgoing = outgoing.with_credentials(Credentials {
            username: username.clone(),
            password: trunk.password.clone().unwrap_or_default(),
        });
    }
    Ok(outgoing)
}

/// Records a call that failed before its INVITE went out, with what went
/// wrong in `detail` (the record's `error_message`).
async fn fail_unsent(
    shared: &Arc<Shared>,
    call: Call,
    reason: &'static str,
    detail: Option<String>,
) {
    let now = Utc::now();
    let mut call = call;
    call.status = CallStatus::Failed;
    call.outcome = Some(CallOutcome::Error);
    call.end_reason = Some(reason.to_owned());
    call.error_message = detail;
    call.ended_at = Some(now);
    call.duration_seconds = Some(0.0);
    if let Err(error) = shared.store.update_call(&call).await {
        warn!(%error, "failed call not recorded");
        return;
    }
    if let Ok(data) = serde_json::to_value(&call) {
        if let Err(error) = shared
            .webhooks
            .emit(&call.org_id, events::CALL_ENDED, data)
            .await
        {
            warn!(%error, "call.ended not queued");
        }
    }
}

/// Records every call a previous run left unfinished as over (`ended` when
/// it had been answered, else `failed`), outcome `error`, reason
/// `service_restart`, and reports it. A call whose end was already decided
/// (a CANCEL of ours was out) keeps that end and only gets its `ended_at`.
async fn recover(store: &Store, webhooks: &Webhooks) -> Result<(), EngineError> {
    let unfinished = store.unfinished_calls().await?;
    if !unfinished.is_empty() {
        info!(
            calls = unfinished.len(),
            "recording calls left unfinished by the last run"
        );
    }
    for mut call in unfinished {
        let now = Utc::now();
        if !call.status.is_terminal() {
            call.status = if call.answered_at.is_some() {
                CallStatus::Ended
            } else {
                CallStatus::Failed
            };
            call.outcome = Some(CallOutcome::Error);
            call.end_reason = Some("service_restart".to_owned());
        }
        call.ended_at = Some(now);
        call.duration_seconds = Some(call.answered_at.map_or(0.0, |at| {
            (now - at).num_milliseconds().max(0) as f64 / 1000.0
        }));
        store.update_call(&call).await?;
        if let Ok(data) = serde_json::to_value(&call) {
            if let Err(error) = webhooks.emit(&call.org_id, events::CALL_ENDED, data).await {
                warn!(call_id = %call.id, %error, "call.ended not queued");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
