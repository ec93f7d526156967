//! HTTP routes. Compatible with Moonlink's quick start (`/health`, `/tables/{name}`,
//! `/ingest/{name}`), plus batches, primary keys by name, listing, dropping, explicit commits and
//! a machine-readable error body on every failure.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use moonlink_engine::{
    ColumnSchema, ColumnType, CreateTable, Durability, Engine, TableInfo, TableSchema,
};
use moonlink_runtime::{RequestMode, RestDecoder};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub decoder: RestDecoder,
    pub sources: crate::sources::SourceRegistry,
    pub max_body_bytes: usize,
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
        .route("/tables/{name}/flush", post(commit_table))
        .route("/tables/{name}/optimize", post(optimize_table))
        .route("/tables/{name}/truncate", post(truncate_table))
        .route("/ingest/{name}", post(ingest))
        .route("/plugins", get(list_plugins))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        .merge(protected)
        .fallback(not_found)
        .with_state(state)
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.auth_token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(token.as_str()) {
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

async fn health(State(state): State<AppState>) -> Json<Value> {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // `service` and `timestamp` as Moonlink's health reply has them.
    Json(json!({
        "status": "healthy",
        "service": "moonlink-rest-api",
        "timestamp": timestamp,
        "version": env!("CARGO_PKG_VERSION"),
        "tables": state.engine.list_tables().len(),
    }))
}

fn schema_json(schema: &TableSchema) -> Value {
    schema
        .columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "data_type": c.data_type.name(),
                "nullable": c.nullable,
            })
        })
        .collect()
}

fn table_json(state: &AppState, info: &TableInfo) -> Value {
    let copy = state.sources.copy_progress(&info.name).map(|p| {
        json!({
            "rows_copied": p.rows_copied,
            "rows_total": p.rows_total,
            "percent": p.rows_total.filter(|t| *t > 0).map(|t| p.rows_copied.min(t) as f64 * 100.0 / t as f64),
            "done": p.done,
        })
    });
    json!({
        "initial_copy": copy,
        "name": info.name,
        "database": info.namespace,
        "table": info.table,
        "metadata_location": info.metadata_location,
        "snapshot_id": info.snapshot_id,
        "schema": schema_json(&info.schema),
        "primary_key": info.schema.primary_key,
        "table_config": info.options,
        "committed_lsn": info.committed_lsn,
        "last_lsn": info.last_lsn,
        "buffered_rows": info.buffered_rows,
        "data_files": info.data_files,
        "total_records": info.total_records,
        "deleted_rows": info.deleted_rows,
        "deleted_fraction": if info.total_records == 0 { 0.0 } else { info.deleted_rows as f64 / info.total_records as f64 },
        "snapshots": info.snapshots,
        "avg_file_bytes": info.data_bytes.checked_div(info.data_files).unwrap_or(0),
        "live_rows": info.total_records.saturating_sub(info.deleted_rows),
        "index_entries": info.index_entries,
        "index_bytes": info.index_bytes,
        "last_error": info.last_error,
    })
}

async fn list_plugins(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "plugins": state.sources.list() }))
}

async fn list_tables(State(state): State<AppState>) -> Json<Value> {
    let tables: Vec<Value> = state
        .engine
        .list_tables()
        .iter()
        .map(|t| table_json(&state, t))
        .collect();
    Json(json!({ "tables": tables }))
}

async fn get_table(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(table_json(&state, &state.engine.table_info(&name)?)))
}

/// Reads the body, enforcing the size limit with a 413 before and while reading.
async fn read_body(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "request body exceeds the limit of {} bytes (--max-body-bytes)",
                state.max_body_bytes
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, state.max_body_bytes)
        .await
        .map_err(|e| {
            let is_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if is_limit {
                too_large()
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("cannot read request body: {e}"),
                )
            }
        })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnRequest {
    name: String,
    data_type: String,
    #[serde(default = "default_nullable")]
    nullable: bool,
}

fn default_nullable() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct CreateTableRequest {
    database: Option<String>,
    table: Option<String>,
    schema: Vec<ColumnRequest>,
    #[serde(default)]
    primary_key: Vec<String>,
    /// Per-table tuning (`target_file_size`, `merge_fanout`, `rewrite_deleted_fraction`,
    /// `compaction`); other keys (e.g. Moonlink's) are accepted and ignored.
    #[serde(default)]
    table_config: Option<Value>,
}

fn json_error(e: serde_json::Error) -> ApiError {
    let (status, code) = if e.is_data() {
        (StatusCode::BAD_REQUEST, "invalid_request")
    } else {
        (StatusCode::BAD_REQUEST, "malformed_body")
    };
    ApiError::new(status, code, format!("invalid JSON body: {e}"))
}

async fn create_table(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&state, &headers, body).await?;
    let request: CreateTableRequest = serde_json::from_slice(&body).map_err(json_error)?;
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
    let mut body = table_json(&state, &info);
    // Moonlink's create reply carries the table's starting log position.
    body["lsn"] = json!(info.last_lsn + 1);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn drop_table(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.engine.drop_table(&name).await?;
    Ok(Json(json!({ "status": "ok", "dropped": name })))
}

async fn commit_table(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let info = state.engine.commit(&name).await?;
    Ok(Json(json!({
        "status": "ok",
        "table": name,
        "snapshot_id": info.snapshot_id,
        "metadata_location": info.metadata_location,
        "committed_lsn": info.committed_lsn,
    })))
}

async fn truncate_table(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let info = state.engine.truncate(&name, None).await?;
    Ok(Json(json!({
        "status": "ok",
        "table": name,
        "snapshot_id": info.snapshot_id,
        "metadata_location": info.metadata_location,
    })))
}

async fn optimize_table(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let before = state.engine.table_info(&name)?;
    let committed = state.engine.optimize(&name).await?;
    let after = state.engine.table_info(&name)?;
    Ok(Json(json!({
        "status": "ok",
        "table": name,
        "snapshot_id": committed.snapshot_id,
        "metadata_location": committed.metadata_location,
        "data_files_before": before.data_files,
        "data_files_after": after.data_files,
        "deleted_rows_before": before.deleted_rows,
        "deleted_rows_after": after.deleted_rows,
    })))
}

async fn ingest(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(parameters): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    // Unknown table first: a 404 is more useful than a complaint about the body.
    let schema = state.engine.table_schema(&name)?;
    let body = read_body(&state, &headers, body).await?;
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
    })??;
    let operation = decoded
        .batch
        .operations()
        .first()
        .map(|op| format!("{op:?}").to_lowercase())
        .unwrap_or_else(|| "insert".into());
    let (durability, mode) = match decoded.mode {
        RequestMode::Async => (Durability::Logged, "async"),
        RequestMode::Sync => (Durability::Committed, "sync"),
    };
    let receipt = state.engine.apply(&name, decoded.batch, durability).await?;
    Ok(Json(json!({
        "status": "ok",
        "table": name,
        "operation": operation,
        "request_mode": mode,
        "rows": receipt.rows,
        "matched": receipt.matched,
        "lsn": receipt.lsn,
        "snapshot_id": receipt.snapshot_id,
        "metadata_location": receipt.metadata_location,
    })))
}
