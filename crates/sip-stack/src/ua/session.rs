//! Glue between SIP messages and the RFC 4028 logic of [`crate::session_timer`].

use crate::message::{Header, MessageExt, Request};
use crate::session_timer::{
    lists_timer, uas_negotiate, RequestHeaders, ResponseHeaders, SessionTimerConfig,
    SessionTimerError, UasDecision,
};

/// `Supported: timer`, `Session-Expires` and `Min-SE` for an INVITE,
/// re-INVITE or UPDATE we send (without `timer` in Supported the peer would
/// not let us stay the refresher).
pub(crate) fn request_headers(headers: &RequestHeaders) -> [Header; 3] {
    [
        Header::Other("Supported".into(), "timer".into()),
        Header::Other(
            "Session-Expires".into(),
            headers.session_expires.to_string(),
        ),
        Header::Other("Min-SE".into(), headers.min_se.to_string()),
    ]
}

/// `Require: timer` (when the UAC supports it) and `Session-Expires` for our 2xx.
pub(crate) fn response_headers(headers: &ResponseHeaders) -> Vec<Header> {
    let mut out = Vec::with_capacity(2);
    if headers.require_timer {
        out.push(Header::Other("Require".into(), "timer".into()));
    }
    out.push(Header::Other(
        "Session-Expires".into(),
        headers.session_expires.to_string(),
    ));
    out
}

/// The UAS decision for an incoming INVITE or UPDATE (RFC 4028 section 9).
pub(crate) fn decide(
    request: &Request,
    config: &SessionTimerConfig,
) -> Result<UasDecision, SessionTimerError> {
    let supported = request.header_all("Supported").into_iter().any(lists_timer);
    uas_negotiate(
        config,
        supported,
        request.header("Session-Expires"),
        request.header("Min-SE"),
    )
}
