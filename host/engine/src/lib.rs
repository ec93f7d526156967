//! moonlink-engine: turns change batches into read-optimized Apache Iceberg v3 tables.
//!
//! The engine knows nothing of WebAssembly or HTTP. Callers hand it validated
//! [`ChangeBatch`]es; it makes them durable in a write-ahead log, buffers them as Arrow,
//! writes size-tuned Parquet files to a local or S3 warehouse (`storage/`) and publishes
//! Iceberg snapshots through its own commit layer and a catalog (SQLite, Postgres or Glue). The public API is [`Engine`] and the types it takes and returns;
//! [`inspect`] reads a committed table back without the engine.
//!
//! # A row, from `apply` to a Parquet file
//!
//! 1. [`ChangeBatch::from_columns`] checks Arrow columns against the table's [`TableSchema`]
//!    (types, nulls, and every value a commit would refuse): a batch that exists can be
//!    committed. Each row carries an [`Operation`].
//! 2. [`Engine::apply`] finds the table; the table refuses a batch whose shape no longer matches
//!    its schema ([`EngineError::SchemaChanged`]) and, on a keyed table, inserts of keys that
//!    exist ([`EngineError::KeyConflict`], nothing written). Then, under the buffer lock, the
//!    batch gets the next LSN, is appended to the write-ahead log (`wal.rs`; LSN order is log
//!    order) and buffered as Arrow.
//! 3. `apply` returns when the batch is as durable as its [`Durability`] asks: `Logged` after the
//!    log's group fsync, `Committed` once a snapshot contains its LSN.
//! 4. The commit loop (`table/commit_loop.rs`: on [`TableConfig::commit_interval`], when the
//!    buffer passes [`TableConfig::max_buffer_bytes`], or on [`Engine::commit`]) takes the
//!    buffer, writes one Parquet file (`data_files.rs`, Iceberg field ids in the Arrow
//!    metadata; small files of append-only tables are merged into it), writes manifests and a
//!    new metadata file (`commit.rs`) and swaps the catalog pointer (`catalog/`,
//!    compare-and-swap; a lost swap rebases onto the other writer's snapshot, `table/rebase.rs`). The snapshot summary records the last LSN it contains
//!    ([`inspect::COMMITTED_LSN_SUMMARY_KEY`]); log segments at or below it are deleted, and a
//!    restart replays the log past it.
//!
//! # A delete, to a deletion vector
//!
//! On a keyed table, `apply` hashes a [`Operation::Delete`] row's key under the table's secret
//! and looks it up in the key index (`key_index.rs`, `keyed_buffer.rs`). A key still in the
//! buffer is killed there: the row never reaches Parquet. A key in a committed data file
//! becomes a position in that file's pending deletion vector. The next commit merges it with
//! the file's committed vector and writes one Puffin `deletion-vector-v1` blob per file
//! (`deletion_vector.rs`); the snapshot replaces the file's old vector with the new one. An
//! upsert is a delete of the old row plus an insert. Each keyed data file has a key-index file
//! in the local cache (`key_index_file.rs`) so a restart reads no Parquet to rebuild the index.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//!
//! use arrow_array::{ArrayRef, Int64Array, StringArray};
//! use moonlink_engine::{
//!     ChangeBatch, ColumnSchema, ColumnType, CreateTable, Durability, Engine, EngineConfig,
//!     Operation, TableConfig, TableSchema,
//! };
//!
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> moonlink_engine::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let data_dir = dir.path().to_path_buf();
//! let engine = Engine::open(EngineConfig { data_dir, table: TableConfig::default(), catalog: None }).await?;
//!
//! let column = |name: &str, data_type, nullable| ColumnSchema {
//!     name: name.into(),
//!     data_type,
//!     nullable,
//! };
//! let schema = TableSchema::new(
//!     vec![column("id", ColumnType::Int64, false), column("name", ColumnType::Utf8, true)],
//!     vec!["id".into()],
//! );
//! engine
//!     .create_table(CreateTable {
//!         name: "demo.users".into(),
//!         namespace: "demo".into(),
//!         table: "users".into(),
//!         schema: schema.clone(),
//!         options: Default::default(),
//!     })
//!     .await?;
//!
//! let batch = ChangeBatch::from_columns(
//!     &schema,
//!     vec![Operation::Upsert, Operation::Upsert],
//!     vec![
//!         ("id".into(), Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
//!         ("name".into(), Arc::new(StringArray::from(vec!["ada", "bob"])) as ArrayRef),
//!     ],
//! )?;
//! // Returns once a snapshot contains the rows.
//! let receipt = engine.apply("demo.users", batch, Durability::Committed).await?;
//! assert!(receipt.snapshot_id.is_some());
//! engine.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod batch;
mod catalog;
mod commit;
mod compression;
mod data_files;
mod deletion_vector;
mod design;
mod engine;
mod error;
mod key_index;
mod key_index_file;
mod keyed_buffer;
mod maintenance;
mod manifest_merge;
mod partition;
mod schema;
mod schema_change;
mod snapshot_summary;
mod storage;
mod table;
mod wal;

pub use batch::{ChangeBatch, Operation};
pub use commit::SnapshotRetention;
pub use design::{PartitionFieldInfo, SnapshotInfo, TableDesign};
pub use engine::{CommitInfo, CreateTable, Engine, EngineConfig};
pub use error::{EngineError, Result};
pub use schema::{ColumnSchema, ColumnType, TableSchema};
pub use schema_change::{initial_default, SchemaChange};
pub use storage::{ReadStats, S3Options, Warehouse, WarehouseSpec, S3_RETRY_TIMEOUT};
pub use table::{
    ApplyReceipt, CompactionHold, Durability, ReadView, SourceCheckpoint, TableConfig, TableInfo,
    TableOptions, ViewFile,
};

/// Reading a table back from its Iceberg metadata, without the engine: for tests, examples
/// and tools that check what a commit published.
pub mod inspect {
    pub use crate::commit::{live_files, load_metadata, LiveDataFile, COMMITTED_LSN_SUMMARY_KEY};
    pub use crate::data_files::read_data_file;
    pub use crate::deletion_vector::read_deletion_vector;

    use arrow_array::RecordBatch;
    use arrow_schema::SchemaRef;
    use iceberg::spec::DataContentType;

    use crate::{Result, Warehouse};

    /// Every live row of the snapshot `metadata_location` points at, as (batch, row): the data
    /// files read in `schema` (columns matched by field id) minus the positions their deletion
    /// vectors mask. What any Iceberg reader sees, for tests and tools.
    pub async fn live_rows(
        warehouse: &Warehouse,
        metadata_location: &str,
        schema: &SchemaRef,
    ) -> Result<Vec<(RecordBatch, usize)>> {
        let io = warehouse.file_io();
        let metadata = load_metadata(&io, metadata_location).await?;
        let files = live_files(&io, &metadata).await?;
        let mut rows = Vec::new();
        for file in files
            .iter()
            .filter(|f| f.data_file.content_type() == DataContentType::Data)
        {
            let path = file.data_file.file_path();
            let dv = match files
                .iter()
                .find(|d| d.data_file.referenced_data_file().as_deref() == Some(path))
            {
                Some(d) => read_deletion_vector(warehouse, &d.data_file).await?,
                None => Default::default(),
            };
            let mut position = 0u64;
            for batch in read_data_file(warehouse, path, schema).await? {
                for row in 0..batch.num_rows() {
                    if !dv.contains(position) {
                        rows.push((batch.clone(), row));
                    }
                    position += 1;
                }
            }
        }
        Ok(rows)
    }
}
