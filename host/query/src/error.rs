//! The crate's one error type.

use std::time::Duration;

use datafusion::error::DataFusionError;

/// Why a query failed; [`QueryError::is_client_error`] tells the caller's mistakes apart.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL is wrong: syntax, an unknown table or column, a type error, or a statement
    /// other than a query (DDL and DML are refused: queries are read-only). DataFusion's
    /// message.
    #[error("{0}")]
    Sql(String),
    /// The query needed more memory than `--query-memory-bytes` allows.
    #[error("query exceeded the memory limit of {limit} bytes: {message}")]
    MemoryExceeded {
        /// The per-query limit.
        limit: usize,
        /// What ran out, as DataFusion reports it.
        message: String,
    },
    /// The query ran longer than the timeout and was cancelled.
    #[error("query cancelled after {0:?} (--query-timeout-ms)")]
    Timeout(Duration),
    /// The snapshot asked for is not a snapshot of a table the query reads.
    #[error("snapshot {snapshot_id} is not a committed snapshot of table '{table}'")]
    UnknownSnapshot {
        /// The snapshot id asked for.
        snapshot_id: i64,
        /// The table that does not have it.
        table: String,
    },
    /// The result cannot be written in the format asked for (e.g. a list column as CSV).
    #[error("cannot encode the result as {format}: {message}")]
    Encode {
        /// The output format.
        format: &'static str,
        /// Why not.
        message: String,
    },
    /// Reading the table failed (storage, a damaged file): not the caller's fault.
    #[error("reading the table failed: {0}")]
    Engine(#[from] moonlink_engine::EngineError),
    /// Anything else DataFusion reported during execution that is not the caller's fault.
    #[error("query execution failed: {0}")]
    Internal(String),
}

impl QueryError {
    /// True when the caller's input caused the error (HTTP 4xx).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, QueryError::Engine(_) | QueryError::Internal(_))
    }

    /// Classifies a DataFusion error: running out of memory, an internal failure (I/O, a
    /// damaged file), or — everything else — a problem with the SQL.
    pub(crate) fn from_datafusion(e: DataFusionError, memory_limit: usize) -> QueryError {
        let message = e.to_string();
        match e.find_root() {
            DataFusionError::ResourcesExhausted(m) => QueryError::MemoryExceeded {
                limit: memory_limit,
                message: m.clone(),
            },
            DataFusionError::External(inner) => match inner.downcast_ref::<QueryError>() {
                Some(QueryError::UnknownSnapshot { snapshot_id, table }) => {
                    QueryError::UnknownSnapshot {
                        snapshot_id: *snapshot_id,
                        table: table.clone(),
                    }
                }
                _ => QueryError::Internal(message),
            },
            DataFusionError::IoError(_)
            | DataFusionError::ObjectStore(_)
            | DataFusionError::ParquetError(_)
            | DataFusionError::Internal(_) => QueryError::Internal(message),
            _ => QueryError::Sql(message),
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, QueryError>;
