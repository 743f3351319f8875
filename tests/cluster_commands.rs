//! End to end: commands reach the node that runs the call. Two real nodes share one
//! database (as a cluster does; SQLite here, the store's PostgreSQL tests cover the other
//! backend), SIPp is the carrier. A call placed through node B's API runs on node B; a
//! hang-up sent to node A (the public API's `POST /calls/{id}/hangup`, and Twilio's
//! "update a call" with `Status=completed`) is forwarded to node B, which sends the BYE.
//! Every call carries the node that runs it, and every webhook is delivered once though
//! both nodes' dispatchers read the one outbox.

#[path = "support/service.rs"]
mod service;
#[path = "support/sipp.rs"]
mod sipp;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use service::TestService;

const CALL_DONE: Duration = Duration::from_secs(30);

/// Two nodes on one database: A (which provisions) and B.
async fn two_nodes() -> (TestService, TestService) {
    let a = TestService::start_with(|config| config.node.id = "node-a".into()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = service::config_in(dir.path());
    config.node.id = "node-b".into();
    // The same database file (and so the same key file next to it) as node A.
    config.database.url = format!("sqlite://{}", a.dir.path().join("dialcore.db").display());
    let b = TestService::start_in(dir, config).await;
    (a, b)
}

async fn place(svc: &TestService, agent: &str) -> String {
    let call = svc.place_call(agent, "+15551234567").await;
    assert_eq!(call["node_id"], svc_node(svc), "{call}");
    call["id"].as_str().expect("call id").to_owned()
}

fn svc_node(svc: &TestService) -> String {
    svc.handle.as_ref().expect("running").config.node.id.clone()
}

async fn answered(svc: &TestService, call_id: &str) -> Value {
    svc.wait_status(
        &format!("/calls/{call_id}"),
        &["in_progress", "ended", "failed", "cancelled"],
        Duration::from_millis(20),
        CALL_DONE,
    )
    .await
}

/// A webhook receiver: every delivery's id and body, as received.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<(String, Value)>>>);

impl Receiver {
    async fn start() -> (Receiver, std::net::SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let receiver = Receiver::default();
        let seen = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let seen = seen.clone();
                async move {
                    let delivery = headers
                        .get("x-dialcore-delivery")
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let body = serde_json::from_str(&body).expect("JSON body");
                    seen.0.lock().expect("lock").push((delivery, body));
                    // A slow receiver: the delivery stays pending in the outbox while the
                    // other node's dispatcher polls it.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    axum::http::StatusCode::OK
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serves") });
        (receiver, addr)
    }

    fn seen(&self) -> Vec<(String, Value)> {
        self.0.lock().expect("lock").clone()
    }
}

/// Milliseconds from `before` to the call's `ended_at`.
fn ended_after_ms(call: &Value, before: chrono::DateTime<chrono::Utc>) -> i64 {
    let ended: chrono::DateTime<chrono::Utc> = call["ended_at"]
        .as_str()
        .unwrap_or_else(|| panic!("ended_at: {call}"))
        .parse()
        .expect("RFC 3339");
    (ended - before).num_milliseconds()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_up_sent_to_any_node_ends_the_call_on_the_node_that_runs_it() {
    let sipp = sipp::one_call_server("uas_answer.xml", sipp::Transport::Udp, |s| s.calls(2)).await;
    let (a, b) = two_nodes().await;
    let agent = a
        .echo_agent_with_number(sipp.address(), "+15550001111")
        .await;
    let (receiver, hook) = Receiver::start().await;
    a.create(
        "/webhooks",
        json!({"url": format!("http://{hook}/hook"), "events": ["call.answered", "call.ended"]}),
    )
    .await;
    let mut calls = Vec::new();

    // The public API.
    let call_id = place(&b, &agent.id).await;
    let live = answered(&b, &call_id).await;
    assert_eq!(live["status"], "in_progress", "{live}");
    let (_, seen_from_a) = a.get(&format!("/calls/{call_id}")).await;
    assert_eq!(seen_from_a["data"]["node_id"], "node-b", "{seen_from_a}");
    let before = chrono::Utc::now();
    let (status, body) = a.post(&format!("/calls/{call_id}/hangup"), json!({})).await;
    assert_eq!(status, 202, "node A forwards to node B: {body}");
    assert_eq!(body["data"]["id"], call_id.as_str(), "{body}");
    let ended = a.wait_terminal(&call_id, CALL_DONE).await;
    assert_eq!(ended["status"], "ended", "{ended}");
    assert_eq!(ended["end_reason"], "api_hangup", "{ended}");
    let took = ended_after_ms(&ended, before);
    assert!(
        took <= 200,
        "node B ended the call {took} ms after node A was asked"
    );
    // Over: another hang-up anywhere is a conflict, not forwarded.
    let (status, body) = a.post(&format!("/calls/{call_id}/hangup"), json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "call_already_ended", "{body}");

    // The recording was written on node B (its own directory): node A serves it from
    // there, ranges included.
    assert!(ended["recording_url"].is_string(), "{ended}");
    let recording = |svc: &TestService, range: Option<&'static str>| {
        let request = svc
            .client
            .get(svc.url(&format!("/calls/{call_id}/recording")))
            .bearer_auth(service::API_KEY);
        let request = match range {
            Some(range) => request.header("range", range),
            None => request,
        };
        async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            (status, headers, response.bytes().await.expect("body"))
        }
    };
    let (status, _, on_b) = recording(&b, None).await;
    assert_eq!(status, 200);
    assert!(
        !a.recordings_dir().join(format!("{call_id}.wav")).exists(),
        "not on node A's disk"
    );
    let (status, headers, via_a) = recording(&a, None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "audio/wav");
    assert!(via_a.len() > 44 && via_a == on_b, "the same WAV bytes");
    let (status, headers, part) = recording(&a, Some("bytes=0-43")).await;
    assert_eq!(status, 206);
    assert_eq!(
        headers["content-range"],
        format!("bytes 0-43/{}", on_b.len()).as_str()
    );
    assert_eq!(part, on_b.slice(0..44));
    calls.push(call_id);

    // Twilio's "update a call", as voice-AI frameworks hang up.
    let call_id = place(&b, &agent.id).await;
    assert_eq!(answered(&b, &call_id).await["status"], "in_progress");
    let org = a
        .handle
        .as_ref()
        .expect("running")
        .store
        .org_for_key(service::API_KEY)
        .await
        .expect("store")
        .expect("the key's organisation");
    let url = format!(
        "http://{}/2010-04-01/Accounts/{org}/Calls/{call_id}.json",
        a.http
    );
    let before = chrono::Utc::now();
    let response = a
        .client
        .post(&url)
        .basic_auth(&org, Some(service::API_KEY))
        .form(&[("Status", "completed")])
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["sid"], call_id.as_str(), "{body}");
    assert_eq!(body["status"], "completed", "{body}");
    let ended = a.wait_terminal(&call_id, CALL_DONE).await;
    let took = ended_after_ms(&ended, before);
    assert!(took <= 200, "ended {took} ms after node A was asked");
    calls.push(call_id);

    // call.answered and call.ended of each call, each once: wait for the four, then give
    // both dispatchers (polling every 50 ms) time to send a duplicate if they would.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while receiver.seen().len() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "webhooks: {:?}",
            receiver.seen()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let seen = receiver.seen();
    let mut got: Vec<(String, String)> = seen
        .iter()
        .map(|(_, body)| {
            (
                body["data"]["id"].as_str().unwrap_or_default().to_owned(),
                body["type"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    got.sort();
    let mut expected: Vec<(String, String)> = calls
        .iter()
        .flat_map(|id| {
            [
                (id.clone(), "call.answered".to_owned()),
                (id.clone(), "call.ended".to_owned()),
            ]
        })
        .collect();
    expected.sort();
    assert_eq!(got, expected, "each webhook once: {seen:?}");

    sipp::finish(sipp).await.assert_calls_succeeded(2);
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_up_for_a_node_that_is_gone_says_so() {
    let sipp = sipp::one_call_server("uas_answer.xml", sipp::Transport::Udp, |s| s).await;
    let (a, b) = two_nodes().await;
    let agent = a
        .echo_agent_with_number(sipp.address(), "+15550001111")
        .await;
    let call_id = place(&b, &agent.id).await;
    assert_eq!(answered(&b, &call_id).await["status"], "in_progress");
    // Node B's row goes (as when it is lost and its calls are being ended).
    let store = a.handle.as_ref().expect("running").store.clone();
    store.deregister_node("node-b").await.expect("deregister");
    let (status, body) = a.post(&format!("/calls/{call_id}/hangup"), json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "call_not_live", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("node-b") && message.contains("not running"),
        "{message}"
    );
    // Node B itself still hangs up its call.
    let (status, body) = b.post(&format!("/calls/{call_id}/hangup"), json!({})).await;
    assert_eq!(status, 202, "{body}");
    b.wait_terminal(&call_id, CALL_DONE).await;
    sipp::finish(sipp).await.assert_calls_succeeded(1);
    b.stop().await;
    a.stop().await;
}
