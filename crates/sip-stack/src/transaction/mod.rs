//! RFC 3261 section 17 transactions, with the RFC 6026 `Accepted` states, sans-IO.
//!
//! [`Transactions`] is the whole transaction layer: a table of the four state machines
//! (client INVITE, client non-INVITE, server INVITE, server non-INVITE) keyed by
//! [`TransactionKey`]. It never reads the clock and never touches a socket: the driver feeds
//! it with `handle_*` and drains it with `poll_*`, like this:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use sip_stack::transaction::{Output, TimerConfig, Transactions};
//!
//! let mut layer = Transactions::new(TimerConfig::default());
//! let now = Instant::now();
//! // layer.handle_incoming(now, message, from)?; layer.send_request(now, request, to)?; ...
//! layer.handle_timeout(now);
//! while let Some(output) = layer.poll_output() {
//!     match output {
//!         Output::Transmit { to, message } => { /* write message.to_string() to `to` */ }
//!         Output::Event(event) => { /* hand to the dialog / user agent layer */ }
//!     }
//! }
//! let _wake_at: Option<Instant> = layer.poll_timeout(); // sleep until then, then handle_timeout
//! # let _ = Duration::ZERO;
//! ```
//!
//! Decisions worth knowing:
//!
//! - Server transactions send every response to the address the request came from (the
//!   [`Peer`] given to `handle_incoming`), which is what `rport` (RFC 3581) asks for and what
//!   works through NAT.
//! - An INVITE server transaction answers `100 Trying` itself when the TU has not sent a
//!   provisional response within 200 ms, and retransmits the TU's 2xx over UDP (T1 doubling,
//!   capped at T2) until the ACK arrives (RFC 3261 13.3.1.4); Timer L then ends it, with
//!   [`TransactionEvent::AckTimeout`] first when no ACK ever came.
//! - ACK requests are sent statelessly by [`Transactions::send_request`] (no transaction).
//! - Unmatched responses and ACKs are passed up as [`TransactionEvent::StrayResponse`] and
//!   [`TransactionEvent::StrayAck`]: a 2xx retransmitted after Timer M, or an ACK for a 2xx
//!   arriving after Timer L, still belongs to a dialog the TU may know.
//! - Timer A doubles without cap (RFC 3261 17.1.1.2); E and G are capped at T2.
//! - A server non-INVITE transaction whose TU never answers is dropped after 64*T1
//!   ([`Timer::TuGuard`]), when the client has given up anyway. A client INVITE transaction
//!   in Proceeding has no timer (RFC 3261): the TU CANCELs it, or [`Transactions::terminate`]s
//!   it when even the CANCEL gets no final response.
//! - Terminated transactions are removed from the table at once.

mod client;
mod event;
mod key;
mod server;
mod timer;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;

pub use event::{Output, TransactionEvent, TransactionState};
pub use key::{Role, TransactionKey};
pub use timer::{Timer, TimerConfig, TimerTable, TIMER_D_UNRELIABLE, TRYING_DELAY};

use crate::message::{MessageError, MessageExt, Method, Peer, Request, Response, SipMessage};
use client::{ClientInvite, ClientNonInvite};
use server::{ServerInvite, ServerNonInvite};

/// Errors of the transaction layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransactionError {
    /// The message lacks what matching needs (Via, branch, CSeq, ...).
    #[error("message cannot be matched to a transaction: {0}")]
    Message(#[from] MessageError),
    /// An outgoing request has no branch with the RFC 3261 magic cookie.
    #[error("outgoing request needs a Via branch starting with z9hG4bK")]
    MissingBranch,
    /// An outgoing request's CSeq method differs from its method.
    #[error("request method {method} does not match its CSeq method {cseq}")]
    MethodMismatch {
        /// Request method.
        method: Method,
        /// CSeq method.
        cseq: Method,
    },
    /// A transaction with this key already exists.
    #[error("transaction {0} already exists")]
    Duplicate(TransactionKey),
    /// No transaction has this key.
    #[error("no transaction {0}")]
    UnknownTransaction(TransactionKey),
    /// The operation is not allowed in the transaction's current state.
    #[error("cannot {action} in state {state:?}")]
    InvalidState {
        /// What was attempted.
        action: &'static str,
        /// The current state.
        state: TransactionState,
    },
    /// The response's CSeq does not belong to this server transaction.
    #[error("response does not belong to transaction {0}")]
    ResponseMismatch(TransactionKey),
}

/// The transaction layer: all live transactions, their timers and pending output.
#[derive(Debug)]
pub struct Transactions {
    config: TimerConfig,
    entries: HashMap<TransactionKey, Entry>,
    deadlines: BTreeSet<(Instant, u64)>,
    ids: HashMap<u64, TransactionKey>,
    next_id: u64,
    /// Server INVITE transactions by (Call-ID, CSeq number, From tag), to match 2xx ACKs.
    invites_by_dialog: HashMap<DialogMatch, TransactionKey>,
    output: VecDeque<Output>,
}

impl Transactions {
    /// An empty transaction layer with these timers.
    pub fn new(config: TimerConfig) -> Self {
        Self {
            config: config.sanitized(),
            entries: HashMap::new(),
            deadlines: BTreeSet::new(),
            ids: HashMap::new(),
            next_id: 0,
            invites_by_dialog: HashMap::new(),
            output: VecDeque::new(),
        }
    }

    // ----- getters -----

    /// The timer configuration.
    pub fn config(&self) -> &TimerConfig {
        &self.config
    }

    /// Number of live transactions.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no transaction is alive.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The state of a live transaction.
    pub fn state(&self, key: &TransactionKey) -> Option<TransactionState> {
        self.entries.get(key).map(|entry| entry.machine.state())
    }

    /// The server INVITE transaction a received CANCEL refers to (RFC 3261 9.2): same branch
    /// and sent-by (or the same RFC 2543 identifiers), method INVITE.
    pub fn cancel_target(&self, cancel: &Request) -> Option<TransactionKey> {
        let key = TransactionKey::for_server(cancel)
            .ok()?
            .with_method(Method::Invite);
        match self.entries.get(&key)?.machine {
            Machine::InviteServer(_) => Some(key),
            _ => None,
        }
    }

    // ----- input from the network and the clock -----

    /// A message received from `from` (already parsed). Requests create or hit server
    /// transactions, responses hit client transactions.
    pub fn handle_incoming(
        &mut self,
        now: Instant,
        message: SipMessage,
        from: Peer,
    ) -> Result<(), TransactionError> {
        match message {
            SipMessage::Request(request) if request.method == Method::Ack => {
                self.handle_ack(now, request, from)
            }
            SipMessage::Request(request) => self.handle_request(now, request, from),
            SipMessage::Response(response) => self.handle_response(now, response, from),
        }
    }

    /// Fires every timer due at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            let key = self
                .ids
                .get(&id)
                .cloned()
                .expect("every registered deadline has a live transaction id");
            self.with_machine(&key, |machine, context| {
                machine.handle_timeout(now, context)
            });
        }
    }

    // ----- commands from the transaction user -----

    /// Starts a client transaction for `request` and sends it to `to`. The request's top Via
    /// must carry a fresh branch (see [`crate::message::new_branch`]). An ACK is sent as is,
    /// without a transaction; its key is returned but not stored.
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Request,
        to: Peer,
    ) -> Result<TransactionKey, TransactionError> {
        let key = TransactionKey::for_client(&request)?;
        let cseq = request.cseq()?;
        if cseq.method != request.method {
            return Err(TransactionError::MethodMismatch {
                method: request.method,
                cseq: cseq.method,
            });
        }
        if request.method == Method::Ack {
            self.output.push_back(Output::Transmit {
                to,
                message: SipMessage::Request(request),
            });
            return Ok(key);
        }
        if self.entries.contains_key(&key) {
            return Err(TransactionError::Duplicate(key));
        }
        let mut context = Context::new(&key, &self.config, &mut self.output);
        let machine = if request.method == Method::Invite {
            Machine::InviteClient(ClientInvite::start(now, request, to, &mut context))
        } else {
            Machine::NonInviteClient(ClientNonInvite::start(now, request, to, &mut context))
        };
        self.insert(key.clone(), machine);
        Ok(key)
    }

    /// Sends the TU's response on server transaction `key`.
    pub fn send_response(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        response: Response,
    ) -> Result<(), TransactionError> {
        if !self.entries.contains_key(key) || key.role() != Role::Server {
            return Err(TransactionError::UnknownTransaction(key.clone()));
        }
        let cseq = response.cseq()?;
        if cseq.method != key.method() {
            return Err(TransactionError::ResponseMismatch(key.clone()));
        }
        self.with_machine(key, |machine, context| match machine {
            Machine::InviteServer(server) => server.send_response(now, response, context),
            Machine::NonInviteServer(server) => server.send_response(now, response, context),
            _ => unreachable_role(),
        })
    }

    /// Ends a transaction at once (e.g. after a transport error, or an INVITE whose CANCEL
    /// got no final response). Emits [`TransactionEvent::Terminated`].
    pub fn terminate(&mut self, key: &TransactionKey) -> Result<(), TransactionError> {
        if !self.entries.contains_key(key) {
            return Err(TransactionError::UnknownTransaction(key.clone()));
        }
        self.remove(key);
        Ok(())
    }

    // ----- output for the driver -----

    /// The next message to send or event to deliver.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.output.pop_front()
    }

    /// When [`Transactions::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(at, _)| at)
    }

    // ----- helpers -----

    fn handle_request(
        &mut self,
        now: Instant,
        request: Request,
        from: Peer,
    ) -> Result<(), TransactionError> {
        let key = TransactionKey::for_server(&request)?;
        if self.entries.contains_key(&key) {
            return self.with_machine(&key, |machine, context| {
                match machine {
                    Machine::InviteServer(server) => server.handle_retransmission(context),
                    Machine::NonInviteServer(server) => server.handle_retransmission(context),
                    _ => unreachable_role(),
                }
                Ok(())
            });
        }
        let mut context = Context::new(&key, &self.config, &mut self.output);
        let machine = if request.method == Method::Invite {
            if let Some(dialog) = DialogMatch::of(&request) {
                self.invites_by_dialog.insert(dialog, key.clone());
            }
            Machine::InviteServer(ServerInvite::start(now, request, from, &mut context))
        } else {
            Machine::NonInviteServer(ServerNonInvite::start(now, request, from, &mut context))
        };
        self.insert(key, machine);
        Ok(())
    }

    fn handle_ack(
        &mut self,
        now: Instant,
        ack: Request,
        from: Peer,
    ) -> Result<(), TransactionError> {
        let key = TransactionKey::for_server(&ack)?;
        let key = match self.entries.get(&key) {
            Some(_) => Some(key),
            None => DialogMatch::of(&ack)
                .and_then(|dialog| self.invites_by_dialog.get(&dialog))
                .filter(|key| self.state(key) == Some(TransactionState::Accepted))
                .cloned(),
        };
        let Some(key) = key else {
            self.output
                .push_back(Output::Event(TransactionEvent::StrayAck {
                    request: ack,
                    from,
                }));
            return Ok(());
        };
        self.with_machine(&key, |machine, context| {
            match machine {
                Machine::InviteServer(server) => server.handle_ack(now, ack, from, context),
                _ => unreachable_role(),
            }
            Ok(())
        })
    }

    fn handle_response(
        &mut self,
        now: Instant,
        response: Response,
        from: Peer,
    ) -> Result<(), TransactionError> {
        let key = TransactionKey::for_response(&response).ok();
        let Some(key) = key.filter(|key| self.entries.contains_key(key)) else {
            self.output
                .push_back(Output::Event(TransactionEvent::StrayResponse {
                    response,
                    from,
                }));
            return Ok(());
        };
        self.with_machine(&key, |machine, context| {
            match machine {
                Machine::InviteClient(client) => client.handle_response(now, response, context),
                Machine::NonInviteClient(client) => client.handle_response(now, response, context),
                _ => unreachable_role(),
            }
            Ok(())
        })
    }

    /// Runs `f` on the machine of `key`, then re-registers its deadline or removes it.
    fn with_machine<T>(
        &mut self,
        key: &TransactionKey,
        f: impl FnOnce(&mut Machine, &mut Context<'_>) -> T,
    ) -> T {
        let entry = self
            .entries
            .get_mut(key)
            .expect("callers check that the transaction exists");
        let mut context = Context::new(key, &self.config, &mut self.output);
        let result = f(&mut entry.machine, &mut context);
        if entry.machine.state() == TransactionState::Terminated {
            self.remove(key);
        } else {
            let (id, old, new) = (entry.id, entry.deadline, entry.machine.earliest());
            entry.deadline = new;
            self.reschedule(id, old, new);
        }
        result
    }

    fn insert(&mut self, key: TransactionKey, machine: Machine) {
        if machine.state() == TransactionState::Terminated {
            self.output
                .push_back(Output::Event(TransactionEvent::Terminated { key }));
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let deadline = machine.earliest();
        self.reschedule(id, None, deadline);
        self.ids.insert(id, key.clone());
        self.entries.insert(
            key,
            Entry {
                id,
                deadline,
                machine,
            },
        );
    }

    fn remove(&mut self, key: &TransactionKey) {
        let Some(entry) = self.entries.remove(key) else {
            return;
        };
        self.reschedule(entry.id, entry.deadline, None);
        self.ids.remove(&entry.id);
        if let Machine::InviteServer(server) = &entry.machine {
            if let Some(dialog) = DialogMatch::of(server.request()) {
                if self.invites_by_dialog.get(&dialog) == Some(key) {
                    self.invites_by_dialog.remove(&dialog);
                }
            }
        }
        self.output
            .push_back(Output::Event(TransactionEvent::Terminated {
                key: key.clone(),
            }));
    }

    fn reschedule(&mut self, id: u64, old: Option<Instant>, new: Option<Instant>) {
        if old == new {
            return;
        }
        if let Some(old) = old {
            self.deadlines.remove(&(old, id));
        }
        if let Some(new) = new {
            self.deadlines.insert((new, id));
        }
    }
}

impl Default for Transactions {
    fn default() -> Self {
        Self::new(TimerConfig::default())
    }
}

/// What a machine needs from the table while it handles an input.
pub(crate) struct Context<'a> {
    pub(crate) key: &'a TransactionKey,
    pub(crate) config: &'a TimerConfig,
    output: &'a mut VecDeque<Output>,
}

impl<'a> Context<'a> {
    fn new(
        key: &'a TransactionKey,
        config: &'a TimerConfig,
        output: &'a mut VecDeque<Output>,
    ) -> Self {
        Self {
            key,
            config,
            output,
        }
    }

    pub(crate) fn transmit(&mut self, to: Peer, message: impl Into<SipMessage>) {
        self.output.push_back(Output::Transmit {
            to,
            message: message.into(),
        });
    }

    pub(crate) fn event(&mut self, event: TransactionEvent) {
        self.output.push_back(Output::Event(event));
    }
}

#[derive(Debug)]
struct Entry {
    id: u64,
    deadline: Option<Instant>,
    machine: Machine,
}

#[derive(Debug)]
enum Machine {
    InviteClient(ClientInvite),
    NonInviteClient(ClientNonInvite),
    InviteServer(ServerInvite),
    NonInviteServer(ServerNonInvite),
}

impl Machine {
    fn state(&self) -> TransactionState {
        match self {
            Machine::InviteClient(machine) => machine.state(),
            Machine::NonInviteClient(machine) => machine.state(),
            Machine::InviteServer(machine) => machine.state(),
            Machine::NonInviteServer(machine) => machine.state(),
        }
    }

    fn earliest(&self) -> Option<Instant> {
        match self {
            Machine::InviteClient(machine) => machine.timers().earliest(),
            Machine::NonInviteClient(machine) => machine.timers().earliest(),
            Machine::InviteServer(machine) => machine.timers().earliest(),
            Machine::NonInviteServer(machine) => machine.timers().earliest(),
        }
    }

    fn handle_timeout(&mut self, now: Instant, context: &mut Context<'_>) {
        match self {
            Machine::InviteClient(machine) => machine.handle_timeout(now, context),
            Machine::NonInviteClient(machine) => machine.handle_timeout(now, context),
            Machine::InviteServer(machine) => machine.handle_timeout(now, context),
            Machine::NonInviteServer(machine) => machine.handle_timeout(now, context),
        }
    }
}

/// The roles in keys and machines always agree: keys of client transactions are only ever
/// created by `send_request` and those of server transactions by `handle_request`.
fn unreachable_role<T>() -> T {
    panic!("transaction key role and machine kind always agree")
}

/// Call-ID, CSeq number and From tag: how a 2xx ACK (own branch) finds its INVITE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DialogMatch {
    call_id: String,
    seq: u32,
    from_tag: String,
}

impl DialogMatch {
    fn of(request: &Request) -> Option<Self> {
        Some(Self {
            call_id: request.call_id()?.to_owned(),
            seq: request.cseq().ok()?.seq,
            from_tag: request.from_tag().unwrap_or_default().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{response_for, RequestBuilder, StatusCode, TransportKind, Uri};
    use std::time::Duration;

    fn uri(text: &str) -> Uri {
        Uri::try_from(text).expect("valid test URI")
    }

    fn request(method: Method, branch: &str) -> Request {
        RequestBuilder::new(method, uri("sip:bob@192.0.2.2"))
            .from(&uri("sip:alice@192.0.2.1"), None, "f1")
            .via(TransportKind::Udp, "192.0.2.1:5060")
            .branch(branch)
            .call_id("c1")
            .build()
            .expect("complete request")
    }

    fn peer() -> Peer {
        Peer::udp("192.0.2.2:5060".parse().expect("address"))
    }

    #[test]
    fn send_request_validates_and_refuses_duplicates() {
        let now = Instant::now();
        let mut layer = Transactions::default();
        let key = layer
            .send_request(now, request(Method::Options, "z9hG4bKa"), peer())
            .expect("valid");
        assert_eq!(layer.state(&key), Some(TransactionState::Trying));
        assert_eq!(
            layer.send_request(now, request(Method::Options, "z9hG4bKa"), peer()),
            Err(TransactionError::Duplicate(key.clone()))
        );
        assert_eq!(
            layer.send_request(now, request(Method::Options, "old"), peer()),
            Err(TransactionError::MissingBranch)
        );
        let mut wrong = request(Method::Bye, "z9hG4bKb");
        wrong.method = Method::Info;
        assert!(matches!(
            layer.send_request(now, wrong, peer()),
            Err(TransactionError::MethodMismatch { .. })
        ));
        assert_eq!(layer.len(), 1);
        assert_eq!(layer.poll_timeout(), Some(now + Duration::from_millis(500)));
    }

    #[test]
    fn ack_is_sent_without_a_transaction() {
        let now = Instant::now();
        let mut layer = Transactions::default();
        layer
            .send_request(now, request(Method::Ack, "z9hG4bKack"), peer())
            .expect("valid ACK");
        assert!(layer.is_empty());
        assert_eq!(layer.poll_timeout(), None);
        assert!(matches!(layer.poll_output(), Some(Output::Transmit { .. })));
        assert_eq!(layer.poll_output(), None);
    }

    #[test]
    fn terminate_removes_and_reports() {
        let now = Instant::now();
        let mut layer = Transactions::default();
        let key = layer
            .send_request(now, request(Method::Invite, "z9hG4bKi"), peer())
            .expect("valid");
        while layer.poll_output().is_some() {}
        layer.terminate(&key).expect("exists");
        assert!(layer.is_empty());
        assert_eq!(layer.poll_timeout(), None);
        assert_eq!(
            layer.poll_output(),
            Some(Output::Event(TransactionEvent::Terminated {
                key: key.clone()
            }))
        );
        assert_eq!(
            layer.terminate(&key),
            Err(TransactionError::UnknownTransaction(key))
        );
    }

    #[test]
    fn server_side_refuses_foreign_responses() {
        let now = Instant::now();
        let mut layer = Transactions::default();
        let invite = request(Method::Invite, "z9hG4bKs");
        layer
            .handle_incoming(now, invite.clone().into(), peer())
            .expect("matchable");
        let Some(Output::Event(TransactionEvent::Request { key, .. })) = layer.poll_output() else {
            panic!("expected the new server transaction")
        };
        let bye = request(Method::Bye, "z9hG4bKs");
        let wrong = response_for(&bye, StatusCode::OK, Some("t"));
        assert_eq!(
            layer.send_response(now, &key, wrong),
            Err(TransactionError::ResponseMismatch(key.clone()))
        );
        let ok = response_for(&invite, StatusCode::OK, Some("t"));
        layer.send_response(now, &key, ok).expect("accepted");
        assert_eq!(layer.state(&key), Some(TransactionState::Accepted));
        // Timer G (T1) for the 2xx, Timer L at 64*T1.
        assert_eq!(layer.poll_timeout(), Some(now + Duration::from_millis(500)));
        layer.handle_timeout(now + Duration::from_secs(40));
        assert!(layer.is_empty());
    }
}
