//! A harness that runs SIPp (the SIP traffic generator) from tests.
//!
//! Include it from a test file with
//! `#[path = "support/sipp.rs"] mod sipp;` (or `"../support/sipp.rs"` from a
//! `tests/<name>/main.rs`). Scenario files live in `tests/sipp/`.
//!
//! ```ignore
//! sipp::require_sipp();
//! // SIPp answers: start it, wait until it listens, call it, collect.
//! let uas = sipp::Sipp::server(sipp::Scenario::file("uas_answer.xml"))
//!     .transport(sipp::Transport::Udp)
//!     .calls(1)
//!     .spawn()?;
//! uas.wait_listening(std::time::Duration::from_secs(5))?;
//! place_our_call(uas.address());
//! uas.wait()?.assert_success();
//! ```
//!
//! Every run gets its own directory for SIPp's files (statistics CSV, error
//! log, `<log>` actions, final screen, optional message trace); it is removed
//! afterwards unless `DIALCORE_KEEP_SIPP_LOGS` is set. `DIALCORE_SIPP` names
//! the SIPp binary (default `sipp` on `PATH`).
//!
//! SIPp's exit code: 0 when every call succeeded, 1 when at least one failed,
//! 97 when stopped by an internal command, 99 when it ended with no call
//! processed, 255 (-1) on a fatal error, 254 (-2) when it could not bind.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a run may take before the harness kills SIPp, unless set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the harness looks at the SIPp process while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The loopback address every run binds to.
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// The SIP transport SIPp uses (always one socket: `-t u1` / `-t t1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP, one socket (`-t u1`).
    Udp,
    /// TCP, one connection (`-t t1`).
    Tcp,
}

impl Transport {
    /// SIPp's `-t` value.
    pub fn sipp_mode(self) -> &'static str {
        match self {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        }
    }

    /// The lowercase name used in URIs (`transport=udp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// The scenario SIPp plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// A scenario file (`-sf`).
    File(PathBuf),
    /// One of SIPp's embedded scenarios (`-sn uac`, `-sn uas`, ...).
    Builtin(String),
}

impl Scenario {
    /// A file of `tests/sipp/` (e.g. `"uas_answer.xml"`, `"peers/uac_busy.xml"`);
    /// an absolute path is taken as is.
    pub fn file(name: impl AsRef<Path>) -> Self {
        Scenario::File(scenario_path(name))
    }

    /// One of SIPp's embedded scenarios.
    pub fn builtin(name: impl Into<String>) -> Self {
        Scenario::Builtin(name.into())
    }

    /// A short name for messages and file names.
    pub fn label(&self) -> String {
        match self {
            Scenario::File(path) => path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_else(|| "scenario".to_owned()),
            Scenario::Builtin(name) => format!("builtin-{name}"),
        }
    }
}

/// What can go wrong while running SIPp (a failed call is not an error:
/// see [`SippOutcome`]).
#[derive(Debug)]
pub enum SippError {
    /// The SIPp binary could not be started.
    NotInstalled {
        /// The program the harness tried.
        program: String,
        /// Why it could not start.
        source: io::Error,
    },
    /// No free port could be reserved on the loopback address.
    NoFreePort {
        /// The transport the port was for.
        transport: Transport,
        /// The socket error.
        source: io::Error,
    },
    /// The run directory or one of SIPp's files could not be used.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Waiting on the SIPp process failed.
    Wait {
        /// The process id.
        pid: u32,
        /// The I/O error.
        source: io::Error,
    },
    /// SIPp exited before it started to listen.
    ExitedEarly {
        /// The outcome gathered after exit (stderr says why).
        outcome: Box<SippOutcome>,
    },
    /// SIPp did not listen on its port in time.
    NotListening {
        /// The address SIPp should have bound.
        address: SocketAddr,
        /// How long the harness waited.
        waited: Duration,
    },
    /// SIPp ran past the run's timeout and was killed.
    TimedOut {
        /// The timeout.
        after: Duration,
        /// What SIPp had written by then.
        outcome: Box<SippOutcome>,
    },
}

impl fmt::Display for SippError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SippError::NotInstalled { program, source } => write!(
                f,
                "cannot run SIPp ({program}: {source}); install it (Debian/Ubuntu package \
                 `sip-tester`, see scripts/prereqs.sh) or point DIALCORE_SIPP at the binary"
            ),
            SippError::NoFreePort { transport, source } => write!(
                f,
                "no free {} port on {LOOPBACK}: {source}",
                transport.as_str()
            ),
            SippError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            SippError::Wait { pid, source } => write!(f, "waiting on SIPp (pid {pid}): {source}"),
            SippError::ExitedEarly { outcome } => {
                write!(f, "SIPp exited before listening\n{}", outcome.diagnostics())
            }
            SippError::NotListening { address, waited } => {
                write!(f, "SIPp did not listen on {address} within {waited:?}")
            }
            SippError::TimedOut { after, outcome } => write!(
                f,
                "SIPp still running after {after:?}, killed\n{}",
                outcome.diagnostics()
            ),
        }
    }
}

impl std::error::Error for SippError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SippError::NotInstalled { source, .. }
            | SippError::NoFreePort { source, .. }
            | SippError::Io { source, .. }
            | SippError::Wait { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Waits on a blocking thread until SIPp `process` exits, and returns its
/// outcome. Panics (a test harness) when it cannot be collected.
pub async fn finish(process: SippProcess) -> SippOutcome {
    tokio::task::spawn_blocking(move || process.wait())
        .await
        .expect("SIPp thread")
        .expect("SIPp ran")
}

/// Starts a one-call SIPp UAS running `scenario` (a file of `tests/sipp/`) over
/// `transport`, adjusted by `tweak`, and waits on a blocking thread until it
/// listens. Panics (a test harness) when SIPp is missing or does not start.
pub async fn one_call_server(
    scenario: &str,
    transport: Transport,
    tweak: impl FnOnce(Sipp) -> Sipp + Send + 'static,
) -> SippProcess {
    require_sipp();
    let scenario = scenario.to_string();
    tokio::task::spawn_blocking(move || {
        let mut process = tweak(
            Sipp::server(Scenario::file(scenario))
                .transport(transport)
                .calls(1),
        )
        .spawn()
        .expect("SIPp starts");
        process
            .wait_listening(std::time::Duration::from_secs(10))
            .expect("SIPp listens");
        process
    })
    .await
    .expect("SIPp thread")
}

/// The SIPp program the harness runs: `$DIALCORE_SIPP` or `sipp`.
pub fn sipp_program() -> String {
    std::env::var("DIALCORE_SIPP").unwrap_or_else(|_| "sipp".to_owned())
}

/// SIPp's version line when SIPp can be run.
pub fn sipp_available() -> Result<String, SippError> {
    let program = sipp_program();
    // `sipp -v` prints the version and exits 99: only starting it matters.
    let output = Command::new(&program)
        .arg("-v")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SippError::NotInstalled {
            program: program.clone(),
            source,
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("SIPp"))
        .unwrap_or("SIPp (unknown version)")
        .to_owned())
}

/// Fails the calling test with a clear message when SIPp cannot be run.
/// Interop tests call this first: a missing SIPp is a failure, never a skip.
pub fn require_sipp() -> String {
    match sipp_available() {
        Ok(version) => version,
        Err(error) => panic!("SIPp interop test cannot run: {error}"),
    }
}

/// The path of a scenario file of `tests/sipp/` (absolute paths pass through).
pub fn scenario_path(name: impl AsRef<Path>) -> PathBuf {
    let name = name.as_ref();
    if name.is_absolute() {
        return name.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("sipp")
        .join(name)
}

/// A port of 127.0.0.1 that is free for the transport right now.
///
/// The port is released before returning, so another process may take it
/// in between: good enough for tests, where each run asks for its own.
pub fn free_port(transport: Transport) -> Result<u16, SippError> {
    let any = SocketAddr::V4(SocketAddrV4::new(LOOPBACK, 0));
    let no_port = |source| SippError::NoFreePort { transport, source };
    for _ in 0..32 {
        // Ask the kernel for a port on one transport and keep it only if it
        // is free on the other too, so a UDP+TCP peer can use it as well.
        let udp = UdpSocket::bind(any).map_err(no_port)?;
        let port = udp.local_addr().map_err(no_port)?.port();
        let tcp_free = TcpListener::bind(SocketAddrV4::new(LOOPBACK, port)).is_ok();
        if tcp_free {
            return Ok(port);
        }
    }
    Err(no_port(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no port free on both UDP and TCP after 32 tries",
    )))
}

/// A SIPp run to configure, then [`spawn`](Sipp::spawn) or [`run`](Sipp::run).
#[derive(Debug, Clone)]
pub struct Sipp {
    scenario: Scenario,
    target: Option<SocketAddr>,
    transport: Transport,
    local_port: Option<u16>,
    calls: Option<u64>,
    rate: Option<(f64, Duration)>,
    max_concurrent: Option<u64>,
    hold: Option<Duration>,
    service: Option<String>,
    variables: Vec<(String, String)>,
    keys: Vec<(String, String)>,
    credentials: Option<(String, String)>,
    no_retransmissions: bool,
    trace_messages: bool,
    timeout: Duration,
    extra_args: Vec<String>,
}

impl Sipp {
    /// SIPp places calls to `target` (it sends the first request).
    pub fn client(scenario: Scenario, target: SocketAddr) -> Self {
        Self::new(scenario, Some(target))
    }

    /// SIPp waits for calls on its own port (see [`SippProcess::address`]).
    pub fn server(scenario: Scenario) -> Self {
        Self::new(scenario, None)
    }

    fn new(scenario: Scenario, target: Option<SocketAddr>) -> Self {
        Sipp {
            scenario,
            target,
            transport: Transport::Udp,
            local_port: None,
            calls: None,
            rate: None,
            max_concurrent: None,
            hold: None,
            service: None,
            variables: Vec::new(),
            keys: Vec::new(),
            credentials: None,
            no_retransmissions: false,
            trace_messages: false,
            timeout: DEFAULT_TIMEOUT,
            extra_args: Vec::new(),
        }
    }

    /// The transport (default UDP).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// SIPp's own port (`-p`); a free one is picked when not set.
    pub fn local_port(mut self, port: u16) -> Self {
        self.local_port = Some(port);
        self
    }

    /// Stop after this many calls (`-m`). Without it SIPp runs until killed.
    pub fn calls(mut self, calls: u64) -> Self {
        self.calls = Some(calls);
        self
    }

    /// Start `calls` new calls every `period` (`-r` and `-rp`).
    pub fn rate(mut self, calls: f64, period: Duration) -> Self {
        self.rate = Some((calls, period));
        self
    }

    /// At most this many calls open at once (`-l`).
    pub fn max_concurrent(mut self, calls: u64) -> Self {
        self.max_concurrent = Some(calls);
        self
    }

    /// The length of the scenario's `<pause/>` without a duration (`-d`):
    /// the call hold time in the `uac_*` scenarios.
    pub fn hold(mut self, hold: Duration) -> Self {
        self.hold = Some(hold);
        self
    }

    /// The user part of the Request-URI, `[service]` (`-s`).
    pub fn service(mut self, user: impl Into<String>) -> Self {
        self.service = Some(user.into());
        self
    }

    /// Sets a scenario's global variable (`-set name value`).
    pub fn set(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.variables.push((name.into(), value.into()));
        self
    }

    /// Sets a generic keyword `[name]` (`-key name value`).
    pub fn key(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.keys.push((name.into(), value.into()));
        self
    }

    /// Digest credentials SIPp answers challenges with (`-au`, `-ap`).
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// No UDP retransmissions and no retransmission detection (`-nr`);
    /// `uac_drop_200.xml` needs it over UDP.
    pub fn no_retransmissions(mut self) -> Self {
        self.no_retransmissions = true;
        self
    }

    /// Keeps every message sent and received (`-trace_msg`) in
    /// [`SippOutcome::messages`]. Costly at high call rates.
    pub fn trace_messages(mut self) -> Self {
        self.trace_messages = true;
        self
    }

    /// Kill SIPp if it runs longer than this (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Any other SIPp argument, passed as is.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Starts SIPp and returns at once.
    pub fn spawn(self) -> Result<SippProcess, SippError> {
        let local_port = match self.local_port {
            Some(port) => port,
            None => free_port(self.transport)?,
        };
        let dir = RunDir::create(&self.scenario.label())?;
        let args = self.arguments(local_port, &dir);
        let program = sipp_program();
        let stderr_path = dir.file("stderr.txt");
        let stderr = std::fs::File::create(&stderr_path).map_err(|source| SippError::Io {
            path: stderr_path.clone(),
            source,
        })?;
        let child = Command::new(&program)
            .args(&args)
            .current_dir(&dir.path)
            .stdin(Stdio::null())
            // Without -bg SIPp redraws its screen on stdout: not wanted.
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|source| SippError::NotInstalled { program, source })?;
        Ok(SippProcess {
            child,
            dir,
            address: SocketAddr::V4(SocketAddrV4::new(LOOPBACK, local_port)),
            transport: self.transport,
            started: Instant::now(),
            timeout: self.timeout,
            args,
            finished: false,
        })
    }

    /// Starts SIPp and waits for it to exit.
    pub fn run(self) -> Result<SippOutcome, SippError> {
        self.spawn()?.wait()
    }

    fn arguments(&self, local_port: u16, dir: &RunDir) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(|s| (*s).to_owned()));
        match &self.scenario {
            Scenario::File(path) => push(&["-sf", &path.to_string_lossy()]),
            Scenario::Builtin(name) => push(&["-sn", name]),
        }
        let local_ip = LOOPBACK.to_string();
        let port = local_port.to_string();
        push(&["-t", self.transport.sipp_mode()]);
        push(&[
            "-i", &local_ip, "-p", &port, "-mi", &local_ip, "-ci", &local_ip,
        ]);
        push(&["-nostdin"]);
        push(&["-trace_stat", "-stf", &dir.file_str("stat.csv"), "-fd", "1"]);
        push(&["-trace_err", "-error_file", &dir.file_str("errors.log")]);
        push(&["-trace_logs", "-log_file", &dir.file_str("logs.log")]);
        push(&["-trace_screen", "-screen_file", &dir.file_str("screen.log")]);
        if self.trace_messages {
            push(&["-trace_msg", "-message_file", &dir.file_str("messages.log")]);
        }
        if let Some(calls) = self.calls {
            push(&["-m", &calls.to_string()]);
        }
        if let Some((calls, period)) = self.rate {
            push(&[
                "-r",
                &calls.to_string(),
                "-rp",
                &period.as_millis().to_string(),
            ]);
        }
        if let Some(limit) = self.max_concurrent {
            push(&["-l", &limit.to_string()]);
        }
        if let Some(hold) = self.hold {
            push(&["-d", &hold.as_millis().to_string()]);
        }
        if let Some(service) = &self.service {
            push(&["-s", service]);
        }
        for (name, value) in &self.variables {
            push(&["-set", name, value]);
        }
        for (name, value) in &self.keys {
            push(&["-key", name, value]);
        }
        if let Some((user, password)) = &self.credentials {
            push(&["-au", user, "-ap", password]);
        }
        if self.no_retransmissions {
            push(&["-nr"]);
        }
        args.extend(self.extra_args.iter().cloned());
        if let Some(target) = self.target {
            args.push(target.to_string());
        }
        args
    }
}

/// A running SIPp; killed when dropped before it exits.
#[derive(Debug)]
pub struct SippProcess {
    child: Child,
    dir: RunDir,
    address: SocketAddr,
    transport: Transport,
    started: Instant,
    timeout: Duration,
    args: Vec<String>,
    finished: bool,
}

impl SippProcess {
    /// SIPp's own address (where a SIPp server takes calls).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// SIPp's own port.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The transport SIPp runs on.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The arguments SIPp was started with (for messages).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Waits until SIPp has bound its port: call before sending to a SIPp
    /// server (a TCP connect before that would be refused).
    pub fn wait_listening(&mut self, within: Duration) -> Result<(), SippError> {
        let deadline = Instant::now() + within;
        loop {
            if port_taken(self.transport, self.address) {
                return Ok(());
            }
            if self.try_exit_status()?.is_some() {
                return Err(SippError::ExitedEarly {
                    outcome: Box::new(self.collect(None)),
                });
            }
            if Instant::now() >= deadline {
                return Err(SippError::NotListening {
                    address: self.address,
                    waited: within,
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits for SIPp to exit (killing it after the run's timeout) and
    /// gathers what it reported.
    pub fn wait(mut self) -> Result<SippOutcome, SippError> {
        loop {
            if let Some(status) = self.try_exit_status()? {
                return Ok(self.collect(Some(status)));
            }
            if self.started.elapsed() >= self.timeout {
                self.kill();
                return Err(SippError::TimedOut {
                    after: self.timeout,
                    outcome: Box::new(self.collect(None)),
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Stops SIPp now.
    pub fn kill(&mut self) {
        if self.finished {
            return;
        }
        // Already exited is fine: then there is nothing to kill.
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.finished = true;
    }

    fn try_exit_status(&mut self) -> Result<Option<ExitStatus>, SippError> {
        let status = self.child.try_wait().map_err(|source| SippError::Wait {
            pid: self.child.id(),
            source,
        })?;
        if status.is_some() {
            self.finished = true;
        }
        Ok(status)
    }

    fn collect(&self, status: Option<ExitStatus>) -> SippOutcome {
        let statistics = parse_statistics(&self.dir.read("stat.csv")).unwrap_or_default();
        let count = |column: &str| {
            statistics
                .get(column)
                .and_then(|value| value.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        SippOutcome {
            status,
            successful_calls: count("SuccessfulCall(C)"),
            failed_calls: count("FailedCall(C)"),
            created_calls: count("TotalCallCreated"),
            retransmissions: count("Retransmissions(C)"),
            statistics,
            stderr: self.dir.read("stderr.txt"),
            errors: self.dir.read("errors.log"),
            logs: self.dir.read("logs.log"),
            screen: self.dir.read("screen.log"),
            messages: self.dir.read("messages.log"),
            args: self.args.clone(),
            run_dir: self.dir.path.clone(),
        }
    }
}

impl Drop for SippProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a SIPp run reported.
#[derive(Debug, Clone, Default)]
pub struct SippOutcome {
    /// The exit status; `None` when the harness killed SIPp.
    pub status: Option<ExitStatus>,
    /// Calls that reached the end of the scenario (`SuccessfulCall(C)`).
    pub successful_calls: u64,
    /// Calls that failed (`FailedCall(C)`).
    pub failed_calls: u64,
    /// Calls created, incoming or outgoing (`TotalCallCreated`).
    pub created_calls: u64,
    /// Messages SIPp retransmitted (`Retransmissions(C)`).
    pub retransmissions: u64,
    /// The last row of SIPp's statistics CSV, by column name.
    pub statistics: BTreeMap<String, String>,
    /// SIPp's standard error.
    pub stderr: String,
    /// The error log (`-trace_err`): unexpected messages, aborted calls.
    pub errors: String,
    /// The lines of the scenarios' `<log>` actions (`-trace_logs`).
    pub logs: String,
    /// SIPp's final screens (`-trace_screen`).
    pub screen: String,
    /// Every message sent and received, with [`Sipp::trace_messages`].
    pub messages: String,
    /// The arguments SIPp ran with.
    pub args: Vec<String>,
    /// Where SIPp's files were (removed unless `DIALCORE_KEEP_SIPP_LOGS`).
    pub run_dir: PathBuf,
}

impl SippOutcome {
    /// SIPp's exit code, if it exited by itself.
    pub fn exit_code(&self) -> Option<i32> {
        self.status.and_then(|status| status.code())
    }

    /// True when SIPp exited 0 and counted no failed call.
    pub fn succeeded(&self) -> bool {
        self.exit_code() == Some(0) && self.failed_calls == 0
    }

    /// Panics with SIPp's reports unless the run [`succeeded`](Self::succeeded)
    /// with exactly `calls` successful calls.
    pub fn assert_calls_succeeded(&self, calls: u64) {
        assert!(
            self.succeeded() && self.successful_calls == calls,
            "expected {calls} successful SIPp calls\n{}",
            self.diagnostics()
        );
    }

    /// Panics with SIPp's reports unless the run [`succeeded`](Self::succeeded).
    pub fn assert_success(&self) {
        assert!(self.succeeded(), "SIPp run failed\n{}", self.diagnostics());
    }

    /// Panics with SIPp's reports unless SIPp exited 1 with failed calls.
    pub fn assert_failed(&self) {
        assert!(
            self.exit_code() == Some(1) && self.failed_calls > 0,
            "expected the SIPp run to fail\n{}",
            self.diagnostics()
        );
    }

    /// The `Proxy-Authorization` values logged by `uas_auth_407.xml`
    /// (SIPp cannot check them itself), in arrival order, trimmed: parse
    /// each with the digest code and compare `response` with the expected one.
    pub fn proxy_authorizations(&self) -> Vec<String> {
        self.logs
            .lines()
            .filter_map(|line| line.split_once("proxy-authorization method=INVITE value="))
            .map(|(_, value)| value.trim().to_owned())
            .collect()
    }

    /// A readable summary for assertion messages.
    pub fn diagnostics(&self) -> String {
        let status = match self.exit_code() {
            Some(code) => format!("exit code {code} ({})", describe_exit_code(code)),
            None if self.status.is_some() => "killed by a signal".to_owned(),
            None => "killed by the harness".to_owned(),
        };
        let mut text = format!(
            "sipp {}\n{status}; calls: {} created, {} successful, {} failed; {} retransmissions\n",
            self.args.join(" "),
            self.created_calls,
            self.successful_calls,
            self.failed_calls,
            self.retransmissions,
        );
        for (title, body) in [
            ("stderr", &self.stderr),
            ("error log", &self.errors),
            ("log actions", &self.logs),
        ] {
            let body = body.trim();
            if !body.is_empty() {
                text.push_str(&format!("--- {title} ---\n{}\n", tail(body, 4000)));
            }
        }
        text
    }
}

/// Reads SIPp's statistics CSV (`-trace_stat`): the header row names the
/// columns (`;`-separated) and the last row holds the final cumulative
/// values. `None` when there is no data row yet.
pub fn parse_statistics(csv: &str) -> Option<BTreeMap<String, String>> {
    let mut rows = csv.lines().filter(|line| !line.trim().is_empty());
    let header = rows.next()?;
    let last = rows.next_back()?;
    Some(
        header
            .split(';')
            .zip(last.split(';'))
            .filter(|(name, _)| !name.is_empty())
            .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
            .collect(),
    )
}

/// What a SIPp exit code means.
pub fn describe_exit_code(code: i32) -> &'static str {
    match code {
        0 => "all calls successful",
        1 => "at least one call failed",
        97 => "stopped by an internal command",
        99 => "no call processed",
        254 => "could not bind a socket",
        255 => "fatal error",
        _ => "unknown",
    }
}

/// True when something is bound to the address on the transport, found by
/// trying to bind it ourselves (no packet reaches SIPp).
fn port_taken(transport: Transport, address: SocketAddr) -> bool {
    let result = match transport {
        Transport::Udp => UdpSocket::bind(address).map(drop),
        Transport::Tcp => TcpListener::bind(address).map(drop),
    };
    matches!(result, Err(error) if error.kind() == io::ErrorKind::AddrInUse)
}

/// The last `max` bytes of `text`, cut at a character boundary.
fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// A directory of its own for one SIPp run.
#[derive(Debug)]
struct RunDir {
    path: PathBuf,
}

impl RunDir {
    fn create(label: &str) -> Result<Self, SippError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "dialcore-sipp-{}-{}-{nanos}-{label}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
        ));
        std::fs::create_dir_all(&path).map_err(|source| SippError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(RunDir { path })
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn file_str(&self, name: &str) -> String {
        self.file(name).to_string_lossy().into_owned()
    }

    /// A file's text; empty when SIPp did not write it.
    fn read(&self, name: &str) -> String {
        std::fs::read(self.file(name))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::env::var_os("DIALCORE_KEEP_SIPP_LOGS").is_none() {
            // Best effort: a leftover temp directory is harmless.
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
