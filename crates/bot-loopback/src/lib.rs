//! SIP loopback test bot (see DESIGN.md). Built on `sip-stack` and `media`.

pub mod agent;
pub mod bridge;
pub mod measure;
pub mod netprofile;
pub mod playout;
pub mod script;
pub mod speech;
pub mod vad;
