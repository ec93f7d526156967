//! The plugin boundary's cost: datagen as a wasm source against the same generator compiled
//! natively into the host, and a pass-through transform's cost per row.
//!
//! `cargo run -p moonlink-host --example plugin_bench -- ROWS`  (build the plugins first:
//! `bash scripts/test.sh` or the `build_plugins` step of `scripts/env.sh`).
//!
//! Both source paths end in the same engine calls (`apply_from_source` + a final commit), so
//! the ratio isolates the plugin: wasm execution plus copying batches across the boundary.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use moonlink_engine::{Engine, EngineConfig, SourceCheckpoint, TableConfig};
use moonlink_runtime::{
    into_engine_batch, schema_from_wit, Capabilities, PluginBatch, PluginRuntime, RuntimeConfig,
    SourcePlugin, TransformPlugin,
};

const POLL_ROWS: u64 = 10_000;
const TABLE: &str = "bench.events";

fn plugin_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("wasm32-wasip2/release")
}

/// The SDK's batch and the runtime's are the same WIT record, generated twice.
fn to_plugin_batch(b: moonlink_sdk::ChangeBatch) -> PluginBatch {
    use moonlink_runtime::wit;
    type RtValues = wit::ColumnValues;
    let operations = b
        .operations
        .into_iter()
        .map(|op| match op {
            moonlink_sdk::Operation::Insert => runtime_op(0),
            moonlink_sdk::Operation::Upsert => runtime_op(1),
            moonlink_sdk::Operation::Delete => runtime_op(2),
        })
        .collect();
    let columns = b
        .columns
        .into_iter()
        .map(|c| {
            use moonlink_sdk::ColumnValues as S;
            let values: RtValues = match c.values {
                S::Int16(v) => RtValues::Int16(v),
                S::Int32(v) => RtValues::Int32(v),
                S::Int64(v) => RtValues::Int64(v),
                S::Float32(v) => RtValues::Float32(v),
                S::Float64(v) => RtValues::Float64(v),
                S::Boolean(v) => RtValues::Boolean(v),
                S::Utf8(v) => RtValues::Utf8(v),
                S::Binary(v) => RtValues::Binary(v),
                S::Array(_) | S::Map(_) => unreachable!("datagen has no array or map columns"),
                S::Utf8Buffer(b) => RtValues::Utf8Buffer(moonlink_runtime::wit::Utf8Buffer {
                    offsets: b.offsets,
                    data: b.data,
                }),
                S::Int128(v) => RtValues::Int128(
                    v.into_iter()
                        .map(|x| wit::Int128 { lo: x.lo, hi: x.hi })
                        .collect(),
                ),
            };
            wit::Column {
                name: c.name,
                values,
                validity: c.validity,
                unchanged: None,
            }
        })
        .collect();
    wit::ChangeBatch {
        table: b.table,
        operations,
        columns,
    }
}

fn runtime_op(code: u8) -> moonlink_runtime::wit::Operation {
    match code {
        0 => moonlink_runtime::wit::Operation::Insert,
        1 => moonlink_runtime::wit::Operation::Upsert,
        _ => moonlink_runtime::wit::Operation::Delete,
    }
}

async fn engine(dir: &std::path::Path) -> Engine {
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

async fn create(engine: &Engine) {
    engine
        .create_table(moonlink_engine::CreateTable {
            options: Default::default(),
            name: TABLE.into(),
            namespace: "bench".into(),
            table: "events".into(),
            schema: schema_from_wit(&to_plugin_batch_schema()).unwrap(),
        })
        .await
        .unwrap();
}

fn to_plugin_batch_schema() -> moonlink_runtime::wit::TableSchema {
    let sdk = datagen::Preset::Events.schema();
    moonlink_runtime::wit::TableSchema {
        fields: sdk
            .fields
            .into_iter()
            .map(|f| moonlink_runtime::wit::Field {
                default: None,
                name: f.name,
                data_type: match f.data_type {
                    moonlink_sdk::DataType::Int32 => moonlink_runtime::wit::DataType::Int32,
                    moonlink_sdk::DataType::Int64 => moonlink_runtime::wit::DataType::Int64,
                    moonlink_sdk::DataType::Timestamp => moonlink_runtime::wit::DataType::Timestamp,
                    moonlink_sdk::DataType::Utf8 => moonlink_runtime::wit::DataType::Utf8,
                    moonlink_sdk::DataType::Decimal(d) => moonlink_runtime::wit::DataType::Decimal(
                        moonlink_runtime::wit::DecimalType {
                            precision: d.precision,
                            scale: d.scale,
                        },
                    ),
                    other => panic!("events preset has no {other:?} column"),
                },
                nullable: f.nullable,
            })
            .collect(),
        primary_key: sdk.primary_key,
    }
}

#[tokio::main]
async fn main() {
    let rows: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().unwrap())
        .unwrap_or(1_000_000);
    let runtime = PluginRuntime::new(RuntimeConfig::default()).unwrap();

    // Native generator, same engine calls.
    let dir = tempfile::tempdir().unwrap();
    let native_engine = engine(dir.path()).await;
    create(&native_engine).await;
    let schema = native_engine.table_schema(TABLE).unwrap();
    let start = Instant::now();
    let mut next = 0;
    while next < rows {
        let n = POLL_ROWS.min(rows - next);
        let batch = to_plugin_batch(datagen::generate(
            TABLE,
            datagen::Preset::Events,
            42,
            next,
            n,
        ));
        next += n;
        let batch = into_engine_batch(TABLE, &schema, batch).unwrap();
        native_engine
            .apply_from_source(TABLE, batch, checkpoint(next.to_string()))
            .await
            .unwrap();
    }
    native_engine.commit(TABLE).await.unwrap();
    let native = rows as f64 / start.elapsed().as_secs_f64();

    // The same generator as a wasm component.
    let dir = tempfile::tempdir().unwrap();
    let plugin_engine = engine(dir.path()).await;
    create(&plugin_engine).await;
    let plugin = SourcePlugin::load(
        &runtime,
        &plugin_dir().join("datagen.wasm"),
        "datagen",
        Capabilities::default(),
    )
    .unwrap();
    let settings = format!(r#"{{"table":"{TABLE}","rows":{rows},"seed":42}}"#);
    let start = Instant::now();
    let (mut source, _) = plugin.start(&settings, &Default::default()).unwrap();
    loop {
        let poll = source.poll(POLL_ROWS as u32, 100).unwrap();
        for event in poll.events {
            let moonlink_runtime::SourceEvent::Changes(batch) = event else {
                continue;
            };
            let batch = into_engine_batch(TABLE, &schema, batch).unwrap();
            plugin_engine
                .apply_from_source(TABLE, batch, checkpoint(poll.checkpoint.clone().unwrap()))
                .await
                .unwrap();
        }
        if poll.finished {
            break;
        }
    }
    plugin_engine.commit(TABLE).await.unwrap();
    let wasm = rows as f64 / start.elapsed().as_secs_f64();
    assert_eq!(
        plugin_engine.table_info(TABLE).unwrap().total_records,
        rows,
        "the plugin produced every row"
    );

    // A pass-through transform: every row kept, the batch copied in and out of the plugin.
    let filter =
        TransformPlugin::load(&runtime, &plugin_dir().join("filter.wasm"), "filter").unwrap();
    let mut pass = filter.start(r#"{"column":"id","op":"not_null"}"#).unwrap();
    let batches: Vec<PluginBatch> = (0..rows)
        .step_by(POLL_ROWS as usize)
        .map(|s| {
            to_plugin_batch(datagen::generate(
                TABLE,
                datagen::Preset::Events,
                42,
                s,
                POLL_ROWS.min(rows - s),
            ))
        })
        .collect();
    let start = Instant::now();
    let mut out_rows = 0;
    for b in &batches {
        out_rows += pass
            .apply(b)
            .unwrap()
            .iter()
            .map(|b| b.operations.len())
            .sum::<usize>();
    }
    let transform_ns_per_row = start.elapsed().as_nanos() as f64 / rows as f64;
    assert_eq!(out_rows as u64, rows);

    println!(
        "{{\"rows\":{rows},\"native_rows_per_s\":{native:.0},\"plugin_rows_per_s\":{wasm:.0},\"plugin_vs_native\":{:.2},\"pass_through_transform_ns_per_row\":{transform_ns_per_row:.0},\"native_ns_per_row\":{:.0}}}",
        wasm / native,
        1e9 / native
    );
}

/// The datagen source's position, as the pipeline records it.
fn checkpoint(position: String) -> SourceCheckpoint {
    SourceCheckpoint {
        source: "datagen".into(),
        position,
    }
}
