//! The success envelope `{"data", "meta": {"request_id", "ts"}}` (+ `"pagination": {"limit",
//! "offset", "total"}` beside them on lists),
//! the request id of the request being served, and list paging parameters.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::validation::FieldErrors;
use crate::ids;

/// Default page size of list endpoints.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page size of list endpoints.
pub const MAX_LIMIT: u32 = 200;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `future` with `request_id` as the id that envelopes and errors report.
pub async fn with_request_id<F: std::future::Future>(request_id: String, future: F) -> F::Output {
    REQUEST_ID.scope(request_id, future).await
}

/// A new request id (`req_...`).
pub fn new_request_id() -> String {
    ids::new_id(ids::REQUEST)
}

/// The id of the request being served (a fresh one outside a request).
pub fn request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| new_request_id())
}

/// The `meta` object: request id and current time.
pub fn meta() -> Value {
    json!({
        "request_id": request_id(),
        "ts": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    })
}

/// `status` with `{"data": data, "meta": ...}`.
pub fn respond<T: Serialize>(status: StatusCode, data: T) -> Result<Response, ApiError> {
    let data = serde_json::to_value(data)
        .map_err(|err| ApiError::Internal(format!("serializing a response: {err}")))?;
    Ok((status, Json(json!({ "data": data, "meta": meta() }))).into_response())
}

/// 200 with the envelope.
pub fn ok<T: Serialize>(data: T) -> Result<Response, ApiError> {
    respond(StatusCode::OK, data)
}

/// 201 with the envelope.
pub fn created<T: Serialize>(data: T) -> Result<Response, ApiError> {
    respond(StatusCode::CREATED, data)
}

/// 200 with a page of items: `{"data": [...], "meta": {...}, "pagination": {"limit", "offset",
/// "total"}}` (DESIGN.md, "REST API").
pub fn list<T: Serialize>(items: Vec<T>, page: Page, total: u64) -> Result<Response, ApiError> {
    let data = serde_json::to_value(items)
        .map_err(|err| ApiError::Internal(format!("serializing a response: {err}")))?;
    let body = json!({
        "data": data,
        "meta": meta(),
        "pagination": { "limit": page.limit, "offset": page.offset, "total": total },
    });
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// `limit` and `offset` of a list request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Page size, 1 to [`MAX_LIMIT`].
    pub limit: u32,
    /// Items skipped.
    pub offset: u64,
}

impl Page {
    /// Reads `limit` (default 50, 1-200) and `offset` (default 0) from the query, recording
    /// a message in `errors` for each bad one.
    pub fn from_query(query: &HashMap<String, String>, errors: &mut FieldErrors) -> Page {
        let mut page = Page {
            limit: DEFAULT_LIMIT,
            offset: 0,
        };
        if let Some(limit) = query.get("limit") {
            match limit.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => page.limit = n,
                _ => {
                    errors.insert(
                        "limit".into(),
                        format!("must be an integer from 1 to {MAX_LIMIT}"),
                    );
                }
            }
        }
        if let Some(offset) = query.get("offset") {
            match offset.parse::<u64>() {
                Ok(n) if n <= i64::MAX as u64 => page.offset = n,
                _ => {
                    errors.insert("offset".into(), "must be a non-negative integer".into());
                }
            }
        }
        page
    }

    /// Reads the page of a list endpoint that has no other query parameters.
    pub fn only(query: &HashMap<String, String>) -> Result<Page, ApiError> {
        let mut errors = FieldErrors::new();
        let page = Page::from_query(query, &mut errors);
        if errors.is_empty() {
            Ok(page)
        } else {
            Err(ApiError::Validation { fields: errors })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn paging_defaults_and_bounds() {
        assert_eq!(
            Page::only(&query(&[])).expect("defaults"),
            Page {
                limit: 50,
                offset: 0
            }
        );
        assert_eq!(
            Page::only(&query(&[("limit", "200"), ("offset", "7")])).expect("valid"),
            Page {
                limit: 200,
                offset: 7
            }
        );
        let Err(ApiError::Validation { fields }) =
            Page::only(&query(&[("limit", "201"), ("offset", "-1")]))
        else {
            panic!("expected validation error");
        };
        assert!(fields.contains_key("limit") && fields.contains_key("offset"));
    }

    #[tokio::test]
    async fn request_id_follows_the_scope() {
        let id = with_request_id("req_x".into(), async { request_id() }).await;
        assert_eq!(id, "req_x");
        assert!(request_id().starts_with("req_"));
    }
}
