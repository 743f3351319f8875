//! Guards `DELETE /agents/{id}` keeping every record's `agent_id` pointing at an agent that
//! exists: an agent that calls name is archived (status `archived`, readable by id, hidden from
//! lists unless `?include_archived=true`, refusing edits, new calls and test runs, number
//! assignments, and inbound calls to its numbers over real SIP); an agent that nothing names is
//! deleted.

mod api_support;

use std::net::SocketAddr;

use api_support::{id_of, refused_tcp_port, TestApi};
use axum::http::StatusCode;
use serde_json::{json, Value};
use sip_stack::message::TransportKind;
use sip_stack::sdp::{build_offer, Codec, Direction};
use sip_stack::transport::TransportConfig;
use sip_stack::ua::{CallEvent, CallHandle, OutgoingCall, UaConfig, UserAgent};

const AGENTS: &str = "/api/public/v1/agents";

/// A UDP user agent on loopback, playing the carrier that sends inbound calls.
async fn caller() -> UserAgent {
    let (ua, _incoming) = UserAgent::start(UaConfig {
        transport: TransportConfig {
            udp: Some("127.0.0.1:0".parse().expect("literal")),
            tcp: None,
            ..Default::default()
        },
        ..UaConfig::default()
    })
    .await
    .expect("caller starts");
    assert!(ua.local_addr(TransportKind::Udp).is_some());
    ua
}

/// Sends an INVITE for `number` to the service's SIP listener.
async fn dial(caller: &UserAgent, service: SocketAddr, number: &str) -> CallHandle {
    let offer = build_offer(
        "127.0.0.1".parse().expect("ip"),
        41_590,
        &[Codec::pcmu()],
        Direction::SendRecv,
        1,
        1,
    )
    .to_string();
    let outgoing = OutgoingCall::to(
        &format!("sip:{number}@{service}"),
        "sip:+15550009999@127.0.0.1",
    )
    .await
    .expect("target")
    .with_sdp(offer);
    caller.invite(outgoing).await.expect("INVITE sent")
}

/// The final answer to an INVITE: 200 (then hung up) or the error code.
async fn final_answer(mut leg: CallHandle) -> u16 {
    loop {
        match leg.next_event().await {
            Some(CallEvent::Answered { .. }) => {
                leg.hangup();
                while let Some(event) = leg.next_event().await {
                    if event.is_terminal() {
                        break;
                    }
                }
                return 200;
            }
            Some(CallEvent::Failed { code, .. }) => return code,
            Some(_) => {}
            None => return 0,
        }
    }
}

#[tokio::test]
async fn an_agent_with_calls_is_archived_and_refuses_new_ones() {
    let api = TestApi::start().await;
    // The carrier refuses connections: the outbound call fails at once, but it exists.
    let trunk = api.trunk_over(refused_tcp_port(), "tcp").await;
    let agent = api.agent("active", "hi").await;
    let number = api.number("+14155550100", &trunk, Some(&agent)).await;
    let call = api
        .post(
            "/api/public/v1/calls",
            json!({"agent_id": agent, "phone_number": "+14155550123"}),
        )
        .await;
    assert_eq!(call.status, StatusCode::CREATED, "{}", call.body);

    let path = format!("{AGENTS}/{agent}");
    let removed = api.delete(&path).await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.body);
    assert_eq!(
        removed.data(),
        &json!({"id": agent, "deleted": false, "archived": true})
    );

    // Still readable, so the call's agent_id resolves.
    let read = api.get(&path).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.data()["status"], json!("archived"));
    let call_agent = api
        .get(&format!("/api/public/v1/calls/{}", id_of(&call)))
        .await
        .data()["agent_id"]
        .clone();
    assert_eq!(
        api.get(&format!("{AGENTS}/{}", call_agent.as_str().expect("id")))
            .await
            .status,
        StatusCode::OK
    );

    // Hidden from lists unless asked for.
    let listed = api.get(AGENTS).await;
    assert_eq!(listed.body["pagination"]["total"], json!(0));
    let all = api.get(&format!("{AGENTS}?include_archived=true")).await;
    assert_eq!(all.body["pagination"]["total"], json!(1));
    assert_eq!(all.data()[0]["id"], json!(agent));
    assert_eq!(all.data()[0]["status"], json!("archived"));
    let bad = api.get(&format!("{AGENTS}?include_archived=yes")).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body["error"]["details"]["fields"]["include_archived"].is_string());

    // Only DELETE archives: a PATCH to `archived` is refused.
    let other = api.agent("active", "hi").await;
    let to_archived = api
        .patch(&format!("{AGENTS}/{other}"), json!({"status": "archived"}))
        .await;
    assert_eq!(to_archived.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        to_archived.body["error"]["details"]["fields"]["status"],
        json!("\"archived\" is not one of draft, active, paused")
    );

    // Read-only: no edit, not even back to active.
    let patched = api.patch(&path, json!({"status": "active"})).await;
    assert_eq!(patched.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(patched.code(), "agent_archived");
    assert_eq!(api.get(&path).await.data()["status"], json!("archived"));

    // No new outbound calls.
    let refused = api
        .post(
            "/api/public/v1/calls",
            json!({"agent_id": agent, "phone_number": "+14155550124"}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.code(), "agent_not_active");
    assert_eq!(
        refused.body["error"]["details"]["status"],
        json!("archived")
    );

    // No test runs either.
    let run = api
        .post(
            "/api/public/v1/test-calls",
            json!({"target_type": "agent", "target_id": agent, "mode": "bot",
                   "scenario_prompt": "Hello", "consent_to_charge": true}),
        )
        .await;
    assert_eq!(run.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", run.body);
    assert_eq!(run.code(), "agent_not_active");

    // No new numbers assigned to it; the number it had keeps pointing at it.
    let assign = api
        .post(
            "/api/public/v1/phone-numbers",
            json!({"number": "+14155550101", "trunk_id": trunk, "agent_id": agent}),
        )
        .await;
    assert_eq!(assign.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(assign.body["error"]["details"]["fields"]["agent_id"].is_string());
    let kept = api
        .get(&format!("/api/public/v1/phone-numbers/{number}"))
        .await;
    assert_eq!(kept.data()["agent_id"], json!(agent));

    // Deleting again changes nothing.
    let again = api.delete(&path).await;
    assert_eq!(again.data()["archived"], json!(true));
}

#[tokio::test]
async fn inbound_calls_to_an_archived_agents_number_are_refused() {
    let api = TestApi::start().await;
    let trunk = api.trunk(5060).await; // allows 127.0.0.0/8
    let agent = api.agent("active", "hi").await;
    api.number("+14155550100", &trunk, Some(&agent)).await;
    let caller = caller().await;
    let service = api.state.engine.sip_addr();

    // While active, the number is answered (and the call recorded).
    assert_eq!(
        final_answer(dial(&caller, service, "+14155550100").await).await,
        200
    );
    api.state.engine.wait_idle().await;
    let calls = api.get("/api/public/v1/calls").await;
    assert_eq!(calls.body["pagination"]["total"], json!(1));
    // An inbound call's settings are all values of the schema's types: no null.
    let settings = &calls.data()[0]["call_settings"];
    let nulls: Vec<&String> = settings
        .as_object()
        .expect("call_settings")
        .iter()
        .filter(|(_, value)| value.is_null())
        .map(|(name, _)| name)
        .collect();
    assert!(
        nulls.is_empty(),
        "null call_settings {nulls:?} in {settings}"
    );
    assert_eq!(settings["max_duration"], json!("1800s"));
    assert_eq!(settings["join_timeout"], json!("30s"));

    let removed = api.delete(&format!("{AGENTS}/{agent}")).await;
    assert_eq!(removed.data()["archived"], json!(true));
    assert_eq!(
        final_answer(dial(&caller, service, "+14155550100").await).await,
        480,
        "an archived agent answers no calls"
    );
    api.state.engine.wait_idle().await;
    let calls = api.get("/api/public/v1/calls").await;
    assert_eq!(
        calls.body["pagination"]["total"],
        json!(1),
        "{}",
        calls.body
    );
}

#[tokio::test]
async fn an_agent_that_nothing_names_is_deleted() {
    let api = TestApi::start().await;
    let trunk = api.trunk(5060).await;
    let agent = api.agent("draft", "hi").await;
    let number = api.number("+14155550100", &trunk, Some(&agent)).await;
    let path = format!("{AGENTS}/{agent}");
    let removed = api.delete(&path).await;
    assert_eq!(
        removed.data(),
        &json!({"id": agent, "deleted": true, "archived": false})
    );
    assert_eq!(api.get(&path).await.code(), "agent_not_found");
    let all = api.get(&format!("{AGENTS}?include_archived=true")).await;
    assert_eq!(all.body["pagination"]["total"], json!(0));
    let unassigned = api
        .get(&format!("/api/public/v1/phone-numbers/{number}"))
        .await;
    assert_eq!(unassigned.data()["agent_id"], Value::Null);
    assert_eq!(api.delete(&path).await.code(), "agent_not_found");
}
