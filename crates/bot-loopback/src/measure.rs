//! What a test run measured, pass/fail gates on it, and batch aggregates.
//!
//! The bot's brain records a [`Timeline`] on the inbound frame clock (one
//! frame every 20 ms from the moment media started): when each of its own
//! utterances really played (marks echoed by the bridge), when the agent's
//! voice was active (voice activity detection on what the bot heard),
//! scripted waits and DTMF. [`Measurements`] are computed from it and from
//! the SIP timings and RTP statistics of the bot's leg.
//!
//! Definitions:
//! - **Response latency**: for each bot utterance, the agent's reply is its
//!   first voice segment that starts at or after the utterance's onset (so
//!   not speech already running then) and before the bot's next utterance.
//!   When the reply starts after the utterance ended, latency = reply onset
//!   minus utterance end (the turn gap the caller hears). When it starts while
//!   the bot is still talking (an echo agent, or an agent that talks over
//!   the caller), latency = reply onset minus utterance onset (the agent's
//!   reaction delay). Utterances without a reply add nothing; with no reply
//!   at all `response_latency_ms` is null.
//! - **Dead air**: stretches where neither side is heard (no bot utterance
//!   or DTMF playing, no agent voice), excluding the script's own `wait`s
//!   (silence the scenario asked for is not the agent's). The initial wait
//!   for a greeting counts. `dead_air_ms_max` is the longest stretch,
//!   `dead_air_count` the number longer than the threshold (default
//!   1500 ms).
//! - **Barge-in stop**: for a `barge_in` utterance, the time from its onset
//!   to the end of the agent voice segment that was running at that onset,
//!   when that segment ends before the utterance does (the agent yielded;
//!   voice still running when the call ends counts as running to its end);
//!   `barge_in_stop_ms` is the slowest such stop, null when none stopped.
//! - **One-way audio**: the bot spoke but heard no agent voice at all, or
//!   it sent RTP and received none.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::netprofile::NetworkProfile;

/// Default dead-air threshold.
pub const DEAD_AIR_THRESHOLD_MS: u64 = 1500;

/// A stretch of time on the run's frame clock, in ms from media start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Start (inclusive).
    pub start_ms: u64,
    /// End (exclusive).
    pub end_ms: u64,
}

impl Span {
    /// A span; `end_ms` is raised to `start_ms` when lower.
    pub fn new(start_ms: u64, end_ms: u64) -> Span {
        Span {
            start_ms,
            end_ms: end_ms.max(start_ms),
        }
    }

    /// Length in ms.
    pub fn len_ms(&self) -> u64 {
        self.end_ms - self.start_ms
    }
}

/// One bot utterance as it played.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Utterance {
    /// When it played.
    pub span: Span,
    /// Said over the agent on purpose (`barge_in`).
    pub barge_in: bool,
}

/// What happened on a run, on the frame clock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// How long media ran.
    pub duration_ms: u64,
    /// The bot's utterances, in order.
    pub bot_speech: Vec<Utterance>,
    /// When the bot's DTMF digits played.
    pub bot_dtmf: Vec<Span>,
    /// The agent's voice segments (VAD), in order.
    pub agent_speech: Vec<Span>,
    /// The script's `wait`s.
    pub scripted_waits: Vec<Span>,
}

impl Timeline {
    /// The response latency of each utterance that got a reply (see the
    /// module docs), in utterance order.
    pub fn response_latencies(&self) -> Vec<u64> {
        let mut latencies = Vec::new();
        for (i, utterance) in self.bot_speech.iter().enumerate() {
            let onset = utterance.span.start_ms;
            let next = self
                .bot_speech
                .get(i + 1)
                .map_or(u64::MAX, |next| next.span.start_ms);
            let reply = self
                .agent_speech
                .iter()
                .find(|segment| segment.start_ms >= onset && segment.start_ms < next);
            if let Some(reply) = reply {
                let end = utterance.span.end_ms;
                latencies.push(if reply.start_ms >= end {
                    reply.start_ms - end
                } else {
                    reply.start_ms - onset
                });
            }
        }
        latencies
    }

    /// Every stretch where nobody is heard, outside scripted waits.
    pub fn silences(&self) -> Vec<Span> {
        let mut busy: Vec<Span> = self
            .bot_speech
            .iter()
            .map(|u| u.span)
            .chain(self.bot_dtmf.iter().copied())
            .chain(self.agent_speech.iter().copied())
            .chain(self.scripted_waits.iter().copied())
            .collect();
        busy.sort_by_key(|span| span.start_ms);
        let mut gaps = Vec::new();
        let mut cursor = 0u64;
        for span in busy {
            if span.start_ms > cursor {
                gaps.push(Span::new(cursor, span.start_ms.min(self.duration_ms)));
            }
            cursor = cursor.max(span.end_ms);
        }
        if self.duration_ms > cursor {
            gaps.push(Span::new(cursor, self.duration_ms));
        }
        gaps.retain(|gap| gap.len_ms() > 0);
        gaps
    }

    /// The longest silence and the number of silences above `threshold_ms`.
    pub fn dead_air(&self, threshold_ms: u64) -> (u64, u32) {
        let silences = self.silences();
        let max = silences.iter().map(Span::len_ms).max().unwrap_or(0);
        let count = silences
            .iter()
            .filter(|gap| gap.len_ms() > threshold_ms)
            .count();
        (max, u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// Barge-in attempts, how many the agent yielded to, and the slowest
    /// stop among those (see the module docs).
    pub fn barge_ins(&self) -> (u32, u32, Option<u64>) {
        let mut attempts = 0u32;
        let mut stopped = 0u32;
        let mut slowest: Option<u64> = None;
        for utterance in self.bot_speech.iter().filter(|u| u.barge_in) {
            attempts += 1;
            let onset = utterance.span.start_ms;
            let running = self
                .agent_speech
                .iter()
                .find(|segment| segment.start_ms < onset && segment.end_ms > onset);
            if let Some(segment) = running {
                if segment.end_ms < utterance.span.end_ms {
                    stopped += 1;
                    let stop = segment.end_ms - onset;
                    slowest = Some(slowest.map_or(stop, |s| s.max(stop)));
                }
            }
        }
        (attempts, stopped, slowest)
    }

    /// When the agent was first heard.
    pub fn first_agent_audio_ms(&self) -> Option<u64> {
        self.agent_speech.first().map(|segment| segment.start_ms)
    }
}

/// Who ended a test call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    /// The test bot (end of script, or the run's time limit).
    #[default]
    Bot,
    /// The agent (or the service on its side).
    Agent,
}

impl Party {
    /// `bot` or `agent`.
    pub fn as_str(self) -> &'static str {
        match self {
            Party::Bot => "bot",
            Party::Agent => "agent",
        }
    }
}

/// p50, p95 and max of a set of values (ms).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Largest.
    pub max: f64,
}

impl LatencySummary {
    /// The summary of `values`; `None` when empty.
    pub fn of(values: &[f64]) -> Option<LatencySummary> {
        let sorted = sorted(values)?;
        Some(LatencySummary {
            p50: percentile(&sorted, 50.0),
            p95: percentile(&sorted, 95.0),
            max: sorted[sorted.len() - 1],
        })
    }
}

/// What one test run measured (stored as JSON on the run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurements {
    /// Response latency over the bot's utterances; null when the agent
    /// never replied.
    pub response_latency_ms: Option<LatencySummary>,
    /// Each utterance's response latency, in order.
    pub response_latencies_ms: Vec<u64>,
    /// Longest stretch of silence on both sides (outside scripted waits).
    pub dead_air_ms_max: u64,
    /// Silences longer than the dead-air threshold.
    pub dead_air_count: u32,
    /// The bot spoke but heard no agent voice, or sent RTP and got none.
    pub one_way_audio: bool,
    /// E-model MOS estimate of what the bot received (1.0 ..= 4.5).
    pub mos: f64,
    /// INVITE to the first 180/183 (the bot placed the call), else null.
    pub post_dial_delay_ms: Option<u64>,
    /// INVITE to answer (200 OK), when the bot saw both.
    pub answer_delay_ms: Option<u64>,
    /// Media start to the agent's first voice.
    pub time_to_first_agent_audio_ms: Option<u64>,
    /// Slowest stop of the agent after a barge-in; null if none tried or stopped.
    pub barge_in_stop_ms: Option<u64>,
    /// Barge-ins the script made.
    pub barge_in_attempts: u32,
    /// Barge-ins the agent yielded to.
    pub barge_in_stopped: u32,
    /// RTP packets the bot sent (frames, in `bot` mode).
    pub packets_sent: u64,
    /// RTP packets the bot received (frames, in `bot` mode).
    pub packets_received: u64,
    /// RTP packets lost towards the bot.
    pub packets_lost: u64,
    /// RTP packets the simulated path dropped on the way to the agent
    /// (0 on `clean`; the agent leg's own statistics show their effect).
    #[serde(default)]
    pub packets_dropped_outbound: u64,
    /// Loss towards the bot, percent of packets expected.
    pub loss_percent: f64,
    /// RFC 3550 interarrival jitter of what the bot received.
    pub jitter_ms: f64,
    /// Digits the bot sent.
    pub dtmf_sent: String,
    /// Digits the bot received (RFC 4733).
    pub dtmf_heard: String,
    /// Who hung up.
    pub hangup_by: Party,
    /// Media start to the end of the call.
    pub duration_ms: u64,
    /// Utterances the bot played.
    pub utterances: u32,
    /// `expect_speech` / `barge_in` steps that timed out waiting for the agent.
    pub expect_timeouts: u32,
    /// The simulated path.
    pub network_profile: NetworkProfile,
}

/// Pass/fail gates of a run or batch; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Highest allowed median response latency (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_latency_p50_ms: Option<f64>,
    /// Highest allowed p95 response latency (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_latency_p95_ms: Option<f64>,
    /// Highest allowed response latency (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_latency_max_ms: Option<f64>,
    /// Lowest allowed MOS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mos_min: Option<f64>,
    /// Longest allowed dead air (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_air_ms_max: Option<f64>,
    /// Highest allowed loss (percent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_percent_max: Option<f64>,
    /// Highest allowed jitter (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms_max: Option<f64>,
    /// Latest allowed first agent audio (ms after media start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_first_agent_audio_ms_max: Option<f64>,
    /// Slowest allowed barge-in stop (ms); a run whose barge-ins were never
    /// yielded to fails it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barge_in_stop_ms_max: Option<f64>,
    /// Whether one-way audio is acceptable (when given and false, one-way
    /// audio fails the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_way_audio_allowed: Option<bool>,
}

/// A threshold that did not hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedThreshold {
    /// The threshold's field name in [`Thresholds`].
    pub name: String,
    /// Its limit.
    pub limit: Value,
    /// The measured value (null when it could not be measured).
    pub actual: Value,
}

/// Whether every threshold held.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// No threshold failed.
    pub passed: bool,
    /// The thresholds that failed.
    pub failed: Vec<FailedThreshold>,
}

/// The values thresholds are checked against.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Gated {
    latency: Option<LatencySummary>,
    mos: f64,
    dead_air_ms_max: f64,
    loss_percent: f64,
    jitter_ms: f64,
    first_audio_ms: Option<f64>,
    barge_in_stop_ms: Option<f64>,
    barge_in_attempts: u32,
    one_way_audio: bool,
}

impl Gated {
    fn of_run(m: &Measurements) -> Gated {
        Gated {
            latency: m.response_latency_ms,
            mos: m.mos,
            dead_air_ms_max: m.dead_air_ms_max as f64,
            loss_percent: m.loss_percent,
            jitter_ms: m.jitter_ms,
            first_audio_ms: m.time_to_first_agent_audio_ms.map(|v| v as f64),
            barge_in_stop_ms: m.barge_in_stop_ms.map(|v| v as f64),
            barge_in_attempts: m.barge_in_attempts,
            one_way_audio: m.one_way_audio,
        }
    }

    /// A batch: latency percentiles over every utterance of every run; the
    /// worst run for every other limit.
    fn of_batch(runs: &[Measurements]) -> Option<Gated> {
        let first = runs.first()?;
        let pooled: Vec<f64> = runs
            .iter()
            .flat_map(|m| m.response_latencies_ms.iter().map(|&v| v as f64))
            .collect();
        let mut gated = Gated::of_run(first);
        gated.latency = LatencySummary::of(&pooled);
        for m in &runs[1..] {
            let run = Gated::of_run(m);
            gated.mos = gated.mos.min(run.mos);
            gated.dead_air_ms_max = gated.dead_air_ms_max.max(run.dead_air_ms_max);
            gated.loss_percent = gated.loss_percent.max(run.loss_percent);
            gated.jitter_ms = gated.jitter_ms.max(run.jitter_ms);
            gated.first_audio_ms = worst(gated.first_audio_ms, run.first_audio_ms);
            gated.barge_in_stop_ms = if gated.barge_in_attempts == 0 {
                run.barge_in_stop_ms
            } else if run.barge_in_attempts == 0 {
                gated.barge_in_stop_ms
            } else {
                // A run whose barge-ins were never yielded to makes the batch's null.
                worst(gated.barge_in_stop_ms, run.barge_in_stop_ms)
            };
            gated.barge_in_attempts += run.barge_in_attempts;
            gated.one_way_audio |= run.one_way_audio;
        }
        Some(gated)
    }
}

/// The larger of two, where a missing value is the worst.
fn worst(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a?.max(b?))
}

impl Thresholds {
    /// Whether any threshold is set.
    pub fn is_empty(&self) -> bool {
        *self == Thresholds::default()
    }

    /// Checks the limits make sense (finite, not negative; `mos_min` within
    /// 1.0 ..= 4.5); the error names the first bad field.
    pub fn validate(&self) -> Result<(), String> {
        let limits = [
            ("response_latency_p50_ms", self.response_latency_p50_ms),
            ("response_latency_p95_ms", self.response_latency_p95_ms),
            ("response_latency_max_ms", self.response_latency_max_ms),
            ("dead_air_ms_max", self.dead_air_ms_max),
            ("loss_percent_max", self.loss_percent_max),
            ("jitter_ms_max", self.jitter_ms_max),
            (
                "time_to_first_agent_audio_ms_max",
                self.time_to_first_agent_audio_ms_max,
            ),
            ("barge_in_stop_ms_max", self.barge_in_stop_ms_max),
        ];
        for (name, limit) in limits {
            if let Some(limit) = limit {
                if !limit.is_finite() || limit < 0.0 {
                    return Err(format!("{name} must be a non-negative number"));
                }
            }
        }
        if let Some(mos) = self.mos_min {
            if !(1.0..=4.5).contains(&mos) {
                return Err("mos_min must be between 1.0 and 4.5".to_owned());
            }
        }
        Ok(())
    }

    /// Checks one run.
    pub fn evaluate(&self, measurements: &Measurements) -> Verdict {
        self.check(&Gated::of_run(measurements))
    }

    /// Checks a batch: latency percentiles over all utterances of all runs,
    /// every other limit against the worst run. No runs: nothing passes.
    pub fn evaluate_batch(&self, runs: &[Measurements]) -> Verdict {
        match Gated::of_batch(runs) {
            Some(gated) => self.check(&gated),
            None => Verdict {
                passed: false,
                failed: vec![FailedThreshold {
                    name: "runs".into(),
                    limit: Value::from(1),
                    actual: Value::from(0),
                }],
            },
        }
    }

    fn check(&self, g: &Gated) -> Verdict {
        let mut failed = Vec::new();
        let mut at_most = |name: &str, limit: Option<f64>, actual: Option<f64>| {
            if let Some(limit) = limit {
                let holds = matches!(actual, Some(actual) if actual <= limit);
                if !holds {
                    failed.push(FailedThreshold {
                        name: name.to_owned(),
                        limit: number(limit),
                        actual: actual.map_or(Value::Null, number),
                    });
                }
            }
        };
        at_most(
            "response_latency_p50_ms",
            self.response_latency_p50_ms,
            g.latency.map(|l| l.p50),
        );
        at_most(
            "response_latency_p95_ms",
            self.response_latency_p95_ms,
            g.latency.map(|l| l.p95),
        );
        at_most(
            "response_latency_max_ms",
            self.response_latency_max_ms,
            g.latency.map(|l| l.max),
        );
        at_most(
            "dead_air_ms_max",
            self.dead_air_ms_max,
            Some(g.dead_air_ms_max),
        );
        at_most(
            "loss_percent_max",
            self.loss_percent_max,
            Some(g.loss_percent),
        );
        at_most("jitter_ms_max", self.jitter_ms_max, Some(g.jitter_ms));
        at_most(
            "time_to_first_agent_audio_ms_max",
            self.time_to_first_agent_audio_ms_max,
            g.first_audio_ms,
        );
        if g.barge_in_attempts > 0 {
            at_most(
                "barge_in_stop_ms_max",
                self.barge_in_stop_ms_max,
                g.barge_in_stop_ms,
            );
        }
        if let Some(limit) = self.mos_min {
            if g.mos < limit {
                failed.push(FailedThreshold {
                    name: "mos_min".into(),
                    limit: number(limit),
                    actual: number(g.mos),
                });
            }
        }
        if self.one_way_audio_allowed == Some(false) && g.one_way_audio {
            failed.push(FailedThreshold {
                name: "one_way_audio_allowed".into(),
                limit: Value::Bool(false),
                actual: Value::Bool(true),
            });
        }
        Verdict {
            passed: failed.is_empty(),
            failed,
        }
    }
}

fn number(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// Median, p95 and extremes of one measure over several runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Runs that had a value.
    pub count: usize,
    /// Median.
    pub median: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Summary {
    /// The summary of `values`; `None` when empty.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let sorted = sorted(values)?;
        Some(Summary {
            count: sorted.len(),
            median: percentile(&sorted, 50.0),
            p95: percentile(&sorted, 95.0),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
        })
    }
}

/// Measurements of several runs, aggregated for a batch's detail.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Runs aggregated.
    pub runs: usize,
    /// Per numeric measure (named as in [`Measurements`]; for response
    /// latency, `response_latency_ms` pools every utterance of every run and
    /// `response_latency_p50_ms`/`_p95_ms` summarize the runs' own values).
    pub measures: BTreeMap<String, Summary>,
    /// Runs with one-way audio.
    pub one_way_audio_runs: usize,
    /// Runs where the agent never replied.
    pub runs_without_reply: usize,
    /// Runs the bot hung up.
    pub hangup_by_bot: usize,
    /// Runs the agent hung up.
    pub hangup_by_agent: usize,
}

impl Aggregate {
    /// Aggregates `runs`.
    pub fn of(runs: &[Measurements]) -> Aggregate {
        type Pick = fn(&Measurements) -> Option<f64>;
        let picks: [(&str, Pick); 15] = [
            ("response_latency_p50_ms", |m| {
                m.response_latency_ms.map(|l| l.p50)
            }),
            ("response_latency_p95_ms", |m| {
                m.response_latency_ms.map(|l| l.p95)
            }),
            ("dead_air_ms_max", |m| Some(m.dead_air_ms_max as f64)),
            ("dead_air_count", |m| Some(f64::from(m.dead_air_count))),
            ("mos", |m| Some(m.mos)),
            ("post_dial_delay_ms", |m| {
                m.post_dial_delay_ms.map(|v| v as f64)
            }),
            ("answer_delay_ms", |m| m.answer_delay_ms.map(|v| v as f64)),
            ("time_to_first_agent_audio_ms", |m| {
                m.time_to_first_agent_audio_ms.map(|v| v as f64)
            }),
            ("barge_in_stop_ms", |m| m.barge_in_stop_ms.map(|v| v as f64)),
            ("packets_sent", |m| Some(m.packets_sent as f64)),
            ("packets_received", |m| Some(m.packets_received as f64)),
            ("packets_lost", |m| Some(m.packets_lost as f64)),
            ("loss_percent", |m| Some(m.loss_percent)),
            ("jitter_ms", |m| Some(m.jitter_ms)),
            ("duration_ms", |m| Some(m.duration_ms as f64)),
        ];
        let mut measures = BTreeMap::new();
        for (name, pick) in picks {
            let values: Vec<f64> = runs.iter().filter_map(pick).collect();
            if let Some(summary) = Summary::of(&values) {
                measures.insert(name.to_owned(), summary);
            }
        }
        let pooled: Vec<f64> = runs
            .iter()
            .flat_map(|m| m.response_latencies_ms.iter().map(|&v| v as f64))
            .collect();
        if let Some(summary) = Summary::of(&pooled) {
            measures.insert("response_latency_ms".to_owned(), summary);
        }
        Aggregate {
            runs: runs.len(),
            measures,
            one_way_audio_runs: runs.iter().filter(|m| m.one_way_audio).count(),
            runs_without_reply: runs
                .iter()
                .filter(|m| m.response_latency_ms.is_none())
                .count(),
            hangup_by_bot: runs.iter().filter(|m| m.hangup_by == Party::Bot).count(),
            hangup_by_agent: runs.iter().filter(|m| m.hangup_by == Party::Agent).count(),
        }
    }
}

/// `values` sorted, without NaNs; `None` when nothing is left.
fn sorted(values: &[f64]) -> Option<Vec<f64>> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    Some(sorted)
}

/// Linear-interpolation percentile of sorted, non-empty values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let low = rank.floor() as usize;
    let high = rank.ceil() as usize;
    let fraction = rank - low as f64;
    sorted[low] + (sorted[high] - sorted[low]) * fraction
}

#[cfg(test)]
mod tests;
