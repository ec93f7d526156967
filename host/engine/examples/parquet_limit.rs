//! The limit an ingest path is compared with: an arrow-rs Parquet zstd(1) write of given rows.
//!
//! `cargo run --release -p moonlink-engine --example parquet_limit -- ROWS.arrows [REPEAT]`
//! reads an Arrow IPC stream file (the rows a benchmark also sends over HTTP) into memory, then
//! writes it to one Parquet file (zstd level 1) REPEAT times (default 3) and prints one JSON
//! line with the best rows/s. Used by `tests/bench/http_ingest_bench.py`.

use std::time::Instant;

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: parquet_limit ROWS.arrows [REPEAT]")?;
    let repeat: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(3);
    let reader = StreamReader::try_new(std::fs::File::open(&path)?, None)?;
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>()?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let dir = tempfile::tempdir()?;
    let mut best = f64::MAX;
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
            .build();
        let file = std::fs::File::create(dir.path().join("limit.parquet"))?;
        let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
        for b in &batches {
            writer.write(b)?;
        }
        writer.close()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "{{\"rows\":{rows},\"parquet_zstd1_rows_per_s\":{:.0},\"seconds\":{best:.3}}}",
        rows as f64 / best
    );
    Ok(())
}
