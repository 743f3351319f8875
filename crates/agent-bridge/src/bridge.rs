//! The audio path of one answered call: media stream <-> agent runtime.
//!
//! Used by the service for every agent's call (call-control's call task)
//! and by the test bot for its own leg, so both sides of a test call move
//! audio, marks, DTMF and hang-ups the same way.
//!
//! No task of its own: [`Bridge::start`] attaches a [`FrameHook`] to the media
//! stream, which the media worker runs on every 20 ms tick among many calls'
//! streams. On each tick the hook hands the inbound frame to the runtime, takes
//! what the runtime produced since the last tick into the [`Playout`], and writes
//! the next frame of it (silence when empty) back in the same tick; it records
//! both sides and reports what the call task needs (RTP activity, transcript
//! entries, the agent's hang-up) over a channel. It never waits on the
//! database, and never on the runtime: a runtime too slow to take its frames
//! loses them.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use media::record::RecordingHandle;
use media::stream::{AudioFrame, FrameHook, FrameKind, MediaEvent, StreamHandle};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::activity::ActivityClock;
use crate::agent::{RuntimeInput, RuntimeOutput, TickRuntime};
use crate::playout::{Playout, PlayoutEvent};

/// RTP activity is noted at most once per this many frames (0.5 s).
const ACTIVITY_EVERY_FRAMES: u32 = 25;
/// Most agent audio queued for playback: 10 minutes at 16 kHz.
const MAX_QUEUED_SAMPLES: usize = 16_000 * 600;

/// What the bridge tells the call task.
#[derive(Debug, Clone, PartialEq)]
pub enum BridgeEvent {
    /// A final transcript entry from the agent.
    Transcript {
        /// `agent` or `caller`.
        role: String,
        /// What was said.
        text: String,
    },
    /// The agent hung up (its playback reached the hang-up).
    Hangup,
}

/// What the bridge hands back when it stops.
#[derive(Debug)]
pub struct BridgeEnd {
    /// The stream, to close for its final statistics.
    pub stream: StreamHandle,
    /// The recording, to finish.
    pub recording: Option<RecordingHandle>,
}

/// Where the bridge's agent runs.
pub enum BridgeRuntime {
    /// A task of its own, reached over its session's channels.
    Task {
        /// Inputs to the runtime.
        input: mpsc::Sender<RuntimeInput>,
        /// Outputs of the runtime.
        output: mpsc::Receiver<RuntimeOutput>,
    },
    /// In the media tick ([`crate::agent::AgentRuntime::in_tick`]).
    InTick(Box<dyn TickRuntime>),
}

/// The bridge of one call, before it starts.
pub struct Bridge {
    /// The call's media stream.
    pub stream: StreamHandle,
    /// The recording of the call, if recorded.
    pub recording: Option<RecordingHandle>,
    /// The agent.
    pub runtime: BridgeRuntime,
    /// Reports to the call task.
    pub events: mpsc::UnboundedSender<BridgeEvent>,
    /// Whether telephone-events were negotiated (DTMF can be sent).
    pub telephone_event: bool,
    /// Frames of pause per DTMF digit sent.
    pub frames_per_digit: u32,
}

impl Bridge {
    /// Attaches the bridge to its stream: from the next tick on, the media worker moves
    /// the call's audio through it.
    pub fn start(self) -> RunningBridge {
        let (hook, end) = BridgeHook::new(
            self.stream.app_rate().frame_samples(),
            self.runtime,
            self.events,
            self.recording,
            self.telephone_event,
            self.frames_per_digit,
        );
        let activity = hook.activity.clone();
        let attached = self.stream.attach(Box::new(hook));
        if let Err(error) = &attached {
            debug!(%error, "media stream gone; bridge not attached");
        }
        RunningBridge {
            stream: self.stream,
            end,
            activity,
        }
    }
}

/// A bridge attached to its stream.
#[derive(Debug)]
pub struct RunningBridge {
    stream: StreamHandle,
    end: oneshot::Receiver<Option<RecordingHandle>>,
    activity: ActivityClock,
}

impl RunningBridge {
    /// When RTP or DTMF from the far end was last heard (to within 0.5 s), if ever.
    pub fn last_activity(&self) -> Option<std::time::Instant> {
        self.activity.last()
    }

    /// The far end moved its media (re-INVITE).
    pub fn set_remote(&self, remote: SocketAddr) {
        if let Err(error) = self.stream.set_remote(remote, None) {
            debug!(%error, "media stream gone; remote not updated");
        }
    }

    /// Detaches the bridge and hands the stream and the recording back.
    pub async fn stop(self) -> BridgeEnd {
        let _ = self.stream.detach().await;
        let recording = self.end.await.ok().flatten();
        BridgeEnd {
            stream: self.stream,
            recording,
        }
    }
}

/// The bridge as the media worker runs it, on every tick of the call's stream. Sans-IO
/// apart from the non-blocking ends of its channels: tests drive it frame by frame.
pub struct BridgeHook {
    playout: Playout,
    runtime: BridgeRuntime,
    events: mpsc::UnboundedSender<BridgeEvent>,
    pending: VecDeque<RuntimeInput>,
    recording: Option<RecordingHandle>,
    recording_errors: u64,
    since_activity: u32,
    activity: ActivityClock,
    telephone_event: bool,
    dtmf: VecDeque<String>,
    done: Option<oneshot::Sender<Option<RecordingHandle>>>,
}

impl FrameHook for BridgeHook {
    fn on_frame(&mut self, inbound: &[i16], kind: FrameKind, out: &mut [i16]) -> bool {
        self.since_activity = self.since_activity.saturating_add(1);
        if matches!(kind, FrameKind::Voice | FrameKind::Recovered)
            && self.since_activity >= ACTIVITY_EVERY_FRAMES
        {
            self.since_activity = 0;
            self.activity.touch(Instant::now());
        }
        match &mut self.runtime {
            BridgeRuntime::InTick(runtime) => {
                if !runtime.on_frame(inbound, out) {
                    out.fill(0);
                }
            }
            BridgeRuntime::Task { input, .. } => {
                flush_inputs(input, &mut self.pending);
                if let Ok(frame) = AudioFrame::new(inbound, kind) {
                    // Dropped when the runtime is behind: the audio path never waits.
                    let _ = input.try_send(RuntimeInput::Audio(frame));
                }
                while let Some(output) = self.next_output() {
                    self.on_output(output);
                }
                self.playout.next_frame(out);
            }
        }
        if let Some(recording) = &mut self.recording {
            if recording.write_frame(Some(inbound), Some(out)).is_err() {
                self.recording_errors += 1;
            }
        }
        while let Some(event) = self.playout.poll_event() {
            self.on_playout(event);
        }
        self.flush();
        true
    }

    fn on_event(&mut self, event: &MediaEvent) -> bool {
        match event {
            MediaEvent::Dtmf(digit) => {
                self.activity.touch(Instant::now());
                if matches!(self.runtime, BridgeRuntime::Task { .. }) {
                    self.pending.push_back(RuntimeInput::Dtmf(digit.digit));
                    self.flush();
                }
            }
            other => debug!(event = ?other, "media event"),
        }
        true
    }

    fn poll_dtmf(&mut self) -> Option<String> {
        self.dtmf.pop_front()
    }

    fn on_detach(mut self: Box<Self>) {
        if self.recording_errors > 0 || self.playout.dropped_samples() > 0 {
            debug!(
                recording_errors = self.recording_errors,
                dropped_agent_samples = self.playout.dropped_samples(),
                "bridge stopped with losses"
            );
        }
        if let Some(done) = self.done.take() {
            let _ = done.send(self.recording.take());
        }
    }
}

impl BridgeHook {
    /// The hook of a stream with `frame_samples` per 20 ms, running `runtime` and talking
    /// to the call task over `events`; the receiver gets the recording back when the hook
    /// is detached.
    pub fn new(
        frame_samples: usize,
        runtime: BridgeRuntime,
        events: mpsc::UnboundedSender<BridgeEvent>,
        recording: Option<RecordingHandle>,
        telephone_event: bool,
        frames_per_digit: u32,
    ) -> (BridgeHook, oneshot::Receiver<Option<RecordingHandle>>) {
        let (done, end) = oneshot::channel();
        let hook = BridgeHook {
            playout: Playout::new(frame_samples, MAX_QUEUED_SAMPLES, frames_per_digit),
            runtime,
            events,
            pending: VecDeque::new(),
            recording,
            recording_errors: 0,
            since_activity: ACTIVITY_EVERY_FRAMES,
            activity: ActivityClock::new(Instant::now()),
            telephone_event,
            dtmf: VecDeque::new(),
            done: Some(done),
        };
        (hook, end)
    }

    /// The next output of a task runtime, if one is waiting.
    fn next_output(&mut self) -> Option<RuntimeOutput> {
        match &mut self.runtime {
            BridgeRuntime::Task { output, .. } => output.try_recv().ok(),
            BridgeRuntime::InTick(_) => None,
        }
    }

    /// Hands queued marks and digits to a task runtime while it has room.
    fn flush(&mut self) {
        if let BridgeRuntime::Task { input, .. } = &self.runtime {
            flush_inputs(input, &mut self.pending);
        }
    }

    fn on_output(&mut self, output: RuntimeOutput) {
        match output {
            RuntimeOutput::Audio(samples) => self.playout.push_audio(samples),
            RuntimeOutput::Mark(id) => self.playout.push_mark(id),
            RuntimeOutput::Clear => self.playout.clear(),
            RuntimeOutput::Dtmf(digits) => self.playout.push_dtmf(digits),
            RuntimeOutput::Hangup => self.playout.push_hangup(),
            RuntimeOutput::Transcript {
                role,
                text,
                is_final,
            } => {
                if is_final {
                    let _ = self.events.send(BridgeEvent::Transcript { role, text });
                }
            }
        }
    }

    fn on_playout(&mut self, event: PlayoutEvent) {
        match event {
            PlayoutEvent::Mark { id, cleared } => {
                self.pending.push_back(RuntimeInput::Mark { id, cleared })
            }
            PlayoutEvent::Dtmf(digits) if self.telephone_event => self.dtmf.push_back(digits),
            PlayoutEvent::Dtmf(digits) => {
                debug!(digits, "no telephone-event negotiated; DTMF skipped")
            }
            PlayoutEvent::Hangup => {
                let _ = self.events.send(BridgeEvent::Hangup);
            }
        }
    }
}

/// Hands queued marks and digits to the runtime while it has room.
fn flush_inputs(runtime_in: &mpsc::Sender<RuntimeInput>, pending: &mut VecDeque<RuntimeInput>) {
    while let Some(input) = pending.pop_front() {
        match runtime_in.try_send(input) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(input)) => {
                pending.push_front(input);
                break;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                pending.clear();
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use media::codec::dtmf::DtmfDigit;

    use super::*;

    const FRAME: usize = 160;

    /// A hook with its runtime's and call task's ends, driven frame by frame.
    struct Harness {
        hook: Box<BridgeHook>,
        to_runtime: mpsc::Receiver<RuntimeInput>,
        from_runtime: mpsc::Sender<RuntimeOutput>,
        events: mpsc::UnboundedReceiver<BridgeEvent>,
        end: oneshot::Receiver<Option<RecordingHandle>>,
    }

    fn harness(runtime_capacity: usize) -> Harness {
        let (runtime_in, to_runtime) = mpsc::channel(runtime_capacity);
        let (from_runtime, runtime_out) = mpsc::channel(64);
        let (events_tx, events) = mpsc::unbounded_channel();
        let runtime = BridgeRuntime::Task {
            input: runtime_in,
            output: runtime_out,
        };
        let (hook, end) = BridgeHook::new(FRAME, runtime, events_tx, None, true, 10);
        Harness {
            hook: Box::new(hook),
            to_runtime,
            from_runtime,
            events,
            end,
        }
    }

    impl Harness {
        /// One tick with `inbound` as the far end's frame; the frame sent back.
        fn tick(&mut self, inbound: i16) -> Vec<i16> {
            let mut out = vec![i16::MIN; FRAME];
            assert!(self
                .hook
                .on_frame(&[inbound; FRAME], FrameKind::Voice, &mut out));
            out
        }

        fn say(&self, output: RuntimeOutput) {
            self.from_runtime.try_send(output).expect("room");
        }

        fn inputs(&mut self) -> Vec<RuntimeInput> {
            std::iter::from_fn(|| self.to_runtime.try_recv().ok()).collect()
        }
    }

    fn marks(inputs: &[RuntimeInput]) -> Vec<(u64, bool)> {
        inputs
            .iter()
            .filter_map(|input| match input {
                RuntimeInput::Mark { id, cleared } => Some((*id, *cleared)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn audio_the_runtime_queued_leaves_in_the_next_tick_and_the_far_end_reaches_it() {
        let mut h = harness(16);
        assert_eq!(
            h.tick(5),
            vec![0; FRAME],
            "silence while the runtime says nothing"
        );
        h.say(RuntimeOutput::Audio(vec![700; FRAME * 2]));
        assert_eq!(
            h.tick(6),
            vec![700; FRAME],
            "played in the tick after it arrived"
        );
        assert_eq!(h.tick(7), vec![700; FRAME]);
        assert_eq!(h.tick(8), vec![0; FRAME]);
        let heard: Vec<i16> = h
            .inputs()
            .iter()
            .filter_map(|input| match input {
                RuntimeInput::Audio(frame) => Some(frame.samples()[0]),
                _ => None,
            })
            .collect();
        assert_eq!(
            heard,
            vec![5, 6, 7, 8],
            "every inbound frame reached the runtime"
        );
    }

    #[test]
    fn a_mark_is_echoed_once_the_audio_before_it_was_sent_and_clear_drops_the_rest() {
        let mut h = harness(16);
        h.say(RuntimeOutput::Audio(vec![1; FRAME]));
        h.say(RuntimeOutput::Mark(1));
        h.say(RuntimeOutput::Audio(vec![2; FRAME * 3]));
        h.say(RuntimeOutput::Mark(2));
        assert_eq!(h.tick(0), vec![1; FRAME]);
        assert_eq!(
            marks(&h.inputs()),
            vec![(1, false)],
            "reached with its audio"
        );
        assert_eq!(h.tick(0), vec![2; FRAME]);
        assert!(marks(&h.inputs()).is_empty());
        h.say(RuntimeOutput::Clear);
        assert_eq!(h.tick(0), vec![0; FRAME], "cleared at once");
        assert_eq!(
            marks(&h.inputs()),
            vec![(2, true)],
            "the pending mark, as cleared"
        );
    }

    #[test]
    fn digits_both_ways_and_the_agents_hang_up_after_its_audio() {
        let mut h = harness(16);
        h.say(RuntimeOutput::Dtmf("12".into()));
        h.tick(0);
        assert_eq!(
            h.hook.poll_dtmf().as_deref(),
            Some("12"),
            "handed to the stream"
        );
        assert_eq!(h.hook.poll_dtmf(), None);
        let digit = MediaEvent::Dtmf(DtmfDigit {
            digit: '5',
            duration_ms: 100,
            rtp_timestamp: 0,
        });
        assert!(
            h.hook.on_event(&digit),
            "the bridge takes its stream's events"
        );
        assert!(h
            .inputs()
            .iter()
            .any(|i| matches!(i, RuntimeInput::Dtmf('5'))));
        // Audio after the digits waits while they sound (10 frames each here).
        h.say(RuntimeOutput::Audio(vec![4; FRAME]));
        let resumed = (0..30).position(|_| h.tick(0) == vec![4; FRAME]);
        assert!(
            resumed.is_some_and(|k| k >= 18),
            "two digits' pause first: {resumed:?}"
        );

        let mut h = harness(16);
        h.say(RuntimeOutput::Audio(vec![3; FRAME]));
        h.say(RuntimeOutput::Hangup);
        assert_eq!(h.tick(0), vec![3; FRAME]);
        let events: Vec<BridgeEvent> = std::iter::from_fn(|| h.events.try_recv().ok()).collect();
        assert!(
            !events.contains(&BridgeEvent::Hangup),
            "not before its audio is out"
        );
        h.tick(0);
        let events: Vec<BridgeEvent> = std::iter::from_fn(|| h.events.try_recv().ok()).collect();
        assert!(events.contains(&BridgeEvent::Hangup), "{events:?}");
    }

    #[test]
    fn a_runtime_too_slow_for_its_frames_loses_them_and_the_audio_goes_on() {
        let mut h = harness(2);
        for k in 0..10 {
            h.tick(k);
        }
        assert_eq!(
            h.inputs().len(),
            2,
            "what fit; the rest was dropped, nothing waited"
        );
        assert_eq!(h.tick(0), vec![0; FRAME]);
    }

    #[test]
    fn an_echo_in_the_tick_answers_each_frame_in_the_tick_it_arrives() {
        let (events_tx, _events) = mpsc::unbounded_channel();
        let runtime = BridgeRuntime::InTick(Box::new(crate::agent::echo::Echo));
        let (hook, _end) = BridgeHook::new(FRAME, runtime, events_tx, None, true, 10);
        let mut hook = Box::new(hook);
        for k in 1..5i16 {
            let mut out = vec![0; FRAME];
            assert!(hook.on_frame(&[k * 10; FRAME], FrameKind::Voice, &mut out));
            assert_eq!(out, vec![k * 10; FRAME], "tick {k}: no frame of delay");
        }
    }

    #[test]
    fn detaching_hands_the_recording_back() {
        let mut h = harness(4);
        h.tick(0);
        h.hook.on_detach();
        assert!(
            matches!(h.end.try_recv(), Ok(None)),
            "no recording, handed back"
        );
    }
}
