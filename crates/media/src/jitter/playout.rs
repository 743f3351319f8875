//! Receive and playout logic of the jitter buffer: the ring, the stream
//! state, the media clock, and the time-scaling decisions.

use std::time::Instant;

use bytes::Bytes;

use super::estimator::DelayEstimator;
use super::{micros, JitterBuffer, JitterPacket, Playout, PushOutcome};

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
pub(super) enum SlotState {
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
pub(super) struct Slot {
    seq: i64,
    timestamp: i64,
    arrival_us: i64,
    state: SlotState,
    marker: bool,
    payload: Bytes,
}

#[derive(Debug, Clone)]
pub(super) struct Stream {
    pub(super) ssrc: u32,
    /// The next sequence number to play (extended).
    pub(super) next_seq: i64,
    /// The highest sequence number received (extended) and its timestamp.
    pub(super) highest_seq: i64,
    pub(super) highest_ts: i64,
    pub(super) first_arrival_us: i64,
    pub(super) started: bool,
    /// The media clock: timestamp of the frame the next pop plays.
    pub(super) play_ts: i64,
    pub(super) buffered: usize,
    pub(super) underrun_frames: u32,
    pub(super) in_silence: bool,
    pub(super) excess_since_us: Option<i64>,
}

#[derive(Debug, Clone)]
pub(super) struct Candidate {
    arrival_us: i64,
    packet: JitterPacket,
}

/// What the next frame of the media clock is.
pub(super) enum Head {
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
    pub(super) fn clock(&mut self, now: Instant) -> i64 {
        let epoch = *self.epoch.get_or_insert(now);
        i64::try_from(now.saturating_duration_since(epoch).as_micros()).unwrap_or(i64::MAX)
    }

    pub(super) fn media_us(&self, timestamp: i64) -> i64 {
        let us = i128::from(timestamp) * 1_000_000 / i128::from(self.config.clock_rate);
        i64::try_from(us).unwrap_or(if us < 0 { i64::MIN } else { i64::MAX })
    }

    pub(super) fn index(&self, seq: i64) -> usize {
        let capacity = self.slots.len() as i64;
        usize::try_from(seq.rem_euclid(capacity)).expect("rem_euclid of a positive modulus")
    }

    pub(super) fn stream(&self) -> &Stream {
        self.stream.as_ref().expect("called with a stream")
    }

    pub(super) fn stream_mut(&mut self) -> &mut Stream {
        self.stream.as_mut().expect("called with a stream")
    }

    /// Drops every buffered packet (counted as discarded).
    pub(super) fn flush(&mut self) {
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
    pub(super) fn restart(&mut self, arrival_us: i64, packet: JitterPacket) {
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
        self.store(seq, timestamp, arrival_us, packet);
    }

    pub(super) fn store(
        &mut self,
        seq: i64,
        timestamp: i64,
        arrival_us: i64,
        packet: JitterPacket,
    ) {
        let index = self.index(seq);
        self.slots[index] = Slot {
            seq,
            timestamp,
            arrival_us,
            state: SlotState::Buffered,
            marker: packet.marker,
            payload: packet.payload,
        };
        let stream = self.stream_mut();
        stream.buffered += 1;
        if seq > stream.highest_seq {
            stream.highest_seq = seq;
            stream.highest_ts = timestamp;
        }
    }

    pub(super) fn push_in_stream(&mut self, arrival_us: i64, packet: JitterPacket) -> PushOutcome {
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
                marker: packet.marker,
                payload: Bytes::new(),
            };
            return PushOutcome::TooLate;
        }
        self.store(seq, timestamp, arrival_us, packet);
        PushOutcome::Accepted
    }

    /// A packet behind the play position (or, before playout, too far
    /// behind the first packet).
    pub(super) fn push_behind(&mut self, seq: i64, highest_seq: i64) -> PushOutcome {
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
    pub(super) fn anomalous(&mut self, arrival_us: i64, packet: JitterPacket) -> PushOutcome {
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
    pub(super) fn skip_to(&mut self, new_next: i64) {
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
    pub(super) fn conceal(&mut self, seq: i64) {
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

    pub(super) fn playout(&mut self, now_us: i64) -> Playout {
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
                // Before the first packet of a talkspurt, stretch the
                // silence rather than conceal.
                Head::Ready if self.slots[self.index(self.stream().next_seq)].marker => {
                    Playout::Silence
                }
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
    pub(super) fn play(&mut self, head: Head, now_us: i64) -> Playout {
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
    pub(super) fn underrun(&mut self) -> Playout {
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
    pub(super) fn skip_overdue(&mut self) {
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

    pub(super) fn head(&self) -> Head {
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
    pub(super) fn next_buffered(&self, from: i64) -> Option<i64> {
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
