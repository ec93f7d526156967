//! Manifest merging: keeps the number of manifests of a snapshot bounded under trickle traffic,
//! where every commit adds a manifest (two for a keyed table taking deletes).
//!
//! Done the way Java Iceberg's `MergingSnapshotProducer` / `ManifestMergeManager` does it, with
//! the same table properties: manifests are grouped by content (data, deletes) and partition
//! spec; each group is packed into bins of about `commit.manifest.target-size-bytes`, from the
//! end so the under-filled bin is the newest one (lookback 1, order kept); a bin of one
//! manifest is kept, the bin holding the content's first manifest (this commit's new files) is
//! merged only once it holds `commit.manifest.min-count-to-merge` manifests, any other bin of
//! several manifests is merged.
//!
//! Entry status in a merged manifest (spec "Manifest Entry Fields", "Sequence Number
//! Inheritance"): entries this snapshot added stay ADDED and entries it deleted stay DELETED;
//! live entries of older snapshots become EXISTING with their original snapshot id, data and
//! file sequence numbers written explicitly; entries older snapshots deleted are dropped.
//! Deletion vectors stay in delete manifests (content is part of the group key).

use std::collections::HashMap;

use iceberg::io::FileIO;
use iceberg::spec::{
    ManifestContentType, ManifestFile, ManifestStatus, ManifestWriterBuilder, TableMetadata,
};

use crate::error::{EngineError, Result};

/// Table property: whether manifests are merged (Java's name and default, `true`).
pub const MERGE_ENABLED: &str = "commit.manifest-merge.enabled";
/// Table property: manifests a group holds before the bin with the new one is merged.
pub const MIN_COUNT_TO_MERGE: &str = "commit.manifest.min-count-to-merge";
/// Table property: the size merged manifests are packed toward (Java's default 8 MiB).
pub const TARGET_SIZE_BYTES: &str = "commit.manifest.target-size-bytes";

/// Our default for [`MIN_COUNT_TO_MERGE`] when the table does not set it. Java's is 100; our
/// tables commit every few seconds, and every reader (DuckDB, PyIceberg, Spark, our own open,
/// rebase and snapshot reads) opens each manifest of a snapshot — one object-store GET each on
/// S3 — so 100 to 200 tiny manifests per scan cost more than merging a few KiB of manifest
/// every 16 commits.
pub const DEFAULT_MIN_COUNT_TO_MERGE: usize = 16;
const DEFAULT_TARGET_SIZE_BYTES: u64 = 8 * 1024 * 1024;

/// How a table merges manifests, from its properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergePolicy {
    pub enabled: bool,
    pub min_count: usize,
    pub target_bytes: u64,
}

impl MergePolicy {
    /// The table's policy: its properties where set and valid, else the defaults (a value
    /// that does not parse is ignored with a warning rather than failing every commit).
    pub fn of(metadata: &TableMetadata) -> MergePolicy {
        let props = metadata.properties();
        fn parse<T: std::str::FromStr>(props: &HashMap<String, String>, key: &str) -> Option<T> {
            let value = props.get(key)?;
            let parsed = value.trim().parse().ok();
            if parsed.is_none() {
                tracing::warn!(property = key, value = %value, "ignoring a table property that does not parse");
            }
            parsed
        }
        MergePolicy {
            enabled: parse::<bool>(props, MERGE_ENABLED).unwrap_or(true),
            min_count: parse::<usize>(props, MIN_COUNT_TO_MERGE)
                .unwrap_or(DEFAULT_MIN_COUNT_TO_MERGE)
                .max(1),
            target_bytes: parse::<u64>(props, TARGET_SIZE_BYTES)
                .unwrap_or(DEFAULT_TARGET_SIZE_BYTES)
                .max(1),
        }
    }
}

/// One bin of a group: indices into the group, and whether they are merged into one manifest.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Bin {
    pub members: Vec<usize>,
    pub merge: bool,
}

/// Packs a group of manifests (their sizes, in order) into bins, Java's `packEnd` with a
/// lookback of 1: from the end, a manifest joins the current bin while the bin stays within
/// `target_bytes`, else starts a new one. `first`: the index of the content's first manifest
/// (this commit's), whose bin merges only at `min_count` manifests.
pub(crate) fn plan_bins(sizes: &[u64], first: Option<usize>, policy: &MergePolicy) -> Vec<Bin> {
    let mut bins: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut weight = 0u64;
    for i in (0..sizes.len()).rev() {
        if !current.is_empty() && weight.saturating_add(sizes[i]) > policy.target_bytes {
            bins.push(std::mem::take(&mut current));
            weight = 0;
        }
        current.push(i);
        weight = weight.saturating_add(sizes[i]);
    }
    if !current.is_empty() {
        bins.push(current);
    }
    bins.reverse();
    bins.into_iter()
        .map(|mut members| {
            members.reverse();
            let merge = policy.enabled
                && members.len() > 1
                && !(first.is_some_and(|f| members.contains(&f))
                    && members.len() < policy.min_count);
            Bin { members, merge }
        })
        .collect()
}

/// What a merge needs of the snapshot being written.
pub(crate) struct NewSnapshot<'a> {
    pub metadata: &'a TableMetadata,
    pub snapshot_id: i64,
    pub sequence_number: i64,
}

/// Merges `manifests` (the new snapshot's list: this commit's manifests first) per the
/// table's policy; `location(n)` names the n-th merged manifest. Returns the new list and
/// the paths of this commit's manifests that a merged one superseded (never referenced by
/// any snapshot: the caller may delete them).
pub(crate) async fn merge_manifests(
    file_io: &FileIO,
    snapshot: &NewSnapshot<'_>,
    manifests: Vec<ManifestFile>,
    location: impl Fn(usize) -> String,
) -> Result<(Vec<ManifestFile>, Vec<String>)> {
    let policy = MergePolicy::of(snapshot.metadata);
    if !policy.enabled {
        return Ok((manifests, Vec::new()));
    }
    // Groups by (content, spec), in order of first appearance.
    let mut groups: Vec<((bool, i32), Vec<ManifestFile>)> = Vec::new();
    for manifest in manifests {
        let key = (
            manifest.content == ManifestContentType::Data,
            manifest.partition_spec_id,
        );
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, group)) => group.push(manifest),
            None => groups.push((key, vec![manifest])),
        }
    }
    let mut first_of_content: HashMap<bool, (i32, String)> = HashMap::new();
    for ((is_data, spec), group) in &groups {
        first_of_content
            .entry(*is_data)
            .or_insert_with(|| (*spec, group[0].manifest_path.clone()));
    }
    let mut out = Vec::new();
    let mut superseded = Vec::new();
    let mut written = 0;
    for ((is_data, spec_id), group) in groups {
        let first = first_of_content
            .get(&is_data)
            .filter(|(spec, _)| *spec == spec_id)
            .map(|_| 0);
        let sizes: Vec<u64> = group
            .iter()
            .map(|m| m.manifest_length.max(0) as u64)
            .collect();
        let mut group: Vec<Option<ManifestFile>> = group.into_iter().map(Some).collect();
        for bin in plan_bins(&sizes, first, &policy) {
            let members: Vec<ManifestFile> = bin
                .members
                .iter()
                .filter_map(|&i| group[i].take())
                .collect();
            if !bin.merge {
                out.extend(members);
                continue;
            }
            for m in &members {
                if m.added_snapshot_id == snapshot.snapshot_id {
                    superseded.push(m.manifest_path.clone());
                }
            }
            out.push(
                merge_bin(
                    file_io,
                    snapshot,
                    spec_id,
                    is_data,
                    members,
                    location(written),
                )
                .await?,
            );
            written += 1;
        }
    }
    Ok((out, superseded))
}

/// Writes the live entries of `members` (and this snapshot's deletions) as one manifest.
async fn merge_bin(
    file_io: &FileIO,
    snapshot: &NewSnapshot<'_>,
    spec_id: i32,
    is_data: bool,
    members: Vec<ManifestFile>,
    location: String,
) -> Result<ManifestFile> {
    let spec = snapshot
        .metadata
        .partition_spec_by_id(spec_id)
        .ok_or_else(|| EngineError::Catalog(format!("no partition spec {spec_id} in the table")))?;
    let builder = ManifestWriterBuilder::new(
        file_io.new_output(&location)?,
        Some(snapshot.snapshot_id),
        snapshot.metadata.current_schema().clone(),
        spec.as_ref().clone(),
    );
    let mut writer = if is_data {
        builder.build_v3_data()
    } else {
        builder.build_v3_deletes()
    };
    for mut manifest in members {
        let ours = manifest.added_snapshot_id == snapshot.snapshot_id;
        if ours {
            // Written by this commit: its ADDED entries inherit this snapshot's sequence number,
            // which the manifest list would assign.
            manifest.sequence_number = snapshot.sequence_number;
        }
        for entry in manifest.load_manifest(file_io).await?.entries() {
            let seq = entry.sequence_number().unwrap_or(snapshot.sequence_number);
            let file_seq = entry.file_sequence_number.or(Some(seq));
            let added_in = entry.snapshot_id().unwrap_or(manifest.added_snapshot_id);
            let file = entry.data_file().clone();
            match entry.status() {
                ManifestStatus::Added if added_in == snapshot.snapshot_id => {
                    writer.add_file(file, seq)?
                }
                ManifestStatus::Deleted if added_in == snapshot.snapshot_id => {
                    writer.add_delete_file(file, seq, file_seq)?
                }
                // Deleted by an older snapshot: gone from this one.
                ManifestStatus::Deleted => {}
                ManifestStatus::Added | ManifestStatus::Existing => {
                    writer.add_existing_file(file, added_in, seq, file_seq)?
                }
            }
        }
    }
    Ok(writer.write_manifest_file().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min_count: usize, target_bytes: u64) -> MergePolicy {
        MergePolicy {
            enabled: true,
            min_count,
            target_bytes,
        }
    }

    fn merged(bins: &[Bin]) -> Vec<Vec<usize>> {
        bins.iter()
            .filter(|b| b.merge)
            .map(|b| b.members.clone())
            .collect()
    }

    #[test]
    fn the_new_manifest_bin_merges_only_at_the_minimum_count() {
        let sizes = [10; 4];
        assert!(merged(&plan_bins(&sizes, Some(0), &policy(5, 1000))).is_empty());
        assert_eq!(
            merged(&plan_bins(&[10; 5], Some(0), &policy(5, 1000))),
            vec![vec![0, 1, 2, 3, 4]]
        );
        // A group without this commit's manifest merges any bin of several.
        assert_eq!(
            merged(&plan_bins(&sizes, None, &policy(100, 1000))),
            vec![vec![0, 1, 2, 3]]
        );
    }

    #[test]
    fn bins_pack_from_the_end_and_keep_order() {
        // Target 25: from the end [4,3] (20), [2,1] (20), [0] alone.
        let bins = plan_bins(&[10, 10, 10, 10, 10], Some(0), &policy(2, 25));
        let members: Vec<Vec<usize>> = bins.iter().map(|b| b.members.clone()).collect();
        assert_eq!(members, vec![vec![0], vec![1, 2], vec![3, 4]]);
        assert_eq!(merged(&bins), vec![vec![1, 2], vec![3, 4]]);
        // A manifest larger than the target is a bin of its own, never rewritten.
        let bins = plan_bins(&[10, 500, 10], None, &policy(2, 100));
        assert!(merged(&bins).is_empty());
    }

    #[test]
    fn table_properties_override_the_defaults() {
        use iceberg::spec::{
            FormatVersion, NestedField, PartitionSpec, PrimitiveType, Schema, SortOrder,
            TableMetadataBuilder, Type,
        };
        let metadata = |props: &[(&str, &str)]| {
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
                props
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
            .unwrap()
            .build()
            .unwrap()
            .metadata
        };
        assert_eq!(
            MergePolicy::of(&metadata(&[])),
            policy(DEFAULT_MIN_COUNT_TO_MERGE, 8 << 20)
        );
        let set = MergePolicy::of(&metadata(&[
            (MERGE_ENABLED, "false"),
            (MIN_COUNT_TO_MERGE, "100"),
            (TARGET_SIZE_BYTES, "1024"),
        ]));
        assert_eq!(
            set,
            MergePolicy {
                enabled: false,
                min_count: 100,
                target_bytes: 1024
            }
        );
        // A value that does not parse falls back to the default.
        let bad = MergePolicy::of(&metadata(&[(MIN_COUNT_TO_MERGE, "lots")]));
        assert_eq!(bad.min_count, DEFAULT_MIN_COUNT_TO_MERGE);
    }

    #[test]
    fn disabled_merges_nothing() {
        let off = MergePolicy {
            enabled: false,
            ..policy(2, 1000)
        };
        assert!(merged(&plan_bins(&[1, 1, 1], Some(0), &off)).is_empty());
    }
}
