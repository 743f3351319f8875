//! The bot's side of SDP offer/answer and the media stream it implies.

use std::net::SocketAddr;

use media::codec::{CodecSpec, SampleRate};
use media::rtp_session::PayloadType as RtpPayloadType;
use media::stream::{IdleAudio, MediaConfig};
use sip_stack::sdp::{Codec, Negotiated, PayloadType};

use super::BotError;
use agent_bridge::agent::{CallMetadata, Direction as CallDirection};

/// The SDP session id of a run (from its seed).
pub(crate) fn session_id(seed: u64) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 1
}

/// What the bot accepts in an offer (the offerer's order wins).
pub(crate) fn supported_codecs() -> Vec<Codec> {
    let mut codecs = Codec::default_set();
    codecs.push(Codec::telephone_event_at(
        PayloadType::TELEPHONE_EVENT_DEFAULT,
        48_000,
    ));
    codecs
}

pub(crate) fn metadata(
    sip_call_id: &str,
    from_number: String,
    to_number: String,
    direction: CallDirection,
    negotiated: &Negotiated,
) -> Result<CallMetadata, BotError> {
    let rate = app_rate(negotiated)?;
    Ok(CallMetadata {
        call_id: sip_call_id.to_owned(),
        org_id: String::new(),
        agent_id: String::new(),
        direction,
        from_number,
        to_number,
        prompt: String::new(),
        greeting: None,
        variables: Default::default(),
        sip_call_id: Some(sip_call_id.to_owned()),
        sample_rate: rate.hz(),
    })
}

pub(crate) fn codec_spec(negotiated: &Negotiated) -> Result<CodecSpec, BotError> {
    let codec = &negotiated.codec;
    CodecSpec::for_calls(&codec.name, codec.clock_rate).ok_or_else(|| {
        BotError::Sdp(format!(
            "unsupported codec {}/{}",
            codec.name, codec.clock_rate
        ))
    })
}

pub(crate) fn app_rate(negotiated: &Negotiated) -> Result<SampleRate, BotError> {
    Ok(codec_spec(negotiated)?.sample_rate())
}

/// The bot's stream: the negotiated codec, talking to the relay's near side.
pub(crate) fn media_config(
    negotiated: &Negotiated,
    near_rtp: SocketAddr,
    near_rtcp: SocketAddr,
) -> Result<MediaConfig, BotError> {
    let spec = codec_spec(negotiated)?;
    let pt = |value: u8| {
        RtpPayloadType::new(value).ok_or_else(|| BotError::Sdp(format!("payload type {value}")))
    };
    let mut config = MediaConfig::new(spec, pt(negotiated.payload_type.get())?, near_rtp);
    config.remote_rtcp = Some(near_rtcp);
    config.telephone_event_pt = negotiated
        .telephone_event_pt
        .map(|p| pt(p.get()))
        .transpose()?;
    config.app_rate = app_rate(negotiated)?;
    config.remote_ptime_ms = negotiated.ptime.clamp(10, 120);
    config.idle = IdleAudio::Nothing;
    config.inactivity_timeout = None;
    config.cname = String::from("dialcore-test-bot");
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use sip_stack::sdp::{answer, build_offer, Direction};

    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn negotiate(theirs: &[Codec]) -> Negotiated {
        let offer = build_offer(LOCAL, 20_000, theirs, Direction::SendRecv, 1, 1);
        answer(
            &offer,
            LOCAL,
            30_000,
            &supported_codecs(),
            Direction::SendRecv,
            2,
            1,
        )
        .expect("a common codec")
        .negotiated
    }

    #[test]
    fn g711_runs_at_8_khz_and_opus_at_16_khz() {
        let pcma = negotiate(&[
            Codec::pcma(),
            Codec::telephone_event(PayloadType::TELEPHONE_EVENT_DEFAULT),
        ]);
        assert_eq!(app_rate(&pcma).expect("supported"), SampleRate::Hz8000);
        assert!(pcma.telephone_event_pt.is_some());
        let opus = negotiate(&Codec::default_set());
        assert_eq!(app_rate(&opus).expect("supported"), SampleRate::Hz16000);
    }

    #[test]
    fn the_stream_talks_to_the_relay_near_side() {
        let negotiated = negotiate(&[Codec::pcmu()]);
        let rtp = SocketAddr::new(LOCAL, 40_000);
        let rtcp = SocketAddr::new(LOCAL, 40_002);
        let config = media_config(&negotiated, rtp, rtcp).expect("supported");
        assert_eq!(config.codec, CodecSpec::Pcmu);
        assert_eq!(config.remote, rtp);
        assert_eq!(config.remote_rtcp, Some(rtcp));
        assert_eq!(config.telephone_event_pt, None);
        let metadata = metadata(
            "abc@host",
            "+1".into(),
            "+2".into(),
            CallDirection::Inbound,
            &negotiated,
        )
        .expect("supported");
        assert_eq!(metadata.sample_rate, 8000);
        assert_eq!(metadata.sip_call_id.as_deref(), Some("abc@host"));
    }
}
