//! Request and reply bodies of the HTTP API; the OpenAPI document is generated from these.

use std::collections::BTreeMap;

use moonlink_engine::TableOptions;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoResponses, ToSchema};

use crate::error::ApiError;

// --- reply and request types (the OpenAPI document is generated from these) ----------------

/// `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct HealthResponse {
    /// `healthy`, or `degraded` when a table failed to open, a table's last commit failed, or a
    /// source is restarting or failed (`reasons` says which). The server answers either way.
    #[schema(example = "healthy")]
    pub(crate) status: &'static str,
    /// Why the status is `degraded` (empty when healthy).
    pub(crate) reasons: Vec<String>,
    #[schema(example = "moonlink-rest-api")]
    pub(crate) service: &'static str,
    /// Seconds since the Unix epoch.
    pub(crate) timestamp: u64,
    pub(crate) version: &'static str,
    /// Tables registered.
    pub(crate) tables: usize,
}

/// A column as created and as reported.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ColumnView {
    pub(crate) name: String,
    /// Canonical type name (`int32`, `decimal(10,2)`, `list<string>`, ...).
    pub(crate) data_type: String,
    pub(crate) nullable: bool,
}

/// How far a source's initial copy of the table has come.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InitialCopyView {
    pub(crate) rows_copied: u64,
    pub(crate) rows_total: Option<u64>,
    pub(crate) percent: Option<f64>,
    pub(crate) done: bool,
}

/// Per-table tuning given at creation; keys not set are left out.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub(crate) struct TableConfig {
    /// Parquet bytes data files grow toward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub(crate) target_file_size: Option<u64>,
    /// Small files alive before a commit merges them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub(crate) merge_fanout: Option<u64>,
    /// Deleted fraction at which a keyed file is rewritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rewrite_deleted_fraction: Option<f64>,
    /// `false` turns background compaction off (`optimize` still works).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) compaction: Option<bool>,
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
    pub(crate) initial_copy: Option<InitialCopyView>,
    /// The source plugin that produces the table, if any.
    pub(crate) source: Option<TableSourceView>,
    pub(crate) name: String,
    /// Iceberg namespace.
    pub(crate) database: String,
    /// Iceberg table name.
    pub(crate) table: String,
    /// The latest committed metadata file.
    pub(crate) metadata_location: String,
    pub(crate) snapshot_id: Option<i64>,
    pub(crate) schema: Vec<ColumnView>,
    pub(crate) primary_key: Vec<String>,
    /// The partition spec new files are written in, as `partition_by` takes it (e.g.
    /// `["day(created_at)", "bucket(16, id)"]`; empty: unpartitioned).
    pub(crate) partition_by: Vec<String>,
    pub(crate) table_config: TableConfig,
    pub(crate) committed_lsn: u64,
    pub(crate) last_lsn: u64,
    pub(crate) buffered_rows: u64,
    pub(crate) data_files: u64,
    pub(crate) total_records: u64,
    pub(crate) deleted_rows: u64,
    pub(crate) deleted_fraction: f64,
    pub(crate) snapshots: u64,
    pub(crate) avg_file_bytes: u64,
    pub(crate) live_rows: u64,
    pub(crate) index_entries: u64,
    pub(crate) index_bytes: u64,
    /// The last failure of the table's background work, if any.
    pub(crate) last_error: Option<String>,
    /// The table could not be opened (`last_error` says why): it refuses writes (503
    /// `table_failed`) until it is dropped; the other tables serve.
    pub(crate) failed: bool,
}

/// `POST /tables/{name}` reply: the table plus its starting log position.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedTable {
    #[serde(flatten)]
    pub(crate) table: TableView,
    /// Moonlink's create reply carries the table's starting log position.
    pub(crate) lsn: u64,
}

/// `GET /tables`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TableList {
    pub(crate) tables: Vec<TableView>,
}

/// `DELETE /tables/{name}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DropResponse {
    #[schema(example = "ok")]
    pub(crate) status: &'static str,
    pub(crate) dropped: String,
}

/// `POST /tables/{name}/commit` and `/flush`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CommitResponse {
    #[schema(example = "ok")]
    pub(crate) status: &'static str,
    pub(crate) table: String,
    pub(crate) snapshot_id: Option<i64>,
    pub(crate) metadata_location: String,
    pub(crate) committed_lsn: u64,
}

/// `POST /tables/{name}/truncate`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TruncateResponse {
    #[schema(example = "ok")]
    pub(crate) status: &'static str,
    pub(crate) table: String,
    pub(crate) snapshot_id: Option<i64>,
    pub(crate) metadata_location: String,
}

/// `POST /tables/{name}/optimize`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OptimizeResponse {
    #[schema(example = "ok")]
    pub(crate) status: &'static str,
    pub(crate) table: String,
    pub(crate) snapshot_id: Option<i64>,
    pub(crate) metadata_location: String,
    pub(crate) data_files_before: u64,
    pub(crate) data_files_after: u64,
    pub(crate) deleted_rows_before: u64,
    pub(crate) deleted_rows_after: u64,
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
    pub(crate) status: &'static str,
    pub(crate) table: String,
    pub(crate) operation: IngestOperation,
    pub(crate) request_mode: IngestRequestMode,
    pub(crate) rows: u64,
    /// Rows whose key matched a live row (replaced by an upsert or removed by a delete).
    pub(crate) matched: u64,
    /// Log position of the request's rows.
    pub(crate) lsn: u64,
    /// Set for `sync` requests: the snapshot that made the rows visible.
    pub(crate) snapshot_id: Option<i64>,
    pub(crate) metadata_location: Option<String>,
}

/// One row: column name → JSON value (dates `"YYYY-MM-DD"`, timestamps ISO 8601, decimals as
/// strings or numbers, binary as base64, lists as arrays).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(value_type = Object)]
#[allow(dead_code)] // documents the rest_ingest decoder's input; the plugin parses it
pub(crate) struct Row(pub(crate) BTreeMap<String, Value>);

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
    pub(crate) operation: Option<IngestOperation>,
    pub(crate) request_mode: Option<IngestRequestMode>,
    pub(crate) data: IngestData,
    /// Accepted for compatibility and ignored (any value): the table is the one in the path.
    #[serde(default)]
    #[schema(value_type = Value)]
    pub(crate) table: Option<Value>,
}

/// What `GET /plugins` reports for a source.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PluginView {
    pub(crate) name: String,
    pub(crate) path: String,
    /// starting | running | finished | restarting | failed
    pub(crate) state: String,
    pub(crate) tables: Vec<String>,
    /// Tables it produced before that it no longer declares (e.g. removed from a Postgres
    /// publication): they keep their data and receive nothing more.
    pub(crate) removed_tables: Vec<String>,
    pub(crate) rows: u64,
    pub(crate) restarts: u64,
    pub(crate) last_error: Option<String>,
    /// The last checkpoint acknowledged to the plugin (durable in Iceberg).
    pub(crate) acked_checkpoint: Option<String>,
    /// Initial-copy progress per host table.
    pub(crate) copy_progress: BTreeMap<String, CopyProgressView>,
    /// Upstream log not yet acknowledged, in bytes, when the source measures it (Postgres:
    /// WAL end − acknowledged LSN).
    pub(crate) lag_bytes: Option<u64>,
    /// Age in seconds of the oldest change not yet acknowledged, when the source measures it.
    pub(crate) lag_seconds: Option<f64>,
}

/// Which source produces a table, and whether it still does.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TableSourceView {
    /// The source's name (its config file).
    pub(crate) name: String,
    /// `active`: the source produces the table; `removed`: it did, and no longer declares it
    /// (e.g. the table left the Postgres publication) — the data stays readable, nothing
    /// new arrives.
    pub(crate) state: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CopyProgressView {
    pub(crate) table: String,
    pub(crate) rows_copied: u64,
    pub(crate) rows_total: Option<u64>,
    pub(crate) done: bool,
}

/// `GET /plugins`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PluginList {
    /// Source plugins.
    pub(crate) plugins: Vec<PluginView>,
    /// HTTP-receiver plugins (e.g. otel.wasm).
    pub(crate) receivers: Vec<ReceiverView>,
}

/// An HTTP-receiver plugin: where it is mounted and what it served since the host started.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct ReceiverView {
    pub(crate) name: String,
    pub(crate) path: String,
    /// Its own listener (`listen` in its settings), e.g. `127.0.0.1:4318`.
    pub(crate) listen: Option<String>,
    /// Its mount on the main listener, `/receive/{name}`, when it has no listener of its own.
    pub(crate) route: Option<String>,
    /// The tables it writes.
    pub(crate) tables: Vec<String>,
    /// Requests answered.
    pub(crate) requests: u64,
    /// Requests answered with a status of 400 or more (refused by the plugin or the host).
    pub(crate) errors: u64,
    /// Rows written.
    pub(crate) rows: u64,
    /// The newest refusal by the host, with its status (`503: ...`).
    pub(crate) last_error: Option<String>,
}

impl ReceiverView {
    pub(crate) fn list(state: &super::AppState) -> Vec<ReceiverView> {
        use std::sync::atomic::Ordering;
        state
            .receivers
            .list()
            .iter()
            .map(|r| ReceiverView {
                name: r.name.clone(),
                path: r.path.clone(),
                listen: r.listen.clone(),
                route: r.route.clone(),
                tables: r.tables.clone(),
                requests: r.requests.load(Ordering::Relaxed),
                errors: r.errors.load(Ordering::Relaxed),
                rows: r.rows.load(Ordering::Relaxed),
                last_error: r.last_error.lock().ok().and_then(|e| e.clone()),
            })
            .collect()
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ColumnRequest {
    pub(crate) name: String,
    /// `int16 int32 int64 float32 float64 bool|boolean string|text date32 decimal(p,s)
    /// timestamp timestamptz time binary uuid list<T>`.
    #[schema(example = "int64")]
    pub(crate) data_type: String,
    #[serde(default = "default_nullable")]
    #[schema(default = true)]
    pub(crate) nullable: bool,
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
    pub(crate) database: Option<String>,
    /// Iceberg table name; defaults to the part of the name after the last `.`.
    pub(crate) table: Option<String>,
    pub(crate) schema: Vec<ColumnRequest>,
    /// Key columns (non-nullable); makes `upsert` and `delete` available.
    #[serde(default)]
    pub(crate) primary_key: Vec<String>,
    /// Partition fields: a column (identity), `year(c)`, `month(c)`, `day(c)`, `hour(c)`,
    /// `bucket(N, c)`, `truncate(W, c)`. Each data file then holds one partition, and readers
    /// prune by it.
    #[serde(default)]
    #[schema(example = json!(["day(created_at)", "bucket(16, id)"]))]
    pub(crate) partition_by: Vec<String>,
    /// Per-table tuning (`target_file_size`, `merge_fanout`, `rewrite_deleted_fraction`,
    /// `compaction`); other keys (e.g. Moonlink's `mooncake`) are accepted and ignored.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub(crate) table_config: Option<Value>,
}

/// The errors of the routes that commit a table now (`commit`, `flush`, `truncate`,
/// `optimize`), described once for the OpenAPI document.
#[derive(IntoResponses)]
#[allow(dead_code)] // only describes replies; the routes answer with `ApiError`
pub(crate) enum CommitErrors {
    /// 400.
    #[response(status = 400, description = "Undecodable name")]
    BadName(ApiError),
    /// 401.
    #[response(status = 401, description = "Missing or wrong bearer token")]
    Unauthorized(ApiError),
    /// 404.
    #[response(status = 404, description = "No such table")]
    NotFound(ApiError),
    /// 503.
    #[response(
        status = 503,
        description = "The commit could not be made now",
        headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))
    )]
    Unavailable(ApiError),
}
