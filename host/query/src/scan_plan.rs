//! How a scan reads a view's data files: each file's footer and, for a file with deleted rows,
//! a row selection per row group that skips them (`ParquetAccessPlan`), kept across queries in
//! a bounded [`FileCache`]; and the split of all live row groups into partitions of about
//! equal live rows, so one large file is decoded by every query thread.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use datafusion::datasource::physical_plan::parquet::{ParquetAccessPlan, RowGroupAccess};
use datafusion::parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use datafusion::parquet::file::metadata::ParquetMetaData;
use moonlink_engine::ViewFile;

/// Bytes of footers and row selections the cache keeps by default.
pub(crate) const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// What a scan needs of one data file.
#[derive(Debug)]
pub(crate) struct FilePlan {
    /// The Parquet footer (row groups, statistics).
    pub(crate) footer: Arc<ParquetMetaData>,
    /// Per row group: how it is read (whole, skipped, or a selection of its live rows) and
    /// how many live rows it has.
    pub(crate) groups: Vec<(RowGroupAccess, u64)>,
}

impl FilePlan {
    /// The plan of a file whose footer is `footer`: row groups of the file's live/deleted
    /// `runs` ([`ViewFile::live_runs`], `None` when no row is deleted).
    pub(crate) fn new(footer: Arc<ParquetMetaData>, runs: Option<Vec<(bool, u64)>>) -> Self {
        let rows: Vec<u64> = footer
            .row_groups()
            .iter()
            .map(|g| g.num_rows().max(0) as u64)
            .collect();
        let groups = match runs {
            None => rows.iter().map(|&n| (RowGroupAccess::Scan, n)).collect(),
            Some(runs) => access_plan(runs, &rows),
        };
        FilePlan { footer, groups }
    }

    /// Whether every row group is read whole (no access plan needed).
    fn reads_all(&self) -> bool {
        self.groups
            .iter()
            .all(|(a, _)| matches!(a, RowGroupAccess::Scan))
    }

    /// The access plan reading only row groups `only` (the others skipped).
    fn access_plan(&self, only: &Range<usize>) -> ParquetAccessPlan {
        ParquetAccessPlan::new(
            self.groups
                .iter()
                .enumerate()
                .map(|(i, (access, _))| match only.contains(&i) {
                    true => access.clone(),
                    false => RowGroupAccess::Skip,
                })
                .collect(),
        )
    }

    /// Approximate memory held (footer and selectors).
    fn bytes(&self) -> usize {
        let selectors: usize = self
            .groups
            .iter()
            .map(|(a, _)| match a {
                RowGroupAccess::Selection(s) => s.iter().count(),
                _ => 0,
            })
            .sum();
        self.footer.memory_size() + selectors * std::mem::size_of::<RowSelector>()
    }
}

/// One access per row group, with its live rows, from a file's live/deleted runs.
fn access_plan(runs: Vec<(bool, u64)>, row_groups: &[u64]) -> Vec<(RowGroupAccess, u64)> {
    let mut runs = runs.into_iter().peekable();
    let mut plan = Vec::with_capacity(row_groups.len());
    for &rows in row_groups {
        let mut selectors = Vec::new();
        let mut live = 0;
        let mut left = rows;
        while left > 0 {
            let Some((is_live, n)) = runs.peek_mut() else {
                // Rows the view does not know of (cannot happen for a committed file): skip.
                selectors.push(RowSelector::skip(left as usize));
                break;
            };
            let take = (*n).min(left);
            selectors.push(match *is_live {
                true => RowSelector::select(take as usize),
                false => RowSelector::skip(take as usize),
            });
            if *is_live {
                live += take;
            }
            *n -= take;
            left -= take;
            if *n == 0 {
                runs.next();
            }
        }
        let access = if live == rows {
            RowGroupAccess::Scan
        } else if live == 0 {
            RowGroupAccess::Skip
        } else {
            RowGroupAccess::Selection(RowSelection::from(selectors))
        };
        plan.push((access, live));
    }
    plan
}

/// Plans of data files by location, reused while the file's deleted rows are the same. Data
/// files are immutable, so a footer stays valid; a plan is used only for a [`ViewFile`] equal
/// to the one it was made for (same deleted positions, committed or pending), so a query
/// never skips rows by an older or newer deletion vector than its view's. Bounded in bytes;
/// the least recently used plans go first.
/// (`K` is what a plan is valid for: the [`ViewFile`], deleted rows included.)
#[derive(Debug)]
pub(crate) struct FileCache<K = ViewFile> {
    budget: usize,
    state: Mutex<CacheState<K>>,
}

#[derive(Debug)]
struct CacheState<K> {
    entries: HashMap<String, Entry<K>>,
    bytes: usize,
    tick: u64,
}

#[derive(Debug)]
struct Entry<K> {
    /// What the plan was made for.
    key: K,
    plan: Arc<FilePlan>,
    bytes: usize,
    used: u64,
}

/// What the cache knows of a file.
pub(crate) enum Cached {
    /// A plan for exactly this file and its deleted rows.
    Plan(Arc<FilePlan>),
    /// Only the footer: the file's deleted rows changed since.
    Footer(Arc<ParquetMetaData>),
    /// Nothing.
    Miss,
}

impl<K: PartialEq> FileCache<K> {
    /// A cache keeping about `budget` bytes.
    pub(crate) fn new(budget: usize) -> Self {
        FileCache {
            budget,
            state: Mutex::new(CacheState {
                entries: HashMap::new(),
                bytes: 0,
                tick: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CacheState<K>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is kept for the file at `location`, as `key`.
    pub(crate) fn get(&self, location: &str, key: &K) -> Cached {
        let mut state = self.state();
        state.tick += 1;
        let tick = state.tick;
        match state.entries.get_mut(location) {
            Some(entry) if entry.key == *key => {
                entry.used = tick;
                Cached::Plan(entry.plan.clone())
            }
            Some(entry) => Cached::Footer(entry.plan.footer.clone()),
            None => Cached::Miss,
        }
    }

    /// Keeps `plan`, made for the file at `location` as `key` (which holds about `key_bytes`),
    /// replacing what was kept for that location.
    pub(crate) fn put(&self, location: &str, key: K, key_bytes: usize, plan: Arc<FilePlan>) {
        let bytes = plan.bytes() + key_bytes + location.len() + 64;
        if bytes > self.budget {
            return;
        }
        let mut state = self.state();
        state.tick += 1;
        let entry = Entry {
            key,
            plan,
            bytes,
            used: state.tick,
        };
        state.bytes += bytes;
        if let Some(old) = state.entries.insert(location.to_string(), entry) {
            state.bytes -= old.bytes;
        }
        while state.bytes > self.budget {
            let Some(oldest) = state
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(old) = state.entries.remove(&oldest) {
                state.bytes -= old.bytes;
            }
        }
    }

    /// Plans kept (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state().entries.len()
    }
}

/// One partition's share of a data file: which of its row groups it reads.
#[derive(Debug, PartialEq)]
pub(crate) struct FileShare {
    /// The file's index in the view.
    pub(crate) file: usize,
    /// The row groups read.
    pub(crate) groups: Range<usize>,
}

impl FileShare {
    /// This share as the units one file open reads: row groups with a selection of rows
    /// each on their own (the Parquet reader copies what is left of a file's selection at
    /// every row group), the others together.
    pub(crate) fn pieces(self, plan: &FilePlan) -> Vec<FileShare> {
        let selected = |g: usize| matches!(plan.groups[g].0, RowGroupAccess::Selection(_));
        if !self.groups.clone().any(selected) {
            return vec![self];
        }
        let mut pieces: Vec<FileShare> = Vec::new();
        for g in self.groups {
            match pieces.last_mut() {
                Some(last) if !selected(g) && !selected(last.groups.end - 1) => {
                    last.groups.end = g + 1
                }
                _ => pieces.push(FileShare {
                    file: self.file,
                    groups: g..g + 1,
                }),
            }
        }
        pieces
    }

    /// The access plan for this share; `None` when the whole file is read as it is.
    pub(crate) fn access_plan(&self, plan: &FilePlan) -> Option<ParquetAccessPlan> {
        let whole = self.groups.start == 0 && self.groups.end == plan.groups.len();
        match whole && plan.reads_all() {
            true => None,
            false => Some(plan.access_plan(&self.groups)),
        }
    }
}

/// Splits the live row groups of `plans` (in file order) into at most `partitions`
/// contiguous runs of about equal live rows; row groups with no live row are left out.
pub(crate) fn split(plans: &[(usize, Arc<FilePlan>)], partitions: usize) -> Vec<Vec<FileShare>> {
    let total: u64 = plans
        .iter()
        .flat_map(|(_, p)| p.groups.iter().map(|(_, n)| n))
        .sum();
    let partitions = partitions.max(1) as u64;
    let mut out: Vec<Vec<FileShare>> = Vec::new();
    let mut before = 0u64;
    let mut last = None;
    for (file, plan) in plans {
        for (group, (_, rows)) in plan.groups.iter().enumerate() {
            if *rows == 0 {
                continue;
            }
            // The partition whose share of the rows holds this row group's middle row.
            let part = ((before + rows / 2) * partitions / total).min(partitions - 1);
            before += rows;
            if last != Some(part) {
                out.push(Vec::new());
                last = Some(part);
            }
            let shares = out.last_mut().expect("a partition was just pushed");
            match shares.last_mut() {
                // Row groups skipped in between have no live rows: one share reads past them.
                Some(share) if share.file == *file => {
                    share.groups.end = group + 1;
                }
                _ => shares.push(FileShare {
                    file: *file,
                    groups: group..group + 1,
                }),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(access: &RowGroupAccess) -> (usize, usize) {
        match access {
            RowGroupAccess::Scan => (usize::MAX, 0),
            RowGroupAccess::Skip => (0, usize::MAX),
            RowGroupAccess::Selection(s) => (s.row_count(), s.skipped_row_count()),
        }
    }

    #[test]
    fn deleted_rows_become_per_row_group_selections() {
        // 10 rows, rows 3..7 deleted, in row groups of 5, 2 and 3 rows.
        let plan = access_plan(vec![(true, 3), (false, 4), (true, 3)], &[5, 2, 3]);
        assert_eq!(rows(&plan[0].0), (3, 2));
        assert_eq!(rows(&plan[1].0), (0, usize::MAX));
        assert_eq!(rows(&plan[2].0), (usize::MAX, 0));
        let live: Vec<u64> = plan.iter().map(|(_, n)| *n).collect();
        assert_eq!(live, [3, 0, 3]);
        // A run ending exactly on a row-group boundary.
        let plan = access_plan(vec![(false, 5), (true, 5)], &[5, 5]);
        assert_eq!(rows(&plan[0].0), (0, usize::MAX));
        assert_eq!(rows(&plan[1].0), (usize::MAX, 0));
    }

    /// A plan of row groups with these live rows (the footer is irrelevant to the split).
    fn plan(live: &[u64]) -> Arc<FilePlan> {
        let footer = ParquetMetaData::new(
            datafusion::parquet::file::metadata::FileMetaData::new(
                1,
                0,
                None,
                None,
                Arc::new(datafusion::parquet::schema::types::SchemaDescriptor::new(
                    Arc::new(
                        datafusion::parquet::schema::types::Type::group_type_builder("s")
                            .build()
                            .unwrap(),
                    ),
                )),
                None,
            ),
            vec![],
        );
        Arc::new(FilePlan {
            footer: Arc::new(footer),
            groups: live
                .iter()
                .map(|&n| {
                    let access = match n {
                        0 => RowGroupAccess::Skip,
                        _ => RowGroupAccess::Scan,
                    };
                    (access, n)
                })
                .collect(),
        })
    }

    #[test]
    fn one_large_file_is_split_by_row_groups() {
        // One file of 10 row groups: half each.
        let shares = split(&[(0, plan(&[100; 10]))], 2);
        assert_eq!(
            shares,
            vec![
                vec![FileShare {
                    file: 0,
                    groups: 0..5
                }],
                vec![FileShare {
                    file: 0,
                    groups: 5..10
                }],
            ]
        );
        // Two files, a fully deleted row group read past; the second partition takes the
        // rest of file 3 and file 5.
        let shares = split(&[(3, plan(&[100, 0, 100, 100])), (5, plan(&[100]))], 2);
        assert_eq!(
            shares,
            vec![
                vec![FileShare {
                    file: 3,
                    groups: 0..3
                }],
                vec![
                    FileShare {
                        file: 3,
                        groups: 3..4
                    },
                    FileShare {
                        file: 5,
                        groups: 0..1
                    }
                ],
            ]
        );
        // Fewer row groups than partitions; no live rows at all.
        assert_eq!(split(&[(0, plan(&[7]))], 4).len(), 1);
        assert!(split(&[(0, plan(&[0, 0]))], 2).is_empty());
        // A share of part of a file skips the other row groups; a whole clean file needs no plan.
        let p = plan(&[100; 3]);
        let share = FileShare {
            file: 0,
            groups: 1..2,
        };
        let access: Vec<(usize, usize)> = share
            .access_plan(&p)
            .unwrap()
            .inner()
            .iter()
            .map(rows)
            .collect();
        assert_eq!(access, [(0, usize::MAX), (usize::MAX, 0), (0, usize::MAX)]);
        let whole = FileShare {
            file: 0,
            groups: 0..3,
        };
        assert!(whole.access_plan(&p).is_none());
    }

    #[test]
    fn row_groups_with_selections_are_opened_one_by_one() {
        let mut p = plan(&[10; 5]);
        let selection = || {
            RowGroupAccess::Selection(RowSelection::from(vec![
                RowSelector::select(9),
                RowSelector::skip(1),
            ]))
        };
        Arc::get_mut(&mut p).unwrap().groups[1].0 = selection();
        Arc::get_mut(&mut p).unwrap().groups[2].0 = selection();
        let share = FileShare {
            file: 0,
            groups: 0..5,
        };
        let pieces: Vec<Range<usize>> = share.pieces(&p).into_iter().map(|s| s.groups).collect();
        assert_eq!(pieces, [0..1, 1..2, 2..3, 3..5]);
    }

    #[test]
    fn plans_are_reused_for_the_same_deletes_only_and_bounded() {
        let one = plan(&[1]).bytes() + 100;
        let cache: FileCache<Vec<u64>> = FileCache::new(one * 2 + one / 2);
        cache.put("f0", vec![3], 10, plan(&[1]));
        assert!(matches!(cache.get("f0", &vec![3]), Cached::Plan(_)));
        // Other deleted rows: only the footer is still good.
        assert!(matches!(cache.get("f0", &vec![3, 4]), Cached::Footer(_)));
        assert!(matches!(cache.get("f1", &vec![3]), Cached::Miss));
        for i in 1..5 {
            cache.put(&format!("f{i}"), vec![], 10, plan(&[1]));
        }
        assert_eq!(cache.len(), 2);
        // The most recently used are kept.
        assert!(matches!(cache.get("f4", &vec![]), Cached::Plan(_)));
        assert!(matches!(cache.get("f0", &vec![3]), Cached::Miss));
        // Something larger than the whole budget is not kept.
        cache.put("big", vec![], one * 3, plan(&[1]));
        assert!(matches!(cache.get("big", &vec![]), Cached::Miss));
    }
}
