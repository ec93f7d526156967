//! The engine's tables as DataFusion sees them: one catalog (`moonlink`), a schema per Iceberg
//! namespace, a table per Iceberg table. Each query gets its own catalog, which takes a table's
//! [`ReadView`] the first time the query names it and reuses it, so every reference to a table
//! within one query reads the same rows.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow_schema::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::common::DFSchema;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use moonlink_engine::{Engine, ReadView, TableInfo};

use crate::error::QueryError;
use crate::field_ids::FieldIdAdapterFactory;
use crate::pg_catalog;
use crate::reader::ViewReaderFactory;
use crate::scan_plan::{split, FileCache};

/// The catalog of one query: every open table of the engine, by namespace.
pub(crate) struct QueryCatalog {
    engine: Engine,
    /// Read this committed snapshot instead of the live rows.
    snapshot_id: Option<i64>,
    views: Arc<Mutex<HashMap<String, Arc<ReadView>>>>,
    cache: Arc<FileCache>,
}

impl fmt::Debug for QueryCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryCatalog")
            .field("snapshot_id", &self.snapshot_id)
            .finish()
    }
}

impl QueryCatalog {
    pub(crate) fn new(engine: Engine, snapshot_id: Option<i64>, cache: Arc<FileCache>) -> Self {
        QueryCatalog {
            engine,
            snapshot_id,
            views: Arc::new(Mutex::new(HashMap::new())),
            cache,
        }
    }

    fn tables(&self) -> Vec<TableInfo> {
        self.engine
            .list_tables()
            .into_iter()
            .filter(|t| !t.failed)
            .collect()
    }
}

impl CatalogProvider for QueryCatalog {
    fn schema_names(&self) -> Vec<String> {
        let names: BTreeSet<String> = self.tables().into_iter().map(|t| t.namespace).collect();
        names.into_iter().collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == pg_catalog::NAME {
            return pg_catalog::schema(&self.tables())
                .inspect_err(|e| tracing::warn!(error = %e, "cannot build pg_catalog"))
                .ok();
        }
        Some(Arc::new(NamespaceSchema {
            engine: self.engine.clone(),
            namespace: name.to_string(),
            snapshot_id: self.snapshot_id,
            views: self.views.clone(),
            cache: self.cache.clone(),
        }))
    }
}

/// One Iceberg namespace.
struct NamespaceSchema {
    engine: Engine,
    namespace: String,
    snapshot_id: Option<i64>,
    views: Arc<Mutex<HashMap<String, Arc<ReadView>>>>,
    cache: Arc<FileCache>,
}

impl fmt::Debug for NamespaceSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamespaceSchema")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl NamespaceSchema {
    fn find(&self, table: &str) -> Option<TableInfo> {
        self.engine
            .list_tables()
            .into_iter()
            .find(|t| !t.failed && t.namespace == self.namespace && t.table == table)
    }
}

#[async_trait]
impl SchemaProvider for NamespaceSchema {
    fn table_names(&self) -> Vec<String> {
        self.engine
            .list_tables()
            .into_iter()
            .filter(|t| !t.failed && t.namespace == self.namespace)
            .map(|t| t.table)
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(info) = self.find(name) else {
            return Ok(None);
        };
        let cached = self
            .views
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&info.name)
            .cloned();
        let view = match cached {
            Some(view) => view,
            None => {
                let external = |e: QueryError| DataFusionError::External(Box::new(e));
                let view = match self.snapshot_id {
                    None => self
                        .engine
                        .read_view(&info.name)
                        .map_err(|e| external(e.into()))?,
                    Some(id) => self
                        .engine
                        .read_view_at(&info.name, id)
                        .await
                        .map_err(|e| external(e.into()))?
                        .ok_or_else(|| {
                            external(QueryError::UnknownSnapshot {
                                snapshot_id: id,
                                table: format!("{}.{}", info.namespace, info.table),
                            })
                        })?,
                };
                let view = Arc::new(view);
                self.views
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(info.name.clone(), view.clone());
                view
            }
        };
        Ok(Some(Arc::new(ViewTable {
            view,
            cache: self.cache.clone(),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.find(name).is_some()
    }
}

/// A table as of one [`ReadView`].
pub(crate) struct ViewTable {
    view: Arc<ReadView>,
    cache: Arc<FileCache>,
}

impl fmt::Debug for ViewTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewTable")
            .field("table", &self.view.name)
            .field("files", &self.view.files.len())
            .field("batches", &self.view.batches.len())
            .finish()
    }
}

#[async_trait]
impl TableProvider for ViewTable {
    fn schema(&self) -> SchemaRef {
        self.view.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Filters prune row groups (and pages) of data files by their statistics; DataFusion
    /// still applies them to every row, the in-memory ones included.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.view.schema.clone();
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !self.view.files.is_empty() {
            let factory = Arc::new(ViewReaderFactory::new(
                self.view.clone(),
                self.cache.clone(),
            ));
            let mut plans = Vec::new();
            for index in 0..self.view.files.len() {
                if let Some(plan) = factory.plan(index).await? {
                    plans.push((index, plan));
                }
            }
            // Row groups, not files, are the unit of parallelism: one large file is read by
            // every partition.
            let partitions = state.config().target_partitions();
            let groups: Vec<FileGroup> = split(&plans, partitions)
                .into_iter()
                .map(|shares| {
                    let files = shares
                        .into_iter()
                        .flat_map(|share| {
                            let plan = plans.iter().find(|(i, _)| *i == share.file);
                            plan.map(|(_, plan)| {
                                share
                                    .pieces(plan)
                                    .into_iter()
                                    .map(|piece| {
                                        let access = piece.access_plan(plan);
                                        factory.partitioned_file(piece.file, access)
                                    })
                                    .collect::<Vec<_>>()
                            })
                            .unwrap_or_default()
                        })
                        .collect();
                    FileGroup::new(files)
                })
                .collect();
            if !groups.is_empty() {
                let mut source =
                    ParquetSource::new(schema.clone()).with_parquet_file_reader_factory(factory);
                if let Some(predicate) = conjunction(filters.to_vec()) {
                    let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
                    source =
                        source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
                }
                let config = FileScanConfigBuilder::new(
                    ObjectStoreUrl::local_filesystem(),
                    Arc::new(source),
                )
                .with_file_groups(groups)
                .with_projection_indices(projection.cloned())?
                .with_expr_adapter(Some(Arc::new(FieldIdAdapterFactory)))
                .with_limit(limit)
                .build();
                inputs.push(DataSourceExec::from_data_source(config));
            }
        }
        if !self.view.batches.is_empty() || inputs.is_empty() {
            inputs.push(MemorySourceConfig::try_new_exec(
                std::slice::from_ref(&self.view.batches),
                schema,
                projection.cloned(),
            )?);
        }
        UnionExec::try_new(inputs)
    }
}
