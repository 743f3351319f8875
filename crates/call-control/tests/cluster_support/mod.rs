//! Harness of the cluster test: one PostgreSQL database ([`pg_harness`]), `dialcore serve`
//! nodes on it ([`Node`]), Kamailio with `deploy/kamailio/kamailio.cfg` in front of them
//! ([`Kamailio`]), and what SIPp's `caller_via_proxy.xml` logs about each call
//! ([`CallLog`]). Everything listens on 127.0.0.1 on free ports; every process is stopped
//! when its handle is dropped.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::sipp;

/// `[node] lease` of the test nodes.
pub const LEASE: std::time::Duration = std::time::Duration::from_secs(3);

/// The bootstrap API key every node is started with (the nodes share the database, so
/// the first node creates it and the others find it).
pub const KEY: &str = "sk_live_cluster_test_0123456789abcdef";
/// `[secret] key` of every node: PostgreSQL requires one, the same on all nodes.
pub const SECRET_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(50);

/// Polls `check` until it returns `Ok`, for at most `within`; panics with `what` and what
/// the last `Err` said otherwise.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(state) if Instant::now() >= deadline => {
                panic!("{what}: not the case after {within:?}; last seen: {state}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// A new database on the test process's PostgreSQL server, or `None` (with the reason on
/// stderr) when PostgreSQL cannot be had on this machine.
pub fn postgres_database() -> Option<String> {
    let server = match pg_harness::shared() {
        Ok(server) => server,
        Err(error @ (pg_harness::Error::NotInstalled | pg_harness::Error::NoPostgresUser)) => {
            eprintln!("skipped: the cluster test needs PostgreSQL: {error}");
            return None;
        }
        Err(error) => panic!("PostgreSQL did not start: {error}"),
    };
    Some(server.create_database().expect("a fresh database"))
}

/// A loopback address whose port is free on both UDP and TCP (SIP listens on both).
pub fn free_sip_address() -> SocketAddr {
    let port = sipp::free_port(sipp::Transport::Udp).expect("a free port");
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A loopback address whose TCP port is free.
pub fn free_http_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

/// What a node is started with.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// `DIALCORE_NODE_ID`.
    pub id: &'static str,
    /// `DIALCORE_HTTP_LISTEN`.
    pub http: SocketAddr,
    /// `DIALCORE_SIP_LISTEN` (UDP and TCP).
    pub sip: SocketAddr,
    /// `DIALCORE_RTP_PORT_MIN` and `_MAX`: disjoint per node.
    pub rtp_ports: (u16, u16),
    /// `DIALCORE_SIP_OUTBOUND_PROXY`: where outbound INVITEs go (Kamailio).
    pub outbound_proxy: SocketAddr,
}

/// A running `dialcore serve` node; killed when dropped.
pub struct Node {
    /// What it was started with.
    pub spec: NodeSpec,
    /// Its public API.
    pub api: Api,
    child: Child,
    log: PathBuf,
}

impl Node {
    /// Starts `dialcore serve` on `database_url` with its recordings and log in `dir`, and
    /// waits until `/healthz` answers 200.
    pub async fn start(spec: NodeSpec, database_url: &str, dir: &Path) -> Node {
        let log = dir.join(format!("{}.log", spec.id));
        // Appended to, so that a restarted node's log follows its previous run.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("node log");
        let child = Command::new(env!("CARGO_BIN_EXE_dialcore"))
            .arg("serve")
            .env("DIALCORE_NODE_ID", spec.id)
            .env("DIALCORE_HTTP_LISTEN", spec.http.to_string())
            .env("DIALCORE_SIP_LISTEN", spec.sip.to_string())
            .env("DIALCORE_RTP_PORT_MIN", spec.rtp_ports.0.to_string())
            .env("DIALCORE_RTP_PORT_MAX", spec.rtp_ports.1.to_string())
            .env(
                "DIALCORE_SIP_OUTBOUND_PROXY",
                format!("sip:{};transport=udp", spec.outbound_proxy),
            )
            .env("DIALCORE_DATABASE_URL", database_url)
            .env("DIALCORE_SECRET_KEY", SECRET_KEY)
            .env(
                "DIALCORE_RECORDINGS_DIR",
                dir.join(spec.id).join("recordings"),
            )
            .env("DIALCORE_API_KEY", KEY)
            .env("DIALCORE_API_RATE_LIMIT_PER_MINUTE", "100000")
            // The carrier (SIPp) and Kamailio are on loopback.
            .env("DIALCORE_SECURITY_ALLOW_PRIVATE_DESTINATIONS", "true")
            .env("DIALCORE_LOG_LEVEL", "info")
            // A short lease, so that a killed node's calls are ended within seconds.
            .env("DIALCORE_NODE_LEASE", format!("{}s", LEASE.as_secs()))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("node log"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("dialcore runs");
        let mut node = Node {
            api: Api::new(spec.http),
            spec,
            child,
            log,
        };
        let started = Instant::now() + Duration::from_secs(30);
        while node.live_calls().await.is_none() {
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!(
                    "node {} exited at start ({status})\n{}",
                    node.spec.id,
                    node.log_tail()
                );
            }
            assert!(
                Instant::now() < started,
                "node {} did not answer /healthz within 30 s\n{}",
                node.spec.id,
                node.log_tail()
            );
            tokio::time::sleep(POLL).await;
        }
        node
    }

    /// The node's SIP address as Kamailio's dispatcher list names it.
    pub fn sip_uri(&self) -> String {
        format!("sip:{}", self.spec.sip)
    }

    /// The calls the node's engine holds now (`/healthz` `live_calls`), `None` when the
    /// node does not answer.
    pub async fn live_calls(&self) -> Option<u64> {
        let response = self
            .api
            .client
            .get(format!("http://{}/healthz", self.spec.http))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .ok()?;
        if response.status() != 200 {
            return None;
        }
        let body: Value = response.json().await.ok()?;
        body["live_calls"].as_u64()
    }

    /// Kills the node with SIGKILL (a crash: nothing is cleaned up) and reaps it.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("killed node reaped");
    }

    /// Waits for the node to exit by itself (after a drain), for at most `within`.
    pub async fn exit_within(&mut self, within: Duration) -> ExitStatus {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => status.expect("node reaped"),
            Err(_) => panic!(
                "node {} still running {within:?} after it was drained\n{}",
                self.spec.id,
                self.log_tail()
            ),
        }
    }

    /// The end of the node's log, for assertion messages.
    pub fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 40)
    }
}

/// The public REST API of one node, with the bootstrap key.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(http: SocketAddr) -> Api {
        Api {
            base: format!("http://{http}/api/public/v1"),
            client: reqwest::Client::new(),
        }
    }

    /// `method path` with an optional JSON body: status and JSON reply.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(KEY)
            .timeout(Duration::from_secs(10));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POST that must answer 201: the created object.
    pub async fn create(&self, path: &str, body: Value) -> Value {
        let (status, reply) = self.send(reqwest::Method::POST, path, Some(body)).await;
        assert_eq!(status, 201, "POST {path}: {reply}");
        reply["data"].clone()
    }

    /// The inbound calls this node's API lists (newest first, up to 200), by SIP Call-ID.
    pub async fn inbound_calls(&self) -> BTreeMap<String, Value> {
        let (status, reply) = self
            .send(
                reqwest::Method::GET,
                "/calls?direction=inbound&limit=200",
                None,
            )
            .await;
        assert_eq!(status, 200, "GET /calls: {reply}");
        reply["data"]
            .as_array()
            .unwrap_or_else(|| panic!("GET /calls has no data list: {reply}"))
            .iter()
            .filter_map(|call| Some((call["sip_call_id"].as_str()?.to_owned(), call.clone())))
            .collect()
    }
}

/// Settings of the Kamailio under test (the `-A` defines of `deploy/kamailio/kamailio.cfg`).
#[derive(Debug, Clone)]
pub struct KamailioSettings {
    /// `DS_PING_INTERVAL`, seconds.
    pub ping_interval_secs: u32,
    /// `FR_TIMER_MS`: how long a node has to answer before failover.
    pub fr_timer_ms: u32,
}

/// Kamailio running `deploy/kamailio/kamailio.cfg` in the foreground, in a directory of
/// its own (runtime dir, pid file, ctl socket, dispatcher list, log). It runs under a
/// shell that stops it (SIGTERM, which also ends its worker processes) when this handle
/// is dropped or when the test process dies, however it dies.
pub struct Kamailio {
    address: SocketAddr,
    log: PathBuf,
    guard: std::process::Child,
    lifeline: Option<ChildStdin>,
    _dir: tempfile::TempDir,
}

impl Kamailio {
    /// The configuration under test.
    pub fn config_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kamailio/kamailio.cfg")
    }

    /// Starts Kamailio on `address` (see [`free_sip_address`]) with `nodes` (SIP URIs) as
    /// dispatcher set 1 and loopback as the carriers' network; waits until it answers an
    /// OPTIONS.
    pub fn start(address: SocketAddr, nodes: &[String], settings: &KamailioSettings) -> Kamailio {
        let program = kamailio_program();
        let dir = tempfile::tempdir().expect("Kamailio's directory");
        let list = dir.path().join("dispatcher.list");
        let mut file = std::fs::File::create(&list).expect("dispatcher list");
        for (index, uri) in nodes.iter().enumerate() {
            writeln!(file, "1 {uri} 0 0 node={index}").expect("dispatcher list");
        }
        drop(file);
        let log = dir.path().join("kamailio.log");
        let output = std::fs::File::create(&log).expect("Kamailio's log");
        let quoted = |path: &Path| format!("\"{}\"", path.display());
        let defines = [
            format!("LISTEN_IP={}", address.ip()),
            format!("LISTEN_PORT={}", address.port()),
            format!("DISPATCHER_LIST={}", quoted(&list)),
            "CARRIER_NETWORKS=\"127.0.0.0/8\"".to_owned(),
            format!("DS_PING_INTERVAL={}", settings.ping_interval_secs),
            format!("FR_TIMER_MS={}", settings.fr_timer_ms),
            "CHILDREN=2".to_owned(),
            format!(
                "CTL_SOCKET=\"unix:{}\"",
                dir.path().join("kamailio_ctl").display()
            ),
        ];
        let mut command = std::process::Command::new("sh");
        command
            .arg("-c")
            .arg(
                r#"program="$1"; shift
"$program" "$@" </dev/null & kamailio=$!
read _ignored
kill -TERM "$kamailio"; wait "$kamailio""#,
            )
            .arg("kamailio-guard")
            .arg(&program)
            .args(["-DD", "-E", "-f"])
            .arg(Self::config_path())
            .arg("-Y")
            .arg(dir.path())
            .arg("-P")
            .arg(dir.path().join("kamailio.pid"));
        for define in &defines {
            command.arg("-A").arg(define);
        }
        let mut guard = command
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(output.try_clone().expect("Kamailio's log"))
            .stderr(output)
            .spawn()
            .expect("sh runs");
        let lifeline = guard.stdin.take().expect("piped stdin");
        let kamailio = Kamailio {
            address,
            log,
            guard,
            lifeline: Some(lifeline),
            _dir: dir,
        };
        kamailio.wait_ready(&program);
        kamailio
    }

    /// Where carriers (SIPp) send their INVITEs.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Everything Kamailio logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many lines of the log contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log()
            .lines()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// Waits until `count(needle)` reaches `at_least`.
    pub async fn wait_for_log(&self, needle: &str, at_least: usize, within: Duration) {
        let what = format!("Kamailio logs {needle:?} {at_least} time(s)");
        eventually(&what, within, || async {
            let seen = self.count(needle);
            if seen >= at_least {
                Ok(())
            } else {
                Err(format!("{seen} time(s)\n{}", tail(&self.log(), 30)))
            }
        })
        .await
    }

    /// The last lines of the log, for assertion messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log(), 30)
    }

    /// Sends OPTIONS to Kamailio itself until it answers 200 (its workers run), or panics
    /// with its log (where Kamailio says why it refused the configuration, if it did).
    fn wait_ready(&self, program: &str) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        let local = socket.local_addr().expect("address");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        for attempt in 0u32.. {
            let options = format!(
                "OPTIONS sip:{kamailio} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {local};branch=z9hG4bKready{attempt};rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:test@{local}>;tag=ready\r\n\
                 To: <sip:{kamailio}>\r\n\
                 Call-ID: ready-{attempt}@{local}\r\n\
                 CSeq: 1 OPTIONS\r\n\
                 Content-Length: 0\r\n\r\n",
                kamailio = self.address,
            );
            let _ = socket.send_to(options.as_bytes(), self.address);
            let mut reply = [0u8; 2048];
            if let Ok(size) = socket.recv(&mut reply) {
                if reply[..size].starts_with(b"SIP/2.0 200") {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "Kamailio ({program} -f {}) did not answer OPTIONS on {} within 20 s; \
                 its log:\n{}",
                Self::config_path().display(),
                self.address,
                self.log_tail()
            );
        }
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // End of file on its stdin: the guard stops Kamailio and waits for it.
        drop(self.lifeline.take());
        let _ = self.guard.wait();
    }
}

/// The Kamailio binary: `$DIALCORE_KAMAILIO`, else `kamailio` on `PATH`, else the Debian
/// package's `/usr/sbin/kamailio` (`/usr/sbin` is not on every user's `PATH`). Panics
/// with what to install when none runs: a missing Kamailio fails the test, as a missing
/// SIPp does.
pub fn kamailio_program() -> String {
    let candidates = match std::env::var("DIALCORE_KAMAILIO") {
        Ok(program) => vec![program],
        Err(_) => vec!["kamailio".to_owned(), "/usr/sbin/kamailio".to_owned()],
    };
    for program in &candidates {
        let runs = std::process::Command::new(program)
            .arg("-v")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|output| output.status.success());
        if runs {
            return program.clone();
        }
    }
    panic!(
        "the cluster test cannot run Kamailio (tried {candidates:?}); scripts/prereqs.sh \
         installs the Debian kamailio package, or point DIALCORE_KAMAILIO at the binary"
    )
}

/// What `caller_via_proxy.xml` logged: which node answered each call (by the port of the
/// 200's Contact) and which calls ended with a 200 to their BYE.
#[derive(Debug, Default)]
pub struct CallLog {
    /// SIP Call-ID to the SIP port of the node that answered.
    pub answered: BTreeMap<String, u16>,
    /// Call-IDs whose BYE got 200.
    pub ended: BTreeSet<String>,
}

impl CallLog {
    /// Parses SIPp's `-trace_logs` output.
    pub fn parse(logs: &str) -> CallLog {
        let mut log = CallLog::default();
        for line in logs.lines() {
            if let Some(rest) = line.trim().strip_prefix("answered call_id=") {
                let (call_id, rest) = rest.split_once(' ').expect("call_id then contact");
                let contact = rest
                    .split_once("contact=")
                    .map(|(_, contact)| contact)
                    .unwrap_or_else(|| panic!("no contact in {line:?}"));
                let port = contact_port(contact)
                    .unwrap_or_else(|| panic!("no port in the Contact of {line:?}"));
                log.answered.insert(call_id.to_owned(), port);
            } else if let Some(call_id) = line.trim().strip_prefix("ended call_id=") {
                log.ended.insert(call_id.trim().to_owned());
            }
        }
        log
    }

    /// How many calls the node on SIP port `port` answered.
    pub fn answered_by(&self, port: u16) -> usize {
        self.answered.values().filter(|&&p| p == port).count()
    }

    /// The calls answered by the node on `port`.
    pub fn calls_of(&self, port: u16) -> BTreeSet<String> {
        self.answered
            .iter()
            .filter(|(_, &p)| p == port)
            .map(|(call_id, _)| call_id.clone())
            .collect()
    }
}

/// The port of a Contact value such as ` <sip:127.0.0.1:5060;transport=udp>`.
fn contact_port(contact: &str) -> Option<u16> {
    let uri = contact.trim().trim_start_matches('<');
    let uri = uri.split(['>', ';']).next()?;
    let host_port = uri.strip_prefix("sip:")?;
    let host_port = host_port.rsplit_once('@').map_or(host_port, |(_, h)| h);
    host_port.rsplit_once(':')?.1.parse().ok()
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn contact_ports_are_read_from_name_addr_and_plain_uris() {
    assert_eq!(contact_port(" <sip:127.0.0.1:25061>"), Some(25061));
    assert_eq!(
        contact_port("<sip:+1555@127.0.0.1:5070;transport=udp>"),
        Some(5070)
    );
    assert_eq!(contact_port("<sip:127.0.0.1>"), None);
}
