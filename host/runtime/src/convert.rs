//! WIT values to engine types and back. Columns arrive as whole lists and become Arrow arrays
//! in one move per column; nothing here runs per row except unavoidable copies.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Float32Array, Float64Array, Int32Array, Int64Array, ListArray, StringArray,
    Time64MicrosecondArray, TimestampMicrosecondArray,
};
use arrow_buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use moonlink_engine::{ChangeBatch, ColumnType, Operation, TableSchema};

use crate::bindings::moonlink::plugin::types as wit;
use crate::error::{DataErrorKind, RuntimeError};

pub(crate) fn schema_to_wit(schema: &TableSchema) -> wit::TableSchema {
    wit::TableSchema {
        fields: schema
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| wit::Field {
                name: c.name.clone(),
                data_type: type_to_wit(&c.data_type),
                nullable: c.nullable,
                default: schema
                    .defaults
                    .get(&schema.field_id(i))
                    .map(|v| v.to_string()),
            })
            .collect(),
        primary_key: schema.primary_key.clone(),
    }
}

/// The engine schema of a table a plugin declares. Field defaults (Iceberg JSON text) land in
/// `defaults`, keyed by the new schema's positional field ids.
pub fn schema_from_wit(schema: &wit::TableSchema) -> Result<TableSchema, RuntimeError> {
    let mut defaults = std::collections::BTreeMap::new();
    for (i, f) in schema.fields.iter().enumerate() {
        if let Some(text) = &f.default {
            let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                RuntimeError::Plugin(format!(
                    "column '{}': default {text:?} is not JSON (Iceberg's single-value form): {e}",
                    f.name
                ))
            })?;
            defaults.insert(i as i32 + 1, value);
        }
    }
    let mut engine_schema = TableSchema::new(
        schema
            .fields
            .iter()
            .map(|f| {
                Ok(moonlink_engine::ColumnSchema {
                    name: f.name.clone(),
                    data_type: type_from_wit(&f.data_type)
                        .map_err(|m| RuntimeError::Plugin(format!("column '{}': {m}", f.name)))?,
                    nullable: f.nullable,
                })
            })
            .collect::<Result<_, RuntimeError>>()?,
        schema.primary_key.clone(),
    );
    engine_schema.defaults = defaults;
    Ok(engine_schema)
}

fn element_from_wit(t: &wit::ElementType) -> ColumnType {
    use wit::ElementType as E;
    match t {
        E::Int16 => ColumnType::Int16,
        E::Int32 => ColumnType::Int32,
        E::Int64 => ColumnType::Int64,
        E::Float32 => ColumnType::Float32,
        E::Float64 => ColumnType::Float64,
        E::Boolean => ColumnType::Boolean,
        E::Utf8 => ColumnType::Utf8,
        E::Date32 => ColumnType::Date32,
        E::Decimal(d) => ColumnType::Decimal {
            precision: d.precision,
            scale: d.scale,
        },
        E::Timestamp => ColumnType::Timestamp,
        E::Timestamptz => ColumnType::TimestampTz,
        E::Binary => ColumnType::Binary,
        E::Uuid => ColumnType::Uuid,
        E::Time => ColumnType::Time,
    }
}

fn element_to_wit(t: &ColumnType) -> wit::ElementType {
    use wit::ElementType as E;
    match t {
        ColumnType::Int16 => E::Int16,
        ColumnType::Int32 => E::Int32,
        ColumnType::Int64 => E::Int64,
        ColumnType::Float32 => E::Float32,
        ColumnType::Float64 => E::Float64,
        ColumnType::Boolean => E::Boolean,
        ColumnType::Utf8 => E::Utf8,
        ColumnType::Date32 => E::Date32,
        ColumnType::Decimal { precision, scale } => E::Decimal(wit::DecimalType {
            precision: *precision,
            scale: *scale,
        }),
        ColumnType::Timestamp => E::Timestamp,
        ColumnType::TimestampTz => E::Timestamptz,
        ColumnType::Binary => E::Binary,
        ColumnType::Uuid => E::Uuid,
        ColumnType::Time => E::Time,
        // The engine refuses nested types at table creation.
        ColumnType::List(_) | ColumnType::Map { .. } => E::Utf8,
    }
}

fn type_from_wit(t: &wit::DataType) -> Result<ColumnType, String> {
    Ok(match t {
        wit::DataType::Int16 => ColumnType::Int16,
        wit::DataType::Int32 => ColumnType::Int32,
        wit::DataType::Int64 => ColumnType::Int64,
        wit::DataType::Float32 => ColumnType::Float32,
        wit::DataType::Float64 => ColumnType::Float64,
        wit::DataType::Boolean => ColumnType::Boolean,
        wit::DataType::Utf8 => ColumnType::Utf8,
        wit::DataType::Date32 => ColumnType::Date32,
        wit::DataType::Decimal(d) => ColumnType::Decimal {
            precision: d.precision,
            scale: d.scale,
        },
        wit::DataType::Timestamp => ColumnType::Timestamp,
        wit::DataType::Timestamptz => ColumnType::TimestampTz,
        wit::DataType::Binary => ColumnType::Binary,
        wit::DataType::Uuid => ColumnType::Uuid,
        wit::DataType::Time => ColumnType::Time,
        wit::DataType::Array(element) => ColumnType::List(Box::new(element_from_wit(element))),
        wit::DataType::Map(m) => ColumnType::Map {
            key: Box::new(element_from_wit(&m.key)),
            value: Box::new(element_from_wit(&m.value)),
        },
    })
}

fn type_to_wit(t: &ColumnType) -> wit::DataType {
    match t {
        ColumnType::Int16 => wit::DataType::Int16,
        ColumnType::Int32 => wit::DataType::Int32,
        ColumnType::Int64 => wit::DataType::Int64,
        ColumnType::Float32 => wit::DataType::Float32,
        ColumnType::Float64 => wit::DataType::Float64,
        ColumnType::Boolean => wit::DataType::Boolean,
        ColumnType::Utf8 => wit::DataType::Utf8,
        ColumnType::Date32 => wit::DataType::Date32,
        ColumnType::Decimal { precision, scale } => wit::DataType::Decimal(wit::DecimalType {
            precision: *precision,
            scale: *scale,
        }),
        ColumnType::Timestamp => wit::DataType::Timestamp,
        ColumnType::TimestampTz => wit::DataType::Timestamptz,
        ColumnType::Binary => wit::DataType::Binary,
        ColumnType::Uuid => wit::DataType::Uuid,
        ColumnType::Time => wit::DataType::Time,
        ColumnType::List(element) => wit::DataType::Array(element_to_wit(element)),
        ColumnType::Map { key, value } => wit::DataType::Map(wit::MapType {
            key: element_to_wit(key),
            value: element_to_wit(value),
        }),
    }
}

pub(crate) fn data_error(e: wit::DataError) -> RuntimeError {
    RuntimeError::Data {
        kind: match e.kind {
            wit::DataErrorKind::Malformed => DataErrorKind::Malformed,
            wit::DataErrorKind::InvalidValue => DataErrorKind::InvalidValue,
            wit::DataErrorKind::InvalidRequest => DataErrorKind::InvalidRequest,
        },
        row: e.row,
        column: e.column,
        message: e.message,
    }
}

/// Converts a plugin's batch into an engine batch for `table`, validating it on the way.
pub fn batch_from_wit(
    table: &str,
    schema: &TableSchema,
    batch: wit::ChangeBatch,
) -> Result<ChangeBatch, RuntimeError> {
    if batch.table != table {
        return Err(RuntimeError::MalformedBatch(format!(
            "batch is for table '{}', expected '{table}'",
            batch.table
        )));
    }
    let rows = batch.operations.len();
    let operations = batch
        .operations
        .into_iter()
        .map(|op| match op {
            wit::Operation::Insert => Operation::Insert,
            wit::Operation::Upsert => Operation::Upsert,
            wit::Operation::Delete => Operation::Delete,
        })
        .collect();
    let mut columns = Vec::with_capacity(batch.columns.len());
    let mut unchanged = Vec::new();
    // Shared per schema (see `TableSchema::arrow_schema`): no Arrow type is rebuilt per batch.
    let arrow_schema = schema.arrow_schema();
    for column in batch.columns {
        if let Some(mask) = column.unchanged {
            unchanged.push((column.name.clone(), mask));
        }
        let Some(index) = schema.column_index(&column.name) else {
            return Err(RuntimeError::MalformedBatch(format!(
                "column '{}' is not in the table",
                column.name
            )));
        };
        let declared = &schema.columns[index];
        let array = column_to_arrow(
            &declared.data_type,
            arrow_schema.field(index).data_type(),
            column.values,
            column.validity,
            rows,
        )
        .map_err(|m| RuntimeError::MalformedBatch(format!("column '{}': {m}", column.name)))?;
        columns.push((column.name, array));
    }
    ChangeBatch::from_columns_keeping(schema, operations, columns, unchanged)
        .map_err(RuntimeError::InvalidBatch)
}

/// The values of an array's elements, as the column values of a scalar column.
fn element_values(values: wit::ElementValues) -> wit::ColumnValues {
    use wit::ColumnValues as C;
    use wit::ElementValues as E;
    match values {
        E::Int16(v) => C::Int16(v),
        E::Int32(v) => C::Int32(v),
        E::Int64(v) => C::Int64(v),
        E::Float32(v) => C::Float32(v),
        E::Float64(v) => C::Float64(v),
        E::Boolean(v) => C::Boolean(v),
        E::Utf8(v) => C::Utf8(v),
        E::Binary(v) => C::Binary(v),
        E::Int128(v) => C::Int128(v),
        // Packed: straight into an Arrow string array (offsets + one buffer).
        E::Utf8Buffer(b) => C::Utf8Buffer(b),
    }
}

fn column_to_arrow(
    data_type: &ColumnType,
    arrow_type: &arrow_schema::DataType,
    values: wit::ColumnValues,
    validity: Option<Vec<bool>>,
    rows: usize,
) -> Result<ArrayRef, String> {
    use wit::ColumnValues as V;
    let len = match &values {
        V::Int16(v) => v.len(),
        V::Int32(v) => v.len(),
        V::Int64(v) => v.len(),
        V::Float32(v) => v.len(),
        V::Float64(v) => v.len(),
        V::Boolean(v) => v.len(),
        V::Utf8(v) => v.len(),
        V::Binary(v) => v.len(),
        V::Int128(v) => v.len(),
        V::Array(v) => v.offsets.len().saturating_sub(1),
        V::Utf8Buffer(v) => v.offsets.len().saturating_sub(1),
        V::Map(v) => v.offsets.len().saturating_sub(1),
    };
    if len != rows {
        return Err(format!("{len} values for {rows} rows"));
    }
    if validity.as_ref().is_some_and(|v| v.len() != rows) {
        return Err("validity length differs from row count".into());
    }
    let nulls = validity.map(NullBuffer::from);
    let array: ArrayRef = match (data_type.clone(), values) {
        (ColumnType::List(element), V::Array(a)) => {
            let arrow_schema::DataType::List(field) = arrow_type else {
                return Err("list column without a list type".into());
            };
            let mut offsets: Vec<i32> = a.offsets.iter().map(|o| *o as i32).collect();
            if offsets.is_empty() {
                offsets.push(0); // an empty batch
            }
            if offsets.first() != Some(&0) || offsets.windows(2).any(|w| w[1] < w[0]) {
                return Err("array offsets must start at 0 and never decrease".into());
            }
            let count = *offsets.last().unwrap() as usize;
            let elements = column_to_arrow(
                &element,
                field.data_type(),
                element_values(a.elements),
                a.element_validity,
                count,
            )
            .map_err(|m| format!("array elements: {m}"))?;
            Arc::new(
                ListArray::try_new(
                    field.clone(),
                    OffsetBuffer::new(offsets.into()),
                    elements,
                    nulls,
                )
                .map_err(|e| e.to_string())?,
            )
        }
        (ColumnType::Map { key, value }, V::Map(m)) => {
            let arrow_schema::DataType::Map(entries_field, sorted) = arrow_type else {
                return Err("map column without a map type".into());
            };
            let arrow_schema::DataType::Struct(fields) = entries_field.data_type() else {
                return Err("map entries are not a struct".into());
            };
            let offsets = checked_offsets(&m.offsets)?;
            let count = *offsets.last().unwrap_or(&0) as usize;
            let keys = column_to_arrow(
                &key,
                fields[0].data_type(),
                element_values(m.keys),
                None,
                count,
            )
            .map_err(|e| format!("map keys: {e}"))?;
            let values = column_to_arrow(
                &value,
                fields[1].data_type(),
                element_values(m.values),
                m.value_validity,
                count,
            )
            .map_err(|e| format!("map values: {e}"))?;
            let entries =
                arrow_array::StructArray::try_new(fields.clone(), vec![keys, values], None)
                    .map_err(|e| e.to_string())?;
            Arc::new(
                arrow_array::MapArray::try_new(
                    entries_field.clone(),
                    OffsetBuffer::new(offsets.into()),
                    entries,
                    nulls,
                    *sorted,
                )
                .map_err(|e| e.to_string())?,
            )
        }
        (ColumnType::Int16, V::Int16(v)) => Arc::new(Int32Array::new(
            v.into_iter().map(i32::from).collect(),
            nulls,
        )),
        (ColumnType::Int32, V::Int32(v)) => Arc::new(Int32Array::new(v.into(), nulls)),
        (ColumnType::Date32, V::Int32(v)) => Arc::new(Date32Array::new(v.into(), nulls)),
        (ColumnType::Int64, V::Int64(v)) => Arc::new(Int64Array::new(v.into(), nulls)),
        (ColumnType::Time, V::Int64(v)) => Arc::new(Time64MicrosecondArray::new(v.into(), nulls)),
        (ColumnType::Timestamp, V::Int64(v)) => {
            Arc::new(TimestampMicrosecondArray::new(v.into(), nulls))
        }
        (ColumnType::TimestampTz, V::Int64(v)) => {
            Arc::new(TimestampMicrosecondArray::new(v.into(), nulls).with_timezone("+00:00"))
        }
        (ColumnType::Float32, V::Float32(v)) => Arc::new(Float32Array::new(v.into(), nulls)),
        (ColumnType::Float64, V::Float64(v)) => Arc::new(Float64Array::new(v.into(), nulls)),
        (ColumnType::Boolean, V::Boolean(v)) => {
            Arc::new(BooleanArray::new(v.into_iter().collect(), nulls))
        }
        (ColumnType::Utf8, V::Utf8(v)) => Arc::new(StringArray::from(v).with_nulls_from(nulls)?),
        (ColumnType::Utf8, V::Utf8Buffer(b)) => {
            // Checked once for the whole column: offsets in bounds and rising, UTF-8 at every
            // boundary.
            let mut offsets = b.offsets;
            if offsets.is_empty() {
                offsets.push(0); // an empty batch
            }
            if offsets.windows(2).any(|w| w[1] < w[0]) {
                return Err("string offsets must never decrease".into());
            }
            if offsets.last().is_some_and(|&o| i32::try_from(o).is_err()) {
                return Err("string buffer over 2 GiB".into());
            }
            // Rising and the last within `i32`: every offset is a valid `i32` with the same
            // bits, so the lifted buffer becomes the Arrow offsets without a copy.
            let offsets = OffsetBuffer::new(ScalarBuffer::<i32>::from(Buffer::from_vec(offsets)));
            Arc::new(
                StringArray::try_new(offsets, b.data.into(), nulls).map_err(|e| e.to_string())?,
            )
        }
        (ColumnType::Binary, V::Binary(v)) => {
            Arc::new(BinaryArray::from_iter_values(v).with_nulls_from(nulls)?)
        }
        (ColumnType::Uuid, V::Binary(v)) => {
            let mut flat = Vec::with_capacity(v.len() * 16);
            for (row, bytes) in v.iter().enumerate() {
                let valid = nulls.as_ref().is_none_or(|n| n.is_valid(row));
                match (valid, bytes.len()) {
                    (_, 16) => flat.extend_from_slice(bytes),
                    (false, _) => flat.extend_from_slice(&[0; 16]),
                    (true, n) => return Err(format!("row {row}: a UUID has 16 bytes, got {n}")),
                }
            }
            Arc::new(
                FixedSizeBinaryArray::try_new(16, flat.into(), nulls).map_err(|e| e.to_string())?,
            )
        }
        (ColumnType::Decimal { precision, scale }, V::Int128(v)) => {
            let values: Vec<i128> = v
                .into_iter()
                .map(|x| ((x.hi as i128) << 64) | x.lo as i128)
                .collect();
            let array = Decimal128Array::new(values.into(), nulls)
                .with_precision_and_scale(precision, scale as i8)
                .map_err(|e| e.to_string())?;
            array
                .validate_decimal_precision(precision)
                .map_err(|e| e.to_string())?;
            Arc::new(array)
        }
        (t, _) => return Err(format!("wrong physical form for a {} column", t.name())),
    };
    Ok(array)
}

/// Offsets of a list or map column: starting at 0 (or empty, for an empty batch), never
/// decreasing, within `i32`.
fn checked_offsets(offsets: &[u32]) -> Result<Vec<i32>, String> {
    let mut out = Vec::with_capacity(offsets.len().max(1));
    for o in offsets {
        out.push(i32::try_from(*o).map_err(|_| "offsets past 2^31")?);
    }
    if out.is_empty() {
        out.push(0); // an empty batch
    }
    if out.first() != Some(&0) || out.windows(2).any(|w| w[1] < w[0]) {
        return Err("offsets must start at 0 and never decrease".into());
    }
    Ok(out)
}

/// Attaches a validity buffer to an array built without one.
trait WithNulls: Sized {
    fn with_nulls_from(self, nulls: Option<NullBuffer>) -> Result<Self, String>;
}

impl WithNulls for StringArray {
    fn with_nulls_from(self, nulls: Option<NullBuffer>) -> Result<Self, String> {
        let (offsets, values, _) = self.into_parts();
        StringArray::try_new(offsets, values, nulls).map_err(|e| e.to_string())
    }
}

impl WithNulls for BinaryArray {
    fn with_nulls_from(self, nulls: Option<NullBuffer>) -> Result<Self, String> {
        let (offsets, values, _) = self.into_parts();
        BinaryArray::try_new(offsets, values, nulls).map_err(|e| e.to_string())
    }
}
