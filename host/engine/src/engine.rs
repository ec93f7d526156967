//! The engine facade: a set of tables over one data directory.
//!
//! Layout of the data directory:
//! ```text
//! DATA-DIR/catalog.db          SQLite catalog, Iceberg JDBC layout (catalog name `moonlink`);
//!                              with `--catalog postgres://…|glue://…` only source acks
//! DATA-DIR/host-id             this directory's owner id in a shared catalog
//! DATA-DIR/warehouse/NS/TABLE  Iceberg tables: data/*.parquet, metadata/*.json|avro
//! DATA-DIR/cache/wal/TABLE-ID  write-ahead log segments (local disk; Iceberg is the truth)
//! DATA-DIR/cache/index/TABLE-ID  key-index files, one per keyed data file (rebuildable)
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::batch::ChangeBatch;
use crate::catalog::{Catalog, CatalogEntry};
use crate::commit;
use crate::error::{EngineError, Result};
use crate::schema::TableSchema;
use crate::storage::Warehouse;
use crate::table::{
    ApplyReceipt, CommitState, Durability, OpenTable, ReadView, SourceCheckpoint, Table,
    TableConfig, TableInfo, TableOptions,
};

mod evolve;

/// Where the engine keeps its state, and how tables behave.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The data directory: catalog, warehouse and local caches (one engine per directory).
    pub data_dir: PathBuf,
    /// Defaults for every table; a table's `TableOptions` override them.
    pub table: TableConfig,
    /// Where tables are registered (`--catalog`): `sqlite:PATH`, `postgres://…`, `glue://REGION`.
    /// `None` is the embedded SQLite catalog at `DATA-DIR/catalog.db`.
    pub catalog: Option<String>,
}

/// Which Iceberg table a new table becomes.
#[derive(Debug, Clone)]
pub struct CreateTable {
    /// The name used in the API (`POST /ingest/{name}`).
    pub name: String,
    /// Iceberg namespace (one level).
    pub namespace: String,
    /// Iceberg table name within the namespace.
    pub table: String,
    /// Columns and primary key; validated before anything is created.
    pub schema: TableSchema,
    /// Per-table overrides of the engine's table config.
    pub options: TableOptions,
}

/// The result of an explicit commit.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    /// The current snapshot after the commit (`None` if the table has none yet).
    pub snapshot_id: Option<i64>,
    /// The metadata JSON readers should load.
    pub metadata_location: String,
    /// The last WAL LSN the current snapshot contains.
    pub committed_lsn: u64,
}

impl From<CommitState> for CommitInfo {
    fn from(s: CommitState) -> Self {
        CommitInfo {
            snapshot_id: s.metadata.current_snapshot_id(),
            metadata_location: s.metadata_location,
            committed_lsn: s.committed_lsn,
        }
    }
}

/// The ingestion engine. Cheap to clone; all clones share the tables.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: EngineConfig,
    catalog: Arc<Catalog>,
    warehouse: Warehouse,
    tables: RwLock<HashMap<String, Arc<Table>>>,
    /// Tables that could not be opened, with the reason; listed, refusing writes, droppable.
    failed: RwLock<HashMap<String, FailedTable>>,
    /// Held for the engine's life: one process per data directory.
    _lock: std::fs::File,
    /// Serialises create and drop so names and directories never race.
    ddl: tokio::sync::Mutex<()>,
}

/// A table that could not be opened, and why.
#[derive(Clone)]
struct FailedTable {
    entry: CatalogEntry,
    reason: String,
}

impl FailedTable {
    fn info(&self) -> TableInfo {
        let schema = serde_json::from_str(&self.entry.schema_json)
            .unwrap_or(TableSchema::new(Vec::new(), Vec::new()));
        TableInfo::failed(
            &self.entry.name,
            &self.entry.namespace,
            &self.entry.table,
            schema,
            &self.entry.metadata_location,
            &self.reason,
        )
    }
}

/// Takes an exclusive lock on `DATA-DIR/moonlink.lock` for the process's life: a second
/// process on the same directory would delete the first one's log segments and move its
/// table pointers.
fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File> {
    let path = data_dir.join("moonlink.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| EngineError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(EngineError::DataDirLocked(format!(
            "data directory {} is in use by another moonlink-host process (lock {} is held); \
             stop it or choose another --data-dir",
            data_dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(EngineError::io(&path, e)),
    }
}

fn valid_identifier_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Engine {
    /// Opens (or creates) the data directory and recovers every table: committed state from
    /// Iceberg, then the write-ahead log past the committed LSN.
    pub async fn open(config: EngineConfig) -> Result<Engine> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| EngineError::io(&config.data_dir, e))?;
        let warehouse = Warehouse::local(&config.data_dir.join("warehouse"))?;
        Engine::open_with_warehouse(config, warehouse).await
    }

    /// [`Engine::open`] with the warehouse given (e.g. over a store that injects faults).
    pub async fn open_with_warehouse(config: EngineConfig, warehouse: Warehouse) -> Result<Engine> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| EngineError::io(&config.data_dir, e))?;
        let lock = lock_data_dir(&config.data_dir)?;
        let catalog = Arc::new(Catalog::open(config.catalog.as_deref(), &config.data_dir).await?);
        let engine = Engine {
            inner: Arc::new(Inner {
                config,
                catalog,
                warehouse,
                tables: RwLock::new(HashMap::new()),
                failed: RwLock::new(HashMap::new()),
                _lock: lock,
                ddl: tokio::sync::Mutex::new(()),
            }),
        };
        for entry in engine.inner.catalog.list().await? {
            // One table that cannot open must not keep the others (or the server) down.
            match engine.recover_table_retrying(&entry).await {
                Ok(table) => {
                    engine.tables_mut().insert(table.name.clone(), table);
                }
                Err(e) => engine.mark_failed(entry, e),
            }
        }
        Ok(engine)
    }

    /// [`Engine::recover_table`], retrying a few times when the store failed (a read error is
    /// often transient on object storage); a damaged log or catalog entry fails at once.
    async fn recover_table_retrying(&self, entry: &CatalogEntry) -> Result<Arc<Table>> {
        let mut delay = std::time::Duration::from_millis(50);
        for _ in 0..3 {
            match self.recover_table(entry).await {
                Err(e) if e.is_transient() => {
                    tracing::warn!(table = %entry.name, error = %e, "opening the table failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
                other => return other,
            }
        }
        self.recover_table(entry).await
    }

    async fn recover_table(&self, entry: &CatalogEntry) -> Result<Arc<Table>> {
        let schema: TableSchema = serde_json::from_str(&entry.schema_json).map_err(|e| {
            EngineError::Catalog(format!("bad stored schema for '{}': {e}", entry.name))
        })?;
        let options: TableOptions = serde_json::from_str(&entry.options_json).map_err(|e| {
            EngineError::Catalog(format!("bad stored options for '{}': {e}", entry.name))
        })?;
        let file_io = self.inner.warehouse.file_io();
        let metadata = commit::load_metadata(&file_io, &entry.metadata_location).await?;
        self.open_table(entry.clone(), schema, options, metadata)
            .await
    }

    fn mark_failed(&self, entry: CatalogEntry, error: EngineError) {
        let reason = error.to_string();
        tracing::error!(table = %entry.name, error = %reason,
            "table could not be opened; it is listed as failed and refuses writes until fixed and restarted");
        self.inner
            .failed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entry.name.clone(), FailedTable { entry, reason });
    }

    fn failed_table(&self, name: &str) -> Option<FailedTable> {
        self.inner
            .failed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    async fn open_table(
        &self,
        entry: CatalogEntry,
        schema: TableSchema,
        options: TableOptions,
        metadata: iceberg::spec::TableMetadata,
    ) -> Result<Arc<Table>> {
        let wal_dir = self.cache_dir("wal", &entry.id);
        let index_dir = self.cache_dir("index", &entry.id);
        Table::open(
            OpenTable {
                name: entry.name,
                id: entry.id,
                namespace: entry.namespace,
                table: entry.table,
                schema,
                options,
                metadata,
                metadata_location: entry.metadata_location,
            },
            self.inner.catalog.clone(),
            self.inner.warehouse.clone(),
            &wal_dir,
            &index_dir,
            self.inner.config.table.clone(),
        )
        .await
    }

    /// Local cache directories: `cache/wal/TABLE-ID`, `cache/index/TABLE-ID`.
    fn cache_dir(&self, kind: &str, table_id: &str) -> PathBuf {
        self.inner
            .config
            .data_dir
            .join("cache")
            .join(kind)
            .join(table_id)
    }

    fn tables_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Table>>> {
        self.inner.tables.write().unwrap_or_else(|p| p.into_inner())
    }

    fn table(&self, name: &str) -> Result<Arc<Table>> {
        self.inner
            .tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| match self.failed_table(name) {
                Some(failed) => EngineError::TableFailed {
                    name: name.to_string(),
                    reason: failed.reason,
                },
                None => EngineError::TableNotFound(name.to_string()),
            })
    }

    /// Creates an Iceberg v3 table and registers it under `request.name`.
    pub async fn create_table(&self, request: CreateTable) -> Result<TableInfo> {
        request.schema.validate()?;
        let iceberg_schema = request.schema.iceberg_schema()?;
        let partition_spec =
            crate::partition::partition_spec(&iceberg_schema, &request.options.partition_by)?;
        if request.name.is_empty() || request.name.len() > 255 || request.name.contains('/') {
            return Err(EngineError::InvalidSchema(format!(
                "invalid table name '{}'",
                request.name
            )));
        }
        for part in [&request.namespace, &request.table] {
            if !valid_identifier_part(part) {
                return Err(EngineError::InvalidSchema(format!(
                    "invalid database or table name '{part}': use letters, digits, '_' or '-'"
                )));
            }
        }
        let _ddl = self.inner.ddl.lock().await;
        if self.table(&request.name).is_ok() || self.failed_table(&request.name).is_some() {
            return Err(EngineError::TableExists(request.name));
        }
        let file_io = self.inner.warehouse.file_io();
        let table_location = format!(
            "{}/{}/{}",
            self.inner.warehouse.root(),
            request.namespace,
            request.table
        );
        let (metadata, metadata_location) = commit::create_table_metadata(
            &file_io,
            iceberg_schema,
            partition_spec,
            &table_location,
        )
        .await?;
        let entry = CatalogEntry {
            name: request.name.clone(),
            id: uuid::Uuid::new_v4().to_string(),
            namespace: request.namespace,
            table: request.table,
            schema_json: serde_json::to_string(&request.schema)
                .map_err(|e| EngineError::Catalog(e.to_string()))?,
            options_json: serde_json::to_string(&request.options)
                .map_err(|e| EngineError::Catalog(e.to_string()))?,
            metadata_location,
        };
        self.inner.catalog.create(&entry).await?;
        let table = self
            .open_table(entry, request.schema, request.options, metadata)
            .await?;
        let info = table.info();
        self.tables_mut().insert(table.name.clone(), table);
        Ok(info)
    }

    /// Drops a table: stops its writer, removes it from the catalog, deletes its files and log.
    pub async fn drop_table(&self, name: &str) -> Result<()> {
        let _ddl = self.inner.ddl.lock().await;
        if let Some(failed) = self.failed_table(name) {
            return self.drop_failed(failed).await;
        }
        let table = self.table(name)?;
        table.destroy().await?;
        let location = table.info().metadata_location;
        self.inner
            .catalog
            .remove(&CatalogEntry {
                name: table.name.clone(),
                id: table.id.clone(),
                namespace: table.namespace.clone(),
                table: table.table.clone(),
                schema_json: String::new(),
                options_json: String::new(),
                metadata_location: location,
            })
            .await?;
        self.tables_mut().remove(name);
        self.delete_table_files(name, &table.namespace, &table.table)
            .await;
        Ok(())
    }

    /// Deletes a dropped table's warehouse files (best effort: leftovers are only logged).
    async fn delete_table_files(&self, name: &str, namespace: &str, table: &str) {
        let table_root = format!("{}/{namespace}/{table}", self.inner.warehouse.root());
        if let Err(e) = self.inner.warehouse.delete_prefix(&table_root).await {
            tracing::warn!(table = name, error = %e, "dropped table's files could not all be deleted");
        }
    }

    /// Removes a table that could not be opened: catalog entry, log, index and files.
    async fn drop_failed(&self, failed: FailedTable) -> Result<()> {
        let entry = failed.entry;
        self.inner.catalog.remove(&entry).await?;
        for kind in ["wal", "index"] {
            let dir = self.cache_dir(kind, &entry.id);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(EngineError::io(dir, e));
                }
            }
        }
        self.inner
            .failed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&entry.name);
        self.delete_table_files(&entry.name, &entry.namespace, &entry.table)
            .await;
        Ok(())
    }

    /// Every table, sorted by name, including tables that failed to open (`failed: true`).
    pub fn list_tables(&self) -> Vec<TableInfo> {
        let tables = self.inner.tables.read().unwrap_or_else(|p| p.into_inner());
        let mut infos: Vec<TableInfo> = tables.values().map(|t| t.info()).collect();
        let failed = self.inner.failed.read().unwrap_or_else(|p| p.into_inner());
        infos.extend(failed.values().map(FailedTable::info));
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        infos
    }

    /// One table's state; a failed table is reported, not an error.
    pub fn table_info(&self, name: &str) -> Result<TableInfo> {
        if let Some(failed) = self.failed_table(name) {
            return Ok(failed.info());
        }
        Ok(self.table(name)?.info())
    }

    /// The table's current metadata location and the metadata JSON stored there, as readers
    /// load it (the served Iceberg REST catalog answers with both).
    pub async fn table_metadata_json(&self, name: &str) -> Result<(String, bytes::Bytes)> {
        let location = self.table_info(name)?.metadata_location;
        let json = self.inner.warehouse.get(&location).await?;
        Ok((location, json))
    }

    /// A consistent view of the table's live rows now — committed files with their deletion
    /// vectors and pending deletes, plus buffered rows — for real-time reads: everything an
    /// `apply` that returned before this call wrote is in it.
    pub fn read_view(&self, name: &str) -> Result<ReadView> {
        self.table(name)?.read_view()
    }

    /// A view of committed snapshot `snapshot_id` of the table alone (no buffered rows);
    /// `None` when the table has no such snapshot (never had it, or it expired).
    pub async fn read_view_at(&self, name: &str, snapshot_id: i64) -> Result<Option<ReadView>> {
        self.table(name)?.read_view_at(snapshot_id).await
    }

    /// The table's design from its committed metadata: schema id, partition spec,
    /// properties, snapshot history. Empty for a table that failed to open.
    pub fn table_design(&self, name: &str) -> Result<crate::design::TableDesign> {
        match self.table(name) {
            Ok(table) => Ok(crate::design::table_design(&table.metadata())),
            Err(EngineError::TableFailed { .. }) => Ok(Default::default()),
            Err(e) => Err(e),
        }
    }

    /// The table's current schema.
    pub fn table_schema(&self, name: &str) -> Result<TableSchema> {
        Ok(self.table(name)?.schema.clone())
    }

    /// Applies a batch to a table; returns once it is durable per `durability`.
    pub async fn apply(
        &self,
        name: &str,
        batch: ChangeBatch,
        durability: Durability,
    ) -> Result<ApplyReceipt> {
        self.table(name)?.apply(batch, durability, None).await
    }

    /// Admission control for writers that can be told to retry (HTTP ingest, receivers): call
    /// before decoding or applying their batch. Returns at once while the table's buffer is
    /// below twice [`TableConfig::max_buffer_bytes`]; otherwise waits up to
    /// [`TableConfig::backlog_wait`] for commits to drain it and then fails with
    /// [`EngineError::Backlogged`], having written nothing. With [`Engine::apply_from_source`]
    /// this bounds every table's buffer however fast writers send.
    pub async fn admit(&self, name: &str) -> Result<()> {
        self.table(name)?.admit().await
    }

    /// Applies a batch from a pull source. It is not logged: the snapshot that commits it
    /// records `checkpoint`, and after a crash the source replays from the committed
    /// checkpoint ([`Engine::source_checkpoint`]). Returns once the table's buffer is below
    /// twice [`TableConfig::max_buffer_bytes`], so a source cannot outrun the commits.
    pub async fn apply_from_source(
        &self,
        name: &str,
        batch: ChangeBatch,
        checkpoint: SourceCheckpoint,
    ) -> Result<ApplyReceipt> {
        let table = self.table(name)?;
        let receipt = table
            .apply(batch, Durability::Replayable, Some(checkpoint))
            .await?;
        // Sources are paced by commits: the buffer stays within twice `max_buffer_bytes`.
        table.wait_for_room().await;
        Ok(receipt)
    }

    /// Removes every row of a table, committed now (Postgres `TRUNCATE`). A source passes its
    /// checkpoint, recorded with the snapshot as with [`Engine::apply_from_source`].
    pub async fn truncate(
        &self,
        name: &str,
        source_checkpoint: Option<SourceCheckpoint>,
    ) -> Result<CommitInfo> {
        Ok(self.table(name)?.truncate(source_checkpoint).await?.into())
    }

    /// Records that `source` was acknowledged `checkpoint`: every change up to it is committed
    /// in every table it writes. Where the source resumes after a restart.
    pub fn record_source_ack(&self, source: &str, checkpoint: &str) -> Result<()> {
        self.inner.catalog.set_source_ack(source, checkpoint)
    }

    /// The checkpoint last recorded by [`Engine::record_source_ack`].
    pub fn source_ack(&self, source: &str) -> Result<Option<String>> {
        self.inner.catalog.source_ack(source)
    }

    /// The checkpoint of `source` in the table's committed snapshot.
    pub fn source_checkpoint(&self, name: &str, source: &str) -> Result<Option<String>> {
        Ok(self.table(name)?.committed_source_checkpoint(source))
    }

    /// The last LSN the table committed, read without the buffer's lock (so a caller never
    /// waits for an apply or a commit's take in progress, as [`Engine::table_info`] may).
    pub fn committed_lsn(&self, name: &str) -> Result<u64> {
        Ok(self.table(name)?.committed_lsn())
    }

    /// Waits until everything the table applied up to `lsn` is committed.
    pub async fn committed_through(&self, name: &str, lsn: u64) -> Result<CommitInfo> {
        Ok(self.table(name)?.committed_through(lsn).await.into())
    }

    /// Commits now, then rewrites every small or deletion-heavy data file and waits for that
    /// `replace` snapshot (maintenance on demand).
    pub async fn optimize(&self, name: &str) -> Result<CommitInfo> {
        Ok(self.table(name)?.optimize().await?.into())
    }

    /// Runs the table's compaction policy now and waits for it, as the background compactor
    /// does after a commit (for tests and tools that want the table settled); returns whether
    /// a `replace` snapshot was committed.
    pub async fn compact_now(&self, name: &str) -> Result<bool> {
        self.table(name)?.compact_now().await
    }

    /// Test hook: the table's next compaction stops after writing its files, before its
    /// swap, until [`CompactionHold::release`].
    #[doc(hidden)]
    pub fn hold_next_compaction(&self, name: &str) -> Result<Arc<crate::CompactionHold>> {
        Ok(self.table(name)?.hold_next_compaction())
    }

    /// Commits everything a table has accepted so far, now.
    pub async fn commit(&self, name: &str) -> Result<CommitInfo> {
        Ok(self.table(name)?.commit().await?.into())
    }

    /// Commits every table and stops their writers (graceful shutdown).
    pub async fn shutdown(&self) {
        let tables: Vec<Arc<Table>> = self
            .inner
            .tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for table in tables {
            if let Err(e) = table.shutdown(true).await {
                tracing::warn!(table = %table.name, error = %e, "final commit failed; the log keeps the rows");
            }
        }
    }
}
