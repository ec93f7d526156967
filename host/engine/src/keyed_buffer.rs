//! Upserts and deletes on keyed tables: the buffer-side bookkeeping.
//!
//! Every write resolves its key through the [`KeyIndex`]:
//! - a key in the in-memory buffer is deleted by marking its buffer row dead; at commit the
//!   dead rows are filtered out, so a row deleted before it was committed never reaches Iceberg;
//! - a key in a committed (or committing) data file becomes a position in that file's pending
//!   deletion vector, committed with the next snapshot (see `deletion_vector.rs`).

use std::collections::HashMap;

use arrow_array::{BooleanArray, RecordBatch};
use arrow_select::filter::filter_record_batch;
use roaring::{RoaringBitmap, RoaringTreemap};

use crate::batch::Operation;
use crate::error::Result;
use crate::key_index::{hash_keys, KeyIndex, Location};

/// Key bookkeeping of a keyed table, guarded by the table's buffer lock.
#[derive(Default)]
pub struct KeyedBuffer {
    pub key_columns: Vec<usize>,
    pub index: KeyIndex,
    /// Key hash of every buffered row, in buffer order.
    buffer_hashes: Vec<u64>,
    /// Buffered rows deleted or replaced since they were buffered.
    buffer_deleted: RoaringBitmap,
    /// Positions deleted in data files, not yet in a committed deletion vector.
    pub file_deletes: HashMap<u32, RoaringTreemap>,
    next_file_id: u32,
}

/// The outcome of applying a keyed batch.
pub struct KeyedApply {
    /// The rows to append to the buffer (inserts and upserts, deletes removed).
    pub rows: RecordBatch,
    /// Rows whose key matched a live row (replaced by an upsert or removed by a delete).
    pub matched: usize,
}

/// The buffer's rows at commit time, relabelled as a future data file.
pub struct TakenGeneration {
    pub file_id: u32,
    pub rows: Option<RecordBatch>,
}

impl KeyedBuffer {
    pub fn new(key_columns: Vec<usize>) -> Self {
        KeyedBuffer {
            key_columns,
            ..Default::default()
        }
    }

    /// Allocates a table-local id for a data file (used by index locations).
    pub fn allocate_file_id(&mut self) -> u32 {
        let id = self.next_file_id;
        self.next_file_id += 1;
        id
    }

    /// Rows of `rows` whose `insert` would hit an existing key (in the table or earlier in the
    /// same batch). Checked before anything is written, so a conflicting request writes nothing.
    pub fn insert_conflicts(&self, operations: &[Operation], rows: &RecordBatch) -> Vec<usize> {
        let hashes = hash_keys(rows, &self.key_columns);
        let mut overlay: HashMap<u64, bool> = HashMap::new();
        let mut conflicts = Vec::new();
        for (row, (op, hash)) in operations.iter().zip(hashes).enumerate() {
            let present = *overlay
                .get(&hash)
                .unwrap_or(&self.index.get(hash).is_some());
            match op {
                Operation::Insert if present => conflicts.push(row),
                Operation::Insert | Operation::Upsert => {
                    overlay.insert(hash, true);
                }
                Operation::Delete => {
                    overlay.insert(hash, false);
                }
            }
        }
        conflicts
    }

    /// Applies a batch in row order. An insert of an existing key (only possible when
    /// replaying the log) behaves as an upsert.
    pub fn apply(&mut self, operations: &[Operation], rows: &RecordBatch) -> Result<KeyedApply> {
        let hashes = hash_keys(rows, &self.key_columns);
        let mut keep = Vec::with_capacity(operations.len());
        let mut matched = 0;
        for (op, hash) in operations.iter().zip(hashes) {
            let previous = match op {
                Operation::Insert | Operation::Upsert => {
                    let position = self.buffer_hashes.len() as u32;
                    self.buffer_hashes.push(hash);
                    keep.push(true);
                    self.index.insert(hash, Location::Buffer(position))
                }
                Operation::Delete => {
                    keep.push(false);
                    self.index.remove(hash)
                }
            };
            if let Some(previous) = previous {
                matched += 1;
                self.delete_at(previous);
            }
        }
        let rows = if keep.iter().all(|k| *k) {
            rows.clone()
        } else {
            filter_record_batch(rows, &BooleanArray::from(keep))?
        };
        Ok(KeyedApply { rows, matched })
    }

    fn delete_at(&mut self, location: Location) {
        match location {
            Location::Buffer(position) => {
                self.buffer_deleted.insert(position);
            }
            Location::File(file, position) => {
                self.file_deletes
                    .entry(file)
                    .or_default()
                    .insert(position as u64);
            }
        }
    }

    /// Takes the buffered rows (all of `buffered`, in buffer order) for a commit: dead rows are
    /// dropped, and the index moves the live ones to their positions in the future data file.
    pub fn take(&mut self, buffered: Vec<RecordBatch>) -> Result<TakenGeneration> {
        let file_id = self.allocate_file_id();
        let mut live_position = 0u32;
        let mut batches = Vec::with_capacity(buffered.len());
        let mut position = 0usize;
        for batch in buffered {
            let n = batch.num_rows();
            let mut keep = Vec::with_capacity(n);
            for offset in 0..n {
                let p = (position + offset) as u32;
                let live = !self.buffer_deleted.contains(p);
                if live {
                    self.index.relocate(
                        self.buffer_hashes[p as usize],
                        Location::Buffer(p),
                        Location::File(file_id, live_position),
                    );
                    live_position += 1;
                }
                keep.push(live);
            }
            position += n;
            if keep.iter().all(|k| *k) {
                batches.push(batch);
            } else if keep.iter().any(|k| *k) {
                batches.push(filter_record_batch(&batch, &BooleanArray::from(keep))?);
            }
        }
        self.buffer_hashes.clear();
        self.buffer_deleted.clear();
        let rows = match batches.len() {
            0 => None,
            _ => Some(arrow_select::concat::concat_batches(
                &batches[0].schema(),
                &batches,
            )?),
        };
        Ok(TakenGeneration { file_id, rows })
    }

    /// Registers the live rows of a committed data file (index rebuild at open).
    pub fn index_file(
        &mut self,
        file_id: u32,
        rows: &RecordBatch,
        first_position: u32,
        deleted: Option<&RoaringTreemap>,
    ) {
        for (offset, hash) in hash_keys(rows, &self.key_columns).into_iter().enumerate() {
            let position = first_position + offset as u32;
            if deleted.is_some_and(|d| d.contains(position as u64)) {
                continue;
            }
            self.index.insert(hash, Location::File(file_id, position));
        }
    }
}
