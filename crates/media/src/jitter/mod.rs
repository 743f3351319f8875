//! The adaptive jitter buffer: RTP packets in, one 20 ms frame out per
//! playout tick. Sans-IO: every call takes the current `Instant`.
//!
//! The media stream calls [`JitterBuffer::push`] for each received RTP packet
//! and [`JitterBuffer::pop`] exactly once per frame (every 20 ms, the
//! playout clock; [`JitterBuffer::poll_timeout`] says when the next one is
//! due). Each pop returns one [`Playout`]: a frame to decode, a frame to
//! conceal (with the next packet's payload for Opus in-band FEC when it is
//! already here), or silence.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use bytes::Bytes;
//! use media::jitter::{JitterBuffer, JitterConfig, JitterPacket, Playout};
//!
//! let mut buffer = JitterBuffer::new(JitterConfig::default()).unwrap();
//! let t0 = Instant::now();
//! let frame = Duration::from_millis(20);
//! let mut frames = 0;
//! for k in 0..50u32 {
//!     let now = t0 + frame * k;
//!     buffer.push(now, JitterPacket {
//!         ssrc: 7,
//!         seq: k as u16,
//!         timestamp: k * 960,
//!         marker: k == 0,
//!         payload: Bytes::from_static(b"opus"),
//!     });
//!     if let Playout::Frame { .. } = buffer.pop(now) {
//!         frames += 1;
//!     }
//! }
//! assert!(frames > 40);
//! ```
//!
//! How it works:
//!
//! - Packets sit in a fixed ring of `capacity` slots indexed by extended
//!   (wrap-free) sequence number; the ring also remembers what became of the
//!   last `capacity` sequence numbers, to tell late packets from duplicates.
//! - Playout follows a media clock (`play_ts`, in RTP timestamp units) that
//!   advances one frame per pop. The packet whose timestamp is due is played;
//!   a missing packet whose time has come is concealed; a timestamp gap with
//!   no missing sequence number (DTX, or the marker bit of a new talkspurt)
//!   is silence and not loss. A packet whose timestamp is already behind the
//!   media clock when it arrives is late.
//! - The target delay comes from the estimator (97th percentile of jitter
//!   with a fast-attack, slowly decaying peak), clamped to
//!   `[min_delay, max_delay]`. The actual delay is `now - play time - r_min`.
//!   Below target, a frame is inserted at once (the media clock holds for a
//!   pop). More than a frame above target, a silent frame is skipped at once,
//!   or a voice frame is dropped after the excess lasted a second (200 ms
//!   when three frames or more over); above `max_delay` frames are dropped
//!   at once. This also absorbs clock drift
//!   between sender and receiver.
//! - Stream changes: a new SSRC resets the stream (statistics are kept); a
//!   sequence or timestamp jump that two packets in a row confirm resyncs it;
//!   a long outage (sequence and timestamp advancing together) just slides
//!   the window, counting the missing packets as lost.
//!
//! Accounting: every sequence number from the first played one up to the
//! play position is counted exactly once, as `played` or as `concealed`;
//! `lost`, `late` and `discarded` say why packets were not played, and
//! `late` and `duplicates` count arrivals separately.

mod estimator;

use std::time::{Duration, Instant};

use bytes::Bytes;
use thiserror::Error;

use estimator::DelayEstimator;

/// Why a [`JitterConfig`] was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JitterError {
    /// The RTP clock rate is zero.
    #[error("clock rate must be positive")]
    ZeroClockRate,
    /// The frame duration is not 10..=120 ms or is not a whole number of
    /// clock ticks.
    #[error("frame of {frame_ms} ms at {clock_rate} Hz is not supported")]
    Frame {
        /// The rejected frame duration.
        frame_ms: u32,
        /// The clock rate it was combined with.
        clock_rate: u32,
    },
    /// `min_delay` is above `max_delay`.
    #[error("min delay {min:?} is above max delay {max:?}")]
    DelayRange {
        /// The minimum delay.
        min: Duration,
        /// The maximum delay.
        max: Duration,
    },
    /// `initial_delay` is outside `[min_delay, max_delay]`.
    #[error("initial delay {initial:?} is outside {min:?}..={max:?}")]
    InitialDelay {
        /// The initial delay.
        initial: Duration,
        /// The minimum delay.
        min: Duration,
        /// The maximum delay.
        max: Duration,
    },
    /// The ring cannot hold `max_delay` of frames plus reordering room, or is
    /// too large for 16-bit sequence numbers to stay unambiguous.
    #[error("capacity {capacity} is outside {required}..={limit}")]
    Capacity {
        /// The configured capacity.
        capacity: usize,
        /// The least capacity for this `max_delay`.
        required: usize,
        /// The largest capacity allowed.
        limit: usize,
    },
}

/// Configuration of a [`JitterBuffer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitterConfig {
    /// RTP clock rate of the payload (8000 for G.711, 48000 for Opus).
    pub clock_rate: u32,
    /// Frame duration in milliseconds: both the packetization time of the
    /// stream and the pop interval (20).
    pub frame_ms: u32,
    /// The least target delay.
    pub min_delay: Duration,
    /// The largest target delay; the buffer drops frames to stay under it.
    pub max_delay: Duration,
    /// How long the first packet waits before playout starts.
    pub initial_delay: Duration,
    /// Number of packet slots of the ring, allocated once.
    pub capacity: usize,
}

/// One received RTP packet, as the jitter buffer needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitterPacket {
    /// RTP SSRC of the sender.
    pub ssrc: u32,
    /// RTP sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP marker bit (first packet of a talkspurt for audio).
    pub marker: bool,
    /// The encoded frame.
    pub payload: Bytes,
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Buffered for playout.
    Accepted,
    /// Already buffered or played: ignored.
    Duplicate,
    /// Arrived after its playout time: counted as late, not played.
    TooLate,
    /// A new SSRC: the stream restarted with this packet (stats kept).
    Reset,
    /// A sequence or timestamp discontinuity, confirmed by two packets: the
    /// stream restarted with them.
    Resync,
    /// Far outside the window (a discontinuity not yet confirmed): held back
    /// as the candidate of a resync, not played unless the next anomalous
    /// packet confirms it.
    OutOfRange,
    /// From the SSRC the stream switched away from: ignored.
    StaleSsrc,
}

/// One frame of playout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// A received frame to decode.
    Frame {
        /// The encoded frame.
        payload: Bytes,
        /// Its RTP sequence number.
        seq: u16,
        /// Its RTP timestamp.
        timestamp: u32,
    },
    /// A frame is missing (lost, late, or the buffer is growing its delay):
    /// run the decoder's loss concealment.
    Conceal {
        /// The next packet's payload when it is already buffered, for
        /// decoders with in-band FEC (Opus).
        fec: Option<Bytes>,
    },
    /// Nothing to play: before the first packet, during a DTX or silence gap,
    /// or after a long underrun. Not loss.
    Silence,
}

/// Per-stream counters and delays (kept across SSRC changes and resyncs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets handed to `push`.
    pub received: u64,
    /// Sequence numbers played as a [`Playout::Frame`].
    pub played: u64,
    /// Sequence numbers of the played range that were not played (lost,
    /// late, or discarded to shrink the delay).
    pub concealed: u64,
    /// Packets that arrived after their playout time.
    pub late: u64,
    /// Packets that arrived more than once.
    pub duplicates: u64,
    /// Sequence numbers skipped that never arrived (so far).
    pub lost: u64,
    /// Packets that arrived after a higher sequence number.
    pub reordered: u64,
    /// Packets that arrived in time but were dropped: to shrink the delay,
    /// on overflow, on a reset, or as unconfirmed out-of-range packets.
    pub discarded: u64,
    /// Frames inserted (as concealment or silence) to grow the delay.
    pub inserted: u64,
    /// [`Playout::Conceal`] frames returned.
    pub conceal_frames: u64,
    /// [`Playout::Silence`] frames returned.
    pub silence_frames: u64,
    /// Stream restarts: SSRC changes and resyncs.
    pub resets: u64,
    /// The buffer delay at the last pop: how long the fastest packets wait.
    pub current_delay: Duration,
    /// Mean time played frames spent in the buffer (arrival to playout).
    pub mean_delay: Duration,
    /// The target delay at the last pop.
    pub target_delay: Duration,
}

/// The adaptive jitter buffer of one RTP stream. See the module docs.
#[derive(Debug)]
pub struct JitterBuffer {
    config: JitterConfig,
    frame_samples: i64,
    frame_us: i64,
    min_us: i64,
    max_us: i64,
    initial_us: i64,
    slots: Vec<Slot>,
    estimator: DelayEstimator,
    epoch: Option<Instant>,
    stream: Option<Stream>,
    previous_ssrc: Option<u32>,
    candidate: Option<Candidate>,
    last_pop: Option<Instant>,
    stats: JitterStats,
    delay_sum_us: u128,
}

impl JitterConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), JitterError> {
        if self.clock_rate == 0 {
            return Err(JitterError::ZeroClockRate);
        }
        let ticks = u64::from(self.clock_rate) * u64::from(self.frame_ms);
        if !(10..=120).contains(&self.frame_ms) || ticks % 1000 != 0 {
            return Err(JitterError::Frame {
                frame_ms: self.frame_ms,
                clock_rate: self.clock_rate,
            });
        }
        if self.min_delay > self.max_delay {
            return Err(JitterError::DelayRange {
                min: self.min_delay,
                max: self.max_delay,
            });
        }
        if self.initial_delay < self.min_delay || self.initial_delay > self.max_delay {
            return Err(JitterError::InitialDelay {
                initial: self.initial_delay,
                min: self.min_delay,
                max: self.max_delay,
            });
        }
        let frames = self.max_delay.as_millis() / u128::from(self.frame_ms);
        let required = usize::try_from(frames)
            .unwrap_or(usize::MAX)
            .saturating_add(4);
        if self.capacity < required || self.capacity > MAX_CAPACITY {
            return Err(JitterError::Capacity {
                capacity: self.capacity,
                required,
                limit: MAX_CAPACITY,
            });
        }
        Ok(())
    }

    /// The default configuration at another clock rate.
    pub fn with_clock_rate(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            ..Self::default()
        }
    }
}

impl Default for JitterConfig {
    /// Opus at 48 kHz, 20 ms frames, delay 10..=500 ms starting at 60 ms,
    /// 64 slots (1.28 s).
    fn default() -> Self {
        Self {
            clock_rate: 48_000,
            frame_ms: 20,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(500),
            initial_delay: Duration::from_millis(60),
            capacity: 64,
        }
    }
}

impl JitterBuffer {
    /// A buffer with its ring allocated; fails on an invalid configuration.
    pub fn new(config: JitterConfig) -> Result<Self, JitterError> {
        config.validate()?;
        let frame_samples = i64::from(config.clock_rate) * i64::from(config.frame_ms) / 1000;
        let max_us = duration_us(config.max_delay);
        Ok(Self {
            frame_samples,
            frame_us: i64::from(config.frame_ms) * 1000,
            min_us: duration_us(config.min_delay),
            max_us,
            initial_us: duration_us(config.initial_delay),
            slots: (0..config.capacity).map(|_| Slot::default()).collect(),
            estimator: DelayEstimator::new(max_us),
            epoch: None,
            stream: None,
            previous_ssrc: None,
            candidate: None,
            last_pop: None,
            stats: JitterStats::default(),
            delay_sum_us: 0,
            config,
        })
    }

    /// Takes one received packet at `now`.
    pub fn push(&mut self, now: Instant, packet: JitterPacket) -> PushOutcome {
        let arrival_us = self.clock(now);
        self.stats.received += 1;
        match &self.stream {
            Some(stream) if stream.ssrc == packet.ssrc => self.push_in_stream(arrival_us, packet),
            Some(stream) => {
                if self.previous_ssrc == Some(packet.ssrc) {
                    self.stats.discarded += 1;
                    return PushOutcome::StaleSsrc;
                }
                self.previous_ssrc = Some(stream.ssrc);
                self.restart(arrival_us, packet);
                PushOutcome::Reset
            }
            None => {
                self.restart(arrival_us, packet);
                PushOutcome::Accepted
            }
        }
    }

    /// The frame to play at `now`; call exactly once per frame interval.
    pub fn pop(&mut self, now: Instant) -> Playout {
        let now_us = self.clock(now);
        self.last_pop = Some(now);
        let playout = self.playout(now_us);
        match &playout {
            Playout::Frame { .. } => {}
            Playout::Conceal { .. } => self.stats.conceal_frames += 1,
            Playout::Silence => self.stats.silence_frames += 1,
        }
        playout
    }

    /// When the next [`pop`](Self::pop) is due: one frame after the last
    /// pop, or when the first packet has waited the initial delay.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some(last) = self.last_pop {
            return Some(last + Duration::from_millis(u64::from(self.config.frame_ms)));
        }
        let stream = self.stream.as_ref()?;
        let at = stream.first_arrival_us.saturating_add(self.initial_us);
        Some(self.epoch? + Duration::from_micros(u64::try_from(at).unwrap_or(0)))
    }

    /// Counters and delays so far.
    pub fn stats(&self) -> JitterStats {
        let mut stats = self.stats;
        if stats.played > 0 {
            let mean = self.delay_sum_us / u128::from(stats.played);
            stats.mean_delay = Duration::from_micros(u64::try_from(mean).unwrap_or(u64::MAX));
        }
        stats
    }

    /// The sequence number the next frame plays, once playout has started.
    /// With the first played sequence number it bounds the played range:
    /// `played + concealed` counts every sequence number from the first
    /// played one up to (not including) this one, per stream.
    pub fn play_position(&self) -> Option<u16> {
        let stream = self.stream.as_ref()?;
        stream.started.then_some(stream.next_seq as u16)
    }

    /// Packets waiting in the buffer.
    pub fn len(&self) -> usize {
        self.stream.as_ref().map_or(0, |stream| stream.buffered)
    }

    /// Whether no packet is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The configuration in use.
    pub fn config(&self) -> &JitterConfig {
        &self.config
    }

    /// Drops the stream (for example when the remote side changes), keeping
    /// statistics and the jitter history; the next packet starts afresh.
    pub fn reset(&mut self) {
        self.flush();
        self.stream = None;
        self.candidate = None;
        self.estimator.reset_reference();
    }
}

/// The largest ring: half the 16-bit sequence space keeps unwrapping sound.
const MAX_CAPACITY: usize = 4096;
/// Consecutive underrun frames concealed before switching to silence.
const UNDERRUN_CONCEAL_FRAMES: u32 = 5;
/// How long the delay must stay over target before a voice frame is dropped.
const VOICE_DROP_HOLD_US: i64 = 1_000_000;
/// The same when the delay is three frames or more over target.
const VOICE_DROP_HOLD_FAR_US: i64 = 200_000;
/// Excess over target, beyond one frame, before frames are removed.
const SHRINK_HYSTERESIS_US: i64 = 5_000;
/// A packet whose transit differs this much from the stream's (beyond
/// `max_delay`) carries a timestamp discontinuity.
const TIMESTAMP_JUMP_US: i64 = 2_000_000;

/// What the ring knows about one sequence number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum SlotState {
    /// Nothing known.
    #[default]
    Empty,
    /// Waiting for playout.
    Buffered,
    /// Played (or discarded after arriving in time).
    Consumed,
    /// Concealed and not arrived (yet).
    Concealed,
    /// Arrived after its playout time.
    Late,
}

#[derive(Debug, Clone, Default)]
struct Slot {
    seq: i64,
    timestamp: i64,
    arrival_us: i64,
    state: SlotState,
    payload: Bytes,
}

#[derive(Debug, Clone)]
struct Stream {
    ssrc: u32,
    /// The next sequence number to play (extended).
    next_seq: i64,
    /// The highest sequence number received (extended) and its timestamp.
    highest_seq: i64,
    highest_ts: i64,
    first_arrival_us: i64,
    started: bool,
    /// The media clock: timestamp of the frame the next pop plays.
    play_ts: i64,
    buffered: usize,
    underrun_frames: u32,
    in_silence: bool,
    excess_since_us: Option<i64>,
}

#[derive(Debug, Clone)]
struct Candidate {
    arrival_us: i64,
    packet: JitterPacket,
}

/// What the next frame of the media clock is.
enum Head {
    /// The packet at `next_seq` is due.
    Ready,
    /// The packet at `next_seq` is missing and due.
    Missing { fec: Option<Bytes> },
    /// The next packet is later on the media clock: a silence gap.
    Gap,
    /// Nothing buffered.
    Empty,
}

impl JitterBuffer {
    fn clock(&mut self, now: Instant) -> i64 {
        let epoch = *self.epoch.get_or_insert(now);
        i64::try_from(now.saturating_duration_since(epoch).as_micros()).unwrap_or(i64::MAX)
    }

    fn media_us(&self, timestamp: i64) -> i64 {
        let us = i128::from(timestamp) * 1_000_000 / i128::from(self.config.clock_rate);
        i64::try_from(us).unwrap_or(if us < 0 { i64::MIN } else { i64::MAX })
    }

    fn index(&self, seq: i64) -> usize {
        let capacity = self.slots.len() as i64;
        usize::try_from(seq.rem_euclid(capacity)).expect("rem_euclid of a positive modulus")
    }

    fn stream(&self) -> &Stream {
        self.stream.as_ref().expect("called with a stream")
    }

    fn stream_mut(&mut self) -> &mut Stream {
        self.stream.as_mut().expect("called with a stream")
    }

    /// Drops every buffered packet (counted as discarded).
    fn flush(&mut self) {
        let Some(stream) = &mut self.stream else {
            return;
        };
        self.stats.discarded += stream.buffered as u64;
        stream.buffered = 0;
        for slot in &mut self.slots {
            *slot = Slot::default();
        }
    }

    /// Starts a new stream with `packet` (SSRC change, resync or first).
    fn restart(&mut self, arrival_us: i64, packet: JitterPacket) {
        if self.stream.is_some() {
            self.stats.resets += 1;
        }
        self.reset();
        let seq = i64::from(packet.seq);
        let timestamp = i64::from(packet.timestamp);
        self.stream = Some(Stream {
            ssrc: packet.ssrc,
            next_seq: seq,
            highest_seq: seq,
            highest_ts: timestamp,
            first_arrival_us: arrival_us,
            started: false,
            play_ts: 0,
            buffered: 0,
            underrun_frames: 0,
            in_silence: false,
            excess_since_us: None,
        });
        let media = self.media_us(timestamp);
        self.estimator.observe(arrival_us, media);
        self.store(seq, timestamp, arrival_us, packet.payload);
    }

    fn store(&mut self, seq: i64, timestamp: i64, arrival_us: i64, payload: Bytes) {
        let index = self.index(seq);
        self.slots[index] = Slot {
            seq,
            timestamp,
            arrival_us,
            state: SlotState::Buffered,
            payload,
        };
        let stream = self.stream_mut();
        stream.buffered += 1;
        if seq > stream.highest_seq {
            stream.highest_seq = seq;
            stream.highest_ts = timestamp;
        }
    }

    fn push_in_stream(&mut self, arrival_us: i64, packet: JitterPacket) -> PushOutcome {
        let stream = self.stream();
        let seq = stream.highest_seq
            + i64::from(packet.seq.wrapping_sub(stream.highest_seq as u16) as i16);
        let timestamp = stream.highest_ts
            + i64::from(packet.timestamp.wrapping_sub(stream.highest_ts as u32) as i32);
        let capacity = self.slots.len() as i64;
        let distance = seq - stream.next_seq;
        let (started, highest_seq, highest_ts) =
            (stream.started, stream.highest_seq, stream.highest_ts);

        let transit = DelayEstimator::transit(arrival_us, self.media_us(timestamp));
        let r_min = self.estimator.r_min().unwrap_or(transit);
        let timestamp_jump = (transit - r_min).abs() > self.max_us + TIMESTAMP_JUMP_US;
        let far_behind = distance < -capacity;
        let far_ahead = distance >= capacity && {
            // An outage advances sequence numbers no faster than timestamps.
            let frames = (timestamp - highest_ts).div_euclid(self.frame_samples);
            seq - highest_seq > frames + 2
        };
        if timestamp_jump || far_behind || far_ahead {
            return self.anomalous(arrival_us, packet);
        }
        self.candidate = None;

        if distance < 0 {
            if started || highest_seq - seq >= capacity {
                let outcome = self.push_behind(seq, highest_seq);
                if outcome == PushOutcome::TooLate {
                    // A late packet is the most telling jitter sample.
                    self.estimator.observe(arrival_us, self.media_us(timestamp));
                }
                return outcome;
            }
            // Reordered before playout started: the window opens earlier.
            self.stream_mut().next_seq = seq;
        }
        if !started && distance >= capacity {
            // Nobody is popping: start over from this packet.
            self.restart(arrival_us, packet);
            self.stats.resets -= 1;
            return PushOutcome::Accepted;
        }
        if distance >= capacity {
            // A long outage: everything before the window is lost.
            let new_next = seq - capacity + 1;
            self.skip_to(new_next);
        }

        let index = self.index(seq);
        let slot = &self.slots[index];
        if slot.seq == seq && matches!(slot.state, SlotState::Buffered | SlotState::Late) {
            self.stats.duplicates += 1;
            return PushOutcome::Duplicate;
        }
        self.estimator.observe(arrival_us, self.media_us(timestamp));
        if seq < highest_seq {
            self.stats.reordered += 1;
        }
        let stream = self.stream();
        if stream.started && timestamp < stream.play_ts - self.frame_samples / 2 {
            self.stats.late += 1;
            self.slots[index] = Slot {
                seq,
                timestamp,
                arrival_us,
                state: SlotState::Late,
                payload: Bytes::new(),
            };
            return PushOutcome::TooLate;
        }
        self.store(seq, timestamp, arrival_us, packet.payload);
        PushOutcome::Accepted
    }

    /// A packet behind the play position (or, before playout, too far
    /// behind the first packet).
    fn push_behind(&mut self, seq: i64, highest_seq: i64) -> PushOutcome {
        let index = self.index(seq);
        let slot = &mut self.slots[index];
        if slot.seq == seq {
            match slot.state {
                SlotState::Consumed | SlotState::Late => {
                    self.stats.duplicates += 1;
                    return PushOutcome::Duplicate;
                }
                SlotState::Concealed => {
                    slot.state = SlotState::Late;
                    self.stats.lost = self.stats.lost.saturating_sub(1);
                }
                SlotState::Empty | SlotState::Buffered => {}
            }
        }
        self.stats.late += 1;
        self.stats.reordered += u64::from(seq < highest_seq);
        PushOutcome::TooLate
    }

    /// A packet far outside the window: remembered; a second one close to it
    /// confirms a discontinuity and restarts the stream with both.
    fn anomalous(&mut self, arrival_us: i64, packet: JitterPacket) -> PushOutcome {
        if let Some(candidate) = self.candidate.take() {
            let gap = packet.seq.wrapping_sub(candidate.packet.seq) as i16;
            if gap != 0 && gap.unsigned_abs() <= 8 {
                self.stats.discarded = self.stats.discarded.saturating_sub(1);
                self.restart(candidate.arrival_us, candidate.packet);
                // The second packet is now inside the new window.
                self.push_in_stream(arrival_us, packet);
                return PushOutcome::Resync;
            }
        }
        self.stats.discarded += 1;
        self.candidate = Some(Candidate { arrival_us, packet });
        PushOutcome::OutOfRange
    }

    /// Moves the play position to `new_next`, concealing what it passes.
    fn skip_to(&mut self, new_next: i64) {
        let capacity = self.slots.len() as i64;
        let next = self.stream().next_seq;
        let in_ring = (new_next - next).min(capacity);
        for seq in next..next + in_ring {
            self.conceal(seq);
        }
        let beyond = u64::try_from(new_next - next - in_ring).unwrap_or(0);
        self.stats.concealed += beyond;
        self.stats.lost += beyond;
        self.stream_mut().next_seq = new_next;
    }

    /// Counts `seq` as concealed (the caller moves the play position).
    fn conceal(&mut self, seq: i64) {
        let index = self.index(seq);
        let slot = &mut self.slots[index];
        self.stats.concealed += 1;
        if slot.seq == seq && slot.state == SlotState::Buffered {
            slot.state = SlotState::Consumed;
            slot.payload = Bytes::new();
            self.stats.discarded += 1;
            self.stream_mut().buffered -= 1;
        } else if slot.seq == seq && slot.state == SlotState::Late {
            // Already counted as late when it arrived.
        } else {
            *slot = Slot {
                seq,
                state: SlotState::Concealed,
                ..Slot::default()
            };
            self.stats.lost += 1;
        }
    }

    fn playout(&mut self, now_us: i64) -> Playout {
        let Some(stream) = &self.stream else {
            return Playout::Silence;
        };
        if !stream.started {
            let due = stream.first_arrival_us.saturating_add(self.initial_us);
            if stream.buffered == 0 || now_us < due {
                return Playout::Silence;
            }
            let first = self
                .next_buffered(stream.next_seq)
                .expect("a stream with buffered packets has a first one");
            let timestamp = self.slots[self.index(first)].timestamp;
            let stream = self.stream_mut();
            stream.next_seq = first;
            stream.play_ts = timestamp;
            stream.started = true;
        }
        self.skip_overdue();

        let r_min = self.estimator.r_min().unwrap_or(0);
        let required = self.estimator.required_delay_us(now_us);
        let target = required.clamp(self.min_us, self.max_us);
        let current = now_us - self.media_us(self.stream().play_ts) - r_min;
        self.stats.target_delay = micros(target);
        self.stats.current_delay = micros(current);
        let excess = current - target;
        let mut head = self.head();

        if excess < 0 {
            // Grow the delay: play this frame slot again later.
            self.stats.inserted += 1;
            self.stream_mut().excess_since_us = None;
            return match head {
                Head::Gap => Playout::Silence,
                Head::Empty => self.underrun(),
                Head::Ready | Head::Missing { .. } => Playout::Conceal { fec: None },
            };
        }
        if excess >= self.frame_us + SHRINK_HYSTERESIS_US {
            let frame = self.frame_samples;
            let since = *self.stream_mut().excess_since_us.get_or_insert(now_us);
            let hold = if excess >= 3 * self.frame_us {
                VOICE_DROP_HOLD_FAR_US
            } else {
                VOICE_DROP_HOLD_US
            };
            let voice_ok = now_us - since >= hold || current > self.max_us;
            let shrunk = match head {
                Head::Gap => {
                    // Shorten a silence: inaudible.
                    self.stream_mut().play_ts += self.frame_samples;
                    true
                }
                Head::Missing { .. } if voice_ok => {
                    let seq = self.stream().next_seq;
                    self.conceal(seq);
                    let stream = self.stream_mut();
                    stream.next_seq += 1;
                    stream.play_ts += frame;
                    true
                }
                Head::Ready if voice_ok => {
                    let seq = self.stream().next_seq;
                    let timestamp = self.slots[self.index(seq)].timestamp;
                    self.conceal(seq);
                    let stream = self.stream_mut();
                    stream.next_seq += 1;
                    stream.play_ts = timestamp + frame;
                    true
                }
                // An underrun keeps its cushion for the packets still on
                // their way.
                Head::Missing { .. } | Head::Ready | Head::Empty => false,
            };
            if shrunk {
                self.stream_mut().excess_since_us = None;
                self.skip_overdue();
                head = self.head();
            }
        } else {
            self.stream_mut().excess_since_us = None;
        }
        self.play(head, now_us)
    }

    /// Plays the head of the media clock and advances it by one frame.
    fn play(&mut self, head: Head, now_us: i64) -> Playout {
        let frame = self.frame_samples;
        match head {
            Head::Ready => {
                let seq = self.stream().next_seq;
                let index = self.index(seq);
                let slot = &mut self.slots[index];
                slot.state = SlotState::Consumed;
                let payload = std::mem::take(&mut slot.payload);
                let (timestamp, arrival_us) = (slot.timestamp, slot.arrival_us);
                self.stats.played += 1;
                self.delay_sum_us += u128::try_from(now_us - arrival_us).unwrap_or(0);
                let stream = self.stream_mut();
                stream.buffered -= 1;
                stream.next_seq += 1;
                stream.play_ts = timestamp + frame;
                stream.underrun_frames = 0;
                stream.in_silence = false;
                Playout::Frame {
                    payload,
                    seq: seq as u16,
                    timestamp: timestamp as u32,
                }
            }
            Head::Missing { fec } => {
                let seq = self.stream().next_seq;
                self.conceal(seq);
                let stream = self.stream_mut();
                stream.next_seq += 1;
                stream.play_ts += frame;
                Playout::Conceal { fec }
            }
            Head::Gap => {
                let stream = self.stream_mut();
                stream.play_ts += frame;
                stream.in_silence = true;
                Playout::Silence
            }
            Head::Empty => {
                self.stream_mut().play_ts += frame;
                self.underrun()
            }
        }
    }

    /// Output for a frame with nothing buffered: concealment for a few frames
    /// after speech, silence after that or inside a silence gap.
    fn underrun(&mut self) -> Playout {
        let stream = self.stream_mut();
        stream.underrun_frames = stream.underrun_frames.saturating_add(1);
        if stream.in_silence || stream.underrun_frames > UNDERRUN_CONCEAL_FRAMES {
            Playout::Silence
        } else {
            Playout::Conceal { fec: None }
        }
    }

    /// Conceals, without output, every sequence number whose frame time has
    /// already passed (during an underrun) and drops packets that are behind.
    fn skip_overdue(&mut self) {
        let half = self.frame_samples / 2;
        loop {
            let stream = self.stream();
            let (seq, play_ts) = (stream.next_seq, stream.play_ts);
            let slot = &self.slots[self.index(seq)];
            let known = (slot.seq == seq).then_some(slot.state);
            let timestamp = match known {
                Some(SlotState::Buffered | SlotState::Late) => slot.timestamp,
                _ => match self.next_buffered(seq + 1) {
                    Some(next) => {
                        self.slots[self.index(next)].timestamp - (next - seq) * self.frame_samples
                    }
                    None => return,
                },
            };
            if timestamp >= play_ts - half {
                return;
            }
            if known == Some(SlotState::Buffered) {
                let index = self.index(seq);
                let slot = &mut self.slots[index];
                slot.state = SlotState::Late;
                slot.payload = Bytes::new();
                self.stats.late += 1;
                self.stream_mut().buffered -= 1;
            }
            self.conceal(seq);
            self.stream_mut().next_seq += 1;
        }
    }

    fn head(&self) -> Head {
        let stream = self.stream();
        let (seq, play_ts) = (stream.next_seq, stream.play_ts);
        let due = play_ts + self.frame_samples / 2;
        let slot = &self.slots[self.index(seq)];
        if slot.seq == seq && slot.state == SlotState::Buffered {
            return if slot.timestamp <= due {
                Head::Ready
            } else {
                Head::Gap
            };
        }
        let Some(next) = self.next_buffered(seq + 1) else {
            return Head::Empty;
        };
        let next_slot = &self.slots[self.index(next)];
        if next_slot.timestamp - (next - seq) * self.frame_samples > due {
            return Head::Gap;
        }
        let fec = (next == seq + 1).then(|| next_slot.payload.clone());
        Head::Missing { fec }
    }

    /// The lowest buffered sequence number at or after `from`.
    fn next_buffered(&self, from: i64) -> Option<i64> {
        let stream = self.stream.as_ref()?;
        if stream.buffered == 0 {
            return None;
        }
        (from..=stream.highest_seq).find(|&seq| {
            let slot = &self.slots[self.index(seq)];
            slot.seq == seq && slot.state == SlotState::Buffered
        })
    }
}

fn duration_us(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

#[cfg(test)]
mod tests;
