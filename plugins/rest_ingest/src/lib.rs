//! rest_ingest: decodes `POST /ingest/{table}` bodies into one columnar change batch.
//!
//! Accepted bodies:
//! - a JSON envelope `{"operation": "insert"|"upsert"|"delete", "request_mode": "async"|"sync",
//!   "data": <row object or array of row objects>}` (operation defaults to insert, mode to async);
//! - NDJSON (`Content-Type: application/x-ndjson`): one row object per line, with `operation`
//!   and `request_mode` in the URL query.
//!
//! All or nothing: the first bad value fails the request with its row and column. A key
//! given twice in a row object (or a field twice in the envelope) is refused, not "last wins".

mod columns;
mod fast;
mod json;
mod number;
mod values;

use std::borrow::Cow;

use json::{Data, Envelope, Field, Members, Row};
use moonlink_sdk::rest::{IngestRequest, RequestInfo, RequestMode, RestDecoder};
use moonlink_sdk::{BatchBuilder, DataError, DataErrorKind, DataType, Operation};

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

/// Decodes a request (the plugin entry point, callable natively in tests): the fast path when
/// it can take the whole body, else the general path (which also produces every error).
pub fn decode(info: &RequestInfo, body: &[u8]) -> Result<IngestRequest, DataError> {
    if let Some(request) = fast::decode(info, body) {
        return Ok(request);
    }
    decode_general(info, body)
}

/// The general path: serde-driven structure, every value kept raw until its column is known.
pub fn decode_general(info: &RequestInfo, body: &[u8]) -> Result<IngestRequest, DataError> {
    let param = |key: &str| info.param(key);
    let mut rows = RowWriter::new(&info.table, &info.schema);
    if is_ndjson(info.content_type.as_deref()) {
        let operation = parse_operation(param("operation").unwrap_or("insert"))?;
        let mode = parse_mode(param("request_mode").unwrap_or("async"))?;
        let text = std::str::from_utf8(body).map_err(|e| {
            DataError::new(DataErrorKind::Malformed, format!("body is not UTF-8: {e}"))
        })?;
        for (line_no, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let row: Row = serde_json::from_str(line).map_err(|e| malformed(e, line_no))?;
            rows.add(operation, &row)?;
        }
        return Ok(rows.finish(mode));
    }

    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| malformed(e, 0))?;
    let fields = match envelope {
        Envelope::Object(fields) => fields,
        Envelope::NotObject(got) => {
            return Err(DataError::new(
                DataErrorKind::InvalidRequest,
                format!(
                    "body must be a JSON object {{\"operation\", \"request_mode\", \"data\"}}, \
                     got {got}"
                ),
            ))
        }
    };
    let mut data = None;
    let mut texts: [Option<Cow<str>>; 2] = [None, None];
    for (i, (key, field)) in fields.iter().enumerate() {
        let key = key.0.as_ref();
        if fields[..i].iter().any(|(k, _)| k.0 == key) {
            return Err(DataError::new(
                DataErrorKind::InvalidRequest,
                format!("duplicate field \"{key}\" in the request"),
            ));
        }
        match (key, field) {
            ("data", Field::Data(d)) => data = Some(d),
            ("operation" | "request_mode", Field::Raw(raw)) => {
                let slot = &mut texts[usize::from(key == "request_mode")];
                *slot = match values::kind(raw.get()) {
                    values::Kind::Null => None,
                    values::Kind::String => Some(values::string(raw.get()).map_err(|e| {
                        DataError::new(DataErrorKind::InvalidRequest, format!("\"{key}\": {e}"))
                    })?),
                    _ => {
                        return Err(DataError::new(
                            DataErrorKind::InvalidRequest,
                            format!("\"{key}\" must be a string"),
                        ))
                    }
                };
            }
            ("table", _) => {}
            _ => {
                return Err(DataError::new(
                    DataErrorKind::InvalidRequest,
                    format!(
                    "unknown field \"{key}\" in request (expected operation, request_mode, data)"
                ),
                ))
            }
        }
    }
    let [operation, mode] = texts;
    let operation = parse_operation(
        operation
            .as_deref()
            .or(param("operation"))
            .unwrap_or("insert"),
    )?;
    let mode = parse_mode(mode.as_deref().or(param("request_mode")).unwrap_or("async"))?;
    match data {
        Some(Data::Rows(list)) => {
            for row in list {
                rows.add(operation, row)?;
            }
        }
        Some(Data::Row(members)) => rows.add_members(operation, members)?,
        Some(Data::Other(got)) => {
            return Err(DataError::new(
                DataErrorKind::InvalidRequest,
                format!("\"data\" must be a row object or an array of row objects, got {got}"),
            ))
        }
        None => {
            return Err(DataError::new(
                DataErrorKind::InvalidRequest,
                "missing \"data\": a row object or an array of row objects",
            ))
        }
    }
    Ok(rows.finish(mode))
}

/// Rows into one batch, with the columns each row set (to refuse duplicate keys).
struct RowWriter {
    builder: BatchBuilder,
    /// `set_in[column] == row + 1` when the current row set the column.
    set_in: Vec<usize>,
    row: usize,
}

impl RowWriter {
    fn new(table: &str, schema: &moonlink_sdk::TableSchema) -> Self {
        RowWriter {
            builder: BatchBuilder::new(table, schema),
            set_in: vec![0; schema.fields.len()],
            row: 0,
        }
    }

    fn add(&mut self, operation: Operation, row: &Row) -> Result<(), DataError> {
        match row {
            Row::Object(members) => self.add_members(operation, members),
            Row::NotObject(got) => Err(DataError {
                kind: DataErrorKind::InvalidValue,
                row: Some(self.row as u32),
                column: None,
                message: format!("row must be a JSON object, got {got}"),
            }),
        }
    }

    fn add_members(&mut self, operation: Operation, members: &Members) -> Result<(), DataError> {
        let row = self.row;
        self.builder.start_row(operation);
        for (key, raw) in members {
            let name = key.0.as_ref();
            let Some(index) = self.builder.column_index(name) else {
                return Err(DataError::invalid_value(
                    row,
                    name,
                    "no such column in the table",
                ));
            };
            // A repeated key would otherwise be "last wins": the sender meant one of them.
            if self.set_in[index] == row + 1 {
                return Err(DataError::invalid_value(
                    row,
                    name,
                    format!("duplicate key \"{name}\" in the row object"),
                ));
            }
            self.set_in[index] = row + 1;
            self.set(index, raw.get())
                .map_err(|message| DataError::invalid_value(row, name, message))?;
        }
        self.builder.finish_row()?;
        self.row += 1;
        Ok(())
    }

    fn set(&mut self, index: usize, raw: &str) -> Result<(), String> {
        let data_type = self.builder.field(index).data_type;
        if matches!(data_type, DataType::Utf8) && values::kind(raw) == values::Kind::String {
            // Strings go straight into the packed column, without a copy when unescaped.
            return self.builder.set_str(index, &values::string(raw)?);
        }
        let value = values::convert(&data_type, raw)?;
        self.builder.set(index, value)
    }

    fn finish(self, mode: RequestMode) -> IngestRequest {
        IngestRequest {
            batch: self.builder.finish(),
            request_mode: mode,
        }
    }
}

#[cfg(test)]
mod tests;
