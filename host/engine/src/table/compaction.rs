//! Compaction of keyed tables inside the commit: which files to rewrite (small ones, or those
//! whose deleted fraction passed the threshold) and moving the key index to the new file only
//! once the snapshot is committed.

use super::*;

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
    pub(super) fn apply_keyed_compaction(&self, pending: &mut Pending, c: KeyedCompaction) {
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
                .replace_files(&old_ids, c.file_id, c.keys, Some(carried));
        }
        for id in &old_ids {
            if let Some(path) = pending.paths.remove(id) {
                pending.committed_dvs.remove(&path);
                let _ = std::fs::remove_file(key_index_file::key_index_file_path(
                    &self.index_dir,
                    &path,
                ));
            }
        }
        if let Some(path) = c.path {
            pending.paths.insert(c.file_id, path);
        }
    }
}
