//! A source's I/O runs on the thread that calls it (see `crate::call_io::LocalIo`), against
//! the real faulty_source component (built by `build_plugins`).

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::sandbox::RuntimeConfig;

fn faulty_source() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = target.join("wasm32-wasip2/release/faulty_source.wasm");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p faulty_source --target wasm32-wasip2 --release`",
        path.display()
    );
    path
}

fn load(capabilities: Capabilities) -> SourcePlugin {
    let runtime = PluginRuntime::new(RuntimeConfig {
        memory_limit_bytes: 64 * 1024 * 1024,
        ..RuntimeConfig::default()
    })
    .unwrap();
    SourcePlugin::load(&runtime, &faulty_source(), "local-io", capabilities).unwrap()
}

/// Runs `f` on its own thread and gives up after `limit` (so the test fails, not hangs).
fn within<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("still blocked after {limit:?}"))
}

/// Occupies every worker of the shared plugin I/O runtime (nothing drives its reactor or
/// timers) until dropped.
struct StalledSharedIo(Vec<mpsc::Sender<()>>);

impl StalledSharedIo {
    fn new() -> StalledSharedIo {
        let io = crate::call_io::shared_io().unwrap();
        let (started_tx, started_rx) = mpsc::channel();
        let mut release = Vec::new();
        // More tasks than workers: each worker that picks one up blocks in it.
        for _ in 0..8 {
            let (tx, rx) = mpsc::channel::<()>();
            release.push(tx);
            let started = started_tx.clone();
            io.spawn(async move {
                let _ = started.send(());
                // A backstop, so a failed test cannot hold the workers forever.
                let _ = rx.recv_timeout(Duration::from_secs(60));
            });
        }
        // At least one worker is held; the others pick up the queued tasks as they park.
        let _ = started_rx.recv_timeout(Duration::from_secs(10));
        StalledSharedIo(release)
    }
}

impl Drop for StalledSharedIo {
    fn drop(&mut self) {
        for tx in &self.0 {
            let _ = tx.send(());
        }
    }
}

#[test]
fn a_source_drives_its_own_sockets_on_the_calling_thread() {
    // A server that answers each connection with one byte, a moment after accepting it (so
    // the plugin's read has to wait for the socket to become readable).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::sleep(Duration::from_millis(100));
            let _ = stream.write_all(b"x");
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let source = load(Capabilities {
        network: vec![addr.clone()],
        call_timeout: Some(Duration::from_secs(10)),
        ..Capabilities::default()
    });
    let config = format!(
        r#"{{"table": "local.t", "rows": 10, "fault": "block", "block_in": "open", "block_addr": "{addr}"}}"#
    );
    // With the shared runtime stalled, a source whose connect and read waited on it would
    // hang; the source's own runtime serves them on this thread.
    let stalled = StalledSharedIo::new();
    let outcome = within(Duration::from_secs(30), move || {
        source.start(&config, &ResumePoint::default()).err()
    });
    drop(stalled);
    match outcome {
        Some(RuntimeError::Plugin(message)) => {
            assert!(message.contains("answered 1 byte"), "{message}")
        }
        other => panic!("expected the plugin's report of the byte read, got {other:?}"),
    }
}

#[test]
fn a_source_may_be_called_and_dropped_inside_an_async_task() {
    let source = load(Capabilities::default());
    // Tokio refuses to nest `block_on` (the source's runtime inside this one) and to drop a
    // runtime from async code without shutting it down in the background: calls from an
    // async caller run on a helper thread, and the drop does not wait.
    let outer = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    outer.block_on(async move {
        let (mut running, _) = source
            .start(
                r#"{"table": "local.t", "rows": 10}"#,
                &ResumePoint::default(),
            )
            .unwrap();
        let poll = running.poll(100, 100).unwrap();
        assert!(!poll.events.is_empty());
        drop(running)
    });
}
