//! The warehouse store plugged into the `iceberg` crate (manifest, manifest-list, Parquet and
//! Puffin writers and readers) through its `Storage` trait.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig,
    StorageFactory,
};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::{Backend, WarehouseSpec};

/// Files up to this size are uploaded with one PUT; larger ones as a multipart upload whose
/// parts stream out while the writer is still producing the file.
const MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;

fn to_iceberg_error(e: impl std::error::Error + Send + Sync + 'static) -> iceberg::Error {
    iceberg::Error::new(iceberg::ErrorKind::Unexpected, e.to_string()).with_source(e)
}

/// iceberg `Storage` over the warehouse's `object_store` store.
///
/// Serialized (iceberg ships `FileIO`s between tasks) as the warehouse URL and S3 settings;
/// deserializing reconnects with the same settings and credentials from the environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "WarehouseSpec", into = "WarehouseSpec")]
pub struct ObjectStoreStorage {
    pub(super) backend: Backend,
}

impl TryFrom<WarehouseSpec> for ObjectStoreStorage {
    type Error = String;

    fn try_from(spec: WarehouseSpec) -> Result<Self, String> {
        Ok(ObjectStoreStorage {
            backend: Backend::connect(&spec).map_err(|e| e.to_string())?,
        })
    }
}

impl From<ObjectStoreStorage> for WarehouseSpec {
    fn from(storage: ObjectStoreStorage) -> Self {
        storage.backend.spec.clone()
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ObjectStoreStorageFactory {
    pub(super) storage: ObjectStoreStorage,
}

#[typetag::serde]
impl StorageFactory for ObjectStoreStorageFactory {
    fn build(&self, _config: &StorageConfig) -> iceberg::Result<Arc<dyn Storage>> {
        Ok(Arc::new(self.storage.clone()))
    }
}

impl ObjectStoreStorage {
    fn path(&self, location: &str) -> iceberg::Result<ObjectPath> {
        self.backend.path(location).map_err(to_iceberg_error)
    }
}

#[async_trait]
#[typetag::serde]
impl Storage for ObjectStoreStorage {
    async fn exists(&self, path: &str) -> iceberg::Result<bool> {
        match self.backend.store.head(&self.path(path)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(to_iceberg_error(e)),
        }
    }

    async fn metadata(&self, path: &str) -> iceberg::Result<FileMetadata> {
        let meta = self
            .backend
            .store
            .head(&self.path(path)?)
            .await
            .map_err(to_iceberg_error)?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> iceberg::Result<Bytes> {
        self.backend.get(path).await.map_err(to_iceberg_error)
    }

    async fn reader(&self, path: &str) -> iceberg::Result<Box<dyn FileRead>> {
        Ok(Box::new(ObjectRead {
            backend: self.backend.clone(),
            location: path.to_string(),
            path: self.path(path)?,
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> iceberg::Result<()> {
        // Metadata JSON is create-only (S3 `If-None-Match: *`): two writers can never
        // overwrite the same version file. Other files have unique names.
        let mode = if path.ends_with(".metadata.json") {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        self.backend
            .store
            .put_opts(
                &self.path(path)?,
                PutPayload::from(bs.clone()),
                PutOptions::from(mode),
            )
            .await
            .map_err(to_iceberg_error)?;
        self.backend.cached(path, &bs);
        Ok(())
    }

    async fn writer(&self, path: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        let object = self.path(path)?;
        Ok(Box::new(ObjectWrite {
            upload: BufWriter::with_capacity(
                self.backend.store.clone(),
                object,
                MULTIPART_THRESHOLD,
            ),
            backend: self.backend.clone(),
            location: path.to_string(),
            copy: Some(Vec::new()),
            closed: false,
        }))
    }

    async fn delete(&self, path: &str) -> iceberg::Result<()> {
        self.backend.delete(path).await.map_err(to_iceberg_error)
    }

    async fn delete_prefix(&self, path: &str) -> iceberg::Result<()> {
        self.backend
            .delete_prefix(path)
            .await
            .map_err(to_iceberg_error)
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> iceberg::Result<()> {
        while let Some(path) = paths.next().await {
            self.delete(&path).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> iceberg::Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> iceberg::Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

struct ObjectRead {
    backend: Backend,
    location: String,
    path: ObjectPath,
}

#[async_trait]
impl FileRead for ObjectRead {
    async fn read(&self, range: Range<u64>) -> iceberg::Result<Bytes> {
        if let Some(bytes) = self.backend.cached_range(&self.location, range.clone()) {
            return Ok(bytes);
        }
        let bytes = self
            .backend
            .store
            .get_range(&self.path, range)
            .await
            .map_err(to_iceberg_error)?;
        self.backend.counters.count_store(bytes.len());
        Ok(bytes)
    }
}

/// Streams a file to the store: one PUT on close for small files, a multipart upload for large
/// ones. Either way the object appears atomically on close (a multipart upload is invisible
/// until completed), complete or not at all — what a crash-safe commit needs. A failed upload
/// is aborted; one the process never finishes leaves no object, only an incomplete upload
/// the bucket's lifecycle rules expire.
struct ObjectWrite {
    upload: BufWriter,
    backend: Backend,
    location: String,
    /// A copy for the local cache while the file stays small enough to keep.
    copy: Option<Vec<u8>>,
    closed: bool,
}

impl ObjectWrite {
    async fn fail(&mut self, e: std::io::Error) -> iceberg::Error {
        let _ = self.upload.abort().await;
        to_iceberg_error(e)
    }
}

#[async_trait]
impl FileWrite for ObjectWrite {
    async fn write(&mut self, bs: Bytes) -> iceberg::Result<()> {
        if let Some(copy) = &mut self.copy {
            copy.extend_from_slice(&bs);
            if !self.backend.cacheable(copy.len()) {
                self.copy = None;
            }
        }
        if let Err(e) = self.upload.write_all(&bs).await {
            return Err(self.fail(e).await);
        }
        Ok(())
    }

    async fn close(&mut self) -> iceberg::Result<()> {
        if self.closed {
            return Err(iceberg::Error::new(
                iceberg::ErrorKind::Unexpected,
                "file already closed",
            ));
        }
        self.closed = true;
        if let Err(e) = self.upload.shutdown().await {
            return Err(self.fail(e).await);
        }
        if let Some(copy) = self.copy.take() {
            self.backend.cached(&self.location, &copy);
        }
        Ok(())
    }
}
