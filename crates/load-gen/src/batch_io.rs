//! Batched UDP I/O for the media shards: one `recvmmsg(2)` reads up to
//! [`BATCH`] datagrams, each with its source address and its kernel receive
//! timestamp (`SO_TIMESTAMPNS`, which the socket must have asked for), and one
//! `sendmmsg(2)` sends up to [`BATCH`] datagrams, each to its own destination.
//! A shard's cost is then a few system calls per 20 ms tick instead of one per
//! packet each way.
//!
//! Buffers, addresses and control-message space are allocated once; the
//! message headers, which hold raw pointers into them, are rebuilt on the
//! stack before every call (a few kilobytes of stores, no allocation), which
//! also keeps the structs `Send` and free of self-references.
//!
//! Why libc and not nix's `recvmmsg` and `MultiHeaders` (nix 0.26):
//! `msg_namelen` and `msg_controllen` are in-out fields (going in, the room in
//! the buffer; coming out, what the kernel wrote), and nix refills only the
//! iovecs between calls. A slot that once received a datagram without a
//! control message keeps a control capacity of zero, and every later datagram
//! read into it comes without its timestamp (nix-rust/nix pull request 2813,
//! open). Its `sendmmsg` reports how many went only through an iterator that
//! reads address slots the send never wrote. Here every header is primed in
//! full before each call.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{SockAddr, SockAddrStorage};

/// Datagrams per system call. RTP arrives and leaves a shard in bursts of
/// hundreds per tick; 64 headers are 4 KiB of stack.
pub const BATCH: usize = 64;
/// Room for one received datagram: RTP from a telephony peer is a few
/// hundred bytes, and anything longer is cut (as a plain `recv` would cut it).
pub const RECV_SLOT: usize = 2048;
/// Room for the control messages of one received datagram, in 8-byte words
/// (a `cmsghdr` is aligned like a `size_t`): the `SCM_TIMESTAMPNS` message
/// takes `CMSG_SPACE(16)`, 32 bytes; 64 leave room.
const CONTROL_WORDS: usize = 8;

/// One datagram of the last [`BatchReceiver::recv`].
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// Its bytes (at most [`RECV_SLOT`]).
    pub bytes: &'a [u8],
    /// Where it came from (`None` only for an address family other than IP).
    pub from: Option<SocketAddr>,
    /// When the kernel received it, on the wall clock (`None` when the socket
    /// has no receive timestamps).
    pub stamp: Option<Duration>,
}

/// What one received datagram left beside its bytes.
#[derive(Debug, Clone, Copy)]
struct Received {
    len: usize,
    from: Option<SocketAddr>,
    stamp: Option<Duration>,
}

/// Reads datagrams [`BATCH`] at a time into buffers allocated once.
pub struct BatchReceiver {
    buffers: Vec<u8>,
    addresses: Vec<libc::sockaddr_storage>,
    controls: Vec<[u64; CONTROL_WORDS]>,
    received: Vec<Received>,
}

impl Default for BatchReceiver {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchReceiver {
    /// Buffers for [`BATCH`] datagrams of up to [`RECV_SLOT`] bytes.
    pub fn new() -> BatchReceiver {
        BatchReceiver {
            buffers: vec![0; BATCH * RECV_SLOT],
            // SAFETY: all zeroes is a valid `sockaddr_storage` (plain integers).
            addresses: vec![unsafe { mem::zeroed() }; BATCH],
            controls: vec![[0; CONTROL_WORDS]; BATCH],
            received: Vec::with_capacity(BATCH),
        }
    }

    /// Reads what is queued on `socket` without waiting, up to [`BATCH`]
    /// datagrams: how many (0 when none), then in [`datagrams`](Self::datagrams).
    /// Fewer than [`BATCH`] means the queue was emptied.
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        self.received.clear();
        // SAFETY: all zeroes is a valid iovec and mmsghdr (null pointers, zero lengths).
        let mut iovecs: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for (iovec, slot) in iovecs
            .iter_mut()
            .zip(self.buffers.chunks_exact_mut(RECV_SLOT))
        {
            iovec.iov_base = slot.as_mut_ptr().cast();
            iovec.iov_len = slot.len();
        }
        let iovec_base = iovecs.as_mut_ptr();
        let address_len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        for (index, ((header, address), control)) in headers
            .iter_mut()
            .zip(self.addresses.iter_mut())
            .zip(self.controls.iter_mut())
            .enumerate()
        {
            let header = &mut header.msg_hdr;
            // In-out fields: primed with the room they have, every call.
            header.msg_name = (address as *mut libc::sockaddr_storage).cast();
            header.msg_namelen = address_len;
            header.msg_iov = iovec_base.wrapping_add(index);
            header.msg_iovlen = 1;
            header.msg_control = control.as_mut_ptr().cast();
            header.msg_controllen = mem::size_of_val(control) as _;
        }
        // SAFETY: every header points at its own iovec (in `iovecs`, on this stack
        // frame), whose buffer is a distinct RECV_SLOT-byte slot of `self.buffers`, at
        // its own address and control slots, all with their true sizes; nothing else
        // touches them until the call returns. The kernel writes at most that much.
        let count = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if count < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock => Ok(0),
                _ => Err(error),
            };
        }
        for (header, address) in headers
            .iter()
            .zip(self.addresses.iter())
            .take(count as usize)
        {
            self.received.push(Received {
                len: (header.msg_len as usize).min(RECV_SLOT),
                from: source(address, header.msg_hdr.msg_namelen),
                stamp: timestamp(&header.msg_hdr),
            });
        }
        Ok(self.received.len())
    }

    /// The datagrams of the last [`recv`](Self::recv), in arrival order.
    pub fn datagrams(&self) -> impl Iterator<Item = Datagram<'_>> + '_ {
        self.received
            .iter()
            .zip(self.buffers.chunks_exact(RECV_SLOT))
            .map(|(received, slot)| Datagram {
                bytes: &slot[..received.len],
                from: received.from,
                stamp: received.stamp,
            })
    }
}

/// The source address the kernel wrote.
fn source(address: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_storage` is the type SockAddrStorage wraps (repr(transparent)).
    unsafe { *storage.view_as::<libc::sockaddr_storage>() = *address };
    // SAFETY: the kernel initialised `len` bytes of the address (at most its size).
    let address = unsafe { SockAddr::new(storage, len) };
    address.as_socket()
}

/// The `SCM_TIMESTAMPNS` control message of a received datagram, if whole.
fn timestamp(header: &libc::msghdr) -> Option<Duration> {
    if header.msg_flags & libc::MSG_CTRUNC != 0 {
        return None;
    }
    // `msg_controllen` is a size_t with glibc, a socklen_t with musl.
    #[allow(clippy::unnecessary_cast)]
    let end = (header.msg_control as usize).saturating_add(header.msg_controllen as usize);
    // SAFETY: the header's control pointer and length are the buffer primed before the
    // call and the length the kernel wrote into it; CMSG_FIRSTHDR/NXTHDR stay inside it.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(header) };
    while !cmsg.is_null() {
        // SAFETY: a non-null header from CMSG_FIRSTHDR/NXTHDR lies inside the buffer.
        let control = unsafe { &*cmsg };
        if control.cmsg_level == libc::SOL_SOCKET && control.cmsg_type == libc::SCM_TIMESTAMPNS {
            // SAFETY: CMSG_DATA is within the message; that it holds a whole timespec
            // is checked against the end of what the kernel wrote before reading.
            let data = unsafe { libc::CMSG_DATA(cmsg) };
            if (data as usize).saturating_add(mem::size_of::<libc::timespec>()) > end {
                return None;
            }
            // SAFETY: in bounds (just checked); control data need not be aligned.
            let time = unsafe { std::ptr::read_unaligned(data.cast::<libc::timespec>()) };
            let secs = u64::try_from(time.tv_sec).ok()?;
            let nanos = u32::try_from(time.tv_nsec).ok()?;
            return Some(Duration::new(secs, nanos));
        }
        // SAFETY: as for CMSG_FIRSTHDR; NXTHDR returns null past the end.
        cmsg = unsafe { libc::CMSG_NXTHDR(header, cmsg) };
    }
    None
}

/// Queues datagrams, each with its own destination, and sends them
/// [`BATCH`] at a time. Never blocks: a datagram the socket refuses (its
/// buffer full, or an error for that destination) is dropped and counted, as
/// UDP would lose it.
pub struct BatchSender {
    slot: usize,
    buffers: Vec<u8>,
    lens: Vec<usize>,
    destinations: Vec<SockAddr>,
    sent: u64,
    dropped: u64,
}

impl BatchSender {
    /// Room for [`BATCH`] datagrams of up to `slot` bytes.
    pub fn new(slot: usize) -> BatchSender {
        BatchSender {
            slot,
            buffers: vec![0; BATCH * slot],
            lens: Vec::with_capacity(BATCH),
            destinations: Vec::with_capacity(BATCH),
            sent: 0,
            dropped: 0,
        }
    }

    /// Queues `datagram` for `to`, sending the queue on `socket` when it is full.
    /// A datagram longer than the slot is dropped (and counted).
    pub fn push(&mut self, socket: &impl AsRawFd, datagram: &[u8], to: &SockAddr) {
        if datagram.len() > self.slot {
            self.dropped += 1;
            return;
        }
        let index = self.lens.len();
        let start = index * self.slot;
        self.buffers[start..start + datagram.len()].copy_from_slice(datagram);
        self.lens.push(datagram.len());
        self.destinations.push(to.clone());
        if self.lens.len() == BATCH {
            self.flush(socket);
        }
    }

    /// Sends what is queued.
    pub fn flush(&mut self, socket: &impl AsRawFd) {
        let count = self.lens.len();
        if count == 0 {
            return;
        }
        // SAFETY: all zeroes is a valid iovec and mmsghdr (null pointers, zero lengths).
        let mut iovecs: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
        for ((iovec, slot), len) in iovecs
            .iter_mut()
            .zip(self.buffers.chunks_exact_mut(self.slot))
            .zip(&self.lens)
        {
            iovec.iov_base = slot.as_mut_ptr().cast();
            iovec.iov_len = *len;
        }
        let iovec_base = iovecs.as_mut_ptr();
        for (index, (header, destination)) in headers.iter_mut().zip(&self.destinations).enumerate()
        {
            let header = &mut header.msg_hdr;
            // The kernel only reads the destination of a send.
            header.msg_name = destination.as_ptr().cast_mut().cast();
            header.msg_namelen = destination.len();
            header.msg_iov = iovec_base.wrapping_add(index);
            header.msg_iovlen = 1;
        }
        let mut next = 0;
        while next < count {
            let rest = &mut headers[next..count];
            // SAFETY: each of these headers points at its own iovec (on this stack frame)
            // over the first `len` bytes of its slot of `self.buffers`, and at its
            // destination in `self.destinations`, none of which changes during the call.
            let sent = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    rest.as_mut_ptr(),
                    rest.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if sent > 0 {
                // A partial send stops at a message the kernel refused: the next call
                // starts with it, and either sends it or returns its error.
                next += sent as usize;
                self.sent += sent as u64;
                continue;
            }
            let error = io::Error::last_os_error();
            match error.kind() {
                io::ErrorKind::Interrupted if sent < 0 => {}
                // The send buffer is full: so it is for the rest of the batch.
                io::ErrorKind::WouldBlock if sent < 0 => {
                    self.dropped += (count - next) as u64;
                    next = count;
                }
                // This destination is refused (no route, bad address): the others may not be.
                _ => {
                    self.dropped += 1;
                    next += 1;
                }
            }
        }
        self.lens.clear();
        self.destinations.clear();
    }

    /// Datagrams handed to the kernel so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Datagrams dropped so far: refused by the socket, or too long for a slot.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};

    use media::stream::arrival::enable_timestamps;

    fn socket() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_nonblocking(true).expect("nonblocking");
        socket
    }

    fn wall() -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
    }

    /// A datagram read: bytes, source, kernel timestamp.
    type Read = (Vec<u8>, Option<SocketAddr>, Option<Duration>);

    /// Reads until the queue is empty (a short read): what each call returned, and
    /// every datagram.
    fn read_all(receiver: &mut BatchReceiver, socket: &UdpSocket) -> (Vec<usize>, Vec<Read>) {
        let mut calls = Vec::new();
        let mut all = Vec::new();
        loop {
            let n = receiver.recv(socket).expect("recvmmsg");
            calls.push(n);
            all.extend(
                receiver
                    .datagrams()
                    .map(|d| (d.bytes.to_vec(), d.from, d.stamp)),
            );
            if n < BATCH {
                return (calls, all);
            }
        }
    }

    /// The kernel turns receive timestamping on lazily (a deferred static key): until
    /// it is on, datagrams carry the time they were read. Waits until one shows the
    /// real wait, a few times at most.
    fn warm_up_timestamps(receiver: &mut BatchReceiver, socket: &UdpSocket) {
        let sender = self::socket();
        for _ in 0..20 {
            sender
                .send_to(b"warm", socket.local_addr().expect("addr"))
                .expect("send");
            std::thread::sleep(Duration::from_millis(20));
            let (_, got) = read_all(receiver, socket);
            let read_at = wall();
            if got.iter().any(|(_, _, stamp)| {
                stamp.is_some_and(|s| read_at - s >= Duration::from_millis(15))
            }) {
                return;
            }
        }
        panic!("the kernel never stamped a datagram at its arrival");
    }

    #[test]
    fn more_datagrams_than_one_call_holds_come_in_order_with_sources_and_arrival_times() {
        let socket = socket();
        enable_timestamps(&socket);
        let mut receiver = BatchReceiver::new();
        warm_up_timestamps(&mut receiver, &socket);

        let senders = [self::socket(), self::socket()];
        let total = 2 * BATCH + 22;
        let sent_at = wall();
        for i in 0..total {
            let payload = (i as u32).to_be_bytes();
            senders[i % 2]
                .send_to(&payload, socket.local_addr().expect("addr"))
                .expect("send");
        }
        std::thread::sleep(Duration::from_millis(30));
        let (calls, got) = read_all(&mut receiver, &socket);
        let read_at = wall();
        assert_eq!(calls, vec![BATCH, BATCH, 22], "three calls for {total}");
        assert_eq!(got.len(), total);
        for (i, (bytes, from, stamp)) in got.iter().enumerate() {
            assert_eq!(bytes.as_slice(), (i as u32).to_be_bytes(), "in order");
            assert_eq!(*from, Some(senders[i % 2].local_addr().expect("addr")));
            let stamp = stamp.expect("every datagram has its timestamp");
            assert!(
                stamp >= sent_at && read_at - stamp >= Duration::from_millis(25),
                "datagram {i} stamped at its arrival, not at the read 30 ms later"
            );
        }
        assert_eq!(receiver.recv(&socket).expect("empty"), 0);
    }

    #[test]
    fn a_datagram_without_a_timestamp_does_not_cost_its_slot_the_later_ones() {
        let socket = socket();
        let sender = self::socket();
        let addr = socket.local_addr().expect("addr");
        let mut receiver = BatchReceiver::new();
        // Without timestamps the kernel writes back a control length of zero into
        // every slot used; reused as such, the slots would take no timestamp again.
        for i in 0..3u8 {
            sender.send_to(&[i], addr).expect("send");
        }
        let (_, got) = read_all(&mut receiver, &socket);
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|(_, _, stamp)| stamp.is_none()));

        enable_timestamps(&socket);
        warm_up_timestamps(&mut receiver, &socket);
        for i in 0..3u8 {
            sender.send_to(&[i], addr).expect("send");
        }
        let (_, got) = read_all(&mut receiver, &socket);
        assert_eq!(got.len(), 3);
        assert!(
            got.iter().all(|(_, _, stamp)| stamp.is_some()),
            "the same slots carry timestamps again: {got:?}"
        );
    }

    #[test]
    fn queued_datagrams_go_in_batches_each_to_its_own_destination() {
        let sender_socket = socket();
        let receivers = [socket(), socket(), socket()];
        let destinations: Vec<SockAddr> = receivers
            .iter()
            .map(|r| SockAddr::from(r.local_addr().expect("addr")))
            .collect();
        let mut sender = BatchSender::new(64);
        let total = 2 * BATCH + 10;
        for i in 0..total {
            sender.push(
                &sender_socket,
                &(i as u32).to_be_bytes(),
                &destinations[i % 3],
            );
        }
        assert_eq!(
            sender.sent(),
            2 * BATCH as u64,
            "two full batches went by themselves"
        );
        sender.flush(&sender_socket);
        assert_eq!(sender.sent(), total as u64);
        assert_eq!(sender.dropped(), 0);

        let start = Instant::now();
        let mut receiver = BatchReceiver::new();
        for (r, socket) in receivers.iter().enumerate() {
            let (_, got) = read_all(&mut receiver, socket);
            let expected: Vec<Vec<u8>> = (0..total)
                .filter(|i| i % 3 == r)
                .map(|i| (i as u32).to_be_bytes().to_vec())
                .collect();
            let bytes: Vec<Vec<u8>> = got.into_iter().map(|(b, _, _)| b).collect();
            assert_eq!(bytes, expected, "receiver {r} got its own, in order");
        }
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_refused_destination_drops_only_its_datagram_and_the_rest_of_the_batch_goes() {
        let sender_socket = socket();
        let receiver_socket = socket();
        let good = SockAddr::from(receiver_socket.local_addr().expect("addr"));
        // Port 0 is refused by the kernel (EINVAL) for that one message: sendmmsg stops
        // there and says how many went before it.
        let refused = SockAddr::from(SocketAddr::from(([127, 0, 0, 1], 0)));
        let mut sender = BatchSender::new(8);
        for i in 0..BATCH as u32 {
            let to = if i == 10 || i == 11 || i == 40 {
                &refused
            } else {
                &good
            };
            sender.push(&sender_socket, &i.to_be_bytes(), to);
        }
        sender.push(&sender_socket, &[0; 9], &good);
        assert_eq!(
            sender.dropped(),
            4,
            "three refused, one too long for a slot"
        );
        assert_eq!(sender.sent(), BATCH as u64 - 3);

        let mut receiver = BatchReceiver::new();
        let (_, got) = read_all(&mut receiver, &receiver_socket);
        let numbers: Vec<u32> = got
            .iter()
            .map(|(b, _, _)| u32::from_be_bytes(b.as_slice().try_into().expect("4 bytes")))
            .collect();
        let expected: Vec<u32> = (0..BATCH as u32)
            .filter(|i| ![10, 11, 40].contains(i))
            .collect();
        assert_eq!(numbers, expected);
    }
}
