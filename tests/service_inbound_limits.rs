//! End to end: an inbound call is admitted like an outbound one (issue 12). The real service
//! refuses, with SIPp as the caller over real SIP, an INVITE for a number whose
//! organisation cannot take the call: 402 Payment Required when its balance, less what its
//! live calls hold, does not cover a minute; 486 Busy Here when it already has `[api]
//! max_concurrent_calls_per_org` calls live (an outbound call still ringing counts). A
//! refused INVITE leaves no call record and holds nothing.

#[path = "support/service.rs"]
mod service;
#[path = "support/sipp.rs"]
mod sipp;

use std::time::Duration;

use serde_json::json;
use service::TestService;

const NUMBER: &str = "+15550004444";

async fn expect_refusal(svc: &TestService, scenario: &str) {
    sipp::require_sipp();
    let caller = sipp::Sipp::client(sipp::Scenario::file(scenario), svc.sip)
        .service(NUMBER)
        .calls(1);
    tokio::task::spawn_blocking(move || caller.run())
        .await
        .expect("SIPp thread")
        .expect("SIPp ran")
        .assert_success();
}

async fn calls(svc: &TestService) -> Vec<serde_json::Value> {
    let (status, body) = svc.get("/calls").await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_call_without_credit_gets_402() {
    // Half a minute of credit.
    let svc = TestService::start_with(|config| {
        config.credits.starting_balance_cents = 1;
        config.credits.per_minute_cents = 2;
    })
    .await;
    svc.loopback_agent(NUMBER, json!({"type": "echo"})).await;
    expect_refusal(&svc, "service/caller_rejected_402.xml").await;
    assert!(
        calls(&svc).await.is_empty(),
        "a refused INVITE stores no call"
    );
    let (_, organization) = svc.get("/organization").await;
    assert_eq!(organization["data"]["balance_cents"], json!(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_call_past_the_organisations_cap_gets_486() {
    let svc = TestService::start_with(|config| config.api.max_concurrent_calls_per_org = 1).await;
    let agent = svc.loopback_agent(NUMBER, json!({"type": "echo"})).await;
    // The organisation's one slot: an outbound call ringing at a carrier that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let (status, trunk) = svc
        .post(
            "/trunks",
            json!({"name": "silent", "host": "127.0.0.1",
                   "port": silent.local_addr().expect("address").port()}),
        )
        .await;
    assert_eq!(status, 201, "{trunk}");
    let (status, _) = svc
        .request(
            reqwest::Method::PATCH,
            &format!("/phone-numbers/{}", agent.number_id),
            Some(json!({"trunk_id": trunk["data"]["id"]})),
            Some(&svc.key),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    let (status, placed) = svc
        .post(
            "/calls",
            json!({"agent_id": agent.id, "phone_number": "+15551234567"}),
        )
        .await;
    assert_eq!(status, 201, "{placed}");
    let call_id = placed["data"]["id"].as_str().expect("id").to_owned();
    // Back on the loopback trunk, so that SIPp's INVITE passes the source check.
    let (status, _) = svc
        .request(
            reqwest::Method::PATCH,
            &format!("/phone-numbers/{}", agent.number_id),
            Some(json!({"trunk_id": agent.trunk_id})),
            Some(&svc.key),
            &[],
        )
        .await;
    assert_eq!(status, 200);

    expect_refusal(&svc, "service/caller_rejected_486.xml").await;
    assert_eq!(
        calls(&svc).await.len(),
        1,
        "a refused INVITE stores no call"
    );

    let (status, _) = svc
        .post(&format!("/calls/{call_id}/hangup"), json!({}))
        .await;
    assert_eq!(status, 202);
    let ended = svc.wait_terminal(&call_id, Duration::from_secs(30)).await;
    assert_eq!(ended["status"], json!("cancelled"), "{ended}");
}
