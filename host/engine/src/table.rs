//! One table's writer: accepts batches (WAL first, then the Arrow buffer), and commits the
//! buffer as Iceberg snapshots on an interval, on demand, and when the buffer grows large.
//!
//! File sizing: a commit writes its buffered rows as one Parquet file. Files below half
//! of the target size count as small; once `merge_fanout` of them would exist, the commit
//! instead merges all small files and the new rows into one file, removing the small ones in
//! the same snapshot. Trickle traffic therefore keeps at most `merge_fanout` small files
//! alive, and files grow toward the target without a separate compaction job.

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
use crate::index_segment;
use crate::key_index::{KeyHash, KeyHasher, Location, Segment};
use crate::keyed_buffer::KeyedBuffer;
use crate::maintenance;
use crate::schema::TableSchema;
use crate::storage::Warehouse;
use crate::wal::{self, Wal};

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
pub struct CommitState {
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
    pub name: String,
    pub namespace: String,
    pub table: String,
    pub schema: TableSchema,
    pub options: TableOptions,
    pub metadata_location: String,
    pub snapshot_id: Option<i64>,
    pub committed_lsn: u64,
    pub last_lsn: u64,
    pub buffered_rows: usize,
    pub data_files: u64,
    pub total_records: u64,
    /// Rows masked by deletion vectors in the current snapshot.
    pub deleted_rows: u64,
    /// Snapshots kept in the table's metadata.
    pub snapshots: usize,
    /// Total bytes of live data files.
    pub data_bytes: u64,
    /// Keys in the primary-key index, and its resident size.
    pub index_entries: usize,
    pub index_bytes: usize,
    pub last_error: Option<String>,
    /// The table could not be opened (`last_error` says why); it refuses writes.
    pub failed: bool,
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
        }
    }
}

/// What `apply` reports back.
#[derive(Debug, Clone)]
pub struct ApplyReceipt {
    pub rows: usize,
    /// Rows whose key matched a live row: replaced by an upsert or removed by a delete.
    pub matched: usize,
    pub lsn: u64,
    /// Set for `Durability::Committed`: the snapshot that made the rows visible.
    pub snapshot_id: Option<i64>,
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
}

/// Rows taken from the buffer, each group to become one data file; keyed tables know the
/// file's id in the key index already.
struct Generation {
    file_id: Option<u32>,
    segment: Option<Segment>,
    batches: Vec<RecordBatch>,
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
}

/// A keyed compaction written during a commit: candidate files merged into one, without their
/// deleted rows. Applied to the key index only once the snapshot is committed.
struct KeyedCompaction {
    file_id: u32,
    path: Option<String>,
    data_file: Option<DataFile>,
    segment: Segment,
    /// Old file id → new position of each old row (`u32::MAX`: the row was deleted).
    mapping: HashMap<u32, Vec<u32>>,
    removed_paths: Vec<String>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.generations.is_empty() && self.deletes.is_empty() && self.truncated.is_none()
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
    catalog: Arc<Catalog>,
    warehouse: Warehouse,
    config: TableConfig,
    /// Key-index segments of this table's data files (local cache).
    index_dir: std::path::PathBuf,
    /// Keyed tables: hashes keys under the table's secret.
    key_hasher: Option<KeyHasher>,
    wal: Mutex<Option<Wal>>,
    buffer: Mutex<Buffer>,
    pending: tokio::sync::Mutex<Pending>,
    committed: watch::Sender<CommitState>,
    wake: Notify,
    stop: watch::Sender<bool>,
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
        let file_io = warehouse.file_io();
        let committed_lsn = commit::committed_checkpoint(&open.metadata);
        let mut live_files = Vec::new();
        let mut delete_files = Vec::new();
        for file in commit::live_files(&file_io, &open.metadata).await? {
            match file.data_file.content_type() {
                DataContentType::Data => live_files.push(file.data_file),
                _ => delete_files.push(file.data_file),
            }
        }
        let mut committed_dvs = HashMap::new();
        for dv in &delete_files {
            if let Some(data_file) = dv.referenced_data_file() {
                committed_dvs.insert(
                    data_file,
                    deletion_vector::read_deletion_vector(&warehouse, dv).await?,
                );
            }
        }
        let arrow_schema = open.schema.arrow_schema();
        let mut paths = HashMap::new();
        let mut key_hasher = None;
        let keyed = if open.schema.primary_key.is_empty() {
            None
        } else {
            // Load each data file's index segment from the cache; rebuild a missing or damaged
            // one from the file's key columns (Iceberg is the source of truth).
            let key_columns: Vec<usize> = open
                .schema
                .primary_key
                .iter()
                .filter_map(|k| open.schema.column_index(k))
                .collect();
            let hasher = KeyHasher::new(index_segment::key_secret(index_dir)?);
            key_hasher = Some(hasher);
            let mut keyed = KeyedBuffer::new(key_columns.clone(), hasher);
            let mut rebuilt = 0;
            for file in &live_files {
                let id = keyed.allocate_file_id();
                paths.insert(id, file.file_path().to_string());
                let segment_file = index_segment::segment_path(index_dir, file.file_path());
                let segment = match index_segment::read_segment(&segment_file, &hasher) {
                    Some(segment) => segment,
                    None => {
                        rebuilt += 1;
                        let mut hashes = Vec::with_capacity(file.record_count() as usize);
                        for batch in
                            data_files::read_data_file(&warehouse, file.file_path(), &arrow_schema)
                                .await?
                        {
                            hashes.extend(hasher.hash_rows(&batch, &key_columns));
                        }
                        let segment = Segment::from_row_hashes(&hashes);
                        index_segment::write_segment(&segment_file, &segment, &hasher)?;
                        segment
                    }
                };
                let dead = committed_dvs.get(file.file_path()).cloned();
                keyed.index.add_segment(id, segment, dead);
            }
            if rebuilt > 0 {
                tracing::info!(table = %open.name, files = rebuilt, "rebuilt key index segments from data files");
            }
            Some(keyed)
        };
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
                paths,
                committed_dvs,
                source_checkpoints: BTreeMap::new(),
                commits: 0,
                truncated: None,
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
        });
        tokio::spawn(Table::commit_loop(table.clone()));
        Ok(table)
    }

    fn lock_buffer(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes a batch durable per `durability` and buffers it for the next commit. A batch from
    /// a pull source carries `(source id, checkpoint)`: the snapshot that contains it records
    /// the checkpoint, which is where the source resumes after a restart.
    pub async fn apply(
        &self,
        batch: ChangeBatch,
        durability: Durability,
        source_checkpoint: Option<(String, String)>,
    ) -> Result<ApplyReceipt> {
        let keyed = !self.schema.primary_key.is_empty();
        if !keyed {
            if let Some(op) = batch.operations().iter().find(|o| **o != Operation::Insert) {
                return Err(EngineError::OperationNotAllowed(format!(
                    "'{}' needs a primary key, and table '{}' has none (it is append-only)",
                    if *op == Operation::Upsert {
                        "upsert"
                    } else {
                        "delete"
                    },
                    self.name
                )));
            }
        }
        // Before anything is logged: a batch decoded against an older schema of this name
        // (dropped and recreated, or evolved, meanwhile) would be unreadable on replay.
        batch.check_shape(&self.name, &self.arrow_schema)?;
        let batch = self.fill_unchanged(batch).await?;
        let rows = batch.num_rows();
        if rows == 0 {
            let state = self.committed.borrow().clone();
            return Ok(ApplyReceipt {
                rows,
                matched: 0,
                lsn: state.committed_lsn,
                snapshot_id: None,
                metadata_location: None,
            });
        }
        let payload = match durability {
            Durability::Replayable => None,
            _ => Some(wal::encode_batch(&batch)?),
        };
        let (lsn, matched, logged, over_limit) = {
            let mut buffer = self.lock_buffer();
            if buffer.dropped {
                return Err(match buffer.reopening {
                    true => EngineError::SchemaChanged(self.name.clone()),
                    false => EngineError::TableNotFound(self.name.clone()),
                });
            }
            // Keys are hashed once per batch: for the conflict check and for applying.
            let hashes = buffer.keyed.as_ref().map(|keys| keys.hash(batch.rows()));
            if let (Some(keys), Some(hashes)) = (&buffer.keyed, &hashes) {
                let conflicts = keys.insert_conflicts(batch.operations(), hashes);
                if !conflicts.is_empty() {
                    return Err(EngineError::KeyConflict {
                        rows: conflicts.clone(),
                        keys: self.render_keys(batch.rows(), &conflicts),
                    });
                }
            }
            let lsn = buffer.next_lsn;
            let wal = self.wal.lock().unwrap_or_else(|p| p.into_inner());
            let Some(wal) = wal.as_ref() else {
                return Err(EngineError::TableNotFound(self.name.clone()));
            };
            // Appending under the buffer lock keeps log order equal to LSN order, and the
            // conflict check above valid for this batch.
            let logged = payload.map(|payload| wal.append(lsn, payload));
            buffer.next_lsn += 1;
            let matched = buffer.append(&self.arrow_schema, &batch, hashes)?;
            if let Some((source, checkpoint)) = source_checkpoint {
                buffer.source_checkpoints.insert(source, checkpoint);
            }
            (
                lsn,
                matched,
                logged,
                buffer.bytes >= self.config.max_buffer_bytes,
            )
        };
        if over_limit {
            self.wake.notify_one();
        }
        if let Some(logged) = logged {
            logged
                .await
                .map_err(|_| EngineError::Unavailable("write-ahead log writer stopped".into()))??;
        }
        let mut receipt = ApplyReceipt {
            rows,
            matched,
            lsn,
            snapshot_id: None,
            metadata_location: None,
        };
        if durability == Durability::Committed {
            let state = self.wait_committed(lsn).await?;
            receipt.snapshot_id = state.metadata.current_snapshot_id();
            receipt.metadata_location = Some(state.metadata_location);
        }
        Ok(receipt)
    }

    /// Fills the values a source did not send (Postgres's unchanged TOAST) from each row's
    /// current version: an earlier row of the same batch, the buffer, or a data file (read at
    /// just the needed positions). A key with no current row keeps a null there.
    ///
    /// Assumes one writer per table while it runs (a source); the commit lock is held so no
    /// commit moves rows between the lookup and the read.
    async fn fill_unchanged(&self, batch: ChangeBatch) -> Result<ChangeBatch> {
        if batch.unchanged().is_empty() {
            return Ok(batch);
        }
        let pending = self.pending.lock().await;
        let num_rows = batch.num_rows();
        let needs = |r: usize| batch.unchanged().iter().any(|(_, mask)| mask[r]);
        // Where each row's current value comes from: 0 = this batch, then fetched rows.
        let mut sources: Vec<RecordBatch> = vec![batch.rows().clone()];
        let mut current: HashMap<usize, (usize, usize)> = HashMap::new();
        let mut from_batch: HashMap<usize, usize> = HashMap::new();
        let mut in_files: BTreeMap<u32, Vec<(u32, usize)>> = BTreeMap::new();
        {
            let buffer = self.lock_buffer();
            let Some(keys) = buffer.keyed.as_ref() else {
                return Ok(batch);
            };
            let hashes = keys.hash(batch.rows());
            let mut latest: HashMap<KeyHash, usize> = HashMap::new();
            for (r, (&hash, op)) in hashes.iter().zip(batch.operations()).enumerate() {
                if needs(r) {
                    if let Some(&earlier) = latest.get(&hash) {
                        from_batch.insert(r, earlier);
                    } else {
                        match keys.index.get(hash) {
                            Some(Location::Buffer(pos)) => {
                                let mut offset = pos as usize;
                                for b in &buffer.batches {
                                    if offset < b.num_rows() {
                                        sources.push(b.slice(offset, 1));
                                        current.insert(r, (sources.len() - 1, 0));
                                        break;
                                    }
                                    offset -= b.num_rows();
                                }
                            }
                            Some(Location::File(file, pos)) => {
                                in_files.entry(file).or_default().push((pos, r))
                            }
                            None => {}
                        }
                    }
                }
                match op {
                    Operation::Delete => latest.remove(&hash),
                    _ => latest.insert(hash, r),
                };
            }
        }
        for (file, mut wanted) in in_files {
            wanted.sort_unstable();
            let mut positions: Vec<u32> = wanted.iter().map(|(p, _)| *p).collect();
            positions.dedup();
            let rows = match pending.paths.get(&file) {
                Some(path) => {
                    data_files::read_rows_at(&self.warehouse, path, &self.arrow_schema, &positions)
                        .await?
                }
                None => {
                    // Rows of a commit that has not succeeded yet: still in memory.
                    let Some(generation) =
                        pending.generations.iter().find(|g| g.file_id == Some(file))
                    else {
                        continue;
                    };
                    let all = arrow_select::concat::concat_batches(
                        &self.arrow_schema,
                        &generation.batches,
                    )?;
                    positions
                        .iter()
                        .map(|&p| all.slice(p as usize, 1))
                        .collect()
                }
            };
            let rows = arrow_select::concat::concat_batches(&self.arrow_schema, &rows)?;
            sources.push(rows);
            let source = sources.len() - 1;
            for (pos, r) in wanted {
                if let Ok(i) = positions.binary_search(&pos) {
                    current.insert(r, (source, i));
                }
            }
        }
        drop(pending);
        let mut filled = Vec::new();
        for (column, mask) in batch.unchanged() {
            let mut picks: Vec<(usize, usize)> = Vec::with_capacity(num_rows);
            for (r, &keep_current) in mask.iter().enumerate() {
                let pick = if !keep_current {
                    (0, r)
                } else if let Some(&earlier) = from_batch.get(&r) {
                    picks[earlier]
                } else {
                    current.get(&r).copied().unwrap_or((0, r))
                };
                picks.push(pick);
            }
            let arrays: Vec<&dyn arrow_array::Array> =
                sources.iter().map(|b| b.column(*column).as_ref()).collect();
            filled.push((
                *column,
                arrow_select::interleave::interleave(&arrays, &picks)?,
            ));
        }
        batch.with_filled(filled)
    }

    /// `id=7, region='eu'`-style renderings of the key of each row in `rows`.
    fn render_keys(&self, batch: &RecordBatch, rows: &[usize]) -> Vec<String> {
        rows.iter()
            .take(20)
            .map(|&row| {
                self.schema
                    .primary_key
                    .iter()
                    .filter_map(|k| {
                        let column = batch.column(self.schema.column_index(k)?);
                        let value = arrow_cast::display::array_value_to_string(column, row).ok()?;
                        Some(format!("{k}={value}"))
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect()
    }

    /// Waits until a snapshot containing `lsn` is committed, asking for a commit now.
    async fn wait_committed(&self, lsn: u64) -> Result<CommitState> {
        let mut rx = self.committed.subscribe();
        let failures_before = rx.borrow().failures;
        self.wake.notify_one();
        let wait = async {
            loop {
                {
                    let state = rx.borrow_and_update();
                    if state.committed_lsn >= lsn {
                        return Ok(state.clone());
                    }
                    if state.failures > failures_before + 1 {
                        return Err(EngineError::Unavailable(format!(
                            "commit failed: {}",
                            state.last_error.clone().unwrap_or_default()
                        )));
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(EngineError::TableNotFound(self.name.clone()));
                }
            }
        };
        tokio::time::timeout(self.config.sync_timeout, wait)
            .await
            .map_err(|_| {
                EngineError::Unavailable(format!("no commit within {:?}", self.config.sync_timeout))
            })?
    }

    async fn commit_loop(table: Arc<Table>) {
        let mut stop = table.stop.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(table.config.commit_interval) => {}
                _ = table.wake.notified() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            if let Err(e) = table.commit().await {
                tracing::warn!(table = %table.name, error = %e, "commit failed; will retry");
            }
        }
    }

    /// Commits everything accepted so far as one snapshot (no-op if there is nothing new).
    pub async fn commit(&self) -> Result<CommitState> {
        self.commit_with(false).await
    }

    /// Commits, compacting every small or deletion-heavy file now (`POST .../optimize`).
    pub async fn optimize(&self) -> Result<CommitState> {
        self.commit_with(true).await
    }

    async fn commit_with(&self, force_compaction: bool) -> Result<CommitState> {
        let mut pending = self.pending.lock().await;
        {
            let mut buffer = self.lock_buffer();
            let through_lsn = buffer.next_lsn - 1;
            let has_deletes = buffer
                .keyed
                .as_ref()
                .is_some_and(|k| !k.file_deletes.is_empty());
            if through_lsn > pending.through_lsn || has_deletes {
                let batches = std::mem::take(&mut buffer.batches);
                buffer.rows = 0;
                buffer.bytes = 0;
                let generation = match buffer.keyed.as_mut() {
                    Some(keys) => {
                        for (file, positions) in std::mem::take(&mut keys.file_deletes) {
                            *pending.deletes.entry(file).or_default() |= positions;
                        }
                        let taken = keys.take(batches)?;
                        Generation {
                            file_id: Some(taken.file_id),
                            segment: Some(taken.segment),
                            batches: taken.rows.into_iter().collect(),
                        }
                    }
                    None => Generation {
                        file_id: None,
                        segment: None,
                        batches,
                    },
                };
                if !generation.batches.is_empty() {
                    pending.generations.push(generation);
                }
                pending.through_lsn = through_lsn;
                let checkpoints = std::mem::take(&mut buffer.source_checkpoints);
                pending.source_checkpoints.extend(checkpoints);
                if let Some(wal) = self.wal.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    wal.rotate(buffer.next_lsn);
                }
            }
        }
        let committed_lsn = self.committed.borrow().committed_lsn;
        if pending.is_empty() && pending.through_lsn <= committed_lsn && !force_compaction {
            return Ok(self.committed.borrow().clone());
        }
        match self.commit_pending(&mut pending, force_compaction).await {
            Ok(state) => {
                pending.commits += 1;
                let sweep_due = pending.commits % self.config.orphan_sweep_every.max(1) == 0;
                if force_compaction || sweep_due {
                    // Under the commit lock: no commit of ours is writing files right now.
                    match maintenance::remove_orphan_files(
                        &self.warehouse,
                        &state.metadata,
                        &state.metadata_location,
                    )
                    .await
                    {
                        Ok(n) if n > 0 => {
                            tracing::info!(table = %self.name, files = n, "removed unreferenced files")
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(table = %self.name, error = %e, "orphan file sweep failed")
                        }
                    }
                }
                Ok(state)
            }
            Err(e) => {
                self.committed.send_modify(|s| {
                    s.last_error = Some(e.to_string());
                    s.failures += 1;
                });
                Err(e)
            }
        }
    }

    async fn commit_pending(
        &self,
        pending: &mut Pending,
        force_compaction: bool,
    ) -> Result<CommitState> {
        let file_io = self.warehouse.file_io();
        let current = self.committed.borrow().clone();
        let table_location = current
            .metadata
            .location()
            .trim_end_matches('/')
            .to_string();
        let new_data_path = || format!("{table_location}/data/{}.parquet", Uuid::now_v7());

        // Append-only tables merge small files on commit. Keyed tables do not yet: merging
        // moves row positions, which the key index and deletion vectors would have to follow.
        let mut removed = HashSet::new();
        let mut merged_rows: Vec<RecordBatch> = Vec::new();
        let truncating = pending.truncated.is_some();
        if let Some(files) = &pending.truncated {
            removed.extend(files.iter().cloned());
        } else if self.schema.primary_key.is_empty() {
            let small_limit = self.config.target_file_size / 2;
            let small: Vec<&DataFile> = pending
                .live_files
                .iter()
                .filter(|f| f.file_size_in_bytes() < small_limit)
                .collect();
            if small.len() + 1 >= self.config.merge_fanout.max(2)
                || (force_compaction && small.len() >= 2)
            {
                for file in &small {
                    merged_rows.extend(
                        data_files::read_data_file(
                            &self.warehouse,
                            file.file_path(),
                            &self.arrow_schema,
                        )
                        .await?,
                    );
                    removed.insert(file.file_path().to_string());
                }
            }
        }

        let mut added = Vec::new();
        let mut new_paths = Vec::new();
        for generation in &pending.generations {
            match generation.file_id {
                Some(file_id) => {
                    // One file per generation: its rows' positions are already in the index.
                    let path = new_data_path();
                    added.push(
                        data_files::write_data_file(
                            &file_io,
                            &self.iceberg_schema,
                            &path,
                            &generation.batches,
                        )
                        .await?,
                    );
                    if let Some(segment) = &generation.segment {
                        let segment_file = index_segment::segment_path(&self.index_dir, &path);
                        if let Some(hasher) = &self.key_hasher {
                            index_segment::write_segment(&segment_file, segment, hasher)?;
                        }
                    }
                    new_paths.push((file_id, path));
                }
                None => merged_rows.extend(generation.batches.iter().cloned()),
            }
        }
        for chunk in chunk_by_size(&merged_rows, self.arrow_bytes_per_file()) {
            added.push(
                data_files::write_data_file(
                    &file_io,
                    &self.iceberg_schema,
                    &new_data_path(),
                    chunk,
                )
                .await?,
            );
        }

        let compaction = if self.schema.primary_key.is_empty() || truncating {
            None
        } else {
            self.compact_keyed(pending, force_compaction).await?
        };
        if let Some(c) = &compaction {
            removed.extend(c.removed_paths.iter().cloned());
            added.extend(c.data_file.clone());
        }

        let mut paths = pending.paths.clone();
        paths.extend(new_paths.iter().cloned());
        let mut vectors = Vec::new();
        for (file_id, positions) in &pending.deletes {
            if compaction
                .as_ref()
                .is_some_and(|c| c.mapping.contains_key(file_id))
            {
                continue; // applied by the rewrite
            }
            let Some(path) = paths.get(file_id) else {
                return Err(EngineError::Catalog(format!(
                    "deletes for unknown data file id {file_id}"
                )));
            };
            let mut merged = pending.committed_dvs.get(path).cloned().unwrap_or_default();
            merged |= positions;
            vectors.push((path.clone(), merged));
        }
        // One Puffin file per deletion vector. The spec allows several in one file, but
        // DuckDB 1.5 and PyIceberg 0.12 then sometimes apply one file's vector to another data
        // file (seen in the postgres_cdc tests): every reader must read our tables right.
        let mut added_deletes = Vec::with_capacity(vectors.len());
        for vector in &vectors {
            let location = format!("{table_location}/data/{}-deletes.puffin", Uuid::now_v7());
            added_deletes.extend(
                deletion_vector::write_deletion_vectors(
                    &file_io,
                    &location,
                    std::slice::from_ref(vector),
                )
                .await?,
            );
        }

        let changes = SnapshotChanges {
            added: added.clone(),
            removed: removed.clone(),
            added_deletes,
            checkpoint: pending.through_lsn,
            source_checkpoints: pending.source_checkpoints.clone(),
            retention: self.config.retention,
        };
        let committed = commit::write_snapshot(
            &file_io,
            &current.metadata,
            &current.metadata_location,
            changes,
        )
        .await?;
        self.catalog.swap_metadata(
            &self.namespace,
            &self.table,
            &current.metadata_location,
            &committed.location,
        )?;
        tracing::debug!(table = %self.name, lsn = pending.through_lsn, files = added.len(),
            merged = removed.len(), deletion_vectors = vectors.len(), "committed snapshot");
        pending
            .live_files
            .retain(|f| !removed.contains(f.file_path()));
        pending.live_files.extend(added);
        pending.paths = paths;
        for (path, merged) in vectors {
            pending.committed_dvs.insert(path, merged);
        }
        if let Some(c) = compaction {
            self.apply_keyed_compaction(pending, c);
        }
        if truncating {
            pending.paths.retain(|_, path| !removed.contains(path));
            pending
                .committed_dvs
                .retain(|path, _| !removed.contains(path));
            pending.truncated = None;
        }
        pending.generations.clear();
        pending.deletes.clear();
        pending.source_checkpoints.clear();
        let through = pending.through_lsn;
        let state = CommitState {
            metadata: Arc::new(committed.metadata),
            metadata_location: committed.location,
            committed_lsn: through,
            last_error: None,
            failures: current.failures,
        };
        self.committed.send_replace(state.clone());
        if let Some(wal) = self.wal.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if let Err(e) = wal.truncate_through(through) {
                tracing::warn!(table = %self.name, error = %e, "cannot delete committed log segments");
            }
        }
        Ok(state)
    }

    /// Removes every row: what is buffered or pending is discarded, and a snapshot that removes
    /// every live data file (with its deletion vector) is committed now. Writes accepted before
    /// the call are covered by it; `source_checkpoint` is recorded like a batch's.
    pub async fn truncate(
        &self,
        source_checkpoint: Option<(String, String)>,
    ) -> Result<CommitState> {
        {
            let mut pending = self.pending.lock().await;
            {
                let mut buffer = self.lock_buffer();
                if buffer.dropped {
                    return Err(EngineError::TableNotFound(self.name.clone()));
                }
                buffer.batches.clear();
                buffer.rows = 0;
                buffer.bytes = 0;
                if let Some(keys) = buffer.keyed.as_mut() {
                    keys.clear();
                }
                // Everything logged so far is superseded: the snapshot's checkpoint covers it.
                pending.through_lsn = buffer.next_lsn - 1;
                let checkpoints = std::mem::take(&mut buffer.source_checkpoints);
                pending.source_checkpoints.extend(checkpoints);
                if let Some((source, checkpoint)) = source_checkpoint {
                    pending.source_checkpoints.insert(source, checkpoint);
                }
                if let Some(wal) = self.wal.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    wal.rotate(buffer.next_lsn);
                }
            }
            pending.generations.clear();
            pending.deletes.clear();
            // Files of an earlier truncation that has not committed yet are still live.
            let mut files = pending.truncated.take().unwrap_or_default();
            files.extend(pending.live_files.iter().map(|f| f.file_path().to_string()));
            files.sort();
            files.dedup();
            pending.truncated = Some(files);
        }
        self.commit().await
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

    /// Picks keyed files to rewrite (small ones once enough accumulate, or all small ones when
    /// forced; any whose deleted fraction passed the threshold) and writes them as one file
    /// without their deleted rows.
    async fn compact_keyed(
        &self,
        pending: &Pending,
        force: bool,
    ) -> Result<Option<KeyedCompaction>> {
        let ids: HashMap<&str, u32> = pending
            .paths
            .iter()
            .map(|(id, path)| (path.as_str(), *id))
            .collect();
        let dead = |file: &DataFile| -> RoaringTreemap {
            let mut dead = pending
                .committed_dvs
                .get(file.file_path())
                .cloned()
                .unwrap_or_default();
            if let Some(pending_deletes) = ids
                .get(file.file_path())
                .and_then(|id| pending.deletes.get(id))
            {
                dead |= pending_deletes;
            }
            dead
        };
        let small_limit = self.config.target_file_size / 2;
        let small: Vec<&DataFile> = pending
            .live_files
            .iter()
            .filter(|f| f.file_size_in_bytes() < small_limit)
            .collect();
        let merge_small =
            small.len() >= self.config.merge_fanout.max(2) || (force && small.len() >= 2);
        let mut candidates: Vec<&DataFile> = Vec::new();
        for file in &pending.live_files {
            let deleted = dead(file).len() as f64 / file.record_count().max(1) as f64;
            let heavy = deleted >= self.config.rewrite_deleted_fraction || (force && deleted > 0.0);
            let is_small = merge_small && file.file_size_in_bytes() < small_limit;
            if (heavy || is_small) && ids.contains_key(file.file_path()) {
                candidates.push(file);
            }
        }
        if candidates.is_empty() || (candidates.len() == 1 && dead(candidates[0]).is_empty()) {
            return Ok(None);
        }
        let Some(hasher) = self.key_hasher else {
            return Ok(None);
        };
        let file_id = {
            let mut buffer = self.lock_buffer();
            match buffer.keyed.as_mut() {
                Some(keys) => keys.allocate_file_id(),
                None => return Ok(None),
            }
        };
        let key_columns: Vec<usize> = self
            .schema
            .primary_key
            .iter()
            .filter_map(|k| self.schema.column_index(k))
            .collect();
        let mut kept = Vec::new();
        let mut hashes = Vec::new();
        let mut mapping = HashMap::new();
        let mut next_position = 0u32;
        for file in &candidates {
            let dead = dead(file);
            let mut map = Vec::with_capacity(file.record_count() as usize);
            let mut position = 0u64;
            for batch in
                data_files::read_data_file(&self.warehouse, file.file_path(), &self.arrow_schema)
                    .await?
            {
                let keep: Vec<bool> = (0..batch.num_rows() as u64)
                    .map(|i| !dead.contains(position + i))
                    .collect();
                position += batch.num_rows() as u64;
                for k in &keep {
                    if *k {
                        map.push(next_position);
                        next_position += 1;
                    } else {
                        map.push(u32::MAX);
                    }
                }
                let batch = arrow_select::filter::filter_record_batch(
                    &batch,
                    &arrow_array::BooleanArray::from(keep),
                )?;
                if batch.num_rows() > 0 {
                    hashes.extend(hasher.hash_rows(&batch, &key_columns));
                    kept.push(batch);
                }
            }
            mapping.insert(ids[file.file_path()], map);
        }
        let segment = Segment::from_row_hashes(&hashes);
        let (path, data_file) = if kept.is_empty() {
            (None, None)
        } else {
            let table_location = self
                .committed
                .borrow()
                .metadata
                .location()
                .trim_end_matches('/')
                .to_string();
            let path = format!("{table_location}/data/{}.parquet", Uuid::now_v7());
            let data_file = data_files::write_data_file(
                &self.warehouse.file_io(),
                &self.iceberg_schema,
                &path,
                &kept,
            )
            .await?;
            index_segment::write_segment(
                &index_segment::segment_path(&self.index_dir, &path),
                &segment,
                &hasher,
            )?;
            (Some(path), Some(data_file))
        };
        tracing::debug!(table = %self.name, files = candidates.len(), rows = next_position, "compacted keyed files");
        Ok(Some(KeyedCompaction {
            file_id,
            path,
            data_file,
            segment,
            mapping,
            removed_paths: candidates
                .iter()
                .map(|f| f.file_path().to_string())
                .collect(),
        }))
    }

    /// After the snapshot with a keyed compaction is committed: moves the index to the new
    /// file and carries deletes that landed on the old files meanwhile over to it.
    fn apply_keyed_compaction(&self, pending: &mut Pending, c: KeyedCompaction) {
        let old_ids: Vec<u32> = c.mapping.keys().copied().collect();
        {
            let mut buffer = self.lock_buffer();
            let Some(keys) = buffer.keyed.as_mut() else {
                return;
            };
            let mut carried = RoaringTreemap::new();
            for id in &old_ids {
                if let Some(late) = keys.file_deletes.remove(id) {
                    for position in late.iter() {
                        if let Some(&new) = c.mapping[id].get(position as usize) {
                            if new != u32::MAX {
                                carried.insert(new as u64);
                            }
                        }
                    }
                }
            }
            if !carried.is_empty() {
                *keys.file_deletes.entry(c.file_id).or_default() |= carried.clone();
            }
            keys.index
                .replace_segments(&old_ids, c.file_id, c.segment, Some(carried));
        }
        for id in &old_ids {
            if let Some(path) = pending.paths.remove(id) {
                pending.committed_dvs.remove(&path);
                let _ = std::fs::remove_file(index_segment::segment_path(&self.index_dir, &path));
            }
        }
        if let Some(path) = c.path {
            pending.paths.insert(c.file_id, path);
        }
    }

    /// Arrow bytes per output file: Parquet with zstd is typically 3-5x smaller than Arrow
    /// in memory, so this aims the written file near the target.
    fn arrow_bytes_per_file(&self) -> usize {
        (self.config.target_file_size as usize).saturating_mul(3)
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
    /// Buffers a batch (already in the log); returns how many keys matched live rows.
    /// `hashes`: the batch's key hashes if already computed (keyed tables), else hashed here.
    fn append(
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

/// Splits batches into consecutive groups of about `max_bytes` Arrow bytes each.
fn chunk_by_size(batches: &[RecordBatch], max_bytes: usize) -> Vec<&[RecordBatch]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, batch) in batches.iter().enumerate() {
        bytes += batch.get_array_memory_size();
        if bytes >= max_bytes {
            chunks.push(&batches[start..=i]);
            start = i + 1;
            bytes = 0;
        }
    }
    if start < batches.len() {
        chunks.push(&batches[start..]);
    }
    chunks
}
