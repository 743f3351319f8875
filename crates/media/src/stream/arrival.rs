//! When a datagram really arrived: UDP reads with the kernel's receive
//! timestamps (`SO_TIMESTAMPNS`), so that a worker may read its sockets once
//! per 20 ms tick instead of waking for every datagram, and the jitter buffer
//! and the RFC 3550 jitter still see each packet's own arrival time. The kernel
//! turns timestamping on lazily when the first socket asks for it: the first
//! datagrams after that may carry the time they were read instead.
//!
//! The sockets read here are plain non-blocking sockets, not registered with
//! the runtime's reactor: a registered socket makes every arriving datagram
//! (and every freed send buffer) an epoll event that wakes the I/O driver,
//! although nobody waits for it. Read on a tick, a socket needs no readiness.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{
    recvmmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage,
};

/// Room for the timestamp control message.
const CMSG_SPACE: usize = 64;

/// Asks the kernel to stamp every datagram received on `socket` (best effort:
/// without it, arrivals are taken at the time of the read).
pub fn enable_timestamps(socket: &StdUdpSocket) {
    if let Err(error) = setsockopt(socket.as_raw_fd(), sockopt::ReceiveTimestampns, &true) {
        tracing::debug!(%error, "no kernel receive timestamps; arrivals taken at read time");
    }
}

/// The monotonic clock and the wall clock read together, to place kernel
/// (wall-clock) receive timestamps on the monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    now: Instant,
    wall: Duration,
}

impl Clock {
    /// Both clocks, read now (`now` is the monotonic one).
    pub fn at(now: Instant) -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock { now, wall }
    }

    /// The monotonic time of a kernel timestamp (`now` when there is none, or
    /// when it is in the future of the wall clock read).
    pub fn instant_of(&self, stamp: Option<Duration>) -> Instant {
        match stamp {
            Some(stamp) => self
                .now
                .checked_sub(self.wall.saturating_sub(stamp))
                .unwrap_or(self.now),
            None => self.now,
        }
    }
}

/// Datagrams read from one socket in one system call, at most.
pub const BATCH: usize = 4;

/// What [`BatchReceiver::recv`] read into one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes of the datagram, at the start of its slot.
    pub len: usize,
    /// Its source.
    pub from: SocketAddr,
    /// Its kernel receive time (wall clock), if stamped.
    pub stamp: Option<Duration>,
}

impl Received {
    /// A slot with nothing in it, to make a batch's array from.
    pub const NONE: Received = Received {
        len: 0,
        from: SocketAddr::V4(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0)),
        stamp: None,
    };
}

/// Reads up to [`BATCH`] datagrams per system call (`recvmmsg`), each with its kernel
/// receive timestamp. A stream gets one packet per 20 ms tick: one call then both reads
/// it and learns that nothing more is waiting, where `recvmsg` needs a second call that
/// fails with `WouldBlock`. Keeps its message headers from call to call (they hold raw
/// pointers: it is not `Send`, so make one where the reads happen, e.g. per tick).
pub struct BatchReceiver {
    headers: MultiHeaders<SockaddrStorage>,
}

impl std::fmt::Debug for BatchReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchReceiver").finish_non_exhaustive()
    }
}

impl Default for BatchReceiver {
    fn default() -> BatchReceiver {
        BatchReceiver {
            headers: MultiHeaders::preallocate(BATCH, Some(Vec::with_capacity(CMSG_SPACE))),
        }
    }
}

impl BatchReceiver {
    /// Reads what is waiting on `socket`, without waiting: datagram `i` into
    /// `buffer[i * slot..(i + 1) * slot]`, its length, source and stamp into `out[i]`.
    /// `buffer` holds [`BATCH`] slots. Returns how many were read; `WouldBlock` when
    /// there was none. A datagram longer than `slot` is truncated.
    pub fn recv(
        &mut self,
        socket: &StdUdpSocket,
        buffer: &mut [u8],
        slot: usize,
        out: &mut [Received; BATCH],
    ) -> io::Result<usize> {
        if slot == 0 || buffer.len() < BATCH * slot {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "receive buffer smaller than a batch of slots",
            ));
        }
        let mut chunks = buffer.chunks_exact_mut(slot);
        let slices: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            [IoSliceMut::new(
                chunks.next().expect("the buffer holds a batch of slots"),
            )]
        });
        let results = recvmmsg(
            socket.as_raw_fd(),
            &mut self.headers,
            slices.iter(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        let mut count = 0;
        for (message, slot) in results.zip(out.iter_mut()) {
            let Some(from) = message.address.as_ref().and_then(socket_addr) else {
                continue;
            };
            *slot = Received {
                len: message.bytes,
                from,
                stamp: stamp_of(message.cmsgs()),
            };
            count += 1;
        }
        Ok(count)
    }
}

/// The receive timestamp among a datagram's control messages.
fn stamp_of(controls: impl Iterator<Item = ControlMessageOwned>) -> Option<Duration> {
    let mut stamp = None;
    for control in controls {
        if let ControlMessageOwned::ScmTimestampns(time) = control {
            let secs = u64::try_from(time.tv_sec()).unwrap_or(0);
            let nanos = u32::try_from(time.tv_nsec()).unwrap_or(0);
            stamp = Some(Duration::new(secs, nanos));
        }
    }
    stamp
}

fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4.ip().into(), v4.port())));
    }
    let v6 = address.as_sockaddr_in6()?;
    Some(SocketAddr::V6(SocketAddrV6::new(
        v6.ip(),
        v6.port(),
        v6.flowinfo(),
        v6.scope_id(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_timestamp_is_placed_on_the_monotonic_clock() {
        let now = Instant::now();
        let clock = Clock {
            now,
            wall: Duration::from_secs(1_000),
        };
        let arrived = clock.instant_of(Some(Duration::from_millis(999_985)));
        assert_eq!(now - arrived, Duration::from_millis(15));
        assert_eq!(clock.instant_of(None), now);
        assert_eq!(
            clock.instant_of(Some(Duration::from_secs(1_001))),
            now,
            "a stamp ahead of the wall clock read is taken as now"
        );
    }

    /// A non-blocking loopback socket with receive timestamps, and a sender.
    fn stamped_socket() -> (StdUdpSocket, SocketAddr, StdUdpSocket) {
        let socket = StdUdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_nonblocking(true).expect("nonblocking");
        enable_timestamps(&socket);
        let addr = socket.local_addr().expect("addr");
        let sender = StdUdpSocket::bind("127.0.0.1:0").expect("bind");
        (socket, addr, sender)
    }

    #[test]
    fn datagrams_come_with_the_time_they_arrived() {
        let (socket, addr, sender) = stamped_socket();
        let slot = 64;
        let mut buf = vec![0u8; BATCH * slot];
        let mut got = [Received::NONE; BATCH];
        let mut batch = BatchReceiver::default();
        // The kernel turns receive timestamping on lazily (a deferred static key): the
        // first datagrams after the first socket asks may carry the read time. Read until
        // one shows the real wait, a few times at most.
        let mut waits = Vec::new();
        for attempt in 0..10u8 {
            sender.send_to(&[attempt], addr).expect("send");
            std::thread::sleep(Duration::from_millis(30));
            let count = batch.recv(&socket, &mut buf, slot, &mut got).expect("read");
            assert_eq!(count, 1);
            assert_eq!(&buf[..got[0].len], &[attempt]);
            assert_eq!(got[0].from, sender.local_addr().expect("addr"));
            assert!(got[0].stamp.is_some(), "the kernel stamps datagrams");
            let clock = Clock::at(Instant::now());
            let waited = clock.now - clock.instant_of(got[0].stamp);
            waits.push(waited);
            if waited >= Duration::from_millis(25) {
                break;
            }
        }
        assert!(
            waits
                .last()
                .is_some_and(|w| *w >= Duration::from_millis(25)),
            "the arrival, not the read, 30 ms earlier: {waits:?}"
        );
        let none = batch
            .recv(&socket, &mut buf, slot, &mut got)
            .expect_err("nothing left");
        assert_eq!(none.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_batch_reads_what_is_waiting_in_one_call_and_says_when_it_is_drained() {
        let (socket, addr, sender) = stamped_socket();
        for k in 0..6u8 {
            sender
                .send_to(&[k; 3][..usize::from(k % 3) + 1], addr)
                .expect("send");
        }
        std::thread::sleep(Duration::from_millis(20));
        let slot = 16;
        let mut buffer = vec![0u8; BATCH * slot];
        let mut got = [Received::NONE; BATCH];
        let mut batch = BatchReceiver::default();
        let mut seen = Vec::new();
        loop {
            match batch.recv(&socket, &mut buffer, slot, &mut got) {
                Ok(count) => {
                    assert!(count <= BATCH);
                    for (i, datagram) in got[..count].iter().enumerate() {
                        assert_eq!(datagram.from, sender.local_addr().expect("addr"));
                        assert!(datagram.stamp.is_some(), "stamped");
                        seen.push(buffer[i * slot..i * slot + datagram.len].to_vec());
                    }
                    if count < BATCH {
                        break;
                    }
                }
                Err(error) => panic!("{error}"),
            }
        }
        let expected: Vec<Vec<u8>> = (0..6u8).map(|k| vec![k; usize::from(k % 3) + 1]).collect();
        assert_eq!(seen, expected, "all six, in order, over two calls");
        let none = batch
            .recv(&socket, &mut buffer, slot, &mut got)
            .expect_err("drained");
        assert_eq!(none.kind(), io::ErrorKind::WouldBlock);
        let small = batch
            .recv(&socket, &mut buffer[..slot], slot, &mut got)
            .expect_err("too small");
        assert_eq!(small.kind(), io::ErrorKind::InvalidInput);
    }
}
