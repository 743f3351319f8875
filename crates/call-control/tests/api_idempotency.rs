//! Guards `X-Idempotency-Key`, as payment APIs do it: a retry of the same request (method,
//! path, body) with the same key and organisation returns the original status and body and
//! creates nothing, also after the service restarts on the same database; the same key with a
//! different request is 422 `idempotency_key_reused`; a refused request (validation,
//! authorisation, a missing object) keeps nothing, so a corrected retry with the same key is
//! served; the key is scoped to its organisation; a malformed key is a 422 naming the header.

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
    let first = post_with_key(
        &api,
        "create-agent-1",
        AGENTS,
        json!({"name": "one", "prompt": "p"}),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.headers.contains_key("idempotent-replayed"));
    // The same request (key order and spacing do not count) is answered from the record.
    let retry = api
        .post_raw_with_key(
            AGENTS,
            "create-agent-1",
            br#"{ "prompt":"p",  "name":"one" }"#,
        )
        .await;
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(retry.bytes, first.bytes);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    assert_eq!(api.get(AGENTS).await.body["pagination"]["total"], json!(1));

    // A new key creates a new agent.
    let other = post_with_key(&api, "create-agent-2", AGENTS, json!({"name": "two"})).await;
    assert_eq!(other.status, StatusCode::CREATED);
    assert_ne!(other.data()["id"], first.data()["id"]);
    assert_eq!(api.get(AGENTS).await.body["pagination"]["total"], json!(2));
}

#[tokio::test]
async fn the_same_key_with_a_different_request_is_refused() {
    let api = TestApi::start().await;
    let first = post_with_key(&api, "k-1", AGENTS, json!({"name": "one"})).await;
    assert_eq!(first.status, StatusCode::CREATED);

    let other_body = post_with_key(&api, "k-1", AGENTS, json!({"name": "two"})).await;
    assert_eq!(
        other_body.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        other_body.body
    );
    assert_eq!(other_body.code(), "idempotency_key_reused");
    assert_eq!(
        other_body.body["error"]["details"]["idempotency_key"],
        json!("k-1")
    );
    assert!(!other_body.headers.contains_key("idempotent-replayed"));

    // Another path with the same key is another request too.
    let other_path = post_with_key(
        &api,
        "k-1",
        "/api/public/v1/webhooks",
        json!({"url": "https://example.com/hook", "events": ["call.ended"]}),
    )
    .await;
    assert_eq!(other_path.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other_path.code(), "idempotency_key_reused");

    assert_eq!(api.get(AGENTS).await.body["pagination"]["total"], json!(1));
    assert_eq!(
        api.get("/api/public/v1/webhooks").await.body["pagination"]["total"],
        json!(0)
    );
    // The original request still replays.
    let retry = post_with_key(&api, "k-1", AGENTS, json!({"name": "one"})).await;
    assert_eq!(retry.bytes, first.bytes);
}

#[tokio::test]
async fn a_refused_request_keeps_nothing_so_a_corrected_retry_goes_through() {
    let api = TestApi::start().await;
    // Validation failure: nothing is kept for the key.
    let invalid = post_with_key(&api, "fix-me", AGENTS, json!({})).await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(invalid.code(), "validation_error");
    let fixed = post_with_key(&api, "fix-me", AGENTS, json!({"name": "fine now"})).await;
    assert_eq!(fixed.status, StatusCode::CREATED, "{}", fixed.body);
    assert!(!fixed.headers.contains_key("idempotent-replayed"));
    let again = post_with_key(&api, "fix-me", AGENTS, json!({"name": "fine now"})).await;
    assert_eq!(again.bytes, fixed.bytes);
    assert_eq!(again.headers["idempotent-replayed"], "true");

    // Authorisation failure: the key is not spent either.
    let unauthorized = api
        .send(
            Method::POST,
            AGENTS,
            Some("sk_live_wrong"),
            Some(&json!({"name": "late"})),
            &[("x-idempotency-key", "auth-first")],
        )
        .await;
    assert_eq!(unauthorized.status, StatusCode::UNAUTHORIZED);
    let authorized = post_with_key(&api, "auth-first", AGENTS, json!({"name": "late"})).await;
    assert_eq!(authorized.status, StatusCode::CREATED);

    // A refusal after validation (an agent that does not exist yet) keeps nothing either.
    let trunk = api.trunk_over(refused_tcp_port(), "tcp").await;
    let call = json!({"agent_id": "agt_missing", "phone_number": "+14155550123"});
    let missing = post_with_key(&api, "call-1", "/api/public/v1/calls", call).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let agent = api.agent("active", "hi").await;
    api.number("+14155550100", &trunk, Some(&agent)).await;
    // The corrected request is a different body: it goes through because nothing was kept.
    let call = json!({"agent_id": agent, "phone_number": "+14155550123"});
    let placed = post_with_key(&api, "call-1", "/api/public/v1/calls", call).await;
    assert_eq!(placed.status, StatusCode::CREATED, "{}", placed.body);
    assert_eq!(
        api.get(AGENTS).await.body["pagination"]["total"],
        json!(3),
        "fine now, late, and the caller"
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
    assert_eq!(api.get(AGENTS).await.body["pagination"]["total"], json!(0));
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
    assert_eq!(calls.body["pagination"]["total"], json!(1));

    let retry = post_with_key(&api, "agent-once", AGENTS, json!({"name": "kept"})).await;
    assert_eq!(retry.bytes, agent_reply.bytes);
    // The agent of the setup and the one created with the key: no third.
    assert_eq!(api.get(AGENTS).await.body["pagination"]["total"], json!(2));
}
