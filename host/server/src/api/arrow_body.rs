//! Arrow IPC stream bodies (`application/vnd.apache.arrow.stream`) for `POST /ingest/{name}`:
//! decoded natively (no plugin), columns matched to the table by name and cast only where no
//! value can change, then validated by `ChangeBatch::from_columns` like every other batch.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch};
use arrow_buffer::{Buffer, OffsetBuffer};
use arrow_cast::{cast_with_options, CastOptions};
use arrow_ipc::reader::StreamDecoder;
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use axum::body::Bytes;
use axum::http::StatusCode;
use moonlink_engine::{ChangeBatch, ColumnType, EngineError, Operation, TableSchema};

use crate::error::ApiError;

/// The media type of an Arrow IPC stream.
pub(super) const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// An Arrow IPC stream (schema message, record batches, optional end marker), as a request body
/// in the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // documentation only: the body is read as bytes
pub(crate) struct ArrowIpcStream(Vec<u8>);

/// True when the request's `Content-Type` names an Arrow IPC stream (parameters ignored).
pub(super) fn is_arrow_stream(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(ARROW_STREAM))
}

fn malformed(message: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "malformed_body",
        format!("malformed Arrow IPC stream: {message}"),
    )
}

fn refused(column: &str, row: Option<usize>, message: impl Into<String>) -> ApiError {
    EngineError::InvalidBatch {
        row,
        column: Some(column.to_string()),
        message: message.into(),
    }
    .into()
}

/// Reads every record batch of the stream. A truncated, malformed or unsupported stream is a
/// 400; the reader is also run under `catch_unwind`, so a panic deep in a decoder on hostile
/// bytes is a 400 too, never a crashed worker.
fn read_stream(body: Bytes) -> Result<(SchemaRef, Vec<RecordBatch>), ApiError> {
    let run = move || -> Result<(SchemaRef, Vec<RecordBatch>), ApiError> {
        // The whole body is already in memory: the decoder slices it (zero-copy where aligned)
        // and never allocates by a length the stream declares.
        let mut buffer = Buffer::from(body);
        let mut decoder = StreamDecoder::new();
        let mut batches = Vec::new();
        while !buffer.is_empty() {
            if let Some(batch) = decoder.decode(&mut buffer).map_err(malformed)? {
                batches.push(batch);
            }
        }
        decoder
            .finish()
            .map_err(|e| malformed(format!("truncated ({e})")))?;
        let schema = decoder
            .schema()
            .ok_or_else(|| malformed("the stream has no schema message"))?;
        Ok((schema, batches))
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
        .unwrap_or_else(|_| Err(malformed("the stream could not be decoded")))
}

/// Decodes an Arrow IPC stream into one validated batch for `schema`, every row with
/// `operation`. Columns are matched by name; a column the table lacks, a type that cannot be
/// cast without changing a value, or a value that does not fit is a 422 naming the column.
pub(super) fn decode_arrow_stream(
    schema: &TableSchema,
    operation: Operation,
    body: Bytes,
) -> Result<ChangeBatch, ApiError> {
    let (stream_schema, batches) = read_stream(body)?;
    let num_rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut columns = Vec::with_capacity(stream_schema.fields().len());
    for (i, field) in stream_schema.fields().iter().enumerate() {
        let name = field.name();
        let Some(index) = schema.column_index(name) else {
            return Err(refused(name, None, "no such column in the table"));
        };
        let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
        let array = if parts.len() == 1 {
            batches[0].column(i).clone()
        } else if parts.is_empty() {
            arrow_array::new_empty_array(field.data_type())
        } else {
            arrow_select::concat::concat(&parts).map_err(malformed)?
        };
        let column = &schema.columns[index];
        let target = schema.arrow_type(index);
        let array = conform(&column.data_type, &target, array)
            .map_err(|(row, message)| refused(name, row, message))?;
        columns.push((name.to_string(), array));
    }
    Ok(ChangeBatch::from_columns(
        schema,
        vec![operation; num_rows],
        columns,
    )?)
}

/// A refusal: the first offending row (if any) and why.
type Refusal = (Option<usize>, String);

/// Whether values of Arrow type `from` can become `to` without any value changing (integer
/// ranges, sub-microsecond digits and decimal digits are checked value by value afterwards).
fn castable(from: &DataType, to: &ColumnType) -> bool {
    use DataType as D;
    let utf8 = |t: &DataType| matches!(t, D::Utf8 | D::LargeUtf8 | D::Utf8View);
    match to {
        ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64 => from.is_integer(),
        ColumnType::Float32 => matches!(from, D::Float16 | D::Float32),
        ColumnType::Float64 => matches!(
            from,
            D::Float16
                | D::Float32
                | D::Float64
                | D::Int8
                | D::Int16
                | D::Int32
                | D::UInt8
                | D::UInt16
                | D::UInt32
        ),
        ColumnType::Boolean => matches!(from, D::Boolean),
        ColumnType::Utf8 => utf8(from) || matches!(from, D::Dictionary(_, v) if utf8(v)),
        ColumnType::Binary => matches!(
            from,
            D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_)
        ),
        ColumnType::Uuid => matches!(from, D::FixedSizeBinary(16)),
        ColumnType::Date32 => matches!(from, D::Date32),
        ColumnType::Decimal { scale, .. } => matches!(
            from,
            D::Decimal32(_, s) | D::Decimal64(_, s) | D::Decimal128(_, s) | D::Decimal256(_, s)
                if *s >= 0 && *s as u8 <= *scale
        ),
        ColumnType::Timestamp => matches!(from, D::Timestamp(_, None)),
        ColumnType::TimestampTz => matches!(from, D::Timestamp(_, Some(_))),
        ColumnType::Time => matches!(from, D::Time32(_) | D::Time64(_)),
        ColumnType::List(element) => matches!(
            from,
            D::List(f) | D::LargeList(f) if castable(f.data_type(), element)
        ),
        ColumnType::Map { key, value } => match from {
            D::Map(entries, _) => match entries.data_type() {
                D::Struct(f) if f.len() == 2 => {
                    castable(f[0].data_type(), key) && castable(f[1].data_type(), value)
                }
                _ => false,
            },
            _ => false,
        },
    }
}

/// Turns `array` into the table's Arrow type `target` for a column of type `ty`, or says why not.
fn conform(ty: &ColumnType, target: &DataType, array: ArrayRef) -> Result<ArrayRef, Refusal> {
    // int16 columns are stored as Arrow Int32: an Int32 array still needs the int16 range check.
    if array.data_type() == target && *ty != ColumnType::Int16 {
        return Ok(array);
    }
    if !castable(array.data_type(), ty) {
        return Err((
            None,
            format!(
                "expected {} values, got Arrow type {} (no lossless cast)",
                ty.name(),
                array.data_type()
            ),
        ));
    }
    if let ColumnType::List(element) = ty {
        return conform_list(element, target, array);
    }
    if let ColumnType::Map { key, value } = ty {
        return conform_map(key, value, target, array);
    }
    check_sub_microsecond(&array)?;
    // Decimals of the table's scale only need the table's precision: the engine then checks
    // every value's digits and names the row.
    if let (DataType::Decimal128(_, s), DataType::Decimal128(p, ts)) = (array.data_type(), target) {
        if s == ts {
            let decimals = array
                .as_primitive::<arrow_array::types::Decimal128Type>()
                .clone();
            let relabelled = decimals
                .with_precision_and_scale(*p, *ts)
                .map_err(|e| (None, e.to_string()))?;
            return Ok(Arc::new(relabelled));
        }
    }
    let array = if *ty == ColumnType::Int16 {
        checked_cast(&array, &DataType::Int16, "int16")?
    } else {
        array
    };
    checked_cast(&array, target, &ty.name())
}

/// Casts with nulls for values that do not fit, then refuses the first such value by row.
fn checked_cast(array: &ArrayRef, to: &DataType, type_name: &str) -> Result<ArrayRef, Refusal> {
    let options = CastOptions {
        safe: true,
        ..Default::default()
    };
    let cast = cast_with_options(array, to, &options).map_err(|e| (None, e.to_string()))?;
    if cast.null_count() != array.null_count() {
        if let Some(row) = (0..array.len()).find(|&r| array.is_valid(r) && cast.is_null(r)) {
            return Err((
                Some(row),
                format!("value does not fit a {type_name} column without changing"),
            ));
        }
    }
    Ok(cast)
}

/// Nanosecond times and timestamps are accepted only when they are whole microseconds.
fn check_sub_microsecond(array: &ArrayRef) -> Result<(), Refusal> {
    let nanos = matches!(
        array.data_type(),
        DataType::Timestamp(TimeUnit::Nanosecond, _) | DataType::Time64(TimeUnit::Nanosecond)
    );
    if !nanos {
        return Ok(());
    }
    let raw = cast_with_options(array, &DataType::Int64, &CastOptions::default())
        .map_err(|e| (None, e.to_string()))?;
    let raw = raw.as_primitive::<Int64Type>();
    if let Some(row) = (0..raw.len()).find(|&r| raw.is_valid(r) && raw.value(r) % 1000 != 0) {
        return Err((
            Some(row),
            "nanosecond value with sub-microsecond digits (the column holds microseconds)".into(),
        ));
    }
    Ok(())
}

/// Lists: the elements are conformed as one flat array (an error names the list's row), then
/// the list is rebuilt with the table's element field (its field id).
fn conform_list(
    element: &ColumnType,
    target: &DataType,
    array: ArrayRef,
) -> Result<ArrayRef, Refusal> {
    let DataType::List(target_field) = target else {
        return Err((None, format!("the table's list type is {target}")));
    };
    // LargeList → List first (offsets over i32 are refused as values that do not fit).
    let array = match array.data_type() {
        DataType::LargeList(f) => checked_cast(
            &array,
            &DataType::List(f.clone()),
            &format!("list<{}>", element.name()),
        )?,
        _ => array,
    };
    let list = array
        .as_list_opt::<i32>()
        .ok_or_else(|| (None, format!("expected a list, got {}", array.data_type())))?;
    let offsets = list.value_offsets();
    let start = offsets.first().copied().unwrap_or(0) as usize;
    let end = offsets.last().copied().unwrap_or(0) as usize;
    let values = list.values().slice(start, end.saturating_sub(start));
    let values = conform(element, target_field.data_type(), values).map_err(|(i, m)| {
        let row = i.map(|i| {
            offsets
                .partition_point(|&o| (o as usize) <= start + i)
                .saturating_sub(1)
        });
        (row, format!("list element: {m}"))
    })?;
    let rebased: Vec<i32> = offsets.iter().map(|o| o - start as i32).collect();
    let rebuilt = ListArray::try_new(
        target_field.clone(),
        OffsetBuffer::new(rebased.into()),
        values,
        list.nulls().cloned(),
    )
    .map_err(|e| (None, e.to_string()))?;
    Ok(Arc::new(rebuilt))
}

/// Maps: keys and values are conformed as flat arrays (an error names the map's row), then
/// the map is rebuilt with the table's entry fields (their field ids).
fn conform_map(
    key: &ColumnType,
    value: &ColumnType,
    target: &DataType,
    array: ArrayRef,
) -> Result<ArrayRef, Refusal> {
    let (DataType::Map(target_entries, sorted), Some(map)) = (target, array.as_map_opt()) else {
        return Err((None, format!("expected a map, got {}", array.data_type())));
    };
    let DataType::Struct(target_fields) = target_entries.data_type() else {
        return Err((None, format!("the table's map type is {target}")));
    };
    let offsets = map.value_offsets();
    let start = offsets.first().copied().unwrap_or(0) as usize;
    let end = offsets.last().copied().unwrap_or(0) as usize;
    let row_of = |i: usize| {
        offsets
            .partition_point(|&o| (o as usize) <= start + i)
            .saturating_sub(1)
    };
    let part = |ty: &ColumnType, field: &arrow_schema::Field, values: &ArrayRef, what: &str| {
        let values = values.slice(start, end.saturating_sub(start));
        conform(ty, field.data_type(), values)
            .map_err(|(i, m)| (i.map(row_of), format!("map {what}: {m}")))
    };
    let keys = part(key, &target_fields[0], map.keys(), "key")?;
    if let Some(i) = (0..keys.len()).find(|&i| keys.is_null(i)) {
        return Err((Some(row_of(i)), "a map key is null (keys never are)".into()));
    }
    let values = part(value, &target_fields[1], map.values(), "value")?;
    let entries =
        arrow_array::StructArray::try_new(target_fields.clone(), vec![keys, values], None)
            .map_err(|e| (None, e.to_string()))?;
    let rebased: Vec<i32> = offsets.iter().map(|o| o - start as i32).collect();
    let rebuilt = arrow_array::MapArray::try_new(
        target_entries.clone(),
        OffsetBuffer::new(rebased.into()),
        entries,
        map.nulls().cloned(),
        *sorted,
    )
    .map_err(|e| (None, e.to_string()))?;
    Ok(Arc::new(rebuilt))
}

#[cfg(test)]
#[path = "arrow_body_tests.rs"]
mod tests;
