//! moonlink-query: real-time SQL over moonlink tables with DataFusion.
//!
//! A query reads each table it names as one consistent [`ReadView`](moonlink_engine::ReadView)
//! taken from the engine: the committed snapshot's Parquet files, each minus its deletion
//! vector and the deletes not yet committed, plus the rows still in memory. Rows an `apply`
//! acknowledged before the query started are in the result, whether or not a commit has run.
//! With a snapshot id, a query reads that committed snapshot alone.
//!
//! - Tables are `namespace.table` (catalog `moonlink`).
//! - Parquet files are scanned by DataFusion with projection and predicate pushdown (row
//!   groups and pages pruned by their statistics); deleted rows are a row selection, never
//!   decoded. Buffered rows are in-memory batches (`provider.rs`, `reader.rs`).
//! - Postgres tools: a minimal `pg_catalog` (`pg_namespace`, `pg_class`) answers psql's `\dt`
//!   and `\dn`; `information_schema` (tables, columns) is DataFusion's.
//! - Read-only: DDL, DML (`COPY` included) and other statements are refused as
//!   [`QueryError::Sql`].
//! - Limits: [`QueryConfig::memory_bytes`] bounds each query's operators (sorts, joins,
//!   aggregates; no spilling to disk) and its collected result; [`QueryConfig::timeout`]
//!   cancels it (the query's task is aborted, which takes effect when an operator yields).
//!   Queries run on their own threads, at a lower CPU priority than ingest.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//!
//! use arrow_array::{ArrayRef, Int64Array};
//! use moonlink_engine::{
//!     ChangeBatch, ColumnSchema, ColumnType, CreateTable, Durability, Engine, EngineConfig,
//!     Operation, TableConfig, TableSchema,
//! };
//! use moonlink_query::{QueryConfig, QueryEngine};
//!
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let engine = Engine::open(EngineConfig {
//!     data_dir: dir.path().to_path_buf(),
//!     table: TableConfig::default(),
//!     catalog: None,
//! })
//! .await?;
//! let schema = TableSchema::new(
//!     vec![ColumnSchema { name: "id".into(), data_type: ColumnType::Int64, nullable: false }],
//!     vec![],
//! );
//! engine
//!     .create_table(CreateTable {
//!         name: "demo.t".into(),
//!         namespace: "demo".into(),
//!         table: "t".into(),
//!         schema: schema.clone(),
//!         options: Default::default(),
//!     })
//!     .await?;
//! let ids: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
//! let batch = ChangeBatch::from_columns(&schema, vec![Operation::Insert; 3], vec![("id".into(), ids)])?;
//! // Only logged, not committed: the query sees the rows anyway.
//! engine.apply("demo.t", batch, Durability::Logged).await?;
//!
//! let queries = QueryEngine::new(engine.clone(), QueryConfig::default())?;
//! let result = queries.query("SELECT sum(id) AS s FROM demo.t", None).await?;
//! assert_eq!(String::from_utf8(moonlink_query::output::json_rows(&result)?)?, r#"[{"s":6}]"#);
//! engine.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod error;
mod field_ids;
pub mod output;
mod pg_catalog;
mod provider;
mod reader;
mod scan_plan;

use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use futures::StreamExt;
use moonlink_engine::Engine;

pub use error::{QueryError, Result};

/// Limits and parallelism of queries.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Memory one query may use for its operators and its collected result.
    pub memory_bytes: usize,
    /// A query running longer is cancelled.
    pub timeout: Duration,
    /// Partitions a scan is split into (threads a query may use).
    pub target_partitions: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            memory_bytes: 512 << 20,
            timeout: Duration::from_secs(30),
            target_partitions: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        }
    }
}

/// A query's result: its schema and all its rows.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Columns of the result.
    pub schema: SchemaRef,
    /// The rows, in order.
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    /// Rows in the result.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// Runs read-only SQL over an engine's tables. Cheap to clone.
///
/// Queries run on their own thread pool (`target_partitions` threads), so a heavy query
/// competes with ingest and commits for CPU but never occupies the threads that serve them.
#[derive(Clone)]
pub struct QueryEngine {
    engine: Engine,
    config: QueryConfig,
    pool: Arc<QueryPool>,
    /// Data files' footers and deleted-row selections, shared by queries.
    cache: Arc<scan_plan::FileCache>,
}

/// The query threads' nice value: when queries and ingest both want the CPU, the kernel gives
/// ingest, commits and the HTTP threads (nice 0) about nine tenths of it, so a burst of heavy
/// queries slows ingest little; an otherwise idle CPU still runs queries at full speed.
const QUERY_NICE: i32 = 10;

/// Lowers the calling (query) thread's CPU priority to [`QUERY_NICE`]; best effort.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), QUERY_NICE)
    {
        tracing::debug!(error = %e, "query thread keeps the normal CPU priority");
    }
}

/// The query threads; shut down without waiting when the last handle goes (dropping a tokio
/// runtime inside another one would panic).
struct QueryPool(Option<tokio::runtime::Runtime>);

impl Drop for QueryPool {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Aborts a spawned query when its caller stops waiting (timeout, client gone).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Counts a query in `moonlink_queries_running` while it runs and, when it ends, in
/// `moonlink_queries_total{outcome}`: `ok`, `error`, `timeout`, or `cancelled` when the
/// caller stopped waiting before it finished (the guard dropped unfinished).
struct Outcome(Option<&'static str>);

impl Outcome {
    fn start() -> Self {
        metrics::gauge!("moonlink_queries_running").increment(1.0);
        Outcome(None)
    }

    fn finish(&mut self, result: &Result<QueryResult>) {
        self.0 = Some(match result {
            Ok(_) => "ok",
            Err(QueryError::Timeout(_)) => "timeout",
            Err(_) => "error",
        });
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        metrics::gauge!("moonlink_queries_running").decrement(1.0);
        let outcome = self.0.unwrap_or("cancelled");
        if outcome == "cancelled" {
            tracing::info!("query cancelled: its client stopped waiting");
        }
        metrics::counter!("moonlink_queries_total", "outcome" => outcome).increment(1);
    }
}

impl QueryEngine {
    /// Queries over `engine`'s tables with `config`'s limits.
    pub fn new(engine: Engine, config: QueryConfig) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.target_partitions.max(1))
            .thread_name("moonlink-query")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .map_err(|e| QueryError::Internal(format!("cannot start the query threads: {e}")))?;
        Ok(QueryEngine {
            engine,
            config,
            pool: Arc::new(QueryPool(Some(runtime))),
            cache: Arc::new(scan_plan::FileCache::new(scan_plan::DEFAULT_CACHE_BYTES)),
        })
    }

    /// The limits in force.
    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    fn context(&self, snapshot_id: Option<i64>) -> Result<SessionContext> {
        let internal = |e: datafusion::error::DataFusionError| QueryError::Internal(e.to_string());
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(self.config.memory_bytes, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .map_err(internal)?;
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema("moonlink", "public")
            .with_information_schema(true)
            .with_target_partitions(self.config.target_partitions.max(1));
        config.options_mut().sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        pg_catalog::register_functions(&ctx);
        ctx.register_catalog(
            "moonlink",
            Arc::new(provider::QueryCatalog::new(
                self.engine.clone(),
                snapshot_id,
                self.cache.clone(),
            )),
        );
        Ok(ctx)
    }

    /// Plans `sql` (one read-only statement) without running it.
    async fn plan(&self, sql: &str, snapshot_id: Option<i64>) -> Result<DataFrame> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let ctx = self.context(snapshot_id)?;
        ctx.sql_with_options(sql, options)
            .await
            .map_err(|e| QueryError::from_datafusion(e, self.config.memory_bytes))
    }

    /// The columns `sql` would return (planned, not run): what a Postgres client's
    /// `Describe` asks for.
    pub async fn describe(&self, sql: &str) -> Result<SchemaRef> {
        let frame = self.plan(sql, None).await?;
        Ok(Arc::new(frame.schema().as_arrow().clone()))
    }

    /// Runs `sql` over the tables' live rows, or over committed snapshot `snapshot_id` of
    /// every table it names.
    ///
    /// Dropping the returned future (the HTTP client hung up, a Postgres client sent a cancel
    /// request) aborts the query's task and counts it as cancelled.
    pub async fn query(&self, sql: &str, snapshot_id: Option<i64>) -> Result<QueryResult> {
        let Some(pool) = self.pool.0.as_ref() else {
            return Err(QueryError::Internal("the query threads are stopped".into()));
        };
        let mut outcome = Outcome::start();
        let this = self.clone();
        let sql = sql.to_string();
        let mut task = AbortOnDrop(pool.spawn(async move { this.run(&sql, snapshot_id).await }));
        let result = match tokio::time::timeout(self.config.timeout, &mut task.0).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(QueryError::Internal(format!("query task failed: {e}"))),
            Err(_) => Err(QueryError::Timeout(self.config.timeout)),
        };
        outcome.finish(&result);
        result
    }

    async fn run(&self, sql: &str, snapshot_id: Option<i64>) -> Result<QueryResult> {
        let limit = self.config.memory_bytes;
        let run = async {
            let frame = self.plan(sql, snapshot_id).await?;
            let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
            let mut stream = frame
                .execute_stream()
                .await
                .map_err(|e| QueryError::from_datafusion(e, limit))?;
            let mut batches = Vec::new();
            let mut bytes = 0usize;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| QueryError::from_datafusion(e, limit))?;
                bytes += batch.get_array_memory_size();
                if bytes > limit {
                    return Err(QueryError::MemoryExceeded {
                        limit,
                        message: format!("the result passed {bytes} bytes"),
                    });
                }
                batches.push(batch);
            }
            Ok(QueryResult { schema, batches })
        };
        run.await
    }
}
