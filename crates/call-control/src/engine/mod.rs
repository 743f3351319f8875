//! The call engine: outbound and inbound calls over the SIP user agent,
//! media over the media engine, one task per call.

pub mod lifecycle;
