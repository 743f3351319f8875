//! From SDP to media streams: the codecs we offer and the stream settings of a
//! negotiated codec.
//!
//! An outbound offer needs an RTP port before the answer says which codec
//! the stream will use. So an outbound call opens a provisional stream
//! ([`provisional_config`]: PCMU, sending nothing) whose port goes in the
//! offer; the answer's codec then replaces it in place
//! ([`StreamHandle::reconfigure`](media::stream::StreamHandle::reconfigure)),
//! on the same port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use media::codec::CodecSpec;
use media::rtp_session::{IpNet, PayloadType as RtpPayloadType};
use media::stream::{IdleAudio, MediaConfig};
use sip_stack::sdp::{Codec, Negotiated};

use super::EngineError;

/// Where a provisional stream "sends" before the answer: the discard port
/// on loopback (it sends no audio; only an early RTCP report may go there).
const NOWHERE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9);

/// What we offer, in preference order: Opus, PCMU, PCMA, telephone-event.
pub fn offered_codecs() -> Vec<Codec> {
    Codec::default_set()
}

/// What we accept in an incoming offer (the offerer's order wins).
pub fn supported_codecs() -> Vec<Codec> {
    let mut codecs = Codec::default_set();
    // telephone-event at Opus's clock rate too, for Opus offers that pair them.
    codecs.push(Codec::telephone_event_at(
        sip_stack::sdp::PayloadType::TELEPHONE_EVENT_DEFAULT,
        48_000,
    ));
    codecs
}

/// The stream settings of a negotiated audio stream: 16 kHz application
/// audio for Opus, 8 kHz for G.711, the codec at the same rate
/// ([`CodecSpec::for_calls`]: nothing to resample); no idle audio (the bridge sends a frame
/// every tick), no inactivity event (the lifecycle watches activity).
///
/// Media is taken only from the SDP's address and `allowed` (see [`media_networks`]).
pub fn media_config(
    negotiated: &Negotiated,
    allowed: &[IpNet],
) -> Result<MediaConfig, EngineError> {
    let codec = &negotiated.codec;
    let spec = CodecSpec::for_calls(&codec.name, codec.clock_rate).ok_or_else(|| {
        EngineError::UnsupportedCodec(format!("{}/{}", codec.name, codec.clock_rate))
    })?;
    let payload_type = rtp_payload_type(negotiated.payload_type.get())?;
    let mut config = MediaConfig::new(spec, payload_type, negotiated.remote);
    config.telephone_event_pt = negotiated
        .telephone_event_pt
        .map(|pt| rtp_payload_type(pt.get()))
        .transpose()?;
    config.app_rate = spec.sample_rate();
    config.remote_ptime_ms = negotiated.ptime.clamp(10, 120);
    config.idle = IdleAudio::Nothing;
    config.inactivity_timeout = None;
    config.allowed_networks = allowed.to_vec();
    Ok(config)
}

/// The networks, besides the address in the peer's SDP, that a call's RTP may come from:
/// the trunk's allowed networks and the address its signalling comes from (a carrier
/// behind NAT advertises a private address but sends from these). Entries that do not
/// parse (validated when the trunk was written) are skipped.
pub fn media_networks(trunk_networks: &[String], signalling: Option<IpAddr>) -> Vec<IpNet> {
    let mut networks = super::inbound::parse_networks(trunk_networks);
    networks.extend(signalling.map(|ip| IpNet::from(ip.to_canonical())));
    networks
}

/// The provisional stream of an outbound call before its answer, taking media (early
/// media, then the answer's) only from the answer's SDP address and `allowed`.
pub fn provisional_config(allowed: &[IpNet]) -> MediaConfig {
    let mut config = MediaConfig::new(CodecSpec::Pcmu, RtpPayloadType::PCMU, NOWHERE);
    config.allowed_networks = allowed.to_vec();
    config.telephone_event_pt = RtpPayloadType::new(101);
    config.idle = IdleAudio::Nothing;
    config.inactivity_timeout = None;
    config
}

/// Frames of pause the bridge leaves for each DTMF digit (100 ms tone and
/// 100 ms gap, the media engine's defaults).
pub fn frames_per_digit() -> u32 {
    let per_digit = Duration::from_millis(200);
    (per_digit.as_millis() / 20) as u32
}

fn rtp_payload_type(value: u8) -> Result<RtpPayloadType, EngineError> {
    RtpPayloadType::new(value).ok_or(EngineError::InvalidPayloadType(value))
}

#[cfg(test)]
mod tests {
    use sip_stack::sdp::{answer, build_offer, negotiated, Direction, SessionDescription};

    use super::*;
    use media::codec::SampleRate;

    fn local() -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }

    #[test]
    fn media_comes_from_the_trunks_networks_and_its_signalling_address() {
        let trunk = [
            "203.0.113.0/24".to_owned(),
            " 198.51.100.7 ".to_owned(),
            "2001:db8::/32".to_owned(),
            "not a network".to_owned(),
        ];
        let signalling: IpAddr = "::ffff:192.0.2.9".parse().expect("mapped v4");
        let networks = media_networks(&trunk, Some(signalling));
        let shown: Vec<String> = networks.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "203.0.113.0/24",
                "198.51.100.7/32",
                "2001:db8::/32",
                "192.0.2.9/32"
            ]
        );
        assert!(media_networks(&[], None).is_empty());
        let offer = build_offer(local(), 4000, &offered_codecs(), Direction::SendRecv, 1, 1);
        let reply = answer(
            &offer,
            local(),
            5000,
            &supported_codecs(),
            Direction::SendRecv,
            2,
            1,
        )
        .expect("answer");
        let config = media_config(&reply.negotiated, &networks).expect("supported");
        assert_eq!(config.allowed_networks, networks);
        assert_eq!(provisional_config(&networks).allowed_networks, networks);
    }

    #[test]
    fn pcma_answer_to_our_offer_gives_an_8_khz_pcma_stream() {
        let offer = build_offer(
            local(),
            20_000,
            &offered_codecs(),
            Direction::SendRecv,
            1,
            1,
        );
        let reply = answer(
            &offer,
            local(),
            40_000,
            &[Codec::pcma()],
            Direction::SendRecv,
            2,
            1,
        )
        .expect("PCMA is offered");
        let answer_sdp = SessionDescription::parse(&reply.sdp.to_string()).expect("parses");
        let negotiated = negotiated(&offer, &answer_sdp).expect("negotiated");
        let config = media_config(&negotiated, &[]).expect("supported");
        assert_eq!(config.codec, CodecSpec::Pcma);
        assert_eq!(config.payload_type, RtpPayloadType::PCMA);
        assert_eq!(config.app_rate, SampleRate::Hz8000);
        assert_eq!(config.remote, SocketAddr::new(local(), 40_000));
    }

    #[test]
    fn pcmu_with_events_is_the_provisional_codec() {
        let offer = build_offer(
            local(),
            20_000,
            &offered_codecs(),
            Direction::SendRecv,
            1,
            1,
        );
        let theirs = [
            Codec::pcmu(),
            Codec::telephone_event(sip_stack::sdp::PayloadType::TELEPHONE_EVENT_DEFAULT),
        ];
        let reply = answer(&offer, local(), 40_000, &theirs, Direction::SendRecv, 2, 1)
            .expect("PCMU is offered");
        let negotiated = negotiated(&offer, &reply.sdp).expect("negotiated");
        let config = media_config(&negotiated, &[]).expect("supported");
        let provisional = provisional_config(&[]);
        assert_eq!(config.codec, provisional.codec);
        assert_eq!(config.payload_type, provisional.payload_type);
        assert_eq!(config.telephone_event_pt, provisional.telephone_event_pt);
    }

    #[test]
    fn opus_runs_at_16_khz() {
        let offer = build_offer(
            local(),
            20_000,
            &offered_codecs(),
            Direction::SendRecv,
            1,
            1,
        );
        let reply = answer(
            &offer,
            local(),
            40_000,
            &supported_codecs(),
            Direction::SendRecv,
            2,
            1,
        )
        .expect("answer");
        let config = media_config(&reply.negotiated, &[]).expect("supported");
        assert!(
            matches!(config.codec, CodecSpec::Opus(opus) if opus.sample_rate == SampleRate::Hz16000),
            "Opus runs at the application's rate: nothing to resample"
        );
        assert_eq!(config.app_rate, SampleRate::Hz16000);
    }
}
