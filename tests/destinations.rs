//! End to end: destinations a tenant names (trunk hosts, agent WebSocket URLs, webhook
//! URLs) are refused when they are, or resolve to, loopback, private or link-local
//! addresses, unless `[security] allow_private_destinations` is set.
//!
//! Guards issue 12 (SSRF): the real service, with the default setting, is pointed at real
//! listening loopback sockets (by literal IP where the records were written while the
//! setting was on, and by the name `localhost`, which the API cannot judge and the check at
//! connect time must): the call fails with the reason on its record, and the socket
//! receives nothing. The API refuses literal forbidden IPs with a 422 naming the field,
//! the value and the setting. SIP-mode test runs, whose agent leg goes to the service's own
//! bot on loopback, still work with the default. Nothing here sends outside 127.0.0.0/8:
//! refused destinations are never connected to.

#[path = "support/service.rs"]
mod service;
#[path = "support/sipp.rs"]
mod sipp;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use serde_json::{json, Value};
use service::TestService;

const CALL_DONE: Duration = Duration::from_secs(60);
const SETTING: &str = "allow_private_destinations";

/// A service with the default destination policy (private destinations refused).
async fn refusing_service() -> TestService {
    TestService::start_with(|config| config.security.allow_private_destinations = false).await
}

/// A UDP socket standing for a SIP carrier on loopback; read without blocking.
fn udp_carrier() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_nonblocking(true).expect("non-blocking");
    let addr = socket.local_addr().expect("addr");
    (socket, addr)
}

/// A TCP listener standing for an agent or webhook receiver on loopback.
fn tcp_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("non-blocking");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

/// Fails the test if anything reached `socket`. Called once the service has given up on
/// the destination, so whatever it sent would already be queued on the socket.
fn assert_nothing_received(socket: &UdpSocket) {
    let mut buffer = [0u8; 2048];
    match socket.recv_from(&mut buffer) {
        Err(error) if error.kind() == ErrorKind::WouldBlock => {}
        Ok((len, from)) => panic!(
            "the refused carrier received {len} bytes from {from}: {:?}",
            String::from_utf8_lossy(&buffer[..len])
        ),
        Err(error) => panic!("carrier socket: {error}"),
    }
}

/// Fails the test if a connection reached `listener` (see [`assert_nothing_received`]).
fn assert_no_connection(listener: &TcpListener) {
    match listener.accept() {
        Err(error) if error.kind() == ErrorKind::WouldBlock => {}
        Ok((_, from)) => panic!("the refused destination was connected to from {from}"),
        Err(error) => panic!("listener: {error}"),
    }
}

/// An active echo agent with `number` on a trunk to `host:port` (created through the API).
async fn echo_agent_on_trunk(svc: &TestService, host: &str, port: u16, number: &str) -> String {
    let agent = svc
        .create(
            "/agents",
            json!({"name": "echo", "prompt": "hi", "status": "active", "runtime": {"type": "echo"}}),
        )
        .await;
    let trunk = svc
        .create(
            "/trunks",
            json!({"name": "carrier", "host": host, "port": port, "transport": "udp"}),
        )
        .await;
    svc.create(
        "/phone-numbers",
        json!({"number": number, "trunk_id": trunk["id"], "agent_id": agent["id"]}),
    )
    .await;
    agent["id"].as_str().expect("agent id").to_owned()
}

/// Places a call of `agent` and returns its record once it is over.
async fn call_until_over(svc: &TestService, agent: &str) -> Value {
    let created = svc
        .create(
            "/calls",
            json!({"agent_id": agent, "phone_number": "+15557654321"}),
        )
        .await;
    svc.wait_terminal(created["id"].as_str().expect("call id"), CALL_DONE)
        .await
}

fn field_error(reply: &Value, field: &str) -> String {
    assert_eq!(reply["error"]["code"], "validation_error", "{reply}");
    reply["error"]["details"]["fields"][field]
        .as_str()
        .unwrap_or_else(|| panic!("no error for {field}: {reply}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_literal_private_destinations_naming_field_value_and_setting() {
    let svc = refusing_service().await;

    let (status, reply) = svc
        .post(
            "/webhooks",
            json!({"url": "http://127.0.0.1:9/hook", "events": ["call.ended"]}),
        )
        .await;
    assert_eq!(status, 422, "{reply}");
    let message = field_error(&reply, "url");
    assert!(
        message.contains("127.0.0.1 is a loopback address"),
        "{message}"
    );
    assert!(message.contains(SETTING), "{message}");
    assert!(
        message.contains("DIALCORE_SECURITY_ALLOW_PRIVATE_DESTINATIONS"),
        "{message}"
    );

    let (status, reply) = svc
        .post(
            "/trunks",
            json!({"name": "metadata", "host": "169.254.169.254", "port": 80}),
        )
        .await;
    assert_eq!(status, 422, "{reply}");
    let message = field_error(&reply, "host");
    assert!(
        message.contains("169.254.169.254 is a link-local address"),
        "{message}"
    );

    let (status, reply) = svc
        .post(
            "/agents",
            json!({"name": "a", "runtime": {"type": "websocket", "url": "ws://[::ffff:10.0.0.7]:8080/agent"}}),
        )
        .await;
    assert_eq!(status, 422, "{reply}");
    let message = field_error(&reply, "runtime.url");
    assert!(message.contains("private address"), "{message}");

    // Headers (often the agent's credentials) never go over an unencrypted ws:// URL.
    let (status, reply) = svc
        .post(
            "/agents",
            json!({"name": "a", "runtime": {"type": "websocket", "url": "ws://agent.example/stream",
                "headers": {"Authorization": "Bearer agent-secret"}}}),
        )
        .await;
    assert_eq!(status, 422, "{reply}");
    let message = field_error(&reply, "runtime.url");
    assert!(message.contains("ws://"), "{message}");
    assert!(message.contains(SETTING), "{message}");

    // A name is judged when it is connected to; updates are checked like creations.
    let trunk = svc
        .create(
            "/trunks",
            json!({"name": "named", "host": "sip.example.com"}),
        )
        .await;
    let (status, reply) = svc
        .request(
            reqwest::Method::PATCH,
            &format!("/trunks/{}", trunk["id"].as_str().expect("id")),
            Some(json!({"host": "10.1.2.3"})),
            Some(&svc.key),
            &[],
        )
        .await;
    assert_eq!(status, 422, "{reply}");
    assert!(field_error(&reply, "host").contains("10.1.2.3 is a private address"));
    svc.stop().await;

    // The setting opens all of it.
    let open = TestService::start().await;
    for (path, body) in [
        (
            "/webhooks",
            json!({"url": "http://127.0.0.1:9/hook", "events": ["call.ended"]}),
        ),
        (
            "/trunks",
            json!({"name": "local", "host": "127.0.0.1", "port": 5060}),
        ),
        (
            "/agents",
            json!({"name": "a", "runtime": {"type": "websocket", "url": "ws://127.0.0.1:9/agent",
                "headers": {"Authorization": "Bearer agent-secret"}}}),
        ),
    ] {
        let (status, reply) = open.post(path, body).await;
        assert_eq!(status, 201, "POST {path}: {reply}");
    }
    open.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_host_naming_loopback_is_refused_when_the_call_is_placed() {
    let (carrier, addr) = udp_carrier();
    let svc = refusing_service().await;
    let agent = echo_agent_on_trunk(&svc, "localhost", addr.port(), "+15550001111").await;
    let call = call_until_over(&svc, &agent).await;
    assert_eq!(call["status"], "failed", "{call}");
    assert_eq!(call["outcome"], "error", "{call}");
    assert_eq!(call["end_reason"], "trunk_destination_refused", "{call}");
    let message = call["error_message"].as_str().expect("error_message");
    assert!(message.contains("localhost resolves to"), "{message}");
    assert!(message.contains("loopback address"), "{message}");
    assert!(message.contains(SETTING), "{message}");
    assert_eq!(
        call["sip_call_id"],
        Value::Null,
        "no INVITE was built: {call}"
    );
    assert_nothing_received(&carrier);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trunk_stored_with_a_loopback_ip_is_refused_once_the_setting_is_off() {
    let (carrier, addr) = udp_carrier();
    // Written while private destinations were allowed...
    let svc = TestService::start().await;
    let agent = svc.echo_agent_with_number(addr, "+15550002222").await.id;
    let dir = svc.stop().await;
    // ...and dialled after the operator turned the setting off.
    let mut config = service::config_in(dir.path());
    config.security.allow_private_destinations = false;
    let svc = TestService::start_in(dir, config).await;
    let call = call_until_over(&svc, &agent).await;
    assert_eq!(call["status"], "failed", "{call}");
    assert_eq!(call["end_reason"], "trunk_destination_refused", "{call}");
    let message = call["error_message"].as_str().expect("error_message");
    assert!(
        message.contains("destination 127.0.0.1 is a loopback address"),
        "{message}"
    );
    assert_nothing_received(&carrier);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_websocket_naming_loopback_is_refused_when_the_call_connects() {
    sipp::require_sipp();
    let (agent_socket, agent_addr) = tcp_listener();
    let svc = refusing_service().await;
    // SIPp calls in from loopback; the trunk is only ever called from, never dialled.
    let agent = svc
        .create(
            "/agents",
            json!({"name": "ws", "prompt": "hi", "status": "active", "runtime":
                {"type": "websocket", "url": format!("ws://localhost:{}/agent", agent_addr.port())}}),
        )
        .await;
    let trunk = svc
        .create(
            "/trunks",
            json!({"name": "SIPp", "host": "localhost", "port": 5999, "allowed_networks": ["127.0.0.0/8"]}),
        )
        .await;
    svc.create(
        "/phone-numbers",
        json!({"number": "+15550003333", "trunk_id": trunk["id"], "agent_id": agent["id"]}),
    )
    .await;
    let media_port = sipp::free_port(sipp::Transport::Udp).expect("media port");
    let sipp = sipp::Sipp::client(
        sipp::Scenario::file("service/ws_caller_until_bye.xml"),
        svc.sip,
    )
    .service("+15550003333")
    .calls(1)
    .timeout(Duration::from_secs(90))
    .arg("-mp")
    .arg(media_port.to_string());
    let outcome = tokio::task::spawn_blocking(move || sipp.run().expect("SIPp ran"))
        .await
        .expect("SIPp thread");
    outcome.assert_success();
    let call = svc.wait_for_call("direction=inbound", CALL_DONE).await;
    let call = svc
        .wait_terminal(call["id"].as_str().expect("id"), CALL_DONE)
        .await;
    assert_eq!(call["outcome"], "error", "{call}");
    assert_eq!(call["end_reason"], "agent_destination_refused", "{call}");
    let message = call["error_message"].as_str().expect("error_message");
    assert!(message.contains("localhost resolves to"), "{message}");
    assert!(message.contains(SETTING), "{message}");
    assert_no_connection(&agent_socket);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_naming_loopback_is_given_up_with_the_reason_and_never_connected() {
    let (receiver, receiver_addr) = tcp_listener();
    let (carrier, carrier_addr) = udp_carrier();
    let svc = refusing_service().await;
    svc.create(
        "/webhooks",
        json!({"url": format!("http://localhost:{}/hook", receiver_addr.port()), "events": ["call.ended"]}),
    )
    .await;
    // A call that fails at once (its trunk is refused too) emits call.ended.
    let agent = echo_agent_on_trunk(&svc, "localhost", carrier_addr.port(), "+15550004444").await;
    call_until_over(&svc, &agent).await;
    let store = svc.handle.as_ref().expect("running").store.clone();
    let deadline = tokio::time::Instant::now() + CALL_DONE;
    let (state, error): (String, Option<String>) = loop {
        let row = only_delivery(&store).await;
        if let Some((state, error)) = row.filter(|(state, _)| state != "pending") {
            break (state, error);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery not given up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(state, "dead", "a refused receiver is not retried");
    let error = error.expect("the reason is kept");
    assert!(error.contains("localhost resolves to"), "{error}");
    assert!(error.contains(SETTING), "{error}");
    assert_no_connection(&receiver);
    assert_nothing_received(&carrier);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_test_runs_still_reach_the_services_own_bot_with_the_default_setting() {
    let svc = refusing_service().await;
    // The number's trunk is never dialled by a test run: the agent leg goes to the bot,
    // which the service itself runs on its loopback SIP address.
    let agent = echo_agent_on_trunk(&svc, "carrier.example", 5060, "+15550005555").await;
    let created = svc
        .create(
            "/test-calls",
            json!({"target_type": "agent", "target_id": agent, "direction": "outbound",
                "mode": "sip", "consent_to_charge": true,
                "scenario_prompt": "say Hello there.\nexpect_speech 5s\nhangup"}),
        )
        .await;
    let run = svc
        .wait_status(
            &format!("/test-calls/{}", created["id"].as_str().expect("run id")),
            &["completed", "failed"],
            Duration::from_millis(100),
            CALL_DONE,
        )
        .await;
    assert_eq!(run["status"], "completed", "{run}");
    svc.stop().await;
}

/// The state and last error of the one webhook delivery, if there is one yet.
async fn only_delivery(store: &call_control::store::Store) -> Option<(String, Option<String>)> {
    sqlx::query_as("SELECT state, last_error FROM webhook_outbox")
        .fetch_optional(store.pool())
        .await
        .expect("outbox readable")
}
