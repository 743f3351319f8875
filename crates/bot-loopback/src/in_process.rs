//! The `bot` mode: the bot's brain and an agent runtime joined in-process,
//! no SIP and no RTP. One 20 ms tick drives both sides: each side's
//! [`Playout`] hands out one frame, which the other side receives as its
//! inbound frame; marks, DTMF and hang-ups follow the same rules as the
//! [`agent_bridge::bridge`].

use std::collections::VecDeque;
use std::time::Duration;

use chrono::Utc;
use media::codec::SampleRate;
use media::stream::{AudioFrame, FrameKind};
use tokio::sync::mpsc;
use tracing::{debug, info, Instrument};

use crate::bot::{assemble, lossless_mos, BotError, LinkStats, RunReport, RunSpec, SipTimes};
use crate::brain::Brain;
use crate::measure::Party;
use agent_bridge::agent::{
    AgentRuntime, CallMetadata, RuntimeInput, RuntimeOutput, RuntimeSession,
};
use agent_bridge::playout::{Playout, PlayoutEvent};

const FRAME: Duration = Duration::from_millis(20);
const CHANNEL: usize = 64;
/// Most audio queued per side: 10 minutes at 16 kHz.
const MAX_QUEUED_SAMPLES: usize = 16_000 * 600;
/// Frames of pause per DTMF digit.
const FRAMES_PER_DIGIT: u32 = 10;

/// One side of the in-process call.
struct Side {
    input: mpsc::Sender<RuntimeInput>,
    output: mpsc::Receiver<RuntimeOutput>,
    outputs_open: bool,
    playout: Playout,
    pending: VecDeque<RuntimeInput>,
    frame: Vec<i16>,
    hung_up: bool,
    frames_sent: u64,
}

impl Side {
    fn new(
        input: mpsc::Sender<RuntimeInput>,
        output: mpsc::Receiver<RuntimeOutput>,
        frame_samples: usize,
    ) -> Side {
        Side {
            input,
            output,
            outputs_open: true,
            playout: Playout::new(frame_samples, MAX_QUEUED_SAMPLES, FRAMES_PER_DIGIT),
            pending: VecDeque::new(),
            frame: vec![0; frame_samples],
            hung_up: false,
            frames_sent: 0,
        }
    }

    /// Takes every output queued so far.
    fn take_outputs(&mut self) {
        while self.outputs_open {
            match self.output.try_recv() {
                Ok(output) => match output {
                    RuntimeOutput::Audio(samples) => self.playout.push_audio(samples),
                    RuntimeOutput::Mark(id) => self.playout.push_mark(id),
                    RuntimeOutput::Clear => self.playout.clear(),
                    RuntimeOutput::Dtmf(digits) => self.playout.push_dtmf(digits),
                    RuntimeOutput::Hangup => self.playout.push_hangup(),
                    RuntimeOutput::Transcript { .. } => {}
                },
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => self.outputs_open = false,
            }
        }
    }

    /// Plays one frame; digits it reached go to `peer_digits`.
    fn play(&mut self, peer_digits: &mut Vec<char>) {
        self.playout.next_frame(&mut self.frame);
        self.frames_sent += 1;
        while let Some(event) = self.playout.poll_event() {
            match event {
                PlayoutEvent::Mark { id, cleared } => {
                    self.pending.push_back(RuntimeInput::Mark { id, cleared })
                }
                PlayoutEvent::Dtmf(digits) => peer_digits.extend(digits.chars()),
                PlayoutEvent::Hangup => self.hung_up = true,
            }
        }
    }

    /// Hands the peer's frame, digits and this side's marks to the runtime.
    fn deliver(&mut self, frame: &[i16], digits: &[char]) {
        match AudioFrame::new(frame, FrameKind::Voice) {
            Ok(frame) => {
                let _ = self.input.try_send(RuntimeInput::Audio(frame));
            }
            Err(error) => debug!(%error, "frame not delivered"),
        }
        self.pending
            .extend(digits.iter().map(|&d| RuntimeInput::Dtmf(d)));
        while let Some(input) = self.pending.pop_front() {
            match self.input.try_send(input) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(input)) => {
                    self.pending.push_front(input);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.pending.clear();
                    break;
                }
            }
        }
    }
}

/// Runs one in-process test call (see the module docs).
pub(crate) async fn run(
    agent: Box<dyn AgentRuntime>,
    agent_metadata: CallMetadata,
    spec: RunSpec,
) -> Result<RunReport, BotError> {
    let span = tracing::info_span!("bot", call_id = %agent_metadata.call_id, mode = "bot");
    async move {
        let frame_samples = agent_metadata.frame_samples();
        let mut bot_metadata = agent_metadata.clone();
        bot_metadata.direction = match agent_metadata.direction {
            agent_bridge::agent::Direction::Inbound => agent_bridge::agent::Direction::Outbound,
            agent_bridge::agent::Direction::Outbound => agent_bridge::agent::Direction::Inbound,
        };
        let (mut brain, report_rx) = Brain::new(spec.scenario.clone());
        if let Some(rate) = SampleRate::from_hz(agent_metadata.sample_rate) {
            brain.prepare(&[rate]).await?;
        }
        let started_at = Utc::now();
        let (bot_session, bot_in, bot_out) = RuntimeSession::channel(CHANNEL);
        let (agent_session, agent_in, agent_out) = RuntimeSession::channel(CHANNEL);
        info!(runtime = agent.kind(), "in-process test call");
        let bot_task = tokio::spawn(
            Box::new(brain)
                .run(bot_metadata, bot_session)
                .in_current_span(),
        );
        let agent_task = tokio::spawn(agent.run(agent_metadata, agent_session).in_current_span());
        let mut bot = Side::new(bot_in, bot_out, frame_samples);
        let mut agent = Side::new(agent_in, agent_out, frame_samples);
        let mut ticks = tokio::time::interval(FRAME);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let limit = spec.max_duration.as_millis() / FRAME.as_millis();
        let mut tick = 0u128;
        let hangup_by = loop {
            ticks.tick().await;
            tick += 1;
            bot.take_outputs();
            agent.take_outputs();
            let mut to_agent = Vec::new();
            let mut to_bot = Vec::new();
            bot.play(&mut to_agent);
            agent.play(&mut to_bot);
            agent.deliver(&bot.frame, &to_agent);
            bot.deliver(&agent.frame, &to_bot);
            if bot.hung_up {
                break Party::Bot;
            }
            if agent.hung_up || (!agent.outputs_open && agent_task.is_finished()) {
                break Party::Agent;
            }
            if tick >= limit {
                info!("max duration reached");
                break Party::Bot;
            }
        };
        let frames = (bot.frames_sent, agent.frames_sent);
        // Ending the inputs ends both runtimes.
        drop(bot);
        drop(agent);
        let brain_error = match bot_task.await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(error) => Some(format!("brain task failed: {error}")),
        };
        let agent_error = match tokio::time::timeout(Duration::from_secs(2), agent_task).await {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(error))) => Some(format!("agent runtime: {error}")),
            Ok(Err(error)) => Some(format!("agent runtime task failed: {error}")),
            Err(_) => {
                debug!("agent runtime did not stop; abandoned");
                None
            }
        };
        let brain = report_rx.await.unwrap_or_default();
        let link = LinkStats {
            packets_sent: frames.0,
            packets_received: frames.1,
            packets_lost: 0,
            packets_dropped_outbound: 0,
            loss_percent: 0.0,
            jitter_ms: 0.0,
            mos: lossless_mos(),
        };
        let measurements = assemble(
            &brain,
            &link,
            SipTimes::default(),
            hangup_by,
            spec.network_profile,
        );
        Ok(RunReport {
            measurements,
            sip_call_id: None,
            sip_final_code: None,
            codec: None,
            invite_at: None,
            ringing_at: None,
            answered_at: Some(started_at),
            ended_at: Some(Utc::now()),
            hangup_by,
            error: brain_error.or(agent_error),
        })
    }
    .instrument(span)
    .await
}
