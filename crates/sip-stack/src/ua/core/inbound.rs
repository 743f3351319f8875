//! Calls we receive (UAS): new INVITEs, digest challenges, ringing,
//! answering, rejecting, CANCEL and the ACK of our 2xx (RFC 3261 13.3).

use super::*;

impl Core {
    pub(super) fn ring(&mut self, now: Instant, id: CallId, sdp: Option<String>) {
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

    pub(super) fn answer(&mut self, now: Instant, id: CallId, sdp: String) {
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

    pub(super) fn reject(&mut self, now: Instant, id: CallId, code: u16) {
        self.reject_retry_after(now, id, code, None);
    }

    /// Rejects the INVITE with `code`, and a `Retry-After` of whole seconds
    /// when `retry_after` is given (RFC 3261 20.33).
    pub(super) fn reject_retry_after(
        &mut self,
        now: Instant,
        id: CallId,
        code: u16,
        retry_after: Option<Duration>,
    ) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let (Some(key), Role::Uas, Phase::Setup) = (call.invite_key.clone(), call.role, call.phase)
        else {
            return;
        };
        let code = code.clamp(300, 699);
        let mut response = self.uas_response(call, code, None);
        if let Some(after) = retry_after {
            let seconds = after.as_secs().max(1).to_string();
            push_before_length(
                &mut response,
                [Header::Other("Retry-After".into(), seconds)],
            );
        }
        self.respond(now, &key, response);
        self.end(now, id, failed(code, &StatusCode::from(code).to_string()));
    }

    pub(super) fn on_new_invite(
        &mut self,
        now: Instant,
        key: TransactionKey,
        invite: Request,
        from: Peer,
    ) {
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
                bye_after_ack: None,
                trusted: Vec::new(),
            },
        );
        self.track(key, id);
        self.outputs.push_back(CoreOutput::Incoming {
            call: id,
            invite: info,
        });
    }

    pub(super) fn on_cancel(
        &mut self,
        now: Instant,
        key: TransactionKey,
        cancel: Request,
        from: Peer,
    ) {
        let target = self.transactions.cancel_target(&cancel);
        let id = target
            .as_ref()
            .and_then(|k| self.by_transaction.get(k).copied());
        let Some(id) = id else {
            let response = response_for(&cancel, StatusCode::CallTransactionDoesNotExist, None);
            self.respond(now, &key, response);
            return;
        };
        if self
            .calls
            .get(&id)
            .is_some_and(|call| !call.accepts_from(&from))
        {
            warn!(call = id.0, source = %from.addr, "CANCEL from another address than the INVITE: 403");
            let response = response_for(&cancel, StatusCode::Forbidden, None);
            self.respond(now, &key, response);
            return;
        }
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
                cause: FailureCause::Local,
            },
        );
    }

    pub(super) fn on_ack(&mut self, now: Instant, request: Request) {
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
                let hang_up = call.bye_after_ack.take();
                self.emit(id, CallEvent::Confirmed);
                if let Some(reason) = hang_up {
                    self.hangup(now, id, reason);
                }
            }
        }
    }

    /// [`CallHandle::authenticate`](crate::ua::CallHandle::authenticate): checks the
    /// INVITE's digest answer against `credentials`; passes it on as
    /// [`CallEvent::Authenticated`], or ends the call with 401 (a fresh challenge) or 403.
    pub(super) fn authenticate(&mut self, now: Instant, id: CallId, credentials: &Credentials) {
        let Some(call) = self.calls.get(&id) else {
            return;
        };
        let (Some(key), Role::Uas, Phase::Setup) = (call.invite_key.clone(), call.role, call.phase)
        else {
            return;
        };
        let wall = self.anchor.1 + now.saturating_duration_since(self.anchor.0);
        let verdict = match call.invite.header("Authorization") {
            None => Verdict::Challenge { stale: false },
            Some(answer) => {
                let uri = call.invite.uri.to_string();
                let password_for = |user: &str| {
                    (user == credentials.username).then(|| credentials.password.clone())
                };
                match self
                    .digest
                    .verify(answer, "INVITE", &uri, wall, password_for)
                {
                    Ok(authenticated) => Verdict::Pass(authenticated.username),
                    Err(AuthError::StaleNonce) => Verdict::Challenge { stale: true },
                    // It answered our own challenge, wrongly.
                    Err(error @ (AuthError::WrongResponse { .. } | AuthError::UnknownUser(_))) => {
                        Verdict::Forbid(error)
                    }
                    Err(error) => {
                        debug!(call = id.0, %error, "INVITE answered no challenge of ours: 401");
                        Verdict::Challenge { stale: false }
                    }
                }
            }
        };
        match verdict {
            Verdict::Pass(username) => {
                debug!(call = id.0, username, "INVITE passed digest authentication");
                self.emit(id, CallEvent::Authenticated { username });
            }
            Verdict::Challenge { stale } => {
                let challenges = self.digest.challenges(wall, stale);
                let mut response = self.uas_response(call, 401, None);
                push_before_length(
                    &mut response,
                    challenges
                        .iter()
                        .map(|c| Header::Other("WWW-Authenticate".into(), c.to_string())),
                );
                self.respond(now, &key, response);
                self.end(now, id, failed(401, "digest authentication required"));
            }
            Verdict::Forbid(error) => {
                // The application logs refusals at a bounded rate; this is per INVITE.
                debug!(call = id.0, %error, "INVITE failed digest authentication: 403");
                let response = self.uas_response(call, 403, None);
                self.respond(now, &key, response);
                self.end(now, id, failed(403, "digest authentication failed"));
            }
        }
    }

    pub(super) fn uas_response(&self, call: &Call, code: u16, sdp: Option<&str>) -> Response {
        self.uas_like_response(call, &call.invite, code, sdp)
    }

    pub(super) fn uas_like_response(
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

/// What [`Core::authenticate`] decided about an INVITE's digest answer.
enum Verdict {
    /// It matches: the user name.
    Pass(String),
    /// No answer, or one to a challenge that is not (or no longer) ours: challenge again.
    Challenge { stale: bool },
    /// An answer to our challenge with the wrong user or password.
    Forbid(AuthError),
}
