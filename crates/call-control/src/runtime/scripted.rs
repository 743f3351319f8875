//! The `scripted` runtime: plays the greeting, then runs its steps in order.
//!
//! Offline and deterministic. Each step that plays something (`say`,
//! `tone`, `dtmf`) queues its audio or digits followed by a mark, and the
//! next step starts only when the bridge reports the mark reached, i.e.
//! when the caller has really heard it. Waits count inbound frames (one
//! every 20 ms of the call), so a script takes the same call time whatever
//! the machine's load. `say` without an audio file plays a tone pattern
//! standing for the text ([`super::audio::text_pattern`]) and stores the
//! text in the transcript. Digits the caller presses at any time are kept
//! for the next `wait_for_dtmf` and stored in the transcript. When the
//! steps run out without a `hangup`, the agent stays on the line silently.

use std::collections::VecDeque;
use std::path::PathBuf;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::audio::{load_wav, text_pattern, tone};
use super::{
    AgentRuntime, CallMetadata, RuntimeError, RuntimeInput, RuntimeOutput, RuntimeSession,
};
use crate::model::ScriptStep;

/// The scripted runtime for one call.
#[derive(Debug, Clone)]
pub struct Scripted {
    steps: Vec<ScriptStep>,
    audio_dir: Option<PathBuf>,
}

impl Scripted {
    /// A runtime running `steps` after the greeting; `say` steps play files only from
    /// inside `audio_dir` (`[agents] audio_dir`).
    pub fn new(steps: Vec<ScriptStep>, audio_dir: Option<PathBuf>) -> Self {
        Self { steps, audio_dir }
    }
}

impl AgentRuntime for Scripted {
    fn kind(&self) -> &'static str {
        "scripted"
    }

    fn run(
        self: Box<Self>,
        metadata: CallMetadata,
        session: RuntimeSession,
    ) -> BoxFuture<'static, Result<(), RuntimeError>> {
        let runner = Runner {
            audio_dir: self.audio_dir,
            rate: metadata.sample_rate,
            session,
            digits: VecDeque::new(),
            next_mark: 0,
        };
        runner.run(metadata.greeting, self.steps).boxed()
    }
}

/// Why a script stopped early.
enum Stop {
    /// The call is over (input closed or output refused).
    CallOver,
}

struct Runner {
    /// `[agents] audio_dir`: where `say` files may come from.
    audio_dir: Option<PathBuf>,
    rate: u32,
    session: RuntimeSession,
    /// Digits pressed and not yet consumed by a `wait_for_dtmf`.
    digits: VecDeque<char>,
    next_mark: u64,
}

impl Runner {
    async fn run(
        mut self,
        greeting: Option<String>,
        steps: Vec<ScriptStep>,
    ) -> Result<(), RuntimeError> {
        match self.script(greeting, steps).await {
            Ok(()) | Err(Ok(Stop::CallOver)) => Ok(()),
            Err(Err(error)) => Err(error),
        }
    }

    /// Runs the greeting and the steps; `Err(Ok(_))` is a normal early stop.
    async fn script(
        &mut self,
        greeting: Option<String>,
        steps: Vec<ScriptStep>,
    ) -> Result<(), Result<Stop, RuntimeError>> {
        if let Some(greeting) = greeting.filter(|g| !g.trim().is_empty()) {
            self.say(&greeting, None).await?;
        }
        for step in steps {
            match step {
                ScriptStep::Say { text, audio } => {
                    self.say(text.as_deref().unwrap_or(""), audio.map(PathBuf::from))
                        .await?
                }
                ScriptStep::Tone {
                    frequency_hz,
                    duration_ms,
                } => {
                    let pcm = tone(frequency_hz, duration_ms, self.rate);
                    self.play(vec![RuntimeOutput::Audio(pcm)]).await?;
                }
                ScriptStep::Dtmf { digits } => {
                    self.play(vec![RuntimeOutput::Dtmf(digits)]).await?;
                }
                ScriptStep::Wait { ms } => {
                    self.wait_frames(frames_for(ms), false).await?;
                }
                ScriptStep::WaitForDtmf { timeout_ms } => {
                    if self.digits.pop_front().is_none() {
                        self.wait_frames(frames_for(timeout_ms), true).await?;
                        self.digits.pop_front();
                    }
                }
                ScriptStep::Hangup => {
                    self.send(RuntimeOutput::Hangup).await?;
                    return Ok(());
                }
            }
        }
        // Out of steps: stay on the line until the call ends.
        while self.next_input().await?.is_some() {}
        Ok(())
    }

    /// Plays `text` (an audio file, or its tone pattern) and stores it in the transcript.
    async fn say(
        &mut self,
        text: &str,
        audio: Option<PathBuf>,
    ) -> Result<(), Result<Stop, RuntimeError>> {
        let pcm = match audio {
            Some(name) => {
                // Checked when the agent was written; checked again now, against the
                // directory and files as they are.
                let path = crate::audio_files::resolve(
                    self.audio_dir.as_deref(),
                    &name,
                    "[agents] audio_dir",
                )
                .map_err(|error| Err(RuntimeError::Failed(format!("say: {error}"))))?;
                let rate = self.rate;
                tokio::task::spawn_blocking(move || load_wav(&path, rate))
                    .await
                    .map_err(|e| Err(RuntimeError::Failed(format!("audio loader: {e}"))))?
                    .map_err(Err)?
            }
            None => text_pattern(text, self.rate),
        };
        let mut outputs = Vec::with_capacity(2);
        if !text.is_empty() {
            outputs.push(RuntimeOutput::Transcript {
                role: "agent".into(),
                text: text.to_owned(),
                is_final: true,
            });
        }
        outputs.push(RuntimeOutput::Audio(pcm));
        self.play(outputs).await
    }

    /// Sends `outputs` and a mark, and waits until the mark is reached.
    async fn play(
        &mut self,
        outputs: Vec<RuntimeOutput>,
    ) -> Result<(), Result<Stop, RuntimeError>> {
        for output in outputs {
            self.send(output).await?;
        }
        let mark = self.next_mark;
        self.next_mark += 1;
        self.send(RuntimeOutput::Mark(mark)).await?;
        loop {
            match self.next_input().await? {
                Some(RuntimeInput::Mark { id, .. }) if id == mark => return Ok(()),
                Some(_) => {}
                None => return Err(Ok(Stop::CallOver)),
            }
        }
    }

    /// Waits `frames` inbound frames; with `until_digit`, stops early at a digit.
    async fn wait_frames(
        &mut self,
        frames: u64,
        until_digit: bool,
    ) -> Result<(), Result<Stop, RuntimeError>> {
        let mut left = frames;
        while left > 0 {
            match self.next_input().await? {
                Some(RuntimeInput::Audio(_)) => left -= 1,
                Some(RuntimeInput::Dtmf(_)) if until_digit => return Ok(()),
                Some(_) => {}
                None => return Err(Ok(Stop::CallOver)),
            }
        }
        Ok(())
    }

    /// The next input; digits are queued (and transcribed) on the way.
    async fn next_input(&mut self) -> Result<Option<RuntimeInput>, Result<Stop, RuntimeError>> {
        let input = self.session.input.recv().await;
        if let Some(RuntimeInput::Dtmf(digit)) = input {
            self.digits.push_back(digit);
            self.send(RuntimeOutput::Transcript {
                role: "caller".into(),
                text: format!("DTMF {digit}"),
                is_final: true,
            })
            .await?;
        }
        Ok(input)
    }

    async fn send(&self, output: RuntimeOutput) -> Result<(), Result<Stop, RuntimeError>> {
        if self.session.send(output).await {
            Ok(())
        } else {
            Err(Ok(Stop::CallOver))
        }
    }
}

/// Inbound frames in `ms` milliseconds (rounded up).
fn frames_for(ms: u64) -> u64 {
    ms.div_ceil(20)
}

#[cfg(test)]
mod tests;
