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
use crate::key_index::{FileKeys, KeyHash, KeyHashMap, KeyHasher, KeyIndex, Location};
use crate::partition::{take_rows, FilePartition, Partitioner};

/// The most key hashes reserved ahead for the next buffer.
const MAX_HASHES_RESERVE: usize = 1 << 20;

/// Key bookkeeping of a keyed table, guarded by the table's buffer lock.
pub struct KeyedBuffer {
    pub key_columns: Vec<usize>,
    /// Hashes keys under the table's secret.
    pub hasher: KeyHasher,
    pub index: KeyIndex,
    /// Key hash of every buffered row, in buffer order.
    buffer_hashes: Vec<KeyHash>,
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

/// The buffer's live rows at commit time, relabelled as a future data file.
pub struct TakenGeneration {
    pub file_id: u32,
    /// Its rows, in file order (positions count across the batches).
    pub rows: Vec<RecordBatch>,
    /// The file's key-index file, to persist beside the file.
    pub keys: FileKeys,
    /// The partition all its rows are in.
    pub partition: FilePartition,
}

impl KeyedBuffer {
    pub fn new(key_columns: Vec<usize>, hasher: KeyHasher) -> Self {
        KeyedBuffer {
            key_columns,
            hasher,
            index: KeyIndex::default(),
            buffer_hashes: Vec::new(),
            buffer_deleted: RoaringBitmap::new(),
            file_deletes: HashMap::new(),
            next_file_id: 0,
        }
    }

    /// Buffered rows (by position in buffer order) deleted or replaced since buffered.
    pub fn buffer_deleted(&self) -> &RoaringBitmap {
        &self.buffer_deleted
    }

    /// Allocates a table-local id for a data file (used by index locations).
    pub fn allocate_file_id(&mut self) -> u32 {
        let id = self.next_file_id;
        self.next_file_id += 1;
        id
    }

    /// Forgets every key (the table was truncated). File ids keep counting up, so an id is
    /// never reused for another file.
    pub fn clear(&mut self) {
        self.index = KeyIndex::default();
        self.buffer_hashes.clear();
        self.buffer_deleted.clear();
        self.file_deletes.clear();
    }

    /// Rows of `rows` whose `insert` would hit an existing key (in the table or earlier in the
    /// same batch). Checked before anything is written, so a conflicting request writes nothing.
    pub fn insert_conflicts(&self, operations: &[Operation], hashes: &[KeyHash]) -> Vec<usize> {
        if !operations.contains(&Operation::Insert) {
            return Vec::new();
        }
        let mut overlay: KeyHashMap<bool> = KeyHashMap::default();
        let mut conflicts = Vec::new();
        for (row, (op, &hash)) in operations.iter().zip(hashes).enumerate() {
            let present = match overlay.get(&hash) {
                Some(present) => *present,
                None => self.index.get(hash).is_some(),
            };
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

    /// The key hash of every row of `rows`.
    pub fn hash(&self, rows: &RecordBatch) -> Vec<KeyHash> {
        self.hasher.hash_rows(rows, &self.key_columns)
    }

    /// Applies a batch in row order. An insert of an existing key (only possible when
    /// replaying the log) behaves as an upsert. `hashes` are the rows' key hashes
    /// ([`KeyedBuffer::hash`]), computed once per batch.
    ///
    /// A write looks its key up once: inserting it into the buffer map tells whether a
    /// buffered row had it (then no file can hold it live); only otherwise are the files
    /// consulted, and not at all while no file has keys (a just-created or truncated table:
    /// the plain-append path of an initial copy, where the map insert is the only check and
    /// finds duplicates within and across batches).
    pub fn apply(
        &mut self,
        operations: &[Operation],
        rows: &RecordBatch,
        hashes: &[KeyHash],
    ) -> Result<KeyedApply> {
        let mut keep = Vec::with_capacity(operations.len());
        let mut matched = 0;
        let no_files = self.index.has_no_files();
        for (op, &hash) in operations.iter().zip(hashes) {
            let is_write = *op != Operation::Delete;
            keep.push(is_write);
            if is_write {
                let row = self.buffer_hashes.len() as u32;
                self.buffer_hashes.push(hash);
                if let Some(replaced) = self.index.insert_buffered(hash, row) {
                    matched += 1;
                    self.buffer_deleted.insert(replaced);
                } else if !no_files {
                    if let Some(previous) = self.index.get_in_files(hash) {
                        matched += 1;
                        self.kill(hash, previous);
                    }
                }
            } else if let Some(previous) = self.index.get(hash) {
                matched += 1;
                self.kill(hash, previous);
            }
        }
        let rows = if keep.iter().all(|k| *k) {
            rows.clone()
        } else {
            filter_record_batch(rows, &BooleanArray::from(keep))?
        };
        Ok(KeyedApply { rows, matched })
    }

    fn kill(&mut self, hash: KeyHash, location: Location) {
        self.index.kill(hash, location);
        match location {
            Location::Buffer(row) => {
                self.buffer_deleted.insert(row);
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
    /// dropped, the live ones are split by partition (one future data file each, in order of
    /// first appearance), and the index points each at its position in its file.
    pub fn take(
        &mut self,
        buffered: Vec<RecordBatch>,
        partitioner: &Partitioner,
    ) -> Result<Vec<TakenGeneration>> {
        let file_id = self.allocate_file_id();
        let mut live_hashes = Vec::new();
        let mut batches = Vec::with_capacity(buffered.len());
        let mut row = 0usize;
        for batch in buffered {
            let n = batch.num_rows();
            let keep: Vec<bool> = (row..row + n)
                .map(|r| !self.buffer_deleted.contains(r as u32))
                .collect();
            for (r, live) in (row..row + n).zip(&keep) {
                if *live {
                    live_hashes.push(self.buffer_hashes[r]);
                }
            }
            row += n;
            if keep.iter().all(|k| *k) {
                batches.push(batch);
            } else if keep.iter().any(|k| *k) {
                batches.push(filter_record_batch(&batch, &BooleanArray::from(keep))?);
            }
        }
        let reserve = self.buffer_hashes.len().min(MAX_HASHES_RESERVE);
        self.buffer_hashes = Vec::with_capacity(reserve);
        self.buffer_deleted.clear();
        if batches.is_empty() {
            self.index.seal_buffer(file_id, FileKeys::default());
            return Ok(Vec::new());
        }
        if !partitioner.is_partitioned() {
            // One file of the live rows as they are: nothing to regroup or copy.
            let keys = FileKeys::from_row_hashes(&live_hashes);
            self.index.seal_buffer(file_id, keys.clone());
            return Ok(vec![TakenGeneration {
                file_id,
                rows: batches,
                keys,
                partition: FilePartition::unpartitioned(partitioner.spec_id()),
            }]);
        }
        let rows = arrow_select::concat::concat_batches(&batches[0].schema(), &batches)?;
        let mut taken = Vec::new();
        for (n, (partition, indices)) in partitioner.group_rows(&rows)?.into_iter().enumerate() {
            let hashes: Vec<KeyHash> = indices.iter().map(|&i| live_hashes[i as usize]).collect();
            let keys = FileKeys::from_row_hashes(&hashes);
            let file_id = if n == 0 {
                self.index.seal_buffer(file_id, keys.clone());
                file_id
            } else {
                let id = self.allocate_file_id();
                self.index.add_file(id, keys.clone(), None);
                id
            };
            taken.push(TakenGeneration {
                file_id,
                rows: vec![take_rows(&rows, &indices)?],
                keys,
                partition,
            });
        }
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array};
    use std::sync::Arc;

    fn batch(ids: &[i64]) -> RecordBatch {
        RecordBatch::try_from_iter(vec![(
            "id",
            Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef,
        )])
        .unwrap()
    }

    fn upsert(keys: &mut KeyedBuffer, ids: &[i64]) -> usize {
        let rows = batch(ids);
        let hashes = keys.hash(&rows);
        let ops = vec![Operation::Upsert; ids.len()];
        keys.apply(&ops, &rows, &hashes).unwrap().matched
    }

    fn location(keys: &KeyedBuffer, id: i64) -> Option<Location> {
        keys.index.get(keys.hash(&batch(&[id]))[0])
    }

    /// The plain-append path (no file has keys) still resolves duplicates like upserts, within
    /// a batch and across batches; once a file has keys, writes consult it again.
    #[test]
    fn plain_append_resolves_duplicates_like_upserts() {
        let mut keys = KeyedBuffer::new(vec![0], KeyHasher::new([5; 16]));
        assert_eq!(upsert(&mut keys, &[1, 2, 3]), 0);
        // Within one batch: row 4 (id 2) replaces row 3 (id 2), which replaced row 1.
        assert_eq!(upsert(&mut keys, &[4, 2, 5, 2]), 2);
        assert_eq!(keys.buffer_deleted().iter().collect::<Vec<_>>(), vec![1, 4]);
        assert_eq!(location(&keys, 2), Some(Location::Buffer(6)));
        assert_eq!(keys.index.len(), 5);

        // A delete, then the key again: a new row, nothing matched.
        let rows = batch(&[3]);
        let hashes = keys.hash(&rows);
        let deleted = keys.apply(&[Operation::Delete], &rows, &hashes).unwrap();
        assert_eq!((deleted.matched, deleted.rows.num_rows()), (1, 0));
        assert_eq!(location(&keys, 3), None);
        assert_eq!(upsert(&mut keys, &[3]), 0);

        // Sealed into a file (what a commit's take does): writes now find the file's rows.
        let live: Vec<KeyHash> = (0..keys.buffer_hashes.len() as u32)
            .filter(|r| !keys.buffer_deleted.contains(*r))
            .map(|r| keys.buffer_hashes[r as usize])
            .collect();
        keys.index.seal_buffer(7, FileKeys::from_row_hashes(&live));
        keys.buffer_hashes.clear();
        keys.buffer_deleted.clear();
        assert!(!keys.index.has_no_files());
        assert_eq!(upsert(&mut keys, &[5, 6]), 1);
        assert_eq!(location(&keys, 5), Some(Location::Buffer(0)));
        assert_eq!(keys.file_deletes.get(&7).map(|d| d.len()), Some(1));
        assert_eq!(upsert(&mut keys, &[5]), 1);
        assert_eq!(keys.index.len(), 6);

        // Truncation empties the index: the plain-append path again.
        keys.clear();
        assert!(keys.index.has_no_files());
        assert_eq!(upsert(&mut keys, &[5, 5]), 1);
        assert_eq!(keys.index.len(), 1);
    }
}
