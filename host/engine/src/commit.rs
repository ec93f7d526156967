//! Our Iceberg commit layer: one snapshot per commit, written with the `iceberg` crate's public
//! manifest, manifest-list and metadata builders, published by a compare-and-swap of the
//! metadata pointer in the catalog.
//!
//! iceberg 0.10 cannot commit a custom snapshot (its transaction actions are crate-private and
//! know no deletion vectors), so this module does what a row-delta commit does: carry unchanged
//! manifests over, rewrite manifests that lose files, add a manifest for new files, and keep
//! v3 row lineage (`first-row-id`, `next-row-id`) and summary totals right.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use iceberg::io::FileIO;
use iceberg::spec::{
    DataContentType, DataFile, FormatVersion, ManifestContentType, ManifestFile, ManifestList,
    ManifestListWriter, ManifestWriterBuilder, Operation as SnapshotOperation, PartitionSpec,
    Snapshot, SortOrder, Summary, TableMetadata, TableMetadataBuilder, MAIN_BRANCH,
};
use uuid::Uuid;

use crate::error::{EngineError, Result};
use crate::snapshot_summary::{summary_counts, Totals};

/// Snapshot-summary key holding the last write-ahead-log LSN the snapshot contains. The
/// string is on disk in existing tables and must not change.
pub const COMMITTED_LSN_SUMMARY_KEY: &str = "moonlink.checkpoint";

/// A live file of the current snapshot: a data file, or a deletion vector (content
/// `PositionDeletes`, with `referenced_data_file` naming the data file it applies to).
#[derive(Debug, Clone)]
pub struct LiveDataFile {
    /// The manifest entry's data file (Parquet file or deletion vector).
    pub data_file: DataFile,
    /// The partition spec the file was written in: its manifest's (spec "Manifests": a
    /// manifest holds files of one partition spec, named by `partition-spec-id` in its
    /// manifest-list entry). iceberg 0.10 keeps a data file's own spec id crate-private.
    pub spec_id: i32,
}

/// What one commit changes.
#[derive(Debug, Default)]
pub struct SnapshotChanges {
    pub added: Vec<DataFile>,
    /// Paths of live data files this snapshot removes (merged into an added file). Their
    /// deletion vectors go with them.
    pub removed: HashSet<String>,
    /// New deletion vectors (delete files); each replaces any live one for the same data file.
    pub added_deletes: Vec<DataFile>,
    /// The last WAL LSN the snapshot contains (recorded under [`COMMITTED_LSN_SUMMARY_KEY`]).
    pub through_lsn: u64,
    /// Pull-source checkpoints this snapshot makes durable (source id → checkpoint).
    pub source_checkpoints: BTreeMap<String, String>,
    /// Which older snapshots to expire in the same metadata update.
    pub retention: SnapshotRetention,
    /// Only compaction: files rewritten, no row added or deleted (operation `replace`).
    pub rewrite_only: bool,
    /// Added files (data files or deletion vectors) not in the table's default partition spec,
    /// path → spec id: deletion vectors of data files written before partition evolution,
    /// which are in their data file's spec and partition (spec "Deletion Vectors").
    pub added_specs: HashMap<String, i32>,
}

/// Snapshot expiry: a snapshot older than `max_age` is removed, except the newest `min_keep`
/// (the current one is always kept). Files only expired snapshots referenced become orphans,
/// which `maintenance::remove_orphan_files` deletes.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotRetention {
    /// Snapshots older than this are expired.
    pub max_age: std::time::Duration,
    /// The newest snapshots kept regardless of age (at least the current one).
    pub min_keep: usize,
}

impl Default for SnapshotRetention {
    fn default() -> Self {
        SnapshotRetention {
            max_age: std::time::Duration::from_secs(600),
            min_keep: 10,
        }
    }
}

/// Snapshot ids to expire from `metadata` (before the new snapshot at `now_ms` is added).
fn expired_snapshots(
    metadata: &TableMetadata,
    retention: SnapshotRetention,
    now_ms: i64,
) -> Vec<i64> {
    let mut snapshots: Vec<(i64, i64)> = metadata
        .snapshots()
        .map(|s| (s.timestamp_ms(), s.snapshot_id()))
        .collect();
    snapshots.sort_unstable_by(|a, b| b.cmp(a)); // newest first
    let cutoff = now_ms - retention.max_age.as_millis() as i64;
    // The new snapshot counts toward `min_keep`.
    snapshots
        .into_iter()
        .skip(retention.min_keep.saturating_sub(1))
        .filter(|(ts, _)| *ts < cutoff)
        .map(|(_, id)| id)
        .collect()
}

/// Summary key prefix of a pull source's checkpoint: `moonlink.source.<id>.checkpoint`.
const SOURCE_CHECKPOINT_PREFIX: &str = "moonlink.source.";

fn source_checkpoint_key(source: &str) -> String {
    format!("{SOURCE_CHECKPOINT_PREFIX}{source}.checkpoint")
}

/// The current snapshot and its ancestors, newest first, following `parent-snapshot-id`
/// until a parent is missing (expired) or there is none.
fn ancestry(metadata: &TableMetadata) -> impl Iterator<Item = &Arc<Snapshot>> {
    let mut next = metadata.current_snapshot();
    std::iter::from_fn(move || {
        let snapshot = next?;
        next = snapshot
            .parent_snapshot_id()
            .and_then(|id| metadata.snapshot_by_id(id));
        Some(snapshot)
    })
}

/// The summary of the newest snapshot in the current snapshot's ancestry that we wrote (it
/// carries [`COMMITTED_LSN_SUMMARY_KEY`]). Other engines (Spark `rewrite_data_files`,
/// `DELETE`, ...) write snapshots without our keys on top of ours; our state is the nearest
/// ancestor of ours.
fn our_summary(metadata: &TableMetadata) -> Option<&HashMap<String, String>> {
    ancestry(metadata)
        .map(|s| &s.summary().additional_properties)
        .find(|props| props.contains_key(COMMITTED_LSN_SUMMARY_KEY))
}

/// Our checkpoint keys: from the nearest snapshot of ours in the ancestry, or — when another
/// engine's `expire_snapshots` removed all of ours — from the table properties, where every
/// commit of ours records the same keys (Java keeps table properties across its commits).
fn our_checkpoints(metadata: &TableMetadata) -> &HashMap<String, String> {
    our_summary(metadata).unwrap_or_else(|| metadata.properties())
}

/// The checkpoint of `source` recorded by our latest snapshot (see [`committed_lsn`]).
pub fn committed_source_checkpoint(metadata: &TableMetadata, source: &str) -> Option<String> {
    our_checkpoints(metadata)
        .get(&source_checkpoint_key(source))
        .cloned()
}

impl SnapshotChanges {
    /// Whether a live entry of the current snapshot is removed by this snapshot.
    fn removes(&self, file: &DataFile, replaced_dvs: &HashSet<String>) -> bool {
        match file.content_type() {
            DataContentType::Data => self.removed.contains(file.file_path()),
            _ => file.referenced_data_file().is_some_and(|referenced| {
                self.removed.contains(&referenced) || replaced_dvs.contains(&referenced)
            }),
        }
    }
}

/// Metadata file name for version `version` of a table.
fn metadata_file_location(table_location: &str, version: u64) -> String {
    format!(
        "{table_location}/metadata/{version:05}-{}.metadata.json",
        Uuid::new_v4()
    )
}

/// Parses the version out of `.../metadata/00042-<uuid>.metadata.json`.
fn metadata_version(location: &str) -> u64 {
    location
        .rsplit('/')
        .next()
        .and_then(|name| name.split('-').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Creates the metadata of a new, empty, format-version-3 table and writes its first file.
pub async fn create_table_metadata(
    file_io: &FileIO,
    schema: iceberg::spec::Schema,
    partition_spec: iceberg::spec::UnboundPartitionSpec,
    table_location: &str,
) -> Result<(TableMetadata, String)> {
    let properties = HashMap::from([
        ("write.format.default".to_string(), "parquet".to_string()),
        (
            "write.parquet.compression-codec".to_string(),
            "zstd".to_string(),
        ),
    ]);
    let metadata = TableMetadataBuilder::new(
        schema,
        partition_spec,
        SortOrder::unsorted_order(),
        table_location.to_string(),
        FormatVersion::V3,
        properties,
    )?
    .build()?
    .metadata;
    let location = metadata_file_location(table_location, 0);
    write_metadata(file_io, &location, &metadata).await?;
    Ok((metadata, location))
}

async fn write_metadata(file_io: &FileIO, location: &str, metadata: &TableMetadata) -> Result<()> {
    let json = serde_json::to_vec_pretty(metadata)
        .map_err(|e| EngineError::Catalog(format!("cannot serialize table metadata: {e}")))?;
    file_io.new_output(location)?.write(json.into()).await?;
    Ok(())
}

/// Reads a metadata file.
pub async fn load_metadata(file_io: &FileIO, location: &str) -> Result<TableMetadata> {
    let bytes = file_io.new_input(location)?.read().await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| EngineError::Catalog(format!("cannot parse table metadata {location}: {e}")))
}

/// The WAL LSN our latest snapshot contains (0 for a table without one): the nearest
/// snapshot of ours in the current snapshot's ancestry, else the table property our commits
/// set (see `our_checkpoints`).
pub fn committed_lsn(metadata: &TableMetadata) -> u64 {
    our_checkpoints(metadata)
        .get(COMMITTED_LSN_SUMMARY_KEY)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn current_manifests(
    file_io: &FileIO,
    metadata: &TableMetadata,
) -> Result<Vec<ManifestFile>> {
    let Some(snapshot) = metadata.current_snapshot() else {
        return Ok(Vec::new());
    };
    snapshot_manifests(file_io, metadata, snapshot).await
}

/// The manifests of one snapshot.
pub async fn snapshot_manifests(
    file_io: &FileIO,
    metadata: &TableMetadata,
    snapshot: &Snapshot,
) -> Result<Vec<ManifestFile>> {
    let bytes = file_io.new_input(snapshot.manifest_list())?.read().await?;
    let list = ManifestList::parse_with_version(&bytes, metadata.format_version())?;
    Ok(list.consume_entries().into_iter().collect())
}

/// The live data files and deletion vectors of the current snapshot.
pub async fn live_files(file_io: &FileIO, metadata: &TableMetadata) -> Result<Vec<LiveDataFile>> {
    let mut files = Vec::new();
    for manifest in current_manifests(file_io, metadata).await? {
        for entry in manifest.load_manifest(file_io).await?.entries() {
            if entry.is_alive() {
                files.push(LiveDataFile {
                    data_file: entry.data_file().clone(),
                    spec_id: manifest.partition_spec_id,
                });
            }
        }
    }
    Ok(files)
}

/// The result of a commit: the new metadata and where it is written.
/// Writes a new metadata version whose current schema is `schema` (no new snapshot): later
/// data files are written in it, older ones keep theirs, and readers match columns by field id.
/// With `partition_spec`, that spec becomes the default one (partition evolution): files
/// written before keep theirs.
pub async fn evolve_metadata(
    file_io: &FileIO,
    metadata: &TableMetadata,
    metadata_location: &str,
    schema: Option<iceberg::spec::Schema>,
    partition_spec: Option<iceberg::spec::UnboundPartitionSpec>,
) -> Result<Committed> {
    let mut builder = TableMetadataBuilder::new_from_metadata(
        metadata.clone(),
        Some(metadata_location.to_string()),
    );
    if let Some(schema) = schema {
        builder = builder.add_current_schema(schema)?;
    }
    if let Some(spec) = partition_spec {
        builder = builder.add_default_partition_spec(spec)?;
    }
    write_next_version(file_io, metadata_location, builder).await
}

/// Builds `builder` and writes it as the version after `metadata_location`.
async fn write_next_version(
    file_io: &FileIO,
    metadata_location: &str,
    builder: TableMetadataBuilder,
) -> Result<Committed> {
    let metadata = builder.build()?.metadata;
    let table_location = metadata.location().trim_end_matches('/').to_string();
    let location = metadata_file_location(&table_location, metadata_version(metadata_location) + 1);
    write_metadata(file_io, &location, &metadata).await?;
    Ok(Committed { metadata, location })
}

pub struct Committed {
    pub metadata: TableMetadata,
    pub location: String,
}

/// Writes a snapshot applying `changes` on top of `metadata` (stored at `metadata_location`)
/// and returns the new metadata. The caller publishes it with a catalog compare-and-swap.
pub async fn write_snapshot(
    file_io: &FileIO,
    metadata: &TableMetadata,
    metadata_location: &str,
    changes: SnapshotChanges,
) -> Result<Committed> {
    let table_location = metadata.location().trim_end_matches('/').to_string();
    let schema = metadata.current_schema().clone();
    // A manifest holds files of one partition spec (spec "Manifests"): a rewritten manifest
    // keeps its own.
    let spec_of = |spec_id: i32| -> Result<PartitionSpec> {
        metadata
            .partition_spec_by_id(spec_id)
            .map(|s| s.as_ref().clone())
            .ok_or_else(|| {
                EngineError::Catalog(format!("no partition spec {spec_id} in the table"))
            })
    };
    let snapshot_id = new_snapshot_id(metadata);
    let parent = metadata.current_snapshot().map(|s| s.snapshot_id());
    let sequence_number = metadata.last_sequence_number() + 1;
    let commit_uuid = Uuid::new_v4();
    let manifest_location = |n: usize| format!("{table_location}/metadata/{commit_uuid}-m{n}.avro");

    let replaced_dvs: HashSet<String> = changes
        .added_deletes
        .iter()
        .filter_map(|f| f.referenced_data_file())
        .collect();
    let nothing_removed = changes.removed.is_empty() && replaced_dvs.is_empty();
    let mut manifests = Vec::new();
    let mut removed = Totals::default();
    for manifest in current_manifests(file_io, metadata).await? {
        if nothing_removed {
            manifests.push(manifest);
            continue;
        }
        let loaded = manifest.load_manifest(file_io).await?;
        let touches = loaded
            .entries()
            .iter()
            .any(|e| e.is_alive() && changes.removes(e.data_file(), &replaced_dvs));
        if !touches {
            manifests.push(manifest);
            continue;
        }
        // Rewrite: removed files become DELETED entries of this snapshot, the rest EXISTING.
        let builder = ManifestWriterBuilder::new(
            file_io.new_output(manifest_location(manifests.len() + 1000))?,
            Some(snapshot_id),
            schema.clone(),
            spec_of(manifest.partition_spec_id)?,
        );
        let mut writer = match manifest.content {
            ManifestContentType::Data => builder.build_v3_data(),
            ManifestContentType::Deletes => builder.build_v3_deletes(),
        };
        for entry in loaded.entries().iter().filter(|e| e.is_alive()) {
            let data_file = entry.data_file().clone();
            let seq = entry.sequence_number().unwrap_or(0);
            let file_seq = entry.file_sequence_number.or(Some(seq));
            if changes.removes(&data_file, &replaced_dvs) {
                removed.count(&data_file);
                writer.add_delete_file(data_file, seq, file_seq)?;
            } else {
                let added_in = entry.snapshot_id().unwrap_or(snapshot_id);
                writer.add_existing_file(data_file, added_in, seq, file_seq)?;
            }
        }
        manifests.push(writer.write_manifest_file().await?);
    }

    let mut added = Totals::default();
    changes.added.iter().for_each(|f| added.count(f));
    changes.added_deletes.iter().for_each(|f| added.count(f));
    // New files go into one manifest per (content, spec): most are in the default spec, but a
    // deletion vector is in the spec of the data file it points at.
    let default_spec = metadata.default_partition_spec_id();
    let mut groups: Vec<((bool, i32), Vec<DataFile>)> = Vec::new();
    for (files, is_data) in [(changes.added, true), (changes.added_deletes, false)] {
        for file in files {
            let spec_id = changes
                .added_specs
                .get(file.file_path())
                .copied()
                .unwrap_or(default_spec);
            match groups
                .iter_mut()
                .find(|(key, _)| *key == (is_data, spec_id))
            {
                Some((_, group)) => group.push(file),
                None => groups.push(((is_data, spec_id), vec![file])),
            }
        }
    }
    // Data before deletes, the default spec first within each.
    groups.sort_by_key(|((is_data, spec_id), _)| (!*is_data, *spec_id != default_spec));
    for (n, ((is_data, spec_id), files)) in groups.into_iter().enumerate() {
        let builder = ManifestWriterBuilder::new(
            file_io.new_output(manifest_location(n))?,
            Some(snapshot_id),
            schema.clone(),
            spec_of(spec_id)?,
        );
        let mut writer = if is_data {
            builder.build_v3_data()
        } else {
            builder.build_v3_deletes()
        };
        for file in files {
            writer.add_file(file, sequence_number)?;
        }
        // New files first: readers plan newest data first.
        manifests.insert(n.min(manifests.len()), writer.write_manifest_file().await?);
    }

    // Trickle traffic adds a manifest per commit: merge small ones past the table's bound.
    let (manifests, superseded) = crate::manifest_merge::merge_manifests(
        file_io,
        &crate::manifest_merge::NewSnapshot {
            metadata,
            snapshot_id,
            sequence_number,
        },
        manifests,
        |n| manifest_location(n + 2000),
    )
    .await?;
    for path in superseded {
        // Written by this commit and merged away: no snapshot references it (a failure
        // leaves an orphan for the sweep).
        let _ = file_io.delete(&path).await;
    }

    let manifest_list_location =
        format!("{table_location}/metadata/snap-{snapshot_id}-1-{commit_uuid}.avro");
    let first_row_id = metadata.next_row_id();
    let mut list_writer = ManifestListWriter::v3(
        file_io
            .new_output(&manifest_list_location)?
            .writer()
            .await?,
        snapshot_id,
        parent,
        sequence_number,
        Some(first_row_id),
    );
    list_writer.add_manifests(manifests.into_iter())?;
    let next_row_id = list_writer.next_row_id().unwrap_or(first_row_id);
    list_writer.close().await?;

    let previous = metadata
        .current_snapshot()
        .map(|s| s.summary().additional_properties.clone())
        .unwrap_or_default();
    let mut props = summary_counts(&previous, &added, &removed);
    // Our checkpoint keys, in the summary and (for when other engines expire our snapshots)
    // in the table properties. Source checkpoints carry forward from our latest snapshot,
    // which may lie below another engine's snapshot.
    let mut checkpoints: HashMap<String, String> = our_checkpoints(metadata)
        .iter()
        .filter(|(key, _)| key.starts_with(SOURCE_CHECKPOINT_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (source, checkpoint) in &changes.source_checkpoints {
        checkpoints.insert(source_checkpoint_key(source), checkpoint.clone());
    }
    checkpoints.insert(
        COMMITTED_LSN_SUMMARY_KEY.to_string(),
        changes.through_lsn.to_string(),
    );
    props.extend(checkpoints.clone());
    // Operations as Java's row-delta names them (spec: snapshot `operation`).
    let operation = if changes.rewrite_only {
        SnapshotOperation::Replace
    } else if added.data_files == 0 && (removed.data_files > 0 || added.delete_files > 0) {
        SnapshotOperation::Delete
    } else if removed.data_files > 0 || added.delete_files > 0 || removed.delete_files > 0 {
        SnapshotOperation::Overwrite
    } else {
        SnapshotOperation::Append
    };

    let now_ms = chrono::Utc::now().timestamp_millis();
    let expired = expired_snapshots(metadata, changes.retention, now_ms);
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(parent)
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(now_ms)
        .with_manifest_list(manifest_list_location)
        .with_summary(Summary {
            operation,
            additional_properties: props,
        })
        .with_schema_id(schema.schema_id())
        .with_row_range(first_row_id, next_row_id - first_row_id)
        .build();
    let builder = TableMetadataBuilder::new_from_metadata(
        metadata.clone(),
        Some(metadata_location.to_string()),
    )
    .remove_snapshots(&expired)
    .set_properties(checkpoints)?
    .set_branch_snapshot(snapshot, MAIN_BRANCH)?;
    write_next_version(file_io, metadata_location, builder).await
}

fn new_snapshot_id(metadata: &TableMetadata) -> i64 {
    loop {
        let (hi, lo) = Uuid::new_v4().as_u64_pair();
        let id = ((hi ^ lo) & (i64::MAX as u64)) as i64;
        if id != 0 && metadata.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iceberg::spec::{NestedField, PrimitiveType, Schema, Type};

    fn empty_table() -> TableMetadata {
        let schema = Schema::builder()
            .with_fields(vec![NestedField::required(
                1,
                "id",
                Type::Primitive(PrimitiveType::Long),
            )
            .into()])
            .build()
            .unwrap();
        TableMetadataBuilder::new(
            schema,
            PartitionSpec::unpartition_spec(),
            SortOrder::unsorted_order(),
            "/w/t".to_string(),
            FormatVersion::V3,
            HashMap::new(),
        )
        .unwrap()
        .build()
        .unwrap()
        .metadata
    }

    /// Adds a snapshot on top of the current one with `summary` as its properties.
    fn commit(metadata: TableMetadata, id: i64, summary: &[(&str, &str)]) -> TableMetadata {
        let snapshot = Snapshot::builder()
            .with_snapshot_id(id)
            .with_parent_snapshot_id(metadata.current_snapshot_id())
            .with_sequence_number(metadata.last_sequence_number() + 1)
            .with_timestamp_ms(chrono::Utc::now().timestamp_millis())
            .with_manifest_list(format!("/w/t/metadata/snap-{id}.avro"))
            .with_summary(Summary {
                operation: SnapshotOperation::Replace,
                additional_properties: summary
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
            .with_schema_id(0)
            .with_row_range(metadata.next_row_id(), 0)
            .build();
        TableMetadataBuilder::new_from_metadata(metadata, None)
            .set_branch_snapshot(snapshot, MAIN_BRANCH)
            .unwrap()
            .build()
            .unwrap()
            .metadata
    }

    #[test]
    fn checkpoints_survive_snapshots_of_other_engines() {
        let metadata = empty_table();
        assert_eq!(committed_lsn(&metadata), 0);
        let metadata = commit(
            metadata,
            1,
            &[
                (COMMITTED_LSN_SUMMARY_KEY, "7"),
                ("moonlink.source.pg.checkpoint", "0/42"),
            ],
        );
        // Spark's rewrite_data_files, then a DELETE: no moonlink keys.
        let metadata = commit(metadata, 2, &[("spark.app.id", "local-1")]);
        let metadata = commit(metadata, 3, &[]);
        assert_eq!(committed_lsn(&metadata), 7);
        assert_eq!(
            committed_source_checkpoint(&metadata, "pg").as_deref(),
            Some("0/42")
        );
        assert_eq!(committed_source_checkpoint(&metadata, "other"), None);
    }

    #[test]
    fn checkpoints_fall_back_to_table_properties_when_ours_are_expired() {
        let metadata = commit(empty_table(), 1, &[(COMMITTED_LSN_SUMMARY_KEY, "7")]);
        let metadata = commit(metadata, 2, &[]);
        // expire_snapshots(retain_last => 1) elsewhere: only the foreign snapshot is left.
        let metadata = TableMetadataBuilder::new_from_metadata(metadata, None)
            .remove_snapshots(&[1])
            .set_properties(HashMap::from([
                (COMMITTED_LSN_SUMMARY_KEY.to_string(), "9".to_string()),
                (source_checkpoint_key("pg"), "0/50".to_string()),
            ]))
            .unwrap()
            .build()
            .unwrap()
            .metadata;
        assert_eq!(metadata.snapshots().count(), 1);
        assert_eq!(committed_lsn(&metadata), 9);
        assert_eq!(
            committed_source_checkpoint(&metadata, "pg").as_deref(),
            Some("0/50")
        );
    }
}
