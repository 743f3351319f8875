//! Guards the test-call endpoints: `POST/GET /test-calls`, `POST/GET /test-call-batches` and
//! `POST /agents/{id}/test-call` — every error in its order (422 validation, 400 consent, 404
//! target, 429 concurrent runs, 402 estimate), defaults, batch shape and prompt rotation,
//! list filters and pagination, organisation isolation, idempotency, and runs carried to
//! their end by the real runner (mode `bot`: no SIP needed). What a request leaves out
//! (mode `bot`, the default scenario, no batch name) and what it cannot set (the operator's
//! `charge_multiplier`), the batch's `requested_by_id`/`started_at`/`error_message`, and
//! test calls with agents that are not live yet.

mod api_support;

use std::time::Duration;

use api_support::{silent_udp_port, TestApi};
use axum::http::{Method, StatusCode};
use call_control::ids;
use call_control::model::{
    TestBatchStatus, TestCallBatch, TestCallRun, TestDirection, TestMode, TestRunStatus,
    TestTargetType,
};
use chrono::Utc;
use serde_json::{json, Value};

const RUNS: &str = "/api/public/v1/test-calls";
const BATCHES: &str = "/api/public/v1/test-call-batches";

/// Free text: the bot runs its default script.
const SCENARIO: &str = "Hello, what are your opening hours?";

/// A script the bot's parser refuses (a duration that is not one).
const BAD_SCRIPT: &str = "say hello\nwait forever\nhangup";

/// Longest wait for launched runs to end (bot mode takes seconds; the machine may be loaded).
const RUNS_END_WITHIN: Duration = Duration::from_secs(180);

/// A run request in mode `bot` for `agent`, consenting.
fn run_body(agent: &str) -> Value {
    json!({"target_type": "agent", "target_id": agent, "scenario_prompt": SCENARIO,
           "mode": "bot", "consent_to_charge": true})
}

/// A run stored directly with `status` (never launched), for filters and limits.
async fn stored_run(
    api: &TestApi,
    key: &str,
    agent: &str,
    target_type: TestTargetType,
    status: TestRunStatus,
) -> TestCallRun {
    let now = Utc::now();
    let run = TestCallRun {
        id: ids::new_id(ids::TEST_CALL_RUN),
        org_id: api.org_of(key).await,
        target_type,
        target_id: match target_type {
            TestTargetType::Agent => agent.to_owned(),
            TestTargetType::PhoneNumber => "num_stored".to_owned(),
        },
        agent_id: agent.to_owned(),
        direction: TestDirection::Outbound,
        target_number: "+15550100000".into(),
        scenario_prompt: Some(SCENARIO.into()),
        mode: TestMode::Bot,
        status,
        network_profile: "clean".into(),
        thresholds: None,
        charge_multiplier: 2,
        estimated_cost_cents: 8,
        call_id: None,
        sip_call_id: None,
        measurements: None,
        error_message: None,
        batch_id: None,
        started_at: None,
        completed_at: None,
        created_at: now,
        updated_at: now,
        node_id: None,
    };
    api.state
        .store
        .insert_test_run(&run)
        .await
        .expect("run stored");
    run
}

/// A batch of one run stored directly with `status` (never launched), for the list filter.
async fn stored_batch(api: &TestApi, agent: &str, status: TestBatchStatus) -> TestCallBatch {
    let now = Utc::now();
    let id = ids::new_id(ids::TEST_CALL_BATCH);
    let mut run = stored_run_record(api, agent).await;
    run.batch_id = Some(id.clone());
    let batch = TestCallBatch {
        id,
        org_id: run.org_id.clone(),
        target_type: TestTargetType::Agent,
        target_id: agent.to_owned(),
        agent_id: agent.to_owned(),
        name: None,
        direction: TestDirection::Outbound,
        mode: TestMode::Bot,
        target_number: "+15550100000".into(),
        scenario_prompt: None,
        scenario_prompts: Vec::new(),
        network_profile: "clean".into(),
        thresholds: None,
        charge_multiplier: 2,
        estimated_cost_cents: 8,
        run_count: 1,
        stagger_seconds: 0,
        status,
        total_runs: 1,
        completed_runs: 0,
        failed_runs: 0,
        run_ids: vec![run.id.clone()],
        aggregate: None,
        error_message: None,
        requested_by_id: None,
        created_at: now,
        updated_at: now,
        started_at: None,
        completed_at: None,
    };
    api.state
        .store
        .insert_test_batch(&batch, &[run])
        .await
        .expect("batch stored");
    batch
}

/// A finished run of the `acme` organisation, not stored.
async fn stored_run_record(api: &TestApi, agent: &str) -> TestCallRun {
    let now = Utc::now();
    TestCallRun {
        id: ids::new_id(ids::TEST_CALL_RUN),
        org_id: api.org_of(&api.key).await,
        target_type: TestTargetType::Agent,
        target_id: agent.to_owned(),
        agent_id: agent.to_owned(),
        direction: TestDirection::Outbound,
        target_number: "+15550100000".into(),
        scenario_prompt: None,
        mode: TestMode::Bot,
        status: TestRunStatus::Completed,
        network_profile: "clean".into(),
        thresholds: None,
        charge_multiplier: 2,
        estimated_cost_cents: 8,
        call_id: None,
        sip_call_id: None,
        measurements: None,
        error_message: None,
        batch_id: None,
        started_at: None,
        completed_at: None,
        created_at: now,
        updated_at: now,
        node_id: None,
    }
}

/// `pagination.total` of a list answer (beside `data` and `meta` as DESIGN.md shows it, or
/// inside `meta` where an older envelope put it).
fn total(reply: &api_support::Reply) -> Value {
    let pagination = match reply.body.get("pagination") {
        Some(pagination) => pagination,
        None => &reply.body["meta"]["pagination"],
    };
    pagination["total"].clone()
}

fn fields(reply: &api_support::Reply) -> &serde_json::Map<String, Value> {
    reply.body["error"]["details"]["fields"]
        .as_object()
        .unwrap_or_else(|| panic!("no details.fields in {}", reply.body))
}

/// Waits until the runner has no run left executing.
async fn runs_end(api: &TestApi) {
    tokio::time::timeout(RUNS_END_WITHIN, api.state.test_runner.wait_idle())
        .await
        .expect("the launched runs end");
}

#[tokio::test]
async fn a_run_is_created_queued_with_defaults_and_carried_to_its_end() {
    let api = TestApi::start().await;
    let agent = api.agent("active", "You answer questions.").await;

    // Without consent the service tells the estimate: mode bot by default, one leg of
    // test_calls.max_run_seconds (120 s) at 2 cents a minute, times 2; sip is two legs.
    let mut ask = run_body(&agent);
    ask.as_object_mut().expect("object").remove("mode");
    ask.as_object_mut()
        .expect("object")
        .remove("consent_to_charge");
    let priced = api.post(RUNS, ask.clone()).await;
    assert_eq!(priced.status, StatusCode::BAD_REQUEST, "{}", priced.body);
    assert_eq!(priced.code(), "consent_required");
    assert_eq!(
        priced.body["error"]["details"]["estimated_cost_cents"],
        json!(8)
    );
    ask["mode"] = json!("sip");
    let priced = api.post(RUNS, ask).await;
    assert_eq!(
        priced.body["error"]["details"]["estimated_cost_cents"],
        json!(16)
    );

    // Neither mode nor scenario: a bot run of the bot's default scenario.
    let created = api
        .post(
            RUNS,
            json!({"target_type": "agent", "target_id": agent, "consent_to_charge": true}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let run = created.data();
    let id = run["id"].as_str().expect("id").to_owned();
    assert!(ids::has_prefix(&id, ids::TEST_CALL_RUN), "{id}");
    assert_eq!(run["status"], json!("queued"));
    assert_eq!(run["target_type"], json!("agent"));
    assert_eq!(run["target_id"], json!(agent));
    assert_eq!(run["agent_id"], json!(agent));
    assert_eq!(run["direction"], json!("outbound"));
    assert_eq!(run["target_number"], json!("+15550100000"));
    assert_eq!(run["mode"], json!("bot"));
    assert_eq!(run["scenario_prompt"], json!(null));
    assert_eq!(run["network_profile"], json!("clean"));
    assert!(run["charge_multiplier"].is_u64(), "an integer: {run}");
    assert_eq!(run["charge_multiplier"], json!(2));
    assert_eq!(run["estimated_cost_cents"], json!(8));
    assert_eq!(run["thresholds"], json!(null));
    assert_eq!(run["batch_id"], json!(null));
    assert!(run.get("org_id").is_none());

    let read = api.get(&format!("{RUNS}/{id}")).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.data()["id"], json!(id));
    let theirs = api
        .send(
            Method::GET,
            &format!("{RUNS}/{id}"),
            Some(&api.other_key),
            None,
            &[],
        )
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert_eq!(theirs.code(), "test_call_not_found");
    let missing = api.get(&format!("{RUNS}/tcr_missing")).await;
    assert_eq!(missing.code(), "test_call_not_found");

    // The runner carries it to its end: the echo agent answers the bot in-process.
    runs_end(&api).await;
    let done = api.get(&format!("{RUNS}/{id}")).await;
    let done = done.data();
    assert_eq!(done["status"], json!("completed"), "{done}");
    assert!(done["started_at"].is_string(), "{done}");
    assert!(done["completed_at"].is_string(), "{done}");
    assert!(
        done["call_id"].is_string(),
        "the agent's leg is linked: {done}"
    );
    assert!(
        done["measurements"]["response_latency_ms"]["p50"].is_number(),
        "{done}"
    );
    assert!(
        done["measurements"]["utterances"].as_u64() >= Some(1),
        "the default scenario spoke: {done}"
    );
    assert!(
        done["charge_multiplier"].is_u64(),
        "the same JSON type after the run: {done}"
    );
    assert_eq!(done["charge_multiplier"], json!(2));
    assert_eq!(done["scenario_prompt"], json!(null));
}

#[tokio::test]
async fn create_errors_come_in_their_order() {
    let api = TestApi::with_config(|config| config.test_calls.max_concurrent_runs = 2).await;
    let agent = api.agent("active", "You answer questions.").await;

    let empty = api.post(RUNS, json!({})).await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(empty.code(), "validation_error");
    for field in ["target_type", "target_id"] {
        assert!(
            fields(&empty).contains_key(field),
            "{field}: {}",
            empty.body
        );
    }
    assert!(
        !fields(&empty).contains_key("scenario_prompt"),
        "optional: {}",
        empty.body
    );

    // Every bad field at once; validation comes before consent.
    let bad = api
        .post(
            RUNS,
            json!({"target_type": "robot", "target_id": agent, "scenario_prompt": "",
                   "direction": "sideways", "target_number": "555", "mode": "pigeon",
                   "network_profile": "moon", "charge_multiplier": 0.5,
                   "thresholds": {"mos_min": 4.6, "latency": 5, "loss_percent_max": "low",
                                  "dead_air_ms_max": -1},
                   "consent_to_charge": "yes", "colour": "blue"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    for field in [
        "target_type",
        "scenario_prompt",
        "direction",
        "target_number",
        "mode",
        "network_profile",
        "charge_multiplier",
        "thresholds.mos_min",
        "thresholds.latency",
        "thresholds.loss_percent_max",
        "thresholds.dead_air_ms_max",
        "consent_to_charge",
        "colour",
    ] {
        assert!(fields(&bad).contains_key(field), "{field}: {}", bad.body);
    }

    let mut script = run_body(&agent);
    script["scenario_prompt"] = json!(BAD_SCRIPT);
    let script = api.post(RUNS, script).await;
    assert_eq!(script.status, StatusCode::UNPROCESSABLE_ENTITY);
    let message = fields(&script)["scenario_prompt"]
        .as_str()
        .expect("message");
    assert!(message.starts_with("invalid scenario script:"), "{message}");

    // Consent: absent or false is 400, before the target is even looked up.
    for consent in [json!(null), json!(false)] {
        let mut body = run_body("agt_unknown");
        body["consent_to_charge"] = consent.clone();
        if consent.is_null() {
            body.as_object_mut()
                .expect("object")
                .remove("consent_to_charge");
        }
        let refused = api.post(RUNS, body).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
        assert_eq!(refused.code(), "consent_required");
        assert_eq!(
            refused.body["error"]["details"]["estimated_cost_cents"],
            json!(8)
        );
    }

    // Targets: unknown agent, unknown number, a number assigned to nobody, another
    // organisation's agent.
    let unknown = api.post(RUNS, run_body("agt_unknown")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.code(), "agent_not_found");
    let mut by_number = run_body("num_unknown");
    by_number["target_type"] = json!("phone_number");
    let unknown_number = api.post(RUNS, by_number.clone()).await;
    assert_eq!(unknown_number.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown_number.code(), "phone_number_not_found");
    let trunk = api.trunk(silent_udp_port()).await;
    let unassigned = api.number("+14155550177", &trunk, None).await;
    by_number["target_id"] = json!(unassigned);
    let unassigned = api.post(RUNS, by_number.clone()).await;
    assert_eq!(unassigned.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(unassigned.code(), "validation_error");
    assert!(fields(&unassigned).contains_key("target_id"));
    let theirs = api
        .send(
            Method::POST,
            RUNS,
            Some(&api.other_key),
            Some(&run_body(&agent)),
            &[],
        )
        .await;
    assert_eq!(theirs.code(), "agent_not_found");

    // 429 comes before 402: two runs in flight fill the limit of two, and the balance is
    // empty too.
    stored_run(
        &api,
        &api.key,
        &agent,
        TestTargetType::Agent,
        TestRunStatus::InProgress,
    )
    .await;
    stored_run(
        &api,
        &api.key,
        &agent,
        TestTargetType::Agent,
        TestRunStatus::Queued,
    )
    .await;
    let org = api.org_of(&api.key).await;
    let balance = api.state.store.balance_cents(&org).await.expect("balance");
    api.state
        .store
        .add_credits(&org, 3 - balance)
        .await
        .expect("drained");
    let limited = api.post(RUNS, run_body(&agent)).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.body
    );
    assert_eq!(limited.code(), "rate_limited");
    assert_eq!(
        limited.body["error"]["details"],
        json!({"limit": 2, "active": 2, "requested": 1})
    );
    // Finished runs do not count: the limit frees up, and the empty balance answers.
    let (in_flight, _) = api
        .state
        .store
        .list_test_runs(&org, &Default::default(), 50, 0)
        .await
        .expect("list");
    for mut run in in_flight {
        run.status = TestRunStatus::Completed;
        api.state.store.update_test_run(&run).await.expect("update");
    }
    let poor = api.post(RUNS, run_body(&agent)).await;
    assert_eq!(poor.status, StatusCode::PAYMENT_REQUIRED, "{}", poor.body);
    assert_eq!(poor.code(), "insufficient_credits");
    assert_eq!(poor.body["error"]["details"]["balance_cents"], json!(3));
    assert_eq!(
        poor.body["error"]["details"]["estimated_cost_cents"],
        json!(8)
    );
    // Asking for multiplier 1 (half the estimate, 4 cents) does not make it affordable: the
    // multiplier is the operator's, and the request is refused naming the field.
    let mut cheap = run_body(&agent);
    cheap["charge_multiplier"] = json!(1);
    let refused = api.post(RUNS, cheap).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    let message = fields(&refused)["charge_multiplier"]
        .as_str()
        .expect("message");
    assert!(message.starts_with("is read-only"), "{message}");
    // With 8 cents, a run at the configured multiplier (estimated 8 cents) is accepted; a
    // request may repeat the configured value.
    api.state.store.add_credits(&org, 5).await.expect("credit");
    let mut same = run_body(&agent);
    same["charge_multiplier"] = json!(2);
    let accepted = api.post(RUNS, same).await;
    assert_eq!(accepted.status, StatusCode::CREATED, "{}", accepted.body);
    assert_eq!(accepted.data()["estimated_cost_cents"], json!(8));
    assert_eq!(accepted.data()["charge_multiplier"], json!(2));
    runs_end(&api).await;
}

#[tokio::test]
async fn a_batch_answers_in_progress_and_rotates_its_prompts() {
    let api = TestApi::start().await;
    let agent = api.agent("active", "You answer questions.").await;
    let created = api
        .post(
            BATCHES,
            json!({"target_type": "agent", "target_id": agent, "mode": "bot", "run_count": 3,
                   "name": "Nightly regression",
                   "stagger_seconds": 1, "network_profile": "jittery",
                   "scenario_prompts": ["Hello, first question.", "Hello, second question."],
                   "thresholds": {"response_latency_p95_ms": 5000},
                   "consent_to_charge": true}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let batch = created.data().clone();
    let id = batch["id"].as_str().expect("id").to_owned();
    assert!(ids::has_prefix(&id, ids::TEST_CALL_BATCH), "{id}");
    assert_eq!(batch["status"], json!("in_progress"));
    assert_eq!(batch["total_runs"], json!(3));
    assert_eq!(batch["run_count"], json!(3));
    assert_eq!(batch["completed_runs"], json!(0));
    assert_eq!(batch["failed_runs"], json!(0));
    assert_eq!(batch["stagger_seconds"], json!(1));
    assert_eq!(batch["estimated_cost_cents"], json!(24));
    assert_eq!(batch["network_profile"], json!("jittery"));
    assert_eq!(batch["scenario_prompt"], json!(null));
    assert_eq!(
        batch["thresholds"],
        json!({"response_latency_p95_ms": 5000.0})
    );
    assert_eq!(batch["name"], json!("Nightly regression"));
    let (key_id, _) = api
        .state
        .store
        .key_and_org(&api.key)
        .await
        .expect("store answers")
        .expect("known key");
    assert!(key_id.starts_with("key_"), "{key_id}");
    assert_eq!(
        batch["requested_by_id"],
        json!(key_id),
        "the id of the API key that asked, never the secret"
    );
    assert_eq!(batch["started_at"], json!(null), "no run has started yet");
    assert_eq!(batch["error_message"], json!(null));
    assert!(batch["charge_multiplier"].is_u64(), "{batch}");
    let run_ids: Vec<String> = batch["run_ids"]
        .as_array()
        .expect("run_ids")
        .iter()
        .map(|id| id.as_str().expect("id").to_owned())
        .collect();
    assert_eq!(run_ids.len(), 3);

    let listed = api.get(&format!("{RUNS}?batch_id={id}")).await;
    assert_eq!(listed.body["pagination"]["total"], json!(3));
    let expected = [
        "Hello, first question.",
        "Hello, second question.",
        "Hello, first question.",
    ];
    for (run_id, prompt) in run_ids.iter().zip(expected) {
        let run = api.get(&format!("{RUNS}/{run_id}")).await;
        assert_eq!(run.status, StatusCode::OK);
        assert_eq!(run.data()["batch_id"], json!(id));
        assert_eq!(run.data()["scenario_prompt"], json!(prompt));
        assert_eq!(run.data()["estimated_cost_cents"], json!(8));
        assert_eq!(run.data()["network_profile"], json!("jittery"));
    }

    let read = api.get(&format!("{BATCHES}/{id}")).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.data()["run_ids"], batch["run_ids"]);
    let page = api.get(BATCHES).await;
    assert_eq!(page.body["pagination"]["total"], json!(1));
    let theirs = api
        .send(
            Method::GET,
            &format!("{BATCHES}/{id}"),
            Some(&api.other_key),
            None,
            &[],
        )
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert_eq!(theirs.code(), "test_call_batch_not_found");

    runs_end(&api).await;
    let done = api.get(&format!("{BATCHES}/{id}")).await;
    let done = done.data();
    assert_eq!(done["status"], json!("completed"), "{done}");
    assert_eq!(done["completed_runs"], json!(3), "{done}");
    assert_eq!(done["failed_runs"], json!(0), "{done}");
    assert!(done["completed_at"].is_string(), "{done}");
    assert!(done["aggregate"].is_object(), "{done}");
    assert_eq!(done["error_message"], json!(null), "{done}");
    assert_eq!(done["requested_by_id"], json!(key_id));
    assert_eq!(done["name"], json!("Nightly regression"));
    let first = api.get(&format!("{RUNS}/{}", run_ids[0])).await;
    assert!(first.data()["started_at"].is_string(), "{}", first.body);
    assert_eq!(
        done["started_at"],
        first.data()["started_at"],
        "the batch started with its first run: {done}"
    );
}

#[tokio::test]
async fn batch_fields_are_validated() {
    let api = TestApi::with_config(|config| config.test_calls.max_concurrent_runs = 5).await;
    let agent = api.agent("active", "You answer questions.").await;
    let batch = |changes: Value| {
        let mut body = json!({"target_type": "agent", "target_id": agent, "mode": "bot",
                              "run_count": 2, "scenario_prompt": SCENARIO,
                              "consent_to_charge": true});
        for (key, value) in changes.as_object().expect("object") {
            if value.is_null() {
                body.as_object_mut().expect("object").remove(key);
            } else {
                body[key] = value.clone();
            }
        }
        body
    };
    let cases = [
        (json!({"run_count": 0}), "run_count"),
        (json!({"run_count": 21}), "run_count"),
        (json!({"run_count": null}), "run_count"),
        (json!({"run_count": "three"}), "run_count"),
        (json!({"stagger_seconds": 61}), "stagger_seconds"),
        (
            json!({"scenario_prompts": ["a"], "scenario_prompt": SCENARIO}),
            "scenario_prompts",
        ),
        (json!({"name": ""}), "name"),
        (json!({"name": 7}), "name"),
        (json!({"name": "x".repeat(201)}), "name"),
        (json!({"charge_multiplier": 1}), "charge_multiplier"),
        (
            json!({"scenario_prompt": null, "scenario_prompts": []}),
            "scenario_prompts",
        ),
        (
            json!({"scenario_prompt": null, "scenario_prompts": [SCENARIO, BAD_SCRIPT]}),
            "scenario_prompts[1]",
        ),
    ];
    for (change, field) in cases {
        let reply = api.post(BATCHES, batch(change.clone())).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{change}: {}",
            reply.body
        );
        assert!(
            fields(&reply).contains_key(field),
            "{change} must name {field}: {}",
            reply.body
        );
    }
    let refused = api
        .post(BATCHES, batch(json!({"consent_to_charge": false})))
        .await;
    assert_eq!(refused.code(), "consent_required");
    assert_eq!(
        refused.body["error"]["details"]["estimated_cost_cents"],
        json!(16)
    );
    let limited = api.post(BATCHES, batch(json!({"run_count": 6}))).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        limited.body["error"]["details"],
        json!({"limit": 5, "active": 0, "requested": 6})
    );
    let unknown = api
        .post(BATCHES, batch(json!({"target_id": "agt_unknown"})))
        .await;
    assert_eq!(unknown.code(), "agent_not_found");
    assert_eq!(
        api.get(BATCHES).await.body["pagination"]["total"],
        json!(0),
        "no refused request stored anything"
    );
}

#[tokio::test]
async fn a_batch_may_leave_out_scenario_mode_and_name() {
    let api = TestApi::start().await;
    let agent = api.agent("active", "You answer questions.").await;
    let created = api
        .post(
            BATCHES,
            json!({"target_type": "agent", "target_id": agent, "run_count": 2,
                   "consent_to_charge": true}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let batch = created.data().clone();
    assert_eq!(batch["mode"], json!("bot"));
    assert_eq!(batch["estimated_cost_cents"], json!(16), "two bot runs");
    assert_eq!(batch["name"], json!(null));
    assert_eq!(batch["scenario_prompt"], json!(null));
    assert_eq!(batch["scenario_prompts"], json!([]));
    runs_end(&api).await;
    let id = batch["id"].as_str().expect("id");
    let done = api.get(&format!("{BATCHES}/{id}")).await;
    let done = done.data();
    assert_eq!(done["status"], json!("completed"), "{done}");
    assert_eq!(done["completed_runs"], json!(2), "{done}");
    for run_id in done["run_ids"].as_array().expect("run_ids") {
        let run = api
            .get(&format!("{RUNS}/{}", run_id.as_str().expect("id")))
            .await;
        assert_eq!(run.data()["scenario_prompt"], json!(null), "{}", run.body);
        assert_eq!(run.data()["status"], json!("completed"), "{}", run.body);
        assert!(
            run.data()["measurements"]["utterances"].as_u64() >= Some(1),
            "the default scenario ran: {}",
            run.body
        );
    }
}

#[tokio::test]
async fn batches_are_listed_by_status() {
    let api = TestApi::start().await;
    let agent = api.agent("active", "You answer questions.").await;
    let completed = stored_batch(&api, &agent, TestBatchStatus::Completed).await;
    let failed = stored_batch(&api, &agent, TestBatchStatus::Failed).await;
    stored_batch(&api, &agent, TestBatchStatus::InProgress).await;
    assert_eq!(total(&api.get(BATCHES).await), json!(3));
    for (status, id) in [("completed", &completed.id), ("failed", &failed.id)] {
        let page = api.get(&format!("{BATCHES}?status={status}")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert_eq!(total(&page), json!(1), "{status}: {}", page.body);
        assert_eq!(page.data()[0]["id"], json!(id));
    }
    let page = api
        .get(&format!("{BATCHES}?status=in_progress&limit=1"))
        .await;
    assert_eq!(total(&page), json!(1), "{}", page.body);
    let bad = api.get(&format!("{BATCHES}?status=done")).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    assert_eq!(bad.code(), "validation_error");
    assert_eq!(
        fields(&bad)["status"],
        json!("\"done\" is not one of in_progress, completed, failed")
    );
    let theirs = api
        .send(
            Method::GET,
            &format!("{BATCHES}?status=completed"),
            Some(&api.other_key),
            None,
            &[],
        )
        .await;
    assert_eq!(total(&theirs), json!(0));
}

#[tokio::test]
async fn the_operator_sets_the_charge_multiplier() {
    let api = TestApi::with_config(|config| config.test_calls.charge_multiplier = 3).await;
    let agent = api.agent("active", "You answer questions.").await;
    // 120 s at 2 cents a minute, times 3, one leg.
    let mut ask = run_body(&agent);
    ask.as_object_mut()
        .expect("object")
        .remove("consent_to_charge");
    let priced = api.post(RUNS, ask).await;
    assert_eq!(
        priced.body["error"]["details"]["estimated_cost_cents"],
        json!(12),
        "{}",
        priced.body
    );
    // The documented default is not the configured value here: no caller picks its price.
    for asked in [json!(2), json!(1), json!(2.5)] {
        let mut body = run_body(&agent);
        body["charge_multiplier"] = asked.clone();
        let refused = api.post(RUNS, body).await;
        assert_eq!(
            refused.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{asked}: {}",
            refused.body
        );
        let message = fields(&refused)["charge_multiplier"]
            .as_str()
            .expect("message");
        assert!(
            message.contains("read-only") && message.contains('3'),
            "{message}"
        );
    }
    let created = api.post(RUNS, run_body(&agent)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.data()["charge_multiplier"], json!(3));
    assert_eq!(created.data()["estimated_cost_cents"], json!(12));
    let batch = api
        .post(
            BATCHES,
            json!({"target_type": "agent", "target_id": agent, "run_count": 2,
                   "charge_multiplier": 3, "consent_to_charge": true}),
        )
        .await;
    assert_eq!(batch.status, StatusCode::CREATED, "{}", batch.body);
    assert_eq!(batch.data()["charge_multiplier"], json!(3));
    assert_eq!(
        batch.data()["estimated_cost_cents"],
        json!(24),
        "two runs at 12 cents"
    );
    let listed = api.get(RUNS).await;
    for run in listed.data().as_array().expect("runs") {
        assert_eq!(run["charge_multiplier"], json!(3), "{run}");
    }
    runs_end(&api).await;
}

#[tokio::test]
async fn list_filters_and_pages() {
    let api = TestApi::start().await;
    let first = api.agent("active", "First.").await;
    let second = api.agent("active", "Second.").await;
    for status in [
        TestRunStatus::Completed,
        TestRunStatus::Failed,
        TestRunStatus::InProgress,
    ] {
        stored_run(&api, &api.key, &first, TestTargetType::Agent, status).await;
    }
    stored_run(
        &api,
        &api.key,
        &second,
        TestTargetType::PhoneNumber,
        TestRunStatus::Completed,
    )
    .await;
    stored_run(
        &api,
        &api.other_key,
        &first,
        TestTargetType::Agent,
        TestRunStatus::Completed,
    )
    .await;

    let all = api.get(RUNS).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(
        all.body["pagination"],
        json!({"limit": 50, "offset": 0, "total": 4})
    );
    let page = api.get(&format!("{RUNS}?limit=3&offset=2")).await;
    assert_eq!(page.data().as_array().map(Vec::len), Some(2));
    assert_eq!(page.body["pagination"]["total"], json!(4));
    let past = api.get(&format!("{RUNS}?offset=4")).await;
    assert_eq!(past.data(), &json!([]));

    let count = |reply: api_support::Reply| reply.body["pagination"]["total"].clone();
    assert_eq!(count(api.get(&format!("{RUNS}?status=failed")).await), 1);
    assert_eq!(
        count(api.get(&format!("{RUNS}?target_type=phone_number")).await),
        1
    );
    assert_eq!(
        count(api.get(&format!("{RUNS}?agent_id={second}")).await),
        1
    );
    assert_eq!(
        count(
            api.get(&format!("{RUNS}?status=completed&agent_id={first}"))
                .await
        ),
        1
    );
    assert_eq!(count(api.get(&format!("{RUNS}?status=queued")).await), 0);

    let bad = api
        .get(&format!("{RUNS}?status=done&target_type=robot&limit=201"))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    for field in ["status", "target_type", "limit"] {
        assert!(fields(&bad).contains_key(field), "{field}: {}", bad.body);
    }
    let bad = api.get(&format!("{BATCHES}?offset=-1")).await;
    assert!(fields(&bad).contains_key("offset"));
}

#[tokio::test]
async fn a_retried_create_with_the_same_idempotency_key_creates_one_run() {
    let api = TestApi::start().await;
    let agent = api.agent("active", "You answer questions.").await;
    let body = run_body(&agent);
    let headers = [("x-idempotency-key", "test-run-1")];
    let first = api
        .send(Method::POST, RUNS, Some(&api.key), Some(&body), &headers)
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let again = api
        .send(Method::POST, RUNS, Some(&api.key), Some(&body), &headers)
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.data()["id"], first.data()["id"]);
    assert_eq!(api.get(RUNS).await.body["pagination"]["total"], json!(1));
    runs_end(&api).await;
}

#[tokio::test]
async fn agent_test_call_places_a_real_outbound_call() {
    let api = TestApi::start().await;
    let trunk = api.trunk(silent_udp_port()).await;
    let agent = api.agent("active", "You answer questions.").await;
    api.number("+14155550100", &trunk, Some(&agent)).await;
    let path = format!("/api/public/v1/agents/{agent}/test-call");

    let placed = api.post(&path, json!({"to": "+14155550123"})).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.body);
    let call_id = placed.data()["call_id"]
        .as_str()
        .expect("call_id")
        .to_owned();
    assert_eq!(
        placed.data(),
        &json!({"call_id": call_id, "status": "initiated", "to": "+14155550123",
                "agent_id": agent})
    );
    let call = api.get(&format!("/api/public/v1/calls/{call_id}")).await;
    assert_eq!(call.status, StatusCode::OK);
    assert_eq!(call.data()["direction"], json!("outbound"));
    assert_eq!(call.data()["to_number"], json!("+14155550123"));
    assert_eq!(call.data()["from_number"], json!("+14155550100"));
    let hangup = api
        .post(&format!("/api/public/v1/calls/{call_id}/hangup"), json!({}))
        .await;
    assert_eq!(hangup.status, StatusCode::ACCEPTED, "{}", hangup.body);

    let missing = api.post(&path, json!({})).await;
    assert_eq!(missing.code(), "validation_error");
    assert!(fields(&missing).contains_key("to"));
    let extra = api
        .post(&path, json!({"to": "+14155550123", "variables": {}}))
        .await;
    assert!(fields(&extra).contains_key("variables"));
    let bad = api.post(&path, json!({"to": "555-0123"})).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.code(), "invalid_phone_number");
    assert!(fields(&bad).contains_key("to"));
    let foreign = api
        .post(
            &path,
            json!({"to": "+14155550123", "from_number": "+14155550999"}),
        )
        .await;
    assert_eq!(foreign.code(), "invalid_from_number");
    let unknown = api
        .post(
            "/api/public/v1/agents/agt_unknown/test-call",
            json!({"to": "+14155550123"}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.code(), "agent_not_found");
    let numberless = api.agent("active", "No number.").await;
    let numberless = api
        .post(
            &format!("/api/public/v1/agents/{numberless}/test-call"),
            json!({"to": "+14155550123"}),
        )
        .await;
    assert_eq!(numberless.code(), "no_phone_number_configured");
}

#[tokio::test]
async fn an_agent_is_tested_before_it_goes_live() {
    let api = TestApi::start().await;
    let trunk = api.trunk(silent_udp_port()).await;
    let draft = api.agent("draft", "Not live yet.").await;
    api.number("+14155550130", &trunk, Some(&draft)).await;
    let paused = api.agent("paused", "Paused for a fix.").await;
    api.number("+14155550131", &trunk, Some(&paused)).await;

    // POST /calls keeps refusing agents that are not live ...
    let refused = api
        .post(
            "/api/public/v1/calls",
            json!({"agent_id": draft, "phone_number": "+14155550123"}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.code(), "agent_not_active");
    // ... and the test call places theirs: verifying an agent is what it is for.
    for agent in [&draft, &paused] {
        let placed = api
            .post(
                &format!("/api/public/v1/agents/{agent}/test-call"),
                json!({"to": "+14155550123"}),
            )
            .await;
        assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.body);
        assert_eq!(placed.data()["agent_id"], json!(agent));
        assert_eq!(placed.data()["status"], json!("initiated"));
        let call_id = placed.data()["call_id"].as_str().expect("call_id");
        let call = api.get(&format!("/api/public/v1/calls/{call_id}")).await;
        assert_eq!(call.data()["agent_id"], json!(agent));
        let hangup = api
            .post(&format!("/api/public/v1/calls/{call_id}/hangup"), json!({}))
            .await;
        assert_eq!(hangup.status, StatusCode::ACCEPTED, "{}", hangup.body);
    }

    // A test-call run of the draft agent runs to its end too.
    let created = api.post(RUNS, run_body(&draft)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    runs_end(&api).await;
    let id = created.data()["id"].as_str().expect("id");
    let done = api.get(&format!("{RUNS}/{id}")).await;
    assert_eq!(done.data()["status"], json!("completed"), "{}", done.body);
}

#[tokio::test]
async fn a_phone_number_target_tests_the_agent_it_is_assigned_to() {
    let api = TestApi::start().await;
    let trunk = api.trunk(silent_udp_port()).await;
    let agent = api.agent("active", "You answer questions.").await;
    let number = api.number("+14155550142", &trunk, Some(&agent)).await;
    let mut body = run_body(&number);
    body["target_type"] = json!("phone_number");
    body["direction"] = json!("inbound");
    let inbound = api.post(RUNS, body.clone()).await;
    assert_eq!(inbound.status, StatusCode::CREATED, "{}", inbound.body);
    assert_eq!(inbound.data()["target_type"], json!("phone_number"));
    assert_eq!(inbound.data()["target_id"], json!(number));
    assert_eq!(inbound.data()["agent_id"], json!(agent));
    assert_eq!(inbound.data()["direction"], json!("inbound"));
    assert_eq!(
        inbound.data()["target_number"],
        json!("+14155550142"),
        "the bot calls the number under test"
    );

    body["direction"] = json!("outbound");
    body["target_number"] = json!("+15550100077");
    let outbound = api.post(RUNS, body).await;
    assert_eq!(outbound.status, StatusCode::CREATED, "{}", outbound.body);
    assert_eq!(outbound.data()["target_number"], json!("+15550100077"));

    let by_type = api.get(&format!("{RUNS}?target_type=phone_number")).await;
    assert_eq!(by_type.body["pagination"]["total"], json!(2));
    runs_end(&api).await;
}

/// Follows `$ref`s (and a single-entry `allOf`, as generators wrap a described reference)
/// to the schema they name.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    if let Some(reference) = schema["$ref"].as_str() {
        let pointer = reference.strip_prefix('#').expect("a local reference");
        return resolve(doc, doc.pointer(pointer).expect("the reference resolves"));
    }
    match schema["allOf"].as_array().map(Vec::as_slice) {
        Some([only]) => resolve(doc, only),
        _ => schema,
    }
}

/// The JSON request body schema of `method` on `path`.
fn request_schema<'a>(doc: &'a Value, path: &str, method: &str) -> &'a Value {
    let schema =
        &doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"];
    resolve(doc, schema)
}

/// The schema of `data` in the 200 or 201 answer of `method` on `path`.
fn data_schema<'a>(doc: &'a Value, path: &str, method: &str) -> &'a Value {
    let responses = &doc["paths"][path][method]["responses"];
    let answer = if responses.get("201").is_some() {
        &responses["201"]
    } else {
        &responses["200"]
    };
    let envelope = resolve(doc, &answer["content"]["application/json"]["schema"]);
    let data = resolve(doc, &envelope["properties"]["data"]);
    match data.get("items") {
        Some(items) => resolve(doc, items),
        None => data,
    }
}

fn required(schema: &Value) -> Vec<&str> {
    schema["required"]
        .as_array()
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether `key` holds `value` anywhere inside `schema`.
fn holds(schema: &Value, key: &str, value: &Value) -> bool {
    match schema {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| (k == key && v == value) || holds(v, key, value)),
        Value::Array(items) => items.iter().any(|v| holds(v, key, value)),
        _ => false,
    }
}

#[tokio::test]
async fn the_openapi_document_shows_the_test_call_shapes() {
    let api = TestApi::start().await;
    let doc = api
        .send(Method::GET, "/openapi.json", None, None, &[])
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    let doc = &doc.body;
    let runs = "/api/public/v1/test-calls";
    let batches = "/api/public/v1/test-call-batches";

    for path in [runs, batches] {
        let create = request_schema(doc, path, "post");
        assert!(
            !required(create).contains(&"scenario_prompt"),
            "{path}: scenario_prompt is optional: {create}"
        );
        let mode = resolve(doc, &create["properties"]["mode"]);
        assert!(
            holds(&create["properties"]["mode"], "default", &json!("bot"))
                || holds(mode, "default", &json!("bot")),
            "{path}: mode defaults to bot: {create}"
        );
        let object = data_schema(doc, path, "post");
        let multiplier = &object["properties"]["charge_multiplier"];
        assert!(
            holds(multiplier, "type", &json!("integer")),
            "{path}: an integer: {multiplier}"
        );
        assert!(
            holds(multiplier, "readOnly", &json!(true)),
            "{path}: read-only: {multiplier}"
        );
    }
    let batch = data_schema(doc, batches, "get");
    for field in ["name", "error_message", "requested_by_id", "started_at"] {
        assert!(
            batch["properties"].get(field).is_some(),
            "the batch shows {field}: {batch}"
        );
    }
    let filters = doc["paths"][batches]["get"]["parameters"]
        .as_array()
        .expect("parameters");
    let status = filters
        .iter()
        .map(|param| resolve(doc, param))
        .find(|param| param["name"] == "status")
        .unwrap_or_else(|| panic!("a status filter: {filters:?}"));
    assert!(
        holds(
            resolve(doc, &status["schema"]),
            "enum",
            &json!(["in_progress", "completed", "failed"])
        ),
        "{status}"
    );
}
