//! A two-party harness for the transaction layer, shared by the `transaction_*` tests: a
//! client table and a server table exchange printed-and-reparsed messages over a virtual
//! network with injectable loss, and virtual time jumps to the earliest `poll_timeout()`.
//! Nothing sleeps. (Included by the other files with `#[path]`; alone it only tests itself.)
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sip_stack::message::{
    parse, response_for, MessageExt, Method, Peer, Request, RequestBuilder, Response, SipMessage,
    StatusCode, TransportKind, Uri,
};
use sip_stack::transaction::{Output, TimerConfig, TransactionEvent, TransactionKey, Transactions};

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    ToServer,
    /// Server to client.
    ToClient,
}

/// A message put on the wire, delivered or not.
#[derive(Debug, Clone)]
pub struct Sent {
    pub at: Duration,
    pub direction: Direction,
    pub message: SipMessage,
    pub dropped: bool,
}

struct DropRule {
    direction: Direction,
    remaining: usize,
    matches: Box<dyn Fn(&SipMessage) -> bool>,
}

pub struct Harness {
    pub start: Instant,
    pub now: Instant,
    pub client: Transactions,
    pub server: Transactions,
    pub transport: TransportKind,
    pub wire: Vec<Sent>,
    pub client_events: Vec<(Duration, TransactionEvent)>,
    pub server_events: Vec<(Duration, TransactionEvent)>,
    rules: Vec<DropRule>,
}

pub const CLIENT_ADDR: &str = "192.0.2.1:5060";
pub const SERVER_ADDR: &str = "192.0.2.2:5060";

impl Harness {
    pub fn new(transport: TransportKind) -> Self {
        let start = Instant::now();
        Self {
            start,
            now: start,
            client: Transactions::new(TimerConfig::default()),
            server: Transactions::new(TimerConfig::default()),
            transport,
            wire: Vec::new(),
            client_events: Vec::new(),
            server_events: Vec::new(),
            rules: Vec::new(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub fn peer(&self, addr: &str) -> Peer {
        let addr: SocketAddr = addr.parse().expect("valid test address");
        Peer {
            transport: self.transport,
            addr,
        }
    }

    /// Drops the next `count` messages going `direction` that satisfy `matches`.
    pub fn drop_next(
        &mut self,
        direction: Direction,
        count: usize,
        matches: impl Fn(&SipMessage) -> bool + 'static,
    ) {
        self.rules.push(DropRule {
            direction,
            remaining: count,
            matches: Box::new(matches),
        });
    }

    /// Drops everything going `direction`.
    pub fn blackhole(&mut self, direction: Direction) {
        self.drop_next(direction, usize::MAX, |_| true);
    }

    /// Builds a request from the client to the server.
    pub fn request(&self, method: Method) -> Request {
        let uri = |text: &str| Uri::try_from(text).expect("valid test URI");
        RequestBuilder::new(method, uri("sip:bob@192.0.2.2:5060"))
            .from(&uri("sip:alice@192.0.2.1"), None, "alice-tag")
            .to(&uri("sip:bob@192.0.2.2"), None)
            .via(self.transport, CLIENT_ADDR)
            .call_id("call-1@192.0.2.1")
            .cseq(1)
            .contact(&uri("sip:alice@192.0.2.1:5060"))
            .build()
            .expect("complete test request")
    }

    /// Client TU: starts a client transaction and lets the network run.
    pub fn client_send(&mut self, request: Request) -> TransactionKey {
        let to = self.peer(SERVER_ADDR);
        let key = self
            .client
            .send_request(self.now, request, to)
            .expect("valid client request");
        self.pump();
        key
    }

    /// Server TU: answers the server transaction `key` with `code`.
    pub fn server_respond(&mut self, key: &TransactionKey, request: &Request, code: u16) {
        let tag = (code > 100).then_some("bob-tag");
        let response = response_for(request, StatusCode::from(code), tag);
        self.server
            .send_response(self.now, key, response)
            .expect("server transaction accepts the response");
        self.pump();
    }

    /// The server transaction and request of the `index`-th Request event on the server.
    pub fn server_request(&self, index: usize) -> (TransactionKey, Request) {
        self.server_events
            .iter()
            .filter_map(|(_, event)| match event {
                TransactionEvent::Request { key, request, .. } => {
                    Some((key.clone(), request.clone()))
                }
                _ => None,
            })
            .nth(index)
            .expect("the server received that many requests")
    }

    /// Delivers every pending output, repeatedly, until both sides are quiet.
    pub fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(output) = self.client.poll_output() {
                moved = true;
                self.route(Direction::ToServer, output);
            }
            while let Some(output) = self.server.poll_output() {
                moved = true;
                self.route(Direction::ToClient, output);
            }
            if !moved {
                return;
            }
        }
    }

    fn route(&mut self, direction: Direction, output: Output) {
        let at = self.elapsed();
        match output {
            Output::Event(event) => match direction {
                Direction::ToServer => self.client_events.push((at, event)),
                Direction::ToClient => self.server_events.push((at, event)),
            },
            Output::Transmit { to, message } => {
                let expected = match direction {
                    Direction::ToServer => SERVER_ADDR,
                    Direction::ToClient => CLIENT_ADDR,
                };
                assert_eq!(to, self.peer(expected), "message sent to the wrong peer");
                let dropped = self.should_drop(direction, &message);
                self.wire.push(Sent {
                    at,
                    direction,
                    message: message.clone(),
                    dropped,
                });
                if dropped {
                    return;
                }
                let bytes = message.to_string();
                let reparsed = parse(bytes.as_bytes()).expect("printed message parses");
                let (receiver, from) = match direction {
                    Direction::ToServer => (&mut self.server, CLIENT_ADDR),
                    Direction::ToClient => (&mut self.client, SERVER_ADDR),
                };
                let from = Peer {
                    transport: self.transport,
                    addr: from.parse().expect("valid test address"),
                };
                receiver
                    .handle_incoming(self.now, reparsed, from)
                    .expect("matchable message");
            }
        }
    }

    fn should_drop(&mut self, direction: Direction, message: &SipMessage) -> bool {
        for rule in &mut self.rules {
            if rule.direction == direction && rule.remaining > 0 && (rule.matches)(message) {
                rule.remaining -= 1;
                return true;
            }
        }
        false
    }

    /// Jumps to the earliest deadline of either side and fires it. False when none is armed.
    pub fn advance(&mut self) -> bool {
        let next = match (self.client.poll_timeout(), self.server.poll_timeout()) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return false,
        };
        assert!(next >= self.now, "deadlines never lie in the past");
        self.now = next;
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.pump();
        true
    }

    /// Advances until no timer is armed or `limit` of virtual time has passed.
    pub fn run_until_idle(&mut self, limit: Duration) {
        while self.elapsed() < limit && self.advance() {}
    }

    /// Advances until `done` holds (or `limit` passes, which fails the test).
    pub fn run_until(&mut self, limit: Duration, done: impl Fn(&Harness) -> bool) {
        while !done(self) {
            assert!(
                self.elapsed() < limit,
                "condition not reached within {limit:?}"
            );
            assert!(self.advance(), "no timer left and condition not reached");
        }
    }

    /// Moves the clock forward by `step` (firing every deadline on the way).
    pub fn advance_by(&mut self, step: Duration) {
        let target = self.now + step;
        loop {
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) if at <= target => {
                    self.advance();
                }
                _ => break,
            }
        }
        self.now = target;
    }

    /// Times at which messages matching `matches` were put on the wire going `direction`.
    pub fn sent_times(
        &self,
        direction: Direction,
        matches: impl Fn(&SipMessage) -> bool,
    ) -> Vec<Duration> {
        self.wire
            .iter()
            .filter(|sent| sent.direction == direction && matches(&sent.message))
            .map(|sent| sent.at)
            .collect()
    }

    pub fn both_empty(&self) -> bool {
        self.client.is_empty() && self.server.is_empty()
    }
}

pub fn is_request(method: Method) -> impl Fn(&SipMessage) -> bool {
    move |message| matches!(message, SipMessage::Request(request) if request.method == method)
}

pub fn is_response(code: u16) -> impl Fn(&SipMessage) -> bool {
    move |message| matches!(message, SipMessage::Response(response) if response.status_code.code() == code)
}

pub fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

pub fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// Response events (code, retransmission) seen by the client TU.
pub fn client_responses(harness: &Harness) -> Vec<(u16, bool)> {
    harness
        .client_events
        .iter()
        .filter_map(|(_, event)| match event {
            TransactionEvent::Response {
                response,
                retransmission,
                ..
            } => Some((response.status_code.code(), *retransmission)),
            _ => None,
        })
        .collect()
}

/// Builds the ACK for a 2xx as a client TU would (new branch, To tag of the response).
pub fn ack_for_2xx(invite: &Request, ok: &Response) -> Request {
    let uri = |text: &str| Uri::try_from(text).expect("valid test URI");
    let mut ack = RequestBuilder::new(Method::Ack, invite.uri.clone())
        .from(&uri("sip:alice@192.0.2.1"), None, "alice-tag")
        .via(
            invite.top_via().expect("invite has a via").transport_kind(),
            CLIENT_ADDR,
        )
        .call_id(invite.call_id().expect("invite has a Call-ID"))
        .cseq(invite.cseq().expect("invite has a CSeq").seq)
        .build()
        .expect("complete ACK");
    let to = ok.header("To").expect("response has To").to_owned();
    for header in ack.headers.iter_mut() {
        if let sip_stack::message::Header::To(value) = header {
            *value = sip_stack::message::raw::headers::To::from(to.clone());
        }
    }
    ack
}

trait TransportOfVia {
    fn transport_kind(&self) -> TransportKind;
}

impl TransportOfVia for sip_stack::message::Via {
    fn transport_kind(&self) -> TransportKind {
        if self.transport == "TCP" {
            TransportKind::Tcp
        } else {
            TransportKind::Udp
        }
    }
}

#[test]
fn harness_delivers_and_parses_both_ways() {
    let mut harness = Harness::new(TransportKind::Udp);
    let options = harness.request(Method::Options);
    harness.client_send(options);
    let (key, request) = harness.server_request(0);
    harness.server_respond(&key, &request, 200);
    assert_eq!(client_responses(&harness), vec![(200, false)]);
    harness.run_until_idle(secs(60));
    assert!(harness.both_empty());
}

/// The timeouts among recorded events, with when they fired.
pub fn timeouts(
    events: &[(
        std::time::Duration,
        sip_stack::transaction::TransactionEvent,
    )],
) -> Vec<(std::time::Duration, sip_stack::transaction::Timer)> {
    events
        .iter()
        .filter_map(|(at, event)| match event {
            sip_stack::transaction::TransactionEvent::Timeout { timer, .. } => Some((*at, *timer)),
            _ => None,
        })
        .collect()
}
