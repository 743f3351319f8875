//! SIP trunks.

use super::numbered;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::sealed::{TRUNK_INBOUND_PASSWORD, TRUNK_PASSWORD};
use super::{get_enum, get_int, get_json, get_ts, ts, write_error, Result, Store, StoreError};
use crate::model::{InboundAuth, Trunk};

const COLUMNS: &str = "id, org_id, name, host, port, transport, username, password, \
                       allowed_networks, inbound_auth_username, inbound_auth_password, \
                       created_at, updated_at";

impl Store {
    /// Stores a new trunk ([`StoreError::Conflict`] if its id exists).
    pub async fn insert_trunk(&self, trunk: &Trunk) -> Result<()> {
        let (inbound_username, inbound_password) = inbound_auth_columns(trunk);
        sqlx::query(&numbered(
            "INSERT INTO trunks (id, org_id, name, host, port, transport, username, password, \
             allowed_networks, inbound_auth_username, inbound_auth_password, created_at, \
             updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&trunk.id)
        .bind(&trunk.org_id)
        .bind(&trunk.name)
        .bind(&trunk.host)
        .bind(i64::from(trunk.port))
        .bind(trunk.transport.as_str())
        .bind(&trunk.username)
        .bind(self.seal_opt(TRUNK_PASSWORD, trunk.password.as_deref())?)
        .bind(serde_json::to_string(&trunk.allowed_networks)?)
        .bind(inbound_username)
        .bind(self.seal_opt(TRUNK_INBOUND_PASSWORD, inbound_password.as_deref())?)
        .bind(ts(&trunk.created_at))
        .bind(ts(&trunk.updated_at))
        .execute(&self.pool)
        .await
        .map_err(|error| write_error(error, || format!("trunk {} exists", trunk.id)))?;
        self.directory_changed().await;
        Ok(())
    }

    /// The organisation's trunk `id`, password included ([`StoreError::NotFound`] otherwise).
    pub async fn get_trunk(&self, org_id: &str, id: &str) -> Result<Trunk> {
        let trunk = self
            .get_scoped("trunks", COLUMNS, org_id, id, trunk_from_row)
            .await?;
        self.open_trunk(trunk)
    }

    /// One page of the organisation's trunks, newest first, and how many it has in all.
    pub async fn list_trunks(
        &self,
        org_id: &str,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<Trunk>, u64)> {
        let (trunks, total) = self
            .list_scoped("trunks", COLUMNS, org_id, limit, offset, trunk_from_row)
            .await?;
        let trunks = trunks
            .into_iter()
            .map(|trunk| self.open_trunk(trunk))
            .collect::<Result<_>>()?;
        Ok((trunks, total))
    }

    /// Writes every field of the trunk (as given, password and `updated_at` included).
    pub async fn update_trunk(&self, trunk: &Trunk) -> Result<()> {
        let (inbound_username, inbound_password) = inbound_auth_columns(trunk);
        let done = sqlx::query(&numbered(
            "UPDATE trunks SET name = ?, host = ?, port = ?, transport = ?, username = ?, \
             password = ?, allowed_networks = ?, inbound_auth_username = ?, \
             inbound_auth_password = ?, updated_at = ? WHERE org_id = ? AND id = ?",
        ))
        .bind(&trunk.name)
        .bind(&trunk.host)
        .bind(i64::from(trunk.port))
        .bind(trunk.transport.as_str())
        .bind(&trunk.username)
        .bind(self.seal_opt(TRUNK_PASSWORD, trunk.password.as_deref())?)
        .bind(serde_json::to_string(&trunk.allowed_networks)?)
        .bind(inbound_username)
        .bind(self.seal_opt(TRUNK_INBOUND_PASSWORD, inbound_password.as_deref())?)
        .bind(ts(&trunk.updated_at))
        .bind(&trunk.org_id)
        .bind(&trunk.id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.directory_changed().await;
        Ok(())
    }

    /// Deletes the organisation's trunk `id`; [`StoreError::Conflict`] while phone numbers
    /// still live on it.
    pub async fn delete_trunk(&self, org_id: &str, id: &str) -> Result<()> {
        let done = sqlx::query(&numbered("DELETE FROM trunks WHERE org_id = ? AND id = ?"))
            .bind(org_id)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|error| {
                write_error(error, || format!("trunk {id} still has phone numbers"))
            })?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.directory_changed().await;
        Ok(())
    }

    /// Every trunk of every organisation (for checking the source of inbound calls).
    pub async fn all_trunks(&self) -> Result<Vec<Trunk>> {
        let sql = format!("SELECT {COLUMNS} FROM trunks ORDER BY created_at, id");
        let rows = sqlx::query(&numbered(&sql)).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| self.open_trunk(trunk_from_row(row)?))
            .collect()
    }

    /// The trunk `id` of any organisation (engine use: the trunk of an inbound number).
    pub async fn get_trunk_any(&self, id: &str) -> Result<Trunk> {
        let trunk = self.get_any("trunks", COLUMNS, id, trunk_from_row).await?;
        self.open_trunk(trunk)
    }

    /// The trunk as read, its secrets decrypted.
    fn open_trunk(&self, mut trunk: Trunk) -> Result<Trunk> {
        trunk.password = self.open_secret_opt(TRUNK_PASSWORD, trunk.password.as_deref())?;
        if let Some(auth) = trunk.inbound_auth.as_mut() {
            auth.password = self
                .open_secret_opt(TRUNK_INBOUND_PASSWORD, Some(&auth.password))?
                .unwrap_or_default();
        }
        Ok(trunk)
    }
}

fn trunk_from_row(row: &AnyRow) -> Result<Trunk> {
    Ok(Trunk {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        name: row.try_get("name")?,
        host: row.try_get("host")?,
        port: get_int(row, "port")?,
        transport: get_enum(row, "transport")?,
        username: row.try_get("username")?,
        password: row.try_get("password")?,
        allowed_networks: get_json(row, "allowed_networks")?,
        inbound_auth: inbound_auth_from_row(row)?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
    })
}

/// The `inbound_auth_username` and `inbound_auth_password` values of a trunk. With
/// [`inbound_auth_from_row`], the only code that touches these columns (the password is
/// sealed by the caller, and opened in `open_trunk`).
fn inbound_auth_columns(trunk: &Trunk) -> (Option<String>, Option<String>) {
    match &trunk.inbound_auth {
        Some(auth) => (Some(auth.username.clone()), Some(auth.password.clone())),
        None => (None, None),
    }
}

/// A trunk row's `inbound_auth`: both columns set, or none (a half-set pair is corrupt).
fn inbound_auth_from_row(row: &AnyRow) -> Result<Option<InboundAuth>> {
    let username: Option<String> = row.try_get("inbound_auth_username")?;
    let password: Option<String> = row.try_get("inbound_auth_password")?;
    match (username, password) {
        (Some(username), Some(password)) => Ok(Some(InboundAuth { username, password })),
        (None, None) => Ok(None),
        (Some(_), None) | (None, Some(_)) => Err(StoreError::Corrupt {
            column: "inbound_auth_password",
            value: "one of inbound_auth_username and inbound_auth_password without the other"
                .into(),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ids;
    use crate::model::TrunkTransport;
    use crate::store::test_support::{at, temp_store};

    /// A trunk of `org_id` created at made-up second `secs`.
    pub(crate) fn trunk(org_id: &str, secs: i64) -> Trunk {
        Trunk {
            id: ids::new_id(ids::TRUNK),
            org_id: org_id.into(),
            name: format!("trunk {secs}"),
            host: "127.0.0.1".into(),
            port: 5080,
            transport: TrunkTransport::Udp,
            username: Some("user".into()),
            password: Some("secret".into()),
            allowed_networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
            inbound_auth: Some(InboundAuth {
                username: "carrier".into(),
                password: "inbound secret".into(),
            }),
            created_at: at(secs),
            updated_at: at(secs),
        }
    }

    #[tokio::test]
    async fn crud_round_trips() {
        let (store, _dir) = temp_store().await;
        let mut trunk = trunk("org_a", 0);
        store.insert_trunk(&trunk).await.expect("insert");
        assert_eq!(
            store.get_trunk("org_a", &trunk.id).await.expect("get"),
            trunk
        );

        trunk.transport = TrunkTransport::Tcp;
        trunk.password = None;
        trunk.inbound_auth = None;
        trunk.allowed_networks.clear();
        trunk.port = 5060;
        trunk.updated_at = at(5);
        store.update_trunk(&trunk).await.expect("update");
        assert_eq!(
            store.get_trunk("org_a", &trunk.id).await.expect("get"),
            trunk
        );
        assert_eq!(store.get_trunk_any(&trunk.id).await.expect("any"), trunk);

        store
            .delete_trunk("org_a", &trunk.id)
            .await
            .expect("delete");
        assert!(matches!(
            store.get_trunk("org_a", &trunk.id).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn organisations_are_isolated_but_all_trunks_sees_all() {
        let (store, _dir) = temp_store().await;
        let mut theirs = trunk("org_b", 0);
        store.insert_trunk(&theirs).await.expect("insert");
        store
            .insert_trunk(&trunk("org_a", 1))
            .await
            .expect("insert");
        assert!(matches!(
            store.get_trunk("org_a", &theirs.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.delete_trunk("org_a", &theirs.id).await,
            Err(StoreError::NotFound)
        ));
        theirs.org_id = "org_a".into();
        assert!(matches!(
            store.update_trunk(&theirs).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(store.list_trunks("org_a", 50, 0).await.expect("list").1, 1);
        assert_eq!(store.all_trunks().await.expect("all").len(), 2);
    }

    #[tokio::test]
    async fn pages_with_total() {
        let (store, _dir) = temp_store().await;
        for secs in 0..3 {
            store
                .insert_trunk(&trunk("org_a", secs))
                .await
                .expect("insert");
        }
        let (page, total) = store.list_trunks("org_a", 2, 1).await.expect("page");
        assert_eq!(total, 3);
        let names: Vec<_> = page.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["trunk 1", "trunk 0"]);
    }
}
