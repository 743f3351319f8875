//! The secret columns, sealed at the store boundary ([`crate::secrets`]): the rest of the
//! service sees plaintext in its models, the database only sealed text.
//!
//! A new secret column takes three steps: a [`SealedColumn`] constant, [`Store::seal`] /
//! [`Store::open_secret`] where the column is written and read, and an entry in
//! [`SEALED_TEXT_COLUMNS`] so that plaintext left by an older version is sealed on start.

use super::numbered;
use std::collections::BTreeMap;

use sqlx::Row;

use super::{Result, Store};
use crate::model::Runtime;
use crate::secrets::{is_sealed, Sealer, SecretError, SEALED_PREFIX};

/// A text column that holds sealed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedColumn {
    /// Its table (whose primary key is `id`).
    pub table: &'static str,
    /// Its column.
    pub column: &'static str,
    /// `table.column`: authenticated with each value, and named in errors.
    pub name: &'static str,
}

/// `trunks.password`: the digest password of outbound calls.
pub const TRUNK_PASSWORD: SealedColumn = SealedColumn {
    table: "trunks",
    column: "password",
    name: "trunks.password",
};

/// `trunks.inbound_auth_password`: the digest password inbound callers answer with.
pub const TRUNK_INBOUND_PASSWORD: SealedColumn = SealedColumn {
    table: "trunks",
    column: "inbound_auth_password",
    name: "trunks.inbound_auth_password",
};

/// `webhooks.secret`: the signing secret.
pub const WEBHOOK_SECRET: SealedColumn = SealedColumn {
    table: "webhooks",
    column: "secret",
    name: "webhooks.secret",
};

/// The header values of a WebSocket agent's runtime, sealed one by one inside the
/// `agents.runtime` JSON document (names stay readable, values often carry bearer tokens).
pub const AGENT_HEADER: SealedColumn = SealedColumn {
    table: "agents",
    column: "runtime",
    name: "agents.runtime.headers",
};

/// The plain text columns whose every value is sealed.
pub const SEALED_TEXT_COLUMNS: &[SealedColumn] =
    &[TRUNK_PASSWORD, TRUNK_INBOUND_PASSWORD, WEBHOOK_SECRET];

impl Store {
    /// The stored form of `plaintext` for `column`.
    pub fn seal(&self, column: SealedColumn, plaintext: &str) -> Result<String> {
        Ok(self.sealer_for(column)?.seal(column.name, plaintext))
    }

    /// [`Store::seal`] of a nullable value.
    pub fn seal_opt(
        &self,
        column: SealedColumn,
        plaintext: Option<&str>,
    ) -> Result<Option<String>> {
        plaintext.map(|value| self.seal(column, value)).transpose()
    }

    /// The plaintext of a value of `column` read from the database.
    pub fn open_secret(&self, column: SealedColumn, stored: &str) -> Result<String> {
        Ok(self.sealer_for(column)?.open(column.name, stored)?)
    }

    /// [`Store::open_secret`] of a nullable value.
    pub fn open_secret_opt(
        &self,
        column: SealedColumn,
        stored: Option<&str>,
    ) -> Result<Option<String>> {
        stored
            .map(|value| self.open_secret(column, value))
            .transpose()
    }

    /// The runtime as stored: header values sealed.
    pub(crate) fn seal_runtime(&self, runtime: &Runtime) -> Result<Runtime> {
        self.map_headers(runtime, |store, value| store.seal(AGENT_HEADER, value))
    }

    /// The runtime as read: header values opened.
    pub(crate) fn open_runtime(&self, runtime: &Runtime) -> Result<Runtime> {
        self.map_headers(runtime, |store, value| {
            store.open_secret(AGENT_HEADER, value)
        })
    }

    fn map_headers(
        &self,
        runtime: &Runtime,
        map: impl Fn(&Store, &str) -> Result<String>,
    ) -> Result<Runtime> {
        let mut runtime = runtime.clone();
        if let Runtime::Websocket { headers, .. } = &mut runtime {
            *headers = headers
                .iter()
                .map(|(name, value)| Ok((name.clone(), map(self, value)?)))
                .collect::<Result<BTreeMap<_, _>>>()?;
        }
        Ok(runtime)
    }

    fn sealer_for(&self, column: SealedColumn) -> Result<&Sealer> {
        Ok(self.sealer.as_deref().ok_or(SecretError::NoKey {
            column: column.name,
        })?)
    }

    /// Whether any sealed column holds a sealed value (then a new key would read none).
    pub(crate) async fn holds_sealed_values(pool: &sqlx::AnyPool) -> Result<bool> {
        for column in SEALED_TEXT_COLUMNS {
            let sql = format!(
                "SELECT 1 FROM {table} WHERE {col} LIKE '{SEALED_PREFIX}%' LIMIT 1",
                col = column.column,
                table = column.table
            );
            if sqlx::query(&numbered(&sql))
                .fetch_optional(pool)
                .await?
                .is_some()
            {
                return Ok(true);
            }
        }
        let agents = sqlx::query(&numbered(
            "SELECT 1 FROM agents WHERE runtime LIKE ? LIMIT 1",
        ))
        .bind(format!("%\"{SEALED_PREFIX}%"))
        .fetch_optional(pool)
        .await?;
        Ok(agents.is_some())
    }

    /// Fails with [`SecretError::WrongKey`] when a sealed column holds a value sealed with
    /// another key than the store's: the service refuses to start rather than serve
    /// secrets it cannot read, or seal new ones with a second key.
    pub(crate) async fn check_secret_key(&self) -> Result<()> {
        let sealer = self.sealer_for(TRUNK_PASSWORD)?;
        let own = format!("{SEALED_PREFIX}{}:%", sealer.key_id());
        for column in SEALED_TEXT_COLUMNS {
            let sql = format!(
                "SELECT {col} FROM {table} WHERE {col} LIKE '{SEALED_PREFIX}%' \
                 AND {col} NOT LIKE ? LIMIT 1",
                col = column.column,
                table = column.table
            );
            let row = sqlx::query(&numbered(&sql))
                .bind(&own)
                .fetch_optional(&self.pool)
                .await?;
            if let Some(row) = row {
                let stored: String = row.try_get(0)?;
                sealer.open(column.name, &stored)?;
            }
        }
        let row = sqlx::query(&numbered(
            "SELECT runtime FROM agents WHERE runtime LIKE ? AND runtime NOT LIKE ? LIMIT 1",
        ))
        .bind(format!("%\"{SEALED_PREFIX}%"))
        .bind(format!("%\"{SEALED_PREFIX}{}:%", sealer.key_id()))
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            let text: String = row.try_get(0)?;
            self.open_runtime(&serde_json::from_str(&text)?)?;
        }
        Ok(())
    }

    /// Seals every plaintext value that an older version left in a sealed column, each
    /// row updated only if it still holds the value read (a second node doing the same at
    /// once changes nothing twice).
    pub(crate) async fn seal_plaintext_secrets(&self) -> Result<()> {
        let mut sealed = 0usize;
        for column in SEALED_TEXT_COLUMNS {
            let select = format!(
                "SELECT id, {col} FROM {table} WHERE {col} IS NOT NULL \
                 AND {col} NOT LIKE '{SEALED_PREFIX}%'",
                col = column.column,
                table = column.table
            );
            let update = format!(
                "UPDATE {table} SET {col} = ? WHERE id = ? AND {col} = ?",
                col = column.column,
                table = column.table
            );
            for row in sqlx::query(&numbered(&select))
                .fetch_all(&self.pool)
                .await?
            {
                let id: String = row.try_get(0)?;
                let plaintext: String = row.try_get(1)?;
                let done = sqlx::query(&numbered(&update))
                    .bind(self.seal(*column, &plaintext)?)
                    .bind(&id)
                    .bind(&plaintext)
                    .execute(&self.pool)
                    .await?;
                sealed += usize::try_from(done.rows_affected()).unwrap_or(0);
            }
        }
        let rows = sqlx::query(&numbered("SELECT id, runtime FROM agents"))
            .fetch_all(&self.pool)
            .await?;
        for row in rows {
            let id: String = row.try_get(0)?;
            let text: String = row.try_get(1)?;
            let runtime: Runtime = serde_json::from_str(&text)?;
            let Runtime::Websocket { headers, .. } = &runtime else {
                continue;
            };
            if headers.values().all(|value| is_sealed(value)) {
                continue;
            }
            let mut resealed = runtime.clone();
            if let Runtime::Websocket { headers, .. } = &mut resealed {
                for value in headers.values_mut() {
                    if !is_sealed(value) {
                        *value = self.seal(AGENT_HEADER, value)?;
                    }
                }
            }
            let done = sqlx::query(&numbered(
                "UPDATE agents SET runtime = ? WHERE id = ? AND runtime = ?",
            ))
            .bind(serde_json::to_string(&resealed)?)
            .bind(&id)
            .bind(&text)
            .execute(&self.pool)
            .await?;
            sealed += usize::try_from(done.rows_affected()).unwrap_or(0);
        }
        if sealed > 0 {
            tracing::info!(
                rows = sealed,
                "encrypted secrets stored in plaintext by an older version"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::str::FromStr;

    use sqlx::Row;

    use super::*;
    use crate::config::SecretConfig;
    use crate::model::Runtime;
    use crate::secrets::SecretKey;
    use crate::store::agents::tests::agent;
    use crate::store::test_support::{sqlite_store, sqlite_url_in};
    use crate::store::trunks::tests::trunk;
    use crate::store::webhooks::tests::webhook;
    use crate::store::StoreError;

    fn websocket(token: &str) -> Runtime {
        Runtime::Websocket {
            url: "wss://agent.example/stream".into(),
            headers: BTreeMap::from([
                ("Authorization".to_owned(), format!("Bearer {token}")),
                ("X-Tenant".to_owned(), "acme".to_owned()),
            ]),
            format: None,
        }
    }

    /// What a client of the database file sees, through a pool of its own.
    async fn raw(url: &str, sql: &str) -> Vec<String> {
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).expect("url");
        let pool = sqlx::SqlitePool::connect_with(options)
            .await
            .expect("raw pool");
        let rows = sqlx::query(&numbered(sql))
            .fetch_all(&pool)
            .await
            .expect("raw rows");
        pool.close().await;
        rows.iter()
            .map(|row| row.try_get::<String, _>(0).expect("text"))
            .collect()
    }

    #[tokio::test]
    async fn secrets_reach_the_file_sealed_and_come_back_plain() {
        let (store, dir) = sqlite_store().await;
        let trunk = trunk("org_a", 0);
        let hook = webhook("org_a", &["call.ended"], 0);
        let mut agent = agent("org_a", 0);
        agent.runtime = websocket("tok_live_123");
        store.insert_trunk(&trunk).await.expect("trunk");
        store.insert_webhook(&hook).await.expect("webhook");
        store.insert_agent(&agent).await.expect("agent");

        let url = dir.url().to_owned();
        let stored = [
            raw(&url, "SELECT password FROM trunks").await,
            raw(&url, "SELECT secret FROM webhooks").await,
            raw(&url, "SELECT runtime FROM agents").await,
        ]
        .concat();
        let plaintexts = ["secret", hook.secret.as_str(), "tok_live_123"];
        for (value, plaintext) in stored.iter().zip(plaintexts) {
            assert!(!value.contains(plaintext), "{plaintext} is in {value}");
            assert!(value.contains(SEALED_PREFIX), "{value}");
        }
        assert!(stored[2].contains("Authorization") && stored[2].contains("wss://agent"));

        assert_eq!(store.get_trunk("org_a", &trunk.id).await.unwrap(), trunk);
        assert_eq!(store.all_trunks().await.unwrap(), vec![trunk.clone()]);
        assert_eq!(store.get_webhook_any(&hook.id).await.unwrap(), hook);
        assert_eq!(
            store
                .webhooks_for_event("org_a", "call.ended")
                .await
                .unwrap(),
            vec![hook.clone()]
        );
        assert_eq!(store.get_agent("org_a", &agent.id).await.unwrap(), agent);
        assert_eq!(
            store.list_agents("org_a", false, 10, 0).await.unwrap().0,
            vec![agent.clone()]
        );
        // The same plaintext twice is stored twice differently (a nonce per value).
        let mut again = trunk.clone();
        again.id = crate::ids::new_id(crate::ids::TRUNK);
        store.insert_trunk(&again).await.expect("second trunk");
        let both = raw(&url, "SELECT password FROM trunks").await;
        assert_ne!(both[0], both[1]);

        // A restart with the key file next to the database reads them all.
        store.close().await;
        let reopened = Store::open(&url).await.expect("reopens with the key file");
        assert_eq!(reopened.get_agent("org_a", &agent.id).await.unwrap(), agent);
    }

    #[tokio::test]
    async fn a_wrong_key_is_a_clear_error_never_garbage() {
        let (store, dir) = sqlite_store().await;
        let trunk = trunk("org_a", 0);
        store.insert_trunk(&trunk).await.expect("trunk");
        store.close().await;
        let url = dir.url().to_owned();
        let other = SecretConfig {
            key: Some(SecretKey::generate()),
            key_file: None,
        };
        let error = Store::open_with(&url, &other)
            .await
            .expect_err("the service does not start with another key");
        let message = error.to_string();
        assert!(
            matches!(
                &error,
                StoreError::Secret(SecretError::WrongKey {
                    column: "trunks.password",
                    ..
                })
            ),
            "{message}"
        );
        assert!(message.contains("DIALCORE_SECRET_KEY"), "{message}");
        // An admin command with the wrong key opens the database, and a secret it reads
        // fails the same way.
        let admin = Store::open_existing(&url, &other).await.expect("opens");
        let error = admin.get_trunk("org_a", &trunk.id).await.unwrap_err();
        assert!(matches!(
            error,
            StoreError::Secret(SecretError::WrongKey { .. })
        ));
    }

    #[tokio::test]
    async fn a_lost_key_file_is_reported_and_not_replaced() {
        let (store, dir) = sqlite_store().await;
        let mut agent = agent("org_a", 0);
        agent.runtime = websocket("tok");
        store.insert_agent(&agent).await.expect("agent");
        store.close().await;
        let url = dir.url().to_owned();
        let key_file = crate::secrets::default_key_file(&url).expect("a file database");
        std::fs::remove_file(&key_file).expect("the key file is lost");
        let error = Store::open(&url)
            .await
            .expect_err("no new key for old secrets");
        assert!(
            matches!(&error, StoreError::Secret(SecretError::KeyLost { path }) if *path == key_file),
            "{error}"
        );
        assert!(
            error.to_string().contains("restore the key file"),
            "{error}"
        );
        assert!(!key_file.exists(), "no stray key is written in its place");
    }

    #[tokio::test]
    async fn admin_commands_without_a_key_create_none_and_seal_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let url = sqlite_url_in(dir.path());
        // A database created by a service whose key came from the environment.
        let service_key = SecretConfig {
            key: Some(SecretKey::generate()),
            key_file: None,
        };
        let store = Store::open_with(&url, &service_key).await.expect("opens");
        store.insert_trunk(&trunk("org_a", 0)).await.expect("trunk");
        store.close().await;
        let key_file = crate::secrets::default_key_file(&url).expect("a file database");
        assert!(!key_file.exists(), "a configured key writes no key file");

        let admin = Store::open_existing(&url, &SecretConfig::default())
            .await
            .expect("opens");
        assert!(!key_file.exists(), "an admin command creates no second key");
        admin.create_key("acme", 0).await.expect("keys still work");
        let error = admin.all_trunks().await.unwrap_err();
        assert!(
            matches!(error, StoreError::Secret(SecretError::NoKey { .. })),
            "{error}"
        );
    }

    /// A database written before secrets were encrypted (schema version 5): its plaintext
    /// trunk passwords, webhook secrets and agent header values are sealed when the service
    /// opens it, and read back unchanged; its API key prefixes are shortened.
    #[tokio::test]
    async fn legacy_plaintext_rows_are_sealed_on_start() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let old = dir.path().join("migrations");
        std::fs::create_dir(&old).expect("dir");
        let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        for entry in std::fs::read_dir(&here).expect("migrations") {
            let name = entry.expect("entry").file_name();
            if name.to_string_lossy().as_ref() < "0006" {
                std::fs::copy(here.join(&name), old.join(&name)).expect("copy");
            }
        }
        let url = sqlite_url_in(dir.path());
        let runtime = serde_json::to_string(&websocket("tok_legacy")).expect("json");
        {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
                .expect("url")
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(options)
                .await
                .expect("connect");
            sqlx::migrate::Migrator::new(old.as_path())
                .await
                .expect("old migrations")
                .run(&pool)
                .await
                .expect("old schema");
            let stamp = "2026-01-01T00:00:00.000000000Z";
            for sql in [
                "INSERT INTO orgs (id, name, balance_cents, created_at) VALUES ('org_a', 'acme', 0, ?)",
                "INSERT INTO api_keys (id, org_id, key_hash, key_prefix, created_at) \
                 VALUES ('key_old', 'org_a', 'hash', 'sk_test_know', ?)",
                "INSERT INTO trunks (id, org_id, name, host, port, transport, username, password, \
                 allowed_networks, created_at, updated_at) VALUES ('trk_old', 'org_a', 't', \
                 '127.0.0.1', 5060, 'udp', 'user', 'legacy-password', '[]', ?1, ?1)",
                "INSERT INTO trunks (id, org_id, name, host, port, transport, username, password, \
                 allowed_networks, created_at, updated_at) VALUES ('trk_bare', 'org_a', 't', \
                 '127.0.0.1', 5060, 'udp', NULL, NULL, '[]', ?1, ?1)",
                "INSERT INTO webhooks (id, org_id, url, events, secret, created_at) VALUES \
                 ('whk_old', 'org_a', 'http://127.0.0.1:9/h', '[\"call.ended\"]', \
                 'whsec_legacy_secret', ?)",
            ] {
                sqlx::query(&numbered(sql)).bind(stamp).execute(&pool).await.expect(sql);
            }
            sqlx::query(&numbered(
                "INSERT INTO agents (id, org_id, name, prompt, greeting, status, runtime, \
                 default_call_settings, created_at, updated_at) VALUES ('agt_old', 'org_a', \
                 'a', 'p', NULL, 'active', ?, '{}', ?2, ?2)",
            ))
            .bind(&runtime)
            .bind(stamp)
            .execute(&pool)
            .await
            .expect("agent");
            pool.close().await;
        }

        let store = Store::open(&url).await.expect("migrates and seals");
        let stored = [
            raw(&url, "SELECT password FROM trunks WHERE id = 'trk_old'").await,
            raw(&url, "SELECT secret FROM webhooks").await,
            raw(&url, "SELECT runtime FROM agents").await,
        ]
        .concat();
        for (value, plaintext) in
            stored
                .iter()
                .zip(["legacy-password", "whsec_legacy_secret", "tok_legacy"])
        {
            assert!(
                !value.contains(plaintext),
                "{plaintext} is still in {value}"
            );
            assert!(value.contains(SEALED_PREFIX), "{value}");
        }
        let trunk = store.get_trunk("org_a", "trk_old").await.expect("trunk");
        assert_eq!(trunk.password.as_deref(), Some("legacy-password"));
        let bare = store.get_trunk("org_a", "trk_bare").await.expect("trunk");
        assert_eq!(bare.password, None, "no password stays no password");
        let hook = store.get_webhook_any("whk_old").await.expect("webhook");
        assert_eq!(hook.secret, "whsec_legacy_secret");
        let agent = store.get_agent("org_a", "agt_old").await.expect("agent");
        assert_eq!(agent.runtime, websocket("tok_legacy"));
        assert_eq!(
            raw(&url, "SELECT key_prefix FROM api_keys").await,
            ["sk_test_"],
            "a legacy 12-character prefix keeps 8"
        );
        // Sealing happens once: a second start changes nothing.
        store.close().await;
        let before = raw(&url, "SELECT password FROM trunks WHERE id = 'trk_old'").await;
        Store::open(&url).await.expect("reopens").close().await;
        let after = raw(&url, "SELECT password FROM trunks WHERE id = 'trk_old'").await;
        assert_eq!(before, after);
    }
}
