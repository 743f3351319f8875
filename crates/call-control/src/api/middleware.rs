//! Request pipeline: request id + metrics (every request), bearer authentication and per-key
//! rate limiting (API routes), and `X-Idempotency-Key` replay (POST API routes).

use std::sync::Arc;
use std::time::Instant;

use axum::body::{to_bytes, Body};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, Utc};
use dashmap::DashSet;
use tracing::Instrument;

use super::envelope;
use super::error::ApiError;
use super::validation::FieldErrors;
use super::AppState;
use sha2::{Digest, Sha256};

use crate::store::{KeyCheck, Store, StoredResponse};

/// Header carrying a client's idempotency key on POST requests.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("x-idempotency-key");
/// Header set on a response replayed from an earlier request with the same idempotency key.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Header carrying `meta.request_id` on every response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest accepted idempotency key.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Largest response body kept for idempotent replay.
const MAX_STORED_BODY: usize = 1 << 20;
/// Largest request body read to fingerprint a request with an idempotency key (axum's
/// default body limit, which the handlers apply too).
const MAX_REQUEST_BODY: usize = 2 << 20;

/// The organisation of the authenticated API key (a request extension set by [`authenticate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgId(pub String);

/// The id of the authenticated API key's record (`key_...`, never the secret; a request
/// extension set by [`authenticate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyId(pub String);

/// The `X-Idempotency-Key` of the request being served and the request's fingerprint (a
/// request extension set by [`idempotency`]), for handlers that keep their response in the
/// transaction that creates what they create (`POST /calls` stores it with the call, before
/// the call is dialled), so that no crash can leave the object made and the key free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// The key.
    pub key: String,
    /// [`fingerprint`] of the request.
    pub fingerprint: String,
}

/// State of the idempotency middleware: the store and the keys of requests being served.
#[derive(Clone)]
pub struct Idempotency {
    store: Store,
    in_flight: Arc<DashSet<(String, String)>>,
}

impl Idempotency {
    /// Idempotency over `store`.
    pub fn new(store: Store) -> Idempotency {
        Idempotency {
            store,
            in_flight: Arc::new(DashSet::new()),
        }
    }
}

/// Gives the request an id (`meta.request_id`, `X-Request-Id`, the tracing span) and counts it
/// in the metrics by matched route and status.
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let request_id = envelope::new_request_id();
    let span =
        tracing::info_span!("http", request_id = %request_id, method = %method, route = %route);
    let mut response = envelope::with_request_id(request_id.clone(), next.run(request))
        .instrument(span)
        .await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let status = response.status().as_u16();
    state
        .metrics
        .record_http(method.as_str(), &route, status, started.elapsed());
    response
}

/// Checks `Authorization: Bearer <key>` (401 `unauthorized`), counts the request against the
/// key's rate limit (429 `rate_limited`), and stores the key's organisation as [`OrgId`] and
/// the key's id as [`ApiKeyId`].
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = bearer_key(request.headers()).ok_or(ApiError::Unauthorized)?;
    let (key_id, org_id) = match state.store.check_api_key(&key).await? {
        KeyCheck::Valid { key_id, org_id } => (key_id, org_id),
        KeyCheck::Revoked { key_id } => return Err(ApiError::KeyRevoked { key_id }),
        KeyCheck::Unknown => return Err(ApiError::Unauthorized),
    };
    let now = Utc::now();
    let rate = state
        .rate_limiter
        .check(&key, now)
        .map_err(|limited| ApiError::RateLimited {
            limit: limited.limit,
            reset_at: limited.reset_at,
            now,
        })?;
    request.extensions_mut().insert(OrgId(org_id));
    request.extensions_mut().insert(ApiKeyId(key_id));
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-ratelimit-limit", rate.limit.to_string()),
        ("x-ratelimit-remaining", rate.remaining.to_string()),
        (
            "x-ratelimit-reset",
            rate.reset_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        ),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    Ok(response)
}

/// `X-Idempotency-Key` on POST, as payment APIs do it. The key is scoped to the organisation
/// and remembers the request it answered (method, path and body, by [`fingerprint`]):
///
/// - the same key with the same request replays the kept status and body
///   (`Idempotent-Replayed: true`) and creates nothing;
/// - the same key with a different request is refused (422 `idempotency_key_reused`);
/// - only a success (2xx) is kept: a request refused (validation, authorisation, credits, a
///   missing object, ...) or failed (5xx) keeps nothing, so a corrected retry with the same
///   key is served;
/// - a key still being served answers 409 `idempotency_key_in_use`, until the handler has
///   kept its response itself ([`IdempotencyClaim`]: `POST /calls` keeps it with the call,
///   before dialling): from then on a retry replays it, even if this process dies before
///   answering.
pub async fn idempotency(
    State(idem): State<Idempotency>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if request.method() != Method::POST {
        return Ok(next.run(request).await);
    }
    let Some(raw_key) = request.headers().get(&IDEMPOTENCY_KEY) else {
        return Ok(next.run(request).await);
    };
    let key = valid_idempotency_key(raw_key)?;
    let org = request
        .extensions()
        .get::<OrgId>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("idempotency before authentication".into()))?;
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, MAX_REQUEST_BODY)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    let path = parts.uri.path().to_owned();
    let fingerprint = fingerprint(parts.method.as_str(), &path, &bytes);
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(IdempotencyClaim {
        key: key.clone(),
        fingerprint: fingerprint.clone(),
    });

    if let Some(kept) = kept_response(&idem.store, &org.0, &key, &path).await? {
        return answer_kept(kept, &key, &fingerprint);
    }
    let slot = (org.0.clone(), key.clone());
    if !idem.in_flight.insert(slot.clone()) {
        return Err(ApiError::Conflict {
            code: "idempotency_key_in_use",
            message: "a request with this idempotency key is still being served".into(),
        });
    }
    let _guard = InFlightGuard {
        set: &idem.in_flight,
        slot,
    };
    // A request that finished between the lookup and the insert above.
    if let Some(kept) = kept_response(&idem.store, &org.0, &key, &path).await? {
        return answer_kept(kept, &key, &fingerprint);
    }
    let response = next.run(request).await;
    let status = response.status();
    if !status.is_success() {
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, usize::MAX)
        .await
        .map_err(|err| ApiError::Internal(format!("buffering a response: {err}")))?;
    if bytes.len() > MAX_STORED_BODY {
        tracing::warn!(
            len = bytes.len(),
            "response too large to keep for idempotent replay"
        );
    } else if let Err(err) = idem
        .store
        .idempotency_put(
            &org.0,
            &key,
            &fingerprint,
            status.as_u16(),
            &String::from_utf8_lossy(&bytes),
            Utc::now(),
        )
        .await
    {
        tracing::warn!(error = %err, "could not store an idempotent response");
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// The response kept for `key`; rows kept before fingerprints existed were stored under
/// `POST <path> <key>` and are found there.
async fn kept_response(
    store: &Store,
    org_id: &str,
    key: &str,
    path: &str,
) -> Result<Option<StoredResponse>, ApiError> {
    let now = Utc::now();
    if let Some(kept) = store.idempotency_get(org_id, key, now).await? {
        return Ok(Some(kept));
    }
    Ok(store
        .idempotency_get(org_id, &format!("POST {path} {key}"), now)
        .await?)
}

/// Replays `kept` if it answered the request with `fingerprint`, or refuses the reuse.
fn answer_kept(kept: StoredResponse, key: &str, fingerprint: &str) -> Result<Response, ApiError> {
    match &kept.fingerprint {
        Some(theirs) if theirs != fingerprint => Err(ApiError::IdempotencyKeyReused {
            key: key.to_owned(),
        }),
        _ => Ok(replay(kept.status, kept.body)),
    }
}

/// What makes two requests "the same" for an idempotency key: SHA-256 over the method, the
/// path and the body (a JSON body with its object keys sorted, so that key order and
/// whitespace do not count; any other body byte for byte), hex-encoded.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update(b" ");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    if body.iter().all(u8::is_ascii_whitespace) {
        // An empty body and `{}` ask for the same thing.
        hasher.update(b"{}");
    } else {
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(value) => hasher.update(canonical_json(&value).as_bytes()),
            Err(_) => hasher.update(body),
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// `value` as compact JSON with every object's keys in sorted order.
fn canonical_json(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|key| {
                    format!(
                        "{}:{}",
                        Value::String(key.clone()),
                        canonical_json(&map[key.as_str()])
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

struct InFlightGuard<'a> {
    set: &'a DashSet<(String, String)>,
    slot: (String, String),
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.set.remove(&self.slot);
    }
}

fn replay(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

fn valid_idempotency_key(value: &HeaderValue) -> Result<String, ApiError> {
    let key = value.to_str().ok().map(str::trim).unwrap_or_default();
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_LEN
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        let mut fields = FieldErrors::new();
        fields.insert(
            "X-Idempotency-Key".into(),
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters"),
        );
        return Err(ApiError::Validation { fields });
    }
    Ok(key.to_owned())
}

/// The key of `Authorization: Bearer <key>` (scheme case-insensitive), if well formed.
fn bearer_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    if !scheme.eq_ignore_ascii_case("bearer")
        || key.is_empty()
        || key.len() > 256
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return None;
    }
    Some(key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("ascii"),
        );
        headers
    }

    #[test]
    fn bearer_keys() {
        assert_eq!(bearer_key(&auth("Bearer sk_1")).as_deref(), Some("sk_1"));
        assert_eq!(bearer_key(&auth("bearer  sk_1 ")).as_deref(), Some("sk_1"));
        assert_eq!(bearer_key(&auth("Basic sk_1")), None);
        assert_eq!(bearer_key(&auth("Bearer")), None);
        assert_eq!(bearer_key(&auth("Bearer a b")), None);
        assert_eq!(bearer_key(&HeaderMap::new()), None);
    }

    #[test]
    fn fingerprints_ignore_key_order_and_whitespace_only() {
        let a = fingerprint("POST", "/x", br#"{"a": 1, "b": {"c": [1, 2], "d": null}}"#);
        let b = fingerprint("POST", "/x", br#"{"b":{"d":null,"c":[1,2]},"a":1}"#);
        assert_eq!(a, b);
        assert_ne!(
            a,
            fingerprint("POST", "/x", br#"{"a": 2, "b": {"c": [1, 2], "d": null}}"#)
        );
        assert_ne!(
            a,
            fingerprint("POST", "/y", br#"{"a": 1, "b": {"c": [1, 2], "d": null}}"#)
        );
        assert_ne!(
            fingerprint("POST", "/x", br#"{"c": [1, 2]}"#),
            fingerprint("POST", "/x", br#"{"c": [2, 1]}"#)
        );
        assert_eq!(
            fingerprint("POST", "/x", b""),
            fingerprint("POST", "/x", b"{}")
        );
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn idempotency_keys() {
        assert!(valid_idempotency_key(&HeaderValue::from_static("abc-1")).is_ok());
        assert!(valid_idempotency_key(&HeaderValue::from_static("")).is_err());
        assert!(valid_idempotency_key(&HeaderValue::from_static("a b")).is_err());
        let long = "k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1);
        assert!(valid_idempotency_key(&HeaderValue::from_str(&long).expect("ascii")).is_err());
    }
}
