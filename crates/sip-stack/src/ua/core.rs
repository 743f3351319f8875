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

use tracing::{debug, info, warn};

use super::events::{parse_q850, CallEvent, EndReason, IncomingInvite, Party};
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
    /// Digest checking of incoming INVITEs, when configured.
    digest: Option<DigestServer>,
    /// Wall-clock time at `anchor.0`, so nonces get wall time from the `now` passed in.
    anchor: (Instant, SystemTime),
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

impl Core {
    pub(crate) fn new(config: UaConfig, locals: Locals) -> Self {
        let transactions = Transactions::new(config.timers);
        let digest = config
            .inbound_auth
            .as_ref()
            .map(|auth| DigestServer::new(auth.server.clone()));
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

    /// Bytes that did not parse: a 400 when a response can be built, else nothing.
    pub(crate) fn handle_malformed(&mut self, bytes: &[u8], error: &MessageError, from: Peer) {
        if let Some(response) = super::malformed::bad_request(bytes, &error.to_string()) {
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
            Command::Reject { call, code } => self.reject(now, call, code),
            Command::Reinvite { call, sdp } => self.reinvite(now, call, sdp),
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

    // ----- commands -----

    fn start_invite(&mut self, now: Instant, id: CallId, outgoing: OutgoingCall) {
        let Some(local) = self.locals.for_peer(&outgoing.peer) else {
            self.emit(
                id,
                failed(503, "transport not enabled for this destination"),
            );
            return;
        };
        let local_tag = new_tag();
        let uac_timer = UacSessionTimer::new(&self.config.session_timer);
        let invite = self.build_invite(&outgoing, &local, &local_tag, &uac_timer);
        let sdp = outgoing.sdp.clone();
        let call = Call {
            role: Role::Uac,
            phase: Phase::Setup,
            peer: outgoing.peer,
            local,
            invite: invite.clone(),
            invite_key: None,
            dialog: None,
            local_tag: local_tag.clone(),
            local_sdp: sdp,
            cancel_pending: false,
            cancel_sent: false,
            got_provisional: false,
            credentials: outgoing.credentials,
            auth_attempts: 0,
            session: None,
            session_deadline: None,
            uac_timer,
            refresh_key: None,
            transactions: 0,
            ended: false,
        };
        self.calls.insert(id, call);
        self.by_dialog
            .insert((outgoing.call_id.clone(), local_tag), id);
        info!(call = id.0, sip_call_id = %outgoing.call_id, to = %outgoing.peer.addr, "sending INVITE");
        let Some(key) = self.send(now, invite, outgoing.peer) else {
            return;
        };
        self.track(key.clone(), id);
        if let Some(call) = self.calls.get_mut(&id) {
            call.invite_key = Some(key);
        }
    }

    fn build_invite(
        &self,
        outgoing: &OutgoingCall,
        local: &LocalContact,
        tag: &str,
        uac_timer: &UacSessionTimer,
    ) -> Request {
        let mut headers: Vec<Header> = Vec::with_capacity(16);
        headers.push(crate::message::raw::headers::Via::new(local.via_value(&new_branch())).into());
        headers.push(crate::message::raw::headers::MaxForwards::new("70").into());
        headers.push(
            crate::message::raw::headers::From::new(format!("{};tag={tag}", outgoing.from)).into(),
        );
        headers.push(crate::message::raw::headers::To::new(outgoing.to.clone()).into());
        headers.push(crate::message::raw::headers::CallId::new(outgoing.call_id.clone()).into());
        headers.push(crate::message::raw::headers::CSeq::new("1 INVITE").into());
        headers.push(crate::message::raw::headers::Contact::new(local.contact_value()).into());
        headers.push(crate::message::raw::headers::Allow::new(ALLOW).into());
        headers.push(
            crate::message::raw::headers::UserAgent::new(self.config.user_agent.clone()).into(),
        );
        headers.extend(session::request_headers(&uac_timer.request_headers()));
        for (name, value) in &outgoing.extra_headers {
            headers.push(Header::Other(name.clone(), value.clone()));
        }
        let body = outgoing
            .sdp
            .clone()
            .map(String::into_bytes)
            .unwrap_or_default();
        if !body.is_empty() {
            headers.push(crate::message::raw::headers::ContentType::new("application/sdp").into());
        }
        headers
            .push(crate::message::raw::headers::ContentLength::new(body.len().to_string()).into());
        Request {
            method: Method::Invite,
            uri: outgoing.request_uri.clone(),
            version: crate::message::Version::V2,
            headers: headers.into(),
            body,
        }
    }

    fn cancel(&mut self, now: Instant, id: CallId) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.role != Role::Uac || call.phase != Phase::Setup || call.cancel_sent {
            if call.phase == Phase::Established {
                self.hangup(now, id, EndReason::Bye);
            }
            return;
        }
        if !call.got_provisional {
            // 9.1: a CANCEL may only follow a provisional response.
            call.cancel_pending = true;
            return;
        }
        self.send_cancel(now, id);
    }

    fn send_cancel(&mut self, now: Instant, id: CallId) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.cancel_pending = false;
        call.cancel_sent = true;
        let cancel = match cancel_for(&call.invite) {
            Ok(cancel) => cancel,
            Err(error) => {
                warn!(call = id.0, %error, "cannot build CANCEL");
                return;
            }
        };
        let peer = call.peer;
        debug!(call = id.0, "sending CANCEL");
        let Some(key) = self.send(now, cancel, peer) else {
            return;
        };
        self.track(key, id);
        let give_up = now + self.config.timers.t1 * 64;
        self.timers
            .push(Reverse((give_up, id, CallTimer::CancelGiveUp)));
    }

    fn hangup(&mut self, now: Instant, id: CallId, reason: EndReason) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        match call.phase {
            Phase::Setup if call.role == Role::Uac => {
                self.cancel(now, id);
                return;
            }
            Phase::Setup => {
                self.reject(now, id, 480);
                return;
            }
            Phase::Ending => return,
            Phase::Established => {}
        }
        let peer = call.peer;
        call.phase = Phase::Ending;
        call.session = None;
        let bye = match call.dialog.as_mut() {
            Some(dialog) => dialog.request(Method::Bye, &call.local, None, None),
            None => return,
        };
        info!(call = id.0, "sending BYE");
        let Some(key) = self.send(now, bye, peer) else {
            return;
        };
        self.track(key, id);
        self.end(
            now,
            id,
            CallEvent::Ended {
                by: Party::Local,
                reason,
                q850: None,
            },
        );
    }

    fn ring(&mut self, now: Instant, id: CallId, sdp: Option<String>) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let (Some(key), Role::Uas, Phase::Setup) = (call.invite_key.clone(), call.role, call.phase)
        else {
            return;
        };
        let code = if sdp.is_some() { 183 } else { 180 };
        let response = self.uas_response(call, code, sdp.as_deref());
        self.respond(now, &key, response);
    }

    fn answer(&mut self, now: Instant, id: CallId, sdp: String) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let (Some(key), Role::Uas, Phase::Setup) = (call.invite_key.clone(), call.role, call.phase)
        else {
            return;
        };
        let mut response = self.uas_response(call, 200, Some(&sdp));
        let mut timer = None;
        if let Ok(UasDecision::Accept {
            response: headers,
            negotiated,
        }) = session::decide(&call.invite, &self.config.session_timer)
        {
            push_before_length(&mut response, session::response_headers(&headers));
            timer = Some(SessionTimer::new(
                now,
                &negotiated,
                &self.config.session_timer,
            ));
        }
        self.respond(now, &key, response);
        if let Some(call) = self.calls.get_mut(&id) {
            call.phase = Phase::Established;
            call.local_sdp = Some(sdp);
            if let Some(dialog) = call.dialog.as_mut() {
                dialog.confirm();
            }
            call.session = timer;
        }
        self.arm_session_timer(id);
    }

    fn reject(&mut self, now: Instant, id: CallId, code: u16) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let (Some(key), Role::Uas, Phase::Setup) = (call.invite_key.clone(), call.role, call.phase)
        else {
            return;
        };
        let code = code.clamp(300, 699);
        let response = self.uas_response(call, code, None);
        self.respond(now, &key, response);
        self.end(now, id, failed(code, &StatusCode::from(code).to_string()));
    }

    fn reinvite(&mut self, now: Instant, id: CallId, sdp: String) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.phase != Phase::Established || call.refresh_key.is_some() {
            return;
        }
        call.local_sdp = Some(sdp.clone());
        self.send_refresh(now, id, Method::Invite);
    }

    /// Sends a re-INVITE (with our current SDP) or an UPDATE refreshing the session.
    fn send_refresh(&mut self, now: Instant, id: CallId, method: Method) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(dialog) = call.dialog.as_mut() else {
            return;
        };
        let body = match method {
            Method::Invite => call
                .local_sdp
                .clone()
                .map(|sdp| ("application/sdp", sdp.into_bytes())),
            _ => None,
        };
        let mut request = dialog.request(method, &call.local, body, None);
        if let Some(session) = &call.session {
            push_before_length(
                &mut request,
                session::request_headers(&session.refresh_headers()),
            );
        }
        let peer = call.peer;
        let Some(key) = self.send(now, request, peer) else {
            return;
        };
        if let Some(call) = self.calls.get_mut(&id) {
            call.refresh_key = Some(key.clone());
        }
        self.track(key, id);
    }

    // ----- network input -----

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
            TransactionEvent::Ack { request, .. } => self.on_ack(request),
            TransactionEvent::Terminated { key } => {
                if let Some(id) = self.untrack(&key) {
                    self.maybe_reap(id);
                }
            }
            _ => {}
        }
    }

    fn on_request(&mut self, now: Instant, key: TransactionKey, request: Request, from: Peer) {
        let to_tag = request.to_tag().map(str::to_string);
        match (&request.method, to_tag) {
            (Method::Invite, None) => self.on_new_invite(now, key, request, from),
            (Method::Cancel, _) => self.on_cancel(now, key, request),
            (Method::Options, None) => {
                let mut response = response_for(&request, StatusCode::OK, Some(&new_tag()));
                push_capabilities(&mut response);
                self.respond(now, &key, response);
            }
            (Method::Ack, _) => {}
            (_, Some(tag)) => self.on_in_dialog(now, key, request, tag),
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

    fn on_new_invite(&mut self, now: Instant, key: TransactionKey, invite: Request, from: Peer) {
        let Some(local) = self.locals.for_peer(&from) else {
            return;
        };
        match session::decide(&invite, &self.config.session_timer) {
            Ok(UasDecision::Accept { .. }) => {}
            Ok(UasDecision::Reject { min_se }) => {
                let mut response = response_for(&invite, StatusCode::from(422), Some(&new_tag()));
                push_before_length(
                    &mut response,
                    [Header::Other("Min-SE".into(), min_se.to_string())],
                );
                self.respond(now, &key, response);
                return;
            }
            Err(error) => {
                debug!(%error, "bad session timer headers");
                let response = response_for(&invite, StatusCode::BadRequest, Some(&new_tag()));
                self.respond(now, &key, response);
                return;
            }
        }
        let authenticated_user = match self.authenticate(now, &invite) {
            Ok(user) => user,
            Err(challenge) => {
                let mut response =
                    response_for(&invite, StatusCode::Unauthorized, Some(&new_tag()));
                push_before_length(&mut response, [challenge]);
                self.respond(now, &key, response);
                return;
            }
        };
        let local_tag = new_tag();
        let dialog = match Dialog::uas(&invite, &local_tag) {
            Ok(dialog) => dialog,
            Err(error) => {
                let response = response_for(&invite, StatusCode::BadRequest, Some(&local_tag));
                debug!(%error, "INVITE cannot make a dialog");
                self.respond(now, &key, response);
                return;
            }
        };
        self.next_incoming += 1;
        let id = CallId(self.next_incoming);
        let call_id = dialog.id().call_id.clone();
        let info = IncomingInvite {
            request_uri: invite.uri.clone(),
            from: invite.header("From").unwrap_or_default().to_string(),
            to: invite.header("To").unwrap_or_default().to_string(),
            called_user: invite.uri.user().map(str::to_string),
            caller_user: invite
                .from_uri()
                .ok()
                .and_then(|uri| uri.user().map(str::to_string)),
            call_id: call_id.clone(),
            source: from,
            sdp: body_text(&invite.body),
            authenticated_user,
        };
        info!(call = id.0, sip_call_id = %call_id, from = %from.addr, "incoming INVITE");
        self.by_dialog.insert((call_id, local_tag.clone()), id);
        self.calls.insert(
            id,
            Call {
                role: Role::Uas,
                phase: Phase::Setup,
                peer: from,
                local,
                invite,
                invite_key: Some(key.clone()),
                dialog: Some(dialog),
                local_tag,
                local_sdp: None,
                cancel_pending: false,
                cancel_sent: false,
                got_provisional: false,
                credentials: None,
                auth_attempts: 0,
                session: None,
                session_deadline: None,
                uac_timer: UacSessionTimer::new(&self.config.session_timer),
                refresh_key: None,
                transactions: 0,
                ended: false,
            },
        );
        self.track(key, id);
        self.outputs.push_back(CoreOutput::Incoming {
            call: id,
            invite: info,
        });
    }

    fn on_cancel(&mut self, now: Instant, key: TransactionKey, cancel: Request) {
        let target = self.transactions.cancel_target(&cancel);
        let id = target
            .as_ref()
            .and_then(|k| self.by_transaction.get(k).copied());
        let Some(id) = id else {
            let response = response_for(&cancel, StatusCode::CallTransactionDoesNotExist, None);
            self.respond(now, &key, response);
            return;
        };
        let ok = response_for(&cancel, StatusCode::OK, None);
        self.respond(now, &key, ok);
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.phase != Phase::Setup {
            return; // already answered: the CANCEL has no effect (9.2)
        }
        let terminated = self.uas_response(call, 487, None);
        if let Some(invite_key) = call.invite_key.clone() {
            self.respond(now, &invite_key, terminated);
        }
        let q850 = cancel.header("Reason").and_then(parse_q850);
        self.end(
            now,
            id,
            CallEvent::Failed {
                code: 487,
                reason: "cancelled by the caller".into(),
                q850,
            },
        );
    }

    fn on_in_dialog(
        &mut self,
        now: Instant,
        key: TransactionKey,
        request: Request,
        to_tag: String,
    ) {
        let call_id = request.call_id().unwrap_or_default().to_string();
        let Some(id) = self.by_dialog.get(&(call_id, to_tag)).copied() else {
            let response = response_for(&request, StatusCode::CallTransactionDoesNotExist, None);
            self.respond(now, &key, response);
            return;
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(dialog) = call.dialog.as_mut() else {
            return;
        };
        if let Err(error) = dialog.handle_request(&request) {
            debug!(call = id.0, %error, "in-dialog request rejected");
            let response = response_for(&request, StatusCode::ServerInternalError, None);
            self.respond(now, &key, response);
            return;
        }
        match request.method {
            Method::Bye => {
                let response = response_for(&request, StatusCode::OK, None);
                self.respond(now, &key, response);
                let q850 = request.header("Reason").and_then(parse_q850);
                let call = self.calls.get_mut(&id).expect("looked up above");
                let was_established = call.phase == Phase::Established;
                call.phase = Phase::Ending;
                call.session = None;
                info!(call = id.0, "BYE received");
                let event = if was_established {
                    CallEvent::Ended {
                        by: Party::Remote,
                        reason: EndReason::Bye,
                        q850,
                    }
                } else {
                    CallEvent::Failed {
                        code: 487,
                        reason: "caller hung up before the answer".into(),
                        q850,
                    }
                };
                self.end(now, id, event);
            }
            Method::Invite | Method::Update => self.on_remote_refresh(now, id, key, request),
            Method::Options | Method::Info => {
                let mut response = response_for(&request, StatusCode::OK, None);
                push_capabilities(&mut response);
                self.respond(now, &key, response);
            }
            _ => {
                let mut response = response_for(&request, StatusCode::MethodNotAllowed, None);
                response
                    .headers
                    .push(crate::message::raw::headers::Allow::new(ALLOW).into());
                self.respond(now, &key, response);
            }
        }
    }

    /// A re-INVITE or UPDATE from the peer: a session refresh, a hold, or a media change.
    fn on_remote_refresh(
        &mut self,
        now: Instant,
        id: CallId,
        key: TransactionKey,
        request: Request,
    ) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if call.phase != Phase::Established {
            let response = response_for(&request, StatusCode::from(491), None);
            self.respond(now, &key, response);
            return;
        }
        let offer = body_text(&request.body);
        // Answer with our current SDP, its version bumped (RFC 3264 8): the
        // application is told of the new offer and may re-INVITE to change ours.
        let answer_sdp = match (&offer, &call.local_sdp) {
            (Some(_), Some(local)) if request.method == Method::Invite || offer.is_some() => {
                Some(answer_refresh(local, offer.as_deref().unwrap_or_default()))
            }
            _ => None,
        };
        let mut response = self.uas_like_response(call, &request, 200, answer_sdp.as_deref());
        let decision = session::decide(&request, &self.config.session_timer);
        let config = self.config.session_timer;
        let call = self.calls.get_mut(&id).expect("looked up above");
        match decision {
            Ok(UasDecision::Accept {
                response: headers,
                negotiated,
            }) => {
                push_before_length(&mut response, session::response_headers(&headers));
                restart_session(call, now, &negotiated, &config);
            }
            Ok(UasDecision::Reject { min_se }) => {
                let mut response = response_for(&request, StatusCode::from(422), None);
                push_before_length(
                    &mut response,
                    [Header::Other("Min-SE".into(), min_se.to_string())],
                );
                self.respond(now, &key, response);
                return;
            }
            Err(error) => {
                debug!(call = id.0, %error, "bad session timer headers in refresh");
                let response = response_for(&request, StatusCode::BadRequest, None);
                self.respond(now, &key, response);
                return;
            }
        }
        if let Some(answer) = answer_sdp {
            call.local_sdp = Some(answer);
        }
        self.respond(now, &key, response);
        self.arm_session_timer(id);
        if let Some(sdp) = offer {
            self.emit(id, CallEvent::RemoteUpdate { sdp });
        }
    }

    fn on_ack(&mut self, request: Request) {
        let Some(tag) = request.to_tag().map(str::to_string) else {
            return;
        };
        let call_id = request.call_id().unwrap_or_default().to_string();
        let Some(id) = self.by_dialog.get(&(call_id, tag)).copied() else {
            return;
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some(dialog) = call.dialog.as_mut() {
            let _ = dialog.handle_request(&request);
        }
        if call.role == Role::Uas && call.phase == Phase::Established && call.refresh_key.is_none()
        {
            // The first ACK confirms the call; later ones confirm re-INVITEs.
            if call.invite_key.take().is_some() {
                self.emit(id, CallEvent::Confirmed);
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
            Some(Method::Bye) | Some(Method::Cancel) => {
                debug!(
                    call = id.0,
                    code = response.status_code.code(),
                    "response to BYE/CANCEL"
                );
            }
            _ => {}
        }
    }

    fn on_invite_response(&mut self, now: Instant, id: CallId, response: Response) {
        let code = response.status_code.code();
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        match code {
            100 => {
                call.got_provisional = true;
                if call.cancel_pending {
                    self.send_cancel(now, id);
                }
                self.emit(id, CallEvent::Trying);
            }
            101..=199 => {
                call.got_provisional = true;
                if call.dialog.is_none() && response.to_tag().is_some() {
                    call.dialog = Dialog::uac(&call.invite, &response).ok();
                }
                let sdp = body_text(&response.body);
                if call.cancel_pending {
                    self.send_cancel(now, id);
                }
                self.emit(id, CallEvent::Ringing { code, sdp });
            }
            200..=299 => self.on_invite_success(now, id, response),
            401 | 407
                if call.credentials.is_some() && call.auth_attempts < 2 && !call.cancel_sent =>
            {
                self.retry_with_auth(now, id, &response)
            }
            422 if call.auth_attempts < 3 => {
                match call.uac_timer.handle_422(response.header("Min-SE")) {
                    Ok(headers) => self.retry_with_min_se(now, id, &headers),
                    Err(error) => {
                        debug!(call = id.0, %error, "cannot satisfy 422");
                        self.fail_invite(now, id, &response)
                    }
                }
            }
            _ => self.fail_invite(now, id, &response),
        }
    }

    fn on_invite_success(&mut self, now: Instant, id: CallId, response: Response) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        // The same 2xx retransmitted (RFC 6026 Accepted state): ACK it again.
        let is_retransmission = call.phase != Phase::Setup;
        let dialog_fits = call
            .dialog
            .as_ref()
            .is_some_and(|d| Some(d.id().remote_tag.as_str()) == response.to_tag());
        if !dialog_fits {
            match Dialog::uac(&call.invite, &response) {
                Ok(dialog) if !is_retransmission => call.dialog = Some(dialog),
                Ok(mut other) => {
                    // A 2xx from a second fork: ACK and BYE it (13.2.2.4).
                    let invite_seq = call.invite.cseq().map(|c| c.seq).unwrap_or(1);
                    let ack = other.request(Method::Ack, &call.local, None, Some(invite_seq));
                    let bye = other.request(Method::Bye, &call.local, None, None);
                    let peer = call.peer;
                    self.outputs.push_back(CoreOutput::Transmit {
                        to: peer,
                        message: ack.into(),
                    });
                    let Some(key) = self.send(now, bye, peer) else {
                        return;
                    };
                    self.track(key, id);
                    return;
                }
                Err(error) => {
                    warn!(call = id.0, %error, "2xx without a usable dialog; dropping");
                    return;
                }
            }
        }
        let call = self.calls.get_mut(&id).expect("looked up above");
        let dialog = call.dialog.as_mut().expect("set just above");
        dialog.update_from_response(&response);
        let invite_seq = call.invite.cseq().map(|c| c.seq).unwrap_or(1);
        let ack = dialog.request(Method::Ack, &call.local, None, Some(invite_seq));
        let peer = self.in_dialog_peer(id);
        self.outputs.push_back(CoreOutput::Transmit {
            to: peer,
            message: ack.into(),
        });
        if is_retransmission {
            return;
        }
        let call = self.calls.get_mut(&id).expect("looked up above");
        call.phase = Phase::Established;
        call.session = match call
            .uac_timer
            .handle_2xx(response.header("Session-Expires"))
        {
            Ok(negotiated) => {
                negotiated.map(|n| SessionTimer::new(now, &n, &self.config.session_timer))
            }
            Err(error) => {
                debug!(call = id.0, %error, "ignoring a malformed Session-Expires in the 2xx");
                None
            }
        };
        let cancelled = call.cancel_sent || call.cancel_pending;
        self.arm_session_timer(id);
        info!(call = id.0, "answered");
        self.emit(
            id,
            CallEvent::Answered {
                sdp: body_text(&response.body),
            },
        );
        if cancelled {
            // We gave up on the call, but the answer crossed our CANCEL: end it.
            self.hangup(now, id, EndReason::Bye);
        }
    }

    fn retry_with_auth(&mut self, now: Instant, id: CallId, response: &Response) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let header = if response.status_code.code() == 407 {
            "Proxy-Authenticate"
        } else {
            "WWW-Authenticate"
        };
        let challenge = response
            .header(header)
            .and_then(|v| v.parse::<Challenge>().ok());
        let (Some(challenge), Some(credentials)) = (challenge, call.credentials.clone()) else {
            self.fail_invite(now, id, response);
            return;
        };
        call.auth_attempts += 1;
        let uri = call.invite.uri.to_string();
        let authorization =
            match credentials.authorize(&challenge, "INVITE", &uri, &new_cnonce(), 1) {
                Ok(authorization) => authorization.to_string(),
                Err(error) => {
                    warn!(call = id.0, %error, "cannot answer the challenge");
                    self.fail_invite(now, id, response);
                    return;
                }
            };
        let answer_header = if response.status_code.code() == 407 {
            "Proxy-Authorization"
        } else {
            "Authorization"
        };
        let mut invite = call.invite.clone();
        invite
            .headers
            .retain(|h| !is_named(h, "Proxy-Authorization") && !is_named(h, "Authorization"));
        push_before_length(
            &mut invite,
            [Header::Other(answer_header.to_string(), authorization)],
        );
        self.resend_invite(now, id, invite);
    }

    fn retry_with_min_se(
        &mut self,
        now: Instant,
        id: CallId,
        headers: &crate::session_timer::RequestHeaders,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.auth_attempts += 1;
        let mut invite = call.invite.clone();
        invite.headers.retain(|h| {
            !["Session-Expires", "Min-SE", "Supported"]
                .iter()
                .any(|n| is_named(h, n))
        });
        push_before_length(&mut invite, session::request_headers(headers));
        self.resend_invite(now, id, invite);
    }

    /// Re-sends the INVITE in a new transaction with the next CSeq (auth, 422).
    fn resend_invite(&mut self, now: Instant, id: CallId, mut invite: Request) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let seq = invite.cseq().map(|c| c.seq).unwrap_or(1) + 1;
        invite
            .headers
            .retain(|h| !matches!(h, Header::Via(_) | Header::CSeq(_)));
        invite
            .headers
            .unique_push(crate::message::raw::headers::CSeq::new(format!("{seq} INVITE")).into());
        let mut headers: Vec<Header> =
            vec![
                crate::message::raw::headers::Via::new(call.local.via_value(&new_branch())).into(),
            ];
        headers.extend(invite.headers.iter().cloned());
        invite.headers = headers.into();
        call.invite = invite.clone();
        call.got_provisional = false;
        let peer = call.peer;
        if let Some(old) = call.invite_key.take() {
            self.untrack(&old);
        }
        let Some(key) = self.send(now, invite, peer) else {
            return;
        };
        self.track(key.clone(), id);
        if let Some(call) = self.calls.get_mut(&id) {
            call.invite_key = Some(key);
        }
    }

    fn fail_invite(&mut self, now: Instant, id: CallId, response: &Response) {
        let code = response.status_code.code();
        let q850 = response.header("Reason").and_then(parse_q850);
        info!(call = id.0, code, "call failed");
        self.end(
            now,
            id,
            CallEvent::Failed {
                code,
                reason: response.status_code.to_string(),
                q850,
            },
        );
    }

    fn on_refresh_response(
        &mut self,
        now: Instant,
        id: CallId,
        key: TransactionKey,
        response: Response,
    ) {
        let code = response.status_code.code();
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.refresh_key.as_ref() != Some(&key) || code < 200 {
            return;
        }
        call.refresh_key = None;
        if response.cseq().ok().map(|c| c.method) == Some(Method::Invite)
            && (200..300).contains(&code)
        {
            let seq = response.cseq().map(|c| c.seq).unwrap_or(0);
            if let Some(dialog) = call.dialog.as_mut() {
                dialog.update_from_response(&response);
                let ack = dialog.request(Method::Ack, &call.local, None, Some(seq));
                let peer = call.peer;
                self.outputs.push_back(CoreOutput::Transmit {
                    to: peer,
                    message: ack.into(),
                });
            }
        }
        match code {
            200..=299 => {
                let call = self.calls.get_mut(&id).expect("looked up above");
                let config = self.config.session_timer;
                let answered =
                    UacSessionTimer::new(&config).handle_2xx(response.header("Session-Expires"));
                match (answered, call.session.as_ref()) {
                    (Ok(Some(negotiated)), _) => restart_session(call, now, &negotiated, &config),
                    (_, Some(timer)) => {
                        // No Session-Expires in the answer: the interval stays as it was.
                        let same = Negotiated {
                            interval: timer.interval(),
                            refresher: timer
                                .refresh_headers()
                                .session_expires
                                .refresher
                                .unwrap_or(crate::session_timer::Refresher::Uac),
                            local_refresher: timer.is_local_refresher(),
                        };
                        restart_session(call, now, &same, &config);
                    }
                    _ => {}
                }
                self.arm_session_timer(id);
            }
            408 | 481 => {
                warn!(call = id.0, code, "refresh failed: dialog is gone");
                self.hangup(now, id, EndReason::DialogLost);
            }
            _ => {
                debug!(call = id.0, code, "refresh rejected; session continues");
            }
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
            let reason = if call.role == Role::Uac {
                "no response (Timer B)"
            } else {
                "no ACK"
            };
            self.end(now, id, failed(408, reason));
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

    // ----- timers -----

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

    // ----- helpers -----

    /// Checks an INVITE's digest answer when inbound authentication is on:
    /// `Ok(Some(user))` when it passes, `Ok(None)` when authentication is off,
    /// `Err(WWW-Authenticate header)` with the challenge to send in a 401.
    fn authenticate(&mut self, now: Instant, invite: &Request) -> Result<Option<String>, Header> {
        let (Some(server), Some(auth)) = (self.digest.as_mut(), self.config.inbound_auth.as_ref())
        else {
            return Ok(None);
        };
        let wall = self.anchor.1 + now.saturating_duration_since(self.anchor.0);
        let stale = match invite.header("Authorization") {
            None => false,
            Some(answer) => {
                let uri = invite.uri.to_string();
                match server.verify(answer, "INVITE", &uri, wall, |user| {
                    auth.users.get(user).cloned()
                }) {
                    Ok(authenticated) => return Ok(Some(authenticated.username)),
                    Err(AuthError::StaleNonce) => true,
                    Err(error) => {
                        info!(%error, "INVITE failed digest authentication");
                        false
                    }
                }
            }
        };
        let challenge = server.challenge(wall, stale);
        Err(Header::Other(
            "WWW-Authenticate".into(),
            challenge.to_string(),
        ))
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

    fn uas_response(&self, call: &Call, code: u16, sdp: Option<&str>) -> Response {
        self.uas_like_response(call, &call.invite, code, sdp)
    }

    fn uas_like_response(
        &self,
        call: &Call,
        request: &Request,
        code: u16,
        sdp: Option<&str>,
    ) -> Response {
        let tag = (code > 100).then_some(call.local_tag.as_str());
        let mut response = response_for(request, StatusCode::from(code), tag);
        if (101..300).contains(&code) {
            // 12.1.1: dialog-creating responses carry the request's Record-Route.
            for route in request.record_route() {
                response
                    .headers
                    .push(crate::message::raw::headers::RecordRoute::new(route).into());
            }
            response.headers.push(
                crate::message::raw::headers::Contact::new(call.local.contact_value()).into(),
            );
            if code >= 200 {
                response
                    .headers
                    .push(crate::message::raw::headers::Allow::new(ALLOW).into());
                response
                    .headers
                    .push(crate::message::raw::headers::Supported::new("timer").into());
            }
        }
        if let Some(sdp) = sdp {
            response
                .headers
                .push(crate::message::raw::headers::ContentType::new("application/sdp").into());
            response.body = sdp.as_bytes().to_vec();
        }
        response
            .headers
            .retain(|h| !matches!(h, Header::ContentLength(_)));
        response.headers.push(
            crate::message::raw::headers::ContentLength::new(response.body.len().to_string())
                .into(),
        );
        response
    }
}

/// Starts or restarts a call's session timer after a successful (re)negotiation.
fn restart_session(
    call: &mut Call,
    now: Instant,
    negotiated: &Negotiated,
    config: &crate::session_timer::SessionTimerConfig,
) {
    match call.session.as_mut() {
        Some(timer) => timer.handle_refresh(now, negotiated),
        None => call.session = Some(SessionTimer::new(now, negotiated, config)),
    }
}

/// Adds headers ahead of Content-Length, so it stays last as people expect to read it.
fn push_before_length<M: HasHeaderList>(message: &mut M, extra: impl IntoIterator<Item = Header>) {
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

/// Requests and responses alike carry a header list.
trait HasHeaderList {
    fn headers_mut(&mut self) -> &mut crate::message::Headers;
}

impl HasHeaderList for Request {
    fn headers_mut(&mut self) -> &mut crate::message::Headers {
        &mut self.headers
    }
}

impl HasHeaderList for Response {
    fn headers_mut(&mut self) -> &mut crate::message::Headers {
        &mut self.headers
    }
}

fn failed(code: u16, reason: &str) -> CallEvent {
    CallEvent::Failed {
        code,
        reason: reason.to_string(),
        q850: None,
    }
}

/// Our answer to a re-offer: our current SDP, with the direction the offer
/// calls for (recvonly when the peer puts us on hold) and the next version.
fn answer_refresh(local: &str, offer: &str) -> String {
    let Ok(ours) = SessionDescription::parse(local) else {
        return local.to_string();
    };
    let direction = SessionDescription::parse(offer)
        .ok()
        .and_then(|offer| offer.audio().map(|audio| offer.direction_for(audio)))
        .map(|theirs| theirs.answer_with(Direction::SendRecv))
        .unwrap_or(Direction::SendRecv);
    ours.reoffer(direction).to_string()
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
