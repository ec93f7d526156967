//! Table maintenance beyond compaction: removing files no retained snapshot references
//! (expired snapshots' files, superseded metadata, leftovers of crashed writers).
//!
//! Safe at any instant: a file is deleted only if no retained snapshot and no recent metadata
//! file refers to it, and a crash mid-way merely leaves some orphans for the next run.

use std::collections::HashSet;

use iceberg::io::FileIO;
use iceberg::spec::TableMetadata;

use crate::commit;
use crate::error::Result;
use crate::storage::Warehouse;

/// Every file the table's retained snapshots and metadata log reference.
async fn referenced_files(
    file_io: &FileIO,
    metadata: &TableMetadata,
    metadata_location: &str,
) -> Result<HashSet<String>> {
    let mut live = HashSet::new();
    live.insert(metadata_location.to_string());
    for entry in metadata.metadata_log() {
        live.insert(entry.metadata_file.clone());
    }
    for snapshot in metadata.snapshots() {
        live.insert(snapshot.manifest_list().to_string());
        for manifest in commit::snapshot_manifests(file_io, metadata, snapshot).await? {
            // Snapshots share most manifests: read each one once.
            if !live.insert(manifest.manifest_path.clone()) {
                continue;
            }
            for entry in manifest.load_manifest(file_io).await?.entries() {
                if entry.is_alive() {
                    live.insert(entry.data_file().file_path().to_string());
                }
            }
        }
    }
    Ok(live)
}

/// Deletes the table's unreferenced data and metadata files; returns how many.
pub async fn remove_orphan_files(
    warehouse: &Warehouse,
    metadata: &TableMetadata,
    metadata_location: &str,
) -> Result<usize> {
    let file_io = warehouse.file_io();
    // By store key: other writers spell local locations differently (`file:/abs`, `/abs`).
    let live: HashSet<String> = referenced_files(&file_io, metadata, metadata_location)
        .await?
        .iter()
        .map(|location| warehouse.key(location))
        .collect::<Result<_>>()?;
    let root = metadata.location().trim_end_matches('/');
    let mut removed = 0;
    for dir in ["data", "metadata"] {
        for location in warehouse.list(&format!("{root}/{dir}")).await? {
            if !live.contains(&warehouse.key(&location)?) {
                warehouse.delete(&location).await?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}
