//! Background compaction: a per-table task that rewrites small and deletion-heavy files and
//! commits its own `replace` snapshot, off the commit path.
//!
//! Three steps. **Plan** (under the commit lock, briefly): the files the policy picks, each with
//! the deletion vector committed at that instant. **Rewrite** (no lock): the planned files' rows
//! minus those vectors, written as one file per partition of the current spec, with key-index
//! files; commits and writes go on meanwhile. **Swap** (under the commit lock): if the table
//! moved under the plan (a rebase or truncation: `Pending::epoch`; a planned file gone; a
//! failed commit waiting to retry) the rewrite is abandoned and its files left to the orphan
//! sweep. Otherwise deletes that arrived for planned files since the plan are carried to the
//! new files: those already committed become the new files' deletion vectors in the `replace`
//! snapshot itself (so the snapshot changes no row), those still in the buffer move to the new
//! files' ids with the key index, in one buffer-lock section after the swap.
//!
//! Crash safety: nothing the commit path relies on changes before the swap; a crash before it
//! leaves unreferenced files (swept by `maintenance.rs`), a crash after it restarts from the
//! `replace` snapshot like from any other. The orphan sweep never runs while a compaction has
//! files in flight (`Table::compacting`, set and checked under the commit lock).

use std::sync::atomic::Ordering;

use super::compaction::{plan_append_merge, plan_keyed_rewrite, plan_old_spec_rewrite};
use super::compaction::{FileFacts, Policy};
use super::*;

mod rewrite;

/// A keyed compaction's rewrite: candidate files without their deleted rows, as one file per
/// partition of the current spec (files of an older spec move into it). Applied to the key
/// index only once its `replace` snapshot is committed.
struct KeyedCompaction {
    outputs: Vec<CompactedFile>,
    /// Old file id → new place of each old row: its position in the outputs laid end to end
    /// in order (`u32::MAX`: the row was deleted).
    mapping: HashMap<u32, Vec<u32>>,
}

/// One file a keyed compaction wrote.
struct CompactedFile {
    file_id: u32,
    path: String,
    data_file: DataFile,
    keys: FileKeys,
    /// Its rows (one key each).
    rows: u32,
}

/// A compaction chosen under the commit lock.
pub(super) struct Plan {
    /// `Pending::epoch` at planning: a rebase or truncation since invalidates file ids.
    epoch: u64,
    inputs: Vec<Input>,
}

/// One file to rewrite.
struct Input {
    /// Keyed tables: the file's id in the key index.
    id: Option<u32>,
    path: String,
    /// Its committed deletion vector when planned: these rows are left out.
    dead: RoaringTreemap,
}

/// Files a rewrite wrote, not yet committed.
pub(super) struct Rewritten {
    /// Keyed tables: outputs with their index keys, and each input's row → new position.
    keyed: Option<KeyedCompaction>,
    /// Append-only tables: the merged files.
    files: Vec<DataFile>,
}

impl Rewritten {
    fn data_files(&self) -> Vec<DataFile> {
        match &self.keyed {
            Some(c) => c.outputs.iter().map(|o| o.data_file.clone()).collect(),
            None => self.files.clone(),
        }
    }
}

/// A test hook: the next compaction stops between its rewrite and its swap until released.
#[derive(Default)]
pub struct CompactionHold {
    reached: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl CompactionHold {
    /// Waits until a compaction has written its files and is about to swap.
    pub async fn reached(&self) {
        self.reached.notified().await
    }

    /// Lets the held compaction swap.
    pub fn release(&self) {
        self.release.notify_one()
    }
}

impl Table {
    /// The per-table compaction task: runs the policy after every successful commit.
    pub(super) async fn compaction_loop(table: Arc<Table>) {
        let mut stop = table.stop.subscribe();
        loop {
            tokio::select! {
                _ = table.compact_wake.notified() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let attempt = std::panic::AssertUnwindSafe(table.compact(false));
            match futures::FutureExt::catch_unwind(attempt).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(table = %table.name, error = %e, "background compaction failed; will retry after a later commit")
                }
                Err(_) => {
                    tracing::error!(table = %table.name, "background compaction panicked");
                    table.compacting.store(false, Ordering::SeqCst);
                }
            }
        }
    }

    /// Arms the test hold for the next compaction.
    pub(crate) fn hold_next_compaction(&self) -> Arc<CompactionHold> {
        let hold = Arc::new(CompactionHold::default());
        *self
            .compaction_hold
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(hold.clone());
        hold
    }

    /// Runs one compaction now (the policy's choice; `force`: every small or deletion-heavy
    /// file, as `optimize`), one at a time per table. Returns whether a `replace` snapshot was
    /// committed.
    pub(super) async fn compact(&self, force: bool) -> Result<bool> {
        let _one_at_a_time = self.compaction.lock().await;
        let Some(plan) = self.plan_compaction(force).await? else {
            return Ok(false);
        };
        let result = async {
            let rewritten = self.rewrite(&plan).await?;
            let hold = self
                .compaction_hold
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(hold) = hold {
                hold.reached.notify_one();
                hold.release.notified().await;
            }
            self.swap(plan, rewritten).await
        }
        .await;
        self.compacting.store(false, Ordering::SeqCst);
        result
    }

    /// Picks the files to rewrite (see `compaction.rs` for the policy), under the commit lock.
    async fn plan_compaction(&self, force: bool) -> Result<Option<Plan>> {
        let pending = self.pending.lock().await;
        if pending.truncated.is_some() {
            return Ok(None);
        }
        let ids: HashMap<&str, u32> = pending
            .paths
            .iter()
            .map(|(id, path)| (path.as_str(), *id))
            .collect();
        let keyed = !self.schema.primary_key.is_empty();
        let policy = Policy::new(&self.config, force);
        let default_spec = self.partitioner.spec_id();
        // Keyed tables: only files the key index knows (all of them).
        let files: Vec<&DataFile> = pending
            .live_files
            .iter()
            .filter(|f| !keyed || ids.contains_key(f.file_path()))
            .collect();
        let dead = |f: &DataFile| {
            pending
                .committed_dvs
                .get(f.file_path())
                .cloned()
                .unwrap_or_default()
        };
        let owned: Vec<DataFile> = files.iter().map(|f| (*f).clone()).collect();
        let groups =
            super::commit_loop::partition_groups(&owned, |f| pending.partition_of(f, default_spec));
        let mut chosen: Vec<&DataFile> = Vec::new();
        let mut chosen_bytes = 0u64;
        for group in groups {
            if !chosen.is_empty() && chosen_bytes >= self.config.target_file_size {
                break; // the rest wait for a later compaction
            }
            let facts: Vec<FileFacts> = group
                .iter()
                .map(|&i| FileFacts {
                    bytes: owned[i].file_size_in_bytes(),
                    rows: owned[i].record_count(),
                    // Append-only tables merge by size only.
                    deleted: if keyed { dead(&owned[i]).len() } else { 0 },
                })
                .collect();
            let old_spec =
                pending.partition_of(&owned[group[0]], default_spec).spec_id != default_spec;
            let plan = if old_spec {
                plan_old_spec_rewrite(&facts, &policy)
            } else if keyed {
                plan_keyed_rewrite(&facts, &policy)
            } else {
                // The merged file counts as the new one the old in-commit merge wrote.
                let mut plan = plan_append_merge(&facts, &policy);
                if plan.len() < 2 {
                    plan.clear();
                }
                plan
            };
            for j in plan {
                chosen_bytes += facts[j].bytes;
                chosen.push(&owned[group[j]]);
            }
        }
        if chosen.is_empty() || (keyed && self.key_hasher.is_none()) {
            return Ok(None);
        }
        let inputs = chosen
            .into_iter()
            .map(|f| Input {
                id: ids.get(f.file_path()).copied(),
                path: f.file_path().to_string(),
                dead: dead(f),
            })
            .collect();
        // Set under the commit lock: the orphan sweep (also under it) leaves our files alone.
        self.compacting.store(true, Ordering::SeqCst);
        Ok(Some(Plan {
            epoch: pending.epoch,
            inputs,
        }))
    }

    /// Commits the rewrite as a `replace` snapshot, carrying late deletes over (module doc).
    async fn swap(&self, plan: Plan, rewritten: Rewritten) -> Result<bool> {
        let mut guard = self.pending.lock().await;
        let pending = &mut *guard;
        let started = std::time::Instant::now();
        let current = self.committed.borrow().clone();
        let live: HashSet<&str> = pending.live_files.iter().map(|f| f.file_path()).collect();
        let moved = pending.epoch != plan.epoch
            || !pending.is_empty()
            || !pending.source_checkpoints.is_empty()
            || pending.through_lsn != current.committed_lsn
            || self.lock_buffer().dropped
            || plan.inputs.iter().any(|i| {
                !live.contains(i.path.as_str())
                    || i.id.is_some_and(|id| pending.paths.get(&id) != Some(&i.path))
                    // Append-only tables have no delete to carry: a new vector (another
                    // engine's DELETE) means starting over.
                    || (i.id.is_none()
                        && pending.committed_dvs.get(&i.path).is_some_and(|dv| *dv != i.dead))
            });
        if moved {
            tracing::info!(table = %self.name, "the table moved during a compaction: its files are left for the orphan sweep");
            self.forget_key_index_files(&rewritten);
            return Ok(false);
        }
        let default_spec = self.partitioner.spec_id();
        let added = rewritten.data_files();
        // Deletes committed on planned files since the plan, at their rows' new places.
        let mut late: Vec<RoaringTreemap> = Vec::new();
        if let Some(c) = &rewritten.keyed {
            late = vec![RoaringTreemap::new(); c.outputs.len()];
            let starts = output_starts(c);
            for input in &plan.inputs {
                let (Some(id), Some(now)) = (input.id, pending.committed_dvs.get(&input.path))
                else {
                    continue;
                };
                for position in (now - &input.dead).iter() {
                    if let Some((slot, at)) = place(c, &starts, id, position) {
                        late[slot].insert(at);
                    }
                }
            }
        }
        let table_location = current
            .metadata
            .location()
            .trim_end_matches('/')
            .to_string();
        let file_io = self.warehouse.file_io();
        let mut added_deletes = Vec::new();
        let mut vectors = Vec::new();
        for (file, positions) in added.iter().zip(&late) {
            if positions.is_empty() {
                continue;
            }
            let location = format!("{table_location}/data/{}-deletes.puffin", Uuid::now_v7());
            let vector = (file.file_path().to_string(), positions.clone());
            added_deletes.extend(
                deletion_vector::write_deletion_vectors(
                    &file_io,
                    &location,
                    std::slice::from_ref(&vector),
                    &FilePartition::of(file, default_spec),
                )
                .await?,
            );
            vectors.push(vector);
        }
        let removed: HashSet<String> = plan.inputs.iter().map(|i| i.path.clone()).collect();
        let changes = SnapshotChanges {
            added: added.clone(),
            removed: removed.clone(),
            added_deletes,
            through_lsn: current.committed_lsn,
            source_checkpoints: BTreeMap::new(),
            retention: self.config.retention,
            rewrite_only: true,
            added_specs: HashMap::new(),
        };
        let committed = commit::write_snapshot(
            &file_io,
            &current.metadata,
            &current.metadata_location,
            changes,
        )
        .await?;
        if let Err(e) = self
            .catalog
            .swap_metadata(
                &self.namespace,
                &self.table,
                &current.metadata_location,
                &committed.location,
            )
            .await
        {
            // Another writer committed (the next commit rebases), or the outcome is unknown:
            // the files stay for the sweep, which keeps them if the swap did happen.
            tracing::info!(table = %self.name, error = %e, "compaction swap lost; will plan again");
            return Ok(false);
        }
        pending.swap_live_files(&removed, added, default_spec);
        for path in &removed {
            pending.committed_dvs.remove(path);
        }
        for (path, positions) in vectors {
            pending.committed_dvs.insert(path, positions);
        }
        metrics::counter!("moonlink_compacted_files_total", "table" => self.name.clone())
            .increment(removed.len() as u64);
        // A snapshot like any other for the operators' view (one commit per snapshot).
        metrics::counter!("moonlink_commits_total", "table" => self.name.clone(), "outcome" => "ok")
            .increment(1);
        metrics::histogram!("moonlink_commit_seconds", "table" => self.name.clone())
            .record(started.elapsed().as_secs_f64());
        let expired = (current.metadata.snapshots().count() + 1)
            .saturating_sub(committed.metadata.snapshots().count());
        metrics::counter!("moonlink_expired_snapshots_total", "table" => self.name.clone())
            .increment(expired as u64);
        let snapshot_id = committed.metadata.current_snapshot_id();
        let state = CommitState {
            metadata: Arc::new(committed.metadata),
            metadata_location: committed.location,
            committed_lsn: current.committed_lsn,
            last_error: current.last_error.clone(),
            failures: current.failures,
        };
        self.committed.send_replace(state);
        match rewritten.keyed {
            Some(c) => self.apply_keyed_compaction(pending, c, &plan, snapshot_id),
            None => self.publish_read_at(&mut self.lock_buffer(), pending, snapshot_id),
        }
        tracing::debug!(table = %self.name, files = removed.len(), "committed a compaction");
        Ok(true)
    }

    /// Removes the key-index files of an abandoned rewrite's outputs (local cache only).
    fn forget_key_index_files(&self, rewritten: &Rewritten) {
        if let Some(c) = &rewritten.keyed {
            for output in &c.outputs {
                let _ = std::fs::remove_file(key_index_file::key_index_file_path(
                    &self.index_dir,
                    &output.path,
                ));
            }
        }
    }

    /// After the `replace` snapshot is committed: moves the key index to the new files (with
    /// every row deleted since the plan dead in them) and the buffered deletes of the old files
    /// to the new ones. Real-time reads switch to `snapshot_id` in the same buffer-lock section.
    fn apply_keyed_compaction(
        &self,
        pending: &mut Pending,
        c: KeyedCompaction,
        plan: &Plan,
        snapshot_id: Option<i64>,
    ) {
        let old_ids: Vec<u32> = c.mapping.keys().copied().collect();
        for id in &old_ids {
            if let Some(path) = pending.paths.remove(id) {
                let _ = std::fs::remove_file(key_index_file::key_index_file_path(
                    &self.index_dir,
                    &path,
                ));
            }
        }
        for output in &c.outputs {
            pending.paths.insert(output.file_id, output.path.clone());
        }
        let starts = output_starts(&c);
        let mut buffer = self.lock_buffer();
        let buffer = &mut *buffer;
        let Some(keys) = buffer.keyed.as_mut() else {
            return;
        };
        // Rows dead in the index: everything deleted since the plan, committed or not.
        let mut dead = vec![RoaringTreemap::new(); c.outputs.len()];
        let mut buffered = vec![RoaringTreemap::new(); c.outputs.len()];
        for input in &plan.inputs {
            let Some(id) = input.id else { continue };
            if let Some(now) = keys.index.dead_positions(id) {
                for position in (now - &input.dead).iter() {
                    if let Some((slot, at)) = place(&c, &starts, id, position) {
                        dead[slot].insert(at);
                    }
                }
            }
            if let Some(late) = keys.file_deletes.remove(&id) {
                for position in late.iter() {
                    if let Some((slot, at)) = place(&c, &starts, id, position) {
                        buffered[slot].insert(at);
                    }
                }
            }
        }
        let mut replaced = Vec::with_capacity(c.outputs.len());
        for ((output, dead), buffered) in c.outputs.into_iter().zip(dead).zip(buffered) {
            if !buffered.is_empty() {
                *keys.file_deletes.entry(output.file_id).or_default() |= buffered;
            }
            replaced.push((output.file_id, output.keys, Some(dead)));
        }
        keys.index.replace_files(&old_ids, replaced);
        self.publish_read_at(buffer, pending, snapshot_id);
    }
}

/// Each output's first position in the outputs laid end to end.
fn output_starts(c: &KeyedCompaction) -> Vec<u32> {
    let mut starts = Vec::with_capacity(c.outputs.len());
    let mut total = 0u32;
    for output in &c.outputs {
        starts.push(total);
        total += output.rows;
    }
    starts
}

/// Where row `position` of old file `id` went: (output, position in it); `None` for a row the
/// rewrite left out.
fn place(c: &KeyedCompaction, starts: &[u32], id: u32, position: u64) -> Option<(usize, u64)> {
    let new = *c.mapping.get(&id)?.get(position as usize)?;
    if new == u32::MAX {
        return None;
    }
    let slot = starts
        .partition_point(|&start| start <= new)
        .checked_sub(1)?;
    Some((slot, u64::from(new - starts[slot])))
}
