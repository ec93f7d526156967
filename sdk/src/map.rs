//! Building a map column a column at a time (the fast path next to [`Row::set_map`]).
//!
//! [`Row::set_map`]: crate::Row::set_map

use crate::batch::{check_range, Values};
use crate::{
    element_data_type, ChangeBatch, Column, ColumnValues, DataType, MapType, MapValues, Value,
};

/// Builds one map column row by row: add a row's entries with [`entry`](Self::entry), end the
/// row with [`finish_row`](Self::finish_row) (or [`null_row`](Self::null_row)), and put the
/// column into a batch with [`ChangeBatch::set_column`].
///
/// ```
/// use moonlink_sdk::{BatchBuilder, DataType, ElementType, Field, MapColumnBuilder, MapType, Operation, TableSchema, Value};
/// let map = MapType { key: ElementType::Utf8, value: ElementType::Int64 };
/// let schema = TableSchema::new(vec![
///     Field::required("id", DataType::Int64),
///     Field::nullable("counts", DataType::Map(map)),
/// ]);
/// let mut batch = BatchBuilder::new("demo.t", &schema);
/// let mut counts = MapColumnBuilder::new("counts", map);
/// for id in 0..2_i64 {
///     let mut row = batch.row();
///     row.set("id", id)?;
///     row.finish(Operation::Insert)?;
///     counts.entry("a", id).map_err(|m| moonlink_sdk::DataError::invalid_value(id as usize, "counts", m))?;
///     counts.finish_row();
/// }
/// let mut batch = batch.finish();
/// batch.set_column(counts.finish());
/// assert_eq!(batch.row(1).get("counts"), Some(Value::from(vec![("a", 1_i64)])));
/// # Ok::<(), moonlink_sdk::DataError>(())
/// ```
pub struct MapColumnBuilder {
    name: String,
    key_type: DataType,
    value_type: DataType,
    offsets: Vec<u32>,
    keys: Values,
    values: Values,
    value_validity: Vec<bool>,
    validity: Vec<bool>,
}

impl MapColumnBuilder {
    /// An empty map column `name` of type `map`.
    pub fn new(name: &str, map: MapType) -> Self {
        let (key_type, value_type) = (element_data_type(&map.key), element_data_type(&map.value));
        MapColumnBuilder {
            name: name.to_string(),
            keys: Values::for_type(&key_type),
            values: Values::for_type(&value_type),
            key_type,
            value_type,
            offsets: vec![0],
            value_validity: Vec::new(),
            validity: Vec::new(),
        }
    }

    /// Adds an entry to the current row; `Value::Null` (or `None`) is a null value. On an
    /// error (a null key, a wrong type, a value out of range) nothing is added.
    pub fn entry(&mut self, key: impl Into<Value>, value: impl Into<Value>) -> Result<(), String> {
        let (key, value) = (key.into(), value.into());
        if key == Value::Null {
            return Err("a map key cannot be null".into());
        }
        check_range(&self.key_type, &key).map_err(|e| format!("map key: {e}"))?;
        let valid = value != Value::Null;
        if valid {
            check_range(&self.value_type, &value).map_err(|e| format!("map value: {e}"))?;
        }
        let len = self.value_validity.len();
        self.keys.push_default();
        self.values.push_default();
        let set = self.keys.set_last(key).map_err(|e| format!("map key: {e}"));
        let set = set.and_then(|()| match valid {
            true => self
                .values
                .set_last(value)
                .map_err(|e| format!("map value: {e}")),
            false => Ok(()),
        });
        if let Err(e) = set {
            self.keys.truncate(len);
            self.values.truncate(len);
            return Err(e);
        }
        self.value_validity.push(valid);
        Ok(())
    }

    /// Ends the current row: a map of the entries added since the last row (maybe none).
    pub fn finish_row(&mut self) {
        self.offsets.push(self.value_validity.len() as u32);
        self.validity.push(true);
    }

    /// Ends the current row as a null map (entries added to it are dropped).
    pub fn null_row(&mut self) {
        let start = *self.offsets.last().unwrap_or(&0) as usize;
        self.keys.truncate(start);
        self.values.truncate(start);
        self.value_validity.truncate(start);
        self.offsets.push(start as u32);
        self.validity.push(false);
    }

    /// Rows finished so far.
    pub fn len(&self) -> usize {
        self.validity.len()
    }

    /// No rows yet.
    pub fn is_empty(&self) -> bool {
        self.validity.is_empty()
    }

    /// The column, ready for a batch with as many rows.
    pub fn finish(self) -> Column {
        let has_null_value = self.value_validity.iter().any(|v| !v);
        let has_null = self.validity.iter().any(|v| !v);
        Column {
            name: self.name,
            values: ColumnValues::Map(MapValues {
                offsets: self.offsets,
                keys: self.keys.into_elements(),
                values: self.values.into_elements(),
                value_validity: has_null_value.then_some(self.value_validity),
            }),
            validity: has_null.then_some(self.validity),
            unchanged: None,
        }
    }
}

impl ChangeBatch {
    /// Puts `column` in the batch, replacing the column of the same name if there is one.
    pub fn set_column(&mut self, column: Column) {
        match self.columns.iter_mut().find(|c| c.name == column.name) {
            Some(existing) => *existing = column,
            None => self.columns.push(column),
        }
    }
}
