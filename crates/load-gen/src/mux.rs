//! The generator's media: a few shards (one per core), each one UDP socket
//! and one task driving the RTP of many calls on a shared clock. No task,
//! socket or timer per call: a call is an entry in its shard's table. A shard
//! wakes once per 20 ms tick, reads what arrived since the last one (each
//! datagram at its kernel receive timestamp, so jitter is measured exactly),
//! then sends every call's next frame: both in batches of a system call each
//! ([`crate::batch_io`]), so that the generator costs a few system calls per
//! tick rather than two per packet. The sockets are plain non-blocking
//! ones, not registered with tokio's reactor: nobody waits for them to be
//! readable, and registered, every datagram would wake the I/O driver.
//!
//! Every call of a shard advertises the shard's address in its SDP; the far
//! end's packets are told apart by their source address (each call has its
//! own port on the far end) or, when the far end echoes raw packets from one
//! port for all calls (SIPp's `-rtp_echo`), by our own SSRC in them.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use media::stream::arrival::{enable_timestamps, Clock};
use rand::Rng;
use rustc_hash::FxHashMap;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::audio::EncodedAudio;
use crate::batch_io::{BatchReceiver, BatchSender, BATCH};
use crate::rtp::{RtpReport, RtpStream, StreamParams, DEVIATION_BINS, FRAME, MAX_DATAGRAM};

/// Socket buffers asked for: a shard's calls send and receive in bursts.
const SOCKET_BUFFER: usize = 4 << 20;
/// RTP ports are picked at random from this range (even, with the next one for RTCP).
const PORT_RANGE: std::ops::Range<u16> = 30_000..60_000;
const BIND_ATTEMPTS: usize = 64;
/// How often the RTCP socket is emptied. Its reports are not read, and a far end
/// sends one per call every few seconds: reading it every tick was a system call
/// for nothing, and its 4 MiB buffer holds far more than a second of them.
const RTCP_DRAIN_INTERVAL: Duration = Duration::from_secs(1);

/// A call's place in the mux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamKey {
    shard: usize,
    id: u64,
}

enum Command {
    Open {
        id: u64,
        remote: SocketAddr,
        params: Box<StreamParams>,
    },
    Close {
        id: u64,
        reply: oneshot::Sender<Option<RtpReport>>,
    },
    Finish {
        reply: oneshot::Sender<ShardTotals>,
    },
}

/// What a shard counted over the whole run.
#[derive(Debug, Clone)]
pub struct ShardTotals {
    /// Transit-deviation histogram, 1 ms bins.
    pub deviations: Vec<u64>,
    /// Datagrams the socket refused to send (buffer full or an error).
    pub send_errors: u64,
    /// Datagrams that matched no call.
    pub unmatched: u64,
}

struct Shard {
    commands: mpsc::UnboundedSender<Command>,
    addr: SocketAddr,
}

/// The shards.
pub struct MediaMux {
    shards: Vec<Shard>,
    next: AtomicUsize,
    next_id: std::sync::atomic::AtomicU64,
}

impl MediaMux {
    /// `shards` shards with sockets on `ip`, sending `audio`.
    pub fn start(ip: IpAddr, shards: usize, audio: Arc<EncodedAudio>) -> io::Result<MediaMux> {
        let mut started = Vec::with_capacity(shards);
        for _ in 0..shards.max(1) {
            let (rtp, rtcp) = bind_pair(ip)?;
            let addr = rtp.local_addr()?;
            let (commands, receiver) = mpsc::unbounded_channel();
            tokio::spawn(run_shard(rtp, rtcp, receiver, audio.clone()));
            started.push(Shard { commands, addr });
        }
        Ok(MediaMux {
            shards: started,
            next: AtomicUsize::new(0),
            next_id: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Picks the shard of a new call (round robin) and its RTP address for the SDP.
    pub fn assign(&self) -> (StreamKey, SocketAddr) {
        let shard = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        (StreamKey { shard, id }, self.shards[shard].addr)
    }

    /// Starts sending RTP to `remote` on the shard's next 20 ms tick, and
    /// measuring what comes back.
    pub fn open(&self, key: StreamKey, remote: SocketAddr, params: StreamParams) {
        let _ = self.shards[key.shard].commands.send(Command::Open {
            id: key.id,
            remote,
            params: Box::new(params),
        });
    }

    /// Stops the stream and returns what it measured (`None` if it was never opened).
    pub async fn close(&self, key: StreamKey) -> Option<RtpReport> {
        let (reply, answer) = oneshot::channel();
        self.shards[key.shard]
            .commands
            .send(Command::Close { id: key.id, reply })
            .ok()?;
        answer.await.ok().flatten()
    }

    /// Stops every shard and adds up their totals.
    pub async fn finish(self) -> ShardTotals {
        let mut totals = ShardTotals {
            deviations: vec![0; DEVIATION_BINS],
            send_errors: 0,
            unmatched: 0,
        };
        for shard in self.shards {
            let (reply, answer) = oneshot::channel();
            if shard.commands.send(Command::Finish { reply }).is_err() {
                continue;
            }
            if let Ok(shard) = answer.await {
                for (sum, n) in totals.deviations.iter_mut().zip(shard.deviations) {
                    *sum += n;
                }
                totals.send_errors += shard.send_errors;
                totals.unmatched += shard.unmatched;
            }
        }
        totals
    }
}

/// An even port for RTP and the next one for RTCP (which the far end sends to
/// unless told otherwise: it must not land on somebody else's socket).
fn bind_pair(ip: IpAddr) -> io::Result<(StdUdpSocket, StdUdpSocket)> {
    let mut rng = rand::thread_rng();
    let mut last_error = None;
    for _ in 0..BIND_ATTEMPTS {
        let port = rng.gen_range(PORT_RANGE) & !1;
        let rtp = match bind(SocketAddr::new(ip, port)) {
            Ok(socket) => socket,
            Err(error) => {
                last_error = Some(error);
                continue;
            }
        };
        match bind(SocketAddr::new(ip, port + 1)) {
            Ok(rtcp) => return Ok((rtp, rtcp)),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no free port pair")))
}

fn bind(addr: SocketAddr) -> io::Result<StdUdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let socket: StdUdpSocket = socket.into();
    enable_timestamps(&socket);
    Ok(socket)
}

struct Entry {
    id: u64,
    remote: SocketAddr,
    /// `remote` as the kernel takes it, converted once.
    destination: SockAddr,
    stream: RtpStream,
}

/// A shard's calls: a dense list the tick walks, and indexes into it for
/// telling arriving datagrams apart. The indexes hash with FxHash: their keys
/// are our own ids, SSRCs and the far end's addresses, hashed once per datagram.
#[derive(Default)]
struct Table {
    entries: Vec<Entry>,
    by_id: FxHashMap<u64, usize>,
    by_source: FxHashMap<SocketAddr, usize>,
    by_ssrc: FxHashMap<u32, usize>,
}

impl Table {
    fn open(&mut self, id: u64, remote: SocketAddr, stream: RtpStream) {
        let index = self.entries.len();
        self.by_source.insert(remote, index);
        self.by_ssrc.insert(stream.ssrc(), index);
        self.by_id.insert(id, index);
        self.entries.push(Entry {
            id,
            remote,
            destination: SockAddr::from(remote),
            stream,
        });
    }

    fn close(&mut self, id: u64) -> Option<RtpReport> {
        let index = self.by_id.remove(&id)?;
        let entry = self.entries.swap_remove(index);
        if self.by_source.get(&entry.remote) == Some(&index) {
            self.by_source.remove(&entry.remote);
        }
        if self.by_ssrc.get(&entry.stream.ssrc()) == Some(&index) {
            self.by_ssrc.remove(&entry.stream.ssrc());
        }
        // The last entry took the closed one's place: its indexes follow it.
        let moved_from = self.entries.len();
        if let Some(moved) = self.entries.get(index) {
            self.by_id.insert(moved.id, index);
            for slot in [
                self.by_source.get_mut(&moved.remote),
                self.by_ssrc.get_mut(&moved.stream.ssrc()),
            ]
            .into_iter()
            .flatten()
            {
                if *slot == moved_from {
                    *slot = index;
                }
            }
        }
        Some(entry.stream.report())
    }

    /// The call a datagram from `from` belongs to: by our own SSRC in it (a far
    /// end echoing raw packets from one port), else by its source address.
    fn find(&mut self, from: Option<SocketAddr>, bytes: &[u8]) -> Option<&mut Entry> {
        let ssrc = bytes
            .get(8..12)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let index = ssrc
            .and_then(|ssrc| self.by_ssrc.get(&ssrc))
            .or_else(|| from.and_then(|from| self.by_source.get(&from)))?;
        self.entries.get_mut(*index)
    }
}

async fn run_shard(
    rtp: StdUdpSocket,
    rtcp: StdUdpSocket,
    mut commands: mpsc::UnboundedReceiver<Command>,
    audio: Arc<EncodedAudio>,
) {
    let mut table = Table::default();
    let mut deviations = vec![0u64; DEVIATION_BINS];
    let mut unmatched = 0u64;
    let mut receiver = BatchReceiver::new();
    let mut sender = BatchSender::new(MAX_DATAGRAM);
    let mut packet = vec![0u8; MAX_DATAGRAM];
    let epoch = Instant::now();
    let mut next_tick = epoch + FRAME;
    let mut next_rtcp_drain = epoch + RTCP_DRAIN_INTERVAL;
    loop {
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                Some(Command::Open { id, remote, params }) => {
                    // Every stream of the shard sends on the same 20 ms grid,
                    // so one wake-up serves them all.
                    let now = Instant::now();
                    let since = now.saturating_duration_since(epoch).as_micros() as u64;
                    let step = FRAME.as_micros() as u64;
                    let start = epoch + Duration::from_micros(since.div_ceil(step) * step);
                    table.open(id, remote, RtpStream::new(start, *params));
                    next_tick = next_tick.min(start);
                }
                Some(Command::Close { id, reply }) => {
                    let _ = reply.send(table.close(id));
                }
                Some(Command::Finish { reply }) => {
                    sender.flush(&rtp);
                    let send_errors = sender.dropped();
                    let _ = reply.send(ShardTotals { deviations, send_errors, unmatched });
                    return;
                }
                None => return,
            },
            _ = tokio::time::sleep_until(next_tick.into()) => {
                let now = Instant::now();
                // What arrived since the last tick, a batch per system call, each
                // datagram at its kernel arrival time: no wake-up per datagram.
                let clock = Clock::at(now);
                loop {
                    let count = match receiver.recv(&rtp) {
                        Ok(count) => count,
                        Err(error) => {
                            warn!(%error, "RTP receive failed");
                            break;
                        }
                    };
                    for datagram in receiver.datagrams() {
                        let at = clock.instant_of(datagram.stamp);
                        match table.find(datagram.from, datagram.bytes) {
                            Some(entry) => entry.stream.on_datagram(at, datagram.bytes, &audio, &mut deviations),
                            None => unmatched += 1,
                        }
                    }
                    if count < BATCH {
                        break;
                    }
                }
                if now >= next_rtcp_drain {
                    drain(&rtcp, &mut receiver);
                    next_rtcp_drain = now + RTCP_DRAIN_INTERVAL;
                }
                let mut earliest = now + FRAME;
                for entry in &mut table.entries {
                    let destination = &entry.destination;
                    entry.stream.on_tick(now, &audio, &mut packet, |datagram| {
                        sender.push(&rtp, datagram, destination);
                    });
                    earliest = earliest.min(entry.stream.poll_timeout());
                }
                sender.flush(&rtp);
                next_tick = earliest.max(now + Duration::from_micros(500));
            }
        }
    }
}

/// Reads and drops what is queued on the RTCP socket.
fn drain(rtcp: &StdUdpSocket, receiver: &mut BatchReceiver) {
    loop {
        match receiver.recv(rtcp) {
            Ok(count) if count == BATCH => {}
            Ok(_) => return,
            Err(error) => {
                warn!(%error, "RTCP receive failed");
                return;
            }
        }
    }
}
