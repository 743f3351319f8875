//! The call lifecycle as a sans-IO state machine.
//!
//! [`Lifecycle`] knows nothing of sockets, tasks, the store or the clock. Its
//! driver (one tokio task per call) feeds it what happened (`handle_*`,
//! each with the current `Instant`), drains [`Lifecycle::poll_output`] and
//! sleeps until [`Lifecycle::poll_timeout`]. The outputs are status
//! changes to persist and report, SIP actions to take (CANCEL, BYE) and, at
//! last, the [`End`] of the call with everything the record needs.
//!
//! Timers form a small table ([`Timer`]): the join timeout (no answer),
//! the maximum duration, RTP inactivity, and the teardown guard that ends
//! our side when a CANCEL or BYE of ours is never confirmed.
//!
//! A call ends as soon as what decides it is known: a trunk that cannot be
//! reached (transport failure) or never answered at all (nothing back for
//! the INVITE) fails at once as `error` (`trunk_unreachable`,
//! `trunk_no_response`), never as a callee's `no_answer`; a CANCEL of ours
//! finishes the call on the answer to the CANCEL (after a short grace for
//! the INVITE's 487) or on the 487, with the teardown guard (64*T1, RFC
//! 3261 Timer F) as the upper bound; and a hang-up's decided end is
//! reported ([`Output::Ending`]) the moment the CANCEL goes out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Limits of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// How long an outbound call may ring before it is cancelled.
    pub join_timeout: Duration,
    /// How long an answered call may last before we hang up.
    pub max_duration: Duration,
    /// How long an answered call may go without RTP; `None` disables the check.
    pub inactivity_timeout: Option<Duration>,
    /// How long to wait for the user agent to confirm a CANCEL or BYE of
    /// ours before the call is recorded as ended anyway: the user agent's
    /// own limit, 64*T1 (RFC 3261 Timer F), is the bound.
    pub teardown_timeout: Duration,
    /// Once our CANCEL is answered, how long to wait for the INVITE's 487
    /// (which normally follows at once) before finishing without it.
    pub final_response_grace: Duration,
}

impl Default for LifecycleConfig {
    /// 30 s join timeout, 1800 s maximum duration, 30 s RTP inactivity,
    /// 32 s (64*T1) teardown guard, 250 ms grace for the 487.
    fn default() -> Self {
        Self {
            join_timeout: Duration::from_secs(30),
            max_duration: Duration::from_secs(1800),
            inactivity_timeout: Some(Duration::from_secs(30)),
            teardown_timeout: Duration::from_secs(32),
            final_response_grace: Duration::from_millis(250),
        }
    }
}

/// A non-terminal status the call reaches (mirrors the record's statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The INVITE went out (outbound), or arrived and was accepted (inbound).
    Initiated,
    /// The far end rings (outbound 180/183), or we ring (inbound 180 sent).
    Ringing,
    /// Answered: media flows.
    InProgress,
}

/// The terminal status of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalStatus {
    /// An answered call ended.
    Ended,
    /// The call was never established.
    Failed,
    /// Cancelled before it was answered.
    Cancelled,
}

/// Why the call ended (mirrors the record's outcomes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Ended normally.
    Completed,
    /// Nobody answered within the join timeout.
    NoAnswer,
    /// The callee was busy (486/600).
    Busy,
    /// The call was refused with another final status.
    Rejected,
    /// The maximum duration was reached.
    MaxDuration,
    /// The far end hung up.
    CallerHangup,
    /// The agent (its runtime) or the API hung up.
    AgentHangup,
    /// Cancelled through the API before being answered.
    Cancelled,
    /// A failure: media timeout, lost dialog, media setup, shutdown before answer.
    Error,
}

/// How a call ended: everything the record keeps about its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    /// The terminal status.
    pub status: FinalStatus,
    /// The outcome.
    pub outcome: Outcome,
    /// A short machine-readable reason (`bye`, `join_timeout`, `media_timeout`,
    /// `trunk_unreachable`, `trunk_no_response`, ...).
    pub reason: &'static str,
    /// What went wrong, in words, when the reason alone does not say it
    /// (the OS error of a trunk that could not be reached).
    pub detail: Option<String>,
    /// The final SIP status of the INVITE (200 once answered).
    pub sip_code: Option<u16>,
    /// The Q.850 cause of a Reason header, when the far end sent one.
    pub q850: Option<u16>,
    /// When the call was answered, if it was.
    pub answered_at: Option<Instant>,
    /// When the call ended.
    pub ended_at: Instant,
}

impl End {
    /// How long the answered part lasted (zero when never answered).
    pub fn duration(&self) -> Duration {
        self.answered_at.map_or(Duration::ZERO, |at| {
            self.ended_at.saturating_duration_since(at)
        })
    }
}

/// Who asks to hang up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    /// The REST API (`POST /calls/{id}/hangup`).
    Api,
    /// The agent runtime.
    Agent,
    /// The service is shutting down.
    Shutdown,
}

/// How an established call ended, as the user agent reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteEnd {
    /// A BYE from the far end.
    Bye,
    /// A BYE of ours completed (or failed: the dialog is gone either way).
    LocalBye,
    /// The session timer expired without a refresh.
    SessionExpired,
    /// Our 2xx was never acknowledged.
    AckTimeout,
    /// An in-dialog request failed with 408/481: the dialog is gone.
    DialogLost,
    /// The user agent is shutting down.
    Shutdown,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Persist, then report, this status.
    Status(Progress),
    /// Send CANCEL (outbound, not answered) or reject the INVITE (inbound).
    Cancel,
    /// Send BYE.
    Bye,
    /// A hang-up before the answer is decided and our CANCEL is on its way:
    /// persist this status (`cancelled`) and outcome now; [`Output::Finished`]
    /// follows once the far end confirms (or the teardown guard fires).
    Ending(Decision),
    /// The call is over: persist the end and report it. Always the last output.
    Finished(End),
}

/// The lifecycle's timers, indexing its deadline table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// No answer within the join timeout.
    Join = 0,
    /// The answered call reached its maximum duration.
    MaxDuration = 1,
    /// No RTP for the inactivity timeout.
    Inactivity = 2,
    /// A CANCEL or BYE of ours was never confirmed.
    Teardown = 3,
}

const TIMERS: [Timer; 4] = [
    Timer::Join,
    Timer::MaxDuration,
    Timer::Inactivity,
    Timer::Teardown,
];

/// Where the call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing sent yet.
    Idle,
    /// INVITE sent (outbound) or accepted (inbound), no ringing yet.
    Calling,
    /// Ringing.
    Ringing,
    /// Answered.
    InProgress,
    /// We sent CANCEL or BYE and wait for the user agent to confirm.
    Ending,
    /// Finished; nothing more happens.
    Done,
}

/// The end decided on, while waiting for the user agent to confirm it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The terminal status.
    pub status: FinalStatus,
    /// The outcome.
    pub outcome: Outcome,
    /// The record's `end_reason`.
    pub reason: &'static str,
}

/// The sans-IO lifecycle of one call. See the module docs.
#[derive(Debug)]
pub struct Lifecycle {
    config: LifecycleConfig,
    phase: Phase,
    inbound: bool,
    /// Outbound: something (100 Trying, 1xx) came back for the INVITE.
    responded: bool,
    timers: [Option<Instant>; 4],
    decided: Option<Decision>,
    answered_at: Option<Instant>,
    sip_code: Option<u16>,
    q850: Option<u16>,
    detail: Option<String>,
    outputs: VecDeque<Output>,
}

impl Lifecycle {
    /// A call that has not started yet.
    pub fn new(config: LifecycleConfig) -> Self {
        Self {
            config,
            phase: Phase::Idle,
            inbound: false,
            responded: false,
            timers: [None; 4],
            decided: None,
            answered_at: None,
            sip_code: None,
            q850: None,
            detail: None,
            outputs: VecDeque::with_capacity(4),
        }
    }

    // Getters.

    /// Where the call is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the call was answered.
    pub fn is_answered(&self) -> bool {
        self.answered_at.is_some()
    }

    /// Whether the call has finished.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The deadline of one timer, if armed.
    pub fn deadline(&self, timer: Timer) -> Option<Instant> {
        self.timers[timer as usize]
    }

    // Input.

    /// Outbound: the INVITE was sent. Arms the join timeout.
    pub fn handle_invite_sent(&mut self, now: Instant) {
        if self.phase != Phase::Idle {
            return;
        }
        self.phase = Phase::Calling;
        self.timers[Timer::Join as usize] = Some(now + self.config.join_timeout);
        self.outputs.push_back(Output::Status(Progress::Initiated));
    }

    /// Inbound: the INVITE was accepted and we ring. No join timeout: the
    /// service answers at once.
    pub fn handle_incoming(&mut self, _now: Instant) {
        if self.phase != Phase::Idle {
            return;
        }
        self.phase = Phase::Ringing;
        self.inbound = true;
        self.outputs.push_back(Output::Status(Progress::Initiated));
        self.outputs.push_back(Output::Status(Progress::Ringing));
    }

    /// Outbound: 100 Trying arrived: the trunk has the INVITE.
    pub fn handle_trying(&mut self, _now: Instant) {
        self.responded = true;
    }

    /// Outbound: a 180/183 arrived.
    pub fn handle_ringing(&mut self, _now: Instant) {
        self.responded = true;
        if self.phase == Phase::Calling {
            self.phase = Phase::Ringing;
            self.outputs.push_back(Output::Status(Progress::Ringing));
        }
    }

    /// The call is answered (outbound: 2xx received; inbound: 2xx sent).
    /// Arms the maximum duration and the inactivity timer.
    pub fn handle_answered(&mut self, now: Instant) {
        match self.phase {
            Phase::Idle | Phase::Calling | Phase::Ringing => {
                self.phase = Phase::InProgress;
                self.answered_at = Some(now);
                self.sip_code = Some(200);
                self.timers[Timer::Join as usize] = None;
                self.timers[Timer::MaxDuration as usize] = Some(now + self.config.max_duration);
                self.timers[Timer::Inactivity as usize] =
                    self.config.inactivity_timeout.map(|limit| now + limit);
                self.outputs.push_back(Output::Status(Progress::InProgress));
            }
            // A 2xx that crossed our CANCEL: the call is up for the far end,
            // so hang it up; the end we decided stands.
            Phase::Ending if self.answered_at.is_none() => {
                self.answered_at = Some(now);
                self.sip_code = Some(200);
                self.outputs.push_back(Output::Bye);
            }
            Phase::InProgress | Phase::Ending | Phase::Done => {}
        }
    }

    /// The call was never established: the final status of the INVITE (487
    /// after our CANCEL) and the Q.850 cause of its Reason header.
    pub fn handle_failed(&mut self, now: Instant, code: u16, q850: Option<u16>) {
        if self.phase == Phase::Done {
            return;
        }
        self.sip_code = Some(code);
        self.q850 = q850.or(self.q850);
        let end = match self.decided {
            Some(decided) => decided,
            None => match code {
                486 | 600 => Decision {
                    status: FinalStatus::Failed,
                    outcome: Outcome::Busy,
                    reason: "busy",
                },
                // An inbound caller that gave up (CANCEL) before we answered.
                _ if self.inbound => Decision {
                    status: FinalStatus::Cancelled,
                    outcome: Outcome::CallerHangup,
                    reason: "cancel",
                },
                _ => Decision {
                    status: FinalStatus::Failed,
                    outcome: Outcome::Rejected,
                    reason: "rejected",
                },
            },
        };
        self.finish(now, end);
    }

    /// Outbound: the trunk could not be reached (TCP refused or reset, a
    /// send that failed); `detail` is the OS error. Fails the call at once
    /// with outcome `error`, reason `trunk_unreachable`.
    pub fn handle_unreachable(&mut self, now: Instant, detail: String) {
        if self.phase == Phase::Done {
            return;
        }
        self.detail = Some(detail);
        let end = self
            .decided
            .unwrap_or_else(|| self.error("trunk_unreachable"));
        self.finish(now, end);
    }

    /// Outbound: nothing at all came back for the INVITE before the user
    /// agent gave up (Timer B). Outcome `error`, reason `trunk_no_response`.
    pub fn handle_no_response(&mut self, now: Instant) {
        if self.phase == Phase::Done {
            return;
        }
        let end = self
            .decided
            .unwrap_or_else(|| self.error("trunk_no_response"));
        self.finish(now, end);
    }

    /// Outbound: our CANCEL got its final response. The INVITE's 487 is
    /// due at once; the call finishes on it, or after the grace without it.
    pub fn handle_cancel_answered(&mut self, now: Instant) {
        if self.phase != Phase::Ending || self.answered_at.is_some() {
            return;
        }
        let grace = now + self.config.final_response_grace;
        let teardown = &mut self.timers[Timer::Teardown as usize];
        *teardown = Some(teardown.map_or(grace, |at| at.min(grace)));
    }

    /// An established call ended, as the user agent reports it.
    pub fn handle_ended(&mut self, now: Instant, how: RemoteEnd, q850: Option<u16>) {
        if self.phase == Phase::Done {
            return;
        }
        self.q850 = q850.or(self.q850);
        let end = match (self.decided, how) {
            (Some(decided), _) => decided,
            (None, RemoteEnd::Bye) => Decision {
                status: FinalStatus::Ended,
                outcome: Outcome::CallerHangup,
                reason: "bye",
            },
            (None, RemoteEnd::LocalBye) => Decision {
                status: FinalStatus::Ended,
                outcome: Outcome::AgentHangup,
                reason: "bye",
            },
            (None, RemoteEnd::SessionExpired) => self.error("session_expired"),
            (None, RemoteEnd::AckTimeout) => self.error("ack_timeout"),
            (None, RemoteEnd::DialogLost) => self.error("dialog_lost"),
            (None, RemoteEnd::Shutdown) => self.shutdown_end(),
        };
        self.finish(now, end);
    }

    /// RTP was heard at `heard`: pushes the inactivity deadline back (never forward:
    /// `heard` may be older than what armed it).
    pub fn handle_media_activity(&mut self, heard: Instant) {
        if self.phase == Phase::InProgress {
            if let Some(limit) = self.config.inactivity_timeout {
                let timer = &mut self.timers[Timer::Inactivity as usize];
                *timer = Some(timer.map_or(heard + limit, |at| at.max(heard + limit)));
            }
        }
    }

    /// Someone asks to hang up. Returns false when the call is already
    /// ending or over.
    pub fn handle_hangup(&mut self, now: Instant, by: Requester) -> bool {
        let answered = self.phase == Phase::InProgress;
        let decided = match (by, answered) {
            (Requester::Shutdown, _) => self.shutdown_end(),
            (Requester::Api, false) => Decision {
                status: FinalStatus::Cancelled,
                outcome: Outcome::Cancelled,
                reason: "api_hangup",
            },
            (Requester::Agent, false) => Decision {
                status: FinalStatus::Cancelled,
                outcome: Outcome::AgentHangup,
                reason: "agent_hangup",
            },
            (Requester::Api, true) => Decision {
                status: FinalStatus::Ended,
                outcome: Outcome::AgentHangup,
                reason: "api_hangup",
            },
            (Requester::Agent, true) => Decision {
                status: FinalStatus::Ended,
                outcome: Outcome::AgentHangup,
                reason: "agent_hangup",
            },
        };
        self.terminate(now, decided)
    }

    /// A local failure (media could not be set up, the runtime failed):
    /// the call ends with outcome `error` and this reason.
    pub fn handle_error(&mut self, now: Instant, reason: &'static str) -> bool {
        let decided = self.error(reason);
        self.terminate(now, decided)
    }

    /// [`Lifecycle::handle_error`] with what went wrong in words (the record's
    /// `error_message`), kept only when this error is what ends the call.
    pub fn handle_error_detail(
        &mut self,
        now: Instant,
        reason: &'static str,
        detail: String,
    ) -> bool {
        if matches!(self.phase, Phase::Ending | Phase::Done) {
            return false;
        }
        self.detail = Some(detail);
        self.handle_error(now, reason)
    }

    /// Fires every timer whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for timer in TIMERS {
            let due = self.timers[timer as usize].is_some_and(|at| at <= now);
            if !due {
                continue;
            }
            self.timers[timer as usize] = None;
            match timer {
                Timer::Join => {
                    let decided = if self.phase == Phase::Calling && !self.responded {
                        // Not a callee who did not pick up: the trunk never answered.
                        self.error("trunk_no_response")
                    } else {
                        Decision {
                            status: FinalStatus::Failed,
                            outcome: Outcome::NoAnswer,
                            reason: "join_timeout",
                        }
                    };
                    self.terminate(now, decided);
                }
                Timer::MaxDuration => {
                    let decided = Decision {
                        status: FinalStatus::Ended,
                        outcome: Outcome::MaxDuration,
                        reason: "max_duration",
                    };
                    self.terminate(now, decided);
                }
                Timer::Inactivity => {
                    let decided = self.error("media_timeout");
                    self.terminate(now, decided);
                }
                Timer::Teardown => {
                    if let Some(decided) = self.decided {
                        self.finish(now, decided);
                    }
                }
            }
        }
    }

    // Output.

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest armed deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.iter().flatten().min().copied()
    }

    // Helpers.

    fn error(&self, reason: &'static str) -> Decision {
        Decision {
            status: if self.answered_at.is_some() {
                FinalStatus::Ended
            } else {
                FinalStatus::Failed
            },
            outcome: Outcome::Error,
            reason,
        }
    }

    fn shutdown_end(&self) -> Decision {
        if self.answered_at.is_some() {
            Decision {
                status: FinalStatus::Ended,
                outcome: Outcome::AgentHangup,
                reason: "shutdown",
            }
        } else {
            Decision {
                status: FinalStatus::Failed,
                outcome: Outcome::Error,
                reason: "shutdown",
            }
        }
    }

    /// Decides the end, sends CANCEL or BYE, and arms the teardown guard.
    /// Before anything was sent the call simply finishes; so does an
    /// outbound call the trunk never answered at all, since nothing will
    /// confirm its CANCEL (the user agent still sends it, or a BYE, should
    /// the trunk answer late).
    fn terminate(&mut self, now: Instant, decided: Decision) -> bool {
        match self.phase {
            Phase::Idle => {
                self.finish(now, decided);
                true
            }
            Phase::Calling if !self.inbound && !self.responded => {
                self.outputs.push_back(Output::Cancel);
                self.finish(now, decided);
                true
            }
            Phase::Calling | Phase::Ringing => {
                self.decided = Some(decided);
                self.phase = Phase::Ending;
                self.outputs.push_back(Output::Cancel);
                // A hang-up shows at once; a timeout's end is confirmed within
                // moments, and readers waiting for a terminal status then get
                // the whole record.
                if !self.inbound && decided.status == FinalStatus::Cancelled {
                    self.outputs.push_back(Output::Ending(decided));
                }
                self.arm_teardown(now);
                true
            }
            Phase::InProgress => {
                self.decided = Some(decided);
                self.phase = Phase::Ending;
                self.outputs.push_back(Output::Bye);
                self.arm_teardown(now);
                true
            }
            Phase::Ending | Phase::Done => false,
        }
    }

    fn arm_teardown(&mut self, now: Instant) {
        self.timers = [None; 4];
        self.timers[Timer::Teardown as usize] = Some(now + self.config.teardown_timeout);
    }

    fn finish(&mut self, now: Instant, decided: Decision) {
        self.phase = Phase::Done;
        self.timers = [None; 4];
        self.decided = Some(decided);
        self.outputs.push_back(Output::Finished(End {
            status: decided.status,
            outcome: decided.outcome,
            reason: decided.reason,
            detail: self.detail.clone(),
            sip_code: self.sip_code,
            q850: self.q850,
            answered_at: self.answered_at,
            ended_at: now,
        }));
    }
}

#[cfg(test)]
mod tests;
