//! Build columnar change batches one row at a time.
//!
//! Plugins think in rows; the host wants columns (one list per column crosses the wasm boundary
//! in one copy). [`BatchBuilder`] bridges the two: set values by column, finish rows, and get a
//! [`ChangeBatch`] whose columns have the physical form each logical type needs.

pub(crate) use crate::values::Values;
use crate::{
    ChangeBatch, Column, DataError, DataErrorKind, DataType, DecimalType, ElementType, Field,
    Operation, TableSchema,
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
    pub(crate) fn describe(&self) -> &'static str {
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
            next: 0,
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
    /// The column after the last one set: plugins mostly set columns in schema order, so it
    /// is tried first and a set costs one name comparison instead of a scan.
    next: usize,
}

impl Row<'_> {
    fn index(&mut self, column: &str) -> Result<usize, DataError> {
        let columns = &self.batch.columns;
        let index = match columns.get(self.next) {
            Some(c) if c.field.name == column => self.next,
            _ => self
                .batch
                .column_index(column)
                .ok_or_else(|| self.error(column, "no such column in the table"))?,
        };
        self.next = index + 1;
        Ok(index)
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
#[path = "batch_tests.rs"]
mod tests;
