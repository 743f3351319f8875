//! Guards who may reach what: bearer authentication (401 whose `details.reason` says what to
//! send), organisation isolation (another organisation's ids are 404 and its objects never
//! listed), per-key rate limiting (429 with `details.reset_at` and `Retry-After`), and the
//! unauthenticated service endpoints (`/healthz`, `/metrics`, `/openapi.json`).

mod api_support;

use std::future::IntoFuture;

use api_support::{id_of, TestApi};
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn requests_without_a_valid_key_are_unauthorized() {
    let api = TestApi::start().await;
    for (key, header) in [
        (None, None),
        (Some("sk_live_wrong"), None),
        (None, Some("Basic dXNlcjpwYXNz")),
        (None, Some("Bearer")),
    ] {
        let headers: Vec<(&str, &str)> = header.map(|h| ("authorization", h)).into_iter().collect();
        let reply = api
            .send(Method::GET, "/api/public/v1/agents", key, None, &headers)
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.code(), "unauthorized");
        assert!(reply.body["error"]["message"].is_string());
        assert_eq!(
            reply.body["error"]["details"]["reason"],
            json!("Include Authorization: Bearer <your_api_key>"),
            "a 401 says what to send"
        );
    }
    // Writes are refused too, and create nothing.
    let reply = api
        .send(
            Method::POST,
            "/api/public/v1/agents",
            Some("sk_live_wrong"),
            Some(&json!({"name": "x"})),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let list = api.get("/api/public/v1/agents").await;
    assert_eq!(list.body["pagination"]["total"], json!(0));
}

#[tokio::test]
async fn organisations_see_only_their_own_objects() {
    let api = TestApi::start().await;
    let trunk = api.trunk(5060).await;
    let agent = api.agent("active", "You remind {{name}}.").await;
    let number = api.number("+14155550100", &trunk, Some(&agent)).await;
    let webhook = id_of(
        &api.post(
            "/api/public/v1/webhooks",
            json!({"url": "https://example.com/hook", "events": ["call.ended"]}),
        )
        .await,
    );
    let other = Some(api.other_key.as_str());
    for (kind, id) in [
        ("agents", &agent),
        ("trunks", &trunk),
        ("phone-numbers", &number),
    ] {
        let path = format!("/api/public/v1/{kind}/{id}");
        let read = api.send(Method::GET, &path, other, None, &[]).await;
        assert_eq!(read.status, StatusCode::NOT_FOUND, "{path}");
        assert!(read.code().ends_with("_not_found"), "{}", read.code());
        let patch = api
            .send(Method::PATCH, &path, other, Some(&json!({})), &[])
            .await;
        assert_eq!(patch.status, StatusCode::NOT_FOUND, "{path}");
        let delete = api.send(Method::DELETE, &path, other, None, &[]).await;
        assert_eq!(delete.status, StatusCode::NOT_FOUND, "{path}");
        let list = api
            .send(
                Method::GET,
                &format!("/api/public/v1/{kind}"),
                other,
                None,
                &[],
            )
            .await;
        assert_eq!(list.status, StatusCode::OK);
        assert_eq!(list.data(), &json!([]));
        assert_eq!(list.body["pagination"]["total"], json!(0));
        // Still there for its owner.
        assert_eq!(api.get(&path).await.status, StatusCode::OK);
    }
    let delete = api
        .send(
            Method::DELETE,
            &format!("/api/public/v1/webhooks/{webhook}"),
            other,
            None,
            &[],
        )
        .await;
    assert_eq!(delete.code(), "webhook_not_found");
    let read = api
        .send(
            Method::GET,
            &format!("/api/public/v1/webhooks/{webhook}"),
            other,
            None,
            &[],
        )
        .await;
    assert_eq!(read.code(), "webhook_not_found");
    // Another organisation's agent cannot place calls, nor its trunk hold numbers.
    let call = api
        .send(
            Method::POST,
            "/api/public/v1/calls",
            other,
            Some(&json!({"agent_id": agent, "phone_number": "+14155550123"})),
            &[],
        )
        .await;
    assert_eq!(call.status, StatusCode::NOT_FOUND);
    assert_eq!(call.code(), "agent_not_found");
    let number = api
        .send(
            Method::POST,
            "/api/public/v1/phone-numbers",
            other,
            Some(&json!({"number": "+14155550111", "trunk_id": trunk})),
            &[],
        )
        .await;
    assert_eq!(number.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        number.body["error"]["details"]["fields"]["trunk_id"],
        json!("no trunk with this id")
    );
}

#[tokio::test]
async fn a_key_beyond_its_rate_limit_gets_429_with_reset_at() {
    let api = TestApi::with_rate_limit(3).await;
    for _ in 0..3 {
        let reply = api.get("/api/public/v1/agents").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.headers["x-ratelimit-limit"], "3");
    }
    let limited = api.get("/api/public/v1/agents").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.code(), "rate_limited");
    let reset_at = limited.body["error"]["details"]["reset_at"]
        .as_str()
        .expect("reset_at is a string");
    let reset_at = chrono::DateTime::parse_from_rfc3339(reset_at).expect("RFC 3339");
    let wait = reset_at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        wait.num_seconds() <= 60 && wait.num_seconds() >= 0,
        "{wait}"
    );
    let retry_after: i64 = limited.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after));
    // POSTs are counted and refused the same way.
    let post = api
        .post("/api/public/v1/agents", json!({"name": "late"}))
        .await;
    assert_eq!(post.status, StatusCode::TOO_MANY_REQUESTS);
    // The limit is per key: the other organisation's key still passes.
    let other = api
        .send(
            Method::GET,
            "/api/public/v1/agents",
            Some(&api.other_key),
            None,
            &[],
        )
        .await;
    assert_eq!(other.status, StatusCode::OK);
}

#[tokio::test]
async fn service_endpoints_need_no_key() {
    let api = TestApi::start().await;
    let health = api.send(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], json!("ok"));

    api.get("/api/public/v1/agents").await;
    let metrics = api.send(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = String::from_utf8(metrics.bytes).expect("utf-8");
    assert!(text.contains("dialcore_live_calls 0"), "{text}");
    assert!(
        text.contains(
            "dialcore_http_requests_total{method=\"GET\",route=\"/api/public/v1/agents\",code=\"200\"} 1"
        ),
        "{text}"
    );

    for path in ["/openapi.json", "/api/public/v1/openapi.json"] {
        let doc = api.send(Method::GET, path, None, None, &[]).await;
        assert_eq!(doc.status, StatusCode::OK);
        assert_eq!(doc.body["openapi"], json!("3.1.0"));
        let paths = doc.body["paths"].as_object().expect("paths");
        for route in [
            "/api/public/v1/agents",
            "/api/public/v1/agents/{id}",
            "/api/public/v1/phone-numbers",
            "/api/public/v1/phone-numbers/{id}",
            "/api/public/v1/trunks",
            "/api/public/v1/trunks/{id}",
            "/api/public/v1/calls",
            "/api/public/v1/calls/{id}",
            "/api/public/v1/calls/{id}/hangup",
            "/api/public/v1/calls/{id}/recording",
            "/api/public/v1/webhooks",
            "/api/public/v1/webhooks/{id}",
            "/healthz",
            "/metrics",
            "/openapi.json",
        ] {
            assert!(
                paths.contains_key(route),
                "{route} missing from the document"
            );
        }
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_format() {
    let api = TestApi::start().await;
    let reply = api.get("/api/public/v1/nothing-here").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "not_found");
    let reply = api
        .send(
            Method::PUT,
            "/api/public/v1/agents",
            Some(&api.key),
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    let meta: &Value = &api.get("/api/public/v1/agents").await.body["meta"];
    assert!(meta["request_id"]
        .as_str()
        .expect("request id")
        .starts_with("req_"));
    assert!(meta["ts"].is_string());
}

#[tokio::test]
async fn the_router_serves_over_a_real_listener() {
    let api = TestApi::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("address");
    let server = tokio::spawn(axum::serve(listener, api.router.clone()).into_future());
    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .expect("healthz answers");
    assert_eq!(health.status(), reqwest::StatusCode::OK);
    let created = client
        .post(format!("http://{addr}/api/public/v1/agents"))
        .bearer_auth(&api.key)
        .json(&json!({"name": "over tcp"}))
        .send()
        .await
        .expect("create answers");
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    assert!(created.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .starts_with("req_"));
    let body: Value = created.json().await.expect("JSON body");
    assert_eq!(body["data"]["name"], json!("over tcp"));
    let denied = client
        .get(format!("http://{addr}/api/public/v1/agents"))
        .send()
        .await
        .expect("list answers");
    assert_eq!(denied.status(), reqwest::StatusCode::UNAUTHORIZED);
    server.abort();
}
