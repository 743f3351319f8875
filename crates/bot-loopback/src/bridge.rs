//! The audio path of one answered call: media stream <-> agent runtime.
//!
//! Used by the service for every agent's call (call-control's call task)
//! and by the test bot for its own leg, so both sides of a test call move
//! audio, marks, DTMF and hang-ups the same way.
//!
//! One task per call, paced by the media stream's inbound frames (one every
//! 20 ms, silence included). On each frame it hands the frame to the
//! runtime, plays one frame of the runtime's queue ([`Playout`]; silence
//! when empty), records both sides, and reports what the call task needs
//! (RTP activity, transcript entries, the agent's hang-up) over a channel.
//! It never waits on the database, and never on the runtime: a runtime too
//! slow to take its frames loses them.

use std::collections::VecDeque;
use std::net::SocketAddr;

use media::record::RecordingHandle;
use media::stream::{AudioFrame, FrameKind, MediaEvent, StreamHandle};
use tokio::sync::mpsc;
use tracing::debug;

use crate::agent::{RuntimeInput, RuntimeOutput};
use crate::playout::{Playout, PlayoutEvent};

/// RTP activity is reported at most once per this many frames (0.5 s).
const ACTIVITY_EVERY_FRAMES: u32 = 25;
/// Most agent audio queued for playback: 10 minutes at 16 kHz.
const MAX_QUEUED_SAMPLES: usize = 16_000 * 600;

/// What the bridge tells the call task.
#[derive(Debug, Clone, PartialEq)]
pub enum BridgeEvent {
    /// RTP arrived from the far end.
    Activity,
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

/// What the call task tells the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeCommand {
    /// The far end moved its media (re-INVITE).
    SetRemote(SocketAddr),
    /// Stop and hand the stream back.
    Stop,
}

/// What the bridge hands back when it stops.
#[derive(Debug)]
pub struct BridgeEnd {
    /// The stream, to close for its final statistics.
    pub stream: StreamHandle,
    /// The recording, to finish.
    pub recording: Option<RecordingHandle>,
}

/// The bridge of one call.
pub struct Bridge {
    /// The call's media stream.
    pub stream: StreamHandle,
    /// The recording of the call, if recorded.
    pub recording: Option<RecordingHandle>,
    /// Inputs to the runtime.
    pub runtime_in: mpsc::Sender<RuntimeInput>,
    /// Outputs of the runtime.
    pub runtime_out: mpsc::Receiver<RuntimeOutput>,
    /// Reports to the call task.
    pub events: mpsc::UnboundedSender<BridgeEvent>,
    /// Whether telephone-events were negotiated (DTMF can be sent).
    pub telephone_event: bool,
    /// Frames of pause per DTMF digit sent.
    pub frames_per_digit: u32,
}

impl Bridge {
    /// Runs until told to stop or the stream closes.
    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<BridgeCommand>) -> BridgeEnd {
        let frame_samples = self.stream.app_rate().frame_samples();
        let mut playout = Playout::new(frame_samples, MAX_QUEUED_SAMPLES, self.frames_per_digit);
        let mut out = vec![0i16; frame_samples];
        let mut inbound = self.stream.take_inbound();
        let mut media_events = self.stream.take_events();
        let mut pending: VecDeque<RuntimeInput> = VecDeque::new();
        let mut outputs_open = true;
        let mut since_activity = ACTIVITY_EVERY_FRAMES;
        let mut recording_errors = 0u64;
        loop {
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(BridgeCommand::SetRemote(remote)) => {
                        if let Err(error) = self.stream.set_remote(remote, None) {
                            debug!(%error, "media stream gone; remote not updated");
                        }
                    }
                    Some(BridgeCommand::Stop) | None => break,
                },
                frame = recv_opt(&mut inbound) => {
                    let Some(frame) = frame else { break };
                    since_activity = since_activity.saturating_add(1);
                    if matches!(frame.kind(), FrameKind::Voice | FrameKind::Recovered)
                        && since_activity >= ACTIVITY_EVERY_FRAMES
                    {
                        since_activity = 0;
                        let _ = self.events.send(BridgeEvent::Activity);
                    }
                    flush_inputs(&self.runtime_in, &mut pending);
                    // Dropped when the runtime is behind: the audio path never waits.
                    let _ = self.runtime_in.try_send(RuntimeInput::Audio(frame));
                    playout.next_frame(&mut out);
                    let _ = self.stream.try_send_frame(&out);
                    if let Some(recording) = &mut self.recording {
                        if recording.write_frame(Some(frame.samples()), Some(&out)).is_err() {
                            recording_errors += 1;
                        }
                    }
                    while let Some(event) = playout.poll_event() {
                        self.on_playout(event, &mut pending).await;
                    }
                    flush_inputs(&self.runtime_in, &mut pending);
                }
                output = self.runtime_out.recv(), if outputs_open => match output {
                    Some(output) => {
                        self.on_output(output, &mut playout);
                        while let Some(event) = playout.poll_event() {
                            self.on_playout(event, &mut pending).await;
                        }
                    }
                    None => outputs_open = false,
                },
                event = recv_unbounded_opt(&mut media_events) => match event {
                    Some(MediaEvent::Dtmf(digit)) => {
                        let _ = self.events.send(BridgeEvent::Activity);
                        pending.push_back(RuntimeInput::Dtmf(digit.digit));
                        flush_inputs(&self.runtime_in, &mut pending);
                    }
                    Some(other) => debug!(event = ?other, "media event"),
                    None => media_events = None,
                },
            }
        }
        if recording_errors > 0 || playout.dropped_samples() > 0 {
            debug!(
                recording_errors,
                dropped_agent_samples = playout.dropped_samples(),
                "bridge stopped with losses"
            );
        }
        BridgeEnd {
            stream: self.stream,
            recording: self.recording,
        }
    }

    fn on_output(&mut self, output: RuntimeOutput, playout: &mut Playout) {
        match output {
            RuntimeOutput::Audio(samples) => playout.push_audio(samples),
            RuntimeOutput::Mark(id) => playout.push_mark(id),
            RuntimeOutput::Clear => playout.clear(),
            RuntimeOutput::Dtmf(digits) => playout.push_dtmf(digits),
            RuntimeOutput::Hangup => playout.push_hangup(),
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

    async fn on_playout(&mut self, event: PlayoutEvent, pending: &mut VecDeque<RuntimeInput>) {
        match event {
            PlayoutEvent::Mark { id, cleared } => {
                pending.push_back(RuntimeInput::Mark { id, cleared })
            }
            PlayoutEvent::Dtmf(digits) if self.telephone_event => {
                // A round trip to the media worker, not to the network.
                if let Err(error) = self.stream.send_dtmf(&digits).await {
                    debug!(%error, digits, "DTMF not sent");
                }
            }
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

async fn recv_opt(receiver: &mut Option<mpsc::Receiver<AudioFrame>>) -> Option<AudioFrame> {
    match receiver {
        Some(receiver) => receiver.recv().await,
        None => None,
    }
}

async fn recv_unbounded_opt(
    receiver: &mut Option<mpsc::UnboundedReceiver<MediaEvent>>,
) -> Option<MediaEvent> {
    match receiver {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}
