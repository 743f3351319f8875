//! Scenario scripts: what the test bot does on a call.
//!
//! One command per line; `#` starts a comment line; blank lines are skipped.
//!
//! ```text
//! # Ask about an order, press the order number, listen, hang up.
//! expect_speech 4s        # the greeting
//! say Hello, I would like to check the status of my order.
//! expect_speech
//! dtmf 1234
//! wait 500ms
//! barge_in Wait, I have a question before you go on.
//! say clips/question.wav  # a WAV file
//! hangup
//! ```
//!
//! - `say <text>` speaks the text with the shipped speech clips
//!   ([`crate::speech`]); `say <file.wav>` plays a WAV file.
//! - `dtmf <digits>` sends RFC 4733 digits (`0-9`, `*`, `#`, `A-D`).
//! - `wait <n>s` / `wait <n>ms` stays silent that long.
//! - `expect_speech [timeout]` waits until the agent has spoken and
//!   finished (default timeout for the agent to start: 10 s).
//! - `barge_in <text or file.wav>` waits until the agent speaks (up to
//!   10 s), then talks over it.
//! - `hangup` ends the call (also implied at the end of the script).
//!
//! A scenario prompt is a script when its first meaningful line is a
//! comment or starts with a command name; anything else is free text and
//! runs [`Script::default_for`]: wait for the greeting (4 s), say one
//! utterance, wait for the reply, hang up.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// How long the default script waits for a greeting.
pub const GREETING_TIMEOUT: Duration = Duration::from_secs(4);
/// How long `expect_speech` and `barge_in` wait for the agent by default.
pub const EXPECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `wait` or `expect_speech` timeout a script may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

const COMMANDS: [&str; 6] = ["say", "dtmf", "wait", "expect_speech", "barge_in", "hangup"];

/// What the bot says: text, or a WAV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Speech {
    /// Spoken with the shipped clips.
    Text(String),
    /// A WAV file (mono or stereo, 8, 16 or 48 kHz, 16-bit).
    File(PathBuf),
}

impl Speech {
    fn parse(argument: &str) -> Speech {
        if argument.to_ascii_lowercase().ends_with(".wav")
            && !argument.contains(char::is_whitespace)
        {
            Speech::File(PathBuf::from(argument))
        } else {
            Speech::Text(argument.to_owned())
        }
    }
}

impl fmt::Display for Speech {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Speech::Text(text) => f.write_str(text),
            Speech::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One step of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Speak.
    Say(Speech),
    /// Send DTMF digits.
    Dtmf(String),
    /// Stay silent.
    Wait(Duration),
    /// Wait until the agent has spoken and finished (timeout for it to start).
    ExpectSpeech(Duration),
    /// Wait until the agent speaks, then talk over it.
    BargeIn(Speech),
    /// End the call.
    Hangup,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Say(speech) => write!(f, "say {speech}"),
            Command::Dtmf(digits) => write!(f, "dtmf {digits}"),
            Command::Wait(duration) => write!(f, "wait {}", DurationText(*duration)),
            Command::ExpectSpeech(timeout) => {
                write!(f, "expect_speech {}", DurationText(*timeout))
            }
            Command::BargeIn(speech) => write!(f, "barge_in {speech}"),
            Command::Hangup => f.write_str("hangup"),
        }
    }
}

struct DurationText(Duration);

impl fmt::Display for DurationText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// A parsed scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// The steps, in order.
    pub commands: Vec<Command>,
}

/// What is wrong with a script line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScriptErrorKind {
    /// The line does not start with a command name.
    #[error("unknown command {0:?} (expected say, dtmf, wait, expect_speech, barge_in or hangup)")]
    UnknownCommand(String),
    /// The command needs an argument.
    #[error("{0} needs an argument")]
    MissingArgument(&'static str),
    /// The command takes no argument.
    #[error("{0} takes no argument")]
    UnexpectedArgument(&'static str),
    /// A duration that is not `<n>s` or `<n>ms`.
    #[error("invalid duration {0:?} (expected e.g. 2s or 500ms)")]
    InvalidDuration(String),
    /// A duration above the limit.
    #[error("duration {0:?} is longer than 600s")]
    DurationTooLong(String),
    /// DTMF digits outside 0-9 * # A-D.
    #[error("invalid DTMF digits {0:?} (0-9, *, #, A-D)")]
    InvalidDigits(String),
    /// The script has no command.
    #[error("the script has no command")]
    Empty,
}

/// A script error and its line (1-based; 0 for the whole script).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ScriptError {
    /// The line, from 1.
    pub line: usize,
    /// What is wrong.
    pub kind: ScriptErrorKind,
}

impl Script {
    /// Parses a script (see the module docs).
    pub fn parse(text: &str) -> Result<Script, ScriptError> {
        let mut commands = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let command = parse_line(line).map_err(|kind| ScriptError {
                line: index + 1,
                kind,
            })?;
            commands.push(command);
        }
        if commands.is_empty() {
            return Err(ScriptError {
                line: 0,
                kind: ScriptErrorKind::Empty,
            });
        }
        Ok(Script { commands })
    }

    /// Whether `prompt` is meant as a script: its first meaningful line is
    /// a comment or starts with a command name.
    pub fn looks_like_script(prompt: &str) -> bool {
        prompt
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .is_some_and(|line| line.starts_with('#') || COMMANDS.contains(&first_word(line)))
    }

    /// The script of a scenario prompt: parsed when it is a script, the
    /// default script for free text.
    pub fn parse_or_default(prompt: &str) -> Result<Script, ScriptError> {
        if Script::looks_like_script(prompt) {
            Script::parse(prompt)
        } else {
            Ok(Script::default_for(prompt))
        }
    }

    /// The default script for a free-text scenario: wait up to 4 s for the
    /// greeting, say the scenario's first sentence (or a generic opening
    /// when the text is empty), wait for the reply, hang up.
    pub fn default_for(free_text: &str) -> Script {
        let sentence = first_sentence(free_text);
        let line = if sentence.is_empty() {
            "Hello, I would like to check the status of my order.".to_owned()
        } else {
            sentence
        };
        Script {
            commands: vec![
                Command::ExpectSpeech(GREETING_TIMEOUT),
                Command::Say(Speech::Text(line)),
                Command::ExpectSpeech(EXPECT_TIMEOUT),
                Command::Hangup,
            ],
        }
    }

    /// The WAV files the script plays (a service may restrict them).
    pub fn audio_files(&self) -> Vec<&PathBuf> {
        self.commands
            .iter()
            .filter_map(|command| match command {
                Command::Say(Speech::File(path)) | Command::BargeIn(Speech::File(path)) => {
                    Some(path)
                }
                _ => None,
            })
            .collect()
    }
}

impl fmt::Display for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for command in &self.commands {
            writeln!(f, "{command}")?;
        }
        Ok(())
    }
}

fn first_word(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or("")
}

fn first_sentence(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let end = text
        .char_indices()
        .find(|&(_, c)| matches!(c, '.' | '?' | '!'))
        .map_or(text.len(), |(i, c)| i + c.len_utf8());
    text[..end].trim().to_owned()
}

fn parse_line(line: &str) -> Result<Command, ScriptErrorKind> {
    let (name, argument) = match line.split_once(char::is_whitespace) {
        Some((name, rest)) => (name, rest.trim()),
        None => (line, ""),
    };
    let required = |command: &'static str| {
        if argument.is_empty() {
            Err(ScriptErrorKind::MissingArgument(command))
        } else {
            Ok(argument)
        }
    };
    match name {
        "say" => Ok(Command::Say(Speech::parse(required("say")?))),
        "barge_in" => Ok(Command::BargeIn(Speech::parse(required("barge_in")?))),
        "dtmf" => {
            let digits = required("dtmf")?;
            if digits
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D'))
            {
                Ok(Command::Dtmf(digits.to_owned()))
            } else {
                Err(ScriptErrorKind::InvalidDigits(digits.to_owned()))
            }
        }
        "wait" => Ok(Command::Wait(parse_duration(required("wait")?)?)),
        "expect_speech" if argument.is_empty() => Ok(Command::ExpectSpeech(EXPECT_TIMEOUT)),
        "expect_speech" => Ok(Command::ExpectSpeech(parse_duration(argument)?)),
        "hangup" if argument.is_empty() => Ok(Command::Hangup),
        "hangup" => Err(ScriptErrorKind::UnexpectedArgument("hangup")),
        other => Err(ScriptErrorKind::UnknownCommand(other.to_owned())),
    }
}

/// `2s`, `1.5s`, `500ms`.
fn parse_duration(text: &str) -> Result<Duration, ScriptErrorKind> {
    let invalid = || ScriptErrorKind::InvalidDuration(text.to_owned());
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 1.0)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1000.0)
    } else {
        return Err(invalid());
    };
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(invalid());
    }
    let value: f64 = number.parse().map_err(|_| invalid())?;
    let ms = value * scale;
    if !ms.is_finite() {
        return Err(invalid());
    }
    if ms > MAX_WAIT.as_millis() as f64 {
        return Err(ScriptErrorKind::DurationTooLong(text.to_owned()));
    }
    Ok(Duration::from_millis(ms.round() as u64))
}

#[cfg(test)]
mod tests;
