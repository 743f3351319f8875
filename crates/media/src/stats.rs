//! Call-quality statistics: RFC 3550 sequence validation, loss and
//! interarrival jitter, round-trip time from RTCP, and the ITU-T G.107
//! E-model that turns delay, codec and loss into a MOS estimate.
//!
//! - [`SequenceTracker`]: appendix A.1 (extended sequence numbers, probation,
//!   wrap, large jumps) and A.3 (expected, lost, fraction lost per interval
//!   and cumulative).
//! - [`JitterEstimator`]: appendix A.8 interarrival jitter.
//! - [`ReceiveStats`]: both, per remote SSRC, with totals across SSRC changes.
//! - [`round_trip_time`]: RTT from an RTCP report block's LSR and DLSR
//!   (section 6.4.1).
//! - [`EModel`] and [`mos_from_r`]: the G.107 rating R and its MOS mapping.
//! - [`StreamStats`]: the snapshot kept on a call record.

use std::time::{Duration, Instant};

use crate::rtp_session::{SeqNo, Ssrc};

/// RFC 3550 A.1: packets in sequence before a new source is valid.
pub const MIN_SEQUENTIAL: u32 = 2;
/// RFC 3550 A.1: largest forward gap still taken as loss, not a jump.
pub const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: largest backward step still taken as reordering.
pub const MAX_MISORDER: u16 = 100;

const SEQ_MOD: u64 = 1 << 16;

/// What RFC 3550 A.1 sequence validation made of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqStatus {
    /// The source is on probation (its first packets); not counted yet.
    Probation,
    /// In order, after a tolerable gap, reordered or duplicated; counted.
    Valid {
        /// Extended (cycle-counting) sequence number of this packet.
        extended: u64,
    },
    /// The sequence restarted after a large jump confirmed by two sequential
    /// packets (the sender restarted); counting starts again here.
    Restarted {
        /// Extended sequence number of this packet (a new base).
        extended: u64,
    },
    /// A large jump not yet confirmed; not counted.
    Jump,
    /// Reordered from before the first counted packet; counted as received
    /// (as in A.1) but it has no extended number in this sequence.
    Stale,
}

/// RFC 3550 A.1 / A.3 state of one source's sequence numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceTracker {
    max_seq: u16,
    cycles: u64,
    base_seq: u64,
    bad_seq: u64,
    probation: u32,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    earlier_received: u64,
    earlier_lost: u64,
}

/// Loss over one reporting interval (RFC 3550 A.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalLoss {
    /// Packets expected in the interval.
    pub expected: u64,
    /// Packets received in the interval.
    pub received: u64,
    /// Expected minus received (negative with duplicates).
    pub lost: i64,
    /// Fraction lost as the 8-bit fixed-point value of a report block.
    pub fraction_lost: u8,
}

impl SequenceTracker {
    /// State for a new source whose first packet has sequence `first`; the
    /// first packet itself must still be passed to [`SequenceTracker::update`].
    pub fn new(first: SeqNo) -> SequenceTracker {
        let mut tracker = SequenceTracker {
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: SEQ_MOD + 1,
            probation: MIN_SEQUENTIAL,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            earlier_received: 0,
            earlier_lost: 0,
        };
        tracker.init(first.0);
        tracker.max_seq = first.0.wrapping_sub(1);
        tracker
    }

    /// Updates the state with one packet (RFC 3550 A.1 `update_seq`).
    pub fn update(&mut self, seq: SeqNo) -> SeqStatus {
        let seq = seq.0;
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.init(seq);
                    self.received += 1;
                    return SeqStatus::Valid {
                        extended: u64::from(seq),
                    };
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return SeqStatus::Probation;
        }
        let status = if udelta < MAX_DROPOUT {
            if seq < self.max_seq {
                self.cycles += SEQ_MOD;
            }
            self.max_seq = seq;
            SeqStatus::Valid {
                extended: self.cycles + u64::from(seq),
            }
        } else if u64::from(udelta) <= SEQ_MOD - u64::from(MAX_MISORDER) {
            if u64::from(seq) != self.bad_seq {
                self.bad_seq = (u64::from(seq) + 1) & (SEQ_MOD - 1);
                return SeqStatus::Jump;
            }
            self.earlier_received += self.received;
            self.earlier_lost += self.lost().max(0).unsigned_abs();
            self.init(seq);
            SeqStatus::Restarted {
                extended: u64::from(seq),
            }
        } else {
            let extended = if seq > self.max_seq {
                self.cycles.checked_sub(SEQ_MOD)
            } else {
                Some(self.cycles)
            }
            .map(|cycles| cycles + u64::from(seq))
            .filter(|extended| *extended >= self.base_seq);
            match extended {
                Some(extended) => SeqStatus::Valid { extended },
                None => SeqStatus::Stale,
            }
        };
        self.received += 1;
        status
    }

    /// Whether the source has passed probation.
    pub fn is_valid(&self) -> bool {
        self.probation == 0
    }

    /// Highest extended sequence number received.
    pub fn extended_max(&self) -> u64 {
        self.cycles + u64::from(self.max_seq)
    }

    /// Packets counted as received since the sequence (re)started.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets expected since the sequence (re)started (A.3).
    pub fn expected(&self) -> u64 {
        if !self.is_valid() {
            return 0;
        }
        (self.extended_max() + 1).saturating_sub(self.base_seq)
    }

    /// Cumulative packets lost since the sequence (re)started (A.3); negative
    /// when duplicates outnumber losses.
    pub fn lost(&self) -> i64 {
        clamp_i64(self.expected()) - clamp_i64(self.received)
    }

    /// The cumulative loss as the 24-bit signed field of a report block.
    pub fn cumulative_lost_field(&self) -> i32 {
        let lost = self.lost().clamp(-0x80_0000, 0x7f_ffff);
        i32::try_from(lost).expect("clamped to 24 bits")
    }

    /// Packets received across sequence restarts.
    pub fn total_received(&self) -> u64 {
        self.earlier_received + self.received
    }

    /// Packets lost across sequence restarts (never negative).
    pub fn total_lost(&self) -> u64 {
        self.earlier_lost + self.lost().max(0).unsigned_abs()
    }

    /// Loss since the previous call (A.3); starts the next interval.
    pub fn take_interval(&mut self) -> IntervalLoss {
        let expected_total = self.expected();
        let expected = expected_total.saturating_sub(self.expected_prior);
        let received = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected_total;
        self.received_prior = self.received;
        let lost = clamp_i64(expected) - clamp_i64(received);
        let fraction_lost = if expected == 0 || lost <= 0 {
            0
        } else {
            let fraction = (lost.unsigned_abs() << 8) / expected;
            u8::try_from(fraction.min(255)).expect("clamped to 255")
        };
        IntervalLoss {
            expected,
            received,
            lost,
            fraction_lost,
        }
    }

    fn init(&mut self, seq: u16) {
        self.base_seq = u64::from(seq);
        self.max_seq = seq;
        self.bad_seq = SEQ_MOD + 1;
        self.cycles = 0;
        self.received = 0;
        self.received_prior = 0;
        self.expected_prior = 0;
    }
}

/// RFC 3550 A.8 interarrival jitter, kept in RTP timestamp units.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JitterEstimator {
    last: Option<(Instant, u32)>,
    clock_rate: u32,
    jitter: f64,
}

impl JitterEstimator {
    /// An estimator with no packets yet.
    pub fn new() -> JitterEstimator {
        JitterEstimator::default()
    }

    /// Adds a packet with RTP `timestamp` that arrived at `arrival`, on an
    /// RTP clock of `clock_rate` Hz: J += (|D(i-1, i)| - J) / 16.
    pub fn update(&mut self, arrival: Instant, timestamp: u32, clock_rate: u32) {
        if clock_rate == 0 {
            return;
        }
        if clock_rate != self.clock_rate {
            if self.clock_rate != 0 {
                self.jitter = self.jitter * f64::from(clock_rate) / f64::from(self.clock_rate);
            }
            self.clock_rate = clock_rate;
            self.last = None;
        }
        if let Some((last_arrival, last_timestamp)) = self.last {
            let arrival_delta = signed_seconds(arrival, last_arrival) * f64::from(clock_rate);
            // The sender's timestamps wrap modulo 2^32; a signed difference
            // reads them across the wrap.
            let timestamp_delta = f64::from(timestamp.wrapping_sub(last_timestamp) as i32);
            let d = arrival_delta - timestamp_delta;
            self.jitter += (d.abs() - self.jitter) / 16.0;
        }
        self.last = Some((arrival, timestamp));
    }

    /// Forgets the previous packet (after a sequence restart) but keeps the
    /// estimate.
    pub fn restart(&mut self) {
        self.last = None;
    }

    /// Jitter in RTP timestamp units.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// Jitter as the 32-bit field of a report block.
    pub fn jitter_field(&self) -> u32 {
        // Saturating float-to-int conversion is the intent for absurd values.
        self.jitter.round() as u32
    }

    /// Jitter in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        if self.clock_rate == 0 {
            return 0.0;
        }
        self.jitter * 1000.0 / f64::from(self.clock_rate)
    }
}

/// Effect of one packet on [`ReceiveStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketUpdate {
    /// Sequence validation result.
    pub status: SeqStatus,
    /// The SSRC differs from the previous packet's.
    pub ssrc_changed: bool,
}

/// What a reception report block says about the current source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceptionInterval {
    /// The source reported on.
    pub ssrc: Ssrc,
    /// Loss in the interval since the previous report.
    pub interval: IntervalLoss,
    /// Cumulative loss, 24-bit signed.
    pub cumulative_lost: i32,
    /// Extended highest sequence number, modulo 2^32.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
}

/// Receive statistics of one RTP stream, following SSRC changes.
#[derive(Debug, Clone, Default)]
pub struct ReceiveStats {
    source: Option<SourceStats>,
    packets: u64,
    earlier_received: u64,
    earlier_lost: u64,
}

#[derive(Debug, Clone)]
struct SourceStats {
    ssrc: Ssrc,
    sequence: SequenceTracker,
    jitter: JitterEstimator,
}

impl ReceiveStats {
    /// No packets yet.
    pub fn new() -> ReceiveStats {
        ReceiveStats::default()
    }

    /// Adds one packet that arrived at `now`. A new SSRC starts a new source
    /// (probation again); the old source's counts stay in the totals.
    /// `feeds_jitter` is false for telephone-event packets, whose timestamps
    /// mark the event start rather than the sampling instant.
    pub fn on_packet(
        &mut self,
        now: Instant,
        ssrc: Ssrc,
        seq: SeqNo,
        timestamp: u32,
        clock_rate: u32,
        feeds_jitter: bool,
    ) -> PacketUpdate {
        self.packets += 1;
        let ssrc_changed = match &self.source {
            Some(source) => source.ssrc != ssrc,
            None => false,
        };
        if ssrc_changed || self.source.is_none() {
            if let Some(old) = self.source.take() {
                self.earlier_received += old.sequence.total_received();
                self.earlier_lost += old.sequence.total_lost();
            }
            self.source = Some(SourceStats {
                ssrc,
                sequence: SequenceTracker::new(seq),
                jitter: JitterEstimator::new(),
            });
        }
        let source = self.source.as_mut().expect("a source was set just above");
        let status = source.sequence.update(seq);
        match status {
            SeqStatus::Valid { .. } if feeds_jitter => {
                source.jitter.update(now, timestamp, clock_rate);
            }
            SeqStatus::Restarted { .. } => {
                source.jitter.restart();
                if feeds_jitter {
                    source.jitter.update(now, timestamp, clock_rate);
                }
            }
            _ => {}
        }
        PacketUpdate {
            status,
            ssrc_changed,
        }
    }

    /// SSRC of the current source.
    pub fn ssrc(&self) -> Option<Ssrc> {
        self.source.as_ref().map(|source| source.ssrc)
    }

    /// Sequence state of the current source.
    pub fn sequence(&self) -> Option<&SequenceTracker> {
        self.source.as_ref().map(|source| &source.sequence)
    }

    /// Jitter state of the current source.
    pub fn jitter(&self) -> Option<&JitterEstimator> {
        self.source.as_ref().map(|source| &source.jitter)
    }

    /// Every packet handed in, valid or not.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Packets counted as received by A.1, over all sources.
    pub fn packets_received(&self) -> u64 {
        self.earlier_received + self.sequence().map_or(0, SequenceTracker::total_received)
    }

    /// Packets lost, over all sources.
    pub fn packets_lost(&self) -> u64 {
        self.earlier_lost + self.sequence().map_or(0, SequenceTracker::total_lost)
    }

    /// Lost packets as a percentage of the packets expected, 0..=100.
    pub fn loss_percent(&self) -> f64 {
        let lost = self.packets_lost() as f64;
        let received = self.packets_received() as f64;
        if lost + received == 0.0 {
            return 0.0;
        }
        (100.0 * lost / (lost + received)).clamp(0.0, 100.0)
    }

    /// Interarrival jitter of the current source in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter().map_or(0.0, JitterEstimator::jitter_ms)
    }

    /// The numbers of a reception report block for the current source,
    /// starting a new interval; `None` before a source has been validated.
    pub fn take_reception_interval(&mut self) -> Option<ReceptionInterval> {
        let source = self.source.as_mut()?;
        if !source.sequence.is_valid() {
            return None;
        }
        let interval = source.sequence.take_interval();
        Some(ReceptionInterval {
            ssrc: source.ssrc,
            interval,
            cumulative_lost: source.sequence.cumulative_lost_field(),
            // The report field carries the extended number modulo 2^32.
            extended_highest_seq: source.sequence.extended_max() as u32,
            jitter: source.jitter.jitter_field(),
        })
    }
}

/// Round-trip time from a reception report block (RFC 3550 6.4.1):
/// `arrival - LSR - DLSR`, all in the middle 32 bits of NTP time (1/65536 s).
/// `None` when the peer has had no SR from us (LSR 0) or the result is
/// negative beyond rounding.
pub fn round_trip_time(arrival: u32, last_sr: u32, delay_since_last_sr: u32) -> Option<Duration> {
    if last_sr == 0 {
        return None;
    }
    // Differences of 32-bit NTP values wrap; read them signed.
    let units = arrival
        .wrapping_sub(last_sr)
        .wrapping_sub(delay_since_last_sr) as i32;
    const ROUNDING: i32 = 66; // about 1 ms of DLSR rounding
    if units < -ROUNDING {
        return None;
    }
    let units = u64::from(units.max(0).unsigned_abs());
    Some(Duration::from_nanos(units * 1_000_000_000 / 65_536))
}

/// Codec parameters of the E-model: equipment impairment factor `Ie` and
/// packet-loss robustness factor `Bpl`.
///
/// G.711 values are from ITU-T G.113 Appendix I (Ie 0; Bpl 25.1 with the
/// G.711 Appendix I packet-loss concealment, 4.3 without). G.113 has no Opus
/// entry; [`CodecQuality::OPUS`] uses Ie 0 and Bpl 25.1 on the narrowband
/// scale: the IETF Opus listening tests (Hoene et al.,
/// draft-ietf-codec-results; Rämö and Toukomaa, Interspeech 2011) rate Opus at
/// voice bitrates at or above G.711, and its concealment and in-band FEC are
/// at least as loss-robust as G.711 with PLC, so reusing the G.711-with-PLC
/// values is a conservative estimate rather than a measured one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodecQuality {
    /// Codec name as on the call record (`PCMU`, `PCMA`, `opus`).
    pub name: &'static str,
    /// Equipment impairment factor Ie.
    pub ie: f64,
    /// Packet-loss robustness factor Bpl.
    pub bpl: f64,
}

impl CodecQuality {
    /// G.711 mu-law with packet-loss concealment.
    pub const PCMU: CodecQuality = CodecQuality {
        name: "PCMU",
        ie: 0.0,
        bpl: 25.1,
    };
    /// G.711 A-law with packet-loss concealment.
    pub const PCMA: CodecQuality = CodecQuality {
        name: "PCMA",
        ie: 0.0,
        bpl: 25.1,
    };
    /// G.711 without packet-loss concealment (G.113 Appendix I).
    pub const G711_NO_PLC: CodecQuality = CodecQuality {
        name: "G711",
        ie: 0.0,
        bpl: 4.3,
    };
    /// Opus (see the type documentation for where the values come from).
    pub const OPUS: CodecQuality = CodecQuality {
        name: "opus",
        ie: 0.0,
        bpl: 25.1,
    };

    /// The parameters for an SDP encoding name, case-insensitive.
    pub fn from_encoding_name(name: &str) -> Option<CodecQuality> {
        [CodecQuality::PCMU, CodecQuality::PCMA, CodecQuality::OPUS]
            .into_iter()
            .find(|codec| codec.name.eq_ignore_ascii_case(name))
    }
}

/// The G.107 rating R with every parameter other than delay, codec and loss
/// at its default value (`Ro - Is + A` = 93.2).
pub const DEFAULT_R: f64 = 93.2;

/// ITU-T G.107 E-model inputs for one direction of a call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EModel {
    /// The codec.
    pub codec: CodecQuality,
    /// Mouth-to-ear one-way delay Ta.
    pub one_way_delay: Duration,
    /// Packet loss probability Ppl in percent.
    pub loss_percent: f64,
    /// BurstR: 1 for random loss, above 1 for bursty loss.
    pub burst_ratio: f64,
}

impl EModel {
    /// No delay, no loss, random loss pattern.
    pub fn new(codec: CodecQuality) -> EModel {
        EModel {
            codec,
            one_way_delay: Duration::ZERO,
            loss_percent: 0.0,
            burst_ratio: 1.0,
        }
    }

    /// Delay impairment Id. At G.107 default echo parameters this follows the
    /// piecewise-linear fit of Cole and Rosenbluth ("Voice over IP performance
    /// monitoring", ACM CCR 2001): `0.024 d + 0.11 (d - 177.3) H(d - 177.3)`,
    /// d in milliseconds.
    pub fn delay_impairment(&self) -> f64 {
        let d = self.one_way_delay.as_secs_f64() * 1000.0;
        let mut id = 0.024 * d;
        if d > 177.3 {
            id += 0.11 * (d - 177.3);
        }
        id
    }

    /// Effective equipment impairment
    /// `Ie,eff = Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl)`.
    pub fn effective_equipment_impairment(&self) -> f64 {
        let ppl = if self.loss_percent.is_finite() {
            self.loss_percent.clamp(0.0, 100.0)
        } else {
            0.0
        };
        let burst_ratio = if self.burst_ratio.is_finite() && self.burst_ratio > 0.0 {
            self.burst_ratio
        } else {
            1.0
        };
        let ie = self.codec.ie;
        let denominator = ppl / burst_ratio + self.codec.bpl;
        if denominator <= 0.0 {
            return ie;
        }
        ie + (95.0 - ie) * ppl / denominator
    }

    /// The rating `R = Ro - Is - Id - Ie,eff + A`.
    pub fn r_factor(&self) -> f64 {
        DEFAULT_R - self.delay_impairment() - self.effective_equipment_impairment()
    }

    /// The MOS estimate of [`EModel::r_factor`].
    pub fn mos(&self) -> f64 {
        mos_from_r(self.r_factor())
    }
}

/// G.107 mapping of R to MOS (1.0 ..= 4.5). The cubic dips just below 1 for
/// R under about 6.5; it is held at 1 there, as in the current G.107, so MOS
/// never rises when R falls.
pub fn mos_from_r(r: f64) -> f64 {
    if r.is_nan() || r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7.0e-6).max(1.0)
    }
}

/// Media statistics of one call leg, as kept on the call record.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStats {
    /// Codec name (`PCMU`, `PCMA`, `opus`).
    pub codec: String,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// RTP packets received.
    pub packets_received: u64,
    /// RTP packets lost (RFC 3550 A.3, over all sources).
    pub packets_lost: u64,
    /// Loss as a percentage of packets expected.
    pub loss_percent: f64,
    /// RFC 3550 interarrival jitter in milliseconds.
    pub jitter_ms: f64,
    /// Round-trip time from RTCP, when known.
    pub rtt_ms: Option<f64>,
    /// E-model MOS estimate, 1.0 ..= 4.5.
    pub mos: f64,
}

impl StreamStats {
    /// A snapshot from the receive statistics. The E-model's one-way delay
    /// is half the RTT (network) plus `local_delay` (packetization, jitter
    /// buffer, playout) that the caller knows.
    pub fn compute(
        codec: CodecQuality,
        packets_sent: u64,
        receive: &ReceiveStats,
        rtt: Option<Duration>,
        local_delay: Duration,
    ) -> StreamStats {
        let loss_percent = receive.loss_percent();
        let network_delay = rtt.map_or(Duration::ZERO, |rtt| rtt / 2);
        let model = EModel {
            codec,
            one_way_delay: network_delay + local_delay,
            loss_percent,
            burst_ratio: 1.0,
        };
        StreamStats {
            codec: codec.name.to_owned(),
            packets_sent,
            packets_received: receive.packets(),
            packets_lost: receive.packets_lost(),
            loss_percent,
            jitter_ms: receive.jitter_ms(),
            rtt_ms: rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
            mos: model.mos(),
        }
    }
}

fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn signed_seconds(later: Instant, earlier: Instant) -> f64 {
    match later.checked_duration_since(earlier) {
        Some(elapsed) => elapsed.as_secs_f64(),
        None => -earlier.duration_since(later).as_secs_f64(),
    }
}
