//! Table design routes: `GET /tables/{name}` in full (schema with field ids, partition spec,
//! properties, snapshot history), its alias `GET /schema/{db}/{table}` (Moonlink's route), and
//! schema evolution `POST /tables/{name}/schema`.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use moonlink_engine::{ColumnType, SchemaChange, TableDesign};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ApiError;

use super::body::read_body;
use super::tables::{json_error, table_view};
use super::*;

/// A column of the current schema with its Iceberg field id.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FieldView {
    /// Iceberg field id (stable for the column's life: renames keep it).
    pub(crate) id: i32,
    pub(crate) name: String,
    pub(crate) data_type: String,
    pub(crate) nullable: bool,
    /// The column's default (v3 `initial-default` and `write-default`), Iceberg JSON form.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub(crate) default: Option<Value>,
}

/// One field of the partition spec.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PartitionFieldView {
    /// Partition field name, e.g. `created_at_day`.
    pub(crate) name: String,
    /// Iceberg transform: `identity`, `year`, `month`, `day`, `hour`, `bucket[N]`, `truncate[W]`.
    pub(crate) transform: String,
    /// The source column (null if it was dropped).
    pub(crate) source: Option<String>,
    pub(crate) source_id: i32,
    pub(crate) field_id: i32,
}

/// The partition spec new files are written in.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PartitionSpecView {
    pub(crate) spec_id: i32,
    /// Empty for an unpartitioned table.
    pub(crate) fields: Vec<PartitionFieldView>,
}

/// One snapshot of the table's history.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SnapshotView {
    pub(crate) snapshot_id: i64,
    pub(crate) parent_id: Option<i64>,
    pub(crate) sequence_number: i64,
    pub(crate) timestamp_ms: i64,
    /// `append`, `overwrite`, `delete` or `replace`.
    pub(crate) operation: String,
    pub(crate) schema_id: Option<i32>,
    pub(crate) summary: BTreeMap<String, String>,
}

/// `GET /tables/{name}`: the table as listed, plus its design.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TableDetail {
    #[serde(flatten)]
    pub(crate) table: TableView,
    /// The current Iceberg schema's id.
    pub(crate) schema_id: i32,
    pub(crate) format_version: u8,
    /// The current schema, column by column, with field ids and defaults.
    pub(crate) fields: Vec<FieldView>,
    pub(crate) partition_spec: PartitionSpecView,
    /// Iceberg table properties.
    pub(crate) properties: BTreeMap<String, String>,
    /// Snapshots kept in the metadata, oldest first.
    pub(crate) snapshot_history: Vec<SnapshotView>,
}

pub(super) fn table_detail(state: &AppState, name: &str) -> Result<TableDetail, ApiError> {
    let info = state.engine.table_info(name)?;
    let TableDesign {
        schema_id,
        format_version,
        partition_spec_id,
        partition_fields,
        properties,
        snapshots,
        current_snapshot_id: _,
    } = state.engine.table_design(name)?;
    let schema = &info.schema;
    let fields = schema
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| FieldView {
            id: schema.field_id(i),
            name: c.name.clone(),
            data_type: c.data_type.name(),
            nullable: c.nullable,
            default: schema.default_of(i).cloned(),
        })
        .collect();
    Ok(TableDetail {
        table: table_view(state, &info),
        schema_id,
        format_version,
        fields,
        partition_spec: PartitionSpecView {
            spec_id: partition_spec_id,
            fields: partition_fields
                .into_iter()
                .map(|f| PartitionFieldView {
                    name: f.name,
                    transform: f.transform,
                    source: f.source,
                    source_id: f.source_id,
                    field_id: f.field_id,
                })
                .collect(),
        },
        properties,
        snapshot_history: snapshots
            .into_iter()
            .map(|s| SnapshotView {
                snapshot_id: s.snapshot_id,
                parent_id: s.parent_id,
                sequence_number: s.sequence_number,
                timestamp_ms: s.timestamp_ms,
                operation: s.operation,
                schema_id: s.schema_id,
                summary: s.summary,
            })
            .collect(),
    })
}

/// One table: its state, current schema with field ids, partition spec, properties and
/// snapshot history.
#[utoipa::path(get, path = "/tables/{name}", tag = "tables",
    params(("name" = String, Path, description = "Table name, e.g. `demo.users`", example = "demo.users")),
    responses(
        (status = 200, description = "The table", body = TableDetail),
        (status = 400, description = "Undecodable name", body = ApiError),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError),
        (status = 404, description = "No such table", body = ApiError),
        (status = 503, description = "The table is unavailable", body = ApiError,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub(crate) async fn get_table(
    State(state): State<AppState>,
    TableName(name): TableName,
) -> Result<Json<TableDetail>, ApiError> {
    Ok(Json(table_detail(&state, &name)?))
}

/// The same as `GET /tables/{name}`, by Iceberg namespace and table name (Moonlink's route).
#[utoipa::path(get, path = "/schema/{database}/{table}", tag = "tables",
    params(
        ("database" = String, Path, description = "Iceberg namespace", example = "demo"),
        ("table" = String, Path, description = "Iceberg table name", example = "users"),
    ),
    responses(
        (status = 200, description = "The table", body = TableDetail),
        (status = 400, description = "Undecodable path", body = ApiError),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError),
        (status = 404, description = "No such table", body = ApiError),
        (status = 503, description = "The table is unavailable", body = ApiError,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub(crate) async fn get_schema(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<Json<TableDetail>, ApiError> {
    let Path((database, table)) = path.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("invalid path: {}", e.body_text()),
        )
    })?;
    let name = state
        .engine
        .list_tables()
        .into_iter()
        .find(|t| t.namespace == database && t.table == table)
        .map(|t| t.name)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "table_not_found",
                format!("no table '{table}' in database '{database}'"),
            )
        })?;
    Ok(Json(table_detail(&state, &name)?))
}

/// `{"add": {...}}`: a new column.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddColumn {
    pub(crate) name: String,
    /// A type name as in `POST /tables/{name}`.
    #[schema(example = "int64")]
    pub(crate) data_type: String,
    #[serde(default = "default_true")]
    #[schema(default = true)]
    pub(crate) nullable: bool,
    /// What rows written before the column existed read as, and rows written without a value
    /// (or with null) get: Iceberg's JSON single-value form (numbers, booleans, strings; dates
    /// `YYYY-MM-DD`, timestamps `YYYY-MM-DDTHH:MM:SS`, timestamptz ending `+00:00`, decimals
    /// as strings, binary as hex). Required for a non-nullable column.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub(crate) default: Option<Value>,
}

fn default_true() -> bool {
    true
}

/// `{"rename": {"from": "a", "to": "b"}}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenameColumn {
    pub(crate) from: String,
    pub(crate) to: String,
}

/// `{"widen": {"name": "c", "to": "int64"}}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WidenColumn {
    pub(crate) name: String,
    /// int32 → int64, float32 → float64, decimal(P,S) → decimal(P',S) with P' > P.
    #[schema(example = "int64")]
    pub(crate) to: String,
}

/// One schema change; exactly one key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum SchemaChangeRequest {
    /// Adds a column (a new field id).
    Add(AddColumn),
    /// Drops a column (not a key column or partition source).
    Drop(String),
    /// Renames a column in place (same field id: its data stays).
    Rename(RenameColumn),
    /// Promotes a column's type.
    Widen(WidenColumn),
    /// Makes a column nullable (not a key column).
    Nullable(String),
}

/// The body of `POST /tables/{name}/schema`: the changes, applied in order as one commit.
/// A bare JSON array of changes is accepted too.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[schema(example = json!({"changes": [
    {"add": {"name": "score", "data_type": "int64", "nullable": false, "default": 0}},
    {"rename": {"from": "name", "to": "full_name"}},
    {"widen": {"name": "age", "to": "int64"}},
    {"nullable": "email"},
    {"drop": "legacy"}
]}))]
pub(crate) enum SchemaChangeBody {
    /// `{"changes": [...]}`.
    Wrapped(SchemaChanges),
    /// `[...]`.
    List(Vec<SchemaChangeRequest>),
}

/// `{"changes": [...]}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SchemaChanges {
    pub(crate) changes: Vec<SchemaChangeRequest>,
}

fn parse_type(name: &str, column: &str) -> Result<ColumnType, ApiError> {
    ColumnType::parse(name).map_err(|e| {
        let mut api = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_schema_change",
            e.to_string().replace("invalid table definition: ", ""),
        );
        api.column = Some(column.to_string());
        api
    })
}

/// Changes the table's schema: add (with a default), drop, rename, widen, make nullable, all
/// as one Iceberg metadata commit. Rows accepted before are committed first in the old schema;
/// ingest uses the new schema at once. Checked whole before anything changes.
#[utoipa::path(post, path = "/tables/{name}/schema", tag = "tables",
    params(("name" = String, Path, description = "Table name", example = "demo.users")),
    request_body(content = SchemaChangeBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Changed; the table with its new schema", body = TableDetail),
        (status = 400, description = "Malformed JSON or unknown field", body = ApiError),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError),
        (status = 404, description = "No such table", body = ApiError),
        (status = 409, description = "The change would drop, retype or make nullable a key column or a partition source; nothing changed", body = ApiError),
        (status = 413, description = "Body over --max-body-bytes", body = ApiError),
        (status = 422, description = "The change is refused (unknown column, a narrowing or other type change Iceberg does not allow, a bad default, ...); nothing changed", body = ApiError),
        (status = 503, description = "The table is unavailable, or bodies in flight exceed --max-inflight-bytes", body = ApiError,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub(crate) async fn change_schema(
    State(state): State<AppState>,
    TableName(name): TableName,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<TableDetail>, ApiError> {
    // Unknown table first, as for ingest.
    state.engine.table_info(&name)?;
    let (body, _permit) = read_body(&state, &headers, body).await?;
    let request: SchemaChangeBody = serde_json::from_slice(&body).map_err(json_error)?;
    let requests = match request {
        SchemaChangeBody::Wrapped(SchemaChanges { changes }) | SchemaChangeBody::List(changes) => {
            changes
        }
    };
    let mut changes = Vec::with_capacity(requests.len());
    for change in requests {
        changes.push(match change {
            SchemaChangeRequest::Add(add) => SchemaChange::Add {
                data_type: parse_type(&add.data_type, &add.name)?,
                name: add.name,
                nullable: add.nullable,
                default: add.default,
            },
            SchemaChangeRequest::Drop(name) => SchemaChange::Drop(name),
            SchemaChangeRequest::Rename(r) => SchemaChange::Rename {
                from: r.from,
                to: r.to,
            },
            SchemaChangeRequest::Widen(w) => SchemaChange::Widen {
                to: parse_type(&w.to, &w.name)?,
                name: w.name,
            },
            SchemaChangeRequest::Nullable(name) => SchemaChange::Nullable(name),
        });
    }
    state.engine.change_schema(&name, &changes).await?;
    Ok(Json(table_detail(&state, &name)?))
}

/// The body of `PUT /tables/{name}/partitioning`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"partition_by": ["day(created_at)", "region"]}))]
pub(crate) struct PartitioningRequest {
    /// The new partition fields, as in `POST /tables/{name}` (empty: unpartitioned).
    pub(crate) partition_by: Vec<String>,
}

/// Changes the table's partitioning (partition evolution): files written before keep their
/// spec, new files use the new one, and compaction rewrites old-spec files into it over
/// time. Keyed tables too: upserts and deletes reach rows in files of every spec.
#[utoipa::path(put, path = "/tables/{name}/partitioning", tag = "tables",
    params(("name" = String, Path, description = "Table name", example = "demo.events")),
    request_body(content = PartitioningRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Changed; the table with its new partition spec", body = TableDetail),
        (status = 400, description = "Malformed JSON or unknown field", body = ApiError),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError),
        (status = 404, description = "No such table", body = ApiError),
        (status = 413, description = "Body over --max-body-bytes", body = ApiError),
        (status = 422, description = "A bad partition expression (unknown transform, a transform the column's type does not take, a missing column); nothing changed", body = ApiError),
        (status = 503, description = "The table is unavailable, or bodies in flight exceed --max-inflight-bytes", body = ApiError,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    ))]
pub(crate) async fn change_partitioning(
    State(state): State<AppState>,
    TableName(name): TableName,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<TableDetail>, ApiError> {
    state.engine.table_info(&name)?;
    let (body, _permit) = read_body(&state, &headers, body).await?;
    let request: PartitioningRequest = serde_json::from_slice(&body).map_err(json_error)?;
    state
        .engine
        .change_partitioning(&name, &request.partition_by)
        .await?;
    Ok(Json(table_detail(&state, &name)?))
}
