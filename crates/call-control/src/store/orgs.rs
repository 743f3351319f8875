//! Organisations, API keys (stored as SHA-256 hashes) and credits.

use super::numbered;
use chrono::Utc;
use sha2::{Digest, Sha256};
use sqlx::Row;

use chrono::DateTime;
use sqlx::any::AnyRow;

use super::{get_opt_ts, get_ts, ts, Result, Store, StoreError};
use crate::ids;
use crate::model::Organization;

/// Name of the organisation created at bootstrap.
pub const DEFAULT_ORG: &str = "default";

/// Most characters of a key's secret part kept for display.
pub const DISPLAY_CHARS: usize = 8;

/// What an API key presented by a client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// A key in use: its record's id and its organisation.
    Valid {
        /// `key_...`
        key_id: String,
        /// `org_...`
        org_id: String,
    },
    /// A key that was revoked.
    Revoked {
        /// `key_...`
        key_id: String,
    },
    /// No such key.
    Unknown,
}

/// An API key's record as shown to its organisation and to the operator: never the key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ApiKeyRecord {
    /// `key_...`
    pub id: String,
    /// Owning organisation (never serialized).
    #[serde(skip)]
    pub org_id: String,
    /// The start of the key, for telling keys apart (see [`display_prefix`]).
    pub prefix: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When it was revoked (null while it works).
    #[schema(required = true)]
    pub revoked_at: Option<DateTime<Utc>>,
}

const KEY_COLUMNS: &str = "id, org_id, key_prefix, created_at, revoked_at";

impl Store {
    /// Makes sure the service can be reached: when `api_key` is given, that key exists (in
    /// organisation `default`, created if needed); otherwise, when no key exists at all,
    /// creates organisation `default` and one random key, and returns it so that it can be
    /// shown once. Returns `None` when no key was generated.
    pub async fn bootstrap(
        &self,
        api_key: Option<&str>,
        starting_balance_cents: i64,
    ) -> Result<Option<String>> {
        if let Some(key) = api_key {
            if self.org_for_key(key).await?.is_none() {
                let org_id = self.ensure_org(DEFAULT_ORG, starting_balance_cents).await?;
                self.insert_key(&org_id, key).await?;
            }
            return Ok(None);
        }
        let row = sqlx::query(&numbered("SELECT COUNT(*) FROM api_keys"))
            .fetch_one(&self.pool)
            .await?;
        let keys: i64 = row.try_get(0)?;
        if keys > 0 {
            return Ok(None);
        }
        let org_id = self.ensure_org(DEFAULT_ORG, starting_balance_cents).await?;
        let key = ids::new_api_key();
        self.insert_key(&org_id, &key).await?;
        Ok(Some(key))
    }

    /// Creates a new API key for the organisation named `org_name`, creating the
    /// organisation (with `starting_balance_cents`) if it does not exist. Returns the key;
    /// only its hash is stored.
    pub async fn create_key(&self, org_name: &str, starting_balance_cents: i64) -> Result<String> {
        let org_id = self.ensure_org(org_name, starting_balance_cents).await?;
        let key = ids::new_api_key();
        self.insert_key(&org_id, &key).await?;
        Ok(key)
    }

    /// The organisation id an API key belongs to, or `None` for an unknown or revoked key.
    pub async fn org_for_key(&self, key: &str) -> Result<Option<String>> {
        Ok(self.key_and_org(key).await?.map(|(_, org_id)| org_id))
    }

    /// The id of the key record of an API key and its organisation's id, or `None` for an
    /// unknown or revoked key.
    pub async fn key_and_org(&self, key: &str) -> Result<Option<(String, String)>> {
        Ok(match self.check_api_key(key).await? {
            KeyCheck::Valid { key_id, org_id } => Some((key_id, org_id)),
            KeyCheck::Revoked { .. } | KeyCheck::Unknown => None,
        })
    }

    /// What the API key `key` is: in use (with its organisation), revoked, or unknown.
    pub async fn check_api_key(&self, key: &str) -> Result<KeyCheck> {
        let row = sqlx::query(&numbered(
            "SELECT id, org_id, revoked_at FROM api_keys WHERE key_hash = ?",
        ))
        .bind(hash_key(key))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(KeyCheck::Unknown);
        };
        let key_id: String = row.try_get("id")?;
        Ok(if get_opt_ts(&row, "revoked_at")?.is_some() {
            KeyCheck::Revoked { key_id }
        } else {
            KeyCheck::Valid {
                key_id,
                org_id: row.try_get("org_id")?,
            }
        })
    }

    /// One page of the organisation's API keys (revoked ones included), newest first, and
    /// how many it has in all.
    pub async fn list_api_keys(
        &self,
        org_id: &str,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<ApiKeyRecord>, u64)> {
        self.list_scoped("api_keys", KEY_COLUMNS, org_id, limit, offset, key_from_row)
            .await
    }

    /// Every API key of every organisation, oldest first, with the organisation's name
    /// (for the operator's `dialcore keys list`).
    pub async fn all_api_keys(&self) -> Result<Vec<(String, ApiKeyRecord)>> {
        let rows = sqlx::query(&numbered(
            "SELECT k.id, k.org_id, k.key_prefix, k.created_at, k.revoked_at, o.name \
             FROM api_keys k JOIN orgs o ON o.id = k.org_id ORDER BY k.created_at, k.id",
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("name")?, key_from_row(row)?)))
            .collect()
    }

    /// Revokes API key `key_id` at `now` (it answers 401 from then on) and returns its
    /// record; revoking a revoked key keeps its first revocation time. `org_id` limits it
    /// to one organisation's keys (`None`: any, for the operator). [`StoreError::NotFound`]
    /// when there is no such key (in the organisation).
    pub async fn revoke_api_key(
        &self,
        org_id: Option<&str>,
        key_id: &str,
        now: DateTime<Utc>,
    ) -> Result<ApiKeyRecord> {
        let row = sqlx::query(&numbered(&format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) \
             WHERE id = ? AND (? IS NULL OR org_id = ?) RETURNING {KEY_COLUMNS}"
        )))
        .bind(ts(&now))
        .bind(key_id)
        .bind(org_id)
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        key_from_row(&row)
    }

    /// The id of the organisation named `name`, if it exists.
    pub async fn org_id_by_name(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query(&numbered("SELECT id FROM orgs WHERE name = ?"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("id")).transpose()?)
    }

    /// The organisation `org_id` ([`StoreError::NotFound`] for an unknown one).
    pub async fn get_org(&self, org_id: &str) -> Result<Organization> {
        let row = sqlx::query(&numbered(
            "SELECT id, name, balance_cents, created_at FROM orgs WHERE id = ?",
        ))
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(Organization {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            balance_cents: row.try_get("balance_cents")?,
            created_at: get_ts(&row, "created_at")?,
        })
    }

    /// The organisation's balance in cents ([`StoreError::NotFound`] for an unknown one).
    pub async fn balance_cents(&self, org_id: &str) -> Result<i64> {
        let row = sqlx::query(&numbered("SELECT balance_cents FROM orgs WHERE id = ?"))
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(row.try_get("balance_cents")?)
    }

    /// Adds `cents` to the organisation's balance (negative to charge) in one atomic update;
    /// returns the new balance.
    pub async fn add_credits(&self, org_id: &str, cents: i64) -> Result<i64> {
        let row = sqlx::query(
            &numbered("UPDATE orgs SET balance_cents = balance_cents + ? WHERE id = ? RETURNING balance_cents"),
        )
        .bind(cents)
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(row.try_get("balance_cents")?)
    }

    async fn ensure_org(&self, name: &str, starting_balance_cents: i64) -> Result<String> {
        sqlx::query(&numbered(
            "INSERT INTO orgs (id, name, balance_cents, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (name) DO NOTHING",
        ))
        .bind(ids::new_id(ids::ORG))
        .bind(name)
        .bind(starting_balance_cents)
        .bind(ts(&Utc::now()))
        .execute(&self.pool)
        .await?;
        self.org_id_by_name(name).await?.ok_or(StoreError::NotFound)
    }

    async fn insert_key(&self, org_id: &str, key: &str) -> Result<()> {
        let prefix = display_prefix(key);
        sqlx::query(&numbered(
            "INSERT INTO api_keys (id, org_id, key_hash, key_prefix, created_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (key_hash) DO NOTHING",
        ))
        .bind(ids::new_id(ids::API_KEY))
        .bind(org_id)
        .bind(hash_key(key))
        .bind(prefix)
        .bind(ts(&Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// The part of an API key kept for display: its type tag (up to the last `_` of its first 8
/// characters, e.g. `sk_live_`) and at most 8 (`DISPLAY_CHARS`) characters of the rest, never
/// more than a quarter of it (`sk_live_` + 8 of the 32 random characters of a generated
/// key; `sk_test_k` of `sk_test_known`).
pub fn display_prefix(key: &str) -> String {
    let head: String = key.chars().take(8).collect();
    let tag_len = head.rfind('_').map_or(0, |at| at + 1);
    let (tag, rest) = key.split_at(tag_len);
    let shown = (rest.chars().count() / 4).min(DISPLAY_CHARS);
    let mut prefix = tag.to_owned();
    prefix.extend(rest.chars().take(shown));
    prefix
}

fn key_from_row(row: &AnyRow) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        prefix: row.try_get("key_prefix")?,
        created_at: get_ts(row, "created_at")?,
        revoked_at: get_opt_ts(row, "revoked_at")?,
    })
}

/// The stored form of an API key: lower-case hex SHA-256.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::temp_store;

    #[tokio::test]
    async fn bootstrap_generates_one_key_once() {
        let (store, _dir) = temp_store().await;
        let key = store
            .bootstrap(None, 500)
            .await
            .expect("bootstrap")
            .expect("a key is generated on an empty database");
        assert!(key.starts_with("sk_live_"));
        let org = store
            .org_for_key(&key)
            .await
            .expect("lookup")
            .expect("known key");
        assert_eq!(
            store.org_id_by_name(DEFAULT_ORG).await.expect("org"),
            Some(org.clone())
        );
        assert_eq!(store.balance_cents(&org).await.expect("balance"), 500);
        assert_eq!(store.bootstrap(None, 500).await.expect("again"), None);
    }

    #[tokio::test]
    async fn bootstrap_with_given_key() {
        let (store, _dir) = temp_store().await;
        assert_eq!(
            store
                .bootstrap(Some("sk_test_known"), 100)
                .await
                .expect("bootstrap"),
            None
        );
        let org = store
            .org_for_key("sk_test_known")
            .await
            .expect("lookup")
            .expect("the given key works");
        // Idempotent, and a second given key joins the same organisation.
        assert_eq!(
            store
                .bootstrap(Some("sk_test_known"), 100)
                .await
                .expect("again"),
            None
        );
        store
            .bootstrap(Some("sk_test_other"), 100)
            .await
            .expect("other");
        assert_eq!(
            store.org_for_key("sk_test_other").await.expect("lookup"),
            Some(org.clone())
        );
        // With keys present, no key is generated.
        assert_eq!(store.bootstrap(None, 100).await.expect("none"), None);
        assert_eq!(store.balance_cents(&org).await.expect("balance"), 100);
    }

    #[tokio::test]
    async fn keys_are_stored_hashed() {
        let (store, _dir) = temp_store().await;
        let key = store.create_key("acme", 0).await.expect("key");
        let rows = sqlx::query(&numbered("SELECT key_hash FROM api_keys"))
            .fetch_all(store.pool())
            .await
            .expect("rows");
        assert_eq!(rows.len(), 1);
        let stored: String = rows[0].try_get("key_hash").expect("column");
        assert_ne!(stored, key);
        assert_eq!(stored, hash_key(&key));
        assert_eq!(stored.len(), 64);
        assert_eq!(
            store.org_for_key("sk_live_wrong").await.expect("lookup"),
            None
        );
        assert_eq!(store.org_for_key("").await.expect("lookup"), None);
    }

    #[tokio::test]
    async fn create_key_reuses_the_organisation() {
        let (store, _dir) = temp_store().await;
        let first = store.create_key("acme", 700).await.expect("first");
        let second = store.create_key("acme", 9999).await.expect("second");
        let other = store.create_key("globex", 1).await.expect("other");
        let acme = store
            .org_for_key(&first)
            .await
            .expect("lookup")
            .expect("known");
        assert_eq!(
            store.org_for_key(&second).await.expect("lookup"),
            Some(acme.clone())
        );
        let globex = store
            .org_for_key(&other)
            .await
            .expect("lookup")
            .expect("known");
        assert_ne!(acme, globex);
        // Each key has a record of its own in the organisation.
        let (first_id, first_org) = store
            .key_and_org(&first)
            .await
            .expect("lookup")
            .expect("known");
        let (second_id, second_org) = store
            .key_and_org(&second)
            .await
            .expect("lookup")
            .expect("known");
        assert!(first_id.starts_with("key_"), "{first_id}");
        assert_ne!(first_id, second_id);
        assert_eq!((first_org, second_org), (acme.clone(), acme.clone()));
        assert_eq!(
            store.key_and_org("sk_live_wrong").await.expect("lookup"),
            None
        );
        // The starting balance applies only when the organisation is created.
        assert_eq!(store.balance_cents(&acme).await.expect("balance"), 700);
    }

    #[tokio::test]
    async fn credits_add_and_charge() {
        let (store, _dir) = temp_store().await;
        let key = store.create_key("acme", 100).await.expect("key");
        let org = store
            .org_for_key(&key)
            .await
            .expect("lookup")
            .expect("known");
        assert_eq!(store.add_credits(&org, 50).await.expect("add"), 150);
        assert_eq!(store.add_credits(&org, -200).await.expect("charge"), -50);
        assert_eq!(store.balance_cents(&org).await.expect("balance"), -50);
        assert!(matches!(
            store.add_credits("org_missing", 1).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.balance_cents("org_missing").await,
            Err(StoreError::NotFound)
        ));
    }
}

#[cfg(test)]
mod key_record_tests {
    use super::*;
    use crate::store::test_support::{at, temp_store};

    #[test]
    fn the_display_prefix_keeps_the_tag_and_a_little_of_the_rest() {
        let generated = ids::new_api_key();
        let prefix = display_prefix(&generated);
        assert_eq!(prefix.len(), "sk_live_".len() + DISPLAY_CHARS);
        assert!(generated.starts_with(&prefix));
        assert_eq!(display_prefix("sk_test_known"), "sk_test_k");
        assert_eq!(display_prefix("sk_test_"), "sk_test_");
        assert_eq!(display_prefix("plainsecret"), "pl");
        assert_eq!(display_prefix("abc"), "");
        assert_eq!(display_prefix(&"x".repeat(100)), "x".repeat(8));
    }

    #[tokio::test]
    async fn revoked_keys_stop_working_and_stay_listed() {
        let (store, _dir) = temp_store().await;
        let key = store.create_key("acme", 0).await.expect("key");
        let other = store.create_key("globex", 0).await.expect("key");
        let Some((key_id, org)) = store.key_and_org(&key).await.expect("lookup") else {
            panic!("a new key works");
        };
        let (other_id, _) = store.key_and_org(&other).await.unwrap().unwrap();
        let stored: Vec<String> = sqlx::query(&numbered("SELECT key_prefix FROM api_keys"))
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get(0).unwrap())
            .collect();
        assert!(stored.iter().all(|prefix| prefix.len() == 16), "{stored:?}");

        assert!(matches!(
            store.revoke_api_key(Some(&org), &other_id, at(0)).await,
            Err(StoreError::NotFound)
        ));
        let revoked = store
            .revoke_api_key(Some(&org), &key_id, at(5))
            .await
            .expect("revoked");
        assert_eq!(revoked.revoked_at, Some(at(5)));
        assert_eq!(
            store.check_api_key(&key).await.unwrap(),
            KeyCheck::Revoked {
                key_id: key_id.clone()
            }
        );
        assert_eq!(store.org_for_key(&key).await.unwrap(), None);
        assert_eq!(
            store.check_api_key("sk_nope").await.unwrap(),
            KeyCheck::Unknown
        );
        let again = store
            .revoke_api_key(None, &key_id, at(9))
            .await
            .expect("again");
        assert_eq!(
            again.revoked_at,
            Some(at(5)),
            "the first revocation is kept"
        );
        let (listed, total) = store.list_api_keys(&org, 50, 0).await.unwrap();
        assert_eq!((listed, total), (vec![again], 1));
        let all = store.all_api_keys().await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all.iter().filter(|(name, _)| name == "acme").count(), 1);
    }
}
