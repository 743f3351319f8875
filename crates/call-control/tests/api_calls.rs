//! Guards `/calls`: every error code of POST /calls (validation_error, invalid_phone_number,
//! agent_not_found, agent_not_active, no_phone_number_configured, invalid_from_number,
//! insufficient_credits, rate_limited, unavailable at `[node] max_calls`), the success path through the real engine (caller id
//! choice, resolved settings, `{{variables}}` rendering), list filters, hang-up, and the
//! recording endpoint (404 `recording_not_found`, the WAV when present).

mod api_support;

use std::collections::BTreeMap;

use api_support::{silent_udp_port, TestApi, BALANCE};
use axum::http::StatusCode;
use call_control::model::{Call, CallDirection, CallOutcome, CallSettings, CallStatus};
use chrono::Utc;
use serde_json::json;

const CALLS: &str = "/api/public/v1/calls";

/// An active agent with number `+14155550100` on a trunk nobody answers on.
async fn ready(api: &TestApi) -> (String, String) {
    let trunk = api.trunk(silent_udp_port()).await;
    let agent = api
        .agent(
            "active",
            "You remind {{name}} of the {{ appointment }} at {{time}}.",
        )
        .await;
    api.number("+14155550100", &trunk, Some(&agent)).await;
    (agent, trunk)
}

#[tokio::test]
async fn post_calls_error_codes() {
    let api = TestApi::start().await;
    let (agent, trunk) = ready(&api).await;

    let invalid = api
        .post(
            CALLS,
            json!({"phone_number": "+14155550123",
                   "call_settings": {"max_duration": "forever", "join_timeout": "0s", "volume": 11},
                   "variables": {"name": 5}}),
        )
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(invalid.code(), "validation_error");
    let fields = invalid.body["error"]["details"]["fields"]
        .as_object()
        .expect("fields");
    for field in [
        "agent_id",
        "call_settings.max_duration",
        "call_settings.join_timeout",
        "call_settings.volume",
        "variables.name",
    ] {
        assert!(fields.contains_key(field), "{field} not named: {fields:?}");
    }

    for bad in [
        "4155550123",
        "+0123",
        "+1",
        "+1415555012345678",
        "+1 415 555",
    ] {
        let reply = api
            .post(CALLS, json!({"agent_id": agent, "phone_number": bad}))
            .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(reply.code(), "invalid_phone_number", "{bad}");
    }

    let unknown = api
        .post(
            CALLS,
            json!({"agent_id": "agt_missing", "phone_number": "+14155550123"}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.code(), "agent_not_found");

    let draft = api.agent("draft", "x").await;
    let reply = api
        .post(
            CALLS,
            json!({"agent_id": draft, "phone_number": "+14155550123"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.code(), "agent_not_active");
    assert_eq!(reply.body["error"]["details"]["status"], json!("draft"));

    let lonely = api.agent("active", "x").await;
    let reply = api
        .post(
            CALLS,
            json!({"agent_id": lonely, "phone_number": "+14155550123"}),
        )
        .await;
    assert_eq!(reply.code(), "no_phone_number_configured");

    // A number of the organisation, but assigned to another agent; and a number nobody owns.
    api.number("+14155550177", &trunk, Some(&lonely)).await;
    for from in ["+14155550177", "+14155550999"] {
        let reply = api
            .post(
                CALLS,
                json!({"agent_id": agent, "phone_number": "+14155550123", "from_number": from}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{from}");
        assert_eq!(reply.code(), "invalid_from_number", "{from}");
    }

    let org = api.org_of(&api.key).await;
    api.state
        .store
        .add_credits(&org, 1 - BALANCE)
        .await
        .expect("charge");
    let poor = api
        .post(
            CALLS,
            json!({"agent_id": agent, "phone_number": "+14155550123"}),
        )
        .await;
    assert_eq!(poor.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(poor.code(), "insufficient_credits");
    assert_eq!(poor.body["error"]["details"]["balance_cents"], json!(1));
    assert_eq!(poor.body["error"]["details"]["required_cents"], json!(2));

    // None of the refused requests stored a call.
    let list = api.get(CALLS).await;
    assert_eq!(list.body["pagination"]["total"], json!(0));
}

#[tokio::test]
async fn post_calls_is_rate_limited_per_key() {
    let api = TestApi::with_rate_limit(2).await;
    for _ in 0..2 {
        let reply = api
            .post(
                CALLS,
                json!({"agent_id": "agt_missing", "phone_number": "+14155550123"}),
            )
            .await;
        assert_eq!(reply.code(), "agent_not_found");
    }
    let limited = api
        .post(
            CALLS,
            json!({"agent_id": "agt_missing", "phone_number": "+14155550123"}),
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.code(), "rate_limited");
    assert!(limited.body["error"]["details"]["reset_at"].is_string());
    assert!(limited.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn a_call_is_stored_queued_and_handed_to_the_engine() {
    let api = TestApi::start().await;
    let (agent, _trunk) = ready(&api).await;
    let reply = api
        .post(
            CALLS,
            json!({"agent_id": agent, "phone_number": "+14155550123",
                   "call_settings": {"max_duration": "120s", "recording_enabled": false},
                   "variables": {"name": "Ada", "time": "9:00"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let call = reply.data();
    let id = call["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("call_"));
    assert_eq!(call["status"], json!("queued"));
    assert_eq!(call["direction"], json!("outbound"));
    assert_eq!(call["from_number"], json!("+14155550100"));
    assert_eq!(call["to_number"], json!("+14155550123"));
    assert_eq!(call["phone_number"], json!("+14155550123"));
    assert_eq!(call["max_duration_secs"], json!(120));
    assert_eq!(call["join_timeout_secs"], json!(30));
    assert_eq!(call["call_settings"]["recording_enabled"], json!(false));
    assert_eq!(call["call_settings"]["transcription_enabled"], json!(true));
    assert_eq!(call["variables"], json!({"name": "Ada", "time": "9:00"}));
    assert!(call.get("rendered_prompt").is_none());

    let org = api.org_of(&api.key).await;
    let stored = api.state.store.get_call(&org, &id).await.expect("stored");
    assert_eq!(
        stored.rendered_prompt.as_deref(),
        Some("You remind Ada of the  at 9:00.")
    );
    assert_eq!(stored.rendered_greeting.as_deref(), Some("Hello Ada"));

    let read = api.get(&format!("{CALLS}/{id}")).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.data()["id"], json!(id));
    let filtered = api
        .get(&format!("{CALLS}?agent_id={agent}&direction=outbound"))
        .await;
    assert_eq!(filtered.body["pagination"]["total"], json!(1));
    let none = api.get(&format!("{CALLS}?direction=inbound")).await;
    assert_eq!(none.body["pagination"]["total"], json!(0));
    let bad = api
        .get(&format!("{CALLS}?status=sleeping&direction=up"))
        .await;
    let fields = &bad.body["error"]["details"]["fields"];
    assert!(
        fields.get("status").is_some() && fields.get("direction").is_some(),
        "{fields}"
    );

    // The carrier never answers: hanging up cancels the call.
    let hangup = api.post(&format!("{CALLS}/{id}/hangup"), json!({})).await;
    assert_eq!(hangup.status, StatusCode::ACCEPTED, "{}", hangup.body);
    assert_eq!(hangup.data()["id"], json!(id));
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        api.state.engine.wait_idle(),
    )
    .await
    .expect("the cancelled call ends");
    let ended = api.get(&format!("{CALLS}/{id}")).await;
    assert_eq!(ended.data()["status"], json!("cancelled"), "{}", ended.body);
    assert_eq!(ended.data()["outcome"], json!("cancelled"));
    assert!(ended.data()["sip_call_id"].is_string());
    assert!(ended.data()["ended_at"].is_string());
    let again = api.post(&format!("{CALLS}/{id}/hangup"), json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.code(), "call_already_ended");
}

#[tokio::test]
async fn a_node_at_max_calls_refuses_the_next_call_503_unavailable() {
    let api = TestApi::with_config(|config| config.node.max_calls = 1).await;
    let (agent, _trunk) = ready(&api).await;
    let call = json!({"agent_id": agent, "phone_number": "+14155550123"});
    let first = api.post(CALLS, call.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let second = api.post(CALLS, call).await;
    assert_eq!(
        second.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        second.body
    );
    assert_eq!(second.code(), "unavailable");
    assert!(
        second.body["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("max_calls")),
        "{}",
        second.body
    );
    assert!(second.headers.contains_key("retry-after"));
    let listed = api.get(CALLS).await;
    assert_eq!(
        listed.body["pagination"]["total"],
        json!(1),
        "the refused call left no record"
    );
}

#[tokio::test]
async fn hangup_of_unknown_or_finished_calls() {
    let api = TestApi::start().await;
    let missing = api
        .post(&format!("{CALLS}/call_missing/hangup"), json!({}))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.code(), "call_not_found");
    let org = api.org_of(&api.key).await;
    let call = finished_call(&org, None);
    api.state.store.insert_call(&call).await.expect("insert");
    let ended = api
        .post(&format!("{CALLS}/{}/hangup", call.id), json!({}))
        .await;
    assert_eq!(ended.status, StatusCode::CONFLICT);
    assert_eq!(ended.code(), "call_already_ended");
}

#[tokio::test]
async fn recordings_are_served_or_404() {
    let api = TestApi::start().await;
    let missing = api.get(&format!("{CALLS}/call_missing/recording")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.code(), "call_not_found");

    let org = api.org_of(&api.key).await;
    let silent = finished_call(&org, None);
    api.state.store.insert_call(&silent).await.expect("insert");
    let reply = api.get(&format!("{CALLS}/{}/recording", silent.id)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "recording_not_found");

    // Recorded, but the file is gone.
    let lost = finished_call(&org, Some(()));
    api.state.store.insert_call(&lost).await.expect("insert");
    let reply = api.get(&format!("{CALLS}/{}/recording", lost.id)).await;
    assert_eq!(reply.code(), "recording_not_found");

    let recorded = finished_call(&org, Some(()));
    api.state
        .store
        .insert_call(&recorded)
        .await
        .expect("insert");
    let dir = &api.state.config.recordings.dir;
    std::fs::create_dir_all(dir).expect("recordings dir");
    let wav = b"RIFF\x24\x00\x00\x00WAVEfmt fake-but-bytes".repeat(5000);
    std::fs::write(dir.join(format!("{}.wav", recorded.id)), &wav).expect("write");
    let reply = api.get(&format!("{CALLS}/{}/recording", recorded.id)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "audio/wav");
    assert_eq!(reply.bytes, wav);

    // Another organisation cannot fetch it.
    let other = api
        .send(
            axum::http::Method::GET,
            &format!("{CALLS}/{}/recording", recorded.id),
            Some(&api.other_key),
            None,
            &[],
        )
        .await;
    assert_eq!(other.code(), "call_not_found");
}

/// An ended inbound call record, with a recording URL when `recorded` is given.
#[tokio::test]
async fn recordings_answer_range_requests_so_players_can_seek() {
    let api = TestApi::start().await;
    let org = api.org_of(&api.key).await;
    let call = finished_call(&org, Some(()));
    api.state.store.insert_call(&call).await.expect("insert");
    let dir = &api.state.config.recordings.dir;
    std::fs::create_dir_all(dir).expect("recordings dir");
    let wav: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join(format!("{}.wav", call.id)), &wav).expect("write");
    let path = format!("{CALLS}/{}/recording", call.id);
    let ranged = |range: &'static str| {
        let api = &api;
        let path = path.clone();
        async move {
            api.send(
                axum::http::Method::GET,
                &path,
                Some(&api.key),
                None,
                &[("range", range)],
            )
            .await
        }
    };

    let whole = api.get(&path).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.headers["accept-ranges"], "bytes");
    assert_eq!(whole.bytes, wav);

    let head = ranged("bytes=0-99").await;
    assert_eq!(head.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(head.headers["content-range"], "bytes 0-99/10000");
    assert_eq!(head.headers["content-type"], "audio/wav");
    assert_eq!(head.bytes, &wav[..100]);

    let tail = ranged("bytes=9000-").await;
    assert_eq!(tail.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail.headers["content-range"], "bytes 9000-9999/10000");
    assert_eq!(tail.bytes, &wav[9000..]);

    let suffix = ranged("bytes=-16").await;
    assert_eq!(suffix.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(suffix.bytes, &wav[10_000 - 16..]);

    let outside = ranged("bytes=20000-").await;
    assert_eq!(outside.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(outside.code(), "range_not_satisfiable");
    assert_eq!(outside.headers["content-range"], "bytes */10000");
}

fn finished_call(org: &str, recorded: Option<()>) -> Call {
    let id = call_control::ids::new_id(call_control::ids::CALL);
    let now = Utc::now();
    Call {
        recording_url: recorded.map(|()| format!("/api/public/v1/calls/{id}/recording")),
        id,
        org_id: org.to_owned(),
        agent_id: "agt_x".into(),
        status: CallStatus::Ended,
        outcome: Some(CallOutcome::CallerHangup),
        direction: CallDirection::Inbound,
        phone_number: "+14155550123".into(),
        from_number: "+14155550123".into(),
        to_number: "+14155550100".into(),
        variables: BTreeMap::new(),
        call_settings: CallSettings::default(),
        max_duration_secs: 1800,
        join_timeout_secs: 30,
        sip_call_id: Some("abc@127.0.0.1".into()),
        sip_final_code: Some(200),
        q850_cause: None,
        end_reason: Some("bye".into()),
        error_message: None,
        duration_seconds: Some(3.5),
        transcript: Vec::new(),
        media_stats: None,
        node_id: None,
        rendered_prompt: None,
        rendered_greeting: None,
        created_at: now,
        started_at: Some(now),
        answered_at: Some(now),
        ended_at: Some(now),
        updated_at: now,
    }
}
