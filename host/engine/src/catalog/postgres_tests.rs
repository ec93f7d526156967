//! The Postgres catalog against a real, throwaway Postgres 15 cluster (initdb + pg_ctl on a
//! loopback port, as `tests/e2e/pg.py` does). Skipped, with a message, where Postgres 15 is
//! not installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::PostgresCatalog;
use crate::catalog::{CatalogBackend, CatalogEntry};
use crate::error::EngineError;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running cluster, stopped (immediately) when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

/// Runs a Postgres binary, as the `postgres` OS user when we are root (initdb refuses root).
fn pg(bin: &str, args: &[&str]) -> std::process::Output {
    let path = Path::new(PG_BIN).join(bin);
    let as_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let mut cmd = if as_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    let out = cmd.args(args).output().expect("run a Postgres binary");
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn start_cluster() -> Option<Cluster> {
    if !Path::new(PG_BIN).join("initdb").exists() {
        eprintln!("skipped: Postgres 15 is not installed at {PG_BIN}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    // The cluster runs as `postgres`; let it own the directory.
    let _ = Command::new("chown")
        .args(["-R", "postgres"])
        .arg(dir.path())
        .status();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cluster = Cluster { dir, port };
    let data = cluster.data();
    let data = data.to_str().unwrap();
    pg(
        "initdb",
        &["-D", data, "-A", "trust", "-U", "postgres", "--no-sync"],
    );
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
        cluster.dir.path().display()
    );
    let log = cluster.dir.path().join("log");
    pg(
        "pg_ctl",
        &[
            "-D",
            data,
            "-o",
            &options,
            "-l",
            log.to_str().unwrap(),
            "-w",
            "start",
        ],
    );
    Some(cluster)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = std::panic::catch_unwind(|| {
            pg(
                "pg_ctl",
                &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"],
            )
        });
    }
}

fn entry(name: &str, namespace: &str, table: &str) -> CatalogEntry {
    CatalogEntry {
        name: name.into(),
        id: format!("id-{name}"),
        namespace: namespace.into(),
        table: table.into(),
        schema_json: "{}".into(),
        options_json: "{}".into(),
        metadata_location: "/m/0.json".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_catalog_create_list_swap_remove_between_two_hosts() {
    let Some(cluster) = start_cluster() else {
        return;
    };
    let url = cluster.url();
    let a = PostgresCatalog::connect(&url, "host-a".into())
        .await
        .unwrap();
    // A second host connecting at the same time finds the layout already there.
    let b = PostgresCatalog::connect(&url, "host-b".into())
        .await
        .unwrap();

    a.create(&entry("demo.users", "demo", "users"))
        .await
        .unwrap();
    // Same host: the usual TableExists, for the name and for the identifier.
    assert!(matches!(
        a.create(&entry("demo.users", "demo", "users2")).await,
        Err(EngineError::TableExists(_))
    ));
    assert!(matches!(
        a.create(&entry("alias", "demo", "users")).await,
        Err(EngineError::TableExists(_))
    ));
    // Another host: refused, naming the owner.
    match b.create(&entry("demo.users", "demo", "users")).await {
        Err(EngineError::TableRegisteredElsewhere { table, owner }) => {
            assert_eq!(table, "demo.users");
            assert!(owner.contains("host-a"), "{owner}");
        }
        other => panic!("expected TableRegisteredElsewhere, got {other:?}"),
    }
    // The same API name is free on another host (names are per host).
    b.create(&entry("demo.users", "demo", "b_users"))
        .await
        .unwrap();
    let names = |list: Vec<CatalogEntry>| {
        list.into_iter()
            .map(|e| format!("{}={}.{}", e.name, e.namespace, e.table))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(a.list().await.unwrap()), ["demo.users=demo.users"]);
    assert_eq!(names(b.list().await.unwrap()), ["demo.users=demo.b_users"]);

    // Compare-and-swap: the second writer with a stale pointer loses, loudly.
    a.swap_metadata("demo", "users", "/m/0.json", "/m/1.json")
        .await
        .unwrap();
    assert!(matches!(
        b.swap_metadata("demo", "users", "/m/0.json", "/m/2.json")
            .await,
        Err(EngineError::CommitConflict(_))
    ));
    let mut evolved = entry("demo.users", "demo", "users");
    evolved.schema_json = r#"{"v":2}"#.into();
    assert!(matches!(
        a.swap_schema(&evolved, "/m/0.json", "/m/2.json").await,
        Err(EngineError::CommitConflict(_))
    ));
    a.swap_schema(&evolved, "/m/1.json", "/m/2.json")
        .await
        .unwrap();
    let listed = a.list().await.unwrap();
    assert_eq!(listed[0].metadata_location, "/m/2.json");
    assert_eq!(listed[0].schema_json, r#"{"v":2}"#);

    // Another host's remove does not touch a table it does not own.
    b.remove(&entry("alias", "demo", "users")).await.unwrap();
    assert_eq!(a.list().await.unwrap().len(), 1);
    a.remove(&listed[0]).await.unwrap();
    assert!(a.list().await.unwrap().is_empty());
    assert_eq!(b.list().await.unwrap().len(), 1);

    // An identifier some other writer registered is refused as such.
    let client = a.client().await.unwrap();
    client
        .as_ref()
        .unwrap()
        .execute(
            "INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name, metadata_location)
             VALUES ('moonlink', 'ext', 'spark_table', '/x.json')",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    match a
        .create(&entry("ext.spark_table", "ext", "spark_table"))
        .await
    {
        Err(EngineError::TableRegisteredElsewhere { owner, .. }) => {
            assert!(owner.contains("another writer"), "{owner}")
        }
        other => panic!("expected TableRegisteredElsewhere, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_catalog_two_hosts_racing_for_one_identifier_get_one_table() {
    let Some(cluster) = start_cluster() else {
        return;
    };
    let url = cluster.url();
    for round in 0..5 {
        let (a, b) = tokio::join!(
            PostgresCatalog::connect(&url, "host-a".into()),
            PostgresCatalog::connect(&url, "host-b".into())
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let table = format!("t{round}");
        let wanted = entry("x", "race", &table);
        let (ra, rb) = tokio::join!(a.create(&wanted), b.create(&wanted));
        // Exactly one wins; the loser is told who holds the table.
        match (&ra, &rb) {
            (Ok(()), Err(EngineError::TableRegisteredElsewhere { owner, .. })) => {
                assert!(owner.contains("host-a"), "{owner}")
            }
            (Err(EngineError::TableRegisteredElsewhere { owner, .. }), Ok(())) => {
                assert!(owner.contains("host-b"), "{owner}")
            }
            other => panic!("round {round}: {other:?}"),
        }
        let listed = a.list().await.unwrap().len() + b.list().await.unwrap().len();
        assert_eq!(listed, 1);
        for catalog in [&a, &b] {
            catalog.remove(&entry("x", "race", &table)).await.unwrap();
        }
    }
}

#[tokio::test]
async fn postgres_catalog_refused_connection_is_an_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://moon@127.0.0.1:{port}/lake");
    match PostgresCatalog::connect(&url, "h".into()).await {
        Err(EngineError::Catalog(message)) => {
            assert!(message.to_lowercase().contains("refused"), "{message}")
        }
        Err(other) => panic!("expected a catalog error, got {other:?}"),
        Ok(_) => panic!("connected to a closed port"),
    }
}
