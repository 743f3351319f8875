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
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage,
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

/// Reads one datagram without waiting, with its kernel receive timestamp;
/// `WouldBlock` when there is none.
pub fn try_recv_stamped(
    socket: &StdUdpSocket,
    buf: &mut [u8],
    cmsg: &mut Vec<u8>,
) -> io::Result<(usize, SocketAddr, Option<Duration>)> {
    cmsg.clear();
    cmsg.reserve(CMSG_SPACE);
    let mut iov = [IoSliceMut::new(buf)];
    let message = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let mut stamp = None;
    for control in message.cmsgs() {
        if let ControlMessageOwned::ScmTimestampns(time) = control {
            let secs = u64::try_from(time.tv_sec()).unwrap_or(0);
            let nanos = u32::try_from(time.tv_nsec()).unwrap_or(0);
            stamp = Some(Duration::new(secs, nanos));
        }
    }
    let from = message
        .address
        .as_ref()
        .and_then(socket_addr)
        .ok_or_else(|| io::Error::other("datagram without a source address"))?;
    Ok((message.bytes, from, stamp))
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

    #[test]
    fn datagrams_come_with_the_time_they_arrived() {
        let socket = StdUdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_nonblocking(true).expect("nonblocking");
        enable_timestamps(&socket);
        let addr = socket.local_addr().expect("addr");
        let sender = StdUdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut buf = [0u8; 64];
        let mut cmsg = Vec::new();
        // The kernel turns receive timestamping on lazily (a deferred static key): the
        // first datagrams after the first socket asks may carry the read time. Read until
        // one shows the real wait, a few times at most.
        let mut waits = Vec::new();
        for attempt in 0..10u8 {
            sender.send_to(&[attempt], addr).expect("send");
            std::thread::sleep(Duration::from_millis(30));
            let (len, from, stamp) = try_recv_stamped(&socket, &mut buf, &mut cmsg).expect("read");
            assert_eq!(&buf[..len], &[attempt]);
            assert_eq!(from, sender.local_addr().expect("addr"));
            assert!(stamp.is_some(), "the kernel stamps datagrams");
            let clock = Clock::at(Instant::now());
            let waited = clock.now - clock.instant_of(stamp);
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
        let none = try_recv_stamped(&socket, &mut buf, &mut cmsg).expect_err("nothing left");
        assert_eq!(none.kind(), io::ErrorKind::WouldBlock);
    }
}
