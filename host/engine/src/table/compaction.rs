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
    /// Background compaction is on (`compaction: false` turns it off: `TableOptions::apply`
    /// then sets `merge_fanout` to `usize::MAX`).
    pub background: bool,
}

impl Policy {
    pub(super) fn new(config: &TableConfig, force: bool) -> Self {
        Policy {
            small_below: config.target_file_size / 2,
            merge_fanout: config.merge_fanout.max(2),
            rewrite_deleted_fraction: config.rewrite_deleted_fraction,
            force,
            background: config.merge_fanout != usize::MAX,
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

/// Old-spec files (written before partition evolution) to rewrite into the current spec:
/// all on `optimize`; with background compaction on, small ones at any commit and
/// deletion-heavy ones once past the threshold.
pub(super) fn plan_old_spec_rewrite(files: &[FileFacts], policy: &Policy) -> Vec<usize> {
    (0..files.len())
        .filter(|&i| {
            let f = files[i];
            let fraction = f.deleted as f64 / f.rows.max(1) as f64;
            policy.force
                || (policy.background
                    && (f.bytes < policy.small_below
                        || fraction >= policy.rewrite_deleted_fraction))
        })
        .collect()
}

impl Table {
    /// Picks keyed files to rewrite (small ones once enough accumulate, or all small ones when
    /// forced; any whose deleted fraction passed the threshold; files of an older partition
    /// spec) and writes their live rows as one file per partition of the current spec. Files
    /// are chosen per partition (of their own spec), never merged across partitions; partitions
    /// are taken until the chosen bytes pass the target file size (the rest wait for a later
    /// commit).
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
        let indexed: Vec<DataFile> = pending
            .live_files
            .iter()
            .filter(|f| ids.contains_key(f.file_path()))
            .cloned()
            .collect();
        let default_spec = self.partitioner.spec_id();
        let policy = Policy::new(&self.config, force);
        let mut candidates: Vec<&DataFile> = Vec::new();
        let mut chosen_bytes = 0u64;
        let groups = super::commit_loop::partition_groups(&indexed, |f| {
            pending.partition_of(f, default_spec)
        });
        for group in groups {
            if !candidates.is_empty() && chosen_bytes >= self.config.target_file_size {
                break;
            }
            let facts: Vec<FileFacts> = group
                .iter()
                .map(|&i| {
                    let f = &indexed[i];
                    FileFacts {
                        bytes: f.file_size_in_bytes(),
                        rows: f.record_count(),
                        deleted: dead(f).len(),
                    }
                })
                .collect();
            let old_spec = pending
                .partition_of(&indexed[group[0]], default_spec)
                .spec_id
                != default_spec;
            let plan = if old_spec {
                plan_old_spec_rewrite(&facts, &policy)
            } else {
                plan_keyed_rewrite(&facts, &policy)
            };
            for j in plan {
                chosen_bytes += facts[j].bytes;
                candidates.push(&indexed[group[j]]);
            }
        }
        if candidates.is_empty() {
            return Ok(None);
        }
        let Some(hasher) = self.key_hasher else {
            return Ok(None);
        };
        let key_columns: Vec<usize> = self
            .schema
            .primary_key
            .iter()
            .filter_map(|k| self.schema.column_index(k))
            .collect();
        // Live rows by partition of the current spec: (partition, rows, their key hashes).
        let mut outputs: Vec<(FilePartition, Vec<RecordBatch>, Vec<KeyHash>)> = Vec::new();
        let mut slots: HashMap<FilePartition, usize> = HashMap::new();
        // Old file id → (output, position in it) of each old row; `u32::MAX` for deleted ones.
        let mut places: HashMap<u32, Vec<(u32, u32)>> = HashMap::new();
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
                let live = arrow_select::filter::filter_record_batch(
                    &batch,
                    &arrow_array::BooleanArray::from(keep.clone()),
                )?;
                let mut live_places = vec![(u32::MAX, u32::MAX); live.num_rows()];
                if live.num_rows() > 0 {
                    for (partition, rows) in self.partitioner.group_rows(&live)? {
                        let slot = *slots.entry(partition.clone()).or_insert_with(|| {
                            outputs.push((partition, Vec::new(), Vec::new()));
                            outputs.len() - 1
                        });
                        let taken = crate::partition::take_rows(&live, &rows)?;
                        let (_, batches, hashes) = &mut outputs[slot];
                        for (n, &row) in rows.iter().enumerate() {
                            live_places[row as usize] = (slot as u32, (hashes.len() + n) as u32);
                        }
                        hashes.extend(hasher.hash_rows(&taken, &key_columns));
                        batches.push(taken);
                    }
                }
                let mut live_places = live_places.into_iter();
                map.extend(keep.iter().map(|&k| {
                    if k {
                        live_places.next().unwrap_or((u32::MAX, u32::MAX))
                    } else {
                        (u32::MAX, u32::MAX)
                    }
                }));
            }
            places.insert(ids[file.file_path()], map);
        }
        // Positions in the outputs laid end to end.
        let mut starts = Vec::with_capacity(outputs.len());
        let mut total = 0u32;
        for (_, _, hashes) in &outputs {
            starts.push(total);
            total += hashes.len() as u32;
        }
        let mapping: HashMap<u32, Vec<u32>> = places
            .into_iter()
            .map(|(id, map)| {
                let map = map
                    .into_iter()
                    .map(|(slot, at)| match starts.get(slot as usize) {
                        Some(start) => start + at,
                        None => u32::MAX,
                    })
                    .collect();
                (id, map)
            })
            .collect();
        let table_location = self
            .committed
            .borrow()
            .metadata
            .location()
            .trim_end_matches('/')
            .to_string();
        let mut written = Vec::with_capacity(outputs.len());
        for (partition, batches, hashes) in outputs {
            let file_id = {
                let mut buffer = self.lock_buffer();
                match buffer.keyed.as_mut() {
                    Some(keys) => keys.allocate_file_id(),
                    None => return Ok(None),
                }
            };
            let rows = hashes.len() as u32;
            let keys = FileKeys::from_row_hashes(&hashes);
            let path = format!("{table_location}/data/{}.parquet", Uuid::now_v7());
            let data_file = data_files::write_data_file(
                &self.warehouse.file_io(),
                &self.iceberg_schema,
                &path,
                &batches,
                &partition,
            )
            .await?;
            key_index_file::write_key_index_file(
                &key_index_file::key_index_file_path(&self.index_dir, &path),
                &keys,
                &hasher,
            )?;
            written.push(CompactedFile {
                file_id,
                path,
                data_file,
                keys,
                rows,
            });
        }
        tracing::debug!(table = %self.name, files = candidates.len(), outputs = written.len(), rows = total, "compacted keyed files");
        Ok(Some(KeyedCompaction {
            outputs: written,
            mapping,
            removed_paths: candidates
                .iter()
                .map(|f| f.file_path().to_string())
                .collect(),
        }))
    }

    /// After the snapshot with a keyed compaction is committed: moves the index to the new
    /// files and carries deletes that landed on the old files meanwhile over to them.
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
        for output in &c.outputs {
            pending.paths.insert(output.file_id, output.path.clone());
        }
        let mut buffer = self.lock_buffer();
        let buffer = &mut *buffer;
        let Some(keys) = buffer.keyed.as_mut() else {
            return;
        };
        // Each output's first position in the outputs laid end to end.
        let mut starts = Vec::with_capacity(c.outputs.len());
        let mut total = 0u32;
        for output in &c.outputs {
            starts.push(total);
            total += output.rows;
        }
        let mut carried = vec![RoaringTreemap::new(); c.outputs.len()];
        for id in &old_ids {
            if let Some(late) = keys.file_deletes.remove(id) {
                for position in late.iter() {
                    let Some(&new) = c.mapping[id].get(position as usize) else {
                        continue;
                    };
                    if new == u32::MAX {
                        continue;
                    }
                    let slot = starts.partition_point(|&start| start <= new) - 1;
                    carried[slot].insert(u64::from(new - starts[slot]));
                }
            }
        }
        let mut replaced = Vec::with_capacity(c.outputs.len());
        for (output, carried) in c.outputs.into_iter().zip(carried) {
            if !carried.is_empty() {
                *keys.file_deletes.entry(output.file_id).or_default() |= carried.clone();
            }
            replaced.push((output.file_id, output.keys, Some(carried)));
        }
        keys.index.replace_files(&old_ids, replaced);
        self.publish_read_at(buffer, pending, snapshot_id);
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
            background: true,
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

    #[test]
    fn old_spec_files_move_when_small_or_deletion_heavy_and_all_on_optimize() {
        let files = [file(10, 5, 0), file(500, 10, 3), file(500, 10, 0)];
        assert_eq!(plan_old_spec_rewrite(&files, &policy(false)), vec![0, 1]);
        assert_eq!(plan_old_spec_rewrite(&files, &policy(true)), vec![0, 1, 2]);
        // With background compaction off, only `optimize` moves them.
        let off = Policy {
            background: false,
            ..policy(false)
        };
        assert!(plan_old_spec_rewrite(&files, &off).is_empty());
    }
}
