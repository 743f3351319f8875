//! End to end with an unmodified voice-AI framework as the agent: a Pipecat
//! bot (tests/agents/pipecat_twilio_agent.py: FastAPI WebSocket endpoint,
//! Pipecat's `parse_telephony_websocket`, `FastAPIWebsocketTransport` and
//! `TwilioFrameSerializer`, a real pipeline) answers calls SIPp places to
//! the real dialcore service, hears the caller, says goodbye and ends the
//! conversation the two ways Pipecat does:
//!
//! - closing the WebSocket at the end of its pipeline (`auto_hang_up=False`);
//! - Twilio's REST hang-up (`auto_hang_up=True` with `base_url` = dialcore),
//!   authenticated as Pipecat's examples do (account SID and auth token:
//!   the organisation id and an API key).
//!
//! Either way the caller hears the goodbye and then gets a BYE, and the call
//! is `ended`/`agent_hangup`. Guards issue 11 (before it, a Pipecat bot that
//! ended its pipeline left every call recorded as an error).
//!
//! Pipecat comes from PyPI (`pipecat-ai[websocket]`, pinned below) into a
//! virtualenv under the target directory (made with `$PYTHON`, default
//! `python3`), installed once and reused; set `DIALCORE_PIPECAT_PYTHON` to a
//! Python that already has it. When Python 3.11+ or the package cannot be
//! had, the tests print `SKIPPED` with the reason and pass without running.

#[path = "support/service.rs"]
mod service;
#[path = "support/sipp.rs"]
mod sipp;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};
use service::TestService;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// What the virtualenv gets (the serializer's `base_url` is needed).
const REQUIREMENTS: &[&str] = &["pipecat-ai[websocket]==1.14.0", "uvicorn>=0.32,<1"];
const CALL_DONE: Duration = Duration::from_secs(60);
/// Importing Pipecat takes seconds.
const AGENT_READY: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------- Pipecat

/// A Python with Pipecat, or why there is none (installed once per test binary).
fn pipecat_python() -> &'static Result<PathBuf, String> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Some(python) = std::env::var_os("DIALCORE_PIPECAT_PYTHON") {
            return Ok(PathBuf::from(python));
        }
        let name = REQUIREMENTS.join(" ");
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pipecat-venv");
        let python = venv.join("bin").join("python");
        let marker = venv.join("dialcore-requirements.txt");
        if std::fs::read_to_string(&marker).is_ok_and(|installed| installed == name) {
            return Ok(python);
        }
        install(&venv, &name).map(|()| python)
    })
}

/// Builds the virtualenv beside `venv` and moves it in place once complete,
/// so an interrupted or concurrent install never leaves a half one there.
fn install(venv: &Path, requirements: &str) -> Result<(), String> {
    let building = venv.with_extension(format!("building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    let base = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    run(
        std::process::Command::new(&base).args([
            "-c",
            "import sys; assert sys.version_info >= (3, 11), sys.version",
        ]),
        &format!("{base} 3.11 or newer (Pipecat needs it)"),
    )?;
    run(
        std::process::Command::new(&base)
            .arg("-m")
            .arg("venv")
            .arg(&building),
        "a virtualenv",
    )?;
    eprintln!(
        "installing {requirements} from PyPI into {}",
        venv.display()
    );
    run(
        std::process::Command::new(building.join("bin").join("python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                // Offline, pip gives up (and the tests skip) in about a minute.
                "--retries",
                "2",
                "--timeout",
                "20",
            ])
            .args(REQUIREMENTS),
        &format!("pip install {requirements}"),
    )?;
    std::fs::write(building.join("dialcore-requirements.txt"), requirements)
        .map_err(|e| format!("marking the virtualenv: {e}"))?;
    let _ = std::fs::remove_dir_all(venv);
    match std::fs::rename(&building, venv) {
        Ok(()) => Ok(()),
        // Another run finished first: its virtualenv serves.
        Err(_) if venv.join("dialcore-requirements.txt").exists() => {
            let _ = std::fs::remove_dir_all(&building);
            Ok(())
        }
        Err(e) => Err(format!("moving the virtualenv in place: {e}")),
    }
}

/// Runs a setup step to completion (blocking: called once, before the tests).
fn run(command: &mut std::process::Command, what: &str) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    Err(format!(
        "{what}: {} ({})",
        output.status,
        tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
    ))
}

/// The Pipecat bot, running; killed when dropped.
struct PipecatAgent {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr_log: PathBuf,
    _dir: tempfile::TempDir,
    url: String,
}

impl PipecatAgent {
    /// Starts the bot; `None` (after saying why) when Pipecat is not available.
    async fn start(args: &[&str], env: &[(&str, &str)]) -> Option<PipecatAgent> {
        let python = match tokio::task::spawn_blocking(pipecat_python)
            .await
            .expect("setup thread")
        {
            Ok(python) => python.clone(),
            Err(why) => {
                eprintln!("SKIPPED: Pipecat is not available: {why}");
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr_log = dir.path().join("agent.log");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/agents/pipecat_twilio_agent.py");
        let mut command = Command::new(python);
        command
            .arg(script)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).expect("log file"))
            .kill_on_drop(true);
        let mut child = command.spawn().expect("the Pipecat agent starts");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut agent = PipecatAgent {
            child,
            stdout,
            stderr_log,
            _dir: dir,
            url: String::new(),
        };
        let listening = agent.next_event("listening", AGENT_READY).await;
        let port = listening["port"].as_u64().expect("port");
        agent.url = format!("ws://127.0.0.1:{port}/media-stream");
        Some(agent)
    }

    /// The next line the bot reports, which must be `event`.
    async fn next_event(&mut self, event: &str, within: Duration) -> Value {
        let line = tokio::time::timeout(within, self.stdout.next_line()).await;
        let line = match line {
            Ok(Ok(Some(line))) => line,
            other => panic!(
                "the Pipecat agent reported no {event:?} ({other:?}); its log:\n{}",
                self.log()
            ),
        };
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("agent output {line:?}: {e}; log:\n{}", self.log()));
        assert_eq!(value["event"], event, "{value}; log:\n{}", self.log());
        value
    }

    /// What Pipecat logged (stderr).
    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    async fn stop(mut self) -> String {
        let _ = self.child.kill().await;
        self.log()
    }
}

// ---------------------------------------------------------------- the call

fn rms(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

/// Seconds of the agent's side (right channel) of a stereo recording with
/// sound (10 ms windows above an RMS of 1000).
async fn agent_seconds(svc: &TestService, call: &Value) -> f64 {
    let reader = svc.recording(call).await;
    let rate = reader.spec().sample_rate;
    let samples: Vec<i16> = reader
        .into_samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    let agent: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
    let window = rate as usize / 100;
    agent.chunks(window).filter(|w| rms(w) > 1000.0).count() as f64 * 0.01
}

/// SIPp calls a number of a `websocket` agent at `url`; the bot ends the
/// conversation; returns the ended call, once SIPp got its BYE.
async fn call_the_bot(svc: &TestService, agent: &mut PipecatAgent, number: &str) -> Value {
    let runtime = json!({"type": "websocket", "url": agent.url});
    svc.agent_with_number(
        "127.0.0.1:5999".parse().expect("addr"),
        number,
        runtime,
        &["127.0.0.0/8"],
    )
    .await;
    sipp::require_sipp();
    let media_port = sipp::free_port(sipp::Transport::Udp).expect("media port");
    let caller = sipp::Sipp::client(
        sipp::Scenario::file("service/ws_caller_until_bye.xml"),
        svc.sip,
    )
    .service(number)
    .calls(1)
    .timeout(Duration::from_secs(90))
    .arg("-mp")
    .arg(media_port.to_string());
    let caller = tokio::task::spawn_blocking(move || caller.run().expect("SIPp ran"));

    let start = agent.next_event("start", CALL_DONE).await;
    assert_eq!(
        start["transport"], "twilio",
        "Pipecat detects Twilio: {start}"
    );
    assert_eq!(start["custom_parameters"]["to"], number, "{start}");
    let ended = agent.next_event("ended", CALL_DONE).await;
    assert_eq!(ended["said_goodbye"], true, "{ended}");
    assert!(
        ended["speech_ms"].as_f64().unwrap_or(0.0) >= 300.0,
        "the caller's speech reached the bot through Pipecat's deserializer: {ended}"
    );
    // SIPp got a BYE (after the goodbye) and answered it.
    caller.await.expect("SIPp thread").assert_success();

    let call = svc.wait_for_call("direction=inbound", CALL_DONE).await;
    let call_id = call["id"].as_str().expect("id");
    assert_eq!(start["call_sid"], call_id, "{start}");
    let call = svc.wait_terminal(call_id, CALL_DONE).await;
    assert_eq!(call["status"], "ended", "{call}");
    assert_eq!(call["outcome"], "agent_hangup", "{call}");
    call
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipecat_bot_ending_its_pipeline_hangs_up() {
    let Some(mut agent) = PipecatAgent::start(&["--hang-up", "close"], &[]).await else {
        return;
    };
    let svc = TestService::start().await;
    let call = call_the_bot(&svc, &mut agent, "+15550006661").await;
    assert_eq!(call["end_reason"], "agent_hangup", "{call}");
    let goodbye = agent_seconds(&svc, &call).await;
    assert!(
        (0.9..1.3).contains(&goodbye),
        "the 1 s goodbye was played whole before the BYE: {goodbye} s"
    );
    let log = agent.stop().await;
    assert!(!log.contains("ERROR"), "Pipecat logged errors:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipecat_bot_hangs_up_through_twilios_rest_api() {
    let svc = TestService::start().await;
    let org = svc
        .handle
        .as_ref()
        .expect("running")
        .store
        .org_for_key(service::API_KEY)
        .await
        .expect("store")
        .expect("the key's organisation");
    let base_url = format!("http://{}", svc.http);
    let env = [
        ("TWILIO_ACCOUNT_SID", org.as_str()),
        ("TWILIO_AUTH_TOKEN", service::API_KEY),
    ];
    let Some(mut agent) =
        PipecatAgent::start(&["--hang-up", "rest", "--base-url", &base_url], &env).await
    else {
        return;
    };
    let call = call_the_bot(&svc, &mut agent, "+15550006662").await;
    // Ended by the REST request, which Pipecat sends before closing.
    assert_eq!(call["end_reason"], "api_hangup", "{call}");
    let goodbye = agent_seconds(&svc, &call).await;
    assert!(
        (0.8..1.3).contains(&goodbye),
        "the goodbye was played before the hang-up: {goodbye} s"
    );
    let log = agent.stop().await;
    let call_id = call["id"].as_str().expect("id");
    assert!(
        log.contains(&format!("Successfully terminated Twilio call {call_id}")),
        "Pipecat's hang-up request got a 200:\n{log}"
    );
    assert!(!log.contains("ERROR"), "Pipecat logged errors:\n{log}");
}
