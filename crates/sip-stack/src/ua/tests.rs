//! Two user agent cores talking in virtual time: whole calls, their failure
//! paths and their timers, deterministically and without sleeping.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::core::{Core, CoreOutput, Locals};
use super::{
    CallEvent, CallId, Command, EndReason, FailureCause, OutgoingCall, Party, TransportFailure,
    UaConfig,
};
use crate::auth::{Algorithm, Credentials, DigestServerConfig};
use crate::dialog::LocalContact;
use crate::message::{parse, Peer, SipMessage, TransportKind, Uri};
use crate::session_timer::SessionTimerConfig;

const ALICE: &str = "127.0.0.1:5060";
const BOB: &str = "127.0.0.2:5060";

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

fn core(at: &str, config: UaConfig) -> Core {
    let local = LocalContact {
        transport: TransportKind::Udp,
        addr: addr(at),
        user: None,
    };
    Core::new(
        config,
        Locals {
            udp: Some(local),
            tcp: None,
        },
    )
}

/// Which messages the network loses, by a predicate on sender and message text.
type Filter = Box<dyn FnMut(Side, &str) -> bool>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Alice,
    Bob,
}

struct Net {
    now: Instant,
    alice: Core,
    bob: Core,
    alice_events: Vec<(CallId, CallEvent)>,
    bob_events: Vec<(CallId, CallEvent)>,
    bob_incoming: VecDeque<CallId>,
    drop: Filter,
    /// Every message that crossed the wire, for assertions.
    log: Vec<(Side, String)>,
}

impl Net {
    fn new(alice: UaConfig, bob: UaConfig) -> Self {
        Self {
            now: Instant::now(),
            alice: core(ALICE, alice),
            bob: core(BOB, bob),
            alice_events: Vec::new(),
            bob_events: Vec::new(),
            bob_incoming: VecDeque::new(),
            drop: Box::new(|_, _| false),
            log: Vec::new(),
        }
    }

    fn invite(&mut self, id: u64) -> CallId {
        self.invite_with(id, None)
    }

    fn invite_with(&mut self, id: u64, credentials: Option<Credentials>) -> CallId {
        let call = CallId(id);
        let request = OutgoingCall {
            request_uri: Uri::try_from(format!("sip:+15551234567@{BOB}").as_str()).expect("uri"),
            peer: Peer::udp(addr(BOB)),
            from: format!("<sip:+15550001111@{ALICE}>"),
            to: format!("<sip:+15551234567@{BOB}>"),
            call_id: format!("call-{id}@test"),
            sdp: Some(sdp(ALICE)),
            credentials,
            extra_headers: Vec::new(),
        };
        self.alice.handle_command(
            self.now,
            Command::Invite {
                call,
                request: Box::new(request),
            },
        );
        call
    }

    /// Delivers everything in flight, repeatedly, without moving time.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            while let Some(output) = self.alice.poll_output() {
                moved = true;
                self.route(Side::Alice, output);
            }
            while let Some(output) = self.bob.poll_output() {
                moved = true;
                self.route(Side::Bob, output);
            }
            if !moved {
                return;
            }
        }
    }

    fn route(&mut self, side: Side, output: CoreOutput) {
        match output {
            CoreOutput::Transmit { message, .. } => self.wire(side, message.to_string()),
            CoreOutput::Raw { bytes, .. } => {
                self.wire(side, String::from_utf8(bytes).expect("utf-8"))
            }
            CoreOutput::Event { call, event } => match side {
                Side::Alice => self.alice_events.push((call, event)),
                Side::Bob => self.bob_events.push((call, event)),
            },
            CoreOutput::Incoming { call, .. } => {
                assert_eq!(side, Side::Bob, "only Bob is called");
                self.bob_incoming.push_back(call);
            }
        }
    }

    fn wire(&mut self, from: Side, text: String) {
        self.log.push((from, text.clone()));
        if self.log.len() > 3000 {
            panic!("message storm: two cores keep answering each other");
        }
        if (self.drop)(from, &text) {
            return;
        }
        let message = parse(text.as_bytes()).expect("what we send parses");
        let (to, peer) = match from {
            Side::Alice => (&mut self.bob, Peer::udp(addr(ALICE))),
            Side::Bob => (&mut self.alice, Peer::udp(addr(BOB))),
        };
        to.handle_message(self.now, message, peer);
    }

    /// Jumps to the earliest deadline of either core and fires it.
    fn advance(&mut self) -> bool {
        self.settle();
        let next = [self.alice.poll_timeout(), self.bob.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        let Some(at) = next else { return false };
        self.now = self.now.max(at);
        self.alice.handle_timeout(self.now);
        self.bob.handle_timeout(self.now);
        self.settle();
        true
    }

    /// Runs virtual time forward by `span` (firing every deadline on the way).
    fn run_for(&mut self, span: Duration) {
        let end = self.now + span;
        loop {
            self.settle();
            let next = [self.alice.poll_timeout(), self.bob.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.alice.handle_timeout(self.now);
                    self.bob.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        self.now = end;
        self.settle();
    }

    /// Runs until neither core has anything left to do; both must be empty.
    fn drain(&mut self) {
        let mut steps = 0;
        while self.advance() {
            steps += 1;
            assert!(steps < 10_000, "timers never stop");
        }
        assert_eq!(self.alice.call_count(), 0, "Alice released every call");
        assert_eq!(self.bob.call_count(), 0, "Bob released every call");
        assert_eq!(
            self.alice.transaction_count(),
            0,
            "Alice's transactions gone"
        );
        assert_eq!(self.bob.transaction_count(), 0, "Bob's transactions gone");
    }

    fn bob_answers(&mut self) -> CallId {
        self.settle();
        let call = self.bob_incoming.pop_front().expect("Bob is called");
        self.bob
            .handle_command(self.now, Command::Ring { call, sdp: None });
        self.bob.handle_command(
            self.now,
            Command::Answer {
                call,
                sdp: sdp(BOB),
            },
        );
        self.settle();
        call
    }

    fn sent(&self, side: Side, start: &str) -> usize {
        self.log
            .iter()
            .filter(|(from, text)| *from == side && text.starts_with(start))
            .count()
    }
}

fn sdp(at: &str) -> String {
    let ip = addr(at).ip();
    crate::sdp::build_offer(
        ip,
        40_000,
        &crate::sdp::Codec::default_set(),
        crate::sdp::Direction::SendRecv,
        1,
        1,
    )
    .to_string()
}

fn events(list: &[(CallId, CallEvent)]) -> Vec<&CallEvent> {
    list.iter().map(|(_, event)| event).collect()
}

#[test]
fn a_call_is_answered_confirmed_and_hung_up_and_nothing_is_left_behind() {
    let mut net = Net::new(UaConfig::default(), UaConfig::default());
    let call = net.invite(1);
    let bob_call = net.bob_answers();
    let alice = events(&net.alice_events);
    assert!(
        matches!(
            alice[..],
            [
                CallEvent::Ringing { code: 180, .. },
                CallEvent::Answered { sdp: Some(_) }
            ]
        ),
        "{alice:?}"
    );
    assert_eq!(events(&net.bob_events), [&CallEvent::Confirmed]);

    net.alice.handle_command(net.now, Command::Hangup { call });
    net.settle();
    assert!(matches!(
        net.alice_events.last(),
        Some((
            _,
            CallEvent::Ended {
                by: Party::Local,
                reason: EndReason::Bye,
                ..
            }
        ))
    ));
    assert!(
        matches!(net.bob_events.last(), Some((id, CallEvent::Ended { by: Party::Remote, reason: EndReason::Bye, .. })) if *id == bob_call)
    );
    net.drain();
}

/// Hands `text` to Bob as if it came from `from`, and collects what Bob answers.
fn forge_to_bob(net: &mut Net, text: &str, from: &str) -> Vec<String> {
    let message = parse(text.as_bytes()).expect("forged request parses");
    net.bob
        .handle_message(net.now, message, Peer::udp(addr(from)));
    let mut answers = Vec::new();
    while let Some(output) = net.bob.poll_output() {
        match output {
            CoreOutput::Transmit { message, .. } => answers.push(message.to_string()),
            CoreOutput::Raw { bytes, .. } => answers.push(String::from_utf8(bytes).expect("utf-8")),
            CoreOutput::Event { call, event } => net.bob_events.push((call, event)),
            CoreOutput::Incoming { .. } => panic!("no new call"),
        }
    }
    answers
}

#[test]
fn in_dialog_requests_from_another_address_are_refused_403() {
    let mut net = Net::new(UaConfig::default(), UaConfig::default());
    let call = net.invite(1);
    let bob_call = net.bob_answers();
    // Alice's BYE is held back: an attacker who saw it replays it from elsewhere.
    net.drop = Box::new(|side, text| side == Side::Alice && text.starts_with("BYE "));
    net.alice.handle_command(net.now, Command::Hangup { call });
    net.settle();
    let bye = net
        .log
        .iter()
        .rev()
        .find(|(side, text)| *side == Side::Alice && text.starts_with("BYE "))
        .map(|(_, text)| text.clone())
        .expect("Alice sent a BYE");
    let reinvite = bye
        .replacen("BYE ", "INVITE ", 1)
        .replace(" BYE\r\n", " INVITE\r\n");

    for forged in [&bye, &reinvite] {
        let answers = forge_to_bob(&mut net, forged, "198.51.100.66:5060");
        assert!(
            answers.iter().any(|a| a.starts_with("SIP/2.0 403")),
            "{answers:?}"
        );
    }
    assert!(
        !net.bob_events
            .iter()
            .any(|(id, event)| *id == bob_call && matches!(event, CallEvent::Ended { .. })),
        "a forged BYE ended the call: {:?}",
        net.bob_events
    );

    // A network the application trusts (the trunk's) may send them, on any port.
    net.bob.handle_command(
        net.now,
        Command::Trust {
            call: bob_call,
            networks: vec!["198.51.100.0/24".parse().expect("network")],
        },
    );
    // (A new transaction: the refused one would only have its 403 repeated.)
    let again = bye.replacen("branch=z9hG4bK", "branch=z9hG4bKtrusted", 1);
    let answers = forge_to_bob(&mut net, &again, "198.51.100.7:5099");
    assert!(
        answers.iter().any(|a| a.starts_with("SIP/2.0 200")),
        "{answers:?}"
    );
    assert!(net.bob_events.iter().any(|(id, event)| *id == bob_call
        && matches!(
            event,
            CallEvent::Ended {
                by: Party::Remote,
                ..
            }
        )));
}

#[test]
fn a_cancel_asked_for_before_any_provisional_waits_for_the_100_trying() {
    let mut net = Net::new(UaConfig::default(), UaConfig::default());
    let call = net.invite(1);
    net.alice.handle_command(net.now, Command::Cancel { call });
    net.settle();
    assert_eq!(
        net.sent(Side::Alice, "CANCEL"),
        0,
        "no CANCEL before a provisional response"
    );
    // Bob's transaction sends 100 Trying by itself after 200 ms; the CANCEL follows.
    net.run_for(Duration::from_millis(300));
    assert_eq!(net.sent(Side::Alice, "CANCEL"), 1);
    let alice = events(&net.alice_events);
    let answered = alice
        .iter()
        .position(|e| **e == CallEvent::CancelAnswered { code: 200 })
        .expect("the 200 to the CANCEL is reported");
    let failed = alice
        .iter()
        .position(|e| matches!(e, CallEvent::Failed { code: 487, .. }))
        .expect("the 487 is reported");
    assert!(answered < failed, "{alice:?}");
    assert!(
        matches!(
            net.alice_events.last(),
            Some((_, CallEvent::Failed { code: 487, .. }))
        ),
        "{:?}",
        net.alice_events
    );
    assert!(
        matches!(
            net.bob_events.last(),
            Some((_, CallEvent::Failed { code: 487, .. }))
        ),
        "{:?}",
        net.bob_events
    );
    net.drain();
}

#[test]
fn a_rejected_call_fails_with_its_code_and_the_reason_header() {
    let mut net = Net::new(UaConfig::default(), UaConfig::default());
    net.invite(1);
    net.settle();
    let call = net.bob_incoming.pop_front().expect("incoming");
    net.bob.handle_command(
        net.now,
        Command::Reject {
            call,
            code: 486,
            retry_after: None,
        },
    );
    net.settle();
    assert!(matches!(
        net.alice_events.last(),
        Some((
            _,
            CallEvent::Failed {
                code: 486,
                cause: FailureCause::Response,
                ..
            }
        ))
    ));
    assert_eq!(
        net.sent(Side::Alice, "ACK"),
        1,
        "the transaction ACKs the 486"
    );
    net.drain();
}

#[test]
fn an_unanswered_invite_times_out_with_408_after_64_t1() {
    let mut net = Net::new(UaConfig::default(), UaConfig::default());
    net.drop = Box::new(|from, _| from == Side::Alice);
    let start = net.now;
    net.invite(1);
    while !net.alice_events.iter().any(|(_, e)| e.is_terminal()) {
        assert!(net.advance(), "Timer B must fire");
    }
    assert!(matches!(
        net.alice_events.last(),
        Some((
            _,
            CallEvent::Failed {
                code: 408,
                cause: FailureCause::NoResponse,
                ..
            }
        ))
    ));
    assert_eq!(net.now - start, Duration::from_millis(500) * 64);
    assert_eq!(
        net.sent(Side::Alice, "INVITE"),
        7,
        "A retransmits at 0.5, 1, 2, 4, 8, 16 s"
    );
    net.drop = Box::new(|_, _| false);
    net.drain();
}

#[test]
fn a_transport_failure_fails_the_waiting_invite_at_once_with_the_os_error() {
    let mut net = Net::new(UaConfig::default(), UaConfig::default());
    // The INVITE goes nowhere: the transport reports the peer unreachable.
    net.drop = Box::new(|from, _| from == Side::Alice);
    net.invite(1);
    net.settle();
    let refused = TransportFailure {
        kind: std::io::ErrorKind::ConnectionRefused,
        message: "Connection refused (os error 111)".into(),
    };
    net.alice
        .handle_transport_error(net.now, Peer::udp(addr(BOB)), refused.clone());
    net.settle();
    assert_eq!(
        events(&net.alice_events),
        [&CallEvent::Failed {
            code: 503,
            reason: refused.message.clone(),
            q850: None,
            cause: FailureCause::Transport(refused),
        }],
        "failed at once, without waiting for Timer B"
    );
    assert_eq!(
        net.alice.transaction_count(),
        0,
        "the INVITE transaction is gone"
    );
    let retransmitted = net.sent(Side::Alice, "INVITE");
    net.run_for(Duration::from_secs(40));
    assert_eq!(net.sent(Side::Alice, "INVITE"), retransmitted, "no Timer A");
    assert_eq!(net.alice_events.len(), 1, "no later Timer B failure");
    net.drop = Box::new(|_, _| false);
    net.bob_incoming.clear();
    net.drain();
}

#[test]
fn a_transport_failure_towards_another_peer_leaves_the_call_alone() {
    let mut net = Net::new(UaConfig::default(), UaConfig::default());
    net.invite(1);
    net.settle();
    let reset = TransportFailure {
        kind: std::io::ErrorKind::ConnectionReset,
        message: "Connection reset by peer (os error 104)".into(),
    };
    net.alice
        .handle_transport_error(net.now, Peer::udp(addr("127.0.0.9:5060")), reset);
    net.bob_answers();
    assert!(
        matches!(
            net.alice_events.last(),
            Some((_, CallEvent::Answered { .. }))
        ),
        "{:?}",
        net.alice_events
    );
}

#[test]
fn a_reject_with_retry_after_carries_the_header() {
    let mut net = Net::new(UaConfig::default(), UaConfig::default());
    net.invite(1);
    net.settle();
    let call = net.bob_incoming.pop_front().expect("incoming");
    net.bob.handle_command(
        net.now,
        Command::Reject {
            call,
            code: 503,
            retry_after: Some(Duration::from_secs(5)),
        },
    );
    net.settle();
    let answer = net
        .log
        .iter()
        .find(|(from, text)| *from == Side::Bob && text.starts_with("SIP/2.0 503"))
        .map(|(_, text)| text.clone())
        .expect("Bob answered 503");
    assert!(
        answer.lines().any(|line| line == "Retry-After: 5"),
        "{answer}"
    );
    net.drain();
}

#[test]
fn a_uas_hanging_up_before_the_ack_sends_its_bye_only_after_the_ack() {
    let mut net = Net::new(UaConfig::default(), UaConfig::default());
    // The first ACK is lost on the way: Bob hangs up while his 2xx is unacknowledged.
    let mut acks = 0;
    net.drop = Box::new(move |from, text| {
        let ack = from == Side::Alice && text.starts_with("ACK");
        acks += usize::from(ack);
        ack && acks == 1
    });
    net.invite(1);
    let bob_call = net.bob_answers();
    net.bob
        .handle_command(net.now, Command::Hangup { call: bob_call });
    net.settle();
    assert_eq!(net.sent(Side::Bob, "BYE"), 0, "no BYE before the ACK");
    assert!(
        !net.bob_events.iter().any(|(_, e)| e.is_terminal()),
        "the call is not over yet: {:?}",
        net.bob_events
    );
    // Bob's 2xx retransmission brings Alice's ACK again; then the BYE goes out.
    while net.sent(Side::Bob, "BYE") == 0 {
        assert!(net.advance(), "the BYE never went out");
    }
    let ack_at = net
        .log
        .iter()
        .position(|(from, text)| *from == Side::Alice && text.starts_with("ACK"))
        .expect("ACK");
    let second_ack = net
        .log
        .iter()
        .enumerate()
        .filter(|(_, (from, text))| *from == Side::Alice && text.starts_with("ACK"))
        .nth(1)
        .map(|(at, _)| at)
        .expect("the ACK of the retransmitted 2xx");
    let bye_at = net
        .log
        .iter()
        .position(|(from, text)| *from == Side::Bob && text.starts_with("BYE"))
        .expect("BYE");
    assert!(ack_at < bye_at && second_ack < bye_at, "BYE after the ACK");
    assert_eq!(
        events(&net.bob_events)[..2],
        [
            &CallEvent::Confirmed,
            &CallEvent::Ended {
                by: Party::Local,
                reason: EndReason::Bye,
                q850: None
            }
        ]
    );
    net.drain();
}

#[test]
fn a_200_ok_never_acknowledged_is_retransmitted_then_ended_with_bye() {
    let mut net = Net::new(UaConfig::default(), UaConfig::default());
    net.drop = Box::new(|from, text| from == Side::Alice && text.starts_with("ACK"));
    net.invite(1);
    net.bob_answers();
    while !net.bob_events.iter().any(|(_, e)| e.is_terminal()) {
        assert!(net.advance());
    }
    assert!(
        net.sent(Side::Bob, "SIP/2.0 200") >= 8,
        "2xx retransmitted until Timer H"
    );
    assert!(matches!(
        net.bob_events.last(),
        Some((
            _,
            CallEvent::Ended {
                by: Party::Local,
                reason: EndReason::AckTimeout,
                ..
            }
        ))
    ));
    assert!(
        matches!(
            net.alice_events.last(),
            Some((
                _,
                CallEvent::Ended {
                    by: Party::Remote,
                    ..
                }
            ))
        ),
        "Alice hears the BYE"
    );
    net.drop = Box::new(|_, _| false);
    net.drain();
}

#[test]
fn session_timer_refreshes_keep_a_three_hour_call_up() {
    let short = UaConfig {
        session_timer: SessionTimerConfig {
            session_expires: 90,
            min_se: 90,
        },
        ..UaConfig::default()
    };
    let mut net = Net::new(short.clone(), short);
    let call = net.invite(1);
    net.bob_answers();
    net.run_for(Duration::from_secs(3 * 3600));
    assert!(
        !net.alice_events.iter().any(|(_, e)| e.is_terminal()),
        "{:?}",
        net.alice_events
    );
    assert!(
        !net.bob_events.iter().any(|(_, e)| e.is_terminal()),
        "{:?}",
        net.bob_events
    );
    let refreshes = net
        .log
        .iter()
        .filter(|(_, text)| text.starts_with("INVITE") && text.contains("Session-Expires"))
        .count();
    assert!(
        refreshes >= 3 * 3600 / 45,
        "a refresh every 45 s: {refreshes}"
    );
    net.alice.handle_command(net.now, Command::Hangup { call });
    net.drain();
}

#[test]
fn a_peer_that_stops_refreshing_gets_a_bye_when_the_session_expires() {
    let config = UaConfig {
        session_timer: SessionTimerConfig {
            session_expires: 90,
            min_se: 90,
        },
        ..UaConfig::default()
    };
    let mut net = Net::new(config.clone(), config);
    net.invite(1);
    net.bob_answers();
    let answered = net.now;
    // Alice (the UAC, the refresher) goes silent.
    net.drop = Box::new(|from, _| from == Side::Alice);
    while !net.bob_events.iter().any(|(_, e)| e.is_terminal()) {
        assert!(net.advance());
    }
    assert!(matches!(
        net.bob_events.last(),
        Some((
            _,
            CallEvent::Ended {
                by: Party::Local,
                reason: EndReason::SessionExpired,
                ..
            }
        ))
    ));
    // RFC 4028 10: BYE at interval - min(32, interval / 3) = 60 s.
    assert_eq!(net.now - answered, Duration::from_secs(60));
    net.drop = Box::new(|_, _| false);
    net.run_for(Duration::from_secs(120));
}

#[test]
fn requests_for_unknown_dialogs_get_481_and_garbage_gets_400() {
    let mut bob = core(BOB, UaConfig::default());
    let now = Instant::now();
    let bye = "BYE sip:bob@127.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKbye1\r\nFrom: <sip:a@127.0.0.1>;tag=a1\r\nTo: <sip:b@127.0.0.2>;tag=nope\r\nCall-ID: unknown@test\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
    bob.handle_message(
        now,
        parse(bye.as_bytes()).expect("parses"),
        Peer::udp(addr(ALICE)),
    );
    let reply = match bob.poll_output() {
        Some(CoreOutput::Transmit {
            message: SipMessage::Response(response),
            ..
        }) => response,
        other => panic!("expected a response, got {other:?}"),
    };
    assert_eq!(reply.status_code.code(), 481);

    let broken = b"INVITE sip:b@127.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: z\r\nCSeq: one INVITE\r\nContent-Length: 0\r\n\r\n";
    let error = parse(broken).expect_err("CSeq is not a number");
    bob.handle_malformed(broken, &error, Peer::udp(addr(ALICE)));
    match bob.poll_output() {
        Some(CoreOutput::Raw { bytes, .. }) => {
            assert!(String::from_utf8(bytes)
                .expect("utf-8")
                .starts_with("SIP/2.0 400"))
        }
        other => panic!("expected a 400, got {other:?}"),
    }
}

#[test]
fn a_draining_ua_answers_options_and_new_invites_503_and_keeps_its_calls() {
    let mut net = Net::new(UaConfig::default(), UaConfig::default());
    let up = net.invite(1);
    net.bob_answers();
    let ask = |net: &mut Net, method: &str, branch: &str| {
        let text = format!(
            "{method} sip:bob@127.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK{branch}\r\n\
             From: <sip:probe@127.0.0.1>;tag=p{branch}\r\nTo: <sip:bob@127.0.0.2>\r\n\
             Call-ID: {branch}@probe\r\nCSeq: 1 {method}\r\nContact: <sip:probe@127.0.0.1:5090>\r\n\
             Content-Length: 0\r\n\r\n"
        );
        forge_to_bob(net, &text, "127.0.0.1:5090")
    };
    let before = ask(&mut net, "OPTIONS", "opt1");
    assert!(before[0].starts_with("SIP/2.0 200"), "{before:?}");

    net.bob.handle_command(
        net.now,
        Command::Drain {
            retry_after: Some(Duration::from_secs(30)),
        },
    );
    for (method, branch) in [("OPTIONS", "opt2"), ("INVITE", "inv2")] {
        let answers = ask(&mut net, method, branch);
        let answer = answers
            .iter()
            .find(|text| !text.starts_with("SIP/2.0 100"))
            .unwrap_or_else(|| panic!("{method} answered: {answers:?}"));
        assert!(answer.starts_with("SIP/2.0 503"), "{method}: {answer}");
        assert!(answer.contains("Retry-After: 30\r\n"), "{method}: {answer}");
    }
    assert_eq!(net.bob.call_count(), 1, "the call already up is kept");
    assert!(net
        .alice_events
        .iter()
        .all(|(id, event)| *id != up || !matches!(event, CallEvent::Ended { .. })));

    net.bob
        .handle_command(net.now, Command::Drain { retry_after: None });
    let after = ask(&mut net, "OPTIONS", "opt3");
    assert!(after[0].starts_with("SIP/2.0 200"), "{after:?}");
}

/// Bob's digest identity: SHA-256 offered first, MD5 after (RFC 8760).
fn guarded() -> UaConfig {
    let mut digest = DigestServerConfig::new("dialcore.test", b"node secret".to_vec());
    digest.algorithm = Algorithm::Sha256;
    digest.alternatives = vec![Algorithm::Md5];
    UaConfig {
        digest,
        ..UaConfig::default()
    }
}

fn trunk_credentials(password: &str) -> Credentials {
    Credentials {
        username: "trunk".into(),
        password: password.into(),
    }
}

impl Net {
    /// Bob's application requires the trunk's credentials of every INVITE that reaches it,
    /// and answers those that pass. Returns the calls that passed.
    fn bob_requires_digest(&mut self, answer: bool) -> Vec<CallId> {
        let mut passed = Vec::new();
        loop {
            self.settle();
            let Some(call) = self.bob_incoming.pop_front() else {
                return passed;
            };
            self.bob.handle_command(
                self.now,
                Command::Authenticate {
                    call,
                    credentials: trunk_credentials("s3cret"),
                },
            );
            self.settle();
            let ok = self.bob_events.iter().any(|(id, e)| {
                *id == call
                    && matches!(e, CallEvent::Authenticated { username } if username == "trunk")
            });
            if ok {
                passed.push(call);
                self.bob
                    .handle_command(self.now, Command::Ring { call, sdp: None });
                if answer {
                    self.bob.handle_command(
                        self.now,
                        Command::Answer {
                            call,
                            sdp: sdp(BOB),
                        },
                    );
                }
            }
        }
    }

    fn last_from(&self, side: Side, start: &str) -> String {
        self.log
            .iter()
            .rev()
            .find(|(from, text)| *from == side && text.starts_with(start))
            .map(|(_, text)| text.clone())
            .unwrap_or_else(|| panic!("no {start} sent"))
    }
}

#[test]
fn a_uas_requiring_digest_challenges_then_answers_the_right_password() {
    let mut net = Net::new(UaConfig::default(), guarded());
    net.invite_with(1, Some(trunk_credentials("s3cret")));
    let passed = net.bob_requires_digest(true);
    assert_eq!(passed.len(), 1, "the second INVITE passed");
    assert_eq!(net.sent(Side::Bob, "SIP/2.0 401"), 1, "challenged once");
    let challenge = net.last_from(Side::Bob, "SIP/2.0 401");
    let offered: Vec<&str> = challenge
        .lines()
        .filter(|l| l.starts_with("WWW-Authenticate:"))
        .collect();
    assert_eq!(offered.len(), 2, "{challenge}");
    assert!(offered[0].contains("algorithm=SHA-256") && offered[0].contains("qop=\"auth\""));
    assert!(offered[1].contains("algorithm=MD5"));
    // The 401 is ACKed within its transaction: one ACK for it, one for the 200.
    assert_eq!(net.sent(Side::Alice, "ACK "), 2);
    let retry = net.last_from(Side::Alice, "INVITE ");
    assert!(
        retry.contains("algorithm=SHA-256") && retry.contains("qop=auth"),
        "{retry}"
    );
    assert!(
        net.alice_events
            .iter()
            .any(|(_, e)| matches!(e, CallEvent::Answered { .. })),
        "{:?}",
        net.alice_events
    );
    assert!(net
        .bob_events
        .iter()
        .any(|(id, e)| *id == passed[0] && *e == CallEvent::Confirmed));
    net.alice
        .handle_command(net.now, Command::Hangup { call: CallId(1) });
    net.drain();
}

#[test]
fn a_uas_requiring_digest_accepts_md5_answers_too() {
    // Bob offers only MD5 first here; his config accepts SHA-256 as well.
    let mut config = guarded();
    config.digest.algorithm = Algorithm::Md5;
    config.digest.alternatives = vec![Algorithm::Sha256];
    let mut net = Net::new(UaConfig::default(), config);
    net.invite_with(1, Some(trunk_credentials("s3cret")));
    assert_eq!(net.bob_requires_digest(true).len(), 1);
    assert!(net
        .last_from(Side::Alice, "INVITE ")
        .contains("algorithm=MD5"));
    net.alice
        .handle_command(net.now, Command::Hangup { call: CallId(1) });
    net.drain();
}

#[test]
fn a_wrong_password_is_forbidden_after_the_challenge_and_no_answer_is_challenged() {
    let mut net = Net::new(UaConfig::default(), guarded());
    net.invite_with(2, Some(trunk_credentials("wrong")));
    assert!(net.bob_requires_digest(true).is_empty(), "nobody passed");
    assert_eq!(net.sent(Side::Bob, "SIP/2.0 401"), 1);
    assert_eq!(net.sent(Side::Bob, "SIP/2.0 403"), 1);
    assert!(matches!(
        net.alice_events.last(),
        Some((_, CallEvent::Failed { code: 403, .. }))
    ));
    assert_eq!(
        net.sent(Side::Alice, "ACK "),
        2,
        "the 401 and the 403 are ACKed"
    );
    net.drain();

    let mut net = Net::new(UaConfig::default(), guarded());
    net.invite(3);
    assert!(net.bob_requires_digest(true).is_empty());
    assert!(matches!(
        net.alice_events.last(),
        Some((_, CallEvent::Failed { code: 401, .. }))
    ));
    net.drain();
}

#[test]
fn an_expired_nonce_gets_a_stale_challenge_and_the_retry_passes() {
    let mut config = guarded();
    config.digest.nonce_lifetime = Duration::from_millis(300);
    let mut net = Net::new(UaConfig::default(), config);
    net.invite_with(4, Some(trunk_credentials("s3cret")));
    // The answer to the challenge is lost once: its retransmission (Timer A, 500 ms)
    // arrives after the nonce expired.
    let mut lost = 0;
    net.drop = Box::new(move |from, text| {
        let first_answer =
            from == Side::Alice && text.starts_with("INVITE ") && text.contains("Authorization:");
        if first_answer && lost == 0 {
            lost += 1;
            return true;
        }
        false
    });
    net.bob_requires_digest(true);
    while net.advance()
        && !net
            .alice_events
            .iter()
            .any(|(_, e)| e.is_terminal() || matches!(e, CallEvent::Answered { .. }))
    {
        net.bob_requires_digest(true);
    }
    let stale: Vec<&(Side, String)> = net
        .log
        .iter()
        .filter(|(from, text)| {
            *from == Side::Bob && text.starts_with("SIP/2.0 401") && text.contains("stale=true")
        })
        .collect();
    assert_eq!(stale.len(), 1, "one stale challenge");
    assert!(
        net.alice_events
            .iter()
            .any(|(_, e)| matches!(e, CallEvent::Answered { .. })),
        "the retry with the new nonce passed: {:?}",
        net.alice_events
    );
    net.alice
        .handle_command(net.now, Command::Hangup { call: CallId(4) });
    net.drain();
}

#[test]
fn the_caller_cancels_an_authenticated_invite_while_it_rings() {
    let mut net = Net::new(UaConfig::default(), guarded());
    net.invite_with(5, Some(trunk_credentials("s3cret")));
    let passed = net.bob_requires_digest(false);
    assert_eq!(passed.len(), 1);
    assert!(net
        .alice_events
        .iter()
        .any(|(_, e)| matches!(e, CallEvent::Ringing { code: 180, .. })));
    net.alice
        .handle_command(net.now, Command::Cancel { call: CallId(5) });
    net.settle();
    assert!(matches!(
        net.bob_events.last(),
        Some((id, CallEvent::Failed { code: 487, .. })) if *id == passed[0]
    ));
    assert!(matches!(
        net.alice_events.last(),
        Some((_, CallEvent::Failed { code: 487, .. }))
    ));
    net.drain();
}

#[test]
fn a_uas_echoes_record_route_and_routes_its_bye_through_the_proxy() {
    let mut bob = core(BOB, UaConfig::default());
    let now = Instant::now();
    let invite = format!(
        "INVITE sip:bob@{BOB} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bKproxy1\r\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKalice1\r\nRecord-Route: <sip:127.0.0.9:5060;lr>\r\nFrom: <sip:a@127.0.0.1>;tag=a1\r\nTo: <sip:b@127.0.0.2>\r\nCall-ID: rr@test\r\nCSeq: 1 INVITE\r\nContact: <sip:a@{ALICE}>\r\nContent-Length: 0\r\n\r\n"
    );
    bob.handle_message(
        now,
        parse(invite.as_bytes()).expect("parses"),
        Peer::udp(addr("127.0.0.9:5060")),
    );
    let mut call = None;
    while let Some(output) = bob.poll_output() {
        if let CoreOutput::Incoming { call: id, .. } = output {
            call = Some(id);
        }
    }
    let call = call.expect("incoming call");
    bob.handle_command(
        now,
        Command::Answer {
            call,
            sdp: sdp(BOB),
        },
    );
    let mut ok = None;
    while let Some(output) = bob.poll_output() {
        if let CoreOutput::Transmit {
            message: SipMessage::Response(response),
            ..
        } = output
        {
            if response.status_code.code() == 200 {
                ok = Some(response.to_string());
            }
        }
    }
    let ok = ok.expect("200 OK sent");
    assert!(ok.contains("Record-Route: <sip:127.0.0.9:5060;lr>"), "{ok}");
    // The ACK through the proxy confirms the call (no BYE before it, RFC 3261 15).
    let to = ok
        .lines()
        .find(|line| line.starts_with("To:"))
        .expect("To in the 200 OK");
    let ack = format!(
        "ACK sip:bob@{BOB} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5060;branch=z9hG4bKproxy2\r\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKalice2\r\nFrom: <sip:a@127.0.0.1>;tag=a1\r\n{to}\r\nCall-ID: rr@test\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    bob.handle_message(
        now,
        parse(ack.as_bytes()).expect("parses"),
        Peer::udp(addr("127.0.0.9:5060")),
    );
    while bob.poll_output().is_some() {}
    bob.handle_command(now, Command::Hangup { call });
    let mut bye = None;
    while let Some(output) = bob.poll_output() {
        if let CoreOutput::Transmit {
            message: SipMessage::Request(request),
            ..
        } = output
        {
            bye = Some(request.to_string());
        }
    }
    let bye = bye.expect("BYE sent");
    assert!(
        bye.starts_with(&format!("BYE sip:a@{ALICE} SIP/2.0")),
        "{bye}"
    );
    assert!(bye.contains("Route: <sip:127.0.0.9:5060;lr>"), "{bye}");
}
