//! Test-call runs and batches (DESIGN.md, "REST API: test calls"): a test bot calls an agent,
//! or is called by it, runs a scenario and measures the call.
//!
//! The records serialize to the JSON the API shows; `org_id` is never shown. Measurements and
//! thresholds are JSON documents: the bot owns the shape of its measurements, and
//! [`TestThresholds`] is the typed view of the thresholds a request may carry.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ModelError;
use std::fmt;
use std::str::FromStr;

string_enum! {
    /// What a test run calls: an agent directly, or the agent a phone number is assigned to.
    TestTargetType {
        /// `target_id` is an agent id.
        Agent => "agent",
        /// `target_id` is a phone number id; the run tests the agent the number is assigned to.
        PhoneNumber => "phone_number",
    }
}

string_enum! {
    /// Who places the test call.
    TestDirection {
        /// The agent calls the test bot's number.
        Outbound => "outbound",
        /// The test bot calls the agent's number.
        Inbound => "inbound",
    }
}

string_enum! {
    /// How the bot and the agent are joined.
    TestMode {
        /// In-process, no SIP: cheap tests of the agent's logic.
        Bot => "bot",
        /// SIP loopback: both legs over real SIP and RTP through the service's own listener.
        Sip => "sip",
    }
}

impl TestMode {
    /// Call legs a run of this mode makes and pays for (`sip`: the agent's and the bot's).
    pub fn legs(self) -> i64 {
        match self {
            TestMode::Bot => 1,
            TestMode::Sip => 2,
        }
    }
}

string_enum! {
    /// Where a test run is in its life.
    TestRunStatus {
        /// Stored, not started yet (a batch's staggered runs wait here).
        Queued => "queued",
        /// The test call is being placed or is running.
        InProgress => "in_progress",
        /// The call ran and was measured (thresholds may still have failed: see `passed`).
        Completed => "completed",
        /// The run could not be carried out (`error_message` says why).
        Failed => "failed",
    }
}

impl TestRunStatus {
    /// Whether the run is over (`completed` or `failed`).
    pub fn is_terminal(self) -> bool {
        matches!(self, TestRunStatus::Completed | TestRunStatus::Failed)
    }
}

string_enum! {
    /// Where a test batch is in its life.
    TestBatchStatus {
        /// Some runs are not over yet.
        InProgress => "in_progress",
        /// Every run is over (some may have failed: see `failed_runs`).
        Completed => "completed",
        /// The batch could not run to its end (e.g. the service restarted during it).
        Failed => "failed",
    }
}

impl TestBatchStatus {
    /// Whether the batch is over (`completed` or `failed`).
    pub fn is_terminal(self) -> bool {
        !matches!(self, TestBatchStatus::InProgress)
    }
}

/// The network profiles a run may ask for, `clean` first (the default).
pub const NETWORK_PROFILES: &[&str] = &["clean", "lossy", "jittery", "bad_mobile"];

/// The network profile of a run that asks for none.
pub const DEFAULT_NETWORK_PROFILE: &str = "clean";

/// The charge multiplier of the embedded configuration (`[test_calls] charge_multiplier`).
pub const DEFAULT_CHARGE_MULTIPLIER: u32 = 2;

/// Fewest runs in a batch.
pub const MIN_BATCH_RUNS: u32 = 1;

/// Most runs in a batch.
pub const MAX_BATCH_RUNS: u32 = 20;

/// Longest delay between the starts of two consecutive runs of a batch, in seconds.
pub const MAX_STAGGER_SECONDS: u32 = 60;

/// Pass/fail gates a run or batch may carry; every field is optional and at least zero.
///
/// A run `passed` when every gate it carries held; the failed ones are listed by name
/// (the field names below) in its measurements' `failed_thresholds`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestThresholds {
    /// Highest allowed 95th percentile of the response latency, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_latency_p95_ms: Option<f64>,
    /// Highest allowed median response latency, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_latency_p50_ms: Option<f64>,
    /// Lowest allowed MOS estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mos_min: Option<f64>,
    /// Longest allowed dead air, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_air_ms_max: Option<f64>,
    /// Highest allowed packet loss, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_percent_max: Option<f64>,
}

impl TestThresholds {
    /// Names of the threshold fields, as in JSON.
    pub const FIELDS: &'static [&'static str] = &[
        "response_latency_p95_ms",
        "response_latency_p50_ms",
        "mos_min",
        "dead_air_ms_max",
        "loss_percent_max",
    ];

    /// Reads thresholds from their JSON document (as stored on a run).
    pub fn from_value(value: &serde_json::Value) -> Result<TestThresholds, serde_json::Error> {
        TestThresholds::deserialize(value)
    }

    /// Every gate set, as `(field name, limit)`.
    pub fn gates(&self) -> Vec<(&'static str, f64)> {
        [
            self.response_latency_p95_ms,
            self.response_latency_p50_ms,
            self.mos_min,
            self.dead_air_ms_max,
            self.loss_percent_max,
        ]
        .into_iter()
        .zip(Self::FIELDS.iter().copied())
        .filter_map(|(limit, name)| limit.map(|limit| (name, limit)))
        .collect()
    }
}

/// Price of a test run in cents: `seconds` of call priced at `per_minute_cents` per minute,
/// times the whole `charge_multiplier`, rounded up, for each leg of `mode` (DESIGN.md: cost
/// estimate).
///
/// The estimate of a run prices `test_calls.max_run_seconds`; the charge after a run prices
/// the real duration of the agent's leg.
///
/// ```
/// use call_control::model::{test_call_cost_cents, TestMode};
/// assert_eq!(test_call_cost_cents(120.0, 2, 2, TestMode::Bot), 8);
/// assert_eq!(test_call_cost_cents(120.0, 2, 2, TestMode::Sip), 16);
/// assert_eq!(test_call_cost_cents(1.0, 2, 1, TestMode::Bot), 1);
/// ```
pub fn test_call_cost_cents(
    seconds: f64,
    per_minute_cents: i64,
    charge_multiplier: u32,
    mode: TestMode,
) -> i64 {
    let one_leg =
        (seconds.max(0.0) / 60.0 * per_minute_cents as f64 * f64::from(charge_multiplier)).ceil();
    // Saturating float-to-int conversion: absurd inputs cap at i64::MAX instead of wrapping.
    (one_leg as i64).saturating_mul(mode.legs())
}

/// One test-call run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TestCallRun {
    /// `tcr_...`
    pub id: String,
    /// Owning organisation (never serialized).
    #[serde(skip)]
    pub org_id: String,
    /// What the request named.
    pub target_type: TestTargetType,
    /// The agent or phone number id the request named.
    pub target_id: String,
    /// The agent under test (the target, or the agent its phone number is assigned to).
    pub agent_id: String,
    /// Who places the call.
    pub direction: TestDirection,
    /// The number called: the bot's (outbound) or the agent's (inbound), E.164.
    pub target_number: String,
    /// What the bot does: a script, or free text that runs the default script; `None`
    /// (the request gave none) runs the default script with its generic opening line.
    #[serde(default)]
    #[schema(required = true)]
    pub scenario_prompt: Option<String>,
    /// How the bot and the agent are joined.
    pub mode: TestMode,
    /// Where the run is in its life.
    pub status: TestRunStatus,
    /// Impairment the bot applies to its media (one of [`NETWORK_PROFILES`]).
    pub network_profile: String,
    /// Pass/fail gates ([`TestThresholds`] as JSON), when the request gave any.
    #[serde(default)]
    #[schema(value_type = Option<TestThresholds>, required = true)]
    pub thresholds: Option<serde_json::Value>,
    /// Price multiplier over a normal call: `[test_calls] charge_multiplier` when the run
    /// was accepted (read-only in the API).
    #[schema(read_only)]
    pub charge_multiplier: u32,
    /// What the run was estimated to cost, in cents, when it was accepted.
    pub estimated_cost_cents: i64,
    /// The agent's leg: the call record the test produced.
    #[serde(default)]
    #[schema(required = true)]
    pub call_id: Option<String>,
    /// For `sip` mode: the call record of the bot's leg.
    #[serde(default)]
    #[schema(required = true)]
    pub sip_call_id: Option<String>,
    /// The bot's measurements, plus `passed` and `failed_thresholds` when thresholds were given
    /// (floats shown rounded, [`super::round_floats`]).
    #[serde(default, serialize_with = "super::serialize_rounded_document")]
    #[schema(value_type = Option<Object>, required = true)]
    pub measurements: Option<serde_json::Value>,
    /// Why the run failed.
    #[serde(default)]
    #[schema(required = true)]
    pub error_message: Option<String>,
    /// The batch the run belongs to.
    #[serde(default)]
    #[schema(required = true)]
    pub batch_id: Option<String>,
    /// When the run started.
    #[serde(default)]
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it completed or failed.
    #[serde(default)]
    #[schema(required = true)]
    pub completed_at: Option<DateTime<Utc>>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// The node that runs (or ran) it (`[node] id`); `null` on runs recorded before
    /// nodes had ids.
    #[serde(default)]
    #[schema(required = true)]
    pub node_id: Option<String>,
}

/// A batch: one scenario (or a rotation of scenarios) run `run_count` times in parallel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TestCallBatch {
    /// `tcb_...`
    pub id: String,
    /// Owning organisation (never serialized).
    #[serde(skip)]
    pub org_id: String,
    /// What the request named.
    pub target_type: TestTargetType,
    /// The agent or phone number id the request named.
    pub target_id: String,
    /// The agent under test.
    pub agent_id: String,
    /// A label the request gave the batch.
    #[serde(default)]
    #[schema(required = true)]
    pub name: Option<String>,
    /// Who places the calls.
    pub direction: TestDirection,
    /// How the bot and the agent are joined.
    pub mode: TestMode,
    /// The number called, E.164.
    pub target_number: String,
    /// The one scenario of every run, when the request gave a single one.
    #[serde(default)]
    #[schema(required = true)]
    pub scenario_prompt: Option<String>,
    /// Scenarios rotated over the runs (run `i` gets `scenario_prompts[i % len]`).
    #[serde(default)]
    #[schema(required = true)]
    pub scenario_prompts: Vec<String>,
    /// Impairment the bot applies to its media.
    pub network_profile: String,
    /// Pass/fail gates of every run, when the request gave any.
    #[serde(default)]
    #[schema(value_type = Option<TestThresholds>, required = true)]
    pub thresholds: Option<serde_json::Value>,
    /// Price multiplier over a normal call: `[test_calls] charge_multiplier` when the batch
    /// was accepted (read-only in the API).
    #[schema(read_only)]
    pub charge_multiplier: u32,
    /// What all runs were estimated to cost, in cents.
    pub estimated_cost_cents: i64,
    /// Runs requested (1-20).
    pub run_count: u32,
    /// Seconds between the starts of consecutive runs (0-60).
    pub stagger_seconds: u32,
    /// Where the batch is in its life.
    pub status: TestBatchStatus,
    /// Runs in the batch (equal to `run_count`).
    pub total_runs: u32,
    /// Runs that completed.
    pub completed_runs: u32,
    /// Runs that failed.
    pub failed_runs: u32,
    /// The runs, in start order.
    pub run_ids: Vec<String>,
    /// Median and p95 of the runs' measurements, and `passed` when thresholds were given
    /// (floats shown rounded, [`super::round_floats`]).
    #[serde(default, serialize_with = "super::serialize_rounded_document")]
    #[schema(value_type = Option<Object>, required = true)]
    pub aggregate: Option<serde_json::Value>,
    /// Why the batch failed: what cut it short (a shutdown, a restart).
    #[serde(default)]
    #[schema(required = true)]
    pub error_message: Option<String>,
    /// The API key that created the batch (`key_...`, its id, never the secret).
    #[serde(default)]
    #[schema(required = true)]
    pub requested_by_id: Option<String>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When its first run started.
    #[serde(default)]
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    /// When its last run ended.
    #[serde(default)]
    #[schema(required = true)]
    pub completed_at: Option<DateTime<Utc>>,
}

impl TestCallBatch {
    /// The scenario of run `index`: the rotation of `scenario_prompts`, else `scenario_prompt`
    /// (`None`: the bot's default scenario).
    pub fn scenario_for(&self, index: usize) -> Option<&str> {
        if self.scenario_prompts.is_empty() {
            self.scenario_prompt.as_deref()
        } else {
            Some(self.scenario_prompts[index % self.scenario_prompts.len()].as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-01-02T03:04:05Z")
            .expect("valid literal")
            .with_timezone(&Utc)
    }

    #[test]
    fn enums_have_their_wire_names() {
        assert_eq!(TestTargetType::PhoneNumber.as_str(), "phone_number");
        assert_eq!(TestRunStatus::InProgress.to_string(), "in_progress");
        assert_eq!("bot".parse::<TestMode>(), Ok(TestMode::Bot));
        assert_eq!(
            "inbound".parse::<TestDirection>(),
            Ok(TestDirection::Inbound)
        );
        assert_eq!(
            serde_json::to_value(TestBatchStatus::Completed).expect("serializes"),
            json!("completed")
        );
        assert!("SIP".parse::<TestMode>().is_err());
        let terminal: Vec<_> = TestRunStatus::ALL
            .iter()
            .filter(|status| status.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [&TestRunStatus::Completed, &TestRunStatus::Failed]
        );
        assert!(!TestBatchStatus::InProgress.is_terminal());
        assert!(TestBatchStatus::Failed.is_terminal());
    }

    #[test]
    fn cost_prices_each_leg_and_rounds_up() {
        assert_eq!(test_call_cost_cents(120.0, 2, 2, TestMode::Sip), 16);
        assert_eq!(test_call_cost_cents(30.0, 3, 1, TestMode::Bot), 2);
        assert_eq!(test_call_cost_cents(0.0, 2, 2, TestMode::Sip), 0);
        assert_eq!(test_call_cost_cents(-5.0, 2, 2, TestMode::Sip), 0);
        assert_eq!(test_call_cost_cents(60.0, 0, 2, TestMode::Sip), 0);
        assert_eq!(test_call_cost_cents(60.0, 2, 0, TestMode::Sip), 0);
        assert_eq!(test_call_cost_cents(1e300, 2, 2, TestMode::Sip), i64::MAX);
    }

    #[test]
    fn thresholds_are_typed_and_strict() {
        let value = json!({"response_latency_p95_ms": 800.0, "mos_min": 3.5});
        let thresholds = TestThresholds::from_value(&value).expect("parses");
        assert_eq!(thresholds.response_latency_p95_ms, Some(800.0));
        assert_eq!(
            thresholds.gates(),
            vec![("response_latency_p95_ms", 800.0), ("mos_min", 3.5)]
        );
        assert_eq!(serde_json::to_value(&thresholds).expect("json"), value);
        assert!(TestThresholds::from_value(&json!({"latency": 1})).is_err());
        assert!(TestThresholds::from_value(&json!({"mos_min": "high"})).is_err());
    }

    fn run() -> TestCallRun {
        TestCallRun {
            id: "tcr_1".into(),
            org_id: "org_1".into(),
            target_type: TestTargetType::Agent,
            target_id: "agt_1".into(),
            agent_id: "agt_1".into(),
            direction: TestDirection::Outbound,
            target_number: "+15550100000".into(),
            scenario_prompt: Some("say hello\nhangup".into()),
            mode: TestMode::Sip,
            status: TestRunStatus::Queued,
            network_profile: DEFAULT_NETWORK_PROFILE.into(),
            thresholds: Some(json!({"mos_min": 3.5})),
            charge_multiplier: DEFAULT_CHARGE_MULTIPLIER,
            estimated_cost_cents: 16,
            call_id: None,
            sip_call_id: None,
            measurements: None,
            error_message: None,
            batch_id: None,
            started_at: None,
            completed_at: None,
            created_at: t0(),
            updated_at: t0(),
            node_id: None,
        }
    }

    #[test]
    fn measurements_show_without_float_noise() {
        let mut noisy = run();
        noisy.measurements = Some(json!({"mos": 4.300_000_000_000_001,
            "loss_percent": 0.899_999_999_999_999_9, "packets_lost": 6}));
        let value = serde_json::to_value(&noisy).expect("serializes");
        assert_eq!(
            value["measurements"],
            json!({"mos": 4.3, "loss_percent": 0.9, "packets_lost": 6})
        );
    }

    #[test]
    fn run_serializes_public_fields() {
        let value = serde_json::to_value(run()).expect("serializes");
        assert!(value.get("org_id").is_none());
        assert_eq!(value["target_type"], json!("agent"));
        assert_eq!(value["status"], json!("queued"));
        assert_eq!(value["mode"], json!("sip"));
        assert_eq!(value["charge_multiplier"], json!(2), "an integer in JSON");
        assert!(value["charge_multiplier"].is_u64());
        assert_eq!(value["call_id"], json!(null));
        assert_eq!(value["created_at"], json!("2025-01-02T03:04:05Z"));
        let back: TestCallRun = serde_json::from_value(value).expect("parses");
        assert_eq!(back.org_id, "");
        assert_eq!(back.scenario_prompt, run().scenario_prompt);
    }

    #[test]
    fn batch_rotates_scenarios() {
        let mut batch = TestCallBatch {
            id: "tcb_1".into(),
            org_id: "org_1".into(),
            target_type: TestTargetType::Agent,
            target_id: "agt_1".into(),
            agent_id: "agt_1".into(),
            name: Some("nightly".into()),
            direction: TestDirection::Inbound,
            mode: TestMode::Bot,
            target_number: "+14155550100".into(),
            scenario_prompt: Some("hello".into()),
            scenario_prompts: Vec::new(),
            network_profile: "lossy".into(),
            thresholds: None,
            charge_multiplier: 1,
            estimated_cost_cents: 4,
            run_count: 3,
            stagger_seconds: 0,
            status: TestBatchStatus::InProgress,
            total_runs: 3,
            completed_runs: 0,
            failed_runs: 0,
            run_ids: vec!["tcr_1".into(), "tcr_2".into(), "tcr_3".into()],
            aggregate: None,
            error_message: None,
            requested_by_id: Some("key_1".into()),
            created_at: t0(),
            updated_at: t0(),
            started_at: None,
            completed_at: None,
        };
        assert_eq!(batch.scenario_for(2), Some("hello"));
        batch.scenario_prompts = vec!["a".into(), "b".into()];
        let rotated: Vec<_> = (0..3).filter_map(|i| batch.scenario_for(i)).collect();
        assert_eq!(rotated, ["a", "b", "a"]);
        let value = serde_json::to_value(&batch).expect("serializes");
        assert!(value.get("org_id").is_none());
        assert_eq!(value["run_ids"].as_array().map(Vec::len), Some(3));
        assert_eq!(value["status"], json!("in_progress"));
        assert_eq!(value["name"], json!("nightly"));
        assert_eq!(value["requested_by_id"], json!("key_1"));
        assert_eq!(value["error_message"], json!(null));
        assert_eq!(value["started_at"], json!(null));
        batch.scenario_prompts.clear();
        batch.scenario_prompt = None;
        assert_eq!(batch.scenario_for(0), None, "the default scenario");
    }
}
