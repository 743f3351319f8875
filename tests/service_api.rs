//! End to end: the REST API of the real service over HTTP.
//!
//! Guards: every error code of POST /calls, 401, organisation isolation,
//! idempotent retries, pagination, webhooks signed and verified by a test
//! receiver, a webhook retried after the receiver first fails, and a call
//! record and a pending webhook that survive a restart.

#[path = "support/service.rs"]
mod service;
#[path = "support/sipp.rs"]
mod sipp;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use service::TestService;
use sha2::Sha256;

async fn post_call(svc: &TestService, body: Value) -> (u16, Value) {
    svc.post("/calls", body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_calls_answers_every_documented_error() {
    let svc = TestService::start_with(|config| {
        config.credits.starting_balance_cents = 1;
        config.credits.per_minute_cents = 2;
    })
    .await;
    let agent = svc
        .echo_agent_with_number("127.0.0.1:5999".parse().expect("addr"), "+15550001111")
        .await;

    let (status, body) = post_call(
        &svc,
        json!({"agent_id": "agt_missing", "phone_number": "+15551234567"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("agent_not_found")),
        "{body}"
    );

    let (status, body) = post_call(
        &svc,
        json!({"agent_id": agent.id, "phone_number": "5551234567"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_phone_number")),
        "{body}"
    );

    let (status, body) = post_call(&svc, json!({"agent_id": agent.id})).await;
    assert_eq!(status, 422, "{body}");

    // Credits: 1 cent cannot cover a 2-cent minute.
    let (status, body) = post_call(
        &svc,
        json!({"agent_id": agent.id, "phone_number": "+15551234567"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (402, Some("insufficient_credits")),
        "{body}"
    );

    let bare = svc
        .create("/agents", json!({"name": "No numbers", "prompt": "p", "status": "active", "runtime": {"type": "echo"}}))
        .await;
    let (status, body) = post_call(
        &svc,
        json!({"agent_id": bare["id"], "phone_number": "+15551234567"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("no_phone_number_configured")),
        "{body}"
    );

    let draft = svc
        .create(
            "/agents",
            json!({"name": "Draft", "prompt": "p", "status": "draft", "runtime": {"type": "echo"}}),
        )
        .await;
    let (status, body) = post_call(
        &svc,
        json!({"agent_id": draft["id"], "phone_number": "+15551234567"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("agent_not_active")),
        "{body}"
    );

    let (status, body) = svc
        .request(reqwest::Method::GET, "/calls", None, None, &[])
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    let (status, _) = svc
        .request(
            reqwest::Method::GET,
            "/calls",
            None,
            Some("sk_live_wrong"),
            &[],
        )
        .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_calls_is_rate_limited_per_key() {
    let svc = TestService::start_with(|config| config.api.rate_limit_per_minute = 3).await;
    let mut last = (0, Value::Null);
    for _ in 0..5 {
        last = svc.get("/agents").await;
    }
    assert_eq!(last.0, 429, "{}", last.1);
    assert_eq!(last.1["error"]["code"], "rate_limited");
    assert!(
        last.1["error"]["details"]["reset_at"].is_string(),
        "{}",
        last.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organisations_see_only_their_own_objects_and_lists_paginate() {
    let svc = TestService::start().await;
    for n in 0..5 {
        svc.create(
            "/agents",
            json!({"name": format!("agent {n}"), "prompt": "p", "runtime": {"type": "echo"}}),
        )
        .await;
    }
    let (status, page) = svc.get("/agents?limit=2&offset=2").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["pagination"]["total"], 5);
    assert_eq!(page["pagination"]["limit"], 2);
    assert_eq!(page["pagination"]["offset"], 2);
    assert!(page["meta"]["request_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("req_")));

    let dir = svc.dir.path().to_path_buf();
    let other_key = call_control::store::Store::open(&format!(
        "sqlite://{}",
        dir.join("dialcore.db").display()
    ))
    .await
    .expect("store")
    .create_key("other", 1000)
    .await
    .expect("key");
    let id = page["data"][0]["id"].as_str().expect("id").to_string();
    let (status, body) = svc
        .request(
            reqwest::Method::GET,
            &format!("/agents/{id}"),
            None,
            Some(&other_key),
            &[],
        )
        .await;
    assert_eq!(
        status, 404,
        "another organisation's agent is not found: {body}"
    );
    let (_, list) = svc
        .request(reqwest::Method::GET, "/agents", None, Some(&other_key), &[])
        .await;
    assert_eq!(list["pagination"]["total"], 0, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_retry_returns_the_original_and_creates_nothing() {
    let svc = TestService::start().await;
    let agent = svc
        .echo_agent_with_number("127.0.0.1:5999".parse().expect("addr"), "+15550001111")
        .await;
    let body = json!({"agent_id": agent.id, "phone_number": "+15551234567", "call_settings": {"join_timeout": "1s"}});
    let first = svc
        .request(
            reqwest::Method::POST,
            "/calls",
            Some(body.clone()),
            Some(&svc.key),
            &[("X-Idempotency-Key", "retry-1")],
        )
        .await;
    let second = svc
        .request(
            reqwest::Method::POST,
            "/calls",
            Some(body),
            Some(&svc.key),
            &[("X-Idempotency-Key", "retry-1")],
        )
        .await;
    assert_eq!(first.0, 201, "{}", first.1);
    assert_eq!(second.0, 201);
    assert_eq!(first.1["data"]["id"], second.1["data"]["id"]);
    let (_, calls) = svc.get("/calls").await;
    assert_eq!(calls["pagination"]["total"], 1, "{calls}");
}

/// A webhook receiver: records every delivery; fails the first `fail_first`.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    fail_first: Arc<Mutex<u32>>,
}

impl Receiver {
    async fn serve_on(self, listener: tokio::net::TcpListener) {
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let this = self.clone();
                async move {
                    this.seen.lock().expect("lock").push((headers, body));
                    let mut fail = this.fail_first.lock().expect("lock");
                    if *fail > 0 {
                        *fail -= 1;
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        );
        axum::serve(listener, app).await.expect("receiver serves");
    }

    async fn start(fail_first: u32) -> (Self, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let receiver = Self::default();
        *receiver.fail_first.lock().expect("lock") = fail_first;
        tokio::spawn(receiver.clone().serve_on(listener));
        (receiver, addr)
    }

    async fn wait_for(&self, count: usize) -> Vec<(HeaderMap, String)> {
        for _ in 0..400 {
            let seen = self.seen.lock().expect("lock").clone();
            if seen.len() >= count {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "expected {count} webhook deliveries, got {}",
            self.seen.lock().expect("lock").len()
        );
    }
}

fn verify_signature(secret: &str, headers: &HeaderMap, body: &str) {
    let timestamp = headers["x-dialcore-timestamp"].to_str().expect("timestamp");
    let signature = headers["x-dialcore-signature"].to_str().expect("signature");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(signature, expected, "signature over timestamp and body");
}

async fn busy_call(svc: &TestService) -> (String, sipp::SippProcess) {
    sipp::require_sipp();
    let sipp = tokio::task::spawn_blocking(|| {
        let mut process = sipp::Sipp::server(sipp::Scenario::file("uas_busy.xml"))
            .calls(1)
            .spawn()
            .expect("SIPp");
        process
            .wait_listening(Duration::from_secs(10))
            .expect("listening");
        process
    })
    .await
    .expect("thread");
    let agent = svc
        .echo_agent_with_number(sipp.address(), "+15550001111")
        .await;
    let (status, body) = svc
        .post(
            "/calls",
            json!({"agent_id": agent.id, "phone_number": "+15551234567"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (body["data"]["id"].as_str().expect("id").to_string(), sipp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_ended_webhook_is_signed_and_retried_until_delivered() {
    let (receiver, addr) = Receiver::start(1).await;
    let svc = TestService::start().await;
    svc.create(
        "/webhooks",
        json!({"url": format!("http://{addr}/hook"), "events": ["call.ended"], "secret": "whsec_test_0123456789"}),
    )
    .await;
    // Encrypted at rest, decrypted to sign each delivery below.
    let stored = svc.stored("SELECT secret FROM webhooks").await;
    assert!(
        stored[0].starts_with("dcs1:") && !stored[0].contains("whsec_test"),
        "{stored:?}"
    );
    let (call_id, sipp) = busy_call(&svc).await;
    let deliveries = receiver.wait_for(2).await;
    let (first, second) = (&deliveries[0], &deliveries[1]);
    assert_eq!(
        first.0["x-dialcore-delivery"], second.0["x-dialcore-delivery"],
        "the retry is the same delivery"
    );
    let body: Value = serde_json::from_str(&second.1).expect("JSON body");
    assert_eq!(body["type"], "call.ended");
    assert_eq!(body["data"]["id"], call_id.as_str());
    assert_eq!(body["data"]["outcome"], "busy");
    verify_signature("whsec_test_0123456789", &second.0, &second.1);
    drop(sipp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_record_and_a_pending_webhook_survive_a_restart() {
    // A port where nothing listens yet: the delivery stays pending.
    let parked = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = parked.local_addr().expect("addr");
    drop(parked);
    // Enough attempts that the delivery is still pending after the restart.
    let patient = |config: &mut call_control::config::Config| {
        config.webhooks.max_attempts = 12;
        config.webhooks.base_delay_ms = 50;
    };
    let svc = TestService::start_with(patient).await;
    svc.create(
        "/webhooks",
        json!({"url": format!("http://{addr}/hook"), "events": ["call.ended"], "secret": "whsec_restart_0123456789"}),
    )
    .await;
    let (call_id, sipp) = busy_call(&svc).await;
    let before = svc.wait_terminal(&call_id, Duration::from_secs(20)).await;
    drop(sipp);
    let dir = svc.stop().await;

    let mut config = service::config_in(dir.path());
    patient(&mut config);
    let svc = TestService::start_in(dir, config).await;
    let (status, after) = svc.get(&format!("/calls/{call_id}")).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["data"]["status"], before["status"]);
    assert_eq!(after["data"]["outcome"], before["outcome"]);

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("rebind the parked port");
    let receiver = Receiver::default();
    tokio::spawn(receiver.clone().serve_on(listener));
    let deliveries = receiver.wait_for(1).await;
    let body: Value = serde_json::from_str(&deliveries[0].1).expect("JSON");
    assert_eq!(body["data"]["id"], call_id.as_str());
    verify_signature(
        "whsec_restart_0123456789",
        &deliveries[0].0,
        &deliveries[0].1,
    );
}
