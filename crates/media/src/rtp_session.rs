//! RTP send and receive state for one media stream, sans-IO.
//!
//! [`RtpSender`] writes RTP packets (RFC 3550 section 5.1) into a caller
//! buffer: a random SSRC, random initial sequence number and timestamp, the
//! marker bit at the start of a talkspurt, and RFC 4733 telephone-event
//! packets that share the timestamp of the event start. It counts packets
//! and payload octets for the RTCP sender report.
//!
//! [`RtpReceiver`] parses datagrams without copying the payload, checks the
//! version and the payload type against the negotiated ones, follows SSRC
//! changes, feeds the RFC 3550 receive statistics ([`crate::stats`]) and
//! latches the send destination onto the source address of the peer
//! (symmetric RTP, RFC 4961) so that media crosses NATs.
//!
//! Neither reads the clock or owns a socket: the media stream driver passes
//! `now` in and sends the bytes to [`RtpReceiver::remote_addr`].

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
pub use ipnet::IpNet;
use rand::Rng;
use rtp::header::{Header, EXTENSION_PROFILE_ONE_BYTE, EXTENSION_PROFILE_TWO_BYTE};
use webrtc_util::marshal::{Marshal, Unmarshal};

use crate::stats::{ReceiveStats, SeqStatus};

/// Length of an RTP header without CSRCs or extension.
pub const RTP_HEADER_LEN: usize = 12;

/// Synchronization source identifier of an RTP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

/// RTP sequence number (16 bits, wraps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqNo(pub u16);

impl SeqNo {
    /// The sequence number `n` packets later, wrapping at 2^16.
    pub fn wrapping_add(self, n: u16) -> SeqNo {
        SeqNo(self.0.wrapping_add(n))
    }
}

/// RTP payload type, 0..=127.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PayloadType(u8);

impl PayloadType {
    /// PCMU (G.711 mu-law), static payload type 0.
    pub const PCMU: PayloadType = PayloadType(0);
    /// PCMA (G.711 A-law), static payload type 8.
    pub const PCMA: PayloadType = PayloadType(8);

    /// A payload type, or `None` when `value` does not fit in 7 bits.
    pub const fn new(value: u8) -> Option<PayloadType> {
        if value <= 127 {
            Some(PayloadType(value))
        } else {
            None
        }
    }

    /// The numeric value.
    pub const fn value(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for PayloadType {
    type Error = RtpError;

    fn try_from(value: u8) -> Result<Self, RtpError> {
        PayloadType::new(value).ok_or(RtpError::PayloadTypeOutOfRange { value })
    }
}

impl fmt::Display for PayloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Errors of RTP parsing, building and source checks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtpError {
    /// The datagram is shorter than the header it announces.
    #[error("RTP packet of {len} bytes is shorter than its {needed}-byte header")]
    TooShort {
        /// Bytes received.
        len: usize,
        /// Bytes the header needs.
        needed: usize,
    },
    /// The version field is not 2.
    #[error("RTP version {version}, expected 2")]
    BadVersion {
        /// Version found.
        version: u8,
    },
    /// A header extension element runs past the extension block.
    #[error("RTP header extension element at offset {offset} overruns the block ending at {end}")]
    BadExtension {
        /// Offset of the offending element.
        offset: usize,
        /// End of the extension block.
        end: usize,
    },
    /// The padding count is zero or larger than the payload.
    #[error("RTP padding of {padding} bytes with only {available} bytes after the header")]
    BadPadding {
        /// Padding count from the last byte.
        padding: u8,
        /// Bytes after the header.
        available: usize,
    },
    /// The header could not be decoded by the `rtp` crate.
    #[error("RTP header: {0}")]
    Header(#[from] webrtc_util::Error),
    /// The payload type was not negotiated for this stream.
    #[error("unexpected RTP payload type {payload_type}")]
    UnexpectedPayloadType {
        /// Payload type found.
        payload_type: PayloadType,
    },
    /// A number that does not fit in the 7-bit payload type field.
    #[error("payload type {value} is out of range 0..=127")]
    PayloadTypeOutOfRange {
        /// The value given.
        value: u8,
    },
    /// The packet came from an address that is neither the peer's SDP address
    /// nor in its allowed networks (dropped, never latched onto).
    #[error("RTP from {from}, which is neither the signalled peer nor in its allowed networks")]
    ForeignSource {
        /// Source address of the packet.
        from: SocketAddr,
    },
    /// The packet came from another address than the latched peer.
    #[error("RTP from {from}, but the stream is latched to {latched}")]
    UnexpectedSource {
        /// Source of the packet.
        from: SocketAddr,
        /// Address the stream is latched to.
        latched: SocketAddr,
    },
    /// The output buffer cannot hold the packet.
    #[error("output buffer of {available} bytes, the packet needs {needed}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
}

/// Sends one RTP stream: SSRC, sequence numbers, timestamps and counters.
#[derive(Debug, Clone)]
pub struct RtpSender {
    ssrc: Ssrc,
    next_seq: SeqNo,
    timestamp: u32,
    clock_rate: u32,
    started: bool,
    event_timestamp: Option<u32>,
    last_sent_at: Option<Instant>,
    packets_sent: u64,
    octets_sent: u64,
}

impl RtpSender {
    /// A sender with a random SSRC, initial sequence number and initial
    /// timestamp (RFC 3550 section 5.1), for an RTP clock of `clock_rate` Hz
    /// (8000 for G.711, 48000 for Opus).
    pub fn new<R: Rng + ?Sized>(clock_rate: u32, rng: &mut R) -> RtpSender {
        RtpSender::with_initial(Ssrc(rng.gen()), SeqNo(rng.gen()), rng.gen(), clock_rate)
    }

    /// A sender with chosen initial values (tests, or a restarted stream
    /// that keeps its SSRC).
    pub fn with_initial(ssrc: Ssrc, seq: SeqNo, timestamp: u32, clock_rate: u32) -> RtpSender {
        RtpSender {
            ssrc,
            next_seq: seq,
            timestamp,
            clock_rate,
            started: false,
            event_timestamp: None,
            last_sent_at: None,
            packets_sent: 0,
            octets_sent: 0,
        }
    }

    /// Writes an audio packet (12-byte header and `payload`) into `out` and
    /// returns its length; no allocation.
    ///
    /// `samples_elapsed` is the RTP clock advance since the previous packet
    /// (160 per 20 ms of G.711, 960 per 20 ms of Opus; more after a silence
    /// gap in which nothing was sent); it is ignored for the very first
    /// packet, which carries the random initial timestamp. `marker` marks the
    /// first packet of a talkspurt; the first packet of the stream is always
    /// marked.
    pub fn build(
        &mut self,
        now: Instant,
        payload: &[u8],
        samples_elapsed: u32,
        marker: bool,
        pt: PayloadType,
        out: &mut [u8],
    ) -> Result<usize, RtpError> {
        check_capacity(payload.len(), out.len())?;
        let timestamp = self.advance(samples_elapsed);
        self.event_timestamp = None;
        let marker = marker || !self.started;
        let len = self.write(now, payload, timestamp, marker, pt, out)?;
        Ok(len)
    }

    /// Writes an RFC 4733 telephone-event packet. `start` begins a new event:
    /// it takes the current media timestamp (advanced by `samples_elapsed`)
    /// and sets the marker bit. Later packets of the same event, including
    /// the three retransmitted end packets, keep the event's timestamp and get
    /// new sequence numbers; `samples_elapsed` still advances the media clock
    /// so the audio that follows the event continues at the right time.
    pub fn build_event(
        &mut self,
        now: Instant,
        payload: &[u8],
        samples_elapsed: u32,
        start: bool,
        pt: PayloadType,
        out: &mut [u8],
    ) -> Result<usize, RtpError> {
        check_capacity(payload.len(), out.len())?;
        let media_timestamp = self.advance(samples_elapsed);
        let (timestamp, marker) = match self.event_timestamp {
            Some(event_timestamp) if !start => (event_timestamp, false),
            _ => {
                self.event_timestamp = Some(media_timestamp);
                (media_timestamp, true)
            }
        };
        self.write(now, payload, timestamp, marker, pt, out)
    }

    /// The same stream (SSRC, sequence numbers, timestamp, counters) going on
    /// with another RTP clock: a codec change in place. The timestamp runs on
    /// from where it was, counted in the new clock from the next packet.
    pub fn with_clock_rate(&self, clock_rate: u32) -> RtpSender {
        RtpSender {
            clock_rate,
            event_timestamp: None,
            ..self.clone()
        }
    }

    /// The SSRC of this stream.
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// The sequence number the next packet will carry.
    pub fn next_seq(&self) -> SeqNo {
        self.next_seq
    }

    /// RTP clock rate in Hz.
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// Packets sent so far (the SR packet count is this modulo 2^32).
    pub fn packets_sent(&self) -> u64 {
        self.packets_sent
    }

    /// Payload octets sent so far (the SR octet count is this modulo 2^32).
    pub fn octets_sent(&self) -> u64 {
        self.octets_sent
    }

    /// The RTP timestamp that corresponds to `now`, extrapolated from the
    /// last packet sent with the RTP clock rate; `None` before the first
    /// packet. Used for the RTP timestamp of a sender report.
    pub fn rtp_timestamp_at(&self, now: Instant) -> Option<u32> {
        let sent_at = self.last_sent_at?;
        let elapsed = now.saturating_duration_since(sent_at);
        Some(
            self.timestamp
                .wrapping_add(duration_to_ticks(elapsed, self.clock_rate)),
        )
    }

    fn advance(&mut self, samples_elapsed: u32) -> u32 {
        if self.started {
            self.timestamp = self.timestamp.wrapping_add(samples_elapsed);
        }
        self.timestamp
    }

    fn write(
        &mut self,
        now: Instant,
        payload: &[u8],
        timestamp: u32,
        marker: bool,
        pt: PayloadType,
        out: &mut [u8],
    ) -> Result<usize, RtpError> {
        let header = Header {
            version: 2,
            marker,
            payload_type: pt.value(),
            sequence_number: self.next_seq.0,
            timestamp,
            ssrc: self.ssrc.0,
            ..Header::default()
        };
        let header_len = header.marshal_to(out)?;
        let end = header_len + payload.len();
        let available = out.len();
        out.get_mut(header_len..end)
            .ok_or(RtpError::BufferTooSmall {
                needed: end,
                available,
            })?
            .copy_from_slice(payload);
        self.started = true;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.last_sent_at = Some(now);
        self.packets_sent += 1;
        self.octets_sent += payload.len() as u64;
        Ok(end)
    }
}

/// A payload format negotiated for a stream (one SDP `a=rtpmap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadFormat {
    /// Payload type number.
    pub payload_type: PayloadType,
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
    /// RFC 4733 telephone-event: its timestamps mark event starts, so these
    /// packets do not feed the interarrival jitter.
    pub telephone_event: bool,
}

/// Receiver settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// Payload types accepted; others are rejected.
    pub formats: Vec<PayloadFormat>,
    /// Consecutive valid packets from one new source address before the send
    /// destination latches onto it (at least 1).
    pub latch_after_packets: u32,
    /// Re-latch onto a new source only after the latched one has been silent
    /// this long; `None` never re-latches (until [`RtpReceiver::set_sdp_addr`]).
    pub relatch_after: Option<Duration>,
    /// Networks, besides the IP address of the peer's SDP, that the peer's RTP
    /// may come from (e.g. a carrier's media servers behind NAT). Datagrams from
    /// any other address are dropped and counted, and never latched onto:
    /// symmetric RTP may move the port, not the network.
    pub allowed_networks: Vec<IpNet>,
}

impl ReceiverConfig {
    /// Accepts `formats`, latches on the first valid packet, never re-latches.
    pub fn new(formats: Vec<PayloadFormat>) -> ReceiverConfig {
        ReceiverConfig {
            formats,
            latch_after_packets: 1,
            relatch_after: None,
            allowed_networks: Vec::new(),
        }
    }
}

/// One RTP packet accepted by [`RtpReceiver::handle_packet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// SSRC of the sender.
    pub ssrc: Ssrc,
    /// Sequence number.
    pub seq: SeqNo,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Marker bit.
    pub marker: bool,
    /// The negotiated format of the payload type.
    pub format: PayloadFormat,
    /// Payload without padding; a slice of the datagram, not a copy.
    pub payload: Bytes,
    /// What the RFC 3550 sequence validation made of this packet.
    pub sequence: SeqStatus,
    /// The SSRC differs from the previous packet's (a new source: the jitter
    /// buffer should restart).
    pub ssrc_changed: bool,
}

/// Receives one RTP stream: parsing, payload type checks, statistics and
/// symmetric-RTP latching.
#[derive(Debug, Clone)]
pub struct RtpReceiver {
    config: ReceiverConfig,
    sdp_addr: SocketAddr,
    latch: Latch,
    last_activity: Option<Instant>,
    stats: ReceiveStats,
    foreign_datagrams: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Latch {
    Unlatched {
        candidate: Option<(SocketAddr, u32)>,
    },
    Latched {
        addr: SocketAddr,
        last_heard: Instant,
    },
}

impl RtpReceiver {
    /// A receiver that sends to `sdp_addr` (the address in the peer's SDP)
    /// until it latches onto the peer's real source address.
    pub fn new(config: ReceiverConfig, sdp_addr: SocketAddr) -> RtpReceiver {
        RtpReceiver {
            config,
            sdp_addr,
            latch: Latch::Unlatched { candidate: None },
            last_activity: None,
            stats: ReceiveStats::new(),
            foreign_datagrams: 0,
        }
    }

    /// Handles one datagram received at `now` from `from`. The payload of the
    /// result is a slice of `bytes` (no copy).
    pub fn handle_packet(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: Bytes,
    ) -> Result<Received, RtpError> {
        if !self.is_allowed_source(from.ip()) {
            return Err(self.reject_foreign(from));
        }
        let packet = parse_packet(&bytes)?;
        let format = self
            .config
            .formats
            .iter()
            .find(|format| format.payload_type == packet.payload_type)
            .copied()
            .ok_or(RtpError::UnexpectedPayloadType {
                payload_type: packet.payload_type,
            })?;
        self.check_source(now, from)?;
        self.last_activity = Some(now);
        let update = self.stats.on_packet(
            now,
            packet.ssrc,
            packet.seq,
            packet.timestamp,
            format.clock_rate,
            !format.telephone_event,
        );
        Ok(Received {
            ssrc: packet.ssrc,
            seq: packet.seq,
            timestamp: packet.timestamp,
            marker: packet.marker,
            format,
            payload: bytes.slice(packet.payload),
            sequence: update.status,
            ssrc_changed: update.ssrc_changed,
        })
    }

    /// [`RtpReceiver::handle_packet`] for a borrowed datagram: the payload is
    /// copied once into the returned `Bytes`.
    pub fn handle_slice(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<Received, RtpError> {
        self.handle_packet(now, from, Bytes::copy_from_slice(bytes))
    }

    /// Where to send RTP: the latched source address of the peer, or the SDP
    /// address before any valid packet arrived.
    pub fn remote_addr(&self) -> SocketAddr {
        match self.latch {
            Latch::Latched { addr, .. } => addr,
            Latch::Unlatched { .. } => self.sdp_addr,
        }
    }

    /// Whether the send destination has latched onto the peer's source.
    pub fn is_latched(&self) -> bool {
        matches!(self.latch, Latch::Latched { .. })
    }

    /// A new SDP address from the peer (re-INVITE): sends there and latches
    /// afresh.
    pub fn set_sdp_addr(&mut self, sdp_addr: SocketAddr) {
        self.sdp_addr = sdp_addr;
        self.latch = Latch::Unlatched { candidate: None };
    }

    /// Whether `ip` may send this stream media: the address of the peer's SDP
    /// or one of [`ReceiverConfig::allowed_networks`].
    pub fn is_allowed_source(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip == self.sdp_addr.ip().to_canonical()
            || self
                .config
                .allowed_networks
                .iter()
                .any(|network| network.contains(&ip))
    }

    /// Datagrams dropped because they came from an address that is not
    /// [allowed](Self::is_allowed_source).
    pub fn foreign_datagrams(&self) -> u64 {
        self.foreign_datagrams
    }

    /// Counts (and logs, at a bounded rate) a datagram from `from` dropped
    /// because its address is not allowed; returns the error to report.
    pub fn reject_foreign(&mut self, from: SocketAddr) -> RtpError {
        self.foreign_datagrams += 1;
        let count = self.foreign_datagrams;
        if count == 1 || count.is_power_of_two() || count.is_multiple_of(10_000) {
            tracing::warn!(%from, sdp = %self.sdp_addr, dropped = count,
                "media from an address that is neither the signalled peer nor an allowed network dropped");
        }
        RtpError::ForeignSource { from }
    }

    /// When the last accepted packet arrived (for RTP inactivity timeouts).
    pub fn last_activity(&self) -> Option<Instant> {
        self.last_activity
    }

    /// Replaces the accepted payload formats (after a re-negotiation).
    pub fn set_formats(&mut self, formats: Vec<PayloadFormat>) {
        self.config.formats = formats;
    }

    /// RFC 3550 receive statistics.
    pub fn stats(&self) -> &ReceiveStats {
        &self.stats
    }

    /// Mutable statistics, for taking RTCP reception report intervals.
    pub fn stats_mut(&mut self) -> &mut ReceiveStats {
        &mut self.stats
    }

    fn check_source(&mut self, now: Instant, from: SocketAddr) -> Result<(), RtpError> {
        let needed = self.config.latch_after_packets.max(1);
        match &mut self.latch {
            Latch::Latched { addr, last_heard } if *addr == from => {
                *last_heard = now;
                Ok(())
            }
            Latch::Latched { addr, last_heard } => {
                let silent = now.saturating_duration_since(*last_heard);
                match self.config.relatch_after {
                    Some(limit) if silent >= limit => {
                        tracing::debug!(old = %addr, new = %from, "RTP source re-latched");
                        *addr = from;
                        *last_heard = now;
                        Ok(())
                    }
                    _ => Err(RtpError::UnexpectedSource {
                        from,
                        latched: *addr,
                    }),
                }
            }
            Latch::Unlatched { candidate } => {
                let count = match candidate {
                    Some((addr, count)) if *addr == from => *count + 1,
                    _ => 1,
                };
                if count >= needed {
                    tracing::debug!(addr = %from, sdp = %self.sdp_addr, "RTP source latched");
                    self.latch = Latch::Latched {
                        addr: from,
                        last_heard: now,
                    };
                } else {
                    *candidate = Some((from, count));
                }
                Ok(())
            }
        }
    }
}

/// The fields of a parsed RTP packet; the payload as a byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRtp {
    /// SSRC.
    pub ssrc: Ssrc,
    /// Sequence number.
    pub seq: SeqNo,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Marker bit.
    pub marker: bool,
    /// Payload type.
    pub payload_type: PayloadType,
    /// Number of CSRCs in the header.
    pub csrc_count: usize,
    /// Byte range of the payload inside the datagram, padding removed.
    pub payload: std::ops::Range<usize>,
}

/// Parses an RTP datagram with the `rtp` crate after checking, without
/// panicking on any input, that the header, its extension elements and the
/// padding fit in `bytes`.
pub fn parse_packet(bytes: &[u8]) -> Result<ParsedRtp, RtpError> {
    let header_len = checked_header_len(bytes)?;
    let mut header_bytes = &bytes[..header_len];
    let header = Header::unmarshal(&mut header_bytes)?;
    let mut end = bytes.len();
    if header.padding {
        let padding = bytes[end - 1];
        let available = end - header_len;
        if padding == 0 || usize::from(padding) > available {
            return Err(RtpError::BadPadding { padding, available });
        }
        end -= usize::from(padding);
    }
    Ok(ParsedRtp {
        ssrc: Ssrc(header.ssrc),
        seq: SeqNo(header.sequence_number),
        timestamp: header.timestamp,
        marker: header.marker,
        payload_type: PayloadType(header.payload_type & 0x7f),
        csrc_count: header.csrc.len(),
        payload: header_len..end,
    })
}

/// Length of the header (fixed part, CSRCs, extension), validating the
/// version and every extension element so that the `rtp` crate's parser
/// never reads past the header.
fn checked_header_len(bytes: &[u8]) -> Result<usize, RtpError> {
    let too_short = |needed: usize| RtpError::TooShort {
        len: bytes.len(),
        needed,
    };
    if bytes.len() < RTP_HEADER_LEN {
        return Err(too_short(RTP_HEADER_LEN));
    }
    let version = bytes[0] >> 6;
    if version != 2 {
        return Err(RtpError::BadVersion { version });
    }
    let csrc_count = usize::from(bytes[0] & 0x0f);
    let mut len = RTP_HEADER_LEN + 4 * csrc_count;
    if bytes.len() < len {
        return Err(too_short(len));
    }
    if bytes[0] & 0x10 == 0 {
        return Ok(len);
    }
    if bytes.len() < len + 4 {
        return Err(too_short(len + 4));
    }
    let profile = u16::from_be_bytes([bytes[len], bytes[len + 1]]);
    let words = usize::from(u16::from_be_bytes([bytes[len + 2], bytes[len + 3]]));
    let start = len + 4;
    let end = start + 4 * words;
    if bytes.len() < end {
        return Err(too_short(end));
    }
    check_extension_elements(&bytes[..end], start, profile)?;
    len = end;
    Ok(len)
}

/// Walks RFC 8285 one- and two-byte extension elements in `block[start..]`
/// the way the `rtp` crate does and rejects any that overrun the block.
fn check_extension_elements(block: &[u8], start: usize, profile: u16) -> Result<(), RtpError> {
    let end = block.len();
    let overrun = |offset: usize| RtpError::BadExtension { offset, end };
    let mut offset = start;
    match profile {
        EXTENSION_PROFILE_ONE_BYTE => {
            while offset < end {
                let element = offset;
                let first = block[offset];
                offset += 1;
                if first == 0 {
                    continue;
                }
                if first >> 4 == 0x0f {
                    break;
                }
                offset += usize::from(first & 0x0f) + 1;
                if offset > end {
                    return Err(overrun(element));
                }
            }
        }
        EXTENSION_PROFILE_TWO_BYTE => {
            while offset < end {
                let element = offset;
                let id = block[offset];
                offset += 1;
                if id == 0 {
                    continue;
                }
                let length = *block.get(offset).ok_or(overrun(element))?;
                offset += 1 + usize::from(length);
                if offset > end {
                    return Err(overrun(element));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_capacity(payload_len: usize, available: usize) -> Result<(), RtpError> {
    let needed = RTP_HEADER_LEN + payload_len;
    if available < needed {
        return Err(RtpError::BufferTooSmall { needed, available });
    }
    Ok(())
}

/// Whole RTP clock ticks in `duration` at `clock_rate` Hz, modulo 2^32.
pub(crate) fn duration_to_ticks(duration: Duration, clock_rate: u32) -> u32 {
    let ticks = duration.as_nanos() * u128::from(clock_rate) / 1_000_000_000;
    // RTP timestamps are modulo 2^32: truncation is the intended wrap.
    (ticks % (1u128 << 32)) as u32
}
