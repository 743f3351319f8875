//! The task that owns one call: it drives the [`Lifecycle`] with SIP
//! events, API commands, bridge reports and its timers, takes the SIP and
//! media actions it asks for, and hands every status to the call's
//! [`Persister`], which writes the record before it emits the webhook.

use std::sync::Arc;
use std::time::Instant;

use agent_bridge::bridge::{Bridge, BridgeEnd, BridgeEvent, BridgeRuntime, RunningBridge};
use chrono::Utc;
use media::record::RecordingHandle;
use media::rtp_session::IpNet;
use media::stream::StreamHandle;
use sip_stack::sdp::{negotiated, SessionDescription};
use sip_stack::ua::{CallEvent, CallHandle, EndReason, FailureCause, Party};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

use super::billing::{self, Pricing};
use super::lifecycle::{
    Decision, End, FinalStatus, Lifecycle, LifecycleConfig, Outcome, Output, Progress, RemoteEnd,
    Requester,
};
use super::negotiate::{frames_per_digit, media_config};
use super::persist::Persister;
use super::transcript::TranscriptLimit;
use super::Shared;
use crate::model::{events, Agent, Call, CallOutcome, CallStatus, MediaStats as CallMediaStats};
use crate::runtime::{CallMetadata, RuntimeError, RuntimeSession};

/// A command to a live call.
#[derive(Debug)]
pub enum CallCommand {
    /// Hang up (cancel when not answered).
    Hangup(Requester),
    /// The organisation's balance does not cover the call's next minute: end it.
    CreditExhausted,
}

/// Messages between the bridge and the runtime, each way.
const RUNTIME_CHANNEL: usize = 64;

/// Media of an answered call.
struct Active {
    bridge: RunningBridge,
    runtime: Option<JoinHandle<Result<(), RuntimeError>>>,
}

/// One call's task state.
pub struct CallTask {
    shared: Arc<Shared>,
    call: Call,
    agent: Agent,
    lifecycle: Lifecycle,
    sip: CallHandle,
    sip_done: bool,
    commands_open: bool,
    commands: mpsc::UnboundedReceiver<CallCommand>,
    persister: Persister,
    /// Outbound: our offer, and the stream reserving its port.
    offer: Option<SessionDescription>,
    provisional: Option<StreamHandle>,
    /// Networks besides the SDP address that the call's media may come from.
    media_networks: Vec<IpNet>,
    active: Option<Active>,
    bridge_events: mpsc::UnboundedReceiver<BridgeEvent>,
    bridge_events_tx: mpsc::UnboundedSender<BridgeEvent>,
    /// What the transcript has used of its bounds.
    transcript_limit: TranscriptLimit,
    /// Who charges the call when it ends.
    pricing: Pricing,
}

impl CallTask {
    /// A task for `call` on the SIP leg `sip`.
    pub fn new(
        shared: Arc<Shared>,
        call: Call,
        agent: Agent,
        sip: CallHandle,
        commands: mpsc::UnboundedReceiver<CallCommand>,
    ) -> Self {
        let config = LifecycleConfig {
            join_timeout: std::time::Duration::from_secs(u64::from(call.join_timeout_secs.max(1))),
            max_duration: std::time::Duration::from_secs(u64::from(call.max_duration_secs.max(1))),
            inactivity_timeout: shared.inactivity_timeout,
            ..LifecycleConfig::default()
        };
        let persister = shared.persister.clone();
        let (bridge_events_tx, bridge_events) = mpsc::unbounded_channel();
        Self {
            shared,
            call,
            agent,
            lifecycle: Lifecycle::new(config),
            sip,
            sip_done: false,
            commands_open: true,
            commands,
            persister,
            offer: None,
            provisional: None,
            media_networks: Vec::new(),
            active: None,
            bridge_events,
            bridge_events_tx,
            transcript_limit: TranscriptLimit::default(),
            pricing: Pricing::PerMinute,
        }
    }

    /// The call is the agent's leg of a test run, which charges it (not the engine).
    pub fn priced_by_test_run(&mut self) {
        self.pricing = Pricing::TestRun;
    }

    /// Outbound: the INVITE went out with `offer`, whose port `provisional` holds.
    /// Outbound: the INVITE with `offer` went out; `provisional` holds its port and
    /// `media_networks` are where besides the answer's SDP address media may come from.
    pub fn invite_sent(
        &mut self,
        offer: SessionDescription,
        provisional: StreamHandle,
        media_networks: Vec<IpNet>,
    ) {
        self.offer = Some(offer);
        self.media_networks = media_networks;
        self.provisional = Some(provisional);
        self.call.sip_call_id = Some(self.sip.sip_call_id().to_owned());
        self.lifecycle.handle_invite_sent(Instant::now());
    }

    /// Inbound: we ring, then answer with `answer_sdp` on `stream`.
    pub fn answer_inbound(
        &mut self,
        stream: StreamHandle,
        answer_sdp: String,
        telephone_event: bool,
    ) {
        let now = Instant::now();
        self.call.sip_call_id = Some(self.sip.sip_call_id().to_owned());
        self.lifecycle.handle_incoming(now);
        self.sip.ring(None);
        self.sip.answer(answer_sdp);
        self.start_media(stream, telephone_event);
        self.lifecycle.handle_answered(now);
    }

    /// A failure before anything was sent: the call ends with `error`.
    pub fn fail_early(&mut self, reason: &'static str) {
        self.lifecycle.handle_error(Instant::now(), reason);
    }

    /// Runs the call to its end and writes its last record. Returns once
    /// the record is written.
    pub async fn run(mut self) {
        loop {
            if let Some(end) = self.apply_outputs() {
                // Boxed, like the SIP events' handling below: awaited inline, their
                // futures would keep their room in the call's task for the whole call.
                Box::pin(self.finish(end)).await;
                return;
            }
            let deadline = self.lifecycle.poll_timeout();
            tokio::select! {
                event = self.sip.next_event(), if !self.sip_done => {
                    Box::pin(self.on_sip(event)).await;
                }
                command = self.commands.recv(), if self.commands_open => match command {
                    Some(CallCommand::Hangup(by)) => {
                        self.lifecycle.handle_hangup(Instant::now(), by);
                    }
                    Some(CallCommand::CreditExhausted) => {
                        self.lifecycle.handle_error_detail(
                            Instant::now(),
                            "insufficient_credits",
                            "the organisation's balance does not cover another minute".into(),
                        );
                    }
                    None => {
                        self.commands_open = false;
                        self.lifecycle.handle_hangup(Instant::now(), Requester::Shutdown);
                    }
                },
                Some(event) = self.bridge_events.recv() => self.on_bridge(event),
                result = runtime_done(&mut self.active) => {
                    if let Some(active) = &mut self.active {
                        active.runtime = None;
                    }
                    match result {
                        Ok(Ok(())) => debug!("agent runtime finished"),
                        Ok(Err(error)) => {
                            warn!(%error, "agent runtime failed");
                            self.lifecycle.handle_error_detail(
                                Instant::now(),
                                runtime_end_reason(&error),
                                error.to_string(),
                            );
                        }
                        Err(error) => {
                            warn!(%error, "agent runtime panicked");
                            self.lifecycle.handle_error(Instant::now(), "runtime_error");
                        }
                    }
                }
                _ = sleep_until(deadline) => {
                    // The bridge notes activity without telling: look before the
                    // inactivity deadline can fire.
                    if let Some(heard) = self.active.as_ref().and_then(|a| a.bridge.last_activity()) {
                        self.lifecycle.handle_media_activity(heard);
                    }
                    self.lifecycle.handle_timeout(Instant::now());
                }
            }
        }
    }

    /// Acts on the lifecycle's outputs; returns the end when the call is over.
    fn apply_outputs(&mut self) -> Option<End> {
        while let Some(output) = self.lifecycle.poll_output() {
            match output {
                Output::Status(progress) => self.on_progress(progress),
                Output::Cancel | Output::Bye => self.sip.hangup(),
                Output::Ending(decision) => self.on_ending(decision),
                Output::Finished(end) => return Some(end),
            }
        }
        None
    }

    fn on_progress(&mut self, progress: Progress) {
        let now = Utc::now();
        let event = match progress {
            Progress::Initiated => {
                self.call.status = CallStatus::Initiated;
                self.call.started_at = Some(now);
                None
            }
            Progress::Ringing => {
                self.call.status = CallStatus::Ringing;
                Some(events::CALL_RINGING)
            }
            Progress::InProgress => {
                self.call.status = CallStatus::InProgress;
                self.call.answered_at = Some(now);
                self.call.sip_final_code = Some(200);
                Some(events::CALL_ANSWERED)
            }
        };
        info!(status = %self.call.status, "call status");
        self.persister.save(self.call.clone(), event, None, None);
    }

    /// The end is decided while the far end confirms our CANCEL: the record
    /// shows it at once; `ended_at` and `call.ended` follow with the end.
    fn on_ending(&mut self, decision: Decision) {
        self.call.status = final_status(decision.status);
        self.call.outcome = Some(outcome(decision.outcome));
        self.call.end_reason = Some(decision.reason.to_owned());
        info!(status = %self.call.status, reason = decision.reason, "call ending");
        self.persister.save(self.call.clone(), None, None, None);
    }

    async fn on_sip(&mut self, event: Option<CallEvent>) {
        let now = Instant::now();
        let Some(event) = event else {
            self.sip_done = true;
            self.lifecycle.handle_ended(now, RemoteEnd::Shutdown, None);
            return;
        };
        if event.is_terminal() {
            self.sip_done = true;
        }
        match event {
            // Authentication happens before the call task takes the call.
            CallEvent::Confirmed | CallEvent::Authenticated { .. } => {}
            CallEvent::Trying => self.lifecycle.handle_trying(now),
            CallEvent::Ringing { .. } => self.lifecycle.handle_ringing(now),
            CallEvent::CancelAnswered { code } => {
                debug!(code, "CANCEL answered");
                self.lifecycle.handle_cancel_answered(now);
            }
            CallEvent::Answered { sdp } => self.on_answered(now, sdp).await,
            CallEvent::RemoteUpdate { sdp } => self.on_remote_update(&sdp),
            CallEvent::Failed {
                code,
                reason,
                q850,
                cause,
            } => match cause {
                FailureCause::Transport(failure) => {
                    warn!(error = %failure, "trunk unreachable");
                    self.lifecycle.handle_unreachable(now, failure.message);
                }
                FailureCause::NoResponse => {
                    warn!("no response from the trunk");
                    self.lifecycle.handle_no_response(now);
                }
                FailureCause::Response | FailureCause::Local => {
                    debug!(code, reason, "call failed");
                    self.lifecycle
                        .handle_failed(now, code, q850.map(|q| q.cause));
                }
            },
            CallEvent::Ended { by, reason, q850 } => {
                let how = match (by, reason) {
                    (Party::Remote, EndReason::Bye) => RemoteEnd::Bye,
                    (Party::Local, EndReason::Bye) => RemoteEnd::LocalBye,
                    (_, EndReason::SessionExpired) => RemoteEnd::SessionExpired,
                    (_, EndReason::AckTimeout) => RemoteEnd::AckTimeout,
                    (_, EndReason::DialogLost) => RemoteEnd::DialogLost,
                    (_, EndReason::Shutdown) => RemoteEnd::Shutdown,
                };
                self.lifecycle.handle_ended(now, how, q850.map(|q| q.cause));
            }
        }
    }

    /// Outbound 2xx: sets media up on the negotiated codec, then marks the call answered.
    async fn on_answered(&mut self, now: Instant, sdp: Option<String>) {
        let phase_before = self.lifecycle.phase();
        self.lifecycle.handle_answered(now);
        if self.lifecycle.phase() != super::lifecycle::Phase::InProgress
            || phase_before == super::lifecycle::Phase::InProgress
        {
            return;
        }
        if let Err(reason) = self.outbound_media(sdp).await {
            warn!(reason, "media setup failed");
            self.lifecycle.handle_error(now, reason);
        }
    }

    async fn outbound_media(&mut self, sdp: Option<String>) -> Result<(), &'static str> {
        let offer = self.offer.as_ref().ok_or("no_offer")?;
        let answer = sdp
            .as_deref()
            .map(SessionDescription::parse)
            .ok_or("no_sdp_answer")?
            .map_err(|_| "bad_sdp_answer")?;
        let negotiated = negotiated(offer, &answer).map_err(|_| "no_common_codec")?;
        let wanted =
            media_config(&negotiated, &self.media_networks).map_err(|_| "unsupported_codec")?;
        let telephone_event = wanted.telephone_event_pt.is_some();
        let mut stream = self.provisional.take().ok_or("no_stream")?;
        // The offer's port is kept: the stream takes the answer's codec in place.
        stream
            .reconfigure(wanted)
            .await
            .map_err(|_| "media_reconfigure_failed")?;
        self.start_media(stream, telephone_event);
        Ok(())
    }

    fn on_remote_update(&mut self, sdp: &str) {
        let Ok(description) = SessionDescription::parse(sdp) else {
            return;
        };
        let Some(audio) = description.audio() else {
            return;
        };
        let Some(ip) = description.connection_for(audio) else {
            return;
        };
        if let Some(active) = &self.active {
            let remote = std::net::SocketAddr::new(ip, audio.port);
            active.bridge.set_remote(remote);
        }
    }

    /// Starts recording, the agent runtime and the bridge on `stream`.
    fn start_media(&mut self, stream: StreamHandle, telephone_event: bool) {
        let rate = stream.app_rate();
        let recording = self.open_recording(rate);
        let metadata = CallMetadata {
            call_id: self.call.id.clone(),
            org_id: self.call.org_id.clone(),
            agent_id: self.call.agent_id.clone(),
            direction: self.call.direction.into(),
            from_number: self.call.from_number.clone(),
            to_number: self.call.to_number.clone(),
            prompt: self
                .call
                .rendered_prompt
                .clone()
                .unwrap_or_else(|| self.agent.prompt.clone()),
            greeting: self
                .call
                .rendered_greeting
                .clone()
                .or_else(|| self.call.call_settings.greeting.clone())
                .or_else(|| self.agent.greeting.clone()),
            variables: self.call.variables.clone(),
            sip_call_id: self.call.sip_call_id.clone(),
            sample_rate: rate.hz(),
        };
        let (runtime, task) = match self.shared.runtimes.create(&self.agent, &metadata) {
            Ok(runtime) => match runtime.in_tick() {
                Some(in_tick) => {
                    info!(
                        runtime = runtime.kind(),
                        "agent runtime runs in the media tick"
                    );
                    (BridgeRuntime::InTick(in_tick), None)
                }
                None => {
                    info!(runtime = runtime.kind(), "agent runtime started");
                    let (session, input, output) = RuntimeSession::channel(RUNTIME_CHANNEL);
                    let task = tokio::spawn(runtime.run(metadata, session).in_current_span());
                    (BridgeRuntime::Task { input, output }, Some(task))
                }
            },
            Err(error) => {
                warn!(%error, "agent runtime unavailable");
                self.lifecycle
                    .handle_error(Instant::now(), "runtime_unavailable");
                // No runtime: the bridge's channels lead nowhere until the call ends.
                let (_session, input, output) = RuntimeSession::channel(1);
                (BridgeRuntime::Task { input, output }, None)
            }
        };
        let bridge = Bridge {
            stream,
            recording,
            runtime,
            events: self.bridge_events_tx.clone(),
            telephone_event,
            frames_per_digit: frames_per_digit(),
        };
        self.active = Some(Active {
            bridge: bridge.start(),
            runtime: task,
        });
    }

    fn open_recording(&self, rate: media::codec::SampleRate) -> Option<RecordingHandle> {
        if !self.call.call_settings.recording_enabled {
            return None;
        }
        let writer = self.shared.recordings.as_ref()?;
        let path = self
            .shared
            .recordings_dir
            .join(format!("{}.wav", self.call.id));
        match writer.open(&path, rate) {
            Ok(handle) => Some(handle),
            Err(error) => {
                warn!(%error, path = %path.display(), "recording not started");
                None
            }
        }
    }

    fn on_bridge(&mut self, event: BridgeEvent) {
        match event {
            BridgeEvent::Transcript { role, text } => self.add_transcript(role, text),
            BridgeEvent::Hangup => {
                self.lifecycle
                    .handle_hangup(Instant::now(), Requester::Agent);
            }
        }
    }

    /// Keeps a transcript event, within the call's [`TranscriptLimit`].
    fn add_transcript(&mut self, role: String, text: String) {
        if self.call.call_settings.transcription_enabled {
            self.transcript_limit
                .push(&mut self.call.transcript, role, text, Utc::now());
        }
    }

    /// Stops media, gathers stats and the recording, and writes the last record.
    async fn finish(mut self, end: End) {
        if let Some(stream) = self.provisional.take() {
            let _ = stream.close().await;
        }
        if let Some(active) = self.active.take() {
            let bridge_end = active.bridge.stop().await;
            self.close_media(bridge_end).await;
            if let Some(runtime) = active.runtime {
                // The runtime's input is closed: it should return at once.
                match tokio::time::timeout(std::time::Duration::from_secs(2), runtime).await {
                    Ok(_) => {}
                    Err(_) => warn!("agent runtime did not stop; abandoned"),
                }
            }
        }
        while let Ok(event) = self.bridge_events.try_recv() {
            if let BridgeEvent::Transcript { role, text } = event {
                self.add_transcript(role, text);
            }
        }
        self.transcript_limit
            .finish(&mut self.call.transcript, Utc::now());
        let duration = end.duration();
        self.call.status = final_status(end.status);
        self.call.outcome = Some(outcome(end.outcome));
        self.call.end_reason = Some(end.reason.to_owned());
        self.call.error_message = end.detail.clone();
        self.call.sip_final_code = end.sip_code.or(self.call.sip_final_code);
        self.call.q850_cause = end.q850;
        self.call.ended_at = Some(Utc::now());
        if end.answered_at.is_some() {
            self.call.duration_seconds = Some(duration.as_secs_f64());
        } else {
            self.call.duration_seconds = Some(0.0);
        }
        let charge = match self.pricing {
            Pricing::PerMinute => billing::charge_cents(
                end.answered_at.is_some(),
                duration,
                self.shared.per_minute_cents,
            ),
            Pricing::TestRun => 0,
        };
        info!(
            status = %self.call.status,
            outcome = ?self.call.outcome,
            reason = end.reason,
            sip_code = ?self.call.sip_final_code,
            duration_s = duration.as_secs_f64(),
            "call ended"
        );
        let (done, written) = oneshot::channel();
        self.persister.save(
            self.call.clone(),
            Some(events::CALL_ENDED),
            Some(charge),
            Some(done),
        );
        let _ = written.await;
    }

    async fn close_media(&mut self, bridge_end: BridgeEnd) {
        match bridge_end.stream.close().await {
            Ok(closed) => {
                let stats = closed.stats;
                self.call.media_stats = Some(CallMediaStats {
                    codec: stats.stream.codec.clone(),
                    packets_sent: stats.stream.packets_sent,
                    packets_received: stats.stream.packets_received,
                    packets_lost: stats.stream.packets_lost,
                    loss_percent: stats.stream.loss_percent,
                    jitter_ms: stats.stream.jitter_ms,
                    concealed_ms: stats.concealed_ms,
                    mos: stats.stream.mos,
                    foreign_datagrams: stats.foreign_datagrams,
                });
            }
            Err(error) => warn!(%error, "media stats lost"),
        }
        if let Some(recording) = bridge_end.recording {
            match recording.finish().await {
                Ok(summary) if summary.frames > 0 => {
                    self.call.recording_url =
                        Some(format!("/api/public/v1/calls/{}/recording", self.call.id));
                }
                Ok(_) => {}
                Err(error) => warn!(%error, "recording failed"),
            }
        }
    }
}

/// The record's status for the lifecycle's terminal one.
fn final_status(status: FinalStatus) -> CallStatus {
    match status {
        FinalStatus::Ended => CallStatus::Ended,
        FinalStatus::Failed => CallStatus::Failed,
        FinalStatus::Cancelled => CallStatus::Cancelled,
    }
}

/// The record's outcome for the lifecycle's.
pub fn outcome(outcome: Outcome) -> CallOutcome {
    match outcome {
        Outcome::Completed => CallOutcome::Completed,
        Outcome::NoAnswer => CallOutcome::NoAnswer,
        Outcome::Busy => CallOutcome::Busy,
        Outcome::Rejected => CallOutcome::Rejected,
        Outcome::MaxDuration => CallOutcome::MaxDuration,
        Outcome::CallerHangup => CallOutcome::CallerHangup,
        Outcome::AgentHangup => CallOutcome::AgentHangup,
        Outcome::Cancelled => CallOutcome::Cancelled,
        Outcome::Error => CallOutcome::Error,
    }
}

/// The record's `end_reason` when the runtime fails: `agent_unreachable`
/// (never connected), `agent_destination_refused` (its address is not allowed),
/// `agent_disconnected` (dropped mid-call), else `runtime_error`.
fn runtime_end_reason(error: &RuntimeError) -> &'static str {
    match error {
        RuntimeError::Unreachable(_) => "agent_unreachable",
        RuntimeError::Refused(_) => "agent_destination_refused",
        RuntimeError::Disconnected(_) => "agent_disconnected",
        _ => "runtime_error",
    }
}

async fn runtime_done(
    active: &mut Option<Active>,
) -> Result<Result<(), RuntimeError>, tokio::task::JoinError> {
    match active.as_mut().and_then(|a| a.runtime.as_mut()) {
        Some(runtime) => runtime.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
