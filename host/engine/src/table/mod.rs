//! One table's writer: accepts batches (WAL first, then the Arrow buffer), and commits the
//! buffer as Iceberg snapshots on an interval, on demand, and when the buffer grows large.
//!
//! Where each part lives: opening and recovery (WAL replay, key-index files) and the
//! table's lifecycle here; accepting a batch in `apply.rs`; unchanged TOAST values in
//! `unchanged.rs`; the commit loop and truncation in `commit_loop.rs`; the compaction policy
//! in `compaction.rs` and the background compactor in `background.rs`.
//!
//! Invariants: the buffer holds only batches that fit the table's schema, in LSN order (log
//! order); what a commit takes moves to `Pending` and stays there until a snapshot holding it
//! is committed; the key index moves to a compacted file only after that file's snapshot is
//! committed.
//!
//! File sizing: a commit writes its buffered rows as new Parquet files and nothing else. Files
//! below half of the target size count as small; once `merge_fanout` of them exist (or a keyed
//! file's deleted fraction passes the threshold) the background compactor, woken after each
//! commit, rewrites them and commits a `replace` snapshot of its own. Trickle traffic
//! therefore keeps about `merge_fanout` small files alive, and no commit waits for a rewrite.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use std::collections::{BTreeMap, HashMap};

use iceberg::spec::{DataContentType, DataFile, Schema as IcebergSchema, TableMetadata};
use roaring::RoaringTreemap;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use crate::batch::{ChangeBatch, Operation};
use crate::catalog::Catalog;
use crate::commit::{self, SnapshotChanges};
use crate::data_files;
use crate::deletion_vector;
use crate::error::{EngineError, Result};
use crate::key_index::{FileKeys, KeyHash, KeyHasher, Location};
use crate::key_index_file;
use crate::keyed_buffer::KeyedBuffer;
use crate::maintenance;
use crate::partition::{FilePartition, Partitioner};
use crate::schema::TableSchema;
use crate::storage::Warehouse;
use crate::wal::{self, Wal};

pub use background::CompactionHold;
pub use read_view::{ReadView, ViewFile};

/// Tuning shared by all tables.
#[derive(Debug, Clone)]
pub struct TableConfig {
    /// How often buffered rows are committed.
    pub commit_interval: Duration,
    /// Size data files grow toward (bytes of Parquet).
    pub target_file_size: u64,
    /// How many small files may be alive before a commit merges them.
    pub merge_fanout: usize,
    /// A keyed data file whose deleted fraction reaches this is rewritten without its
    /// deleted rows.
    pub rewrite_deleted_fraction: f64,
    /// Buffered Arrow bytes that trigger a commit before the interval is up.
    pub max_buffer_bytes: usize,
    /// How long a `sync` request waits for its commit.
    pub sync_timeout: Duration,
    /// How long a write that can be retried (HTTP ingest, receivers) waits for room in a full
    /// buffer before it is refused as backlogged ([`crate::Engine::admit`]).
    pub backlog_wait: Duration,
    /// Snapshot expiry policy, applied at every commit.
    pub retention: commit::SnapshotRetention,
    /// Unreferenced files are swept every this many commits (and on `optimize`).
    pub orphan_sweep_every: u64,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig {
            commit_interval: Duration::from_secs(2),
            target_file_size: 128 * 1024 * 1024,
            merge_fanout: 8,
            rewrite_deleted_fraction: 0.3,
            max_buffer_bytes: 256 * 1024 * 1024,
            sync_timeout: Duration::from_secs(60),
            backlog_wait: Duration::from_secs(5),
            retention: commit::SnapshotRetention::default(),
            orphan_sweep_every: 100,
        }
    }
}

/// Per-table overrides of [`TableConfig`], given at creation (`table_config` in the HTTP API)
/// and stored in the catalog.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TableOptions {
    /// Parquet bytes data files grow toward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_file_size: Option<u64>,
    /// Small files alive before a commit merges them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_fanout: Option<usize>,
    /// Deleted fraction at which a keyed file is rewritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite_deleted_fraction: Option<f64>,
    /// `false` turns background compaction off (`optimize` still works).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<bool>,
    /// How the table was partitioned at creation (`day(created_at)`, `bucket(16, id)`, ...);
    /// the Iceberg metadata's default partition spec is the truth after that.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,
}

impl TableOptions {
    /// The effective config of a table with these options.
    pub fn apply(&self, base: &TableConfig) -> TableConfig {
        let mut config = base.clone();
        if let Some(v) = self.target_file_size {
            config.target_file_size = v.max(1);
        }
        if let Some(v) = self.merge_fanout {
            config.merge_fanout = v.max(2);
        }
        if let Some(v) = self.rewrite_deleted_fraction {
            config.rewrite_deleted_fraction = v;
        }
        if self.compaction == Some(false) {
            config.merge_fanout = usize::MAX;
            config.rewrite_deleted_fraction = f64::INFINITY;
        }
        config
    }
}

/// A pull source's position, as the snapshot that commits its changes records it
/// (`moonlink.source.<source>.checkpoint` in the snapshot summary). Positions of one source
/// must sort by (length, bytes) — the SDK's `Checkpoint` helpers produce such strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceCheckpoint {
    /// The source's name (its plugin config name).
    pub source: String,
    /// The opaque position the source resumes from.
    pub position: String,
}

/// When `apply` may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Once the batch is fsynced in the write-ahead log.
    Logged,
    /// Once the Iceberg snapshot containing the batch is committed.
    Committed,
    /// Not logged: the batch comes from a pull source that can replay it from its last
    /// committed checkpoint, which the snapshot records (see `apply_from_source`).
    Replayable,
}

/// The committed state of a table, published to readers and `sync` waiters.
#[derive(Debug, Clone)]
pub(crate) struct CommitState {
    pub metadata: Arc<TableMetadata>,
    pub metadata_location: String,
    pub committed_lsn: u64,
    pub last_error: Option<String>,
    /// Incremented on every failed commit, so waiters can tell a failure after their request.
    pub failures: u64,
}

/// What the engine reports about a table.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// The name used in the API.
    pub name: String,
    /// Iceberg namespace.
    pub namespace: String,
    /// Iceberg table name within the namespace.
    pub table: String,
    /// The current schema.
    pub schema: TableSchema,
    /// The table's overrides of the engine's table config.
    pub options: TableOptions,
    /// The metadata JSON of the current snapshot.
    pub metadata_location: String,
    /// The current snapshot (`None` before the first commit).
    pub snapshot_id: Option<i64>,
    /// The last WAL LSN the current snapshot contains.
    pub committed_lsn: u64,
    /// The last LSN applied (committed or buffered); equals `committed_lsn` when nothing is pending.
    pub last_lsn: u64,
    /// Rows applied but not yet in a snapshot.
    pub buffered_rows: usize,
    /// Live data files in the current snapshot.
    pub data_files: u64,
    /// Rows in live data files, deleted ones included (see `deleted_rows`).
    pub total_records: u64,
    /// Rows masked by deletion vectors in the current snapshot.
    pub deleted_rows: u64,
    /// Snapshots kept in the table's metadata.
    pub snapshots: usize,
    /// Total bytes of live data files.
    pub data_bytes: u64,
    /// Live keys in the primary-key index (0 for a keyless table).
    pub index_entries: usize,
    /// The primary-key index's resident size in bytes.
    pub index_bytes: usize,
    /// The last commit error, cleared by a successful commit; for a failed table, why it failed.
    pub last_error: Option<String>,
    /// The table could not be opened (`last_error` says why); it refuses writes.
    pub failed: bool,
    /// When the current snapshot was committed (ms since the epoch).
    pub last_commit_ms: Option<i64>,
    /// When the newest snapshot that added rows was committed (ms since the epoch): freshness.
    pub last_rows_commit_ms: Option<i64>,
    /// Arrow bytes of the rows applied but not yet in a snapshot.
    pub buffered_bytes: usize,
}

impl TableInfo {
    /// What is known of a table that could not be opened.
    pub(crate) fn failed(
        name: &str,
        namespace: &str,
        table: &str,
        schema: TableSchema,
        metadata_location: &str,
        reason: &str,
    ) -> TableInfo {
        TableInfo {
            name: name.to_string(),
            namespace: namespace.to_string(),
            table: table.to_string(),
            schema,
            options: TableOptions::default(),
            metadata_location: metadata_location.to_string(),
            snapshot_id: None,
            committed_lsn: 0,
            last_lsn: 0,
            buffered_rows: 0,
            data_files: 0,
            total_records: 0,
            deleted_rows: 0,
            snapshots: 0,
            data_bytes: 0,
            index_entries: 0,
            index_bytes: 0,
            last_error: Some(reason.to_string()),
            failed: true,
            last_commit_ms: None,
            last_rows_commit_ms: None,
            buffered_bytes: 0,
        }
    }
}

/// What `apply` reports back.
#[derive(Debug, Clone)]
pub struct ApplyReceipt {
    /// Rows in the batch.
    pub rows: usize,
    /// Rows whose key matched a live row: replaced by an upsert or removed by a delete.
    pub matched: usize,
    /// The LSN given to the batch (a `Replayable` batch gets one but is not logged); an empty
    /// batch reports the committed LSN.
    pub lsn: u64,
    /// Set for `Durability::Committed`: the snapshot that made the rows visible.
    pub snapshot_id: Option<i64>,
    /// Set for `Durability::Committed`: the metadata JSON of that snapshot.
    pub metadata_location: Option<String>,
}

struct Buffer {
    batches: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
    next_lsn: u64,
    /// The table stopped taking writes (dropped, or closed to be reopened).
    dropped: bool,
    /// Closed to be reopened with a new schema: writes are told to retry, not 404.
    reopening: bool,
    /// Present for tables with a primary key.
    keyed: Option<KeyedBuffer>,
    /// The latest checkpoint of each source whose batches are buffered.
    source_checkpoints: BTreeMap<String, String>,
    /// Every batch applied after the committed LSN, as (LSN, batch), in LSN order: logged
    /// ones and unlogged source batches alike. A rebase on another writer's snapshot applies
    /// them again (`rebase.rs`). Shares its Arrow buffers with the batch the caller built.
    uncommitted: Vec<(u64, ChangeBatch)>,
    /// What real-time reads see besides the buffer (`read_view.rs`); replaced under this lock.
    read: Arc<read_view::ReadState>,
}

/// Rows taken from the buffer, each group to become one data file; keyed tables know the
/// file's id in the key index already.
struct Generation {
    file_id: Option<u32>,
    keys: Option<FileKeys>,
    batches: Vec<RecordBatch>,
    /// Keyed tables: the one partition of the file's rows (append-only generations are split
    /// by partition when written).
    partition: Option<FilePartition>,
}

/// What was taken from the buffer but is not yet in a committed snapshot; kept across failed
/// attempts so a retry commits it.
struct Pending {
    generations: Vec<Generation>,
    /// Deleted positions per data-file id, to merge into that file's deletion vector.
    deletes: HashMap<u32, RoaringTreemap>,
    through_lsn: u64,
    /// Live data files of the committed snapshot.
    live_files: Vec<DataFile>,
    /// Live data-file path → the partition spec it was written in (older specs after
    /// partition evolution; new files are in the default spec, `Table::partitioner`'s).
    file_specs: HashMap<String, i32>,
    /// Data-file id → path, for keyed tables.
    paths: HashMap<u32, String>,
    /// Data-file path → its committed deletion vector.
    committed_dvs: HashMap<String, RoaringTreemap>,
    /// Source checkpoints covered by what is pending, recorded in the next snapshot.
    source_checkpoints: BTreeMap<String, String>,
    /// Successful commits since open (paces the orphan sweep).
    commits: u64,
    /// The table was truncated: the next snapshot removes every file live before it.
    truncated: Option<Vec<String>>,
    /// Bumped by every rebase and truncation: file ids and live files planned for a
    /// compaction before a change of epoch no longer hold.
    epoch: u64,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.generations.is_empty() && self.deletes.is_empty() && self.truncated.is_none()
    }

    /// A live data file's partition: its own spec (the default one, `default_spec`, unless
    /// written before partition evolution) and tuple.
    fn partition_of(&self, file: &DataFile, default_spec: i32) -> FilePartition {
        let spec_id = self
            .file_specs
            .get(file.file_path())
            .copied()
            .unwrap_or(default_spec);
        FilePartition::of(file, spec_id)
    }

    /// After a committed snapshot: the `removed` data files leave the live set and `added`
    /// (written in the default spec) join it.
    fn swap_live_files(
        &mut self,
        removed: &std::collections::HashSet<String>,
        added: Vec<DataFile>,
        default_spec: i32,
    ) {
        self.live_files.retain(|f| !removed.contains(f.file_path()));
        self.file_specs.retain(|path, _| !removed.contains(path));
        for file in &added {
            self.file_specs
                .insert(file.file_path().to_string(), default_spec);
        }
        self.live_files.extend(added);
    }
}

pub(crate) struct Table {
    pub name: String,
    pub id: String,
    pub namespace: String,
    pub table: String,
    pub schema: TableSchema,
    pub options: TableOptions,
    arrow_schema: SchemaRef,
    iceberg_schema: Arc<IcebergSchema>,
    /// Splits rows by the default partition spec (of the metadata the table was opened with:
    /// schema and partitioning changes reopen the table).
    partitioner: Partitioner,
    catalog: Arc<Catalog>,
    warehouse: Warehouse,
    config: TableConfig,
    /// Key-index files of this table's data files (local cache).
    index_dir: std::path::PathBuf,
    /// Keyed tables: hashes keys under the table's secret.
    key_hasher: Option<KeyHasher>,
    wal: Mutex<Option<Wal>>,
    buffer: Mutex<Buffer>,
    pending: tokio::sync::Mutex<Pending>,
    committed: watch::Sender<CommitState>,
    wake: Notify,
    stop: watch::Sender<bool>,
    /// Wakes the background compactor (after each successful commit).
    compact_wake: Notify,
    /// One compaction at a time (background or `optimize`).
    compaction: tokio::sync::Mutex<()>,
    /// A compaction has files in flight: the orphan sweep waits (set and read under the
    /// commit lock).
    compacting: std::sync::atomic::AtomicBool,
    /// Test hook: stops the next compaction between rewrite and swap.
    compaction_hold: Mutex<Option<Arc<background::CompactionHold>>>,
}

pub(crate) struct OpenTable {
    pub name: String,
    pub id: String,
    pub namespace: String,
    pub table: String,
    pub schema: TableSchema,
    pub options: TableOptions,
    pub metadata: TableMetadata,
    pub metadata_location: String,
}

mod apply;
mod background;
mod commit_loop;
mod compaction;
mod freshness;
mod read_view;
mod rebase;
mod unchanged;

impl Table {
    /// Opens a table from its committed state and replays its write-ahead log.
    pub async fn open(
        open: OpenTable,
        catalog: Arc<Catalog>,
        warehouse: Warehouse,
        wal_dir: &std::path::Path,
        index_dir: &std::path::Path,
        config: TableConfig,
    ) -> Result<Arc<Table>> {
        let open_options_config = open.options.apply(&config);
        let committed_lsn = commit::committed_lsn(&open.metadata);
        let arrow_schema = open.schema.arrow_schema();
        let key_hasher = if open.schema.primary_key.is_empty() {
            None
        } else {
            Some(KeyHasher::new(key_index_file::key_secret(index_dir)?))
        };
        // Iceberg is the source of truth; key-index files are a local cache of it.
        let rebase::CommittedFiles {
            live_files,
            file_specs,
            committed_dvs,
            paths,
            keyed,
        } = rebase::load_committed(
            &open.name,
            &open.schema,
            &arrow_schema,
            &open.metadata,
            &warehouse,
            index_dir,
            key_hasher,
        )
        .await?;
        let (wal, replay) = Wal::open(wal_dir, committed_lsn)?;
        let mut buffer = Buffer {
            batches: Vec::new(),
            rows: 0,
            bytes: 0,
            next_lsn: committed_lsn + 1,
            dropped: false,
            reopening: false,
            keyed,
            source_checkpoints: BTreeMap::new(),
            uncommitted: Vec::new(),
            read: Default::default(),
        };
        if !replay.is_empty() {
            tracing::info!(table = %open.name, records = replay.len(), after_lsn = committed_lsn,
                "replaying write-ahead log");
        }
        for record in replay {
            buffer.next_lsn = record.lsn + 1;
            // A logged batch the table cannot commit would fail every commit and every
            // restart: skip it loudly. Today's checks refuse such batches before logging;
            // only older versions (or a decode racing a drop and recreate) logged them.
            let fits = record
                .batch
                .check_shape(&open.name, &arrow_schema)
                .and_then(|()| record.batch.check_values(&open.schema));
            if let Err(e) = fits {
                tracing::error!(table = %open.name, lsn = record.lsn, rows = record.batch.num_rows(), error = %e,
                    "skipping a write-ahead log record the table cannot commit");
                continue;
            }
            buffer.append(&arrow_schema, &record.batch, None)?;
        }
        let iceberg_schema = open.metadata.current_schema().clone();
        let partitioner = Partitioner::new(&open.metadata)?;
        let (stop, _) = watch::channel(false);
        let table = Arc::new(Table {
            name: open.name,
            id: open.id,
            namespace: open.namespace,
            table: open.table,
            schema: open.schema,
            options: open.options,
            arrow_schema,
            iceberg_schema,
            partitioner,
            catalog,
            warehouse,
            config: open_options_config,
            index_dir: index_dir.to_path_buf(),
            key_hasher,
            wal: Mutex::new(Some(wal)),
            buffer: Mutex::new(buffer),
            pending: tokio::sync::Mutex::new(Pending {
                generations: Vec::new(),
                deletes: HashMap::new(),
                through_lsn: committed_lsn,
                live_files,
                file_specs,
                paths,
                committed_dvs,
                source_checkpoints: BTreeMap::new(),
                commits: 0,
                truncated: None,
                epoch: 0,
            }),
            committed: watch::channel(CommitState {
                metadata: Arc::new(open.metadata),
                metadata_location: open.metadata_location,
                committed_lsn,
                last_error: None,
                failures: 0,
            })
            .0,
            wake: Notify::new(),
            stop,
            compact_wake: Notify::new(),
            compaction: tokio::sync::Mutex::new(()),
            compacting: Default::default(),
            compaction_hold: Mutex::new(None),
        });
        if let Ok(pending) = table.pending.try_lock() {
            table.publish_read(&mut table.lock_buffer(), &pending);
        }
        tokio::spawn(Table::commit_loop(table.clone()));
        tokio::spawn(Table::compaction_loop(table.clone()));
        // Files left small or deletion-heavy by the last run are compacted now.
        table.compact_wake.notify_one();
        Ok(table)
    }

    fn lock_buffer(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops accepting writes, commits what was accepted and releases the log, so the table
    /// can be reopened (after a schema change). If the commit fails, the table stays open.
    pub async fn close(&self) -> Result<CommitState> {
        {
            let mut buffer = self.lock_buffer();
            buffer.dropped = true;
            buffer.reopening = true;
        }
        match self.commit().await {
            Ok(state) => {
                let _ = self.stop.send(true);
                self.wal.lock().unwrap_or_else(|p| p.into_inner()).take();
                Ok(state)
            }
            Err(e) => {
                let mut buffer = self.lock_buffer();
                buffer.dropped = false;
                buffer.reopening = false;
                Err(e)
            }
        }
    }

    /// The committed metadata (what readers load now).
    pub fn metadata(&self) -> Arc<TableMetadata> {
        self.committed.borrow().metadata.clone()
    }

    /// The last LSN committed (no buffer lock).
    pub fn committed_lsn(&self) -> u64 {
        self.committed.borrow().committed_lsn
    }

    /// The checkpoint of `source` in the committed snapshot.
    pub fn committed_source_checkpoint(&self, source: &str) -> Option<String> {
        let state = self.committed.borrow();
        commit::committed_source_checkpoint(&state.metadata, source)
    }

    /// Waits until everything applied up to `lsn` is committed (without forcing a commit).
    pub async fn committed_through(&self, lsn: u64) -> CommitState {
        let mut rx = self.committed.subscribe();
        loop {
            {
                let state = rx.borrow_and_update();
                if state.committed_lsn >= lsn {
                    return state.clone();
                }
            }
            if rx.changed().await.is_err() {
                return self.committed.borrow().clone();
            }
        }
    }

    pub fn info(&self) -> TableInfo {
        let state = self.committed.borrow().clone();
        let (buffered_rows, last_lsn, index_entries, index_bytes) = {
            let buffer = self.lock_buffer();
            let (entries, bytes) = buffer
                .keyed
                .as_ref()
                .map(|k| (k.index.len(), k.index.memory_bytes()))
                .unwrap_or((0, 0));
            (buffer.rows, buffer.next_lsn - 1, entries, bytes)
        };
        let summary = state
            .metadata
            .current_snapshot()
            .map(|s| s.summary().additional_properties.clone())
            .unwrap_or_default();
        let total = |k: &str| summary.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        TableInfo {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            table: self.table.clone(),
            schema: self.schema.clone(),
            options: self.options.clone(),
            metadata_location: state.metadata_location.clone(),
            snapshot_id: state.metadata.current_snapshot_id(),
            committed_lsn: state.committed_lsn,
            last_lsn,
            buffered_rows,
            data_files: total("total-data-files"),
            total_records: total("total-records"),
            deleted_rows: total("total-position-deletes"),
            snapshots: state.metadata.snapshots().count(),
            data_bytes: total("total-files-size"),
            index_entries,
            index_bytes,
            last_error: state.last_error,
            failed: false,
            last_commit_ms: state.metadata.current_snapshot().map(|s| s.timestamp_ms()),
            last_rows_commit_ms: freshness::last_rows_commit_ms(&state.metadata),
            buffered_bytes: self.lock_buffer().bytes,
        }
    }

    /// Stops the commit loop, after one last commit if `flush`.
    pub async fn shutdown(&self, flush: bool) -> Result<()> {
        let _ = self.stop.send(true);
        if flush {
            self.commit().await?;
        }
        Ok(())
    }

    /// Stops accepting writes and removes the table's log (the caller drops the catalog entry
    /// and the files).
    pub async fn destroy(&self) -> Result<()> {
        self.lock_buffer().dropped = true;
        let _ = self.stop.send(true);
        // Wait for an in-flight commit to finish before the files go away.
        let _pending = self.pending.lock().await;
        let wal = self.wal.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(wal) = wal {
            wal.destroy()?;
        }
        match std::fs::remove_dir_all(&self.index_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(EngineError::io(&self.index_dir, e))
            }
            _ => Ok(()),
        }
    }
}

impl Buffer {
    /// Buffers a batch (already in the log) with LSN `next_lsn - 1`; returns how many keys
    /// matched live rows. `hashes`: the batch's key hashes if already computed (keyed
    /// tables), else hashed here.
    fn append(
        &mut self,
        schema: &SchemaRef,
        batch: &ChangeBatch,
        hashes: Option<Vec<KeyHash>>,
    ) -> Result<usize> {
        let matched = self.buffer_batch(schema, batch, hashes)?;
        self.uncommitted.push((self.next_lsn - 1, batch.clone()));
        Ok(matched)
    }

    /// Applies a batch to the keys and the buffered rows (see [`Buffer::append`]).
    fn buffer_batch(
        &mut self,
        schema: &SchemaRef,
        batch: &ChangeBatch,
        hashes: Option<Vec<KeyHash>>,
    ) -> Result<usize> {
        let (rows, matched) = match self.keyed.as_mut() {
            Some(keys) => {
                let hashes = hashes.unwrap_or_else(|| keys.hash(batch.rows()));
                let applied = keys.apply(batch.operations(), batch.rows(), &hashes)?;
                (applied.rows, applied.matched)
            }
            None => (batch.rows().clone(), 0),
        };
        if rows.num_rows() > 0 {
            // Stored batches carry the table's declared schema exactly.
            let stored = RecordBatch::try_new(schema.clone(), rows.columns().to_vec())?;
            self.rows += stored.num_rows();
            self.bytes += stored.get_array_memory_size();
            self.batches.push(stored);
        }
        Ok(matched)
    }
}
