//! The call records of a test run: the agent's leg (placed or answered by
//! the engine, or joined in-process) and, in `sip` mode, the bot's leg,
//! built from the bot's report.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use bot_loopback::bot::RunReport;
use bot_loopback::measure::Party;
use chrono::Utc;

use crate::api::template;
use crate::config::Config;
use crate::engine::CallEngine;
use crate::ids::new_id;
use crate::model::{
    format_duration_secs, Agent, Call, CallDirection, CallOutcome, CallSettings, CallStatus,
    MediaStats, TestCallRun, Trunk, TrunkTransport,
};

/// The call records of one run as they become known (so that a run that
/// times out or is stopped can hang up its call and still link it).
#[derive(Debug, Default)]
pub(crate) struct Legs {
    agent: Mutex<Option<String>>,
    bot: Mutex<Option<String>>,
}

impl Legs {
    /// The agent's leg is `call_id` (also recorded on the current span).
    pub(crate) fn set_agent(&self, call_id: &str) {
        tracing::Span::current().record("call_id", call_id);
        *self.agent.lock().unwrap_or_else(|e| e.into_inner()) = Some(call_id.to_owned());
    }

    /// The bot's leg is `call_id` (also recorded on the current span).
    pub(crate) fn set_bot(&self, call_id: &str) {
        tracing::Span::current().record("sip_call_id", call_id);
        *self.bot.lock().unwrap_or_else(|e| e.into_inner()) = Some(call_id.to_owned());
    }

    /// The agent's leg, once stored.
    pub(crate) fn agent(&self) -> Option<String> {
        self.agent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The bot's leg, once stored.
    pub(crate) fn bot(&self) -> Option<String> {
        self.bot.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Hangs up the agent's leg if it is live.
    pub(crate) fn hang_up(&self, engine: &CallEngine) {
        if let Some(call_id) = self.agent() {
            engine.hangup(&call_id);
        }
    }
}

/// Longest agent leg: the bot hangs up at `max_run_seconds`; the engine's
/// own limit is a backstop a little later.
fn agent_leg_max_secs(config: &Config) -> u32 {
    config.test_calls.max_run_seconds.saturating_add(15)
}

/// The agent's prompt and greeting, rendered without variables.
fn rendered(agent: &Agent) -> (String, Option<String>) {
    let none = BTreeMap::new();
    let prompt = template::render(&agent.prompt, &none).text;
    let greeting = agent
        .greeting
        .as_deref()
        .map(|greeting| template::render(greeting, &none).text);
    (prompt, greeting)
}

/// A new call record of the agent's side of `run`, `queued`.
pub(crate) fn agent_leg(
    run: &TestCallRun,
    agent: &Agent,
    config: &Config,
    direction: CallDirection,
    from_number: &str,
    to_number: &str,
) -> Call {
    let now = Utc::now();
    let settings = &agent.default_call_settings;
    let max_secs = agent_leg_max_secs(config);
    let join_secs = 30;
    let (prompt, greeting) = rendered(agent);
    let remote = remote_number(direction, from_number, to_number);
    Call {
        id: new_id("call"),
        org_id: run.org_id.clone(),
        agent_id: agent.id.clone(),
        status: CallStatus::Queued,
        outcome: None,
        direction,
        phone_number: remote.to_owned(),
        from_number: from_number.to_owned(),
        to_number: to_number.to_owned(),
        variables: BTreeMap::new(),
        call_settings: CallSettings {
            recording_enabled: settings.recording_enabled,
            transcription_enabled: settings.transcription_enabled,
            greeting: None,
            max_duration: Some(format_duration_secs(max_secs)),
            join_timeout: Some(format_duration_secs(join_secs)),
        },
        max_duration_secs: max_secs,
        join_timeout_secs: join_secs,
        sip_call_id: None,
        sip_final_code: None,
        q850_cause: None,
        end_reason: None,
        error_message: None,
        duration_seconds: None,
        transcript: Vec::new(),
        recording_url: None,
        media_stats: None,
        node_id: Some(config.node.id.clone()),
        rendered_prompt: Some(prompt),
        rendered_greeting: greeting,
        created_at: now,
        started_at: None,
        answered_at: None,
        ended_at: None,
        updated_at: now,
    }
}

/// The far party's number of a leg in `direction`: whom it calls, or who calls it.
fn remote_number<'a>(
    direction: CallDirection,
    from_number: &'a str,
    to_number: &'a str,
) -> &'a str {
    match direction {
        CallDirection::Outbound => to_number,
        CallDirection::Inbound => from_number,
    }
}

/// A trunk to the bot's SIP address: how the engine reaches the bot for an
/// outbound run. Never stored.
pub(crate) fn bot_trunk(org_id: &str, bot: SocketAddr) -> Trunk {
    let now = Utc::now();
    Trunk {
        id: new_id("trk"),
        org_id: org_id.to_owned(),
        name: "test bot".into(),
        host: bot.ip().to_string(),
        port: bot.port(),
        transport: TrunkTransport::Udp,
        username: None,
        password: None,
        allowed_networks: Vec::new(),
        inbound_auth: None,
        created_at: now,
        updated_at: now,
    }
}

/// How the call ended, seen from the agent: the bot is the caller or
/// callee on the far side, so its hang-up is the remote party's.
pub(crate) fn outcome_of(report: &RunReport) -> CallOutcome {
    if report.answered_at.is_none() {
        return CallOutcome::Error;
    }
    match report.hangup_by {
        Party::Bot => CallOutcome::CallerHangup,
        Party::Agent => CallOutcome::AgentHangup,
    }
}

/// The bot's leg of a `sip` run as a call record: the opposite direction of
/// the agent's leg, the bot's SIP Call-ID, its timestamps and media stats.
pub(crate) fn bot_leg(
    run: &TestCallRun,
    agent_leg: Option<&Call>,
    report: &RunReport,
    direction: CallDirection,
    from_number: &str,
    to_number: &str,
    config: &Config,
) -> Call {
    let now = Utc::now();
    let (started_at, answered_at, ended_at) =
        (report.invite_at, report.answered_at, report.ended_at);
    let answered = answered_at.is_some();
    let m = &report.measurements;
    let remote = remote_number(direction, from_number, to_number);
    Call {
        id: new_id("call"),
        org_id: run.org_id.clone(),
        agent_id: run.agent_id.clone(),
        status: if answered {
            CallStatus::Ended
        } else {
            CallStatus::Failed
        },
        outcome: Some(
            agent_leg
                .and_then(|leg| leg.outcome)
                .unwrap_or_else(|| outcome_of(report)),
        ),
        direction,
        phone_number: remote.to_owned(),
        from_number: from_number.to_owned(),
        to_number: to_number.to_owned(),
        variables: BTreeMap::new(),
        call_settings: CallSettings {
            recording_enabled: false,
            transcription_enabled: false,
            ..CallSettings::default()
        },
        max_duration_secs: config.test_calls.max_run_seconds,
        join_timeout_secs: 0,
        sip_call_id: report.sip_call_id.clone(),
        sip_final_code: report.sip_final_code,
        q850_cause: None,
        end_reason: Some(match (&report.error, report.hangup_by) {
            (Some(error), _) => error.clone(),
            (None, Party::Bot) => "test_bot_hangup".to_owned(),
            (None, Party::Agent) => "agent_hangup".to_owned(),
        }),
        error_message: None,
        duration_seconds: Some(if answered {
            m.duration_ms as f64 / 1000.0
        } else {
            0.0
        }),
        transcript: Vec::new(),
        recording_url: None,
        media_stats: answered.then(|| MediaStats {
            codec: report.codec.clone().unwrap_or_default(),
            packets_sent: m.packets_sent,
            packets_received: m.packets_received,
            packets_lost: m.packets_lost,
            loss_percent: m.loss_percent,
            jitter_ms: m.jitter_ms,
            concealed_ms: 0,
            mos: m.mos,
            foreign_datagrams: 0,
        }),
        node_id: Some(config.node.id.clone()),
        rendered_prompt: None,
        rendered_greeting: None,
        created_at: started_at.unwrap_or(now),
        started_at,
        answered_at,
        ended_at: ended_at.or(Some(now)),
        updated_at: now,
    }
}
