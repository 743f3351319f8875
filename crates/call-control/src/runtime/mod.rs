//! Agent runtimes: how an agent's brain hears and speaks on a call.
//!
//! A runtime is a task that gets the call's [`CallMetadata`] and a
//! [`RuntimeSession`]: a stream of [`RuntimeInput`]s (20 ms PCM frames of
//! what the far end says, DTMF digits, marks reached) and a sink for
//! [`RuntimeOutput`]s (audio to play, in chunks of any length; marks;
//! `clear` to drop queued audio at once; DTMF to send; transcript events;
//! hang-up). The engine's bridge does the rest: it repacketizes the agent's
//! audio into 20 ms frames and paces it in real time, echoes a mark as
//! [`RuntimeInput::Mark`] only once the audio queued before it was sent, and
//! answers `clear` by dropping the queue and echoing the pending marks as
//! cleared. Time, for a runtime, is the stream of inbound frames: one every
//! 20 ms of the call.
//!
//! The interface itself lives in [`agent_bridge::agent`] (re-exported here)
//! so that the test bot's brain implements the same trait. The runtimes here
//! are [`echo`], [`scripted`] and [`websocket`] (the customer's AI over a
//! WebSocket, in the message format of Twilio Media Streams).

pub mod audio;
use std::path::PathBuf;

pub use agent_bridge::agent::echo;
pub mod scripted;
pub mod websocket;

pub use agent_bridge::agent::{
    AgentRuntime, CallMetadata, Direction, RuntimeError, RuntimeInput, RuntimeOutput,
    RuntimeSession,
};

use crate::config::Config;
use crate::model::{Agent, CallDirection, Runtime};
use websocket::{WebsocketSettings, WireFormat};

impl From<CallDirection> for Direction {
    fn from(direction: CallDirection) -> Direction {
        match direction {
            CallDirection::Outbound => Direction::Outbound,
            CallDirection::Inbound => Direction::Inbound,
        }
    }
}

/// Makes the runtime of an agent's call. The engine holds one; the
/// WebSocket runtime and the test bot plug in by wrapping
/// [`BuiltinRuntimes`].
pub trait RuntimeFactory: Send + Sync + 'static {
    /// The runtime for one call of `agent`.
    fn create(
        &self,
        agent: &Agent,
        metadata: &CallMetadata,
    ) -> Result<Box<dyn AgentRuntime>, RuntimeError>;
}

/// The runtimes built into this crate: `echo`, `scripted` and `websocket`.
#[derive(Debug, Clone, Default)]
pub struct BuiltinRuntimes {
    /// Settings of every `websocket` agent's runtime.
    pub websocket: WebsocketSettings,
    /// The only directory `scripted` agents' `say` steps may play files from.
    pub audio_dir: Option<PathBuf>,
}

impl BuiltinRuntimes {
    /// The runtimes with the service's `[websocket]` settings.
    pub fn from_config(config: &Config) -> Self {
        Self {
            websocket: WebsocketSettings {
                connect_timeout: config.websocket.connect_timeout(),
                fallback_audio: config.websocket.fallback_audio.clone(),
                destinations: crate::destinations::DestinationPolicy::from_config(config),
            },
            audio_dir: config.agents.audio_dir.clone(),
        }
    }
}

impl RuntimeFactory for BuiltinRuntimes {
    fn create(
        &self,
        agent: &Agent,
        _metadata: &CallMetadata,
    ) -> Result<Box<dyn AgentRuntime>, RuntimeError> {
        match &agent.runtime {
            Runtime::Echo => Ok(Box::new(echo::Echo)),
            Runtime::Scripted { steps } => Ok(Box::new(scripted::Scripted::new(
                steps.clone(),
                self.audio_dir.clone(),
            ))),
            Runtime::Websocket {
                url,
                headers,
                format,
            } => {
                // The API validates the format; a record from elsewhere may not be.
                let format = WireFormat::parse(format.as_deref()).map_err(RuntimeError::Failed)?;
                Ok(Box::new(websocket::Websocket::new(
                    url.clone(),
                    headers.clone(),
                    format,
                    self.websocket.clone(),
                )))
            }
        }
    }
}
