//! The bot's media relay: where its network profile is applied.
//!
//! The bot's SDP advertises the relay's far side (an RTP port and the RTCP
//! port above it); the bot's media stream talks to the relay's near side.
//! RTP going out (bot -> agent) and coming in (agent -> bot) passes through
//! its own seeded [`NetSim`] when the profile is impaired, so loss, bursts,
//! jitter and reordering hit both directions like a real path; `clean`
//! forwards at once. RTCP is forwarded unimpaired. The relay latches onto
//! the far end's real source address (symmetric RTP).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use media::netsim::{NetSim, NetSimConfig, NetSimStats};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::netprofile::NetworkProfile;

/// Largest datagram relayed.
const MAX_DATAGRAM: usize = 2048;
/// Attempts to find an even RTP port with a free RTCP port above it.
const BIND_ATTEMPTS: usize = 64;

/// Errors of the relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// A socket could not be bound.
    #[error("relay socket: {0}")]
    Bind(#[from] io::Error),
    /// No RTP/RTCP port pair was free.
    #[error("no free RTP/RTCP port pair on {0}")]
    NoPortPair(IpAddr),
    /// The profile's simulation settings are invalid.
    #[error("network profile: {0}")]
    Profile(String),
}

/// The relay's sockets, bound, before the call's addresses are known.
#[derive(Debug)]
pub struct RelaySockets {
    near_rtp: UdpSocket,
    near_rtcp: UdpSocket,
    far_rtp: UdpSocket,
    far_rtcp: UdpSocket,
}

/// Where the relay forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayPeers {
    /// The bot's stream RTP address.
    pub bot_rtp: SocketAddr,
    /// The bot's stream RTCP address.
    pub bot_rtcp: SocketAddr,
    /// The far end's RTP address from its SDP.
    pub far_rtp: SocketAddr,
}

/// What the relay did to the packets (RTP only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Bot -> agent, through the simulated path.
    pub uplink: NetSimStats,
    /// Agent -> bot, through the simulated path.
    pub downlink: NetSimStats,
    /// RTP packets forwarded bot -> agent.
    pub uplink_forwarded: u64,
    /// RTP packets forwarded agent -> bot.
    pub downlink_forwarded: u64,
}

/// A running relay.
#[derive(Debug)]
pub struct Relay {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<RelayStats>,
}

impl RelaySockets {
    /// Binds the near side (any ports) and the far side (an even RTP port
    /// and the RTCP port above it) on `ip`.
    pub async fn bind(ip: IpAddr) -> Result<RelaySockets, RelayError> {
        let near_rtp = UdpSocket::bind((ip, 0)).await?;
        let near_rtcp = UdpSocket::bind((ip, 0)).await?;
        for _ in 0..BIND_ATTEMPTS {
            let far_rtp = UdpSocket::bind((ip, 0)).await?;
            let port = far_rtp.local_addr()?.port();
            if port % 2 != 0 || port == u16::MAX {
                continue;
            }
            if let Ok(far_rtcp) = UdpSocket::bind((ip, port + 1)).await {
                return Ok(RelaySockets {
                    near_rtp,
                    near_rtcp,
                    far_rtp,
                    far_rtcp,
                });
            }
        }
        Err(RelayError::NoPortPair(ip))
    }

    /// The address to put in the bot's SDP.
    pub fn far_rtp_addr(&self) -> io::Result<SocketAddr> {
        self.far_rtp.local_addr()
    }

    /// The bot's media stream sends RTP here.
    pub fn near_rtp_addr(&self) -> io::Result<SocketAddr> {
        self.near_rtp.local_addr()
    }

    /// The bot's media stream sends RTCP here.
    pub fn near_rtcp_addr(&self) -> io::Result<SocketAddr> {
        self.near_rtcp.local_addr()
    }

    /// Starts forwarding between `peers` with `profile` applied to RTP
    /// both ways (`seed` makes the impairment reproducible).
    pub fn start(
        self,
        peers: RelayPeers,
        profile: NetworkProfile,
        seed: u64,
    ) -> Result<Relay, RelayError> {
        let simulated = |config: Option<NetSimConfig>, seed: u64| {
            config
                .map(|config| NetSim::new(config, seed))
                .transpose()
                .map_err(|e| RelayError::Profile(e.to_string()))
        };
        let uplink = simulated(profile.netsim_config(), seed)?;
        let downlink = simulated(profile.netsim_config(), seed ^ 0x9e37_79b9_7f4a_7c15)?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(forward(self, peers, uplink, downlink, stopped));
        Ok(Relay {
            stop: Some(stop),
            task,
        })
    }
}

impl Relay {
    /// Stops forwarding; returns what happened to the packets.
    pub async fn stop(mut self) -> RelayStats {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap_or_default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

/// One direction of RTP.
struct Path {
    sim: Option<NetSim<Vec<u8>>>,
    forwarded: u64,
}

impl Path {
    async fn send(&mut self, socket: &UdpSocket, packet: &[u8], to: SocketAddr) {
        match &mut self.sim {
            Some(sim) => {
                sim.send(Instant::now(), packet.to_vec());
            }
            None => {
                self.forwarded += 1;
                let _ = socket.send_to(packet, to).await;
            }
        }
    }

    async fn deliver_due(&mut self, socket: &UdpSocket, to: SocketAddr) {
        let Some(sim) = &mut self.sim else { return };
        let now = Instant::now();
        while let Some(arrival) = sim.poll_arrival(now) {
            self.forwarded += 1;
            let _ = socket.send_to(&arrival.packet, to).await;
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.sim.as_ref().and_then(NetSim::poll_timeout)
    }
}

async fn forward(
    sockets: RelaySockets,
    peers: RelayPeers,
    uplink: Option<NetSim<Vec<u8>>>,
    downlink: Option<NetSim<Vec<u8>>>,
    mut stopped: oneshot::Receiver<()>,
) -> RelayStats {
    let RelaySockets {
        near_rtp,
        near_rtcp,
        far_rtp,
        far_rtcp,
    } = sockets;
    let mut up = Path {
        sim: uplink,
        forwarded: 0,
    };
    let mut down = Path {
        sim: downlink,
        forwarded: 0,
    };
    let mut far_rtp_to = peers.far_rtp;
    let mut far_rtcp_to = SocketAddr::new(peers.far_rtp.ip(), peers.far_rtp.port() + 1);
    let mut buffers = [[0u8; MAX_DATAGRAM]; 4];
    let [b0, b1, b2, b3] = &mut buffers;
    loop {
        let due = [up.next_due(), down.next_due()].into_iter().flatten().min();
        tokio::select! {
            _ = &mut stopped => break,
            received = near_rtp.recv_from(b0) => match received {
                Ok((len, _)) => up.send(&far_rtp, &b0[..len], far_rtp_to).await,
                Err(error) => debug!(%error, "relay near RTP"),
            },
            received = far_rtp.recv_from(b1) => match received {
                Ok((len, from)) => {
                    far_rtp_to = from;
                    down.send(&near_rtp, &b1[..len], peers.bot_rtp).await;
                }
                Err(error) => debug!(%error, "relay far RTP"),
            },
            received = near_rtcp.recv_from(b2) => match received {
                Ok((len, _)) => {
                    let _ = far_rtcp.send_to(&b2[..len], far_rtcp_to).await;
                }
                Err(error) => debug!(%error, "relay near RTCP"),
            },
            received = far_rtcp.recv_from(b3) => match received {
                Ok((len, from)) => {
                    far_rtcp_to = from;
                    let _ = near_rtcp.send_to(&b3[..len], peers.bot_rtcp).await;
                }
                Err(error) => debug!(%error, "relay far RTCP"),
            },
            _ = sleep_until(due) => {}
        }
        up.deliver_due(&far_rtp, far_rtp_to).await;
        down.deliver_due(&near_rtp, peers.bot_rtp).await;
    }
    RelayStats {
        uplink: up.sim.as_ref().map(NetSim::stats).unwrap_or_default(),
        downlink: down.sim.as_ref().map(NetSim::stats).unwrap_or_default(),
        uplink_forwarded: up.forwarded,
        downlink_forwarded: down.forwarded,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    async fn pair() -> (UdpSocket, UdpSocket) {
        (
            UdpSocket::bind((LOCAL, 0)).await.expect("bind"),
            UdpSocket::bind((LOCAL, 0)).await.expect("bind"),
        )
    }

    #[tokio::test]
    async fn clean_forwards_both_ways_and_latches_the_far_source() {
        let (bot_rtp, bot_rtcp) = pair().await;
        let (far, _far_rtcp) = pair().await;
        let sockets = RelaySockets::bind(LOCAL).await.expect("relay");
        let far_side = sockets.far_rtp_addr().expect("addr");
        assert_eq!(far_side.port() % 2, 0, "RTP on an even port");
        let near = sockets.near_rtp_addr().expect("addr");
        let relay = sockets
            .start(
                RelayPeers {
                    bot_rtp: bot_rtp.local_addr().expect("addr"),
                    bot_rtcp: bot_rtcp.local_addr().expect("addr"),
                    // A stale SDP address: the relay must latch onto `far`.
                    far_rtp: SocketAddr::new(LOCAL, 9),
                },
                NetworkProfile::Clean,
                1,
            )
            .expect("starts");
        let mut buf = [0u8; 64];
        far.send_to(b"down", far_side).await.expect("send");
        let (len, from) = tokio::time::timeout(Duration::from_secs(5), bot_rtp.recv_from(&mut buf))
            .await
            .expect("arrives")
            .expect("recv");
        assert_eq!((&buf[..len], from), (&b"down"[..], near));
        bot_rtp.send_to(b"up", near).await.expect("send");
        let (len, from) = tokio::time::timeout(Duration::from_secs(5), far.recv_from(&mut buf))
            .await
            .expect("arrives")
            .expect("recv");
        assert_eq!((&buf[..len], from), (&b"up"[..], far_side));
        let stats = relay.stop().await;
        assert_eq!((stats.uplink_forwarded, stats.downlink_forwarded), (1, 1));
    }

    #[tokio::test]
    async fn lossy_drops_some_packets() {
        let (bot_rtp, bot_rtcp) = pair().await;
        let (far, _far_rtcp) = pair().await;
        let sockets = RelaySockets::bind(LOCAL).await.expect("relay");
        let far_side = sockets.far_rtp_addr().expect("addr");
        let relay = sockets
            .start(
                RelayPeers {
                    bot_rtp: bot_rtp.local_addr().expect("addr"),
                    bot_rtcp: bot_rtcp.local_addr().expect("addr"),
                    far_rtp: far.local_addr().expect("addr"),
                },
                NetworkProfile::BadMobile,
                7,
            )
            .expect("starts");
        let sent = 1000u64;
        for i in 0..sent {
            far.send_to(&i.to_be_bytes(), far_side).await.expect("send");
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let mut received = 0u64;
        let mut buf = [0u8; 64];
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(2), bot_rtp.recv_from(&mut buf)).await
        {
            received += 1;
        }
        let stats = relay.stop().await;
        let lost = stats.downlink.lost_random + stats.downlink.lost_burst;
        assert!(lost > 0, "bad_mobile loses packets: {stats:?}");
        assert!(received < sent + stats.downlink.duplicated);
        assert_eq!(stats.downlink.sent, sent);
    }
}
