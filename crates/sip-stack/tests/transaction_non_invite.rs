//! Guards the non-INVITE transactions (RFC 3261 17.1.2 / 17.2.2) end to end between a
//! client and a server table: Timer E backoff capped at T2 (and at T2 in Proceeding), Timer F
//! at 64*T1, Timer K = T4 and Timer J = 64*T1 over UDP and both 0 over TCP, absorption of
//! retransmitted requests with the last response re-sent, the guard against a silent TU,
//! stray responses passed up, and the tables emptying at the end.

#[path = "transaction_harness.rs"]
mod harness;

use harness::*;
use sip_stack::message::{response_for, Method, StatusCode, TransportKind};
use sip_stack::transaction::{Timer, TransactionError, TransactionEvent, TransactionState};

#[test]
fn timer_e_backoff_capped_at_t2_until_timer_f() {
    let mut h = Harness::new(TransportKind::Udp);
    h.blackhole(Direction::ToServer);
    let options = h.request(Method::Options);
    h.client_send(options);
    h.run_until_idle(secs(120));
    let mut expected = vec![ms(0), ms(500), ms(1500), ms(3500)];
    let mut at = ms(7500);
    while at < secs(32) {
        expected.push(at);
        at += secs(4);
    }
    assert_eq!(
        h.sent_times(Direction::ToServer, is_request(Method::Options)),
        expected
    );
    assert_eq!(timeouts(&h.client_events), vec![(secs(32), Timer::F)]);
    assert!(h.both_empty());
}

#[test]
fn timer_e_runs_at_t2_in_proceeding() {
    let mut h = Harness::new(TransportKind::Udp);
    let options = h.request(Method::Options);
    let key = h.client_send(options);
    let (server_key, request) = h.server_request(0);
    h.server_respond(&server_key, &request, 100);
    assert_eq!(h.client.state(&key), Some(TransactionState::Proceeding));
    h.advance_by(ms(9000));
    // First retransmission still at T1 (armed in Trying), then every T2.
    assert_eq!(
        h.sent_times(Direction::ToServer, is_request(Method::Options)),
        vec![ms(0), ms(500), ms(4500), ms(8500)]
    );
    // Each retransmission in Proceeding gets the last provisional response again.
    assert_eq!(h.sent_times(Direction::ToClient, is_response(100)).len(), 4);
    h.server_respond(&server_key, &request, 200);
    h.run_until_idle(secs(120));
    assert!(h.both_empty());
}

#[test]
fn timer_f_over_tcp_without_retransmission() {
    let mut h = Harness::new(TransportKind::Tcp);
    h.blackhole(Direction::ToServer);
    let bye = h.request(Method::Bye);
    h.client_send(bye);
    h.run_until_idle(secs(120));
    assert_eq!(
        h.sent_times(Direction::ToServer, is_request(Method::Bye)),
        vec![ms(0)]
    );
    assert_eq!(timeouts(&h.client_events), vec![(secs(32), Timer::F)]);
    assert!(h.both_empty());
}

#[test]
fn timers_k_and_j_over_udp() {
    let mut h = Harness::new(TransportKind::Udp);
    let options = h.request(Method::Options);
    let key = h.client_send(options);
    let (server_key, request) = h.server_request(0);
    h.server_respond(&server_key, &request, 200);
    assert_eq!(h.client.state(&key), Some(TransactionState::Completed));
    assert_eq!(
        h.server.state(&server_key),
        Some(TransactionState::Completed)
    );
    h.run_until(secs(60), |h| h.client.is_empty());
    assert_eq!(h.elapsed(), secs(5), "Timer K = T4");
    h.run_until(secs(60), |h| h.server.is_empty());
    assert_eq!(h.elapsed(), secs(32), "Timer J = 64*T1");
    assert!(timeouts(&h.client_events).is_empty());
}

#[test]
fn timers_k_and_j_are_zero_over_tcp() {
    let mut h = Harness::new(TransportKind::Tcp);
    let options = h.request(Method::Options);
    h.client_send(options);
    let (server_key, request) = h.server_request(0);
    h.server_respond(&server_key, &request, 404);
    assert_eq!(client_responses(&h), vec![(404, false)]);
    assert!(h.both_empty());
}

#[test]
fn lost_response_is_recovered_and_retransmission_absorbed() {
    let mut h = Harness::new(TransportKind::Udp);
    h.drop_next(Direction::ToClient, 1, is_response(200));
    let register = h.request(Method::Register);
    let key = h.client_send(register);
    let (server_key, request) = h.server_request(0);
    h.server_respond(&server_key, &request, 200);
    assert_eq!(h.client.state(&key), Some(TransactionState::Trying));
    h.advance();
    assert_eq!(h.elapsed(), ms(500));
    assert_eq!(
        h.sent_times(Direction::ToClient, is_response(200)),
        vec![ms(0), ms(500)]
    );
    assert_eq!(client_responses(&h), vec![(200, false)]);
    let requests = h
        .server_events
        .iter()
        .filter(|(_, event)| matches!(event, TransactionEvent::Request { .. }))
        .count();
    assert_eq!(
        requests, 1,
        "the retransmission did not create a new transaction"
    );
    h.run_until_idle(secs(120));
    assert!(h.both_empty());
}

#[test]
fn silent_tu_is_given_up_after_64_t1() {
    let mut h = Harness::new(TransportKind::Udp);
    let options = h.request(Method::Options);
    h.client_send(options);
    h.run_until_idle(secs(120));
    assert_eq!(timeouts(&h.server_events), vec![(secs(32), Timer::TuGuard)]);
    assert_eq!(timeouts(&h.client_events), vec![(secs(32), Timer::F)]);
    assert!(h.both_empty());
}

#[test]
fn responses_after_the_final_are_refused_and_strays_passed_up() {
    let mut h = Harness::new(TransportKind::Udp);
    let options = h.request(Method::Options);
    h.client_send(options);
    let (server_key, request) = h.server_request(0);
    h.server_respond(&server_key, &request, 200);
    let again = response_for(&request, StatusCode::OK, Some("x"));
    assert!(matches!(
        h.server.send_response(h.now, &server_key, again.clone()),
        Err(TransactionError::InvalidState {
            state: TransactionState::Completed,
            ..
        })
    ));
    h.run_until_idle(secs(120));
    assert!(h.both_empty());
    assert!(matches!(
        h.server.send_response(h.now, &server_key, again.clone()),
        Err(TransactionError::UnknownTransaction(_))
    ));
    let from = h.peer(SERVER_ADDR);
    h.client
        .handle_incoming(h.now, again.into(), from)
        .expect("a stray response is not an error");
    assert!(matches!(
        h.client.poll_output(),
        Some(sip_stack::transaction::Output::Event(
            TransactionEvent::StrayResponse { .. }
        ))
    ));
}
