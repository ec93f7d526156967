//! Real-time read views: committed files + deletion vectors + pending deletes + buffered rows,
//! consistent while commits and compactions run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch};
use moonlink_engine::{
    ChangeBatch, ColumnSchema, ColumnType, CreateTable, Durability, Engine, EngineConfig,
    Operation, ReadView, TableConfig, TableSchema,
};

fn schema() -> TableSchema {
    let column = |name: &str| ColumnSchema {
        name: name.into(),
        data_type: ColumnType::Int64,
        nullable: false,
    };
    TableSchema::new(vec![column("id"), column("v")], vec!["id".into()])
}

fn batch(op: Operation, rows: &[(i64, i64)]) -> ChangeBatch {
    let ids = Int64Array::from_iter_values(rows.iter().map(|r| r.0));
    let vs = Int64Array::from_iter_values(rows.iter().map(|r| r.1));
    ChangeBatch::from_columns(
        &schema(),
        vec![op; rows.len()],
        vec![
            ("id".into(), Arc::new(ids) as ArrayRef),
            ("v".into(), Arc::new(vs) as ArrayRef),
        ],
    )
    .unwrap()
}

async fn open(dir: &std::path::Path) -> Engine {
    let engine = Engine::open(EngineConfig {
        data_dir: dir.to_path_buf(),
        table: TableConfig {
            commit_interval: Duration::from_secs(3600),
            // Rewrite keyed files as soon as a fifth of their rows are deleted.
            rewrite_deleted_fraction: 0.2,
            merge_fanout: 2,
            ..TableConfig::default()
        },
        catalog: None,
    })
    .await
    .unwrap();
    if engine.table_info("t.kv").is_err() {
        engine
            .create_table(CreateTable {
                name: "t.kv".into(),
                namespace: "t".into(),
                table: "kv".into(),
                schema: schema(),
                options: Default::default(),
            })
            .await
            .unwrap();
    }
    engine
}

/// id → v of every live row of the view; panics on a duplicate key.
async fn rows(view: &ReadView) -> BTreeMap<i64, i64> {
    let mut out = BTreeMap::new();
    let batches: Vec<RecordBatch> = view.read_all().await.unwrap();
    for b in batches {
        let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let vs = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        for i in 0..b.num_rows() {
            let previous = out.insert(ids.value(i), vs.value(i));
            assert!(previous.is_none(), "key {} seen twice", ids.value(i));
        }
    }
    assert_eq!(view.live_rows(), out.len() as u64);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn view_is_committed_plus_buffered_minus_pending_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    let mut model = BTreeMap::new();
    let apply = |op, rows: Vec<(i64, i64)>| {
        let engine = engine.clone();
        async move {
            engine
                .apply("t.kv", batch(op, &rows), Durability::Logged)
                .await
                .unwrap();
        }
    };
    apply(Operation::Upsert, (0..10).map(|i| (i, i)).collect()).await;
    model.extend((0..10).map(|i| (i, i)));
    // Buffered only.
    let view = engine.read_view("t.kv").unwrap();
    assert_eq!(view.snapshot_id, None);
    assert!(view.files.is_empty());
    assert_eq!(rows(&view).await, model);

    engine.commit("t.kv").await.unwrap();
    // Committed file; then deletes and upserts hit it (pending DV) and the buffer.
    apply(Operation::Delete, vec![(2, 0), (3, 0)]).await;
    apply(Operation::Upsert, vec![(4, 40), (10, 100)]).await;
    apply(Operation::Delete, vec![(10, 0)]).await;
    for k in [2, 3, 10] {
        model.remove(&k);
    }
    model.insert(4, 40);
    let view = engine.read_view("t.kv").unwrap();
    assert!(view.snapshot_id.is_some());
    assert_eq!(view.files.len(), 1);
    assert_eq!(view.files[0].deleted_count(), 3, "2, 3 and the old 4");
    assert_eq!(rows(&view).await, model);

    // After a commit the same rows, now all in files.
    let before = view.snapshot_id;
    engine.commit("t.kv").await.unwrap();
    let view = engine.read_view("t.kv").unwrap();
    assert_ne!(view.snapshot_id, before);
    assert!(view.batches.is_empty());
    assert_eq!(rows(&view).await, model);

    // The older snapshot still reads as it was: ids 0..10, no buffered rows.
    let old = engine
        .read_view_at("t.kv", before.unwrap())
        .await
        .unwrap()
        .unwrap();
    let expected: BTreeMap<i64, i64> = (0..10).map(|i| (i, i)).collect();
    assert_eq!(rows(&old).await, expected);
    assert!(engine.read_view_at("t.kv", 12345).await.unwrap().is_none());

    // Truncation hides every row at once.
    engine.truncate("t.kv", None).await.unwrap();
    assert!(rows(&engine.read_view("t.kv").unwrap()).await.is_empty());
    engine.shutdown().await;
}

/// Every key of a fixed set is upserted over and over while commits and compactions (which
/// rewrite files and move late deletes) run: every view must hold each key exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn view_never_duplicates_or_drops_a_row_across_commits_and_compactions() {
    const KEYS: i64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    let all: Vec<(i64, i64)> = (0..KEYS).map(|k| (k, 0)).collect();
    engine
        .apply(
            "t.kv",
            batch(Operation::Upsert, &all),
            Durability::Committed,
        )
        .await
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let engine = engine.clone();
        tokio::spawn(async move {
            for round in 1..=60i64 {
                // A slice of keys per batch, so files gather deletes at different rates.
                let start = (round * 37) % KEYS;
                let rows: Vec<(i64, i64)> = (start..(start + 70).min(KEYS))
                    .map(|k| (k, round))
                    .collect();
                engine
                    .apply("t.kv", batch(Operation::Upsert, &rows), Durability::Logged)
                    .await
                    .unwrap();
                match round % 3 {
                    0 => drop(engine.optimize("t.kv").await.unwrap()),
                    1 => drop(engine.commit("t.kv").await.unwrap()),
                    _ => {}
                }
            }
        })
    };
    let committer = {
        let engine = engine.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                engine.commit("t.kv").await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let mut views = 0;
    while !writer.is_finished() {
        let view = engine.read_view("t.kv").unwrap();
        let got = rows(&view).await;
        assert_eq!(
            got.len() as i64,
            KEYS,
            "view {views} lost or duplicated rows"
        );
        views += 1;
    }
    writer.await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    committer.await.unwrap();
    assert!(views > 5, "only {views} views were taken");
    let info = engine.table_info("t.kv").unwrap();
    assert!(info.snapshots > 10, "{} snapshots", info.snapshots);
    let last = rows(&engine.read_view("t.kv").unwrap()).await;
    assert_eq!(last.len() as i64, KEYS);
    engine.shutdown().await;
}
