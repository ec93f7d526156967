//! The API's error body: `{"error": code, "message": ..., "row": n|null, "column": s|null}`
//! with the status that says whose mistake it was (4xx: the caller's; 5xx: ours).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use moonlink_engine::EngineError;
use moonlink_runtime::{DataErrorKind, RuntimeError};
use serde::Serialize;

/// The error body of every failed request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ErrorBody)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    /// Machine-readable code: `malformed_body`, `invalid_request`, `invalid_schema`,
    /// `invalid_value`, `table_not_found`, `table_exists`, `table_registered_elsewhere`,
    /// `key_conflict`, `body_too_large`, `overloaded`, `unauthorized`, `unavailable`, `internal`, ...
    #[schema(example = "invalid_value")]
    pub error: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// 0-based row of the request the error is about, if any.
    pub row: Option<u64>,
    /// Column the error is about, if any.
    pub column: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            message: message.into(),
            row: None,
            column: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        );
        if retry {
            // Overload and unavailability are transient: say when to come back.
            tracing::warn!(error = self.error, message = %self.message, "request refused");
            return (
                self.status,
                [(axum::http::header::RETRY_AFTER, "1")],
                Json(self),
            )
                .into_response();
        }
        if self.status.is_server_error() {
            tracing::error!(error = self.error, message = %self.message, "request failed");
        }
        (self.status, Json(self)).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            EngineError::TableNotFound(_) => (StatusCode::NOT_FOUND, "table_not_found"),
            EngineError::TableExists(_) => (StatusCode::CONFLICT, "table_exists"),
            EngineError::TableRegisteredElsewhere { .. } => {
                (StatusCode::CONFLICT, "table_registered_elsewhere")
            }
            EngineError::KeyConflict { .. } => (StatusCode::CONFLICT, "key_conflict"),
            EngineError::SchemaChanged(_) => (StatusCode::CONFLICT, "schema_changed"),
            EngineError::TableFailed { .. } => (StatusCode::SERVICE_UNAVAILABLE, "table_failed"),
            EngineError::InvalidSchema(_) => (StatusCode::BAD_REQUEST, "invalid_schema"),
            EngineError::InvalidSchemaChange(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_schema_change")
            }
            EngineError::KeyColumnChange(_) => (StatusCode::CONFLICT, "key_column"),
            EngineError::InvalidPartition(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_partition")
            }
            EngineError::InvalidBatch { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_value"),
            EngineError::OperationNotAllowed(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "operation_not_allowed")
            }
            EngineError::Unsupported(_) => (StatusCode::NOT_IMPLEMENTED, "not_implemented"),
            EngineError::Backlogged { .. } => (StatusCode::SERVICE_UNAVAILABLE, "backlogged"),
            EngineError::Unavailable(_) | EngineError::CommitConflict(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let mut api = ApiError::new(status, code, message);
        match e {
            EngineError::InvalidBatch { row, column, .. } => {
                api.row = row.map(|r| r as u64);
                api.column = column;
            }
            EngineError::KeyConflict { rows, .. } => api.row = rows.first().map(|r| *r as u64),
            _ => {}
        }
        api
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::Data {
                kind,
                row,
                column,
                message,
            } => {
                let (status, code) = match kind {
                    DataErrorKind::Malformed => (StatusCode::BAD_REQUEST, "malformed_body"),
                    DataErrorKind::InvalidRequest => (StatusCode::BAD_REQUEST, "invalid_request"),
                    DataErrorKind::InvalidValue => {
                        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_value")
                    }
                };
                ApiError {
                    status,
                    error: code,
                    message,
                    row: row.map(u64::from),
                    column,
                }
            }
            RuntimeError::InvalidBatch(engine) => engine.into(),
            // The table has a column the configured decoder's WIT version cannot express:
            // the request cannot be served as sent, and nothing failed inside the host.
            RuntimeError::Incompatible(message) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unsupported_by_plugin",
                message,
            ),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "plugin_error",
                format!("the rest_ingest plugin failed: {other}"),
            ),
        }
    }
}
