//! The compaction policy: which files to merge or rewrite, as pure functions over file sizes
//! and deleted counts ([`plan_append_merge`], [`plan_keyed_rewrite`],
//! [`plan_old_spec_rewrite`]). The background compactor (`background.rs`) calls them and does
//! the I/O off the commit path.

use super::*;

/// A table's compaction policy for one commit.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    /// Files below this many bytes are small (half the target size).
    pub small_below: u64,
    /// Small files alive before they are merged (at least 2).
    pub merge_fanout: usize,
    /// A keyed file whose deleted fraction reaches this is rewritten without its deleted rows.
    pub rewrite_deleted_fraction: f64,
    /// `optimize`: merge any two small files, rewrite any file with a deleted row.
    pub force: bool,
    /// Background compaction is on (`compaction: false` turns it off: `TableOptions::apply`
    /// then sets `merge_fanout` to `usize::MAX`).
    pub background: bool,
}

impl Policy {
    pub(super) fn new(config: &TableConfig, force: bool) -> Self {
        Policy {
            small_below: config.target_file_size / 2,
            merge_fanout: config.merge_fanout.max(2),
            rewrite_deleted_fraction: config.rewrite_deleted_fraction,
            force,
            background: config.merge_fanout != usize::MAX,
        }
    }
}

/// What the planner needs to know of a live data file.
#[derive(Debug, Clone, Copy)]
pub(super) struct FileFacts {
    pub bytes: u64,
    pub rows: u64,
    /// Rows masked by its committed and pending deletes.
    pub deleted: u64,
}

/// Append-only tables: the small files (indices into `files`) to merge into this commit's new
/// file, or none. Merging starts once the new file would make `merge_fanout` small files, or
/// on `optimize` once two exist; trickle traffic so keeps fewer than `merge_fanout` alive.
pub(super) fn plan_append_merge(files: &[FileFacts], policy: &Policy) -> Vec<usize> {
    let small: Vec<usize> = (0..files.len())
        .filter(|&i| files[i].bytes < policy.small_below)
        .collect();
    if small.len() + 1 >= policy.merge_fanout || (policy.force && small.len() >= 2) {
        small
    } else {
        Vec::new()
    }
}

/// Keyed tables: the files (indices into `files`) to rewrite as one file without their deleted
/// rows, or none: small files once `merge_fanout` of them exist (two on `optimize`), and any
/// file whose deleted fraction reached the threshold (any deleted row on `optimize`). A single
/// file with nothing deleted is not worth rewriting.
pub(super) fn plan_keyed_rewrite(files: &[FileFacts], policy: &Policy) -> Vec<usize> {
    let small = files
        .iter()
        .filter(|f| f.bytes < policy.small_below)
        .count();
    let merge_small = small >= policy.merge_fanout || (policy.force && small >= 2);
    let chosen: Vec<usize> = (0..files.len())
        .filter(|&i| {
            let f = files[i];
            let fraction = f.deleted as f64 / f.rows.max(1) as f64;
            let heavy =
                fraction >= policy.rewrite_deleted_fraction || (policy.force && f.deleted > 0);
            heavy || (merge_small && f.bytes < policy.small_below)
        })
        .collect();
    if chosen.len() == 1 && files[chosen[0]].deleted == 0 {
        return Vec::new();
    }
    chosen
}

/// Old-spec files (written before partition evolution) to rewrite into the current spec:
/// all on `optimize`; with background compaction on, small ones at any commit and
/// deletion-heavy ones once past the threshold.
pub(super) fn plan_old_spec_rewrite(files: &[FileFacts], policy: &Policy) -> Vec<usize> {
    (0..files.len())
        .filter(|&i| {
            let f = files[i];
            let fraction = f.deleted as f64 / f.rows.max(1) as f64;
            policy.force
                || (policy.background
                    && (f.bytes < policy.small_below
                        || fraction >= policy.rewrite_deleted_fraction))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(force: bool) -> Policy {
        Policy {
            small_below: 100,
            merge_fanout: 3,
            rewrite_deleted_fraction: 0.3,
            force,
            background: true,
        }
    }

    fn file(bytes: u64, rows: u64, deleted: u64) -> FileFacts {
        FileFacts {
            bytes,
            rows,
            deleted,
        }
    }

    #[test]
    fn append_only_tables_merge_small_files_once_the_fanout_is_reached() {
        let two_small = [file(10, 1, 0), file(500, 9, 0), file(20, 2, 0)];
        // The new file would be the third small one: merge the two with it.
        assert_eq!(plan_append_merge(&two_small, &policy(false)), vec![0, 2]);
        assert!(plan_append_merge(&two_small[..2], &policy(false)).is_empty());
        // `optimize` merges any two small files, never a lone one.
        assert_eq!(plan_append_merge(&two_small, &policy(true)), vec![0, 2]);
        assert!(plan_append_merge(&[file(10, 1, 0)], &policy(true)).is_empty());
    }

    #[test]
    fn keyed_tables_rewrite_small_and_deletion_heavy_files() {
        let files = [file(500, 10, 3), file(500, 10, 2), file(10, 1, 0)];
        // 30% deleted reaches the threshold; 20% does not; one small file is not enough.
        // A single heavy file is still rewritten (its deleted rows go away).
        assert_eq!(plan_keyed_rewrite(&files, &policy(false)), vec![0]);
        let small = [
            file(10, 1, 0),
            file(20, 1, 0),
            file(30, 1, 0),
            file(500, 10, 0),
        ];
        assert_eq!(plan_keyed_rewrite(&small, &policy(false)), vec![0, 1, 2]);
        // `optimize`: any deleted row, any two small files.
        assert_eq!(plan_keyed_rewrite(&files, &policy(true)), vec![0, 1]);
        // One clean file alone is never rewritten.
        assert!(plan_keyed_rewrite(&[file(10, 1, 0)], &policy(true)).is_empty());
    }

    #[test]
    fn old_spec_files_move_when_small_or_deletion_heavy_and_all_on_optimize() {
        let files = [file(10, 5, 0), file(500, 10, 3), file(500, 10, 0)];
        assert_eq!(plan_old_spec_rewrite(&files, &policy(false)), vec![0, 1]);
        assert_eq!(plan_old_spec_rewrite(&files, &policy(true)), vec![0, 1, 2]);
        // With background compaction off, only `optimize` moves them.
        let off = Policy {
            background: false,
            ..policy(false)
        };
        assert!(plan_old_spec_rewrite(&files, &off).is_empty());
    }
}
