//! Guards what a tenant can spend and how many calls it can hold (issue 12): `POST /calls`
//! reserves a minute of credit and a live-call slot in one transaction with the call, so that
//! many concurrent requests cannot overdraw the balance or pass `[api]
//! max_concurrent_calls_per_org`; the reservation is released when the call ends. And the
//! idempotency crash window: the key is stored with the call before it is dialled, so that a
//! retry after the process died between storing the call and answering replays the call and
//! dials nothing, and a retry while the first request is still being placed replays it too.
//!
//! Everything runs the real router over a real SQLite file and the real engine.

mod api_support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use api_support::{silent_udp_port, TestApi};
use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use axum::response::Response;
use call_control::store::{CallFilter, OrgUsage};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tower::ServiceExt;

const CALLS: &str = "/api/public/v1/calls";
/// Price of a minute in the test configuration.
const PER_MINUTE: i64 = 2;

/// An active agent with a number on a trunk nobody answers on: its calls stay ringing until
/// hung up, holding their reservation.
async fn agent(api: &TestApi) -> String {
    let trunk = api.trunk(silent_udp_port()).await;
    let agent = api.agent("active", "hello").await;
    api.number("+14155550100", &trunk, Some(&agent)).await;
    agent
}

fn place(agent: &str) -> Value {
    json!({"agent_id": agent, "phone_number": "+14155550123"})
}

/// `POST /calls` with the `acme` key (and `X-Idempotency-Key: key` when given).
fn request(api: &TestApi, body: &Value, key: Option<&str>) -> Request<Body> {
    let mut request = Request::post(CALLS)
        .header("authorization", format!("Bearer {}", api.key))
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("x-idempotency-key", key);
    }
    request
        .body(Body::from(body.to_string()))
        .expect("valid request")
}

async fn json_of(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, serde_json::from_slice(&bytes).expect("JSON body"))
}

/// Sends `requests` all at once; their statuses and bodies.
async fn concurrently(api: &TestApi, requests: Vec<Request<Body>>) -> Vec<(StatusCode, Value)> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let router = api.router.clone();
            tokio::spawn(async move {
                json_of(router.oneshot(request).await.expect("infallible")).await
            })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.expect("request task"));
    }
    replies
}

async fn hang_up_all(api: &TestApi, replies: &[(StatusCode, Value)]) {
    for (status, body) in replies {
        if *status == StatusCode::CREATED {
            let id = body["data"]["id"].as_str().expect("id");
            let hangup = api.post(&format!("{CALLS}/{id}/hangup"), json!({})).await;
            assert_eq!(hangup.status, StatusCode::ACCEPTED, "{}", hangup.body);
        }
    }
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        api.state.engine.wait_idle(),
    )
    .await
    .expect("the cancelled calls end");
}

fn statuses(replies: &[(StatusCode, Value)]) -> Vec<(u16, Value)> {
    replies
        .iter()
        .map(|(status, body)| (status.as_u16(), body["error"]["code"].clone()))
        .collect()
}

fn count(replies: &[(StatusCode, Value)], status: StatusCode, code: Option<&str>) -> usize {
    replies
        .iter()
        .filter(|(s, body)| {
            *s == status && code.is_none_or(|code| body["error"]["code"] == json!(code))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_cannot_overdraw_the_balance() {
    let api = TestApi::start().await;
    let agent = agent(&api).await;
    let org = api.org_of(&api.key).await;
    let balance = api.state.store.balance_cents(&org).await.expect("balance");
    // Three minutes of credit left.
    api.state
        .store
        .add_credits(&org, 3 * PER_MINUTE - balance)
        .await
        .expect("set balance");

    let requests = (0..10)
        .map(|_| request(&api, &place(&agent), None))
        .collect();
    let replies = concurrently(&api, requests).await;
    assert_eq!(
        count(&replies, StatusCode::CREATED, None),
        3,
        "{:?}",
        statuses(&replies)
    );
    assert_eq!(
        count(
            &replies,
            StatusCode::PAYMENT_REQUIRED,
            Some("insufficient_credits")
        ),
        7,
        "{:?}",
        statuses(&replies)
    );
    let refused = replies
        .iter()
        .find(|(status, _)| *status == StatusCode::PAYMENT_REQUIRED)
        .map(|(_, body)| &body["error"]["details"])
        .expect("a refusal");
    assert_eq!(
        (
            &refused["balance_cents"],
            &refused["reserved_cents"],
            &refused["required_cents"]
        ),
        (&json!(6), &json!(6), &json!(2))
    );
    let (_, total) = api
        .state
        .store
        .list_calls(&org, &CallFilter::default(), 50, 0)
        .await
        .expect("list");
    assert_eq!(total, 3, "a refused request stores no call");
    assert_eq!(
        api.state.store.org_usage(&org).await.expect("usage"),
        OrgUsage {
            balance_cents: 6,
            reserved_cents: 6,
            live_calls: 3
        }
    );

    // Never answered: nothing charged, everything released, credit for calls again.
    hang_up_all(&api, &replies).await;
    assert_eq!(
        api.state.store.org_usage(&org).await.expect("usage"),
        OrgUsage {
            balance_cents: 6,
            reserved_cents: 0,
            live_calls: 0
        }
    );
    let again = api.post(CALLS, place(&agent)).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    hang_up_all(&api, &[(again.status, again.body.clone())]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organisation_holds_at_most_its_cap_of_live_calls() {
    let api = TestApi::with_config(|config| config.api.max_concurrent_calls_per_org = 2).await;
    let agent = agent(&api).await;
    let org = api.org_of(&api.key).await;

    let requests = (0..3)
        .map(|_| request(&api, &place(&agent), None))
        .collect();
    let replies = concurrently(&api, requests).await;
    assert_eq!(
        count(&replies, StatusCode::CREATED, None),
        2,
        "{:?}",
        statuses(&replies)
    );
    let limited: Vec<_> = replies
        .iter()
        .filter(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(limited.len(), 1, "{:?}", statuses(&replies));
    let body = &limited[0].1;
    assert_eq!(body["error"]["code"], json!("concurrent_call_limit"));
    assert_eq!(body["error"]["details"]["limit"], json!(2));
    assert_eq!(body["error"]["details"]["live_calls"], json!(2));

    // Another organisation is not held back by this one's calls.
    let other = api
        .send(
            axum::http::Method::POST,
            CALLS,
            Some(&api.other_key.clone()),
            Some(&place("agt_missing")),
            &[],
        )
        .await;
    assert_eq!(other.code(), "agent_not_found");

    hang_up_all(&api, &replies).await;
    assert_eq!(
        api.state
            .store
            .org_usage(&org)
            .await
            .expect("usage")
            .live_calls,
        0
    );
    let again = api.post(CALLS, place(&agent)).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    hang_up_all(&api, &[(again.status, again.body.clone())]).await;
}

/// Wakes [`drive_until`] when the request it drives can make progress.
struct Woken(Notify);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.notify_one();
    }
}

/// Polls `request` only when it can progress, and before each poll asks `stop`: once `stop`
/// says yes, the request is left where it is (not polled again), as a process that stops
/// right there would leave it. Returns its response if it finished first.
async fn drive_until<F, S, SF>(request: &mut Pin<Box<F>>, mut stop: S) -> Option<F::Output>
where
    F: Future,
    S: FnMut() -> SF,
    SF: Future<Output = bool>,
{
    let woken = Arc::new(Woken(Notify::new()));
    let waker = Waker::from(Arc::clone(&woken));
    loop {
        if let Poll::Ready(output) = request.as_mut().poll(&mut Context::from_waker(&waker)) {
            return Some(output);
        }
        woken.0.notified().await;
        if stop().await {
            return None;
        }
    }
}

async fn calls_of(api: &TestApi, org: &str) -> u64 {
    api.state
        .store
        .list_calls(org, &CallFilter::default(), 50, 0)
        .await
        .expect("list")
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_crash_between_storing_and_answering_dials_nothing() {
    let api = TestApi::start().await;
    let agent = agent(&api).await;
    let org = api.org_of(&api.key).await;
    let body = place(&agent);

    // The first request runs until its call is stored, and no further: the process died.
    let mut first = Box::pin(
        api.router
            .clone()
            .oneshot(request(&api, &body, Some("k-crash"))),
    );
    let finished = drive_until(&mut first, || async { calls_of(&api, &org).await > 0 }).await;
    assert!(
        finished.is_none(),
        "the request stopped once its call was stored"
    );
    drop(first);
    assert_eq!(
        api.state.engine.live_calls(),
        0,
        "the call was never dialled"
    );

    // Restart on the same database, then the client retries with the same key.
    let api = api.reopen().await;
    let retry = api
        .post_raw_with_key(CALLS, "k-crash", body.to_string().as_bytes())
        .await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert_eq!(
        retry
            .headers
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(calls_of(&api, &org).await, 1, "the retry created no call");
    assert_eq!(api.state.engine.live_calls(), 0, "and dialled nothing");
    let id = retry.data()["id"].as_str().expect("id");
    let stored = api.get(&format!("{CALLS}/{id}")).await;
    assert_eq!(stored.status, StatusCode::OK);
    assert_eq!(
        stored.data()["status"],
        json!("failed"),
        "recovery ended it"
    );
    assert_eq!(stored.data()["end_reason"], json!("service_restart"));
    // Recovery released what the interrupted call held.
    let usage = api.state.store.org_usage(&org).await.expect("usage");
    assert_eq!((usage.reserved_cents, usage.live_calls), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_while_the_call_is_being_placed_replays_it() {
    let api = TestApi::start().await;
    let agent = agent(&api).await;
    let org = api.org_of(&api.key).await;
    let body = place(&agent);

    // The first request has stored its call but not answered yet.
    let mut first = Box::pin(
        api.router
            .clone()
            .oneshot(request(&api, &body, Some("k-slow"))),
    );
    let finished = drive_until(&mut first, || async { calls_of(&api, &org).await > 0 }).await;
    assert!(finished.is_none());
    let retry = api
        .post_raw_with_key(CALLS, "k-slow", body.to_string().as_bytes())
        .await;
    assert_eq!(retry.status, StatusCode::CREATED, "{}", retry.body);
    assert_eq!(calls_of(&api, &org).await, 1);

    // The first request then answers with the same call.
    let (status, answered) = json_of(first.await.expect("infallible")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(answered["data"]["id"], retry.data()["id"]);
    assert_eq!(answered["data"], retry.data().clone());
    assert_eq!(api.state.engine.live_calls(), 1, "dialled once");
    hang_up_all(&api, &[(status, answered)]).await;
}
