//! rest_ingest: decodes `POST /ingest/{table}` bodies into one columnar change batch.
//!
//! Accepted bodies:
//! - a JSON envelope `{"operation": "insert"|"upsert"|"delete", "request_mode": "async"|"sync",
//!   "data": <row object or array of row objects>}` (operation defaults to insert, mode to async);
//! - NDJSON (`Content-Type: application/x-ndjson`): one row object per line, with `operation`
//!   and `request_mode` in the URL query.
//!
//! All or nothing: the first bad value fails the request with its row and column.

mod values;

use moonlink_sdk::rest::{IngestRequest, RequestInfo, RequestMode, RestDecoder};
use moonlink_sdk::{BatchBuilder, DataError, DataErrorKind, Operation};
use serde_json::{Map, Value as Json};

pub struct RestIngest;

impl RestDecoder for RestIngest {
    fn decode(info: RequestInfo, body: Vec<u8>) -> Result<IngestRequest, DataError> {
        decode(&info, &body)
    }
}

moonlink_sdk::export_rest_decoder!(RestIngest);

fn parse_operation(s: &str) -> Result<Operation, DataError> {
    match s {
        "insert" => Ok(Operation::Insert),
        "upsert" => Ok(Operation::Upsert),
        "delete" => Ok(Operation::Delete),
        other => Err(DataError::new(
            DataErrorKind::InvalidRequest,
            format!("unknown operation '{other}' (expected insert, upsert or delete)"),
        )),
    }
}

fn parse_mode(s: &str) -> Result<RequestMode, DataError> {
    match s {
        "async" => Ok(RequestMode::Async),
        "sync" => Ok(RequestMode::Sync),
        other => Err(DataError::new(
            DataErrorKind::InvalidRequest,
            format!("unknown request_mode '{other}' (expected async or sync)"),
        )),
    }
}

fn malformed(e: serde_json::Error, line_offset: usize) -> DataError {
    DataError::new(
        DataErrorKind::Malformed,
        format!(
            "malformed JSON at line {}, column {}: {e}",
            e.line() + line_offset,
            e.column()
        ),
    )
}

fn is_ndjson(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let ct = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        ct == "application/x-ndjson" || ct == "application/ndjson" || ct == "application/jsonl"
    })
}

/// Decodes a request (the plugin entry point, callable natively in tests).
pub fn decode(info: &RequestInfo, body: &[u8]) -> Result<IngestRequest, DataError> {
    let param = |key: &str| {
        info.parameters
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let mut builder = BatchBuilder::new(&info.table, &info.schema);
    if is_ndjson(info.content_type.as_deref()) {
        let operation = parse_operation(param("operation").unwrap_or("insert"))?;
        let mode = parse_mode(param("request_mode").unwrap_or("async"))?;
        let text = std::str::from_utf8(body).map_err(|e| {
            DataError::new(DataErrorKind::Malformed, format!("body is not UTF-8: {e}"))
        })?;
        let mut row = 0;
        for (line_no, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: Json = serde_json::from_str(line).map_err(|e| malformed(e, line_no))?;
            add_row(&mut builder, operation, row, &value)?;
            row += 1;
        }
        return finish(builder, mode);
    }

    let envelope: Json = serde_json::from_slice(body).map_err(|e| malformed(e, 0))?;
    let Json::Object(envelope) = envelope else {
        return Err(DataError::new(
            DataErrorKind::InvalidRequest,
            "body must be a JSON object {\"operation\", \"request_mode\", \"data\"}",
        ));
    };
    let text_field = |key: &str| -> Result<Option<&str>, DataError> {
        match envelope.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(DataError::new(
                DataErrorKind::InvalidRequest,
                format!("\"{key}\" must be a string"),
            )),
        }
    };
    let operation = parse_operation(
        text_field("operation")?
            .or(param("operation"))
            .unwrap_or("insert"),
    )?;
    let mode = parse_mode(
        text_field("request_mode")?
            .or(param("request_mode"))
            .unwrap_or("async"),
    )?;
    for key in envelope.keys() {
        if !matches!(
            key.as_str(),
            "operation" | "request_mode" | "data" | "table"
        ) {
            return Err(DataError::new(
                DataErrorKind::InvalidRequest,
                format!(
                    "unknown field \"{key}\" in request (expected operation, request_mode, data)"
                ),
            ));
        }
    }
    match envelope.get("data") {
        Some(Json::Array(rows)) => {
            for (row, value) in rows.iter().enumerate() {
                add_row(&mut builder, operation, row, value)?;
            }
        }
        Some(row @ Json::Object(_)) => add_row(&mut builder, operation, 0, row)?,
        Some(_) => {
            return Err(DataError::new(
                DataErrorKind::InvalidRequest,
                "\"data\" must be a row object or an array of row objects",
            ))
        }
        None => {
            return Err(DataError::new(
                DataErrorKind::InvalidRequest,
                "missing \"data\": a row object or an array of row objects",
            ))
        }
    }
    finish(builder, mode)
}

fn finish(builder: BatchBuilder, mode: RequestMode) -> Result<IngestRequest, DataError> {
    Ok(IngestRequest {
        batch: builder.finish(),
        request_mode: mode,
    })
}

fn add_row(
    builder: &mut BatchBuilder,
    operation: Operation,
    row: usize,
    value: &Json,
) -> Result<(), DataError> {
    let Json::Object(fields) = value else {
        return Err(DataError {
            kind: DataErrorKind::InvalidValue,
            row: Some(row as u32),
            column: None,
            message: format!("row must be a JSON object, got {}", values::describe(value)),
        });
    };
    builder.start_row(operation);
    set_fields(builder, row, fields)?;
    builder.finish_row()
}

fn set_fields(
    builder: &mut BatchBuilder,
    row: usize,
    fields: &Map<String, Json>,
) -> Result<(), DataError> {
    for (name, json) in fields {
        let Some(index) = builder.column_index(name) else {
            return Err(DataError::invalid_value(
                row,
                name,
                "no such column in the table",
            ));
        };
        let data_type = builder.field(index).data_type;
        let value = values::convert(&data_type, json)
            .map_err(|message| DataError::invalid_value(row, name, message))?;
        builder
            .set(index, value)
            .map_err(|message| DataError::invalid_value(row, name, message))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
