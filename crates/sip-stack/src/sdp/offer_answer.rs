//! RFC 3264 offer/answer for one audio stream.

use std::net::{IpAddr, SocketAddr};

use super::{
    Codec, Direction, MediaDescription, Origin, PayloadType, SdpError, SessionDescription,
};

/// The packetization time dialcore sends and asks for (20 ms frames), and the one assumed
/// when the peer gives no `a=ptime`.
pub const DEFAULT_PTIME_MS: u32 = 20;

/// The audio stream both sides agreed on, seen from the local side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Where to send RTP (the peer's connection address and port). An unspecified address
    /// (`0.0.0.0`) means the peer wants nothing sent (RFC 2543 hold).
    pub remote: SocketAddr,
    /// The audio codec, carrying the payload type used on the wire.
    pub codec: Codec,
    /// The payload type of `codec`, for convenience.
    pub payload_type: PayloadType,
    /// The telephone-event payload type, when both sides have it.
    pub telephone_event_pt: Option<PayloadType>,
    /// The packetization time the peer asked to receive, in milliseconds.
    pub ptime: u32,
    /// What the local side may do: send, receive, both or neither.
    pub direction: Direction,
}

/// The answerer's result: the SDP to send back and the stream it agrees to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The answer SDP (one `m=` line per offered one; refused ones with port 0).
    pub sdp: SessionDescription,
    /// The audio stream, from the answerer's point of view.
    pub negotiated: Negotiated,
    /// Whether the offer puts the answerer on hold (`a=sendonly`, `a=inactive` or `c=0.0.0.0`).
    pub hold: bool,
}

/// Builds an offer for one audio stream with the codecs in preference order (telephone-event
/// included as a codec if wanted), the given direction and the origin's session id and
/// version (increment the version for each re-offer, see [`SessionDescription::reoffer`]).
pub fn build_offer(
    local: IpAddr,
    port: u16,
    codecs: &[Codec],
    direction: Direction,
    session_id: u64,
    session_version: u64,
) -> SessionDescription {
    let mut media = MediaDescription::audio(port, codecs);
    media.ptime = Some(DEFAULT_PTIME_MS);
    media.direction = Some(direction);
    local_description(local, session_id, session_version, vec![media])
}

/// Answers an offer (RFC 3264 section 6): picks the first audio codec of the OFFERER's list
/// that we support (keeping the offerer's payload type), adds telephone-event when both have
/// it, and answers the direction per section 6.1. Streams we do not take get port 0.
///
/// Errors: [`SdpError::NoAudioStream`] when the offer has no RTP/AVP audio stream with a
/// port, [`SdpError::NoCommonCodec`] when no codec matches; both call for a 488 response.
pub fn answer(
    offer: &SessionDescription,
    local: IpAddr,
    port: u16,
    supported: &[Codec],
    direction: Direction,
    session_id: u64,
    session_version: u64,
) -> Result<Answer, SdpError> {
    let mut saw_audio = false;
    for (index, media) in offer.media.iter().enumerate() {
        if media.media != "audio" || media.port == 0 || !media.is_rtp_avp() {
            continue;
        }
        saw_audio = true;
        let Some((codec, telephone_event)) = select(&media.codecs(), supported) else {
            continue;
        };
        let address = offer
            .connection_for(media)
            .ok_or(SdpError::NoConnectionAddress)?;
        let negotiated = Negotiated {
            remote: SocketAddr::new(address, media.port),
            payload_type: codec.payload_type,
            codec,
            telephone_event_pt: telephone_event.as_ref().map(|te| te.payload_type),
            ptime: media.ptime.unwrap_or(DEFAULT_PTIME_MS),
            direction: offer.direction_for(media).answer_with(direction),
        };
        let mut codecs = vec![negotiated.codec.clone()];
        codecs.extend(telephone_event);
        let mut accepted = MediaDescription::audio(port, &codecs);
        accepted.ptime = Some(DEFAULT_PTIME_MS);
        accepted.direction = Some(negotiated.direction);
        let answered = offer
            .media
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if i == index {
                    accepted.clone()
                } else {
                    rejected(m)
                }
            })
            .collect();
        return Ok(Answer {
            sdp: local_description(local, session_id, session_version, answered),
            hold: offer.is_hold(),
            negotiated,
        });
    }
    Err(if saw_audio {
        SdpError::NoCommonCodec
    } else {
        SdpError::NoAudioStream
    })
}

/// The offerer's reading of an answer to its offer (`local_offer`): where to send, with which
/// payload types, and in which direction. Errors when the answer refused the audio stream or
/// names no payload type we offered.
pub fn negotiated(
    local_offer: &SessionDescription,
    answer: &SessionDescription,
) -> Result<Negotiated, SdpError> {
    let (index, ours) = local_offer
        .media
        .iter()
        .enumerate()
        .find(|(_, m)| m.media == "audio" && m.port != 0)
        .ok_or(SdpError::NoAudioStream)?;
    let theirs = answer
        .media
        .get(index)
        .filter(|m| m.media == "audio" && m.port != 0)
        .ok_or(SdpError::AudioRejected)?;
    let offered = ours.codecs();
    let find = |pt: PayloadType| offered.iter().find(|c| c.payload_type == pt);
    let answered: Vec<&Codec> = theirs
        .formats
        .iter()
        .filter_map(|f| PayloadType::parse(f))
        .filter_map(find)
        .collect();
    let codec = answered
        .iter()
        .find(|c| !c.is_telephone_event())
        .ok_or(SdpError::NoCommonCodec)?;
    let telephone_event_pt = answered
        .iter()
        .find(|c| c.is_telephone_event())
        .map(|c| c.payload_type);
    let address = answer
        .connection_for(theirs)
        .ok_or(SdpError::NoConnectionAddress)?;
    Ok(Negotiated {
        remote: SocketAddr::new(address, theirs.port),
        codec: (*codec).clone(),
        payload_type: codec.payload_type,
        telephone_event_pt,
        ptime: theirs.ptime.unwrap_or(DEFAULT_PTIME_MS),
        direction: answer.direction_for(theirs).reversed(),
    })
}

/// The first offered audio codec we support, in the offerer's order, moved to the offerer's
/// payload type; and the telephone-event to pair with it.
fn select(offered: &[Codec], supported: &[Codec]) -> Option<(Codec, Option<Codec>)> {
    let codec = offered
        .iter()
        .filter(|c| !c.is_telephone_event())
        .find_map(|o| {
            supported
                .iter()
                .find(|s| !s.is_telephone_event() && s.same_encoding(o))
                .map(|s| s.with_payload_type(o.payload_type))
        })?;
    // Prefer telephone-event at the audio codec's clock rate (RFC 4733 section 2.1), else any
    // rate both sides have.
    let events = |o: &&Codec| o.is_telephone_event();
    let mutual = |o: &Codec| {
        supported
            .iter()
            .find(|s| s.is_telephone_event() && s.clock_rate == o.clock_rate)
            .map(|s| s.with_payload_type(o.payload_type))
    };
    let telephone_event = offered
        .iter()
        .filter(events)
        .filter(|o| o.clock_rate == codec.clock_rate)
        .find_map(mutual)
        .or_else(|| offered.iter().filter(events).find_map(mutual));
    Some((codec, telephone_event))
}

/// A refusal of an offered stream: same media, protocol and formats, port 0 (section 6).
fn rejected(offered: &MediaDescription) -> MediaDescription {
    MediaDescription {
        media: offered.media.clone(),
        port: 0,
        port_count: None,
        protocol: offered.protocol.clone(),
        formats: offered.formats.clone(),
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        ptime: None,
        maxptime: None,
        direction: None,
        attributes: Vec::new(),
    }
}

fn local_description(
    local: IpAddr,
    session_id: u64,
    session_version: u64,
    media: Vec<MediaDescription>,
) -> SessionDescription {
    SessionDescription {
        origin: Origin {
            username: "-".to_owned(),
            session_id,
            session_version,
            address: local.to_string(),
            ipv6: local.is_ipv6(),
        },
        session_name: "dialcore".to_owned(),
        connection: Some(local),
        timing: (0, 0),
        direction: None,
        attributes: Vec::new(),
        media,
    }
}
