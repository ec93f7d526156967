//! Where tables live: the warehouse (`--warehouse`, `--s3-*`, `--cache-bytes`) and the catalog
//! that registers them (`--catalog`).

use std::collections::BTreeMap;

use clap::Args;
use moonlink_engine::{S3Options, WarehouseSpec};

/// Warehouse and catalog flags, flattened into the CLI.
#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Where Iceberg data, manifests, metadata JSON and deletion vectors go: `s3://bucket/prefix`
    /// or a local directory. Default: DATA-DIR/warehouse. The WAL, key index and cache always
    /// stay under --data-dir.
    #[arg(long, env = "MOONLINK_WAREHOUSE", value_name = "URL")]
    pub warehouse: Option<String>,

    /// Where tables are registered: `sqlite:PATH`, `postgres://user@host:port/db` (Iceberg JDBC
    /// layout) or `glue://REGION` (AWS Glue; `?endpoint=URL` for a test server). Default:
    /// `sqlite:DATA-DIR/catalog.db`.
    #[arg(long, env = "MOONLINK_CATALOG", value_name = "URL")]
    pub catalog: Option<String>,

    /// S3 endpoint for S3-compatible servers (default: `AWS_ENDPOINT_URL`, then AWS).
    #[arg(long, env = "MOONLINK_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// S3 region (default: `AWS_REGION` / `AWS_DEFAULT_REGION`).
    #[arg(long, env = "MOONLINK_S3_REGION")]
    pub s3_region: Option<String>,

    /// Address buckets as `ENDPOINT/bucket` instead of `bucket.ENDPOINT` (MinIO, moto, Ceph).
    #[arg(long, env = "MOONLINK_S3_PATH_STYLE")]
    pub s3_path_style: bool,

    /// Allow a plain-http S3 endpoint (test servers on loopback).
    #[arg(long, env = "MOONLINK_S3_ALLOW_HTTP")]
    pub s3_allow_http: bool,

    /// Time limit of one S3 request, in seconds; a stalled request is cut and retried.
    #[arg(long, env = "MOONLINK_S3_TIMEOUT_SECS", default_value_t = 30)]
    pub s3_timeout_secs: u64,

    /// Bytes of recently written data files kept on local disk so compaction and index
    /// rebuilds do not download what was just uploaded (object-store warehouses only).
    #[arg(long, env = "MOONLINK_CACHE_BYTES", default_value_t = 4 * 1024 * 1024 * 1024)]
    pub cache_bytes: u64,
}

impl StorageArgs {
    /// The warehouse `--warehouse` and `--s3-*` describe; `None` for the default
    /// (DATA-DIR/warehouse).
    pub fn warehouse_spec(&self) -> Option<WarehouseSpec> {
        let url = self.warehouse.clone()?;
        Some(WarehouseSpec {
            url,
            s3: S3Options {
                endpoint: self.s3_endpoint.clone(),
                region: self.s3_region.clone(),
                path_style: self.s3_path_style,
                allow_http: self.s3_allow_http,
                request_timeout_secs: Some(self.s3_timeout_secs),
            },
        })
    }

    /// The `config` an Iceberg client needs to read this warehouse's files (served by the
    /// REST catalog's `loadTable`): endpoint, region and addressing style, never credentials.
    pub fn client_config(&self) -> BTreeMap<String, String> {
        let mut config = BTreeMap::new();
        if let Some(endpoint) = self
            .s3_endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        {
            config.insert("s3.endpoint".to_string(), endpoint);
        }
        if let Some(region) = self
            .s3_region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        {
            config.insert("s3.region".to_string(), region.clone());
            config.insert("client.region".to_string(), region);
        }
        if self.s3_path_style {
            config.insert("s3.path-style-access".to_string(), "true".to_string());
        }
        config
    }
}
