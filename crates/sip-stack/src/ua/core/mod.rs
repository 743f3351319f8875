//! The user agent core: every call's SIP logic, sans-IO.
//!
//! The core owns the transaction layer, the dialogs and the per-call state
//! (UAC and UAS). It takes messages from the network, commands from the
//! application and the current time, and produces messages to transmit and
//! call events. The tokio driver in [`super`] is the only code that reads
//! the clock or touches a socket.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;

use tracing::{debug, info, warn};

use super::events::{
    parse_q850, CallEvent, EndReason, FailureCause, IncomingInvite, Party, TransportFailure,
};
use super::session;
use super::{CallId, Command, OutgoingCall, UaConfig};
use crate::auth::{new_cnonce, AuthError, Challenge, Credentials, DigestServer};
use crate::dialog::{Dialog, LocalContact};
use crate::message::raw::headers::UntypedHeader;
use crate::message::{
    cancel_for, header_name, new_branch, new_tag, response_for, set_received_rport, Header,
    MessageError, MessageExt, Method, Peer, Request, Response, SipMessage, StatusCode,
};
use crate::sdp::{Direction, SessionDescription};
use crate::session_timer::{Action, Negotiated, SessionTimer, UacSessionTimer, UasDecision};
use crate::transaction::{
    Output as TransactionOutput, TransactionEvent, TransactionKey, Transactions,
};

mod in_dialog;
mod inbound;
mod outbound;
mod unsupported;

/// What the core asks its driver to do.
#[derive(Debug)]
pub(crate) enum CoreOutput {
    /// Send a message.
    Transmit { to: Peer, message: SipMessage },
    /// Send bytes built without the parser (400 for unparseable requests).
    Raw { to: Peer, bytes: Vec<u8> },
    /// Tell the application about a call.
    Event { call: CallId, event: CallEvent },
    /// A new incoming call for the application to ring, answer or reject.
    Incoming {
        call: CallId,
        invite: IncomingInvite,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Uac,
    Uas,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// UAC: INVITE sent, no final response yet. UAS: INVITE received, not answered.
    Setup,
    /// 2xx sent or received.
    Established,
    /// BYE sent or received, or failed: waiting only for transactions to finish.
    Ending,
}

/// Per-call timers kept in one heap with lazy deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum CallTimer {
    /// RFC 3261 9.1: no final response 64*T1 after our CANCEL.
    CancelGiveUp,
    /// The session timer (RFC 4028) wants attention.
    Session,
    /// Forget the call's state after its transactions are done.
    Reap,
}

struct Call {
    role: Role,
    phase: Phase,
    peer: Peer,
    local: LocalContact,
    /// UAC: the INVITE last sent. UAS: the INVITE received.
    invite: Request,
    invite_key: Option<TransactionKey>,
    dialog: Option<Dialog>,
    local_tag: String,
    local_sdp: Option<String>,
    /// UAC: a CANCEL was asked for before any provisional response.
    cancel_pending: bool,
    cancel_sent: bool,
    got_provisional: bool,
    credentials: Option<Credentials>,
    auth_attempts: u8,
    session: Option<SessionTimer>,
    /// The session timer deadline currently in the timer heap.
    session_deadline: Option<Instant>,
    /// UAC: the RFC 4028 negotiation of the INVITE (and its 422 retries).
    uac_timer: UacSessionTimer,
    /// Transactions of this call still in the transaction layer.
    transactions: u32,
    /// A refresh/update we sent is outstanding.
    refresh_key: Option<TransactionKey>,
    /// UAS: a hang-up asked for before the ACK of our 2xx arrived. RFC 3261
    /// 15 forbids a BYE until then; it goes out with the ACK (or when the 2xx
    /// retransmissions give up).
    bye_after_ack: Option<EndReason>,
    /// Networks besides the peer's own address that may send requests in the dialog
    /// (a carrier's other signalling hosts); anything else is answered 403.
    trusted: Vec<IpNet>,
    ended: bool,
}

/// The user agent core.
pub(crate) struct Core {
    config: UaConfig,
    transactions: Transactions,
    calls: HashMap<CallId, Call>,
    by_dialog: HashMap<(String, String), CallId>,
    by_transaction: HashMap<TransactionKey, CallId>,
    timers: BinaryHeap<Reverse<(Instant, CallId, CallTimer)>>,
    outputs: VecDeque<CoreOutput>,
    locals: Locals,
    next_incoming: u64,
    /// Digest challenges and checks of incoming INVITEs the application asks for.
    digest: DigestServer,
    /// Wall-clock time at `anchor.0`, so nonces get wall time from the `now` passed in.
    anchor: (Instant, SystemTime),
    /// While draining: new INVITEs and out-of-dialog OPTIONS are answered 503 with this
    /// `Retry-After`, so a load balancer probing with OPTIONS sends its calls elsewhere.
    draining: Option<Duration>,
}

/// Our addresses per transport, for Via and Contact.
#[derive(Debug, Clone)]
pub(crate) struct Locals {
    pub(crate) udp: Option<LocalContact>,
    pub(crate) tcp: Option<LocalContact>,
}

impl Locals {
    fn for_peer(&self, peer: &Peer) -> Option<LocalContact> {
        match peer.transport {
            crate::message::TransportKind::Udp => self.udp.clone(),
            crate::message::TransportKind::Tcp => self.tcp.clone(),
        }
    }
}

const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE";
/// Ids of incoming calls count down from the top so they never meet the
/// application's outbound ids, which count up from 1.
const INCOMING_ID_BASE: u64 = u64::MAX / 2;

impl Call {
    /// Whether a request of this call may come from `from`: the address the call was set
    /// up with, or one of its [trusted](Call::trusted) networks. Ports may differ (TCP
    /// connections, NAT), addresses may not.
    fn accepts_from(&self, from: &Peer) -> bool {
        let ip = from.addr.ip().to_canonical();
        ip == self.peer.addr.ip().to_canonical()
            || self.trusted.iter().any(|network| network.contains(&ip))
    }
}

impl Core {
    pub(crate) fn new(config: UaConfig, locals: Locals) -> Self {
        let transactions = Transactions::new(config.timers);
        let digest = DigestServer::new(config.digest.clone());
        Self {
            config,
            transactions,
            calls: HashMap::new(),
            by_dialog: HashMap::new(),
            by_transaction: HashMap::new(),
            timers: BinaryHeap::new(),
            outputs: VecDeque::new(),
            locals,
            next_incoming: INCOMING_ID_BASE,
            digest,
            anchor: (Instant::now(), SystemTime::now()),
            draining: None,
        }
    }

    /// Calls with state still held (established, ringing or finishing).
    pub(crate) fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Transactions still held by the transaction layer.
    pub(crate) fn transaction_count(&self) -> usize {
        self.transactions.len()
    }

    pub(crate) fn poll_output(&mut self) -> Option<CoreOutput> {
        if let Some(output) = self.outputs.pop_front() {
            return Some(output);
        }
        self.pump_transactions(None);
        self.outputs.pop_front()
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let call = self.timers.peek().map(|Reverse((at, _, _))| *at);
        match (call, self.transactions.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.transactions.handle_timeout(now);
        self.pump_transactions(Some(now));
        while let Some(Reverse((at, call, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if timer == CallTimer::Session {
                let current = self.calls.get(&call).and_then(|c| c.session_deadline);
                if current != Some(at) {
                    continue; // superseded by a later arm_session_timer
                }
                if let Some(c) = self.calls.get_mut(&call) {
                    c.session_deadline = None;
                }
            }
            self.on_call_timer(now, call, timer);
        }
        self.pump_transactions(Some(now));
    }

    pub(crate) fn handle_message(&mut self, now: Instant, message: SipMessage, from: Peer) {
        let message = match message {
            SipMessage::Request(mut request) => {
                if let Err(error) = set_received_rport(&mut request, from.addr) {
                    debug!(%error, from = %from.addr, "request without a usable Via; dropped");
                    return;
                }
                SipMessage::Request(request)
            }
            response => response,
        };
        if let Err(error) = self.transactions.handle_incoming(now, message, from) {
            debug!(%error, from = %from.addr, "message not taken by the transaction layer");
        }
        self.pump_transactions(Some(now));
    }

    /// Bytes that are no [`SipMessage`]: a valid request we do not implement gets 501 or 416
    /// (see [`unsupported`]); one of another SIP version 505; anything else a 400 when a
    /// response can be built, else nothing.
    pub(crate) fn handle_malformed(&mut self, bytes: &[u8], error: &MessageError, from: Peer) {
        let code = match error {
            MessageError::UnknownMethod { .. } | MessageError::UnsupportedUriScheme { .. } => {
                self.handle_unsupported(bytes, from);
                return;
            }
            MessageError::UnsupportedVersion { .. } => 505,
            _ => 400,
        };
        if let Some(response) = super::malformed::bad_request(bytes, code, &error.to_string()) {
            self.outputs.push_back(CoreOutput::Raw {
                to: from,
                bytes: response.into_bytes(),
            });
        }
    }

    pub(crate) fn handle_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Invite { call, request } => self.start_invite(now, call, *request),
            Command::Cancel { call } => self.cancel(now, call),
            Command::Hangup { call } => self.hangup(now, call, EndReason::Bye),
            Command::Ring { call, sdp } => self.ring(now, call, sdp),
            Command::Answer { call, sdp } => self.answer(now, call, sdp),
            Command::Reject {
                call,
                code,
                retry_after,
            } => self.reject_retry_after(now, call, code, retry_after),
            Command::Reinvite { call, sdp } => self.reinvite(now, call, sdp),
            Command::Authenticate { call, credentials } => {
                self.authenticate(now, call, &credentials)
            }
            Command::Trust { call, networks } => {
                if let Some(call) = self.calls.get_mut(&call) {
                    call.trusted = networks;
                }
            }
            Command::Drain { retry_after } => self.draining = retry_after,
        }
        self.pump_transactions(Some(now));
    }

    /// Ends every call: BYE for established ones, CANCEL or 503 for the rest.
    pub(crate) fn shutdown(&mut self, now: Instant) {
        let ids: Vec<CallId> = self.calls.keys().copied().collect();
        for id in ids {
            let Some(call) = self.calls.get(&id) else {
                continue;
            };
            match (call.role, call.phase) {
                (_, Phase::Established) => self.hangup(now, id, EndReason::Shutdown),
                (Role::Uac, Phase::Setup) => self.cancel(now, id),
                (Role::Uas, Phase::Setup) => self.reject(now, id, 503),
                (_, Phase::Ending) => {}
            }
        }
        self.pump_transactions(Some(now));
    }

    fn pump_transactions(&mut self, now: Option<Instant>) {
        while let Some(output) = self.transactions.poll_output() {
            match output {
                TransactionOutput::Transmit { to, message } => {
                    self.outputs.push_back(CoreOutput::Transmit { to, message })
                }
                TransactionOutput::Event(event) => {
                    let Some(now) = now else {
                        // Events only arise from input or timeouts, which always pass `now`.
                        warn!(?event, "transaction event without a time; dropped");
                        continue;
                    };
                    self.on_transaction_event(now, event);
                }
            }
        }
    }

    fn on_transaction_event(&mut self, now: Instant, event: TransactionEvent) {
        match event {
            TransactionEvent::Request { key, request, from } => {
                self.on_request(now, key, request, from)
            }
            TransactionEvent::Response { key, response, .. } => {
                self.on_response(now, key, response)
            }
            TransactionEvent::Timeout { key, .. } => self.on_transaction_timeout(now, key),
            TransactionEvent::AckTimeout { key } => {
                if let Some(id) = self.by_transaction.get(&key).copied() {
                    warn!(call = id.0, "no ACK for our 2xx; ending the call");
                    self.hangup(now, id, EndReason::AckTimeout);
                }
            }
            TransactionEvent::Ack { request, .. } => self.on_ack(now, request),
            TransactionEvent::Terminated { key } => {
                if let Some(id) = self.untrack(&key) {
                    self.maybe_reap(id);
                }
            }
            _ => {}
        }
    }

    fn on_request(&mut self, now: Instant, key: TransactionKey, request: Request, from: Peer) {
        if self.refuse_unsupported_extensions(now, &key, &request) {
            return;
        }
        let to_tag = request.to_tag().map(str::to_string);
        match (&request.method, to_tag) {
            (Method::Invite | Method::Options, None) if self.draining.is_some() => {
                let after = self.draining.unwrap_or_default();
                let mut response =
                    response_for(&request, StatusCode::ServiceUnavailable, Some(&new_tag()));
                push_before_length(
                    &mut response,
                    [Header::Other(
                        "Retry-After".into(),
                        after.as_secs().max(1).to_string(),
                    )],
                );
                self.respond(now, &key, response);
            }
            (Method::Invite, None) => self.on_new_invite(now, key, request, from),
            (Method::Cancel, _) => self.on_cancel(now, key, request, from),
            (Method::Options, None) => {
                let mut response = response_for(&request, StatusCode::OK, Some(&new_tag()));
                push_capabilities(&mut response);
                self.respond(now, &key, response);
            }
            (Method::Ack, _) => {}
            (_, Some(tag)) => self.on_in_dialog(now, key, request, tag, from),
            (method, None) => {
                let code = if matches!(method, Method::Bye | Method::Update | Method::Info) {
                    StatusCode::CallTransactionDoesNotExist
                } else {
                    StatusCode::MethodNotAllowed
                };
                let mut response = response_for(&request, code, Some(&new_tag()));
                response
                    .headers
                    .push(crate::message::raw::headers::Allow::new(ALLOW).into());
                self.respond(now, &key, response);
            }
        }
    }

    fn on_response(&mut self, now: Instant, key: TransactionKey, response: Response) {
        let Some(id) = self.by_transaction.get(&key).copied() else {
            return;
        };
        let method = response.cseq().ok().map(|c| c.method);
        let is_invite_tx = self
            .calls
            .get(&id)
            .is_some_and(|call| call.invite_key.as_ref() == Some(&key));
        match method {
            Some(Method::Invite) if is_invite_tx => self.on_invite_response(now, id, response),
            Some(Method::Invite) | Some(Method::Update) => {
                self.on_refresh_response(now, id, key, response)
            }
            Some(Method::Cancel) => self.on_cancel_response(id, response.status_code.code()),
            Some(Method::Bye) => {
                debug!(
                    call = id.0,
                    code = response.status_code.code(),
                    "response to BYE"
                );
            }
            _ => {}
        }
    }

    fn on_transaction_timeout(&mut self, now: Instant, key: TransactionKey) {
        let Some(id) = self.by_transaction.get(&key).copied() else {
            return;
        };
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.invite_key.as_ref() == Some(&key) && call.phase == Phase::Setup {
            let event = if call.role == Role::Uac {
                // Timer B runs only until the first response: nothing came back.
                info!(call = id.0, to = %call.peer.addr, "no response to the INVITE (Timer B)");
                failed_because(408, "no response (Timer B)", FailureCause::NoResponse)
            } else {
                failed(408, "no ACK")
            };
            self.end(now, id, event);
            return;
        }
        if call.refresh_key.as_ref() == Some(&key) {
            warn!(call = id.0, "refresh timed out: ending the call");
            if let Some(call) = self.calls.get_mut(&id) {
                call.refresh_key = None;
            }
            self.hangup(now, id, EndReason::DialogLost);
        }
    }

    fn on_call_timer(&mut self, now: Instant, id: CallId, timer: CallTimer) {
        match timer {
            CallTimer::CancelGiveUp => {
                let Some(call) = self.calls.get(&id) else {
                    return;
                };
                if call.phase == Phase::Setup && !call.ended {
                    self.end(
                        now,
                        id,
                        failed(487, "cancelled; no final response to CANCEL"),
                    );
                    self.reap_later(now, id);
                }
            }
            CallTimer::Session => {
                let Some(call) = self.calls.get_mut(&id) else {
                    return;
                };
                let Some(session) = call.session.as_mut() else {
                    return;
                };
                match session.handle_timeout(now) {
                    Some(Action::SendRefresh) => {
                        let method = if self.config.refresh_with_update {
                            Method::Update
                        } else {
                            Method::Invite
                        };
                        if call.refresh_key.is_none() {
                            self.send_refresh(now, id, method);
                        }
                    }
                    Some(Action::SendBye) => {
                        warn!(call = id.0, "session timer expired without refresh");
                        self.hangup(now, id, EndReason::SessionExpired);
                        return;
                    }
                    None => {}
                }
                self.arm_session_timer(id);
            }
            CallTimer::Reap => self.maybe_reap(id),
        }
    }

    /// Puts the call's session timer deadline in the heap, once per distinct
    /// deadline; superseded heap entries are skipped when they come up.
    fn arm_session_timer(&mut self, id: CallId) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let at = call.session.as_ref().and_then(SessionTimer::poll_timeout);
        if at == call.session_deadline {
            return;
        }
        call.session_deadline = at;
        if let Some(at) = at {
            self.timers.push(Reverse((at, id, CallTimer::Session)));
        }
    }

    fn reap_later(&mut self, now: Instant, id: CallId) {
        let at = now + self.config.timers.t1 * 64 + Duration::from_secs(1);
        self.timers.push(Reverse((at, id, CallTimer::Reap)));
    }

    /// Drops a finished call once no transaction refers to it any more.
    fn maybe_reap(&mut self, id: CallId) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if !call.ended {
            return;
        }
        if call.transactions > 0 {
            // The last transaction's Terminated event brings us back here.
            return;
        }
        let call = self.calls.remove(&id).expect("checked above");
        let call_id = call.invite.call_id().unwrap_or_default().to_string();
        self.by_dialog.remove(&(call_id, call.local_tag));
        debug!(call = id.0, "call state released");
    }

    /// Remembers which call a transaction belongs to.
    fn track(&mut self, key: TransactionKey, id: CallId) {
        if self.by_transaction.insert(key, id).is_none() {
            if let Some(call) = self.calls.get_mut(&id) {
                call.transactions += 1;
            }
        }
    }

    /// Forgets a transaction; returns the call it belonged to.
    fn untrack(&mut self, key: &TransactionKey) -> Option<CallId> {
        let id = self.by_transaction.remove(key)?;
        if let Some(call) = self.calls.get_mut(&id) {
            call.transactions = call.transactions.saturating_sub(1);
        }
        Some(id)
    }

    /// Starts a client transaction; a request we built that the layer refuses is a bug, logged.
    fn send(&mut self, now: Instant, request: Request, to: Peer) -> Option<TransactionKey> {
        match self.transactions.send_request(now, request, to) {
            Ok(key) => Some(key),
            Err(error) => {
                warn!(%error, "request not sent");
                None
            }
        }
    }

    /// Answers on a server transaction (which may be gone already: logged, not fatal).
    fn respond(&mut self, now: Instant, key: &TransactionKey, response: Response) {
        if let Err(error) = self.transactions.send_response(now, key, response) {
            debug!(%error, "response not sent");
        }
    }

    fn emit(&mut self, id: CallId, event: CallEvent) {
        self.outputs
            .push_back(CoreOutput::Event { call: id, event });
    }

    /// Emits the call's terminal event once, and marks it for release.
    fn end(&mut self, now: Instant, id: CallId, event: CallEvent) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.ended {
            return;
        }
        call.ended = true;
        call.phase = Phase::Ending;
        call.session = None;
        self.emit(id, event);
        self.reap_later(now, id);
    }

    fn in_dialog_peer(&self, id: CallId) -> Peer {
        self.calls
            .get(&id)
            .map(|call| call.peer)
            .expect("caller holds a live call id")
    }
}

/// Adds headers ahead of Content-Length, so it stays last as people expect to read it.
fn push_before_length<M: crate::message::raw::message::HasHeaders>(
    message: &mut M,
    extra: impl IntoIterator<Item = Header>,
) {
    let headers = message.headers_mut();
    let mut all: Vec<Header> = headers.iter().cloned().collect();
    let at = all
        .iter()
        .position(|h| matches!(h, Header::ContentLength(_)))
        .unwrap_or(all.len());
    let tail = all.split_off(at);
    all.extend(extra);
    all.extend(tail);
    *headers = all.into();
}

/// A failure this user agent decided itself.
fn failed(code: u16, reason: &str) -> CallEvent {
    failed_because(code, reason, FailureCause::Local)
}

fn failed_because(code: u16, reason: &str, cause: FailureCause) -> CallEvent {
    CallEvent::Failed {
        code,
        reason: reason.to_string(),
        q850: None,
        cause,
    }
}

fn body_text(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    String::from_utf8(body.to_vec()).ok()
}

fn is_named(header: &Header, name: &str) -> bool {
    header_name(header).eq_ignore_ascii_case(name)
}

fn push_capabilities(response: &mut Response) {
    response
        .headers
        .push(crate::message::raw::headers::Allow::new(ALLOW).into());
    response
        .headers
        .push(crate::message::raw::headers::Accept::new("application/sdp").into());
    response
        .headers
        .push(crate::message::raw::headers::Supported::new("timer").into());
}
