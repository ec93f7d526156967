//! Another engine commits to a table we write (as Spark's `rewrite_data_files` or
//! `expire_snapshots` would): its snapshot carries none of our summary keys, and it moves the
//! catalog pointer under us. Our checkpoint must survive it (no replay from LSN 0 after a
//! restart), and our next commit must rebase on it rather than fail forever.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, ArrayRef, Int64Array, StringArray};
use iceberg::spec::{Operation as SnapshotOperation, Snapshot, Summary, TableMetadataBuilder};
use moonlink_engine::inspect::{live_rows, load_metadata, COMMITTED_LSN_SUMMARY_KEY};
use moonlink_engine::{
    ChangeBatch, ColumnSchema, ColumnType, CreateTable, Durability, Engine, EngineConfig,
    Operation, TableConfig, TableSchema, Warehouse,
};

const NAME: &str = "shop.items";

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
                data_type: ColumnType::Utf8,
                nullable: true,
            },
        ],
        vec!["id".into()],
    )
}

fn batch(op: Operation, rows: &[(i64, &str)]) -> ChangeBatch {
    let ids = Int64Array::from_iter_values(rows.iter().map(|r| r.0));
    let values = StringArray::from_iter_values(rows.iter().map(|r| r.1));
    ChangeBatch::from_columns(
        &schema(),
        vec![op; rows.len()],
        vec![
            ("id".into(), Arc::new(ids) as ArrayRef),
            ("v".into(), Arc::new(values) as ArrayRef),
        ],
    )
    .unwrap()
}

async fn open(dir: &std::path::Path) -> Engine {
    Engine::open(EngineConfig {
        data_dir: dir.to_path_buf(),
        table: TableConfig {
            commit_interval: Duration::from_secs(3600),
            ..TableConfig::default()
        },
        catalog: None,
    })
    .await
    .unwrap()
}

/// The committed rows, read back from Iceberg.
async fn rows(dir: &std::path::Path, engine: &Engine) -> BTreeMap<i64, String> {
    let warehouse = Warehouse::local(&dir.join("warehouse")).unwrap();
    let location = engine.table_info(NAME).unwrap().metadata_location;
    let mut out = BTreeMap::new();
    for (batch, row) in live_rows(&warehouse, &location, &schema().arrow_schema())
        .await
        .unwrap()
    {
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let values = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert!(
            out.insert(ids.value(row), values.value(row).to_string())
                .is_none(),
            "duplicate key {}",
            ids.value(row)
        );
    }
    out
}

/// Commits a snapshot as another engine would: same files, no moonlink keys, a new metadata
/// version, and the catalog pointer swapped behind the engine's back.
async fn foreign_commit(dir: &std::path::Path, engine: &Engine, expire_ours: bool) {
    let warehouse = Warehouse::local(&dir.join("warehouse")).unwrap();
    let location = engine.table_info(NAME).unwrap().metadata_location;
    let metadata = load_metadata(&warehouse.file_io(), &location)
        .await
        .unwrap();
    let current = metadata.current_snapshot().unwrap().clone();
    let id = (uuid::Uuid::new_v4().as_u64_pair().0 & i64::MAX as u64) as i64;
    let snapshot = Snapshot::builder()
        .with_snapshot_id(id)
        .with_parent_snapshot_id(Some(current.snapshot_id()))
        .with_sequence_number(metadata.last_sequence_number() + 1)
        .with_timestamp_ms(chrono::Utc::now().timestamp_millis())
        .with_manifest_list(current.manifest_list().to_string())
        .with_summary(Summary {
            operation: SnapshotOperation::Replace,
            additional_properties: [("engine".to_string(), "spark".to_string())].into(),
        })
        .with_schema_id(metadata.current_schema_id())
        .with_row_range(metadata.next_row_id(), 0)
        .build();
    let mut builder =
        TableMetadataBuilder::new_from_metadata(metadata.clone(), Some(location.clone()))
            .set_branch_snapshot(snapshot, "main")
            .unwrap();
    if expire_ours {
        let ours: Vec<i64> = metadata.snapshots().map(|s| s.snapshot_id()).collect();
        builder = builder.remove_snapshots(&ours);
    }
    let new_metadata = builder.build().unwrap().metadata;
    let new_location = location.replace(".metadata.json", "-spark.metadata.json");
    let new_location = new_location.replacen("/metadata/0", "/metadata/9", 1);
    let path = new_location
        .strip_prefix("file://")
        .unwrap_or(&new_location);
    std::fs::write(path, serde_json::to_vec(&new_metadata).unwrap()).unwrap();
    let conn = rusqlite::Connection::open(dir.join("catalog.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let updated = conn
        .execute(
            "UPDATE iceberg_tables SET metadata_location = ?1, previous_metadata_location = ?2
             WHERE table_name = 'items' AND metadata_location = ?2",
            [&new_location, &location],
        )
        .unwrap();
    assert_eq!(updated, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_survive_and_commits_rebase_on_another_writers_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    engine
        .create_table(CreateTable {
            options: Default::default(),
            name: NAME.into(),
            namespace: "shop".into(),
            table: "items".into(),
            schema: schema(),
        })
        .await
        .unwrap();
    let mut model = BTreeMap::new();
    let initial: Vec<(i64, String)> = (0..10).map(|i| (i, format!("a{i}"))).collect();
    let initial_refs: Vec<(i64, &str)> = initial.iter().map(|(i, v)| (*i, v.as_str())).collect();
    engine
        .apply(
            NAME,
            batch(Operation::Insert, &initial_refs),
            Durability::Committed,
        )
        .await
        .unwrap();
    model.extend(initial.iter().cloned());
    let lsn = engine.table_info(NAME).unwrap().committed_lsn;
    assert!(lsn > 0);

    // 1. A foreign snapshot on top of ours, then a restart: the checkpoint is found in the
    // ancestry, nothing is replayed twice.
    foreign_commit(dir.path(), &engine, false).await;
    drop(engine);
    let engine = open(dir.path()).await;
    let info = engine.table_info(NAME).unwrap();
    assert_eq!((info.committed_lsn, info.last_lsn), (lsn, lsn));
    assert_eq!(rows(dir.path(), &engine).await, model);

    // 2. Pending upserts and deletes while another writer commits: our swap fails and rebases.
    engine
        .apply(
            NAME,
            batch(Operation::Upsert, &[(3, "x3"), (20, "x20")]),
            Durability::Logged,
        )
        .await
        .unwrap();
    engine
        .apply(
            NAME,
            batch(Operation::Delete, &[(4, "")]),
            Durability::Logged,
        )
        .await
        .unwrap();
    model.insert(3, "x3".into());
    model.insert(20, "x20".into());
    model.remove(&4);
    foreign_commit(dir.path(), &engine, false).await;
    engine.commit(NAME).await.unwrap();
    let info = engine.table_info(NAME).unwrap();
    assert!(info.last_error.is_none(), "{:?}", info.last_error);
    assert_eq!(rows(dir.path(), &engine).await, model);
    let warehouse = Warehouse::local(&dir.path().join("warehouse")).unwrap();
    let metadata = load_metadata(&warehouse.file_io(), &info.metadata_location)
        .await
        .unwrap();
    let ours = metadata.current_snapshot().unwrap();
    let parent = metadata
        .snapshot_by_id(ours.parent_snapshot_id().unwrap())
        .unwrap();
    assert_eq!(
        parent
            .summary()
            .additional_properties
            .get("engine")
            .map(String::as_str),
        Some("spark")
    );
    let lsn = info.committed_lsn;

    // 3. The other engine expires every snapshot of ours: the checkpoint survives in the
    // table properties; logged writes after it are replayed once after a restart.
    engine
        .apply(
            NAME,
            batch(Operation::Upsert, &[(5, "y5")]),
            Durability::Logged,
        )
        .await
        .unwrap();
    model.insert(5, "y5".into());
    foreign_commit(dir.path(), &engine, true).await;
    drop(engine);
    let engine = open(dir.path()).await;
    let info = engine.table_info(NAME).unwrap();
    assert_eq!((info.committed_lsn, info.last_lsn), (lsn, lsn + 1));
    engine.commit(NAME).await.unwrap();
    assert_eq!(rows(dir.path(), &engine).await, model);
    let info = engine.table_info(NAME).unwrap();
    let metadata = load_metadata(&warehouse.file_io(), &info.metadata_location)
        .await
        .unwrap();
    let summary = &metadata
        .current_snapshot()
        .unwrap()
        .summary()
        .additional_properties;
    assert_eq!(
        summary.get(COMMITTED_LSN_SUMMARY_KEY),
        Some(&(lsn + 1).to_string())
    );
}
