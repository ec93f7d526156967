//! When a table last committed rows: the basis of its freshness (operators' view).

use iceberg::spec::{Operation, TableMetadata};

/// Commit time (ms since the epoch) of the newest snapshot in the current snapshot's retained
/// ancestry that added rows; compaction-only (`replace`) and delete-only snapshots are skipped.
/// The newest committed row arrived at most one commit interval before it.
pub(super) fn last_rows_commit_ms(metadata: &TableMetadata) -> Option<i64> {
    let mut snapshot = metadata.current_snapshot();
    while let Some(s) = snapshot {
        let added = s
            .summary()
            .additional_properties
            .get("added-records")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if added > 0 && s.summary().operation != Operation::Replace {
            return Some(s.timestamp_ms());
        }
        snapshot = s
            .parent_snapshot_id()
            .and_then(|id| metadata.snapshot_by_id(id));
    }
    None
}
