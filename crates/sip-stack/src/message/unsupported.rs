//! Well-formed requests that [`SipMessage`](super::SipMessage) cannot hold: an extension method
//! (RFC 3261 8.2.1, answered 501) or a Request-URI scheme other than `sip`/`sips` (8.2.2.1,
//! answered 416). They pass every check a [`Request`](super::Request) does; only the method or
//! the URI is kept as text.

use super::{Headers, MessageError, MessageExt};

/// The result of [`parse_any`](super::parse_any): a message, or a valid request this stack
/// answers without representing it as a [`Request`](super::Request).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // the common case is the message itself
pub enum Parsed {
    /// A request with a known method and a SIP URI, or any response.
    Message(super::SipMessage),
    /// A valid request with an extension method or a non-SIP Request-URI.
    Unsupported(UnsupportedRequest),
}

/// Why a valid request is an [`UnsupportedRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unsupported {
    /// The method is an extension method this stack does not implement (501).
    Method,
    /// The Request-URI scheme is not `sip` or `sips` (416).
    UriScheme,
}

/// A valid request with an extension method or a non-SIP Request-URI; see [`Parsed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedRequest {
    /// The method as written (case-sensitive; `%` is not an escape in it).
    pub method: String,
    /// The Request-URI as written.
    pub uri: String,
    /// The headers, in order (compact names expanded, folded lines joined).
    pub headers: Headers,
    /// The body (`Content-Length` bytes of it).
    pub body: Vec<u8>,
    /// What this stack does not support about it.
    pub reason: Unsupported,
}

impl UnsupportedRequest {
    /// The error [`parse`](super::parse) reports for this request.
    pub fn error(&self) -> MessageError {
        match self.reason {
            Unsupported::Method => MessageError::UnknownMethod {
                method: super::truncated(&self.method, 128).to_owned(),
            },
            Unsupported::UriScheme => MessageError::UnsupportedUriScheme {
                uri: super::truncated(&self.uri, 128).to_owned(),
            },
        }
    }

    /// The `Status-Code` a user agent answers with: 501 Not Implemented for an unknown method,
    /// 416 Unsupported URI Scheme otherwise (the method is inspected first, RFC 3261 8.2.1).
    pub fn status_code(&self) -> u16 {
        match self.reason {
            Unsupported::Method => 501,
            Unsupported::UriScheme => 416,
        }
    }
}

impl MessageExt for UnsupportedRequest {
    fn header_list(&self) -> &Headers {
        &self.headers
    }
}
