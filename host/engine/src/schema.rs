//! Table schemas: the column types users declare, and how they map to Arrow and Iceberg.
//!
//! One logical type has exactly one Arrow type in the engine (what buffers and Parquet files
//! hold) and one Iceberg type in the table metadata. Iceberg has no 16-bit integer, so `int16`
//! columns are widened to 32 bits on entry: every reader then sees a plain Iceberg `int`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema as ArrowSchema, SchemaRef, TimeUnit};
use iceberg::spec::{ListType, MapType, NestedField, PrimitiveType, Schema as IcebergSchema, Type};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// A column's logical type, as declared by users and plugins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// 16-bit signed integer (Iceberg `int`).
    Int16,
    /// 32-bit signed integer.
    Int32,
    /// 64-bit signed integer.
    Int64,
    /// 32-bit float; cannot be part of a primary key.
    Float32,
    /// 64-bit float; cannot be part of a primary key.
    Float64,
    /// True or false.
    Boolean,
    /// UTF-8 text.
    Utf8,
    /// Days since 1970-01-01.
    Date32,
    /// Exact decimal: `precision` digits, `scale` of them after the point (scale ≤ precision).
    Decimal {
        /// Total digits.
        precision: u8,
        /// Digits after the decimal point.
        scale: u8,
    },
    /// Microseconds since the epoch, without a time zone.
    Timestamp,
    /// Microseconds since the epoch, UTC.
    TimestampTz,
    /// Arbitrary bytes.
    Binary,
    /// A 16-byte UUID.
    Uuid,
    /// Microseconds since midnight.
    Time,
    /// A list of values of a scalar type (Postgres arrays); elements may be null. Stored as
    /// an Iceberg `list` whose element field has its own id.
    List(Box<ColumnType>),
    /// Key/value pairs of scalar types per row (e.g. OpenTelemetry attributes); keys are
    /// never null, values may be. Stored as an Iceberg `map` whose key and value fields have
    /// their own ids (the key's id, then the value's, consecutive).
    Map {
        /// The keys' type.
        key: Box<ColumnType>,
        /// The values' type.
        value: Box<ColumnType>,
    },
}

impl ColumnType {
    /// Parses the names the HTTP API accepts (Moonlink's, plus a few aliases):
    /// `int16 int32 int64 float32 float64 bool boolean string text date32 decimal(p,s)
    /// timestamp timestamptz binary uuid`.
    pub fn parse(name: &str) -> Result<Self> {
        // Type names are short; refusing long ones up front keeps hostile input cheap.
        if name.len() > 64 {
            return Err(EngineError::InvalidSchema(format!(
                "data type '{}...' is too long to be a type name",
                name.chars().take(32).collect::<String>()
            )));
        }
        let lower = name.trim().to_ascii_lowercase();
        if let Some(inner) = lower
            .strip_prefix("list<")
            .and_then(|rest| rest.strip_suffix('>'))
        {
            // Lists hold scalars only, so the parser never recurses.
            let inner = inner.trim();
            if inner.starts_with("list<") {
                return Err(EngineError::InvalidSchema(format!(
                    "'{name}': lists of lists are not supported"
                )));
            }
            return Ok(ColumnType::List(Box::new(Self::parse_scalar(inner, name)?)));
        }
        if let Some(inner) = lower
            .strip_prefix("map<")
            .and_then(|rest| rest.strip_suffix('>'))
        {
            // `map<K, V>` of scalars: the first comma outside parentheses (decimal(p,s)).
            let mut depth = 0;
            let comma = inner.char_indices().find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                c == ',' && depth == 0
            });
            let Some((at, _)) = comma else {
                return Err(EngineError::InvalidSchema(format!(
                    "'{name}': a map type is map<K, V>"
                )));
            };
            let (key, value) = (inner[..at].trim(), inner[at + 1..].trim());
            if [key, value]
                .iter()
                .any(|t| t.starts_with("list<") || t.starts_with("map<"))
            {
                return Err(EngineError::InvalidSchema(format!(
                    "'{name}': map keys and values must be scalar types"
                )));
            }
            return Ok(ColumnType::Map {
                key: Box::new(Self::parse_scalar(key, name)?),
                value: Box::new(Self::parse_scalar(value, name)?),
            });
        }
        Self::parse_scalar(&lower, name)
    }

    /// Parses a scalar type name (already lowercased); `original` is quoted in errors.
    fn parse_scalar(lower: &str, original: &str) -> Result<Self> {
        let ty = match lower {
            "int16" | "smallint" => ColumnType::Int16,
            "int32" | "int" | "integer" => ColumnType::Int32,
            "int64" | "bigint" | "long" => ColumnType::Int64,
            "float32" | "float" | "real" => ColumnType::Float32,
            "float64" | "double" => ColumnType::Float64,
            "bool" | "boolean" => ColumnType::Boolean,
            "string" | "text" | "utf8" => ColumnType::Utf8,
            "date32" | "date" => ColumnType::Date32,
            "timestamp" => ColumnType::Timestamp,
            "timestamptz" => ColumnType::TimestampTz,
            "binary" | "bytes" | "bytea" => ColumnType::Binary,
            "uuid" => ColumnType::Uuid,
            "time" => ColumnType::Time,
            other => parse_decimal(other).ok_or_else(|| {
                EngineError::InvalidSchema(format!(
                    "unknown data type '{original}' (expected one of int16, int32, int64, float32, \
                     float64, bool, string, date32, decimal(p,s), timestamp, timestamptz, binary, uuid, time, list<T>, map<K, V>)"
                ))
            })?,
        };
        Ok(ty)
    }

    /// The canonical name, accepted back by [`ColumnType::parse`].
    pub fn name(&self) -> String {
        match self {
            ColumnType::Int16 => "int16".into(),
            ColumnType::Int32 => "int32".into(),
            ColumnType::Int64 => "int64".into(),
            ColumnType::Float32 => "float32".into(),
            ColumnType::Float64 => "float64".into(),
            ColumnType::Boolean => "boolean".into(),
            ColumnType::Utf8 => "string".into(),
            ColumnType::Date32 => "date32".into(),
            ColumnType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            ColumnType::Timestamp => "timestamp".into(),
            ColumnType::TimestampTz => "timestamptz".into(),
            ColumnType::Binary => "binary".into(),
            ColumnType::Uuid => "uuid".into(),
            ColumnType::Time => "time".into(),
            ColumnType::List(element) => format!("list<{}>", element.name()),
            ColumnType::Map { key, value } => format!("map<{}, {}>", key.name(), value.name()),
        }
    }

    /// How many nested field ids the type has besides the column's own: a list's element,
    /// a map's key and value.
    pub fn nested_ids(&self) -> i32 {
        match self {
            ColumnType::List(_) => 1,
            ColumnType::Map { .. } => 2,
            _ => 0,
        }
    }

    /// The Arrow type the engine stores this column as. A list's element field carries its
    /// Iceberg field id (`element_id`), as Parquet files and readers expect; a map's key field
    /// carries `element_id` and its value field `element_id + 1`.
    pub fn arrow_type_with_element_id(&self, element_id: i32) -> DataType {
        let with_id = |field: Field, id: i32| {
            field.with_metadata(HashMap::from([(
                PARQUET_FIELD_ID_KEY.to_string(),
                id.to_string(),
            )]))
        };
        match self {
            ColumnType::List(element) => DataType::List(Arc::new(with_id(
                Field::new("element", element.arrow_type(), true),
                element_id,
            ))),
            // Iceberg's (and Parquet's) names: a `key_value` struct of `key` and `value`.
            ColumnType::Map { key, value } => DataType::Map(
                Arc::new(Field::new(
                    "key_value",
                    DataType::Struct(
                        vec![
                            with_id(Field::new("key", key.arrow_type(), false), element_id),
                            with_id(
                                Field::new("value", value.arrow_type(), true),
                                element_id + 1,
                            ),
                        ]
                        .into(),
                    ),
                    false,
                )),
                false,
            ),
            scalar => scalar.arrow_type(),
        }
    }

    /// The Arrow type of a scalar column (lists need their element id: see
    /// [`ColumnType::arrow_type_with_element_id`]).
    pub fn arrow_type(&self) -> DataType {
        match self {
            ColumnType::Int16 | ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float32 => DataType::Float32,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Utf8 => DataType::Utf8,
            ColumnType::Date32 => DataType::Date32,
            ColumnType::Decimal { precision, scale } => {
                DataType::Decimal128(*precision, *scale as i8)
            }
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnType::TimestampTz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
            }
            ColumnType::Binary => DataType::Binary,
            ColumnType::Uuid => DataType::FixedSizeBinary(16),
            ColumnType::Time => DataType::Time64(TimeUnit::Microsecond),
            ColumnType::List(_) | ColumnType::Map { .. } => self.arrow_type_with_element_id(0),
        }
    }

    fn iceberg_type(&self, element_id: i32) -> Type {
        match self {
            ColumnType::List(element) => Type::List(ListType::new(Arc::new(
                NestedField::list_element(element_id, element.iceberg_type(0), false),
            ))),
            ColumnType::Map { key, value } => Type::Map(MapType::new(
                Arc::new(NestedField::map_key_element(
                    element_id,
                    key.iceberg_type(0),
                )),
                Arc::new(NestedField::map_value_element(
                    element_id + 1,
                    value.iceberg_type(0),
                    false,
                )),
            )),
            scalar => Type::Primitive(scalar.iceberg_primitive()),
        }
    }

    fn iceberg_primitive(&self) -> PrimitiveType {
        match self {
            ColumnType::Int16 | ColumnType::Int32 => PrimitiveType::Int,
            ColumnType::Int64 => PrimitiveType::Long,
            ColumnType::Float32 => PrimitiveType::Float,
            ColumnType::Float64 => PrimitiveType::Double,
            ColumnType::Boolean => PrimitiveType::Boolean,
            ColumnType::Utf8 => PrimitiveType::String,
            ColumnType::Date32 => PrimitiveType::Date,
            ColumnType::Decimal { precision, scale } => PrimitiveType::Decimal {
                precision: *precision as u32,
                scale: *scale as u32,
            },
            ColumnType::Timestamp => PrimitiveType::Timestamp,
            ColumnType::TimestampTz => PrimitiveType::Timestamptz,
            ColumnType::Binary => PrimitiveType::Binary,
            ColumnType::Uuid => PrimitiveType::Uuid,
            ColumnType::Time => PrimitiveType::Time,
            ColumnType::List(_) | ColumnType::Map { .. } => {
                unreachable!("lists and maps are not primitive")
            }
        }
    }
}

fn parse_decimal(s: &str) -> Option<ColumnType> {
    let inner = s
        .strip_prefix("decimal")
        .or_else(|| s.strip_prefix("numeric"))?
        .trim();
    let inner = inner.strip_prefix('(')?.strip_suffix(')')?;
    let (p, sc) = inner.split_once(',')?;
    let precision: u8 = p.trim().parse().ok()?;
    let scale: u8 = sc.trim().parse().ok()?;
    (1..=38).contains(&precision).then_some(())?;
    (scale <= precision).then_some(())?;
    Some(ColumnType::Decimal { precision, scale })
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSchema {
    /// The column name (unique within the table, at most 64 bytes).
    pub name: String,
    /// The column's type.
    pub data_type: ColumnType,
    /// Whether the column may hold nulls; key columns may not.
    pub nullable: bool,
}

/// A table's columns and optional primary key (by column name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// The columns, in table order.
    pub columns: Vec<ColumnSchema>,
    /// Key column names; empty for an append-only (keyless) table.
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// The Iceberg field id of each column, in order. Empty means 1-based positions (every
    /// table starts that way); ids are fixed for a column's life, so after columns are dropped
    /// or added (see [`TableSchema::evolve`]) they no longer follow positions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub field_ids: Vec<i32>,
    /// The Iceberg field id of each list column's element (0 for other columns). Empty means
    /// ids after the columns' own, in column order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub element_ids: Vec<i32>,
    /// Column defaults by Iceberg field id, in Iceberg's JSON single-value form: the column's
    /// v3 `initial-default` and `write-default` (see `schema_change.rs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub defaults: BTreeMap<i32, serde_json::Value>,
}

/// Arrow field metadata key that carries the Iceberg field id into Parquet files; readers match
/// Parquet columns to table columns by this id, not by name.
pub const PARQUET_FIELD_ID_KEY: &str = "PARQUET:field_id";

impl TableSchema {
    /// A schema for a new table: field and element ids follow column positions (the ids are
    /// only set explicitly by [`TableSchema::evolve`]).
    pub fn new(columns: Vec<ColumnSchema>, primary_key: Vec<String>) -> TableSchema {
        TableSchema {
            columns,
            primary_key,
            field_ids: Vec::new(),
            element_ids: Vec::new(),
            defaults: BTreeMap::new(),
        }
    }

    /// Checks names, duplicates and the primary key.
    pub fn validate(&self) -> Result<()> {
        if self.columns.is_empty() {
            return Err(EngineError::InvalidSchema(
                "a table needs at least one column".into(),
            ));
        }
        let mut seen = HashSet::new();
        for c in &self.columns {
            if c.name.is_empty() {
                return Err(EngineError::InvalidSchema("a column name is empty".into()));
            }
            if c.name.len() > 255 || c.name.chars().any(char::is_control) {
                return Err(EngineError::InvalidSchema(format!(
                    "column name '{}' is longer than 255 bytes or has control characters",
                    c.name.chars().take(64).collect::<String>()
                )));
            }
            if !seen.insert(c.name.as_str()) {
                return Err(EngineError::InvalidSchema(format!(
                    "column '{}' is declared twice",
                    c.name
                )));
            }
        }
        let mut key_seen = HashSet::new();
        for k in &self.primary_key {
            let Some(col) = self.column(k) else {
                return Err(EngineError::InvalidSchema(format!(
                    "primary key column '{k}' is not a column of the table"
                )));
            };
            if col.nullable {
                return Err(EngineError::InvalidSchema(format!(
                    "primary key column '{k}' must be declared \"nullable\": false"
                )));
            }
            match col.data_type {
                ColumnType::List(_) | ColumnType::Map { .. } => {
                    return Err(EngineError::InvalidSchema(format!(
                        "primary key column '{k}' is a {}; keys must be scalar",
                        col.data_type.name()
                    )))
                }
                // Iceberg identifier fields may not be float or double (readers refuse them).
                ColumnType::Float32 | ColumnType::Float64 => {
                    return Err(EngineError::InvalidSchema(format!(
                        "primary key column '{k}' is {}; Iceberg keys cannot be floating point",
                        col.data_type.name()
                    )))
                }
                _ => {}
            }
            if !key_seen.insert(k.as_str()) {
                return Err(EngineError::InvalidSchema(format!(
                    "primary key column '{k}' is listed twice"
                )));
            }
        }
        // Whatever Iceberg itself refuses (e.g. a column `l.element` beside list `l`, whose
        // element has that full name) is refused here, before anything is created or logged.
        self.iceberg_schema().map_err(|e| {
            EngineError::InvalidSchema(format!("Iceberg cannot represent this table: {e}"))
        })?;
        Ok(())
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnSchema> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The position of the column named `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The Iceberg field id of column `index`.
    pub fn field_id(&self, index: usize) -> i32 {
        self.field_ids
            .get(index)
            .copied()
            .unwrap_or(index as i32 + 1)
    }

    /// The Iceberg field id of the element of list column `index`, or of the key of map
    /// column `index` (its value's id is the next one).
    pub fn element_id(&self, index: usize) -> i32 {
        if let Some(id) = self.element_ids.get(index) {
            return *id;
        }
        let nested_before: i32 = self.columns[..index]
            .iter()
            .map(|c| c.data_type.nested_ids())
            .sum();
        self.columns.len() as i32 + 1 + nested_before
    }

    /// The Arrow type of column `index` (with its element's field id for lists).
    pub fn arrow_type(&self, index: usize) -> DataType {
        self.columns[index]
            .data_type
            .arrow_type_with_element_id(self.element_id(index))
    }

    /// The highest field id this schema has ever handed out (ids of dropped columns included,
    /// as far as this schema knows them: the caller passes the table's `last_column_id`).
    pub(crate) fn max_field_id(&self) -> i32 {
        (0..self.columns.len())
            .flat_map(|i| {
                let nested = self.columns[i].data_type.nested_ids();
                let first = (nested > 0).then(|| self.element_id(i));
                std::iter::once(self.field_id(i)).chain(first.map(|id| id + nested - 1))
            })
            .max()
            .unwrap_or(0)
    }

    /// The schema after a source's table changed to `columns`: columns kept (same name and
    /// type) keep their field ids, new ones get ids above `last_column_id`, missing ones are
    /// dropped. A key column cannot be dropped, and a kept column cannot change type.
    pub fn evolve(&self, columns: &[ColumnSchema], last_column_id: i32) -> Result<TableSchema> {
        let mut next_id = last_column_id.max(self.max_field_id());
        let mut field_ids = Vec::with_capacity(columns.len());
        let mut element_ids = Vec::with_capacity(columns.len());
        for column in columns {
            match self.column_index(&column.name) {
                Some(i) => {
                    element_ids.push(match column.data_type.nested_ids() {
                        0 => 0,
                        _ => self.element_id(i),
                    });
                    let old = &self.columns[i];
                    if old.data_type != column.data_type {
                        return Err(EngineError::InvalidSchema(format!(
                            "column '{}' changed type from {} to {}: moonlink follows added and \
                             dropped columns, not type changes",
                            column.name,
                            old.data_type.name(),
                            column.data_type.name()
                        )));
                    }
                    field_ids.push(self.field_id(i));
                }
                None => {
                    next_id += 1;
                    field_ids.push(next_id);
                    element_ids.push(match column.data_type.nested_ids() {
                        0 => 0,
                        nested => {
                            next_id += nested;
                            next_id - nested + 1
                        }
                    });
                }
            }
        }
        for key in &self.primary_key {
            if !columns.iter().any(|c| &c.name == key) {
                return Err(EngineError::InvalidSchema(format!(
                    "primary key column '{key}' cannot be dropped"
                )));
            }
        }
        let defaults = self
            .defaults
            .iter()
            .filter(|(id, _)| field_ids.contains(id))
            .map(|(id, v)| (*id, v.clone()))
            .collect();
        let evolved = TableSchema {
            columns: columns.to_vec(),
            primary_key: self.primary_key.clone(),
            field_ids,
            element_ids,
            defaults,
        };
        evolved.validate()?;
        Ok(evolved)
    }

    /// The Arrow schema of buffers and Parquet files, with Iceberg field ids attached.
    ///
    /// Built once per distinct schema and shared: every decoded batch asks for it, and building
    /// it (a metadata map per field) showed in ingest profiles. Equal schemas get the same `Arc`,
    /// so a batch's schema can be compared with its table's by pointer first.
    pub fn arrow_schema(&self) -> SchemaRef {
        /// Recently used schemas, newest last. A handful of tables' current schemas (and their
        /// decoding variants) fit; a miss only costs a build.
        const CACHED: usize = 32;
        static CACHE: std::sync::Mutex<Vec<(TableSchema, SchemaRef)>> =
            std::sync::Mutex::new(Vec::new());
        let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = cache.iter().rposition(|(s, _)| s == self) {
            let arrow = cache[i].1.clone();
            if i + 1 < cache.len() {
                let hit = cache.remove(i);
                cache.push(hit);
            }
            return arrow;
        }
        let arrow = self.build_arrow_schema();
        if cache.len() >= CACHED {
            cache.remove(0);
        }
        cache.push((self.clone(), arrow.clone()));
        arrow
    }

    fn build_arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut metadata = HashMap::from([(
                    PARQUET_FIELD_ID_KEY.to_string(),
                    self.field_id(i).to_string(),
                )]);
                if let Some(default) = self.default_of(i) {
                    metadata.insert(
                        crate::schema_change::INITIAL_DEFAULT_KEY.to_string(),
                        default.to_string(),
                    );
                }
                Field::new(&c.name, self.arrow_type(i), c.nullable).with_metadata(metadata)
            })
            .collect();
        Arc::new(ArrowSchema::new(fields))
    }

    /// The Iceberg schema (schema id 0); primary key columns become identifier fields.
    pub fn iceberg_schema(&self) -> Result<IcebergSchema> {
        self.iceberg_schema_with_id(0)
    }

    /// The Iceberg schema with the given schema id.
    pub fn iceberg_schema_with_id(&self, schema_id: i32) -> Result<IcebergSchema> {
        let fields = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let ty = c.data_type.iceberg_type(self.element_id(i));
                let id = self.field_id(i);
                let default = match self.default_of(i) {
                    Some(json) => iceberg::spec::Literal::try_from_json(json.clone(), &ty)?,
                    None => None,
                };
                let field = if c.nullable {
                    NestedField::optional(id, &c.name, ty)
                } else {
                    NestedField::required(id, &c.name, ty)
                };
                // Spec v3: `initial-default` for rows written before the column existed,
                // `write-default` for rows written without a value.
                Ok(Arc::new(match default {
                    Some(value) => field
                        .with_initial_default(value.clone())
                        .with_write_default(value),
                    None => field,
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        let identifier_ids = self
            .primary_key
            .iter()
            .filter_map(|k| self.column_index(k).map(|i| self.field_id(i)));
        Ok(IcebergSchema::builder()
            .with_schema_id(schema_id)
            .with_fields(fields)
            .with_identifier_field_ids(identifier_ids)
            .build()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_type_name() {
        for (name, ty) in [
            ("int16", ColumnType::Int16),
            ("int32", ColumnType::Int32),
            ("int64", ColumnType::Int64),
            ("float32", ColumnType::Float32),
            ("float64", ColumnType::Float64),
            ("bool", ColumnType::Boolean),
            ("boolean", ColumnType::Boolean),
            ("string", ColumnType::Utf8),
            ("text", ColumnType::Utf8),
            ("date32", ColumnType::Date32),
            ("timestamp", ColumnType::Timestamp),
            ("timestamptz", ColumnType::TimestampTz),
            ("binary", ColumnType::Binary),
            ("uuid", ColumnType::Uuid),
        ] {
            assert_eq!(ColumnType::parse(name).unwrap(), ty, "{name}");
        }
        assert_eq!(
            ColumnType::parse("decimal(10, 2)").unwrap(),
            ColumnType::Decimal {
                precision: 10,
                scale: 2
            }
        );
    }

    #[test]
    fn rejects_unknown_and_out_of_range_types() {
        assert!(
            ColumnType::parse(&format!("list<{}int{}>", "list<".repeat(3), ">".repeat(3))).is_err()
        );
        assert!(ColumnType::parse(&"list<".repeat(12_000)).is_err());
        assert!(ColumnType::parse("varchar").is_err());
        assert!(ColumnType::parse("decimal(39,2)").is_err());
        assert!(ColumnType::parse("decimal(5,6)").is_err());
    }

    #[test]
    fn column_names_are_bounded_and_printable() {
        for name in ["x".repeat(256), "a\nb".to_string(), "tab\there".to_string()] {
            let schema = TableSchema::new(
                vec![ColumnSchema {
                    name: name.clone(),
                    data_type: ColumnType::Int64,
                    nullable: true,
                }],
                vec![],
            );
            assert!(schema.validate().is_err(), "{name:?}");
        }
    }

    #[test]
    fn primary_key_must_name_non_null_columns() {
        let mut schema = TableSchema::new(
            vec![ColumnSchema {
                name: "id".into(),
                data_type: ColumnType::Int64,
                nullable: true,
            }],
            vec!["id".into()],
        );
        assert!(schema.validate().is_err());
        schema.columns[0].nullable = false;
        schema.validate().unwrap();
        schema.primary_key = vec!["nope".into()];
        assert!(schema.validate().is_err());
    }
}

#[cfg(test)]
#[path = "schema_map_tests.rs"]
mod map_tests;
