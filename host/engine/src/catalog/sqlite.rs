//! The embedded catalog: SQLite in the Iceberg JDBC catalog layout.
//!
//! Tables are rows of `iceberg_tables` exactly as Iceberg's `JdbcCatalog` and PyIceberg's
//! `SqlCatalog` write them (catalog name `moonlink`), so both open our warehouse directly. The
//! engine's own bookkeeping (HTTP name, declared schema, table id) lives in a separate
//! `moonlink_tables` table that other readers ignore; `moonlink_sources` holds source
//! acknowledgements (for every backend: they are per host). Calls are short and synchronous;
//! the async trait methods run them inline, as before the trait existed.

use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::{CatalogBackend, CatalogEntry, CATALOG_NAME};
use crate::error::{EngineError, Result};

/// The SQLite catalog. A mutex serialises calls.
pub struct SqliteCatalog {
    conn: Mutex<Connection>,
}

impl SqliteCatalog {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(EngineError::catalog)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(EngineError::catalog)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS iceberg_tables (
                 catalog_name VARCHAR(255) NOT NULL,
                 table_namespace VARCHAR(255) NOT NULL,
                 table_name VARCHAR(255) NOT NULL,
                 metadata_location VARCHAR(1000),
                 previous_metadata_location VARCHAR(1000),
                 iceberg_type VARCHAR(5),
                 PRIMARY KEY (catalog_name, table_namespace, table_name));
             CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
                 catalog_name VARCHAR(255) NOT NULL,
                 namespace VARCHAR(255) NOT NULL,
                 property_key VARCHAR(255),
                 property_value VARCHAR(1000),
                 PRIMARY KEY (catalog_name, namespace, property_key));
             CREATE TABLE IF NOT EXISTS moonlink_tables (
                 name TEXT PRIMARY KEY,
                 id TEXT NOT NULL,
                 table_namespace TEXT NOT NULL,
                 table_name TEXT NOT NULL,
                 schema_json TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS moonlink_sources (
                 name TEXT PRIMARY KEY,
                 acked_checkpoint TEXT NOT NULL);",
        )
        .map_err(EngineError::catalog)?;
        // Added after the first release of the layout: older catalogs gain the column.
        let has_options: bool = conn
            .prepare(
                "SELECT 1 FROM pragma_table_info('moonlink_tables') WHERE name = 'options_json'",
            )
            .and_then(|mut s| s.exists([]))
            .map_err(EngineError::catalog)?;
        if !has_options {
            conn.execute_batch("ALTER TABLE moonlink_tables ADD COLUMN options_json TEXT")
                .map_err(EngineError::catalog)?;
        }
        Ok(SqliteCatalog {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new table atomically; fails with `TableExists` if the name or the Iceberg
    /// identifier is taken.
    pub fn create(&self, entry: &CatalogEntry) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(EngineError::catalog)?;
        let taken: Option<String> = tx
            .query_row(
                "SELECT table_name FROM iceberg_tables
                 WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3",
                params![CATALOG_NAME, entry.namespace, entry.table],
                |r| r.get(0),
            )
            .optional()
            .map_err(EngineError::catalog)?;
        if taken.is_some() {
            let ours: bool = tx
                .prepare(
                    "SELECT 1 FROM moonlink_tables WHERE table_namespace = ?1 AND table_name = ?2",
                )
                .and_then(|mut s| s.exists(params![entry.namespace, entry.table]))
                .map_err(EngineError::catalog)?;
            let identifier = format!("{}.{}", entry.namespace, entry.table);
            return Err(if ours {
                EngineError::TableExists(identifier)
            } else {
                EngineError::TableRegisteredElsewhere {
                    table: identifier,
                    owner: "another writer (not moonlink-host)".into(),
                }
            });
        }
        let inserted = tx
            .execute(
                "INSERT OR IGNORE INTO moonlink_tables
                     (name, id, table_namespace, table_name, schema_json, options_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    entry.name,
                    entry.id,
                    entry.namespace,
                    entry.table,
                    entry.schema_json,
                    entry.options_json
                ],
            )
            .map_err(EngineError::catalog)?;
        if inserted == 0 {
            return Err(EngineError::TableExists(entry.name.clone()));
        }
        tx.execute(
            "INSERT OR IGNORE INTO iceberg_namespace_properties
                 (catalog_name, namespace, property_key, property_value)
             VALUES (?1, ?2, 'exists', 'true')",
            params![CATALOG_NAME, entry.namespace],
        )
        .map_err(EngineError::catalog)?;
        tx.execute(
            "INSERT INTO iceberg_tables
                 (catalog_name, table_namespace, table_name, metadata_location,
                  previous_metadata_location, iceberg_type)
             VALUES (?1, ?2, ?3, ?4, NULL, 'TABLE')",
            params![
                CATALOG_NAME,
                entry.namespace,
                entry.table,
                entry.metadata_location
            ],
        )
        .map_err(EngineError::catalog)?;
        tx.commit().map_err(EngineError::catalog)
    }

    /// All tables the engine manages.
    pub fn list(&self) -> Result<Vec<CatalogEntry>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT m.name, m.id, m.table_namespace, m.table_name, m.schema_json,
                        t.metadata_location, COALESCE(m.options_json, '{}')
                 FROM moonlink_tables m JOIN iceberg_tables t
                   ON t.catalog_name = ?1 AND t.table_namespace = m.table_namespace
                  AND t.table_name = m.table_name
                 ORDER BY m.name",
            )
            .map_err(EngineError::catalog)?;
        let rows = stmt
            .query_map(params![CATALOG_NAME], |r| {
                Ok(CatalogEntry {
                    name: r.get(0)?,
                    id: r.get(1)?,
                    namespace: r.get(2)?,
                    table: r.get(3)?,
                    schema_json: r.get(4)?,
                    metadata_location: r.get(5)?,
                    options_json: r.get(6)?,
                })
            })
            .map_err(EngineError::catalog)?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(EngineError::catalog)
    }

    /// Compare-and-swap of the metadata pointer: succeeds only if the pointer is still
    /// `expected`, so two writers can never silently overwrite each other's commit.
    pub fn swap_metadata(
        &self,
        namespace: &str,
        table: &str,
        expected: &str,
        new_location: &str,
    ) -> Result<()> {
        let updated = self
            .conn()
            .execute(
                "UPDATE iceberg_tables
                 SET metadata_location = ?4, previous_metadata_location = ?5
                 WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3
                   AND metadata_location = ?5",
                params![CATALOG_NAME, namespace, table, new_location, expected],
            )
            .map_err(EngineError::catalog)?;
        super::swapped(updated as u64, namespace, table)
    }

    /// Swaps the metadata pointer (compare-and-swap, as [`SqliteCatalog::swap_metadata`]) and the
    /// stored schema in one transaction: a schema change is never half applied.
    pub fn swap_schema(
        &self,
        entry: &CatalogEntry,
        expected: &str,
        new_location: &str,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(EngineError::catalog)?;
        let updated = tx
            .execute(
                "UPDATE iceberg_tables
                 SET metadata_location = ?4, previous_metadata_location = ?5
                 WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3
                   AND metadata_location = ?5",
                params![
                    CATALOG_NAME,
                    entry.namespace,
                    entry.table,
                    new_location,
                    expected
                ],
            )
            .map_err(EngineError::catalog)?;
        super::swapped(updated as u64, &entry.namespace, &entry.table)?;
        tx.execute(
            "UPDATE moonlink_tables SET schema_json = ?2 WHERE name = ?1",
            params![entry.name, entry.schema_json],
        )
        .map_err(EngineError::catalog)?;
        tx.commit().map_err(EngineError::catalog)
    }

    /// Records the last checkpoint acknowledged to a source: every change up to it is
    /// committed in every table the source writes.
    pub fn set_source_ack(&self, source: &str, checkpoint: &str) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO moonlink_sources (name, acked_checkpoint) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET acked_checkpoint = excluded.acked_checkpoint",
                params![source, checkpoint],
            )
            .map_err(EngineError::catalog)?;
        Ok(())
    }

    /// The last checkpoint acknowledged to a source, if any.
    pub fn source_ack(&self, source: &str) -> Result<Option<String>> {
        self.conn()
            .query_row(
                "SELECT acked_checkpoint FROM moonlink_sources WHERE name = ?1",
                params![source],
                |r| r.get(0),
            )
            .optional()
            .map_err(EngineError::catalog)
    }

    /// Removes a table from both the Iceberg and the engine tables.
    pub fn remove(&self, entry: &CatalogEntry) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(EngineError::catalog)?;
        tx.execute(
            "DELETE FROM moonlink_tables WHERE name = ?1",
            params![entry.name],
        )
        .map_err(EngineError::catalog)?;
        tx.execute(
            "DELETE FROM iceberg_tables
             WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3",
            params![CATALOG_NAME, entry.namespace, entry.table],
        )
        .map_err(EngineError::catalog)?;
        tx.commit().map_err(EngineError::catalog)
    }
}

#[async_trait]
impl CatalogBackend for SqliteCatalog {
    async fn create(&self, entry: &CatalogEntry) -> Result<()> {
        SqliteCatalog::create(self, entry)
    }

    async fn list(&self) -> Result<Vec<CatalogEntry>> {
        SqliteCatalog::list(self)
    }

    async fn swap_metadata(
        &self,
        namespace: &str,
        table: &str,
        expected: &str,
        new_location: &str,
    ) -> Result<()> {
        SqliteCatalog::swap_metadata(self, namespace, table, expected, new_location)
    }

    async fn swap_schema(
        &self,
        entry: &CatalogEntry,
        expected: &str,
        new_location: &str,
    ) -> Result<()> {
        SqliteCatalog::swap_schema(self, entry, expected, new_location)
    }

    async fn remove(&self, entry: &CatalogEntry) -> Result<()> {
        SqliteCatalog::remove(self, entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, table: &str) -> CatalogEntry {
        CatalogEntry {
            name: name.into(),
            id: format!("id-{name}"),
            namespace: "demo".into(),
            table: table.into(),
            schema_json: "{}".into(),
            options_json: "{}".into(),
            metadata_location: "/m/0.json".into(),
        }
    }

    #[test]
    fn create_list_swap_drop() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = SqliteCatalog::open(&dir.path().join("catalog.db")).unwrap();
        catalog.create(&entry("demo.users", "users")).unwrap();
        assert!(matches!(
            catalog.create(&entry("other", "users")),
            Err(EngineError::TableExists(_))
        ));
        assert!(matches!(
            catalog.create(&entry("demo.users", "users2")),
            Err(EngineError::TableExists(_))
        ));
        catalog
            .swap_metadata("demo", "users", "/m/0.json", "/m/1.json")
            .unwrap();
        // A writer that read the old pointer loses the race instead of overwriting.
        assert!(matches!(
            catalog.swap_metadata("demo", "users", "/m/0.json", "/m/2.json"),
            Err(EngineError::CommitConflict(_))
        ));
        let listed = catalog.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].metadata_location, "/m/1.json");
        catalog.remove(&listed[0]).unwrap();
        assert!(catalog.list().unwrap().is_empty());
    }

    #[test]
    fn an_identifier_another_writer_registered_is_refused_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = SqliteCatalog::open(&dir.path().join("catalog.db")).unwrap();
        catalog
            .conn()
            .execute(
                "INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name,
                     metadata_location) VALUES ('moonlink', 'demo', 'spark', '/x.json')",
                [],
            )
            .unwrap();
        assert!(matches!(
            catalog.create(&entry("demo.spark", "spark")),
            Err(EngineError::TableRegisteredElsewhere { .. })
        ));
        assert!(catalog.list().unwrap().is_empty());
    }
}
