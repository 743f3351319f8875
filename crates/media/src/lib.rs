//! The media engine of dialcore: everything between an RTP socket and 20 ms
//! PCM frames for the application.
//!
//! - [`rtp_session`]: RTP send/receive state for one stream (SSRC, sequence, timestamp, symmetric RTP).
//! - [`rtcp`]: sender and receiver reports.
//! - [`jitter`]: the adaptive jitter buffer, sans-IO, time passed in.
//! - [`codec`]: Opus, PCMU, PCMA and RFC 4733 telephone-event behind one trait.
//! - [`resample`]: conversion between 8, 16 and 48 kHz.
//! - [`stats`]: loss, interarrival jitter (RFC 3550) and the ITU-T G.107 E-model MOS.
//! - [`record`]: stereo WAV recording.
//! - [`stream`]: one call leg's media stream (sans-IO core) and the tokio engine driving many of them.
//! - [`netsim`]: a seeded, deterministic network impairment simulator (loss, bursts, jitter, reordering, drift).
#![deny(missing_docs)]

pub mod codec;
pub mod jitter;
pub mod netsim;
pub mod record;
pub mod resample;
pub mod rtcp;
pub mod rtp_session;
pub mod stats;
pub mod stream;
