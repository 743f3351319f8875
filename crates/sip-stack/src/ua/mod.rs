//! The user agent: the API the call-control service uses, and its tokio driver.
//!
//! One task owns the sans-IO core (transactions, dialogs, session
//! timers for every call) and is the only code that reads the clock; the
//! transports feed it bytes, the application feeds it commands through
//! [`CallHandle`]s, and it hands [`CallEvent`]s back per call.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sip_stack::ua::UaError> {
//! use sip_stack::ua::{CallEvent, OutgoingCall, UaConfig, UserAgent};
//! let (ua, mut incoming) = UserAgent::start(UaConfig::default()).await?;
//! let mut call = ua
//!     .invite(OutgoingCall::to("sip:+15551234567@127.0.0.1:5080", "sip:agent@127.0.0.1").await?)
//!     .await?;
//! while let Some(event) = call.next_event().await {
//!     if let CallEvent::Answered { .. } = event {
//!         call.hangup();
//!     }
//! }
//! # drop(incoming.recv().await);
//! # Ok(()) }
//! ```

mod core;
mod events;
mod malformed;
mod session;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
pub use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

use self::core::{Core, CoreOutput, Locals};
pub use self::events::{
    parse_q850, CallEvent, EndReason, FailureCause, IncomingInvite, Party, TransportFailure, Q850,
};
use crate::auth::{Algorithm, Credentials, DigestServerConfig};
use crate::dialog::LocalContact;
use crate::message::{new_call_id, Peer, TransportKind, Uri};
use crate::session_timer::SessionTimerConfig;
use crate::transaction::TimerConfig;
use crate::transport::{Inbound, Received, TransportConfig, TransportError, Transports};

/// Identifies one call inside this user agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

/// Everything the user agent needs to know, in one place.
#[derive(Debug, Clone)]
pub struct UaConfig {
    /// Listen addresses and limits of the transports.
    pub transport: TransportConfig,
    /// RFC 3261 timers T1, T2, T4.
    pub timers: TimerConfig,
    /// RFC 4028 session timer settings.
    pub session_timer: SessionTimerConfig,
    /// The user part of our Contact.
    pub contact_user: Option<String>,
    /// The address advertised in Via/Contact when the listen address is a
    /// wildcard (0.0.0.0) or behind NAT.
    pub public_ip: Option<IpAddr>,
    /// The User-Agent header.
    pub user_agent: String,
    /// Refresh sessions with UPDATE instead of re-INVITE.
    pub refresh_with_update: bool,
    /// Who we are in digest challenges of incoming INVITEs (realm, nonce secret,
    /// algorithms, nonce lifetime). Which calls are challenged, and with whose password,
    /// the application says per call ([`CallHandle::authenticate`]).
    pub digest: DigestServerConfig,
}

/// The digest identity of a user agent that was given none: realm `dialcore`, a random
/// nonce secret (so only this process accepts its nonces), SHA-256 offered before MD5
/// (RFC 8760), nonces valid 5 minutes.
pub fn default_digest_config() -> DigestServerConfig {
    let mut config = DigestServerConfig::new("dialcore", rand::random::<[u8; 32]>().to_vec());
    config.algorithm = Algorithm::Sha256;
    config.alternatives = vec![Algorithm::Md5];
    config
}

impl Default for UaConfig {
    fn default() -> Self {
        Self {
            transport: TransportConfig::default(),
            timers: TimerConfig::default(),
            session_timer: SessionTimerConfig::default(),
            contact_user: None,
            public_ip: None,
            user_agent: concat!("dialcore/", env!("CARGO_PKG_VERSION")).to_string(),
            refresh_with_update: false,
            digest: default_digest_config(),
        }
    }
}

/// Errors of the user agent API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UaError {
    /// A transport could not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The target URI does not parse.
    #[error("invalid SIP URI {uri:?}: {reason}")]
    InvalidUri {
        /// The URI given.
        uri: String,
        /// What is wrong.
        reason: String,
    },
    /// The target's host could not be resolved.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// Host name.
        host: String,
        /// Why.
        reason: String,
    },
    /// The user agent has stopped.
    #[error("the user agent has stopped")]
    Stopped,
}

/// An outbound call to place.
#[derive(Debug, Clone)]
pub struct OutgoingCall {
    /// Request-URI of the INVITE.
    pub request_uri: Uri,
    /// Where the INVITE is sent (the trunk or the URI's host), and how.
    pub peer: Peer,
    /// The From URI (name-addr without tag), e.g. `<sip:+15550001111@example.com>`.
    pub from: String,
    /// The To header value, e.g. `<sip:+15551234567@carrier.example>`.
    pub to: String,
    /// The SIP Call-ID (generated by [`OutgoingCall::to`]).
    pub call_id: String,
    /// The SDP offer.
    pub sdp: Option<String>,
    /// Digest credentials for a trunk that challenges with 401/407.
    pub credentials: Option<Credentials>,
    /// Extra headers (name, value) added to the INVITE.
    pub extra_headers: Vec<(String, String)>,
}

impl OutgoingCall {
    /// A call to `target` (a SIP URI; its host must resolve), from `from`
    /// (a SIP URI). The transport follows `;transport=tcp` in the target.
    pub async fn to(target: &str, from: &str) -> Result<Self, UaError> {
        let uri = parse_target(target)?;
        let addr = resolve(&uri).await?;
        Self::to_addr(target, from, addr)
    }

    /// A call to `target` sent to `addr`, which the caller resolved (and checked) from
    /// the target's host: nothing is resolved here, so the INVITE goes where the caller
    /// decided.
    pub fn to_addr(target: &str, from: &str, addr: SocketAddr) -> Result<Self, UaError> {
        let uri = parse_target(target)?;
        let transport = if target.to_ascii_lowercase().contains("transport=tcp") {
            TransportKind::Tcp
        } else {
            TransportKind::Udp
        };
        Ok(Self {
            request_uri: uri,
            peer: Peer { transport, addr },
            from: format!("<{from}>"),
            to: format!("<{target}>"),
            call_id: new_call_id(&addr.ip().to_string()),
            sdp: None,
            credentials: None,
            extra_headers: Vec::new(),
        })
    }

    /// Sets the SDP offer.
    pub fn with_sdp(mut self, sdp: impl Into<String>) -> Self {
        self.sdp = Some(sdp.into());
        self
    }

    /// Sets digest credentials.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Sends the call over `transport` to `addr` instead of the URI's host.
    pub fn via(mut self, transport: TransportKind, addr: SocketAddr) -> Self {
        self.peer = Peer { transport, addr };
        self
    }
}

fn parse_target(target: &str) -> Result<Uri, UaError> {
    Uri::try_from(target).map_err(|e| UaError::InvalidUri {
        uri: target.to_string(),
        reason: e.to_string(),
    })
}

/// Resolves a URI's host and port (default 5060).
pub async fn resolve(uri: &Uri) -> Result<SocketAddr, UaError> {
    let host = uri.host_with_port.host.to_string();
    let port = uri.host_with_port.port.map(|p| *p.value()).unwrap_or(5060);
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs = tokio::net::lookup_host((bare.as_str(), port))
        .await
        .map_err(|e| UaError::Resolve {
            host: host.clone(),
            reason: e.to_string(),
        })?;
    addrs.next().ok_or_else(|| UaError::Resolve {
        host,
        reason: "no addresses".into(),
    })
}

/// Application commands to the user agent task.
#[derive(Debug)]
pub(crate) enum Command {
    Invite {
        call: CallId,
        request: Box<OutgoingCall>,
    },
    Cancel {
        call: CallId,
    },
    Hangup {
        call: CallId,
    },
    Ring {
        call: CallId,
        sdp: Option<String>,
    },
    Answer {
        call: CallId,
        sdp: String,
    },
    Reject {
        call: CallId,
        code: u16,
        retry_after: Option<Duration>,
    },
    Reinvite {
        call: CallId,
        sdp: String,
    },
    Trust {
        call: CallId,
        networks: Vec<IpNet>,
    },
    Authenticate {
        call: CallId,
        credentials: Credentials,
    },
    Drain {
        retry_after: Option<Duration>,
    },
}

enum Control {
    Command(Command),
    Shutdown(oneshot::Sender<()>),
    Stats(oneshot::Sender<UaStats>),
}

/// Counters of the user agent, for metrics and leak checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UaStats {
    /// Calls with state held.
    pub calls: usize,
    /// Transactions held.
    pub transactions: usize,
}

/// A running user agent. Cheap to clone.
#[derive(Clone)]
pub struct UserAgent {
    control: mpsc::UnboundedSender<Control>,
    transports: Transports,
    subscribers: Arc<DashMap<CallId, mpsc::UnboundedSender<CallEvent>>>,
    next_id: Arc<AtomicU64>,
}

/// The stream of incoming calls.
pub struct IncomingCalls {
    receiver: mpsc::UnboundedReceiver<IncomingCall>,
}

impl IncomingCalls {
    /// The next incoming call, or `None` when the user agent stopped.
    pub async fn recv(&mut self) -> Option<IncomingCall> {
        self.receiver.recv().await
    }
}

/// An incoming INVITE waiting to be rung, answered or rejected.
pub struct IncomingCall {
    /// What the INVITE asked for.
    pub invite: IncomingInvite,
    /// The call's handle (answer/reject/hang up, and its events).
    pub call: CallHandle,
}

/// One call: commands to it, and its events.
pub struct CallHandle {
    id: CallId,
    sip_call_id: String,
    control: mpsc::UnboundedSender<Control>,
    events: mpsc::UnboundedReceiver<CallEvent>,
}

impl CallHandle {
    /// This call's id inside the user agent.
    pub fn id(&self) -> CallId {
        self.id
    }

    /// The SIP Call-ID.
    pub fn sip_call_id(&self) -> &str {
        &self.sip_call_id
    }

    /// The next event; `None` after the terminal event.
    pub async fn next_event(&mut self) -> Option<CallEvent> {
        self.events.recv().await
    }

    /// Cancels an outbound call that is not answered yet (CANCEL), or hangs up an answered one.
    pub fn cancel(&self) {
        self.send(Command::Cancel { call: self.id });
    }

    /// Hangs up: BYE when established, CANCEL when ringing out, 480 when ringing in.
    pub fn hangup(&self) {
        self.send(Command::Hangup { call: self.id });
    }

    /// Inbound: sends 180 Ringing, or 183 with early media SDP.
    pub fn ring(&self, early_media_sdp: Option<String>) {
        self.send(Command::Ring {
            call: self.id,
            sdp: early_media_sdp,
        });
    }

    /// Inbound: answers 200 OK with the SDP answer.
    pub fn answer(&self, sdp: String) {
        self.send(Command::Answer { call: self.id, sdp });
    }

    /// Inbound: rejects with a final status code (300-699).
    pub fn reject(&self, code: u16) {
        self.send(Command::Reject {
            call: self.id,
            code,
            retry_after: None,
        });
    }

    /// Inbound: rejects with a final status code (typically 503) and a
    /// `Retry-After` header of `retry_after`, in whole seconds (RFC 3261 20.33).
    pub fn reject_retry_after(&self, code: u16, retry_after: Duration) {
        self.send(Command::Reject {
            call: self.id,
            code,
            retry_after: Some(retry_after),
        });
    }

    /// Lets requests of this call (CANCEL, BYE, re-INVITE, UPDATE, ...) come from
    /// `networks` as well as from the peer's own address; by default only the address the
    /// call was set up with may send them, and any other source is answered 403.
    pub fn trust_sources(&self, networks: Vec<IpNet>) {
        self.send(Command::Trust {
            call: self.id,
            networks,
        });
    }

    /// Inbound, before answering: requires the INVITE to carry a digest answer
    /// (`Authorization`, RFC 3261 22.4) made with `credentials`. When it does,
    /// [`CallEvent::Authenticated`] follows and the call waits to be rung or answered as
    /// usual. When it does not, the user agent ends the call itself: 401 with a fresh
    /// challenge (one `WWW-Authenticate` per configured algorithm; `stale=true` when only the
    /// nonce had expired) when the INVITE carries no answer or one to a challenge that is
    /// not ours any more, 403 when it answered our challenge with another user or a wrong
    /// password (asking again would only invite guessing). The caller's ACK of the 401 or
    /// 403 is the transaction layer's; its retry is a new incoming call.
    pub fn authenticate(&self, credentials: Credentials) {
        self.send(Command::Authenticate {
            call: self.id,
            credentials,
        });
    }

    /// Established: sends a re-INVITE with a new SDP offer (hold, media change).
    pub fn reinvite(&self, sdp: String) {
        self.send(Command::Reinvite { call: self.id, sdp });
    }

    fn send(&self, command: Command) {
        if self.control.send(Control::Command(command)).is_err() {
            debug!(call = self.id.0, "user agent stopped; command dropped");
        }
    }
}

impl UserAgent {
    /// Binds the transports and starts the user agent task.
    pub async fn start(config: UaConfig) -> Result<(Self, IncomingCalls), UaError> {
        let (received_tx, received_rx) = mpsc::channel(4096);
        let transports = Transports::bind(config.transport.clone(), received_tx).await?;
        let locals = Locals {
            udp: transports
                .local_addr(TransportKind::Udp)
                .filter(|_| config.transport.udp.is_some())
                .map(|addr| local_contact(&config, TransportKind::Udp, addr)),
            tcp: transports
                .local_addr(TransportKind::Tcp)
                .map(|addr| local_contact(&config, TransportKind::Tcp, addr)),
        };
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        let subscribers = Arc::new(DashMap::new());
        let core = Core::new(config, locals);
        let driver = Driver {
            core,
            transports: transports.clone(),
            subscribers: Arc::clone(&subscribers),
            incoming: incoming_tx,
            control_tx: control_tx.clone(),
        };
        tokio::spawn(driver.run(received_rx, control_rx));
        Ok((
            Self {
                control: control_tx,
                transports,
                subscribers,
                next_id: Arc::new(AtomicU64::new(1)),
            },
            IncomingCalls {
                receiver: incoming_rx,
            },
        ))
    }

    /// The bound address of a transport.
    pub fn local_addr(&self, kind: TransportKind) -> Option<SocketAddr> {
        self.transports.local_addr(kind)
    }

    /// Places a call; progress arrives on the returned handle.
    pub async fn invite(&self, call: OutgoingCall) -> Result<CallHandle, UaError> {
        let id = CallId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.insert(id, tx);
        let sip_call_id = call.call_id.clone();
        self.control
            .send(Control::Command(Command::Invite {
                call: id,
                request: Box::new(call),
            }))
            .map_err(|_| UaError::Stopped)?;
        Ok(CallHandle {
            id,
            sip_call_id,
            control: self.control.clone(),
            events: rx,
        })
    }

    /// Sets the networks whose TCP connections are not held to the per-source cap
    /// ([`TransportConfig::tcp_max_per_source`]): a carrier's SBC may open many
    /// connections from one address. Replaces the previous list; the total cap still holds.
    pub fn set_tcp_exempt_networks(&self, networks: Vec<IpNet>) {
        self.transports.set_per_source_exempt(networks);
    }

    /// Starts (`Some`, with the `Retry-After` to give) or ends (`None`) draining: while
    /// draining, new INVITEs and out-of-dialog OPTIONS are answered 503, so a load
    /// balancer probing with OPTIONS takes this node out; calls already up go on.
    pub fn set_draining(&self, retry_after: Option<Duration>) {
        let _ = self
            .control
            .send(Control::Command(Command::Drain { retry_after }));
    }

    /// Counters (calls and transactions held).
    pub async fn stats(&self) -> Result<UaStats, UaError> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Control::Stats(tx))
            .map_err(|_| UaError::Stopped)?;
        rx.await.map_err(|_| UaError::Stopped)
    }

    /// Ends every call (BYE, CANCEL or 503) and stops once they are done,
    /// or after `grace`, whichever comes first.
    pub async fn shutdown(&self, grace: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Shutdown(tx)).is_ok() {
            let _ = tokio::time::timeout(grace, rx).await;
        }
    }
}

fn local_contact(config: &UaConfig, transport: TransportKind, bound: SocketAddr) -> LocalContact {
    let ip = match (config.public_ip, bound.ip().is_unspecified()) {
        (Some(ip), _) => ip,
        (None, true) => IpAddr::from([127, 0, 0, 1]),
        (None, false) => bound.ip(),
    };
    LocalContact {
        transport,
        addr: SocketAddr::new(ip, bound.port()),
        user: config.contact_user.clone(),
    }
}

struct Driver {
    core: Core,
    transports: Transports,
    subscribers: Arc<DashMap<CallId, mpsc::UnboundedSender<CallEvent>>>,
    incoming: mpsc::UnboundedSender<IncomingCall>,
    control_tx: mpsc::UnboundedSender<Control>,
}

impl Driver {
    async fn run(
        mut self,
        mut received: mpsc::Receiver<Received>,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) {
        let mut shutdown: Option<oneshot::Sender<()>> = None;
        loop {
            let deadline = self.core.poll_timeout();
            tokio::select! {
                message = received.recv() => {
                    let Some(message) = message else { break };
                    self.on_received(message);
                }
                command = control.recv() => {
                    let Some(command) = command else { break };
                    let now = Instant::now().into_std();
                    match command {
                        Control::Command(command) => self.core.handle_command(now, command),
                        Control::Stats(reply) => {
                            let _ = reply.send(UaStats {
                                calls: self.core.call_count(),
                                transactions: self.core.transaction_count(),
                            });
                        }
                        Control::Shutdown(done) => {
                            self.core.shutdown(now);
                            shutdown = Some(done);
                        }
                    }
                }
                _ = sleep_until(deadline) => {
                    self.core.handle_timeout(Instant::now().into_std());
                }
            }
            self.flush().await;
            if shutdown.is_some() && self.core.call_count() == 0 {
                break;
            }
        }
        if let Some(done) = shutdown {
            let _ = done.send(());
        }
    }

    fn on_received(&mut self, received: Received) {
        let now = Instant::now().into_std();
        match received.inbound {
            Inbound::Message(message) => self.core.handle_message(now, message, received.from),
            Inbound::Malformed { bytes, error } => {
                debug!(from = %received.from.addr, %error, "malformed message");
                self.core.handle_malformed(&bytes, &error, received.from);
            }
            Inbound::ConnectionFailed { error } => {
                let failure = TransportFailure::from_io(&error);
                self.core
                    .handle_transport_error(now, received.from, failure);
            }
        }
    }

    async fn flush(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                CoreOutput::Transmit { to, message } => {
                    let bytes = bytes::Bytes::from(message.to_string());
                    if let Err(error) = self.transports.send(to, bytes).await {
                        warn!(to = %to.addr, %error, "send failed");
                        let now = Instant::now().into_std();
                        self.core
                            .handle_transport_error(now, to, send_failure(&error));
                    }
                }
                CoreOutput::Raw { to, bytes } => {
                    if let Err(error) = self.transports.send(to, bytes.into()).await {
                        warn!(to = %to.addr, %error, "send failed");
                    }
                }
                CoreOutput::Event { call, event } => self.deliver(call, event),
                CoreOutput::Incoming { call, invite } => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    self.subscribers.insert(call, tx);
                    let handle = CallHandle {
                        id: call,
                        sip_call_id: invite.call_id.clone(),
                        control: self.control_tx.clone(),
                        events: rx,
                    };
                    if self
                        .incoming
                        .send(IncomingCall {
                            invite,
                            call: handle,
                        })
                        .is_err()
                    {
                        // Nobody takes incoming calls: refuse it.
                        let now = Instant::now().into_std();
                        self.core.handle_command(
                            now,
                            Command::Reject {
                                call,
                                code: 480,
                                retry_after: None,
                            },
                        );
                    }
                }
            }
        }
    }

    fn deliver(&mut self, call: CallId, event: CallEvent) {
        let terminal = event.is_terminal();
        if let Some(subscriber) = self.subscribers.get(&call) {
            let _ = subscriber.send(event);
        }
        if terminal {
            self.subscribers.remove(&call);
        }
    }
}

/// A failed send as the transport failure the core hands to its calls.
fn send_failure(error: &TransportError) -> TransportFailure {
    let kind = match error {
        TransportError::Send { source, .. } | TransportError::Bind { source, .. } => source.kind(),
        TransportError::Congested(_) => std::io::ErrorKind::WouldBlock,
        TransportError::TooLarge { .. } => std::io::ErrorKind::InvalidInput,
        TransportError::NotEnabled(_) => std::io::ErrorKind::Unsupported,
    };
    TransportFailure {
        kind,
        message: error.to_string(),
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
