//! Guards the INVITE transactions (RFC 3261 17.1.1 / 17.2.1 with RFC 6026) end to end
//! between a client and a server table: Timer A backoff and Timer B, Timer D (32 s over UDP,
//! 0 over TCP), Timer G backoff capped at T2 and Timer H, Timer I, the automatic 100 Trying,
//! absorption of retransmitted INVITEs with the last response re-sent, the 2xx retransmitted
//! until its ACK, the ACK timeout, a lost final response recovered, CANCEL matching, and the
//! tables emptying at the end.

#[path = "transaction_harness.rs"]
mod harness;

use harness::*;
use sip_stack::message::{cancel_for, Method, SipMessage, TransportKind};
use sip_stack::transaction::{Timer, TransactionEvent, TransactionState};

#[test]
fn timer_a_doubles_until_timer_b_over_udp() {
    let mut h = Harness::new(TransportKind::Udp);
    h.blackhole(Direction::ToServer);
    let invite = h.request(Method::Invite);
    let key = h.client_send(invite);
    assert_eq!(h.client.state(&key), Some(TransactionState::Calling));
    h.run_until_idle(secs(120));
    // RFC 3261 17.1.1.2: Timer A starts at T1 and doubles without cap until Timer B.
    assert_eq!(
        h.sent_times(Direction::ToServer, is_request(Method::Invite)),
        vec![
            ms(0),
            ms(500),
            ms(1500),
            ms(3500),
            ms(7500),
            ms(15500),
            ms(31500)
        ]
    );
    assert_eq!(timeouts(&h.client_events), vec![(secs(32), Timer::B)]);
    assert!(h.both_empty());
}

#[test]
fn no_retransmission_over_tcp_and_timer_b() {
    let mut h = Harness::new(TransportKind::Tcp);
    h.blackhole(Direction::ToServer);
    let invite = h.request(Method::Invite);
    h.client_send(invite);
    h.run_until_idle(secs(120));
    assert_eq!(
        h.sent_times(Direction::ToServer, is_request(Method::Invite)),
        vec![ms(0)]
    );
    assert_eq!(timeouts(&h.client_events), vec![(secs(32), Timer::B)]);
    assert!(h.both_empty());
}

#[test]
fn automatic_trying_then_non_2xx_with_ack_and_timers_d_and_i() {
    let mut h = Harness::new(TransportKind::Udp);
    let invite = h.request(Method::Invite);
    let client_key = h.client_send(invite);
    let (key, request) = h.server_request(0);
    h.advance();
    assert_eq!(h.elapsed(), ms(200));
    assert_eq!(
        h.sent_times(Direction::ToClient, is_response(100)),
        vec![ms(200)]
    );
    assert_eq!(
        h.client.state(&client_key),
        Some(TransactionState::Proceeding)
    );
    h.advance_by(ms(800));
    h.server_respond(&key, &request, 486);
    // The client transaction ACKs the 486 itself; the server is Confirmed.
    assert_eq!(
        h.sent_times(Direction::ToServer, is_request(Method::Ack)),
        vec![secs(1)]
    );
    assert_eq!(h.server.state(&key), Some(TransactionState::Confirmed));
    assert_eq!(
        h.client.state(&client_key),
        Some(TransactionState::Completed)
    );
    assert_eq!(client_responses(&h), vec![(100, false), (486, false)]);
    h.run_until(secs(60), |h| h.server.is_empty());
    assert_eq!(h.elapsed(), secs(1) + secs(5), "Timer I = T4");
    h.run_until(secs(60), |h| h.client.is_empty());
    assert_eq!(h.elapsed(), secs(1) + secs(32), "Timer D = 32 s over UDP");
    assert!(timeouts(&h.client_events).is_empty() && timeouts(&h.server_events).is_empty());
}

#[test]
fn timers_d_and_i_are_zero_over_tcp() {
    let mut h = Harness::new(TransportKind::Tcp);
    let invite = h.request(Method::Invite);
    h.client_send(invite);
    let (key, request) = h.server_request(0);
    h.server_respond(&key, &request, 603);
    assert_eq!(
        h.sent_times(Direction::ToServer, is_request(Method::Ack)),
        vec![ms(0)]
    );
    assert!(h.both_empty(), "no Timer D or I over a reliable transport");
}

#[test]
fn timer_g_backoff_capped_at_t2_until_timer_h_when_acks_are_lost() {
    let mut h = Harness::new(TransportKind::Udp);
    h.drop_next(Direction::ToServer, usize::MAX, is_request(Method::Ack));
    let invite = h.request(Method::Invite);
    h.client_send(invite);
    let (key, request) = h.server_request(0);
    h.server_respond(&key, &request, 486);
    h.run_until_idle(secs(120));
    assert_eq!(
        h.sent_times(Direction::ToClient, is_response(486)),
        vec![
            ms(0),
            ms(500),
            ms(1500),
            ms(3500),
            ms(7500),
            ms(11500),
            ms(15500),
            ms(19500),
            ms(23500),
            ms(27500),
            ms(31500)
        ]
    );
    assert_eq!(timeouts(&h.server_events), vec![(secs(32), Timer::H)]);
    // Every retransmitted 486 is re-ACKed by the client (Completed) and not passed up again.
    assert_eq!(
        h.sent_times(Direction::ToServer, is_request(Method::Ack))
            .len(),
        11
    );
    assert_eq!(client_responses(&h), vec![(486, false)]);
    assert!(h.both_empty());
}

#[test]
fn retransmitted_invite_is_absorbed_and_last_response_resent() {
    let mut h = Harness::new(TransportKind::Udp);
    h.drop_next(Direction::ToClient, 1, is_response(180));
    let invite = h.request(Method::Invite);
    h.client_send(invite);
    let (key, request) = h.server_request(0);
    h.server_respond(&key, &request, 180);
    // The client retransmits at T1; the server re-sends the 180 instead of a new transaction.
    h.advance();
    assert_eq!(h.elapsed(), ms(500));
    assert_eq!(
        h.sent_times(Direction::ToServer, is_request(Method::Invite)),
        vec![ms(0), ms(500)]
    );
    assert_eq!(
        h.sent_times(Direction::ToClient, is_response(180)),
        vec![ms(0), ms(500)]
    );
    let requests = h
        .server_events
        .iter()
        .filter(|(_, event)| matches!(event, TransactionEvent::Request { .. }))
        .count();
    assert_eq!(requests, 1);
    assert!(h
        .sent_times(Direction::ToClient, is_response(100))
        .is_empty());
    h.server_respond(&key, &request, 480);
    h.run_until_idle(secs(60));
    assert!(h.both_empty());
}

#[test]
fn two_hundred_is_retransmitted_until_the_ack_and_both_sides_wait_64_t1() {
    let mut h = Harness::new(TransportKind::Udp);
    let invite = h.request(Method::Invite);
    let client_key = h.client_send(invite.clone());
    let (key, request) = h.server_request(0);
    h.server_respond(&key, &request, 180);
    h.server_respond(&key, &request, 200);
    assert_eq!(h.server.state(&key), Some(TransactionState::Accepted));
    assert_eq!(
        h.client.state(&client_key),
        Some(TransactionState::Accepted)
    );
    // The TU ACKs late, after two retransmissions of the 200.
    h.advance_by(ms(2000));
    assert_eq!(
        h.sent_times(Direction::ToClient, is_response(200)),
        vec![ms(0), ms(500), ms(1500)]
    );
    assert_eq!(
        client_responses(&h),
        vec![(180, false), (200, false), (200, true), (200, true)]
    );
    let ok = match &h.wire.last().expect("the 200 was sent").message {
        SipMessage::Response(response) => response.clone(),
        SipMessage::Request(_) => panic!("last message is the 200"),
    };
    let ack = ack_for_2xx(&invite, &ok);
    h.client_send(ack);
    let acks: Vec<_> = h
        .server_events
        .iter()
        .filter(
            |(_, event)| matches!(event, TransactionEvent::Ack { key: acked, .. } if *acked == key),
        )
        .collect();
    assert_eq!(acks.len(), 1);
    h.run_until_idle(secs(120));
    assert_eq!(
        h.sent_times(Direction::ToClient, is_response(200)).len(),
        3,
        "no retransmission after the ACK"
    );
    assert!(h
        .server_events
        .iter()
        .all(|(_, event)| !matches!(event, TransactionEvent::AckTimeout { .. })));
    // Timer L and Timer M are both 64*T1 from the 200.
    let terminated: Vec<_> = h
        .client_events
        .iter()
        .chain(h.server_events.iter())
        .filter(|(_, event)| matches!(event, TransactionEvent::Terminated { .. }))
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(terminated, vec![secs(32), secs(32)]);
    assert!(h.both_empty());
}

#[test]
fn unacknowledged_two_hundred_raises_ack_timeout() {
    let mut h = Harness::new(TransportKind::Udp);
    let invite = h.request(Method::Invite);
    h.client_send(invite);
    let (key, request) = h.server_request(0);
    h.server_respond(&key, &request, 200);
    h.run_until_idle(secs(120));
    let times = h.sent_times(Direction::ToClient, is_response(200));
    assert_eq!(
        &times[..6],
        &[ms(0), ms(500), ms(1500), ms(3500), ms(7500), ms(11500)]
    );
    assert!(
        times.windows(2).all(|pair| pair[1] - pair[0] <= secs(4)),
        "capped at T2"
    );
    let ack_timeouts: Vec<_> = h
        .server_events
        .iter()
        .filter(|(_, event)| matches!(event, TransactionEvent::AckTimeout { key: k } if *k == key))
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(ack_timeouts, vec![secs(32)]);
    assert!(h.both_empty());
}

#[test]
fn lost_final_response_is_recovered_by_retransmission() {
    let mut h = Harness::new(TransportKind::Udp);
    h.drop_next(Direction::ToClient, 2, is_response(200));
    let invite = h.request(Method::Invite);
    let client_key = h.client_send(invite);
    let (key, request) = h.server_request(0);
    h.server_respond(&key, &request, 200);
    assert_eq!(h.client.state(&client_key), Some(TransactionState::Calling));
    h.run_until(secs(10), |h| {
        h.client.state(&client_key) == Some(TransactionState::Accepted)
    });
    assert_eq!(h.elapsed(), ms(1500), "third copy of the 200 arrives");
    assert_eq!(client_responses(&h), vec![(200, false)]);
    // The server absorbed the INVITE retransmissions sent meanwhile (Timer A at 0.5 s and
    // 1.5 s, the latter just before the third 200 arrived).
    assert_eq!(
        h.sent_times(Direction::ToServer, is_request(Method::Invite)),
        vec![ms(0), ms(500), ms(1500)]
    );
    let requests = h
        .server_events
        .iter()
        .filter(|(_, event)| matches!(event, TransactionEvent::Request { .. }))
        .count();
    assert_eq!(requests, 1);
    h.run_until_idle(secs(120));
    assert!(h.both_empty());
}

#[test]
fn cancel_finds_its_invite_and_everything_terminates() {
    let mut h = Harness::new(TransportKind::Udp);
    let invite = h.request(Method::Invite);
    let invite_key = h.client_send(invite.clone());
    let (server_invite, invite_request) = h.server_request(0);
    h.server_respond(&server_invite, &invite_request, 180);
    let cancel = cancel_for(&invite).expect("cancel of a valid INVITE");
    let cancel_key = h.client_send(cancel);
    assert_ne!(cancel_key, invite_key);
    let (server_cancel, cancel_request) = h.server_request(1);
    assert_eq!(cancel_request.method, Method::Cancel);
    assert_eq!(
        h.server.cancel_target(&cancel_request),
        Some(server_invite.clone())
    );
    h.server_respond(&server_cancel, &cancel_request, 200);
    h.server_respond(&server_invite, &invite_request, 487);
    assert_eq!(
        client_responses(&h),
        vec![(180, false), (200, false), (487, false)]
    );
    assert_eq!(
        h.sent_times(Direction::ToServer, is_request(Method::Ack)),
        vec![ms(0)]
    );
    assert_eq!(
        h.server.state(&server_invite),
        Some(TransactionState::Confirmed)
    );
    h.run_until_idle(secs(120));
    assert!(h.both_empty());
    // A CANCEL for nothing finds nothing.
    assert_eq!(h.server.cancel_target(&cancel_request), None);
}
