//! The warehouse IO stack: every data, Puffin, manifest and metadata file goes through
//! `object_store`, on the local filesystem or in S3 (`s3://bucket/prefix`), so moving a
//! warehouse to object storage is a configuration change.
//!
//! [`Warehouse`] is what the engine uses directly; `iceberg_io::ObjectStoreStorage` plugs the
//! same store into the `iceberg` crate (manifest and Parquet writers) through its `Storage`
//! trait. Remote warehouses keep a local copy of recently written files (`file_cache`), so
//! compaction and index rebuilds do not download what was just uploaded.
//!
//! S3 requests are retried with exponential back-off by `object_store` (server errors,
//! throttling, resets and timeouts) up to [`S3_RETRY_TIMEOUT`]; a commit whose upload still
//! fails is retried by the table's commit loop, so no snapshot references a missing object.

mod file_cache;
mod iceberg_io;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use iceberg::io::{FileIO, FileIOBuilder};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
pub use file_cache::ReadStats;
use file_cache::{FileCache, ReadCounters};
use iceberg_io::{ObjectStoreStorage, ObjectStoreStorageFactory};

/// How long one S3 request is retried (with back-off) before the error reaches the engine,
/// whose commit loop then retries the whole commit on its next tick.
pub const S3_RETRY_TIMEOUT: Duration = Duration::from_secs(15);

/// How long opening a warehouse waits for the store to answer before refusing to start.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// How to reach an S3 or S3-compatible warehouse. Unset fields fall back to the standard AWS
/// environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Options {
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:9000`).
    pub endpoint: Option<String>,
    /// Region; required here or in `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    /// Path-style addressing (`ENDPOINT/bucket/key`) instead of virtual-hosted style.
    pub path_style: bool,
    /// Allow plain `http://` endpoints.
    pub allow_http: bool,
    /// Time limit of one S3 request (default 30 s); a stalled request is cut and retried.
    #[serde(default)]
    pub request_timeout_secs: Option<u64>,
}

/// Where a warehouse lives and how to reach it (what `--warehouse` and `--s3-*` say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarehouseSpec {
    /// `s3://bucket/prefix` or an absolute local directory.
    pub url: String,
    /// S3 settings (ignored for a local directory).
    #[serde(default)]
    pub s3: S3Options,
}

/// Which store a location belongs to and how it maps to the store's keys.
#[derive(Debug, Clone)]
enum Locations {
    /// The local filesystem, rooted at `/`: a key is the path without its leading `/`.
    Local,
    /// One S3 bucket: locations are `s3://bucket/key`.
    S3 { bucket: String },
}

/// The store, how locations map into it, and the local cache in front of it.
#[derive(Debug, Clone)]
struct Backend {
    store: Arc<dyn ObjectStore>,
    locations: Locations,
    spec: WarehouseSpec,
    cache: Option<Arc<FileCache>>,
    counters: Arc<ReadCounters>,
}

fn foreign(location: &str, spec: &WarehouseSpec) -> object_store::Error {
    object_store::Error::Generic {
        store: "warehouse",
        source: format!("'{location}' is outside the warehouse {}", spec.url).into(),
    }
}

impl Backend {
    /// Builds the store a spec names (no network traffic yet).
    fn connect(spec: &WarehouseSpec) -> Result<Backend> {
        let (store, locations): (Arc<dyn ObjectStore>, _) = match spec.url.split_once("://") {
            Some(("s3", rest)) => {
                let bucket = rest.split('/').next().unwrap_or_default().to_string();
                (Arc::new(s3_store(spec, &bucket)?), Locations::S3 { bucket })
            }
            Some(("file", _)) | None => (
                Arc::new(LocalFileSystem::new().with_automatic_cleanup(true)),
                Locations::Local,
            ),
            Some((scheme, _)) => {
                return Err(EngineError::WarehouseUnavailable(format!(
                    "--warehouse {}: unsupported scheme '{scheme}://' (use s3://bucket/prefix or a local directory)",
                    spec.url
                )))
            }
        };
        Ok(Backend {
            store,
            locations,
            spec: spec.clone(),
            cache: None,
            counters: Arc::default(),
        })
    }

    /// The store key of a warehouse location.
    fn path(&self, location: &str) -> std::result::Result<ObjectPath, object_store::Error> {
        let key = match &self.locations {
            // `/abs`, `file:///abs` and Java's `file:/abs` name the same file.
            Locations::Local => location
                .strip_prefix("file:")
                .unwrap_or(location)
                .trim_start_matches('/'),
            Locations::S3 { bucket } => location
                .strip_prefix("s3://")
                .and_then(|rest| rest.strip_prefix(bucket.as_str()))
                .and_then(|rest| rest.strip_prefix('/'))
                .ok_or_else(|| foreign(location, &self.spec))?,
        };
        Ok(ObjectPath::parse(key)?)
    }

    /// The warehouse location of a store key (the inverse of [`Backend::path`]).
    fn location(&self, key: &ObjectPath) -> String {
        match &self.locations {
            Locations::Local => format!("/{key}"),
            Locations::S3 { bucket } => format!("s3://{bucket}/{key}"),
        }
    }

    fn cacheable(&self, len: usize) -> bool {
        self.cache.is_some() && len <= MAX_CACHED_FILE
    }

    fn cached(&self, location: &str, bytes: &[u8]) {
        if let Some(cache) = &self.cache {
            if bytes.len() <= MAX_CACHED_FILE {
                cache.insert(location, bytes);
            }
        }
    }

    fn cached_range(&self, location: &str, range: Range<u64>) -> Option<Bytes> {
        let bytes = self.cache.as_ref()?.get_range(location, range)?;
        self.counters.count_cache(bytes.len());
        Some(bytes)
    }

    async fn get(&self, location: &str) -> std::result::Result<Bytes, object_store::Error> {
        if let Some(bytes) = self.cache.as_ref().and_then(|c| c.get(location)) {
            self.counters.count_cache(bytes.len());
            return Ok(bytes);
        }
        let bytes = self.store.get(&self.path(location)?).await?.bytes().await?;
        self.counters.count_store(bytes.len());
        self.cached(location, &bytes);
        Ok(bytes)
    }

    async fn delete(&self, location: &str) -> std::result::Result<(), object_store::Error> {
        if let Some(cache) = &self.cache {
            cache.remove(location);
        }
        match self.store.delete(&self.path(location)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> std::result::Result<(), object_store::Error> {
        let path = self.path(prefix)?;
        let mut listing = self.store.list(Some(&path));
        while let Some(meta) = listing.next().await {
            let location = self.location(&meta?.location);
            self.delete(&location).await?;
        }
        Ok(())
    }
}

/// Files larger than this are never copied into the local cache (they stream to the store).
const MAX_CACHED_FILE: usize = 256 * 1024 * 1024;

fn s3_store(spec: &WarehouseSpec, bucket: &str) -> Result<object_store::aws::AmazonS3> {
    let refuse =
        |why: String| EngineError::WarehouseUnavailable(format!("--warehouse {}: {why}", spec.url));
    if bucket.is_empty() {
        return Err(refuse("no bucket name (use s3://bucket/prefix)".into()));
    }
    let region = spec
        .s3
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .filter(|r| !r.is_empty())
        .ok_or_else(|| refuse("no S3 region: set --s3-region or AWS_REGION".into()))?;
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_region(region)
        .with_retry(RetryConfig {
            max_retries: 10,
            retry_timeout: S3_RETRY_TIMEOUT,
            ..RetryConfig::default()
        })
        .with_client_options(
            ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(Duration::from_secs(
                    spec.s3.request_timeout_secs.unwrap_or(30).max(1),
                ))
                .with_allow_http(spec.s3.allow_http),
        );
    if let Some(endpoint) = &spec.s3.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if spec.s3.path_style {
        builder = builder.with_virtual_hosted_style_request(false);
    }
    if spec.s3.allow_http {
        builder = builder.with_allow_http(true);
    }
    builder.build().map_err(|e| refuse(e.to_string()))
}

/// The store the warehouse lives in.
#[derive(Debug, Clone)]
pub struct Warehouse {
    backend: Backend,
    root: String,
}

impl Warehouse {
    /// A warehouse on the local filesystem under `root` (an absolute directory).
    pub fn local(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| EngineError::io(root, e))?;
        let root = root
            .canonicalize()
            .map_err(|e| EngineError::io(root, e))?
            .to_string_lossy()
            .into_owned();
        let backend = Backend::connect(&WarehouseSpec {
            url: root.clone(),
            s3: S3Options::default(),
        })?;
        // Table locations are URIs, as Java Iceberg writes them (`file:///abs/path`).
        let root = format!("file://{root}");
        Ok(Warehouse { backend, root })
    }

    /// A warehouse under the local directory `root`, reached through `store` (an
    /// `object_store` addressing local paths): how tests put a failing store beneath the engine.
    pub fn local_with_store(root: &Path, store: Arc<dyn ObjectStore>) -> Result<Self> {
        let mut local = Warehouse::local(root)?;
        local.backend.store = store;
        Ok(local)
    }

    /// Opens the warehouse `spec` names: a local directory, or an S3 prefix — which is probed
    /// (listed) so a wrong bucket, endpoint, region or credentials refuse to start with one
    /// clear message instead of failing every commit later. `cache` is a local directory and
    /// byte budget for copies of recently written files (used for object stores only).
    pub async fn open(spec: &WarehouseSpec, cache: Option<(PathBuf, u64)>) -> Result<Self> {
        if !spec.url.contains("://") || spec.url.starts_with("file://") {
            let dir = spec.url.strip_prefix("file://").unwrap_or(&spec.url);
            if !Path::new(dir).is_absolute() {
                let cwd = std::env::current_dir().map_err(|e| EngineError::io(dir, e))?;
                return Warehouse::local(&cwd.join(dir));
            }
            return Warehouse::local(Path::new(dir));
        }
        let mut backend = Backend::connect(spec)?;
        let root = spec.url.trim_end_matches('/').to_string();
        probe(&backend, &root).await?;
        if let Some((dir, max_bytes)) = cache.filter(|(_, bytes)| *bytes > 0) {
            let cache = FileCache::open(&dir, max_bytes).map_err(|e| EngineError::io(&dir, e))?;
            backend.cache = Some(Arc::new(cache));
        }
        Ok(Warehouse { backend, root })
    }

    /// The warehouse root location; table locations live below it.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Bytes read from the store and from the local cache since the warehouse was opened.
    pub fn read_stats(&self) -> ReadStats {
        self.backend.counters.snapshot()
    }

    /// The object a location names, as the store's key: `/abs/x`, `file:/abs/x` and
    /// `file:///abs/x` are one object. Compare keys, never location strings.
    pub(crate) fn key(&self, location: &str) -> Result<String> {
        Ok(self.backend.path(location)?.to_string())
    }

    pub(crate) async fn get(&self, location: &str) -> Result<Bytes> {
        Ok(self.backend.get(location).await?)
    }

    /// Locations of every object under `prefix`.
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let path = self.backend.path(prefix)?;
        let mut listing = self.backend.store.list(Some(&path));
        let mut locations = Vec::new();
        while let Some(meta) = listing.next().await {
            locations.push(self.backend.location(&meta?.location));
        }
        Ok(locations)
    }

    pub(crate) async fn delete(&self, location: &str) -> Result<()> {
        Ok(self.backend.delete(location).await?)
    }

    /// Deletes every object under `prefix` (a table's directory when it is dropped).
    pub(crate) async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        Ok(self.backend.delete_prefix(prefix).await?)
    }

    /// A `FileIO` for the iceberg crate that reads and writes through this store.
    pub fn file_io(&self) -> FileIO {
        FileIOBuilder::new(Arc::new(ObjectStoreStorageFactory {
            storage: ObjectStoreStorage {
                backend: self.backend.clone(),
            },
        }))
        .build()
    }
}

/// Lists the warehouse prefix once, bounded in time, and turns the answer into a message that
/// names the setting to fix.
async fn probe(backend: &Backend, root: &str) -> Result<()> {
    let refuse =
        |why: String| EngineError::WarehouseUnavailable(format!("--warehouse {root}: {why}"));
    let prefix = backend
        .path(&format!("{root}/"))
        .map_err(|e| refuse(e.to_string()))?;
    let listed = tokio::time::timeout(
        PROBE_TIMEOUT,
        backend.store.list_with_delimiter(Some(&prefix)),
    )
    .await
    .map_err(|_| {
        refuse(format!(
            "the S3 endpoint did not answer within {} s (check --s3-endpoint / AWS_ENDPOINT_URL and --s3-allow-http)",
            PROBE_TIMEOUT.as_secs()
        ))
    })?;
    let Err(e) = listed else { return Ok(()) };
    // S3 answers with an XML error whose <Code> says what is wrong; object_store keeps it in
    // the message.
    let text = e.to_string();
    let code = text
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code.to_string());
    let why = match (&e, code.as_deref()) {
        (object_store::Error::NotFound { .. }, _) | (_, Some("NoSuchBucket")) => {
            "the bucket does not exist".to_string()
        }
        (object_store::Error::PermissionDenied { .. }, _)
        | (object_store::Error::Unauthenticated { .. }, _)
        | (
            _,
            Some(
                "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "ExpiredToken"
                | "InvalidToken",
            ),
        ) => format!(
            "the credentials were refused ({}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN",
            code.as_deref().unwrap_or("403")
        ),
        (_, Some(code)) => format!("S3 refused the listing: {code}"),
        // No keys in the environment: object_store fell back to the instance metadata service.
        _ if text.contains("169.254.169.254") => "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or run where an instance role is available)".to_string(),
        _ if text.contains("error sending request") || text.contains("HTTP error") => format!(
            "cannot reach the S3 endpoint (check --s3-endpoint / AWS_ENDPOINT_URL, and --s3-allow-http for http://): {}",
            text.lines().next().unwrap_or_default().chars().take(300).collect::<String>()
        ),
        // One line: the first line of the store's message, without a response body.
        _ => text.lines().next().unwrap_or_default().chars().take(300).collect(),
    };
    Err(refuse(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> WarehouseSpec {
        WarehouseSpec {
            url: url.into(),
            s3: S3Options {
                region: Some("us-east-1".into()),
                ..S3Options::default()
            },
        }
    }

    #[test]
    fn locations_map_to_keys_and_back() {
        let local = Backend::connect(&spec("/w")).unwrap();
        assert_eq!(local.path("/a/b/c.json").unwrap().as_ref(), "a/b/c.json");
        assert_eq!(local.path("file:///a/b").unwrap().as_ref(), "a/b");
        assert_eq!(local.path("file:/a/b").unwrap().as_ref(), "a/b");
        assert_eq!(local.location(&ObjectPath::from("a/b")), "/a/b");

        let s3 = Backend::connect(&spec("s3://bucket/lake")).unwrap();
        let key = s3.path("s3://bucket/lake/ns/t/data/x.parquet").unwrap();
        assert_eq!(key.as_ref(), "lake/ns/t/data/x.parquet");
        assert_eq!(s3.location(&key), "s3://bucket/lake/ns/t/data/x.parquet");
        // Another bucket (or a local path) is not in this warehouse.
        assert!(s3.path("s3://other/lake/x").is_err());
        assert!(s3.path("s3://bucketx/lake/x").is_err());
        assert!(s3.path("/lake/x").is_err());
    }

    #[test]
    fn bad_warehouse_urls_name_the_flag() {
        for url in ["gs://b/x", "s3:///x"] {
            let e = Backend::connect(&spec(url)).unwrap_err().to_string();
            assert!(e.contains("--warehouse"), "{e}");
        }
    }

    #[tokio::test]
    async fn file_io_round_trips_through_the_object_store() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::local(dir.path()).unwrap();
        let io = warehouse.file_io();
        let location = format!("{}/t/metadata/x.bin", warehouse.root());
        let out = io.new_output(&location).unwrap();
        out.write(Bytes::from_static(b"hello")).await.unwrap();
        assert_eq!(
            io.new_input(&location).unwrap().read().await.unwrap(),
            "hello"
        );
        assert_eq!(warehouse.get(&location).await.unwrap(), "hello");
        warehouse
            .delete_prefix(&format!("{}/t", warehouse.root()))
            .await
            .unwrap();
        assert!(!io.exists(&location).await.unwrap());
    }
}
