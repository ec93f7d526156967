//! moonlink-engine: turns change batches into read-optimized Apache Iceberg v3 tables.
//!
//! The engine knows nothing of WebAssembly or HTTP. Callers hand it validated
//! [`ChangeBatch`]es; it makes them durable in a write-ahead log ([`wal`]), buffers them as
//! Arrow ([`table`]), writes size-tuned Parquet files ([`data_files`]) and publishes Iceberg
//! snapshots through its own commit layer ([`commit`]) and SQLite catalog ([`catalog`]).

pub mod batch;
pub mod catalog;
pub mod commit;
pub mod data_files;
pub mod deletion_vector;
pub mod engine;
pub mod error;
pub mod key_index;
pub mod key_index_file;
pub mod keyed_buffer;
pub mod maintenance;
pub mod schema;
pub mod storage;
pub mod table;
pub mod wal;

pub use batch::{ChangeBatch, Operation};
pub use engine::{CommitInfo, CreateTable, Engine, EngineConfig};
pub use error::{EngineError, Result};
pub use schema::{ColumnSchema, ColumnType, TableSchema};
pub use table::{ApplyReceipt, Durability, TableConfig, TableInfo, TableOptions};
