//! HTTP routes. Compatible with Moonlink's quick start (`/health`, `/tables/{name}`,
//! `/ingest/{name}`), plus batches, primary keys by name, listing, dropping, explicit commits and
//! a machine-readable error body on every failure.
//!
//! Every route is described by a `#[utoipa::path]` attribute and every body by a type deriving
//! `ToSchema`; the replies are built from those same types, so `GET /openapi.json`
//! (`crate::openapi`) cannot drift from what the server sends.

mod body;
mod design;
pub(crate) mod iceberg_rest;
mod ingest;
mod query;
pub(crate) mod receive;
mod tables;
mod types;

pub(crate) use design::*;
pub(crate) use ingest::*;
pub(crate) use query::*;
pub(crate) use tables::*;
pub(crate) use types::*;

use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use moonlink_engine::Engine;
use moonlink_runtime::RestDecoder;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::budget::InflightBudget;
use crate::error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub decoder: RestDecoder,
    pub sources: moonlink_pipeline::SourceRegistry,
    /// HTTP-receiver plugins (filled as they are opened), for `/plugins` and `/status`.
    pub receivers: receive::ReceiverRegistry,
    pub max_body_bytes: usize,
    /// Request body bytes in flight across all requests (`--max-inflight-bytes`).
    pub budget: InflightBudget,
    pub auth_token: Option<String>,
    /// What an Iceberg client needs to read the warehouse (served Iceberg REST catalog
    /// `config`): S3 endpoint, region, path style. Never credentials.
    pub iceberg_client_config: std::collections::BTreeMap<String, String>,
    /// Real-time SQL over the tables (`POST /query`, and the Postgres wire protocol).
    pub query: moonlink_query::QueryEngine,
}

pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/tables", get(list_tables))
        .route(
            "/tables/{name}",
            get(get_table).post(create_table).delete(drop_table),
        )
        .route("/tables/{name}/schema", post(change_schema))
        .route("/tables/{name}/partitioning", put(change_partitioning))
        .route("/schema/{database}/{table}", get(get_schema))
        .route("/tables/{name}/commit", post(commit_table))
        .route("/tables/{name}/flush", post(flush_table))
        .route("/tables/{name}/optimize", post(optimize_table))
        .route("/tables/{name}/truncate", post(truncate_table))
        .route("/ingest/{name}", post(ingest))
        .route("/query", post(run_query))
        .route("/plugins", get(list_plugins))
        .route("/status", get(crate::status::status))
        .route("/metrics", get(crate::metrics::metrics_text))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(crate::status::ready))
        // The status page asks for the token itself (it never embeds it).
        .route("/", get(crate::status::status_page))
        .route("/openapi.json", get(openapi_json))
        .merge(protected)
        // The Iceberg REST catalog (read side), with its own error shape and the same token.
        .nest("/iceberg", iceberg_rest::router(state.clone()))
        .fallback(not_found)
        // Requests by matched route and status (`/metrics`).
        .layer(middleware::from_fn(crate::metrics::track_requests))
        .with_state(state)
}

/// Compares the presented token with the configured one in constant time: both are hashed
/// (SHA-256) first, so neither the position of the first differing byte nor the token's length
/// shows in the timing.
pub(crate) fn token_matches(presented: Option<&str>, expected: &str) -> bool {
    let expected_digest = Sha256::digest(expected.as_bytes());
    let presented_digest = Sha256::digest(presented.unwrap_or("").as_bytes());
    let equal: bool = expected_digest.ct_eq(&presented_digest).into();
    // A missing header must not match an empty token.
    equal && presented.is_some()
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.auth_token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !token_matches(presented, token) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token (Authorization: Bearer <token>)",
            )
            .into_response();
        }
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// The `{name}` path segment; a segment that cannot be decoded is a 400 with the error body
/// (axum's own rejection is plain text).
pub(crate) struct TableName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for TableName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(name)) => Ok(TableName(name)),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("invalid table name in the path: {}", e.body_text()),
            )),
        }
    }
}

// --- routes ----------------------------------------------------------------------------------

/// Liveness; needs no token.
#[utoipa::path(get, path = "/health", tag = "service", security(()),
    responses((status = 200, description = "The server is up", body = HealthResponse)))]
pub(crate) async fn health(State(state): State<AppState>) -> Json<HealthResponse> {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let reasons = degraded_reasons(&state);
    // `service` and `timestamp` as Moonlink's health reply has them.
    Json(HealthResponse {
        status: if reasons.is_empty() {
            "healthy"
        } else {
            "degraded"
        },
        reasons,
        service: "moonlink-rest-api",
        timestamp,
        version: env!("CARGO_PKG_VERSION"),
        tables: state.engine.list_tables().len(),
    })
}

/// Why the service is degraded: a table failed to open or its commits are failing, a source
/// is restarting after a fault or failed to load. Empty when healthy.
pub(crate) fn degraded_reasons(state: &AppState) -> Vec<String> {
    let tables = state.engine.list_tables();
    let mut reasons = Vec::new();
    for table in &tables {
        match (&table.last_error, table.failed) {
            (Some(e), true) => reasons.push(format!("table '{}' failed to open: {e}", table.name)),
            (Some(e), false) => {
                reasons.push(format!("table '{}' commits are failing: {e}", table.name))
            }
            _ => {}
        }
    }
    for source in state.sources.list() {
        if matches!(
            source.state,
            moonlink_pipeline::SourceState::Restarting | moonlink_pipeline::SourceState::Failed
        ) {
            reasons.push(format!(
                "source '{}' is {}: {}",
                source.name,
                source.state,
                source.last_error.as_deref().unwrap_or("no error recorded")
            ));
        }
    }
    reasons
}

/// This document (OpenAPI 3.1). Needs no token: it describes only the API's shape, never data
/// or settings, and tools fetch it before they hold credentials.
#[utoipa::path(get, path = "/openapi.json", tag = "service", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub(crate) async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document_json(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(token_matches(Some("s3cret"), "s3cret"));
        assert!(!token_matches(Some("s3cre"), "s3cret"), "a prefix");
        assert!(!token_matches(Some("s3cretX"), "s3cret"), "an extension");
        assert!(!token_matches(Some(""), "s3cret"));
        assert!(!token_matches(None, "s3cret"));
        assert!(!token_matches(None, ""), "no header never matches");
    }
}
