//! Keyed-table rates, index size and restart time.
//!
//! `cargo run -p moonlink-engine --example keyed_bench -- ROWS RESTART_ROWS`
//!
//! Prints one JSON line: insert, upsert and delete rows/s on a table keyed by `id` (each
//! phase ends with a commit, so deletes and replaced rows are committed as deletion vectors),
//! upsert/insert and delete/insert ratios, resident key-index bytes per row, and the time to
//! reopen a RESTART_ROWS-row keyed table with its index segments and after losing them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray};
use moonlink_engine::{
    ChangeBatch, ColumnSchema, ColumnType, CreateTable, Durability, Engine, EngineConfig,
    Operation, TableConfig, TableSchema,
};

const BATCH: usize = 10_000;

fn schema() -> TableSchema {
    let col = |name: &str, data_type| ColumnSchema {
        name: name.into(),
        data_type,
        nullable: false,
    };
    TableSchema::new(
        vec![
            col("id", ColumnType::Int64),
            col("name", ColumnType::Utf8),
            col("value", ColumnType::Float64),
        ],
        vec!["id".into()],
    )
}

fn batches(rows: usize, op: Operation, salt: f64) -> Vec<ChangeBatch> {
    let schema = schema();
    (0..rows)
        .step_by(BATCH)
        .map(|start| {
            let ids: Vec<i64> = (start as i64..(start + BATCH.min(rows - start)) as i64).collect();
            let mut columns = vec![(
                "id".to_string(),
                Arc::new(Int64Array::from(ids.clone())) as ArrayRef,
            )];
            if op != Operation::Delete {
                columns.push((
                    "name".into(),
                    Arc::new(StringArray::from_iter_values(
                        ids.iter().map(|i| format!("user-{i}")),
                    )),
                ));
                columns.push((
                    "value".into(),
                    Arc::new(Float64Array::from_iter_values(
                        ids.iter().map(|i| *i as f64 + salt),
                    )),
                ));
            }
            ChangeBatch::from_columns(&schema, vec![op; ids.len()], columns).unwrap()
        })
        .collect()
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

async fn open_table(dir: &std::path::Path) -> Engine {
    let engine = Engine::open(config(dir)).await.unwrap();
    if engine.table_info("bench.keyed").is_err() {
        engine
            .create_table(CreateTable {
                options: Default::default(),
                name: "bench.keyed".into(),
                namespace: "bench".into(),
                table: "keyed".into(),
                schema: schema(),
            })
            .await
            .unwrap();
    }
    engine
}

/// Applies the batches and commits; returns rows/s.
async fn phase(engine: &Engine, data: Vec<ChangeBatch>) -> f64 {
    let rows: usize = data.iter().map(|b| b.num_rows()).sum();
    let start = Instant::now();
    for b in data {
        engine
            .apply("bench.keyed", b, Durability::Logged)
            .await
            .unwrap();
    }
    engine.commit("bench.keyed").await.unwrap();
    rows as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let rows = args.first().copied().unwrap_or(1_000_000);
    let restart_rows = args.get(1).copied().unwrap_or(10_000_000);

    let dir = tempfile::tempdir().unwrap();
    let engine = open_table(dir.path()).await;
    let insert = phase(&engine, batches(rows, Operation::Insert, 0.0)).await;
    let info = engine.table_info("bench.keyed").unwrap();
    let index_bytes_per_row = info.index_bytes as f64 / info.index_entries as f64;
    let upsert = phase(&engine, batches(rows, Operation::Upsert, 0.5)).await;
    let delete = phase(&engine, batches(rows, Operation::Delete, 0.0)).await;
    drop(engine);

    let big = tempfile::tempdir().unwrap();
    let engine = open_table(big.path()).await;
    phase(&engine, batches(restart_rows, Operation::Insert, 0.0)).await;
    drop(engine);
    let start = Instant::now();
    let engine = open_table(big.path()).await;
    let restart_with_segments = start.elapsed().as_secs_f64();
    assert_eq!(
        engine.table_info("bench.keyed").unwrap().index_entries,
        restart_rows
    );
    drop(engine);
    std::fs::remove_dir_all(big.path().join("cache").join("index")).unwrap();
    let start = Instant::now();
    let engine = open_table(big.path()).await;
    let restart_rebuild = start.elapsed().as_secs_f64();
    assert_eq!(
        engine.table_info("bench.keyed").unwrap().index_entries,
        restart_rows
    );

    println!(
        "{{\"rows\":{rows},\"insert_rows_per_s\":{insert:.0},\"upsert_rows_per_s\":{upsert:.0},\"delete_rows_per_s\":{delete:.0},\"upsert_vs_insert\":{:.2},\"delete_vs_insert\":{:.2},\"index_bytes_per_row\":{index_bytes_per_row:.1},\"restart_rows\":{restart_rows},\"restart_with_segments_s\":{restart_with_segments:.2},\"restart_rebuilding_index_s\":{restart_rebuild:.2}}}",
        upsert / insert,
        delete / insert
    );
}
