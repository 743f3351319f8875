//! Requests inside an established dialog: BYE, re-INVITE and UPDATE in both
//! directions, and the session timer refreshes they carry (RFC 3261 14-15,
//! RFC 4028).

use super::*;

impl Core {
    pub(super) fn hangup(&mut self, now: Instant, id: CallId, reason: EndReason) {
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
        if call.role == Role::Uas && call.invite_key.is_some() && reason != EndReason::AckTimeout {
            // Our 2xx is not acknowledged yet: no BYE before its ACK (RFC 3261 15).
            call.bye_after_ack.get_or_insert(reason);
            return;
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

    pub(super) fn reinvite(&mut self, now: Instant, id: CallId, sdp: String) {
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
    pub(super) fn send_refresh(&mut self, now: Instant, id: CallId, method: Method) {
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

    pub(super) fn on_in_dialog(
        &mut self,
        now: Instant,
        key: TransactionKey,
        request: Request,
        to_tag: String,
        from: Peer,
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
        if !call.accepts_from(&from) {
            // Someone who learnt the dialog's identifiers is not the peer: it may neither
            // end the call nor move its media.
            warn!(call = id.0, source = %from.addr, peer = %call.peer.addr,
                method = %request.method, "in-dialog request from another address: 403");
            let response = response_for(&request, StatusCode::Forbidden, None);
            self.respond(now, &key, response);
            return;
        }
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
                        cause: FailureCause::Local,
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
    pub(super) fn on_remote_refresh(
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

    pub(super) fn on_refresh_response(
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
