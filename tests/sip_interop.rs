//! SIP interop: our user agent against SIPp, a real and independent SIP peer.
//!
//! Guards: SIPp calling our UAS (100 calls over UDP and over TCP); our UAC
//! calling SIPp UASes that answer, answer 486, ring forever (our CANCEL,
//! their 487), challenge with 407; a SIPp UAC that ignores our first 200 OK
//! so that we must retransmit it; a session timer refresh that SIPp checks;
//! a SIPp UAC sending a method we do not implement outside and inside a call
//! (501 with Allow each time, the call and the TCP connection carry on).
//! SIPp runs on loopback ports chosen per test; scenario files are in
//! `tests/sipp/`.

#[path = "support/sipp.rs"]
mod sipp;

use std::net::SocketAddr;
use std::time::Duration;

use sip_stack::auth::{Authorization, Credentials};
use sip_stack::message::TransportKind;
use sip_stack::sdp::{self, Codec, Direction, SessionDescription};
use sip_stack::session_timer::SessionTimerConfig;
use sip_stack::ua::{CallEvent, IncomingCalls, OutgoingCall, Party, UaConfig, UserAgent};

const STEP: Duration = Duration::from_secs(20);

fn config(transport: sipp::Transport) -> UaConfig {
    let mut config = UaConfig::default();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    config.transport.udp = Some(any);
    config.transport.tcp = matches!(transport, sipp::Transport::Tcp).then_some(any);
    config
}

fn offer(port: u16) -> String {
    sdp::build_offer(
        [127, 0, 0, 1].into(),
        port,
        &Codec::default_set(),
        Direction::SendRecv,
        1,
        1,
    )
    .to_string()
}

/// Answers every incoming call with 180 then 200 OK + an SDP answer, and
/// reports each call's last event on the returned channel.
fn answer_everything(
    mut incoming: IncomingCalls,
) -> tokio::sync::mpsc::UnboundedReceiver<CallEvent> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(mut call) = incoming.recv().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let answer = call
                    .invite
                    .sdp
                    .as_deref()
                    .and_then(|offer| SessionDescription::parse(offer).ok())
                    .and_then(|offer| {
                        sdp::answer(
                            &offer,
                            [127, 0, 0, 1].into(),
                            40_000,
                            &Codec::default_set(),
                            Direction::SendRecv,
                            7,
                            1,
                        )
                        .ok()
                    });
                match answer {
                    Some(answer) => {
                        call.call.ring(None);
                        call.call.answer(answer.sdp.to_string());
                    }
                    None => call.call.reject(488),
                }
                while let Some(event) = call.call.next_event().await {
                    if event.is_terminal() {
                        let _ = tx.send(event);
                        break;
                    }
                }
            });
        }
    });
    rx
}

/// The next call reported by [`answer_everything`] ended with the peer's BYE.
async fn expect_remote_hangup(ended: &mut tokio::sync::mpsc::UnboundedReceiver<CallEvent>) {
    let event = tokio::time::timeout(STEP, ended.recv())
        .await
        .expect("the call ends in time")
        .expect("event");
    assert!(
        matches!(
            event,
            CallEvent::Ended {
                by: Party::Remote,
                ..
            }
        ),
        "{event:?}"
    );
}

fn transport_kind(transport: sipp::Transport) -> TransportKind {
    match transport {
        sipp::Transport::Udp => TransportKind::Udp,
        sipp::Transport::Tcp => TransportKind::Tcp,
    }
}

async fn sipp_blocking(
    run: impl FnOnce() -> Result<sipp::SippOutcome, sipp::SippError> + Send + 'static,
) -> sipp::SippOutcome {
    tokio::task::spawn_blocking(run)
        .await
        .expect("SIPp runner thread")
        .expect("SIPp ran")
}

async fn sipp_calls_our_uas(transport: sipp::Transport, calls: u64) {
    sipp::require_sipp();
    let (ua, incoming) = UserAgent::start(config(transport))
        .await
        .expect("UA starts");
    let kind = transport_kind(transport);
    let target = ua.local_addr(kind).expect("bound");
    let mut ended = answer_everything(incoming);
    let outcome = sipp_blocking(move || {
        sipp::Sipp::client(sipp::Scenario::file("uac_basic.xml"), target)
            .transport(transport)
            .service("+15551234567")
            .calls(calls)
            .rate(50.0, Duration::from_secs(1))
            .hold(Duration::from_millis(100))
            .run()
    })
    .await;
    outcome.assert_calls_succeeded(calls);
    for _ in 0..calls {
        expect_remote_hangup(&mut ended).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_uac_places_100_calls_to_our_uas_over_udp() {
    sipp_calls_our_uas(sipp::Transport::Udp, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_uac_places_100_calls_to_our_uas_over_tcp() {
    sipp_calls_our_uas(sipp::Transport::Tcp, 100).await;
}

async fn call(
    ua: &UserAgent,
    target: SocketAddr,
    transport: sipp::Transport,
) -> sip_stack::ua::CallHandle {
    let kind = transport_kind(transport);
    let local = ua.local_addr(kind).expect("bound");
    let uri = format!("sip:+15551234567@{target}");
    let request = OutgoingCall::to(&uri, &format!("sip:+15550001111@{local}"))
        .await
        .expect("target")
        .via(kind, target)
        .with_sdp(offer(40_002));
    ua.invite(request).await.expect("INVITE placed")
}

async fn next(call: &mut sip_stack::ua::CallHandle) -> CallEvent {
    tokio::time::timeout(STEP, call.next_event())
        .await
        .expect("an event in time")
        .expect("call still reporting")
}

async fn until_answered(call: &mut sip_stack::ua::CallHandle) -> Vec<CallEvent> {
    let mut seen = Vec::new();
    loop {
        let event = next(call).await;
        let done = matches!(
            event,
            CallEvent::Answered { .. } | CallEvent::Failed { .. } | CallEvent::Ended { .. }
        );
        seen.push(event);
        if done {
            return seen;
        }
    }
}

async fn our_uac_call_answered(transport: sipp::Transport) {
    let uas = sipp::one_call_server("uas_answer.xml", transport, |s| s).await;
    let (ua, _incoming) = UserAgent::start(config(transport))
        .await
        .expect("UA starts");
    let mut handle = call(&ua, uas.address(), transport).await;
    let events = until_answered(&mut handle).await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CallEvent::Ringing { code: 180, .. })),
        "{events:?}"
    );
    let Some(CallEvent::Answered { sdp: Some(answer) }) = events.last() else {
        panic!("not answered: {events:?}");
    };
    SessionDescription::parse(answer).expect("SIPp's SDP answer parses");
    handle.hangup();
    let end = next(&mut handle).await;
    assert!(
        matches!(
            end,
            CallEvent::Ended {
                by: Party::Local,
                ..
            }
        ),
        "{end:?}"
    );
    sipp::finish(uas).await.assert_success();
}

#[tokio::test]
async fn our_uac_call_answered_by_sipp_over_udp() {
    our_uac_call_answered(sipp::Transport::Udp).await;
}

#[tokio::test]
async fn our_uac_call_answered_by_sipp_over_tcp() {
    our_uac_call_answered(sipp::Transport::Tcp).await;
}

#[tokio::test]
async fn our_uac_call_to_a_busy_sipp_fails_with_486() {
    let transport = sipp::Transport::Udp;
    let uas = sipp::one_call_server("uas_busy.xml", transport, |s| s).await;
    let (ua, _incoming) = UserAgent::start(config(transport))
        .await
        .expect("UA starts");
    let mut handle = call(&ua, uas.address(), transport).await;
    let events = until_answered(&mut handle).await;
    assert!(
        matches!(events.last(), Some(CallEvent::Failed { code: 486, .. })),
        "{events:?}"
    );
    sipp::finish(uas).await.assert_success();
}

#[tokio::test]
async fn our_cancel_of_a_call_ringing_forever_gets_487() {
    let transport = sipp::Transport::Udp;
    let uas = sipp::one_call_server("uas_ring_forever.xml", transport, |s| s).await;
    let (ua, _incoming) = UserAgent::start(config(transport))
        .await
        .expect("UA starts");
    let mut handle = call(&ua, uas.address(), transport).await;
    loop {
        match next(&mut handle).await {
            CallEvent::Ringing { .. } => break,
            CallEvent::Trying => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    handle.cancel();
    let answered = next(&mut handle).await;
    assert_eq!(answered, CallEvent::CancelAnswered { code: 200 });
    let end = next(&mut handle).await;
    assert!(
        matches!(end, CallEvent::Failed { code: 487, .. }),
        "{end:?}"
    );
    sipp::finish(uas).await.assert_success();
}

#[tokio::test]
async fn our_uac_answers_a_407_challenge_with_digest_credentials() {
    let transport = sipp::Transport::Udp;
    let uas = sipp::one_call_server("uas_auth_407.xml", transport, |s| s).await;
    let (ua, _incoming) = UserAgent::start(config(transport))
        .await
        .expect("UA starts");
    let kind = TransportKind::Udp;
    let local = ua.local_addr(kind).expect("bound");
    let target = uas.address();
    let request = OutgoingCall::to(
        &format!("sip:+15551234567@{target}"),
        &format!("sip:dialcore@{local}"),
    )
    .await
    .expect("target")
    .with_sdp(offer(40_004))
    .with_credentials(Credentials {
        username: "dialcore".into(),
        password: "secret".into(),
    });
    let mut handle = ua.invite(request).await.expect("INVITE");
    let events = until_answered(&mut handle).await;
    assert!(
        matches!(events.last(), Some(CallEvent::Answered { .. })),
        "{events:?}"
    );
    handle.hangup();
    next(&mut handle).await;
    let outcome = sipp::finish(uas).await;
    outcome.assert_success();
    // SIPp cannot verify Proxy-Authorization itself: recompute the digest here.
    let headers = outcome.proxy_authorizations();
    assert_eq!(headers.len(), 1, "{}", outcome.diagnostics());
    let authorization: Authorization = headers[0].parse().expect("Proxy-Authorization parses");
    assert_eq!(authorization.username, "dialcore");
    assert_eq!(
        authorization.response,
        authorization.expected_response("secret", "INVITE"),
        "digest computed with the right password"
    );
}

async fn our_uas_retransmits_a_200_ok_that_sipp_ignores(transport: sipp::Transport) {
    sipp::require_sipp();
    let (ua, incoming) = UserAgent::start(config(transport))
        .await
        .expect("UA starts");
    let kind = transport_kind(transport);
    let target = ua.local_addr(kind).expect("bound");
    let mut ended = answer_everything(incoming);
    let outcome = sipp_blocking(move || {
        let sipp = sipp::Sipp::client(sipp::Scenario::file("uac_drop_200.xml"), target)
            .transport(transport)
            .service("+15551234567")
            .calls(1)
            .hold(Duration::from_millis(200));
        // Over UDP SIPp would swallow the identical 200 OK as a retransmission.
        match transport {
            sipp::Transport::Udp => sipp.no_retransmissions(),
            sipp::Transport::Tcp => sipp,
        }
        .run()
    })
    .await;
    outcome.assert_success();
    expect_remote_hangup(&mut ended).await;
}

#[tokio::test]
async fn our_uas_retransmits_a_200_ok_that_sipp_ignores_over_udp() {
    our_uas_retransmits_a_200_ok_that_sipp_ignores(sipp::Transport::Udp).await;
}

/// RFC 3261 13.3.1.4: the 2xx is retransmitted end to end even over TCP.
#[tokio::test]
async fn our_uas_retransmits_a_200_ok_that_sipp_ignores_over_tcp() {
    our_uas_retransmits_a_200_ok_that_sipp_ignores(sipp::Transport::Tcp).await;
}

async fn sipp_sends_an_unknown_method(transport: sipp::Transport) {
    sipp::require_sipp();
    let (ua, incoming) = UserAgent::start(config(transport))
        .await
        .expect("UA starts");
    let target = ua.local_addr(transport_kind(transport)).expect("bound");
    let mut ended = answer_everything(incoming);
    let outcome = sipp_blocking(move || {
        sipp::Sipp::client(sipp::Scenario::file("uac_unknown_method.xml"), target)
            .transport(transport)
            .service("+15551234567")
            .calls(1)
            .run()
    })
    .await;
    outcome.assert_success();
    expect_remote_hangup(&mut ended).await;
}

/// RFC 3261 8.2.1 / RFC 4475 3.1.1.2: 501 with Allow outside and inside a dialog.
#[tokio::test]
async fn sipp_unknown_method_gets_501_outside_and_inside_a_call_over_udp() {
    sipp_sends_an_unknown_method(sipp::Transport::Udp).await;
}

/// Over TCP the 501s go back on SIPp's one connection, and the BYE after them is answered.
#[tokio::test]
async fn sipp_unknown_method_gets_501_outside_and_inside_a_call_over_tcp() {
    sipp_sends_an_unknown_method(sipp::Transport::Tcp).await;
}

#[tokio::test]
async fn our_uac_refreshes_a_short_session_timer_that_sipp_requires() {
    let transport = sipp::Transport::Udp;
    let uas = sipp::one_call_server("uas_session_timer.xml", transport, |s| {
        s.set("session_expires", "4").set("min_se", "2")
    })
    .await;
    let mut config = config(transport);
    config.session_timer = SessionTimerConfig {
        session_expires: 4,
        min_se: 2,
    };
    let (ua, _incoming) = UserAgent::start(config).await.expect("UA starts");
    let mut handle = call(&ua, uas.address(), transport).await;
    let events = until_answered(&mut handle).await;
    assert!(
        matches!(events.last(), Some(CallEvent::Answered { .. })),
        "{events:?}"
    );
    // We refresh at half the interval (2 s); SIPp fails the call if no refresh comes.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    handle.hangup();
    let end = next(&mut handle).await;
    assert!(
        matches!(
            end,
            CallEvent::Ended {
                by: Party::Local,
                ..
            }
        ),
        "{end:?}"
    );
    sipp::finish(uas).await.assert_success();
}
