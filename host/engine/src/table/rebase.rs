//! Other engines writing the same table: loading a committed snapshot into the writer's state
//! (at open, and after another writer committed), and rebasing our pending commit on it.
//!
//! When our compare-and-swap of the metadata pointer fails, another writer (Spark
//! `rewrite_data_files`, `DELETE`, `expire_snapshots`, ...) committed since our last snapshot.
//! Its snapshot may have removed or rewritten the files our key index points into and our
//! pending deletion vectors are for, so the rebase rebuilds the table's state the way a restart
//! does: the new snapshot's files and deletion vectors (ours and foreign ones), the key index
//! from them, then every batch after our committed LSN applied again from `Buffer::uncommitted`
//! (the in-memory copy of what the log holds past that LSN, plus unlogged source batches). No row
//! is lost or applied twice, and a later deletion vector for a file ORs in the one another
//! engine wrote (`Pending::committed_dvs` holds it).

use super::*;

/// How many times a commit rebases on other writers' commits before giving up (the commit loop
/// tries again at its next interval; the table reports the conflict as its last error).
pub(super) const MAX_REBASES: u32 = 5;

/// A committed snapshot's files as the writer needs them.
pub(super) struct CommittedFiles {
    /// Live data files.
    pub live_files: Vec<DataFile>,
    /// Live data-file path → the partition spec it was written in.
    pub file_specs: HashMap<String, i32>,
    /// Data-file path → its committed deletion vector (whoever wrote it).
    pub committed_dvs: HashMap<String, RoaringTreemap>,
    /// Keyed tables: data-file id → path, and the key index over the live files.
    pub paths: HashMap<u32, String>,
    pub keyed: Option<KeyedBuffer>,
}

/// Reads the live files and deletion vectors of `metadata`'s current snapshot and, for keyed
/// tables (`hasher` set), builds the key index from each file's key-index file, rebuilding a
/// missing or damaged one (files other engines wrote have none) from the file's key columns.
pub(super) async fn load_committed(
    name: &str,
    schema: &TableSchema,
    arrow_schema: &SchemaRef,
    metadata: &TableMetadata,
    warehouse: &Warehouse,
    index_dir: &std::path::Path,
    hasher: Option<KeyHasher>,
) -> Result<CommittedFiles> {
    let file_io = warehouse.file_io();
    let mut live_files = Vec::new();
    let mut file_specs = HashMap::new();
    let mut delete_files = Vec::new();
    for file in commit::live_files(&file_io, metadata).await? {
        match file.data_file.content_type() {
            DataContentType::Data => {
                file_specs.insert(file.data_file.file_path().to_string(), file.spec_id);
                live_files.push(file.data_file)
            }
            _ => delete_files.push(file.data_file),
        }
    }
    let mut committed_dvs: HashMap<String, RoaringTreemap> = HashMap::new();
    for dv in &delete_files {
        if let Some(data_file) = dv.referenced_data_file() {
            let positions = deletion_vector::read_deletion_vector(warehouse, dv).await?;
            // The spec allows one vector per data file; OR them should a writer leave two.
            *committed_dvs.entry(data_file).or_default() |= positions;
        }
    }
    let mut paths = HashMap::new();
    let Some(hasher) = hasher else {
        return Ok(CommittedFiles {
            live_files,
            file_specs,
            committed_dvs,
            paths,
            keyed: None,
        });
    };
    let key_columns: Vec<usize> = schema
        .primary_key
        .iter()
        .filter_map(|k| schema.column_index(k))
        .collect();
    let mut keyed = KeyedBuffer::new(key_columns.clone(), hasher);
    let mut rebuilt = 0;
    for file in &live_files {
        let id = keyed.allocate_file_id();
        paths.insert(id, file.file_path().to_string());
        let keys_file = key_index_file::key_index_file_path(index_dir, file.file_path());
        let keys = match key_index_file::read_key_index_file(&keys_file, &hasher) {
            Some(keys) => keys,
            None => {
                rebuilt += 1;
                let mut hashes = Vec::with_capacity(file.record_count() as usize);
                for batch in
                    data_files::read_data_file(warehouse, file.file_path(), arrow_schema).await?
                {
                    hashes.extend(hasher.hash_rows(&batch, &key_columns));
                }
                let keys = FileKeys::from_row_hashes(&hashes);
                key_index_file::write_key_index_file(&keys_file, &keys, &hasher)?;
                keys
            }
        };
        let dead = committed_dvs.get(file.file_path()).cloned();
        keyed.index.add_file(id, keys, dead);
    }
    if rebuilt > 0 {
        tracing::info!(table = %name, files = rebuilt, "rebuilt key-index files from data files");
    }
    Ok(CommittedFiles {
        live_files,
        file_specs,
        committed_dvs,
        paths,
        keyed: Some(keyed),
    })
}

impl Table {
    /// Moves the table onto the catalog's current snapshot after another writer committed:
    /// pending work goes back to the buffer, rebuilt on the new snapshot's files (see the
    /// module doc). Called with the commit lock held.
    pub(super) async fn rebase(&self, pending: &mut Pending) -> Result<()> {
        let location = self
            .catalog
            .list()
            .await?
            .into_iter()
            .find(|e| e.namespace == self.namespace && e.table == self.table)
            .map(|e| e.metadata_location)
            .ok_or_else(|| EngineError::TableNotFound(self.name.clone()))?;
        let metadata = commit::load_metadata(&self.warehouse.file_io(), &location).await?;
        let committed_lsn = commit::committed_lsn(&metadata);
        let truncating = pending.truncated.is_some();
        // A pending truncation forgot every key: it removes every file, whoever wrote it.
        let hasher = if truncating { None } else { self.key_hasher };
        let files = load_committed(
            &self.name,
            &self.schema,
            &self.arrow_schema,
            &metadata,
            &self.warehouse,
            &self.index_dir,
            hasher,
        )
        .await?;
        let CommittedFiles {
            live_files,
            file_specs,
            committed_dvs,
            paths,
            keyed,
        } = files;
        pending.generations.clear();
        pending.deletes.clear();
        pending.epoch += 1;
        pending.through_lsn = committed_lsn;
        pending.paths = paths;
        pending.committed_dvs = committed_dvs;
        if truncating {
            let mut removed: Vec<String> = live_files
                .iter()
                .map(|f| f.file_path().to_string())
                .collect();
            removed.sort();
            pending.truncated = Some(removed);
        }
        pending.live_files = live_files;
        pending.file_specs = file_specs;
        let snapshot_id = metadata.current_snapshot_id();
        let replayed = {
            let mut buffer = self.lock_buffer();
            let mut keyed = keyed;
            if keyed.is_none() {
                keyed = buffer.keyed.take().map(|mut k| {
                    k.clear();
                    k
                });
            }
            buffer.keyed = keyed;
            buffer.batches.clear();
            buffer.rows = 0;
            buffer.bytes = 0;
            // Checkpoints of batches going back to the buffer stay with them.
            let mut checkpoints = std::mem::take(&mut pending.source_checkpoints);
            checkpoints.extend(std::mem::take(&mut buffer.source_checkpoints));
            buffer.source_checkpoints = checkpoints;
            let log = std::mem::take(&mut buffer.uncommitted);
            let mut replayed = 0;
            for (lsn, batch) in log {
                if lsn <= committed_lsn {
                    continue;
                }
                buffer.buffer_batch(&self.arrow_schema, &batch, None)?;
                buffer.uncommitted.push((lsn, batch));
                replayed += 1;
            }
            // Real-time reads move to the other writer's snapshot with the rebuilt buffer.
            self.publish_read_at(&mut buffer, pending, snapshot_id);
            replayed
        };
        tracing::warn!(table = %self.name, metadata = %location, committed_lsn, batches = replayed,
            "another writer committed to the table: rebased pending changes on its snapshot");
        self.committed.send_modify(|s| {
            s.metadata = Arc::new(metadata);
            s.metadata_location = location;
            s.committed_lsn = committed_lsn;
        });
        Ok(())
    }
}
