//! The agent side of a call's audio, shared by the service (every agent's call) and the
//! test bot (its own leg), so both sides of a test call move audio, marks, DTMF and
//! hang-ups the same way. Built on `media` only: the live call path needs nothing of the
//! test bot.
//!
//! - [`agent`]: the [`AgentRuntime`](agent::AgentRuntime) interface (a runtime hears 20 ms
//!   frames and speaks chunks of audio, marks, `clear`, DTMF, transcript, hang-up) and the
//!   echo runtime.
//! - [`playout`]: the sans-IO playback queue (pacing, marks, clear, DTMF pauses).
//! - [`activity`]: when the far end was last heard, read by the call task without a
//!   message per packet.
//! - [`bridge`]: the [`FrameHook`](media::stream::FrameHook) the media worker runs on
//!   every tick of the call's stream, between the stream and the runtime; sans-IO apart
//!   from the non-blocking ends of its channels, so tests drive it frame by frame.

#![deny(missing_docs)]

pub mod activity;
pub mod agent;
pub mod bridge;
pub mod playout;
