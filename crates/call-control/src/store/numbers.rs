//! Phone numbers.

use super::numbered;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{get_ts, ts, write_error, Result, Store, StoreError};
use crate::model::PhoneNumber;

const COLUMNS: &str = "id, org_id, number, trunk_id, agent_id, created_at, updated_at";

impl Store {
    /// Stores a new phone number. [`StoreError::Conflict`] when the number is already owned
    /// (by any organisation), or its trunk or agent does not exist.
    pub async fn insert_number(&self, number: &PhoneNumber) -> Result<()> {
        sqlx::query(&numbered(
            "INSERT INTO phone_numbers (id, org_id, number, trunk_id, agent_id, created_at, \
             updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&number.id)
        .bind(&number.org_id)
        .bind(&number.number)
        .bind(&number.trunk_id)
        .bind(&number.agent_id)
        .bind(ts(&number.created_at))
        .bind(ts(&number.updated_at))
        .execute(&self.pool)
        .await
        .map_err(|error| write_error(error, || conflict_message(number)))?;
        self.directory_changed().await;
        Ok(())
    }

    /// The organisation's phone number `id` ([`StoreError::NotFound`] otherwise).
    pub async fn get_number(&self, org_id: &str, id: &str) -> Result<PhoneNumber> {
        self.get_scoped("phone_numbers", COLUMNS, org_id, id, number_from_row)
            .await
    }

    /// One page of the organisation's phone numbers, newest first, and how many in all.
    pub async fn list_numbers(
        &self,
        org_id: &str,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<PhoneNumber>, u64)> {
        self.list_scoped(
            "phone_numbers",
            COLUMNS,
            org_id,
            limit,
            offset,
            number_from_row,
        )
        .await
    }

    /// Writes every field of the phone number (as given, `updated_at` included);
    /// [`StoreError::Conflict`] as for [`Store::insert_number`].
    pub async fn update_number(&self, number: &PhoneNumber) -> Result<()> {
        let done = sqlx::query(&numbered(
            "UPDATE phone_numbers SET number = ?, trunk_id = ?, agent_id = ?, updated_at = ? \
             WHERE org_id = ? AND id = ?",
        ))
        .bind(&number.number)
        .bind(&number.trunk_id)
        .bind(&number.agent_id)
        .bind(ts(&number.updated_at))
        .bind(&number.org_id)
        .bind(&number.id)
        .execute(&self.pool)
        .await
        .map_err(|error| write_error(error, || conflict_message(number)))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.directory_changed().await;
        Ok(())
    }

    /// Deletes the organisation's phone number `id`.
    pub async fn delete_number(&self, org_id: &str, id: &str) -> Result<()> {
        let done = sqlx::query(&numbered(
            "DELETE FROM phone_numbers WHERE org_id = ? AND id = ?",
        ))
        .bind(org_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.directory_changed().await;
        Ok(())
    }

    /// The record of an E.164 number, whichever organisation owns it (inbound routing).
    pub async fn find_number(&self, number: &str) -> Result<Option<PhoneNumber>> {
        let sql = format!("SELECT {COLUMNS} FROM phone_numbers WHERE number = ?");
        let row = sqlx::query(&numbered(&sql))
            .bind(number)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(number_from_row).transpose()
    }

    /// Every phone number of every organisation (the routing directory).
    pub(crate) async fn all_numbers(&self) -> Result<Vec<PhoneNumber>> {
        let sql = format!("SELECT {COLUMNS} FROM phone_numbers");
        let rows = sqlx::query(&numbered(&sql)).fetch_all(&self.pool).await?;
        rows.iter().map(number_from_row).collect()
    }

    /// The organisation's numbers assigned to `agent_id`, oldest first.
    pub async fn numbers_of_agent(&self, org_id: &str, agent_id: &str) -> Result<Vec<PhoneNumber>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM phone_numbers WHERE org_id = ? AND agent_id = ? \
             ORDER BY created_at, id"
        );
        let rows = sqlx::query(&numbered(&sql))
            .bind(org_id)
            .bind(agent_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(number_from_row).collect()
    }
}

fn conflict_message(number: &PhoneNumber) -> String {
    format!(
        "phone number {} already exists, or trunk {} or agent {} does not",
        number.number,
        number.trunk_id,
        number.agent_id.as_deref().unwrap_or("-")
    )
}

fn number_from_row(row: &AnyRow) -> Result<PhoneNumber> {
    Ok(PhoneNumber {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        number: row.try_get("number")?,
        trunk_id: row.try_get("trunk_id")?,
        agent_id: row.try_get("agent_id")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids;
    use crate::store::agents::tests::agent;
    use crate::store::test_support::{at, temp_store};
    use crate::store::trunks::tests::trunk;

    fn number(
        org_id: &str,
        e164: &str,
        trunk_id: &str,
        agent_id: Option<&str>,
        secs: i64,
    ) -> PhoneNumber {
        PhoneNumber {
            id: ids::new_id(ids::PHONE_NUMBER),
            org_id: org_id.into(),
            number: e164.into(),
            trunk_id: trunk_id.into(),
            agent_id: agent_id.map(str::to_owned),
            created_at: at(secs),
            updated_at: at(secs),
        }
    }

    #[tokio::test]
    async fn crud_find_and_agent_numbers() {
        let (store, _dir) = temp_store().await;
        let trunk = trunk("org_a", 0);
        let agent = agent("org_a", 0);
        store.insert_trunk(&trunk).await.expect("trunk");
        store.insert_agent(&agent).await.expect("agent");
        let mut first = number("org_a", "+14155550100", &trunk.id, Some(&agent.id), 1);
        let second = number("org_a", "+14155550101", &trunk.id, None, 2);
        store.insert_number(&first).await.expect("insert");
        store.insert_number(&second).await.expect("insert");
        assert_eq!(
            store.get_number("org_a", &first.id).await.expect("get"),
            first
        );
        assert_eq!(
            store.find_number("+14155550100").await.expect("find"),
            Some(first.clone())
        );
        assert_eq!(store.find_number("+19999999999").await.expect("find"), None);
        assert_eq!(
            store
                .numbers_of_agent("org_a", &agent.id)
                .await
                .expect("of agent"),
            vec![first.clone()]
        );

        first.agent_id = None;
        first.updated_at = at(3);
        store.update_number(&first).await.expect("update");
        assert!(store
            .numbers_of_agent("org_a", &agent.id)
            .await
            .expect("of agent")
            .is_empty());

        let (page, total) = store.list_numbers("org_a", 1, 0).await.expect("list");
        assert_eq!((page.len(), total), (1, 2));
        assert_eq!(page[0].id, second.id);

        store
            .delete_number("org_a", &first.id)
            .await
            .expect("delete");
        assert_eq!(store.find_number("+14155550100").await.expect("find"), None);
    }

    #[tokio::test]
    async fn duplicate_numbers_conflict_across_organisations() {
        let (store, _dir) = temp_store().await;
        let trunk_a = trunk("org_a", 0);
        let trunk_b = trunk("org_b", 0);
        store.insert_trunk(&trunk_a).await.expect("trunk");
        store.insert_trunk(&trunk_b).await.expect("trunk");
        store
            .insert_number(&number("org_a", "+14155550100", &trunk_a.id, None, 0))
            .await
            .expect("insert");
        let error = store
            .insert_number(&number("org_b", "+14155550100", &trunk_b.id, None, 0))
            .await
            .expect_err("duplicate");
        assert!(matches!(error, StoreError::Conflict(ref m) if m.contains("+14155550100")));
        // Renaming a number onto an owned one conflicts too.
        let mut other = number("org_b", "+14155550199", &trunk_b.id, None, 0);
        store.insert_number(&other).await.expect("insert");
        other.number = "+14155550100".into();
        assert!(matches!(
            store.update_number(&other).await,
            Err(StoreError::Conflict(_))
        ));
        // A number on a trunk that does not exist.
        assert!(matches!(
            store
                .insert_number(&number("org_a", "+14155550777", "trk_missing", None, 0))
                .await,
            Err(StoreError::Conflict(_))
        ));
    }

    #[tokio::test]
    async fn organisations_are_isolated() {
        let (store, _dir) = temp_store().await;
        let trunk = trunk("org_b", 0);
        store.insert_trunk(&trunk).await.expect("trunk");
        let mut theirs = number("org_b", "+14155550100", &trunk.id, None, 0);
        store.insert_number(&theirs).await.expect("insert");
        assert!(matches!(
            store.get_number("org_a", &theirs.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.delete_number("org_a", &theirs.id).await,
            Err(StoreError::NotFound)
        ));
        theirs.org_id = "org_a".into();
        assert!(matches!(
            store.update_number(&theirs).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(store.list_numbers("org_a", 50, 0).await.expect("list").1, 0);
    }

    #[tokio::test]
    async fn trunk_in_use_and_deleted_agent() {
        let (store, _dir) = temp_store().await;
        let trunk = trunk("org_a", 0);
        let agent = agent("org_a", 0);
        store.insert_trunk(&trunk).await.expect("trunk");
        store.insert_agent(&agent).await.expect("agent");
        let assigned = number("org_a", "+14155550100", &trunk.id, Some(&agent.id), 0);
        store.insert_number(&assigned).await.expect("insert");
        assert!(matches!(
            store.delete_trunk("org_a", &trunk.id).await,
            Err(StoreError::Conflict(_))
        ));
        store
            .delete_agent("org_a", &agent.id)
            .await
            .expect("delete agent");
        let unassigned = store.get_number("org_a", &assigned.id).await.expect("get");
        assert_eq!(unassigned.agent_id, None);
        store
            .delete_number("org_a", &assigned.id)
            .await
            .expect("delete number");
        store
            .delete_trunk("org_a", &trunk.id)
            .await
            .expect("delete trunk");
    }
}
