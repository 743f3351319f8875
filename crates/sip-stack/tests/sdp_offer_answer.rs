//! Guards RFC 3264 offer/answer for one audio stream: codec choice in the offerer's order
//! with the offerer's payload types, telephone-event pairing, direction answers, refused
//! streams, 488-worthy errors, hold and resume re-offers, and the offerer reading the answer.

use std::net::{IpAddr, SocketAddr};

use sip_stack::sdp::{
    answer, build_offer, negotiated, Codec, Direction, PayloadType, SdpError, SessionDescription,
};

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn pt(value: u8) -> PayloadType {
    PayloadType::new(value).expect("test payload type")
}

fn offer_from_peer(direction: &str, connection: &str) -> SessionDescription {
    let text = format!(
        "v=0\r\n\
         o=carrier 1000 1 IN IP4 198.51.100.7\r\n\
         s=call\r\n\
         c=IN IP4 {connection}\r\n\
         t=0 0\r\n\
         m=audio 16000 RTP/AVP 8 0 96 97 98\r\n\
         a=rtpmap:96 opus/48000/2\r\n\
         a=rtpmap:97 telephone-event/48000\r\n\
         a=rtpmap:98 telephone-event/8000\r\n\
         a=fmtp:98 0-15\r\n\
         a=ptime:30\r\n\
         a={direction}\r\n"
    );
    SessionDescription::parse(&text).expect("valid offer")
}

#[test]
fn offer_lists_codecs_in_preference_order() {
    let offer = build_offer(
        ip("192.0.2.1"),
        20_000,
        &Codec::default_set(),
        Direction::SendRecv,
        42,
        1,
    );
    let text = offer.to_string();
    assert!(text.starts_with("v=0\r\no=- 42 1 IN IP4 192.0.2.1\r\n"));
    assert!(text.contains("c=IN IP4 192.0.2.1\r\n"));
    assert!(text.contains("m=audio 20000 RTP/AVP 111 0 8 101\r\n"));
    assert!(text.contains("a=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\n"));
    assert!(text.contains("a=rtpmap:0 PCMU/8000\r\n"));
    assert!(text.contains("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"));
    assert!(text.contains("a=ptime:20\r\na=sendrecv\r\n"));
    assert_eq!(SessionDescription::parse(&text), Ok(offer));
}

#[test]
fn answer_follows_offerer_order_and_payload_types() {
    let offer = offer_from_peer("sendrecv", "198.51.100.7");
    let ours = [
        Codec::opus(PayloadType::OPUS_DEFAULT),
        Codec::pcmu(),
        Codec::pcma(),
        Codec::telephone_event(PayloadType::TELEPHONE_EVENT_DEFAULT),
    ];
    let reply = answer(
        &offer,
        ip("192.0.2.2"),
        30_000,
        &ours,
        Direction::SendRecv,
        7,
        1,
    )
    .expect("acceptable offer");
    // The offerer listed PCMA first: it wins over our Opus preference.
    assert_eq!(reply.negotiated.codec.name, "PCMA");
    assert_eq!(reply.negotiated.payload_type, PayloadType::PCMA);
    // telephone-event at 8000 Hz (matching PCMA), on the offerer's number 98.
    assert_eq!(reply.negotiated.telephone_event_pt, Some(pt(98)));
    assert_eq!(
        reply.negotiated.remote,
        "198.51.100.7:16000".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(reply.negotiated.ptime, 30);
    assert_eq!(reply.negotiated.direction, Direction::SendRecv);
    assert!(!reply.hold);
    let audio = reply.sdp.audio().expect("audio");
    assert_eq!(audio.formats, ["8", "98"]);
    assert_eq!(audio.port, 30_000);
    assert_eq!(reply.sdp.connection, Some(ip("192.0.2.2")));

    // The offerer reads the answer back to the same stream.
    let media = negotiated(&offer, &reply.sdp).expect("answer matches offer");
    assert_eq!(media.codec.name, "PCMA");
    assert_eq!(media.telephone_event_pt, Some(pt(98)));
    assert_eq!(
        media.remote,
        "192.0.2.2:30000".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(media.ptime, 20);
}

#[test]
fn opus_keeps_offerer_payload_type_and_pairs_wideband_events() {
    let offer = offer_from_peer("sendrecv", "198.51.100.7");
    let ours = [
        Codec::opus_with_dtx(PayloadType::OPUS_DEFAULT),
        Codec::telephone_event(PayloadType::TELEPHONE_EVENT_DEFAULT),
        Codec::telephone_event_at(pt(100), 48_000),
    ];
    let reply = answer(
        &offer,
        ip("192.0.2.2"),
        30_000,
        &ours,
        Direction::SendRecv,
        7,
        1,
    )
    .expect("opus in common");
    assert_eq!(reply.negotiated.payload_type, pt(96));
    assert_eq!(
        reply.negotiated.codec.fmtp.as_deref(),
        Some("useinbandfec=1;usedtx=1")
    );
    assert_eq!(reply.negotiated.telephone_event_pt, Some(pt(97)));
    let text = reply.sdp.to_string();
    assert!(text.contains("m=audio 30000 RTP/AVP 96 97\r\n"));
    assert!(text.contains("a=rtpmap:97 telephone-event/48000\r\n"));
}

#[test]
fn no_telephone_event_unless_both_have_it() {
    let offer = offer_from_peer("sendrecv", "198.51.100.7");
    let reply = answer(
        &offer,
        ip("192.0.2.2"),
        30_000,
        &[Codec::pcmu()],
        Direction::SendRecv,
        7,
        1,
    )
    .expect("PCMU in common");
    assert_eq!(reply.negotiated.telephone_event_pt, None);
    assert_eq!(reply.sdp.audio().expect("audio").formats, ["0"]);
}

#[test]
fn directions_are_answered_per_rfc_3264() {
    let cases = [
        ("sendrecv", Direction::SendRecv, Direction::SendRecv),
        ("sendonly", Direction::SendRecv, Direction::RecvOnly),
        ("recvonly", Direction::SendRecv, Direction::SendOnly),
        ("inactive", Direction::SendRecv, Direction::Inactive),
        ("sendrecv", Direction::RecvOnly, Direction::RecvOnly),
        ("sendonly", Direction::SendOnly, Direction::Inactive),
    ];
    for (offered, ours, expected) in cases {
        let offer = offer_from_peer(offered, "198.51.100.7");
        let reply = answer(
            &offer,
            ip("192.0.2.2"),
            30_000,
            &[Codec::pcmu()],
            ours,
            7,
            1,
        )
        .expect("acceptable");
        assert_eq!(reply.negotiated.direction, expected, "offer {offered}");
        assert_eq!(reply.sdp.audio().expect("audio").direction, Some(expected));
        // The offerer sees the mirror image.
        let theirs = negotiated(&offer, &reply.sdp).expect("readable");
        assert_eq!(theirs.direction, expected.reversed());
    }
}

#[test]
fn hold_is_detected_both_ways() {
    let modern = offer_from_peer("sendonly", "198.51.100.7");
    let old_style = offer_from_peer("sendrecv", "0.0.0.0");
    for offer in [modern, old_style] {
        let reply = answer(
            &offer,
            ip("192.0.2.2"),
            30_000,
            &[Codec::pcmu()],
            Direction::SendRecv,
            7,
            2,
        )
        .expect("acceptable");
        assert!(reply.hold);
    }
    let resumed = offer_from_peer("sendrecv", "198.51.100.7");
    let reply = answer(
        &resumed,
        ip("192.0.2.2"),
        30_000,
        &[Codec::pcmu()],
        Direction::SendRecv,
        7,
        3,
    )
    .expect("acceptable");
    assert!(!reply.hold);
}

#[test]
fn hold_and_resume_reoffers_bump_the_version() {
    let offer = build_offer(
        ip("192.0.2.1"),
        20_000,
        &Codec::default_set(),
        Direction::SendRecv,
        42,
        1,
    );
    let hold = offer.reoffer(Direction::SendOnly);
    assert_eq!(hold.origin.session_version, 2);
    assert_eq!(hold.origin.session_id, 42);
    assert!(hold.is_hold());
    let resume = hold.reoffer(Direction::SendRecv);
    assert_eq!(resume.origin.session_version, 3);
    assert!(!resume.is_hold());

    // The peer answers the hold with recvonly: we may send (music on hold) but not receive.
    let reply = answer(
        &hold,
        ip("192.0.2.2"),
        30_000,
        &Codec::default_set(),
        Direction::SendRecv,
        9,
        1,
    )
    .expect("acceptable");
    assert_eq!(reply.negotiated.direction, Direction::RecvOnly);
    let ours = negotiated(&hold, &reply.sdp).expect("readable");
    assert_eq!(ours.direction, Direction::SendOnly);
    assert_eq!(ours.codec.name, "opus");
    assert_eq!(
        ours.telephone_event_pt,
        Some(PayloadType::TELEPHONE_EVENT_DEFAULT)
    );
}

#[test]
fn no_common_codec_is_an_error_for_488() {
    let offer = offer_from_peer("sendrecv", "198.51.100.7");
    let g729 = Codec::from_static(pt(18)).expect("static");
    assert_eq!(
        answer(
            &offer,
            ip("192.0.2.2"),
            30_000,
            &[g729],
            Direction::SendRecv,
            7,
            1
        ),
        Err(SdpError::NoCommonCodec)
    );
    // telephone-event alone is not an audio codec.
    assert_eq!(
        answer(
            &offer,
            ip("192.0.2.2"),
            30_000,
            &[Codec::telephone_event(pt(101))],
            Direction::SendRecv,
            7,
            1
        ),
        Err(SdpError::NoCommonCodec)
    );
}

#[test]
fn other_streams_are_refused_with_port_zero() {
    let text = "v=0\r\n\
        o=- 1 1 IN IP4 198.51.100.7\r\n\
        s=-\r\n\
        t=0 0\r\n\
        m=video 5000 RTP/AVP 96\r\n\
        c=IN IP4 198.51.100.7\r\n\
        a=rtpmap:96 H264/90000\r\n\
        m=audio 5002 RTP/SAVP 0\r\n\
        c=IN IP4 198.51.100.7\r\n\
        m=audio 5004 RTP/AVP 0\r\n\
        c=IN IP4 198.51.100.8\r\n";
    let offer = SessionDescription::parse(text).expect("valid");
    let reply = answer(
        &offer,
        ip("192.0.2.2"),
        30_000,
        &[Codec::pcmu()],
        Direction::SendRecv,
        7,
        1,
    )
    .expect("third stream acceptable");
    let ports: Vec<u16> = reply.sdp.media.iter().map(|m| m.port).collect();
    assert_eq!(ports, [0, 0, 30_000]);
    assert_eq!(reply.sdp.media[0].formats, ["96"]);
    assert_eq!(reply.sdp.media[1].protocol, "RTP/SAVP");
    assert_eq!(
        reply.negotiated.remote,
        "198.51.100.8:5004".parse::<SocketAddr>().expect("addr")
    );
    let ours = negotiated(&offer, &reply.sdp);
    // `negotiated` reads the first audio stream with a port, which the answer refused.
    assert_eq!(ours, Err(SdpError::AudioRejected));
}

#[test]
fn offers_without_usable_audio() {
    let text = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
        m=audio 0 RTP/AVP 0\r\nm=image 6000 udptl t38\r\n";
    let offer = SessionDescription::parse(text).expect("valid");
    assert_eq!(
        answer(
            &offer,
            ip("192.0.2.2"),
            30_000,
            &[Codec::pcmu()],
            Direction::SendRecv,
            7,
            1
        ),
        Err(SdpError::NoAudioStream)
    );
    let no_address =
        "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let offer = SessionDescription::parse(no_address).expect("valid");
    assert_eq!(
        answer(
            &offer,
            ip("192.0.2.2"),
            30_000,
            &[Codec::pcmu()],
            Direction::SendRecv,
            7,
            1
        ),
        Err(SdpError::NoConnectionAddress)
    );
}

#[test]
fn offerer_rejects_answers_it_cannot_use() {
    let offer = build_offer(
        ip("192.0.2.1"),
        20_000,
        &[Codec::pcmu()],
        Direction::SendRecv,
        1,
        1,
    );
    let refused = "v=0\r\no=- 2 1 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n";
    assert_eq!(
        negotiated(&offer, &SessionDescription::parse(refused).expect("valid")),
        Err(SdpError::AudioRejected)
    );
    let foreign = "v=0\r\no=- 2 1 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8\r\n";
    assert_eq!(
        negotiated(&offer, &SessionDescription::parse(foreign).expect("valid")),
        Err(SdpError::NoCommonCodec)
    );
    let media_level = "v=0\r\no=- 2 1 IN IP4 192.0.2.2\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP6 2001:db8::2\r\na=inactive\r\n";
    let ours = negotiated(
        &offer,
        &SessionDescription::parse(media_level).expect("valid"),
    )
    .expect("readable");
    assert_eq!(
        ours.remote,
        "[2001:db8::2]:4000".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(ours.direction, Direction::Inactive);
}
