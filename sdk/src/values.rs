//! A column being built: values in their physical form, strings packed at every level.

use crate::batch::{element_data_type, Value};
use crate::{ArrayValues, ColumnValues, DataType, ElementValues, Int128, MapValues, Utf8Buffer};

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
    pub(crate) fn set_last_str(offsets: &mut [u32], data: &mut Vec<u8>, s: &str) {
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
