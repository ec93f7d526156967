//! HTTP routes. Compatible with Moonlink's quick start (`/health`, `/tables/{name}`,
//! `/ingest/{name}`), plus batches, primary keys by name, listing, dropping, explicit commits and
//! a machine-readable error body on every failure.
//!
//! Every route is described by a `#[utoipa::path]` attribute and every body by a type deriving
//! `ToSchema`; the replies are built from those same types, so `GET /openapi.json`
//! (`crate::openapi`) cannot drift from what the server sends.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use moonlink_engine::{
    ColumnSchema, ColumnType, CreateTable, Durability, Engine, Operation, TableInfo, TableOptions,
    TableSchema,
};
use moonlink_runtime::{RequestMode, RestDecoder, RuntimeError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::budget::{BodyPermit, InflightBudget};
use crate::error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub decoder: RestDecoder,
    pub sources: crate::sources::SourceRegistry,
    pub max_body_bytes: usize,
    /// Request body bytes in flight across all requests (`--max-inflight-bytes`).
    pub budget: InflightBudget,
    pub auth_token: Option<String>,
}

pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/tables", get(list_tables))
        .route(
            "/tables/{name}",
            get(get_table).post(create_table).delete(drop_table),
        )
        .route("/tables/{name}/commit", post(commit_table))
        .route("/tables/{name}/flush", post(flush_table))
        .route("/tables/{name}/optimize", post(optimize_table))
        .route("/tables/{name}/truncate", post(truncate_table))
        .route("/ingest/{name}", post(ingest))
        .route("/plugins", get(list_plugins))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi_json))
        .merge(protected)
        .fallback(not_found)
        .with_state(state)
}

/// Compares the presented token with the configured one in constant time: both are hashed
/// (SHA-256) first, so neither the position of the first differing byte nor the token's length
/// shows in the timing.
fn token_matches(presented: Option<&str>, expected: &str) -> bool {
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

// --- reply and request types (the OpenAPI document is generated from these) ----------------

/// `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HealthResponse {
    #[schema(example = "healthy")]
    status: &'static str,
    #[schema(example = "moonlink-rest-api")]
    service: &'static str,
    /// Seconds since the Unix epoch.
    timestamp: u64,
    version: &'static str,
    /// Tables registered.
    tables: usize,
}

/// A column as created and as reported.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ColumnView {
    name: String,
    /// Canonical type name (`int32`, `decimal(10,2)`, `list<string>`, ...).
    data_type: String,
    nullable: bool,
}

/// How far a source's initial copy of the table has come.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InitialCopyView {
    rows_copied: u64,
    rows_total: Option<u64>,
    percent: Option<f64>,
    done: bool,
}

/// Per-table tuning given at creation; keys not set are left out.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub(crate) struct TableConfig {
    /// Parquet bytes data files grow toward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    target_file_size: Option<u64>,
    /// Small files alive before a commit merges them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    merge_fanout: Option<u64>,
    /// Deleted fraction at which a keyed file is rewritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rewrite_deleted_fraction: Option<f64>,
    /// `false` turns background compaction off (`optimize` still works).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    compaction: Option<bool>,
}

impl From<&TableOptions> for TableConfig {
    fn from(o: &TableOptions) -> Self {
        TableConfig {
            target_file_size: o.target_file_size,
            merge_fanout: o.merge_fanout.map(|v| v as u64),
            rewrite_deleted_fraction: o.rewrite_deleted_fraction,
            compaction: o.compaction,
        }
    }
}

/// A table as `GET /tables/{name}` reports it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TableView {
    /// Set while (or after) a source copies the table's existing rows.
    initial_copy: Option<InitialCopyView>,
    name: String,
    /// Iceberg namespace.
    database: String,
    /// Iceberg table name.
    table: String,
    /// The latest committed metadata file.
    metadata_location: String,
    snapshot_id: Option<i64>,
    schema: Vec<ColumnView>,
    primary_key: Vec<String>,
    table_config: TableConfig,
    committed_lsn: u64,
    last_lsn: u64,
    buffered_rows: u64,
    data_files: u64,
    total_records: u64,
    deleted_rows: u64,
    deleted_fraction: f64,
    snapshots: u64,
    avg_file_bytes: u64,
    live_rows: u64,
    index_entries: u64,
    index_bytes: u64,
    /// The last failure of the table's background work, if any.
    last_error: Option<String>,
    /// The table could not be opened (`last_error` says why): it refuses writes (503
    /// `table_failed`) until it is dropped; the other tables serve.
    failed: bool,
}

/// `POST /tables/{name}` reply: the table plus its starting log position.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedTable {
    #[serde(flatten)]
    table: TableView,
    /// Moonlink's create reply carries the table's starting log position.
    lsn: u64,
}

/// `GET /tables`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TableList {
    tables: Vec<TableView>,
}

/// `DELETE /tables/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DropResponse {
    #[schema(example = "ok")]
    status: &'static str,
    dropped: String,
}

/// `POST /tables/{name}/commit` and `/flush`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CommitResponse {
    #[schema(example = "ok")]
    status: &'static str,
    table: String,
    snapshot_id: Option<i64>,
    metadata_location: String,
    committed_lsn: u64,
}

/// `POST /tables/{name}/truncate`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TruncateResponse {
    #[schema(example = "ok")]
    status: &'static str,
    table: String,
    snapshot_id: Option<i64>,
    metadata_location: String,
}

/// `POST /tables/{name}/optimize`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OptimizeResponse {
    #[schema(example = "ok")]
    status: &'static str,
    table: String,
    snapshot_id: Option<i64>,
    metadata_location: String,
    data_files_before: u64,
    data_files_after: u64,
    deleted_rows_before: u64,
    deleted_rows_after: u64,
}

/// `insert` appends; `upsert` replaces rows with the same key; `delete` removes rows by key.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum IngestOperation {
    Insert,
    Upsert,
    Delete,
}

/// `async`: answered once the rows are in the write-ahead log (fsync); `sync`: once the Iceberg
/// snapshot holding them is committed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum IngestRequestMode {
    Async,
    Sync,
}

/// `POST /ingest/{name}` reply.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IngestResponse {
    #[schema(example = "ok")]
    status: &'static str,
    table: String,
    operation: IngestOperation,
    request_mode: IngestRequestMode,
    rows: u64,
    /// Rows whose key matched a live row (replaced by an upsert or removed by a delete).
    matched: u64,
    /// Log position of the request's rows.
    lsn: u64,
    /// Set for `sync` requests: the snapshot that made the rows visible.
    snapshot_id: Option<i64>,
    metadata_location: Option<String>,
}

/// One row: column name → JSON value (dates `"YYYY-MM-DD"`, timestamps ISO 8601, decimals as
/// strings or numbers, binary as base64, lists as arrays).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(value_type = Object)]
#[allow(dead_code)] // documents the rest_ingest decoder's input; the plugin parses it
pub(crate) struct Row(BTreeMap<String, Value>);

/// One row object or an array of row objects.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // documents the rest_ingest decoder's input; the plugin parses it
pub(crate) enum IngestData {
    Row(Row),
    Rows(Vec<Row>),
}

/// The JSON body of `POST /ingest/{name}` (decoded by the `rest_ingest` plugin). `operation`
/// and `request_mode` default to the query parameters of the same name, then to `insert` and
/// `async`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "operation": "upsert",
    "request_mode": "sync",
    "data": [{"id": 1, "name": "Ada", "balance": "10.50"}, {"id": 2, "name": "Grace"}]
}))]
#[allow(dead_code)] // documents the rest_ingest decoder's input; the plugin parses it
pub(crate) struct IngestEnvelope {
    operation: Option<IngestOperation>,
    request_mode: Option<IngestRequestMode>,
    data: IngestData,
    /// Accepted for compatibility and ignored (any value): the table is the one in the path.
    #[serde(default)]
    #[schema(value_type = Value)]
    table: Option<Value>,
}

/// What `GET /plugins` reports for a source.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PluginView {
    name: String,
    path: String,
    /// starting | running | finished | restarting | failed
    state: String,
    tables: Vec<String>,
    rows: u64,
    restarts: u64,
    last_error: Option<String>,
    /// The last checkpoint acknowledged to the plugin (durable in Iceberg).
    acked_checkpoint: Option<String>,
    /// Initial-copy progress per host table.
    copy_progress: BTreeMap<String, CopyProgressView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CopyProgressView {
    table: String,
    rows_copied: u64,
    rows_total: Option<u64>,
    done: bool,
}

/// `GET /plugins`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PluginList {
    plugins: Vec<PluginView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ColumnRequest {
    name: String,
    /// `int16 int32 int64 float32 float64 bool|boolean string|text date32 decimal(p,s)
    /// timestamp timestamptz time binary uuid list<T>`.
    #[schema(example = "int64")]
    data_type: String,
    #[serde(default = "default_nullable")]
    #[schema(default = true)]
    nullable: bool,
}

fn default_nullable() -> bool {
    true
}

/// The body of `POST /tables/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "schema": [
        {"name": "id", "data_type": "int64", "nullable": false},
        {"name": "name", "data_type": "string", "nullable": true},
        {"name": "balance", "data_type": "decimal(12,2)", "nullable": true}
    ],
    "primary_key": ["id"]
}))]
pub(crate) struct CreateTableRequest {
    /// Iceberg namespace; defaults to the part of the name before the last `.` (or `default`).
    database: Option<String>,
    /// Iceberg table name; defaults to the part of the name after the last `.`.
    table: Option<String>,
    schema: Vec<ColumnRequest>,
    /// Key columns (non-nullable); makes `upsert` and `delete` available.
    #[serde(default)]
    primary_key: Vec<String>,
    /// Per-table tuning (`target_file_size`, `merge_fanout`, `rewrite_deleted_fraction`,
    /// `compaction`); other keys (e.g. Moonlink's `mooncake`) are accepted and ignored.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    table_config: Option<Value>,
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
    // `service` and `timestamp` as Moonlink's health reply has them.
    Json(HealthResponse {
        status: "healthy",
        service: "moonlink-rest-api",
        timestamp,
        version: env!("CARGO_PKG_VERSION"),
        tables: state.engine.list_tables().len(),
    })
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

fn table_view(state: &AppState, info: &TableInfo) -> TableView {
    // Destructured whole: a new engine field fails to compile until it is reported (or
    // deliberately left out here).
    let TableInfo {
        name,
        namespace,
        table,
        schema,
        options,
        metadata_location,
        snapshot_id,
        committed_lsn,
        last_lsn,
        buffered_rows,
        data_files,
        total_records,
        deleted_rows,
        snapshots,
        data_bytes,
        index_entries,
        index_bytes,
        last_error,
        failed,
    } = info;
    let initial_copy = state.sources.copy_progress(name).map(|p| InitialCopyView {
        rows_copied: p.rows_copied,
        rows_total: p.rows_total,
        percent: p
            .rows_total
            .filter(|t| *t > 0)
            .map(|t| p.rows_copied.min(t) as f64 * 100.0 / t as f64),
        done: p.done,
    });
    TableView {
        initial_copy,
        name: name.clone(),
        database: namespace.clone(),
        table: table.clone(),
        metadata_location: metadata_location.clone(),
        snapshot_id: *snapshot_id,
        schema: schema
            .columns
            .iter()
            .map(|c| ColumnView {
                name: c.name.clone(),
                data_type: c.data_type.name(),
                nullable: c.nullable,
            })
            .collect(),
        primary_key: schema.primary_key.clone(),
        table_config: TableConfig::from(options),
        committed_lsn: *committed_lsn,
        last_lsn: *last_lsn,
        buffered_rows: *buffered_rows as u64,
        data_files: *data_files,
        total_records: *total_records,
        deleted_rows: *deleted_rows,
        deleted_fraction: if *total_records == 0 {
            0.0
        } else {
            *deleted_rows as f64 / *total_records as f64
        },
        snapshots: *snapshots as u64,
        avg_file_bytes: data_bytes.checked_div(*data_files).unwrap_or(0),
        live_rows: total_records.saturating_sub(*deleted_rows),
        index_entries: *index_entries as u64,
        index_bytes: *index_bytes as u64,
        last_error: last_error.clone(),
        failed: *failed,
    }
}

/// Source plugins and their state.
#[utoipa::path(get, path = "/plugins", tag = "plugins",
    responses(
        (status = 200, description = "Every source plugin", body = PluginList),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError),
    ))]
pub(crate) async fn list_plugins(State(state): State<AppState>) -> Json<PluginList> {
    let plugins = state
        .sources
        .list()
        .into_iter()
        .map(|s| {
            // Destructured whole: a new status field fails to compile until it is documented.
            let crate::sources::SourceStatus {
                name,
                path,
                state,
                tables,
                rows,
                restarts,
                last_error,
                acked_checkpoint,
                copy_progress,
            } = s;
            PluginView {
                name,
                path,
                state: state.to_string(),
                tables,
                rows,
                restarts,
                last_error,
                acked_checkpoint,
                copy_progress: copy_progress
                    .into_iter()
                    .map(|(table, p)| {
                        let moonlink_runtime::CopyProgress {
                            table: progress_table,
                            rows_copied,
                            rows_total,
                            done,
                        } = p;
                        (
                            table,
                            CopyProgressView {
                                table: progress_table,
                                rows_copied,
                                rows_total,
                                done,
                            },
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    Json(PluginList { plugins })
}

/// Every table.
#[utoipa::path(get, path = "/tables", tag = "tables",
    responses(
        (status = 200, description = "Every table", body = TableList),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError),
    ))]
pub(crate) async fn list_tables(State(state): State<AppState>) -> Json<TableList> {
    let tables = state
        .engine
        .list_tables()
        .iter()
        .map(|t| table_view(&state, t))
        .collect();
    Json(TableList { tables })
}

/// One table.
#[utoipa::path(get, path = "/tables/{name}", tag = "tables",
    params(("name" = String, Path, description = "Table name, e.g. `demo.users`", example = "demo.users")),
    responses(
        (status = 200, description = "The table", body = TableView),
        (status = 400, description = "Undecodable name", body = ApiError),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError),
        (status = 404, description = "No such table", body = ApiError),
        (status = 503, description = "The table is unavailable", body = ApiError,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub(crate) async fn get_table(
    State(state): State<AppState>,
    TableName(name): TableName,
) -> Result<Json<TableView>, ApiError> {
    Ok(Json(table_view(&state, &state.engine.table_info(&name)?)))
}

fn too_large(state: &AppState) -> ApiError {
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
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN_MIN_BYTES: usize = 8 * 1024 * 1024;

/// Reads the rest of a refused request's body in the background, never buffering it, unless
/// the client waits for `100 Continue` (then hyper never asks for the body at all).
fn drain_in_background(state: &AppState, headers: &HeaderMap, body: Body) {
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
fn overloaded(state: &AppState, headers: &HeaderMap, body: Body) -> ApiError {
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
async fn read_body(
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

fn json_error(e: serde_json::Error) -> ApiError {
    let code = if e.is_data() {
        "invalid_request"
    } else {
        "malformed_body"
    };
    ApiError::new(
        StatusCode::BAD_REQUEST,
        code,
        format!("invalid JSON body: {e}"),
    )
}

/// Creates a table. `{name}` is how the API names it; `database`/`table` (default: split at the
/// last `.`) are its Iceberg namespace and name.
#[utoipa::path(post, path = "/tables/{name}", tag = "tables",
    params(("name" = String, Path, description = "Table name, e.g. `demo.users`", example = "demo.users")),
    request_body(content = CreateTableRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = CreatedTable),
        (status = 400, description = "Malformed JSON, unknown field, bad type name, bad key, bad name", body = ApiError),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError),
        (status = 409, description = "The table (or its Iceberg identifier) exists", body = ApiError),
        (status = 413, description = "Body over --max-body-bytes", body = ApiError),
        (status = 422, description = "The definition is refused (e.g. an unsupported key column type)", body = ApiError),
        (status = 503, description = "Request bodies in flight exceed --max-inflight-bytes, or the engine is unavailable", body = ApiError,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub(crate) async fn create_table(
    State(state): State<AppState>,
    TableName(name): TableName,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (body, _permit) = read_body(&state, &headers, body).await?;
    let request: CreateTableRequest = serde_json::from_slice(&body).map_err(json_error)?;
    drop(body);
    let (default_ns, default_table) = match name.rsplit_once('.') {
        Some((ns, t)) => (ns.to_string(), t.to_string()),
        None => ("default".to_string(), name.clone()),
    };
    let mut columns = Vec::with_capacity(request.schema.len());
    for c in request.schema {
        let data_type = ColumnType::parse(&c.data_type).map_err(|e| {
            let mut api = ApiError::from(e);
            api.column = Some(c.name.clone());
            api
        })?;
        columns.push(ColumnSchema {
            name: c.name,
            data_type,
            nullable: c.nullable,
        });
    }
    let options = match request.table_config {
        Some(Value::Object(map)) => {
            let known: serde_json::Map<String, Value> = map
                .into_iter()
                .filter(|(k, _)| {
                    matches!(
                        k.as_str(),
                        "target_file_size"
                            | "merge_fanout"
                            | "rewrite_deleted_fraction"
                            | "compaction"
                    )
                })
                .collect();
            serde_json::from_value(Value::Object(known)).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_table_config",
                    format!("invalid table_config: {e}"),
                )
            })?
        }
        Some(Value::Null) | None => Default::default(),
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_table_config",
                "table_config must be an object",
            ))
        }
    };
    let info = state
        .engine
        .create_table(CreateTable {
            options,
            name,
            namespace: request.database.unwrap_or(default_ns),
            table: request.table.unwrap_or(default_table),
            schema: TableSchema {
                columns,
                primary_key: request.primary_key,
                field_ids: Vec::new(),
                element_ids: Vec::new(),
            },
        })
        .await?;
    let created = CreatedTable {
        table: table_view(&state, &info),
        lsn: info.last_lsn + 1,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Drops a table (a JSON body, as Moonlink sends one, is ignored).
#[utoipa::path(delete, path = "/tables/{name}", tag = "tables",
    params(("name" = String, Path, description = "Table name", example = "demo.users")),
    responses(
        (status = 200, description = "Dropped", body = DropResponse),
        (status = 400, description = "Undecodable name", body = ApiError),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError),
        (status = 404, description = "No such table", body = ApiError),
        (status = 503, description = "The engine is unavailable", body = ApiError,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub(crate) async fn drop_table(
    State(state): State<AppState>,
    TableName(name): TableName,
) -> Result<Json<DropResponse>, ApiError> {
    state.engine.drop_table(&name).await?;
    Ok(Json(DropResponse {
        status: "ok",
        dropped: name,
    }))
}

async fn commit(state: &AppState, name: String) -> Result<Json<CommitResponse>, ApiError> {
    let info = state.engine.commit(&name).await?;
    Ok(Json(CommitResponse {
        status: "ok",
        table: name,
        snapshot_id: info.snapshot_id,
        metadata_location: info.metadata_location,
        committed_lsn: info.committed_lsn,
    }))
}

/// Commits every accepted row of the table now.
#[utoipa::path(post, path = "/tables/{name}/commit", tag = "tables",
    params(("name" = String, Path, description = "Table name", example = "demo.users")),
    responses(
        (status = 200, description = "Committed", body = CommitResponse),
        (status = 400, description = "Undecodable name", body = ApiError),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError),
        (status = 404, description = "No such table", body = ApiError),
        (status = 503, description = "The commit could not be made now", body = ApiError,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub(crate) async fn commit_table(
    State(state): State<AppState>,
    TableName(name): TableName,
) -> Result<Json<CommitResponse>, ApiError> {
    commit(&state, name).await
}

/// Same as `commit` (Moonlink's name for it).
#[utoipa::path(post, path = "/tables/{name}/flush", tag = "tables",
    params(("name" = String, Path, description = "Table name", example = "demo.users")),
    responses(
        (status = 200, description = "Committed", body = CommitResponse),
        (status = 400, description = "Undecodable name", body = ApiError),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError),
        (status = 404, description = "No such table", body = ApiError),
        (status = 503, description = "The commit could not be made now", body = ApiError,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub(crate) async fn flush_table(
    State(state): State<AppState>,
    TableName(name): TableName,
) -> Result<Json<CommitResponse>, ApiError> {
    commit(&state, name).await
}

/// Removes every row, committed now.
#[utoipa::path(post, path = "/tables/{name}/truncate", tag = "tables",
    params(("name" = String, Path, description = "Table name", example = "demo.users")),
    responses(
        (status = 200, description = "Truncated", body = TruncateResponse),
        (status = 400, description = "Undecodable name", body = ApiError),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError),
        (status = 404, description = "No such table", body = ApiError),
        (status = 503, description = "The commit could not be made now", body = ApiError,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub(crate) async fn truncate_table(
    State(state): State<AppState>,
    TableName(name): TableName,
) -> Result<Json<TruncateResponse>, ApiError> {
    let info = state.engine.truncate(&name, None).await?;
    Ok(Json(TruncateResponse {
        status: "ok",
        table: name,
        snapshot_id: info.snapshot_id,
        metadata_location: info.metadata_location,
    }))
}

/// Commits now, merging small files and rewriting deletion-heavy ones.
#[utoipa::path(post, path = "/tables/{name}/optimize", tag = "tables",
    params(("name" = String, Path, description = "Table name", example = "demo.users")),
    responses(
        (status = 200, description = "Optimized", body = OptimizeResponse),
        (status = 400, description = "Undecodable name", body = ApiError),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError),
        (status = 404, description = "No such table", body = ApiError),
        (status = 503, description = "The commit could not be made now", body = ApiError,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub(crate) async fn optimize_table(
    State(state): State<AppState>,
    TableName(name): TableName,
) -> Result<Json<OptimizeResponse>, ApiError> {
    let before = state.engine.table_info(&name)?;
    let committed = state.engine.optimize(&name).await?;
    let after = state.engine.table_info(&name)?;
    Ok(Json(OptimizeResponse {
        status: "ok",
        table: name,
        snapshot_id: committed.snapshot_id,
        metadata_location: committed.metadata_location,
        data_files_before: before.data_files,
        data_files_after: after.data_files,
        deleted_rows_before: before.deleted_rows,
        deleted_rows_after: after.deleted_rows,
    }))
}

/// The query parameters `/ingest` documents: their values are checked here, whatever the
/// decoder, so a bad one is refused even when the body names the operation itself.
fn check_ingest_parameters(parameters: &[(String, String)]) -> Result<(), ApiError> {
    for (key, value) in parameters {
        let ok = match key.as_str() {
            "operation" => matches!(value.as_str(), "insert" | "upsert" | "delete"),
            "request_mode" => matches!(value.as_str(), "async" | "sync"),
            _ => true,
        };
        if !ok {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("unknown {key} '{value}' in the query"),
            ));
        }
    }
    Ok(())
}

/// Bodies at least this large may take a decoder past its time limit on a loaded machine (503,
/// retry later); a smaller body that does points at a broken decoder (500).
const SLOW_DECODE_MIN_BYTES: usize = 1024 * 1024;

/// Maps a decoder failure: a body too large for the decoder's memory is the caller's (413); a
/// large body out of time is the machine's load (503); the rest are the decoder's fault (500).
fn decode_error(max_body_bytes: usize, e: RuntimeError, body_len: usize) -> ApiError {
    match &e {
        RuntimeError::ResourceExhausted { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "{e} (this body: {body_len} bytes; the body limit is {max_body_bytes} bytes, --max-body-bytes)"
            ),
        ),
        RuntimeError::Timeout { .. } if body_len >= SLOW_DECODE_MIN_BYTES => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!(
                "decoding this {body_len}-byte body: {e} (--plugin-timeout-ms); retry later or send smaller bodies"
            ),
        ),
        _ => e.into(),
    }
}

/// Inserts, upserts or deletes rows. The body is decoded by the `rest_ingest` plugin: a JSON
/// envelope, or NDJSON (one row object per line) with `operation`/`request_mode` in the query.
/// All or nothing: a rejected request writes nothing.
#[utoipa::path(post, path = "/ingest/{name}", tag = "ingest",
    params(
        ("name" = String, Path, description = "Table name", example = "demo.users"),
        ("operation" = Option<IngestOperation>, Query, description = "Default operation (the JSON envelope's `operation` wins)"),
        ("request_mode" = Option<IngestRequestMode>, Query, description = "Default request mode (the JSON envelope's `request_mode` wins)"),
    ),
    request_body(content(
        (IngestEnvelope = "application/json"),
        (String = "application/x-ndjson"),
    )),
    responses(
        (status = 200, description = "Applied (async: in the write-ahead log; sync: committed)", body = IngestResponse),
        (status = 400, description = "Malformed body or bad request fields", body = ApiError),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError),
        (status = 404, description = "No such table", body = ApiError),
        (status = 409, description = "An insert hit existing keys, or the table changed shape meanwhile; nothing written", body = ApiError),
        (status = 413, description = "Body over --max-body-bytes, or too large for the decoder's memory", body = ApiError),
        (status = 422, description = "A value does not fit its column (`row`, `column` say where), or the operation needs a key", body = ApiError),
        (status = 503, description = "Request bodies in flight exceed --max-inflight-bytes, the decoder ran out of time, or the table is unavailable", body = ApiError,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub(crate) async fn ingest(
    State(state): State<AppState>,
    TableName(name): TableName,
    parameters: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    let Query(parameters) = parameters.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("invalid query: {}", e.body_text()),
        )
    })?;
    check_ingest_parameters(&parameters)?;
    // Unknown table first: a 404 is more useful than a complaint about the body.
    let schema = state.engine.table_schema(&name)?;
    // `_permit` holds the body's bytes in the in-flight budget until decode and apply are done.
    let (body, _permit) = read_body(&state, &headers, body).await?;
    let body_len = body.len();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let decoder = state.decoder.clone();
    let table = name.clone();
    let decoded = tokio::task::spawn_blocking(move || {
        decoder.decode(&table, &schema, content_type.as_deref(), &parameters, &body)
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("decoder task failed: {e}"),
        )
    })?
    .map_err(|e| decode_error(state.max_body_bytes, e, body_len))?;
    let operation = match decoded.batch.operations().first() {
        Some(Operation::Upsert) => IngestOperation::Upsert,
        Some(Operation::Delete) => IngestOperation::Delete,
        Some(Operation::Insert) | None => IngestOperation::Insert,
    };
    let (durability, mode) = match decoded.mode {
        RequestMode::Async => (Durability::Logged, IngestRequestMode::Async),
        RequestMode::Sync => (Durability::Committed, IngestRequestMode::Sync),
    };
    let receipt = state.engine.apply(&name, decoded.batch, durability).await?;
    Ok(Json(IngestResponse {
        status: "ok",
        table: name,
        operation,
        request_mode: mode,
        rows: receipt.rows as u64,
        matched: receipt.matched as u64,
        lsn: receipt.lsn,
        snapshot_id: receipt.snapshot_id,
        metadata_location: receipt.metadata_location,
    }))
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

    #[test]
    fn decoder_failures_say_whose_fault_they_are() {
        let mib = 1024 * 1024;
        let exhausted = decode_error(
            64 * mib,
            RuntimeError::ResourceExhausted {
                limit_bytes: 384 * mib as u64,
            },
            58_000_000,
        );
        assert_eq!(exhausted.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(exhausted.message.contains("--max-body-bytes"));
        let slow = decode_error(64 * mib, RuntimeError::Timeout { ms: 5000 }, 2 * mib);
        assert_eq!(slow.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(slow.message.contains("--plugin-timeout-ms"));
        let looping = decode_error(64 * mib, RuntimeError::Timeout { ms: 5000 }, 4);
        assert_eq!(looping.status, StatusCode::INTERNAL_SERVER_ERROR);
        let broken = decode_error(
            64 * mib,
            RuntimeError::MemoryLimit {
                limit_bytes: 64 * mib as u64,
            },
            3,
        );
        assert_eq!(broken.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn query_parameters_are_checked() {
        let p = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert!(check_ingest_parameters(&p("operation", "upsert")).is_ok());
        assert!(check_ingest_parameters(&p("request_mode", "sync")).is_ok());
        assert!(check_ingest_parameters(&p("other", "x")).is_ok());
        assert_eq!(
            check_ingest_parameters(&p("operation", "merge"))
                .unwrap_err()
                .status,
            StatusCode::BAD_REQUEST
        );
        assert!(check_ingest_parameters(&p("request_mode", "SYNC")).is_err());
    }
}
