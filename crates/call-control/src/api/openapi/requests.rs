//! Schemas of the request bodies. The handlers read their bodies field by field with
//! `api::validation::Body` (so that every bad field is named at once); these types describe
//! what those handlers accept, and the validation test (`tests/api_openapi.rs`) checks that
//! the bodies it sends conform to them.

use std::collections::BTreeMap;

use serde::Deserialize;
use utoipa::ToSchema;

use crate::model::{
    Runtime, TestDirection, TestMode, TestTargetType, TestThresholds, TrunkTransport,
};

/// `POST /agents`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AgentCreate {
    /// Display name.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// System prompt; may hold `{{variables}}`.
    #[schema(max_length = 100000)]
    pub prompt: Option<String>,
    /// First line the agent says; may hold `{{variables}}`.
    #[schema(max_length = 5000)]
    pub greeting: Option<String>,
    /// Default `draft` (`archived` comes from DELETE only).
    #[schema(nullable = false)]
    pub status: Option<AgentStatusInput>,
    /// Default `{"type": "echo"}`.
    #[schema(nullable = false)]
    pub runtime: Option<Runtime>,
    /// Defaults of the agent's calls.
    #[schema(nullable = false)]
    pub default_call_settings: Option<AgentCallSettingsInput>,
}

/// `PATCH /agents/{id}`: the fields given change.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AgentUpdate {
    /// Display name.
    #[schema(min_length = 1, max_length = 200, nullable = false)]
    pub name: Option<String>,
    /// System prompt; null or empty clears it.
    #[schema(max_length = 100000)]
    pub prompt: Option<String>,
    /// First line; null or empty clears it.
    #[schema(max_length = 5000)]
    pub greeting: Option<String>,
    /// Whether it takes calls (`archived` comes from DELETE only).
    #[schema(nullable = false)]
    pub status: Option<AgentStatusInput>,
    /// How its brain is reached.
    #[schema(nullable = false)]
    pub runtime: Option<Runtime>,
    /// The settings given change; the others keep their values.
    #[schema(nullable = false)]
    pub default_call_settings: Option<AgentCallSettingsInput>,
}

/// The statuses a client may set on an agent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatusInput {
    /// Being set up: places and answers no calls.
    Draft,
    /// Places and answers calls.
    Active,
    /// Temporarily takes no calls.
    Paused,
}

/// `default_call_settings` of an agent request: give each duration as a string or as its
/// integer alias, not both.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AgentCallSettingsInput {
    /// Longest call, e.g. `"1800s"`, `"30m"` (default `"1800s"`, at most 86400s).
    #[schema(pattern = r"^\d+[smh]?$", examples("1800s"), nullable = false)]
    pub max_duration: Option<String>,
    /// How long an outbound call may ring, e.g. `"30s"` (default `"30s"`, at most 600s).
    #[schema(pattern = r"^\d+[smh]?$", examples("30s"), nullable = false)]
    pub join_timeout: Option<String>,
    /// Integer alias of `max_duration`, in seconds.
    #[schema(minimum = 1, maximum = 86400, nullable = false, write_only, deprecated)]
    pub max_duration_secs: Option<u32>,
    /// Integer alias of `join_timeout`, in seconds.
    #[schema(minimum = 1, maximum = 600, nullable = false, write_only, deprecated)]
    pub join_timeout_secs: Option<u32>,
    /// Whether calls are recorded (default true).
    #[schema(nullable = false)]
    pub recording_enabled: Option<bool>,
    /// Whether transcript events are kept (default true).
    #[schema(nullable = false)]
    pub transcription_enabled: Option<bool>,
}

/// `POST /trunks`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TrunkCreate {
    /// Display name.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Host name or IP address of the carrier's SIP server.
    #[schema(min_length = 1, max_length = 253)]
    pub host: String,
    /// SIP port (default 5060).
    #[schema(minimum = 1, maximum = 65535, nullable = false)]
    pub port: Option<u16>,
    /// SIP transport (default `udp`).
    #[schema(nullable = false)]
    pub transport: Option<TrunkTransport>,
    /// Digest user name for outbound calls.
    #[schema(max_length = 256)]
    pub username: Option<String>,
    /// Digest password (write-only: reads show `has_password`).
    #[schema(max_length = 256, write_only)]
    pub password: Option<String>,
    /// CIDRs allowed to send inbound calls (at most 100); empty means none.
    #[schema(max_items = 100, nullable = false)]
    pub allowed_networks: Option<Vec<String>>,
    /// Digest credentials inbound INVITEs from the trunk must answer (401 challenge);
    /// omitted or null: none.
    pub inbound_auth: Option<InboundAuthInput>,
}

/// A trunk's `inbound_auth` as written: both fields, each time (the password is write-only).
#[derive(Debug, Deserialize, ToSchema)]
pub struct InboundAuthInput {
    /// Digest user name inbound callers answer with.
    #[schema(min_length = 1, max_length = 256)]
    pub username: String,
    /// Their password (write-only: reads show `inbound_auth: {username}`).
    #[schema(min_length = 1, max_length = 256, write_only)]
    pub password: String,
}

/// `PATCH /trunks/{id}`: the fields given change; `"password": null` removes the password.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TrunkUpdate {
    /// Display name.
    #[schema(min_length = 1, max_length = 200, nullable = false)]
    pub name: Option<String>,
    /// Host name or IP address.
    #[schema(min_length = 1, max_length = 253, nullable = false)]
    pub host: Option<String>,
    /// SIP port.
    #[schema(minimum = 1, maximum = 65535, nullable = false)]
    pub port: Option<u16>,
    /// SIP transport.
    #[schema(nullable = false)]
    pub transport: Option<TrunkTransport>,
    /// Digest user name; null removes it.
    #[schema(max_length = 256)]
    pub username: Option<String>,
    /// Digest password; null removes it.
    #[schema(max_length = 256, write_only)]
    pub password: Option<String>,
    /// CIDRs allowed to send inbound calls.
    #[schema(max_items = 100, nullable = false)]
    pub allowed_networks: Option<Vec<String>>,
    /// Digest credentials inbound INVITEs must answer (both fields); null removes them.
    pub inbound_auth: Option<InboundAuthInput>,
}

/// `POST /phone-numbers`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PhoneNumberCreate {
    /// E.164 number; unique across all organisations.
    #[schema(pattern = r"^\+[1-9]\d{1,14}$")]
    pub number: String,
    /// The trunk it lives on (a trunk of the organisation).
    pub trunk_id: String,
    /// The agent it is assigned to; null or absent: unassigned.
    pub agent_id: Option<String>,
}

/// `PATCH /phone-numbers/{id}`: `"agent_id": null` unassigns the number.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PhoneNumberUpdate {
    /// E.164 number.
    #[schema(pattern = r"^\+[1-9]\d{1,14}$", nullable = false)]
    pub number: Option<String>,
    /// The trunk it lives on.
    #[schema(nullable = false)]
    pub trunk_id: Option<String>,
    /// The agent it is assigned to; null unassigns it.
    pub agent_id: Option<String>,
}

/// `POST /calls`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CallCreate {
    /// The agent placing the call (an `active` one).
    pub agent_id: String,
    /// The callee, E.164.
    #[schema(pattern = r"^\+[1-9]\d{1,14}$")]
    pub phone_number: String,
    /// Caller id: a number of the organisation assigned to the agent (default: one of the
    /// agent's numbers).
    #[schema(pattern = r"^\+[1-9]\d{1,14}$")]
    pub from_number: Option<String>,
    /// Settings of this call (default: the agent's).
    #[schema(nullable = false)]
    pub call_settings: Option<CallSettingsInput>,
    /// Rendered into `{{name}}` of the prompt and greeting (at most 100; unknown names render
    /// empty).
    #[schema(nullable = false)]
    pub variables: Option<BTreeMap<String, String>>,
}

/// `call_settings` of `POST /calls`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CallSettingsInput {
    /// Whether the call is recorded (default: the agent's).
    #[schema(nullable = false)]
    pub recording_enabled: Option<bool>,
    /// Whether transcript events are kept (default: the agent's).
    #[schema(nullable = false)]
    pub transcription_enabled: Option<bool>,
    /// Overrides the agent's greeting.
    #[schema(max_length = 5000)]
    pub greeting: Option<String>,
    /// Longest call, e.g. `"1800s"`, `"5m"` (at most 86400s; default: the agent's).
    #[schema(pattern = r"^\d+[smh]?$", examples("1800s"), nullable = false)]
    pub max_duration: Option<String>,
    /// How long the call may ring, e.g. `"30s"` (at most 600s; default: the agent's).
    #[schema(pattern = r"^\d+[smh]?$", examples("30s"), nullable = false)]
    pub join_timeout: Option<String>,
    /// Integer alias of `max_duration`, in seconds (not with it).
    #[schema(minimum = 1, maximum = 86400, nullable = false, write_only, deprecated)]
    pub max_duration_secs: Option<u32>,
    /// Integer alias of `join_timeout`, in seconds (not with it).
    #[schema(minimum = 1, maximum = 600, nullable = false, write_only, deprecated)]
    pub join_timeout_secs: Option<u32>,
}

/// `POST /webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct WebhookCreate {
    /// Where events are POSTed (`http://` or `https://`).
    #[schema(pattern = "^https?://", max_length = 2048)]
    pub url: String,
    /// Event names: `call.ringing`, `call.answered`, `call.ended`, `test_call.completed`,
    /// `test_call_batch.completed`.
    #[schema(min_items = 1)]
    pub events: Vec<WebhookEvent>,
    /// HMAC-SHA256 key of the signature header; generated (and shown once) when omitted.
    #[schema(min_length = 16, max_length = 256, write_only, nullable = false)]
    pub secret: Option<String>,
}

/// An event a webhook can subscribe to.
#[derive(Debug, Deserialize, ToSchema)]
pub enum WebhookEvent {
    /// A call is ringing.
    #[serde(rename = "call.ringing")]
    CallRinging,
    /// A call was answered.
    #[serde(rename = "call.answered")]
    CallAnswered,
    /// A call ended (its data is the full call object).
    #[serde(rename = "call.ended")]
    CallEnded,
    /// A test-call run completed.
    #[serde(rename = "test_call.completed")]
    TestCallCompleted,
    /// A test-call batch completed.
    #[serde(rename = "test_call_batch.completed")]
    TestCallBatchCompleted,
}

/// `POST /agents/{id}/test-call`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AgentTestCallCreate {
    /// The number called, E.164.
    #[schema(pattern = r"^\+[1-9]\d{1,14}$")]
    pub to: String,
    /// One of the agent's numbers (default: one of them).
    #[schema(pattern = r"^\+[1-9]\d{1,14}$")]
    pub from_number: Option<String>,
}

/// `POST /test-calls`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TestCallCreate {
    /// What `target_id` names.
    pub target_type: TestTargetType,
    /// An agent id or a phone number id.
    pub target_id: String,
    /// Who places the call (default `outbound`: the agent calls the test bot).
    #[schema(nullable = false)]
    pub direction: Option<TestDirection>,
    /// The number called; default: the test bot's own number (`test_calls.bot_number`) for
    /// outbound, the agent's for inbound.
    #[schema(pattern = r"^\+[1-9]\d{1,14}$", nullable = false)]
    pub target_number: Option<String>,
    /// A bot script (`say`, `dtmf`, `wait`, `expect_speech`, `hangup` lines) or free text that
    /// runs the default script; optional: without one the bot runs its default scenario
    /// (waits for the greeting, asks a generic question, waits for the reply, hangs up).
    #[schema(min_length = 1, max_length = 20000, nullable = false)]
    pub scenario_prompt: Option<String>,
    /// How the bot and the agent are joined: `bot` (the default, in-process, no SIP) or
    /// `sip` (both legs over real SIP and RTP on loopback; two legs: twice the price).
    #[schema(nullable = false, default = "bot")]
    pub mode: Option<TestMode>,
    /// Impairment the bot applies: `clean` (default), `lossy`, `jittery`, `bad_mobile`.
    #[schema(pattern = "^(clean|lossy|jittery|bad_mobile)$", nullable = false)]
    pub network_profile: Option<String>,
    /// Pass/fail gates.
    #[schema(nullable = false)]
    pub thresholds: Option<TestThresholds>,
    /// Read-only: the operator's `[test_calls] charge_multiplier`. A request may repeat that
    /// value; any other is 422 `validation_error`.
    #[schema(minimum = 0, nullable = false, read_only)]
    pub charge_multiplier: Option<u32>,
    /// Must be true: test calls are charged (400 `consent_required` otherwise).
    pub consent_to_charge: bool,
}

/// `POST /test-call-batches`: give `scenario_prompt` or `scenario_prompts`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TestCallBatchCreate {
    /// What `target_id` names.
    pub target_type: TestTargetType,
    /// An agent id or a phone number id.
    pub target_id: String,
    /// Who places the calls (default `outbound`).
    #[schema(nullable = false)]
    pub direction: Option<TestDirection>,
    /// The number called (default as for runs).
    #[schema(pattern = r"^\+[1-9]\d{1,14}$", nullable = false)]
    pub target_number: Option<String>,
    /// The scenario of every run.
    #[schema(min_length = 1, max_length = 20000, nullable = false)]
    pub scenario_prompt: Option<String>,
    /// Scenarios rotated over the runs (run i gets prompt i mod n), instead of
    /// `scenario_prompt`.
    #[schema(min_items = 1, max_items = 100, nullable = false)]
    pub scenario_prompts: Option<Vec<String>>,
    /// Runs, 1 to 20.
    #[schema(minimum = 1, maximum = 20)]
    pub run_count: u32,
    /// A label for the batch.
    #[schema(min_length = 1, max_length = 200, nullable = false)]
    pub name: Option<String>,
    /// Seconds between the starts of consecutive runs (0-60, default 0).
    #[schema(minimum = 0, maximum = 60, nullable = false)]
    pub stagger_seconds: Option<u32>,
    /// How the bot and the agent are joined (default `bot`; `sip`: twice the price).
    #[schema(nullable = false, default = "bot")]
    pub mode: Option<TestMode>,
    /// Impairment the bot applies.
    #[schema(pattern = "^(clean|lossy|jittery|bad_mobile)$", nullable = false)]
    pub network_profile: Option<String>,
    /// Pass/fail gates of every run.
    #[schema(nullable = false)]
    pub thresholds: Option<TestThresholds>,
    /// Read-only: the operator's `[test_calls] charge_multiplier`. A request may repeat that
    /// value; any other is 422 `validation_error`.
    #[schema(minimum = 0, nullable = false, read_only)]
    pub charge_multiplier: Option<u32>,
    /// Must be true: test calls are charged.
    pub consent_to_charge: bool,
}
