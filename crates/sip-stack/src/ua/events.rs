//! What the user agent tells the application about a call.

use crate::message::{Peer, Uri};

/// Which side ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// We did (the application hung up, or a limit of ours ended it).
    Local,
    /// The far end did.
    Remote,
}

/// Why an established call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// A BYE was sent or received.
    Bye,
    /// The session timer (RFC 4028) expired without a refresh: we sent BYE.
    SessionExpired,
    /// We answered but the ACK never came (RFC 3261 13.3.1.4): we sent BYE.
    AckTimeout,
    /// An in-dialog request (refresh) failed with 408 or 481: the dialog is gone.
    DialogLost,
    /// The user agent is shutting down.
    Shutdown,
}

/// A Reason header's Q.850 cause (RFC 3326), as carriers send on BYE/CANCEL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Q850 {
    /// The cause value, e.g. 16 (normal clearing), 17 (busy).
    pub cause: u16,
    /// The text parameter, if any.
    pub text: Option<String>,
}

/// Where the `code` of a [`CallEvent::Failed`] comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureCause {
    /// The far end answered the INVITE with this final status.
    Response,
    /// Nothing at all came back for the INVITE (no 100, no 1xx, no final
    /// response) before Timer B (64*T1): reported as 408 (RFC 3261 8.1.3.1).
    NoResponse,
    /// The transport could not carry the call's requests to the far end (TCP
    /// connection refused, reset or timed out; a send that failed): reported
    /// as 503 (RFC 3261 8.1.3.1).
    Transport(TransportFailure),
    /// This user agent chose the code itself: the application rejected the
    /// call, our CANCEL got no final response within 64*T1, no ACK came,
    /// the caller sent CANCEL or BYE before the answer, or no transport
    /// serves the destination.
    Local,
}

/// A transport failure as the operating system reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportFailure {
    /// The kind of error (`ConnectionRefused`, `ConnectionReset`, `TimedOut`, ...).
    pub kind: std::io::ErrorKind,
    /// The error as the OS words it, e.g. `Connection refused (os error 111)`.
    pub message: String,
}

impl TransportFailure {
    /// The failure `error` describes.
    pub fn from_io(error: &std::io::Error) -> Self {
        Self {
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

impl std::fmt::Display for TransportFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Progress and end of one call, in order; the last event is always
/// [`CallEvent::Failed`] or [`CallEvent::Ended`].
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// Outbound: 100 Trying received.
    Trying,
    /// Outbound: 180/183 received, with the early media SDP answer if any.
    Ringing {
        /// 180 or 183 (or another 1xx).
        code: u16,
        /// SDP of early media.
        sdp: Option<String>,
    },
    /// Outbound: 2xx received and ACKed. Carries the SDP answer.
    Answered {
        /// The SDP answer.
        sdp: Option<String>,
    },
    /// Inbound: the INVITE's digest answer matched the credentials given to
    /// [`CallHandle::authenticate`](super::CallHandle::authenticate).
    Authenticated {
        /// The user name it answered with.
        username: String,
    },
    /// Inbound: the ACK for our 2xx arrived; the call is fully up.
    Confirmed,
    /// The peer sent a re-INVITE or UPDATE with a new offer (hold, media
    /// change); we answered it with our current SDP.
    RemoteUpdate {
        /// The peer's new SDP.
        sdp: String,
    },
    /// Outbound: our CANCEL got its final response (200, or 481 when the
    /// far end no longer knows the INVITE). The INVITE's own final response
    /// (487) normally follows at once, as [`CallEvent::Failed`].
    CancelAnswered {
        /// The status of the response to the CANCEL.
        code: u16,
    },
    /// The call was never established.
    Failed {
        /// The final SIP status (408 for a timeout, 487 when cancelled).
        code: u16,
        /// The reason phrase, or a description when none came over the wire.
        reason: String,
        /// The Q.850 cause of a Reason header, when present.
        q850: Option<Q850>,
        /// Whether `code` came from the far end, and if not, what happened.
        cause: FailureCause,
    },
    /// An established call ended.
    Ended {
        /// Who ended it.
        by: Party,
        /// Why.
        reason: EndReason,
        /// The Q.850 cause of the BYE's Reason header, when present.
        q850: Option<Q850>,
    },
}

impl CallEvent {
    /// Whether this is the last event of the call.
    pub fn is_terminal(&self) -> bool {
        matches!(self, CallEvent::Failed { .. } | CallEvent::Ended { .. })
    }
}

/// What an incoming INVITE asked for.
#[derive(Debug, Clone)]
pub struct IncomingInvite {
    /// The Request-URI.
    pub request_uri: Uri,
    /// The From header value (caller).
    pub from: String,
    /// The To header value (callee).
    pub to: String,
    /// The user part of the Request-URI (the dialled number), if any.
    pub called_user: Option<String>,
    /// The user part of the From URI (the caller id), if any.
    pub caller_user: Option<String>,
    /// The SIP Call-ID.
    pub call_id: String,
    /// The address and transport the INVITE came from.
    pub source: Peer,
    /// The SDP offer, if the INVITE carried one.
    pub sdp: Option<String>,
}

/// Parses a Reason header value for its Q.850 cause (RFC 3326).
pub fn parse_q850(value: &str) -> Option<Q850> {
    value.split(',').find_map(|reason| {
        let mut parts = reason.split(';');
        let protocol = parts.next()?.trim();
        if !protocol.eq_ignore_ascii_case("Q.850") {
            return None;
        }
        let mut cause = None;
        let mut text = None;
        for param in parts {
            let (name, value) = param.split_once('=')?;
            match name.trim().to_ascii_lowercase().as_str() {
                "cause" => cause = value.trim().parse().ok(),
                "text" => text = Some(value.trim().trim_matches('"').to_string()),
                _ => {}
            }
        }
        Some(Q850 {
            cause: cause?,
            text,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q850_reason_is_parsed() {
        assert_eq!(
            parse_q850("Q.850;cause=16;text=\"Normal call clearing\""),
            Some(Q850 {
                cause: 16,
                text: Some("Normal call clearing".into())
            })
        );
        assert_eq!(
            parse_q850("SIP;cause=200, Q.850 ; cause=17"),
            Some(Q850 {
                cause: 17,
                text: None
            })
        );
        assert_eq!(parse_q850("SIP;cause=487"), None);
        assert_eq!(parse_q850("Q.850;cause=abc"), None);
    }
}
