//! Parquet files of a [`ReadView`] as DataFusion reads them: byte ranges come from the
//! engine's warehouse (its local cache included); footers and the row selections that skip
//! deleted rows come from the [`FileCache`] when an earlier query made them for the same file
//! and deleted rows (`scan_plan.rs`).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::error::DataFusionError;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::future::BoxFuture;
use futures::FutureExt;
use moonlink_engine::ReadView;

use crate::scan_plan::{Cached, FileCache, FilePlan};

/// Footer bytes fetched in the first read of a file (the metadata usually fits).
const FOOTER_HINT: usize = 64 * 1024;

/// Which data file a `PartitionedFile` is (its object-store path would mangle the URI).
#[derive(Debug, Clone)]
pub(crate) struct FileIndex(pub usize);

/// Opens the view's files for DataFusion's Parquet scan; keeps the footers of its plans.
#[derive(Debug)]
pub(crate) struct ViewReaderFactory {
    view: Arc<ReadView>,
    cache: Arc<FileCache>,
    footers: Mutex<HashMap<usize, Arc<ParquetMetaData>>>,
}

impl ViewReaderFactory {
    pub(crate) fn new(view: Arc<ReadView>, cache: Arc<FileCache>) -> Self {
        ViewReaderFactory {
            view,
            cache,
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

    /// The plan of file `index`: its footer, its row groups and the rows to skip in each
    /// (from the cache when it was made for this file with these deleted rows). `None` when
    /// every row of the file is deleted.
    pub(crate) async fn plan(
        &self,
        index: usize,
    ) -> datafusion::error::Result<Option<Arc<FilePlan>>> {
        let file = &self.view.files[index];
        if file.deleted_count() >= file.record_count {
            return Ok(None);
        }
        let footer = match self.cache.get(&file.location, file) {
            Cached::Plan(plan) => {
                self.keep_footer(index, &plan.footer);
                return Ok(Some(plan));
            }
            Cached::Footer(footer) => footer,
            Cached::Miss => self
                .reader(index)
                .get_metadata(None)
                .await
                .map_err(|e| DataFusionError::ParquetError(Box::new(e)))?,
        };
        let runs = (file.deleted_count() > 0).then(|| file.live_runs());
        let plan = Arc::new(FilePlan::new(footer, runs));
        self.keep_footer(index, &plan.footer);
        // The deleted positions kept for comparison: 2 bytes each, at most a bit a row.
        let key_bytes = (file.deleted_count() * 2).min(file.record_count / 8) as usize;
        self.cache
            .put(&file.location, file.clone(), key_bytes, plan.clone());
        Ok(Some(plan))
    }

    fn keep_footer(&self, index: usize, footer: &Arc<ParquetMetaData>) {
        self.footers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(index, footer.clone());
    }

    /// The `PartitionedFile` reading file `index` with `access` (`None`: all of it).
    pub(crate) fn partitioned_file(
        &self,
        index: usize,
        access: Option<datafusion::datasource::physical_plan::parquet::ParquetAccessPlan>,
    ) -> PartitionedFile {
        let file = &self.view.files[index];
        let part = PartitionedFile::new(format!("view/{index}"), file.size)
            .with_extension(FileIndex(index));
        match access {
            Some(access) => part.with_extension(access),
            None => part,
        }
    }
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
