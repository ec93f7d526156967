//! Why a source run stopped with a fault: every failure of the driver is one of these, and
//! each restarts the source from its last durable checkpoint.

use moonlink_engine::EngineError;
use moonlink_runtime::RuntimeError;

/// A fault of a source run (its `Display` is what `last_error` reports). Engine and runtime
/// errors are boxed: they are large, and this travels through every call of the driver.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The source or a transform could not be loaded.
    #[error("{0}")]
    Load(#[source] Box<RuntimeError>),
    /// The plugin's `open` failed.
    #[error("open failed: {0}")]
    Open(#[source] Box<RuntimeError>),
    /// A transform's `open` failed.
    #[error("transform failed to start: {0}")]
    TransformStart(#[source] Box<RuntimeError>),
    /// A transform failed on a batch.
    #[error("transform failed: {0}")]
    Transform(#[source] Box<RuntimeError>),
    /// The plugin's `poll` failed.
    #[error("poll failed: {0}")]
    Poll(#[source] Box<RuntimeError>),
    /// The plugin's `ack` failed.
    #[error("ack failed: {0}")]
    Ack(#[source] Box<RuntimeError>),
    /// A poll touched a table the source did not declare in `open`; nothing of it was applied.
    #[error(
        "the source {action} table '{table}', which it did not declare in open \
         (declared: {declared}); the poll was refused, nothing of it was applied"
    )]
    Undeclared {
        /// What the source did (`wrote to`, `truncated`, ...).
        action: &'static str,
        /// The host table it touched.
        table: String,
        /// The tables it declared, comma-separated.
        declared: String,
    },
    /// A plugin batch does not fit its table.
    #[error("malformed batch for '{table}': {source}")]
    MalformedBatch {
        /// The host table.
        table: String,
        /// Why.
        #[source]
        source: Box<RuntimeError>,
    },
    /// The engine refused an operation on a table.
    #[error("{action} '{table}': {source}")]
    Engine {
        /// What was attempted (`cannot truncate`, `engine refused a batch for`, ...).
        action: &'static str,
        /// The host table.
        table: String,
        /// Why.
        #[source]
        source: Box<EngineError>,
    },
    /// The catalog's acknowledged checkpoint could not be read or written.
    #[error("cannot {action} the acknowledged checkpoint: {source}")]
    AckRecord {
        /// `read` or `record`.
        action: &'static str,
        /// Why.
        #[source]
        source: Box<EngineError>,
    },
    /// The final commit of a finished source failed.
    #[error("final commit failed: {0}")]
    FinalCommit(#[source] Box<EngineError>),
    /// The apply thread stopped (its own error is reported instead when it has one).
    #[error("the apply thread stopped")]
    ApplyStopped,
    /// The apply thread panicked.
    #[error("the apply thread panicked")]
    ApplyPanicked,
}
