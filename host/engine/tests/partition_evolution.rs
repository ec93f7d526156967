//! Issue 17, partition evolution of keyed tables: a table partitioned by `bucket(4, id)` is
//! evolved to `region`; upserts and deletes hit the old-spec files (their deletion vectors are
//! in the old spec), restarts come in between, and compaction moves the old-spec files into
//! the new spec. After every step the live rows equal a model.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Int64Array, StringArray};
use iceberg::spec::{DataContentType, Literal, PrimitiveLiteral};
use moonlink_engine::inspect::{live_files, live_rows, load_metadata, read_data_file};
use moonlink_engine::{
    ChangeBatch, ColumnSchema, ColumnType, CreateTable, Durability, Engine, EngineConfig,
    Operation, TableConfig, TableOptions, TableSchema, Warehouse,
};

type Model = BTreeMap<i64, String>;

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

fn batch(op: Operation, rows: &[(i64, &str)]) -> ChangeBatch {
    ChangeBatch::from_columns(
        &schema(),
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

async fn create(engine: &Engine, name: &str, compaction: Option<bool>) {
    let (namespace, table) = name.split_once('.').unwrap();
    engine
        .create_table(CreateTable {
            options: TableOptions {
                partition_by: vec!["bucket(4, id)".into()],
                compaction,
                ..Default::default()
            },
            name: name.into(),
            namespace: namespace.into(),
            table: table.into(),
            schema: schema(),
        })
        .await
        .unwrap();
}

/// Applies `rows` as `op` to the engine and the model.
async fn apply(
    engine: &Engine,
    model: &mut Model,
    op: Operation,
    rows: &[(i64, &str)],
    durability: Durability,
) {
    engine
        .apply("p.t", batch(op, rows), durability)
        .await
        .unwrap();
    for (id, region) in rows {
        match op {
            Operation::Delete => model.remove(id),
            _ => model.insert(*id, region.to_string()),
        };
    }
}

/// One live file as the snapshot's manifests describe it.
#[derive(Debug)]
struct File {
    path: String,
    spec_id: i32,
    partition: iceberg::spec::Struct,
    /// Deletion vectors: the data file they point at.
    references: Option<String>,
}

/// The live rows (id → region; a key live twice fails) and the live files of table `name`.
async fn snapshot(dir: &std::path::Path, engine: &Engine, name: &str) -> (Model, Vec<File>) {
    let warehouse = Warehouse::local(&dir.join("warehouse")).unwrap();
    let location = engine.table_info(name).unwrap().metadata_location;
    let arrow_schema = schema().arrow_schema();
    let mut live = Model::new();
    for (batch, row) in live_rows(&warehouse, &location, &arrow_schema)
        .await
        .unwrap()
    {
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let regions = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let id = ids.value(row);
        assert!(
            live.insert(id, regions.value(row).to_string()).is_none(),
            "key {id} is live twice"
        );
    }
    let io = warehouse.file_io();
    let metadata = load_metadata(&io, &location).await.unwrap();
    let files = live_files(&io, &metadata)
        .await
        .unwrap()
        .into_iter()
        .map(|f| File {
            path: f.data_file.file_path().to_string(),
            spec_id: f.spec_id,
            partition: f.data_file.partition().clone(),
            references: (f.data_file.content_type() != DataContentType::Data)
                .then(|| f.data_file.referenced_data_file())
                .flatten(),
        })
        .collect();
    (live, files)
}

/// Checks every invariant of the files: each data file's rows are in its partition (spec 0:
/// `bucket(4, id)`, spec 1: `region`), and each deletion vector is in the spec and partition
/// of the live data file it points at. Returns the spec ids of the live data files.
async fn check_files(dir: &std::path::Path, files: &[File]) -> Vec<i32> {
    let warehouse = Warehouse::local(&dir.join("warehouse")).unwrap();
    let data: HashMap<&str, &File> = files
        .iter()
        .filter(|f| f.references.is_none())
        .map(|f| (f.path.as_str(), f))
        .collect();
    for file in files {
        if let Some(referenced) = &file.references {
            let target = data
                .get(referenced.as_str())
                .unwrap_or_else(|| panic!("deletion vector for a dead file {referenced}"));
            assert_eq!(
                (file.spec_id, &file.partition),
                (target.spec_id, &target.partition),
                "a deletion vector is in its data file's spec and partition"
            );
        }
    }
    let mut specs = Vec::new();
    for file in data.values() {
        specs.push(file.spec_id);
        let value = file.partition.fields()[0].clone();
        for batch in read_data_file(&warehouse, &file.path, &schema().arrow_schema())
            .await
            .unwrap()
        {
            let ids = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            let regions = batch
                .column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            for row in 0..batch.num_rows() {
                match file.spec_id {
                    // An old-spec file: one bucket, so its ids are not all in one region.
                    0 => assert!(
                        matches!(value, Some(Literal::Primitive(PrimitiveLiteral::Int(b))) if (0..4).contains(&b)),
                        "{value:?}"
                    ),
                    _ => assert_eq!(
                        value,
                        Some(Literal::string(regions.value(row))),
                        "row {} in file {}",
                        ids.value(row),
                        file.path
                    ),
                }
            }
        }
    }
    specs.sort();
    specs.dedup();
    specs
}

fn rows_of(ids: std::ops::Range<i64>) -> Vec<(i64, &'static str)> {
    ids.map(|i| (i, ["eu", "us", "ap"][i as usize % 3]))
        .collect()
}

#[tokio::test]
async fn keyed_table_evolves_its_partitioning_with_old_spec_deletes_restarts_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).await.unwrap();
    // Background compaction off: the old-spec files stay until `optimize`.
    create(&engine, "p.t", Some(false)).await;
    let mut model = Model::new();
    let all = rows_of(0..40);
    apply(
        &engine,
        &mut model,
        Operation::Insert,
        &all,
        Durability::Committed,
    )
    .await;
    // The background compactor moves them after the commit: wait for it.
    engine.compact_now("p.t").await.unwrap();
    let (live, files) = snapshot(dir.path(), &engine, "p.t").await;
    assert_eq!(live, model);
    assert_eq!(check_files(dir.path(), &files).await, [0]);
    assert_eq!(files.len(), 4, "one file per bucket: {files:?}");

    engine
        .change_partitioning("p.t", &["region".into()])
        .await
        .unwrap();
    // Upserts move old rows into new-spec files (their old rows deleted by deletion vectors
    // in the old spec), a delete hits an old-spec file, and new keys land in the new spec.
    apply(
        &engine,
        &mut model,
        Operation::Upsert,
        &[(0, "us"), (1, "eu"), (5, "ap"), (40, "eu"), (41, "us")],
        Durability::Logged,
    )
    .await;
    apply(
        &engine,
        &mut model,
        Operation::Delete,
        &[(2, ""), (3, ""), (40, "")],
        Durability::Committed,
    )
    .await;
    let (live, files) = snapshot(dir.path(), &engine, "p.t").await;
    assert_eq!(live, model);
    assert_eq!(check_files(dir.path(), &files).await, [0, 1]);
    let old_spec_dvs = files
        .iter()
        .filter(|f| f.references.is_some() && f.spec_id == 0)
        .count();
    assert!(
        old_spec_dvs > 0,
        "deletes of old rows are in spec 0: {files:?}"
    );

    // More changes to old rows, only in the log when the engine stops.
    apply(
        &engine,
        &mut model,
        Operation::Upsert,
        &[(6, "eu"), (7, "zz"), (41, "ap")],
        Durability::Logged,
    )
    .await;
    apply(
        &engine,
        &mut model,
        Operation::Delete,
        &[(8, ""), (0, "")],
        Durability::Logged,
    )
    .await;
    drop(engine);
    let engine = Engine::open(config(dir.path())).await.unwrap();
    engine.commit("p.t").await.unwrap();
    let (live, files) = snapshot(dir.path(), &engine, "p.t").await;
    assert_eq!(live, model);
    assert_eq!(check_files(dir.path(), &files).await, [0, 1]);
    // Upserts after the restart find old-spec rows through the rebuilt key index.
    apply(
        &engine,
        &mut model,
        Operation::Upsert,
        &[(9, "us"), (10, "us"), (6, "ap")],
        Durability::Committed,
    )
    .await;
    let (live, _) = snapshot(dir.path(), &engine, "p.t").await;
    assert_eq!(live, model);

    // Compaction moves every old-spec file into the new spec, one file per region.
    engine.optimize("p.t").await.unwrap();
    // The background compactor moves them after the commit: wait for it.
    engine.compact_now("p.t").await.unwrap();
    let (live, files) = snapshot(dir.path(), &engine, "p.t").await;
    assert_eq!(live, model);
    assert_eq!(check_files(dir.path(), &files).await, [1]);
    assert!(files.iter().all(|f| f.spec_id == 1), "{files:?}");
    // The key index follows the rewrite: changes hit the compacted files, before and after
    // a restart.
    apply(
        &engine,
        &mut model,
        Operation::Upsert,
        &[(11, "eu"), (12, "ap"), (1, "us")],
        Durability::Committed,
    )
    .await;
    apply(
        &engine,
        &mut model,
        Operation::Delete,
        &[(13, ""), (14, "")],
        Durability::Logged,
    )
    .await;
    drop(engine);
    let engine = Engine::open(config(dir.path())).await.unwrap();
    apply(
        &engine,
        &mut model,
        Operation::Upsert,
        &[(15, "eu"), (13, "us")],
        Durability::Committed,
    )
    .await;
    // The background compactor moves them after the commit: wait for it.
    engine.compact_now("p.t").await.unwrap();
    let (live, files) = snapshot(dir.path(), &engine, "p.t").await;
    assert_eq!(live, model);
    assert_eq!(check_files(dir.path(), &files).await, [1]);
    assert_eq!(
        engine.table_info("p.t").unwrap().index_entries,
        model.len(),
        "the key index holds each live key once"
    );
}

#[tokio::test]
async fn background_compaction_moves_small_old_spec_files_at_the_next_commit() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).await.unwrap();
    create(&engine, "p.t", None).await;
    let mut model = Model::new();
    apply(
        &engine,
        &mut model,
        Operation::Insert,
        &rows_of(0..20),
        Durability::Committed,
    )
    .await;
    engine
        .change_partitioning("p.t", &["region".into()])
        .await
        .unwrap();
    let (_, files) = snapshot(dir.path(), &engine, "p.t").await;
    assert!(files.iter().all(|f| f.spec_id == 0), "{files:?}");
    apply(
        &engine,
        &mut model,
        Operation::Upsert,
        &[(3, "us"), (4, "eu"), (30, "ap")],
        Durability::Committed,
    )
    .await;
    // The background compactor moves them after the commit: wait for it.
    engine.compact_now("p.t").await.unwrap();
    let (live, files) = snapshot(dir.path(), &engine, "p.t").await;
    assert_eq!(live, model);
    assert_eq!(check_files(dir.path(), &files).await, [1]);
    assert!(files.iter().all(|f| f.spec_id == 1), "{files:?}");

    // Back to the first partitioning: Iceberg reuses spec 0, and the spec-1 files are now the
    // old ones that move.
    engine
        .change_partitioning("p.t", &["bucket(4, id)".into()])
        .await
        .unwrap();
    apply(
        &engine,
        &mut model,
        Operation::Upsert,
        &[(5, "us"), (31, "eu")],
        Durability::Committed,
    )
    .await;
    // The background compactor moves them after the commit: wait for it.
    engine.compact_now("p.t").await.unwrap();
    let (live, files) = snapshot(dir.path(), &engine, "p.t").await;
    assert_eq!(live, model);
    assert_eq!(check_files(dir.path(), &files).await, [0]);
}
