//! `dialcore load`: a SIP load generator built on dialcore's own user agent
//! and RTP, cheap enough per call that the server, not the generator, is what
//! a run measures.
//!
//! - One SIP [`UserAgent`](sip_stack::ua::UserAgent) carries every call; a
//!   call is one small task that follows its SIP events.
//! - The speech is encoded once per run ([`audio`]); a call's RTP is an entry
//!   in one of a few media shards ([`mux`]), each one socket and one task on a
//!   shared 20 ms clock, driving the sans-IO [`rtp::RtpStream`] of its calls.
//! - Arrivals follow a [`schedule::Profile`]; each call is measured (setup
//!   times, final code, RTP sent and received, loss, jitter, one-way audio,
//!   the echo round trip when the far end echoes) and the run is summed up
//!   and judged by [`report::Threshold`]s.

pub mod audio;
pub mod batch_io;
pub mod mux;
pub mod report;
pub mod rtp;
mod run;
pub mod schedule;

pub use audio::LoadCodec;
pub use report::{Report, Threshold};
pub use run::{run, LoadConfig, LoadError, Progress};
pub use schedule::Profile;
