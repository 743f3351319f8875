//! A SIP user agent library (RFC 3261) for dialcore.
//!
//! Layers, bottom up, each in its own module:
//!
//! - [`message`]: parsing and building SIP messages (on `rsip`, behind our own API).
//! - [`transport`]: UDP and TCP sockets, stream framing, `rport` (RFC 3581).
//! - [`transaction`]: the four RFC 3261 section 17 state machines, sans-IO, time passed in.
//! - [`dialog`]: dialog state (section 12): tags, route sets, CSeq, target refresh.
//! - [`session_timer`]: RFC 4028 negotiation and refresh scheduling.
//! - [`sdp`]: SDP offer/answer (RFC 3264) for one audio stream.
//! - [`auth`]: digest authentication (RFC 7616/2617) as client and server.
//! - [`ua`]: the tokio driver and the user agent API the service uses.
#![deny(missing_docs)]

pub mod auth;
pub mod dialog;
pub mod message;
pub mod sdp;
pub mod session_timer;
pub mod transaction;
pub mod transport;
pub mod ua;
