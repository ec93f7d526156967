//! `POST /ingest/{name}`: decode with the rest_ingest plugin, apply to the engine.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use moonlink_engine::{Durability, Operation};
use moonlink_runtime::{DecodedRequest, RequestMode, RuntimeError};

use crate::error::ApiError;

// Declared here (not in `api/mod.rs`) so the Arrow path stays beside the route that uses it.
#[path = "arrow_body.rs"]
mod arrow_body;
use super::body::*;
use super::*;
use arrow_body::{decode_arrow_stream, is_arrow_stream, ArrowIpcStream};

/// The query parameters `/ingest` documents: their values are checked here, whatever the
/// decoder, so a bad one is refused even when the body names the operation itself.
pub(super) fn check_ingest_parameters(parameters: &[(String, String)]) -> Result<(), ApiError> {
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
pub(super) const SLOW_DECODE_MIN_BYTES: usize = 1024 * 1024;

/// Maps a decoder failure: a body too large for the decoder's memory is the caller's (413); a
/// large body out of time is the machine's load (503); the rest are the decoder's fault (500).
pub(super) fn decode_error(max_body_bytes: usize, e: RuntimeError, body_len: usize) -> ApiError {
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

fn task_failed(e: tokio::task::JoinError) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("decoder task failed: {e}"),
    )
}

/// The operation and request mode named in the query (already checked), for bodies that
/// cannot carry them (Arrow IPC). The first occurrence wins; defaults: insert, async.
fn query_operation_and_mode(parameters: &[(String, String)]) -> (Operation, RequestMode) {
    let value = |key: &str| {
        parameters
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let operation = match value("operation") {
        Some("upsert") => Operation::Upsert,
        Some("delete") => Operation::Delete,
        _ => Operation::Insert,
    };
    let mode = match value("request_mode") {
        Some("sync") => RequestMode::Sync,
        _ => RequestMode::Async,
    };
    (operation, mode)
}

/// Inserts, upserts or deletes rows. The body is decoded by the `rest_ingest` plugin: a JSON
/// envelope, or NDJSON (one row object per line) with `operation`/`request_mode` in the query.
/// An Arrow IPC stream (`application/vnd.apache.arrow.stream`) is decoded natively: its columns
/// are matched to the table's by name and cast only where no value changes (e.g. int32 into
/// int64, dictionary strings, whole-microsecond nanosecond timestamps); `operation` and
/// `request_mode` come from the query. All or nothing: a rejected request writes nothing.
#[utoipa::path(post, path = "/ingest/{name}", tag = "ingest",
    params(
        ("name" = String, Path, description = "Table name", example = "demo.users"),
        ("operation" = Option<IngestOperation>, Query, description = "Default operation (the JSON envelope's `operation` wins); the operation of every row of an NDJSON or Arrow IPC body (default insert)"),
        ("request_mode" = Option<IngestRequestMode>, Query, description = "Default request mode (the JSON envelope's `request_mode` wins); the mode of an NDJSON or Arrow IPC body (default async)"),
    ),
    request_body(content(
        (IngestEnvelope = "application/json"),
        (String = "application/x-ndjson"),
        (ArrowIpcStream = "application/vnd.apache.arrow.stream"),
    )),
    responses(
        (status = 200, description = "Applied (async: in the write-ahead log; sync: committed)", body = IngestResponse),
        (status = 400, description = "Malformed body (JSON, NDJSON or Arrow IPC stream) or bad request fields", body = ApiError),
        (status = 401, description = "Missing or wrong bearer token", body = ApiError),
        (status = 404, description = "No such table", body = ApiError),
        (status = 409, description = "An insert hit existing keys, or the table changed shape meanwhile; nothing written", body = ApiError),
        (status = 413, description = "Body over --max-body-bytes, or too large for the decoder's memory", body = ApiError),
        (status = 422, description = "A value does not fit its column (`row`, `column` say where), or the operation needs a key", body = ApiError),
        (status = 503, description = "Request bodies in flight exceed --max-inflight-bytes, the table is backlogged (its buffer stayed full for --backlog-wait-ms), the decoder ran out of time, or the table is unavailable", body = ApiError,
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
    // Backpressure: while the table's buffer is full the body stays unread in the socket,
    // and after --backlog-wait-ms the request is refused with nothing written.
    state.engine.admit(&name).await?;
    // `_permit` holds the body's bytes in the in-flight budget until decode and apply are done.
    let (body, _permit) = read_body(&state, &headers, body).await?;
    let body_len = body.len();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let decoded = if is_arrow_stream(content_type.as_deref()) {
        // Arrow IPC: decoded natively; operation and mode come from the query.
        let (operation, mode) = query_operation_and_mode(&parameters);
        let batch =
            tokio::task::spawn_blocking(move || decode_arrow_stream(&schema, operation, body))
                .await
                .map_err(task_failed)??;
        DecodedRequest { batch, mode }
    } else {
        let decoder = state.decoder.clone();
        let table = name.clone();
        // Columns with a default may be left out of a row: the batch gets the default.
        let schema = schema.for_decoding();
        tokio::task::spawn_blocking(move || {
            decoder.decode(&table, &schema, content_type.as_deref(), &parameters, &body)
        })
        .await
        .map_err(task_failed)?
        .map_err(|e| decode_error(state.max_body_bytes, e, body_len))?
    };
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
    crate::metrics::record_ingest(&name, operation, receipt.rows as u64, body_len as u64);
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
