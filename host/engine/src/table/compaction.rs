//! Compaction inside the commit ("small files are merged"). The planning — which files to
//! merge or rewrite — is pure functions over file sizes and deleted counts
//! ([`plan_append_merge`], [`plan_keyed_rewrite`]); the commit path calls them, then does the
//! I/O. For keyed tables the key index moves to the new file only once the snapshot holding
//! it is committed.

use super::*;

/// A table's compaction policy for one commit.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    /// Files below this many bytes are small (half the target size).
    pub small_below: u64,
    /// Small files alive before they are merged (at least 2).
    pub merge_fanout: usize,
    /// A keyed file whose deleted fraction reaches this is rewritten without its deleted rows.
    pub rewrite_deleted_fraction: f64,
    /// `optimize`: merge any two small files, rewrite any file with a deleted row.
    pub force: bool,
}

impl Policy {
    pub(super) fn new(config: &TableConfig, force: bool) -> Self {
        Policy {
            small_below: config.target_file_size / 2,
            merge_fanout: config.merge_fanout.max(2),
            rewrite_deleted_fraction: config.rewrite_deleted_fraction,
            force,
        }
    }
}

/// What the planner needs to know of a live data file.
#[derive(Debug, Clone, Copy)]
pub(super) struct FileFacts {
    pub bytes: u64,
    pub rows: u64,
    /// Rows masked by its committed and pending deletes.
    pub deleted: u64,
}

/// Append-only tables: the small files (indices into `files`) to merge into this commit's new
/// file, or none. Merging starts once the new file would make `merge_fanout` small files, or
/// on `optimize` once two exist; trickle traffic so keeps fewer than `merge_fanout` alive.
pub(super) fn plan_append_merge(files: &[FileFacts], policy: &Policy) -> Vec<usize> {
    let small: Vec<usize> = (0..files.len())
        .filter(|&i| files[i].bytes < policy.small_below)
        .collect();
    if small.len() + 1 >= policy.merge_fanout || (policy.force && small.len() >= 2) {
        small
    } else {
        Vec::new()
    }
}

/// Keyed tables: the files (indices into `files`) to rewrite as one file without their deleted
/// rows, or none: small files once `merge_fanout` of them exist (two on `optimize`), and any
/// file whose deleted fraction reached the threshold (any deleted row on `optimize`). A single
/// file with nothing deleted is not worth rewriting.
pub(super) fn plan_keyed_rewrite(files: &[FileFacts], policy: &Policy) -> Vec<usize> {
    let small = files
        .iter()
        .filter(|f| f.bytes < policy.small_below)
        .count();
    let merge_small = small >= policy.merge_fanout || (policy.force && small >= 2);
    let chosen: Vec<usize> = (0..files.len())
        .filter(|&i| {
            let f = files[i];
            let fraction = f.deleted as f64 / f.rows.max(1) as f64;
            let heavy =
                fraction >= policy.rewrite_deleted_fraction || (policy.force && f.deleted > 0);
            heavy || (merge_small && f.bytes < policy.small_below)
        })
        .collect();
    if chosen.len() == 1 && files[chosen[0]].deleted == 0 {
        return Vec::new();
    }
    chosen
}

impl Table {
    /// Picks keyed files to rewrite (small ones once enough accumulate, or all small ones when
    /// forced; any whose deleted fraction passed the threshold) and writes them as one file
    /// without their deleted rows.
    pub(super) async fn compact_keyed(
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
        // Only files the key index knows can be rewritten (all of a keyed table's files).
        let indexed: Vec<&DataFile> = pending
            .live_files
            .iter()
            .filter(|f| ids.contains_key(f.file_path()))
            .collect();
        // Files are rewritten within one partition (the first with candidates; others wait
        // for a later commit), into a file of that partition.
        let owned: Vec<DataFile> = indexed.iter().map(|f| (*f).clone()).collect();
        let policy = Policy::new(&self.config, force);
        let mut candidates: Vec<&DataFile> = Vec::new();
        for group in super::commit_loop::partition_groups(&owned, self.partitioner.spec_id()) {
            let facts: Vec<FileFacts> = group
                .iter()
                .map(|&i| {
                    let f = indexed[i];
                    FileFacts {
                        bytes: f.file_size_in_bytes(),
                        rows: f.record_count(),
                        deleted: dead(f).len(),
                    }
                })
                .collect();
            candidates = plan_keyed_rewrite(&facts, &policy)
                .into_iter()
                .map(|j| indexed[group[j]])
                .collect();
            if !candidates.is_empty() {
                break;
            }
        }
        let Some(first) = candidates.first() else {
            return Ok(None);
        };
        let partition = FilePartition::of(first, self.partitioner.spec_id());
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
        let keys = FileKeys::from_row_hashes(&hashes);
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
                &partition,
            )
            .await?;
            key_index_file::write_key_index_file(
                &key_index_file::key_index_file_path(&self.index_dir, &path),
                &keys,
                &hasher,
            )?;
            (Some(path), Some(data_file))
        };
        tracing::debug!(table = %self.name, files = candidates.len(), rows = next_position, "compacted keyed files");
        Ok(Some(KeyedCompaction {
            file_id,
            path,
            data_file,
            keys,
            mapping,
            removed_paths: candidates
                .iter()
                .map(|f| f.file_path().to_string())
                .collect(),
        }))
    }

    /// After the snapshot with a keyed compaction is committed: moves the index to the new
    /// file and carries deletes that landed on the old files meanwhile over to it.
    /// Real-time reads switch to `snapshot_id` in the same buffer-lock section.
    pub(super) fn apply_keyed_compaction(
        &self,
        pending: &mut Pending,
        c: KeyedCompaction,
        snapshot_id: Option<i64>,
    ) {
        let old_ids: Vec<u32> = c.mapping.keys().copied().collect();
        for id in &old_ids {
            if let Some(path) = pending.paths.remove(id) {
                pending.committed_dvs.remove(&path);
                let _ = std::fs::remove_file(key_index_file::key_index_file_path(
                    &self.index_dir,
                    &path,
                ));
            }
        }
        if let Some(path) = &c.path {
            pending.paths.insert(c.file_id, path.clone());
        }
        {
            let mut buffer = self.lock_buffer();
            let buffer = &mut *buffer;
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
                .replace_files(&old_ids, c.file_id, c.keys, Some(carried));
            self.publish_read_at(buffer, pending, snapshot_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(force: bool) -> Policy {
        Policy {
            small_below: 100,
            merge_fanout: 3,
            rewrite_deleted_fraction: 0.3,
            force,
        }
    }

    fn file(bytes: u64, rows: u64, deleted: u64) -> FileFacts {
        FileFacts {
            bytes,
            rows,
            deleted,
        }
    }

    #[test]
    fn append_only_tables_merge_small_files_once_the_fanout_is_reached() {
        let two_small = [file(10, 1, 0), file(500, 9, 0), file(20, 2, 0)];
        // The new file would be the third small one: merge the two with it.
        assert_eq!(plan_append_merge(&two_small, &policy(false)), vec![0, 2]);
        assert!(plan_append_merge(&two_small[..2], &policy(false)).is_empty());
        // `optimize` merges any two small files, never a lone one.
        assert_eq!(plan_append_merge(&two_small, &policy(true)), vec![0, 2]);
        assert!(plan_append_merge(&[file(10, 1, 0)], &policy(true)).is_empty());
    }

    #[test]
    fn keyed_tables_rewrite_small_and_deletion_heavy_files() {
        let files = [file(500, 10, 3), file(500, 10, 2), file(10, 1, 0)];
        // 30% deleted reaches the threshold; 20% does not; one small file is not enough.
        // A single heavy file is still rewritten (its deleted rows go away).
        assert_eq!(plan_keyed_rewrite(&files, &policy(false)), vec![0]);
        let small = [
            file(10, 1, 0),
            file(20, 1, 0),
            file(30, 1, 0),
            file(500, 10, 0),
        ];
        assert_eq!(plan_keyed_rewrite(&small, &policy(false)), vec![0, 1, 2]);
        // `optimize`: any deleted row, any two small files.
        assert_eq!(plan_keyed_rewrite(&files, &policy(true)), vec![0, 1]);
        // One clean file alone is never rewritten.
        assert!(plan_keyed_rewrite(&[file(10, 1, 0)], &policy(true)).is_empty());
    }
}
