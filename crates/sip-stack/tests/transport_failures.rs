//! A trunk that cannot be reached over TCP fails the call at once.
//!
//! Guards RFC 3261 17.1.4 in the user agent: when the TCP connection to the
//! far end is refused, or breaks with a reset while the INVITE waits for its
//! answer, the call fails with the transport's OS error
//! ([`FailureCause::Transport`]) instead of waiting 64*T1 for Timer B
//! ([`FailureCause::NoResponse`]). Real sockets on loopback.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use sip_stack::message::TransportKind;
use sip_stack::ua::{CallEvent, CallHandle, FailureCause, OutgoingCall, UaConfig, UserAgent};
use tokio::io::AsyncReadExt;

/// Far below Timer B (32 s): only a transport failure ends the call by then.
const WELL_BEFORE_TIMER_B: Duration = Duration::from_secs(20);

async fn user_agent() -> UserAgent {
    let mut config = UaConfig::default();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    config.transport.udp = Some(any);
    config.transport.tcp = Some(any);
    let (ua, _incoming) = UserAgent::start(config).await.expect("UA starts");
    ua
}

async fn call_over_tcp(ua: &UserAgent, to: SocketAddr) -> CallHandle {
    let outgoing = OutgoingCall::to(
        &format!("sip:+15551234567@{to};transport=tcp"),
        "sip:+15550001111@127.0.0.1",
    )
    .await
    .expect("target")
    .via(TransportKind::Tcp, to);
    ua.invite(outgoing).await.expect("INVITE queued")
}

/// The call's last event, which must come before Timer B could fire.
async fn end_of(mut call: CallHandle) -> CallEvent {
    tokio::time::timeout(WELL_BEFORE_TIMER_B, async move {
        loop {
            match call.next_event().await {
                Some(event) if event.is_terminal() => return event,
                Some(_) => {}
                None => panic!("events ended without a terminal one"),
            }
        }
    })
    .await
    .expect("the call failed before Timer B")
}

fn transport_failure(event: &CallEvent) -> (u16, ErrorKind, String) {
    match event {
        CallEvent::Failed {
            code,
            cause: FailureCause::Transport(failure),
            ..
        } => (*code, failure.kind, failure.message.clone()),
        other => panic!("expected a transport failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refused_tcp_connection_fails_the_call_with_the_os_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a port nobody listens on");
    let ua = user_agent().await;
    let end = end_of(call_over_tcp(&ua, closed).await).await;
    let (code, kind, message) = transport_failure(&end);
    assert_eq!(code, 503, "RFC 3261 8.1.3.1: a transport error is a 503");
    assert_eq!(kind, ErrorKind::ConnectionRefused, "{message}");
    assert!(!message.is_empty());
}

#[tokio::test]
async fn a_tcp_connection_reset_while_the_invite_waits_fails_the_call() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let trunk = listener.local_addr().expect("bound");
    let ua = user_agent().await;
    let call = call_over_tcp(&ua, trunk).await;
    let (mut stream, _) = listener.accept().await.expect("the UA connects");
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buffer).await.expect("read");
        assert!(n > 0, "closed before the INVITE arrived");
        received.extend_from_slice(&buffer[..n]);
    }
    assert!(received.starts_with(b"INVITE "), "the INVITE arrived");
    // Close with RST instead of FIN.
    stream.set_zero_linger().expect("linger 0");
    drop(stream);
    let (code, kind, message) = transport_failure(&end_of(call).await);
    assert_eq!(code, 503);
    assert_eq!(kind, ErrorKind::ConnectionReset, "{message}");
}
