//! End-to-end test calls (issue 5): the real service with its REST API, the
//! test runner and the test bot, over real SIP and RTP on loopback.
//!
//! Each test starts its own service on free ports and drives it only through
//! the API: `POST /test-calls` and `/test-call-batches`, then polls the run
//! or batch until it is over and checks the records it produced.

#[path = "support/service.rs"]
mod service;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use service::TestService;

/// How long any one run may take in these tests (the bot hangs up by then).
const MAX_RUN_SECONDS: u32 = 20;

/// A scenario the echo agent answers: the bot speaks, waits for the echo of
/// its words, and hangs up.
const ECHO_SCENARIO: &str = "say Hello, I would like to book a table for two.\n\
                             expect_speech 5s\n\
                             wait 500ms\n\
                             hangup";

/// A carrier address nobody listens on: the agents' numbers need a trunk,
/// but test calls never use it.
fn nowhere() -> SocketAddr {
    "127.0.0.1:9".parse().expect("literal")
}

/// A service for test number `slot`, on RTP ports of its own (the tests of this file
/// run in parallel in one process).
async fn service(slot: u16) -> TestService {
    TestService::start_with(|config| configure(config, slot)).await
}

fn configure(config: &mut call_control::config::Config, slot: u16) {
    config.test_calls.max_run_seconds = MAX_RUN_SECONDS;
    config.credits.starting_balance_cents = 1_000_000;
    config.rtp.port_min = 50_000 + slot * 1_000;
    config.rtp.port_max = config.rtp.port_min + 999;
}

/// An active echo agent with the number `number`.
async fn echo_agent(svc: &TestService, number: &str) -> String {
    svc.agent_with_number(nowhere(), number, json!({"type": "echo"}), &[])
        .await
        .id
}

/// Creates a run and returns it.
async fn create_run(svc: &TestService, body: Value) -> Value {
    let mut body = body;
    body["consent_to_charge"] = json!(true);
    let (status, value) = svc.post("/test-calls", body).await;
    assert_eq!(status, 201, "POST /test-calls: {value}");
    value["data"].clone()
}

/// Polls the run `created` (as `POST /test-calls` answered) until it is over,
/// for at most a minute.
async fn wait_run(svc: &TestService, created: &Value) -> Value {
    let run_id = created["id"].as_str().expect("run id");
    let path = format!("/test-calls/{run_id}");
    svc.wait_status(
        &path,
        OVER,
        Duration::from_millis(100),
        Duration::from_secs(60),
    )
    .await
}

/// Polls a batch until it is over.
async fn wait_batch(svc: &TestService, batch_id: &str, within: Duration) -> Value {
    let path = format!("/test-call-batches/{batch_id}");
    svc.wait_status(&path, OVER, Duration::from_millis(200), within)
        .await
}

/// The statuses of a run or batch that is over.
const OVER: &[&str] = &["completed", "failed"];

async fn call(svc: &TestService, call_id: &str) -> Value {
    let (status, value) = svc.get(&format!("/calls/{call_id}")).await;
    assert_eq!(status, 200, "GET /calls/{call_id}: {value}");
    value["data"].clone()
}

fn number(value: &Value, what: &str) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {value}"))
}

/// A completed run against the echo agent: both legs recorded and linked,
/// measurements of a real pipeline.
async fn assert_echo_run(svc: &TestService, run: &Value, agent_direction: &str) {
    assert_eq!(run["status"], "completed", "{run}");
    assert!(run["error_message"].is_null(), "{run}");
    let m = &run["measurements"];
    let p50 = number(&m["response_latency_ms"]["p50"], "latency p50");
    assert!(
        (20.0..=600.0).contains(&p50),
        "echo latency reflects the pipeline (frames + jitter buffer): {p50} ms in {m}"
    );
    assert!(number(&m["mos"], "mos") > 3.5, "clean path: {m}");
    assert_eq!(m["one_way_audio"], false, "{m}");
    assert!(
        number(&m["packets_received"], "packets_received") > 25.0,
        "{m}"
    );
    assert!(number(&m["packets_sent"], "packets_sent") > 25.0, "{m}");
    assert_eq!(m["hangup_by"], "bot", "{m}");

    let agent_leg = call(svc, run["call_id"].as_str().expect("call_id")).await;
    let bot_leg = call(svc, run["sip_call_id"].as_str().expect("sip_call_id")).await;
    assert_ne!(agent_leg["id"], bot_leg["id"]);
    assert_eq!(agent_leg["agent_id"], run["agent_id"]);
    assert_eq!(bot_leg["agent_id"], run["agent_id"]);
    assert_eq!(agent_leg["direction"], agent_direction, "{agent_leg}");
    assert_ne!(bot_leg["direction"], agent_direction, "{bot_leg}");
    assert_eq!(agent_leg["status"], "ended", "{agent_leg}");
    assert_eq!(bot_leg["status"], "ended", "{bot_leg}");
    assert!(
        agent_leg["sip_call_id"].is_string() && bot_leg["sip_call_id"].is_string(),
        "both legs went over SIP"
    );
    assert!(
        number(
            &agent_leg["media_stats"]["packets_received"],
            "agent leg packets"
        ) > 25.0,
        "{agent_leg}"
    );
    assert!(
        number(
            &bot_leg["media_stats"]["packets_received"],
            "bot leg packets"
        ) > 25.0,
        "{bot_leg}"
    );
    assert!(number(&agent_leg["duration_seconds"], "duration") > 0.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_outbound_and_inbound_runs_against_the_echo_agent() {
    let svc = service(1).await;
    let agent = echo_agent(&svc, "+15557010001").await;
    let balance_before = balance(&svc).await;

    let outbound = create_run(
        &svc,
        json!({
            "target_type": "agent",
            "target_id": agent,
            "direction": "outbound",
            "mode": "sip",
            "scenario_prompt": ECHO_SCENARIO,
        }),
    )
    .await;
    assert_eq!(outbound["status"], "queued");
    let inbound = create_run(
        &svc,
        json!({
            "target_type": "agent",
            "target_id": agent,
            "direction": "inbound",
            "mode": "sip",
            "target_number": "+15557010001",
            "scenario_prompt": ECHO_SCENARIO,
        }),
    )
    .await;

    let outbound = wait_run(&svc, &outbound).await;
    assert_echo_run(&svc, &outbound, "outbound").await;
    let inbound = wait_run(&svc, &inbound).await;
    assert_echo_run(&svc, &inbound, "inbound").await;

    let agent_leg = call(&svc, inbound["call_id"].as_str().expect("call_id")).await;
    assert_eq!(agent_leg["to_number"], "+15557010001", "{agent_leg}");

    // Each run is charged its own price (both legs, the multiplier), once: the engine does
    // not charge the agent's leg by the minute on top.
    let defaults = call_control::config::Config::default();
    let mut expected = 0;
    for run in [&outbound, &inbound] {
        let leg = call(&svc, run["call_id"].as_str().expect("call_id")).await;
        expected += call_control::model::test_call_cost_cents(
            number(&leg["duration_seconds"], "duration"),
            defaults.credits.per_minute_cents,
            run["charge_multiplier"].as_u64().expect("multiplier") as u32,
            call_control::model::TestMode::Sip,
        );
    }
    assert!(expected > 0);
    let mut spent = 0;
    for _ in 0..50 {
        spent = balance_before - balance(&svc).await;
        if spent >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    spent = spent.max(balance_before - balance(&svc).await);
    assert_eq!(spent, expected, "charged the runs' price and nothing else");
    svc.stop().await;
}

async fn balance(svc: &TestService) -> i64 {
    let (status, org) = svc.get("/organization").await;
    assert_eq!(status, 200, "{org}");
    org["data"]["balance_cents"].as_i64().expect("balance")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_network_profile_shows_in_the_measurements() {
    let svc = service(2).await;
    let agent = echo_agent(&svc, "+15557020001").await;
    // Long enough for a few hundred packets each way.
    let scenario = "say Hello, I would like to book a table for two.\n\
                    expect_speech 5s\n\
                    say Tomorrow at eight, please, by the window if you can.\n\
                    expect_speech 5s\n\
                    wait 2s\n\
                    hangup";
    let mut created = Vec::new();
    for profile in ["clean", "lossy"] {
        let run = create_run(
            &svc,
            json!({
                "target_type": "agent",
                "target_id": agent,
                "direction": "outbound",
                "mode": "sip",
                "network_profile": profile,
                "scenario_prompt": scenario,
            }),
        )
        .await;
        assert_eq!(run["network_profile"], profile);
        created.push(run);
    }
    let clean = wait_run(&svc, &created[0]).await;
    let lossy = wait_run(&svc, &created[1]).await;
    assert_eq!(clean["status"], "completed", "{clean}");
    assert_eq!(lossy["status"], "completed", "{lossy}");
    let loss = |run: &Value| number(&run["measurements"]["loss_percent"], "loss_percent");
    let mos = |run: &Value| number(&run["measurements"]["mos"], "mos");
    assert!(
        loss(&lossy) > loss(&clean),
        "lossy {} % vs clean {} %\nlossy {lossy}\nclean {clean}",
        loss(&lossy),
        loss(&clean)
    );
    assert!(
        mos(&lossy) < mos(&clean),
        "lossy {} vs clean {}",
        mos(&lossy),
        mos(&clean)
    );
    assert_eq!(lossy["measurements"]["network_profile"], "lossy");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_ten_sip_runs_completes_with_rotating_scenarios() {
    let svc = service(3).await;
    let agent = echo_agent(&svc, "+15557030001").await;
    let prompts = [
        "say Hello, I would like to book a table.\nexpect_speech 5s\nhangup",
        "say Good morning, is the shop open today?\nexpect_speech 5s\nhangup",
        "say Hi, I am calling about my order.\nexpect_speech 5s\nhangup",
    ];
    let (status, value) = svc
        .post(
            "/test-call-batches",
            json!({
                "target_type": "agent",
                "target_id": agent,
                "direction": "outbound",
                "mode": "sip",
                "run_count": 10,
                "stagger_seconds": 1,
                "scenario_prompts": prompts,
                "thresholds": {"response_latency_p95_ms": 2000, "mos_min": 3.0},
                "consent_to_charge": true,
            }),
        )
        .await;
    assert_eq!(status, 201, "{value}");
    let created = &value["data"];
    assert_eq!(created["status"], "in_progress");
    assert_eq!(created["total_runs"], 10);
    let run_ids: Vec<String> = created["run_ids"]
        .as_array()
        .expect("run_ids")
        .iter()
        .map(|id| id.as_str().expect("id").to_owned())
        .collect();
    assert_eq!(run_ids.len(), 10);

    let batch = wait_batch(
        &svc,
        created["id"].as_str().expect("id"),
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(batch["total_runs"], 10);
    assert_eq!(batch["completed_runs"], 10, "{batch}");
    assert_eq!(batch["failed_runs"], 0, "{batch}");
    assert!(batch["completed_at"].is_string());
    let mut started = Vec::new();
    for (index, run_id) in run_ids.iter().enumerate() {
        let (status, value) = svc.get(&format!("/test-calls/{run_id}")).await;
        assert_eq!(status, 200);
        let run = &value["data"];
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["batch_id"], batch["id"]);
        assert_eq!(
            run["scenario_prompt"],
            prompts[index % prompts.len()],
            "rotation"
        );
        assert!(run["call_id"].is_string() && run["sip_call_id"].is_string());
        let agent_leg = call(&svc, run["call_id"].as_str().expect("call_id")).await;
        let bot_leg = call(&svc, run["sip_call_id"].as_str().expect("sip_call_id")).await;
        assert!(
            run["measurements"]["response_latency_ms"]["p50"].is_number(),
            "{run}\nagent leg {agent_leg}\nbot leg {bot_leg}"
        );
        assert_eq!(
            run["measurements"]["passed"], true,
            "{run}\nagent leg {agent_leg}\nbot leg {bot_leg}"
        );
        started.push(run["started_at"].as_str().expect("started_at").to_owned());
    }
    let aggregate = &batch["aggregate"];
    assert!(aggregate.is_object(), "{batch}");
    assert_eq!(aggregate["passed"], true, "{aggregate}");
    assert_eq!(aggregate["measured_runs"], 10, "{aggregate}");

    // RFC 3339 times in UTC sort as text: the runs started in order, a
    // second apart.
    assert!(
        started.windows(2).all(|pair| pair[0] < pair[1]),
        "staggered starts in run order: {started:?}"
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_agent_hears_the_bots_dtmf_and_answers() {
    let svc = service(4).await;
    let wait_digit = json!({"action": "wait_for_dtmf", "timeout_ms": 15000});
    let agent = svc
        .agent_with_number(
            nowhere(),
            "+15557040001",
            json!({"type": "scripted", "steps": [
                wait_digit, wait_digit, wait_digit, wait_digit,
                {"action": "dtmf", "digits": "9"},
                {"action": "say", "text": "Thank you, your code is accepted."},
            ]}),
            &[],
        )
        .await
        .id;
    let run = create_run(
        &svc,
        json!({
            "target_type": "agent",
            "target_id": agent,
            "direction": "inbound",
            "mode": "sip",
            "target_number": "+15557040001",
            "scenario_prompt": "wait 500ms\ndtmf 1234\nexpect_speech 8s\nwait 500ms\nhangup",
        }),
    )
    .await;
    let run = wait_run(&svc, &run).await;
    assert_eq!(run["status"], "completed", "{run}");
    let m = &run["measurements"];
    assert_eq!(m["dtmf_sent"], "1234", "{m}");
    assert_eq!(m["dtmf_heard"], "9", "the agent answered with a digit: {m}");
    let agent_leg = call(&svc, run["call_id"].as_str().expect("call_id")).await;
    let heard: Vec<&str> = agent_leg["transcript"]
        .as_array()
        .expect("transcript")
        .iter()
        .filter_map(|entry| entry["text"].as_str())
        .filter(|text| text.starts_with("DTMF"))
        .collect();
    assert_eq!(
        heard,
        ["DTMF 1", "DTMF 2", "DTMF 3", "DTMF 4"],
        "{agent_leg}"
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_mode_joins_the_agent_in_process() {
    let svc = service(5).await;
    let agent = echo_agent(&svc, "+15557050001").await;
    let run = create_run(
        &svc,
        json!({
            "target_type": "agent",
            "target_id": agent,
            "direction": "outbound",
            "mode": "bot",
            "scenario_prompt": ECHO_SCENARIO,
        }),
    )
    .await;
    let run = wait_run(&svc, &run).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert!(
        run["sip_call_id"].is_null(),
        "no bot leg without SIP: {run}"
    );
    let p50 = number(&run["measurements"]["response_latency_ms"]["p50"], "p50");
    assert!((0.0..=600.0).contains(&p50), "{run}");
    let agent_leg = call(&svc, run["call_id"].as_str().expect("call_id")).await;
    assert_eq!(agent_leg["status"], "ended");
    assert!(agent_leg["sip_call_id"].is_null(), "{agent_leg}");
    svc.stop().await;
}

/// Issue 11: a run asks for neither scenario nor mode, as the copied API allows: a `bot`
/// run of the bot's default scenario, which completes; a `sip` run without a scenario
/// completes over real SIP too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_without_a_scenario_play_the_default_one() {
    let svc = service(7).await;
    let agent = echo_agent(&svc, "+15557070001").await;
    let plain = create_run(&svc, json!({"target_type": "agent", "target_id": agent})).await;
    assert_eq!(plain["mode"], "bot", "{plain}");
    assert!(plain["scenario_prompt"].is_null(), "{plain}");
    let sip = create_run(
        &svc,
        json!({"target_type": "agent", "target_id": agent, "mode": "sip"}),
    )
    .await;

    for created in [&plain, &sip] {
        let run = wait_run(&svc, created).await;
        assert_eq!(run["status"], "completed", "{run}");
        assert!(run["error_message"].is_null(), "{run}");
        assert!(run["scenario_prompt"].is_null(), "{run}");
        let m = &run["measurements"];
        assert_eq!(m["utterances"], 1, "the default scenario's one line: {m}");
        assert_eq!(m["hangup_by"], "bot", "the default scenario hangs up: {m}");
        number(&m["response_latency_ms"]["p50"], "the echo answered");
        let agent_leg = call(&svc, run["call_id"].as_str().expect("call_id")).await;
        assert_eq!(agent_leg["status"], "ended", "{agent_leg}");
    }
    let sip = wait_run(&svc, &sip).await;
    assert!(sip["sip_call_id"].is_string(), "both legs over SIP: {sip}");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_during_a_batch_fails_the_runs_in_flight() {
    let svc = service(6).await;
    let agent = echo_agent(&svc, "+15557060001").await;
    let (status, value) = svc
        .post(
            "/test-call-batches",
            json!({
                "target_type": "agent",
                "target_id": agent,
                "direction": "outbound",
                "mode": "sip",
                "run_count": 4,
                "stagger_seconds": 5,
                "scenario_prompt": "say Hello there.\nwait 15s\nhangup",
                "consent_to_charge": true,
            }),
        )
        .await;
    assert_eq!(status, 201, "{value}");
    let batch_id = value["data"]["id"].as_str().expect("id").to_owned();
    let first = value["data"]["run_ids"][0]
        .as_str()
        .expect("run")
        .to_owned();
    // Mid-batch: the first run is on the line, the others wait their turn.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, value) = svc.get(&format!("/test-calls/{first}")).await;
        if value["data"]["status"] == "in_progress" && value["data"]["call_id"].is_string() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "first run never started: {value}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dir = svc.stop().await;
    let mut config = service::config_in(dir.path());
    configure(&mut config, 9);
    let svc = TestService::start_in(dir, config).await;

    let (status, value) = svc.get(&format!("/test-call-batches/{batch_id}")).await;
    assert_eq!(status, 200);
    let batch = &value["data"];
    assert_eq!(batch["status"], "failed", "{batch}");
    let why = batch["error_message"]
        .as_str()
        .unwrap_or_else(|| panic!("a failed batch says why: {batch}"));
    assert!(why.starts_with("service_"), "{why}");
    assert!(
        batch["started_at"].is_string(),
        "its first run had started: {batch}"
    );
    assert_eq!(batch["total_runs"], 4);
    assert_eq!(batch["failed_runs"], 4, "{batch}");
    assert_eq!(batch["completed_runs"], 0, "{batch}");
    for run_id in batch["run_ids"].as_array().expect("run_ids") {
        let (_, value) = svc
            .get(&format!("/test-calls/{}", run_id.as_str().expect("id")))
            .await;
        let run = &value["data"];
        assert_eq!(run["status"], "failed", "{run}");
        let reason = run["error_message"].as_str().expect("a reason");
        assert!(reason.starts_with("service_"), "{reason}");
        assert!(run["completed_at"].is_string(), "{run}");
    }
    let (_, active) = svc.get("/test-calls?status=in_progress").await;
    assert_eq!(active["pagination"]["total"], 0, "nothing stuck: {active}");
    let (_, queued) = svc.get("/test-calls?status=queued").await;
    assert_eq!(queued["pagination"]["total"], 0, "nothing stuck: {queued}");
    // The agent leg of the interrupted run is over too.
    let (_, value) = svc.get(&format!("/test-calls/{first}")).await;
    let agent_leg = call(&svc, value["data"]["call_id"].as_str().expect("call_id")).await;
    assert!(
        matches!(agent_leg["status"].as_str(), Some("ended" | "failed")),
        "{agent_leg}"
    );
    svc.stop().await;
}
