//! SIP messages: parsing, header access and building (RFC 3261 sections 7, 8, 18, 20).
//!
//! The rest of the crate sees SIP messages only through this module. Every byte first goes
//! through our own validation ([`parse`]): size limit, header unfolding, compact header names,
//! `Content-Length` checks, the request line (method token, Request-URI, version: read here,
//! not by `rsip`), the syntax of From/To/Contact and mandatory, single-instance headers. `rsip`
//! tokenizes the header section, behind a last-resort panic guard, so hostile input always
//! becomes a [`MessageError`]. The RFC 4475 torture messages in `tests/rfc4475/` pin this down.
//!
//! - [`parse`] / [`parse_with`]: bytes of one datagram (or one framed stream message) to a
//!   [`SipMessage`]; [`parse_any`] also returns the valid requests a [`SipMessage`] cannot
//!   hold (extension methods, non-SIP Request-URIs) as an [`UnsupportedRequest`].
//! - [`MessageExt`]: typed accessors (top [`Via`], Call-ID, [`CSeq`], tags, Contact, routes,
//!   generic header lookup with compact forms) on [`Request`], [`Response`] and
//!   [`SipMessage`].
//! - [`new_branch`], [`new_tag`], [`new_call_id`], [`response_for`], [`ack_for_non_2xx`],
//!   [`cancel_for`], [`RequestBuilder`], [`set_received_rport`]: building messages.
//! - [`StreamFramer`]: sans-IO framing of a TCP byte stream.
//! - [`TransportKind`] and [`Peer`]: where a message came from or goes to.

mod build;
mod framer;
mod header;
mod start_line;
mod unsupported;

use std::net::SocketAddr;

pub use build::{
    ack_for_non_2xx, cancel_for, new_branch, new_call_id, new_tag, response_for,
    response_for_headers, set_received_rport, set_received_rport_headers, RequestBuilder,
};
pub use framer::{FramerConfig, FramerError, FramerOutput, StreamFramer};
pub use header::{
    canonical_header_name, header_name, header_value, parse_uri, CSeq, MessageExt, Via,
};
pub use unsupported::{Parsed, Unsupported, UnsupportedRequest};

/// The `rsip` crate itself, for the rare caller that needs its typed headers.
pub use rsip as raw;
/// One header (re-exported from `rsip`); `Header::Other(name, value)` holds any header.
pub use rsip::Header;
/// The ordered header list of a message (re-exported from `rsip`).
pub use rsip::Headers;
/// A SIP method (re-exported from `rsip`).
pub use rsip::Method;
/// A SIP request (re-exported from `rsip`).
pub use rsip::Request;
/// A SIP response (re-exported from `rsip`).
pub use rsip::Response;
/// A SIP request or response (re-exported from `rsip`).
pub use rsip::SipMessage;
/// A SIP status code (re-exported from `rsip`).
pub use rsip::StatusCode;
/// A SIP or SIPS URI (re-exported from `rsip`).
pub use rsip::Uri;
/// The SIP version of a start line (re-exported from `rsip`).
pub use rsip::Version;

/// The RFC 3261 magic cookie that starts every compliant Via branch.
pub const BRANCH_MAGIC_COOKIE: &str = "z9hG4bK";

/// Default largest message [`parse`] accepts: 64 KiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// The transport protocol a message travels over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// UDP datagrams: unreliable, the transaction layer retransmits.
    Udp,
    /// A TCP stream: reliable, no retransmissions, zero-length wait timers.
    Tcp,
}

impl TransportKind {
    /// True for transports that deliver reliably (TCP), false for UDP.
    pub fn is_reliable(self) -> bool {
        matches!(self, TransportKind::Tcp)
    }

    /// The token used in a Via header's sent-protocol (`UDP`, `TCP`).
    pub fn via_token(self) -> &'static str {
        match self {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
        }
    }
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.via_token())
    }
}

/// The remote end of a message: a transport and a socket address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The transport the message uses.
    pub transport: TransportKind,
    /// The remote socket address.
    pub addr: SocketAddr,
}

impl Peer {
    /// A UDP peer.
    pub fn udp(addr: SocketAddr) -> Self {
        Self {
            transport: TransportKind::Udp,
            addr,
        }
    }

    /// A TCP peer.
    pub fn tcp(addr: SocketAddr) -> Self {
        Self {
            transport: TransportKind::Tcp,
            addr,
        }
    }
}

/// Errors of the `message` module: bytes that are not an acceptable SIP message, or a message
/// missing what an operation needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The input is larger than the configured maximum.
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The input is empty or only whitespace.
    #[error("empty message")]
    Empty,
    /// No empty line (CRLF CRLF) ends the header section.
    #[error("no empty line ends the header section")]
    UnterminatedHeaders,
    /// A header line is not `name: value`.
    #[error("malformed header line {line}")]
    MalformedHeaderLine {
        /// 1-based line number within the message (the start line is line 1).
        line: usize,
    },
    /// The header section contains bytes that are not allowed there (control bytes, NUL).
    #[error("forbidden byte 0x{byte:02x} at offset {offset} in the header section")]
    ForbiddenByte {
        /// The offending byte.
        byte: u8,
        /// Its offset in the input.
        offset: usize,
    },
    /// The underlying parser rejected the start line or a header.
    #[error("syntax error: {reason}")]
    Syntax {
        /// What the parser reported.
        reason: String,
    },
    /// A mandatory header is missing.
    #[error("missing mandatory header {name}")]
    MissingHeader {
        /// The header name.
        name: &'static str,
    },
    /// A header's value could not be parsed.
    #[error("invalid {name} header value {value:?}")]
    InvalidHeader {
        /// The header name.
        name: &'static str,
        /// The offending value (truncated to 128 bytes).
        value: String,
    },
    /// The body is shorter than the `Content-Length` header announces.
    #[error("body of {actual} bytes is shorter than Content-Length {declared}")]
    BodyTruncated {
        /// The announced length.
        declared: usize,
        /// The bytes actually present.
        actual: usize,
    },
    /// Two Content-Length headers disagree.
    #[error("conflicting Content-Length headers")]
    ConflictingContentLength,
    /// The CSeq method of a request differs from its request method.
    #[error("CSeq method {cseq} does not match request method {request}")]
    CSeqMethodMismatch {
        /// The request-line method.
        request: String,
        /// The CSeq method.
        cseq: String,
    },
    /// A header that may appear once (To, From, Call-ID, CSeq, Max-Forwards, Content-Type)
    /// appears more than once.
    #[error("more than one {name} header")]
    DuplicateHeader {
        /// The header name.
        name: &'static str,
    },
    /// The Request-URI is not a URI (LWS or `<>` in it, escaped headers in a SIP URI, ...).
    #[error("invalid Request-URI {uri:?}")]
    InvalidRequestUri {
        /// The Request-URI as written (truncated to 128 bytes).
        uri: String,
    },
    /// A valid request with a method this stack does not implement (answered 501).
    #[error("method {method} is not implemented")]
    UnknownMethod {
        /// The method as written (truncated to 128 bytes).
        method: String,
    },
    /// A valid request whose Request-URI scheme is not `sip` or `sips` (answered 416).
    #[error("Request-URI scheme of {uri:?} is not supported")]
    UnsupportedUriScheme {
        /// The Request-URI as written (truncated to 128 bytes).
        uri: String,
    },
    /// A request of another SIP version than 2.0 (answered 505).
    #[error("SIP version {version} is not supported")]
    UnsupportedVersion {
        /// The version as written.
        version: String,
    },
    /// The parser panicked on this input (caught and turned into an error).
    #[error("parser failure on hostile input")]
    ParserPanic,
    /// A [`RequestBuilder`] lacks a mandatory part.
    #[error("request builder is missing {field}")]
    BuilderMissing {
        /// The missing part.
        field: &'static str,
    },
}

impl MessageError {
    pub(crate) fn invalid(name: &'static str, value: &str) -> Self {
        MessageError::InvalidHeader {
            name,
            value: truncated(value, 128).to_owned(),
        }
    }
}

/// Limits and mode of [`parse_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseConfig {
    /// Largest accepted input in bytes (default [`DEFAULT_MAX_MESSAGE_SIZE`]).
    pub max_size: usize,
    /// The input is one whole datagram (default true): without `Content-Length` the body is
    /// the rest of the datagram (RFC 3261 18.3). When false (stream), a missing
    /// `Content-Length` means an empty body.
    pub datagram: bool,
}

impl Default for ParseConfig {
    fn default() -> Self {
        Self {
            max_size: DEFAULT_MAX_MESSAGE_SIZE,
            datagram: true,
        }
    }
}

/// Parses one datagram with the default [`ParseConfig`] (64 KiB limit).
///
/// Never panics. Accepts folded header lines and compact header names (which become their
/// full forms), truncates a body longer than `Content-Length` and rejects one that is shorter
/// ([`MessageError::BodyTruncated`]), requires Via, From, To, Call-ID and CSeq, and for
/// requests a CSeq method equal to the request method.
pub fn parse(bytes: &[u8]) -> Result<SipMessage, MessageError> {
    parse_with(bytes, &ParseConfig::default())
}

/// Parses one message with explicit limits; see [`parse`]. A valid request that a
/// [`SipMessage`] cannot hold is [`MessageError::UnknownMethod`] or
/// [`MessageError::UnsupportedUriScheme`] here; [`parse_any`] returns it.
pub fn parse_with(bytes: &[u8], config: &ParseConfig) -> Result<SipMessage, MessageError> {
    match parse_any(bytes, config)? {
        Parsed::Message(message) => Ok(message),
        Parsed::Unsupported(request) => Err(request.error()),
    }
}

/// Parses one message like [`parse_with`], returning valid requests with an extension method
/// or a non-SIP Request-URI as [`Parsed::Unsupported`] so that they can be answered (501, 416).
pub fn parse_any(bytes: &[u8], config: &ParseConfig) -> Result<Parsed, MessageError> {
    if bytes.len() > config.max_size {
        return Err(MessageError::TooLarge {
            size: bytes.len(),
            max: config.max_size,
        });
    }
    // Leading CRLFs before the start line are allowed and ignored (RFC 3261 7.5).
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .ok_or(MessageError::Empty)?;
    let bytes = &bytes[start..];
    let head_end = find(bytes, b"\r\n\r\n").ok_or(MessageError::UnterminatedHeaders)?;
    let head = &bytes[..head_end];
    let rest = &bytes[head_end + 4..];
    let normalized = header::normalize_head(head, start)?;

    let declared = header::content_length_of(&normalized)?;
    let body = match declared {
        Some(len) if len > rest.len() => {
            return Err(MessageError::BodyTruncated {
                declared: len,
                actual: rest.len(),
            })
        }
        Some(len) => &rest[..len],
        None if config.datagram => rest,
        None => &[][..],
    };

    let (start_line, headers) = normalized
        .split_once("\r\n")
        .expect("normalize_head ends every line in CRLF");
    if start_line.starts_with("SIP/") {
        let mut message = tokenize_guarded(normalized.as_bytes())?;
        *message.body_mut() = body.to_vec();
        header::validate(&message, None)?;
        return Ok(Parsed::Message(message));
    }
    let line = start_line::request_line(start_line)?;
    let method = start_line::known_method(line.method);
    let uri = start_line::request_uri(line.uri)?;
    // rsip reads the header section behind a start line it accepts; the method and
    // Request-URI are the ones read above.
    let placeholder = format!(
        "{} sip:placeholder.invalid SIP/2.0\r\n{headers}",
        method.unwrap_or(Method::Options)
    );
    let SipMessage::Request(mut request) = tokenize_guarded(placeholder.as_bytes())? else {
        unreachable!("a request line makes a request")
    };
    request.body = body.to_vec();
    let message = SipMessage::Request(request);
    header::validate(&message, Some(line.method))?;
    let SipMessage::Request(mut request) = message else {
        unreachable!("still the request built above")
    };
    let reason = match (method, uri) {
        (Some(method), start_line::RequestUri::Sip(uri)) => {
            request.method = method;
            request.uri = uri;
            return Ok(Parsed::Message(SipMessage::Request(request)));
        }
        (None, _) => Unsupported::Method,
        (Some(_), start_line::RequestUri::Other { .. }) => Unsupported::UriScheme,
    };
    Ok(Parsed::Unsupported(UnsupportedRequest {
        method: line.method.to_owned(),
        uri: line.uri.to_owned(),
        headers: request.headers,
        body: request.body,
        reason,
    }))
}

/// Runs rsip on a normalized header section, turning any panic into an error.
fn tokenize_guarded(head: &[u8]) -> Result<SipMessage, MessageError> {
    match std::panic::catch_unwind(|| SipMessage::try_from(head)) {
        Ok(Ok(message)) => Ok(message),
        Ok(Err(error)) => Err(MessageError::Syntax {
            reason: truncated(&error.to_string(), 160).to_owned(),
        }),
        Err(_) => Err(MessageError::ParserPanic),
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a char boundary.
pub(crate) fn truncated(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Position of `needle` in `haystack`.
pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n\
        Max-Forwards: 70\r\n\
        To: Bob <sip:bob@biloxi.example.com>\r\n\
        From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
        Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
        CSeq: 314159 INVITE\r\n\
        Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
        Content-Type: application/sdp\r\n\
        Content-Length: 4\r\n\
        \r\n\
        v=0\n";

    #[test]
    fn parses_a_request_and_cuts_the_body() {
        let mut bytes = INVITE.as_bytes().to_vec();
        bytes.extend_from_slice(b"trailing garbage");
        let message = parse(&bytes).expect("valid INVITE");
        let SipMessage::Request(request) = message else {
            panic!("expected a request")
        };
        assert_eq!(request.method, Method::Invite);
        assert_eq!(request.body, b"v=0\n");
    }

    #[test]
    fn rejects_a_truncated_body() {
        let bytes = &INVITE.as_bytes()[..INVITE.len() - 2];
        assert_eq!(
            parse(bytes),
            Err(MessageError::BodyTruncated {
                declared: 4,
                actual: 2
            })
        );
    }

    #[test]
    fn rejects_oversized_input() {
        let config = ParseConfig {
            max_size: 100,
            datagram: true,
        };
        assert!(matches!(
            parse_with(INVITE.as_bytes(), &config),
            Err(MessageError::TooLarge { max: 100, .. })
        ));
    }

    #[test]
    fn rejects_garbage_and_empty_input() {
        assert_eq!(parse(b""), Err(MessageError::Empty));
        assert_eq!(parse(b"\r\n\r\n"), Err(MessageError::Empty));
        assert_eq!(
            parse(b"hello world"),
            Err(MessageError::UnterminatedHeaders)
        );
        assert!(parse(b"\xff\xfe\r\n\r\n").is_err());
        assert!(parse(b"INVITE sip:a@b SIP/2.0\r\n\r\n").is_err());
    }

    #[test]
    fn missing_content_length_on_a_datagram_takes_the_rest() {
        let text = INVITE.replace("Content-Length: 4\r\n", "");
        let message = parse(text.as_bytes()).expect("valid without Content-Length");
        assert_eq!(message.body(), b"v=0\n");
        let stream = ParseConfig {
            datagram: false,
            ..ParseConfig::default()
        };
        let message = parse_with(text.as_bytes(), &stream).expect("valid on a stream");
        assert!(message.body().is_empty());
    }

    #[test]
    fn rejects_cseq_method_mismatch() {
        let text = INVITE.replace("CSeq: 314159 INVITE", "CSeq: 314159 BYE");
        assert_eq!(
            parse(text.as_bytes()),
            Err(MessageError::CSeqMethodMismatch {
                request: "INVITE".into(),
                cseq: "BYE".into()
            })
        );
    }

    #[test]
    fn transport_kind_reliability() {
        assert!(TransportKind::Tcp.is_reliable());
        assert!(!TransportKind::Udp.is_reliable());
        assert_eq!(TransportKind::Udp.to_string(), "UDP");
    }
}
