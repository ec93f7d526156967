//! The runtime's one error type.

use std::path::PathBuf;

/// What kind of mistake a plugin found in its input (mirrors the WIT `data-error-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataErrorKind {
    /// Not syntactically valid.
    Malformed,
    /// A value does not fit its column.
    InvalidValue,
    /// The request envelope is wrong.
    InvalidRequest,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The file is missing, not a valid component, or not of the expected world.
    #[error("cannot load plugin {path}: {message}")]
    Load { path: PathBuf, message: String },

    /// The plugin refused its input: the caller's mistake.
    #[error("{message}")]
    Data {
        kind: DataErrorKind,
        row: Option<u32>,
        column: Option<String>,
        message: String,
    },

    /// The engine refused the decoded batch (e.g. a null in a required column).
    #[error(transparent)]
    InvalidBatch(moonlink_engine::EngineError),

    /// The plugin returned a batch that breaks the contract (wrong physical type, ragged
    /// columns, another table): the plugin's fault.
    #[error("plugin returned a malformed batch: {0}")]
    MalformedBatch(String),

    /// The plugin reported a failure of its own (bad settings, upstream gone, ...).
    #[error("plugin error: {0}")]
    Plugin(String),

    /// A capability in the plugin's config cannot be granted (unresolvable address, missing
    /// directory).
    #[error("cannot grant capability: {0}")]
    Capability(String),

    /// The plugin's WIT version cannot express what the host must hand it (a map column to
    /// a plugin built against 0.2). The message names the version.
    #[error("{0}")]
    Incompatible(String),

    #[error("plugin trapped: {0}")]
    Trap(String),

    /// The call ran past the plugin's time limit, computing or blocked in a host call (a
    /// socket that never answers). The instance is discarded.
    #[error("plugin timed out after {ms} ms (its time limit)")]
    Timeout { ms: u64 },

    /// The plugin tried to use more memory than its limit.
    #[error("plugin exceeded its memory limit ({} MiB)", limit_bytes / (1024 * 1024))]
    MemoryLimit { limit_bytes: u64 },

    /// Decoding one request needed more memory than the rest decoder may use: the request is
    /// too large for this server (not malformed, not a plugin bug). HTTP: 413 (or 503 when
    /// the limit is a transient budget); never 500.
    #[error(
        "decoding this request needs more than the decoder's {} MiB memory limit: send the rows in smaller requests",
        limit_bytes / (1024 * 1024)
    )]
    ResourceExhausted { limit_bytes: u64 },
}

impl RuntimeError {
    /// Whether the caller's input, not the plugin or the host, is at fault (a request too
    /// large to decode counts: the caller can split it).
    pub fn is_caller_error(&self) -> bool {
        matches!(
            self,
            RuntimeError::Data { .. }
                | RuntimeError::InvalidBatch(_)
                | RuntimeError::ResourceExhausted { .. }
        )
    }
}
