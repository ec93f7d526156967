//! Background compaction racing writes: a compaction is held between its rewrite and its swap
//! (a test hook) while upserts and deletes land on the very rows it rewrote — some committed,
//! some still buffered when it swaps. Commits go on while it is held, its `replace` snapshot
//! carries every late delete over, and the table (as readers see it, after a restart too)
//! equals the model.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, ArrayRef, Int64Array, StringArray};
use iceberg::spec::Operation as SnapshotOperation;
use moonlink_engine::inspect::load_metadata;
use moonlink_engine::{
    ChangeBatch, ColumnSchema, ColumnType, CreateTable, Durability, Engine, EngineConfig,
    Operation, TableConfig, TableSchema, Warehouse,
};

const T: &str = "b.kv";

fn schema() -> TableSchema {
    let column = |name: &str, data_type, nullable| ColumnSchema {
        name: name.into(),
        data_type,
        nullable,
    };
    TableSchema::new(
        vec![
            column("id", ColumnType::Int64, false),
            column("v", ColumnType::Utf8, true),
        ],
        vec!["id".into()],
    )
}

fn batch(op: Operation, ids: &[i64], tag: &str) -> ChangeBatch {
    let mut columns = vec![(
        "id".to_string(),
        Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef,
    )];
    if op != Operation::Delete {
        columns.push((
            "v".into(),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("{tag}-{i}")),
            )) as ArrayRef,
        ));
    }
    ChangeBatch::from_columns(&schema(), vec![op; ids.len()], columns).unwrap()
}

async fn open(dir: &std::path::Path) -> Engine {
    Engine::open(EngineConfig {
        data_dir: dir.to_path_buf(),
        table: TableConfig {
            commit_interval: Duration::from_secs(3600),
            merge_fanout: 3,
            rewrite_deleted_fraction: 0.2,
            ..TableConfig::default()
        },
        catalog: None,
    })
    .await
    .unwrap()
}

struct Model(BTreeMap<i64, String>);

impl Model {
    async fn apply(
        &mut self,
        engine: &Engine,
        op: Operation,
        ids: &[i64],
        tag: &str,
        durability: Durability,
    ) {
        engine
            .apply(T, batch(op, ids, tag), durability)
            .await
            .unwrap();
        for &id in ids {
            match op {
                Operation::Delete => {
                    self.0.remove(&id);
                }
                _ => {
                    self.0.insert(id, format!("{tag}-{id}"));
                }
            }
        }
    }
}

/// The committed snapshot's live rows; panics on a key live twice.
async fn committed(dir: &std::path::Path, engine: &Engine) -> BTreeMap<i64, String> {
    let warehouse = Warehouse::local(&dir.join("warehouse")).unwrap();
    let location = engine.table_info(T).unwrap().metadata_location;
    let mut rows = BTreeMap::new();
    for (b, i) in
        moonlink_engine::inspect::live_rows(&warehouse, &location, &schema().arrow_schema())
            .await
            .unwrap()
    {
        let id = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let v = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        let old = rows.insert(id.value(i), v.value(i).to_string());
        assert!(old.is_none(), "key {} is live twice", id.value(i));
    }
    rows
}

async fn operations(dir: &std::path::Path, engine: &Engine) -> Vec<SnapshotOperation> {
    let io = Warehouse::local(&dir.join("warehouse")).unwrap().file_io();
    let location = engine.table_info(T).unwrap().metadata_location;
    let metadata = load_metadata(&io, &location).await.unwrap();
    let mut snapshots: Vec<_> = metadata.snapshots().collect();
    snapshots.sort_by_key(|s| s.sequence_number());
    snapshots
        .iter()
        .map(|s| s.summary().operation.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_racing_a_held_compaction_are_carried_over() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    engine
        .create_table(CreateTable {
            name: T.into(),
            namespace: "b".into(),
            table: "kv".into(),
            schema: schema(),
            options: Default::default(),
        })
        .await
        .unwrap();
    let hold = engine.hold_next_compaction(T).unwrap();
    let mut model = Model(BTreeMap::new());
    // Three small files: the third commit wakes the compactor, which rewrites them and stops.
    for round in 0..3i64 {
        let ids: Vec<i64> = (round * 50..round * 50 + 50).collect();
        model
            .apply(&engine, Operation::Insert, &ids, "a", Durability::Committed)
            .await;
    }
    tokio::time::timeout(Duration::from_secs(60), hold.reached())
        .await
        .expect("the compactor should have started after the third commit");

    // Held between rewrite and swap: upserts and deletes on rows of every rewritten file,
    // committed — commits do not wait for the compaction.
    let evens: Vec<i64> = (0..150).step_by(6).collect();
    model
        .apply(
            &engine,
            Operation::Upsert,
            &evens,
            "b",
            Durability::Committed,
        )
        .await;
    let gone: Vec<i64> = (1..150).step_by(7).filter(|i| i % 6 != 0).collect();
    model
        .apply(
            &engine,
            Operation::Delete,
            &gone,
            "c",
            Durability::Committed,
        )
        .await;
    // A committed delete of a row upserted above (its new copy lives in a newer file).
    model
        .apply(
            &engine,
            Operation::Delete,
            &[6, 12],
            "d",
            Durability::Committed,
        )
        .await;
    // And some still in the buffer when the swap happens.
    let late: Vec<i64> = (2..150).step_by(11).collect();
    model
        .apply(&engine, Operation::Upsert, &late, "e", Durability::Logged)
        .await;
    model
        .apply(
            &engine,
            Operation::Delete,
            &[3, 5, 149],
            "f",
            Durability::Logged,
        )
        .await;
    let before = engine.table_info(T).unwrap();
    assert!(before.data_files >= 3, "{before:?}");

    hold.release();
    // Runs after the held one (one compaction at a time), then everything is committed.
    engine.compact_now(T).await.unwrap();
    engine.commit(T).await.unwrap();
    assert!(
        operations(dir.path(), &engine)
            .await
            .contains(&SnapshotOperation::Replace),
        "the compaction committed its own replace snapshot"
    );
    assert_eq!(committed(dir.path(), &engine).await, model.0);
    let info = engine.table_info(T).unwrap();
    assert_eq!(info.index_entries, model.0.len());
    // The key index moved to the new files: later writes find their rows there.
    let again: Vec<i64> = (0..150).step_by(5).collect();
    model
        .apply(
            &engine,
            Operation::Upsert,
            &again,
            "g",
            Durability::Committed,
        )
        .await;
    model
        .apply(
            &engine,
            Operation::Delete,
            &[10, 20, 31],
            "h",
            Durability::Committed,
        )
        .await;
    engine.optimize(T).await.unwrap();
    assert_eq!(committed(dir.path(), &engine).await, model.0);
    assert_eq!(engine.table_info(T).unwrap().index_entries, model.0.len());

    drop(engine);
    let engine = open(dir.path()).await;
    assert_eq!(committed(dir.path(), &engine).await, model.0);
    assert_eq!(engine.table_info(T).unwrap().index_entries, model.0.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncation_during_a_compaction_abandons_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    engine
        .create_table(CreateTable {
            name: T.into(),
            namespace: "b".into(),
            table: "kv".into(),
            schema: schema(),
            options: Default::default(),
        })
        .await
        .unwrap();
    let hold = engine.hold_next_compaction(T).unwrap();
    let mut model = Model(BTreeMap::new());
    for round in 0..3i64 {
        let ids: Vec<i64> = (round * 10..round * 10 + 10).collect();
        model
            .apply(&engine, Operation::Insert, &ids, "a", Durability::Committed)
            .await;
    }
    tokio::time::timeout(Duration::from_secs(60), hold.reached())
        .await
        .expect("the compactor should have started");
    engine.truncate(T, None).await.unwrap();
    model.0.clear();
    model
        .apply(
            &engine,
            Operation::Insert,
            &[1, 2, 3],
            "t",
            Durability::Committed,
        )
        .await;
    hold.release();
    engine.compact_now(T).await.unwrap();
    engine.commit(T).await.unwrap();
    // The rewritten rows must not come back.
    assert_eq!(committed(dir.path(), &engine).await, model.0);
    assert_eq!(engine.table_info(T).unwrap().index_entries, 3);
}
