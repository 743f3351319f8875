//! `GET /calls/{id}/recording`: a call's stereo WAV, with HTTP range requests (RFC 9110
//! section 14) so that players and browsers can seek: `Range: bytes=a-b` answers 206 with
//! `Content-Range`, an unsatisfiable range 416, `If-Range` and conditional headers as
//! `tower_http::services::ServeFile` implements them.

use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use super::error::ApiError;
use super::extract::Id;
use super::middleware::OrgId;
use super::AppState;

/// Request headers that decide which bytes of the file are sent, passed on to `ServeFile`.
const FORWARDED: [header::HeaderName; 5] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::IF_NONE_MATCH,
];

/// `GET /calls/{id}/recording`: the WAV file (404 `recording_not_found` when there is none).
#[utoipa::path(
    get,
    path = "/api/public/v1/calls/{id}/recording",
    tag = "calls",
    operation_id = "getCallRecording",
    summary = "Download the call's WAV recording (stereo: caller left, agent right)",
    description = "Answers HTTP range requests (RFC 9110) so that players can seek: one `Range: bytes=a-b` is 206 with `Content-Range`, a range outside the file 416 with `Content-Range: bytes */<length>`. `Accept-Ranges: bytes` and `Last-Modified` are sent; `If-Range`, `If-Modified-Since` (304) and `If-Unmodified-Since` (412) are honoured.",
    params(crate::api::openapi::IdParam, crate::api::openapi::RecordingRange),
    responses(
        (status = 200, description = "The whole recording", content_type = "audio/wav", body = crate::api::openapi::Binary,
            headers(("Accept-Ranges" = String, description = "`bytes`"), ("Content-Length" = u64, description = "Bytes of the file"))),
        (status = 206, description = "The bytes of the requested range", content_type = "audio/wav", body = crate::api::openapi::Binary,
            headers(("Content-Range" = String, description = "`bytes <first>-<last>/<length>`"), ("Content-Length" = u64, description = "Bytes sent"))),
        (status = 304, description = "Not modified since `If-Modified-Since`"),
        (status = 412, description = "Modified since `If-Unmodified-Since`"),
        crate::api::openapi::RecordingErrors
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(org): Extension<OrgId>,
    Id(id): Id,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let call = state
        .store
        .get_call(&org.0, &id)
        .await
        .map_err(|err| ApiError::from_store(err, "call", &id))?;
    if call.recording_url.is_none() {
        return Err(ApiError::not_found("recording", &id));
    }
    // The file name comes from the stored id, never from the request path.
    let path = state.config.recordings.dir.join(format!("{}.wav", call.id));
    let length = match tokio::fs::metadata(&path).await {
        Ok(meta) if meta.is_file() => meta.len(),
        Ok(_) => return Err(ApiError::not_found("recording", &id)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            // Written on another node (without a shared directory): served from there.
            let forwarded = headers.contains_key(crate::peers::FORWARDED_BY);
            if let Some(node) = state.peers.recorder_elsewhere(&call).filter(|_| !forwarded) {
                return from_node(&state, node, &call, &headers).await;
            }
            return Err(ApiError::not_found("recording", &id));
        }
        Err(err) => {
            return Err(ApiError::Internal(format!(
                "reading {}: {err}",
                path.display()
            )))
        }
    };

    let mut request = Request::builder()
        .method(Method::GET)
        .uri("/")
        .body(HttpBody::empty())
        .map_err(|err| ApiError::Internal(format!("building the file request: {err}")))?;
    for name in FORWARDED {
        if let Some(value) = headers.get(&name) {
            request.headers_mut().insert(name, value.clone());
        }
    }
    let served = ServeFile::new(&path)
        .oneshot(request)
        .await
        .map_err(|err| ApiError::Internal(format!("reading {}: {err}", path.display())))?;
    if served.status() == StatusCode::RANGE_NOT_SATISFIABLE {
        return Err(ApiError::RangeNotSatisfiable { length });
    }
    let mut response = served.map(HttpBody::new).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{}.wav\"", call.id)) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Response headers of the recording's node that are passed on.
const PASSED_BACK: [header::HeaderName; 8] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::CONTENT_DISPOSITION,
    header::ACCEPT_RANGES,
    header::LAST_MODIFIED,
    header::ETAG,
    header::RETRY_AFTER,
];

/// `call`'s recording as node `node`, which wrote it, serves it: its status, headers and
/// body, streamed through.
async fn from_node(
    state: &AppState,
    node: &str,
    call: &crate::model::Call,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    use crate::peers::PeerError;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let passed: Vec<_> = FORWARDED
        .iter()
        .filter_map(|name| Some((name.clone(), headers.get(name)?.clone())))
        .collect();
    let answer = match state
        .peers
        .recording(&state.store, node, call, authorization, passed)
        .await
    {
        Ok(answer) => answer,
        Err(PeerError::Store(error)) => return Err(error.into()),
        Err(error @ PeerError::Unreachable { .. }) => {
            tracing::warn!(call_id = %call.id, %error, "recording not fetched from its node");
            return Err(ApiError::Unavailable {
                reason: "the node that recorded the call did not answer; retry",
            });
        }
        Err(error) => {
            tracing::info!(call_id = %call.id, %error, "recording's node is gone");
            return Err(ApiError::not_found("recording", &call.id));
        }
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    for name in PASSED_BACK {
        if let Some(value) = answer.headers().get(&name) {
            response = response.header(name, value.clone());
        }
    }
    response
        .body(HttpBody::from_stream(answer.bytes_stream()))
        .map_err(|err| ApiError::Internal(format!("passing the recording on: {err}")))
}
