//! Throughput of the engine API against a raw arrow-rs Parquet write of the same rows.
//!
//! `cargo run -p moonlink-engine --example ingest_bench -- ROWS BATCH_ROWS`
//! prints one JSON line: rows/s for each path and the engine/raw ratio. Both paths write zstd
//! Parquet; the engine additionally logs every batch to its WAL with fsync and commits Iceberg
//! metadata.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use moonlink_engine::{
    ChangeBatch, ColumnSchema, ColumnType, CreateTable, Durability, Engine, EngineConfig,
    Operation, TableConfig, TableSchema,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

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
            col("ts", ColumnType::Timestamp),
        ],
        vec![],
    )
}

fn columns(start: i64, n: usize) -> Vec<(String, ArrayRef)> {
    let ids: Vec<i64> = (start..start + n as i64).collect();
    vec![
        (
            "id".into(),
            Arc::new(Int64Array::from(ids.clone())) as ArrayRef,
        ),
        (
            "name".into(),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("user-{i}")),
            )),
        ),
        (
            "value".into(),
            Arc::new(Float64Array::from_iter_values(
                ids.iter().map(|i| *i as f64 * 0.5),
            )),
        ),
        (
            "ts".into(),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                ids.iter().map(|i| 1_700_000_000_000_000 + i * 1000),
            )),
        ),
    ]
}

fn batches(rows: usize, batch_rows: usize) -> Vec<ChangeBatch> {
    let schema = schema();
    (0..rows)
        .step_by(batch_rows)
        .map(|start| {
            let n = batch_rows.min(rows - start);
            ChangeBatch::from_columns(
                &schema,
                vec![Operation::Insert; n],
                columns(start as i64, n),
            )
            .unwrap()
        })
        .collect()
}

fn raw_parquet(dir: &std::path::Path, batches: &[ChangeBatch]) -> Duration {
    let start = Instant::now();
    let file = std::fs::File::create(dir.join("raw.parquet")).unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
        .build();
    let schema: RecordBatch = batches[0].rows().clone();
    let mut writer = ArrowWriter::try_new(file, schema.schema(), Some(props)).unwrap();
    for b in batches {
        writer.write(b.rows()).unwrap();
    }
    writer.close().unwrap();
    start.elapsed()
}

async fn engine_path(dir: &std::path::Path, batches: Vec<ChangeBatch>) -> Duration {
    let engine = Engine::open(EngineConfig {
        data_dir: dir.to_path_buf(),
        table: TableConfig {
            commit_interval: Duration::from_secs(3600),
            ..TableConfig::default()
        },
        catalog: None,
    })
    .await
    .unwrap();
    engine
        .create_table(CreateTable {
            options: Default::default(),
            name: "bench.rows".into(),
            namespace: "bench".into(),
            table: "rows".into(),
            schema: schema(),
        })
        .await
        .unwrap();
    let start = Instant::now();
    for b in batches {
        engine
            .apply("bench.rows", b, Durability::Logged)
            .await
            .unwrap();
    }
    engine.commit("bench.rows").await.unwrap();
    start.elapsed()
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let rows = args.first().copied().unwrap_or(1_000_000);
    let batch_rows = args.get(1).copied().unwrap_or(10_000);
    let data = batches(rows, batch_rows);
    let dir = tempfile::tempdir().unwrap();
    let raw = raw_parquet(dir.path(), &data);
    let engine = engine_path(&dir.path().join("engine"), data).await;
    let rate = |d: Duration| rows as f64 / d.as_secs_f64();
    println!(
        "{{\"rows\":{rows},\"batch_rows\":{batch_rows},\"raw_parquet_rows_per_s\":{:.0},\"engine_rows_per_s\":{:.0},\"engine_vs_raw\":{:.3}}}",
        rate(raw),
        rate(engine),
        raw.as_secs_f64() / engine.as_secs_f64()
    );
}
