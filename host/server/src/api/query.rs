//! `POST /query`: read-only SQL over every table's committed and buffered rows
//! (`moonlink-query`), answered as JSON rows, an Arrow IPC stream or CSV.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use moonlink_query::{output, QueryError};
use serde::Deserialize;
use utoipa::{IntoParams, IntoResponses, ToSchema};

use super::AppState;
use crate::error::ApiError;

/// Largest accepted query body.
const MAX_QUERY_BODY: usize = 1 << 20;

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// A query.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryRequest {
    /// One read-only SQL statement; tables are `namespace.table`.
    #[schema(example = "SELECT count(*) AS n FROM demo.users WHERE balance > 10")]
    pub sql: String,
}

/// Options in the query string.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct QueryParams {
    /// Read this committed snapshot of every table the query names (their buffered rows and
    /// later snapshots left out) instead of the live rows.
    pub snapshot_id: Option<i64>,
}

/// Error replies of `POST /query`.
#[derive(IntoResponses)]
#[allow(dead_code)] // only describes replies; the route answers with `ApiError`
pub(crate) enum QueryErrors {
    /// 400.
    #[response(
        status = 400,
        description = "Malformed body; SQL that does not parse or plan (DataFusion's message: unknown table or column, type error); a statement other than a query (DDL and DML are refused); the query passed --query-memory-bytes or --query-timeout-ms"
    )]
    BadQuery(ApiError),
    /// 401.
    #[response(status = 401, description = "Missing or wrong bearer token")]
    Unauthorized(ApiError),
    /// 404.
    #[response(
        status = 404,
        description = "snapshot_id is not a committed snapshot of a table the query reads"
    )]
    UnknownSnapshot(ApiError),
    /// 406.
    #[response(
        status = 406,
        description = "The result cannot be written as CSV (list columns)"
    )]
    NotAcceptable(ApiError),
    /// 413.
    #[response(status = 413, description = "Body over 1 MiB")]
    TooLarge(ApiError),
    /// 500.
    #[response(status = 500, description = "Reading the table failed")]
    Internal(ApiError),
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let (status, code) = match &e {
            QueryError::Sql(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            QueryError::MemoryExceeded { .. } => (StatusCode::BAD_REQUEST, "query_memory_exceeded"),
            QueryError::Timeout(_) => (StatusCode::BAD_REQUEST, "query_timeout"),
            QueryError::UnknownSnapshot { .. } => (StatusCode::NOT_FOUND, "snapshot_not_found"),
            QueryError::Encode { .. } => (StatusCode::NOT_ACCEPTABLE, "unsupported_format"),
            QueryError::Engine(_) | QueryError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        match e {
            // The engine's errors keep the status the rest of the API gives them.
            QueryError::Engine(inner) => ApiError::from(inner),
            other => ApiError::new(status, code, other.to_string()),
        }
    }
}

/// Runs one read-only SQL statement over the tables' live rows: every row an ingest request
/// was acknowledged for (`async` or `sync`) before the query, committed or still buffered.
/// The reply is a JSON array of row objects; `Accept: application/vnd.apache.arrow.stream`
/// gives an Arrow IPC stream, `Accept: text/csv` CSV with a header line.
#[utoipa::path(post, path = "/query", tag = "query",
    params(QueryParams),
    request_body(content = QueryRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The rows: JSON array of objects (default)", content(
            (Vec<serde_json::Value> = "application/json"),
            (String = "application/vnd.apache.arrow.stream"),
            (String = "text/csv"),
        )),
        QueryErrors,
    ))]
pub(crate) async fn run_query(
    State(state): State<AppState>,
    params: Result<Query<QueryParams>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("invalid query string: {}", e.body_text()),
        )
    })?;
    if body.len() > MAX_QUERY_BODY {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("a query body may hold at most {MAX_QUERY_BODY} bytes"),
        ));
    }
    let request: QueryRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_body",
            format!("expected {{\"sql\": \"...\"}}: {e}"),
        )
    })?;
    let result = state.query.query(&request.sql, params.snapshot_id).await?;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (content_type, bytes) = if accept.contains(ARROW_STREAM) {
        (ARROW_STREAM, output::arrow_stream(&result)?)
    } else if accept.contains("text/csv") {
        ("text/csv", output::csv(&result)?)
    } else {
        ("application/json", output::json_rows(&result)?)
    };
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}
