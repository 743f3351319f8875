//! The outgoing datagram queue of a media stream: a fixed ring of buffers, so
//! writing and draining packets does not allocate once each buffer has held
//! the stream's largest datagram. A datagram is written into one staging
//! buffer of the largest size and copied into its slot at commit: every slot
//! holds what its datagrams need (about 170 bytes for G.711) instead of the
//! largest size, which keeps a stream's memory small at thousands of calls.

use std::net::SocketAddr;

/// Which of the stream's sockets a datagram leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    /// The RTP socket (also RTCP when multiplexed, RFC 5761).
    Rtp,
    /// The separate RTCP socket (RTP port + 1).
    Rtcp,
}

/// One datagram to send, borrowed from the stream until the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// Where to send it.
    pub destination: SocketAddr,
    /// Which socket to send it from.
    pub component: Component,
    /// The datagram.
    pub payload: &'a [u8],
}

/// The smallest room a slot grows to: a G.711 packet or an RTCP report fits.
const MIN_SLOT_BYTES: usize = 256;

#[derive(Debug)]
struct Slot {
    datagram: Vec<u8>,
    destination: SocketAddr,
    component: Component,
}

/// A ring of datagram buffers; when full, the oldest datagram is dropped.
#[derive(Debug)]
pub(crate) struct TxQueue {
    /// Where the next datagram is written.
    staging: Box<[u8]>,
    slots: Vec<Slot>,
    head: usize,
    len: usize,
    dropped: u64,
}

impl TxQueue {
    /// `slots` datagrams of up to `size` bytes each.
    pub(crate) fn new(slots: usize, size: usize) -> TxQueue {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        TxQueue {
            staging: vec![0; size].into_boxed_slice(),
            slots: (0..slots.max(1))
                .map(|_| Slot {
                    datagram: Vec::new(),
                    destination: unspecified,
                    component: Component::Rtp,
                })
                .collect(),
            head: 0,
            len: 0,
            dropped: 0,
        }
    }

    /// The buffer the next datagram is written into (making room by
    /// dropping the oldest queued datagram if the ring is full). Follow with
    /// [`TxQueue::commit`], or nothing to abandon the write.
    pub(crate) fn next_buffer(&mut self) -> &mut [u8] {
        if self.len == self.slots.len() {
            self.head = (self.head + 1) % self.slots.len();
            self.len -= 1;
            self.dropped += 1;
        }
        &mut self.staging
    }

    /// Queues the datagram written into the last [`TxQueue::next_buffer`].
    pub(crate) fn commit(&mut self, len: usize, destination: SocketAddr, component: Component) {
        let index = self.tail();
        let slot = &mut self.slots[index];
        let datagram = &self.staging[..len.min(self.staging.len())];
        slot.datagram.clear();
        if slot.datagram.capacity() < datagram.len() {
            // In steps, so that a stream whose packets vary in size (Opus) stops
            // growing after its first few packets.
            slot.datagram
                .reserve_exact(datagram.len().next_power_of_two().max(MIN_SLOT_BYTES));
        }
        slot.datagram.extend_from_slice(datagram);
        slot.destination = destination;
        slot.component = component;
        self.len += 1;
    }

    /// The oldest queued datagram.
    pub(crate) fn pop(&mut self) -> Option<Transmit<'_>> {
        if self.len == 0 {
            return None;
        }
        let index = self.head;
        self.head = (self.head + 1) % self.slots.len();
        self.len -= 1;
        let slot = &self.slots[index];
        Some(Transmit {
            destination: slot.destination,
            component: slot.component,
            payload: &slot.datagram,
        })
    }

    /// Datagrams dropped because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    fn tail(&self) -> usize {
        (self.head + self.len) % self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_order_and_drops_oldest_when_full() {
        let to = SocketAddr::from(([127, 0, 0, 1], 9));
        let mut queue = TxQueue::new(2, 8);
        for byte in 1..=3u8 {
            queue.next_buffer()[0] = byte;
            queue.commit(1, to, Component::Rtp);
        }
        assert_eq!(queue.dropped(), 1);
        assert_eq!(queue.pop().unwrap().payload, [2]);
        assert_eq!(queue.pop().unwrap().payload, [3]);
        assert!(queue.pop().is_none());
    }
}
