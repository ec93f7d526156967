//! The engine under hostile input and damaged state: nothing that reaches the write-ahead log
//! can fail a commit, one damaged table never keeps the others down, one process per data
//! directory.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Decimal128Array, Int64Array, StringArray, Time64MicrosecondArray};
use moonlink_engine::{
    ChangeBatch, ColumnSchema, ColumnType, CreateTable, Durability, Engine, EngineConfig,
    EngineError, Operation, TableConfig, TableSchema,
};

fn column(name: &str, data_type: ColumnType, nullable: bool) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        data_type,
        nullable,
    }
}

fn schema(columns: Vec<ColumnSchema>, key: &[&str]) -> TableSchema {
    TableSchema::new(columns, key.iter().map(|k| k.to_string()).collect())
}

fn users() -> TableSchema {
    schema(
        vec![
            column("id", ColumnType::Int64, false),
            column("name", ColumnType::Utf8, true),
        ],
        &[],
    )
}

fn config(dir: &std::path::Path) -> EngineConfig {
    EngineConfig {
        data_dir: dir.to_path_buf(),
        table: TableConfig {
            commit_interval: Duration::from_secs(3600),
            ..TableConfig::default()
        },
        catalog: None,
    }
}

async fn create(engine: &Engine, name: &str, schema: TableSchema) -> Result<(), EngineError> {
    let (namespace, table) = name.split_once('.').unwrap();
    engine
        .create_table(CreateTable {
            options: Default::default(),
            name: name.into(),
            namespace: namespace.into(),
            table: table.into(),
            schema,
        })
        .await
        .map(|_| ())
}

fn ids(schema: &TableSchema, ids: &[i64]) -> ChangeBatch {
    ChangeBatch::from_columns(
        schema,
        vec![Operation::Insert; ids.len()],
        vec![(
            "id".into(),
            Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef,
        )],
    )
    .unwrap()
}

#[tokio::test]
async fn a_batch_decoded_before_a_drop_and_recreate_is_refused_before_the_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        create(&engine, "demo.t", users()).await.unwrap();
        // Decoded against the old shape (two columns) ...
        let stale = ChangeBatch::from_columns(
            &users(),
            vec![Operation::Insert],
            vec![
                ("id".into(), Arc::new(Int64Array::from(vec![1])) as ArrayRef),
                (
                    "name".into(),
                    Arc::new(StringArray::from(vec!["a"])) as ArrayRef,
                ),
            ],
        )
        .unwrap();
        // ... while the table is dropped and recreated with one column.
        engine.drop_table("demo.t").await.unwrap();
        let one = schema(vec![column("id", ColumnType::Int64, false)], &[]);
        create(&engine, "demo.t", one.clone()).await.unwrap();
        let err = engine
            .apply("demo.t", stale, Durability::Logged)
            .await
            .unwrap_err();
        assert!(matches!(err, EngineError::SchemaChanged(_)), "{err}");
        engine
            .apply("demo.t", ids(&one, &[7]), Durability::Logged)
            .await
            .unwrap();
        // The process dies before any commit.
    }
    let engine = Engine::open(config(dir.path())).await.unwrap();
    let info = engine.table_info("demo.t").unwrap();
    assert!(!info.failed);
    assert_eq!(info.buffered_rows, 1);
    engine.commit("demo.t").await.unwrap();
    assert_eq!(engine.table_info("demo.t").unwrap().total_records, 1);
}

#[tokio::test]
async fn values_a_commit_would_refuse_are_refused_at_the_batch() {
    let times = schema(vec![column("t", ColumnType::Time, true)], &[]);
    for bad in [-5i64, 86_400_000_000, 1_000_000_000_000_000] {
        let err = ChangeBatch::from_columns(
            &times,
            vec![Operation::Insert; 2],
            vec![(
                "t".into(),
                Arc::new(Time64MicrosecondArray::from(vec![0, bad])) as ArrayRef,
            )],
        )
        .unwrap_err();
        match err {
            EngineError::InvalidBatch {
                row,
                column,
                message,
            } => {
                assert_eq!((row, column.as_deref()), (Some(1), Some("t")));
                assert!(message.contains("outside a day"), "{message}");
            }
            other => panic!("{other}"),
        }
    }
    // In a list, an element outside a day names the list's row.
    let timed_lists = schema(
        vec![column(
            "ts",
            ColumnType::List(Box::new(ColumnType::Time)),
            true,
        )],
        &[],
    );
    let arrow_schema::DataType::List(element) = timed_lists.arrow_type(0) else {
        panic!("a list column has a list type")
    };
    let lists = arrow_array::ListArray::new(
        element,
        arrow_buffer::OffsetBuffer::new(vec![0, 1, 3].into()),
        Arc::new(Time64MicrosecondArray::from(vec![0, 1, -5])),
        None,
    );
    let err = ChangeBatch::from_columns(
        &timed_lists,
        vec![Operation::Insert; 2],
        vec![("ts".into(), Arc::new(lists) as ArrayRef)],
    )
    .unwrap_err();
    assert!(
        matches!(&err, EngineError::InvalidBatch { row: Some(1), message, .. } if message.contains("outside a day")),
        "{err}"
    );
    let decimals = schema(
        vec![column(
            "d",
            ColumnType::Decimal {
                precision: 4,
                scale: 2,
            },
            true,
        )],
        &[],
    );
    let wide = Decimal128Array::from(vec![9999, 10000])
        .with_precision_and_scale(4, 2)
        .unwrap();
    let err = ChangeBatch::from_columns(
        &decimals,
        vec![Operation::Insert; 2],
        vec![("d".into(), Arc::new(wide) as ArrayRef)],
    )
    .unwrap_err();
    assert!(
        matches!(&err, EngineError::InvalidBatch { row: Some(1), .. }),
        "{err}"
    );

    // The largest time of a day is accepted and commits.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).await.unwrap();
    create(&engine, "demo.times", times.clone()).await.unwrap();
    let ok = ChangeBatch::from_columns(
        &times,
        vec![Operation::Insert],
        vec![(
            "t".into(),
            Arc::new(Time64MicrosecondArray::from(vec![86_399_999_999])) as ArrayRef,
        )],
    )
    .unwrap();
    engine
        .apply("demo.times", ok, Durability::Committed)
        .await
        .unwrap();
}

#[tokio::test]
async fn key_types_iceberg_refuses_are_refused_and_time_keys_work() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).await.unwrap();
    for ty in [ColumnType::Float32, ColumnType::Float64] {
        let err = create(
            &engine,
            "demo.f",
            schema(vec![column("k", ty, false)], &["k"]),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, EngineError::InvalidSchema(_)), "{err}");
    }
    let timed = schema(
        vec![
            column("at", ColumnType::Time, false),
            column("v", ColumnType::Int64, true),
        ],
        &["at"],
    );
    create(&engine, "demo.timed", timed.clone()).await.unwrap();
    let batch = |op: Operation, at: Vec<i64>, v: Vec<i64>| {
        ChangeBatch::from_columns(
            &timed,
            vec![op; at.len()],
            vec![
                (
                    "at".into(),
                    Arc::new(Time64MicrosecondArray::from(at)) as ArrayRef,
                ),
                ("v".into(), Arc::new(Int64Array::from(v)) as ArrayRef),
            ],
        )
        .unwrap()
    };
    engine
        .apply(
            "demo.timed",
            batch(Operation::Upsert, vec![1, 2], vec![1, 2]),
            Durability::Committed,
        )
        .await
        .unwrap();
    let receipt = engine
        .apply(
            "demo.timed",
            batch(Operation::Upsert, vec![2], vec![20]),
            Durability::Committed,
        )
        .await
        .unwrap();
    assert_eq!(receipt.matched, 1);
    let info = engine.table_info("demo.timed").unwrap();
    assert_eq!(info.total_records - info.deleted_rows, 2);
}

#[tokio::test]
async fn a_column_iceberg_cannot_name_is_refused_and_a_failed_evolution_keeps_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).await.unwrap();
    let list = column("l", ColumnType::List(Box::new(ColumnType::Int64)), true);
    let clash = column("l.element", ColumnType::Int64, true);
    let err = create(
        &engine,
        "demo.bad",
        schema(vec![list.clone(), clash.clone()], &[]),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, EngineError::InvalidSchema(_)), "{err}");

    let start = schema(
        vec![column("id", ColumnType::Int64, false), list.clone()],
        &[],
    );
    create(&engine, "demo.l", start.clone()).await.unwrap();
    let err = engine
        .evolve_table("demo.l", vec![start.columns[0].clone(), list, clash])
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::InvalidSchema(_)), "{err}");
    // Still open for writes.
    engine
        .apply("demo.l", ids(&start, &[1]), Durability::Committed)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_damaged_log_fails_its_table_and_the_others_serve() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(config(dir.path())).await.unwrap();
        for name in ["demo.a", "demo.b"] {
            create(&engine, name, users()).await.unwrap();
        }
        for i in 0..3 {
            engine
                .apply("demo.a", ids(&users(), &[i]), Durability::Logged)
                .await
                .unwrap();
        }
        engine
            .apply("demo.b", ids(&users(), &[100]), Durability::Logged)
            .await
            .unwrap();
    }
    // Damage the length of demo.a's first record (its log is the larger one): valid records
    // follow, so replay cannot tell what was lost and must not guess.
    let wal_root = dir.path().join("cache/wal");
    let mut segments: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(&wal_root)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .map(|p| (std::fs::metadata(&p).unwrap().len(), p))
        .collect();
    segments.sort();
    let (_, victim) = segments.pop().unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[1] ^= 0x40;
    std::fs::write(&victim, bytes).unwrap();

    let engine = Engine::open(config(dir.path())).await.unwrap();
    let a = engine.table_info("demo.a").unwrap();
    assert!(a.failed);
    assert!(a.last_error.unwrap().contains("corrupt"));
    assert!(engine
        .list_tables()
        .iter()
        .any(|t| t.name == "demo.a" && t.failed));
    let err = engine
        .apply("demo.a", ids(&users(), &[9]), Durability::Logged)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::TableFailed { .. }), "{err}");
    assert!(matches!(
        create(&engine, "demo.a", users()).await,
        Err(EngineError::TableExists(_))
    ));
    // The other table replayed its record and works.
    assert_eq!(engine.table_info("demo.b").unwrap().buffered_rows, 1);
    engine
        .apply("demo.b", ids(&users(), &[101]), Durability::Committed)
        .await
        .unwrap();
    // The failed table can be dropped and its name reused.
    engine.drop_table("demo.a").await.unwrap();
    create(&engine, "demo.a", users()).await.unwrap();
}

#[tokio::test]
async fn a_second_engine_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Engine::open(config(dir.path())).await.unwrap();
    let err = Engine::open(config(dir.path())).await.err().unwrap();
    assert!(matches!(err, EngineError::DataDirLocked(_)), "{err}");
    assert!(err.to_string().contains("another moonlink-host"));
    drop(first);
    Engine::open(config(dir.path())).await.unwrap();
}
