//! The commit loop: take the buffer, write Parquet, deletion vectors and manifests, and
//! publish one Iceberg snapshot. Also truncation. A commit writes only new rows and deletes:
//! compaction runs beside it (`background.rs`), woken after each successful commit.
//!
//! Invariant: a commit includes every LSN up to the `through_lsn` it took, and records it as
//! `moonlink.checkpoint` (`COMMITTED_LSN_SUMMARY_KEY`); what it took stays in `Pending` until a commit succeeds.

use super::*;
use crate::compression::ParquetCompression;

impl Table {
    pub(super) async fn commit_loop(table: Arc<Table>) {
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
            // A panic below (a bug, or a library that panics on bad input) must not end the
            // loop silently: the table would accept writes that never commit. It is recorded
            // like a failed commit (so `/health` shows it) and the loop goes on.
            let attempt = std::panic::AssertUnwindSafe(table.commit());
            match futures::FutureExt::catch_unwind(attempt).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(table = %table.name, error = %e, "commit failed; will retry")
                }
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".to_string());
                    tracing::error!(table = %table.name, panic = %what, "commit panicked; will retry");
                    table.committed.send_modify(|s| {
                        s.last_error = Some(format!("internal error: commit panicked: {what}"));
                        s.failures += 1;
                    });
                }
            }
        }
    }

    /// Commits, then compacts every small or deletion-heavy file and waits for that
    /// `replace` snapshot (`POST .../optimize`); sweeps unreferenced files after.
    pub async fn optimize(&self) -> Result<CommitState> {
        self.commit().await?;
        self.compact(true).await?;
        let pending = self.pending.lock().await;
        let state = self.committed.borrow().clone();
        self.sweep_orphans(&pending, &state).await;
        Ok(state)
    }

    /// Runs the compaction policy now and waits for it (what the background task does after
    /// a commit); returns whether a `replace` snapshot was committed.
    pub async fn compact_now(&self) -> Result<bool> {
        self.compact(false).await
    }

    /// Commits everything accepted so far as one snapshot (no-op if there is nothing new).
    pub async fn commit(&self) -> Result<CommitState> {
        let mut pending = self.pending.lock().await;
        let mut rebases = 0;
        let started = std::time::Instant::now();
        loop {
            self.take_buffer(&mut pending)?;
            let committed_lsn = self.committed.borrow().committed_lsn;
            if pending.is_empty() && pending.through_lsn <= committed_lsn {
                return Ok(self.committed.borrow().clone());
            }
            let result = match self.commit_pending(&mut pending).await {
                // Another writer committed: rebase on its snapshot and try again, a bounded
                // number of times with back-off (then the error is reported and the commit
                // loop tries again at its next interval).
                Err(EngineError::CommitConflict(what)) if rebases < rebase::MAX_REBASES => {
                    rebases += 1;
                    tokio::time::sleep(Duration::from_millis(20 << rebases)).await;
                    match self.rebase(&mut pending).await {
                        Ok(()) => continue,
                        Err(e) => Err(EngineError::Unavailable(format!(
                            "commit conflict on {what}, and rebasing on the new snapshot failed: {e}"
                        ))),
                    }
                }
                other => other,
            };
            metrics::histogram!("moonlink_commit_seconds", "table" => self.name.clone())
                .record(started.elapsed().as_secs_f64());
            return self.after_commit(&mut pending, result).await;
        }
    }

    /// Moves what the buffer holds into `pending` (the commit lock is held).
    fn take_buffer(&self, pending: &mut Pending) -> Result<()> {
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
            let generations = match buffer.keyed.as_mut() {
                Some(keys) => {
                    for (file, positions) in std::mem::take(&mut keys.file_deletes) {
                        *pending.deletes.entry(file).or_default() |= positions;
                    }
                    // One file per partition, its rows' positions fixed now.
                    keys.take(batches, &self.partitioner)?
                        .into_iter()
                        .map(|taken| Generation {
                            file_id: Some(taken.file_id),
                            keys: Some(taken.keys),
                            batches: taken.rows,
                            partition: Some(taken.partition),
                        })
                        .collect()
                }
                None => vec![Generation {
                    file_id: None,
                    keys: None,
                    batches,
                    partition: None,
                }],
            };
            pending.generations.extend(
                generations
                    .into_iter()
                    .filter(|generation| !generation.batches.is_empty()),
            );
            pending.through_lsn = through_lsn;
            let checkpoints = std::mem::take(&mut buffer.source_checkpoints);
            pending.source_checkpoints.extend(checkpoints);
            if let Some(wal) = self.wal.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                wal.rotate(buffer.next_lsn);
            }
            buffer.read = Arc::new(buffer.read.with_inflight(pending));
        }
        Ok(())
    }

    /// Bookkeeping after a commit attempt: the orphan sweep after a success, the error in the
    /// committed state after a failure.
    async fn after_commit(
        &self,
        pending: &mut Pending,
        result: Result<CommitState>,
    ) -> Result<CommitState> {
        match result {
            Ok(state) => {
                metrics::counter!("moonlink_commits_total", "table" => self.name.clone(), "outcome" => "ok").increment(1);
                pending.commits += 1;
                if pending
                    .commits
                    .is_multiple_of(self.config.orphan_sweep_every.max(1))
                {
                    self.sweep_orphans(pending, &state).await;
                }
                self.compact_wake.notify_one();
                Ok(state)
            }
            Err(e) => {
                metrics::counter!("moonlink_commits_total", "table" => self.name.clone(), "outcome" => "error").increment(1);
                self.committed.send_modify(|s| {
                    s.last_error = Some(e.to_string());
                    s.failures += 1;
                });
                Err(e)
            }
        }
    }

    /// Deletes files no retained snapshot references. The caller holds the commit lock (`_pending`):
    /// no commit of ours is writing files; a compaction with files in flight defers the sweep.
    async fn sweep_orphans(&self, _pending: &Pending, state: &CommitState) {
        if self.compacting.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        match maintenance::remove_orphan_files(
            &self.warehouse,
            &state.metadata,
            &state.metadata_location,
        )
        .await
        {
            Ok(n) if n > 0 => {
                metrics::counter!("moonlink_orphan_files_removed_total", "table" => self.name.clone()).increment(n as u64);
                tracing::info!(table = %self.name, files = n, "removed unreferenced files")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(table = %self.name, error = %e, "orphan file sweep failed")
            }
        }
    }

    async fn commit_pending(&self, pending: &mut Pending) -> Result<CommitState> {
        let file_io = self.warehouse.file_io();
        let current = self.committed.borrow().clone();
        let table_location = current
            .metadata
            .location()
            .trim_end_matches('/')
            .to_string();
        let new_data_path = || format!("{table_location}/data/{}.parquet", Uuid::now_v7());

        let mut removed = HashSet::new();
        let mut merged_rows: Vec<RecordBatch> = Vec::new();
        let truncating = pending.truncated.is_some();
        if let Some(files) = &pending.truncated {
            removed.extend(files.iter().cloned());
        }

        // Every file of the commit is encoded in a task of its own, so a commit of several
        // files (partitions, size splits) uses every core; `added` keeps their order.
        let mut writes = Vec::new();
        let mut new_paths = Vec::new();
        for generation in &pending.generations {
            match generation.file_id {
                Some(file_id) => {
                    // One file per generation: its rows' positions are already in the index.
                    let path = new_data_path();
                    let partition = generation.partition.clone().unwrap_or_else(|| {
                        FilePartition::unpartitioned(self.partitioner.spec_id())
                    });
                    let keys = generation.keys.clone().zip(self.key_hasher).map(|(k, h)| {
                        let file = key_index_file::key_index_file_path(&self.index_dir, &path);
                        (file, k, h)
                    });
                    writes.push(self.spawn_write(&path, &generation.batches, partition, keys));
                    new_paths.push((file_id, path));
                }
                None => merged_rows.extend(generation.batches.iter().cloned()),
            }
        }
        // Each partition's rows in files of their own, sized toward the target.
        for (partition, rows) in self.partitioner.split(&merged_rows)? {
            for chunk in chunk_by_size(&rows, self.arrow_bytes_per_file()) {
                writes.push(self.spawn_write(&new_data_path(), chunk, partition.clone(), None));
            }
        }
        let mut added = Vec::with_capacity(writes.len());
        for write in writes {
            added.push(write.await.map_err(|e| {
                EngineError::Unavailable(format!("writing a data file failed: {e}"))
            })??);
        }

        let mut paths = pending.paths.clone();
        paths.extend(new_paths.iter().cloned());
        let mut vectors = Vec::new();
        for (file_id, positions) in &pending.deletes {
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
        // A deletion vector is in its data file's partition and spec (spec "Deletion Vectors");
        // files added by this commit are in the default spec.
        let default_spec = self.partitioner.spec_id();
        let partitions: HashMap<&str, FilePartition> = pending
            .live_files
            .iter()
            .map(|f| (f.file_path(), pending.partition_of(f, default_spec)))
            .chain(
                added
                    .iter()
                    .map(|f| (f.file_path(), FilePartition::of(f, default_spec))),
            )
            .collect();
        let mut added_deletes = Vec::with_capacity(vectors.len());
        let mut added_specs = HashMap::new();
        for vector in &vectors {
            let location = format!("{table_location}/data/{}-deletes.puffin", Uuid::now_v7());
            let partition = partitions
                .get(vector.0.as_str())
                .cloned()
                .unwrap_or_else(|| FilePartition::unpartitioned(default_spec));
            if partition.spec_id != default_spec {
                added_specs.insert(location.clone(), partition.spec_id);
            }
            added_deletes.extend(
                deletion_vector::write_deletion_vectors(
                    &file_io,
                    &location,
                    std::slice::from_ref(vector),
                    &partition,
                )
                .await?,
            );
        }

        let changes = SnapshotChanges {
            added: added.clone(),
            removed: removed.clone(),
            added_deletes,
            through_lsn: pending.through_lsn,
            source_checkpoints: pending.source_checkpoints.clone(),
            retention: self.config.retention,
            // Compaction commits its own snapshots (`background.rs`).
            rewrite_only: false,
            added_specs,
        };
        let committed = commit::write_snapshot(
            &file_io,
            &current.metadata,
            &current.metadata_location,
            changes,
        )
        .await?;
        self.catalog
            .swap_metadata(
                &self.namespace,
                &self.table,
                &current.metadata_location,
                &committed.location,
            )
            .await?;
        tracing::debug!(table = %self.name, lsn = pending.through_lsn, files = added.len(),
            merged = removed.len(), deletion_vectors = vectors.len(), "committed snapshot");
        pending.swap_live_files(&removed, added, default_spec);
        pending.paths = paths;
        for (path, merged) in vectors {
            pending.committed_dvs.insert(path, merged);
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
        let snapshot_id = committed.metadata.current_snapshot_id();
        let expired = (current.metadata.snapshots().count() + 1)
            .saturating_sub(committed.metadata.snapshots().count());
        metrics::counter!("moonlink_expired_snapshots_total", "table" => self.name.clone())
            .increment(expired as u64);
        let through = pending.through_lsn;
        let state = CommitState {
            metadata: Arc::new(committed.metadata),
            metadata_location: committed.location,
            committed_lsn: through,
            last_error: None,
            failures: current.failures,
        };
        self.committed.send_replace(state.clone());
        {
            let mut buffer = self.lock_buffer();
            buffer.uncommitted.retain(|(lsn, _)| *lsn > through);
            self.publish_read_at(&mut buffer, pending, snapshot_id);
        }
        if let Some(wal) = self.wal.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if let Err(e) = wal.truncate_through(through) {
                tracing::warn!(table = %self.name, error = %e, "cannot delete committed log segments");
            }
        }
        Ok(state)
    }

    /// Writes `batches` as the data file `path` in a task of its own, then its key-index file
    /// if `keys` (where, what, under which secret) are given.
    fn spawn_write(
        &self,
        path: &str,
        batches: &[RecordBatch],
        partition: FilePartition,
        keys: Option<(std::path::PathBuf, FileKeys, KeyHasher)>,
    ) -> tokio::task::JoinHandle<Result<DataFile>> {
        let file_io = self.warehouse.file_io();
        let schema = self.iceberg_schema.clone();
        let compression = ParquetCompression::of(self.committed.borrow().metadata.properties());
        let (path, batches) = (path.to_string(), batches.to_vec());
        tokio::spawn(async move {
            let file = data_files::write_data_file(
                &file_io,
                &schema,
                &path,
                &batches,
                &partition,
                compression,
            )
            .await?;
            if let Some((keys_file, keys, hasher)) = keys {
                key_index_file::write_key_index_file(&keys_file, &keys, &hasher)?;
            }
            Ok(file)
        })
    }

    /// Removes every row: what is buffered or pending is discarded, and a snapshot that removes
    /// every live data file (with its deletion vector) is committed now. Writes accepted before
    /// the call are covered by it; `source_checkpoint` is recorded like a batch's.
    pub async fn truncate(
        &self,
        source_checkpoint: Option<SourceCheckpoint>,
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
                // A rebase must not apply what the truncation superseded.
                buffer.uncommitted.clear();
                // Everything logged so far is superseded: the snapshot's committed LSN covers it.
                pending.through_lsn = buffer.next_lsn - 1;
                let checkpoints = std::mem::take(&mut buffer.source_checkpoints);
                pending.source_checkpoints.extend(checkpoints);
                if let Some(checkpoint) = source_checkpoint {
                    pending
                        .source_checkpoints
                        .insert(checkpoint.source, checkpoint.position);
                }
                if let Some(wal) = self.wal.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    wal.rotate(buffer.next_lsn);
                }
                pending.generations.clear();
                pending.deletes.clear();
                pending.epoch += 1;
                // Files of an earlier truncation that has not committed yet are still live.
                let mut files = pending.truncated.take().unwrap_or_default();
                files.extend(pending.live_files.iter().map(|f| f.file_path().to_string()));
                files.sort();
                files.dedup();
                pending.truncated = Some(files);
                self.publish_read(&mut buffer, &pending);
            }
        }
        self.commit().await
    }

    /// Arrow bytes per output file: Parquet with zstd is typically 3-5x smaller than Arrow
    /// in memory, so this aims the written file near the target.
    pub(super) fn arrow_bytes_per_file(&self) -> usize {
        (self.config.target_file_size as usize).saturating_mul(3)
    }
}

/// Splits batches into consecutive groups of about `max_bytes` Arrow bytes each.
pub(super) fn chunk_by_size(batches: &[RecordBatch], max_bytes: usize) -> Vec<&[RecordBatch]> {
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

/// Indices of `files` grouped by partition (spec and tuple, as `partition_of` tells),
/// groups in order of first appearance: compaction never merges across partitions.
pub(super) fn partition_groups(
    files: &[DataFile],
    partition_of: impl Fn(&DataFile) -> FilePartition,
) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut index: HashMap<FilePartition, usize> = HashMap::new();
    for (i, file) in files.iter().enumerate() {
        let slot = *index.entry(partition_of(file)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[slot].push(i);
    }
    groups
}
