//! Values a source did not send (Postgres's unchanged TOAST), filled from the row's current
//! version before the batch is buffered.

use super::*;

impl Table {
    /// Fills the values a source did not send (Postgres's unchanged TOAST) from each row's
    /// current version: an earlier row of the same batch, the buffer, or a data file (read at
    /// just the needed positions). A key with no current row keeps a null there.
    ///
    /// Assumes one writer per table while it runs (a source); the commit lock is held so no
    /// commit moves rows between the lookup and the read.
    pub(super) async fn fill_unchanged(&self, batch: ChangeBatch) -> Result<ChangeBatch> {
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
}
