//! Manifest merging under trickle traffic: hundreds of small commits (appends, upserts,
//! deletes) keep the number of manifests bounded, the table equals a model, entries carried
//! into merged manifests keep the snapshot and sequence numbers that added them, and an older
//! snapshot still reads as the model did then.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, ArrayRef, Int64Array, StringArray};
use iceberg::spec::{ManifestContentType, ManifestList, ManifestStatus};
use moonlink_engine::inspect::load_metadata;
use moonlink_engine::{
    ChangeBatch, ColumnSchema, ColumnType, CreateTable, Durability, Engine, EngineConfig,
    Operation, TableConfig, TableOptions, TableSchema, Warehouse,
};

fn schema(keyed: bool) -> TableSchema {
    let column = |name: &str, data_type, nullable| ColumnSchema {
        name: name.into(),
        data_type,
        nullable,
    };
    TableSchema::new(
        vec![
            column("id", ColumnType::Int64, false),
            column("name", ColumnType::Utf8, true),
        ],
        if keyed { vec!["id".into()] } else { vec![] },
    )
}

fn batch(keyed: bool, op: Operation, rows: &[(i64, String)]) -> ChangeBatch {
    let mut columns = vec![(
        "id".to_string(),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
    )];
    if op != Operation::Delete {
        columns.push((
            "name".into(),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.1))) as ArrayRef,
        ));
    }
    ChangeBatch::from_columns(&schema(keyed), vec![op; rows.len()], columns).unwrap()
}

async fn open(dir: &std::path::Path) -> Engine {
    Engine::open(EngineConfig {
        data_dir: dir.to_path_buf(),
        table: TableConfig {
            commit_interval: Duration::from_secs(3600),
            // Snapshots are kept: the test travels back to an older one.
            retention: moonlink_engine::SnapshotRetention {
                max_age: Duration::from_secs(3600),
                min_keep: 1000,
            },
            ..TableConfig::default()
        },
        catalog: None,
    })
    .await
    .unwrap()
}

/// (id, name) of every live row of the snapshot `location` points at, sorted.
async fn rows_at(dir: &std::path::Path, location: &str, keyed: bool) -> Vec<(i64, String)> {
    let warehouse = Warehouse::local(&dir.join("warehouse")).unwrap();
    let mut rows: Vec<(i64, String)> =
        moonlink_engine::inspect::live_rows(&warehouse, location, &schema(keyed).arrow_schema())
            .await
            .unwrap()
            .into_iter()
            .map(|(b, i)| {
                let id = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                let name = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
                (id.value(i), name.value(i).to_string())
            })
            .collect();
    rows.sort();
    rows
}

/// Checks the current snapshot's manifests; returns how many there are and how many live
/// entries a later snapshot carried into its own manifest. Every live entry
/// must carry the snapshot id and sequence number of the commit that added its file.
async fn check_manifests(
    dir: &std::path::Path,
    location: &str,
    added_by: &HashMap<String, (i64, i64)>,
) -> (usize, usize) {
    let io = Warehouse::local(&dir.join("warehouse")).unwrap().file_io();
    let metadata = load_metadata(&io, location).await.unwrap();
    let snapshot = metadata.current_snapshot().unwrap();
    let bytes = io
        .new_input(snapshot.manifest_list())
        .unwrap()
        .read()
        .await
        .unwrap();
    let list = ManifestList::parse_with_version(&bytes, metadata.format_version()).unwrap();
    let manifests: Vec<_> = list.consume_entries().into_iter().collect();
    let mut merged_entries = 0;
    for manifest in &manifests {
        for entry in manifest.load_manifest(&io).await.unwrap().entries() {
            if !entry.is_alive() {
                continue;
            }
            let file = entry.data_file();
            if manifest.content == ManifestContentType::Deletes {
                assert!(
                    file.referenced_data_file().is_some(),
                    "a DV left its manifest"
                );
            }
            let Some(&(snapshot_id, seq)) = added_by.get(file.file_path()) else {
                panic!("{} is live but no commit added it", file.file_path());
            };
            assert_eq!(
                entry.snapshot_id(),
                Some(snapshot_id),
                "{}",
                file.file_path()
            );
            assert_eq!(entry.sequence_number(), Some(seq), "{}", file.file_path());
            assert_eq!(
                entry.file_sequence_number,
                Some(seq),
                "{}",
                file.file_path()
            );
            // Carried into a manifest a later snapshot wrote (merged or rewritten): EXISTING.
            if entry.snapshot_id() != Some(manifest.added_snapshot_id) {
                assert_eq!(entry.status(), ManifestStatus::Existing);
                merged_entries += 1;
            }
        }
    }
    (manifests.len(), merged_entries)
}

/// Records the snapshot id and sequence number of every file the current snapshot added.
async fn record_added(
    dir: &std::path::Path,
    location: &str,
    added_by: &mut HashMap<String, (i64, i64)>,
) {
    let io = Warehouse::local(&dir.join("warehouse")).unwrap().file_io();
    let metadata = load_metadata(&io, location).await.unwrap();
    let snapshot = metadata.current_snapshot().unwrap();
    for file in moonlink_engine::inspect::live_files(&io, &metadata)
        .await
        .unwrap()
    {
        added_by
            .entry(file.data_file.file_path().to_string())
            .or_insert((snapshot.snapshot_id(), snapshot.sequence_number()));
    }
}

async fn trickle(keyed: bool) {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    let name = if keyed { "t.keyed" } else { "t.log" };
    engine
        .create_table(CreateTable {
            name: name.into(),
            namespace: "t".into(),
            table: name[2..].into(),
            schema: schema(keyed),
            // Files are not merged, so every commit's files stay live in the manifests.
            options: TableOptions {
                compaction: Some(false),
                ..Default::default()
            },
        })
        .await
        .unwrap();
    let mut model: BTreeMap<i64, String> = BTreeMap::new();
    let mut log: Vec<(i64, String)> = Vec::new();
    let mut added_by = HashMap::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let commits = 300;
    let mut most = 0;
    let mut merged_entries = 0;
    let mut older: Option<(String, Vec<(i64, String)>)> = None;
    for round in 0..commits {
        let rows: Vec<(i64, String)> = (0..3)
            .map(|_| {
                let id = (next() % 400) as i64;
                (id, format!("r{round}-{id}"))
            })
            .collect();
        let op = match (keyed, next() % 3) {
            (false, _) => Operation::Insert,
            (true, 0) => Operation::Delete,
            _ => Operation::Upsert,
        };
        let mut unique = rows.clone();
        unique.sort_by_key(|r| r.0);
        unique.dedup_by_key(|r| r.0);
        let rows = if keyed { unique } else { rows };
        for (id, value) in &rows {
            match op {
                Operation::Delete => {
                    model.remove(id);
                }
                Operation::Upsert => {
                    model.insert(*id, value.clone());
                }
                _ => log.push((*id, value.clone())),
            }
        }
        engine
            .apply(name, batch(keyed, op, &rows), Durability::Committed)
            .await
            .unwrap();
        let location = engine.table_info(name).unwrap().metadata_location;
        record_added(dir.path(), &location, &mut added_by).await;
        let (count, carried) = check_manifests(dir.path(), &location, &added_by).await;
        most = most.max(count);
        merged_entries = merged_entries.max(carried);
        if round == commits - 40 {
            older = Some((location, expected(keyed, &model, &log)));
        }
    }
    eprintln!("at most {most} manifests, {merged_entries} carried entries");
    // Java's rule with our default bound of 16 per (content, spec): at most 16 data and
    // 16 delete manifests plus this commit's.
    assert!(most <= 2 * 17, "{most} manifests in one snapshot");
    assert!(
        most >= 8,
        "the test should have accumulated manifests ({most})"
    );
    let info = engine.table_info(name).unwrap();
    assert_eq!(info.snapshots, commits, "no snapshot expired");
    assert_eq!(
        rows_at(dir.path(), &info.metadata_location, keyed).await,
        expected(keyed, &model, &log)
    );
    // Time travel: an older snapshot, written before later merges, still reads as it was.
    let (location, want) = older.unwrap();
    assert_eq!(rows_at(dir.path(), &location, keyed).await, want);
    // A restart reads the merged manifests back into the same table.
    drop(engine);
    let engine = open(dir.path()).await;
    let location = engine.table_info(name).unwrap().metadata_location;
    assert_eq!(
        rows_at(dir.path(), &location, keyed).await,
        expected(keyed, &model, &log)
    );
}

fn expected(
    keyed: bool,
    model: &BTreeMap<i64, String>,
    log: &[(i64, String)],
) -> Vec<(i64, String)> {
    let mut rows: Vec<(i64, String)> = if keyed {
        model.iter().map(|(k, v)| (*k, v.clone())).collect()
    } else {
        log.to_vec()
    };
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_trickle_keeps_manifests_bounded() {
    trickle(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_trickle_keeps_manifests_bounded() {
    trickle(false).await;
}
