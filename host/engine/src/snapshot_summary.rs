//! Snapshot summaries (Iceberg spec "Snapshot summary"), counted as Java's `SnapshotSummary`
//! counts them: what a commit adds and removes, and the running totals.

use std::collections::HashMap;

use iceberg::spec::{DataContentType, DataFile};

/// Counts of what a snapshot adds or removes, for the summary.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) data_files: u64,
    pub(crate) records: u64,
    /// Every delete file: deletion vectors, position-delete and equality-delete files.
    pub(crate) delete_files: u64,
    pub(crate) dvs: u64,
    pub(crate) position_delete_files: u64,
    pub(crate) equality_delete_files: u64,
    pub(crate) position_deletes: u64,
    pub(crate) equality_deletes: u64,
    pub(crate) size: u64,
}

impl Totals {
    /// Counts a file as Java's `SnapshotSummary` does: a deletion vector counts under
    /// `*-dvs`, not `*-position-delete-files`, and its size is its blob's (`content_size`).
    pub(crate) fn count(&mut self, file: &DataFile) {
        match file.content_type() {
            DataContentType::Data => {
                self.data_files += 1;
                self.records += file.record_count();
                self.size += file.file_size_in_bytes();
            }
            DataContentType::PositionDeletes => {
                self.delete_files += 1;
                self.position_deletes += file.record_count();
                match file.content_size_in_bytes() {
                    Some(blob) => {
                        self.dvs += 1;
                        self.size += blob as u64;
                    }
                    None => {
                        self.position_delete_files += 1;
                        self.size += file.file_size_in_bytes();
                    }
                }
            }
            DataContentType::EqualityDeletes => {
                self.delete_files += 1;
                self.equality_delete_files += 1;
                self.equality_deletes += file.record_count();
                self.size += file.file_size_in_bytes();
            }
        }
    }
}

/// The snapshot summary's counters (Iceberg spec "Snapshot summary"; names and rules of Java's
/// `SnapshotSummary`): `added-*`/`removed-*` only when non-zero, `total-*` always, carried
/// from the previous snapshot's totals (whoever wrote it).
pub(crate) fn summary_counts(
    previous: &HashMap<String, String>,
    added: &Totals,
    removed: &Totals,
) -> HashMap<String, String> {
    let mut props = HashMap::new();
    let mut set_if = |key: &str, value: u64| {
        if value > 0 {
            props.insert(key.to_string(), value.to_string());
        }
    };
    set_if("added-data-files", added.data_files);
    set_if("deleted-data-files", removed.data_files);
    set_if("added-equality-delete-files", added.equality_delete_files);
    set_if(
        "removed-equality-delete-files",
        removed.equality_delete_files,
    );
    set_if("added-position-delete-files", added.position_delete_files);
    set_if(
        "removed-position-delete-files",
        removed.position_delete_files,
    );
    set_if("added-dvs", added.dvs);
    set_if("removed-dvs", removed.dvs);
    set_if("added-delete-files", added.delete_files);
    set_if("removed-delete-files", removed.delete_files);
    set_if("added-records", added.records);
    set_if("deleted-records", removed.records);
    set_if("added-files-size", added.size);
    set_if("removed-files-size", removed.size);
    set_if("added-position-deletes", added.position_deletes);
    set_if("removed-position-deletes", removed.position_deletes);
    set_if("added-equality-deletes", added.equality_deletes);
    set_if("removed-equality-deletes", removed.equality_deletes);
    let total = |key: &str| -> u64 { previous.get(key).and_then(|v| v.parse().ok()).unwrap_or(0) };
    let grow = |key: &str, plus: u64, minus: u64| (total(key) + plus).saturating_sub(minus);
    let totals = [
        ("total-data-files", added.data_files, removed.data_files),
        ("total-records", added.records, removed.records),
        ("total-files-size", added.size, removed.size),
        (
            "total-delete-files",
            added.delete_files,
            removed.delete_files,
        ),
        (
            "total-position-deletes",
            added.position_deletes,
            removed.position_deletes,
        ),
        (
            "total-equality-deletes",
            added.equality_deletes,
            removed.equality_deletes,
        ),
    ];
    for (key, plus, minus) in totals {
        props.insert(key.to_string(), grow(key, plus, minus).to_string());
    }
    let changed = added.data_files + added.delete_files + removed.data_files + removed.delete_files;
    props.insert(
        "changed-partition-count".to_string(),
        u64::from(changed > 0).to_string(),
    );
    props
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_deletion_vectors_as_java_does() {
        let dv = iceberg::spec::DataFileBuilder::default()
            .content(DataContentType::PositionDeletes)
            .file_path("/w/t/data/x-deletes.puffin".to_string())
            .file_format(iceberg::spec::DataFileFormat::Puffin)
            .record_count(3)
            .file_size_in_bytes(900)
            .referenced_data_file(Some("/w/t/data/x.parquet".to_string()))
            .content_offset(Some(4))
            .content_size_in_bytes(Some(40))
            .partition_spec_id(0)
            .build()
            .unwrap();
        let (mut added, mut removed) = (Totals::default(), Totals::default());
        added.count(&dv);
        removed.count(&dv);
        removed.position_deletes -= 1; // the old vector held two positions
        let previous = HashMap::from([
            ("total-delete-files".to_string(), "1".to_string()),
            ("total-position-deletes".to_string(), "2".to_string()),
            ("total-files-size".to_string(), "1040".to_string()),
        ]);
        let props = summary_counts(&previous, &added, &removed);
        let get = |k: &str| props.get(k).map(String::as_str);
        assert_eq!(get("added-dvs"), Some("1"));
        assert_eq!(get("removed-dvs"), Some("1"));
        assert_eq!(get("added-delete-files"), Some("1"));
        assert_eq!(get("added-position-deletes"), Some("3"));
        assert_eq!(get("removed-position-deletes"), Some("2"));
        assert_eq!(get("added-files-size"), Some("40"));
        assert_eq!(get("added-position-delete-files"), None);
        assert_eq!(get("added-data-files"), None);
        assert_eq!(get("total-delete-files"), Some("1"));
        assert_eq!(get("total-position-deletes"), Some("3"));
        assert_eq!(get("total-files-size"), Some("1040"));
        assert_eq!(get("total-equality-deletes"), Some("0"));
    }
}
