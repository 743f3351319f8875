//! The agent-runtime interface: how a brain hears and speaks on a call.
//!
//! A runtime is a task that gets the call's [`CallMetadata`] and a
//! [`RuntimeSession`]: a stream of [`RuntimeInput`]s (20 ms PCM frames of
//! what the far end says, DTMF digits, marks reached) and a sink for
//! [`RuntimeOutput`]s (audio to play, in chunks of any length; marks;
//! `clear` to drop queued audio at once; DTMF to send; transcript events;
//! hang-up). Whoever drives the call (the service's bridge, or the test
//! bot's) repacketizes the audio into 20 ms frames and paces it in real
//! time, echoes a mark as [`RuntimeInput::Mark`] only once the audio queued
//! before it was sent, and answers `clear` by dropping the queue and echoing
//! the pending marks as cleared. Time, for a runtime, is the stream of
//! inbound frames: one every 20 ms of the call.
//!
//! Agents (echo, scripted, WebSocket) and the test bot's brain implement the
//! same [`AgentRuntime`] trait, so either side of a test call can be any of
//! them. It lives here, below the service, because the service depends on
//! this crate and not the other way round.

pub mod echo;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use futures_util::future::BoxFuture;
use media::stream::AudioFrame;
use tokio::sync::mpsc;

/// Who placed the call, seen from the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The agent's side placed the call.
    Outbound,
    /// The agent's side received the call.
    Inbound,
}

impl Direction {
    /// `outbound` or `inbound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of agent runtimes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// No runtime of this type is available in this build.
    #[error("agent runtime {0:?} is not available")]
    Unsupported(&'static str),
    /// An audio file of a script could not be used.
    #[error("audio file {path}: {reason}")]
    AudioFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The runtime could not reach the agent (network runtimes).
    #[error("agent unreachable: {0}")]
    Unreachable(String),
    /// The runtime failed mid-call.
    #[error("agent runtime failed: {0}")]
    Failed(String),
    /// The agent's connection dropped mid-call (network runtimes).
    #[error("agent disconnected: {0}")]
    Disconnected(String),
    /// The agent's address is one the service may not connect to (network runtimes): the
    /// reason names the address and the setting that allows it.
    #[error("agent destination refused: {0}")]
    Refused(String),
}

/// What a runtime knows about its call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallMetadata {
    /// Our call id (`call_...`).
    pub call_id: String,
    /// The organisation.
    pub org_id: String,
    /// The agent.
    pub agent_id: String,
    /// Who placed the call.
    pub direction: Direction,
    /// The calling number (E.164 when known).
    pub from_number: String,
    /// The called number.
    pub to_number: String,
    /// The agent's prompt with the call's variables rendered in.
    pub prompt: String,
    /// The first line the agent says, rendered, if any.
    pub greeting: Option<String>,
    /// The call's variables.
    pub variables: BTreeMap<String, String>,
    /// The SIP Call-ID.
    pub sip_call_id: Option<String>,
    /// Rate of the PCM frames in both directions: 8000 or 16000 Hz.
    pub sample_rate: u32,
}

impl CallMetadata {
    /// Samples in one 20 ms frame at [`CallMetadata::sample_rate`].
    pub fn frame_samples(&self) -> usize {
        self.sample_rate as usize / 50
    }
}

/// What the runtime receives.
// Frames travel inline (no heap per frame); the other variants are rare.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy)]
pub enum RuntimeInput {
    /// 20 ms of what the far end says (silence included: one every 20 ms).
    Audio(AudioFrame),
    /// A DTMF digit the far end pressed (RFC 4733).
    Dtmf(char),
    /// A mark was reached: every sample queued before it has been sent
    /// (`cleared: false`), or it was dropped by a `clear` (`cleared: true`).
    Mark {
        /// The mark's id as the runtime gave it ([`RuntimeOutput::Mark`]).
        id: u64,
        /// Whether it was dropped by a `clear` rather than played.
        cleared: bool,
    },
}

/// What the runtime asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum RuntimeOutput {
    /// Audio to play after what is already queued: PCM at the call's rate,
    /// any length (repacketized into 20 ms frames).
    Audio(Vec<i16>),
    /// Tell me (with [`RuntimeInput::Mark`]) when playback reaches here.
    Mark(u64),
    /// Drop all queued audio now (barge-in); pending marks come back cleared.
    Clear,
    /// Send these DTMF digits (RFC 4733) when playback reaches here.
    Dtmf(String),
    /// A transcript event to keep on the call record.
    Transcript {
        /// `agent` or `caller`.
        role: String,
        /// What was said.
        text: String,
        /// Whether the text is final (only final entries are stored).
        is_final: bool,
    },
    /// Hang up once playback reaches here.
    Hangup,
}

/// The runtime's two channels to the call.
#[derive(Debug)]
pub struct RuntimeSession {
    /// Inbound frames, digits and marks; `None` once the call is over.
    pub input: mpsc::Receiver<RuntimeInput>,
    /// Everything the runtime asks for; sending fails once the call is over.
    pub output: mpsc::Sender<RuntimeOutput>,
}

impl RuntimeSession {
    /// A session and the bridge's ends of its channels: the sender of
    /// inputs and the receiver of outputs (`capacity` messages each way).
    pub fn channel(
        capacity: usize,
    ) -> (
        RuntimeSession,
        mpsc::Sender<RuntimeInput>,
        mpsc::Receiver<RuntimeOutput>,
    ) {
        let (input_tx, input) = mpsc::channel(capacity);
        let (output, output_rx) = mpsc::channel(capacity);
        (RuntimeSession { input, output }, input_tx, output_rx)
    }

    /// Sends one output; false once the call is over.
    pub async fn send(&self, output: RuntimeOutput) -> bool {
        self.output.send(output).await.is_ok()
    }
}

/// An agent's brain on one call. `run` returns when the runtime is done
/// (it hung up, or its input ended because the call is over).
pub trait AgentRuntime: Send + 'static {
    /// The runtime's type, for logs (`echo`, `scripted`, `websocket`, ...).
    fn kind(&self) -> &'static str;

    /// Runs the runtime for one call.
    fn run(
        self: Box<Self>,
        metadata: CallMetadata,
        session: RuntimeSession,
    ) -> BoxFuture<'static, Result<(), RuntimeError>>;

    /// A runtime that needs nothing but each frame (no I/O, no waiting, no marks) may
    /// run inside the media worker's tick instead of as a task: it returns its per-frame
    /// form here, and the bridge answers every inbound frame in the tick it is decoded,
    /// with no task or channel for the call. `None` (the default): run as a task.
    fn in_tick(&self) -> Option<Box<dyn TickRuntime>> {
        None
    }
}

/// The per-frame form of a runtime ([`AgentRuntime::in_tick`]), run by the media worker.
pub trait TickRuntime: Send {
    /// One inbound 20 ms frame of the far end; write the reply into `out` (same length)
    /// and return true, or return false to send silence.
    fn on_frame(&mut self, inbound: &[i16], out: &mut [i16]) -> bool;
}
