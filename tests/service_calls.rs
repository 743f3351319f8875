//! End to end: the real dialcore service (its library on free loopback ports,
//! a temporary database) placing and answering calls with SIPp as the
//! carrier, over real SIP and RTP.
//!
//! Guards the call lifecycle of DESIGN.md: max_duration (BYE) with media,
//! stats and a playable recording; join_timeout (CANCEL, no_answer); busy;
//! a trunk that challenges with 407; inbound calls answered by the echo
//! agent and hung up by the caller; inbound calls refused 404 (a known carrier, a number we
//! lack) and 403 (a source in no trunk's networks, whatever the number).
//! And failures that say what happened, at once: a TCP trunk nobody listens
//! on (`trunk_unreachable` with the OS error), a UDP trunk that swallows the
//! INVITE (`trunk_no_response`), a hang-up of a ringing call (`cancelled`
//! at once, over on the answer to the CANCEL), and an INVITE arriving while
//! the store fails (503 with Retry-After).

#[path = "support/service.rs"]
mod service;
#[path = "support/sipp.rs"]
mod sipp;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use service::TestService;

const CALL_DONE: Duration = Duration::from_secs(30);

/// A timestamp field of a call object.
fn stamp(call: &Value, field: &str) -> DateTime<Utc> {
    call[field]
        .as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .unwrap_or_else(|| panic!("{field} missing: {call}"))
        .with_timezone(&Utc)
}

/// How long the call lasted from its INVITE to its end, by its own record.
fn signalling_time(call: &Value) -> Duration {
    (stamp(call, "ended_at") - stamp(call, "started_at"))
        .to_std()
        .expect("ended after it started")
}

async fn carrier(
    scenario: &str,
    tweak: impl FnOnce(sipp::Sipp) -> sipp::Sipp + Send + 'static,
) -> sipp::SippProcess {
    sipp::one_call_server(scenario, sipp::Transport::Udp, tweak).await
}

async fn run_caller(sipp: sipp::Sipp) -> sipp::SippOutcome {
    sipp::require_sipp();
    tokio::task::spawn_blocking(move || sipp.run())
        .await
        .expect("SIPp thread")
        .expect("SIPp ran")
}

/// One SIPp call to `number` that must be refused as `scenario` expects.
async fn expect_refusal(svc: &TestService, scenario: &str, number: &str) {
    run_caller(
        sipp::Sipp::client(sipp::Scenario::file(scenario), svc.sip)
            .service(number)
            .calls(1),
    )
    .await
    .assert_success();
}

async fn place(svc: &TestService, agent: &str, settings: serde_json::Value) -> String {
    let (status, body) = svc
        .post(
            "/calls",
            json!({
                "agent_id": agent,
                "phone_number": "+15551234567",
                "call_settings": settings,
                "variables": {"name": "Ada", "topic": "billing"},
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["data"]["status"], "queued", "{body}");
    body["data"]["id"].as_str().expect("call id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_call_with_audio_is_ended_by_max_duration_and_recorded() {
    let sipp = carrier("service/carrier_answer_media.xml", |s| s).await;
    let svc = TestService::start().await;
    let agent = svc
        .echo_agent_with_number(sipp.address(), "+15550001111")
        .await;
    let call_id = place(&svc, &agent.id, json!({"max_duration": "3s"})).await;

    let call = svc.wait_terminal(&call_id, CALL_DONE).await;
    assert_eq!(call["status"], "ended", "{call}");
    assert_eq!(call["outcome"], "max_duration", "{call}");
    assert_eq!(call["direction"], "outbound");
    assert_eq!(call["from_number"], "+15550001111");
    assert_eq!(call["sip_final_code"], 200, "{call}");
    assert!(call["sip_call_id"].is_string(), "{call}");
    for stamp in ["created_at", "started_at", "answered_at", "ended_at"] {
        assert!(call[stamp].is_string(), "{stamp} missing: {call}");
    }
    let duration = call["duration_seconds"].as_f64().expect("duration");
    assert!(
        (2.8..4.0).contains(&duration),
        "max_duration 3 s, lasted {duration}"
    );
    let stats = &call["media_stats"];
    assert_eq!(stats["codec"], "PCMA", "{stats}");
    assert!(
        stats["packets_received"].as_u64().unwrap_or(0) > 50,
        "{stats}"
    );
    assert!(stats["packets_sent"].as_u64().unwrap_or(0) > 50, "{stats}");
    assert!(stats["mos"].as_f64().unwrap_or(0.0) > 3.5, "{stats}");

    let reader = svc.recording(&call).await;
    let spec = reader.spec();
    let seconds = reader.duration() as f64 / spec.sample_rate as f64;
    assert!((2.5..4.0).contains(&seconds), "recording of {seconds} s");
    let samples: Vec<i16> = reader
        .into_samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    let caller_energy: i64 = samples.iter().step_by(2).map(|&s| (s as i64).abs()).sum();
    assert!(caller_energy > 0, "the caller's speech is in the recording");

    sipp::finish(sipp).await.assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_call_ringing_forever_is_cancelled_at_join_timeout() {
    let sipp = carrier("uas_ring_forever.xml", |s| s).await;
    let svc = TestService::start().await;
    let agent = svc
        .echo_agent_with_number(sipp.address(), "+15550001111")
        .await;
    let started = std::time::Instant::now();
    let call_id = place(&svc, &agent.id, json!({"join_timeout": "2s"})).await;
    let call = svc.wait_terminal(&call_id, CALL_DONE).await;
    assert_eq!(call["status"], "failed", "{call}");
    assert_eq!(
        call["outcome"], "no_answer",
        "a callee that rang is no_answer: {call}"
    );
    assert_eq!(call["end_reason"], "join_timeout", "{call}");
    assert_eq!(call["sip_final_code"], 487, "{call}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(6),
        "{elapsed:?}"
    );
    sipp::finish(sipp).await.assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_call_to_a_busy_line_fails_busy() {
    let sipp = carrier("uas_busy.xml", |s| s).await;
    let svc = TestService::start().await;
    let agent = svc
        .echo_agent_with_number(sipp.address(), "+15550001111")
        .await;
    let call_id = place(&svc, &agent.id, json!({})).await;
    let call = svc.wait_terminal(&call_id, CALL_DONE).await;
    assert_eq!(call["status"], "failed", "{call}");
    assert_eq!(call["outcome"], "busy", "{call}");
    assert_eq!(call["sip_final_code"], 486, "{call}");
    sipp::finish(sipp).await.assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_call_through_a_trunk_that_challenges_is_authenticated() {
    let sipp = carrier("uas_auth_407.xml", |s| s).await;
    let svc = TestService::start().await;
    let agent = svc
        .echo_agent_with_number(sipp.address(), "+15550001111")
        .await;
    let (status, body) = svc
        .request(
            reqwest::Method::PATCH,
            &format!("/trunks/{}", agent.trunk_id),
            Some(json!({"username": "dialcore", "password": "secret"})),
            Some(&svc.key),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["has_password"], true, "{body}");
    assert!(
        body["data"].get("password").is_none(),
        "password is write-only: {body}"
    );
    // Encrypted at rest, decrypted for the call below to authenticate with it.
    let stored = svc.stored("SELECT password FROM trunks").await;
    assert!(
        stored
            .iter()
            .all(|value| value.starts_with("dcs1:") && !value.contains("secret")),
        "{stored:?}"
    );
    let call_id = place(&svc, &agent.id, json!({"max_duration": "1s"})).await;
    let call = svc.wait_terminal(&call_id, CALL_DONE).await;
    assert_eq!(call["status"], "ended", "{call}");
    assert_eq!(call["outcome"], "max_duration", "{call}");
    let outcome = sipp::finish(sipp).await;
    outcome.assert_success();
    let header = &outcome.proxy_authorizations()[0];
    let authorization: sip_stack::auth::Authorization = header.parse().expect("digest");
    assert_eq!(
        authorization.response,
        authorization.expected_response("secret", "INVITE")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_call_is_answered_by_the_echo_agent_until_the_caller_hangs_up() {
    let svc = TestService::start().await;
    svc.loopback_agent("+15550002222", json!({"type": "echo"}))
        .await;
    let outcome = run_caller(
        sipp::Sipp::client(sipp::Scenario::file("service/caller_media.xml"), svc.sip)
            .service("+15550002222")
            .calls(1),
    )
    .await;
    outcome.assert_success();
    let call = svc.wait_for_call("direction=inbound", CALL_DONE).await;
    let call = svc
        .wait_terminal(call["id"].as_str().expect("id"), CALL_DONE)
        .await;
    assert_eq!(call["status"], "ended", "{call}");
    assert_eq!(call["outcome"], "caller_hangup", "{call}");
    assert_eq!(call["to_number"], "+15550002222", "{call}");
    let stats = &call["media_stats"];
    assert!(
        stats["packets_received"].as_u64().unwrap_or(0) > 30,
        "{stats}"
    );
    assert!(
        stats["packets_sent"].as_u64().unwrap_or(0) > 30,
        "the echo returned audio: {stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_call_to_an_unknown_number_gets_404() {
    let svc = TestService::start().await;
    // The caller is a carrier we know (a trunk allows loopback), calling a number we lack.
    svc.loopback_agent("+15550004444", json!({"type": "echo"}))
        .await;
    expect_refusal(&svc, "service/caller_rejected_404.xml", "+15559999999").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_call_from_outside_the_trunks_networks_gets_403() {
    let svc = TestService::start().await;
    svc.agent_with_number(
        "10.1.2.3:5060".parse().expect("addr"),
        "+15550003333",
        json!({"type": "echo"}),
        &["10.0.0.0/8"],
    )
    .await;
    expect_refusal(&svc, "service/caller_rejected_403.xml", "+15550003333").await;
    // A number we do not own gets the same answer: the source is checked first, so a
    // scanner cannot tell owned numbers from others.
    expect_refusal(&svc, "service/caller_rejected_403.xml", "+15559999999").await;
    let (_, calls) = svc.get("/calls").await;
    assert_eq!(
        calls["data"].as_array().map(Vec::len),
        Some(0),
        "no call record for a refused source: {calls}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_call_to_a_tcp_trunk_nobody_listens_on_fails_at_once_as_trunk_unreachable() {
    // A loopback port that was free a moment ago: connecting is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free TCP port");
    let svc = TestService::start().await;
    let agent = svc.echo_agent_with_number(closed, "+15550001111").await;
    let (status, body) = svc
        .request(
            reqwest::Method::PATCH,
            &format!("/trunks/{}", agent.trunk_id),
            Some(json!({"transport": "tcp"})),
            Some(&svc.key),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let call_id = place(&svc, &agent.id, json!({"join_timeout": "20s"})).await;
    let call = svc.wait_terminal(&call_id, CALL_DONE).await;
    assert_eq!(call["status"], "failed", "{call}");
    assert_eq!(call["outcome"], "error", "{call}");
    assert_eq!(call["end_reason"], "trunk_unreachable", "{call}");
    let error = call["error_message"].as_str().unwrap_or_default();
    assert!(
        error.to_ascii_lowercase().contains("refused"),
        "the OS error is on the record: {call}"
    );
    assert!(
        call["sip_final_code"].is_null(),
        "no SIP answer came: {call}"
    );
    let took = signalling_time(&call);
    assert!(
        took < Duration::from_secs(1),
        "failed at once, not after Timer B: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_call_to_a_udp_trunk_that_never_responds_is_trunk_no_response() {
    // A bound socket that takes the INVITE and never answers.
    let swallower = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("UDP socket");
    let trunk = swallower.local_addr().expect("bound");
    let svc = TestService::start().await;
    let agent = svc.echo_agent_with_number(trunk, "+15550001111").await;
    let call_id = place(&svc, &agent.id, json!({"join_timeout": "2s"})).await;
    let mut datagram = vec![0u8; 65_536];
    let (n, _) = tokio::time::timeout(CALL_DONE, swallower.recv_from(&mut datagram))
        .await
        .expect("the INVITE arrives")
        .expect("datagram");
    assert!(datagram[..n].starts_with(b"INVITE "), "swallowed an INVITE");
    let call = svc.wait_terminal(&call_id, CALL_DONE).await;
    assert_eq!(call["status"], "failed", "{call}");
    assert_eq!(call["outcome"], "error", "not a callee's no_answer: {call}");
    assert_eq!(call["end_reason"], "trunk_no_response", "{call}");
    let took = signalling_time(&call);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "over at the join timeout, with no teardown wait: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_up_a_ringing_call_shows_cancelled_at_once_and_ends_on_the_answer_to_the_cancel() {
    // The carrier answers the CANCEL at once and the INVITE (487) 3 s later.
    let sipp = carrier("uas_ring_slow_487.xml", |s| s).await;
    let svc = TestService::start().await;
    let agent = svc
        .echo_agent_with_number(sipp.address(), "+15550001111")
        .await;
    let call_id = place(&svc, &agent.id, json!({"join_timeout": "30s"})).await;
    let path = format!("/calls/{call_id}");
    svc.wait_status(&path, &["ringing"], Duration::from_millis(20), CALL_DONE)
        .await;
    let hung_up = Utc::now();
    let (status, body) = svc.post(&format!("{path}/hangup"), json!({})).await;
    assert!(status < 300, "hangup: {status} {body}");
    let shown = svc
        .wait_status(
            &path,
            &["cancelled", "failed", "ended"],
            Duration::from_millis(20),
            CALL_DONE,
        )
        .await;
    let seen = Utc::now();
    assert_eq!(shown["status"], "cancelled", "{shown}");
    assert!(
        (seen - hung_up).to_std().expect("later") < Duration::from_secs(1),
        "cancelled shows while the CANCEL is out, not when the 487 comes: {shown}"
    );
    // Over (ended_at, call.ended) on the 200 to the CANCEL, not at the 487.
    let call = loop {
        let (_, value) = svc.get(&path).await;
        if value["data"]["ended_at"].is_string() {
            break value["data"].clone();
        }
        assert!(
            (Utc::now() - hung_up).to_std().expect("later") < CALL_DONE,
            "never over: {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(call["status"], "cancelled", "{call}");
    assert_eq!(call["outcome"], "cancelled", "{call}");
    assert_eq!(call["end_reason"], "api_hangup", "{call}");
    let over = (stamp(&call, "ended_at") - hung_up)
        .to_std()
        .expect("ended after the hangup");
    assert!(
        over < Duration::from_secs(1),
        "terminal within 1 s of the answer to the CANCEL: {over:?}"
    );
    // The late 487 is still acknowledged.
    sipp::finish(sipp).await.assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_call_while_the_store_fails_gets_503_with_retry_after() {
    let svc = TestService::start().await;
    svc.loopback_agent("+15550004444", json!({"type": "echo"}))
        .await;
    // The database goes away under the running service.
    svc.handle.as_ref().expect("running").store.close().await;
    expect_refusal(&svc, "service/caller_rejected_503.xml", "+15550004444").await;
}
