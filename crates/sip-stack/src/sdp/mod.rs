//! SDP (RFC 4566 subset) and the RFC 3264 offer/answer model for one audio stream.
//!
//! [`SessionDescription::parse`] reads what peers send (tolerant of lines and
//! attributes it does not know, strict about the ones it does); `Display`
//! prints CRLF-terminated lines. [`build_offer`], [`answer`] and
//! [`negotiated`] implement offer/answer: the answerer keeps the offerer's
//! codec order and payload type numbers, the offerer reads the answer back
//! into a [`Negotiated`] media description.
//!
//! ```
//! use sip_stack::sdp::{answer, build_offer, negotiated, Codec, Direction};
//!
//! let offer = build_offer("192.0.2.1".parse().unwrap(), 20_000, &Codec::default_set(), Direction::SendRecv, 1, 1);
//! let ours = [Codec::pcma(), Codec::pcmu()];
//! let reply = answer(&offer, "192.0.2.2".parse().unwrap(), 30_000, &ours, Direction::SendRecv, 7, 1).unwrap();
//! assert_eq!(reply.negotiated.codec.name, "PCMU"); // the offerer's order wins
//! let media = negotiated(&offer, &reply.sdp).unwrap();
//! assert_eq!(media.remote.to_string(), "192.0.2.2:30000");
//! ```

mod codec;
mod offer_answer;
mod parse;
mod print;

use std::net::IpAddr;
use std::str::FromStr;

pub use codec::{Codec, PayloadType};
pub use offer_answer::{answer, build_offer, negotiated, Answer, Negotiated, DEFAULT_PTIME_MS};

/// Everything that can be wrong with an SDP body or an offer/answer exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// The body is not UTF-8.
    #[error("SDP body is not valid UTF-8")]
    NotUtf8,
    /// The body does not start with `v=0`.
    #[error("SDP body does not start with v=0")]
    MissingVersion,
    /// A line is not `<letter>=<value>`.
    #[error("line {line}: not an SDP <type>=<value> line")]
    MalformedLine {
        /// 1-based line number.
        line: usize,
    },
    /// A mandatory line is absent.
    #[error("mandatory {kind}= line missing")]
    MissingLine {
        /// The type letter of the missing line.
        kind: char,
    },
    /// A known line has a value that does not follow its grammar.
    #[error("line {line}: invalid {kind}= value")]
    InvalidValue {
        /// 1-based line number.
        line: usize,
        /// The type letter of the line.
        kind: char,
    },
    /// A known attribute has a value that does not follow its grammar.
    #[error("line {line}: invalid a={name} value")]
    InvalidAttribute {
        /// 1-based line number.
        line: usize,
        /// The attribute name.
        name: String,
    },
    /// A payload type number above 127.
    #[error("payload type {0} is out of range 0..=127")]
    InvalidPayloadType(u8),
    /// The offer has no audio stream we can take (RTP/AVP with a non-zero port).
    #[error("no usable audio stream in the offer")]
    NoAudioStream,
    /// No audio codec is supported by both sides (answer 488 Not Acceptable Here).
    #[error("no audio codec in common")]
    NoCommonCodec,
    /// The answer refused the audio stream (port 0) or has no audio stream for it.
    #[error("the answer rejected the audio stream")]
    AudioRejected,
    /// Neither the media nor the session level carries a `c=` line.
    #[error("no connection address for the audio stream")]
    NoConnectionAddress,
}

/// Media direction attribute (RFC 4566 section 6, RFC 3264 section 6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `a=sendrecv` (the default when absent).
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The same stream seen from the other end: sendonly and recvonly swap.
    pub fn reversed(self) -> Self {
        Self::from_flags(self.receives(), self.sends())
    }

    /// The direction an answerer with preference `ours` answers this offered direction with
    /// (RFC 3264 section 6.1).
    pub fn answer_with(self, ours: Direction) -> Self {
        Self::from_flags(
            self.receives() && ours.sends(),
            self.sends() && ours.receives(),
        )
    }

    /// Whether media flows from the side that wrote this.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the side that wrote this accepts media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    fn from_flags(send: bool, receive: bool) -> Self {
        match (send, receive) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "sendrecv" => Direction::SendRecv,
            "sendonly" => Direction::SendOnly,
            "recvonly" => Direction::RecvOnly,
            "inactive" => Direction::Inactive,
            _ => return None,
        })
    }
}

/// The `o=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The user name (`-` when there is none).
    pub username: String,
    /// The session id.
    pub session_id: u64,
    /// The session version, incremented on every changed re-offer.
    pub session_version: u64,
    /// The address of the machine that created the session (an IP literal or a host name).
    pub address: String,
    /// Whether `address` is IPv6 (`IP6`) rather than IPv4 (`IP4`).
    pub ipv6: bool,
}

/// A property attribute (`a=name`) or value attribute (`a=name:value`) this module keeps as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The attribute name.
    pub name: String,
    /// The value after the colon, if any.
    pub value: Option<String>,
}

/// An `a=rtpmap:<pt> <name>/<rate>[/<channels>]` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// The payload type it names.
    pub payload_type: PayloadType,
    /// The encoding name.
    pub name: String,
    /// The clock rate in Hz.
    pub clock_rate: u32,
    /// The channel count, 1 when absent.
    pub channels: u16,
}

/// An `a=fmtp:<pt> <parameters>` attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fmtp {
    /// The payload type the parameters apply to.
    pub payload_type: PayloadType,
    /// The parameters, as written.
    pub parameters: String,
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// The media type (`audio`, `video`, `image`, ...).
    pub media: String,
    /// The transport port; 0 marks a rejected or disabled stream.
    pub port: u16,
    /// The port count after a slash, when given.
    pub port_count: Option<u16>,
    /// The transport protocol (`RTP/AVP`).
    pub protocol: String,
    /// The media formats as written; RTP payload type numbers for RTP protocols.
    pub formats: Vec<String>,
    /// A media-level `c=` address overriding the session's.
    pub connection: Option<IpAddr>,
    /// `a=rtpmap` attributes in the order they appeared.
    pub rtpmaps: Vec<RtpMap>,
    /// `a=fmtp` attributes in the order they appeared.
    pub fmtps: Vec<Fmtp>,
    /// `a=ptime` in milliseconds.
    pub ptime: Option<u32>,
    /// `a=maxptime` in milliseconds.
    pub maxptime: Option<u32>,
    /// A media-level direction attribute.
    pub direction: Option<Direction>,
    /// Other attributes, kept in order.
    pub attributes: Vec<Attribute>,
}

/// A whole session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// The `o=` line.
    pub origin: Origin,
    /// The `s=` line.
    pub session_name: String,
    /// The session-level `c=` address.
    pub connection: Option<IpAddr>,
    /// The first `t=` line (start and stop time; `0 0` for a permanent session).
    pub timing: (u64, u64),
    /// A session-level direction attribute.
    pub direction: Option<Direction>,
    /// Other session-level attributes, kept in order.
    pub attributes: Vec<Attribute>,
    /// The `m=` sections in order.
    pub media: Vec<MediaDescription>,
}

impl SessionDescription {
    /// Parses an SDP body given as bytes (a SIP message body).
    pub fn parse_bytes(body: &[u8]) -> Result<Self, SdpError> {
        let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
        Self::parse(text)
    }

    /// Parses an SDP body. Lines may end in CRLF or LF; unknown line types and
    /// attributes are skipped or kept, malformed known ones are errors.
    pub fn parse(text: &str) -> Result<Self, SdpError> {
        parse::parse_description(text)
    }

    /// The first `m=audio` section, if any.
    pub fn audio(&self) -> Option<&MediaDescription> {
        self.media.iter().find(|m| m.media == "audio")
    }

    /// The connection address that applies to a media section (its own, else the session's).
    pub fn connection_for(&self, media: &MediaDescription) -> Option<IpAddr> {
        media.connection.or(self.connection)
    }

    /// The direction that applies to a media section (its own, else the session's, else sendrecv).
    pub fn direction_for(&self, media: &MediaDescription) -> Direction {
        media
            .direction
            .or(self.direction)
            .unwrap_or(Direction::SendRecv)
    }

    /// Whether this description (an offer or re-offer) puts the audio stream on hold: the
    /// writer will not receive (`a=sendonly` or `a=inactive`) or gave the RFC 2543 style
    /// `c=0.0.0.0`.
    pub fn is_hold(&self) -> bool {
        let Some(audio) = self.audio() else {
            return false;
        };
        !self.direction_for(audio).receives()
            || self
                .connection_for(audio)
                .is_some_and(|addr| addr.is_unspecified())
    }

    /// Increments the origin's session version, as every changed re-offer or re-answer must.
    pub fn bump_version(&mut self) {
        self.origin.session_version = self.origin.session_version.wrapping_add(1);
    }

    /// A re-offer of this (local) description with another audio direction and the next
    /// session version: `SendOnly` (or `Inactive`) to hold, `SendRecv` to resume.
    pub fn reoffer(&self, direction: Direction) -> Self {
        let mut next = self.clone();
        next.bump_version();
        next.direction = None;
        for media in next.media.iter_mut().filter(|m| m.media == "audio") {
            media.direction = Some(direction);
        }
        next
    }
}

impl FromStr for SessionDescription {
    type Err = SdpError;

    fn from_str(text: &str) -> Result<Self, SdpError> {
        Self::parse(text)
    }
}

impl MediaDescription {
    /// The codecs of this section in format order: each payload type resolved through its
    /// `a=rtpmap` (and `a=fmtp`), or the RFC 3551 static table. Formats that are not payload
    /// types, and dynamic ones without an rtpmap, are skipped.
    pub fn codecs(&self) -> Vec<Codec> {
        let mut seen = Vec::new();
        let mut codecs = Vec::new();
        for pt in self.formats.iter().filter_map(|f| PayloadType::parse(f)) {
            if seen.contains(&pt) {
                continue;
            }
            seen.push(pt);
            let fmtp = self.fmtp(pt).map(str::to_owned);
            if let Some(map) = self.rtpmaps.iter().find(|m| m.payload_type == pt) {
                codecs.push(Codec {
                    payload_type: pt,
                    name: map.name.clone(),
                    clock_rate: map.clock_rate,
                    channels: map.channels,
                    fmtp,
                });
            } else if let Some(codec) = Codec::from_static(pt) {
                codecs.push(Codec { fmtp, ..codec });
            }
        }
        codecs
    }

    /// The `a=fmtp` parameters of a payload type.
    pub fn fmtp(&self, payload_type: PayloadType) -> Option<&str> {
        self.fmtps
            .iter()
            .find(|f| f.payload_type == payload_type)
            .map(|f| f.parameters.as_str())
    }

    /// Whether the protocol is plain RTP/AVP (the only profile dialcore speaks).
    pub fn is_rtp_avp(&self) -> bool {
        self.protocol.eq_ignore_ascii_case("RTP/AVP")
    }

    /// An audio section carrying the given codecs (rtpmap and fmtp for each).
    pub fn audio(port: u16, codecs: &[Codec]) -> Self {
        MediaDescription {
            media: "audio".to_owned(),
            port,
            port_count: None,
            protocol: "RTP/AVP".to_owned(),
            formats: codecs.iter().map(|c| c.payload_type.to_string()).collect(),
            connection: None,
            rtpmaps: codecs
                .iter()
                .map(|c| RtpMap {
                    payload_type: c.payload_type,
                    name: c.name.clone(),
                    clock_rate: c.clock_rate,
                    channels: c.channels,
                })
                .collect(),
            fmtps: codecs
                .iter()
                .filter_map(|c| {
                    c.fmtp.as_ref().map(|p| Fmtp {
                        payload_type: c.payload_type,
                        parameters: p.clone(),
                    })
                })
                .collect(),
            ptime: None,
            maxptime: None,
            direction: None,
            attributes: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINPHONE_STYLE: &str = "v=0\r\n\
        o=alice 2890844526 2890844527 IN IP4 host.example.com\r\n\
        s=Talk\r\n\
        c=IN IP4 192.0.2.10\r\n\
        b=AS:380\r\n\
        t=0 0\r\n\
        a=ice-lite\r\n\
        m=audio 49170 RTP/AVP 96 0 8 101\r\n\
        a=rtpmap:96 opus/48000/2\r\n\
        a=fmtp:96 useinbandfec=1; stereo=0\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-15\r\n\
        a=ptime:20\r\n\
        a=sendonly\r\n\
        a=rtcp:49171\r\n\
        m=video 0 RTP/AVP 31\r\n";

    #[test]
    fn parses_a_typical_offer() {
        let sdp = SessionDescription::parse(LINPHONE_STYLE).expect("valid SDP");
        assert_eq!(sdp.origin.username, "alice");
        assert_eq!(sdp.origin.session_version, 2_890_844_527);
        assert_eq!(sdp.origin.address, "host.example.com");
        assert_eq!(sdp.connection, Some("192.0.2.10".parse().expect("ip")));
        assert_eq!(sdp.attributes[0].name, "ice-lite");
        assert_eq!(sdp.media.len(), 2);
        let audio = sdp.audio().expect("audio");
        assert_eq!(audio.port, 49170);
        assert_eq!(audio.ptime, Some(20));
        assert_eq!(audio.direction, Some(Direction::SendOnly));
        let names: Vec<_> = audio.codecs().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["opus", "PCMU", "PCMA", "telephone-event"]);
        assert_eq!(
            audio.codecs()[0].fmtp.as_deref(),
            Some("useinbandfec=1; stereo=0")
        );
        assert_eq!(audio.attributes[0].value.as_deref(), Some("49171"));
        assert!(sdp.is_hold());
    }

    #[test]
    fn prints_crlf_and_reparses_equal() {
        let sdp = SessionDescription::parse(LINPHONE_STYLE).expect("valid SDP");
        let text = sdp.to_string();
        assert!(text.split("\r\n").all(|l| !l.contains('\n')));
        assert!(text.ends_with("\r\n"));
        assert_eq!(SessionDescription::parse(&text), Ok(sdp));
    }

    #[test]
    fn accepts_bare_lf_and_ipv6() {
        let text =
            "v=0\no=- 1 1 IN IP6 ::1\ns=-\nc=IN IP6 2001:db8::1\nt=0 0\nm=audio 4000 RTP/AVP 0\n";
        let sdp = SessionDescription::parse(text).expect("valid SDP");
        assert_eq!(sdp.connection, Some("2001:db8::1".parse().expect("ip")));
        assert!(sdp.origin.ipv6);
        assert_eq!(sdp.audio().expect("audio").codecs(), vec![Codec::pcmu()]);
    }

    #[test]
    fn rejects_garbage_with_typed_errors() {
        assert_eq!(SessionDescription::parse(""), Err(SdpError::MissingVersion));
        assert_eq!(
            SessionDescription::parse("hello"),
            Err(SdpError::MissingVersion)
        );
        assert_eq!(
            SessionDescription::parse("v=0\r\nwhat\r\n"),
            Err(SdpError::MalformedLine { line: 2 })
        );
        assert_eq!(
            SessionDescription::parse("v=0\r\ns=x\r\n"),
            Err(SdpError::MissingLine { kind: 'o' })
        );
        assert_eq!(
            SessionDescription::parse("v=0\r\no=- x 1 IN IP4 a\r\n"),
            Err(SdpError::InvalidValue { line: 2, kind: 'o' })
        );
        let base = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n";
        assert_eq!(
            SessionDescription::parse(&format!("{base}c=IN IP4 ::1\r\n")),
            Err(SdpError::InvalidValue { line: 4, kind: 'c' })
        );
        assert_eq!(
            SessionDescription::parse(&format!("{base}m=audio 70000 RTP/AVP 0\r\n")),
            Err(SdpError::InvalidValue { line: 4, kind: 'm' })
        );
        assert_eq!(
            SessionDescription::parse(&format!("{base}m=audio 7000 RTP/AVP 0 200\r\n")),
            Err(SdpError::InvalidValue { line: 4, kind: 'm' })
        );
        assert_eq!(
            SessionDescription::parse(&format!("{base}m=audio 7000 RTP/AVP 0\r\na=ptime:x\r\n")),
            Err(SdpError::InvalidAttribute {
                line: 5,
                name: "ptime".into()
            })
        );
        assert_eq!(
            SessionDescription::parse(&format!(
                "{base}m=audio 7000 RTP/AVP 96\r\na=rtpmap:96 opus\r\n"
            )),
            Err(SdpError::InvalidAttribute {
                line: 5,
                name: "rtpmap".into()
            })
        );
        assert_eq!(
            SessionDescription::parse_bytes(b"v=0\r\n\xff"),
            Err(SdpError::NotUtf8)
        );
    }

    #[test]
    fn direction_rules_of_rfc_3264() {
        use Direction::*;
        let us = SendRecv;
        assert_eq!(SendOnly.answer_with(us), RecvOnly);
        assert_eq!(RecvOnly.answer_with(us), SendOnly);
        assert_eq!(Inactive.answer_with(us), Inactive);
        assert_eq!(SendRecv.answer_with(us), SendRecv);
        assert_eq!(SendRecv.answer_with(RecvOnly), RecvOnly);
        assert_eq!(SendOnly.answer_with(SendOnly), Inactive);
        assert_eq!(SendOnly.reversed(), RecvOnly);
        assert_eq!(Inactive.reversed(), Inactive);
    }

    #[test]
    fn old_style_hold_and_reoffer_version() {
        let text = "v=0\r\no=- 5 9 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let sdp = SessionDescription::parse(text).expect("valid SDP");
        assert!(sdp.is_hold());
        let resumed = sdp.reoffer(Direction::SendRecv);
        assert_eq!(resumed.origin.session_version, 10);
        assert_eq!(
            resumed.audio().expect("audio").direction,
            Some(Direction::SendRecv)
        );
    }
}
