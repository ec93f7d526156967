//! Build columnar change batches one row at a time.
//!
//! Plugins think in rows; the host wants columns (one list per column crosses the wasm boundary
//! in one copy). [`BatchBuilder`] bridges the two: set values by column, finish rows, and get a
//! [`ChangeBatch`] whose columns have the physical form each logical type needs.

use crate::{
    ArrayValues, ChangeBatch, Column, ColumnValues, DataError, DataErrorKind, DataType,
    DecimalType, ElementType, ElementValues, Field, Int128, MapValues, Operation, TableSchema,
    Utf8Buffer,
};

/// A value as a plugin parsed it, before it is packed into its column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// No value (SQL `NULL`).
    Null,
    /// Integers, and the integer forms of dates (days), timestamps (microseconds).
    Int(i64),
    /// Floating-point numbers.
    Float(f64),
    /// Booleans.
    Bool(bool),
    /// Strings.
    Str(String),
    /// Binary and UUID (16 bytes) values.
    Bytes(Vec<u8>),
    /// Unscaled decimal values.
    Int128(i128),
    /// The elements of an array column's value (each a scalar value or `Null`).
    List(Vec<Value>),
    /// The entries of a map column's value, in order: scalar keys (never `Null`) and scalar
    /// values or `Null`. Build one from pairs: `Value::from(vec![("k", "v")])`.
    Map(Vec<(Value, Value)>),
}

macro_rules! value_from {
    ($($t:ty => |$v:ident| $e:expr),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from($v: $t) -> Value {
                $e
            }
        }
    )*};
}

value_from! {
    i16 => |v| Value::Int(v.into()),
    i32 => |v| Value::Int(v.into()),
    i64 => |v| Value::Int(v),
    u16 => |v| Value::Int(v.into()),
    u32 => |v| Value::Int(v.into()),
    f32 => |v| Value::Float(v.into()),
    f64 => |v| Value::Float(v),
    bool => |v| Value::Bool(v),
    String => |v| Value::Str(v),
    &str => |v| Value::Str(v.to_string()),
    &String => |v| Value::Str(v.clone()),
    Vec<u8> => |v| Value::Bytes(v),
    &[u8] => |v| Value::Bytes(v.to_vec()),
    [u8; 16] => |v| Value::Bytes(v.to_vec()),
    i128 => |v| Value::Int128(v),
    Vec<Value> => |v| Value::List(v),
}

/// Map entries from pairs, e.g. `vec![("http.route", "/users")]`.
impl<K: Into<Value>, V: Into<Value>> From<Vec<(K, V)>> for Value {
    fn from(entries: Vec<(K, V)>) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// Map entries from a `BTreeMap` (in key order).
impl<K: Into<Value>, V: Into<Value>> From<std::collections::BTreeMap<K, V>> for Value {
    fn from(entries: std::collections::BTreeMap<K, V>) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// `None` is null.
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

impl Value {
    fn describe(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::Bool(_) => "boolean",
            Value::Str(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Int128(_) => "decimal",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }
}

/// A column being built: values in physical form plus validity.
pub(crate) enum Values {
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    /// Strings, packed: `data[offsets[i]..offsets[i + 1]]` (one copy per column across the
    /// boundary, no allocation per value), at the top level and inside lists and maps.
    Utf8Packed {
        offsets: Vec<u32>,
        data: Vec<u8>,
    },
    Binary(Vec<Vec<u8>>),
    I128(Vec<Int128>),
    /// An array column: row `i` holds `elements[offsets[i]..offsets[i + 1]]`.
    Array {
        offsets: Vec<u32>,
        elements: Box<Values>,
        element_validity: Vec<bool>,
    },
    /// A map column: row `i` holds entries `offsets[i]..offsets[i + 1]` of `keys`/`values`.
    Map {
        offsets: Vec<u32>,
        keys: Box<Values>,
        values: Box<Values>,
        value_validity: Vec<bool>,
    },
}

impl Values {
    /// Empty values of `data_type` (strings packed, at every level).
    pub(crate) fn for_type(data_type: &DataType) -> Values {
        match data_type {
            DataType::Int16 => Values::I16(Vec::new()),
            DataType::Int32 | DataType::Date32 => Values::I32(Vec::new()),
            DataType::Int64 | DataType::Timestamp | DataType::Timestamptz | DataType::Time => {
                Values::I64(Vec::new())
            }
            DataType::Float32 => Values::F32(Vec::new()),
            DataType::Float64 => Values::F64(Vec::new()),
            DataType::Boolean => Values::Bool(Vec::new()),
            DataType::Utf8 => Values::Utf8Packed {
                offsets: vec![0],
                data: Vec::new(),
            },
            DataType::Binary | DataType::Uuid => Values::Binary(Vec::new()),
            DataType::Decimal(_) => Values::I128(Vec::new()),
            DataType::Array(element) => Values::Array {
                offsets: vec![0],
                elements: Box::new(Values::for_type(&element_data_type(element))),
                element_validity: Vec::new(),
            },
            DataType::Map(m) => Values::Map {
                offsets: vec![0],
                keys: Box::new(Values::for_type(&element_data_type(&m.key))),
                values: Box::new(Values::for_type(&element_data_type(&m.value))),
                value_validity: Vec::new(),
            },
        }
    }

    pub(crate) fn push_default(&mut self) {
        match self {
            Values::I16(v) => v.push(0),
            Values::I32(v) => v.push(0),
            Values::I64(v) => v.push(0),
            Values::F32(v) => v.push(0.0),
            Values::F64(v) => v.push(0.0),
            Values::Bool(v) => v.push(false),
            Values::Utf8Packed { offsets, data } => offsets.push(data.len() as u32),
            Values::Binary(v) => v.push(Vec::new()),
            Values::I128(v) => v.push(Int128 { lo: 0, hi: 0 }),
            Values::Array { offsets, .. } | Values::Map { offsets, .. } => {
                let end = *offsets.last().unwrap();
                offsets.push(end);
            }
        }
    }

    /// Overwrites the last slot with `value`, or explains why it does not fit.
    pub(crate) fn set_last(&mut self, value: Value) -> Result<(), String> {
        let mismatch =
            |expected: &str, got: &Value| format!("expected {expected}, got {}", got.describe());
        match (self, value) {
            (Values::I16(v), Value::Int(i)) => {
                *v.last_mut().unwrap() =
                    i16::try_from(i).map_err(|_| format!("{i} is out of range for int16"))?
            }
            (Values::I32(v), Value::Int(i)) => {
                *v.last_mut().unwrap() =
                    i32::try_from(i).map_err(|_| format!("{i} is out of range for int32"))?
            }
            (Values::I64(v), Value::Int(i)) => *v.last_mut().unwrap() = i,
            (Values::F32(v), Value::Float(f)) => {
                *v.last_mut().unwrap() = crate::text::check_float32(f)?
            }
            (Values::F32(v), Value::Int(i)) => *v.last_mut().unwrap() = i as f32,
            (Values::F64(v), Value::Float(f)) => *v.last_mut().unwrap() = f,
            (Values::F64(v), Value::Int(i)) => *v.last_mut().unwrap() = i as f64,
            (Values::Bool(v), Value::Bool(b)) => *v.last_mut().unwrap() = b,
            (Values::Utf8Packed { offsets, data }, Value::Str(s)) => {
                Values::set_last_str(offsets, data, &s)
            }
            (Values::Binary(v), Value::Bytes(b)) => *v.last_mut().unwrap() = b,
            (Values::I128(v), Value::Int128(i)) => {
                *v.last_mut().unwrap() = Int128 {
                    lo: i as u64,
                    hi: (i >> 64) as i64,
                }
            }
            (Values::I128(v), Value::Int(i)) => {
                *v.last_mut().unwrap() = Int128 {
                    lo: i as u64,
                    hi: if i < 0 { -1 } else { 0 },
                }
            }
            (Values::I16(_) | Values::I32(_) | Values::I64(_), other) => {
                return Err(mismatch("an integer", &other))
            }
            (Values::F32(_) | Values::F64(_), other) => return Err(mismatch("a number", &other)),
            (Values::Bool(_), other) => return Err(mismatch("a boolean", &other)),
            (Values::Utf8Packed { .. }, other) => return Err(mismatch("a string", &other)),
            (Values::Binary(_), other) => return Err(mismatch("bytes", &other)),
            (Values::I128(_), other) => return Err(mismatch("a decimal", &other)),
            (
                Values::Array {
                    offsets,
                    elements,
                    element_validity,
                },
                Value::List(items),
            ) => {
                // The row's elements replace whatever the row held (it is the last row).
                let start = offsets[offsets.len() - 2] as usize;
                elements.truncate(start);
                element_validity.truncate(start);
                for item in items {
                    elements.push_default();
                    let valid = item != Value::Null;
                    if valid {
                        elements
                            .set_last(item)
                            .map_err(|e| format!("array element: {e}"))?;
                    }
                    element_validity.push(valid);
                }
                *offsets.last_mut().unwrap() = element_validity.len() as u32;
            }
            (Values::Array { .. }, other) => return Err(mismatch("a list", &other)),
            (
                Values::Map {
                    offsets,
                    keys,
                    values,
                    value_validity,
                },
                Value::Map(entries),
            ) => {
                // The row's entries replace whatever the row held (it is the last row).
                let start = offsets[offsets.len() - 2] as usize;
                keys.truncate(start);
                values.truncate(start);
                value_validity.truncate(start);
                for (key, value) in entries {
                    if key == Value::Null {
                        return Err("a map key cannot be null".into());
                    }
                    keys.push_default();
                    keys.set_last(key).map_err(|e| format!("map key: {e}"))?;
                    values.push_default();
                    let valid = value != Value::Null;
                    if valid {
                        values
                            .set_last(value)
                            .map_err(|e| format!("map value: {e}"))?;
                    }
                    value_validity.push(valid);
                }
                *offsets.last_mut().unwrap() = value_validity.len() as u32;
            }
            (Values::Map { .. }, other) => return Err(mismatch("a map", &other)),
        }
        Ok(())
    }

    pub(crate) fn into_wit(self) -> ColumnValues {
        match self {
            Values::I16(v) => ColumnValues::Int16(v),
            Values::I32(v) => ColumnValues::Int32(v),
            Values::I64(v) => ColumnValues::Int64(v),
            Values::F32(v) => ColumnValues::Float32(v),
            Values::F64(v) => ColumnValues::Float64(v),
            Values::Bool(v) => ColumnValues::Boolean(v),
            Values::Utf8Packed { offsets, data } => {
                ColumnValues::Utf8Buffer(Utf8Buffer { offsets, data })
            }
            Values::Binary(v) => ColumnValues::Binary(v),
            Values::I128(v) => ColumnValues::Int128(v),
            Values::Array {
                offsets,
                elements,
                element_validity,
            } => {
                let has_null = element_validity.iter().any(|v| !v);
                ColumnValues::Array(ArrayValues {
                    offsets,
                    elements: elements.into_elements(),
                    element_validity: has_null.then_some(element_validity),
                })
            }
            Values::Map {
                offsets,
                keys,
                values,
                value_validity,
            } => {
                let has_null = value_validity.iter().any(|v| !v);
                ColumnValues::Map(MapValues {
                    offsets,
                    keys: keys.into_elements(),
                    values: values.into_elements(),
                    value_validity: has_null.then_some(value_validity),
                })
            }
        }
    }

    /// Scalar values as array elements or map entries (strings packed: WIT 0.4.0).
    pub(crate) fn into_elements(self) -> ElementValues {
        match self {
            Values::I16(v) => ElementValues::Int16(v),
            Values::I32(v) => ElementValues::Int32(v),
            Values::I64(v) => ElementValues::Int64(v),
            Values::F32(v) => ElementValues::Float32(v),
            Values::F64(v) => ElementValues::Float64(v),
            Values::Bool(v) => ElementValues::Boolean(v),
            Values::Utf8Packed { offsets, data } => {
                ElementValues::Utf8Buffer(Utf8Buffer { offsets, data })
            }
            Values::Binary(v) => ElementValues::Binary(v),
            Values::I128(v) => ElementValues::Int128(v),
            Values::Array { .. } | Values::Map { .. } => {
                unreachable!("elements are scalar")
            }
        }
    }

    /// Replaces the last packed string (the current row's) with `s`.
    fn set_last_str(offsets: &mut [u32], data: &mut Vec<u8>, s: &str) {
        let start = offsets[offsets.len() - 2] as usize;
        data.truncate(start);
        data.extend_from_slice(s.as_bytes());
        *offsets.last_mut().unwrap() = data.len() as u32;
    }

    /// Makes room for `rows` more values (for strings: their offsets), so a batch of known
    /// size is not built by repeated growth.
    pub(crate) fn reserve(&mut self, rows: usize) {
        match self {
            Values::I16(v) => v.reserve(rows),
            Values::I32(v) => v.reserve(rows),
            Values::I64(v) => v.reserve(rows),
            Values::F32(v) => v.reserve(rows),
            Values::F64(v) => v.reserve(rows),
            Values::Bool(v) => v.reserve(rows),
            Values::Binary(v) => v.reserve(rows),
            Values::I128(v) => v.reserve(rows),
            Values::Utf8Packed { offsets, .. }
            | Values::Array { offsets, .. }
            | Values::Map { offsets, .. } => offsets.reserve(rows),
        }
    }

    /// Removes the last row's value (a row that was started and then abandoned).
    pub(crate) fn pop_last(&mut self) {
        match self {
            Values::I16(v) => drop(v.pop()),
            Values::I32(v) => drop(v.pop()),
            Values::I64(v) => drop(v.pop()),
            Values::F32(v) => drop(v.pop()),
            Values::F64(v) => drop(v.pop()),
            Values::Bool(v) => drop(v.pop()),
            Values::Binary(v) => drop(v.pop()),
            Values::I128(v) => drop(v.pop()),
            Values::Utf8Packed { offsets, data } => {
                offsets.pop();
                data.truncate(*offsets.last().unwrap() as usize);
            }
            Values::Array {
                offsets,
                elements,
                element_validity,
            } => {
                offsets.pop();
                let end = *offsets.last().unwrap() as usize;
                elements.truncate(end);
                element_validity.truncate(end);
            }
            Values::Map {
                offsets,
                keys,
                values,
                value_validity,
            } => {
                offsets.pop();
                let end = *offsets.last().unwrap() as usize;
                keys.truncate(end);
                values.truncate(end);
                value_validity.truncate(end);
            }
        }
    }

    /// Drops values past the first `len` (arrays' elements only).
    pub(crate) fn truncate(&mut self, len: usize) {
        match self {
            Values::I16(v) => v.truncate(len),
            Values::I32(v) => v.truncate(len),
            Values::I64(v) => v.truncate(len),
            Values::F32(v) => v.truncate(len),
            Values::F64(v) => v.truncate(len),
            Values::Bool(v) => v.truncate(len),
            Values::Utf8Packed { offsets, data } => {
                offsets.truncate(len + 1);
                data.truncate(*offsets.last().unwrap() as usize);
            }
            Values::Binary(v) => v.truncate(len),
            Values::I128(v) => v.truncate(len),
            Values::Array { .. } | Values::Map { .. } => {}
        }
    }
}

/// The scalar data type of an array's elements.
pub fn element_data_type(element: &ElementType) -> DataType {
    match element {
        ElementType::Int16 => DataType::Int16,
        ElementType::Int32 => DataType::Int32,
        ElementType::Int64 => DataType::Int64,
        ElementType::Float32 => DataType::Float32,
        ElementType::Float64 => DataType::Float64,
        ElementType::Boolean => DataType::Boolean,
        ElementType::Utf8 => DataType::Utf8,
        ElementType::Date32 => DataType::Date32,
        ElementType::Decimal(d) => DataType::Decimal(*d),
        ElementType::Timestamp => DataType::Timestamp,
        ElementType::Timestamptz => DataType::Timestamptz,
        ElementType::Binary => DataType::Binary,
        ElementType::Uuid => DataType::Uuid,
        ElementType::Time => DataType::Time,
    }
}

/// The element type of a list of `data_type` values; `None` for an array or a map (types do
/// not nest).
pub fn element_type_of(data_type: &DataType) -> Option<ElementType> {
    Some(match data_type {
        DataType::Int16 => ElementType::Int16,
        DataType::Int32 => ElementType::Int32,
        DataType::Int64 => ElementType::Int64,
        DataType::Float32 => ElementType::Float32,
        DataType::Float64 => ElementType::Float64,
        DataType::Boolean => ElementType::Boolean,
        DataType::Utf8 => ElementType::Utf8,
        DataType::Date32 => ElementType::Date32,
        DataType::Decimal(d) => ElementType::Decimal(*d),
        DataType::Timestamp => ElementType::Timestamp,
        DataType::Timestamptz => ElementType::Timestamptz,
        DataType::Binary => ElementType::Binary,
        DataType::Uuid => ElementType::Uuid,
        DataType::Time => ElementType::Time,
        DataType::Array(_) | DataType::Map(_) => return None,
    })
}

/// Checks what the physical form cannot: the ranges Iceberg gives a logical type. Every value
/// that passes can be written, so nothing a plugin hands over can fail a commit later.
pub(crate) fn check_range(data_type: &DataType, value: &Value) -> Result<(), String> {
    match (data_type, value) {
        (DataType::Time, Value::Int(micros)) => crate::text::check_time(*micros).map(drop),
        (DataType::Date32, Value::Int(days)) => crate::text::check_date_days(*days).map(drop),
        (DataType::Decimal(d), Value::Int128(unscaled)) => check_decimal(*unscaled, d),
        (DataType::Decimal(d), Value::Int(unscaled)) => check_decimal(*unscaled as i128, d),
        (DataType::Uuid, Value::Bytes(bytes)) if bytes.len() != 16 => {
            Err(format!("a UUID is 16 bytes, got {} bytes", bytes.len()))
        }
        (DataType::Array(element), Value::List(items)) => {
            let element = element_data_type(element);
            for (i, item) in items.iter().enumerate() {
                if *item != Value::Null {
                    check_range(&element, item).map_err(|e| format!("array element {i}: {e}"))?;
                }
            }
            Ok(())
        }
        (DataType::Map(m), Value::Map(entries)) => {
            let (key_type, value_type) = (element_data_type(&m.key), element_data_type(&m.value));
            for (key, value) in entries {
                check_range(&key_type, key).map_err(|e| format!("map key: {e}"))?;
                if *value != Value::Null {
                    check_range(&value_type, value).map_err(|e| format!("map value: {e}"))?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// An unscaled decimal must have at most `precision` digits.
fn check_decimal(unscaled: i128, d: &DecimalType) -> Result<(), String> {
    let limit = 10u128.pow(d.precision.min(38) as u32);
    if unscaled.unsigned_abs() < limit {
        return Ok(());
    }
    Err(format!(
        "unscaled value {unscaled} is out of range for decimal({},{}) (at most {} digits)",
        d.precision, d.scale, d.precision
    ))
}

struct ColumnBuilder {
    field: Field,
    values: Values,
    validity: Vec<bool>,
    has_null: bool,
    set_in_row: bool,
    /// Rows whose value is kept from the current row (see [`BatchBuilder::set_unchanged`]).
    unchanged: Vec<bool>,
    has_unchanged: bool,
}

/// Builds one [`ChangeBatch`] for a table, row by row.
///
/// [`row`](BatchBuilder::row) addresses columns by name with typed values; every error is a
/// [`DataError`] naming the row and the column, and a row that fails is left out of the batch:
///
/// ```
/// use moonlink_sdk::{BatchBuilder, DataType, Field, Operation, TableSchema, ColumnValues};
/// let schema = TableSchema {
///     fields: vec![
///         Field::required("id", DataType::Int64),
///         Field::nullable("name", DataType::Utf8),
///     ],
///     primary_key: vec![],
/// };
/// let mut batch = BatchBuilder::new("demo.users", &schema);
/// let mut row = batch.row();
/// row.set("id", 7_i64)?;
/// row.set("name", "ada")?;
/// row.finish(Operation::Insert)?;
/// let err = batch.row().finish(Operation::Insert).unwrap_err(); // `id` is required
/// assert_eq!((err.row, err.column.as_deref()), (Some(1), Some("id")));
/// let batch = batch.finish();
/// assert!(matches!(&batch.columns[0].values, ColumnValues::Int64(v) if v == &vec![7]));
/// # Ok::<(), moonlink_sdk::DataError>(())
/// ```
///
/// The index-based calls (`start_row`, `set`, `finish_row`) are the fast path for plugins
/// that resolve column positions once.
pub struct BatchBuilder {
    table: String,
    operations: Vec<Operation>,
    columns: Vec<ColumnBuilder>,
}

impl BatchBuilder {
    /// An empty batch for `table` with the columns of `schema`.
    pub fn new(table: &str, schema: &TableSchema) -> Self {
        BatchBuilder {
            table: table.to_string(),
            operations: Vec::new(),
            columns: schema
                .fields
                .iter()
                .map(|f| ColumnBuilder {
                    values: Values::for_type(&f.data_type),
                    field: f.clone(),
                    validity: Vec::new(),
                    has_null: false,
                    set_in_row: false,
                    unchanged: Vec::new(),
                    has_unchanged: false,
                })
                .collect(),
        }
    }

    /// Makes room for `rows` more rows in every column (a hint; building works without it).
    pub fn reserve(&mut self, rows: usize) {
        self.operations.reserve(rows);
        for c in &mut self.columns {
            c.values.reserve(rows);
            c.validity.reserve(rows);
            c.unchanged.reserve(rows);
        }
    }

    /// The position of a column by name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.field.name == name)
    }

    /// The declared field of column `index`.
    pub fn field(&self, index: usize) -> &Field {
        &self.columns[index].field
    }

    /// Rows so far.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// No rows yet.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// Starts a row; every column is null until set.
    pub fn start_row(&mut self, operation: Operation) {
        self.operations.push(operation);
        for c in &mut self.columns {
            c.values.push_default();
            c.validity.push(false);
            c.unchanged.push(false);
            c.set_in_row = false;
        }
    }

    /// Sets a string column of the current row without allocating (the fast path of
    /// `set(index, Value::Str(..))`).
    pub fn set_str(&mut self, index: usize, s: &str) -> Result<(), String> {
        let column = self.current(index, "set_str")?;
        match &mut column.values {
            Values::Utf8Packed { offsets, data } => Values::set_last_str(offsets, data, s),
            _ => return self.set(index, Value::Str(s.to_string())),
        }
        *column.validity.last_mut().unwrap() = true;
        column.set_in_row = true;
        Ok(())
    }

    /// Sets a `map<string, string>` column of the current row from text (the fast path of
    /// `set(index, Value::Map(..))`: entries are copied into the column's packed buffers, no
    /// `Value` and no allocation per entry). `None` is a null value. Keys should be unique.
    pub fn set_str_map<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        index: usize,
        entries: impl IntoIterator<Item = (K, Option<V>)>,
    ) -> Result<(), String> {
        let column = self.current(index, "set_str_map")?;
        let Values::Map {
            offsets,
            keys,
            values,
            value_validity,
        } = &mut column.values
        else {
            return Err("set_str_map() on a column that is not a map".into());
        };
        let (
            Values::Utf8Packed {
                offsets: key_offsets,
                data: key_data,
            },
            Values::Utf8Packed {
                offsets: value_offsets,
                data: value_data,
            },
        ) = (&mut **keys, &mut **values)
        else {
            return Err("set_str_map() on a map that is not map<string, string>".into());
        };
        // The row's entries replace whatever the row held (it is the last row).
        let start = offsets[offsets.len() - 2] as usize;
        key_offsets.truncate(start + 1);
        key_data.truncate(key_offsets[start] as usize);
        value_offsets.truncate(start + 1);
        value_data.truncate(value_offsets[start] as usize);
        value_validity.truncate(start);
        for (key, value) in entries {
            key_data.extend_from_slice(key.as_ref().as_bytes());
            key_offsets.push(key_data.len() as u32);
            if let Some(value) = &value {
                value_data.extend_from_slice(value.as_ref().as_bytes());
            }
            value_offsets.push(value_data.len() as u32);
            value_validity.push(value.is_some());
        }
        *offsets.last_mut().unwrap() = value_validity.len() as u32;
        *column.validity.last_mut().unwrap() = true;
        column.set_in_row = true;
        Ok(())
    }

    /// Sets a `list<string>` column of the current row from text (the fast path of
    /// `set(index, Value::List(..))`, copied into the packed buffer). `None` is a null element.
    pub fn set_str_list<S: AsRef<str>>(
        &mut self,
        index: usize,
        items: impl IntoIterator<Item = Option<S>>,
    ) -> Result<(), String> {
        let column = self.current(index, "set_str_list")?;
        let Values::Array {
            offsets,
            elements,
            element_validity,
        } = &mut column.values
        else {
            return Err("set_str_list() on a column that is not a list".into());
        };
        let Values::Utf8Packed {
            offsets: item_offsets,
            data,
        } = &mut **elements
        else {
            return Err("set_str_list() on a list that is not list<string>".into());
        };
        let start = offsets[offsets.len() - 2] as usize;
        item_offsets.truncate(start + 1);
        data.truncate(item_offsets[start] as usize);
        element_validity.truncate(start);
        for item in items {
            if let Some(item) = &item {
                data.extend_from_slice(item.as_ref().as_bytes());
            }
            item_offsets.push(data.len() as u32);
            element_validity.push(item.is_some());
        }
        *offsets.last_mut().unwrap() = element_validity.len() as u32;
        *column.validity.last_mut().unwrap() = true;
        column.set_in_row = true;
        Ok(())
    }

    /// Column `index` of a started row, or why there is none.
    fn current(&mut self, index: usize, call: &str) -> Result<&mut ColumnBuilder, String> {
        if self.operations.is_empty() {
            return Err(format!("{call}() before start_row()"));
        }
        let columns = self.columns.len();
        self.columns
            .get_mut(index)
            .ok_or_else(|| format!("{call}(): column {index} of {columns} does not exist"))
    }

    /// Marks column `index` of the current row as not sent: an upsert keeps the row's current
    /// value there (Postgres sends large unchanged values this way). Only for upserts on keyed
    /// tables, in non-key columns.
    pub fn set_unchanged(&mut self, index: usize) {
        let column = &mut self.columns[index];
        *column
            .unchanged
            .last_mut()
            .expect("set_unchanged() before start_row()") = true;
        column.has_unchanged = true;
        column.set_in_row = true;
    }

    /// Sets column `index` of the current row. The error is a message for the caller
    /// (e.g. `expected an integer, got string`); the plugin adds row and column.
    pub fn set(&mut self, index: usize, value: Value) -> Result<(), String> {
        let column = self.current(index, "set")?;
        if value == Value::Null {
            *column.validity.last_mut().unwrap() = false;
            column.set_in_row = true;
            return Ok(());
        }
        check_range(&column.field.data_type, &value)?;
        column.values.set_last(value)?;
        *column.validity.last_mut().unwrap() = true;
        column.set_in_row = true;
        Ok(())
    }

    /// Ends the current row, checking non-nullable columns. A delete needs only the primary
    /// key, so non-key columns may stay null in delete rows.
    pub fn finish_row(&mut self) -> Result<(), DataError> {
        let Some(row) = self.operations.len().checked_sub(1) else {
            return Err(DataError::new(
                DataErrorKind::InvalidRequest,
                "finish_row() before start_row()",
            ));
        };
        let is_delete = matches!(self.operations[row], Operation::Delete);
        for c in &mut self.columns {
            let valid = *c.validity.last().unwrap();
            if !valid {
                if !c.field.nullable && !is_delete && !*c.unchanged.last().unwrap() {
                    let why = if c.set_in_row {
                        "null in a non-nullable column"
                    } else {
                        "missing value for a non-nullable column"
                    };
                    return Err(DataError::invalid_value(row, &c.field.name, why));
                }
                c.has_null = true;
            }
        }
        Ok(())
    }

    /// Starts a row whose columns are set by name; see [`Row`]. The row is added by
    /// [`Row::finish`]; dropped unfinished (or failing), it leaves the batch as it was.
    pub fn row(&mut self) -> Row<'_> {
        self.start_row(Operation::Insert);
        Row {
            batch: self,
            finished: false,
        }
    }

    /// Removes the last started row.
    fn discard_row(&mut self) {
        if self.operations.pop().is_none() {
            return;
        }
        for c in &mut self.columns {
            c.values.pop_last();
            c.validity.pop();
            c.unchanged.pop();
            c.has_unchanged = c.unchanged.iter().any(|u| *u);
        }
    }

    /// The finished batch. Columns that are entirely null in every delete row are kept: the
    /// host fills what deletes do not need.
    pub fn finish(self) -> ChangeBatch {
        ChangeBatch {
            table: self.table,
            operations: self.operations,
            columns: self
                .columns
                .into_iter()
                .map(|c| Column {
                    name: c.field.name,
                    values: c.values.into_wit(),
                    validity: c.has_null.then_some(c.validity),
                    unchanged: c.has_unchanged.then_some(c.unchanged),
                })
                .collect(),
        }
    }
}

/// One row being built, columns addressed by name (from [`BatchBuilder::row`]).
///
/// Every call returns the same error type, [`DataError`], naming the row and the column.
pub struct Row<'a> {
    batch: &'a mut BatchBuilder,
    finished: bool,
}

impl Row<'_> {
    fn index(&self, column: &str) -> Result<usize, DataError> {
        self.batch
            .column_index(column)
            .ok_or_else(|| self.error(column, "no such column in the table"))
    }

    fn error(&self, column: &str, message: impl Into<String>) -> DataError {
        DataError::invalid_value(self.batch.len() - 1, column, message)
    }

    /// Sets `column` to `value`: anything that converts into a [`Value`] (`i64`, `&str`,
    /// `f64`, `bool`, `Option<T>` where `None` is null, ...). Integers are checked against the
    /// column's width, dates, times and decimals against their ranges.
    pub fn set(&mut self, column: &str, value: impl Into<Value>) -> Result<(), DataError> {
        let index = self.index(column)?;
        self.batch
            .set(index, value.into())
            .map_err(|message| self.error(column, message))
    }

    /// Sets a map column to `entries` (key/value pairs, in order): any pairs whose parts
    /// convert into [`Value`]s, e.g. `[("http.route", "/users")]` or a `HashMap`'s iterator.
    /// A `None` value is a null value; keys are never null.
    ///
    /// ```
    /// use moonlink_sdk::{BatchBuilder, DataType, ElementType, Field, MapType, Operation, TableSchema, Value};
    /// let attributes = DataType::Map(MapType { key: ElementType::Utf8, value: ElementType::Utf8 });
    /// let schema = TableSchema::new(vec![Field::nullable("attributes", attributes)]);
    /// let mut batch = BatchBuilder::new("demo.spans", &schema);
    /// let mut row = batch.row();
    /// row.set_map("attributes", [("http.route", Some("/users")), ("peer", None)])?;
    /// row.finish(Operation::Insert)?;
    /// let batch = batch.finish();
    /// assert_eq!(
    ///     batch.row(0).get("attributes"),
    ///     Some(Value::from(vec![("http.route", Some("/users")), ("peer", None)]))
    /// );
    /// # Ok::<(), moonlink_sdk::DataError>(())
    /// ```
    pub fn set_map<K: Into<Value>, V: Into<Value>>(
        &mut self,
        column: &str,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(), DataError> {
        let entries = entries
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self.set(column, Value::Map(entries))
    }

    /// Sets a string column without allocating.
    pub fn set_str(&mut self, column: &str, value: &str) -> Result<(), DataError> {
        let index = self.index(column)?;
        self.batch
            .set_str(index, value)
            .map_err(|message| self.error(column, message))
    }

    /// Marks `column` as not sent: an upsert keeps the row's current value there (see
    /// [`BatchBuilder::set_unchanged`]).
    pub fn set_unchanged(&mut self, column: &str) -> Result<(), DataError> {
        let index = self.index(column)?;
        self.batch.set_unchanged(index);
        Ok(())
    }

    /// Adds the row to the batch with `operation`, checking non-nullable columns (a delete
    /// needs only its key). On an error the row is left out and the batch is unchanged.
    pub fn finish(mut self, operation: Operation) -> Result<(), DataError> {
        *self.batch.operations.last_mut().unwrap() = operation;
        self.batch.finish_row()?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for Row<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.batch.discard_row();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MapType;

    fn builder(data_type: DataType) -> BatchBuilder {
        let schema = TableSchema {
            fields: vec![Field {
                name: "c".into(),
                data_type,
                nullable: true,
                default: None,
            }],
            primary_key: vec![],
        };
        let mut batch = BatchBuilder::new("t", &schema);
        batch.start_row(Operation::Insert);
        batch
    }

    #[test]
    fn values_outside_the_logical_type_are_refused() {
        let time = || builder(DataType::Time);
        for bad in [-5, 86_400_000_000, 1_000_000_000_000_000] {
            let err = time().set(0, Value::Int(bad)).unwrap_err();
            assert!(
                err.contains("out of range") && err.contains("time"),
                "{err}"
            );
        }
        assert!(time().set(0, Value::Int(86_399_999_999)).is_ok());

        let float32 = || builder(DataType::Float32);
        for bad in [1e39, -1e39, f64::MAX] {
            let err = float32().set(0, Value::Float(bad)).unwrap_err();
            assert!(err.contains("float32"), "{err}");
        }
        // Infinity and NaN written as such stay accepted.
        assert!(float32().set(0, Value::Float(f64::INFINITY)).is_ok());
        assert!(float32().set(0, Value::Float(f64::NAN)).is_ok());

        let decimal = || {
            builder(DataType::Decimal(DecimalType {
                precision: 5,
                scale: 2,
            }))
        };
        let err = decimal().set(0, Value::Int128(100_000)).unwrap_err();
        assert!(err.contains("decimal(5,2)"), "{err}");
        assert!(decimal().set(0, Value::Int(-100_000)).is_err());
        assert!(decimal().set(0, Value::Int128(-99_999)).is_ok());

        let err = builder(DataType::Uuid)
            .set(0, Value::Bytes(vec![1, 2, 3]))
            .unwrap_err();
        assert!(err.contains("16 bytes"), "{err}");

        let err = builder(DataType::Date32)
            .set(0, Value::Int(i64::from(i32::MAX) + 1))
            .unwrap_err();
        assert!(err.contains("date"), "{err}");

        let err = builder(DataType::Array(ElementType::Time))
            .set(
                0,
                Value::List(vec![Value::Int(0), Value::Null, Value::Int(-1)]),
            )
            .unwrap_err();
        assert!(err.contains("element 2"), "{err}");
        let err = builder(DataType::Array(ElementType::Float32))
            .set(0, Value::List(vec![Value::Float(1e39)]))
            .unwrap_err();
        assert!(err.contains("float32"), "{err}");
    }

    fn users() -> TableSchema {
        TableSchema::new(vec![
            Field::required("id", DataType::Int32),
            Field::nullable("name", DataType::Utf8),
            Field::nullable("tags", DataType::Array(ElementType::Int64)),
        ])
    }

    #[test]
    fn rows_by_name_share_one_error_type_and_fail_whole() {
        let mut batch = BatchBuilder::new("t", &users());
        let mut row = batch.row();
        row.set("id", 1).unwrap();
        row.set("name", Some("ada")).unwrap();
        row.set("tags", vec![Value::Int(1), Value::Null]).unwrap();
        row.finish(Operation::Upsert).unwrap();

        // Every failure is a DataError naming row and column; the row is left out.
        let mut row = batch.row();
        row.set("name", "half a row").unwrap();
        row.set("tags", vec![Value::Int(2), Value::Int(3)]).unwrap();
        let err = row.set("id", i64::MAX).unwrap_err();
        assert_eq!((err.row, err.column.as_deref()), (Some(1), Some("id")));
        assert!(err.message.contains("int32"), "{}", err.message);
        let err = row.set("nope", 1).unwrap_err();
        assert_eq!(err.column.as_deref(), Some("nope"));
        let err = row.finish(Operation::Insert).unwrap_err();
        assert_eq!((err.row, err.column.as_deref()), (Some(1), Some("id")));
        {
            let mut dropped = batch.row();
            dropped.set("id", 9).unwrap();
        }
        let mut delete = batch.row();
        delete.set("id", 2_i16).unwrap();
        delete.set("name", None::<&str>).unwrap();
        delete.finish(Operation::Delete).unwrap();
        assert!(String::from(err).starts_with("row 1, column 'id': "));

        let batch = batch.finish();
        assert_eq!(batch.operations, vec![Operation::Upsert, Operation::Delete]);
        assert!(matches!(&batch.columns[0].values, ColumnValues::Int32(v) if v == &[1, 2]));
        assert_eq!(batch.row(0).str("name"), Some("ada"));
        assert_eq!(batch.row(1).get("name"), Some(Value::Null));
        assert_eq!(
            batch.row(0).get("tags"),
            Some(Value::List(vec![Value::Int(1), Value::Null]))
        );
        assert_eq!(batch.row(1).get("tags"), Some(Value::Null));
        let ColumnValues::Array(tags) = &batch.columns[2].values else {
            panic!()
        };
        assert_eq!(tags.offsets, vec![0, 2, 2]);
        assert_eq!(batch.columns[1].strings(), Some(vec![Some("ada"), None]));
    }

    #[test]
    fn text_maps_and_lists_equal_their_value_forms_and_travel_packed() {
        let attrs = DataType::Map(MapType {
            key: ElementType::Utf8,
            value: ElementType::Utf8,
        });
        let schema = TableSchema::new(vec![
            Field::nullable("m", attrs),
            Field::nullable("l", DataType::Array(ElementType::Utf8)),
        ]);
        let mut fast = BatchBuilder::new("t", &schema);
        fast.reserve(3); // a hint only: the batch is the same
        let mut slow = BatchBuilder::new("t", &schema);
        for row in 0..3 {
            fast.start_row(Operation::Insert);
            slow.start_row(Operation::Insert);
            let entries = [("a", Some(format!("{row}"))), ("b", None)];
            // A row set twice keeps the second value, as `set` does.
            fast.set_str_map(0, [("x", Some("y"))]).unwrap();
            fast.set_str_map(0, entries.clone()).unwrap();
            fast.set_str_list(1, [Some("p"), None, Some("q")]).unwrap();
            let map = entries
                .iter()
                .map(|(k, v)| (Value::from(*k), Value::from(v.clone())))
                .collect();
            slow.set(0, Value::Map(map)).unwrap();
            let list = vec![Value::from("p"), Value::Null, Value::from("q")];
            slow.set(1, Value::List(list)).unwrap();
            fast.finish_row().unwrap();
            slow.finish_row().unwrap();
        }
        let (fast, slow) = (fast.finish(), slow.finish());
        assert_eq!(format!("{fast:?}"), format!("{slow:?}"));
        let ColumnValues::Map(m) = &fast.columns[0].values else {
            panic!("not a map")
        };
        assert!(matches!(m.keys, ElementValues::Utf8Buffer(_)));
        assert_eq!(
            fast.row(2).get("m"),
            Some(Value::from(vec![("a", Some("2")), ("b", None)]))
        );
        let mut wrong = BatchBuilder::new("t", &schema);
        wrong.start_row(Operation::Insert);
        assert!(wrong.set_str_map(1, [("a", Some("b"))]).is_err());
        assert!(wrong.set_str_list(0, [Some("a")]).is_err());
    }

    #[test]
    fn a_wrong_call_order_is_an_error_not_a_panic() {
        let mut batch = BatchBuilder::new("t", &users());
        assert!(batch
            .set(0, Value::Int(1))
            .unwrap_err()
            .contains("before start_row"));
        assert!(batch
            .set_str(1, "x")
            .unwrap_err()
            .contains("before start_row"));
        assert!(batch
            .finish_row()
            .unwrap_err()
            .message
            .contains("before start_row"));
        batch.start_row(Operation::Insert);
        assert!(batch
            .set(7, Value::Int(1))
            .unwrap_err()
            .contains("does not exist"));
        // Null after a value is null.
        batch.set(1, Value::from("x")).unwrap();
        batch.set(1, Value::Null).unwrap();
        batch.set(0, Value::Int(1)).unwrap();
        batch.finish_row().unwrap();
        assert_eq!(batch.finish().row(0).get("name"), Some(Value::Null));
    }
}
