//! moonlink-engine: turns change batches into read-optimized Apache Iceberg v3 tables.
//!
//! The engine knows nothing of WebAssembly or HTTP. Callers hand it validated
//! [`ChangeBatch`]es; it makes them durable in a write-ahead log, buffers them as Arrow, writes
//! size-tuned Parquet files and commits Iceberg snapshots through its own commit layer.

pub mod batch;
pub mod error;
pub mod schema;

pub use batch::{ChangeBatch, Operation};
pub use error::{EngineError, Result};
pub use schema::{ColumnSchema, ColumnType, TableSchema};
