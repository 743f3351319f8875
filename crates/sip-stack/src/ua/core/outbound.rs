//! Calls we place (UAC): INVITE, provisional and final responses, CANCEL,
//! digest and 422 retries, ACK of the 2xx (RFC 3261 13.2, RFC 4028 7).

use super::*;

impl Core {
    pub(super) fn start_invite(&mut self, now: Instant, id: CallId, outgoing: OutgoingCall) {
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
            bye_after_ack: None,
            trusted: Vec::new(),
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

    pub(super) fn build_invite(
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

    pub(super) fn cancel(&mut self, now: Instant, id: CallId) {
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

    pub(super) fn send_cancel(&mut self, now: Instant, id: CallId) {
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

    pub(super) fn on_invite_response(&mut self, now: Instant, id: CallId, response: Response) {
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

    pub(super) fn on_invite_success(&mut self, now: Instant, id: CallId, response: Response) {
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

    pub(super) fn retry_with_auth(&mut self, now: Instant, id: CallId, response: &Response) {
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

    pub(super) fn retry_with_min_se(
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
    pub(super) fn resend_invite(&mut self, now: Instant, id: CallId, mut invite: Request) {
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

    pub(super) fn fail_invite(&mut self, now: Instant, id: CallId, response: &Response) {
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
                cause: FailureCause::Response,
            },
        );
    }

    /// The final response to our CANCEL: the application may stop waiting
    /// for the INVITE's 487 (it still gets it, or the 2xx we then BYE).
    pub(super) fn on_cancel_response(&mut self, id: CallId, code: u16) {
        debug!(call = id.0, code, "response to CANCEL");
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        if code >= 200 && !call.ended {
            self.emit(id, CallEvent::CancelAnswered { code });
        }
    }

    /// The transport could not reach `peer` (RFC 3261 8.1.3.1, 17.1.4): each
    /// client transaction of ours towards it fails at once, as with a 503.
    /// An INVITE still waiting for its answer fails the call; a refresh
    /// ends the dialog (BYE); a BYE or CANCEL is simply given up.
    pub(crate) fn handle_transport_error(
        &mut self,
        now: Instant,
        peer: Peer,
        failure: TransportFailure,
    ) {
        let failed: Vec<(TransactionKey, CallId)> = self
            .by_transaction
            .iter()
            .filter(|(key, id)| {
                key.role() == crate::transaction::Role::Client
                    && self.calls.get(id).is_some_and(|call| call.peer == peer)
            })
            .map(|(key, id)| (key.clone(), *id))
            .collect();
        if failed.is_empty() {
            debug!(to = %peer.addr, %failure, "transport failure with nothing waiting on it");
            return;
        }
        for (key, id) in failed {
            let _ = self.transactions.terminate(&key);
            let Some(call) = self.calls.get_mut(&id) else {
                continue;
            };
            if call.invite_key.as_ref() == Some(&key) && call.phase == Phase::Setup {
                warn!(call = id.0, to = %peer.addr, %failure, "INVITE failed in transport");
                let event = CallEvent::Failed {
                    code: 503,
                    reason: failure.message.clone(),
                    q850: None,
                    cause: FailureCause::Transport(failure.clone()),
                };
                self.end(now, id, event);
            } else if call.refresh_key.as_ref() == Some(&key) {
                warn!(call = id.0, to = %peer.addr, %failure, "refresh failed in transport");
                call.refresh_key = None;
                self.hangup(now, id, EndReason::DialogLost);
            }
        }
        self.pump_transactions(Some(now));
    }
}
