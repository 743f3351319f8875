//! The engine against our own SIP user agent on loopback, acting as the
//! carrier behind a trunk (answering with audio, busy, never answering) and
//! as a caller. Real sockets and real time: each call lasts about a second.

use std::net::SocketAddr;

use chrono::Utc;
use media::stream::{EngineConfig as PeerMediaConfig, FrameKind, MediaEngine as PeerMedia};
use sip_stack::sdp::{answer, Codec, Direction, PayloadType, SessionDescription};
use sip_stack::ua::{CallEvent, IncomingCall, IncomingCalls, OutgoingCall, UaConfig, UserAgent};

use super::negotiate::media_config;
use super::*;
use crate::ids::new_id;
use crate::model::{
    AgentCallSettings, AgentStatus, CallDirection, CallSettings, PhoneNumber, Runtime,
};
use crate::store::test_support::temp_store;

struct Fixture {
    store: Store,
    _dir: crate::store::test_support::TestDb,
    recordings: tempfile::TempDir,
    engine: CallEngine,
    org: String,
    agent: Agent,
}

async fn fixture(rtp_min: u16) -> Fixture {
    fixture_with(rtp_min, |_| {}).await
}

/// [`fixture`] with its configuration changed by `tweak` first.
async fn fixture_with(rtp_min: u16, tweak: impl FnOnce(&mut Config)) -> Fixture {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("warn")
        .try_init();
    let (store, dir) = temp_store().await;
    store.create_key("acme", 10_000).await.expect("org");
    let org = store
        .org_id_by_name("acme")
        .await
        .expect("lookup")
        .expect("org exists");
    let recordings = tempfile::tempdir().expect("recordings dir");
    let mut config = Config::default();
    config.sip.listen = "127.0.0.1:0".parse().expect("literal");
    // The far ends of these tests listen on loopback.
    config.security.allow_private_destinations = true;
    config.rtp.port_min = rtp_min;
    config.rtp.port_max = rtp_min + 49;
    config.recordings.dir = recordings.path().to_path_buf();
    tweak(&mut config);
    let webhooks = Webhooks::start(store.clone(), &config);
    let engine = CallEngine::start(&config, store.clone(), webhooks)
        .await
        .expect("engine starts");
    let now = Utc::now();
    let agent = Agent {
        id: new_id("agt"),
        org_id: org.clone(),
        name: "echo".into(),
        prompt: "repeat".into(),
        greeting: None,
        status: AgentStatus::Active,
        runtime: Runtime::Echo,
        default_call_settings: AgentCallSettings {
            max_duration_secs: 1,
            ..AgentCallSettings::default()
        },
        created_at: now,
        updated_at: now,
    };
    store.insert_agent(&agent).await.expect("agent");
    Fixture {
        store,
        _dir: dir,
        recordings,
        engine,
        org,
        agent,
    }
}

fn trunk(org: &str, carrier: SocketAddr, allowed: &[&str]) -> Trunk {
    let now = Utc::now();
    Trunk {
        id: new_id("trk"),
        org_id: org.into(),
        name: "carrier".into(),
        host: carrier.ip().to_string(),
        port: carrier.port(),
        transport: TrunkTransport::Udp,
        username: Some("user".into()),
        password: Some("secret".into()),
        allowed_networks: allowed.iter().map(|s| s.to_string()).collect(),
        inbound_auth: None,
        created_at: now,
        updated_at: now,
    }
}

async fn queued_call(f: &Fixture, join_timeout_secs: u32) -> Call {
    let call = outbound_call(f, join_timeout_secs);
    f.store.insert_call(&call).await.expect("call stored");
    call
}

/// A queued outbound call of `f`'s agent, not stored yet.
fn outbound_call(f: &Fixture, join_timeout_secs: u32) -> Call {
    let now = Utc::now();
    Call {
        id: new_id("call"),
        org_id: f.org.clone(),
        agent_id: f.agent.id.clone(),
        status: CallStatus::Queued,
        outcome: None,
        direction: CallDirection::Outbound,
        phone_number: "+15551234567".into(),
        from_number: "+15550001111".into(),
        to_number: "+15551234567".into(),
        variables: Default::default(),
        call_settings: CallSettings::default(),
        max_duration_secs: 1,
        join_timeout_secs,
        sip_call_id: None,
        sip_final_code: None,
        q850_cause: None,
        end_reason: None,
        error_message: None,
        duration_seconds: None,
        transcript: Vec::new(),
        recording_url: None,
        media_stats: None,
        node_id: None,
        rendered_prompt: Some("repeat".into()),
        rendered_greeting: None,
        created_at: now,
        started_at: None,
        answered_at: None,
        ended_at: None,
        updated_at: now,
    }
}

/// A test route of run `run_id` to the fixture's agent, from +15550100000 to +15550100001.
fn route_to_agent(f: &Fixture, run_id: &str) -> test_route::TestRoute {
    test_route::TestRoute {
        org_id: f.org.clone(),
        agent_id: f.agent.id.clone(),
        from_number: "+15550100000".into(),
        to_number: "+15550100001".into(),
        run_id: run_id.into(),
    }
}

/// Calls `user` at the engine's SIP address from `caller` (as +15550009999),
/// offering PCMU on media port `port`.
async fn dial_engine(
    caller: &UserAgent,
    engine: SocketAddr,
    user: &str,
    port: u16,
) -> sip_stack::ua::CallHandle {
    let offer = sip_stack::sdp::build_offer(
        "127.0.0.1".parse().expect("ip"),
        port,
        &[Codec::pcmu()],
        Direction::SendRecv,
        1,
        1,
    )
    .to_string();
    let outgoing = OutgoingCall::to(
        &format!("sip:{user}@{engine}"),
        "sip:+15550009999@127.0.0.1",
    )
    .await
    .expect("target")
    .with_sdp(offer);
    caller.invite(outgoing).await.expect("INVITE sent")
}

/// The final answer to an INVITE (200 when answered, 0 when the leg ended
/// without one), and the leg.
async fn final_answer(mut leg: sip_stack::ua::CallHandle) -> (u16, sip_stack::ua::CallHandle) {
    loop {
        match leg.next_event().await {
            Some(CallEvent::Failed { code, .. }) => return (code, leg),
            Some(CallEvent::Answered { .. }) => return (200, leg),
            Some(_) => {}
            None => return (0, leg),
        }
    }
}

/// A carrier, and a call of `f`'s agent placed through it: the carrier's
/// user agent (keep it alive), the call as queued, and the INVITE's leg.
async fn dial_carrier(f: &Fixture, join_timeout_secs: u32) -> (UserAgent, Call, IncomingCall) {
    let (carrier, mut incoming, addr) = carrier().await;
    let call = queued_call(f, join_timeout_secs).await;
    f.engine
        .place_call(call.clone(), f.agent.clone(), trunk(&f.org, addr, &[]))
        .await
        .expect("placed");
    let leg = incoming.recv().await.expect("INVITE reaches the carrier");
    (carrier, call, leg)
}

async fn carrier() -> (UserAgent, IncomingCalls, SocketAddr) {
    let (ua, incoming) = UserAgent::start(UaConfig {
        transport: sip_stack::transport::TransportConfig {
            udp: Some("127.0.0.1:0".parse().expect("literal")),
            tcp: None,
            ..Default::default()
        },
        ..UaConfig::default()
    })
    .await
    .expect("carrier starts");
    let addr = ua.local_addr(TransportKind::Udp).expect("udp bound");
    (ua, incoming, addr)
}

/// Waits for the engine to write every live call's last record.
async fn settle(f: &Fixture, call_id: &str) -> Call {
    f.engine.wait_idle().await;
    f.store.get_call_any(call_id).await.expect("call record")
}

#[tokio::test]
async fn answered_call_with_audio_ends_at_max_duration() {
    // The carrier answers PCMA (our provisional stream is PCMU: changed in place).
    answered_call_with_audio(41_000, Codec::pcma(), "PCMA").await;
}

#[tokio::test]
async fn a_call_answered_with_opus_gets_audio_on_the_offered_port_at_16_khz() {
    // The peer sends to the port of our offer: the PCMU stream opened for it became Opus.
    let opus = Codec::opus(PayloadType::new(111).expect("dynamic"));
    answered_call_with_audio(41_800, opus, "opus").await;
}

/// An outbound call whose carrier answers with `codec` (and telephone-event), talks to
/// the echo agent and is ended by the engine at its one-second maximum duration.
async fn answered_call_with_audio(rtp_min: u16, codec: Codec, codec_name: &str) {
    let f = fixture(rtp_min).await;
    let (_carrier, call, mut leg) = dial_carrier(&f, 10).await;
    assert_eq!(leg.invite.called_user.as_deref(), Some("+15551234567"));
    assert_eq!(leg.invite.caller_user.as_deref(), Some("+15550001111"));
    let offer =
        SessionDescription::parse(leg.invite.sdp.as_deref().expect("offer")).expect("offer parses");
    let names: Vec<String> = offer
        .audio()
        .expect("audio")
        .codecs()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(names, ["opus", "PCMU", "PCMA", "telephone-event"]);
    let (_media, mut stream) = answer_with_audio(&mut leg, &offer, rtp_min, codec);

    // Talk (a loud square wave) and count what comes back from the echo agent.
    let tone: Vec<i16> = (0..stream.app_rate().frame_samples())
        .map(|n| if (n / 10) % 2 == 0 { 8000 } else { -8000 })
        .collect();
    let mut inbound = stream.take_inbound().expect("inbound frames");
    let mut heard = 0;
    let ended = loop {
        tokio::select! {
            event = leg.call.next_event() => match event {
                Some(CallEvent::Ended { .. }) | None => break event,
                Some(_) => {}
            },
            frame = inbound.recv() => {
                if let Some(frame) = frame {
                    if frame.kind() == FrameKind::Voice && frame.iter().any(|s| s.unsigned_abs() > 2000) {
                        heard += 1;
                    }
                    let _ = stream.try_send_frame(&tone);
                }
            }
        }
    };
    assert!(
        matches!(ended, Some(CallEvent::Ended { .. })),
        "BYE from the engine"
    );
    assert!(
        heard > 5,
        "the echo agent returned the audio ({heard} frames)"
    );

    let record = settle(&f, &call.id).await;
    assert_eq!(record.status, CallStatus::Ended);
    assert_eq!(record.outcome, Some(CallOutcome::MaxDuration));
    assert_eq!(record.end_reason.as_deref(), Some("max_duration"));
    assert_eq!(record.sip_final_code, Some(200));
    assert!(record.sip_call_id.is_some());
    let duration = record.duration_seconds.expect("duration");
    assert!(
        (1.0..1.3).contains(&duration),
        "max duration enforced on time: {duration}"
    );
    assert!(
        record.started_at.is_some() && record.answered_at.is_some() && record.ended_at.is_some()
    );
    let stats = record.media_stats.expect("media stats");
    assert_eq!(stats.codec, codec_name);
    assert!(
        stats.packets_received > 10 && stats.packets_sent > 10,
        "{stats:?}"
    );
    assert!(record.recording_url.is_some());
    let wav = f.recordings.path().join(format!("{}.wav", call.id));
    let reader = hound::WavReader::open(&wav).expect("recording is a WAV file");
    assert_eq!(reader.spec().channels, 2);
    assert!(reader.duration() > 4000, "about a second at 8 kHz");
    assert!(
        f.store.balance_cents(&f.org).await.expect("balance") < 10_000,
        "charged"
    );
}

#[tokio::test]
async fn rtp_keeps_a_call_past_its_inactivity_timeout_and_its_absence_ends_it() {
    // The bridge notes activity without waking the call task, which looks when its
    // inactivity deadline comes: a call that keeps hearing RTP must not end there.
    let f = fixture_with(42_600, |config| config.rtp.inactivity_timeout_secs = 1).await;
    let (carrier, mut incoming, addr) = carrier().await;
    let trunk = trunk(&f.org, addr, &[]);
    for talking in [true, false] {
        let mut call = outbound_call(&f, 10);
        call.max_duration_secs = 4;
        f.store.insert_call(&call).await.expect("call stored");
        f.engine
            .place_call(call.clone(), f.agent.clone(), trunk.clone())
            .await
            .expect("placed");
        let mut leg = incoming.recv().await.expect("INVITE reaches the carrier");
        let offer = SessionDescription::parse(leg.invite.sdp.as_deref().expect("offer"))
            .expect("offer parses");
        let (_media, mut stream) = answer_with_audio(&mut leg, &offer, 42_600, Codec::pcmu());
        // Talk for the whole call, or for 1.5 s only (the stream sends nothing when it is
        // given nothing). Activity is noted every 0.5 s.
        let tone = vec![4000i16; stream.app_rate().frame_samples()];
        let mut inbound = stream.take_inbound().expect("inbound frames");
        let mut frames = 0;
        loop {
            tokio::select! {
                event = leg.call.next_event() => match event {
                    Some(CallEvent::Ended { .. }) | None => break,
                    Some(_) => {}
                },
                Some(_) = inbound.recv() => {
                    frames += 1;
                    if talking || frames < 75 {
                        let _ = stream.try_send_frame(&tone);
                    }
                }
            }
        }
        let record = settle(&f, &call.id).await;
        let duration = record.duration_seconds.expect("duration");
        if talking {
            assert_eq!(
                record.end_reason.as_deref(),
                Some("max_duration"),
                "{record:?}"
            );
            assert!((4.0..4.5).contains(&duration), "{duration}");
        } else {
            assert_eq!(
                record.end_reason.as_deref(),
                Some("media_timeout"),
                "{record:?}"
            );
            assert!(
                (1.3..2.2).contains(&duration),
                "heard until 0.5 s: {duration}"
            );
        }
    }
    drop(carrier);
}

#[tokio::test]
async fn a_draining_engine_keeps_its_live_call_and_refuses_new_ones() {
    let f = fixture(42_800).await;
    let (carrier, mut incoming, addr) = carrier().await;
    let trunk = trunk(&f.org, addr, &[]);
    let mut call = outbound_call(&f, 10);
    call.max_duration_secs = 3;
    f.store.insert_call(&call).await.expect("call stored");
    f.engine
        .place_call(call.clone(), f.agent.clone(), trunk.clone())
        .await
        .expect("placed");
    let mut leg = incoming.recv().await.expect("INVITE reaches the carrier");
    let offer =
        SessionDescription::parse(leg.invite.sdp.as_deref().expect("offer")).expect("offer parses");
    let (_media, _stream) = answer_with_audio(&mut leg, &offer, 42_800, Codec::pcmu());

    f.engine.drain();
    assert!(f.engine.is_draining());
    let second = outbound_call(&f, 10);
    f.store.insert_call(&second).await.expect("call stored");
    let refused = f
        .engine
        .place_call(second, f.agent.clone(), trunk.clone())
        .await;
    assert!(matches!(refused, Err(EngineError::Draining)), "{refused:?}");
    assert_eq!(f.engine.live_calls(), 1, "the live call goes on");

    while let Some(event) = leg.call.next_event().await {
        if matches!(event, CallEvent::Ended { .. }) {
            break;
        }
    }
    let record = settle(&f, &call.id).await;
    assert_eq!(
        record.end_reason.as_deref(),
        Some("max_duration"),
        "a drain ends no call: {record:?}"
    );
    drop(carrier);
}

/// Sends `invite` from `caller` to `engine` and returns the first final response's text.
async fn final_response_to(
    caller: &tokio::net::UdpSocket,
    engine: SocketAddr,
    invite: &str,
) -> String {
    caller
        .send_to(invite.as_bytes(), engine)
        .await
        .expect("INVITE sent");
    let mut buffer = vec![0u8; 65_536];
    loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), caller.recv_from(&mut buffer))
            .await
            .expect("answered in time")
            .expect("a response");
        let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
        if !text.starts_with("SIP/2.0 1") {
            return text;
        }
    }
}

#[tokio::test]
async fn a_node_at_max_calls_refuses_the_next_call_until_one_ends() {
    let f = fixture_with(43_000, |config| config.node.max_calls = 1).await;
    let (carrier, mut incoming, addr) = carrier().await;
    let trunk = trunk(&f.org, addr, &["127.0.0.0/8"]);
    f.store.insert_trunk(&trunk).await.expect("trunk");
    let now = Utc::now();
    f.store
        .insert_number(&PhoneNumber {
            id: new_id("num"),
            org_id: f.org.clone(),
            number: "+15557770009".into(),
            trunk_id: trunk.id.clone(),
            agent_id: Some(f.agent.id.clone()),
            created_at: now,
            updated_at: now,
        })
        .await
        .expect("number");
    f.store.directory_changed().await;
    assert!(!f.engine.is_at_capacity());

    // The one call the node may run.
    let mut call = outbound_call(&f, 10);
    call.max_duration_secs = 2;
    f.store.insert_call(&call).await.expect("call stored");
    f.engine
        .place_call(call.clone(), f.agent.clone(), trunk.clone())
        .await
        .expect("placed");
    let mut leg = incoming.recv().await.expect("INVITE reaches the carrier");
    let offer =
        SessionDescription::parse(leg.invite.sdp.as_deref().expect("offer")).expect("offer parses");
    let (_media, _stream) = answer_with_audio(&mut leg, &offer, 43_000, Codec::pcmu());
    assert!(f.engine.is_at_capacity());

    // One more outbound call is refused as such, before anything is sent.
    let second = outbound_call(&f, 10);
    f.store.insert_call(&second).await.expect("call stored");
    let refused = f
        .engine
        .place_call(second.clone(), f.agent.clone(), trunk.clone())
        .await;
    assert!(
        matches!(refused, Err(EngineError::AtCapacity { limit: 1 })),
        "{refused:?}"
    );
    // One more inbound call, to a number that is answered otherwise, gets 503 and when to
    // retry (a load balancer then tries another node).
    let caller = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("caller socket");
    let from = caller.local_addr().expect("bound");
    let answer = final_response_to(
        &caller,
        f.engine.sip_addr(),
        &raw_invite(from, "+15557770009", f.engine.sip_addr()),
    )
    .await;
    assert!(answer.starts_with("SIP/2.0 503 "), "{answer}");
    let retry_after = answer
        .lines()
        .find_map(|line| line.strip_prefix("Retry-After: "))
        .unwrap_or_else(|| panic!("Retry-After missing: {answer}"));
    assert_eq!(retry_after, inbound::RETRY_AFTER.as_secs().to_string());
    assert_eq!(f.engine.live_calls(), 1, "the live call goes on");

    while let Some(event) = leg.call.next_event().await {
        if matches!(event, CallEvent::Ended { .. }) {
            break;
        }
    }
    let record = settle(&f, &call.id).await;
    assert_eq!(record.end_reason.as_deref(), Some("max_duration"));
    assert!(!f.engine.is_at_capacity(), "its slot is free again");

    // With the slot free, the next call is placed.
    let third = queued_call(&f, 10).await;
    f.engine
        .place_call(third.clone(), f.agent.clone(), trunk.clone())
        .await
        .expect("placed once a slot is free");
    let leg = incoming.recv().await.expect("INVITE reaches the carrier");
    leg.call.reject(486);
    let record = settle(&f, &third.id).await;
    assert_eq!(record.outcome, Some(CallOutcome::Busy));
    drop(carrier);
}

/// The next SIP message `socket` receives (within 10 s), and where from.
async fn next_message(socket: &tokio::net::UdpSocket) -> (String, SocketAddr) {
    let mut buffer = vec![0u8; 65_536];
    let (n, from) = tokio::time::timeout(Duration::from_secs(10), socket.recv_from(&mut buffer))
        .await
        .expect("a message in time")
        .expect("a datagram");
    (String::from_utf8_lossy(&buffer[..n]).into_owned(), from)
}

/// The value of header `name` in `message`, if present.
fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// A response `status` to `request`, as a UAS writes it: Via, From, Call-ID and CSeq
/// copied, To with `to_tag`.
fn response_to(request: &str, status: &str, to_tag: &str) -> String {
    let mut response = format!("SIP/2.0 {status}\r\n");
    for line in request.lines() {
        let name = line.split(':').next().unwrap_or_default().trim();
        if ["Via", "From", "Call-ID", "CSeq"]
            .iter()
            .any(|copied| copied.eq_ignore_ascii_case(name))
        {
            response.push_str(line);
            response.push_str("\r\n");
        }
    }
    let to = header(request, "To").expect("To");
    response.push_str(&format!(
        "To: {to};tag={to_tag}\r\nContent-Length: 0\r\n\r\n"
    ));
    response
}

#[tokio::test]
async fn an_outbound_invite_goes_through_the_outbound_proxy_routed_on_to_the_trunk() {
    // The proxy is the test's own socket: it reads what arrives and answers as Kamailio
    // relaying a carrier that rings until the engine gives up.
    let proxy = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("proxy socket");
    let proxy_addr = proxy.local_addr().expect("bound");
    // The trunk's own address: nothing may be sent there.
    let trunk_socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("trunk socket");
    let trunk_addr = trunk_socket.local_addr().expect("bound");
    let f = fixture_with(43_200, |config| {
        config.sip.outbound_proxy = Some(
            format!("sip:{proxy_addr};transport=udp")
                .parse()
                .expect("proxy"),
        )
    })
    .await;
    let call = queued_call(&f, 1).await;
    f.engine
        .place_call(
            call.clone(),
            f.agent.clone(),
            trunk(&f.org, trunk_addr, &[]),
        )
        .await
        .expect("placed");

    let (invite, from) = next_message(&proxy).await;
    assert_eq!(from, f.engine.sip_addr(), "sent from the engine's SIP port");
    let request_uri = format!("INVITE sip:+15551234567@{trunk_addr} SIP/2.0");
    assert!(
        invite.starts_with(&format!("{request_uri}\r\n")),
        "the Request-URI stays the trunk's: {invite}"
    );
    let route = format!("<sip:{proxy_addr};lr>");
    assert_eq!(header(&invite, "Route"), Some(route.as_str()), "{invite}");
    assert!(
        header(&invite, "To").is_some_and(|to| to.contains(&trunk_addr.to_string())),
        "{invite}"
    );
    proxy
        .send_to(
            response_to(&invite, "180 Ringing", "relayed").as_bytes(),
            from,
        )
        .await
        .expect("180 sent");

    // At the join timeout the CANCEL goes where the INVITE went, with the same Route.
    let (cancel, _) = loop {
        let (message, from) = next_message(&proxy).await;
        if message.starts_with("CANCEL ") {
            break (message, from);
        }
        assert!(
            message.starts_with("INVITE "),
            "only retransmissions before: {message}"
        );
    };
    assert!(
        cancel.starts_with(&format!("CANCEL sip:+15551234567@{trunk_addr} SIP/2.0\r\n")),
        "{cancel}"
    );
    assert_eq!(header(&cancel, "Route"), Some(route.as_str()), "{cancel}");
    proxy
        .send_to(response_to(&cancel, "200 OK", "relayed").as_bytes(), from)
        .await
        .expect("200 to the CANCEL sent");
    proxy
        .send_to(
            response_to(&invite, "487 Request Terminated", "relayed").as_bytes(),
            from,
        )
        .await
        .expect("487 sent");
    let ack = loop {
        let (message, _) = next_message(&proxy).await;
        if message.starts_with("ACK ") {
            break message;
        }
    };
    assert!(
        ack.starts_with(&format!("ACK sip:+15551234567@{trunk_addr} SIP/2.0\r\n")),
        "{ack}"
    );
    assert_eq!(header(&ack, "Route"), Some(route.as_str()), "{ack}");

    let record = settle(&f, &call.id).await;
    assert_eq!(record.outcome, Some(CallOutcome::NoAnswer), "{record:?}");
    assert_eq!(record.sip_final_code, Some(487));
    let mut buffer = [0u8; 2048];
    assert!(
        trunk_socket.try_recv_from(&mut buffer).is_err(),
        "nothing went straight to the trunk"
    );
}

#[tokio::test]
async fn an_outbound_proxy_that_does_not_resolve_fails_the_call_as_such() {
    let f = fixture_with(43_300, |config| {
        config.sip.outbound_proxy = Some("proxy.invalid:5060".parse().expect("proxy"))
    })
    .await;
    let call = queued_call(&f, 1).await;
    let trunk = trunk(&f.org, "127.0.0.1:5999".parse().expect("addr"), &[]);
    f.engine
        .place_call(call.clone(), f.agent.clone(), trunk)
        .await
        .expect("placed");
    let record = settle(&f, &call.id).await;
    assert_eq!(record.status, CallStatus::Failed);
    assert_eq!(
        record.end_reason.as_deref(),
        Some("outbound_proxy_unreachable"),
        "{record:?}"
    );
}

/// Answers the engine's INVITE on `leg` with `codec` (and telephone-event), with a media
/// stream of the test's own on ports from `rtp_min + 60`: the media engine (keep it) and
/// the stream.
fn answer_with_audio(
    leg: &mut IncomingCall,
    offer: &SessionDescription,
    rtp_min: u16,
    codec: Codec,
) -> (PeerMedia, media::stream::StreamHandle) {
    let ours = [
        codec,
        Codec::telephone_event(PayloadType::TELEPHONE_EVENT_DEFAULT),
    ];
    let draft = answer(
        offer,
        "127.0.0.1".parse().expect("ip"),
        9,
        &ours,
        Direction::SendRecv,
        5,
        1,
    )
    .expect("answer");
    let media = PeerMedia::start(PeerMediaConfig {
        port_min: rtp_min + 60,
        port_max: rtp_min + 99,
        workers: 1,
        ..PeerMediaConfig::default()
    })
    .expect("peer media");
    let stream = media
        .open(
            media_config(&draft.negotiated, &[]).expect("supported codec"),
            Default::default(),
        )
        .expect("peer stream");
    let reply = answer(
        offer,
        "127.0.0.1".parse().expect("ip"),
        stream.local_addr().port(),
        &ours,
        Direction::SendRecv,
        5,
        1,
    )
    .expect("answer");
    leg.call.ring(None);
    leg.call.answer(reply.sdp.to_string());
    (media, stream)
}

#[tokio::test]
async fn busy_carrier_fails_the_call_as_busy() {
    let f = fixture(41_100).await;
    let (_carrier, call, leg) = dial_carrier(&f, 10).await;
    leg.call.reject(486);
    let record = settle(&f, &call.id).await;
    assert_eq!(record.status, CallStatus::Failed);
    assert_eq!(record.outcome, Some(CallOutcome::Busy));
    assert_eq!(record.sip_final_code, Some(486));
}

#[tokio::test]
async fn unanswered_call_is_cancelled_at_the_join_timeout() {
    let f = fixture(41_200).await;
    let (_carrier, call, mut leg) = dial_carrier(&f, 1).await;
    leg.call.ring(None);
    let started = std::time::Instant::now();
    // The carrier rings until the engine gives up.
    let end = loop {
        match leg.call.next_event().await {
            Some(event) if event.is_terminal() => break event,
            Some(_) => {}
            None => panic!("carrier leg closed without an end"),
        }
    };
    let waited = started.elapsed();
    assert!(matches!(end, CallEvent::Failed { .. }), "{end:?}");
    assert!(
        waited < std::time::Duration::from_millis(1300),
        "CANCEL within the join timeout's slack: {waited:?}"
    );
    let record = settle(&f, &call.id).await;
    assert_eq!(record.status, CallStatus::Failed);
    assert_eq!(record.outcome, Some(CallOutcome::NoAnswer));
    assert_eq!(record.end_reason.as_deref(), Some("join_timeout"));
    assert_eq!(record.sip_final_code, Some(487));
}

#[tokio::test]
async fn inbound_calls_are_checked_then_answered() {
    let f = fixture(41_300).await;
    let (caller, _incoming, caller_addr) = carrier().await;
    let allowed = trunk(&f.org, caller_addr, &["127.0.0.0/8"]);
    let refused = trunk(&f.org, caller_addr, &["192.0.2.0/24"]);
    f.store.insert_trunk(&allowed).await.expect("trunk");
    f.store.insert_trunk(&refused).await.expect("trunk");
    let now = Utc::now();
    for (number, trunk_id) in [("+15557770001", &allowed.id), ("+15557770002", &refused.id)] {
        f.store
            .insert_number(&PhoneNumber {
                id: new_id("num"),
                org_id: f.org.clone(),
                number: number.into(),
                trunk_id: trunk_id.clone(),
                agent_id: Some(f.agent.id.clone()),
                created_at: now,
                updated_at: now,
            })
            .await
            .expect("number");
    }
    let engine_addr = f.engine.sip_addr();
    assert_eq!(
        final_answer(dial_engine(&caller, engine_addr, "+15550000000", 41_390).await)
            .await
            .0,
        404,
        "unknown number"
    );
    assert_eq!(
        final_answer(dial_engine(&caller, engine_addr, "+15557770002", 41_390).await)
            .await
            .0,
        403,
        "source not allowed"
    );

    let mut leg = dial_engine(&caller, engine_addr, "+15557770001", 41_390).await;
    loop {
        match leg.next_event().await {
            Some(CallEvent::Answered { sdp }) => {
                assert!(sdp.is_some_and(|s| s.contains("PCMU")));
                break;
            }
            Some(CallEvent::Failed { code, .. }) => panic!("refused with {code}"),
            Some(_) => {}
            None => panic!("no answer"),
        }
    }
    leg.hangup();
    while let Some(event) = leg.next_event().await {
        if event.is_terminal() {
            break;
        }
    }
    f.engine.wait_idle().await;
    let (calls, total) = f
        .store
        .list_calls(&f.org, &Default::default(), 10, 0)
        .await
        .expect("calls");
    assert_eq!(total, 1, "refused INVITEs leave no record");
    let record = &calls[0];
    assert_eq!(record.direction, CallDirection::Inbound);
    assert_eq!(record.to_number, "+15557770001");
    assert_eq!(record.from_number, "+15550009999");
    assert_eq!(record.status, CallStatus::Ended);
    assert_eq!(record.outcome, Some(CallOutcome::CallerHangup));
}

/// A bare INVITE (no SDP) from `from` to `user` at the engine.
/// An INVITE from `from` to `user`, with a PCMU offer.
fn raw_invite(from: SocketAddr, user: &str, engine: SocketAddr) -> String {
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {rtp} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        ip = from.ip(),
        rtp = from.port() + 2,
    );
    format!(
        "INVITE sip:{user}@{engine} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bK-store-{port};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:+15550009999@{from}>;tag=caller{port}\r\n\
         To: <sip:{user}@{engine}>\r\n\
         Call-ID: store-{port}@127.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:caller@{from}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {length}\r\n\r\n{sdp}",
        port = from.port(),
        length = sdp.len(),
    )
}

#[tokio::test]
async fn an_inbound_invite_during_a_store_timeout_gets_503_with_retry_after() {
    let f = fixture(41_600).await;
    let trunk = trunk(
        &f.org,
        "127.0.0.1:5999".parse().expect("addr"),
        &["127.0.0.0/8"],
    );
    f.store.insert_trunk(&trunk).await.expect("trunk");
    let now = Utc::now();
    f.store
        .insert_number(&PhoneNumber {
            id: new_id("num"),
            org_id: f.org.clone(),
            number: "+15557770004".into(),
            trunk_id: trunk.id.clone(),
            agent_id: Some(f.agent.id.clone()),
            created_at: now,
            updated_at: now,
        })
        .await
        .expect("number");
    // A second engine on the same database, through a pool of one connection that the
    // test holds once the engine runs. A reload of the routing directory then fails and
    // empties it, so the INVITE's lookups go to the database and time out.
    let starved = f._dir.starved(Duration::from_millis(100)).await;
    let mut config = Config::default();
    config.sip.listen = "127.0.0.1:0".parse().expect("literal");
    // The far ends of these tests listen on loopback.
    config.security.allow_private_destinations = true;
    config.rtp.port_min = 41_650;
    config.rtp.port_max = 41_699;
    config.recordings.dir = f.recordings.path().to_path_buf();
    let webhooks = Webhooks::start(f.store.clone(), &config);
    let engine = CallEngine::start(&config, starved.clone(), webhooks)
        .await
        .expect("engine starts");
    let _held = starved.pool().acquire().await.expect("the one connection");
    starved.directory_changed().await;

    let caller = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("caller socket");
    let from = caller.local_addr().expect("bound");
    let invite = raw_invite(from, "+15557770004", engine.sip_addr());
    caller
        .send_to(invite.as_bytes(), engine.sip_addr())
        .await
        .expect("INVITE sent");
    let mut buffer = vec![0u8; 65_536];
    let answer = loop {
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), caller.recv_from(&mut buffer))
            .await
            .expect("answered in time")
            .expect("a response");
        let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
        if !text.starts_with("SIP/2.0 1") {
            break text;
        }
    };
    assert!(
        answer.starts_with("SIP/2.0 503 "),
        "a store timeout is 503, never 403 or 404: {answer}"
    );
    let retry_after = answer
        .lines()
        .find_map(|line| line.strip_prefix("Retry-After: "))
        .unwrap_or_else(|| panic!("Retry-After missing: {answer}"));
    assert_eq!(retry_after, inbound::RETRY_AFTER.as_secs().to_string());
}

#[tokio::test]
async fn an_inbound_call_is_answered_while_the_store_cannot_serve_and_stored_once_it_can() {
    let f = fixture(41_800).await;
    let (caller, _incoming, caller_addr) = carrier().await;
    let trunk = trunk(&f.org, caller_addr, &["127.0.0.0/8"]);
    f.store.insert_trunk(&trunk).await.expect("trunk");
    let now = Utc::now();
    f.store
        .insert_number(&PhoneNumber {
            id: new_id("num"),
            org_id: f.org.clone(),
            number: "+15557770005".into(),
            trunk_id: trunk.id.clone(),
            agent_id: Some(f.agent.id.clone()),
            created_at: now,
            updated_at: now,
        })
        .await
        .expect("number");
    // A second engine on the same database through a pool of one connection, which the
    // test takes once the engine has loaded its directory and its ledger.
    let starved = f._dir.starved(Duration::from_millis(100)).await;
    let mut config = Config::default();
    config.sip.listen = "127.0.0.1:0".parse().expect("literal");
    config.security.allow_private_destinations = true;
    config.rtp.port_min = 41_850;
    config.rtp.port_max = 41_899;
    config.recordings.dir = f.recordings.path().to_path_buf();
    let webhooks = Webhooks::start(f.store.clone(), &config);
    let engine = CallEngine::start(&config, starved.clone(), webhooks)
        .await
        .expect("engine starts");
    let loaded = std::time::Instant::now();
    while !engine.shared.ledger.knows(&f.org) {
        assert!(loaded.elapsed() < Duration::from_secs(5), "ledger loaded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let held = starved.pool().acquire().await.expect("the one connection");

    let leg = dial_engine(&caller, engine.sip_addr(), "+15557770005", 41_840).await;
    let (code, leg) = final_answer(leg).await;
    assert_eq!(code, 200, "answered without the database");
    let stored = || async {
        sqlx::query_as::<_, (String,)>(&crate::store::numbered(
            "SELECT status FROM calls WHERE to_number = ?",
        ))
        .bind("+15557770005")
        .fetch_all(f.store.pool())
        .await
        .expect("read through the test's own pool")
    };
    assert!(stored().await.is_empty(), "not stored yet");
    leg.hangup();
    tokio::time::sleep(Duration::from_millis(300)).await;

    drop(held);
    engine.wait_idle().await;
    let written = tokio::time::Instant::now();
    loop {
        let rows = stored().await;
        if rows.first().is_some_and(|(status,)| status == "ended") {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(10),
            "stored and ended once the store answers: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(caller);
}

#[tokio::test]
async fn a_sender_outside_every_trunk_learns_nothing_of_our_numbers() {
    let f = fixture(41_700).await;
    let (caller, _incoming, caller_addr) = carrier().await;
    let elsewhere = trunk(&f.org, caller_addr, &["192.0.2.0/24"]);
    f.store.insert_trunk(&elsewhere).await.expect("trunk");
    let now = Utc::now();
    f.store
        .insert_number(&PhoneNumber {
            id: new_id("num"),
            org_id: f.org.clone(),
            number: "+15557770009".into(),
            trunk_id: elsewhere.id.clone(),
            agent_id: Some(f.agent.id.clone()),
            created_at: now,
            updated_at: now,
        })
        .await
        .expect("number");
    let engine_addr = f.engine.sip_addr();
    // Owned or not, the answer is the same 403: the source is checked first.
    for number in ["+15557770009", "+15550000000"] {
        let (code, _) = final_answer(dial_engine(&caller, engine_addr, number, 41_790).await).await;
        assert_eq!(code, 403, "{number}");
    }
}

#[tokio::test]
async fn a_test_route_answers_its_token_once_without_trunk_checks() {
    let f = fixture(41_400).await;
    let mut draft = f.agent.clone();
    draft.status = AgentStatus::Draft;
    f.store.update_agent(&draft).await.expect("agent to draft");
    let (caller, _incoming, _caller_addr) = carrier().await;
    let token = test_route::new_token("tcr_test");
    let created = f.engine.expect_test_call(
        token.clone(),
        route_to_agent(&f, "tcr_test"),
        Duration::from_secs(30),
    );
    let engine_addr = f.engine.sip_addr();
    let unknown = test_route::new_token("tcr_test");
    let (code, _) = final_answer(dial_engine(&caller, engine_addr, &unknown, 41_490).await).await;
    // The caller is in no trunk's networks: anything but a registered token is refused
    // before its number is looked at.
    assert_eq!(code, 403, "an unregistered token from outside every trunk");

    let (code, leg) = final_answer(dial_engine(&caller, engine_addr, &token, 41_490).await).await;
    assert_eq!(code, 200, "the registered token is answered");
    let call_id = tokio::time::timeout(Duration::from_secs(10), created)
        .await
        .expect("call id in time")
        .expect("call id sent");
    let (code, _) = final_answer(dial_engine(&caller, engine_addr, &token, 41_490).await).await;
    assert_eq!(code, 403, "a route is single use");

    leg.hangup();
    f.engine.wait_call_ended(&call_id).await;
    assert_eq!(f.engine.live_calls(), 0);
    let record = f.store.get_call_any(&call_id).await.expect("record");
    assert_eq!(record.agent_id, f.agent.id);
    assert_eq!(record.direction, CallDirection::Inbound);
    assert_eq!(record.from_number, "+15550100000");
    assert_eq!(record.to_number, "+15550100001");
    assert_eq!(record.status, CallStatus::Ended);
}

#[tokio::test]
async fn an_expired_test_route_refuses_its_token() {
    let f = fixture(41_500).await;
    let (caller, _incoming, _caller_addr) = carrier().await;
    let token = test_route::new_token("tcr_late");
    let created = f.engine.expect_test_call(
        token.clone(),
        route_to_agent(&f, "tcr_late"),
        Duration::from_millis(100),
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(10), created)
            .await
            .expect("expiry reported")
            .is_err(),
        "no call id for an expired route"
    );
    let mut leg = dial_engine(&caller, f.engine.sip_addr(), &token, 41_590).await;
    loop {
        match leg.next_event().await {
            Some(CallEvent::Failed { code, .. }) => {
                assert_eq!(
                    code, 403,
                    "an expired token is refused like any unknown number"
                );
                break;
            }
            Some(CallEvent::Answered { .. }) => panic!("an expired route answered"),
            Some(_) => {}
            None => panic!("no final response"),
        }
    }
}

/// What a recording looks like after `kill -9`: `frames` frames on disk, header sizes of 0.
fn unfinalized_recording(path: &std::path::Path, frames: usize) {
    let mut recorder =
        media::record::Recorder::create(path, media::codec::SampleRate::Hz8000).expect("create");
    for _ in 0..frames {
        recorder
            .write_frame(Some(&[1000; 160]), Some(&[-1000; 160]))
            .expect("frame");
    }
    recorder.finalize().expect("finalize");
    let mut bytes = std::fs::read(path).expect("read");
    let data = bytes
        .windows(4)
        .position(|w| w == b"data")
        .expect("data chunk");
    bytes[4..8].copy_from_slice(&0u32.to_le_bytes());
    bytes[data + 4..data + 8].copy_from_slice(&0u32.to_le_bytes());
    std::fs::write(path, bytes).expect("write");
}

#[tokio::test]
async fn recovery_ends_interrupted_calls_at_their_last_heartbeat_and_settles_them() {
    let (store, _dir) = temp_store().await;
    let key = store.create_key("acme", 100).await.expect("org");
    let org = store.org_for_key(&key).await.expect("lookup").expect("org");
    let recordings = tempfile::tempdir().expect("recordings dir");
    let webhooks = Webhooks::start(store.clone(), &Config::default());
    let admission = crate::store::Admission {
        reserve_cents: 2,
        max_live_calls: None,
    };
    let t0 = Utc::now() - chrono::Duration::seconds(600);
    let mut talking = crate::store::test_support::call(&org, "agt_1", CallDirection::Outbound, 0);
    talking.status = CallStatus::InProgress;
    talking.started_at = Some(t0);
    talking.answered_at = Some(t0 + chrono::Duration::seconds(1));
    let mut ringing = crate::store::test_support::call(&org, "agt_1", CallDirection::Outbound, 1);
    ringing.status = CallStatus::Ringing;
    ringing.started_at = Some(t0);
    for call in [&talking, &ringing] {
        assert_eq!(
            store
                .admit_call(call, admission, None)
                .await
                .expect("admit"),
            crate::store::CallAdmission::Admitted
        );
    }
    // The last heartbeat of the talking call, 74 s after its answer: then the crash.
    let last_seen = t0 + chrono::Duration::seconds(75);
    store
        .heartbeat_calls(std::slice::from_ref(&talking.id), last_seen)
        .await
        .expect("heartbeat");
    unfinalized_recording(&recordings.path().join(format!("{}.wav", talking.id)), 50);
    unfinalized_recording(&recordings.path().join(format!("{}.wav", ringing.id)), 0);

    recovery::recover(&store, &webhooks, recordings.path(), 2, "node-a")
        .await
        .expect("recovered");

    let ended = store.get_call_any(&talking.id).await.expect("call");
    assert_eq!(ended.status, CallStatus::Ended);
    assert_eq!(ended.end_reason.as_deref(), Some("service_restart"));
    assert_eq!(ended.ended_at, Some(last_seen));
    assert_eq!(ended.duration_seconds, Some(74.0));
    assert_eq!(
        ended.recording_url,
        Some(format!("/api/public/v1/calls/{}/recording", talking.id))
    );
    let wav = hound::WavReader::open(recordings.path().join(format!("{}.wav", talking.id)))
        .expect("a valid WAV");
    assert_eq!(wav.duration(), 50 * 160, "one second of audio, as written");

    let failed = store.get_call_any(&ringing.id).await.expect("call");
    assert_eq!(failed.status, CallStatus::Failed);
    assert_eq!(failed.duration_seconds, Some(0.0));
    assert_eq!(failed.recording_url, None);
    assert!(
        !recordings
            .path()
            .join(format!("{}.wav", ringing.id))
            .exists(),
        "a recording without audio is removed"
    );

    // Two started minutes charged; both holds released.
    let usage = store.org_usage(&org).await.expect("usage");
    assert_eq!(
        (usage.balance_cents, usage.reserved_cents, usage.live_calls),
        (96, 0, 0)
    );
    // Nothing is left for a second recovery to charge.
    recovery::recover(&store, &webhooks, recordings.path(), 2, "node-a")
        .await
        .expect("recovered again");
    assert_eq!(store.org_usage(&org).await.expect("usage"), usage);
    webhooks.stop();
}

#[tokio::test]
async fn a_call_the_balance_cannot_carry_into_its_next_minute_is_ended() {
    let f = fixture(41_900).await;
    let per_minute = f.engine.shared.per_minute_cents;
    let balance = f.store.balance_cents(&f.org).await.expect("balance");
    // Credit for exactly one minute: the call is admitted, holding it.
    f.store
        .add_credits(&f.org, per_minute - balance)
        .await
        .expect("credits");
    let call = outbound_call(&f, 10);
    let admission = crate::store::Admission {
        reserve_cents: billing::reservation_cents(per_minute),
        max_live_calls: None,
    };
    assert_eq!(
        f.store
            .admit_call(&call, admission, None)
            .await
            .expect("admit"),
        crate::store::CallAdmission::Admitted
    );
    let (_carrier, mut incoming, addr) = carrier().await;
    f.engine
        .place_call(call.clone(), f.agent.clone(), trunk(&f.org, addr, &[]))
        .await
        .expect("placed");
    let leg = incoming.recv().await.expect("INVITE reaches the carrier");
    let offer =
        SessionDescription::parse(leg.invite.sdp.as_deref().expect("offer")).expect("offer parses");
    let ours = [Codec::pcmu()];
    let reply = answer(
        &offer,
        "127.0.0.1".parse().expect("ip"),
        9,
        &ours,
        Direction::SendRecv,
        5,
        1,
    )
    .expect("answer");
    leg.call.answer(reply.sdp.to_string());
    let mut answered_at = None;
    for _ in 0..100 {
        let record = f.store.get_call_any(&call.id).await.expect("call");
        if let Some(at) = record.answered_at {
            answered_at = Some(at);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let answered_at = answered_at.expect("the answer is recorded");

    // 30 s in, the first minute still covers the next heartbeats: nothing happens.
    billing::beat(
        &f.engine.shared,
        answered_at + chrono::Duration::seconds(30),
    )
    .await;
    assert_eq!(f.engine.live_calls(), 1, "the call goes on");
    // Just before the second minute: the hold cannot grow, the call is ended.
    billing::beat(
        &f.engine.shared,
        answered_at + chrono::Duration::seconds(58),
    )
    .await;
    let record = settle(&f, &call.id).await;
    assert_eq!(record.status, CallStatus::Ended);
    assert_eq!(record.outcome, Some(CallOutcome::Error));
    assert_eq!(record.end_reason.as_deref(), Some("insufficient_credits"));
    assert!(
        record
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("balance")),
        "{record:?}"
    );
    let usage = f.store.org_usage(&f.org).await.expect("usage");
    assert_eq!(usage.reserved_cents, 0, "the hold is released");
    assert_eq!(usage.balance_cents, 0, "one minute charged");
}
