//! Changing a table's schema: a source's table gained or lost columns ([`Engine::evolve_table`],
//! Postgres CDC), or a user asked for changes over HTTP ([`Engine::change_schema`]). Both are
//! one metadata commit (a new current schema, no snapshot) made by `Engine::reshape`, as is a
//! change of partitioning ([`Engine::change_partitioning`]):
//! the table is closed (what it accepted is committed first, in the old schema, so the log
//! holds nothing of the old shape), the schema and the metadata pointer are swapped in the
//! catalog together, and the table is reopened in the new schema.

use super::*;
use crate::schema::ColumnSchema;
use crate::schema_change::SchemaChange;
use crate::table::Table;

impl Engine {
    /// Changes a table's columns to `columns` (the source's table gained or lost columns):
    /// kept columns keep their Iceberg field ids, added ones get new ids, dropped ones leave
    /// the current schema (older files still hold them; readers skip them by id). What was
    /// accepted before is committed first, in the old schema. Returns the new schema.
    pub async fn evolve_table(
        &self,
        name: &str,
        columns: Vec<ColumnSchema>,
    ) -> Result<TableSchema> {
        self.evolve_table_to(name, &TableSchema::new(columns, Vec::new()))
            .await
    }

    /// [`Engine::evolve_table`] to `target`'s columns, where an added column's default in
    /// `target.defaults` (keyed by `target`'s field ids) becomes its `initial-default` and
    /// `write-default`: rows written before it existed read that value (Postgres
    /// `ADD COLUMN .. DEFAULT 7`). Defaults of kept columns are not changed.
    pub async fn evolve_table_to(&self, name: &str, target: &TableSchema) -> Result<TableSchema> {
        self.replace_schema(name, |current, metadata| {
            let mut evolved = current.evolve(&target.columns, metadata.last_column_id())?;
            for (i, column) in target.columns.iter().enumerate() {
                let Some(value) = target.defaults.get(&target.field_id(i)) else {
                    continue;
                };
                if current.column(&column.name).is_some() || value.is_null() {
                    continue;
                }
                let Some(at) = evolved.column_index(&column.name) else {
                    continue;
                };
                // A default the column's type cannot hold is dropped, not fatal: the column
                // is still added, and its old rows read null.
                match crate::schema_change::canonical_default(column, value) {
                    Ok(value) => {
                        evolved.defaults.insert(evolved.field_id(at), value);
                    }
                    Err(e) => tracing::warn!(table = name, column = %column.name, error = %e,
                        "the source's default for an added column is refused; old rows read null"),
                }
            }
            Ok(if evolved.columns == current.columns {
                current.clone()
            } else {
                evolved
            })
        })
        .await
    }

    /// Applies `changes` (add, drop, rename, widen, make nullable) atomically as one metadata
    /// commit. Everything is checked before anything changes: a refused change (see
    /// [`TableSchema::apply_changes`]) leaves the table as it was. Returns the new schema.
    pub async fn change_schema(&self, name: &str, changes: &[SchemaChange]) -> Result<TableSchema> {
        self.replace_schema(name, |current, metadata| {
            // A column any partition spec reads cannot go (old files' specs still name it).
            let sources: Vec<i32> = metadata
                .partition_specs_iter()
                .flat_map(|spec| spec.fields().iter().map(|f| f.source_id))
                .collect();
            current.apply_changes(changes, metadata.last_column_id(), &sources)
        })
        .await
    }

    /// Changes the table's partition spec (partition evolution): files written before keep
    /// their spec; new files are written in the new one, and compaction rewrites old-spec
    /// files into it over time. Keyed tables too: the key index spans every file whatever its
    /// spec, and a deletion vector is written in the spec of the file it points at. Returns
    /// the table's schema.
    pub async fn change_partitioning(
        &self,
        name: &str,
        partition_by: &[String],
    ) -> Result<TableSchema> {
        self.reshape(name, |table, metadata| {
            let mut spec =
                crate::partition::partition_spec(metadata.current_schema(), partition_by)?;
            // Field ids are the metadata's to give: equivalent fields keep theirs, new ones
            // get ids above every spec's (spec: partition field ids are unique across specs).
            let fields: Vec<_> = spec
                .fields()
                .iter()
                .cloned()
                .map(|mut f| {
                    f.field_id = None;
                    f
                })
                .collect();
            spec = iceberg::spec::UnboundPartitionSpec::builder()
                .add_partition_fields(fields)?
                .build();
            let current: Vec<_> = metadata
                .default_partition_spec()
                .fields()
                .iter()
                .map(|f| (f.source_id, f.transform, f.name.clone()))
                .collect();
            let wanted: Vec<_> = spec
                .fields()
                .iter()
                .map(|f| (f.source_id, f.transform, f.name.clone()))
                .collect();
            if current == wanted {
                return Ok(None);
            }
            let options = TableOptions {
                partition_by: partition_by.to_vec(),
                ..table.options.clone()
            };
            Ok(Some(Reshape {
                schema: table.schema.clone(),
                partition_spec: Some(spec),
                options,
            }))
        })
        .await
    }

    /// Replaces the table's schema with what `next` makes of the current one (and the current
    /// metadata); nothing happens when it returns the current schema.
    async fn replace_schema(
        &self,
        name: &str,
        next: impl FnOnce(&TableSchema, &iceberg::spec::TableMetadata) -> Result<TableSchema>,
    ) -> Result<TableSchema> {
        self.reshape(name, |table, metadata| {
            let schema = next(&table.schema, metadata)?;
            Ok((schema != table.schema).then(|| Reshape {
                schema,
                partition_spec: None,
                options: table.options.clone(),
            }))
        })
        .await
    }

    /// Applies what `next` makes of the table (a new schema, partition spec, options) as one
    /// metadata commit; `None` changes nothing. Returns the table's schema afterwards.
    async fn reshape(
        &self,
        name: &str,
        next: impl FnOnce(&Table, &iceberg::spec::TableMetadata) -> Result<Option<Reshape>>,
    ) -> Result<TableSchema> {
        let _ddl = self.inner.ddl.lock().await;
        let table = self.table(name)?;
        let current = table.schema.clone();
        let state = table.info();
        let metadata =
            commit::load_metadata(&self.inner.warehouse.file_io(), &state.metadata_location)
                .await?;
        let Some(Reshape {
            schema: evolved,
            partition_spec,
            options,
        }) = next(&table, &metadata)?
        else {
            return Ok(current);
        };
        // Checked before the table is closed: Iceberg must accept the new schema.
        let schema_id = metadata
            .schemas_iter()
            .map(|s| s.schema_id())
            .max()
            .unwrap_or(0)
            + 1;
        let new_iceberg_schema = if evolved != current {
            Some(evolved.iceberg_schema_with_id(schema_id)?)
        } else {
            None
        };
        let closed = table.close().await?;
        let entry = CatalogEntry {
            name: table.name.clone(),
            id: table.id.clone(),
            namespace: table.namespace.clone(),
            table: table.table.clone(),
            schema_json: serde_json::to_string(&evolved)
                .map_err(|e| EngineError::Catalog(e.to_string()))?,
            options_json: serde_json::to_string(&options)
                .map_err(|e| EngineError::Catalog(e.to_string()))?,
            metadata_location: String::new(),
        };
        let swapped = async {
            let committed = commit::evolve_metadata(
                &self.inner.warehouse.file_io(),
                &closed.metadata,
                &closed.metadata_location,
                new_iceberg_schema,
                partition_spec,
            )
            .await?;
            let entry = CatalogEntry {
                metadata_location: committed.location.clone(),
                ..entry.clone()
            };
            self.inner
                .catalog
                .swap_schema(&entry, &closed.metadata_location, &committed.location)
                .await?;
            Ok::<_, EngineError>((entry, committed.metadata))
        }
        .await;
        let (entry, schema, options, metadata, result) = match swapped {
            Ok((entry, metadata)) => (
                entry,
                evolved.clone(),
                options,
                metadata,
                Ok(evolved.clone()),
            ),
            // Nothing changed in the catalog: reopen the table as it was, whatever failed.
            Err(e) => (
                CatalogEntry {
                    metadata_location: closed.metadata_location.clone(),
                    options_json: serde_json::to_string(&table.options)
                        .map_err(|e| EngineError::Catalog(e.to_string()))?,
                    schema_json: serde_json::to_string(&current)
                        .map_err(|e| EngineError::Catalog(e.to_string()))?,
                    ..entry
                },
                current,
                table.options.clone(),
                closed.metadata.as_ref().clone(),
                Err(e),
            ),
        };
        match self
            .open_table(entry.clone(), schema, options, metadata)
            .await
        {
            Ok(reopened) => {
                self.tables_mut().insert(reopened.name.clone(), reopened);
            }
            Err(e) => {
                self.tables_mut().remove(name);
                self.mark_failed(entry, e);
            }
        }
        if result.is_ok() {
            tracing::info!(table = name, schema_id, columns = ?evolved.columns.iter().map(|c| &c.name).collect::<Vec<_>>(),
                "table schema or partitioning changed");
        }
        result
    }
}

/// What a schema or partitioning change makes of a table.
struct Reshape {
    schema: TableSchema,
    partition_spec: Option<iceberg::spec::UnboundPartitionSpec>,
    options: TableOptions,
}
