//! The store: organisations, API keys, agents, trunks, phone numbers, calls, webhooks, the
//! webhook outbox, idempotency keys, credits and test-call runs and batches, in SQL through sqlx.
//!
//! Two backends behind sqlx's Any driver, chosen by the URL: SQLite, the embedded default
//! (one file, WAL journal so that `dialcore keys create` can write while `dialcore serve`
//! runs, busy timeout so that the two wait for each other), and PostgreSQL, the database
//! a cluster of nodes shares. Each has its migrations (`migrations/sqlite`,
//! `migrations/postgres`: BIGINT where PostgreSQL is bound an i64). The SQL is written once
//! for both: placeholders numbered for the backend (`sql::numbered`), TEXT ids, RFC 3339
//! UTC timestamps as fixed-width TEXT (they sort as time, the PostgreSQL database uses the
//! C collation), JSON documents as TEXT, `ON CONFLICT` and `RETURNING`, no functions of one
//! dialect only. Where PostgreSQL's concurrency needs more than SQLite's single writer
//! (test-call admission), a transaction-scoped advisory lock serialises it.
//!
//! Every read and write of an organisation's objects takes the organisation id and matches
//! it in SQL, so that one organisation never reaches another's rows. The few calls without
//! an organisation (`find_number`, `get_call_any`, `all_trunks`, `unfinished_calls`, the
//! outbox, the `routing_*` reads of the routing directory) serve the engine and the webhook
//! dispatcher, never a request.
//!
//! Routing an inbound call reads memory only: trunks, numbers and agents are held in the
//! routing directory (`store/directory.rs`), reloaded by every write of them.

mod agents;
mod calls;
mod credits;
mod directory;
mod extra_api;
mod idempotency;
mod nodes;
mod numbers;
mod orgs;
mod outbox;
mod rate_windows;
pub mod retry;
mod sealed;
mod sql;
mod test_calls;
mod trunks;
mod webhooks;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, Row};

use crate::config::SecretConfig;
use crate::secrets::Sealer;

pub use agents::AgentRemoval;
pub use calls::{CallFilter, UnfinishedCall};
pub use credits::{Admission, CallAdmission, LiveHold, OrgUsage, Settlement};
pub use idempotency::{KeptResponse, StoredResponse, KEY_LIFETIME};
pub use nodes::{LeaseRenewal, NodeRecord};
pub use orgs::{display_prefix, hash_key, ApiKeyRecord, KeyCheck, DEFAULT_ORG};
pub use outbox::{DeliveryRecord, DeliveryState, OutboxEntry};
pub use rate_windows::RateWindow;
pub use sealed::{
    SealedColumn, AGENT_HEADER, SEALED_TEXT_COLUMNS, TRUNK_INBOUND_PASSWORD, TRUNK_PASSWORD,
    WEBHOOK_SECRET,
};
pub(crate) use sql::numbered;
pub use test_calls::{RecoveredTestCalls, TestBatchFilter, TestCallAdmission, TestRunFilter};

/// The database driver the store speaks: sqlx's `Any`, SQLite or PostgreSQL by URL.
pub type Db = sqlx::Any;

/// Result of the store's operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// How long a write waits for another writer (another process included) before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such record (in this organisation).
    #[error("not found")]
    NotFound,
    /// The write clashes with existing data: a duplicate unique value, or a record still
    /// referenced by others (the message says which).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A JSON column could not be written or read.
    #[error("JSON column error: {0}")]
    Serde(#[from] serde_json::Error),
    /// The schema migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// `database.url` names a database this version does not speak.
    #[error("unsupported database URL scheme {scheme:?}: use sqlite:// or postgres://")]
    UnsupportedUrl {
        /// The URL's scheme.
        scheme: String,
    },
    /// The directory of the database file could not be created.
    #[error("cannot create directory {path}: {error}")]
    CreateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// [`Store::open_existing`] found no database file at `path`.
    #[error("database file {} does not exist", path.display())]
    Missing {
        /// Where the file was looked for.
        path: std::path::PathBuf,
    },
    /// A secret column cannot be decrypted (wrong key, damaged value), or the key could not
    /// be loaded.
    #[error(transparent)]
    Secret(#[from] crate::secrets::SecretError),
    /// A column holds a value this version cannot read (written by a newer version, or
    /// edited by hand).
    #[error("column {column} holds an unreadable value {value:?}")]
    Corrupt {
        /// The column.
        column: &'static str,
        /// What it holds.
        value: String,
    },
    /// The database has failed every attempt of this node for a while (the record writer
    /// cannot reach it): new calls are refused until it answers again.
    #[error("the database has been failing for {seconds} s: {last_error}")]
    Failing {
        /// For how long.
        seconds: u64,
        /// The last failure.
        last_error: String,
    },
}

impl StoreError {
    /// Whether the database could not serve the request now (unreachable, out of
    /// connections, busy, or asking to retry) rather than refusing it: callers answer
    /// "try again" (SIP 503 with Retry-After, API 503 `unavailable`), never "no such thing"
    /// or "forbidden".
    pub fn is_unavailable(&self) -> bool {
        let error = match self {
            StoreError::Database(error) => error,
            StoreError::Failing { .. } => return true,
            _ => return false,
        };
        match error {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                // SQLite: SQLITE_BUSY, SQLITE_LOCKED (past the busy timeout).
                // PostgreSQL: connection exceptions (08xxx), serialization failure and
                // deadlock (40001, 40P01), too many connections (53300), shutdown (57P0x).
                matches!(&*code, "5" | "6" | "40001" | "40P01" | "53300")
                    || code.starts_with("08")
                    || code.starts_with("57P0")
            }),
            _ => false,
        }
    }
}

/// The database a store speaks, chosen by the scheme of `database.url`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://path` or `sqlite::memory:`: one file, the embedded default.
    Sqlite,
    /// `postgres://` or `postgresql://`: the database a cluster of nodes shares.
    Postgres,
}

impl Backend {
    /// The backend of `url` ([`StoreError::UnsupportedUrl`] for any other scheme).
    pub fn of(url: &str) -> Result<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl {
                scheme: url.split(':').next().unwrap_or_default().to_owned(),
            })
        }
    }
}

/// Connections a node keeps to PostgreSQL: enough for the API, the record writer and the
/// webhook dispatcher at once, few enough that a dozen nodes stay under the server's
/// default `max_connections` (100).
const POSTGRES_CONNECTIONS: u32 = 8;

/// Handle on the database; cheap to clone (a connection pool inside).
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    sealer: Option<std::sync::Arc<Sealer>>,
    /// The routing tables in memory, shared by the clones ([`directory`]).
    directory: std::sync::Arc<directory::Directory>,
}

impl Store {
    /// Opens the database at `url` (`sqlite://path`, `sqlite::memory:`), creating the file
    /// if missing, and brings its schema up to date; its secrets are sealed with the key in
    /// the key file next to it ([`crate::secrets::default_key_file`], created if missing).
    pub async fn open(url: &str) -> Result<Store> {
        Store::open_with(url, &SecretConfig::default()).await
    }

    /// [`Store::open`] with the secret key of `secret` (the `[secret]` configuration).
    pub async fn open_with(url: &str, secret: &SecretConfig) -> Result<Store> {
        Store::connect(url, true, secret).await
    }

    /// Opens the database at `url` like [`Store::open_with`], but only if it exists
    /// ([`StoreError::Missing`] otherwise): for the admin commands that must work on the
    /// database of a running service, never on a new empty one. It creates no key file and
    /// seals no legacy plaintext (the service does that); without a key, reading or writing
    /// a secret fails with [`crate::secrets::SecretError::NoKey`].
    pub async fn open_existing(url: &str, secret: &SecretConfig) -> Result<Store> {
        Store::connect(url, false, secret).await
    }

    async fn connect(url: &str, create_if_missing: bool, secret: &SecretConfig) -> Result<Store> {
        let backend = Backend::of(url)?;
        sqlx::any::install_default_drivers();
        let pool = match backend {
            Backend::Sqlite => Store::sqlite_pool(url, create_if_missing).await?,
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(POSTGRES_CONNECTIONS)
                    .acquire_timeout(BUSY_TIMEOUT)
                    .connect(url)
                    .await?
            }
        };
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        if !create_if_missing {
            let sealer = secret
                .existing_key(url)?
                .map(|key| Sealer::new(&key).into());
            return Ok(Store {
                pool,
                backend,
                sealer,
                directory: Default::default(),
            });
        }
        let key = match secret.existing_key(url)? {
            Some(key) => key,
            None if Store::holds_sealed_values(&pool).await? => {
                let path = secret
                    .key_file
                    .clone()
                    .or_else(|| crate::secrets::default_key_file(url))
                    .unwrap_or_default();
                return Err(crate::secrets::SecretError::KeyLost { path }.into());
            }
            None => secret.resolve_key(url)?,
        };
        let store = Store {
            pool,
            backend,
            sealer: Some(Sealer::new(&key).into()),
            directory: Default::default(),
        };
        store.check_secret_key().await?;
        store.seal_plaintext_secrets().await?;
        Ok(store)
    }

    /// The pool of an SQLite file (WAL journal, so that `dialcore keys create` can write
    /// while `dialcore serve` runs; a busy timeout, so that the two wait for each other) or
    /// of an in-memory database (exactly one connection, forever: every connection to
    /// `:memory:` is a database of its own).
    async fn sqlite_pool(url: &str, create_if_missing: bool) -> Result<AnyPool> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool_options = if in_memory {
            AnyPoolOptions::new()
                .min_connections(1)
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            let options = SqliteConnectOptions::from_str(url)?;
            let path = options.get_filename();
            if !create_if_missing && !path.is_file() {
                return Err(StoreError::Missing {
                    path: path.to_owned(),
                });
            }
            create_parent_dir(path)?;
            AnyPoolOptions::new().max_connections(8)
        };
        let url = match (create_if_missing && !in_memory, url.contains("mode=")) {
            (true, false) if url.contains('?') => format!("{url}&mode=rwc"),
            (true, false) => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let pragmas = if in_memory {
            "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;"
        } else {
            "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL;"
        };
        debug_assert_eq!(BUSY_TIMEOUT, Duration::from_secs(10));
        Ok(pool_options
            .acquire_timeout(BUSY_TIMEOUT)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(conn, pragmas).await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await?)
    }

    /// The connection pool, for queries in `extra_*` files of other modules.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Serializes the rest of transaction `tx` with every other transaction that locks
    /// `org_id`, for a check-then-write over several rows of one organisation (a count
    /// against a limit). SQLite runs one writer at a time already; on PostgreSQL, where
    /// concurrent transactions each see the rows committed before their statements, this
    /// takes a transaction-scoped advisory lock keyed by the organisation.
    pub(crate) async fn lock_org(
        &self,
        tx: &mut sqlx::Transaction<'_, Db>,
        org_id: &str,
    ) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query(&numbered(
                "SELECT pg_advisory_xact_lock(hashtextextended(?, 0)) IS NULL",
            ))
            .bind(org_id)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// The database this store speaks.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection, waiting for running queries to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether [`Store::close`] was called: every query fails from now on.
    pub fn is_closed(&self) -> bool {
        self.pool.is_closed()
    }
}

/// The text form of a timestamp in the store: RFC 3339, UTC, nanoseconds, fixed width.
pub(crate) fn ts(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Reads a timestamp column.
pub(crate) fn get_ts(row: &AnyRow, column: &'static str) -> Result<DateTime<Utc>> {
    let text: String = row.try_get(column)?;
    parse_ts(column, &text)
}

/// Reads a nullable timestamp column.
pub(crate) fn get_opt_ts(row: &AnyRow, column: &'static str) -> Result<Option<DateTime<Utc>>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|text| parse_ts(column, &text)).transpose()
}

/// Reads a JSON column.
pub(crate) fn get_json<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    column: &'static str,
) -> Result<T> {
    let text: String = row.try_get(column)?;
    Ok(serde_json::from_str(&text)?)
}

/// Reads a column holding the text form of an enumeration.
pub(crate) fn get_enum<T: FromStr>(row: &AnyRow, column: &'static str) -> Result<T> {
    let text: String = row.try_get(column)?;
    text.parse().map_err(|_| StoreError::Corrupt {
        column,
        value: text,
    })
}

/// Reads an integer column that must fit `T`.
pub(crate) fn get_int<T: TryFrom<i64>>(row: &AnyRow, column: &'static str) -> Result<T> {
    let value: i64 = row.try_get(column)?;
    T::try_from(value).map_err(|_| StoreError::Corrupt {
        column,
        value: value.to_string(),
    })
}

/// Reads a nullable integer column that must fit `T`.
pub(crate) fn get_opt_int<T: TryFrom<i64>>(
    row: &AnyRow,
    column: &'static str,
) -> Result<Option<T>> {
    let value: Option<i64> = row.try_get(column)?;
    value
        .map(|value| {
            T::try_from(value).map_err(|_| StoreError::Corrupt {
                column,
                value: value.to_string(),
            })
        })
        .transpose()
}

/// A page bound as SQL wants it (SQLite and PostgreSQL take signed 64-bit).
pub(crate) fn sql_count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Reads a `COUNT(*)` result.
pub(crate) fn total_of(row: &AnyRow) -> Result<u64> {
    let total: i64 = row.try_get(0)?;
    Ok(u64::try_from(total).unwrap_or(0))
}

/// Maps a failed write: unique and foreign-key violations become [`StoreError::Conflict`]
/// with `what` as the message, anything else stays a database error.
pub(crate) fn write_error(error: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() || db.is_foreign_key_violation() => {
            StoreError::Conflict(what())
        }
        _ => StoreError::Database(error),
    }
}

fn create_parent_dir(file: &std::path::Path) -> Result<()> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => std::fs::create_dir_all(dir)
            .map_err(|error| StoreError::CreateDir {
                path: dir.to_owned(),
                error,
            }),
        _ => Ok(()),
    }
}

fn parse_ts(column: &'static str, text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| StoreError::Corrupt {
            column,
            value: text.to_owned(),
        })
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Stores for tests: a fresh SQLite file in a temporary directory.

    use super::Store;
    use chrono::{DateTime, TimeZone, Utc};

    /// The variable that runs the store's tests on PostgreSQL: `DIALCORE_TEST_DATABASE=postgres`
    /// (`scripts/test.sh` runs them once on each backend).
    pub(crate) const BACKEND_VARIABLE: &str = "DIALCORE_TEST_DATABASE";

    /// A test's database: an SQLite file in a temporary directory, or a database of its own
    /// on the test process's PostgreSQL server. Keep it alive as long as its stores.
    pub(crate) struct TestDb {
        dir: tempfile::TempDir,
        url: String,
        secret: crate::config::SecretConfig,
    }

    impl TestDb {
        /// The database's URL.
        pub(crate) fn url(&self) -> &str {
            &self.url
        }

        /// The temporary directory (the SQLite file and its key file are in it).
        pub(crate) fn path(&self) -> &std::path::Path {
            self.dir.path()
        }

        /// Another store on the same database, as a restarted service opens it.
        pub(crate) async fn reopen(&self) -> Store {
            Store::open_with(&self.url, &self.secret)
                .await
                .expect("store reopens")
        }

        /// A second handle on the database whose pool has a single connection and gives
        /// up acquiring it after `acquire_timeout`: hold that connection and every query
        /// fails with a pool timeout, as a busy service sees under load.
        pub(crate) async fn starved(&self, acquire_timeout: std::time::Duration) -> Store {
            sqlx::any::install_default_drivers();
            let pool = sqlx::any::AnyPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(acquire_timeout)
                .connect(&self.url)
                .await
                .expect("pool opens");
            let key = self
                .secret
                .resolve_key(&self.url)
                .expect("the key of the store");
            Store {
                pool,
                backend: super::Backend::of(&self.url).expect("a test URL"),
                sealer: Some(crate::secrets::Sealer::new(&key).into()),
                directory: Default::default(),
            }
        }
    }

    /// A fresh store on the backend [`BACKEND_VARIABLE`] names: an SQLite file (the
    /// default) or, with `postgres`, a new database on the test process's PostgreSQL
    /// server ([`pg_harness::shared`]).
    pub(crate) async fn temp_store() -> (Store, TestDb) {
        match std::env::var(BACKEND_VARIABLE).as_deref() {
            Ok("postgres") => postgres_store().await,
            Ok("sqlite") | Err(_) => sqlite_store().await,
            Ok(other) => panic!("{BACKEND_VARIABLE}={other}: use sqlite or postgres"),
        }
    }

    /// A fresh SQLite file store, whatever the backend of the run (for what only a file
    /// has: key files next to it, old schemas, a missing file).
    pub(crate) async fn sqlite_store() -> (Store, TestDb) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = sqlite_url_in(dir.path());
        let secret = crate::config::SecretConfig::default();
        let store = Store::open_with(&url, &secret).await.expect("store opens");
        (store, TestDb { dir, url, secret })
    }

    /// The URL of the SQLite test file in `dir`.
    pub(crate) fn sqlite_url_in(dir: &std::path::Path) -> String {
        format!("sqlite://{}", dir.join("test.db").display())
    }

    async fn postgres_store() -> (Store, TestDb) {
        let server = pg_harness::shared()
            .unwrap_or_else(|error| panic!("{BACKEND_VARIABLE}=postgres: {error}"));
        let url = server.create_database().expect("a fresh database");
        let secret = crate::config::SecretConfig {
            key: Some(crate::secrets::SecretKey::generate()),
            key_file: None,
        };
        let store = Store::open_with(&url, &secret).await.expect("store opens");
        let dir = tempfile::tempdir().expect("temporary directory");
        (store, TestDb { dir, url, secret })
    }

    pub(crate) use super::calls::tests::call;
    pub(crate) use super::webhooks::tests::webhook;

    /// A made-up time, `secs` seconds after a fixed origin.
    pub(crate) fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_750_000_000 + secs, 123_456_789)
            .single()
            .expect("valid timestamp")
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[tokio::test]
    async fn opens_memory_and_file_databases() {
        let store = Store::open("sqlite::memory:").await.expect("memory store");
        let org = store.create_key("acme", 5).await.expect("key");
        assert!(org.starts_with("sk_live_"));
        let (file_store, dir) = sqlite_store().await;
        assert!(dir.path().join("test.db").exists());
        file_store.close().await;
        // Migrations are idempotent: reopening works.
        Store::open(dir.url()).await.expect("reopens");
        // The file's directory is created when missing.
        let nested = format!("sqlite://{}", dir.path().join("a/b/nested.db").display());
        Store::open(&nested)
            .await
            .expect("opens in a new directory");
        assert!(dir.path().join("a/b/nested.db").exists());
    }

    #[tokio::test]
    async fn open_existing_refuses_a_missing_file_and_creates_nothing() {
        let (store, dir) = sqlite_store().await;
        store.close().await;
        Store::open_existing(dir.url(), &SecretConfig::default())
            .await
            .expect("opens the existing database");
        let missing = dir.path().join("elsewhere/none.db");
        let err = Store::open_existing(
            &format!("sqlite://{}", missing.display()),
            &SecretConfig::default(),
        )
        .await
        .expect_err("a missing file is an error");
        assert!(matches!(&err, StoreError::Missing { path } if *path == missing));
        assert!(err.to_string().contains("does not exist"));
        assert!(!missing.exists() && !dir.path().join("elsewhere").exists());
    }

    #[tokio::test]
    async fn unavailable_is_a_database_that_cannot_serve_now_not_a_refusal() {
        for error in [sqlx::Error::PoolTimedOut, sqlx::Error::PoolClosed] {
            assert!(StoreError::Database(error).is_unavailable());
        }
        assert!(!StoreError::NotFound.is_unavailable());
        assert!(!StoreError::Conflict("taken".into()).is_unavailable());
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_unavailable());
        // A real SQLite error: a constraint is a refusal, not an outage.
        let store = Store::open("sqlite::memory:").await.expect("memory store");
        let constraint = sqlx::query(&numbered("INSERT INTO phone_numbers (id) VALUES (NULL)"))
            .execute(store.pool())
            .await
            .expect_err("NOT NULL columns");
        assert!(!StoreError::Database(constraint).is_unavailable());
    }

    #[test]
    fn timestamps_are_fixed_width_and_round_trip() {
        let early = at(0);
        let late = at(3600);
        assert_eq!(ts(&early).len(), ts(&late).len());
        assert!(ts(&early) < ts(&late));
        assert_eq!(parse_ts("t", &ts(&early)).expect("parses"), early);
        assert!(matches!(
            parse_ts("t", "yesterday"),
            Err(StoreError::Corrupt { column: "t", .. })
        ));
    }
}

impl Store {
    /// The row `id` of `table` owned by `org_id`, mapped by `from_row`
    /// ([`StoreError::NotFound`] when another organisation owns it or it does not exist).
    pub(crate) async fn get_scoped<T>(
        &self,
        table: &str,
        columns: &str,
        org_id: &str,
        id: &str,
        from_row: fn(&sqlx::any::AnyRow) -> Result<T>,
    ) -> Result<T> {
        let sql = format!("SELECT {columns} FROM {table} WHERE org_id = ? AND id = ?");
        let row = sqlx::query(&numbered(&sql))
            .bind(org_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        from_row(&row)
    }

    /// The row `id` of `table` whatever organisation owns it, mapped by `from_row`
    /// ([`StoreError::NotFound`] when it does not exist; engine and runner use).
    pub(crate) async fn get_any<T>(
        &self,
        table: &str,
        columns: &str,
        id: &str,
        from_row: fn(&sqlx::any::AnyRow) -> Result<T>,
    ) -> Result<T> {
        let sql = format!("SELECT {columns} FROM {table} WHERE id = ?");
        let row = sqlx::query(&numbered(&sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        from_row(&row)
    }

    /// One page of `table`'s rows owned by `org_id`, newest first, and how many it has in all.
    pub(crate) async fn list_scoped<T>(
        &self,
        table: &str,
        columns: &str,
        org_id: &str,
        limit: u64,
        offset: u64,
        from_row: fn(&sqlx::any::AnyRow) -> Result<T>,
    ) -> Result<(Vec<T>, u64)> {
        let filter = RowFilter::owned_by(org_id);
        self.list_filtered(table, columns, &filter, limit, offset, from_row)
            .await
    }

    /// One page of `table`'s rows matching `filter`, newest first, and how many match in all.
    pub(crate) async fn list_filtered<T>(
        &self,
        table: &str,
        columns: &str,
        filter: &RowFilter<'_>,
        limit: u64,
        offset: u64,
        from_row: fn(&sqlx::any::AnyRow) -> Result<T>,
    ) -> Result<(Vec<T>, u64)> {
        let condition = &filter.condition;
        let sql = format!(
            "SELECT {columns} FROM {table} WHERE {condition} \
             ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        );
        let sql = numbered(&sql);
        let mut query = sqlx::query(&sql);
        for value in &filter.binds {
            query = query.bind(*value);
        }
        let rows = query
            .bind(sql_count(limit))
            .bind(sql_count(offset))
            .fetch_all(&self.pool)
            .await?;
        let items = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;

        let count_sql = format!("SELECT COUNT(*) FROM {table} WHERE {condition}");
        let count_sql = numbered(&count_sql);
        let mut count = sqlx::query(&count_sql);
        for value in &filter.binds {
            count = count.bind(*value);
        }
        let total = count.fetch_one(&self.pool).await?;
        Ok((items, total_of(&total)?))
    }
}

/// A `WHERE` condition of equality tests on text columns, always scoped to one
/// organisation, with the values to bind in order.
pub(crate) struct RowFilter<'a> {
    condition: String,
    binds: Vec<&'a str>,
}

impl<'a> RowFilter<'a> {
    /// The rows owned by `org_id`.
    pub(crate) fn owned_by(org_id: &'a str) -> Self {
        RowFilter {
            condition: String::from("org_id = ?"),
            binds: vec![org_id],
        }
    }

    /// Narrows to rows whose `column` differs from `value`, when there is a value.
    pub(crate) fn and_ne(mut self, column: &'static str, value: Option<&'a str>) -> Self {
        if let Some(value) = value {
            self.condition.push_str(" AND ");
            self.condition.push_str(column);
            self.condition.push_str(" <> ?");
            self.binds.push(value);
        }
        self
    }

    /// Narrows to rows whose `column` equals `value`, when there is a value.
    pub(crate) fn and_eq(mut self, column: &'static str, value: Option<&'a str>) -> Self {
        if let Some(value) = value {
            self.condition.push_str(" AND ");
            self.condition.push_str(column);
            self.condition.push_str(" = ?");
            self.binds.push(value);
        }
        self
    }
}
