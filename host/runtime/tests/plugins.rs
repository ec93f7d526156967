//! The runtime against real components: the first-party rest_ingest plugin and the `faulty`
//! fixture. Both are built by `scripts/test.sh` (`cargo build -p rest_ingest -p faulty
//! --target wasm32-wasip2 --release`) before the tests run.

use std::path::PathBuf;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Decimal128Type, Int32Type, Int64Type};
use arrow_array::Array;
use moonlink_engine::{ColumnSchema, ColumnType, TableSchema};
use moonlink_runtime::{
    DataErrorKind, PluginRuntime, RequestMode, RestDecoder, RuntimeConfig, RuntimeError,
};

fn plugin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = target
        .join("wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p {name} --target wasm32-wasip2 --release`",
        path.display()
    );
    path
}

fn runtime(cache_dir: Option<PathBuf>) -> PluginRuntime {
    PluginRuntime::new(RuntimeConfig {
        memory_limit_bytes: 64 * 1024 * 1024,
        // Long enough for the `oom` fault to reach the memory limit while other tests load
        // the machine; the `loop` fault takes this long.
        call_timeout: Duration::from_millis(1000),
        cache_dir,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn schema() -> TableSchema {
    let col = |name: &str, data_type, nullable| ColumnSchema {
        name: name.into(),
        data_type,
        nullable,
    };
    TableSchema::new(
        vec![
            col("id", ColumnType::Int64, false),
            col("small", ColumnType::Int16, true),
            col("day", ColumnType::Date32, true),
            col(
                "price",
                ColumnType::Decimal {
                    precision: 9,
                    scale: 2,
                },
                true,
            ),
            col("name", ColumnType::Utf8, true),
        ],
        vec![],
    )
}

#[test]
fn rest_ingest_decodes_into_engine_batches() {
    let decoder = RestDecoder::load(&runtime(None), &plugin("rest_ingest")).unwrap();
    let body = br#"{"operation":"insert","request_mode":"sync","data":[
        {"id":1,"small":-5,"day":"1970-01-02","price":"12.34","name":"a"},
        {"id":2}]}"#;
    let decoded = decoder
        .decode("demo.t", &schema(), Some("application/json"), &[], body)
        .unwrap();
    assert_eq!(decoded.mode, RequestMode::Sync);
    let rows = decoded.batch.rows();
    assert_eq!(rows.num_rows(), 2);
    assert_eq!(rows.column(0).as_primitive::<Int64Type>().values(), &[1, 2]);
    assert_eq!(rows.column(1).as_primitive::<Int32Type>().value(0), -5);
    assert_eq!(rows.column(2).as_primitive::<Date32Type>().value(0), 1);
    assert_eq!(
        rows.column(3).as_primitive::<Decimal128Type>().value(0),
        1234
    );
    assert!(rows.column(4).is_null(1));
}

#[test]
fn caller_errors_keep_row_and_column() {
    let decoder = RestDecoder::load(&runtime(None), &plugin("rest_ingest")).unwrap();
    let err = decoder
        .decode(
            "demo.t",
            &schema(),
            None,
            &[],
            br#"{"data":[{"id":1},{"id":"x"}]}"#,
        )
        .unwrap_err();
    assert!(err.is_caller_error());
    match err {
        RuntimeError::Data {
            kind, row, column, ..
        } => {
            assert_eq!(kind, DataErrorKind::InvalidValue);
            assert_eq!(row, Some(1));
            assert_eq!(column.as_deref(), Some("id"));
        }
        other => panic!("unexpected {other}"),
    }
    let err = decoder
        .decode("demo.t", &schema(), None, &[], b"{oops")
        .unwrap_err();
    assert!(matches!(
        err,
        RuntimeError::Data {
            kind: DataErrorKind::Malformed,
            ..
        }
    ));
}

#[test]
fn invalid_files_fail_to_load_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(None);
    let missing = RestDecoder::load(&runtime, &dir.path().join("nope.wasm"));
    assert!(matches!(missing, Err(RuntimeError::Load { .. })));
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm not really").unwrap();
    let err = RestDecoder::load(&runtime, &garbage).err().unwrap();
    assert!(err.to_string().contains("garbage.wasm"), "{err}");
}

#[test]
fn faults_fail_one_call_and_the_next_call_works() {
    let decoder = RestDecoder::load(&runtime(None), &plugin("faulty")).unwrap();
    let call = |body: &[u8]| decoder.decode("demo.t", &schema(), None, &[], body);
    assert!(matches!(call(b"trap"), Err(RuntimeError::Trap(_))));
    assert!(matches!(
        call(b"loop"),
        Err(RuntimeError::Timeout { ms: 1000 })
    ));
    // Out of memory on a 3-byte body: the plugin's fault, not a request too large.
    let err = call(b"oom").unwrap_err();
    assert!(matches!(err, RuntimeError::MemoryLimit { .. }), "{err}");
    assert!(!err.is_caller_error());
    for body in [&b"wrong-table"[..], b"ragged", b"wrong-type"] {
        let err = call(body).unwrap_err();
        assert!(matches!(err, RuntimeError::MalformedBatch(_)), "{err}");
        assert!(!err.is_caller_error());
    }
    // Each call runs in a fresh instance: nothing above poisoned the plugin.
    let ok = call(b"fine").unwrap();
    assert_eq!(ok.batch.num_rows(), 1);
}

/// Decoder instances are reused after a normal return (a refused body included) and never
/// after a trap or an exhausted memory: results stay the same whatever ran before.
#[test]
fn reused_decoders_stay_correct_and_faults_are_not_reused() {
    let rest = RestDecoder::load(&runtime(None), &plugin("rest_ingest")).unwrap();
    let body = br#"{"data":[{"id":1,"name":"a"},{"id":2,"small":3}]}"#;
    let first = format!(
        "{:?}",
        rest.decode("demo.t", &schema(), None, &[], body)
            .unwrap()
            .batch
    );
    for _ in 0..10 {
        let refused = rest.decode("demo.t", &schema(), None, &[], br#"{"data":[{"id":"x"}]}"#);
        assert!(
            matches!(refused, Err(RuntimeError::Data { .. })),
            "{refused:?}"
        );
        let again = rest.decode("demo.t", &schema(), None, &[], body).unwrap();
        assert_eq!(format!("{:?}", again.batch), first);
    }
    let faulty = RestDecoder::load(&runtime(None), &plugin("faulty")).unwrap();
    let call = |body: &[u8]| faulty.decode("demo.t", &schema(), None, &[], body);
    for _ in 0..3 {
        assert_eq!(call(b"fine").unwrap().batch.num_rows(), 1);
        assert!(matches!(call(b"trap"), Err(RuntimeError::Trap(_))));
        assert!(matches!(
            call(b"oom"),
            Err(RuntimeError::MemoryLimit { .. })
        ));
    }
    assert_eq!(call(b"fine").unwrap().batch.num_rows(), 1);
}

#[test]
fn compiled_components_are_cached_on_disk() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = runtime(Some(cache.path().to_path_buf()));
    RestDecoder::load(&runtime, &plugin("rest_ingest")).unwrap();
    let cached: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    // A second load (a restart) uses the artifact and still decodes.
    let decoder = RestDecoder::load(&runtime, &plugin("rest_ingest")).unwrap();
    decoder
        .decode("demo.t", &schema(), None, &[], br#"{"data":{"id":3}}"#)
        .unwrap();
}

/// `{"data":[{"id":0,"small":-5,...},...]}` of at least `size` bytes (`full`), or of rows with
/// just an id (the decoder's worst case per body byte).
fn large_body(full: bool, size: usize) -> Vec<u8> {
    let mut body = br#"{"operation":"insert","data":["#.to_vec();
    let mut id = 0u64;
    while body.len() < size {
        if id > 0 {
            body.push(b',');
        }
        let row = if full {
            format!(
                r#"{{"id":{id},"small":-5,"day":"2024-01-02","price":"12.34","name":"name-{id}"}}"#
            )
        } else {
            format!(r#"{{"id":{id}}}"#)
        };
        body.extend_from_slice(row.as_bytes());
        id += 1;
    }
    body.extend_from_slice(b"]}");
    body
}

#[test]
fn a_body_below_the_body_limit_decodes() {
    // The host's defaults: 256 MiB per plugin, 64 MiB bodies. A 58 MB body needs ~260 MiB of
    // decoder memory; the decoder's limit grows with the body it decodes.
    let runtime = PluginRuntime::new(RuntimeConfig::default()).unwrap();
    let decoder = RestDecoder::load(&runtime, &plugin("rest_ingest")).unwrap();
    let body = large_body(true, 58_000_000);
    let decoded = decoder
        .decode("demo.t", &schema(), None, &[], &body)
        .unwrap();
    assert_eq!(decoded.batch.num_rows(), 718_793);
}

#[test]
fn a_body_too_large_to_decode_is_resource_exhausted() {
    let runtime = PluginRuntime::new(RuntimeConfig {
        memory_limit_bytes: 64 * 1024 * 1024,
        max_body_bytes: 1024 * 1024,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let decoder = RestDecoder::load(&runtime, &plugin("rest_ingest")).unwrap();
    // Far more than 69 MiB can hold once decoded (the fast path needs ~3 bytes per body byte
    // for rows of one integer: the body, the column, validity and slack).
    let body = large_body(false, 30_000_000);
    let err = decoder
        .decode("demo.t", &schema(), None, &[], &body)
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::ResourceExhausted { limit_bytes } if limit_bytes == 69 * 1024 * 1024),
        "{err}"
    );
    assert!(err.is_caller_error());
    assert!(err.to_string().contains("69 MiB"), "{err}");
}
