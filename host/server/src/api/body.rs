//! Request bodies: read against `--max-body-bytes` (413) and the in-flight budget (503).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;

use crate::budget::BodyPermit;
use crate::error::ApiError;

use super::*;

pub(super) fn too_large(state: &AppState) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!(
            "request body exceeds the limit of {} bytes (--max-body-bytes)",
            state.max_body_bytes
        ),
    )
}

/// How long the rest of a refused request's body is read and thrown away, and how much of it at
/// most: a client still sending then reads the 413/503 instead of a reset connection (hyper
/// closes a connection whose request body was left unread). Larger or slower bodies are cut off.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub(super) const DRAIN_MIN_BYTES: usize = 8 * 1024 * 1024;

/// Reads the rest of a refused request's body in the background, never buffering it, unless
/// the client waits for `100 Continue` (then hyper never asks for the body at all).
pub(super) fn drain_in_background(state: &AppState, headers: &HeaderMap, body: Body) {
    let expects_continue = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if expects_continue {
        return;
    }
    let limit = state.max_body_bytes.max(DRAIN_MIN_BYTES);
    tokio::spawn(async move {
        let drain = async move {
            let mut body = body;
            let mut seen = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    seen = seen.saturating_add(data.len());
                    if seen > limit {
                        break;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
    });
}

/// The 503 for a body the in-flight budget cannot cover.
pub(super) fn overloaded(state: &AppState, headers: &HeaderMap, body: Body) -> ApiError {
    drain_in_background(state, headers, body);
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        format!(
            "request bodies in flight already use {} of the {} bytes allowed (--max-inflight-bytes); retry later",
            state
                .budget
                .total_bytes()
                .saturating_sub(state.budget.available_bytes()),
            state.budget.total_bytes()
        ),
    )
}

/// Reads the body against the size limit (413) and the in-flight budget (503), before and while
/// reading. The returned permit keeps the body's bytes reserved until it is dropped.
pub(super) async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, BodyPermit), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        drain_in_background(state, headers, body);
        return Err(too_large(state));
    }
    let declared = declared.map(|n| n as usize);
    let mut permit = state.budget.empty();
    if let Some(n) = declared {
        if !state.budget.grow_to(&mut permit, n) {
            return Err(overloaded(state, headers, body));
        }
    }
    let mut body = body;
    let mut buffer: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("cannot read request body: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let len = buffer.len().saturating_add(data.len());
        if len > state.max_body_bytes {
            drop(buffer);
            drain_in_background(state, headers, body);
            return Err(too_large(state));
        }
        if !state.budget.grow_to(&mut permit, len) {
            drop(buffer);
            return Err(overloaded(state, headers, body));
        }
        buffer.extend_from_slice(&data);
    }
    Ok((Bytes::from(buffer), permit))
}
