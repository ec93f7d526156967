//! Issue 17 at the engine level: partitioned keyed tables (upserts moving rows across
//! partitions, restart with log replay) and schema changes with defaults read back from files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, ArrayRef, Int64Array, StringArray};
use iceberg::spec::DataContentType;
use moonlink_engine::inspect::{live_files, live_rows, load_metadata};
use moonlink_engine::{
    ChangeBatch, ColumnSchema, ColumnType, CreateTable, Durability, Engine, EngineConfig,
    EngineError, Operation, SchemaChange, TableConfig, TableOptions, TableSchema, Warehouse,
};

fn schema() -> TableSchema {
    let col = |name: &str, data_type, nullable| ColumnSchema {
        name: name.into(),
        data_type,
        nullable,
    };
    TableSchema::new(
        vec![
            col("id", ColumnType::Int64, false),
            col("region", ColumnType::Utf8, true),
        ],
        vec!["id".into()],
    )
}

fn rows(schema: &TableSchema, op: Operation, rows: &[(i64, &str)]) -> ChangeBatch {
    ChangeBatch::from_columns(
        schema,
        vec![op; rows.len()],
        vec![
            (
                "id".into(),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            ),
            (
                "region".into(),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))) as ArrayRef,
            ),
        ],
    )
    .unwrap()
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

/// id → region of every live row, and the region of every live data file.
async fn state(dir: &std::path::Path, engine: &Engine) -> (BTreeMap<i64, String>, Vec<String>) {
    let warehouse = Warehouse::local(&dir.join("warehouse")).unwrap();
    let location = engine.table_info("p.t").unwrap().metadata_location;
    let schema = engine.table_schema("p.t").unwrap().arrow_schema();
    let mut live = BTreeMap::new();
    for (batch, row) in live_rows(&warehouse, &location, &schema).await.unwrap() {
        let id = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let region = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert!(
            live.insert(id.value(row), region.value(row).to_string())
                .is_none(),
            "a key is live twice"
        );
    }
    let io = warehouse.file_io();
    let metadata = load_metadata(&io, &location).await.unwrap();
    let mut regions = Vec::new();
    for file in live_files(&io, &metadata).await.unwrap() {
        if file.data_file.content_type() == DataContentType::Data {
            let value = file.data_file.partition().fields()[0].clone();
            regions.push(format!("{value:?}"));
        }
    }
    (live, regions)
}

#[tokio::test]
async fn upserts_move_rows_across_partitions_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).await.unwrap();
    let bad = engine
        .create_table(CreateTable {
            options: TableOptions {
                partition_by: vec!["day(region)".into()],
                ..Default::default()
            },
            name: "p.bad".into(),
            namespace: "p".into(),
            table: "bad".into(),
            schema: schema(),
        })
        .await
        .unwrap_err();
    assert!(matches!(bad, EngineError::InvalidPartition(_)), "{bad}");
    engine
        .create_table(CreateTable {
            options: TableOptions {
                partition_by: vec!["region".into()],
                ..Default::default()
            },
            name: "p.t".into(),
            namespace: "p".into(),
            table: "t".into(),
            schema: schema(),
        })
        .await
        .unwrap();
    let s = schema();
    let apply = |batch| engine.apply("p.t", batch, Durability::Logged);
    apply(rows(
        &s,
        Operation::Insert,
        &[(1, "eu"), (2, "us"), (3, "eu")],
    ))
    .await
    .unwrap();
    engine.commit("p.t").await.unwrap();
    let (live, regions) = state(dir.path(), &engine).await;
    assert_eq!(live.len(), 3);
    assert_eq!(regions.len(), 2, "one file per partition: {regions:?}");
    // Row 1 moves eu → us (committed), row 3 eu → ap (only in the log when we stop).
    apply(rows(&s, Operation::Upsert, &[(1, "us")]))
        .await
        .unwrap();
    engine.commit("p.t").await.unwrap();
    apply(rows(&s, Operation::Upsert, &[(3, "ap"), (2, "eu")]))
        .await
        .unwrap();
    drop(engine);
    let engine = Engine::open(config(dir.path())).await.unwrap();
    engine.commit("p.t").await.unwrap();
    let (live, regions) = state(dir.path(), &engine).await;
    let want: BTreeMap<i64, String> = [(1, "us"), (2, "eu"), (3, "ap")]
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    assert_eq!(live, want);
    assert!(regions.iter().any(|r| r.contains("ap")), "{regions:?}");
    // Compaction rewrites within partitions and the key index stays right.
    engine.optimize("p.t").await.unwrap();
    engine
        .apply(
            "p.t",
            rows(&s, Operation::Upsert, &[(1, "eu")]),
            Durability::Committed,
        )
        .await
        .unwrap();
    let (live, _) = state(dir.path(), &engine).await;
    assert_eq!(live.get(&1).map(String::as_str), Some("eu"));
    assert_eq!(live.len(), 3);
}

#[tokio::test]
async fn an_added_column_reads_its_default_in_old_files_and_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).await.unwrap();
    engine
        .create_table(CreateTable {
            options: Default::default(),
            name: "p.t".into(),
            namespace: "p".into(),
            table: "t".into(),
            schema: schema(),
        })
        .await
        .unwrap();
    let s = schema();
    engine
        .apply(
            "p.t",
            rows(&s, Operation::Insert, &[(1, "eu"), (2, "us")]),
            Durability::Logged,
        )
        .await
        .unwrap();
    let refused = engine
        .change_schema("p.t", &[SchemaChange::Drop("id".into())])
        .await
        .unwrap_err();
    assert!(
        matches!(refused, EngineError::KeyColumnChange(_)),
        "{refused}"
    );
    let evolved = engine
        .change_schema(
            "p.t",
            &[SchemaChange::Add {
                name: "score".into(),
                data_type: ColumnType::Int64,
                nullable: false,
                default: Some(serde_json::json!(42)),
            }],
        )
        .await
        .unwrap();
    // A row written without the new column gets its default too.
    engine
        .apply(
            "p.t",
            rows(&evolved, Operation::Upsert, &[(2, "ap"), (3, "us")]),
            Durability::Committed,
        )
        .await
        .unwrap();
    engine.optimize("p.t").await.unwrap();
    let warehouse = Warehouse::local(&dir.path().join("warehouse")).unwrap();
    let location = engine.table_info("p.t").unwrap().metadata_location;
    let mut scores = BTreeMap::new();
    for (batch, row) in live_rows(&warehouse, &location, &evolved.arrow_schema())
        .await
        .unwrap()
    {
        let id = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let score = batch
            .column(2)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert!(score.is_valid(row));
        scores.insert(id.value(row), score.value(row));
    }
    assert_eq!(scores, BTreeMap::from([(1, 42), (2, 42), (3, 42)]));
}
