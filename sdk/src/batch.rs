//! Build columnar change batches one row at a time.
//!
//! Plugins think in rows; the host wants columns (one list per column crosses the wasm boundary
//! in one copy). [`BatchBuilder`] bridges the two: set values by column, finish rows, and get a
//! [`ChangeBatch`] whose columns have the physical form each logical type needs.

use crate::{
    ArrayValues, ChangeBatch, Column, ColumnValues, DataError, DataType, DecimalType, ElementType,
    ElementValues, Field, Int128, Operation, TableSchema, Utf8Buffer,
};

/// A value as a plugin parsed it, before it is packed into its column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    /// Integers, and the integer forms of dates (days), timestamps (microseconds).
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// Binary and UUID (16 bytes) values.
    Bytes(Vec<u8>),
    /// Unscaled decimal values.
    Int128(i128),
    /// The elements of an array column's value (each a scalar value or `Null`).
    List(Vec<Value>),
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
        }
    }
}

/// A column being built: values in physical form plus validity.
enum Values {
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    Utf8(Vec<String>),
    /// Top-level strings, packed: `data[offsets[i]..offsets[i + 1]]` (one copy per column
    /// across the boundary, no allocation per value).
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
}

impl Values {
    /// A column's values: strings packed at the top level, plain inside arrays.
    fn for_column(data_type: &DataType) -> Values {
        match data_type {
            DataType::Utf8 => Values::Utf8Packed {
                offsets: vec![0],
                data: Vec::new(),
            },
            other => Values::for_type(other),
        }
    }

    fn for_type(data_type: &DataType) -> Values {
        match data_type {
            DataType::Int16 => Values::I16(Vec::new()),
            DataType::Int32 | DataType::Date32 => Values::I32(Vec::new()),
            DataType::Int64 | DataType::Timestamp | DataType::Timestamptz | DataType::Time => {
                Values::I64(Vec::new())
            }
            DataType::Float32 => Values::F32(Vec::new()),
            DataType::Float64 => Values::F64(Vec::new()),
            DataType::Boolean => Values::Bool(Vec::new()),
            DataType::Utf8 => Values::Utf8(Vec::new()),
            DataType::Binary | DataType::Uuid => Values::Binary(Vec::new()),
            DataType::Decimal(_) => Values::I128(Vec::new()),
            DataType::Array(element) => Values::Array {
                offsets: vec![0],
                elements: Box::new(Values::for_type(&element_data_type(element))),
                element_validity: Vec::new(),
            },
        }
    }

    fn push_default(&mut self) {
        match self {
            Values::I16(v) => v.push(0),
            Values::I32(v) => v.push(0),
            Values::I64(v) => v.push(0),
            Values::F32(v) => v.push(0.0),
            Values::F64(v) => v.push(0.0),
            Values::Bool(v) => v.push(false),
            Values::Utf8(v) => v.push(String::new()),
            Values::Utf8Packed { offsets, data } => offsets.push(data.len() as u32),
            Values::Binary(v) => v.push(Vec::new()),
            Values::I128(v) => v.push(Int128 { lo: 0, hi: 0 }),
            Values::Array { offsets, .. } => {
                let end = *offsets.last().unwrap();
                offsets.push(end);
            }
        }
    }

    /// Overwrites the last slot with `value`, or explains why it does not fit.
    fn set_last(&mut self, value: Value) -> Result<(), String> {
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
            (Values::Utf8(v), Value::Str(s)) => *v.last_mut().unwrap() = s,
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
            (Values::Utf8(_) | Values::Utf8Packed { .. }, other) => {
                return Err(mismatch("a string", &other))
            }
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
        }
        Ok(())
    }

    fn into_wit(self) -> ColumnValues {
        match self {
            Values::I16(v) => ColumnValues::Int16(v),
            Values::I32(v) => ColumnValues::Int32(v),
            Values::I64(v) => ColumnValues::Int64(v),
            Values::F32(v) => ColumnValues::Float32(v),
            Values::F64(v) => ColumnValues::Float64(v),
            Values::Bool(v) => ColumnValues::Boolean(v),
            Values::Utf8(v) => ColumnValues::Utf8(v),
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
                    elements: match elements.into_wit() {
                        ColumnValues::Int16(v) => ElementValues::Int16(v),
                        ColumnValues::Int32(v) => ElementValues::Int32(v),
                        ColumnValues::Int64(v) => ElementValues::Int64(v),
                        ColumnValues::Float32(v) => ElementValues::Float32(v),
                        ColumnValues::Float64(v) => ElementValues::Float64(v),
                        ColumnValues::Boolean(v) => ElementValues::Boolean(v),
                        ColumnValues::Utf8(v) => ElementValues::Utf8(v),
                        ColumnValues::Binary(v) => ElementValues::Binary(v),
                        ColumnValues::Int128(v) => ElementValues::Int128(v),
                        ColumnValues::Array(_) | ColumnValues::Utf8Buffer(_) => {
                            unreachable!("elements are scalar and unpacked")
                        }
                    },
                    element_validity: has_null.then_some(element_validity),
                })
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

    /// Drops values past the first `len` (arrays' elements only).
    fn truncate(&mut self, len: usize) {
        match self {
            Values::I16(v) => v.truncate(len),
            Values::I32(v) => v.truncate(len),
            Values::I64(v) => v.truncate(len),
            Values::F32(v) => v.truncate(len),
            Values::F64(v) => v.truncate(len),
            Values::Bool(v) => v.truncate(len),
            Values::Utf8(v) => v.truncate(len),
            Values::Utf8Packed { offsets, data } => {
                offsets.truncate(len + 1);
                data.truncate(*offsets.last().unwrap() as usize);
            }
            Values::Binary(v) => v.truncate(len),
            Values::I128(v) => v.truncate(len),
            Values::Array { .. } => {}
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

/// Checks what the physical form cannot: the ranges Iceberg gives a logical type. Every value
/// that passes can be written, so nothing a plugin hands over can fail a commit later.
fn check_range(data_type: &DataType, value: &Value) -> Result<(), String> {
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
/// ```
/// use moonlink_sdk::{BatchBuilder, DataType, Field, Operation, TableSchema, Value, ColumnValues};
/// let schema = TableSchema {
///     fields: vec![Field { name: "id".into(), data_type: DataType::Int64, nullable: false }],
///     primary_key: vec![],
/// };
/// let mut batch = BatchBuilder::new("demo.users", &schema);
/// batch.start_row(Operation::Insert);
/// batch.set(0, Value::Int(7)).unwrap();
/// batch.finish_row().unwrap();
/// let batch = batch.finish();
/// assert!(matches!(&batch.columns[0].values, ColumnValues::Int64(v) if v == &vec![7]));
/// ```
pub struct BatchBuilder {
    table: String,
    operations: Vec<Operation>,
    columns: Vec<ColumnBuilder>,
}

impl BatchBuilder {
    pub fn new(table: &str, schema: &TableSchema) -> Self {
        BatchBuilder {
            table: table.to_string(),
            operations: Vec::new(),
            columns: schema
                .fields
                .iter()
                .map(|f| ColumnBuilder {
                    values: Values::for_column(&f.data_type),
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
        let column = &mut self.columns[index];
        match &mut column.values {
            Values::Utf8Packed { offsets, data } => Values::set_last_str(offsets, data, s),
            _ => return self.set(index, Value::Str(s.to_string())),
        }
        *column
            .validity
            .last_mut()
            .expect("set_str() before start_row()") = true;
        column.set_in_row = true;
        Ok(())
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
        let column = &mut self.columns[index];
        if value == Value::Null {
            column.set_in_row = true;
            return Ok(());
        }
        check_range(&column.field.data_type, &value)?;
        column.values.set_last(value)?;
        *column
            .validity
            .last_mut()
            .expect("set() before start_row()") = true;
        column.set_in_row = true;
        Ok(())
    }

    /// Ends the current row, checking non-nullable columns. A delete needs only the primary
    /// key, so non-key columns may stay null in delete rows.
    pub fn finish_row(&mut self) -> Result<(), DataError> {
        let row = self.operations.len() - 1;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn builder(data_type: DataType) -> BatchBuilder {
        let schema = TableSchema {
            fields: vec![Field {
                name: "c".into(),
                data_type,
                nullable: true,
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
}
