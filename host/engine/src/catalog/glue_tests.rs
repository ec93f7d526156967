//! The Glue catalog against moto's Glue API (`moto_server`, installed by `tests/requirements.txt`
//! into the test venv). Skipped, with a message, where moto is not installed. moto ignores
//! `VersionId`, so these tests see the expected-pointer check, not Glue's own refusal.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::GlueCatalog;
use crate::catalog::{CatalogBackend, CatalogEntry};
use crate::error::EngineError;

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_server() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("MOONLINK_MOTO_SERVER").map(PathBuf::from),
        std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cache/moonlink-venv/bin/moto_server")),
    ];
    candidates.into_iter().flatten().find(|p| p.exists())
}

async fn start_moto() -> Option<Moto> {
    let Some(exe) = moto_server() else {
        eprintln!("skipped: moto_server not found (install tests/requirements.txt)");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(exe)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "moto_server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(moto)
}

fn credentials() -> aws_credential_types::Credentials {
    aws_credential_types::Credentials::new("test-key", "test-secret", None, None, "test")
}

async fn connect(moto: &Moto, owner: &str) -> GlueCatalog {
    GlueCatalog::connect_with(
        "us-east-1",
        Some(&moto.endpoint),
        owner.into(),
        credentials(),
    )
    .await
    .unwrap()
}

fn entry(name: &str, namespace: &str, table: &str) -> CatalogEntry {
    CatalogEntry {
        name: name.into(),
        id: format!("id-{name}"),
        namespace: namespace.into(),
        table: table.into(),
        schema_json: r#"{"columns":[]}"#.into(),
        options_json: "{}".into(),
        metadata_location: format!("/wh/{namespace}/{table}/metadata/0.json"),
    }
}

#[tokio::test]
async fn glue_catalog_create_list_swap_remove_between_two_hosts() {
    let Some(moto) = start_moto().await else {
        return;
    };
    let a = connect(&moto, "host-a").await;
    let b = connect(&moto, "host-b").await;

    a.create(&entry("demo.users", "demo", "users"))
        .await
        .unwrap();
    assert!(matches!(
        a.create(&entry("again", "demo", "users")).await,
        Err(EngineError::TableExists(_))
    ));
    match b.create(&entry("demo.users", "demo", "users")).await {
        Err(EngineError::TableRegisteredElsewhere { owner, .. }) => {
            assert!(owner.contains("host-a"), "{owner}")
        }
        other => panic!("expected TableRegisteredElsewhere, got {other:?}"),
    }
    b.create(&entry("demo.users", "demo", "b_users"))
        .await
        .unwrap();
    let listed = a.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].id.as_str()),
        ("demo.users", "id-demo.users")
    );
    assert_eq!(listed[0].schema_json, r#"{"columns":[]}"#);
    assert_eq!(b.list().await.unwrap()[0].table, "b_users");

    // Glue carries what Iceberg's GlueCatalog reads.
    let table = a.get_table("demo", "users").await.unwrap().unwrap();
    assert_eq!(table["Parameters"]["table_type"], "ICEBERG");
    assert_eq!(table["StorageDescriptor"]["Location"], "/wh/demo/users");

    // Compare-and-swap.
    let first = "/wh/demo/users/metadata/0.json";
    a.swap_metadata("demo", "users", first, "/m/1.json")
        .await
        .unwrap();
    assert!(matches!(
        a.swap_metadata("demo", "users", first, "/m/2.json").await,
        Err(EngineError::CommitConflict(_))
    ));
    // Another host cannot move a table it does not own, even with the right pointer.
    assert!(matches!(
        b.swap_metadata("demo", "users", "/m/1.json", "/m/2.json")
            .await,
        Err(EngineError::CommitConflict(_))
    ));
    let mut evolved = entry("demo.users", "demo", "users");
    evolved.schema_json = r#"{"v":2}"#.into();
    a.swap_schema(&evolved, "/m/1.json", "/m/2.json")
        .await
        .unwrap();
    let table = a.get_table("demo", "users").await.unwrap().unwrap();
    assert_eq!(table["Parameters"]["metadata_location"], "/m/2.json");
    assert_eq!(
        table["Parameters"]["previous_metadata_location"],
        "/m/1.json"
    );
    assert_eq!(a.list().await.unwrap()[0].schema_json, r#"{"v":2}"#);

    // A table another writer registered is refused as such.
    a.call(
        "CreateTable",
        json!({ "DatabaseName": "demo", "TableInput": { "Name": "spark_t",
            "Parameters": { "table_type": "ICEBERG", "metadata_location": "/x.json" } } }),
    )
    .await
    .unwrap();
    match a.create(&entry("demo.spark_t", "demo", "spark_t")).await {
        Err(EngineError::TableRegisteredElsewhere { owner, .. }) => {
            assert!(owner.contains("another writer"), "{owner}")
        }
        other => panic!("expected TableRegisteredElsewhere, got {other:?}"),
    }

    // Remove: only the owner's remove deletes.
    b.remove(&entry("demo.users", "demo", "users"))
        .await
        .unwrap();
    assert_eq!(a.list().await.unwrap().len(), 1);
    a.remove(&entry("demo.users", "demo", "users"))
        .await
        .unwrap();
    assert!(a.list().await.unwrap().is_empty());
    assert_eq!(b.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn glue_catalog_unreachable_endpoint_is_an_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    match GlueCatalog::connect_with("us-east-1", Some(&endpoint), "h".into(), credentials()).await {
        Err(EngineError::Catalog(message)) => assert!(message.starts_with("glue:"), "{message}"),
        Err(other) => panic!("expected a catalog error, got {other:?}"),
        Ok(_) => panic!("connected to a closed port"),
    }
}

/// A one-trick Glue: `GetTable` answers a table this host owns at `/m/1.json`, `UpdateTable`
/// answers what real Glue does when the `VersionId` is stale. Returns its endpoint and the
/// bodies of the `UpdateTable` calls it saw.
async fn stale_version_glue() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let updates = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = updates.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then Content-Length bytes of body.
            let (head, body) = loop {
                let n = socket.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break (String::new(), Vec::new());
                }
                request.extend_from_slice(&buf[..n]);
                if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while request.len() < end + 4 + length {
                        let n = socket.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        request.extend_from_slice(&buf[..n]);
                    }
                    break (head, request[end + 4..].to_vec());
                }
            };
            let (status, answer) = if head.contains("awsglue.gettable") {
                let table = json!({ "Table": { "Name": "users", "VersionId": "7",
                    "Parameters": { "moonlink.owner": "host-a", "metadata_location": "/m/1.json",
                                    "table_type": "ICEBERG" } } });
                ("200 OK", table)
            } else if head.contains("awsglue.updatetable") {
                seen.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or_default());
                let error = json!({ "__type": "ConcurrentModificationException",
                    "message": "Update table failed due to concurrent modifications." });
                ("400 Bad Request", error)
            } else {
                ("200 OK", json!({ "DatabaseList": [] }))
            };
            let answer = answer.to_string();
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.1\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    (endpoint, updates)
}

#[tokio::test]
async fn glue_refusing_a_stale_version_id_is_a_commit_conflict() {
    let (endpoint, updates) = stale_version_glue().await;
    let a = GlueCatalog::connect_with("us-east-1", Some(&endpoint), "host-a".into(), credentials())
        .await
        .unwrap();
    match a
        .swap_metadata("demo", "users", "/m/1.json", "/m/2.json")
        .await
    {
        Err(EngineError::CommitConflict(table)) => assert_eq!(table, "demo.users"),
        other => panic!("expected CommitConflict, got {other:?}"),
    }
    // The update carried the VersionId GetTable returned, and only TableInput's fields.
    let updates = updates.lock().unwrap();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0]["VersionId"], "7");
    let input = &updates[0]["TableInput"];
    assert_eq!(input["Parameters"]["metadata_location"], "/m/2.json");
    assert_eq!(
        input["Parameters"]["previous_metadata_location"],
        "/m/1.json"
    );
    assert!(input.get("VersionId").is_none());
}
