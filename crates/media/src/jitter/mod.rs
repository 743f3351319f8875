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
mod playout;

use std::time::{Duration, Instant};

use bytes::Bytes;
use thiserror::Error;

use estimator::DelayEstimator;
use playout::{Candidate, Slot, Stream};

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
fn duration_us(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

#[cfg(test)]
mod tests;
