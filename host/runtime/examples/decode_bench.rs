//! Time rest_ingest.wasm spends decoding one HTTP body, per row.
//!
//! `cargo run -p moonlink-runtime --example decode_bench -- ROWS` (plugins built first).

use std::time::Instant;

use moonlink_engine::{ColumnSchema, ColumnType, TableSchema};
use moonlink_runtime::{PluginRuntime, RestDecoder, RuntimeConfig};

fn main() {
    let rows: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().unwrap())
        .unwrap_or(10_000);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "target".into());
    let runtime = PluginRuntime::new(RuntimeConfig::default()).unwrap();
    let decoder = RestDecoder::load(
        &runtime,
        &target.join("wasm32-wasip2/release/rest_ingest.wasm"),
    )
    .unwrap();
    let col = |name: &str, data_type| ColumnSchema {
        name: name.into(),
        data_type,
        nullable: false,
    };
    let schema = TableSchema::new(
        vec![
            col("id", ColumnType::Int64),
            col("name", ColumnType::Utf8),
            col("value", ColumnType::Float64),
            col("ts", ColumnType::Timestamp),
        ],
        vec![],
    );
    let data: Vec<String> = (0..rows)
        .map(|i| {
            format!(
                r#"{{"id":{i},"name":"user-{i}","value":{i}.5,"ts":"2023-11-14 22:13:20.{:06}"}}"#,
                i % 1_000_000
            )
        })
        .collect();
    let body = format!(
        r#"{{"operation":"insert","request_mode":"async","data":[{}]}}"#,
        data.join(",")
    );
    let start = Instant::now();
    for _ in 0..10 {
        decoder
            .decode("t", &schema, None, &[], body.as_bytes())
            .unwrap();
    }
    let per_call = start.elapsed() / 10;
    println!(
        "{{\"rows\":{rows},\"body_bytes\":{},\"decode_ms\":{:.2},\"ns_per_row\":{:.0}}}",
        body.len(),
        per_call.as_secs_f64() * 1e3,
        per_call.as_nanos() as f64 / rows as f64
    );
}
