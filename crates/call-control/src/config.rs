//! Service configuration: embedded defaults, overridden by a TOML file, overridden by
//! `DIALCORE_<SECTION>_<KEY>` environment variables.
//!
//! ```toml
//! [http]
//! listen = "0.0.0.0:8080"
//! [sip]
//! listen = "0.0.0.0:5060"
//! public_ip = "203.0.113.7"
//! [log]
//! format = "json"
//! ```
//!
//! Every key of [`KEYS`] can be set either way; `DIALCORE_API_KEY` sets `api.key` and
//! `DIALCORE_RECORDINGS_DIR` sets `recordings.dir`. Unknown keys in the file and values
//! that do not parse are errors naming the key and where the value came from.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Every configuration key, as `section.key`.
pub const KEYS: &[&str] = &[
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
    #[error("unknown config key `{key}` in {origin} (known keys: {})", KEYS.join(", "))]
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

/// The whole configuration. `Default` is the embedded defaults of DESIGN.md.
#[derive(Clone, Debug, Default, PartialEq)]
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
}

/// `[secret]`: the key that encrypts trunk passwords, webhook secrets and agent header
/// values in the database (see [`crate::secrets`]).
#[derive(Clone, Default, PartialEq)]
pub struct SecretConfig {
    /// The key (`DIALCORE_SECRET_KEY`: 32 bytes as base64 or hex); when absent, the key
    /// file is used.
    pub key: Option<crate::secrets::SecretKey>,
    /// Where the key is kept when `key` is absent (`DIALCORE_SECRET_KEY_FILE`; default:
    /// the database file's path with `.key` appended), created on first start.
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
#[derive(Clone, Debug, PartialEq)]
pub struct HttpConfig {
    /// Address to listen on (default `127.0.0.1:8080`; port 0 picks a free port).
    pub listen: SocketAddr,
    /// Most open client connections (default 512). At the limit a new connection closes
    /// the longest-idle one (no request in flight), so idle or slow clients can never lock
    /// others out; when every connection is busy the new one is refused.
    pub max_connections: usize,
    /// Time a connection has to send a request's headers, also between requests of a
    /// keep-alive connection (default 10 000 ms): idle and slowloris clients are closed.
    pub header_read_timeout_ms: u64,
    /// Time a request has to be answered (default 30 000 ms; 408 otherwise). Streaming a
    /// response body (a recording) is not counted.
    pub request_timeout_ms: u64,
    /// On shutdown, how long requests in flight may finish before their connections are
    /// closed (default 10 000 ms).
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
#[derive(Clone, Debug, PartialEq)]
pub struct SipConfig {
    /// Address to listen on (default `127.0.0.1:5060`; port 0 picks a free port).
    pub listen: SocketAddr,
    /// Address advertised in SIP and SDP when behind NAT (default: the listen address).
    pub public_ip: Option<IpAddr>,
    /// Digest algorithms offered to trunks with `inbound_auth`, one `WWW-Authenticate` each
    /// in this order (RFC 8760: clients answer the first they support). Default
    /// `MD5,SHA-256`: MD5 first because many carriers' devices know nothing else and fail
    /// on a first challenge they cannot answer; `SHA-256,MD5` prefers SHA-256.
    pub digest_algorithms: Vec<sip_stack::auth::Algorithm>,
}

/// `[rtp]`: media ports and timeouts.
#[derive(Clone, Debug, PartialEq)]
pub struct RtpConfig {
    /// Lowest RTP port (default 20000).
    pub port_min: u16,
    /// Highest RTP port (default 30000).
    pub port_max: u16,
    /// Seconds without RTP before a call ends with `media_timeout` (default 30).
    pub inactivity_timeout_secs: u64,
}

/// `[database]`
#[derive(Clone, Debug, PartialEq)]
pub struct DatabaseConfig {
    /// sqlx URL (default `sqlite://dialcore.db`).
    pub url: String,
}

/// `[recordings]`
#[derive(Clone, Debug, PartialEq)]
pub struct RecordingsConfig {
    /// Directory of the WAV recordings (default `./recordings`).
    pub dir: PathBuf,
}

/// `[api]`
#[derive(Clone, PartialEq)]
pub struct ApiConfig {
    /// Value of the bootstrap API key (also `DIALCORE_API_KEY`); generated when absent.
    pub key: Option<String>,
    /// Requests per minute allowed per API key (default 600).
    pub rate_limit_per_minute: u32,
    /// Calls an organisation may have live at once (placed, ringing or answered; inbound
    /// and outbound); one more is refused (429 `concurrent_call_limit`, SIP 486 inbound).
    /// 0 (the default) means no limit: the credit reservation still bounds what a tenant
    /// can spend.
    pub max_concurrent_calls_per_org: u32,
}

/// `[credits]`
#[derive(Clone, Debug, PartialEq)]
pub struct CreditsConfig {
    /// Balance of a new organisation, in cents (default 10000).
    pub starting_balance_cents: i64,
    /// Price of each started minute of a call, in cents (default 2).
    pub per_minute_cents: i64,
}

/// `[webhooks]`: delivery retries.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhooksConfig {
    /// Attempts before a delivery is given up (default 8).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles at each attempt (default 1000 ms).
    pub base_delay_ms: u64,
    /// Timeout of one delivery request (default 5000 ms).
    pub timeout_ms: u64,
}

/// `[test_calls]`: the SIP loopback test mode.
#[derive(Clone, Debug, PartialEq)]
pub struct TestCallsConfig {
    /// Test-call runs an organisation may have queued or in progress at once (default 20,
    /// the largest batch); a request that would pass it gets 429 `rate_limited`.
    pub max_concurrent_runs: u32,
    /// The test bot's own number, E.164: what an outbound test run calls unless the request
    /// names another `target_number` (default `+15550100000`).
    pub bot_number: String,
    /// Longest test call, in seconds after answer: the bot hangs up by then (default 120).
    /// Cost estimates price a run at this length.
    pub max_run_seconds: u32,
    /// Directory of the WAV files scenario scripts may play (`say greeting.wav`, a plain
    /// relative path inside it). Unset (the default): scripts speak only the shipped speech,
    /// so a script sent over the API can never make the service read another file.
    pub audio_dir: Option<PathBuf>,
    /// Price of a test call's leg over a normal call's, a whole number from 0 (test calls
    /// are free) to [`MAX_CHARGE_MULTIPLIER`] (default 2). The operator's alone: runs and
    /// batches show it, read-only.
    pub charge_multiplier: u32,
}

/// Largest `test_calls.charge_multiplier`.
pub const MAX_CHARGE_MULTIPLIER: u32 = 100;

/// `[agents]`: what agents of every organisation share.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentsConfig {
    /// Directory of the WAV files scripted agents may play (`{"action": "say", "audio":
    /// "greeting.wav"}`, a plain relative path inside it, checked when the agent is written
    /// and when the file is opened). Unset (the default): `say` steps play text only, and
    /// nothing an API client writes can make the service read a file.
    pub audio_dir: Option<PathBuf>,
}

/// `[websocket]`: the `websocket` agent runtime.
#[derive(Clone, Debug, PartialEq)]
pub struct WebsocketConfig {
    /// How long connecting to an agent's WebSocket may take (default 5000 ms); past it the
    /// call ends with outcome `error`, reason `agent_unreachable`.
    pub connect_timeout_ms: u64,
    /// A WAV file (16-bit PCM, 8/16/48 kHz) played to the caller when the agent cannot be
    /// reached or drops mid-call, before the call ends (default none: it ends at once).
    pub fallback_audio: Option<PathBuf>,
}

/// `[security]`: what tenants may make the service reach.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecurityConfig {
    /// Whether webhook URLs, agent WebSocket URLs and trunk hosts may be (or resolve to)
    /// loopback, private, link-local (cloud metadata), shared (CGNAT) or unique-local
    /// addresses, and agent URLs may send their headers over unencrypted `ws://` (default
    /// false: refused, checked on the resolved address when connecting). For single-tenant
    /// and test setups. See [`crate::destinations`].
    pub allow_private_destinations: bool,
}

/// `[log]`
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// Line format (default text).
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info` or `call_control=debug,info` (default `info`).
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

    /// The environment variable that overrides `key` (`http.listen` -> `DIALCORE_HTTP_LISTEN`).
    pub fn env_var(key: &str) -> String {
        format!("DIALCORE_{}", key.replace('.', "_").to_ascii_uppercase())
    }

    /// Sets one key from its text form, as the file and the environment do.
    pub fn set(&mut self, key: &str, value: &str, origin: &str) -> Result<(), ConfigError> {
        let invalid = |reason: String| ConfigError::InvalidValue {
            key: key.to_owned(),
            origin: origin.to_owned(),
            value: value.to_owned(),
            reason,
        };
        let value = value.trim();
        match key {
            "http.listen" => self.http.listen = parse(value).map_err(invalid)?,
            "http.max_connections" => {
                self.http.max_connections = parse_positive(value).map_err(invalid)?
            }
            "http.header_read_timeout_ms" => {
                self.http.header_read_timeout_ms = parse_positive(value).map_err(invalid)?
            }
            "http.request_timeout_ms" => {
                self.http.request_timeout_ms = parse_positive(value).map_err(invalid)?
            }
            "http.shutdown_grace_ms" => {
                self.http.shutdown_grace_ms = parse(value).map_err(invalid)?
            }
            "sip.listen" => self.sip.listen = parse(value).map_err(invalid)?,
            "sip.public_ip" => self.sip.public_ip = parse_optional(value).map_err(invalid)?,
            "sip.digest_algorithms" => {
                self.sip.digest_algorithms = parse_algorithms(value).map_err(invalid)?
            }
            "rtp.port_min" => self.rtp.port_min = parse(value).map_err(invalid)?,
            "rtp.port_max" => self.rtp.port_max = parse(value).map_err(invalid)?,
            "rtp.inactivity_timeout_secs" => {
                self.rtp.inactivity_timeout_secs = parse_positive(value).map_err(invalid)?
            }
            "database.url" => {
                if !value.starts_with("sqlite:") {
                    return Err(invalid(
                        "expected a sqlite: URL such as sqlite://dialcore.db".into(),
                    ));
                }
                self.database.url = value.to_owned();
            }
            "recordings.dir" => {
                if value.is_empty() {
                    return Err(invalid("expected a directory path".into()));
                }
                self.recordings.dir = PathBuf::from(value);
            }
            "api.key" => {
                self.api.key = (!value.is_empty()).then(|| value.to_owned());
            }
            "api.rate_limit_per_minute" => {
                self.api.rate_limit_per_minute = parse_positive(value).map_err(invalid)?
            }
            "api.max_concurrent_calls_per_org" => {
                self.api.max_concurrent_calls_per_org = parse(value).map_err(invalid)?
            }
            "credits.starting_balance_cents" => {
                self.credits.starting_balance_cents = parse(value).map_err(invalid)?
            }
            "credits.per_minute_cents" => {
                let cents: i64 = parse(value).map_err(invalid)?;
                if cents < 0 {
                    return Err(invalid("must not be negative".into()));
                }
                self.credits.per_minute_cents = cents;
            }
            "webhooks.max_attempts" => {
                self.webhooks.max_attempts = parse_positive(value).map_err(invalid)?
            }
            "webhooks.base_delay_ms" => {
                self.webhooks.base_delay_ms = parse(value).map_err(invalid)?
            }
            "webhooks.timeout_ms" => {
                self.webhooks.timeout_ms = parse_positive(value).map_err(invalid)?
            }
            "test_calls.max_concurrent_runs" => {
                self.test_calls.max_concurrent_runs = parse_positive(value).map_err(invalid)?
            }
            "test_calls.bot_number" => {
                if !crate::model::is_e164(value) {
                    return Err(invalid(
                        "expected an E.164 number such as +15550100000".into(),
                    ));
                }
                self.test_calls.bot_number = value.to_owned();
            }
            "test_calls.max_run_seconds" => {
                self.test_calls.max_run_seconds = parse_positive(value).map_err(invalid)?
            }
            "test_calls.audio_dir" => {
                self.test_calls.audio_dir = (!value.is_empty()).then(|| PathBuf::from(value))
            }
            "test_calls.charge_multiplier" => {
                self.test_calls.charge_multiplier = match value.parse::<u32>() {
                    Ok(multiplier) if multiplier <= MAX_CHARGE_MULTIPLIER => multiplier,
                    _ => {
                        return Err(invalid(format!(
                            "expected a whole number from 0 to {MAX_CHARGE_MULTIPLIER}"
                        )))
                    }
                }
            }
            "websocket.connect_timeout_ms" => {
                self.websocket.connect_timeout_ms = parse_positive(value).map_err(invalid)?
            }
            "agents.audio_dir" => {
                self.agents.audio_dir = (!value.is_empty()).then(|| PathBuf::from(value));
            }
            "websocket.fallback_audio" => {
                self.websocket.fallback_audio = (!value.is_empty()).then(|| PathBuf::from(value));
            }
            "security.allow_private_destinations" => {
                self.security.allow_private_destinations = parse_bool(value).map_err(invalid)?
            }
            "log.format" => {
                self.log.format = match value.to_ascii_lowercase().as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => return Err(invalid("expected \"text\" or \"json\"".into())),
                }
            }
            "secret.key" => {
                self.secret.key = if value.is_empty() {
                    None
                } else {
                    let parsed = crate::secrets::SecretKey::parse(value).map_err(|error| {
                        ConfigError::InvalidValue {
                            key: key.to_owned(),
                            origin: origin.to_owned(),
                            // A key that does not parse may still be most of a real one.
                            value: "<redacted>".to_owned(),
                            reason: error.to_string(),
                        }
                    })?;
                    Some(parsed)
                };
            }
            "secret.key_file" => {
                self.secret.key_file = (!value.is_empty()).then(|| PathBuf::from(value));
            }
            "log.level" => {
                tracing_subscriber::EnvFilter::try_new(value)
                    .map_err(|error| invalid(error.to_string()))?;
                self.log.level = value.to_owned();
            }
            _ => {
                return Err(ConfigError::UnknownKey {
                    key: key.to_owned(),
                    origin: origin.to_owned(),
                })
            }
        }
        Ok(())
    }

    fn build(
        toml: Option<(&str, &str)>,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        if let Some((text, origin)) = toml {
            config.apply_toml(text, origin)?;
        }
        let env: Vec<(String, String)> = env
            .filter(|(name, _)| name.starts_with("DIALCORE_"))
            .collect();
        for key in KEYS {
            let var = Config::env_var(key);
            if let Some((_, value)) = env.iter().rev().find(|(name, _)| *name == var) {
                config.set(key, value, &format!("environment variable {var}"))?;
            }
        }
        config.validate()?;
        Ok(config)
    }

    fn apply_toml(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text.parse().map_err(|error| ConfigError::Syntax {
            origin: origin.to_owned(),
            error,
        })?;
        for (section, body) in &table {
            let toml::Value::Table(body) = body else {
                return Err(ConfigError::UnknownKey {
                    key: section.clone(),
                    origin: origin.to_owned(),
                });
            };
            for (name, value) in body {
                let key = format!("{section}.{name}");
                let text = match value {
                    toml::Value::String(text) => text.clone(),
                    toml::Value::Integer(number) => number.to_string(),
                    toml::Value::Float(number) => number.to_string(),
                    toml::Value::Boolean(flag) => flag.to_string(),
                    other => {
                        if !KEYS.contains(&key.as_str()) {
                            return Err(ConfigError::UnknownKey {
                                key,
                                origin: origin.to_owned(),
                            });
                        }
                        return Err(ConfigError::InvalidValue {
                            key,
                            origin: origin.to_owned(),
                            value: other.to_string(),
                            reason: "expected a string or a number".into(),
                        });
                    }
                };
                self.set(&key, &text, origin)?;
            }
        }
        Ok(())
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

fn parse<T>(value: &str) -> Result<T, String>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    value.parse().map_err(|error: T::Err| error.to_string())
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn parse_optional<T>(value: &str) -> Result<Option<T>, String>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    if value.is_empty() {
        Ok(None)
    } else {
        parse(value).map(Some)
    }
}

fn parse_positive<T>(value: &str) -> Result<T, String>
where
    T: FromStr + Default + PartialEq,
    T::Err: fmt::Display,
{
    let parsed: T = parse(value)?;
    if parsed == T::default() {
        return Err("must be greater than zero".into());
    }
    Ok(parsed)
}

/// `MD5,SHA-256`: digest algorithms, at least one, each once.
fn parse_algorithms(value: &str) -> Result<Vec<sip_stack::auth::Algorithm>, String> {
    let mut algorithms = Vec::new();
    for name in value.split(',') {
        let algorithm: sip_stack::auth::Algorithm = name
            .trim()
            .parse()
            .map_err(|_| format!("expected MD5 and/or SHA-256, comma-separated, not {name:?}"))?;
        if algorithms.contains(&algorithm) {
            return Err(format!("{algorithm} is listed twice"));
        }
        algorithms.push(algorithm);
    }
    Ok(algorithms)
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
}
