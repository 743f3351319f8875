//! The test bot's brain: an [`AgentRuntime`] (the same trait as agents)
//! that runs a scenario [`Script`] and records the run's [`Timeline`].
//!
//! Time is the inbound frame clock: frame `n` (from 1) covers
//! `[(n-1)*20, n*20)` ms from media start. The brain knows when its own
//! utterances really played from the marks it queues around them (the
//! bridge echoes a mark once the audio before it was sent), and it runs
//! voice activity detection on the agent's audio. When its input ends
//! (the call is over) it hands a [`BrainReport`] over a oneshot channel.

use futures_util::future::BoxFuture;
use media::codec::SampleRate;
use tokio::sync::oneshot;
use tracing::debug;

use crate::measure::{Span, Timeline, Utterance};
use crate::script::{Command, Script, Speech};
use crate::speech::{self, SpeechError};
use crate::vad::{Vad, VadConfig, VadEvent};
use agent_bridge::agent::{
    AgentRuntime, CallMetadata, RuntimeError, RuntimeInput, RuntimeOutput, RuntimeSession,
};

/// Frame duration (ms).
const FRAME_MS: u64 = 20;
/// Longest wait for the agent to finish a turn once it started.
const TURN_LIMIT_MS: u64 = 30_000;

/// What the brain observed on a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrainReport {
    /// The run on the frame clock.
    pub timeline: Timeline,
    /// Digits sent.
    pub dtmf_sent: String,
    /// Digits heard (RFC 4733).
    pub dtmf_heard: String,
    /// `expect_speech`/`barge_in` steps that timed out.
    pub expect_timeouts: u32,
    /// Whether the script ran to its end (it asked for the hang-up).
    pub finished: bool,
    /// Inbound frames seen.
    pub frames: u64,
}

/// The audio of each command (`None` for commands without audio).
type Rendered = Vec<Option<Vec<i16>>>;

/// The bot's brain for one run.
pub struct Brain {
    script: Script,
    prepared: Vec<(SampleRate, Rendered)>,
    report: oneshot::Sender<BrainReport>,
}

impl Brain {
    /// A brain running `script`, and where its report arrives.
    pub fn new(script: Script) -> (Brain, oneshot::Receiver<BrainReport>) {
        let (report, receiver) = oneshot::channel();
        (
            Brain {
                script,
                prepared: Vec::new(),
                report,
            },
            receiver,
        )
    }

    /// Renders the script's speech at each of `rates` now (off the
    /// runtime's threads), so the call's audio never waits for decoding.
    /// Rates left out are rendered when the call starts.
    pub async fn prepare(&mut self, rates: &[SampleRate]) -> Result<(), SpeechError> {
        for &rate in rates {
            if self.prepared.iter().any(|(r, _)| *r == rate) {
                continue;
            }
            let audio = render_blocking(&self.script, rate).await?;
            self.prepared.push((rate, audio));
        }
        Ok(())
    }
}

/// [`render_all`] on a blocking thread.
async fn render_blocking(script: &Script, rate: SampleRate) -> Result<Rendered, SpeechError> {
    let script = script.clone();
    tokio::task::spawn_blocking(move || render_all(&script, rate))
        .await
        .map_err(|error| SpeechError::Resample {
            from: rate.hz(),
            to: rate.hz(),
            reason: format!("rendering task failed: {error}"),
        })?
}

impl AgentRuntime for Brain {
    fn kind(&self) -> &'static str {
        "test_bot"
    }

    fn run(
        self: Box<Self>,
        metadata: CallMetadata,
        session: RuntimeSession,
    ) -> BoxFuture<'static, Result<(), RuntimeError>> {
        Box::pin(async move {
            let rate = SampleRate::from_hz(metadata.sample_rate).ok_or_else(|| {
                RuntimeError::Failed(format!("unsupported rate {}", metadata.sample_rate))
            })?;
            let Brain {
                script,
                mut prepared,
                report,
            } = *self;
            let audio = match prepared.iter().position(|(r, _)| *r == rate) {
                Some(index) => prepared.swap_remove(index).1,
                None => render_blocking(&script, rate)
                    .await
                    .map_err(|error| match error {
                        SpeechError::File { path, reason } => {
                            RuntimeError::AudioFile { path, reason }
                        }
                        other => RuntimeError::Failed(other.to_string()),
                    })?,
            };
            let mut run = Run::new(script.commands, audio, rate);
            let _ = report.send(run.drive(session).await);
            Ok(())
        })
    }
}

/// The audio of every `say`/`barge_in`, in command order (rendered before
/// the call's audio starts, never per frame).
fn render_all(script: &Script, rate: SampleRate) -> Result<Rendered, SpeechError> {
    script
        .commands
        .iter()
        .map(|command| match command {
            Command::Say(speech) | Command::BargeIn(speech) => {
                speech::render(speech, rate).map(Some)
            }
            _ => Ok(None),
        })
        .collect()
}

/// What the current step waits for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// Take the next command.
    Next,
    /// An utterance is queued; its end mark is `end_mark`.
    Speaking {
        end_mark: u64,
        frames: u64,
        barge_in: bool,
    },
    /// DTMF is queued; done at `mark`.
    Dialing { mark: u64, started_ms: Option<u64> },
    /// Silent until this time.
    Waiting { started_ms: u64, until_ms: u64 },
    /// Waiting for an agent segment starting at or after `since_ms` to end.
    Expecting { since_ms: u64, deadline_ms: u64 },
    /// Waiting for the agent to talk, to talk over it.
    BargeWaiting { index: usize, deadline_ms: u64 },
    /// The hang-up is queued.
    HungUp,
}

struct Run {
    commands: Vec<Command>,
    /// Samples in one 20 ms frame at the call's rate.
    frame_samples: u64,
    audio: Vec<Option<Vec<i16>>>,
    next: usize,
    step: Step,
    vad: Vad,
    frames: u64,
    next_mark: u64,
    /// Onset of the utterance being played (from its start mark).
    speaking_since: Option<u64>,
    last_utterance_onset: Option<u64>,
    agent_open: Option<u64>,
    report: BrainReport,
}

impl Run {
    fn new(commands: Vec<Command>, audio: Vec<Option<Vec<i16>>>, rate: SampleRate) -> Run {
        Run {
            commands,
            frame_samples: rate.frame_samples() as u64,
            audio,
            next: 0,
            step: Step::Next,
            vad: Vad::new(VadConfig::default()),
            frames: 0,
            next_mark: 1,
            speaking_since: None,
            last_utterance_onset: None,
            agent_open: None,
            report: BrainReport::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.frames * FRAME_MS
    }

    async fn drive(&mut self, mut session: RuntimeSession) -> BrainReport {
        self.advance(&session).await;
        while let Some(input) = session.input.recv().await {
            match input {
                RuntimeInput::Audio(frame) => {
                    self.frames += 1;
                    match self.vad.push(frame.samples()) {
                        Some(VadEvent::Onset(frame)) => self.agent_open = Some(frame * FRAME_MS),
                        Some(VadEvent::Offset(end)) => self.close_agent(end * FRAME_MS),
                        None => {}
                    }
                }
                RuntimeInput::Dtmf(digit) => self.report.dtmf_heard.push(digit),
                RuntimeInput::Mark { id, cleared } => self.on_mark(id, cleared),
            }
            self.advance(&session).await;
        }
        self.finish()
    }

    fn close_agent(&mut self, end_ms: u64) {
        if let Some(start) = self.agent_open.take() {
            self.report
                .timeline
                .agent_speech
                .push(Span::new(start, end_ms));
        }
    }

    fn on_mark(&mut self, id: u64, cleared: bool) {
        let now = self.now_ms();
        match self.step {
            Step::Speaking {
                end_mark,
                frames,
                barge_in,
            } if id == end_mark => {
                // Played up to the end of the current frame. The onset is
                // the end minus the utterance's own length (exact, even if
                // the start mark was reached a tick early).
                let end = now;
                let start = end.saturating_sub(frames * FRAME_MS);
                let start = self.speaking_since.map_or(start, |s| s.max(start));
                let span = Span::new(start, if cleared { now } else { end });
                self.report
                    .timeline
                    .bot_speech
                    .push(Utterance { span, barge_in });
                self.last_utterance_onset = Some(span.start_ms);
                self.speaking_since = None;
                self.step = Step::Next;
            }
            Step::Speaking { end_mark, .. } if id + 1 == end_mark => {
                // The start mark: this frame carried the first samples.
                self.speaking_since = Some(now.saturating_sub(FRAME_MS));
            }
            Step::Dialing { mark, started_ms } if id == mark => {
                let start = started_ms.unwrap_or(now);
                self.report.timeline.bot_dtmf.push(Span::new(start, now));
                self.step = Step::Next;
            }
            _ => debug!(id, cleared, "mark"),
        }
    }

    /// Moves through the script as far as the current inputs allow.
    async fn advance(&mut self, session: &RuntimeSession) {
        loop {
            let now = self.now_ms();
            match self.step {
                Step::Next => {
                    let Some(command) = self.commands.get(self.next).cloned() else {
                        self.hang_up(session).await;
                        return;
                    };
                    let index = self.next;
                    self.next += 1;
                    self.start(index, command, session).await;
                }
                Step::Waiting {
                    started_ms,
                    until_ms,
                } => {
                    if now < until_ms {
                        return;
                    }
                    self.report
                        .timeline
                        .scripted_waits
                        .push(Span::new(started_ms, now));
                    self.step = Step::Next;
                }
                Step::Expecting {
                    since_ms,
                    deadline_ms,
                } => {
                    let done = self
                        .report
                        .timeline
                        .agent_speech
                        .iter()
                        .any(|segment| segment.start_ms >= since_ms);
                    let talking = self.agent_open.is_some_and(|start| start >= since_ms);
                    if done && !talking {
                        self.step = Step::Next;
                    } else if talking {
                        if now >= deadline_ms + TURN_LIMIT_MS {
                            self.step = Step::Next;
                        } else {
                            return;
                        }
                    } else if now >= deadline_ms {
                        self.report.expect_timeouts += 1;
                        self.step = Step::Next;
                    } else {
                        return;
                    }
                }
                Step::BargeWaiting { index, deadline_ms } => {
                    if self.agent_open.is_some() {
                        self.speak(index, true, session).await;
                        return;
                    }
                    if now >= deadline_ms {
                        self.report.expect_timeouts += 1;
                        self.step = Step::Next;
                    } else {
                        return;
                    }
                }
                Step::Speaking { .. } | Step::Dialing { .. } | Step::HungUp => return,
            }
        }
    }

    async fn start(&mut self, index: usize, command: Command, session: &RuntimeSession) {
        let now = self.now_ms();
        match command {
            Command::Say(_) => self.speak(index, false, session).await,
            Command::BargeIn(_) => {
                self.step = Step::BargeWaiting {
                    index,
                    deadline_ms: now + crate::script::EXPECT_TIMEOUT.as_millis() as u64,
                };
            }
            Command::Dtmf(digits) => {
                let mark = self.mark();
                self.report.dtmf_sent.push_str(&digits);
                let _ = session.send(RuntimeOutput::Dtmf(digits)).await;
                let _ = session.send(RuntimeOutput::Mark(mark)).await;
                self.step = Step::Dialing {
                    mark,
                    started_ms: Some(now),
                };
            }
            Command::Wait(duration) => {
                self.step = Step::Waiting {
                    started_ms: now,
                    until_ms: now + duration.as_millis() as u64,
                };
            }
            Command::ExpectSpeech(timeout) => {
                // A reply may already have started during our last utterance.
                let since_ms = match index.checked_sub(1).map(|i| &self.commands[i]) {
                    Some(Command::Say(_) | Command::BargeIn(_)) => {
                        self.last_utterance_onset.unwrap_or(now)
                    }
                    _ => now,
                };
                self.step = Step::Expecting {
                    since_ms,
                    deadline_ms: now + timeout.as_millis() as u64,
                };
            }
            Command::Hangup => self.hang_up(session).await,
        }
    }

    async fn speak(&mut self, index: usize, barge_in: bool, session: &RuntimeSession) {
        let samples = self.audio[index].clone().unwrap_or_default();
        let frames = (samples.len() as u64).div_ceil(self.frame_samples.max(1));
        let start_mark = self.mark();
        let end_mark = self.mark();
        let _ = session.send(RuntimeOutput::Mark(start_mark)).await;
        if let Some(Command::Say(Speech::Text(text)) | Command::BargeIn(Speech::Text(text))) =
            self.commands.get(index)
        {
            let _ = session
                .send(RuntimeOutput::Transcript {
                    role: "caller".into(),
                    text: text.clone(),
                    is_final: true,
                })
                .await;
        }
        let _ = session.send(RuntimeOutput::Audio(samples)).await;
        let _ = session.send(RuntimeOutput::Mark(end_mark)).await;
        self.step = Step::Speaking {
            end_mark,
            frames,
            barge_in,
        };
    }

    fn mark(&mut self) -> u64 {
        let id = self.next_mark;
        self.next_mark += 1;
        id
    }

    async fn hang_up(&mut self, session: &RuntimeSession) {
        if self.step != Step::HungUp {
            self.report.finished = true;
            let _ = session.send(RuntimeOutput::Hangup).await;
            self.step = Step::HungUp;
        }
    }

    fn finish(&mut self) -> BrainReport {
        let now = self.now_ms();
        // Voice still running (or in its hangover) when the call ends
        // lasts until the end: whether the agent was about to stop is unknown.
        if self.vad.finish().is_some() {
            self.close_agent(now);
        }
        match self.step {
            Step::Speaking { barge_in, .. } => {
                if let Some(start) = self.speaking_since {
                    self.report.timeline.bot_speech.push(Utterance {
                        span: Span::new(start, now),
                        barge_in,
                    });
                }
            }
            Step::Waiting { started_ms, .. } => self
                .report
                .timeline
                .scripted_waits
                .push(Span::new(started_ms, now)),
            Step::Dialing {
                started_ms: Some(start),
                ..
            } => self.report.timeline.bot_dtmf.push(Span::new(start, now)),
            _ => {}
        }
        self.report.timeline.duration_ms = now;
        self.report.frames = self.frames;
        std::mem::take(&mut self.report)
    }
}
