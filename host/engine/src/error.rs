//! The engine's one error type.

use std::path::PathBuf;

/// Everything that can go wrong inside the engine.
///
/// Variants are split by *who* must act: the caller (bad input, unknown table), or the operator
/// (I/O, catalog, Iceberg). The server maps the first group to 4xx and the rest to 5xx.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No table with this name exists.
    #[error("table '{0}' does not exist")]
    TableNotFound(String),

    /// A table with this name (or Iceberg identifier) already exists.
    #[error("table '{0}' already exists")]
    TableExists(String),

    /// The table definition is unusable (bad name, duplicate column, unknown key column, ...).
    #[error("invalid table definition: {0}")]
    InvalidSchema(String),

    /// A schema change is refused (unknown column, a promotion Iceberg does not allow, a bad
    /// default, ...); nothing was changed.
    #[error("schema change refused: {0}")]
    InvalidSchemaChange(String),

    /// A schema change would break a key column or a partition source (drop it, make it
    /// nullable, change its type); nothing was changed.
    #[error("schema change refused: {0}")]
    KeyColumnChange(String),

    /// A partition spec is refused (unknown transform, a transform the column's type does not
    /// take, a missing column, ...); nothing was created or changed.
    #[error("invalid partitioning: {0}")]
    InvalidPartition(String),

    /// A batch does not fit the table's schema. `row` is 0-based within the batch.
    #[error("{}", describe_invalid_batch(.row, .column, .message))]
    InvalidBatch {
        /// The offending row, if the error is about one.
        row: Option<usize>,
        /// The offending column, if the error is about one.
        column: Option<String>,
        /// What is wrong, for the caller.
        message: String,
    },

    /// The table's schema changed (or it was dropped and recreated) between decoding a batch
    /// and applying it; nothing was written. Retrying decodes against the new schema.
    #[error("table '{0}' changed its schema while the request was being decoded; nothing was written, retry the request")]
    SchemaChanged(String),

    /// The table could not be opened at startup (e.g. its write-ahead log is damaged); the
    /// rest of the engine runs. The reason says what the operator must do.
    #[error("table '{name}' is unavailable: {reason}")]
    TableFailed {
        /// The table's name.
        name: String,
        /// Why it could not be opened.
        reason: String,
    },

    /// Another process holds the data directory.
    #[error("{0}")]
    DataDirLocked(String),

    /// An insert hit keys that already exist; the whole batch was refused.
    #[error("{} key(s) already exist: {}", .rows.len(), .keys.join("; "))]
    KeyConflict {
        /// The conflicting rows (0-based within the batch).
        rows: Vec<usize>,
        /// The conflicting keys, rendered for the caller (same order as `rows`).
        keys: Vec<String>,
    },

    /// The operation is not valid for this table (e.g. an upsert on a table without a key).
    #[error("{0}")]
    OperationNotAllowed(String),

    /// The operation needs something this build does not have yet.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// The engine is shutting down or a background task has died.
    #[error("engine unavailable: {0}")]
    Unavailable(String),

    /// The table's buffer is full (twice `max_buffer_bytes`) and commits did not make room
    /// within `backlog_wait`: the write was refused before anything was logged, retry later.
    #[error("table '{table}' is backlogged: {buffered_bytes} bytes wait for a commit (the last commit error: {last_error}); nothing was written, retry later")]
    Backlogged {
        /// The table.
        table: String,
        /// Arrow bytes buffered when the wait ended.
        buffered_bytes: usize,
        /// Why commits are not draining the buffer, or `none` when they are merely slow.
        last_error: String,
    },

    /// A local file operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A write-ahead-log segment is damaged in a way replay cannot skip (not a torn tail, not
    /// one damaged record followed by a valid one); the table opens failed.
    #[error("write-ahead log is corrupt at {path} offset {offset}: {message}")]
    WalCorrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What is wrong with it.
        message: String,
    },

    /// The catalog failed (a query, the connection, an unexpected answer).
    #[error("catalog error: {0}")]
    Catalog(String),

    /// The catalog `--catalog` names is malformed or unreachable at start. The message names
    /// the flag and never a password.
    #[error("{0}")]
    CatalogUnavailable(String),

    /// The Iceberg identifier is registered in the shared catalog by another moonlink-host (or
    /// another writer): a table has exactly one writer, so it is not created here.
    #[error("Iceberg table '{table}' is already registered in the catalog by {owner}; a table has one writer: create it there, or choose another database/table name")]
    TableRegisteredElsewhere {
        /// `namespace.table`.
        table: String,
        /// Who holds it, for the operator (`moonlink-host <host id>` or another writer).
        owner: String,
    },

    /// Another writer changed the table's metadata pointer first.
    #[error("commit conflict on table '{0}': the metadata pointer moved")]
    CommitConflict(String),

    /// The warehouse `--warehouse` names is malformed, misconfigured or unreachable at start.
    /// The message says which setting is wrong and never carries a secret.
    #[error("{0}")]
    WarehouseUnavailable(String),

    /// The object store under the warehouse failed.
    #[error("object store error: {0}")]
    ObjectStore(#[from] object_store::Error),

    /// Reading or building Iceberg metadata failed.
    #[error("iceberg error: {0}")]
    Iceberg(#[from] iceberg::Error),

    /// An Arrow operation failed.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),

    /// Writing or reading Parquet failed.
    #[error("parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

fn describe_invalid_batch(row: &Option<usize>, column: &Option<String>, message: &str) -> String {
    match (row, column) {
        (Some(r), Some(c)) => format!("row {r}, column '{c}': {message}"),
        (Some(r), None) => format!("row {r}: {message}"),
        (None, Some(c)) => format!("column '{c}': {message}"),
        (None, None) => message.to_string(),
    }
}

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn catalog(e: impl std::fmt::Display) -> Self {
        EngineError::Catalog(e.to_string())
    }

    /// Storage errors that may pass on retry (I/O, the object store, Iceberg reads), as
    /// opposed to bad input or damaged state.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            EngineError::Io { .. } | EngineError::ObjectStore(_) | EngineError::Iceberg(_)
        )
    }

    /// An error about a batch, not tied to a row.
    pub fn invalid_batch(column: Option<&str>, message: impl Into<String>) -> Self {
        EngineError::InvalidBatch {
            row: None,
            column: column.map(str::to_string),
            message: message.into(),
        }
    }
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
