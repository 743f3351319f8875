//! Guards `X-Idempotency-Key`: a retry with the same key and organisation returns the original
//! status and body and creates nothing, also after the service restarts on the same database;
//! the key is scoped to its organisation; a malformed key is a 422 naming the header.

mod api_support;

use api_support::{refused_tcp_port, TestApi};
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

const AGENTS: &str = "/api/public/v1/agents";

async fn post_with_key(api: &TestApi, key: &str, path: &str, body: Value) -> api_support::Reply {
    api.send(
        Method::POST,
        path,
        Some(&api.key),
        Some(&body),
        &[("x-idempotency-key", key)],
    )
    .await
}

#[tokio::test]
async fn a_retry_returns_the_original_response_and_creates_nothing() {
    let api = TestApi::start().await;
    let first = post_with_key(&api, "create-agent-1", AGENTS, json!({"name": "one"})).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.headers.contains_key("idempotent-replayed"));
    // Even with a different body, the key answers what it answered first.
    let retry = post_with_key(&api, "create-agent-1", AGENTS, json!({"name": "two"})).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(retry.bytes, first.bytes);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_eq!(
        api.get(AGENTS).await.body["meta"]["pagination"]["total"],
        json!(1)
    );

    // A new key creates a new agent.
    let other = post_with_key(&api, "create-agent-2", AGENTS, json!({"name": "two"})).await;
    assert_eq!(other.status, StatusCode::CREATED);
    assert_ne!(other.data()["id"], first.data()["id"]);

    // Errors are replayed too (the request was answered).
    let invalid = post_with_key(&api, "bad-1", AGENTS, json!({})).await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    let again = post_with_key(&api, "bad-1", AGENTS, json!({"name": "fine now"})).await;
    assert_eq!(again.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(again.bytes, invalid.bytes);
    assert_eq!(
        api.get(AGENTS).await.body["meta"]["pagination"]["total"],
        json!(2)
    );
}

#[tokio::test]
async fn keys_belong_to_one_organisation() {
    let api = TestApi::start().await;
    let mine = post_with_key(&api, "shared-key", AGENTS, json!({"name": "mine"})).await;
    let theirs = api
        .send(
            Method::POST,
            AGENTS,
            Some(&api.other_key),
            Some(&json!({"name": "theirs"})),
            &[("x-idempotency-key", "shared-key")],
        )
        .await;
    assert_eq!(theirs.status, StatusCode::CREATED);
    assert_ne!(theirs.data()["id"], mine.data()["id"]);
    assert_eq!(theirs.data()["name"], json!("theirs"));
}

#[tokio::test]
async fn malformed_keys_are_refused() {
    let api = TestApi::start().await;
    let long = "k".repeat(256);
    for key in ["", long.as_str()] {
        let reply = post_with_key(&api, key, AGENTS, json!({"name": "x"})).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(reply.body["error"]["details"]["fields"]["X-Idempotency-Key"].is_string());
    }
    assert_eq!(
        api.get(AGENTS).await.body["meta"]["pagination"]["total"],
        json!(0)
    );
}

#[tokio::test]
async fn a_retry_after_a_restart_still_creates_nothing() {
    let api = TestApi::start().await;
    // The carrier refuses connections: the call fails at once, the restart need not wait.
    let trunk = api.trunk_over(refused_tcp_port(), "tcp").await;
    let agent = api.agent("active", "hi {{name}}").await;
    api.number("+14155550100", &trunk, Some(&agent)).await;
    let body = json!({"agent_id": agent, "phone_number": "+14155550123"});
    let call = post_with_key(&api, "call-once", "/api/public/v1/calls", body.clone()).await;
    assert_eq!(call.status, StatusCode::CREATED, "{}", call.body);
    let agent_reply = post_with_key(&api, "agent-once", AGENTS, json!({"name": "kept"})).await;
    assert_eq!(agent_reply.status, StatusCode::CREATED);

    let api = api.reopen().await;
    let retry = post_with_key(&api, "call-once", "/api/public/v1/calls", body).await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(retry.bytes, call.bytes);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    let calls = api.get("/api/public/v1/calls").await;
    assert_eq!(calls.body["meta"]["pagination"]["total"], json!(1));

    let retry = post_with_key(&api, "agent-once", AGENTS, json!({"name": "kept"})).await;
    assert_eq!(retry.bytes, agent_reply.bytes);
    // The agent of the setup and the one created with the key: no third.
    assert_eq!(
        api.get(AGENTS).await.body["meta"]["pagination"]["total"],
        json!(2)
    );
}
