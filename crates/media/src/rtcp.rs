//! RTCP sender and receiver reports (RFC 3550 section 6), sans-IO.
//!
//! - [`parse_compound`] reads a compound RTCP datagram into [`RtcpPacket`]s
//!   (SR, RR, SDES, BYE; other types are skipped). Every length is checked:
//!   hostile bytes give an [`RtcpError`], never a panic.
//! - [`CompoundWriter`] writes SR, RR, SDES CNAME and BYE into a caller buffer.
//! - [`RtcpSession`] schedules reports (RFC 3550 6.2 simplified: 5 s mean,
//!   randomized 0.5-1.5x, the first one sooner), builds them from the
//!   [`RtpSender`] counters and [`ReceiveStats`], and computes the round-trip
//!   time from the LSR/DLSR the peer echoes back.
//!
//! Wall-clock time enters as an [`NtpTime`] argument and monotonic time as an
//! `Instant`: nothing here reads a clock.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::rtp_session::{RtpSender, Ssrc};
use crate::stats::{round_trip_time, ReceiveStats};

/// Packet type of a sender report.
pub const PT_SR: u8 = 200;
/// Packet type of a receiver report.
pub const PT_RR: u8 = 201;
/// Packet type of a source description.
pub const PT_SDES: u8 = 202;
/// Packet type of a goodbye.
pub const PT_BYE: u8 = 203;

const HEADER_LEN: usize = 4;
const REPORT_BLOCK_LEN: usize = 24;
const SENDER_INFO_LEN: usize = 20;
const MAX_COUNT: usize = 31;
const SDES_CNAME: u8 = 1;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Errors of RTCP parsing and building.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtcpError {
    /// The datagram holds no packet.
    #[error("empty RTCP datagram")]
    Empty,
    /// Fewer bytes than an RTCP header.
    #[error("RTCP packet of {len} bytes, at least {needed} needed")]
    TooShort {
        /// Bytes available.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
    /// The version field is not 2.
    #[error("RTCP version {version}, expected 2")]
    BadVersion {
        /// Version found.
        version: u8,
    },
    /// The length field points past the datagram.
    #[error("RTCP packet declares {declared} bytes, {available} available")]
    BadLength {
        /// Bytes the length field declares.
        declared: usize,
        /// Bytes left in the datagram.
        available: usize,
    },
    /// Padding on a packet that is not the last, or a bad padding count.
    #[error("RTCP padding of {padding} bytes in a packet of {len} bytes")]
    BadPadding {
        /// Padding count.
        padding: u8,
        /// Packet length.
        len: usize,
    },
    /// The body is shorter than its counts require.
    #[error("RTCP packet type {packet_type} needs {needed} bytes, has {available}")]
    Truncated {
        /// Packet type.
        packet_type: u8,
        /// Bytes needed.
        needed: usize,
        /// Bytes in the packet.
        available: usize,
    },
    /// More than 31 report blocks or sources in one packet.
    #[error("{count} items do not fit in a 5-bit RTCP count")]
    TooManyItems {
        /// Items given.
        count: usize,
    },
    /// A CNAME or BYE reason longer than 255 bytes.
    #[error("RTCP text of {len} bytes, at most 255")]
    TextTooLong {
        /// Text length.
        len: usize,
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

/// A 64-bit NTP timestamp: seconds since 1900 in the high 32 bits, fraction
/// in the low 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NtpTime(pub u64);

impl NtpTime {
    /// The NTP time of a duration since the Unix epoch.
    pub fn from_unix(since_epoch: Duration) -> NtpTime {
        let seconds = since_epoch.as_secs().wrapping_add(NTP_UNIX_OFFSET);
        let fraction = (u64::from(since_epoch.subsec_nanos()) << 32) / 1_000_000_000;
        NtpTime((seconds << 32) | fraction)
    }

    /// The NTP time of a wall-clock reading taken by the caller.
    pub fn from_system_time(time: SystemTime) -> NtpTime {
        NtpTime::from_unix(time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO))
    }

    /// The middle 32 bits (16.16 fixed point seconds), as in LSR.
    pub fn compact(self) -> u32 {
        // Bits 16..48 of the timestamp: the truncation is the format.
        (self.0 >> 16) as u32
    }
}

/// One reception report block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source reported on.
    pub ssrc: Ssrc,
    /// Fraction lost since the previous report, 8-bit fixed point.
    pub fraction_lost: u8,
    /// Cumulative packets lost, 24-bit signed.
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last SR received (0: none).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

/// The sender information of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// Wall-clock time of the report.
    pub ntp: NtpTime,
    /// The same instant on the RTP clock.
    pub rtp_timestamp: u32,
    /// Packets sent, modulo 2^32.
    pub packet_count: u32,
    /// Payload octets sent, modulo 2^32.
    pub octet_count: u32,
}

/// A sender report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderReport {
    /// Sender SSRC.
    pub ssrc: Ssrc,
    /// Sender information.
    pub info: SenderInfo,
    /// Reception reports.
    pub reports: Vec<ReportBlock>,
}

/// A receiver report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverReport {
    /// Reporter SSRC.
    pub ssrc: Ssrc,
    /// Reception reports.
    pub reports: Vec<ReportBlock>,
}

/// One SDES chunk; only CNAME is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesChunk {
    /// Source described.
    pub ssrc: Ssrc,
    /// Its canonical name, if the chunk has one (lossy UTF-8).
    pub cname: Option<String>,
}

/// A goodbye.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bye {
    /// Sources leaving.
    pub sources: Vec<Ssrc>,
    /// Reason for leaving (lossy UTF-8).
    pub reason: Option<String>,
}

/// One packet of a compound RTCP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    /// SR.
    SenderReport(SenderReport),
    /// RR.
    ReceiverReport(ReceiverReport),
    /// SDES.
    SourceDescription(Vec<SdesChunk>),
    /// BYE.
    Bye(Bye),
    /// Any other type (APP, feedback, XR), skipped.
    Other {
        /// Its packet type.
        packet_type: u8,
    },
}

/// Whether a datagram on a multiplexed RTP/RTCP port (RFC 5761) is RTCP:
/// version 2 and a second byte in 192..=223.
pub fn is_rtcp(bytes: &[u8]) -> bool {
    matches!(bytes, [first, second, ..] if first >> 6 == 2 && (192..=223).contains(second))
}

/// Parses a compound RTCP datagram.
pub fn parse_compound(bytes: &[u8]) -> Result<Vec<RtcpPacket>, RtcpError> {
    if bytes.is_empty() {
        return Err(RtcpError::Empty);
    }
    let mut packets = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < HEADER_LEN {
            return Err(RtcpError::TooShort {
                len: rest.len(),
                needed: HEADER_LEN,
            });
        }
        let version = rest[0] >> 6;
        if version != 2 {
            return Err(RtcpError::BadVersion { version });
        }
        let padded = rest[0] & 0x20 != 0;
        let count = usize::from(rest[0] & 0x1f);
        let packet_type = rest[1];
        let declared = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        if declared > rest.len() {
            return Err(RtcpError::BadLength {
                declared,
                available: rest.len(),
            });
        }
        let (packet, next) = rest.split_at(declared);
        let mut body = &packet[HEADER_LEN..];
        if padded {
            let padding = packet[declared - 1];
            if !next.is_empty() || padding == 0 || usize::from(padding) > body.len() {
                return Err(RtcpError::BadPadding {
                    padding,
                    len: declared,
                });
            }
            body = &body[..body.len() - usize::from(padding)];
        }
        packets.push(parse_packet(packet_type, count, body)?);
        rest = next;
    }
    Ok(packets)
}

/// Writes RTCP packets one after another into a caller buffer.
#[derive(Debug)]
pub struct CompoundWriter<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl<'a> CompoundWriter<'a> {
    /// A writer at the start of `out`.
    pub fn new(out: &'a mut [u8]) -> CompoundWriter<'a> {
        CompoundWriter { out, len: 0 }
    }

    /// Appends an SR.
    pub fn sender_report(
        &mut self,
        ssrc: Ssrc,
        info: &SenderInfo,
        reports: &[ReportBlock],
    ) -> Result<(), RtcpError> {
        let size = HEADER_LEN + 4 + SENDER_INFO_LEN + REPORT_BLOCK_LEN * reports.len();
        let mut packet = self.begin(PT_SR, reports.len(), size)?;
        packet.u32(ssrc.0);
        packet.u64(info.ntp.0);
        packet.u32(info.rtp_timestamp);
        packet.u32(info.packet_count);
        packet.u32(info.octet_count);
        for block in reports {
            packet.report_block(block);
        }
        Ok(())
    }

    /// Appends an RR.
    pub fn receiver_report(
        &mut self,
        ssrc: Ssrc,
        reports: &[ReportBlock],
    ) -> Result<(), RtcpError> {
        let size = HEADER_LEN + 4 + REPORT_BLOCK_LEN * reports.len();
        let mut packet = self.begin(PT_RR, reports.len(), size)?;
        packet.u32(ssrc.0);
        for block in reports {
            packet.report_block(block);
        }
        Ok(())
    }

    /// Appends an SDES with one chunk holding a CNAME.
    pub fn source_description(&mut self, ssrc: Ssrc, cname: &str) -> Result<(), RtcpError> {
        let text = text_len(cname)?;
        // SSRC, CNAME item, then at least one null byte up to a word boundary.
        let size = HEADER_LEN + padded_to_word(4 + 2 + usize::from(text) + 1);
        let mut packet = self.begin(PT_SDES, 1, size)?;
        packet.u32(ssrc.0);
        packet.u8(SDES_CNAME);
        packet.u8(text);
        packet.bytes(cname.as_bytes());
        Ok(())
    }

    /// Appends a BYE for `sources` with an optional reason.
    pub fn bye(&mut self, sources: &[Ssrc], reason: Option<&str>) -> Result<(), RtcpError> {
        let reason_len = reason.map(text_len).transpose()?;
        let reason_size = reason_len.map_or(0, |len| padded_to_word(1 + usize::from(len)));
        let size = HEADER_LEN + 4 * sources.len() + reason_size;
        let mut packet = self.begin(PT_BYE, sources.len(), size)?;
        for source in sources {
            packet.u32(source.0);
        }
        if let (Some(reason), Some(len)) = (reason, reason_len) {
            packet.u8(len);
            packet.bytes(reason.as_bytes());
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks room and count, zero-fills the packet, writes its header and
    /// returns a cursor on its body. `size` is a multiple of 4.
    fn begin(
        &mut self,
        packet_type: u8,
        count: usize,
        size: usize,
    ) -> Result<Cursor<'_>, RtcpError> {
        if count > MAX_COUNT {
            return Err(RtcpError::TooManyItems { count });
        }
        let available = self.out.len() - self.len;
        if size > available {
            return Err(RtcpError::BufferTooSmall {
                needed: self.len + size,
                available: self.out.len(),
            });
        }
        let words = u16::try_from(size / 4 - 1).map_err(|_| RtcpError::TooManyItems { count })?;
        let start = self.len;
        self.len += size;
        let packet = &mut self.out[start..start + size];
        packet.fill(0);
        let mut cursor = Cursor {
            buf: packet,
            pos: 0,
        };
        let count = u8::try_from(count).expect("count checked against MAX_COUNT");
        cursor.u8(0x80 | count);
        cursor.u8(packet_type);
        cursor.bytes(&words.to_be_bytes());
        Ok(cursor)
    }
}

/// Report scheduling and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtcpConfig {
    /// Canonical name sent in SDES (at most 255 bytes).
    pub cname: String,
    /// Mean interval between reports (RFC 3550 suggests 5 s).
    pub interval: Duration,
}

impl RtcpConfig {
    /// 5 s mean interval.
    pub fn new(cname: impl Into<String>) -> RtcpConfig {
        RtcpConfig {
            cname: cname.into(),
            interval: Duration::from_secs(5),
        }
    }
}

/// RTCP state of one media stream: when to report, what to report, and what
/// the peer reported.
#[derive(Debug, Clone)]
pub struct RtcpSession {
    config: RtcpConfig,
    rng: StdRng,
    next_report_at: Option<Instant>,
    packets_at_last_report: u64,
    last_sr_from_peer: Option<(Ssrc, u32, Instant)>,
    rtt: Option<Duration>,
    peer_report: Option<ReportBlock>,
    peer_cname: Option<String>,
    bye_received: bool,
}

impl RtcpSession {
    /// A session whose first report is due at `now` plus half the interval,
    /// randomized 0.5-1.5x (RFC 3550 6.2: the first report goes out sooner).
    pub fn new<R: RngCore + ?Sized>(config: RtcpConfig, now: Instant, rng: &mut R) -> RtcpSession {
        RtcpSession::with_seed(config, now, rng.next_u64())
    }

    /// [`RtcpSession::new`] with the randomization seeded from `seed`
    /// (deterministic tests and fuzzing).
    pub fn with_seed(config: RtcpConfig, now: Instant, seed: u64) -> RtcpSession {
        let mut session = RtcpSession {
            config,
            rng: StdRng::seed_from_u64(seed),
            next_report_at: None,
            packets_at_last_report: 0,
            last_sr_from_peer: None,
            rtt: None,
            peer_report: None,
            peer_cname: None,
            bye_received: false,
        };
        let first = session.randomized(session.config.interval / 2);
        session.next_report_at = Some(now + first);
        session
    }

    /// When the next report is due; `None` after [`RtcpSession::write_bye`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_report_at
    }

    /// If a report is due at `now`, writes it into `out`, schedules the next
    /// one and returns its length.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        ntp: NtpTime,
        sender: &RtpSender,
        receive: &mut ReceiveStats,
        out: &mut [u8],
    ) -> Result<Option<usize>, RtcpError> {
        match self.next_report_at {
            Some(due) if now >= due => {
                let next = self.randomized(self.config.interval);
                self.next_report_at = Some(now + next);
                self.write_report(now, ntp, sender, receive, out).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Writes a compound report now: SR if packets were sent since the last
    /// report, else RR; a report block on the current remote source; SDES
    /// CNAME.
    pub fn write_report(
        &mut self,
        now: Instant,
        ntp: NtpTime,
        sender: &RtpSender,
        receive: &mut ReceiveStats,
        out: &mut [u8],
    ) -> Result<usize, RtcpError> {
        let mut writer = CompoundWriter::new(out);
        self.write_reports(&mut writer, now, ntp, sender, receive)?;
        writer.source_description(sender.ssrc(), &self.config.cname)?;
        Ok(writer.len())
    }

    /// Writes the final compound packet (report, SDES, BYE) and stops
    /// scheduling reports.
    pub fn write_bye(
        &mut self,
        now: Instant,
        ntp: NtpTime,
        sender: &RtpSender,
        receive: &mut ReceiveStats,
        reason: Option<&str>,
        out: &mut [u8],
    ) -> Result<usize, RtcpError> {
        let mut writer = CompoundWriter::new(out);
        self.write_reports(&mut writer, now, ntp, sender, receive)?;
        writer.source_description(sender.ssrc(), &self.config.cname)?;
        writer.bye(&[sender.ssrc()], reason)?;
        self.next_report_at = None;
        Ok(writer.len())
    }

    /// Handles an incoming RTCP datagram at `now` (wall clock `ntp`): keeps
    /// the peer's SR time for our next DLSR, computes the RTT from report
    /// blocks about `local` (our SSRC), notes CNAME and BYE. Returns the
    /// parsed packets.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        ntp: NtpTime,
        local: Ssrc,
        bytes: &[u8],
    ) -> Result<Vec<RtcpPacket>, RtcpError> {
        let packets = parse_compound(bytes)?;
        for packet in &packets {
            match packet {
                RtcpPacket::SenderReport(report) => {
                    self.last_sr_from_peer = Some((report.ssrc, report.info.ntp.compact(), now));
                    self.handle_blocks(ntp, local, &report.reports);
                }
                RtcpPacket::ReceiverReport(report) => {
                    self.handle_blocks(ntp, local, &report.reports)
                }
                RtcpPacket::SourceDescription(chunks) => {
                    if let Some(cname) = chunks.iter().find_map(|chunk| chunk.cname.clone()) {
                        self.peer_cname = Some(cname);
                    }
                }
                RtcpPacket::Bye(_) => self.bye_received = true,
                RtcpPacket::Other { .. } => {}
            }
        }
        Ok(packets)
    }

    /// Latest round-trip time measured from the peer's reports.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// The peer's latest report block about our stream (loss and jitter as
    /// the peer sees them).
    pub fn peer_report(&self) -> Option<&ReportBlock> {
        self.peer_report.as_ref()
    }

    /// The peer's CNAME, once received.
    pub fn peer_cname(&self) -> Option<&str> {
        self.peer_cname.as_deref()
    }

    /// Whether the peer sent BYE.
    pub fn bye_received(&self) -> bool {
        self.bye_received
    }

    fn write_reports(
        &mut self,
        writer: &mut CompoundWriter<'_>,
        now: Instant,
        ntp: NtpTime,
        sender: &RtpSender,
        receive: &mut ReceiveStats,
    ) -> Result<(), RtcpError> {
        let block = receive.take_reception_interval().map(|interval| {
            let (last_sr, delay_since_last_sr) = match self.last_sr_from_peer {
                Some((ssrc, compact, received_at)) if ssrc == interval.ssrc => (
                    compact,
                    dlsr_units(now.saturating_duration_since(received_at)),
                ),
                _ => (0, 0),
            };
            ReportBlock {
                ssrc: interval.ssrc,
                fraction_lost: interval.interval.fraction_lost,
                cumulative_lost: interval.cumulative_lost,
                extended_highest_seq: interval.extended_highest_seq,
                jitter: interval.jitter,
                last_sr,
                delay_since_last_sr,
            }
        });
        let blocks = block.as_slice();
        if sender.packets_sent() > self.packets_at_last_report {
            let info = SenderInfo {
                ntp,
                rtp_timestamp: sender.rtp_timestamp_at(now).unwrap_or(0),
                // The SR counters are defined modulo 2^32.
                packet_count: sender.packets_sent() as u32,
                octet_count: sender.octets_sent() as u32,
            };
            writer.sender_report(sender.ssrc(), &info, blocks)?;
        } else {
            writer.receiver_report(sender.ssrc(), blocks)?;
        }
        self.packets_at_last_report = sender.packets_sent();
        Ok(())
    }

    fn handle_blocks(&mut self, ntp: NtpTime, local: Ssrc, blocks: &[ReportBlock]) {
        for block in blocks.iter().filter(|block| block.ssrc == local) {
            self.peer_report = Some(*block);
            if let Some(rtt) =
                round_trip_time(ntp.compact(), block.last_sr, block.delay_since_last_sr)
            {
                self.rtt = Some(rtt);
            }
        }
    }

    fn randomized(&mut self, interval: Duration) -> Duration {
        interval.mul_f64(self.rng.gen_range(0.5..1.5))
    }
}

fn parse_packet(packet_type: u8, count: usize, body: &[u8]) -> Result<RtcpPacket, RtcpError> {
    let mut reader = Reader {
        body,
        pos: 0,
        packet_type,
    };
    Ok(match packet_type {
        PT_SR => {
            let ssrc = Ssrc(reader.u32()?);
            let info = SenderInfo {
                ntp: NtpTime(reader.u64()?),
                rtp_timestamp: reader.u32()?,
                packet_count: reader.u32()?,
                octet_count: reader.u32()?,
            };
            let reports = reader.report_blocks(count)?;
            RtcpPacket::SenderReport(SenderReport {
                ssrc,
                info,
                reports,
            })
        }
        PT_RR => {
            let ssrc = Ssrc(reader.u32()?);
            let reports = reader.report_blocks(count)?;
            RtcpPacket::ReceiverReport(ReceiverReport { ssrc, reports })
        }
        PT_SDES => {
            let mut chunks = Vec::with_capacity(count);
            for _ in 0..count {
                chunks.push(reader.sdes_chunk()?);
            }
            RtcpPacket::SourceDescription(chunks)
        }
        PT_BYE => {
            reader.need(4 * count)?;
            let sources = (0..count)
                .map(|_| reader.u32().map(Ssrc))
                .collect::<Result<Vec<_>, _>>()?;
            let reason = if reader.remaining() > 0 {
                let len = usize::from(reader.u8()?);
                Some(String::from_utf8_lossy(reader.take(len)?).into_owned())
            } else {
                None
            };
            RtcpPacket::Bye(Bye { sources, reason })
        }
        _ => RtcpPacket::Other { packet_type },
    })
}

struct Reader<'a> {
    body: &'a [u8],
    pos: usize,
    packet_type: u8,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.body.len() - self.pos
    }

    fn need(&self, n: usize) -> Result<(), RtcpError> {
        if self.remaining() < n {
            return Err(RtcpError::Truncated {
                packet_type: self.packet_type,
                needed: HEADER_LEN + self.pos + n,
                available: HEADER_LEN + self.body.len(),
            });
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RtcpError> {
        self.need(n)?;
        let bytes = &self.body[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, RtcpError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, RtcpError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64(&mut self) -> Result<u64, RtcpError> {
        let high = u64::from(self.u32()?);
        let low = u64::from(self.u32()?);
        Ok((high << 32) | low)
    }

    fn report_blocks(&mut self, count: usize) -> Result<Vec<ReportBlock>, RtcpError> {
        self.need(REPORT_BLOCK_LEN * count)?;
        let mut blocks = Vec::with_capacity(count);
        for _ in 0..count {
            let ssrc = Ssrc(self.u32()?);
            let lost = self.u32()?;
            // Sign-extend the 24-bit cumulative loss.
            let cumulative_lost = ((lost << 8) as i32) >> 8;
            blocks.push(ReportBlock {
                ssrc,
                fraction_lost: (lost >> 24) as u8,
                cumulative_lost,
                extended_highest_seq: self.u32()?,
                jitter: self.u32()?,
                last_sr: self.u32()?,
                delay_since_last_sr: self.u32()?,
            });
        }
        Ok(blocks)
    }

    fn sdes_chunk(&mut self) -> Result<SdesChunk, RtcpError> {
        let ssrc = Ssrc(self.u32()?);
        let mut cname = None;
        loop {
            let item = self.u8()?;
            if item == 0 {
                // The chunk ends with null bytes up to the next word.
                let pad = (4 - self.pos % 4) % 4;
                self.take(pad.min(self.remaining()))?;
                break;
            }
            let len = usize::from(self.u8()?);
            let text = self.take(len)?;
            if item == SDES_CNAME {
                cname = Some(String::from_utf8_lossy(text).into_owned());
            }
        }
        Ok(SdesChunk { ssrc, cname })
    }
}

struct Cursor<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn bytes(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }

    fn u8(&mut self, value: u8) {
        self.bytes(&[value]);
    }

    fn u32(&mut self, value: u32) {
        self.bytes(&value.to_be_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.bytes(&value.to_be_bytes());
    }

    fn report_block(&mut self, block: &ReportBlock) {
        self.u32(block.ssrc.0);
        let lost = (block.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32) & 0x00ff_ffff;
        self.u32((u32::from(block.fraction_lost) << 24) | lost);
        self.u32(block.extended_highest_seq);
        self.u32(block.jitter);
        self.u32(block.last_sr);
        self.u32(block.delay_since_last_sr);
    }
}

fn text_len(text: &str) -> Result<u8, RtcpError> {
    u8::try_from(text.len()).map_err(|_| RtcpError::TextTooLong { len: text.len() })
}

fn padded_to_word(len: usize) -> usize {
    len.div_ceil(4) * 4
}

/// A duration in 1/65536 s, saturating, as the DLSR field.
fn dlsr_units(delay: Duration) -> u32 {
    let units = delay.as_nanos() * 65_536 / 1_000_000_000;
    u32::try_from(units).unwrap_or(u32::MAX)
}
