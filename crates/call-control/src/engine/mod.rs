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
//! ([`agent_bridge::bridge`], shared with the test bot).

pub mod admission;
pub mod billing;
pub mod call;
pub mod inbound;
pub mod lifecycle;
pub mod negotiate;
pub mod persist;
pub mod recovery;
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

use self::billing::Pricing;
use self::call::{CallCommand, CallTask};
use self::lifecycle::Requester;
use self::rejections::RejectionLog;
use self::test_route::{TestRoute, TestRoutes};
use crate::config::{Config, OutboundProxy};
use crate::destinations::{DestinationError, DestinationPolicy};
use crate::model::{events, Agent, Call, CallOutcome, CallStatus, Trunk, TrunkTransport};
use crate::runtime::{BuiltinRuntimes, RuntimeFactory};
use crate::store::{Store, StoreError};
use crate::webhooks::Webhooks;

/// How often the trunk networks exempt from the SIP TCP per-source cap are read again
/// (another node may have changed a trunk; this node's own API refreshes at once).
const TRUNK_NETWORKS_REFRESH: Duration = Duration::from_secs(30);

/// Trunk networks broader than these prefixes stay under the per-source TCP cap: a tenant
/// that allows `0.0.0.0/0` must not lift the cap for every sender of the service.
const EXEMPT_MIN_PREFIX_V4: u8 = 16;
const EXEMPT_MIN_PREFIX_V6: u8 = 32;

/// The user agent's digest identity for trunks with `inbound_auth`: realm `dialcore`, a
/// random nonce secret per process (a caller answers the node that challenged it: Kamailio's
/// dispatcher keeps a Call-ID on one node), `[sip] digest_algorithms` in order.
fn digest_config(config: &Config) -> sip_stack::auth::DigestServerConfig {
    let mut digest = sip_stack::ua::default_digest_config();
    let mut algorithms = config.sip.digest_algorithms.iter().copied();
    if let Some(first) = algorithms.next() {
        digest.algorithm = first;
        digest.alternatives = algorithms.collect();
    }
    digest
}

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
    /// The node drains ([`CallEngine::drain`]) and takes no new calls.
    #[error("the node is draining and takes no new calls")]
    Draining,
    /// The node runs its most calls (`[node] max_calls`) and takes no more until one ends.
    #[error("the node runs its most calls ({limit}, [node] max_calls) and takes no more now")]
    AtCapacity {
        /// `[node] max_calls`.
        limit: u32,
    },
    /// A trunk's host did not resolve to an address the service may call.
    #[error("trunk host: {0}")]
    Destination(#[from] DestinationError),
    /// `[sip] outbound_proxy` did not resolve.
    #[error("outbound proxy {proxy}: {source}")]
    OutboundProxy {
        /// The proxy as configured.
        proxy: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// State shared by the engine and its call tasks.
pub struct Shared {
    /// `[node] id`: recorded on the calls this node runs.
    node_id: String,
    store: Store,
    webhooks: Webhooks,
    /// Writes the records of all calls, in batches, each before its webhook.
    persister: persist::Persister,
    /// Admits inbound calls from memory (kept by the persister).
    ledger: Arc<admission::Ledger>,
    media: MediaEngine,
    recordings: Option<RecordingWriter>,
    recordings_dir: PathBuf,
    runtimes: Arc<dyn RuntimeFactory>,
    live: DashMap<String, mpsc::UnboundedSender<CallCommand>>,
    left: Notify,
    shutting_down: AtomicBool,
    /// Wakes the trunk-network refresher at shutdown, so it lets go of the engine at once.
    stopping: Notify,
    /// Stops following other nodes' directory changes at shutdown.
    stop_following: Arc<Notify>,
    /// Inbound calls admitted since the start (`dialcore_calls_created_total`).
    inbound_created: std::sync::atomic::AtomicU64,
    /// Whether the node drains ([`CallEngine::drain`]): it takes no new calls.
    draining: tokio::sync::watch::Sender<bool>,
    sdp_ip: IpAddr,
    inactivity_timeout: Option<Duration>,
    per_minute_cents: i64,
    max_live_calls: Option<u32>,
    /// The node's slots for live calls (`[node] max_calls`).
    capacity: Arc<admission::NodeCapacity>,
    /// Where INVITEs to tenants' trunks go first (`[sip] outbound_proxy`).
    outbound_proxy: Option<OutboundProxy>,
    test_routes: TestRoutes,
    rejections: RejectionLog,
    destinations: DestinationPolicy,
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
        let dir = config.recordings.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| EngineError::RecordingsDir {
            path: dir.clone(),
            source,
        })?;
        recovery::recover(
            &store,
            &webhooks,
            &dir,
            config.credits.per_minute_cents,
            &config.node.id,
        )
        .await?;
        let listen = config.sip.listen;
        let ua_config = UaConfig {
            transport: TransportConfig {
                udp: Some(listen),
                tcp: Some(listen),
                ..TransportConfig::default()
            },
            public_ip: config.sip.public_ip,
            digest: digest_config(config),
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
        if let Err(error) = store.load_directory().await {
            warn!(%error, "routing directory not loaded: routing reads the database");
        }
        let ledger = Arc::<admission::Ledger>::default();
        let persister =
            persist::Persister::spawn(store.clone(), webhooks.clone(), Arc::clone(&ledger));
        let shared = Arc::new(Shared {
            node_id: config.node.id.clone(),
            store,
            webhooks,
            persister,
            ledger,
            media,
            recordings: Some(RecordingWriter::spawn()?),
            recordings_dir: dir,
            runtimes,
            live: DashMap::new(),
            left: Notify::new(),
            shutting_down: AtomicBool::new(false),
            stopping: Notify::new(),
            stop_following: Arc::new(Notify::new()),
            inbound_created: Default::default(),
            draining: tokio::sync::watch::Sender::new(false),
            sdp_ip,
            inactivity_timeout: (!inactivity.is_zero()).then_some(inactivity),
            per_minute_cents: config.credits.per_minute_cents,
            max_live_calls: max_live_calls(config),
            capacity: admission::NodeCapacity::new(config.node.call_limit()),
            outbound_proxy: config.sip.outbound_proxy.clone(),
            test_routes: TestRoutes::default(),
            rejections: RejectionLog::default(),
            destinations: DestinationPolicy::from_config(config),
        });
        tokio::spawn(inbound::accept_loop(Arc::clone(&shared), incoming));
        tokio::spawn(billing::heartbeat_loop(Arc::downgrade(&shared)));
        // Other nodes' writes of trunks, numbers and agents (PostgreSQL only).
        let following = shared.store.clone();
        let url = config.database.url.clone();
        let stop = Arc::clone(&shared.stop_following);
        tokio::spawn(async move {
            following
                .follow_directory_changes(&url, async move { stop.notified().await })
                .await;
        });
        info!(%sip_addr, "call engine started");
        let engine = CallEngine {
            shared,
            ua,
            sip_addr,
        };
        let refresher = engine.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TRUNK_NETWORKS_REFRESH);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = refresher.shared.stopping.notified() => return,
                }
                if refresher.shared.is_shutting_down() {
                    return;
                }
                if let Err(error) = refresher.refresh_trunk_networks().await {
                    warn!(%error, "trunk networks not refreshed");
                }
                // Writes through this process reload it at once; this picks up the
                // writes of other processes on the same database.
                if let Err(error) = refresher.shared.store.load_directory().await {
                    warn!(%error, "routing directory not reloaded");
                }
            }
        });
        Ok(engine)
    }

    /// Tells the SIP transport which networks are trunks' (every organisation's
    /// `allowed_networks` of /16 or narrower, IPv6 /32): a carrier's SBC may open many TCP
    /// connections from one address, so those are not held to the per-source cap. Done
    /// at start, every 30 s (for trunks other nodes changed), and by the API
    /// whenever a trunk is written or deleted. Returns the networks now exempt.
    pub async fn refresh_trunk_networks(&self) -> Result<Vec<inbound::IpNet>, StoreError> {
        let trunks = self.shared.store.all_trunks().await?;
        let mut networks: Vec<inbound::IpNet> = trunks
            .iter()
            .flat_map(|trunk| inbound::parse_networks(&trunk.allowed_networks))
            .filter(|network| match network {
                inbound::IpNet::V4(v4) => v4.prefix_len() >= EXEMPT_MIN_PREFIX_V4,
                inbound::IpNet::V6(v6) => v6.prefix_len() >= EXEMPT_MIN_PREFIX_V6,
            })
            .collect();
        networks.sort();
        networks.dedup();
        self.ua.set_tcp_exempt_networks(networks.clone());
        Ok(networks)
    }

    /// Places an outbound call already stored `queued`: the engine takes it
    /// from there (INVITE through `trunk`, statuses, timers, teardown).
    /// Returns once the call's task is started. The trunk's host is called
    /// only at an address `[security] allow_private_destinations` allows,
    /// checked when the INVITE is built. With `[sip] outbound_proxy` the INVITE is
    /// sent to the proxy, routed on to the trunk ([`outgoing_call`]).
    pub async fn place_call(
        &self,
        call: Call,
        agent: Agent,
        trunk: Trunk,
    ) -> Result<(), EngineError> {
        let route = Route {
            trunk,
            destinations: self.shared.destinations,
            pricing: Pricing::PerMinute,
            proxy: self.shared.outbound_proxy.clone(),
        };
        self.spawn_outbound(call, agent, route).await
    }

    /// [`CallEngine::place_call`] through a trunk the service itself made towards
    /// its own test bot (a loopback address, whatever the destination policy):
    /// never a trunk a tenant named. Sent straight to the bot, never through `[sip]
    /// outbound_proxy`: the bot listens on this node.
    pub async fn place_call_to_test_bot(
        &self,
        call: Call,
        agent: Agent,
        bot_trunk: Trunk,
    ) -> Result<(), EngineError> {
        let route = Route {
            trunk: bot_trunk,
            destinations: DestinationPolicy::new(true),
            pricing: Pricing::TestRun,
            proxy: None,
        };
        self.spawn_outbound(call, agent, route).await
    }

    async fn spawn_outbound(
        &self,
        call: Call,
        agent: Agent,
        route: Route,
    ) -> Result<(), EngineError> {
        if self.shared.is_shutting_down() {
            return Err(EngineError::ShuttingDown);
        }
        if self.is_draining() {
            return Err(EngineError::Draining);
        }
        // Held by the call's task until it ends.
        let slot = self
            .shared
            .capacity
            .try_take()
            .map_err(|full| EngineError::AtCapacity { limit: full.limit })?;
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
                // Boxed: what dialling needs is gone once the call runs; awaited
                // inline, it would keep its room in the call's task for the whole call.
                let dialled = Box::pin(dial_outbound(&shared, ua, call, agent, route, commands));
                if let Some(task) = dialled.await {
                    task.run().await;
                }
                shared.unregister(&call_id);
                drop(slot);
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

    /// Tells the admission ledger of an outbound call the API admitted in the database
    /// ([`admission::Ledger::admitted_by_api`]).
    pub fn admitted_by_api(&self, org_id: &str, reserve_cents: i64) {
        self.shared.ledger.admitted_by_api(org_id, reserve_cents);
    }

    /// Inbound calls admitted since the engine started.
    pub fn inbound_calls_created(&self) -> u64 {
        self.shared.inbound_created.load(Ordering::Relaxed)
    }

    /// Calls in progress.
    pub fn live_calls(&self) -> usize {
        self.shared.live.len()
    }

    /// Whether the node runs its most calls (`[node] max_calls`): a new call would be
    /// refused ([`EngineError::AtCapacity`], SIP 503 inbound).
    pub fn is_at_capacity(&self) -> bool {
        self.shared.capacity.is_full()
    }

    /// Starts draining the node: new INVITEs and the OPTIONS probes of a load balancer are
    /// answered 503 with `Retry-After` (so the dispatcher sends calls to other nodes), new
    /// outbound calls and test calls are refused ([`EngineError::Draining`]), and the calls
    /// already live go on. The service then waits for them (up to `[node]
    /// drain_timeout`) before it shuts down. Idempotent.
    pub fn drain(&self) {
        if !self.shared.draining.send_replace(true) {
            info!(live = self.live_calls(), "draining: no new calls");
            self.ua.set_draining(Some(inbound::RETRY_AFTER));
        }
    }

    /// Whether [`CallEngine::drain`] was called.
    pub fn is_draining(&self) -> bool {
        *self.shared.draining.borrow()
    }

    /// Resolves once the node drains (at once if it does already).
    pub fn drain_started(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut draining = self.shared.draining.subscribe();
        async move {
            // The sender lives in `Shared`, which outlives this wait only while the
            // engine does; an engine gone ends the wait too.
            let _ = draining.wait_for(|draining| *draining).await;
        }
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
            // A permit is kept if the refresher is busy refreshing: it stops on its next wait.
            shared.stopping.notify_one();
            shared.stop_following.notify_one();
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

/// Where an outbound call goes, and who charges it.
struct Route {
    trunk: Trunk,
    destinations: DestinationPolicy,
    pricing: Pricing,
    /// The next hop of the INVITE when it is not the trunk.
    proxy: Option<OutboundProxy>,
}

/// Opens the call's media and sends its INVITE: the call, ready to run (`None`: it
/// failed before anything was sent, and its record says why).
async fn dial_outbound(
    shared: &Arc<Shared>,
    ua: UserAgent,
    call: Call,
    agent: Agent,
    route: Route,
    commands: mpsc::UnboundedReceiver<CallCommand>,
) -> Option<CallTask> {
    let Route {
        trunk,
        destinations,
        pricing,
        proxy,
    } = route;
    let host_ip = trunk.host.parse::<std::net::IpAddr>().ok();
    let media_networks = negotiate::media_networks(&trunk.allowed_networks, host_ip);
    let stream = match shared.media.open(
        negotiate::provisional_config(&media_networks),
        OpenOptions::hooked(),
    ) {
        Ok(stream) => stream,
        Err(error) => {
            warn!(%error, "no RTP port for the call");
            fail_unsent(shared, call, "media_unavailable", None).await;
            return None;
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
    let outgoing = match outgoing_call(&call, &trunk, destinations, proxy.as_ref()).await {
        Ok(outgoing) => outgoing.with_sdp(offer.to_string()),
        Err(error) => {
            let reason = match error {
                EngineError::Destination(DestinationError::Refused { .. }) => {
                    "trunk_destination_refused"
                }
                EngineError::OutboundProxy { .. } => "outbound_proxy_unreachable",
                _ => "trunk_unreachable",
            };
            warn!(%error, trunk = %trunk.id, reason, "INVITE not sent");
            let _ = stream.close().await;
            fail_unsent(shared, call, reason, Some(error.to_string())).await;
            return None;
        }
    };
    let sip = match ua.invite(outgoing).await {
        Ok(sip) => sip,
        Err(error) => {
            warn!(%error, "INVITE not sent");
            let _ = stream.close().await;
            fail_unsent(shared, call, "sip_unavailable", Some(error.to_string())).await;
            return None;
        }
    };
    // In-dialog requests may come from the trunk's networks too, nowhere else.
    sip.trust_sources(media_networks.clone());
    info!(to = %call.phone_number, from = %call.from_number, trunk = %trunk.id, "INVITE sent");
    let mut task = CallTask::new(Arc::clone(shared), call, agent, sip, commands);
    if pricing == Pricing::TestRun {
        task.priced_by_test_run();
    }
    task.invite_sent(offer, stream, media_networks);
    Some(task)
}

/// The INVITE of `call` through `trunk`: Request-URI `sip:+E164@host:port`,
/// From the caller id, digest credentials when the trunk has them. The host is
/// resolved here and sent to only at an address `destinations` allows (checked
/// when the call is placed, so a name that now resolves to loopback is refused).
///
/// With a `proxy` (`[sip] outbound_proxy`, an SBC such as Kamailio) the INVITE is sent
/// to the proxy instead, over its transport, with `Route: <sip:proxy;lr>` (RFC 3261
/// 16.12 loose routing): the Request-URI stays the trunk's, so the proxy relays it there.
/// The trunk's host is still resolved and checked, as the proxy will reach it. CANCEL and
/// the ACK of a failure go the same way with the same Route (RFC 3261 9.1, 17.1.1.3), and
/// so do the dialog's requests, with the route set of the proxy's Record-Route.
pub async fn outgoing_call(
    call: &Call,
    trunk: &Trunk,
    destinations: DestinationPolicy,
    proxy: Option<&OutboundProxy>,
) -> Result<OutgoingCall, EngineError> {
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
    let addrs = destinations.resolve(&trunk.host, trunk.port).await?;
    let addr = addrs
        .into_iter()
        .next()
        .expect("resolve returns at least one address or an error");
    let mut outgoing = OutgoingCall::to_addr(&target, &from, addr)?;
    if let Some(proxy) = proxy {
        let proxy_addr = proxy
            .resolve()
            .await
            .map_err(|source| EngineError::OutboundProxy {
                proxy: proxy.to_string(),
                source,
            })?;
        outgoing = outgoing.via(proxy.transport, proxy_addr);
        outgoing
            .extra_headers
            .push(("Route".to_owned(), format!("<{}>", proxy.route_uri())));
    }
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
    // Nothing was used: the reservation goes back whole.
    if let Err(error) = shared.store.finish_call(&call, 0).await {
        warn!(%error, "failed call not recorded");
        return;
    }
    shared
        .webhooks
        .emit_patiently(&call.org_id, events::CALL_ENDED, &call)
        .await;
}

/// The per-organisation cap on live calls (`[api] max_concurrent_calls_per_org`, 0: none).
pub fn max_live_calls(config: &Config) -> Option<u32> {
    Some(config.api.max_concurrent_calls_per_org).filter(|&cap| cap > 0)
}

#[cfg(test)]
mod tests;
