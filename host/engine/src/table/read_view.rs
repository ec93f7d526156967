//! Real-time reads: one consistent view of a table's rows — the committed snapshot's data
//! files, each with its deletion vector and the deletes not committed yet, plus the rows still
//! in memory (buffered, or taken by a commit that has not published its snapshot).
//!
//! Consistency: every transition that moves rows or deletes between the buffer, a commit in
//! flight and the committed snapshot (taking the buffer, publishing a snapshot, a keyed
//! compaction moving late deletes to its new file, a rebase, a truncation) updates
//! [`ReadState`] inside the same buffer-lock section as the buffer-side change. A view copies
//! the state and the buffer under that one lock, so a commit or a file rewrite during a query
//! never shows a row twice or hides one. Taking a view holds the buffer lock only to clone
//! `Arc`s and small bitmaps; filtering and file I/O happen after it is released, and nothing
//! waits for a commit.

use std::ops::Range;

use arrow_array::BooleanArray;
use arrow_select::filter::filter_record_batch;
use bytes::Bytes;
use roaring::RoaringBitmap;

use super::*;

/// What a view needs of the committed snapshot and of a commit in flight; published under the
/// buffer lock (see the module doc).
#[derive(Default)]
pub(crate) struct ReadState {
    committed: Arc<CommittedFiles>,
    /// Generations taken from the buffer and not yet in a committed snapshot.
    inflight: Vec<(Option<u32>, Vec<RecordBatch>)>,
    /// Deletes taken from the buffer and not yet in a committed deletion vector, by file id.
    inflight_deletes: HashMap<u32, RoaringTreemap>,
}

/// The committed part of a [`ReadState`], shared between views until the next commit.
#[derive(Default)]
struct CommittedFiles {
    snapshot_id: Option<i64>,
    files: Vec<CommittedFile>,
}

/// A live data file of the committed snapshot.
struct CommittedFile {
    location: String,
    size: u64,
    rows: u64,
    /// The file's id in the key index (keyed tables).
    id: Option<u32>,
    /// Its committed deletion vector.
    dv: Option<Arc<RoaringTreemap>>,
}

impl ReadState {
    /// The state `pending` describes: its live files (less those a pending truncation
    /// removes) and what it holds in flight.
    pub(super) fn of(pending: &Pending, snapshot_id: Option<i64>) -> ReadState {
        let ids: HashMap<&str, u32> = pending
            .paths
            .iter()
            .map(|(id, path)| (path.as_str(), *id))
            .collect();
        let truncated: HashSet<&str> = pending
            .truncated
            .iter()
            .flatten()
            .map(|p| p.as_str())
            .collect();
        let files = pending
            .live_files
            .iter()
            .filter(|f| !truncated.contains(f.file_path()))
            .map(|f| {
                let path = f.file_path();
                CommittedFile {
                    location: path.to_string(),
                    size: f.file_size_in_bytes(),
                    rows: f.record_count(),
                    id: ids.get(path).copied(),
                    dv: pending.committed_dvs.get(path).cloned().map(Arc::new),
                }
            })
            .collect();
        ReadState {
            committed: Arc::new(CommittedFiles { snapshot_id, files }),
            inflight: pending
                .generations
                .iter()
                .map(|g| (g.file_id, g.batches.clone()))
                .collect(),
            inflight_deletes: pending.deletes.clone(),
        }
    }

    /// This state with `pending`'s in-flight part (the committed files are unchanged).
    pub(super) fn with_inflight(&self, pending: &Pending) -> ReadState {
        ReadState {
            committed: self.committed.clone(),
            inflight: pending
                .generations
                .iter()
                .map(|g| (g.file_id, g.batches.clone()))
                .collect(),
            inflight_deletes: pending.deletes.clone(),
        }
    }
}

/// A table's rows at one instant: committed Parquet files with the positions to skip, and
/// the live rows still in memory. Taken by [`crate::Engine::read_view`] (current rows) or
/// [`crate::Engine::read_view_at`] (one committed snapshot).
#[derive(Debug)]
pub struct ReadView {
    /// The table's API name.
    pub name: String,
    /// Iceberg namespace.
    pub namespace: String,
    /// Iceberg table name within the namespace.
    pub table: String,
    /// The table's Arrow schema; in-memory batches have exactly this schema, data files are
    /// read into it (columns matched by Iceberg field id; a column a file lacks reads as its
    /// `initial-default` or null).
    pub schema: SchemaRef,
    /// The committed snapshot the files belong to (`None` before the first commit).
    pub snapshot_id: Option<i64>,
    /// Live data files of that snapshot.
    pub files: Vec<ViewFile>,
    /// Live rows not yet in a committed data file (empty for a snapshot view).
    pub batches: Vec<RecordBatch>,
    warehouse: Warehouse,
}

/// One data file of a [`ReadView`]. Equal files have equal deleted rows (a query may reuse
/// what it derived from an equal file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewFile {
    /// The file's location (a URI in the warehouse).
    pub location: String,
    /// Size in bytes.
    pub size: u64,
    /// Rows in the file, deleted ones included.
    pub record_count: u64,
    deleted: RoaringTreemap,
}

impl ViewFile {
    /// How many of the file's rows are deleted (committed or pending).
    pub fn deleted_count(&self) -> u64 {
        self.deleted.len()
    }

    /// Whether row `position` of the file is deleted.
    pub fn is_deleted(&self, position: u64) -> bool {
        self.deleted.contains(position)
    }

    /// The file's rows as alternating runs: `(true, n)` n live rows, `(false, n)` n deleted
    /// rows, covering `record_count` rows in order (a reader's row selection).
    pub fn live_runs(&self) -> Vec<(bool, u64)> {
        let mut runs: Vec<(bool, u64)> = Vec::new();
        let mut next = 0u64;
        let mut push = |live: bool, n: u64| match runs.last_mut() {
            Some((l, count)) if *l == live => *count += n,
            _ if n > 0 => runs.push((live, n)),
            _ => {}
        };
        for position in self.deleted.iter() {
            if position >= self.record_count {
                break;
            }
            push(true, position - next);
            push(false, 1);
            next = position + 1;
        }
        push(true, self.record_count.saturating_sub(next));
        runs
    }
}

impl ReadView {
    /// Reads `range` of the data file at `location` (served from the local cache when there).
    pub async fn read_range(&self, location: &str, range: Range<u64>) -> Result<Bytes> {
        let reader = self
            .warehouse
            .file_io()
            .new_input(location)?
            .reader()
            .await?;
        Ok(reader.read(range).await?)
    }

    /// Every live row of the view, files read whole (no pushdown): the plain reference
    /// reader, for tests and small tables.
    pub async fn read_all(&self) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        for file in &self.files {
            let mut first = 0u64;
            for batch in
                data_files::read_data_file(&self.warehouse, &file.location, &self.schema).await?
            {
                let n = batch.num_rows() as u64;
                let dead = file.deleted.range_cardinality(first..first + n);
                out.extend(retain(&batch, n, dead, |r| !file.is_deleted(first + r))?);
                first += n;
            }
        }
        out.extend(self.batches.iter().cloned());
        Ok(out)
    }

    /// Rows the view holds: live rows in data files plus in-memory rows.
    pub fn live_rows(&self) -> u64 {
        let files: u64 = self
            .files
            .iter()
            .map(|f| f.record_count.saturating_sub(f.deleted_count()))
            .sum();
        files
            + self
                .batches
                .iter()
                .map(|b| b.num_rows() as u64)
                .sum::<u64>()
    }
}

impl Table {
    /// Publishes the read state `pending` describes (the buffer lock is held).
    pub(super) fn publish_read(&self, buffer: &mut Buffer, pending: &Pending) {
        let snapshot_id = self.committed.borrow().metadata.current_snapshot_id();
        buffer.read = Arc::new(ReadState::of(pending, snapshot_id));
    }

    /// Like [`Table::publish_read`] for a snapshot not yet in the committed watch.
    pub(super) fn publish_read_at(
        &self,
        buffer: &mut Buffer,
        pending: &Pending,
        snapshot_id: Option<i64>,
    ) {
        buffer.read = Arc::new(ReadState::of(pending, snapshot_id));
    }

    /// The table's live rows now (see the module doc).
    pub fn read_view(&self) -> Result<ReadView> {
        let (state, batches, buffer_deleted, file_deletes) = {
            let buffer = self.lock_buffer();
            if buffer.dropped && !buffer.reopening {
                return Err(EngineError::TableNotFound(self.name.clone()));
            }
            let (dead, deletes) = match &buffer.keyed {
                Some(k) => (k.buffer_deleted().clone(), k.file_deletes.clone()),
                None => (RoaringBitmap::new(), HashMap::new()),
            };
            (buffer.read.clone(), buffer.batches.clone(), dead, deletes)
        };
        let deletes_of = |id: Option<u32>| {
            let mut all = RoaringTreemap::new();
            if let Some(id) = id {
                for source in [&state.inflight_deletes, &file_deletes] {
                    if let Some(d) = source.get(&id) {
                        all |= d;
                    }
                }
            }
            all
        };
        let files = state
            .committed
            .files
            .iter()
            .map(|file| {
                let mut deleted = deletes_of(file.id);
                if let Some(dv) = &file.dv {
                    deleted |= dv.as_ref();
                }
                ViewFile {
                    location: file.location.clone(),
                    size: file.size,
                    record_count: file.rows,
                    deleted,
                }
            })
            .collect();
        let mut live = Vec::new();
        for (id, generation) in &state.inflight {
            let dead = deletes_of(*id);
            let mut first = 0u64;
            for batch in generation {
                let n = batch.num_rows() as u64;
                let keep = |r: u64| !dead.contains(first + r);
                let gone = dead.range_cardinality(first..first + n);
                live.extend(retain(batch, n, gone, keep)?);
                first += n;
            }
        }
        let mut first = 0u64;
        for batch in &batches {
            let n = batch.num_rows() as u64;
            let keep = |r: u64| !buffer_deleted.contains((first + r) as u32);
            let gone = match n {
                0 => 0,
                _ => buffer_deleted.range_cardinality(first as u32..=(first + n - 1) as u32),
            };
            live.extend(retain(batch, n, gone, keep)?);
            first += n;
        }
        Ok(ReadView {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            table: self.table.clone(),
            schema: self.arrow_schema.clone(),
            snapshot_id: state.committed.snapshot_id,
            files,
            batches: live,
            warehouse: self.warehouse.clone(),
        })
    }

    /// The live rows of committed snapshot `snapshot_id` (its files and deletion vectors;
    /// nothing buffered); `None` when the table's metadata has no such snapshot.
    pub async fn read_view_at(&self, snapshot_id: i64) -> Result<Option<ReadView>> {
        let metadata = self.committed.borrow().metadata.clone();
        let Some(snapshot) = metadata.snapshot_by_id(snapshot_id) else {
            return Ok(None);
        };
        let file_io = self.warehouse.file_io();
        let mut data = Vec::new();
        let mut dvs: HashMap<String, RoaringTreemap> = HashMap::new();
        for manifest in commit::snapshot_manifests(&file_io, &metadata, snapshot).await? {
            for entry in manifest.load_manifest(&file_io).await?.entries() {
                if !entry.is_alive() {
                    continue;
                }
                let file = entry.data_file();
                match file.content_type() {
                    DataContentType::Data => data.push(file.clone()),
                    _ => {
                        if let Some(target) = file.referenced_data_file() {
                            let positions =
                                deletion_vector::read_deletion_vector(&self.warehouse, file)
                                    .await?;
                            *dvs.entry(target).or_default() |= positions;
                        }
                    }
                }
            }
        }
        let files = data
            .iter()
            .map(|f| ViewFile {
                location: f.file_path().to_string(),
                size: f.file_size_in_bytes(),
                record_count: f.record_count(),
                deleted: dvs.remove(f.file_path()).unwrap_or_default(),
            })
            .collect();
        Ok(Some(ReadView {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            table: self.table.clone(),
            schema: self.arrow_schema.clone(),
            snapshot_id: Some(snapshot_id),
            files,
            batches: Vec::new(),
            warehouse: self.warehouse.clone(),
        }))
    }
}

/// The rows of `batch` (of `n` rows, `dead` of them deleted) for which `keep(row)` holds;
/// nothing if none do. Without deleted rows the batch is shared, not scanned: a view of a
/// large insert-only buffer costs no per-row work.
fn retain(
    batch: &RecordBatch,
    n: u64,
    dead: u64,
    keep: impl Fn(u64) -> bool,
) -> Result<Option<RecordBatch>> {
    if dead == 0 {
        return Ok(Some(batch.clone()));
    }
    if dead >= n {
        return Ok(None);
    }
    let mask: Vec<bool> = (0..n).map(keep).collect();
    Ok(Some(filter_record_batch(batch, &BooleanArray::from(mask))?))
}
