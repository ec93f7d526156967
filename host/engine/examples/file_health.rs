//! File health under trickle ingest: an hour at 1,000 rows/s, compressed in time.
//!
//! `cargo run -p moonlink-engine --example file_health -- OUT_DIR [COMMITS] [ROWS_PER_COMMIT] [TARGET_MIB]`
//!
//! Writes two tables with the same rows, one commit per simulated 2-second interval:
//! `health.ours` with the engine's defaults (small files merged by the background compactor toward the target)
//! and `health.baseline` that writes one file per commit (merging disabled). Prints one JSON
//! line per table: data files, bytes, and the share of bytes in files of at least half the
//! target size. `tests/bench/file_health.py` adds the DuckDB full-scan times.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
use moonlink_engine::inspect::{live_files, load_metadata};
use moonlink_engine::Warehouse;
use moonlink_engine::{
    ChangeBatch, ColumnSchema, ColumnType, CreateTable, Durability, Engine, EngineConfig,
    Operation, TableConfig, TableSchema,
};

fn schema() -> TableSchema {
    let col = |name: &str, data_type| ColumnSchema {
        name: name.into(),
        data_type,
        nullable: false,
    };
    TableSchema::new(
        vec![
            col("id", ColumnType::Int64),
            col("ts", ColumnType::Timestamp),
            col("user", ColumnType::Utf8),
            col("value", ColumnType::Float64),
        ],
        vec![],
    )
}

fn batch(start: i64, n: usize) -> ChangeBatch {
    let ids: Vec<i64> = (start..start + n as i64).collect();
    let mix = |i: i64| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
    ChangeBatch::from_columns(
        &schema(),
        vec![Operation::Insert; n],
        vec![
            (
                "id".into(),
                Arc::new(Int64Array::from(ids.clone())) as ArrayRef,
            ),
            (
                "ts".into(),
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    ids.iter().map(|i| 1_700_000_000_000_000 + i * 1000),
                )),
            ),
            (
                "user".into(),
                Arc::new(StringArray::from_iter_values(
                    ids.iter().map(|i| format!("user-{}", mix(*i) % 50_000)),
                )),
            ),
            (
                "value".into(),
                Arc::new(Float64Array::from_iter_values(
                    ids.iter().map(|i| (mix(*i) % 100_000) as f64 / 7.0),
                )),
            ),
        ],
    )
    .unwrap()
}

async fn run(
    dir: &std::path::Path,
    name: &str,
    merge_fanout: usize,
    commits: usize,
    rows: usize,
    target: u64,
) {
    let engine = Engine::open(EngineConfig {
        data_dir: dir.to_path_buf(),
        table: TableConfig {
            commit_interval: Duration::from_secs(3600),
            target_file_size: target,
            merge_fanout,
            // Steady state of a long stream: old snapshots are already expired.
            retention: moonlink_engine::SnapshotRetention {
                max_age: Duration::ZERO,
                min_keep: 10,
            },
            ..TableConfig::default()
        },
        catalog: None,
    })
    .await
    .unwrap();
    let table = format!("health.{name}");
    engine
        .create_table(CreateTable {
            options: Default::default(),
            name: table.clone(),
            namespace: "health".into(),
            table: name.into(),
            schema: schema(),
        })
        .await
        .unwrap();
    for c in 0..commits {
        engine
            .apply(&table, batch((c * rows) as i64, rows), Durability::Logged)
            .await
            .unwrap();
        engine.commit(&table).await.unwrap();
    }
    // Small files are merged beside the commits: let the last compaction finish.
    engine.compact_now(&table).await.unwrap();
    let info = engine.table_info(&table).unwrap();
    let io = Warehouse::local(&dir.join("warehouse")).unwrap().file_io();
    let metadata = load_metadata(&io, &info.metadata_location).await.unwrap();
    let sizes: Vec<u64> = live_files(&io, &metadata)
        .await
        .unwrap()
        .iter()
        .map(|f| f.data_file.file_size_in_bytes())
        .collect();
    let total: u64 = sizes.iter().sum();
    let well_sized: u64 = sizes.iter().filter(|s| **s >= target / 2).sum();
    println!(
        "{{\"table\":\"{table}\",\"metadata_location\":\"{}\",\"rows\":{},\"data_files\":{},\"bytes\":{total},\"well_sized_share\":{:.3}}}",
        info.metadata_location,
        info.total_records,
        sizes.len(),
        well_sized as f64 / total.max(1) as f64
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = std::path::PathBuf::from(args.first().expect("OUT_DIR"));
    let commits: usize = args.get(1).map(|a| a.parse().unwrap()).unwrap_or(1800);
    let rows: usize = args.get(2).map(|a| a.parse().unwrap()).unwrap_or(2000);
    let target: u64 = args
        .get(3)
        .map(|a| a.parse::<u64>().unwrap() * 1024 * 1024)
        .unwrap_or(8 * 1024 * 1024);
    run(
        &out.join("ours"),
        "ours",
        TableConfig::default().merge_fanout,
        commits,
        rows,
        target,
    )
    .await;
    run(
        &out.join("baseline"),
        "baseline",
        usize::MAX,
        commits,
        rows,
        target,
    )
    .await;
}
