//! The sandbox against real components (built by `build_plugins`): name lookups need a grant,
//! a plugin blocked in a host call still times out, and the compiled cache is verified.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use moonlink_engine::{ColumnSchema, ColumnType, TableSchema};
use moonlink_runtime::{
    Capabilities, PluginRuntime, RestDecoder, ResumePoint, RuntimeConfig, RuntimeError,
    SourcePlugin,
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

fn runtime(call_timeout: Duration, cache_dir: Option<PathBuf>) -> PluginRuntime {
    PluginRuntime::new(RuntimeConfig {
        memory_limit_bytes: 64 * 1024 * 1024,
        call_timeout,
        cache_dir,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

/// Log lines written while `f` runs on this thread.
fn capture_logs<R>(f: impl FnOnce() -> R) -> (R, String) {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let logs = String::from_utf8_lossy(&buffer.0.lock().unwrap()).into_owned();
    (result, logs)
}

fn settings(extra: &str) -> String {
    format!(r#"{{"table": "sandbox.t", "rows": 10{extra}}}"#)
}

/// Starts faulty_source with `report_probes`: `open` fails with its probe lines.
fn probe(capabilities: Capabilities, extra: &str) -> (String, String) {
    let runtime = runtime(Duration::from_secs(5), None);
    let source =
        SourcePlugin::load(&runtime, &plugin("faulty_source"), "probe", capabilities).unwrap();
    let (result, logs) = capture_logs(|| {
        source.start(
            &settings(&format!(r#", "report_probes": true{extra}"#)),
            &ResumePoint::default(),
        )
    });
    match result {
        Err(RuntimeError::Plugin(lines)) => (lines, logs),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("report_probes must fail open"),
    }
}

#[test]
fn a_name_is_looked_up_only_when_granted() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // `.invalid` can never resolve: if the lookup reached a resolver the error would be
    // "name not found" (or a resolver failure), never "permission denied".
    let secret = "secret-abc123.exfil.invalid";
    let (lines, logs) = probe(
        Capabilities {
            network: vec![format!("localhost:{port}")],
            ..Capabilities::default()
        },
        &format!(
            r#", "lookup": ["{secret}", "localhost", "127.0.0.1"], "connect": ["localhost:{port}"]"#
        ),
    );
    assert!(
        lines.contains(&format!("probe lookup {secret}: failed"))
            && lines.contains("PermissionDenied"),
        "{lines}"
    );
    assert!(
        logs.contains("name lookup denied") && logs.contains(secret),
        "the host says why: {logs}"
    );
    // The granted name still resolves (and connects), IP literals need no grant.
    assert!(lines.contains("probe lookup localhost: ok ("), "{lines}");
    assert!(
        lines.contains("probe lookup 127.0.0.1: ok (127.0.0.1)"),
        "{lines}"
    );
    assert!(
        lines.contains(&format!("probe connect localhost:{port}: ok")),
        "{lines}"
    );
    assert_eq!(logs.matches("name lookup denied").count(), 1, "{logs}");
}

#[test]
fn without_a_granted_name_every_name_lookup_is_denied() {
    // No network at all, and (the issue's probe) only an IP address granted.
    for network in [vec![], vec!["127.0.0.1:1".to_string()]] {
        let (lines, logs) = probe(
            Capabilities {
                network: network.clone(),
                ..Capabilities::default()
            },
            r#", "lookup": ["localhost", "secret-abc123.exfil.example.com"]"#,
        );
        assert!(
            lines.contains("probe lookup localhost: failed"),
            "{network:?}: {lines}"
        );
        assert_eq!(
            lines.matches("PermissionDenied").count(),
            2,
            "{network:?}: {lines}"
        );
        assert_eq!(
            logs.matches("name lookup denied").count(),
            2,
            "{network:?}: {logs}"
        );
    }
}

/// A server that accepts connections and never sends a byte.
fn silent_server() -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let thread = std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            match listener.accept() {
                Ok((stream, _)) => held.push(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (addr, thread)
}

/// Runs `f` on its own thread and gives up after `limit` (the code before the fix blocked
/// forever: the test must fail, not hang).
fn within<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("still blocked after {limit:?}"))
}

#[test]
fn a_plugin_blocked_in_a_host_call_times_out() {
    let (addr, _server) = silent_server();
    let capabilities = Capabilities {
        network: vec![addr.clone()],
        call_timeout: Some(Duration::from_millis(500)),
        ..Capabilities::default()
    };
    let runtime = runtime(Duration::from_secs(5), None);
    let source =
        SourcePlugin::load(&runtime, &plugin("faulty_source"), "stall", capabilities).unwrap();
    let config = settings(&format!(
        r#", "fault": "block", "fault_at": 0, "block_addr": "{addr}""#
    ));
    let (elapsed, poll, again) = within(Duration::from_secs(20), move || {
        let (mut running, _) = source.start(&config, &ResumePoint::default()).unwrap();
        let started = Instant::now();
        let poll = running.poll(100, 100).err();
        let elapsed = started.elapsed();
        // The broken instance refuses further calls instead of touching its store.
        let again = running.poll(100, 100).err();
        (elapsed, poll, again)
    });
    assert!(
        matches!(poll, Some(RuntimeError::Timeout { ms: 500 })),
        "{poll:?}"
    );
    assert!(
        poll.unwrap().to_string().contains("timed out after 500 ms"),
        "the message names the limit"
    );
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert!(matches!(again, Some(RuntimeError::Plugin(_))), "{again:?}");
}

#[test]
fn open_blocked_in_a_host_call_times_out() {
    let (addr, _server) = silent_server();
    let capabilities = Capabilities {
        network: vec![addr.clone()],
        call_timeout: Some(Duration::from_millis(400)),
        ..Capabilities::default()
    };
    let runtime = runtime(Duration::from_secs(5), None);
    let source =
        SourcePlugin::load(&runtime, &plugin("faulty_source"), "stall", capabilities).unwrap();
    let config = settings(&format!(
        r#", "fault": "block", "block_in": "open", "block_addr": "{addr}""#
    ));
    let outcome = within(Duration::from_secs(20), move || {
        let first = source.start(&config, &ResumePoint::default()).err();
        // A fresh start is independent of the timed-out one.
        let second = source.start(&config, &ResumePoint::default()).err();
        (first, second)
    });
    for err in [outcome.0, outcome.1] {
        assert!(
            matches!(err, Some(RuntimeError::Timeout { ms: 400 })),
            "{err:?}"
        );
    }
}

fn cwasm_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    files.sort();
    files
}

fn schema() -> TableSchema {
    TableSchema::new(
        vec![ColumnSchema {
            name: "id".into(),
            data_type: ColumnType::Int64,
            nullable: false,
        }],
        vec![],
    )
}

/// rest_ingest decodes this as two rows; the `faulty` decoder decodes anything as one.
fn rows_decoded(decoder: &RestDecoder) -> usize {
    decoder
        .decode(
            "demo.t",
            &schema(),
            None,
            &[],
            br#"{"data":[{"id":1},{"id":2}]}"#,
        )
        .unwrap()
        .batch
        .num_rows()
}

#[test]
fn tampered_cache_entries_are_rejected_and_rebuilt() {
    let cache = tempfile::tempdir().unwrap();
    let runtime = runtime(Duration::from_secs(5), Some(cache.path().to_path_buf()));
    let rest = plugin("rest_ingest");
    assert_eq!(
        rows_decoded(&RestDecoder::load(&runtime, &rest).unwrap()),
        2
    );
    let rest_entry = cwasm_files(cache.path()).pop().unwrap();
    assert_eq!(
        rows_decoded(&RestDecoder::load(&runtime, &plugin("faulty")).unwrap()),
        1
    );
    let faulty_entry = cwasm_files(cache.path())
        .into_iter()
        .find(|p| *p != rest_entry)
        .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = std::fs::metadata(cache.path().join("cache.key")).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
    }

    // A valid entry of another component of the same world, copied over rest_ingest's:
    // loading it would run the other component's code.
    std::fs::copy(&faulty_entry, &rest_entry).unwrap();
    let (decoder, logs) = capture_logs(|| RestDecoder::load(&runtime, &rest).unwrap());
    assert_eq!(rows_decoded(&decoder), 2, "the swapped entry was used");
    assert!(logs.contains("cache entry rejected"), "{logs}");
    assert_ne!(
        std::fs::read(&rest_entry).unwrap(),
        std::fs::read(&faulty_entry).unwrap(),
        "the entry was rewritten"
    );

    // Flipped bytes in the compiled code.
    let mut bytes = std::fs::read(&rest_entry).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&rest_entry, &bytes).unwrap();
    let (decoder, logs) = capture_logs(|| RestDecoder::load(&runtime, &rest).unwrap());
    assert_eq!(rows_decoded(&decoder), 2);
    assert!(logs.contains("cache entry rejected"), "{logs}");

    // Junk; then the rebuilt entry is used again without complaint.
    std::fs::write(&rest_entry, b"not a compiled component").unwrap();
    let (_, logs) = capture_logs(|| RestDecoder::load(&runtime, &rest).unwrap());
    assert!(logs.contains("cache entry rejected"), "{logs}");
    let (decoder, logs) = capture_logs(|| RestDecoder::load(&runtime, &rest).unwrap());
    assert_eq!(rows_decoded(&decoder), 2);
    assert!(!logs.contains("rejected"), "{logs}");
    assert_eq!(cwasm_files(cache.path()).len(), 2);

    // A key others could read is replaced, which invalidates every entry made with it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key_path = cache.path().join("cache.key");
        let old_key = std::fs::read(&key_path).unwrap();
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (decoder, logs) = capture_logs(|| {
            let runtime = self::runtime(Duration::from_secs(5), Some(cache.path().to_path_buf()));
            RestDecoder::load(&runtime, &rest).unwrap()
        });
        assert_eq!(rows_decoded(&decoder), 2);
        assert!(logs.contains("not private"), "{logs}");
        assert!(logs.contains("cache entry rejected"), "{logs}");
        assert_ne!(std::fs::read(&key_path).unwrap(), old_key);
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn a_directory_holding_the_cache_cannot_be_granted() {
    let data = tempfile::tempdir().unwrap();
    let cache = data.path().join("cache/plugins");
    let runtime = runtime(Duration::from_secs(5), Some(cache.clone()));
    for granted in [data.path().to_path_buf(), cache.clone()] {
        let capabilities = Capabilities {
            directories: vec![(granted.clone(), "/data".into())],
            ..Capabilities::default()
        };
        let source =
            SourcePlugin::load(&runtime, &plugin("faulty_source"), "dir", capabilities).unwrap();
        let err = source
            .start(&settings(""), &ResumePoint::default())
            .err()
            .unwrap();
        assert!(
            matches!(err, RuntimeError::Capability(ref m) if m.contains("compiled-plugin cache")),
            "{err}"
        );
    }
    // A sibling directory is fine.
    let sibling = data.path().join("shared");
    std::fs::create_dir(&sibling).unwrap();
    let capabilities = Capabilities {
        directories: vec![(sibling, "/data".into())],
        ..Capabilities::default()
    };
    let source =
        SourcePlugin::load(&runtime, &plugin("faulty_source"), "dir", capabilities).unwrap();
    assert!(source.start(&settings(""), &ResumePoint::default()).is_ok());
}
