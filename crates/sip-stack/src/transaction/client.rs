//! Client transactions: INVITE (RFC 3261 17.1.1 with RFC 6026) and non-INVITE (17.1.2).

use std::time::{Duration, Instant};

use tracing::debug;

use super::timer::{Timer, TimerTable, TIMER_D_UNRELIABLE};
use super::{Context, TransactionEvent, TransactionState};
use crate::message::{ack_for_non_2xx, Peer, Request, Response};

/// Client INVITE transaction: Calling, Proceeding, Accepted, Completed, Terminated.
#[derive(Debug)]
pub(crate) struct ClientInvite {
    state: TransactionState,
    request: Request,
    peer: Peer,
    ack: Option<Request>,
    interval: Duration,
    timers: TimerTable,
}

impl ClientInvite {
    /// Sends the INVITE and arms Timers A (unreliable only) and B.
    pub(crate) fn start(
        now: Instant,
        request: Request,
        peer: Peer,
        context: &mut Context<'_>,
    ) -> Self {
        let config = *context.config;
        let mut timers = TimerTable::default();
        if !peer.transport.is_reliable() {
            timers.set(Timer::A, now + config.t1);
        }
        timers.set(Timer::B, now + config.t1_x64());
        context.transmit(peer, request.clone());
        Self {
            state: TransactionState::Calling,
            request,
            peer,
            ack: None,
            interval: config.t1,
            timers,
        }
    }

    pub(crate) fn state(&self) -> TransactionState {
        self.state
    }

    pub(crate) fn timers(&self) -> &TimerTable {
        &self.timers
    }

    pub(crate) fn handle_response(
        &mut self,
        now: Instant,
        response: Response,
        context: &mut Context<'_>,
    ) {
        let code = response.status_code.code();
        match (self.state, code) {
            (TransactionState::Calling | TransactionState::Proceeding, 100..=199) => {
                self.state = TransactionState::Proceeding;
                self.timers.clear(Timer::A);
                self.timers.clear(Timer::B);
                self.pass_up(response, false, context);
            }
            (TransactionState::Calling | TransactionState::Proceeding, 200..=299) => {
                self.state = TransactionState::Accepted;
                self.timers.clear_all();
                self.timers.set(Timer::M, now + context.config.t1_x64());
                self.pass_up(response, false, context);
            }
            (TransactionState::Calling | TransactionState::Proceeding, 300..=699) => {
                let ack = match ack_for_non_2xx(&self.request, &response) {
                    Ok(ack) => ack,
                    Err(error) => {
                        debug!(key = %context.key, %error, "final response without To: ignored");
                        return;
                    }
                };
                context.transmit(self.peer, ack.clone());
                self.ack = Some(ack);
                self.timers.clear_all();
                self.pass_up(response, false, context);
                if self.peer.transport.is_reliable() {
                    self.state = TransactionState::Terminated;
                } else {
                    self.state = TransactionState::Completed;
                    self.timers.set(Timer::D, now + TIMER_D_UNRELIABLE);
                }
            }
            (TransactionState::Accepted, 200..=299) => self.pass_up(response, true, context),
            (TransactionState::Completed, 300..=699) => {
                if let Some(ack) = &self.ack {
                    context.transmit(self.peer, ack.clone());
                }
            }
            (state, code) => {
                debug!(key = %context.key, ?state, code, "response absorbed");
            }
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, context: &mut Context<'_>) {
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                Timer::A => {
                    context.transmit(self.peer, self.request.clone());
                    self.interval *= 2;
                    self.timers.set(Timer::A, now + self.interval);
                }
                Timer::B => {
                    context.event(TransactionEvent::Timeout {
                        key: context.key.clone(),
                        timer,
                    });
                    self.terminate();
                }
                Timer::D | Timer::M => self.terminate(),
                _ => {}
            }
        }
    }

    fn pass_up(&self, response: Response, retransmission: bool, context: &mut Context<'_>) {
        context.event(TransactionEvent::Response {
            key: context.key.clone(),
            response,
            retransmission,
        });
    }

    fn terminate(&mut self) {
        self.state = TransactionState::Terminated;
        self.timers.clear_all();
    }
}

/// Client non-INVITE transaction: Trying, Proceeding, Completed, Terminated.
#[derive(Debug)]
pub(crate) struct ClientNonInvite {
    state: TransactionState,
    request: Request,
    peer: Peer,
    interval: Duration,
    timers: TimerTable,
}

impl ClientNonInvite {
    /// Sends the request and arms Timers E (unreliable only) and F.
    pub(crate) fn start(
        now: Instant,
        request: Request,
        peer: Peer,
        context: &mut Context<'_>,
    ) -> Self {
        let config = *context.config;
        let mut timers = TimerTable::default();
        if !peer.transport.is_reliable() {
            timers.set(Timer::E, now + config.t1);
        }
        timers.set(Timer::F, now + config.t1_x64());
        context.transmit(peer, request.clone());
        Self {
            state: TransactionState::Trying,
            request,
            peer,
            interval: config.t1,
            timers,
        }
    }

    pub(crate) fn state(&self) -> TransactionState {
        self.state
    }

    pub(crate) fn timers(&self) -> &TimerTable {
        &self.timers
    }

    pub(crate) fn handle_response(
        &mut self,
        now: Instant,
        response: Response,
        context: &mut Context<'_>,
    ) {
        let code = response.status_code.code();
        match (self.state, code) {
            (TransactionState::Trying | TransactionState::Proceeding, 100..=199) => {
                self.state = TransactionState::Proceeding;
                self.pass_up(response, context);
            }
            (TransactionState::Trying | TransactionState::Proceeding, 200..=699) => {
                self.timers.clear_all();
                self.pass_up(response, context);
                if self.peer.transport.is_reliable() {
                    self.state = TransactionState::Terminated;
                } else {
                    self.state = TransactionState::Completed;
                    self.timers.set(Timer::K, now + context.config.t4);
                }
            }
            (state, code) => {
                debug!(key = %context.key, ?state, code, "response absorbed");
            }
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, context: &mut Context<'_>) {
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                Timer::E => {
                    context.transmit(self.peer, self.request.clone());
                    self.interval = if self.state == TransactionState::Proceeding {
                        context.config.t2
                    } else {
                        (self.interval * 2).min(context.config.t2)
                    };
                    self.timers.set(Timer::E, now + self.interval);
                }
                Timer::F => {
                    context.event(TransactionEvent::Timeout {
                        key: context.key.clone(),
                        timer,
                    });
                    self.terminate();
                }
                Timer::K => self.terminate(),
                _ => {}
            }
        }
    }

    fn pass_up(&self, response: Response, context: &mut Context<'_>) {
        context.event(TransactionEvent::Response {
            key: context.key.clone(),
            response,
            retransmission: false,
        });
    }

    fn terminate(&mut self) {
        self.state = TransactionState::Terminated;
        self.timers.clear_all();
    }
}
