//! Table routes: create, inspect, list, commit, maintain, truncate, drop; and `/plugins`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use moonlink_engine::{ColumnSchema, ColumnType, CreateTable, TableInfo, TableSchema};
use serde_json::Value;

use crate::error::ApiError;

use super::body::*;
use super::*;

pub(super) fn table_view(state: &AppState, info: &TableInfo) -> TableView {
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
        // Reported by `GET /status` (`crate::status`).
        last_commit_ms: _,
        last_rows_commit_ms: _,
        buffered_bytes: _,
    } = info;
    let initial_copy = state.sources.copy_progress(name).map(|p| InitialCopyView {
        rows_copied: p.rows_copied,
        rows_total: p.rows_total,
        percent: moonlink_pipeline::copy_percent(p.rows_copied, p.rows_total),
        done: p.done,
    });
    // A source that produced the table and no longer does wins over one that does.
    let source = match state.sources.removed_from(name) {
        Some(source) => Some(TableSourceView {
            name: source,
            state: "removed",
        }),
        None => state
            .sources
            .produced_by(name)
            .map(|source| TableSourceView {
                name: source,
                state: "active",
            }),
    };
    TableView {
        initial_copy,
        source,
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
        partition_by: state
            .engine
            .table_design(name)
            .map(|d| d.partition_fields.iter().map(|f| f.expression()).collect())
            .unwrap_or_default(),
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

/// Source plugins and their state, and HTTP-receiver plugins and their counts.
#[utoipa::path(get, path = "/plugins", tag = "plugins",
    responses(
        (status = 200, description = "Every source and receiver plugin", body = PluginList),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError),
    ))]
pub(crate) async fn list_plugins(State(state): State<AppState>) -> Json<PluginList> {
    let plugins = state
        .sources
        .list()
        .into_iter()
        .map(|s| {
            // Destructured whole: a new status field fails to compile until it is documented.
            let moonlink_pipeline::SourceStatus {
                name,
                path,
                state,
                tables,
                removed_tables,
                rows,
                restarts,
                last_error,
                acked_checkpoint,
                copy_progress,
                reported_lag,
            } = s;
            PluginView {
                lag_bytes: reported_lag.and_then(|lag| lag.bytes),
                lag_seconds: reported_lag.and_then(|lag| lag.seconds),
                name,
                path,
                state: state.to_string(),
                tables,
                removed_tables,
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
    Json(PluginList {
        plugins,
        receivers: ReceiverView::list(&state),
    })
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

pub(super) fn json_error(e: serde_json::Error) -> ApiError {
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
        (status = 422, description = "The definition is refused (e.g. an unsupported key column type, or a bad `partition_by`: unknown transform, a transform the column's type does not take, a missing column)", body = ApiError),
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
    let (default_ns, default_table) = moonlink_pipeline::split_table_name(&name);
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
    let options: moonlink_engine::TableOptions = match request.table_config {
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
    let options = moonlink_engine::TableOptions {
        partition_by: request.partition_by,
        ..options
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
                defaults: Default::default(),
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

pub(super) async fn commit(
    state: &AppState,
    name: String,
) -> Result<Json<CommitResponse>, ApiError> {
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
        CommitErrors,
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
        CommitErrors,
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
        CommitErrors,
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
        CommitErrors,
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
