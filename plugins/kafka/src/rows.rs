//! Records into rows: one [`TableRows`] per table collects a poll's rows, evolving an inferred
//! schema (ADD COLUMN) when a record brings a new field.

use std::borrow::Cow;
use std::collections::BTreeMap;

use kafka_protocol::records::Record;
use moonlink_sdk::source::{SourceEvent, TableDef};
use moonlink_sdk::{BatchBuilder, DataType, ElementType, Field, Operation, TableSchema, Value};
use serde_json::value::RawValue;

use crate::settings::Format;
use crate::types::{convert, infer, parse_type, type_name};

/// Where a record came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
}

/// One table's columns and the rows of the current poll.
pub struct TableRows {
    /// The source's name for the table.
    pub name: String,
    /// Current columns.
    pub fields: Vec<Field>,
    /// Key columns.
    pub primary_key: Vec<String>,
    /// Columns follow the records (`schema = "infer"`).
    pub infer: bool,
    format: Format,
    batch: Option<BatchBuilder>,
}

/// The columns of a `format = "raw"` table.
pub fn raw_fields() -> Vec<Field> {
    vec![
        Field::nullable("key", DataType::Binary),
        Field::nullable("value", DataType::Binary),
        Field::nullable("headers", DataType::Array(ElementType::Utf8)),
        Field::required("topic", DataType::Utf8),
        Field::required("partition", DataType::Int32),
        Field::required("offset", DataType::Int64),
        Field::nullable("timestamp", DataType::Timestamptz),
    ]
}

/// The columns of a dead-letter table `<table>_rejected`.
pub fn rejected_fields() -> Vec<Field> {
    vec![
        Field::required("topic", DataType::Utf8),
        Field::required("partition", DataType::Int32),
        Field::required("offset", DataType::Int64),
        Field::nullable("timestamp", DataType::Timestamptz),
        Field::nullable("key", DataType::Binary),
        Field::nullable("value", DataType::Binary),
        Field::required("error", DataType::Utf8),
    ]
}

/// Columns as `[name, type]` pairs (checkpoints carry inferred schemas this way).
pub fn describe_fields(fields: &[Field]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|f| (f.name.clone(), type_name(&f.data_type)))
        .collect()
}

/// Columns back from [`describe_fields`]; key columns are required.
pub fn fields_from(pairs: &[(String, String)], key: &[String]) -> Result<Vec<Field>, String> {
    pairs
        .iter()
        .map(|(name, t)| {
            let data_type = parse_type(t)?;
            Ok(if key.contains(name) {
                Field::required(name, data_type)
            } else {
                Field::nullable(name, data_type)
            })
        })
        .collect()
}

fn timestamp_micros(record: &Record) -> Value {
    if record.timestamp < 0 {
        Value::Null
    } else {
        Value::Int(record.timestamp.saturating_mul(1000))
    }
}

/// A JSON object's members, raw (values stay text until their column type is known).
/// Keys are borrowed from the record when they have no escapes (the usual case).
fn members(bytes: &[u8]) -> Result<BTreeMap<Cow<'_, str>, &RawValue>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("value is not UTF-8: {e}"))?;
    if let Ok(m) = serde_json::from_str::<BTreeMap<&str, &RawValue>>(text) {
        return Ok(m.into_iter().map(|(k, v)| (Cow::Borrowed(k), v)).collect());
    }
    serde_json::from_str::<BTreeMap<String, &RawValue>>(text)
        .map(|m| m.into_iter().map(|(k, v)| (Cow::Owned(k), v)).collect())
        .map_err(|e| format!("value is not a JSON object: {e}"))
}

impl TableRows {
    /// A table of `fields` (empty for an inferred table not seen yet).
    pub fn new(
        name: &str,
        fields: Vec<Field>,
        key: Vec<String>,
        infer: bool,
        format: Format,
    ) -> Self {
        TableRows {
            name: name.to_string(),
            fields,
            primary_key: key,
            infer,
            format,
            batch: None,
        }
    }

    /// The table's definition for `open` and schema changes.
    pub fn def(&self) -> TableDef {
        TableDef::new(
            self.name.clone(),
            TableSchema {
                fields: self.fields.clone(),
                primary_key: self.primary_key.clone(),
            },
        )
    }

    /// The columns are known (an inferred table has seen a record).
    pub fn ready(&self) -> bool {
        !self.fields.is_empty()
    }

    fn builder(&mut self) -> &mut BatchBuilder {
        let (name, schema) = (&self.name, self.def().schema);
        self.batch
            .get_or_insert_with(|| BatchBuilder::new(name, &schema))
    }

    /// Moves the rows so far into `events`.
    pub fn flush(&mut self, events: &mut Vec<SourceEvent>) {
        if let Some(batch) = self.batch.take() {
            if !batch.is_empty() {
                events.push(SourceEvent::Changes(batch.finish()));
            }
        }
    }

    /// Adds columns for fields of `value` the table does not have yet (inferred tables);
    /// a schema change goes into `events` before any row that uses them.
    pub fn learn(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        events: &mut Vec<SourceEvent>,
    ) {
        if !self.infer {
            return;
        }
        let mut added = Vec::new();
        let mut consider = |name: &str, raw: &str, fields: &Vec<Field>, key_cols: &[String]| {
            if fields.iter().any(|f| f.name == name) || added.iter().any(|f: &Field| f.name == name)
            {
                return;
            }
            if let Some(t) = infer(raw) {
                added.push(if key_cols.iter().any(|k| k == name) {
                    Field::required(name, t)
                } else {
                    Field::nullable(name, t)
                });
            }
        };
        if let Some(Ok(m)) = value.map(members) {
            for (name, raw) in &m {
                consider(name, raw.get(), &self.fields, &self.primary_key);
            }
        }
        if let Some(key) = key {
            for (name, raw) in key_members(key, &self.primary_key) {
                consider(&name, &raw, &self.fields, &self.primary_key);
            }
        }
        if added.is_empty() {
            return;
        }
        // A key column must exist before the table does; until a record shows every key
        // column, the table waits.
        let mut next = self.fields.clone();
        next.extend(added);
        if !self
            .primary_key
            .iter()
            .all(|k| next.iter().any(|f| &f.name == k))
        {
            return;
        }
        let was_ready = self.ready();
        self.flush(events);
        self.fields = next;
        if was_ready {
            events.push(SourceEvent::SchemaChange(self.def()));
        }
    }

    /// Adds the row a record makes: an insert (append-only), an upsert, or a delete (a
    /// tombstone on a keyed table). `Ok(false)`: nothing to write (a tombstone on an
    /// append-only table). `Err`: why the record cannot be used.
    pub fn add(&mut self, origin: Origin<'_>, record: &Record) -> Result<bool, String> {
        if self.format == Format::Raw {
            return self.add_raw(origin, record).map(|_| true);
        }
        let keyed = !self.primary_key.is_empty();
        let key_values: Vec<(String, String)> = match &record.key {
            Some(k) if keyed => key_members(k, &self.primary_key),
            _ => Vec::new(),
        };
        let operation = match (&record.value, keyed) {
            (None, false) => return Ok(false),
            (None, true) => Operation::Delete,
            (Some(_), true) => Operation::Upsert,
            (Some(_), false) => Operation::Insert,
        };
        let value_members = match &record.value {
            Some(v) => members(v)?,
            None => BTreeMap::new(),
        };
        if keyed && operation == Operation::Delete && key_values.is_empty() {
            return Err(
                "a tombstone (null value) without a key: nothing says which row to delete".into(),
            );
        }
        let lenient = self.infer;
        let TableRows {
            name,
            fields,
            batch,
            primary_key,
            ..
        } = self;
        let builder = batch.get_or_insert_with(|| {
            BatchBuilder::new(
                name,
                &TableSchema {
                    fields: fields.clone(),
                    primary_key: primary_key.clone(),
                },
            )
        });
        let mut row = builder.row();
        for field in fields.iter() {
            let from_key = key_values.iter().find(|(n, _)| n == &field.name);
            let raw = match from_key {
                Some((_, raw)) => Some(raw.as_str()),
                None if operation == Operation::Delete => None,
                None => value_members.get(field.name.as_str()).map(|r| r.get()),
            };
            let Some(raw) = raw else { continue };
            // Strings without escapes go in as slices of the record (no allocation).
            if matches!(field.data_type, DataType::Utf8)
                && raw.len() >= 2
                && raw.starts_with('"')
                && !raw.contains('\\')
            {
                row.set_str(&field.name, &raw[1..raw.len() - 1])
                    .map_err(describe)?;
                continue;
            }
            let mut value = convert(&field.data_type, raw, lenient);
            if value.is_err() && from_key.is_some() {
                // Keys are often strings ("7" for an integer key): try the string's text.
                if let Ok(text) = serde_json::from_str::<String>(raw) {
                    if let Ok(v) = convert(&field.data_type, &text, lenient) {
                        value = Ok(v);
                    }
                }
            }
            let value = value.map_err(|e| format!("column '{}': {e}", field.name))?;
            row.set(&field.name, value).map_err(describe)?;
        }
        row.finish(operation).map_err(describe)?;
        Ok(true)
    }

    fn add_raw(&mut self, origin: Origin<'_>, record: &Record) -> Result<(), String> {
        let headers: Vec<Value> = record
            .headers
            .iter()
            .map(|(k, v)| {
                let value = v
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                Value::Str(format!("{}={value}", k.as_str()))
            })
            .collect();
        let values = [
            record.key.as_ref().map(|k| k.to_vec()).into(),
            record.value.as_ref().map(|v| v.to_vec()).into(),
            Value::List(headers),
            Value::Str(origin.topic.to_string()),
            Value::Int(origin.partition as i64),
            Value::Int(record.offset),
            timestamp_micros(record),
        ];
        set_row(self.builder(), Operation::Insert, values)
    }

    /// Adds a dead-letter row (this table is a `<table>_rejected` one).
    pub fn add_rejected(
        &mut self,
        origin: Origin<'_>,
        record: &Record,
        error: &str,
    ) -> Result<(), String> {
        let values = [
            Value::Str(origin.topic.to_string()),
            Value::Int(origin.partition as i64),
            Value::Int(record.offset),
            timestamp_micros(record),
            record.key.as_ref().map(|k| k.to_vec()).into(),
            record.value.as_ref().map(|v| v.to_vec()).into(),
            Value::Str(error.to_string()),
        ];
        set_row(self.builder(), Operation::Insert, values)
    }
}

fn describe(e: moonlink_sdk::DataError) -> String {
    match e.column {
        Some(c) => format!("column '{c}': {}", e.message),
        None => e.message,
    }
}

fn set_row<const N: usize>(
    builder: &mut BatchBuilder,
    op: Operation,
    values: [Value; N],
) -> Result<(), String> {
    let names: Vec<String> = (0..N).map(|i| builder.field(i).name.clone()).collect();
    let mut row = builder.row();
    for (name, value) in names.iter().zip(values) {
        row.set(name, value).map_err(describe)?;
    }
    row.finish(op).map_err(describe)
}

/// The key columns a record key gives, as raw JSON text: a JSON object gives its members
/// (only key columns); anything else is the value of the one key column (JSON scalar text,
/// or the bytes as a string when they are not JSON).
fn key_members(key: &[u8], primary_key: &[String]) -> Vec<(String, String)> {
    if let Ok(m) = members(key) {
        return m
            .into_iter()
            .filter(|(name, _)| primary_key.iter().any(|k| k == name))
            .map(|(name, raw)| (name.into_owned(), raw.get().to_string()))
            .collect();
    }
    let [column] = primary_key else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(key);
    let raw = match serde_json::from_str::<&RawValue>(&text) {
        Ok(raw) if !raw.get().starts_with('{') && !raw.get().starts_with('[') => {
            raw.get().to_string()
        }
        _ => serde_json::to_string(text.as_ref()).unwrap_or_default(),
    };
    vec![(column.clone(), raw)]
}
