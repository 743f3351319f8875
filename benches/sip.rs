//! Criterion benchmarks of the SIP core: parsing a typical INVITE with SDP, building and
//! printing a 200 OK, and one whole INVITE transaction (INVITE, 100, 180, 200, ACK) between
//! a client and a server transaction table in memory, every message printed and re-parsed.
//! Each result is checked once before timing. `parse_invite_rsip` is the baseline of
//! `parse_invite`: the bare rsip parser that our guarded parser wraps.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sip_stack::message::{
    new_branch, parse, response_for, Header, MessageExt, Method, Peer, Request, RequestBuilder,
    Response, SipMessage, StatusCode, TransportKind, Uri,
};
use sip_stack::transaction::{Output, TransactionEvent, Transactions};

const SDP: &str = "v=0\r\n\
o=- 3724394400 3724394400 IN IP4 198.51.100.7\r\n\
s=-\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
m=audio 20000 RTP/AVP 111 0 8 101\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

fn uri(text: &str) -> Uri {
    Uri::try_from(text).expect("valid benchmark URI")
}

fn invite() -> Request {
    RequestBuilder::new(Method::Invite, uri("sip:+15551230000@trunk.example.com"))
        .from(
            &uri("sip:+15557650000@198.51.100.7"),
            Some("Agent"),
            "a1b2c3d4",
        )
        .to(&uri("sip:+15551230000@trunk.example.com"), None)
        .via(TransportKind::Udp, "198.51.100.7:5060")
        .call_id("f81d4fae7dec11d0a76500a0c91e6bf6@198.51.100.7")
        .cseq(1)
        .contact(&uri("sip:agent@198.51.100.7:5060"))
        .header(Header::Other(
            "Allow".into(),
            "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE".into(),
        ))
        .header(Header::Other("Supported".into(), "timer".into()))
        .header(Header::Other("User-Agent".into(), "dialcore".into()))
        .body("application/sdp", SDP.as_bytes().to_vec())
        .build()
        .expect("complete INVITE")
}

fn build_200(invite: &Request) -> String {
    let mut ok = response_for(invite, StatusCode::OK, Some("srv-tag-1"));
    ok.headers.push(Header::Other(
        "Contact".into(),
        "<sip:bob@203.0.113.5:5060>".into(),
    ));
    ok.to_string()
}

/// Moves every output of `from` into `to` (printed and re-parsed); returns the events.
fn deliver(
    now: Instant,
    from: &mut Transactions,
    to: &mut Transactions,
    source: Peer,
) -> Vec<TransactionEvent> {
    let mut events = Vec::new();
    while let Some(output) = from.poll_output() {
        match output {
            Output::Transmit { message, .. } => {
                let bytes = message.to_string();
                let parsed = parse(bytes.as_bytes()).expect("printed message parses");
                to.handle_incoming(now, parsed, source)
                    .expect("matchable message");
            }
            Output::Event(event) => events.push(event),
        }
    }
    events
}

/// One INVITE transaction, INVITE / 100 / 180 / 200 / ACK; returns whether the server saw
/// the ACK.
fn invite_transaction(invite: &Request) -> bool {
    let now = Instant::now();
    let client_peer = Peer::udp("198.51.100.7:5060".parse().expect("address"));
    let server_peer = Peer::udp("203.0.113.5:5060".parse().expect("address"));
    let mut client = Transactions::default();
    let mut server = Transactions::default();
    client
        .send_request(now, invite.clone(), server_peer)
        .expect("valid INVITE");
    deliver(now, &mut client, &mut server, client_peer);
    let mut key_and_request = None;
    while let Some(output) = server.poll_output() {
        if let Output::Event(TransactionEvent::Request { key, request, .. }) = output {
            key_and_request = Some((key, request));
        }
    }
    let (key, request) = key_and_request.expect("the server got the INVITE");
    for code in [100u16, 180, 200] {
        let tag = (code > 100).then_some("srv-tag-1");
        let response = response_for(&request, StatusCode::from(code), tag);
        server
            .send_response(now, &key, response)
            .expect("response accepted");
    }
    let mut ok: Option<Response> = None;
    deliver(now, &mut server, &mut client, server_peer);
    while let Some(output) = client.poll_output() {
        if let Output::Event(TransactionEvent::Response { response, .. }) = output {
            if response.status_code.code() == 200 {
                ok = Some(response);
            }
        }
    }
    let ok = ok.expect("the client got the 200");
    let ack = RequestBuilder::new(Method::Ack, invite.uri.clone())
        .from(
            &uri("sip:+15557650000@198.51.100.7"),
            Some("Agent"),
            "a1b2c3d4",
        )
        .to(&ok.to_uri().expect("200 has To"), None)
        .via(TransportKind::Udp, "198.51.100.7:5060")
        .branch(new_branch())
        .call_id(ok.call_id().expect("200 has Call-ID"))
        .cseq(1)
        .build()
        .expect("complete ACK");
    client
        .send_request(now, ack, server_peer)
        .expect("ACK is sent");
    deliver(now, &mut client, &mut server, client_peer);
    let mut acked = false;
    while let Some(output) = server.poll_output() {
        acked |= matches!(output, Output::Event(TransactionEvent::Ack { .. }));
    }
    acked
}

fn benches(c: &mut Criterion) {
    let invite = invite();
    let wire = invite.to_string().into_bytes();

    // Check every result once before timing it.
    let parsed = parse(&wire).expect("the benchmark INVITE parses");
    assert!(matches!(&parsed, SipMessage::Request(r) if r.body == SDP.as_bytes()));
    let ok = build_200(&invite);
    assert!(ok.starts_with("SIP/2.0 200"));
    assert!(parse(ok.as_bytes()).is_ok());
    assert!(
        invite_transaction(&invite),
        "the INVITE transaction completes"
    );

    let mut group = c.benchmark_group("sip");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("parse_invite", |b| {
        b.iter(|| parse(black_box(&wire)).expect("parses"))
    });
    // Baseline, measured in the same run: rsip's own parser, which `parse` guards.
    group.bench_function("parse_invite_rsip", |b| {
        b.iter(|| rsip::SipMessage::try_from(black_box(&wire[..])).expect("parses"))
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("build_200_ok", |b| b.iter(|| build_200(black_box(&invite))));
    group.bench_function("invite_transaction", |b| {
        b.iter(|| invite_transaction(black_box(&invite)))
    });
    group.finish();
}

criterion_group!(sip, benches);
criterion_main!(sip);
