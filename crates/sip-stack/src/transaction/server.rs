//! Server transactions: INVITE (RFC 3261 17.2.1 with RFC 6026) and non-INVITE (17.2.2).

use std::time::{Duration, Instant};

use tracing::debug;

use super::timer::{Timer, TimerTable, TRYING_DELAY};
use super::{Context, TransactionError, TransactionEvent, TransactionState};
use crate::message::{response_for, Peer, Request, Response, StatusCode};

/// Server INVITE transaction: Proceeding, Accepted, Completed, Confirmed, Terminated.
#[derive(Debug)]
pub(crate) struct ServerInvite {
    state: TransactionState,
    request: Request,
    peer: Peer,
    last_response: Option<Response>,
    acked: bool,
    interval: Duration,
    timers: TimerTable,
}

impl ServerInvite {
    /// Hands the INVITE to the TU and arms the 200 ms `100 Trying` timer.
    pub(crate) fn start(
        now: Instant,
        request: Request,
        peer: Peer,
        context: &mut Context<'_>,
    ) -> Self {
        let mut timers = TimerTable::default();
        timers.set(Timer::Trying, now + TRYING_DELAY);
        context.event(TransactionEvent::Request {
            key: context.key.clone(),
            request: request.clone(),
            from: peer,
        });
        Self {
            state: TransactionState::Proceeding,
            request,
            peer,
            last_response: None,
            acked: false,
            interval: context.config.t1,
            timers,
        }
    }

    pub(crate) fn state(&self) -> TransactionState {
        self.state
    }

    pub(crate) fn timers(&self) -> &TimerTable {
        &self.timers
    }

    pub(crate) fn request(&self) -> &Request {
        &self.request
    }

    /// A retransmitted INVITE: re-send the last provisional or non-2xx final response; absorb
    /// it in Accepted (the 2xx has its own retransmission) and Confirmed.
    pub(crate) fn handle_retransmission(&mut self, context: &mut Context<'_>) {
        match self.state {
            TransactionState::Proceeding | TransactionState::Completed => {
                if let Some(response) = &self.last_response {
                    context.transmit(self.peer, response.clone());
                }
            }
            state => debug!(key = %context.key, ?state, "INVITE retransmission absorbed"),
        }
    }

    pub(crate) fn send_response(
        &mut self,
        now: Instant,
        response: Response,
        context: &mut Context<'_>,
    ) -> Result<(), TransactionError> {
        let code = response.status_code.code();
        let config = *context.config;
        let unreliable = !self.peer.transport.is_reliable();
        match (self.state, code) {
            (TransactionState::Proceeding, 100..=199) => {
                self.timers.clear(Timer::Trying);
            }
            (TransactionState::Proceeding, 200..=299) => {
                self.state = TransactionState::Accepted;
                self.timers.clear_all();
                self.timers.set(Timer::L, now + config.t1_x64());
                // RFC 3261 13.3.1.4: 2xx retransmission is end to end, so it
                // runs even over a reliable transport (a later hop may be UDP).
                self.interval = config.t1;
                self.timers.set(Timer::G, now + config.t1);
            }
            // RFC 6026: further 2xx from the TU are passed to the transport in Accepted.
            (TransactionState::Accepted, 200..=299) => {}
            (TransactionState::Proceeding, 300..=699) => {
                self.state = TransactionState::Completed;
                self.timers.clear_all();
                self.timers.set(Timer::H, now + config.t1_x64());
                if unreliable {
                    self.interval = config.t1;
                    self.timers.set(Timer::G, now + config.t1);
                }
            }
            (state, _) => {
                return Err(TransactionError::InvalidState {
                    action: "send this response",
                    state,
                })
            }
        }
        context.transmit(self.peer, response.clone());
        self.last_response = Some(response);
        Ok(())
    }

    /// An ACK with this transaction's key, or a 2xx ACK matched by Call-ID, CSeq and From tag.
    pub(crate) fn handle_ack(
        &mut self,
        now: Instant,
        ack: Request,
        from: Peer,
        context: &mut Context<'_>,
    ) {
        match self.state {
            TransactionState::Completed => {
                self.timers.clear_all();
                if self.peer.transport.is_reliable() {
                    self.state = TransactionState::Terminated;
                } else {
                    self.state = TransactionState::Confirmed;
                    self.timers.set(Timer::I, now + context.config.t4);
                }
            }
            TransactionState::Accepted => {
                self.acked = true;
                self.timers.clear(Timer::G);
                context.event(TransactionEvent::Ack {
                    key: context.key.clone(),
                    request: ack,
                    from,
                });
            }
            state => debug!(key = %context.key, ?state, "ACK absorbed"),
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, context: &mut Context<'_>) {
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                Timer::Trying if self.state == TransactionState::Proceeding => {
                    let trying = response_for(&self.request, StatusCode::Trying, None);
                    context.transmit(self.peer, trying.clone());
                    self.last_response = Some(trying);
                }
                Timer::G => {
                    if let Some(response) = &self.last_response {
                        context.transmit(self.peer, response.clone());
                    }
                    self.interval = (self.interval * 2).min(context.config.t2);
                    self.timers.set(Timer::G, now + self.interval);
                }
                Timer::H => {
                    context.event(TransactionEvent::Timeout {
                        key: context.key.clone(),
                        timer,
                    });
                    self.terminate();
                }
                Timer::L => {
                    if !self.acked {
                        context.event(TransactionEvent::AckTimeout {
                            key: context.key.clone(),
                        });
                    }
                    self.terminate();
                }
                Timer::I => self.terminate(),
                _ => {}
            }
        }
    }

    fn terminate(&mut self) {
        self.state = TransactionState::Terminated;
        self.timers.clear_all();
    }
}

/// Server non-INVITE transaction: Trying, Proceeding, Completed, Terminated.
#[derive(Debug)]
pub(crate) struct ServerNonInvite {
    state: TransactionState,
    peer: Peer,
    last_response: Option<Response>,
    timers: TimerTable,
}

impl ServerNonInvite {
    /// Hands the request to the TU and arms the TU guard.
    pub(crate) fn start(
        now: Instant,
        request: Request,
        peer: Peer,
        context: &mut Context<'_>,
    ) -> Self {
        let mut timers = TimerTable::default();
        timers.set(Timer::TuGuard, now + context.config.t1_x64());
        context.event(TransactionEvent::Request {
            key: context.key.clone(),
            request,
            from: peer,
        });
        Self {
            state: TransactionState::Trying,
            peer,
            last_response: None,
            timers,
        }
    }

    pub(crate) fn state(&self) -> TransactionState {
        self.state
    }

    pub(crate) fn timers(&self) -> &TimerTable {
        &self.timers
    }

    /// A retransmitted request: re-send the last response (none yet in Trying).
    pub(crate) fn handle_retransmission(&mut self, context: &mut Context<'_>) {
        match &self.last_response {
            Some(response) => context.transmit(self.peer, response.clone()),
            None => debug!(key = %context.key, "request retransmission absorbed"),
        }
    }

    pub(crate) fn send_response(
        &mut self,
        now: Instant,
        response: Response,
        context: &mut Context<'_>,
    ) -> Result<(), TransactionError> {
        let code = response.status_code.code();
        match (self.state, code) {
            (TransactionState::Trying | TransactionState::Proceeding, 100..=199) => {
                self.state = TransactionState::Proceeding;
            }
            (TransactionState::Trying | TransactionState::Proceeding, 200..=699) => {
                self.timers.clear_all();
                if self.peer.transport.is_reliable() {
                    self.state = TransactionState::Terminated;
                } else {
                    self.state = TransactionState::Completed;
                    self.timers.set(Timer::J, now + context.config.t1_x64());
                }
            }
            (state, _) => {
                return Err(TransactionError::InvalidState {
                    action: "send this response",
                    state,
                })
            }
        }
        context.transmit(self.peer, response.clone());
        self.last_response = Some(response);
        Ok(())
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, context: &mut Context<'_>) {
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                Timer::TuGuard => {
                    context.event(TransactionEvent::Timeout {
                        key: context.key.clone(),
                        timer,
                    });
                    self.terminate();
                }
                Timer::J => self.terminate(),
                _ => {}
            }
        }
    }

    fn terminate(&mut self) {
        self.state = TransactionState::Terminated;
        self.timers.clear_all();
    }
}
