//! A shared catalog in Postgres: the Iceberg JDBC layout (`iceberg_tables`,
//! `iceberg_namespace_properties`, catalog name `moonlink`) that Java's `JdbcCatalog` and
//! PyIceberg's `SqlCatalog` read, and our bookkeeping beside it in `moonlink_tables`.
//!
//! Several hosts may share the database. Each row of `moonlink_tables` carries its `owner`
//! (the data directory's host id); a host lists, swaps and removes only its own tables, and
//! creating an identifier that is already in `iceberg_tables` is refused
//! ([`EngineError::TableRegisteredElsewhere`]). The primary key of `iceberg_tables` decides a
//! race between two creators; the `metadata_location` compare-and-swap decides a race between
//! two committers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio_postgres::{Client, NoTls};

use super::{CatalogBackend, CatalogEntry, CATALOG_NAME};
use crate::error::{EngineError, Result};

/// Serialises schema creation between hosts starting at once (`CREATE TABLE IF NOT EXISTS`
/// is not safe against a concurrent twin in Postgres). Any constant; "moonlink" in ASCII.
const DDL_LOCK: i64 = 0x6d6f_6f6e_6c69_6e6b;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS iceberg_tables (
        catalog_name VARCHAR(255) NOT NULL,
        table_namespace VARCHAR(255) NOT NULL,
        table_name VARCHAR(255) NOT NULL,
        metadata_location VARCHAR(1000),
        previous_metadata_location VARCHAR(1000),
        iceberg_type VARCHAR(5),
        PRIMARY KEY (catalog_name, table_namespace, table_name));
    -- PyIceberg creates the table without the column Java's JdbcCatalog (V1 schema) adds.
    ALTER TABLE iceberg_tables ADD COLUMN IF NOT EXISTS iceberg_type VARCHAR(5);
    CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
        catalog_name VARCHAR(255) NOT NULL,
        namespace VARCHAR(255) NOT NULL,
        property_key VARCHAR(255),
        property_value VARCHAR(1000),
        PRIMARY KEY (catalog_name, namespace, property_key));
    CREATE TABLE IF NOT EXISTS moonlink_tables (
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        id TEXT NOT NULL,
        table_namespace TEXT NOT NULL,
        table_name TEXT NOT NULL,
        schema_json TEXT NOT NULL,
        options_json TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (owner, name),
        UNIQUE (table_namespace, table_name));";

/// The Postgres catalog: one connection, reopened when it drops.
pub struct PostgresCatalog {
    config: tokio_postgres::Config,
    owner: String,
    client: tokio::sync::Mutex<Option<Client>>,
    /// Set when a call timed out: the connection may be stuck, so the next call reopens it.
    broken: AtomicBool,
}

/// The longest a catalog call may take (a server that stopped answering must not hold every
/// table's commit forever).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A Postgres error with the server's message (the plain `Display` says only "db error").
fn pg(e: tokio_postgres::Error) -> EngineError {
    let message = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => match std::error::Error::source(&e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    };
    EngineError::Catalog(format!("postgres: {message}"))
}

impl PostgresCatalog {
    /// Connects (within 10 s), creates the layout if missing, and returns the catalog.
    pub async fn connect(url: &str, owner: String) -> Result<PostgresCatalog> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| EngineError::Catalog(format!("not a Postgres URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("moonlink-host");
        config.keepalives_idle(Duration::from_secs(30));
        let catalog = PostgresCatalog {
            config,
            owner,
            client: tokio::sync::Mutex::new(None),
            broken: AtomicBool::new(false),
        };
        let mut guard = catalog.client().await?;
        let client = guard.as_mut().ok_or_else(no_client)?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])
            .await
            .map_err(pg)?;
        tx.batch_execute(SCHEMA).await.map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        drop(guard);
        Ok(catalog)
    }

    /// The connection, opened (again) if it is not open.
    async fn client(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Client>>> {
        let mut guard = self.client.lock().await;
        let broken = self.broken.swap(false, Ordering::SeqCst);
        if broken || guard.as_ref().is_none_or(Client::is_closed) {
            let (client, connection) = self.config.connect(NoTls).await.map_err(pg)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %pg(e), "postgres catalog connection closed");
                }
            });
            *guard = Some(client);
        }
        Ok(guard)
    }

    /// `call`, or an error after [`CALL_TIMEOUT`] (the connection is reopened next time). A
    /// swap that timed out may still have been applied; the caller sees an error either way.
    async fn timed<T>(&self, call: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(result) => result,
            Err(_) => {
                self.broken.store(true, Ordering::SeqCst);
                Err(EngineError::Catalog(format!(
                    "postgres: no answer within {} s; the connection is reopened on the next call",
                    CALL_TIMEOUT.as_secs()
                )))
            }
        }
    }

    /// Who holds `namespace.table` in `iceberg_tables`, if anyone: `Some(Some(owner))` for a
    /// moonlink-host, `Some(None)` for another writer.
    async fn holder(
        client: &impl tokio_postgres::GenericClient,
        namespace: &str,
        table: &str,
    ) -> Result<Option<Option<String>>> {
        let row = client
            .query_opt(
                "SELECT m.owner FROM iceberg_tables t
                 LEFT JOIN moonlink_tables m
                   ON m.table_namespace = t.table_namespace AND m.table_name = t.table_name
                 WHERE t.catalog_name = $1 AND t.table_namespace = $2 AND t.table_name = $3",
                &[&CATALOG_NAME, &namespace, &table],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| r.get::<_, Option<String>>(0)))
    }

    fn refuse(&self, namespace: &str, table: &str, holder: Option<String>) -> EngineError {
        let identifier = format!("{namespace}.{table}");
        match holder {
            Some(owner) if owner == self.owner => EngineError::TableExists(identifier),
            Some(owner) => EngineError::TableRegisteredElsewhere {
                table: identifier,
                owner: format!("moonlink-host {owner}"),
            },
            None => EngineError::TableRegisteredElsewhere {
                table: identifier,
                owner: "another writer (not moonlink-host)".into(),
            },
        }
    }
}

fn no_client() -> EngineError {
    EngineError::Catalog("postgres: no connection".into())
}

/// The calls themselves; the trait wraps each in [`PostgresCatalog::timed`].
impl PostgresCatalog {
    async fn create_now(&self, entry: &CatalogEntry) -> Result<()> {
        let mut guard = self.client().await?;
        let client = guard.as_mut().ok_or_else(no_client)?;
        let tx = client.transaction().await.map_err(pg)?;
        if let Some(holder) = Self::holder(&tx, &entry.namespace, &entry.table).await? {
            return Err(self.refuse(&entry.namespace, &entry.table, holder));
        }
        let inserted = tx
            .execute(
                "INSERT INTO iceberg_tables
                     (catalog_name, table_namespace, table_name, metadata_location,
                      previous_metadata_location, iceberg_type)
                 VALUES ($1, $2, $3, $4, NULL, 'TABLE')
                 ON CONFLICT DO NOTHING",
                &[
                    &CATALOG_NAME,
                    &entry.namespace,
                    &entry.table,
                    &entry.metadata_location,
                ],
            )
            .await
            .map_err(pg)?;
        if inserted == 0 {
            // Another creator committed the same identifier since our check.
            let holder = Self::holder(&tx, &entry.namespace, &entry.table)
                .await?
                .flatten();
            return Err(self.refuse(&entry.namespace, &entry.table, holder));
        }
        // The identifier is ours now; any bookkeeping row for it is stale (left by a table
        // another engine dropped from iceberg_tables).
        tx.execute(
            "DELETE FROM moonlink_tables WHERE table_namespace = $1 AND table_name = $2",
            &[&entry.namespace, &entry.table],
        )
        .await
        .map_err(pg)?;
        let inserted = tx
            .execute(
                "INSERT INTO moonlink_tables
                     (owner, name, id, table_namespace, table_name, schema_json, options_json)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT DO NOTHING",
                &[
                    &self.owner,
                    &entry.name,
                    &entry.id,
                    &entry.namespace,
                    &entry.table,
                    &entry.schema_json,
                    &entry.options_json,
                ],
            )
            .await
            .map_err(pg)?;
        if inserted == 0 {
            return Err(EngineError::TableExists(entry.name.clone()));
        }
        tx.execute(
            "INSERT INTO iceberg_namespace_properties
                 (catalog_name, namespace, property_key, property_value)
             VALUES ($1, $2, 'exists', 'true')
             ON CONFLICT DO NOTHING",
            &[&CATALOG_NAME, &entry.namespace],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn list_now(&self) -> Result<Vec<CatalogEntry>> {
        let guard = self.client().await?;
        let client = guard.as_ref().ok_or_else(no_client)?;
        let rows = client
            .query(
                "SELECT m.name, m.id, m.table_namespace, m.table_name, m.schema_json,
                        COALESCE(t.metadata_location, ''), m.options_json
                 FROM moonlink_tables m JOIN iceberg_tables t
                   ON t.catalog_name = $1 AND t.table_namespace = m.table_namespace
                  AND t.table_name = m.table_name
                 WHERE m.owner = $2
                 ORDER BY m.name",
                &[&CATALOG_NAME, &self.owner],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .into_iter()
            .map(|r| CatalogEntry {
                name: r.get(0),
                id: r.get(1),
                namespace: r.get(2),
                table: r.get(3),
                schema_json: r.get(4),
                metadata_location: r.get(5),
                options_json: r.get(6),
            })
            .collect())
    }

    async fn swap_metadata_now(
        &self,
        namespace: &str,
        table: &str,
        expected: &str,
        new_location: &str,
    ) -> Result<()> {
        let guard = self.client().await?;
        let client = guard.as_ref().ok_or_else(no_client)?;
        let updated = client
            .execute(
                "UPDATE iceberg_tables
                 SET metadata_location = $4, previous_metadata_location = $5
                 WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3
                   AND metadata_location = $5",
                &[&CATALOG_NAME, &namespace, &table, &new_location, &expected],
            )
            .await
            .map_err(pg)?;
        super::swapped(updated, namespace, table)
    }

    async fn swap_schema_now(
        &self,
        entry: &CatalogEntry,
        expected: &str,
        new_location: &str,
    ) -> Result<()> {
        let mut guard = self.client().await?;
        let client = guard.as_mut().ok_or_else(no_client)?;
        let tx = client.transaction().await.map_err(pg)?;
        let updated = tx
            .execute(
                "UPDATE iceberg_tables
                 SET metadata_location = $4, previous_metadata_location = $5
                 WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3
                   AND metadata_location = $5",
                &[
                    &CATALOG_NAME,
                    &entry.namespace,
                    &entry.table,
                    &new_location,
                    &expected,
                ],
            )
            .await
            .map_err(pg)?;
        super::swapped(updated, &entry.namespace, &entry.table)?;
        tx.execute(
            "UPDATE moonlink_tables SET schema_json = $3 WHERE owner = $1 AND name = $2",
            &[&self.owner, &entry.name, &entry.schema_json],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn remove_now(&self, entry: &CatalogEntry) -> Result<()> {
        let mut guard = self.client().await?;
        let client = guard.as_mut().ok_or_else(no_client)?;
        let tx = client.transaction().await.map_err(pg)?;
        let ours = tx
            .query_opt(
                "DELETE FROM moonlink_tables WHERE owner = $1 AND name = $2
                 RETURNING table_namespace, table_name",
                &[&self.owner, &entry.name],
            )
            .await
            .map_err(pg)?;
        // Only a table this host owns leaves iceberg_tables.
        if let Some(row) = ours {
            let (namespace, table): (String, String) = (row.get(0), row.get(1));
            tx.execute(
                "DELETE FROM iceberg_tables
                 WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3",
                &[&CATALOG_NAME, &namespace, &table],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)
    }
}

#[async_trait]
impl CatalogBackend for PostgresCatalog {
    async fn create(&self, entry: &CatalogEntry) -> Result<()> {
        self.timed(self.create_now(entry)).await
    }

    async fn list(&self) -> Result<Vec<CatalogEntry>> {
        self.timed(self.list_now()).await
    }

    async fn swap_metadata(
        &self,
        namespace: &str,
        table: &str,
        expected: &str,
        new_location: &str,
    ) -> Result<()> {
        self.timed(self.swap_metadata_now(namespace, table, expected, new_location))
            .await
    }

    async fn swap_schema(
        &self,
        entry: &CatalogEntry,
        expected: &str,
        new_location: &str,
    ) -> Result<()> {
        self.timed(self.swap_schema_now(entry, expected, new_location))
            .await
    }

    async fn remove(&self, entry: &CatalogEntry) -> Result<()> {
        self.timed(self.remove_now(entry)).await
    }
}

#[cfg(test)]
#[path = "postgres_tests.rs"]
mod tests;
