//! The warehouse IO stack: every data, Puffin, manifest and metadata file goes through
//! `object_store`, so moving from the local filesystem to S3 is a configuration change.
//!
//! [`Warehouse`] is what the engine uses directly; [`ObjectStoreStorage`] plugs the same store
//! into the `iceberg` crate (manifest and Parquet writers) through its `Storage` trait.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use iceberg::io::{
    FileIO, FileIOBuilder, FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage,
    StorageConfig, StorageFactory,
};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// Maps a warehouse location (`/abs/path`, `file:///abs/path`, later `s3://bucket/key`) to a key
/// in the object store. The local store is rooted at `/`, so a key is the path minus its root.
fn object_path(location: &str) -> std::result::Result<ObjectPath, object_store::path::Error> {
    let without_scheme = match location.split_once("://") {
        Some((_, rest)) => rest,
        None => location,
    };
    ObjectPath::parse(without_scheme.trim_start_matches('/'))
}

fn to_iceberg_error(e: impl std::error::Error + Send + Sync + 'static) -> iceberg::Error {
    iceberg::Error::new(iceberg::ErrorKind::Unexpected, e.to_string()).with_source(e)
}

/// The store the warehouse lives in.
#[derive(Debug, Clone)]
pub struct Warehouse {
    store: Arc<dyn ObjectStore>,
    root: String,
}

impl Warehouse {
    /// A warehouse on the local filesystem under `root` (an absolute directory).
    pub fn local(root: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| EngineError::io(root, e))?;
        let root = root
            .canonicalize()
            .map_err(|e| EngineError::io(root, e))?
            .to_string_lossy()
            .into_owned();
        Ok(Warehouse {
            store: Arc::new(LocalFileSystem::new().with_automatic_cleanup(true)),
            root,
        })
    }

    /// A warehouse under the local directory `root`, reached through `store` (an
    /// `object_store` addressing local paths): how tests put a failing store beneath the engine.
    pub fn local_with_store(root: &std::path::Path, store: Arc<dyn ObjectStore>) -> Result<Self> {
        let local = Warehouse::local(root)?;
        Ok(Warehouse {
            store,
            root: local.root,
        })
    }

    /// The warehouse root location; table locations live below it.
    pub fn root(&self) -> &str {
        &self.root
    }

    pub(crate) async fn get(&self, location: &str) -> Result<Bytes> {
        let path = object_path(location).map_err(object_store::Error::from)?;
        Ok(self.store.get(&path).await?.bytes().await?)
    }

    /// Locations of every object under `prefix`, in the same form as `prefix`.
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let path = object_path(prefix).map_err(object_store::Error::from)?;
        let keep_root = prefix.starts_with('/');
        let mut listing = self.store.list(Some(&path));
        let mut locations = Vec::new();
        while let Some(meta) = listing.next().await {
            let key = meta?.location.to_string();
            locations.push(if keep_root { format!("/{key}") } else { key });
        }
        Ok(locations)
    }

    pub(crate) async fn delete(&self, location: &str) -> Result<()> {
        let path = object_path(location).map_err(object_store::Error::from)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes every object under `prefix` (a table's directory when it is dropped).
    pub(crate) async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let path = object_path(prefix).map_err(object_store::Error::from)?;
        let mut listing = self.store.list(Some(&path));
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// A `FileIO` for the iceberg crate that reads and writes through this store.
    pub fn file_io(&self) -> FileIO {
        FileIOBuilder::new(Arc::new(ObjectStoreStorageFactory {
            storage: ObjectStoreStorage {
                store: self.store.clone(),
            },
        }))
        .build()
    }
}

/// iceberg `Storage` over an `object_store` store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectStoreStorage {
    // A serialized FileIO (iceberg ships them between tasks) reopens the local store; remote
    // stores will carry their config here.
    #[serde(skip, default = "local_store")]
    store: Arc<dyn ObjectStore>,
}

fn local_store() -> Arc<dyn ObjectStore> {
    Arc::new(LocalFileSystem::new())
}

#[derive(Debug, Serialize, Deserialize)]
struct ObjectStoreStorageFactory {
    storage: ObjectStoreStorage,
}

#[typetag::serde]
impl StorageFactory for ObjectStoreStorageFactory {
    fn build(&self, _config: &StorageConfig) -> iceberg::Result<Arc<dyn Storage>> {
        Ok(Arc::new(self.storage.clone()))
    }
}

impl ObjectStoreStorage {
    fn path(&self, location: &str) -> iceberg::Result<ObjectPath> {
        object_path(location).map_err(to_iceberg_error)
    }
}

#[async_trait]
#[typetag::serde]
impl Storage for ObjectStoreStorage {
    async fn exists(&self, path: &str) -> iceberg::Result<bool> {
        match self.store.head(&self.path(path)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(to_iceberg_error(e)),
        }
    }

    async fn metadata(&self, path: &str) -> iceberg::Result<FileMetadata> {
        let meta = self
            .store
            .head(&self.path(path)?)
            .await
            .map_err(to_iceberg_error)?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> iceberg::Result<Bytes> {
        let result = self
            .store
            .get(&self.path(path)?)
            .await
            .map_err(to_iceberg_error)?;
        result.bytes().await.map_err(to_iceberg_error)
    }

    async fn reader(&self, path: &str) -> iceberg::Result<Box<dyn FileRead>> {
        Ok(Box::new(ObjectRead {
            store: self.store.clone(),
            path: self.path(path)?,
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> iceberg::Result<()> {
        self.store
            .put(&self.path(path)?, PutPayload::from(bs))
            .await
            .map_err(to_iceberg_error)?;
        Ok(())
    }

    async fn writer(&self, path: &str) -> iceberg::Result<Box<dyn FileWrite>> {
        Ok(Box::new(ObjectWrite {
            store: self.store.clone(),
            path: self.path(path)?,
            buffer: Vec::new(),
            closed: false,
        }))
    }

    async fn delete(&self, path: &str) -> iceberg::Result<()> {
        match self.store.delete(&self.path(path)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(to_iceberg_error(e)),
        }
    }

    async fn delete_prefix(&self, path: &str) -> iceberg::Result<()> {
        let prefix = self.path(path)?;
        let mut listing = self.store.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(to_iceberg_error)?;
            self.delete(meta.location.as_ref()).await?;
        }
        Ok(())
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
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
}

#[async_trait]
impl FileRead for ObjectRead {
    async fn read(&self, range: Range<u64>) -> iceberg::Result<Bytes> {
        self.store
            .get_range(&self.path, range)
            .await
            .map_err(to_iceberg_error)
    }
}

/// Buffers a file and puts it whole on close: the object appears atomically, complete or not at
/// all, which is what a crash-safe commit needs.
struct ObjectWrite {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    buffer: Vec<u8>,
    closed: bool,
}

#[async_trait]
impl FileWrite for ObjectWrite {
    async fn write(&mut self, bs: Bytes) -> iceberg::Result<()> {
        self.buffer.extend_from_slice(&bs);
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
        let bytes = Bytes::from(std::mem::take(&mut self.buffer));
        self.store
            .put(&self.path, PutPayload::from(bytes))
            .await
            .map_err(to_iceberg_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_map_to_keys_with_or_without_scheme() {
        assert_eq!(object_path("/a/b/c.json").unwrap().as_ref(), "a/b/c.json");
        assert_eq!(object_path("file:///a/b").unwrap().as_ref(), "a/b");
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
