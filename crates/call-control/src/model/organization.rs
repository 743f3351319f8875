//! The organisation an API key belongs to, as `GET /organization` shows it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An organisation (tenant): its objects, keys and credit balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Organization {
    /// `org_...`; the `AccountSid` the agent WebSocket's `start` carries.
    pub id: String,
    /// Unique name (`dialcore keys create --org NAME`).
    pub name: String,
    /// Credit left, in cents: calls and test calls are charged against it, and refused with
    /// 402 when it cannot cover them.
    pub balance_cents: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}
