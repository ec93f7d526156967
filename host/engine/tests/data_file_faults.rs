//! Fault injection beneath the data files: a warehouse store whose writes (puts, multipart
//! uploads), reads and lists fail at random, driven by seeds, under a keyed table taking
//! upserts and deletes with commits, compactions and crashes. Acknowledged writes live in the
//! write-ahead log, so a failed commit must only delay them: once the store heals, the table
//! must equal the model exactly — every acknowledged change once, nothing else.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int64Array};
use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use moonlink_engine::inspect::live_rows;
use moonlink_engine::Warehouse;
use moonlink_engine::{
    ChangeBatch, ColumnSchema, ColumnType, CreateTable, Durability, Engine, EngineConfig,
    Operation, TableConfig, TableSchema,
};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

/// xorshift64*: deterministic, so a failing seed reproduces.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A local store that fails a share of writes (`ENOSPC`), reads and lists (`EIO`) while on.
#[derive(Debug)]
struct FaultyStore {
    inner: LocalFileSystem,
    rng: Arc<Mutex<Rng>>,
    on: Arc<AtomicBool>,
    /// While set, every put panics (a bug below the commit, as a library might have).
    panics: Arc<AtomicBool>,
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

fn fault(code: i32) -> object_store::Error {
    object_store::Error::Generic {
        store: "faulty",
        source: Box::new(std::io::Error::from_raw_os_error(code)),
    }
}

impl FaultyStore {
    /// True when this operation should fail (`percent` of the time, while faults are on).
    fn fails(&self, percent: u64) -> bool {
        self.on.load(Ordering::SeqCst) && self.rng.lock().unwrap().below(100) < percent
    }
}

/// A multipart upload whose completion may fail (the parts then never become an object).
#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    fail: bool,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }
    async fn complete(&mut self) -> object_store::Result<PutResult> {
        if self.fail {
            let _ = self.inner.abort().await;
            return Err(fault(28));
        }
        self.inner.complete().await
    }
    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        assert!(!self.panics.load(Ordering::SeqCst), "injected panic in put");
        if self.fails(15) {
            return Err(fault(28));
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        if self.fails(10) {
            return Err(fault(28));
        }
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultyUpload {
            inner,
            fail: self.fails(10),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if self.fails(5) {
            return Err(fault(5));
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if self.fails(5) {
            return futures::stream::once(async { Err(fault(5)) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

fn schema() -> TableSchema {
    TableSchema::new(
        vec![
            ColumnSchema {
                name: "id".into(),
                data_type: ColumnType::Int64,
                nullable: false,
            },
            ColumnSchema {
                name: "v".into(),
                data_type: ColumnType::Int64,
                nullable: true,
            },
        ],
        vec!["id".into()],
    )
}

fn config(dir: &std::path::Path) -> EngineConfig {
    EngineConfig {
        data_dir: dir.to_path_buf(),
        table: TableConfig {
            commit_interval: Duration::from_secs(3600),
            // Small files and an eager rewrite threshold: compaction runs often.
            merge_fanout: 3,
            rewrite_deleted_fraction: 0.2,
            orphan_sweep_every: 4,
            ..TableConfig::default()
        },
        catalog: None,
    }
}

async fn open(dir: &std::path::Path, store: &Arc<FaultyStore>) -> Engine {
    let warehouse = Warehouse::local_with_store(&dir.join("warehouse"), store.clone()).unwrap();
    Engine::open_with_warehouse(config(dir), warehouse)
        .await
        .unwrap()
}

/// Live (id, v) rows of the committed snapshot, read through a plain local store.
async fn committed_rows(dir: &std::path::Path, engine: &Engine) -> BTreeMap<i64, i64> {
    let warehouse = Warehouse::local(&dir.join("warehouse")).unwrap();
    let location = engine.table_info("f.t").unwrap().metadata_location;
    let mut rows = BTreeMap::new();
    for (batch, i) in live_rows(&warehouse, &location, &schema().arrow_schema())
        .await
        .unwrap()
    {
        let id = batch.column(0).as_primitive::<Int64Type>().value(i);
        let v = batch.column(1).as_primitive::<Int64Type>().value(i);
        assert!(rows.insert(id, v).is_none(), "key {id} is live twice");
    }
    rows
}

fn batch(op: Operation, ids: &[i64], v: i64) -> ChangeBatch {
    let mut columns = vec![(
        "id".to_string(),
        Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef,
    )];
    if op != Operation::Delete {
        columns.push((
            "v".into(),
            Arc::new(Int64Array::from(vec![v; ids.len()])) as ArrayRef,
        ));
    }
    ChangeBatch::from_columns(&schema(), vec![op; ids.len()], columns).unwrap()
}

fn some_ids(rng: &mut Rng, range: Range<i64>, n: usize) -> Vec<i64> {
    let mut ids: Vec<i64> = (0..n)
        .map(|_| range.start + rng.below((range.end - range.start) as u64) as i64)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_store_writes_and_reads_only_delay_commits() {
    for seed in 1..=6u64 {
        let dir = tempfile::tempdir().unwrap();
        let on = Arc::new(AtomicBool::new(false));
        let store = Arc::new(FaultyStore {
            inner: LocalFileSystem::new().with_automatic_cleanup(true),
            rng: Arc::new(Mutex::new(Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)))),
            on: on.clone(),
            panics: Arc::default(),
        });
        let mut rng = Rng(seed ^ 0xdead_beef);
        let mut model: BTreeMap<i64, i64> = BTreeMap::new();
        let mut engine = open(dir.path(), &store).await;
        engine
            .create_table(CreateTable {
                options: Default::default(),
                name: "f.t".into(),
                namespace: "f".into(),
                table: "t".into(),
                schema: schema(),
            })
            .await
            .unwrap();
        let mut failed_commits = 0;
        for round in 0..40i64 {
            on.store(true, Ordering::SeqCst);
            let (op, ids) = match rng.below(3) {
                0 => (Operation::Delete, some_ids(&mut rng, 0..300, 15)),
                _ => (Operation::Upsert, some_ids(&mut rng, 0..300, 40)),
            };
            engine
                .apply("f.t", batch(op, &ids, round), Durability::Logged)
                .await
                .unwrap();
            for id in ids {
                match op {
                    Operation::Delete => model.remove(&id),
                    _ => model.insert(id, round),
                };
            }
            if rng.below(3) == 0 {
                let result = if rng.below(4) == 0 {
                    engine.optimize("f.t").await
                } else {
                    engine.commit("f.t").await
                };
                failed_commits += usize::from(result.is_err());
            }
            if rng.below(8) == 0 {
                // Crash: no final commit. Reopening reads metadata through the failing store:
                // transient read errors are retried, so the table opens (a run of failed reads
                // longer than the retries fails it; opening again then loses nothing).
                drop(engine);
                engine = open(dir.path(), &store).await;
                for _ in 0..5 {
                    if !engine.table_info("f.t").unwrap().failed {
                        break;
                    }
                    drop(engine);
                    engine = open(dir.path(), &store).await;
                }
                let info = engine.table_info("f.t").unwrap();
                assert!(!info.failed, "seed {seed}: {:?}", info.last_error);
            }
        }
        on.store(false, Ordering::SeqCst);
        engine.commit("f.t").await.unwrap();
        assert_eq!(
            committed_rows(dir.path(), &engine).await,
            model,
            "seed {seed}: the table differs from the model after the store healed \
             ({failed_commits} commits failed on the way)"
        );
        drop(engine);
        let engine = open(dir.path(), &store).await;
        engine.optimize("f.t").await.unwrap();
        assert_eq!(
            committed_rows(dir.path(), &engine).await,
            model,
            "seed {seed}: after a restart and a full compaction"
        );
        assert!(
            failed_commits > 0,
            "seed {seed}: no fault ever hit a commit"
        );
    }
}

/// A commit that panics (a bug in a library beneath it) is reported like a failed commit and
/// the table's commit loop keeps running: once the cause is gone the rows commit by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_commit_is_reported_and_the_commit_loop_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FaultyStore {
        inner: LocalFileSystem::new().with_automatic_cleanup(true),
        rng: Arc::new(Mutex::new(Rng(1))),
        on: Arc::default(),
        panics: Arc::default(),
    });
    let warehouse =
        Warehouse::local_with_store(&dir.path().join("warehouse"), store.clone()).unwrap();
    let mut fast = config(dir.path());
    fast.table.commit_interval = Duration::from_millis(50);
    let engine = Engine::open_with_warehouse(fast, warehouse).await.unwrap();
    engine
        .create_table(CreateTable {
            options: Default::default(),
            name: "f.t".into(),
            namespace: "f".into(),
            table: "t".into(),
            schema: schema(),
        })
        .await
        .unwrap();
    store.panics.store(true, Ordering::SeqCst);
    engine
        .apply(
            "f.t",
            batch(Operation::Insert, &[1, 2], 7),
            Durability::Logged,
        )
        .await
        .unwrap();
    let mut reported = None;
    for _ in 0..200 {
        reported = engine.table_info("f.t").unwrap().last_error;
        if reported.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let reported = reported.expect("the panic is reported as the table's last error");
    assert!(reported.contains("panicked"), "{reported}");
    store.panics.store(false, Ordering::SeqCst);
    let mut rows = BTreeMap::new();
    for _ in 0..200 {
        if engine.table_info("f.t").unwrap().committed_lsn > 0 {
            rows = committed_rows(dir.path(), &engine).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        rows,
        BTreeMap::from([(1, 7), (2, 7)]),
        "the loop committed after the panic"
    );
    engine.shutdown().await;
}
