//! Audio codec descriptions and RTP payload type numbers.

use std::fmt;

use super::SdpError;

/// An RTP payload type number (RFC 3551): 0..=127.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PayloadType(u8);

impl PayloadType {
    /// PCMU (G.711 mu-law), static payload type 0.
    pub const PCMU: PayloadType = PayloadType(0);
    /// PCMA (G.711 A-law), static payload type 8.
    pub const PCMA: PayloadType = PayloadType(8);
    /// The dynamic payload type dialcore offers Opus on.
    pub const OPUS_DEFAULT: PayloadType = PayloadType(111);
    /// The dynamic payload type dialcore offers telephone-event on.
    pub const TELEPHONE_EVENT_DEFAULT: PayloadType = PayloadType(101);

    /// A payload type, or [`SdpError::InvalidPayloadType`] above 127.
    pub fn new(value: u8) -> Result<Self, SdpError> {
        if value <= 127 {
            Ok(PayloadType(value))
        } else {
            Err(SdpError::InvalidPayloadType(value))
        }
    }

    /// The number on the wire.
    pub fn get(self) -> u8 {
        self.0
    }

    /// Whether the number is in the dynamic range 96..=127.
    pub fn is_dynamic(self) -> bool {
        self.0 >= 96
    }

    /// Parses a decimal payload type as written in `m=`, `a=rtpmap` or `a=fmtp`.
    pub(crate) fn parse(token: &str) -> Option<Self> {
        if token.is_empty() || token.len() > 3 || !token.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        token.parse::<u8>().ok().and_then(|v| Self::new(v).ok())
    }
}

impl fmt::Display for PayloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One codec as SDP describes it: payload type, `a=rtpmap` encoding and `a=fmtp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    /// The payload type the codec travels on.
    pub payload_type: PayloadType,
    /// The encoding name (`opus`, `PCMU`, `telephone-event`, ...), compared case-insensitively.
    pub name: String,
    /// The RTP clock rate in Hz.
    pub clock_rate: u32,
    /// The number of audio channels (1 when the rtpmap leaves it out).
    pub channels: u16,
    /// The format parameters (`a=fmtp` value after the payload type), if any.
    pub fmtp: Option<String>,
}

impl Codec {
    /// Opus (RFC 7587) on a dynamic payload type: 48000/2 with in-band FEC.
    pub fn opus(payload_type: PayloadType) -> Self {
        Codec {
            payload_type,
            name: "opus".to_owned(),
            clock_rate: 48_000,
            channels: 2,
            fmtp: Some("useinbandfec=1".to_owned()),
        }
    }

    /// Opus with in-band FEC and discontinuous transmission (`usedtx=1`).
    pub fn opus_with_dtx(payload_type: PayloadType) -> Self {
        Codec {
            fmtp: Some("useinbandfec=1;usedtx=1".to_owned()),
            ..Self::opus(payload_type)
        }
    }

    /// G.711 mu-law on static payload type 0.
    pub fn pcmu() -> Self {
        Self::plain(PayloadType::PCMU, "PCMU", 8000)
    }

    /// G.711 A-law on static payload type 8.
    pub fn pcma() -> Self {
        Self::plain(PayloadType::PCMA, "PCMA", 8000)
    }

    /// RFC 4733 telephone-event at 8000 Hz carrying DTMF events 0-16.
    pub fn telephone_event(payload_type: PayloadType) -> Self {
        Self::telephone_event_at(payload_type, 8000)
    }

    /// RFC 4733 telephone-event at a given clock rate (it should match the audio codec's).
    pub fn telephone_event_at(payload_type: PayloadType, clock_rate: u32) -> Self {
        Codec {
            payload_type,
            name: "telephone-event".to_owned(),
            clock_rate,
            channels: 1,
            fmtp: Some("0-16".to_owned()),
        }
    }

    /// What dialcore offers by default, in preference order: Opus, PCMU, PCMA, telephone-event.
    pub fn default_set() -> Vec<Codec> {
        vec![
            Self::opus(PayloadType::OPUS_DEFAULT),
            Self::pcmu(),
            Self::pcma(),
            Self::telephone_event(PayloadType::TELEPHONE_EVENT_DEFAULT),
        ]
    }

    /// The codec a static payload type stands for when no `a=rtpmap` names it (RFC 3551).
    pub fn from_static(payload_type: PayloadType) -> Option<Self> {
        let name = match payload_type.get() {
            0 => "PCMU",
            3 => "GSM",
            4 => "G723",
            8 => "PCMA",
            9 => "G722",
            18 => "G729",
            _ => return None,
        };
        Some(Self::plain(payload_type, name, 8000))
    }

    /// Whether this is RFC 4733 telephone-event rather than an audio codec.
    pub fn is_telephone_event(&self) -> bool {
        self.name.eq_ignore_ascii_case("telephone-event")
    }

    /// Whether both describe the same encoding (name, clock rate, channels), whatever their payload types.
    pub fn same_encoding(&self, other: &Codec) -> bool {
        self.name.eq_ignore_ascii_case(&other.name)
            && self.clock_rate == other.clock_rate
            && self.channels == other.channels
    }

    /// This codec moved to another payload type (the offerer's number in an answer).
    pub fn with_payload_type(&self, payload_type: PayloadType) -> Self {
        Codec {
            payload_type,
            ..self.clone()
        }
    }

    fn plain(payload_type: PayloadType, name: &str, clock_rate: u32) -> Self {
        Codec {
            payload_type,
            name: name.to_owned(),
            clock_rate,
            channels: 1,
            fmtp: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_type_range() {
        assert!(PayloadType::new(127).is_ok());
        assert_eq!(
            PayloadType::new(128),
            Err(SdpError::InvalidPayloadType(128))
        );
        assert!(PayloadType::new(96).expect("in range").is_dynamic());
        assert!(!PayloadType::PCMA.is_dynamic());
        assert_eq!(PayloadType::parse("0101"), None);
        assert_eq!(PayloadType::parse("101"), PayloadType::new(101).ok());
        assert_eq!(PayloadType::parse("200"), None);
        assert_eq!(PayloadType::parse("+1"), None);
    }

    #[test]
    fn known_codecs() {
        let opus = Codec::opus(PayloadType::OPUS_DEFAULT);
        assert_eq!((opus.clock_rate, opus.channels), (48_000, 2));
        assert_eq!(opus.fmtp.as_deref(), Some("useinbandfec=1"));
        assert_eq!(
            Codec::opus_with_dtx(PayloadType::OPUS_DEFAULT)
                .fmtp
                .as_deref(),
            Some("useinbandfec=1;usedtx=1")
        );
        assert_eq!(Codec::pcmu().payload_type.get(), 0);
        assert_eq!(Codec::pcma().payload_type.get(), 8);
        let te = Codec::telephone_event(PayloadType::TELEPHONE_EVENT_DEFAULT);
        assert!(te.is_telephone_event());
        assert_eq!(te.fmtp.as_deref(), Some("0-16"));
        assert_eq!(Codec::from_static(PayloadType::PCMU), Some(Codec::pcmu()));
        assert!(Codec::from_static(PayloadType::OPUS_DEFAULT).is_none());
    }

    #[test]
    fn same_encoding_ignores_case_and_payload_type() {
        let mut a = Codec::opus(PayloadType::new(96).expect("in range"));
        a.name = "OPUS".to_owned();
        assert!(a.same_encoding(&Codec::opus(PayloadType::OPUS_DEFAULT)));
        assert!(!Codec::pcmu().same_encoding(&Codec::pcma()));
    }
}
