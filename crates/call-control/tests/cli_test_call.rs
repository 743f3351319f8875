//! The `dialcore test-call` binary against a real service on loopback: it prints the
//! estimate, creates the run or batch, waits for it and prints the measurement table; its
//! exit status says whether every run passed (0), a run failed or missed a threshold (1),
//! or the service refused the request (2). Runs use mode `bot` (no SIP needed).

use std::process::Output;

use call_control::config::Config;
use call_control::service::{Service, ServiceHandle};
use serde_json::{json, Value};

const KEY: &str = "sk_live_clitest0123456789abcdefghij";

async fn start(dir: &tempfile::TempDir) -> ServiceHandle {
    let env = [
        ("DIALCORE_HTTP_LISTEN", "127.0.0.1:0".to_owned()),
        ("DIALCORE_SIP_LISTEN", "127.0.0.1:0".to_owned()),
        (
            "DIALCORE_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("cli.db").display()),
        ),
        (
            "DIALCORE_RECORDINGS_DIR",
            dir.path().join("recordings").display().to_string(),
        ),
        ("DIALCORE_API_KEY", KEY.to_owned()),
        ("DIALCORE_LOG_LEVEL", "warn".to_owned()),
        (
            "DIALCORE_SECURITY_ALLOW_PRIVATE_DESTINATIONS",
            "true".to_owned(),
        ),
    ];
    let config = Config::from_env_and_toml(None, env.into_iter().map(|(k, v)| (k.to_owned(), v)))
        .expect("test configuration is valid");
    Service::start(config).await.expect("service starts")
}

async fn echo_agent(base: &str) -> String {
    let reply: Value = reqwest::Client::new()
        .post(format!("{base}/api/public/v1/agents"))
        .bearer_auth(KEY)
        .json(
            &json!({"name": "echo", "prompt": "Repeat.", "greeting": "Hello!",
                      "status": "active", "runtime": {"type": "echo"}}),
        )
        .send()
        .await
        .expect("service answers")
        .json()
        .await
        .expect("JSON");
    reply["data"]["id"].as_str().expect("agent id").to_owned()
}

async fn dialcore(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_dialcore"))
        .args(args)
        .env("DIALCORE_API_KEY", KEY)
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("dialcore runs")
}

fn show(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_call_command_runs_waits_and_reports() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let service = start(&dir).await;
    let base = format!("http://{}", service.http_addr);
    let agent = echo_agent(&base).await;
    let common = [
        "test-call",
        "--agent",
        agent.as_str(),
        "--mode",
        "bot",
        "--url",
        base.as_str(),
        "--timeout",
        "240",
    ];

    // One run: priced, created, waited for and tabulated; it passes.
    let output = dialcore(&common).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert!(
        stdout.contains("estimated cost 8 cents"),
        "{}",
        show(&output)
    );
    assert!(stdout.contains("Created tcr_"), "{}", show(&output));
    assert!(stdout.contains("latency p50 ms"), "{}", show(&output));
    let row = stdout
        .lines()
        .find(|line| line.starts_with("tcr_"))
        .unwrap_or_else(|| panic!("no run row: {}", show(&output)));
    assert!(row.contains("completed"), "{row}");

    // A batch of two with a gate no call can hold (the agent cannot reply within 1 ms of
    // the bot's speech: audio comes in 20 ms frames): exit 1, the failed gate named, the
    // aggregate printed.
    let mut batch = common.to_vec();
    batch.extend_from_slice(&["--runs", "2", "--threshold", "response_latency_p95_ms=1"]);
    let output = dialcore(&batch).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(1), "{}", show(&output));
    assert!(stdout.contains("Created tcb_"), "{}", show(&output));
    assert_eq!(
        stdout
            .lines()
            .filter(|line| line.starts_with("tcr_") && line.contains("completed"))
            .count(),
        2,
        "{}",
        show(&output)
    );
    assert!(
        stdout.contains("thresholds not held: response_latency_p95_ms"),
        "{}",
        show(&output)
    );
    assert!(stdout.contains("Batch aggregate:"), "{}", show(&output));

    // A request the service refuses: its code and message, exit 2.
    let output = dialcore(&[
        "test-call",
        "--agent",
        "agt_unknown",
        "--mode",
        "bot",
        "--url",
        base.as_str(),
    ])
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", show(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("HTTP 404 agent_not_found"),
        "{}",
        show(&output)
    );

    service.shutdown().await.expect("service stops");
}
