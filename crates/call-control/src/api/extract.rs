//! Request extractors whose rejections answer in the API's error format.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;

use super::error::ApiError;
use super::validation::FieldErrors;

/// The raw request body (parsed later by [`super::validation::Body`]); too large a body is
/// 413 `payload_too_large`.
#[derive(Debug)]
pub struct JsonBody(pub Bytes);

/// The query string as name/value pairs; a malformed one is a 422 naming `query`.
#[derive(Debug)]
pub struct Params(pub HashMap<String, String>);

/// The `{id}` segment of the path.
#[derive(Debug)]
pub struct Id(pub String);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<JsonBody, ApiError> {
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(JsonBody(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge)
            }
            Err(rejection) => Err(ApiError::InvalidJson {
                message: rejection.body_text(),
            }),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Params, ApiError> {
        match Query::<HashMap<String, String>>::from_request_parts(parts, state).await {
            Ok(Query(map)) => Ok(Params(map)),
            Err(rejection) => {
                let mut fields = FieldErrors::new();
                fields.insert("query".into(), rejection.body_text());
                Err(ApiError::Validation { fields })
            }
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Id, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(Id(id)),
            Err(_) => Err(ApiError::NoRoute {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
            }),
        }
    }
}
