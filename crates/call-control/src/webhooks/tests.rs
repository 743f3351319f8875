//! Signatures, the backoff schedule, and deliveries to a real local HTTP receiver.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::sync::mpsc;

use super::*;
use crate::model::Webhook;
use crate::store::test_support::temp_store;
use crate::store::DeliveryState;

const SECRET: &str = "whsec_test";

#[test]
fn signature_known_answer() {
    let body = br#"{"id":"evt_1","type":"call.ended"}"#;
    // HMAC-SHA256("whsec_test", "1700000000." + body), computed independently.
    let expected = "v1=a6c5a6fcfd4d0d407ff2acfb10098822777004749a25a293c030973d9d296ced";
    assert_eq!(sign(SECRET, 1_700_000_000, body), expected);
    assert!(verify(SECRET, 1_700_000_000, body, expected));
    assert!(
        !verify(SECRET, 1_700_000_001, body, expected),
        "timestamp is signed"
    );
    assert!(!verify("other", 1_700_000_000, body, expected));
    assert!(!verify(SECRET, 1_700_000_000, body, "v1=zz"));
    assert!(!verify(SECRET, 1_700_000_000, body, "a6c5a6fc"));
}

#[test]
fn backoff_doubles_from_the_base_and_is_capped() {
    let base = Duration::from_secs(1);
    let schedule: Vec<u64> = (1..=8).map(|n| backoff(base, n).as_secs()).collect();
    assert_eq!(schedule, [1, 2, 4, 8, 16, 32, 64, 128]);
    assert_eq!(backoff(base, 13), MAX_BACKOFF);
    assert_eq!(backoff(base, u32::MAX), MAX_BACKOFF);
    assert_eq!(
        backoff(Duration::from_millis(50), 3),
        Duration::from_millis(200)
    );
}

#[test]
fn envelope_has_id_type_time_and_data() {
    let at = chrono::DateTime::parse_from_rfc3339("2025-01-02T03:04:05Z")
        .expect("literal")
        .with_timezone(&Utc);
    let body = envelope(
        "evt_x",
        "call.ringing",
        at,
        serde_json::json!({"id": "call_1"}),
    );
    assert_eq!(
        body,
        serde_json::json!({
            "id": "evt_x",
            "type": "call.ringing",
            "created_at": "2025-01-02T03:04:05.000Z",
            "data": {"id": "call_1"},
        })
    );
}

/// One request as the receiver saw it.
#[derive(Debug)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
    answered: StatusCode,
}

/// A receiver on 127.0.0.1:0 that answers 500 to the first `failures`
/// requests and 200 afterwards; returns its URL and the requests seen.
async fn receiver(failures: usize) -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let count = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            let count = Arc::clone(&count);
            async move {
                let answered = if count.fetch_add(1, Ordering::SeqCst) < failures {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                };
                let _ = tx.send(Received {
                    headers,
                    body,
                    answered,
                });
                answered
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let addr = listener.local_addr().expect("receiver address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), rx)
}

async fn subscribe(store: &Store, url: &str, events: &[&str]) -> Webhook {
    let hook = Webhook {
        id: new_id("whk"),
        org_id: "org_a".into(),
        url: url.into(),
        events: events.iter().map(|e| e.to_string()).collect(),
        secret: SECRET.into(),
        created_at: Utc::now(),
    };
    store.insert_webhook(&hook).await.expect("insert webhook");
    hook
}

fn fast(max_attempts: u32) -> DispatchConfig {
    DispatchConfig {
        max_attempts,
        base_delay: Duration::from_millis(50),
        timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(20),
        // The receivers of these tests listen on loopback.
        destinations: DestinationPolicy::new(true),
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a request within 20 s")
        .expect("receiver alive")
}

fn header<'a>(request: &'a Received, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("header {name}"))
}

#[tokio::test]
async fn delivery_fails_first_then_succeeds_with_a_valid_signature() {
    let (store, _dir) = temp_store().await;
    let (url, mut requests) = receiver(1).await;
    subscribe(&store, &url, &["call.ended"]).await;
    subscribe(&store, &url, &["call.ringing"]).await; // not subscribed to call.ended
    let webhooks = Webhooks::start_with(store.clone(), fast(5));
    let queued = webhooks
        .emit(
            "org_a",
            "call.ended",
            serde_json::json!({"id": "call_1", "status": "ended"}),
        )
        .await
        .expect("emit");
    assert_eq!(queued, 1);
    assert_eq!(
        webhooks
            .emit("org_b", "call.ended", serde_json::json!({}))
            .await
            .expect("emit"),
        0,
        "other organisations' webhooks are not called"
    );

    let first = next(&mut requests).await;
    let second = next(&mut requests).await;
    assert_eq!(first.answered, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(second.answered, StatusCode::OK);
    assert_eq!(first.body, second.body, "a retry sends the same event");
    let delivery = header(&second, HEADER_DELIVERY).to_owned();
    assert_eq!(header(&first, HEADER_DELIVERY), delivery);
    assert_eq!(header(&second, HEADER_EVENT), "call.ended");
    for request in [&first, &second] {
        let timestamp: i64 = header(request, HEADER_TIMESTAMP)
            .parse()
            .expect("unix seconds");
        assert!(verify(
            SECRET,
            timestamp,
            &request.body,
            header(request, HEADER_SIGNATURE)
        ));
    }
    let body: serde_json::Value = serde_json::from_slice(&second.body).expect("JSON body");
    assert_eq!(body["type"], "call.ended");
    assert_eq!(body["data"]["id"], "call_1");
    assert!(body["id"].as_str().is_some_and(|id| id.starts_with("evt_")));

    // The outbox row ends delivered (the store write follows the 200 closely).
    let record = loop {
        let record = store.get_delivery(&delivery).await.expect("delivery row");
        if record.state != DeliveryState::Pending {
            break record;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(record.state, DeliveryState::Delivered);
    assert_eq!(record.entry.attempts, 1, "one failed attempt recorded");
    webhooks.stop();
}

#[tokio::test]
async fn delivery_is_given_up_after_max_attempts() {
    let (store, _dir) = temp_store().await;
    let (url, mut requests) = receiver(usize::MAX).await;
    subscribe(&store, &url, &["call.ringing"]).await;
    let webhooks = Webhooks::start_with(store.clone(), fast(2));
    webhooks
        .emit("org_a", "call.ringing", serde_json::json!({"id": "call_2"}))
        .await
        .expect("emit");
    let first = next(&mut requests).await;
    next(&mut requests).await;
    let delivery = header(&first, HEADER_DELIVERY).to_owned();
    let record = loop {
        let record = store.get_delivery(&delivery).await.expect("delivery row");
        if record.state != DeliveryState::Pending {
            break record;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(record.state, DeliveryState::Dead);
    assert_eq!(record.last_error.as_deref(), Some("HTTP 500"));
    webhooks.stop();
}

#[tokio::test]
async fn a_failed_delivery_keeps_the_error_but_not_the_urls_token() {
    let (store, _dir) = temp_store().await;
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port");
    let url = format!("http://{refused}/hook?token=s3cret");
    subscribe(&store, &url, &["call.ringing"]).await;
    let webhooks = Webhooks::start_with(store.clone(), fast(1));
    webhooks
        .emit("org_a", "call.ringing", serde_json::json!({"id": "call_3"}))
        .await
        .expect("emit");
    let delivery: String = sqlx::query_scalar("SELECT id FROM webhook_outbox")
        .fetch_one(store.pool())
        .await
        .expect("one delivery");
    let record = loop {
        let record = store.get_delivery(&delivery).await.expect("delivery row");
        if record.state != DeliveryState::Pending {
            break record;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(record.state, DeliveryState::Dead);
    let error = record.last_error.expect("the error is kept");
    assert!(!error.contains("s3cret"), "{error}");
    webhooks.stop();
}

#[tokio::test]
async fn pending_deliveries_of_a_previous_run_are_sent() {
    let (store, _dir) = temp_store().await;
    let (url, mut requests) = receiver(0).await;
    let hook = subscribe(&store, &url, &["call.ended"]).await;
    // Left in the outbox by a run that stopped before delivering it.
    let now = Utc::now();
    store
        .enqueue_delivery(&OutboxEntry {
            id: "dlv_left_over".into(),
            org_id: "org_a".into(),
            webhook_id: hook.id.clone(),
            event: "call.ended".into(),
            payload: envelope(
                "evt_old",
                "call.ended",
                now,
                serde_json::json!({"id": "call_3"}),
            ),
            attempts: 2,
            next_attempt_at: now,
            created_at: now,
        })
        .await
        .expect("enqueue");
    let webhooks = Webhooks::start_with(store.clone(), fast(5));
    let request = next(&mut requests).await;
    assert_eq!(header(&request, HEADER_DELIVERY), "dlv_left_over");
    webhooks.stop();
}

/// The dispatcher settings of [`fast`] with the default destination policy.
fn refusing(max_attempts: u32) -> DispatchConfig {
    DispatchConfig {
        destinations: DestinationPolicy::default(),
        ..fast(max_attempts)
    }
}

/// A loopback TCP listener that is never served: `assert_never_connected` tells whether
/// anything reached it.
fn silent_listener() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("non-blocking");
    let port = listener.local_addr().expect("addr").port();
    (listener, port)
}

/// Called once the dispatcher gave up: a connection it made would be queued by now.
fn assert_never_connected(listener: &std::net::TcpListener) {
    match listener.accept() {
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, from)) => panic!("the refused receiver was connected to from {from}"),
        Err(error) => panic!("listener: {error}"),
    }
}

/// Every delivery in the outbox, once none is pending any more.
async fn settled_deliveries(store: &Store) -> Vec<crate::store::DeliveryRecord> {
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM webhook_outbox ORDER BY id")
        .fetch_all(store.pool())
        .await
        .expect("deliveries");
    let mut records = Vec::new();
    for id in ids {
        let record = loop {
            let record = store.get_delivery(&id).await.expect("delivery row");
            if record.state != DeliveryState::Pending {
                break record;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        records.push(record);
    }
    records
}

#[tokio::test]
async fn a_receiver_on_loopback_is_refused_when_connecting_and_never_reached() {
    let (store, _dir) = temp_store().await;
    let (listener, port) = silent_listener();
    // A literal IP (no resolver runs for it), a name that resolves to loopback, and
    // loopback in IPv6 clothes.
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://[::ffff:7f00:1]:{port}/hook"),
    ] {
        subscribe(&store, &url, &["call.ringing"]).await;
    }
    let webhooks = Webhooks::start_with(store.clone(), refusing(5));
    let queued = webhooks
        .emit("org_a", "call.ringing", serde_json::json!({"id": "call_4"}))
        .await
        .expect("emit");
    assert_eq!(queued, 3);
    let records = settled_deliveries(&store).await;
    assert_eq!(records.len(), 3);
    for record in records {
        assert_eq!(
            record.state,
            DeliveryState::Dead,
            "refusals are not retried"
        );
        let error = record.last_error.expect("the reason is kept");
        assert!(error.contains("loopback address"), "{error}");
        assert!(
            error.contains(crate::destinations::SETTING),
            "the error names the setting: {error}"
        );
    }
    assert_never_connected(&listener);
    webhooks.stop();
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (store, _dir) = temp_store().await;
    let (second, second_port) = silent_listener();
    let target = format!("http://127.0.0.1:{second_port}/elsewhere");
    let redirect = |status: StatusCode| {
        let target = target.clone();
        post(move || async move { (status, [(axum::http::header::LOCATION, target)]) })
    };
    let app = axum::Router::new()
        .route("/found", redirect(StatusCode::FOUND))
        .route("/temporary", redirect(StatusCode::TEMPORARY_REDIRECT));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let first = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    subscribe(&store, &format!("http://{first}/found"), &["call.ended"]).await;
    subscribe(
        &store,
        &format!("http://{first}/temporary"),
        &["call.ended"],
    )
    .await;
    // Loopback allowed, as in a test setup: the redirect alone is what is refused.
    let webhooks = Webhooks::start_with(store.clone(), fast(1));
    webhooks
        .emit("org_a", "call.ended", serde_json::json!({"id": "call_5"}))
        .await
        .expect("emit");
    let mut errors: Vec<String> = settled_deliveries(&store)
        .await
        .into_iter()
        .map(|record| {
            assert_eq!(record.state, DeliveryState::Dead);
            record.last_error.expect("error kept")
        })
        .collect();
    errors.sort();
    assert_eq!(errors, ["HTTP 302", "HTTP 307"]);
    assert_never_connected(&second);
    webhooks.stop();
}
