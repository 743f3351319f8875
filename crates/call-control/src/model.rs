//! The service's records: agents, trunks, phone numbers, calls, webhooks and test-call runs
//! and batches, as the REST API shows them and the store keeps them.
//!
//! Every record serializes to the JSON of DESIGN.md ("Field names and service details"):
//! `org_id` is never shown, write-only secrets (trunk password, webhook secret) show as
//! `has_password` / `has_secret`, timestamps are RFC 3339.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};

/// Errors of this module: text that names no known value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A string is not one of the names of an enumeration (`kind` names the enumeration).
    #[error("unknown {kind} {value:?}")]
    UnknownValue {
        /// The enumeration, e.g. `CallStatus`.
        kind: &'static str,
        /// The text that matched none of its names.
        value: String,
    },
    /// A duration is not of the form `<seconds>s` (also `<n>m`, `<n>h`, or plain seconds).
    #[error("invalid duration {value:?}: expected e.g. \"30s\", \"5m\" or \"1h\"")]
    InvalidDuration {
        /// The text given.
        value: String,
    },
}

/// Defines a fieldless enum whose values have one wire name, used by JSON and by the store.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$variant_meta:meta])* $variant:ident => $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[derive(utoipa::ToSchema)]
        pub enum $name {
            $( $(#[$variant_meta])* #[serde(rename = $text)]
            #[schema(rename = $text)] $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name (in JSON and in the store).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ModelError;

            fn from_str(text: &str) -> Result<Self, ModelError> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ModelError::UnknownValue {
                        kind: stringify!($name),
                        value: text.to_owned(),
                    }),
                }
            }
        }
    };
}

string_enum! {
    /// Whether an agent takes calls.
    AgentStatus {
        /// Being set up: places and answers no calls.
        Draft => "draft",
        /// Places and answers calls.
        Active => "active",
        /// Temporarily takes no calls.
        Paused => "paused",
        /// Deleted while calls or test runs still name it: kept so that their records point at
        /// an agent that exists, hidden from lists, places and answers no calls, read-only.
        Archived => "archived",
    }
}

string_enum! {
    /// SIP transport of a trunk.
    TrunkTransport {
        /// SIP over UDP.
        Udp => "udp",
        /// SIP over TCP.
        Tcp => "tcp",
    }
}

string_enum! {
    /// Where a call is in its life (DESIGN.md, "A call, end to end").
    CallStatus {
        /// Stored by the API, not yet handed to SIP.
        Queued => "queued",
        /// INVITE sent (outbound) or received (inbound).
        Initiated => "initiated",
        /// The callee is ringing (180/183).
        Ringing => "ringing",
        /// Answered; media flows.
        InProgress => "in_progress",
        /// Answered, then hung up.
        Ended => "ended",
        /// Never answered, or failed.
        Failed => "failed",
        /// Cancelled before it was answered.
        Cancelled => "cancelled",
    }
}

impl CallStatus {
    /// Whether the call is over (`ended`, `failed`, `cancelled`): no later status follows.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            CallStatus::Ended | CallStatus::Failed | CallStatus::Cancelled
        )
    }
}

string_enum! {
    /// How a call ended.
    CallOutcome {
        /// Answered and ended normally.
        Completed => "completed",
        /// Not answered within the join timeout.
        NoAnswer => "no_answer",
        /// The callee was busy (486/600).
        Busy => "busy",
        /// The callee or the network refused the call.
        Rejected => "rejected",
        /// Ended by the service at the maximum duration.
        MaxDuration => "max_duration",
        /// The remote party hung up.
        CallerHangup => "caller_hangup",
        /// The agent (or the API) hung up.
        AgentHangup => "agent_hangup",
        /// Cancelled before it was answered.
        Cancelled => "cancelled",
        /// Ended by an error (media timeout, transport failure, service restart, ...).
        Error => "error",
    }
}

string_enum! {
    /// Who placed the call.
    CallDirection {
        /// Placed by the service (POST /calls).
        Outbound => "outbound",
        /// Received from a trunk.
        Inbound => "inbound",
    }
}

/// Webhook event names.
pub mod events {
    /// A call is ringing.
    pub const CALL_RINGING: &str = "call.ringing";
    /// A call was answered.
    pub const CALL_ANSWERED: &str = "call.answered";
    /// A call ended (its data is the full call object).
    pub const CALL_ENDED: &str = "call.ended";
    /// A test-call run completed.
    pub const TEST_CALL_COMPLETED: &str = "test_call.completed";
    /// A test-call batch completed.
    pub const TEST_CALL_BATCH_COMPLETED: &str = "test_call_batch.completed";
    /// Every event a webhook can subscribe to.
    pub const ALL: &[&str] = &[
        CALL_RINGING,
        CALL_ANSWERED,
        CALL_ENDED,
        TEST_CALL_COMPLETED,
        TEST_CALL_BATCH_COMPLETED,
    ];
}

mod organization;
pub use organization::Organization;

mod test_calls;
pub use test_calls::{
    test_call_cost_cents, TestBatchStatus, TestCallBatch, TestCallRun, TestDirection, TestMode,
    TestRunStatus, TestTargetType, TestThresholds, DEFAULT_CHARGE_MULTIPLIER,
    DEFAULT_NETWORK_PROFILE, MAX_BATCH_RUNS, MAX_STAGGER_SECONDS, MIN_BATCH_RUNS, NETWORK_PROFILES,
};

/// How an agent's brain is reached (DESIGN.md, "Agent runtimes").
#[derive(Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Runtime {
    /// Plays back what it hears.
    #[default]
    Echo,
    /// Streams the call over a WebSocket in the Twilio Media Streams format.
    Websocket {
        /// `ws://` or `wss://` URL of the agent. Loopback, private and link-local
        /// addresses (also what a name resolves to) and `ws://` with headers are refused
        /// unless `[security] allow_private_destinations`.
        url: String,
        /// Extra headers sent when connecting. Their values are write-only (they often carry
        /// the agent's bearer token; stored encrypted): reads show each as `<redacted>`; a
        /// PATCH that leaves `headers` out, or sends `<redacted>` back for a header, keeps
        /// the stored value (`{}` removes them all).
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// Audio format of the Twilio Media Streams messages: absent or
        /// `twilio` for 8 kHz mu-law, `audio/l16;rate=16000` for 16 kHz
        /// little-endian linear PCM.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        format: Option<String>,
    },
    /// Plays the greeting and a small offline script.
    Scripted {
        /// The script, run in order.
        steps: Vec<ScriptStep>,
    },
}

impl std::fmt::Debug for Runtime {
    /// Header values are left out: they often carry the agent's bearer token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Runtime::Echo => f.write_str("Echo"),
            Runtime::Websocket {
                url,
                headers,
                format,
            } => f
                .debug_struct("Websocket")
                .field("url", &crate::redact::loggable_url(url))
                .field("headers", &crate::redact::header_names(headers))
                .field("format", format)
                .finish(),
            Runtime::Scripted { steps } => {
                f.debug_struct("Scripted").field("steps", steps).finish()
            }
        }
    }
}

/// One step of a scripted agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ScriptStep {
    /// Plays an audio file or, without one, a tone sequence standing for the text.
    Say {
        /// What is said (also stored in the transcript).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Path of a WAV file to play.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audio: Option<String>,
    },
    /// Plays a sine tone.
    Tone {
        /// Frequency in hertz.
        frequency_hz: u32,
        /// Length in milliseconds.
        duration_ms: u32,
    },
    /// Sends DTMF digits (RFC 4733).
    Dtmf {
        /// Digits `0-9`, `*`, `#`, `A-D`.
        digits: String,
    },
    /// Waits, playing silence.
    Wait {
        /// Milliseconds to wait.
        ms: u64,
    },
    /// Waits for one DTMF digit from the remote party, or the timeout.
    WaitForDtmf {
        /// Milliseconds to wait at most.
        timeout_ms: u64,
    },
    /// Hangs up.
    Hangup,
}

/// An agent's default settings for its calls. In JSON the durations are spelled as in a call's
/// `call_settings` (`"max_duration": "1800s"`, `"join_timeout": "30s"`); the older integer
/// spelling (`max_duration_secs`, `join_timeout_secs`) is read too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct AgentCallSettings {
    /// Longest call, in seconds (default 1800); JSON `max_duration`, e.g. `"1800s"`.
    #[serde(
        rename = "max_duration",
        alias = "max_duration_secs",
        with = "duration_text"
    )]
    #[schema(
        value_type = String,
        pattern = r"^[1-9]\d*s$",
        default = "1800s",
        examples("1800s"),
        required = true
    )]
    pub max_duration_secs: u32,
    /// How long an outbound call may ring, in seconds (default 30); JSON `join_timeout`,
    /// e.g. `"30s"`.
    #[serde(
        rename = "join_timeout",
        alias = "join_timeout_secs",
        with = "duration_text"
    )]
    #[schema(
        value_type = String,
        pattern = r"^[1-9]\d*s$",
        default = "30s",
        examples("30s"),
        required = true
    )]
    pub join_timeout_secs: u32,
    /// Whether calls are recorded (default true).
    #[schema(required = true)]
    pub recording_enabled: bool,
    /// Whether transcript events are kept (default true).
    #[schema(required = true)]
    pub transcription_enabled: bool,
}

impl Default for AgentCallSettings {
    fn default() -> Self {
        AgentCallSettings {
            max_duration_secs: 1800,
            join_timeout_secs: 30,
            recording_enabled: true,
            transcription_enabled: true,
        }
    }
}

/// A voice-AI agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Agent {
    /// `agt_...`
    pub id: String,
    /// Owning organisation (never serialized).
    #[serde(skip)]
    pub org_id: String,
    /// Display name.
    pub name: String,
    /// System prompt; may hold `{{variables}}`.
    pub prompt: String,
    /// First line the agent says; may hold `{{variables}}`.
    #[serde(default)]
    #[schema(required = true)]
    pub greeting: Option<String>,
    /// Whether it takes calls.
    pub status: AgentStatus,
    /// How its brain is reached.
    pub runtime: Runtime,
    /// Defaults for its calls.
    #[serde(default)]
    #[schema(required = true)]
    pub default_call_settings: AgentCallSettings,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A SIP trunk: where outbound calls go and inbound calls come from.
#[derive(Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Trunk {
    /// `trk_...`
    pub id: String,
    /// Owning organisation (never serialized).
    #[serde(skip)]
    pub org_id: String,
    /// Display name.
    pub name: String,
    /// Host name or IP address of the carrier's SIP server. Loopback, private and
    /// link-local addresses (also what a name resolves to when a call is placed) are
    /// refused unless `[security] allow_private_destinations`.
    pub host: String,
    /// SIP port (default 5060).
    #[serde(default = "default_sip_port")]
    #[schema(required = true)]
    pub port: u16,
    /// SIP transport.
    pub transport: TrunkTransport,
    /// Digest user name for outbound calls.
    #[serde(default)]
    #[schema(required = true)]
    pub username: Option<String>,
    /// Digest password (write-only: serialized as `has_password: bool`).
    #[serde(
        default,
        rename(serialize = "has_password", deserialize = "password"),
        serialize_with = "serialize_is_some"
    )]
    #[schema(rename = "has_password", value_type = bool, required = true)]
    pub password: Option<String>,
    /// CIDRs allowed to send inbound calls; empty means none.
    #[serde(default)]
    #[schema(required = true)]
    pub allowed_networks: Vec<String>,
    /// Digest credentials inbound INVITEs from this trunk must answer (a 401 challenge
    /// first); null when inbound calls need none. Reads show the user name only.
    #[serde(default, serialize_with = "serialize_inbound_auth")]
    #[schema(value_type = Option<InboundAuthShown>, required = true)]
    pub inbound_auth: Option<InboundAuth>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for Trunk {
    /// The password is left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trunk")
            .field("id", &self.id)
            .field("org_id", &self.org_id)
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("password", &crate::redact::secret(self.password.as_deref()))
            .field("allowed_networks", &self.allowed_networks)
            .field("inbound_auth", &self.inbound_auth)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// The digest user name and password a trunk's inbound callers answer with.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct InboundAuth {
    /// The user name.
    pub username: String,
    /// The password (write-only).
    pub password: String,
}

impl std::fmt::Debug for InboundAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How a trunk's `inbound_auth` reads: the user name, never the password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InboundAuthShown {
    /// The digest user name inbound callers answer with.
    pub username: String,
}

fn serialize_inbound_auth<S: Serializer>(
    value: &Option<InboundAuth>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    value
        .as_ref()
        .map(|auth| InboundAuthShown {
            username: auth.username.clone(),
        })
        .serialize(serializer)
}

/// The default SIP port, 5060.
pub fn default_sip_port() -> u16 {
    5060
}

/// A phone number the organisation owns on one of its trunks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PhoneNumber {
    /// `num_...`
    pub id: String,
    /// Owning organisation (never serialized).
    #[serde(skip)]
    pub org_id: String,
    /// E.164 number, e.g. `+14155550100`; unique across all organisations.
    pub number: String,
    /// The trunk it lives on.
    pub trunk_id: String,
    /// The agent it is assigned to (null when unassigned).
    #[serde(default)]
    #[schema(required = true)]
    pub agent_id: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Per-call settings as requested (`call_settings` of POST /calls) and kept on the call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct CallSettings {
    /// Whether the call is recorded (default true).
    #[schema(required = true)]
    pub recording_enabled: bool,
    /// Whether transcript events are kept (default true).
    #[schema(required = true)]
    pub transcription_enabled: bool,
    /// Overrides the agent's greeting (left out when there is no override).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub greeting: Option<String>,
    /// Longest call, e.g. `"1800s"` (default: the agent's; left out when unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, pattern = r"^[1-9]\d*s$", examples("1800s"))]
    pub max_duration: Option<String>,
    /// How long the call may ring, e.g. `"30s"` (default: the agent's; left out when unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, pattern = r"^[1-9]\d*s$", examples("30s"))]
    pub join_timeout: Option<String>,
}

impl Default for CallSettings {
    fn default() -> Self {
        CallSettings {
            recording_enabled: true,
            transcription_enabled: true,
            greeting: None,
            max_duration: None,
            join_timeout: None,
        }
    }
}

/// Media statistics of a call (DESIGN.md: `media_stats`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MediaStats {
    /// Negotiated codec, e.g. `PCMU` or `opus`.
    pub codec: String,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// RTP packets received.
    pub packets_received: u64,
    /// RTP packets lost (RFC 3550 cumulative loss).
    pub packets_lost: u64,
    /// Loss in percent of the packets expected.
    #[serde(serialize_with = "serialize_rounded")]
    pub loss_percent: f64,
    /// Interarrival jitter in milliseconds (RFC 3550).
    #[serde(serialize_with = "serialize_rounded")]
    pub jitter_ms: f64,
    /// Audio concealed by the jitter buffer, in milliseconds.
    pub concealed_ms: u64,
    /// MOS estimate (ITU-T G.107 E-model), 1.0 to 4.5.
    #[serde(serialize_with = "serialize_rounded")]
    pub mos: f64,
    /// Datagrams to the call's media port dropped because they came from neither the
    /// address the peer signalled nor the trunk's networks (e.g. an attempt to take over
    /// the call's audio); each is also logged, at a bounded rate.
    #[serde(default)]
    #[schema(required = true)]
    pub foreign_datagrams: u64,
}

/// One transcript event the agent reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TranscriptEntry {
    /// Who spoke: `agent` or `user` (free text from the runtime).
    pub role: String,
    /// What was said.
    pub text: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A call record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Call {
    /// `call_...`
    pub id: String,
    /// Owning organisation (never serialized).
    #[serde(skip)]
    pub org_id: String,
    /// The agent on our side.
    pub agent_id: String,
    /// Where the call is in its life.
    pub status: CallStatus,
    /// How it ended (set with a terminal status).
    #[serde(default)]
    #[schema(required = true)]
    pub outcome: Option<CallOutcome>,
    /// Who placed it.
    pub direction: CallDirection,
    /// The remote party, E.164.
    pub phone_number: String,
    /// Caller number (ours when outbound).
    pub from_number: String,
    /// Called number (ours when inbound).
    pub to_number: String,
    /// Template variables rendered into the prompt and greeting.
    #[serde(default)]
    #[schema(required = true)]
    pub variables: BTreeMap<String, String>,
    /// Settings as requested.
    #[serde(default)]
    #[schema(required = true)]
    pub call_settings: CallSettings,
    /// Resolved maximum duration, seconds.
    pub max_duration_secs: u32,
    /// Resolved join timeout, seconds.
    pub join_timeout_secs: u32,
    /// SIP Call-ID.
    #[serde(default)]
    #[schema(required = true)]
    pub sip_call_id: Option<String>,
    /// Final SIP response code of the INVITE (or of the BYE that ended it).
    #[serde(default)]
    #[schema(required = true)]
    pub sip_final_code: Option<u16>,
    /// Q.850 cause from a Reason header, when present.
    #[serde(default)]
    #[schema(required = true)]
    pub q850_cause: Option<u16>,
    /// Why it ended, e.g. `bye`, `cancel`, `media_timeout`, `session_expired`, `shutdown`,
    /// `trunk_unreachable`, `trunk_no_response`.
    #[serde(default)]
    #[schema(required = true)]
    pub end_reason: Option<String>,
    /// What went wrong, in words, when `end_reason` alone does not say it: the OS error of
    /// a trunk that could not be reached (`Connection refused (os error 111)`).
    #[serde(default)]
    #[schema(required = true)]
    pub error_message: Option<String>,
    /// Seconds from answer to end (shown rounded to milliseconds).
    #[serde(default, serialize_with = "serialize_rounded_option")]
    #[schema(required = true)]
    pub duration_seconds: Option<f64>,
    /// Transcript events; `null` in JSON until the first one arrives.
    #[serde(
        default,
        serialize_with = "serialize_transcript",
        deserialize_with = "deserialize_transcript"
    )]
    #[schema(value_type = Option<Vec<TranscriptEntry>>, required = true)]
    pub transcript: Vec<TranscriptEntry>,
    /// Where the recording is served (`/api/public/v1/calls/{id}/recording`).
    #[serde(default)]
    #[schema(required = true)]
    pub recording_url: Option<String>,
    /// Media statistics, once media flowed.
    #[serde(default)]
    #[schema(required = true)]
    pub media_stats: Option<MediaStats>,
    /// The node that runs (or ran) the call (`[node] id`); `null` on calls recorded
    /// before nodes had ids.
    #[serde(default)]
    #[schema(required = true)]
    pub node_id: Option<String>,
    /// The agent prompt with variables rendered (internal).
    #[serde(default, skip_serializing)]
    pub rendered_prompt: Option<String>,
    /// The greeting with variables rendered (internal).
    #[serde(default, skip_serializing)]
    pub rendered_greeting: Option<String>,
    /// When the record was created.
    pub created_at: DateTime<Utc>,
    /// When SIP signalling started.
    #[serde(default)]
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    /// When the call was answered.
    #[serde(default)]
    #[schema(required = true)]
    pub answered_at: Option<DateTime<Utc>>,
    /// When it ended.
    #[serde(default)]
    #[schema(required = true)]
    pub ended_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A webhook subscription.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Webhook {
    /// `whk_...`
    pub id: String,
    /// Owning organisation (never serialized).
    #[serde(skip)]
    pub org_id: String,
    /// Where events are POSTed (redirects are not followed). Loopback, private and
    /// link-local addresses (also what a name resolves to) are refused unless
    /// `[security] allow_private_destinations`.
    pub url: String,
    /// Subscribed event names (see [`events`]).
    pub events: Vec<String>,
    /// Signing secret (write-only: serialized as `has_secret: bool`).
    #[serde(
        default,
        rename(serialize = "has_secret", deserialize = "secret"),
        serialize_with = "serialize_not_empty"
    )]
    #[schema(rename = "has_secret", value_type = bool, required = true)]
    pub secret: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for Webhook {
    /// The secret and the URL's query (which often holds the receiver's token) are left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("org_id", &self.org_id)
            .field("url", &crate::redact::loggable_url(&self.url))
            .field("events", &self.events)
            .field("secret", &crate::redact::secret(Some(&self.secret)))
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Whether `number` is E.164 as DESIGN.md fixes it: `^\+[1-9]\d{1,14}$`.
pub fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Parses a duration setting such as `"1800s"`, `"5m"`, `"1h"` or `"30"` into whole seconds.
pub fn parse_duration_secs(text: &str) -> Result<u32, ModelError> {
    let invalid = || ModelError::InvalidDuration {
        value: text.to_owned(),
    };
    let trimmed = text.trim();
    let (number, unit) = match trimmed.char_indices().last() {
        Some((index, 's')) => (&trimmed[..index], 1),
        Some((index, 'm')) => (&trimmed[..index], 60),
        Some((index, 'h')) => (&trimmed[..index], 3600),
        _ => (trimmed, 1),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let value: u32 = number.parse().map_err(|_| invalid())?;
    value.checked_mul(unit).ok_or_else(invalid)
}

/// Formats seconds the way call settings show them: `"1800s"`.
pub fn format_duration_secs(secs: u32) -> String {
    format!("{secs}s")
}

/// Decimal places that floats keep in the API's JSON (milliseconds of a duration in seconds).
pub const FLOAT_DECIMALS: i32 = 3;

/// `value` rounded to [`FLOAT_DECIMALS`] places: what the API shows of a measured float, so
/// that sums and ratios computed in binary show as `0.9`, not `0.8999999999999999`.
/// Non-finite values are returned unchanged.
pub fn round_float(value: f64) -> f64 {
    if !value.is_finite() {
        return value;
    }
    let scale = 10f64.powi(FLOAT_DECIMALS);
    let rounded = (value * scale).round() / scale;
    if rounded.is_finite() {
        rounded
    } else {
        value
    }
}

/// Rounds every non-integer number in a JSON document with [`round_float`] (measurements and
/// aggregates are kept as documents).
pub fn round_floats(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(number) if number.is_f64() => {
            if let Some(rounded) = number
                .as_f64()
                .map(round_float)
                .and_then(serde_json::Number::from_f64)
            {
                *number = rounded;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(round_floats),
        Value::Object(map) => map.values_mut().for_each(round_floats),
        _ => {}
    }
}

/// Serializes a JSON document with its floats rounded ([`round_floats`]).
pub fn serialize_rounded_document<S: Serializer>(
    value: &Option<serde_json::Value>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(document) => {
            let mut document = document.clone();
            round_floats(&mut document);
            serializer.serialize_some(&document)
        }
        None => serializer.serialize_none(),
    }
}

fn serialize_rounded<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(round_float(*value))
}

fn serialize_rounded_option<S: Serializer>(
    value: &Option<f64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.serialize_some(&round_float(*value)),
        None => serializer.serialize_none(),
    }
}

fn serialize_transcript<S: Serializer>(
    transcript: &[TranscriptEntry],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    if transcript.is_empty() {
        serializer.serialize_none()
    } else {
        serializer.collect_seq(transcript)
    }
}

fn deserialize_transcript<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<TranscriptEntry>, D::Error> {
    Ok(Option::<Vec<TranscriptEntry>>::deserialize(deserializer)?.unwrap_or_default())
}

/// Durations of agent settings in JSON: written `"30s"`, read from `"30s"`/`"5m"`/`"1h"` or
/// an integer of seconds.
mod duration_text {
    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(secs: &u32, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_duration_secs(*secs))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
        struct Seconds;
        impl Visitor<'_> for Seconds {
            type Value = u32;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"30s\" or an integer of seconds")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
                u32::try_from(v).map_err(|_| E::custom(format!("{v} seconds is too long")))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
                u32::try_from(v).map_err(|_| E::custom(format!("{v} is not a duration")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
                super::parse_duration_secs(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Seconds)
    }
}

fn serialize_is_some<S: Serializer>(
    value: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_bool(value.is_some())
}

fn serialize_not_empty<S: Serializer>(value: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bool(!value.is_empty())
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
    fn enums_round_trip_through_text() {
        for status in CallStatus::ALL {
            assert_eq!(status.as_str().parse::<CallStatus>(), Ok(*status));
            assert_eq!(
                serde_json::to_value(status).expect("serializes"),
                json!(status.as_str())
            );
        }
        for outcome in CallOutcome::ALL {
            assert_eq!(outcome.as_str().parse::<CallOutcome>(), Ok(*outcome));
        }
        assert_eq!(CallStatus::InProgress.as_str(), "in_progress");
        assert_eq!(CallOutcome::NoAnswer.to_string(), "no_answer");
        assert!(matches!(
            "bogus".parse::<AgentStatus>(),
            Err(ModelError::UnknownValue {
                kind: "AgentStatus",
                ..
            })
        ));
    }

    #[test]
    fn terminal_statuses() {
        let terminal: Vec<_> = CallStatus::ALL.iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(
            terminal,
            [
                &CallStatus::Ended,
                &CallStatus::Failed,
                &CallStatus::Cancelled
            ]
        );
    }

    #[test]
    fn runtime_is_tagged_by_type() {
        let runtime: Runtime = serde_json::from_value(json!({"type": "echo"})).expect("echo");
        assert_eq!(runtime, Runtime::Echo);
        let runtime: Runtime =
            serde_json::from_value(json!({"type": "websocket", "url": "wss://a.example/x"}))
                .expect("websocket");
        assert_eq!(
            runtime,
            Runtime::Websocket {
                url: "wss://a.example/x".into(),
                headers: BTreeMap::new(),
                format: None
            }
        );
        let runtime: Runtime = serde_json::from_value(json!({"type": "scripted", "steps": [
            {"action": "say", "text": "hello"},
            {"action": "tone", "frequency_hz": 440, "duration_ms": 200},
            {"action": "dtmf", "digits": "12#"},
            {"action": "wait", "ms": 500},
            {"action": "wait_for_dtmf", "timeout_ms": 3000},
            {"action": "hangup"}
        ]}))
        .expect("scripted");
        let Runtime::Scripted { steps } = &runtime else {
            panic!("scripted expected");
        };
        assert_eq!(steps.len(), 6);
        assert_eq!(steps[5], ScriptStep::Hangup);
        let back = serde_json::to_value(&runtime).expect("serializes");
        assert_eq!(back["steps"][0], json!({"action": "say", "text": "hello"}));
        assert!(serde_json::from_value::<Runtime>(json!({"type": "nope"})).is_err());
    }

    #[test]
    fn trunk_hides_password_and_org() {
        let trunk = Trunk {
            id: "trk_1".into(),
            org_id: "org_1".into(),
            name: "carrier".into(),
            host: "sip.example.com".into(),
            port: 5060,
            transport: TrunkTransport::Udp,
            username: Some("user".into()),
            password: Some("hunter2".into()),
            allowed_networks: vec!["10.0.0.0/8".into()],
            inbound_auth: Some(InboundAuth {
                username: "carrier".into(),
                password: "inbound-secret".into(),
            }),
            created_at: t0(),
            updated_at: t0(),
        };
        let value = serde_json::to_value(&trunk).expect("serializes");
        assert_eq!(value["has_password"], json!(true));
        assert!(value.get("password").is_none());
        assert!(value.get("org_id").is_none());
        assert!(!value.to_string().contains("hunter2"));
        assert_eq!(value["inbound_auth"], json!({"username": "carrier"}));
        assert!(!value.to_string().contains("inbound-secret"));
        assert_eq!(value["transport"], json!("udp"));
        assert_eq!(value["created_at"], json!("2025-01-02T03:04:05Z"));

        let parsed: Trunk = serde_json::from_value(json!({
            "id": "trk_2", "name": "n", "host": "h", "transport": "tcp", "password": "p",
            "created_at": "2025-01-02T03:04:05Z", "updated_at": "2025-01-02T03:04:05Z"
        }))
        .expect("parses");
        assert_eq!(parsed.port, 5060);
        assert_eq!(parsed.password.as_deref(), Some("p"));
        assert!(parsed.allowed_networks.is_empty());
    }

    #[test]
    fn webhook_hides_secret() {
        let webhook = Webhook {
            id: "whk_1".into(),
            org_id: "org_1".into(),
            url: "https://example.com/hook".into(),
            events: vec![events::CALL_ENDED.into()],
            secret: "whsec_abc".into(),
            created_at: t0(),
        };
        let value = serde_json::to_value(&webhook).expect("serializes");
        assert_eq!(value["has_secret"], json!(true));
        assert!(!value.to_string().contains("whsec_abc"));
    }

    #[test]
    fn call_serializes_public_fields_only() {
        let call = Call {
            id: "call_1".into(),
            org_id: "org_1".into(),
            agent_id: "agt_1".into(),
            status: CallStatus::InProgress,
            outcome: None,
            direction: CallDirection::Outbound,
            phone_number: "+14155550100".into(),
            from_number: "+14155550199".into(),
            to_number: "+14155550100".into(),
            variables: BTreeMap::from([("name".into(), "Ada".into())]),
            call_settings: CallSettings::default(),
            max_duration_secs: 1800,
            join_timeout_secs: 30,
            sip_call_id: None,
            sip_final_code: Some(200),
            q850_cause: None,
            end_reason: None,
            error_message: None,
            duration_seconds: None,
            transcript: vec![],
            recording_url: None,
            media_stats: Some(MediaStats::default()),
            node_id: Some("node-a".into()),
            rendered_prompt: Some("secret prompt".into()),
            rendered_greeting: Some("hi Ada".into()),
            created_at: t0(),
            started_at: Some(t0()),
            answered_at: None,
            ended_at: None,
            updated_at: t0(),
        };
        let value = serde_json::to_value(&call).expect("serializes");
        assert_eq!(value["status"], json!("in_progress"));
        assert_eq!(value["outcome"], json!(null));
        assert_eq!(value["media_stats"]["packets_lost"], json!(0));
        assert_eq!(value["call_settings"]["recording_enabled"], json!(true));
        assert!(value.get("rendered_prompt").is_none());
        assert!(value.get("org_id").is_none());
        let back: Call = serde_json::from_value(value).expect("parses");
        assert_eq!(back.id, call.id);
        assert_eq!(back.rendered_prompt, None);
    }

    #[test]
    fn call_settings_default_when_fields_missing() {
        let settings: CallSettings =
            serde_json::from_value(json!({"max_duration": "60s"})).expect("parses");
        assert!(settings.recording_enabled && settings.transcription_enabled);
        assert_eq!(settings.max_duration.as_deref(), Some("60s"));
        let agent_settings: AgentCallSettings = serde_json::from_value(json!({})).expect("parses");
        assert_eq!(agent_settings, AgentCallSettings::default());
        assert_eq!(agent_settings.max_duration_secs, 1800);
        assert_eq!(agent_settings.join_timeout_secs, 30);
    }

    #[test]
    fn agent_settings_spell_durations_as_text_and_read_the_old_integers() {
        let settings = AgentCallSettings {
            max_duration_secs: 600,
            join_timeout_secs: 20,
            ..AgentCallSettings::default()
        };
        let value = serde_json::to_value(&settings).expect("serializes");
        assert_eq!(value["max_duration"], json!("600s"));
        assert_eq!(value["join_timeout"], json!("20s"));
        assert!(value.get("max_duration_secs").is_none());
        let back: AgentCallSettings = serde_json::from_value(value).expect("parses");
        assert_eq!(back, settings);
        // What the store kept before the change.
        let old: AgentCallSettings =
            serde_json::from_value(json!({"max_duration_secs": 600, "join_timeout_secs": 20,
                   "recording_enabled": true, "transcription_enabled": true}))
            .expect("old spelling");
        assert_eq!(old, settings);
        let minutes: AgentCallSettings =
            serde_json::from_value(json!({"max_duration": "10m"})).expect("minutes");
        assert_eq!(minutes.max_duration_secs, 600);
        assert!(serde_json::from_value::<AgentCallSettings>(json!({"max_duration": "x"})).is_err());
    }

    #[test]
    fn floats_are_rounded_to_milliseconds() {
        assert_eq!(round_float(0.899_999_999_999_999_9), 0.9);
        assert_eq!(round_float(0.1 + 0.2), 0.3);
        assert_eq!(round_float(12.345_678_9), 12.346);
        assert_eq!(round_float(-1.000_4), -1.0);
        assert!(round_float(f64::NAN).is_nan());
        let mut document = json!({"mos": 4.300_000_000_000_001, "count": 3,
            "latency": {"p50": 120.000_000_000_01, "all": [0.1 + 0.2, 7]}});
        round_floats(&mut document);
        assert_eq!(
            document,
            json!({"mos": 4.3, "count": 3, "latency": {"p50": 120.0, "all": [0.3, 7]}})
        );
        assert_eq!(
            document["count"].as_u64(),
            Some(3),
            "integers stay integers"
        );
    }

    #[test]
    fn e164() {
        assert!(is_e164("+14155550100"));
        assert!(is_e164("+12"));
        assert!(is_e164("+123456789012345"));
        assert!(!is_e164("+1234567890123456"));
        assert!(!is_e164("14155550100"));
        assert!(!is_e164("+04155550100"));
        assert!(!is_e164("+1"));
        assert!(!is_e164("+1415555010a"));
        assert!(!is_e164(""));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("1800s"), Ok(1800));
        assert_eq!(parse_duration_secs("30"), Ok(30));
        assert_eq!(parse_duration_secs("5m"), Ok(300));
        assert_eq!(parse_duration_secs("1h"), Ok(3600));
        for bad in ["", "s", "-5s", "1.5s", "10x", "99999999999s", "4294967295h"] {
            assert!(parse_duration_secs(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration_secs(30), "30s");
    }
}
