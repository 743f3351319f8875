//! Cluster mode end to end (issue 14): two `dialcore serve` nodes on one PostgreSQL
//! database behind Kamailio running `deploy/kamailio/kamailio.cfg`, with SIPp as the
//! carrier calling in through Kamailio (RTP straight to the node that answered).
//!
//! It guards, in order, on one set of servers (PostgreSQL and Kamailio start once):
//! 0. outbound: a node with `[sip] outbound_proxy` set to Kamailio places its call
//!    through it (INVITE and BYE record-routed), the record readable from the other node;
//! 1. spreading: calls through Kamailio land on both nodes, all answered and ended
//!    normally, each one recorded once and readable from either node's API;
//! 2. draining: a node drained with a call still up stops getting calls (Kamailio fails
//!    over on its 503, and its OPTIONS probe takes the node out) while its live call goes
//!    on to its end; then the node exits by itself, and comes back into the set when it
//!    is started again (a rolling restart);
//! 3. a crash: `kill -9` of a node with calls up on it; calls placed after it all
//!    succeed on the survivor (failover on timeout, then the probe takes the dead node
//!    out), the survivor's own calls are untouched, and the survivor ends the dead node's
//!    calls as `node_lost` once its lease (3 s here) expires.
//!
//! Every record names the node that answered it (`node_id`).

#[path = "../../../tests/support/sipp.rs"]
mod sipp;

mod cluster_support;

use std::collections::BTreeSet;
use std::time::Duration;

use cluster_support::{eventually, CallLog, Kamailio, KamailioSettings, Node, NodeSpec};
use serde_json::{json, Value};

/// The agent's number the carrier calls.
const NUMBER: &str = "+15550002222";
/// How often Kamailio probes each node, and how long a node has to answer an INVITE
/// before Kamailio tries the next one.
const SETTINGS: KamailioSettings = KamailioSettings {
    ping_interval_secs: 1,
    fr_timer_ms: 2000,
};

fn caller_via_proxy() -> sipp::Scenario {
    sipp::Scenario::file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/sipp/service/caller_via_proxy.xml"
    ))
}

/// SIPp placing `calls` calls at `rate` per second through `kamailio`, each held `hold`.
fn callers(kamailio: &Kamailio, calls: u64, rate: f64, hold: Duration) -> sipp::Sipp {
    sipp::Sipp::client(caller_via_proxy(), kamailio.address())
        .service(NUMBER)
        .calls(calls)
        .rate(rate, Duration::from_secs(1))
        .hold(hold)
        .timeout(Duration::from_secs(40))
}

async fn run(sipp: sipp::Sipp) -> sipp::SippOutcome {
    let process = sipp.spawn().expect("SIPp starts");
    sipp::finish(process).await
}

/// Waits until `api_node`'s API lists every call of `call_ids` as ended by the caller's
/// BYE, with RTP received; `node_id`, once calls carry it, must be `node_of(call_id)`.
async fn assert_ended_normally(
    api_node: &Node,
    call_ids: &BTreeSet<String>,
    node_of: impl Fn(&str) -> &'static str,
) {
    let calls = eventually(
        &format!(
            "node {} lists {} calls as ended by the caller",
            api_node.spec.id,
            call_ids.len()
        ),
        Duration::from_secs(10),
        || async {
            let calls = api_node.api.inbound_calls().await;
            let pending: Vec<String> = call_ids
                .iter()
                .filter(|id| !matches!(calls.get(*id), Some(call) if call["status"] == "ended"))
                .cloned()
                .collect();
            if pending.is_empty() {
                Ok(calls)
            } else {
                let shown: Vec<Value> = pending
                    .iter()
                    .take(3)
                    .map(|id| calls.get(id).cloned().unwrap_or(json!({"missing": id})))
                    .collect();
                Err(format!("{} not ended yet, e.g. {shown:?}", pending.len()))
            }
        },
    )
    .await;
    for call_id in call_ids {
        let call = &calls[call_id];
        assert_eq!(call["outcome"], "caller_hangup", "{call}");
        assert_eq!(call["to_number"], NUMBER, "{call}");
        let media = &call["media_stats"];
        assert!(
            media["packets_received"].as_u64().unwrap_or(0) > 10,
            "RTP reached the node straight from the caller: {call}"
        );
        assert_eq!(
            call["node_id"],
            node_of(call_id),
            "the record names the node that answered: {call}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_behind_kamailio_share_calls_drain_and_survive_a_crash() {
    sipp::require_sipp();
    cluster_support::kamailio_program();
    let Some(database) = cluster_support::postgres_database() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    // Kamailio's address is picked first: the nodes send their outbound calls to it.
    let kamailio_address = cluster_support::free_sip_address();
    let spec_a = NodeSpec {
        id: "node-a",
        http: cluster_support::free_http_address(),
        sip: cluster_support::free_sip_address(),
        rtp_ports: (20_000, 21_999),
        outbound_proxy: kamailio_address,
    };
    let spec_b = NodeSpec {
        id: "node-b",
        http: cluster_support::free_http_address(),
        sip: cluster_support::free_sip_address(),
        rtp_ports: (22_000, 23_999),
        outbound_proxy: kamailio_address,
    };
    // The carrier's side of the outbound call (phase 0): the trunk points at it.
    let carrier = sipp::one_call_server(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/sipp/service/carrier_answer_via_proxy.xml"
        ),
        sipp::Transport::Udp,
        |sipp| sipp.timeout(Duration::from_secs(30)),
    )
    .await;
    let (port_a, port_b) = (spec_a.sip.port(), spec_b.sip.port());
    let node_of = |port: u16| if port == port_a { "node-a" } else { "node-b" };

    // Node A creates the schema and the bootstrap key; the trunk, agent and number are
    // written through it before node B starts, so B's routing directory has them from
    // its start (another node's writes reach it on its 30 s refresh).
    let mut a = Node::start(spec_a.clone(), &database, dir.path()).await;
    let agent = a
        .api
        .create(
            "/agents",
            json!({"name": "echo", "prompt": "Repeat.", "status": "active",
                   "runtime": {"type": "echo"}}),
        )
        .await;
    // Kamailio is the source of every INVITE the nodes see; it and SIPp are on loopback.
    let trunk = a
        .api
        .create(
            "/trunks",
            json!({"name": "carrier via Kamailio", "host": "127.0.0.1",
                   "port": carrier.port(), "transport": "udp",
                   "allowed_networks": ["127.0.0.0/8"]}),
        )
        .await;
    a.api
        .create(
            "/phone-numbers",
            json!({"number": NUMBER, "trunk_id": trunk["id"], "agent_id": agent["id"]}),
        )
        .await;
    let mut b = Node::start(spec_b.clone(), &database, dir.path()).await;
    let kamailio = Kamailio::start(kamailio_address, &[a.sip_uri(), b.sip_uri()], &SETTINGS);
    let down = |node: &Node| format!("dispatcher: node {} down", node.sip_uri());
    let up = |node: &Node| format!("dispatcher: node {} up", node.sip_uri());

    // 0. Outbound through Kamailio ([sip] outbound_proxy): node A's call reaches the
    // carrier record-routed by Kamailio, and its BYE (at max_duration) goes the same way.
    let call = a
        .api
        .create(
            "/calls",
            json!({"agent_id": agent["id"], "phone_number": "+15551234567",
                   "call_settings": {"max_duration": "2s"}}),
        )
        .await;
    let call_id = call["id"].as_str().expect("call id").to_owned();
    let carrier = sipp::finish(carrier).await;
    carrier.assert_calls_succeeded(1);
    let via_kamailio = format!("SIP/2.0/UDP {kamailio_address}");
    for request in ["invite", "bye"] {
        let line = carrier
            .logs
            .lines()
            .find(|line| line.starts_with(&format!("{request} via=")))
            .unwrap_or_else(|| {
                panic!("the carrier logged no {request}\n{}", carrier.diagnostics())
            });
        assert!(
            line.contains(&via_kamailio),
            "the node's {request} reached the carrier through Kamailio: {line}"
        );
    }
    let call = eventually(
        "the outbound call is over",
        Duration::from_secs(10),
        || async {
            let (status, reply) = b
                .api
                .send(reqwest::Method::GET, &format!("/calls/{call_id}"), None)
                .await;
            match reply["data"]["status"].as_str() {
                Some("ended" | "failed") => Ok(reply["data"].clone()),
                _ => Err(format!("{status} {reply}")),
            }
        },
    )
    .await;
    assert_eq!(call["status"], "ended", "{call}");
    assert_eq!(call["outcome"], "max_duration", "{call}");

    // 1. Spreading: 40 calls through Kamailio land on both nodes and end normally.
    let outcome = run(callers(&kamailio, 40, 20.0, Duration::from_secs(1))).await;
    outcome.assert_calls_succeeded(40);
    let spread = CallLog::parse(&outcome.logs);
    assert_eq!(spread.answered.len(), 40, "{spread:?}");
    assert_eq!(spread.ended.len(), 40, "{spread:?}");
    let (on_a, on_b) = (spread.answered_by(port_a), spread.answered_by(port_b));
    assert_eq!(
        on_a + on_b,
        40,
        "every call answered by one of the nodes: {spread:?}"
    );
    assert!(
        on_a >= 10 && on_b >= 10,
        "round robin spreads the calls: {on_a} on node A, {on_b} on node B"
    );
    let spread_calls: BTreeSet<String> = spread.answered.keys().cloned().collect();
    let node_of_call = |call_id: &str| node_of(spread.answered[call_id]);
    // Every record is in the shared database: both nodes' APIs list all 40.
    assert_ended_normally(&a, &spread_calls, node_of_call).await;
    assert_ended_normally(&b, &spread_calls, node_of_call).await;

    // 2. Draining node A with a call up on it (placed straight to A, so that it is A's).
    let held = sipp::Sipp::client(
        sipp::Scenario::file(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/sipp/service/caller_media.xml"
        )),
        a.spec.sip,
    )
    .service(NUMBER)
    .calls(1)
    .timeout(Duration::from_secs(30))
    .spawn()
    .expect("SIPp starts");
    eventually(
        "node A holds the direct call",
        Duration::from_secs(10),
        || async {
            match a.live_calls().await {
                Some(1) => Ok(()),
                other => Err(format!("live calls {other:?}")),
            }
        },
    )
    .await;
    let (status, reply) = a
        .api
        .send(reqwest::Method::POST, "/admin/drain", None)
        .await;
    assert_eq!(status, 202, "POST /admin/drain: {reply}");
    assert_eq!(reply["data"]["live_calls"], 1, "{reply}");
    let outcome = run(callers(&kamailio, 20, 20.0, Duration::from_secs(1))).await;
    outcome.assert_calls_succeeded(20);
    let drained = CallLog::parse(&outcome.logs);
    assert_eq!(
        drained.answered_by(port_b),
        20,
        "a draining node takes no new call: {drained:?}\n{}",
        kamailio.log_tail()
    );
    // Its 503 to OPTIONS took it out of the set (only a probe marks a node down on 503).
    kamailio
        .wait_for_log(&down(&a), 1, Duration::from_secs(5))
        .await;
    // Its live call went on to its end, then the node stopped by itself.
    sipp::finish(held).await.assert_calls_succeeded(1);
    let status = a.exit_within(Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "a drained node exits cleanly: {status}\n{}",
        a.log_tail()
    );
    let drained_calls = drained.calls_of(port_b);
    assert_ended_normally(&b, &drained_calls, |_| "node-b").await;

    // The rolling restart: node A comes back (same id and addresses) and Kamailio's
    // probe puts it back in the set. Until leases exist a starting node fails every
    // unfinished call of the database, so it is started when node B holds none.
    eventually(
        "node B has no live call",
        Duration::from_secs(10),
        || async {
            match b.live_calls().await {
                Some(0) => Ok(()),
                other => Err(format!("live calls {other:?}")),
            }
        },
    )
    .await;
    drop(a);
    let a = Node::start(spec_a.clone(), &database, dir.path()).await;
    kamailio
        .wait_for_log(&up(&a), 1, Duration::from_secs(10))
        .await;

    // 3. A crash: calls up on both nodes, node B killed with SIGKILL.
    let live = callers(&kamailio, 10, 20.0, Duration::from_secs(8))
        .spawn()
        .expect("SIPp starts");
    // Up means answered and recorded so: all 10 in progress in the shared database (no
    // other call is), split over both nodes.
    eventually(
        "the 10 calls are in progress on both nodes",
        Duration::from_secs(10),
        || async {
            let recorded = a
                .api
                .inbound_calls()
                .await
                .into_values()
                .filter(|call| call["status"] == "in_progress")
                .count();
            let (on_a, on_b) = (a.live_calls().await, b.live_calls().await);
            match (recorded, on_a, on_b) {
                (10, Some(on_a), Some(on_b)) if on_a > 0 && on_b > 0 && on_a + on_b == 10 => Ok(()),
                other => Err(format!(
                    "(recorded in progress, live on A, live on B) {other:?}"
                )),
            }
        },
    )
    .await;
    b.kill().await;
    let after = run(callers(&kamailio, 20, 10.0, Duration::from_secs(1))).await;
    after.assert_calls_succeeded(20);
    let after_log = CallLog::parse(&after.logs);
    assert_eq!(
        after_log.answered_by(port_a),
        20,
        "calls after the crash go to the survivor: {after_log:?}\n{}",
        kamailio.log_tail()
    );
    kamailio
        .wait_for_log(&down(&b), 1, Duration::from_secs(5))
        .await;
    eprintln!(
        "after the crash: {} INVITE(s) failed over on timeout before the probe took node B out",
        kamailio.count("did not answer INVITE")
    );
    let after_calls = after_log.calls_of(port_a);
    assert_ended_normally(&a, &after_calls, |_| "node-a").await;

    // The calls up at the crash: the survivor's ended normally; the dead node's lost
    // their BYE (Kamailio answered it 408).
    let live = sipp::finish(live).await;
    let live_log = CallLog::parse(&live.logs);
    assert_eq!(live_log.answered.len(), 10, "{}", live.diagnostics());
    let (survived, lost) = (live_log.calls_of(port_a), live_log.calls_of(port_b));
    assert_eq!(
        live_log.ended,
        survived,
        "exactly the survivor's calls ended normally\n{}",
        live.diagnostics()
    );
    assert_eq!(
        live.failed_calls as usize,
        lost.len(),
        "{}",
        live.diagnostics()
    );
    assert_ended_normally(&a, &survived, |_| "node-a").await;
    // The dead node's calls: ended by the survivor once the lease ran out (the lease,
    // the survivor's next round a third of it later, and some slack).
    eventually(
        "the dead node's calls are ended as node_lost",
        cluster_support::LEASE * 3,
        || async {
            let calls = a.api.inbound_calls().await;
            for call_id in &lost {
                let call = calls
                    .get(call_id)
                    .ok_or_else(|| format!("the dead node's call {call_id} is not recorded"))?;
                assert_eq!(call["node_id"], "node-b", "{call}");
                assert_ne!(call["status"], "ended", "never a normal end: {call}");
                if call["status"] != "failed" || call["end_reason"] != "node_lost" {
                    return Err(format!("not ended yet: {call}"));
                }
                assert_eq!(call["outcome"], "error", "{call}");
            }
            Ok(())
        },
    )
    .await;
    drop((a, b, kamailio));
}
