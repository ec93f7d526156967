//! The mirrored tables: their columns as Postgres describes them, the moonlink schema they
//! become, and row building shared by the initial copy and the stream.

use std::collections::HashSet;

use moonlink_sdk::source::{SourceEvent, TableDef};
use moonlink_sdk::{BatchBuilder, Field, Operation, TableSchema, Value};

use crate::types::{decode_column, map_column_type, ColumnDecoder, Decoded, Decoder};

/// A Postgres column, as the catalog or a Relation message describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PgColumn {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// `format_type` text when known (for error messages), else empty.
    pub type_name: String,
}

/// How rows of a table are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keyed: inserts are upserts (idempotent on replay), updates and deletes by key.
    Keyed,
    /// No key: inserts only; updates and deletes cannot be applied and are reported.
    AppendOnly,
}

/// One mirrored table.
pub struct MirroredTable {
    /// `schema.table` in Postgres.
    pub source_name: String,
    /// The table name declared to the host (`namespace.table`).
    pub target: String,
    pub columns: Vec<PgColumn>,
    pub decoders: Vec<ColumnDecoder>,
    pub schema: TableSchema,
    /// Positions of the key columns in `columns`.
    pub key: Vec<usize>,
    pub mode: Mode,
    builder: Option<BatchBuilder>,
    /// Columns already reported for unrepresentable values (reported once each).
    reported: HashSet<String>,
}

/// The moonlink schema of Postgres columns. Non-key columns are nullable: Postgres can drop a
/// NOT NULL constraint at any time, and Iceberg cannot relax a required column's history.
pub fn schema_for(
    source_name: &str,
    columns: &[PgColumn],
    key_names: &[String],
) -> Result<(TableSchema, Vec<ColumnDecoder>), String> {
    let mut fields = Vec::with_capacity(columns.len());
    let mut decoders = Vec::with_capacity(columns.len());
    for c in columns {
        let Some((data_type, decoder)) = map_column_type(c.type_oid, c.type_modifier) else {
            let name = if c.type_name.is_empty() {
                format!("type oid {}", c.type_oid)
            } else {
                format!("type '{}'", c.type_name)
            };
            return Err(format!(
                "table {source_name}: column '{}' has {name}, which moonlink cannot mirror \
                 (supported: bool, int2/4/8, float4/8, numeric, text, varchar, char, bytea, date, \
                 time, timestamp, timestamptz, uuid, json, jsonb, and arrays of them)",
                c.name
            ));
        };
        fields.push(Field {
            nullable: !key_names.contains(&c.name),
            ..Field::nullable(&c.name, data_type)
        });
        decoders.push(decoder);
    }
    Ok((
        TableSchema {
            fields,
            primary_key: key_names.to_vec(),
        },
        decoders,
    ))
}

impl MirroredTable {
    pub fn new(
        source_name: String,
        target: String,
        columns: Vec<PgColumn>,
        key_names: Vec<String>,
    ) -> Result<Self, String> {
        let (schema, decoders) = schema_for(&source_name, &columns, &key_names)?;
        let key = key_names
            .iter()
            .filter_map(|k| columns.iter().position(|c| &c.name == k))
            .collect();
        let mode = if key_names.is_empty() {
            Mode::AppendOnly
        } else {
            Mode::Keyed
        };
        Ok(MirroredTable {
            source_name,
            target,
            columns,
            decoders,
            schema,
            key,
            mode,
            builder: None,
            reported: HashSet::new(),
        })
    }

    pub fn def(&self) -> TableDef {
        TableDef::new(self.target.clone(), self.schema.clone())
    }

    /// Adopts new columns (a Relation message after ALTER TABLE). Returns the schema-change
    /// event to emit, after the rows buffered in the old shape, or `None` if nothing changed.
    ///
    /// With `announce` false the new shape is only adopted: a replayed transaction the host
    /// already committed for this table carries an old Relation message, and following it
    /// would drop (and later re-add under a new field id) a column Iceberg already has.
    /// `force` announces even an unchanged shape: the first Relation of a stream, because the
    /// host may not have applied the last change before a crash (it no-ops if it had).
    pub fn change_columns(
        &mut self,
        columns: Vec<PgColumn>,
        announce: bool,
        force: bool,
        out: &mut Vec<SourceEvent>,
    ) -> Result<bool, String> {
        let same = columns.len() == self.columns.len()
            && columns.iter().zip(&self.columns).all(|(a, b)| {
                a.name == b.name && a.type_oid == b.type_oid && a.type_modifier == b.type_modifier
            });
        if same && !force {
            return Ok(false);
        }
        let key_names = self.schema.primary_key.clone();
        if let Some(k) = key_names
            .iter()
            .find(|k| !columns.iter().any(|c| &c.name == *k))
        {
            return Err(format!(
                "table {}: key column '{k}' was dropped; moonlink cannot follow a key change",
                self.source_name
            ));
        }
        self.flush(out);
        let (schema, decoders) = schema_for(&self.source_name, &columns, &key_names)?;
        self.key = key_names
            .iter()
            .filter_map(|k| columns.iter().position(|c| &c.name == k))
            .collect();
        self.columns = columns;
        self.schema = schema;
        self.decoders = decoders;
        if announce {
            out.push(SourceEvent::SchemaChange(self.def()));
        }
        Ok(true)
    }

    fn builder(&mut self) -> &mut BatchBuilder {
        let (target, schema) = (&self.target, &self.schema);
        self.builder
            .get_or_insert_with(|| BatchBuilder::new(target, schema))
    }

    /// Moves the rows built so far into `out` as one change batch.
    pub fn flush(&mut self, out: &mut Vec<SourceEvent>) {
        if let Some(builder) = self.builder.take() {
            if !builder.is_empty() {
                out.push(SourceEvent::Changes(builder.finish()));
            }
        }
    }

    fn set(&mut self, index: usize, text: Option<&str>) -> Result<(), String> {
        if let (
            Some(text),
            ColumnDecoder {
                scalar: Decoder::Text,
                array: false,
            },
        ) = (text, self.decoders[index])
        {
            // Text needs no parsing: straight into the packed column.
            return self.builder().set_str(index, text);
        }
        let value = match text {
            None => Value::Null,
            Some(text) => match decode_column(self.decoders[index], text).map_err(|e| {
                format!(
                    "table {} column '{}': {e}",
                    self.source_name, self.columns[index].name
                )
            })? {
                Decoded::Value(v) => v,
                Decoded::Unrepresentable(text) => {
                    self.report_unrepresentable(index, &format!("'{text}'"));
                    Value::Null
                }
            },
        };
        self.builder().set(index, value).map_err(|e| {
            format!(
                "table {} column '{}': {e}",
                self.source_name, self.columns[index].name
            )
        })
    }

    /// Logs (once per column) a value stored as null for want of an Iceberg form.
    pub fn report_unrepresentable(&mut self, index: usize, what: &str) {
        let column = &self.columns[index].name;
        if !self.reported.contains(column) {
            moonlink_sdk::warn!(
                "table {} column '{column}': {what} has no Iceberg equivalent; stored as null",
                self.source_name
            );
            self.reported.insert(column.clone());
        }
    }

    fn finish_row(&mut self) -> Result<(), String> {
        let source = self.source_name.clone();
        self.builder()
            .finish_row()
            .map_err(|e| format!("table {source}: {}", e.message))
    }

    /// A new row (initial copy or INSERT): an upsert on keyed tables, so a replay is harmless.
    pub fn insert(&mut self, values: &[Option<&str>]) -> Result<(), String> {
        let op = match self.mode {
            Mode::Keyed => Operation::Upsert,
            Mode::AppendOnly => Operation::Insert,
        };
        self.check_width(values.len())?;
        self.builder().start_row(op);
        for (i, v) in values.iter().enumerate() {
            self.set(i, *v)?;
        }
        self.finish_row()
    }

    /// An UPDATE's new row image; `None` marks an unchanged TOAST value (kept by the host).
    pub fn upsert(&mut self, values: &[Option<Option<&str>>]) -> Result<(), String> {
        self.check_width(values.len())?;
        self.builder().start_row(Operation::Upsert);
        for (i, v) in values.iter().enumerate() {
            match v {
                Some(v) => self.set(i, *v)?,
                None => self.builder().set_unchanged(i),
            }
        }
        self.finish_row()
    }

    /// A DELETE (or the old half of a key change): key columns from the old row image.
    pub fn delete(&mut self, old: &[Option<&str>]) -> Result<(), String> {
        self.builder().start_row(Operation::Delete);
        for position in self.key.clone() {
            let value = old.get(position).copied().flatten();
            if value.is_none() {
                return Err(format!(
                    "table {}: a delete arrived without its key column '{}'",
                    self.source_name, self.columns[position].name
                ));
            }
            self.set(position, value)?;
        }
        self.finish_row()
    }

    /// The key values of a row image, for comparing old and new keys.
    pub fn key_of<'a>(&self, row: &[Option<&'a str>]) -> Vec<Option<&'a str>> {
        self.key
            .iter()
            .map(|&i| row.get(i).copied().flatten())
            .collect()
    }

    fn check_width(&self, n: usize) -> Result<(), String> {
        if n != self.columns.len() {
            return Err(format!(
                "table {}: a row has {n} columns, the table {}",
                self.source_name,
                self.columns.len()
            ));
        }
        Ok(())
    }
}
