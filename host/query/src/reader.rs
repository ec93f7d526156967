//! Parquet files of a [`ReadView`] as DataFusion reads them: byte ranges come from the
//! engine's warehouse (its local cache included), and a file's deleted rows become a row
//! selection per row group (`ParquetAccessPlan`), so they are never decoded.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{ParquetAccessPlan, RowGroupAccess};
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::error::DataFusionError;
use datafusion::parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection, RowSelector};
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::future::BoxFuture;
use futures::FutureExt;
use moonlink_engine::ReadView;

/// Footer bytes fetched in the first read of a file (the metadata usually fits).
const FOOTER_HINT: usize = 64 * 1024;

/// Which data file a `PartitionedFile` is (its object-store path would mangle the URI).
#[derive(Debug, Clone)]
pub(crate) struct FileIndex(pub usize);

/// Opens the view's files for DataFusion's Parquet scan; keeps footers read while planning.
#[derive(Debug)]
pub(crate) struct ViewReaderFactory {
    view: Arc<ReadView>,
    footers: Mutex<HashMap<usize, Arc<ParquetMetaData>>>,
}

impl ViewReaderFactory {
    pub(crate) fn new(view: Arc<ReadView>) -> Self {
        ViewReaderFactory {
            view,
            footers: Mutex::new(HashMap::new()),
        }
    }

    fn reader(&self, index: usize) -> ViewFileReader {
        let file = &self.view.files[index];
        ViewFileReader {
            view: self.view.clone(),
            location: file.location.clone(),
            size: file.size,
            footer: self
                .footers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&index)
                .cloned(),
        }
    }

    /// The `PartitionedFile` for file `index`; a file with deleted rows carries the row
    /// selection that skips them (which needs its footer: read now, kept for the scan).
    /// `None` when every row of the file is deleted.
    pub(crate) async fn partitioned_file(
        &self,
        index: usize,
    ) -> datafusion::error::Result<Option<PartitionedFile>> {
        let file = &self.view.files[index];
        let part = PartitionedFile::new(format!("view/{index}"), file.size)
            .with_extension(FileIndex(index));
        if file.deleted_count() == 0 {
            return Ok(Some(part));
        }
        if file.deleted_count() >= file.record_count {
            return Ok(None);
        }
        let mut reader = self.reader(index);
        let footer = reader
            .get_metadata(None)
            .await
            .map_err(|e| DataFusionError::ParquetError(Box::new(e)))?;
        self.footers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(index, footer.clone());
        let groups: Vec<u64> = footer
            .row_groups()
            .iter()
            .map(|g| g.num_rows().max(0) as u64)
            .collect();
        Ok(Some(
            part.with_extension(access_plan(file.live_runs(), &groups)),
        ))
    }
}

/// One access per row group from a file's live/deleted runs ([`moonlink_engine::ViewFile::live_runs`]).
fn access_plan(runs: Vec<(bool, u64)>, row_groups: &[u64]) -> ParquetAccessPlan {
    let mut runs = runs.into_iter().peekable();
    let mut plan = Vec::with_capacity(row_groups.len());
    for &rows in row_groups {
        let mut selectors = Vec::new();
        let mut left = rows;
        while left > 0 {
            let Some((live, n)) = runs.peek_mut() else {
                // Rows the view does not know of (cannot happen for a committed file): skip.
                selectors.push(RowSelector::skip(left as usize));
                break;
            };
            let take = (*n).min(left);
            let selector = match *live {
                true => RowSelector::select(take as usize),
                false => RowSelector::skip(take as usize),
            };
            selectors.push(selector);
            *n -= take;
            left -= take;
            if *n == 0 {
                runs.next();
            }
        }
        let access = if selectors.iter().all(|s| !s.skip) {
            RowGroupAccess::Scan
        } else if selectors.iter().all(|s| s.skip) {
            RowGroupAccess::Skip
        } else {
            RowGroupAccess::Selection(RowSelection::from(selectors))
        };
        plan.push(access);
    }
    ParquetAccessPlan::new(plan)
}

impl ParquetFileReaderFactory for ViewReaderFactory {
    fn create_reader(
        &self,
        _partition_index: usize,
        partitioned_file: PartitionedFile,
        _metadata_size_hint: Option<usize>,
        _metrics: &ExecutionPlanMetricsSet,
    ) -> datafusion::error::Result<Box<dyn AsyncFileReader + Send>> {
        let Some(FileIndex(index)) = partitioned_file.extension::<FileIndex>().cloned() else {
            return Err(DataFusionError::Internal(
                "a scanned file has no view index".into(),
            ));
        };
        Ok(Box::new(self.reader(index)))
    }
}

/// Random access to one data file through the engine's warehouse.
struct ViewFileReader {
    view: Arc<ReadView>,
    location: String,
    size: u64,
    footer: Option<Arc<ParquetMetaData>>,
}

impl AsyncFileReader for ViewFileReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes, ParquetError>> {
        let view = self.view.clone();
        let location = self.location.clone();
        async move {
            view.read_range(&location, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>, ParquetError>> {
        async move {
            if let Some(footer) = &self.footer {
                return Ok(footer.clone());
            }
            let size = self.size;
            let mut reader = ParquetMetaDataReader::new().with_prefetch_hint(Some(FOOTER_HINT));
            if let Some(o) = options {
                reader = reader
                    .with_column_index_policy(o.column_index_policy())
                    .with_offset_index_policy(o.offset_index_policy());
            }
            let footer = Arc::new(reader.load_and_finish(&mut *self, size).await?);
            self.footer = Some(footer.clone());
            Ok(footer)
        }
        .boxed()
    }
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
        assert_eq!(rows(&plan.inner()[0]), (3, 2));
        assert_eq!(rows(&plan.inner()[1]), (0, usize::MAX));
        assert_eq!(rows(&plan.inner()[2]), (usize::MAX, 0));
        // A run ending exactly on a row-group boundary.
        let plan = access_plan(vec![(false, 5), (true, 5)], &[5, 5]);
        assert_eq!(rows(&plan.inner()[0]), (0, usize::MAX));
        assert_eq!(rows(&plan.inner()[1]), (usize::MAX, 0));
    }
}
