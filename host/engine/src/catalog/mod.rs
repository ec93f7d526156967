//! Where tables are registered (`--catalog`): one async trait, one implementation per backend.
//!
//! - `sqlite:PATH` ([`sqlite`], the default `DATA-DIR/catalog.db`): the Iceberg JDBC layout in
//!   an embedded file, our bookkeeping beside it.
//! - `postgres://…` ([`postgres`]): the same layout in a shared Postgres database, so Java's
//!   `JdbcCatalog` and PyIceberg's `SqlCatalog` read it. Several hosts may share it; each owns
//!   the tables it created (`moonlink_tables.owner` = the data directory's host id).
//! - `glue://REGION[?endpoint=URL]` ([`glue`]): AWS Glue as Iceberg's `GlueCatalog` writes it;
//!   our bookkeeping rides in the Glue table's parameters, so a pointer swap and a schema change
//!   are one `UpdateTable`.
//!
//! Invariant for every backend: the metadata pointer only moves by compare-and-swap from the
//! location the writer last committed, so a second writer of a table fails loudly
//! ([`EngineError::CommitConflict`]) instead of forking it. Source acknowledgements are per
//! host and always stay in the local SQLite file (the data directory's `catalog.db` unless
//! `sqlite:PATH` names another).

mod glue;
mod postgres;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{EngineError, Result};

use sqlite::SqliteCatalog;

/// The Iceberg catalog name every backend registers tables under (JDBC `catalog_name`).
pub const CATALOG_NAME: &str = "moonlink";

/// One table as the catalog records it.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub name: String,
    pub id: String,
    pub namespace: String,
    pub table: String,
    pub schema_json: String,
    /// Per-table options (JSON object; `{}` when none).
    pub options_json: String,
    pub metadata_location: String,
}

/// A parsed `--catalog` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogUrl {
    /// An embedded SQLite file.
    Sqlite(PathBuf),
    /// A Postgres database (the URL as given; libpq-style `postgres://` / `postgresql://`).
    Postgres(String),
    /// AWS Glue in a region, optionally at another endpoint (a test server).
    Glue {
        region: String,
        endpoint: Option<String>,
    },
}

impl CatalogUrl {
    /// Parses `--catalog`; `None` is `sqlite:DATA-DIR/catalog.db`. Errors name the flag.
    pub fn parse(value: Option<&str>, data_dir: &Path) -> Result<CatalogUrl> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(CatalogUrl::Sqlite(data_dir.join("catalog.db")));
        };
        let bad = |why: &str| {
            EngineError::CatalogUnavailable(format!(
                "--catalog '{}': {why} (expected sqlite:PATH, postgres://USER@HOST:PORT/DB or glue://REGION)",
                redact(value)
            ))
        };
        let Some((scheme, _)) = value.split_once(':') else {
            return Err(bad("not a URL"));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                let path = value["sqlite:".len()..].trim_start_matches("//");
                if path.is_empty() {
                    return Err(bad("no file path after sqlite:"));
                }
                Ok(CatalogUrl::Sqlite(PathBuf::from(path)))
            }
            "postgres" | "postgresql" => {
                let config: tokio_postgres::Config = value
                    .parse()
                    .map_err(|e| bad(&format!("not a Postgres connection URL: {e}")))?;
                if config.get_hosts().is_empty() {
                    return Err(bad("no host"));
                }
                if config.get_user().is_none() {
                    return Err(bad("no user (postgres://USER@HOST:PORT/DB)"));
                }
                Ok(CatalogUrl::Postgres(value.to_string()))
            }
            "glue" => {
                let url =
                    url::Url::parse(value).map_err(|e| bad(&format!("does not parse: {e}")))?;
                let region = url.host_str().unwrap_or_default().to_string();
                let valid_region = !region.is_empty()
                    && region
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                if !valid_region {
                    return Err(bad("no AWS region (glue://us-east-1)"));
                }
                let mut endpoint = None;
                for (key, val) in url.query_pairs() {
                    match key.as_ref() {
                        "endpoint" => {
                            url::Url::parse(&val)
                                .map_err(|e| bad(&format!("endpoint does not parse: {e}")))?;
                            endpoint = Some(val.trim_end_matches('/').to_string());
                        }
                        other => return Err(bad(&format!("unknown option '{other}'"))),
                    }
                }
                Ok(CatalogUrl::Glue { region, endpoint })
            }
            other => Err(bad(&format!("unknown scheme '{other}'"))),
        }
    }
}

/// `value` with any password replaced by `***`, for messages and logs (works on URLs that do
/// not parse, too).
pub fn redact(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => value.to_string(),
        },
        None => value.to_string(),
    }
}

/// The data directory's stable host id (`DATA-DIR/host-id`, a UUID written on first use):
/// who owns a table in a shared catalog.
/// The outcome of a compare-and-swap `UPDATE ... WHERE metadata_location = expected` that
/// changed `rows` rows: exactly one, or another writer moved the pointer first.
pub(crate) fn swapped(rows: u64, namespace: &str, table: &str) -> Result<()> {
    if rows == 1 {
        Ok(())
    } else {
        Err(EngineError::CommitConflict(format!("{namespace}.{table}")))
    }
}

fn host_id(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("host-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(EngineError::io(path, e)),
    }
    let id = uuid::Uuid::new_v4().to_string();
    // Written to a temporary file and renamed, so a crash never leaves an empty id.
    let tmp = data_dir.join("host-id.tmp");
    std::fs::write(&tmp, format!("{id}\n")).map_err(|e| EngineError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| EngineError::io(&path, e))?;
    Ok(id)
}

/// What every catalog backend does. Only the tables this host owns are listed and changed.
#[async_trait]
pub trait CatalogBackend: Send + Sync {
    /// Registers a new table atomically. `TableExists` if this host already has the name or
    /// identifier; `TableRegisteredElsewhere` if another host or writer has the identifier.
    async fn create(&self, entry: &CatalogEntry) -> Result<()>;

    /// Every table this host owns.
    async fn list(&self) -> Result<Vec<CatalogEntry>>;

    /// Compare-and-swap of the metadata pointer: moves only if it still is `expected`.
    async fn swap_metadata(
        &self,
        namespace: &str,
        table: &str,
        expected: &str,
        new_location: &str,
    ) -> Result<()>;

    /// [`CatalogBackend::swap_metadata`] and the stored schema (`entry.schema_json`) at once.
    async fn swap_schema(
        &self,
        entry: &CatalogEntry,
        expected: &str,
        new_location: &str,
    ) -> Result<()>;

    /// Removes one of this host's tables from the catalog.
    async fn remove(&self, entry: &CatalogEntry) -> Result<()>;
}

/// The engine's catalog: the configured backend for tables, the local SQLite file for
/// source acknowledgements.
pub struct Catalog {
    backend: Arc<dyn CatalogBackend>,
    local: Arc<SqliteCatalog>,
    description: String,
}

impl Catalog {
    /// Opens the catalog `--catalog` names (`None`: `DATA-DIR/catalog.db`) and checks it is
    /// reachable; an error names the flag.
    pub async fn open(value: Option<&str>, data_dir: &Path) -> Result<Catalog> {
        let url = CatalogUrl::parse(value, data_dir)?;
        let description = redact(value.unwrap_or("sqlite:DATA-DIR/catalog.db"));
        let unavailable = |e: EngineError| {
            let reason = match e {
                EngineError::Catalog(reason) => reason,
                other => other.to_string(),
            };
            EngineError::CatalogUnavailable(format!("--catalog '{description}': {reason}"))
        };
        let (backend, local): (Arc<dyn CatalogBackend>, _) = match url {
            CatalogUrl::Sqlite(path) => {
                let local = Arc::new(SqliteCatalog::open(&path).map_err(unavailable)?);
                (local.clone(), local)
            }
            CatalogUrl::Postgres(url) => {
                let owner = host_id(data_dir)?;
                let backend = postgres::PostgresCatalog::connect(&url, owner)
                    .await
                    .map_err(unavailable)?;
                let local = SqliteCatalog::open(&data_dir.join("catalog.db"))?;
                (Arc::new(backend), Arc::new(local))
            }
            CatalogUrl::Glue { region, endpoint } => {
                let owner = host_id(data_dir)?;
                let backend = glue::GlueCatalog::connect(&region, endpoint.as_deref(), owner)
                    .await
                    .map_err(unavailable)?;
                let local = SqliteCatalog::open(&data_dir.join("catalog.db"))?;
                (Arc::new(backend), Arc::new(local))
            }
        };
        tracing::info!(catalog = %description, "catalog opened");
        Ok(Catalog {
            backend,
            local,
            description,
        })
    }

    /// See [`CatalogBackend::create`].
    pub async fn create(&self, entry: &CatalogEntry) -> Result<()> {
        self.backend.create(entry).await
    }

    /// See [`CatalogBackend::list`].
    pub async fn list(&self) -> Result<Vec<CatalogEntry>> {
        self.backend.list().await
    }

    /// See [`CatalogBackend::swap_metadata`]; a lost race is logged as an error here.
    pub async fn swap_metadata(
        &self,
        namespace: &str,
        table: &str,
        expected: &str,
        new_location: &str,
    ) -> Result<()> {
        let result = self
            .backend
            .swap_metadata(namespace, table, expected, new_location)
            .await;
        self.log_conflict(namespace, table, expected, &result);
        result
    }

    /// See [`CatalogBackend::swap_schema`].
    pub async fn swap_schema(
        &self,
        entry: &CatalogEntry,
        expected: &str,
        new_location: &str,
    ) -> Result<()> {
        let result = self
            .backend
            .swap_schema(entry, expected, new_location)
            .await;
        self.log_conflict(&entry.namespace, &entry.table, expected, &result);
        result
    }

    fn log_conflict(&self, namespace: &str, table: &str, expected: &str, result: &Result<()>) {
        if let Err(EngineError::CommitConflict(_)) = result {
            // A warning, not an error: the table rebases onto the other writer's snapshot
            // (`table/rebase.rs`) and logs an error only if that keeps failing.
            tracing::warn!(catalog = %self.description, table = %format!("{namespace}.{table}"),
                expected = expected,
                "catalog compare-and-swap lost: the table's metadata pointer is no longer the one this \
                 host committed (another writer committed to it); nothing was overwritten, rebasing");
        }
    }

    /// See [`CatalogBackend::remove`].
    pub async fn remove(&self, entry: &CatalogEntry) -> Result<()> {
        self.backend.remove(entry).await
    }

    /// Records the last checkpoint acknowledged to a source (local SQLite).
    pub fn set_source_ack(&self, source: &str, checkpoint: &str) -> Result<()> {
        self.local.set_source_ack(source, checkpoint)
    }

    /// The last checkpoint acknowledged to a source, if any (local SQLite).
    pub fn source_ack(&self, source: &str) -> Result<Option<String>> {
        self.local.source_ack(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Result<CatalogUrl> {
        CatalogUrl::parse(Some(v), Path::new("/data"))
    }

    fn refused(v: &str) -> String {
        match parse(v) {
            Err(e @ EngineError::CatalogUnavailable(_)) => e.to_string(),
            other => panic!("{v}: expected a --catalog error, got {other:?}"),
        }
    }

    #[test]
    fn parses_each_scheme() {
        assert_eq!(
            CatalogUrl::parse(None, Path::new("/data")).unwrap(),
            CatalogUrl::Sqlite("/data/catalog.db".into())
        );
        assert_eq!(
            parse("sqlite:/x/c.db").unwrap(),
            CatalogUrl::Sqlite("/x/c.db".into())
        );
        assert_eq!(
            parse("sqlite:///x/c.db").unwrap(),
            CatalogUrl::Sqlite("/x/c.db".into())
        );
        for url in [
            "postgres://moon@127.0.0.1:5432/lake",
            "postgresql://moon:pw@db.internal/lake",
        ] {
            assert_eq!(parse(url).unwrap(), CatalogUrl::Postgres(url.into()));
        }
        assert_eq!(
            parse("glue://us-east-1").unwrap(),
            CatalogUrl::Glue {
                region: "us-east-1".into(),
                endpoint: None
            }
        );
        assert_eq!(
            parse("glue://eu-west-2?endpoint=http://127.0.0.1:5000/").unwrap(),
            CatalogUrl::Glue {
                region: "eu-west-2".into(),
                endpoint: Some("http://127.0.0.1:5000".into())
            }
        );
    }

    #[test]
    fn refuses_bad_urls_naming_the_flag() {
        for bad in [
            "mysql://x@y/z",
            "catalog.db",
            "sqlite:",
            "postgres://",
            "postgres://host:notaport/db",
            "glue://",
            "glue://US_EAST?x=1",
            "glue://us-east-1?endpoint=::nope",
            "glue://us-east-1?region=x",
        ] {
            let message = refused(bad);
            assert!(message.contains("--catalog"), "{message}");
        }
        assert!(refused("mysql://x@y/z").contains("unknown scheme 'mysql'"));
        // A password never reaches a message.
        let message = refused("postgres://u:secret@h:nope/db");
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn host_id_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = host_id(dir.path()).unwrap();
        assert_eq!(a, host_id(dir.path()).unwrap());
        assert_eq!(a.len(), 36);
    }
}
