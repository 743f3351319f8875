//! End to end: what a trunk's settings protect, against the real service on loopback.
//!
//! - `inbound_auth`: SIPp callers on a trunk that requires digest authentication are
//!   challenged (401 with MD5 and SHA-256 challenges), get a connected call with audio when
//!   they answer with the password, 403 when they answer wrongly, and no call record either
//!   way until they pass; with `[sip] digest_algorithms = "SHA-256"` a SHA-256 answer (our
//!   own user agent as the caller: SIPp 3.6 speaks only MD5) connects and the others do not.
//! - Media from outside the trunk: RTP sent to a live call's port (read from the SDP the
//!   service answered) from another loopback address is dropped and counted in the call
//!   record's `media_stats.foreign_datagrams`.
//! - The SIP TCP listener's per-source cap (64) does not hold for a trunk's networks (a
//!   carrier's SBC opens many connections from one address), and holds again when the
//!   trunk stops allowing them.

#[path = "support/service.rs"]
mod service;
#[path = "support/sipp.rs"]
mod sipp;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use service::TestService;
use sip_stack::auth::{Algorithm, Credentials};
use sip_stack::sdp::{build_offer, Codec, Direction, SessionDescription};
use sip_stack::transport::TransportConfig;
use sip_stack::ua::{CallEvent, CallHandle, OutgoingCall, UaConfig, UserAgent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const CALL_DONE: Duration = Duration::from_secs(30);
const NUMBER: &str = "+15550002222";

async fn run_caller(sipp: sipp::Sipp) -> sipp::SippOutcome {
    sipp::require_sipp();
    tokio::task::spawn_blocking(move || sipp.run())
        .await
        .expect("SIPp thread")
        .expect("SIPp ran")
}

async fn patch(svc: &TestService, path: &str, body: Value) -> Value {
    let (status, value) = svc
        .request(
            reqwest::Method::PATCH,
            path,
            Some(body),
            Some(&svc.key),
            &[],
        )
        .await;
    assert_eq!(status, 200, "PATCH {path}: {value}");
    value["data"].clone()
}

/// An echo agent on `NUMBER`, on a loopback trunk that requires `sbc` / `inbound-pw`.
async fn guarded_agent(svc: &TestService) {
    let agent = svc.loopback_agent(NUMBER, json!({"type": "echo"})).await;
    let trunk = patch(
        svc,
        &format!("/trunks/{}", agent.trunk_id),
        json!({"inbound_auth": {"username": "sbc", "password": "inbound-pw"}}),
    )
    .await;
    assert_eq!(trunk["inbound_auth"], json!({"username": "sbc"}), "{trunk}");
}

fn caller(svc: &TestService, scenario: &str, password: &str) -> sipp::Sipp {
    sipp::Sipp::client(sipp::Scenario::file(scenario), svc.sip)
        .service(NUMBER)
        .credentials("sbc", password)
        .calls(1)
}

async fn call_records(svc: &TestService) -> Vec<Value> {
    let (status, calls) = svc.get("/calls").await;
    assert_eq!(status, 200, "{calls}");
    calls["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_answering_the_challenge_gets_a_connected_call_with_audio() {
    let svc = TestService::start().await;
    guarded_agent(&svc).await;
    run_caller(caller(&svc, "service/caller_auth_media.xml", "inbound-pw"))
        .await
        .assert_success();
    let call = svc.wait_for_call("direction=inbound", CALL_DONE).await;
    let call = svc
        .wait_terminal(call["id"].as_str().expect("id"), CALL_DONE)
        .await;
    assert_eq!(call["status"], "ended", "{call}");
    assert_eq!(call["outcome"], "caller_hangup", "{call}");
    let stats = &call["media_stats"];
    assert!(
        stats["packets_received"].as_u64().unwrap_or(0) > 30,
        "{stats}"
    );
    assert!(
        stats["packets_sent"].as_u64().unwrap_or(0) > 30,
        "the echo returned audio: {stats}"
    );
    assert_eq!(
        call_records(&svc).await.len(),
        1,
        "the challenged INVITE made no record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_403_after_the_challenge() {
    let svc = TestService::start().await;
    guarded_agent(&svc).await;
    run_caller(caller(&svc, "service/caller_auth_refused.xml", "guessed"))
        .await
        .assert_success();
    assert!(call_records(&svc).await.is_empty(), "no call was answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_without_authorization_is_challenged() {
    let svc = TestService::start().await;
    guarded_agent(&svc).await;
    run_caller(caller(&svc, "service/caller_auth_challenged.xml", "unused"))
        .await
        .assert_success();
    assert!(call_records(&svc).await.is_empty());
    // The same caller on a trunk without inbound_auth is answered at once: the challenge
    // comes from the trunk's setting, nothing else.
    let (status, trunks) = svc.get("/trunks").await;
    assert_eq!(status, 200);
    let trunk = trunks["data"][0]["id"]
        .as_str()
        .expect("trunk id")
        .to_owned();
    let trunk = patch(
        &svc,
        &format!("/trunks/{trunk}"),
        json!({"inbound_auth": null}),
    )
    .await;
    assert_eq!(trunk["inbound_auth"], Value::Null);
    run_caller(caller(&svc, "service/caller_auth_challenged.xml", "unused"))
        .await
        .assert_failed();
    let answered = svc.wait_for_call("direction=inbound", CALL_DONE).await;
    assert_eq!(answered["to_number"], NUMBER, "{answered}");
}

/// A caller (our own user agent on loopback) dialling `NUMBER` with an offer for `media`,
/// answering challenges with `credentials`: its user agent, the call, and the SDP answer
/// (or the final failure code).
async fn ua_caller(
    svc: &TestService,
    media: &UdpSocket,
    credentials: Option<Credentials>,
) -> (UserAgent, CallHandle, Result<String, u16>) {
    let (ua, _incoming) = UserAgent::start(UaConfig {
        transport: TransportConfig {
            udp: Some("127.0.0.1:0".parse().expect("addr")),
            tcp: None,
            ..TransportConfig::default()
        },
        ..UaConfig::default()
    })
    .await
    .expect("caller's user agent");
    let offer = build_offer(
        "127.0.0.1".parse().expect("ip"),
        media.local_addr().expect("bound").port(),
        &[Codec::pcmu()],
        Direction::SendRecv,
        1,
        1,
    );
    let target = format!("sip:{NUMBER}@{}", svc.sip);
    let mut outgoing = OutgoingCall::to(&target, "sip:+15557770000@127.0.0.1")
        .await
        .expect("target")
        .with_sdp(offer.to_string());
    if let Some(credentials) = credentials {
        outgoing = outgoing.with_credentials(credentials);
    }
    let mut call = ua.invite(outgoing).await.expect("INVITE sent");
    let answer = loop {
        match tokio::time::timeout(CALL_DONE, call.next_event()).await {
            Ok(Some(CallEvent::Answered { sdp })) => break Ok(sdp.expect("SDP answer")),
            Ok(Some(CallEvent::Failed { code, .. })) => break Err(code),
            Ok(Some(event)) if event.is_terminal() => panic!("not answered: {event:?}"),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => panic!("no answer"),
        }
    };
    (ua, call, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sha_256_answer_connects_when_the_service_offers_only_sha_256() {
    let svc = TestService::start_with(|config| {
        config.sip.digest_algorithms = vec![Algorithm::Sha256];
    })
    .await;
    guarded_agent(&svc).await;
    let media = UdpSocket::bind("127.0.0.1:0").await.expect("caller RTP");
    let right = Credentials {
        username: "sbc".into(),
        password: "inbound-pw".into(),
    };
    let (ua, call, answer) = ua_caller(&svc, &media, Some(right)).await;
    assert!(answer.is_ok(), "{answer:?}");
    call.hangup();
    ua.shutdown(Duration::from_secs(2)).await;
    let wrong = Credentials {
        username: "sbc".into(),
        password: "guessed".into(),
    };
    let (ua, _call, answer) = ua_caller(&svc, &media, Some(wrong)).await;
    assert_eq!(answer, Err(403));
    ua.shutdown(Duration::from_secs(2)).await;
    let (ua, _call, answer) = ua_caller(&svc, &media, None).await;
    assert_eq!(answer, Err(401));
    ua.shutdown(Duration::from_secs(2)).await;
    assert_eq!(
        call_records(&svc).await.len(),
        1,
        "only the right answer made a call"
    );
}

/// One RTP packet: PCMU, 20 ms of loud (non-silent) samples.
fn rtp_packet(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut packet = vec![0x80, 0x00];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    packet.extend(std::iter::repeat_n(0x10, 160));
    packet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_from_outside_the_trunk_is_counted_on_the_call_record() {
    let svc = TestService::start().await;
    // The carrier is 127.0.0.1 alone: 127.0.0.9 is somebody else on the same host.
    let carrier: SocketAddr = "127.0.0.1:5999".parse().expect("addr");
    svc.agent_with_number(carrier, NUMBER, json!({"type": "echo"}), &["127.0.0.1/32"])
        .await;
    let media = UdpSocket::bind("127.0.0.1:0").await.expect("caller RTP");
    let (ua, mut call, answer) = ua_caller(&svc, &media, None).await;
    let answer = answer.expect("answered");
    let answer = SessionDescription::parse(&answer).expect("SDP answer parses");
    let audio = answer.audio().expect("audio in the answer");
    let port = audio.port;
    let ip = answer.connection_for(audio).expect("connection address");
    let service_media = SocketAddr::new(ip, port);

    // The intruder speaks first; the caller's own audio follows on the same port, so once
    // any of the caller's packets was received, every intruder packet before it was read.
    const FOREIGN: u16 = 25;
    let intruder = UdpSocket::bind("127.0.0.9:0")
        .await
        .expect("intruder socket");
    for seq in 0..FOREIGN {
        intruder
            .send_to(&rtp_packet(seq, 0x0bad_cafe), service_media)
            .await
            .expect("intruder sends");
    }
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    for seq in 0..50 {
        pace.tick().await;
        media
            .send_to(&rtp_packet(1000 + seq, 0x1234_5678), service_media)
            .await
            .expect("caller sends");
    }
    call.hangup();
    while let Ok(Some(event)) = tokio::time::timeout(CALL_DONE, call.next_event()).await {
        if event.is_terminal() {
            break;
        }
    }
    let record = svc.wait_for_call("direction=inbound", CALL_DONE).await;
    let record = svc
        .wait_terminal(record["id"].as_str().expect("id"), CALL_DONE)
        .await;
    let stats = &record["media_stats"];
    assert!(
        stats["packets_received"].as_u64().unwrap_or(0) > 0,
        "the caller's audio arrived: {stats}"
    );
    assert_eq!(
        stats["foreign_datagrams"],
        json!(FOREIGN),
        "every intruder datagram dropped and counted: {record}"
    );
    ua.shutdown(Duration::from_secs(2)).await;
}

/// Opens `count` TCP connections to the SIP port and pings each (CRLF CRLF, RFC 5626); how
/// many got the pong (the others were closed on accept).
async fn served_connections(sip: SocketAddr, count: usize) -> (usize, Vec<TcpStream>) {
    let mut open = Vec::with_capacity(count);
    for _ in 0..count {
        open.push(TcpStream::connect(sip).await.expect("connect"));
    }
    ping_all(open).await
}

/// Pings every connection; how many answered.
async fn ping_all(mut open: Vec<TcpStream>) -> (usize, Vec<TcpStream>) {
    let mut served = 0;
    for stream in &mut open {
        if stream.write_all(b"\r\n\r\n").await.is_err() {
            continue;
        }
        let mut pong = [0u8; 2];
        match tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut pong)).await {
            Ok(Ok(_)) if &pong == b"\r\n" => served += 1,
            Ok(_) => {}
            Err(_) => panic!("a connection neither answered nor closed"),
        }
    }
    (served, open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunks_network_may_open_more_tcp_connections_than_one_source() {
    let svc = TestService::start().await;
    // No trunk yet: loopback is one source like any other, capped at 64. These stay open
    // (and counted) to the end.
    let (served, _strangers) = served_connections(svc.sip, 70).await;
    assert_eq!(served, 64, "the per-source cap holds for strangers");

    // A trunk allowing all of 127.0.0.0/8 is too broad to lift the cap (a tenant could
    // lift it for everyone with 0.0.0.0/0).
    let agent = svc.loopback_agent(NUMBER, json!({"type": "echo"})).await;
    let (served, _) = served_connections(svc.sip, 5).await;
    assert_eq!(served, 0, "a /8 trunk network is not exempt");

    // A carrier's /24: its SBC opens 70 more on top of the 64 counted.
    patch(
        &svc,
        &format!("/trunks/{}", agent.trunk_id),
        json!({"allowed_networks": ["127.0.0.0/24"]}),
    )
    .await;
    let (served, sbc) = served_connections(svc.sip, 70).await;
    assert_eq!(served, 70, "the trunk's network is not capped per source");

    // The trunk moves elsewhere: loopback is capped again for new connections (the 64
    // counted ones are still open); the SBC's open ones are kept.
    patch(
        &svc,
        &format!("/trunks/{}", agent.trunk_id),
        json!({"allowed_networks": ["10.0.0.0/8"]}),
    )
    .await;
    let (served, _late) = served_connections(svc.sip, 5).await;
    assert_eq!(
        served, 0,
        "capped again once the trunk no longer allows loopback"
    );
    let (served, _) = ping_all(sbc).await;
    assert_eq!(served, 70, "connections admitted while exempt are not cut");
}
