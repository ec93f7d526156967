//! A [`QueryResult`] as bytes: JSON rows, CSV, or an Arrow IPC stream.
//!
//! JSON and CSV show `uuid` columns (Arrow `FixedSizeBinary(16)`) in their canonical text
//! form, and JSON writes nulls explicitly; JSON objects need string keys, so map columns
//! with other key types have their keys as text. CSV has no nested values: a list, struct or
//! map is a field holding its JSON text. The Arrow stream carries the columns as they are.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, FixedSizeBinaryArray, MapArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::error::{QueryError, Result};
use crate::QueryResult;

/// Canonical text of a 16-byte uuid.
pub fn uuid_text(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if hex.len() != 32 {
        return hex;
    }
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A map column whose keys are not strings, with its keys cast to text (JSON object keys).
fn map_keys_as_text(field: &Field, column: &ArrayRef) -> Result<Option<(Field, ArrayRef)>> {
    let Some(map) = column.as_any().downcast_ref::<MapArray>() else {
        return Ok(None);
    };
    if matches!(map.keys().data_type(), DataType::Utf8 | DataType::LargeUtf8) {
        return Ok(None);
    }
    let DataType::Map(entries, sorted) = field.data_type() else {
        return Ok(None);
    };
    let DataType::Struct(entry_fields) = entries.data_type() else {
        return Ok(None);
    };
    let keys = datafusion::arrow::compute::cast(map.keys(), &DataType::Utf8)
        .map_err(|e| encode("json", e))?;
    let key_field = Arc::new(
        entry_fields[0]
            .as_ref()
            .clone()
            .with_data_type(DataType::Utf8),
    );
    let entry_fields = vec![key_field, entry_fields[1].clone()];
    let entries_array = arrow_array::StructArray::try_new(
        entry_fields.clone().into(),
        vec![keys, map.values().clone()],
        None,
    )
    .map_err(|e| encode("json", e))?;
    let entries_field = Arc::new(Field::new(
        entries.name(),
        DataType::Struct(entry_fields.into()),
        false,
    ));
    let text = MapArray::try_new(
        entries_field.clone(),
        map.offsets().clone(),
        entries_array,
        map.nulls().cloned(),
        *sorted,
    )
    .map_err(|e| encode("json", e))?;
    let field = field
        .clone()
        .with_data_type(DataType::Map(entries_field, *sorted));
    Ok(Some((field, Arc::new(text))))
}

/// `batch` with every `FixedSizeBinary(16)` (uuid) column as text, and the keys of map
/// columns as text.
pub fn uuids_as_text(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| {
        f.data_type() == &DataType::FixedSizeBinary(16)
            || matches!(f.data_type(), DataType::Map(..))
    }) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        match column.as_any().downcast_ref::<FixedSizeBinaryArray>() {
            Some(uuids) if uuids.value_length() == 16 => {
                let text: StringArray = (0..uuids.len())
                    .map(|i| uuids.is_valid(i).then(|| uuid_text(uuids.value(i))))
                    .collect();
                fields.push(Arc::new(Field::new(
                    field.name(),
                    DataType::Utf8,
                    field.is_nullable(),
                )));
                columns.push(Arc::new(text));
            }
            _ => match map_keys_as_text(field, column)? {
                Some((field, column)) => {
                    fields.push(Arc::new(field));
                    columns.push(column);
                }
                None => {
                    fields.push(field.clone());
                    columns.push(column.clone());
                }
            },
        }
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    RecordBatch::try_new(schema, columns).map_err(|e| encode("json", e))
}

fn encode(format: &'static str, e: impl std::fmt::Display) -> QueryError {
    QueryError::Encode {
        format,
        message: e.to_string(),
    }
}

/// The rows as a JSON array of objects (column name → value; nulls written).
pub fn json_rows(result: &QueryResult) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut writer = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow_json::writer::JsonArray>(&mut out);
    for batch in &result.batches {
        writer
            .write(&uuids_as_text(batch)?)
            .map_err(|e| encode("json", e))?;
    }
    writer.finish().map_err(|e| encode("json", e))?;
    drop(writer);
    if out.is_empty() {
        out.extend_from_slice(b"[]");
    }
    Ok(out)
}

/// Whether CSV cannot hold `data_type` as it is (lists, structs, maps).
fn nested(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::Struct(_)
            | DataType::Map(..)
    )
}

/// A nested column as JSON text, a row each (what `json_rows` writes for it); nulls stay null.
fn json_text(field: &Field, column: &ArrayRef) -> Result<ArrayRef> {
    // Each line of one-column JSON is `{"v":<value>}`; the value is what is kept.
    let one = Arc::new(Schema::new(vec![field.clone().with_name("v")]));
    let batch = RecordBatch::try_new(one, vec![column.clone()]).map_err(|e| encode("csv", e))?;
    let mut out = Vec::new();
    {
        let mut writer = arrow_json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow_json::writer::LineDelimited>(&mut out);
        writer.write(&batch).map_err(|e| encode("csv", e))?;
        writer.finish().map_err(|e| encode("csv", e))?;
    }
    let text = std::str::from_utf8(&out).map_err(|e| encode("csv", e))?;
    let values: StringArray = text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let value = line
                .strip_prefix(r#"{"v":"#)
                .and_then(|v| v.strip_suffix('}'))
                .unwrap_or(line);
            column.is_valid(i).then(|| value.to_string())
        })
        .collect();
    if values.len() != column.len() {
        return Err(encode("csv", "a nested column did not encode a line a row"));
    }
    Ok(Arc::new(values))
}

/// `batch` with its nested columns (lists, structs, maps) as JSON text, for CSV.
fn nested_as_json_text(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| nested(f.data_type())) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if nested(field.data_type()) {
            fields.push(Arc::new(Field::new(
                field.name(),
                DataType::Utf8,
                field.is_nullable(),
            )));
            columns.push(json_text(field, column)?);
        } else {
            fields.push(field.clone());
            columns.push(column.clone());
        }
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    RecordBatch::try_new(schema, columns).map_err(|e| encode("csv", e))
}

/// The rows as CSV with a header line. Lists, structs and maps are written as JSON text
/// (as `json_rows` writes them: map keys as text, uuids in their text form).
pub fn csv(result: &QueryResult) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut writer = arrow_csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut out);
        if result.batches.is_empty() {
            let empty = RecordBatch::new_empty(result.schema.clone());
            writer
                .write(&nested_as_json_text(&uuids_as_text(&empty)?)?)
                .map_err(|e| encode("csv", e))?;
        }
        for batch in &result.batches {
            writer
                .write(&nested_as_json_text(&uuids_as_text(batch)?)?)
                .map_err(|e| encode("csv", e))?;
        }
    }
    Ok(out)
}

/// The rows as an Arrow IPC stream (schema message, then one message per batch).
pub fn arrow_stream(result: &QueryResult) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut out, &result.schema)
            .map_err(|e| encode("arrow", e))?;
        for batch in &result.batches {
            writer.write(batch).map_err(|e| encode("arrow", e))?;
        }
        writer.finish().map_err(|e| encode("arrow", e))?;
    }
    Ok(out)
}
