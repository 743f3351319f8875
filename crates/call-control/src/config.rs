//! Service configuration: embedded defaults, overridden by a TOML file, overridden by
//! `DIALCORE_<SECTION>_<KEY>` environment variables.
//!
//! ```toml
//! [http]
//! listen = "0.0.0.0:8080"
//! [sip]
//! listen = "0.0.0.0:5060"
//! public_ip = "203.0.113.7"
//! [node]
//! id = "dialcore-1"
//! max_calls = 500
//! drain_timeout = "30m"
//! [log]
//! format = "json"
//! ```
//!
//! One struct per section, deserialized with serde; the keys of the file and the names of
//! the environment variables are those structs' fields ([`Config::keys`]), so there is no
//! second list to keep: `http.listen` is `DIALCORE_HTTP_LISTEN`, `api.key` is
//! `DIALCORE_API_KEY`, `recordings.dir` is `DIALCORE_RECORDINGS_DIR`, `secret.key` and
//! `secret.key_file` are `DIALCORE_SECRET_KEY` and `DIALCORE_SECRET_KEY_FILE`. Every value
//! is read from its text form (a TOML string, number or boolean, or a variable's value) by
//! the same rules either way; an empty optional value means none. Unknown keys in the file
//! and values that do not parse are errors naming the key and where the value came from.

mod fields;
mod keys;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use sip_stack::message::TransportKind;

pub use self::keys::Key;

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("config file {origin} is not valid TOML: {error}")]
    Syntax {
        /// The file.
        origin: String,
        /// The parser's message.
        error: toml::de::Error,
    },
    /// The file names a key this service does not have.
    #[error("unknown config key `{key}` in {origin} ({})", known_keys(key))]
    UnknownKey {
        /// `section.key` as written.
        key: String,
        /// Where it was written.
        origin: String,
    },
    /// A value does not parse for its key.
    #[error("invalid value {value:?} for config key `{key}` (from {origin}): {reason}")]
    InvalidValue {
        /// `section.key`.
        key: String,
        /// Where the value came from (a file or an environment variable).
        origin: String,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Values that parse one by one but do not fit together.
    #[error("inconsistent config: {reason}")]
    Inconsistent {
        /// What does not fit.
        reason: String,
    },
}

/// What `key` (`section.name` or `section`) could have been: the keys of its section when
/// that is one, else the sections.
fn known_keys(key: &str) -> String {
    let section = key.split_once('.').map_or(key, |(section, _)| section);
    let keys = Config::keys();
    let names: Vec<&str> = keys
        .iter()
        .filter(|known| known.section == section)
        .map(|known| known.name)
        .collect();
    if names.is_empty() {
        let mut sections: Vec<&str> = keys.iter().map(|known| known.section).collect();
        sections.dedup();
        format!("known sections: {}", sections.join(", "))
    } else {
        format!("known keys of [{section}]: {}", names.join(", "))
    }
}

/// Keys whose values are never repeated in an error: a value that does not parse may still
/// be most of a real secret.
const SECRET_KEYS: &[&str] = &["api.key", "secret.key"];

/// The whole configuration. `Default` is the embedded defaults of DESIGN.md.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[http]`
    pub http: HttpConfig,
    /// `[sip]`
    pub sip: SipConfig,
    /// `[rtp]`
    pub rtp: RtpConfig,
    /// `[database]`
    pub database: DatabaseConfig,
    /// `[recordings]`
    pub recordings: RecordingsConfig,
    /// `[api]`
    pub api: ApiConfig,
    /// `[credits]`
    pub credits: CreditsConfig,
    /// `[webhooks]`
    pub webhooks: WebhooksConfig,
    /// `[test_calls]`
    pub test_calls: TestCallsConfig,
    /// `[agents]`
    pub agents: AgentsConfig,
    /// `[websocket]`
    pub websocket: WebsocketConfig,
    /// `[security]`
    pub security: SecurityConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[secret]`
    pub secret: SecretConfig,
    /// `[node]`
    pub node: NodeConfig,
}

/// `[secret]`: the key that encrypts trunk passwords, webhook secrets and agent header
/// values in the database (see [`crate::secrets`]).
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretConfig {
    /// The key (`DIALCORE_SECRET_KEY`: 32 bytes as base64 or hex); when absent, the key
    /// file is used.
    #[serde(deserialize_with = "fields::secret_key")]
    pub key: Option<crate::secrets::SecretKey>,
    /// Where the key is kept when `key` is absent (`DIALCORE_SECRET_KEY_FILE`; default:
    /// the database file's path with `.key` appended), created on first start.
    #[serde(deserialize_with = "fields::optional")]
    pub key_file: Option<PathBuf>,
}

impl SecretConfig {
    /// The key for the database at `database_url` ([`crate::secrets::SecretKey::resolve`]).
    pub fn resolve_key(
        &self,
        database_url: &str,
    ) -> Result<crate::secrets::SecretKey, crate::secrets::SecretError> {
        crate::secrets::SecretKey::resolve(
            self.key.as_ref(),
            self.key_file.as_deref(),
            database_url,
        )
    }

    /// The key for the database at `database_url` if one exists
    /// ([`crate::secrets::SecretKey::find_existing`]).
    pub fn existing_key(
        &self,
        database_url: &str,
    ) -> Result<Option<crate::secrets::SecretKey>, crate::secrets::SecretError> {
        crate::secrets::SecretKey::find_existing(
            self.key.as_ref(),
            self.key_file.as_deref(),
            database_url,
        )
    }
}

impl fmt::Debug for SecretConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretConfig")
            .field("key", &self.key)
            .field("key_file", &self.key_file)
            .finish()
    }
}

/// `[http]`: the REST API listener.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on (default `127.0.0.1:8080`; port 0 picks a free port).
    #[serde(deserialize_with = "fields::parsed")]
    pub listen: SocketAddr,
    /// Most open client connections (default 512). At the limit a new connection closes
    /// the longest-idle one (no request in flight), so idle or slow clients can never lock
    /// others out; when every connection is busy the new one is refused.
    #[serde(deserialize_with = "fields::positive")]
    pub max_connections: usize,
    /// Time a connection has to send a request's headers, also between requests of a
    /// keep-alive connection (default 10 000 ms): idle and slowloris clients are closed.
    #[serde(deserialize_with = "fields::positive")]
    pub header_read_timeout_ms: u64,
    /// Time a request has to be answered (default 30 000 ms; 408 otherwise). Streaming a
    /// response body (a recording) is not counted.
    #[serde(deserialize_with = "fields::positive")]
    pub request_timeout_ms: u64,
    /// On shutdown, how long requests in flight may finish before their connections are
    /// closed (default 10 000 ms).
    #[serde(deserialize_with = "fields::parsed")]
    pub shutdown_grace_ms: u64,
}

impl HttpConfig {
    /// [`HttpConfig::header_read_timeout_ms`] as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// [`HttpConfig::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// [`HttpConfig::shutdown_grace_ms`] as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// `[sip]`: the SIP listener (UDP and TCP on the same address).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// Address to listen on (default `127.0.0.1:5060`; port 0 picks a free port).
    #[serde(deserialize_with = "fields::parsed")]
    pub listen: SocketAddr,
    /// Address advertised in SIP and SDP when behind NAT (default: the listen address).
    #[serde(deserialize_with = "fields::optional")]
    pub public_ip: Option<IpAddr>,
    /// Digest algorithms offered to trunks with `inbound_auth`, one `WWW-Authenticate` each
    /// in this order (RFC 8760: clients answer the first they support). Default
    /// `MD5,SHA-256`: MD5 first because many carriers' devices know nothing else and fail
    /// on a first challenge they cannot answer; `SHA-256,MD5` prefers SHA-256.
    #[serde(deserialize_with = "fields::digest_algorithms")]
    pub digest_algorithms: Vec<sip_stack::auth::Algorithm>,
    /// Where outbound INVITEs to trunks are sent instead of the trunk's own address: an
    /// SBC or load balancer such as Kamailio in front of the nodes (`host:port`, or
    /// `sip:host:port;transport=udp|tcp`; default none: straight to the trunk). The
    /// Request-URI stays the trunk's and the INVITE carries `Route: <sip:proxy;lr>` (RFC
    /// 3261 loose routing), so the proxy relays it there.
    #[serde(deserialize_with = "fields::outbound_proxy")]
    pub outbound_proxy: Option<OutboundProxy>,
}

/// `[sip] outbound_proxy`: the next hop of outbound INVITEs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundProxy {
    /// Host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// Port (default 5060).
    pub port: u16,
    /// Transport to the proxy (default UDP, as for any `sip:` URI without `transport`).
    pub transport: TransportKind,
}

impl OutboundProxy {
    /// The proxy as a SIP URI with `lr`, e.g. `sip:10.0.0.2:5060;lr`: the value of the
    /// `Route` header outbound INVITEs carry (within `<...>`).
    pub fn route_uri(&self) -> String {
        let transport = match self.transport {
            TransportKind::Udp => "",
            TransportKind::Tcp => ";transport=tcp",
        };
        format!("sip:{}:{}{transport};lr", self.host_for_uri(), self.port)
    }

    /// The host as a URI writes it (IPv6 in brackets).
    fn host_for_uri(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// The proxy's address: the host itself when it is an IP address, else the first
    /// address it resolves to.
    pub async fn resolve(&self) -> std::io::Result<SocketAddr> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        tokio::net::lookup_host((self.host.as_str(), self.port))
            .await?
            .next()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} resolves to no address", self.host),
                )
            })
    }
}

impl fmt::Display for OutboundProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match self.transport {
            TransportKind::Udp => "udp",
            TransportKind::Tcp => "tcp",
        };
        write!(
            f,
            "sip:{}:{};transport={transport}",
            self.host_for_uri(),
            self.port
        )
    }
}

impl FromStr for OutboundProxy {
    type Err = String;

    /// `host`, `host:port`, `[v6]:port`, or a SIP URI of them with `;transport=udp|tcp`
    /// and `;lr` parameters (`<...>` around it allowed).
    fn from_str(text: &str) -> Result<OutboundProxy, String> {
        let expected = || {
            "expected host:port or sip:host:port;transport=udp (a proxy, with no user part)"
                .to_owned()
        };
        let text = text.trim();
        let text = text
            .strip_prefix('<')
            .and_then(|inner| inner.strip_suffix('>'))
            .unwrap_or(text);
        let uri = match text.get(..4) {
            Some(scheme) if scheme.eq_ignore_ascii_case("sip:") => &text[4..],
            _ if text.contains(';') => return Err(expected()),
            _ => text,
        };
        let mut parts = uri.split(';');
        let address = parts.next().unwrap_or_default();
        if address.contains('@') {
            return Err(expected());
        }
        let (host, port) = fields::split_host_port(address).ok_or_else(expected)?;
        let mut transport = TransportKind::Udp;
        for param in parts {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "lr" => {}
                "transport" => {
                    transport = match value.trim().to_ascii_lowercase().as_str() {
                        "udp" => TransportKind::Udp,
                        "tcp" => TransportKind::Tcp,
                        other => {
                            return Err(format!("unsupported transport {other:?} (udp or tcp)"))
                        }
                    }
                }
                other => return Err(format!("unsupported URI parameter {other:?}")),
            }
        }
        let port = port.unwrap_or(5060);
        if port == 0 {
            return Err("the port must be from 1 to 65535".into());
        }
        Ok(OutboundProxy {
            host: host.to_owned(),
            port,
            transport,
        })
    }
}

/// `[rtp]`: media ports and timeouts.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtpConfig {
    /// Lowest RTP port (default 20000).
    #[serde(deserialize_with = "fields::parsed")]
    pub port_min: u16,
    /// Highest RTP port (default 30000).
    #[serde(deserialize_with = "fields::parsed")]
    pub port_max: u16,
    /// Seconds without RTP before a call ends with `media_timeout` (default 30).
    #[serde(deserialize_with = "fields::positive")]
    pub inactivity_timeout_secs: u64,
}

/// `[database]`
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// sqlx URL (default `sqlite://dialcore.db`).
    #[serde(deserialize_with = "fields::database_url")]
    pub url: String,
}

/// `[recordings]`
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingsConfig {
    /// Directory of the WAV recordings (default `./recordings`).
    #[serde(deserialize_with = "fields::directory")]
    pub dir: PathBuf,
}

/// `[api]`
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Value of the bootstrap API key (also `DIALCORE_API_KEY`); generated when absent.
    #[serde(deserialize_with = "fields::optional")]
    pub key: Option<String>,
    /// Requests per minute allowed per API key (default 600).
    #[serde(deserialize_with = "fields::positive")]
    pub rate_limit_per_minute: u32,
    /// Calls an organisation may have live at once (placed, ringing or answered; inbound
    /// and outbound); one more is refused (429 `concurrent_call_limit`, SIP 486 inbound).
    /// 0 (the default) means no limit: the credit reservation still bounds what a tenant
    /// can spend.
    #[serde(deserialize_with = "fields::parsed")]
    pub max_concurrent_calls_per_org: u32,
}

/// `[credits]`
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CreditsConfig {
    /// Balance of a new organisation, in cents (default 10000).
    #[serde(deserialize_with = "fields::parsed")]
    pub starting_balance_cents: i64,
    /// Price of each started minute of a call, in cents (default 2).
    #[serde(deserialize_with = "fields::non_negative")]
    pub per_minute_cents: i64,
}

/// `[webhooks]`: delivery retries.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Attempts before a delivery is given up (default 8).
    #[serde(deserialize_with = "fields::positive")]
    pub max_attempts: u32,
    /// Delay before the first retry; doubles at each attempt (default 1000 ms).
    #[serde(deserialize_with = "fields::parsed")]
    pub base_delay_ms: u64,
    /// Timeout of one delivery request (default 5000 ms).
    #[serde(deserialize_with = "fields::positive")]
    pub timeout_ms: u64,
}

/// `[test_calls]`: the SIP loopback test mode.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestCallsConfig {
    /// Test-call runs an organisation may have queued or in progress at once (default 20,
    /// the largest batch); a request that would pass it gets 429 `rate_limited`.
    #[serde(deserialize_with = "fields::positive")]
    pub max_concurrent_runs: u32,
    /// The test bot's own number, E.164: what an outbound test run calls unless the request
    /// names another `target_number` (default `+15550100000`).
    #[serde(deserialize_with = "fields::e164")]
    pub bot_number: String,
    /// Longest test call, in seconds after answer: the bot hangs up by then (default 120).
    /// Cost estimates price a run at this length.
    #[serde(deserialize_with = "fields::positive")]
    pub max_run_seconds: u32,
    /// Directory of the WAV files scenario scripts may play (`say greeting.wav`, a plain
    /// relative path inside it). Unset (the default): scripts speak only the shipped speech,
    /// so a script sent over the API can never make the service read another file.
    #[serde(deserialize_with = "fields::optional")]
    pub audio_dir: Option<PathBuf>,
    /// Price of a test call's leg over a normal call's, a whole number from 0 (test calls
    /// are free) to [`MAX_CHARGE_MULTIPLIER`] (default 2). The operator's alone: runs and
    /// batches show it, read-only.
    #[serde(deserialize_with = "fields::charge_multiplier")]
    pub charge_multiplier: u32,
}

/// Largest `test_calls.charge_multiplier`.
pub const MAX_CHARGE_MULTIPLIER: u32 = 100;

/// `[agents]`: what agents of every organisation share.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    /// Directory of the WAV files scripted agents may play (`{"action": "say", "audio":
    /// "greeting.wav"}`, a plain relative path inside it, checked when the agent is written
    /// and when the file is opened). Unset (the default): `say` steps play text only, and
    /// nothing an API client writes can make the service read a file.
    #[serde(deserialize_with = "fields::optional")]
    pub audio_dir: Option<PathBuf>,
}

/// `[websocket]`: the `websocket` agent runtime.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebsocketConfig {
    /// How long connecting to an agent's WebSocket may take (default 5000 ms); past it the
    /// call ends with outcome `error`, reason `agent_unreachable`.
    #[serde(deserialize_with = "fields::positive")]
    pub connect_timeout_ms: u64,
    /// A WAV file (16-bit PCM, 8/16/48 kHz) played to the caller when the agent cannot be
    /// reached or drops mid-call, before the call ends (default none: it ends at once).
    #[serde(deserialize_with = "fields::optional")]
    pub fallback_audio: Option<PathBuf>,
}

/// `[security]`: what tenants may make the service reach.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Whether webhook URLs, agent WebSocket URLs and trunk hosts may be (or resolve to)
    /// loopback, private, link-local (cloud metadata), shared (CGNAT) or unique-local
    /// addresses, and agent URLs may send their headers over unencrypted `ws://` (default
    /// false: refused, checked on the resolved address when connecting). For single-tenant
    /// and test setups. See [`crate::destinations`].
    #[serde(deserialize_with = "fields::boolean")]
    pub allow_private_destinations: bool,
}

/// `[log]`
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Line format (default text).
    #[serde(deserialize_with = "fields::log_format")]
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info` or `call_control=debug,info` (default `info`).
    #[serde(deserialize_with = "fields::log_level")]
    pub level: String,
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[node]`: this node of a cluster (several nodes on one database behind a SIP load
/// balancer), or the only one.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's id, recorded on the calls and runs it runs (`DIALCORE_NODE_ID`; default:
    /// the host name). Letters, digits, `-`, `_` and `.`, at most 64.
    #[serde(deserialize_with = "fields::node_id")]
    pub id: String,
    /// `host:port` at which other nodes reach this node's HTTP API (default: see
    /// [`NodeConfig::advertised_address_for`]).
    #[serde(deserialize_with = "fields::advertised_address")]
    pub advertised_address: Option<String>,
    /// The most calls this node runs at once, inbound and outbound (default 0: no limit).
    /// One more is refused: an INVITE with 503 and `Retry-After` (a load balancer tries
    /// another node), `POST /calls` and test calls with 503 `unavailable`.
    #[serde(deserialize_with = "fields::parsed")]
    pub max_calls: u32,
    /// How long a draining node (SIGTERM, `POST /admin/drain`) lets its live calls run
    /// before it hangs them up (default 30 minutes; `"90s"`, `"30m"`, `"1h"` or seconds).
    #[serde(deserialize_with = "fields::duration")]
    pub drain_timeout: Duration,
    /// How long the node's lease lasts without a heartbeat (default 15 s, at least 3 s;
    /// renewed every third of it): a node silent for longer is lost, and a surviving node
    /// ends its unfinished calls (`end_reason` `node_lost`).
    #[serde(deserialize_with = "fields::lease")]
    pub lease: Duration,
}

/// Default `[node] lease`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// Default `[node] drain_timeout`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30 * 60);

impl NodeConfig {
    /// [`NodeConfig::max_calls`] as a limit (`None`: no limit).
    pub fn call_limit(&self) -> Option<u32> {
        Some(self.max_calls).filter(|&limit| limit > 0)
    }

    /// The address other nodes reach this node's HTTP API at: `advertised_address` when
    /// set, else `http_listen` (the address the API listens on, as bound) unless it is an
    /// unspecified address (`0.0.0.0`, `::`) or port 0, which nobody can reach.
    pub fn advertised_address_for(&self, http_listen: SocketAddr) -> Option<String> {
        if let Some(address) = &self.advertised_address {
            return Some(address.clone());
        }
        (!http_listen.ip().is_unspecified() && http_listen.port() != 0)
            .then(|| http_listen.to_string())
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: host_name(),
            advertised_address: None,
            max_calls: 0,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            lease: DEFAULT_LEASE,
        }
    }
}

/// The default node id: the kernel's host name (`/proc/sys/kernel/hostname`, else
/// `uname`), cut to what a node id may hold; `dialcore` when there is none.
pub fn host_name() -> String {
    static HOST_NAME: OnceLock<String> = OnceLock::new();
    HOST_NAME
        .get_or_init(|| {
            let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .unwrap_or_else(|| {
                    rustix::system::uname()
                        .nodename()
                        .to_string_lossy()
                        .into_owned()
                });
            let id: String = kernel
                .trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .take(fields::MAX_NODE_ID_LEN)
                .collect();
            if id.is_empty() {
                "dialcore".to_owned()
            } else {
                id
            }
        })
        .clone()
}

impl Config {
    /// Loads the configuration: defaults, then the TOML file at `path` (when given), then the
    /// process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                        path: path.to_owned(),
                        error,
                    })?,
                )
            }
            None => None,
        };
        let origin = path.map(|p| format!("config file {}", p.display()));
        Config::build(text.as_deref().zip(origin.as_deref()), std::env::vars())
    }

    /// Builds a configuration from TOML text and environment pairs (tests use this).
    pub fn from_env_and_toml(
        toml: Option<&str>,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Config::build(toml.map(|text| (text, "config file")), env)
    }

    /// Every configuration key, in the order the section structs declare them: the keys of
    /// the file and, through [`Key::env_var`], the environment.
    pub fn keys() -> &'static [Key] {
        static KEYS: OnceLock<Vec<Key>> = OnceLock::new();
        KEYS.get_or_init(keys::probe::<Config>)
    }

    /// The environment variable that overrides `key` (`http.listen` -> `DIALCORE_HTTP_LISTEN`).
    pub fn env_var(key: &str) -> String {
        format!("DIALCORE_{}", key.replace('.', "_").to_ascii_uppercase())
    }

    /// The defaults, overlaid with the file's table and then the environment's values, read
    /// by the section structs in one pass.
    fn build(
        toml: Option<(&str, &str)>,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let keys = Config::keys();
        let mut values = toml::Table::new();
        let mut origins: HashMap<String, String> = HashMap::new();
        if let Some((text, origin)) = toml {
            let table: toml::Table = text.parse().map_err(|error| ConfigError::Syntax {
                origin: origin.to_owned(),
                error,
            })?;
            let unknown = |key: String| ConfigError::UnknownKey {
                key,
                origin: origin.to_owned(),
            };
            for (section, body) in table {
                let toml::Value::Table(body) = body else {
                    return Err(unknown(section));
                };
                if body.is_empty() && !keys.iter().any(|key| key.section == section) {
                    return Err(unknown(section));
                }
                for name in body.keys() {
                    if !keys
                        .iter()
                        .any(|key| key.section == section && key.name == name)
                    {
                        return Err(unknown(format!("{section}.{name}")));
                    }
                    origins.insert(format!("{section}.{name}"), origin.to_owned());
                }
                values.insert(section, toml::Value::Table(body));
            }
        }
        let env: Vec<(String, String)> = env
            .filter(|(name, _)| name.starts_with("DIALCORE_"))
            .collect();
        for key in keys {
            let var = key.env_var();
            if let Some((_, value)) = env.iter().rev().find(|(name, _)| *name == var) {
                let section = values
                    .entry(key.section)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let toml::Value::Table(section) = section {
                    section.insert(key.name.to_owned(), toml::Value::String(value.clone()));
                }
                origins.insert(key.to_string(), format!("environment variable {var}"));
            }
        }
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(values.clone()))
            .map_err(|error| invalid_value(&error, &values, &origins))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.rtp.port_min == 0 || self.rtp.port_min > self.rtp.port_max {
            return Err(ConfigError::Inconsistent {
                reason: format!(
                    "rtp.port_min ({}) must be at least 1 and not above rtp.port_max ({})",
                    self.rtp.port_min, self.rtp.port_max
                ),
            });
        }
        Ok(())
    }
}

/// A value the section structs refused, as [`ConfigError::InvalidValue`]: its key from the
/// error's path, the value as given, and where it came from.
fn invalid_value(
    error: &serde_path_to_error::Error<toml::de::Error>,
    values: &toml::Table,
    origins: &HashMap<String, String>,
) -> ConfigError {
    let key = error
        .path()
        .iter()
        .map(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => key.clone(),
            serde_path_to_error::Segment::Seq { index } => index.to_string(),
            serde_path_to_error::Segment::Enum { variant } => variant.clone(),
            serde_path_to_error::Segment::Unknown => "?".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(".");
    let value = match key.split_once('.') {
        _ if SECRET_KEYS.contains(&key.as_str()) => "<redacted>".to_owned(),
        Some((section, name)) => match values.get(section).and_then(|body| body.get(name)) {
            Some(toml::Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        },
        None => String::new(),
    };
    ConfigError::InvalidValue {
        origin: origins
            .get(&key)
            .cloned()
            .unwrap_or_else(|| "the configuration".to_owned()),
        key,
        value,
        reason: error.inner().message().trim().to_owned(),
    }
}

impl RtpConfig {
    /// The RTP inactivity timeout as a duration.
    pub fn inactivity_timeout(&self) -> Duration {
        Duration::from_secs(self.inactivity_timeout_secs)
    }
}

impl WebhooksConfig {
    /// Delay before the first retry.
    pub fn base_delay(&self) -> Duration {
        Duration::from_millis(self.base_delay_ms)
    }

    /// Timeout of one delivery request.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl TestCallsConfig {
    /// The longest test call as a duration.
    pub fn max_run(&self) -> Duration {
        Duration::from_secs(u64::from(self.max_run_seconds))
    }
}

impl WebsocketConfig {
    /// The connect timeout as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

impl Default for WebsocketConfig {
    fn default() -> Self {
        WebsocketConfig {
            connect_timeout_ms: 5000,
            fallback_audio: None,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_connections: 512,
            header_read_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            shutdown_grace_ms: 10_000,
        }
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            public_ip: None,
            digest_algorithms: vec![
                sip_stack::auth::Algorithm::Md5,
                sip_stack::auth::Algorithm::Sha256,
            ],
            outbound_proxy: None,
        }
    }
}

impl Default for RtpConfig {
    fn default() -> Self {
        RtpConfig {
            port_min: 20000,
            port_max: 30000,
            inactivity_timeout_secs: 30,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://dialcore.db".into(),
        }
    }
}

impl Default for RecordingsConfig {
    fn default() -> Self {
        RecordingsConfig {
            dir: PathBuf::from("./recordings"),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            key: None,
            rate_limit_per_minute: 600,
            max_concurrent_calls_per_org: 0,
        }
    }
}

impl fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiConfig")
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field(
                "max_concurrent_calls_per_org",
                &self.max_concurrent_calls_per_org,
            )
            .finish()
    }
}

impl Default for CreditsConfig {
    fn default() -> Self {
        CreditsConfig {
            starting_balance_cents: 10000,
            per_minute_cents: 2,
        }
    }
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            max_attempts: 8,
            base_delay_ms: 1000,
            timeout_ms: 5000,
        }
    }
}

impl Default for TestCallsConfig {
    fn default() -> Self {
        TestCallsConfig {
            max_concurrent_runs: 20,
            bot_number: "+15550100000".into(),
            max_run_seconds: 120,
            audio_dir: None,
            charge_multiplier: crate::model::DEFAULT_CHARGE_MULTIPLIER,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn defaults_are_the_embedded_ones() {
        let config = Config::from_env_and_toml(None, env(&[])).expect("defaults load");
        assert_eq!(config, Config::default());
        assert_eq!(config.http.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(config.sip.listen, "127.0.0.1:5060".parse().expect("addr"));
        assert_eq!(config.sip.public_ip, None);
        assert_eq!((config.rtp.port_min, config.rtp.port_max), (20000, 30000));
        assert_eq!(config.rtp.inactivity_timeout(), Duration::from_secs(30));
        assert_eq!(config.database.url, "sqlite://dialcore.db");
        assert_eq!(config.recordings.dir, PathBuf::from("./recordings"));
        assert_eq!(config.api.key, None);
        assert_eq!(config.api.rate_limit_per_minute, 600);
        assert_eq!(config.api.max_concurrent_calls_per_org, 0);
        assert_eq!(config.credits.starting_balance_cents, 10000);
        assert_eq!(config.credits.per_minute_cents, 2);
        assert_eq!(config.webhooks.max_attempts, 8);
        assert_eq!(config.webhooks.base_delay(), Duration::from_millis(1000));
        assert_eq!(config.webhooks.timeout(), Duration::from_millis(5000));
        assert_eq!(config.test_calls.max_concurrent_runs, 20);
        assert_eq!(config.test_calls.bot_number, "+15550100000");
        assert_eq!(config.test_calls.max_run_seconds, 120);
        assert_eq!(config.test_calls.max_run(), Duration::from_secs(120));
        assert_eq!(config.test_calls.charge_multiplier, 2);
        assert_eq!(config.log.format, LogFormat::Text);
        assert_eq!(config.log.level, "info");
    }

    #[test]
    fn toml_sets_every_section() {
        let text = r#"
            [http]
            listen = "0.0.0.0:0"
            [sip]
            listen = "0.0.0.0:5070"
            public_ip = "203.0.113.7"
            [rtp]
            port_min = 40000
            port_max = 40100
            inactivity_timeout_secs = 5
            [database]
            url = "sqlite:///var/lib/dialcore/db.sqlite"
            [recordings]
            dir = "/var/lib/dialcore/recordings"
            [api]
            key = "sk_test_1"
            rate_limit_per_minute = 10
            max_concurrent_calls_per_org = 4
            [credits]
            starting_balance_cents = 0
            per_minute_cents = 3
            [webhooks]
            max_attempts = 2
            base_delay_ms = 10
            timeout_ms = 100
            [test_calls]
            max_concurrent_runs = 1
            bot_number = "+15550109999"
            max_run_seconds = 30
            charge_multiplier = 3
            [log]
            format = "json"
            level = "call_control=debug,info"
        "#;
        let config = Config::from_env_and_toml(Some(text), env(&[])).expect("loads");
        assert_eq!(config.http.listen.port(), 0);
        assert_eq!(config.sip.listen.port(), 5070);
        assert_eq!(
            config.sip.public_ip,
            Some("203.0.113.7".parse().expect("ip"))
        );
        assert_eq!((config.rtp.port_min, config.rtp.port_max), (40000, 40100));
        assert_eq!(config.rtp.inactivity_timeout_secs, 5);
        assert_eq!(config.database.url, "sqlite:///var/lib/dialcore/db.sqlite");
        assert_eq!(
            config.recordings.dir,
            PathBuf::from("/var/lib/dialcore/recordings")
        );
        assert_eq!(config.api.key.as_deref(), Some("sk_test_1"));
        assert_eq!(config.api.rate_limit_per_minute, 10);
        assert_eq!(config.api.max_concurrent_calls_per_org, 4);
        assert_eq!(config.credits.starting_balance_cents, 0);
        assert_eq!(config.credits.per_minute_cents, 3);
        assert_eq!(config.webhooks.max_attempts, 2);
        assert_eq!(config.webhooks.base_delay_ms, 10);
        assert_eq!(config.webhooks.timeout_ms, 100);
        assert_eq!(config.test_calls.max_concurrent_runs, 1);
        assert_eq!(config.test_calls.bot_number, "+15550109999");
        assert_eq!(config.test_calls.max_run_seconds, 30);
        assert_eq!(config.test_calls.charge_multiplier, 3);
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.log.level, "call_control=debug,info");
    }

    #[test]
    fn environment_overrides_toml() {
        let text = "[http]\nlisten = \"127.0.0.1:9000\"\n[rtp]\nport_max = 25000\n";
        let config = Config::from_env_and_toml(
            Some(text),
            env(&[
                ("DIALCORE_HTTP_LISTEN", "127.0.0.1:9001"),
                ("DIALCORE_API_KEY", "sk_live_fromenv"),
                ("DIALCORE_RECORDINGS_DIR", "/tmp/recs"),
                ("DIALCORE_DATABASE_URL", "sqlite::memory:"),
                ("DIALCORE_TEST_CALLS_MAX_CONCURRENT_RUNS", "9"),
                ("DIALCORE_TEST_CALLS_BOT_NUMBER", "+15550100001"),
                ("DIALCORE_TEST_CALLS_MAX_RUN_SECONDS", "45"),
                ("DIALCORE_TEST_CALLS_CHARGE_MULTIPLIER", "0"),
                ("DIALCORE_LOG_FORMAT", "JSON"),
                ("DIALCORE_SOMETHING_ELSE", "ignored"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .expect("loads");
        assert_eq!(config.http.listen.port(), 9001);
        assert_eq!(config.rtp.port_max, 25000);
        assert_eq!(config.api.key.as_deref(), Some("sk_live_fromenv"));
        assert_eq!(config.recordings.dir, PathBuf::from("/tmp/recs"));
        assert_eq!(config.database.url, "sqlite::memory:");
        assert_eq!(config.test_calls.max_concurrent_runs, 9);
        assert_eq!(config.test_calls.bot_number, "+15550100001");
        assert_eq!(config.test_calls.max_run_seconds, 45);
        assert_eq!(config.test_calls.charge_multiplier, 0, "free test calls");
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn empty_optional_values_mean_none() {
        let config = Config::from_env_and_toml(
            Some("[api]\nkey = \"sk_a\"\n[sip]\npublic_ip = \"10.0.0.1\""),
            env(&[("DIALCORE_API_KEY", ""), ("DIALCORE_SIP_PUBLIC_IP", "")]),
        )
        .expect("loads");
        assert_eq!(config.api.key, None);
        assert_eq!(config.sip.public_ip, None);
    }

    #[test]
    fn database_url_is_sqlite_or_postgres() {
        for url in [
            "sqlite::memory:",
            "postgres://dialcore@127.0.0.1:5432/dialcore",
            "postgresql://dialcore@db.internal/dialcore",
        ] {
            let config = Config::from_env_and_toml(None, env(&[("DIALCORE_DATABASE_URL", url)]))
                .expect("loads");
            assert_eq!(config.database.url, url);
        }
        let error = Config::from_env_and_toml(None, env(&[("DIALCORE_DATABASE_URL", "mysql://x")]))
            .expect_err("mysql is not a backend");
        assert!(error.to_string().contains("postgres://"), "{error}");
    }

    #[test]
    fn digest_algorithms_are_a_list_in_order() {
        use sip_stack::auth::Algorithm;
        let config = Config::from_env_and_toml(None, env(&[])).expect("defaults");
        assert_eq!(
            config.sip.digest_algorithms,
            [Algorithm::Md5, Algorithm::Sha256]
        );
        let config = Config::from_env_and_toml(
            None,
            env(&[("DIALCORE_SIP_DIGEST_ALGORITHMS", "sha-256, MD5")]),
        )
        .expect("loads");
        assert_eq!(
            config.sip.digest_algorithms,
            [Algorithm::Sha256, Algorithm::Md5]
        );
        for bad in ["", "MD5,MD5", "SHA-512", "MD5,,SHA-256"] {
            let error = Config::from_env_and_toml(
                Some(&format!("[sip]\ndigest_algorithms = \"{bad}\"")),
                env(&[]),
            )
            .expect_err(bad);
            assert!(
                matches!(error, ConfigError::InvalidValue { ref key, .. } if key == "sip.digest_algorithms"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn env_var_names() {
        assert_eq!(Config::env_var("http.listen"), "DIALCORE_HTTP_LISTEN");
        assert_eq!(
            Config::env_var("test_calls.max_concurrent_runs"),
            "DIALCORE_TEST_CALLS_MAX_CONCURRENT_RUNS"
        );
        assert_eq!(Config::env_var("api.key"), "DIALCORE_API_KEY");
    }

    #[test]
    fn bad_env_value_names_key_and_variable() {
        let error = Config::from_env_and_toml(None, env(&[("DIALCORE_RTP_PORT_MIN", "abc")]))
            .expect_err("must fail");
        let message = error.to_string();
        assert!(message.contains("`rtp.port_min`"), "{message}");
        assert!(message.contains("DIALCORE_RTP_PORT_MIN"), "{message}");
        assert!(message.contains("\"abc\""), "{message}");
        assert!(
            matches!(error, ConfigError::InvalidValue { ref key, .. } if key == "rtp.port_min")
        );
    }

    #[test]
    fn bad_toml_values_name_the_key() {
        let cases = [
            ("[http]\nlisten = \"nope\"", "http.listen"),
            ("[sip]\npublic_ip = \"300.1.1.1\"", "sip.public_ip"),
            ("[rtp]\nport_max = 70000", "rtp.port_max"),
            (
                "[rtp]\ninactivity_timeout_secs = 0",
                "rtp.inactivity_timeout_secs",
            ),
            ("[log]\nformat = \"xml\"", "log.format"),
            ("[log]\nlevel = \"=[\"", "log.level"),
            ("[database]\nurl = \"mysql://x\"", "database.url"),
            (
                "[credits]\nper_minute_cents = -1",
                "credits.per_minute_cents",
            ),
            ("[webhooks]\nmax_attempts = 0", "webhooks.max_attempts"),
            (
                "[test_calls]\nbot_number = \"5550100\"",
                "test_calls.bot_number",
            ),
            (
                "[test_calls]\nmax_run_seconds = 0",
                "test_calls.max_run_seconds",
            ),
            (
                "[test_calls]\ncharge_multiplier = 1.5",
                "test_calls.charge_multiplier",
            ),
            (
                "[test_calls]\ncharge_multiplier = -1",
                "test_calls.charge_multiplier",
            ),
            (
                "[test_calls]\ncharge_multiplier = 101",
                "test_calls.charge_multiplier",
            ),
            (
                "[api]\nrate_limit_per_minute = [1]",
                "api.rate_limit_per_minute",
            ),
        ];
        for (text, key) in cases {
            let error = Config::from_env_and_toml(Some(text), env(&[])).expect_err(text);
            let message = error.to_string();
            assert!(message.contains(&format!("`{key}`")), "{text}: {message}");
        }
    }

    #[test]
    fn unknown_keys_and_syntax_errors() {
        let error = Config::from_env_and_toml(Some("[http]\nlisten_on = \"x\""), env(&[]))
            .expect_err("unknown key");
        assert!(
            matches!(error, ConfigError::UnknownKey { ref key, .. } if key == "http.listen_on")
        );
        let error =
            Config::from_env_and_toml(Some("port = 5"), env(&[])).expect_err("not a section");
        assert!(matches!(error, ConfigError::UnknownKey { ref key, .. } if key == "port"));
        let error = Config::from_env_and_toml(Some("[http"), env(&[])).expect_err("syntax");
        assert!(matches!(error, ConfigError::Syntax { .. }));
    }

    #[test]
    fn port_range_must_be_ordered() {
        let error = Config::from_env_and_toml(
            None,
            env(&[
                ("DIALCORE_RTP_PORT_MIN", "31000"),
                ("DIALCORE_RTP_PORT_MAX", "30000"),
            ]),
        )
        .expect_err("inconsistent");
        assert!(error.to_string().contains("rtp.port_min"), "{error}");
    }

    #[test]
    fn load_reads_a_file_and_reports_a_missing_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dialcore.toml");
        std::fs::write(&path, "[webhooks]\nmax_attempts = 3\n").expect("write");
        let config = Config::load(Some(&path)).expect("loads");
        assert_eq!(config.webhooks.max_attempts, 3);
        let error = Config::load(Some(&dir.path().join("missing.toml"))).expect_err("missing");
        assert!(matches!(error, ConfigError::Read { .. }));
        std::fs::write(&path, "[webhooks]\nmax_attempts = \"many\"\n").expect("write");
        let message = Config::load(Some(&path)).expect_err("bad").to_string();
        assert!(message.contains("`webhooks.max_attempts`"), "{message}");
        assert!(message.contains("dialcore.toml"), "{message}");
    }

    #[test]
    fn websocket_section_from_toml_and_environment() {
        let defaults = Config::default();
        assert_eq!(defaults.websocket.connect_timeout(), Duration::from_secs(5));
        assert_eq!(defaults.websocket.fallback_audio, None);
        let config = Config::from_env_and_toml(
            Some("[websocket]\nconnect_timeout_ms = 1500\nfallback_audio = \"/srv/sorry.wav\"\n"),
            env(&[]),
        )
        .expect("loads");
        assert_eq!(config.websocket.connect_timeout_ms, 1500);
        assert_eq!(
            config.websocket.fallback_audio,
            Some(PathBuf::from("/srv/sorry.wav"))
        );
        let config = Config::from_env_and_toml(
            Some("[websocket]\nfallback_audio = \"/srv/sorry.wav\"\n"),
            env(&[
                ("DIALCORE_WEBSOCKET_CONNECT_TIMEOUT_MS", "250"),
                ("DIALCORE_WEBSOCKET_FALLBACK_AUDIO", ""),
            ]),
        )
        .expect("loads");
        assert_eq!(
            config.websocket.connect_timeout(),
            Duration::from_millis(250)
        );
        assert_eq!(config.websocket.fallback_audio, None, "empty means none");
        let error =
            Config::from_env_and_toml(Some("[websocket]\nconnect_timeout_ms = 0"), env(&[]))
                .expect_err("zero timeout");
        assert!(
            error.to_string().contains("`websocket.connect_timeout_ms`"),
            "{error}"
        );
    }

    #[test]
    fn security_section_from_toml_and_environment() {
        assert!(!Config::default().security.allow_private_destinations);
        let config = Config::from_env_and_toml(
            Some("[security]\nallow_private_destinations = true\n"),
            env(&[]),
        )
        .expect("loads");
        assert!(config.security.allow_private_destinations);
        let config = Config::from_env_and_toml(
            Some("[security]\nallow_private_destinations = true\n"),
            env(&[("DIALCORE_SECURITY_ALLOW_PRIVATE_DESTINATIONS", "false")]),
        )
        .expect("loads");
        assert!(!config.security.allow_private_destinations, "env wins");
        let error = Config::from_env_and_toml(
            None,
            env(&[("DIALCORE_SECURITY_ALLOW_PRIVATE_DESTINATIONS", "maybe")]),
        )
        .expect_err("not a boolean");
        assert!(
            error
                .to_string()
                .contains("`security.allow_private_destinations`"),
            "{error}"
        );
    }

    #[test]
    fn debug_redacts_the_api_key() {
        let mut config = Config::default();
        config.api.key = Some("sk_live_secret".into());
        assert!(!format!("{config:?}").contains("sk_live_secret"));
    }

    #[test]
    fn secret_key_and_key_file_come_from_the_environment() {
        let key = crate::secrets::SecretKey::generate();
        let config = Config::from_env_and_toml(
            None,
            env(&[
                ("DIALCORE_SECRET_KEY", &key.to_base64()),
                ("DIALCORE_SECRET_KEY_FILE", "/etc/dialcore/secret.key"),
            ]),
        )
        .expect("loads");
        assert_eq!(config.secret.key, Some(key.clone()));
        assert_eq!(
            config.secret.key_file.as_deref(),
            Some(Path::new("/etc/dialcore/secret.key"))
        );
        assert!(!format!("{config:?}").contains(&key.to_base64()));
        let unset = Config::from_env_and_toml(None, env(&[("DIALCORE_SECRET_KEY", "")]))
            .expect("an empty value means none");
        assert_eq!(unset.secret.key, None);

        let bad = "0123456789abcdef";
        let error = Config::from_env_and_toml(None, env(&[("DIALCORE_SECRET_KEY", bad)]))
            .expect_err("16 characters are no key");
        let message = error.to_string();
        assert!(
            message.contains("DIALCORE_SECRET_KEY") && message.contains("32 bytes"),
            "{message}"
        );
        assert!(!message.contains(bad), "the value is not echoed: {message}");
    }

    /// The keys before `[node]` and `[sip] outbound_proxy` were added: each is still a key,
    /// under the same name and environment variable.
    const KEYS_BEFORE_NODE: &[&str] = &[
        "http.listen",
        "http.max_connections",
        "http.header_read_timeout_ms",
        "http.request_timeout_ms",
        "http.shutdown_grace_ms",
        "sip.listen",
        "sip.public_ip",
        "sip.digest_algorithms",
        "rtp.port_min",
        "rtp.port_max",
        "rtp.inactivity_timeout_secs",
        "database.url",
        "recordings.dir",
        "api.key",
        "api.rate_limit_per_minute",
        "api.max_concurrent_calls_per_org",
        "credits.starting_balance_cents",
        "credits.per_minute_cents",
        "webhooks.max_attempts",
        "webhooks.base_delay_ms",
        "webhooks.timeout_ms",
        "test_calls.max_concurrent_runs",
        "test_calls.bot_number",
        "test_calls.max_run_seconds",
        "test_calls.audio_dir",
        "test_calls.charge_multiplier",
        "agents.audio_dir",
        "websocket.connect_timeout_ms",
        "websocket.fallback_audio",
        "security.allow_private_destinations",
        "log.format",
        "log.level",
        "secret.key",
        "secret.key_file",
    ];

    #[test]
    fn keys_come_from_the_section_structs() {
        let keys: Vec<String> = Config::keys().iter().map(Key::to_string).collect();
        for old in KEYS_BEFORE_NODE {
            assert!(keys.iter().any(|key| key == old), "{old} is gone: {keys:?}");
        }
        for new in [
            "node.id",
            "node.advertised_address",
            "node.max_calls",
            "node.drain_timeout",
            "node.lease",
            "sip.outbound_proxy",
        ] {
            assert!(keys.iter().any(|key| key == new), "{new} missing: {keys:?}");
        }
        assert_eq!(keys.len(), KEYS_BEFORE_NODE.len() + 6, "{keys:?}");
        for key in Config::keys() {
            assert_eq!(key.env_var(), Config::env_var(&key.to_string()));
        }
        let var = |wanted: &str| {
            Config::keys()
                .iter()
                .find(|key| key.to_string() == wanted)
                .map(Key::env_var)
        };
        assert_eq!(var("api.key").as_deref(), Some("DIALCORE_API_KEY"));
        assert_eq!(
            var("recordings.dir").as_deref(),
            Some("DIALCORE_RECORDINGS_DIR")
        );
        assert_eq!(var("secret.key").as_deref(), Some("DIALCORE_SECRET_KEY"));
        assert_eq!(
            var("secret.key_file").as_deref(),
            Some("DIALCORE_SECRET_KEY_FILE")
        );
        assert_eq!(var("node.id").as_deref(), Some("DIALCORE_NODE_ID"));
    }

    /// Every key is reachable from the environment: a value that no key of a number, an
    /// address or a name accepts is refused naming that key and its variable, and the keys
    /// that take any text (paths, the API key) take it.
    #[test]
    fn every_key_has_its_environment_variable() {
        for key in Config::keys() {
            let var = key.env_var();
            match Config::from_env_and_toml(None, env(&[(&var, "[")])) {
                Ok(config) => assert_ne!(config, Config::default(), "{var} was not read"),
                Err(ConfigError::InvalidValue {
                    key: named, origin, ..
                }) => {
                    assert_eq!(named, key.to_string());
                    assert_eq!(origin, format!("environment variable {var}"));
                }
                Err(other) => panic!("{var}: {other}"),
            }
        }
    }

    #[test]
    fn unknown_keys_say_what_is_known() {
        let error = Config::from_env_and_toml(Some("[node]\nname = \"a\""), env(&[]))
            .expect_err("unknown key");
        let message = error.to_string();
        assert!(message.contains("`node.name`"), "{message}");
        assert!(
            message.contains(
                "known keys of [node]: id, advertised_address, max_calls, drain_timeout, lease"
            ),
            "{message}"
        );
        let error = Config::from_env_and_toml(Some("[cluster]\nid = \"a\""), env(&[]))
            .expect_err("section");
        let message = error.to_string();
        assert!(message.contains("`cluster.id`"), "{message}");
        assert!(message.contains("known sections: http, sip,"), "{message}");
        let error = Config::from_env_and_toml(Some("[cluster]"), env(&[])).expect_err("empty");
        assert!(matches!(error, ConfigError::UnknownKey { ref key, .. } if key == "cluster"));
        let error = Config::from_env_and_toml(Some("[sip.protection]\nmax = 1"), env(&[]))
            .expect_err("no nested section yet");
        assert!(
            matches!(error, ConfigError::UnknownKey { ref key, .. } if key == "sip.protection"),
            "{error}"
        );
    }

    #[test]
    fn node_section_defaults() {
        let node = Config::from_env_and_toml(None, env(&[]))
            .expect("defaults")
            .node;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .expect("a Linux host name")
            .trim()
            .to_owned();
        assert_eq!(node.id, host, "the host name");
        assert_eq!(node.advertised_address, None);
        assert_eq!(node.max_calls, 0);
        assert_eq!(node.call_limit(), None, "0: no limit");
        assert_eq!(node.drain_timeout, Duration::from_secs(30 * 60));
        let listen: SocketAddr = "127.0.0.1:8080".parse().expect("literal");
        assert_eq!(
            node.advertised_address_for(listen).as_deref(),
            Some("127.0.0.1:8080"),
            "the HTTP listen address"
        );
        for unreachable in ["0.0.0.0:8080", "[::]:8080", "127.0.0.1:0"] {
            let listen: SocketAddr = unreachable.parse().expect("literal");
            assert_eq!(node.advertised_address_for(listen), None, "{unreachable}");
        }
    }

    #[test]
    fn node_section_from_toml_and_environment() {
        let text = "[node]\nid = \"dialcore-a\"\nadvertised_address = \"10.0.0.5:8080\"\n\
                    max_calls = 500\ndrain_timeout = \"90s\"\n";
        let node = Config::from_env_and_toml(Some(text), env(&[]))
            .expect("loads")
            .node;
        assert_eq!(node.id, "dialcore-a");
        assert_eq!(node.advertised_address.as_deref(), Some("10.0.0.5:8080"));
        assert_eq!(node.call_limit(), Some(500));
        assert_eq!(node.drain_timeout, Duration::from_secs(90));
        let listen: SocketAddr = "0.0.0.0:8080".parse().expect("literal");
        assert_eq!(
            node.advertised_address_for(listen).as_deref(),
            Some("10.0.0.5:8080"),
            "the configured address wins"
        );
        let node = Config::from_env_and_toml(
            Some(text),
            env(&[
                ("DIALCORE_NODE_ID", "dialcore-b"),
                ("DIALCORE_NODE_ADVERTISED_ADDRESS", "node-b.internal:8081"),
                ("DIALCORE_NODE_MAX_CALLS", "0"),
                ("DIALCORE_NODE_DRAIN_TIMEOUT", "30m"),
            ]),
        )
        .expect("loads")
        .node;
        assert_eq!(node.id, "dialcore-b");
        assert_eq!(
            node.advertised_address.as_deref(),
            Some("node-b.internal:8081")
        );
        assert_eq!(node.call_limit(), None);
        assert_eq!(node.drain_timeout, Duration::from_secs(1800));
        for (value, secs) in [("1h", 3600), ("45", 45), ("0s", 0)] {
            let node = Config::from_env_and_toml(
                Some(&format!("[node]\ndrain_timeout = \"{value}\"")),
                env(&[]),
            )
            .expect(value)
            .node;
            assert_eq!(node.drain_timeout, Duration::from_secs(secs), "{value}");
        }
        let node = Config::from_env_and_toml(Some("[node]\ndrain_timeout = 120"), env(&[]))
            .expect("a number of seconds")
            .node;
        assert_eq!(node.drain_timeout, Duration::from_secs(120));
    }

    #[test]
    fn bad_node_values_name_the_key() {
        let cases = [
            ("[node]\nid = \"\"", "node.id"),
            ("[node]\nid = \"node one\"", "node.id"),
            (
                "[node]\nadvertised_address = \"10.0.0.5\"",
                "node.advertised_address",
            ),
            (
                "[node]\nadvertised_address = \"0.0.0.0:8080\"",
                "node.advertised_address",
            ),
            (
                "[node]\nadvertised_address = \"10.0.0.5:0\"",
                "node.advertised_address",
            ),
            ("[node]\nmax_calls = -1", "node.max_calls"),
            ("[node]\nmax_calls = \"many\"", "node.max_calls"),
            ("[node]\ndrain_timeout = \"soon\"", "node.drain_timeout"),
            ("[node]\ndrain_timeout = \"-5s\"", "node.drain_timeout"),
            ("[node]\ndrain_timeout = 1.5", "node.drain_timeout"),
            ("[node]\nlease = \"1s\"", "node.lease"),
        ];
        for (text, key) in cases {
            let error = Config::from_env_and_toml(Some(text), env(&[])).expect_err(text);
            assert!(
                matches!(error, ConfigError::InvalidValue { key: ref named, .. } if named == key),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn outbound_proxy_forms() {
        assert_eq!(Config::default().sip.outbound_proxy, None);
        let proxy = |value: &str| {
            Config::from_env_and_toml(None, env(&[("DIALCORE_SIP_OUTBOUND_PROXY", value)]))
                .map(|config| config.sip.outbound_proxy)
        };
        let udp = |host: &str, port| OutboundProxy {
            host: host.into(),
            port,
            transport: TransportKind::Udp,
        };
        assert_eq!(proxy("").expect("empty"), None);
        assert_eq!(
            proxy("10.0.0.2:5070").expect("host:port"),
            Some(udp("10.0.0.2", 5070))
        );
        assert_eq!(
            proxy("kamailio.internal").expect("host"),
            Some(udp("kamailio.internal", 5060))
        );
        assert_eq!(
            proxy("sip:10.0.0.2:5070;transport=udp").expect("URI"),
            Some(udp("10.0.0.2", 5070))
        );
        assert_eq!(
            proxy("<sip:[2001:db8::2];lr>").expect("URI of IPv6 with lr"),
            Some(udp("2001:db8::2", 5060))
        );
        let tcp = proxy("SIP:10.0.0.2;transport=TCP")
            .expect("TCP")
            .expect("set");
        assert_eq!(tcp.transport, TransportKind::Tcp);
        assert_eq!(tcp.route_uri(), "sip:10.0.0.2:5060;transport=tcp;lr");
        assert_eq!(
            udp("2001:db8::2", 5060).route_uri(),
            "sip:[2001:db8::2]:5060;lr"
        );
        assert_eq!(
            udp("10.0.0.2", 5070).to_string(),
            "sip:10.0.0.2:5070;transport=udp"
        );
        for bad in [
            "sip:kamailio@10.0.0.2",
            "sip:10.0.0.2;transport=tls",
            "sip:10.0.0.2;maddr=10.0.0.3",
            "10.0.0.2:0",
            "10.0.0.2;lr",
            "10.0.0.2:sip",
            "http://10.0.0.2",
        ] {
            let error = proxy(bad).expect_err(bad);
            assert!(
                matches!(error, ConfigError::InvalidValue { ref key, .. } if key == "sip.outbound_proxy"),
                "{bad}: {error}"
            );
        }
        let config = Config::from_env_and_toml(
            Some("[sip]\noutbound_proxy = \"sip:127.0.0.1:5080;transport=udp;lr\""),
            env(&[]),
        )
        .expect("from the file");
        assert_eq!(config.sip.outbound_proxy, Some(udp("127.0.0.1", 5080)));
    }

    /// The example configuration at the repository's root.
    const EXAMPLE: &str = include_str!("../../../dialcore.example.toml");

    /// The `# key = value` examples of `text` made settings.
    fn uncommented(text: &str) -> String {
        text.lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(setting)
                    if setting
                        .split_once(" = ")
                        .is_some_and(|(name, _)| !name.contains(' ')) =>
                {
                    setting
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_example_file_holds_the_defaults_and_names_every_key() {
        let config = Config::from_env_and_toml(Some(EXAMPLE), env(&[])).expect("example loads");
        assert_eq!(config, Config::default(), "its settings are the defaults");
        let all = uncommented(EXAMPLE);
        let table: toml::Table = all.parse().expect("examples are TOML");
        for key in Config::keys() {
            assert!(
                table
                    .get(key.section)
                    .and_then(|section| section.get(key.name))
                    .is_some(),
                "dialcore.example.toml does not name {key}"
            );
        }
        // The secret key's example is a placeholder, not a key anyone could copy.
        Config::from_env_and_toml(Some(&all), env(&[("DIALCORE_SECRET_KEY", "")]))
            .expect("its examples load too");
    }
}
