//! Guards the SDP parser and printer: generated descriptions survive print -> parse
//! unchanged, printing is canonical after one parse, and arbitrary input never panics.

use std::net::IpAddr;

use proptest::prelude::*;
use sip_stack::sdp::{
    Attribute, Direction, Fmtp, MediaDescription, Origin, PayloadType, RtpMap, SessionDescription,
};

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.-]{1,12}"
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u16; 8]>().prop_map(IpAddr::from),
    ]
}

fn direction() -> impl Strategy<Value = Option<Direction>> {
    proptest::option::of(prop_oneof![
        Just(Direction::SendRecv),
        Just(Direction::SendOnly),
        Just(Direction::RecvOnly),
        Just(Direction::Inactive),
    ])
}

fn attribute() -> impl Strategy<Value = Attribute> {
    (token(), proptest::option::of("[ -~]{0,20}")).prop_map(|(name, value)| Attribute {
        name: format!("x-{name}"),
        value,
    })
}

/// One RTP payload: its number, an optional rtpmap and an optional fmtp.
fn payload() -> impl Strategy<Value = (u8, Option<(String, u32, u16)>, Option<String>)> {
    (
        0u8..=127,
        proptest::option::of((token(), 1u32..200_000, 1u16..8)),
        proptest::option::of("[!-~][ -~]{0,18}[!-~]"),
    )
}

fn media() -> impl Strategy<Value = MediaDescription> {
    (
        (token(), any::<u16>(), proptest::option::of(1u16..10)),
        proptest::collection::vec(payload(), 1..6),
        proptest::option::of(ip()),
        (
            proptest::option::of(1u32..200),
            proptest::option::of(1u32..200),
        ),
        direction(),
        proptest::collection::vec(attribute(), 0..3),
    )
        .prop_map(
            |(
                (kind, port, port_count),
                payloads,
                connection,
                (ptime, maxptime),
                direction,
                attributes,
            )| {
                let mut seen = Vec::new();
                let payloads: Vec<_> = payloads
                    .into_iter()
                    .filter(|(pt, _, _)| {
                        let fresh = !seen.contains(pt);
                        seen.push(*pt);
                        fresh
                    })
                    .collect();
                let pt = |v: u8| PayloadType::new(v).expect("generated in range");
                MediaDescription {
                    media: kind,
                    port,
                    port_count,
                    protocol: "RTP/AVP".to_owned(),
                    formats: payloads.iter().map(|(v, _, _)| v.to_string()).collect(),
                    connection,
                    rtpmaps: payloads
                        .iter()
                        .filter_map(|(v, map, _)| {
                            map.as_ref().map(|(name, clock_rate, channels)| RtpMap {
                                payload_type: pt(*v),
                                name: name.clone(),
                                clock_rate: *clock_rate,
                                channels: *channels,
                            })
                        })
                        .collect(),
                    fmtps: payloads
                        .iter()
                        .filter_map(|(v, _, fmtp)| {
                            fmtp.as_ref().map(|parameters| Fmtp {
                                payload_type: pt(*v),
                                parameters: parameters.clone(),
                            })
                        })
                        .collect(),
                    ptime,
                    maxptime,
                    direction,
                    attributes,
                }
            },
        )
}

fn description() -> impl Strategy<Value = SessionDescription> {
    (
        (token(), any::<u64>(), any::<u64>(), ip()),
        "[!-~][ -~]{0,20}",
        proptest::option::of(ip()),
        (any::<u64>(), any::<u64>()),
        direction(),
        proptest::collection::vec(attribute(), 0..3),
        proptest::collection::vec(media(), 0..3),
    )
        .prop_map(
            |(
                (username, session_id, session_version, address),
                session_name,
                connection,
                timing,
                direction,
                attributes,
                media,
            )| {
                SessionDescription {
                    origin: Origin {
                        username,
                        session_id,
                        session_version,
                        address: address.to_string(),
                        ipv6: address.is_ipv6(),
                    },
                    session_name,
                    connection,
                    timing,
                    direction,
                    attributes,
                    media,
                }
            },
        )
}

proptest! {
    #[test]
    fn print_then_parse_is_identity(sdp in description()) {
        let text = sdp.to_string();
        prop_assert!(text.ends_with("\r\n"));
        prop_assert_eq!(SessionDescription::parse(&text), Ok(sdp));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = SessionDescription::parse_bytes(&bytes);
    }

    #[test]
    fn sdp_shaped_noise_prints_canonically(
        lines in proptest::collection::vec(
            ("[a-z=]", "=", "[ -~]{0,30}").prop_map(|(k, e, v)| format!("{k}{e}{v}")),
            0..12,
        ),
        origin in proptest::option::of(Just("o=- 1 2 IN IP4 192.0.2.1")),
    ) {
        let mut text = String::from("v=0\r\n");
        if let Some(origin) = origin {
            text.push_str(origin);
            text.push_str("\r\n");
        }
        for line in &lines {
            text.push_str(line);
            text.push_str("\r\n");
        }
        if let Ok(sdp) = SessionDescription::parse(&text) {
            let printed = sdp.to_string();
            let again = SessionDescription::parse(&printed);
            prop_assert!(again.is_ok(), "reparse of {:?} failed: {:?}", printed, again);
            prop_assert_eq!(again.map(|s| s.to_string()), Ok(printed));
        }
    }
}
