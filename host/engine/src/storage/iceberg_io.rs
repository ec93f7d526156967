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
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};

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
        Ok(Box::new(ObjectWrite {
            path: self.path(path)?,
            backend: self.backend.clone(),
            location: path.to_string(),
            buffer: Vec::new(),
            upload: None,
            // Only a warehouse with a cache keeps a copy of what it writes.
            copy: self.backend.cache.is_some().then(Vec::new),
            done: false,
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
    path: ObjectPath,
    backend: Backend,
    location: String,
    /// Bytes not yet handed to the store (the whole file while it is small).
    buffer: Vec<u8>,
    /// The multipart upload, once the file outgrew [`MULTIPART_THRESHOLD`].
    upload: Option<WriteMultipart>,
    /// A copy for the local cache while the file stays small enough to keep.
    copy: Option<Vec<u8>>,
    /// Closed or failed: nothing more may be written.
    done: bool,
}

/// Parts uploaded concurrently by one writer.
const UPLOAD_CONCURRENCY: usize = 4;

impl ObjectWrite {
    /// Ends a failed write: the partial multipart upload is aborted (best effort).
    async fn fail(&mut self, e: object_store::Error) -> iceberg::Error {
        self.done = true;
        if let Some(upload) = self.upload.take() {
            let _ = upload.abort().await;
        }
        to_iceberg_error(e)
    }

    async fn push(&mut self, bs: &[u8]) -> Result<(), object_store::Error> {
        if self.upload.is_none() {
            if self.buffer.len() + bs.len() <= MULTIPART_THRESHOLD {
                self.buffer.extend_from_slice(bs);
                return Ok(());
            }
            let upload = self.backend.store.put_multipart(&self.path).await?;
            let mut upload = WriteMultipart::new_with_chunk_size(upload, MULTIPART_THRESHOLD);
            upload.write(&std::mem::take(&mut self.buffer));
            self.upload = Some(upload);
        }
        if let Some(upload) = &mut self.upload {
            upload.wait_for_capacity(UPLOAD_CONCURRENCY).await?;
            upload.write(bs);
        }
        Ok(())
    }
}

#[async_trait]
impl FileWrite for ObjectWrite {
    async fn write(&mut self, bs: Bytes) -> iceberg::Result<()> {
        if self.done {
            return Err(iceberg::Error::new(
                iceberg::ErrorKind::Unexpected,
                "write after the file was closed or failed",
            ));
        }
        if let Some(copy) = &mut self.copy {
            copy.extend_from_slice(&bs);
            if !self.backend.cacheable(copy.len()) {
                self.copy = None;
            }
        }
        if let Err(e) = self.push(&bs).await {
            return Err(self.fail(e).await);
        }
        Ok(())
    }

    async fn close(&mut self) -> iceberg::Result<()> {
        if self.done {
            return Err(iceberg::Error::new(
                iceberg::ErrorKind::Unexpected,
                "file already closed or failed",
            ));
        }
        self.done = true;
        let result = match self.upload.take() {
            // `finish` aborts the upload itself when completing fails.
            Some(upload) => upload.finish().await.map(|_| ()),
            None => {
                let bytes = Bytes::from(std::mem::take(&mut self.buffer));
                self.backend
                    .store
                    .put(&self.path, PutPayload::from(bytes))
                    .await
                    .map(|_| ())
            }
        };
        result.map_err(to_iceberg_error)?;
        if let Some(copy) = self.copy.take() {
            self.backend.cached(&self.location, &copy);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Warehouse;

    /// A file past the multipart threshold is uploaded in parts and reads back whole; a small
    /// one in a single PUT.
    #[tokio::test]
    async fn large_files_stream_as_multipart_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::local(dir.path()).unwrap();
        let io = warehouse.file_io();
        let location = format!("{}/t/data/big.bin", warehouse.root());
        let mut writer = io.new_output(&location).unwrap().writer().await.unwrap();
        let chunk = Bytes::from(vec![7u8; 3 * 1024 * 1024]);
        let mut written = 0;
        while written <= MULTIPART_THRESHOLD * 2 {
            writer.write(chunk.clone()).await.unwrap();
            written += chunk.len();
        }
        // Nothing is visible before close.
        assert!(!io.exists(&location).await.unwrap());
        writer.close().await.unwrap();
        assert!(writer.close().await.is_err(), "closing twice is an error");
        let back = io.new_input(&location).unwrap().read().await.unwrap();
        assert_eq!(back.len(), written);
        assert!(back.iter().all(|b| *b == 7));
    }

    /// Metadata JSON is create-only: a second write of the same version file fails.
    #[tokio::test]
    async fn metadata_json_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::local(dir.path()).unwrap();
        let io = warehouse.file_io();
        let location = format!("{}/t/metadata/00001-x.metadata.json", warehouse.root());
        io.new_output(&location)
            .unwrap()
            .write(Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let again = io
            .new_output(&location)
            .unwrap()
            .write(Bytes::from_static(b"{\"x\":1}"))
            .await;
        assert!(again.is_err());
        assert_eq!(io.new_input(&location).unwrap().read().await.unwrap(), "{}");
    }
}
