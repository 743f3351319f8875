//! A runtime's playback queue, sans-IO: audio chunks of any length in,
//! one 20 ms frame out per tick, with marks, DTMF and hang-up kept in
//! order with the audio around them. The [`crate::bridge`] plays from it,
//! for the service's agents and for the test bot alike.
//!
//! A mark is reached when the frame holding the last sample queued before
//! it is handed out; `clear` drops every queued sample and digit and
//! reports the pending marks as cleared (a queued hang-up stays). A DTMF
//! item pauses the audio while the digits are sent as telephone-events.

use std::collections::VecDeque;

/// What playback reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayoutEvent {
    /// A mark was reached (`cleared: false`) or dropped by a clear (`cleared: true`).
    Mark {
        /// The runtime's mark id.
        id: u64,
        /// Dropped by a clear rather than played.
        cleared: bool,
    },
    /// Send these digits now (RFC 4733).
    Dtmf(String),
    /// Hang up now.
    Hangup,
}

#[derive(Debug)]
enum Item {
    Audio { samples: Vec<i16>, offset: usize },
    Mark(u64),
    Dtmf(String),
    Hangup,
}

/// The playback queue of one call.
#[derive(Debug)]
pub struct Playout {
    frame_samples: usize,
    items: VecDeque<Item>,
    queued_samples: usize,
    max_samples: usize,
    pause_frames: u32,
    frames_per_digit: u32,
    dropped_samples: u64,
    events: VecDeque<PlayoutEvent>,
}

impl Playout {
    /// A queue handing out frames of `frame_samples`, holding at most
    /// `max_samples` of audio (more is dropped and counted), pausing
    /// `frames_per_digit` frames for each DTMF digit sent.
    pub fn new(frame_samples: usize, max_samples: usize, frames_per_digit: u32) -> Self {
        Self {
            frame_samples,
            items: VecDeque::new(),
            queued_samples: 0,
            max_samples,
            pause_frames: 0,
            frames_per_digit,
            dropped_samples: 0,
            events: VecDeque::new(),
        }
    }

    /// Samples waiting to be played.
    pub fn queued_samples(&self) -> usize {
        self.queued_samples
    }

    /// Samples dropped because the queue was full.
    pub fn dropped_samples(&self) -> u64 {
        self.dropped_samples
    }

    /// Queues audio after what is queued.
    pub fn push_audio(&mut self, mut samples: Vec<i16>) {
        let room = self.max_samples.saturating_sub(self.queued_samples);
        if samples.len() > room {
            self.dropped_samples += (samples.len() - room) as u64;
            samples.truncate(room);
        }
        if samples.is_empty() {
            return;
        }
        self.queued_samples += samples.len();
        self.items.push_back(Item::Audio { samples, offset: 0 });
    }

    /// Queues a mark.
    pub fn push_mark(&mut self, id: u64) {
        self.items.push_back(Item::Mark(id));
    }

    /// Queues DTMF digits.
    pub fn push_dtmf(&mut self, digits: String) {
        self.items.push_back(Item::Dtmf(digits));
    }

    /// Queues a hang-up.
    pub fn push_hangup(&mut self) {
        self.items.push_back(Item::Hangup);
    }

    /// Drops queued audio and digits; pending marks are reported cleared.
    pub fn clear(&mut self) {
        let mut kept = VecDeque::new();
        for item in self.items.drain(..) {
            match item {
                Item::Mark(id) => self
                    .events
                    .push_back(PlayoutEvent::Mark { id, cleared: true }),
                Item::Hangup => kept.push_back(Item::Hangup),
                Item::Audio { .. } | Item::Dtmf(_) => {}
            }
        }
        self.items = kept;
        self.queued_samples = 0;
    }

    /// One 20 ms tick: fills `frame` with the next samples (zero-padded)
    /// and returns whether it holds any audio of the agent. Marks, digits
    /// and hang-ups reached come out of [`Playout::poll_event`].
    pub fn next_frame(&mut self, frame: &mut [i16]) -> bool {
        let len = self.frame_samples.min(frame.len());
        let frame = &mut frame[..len];
        frame.fill(0);
        if self.pause_frames > 0 {
            self.pause_frames -= 1;
            return false;
        }
        let mut filled = 0;
        while let Some(item) = self.items.front_mut() {
            match item {
                Item::Audio { samples, offset } => {
                    if filled == frame.len() {
                        break;
                    }
                    let take = (samples.len() - *offset).min(frame.len() - filled);
                    frame[filled..filled + take].copy_from_slice(&samples[*offset..*offset + take]);
                    filled += take;
                    *offset += take;
                    self.queued_samples -= take;
                    if *offset == samples.len() {
                        self.items.pop_front();
                    }
                }
                Item::Mark(id) => {
                    let id = *id;
                    self.items.pop_front();
                    self.events
                        .push_back(PlayoutEvent::Mark { id, cleared: false });
                }
                Item::Dtmf(_) | Item::Hangup if filled > 0 => break,
                Item::Dtmf(digits) => {
                    let digits = std::mem::take(digits);
                    self.items.pop_front();
                    let count = u32::try_from(digits.chars().count()).unwrap_or(u32::MAX);
                    // This frame is the first of the pause.
                    self.pause_frames = count
                        .saturating_mul(self.frames_per_digit)
                        .saturating_sub(1);
                    self.events.push_back(PlayoutEvent::Dtmf(digits));
                    return false;
                }
                Item::Hangup => {
                    self.items.pop_front();
                    self.events.push_back(PlayoutEvent::Hangup);
                    break;
                }
            }
        }
        filled > 0
    }

    /// The next event reached.
    pub fn poll_event(&mut self) -> Option<PlayoutEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(playout: &mut Playout) -> Vec<PlayoutEvent> {
        std::iter::from_fn(|| playout.poll_event()).collect()
    }

    fn mark(id: u64) -> PlayoutEvent {
        PlayoutEvent::Mark { id, cleared: false }
    }

    #[test]
    fn chunks_of_any_size_become_frames_and_marks_follow_their_audio() {
        let mut playout = Playout::new(4, 1000, 10);
        playout.push_audio(vec![1, 2, 3]);
        playout.push_audio(vec![4, 5, 6]);
        playout.push_mark(7);
        playout.push_audio(vec![8]);
        let mut frame = [9i16; 4];
        assert!(playout.next_frame(&mut frame));
        assert_eq!(frame, [1, 2, 3, 4]);
        assert!(events(&mut playout).is_empty(), "mark not reached yet");
        assert!(playout.next_frame(&mut frame));
        assert_eq!(frame, [5, 6, 8, 0]);
        assert_eq!(events(&mut playout), [mark(7)]);
        assert!(!playout.next_frame(&mut frame), "nothing queued");
        assert_eq!(frame, [0; 4]);
    }

    #[test]
    fn a_mark_with_nothing_before_it_is_reached_at_the_next_tick() {
        let mut playout = Playout::new(4, 1000, 10);
        playout.push_mark(1);
        let mut frame = [0i16; 4];
        assert!(!playout.next_frame(&mut frame));
        assert_eq!(events(&mut playout), [mark(1)]);
    }

    #[test]
    fn clear_drops_audio_and_reports_pending_marks_cleared() {
        let mut playout = Playout::new(4, 1000, 10);
        playout.push_audio(vec![1; 40]);
        playout.push_mark(1);
        playout.push_audio(vec![2; 40]);
        playout.push_mark(2);
        playout.push_hangup();
        let mut frame = [0i16; 4];
        playout.next_frame(&mut frame);
        assert_eq!(playout.queued_samples(), 76);
        playout.clear();
        assert_eq!(playout.queued_samples(), 0);
        assert_eq!(
            events(&mut playout),
            [
                PlayoutEvent::Mark {
                    id: 1,
                    cleared: true
                },
                PlayoutEvent::Mark {
                    id: 2,
                    cleared: true
                }
            ]
        );
        assert!(!playout.next_frame(&mut frame), "no audio within one frame");
        assert_eq!(events(&mut playout), [PlayoutEvent::Hangup]);
    }

    #[test]
    fn dtmf_waits_for_the_audio_before_it_and_pauses_after() {
        let mut playout = Playout::new(4, 1000, 3);
        playout.push_audio(vec![1; 6]);
        playout.push_dtmf("12".into());
        playout.push_audio(vec![2; 4]);
        let mut frame = [0i16; 4];
        assert!(playout.next_frame(&mut frame));
        assert!(playout.next_frame(&mut frame));
        assert_eq!(
            frame,
            [1, 1, 0, 0],
            "DTMF does not share a frame with audio"
        );
        assert!(events(&mut playout).is_empty());
        assert!(!playout.next_frame(&mut frame));
        assert_eq!(events(&mut playout), [PlayoutEvent::Dtmf("12".into())]);
        for _ in 0..5 {
            assert!(
                !playout.next_frame(&mut frame),
                "paused for 2 digits x 3 frames"
            );
        }
        assert!(playout.next_frame(&mut frame));
        assert_eq!(frame, [2; 4]);
    }

    #[test]
    fn hangup_comes_after_the_audio_before_it() {
        let mut playout = Playout::new(4, 1000, 10);
        playout.push_audio(vec![1; 5]);
        playout.push_hangup();
        let mut frame = [0i16; 4];
        playout.next_frame(&mut frame);
        playout.next_frame(&mut frame);
        assert!(events(&mut playout).is_empty());
        playout.next_frame(&mut frame);
        assert_eq!(events(&mut playout), [PlayoutEvent::Hangup]);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let mut playout = Playout::new(4, 10, 10);
        playout.push_audio(vec![1; 8]);
        playout.push_audio(vec![2; 8]);
        assert_eq!(playout.queued_samples(), 10);
        assert_eq!(playout.dropped_samples(), 6);
    }
}
