//! Guards the `message` module against hostile input and lossy printing:
//! `parse(print(msg)) == msg` for generated requests and responses, and neither `parse` nor
//! the `StreamFramer` panics on arbitrary bytes or on mutated valid messages.

use proptest::prelude::*;
use sip_stack::message::{
    parse, parse_uri, response_for, FramerOutput, MessageExt, Method, Request, RequestBuilder,
    SipMessage, StatusCode, StreamFramer, TransportKind, Uri,
};

const METHODS: [Method; 8] = [
    Method::Invite,
    Method::Bye,
    Method::Options,
    Method::Register,
    Method::Info,
    Method::Message,
    Method::Update,
    Method::Cancel,
];

const STATUSES: [u16; 10] = [100, 180, 183, 200, 302, 401, 404, 486, 503, 603];

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9.\\-_]{0,15}"
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9]{0,10}(\\.[a-z][a-z0-9]{0,6}){0,2}",
        (1u8..=254, 0u8..=255, 0u8..=255, 1u8..=254)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
    ]
}

prop_compose! {
    fn request()(
        method in prop::sample::select(METHODS.to_vec()),
        user in token(),
        target in host(),
        local in host(),
        port in prop::option::of(1024u16..65535),
        display in prop::option::of("[a-zA-Z \"\\\\]{1,12}"),
        tag in token(),
        call_id in token(),
        cseq in 1u32..0x7fff_ffff,
        tcp in any::<bool>(),
        body in prop::option::of(prop::collection::vec(any::<u8>(), 1..200)),
    ) -> Request {
        let target: Uri = parse_uri(&format!("sip:{user}@{target}"))
            .expect("generated URI is valid");
        let local_uri: Uri = parse_uri(&format!("sip:me@{local}"))
            .expect("generated URI is valid");
        let sent_by = match port {
            Some(port) => format!("{local}:{port}"),
            None => local.clone(),
        };
        let transport = if tcp { TransportKind::Tcp } else { TransportKind::Udp };
        let mut builder = RequestBuilder::new(method, target.clone())
            .from(&local_uri, display.as_deref(), &tag)
            .to(&target, None)
            .call_id(format!("{call_id}@{local}"))
            .cseq(cseq)
            .via(transport, sent_by)
            .contact(&local_uri);
        if let Some(body) = body {
            builder = builder.body("application/octet-stream", body);
        }
        builder.build().expect("complete builder")
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn request_round_trips(request in request()) {
        let mut bytes = request.to_string().into_bytes();
        // Display prints the body lossily as UTF-8; put the exact bytes back.
        let head_len = bytes.len() - String::from_utf8_lossy(&request.body).len();
        bytes.truncate(head_len);
        bytes.extend_from_slice(&request.body);
        let parsed = parse(&bytes).expect("printed request parses");
        prop_assert_eq!(parsed, SipMessage::Request(request));
    }

    #[test]
    fn response_round_trips(
        request in request(),
        code in prop::sample::select(STATUSES.to_vec()),
        tag in prop::option::of(token()),
    ) {
        let response = response_for(&request, StatusCode::from(code), tag.as_deref());
        let parsed = parse(response.to_string().as_bytes()).expect("printed response parses");
        let SipMessage::Response(parsed) = parsed else {
            return Err(TestCaseError::fail("expected a response"));
        };
        prop_assert_eq!(parsed.status_code.code(), code);
        prop_assert_eq!(parsed.to_tag(), tag.as_deref());
        prop_assert_eq!(parsed.top_via(), request.top_via());
        prop_assert_eq!(parsed.cseq(), request.cseq());
        prop_assert_eq!(parsed.headers, response.headers);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse(&bytes);
        let mut framer = StreamFramer::new(4096);
        framer.push(&bytes);
        while let Ok(Some(output)) = framer.next_output() {
            if let FramerOutput::Message(message) = output {
                let _ = parse(&message);
            }
        }
    }

    #[test]
    fn mutated_messages_never_panic(
        request in request(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let mut bytes = request.to_string().into_bytes();
        for (index, byte, kind) in edits {
            if bytes.is_empty() {
                break;
            }
            let at = index.index(bytes.len());
            match kind {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => {
                    bytes.remove(at);
                }
            }
        }
        if let Ok(message) = parse(&bytes) {
            // Whatever parses must support every accessor without panicking.
            let _ = (message.top_via(), message.cseq(), message.call_id());
            let _ = (message.from_tag(), message.to_tag(), message.contact_uri());
            let _ = (message.record_route(), message.route(), message.max_forwards());
        }
        for chunk in [1usize, 5, 64] {
            let mut framer = StreamFramer::new(4096);
            for piece in bytes.chunks(chunk) {
                framer.push(piece);
                while let Ok(Some(output)) = framer.next_output() {
                    if let FramerOutput::Message(message) = output {
                        let _ = parse(&message);
                    }
                }
            }
        }
    }
}

#[test]
fn sipp_style_invite_with_sdp_parses() {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let text = format!(
        "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0\r\n\
         From: sipp <sip:sipp@127.0.0.1:5061>;tag=1\r\n\
         To: sut <sip:service@127.0.0.1:5060>\r\n\
         Call-ID: 1-1@127.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: sip:sipp@127.0.0.1:5061\r\n\
         Max-Forwards: 70\r\n\
         Subject: Performance Test\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    let message = parse(text.as_bytes()).expect("SIPp INVITE parses");
    assert_eq!(message.body(), sdp.as_bytes());
    assert_eq!(
        message
            .contact_uri()
            .expect("valid contact")
            .expect("present")
            .to_string(),
        "sip:sipp@127.0.0.1:5061"
    );
}
