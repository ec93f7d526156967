//! Engine end to end without HTTP or wasm: create, apply, commit, restart, read back.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, ArrayRef, Int64Array, StringArray};
use moonlink_engine::inspect::read_data_file;
use moonlink_engine::inspect::{live_files, load_metadata, COMMITTED_LSN_SUMMARY_KEY};
use moonlink_engine::Warehouse;
use moonlink_engine::{
    ChangeBatch, ColumnSchema, ColumnType, CreateTable, Durability, Engine, EngineConfig,
    EngineError, Operation, TableConfig, TableSchema,
};

fn schema() -> TableSchema {
    TableSchema::new(
        vec![
            ColumnSchema {
                name: "id".into(),
                data_type: ColumnType::Int64,
                nullable: false,
            },
            ColumnSchema {
                name: "name".into(),
                data_type: ColumnType::Utf8,
                nullable: true,
            },
        ],
        vec![],
    )
}

fn batch(ids: std::ops::Range<i64>) -> ChangeBatch {
    let names: Vec<String> = ids.clone().map(|i| format!("name-{i}")).collect();
    ChangeBatch::from_columns(
        &schema(),
        vec![Operation::Insert; ids.clone().count()],
        vec![
            (
                "id".into(),
                Arc::new(Int64Array::from_iter_values(ids)) as ArrayRef,
            ),
            (
                "name".into(),
                Arc::new(StringArray::from(names)) as ArrayRef,
            ),
        ],
    )
    .unwrap()
}

fn config(dir: &std::path::Path, merge_fanout: usize) -> EngineConfig {
    EngineConfig {
        data_dir: dir.to_path_buf(),
        table: TableConfig {
            // Long interval: commits in these tests happen only when asked for.
            commit_interval: Duration::from_secs(3600),
            merge_fanout,
            ..TableConfig::default()
        },
        catalog: None,
    }
}

async fn create(engine: &Engine) {
    engine
        .create_table(CreateTable {
            options: Default::default(),
            name: "demo.users".into(),
            namespace: "demo".into(),
            table: "users".into(),
            schema: schema(),
        })
        .await
        .unwrap();
}

/// All ids in the table's current snapshot, read straight from its data files.
async fn committed_ids(dir: &std::path::Path, engine: &Engine) -> Vec<i64> {
    let warehouse = Warehouse::local(&dir.join("warehouse")).unwrap();
    let io = warehouse.file_io();
    let info = engine.table_info("demo.users").unwrap();
    let metadata = load_metadata(&io, &info.metadata_location).await.unwrap();
    let mut ids = Vec::new();
    for file in live_files(&io, &metadata).await.unwrap() {
        if file.data_file.content_type() != iceberg::spec::DataContentType::Data {
            continue;
        }
        for b in read_data_file(
            &warehouse,
            file.data_file.file_path(),
            &schema().arrow_schema(),
        )
        .await
        .unwrap()
        {
            let col = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            ids.extend(col.values().iter().copied());
        }
    }
    ids.sort();
    ids
}

#[tokio::test]
async fn committed_rows_are_in_a_v3_snapshot_with_committed_lsn() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), 8)).await.unwrap();
    create(&engine).await;
    engine
        .apply("demo.users", batch(0..10), Durability::Logged)
        .await
        .unwrap();
    let receipt = engine
        .apply("demo.users", batch(10..20), Durability::Committed)
        .await
        .unwrap();
    assert_eq!(receipt.lsn, 2);
    assert!(receipt.snapshot_id.is_some());
    assert_eq!(
        committed_ids(dir.path(), &engine).await,
        (0..20).collect::<Vec<_>>()
    );

    let io = Warehouse::local(&dir.path().join("warehouse"))
        .unwrap()
        .file_io();
    let metadata = load_metadata(&io, receipt.metadata_location.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(metadata.format_version(), iceberg::spec::FormatVersion::V3);
    assert_eq!(metadata.next_row_id(), 20);
    let summary = &metadata
        .current_snapshot()
        .unwrap()
        .summary()
        .additional_properties;
    assert_eq!(summary[COMMITTED_LSN_SUMMARY_KEY], "2");
    assert_eq!(summary["total-records"], "20");
}

#[tokio::test]
async fn unknown_table_and_upsert_without_key_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), 8)).await.unwrap();
    assert!(matches!(
        engine.apply("nope", batch(0..1), Durability::Logged).await,
        Err(EngineError::TableNotFound(_))
    ));
    create(&engine).await;
    let upsert = ChangeBatch::from_columns(
        &schema(),
        vec![Operation::Upsert],
        vec![("id".into(), Arc::new(Int64Array::from(vec![1])) as ArrayRef)],
    )
    .unwrap();
    assert!(matches!(
        engine.apply("demo.users", upsert, Durability::Logged).await,
        Err(EngineError::OperationNotAllowed(_))
    ));
    assert!(matches!(
        engine
            .create_table(CreateTable {
                options: Default::default(),
                name: "demo.users".into(),
                namespace: "demo".into(),
                table: "other".into(),
                schema: schema(),
            })
            .await,
        Err(EngineError::TableExists(_))
    ));
}

#[tokio::test]
async fn logged_rows_survive_a_crash_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(config(dir.path(), 8)).await.unwrap();
        create(&engine).await;
        engine
            .apply("demo.users", batch(0..5), Durability::Committed)
            .await
            .unwrap();
        engine
            .apply("demo.users", batch(5..8), Durability::Logged)
            .await
            .unwrap();
        // No shutdown: the process "dies" with rows 5..8 only in the write-ahead log.
    }
    let engine = Engine::open(config(dir.path(), 8)).await.unwrap();
    assert_eq!(engine.table_info("demo.users").unwrap().buffered_rows, 3);
    engine.commit("demo.users").await.unwrap();
    assert_eq!(
        committed_ids(dir.path(), &engine).await,
        (0..8).collect::<Vec<_>>()
    );
    // A second restart must not replay the committed rows again.
    drop(engine);
    let engine = Engine::open(config(dir.path(), 8)).await.unwrap();
    assert_eq!(engine.table_info("demo.users").unwrap().buffered_rows, 0);
    engine
        .apply("demo.users", batch(8..9), Durability::Committed)
        .await
        .unwrap();
    assert_eq!(
        committed_ids(dir.path(), &engine).await,
        (0..9).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn trickle_commits_merge_small_files() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), 4)).await.unwrap();
    create(&engine).await;
    for i in 0..20 {
        engine
            .apply(
                "demo.users",
                batch(i * 10..i * 10 + 10),
                Durability::Committed,
            )
            .await
            .unwrap();
        // Small files are merged by the background compactor, off the commit path: wait for
        // the pass this commit started (or run it).
        engine.compact_now("demo.users").await.unwrap();
        let files = engine.table_info("demo.users").unwrap().data_files;
        assert!(files < 4, "commit {i}: {files} data files alive");
    }
    assert_eq!(
        committed_ids(dir.path(), &engine).await,
        (0..200).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn dropped_table_disappears_and_name_is_reusable() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), 8)).await.unwrap();
    create(&engine).await;
    engine
        .apply("demo.users", batch(0..3), Durability::Committed)
        .await
        .unwrap();
    engine.drop_table("demo.users").await.unwrap();
    assert!(engine.list_tables().is_empty());
    assert!(!dir.path().join("warehouse/demo/users/data").exists());
    create(&engine).await;
    assert_eq!(engine.table_info("demo.users").unwrap().total_records, 0);
    drop(engine);
    let engine = Engine::open(config(dir.path(), 8)).await.unwrap();
    assert_eq!(engine.list_tables().len(), 1);
}

fn keyed_schema() -> TableSchema {
    TableSchema::new(schema().columns, vec!["id".into()])
}

fn keyed_batch(op: Operation, ids: &[i64]) -> ChangeBatch {
    let mut columns = vec![(
        "id".to_string(),
        Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef,
    )];
    if op != Operation::Delete {
        columns.push((
            "name".into(),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("n{i}")),
            )) as ArrayRef,
        ));
    }
    ChangeBatch::from_columns(&keyed_schema(), vec![op; ids.len()], columns).unwrap()
}

/// Every live row of the committed snapshot, as (batch, row): data files read in `schema`
/// (by field id) minus the positions their deletion vectors mask.
async fn live_rows(
    dir: &std::path::Path,
    engine: &Engine,
    table: &str,
    schema: &arrow_schema::SchemaRef,
) -> Vec<(arrow_array::RecordBatch, usize)> {
    let warehouse = Warehouse::local(&dir.join("warehouse")).unwrap();
    let location = engine.table_info(table).unwrap().metadata_location;
    moonlink_engine::inspect::live_rows(&warehouse, &location, schema)
        .await
        .unwrap()
}

async fn create_keyed(engine: &Engine) {
    engine
        .create_table(CreateTable {
            options: Default::default(),
            name: "demo.keyed".into(),
            namespace: "demo".into(),
            table: "keyed".into(),
            schema: keyed_schema(),
        })
        .await
        .unwrap();
}

/// Live ids of the committed snapshot: data files minus their deletion vectors.
async fn live_ids(dir: &std::path::Path, engine: &Engine, table: &str) -> Vec<i64> {
    let mut ids: Vec<i64> = live_rows(dir, engine, table, &keyed_schema().arrow_schema())
        .await
        .into_iter()
        .map(|(b, i)| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(i)
        })
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_landing_during_compaction_still_hold() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 3);
    cfg.table.rewrite_deleted_fraction = 0.2;
    let engine = Engine::open(cfg).await.unwrap();
    create_keyed(&engine).await;
    let inserted = Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let deleter = {
        let (engine, inserted, stop) = (engine.clone(), inserted.clone(), stop.clone());
        tokio::spawn(async move {
            let mut deleted = Vec::new();
            let mut turn = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let victim = {
                    let ids = inserted.lock().unwrap();
                    turn += 7;
                    (!ids.is_empty()).then(|| ids[turn % ids.len()])
                };
                if let Some(id) = victim.filter(|v| !deleted.contains(v)) {
                    let r = engine
                        .apply(
                            "demo.keyed",
                            keyed_batch(Operation::Delete, &[id]),
                            Durability::Logged,
                        )
                        .await
                        .unwrap();
                    assert_eq!(r.matched, 1, "key {id} should be live");
                    deleted.push(id);
                }
                tokio::task::yield_now().await;
            }
            deleted
        })
    };
    for round in 0..40i64 {
        let ids: Vec<i64> = (round * 20..round * 20 + 20).collect();
        engine
            .apply(
                "demo.keyed",
                keyed_batch(Operation::Insert, &ids),
                Durability::Committed,
            )
            .await
            .unwrap();
        inserted.lock().unwrap().extend(ids);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let deleted = deleter.await.unwrap();
    engine.commit("demo.keyed").await.unwrap();
    let mut want: Vec<i64> = (0..800).filter(|i| !deleted.contains(i)).collect();
    want.sort();
    assert!(
        deleted.len() > 20,
        "the deleter should have raced the commits"
    );
    assert_eq!(live_ids(dir.path(), &engine, "demo.keyed").await, want);
    let info = engine.table_info("demo.keyed").unwrap();
    assert!(
        info.data_files < 10,
        "{} files after 40 commits",
        info.data_files
    );
    assert_eq!(info.index_entries, want.len());
    // And after a restart, the rebuilt state agrees.
    drop(engine);
    let engine = Engine::open(config(dir.path(), 3)).await.unwrap();
    assert_eq!(
        engine.table_info("demo.keyed").unwrap().index_entries,
        want.len()
    );
    assert_eq!(live_ids(dir.path(), &engine, "demo.keyed").await, want);
}

/// (id, score) of every live row, read with the table's current schema (by field id).
async fn live_scores(dir: &std::path::Path, engine: &Engine) -> Vec<(i64, Option<i64>)> {
    let schema = engine.table_schema("demo.keyed").unwrap();
    let (id, score) = (
        schema.column_index("id").unwrap(),
        schema.column_index("score").unwrap(),
    );
    let int = |b: &arrow_array::RecordBatch, c: usize| {
        b.column(c)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .clone()
    };
    let mut rows: Vec<(i64, Option<i64>)> =
        live_rows(dir, engine, "demo.keyed", &schema.arrow_schema())
            .await
            .into_iter()
            .map(|(b, i)| {
                let scores = int(&b, score);
                (
                    int(&b, id).value(i),
                    scores.is_valid(i).then(|| scores.value(i)),
                )
            })
            .collect();
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_evolution_truncate_and_unchanged_values() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), 3)).await.unwrap();
    create_keyed(&engine).await;
    for ids in [[1, 2], [3, 4]] {
        engine
            .apply(
                "demo.keyed",
                keyed_batch(Operation::Upsert, &ids),
                Durability::Logged,
            )
            .await
            .unwrap();
        engine.commit("demo.keyed").await.unwrap();
    }
    // ADD COLUMN score, DROP COLUMN name.
    let evolved = engine
        .evolve_table(
            "demo.keyed",
            vec![
                ColumnSchema {
                    name: "id".into(),
                    data_type: ColumnType::Int64,
                    nullable: false,
                },
                ColumnSchema {
                    name: "score".into(),
                    data_type: ColumnType::Int64,
                    nullable: true,
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(evolved.field_ids, vec![1, 3], "ids are never reused");
    let upsert = |ids: &[i64], scores: &[i64], unchanged: Option<Vec<bool>>| {
        ChangeBatch::from_columns_keeping(
            &evolved,
            vec![Operation::Upsert; ids.len()],
            vec![
                (
                    "id".into(),
                    Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef,
                ),
                (
                    "score".into(),
                    Arc::new(Int64Array::from(scores.to_vec())) as ArrayRef,
                ),
            ],
            unchanged
                .map(|m| vec![("score".to_string(), m)])
                .unwrap_or_default(),
        )
        .unwrap()
    };
    engine
        .apply(
            "demo.keyed",
            upsert(&[2, 5], &[20, 50], None),
            Durability::Logged,
        )
        .await
        .unwrap();
    // Files written before and after the change are merged, read by field id.
    engine.optimize("demo.keyed").await.unwrap();
    assert_eq!(
        live_scores(dir.path(), &engine).await,
        vec![
            (1, None),
            (2, Some(20)),
            (3, None),
            (4, None),
            (5, Some(50))
        ]
    );
    // An upsert that does not send `score` keeps the committed value (from a data file) and
    // one set earlier in the same batch.
    engine
        .apply(
            "demo.keyed",
            upsert(&[5, 6, 6], &[0, 60, 0], Some(vec![true, false, true])),
            Durability::Logged,
        )
        .await
        .unwrap();
    engine.commit("demo.keyed").await.unwrap();
    assert_eq!(
        live_scores(dir.path(), &engine).await,
        vec![
            (1, None),
            (2, Some(20)),
            (3, None),
            (4, None),
            (5, Some(50)),
            (6, Some(60))
        ]
    );
    // The evolved schema survives a restart.
    drop(engine);
    let engine = Engine::open(config(dir.path(), 3)).await.unwrap();
    assert_eq!(engine.table_schema("demo.keyed").unwrap(), evolved);
    // TRUNCATE removes everything, including rows still buffered; keys are free again.
    engine
        .apply("demo.keyed", upsert(&[7], &[70], None), Durability::Logged)
        .await
        .unwrap();
    engine.truncate("demo.keyed", None).await.unwrap();
    assert!(live_scores(dir.path(), &engine).await.is_empty());
    engine
        .apply("demo.keyed", upsert(&[1], &[1], None), Durability::Logged)
        .await
        .unwrap();
    engine.commit("demo.keyed").await.unwrap();
    drop(engine);
    let engine = Engine::open(config(dir.path(), 3)).await.unwrap();
    assert_eq!(live_scores(dir.path(), &engine).await, vec![(1, Some(1))]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_after_truncate_hit_the_right_files() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path(), 8)).await.unwrap();
    create_keyed(&engine).await;
    engine.truncate("demo.keyed", None).await.unwrap();
    let all: Vec<i64> = (1..=3000).collect();
    engine
        .apply(
            "demo.keyed",
            keyed_batch(Operation::Upsert, &all),
            Durability::Logged,
        )
        .await
        .unwrap();
    engine.commit("demo.keyed").await.unwrap();
    let tens: Vec<i64> = (1..=300).map(|i| i * 10).collect();
    engine
        .apply(
            "demo.keyed",
            keyed_batch(Operation::Upsert, &tens),
            Durability::Logged,
        )
        .await
        .unwrap();
    engine.commit("demo.keyed").await.unwrap();
    let gone: Vec<i64> = (100..200).collect();
    engine
        .apply(
            "demo.keyed",
            keyed_batch(Operation::Delete, &gone),
            Durability::Logged,
        )
        .await
        .unwrap();
    engine.commit("demo.keyed").await.unwrap();
    let want: Vec<i64> = (1..=3000).filter(|i| !(100..200).contains(i)).collect();
    assert_eq!(live_ids(dir.path(), &engine, "demo.keyed").await, want);
}

/// A source applying faster than commits write Parquet is paced by them: its buffer never
/// passes twice `max_buffer_bytes` (an initial copy larger than memory stays bounded), and
/// every row still commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_is_paced_by_commits_within_twice_the_buffer_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 32 * 1024;
    let mut cfg = config(dir.path(), usize::MAX);
    cfg.table.max_buffer_bytes = limit;
    let engine = Engine::open(cfg).await.unwrap();
    create(&engine).await;
    let mut largest = 0;
    for i in 0..200i64 {
        engine
            .apply_from_source(
                "demo.users",
                batch(i * 500..(i + 1) * 500),
                moonlink_engine::SourceCheckpoint {
                    source: "copy".into(),
                    position: i.to_string(),
                },
            )
            .await
            .unwrap();
        largest = largest.max(engine.table_info("demo.users").unwrap().buffered_bytes);
    }
    assert!(
        largest < 2 * limit,
        "buffer reached {largest} bytes with a {limit}-byte limit"
    );
    engine.commit("demo.users").await.unwrap();
    let ids = committed_ids(dir.path(), &engine).await;
    assert_eq!(ids, (0..100_000).collect::<Vec<_>>());
}
