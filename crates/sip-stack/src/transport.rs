//! UDP and TCP transports (RFC 3261 section 18) as thin tokio drivers.
//!
//! The transports only move bytes. Every datagram, and every message framed
//! out of a TCP stream by Content-Length, is handed to the user agent's core
//! as a [`Received`] on one channel; the core answers by calling
//! [`Transports::send`]. TCP connections are reused in both directions and
//! keyed by the peer's address, so a response follows the connection the
//! request came on (RFC 3261 18.2.2). CRLF keepalives (RFC 5626 3.5.1) are
//! answered on TCP and ignored on UDP. A TCP connection that cannot be opened
//! or breaks is reported on the same channel ([`Inbound::ConnectionFailed`]),
//! so that the transactions waiting on it fail at once (RFC 3261 17.1.4).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::message::{
    parse_with, FramerOutput, MessageError, ParseConfig, Peer, SipMessage, StreamFramer,
    TransportKind,
};

/// Where the transports listen and how much they accept.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// UDP listen address; `None` disables UDP.
    pub udp: Option<SocketAddr>,
    /// TCP listen address; `None` disables TCP listening (outgoing TCP still works).
    pub tcp: Option<SocketAddr>,
    /// Largest datagram or framed message accepted, in bytes.
    pub max_message_size: usize,
    /// How long an outgoing TCP connect may take.
    pub tcp_connect_timeout: Duration,
    /// Messages queued per TCP connection before sends fail.
    pub tcp_queue: usize,
    /// Most accepted TCP connections at once; more are closed at once.
    pub tcp_max_connections: usize,
    /// Most accepted TCP connections from one IP address at once, except from the networks
    /// set with [`Transports::set_per_source_exempt`] (a carrier's SBC).
    pub tcp_max_per_source: usize,
    /// An accepted TCP connection must deliver its first whole message (or CRLF keepalive)
    /// within this long, however slowly it trickles bytes; then it is closed.
    pub tcp_first_message_timeout: Duration,
    /// An accepted TCP connection with no traffic either way (CRLF keepalives count) for
    /// this long is closed: longer than half the default session interval, so a call's
    /// refreshes keep its connection.
    pub tcp_idle_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            udp: Some(SocketAddr::from(([127, 0, 0, 1], 5060))),
            tcp: Some(SocketAddr::from(([127, 0, 0, 1], 5060))),
            max_message_size: 65_535,
            tcp_connect_timeout: Duration::from_secs(5),
            tcp_queue: 1024,
            tcp_max_connections: 4096,
            tcp_max_per_source: 64,
            tcp_first_message_timeout: Duration::from_secs(10),
            tcp_idle_timeout: Duration::from_secs(960),
        }
    }
}

/// One message as it came off the network.
#[derive(Debug)]
pub struct Received {
    /// The message, or why it could not be parsed.
    pub inbound: Inbound,
    /// Who sent it, and over which transport.
    pub from: Peer,
}

/// A parsed message, or the bytes that failed to parse.
#[derive(Debug)]
pub enum Inbound {
    /// A well-formed SIP message.
    Message(SipMessage),
    /// Bytes that are no [`SipMessage`]: not valid SIP (the core may answer 400 or 505), or a
    /// valid request with a method or Request-URI scheme we do not implement (501, 416).
    Malformed {
        /// The raw bytes.
        bytes: Bytes,
        /// Why parsing failed.
        error: MessageError,
    },
    /// The TCP connection to `from` could not be opened (refused, unreachable,
    /// timed out) or broke (reset, write failed): what was queued on it is lost.
    ConnectionFailed {
        /// The OS error.
        error: io::Error,
    },
}

/// Errors of the transports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A socket could not be bound.
    #[error("cannot bind {kind:?} on {addr}: {source}")]
    Bind {
        /// Which transport.
        kind: TransportKind,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Sending over a transport that is not configured.
    #[error("{0:?} transport is not enabled")]
    NotEnabled(TransportKind),
    /// A datagram could not be sent.
    #[error("send to {addr} failed: {source}")]
    Send {
        /// The destination.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The TCP connection's send queue is full or closed.
    #[error("TCP connection to {0} is congested or closed")]
    Congested(SocketAddr),
    /// The message is larger than the configured limit.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Size of the message.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
}

/// The bound sockets and live TCP connections of one user agent.
#[derive(Clone)]
pub struct Transports {
    inner: Arc<Inner>,
}

struct Inner {
    config: TransportConfig,
    udp: Option<Arc<UdpSocket>>,
    udp_local: Option<SocketAddr>,
    tcp_local: Option<SocketAddr>,
    connections: DashMap<SocketAddr, mpsc::Sender<Bytes>>,
    received: mpsc::Sender<Received>,
    /// Accepted TCP connections open, in all and per source address.
    accepted: AtomicUsize,
    accepted_per_source: DashMap<IpAddr, usize>,
    /// Sources not held to `tcp_max_per_source` (read on every accept, written rarely).
    per_source_exempt: RwLock<Arc<Vec<IpNet>>>,
    /// Accepted connections refused by the limits.
    refused: AtomicU64,
}

/// Tries to give UDP and TCP one free port number when both ask for port 0.
const SHARED_PORT_ATTEMPTS: u32 = 16;

/// The UDP socket (and its address) and the TCP listener of `config`.
async fn bind_sockets(
    config: &TransportConfig,
) -> Result<
    (
        Option<Arc<UdpSocket>>,
        Option<SocketAddr>,
        Option<TcpListener>,
    ),
    TransportError,
> {
    let (udp, udp_local) = match config.udp {
        Some(addr) => {
            let socket = UdpSocket::bind(addr)
                .await
                .map_err(|source| TransportError::Bind {
                    kind: TransportKind::Udp,
                    addr,
                    source,
                })?;
            let local = socket.local_addr().map_err(|source| TransportError::Bind {
                kind: TransportKind::Udp,
                addr,
                source,
            })?;
            (Some(Arc::new(socket)), Some(local))
        }
        None => (None, None),
    };
    let listener = match config.tcp {
        Some(addr) => {
            // Listen on the UDP port when the TCP port is 0 and UDP got one,
            // so one port number serves both like a SIP server should.
            let addr = match (addr.port(), udp_local) {
                (0, Some(udp)) if udp.ip() == addr.ip() => udp,
                _ => addr,
            };
            Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| TransportError::Bind {
                        kind: TransportKind::Tcp,
                        addr,
                        source,
                    })?,
            )
        }
        None => None,
    };
    Ok((udp, udp_local, listener))
}

impl Transports {
    /// Binds the configured sockets and starts their receive tasks; every
    /// message received is sent on `received`.
    pub async fn bind(
        config: TransportConfig,
        received: mpsc::Sender<Received>,
    ) -> Result<Self, TransportError> {
        // With both ports 0 the TCP listener takes the port the kernel gave UDP; another
        // process may hold that port for TCP, so draw again a few times.
        let shared_port = matches!((config.udp, config.tcp), (Some(udp), Some(tcp))
            if udp.port() == 0 && tcp.port() == 0 && udp.ip() == tcp.ip());
        let mut attempts = 0;
        let (udp, udp_local, listener) = loop {
            attempts += 1;
            match bind_sockets(&config).await {
                Err(TransportError::Bind {
                    kind: TransportKind::Tcp,
                    source,
                    ..
                }) if shared_port
                    && attempts < SHARED_PORT_ATTEMPTS
                    && source.kind() == std::io::ErrorKind::AddrInUse =>
                {
                    continue
                }
                bound => break bound?,
            }
        };
        let tcp_local = listener.as_ref().and_then(|l| l.local_addr().ok());
        let transports = Self {
            inner: Arc::new(Inner {
                config,
                udp,
                udp_local,
                tcp_local,
                connections: DashMap::new(),
                received,
                accepted: AtomicUsize::new(0),
                accepted_per_source: DashMap::new(),
                per_source_exempt: RwLock::new(Arc::new(Vec::new())),
                refused: AtomicU64::new(0),
            }),
        };
        if let Some(socket) = transports.inner.udp.clone() {
            tokio::spawn(udp_receive_loop(
                socket,
                transports.inner.received.clone(),
                transports.inner.config.max_message_size,
            ));
        }
        if let Some(listener) = listener {
            let this = transports.clone();
            tokio::spawn(async move { this.accept_loop(listener).await });
        }
        Ok(transports)
    }

    /// The bound local address of a transport, if enabled.
    pub fn local_addr(&self, kind: TransportKind) -> Option<SocketAddr> {
        match kind {
            TransportKind::Udp => self.inner.udp_local,
            TransportKind::Tcp => self.inner.tcp_local.or(self.inner.udp_local),
        }
    }

    /// Number of open TCP connections.
    pub fn tcp_connections(&self) -> usize {
        self.inner.connections.len()
    }

    /// Sends one message. UDP goes out at once; TCP is queued on the
    /// connection to `to` (opened if there is none) and never blocks.
    pub async fn send(&self, to: Peer, bytes: Bytes) -> Result<(), TransportError> {
        let limit = self.inner.config.max_message_size;
        if bytes.len() > limit {
            return Err(TransportError::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        match to.transport {
            TransportKind::Udp => {
                let socket = self
                    .inner
                    .udp
                    .as_ref()
                    .ok_or(TransportError::NotEnabled(TransportKind::Udp))?;
                socket
                    .send_to(&bytes, to.addr)
                    .await
                    .map_err(|source| TransportError::Send {
                        addr: to.addr,
                        source,
                    })?;
                Ok(())
            }
            TransportKind::Tcp => {
                let sender = self.tcp_sender(to.addr);
                sender
                    .try_send(bytes)
                    .map_err(|_| TransportError::Congested(to.addr))
            }
        }
    }

    fn tcp_sender(&self, addr: SocketAddr) -> mpsc::Sender<Bytes> {
        if let Some(existing) = self.inner.connections.get(&addr) {
            if !existing.is_closed() {
                return existing.clone();
            }
        }
        let (tx, rx) = mpsc::channel(self.inner.config.tcp_queue);
        self.inner.connections.insert(addr, tx.clone());
        let this = self.clone();
        let registered = tx.clone();
        tokio::spawn(async move {
            let connect = tokio::time::timeout(
                this.inner.config.tcp_connect_timeout,
                TcpStream::connect(addr),
            )
            .await;
            let error = match connect {
                Ok(Ok(stream)) => return this.run_connection(stream, addr, rx, None).await,
                Ok(Err(error)) => error,
                Err(_) => io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "TCP connect timed out after {} ms",
                        this.inner.config.tcp_connect_timeout.as_millis()
                    ),
                ),
            };
            warn!(%addr, %error, "TCP connect failed");
            this.forget(addr, &registered);
            this.report_failure(addr, error).await;
        });
        tx
    }

    /// Tells the user agent that the connection to `addr` failed.
    async fn report_failure(&self, addr: SocketAddr, error: io::Error) {
        let failed = Received {
            inbound: Inbound::ConnectionFailed { error },
            from: Peer {
                transport: TransportKind::Tcp,
                addr,
            },
        };
        // A closed channel means the user agent stopped: nobody to tell.
        let _ = self.inner.received.send(failed).await;
    }

    fn forget(&self, addr: SocketAddr, sender: &mpsc::Sender<Bytes>) {
        self.inner
            .connections
            .remove_if(&addr, |_, current| current.same_channel(sender));
    }

    async fn accept_loop(self, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, addr)) => {
                    let Some(slot) = self.admit(addr) else {
                        drop(stream);
                        continue;
                    };
                    let (tx, rx) = mpsc::channel(self.inner.config.tcp_queue);
                    self.inner.connections.insert(addr, tx);
                    let this = self.clone();
                    tokio::spawn(async move {
                        let limits = IdleLimits {
                            first_message: this.inner.config.tcp_first_message_timeout,
                            idle: this.inner.config.tcp_idle_timeout,
                        };
                        this.run_connection(stream, addr, rx, Some(limits)).await;
                        drop(slot);
                    });
                }
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(%error, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            if self.inner.received.is_closed() {
                return;
            }
        }
    }

    /// Replaces the networks whose accepted connections are not held to the per-source
    /// cap (they still count against `tcp_max_connections`). Connections open now keep
    /// their standing; the list applies from the next accept.
    pub fn set_per_source_exempt(&self, networks: Vec<IpNet>) {
        let networks = Arc::new(networks);
        match self.inner.per_source_exempt.write() {
            Ok(mut current) => *current = networks,
            Err(poisoned) => *poisoned.into_inner() = networks,
        }
    }

    fn is_per_source_exempt(&self, ip: IpAddr) -> bool {
        let networks = match self.inner.per_source_exempt.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        networks.iter().any(|network| network.contains(&ip))
    }

    /// Counts an accepted connection from `addr` against the limits; `None` (and a count
    /// of the refusal, logged at a bounded rate) when it is over one of them.
    fn admit(&self, addr: SocketAddr) -> Option<AcceptedSlot> {
        let inner = &self.inner;
        let ip = addr.ip().to_canonical();
        let total = inner.accepted.fetch_add(1, Ordering::AcqRel) + 1;
        let exempt = self.is_per_source_exempt(ip);
        let from_source = if exempt {
            0
        } else {
            let mut per_source = inner.accepted_per_source.entry(ip).or_insert(0);
            *per_source += 1;
            *per_source
        };
        let slot = AcceptedSlot {
            transports: self.clone(),
            ip: (!exempt).then_some(ip),
        };
        if total > inner.config.tcp_max_connections || from_source > inner.config.tcp_max_per_source
        {
            let refused = inner.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if refused.is_power_of_two() {
                warn!(%addr, total, from_source, refused,
                    "TCP connection refused: over the connection limits");
            }
            return None;
        }
        Some(slot)
    }

    /// Accepted TCP connections refused by the limits so far.
    pub fn refused_connections(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    async fn run_connection(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
        mut outgoing: mpsc::Receiver<Bytes>,
        limits: Option<IdleLimits>,
    ) {
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let mut framer = StreamFramer::new(self.inner.config.max_message_size);
        let parse_config = ParseConfig {
            max_size: self.inner.config.max_message_size,
            datagram: false,
        };
        let mut buf = vec![0u8; 16 * 1024];
        let peer = Peer {
            transport: TransportKind::Tcp,
            addr,
        };
        debug!(%addr, "TCP connection up");
        let mut failure = None;
        // Until its first message a connection has `first_message` in all; then each bit
        // of traffic gives it `idle` more.
        let mut idle_at = limits.map(|l| tokio::time::Instant::now() + l.first_message);
        let mut spoke = false;
        loop {
            tokio::select! {
                () = sleep_until_opt(idle_at) => {
                    debug!(%addr, spoke, "idle TCP connection closed");
                    break;
                }
                read = reader.read(&mut buf) => {
                    let n = match read {
                        // A clean close: the peer may open a new connection for its answers.
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(error) => {
                            debug!(%addr, %error, "TCP read failed");
                            failure = Some(error);
                            break;
                        }
                    };
                    framer.push(&buf[..n]);
                    let mut pong = false;
                    let mut broken = false;
                    let mut delivered = false;
                    loop {
                        match framer.next_output() {
                            Ok(Some(FramerOutput::Message(bytes))) => {
                                let inbound = match parse_with(&bytes, &parse_config) {
                                    Ok(message) => Inbound::Message(message),
                                    Err(error) => Inbound::Malformed { bytes, error },
                                };
                                let received = Received { inbound, from: peer };
                                if self.inner.received.send(received).await.is_err() {
                                    return;
                                }
                                delivered = true;
                            }
                            Ok(Some(FramerOutput::Ping)) => {
                                pong = true;
                                delivered = true;
                            }
                            Ok(Some(FramerOutput::Pong)) => delivered = true,
                            Ok(None) => break,
                            Err(error) => {
                                warn!(%addr, %error, "closing TCP connection on unframeable input");
                                broken = true;
                                break;
                            }
                        }
                    }
                    if pong && writer.write_all(b"\r\n").await.is_err() {
                        break;
                    }
                    if spoke || delivered {
                        spoke = true;
                        idle_at = limits.map(|l| tokio::time::Instant::now() + l.idle);
                    }
                    if broken {
                        break;
                    }
                }
                message = outgoing.recv() => {
                    let Some(message) = message else { break };
                    if let Err(error) = writer.write_all(&message).await {
                        warn!(%addr, %error, "TCP write failed");
                        failure = Some(error);
                        break;
                    }
                    if spoke {
                        idle_at = limits.map(|l| tokio::time::Instant::now() + l.idle);
                    }
                }
            }
        }
        debug!(%addr, "TCP connection closed");
        outgoing.close();
        self.inner
            .connections
            .remove_if(&addr, |_, sender| sender.is_closed());
        if let Some(error) = failure {
            self.report_failure(addr, error).await;
        }
    }
}

/// How long an accepted connection may stay silent.
#[derive(Debug, Clone, Copy)]
struct IdleLimits {
    first_message: Duration,
    idle: Duration,
}

/// An accepted connection counted against the limits until dropped.
struct AcceptedSlot {
    transports: Transports,
    /// The source it counts against, `None` for an exempt source.
    ip: Option<IpAddr>,
}

impl Drop for AcceptedSlot {
    fn drop(&mut self) {
        let inner = &self.transports.inner;
        inner.accepted.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            inner.accepted_per_source.remove_if_mut(&ip, |_, count| {
                *count -= 1;
                *count == 0
            });
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn udp_receive_loop(socket: Arc<UdpSocket>, received: mpsc::Sender<Received>, limit: usize) {
    let config = ParseConfig {
        max_size: limit,
        ..ParseConfig::default()
    };
    // One byte more than the limit tells an oversized datagram from one that fits.
    let mut buf = vec![0u8; limit + 1];
    loop {
        let (n, addr) = match socket.recv_from(&mut buf).await {
            Ok(result) => result,
            Err(error) => {
                // ICMP port unreachable surfaces here on some systems: not fatal.
                debug!(%error, "UDP receive error");
                continue;
            }
        };
        if n > limit {
            warn!(%addr, "dropping oversized datagram");
            continue;
        }
        let data = &buf[..n];
        if data.iter().all(|b| matches!(b, b'\r' | b'\n' | 0)) {
            continue; // keepalive
        }
        // Parsing here, off the user agent's task, spreads the work over the runtime.
        let inbound = match parse_with(data, &config) {
            Ok(message) => Inbound::Message(message),
            Err(error) => Inbound::Malformed {
                bytes: Bytes::copy_from_slice(data),
                error,
            },
        };
        let message = Received {
            inbound,
            from: Peer {
                transport: TransportKind::Udp,
                addr,
            },
        };
        if received.send(message).await.is_err() {
            return;
        }
    }
}
