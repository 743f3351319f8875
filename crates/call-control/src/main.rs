//! `dialcore`: the telephony core for voice-AI agents.
//!
//! ```text
//! dialcore serve [--config dialcore.toml]   HTTP API + SIP listener until SIGINT/SIGTERM
//! dialcore keys create --org NAME           prints a new API key for NAME (created if needed)
//! dialcore keys list [--org NAME]           lists API keys (id, prefix, state), never the keys
//! dialcore keys revoke ID                   revokes API key ID (401 `revoked` from then on)
//! dialcore credits add --org NAME --cents N adds N cents to NAME's balance, prints the new one
//! dialcore test-call --agent ID [--mode sip|bot] [--direction outbound|inbound] [--runs N]
//!                    [--scenario FILE] [--network-profile P] [--url URL] [--api-key KEY]
//!                                           SIP loopback test of an agent on a running service
//! ```
//!
//! Settings come from embedded defaults, the TOML file and `DIALCORE_*` environment
//! variables (see `call_control::config`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

mod cli;

use anyhow::Context;
use call_control::config::{Config, LogConfig, LogFormat};
use call_control::service::{wait_for_shutdown_signal, Service};
use call_control::store::Store;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "dialcore",
    version,
    about = "Telephony core for voice-AI agents"
)]
struct Cli {
    /// TOML configuration file (settings not in it keep their defaults; DIALCORE_* variables
    /// override both).
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the HTTP API and the SIP listener until SIGINT or SIGTERM.
    Serve,
    /// Manages API keys (works on the database of a running `serve`).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manages organisations' credit (works on the database of a running `serve`).
    Credits {
        #[command(subcommand)]
        command: CreditsCommand,
    },
    /// Tests an agent on a running service: the test bot calls it (or is called by it) over
    /// SIP loopback, with a progress bar and a summary of the measurements. Exits 1 when a
    /// run failed or missed a threshold.
    TestCall(cli::test_call::TestCallArgs),
    /// Load-tests a SIP endpoint: places (or answers) many calls with real speech over SIP
    /// and RTP, measures each (setup time, final code, loss, jitter, one-way audio, echo
    /// round trip) and prints a summary. Exits 1 when a call failed or a threshold was missed.
    Load(cli::load::LoadArgs),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Creates an organisation if needed and prints a new API key for it.
    Create {
        /// Name of the organisation.
        #[arg(long, value_name = "NAME")]
        org: String,
    },
    /// Lists API keys: id, organisation, display prefix, creation and revocation times
    /// (never the keys themselves).
    List {
        /// Only the keys of this organisation.
        #[arg(long, value_name = "NAME")]
        org: Option<String>,
    },
    /// Revokes an API key by its id (`key_...`, see `keys list`): requests with it are
    /// answered 401 from then on.
    Revoke {
        /// Id of the key's record (`key_...`), not the key.
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum CreditsCommand {
    /// Adds credit to an organisation's balance (negative to take it back) and prints the
    /// new balance.
    Add {
        /// Name of the organisation (it must exist).
        #[arg(long, value_name = "NAME")]
        org: String,
        /// Cents to add.
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        cents: i64,
    },
}

/// What a run of the binary does once its configuration is loaded.
enum Task {
    Serve,
    CreateKey { org: String },
    ListKeys { org: Option<String> },
    RevokeKey { id: String },
    AddCredits { org: String, cents: i64 },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `test-call` is a client of a running service: it needs none of its configuration.
    let task = match cli.command {
        Command::TestCall(args) => return run_client("test-call", cli::test_call::run(args)),
        Command::Load(args) => return run_client("load", cli::load::run(args)),
        Command::Serve => Task::Serve,
        Command::Keys {
            command: KeysCommand::Create { org },
        } => Task::CreateKey { org },
        Command::Keys {
            command: KeysCommand::List { org },
        } => Task::ListKeys { org },
        Command::Keys {
            command: KeysCommand::Revoke { id },
        } => Task::RevokeKey { id },
        Command::Credits {
            command: CreditsCommand::Add { org, cents },
        } => Task::AddCredits { org, cents },
    };
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("dialcore: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("dialcore: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match task {
            Task::Serve => serve(config).await,
            Task::CreateKey { org } => create_key(&config, &org).await,
            Task::ListKeys { org } => list_keys(&config, org.as_deref()).await,
            Task::RevokeKey { id } => revoke_key(&config, &id).await,
            Task::AddCredits { org, cents } => add_credits(&config, &org, cents).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("dialcore: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a client subcommand (`test-call`, a client of a running service; `load`, a SIP
/// client or server): neither needs the service's configuration. Errors that stop it from
/// running at all exit 2.
fn run_client(
    name: &str,
    client: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("dialcore: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(client) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("dialcore {name}: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    init_tracing(&config.log)?;
    // How long a draining node waits for its live calls before hanging them up.
    let drain_timeout = config.node.drain_timeout;
    let service = Service::start(config).await?;
    // SIGTERM (or SIGINT) and `POST /admin/drain` both drain first: no new calls, the live
    // ones finish (up to the drain timeout); a second signal stops waiting for them.
    tokio::select! {
        signal = wait_for_shutdown_signal() => {
            signal?;
            tracing::info!("shutdown requested: draining");
        }
        () = service.drain_requested() => tracing::info!("drain requested"),
    }
    tokio::select! {
        _ = service.drain(drain_timeout) => {}
        signal = wait_for_shutdown_signal() => {
            signal?;
            tracing::warn!("second signal: the live calls are hung up now");
        }
    }
    service.shutdown().await
}

async fn create_key(config: &Config, org: &str) -> anyhow::Result<()> {
    let org = org.trim();
    anyhow::ensure!(!org.is_empty(), "--org needs a non-empty name");
    let store = open_service_database(config).await?;
    let key = store
        .create_key(org, config.credits.starting_balance_cents)
        .await
        .context("cannot create the key")?;
    store.close().await;
    println!("{key}");
    Ok(())
}

async fn list_keys(config: &Config, org: Option<&str>) -> anyhow::Result<()> {
    let store = open_service_database(config).await?;
    let keys = store.all_api_keys().await.context("cannot list the keys");
    store.close().await;
    let mut keys = keys?;
    if let Some(org) = org.map(str::trim) {
        anyhow::ensure!(
            keys.iter().any(|(name, _)| name == org),
            "no API keys of an organisation named {org:?} in {}",
            config.database.url
        );
        keys.retain(|(name, _)| name == org);
    }
    println!(
        "{:<28}  {:<20}  {:<16}  {:<20}  REVOKED",
        "ID", "ORGANISATION", "PREFIX", "CREATED"
    );
    for (org, key) in keys {
        let time =
            |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        println!(
            "{:<28}  {:<20}  {:<16}  {:<20}  {}",
            key.id,
            org,
            key.prefix,
            time(key.created_at),
            key.revoked_at.map_or_else(|| "-".to_owned(), time)
        );
    }
    Ok(())
}

async fn revoke_key(config: &Config, id: &str) -> anyhow::Result<()> {
    let id = id.trim();
    let store = open_service_database(config).await?;
    let revoked = store.revoke_api_key(None, id, chrono::Utc::now()).await;
    store.close().await;
    match revoked {
        Ok(key) => {
            println!("revoked {} ({}...)", key.id, key.prefix);
            Ok(())
        }
        Err(call_control::store::StoreError::NotFound) => anyhow::bail!(
            "no API key with id {id:?} in {} (ids look like key_...; see `dialcore keys list`)",
            config.database.url
        ),
        Err(error) => Err(error).context("cannot revoke the key"),
    }
}

async fn add_credits(config: &Config, org: &str, cents: i64) -> anyhow::Result<()> {
    anyhow::ensure!(cents != 0, "--cents must not be 0");
    let store = open_service_database(config).await?;
    let Some(org_id) = store.org_id_by_name(org.trim()).await? else {
        store.close().await;
        anyhow::bail!(
            "no organisation named {org:?} in {} (create it with `dialcore keys create --org NAME`)",
            config.database.url
        );
    };
    let balance = store
        .add_credits(&org_id, cents)
        .await
        .context("cannot update the balance")?;
    store.close().await;
    println!("{org}: balance {balance} cents ({cents:+} cents)");
    Ok(())
}

/// The database of the service these settings describe; a missing one is an error, never a
/// new empty database the running service does not know.
async fn open_service_database(config: &Config) -> anyhow::Result<Store> {
    let url = &config.database.url;
    Store::open_existing(url, &config.secret)
        .await
        .with_context(|| {
            format!(
                "cannot open database {url} (is `dialcore serve` running with the same \
             --config / DIALCORE_DATABASE_URL? it creates the database on first start)"
            )
        })
}

/// Installs the global `tracing` subscriber: text or JSON lines on stderr (colours only on a
/// terminal), filtered by `RUST_LOG` when set, else by `log.level`.
fn init_tracing(log: &LogConfig) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => {
            EnvFilter::try_new(directives).context("RUST_LOG is not a valid filter")?
        }
        _ => EnvFilter::try_new(&log.level).context("log.level is not a valid filter")?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    installed.map_err(|error| anyhow::anyhow!("cannot install the log subscriber: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_serve_and_keys_create() {
        let cli = Cli::try_parse_from(["dialcore", "serve", "--config", "d.toml"]).expect("serve");
        assert!(matches!(cli.command, Command::Serve));
        assert_eq!(cli.config, Some(PathBuf::from("d.toml")));
        let cli = Cli::try_parse_from(["dialcore", "keys", "create", "--org", "acme"])
            .expect("keys create");
        assert!(matches!(
            cli.command,
            Command::Keys { command: KeysCommand::Create { ref org } } if org == "acme"
        ));
        assert!(Cli::try_parse_from(["dialcore", "keys", "create"]).is_err());
        let cli = Cli::try_parse_from([
            "dialcore", "credits", "add", "--org", "acme", "--cents", "-250",
        ])
        .expect("credits add");
        assert!(matches!(
            cli.command,
            Command::Credits { command: CreditsCommand::Add { ref org, cents: -250 } } if org == "acme"
        ));
        let cli = Cli::try_parse_from(["dialcore", "test-call", "--agent", "agt_1", "--runs", "3"])
            .expect("test-call");
        assert!(matches!(
            cli.command,
            Command::TestCall(ref args) if args.agent == "agt_1" && args.runs == 3
        ));
    }

    #[test]
    fn log_subscriber_accepts_both_formats() {
        // Only the first installation in a process wins; both must at least build.
        let text = LogConfig::default();
        let json = LogConfig {
            format: LogFormat::Json,
            level: "debug".into(),
        };
        let first = init_tracing(&text);
        let second = init_tracing(&json);
        assert!(first.is_ok() || second.is_ok());
    }
}
