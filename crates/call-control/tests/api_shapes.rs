//! Guards the shapes client code written against the copied API relies on: `null` for an
//! optional field means "not given" on every endpoint; numbers in responses are clean
//! (`duration_seconds` to the millisecond, no float noise in media stats); `transcript` is
//! `null` until the first event; agent defaults spell durations like per-call settings
//! (`"30s"`, the `*_secs` integers read as an alias); and validation messages say which field,
//! what was given and what is allowed, never a parser's wording.

mod api_support;

use std::collections::BTreeMap;

use api_support::{id_of, silent_udp_port, TestApi};
use axum::http::StatusCode;
use call_control::model::{
    Call, CallDirection, CallOutcome, CallSettings, CallStatus, MediaStats, TranscriptEntry,
};
use chrono::Utc;
use serde_json::{json, Value};

const AGENTS: &str = "/api/public/v1/agents";
const CALLS: &str = "/api/public/v1/calls";

/// An active agent with number `+14155550100` on a trunk nobody answers on.
async fn ready(api: &TestApi) -> String {
    let trunk = api.trunk(silent_udp_port()).await;
    let agent = api.agent("active", "hi").await;
    api.number("+14155550100", &trunk, Some(&agent)).await;
    agent
}

/// `details.fields` of a 422.
fn fields(reply: &api_support::Reply) -> &serde_json::Map<String, Value> {
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.body
    );
    reply.body["error"]["details"]["fields"]
        .as_object()
        .expect("details.fields")
}

#[tokio::test]
async fn null_optional_fields_are_not_given() {
    let api = TestApi::start().await;
    let agent = ready(&api).await;
    let call = api
        .post(
            CALLS,
            json!({"agent_id": agent, "phone_number": "+14155550123", "from_number": null,
                   "variables": null, "call_settings": null}),
        )
        .await;
    assert_eq!(call.status, StatusCode::CREATED, "{}", call.body);
    assert_eq!(call.data()["from_number"], json!("+14155550100"));

    let nested = api
        .post(
            CALLS,
            json!({"agent_id": agent, "phone_number": "+14155550124",
                   "call_settings": {"greeting": null, "max_duration": null,
                                     "recording_enabled": null}}),
        )
        .await;
    assert_eq!(nested.status, StatusCode::CREATED, "{}", nested.body);
    assert_eq!(
        nested.data()["call_settings"]["recording_enabled"],
        json!(true)
    );

    let test_call = api
        .post(
            &format!("{AGENTS}/{agent}/test-call"),
            json!({"to": "+14155550125", "from_number": null}),
        )
        .await;
    assert_eq!(test_call.status, StatusCode::CREATED, "{}", test_call.body);

    // Required fields stay required when null.
    let missing = api
        .post(CALLS, json!({"agent_id": agent, "phone_number": null}))
        .await;
    assert_eq!(fields(&missing)["phone_number"], json!("is required"));

    // Where null has a meaning of its own (clearing a value on PATCH), it keeps it.
    let agent_path = format!("{AGENTS}/{agent}");
    let cleared = api
        .patch(
            &agent_path,
            json!({"greeting": null, "name": null, "status": null}),
        )
        .await;
    assert_eq!(cleared.status, StatusCode::OK, "{}", cleared.body);
    assert_eq!(cleared.data()["greeting"], Value::Null);
    assert_eq!(cleared.data()["name"], json!("reminder"));
    assert_eq!(cleared.data()["status"], json!("active"));
    api.state.engine.shutdown().await;
}

/// An ended call with the float noise binary arithmetic leaves.
fn noisy_call(org: &str, transcript: Vec<TranscriptEntry>) -> Call {
    let now = Utc::now();
    Call {
        id: call_control::ids::new_id(call_control::ids::CALL),
        org_id: org.to_owned(),
        agent_id: "agt_x".into(),
        status: CallStatus::Ended,
        outcome: Some(CallOutcome::CallerHangup),
        direction: CallDirection::Inbound,
        phone_number: "+14155550123".into(),
        from_number: "+14155550123".into(),
        to_number: "+14155550100".into(),
        variables: BTreeMap::new(),
        // What a leg recorded by the test bot has: no override, no durations.
        call_settings: CallSettings::default(),
        max_duration_secs: 1800,
        join_timeout_secs: 30,
        sip_call_id: Some("abc@127.0.0.1".into()),
        sip_final_code: Some(200),
        q850_cause: None,
        end_reason: Some("bye".into()),
        error_message: None,
        duration_seconds: Some(12.345_678_9),
        transcript,
        recording_url: None,
        media_stats: Some(MediaStats {
            codec: "PCMU".into(),
            packets_sent: 600,
            packets_received: 594,
            packets_lost: 6,
            loss_percent: 0.899_999_999_999_999_9,
            jitter_ms: 0.1 + 0.2,
            concealed_ms: 120,
            mos: 4.300_000_000_000_001,
            foreign_datagrams: 3,
        }),
        node_id: Some("node-a".into()),
        rendered_prompt: None,
        rendered_greeting: None,
        created_at: now,
        started_at: Some(now),
        answered_at: Some(now),
        ended_at: Some(now),
        updated_at: now,
    }
}

#[tokio::test]
async fn numbers_are_clean_and_transcript_is_null_until_the_first_event() {
    let api = TestApi::start().await;
    let org = api.org_of(&api.key).await;
    let quiet = noisy_call(&org, Vec::new());
    api.state.store.insert_call(&quiet).await.expect("insert");
    let entry = TranscriptEntry {
        role: "agent".into(),
        text: "Hello".into(),
        at: Utc::now(),
    };
    let spoken = noisy_call(&org, vec![entry]);
    api.state.store.insert_call(&spoken).await.expect("insert");

    let read = api.get(&format!("{CALLS}/{}", quiet.id)).await;
    let call = read.data();
    assert_eq!(call["duration_seconds"], json!(12.346));
    assert_eq!(call["media_stats"]["loss_percent"], json!(0.9));
    assert_eq!(call["media_stats"]["jitter_ms"], json!(0.3));
    assert_eq!(call["media_stats"]["mos"], json!(4.3));
    assert_eq!(call["media_stats"]["foreign_datagrams"], json!(3));
    assert_eq!(call["transcript"], Value::Null);
    for (name, value) in call["call_settings"].as_object().expect("call_settings") {
        assert!(!value.is_null(), "call_settings.{name} is null: {call}");
    }
    // The raw text carries no noise either (lists too).
    let listed = api.get(CALLS).await;
    let text = String::from_utf8(listed.bytes.clone()).expect("utf-8");
    assert!(!text.contains("0.8999"), "{text}");
    assert!(!text.contains("0.30000000000000004"), "{text}");

    let read = api.get(&format!("{CALLS}/{}", spoken.id)).await;
    assert_eq!(read.data()["transcript"][0]["text"], json!("Hello"));
}

#[tokio::test]
async fn agent_defaults_spell_durations_like_call_settings() {
    let api = TestApi::start().await;
    let created = api
        .post(
            AGENTS,
            json!({"name": "a", "default_call_settings": {"max_duration": "10m", "join_timeout": "20s"}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(
        created.data()["default_call_settings"],
        json!({"max_duration": "600s", "join_timeout": "20s",
               "recording_enabled": true, "transcription_enabled": true})
    );
    let id = id_of(&created);

    // The integer spelling is read as an alias.
    let patched = api
        .patch(
            &format!("{AGENTS}/{id}"),
            json!({"default_call_settings": {"join_timeout_secs": 45}}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(
        patched.data()["default_call_settings"]["join_timeout"],
        json!("45s")
    );
    assert_eq!(
        patched.data()["default_call_settings"]["max_duration"],
        json!("600s")
    );

    let both = api
        .post(
            AGENTS,
            json!({"name": "b", "default_call_settings": {"max_duration": "60s", "max_duration_secs": 60}}),
        )
        .await;
    assert!(fields(&both).contains_key("default_call_settings.max_duration_secs"));
    let bad = api
        .post(
            AGENTS,
            json!({"name": "c", "default_call_settings": {"join_timeout": "soon"}}),
        )
        .await;
    let message = fields(&bad)["default_call_settings.join_timeout"]
        .as_str()
        .expect("message");
    assert!(
        message.starts_with("\"soon\" must be a duration"),
        "{message}"
    );

    // A call without settings takes the agent's, spelled the same way.
    let trunk = api.trunk(silent_udp_port()).await;
    let active = api
        .post(
            AGENTS,
            json!({"name": "d", "status": "active", "default_call_settings": {"join_timeout": "25s"}}),
        )
        .await;
    let agent = id_of(&active);
    api.number("+14155550100", &trunk, Some(&agent)).await;
    let call = api
        .post(
            CALLS,
            json!({"agent_id": agent, "phone_number": "+14155550123"}),
        )
        .await;
    assert_eq!(call.status, StatusCode::CREATED, "{}", call.body);
    assert_eq!(call.data()["call_settings"]["join_timeout"], json!("25s"));
    assert_eq!(call.data()["call_settings"]["max_duration"], json!("1800s"));
    api.state.engine.shutdown().await;
}

#[tokio::test]
async fn validation_messages_name_the_value_and_what_is_allowed() {
    let api = TestApi::start().await;
    let status = api
        .post(AGENTS, json!({"name": "a", "status": "published"}))
        .await;
    assert_eq!(
        fields(&status)["status"],
        json!("\"published\" is not one of draft, active, paused")
    );

    let runtime = api
        .post(
            AGENTS,
            json!({"name": "a", "runtime": {"type": "scripted", "steps": [
                {"action": "say", "text": "hi"}, {"action": "wait", "ms": "long"},
                {"action": "jump"}]}}),
        )
        .await;
    let runtime_fields = fields(&runtime);
    assert_eq!(
        runtime_fields["runtime.steps[2].action"],
        json!("\"jump\" is not one of say, tone, dtmf, wait, wait_for_dtmf, hangup")
    );
    assert!(runtime_fields.contains_key("runtime.steps[1].ms"));
    let kind = api
        .post(AGENTS, json!({"name": "a", "runtime": {"type": "grpc"}}))
        .await;
    assert_eq!(
        fields(&kind)["runtime.type"],
        json!("\"grpc\" is not one of echo, websocket, scripted")
    );
    let missing = api
        .post(
            AGENTS,
            json!({"name": "a", "runtime": {"type": "websocket"}}),
        )
        .await;
    assert_eq!(fields(&missing)["runtime.url"], json!("is required"));

    let transport = api
        .post(
            "/api/public/v1/trunks",
            json!({"name": "t", "host": "127.0.0.1", "transport": "sctp"}),
        )
        .await;
    assert_eq!(
        fields(&transport)["transport"],
        json!("\"sctp\" is not one of udp, tcp")
    );
    let filter = api.get(&format!("{CALLS}?status=done")).await;
    let message = fields(&filter)["status"].as_str().expect("message");
    assert!(
        message.starts_with("\"done\" is not one of queued"),
        "{message}"
    );

    for reply in [&status, &runtime, &kind, &missing, &transport, &filter] {
        let text = reply.body.to_string();
        for internal in ["`", "unknown variant", "invalid type", "expected"] {
            assert!(!text.contains(internal), "{internal:?} in {text}");
        }
    }
}
