//! What a run measured: one record per call, a timeline per second, the
//! summary, and the thresholds it is judged by.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde::Serialize;

use crate::rtp::RtpReport;

/// How a call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Answered (2xx), whatever happened after.
    Answered,
    /// Never answered: a final error response, a timeout or a transport failure.
    Failed,
}

/// One call of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    /// The call's number in the run (0-based).
    pub index: u64,
    /// The SIP Call-ID.
    pub sip_call_id: String,
    /// When the INVITE went out (or came in), since the run started.
    pub started_ms: f64,
    /// INVITE to the first 180/183.
    pub ringing_ms: Option<f64>,
    /// INVITE to the 200 OK.
    pub answer_ms: Option<f64>,
    /// When the call was over, since the run started.
    pub ended_ms: f64,
    /// The final response to the INVITE.
    pub final_code: Option<u16>,
    /// Answered or failed.
    pub outcome: Outcome,
    /// Why it failed, or why an answered call ended badly.
    pub error: Option<String>,
    /// `local` when the generator hung up, `remote` when the far end did.
    pub ended_by: Option<&'static str>,
    /// The call's media, when it was answered.
    pub rtp: Option<RtpReport>,
    /// Answered and held for at least a second, but not one RTP packet came back.
    pub one_way_audio: bool,
}

impl CallRecord {
    /// Call `index` as it starts `started_ms` into the run: nothing measured yet, failed
    /// until it is answered.
    pub fn started(index: u64, sip_call_id: String, started_ms: f64) -> CallRecord {
        CallRecord {
            index,
            sip_call_id,
            started_ms,
            ringing_ms: None,
            answer_ms: None,
            ended_ms: started_ms,
            final_code: None,
            outcome: Outcome::Failed,
            error: None,
            ended_by: None,
            rtp: None,
            one_way_audio: false,
        }
    }
}

/// Percentiles of one measurement over the calls that have it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// How many values there were.
    pub count: u64,
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

impl Percentiles {
    /// The percentiles of `values` (nearest rank).
    pub fn of(mut values: Vec<f64>) -> Percentiles {
        values.retain(|v| v.is_finite());
        if values.is_empty() {
            return Percentiles::default();
        }
        values.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let index = ((p / 100.0) * values.len() as f64).ceil() as usize;
            values[index.clamp(1, values.len()) - 1]
        };
        Percentiles {
            count: values.len() as u64,
            p50: Some(rank(50.0)),
            p95: Some(rank(95.0)),
            p99: Some(rank(99.0)),
            max: values.last().copied(),
        }
    }

    /// The percentiles of a histogram with one bin per millisecond.
    pub fn of_histogram(bins: &[u64]) -> Percentiles {
        let count: u64 = bins.iter().sum();
        if count == 0 {
            return Percentiles::default();
        }
        let rank = |p: f64| {
            let target = ((p / 100.0) * count as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (ms, n) in bins.iter().enumerate() {
                seen += n;
                if seen >= target {
                    return ms as f64;
                }
            }
            (bins.len() - 1) as f64
        };
        Percentiles {
            count,
            p50: Some(rank(50.0)),
            p95: Some(rank(95.0)),
            p99: Some(rank(99.0)),
            max: bins.iter().rposition(|n| *n > 0).map(|ms| ms as f64),
        }
    }
}

/// One second of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Second {
    /// Seconds since the run started.
    pub second: u64,
    /// Calls whose INVITE went out in this second.
    pub started: u64,
    /// Calls answered in this second.
    pub answered: u64,
    /// Calls that failed in this second.
    pub failed: u64,
    /// Calls up (answered, not yet over) at the end of this second.
    pub live: u64,
}

/// The per-second timeline of `calls`.
pub fn timeline(calls: &[CallRecord]) -> Vec<Second> {
    let end = calls.iter().map(|c| c.ended_ms).fold(0.0, f64::max);
    let seconds = (end / 1000.0).floor() as usize + 1;
    let mut timeline: Vec<Second> = (0..seconds)
        .map(|second| Second {
            second: second as u64,
            ..Second::default()
        })
        .collect();
    let bin = |ms: f64| ((ms / 1000.0).floor() as usize).min(seconds - 1);
    for call in calls {
        timeline[bin(call.started_ms)].started += 1;
        match call.outcome {
            Outcome::Failed => timeline[bin(call.ended_ms)].failed += 1,
            Outcome::Answered => {
                let answered = call.started_ms + call.answer_ms.unwrap_or(0.0);
                timeline[bin(answered)].answered += 1;
                for second in timeline.iter_mut() {
                    let at = (second.second + 1) as f64 * 1000.0;
                    if answered <= at && call.ended_ms > at {
                        second.live += 1;
                    }
                }
            }
        }
    }
    timeline
}

/// The whole run in figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Calls attempted.
    pub calls: u64,
    /// Calls answered.
    pub answered: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Final response codes and how many calls got each.
    pub final_codes: BTreeMap<u16, u64>,
    /// INVITE to 180/183, in milliseconds.
    pub ringing_ms: Percentiles,
    /// INVITE to 200, in milliseconds.
    pub setup_ms: Percentiles,
    /// RTP packets sent.
    pub rtp_sent: u64,
    /// RTP packets received.
    pub rtp_received: u64,
    /// RTP packets lost on the way to us.
    pub rtp_lost: u64,
    /// `rtp_lost` over what was expected, in percent.
    pub loss_percent: f64,
    /// Each call's RFC 3550 interarrival jitter at its end, in milliseconds.
    pub jitter_ms: Percentiles,
    /// Every packet's transit deviation from the one before, in milliseconds.
    pub deviation_ms: Percentiles,
    /// Each call's median echo round trip, in milliseconds.
    pub echo_rtt_ms: Percentiles,
    /// Answered calls that received no audio at all.
    pub one_way_calls: u64,
    /// The most calls up at once (at a second's end).
    pub peak_live: u64,
    /// Wall time of the run, in seconds.
    pub duration_s: f64,
    /// CPU time the generator used, in seconds.
    pub generator_cpu_s: Option<f64>,
    /// Datagrams the generator could not send.
    pub send_errors: u64,
}

impl Summary {
    /// The summary of `calls`; `deviations` is the transit-deviation histogram.
    pub fn of(
        calls: &[CallRecord],
        timeline: &[Second],
        deviations: &[u64],
        duration_s: f64,
        generator_cpu_s: Option<f64>,
        send_errors: u64,
    ) -> Summary {
        let answered = calls
            .iter()
            .filter(|c| c.outcome == Outcome::Answered)
            .count() as u64;
        let mut final_codes = BTreeMap::new();
        for code in calls.iter().filter_map(|c| c.final_code) {
            *final_codes.entry(code).or_insert(0) += 1;
        }
        let rtp: Vec<&RtpReport> = calls.iter().filter_map(|c| c.rtp.as_ref()).collect();
        let rtp_lost: u64 = rtp.iter().map(|r| r.lost).sum();
        let rtp_received: u64 = rtp.iter().map(|r| r.received).sum();
        let expected = rtp_lost + rtp_received;
        Summary {
            calls: calls.len() as u64,
            answered,
            failed: calls.len() as u64 - answered,
            final_codes,
            ringing_ms: Percentiles::of(calls.iter().filter_map(|c| c.ringing_ms).collect()),
            setup_ms: Percentiles::of(calls.iter().filter_map(|c| c.answer_ms).collect()),
            rtp_sent: rtp.iter().map(|r| r.sent).sum(),
            rtp_received,
            rtp_lost,
            loss_percent: if expected == 0 {
                0.0
            } else {
                rtp_lost as f64 * 100.0 / expected as f64
            },
            jitter_ms: Percentiles::of(
                rtp.iter()
                    .filter(|r| r.received > 1)
                    .map(|r| r.jitter_ms)
                    .collect(),
            ),
            deviation_ms: Percentiles::of_histogram(deviations),
            echo_rtt_ms: Percentiles::of(rtp.iter().filter_map(|r| r.echo_rtt_ms).collect()),
            one_way_calls: calls.iter().filter(|c| c.one_way_audio).count() as u64,
            peak_live: timeline.iter().map(|s| s.live).max().unwrap_or(0),
            duration_s,
            generator_cpu_s,
            send_errors,
        }
    }
}

/// What a threshold limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Received RTP lost, percent.
    LossPercent,
    /// p99 of the per-call RFC 3550 jitter, ms.
    JitterP99Ms,
    /// p99 of the per-packet transit deviation, ms.
    DeviationP99Ms,
    /// p99 of INVITE to 200, ms.
    SetupP99Ms,
    /// p99 of INVITE to 180/183, ms.
    RingingP99Ms,
    /// p99 of the echo round trip, ms.
    EchoRttP99Ms,
    /// Calls that failed.
    FailedCalls,
    /// Calls that failed, percent.
    FailedPercent,
    /// Answered calls with no audio back.
    OneWayCalls,
}

impl Metric {
    /// Every metric, in the order of the help text.
    pub const ALL: [Metric; 9] = [
        Metric::LossPercent,
        Metric::JitterP99Ms,
        Metric::DeviationP99Ms,
        Metric::SetupP99Ms,
        Metric::RingingP99Ms,
        Metric::EchoRttP99Ms,
        Metric::FailedCalls,
        Metric::FailedPercent,
        Metric::OneWayCalls,
    ];

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::LossPercent => "loss_percent",
            Metric::JitterP99Ms => "jitter_p99_ms",
            Metric::DeviationP99Ms => "deviation_p99_ms",
            Metric::SetupP99Ms => "setup_p99_ms",
            Metric::RingingP99Ms => "ringing_p99_ms",
            Metric::EchoRttP99Ms => "echo_rtt_p99_ms",
            Metric::FailedCalls => "failed_calls",
            Metric::FailedPercent => "failed_percent",
            Metric::OneWayCalls => "one_way_calls",
        }
    }

    /// The measured value, when the run measured it.
    pub fn value(self, summary: &Summary) -> Option<f64> {
        match self {
            Metric::LossPercent => (summary.answered > 0).then_some(summary.loss_percent),
            Metric::JitterP99Ms => summary.jitter_ms.p99,
            Metric::DeviationP99Ms => summary.deviation_ms.p99,
            Metric::SetupP99Ms => summary.setup_ms.p99,
            Metric::RingingP99Ms => summary.ringing_ms.p99,
            Metric::EchoRttP99Ms => summary.echo_rtt_ms.p99,
            Metric::FailedCalls => Some(summary.failed as f64),
            Metric::FailedPercent => {
                (summary.calls > 0).then(|| summary.failed as f64 * 100.0 / summary.calls as f64)
            }
            Metric::OneWayCalls => Some(summary.one_way_calls as f64),
        }
    }
}

/// `metric=limit`: the run passes when the metric is at most the limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Threshold {
    /// What is limited.
    pub metric: Metric,
    /// The largest value that passes.
    pub limit: f64,
}

/// A threshold that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    /// Not `name=value`.
    #[error("threshold {0:?} is not name=value (e.g. loss_percent=0.1)")]
    Shape(String),
    /// The name is not a metric.
    #[error("unknown threshold {name:?} (expected one of {expected})")]
    Unknown {
        /// The name given.
        name: String,
        /// The names there are.
        expected: String,
    },
    /// The value is not a number.
    #[error("threshold {name}: {value:?} is not a non-negative number")]
    Value {
        /// The name given.
        name: String,
        /// The value given.
        value: String,
    },
}

impl FromStr for Threshold {
    type Err = ThresholdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, value) = s
            .split_once('=')
            .ok_or_else(|| ThresholdError::Shape(s.to_owned()))?;
        let metric = Metric::ALL
            .into_iter()
            .find(|m| m.as_str() == name.trim())
            .ok_or_else(|| ThresholdError::Unknown {
                name: name.to_owned(),
                expected: Metric::ALL.map(Metric::as_str).join(", "),
            })?;
        let limit = value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| ThresholdError::Value {
                name: name.to_owned(),
                value: value.to_owned(),
            })?;
        Ok(Threshold { metric, limit })
    }
}

/// A threshold and how the run did against it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Check {
    /// The metric.
    pub metric: Metric,
    /// The limit.
    pub limit: f64,
    /// What the run measured (`None`: not measured, which fails).
    pub value: Option<f64>,
    /// Whether the value is within the limit.
    pub passed: bool,
}

/// The whole report of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The figures.
    pub summary: Summary,
    /// Every threshold, checked.
    pub thresholds: Vec<Check>,
    /// Whether every call was answered and every threshold met.
    pub passed: bool,
    /// Per second.
    pub timeline: Vec<Second>,
    /// Per call.
    pub calls: Vec<CallRecord>,
}

impl Report {
    /// Judges `summary` by `thresholds`.
    pub fn new(
        summary: Summary,
        thresholds: &[Threshold],
        timeline: Vec<Second>,
        calls: Vec<CallRecord>,
    ) -> Report {
        let checks: Vec<Check> = thresholds
            .iter()
            .map(|t| {
                let value = t.metric.value(&summary);
                Check {
                    metric: t.metric,
                    limit: t.limit,
                    value,
                    passed: value.is_some_and(|v| v <= t.limit),
                }
            })
            .collect();
        let passed = summary.failed == 0 && checks.iter().all(|c| c.passed);
        Report {
            summary,
            thresholds: checks,
            passed,
            timeline,
            calls,
        }
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.summary;
        let mut codes = String::new();
        for (code, n) in &s.final_codes {
            let _ = write!(
                codes,
                "{}{code} x{n}",
                if codes.is_empty() { "" } else { ", " }
            );
        }
        writeln!(
            f,
            "calls        {} answered, {} failed of {} (final codes: {})",
            s.answered,
            s.failed,
            s.calls,
            if codes.is_empty() { "none" } else { &codes }
        )?;
        writeln!(
            f,
            "peak live    {} calls over {:.1} s",
            s.peak_live, s.duration_s
        )?;
        writeln!(
            f,
            "setup        180 p50 {} p99 {}; 200 p50 {} p99 {}",
            ms(s.ringing_ms.p50),
            ms(s.ringing_ms.p99),
            ms(s.setup_ms.p50),
            ms(s.setup_ms.p99)
        )?;
        writeln!(
            f,
            "rtp          sent {}, received {}, lost {} ({:.3} %)",
            s.rtp_sent, s.rtp_received, s.rtp_lost, s.loss_percent
        )?;
        writeln!(
            f,
            "jitter       per call p50 {} p99 {}; transit deviation p50 {} p99 {}",
            ms(s.jitter_ms.p50),
            ms(s.jitter_ms.p99),
            ms(s.deviation_ms.p50),
            ms(s.deviation_ms.p99)
        )?;
        writeln!(
            f,
            "echo rtt     p50 {} p99 {} ({} calls)",
            ms(s.echo_rtt_ms.p50),
            ms(s.echo_rtt_ms.p99),
            s.echo_rtt_ms.count
        )?;
        writeln!(
            f,
            "one-way      {} calls without audio back",
            s.one_way_calls
        )?;
        if let Some(cpu) = s.generator_cpu_s {
            writeln!(
                f,
                "generator    {cpu:.2} s CPU ({:.2} cores){}",
                cpu / s.duration_s.max(0.001),
                if s.send_errors > 0 {
                    format!(", {} datagrams not sent", s.send_errors)
                } else {
                    String::new()
                }
            )?;
        }
        for check in &self.thresholds {
            writeln!(
                f,
                "threshold    {} <= {}: {} {}",
                check.metric.as_str(),
                check.limit,
                check
                    .value
                    .map_or_else(|| "not measured".to_owned(), |v| format!("{v:.3}")),
                if check.passed { "ok" } else { "MISSED" }
            )?;
        }
        write!(
            f,
            "result       {}",
            if self.passed { "passed" } else { "FAILED" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(index: u64, started: f64, answer: f64, ended: f64) -> CallRecord {
        CallRecord {
            index,
            sip_call_id: format!("c{index}"),
            started_ms: started,
            ringing_ms: Some(answer / 2.0),
            answer_ms: Some(answer),
            ended_ms: ended,
            final_code: Some(200),
            outcome: Outcome::Answered,
            error: None,
            ended_by: Some("local"),
            rtp: Some(RtpReport {
                sent: 100,
                received: 99,
                lost: 1,
                loss_percent: 1.0,
                jitter_ms: 0.5,
                ..RtpReport::default()
            }),
            one_way_audio: false,
        }
    }

    fn failed(index: u64, started: f64, code: u16) -> CallRecord {
        CallRecord {
            final_code: Some(code),
            outcome: Outcome::Failed,
            answer_ms: None,
            ringing_ms: None,
            rtp: None,
            ended_by: None,
            error: Some("Busy Here".into()),
            ..answered(index, started, 0.0, started + 5.0)
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p99, p.max), (Some(50.0), Some(99.0), Some(100.0)));
        assert_eq!(Percentiles::of(vec![]).p50, None);
        let mut bins = vec![0u64; 10];
        bins[1] = 98;
        bins[7] = 2;
        let h = Percentiles::of_histogram(&bins);
        assert_eq!(
            (h.p50, h.p99, h.max, h.count),
            (Some(1.0), Some(7.0), Some(7.0), 100)
        );
    }

    #[test]
    fn the_timeline_counts_starts_answers_failures_and_live_calls() {
        let calls = vec![
            answered(0, 100.0, 50.0, 2500.0),
            answered(1, 900.0, 300.0, 1900.0),
            failed(2, 1200.0, 486),
        ];
        let t = timeline(&calls);
        assert_eq!(t.len(), 3);
        assert_eq!((t[0].started, t[0].answered, t[0].live), (2, 1, 1));
        assert_eq!(
            (t[1].started, t[1].answered, t[1].failed, t[1].live),
            (1, 1, 1, 1)
        );
        assert_eq!(t[2].live, 0);
    }

    #[test]
    fn a_failed_call_or_a_missed_threshold_fails_the_run() {
        let calls = vec![
            answered(0, 0.0, 10.0, 1000.0),
            answered(1, 0.0, 30.0, 1000.0),
        ];
        let summary = Summary::of(&calls, &timeline(&calls), &[0; 4], 1.0, None, 0);
        assert!((summary.loss_percent - 1.0).abs() < 1e-9);
        let ok: Threshold = "loss_percent=1.5".parse().expect("valid");
        let missed: Threshold = "setup_p99_ms=20".parse().expect("valid");
        let unmeasured: Threshold = "echo_rtt_p99_ms=100".parse().expect("valid");
        assert!(Report::new(summary.clone(), &[ok], vec![], vec![]).passed);
        let report = Report::new(summary.clone(), &[ok, missed, unmeasured], vec![], vec![]);
        assert!(!report.passed);
        assert_eq!(report.thresholds[1].value, Some(30.0));
        assert!(!report.thresholds[2].passed, "not measured is not passed");
        assert!(report.to_string().contains("MISSED"));

        let with_failure = vec![answered(0, 0.0, 10.0, 1000.0), failed(1, 0.0, 503)];
        let summary = Summary::of(&with_failure, &[], &[0; 4], 1.0, None, 0);
        assert_eq!(summary.final_codes.get(&503), Some(&1));
        assert!(!Report::new(summary, &[], vec![], vec![]).passed);
    }

    #[test]
    fn thresholds_are_checked_when_parsed() {
        let t: Threshold = "jitter_p99_ms=20".parse().expect("valid");
        assert_eq!((t.metric, t.limit), (Metric::JitterP99Ms, 20.0));
        assert!(matches!(
            "loss".parse::<Threshold>(),
            Err(ThresholdError::Shape(_))
        ));
        let unknown = "mos=4".parse::<Threshold>().expect_err("unknown");
        assert!(unknown.to_string().contains("loss_percent, jitter_p99_ms"));
        assert!(matches!(
            "loss_percent=-1".parse::<Threshold>(),
            Err(ThresholdError::Value { .. })
        ));
        assert!(matches!(
            "loss_percent=x".parse::<Threshold>(),
            Err(ThresholdError::Value { .. })
        ));
    }
}
