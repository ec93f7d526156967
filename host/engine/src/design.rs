//! A table's design as its Iceberg metadata says it: schema id, partition spec, properties
//! and snapshot history (`GET /tables/{name}`), without handing Iceberg types to callers.

use std::collections::BTreeMap;

use iceberg::spec::TableMetadata;

/// One field of a partition spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFieldInfo {
    /// The partition field's name (e.g. `created_at_day`).
    pub name: String,
    /// The transform as Iceberg writes it: `identity`, `day`, `bucket[16]`, `truncate[4]`, ...
    pub transform: String,
    /// The source column's current name (`None` if it was dropped).
    pub source: Option<String>,
    /// The source column's field id.
    pub source_id: i32,
    /// The partition field's id (1000 and up).
    pub field_id: i32,
}

impl PartitionFieldInfo {
    /// The field as `partition_by` takes it: `day(created_at)`, `bucket(16, id)`, `region`.
    pub fn expression(&self) -> String {
        let source = self
            .source
            .clone()
            .unwrap_or_else(|| format!("#{}", self.source_id));
        let t = self.transform.as_str();
        if t == "identity" {
            return source;
        }
        match t.split_once('[') {
            Some((name, rest)) => format!("{name}({}, {source})", rest.trim_end_matches(']')),
            None => format!("{t}({source})"),
        }
    }
}

/// One snapshot of the table's history.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    /// The snapshot's id.
    pub snapshot_id: i64,
    /// Its parent (`None` for the first).
    pub parent_id: Option<i64>,
    /// Its sequence number.
    pub sequence_number: i64,
    /// When it was committed (ms since the epoch).
    pub timestamp_ms: i64,
    /// `append`, `overwrite`, `delete` or `replace`.
    pub operation: String,
    /// The schema its files were written in.
    pub schema_id: Option<i32>,
    /// The summary's counters and checkpoints.
    pub summary: BTreeMap<String, String>,
}

/// What `Engine::table_design` reports.
#[derive(Debug, Clone, Default)]
pub struct TableDesign {
    /// The current schema's id.
    pub schema_id: i32,
    /// The Iceberg format version (3).
    pub format_version: u8,
    /// The default partition spec's id (new files are written in it).
    pub partition_spec_id: i32,
    /// The default partition spec's fields (empty: unpartitioned).
    pub partition_fields: Vec<PartitionFieldInfo>,
    /// Table properties.
    pub properties: BTreeMap<String, String>,
    /// Snapshots kept in the metadata, oldest first; the current one is `current_snapshot_id`.
    pub snapshots: Vec<SnapshotInfo>,
    /// The current snapshot.
    pub current_snapshot_id: Option<i64>,
}

/// The partition fields of the default spec of `metadata`, named by the current schema.
pub(crate) fn partition_fields(metadata: &TableMetadata) -> Vec<PartitionFieldInfo> {
    let schema = metadata.current_schema();
    metadata
        .default_partition_spec()
        .fields()
        .iter()
        .map(|f| PartitionFieldInfo {
            name: f.name.clone(),
            transform: f.transform.to_string(),
            source: schema.field_by_id(f.source_id).map(|s| s.name.clone()),
            source_id: f.source_id,
            field_id: f.field_id,
        })
        .collect()
}

/// The design of the table whose current metadata is `metadata`.
pub(crate) fn table_design(metadata: &TableMetadata) -> TableDesign {
    let mut snapshots: Vec<SnapshotInfo> = metadata
        .snapshots()
        .map(|s| SnapshotInfo {
            snapshot_id: s.snapshot_id(),
            parent_id: s.parent_snapshot_id(),
            sequence_number: s.sequence_number(),
            timestamp_ms: s.timestamp_ms(),
            operation: s.summary().operation.as_str().to_string(),
            schema_id: s.schema_id(),
            summary: s
                .summary()
                .additional_properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
        .collect();
    snapshots.sort_by_key(|s| (s.sequence_number, s.timestamp_ms));
    TableDesign {
        schema_id: metadata.current_schema_id(),
        format_version: metadata.format_version() as u8,
        partition_spec_id: metadata.default_partition_spec_id(),
        partition_fields: partition_fields(metadata),
        properties: metadata
            .properties()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        snapshots,
        current_snapshot_id: metadata.current_snapshot_id(),
    }
}
