//! Plugins built against `moonlink:plugin@0.3.x` (`wit/compat/0.3`): their values to and
//! from the host's 0.4 values.
//!
//! 0.4 only added `element-values.utf8-buffer`, so everything converts losslessly both ways:
//! packed elements go to a 0.3 plugin (a transform) as one string each; a packed buffer that
//! is not valid (offsets out of bounds, not UTF-8) is refused before the call.

use crate::bindings::moonlink::plugin::types as n;
use crate::bindings::v03::moonlink::plugin::types as o;
use crate::bindings::v03::receiver::exports::moonlink::plugin::receiver as o_receiver;
use crate::bindings::v03::source::exports::moonlink::plugin::source as o_source;
use crate::error::RuntimeError;

fn int128s_up(v: Vec<o::Int128>) -> Vec<n::Int128> {
    v.into_iter()
        .map(|x| n::Int128 { lo: x.lo, hi: x.hi })
        .collect()
}

fn int128s_down(v: Vec<n::Int128>) -> Vec<o::Int128> {
    v.into_iter()
        .map(|x| o::Int128 { lo: x.lo, hi: x.hi })
        .collect()
}

fn elements_up(v: o::ElementValues) -> n::ElementValues {
    same_variants!(v, o => n::ElementValues,
        plain: [Int16, Int32, Int64, Float32, Float64, Boolean, Utf8, Binary], unit: [],
        other: { o::ElementValues::Int128(x) => n::ElementValues::Int128(int128s_up(x)), })
}

fn elements_down(v: n::ElementValues) -> Result<o::ElementValues, String> {
    Ok(same_variants!(v, n => o::ElementValues,
    plain: [Int16, Int32, Int64, Float32, Float64, Boolean, Utf8, Binary], unit: [],
    other: {
        n::ElementValues::Int128(x) => o::ElementValues::Int128(int128s_down(x)),
        n::ElementValues::Utf8Buffer(b) => o::ElementValues::Utf8(unpack(&b)?),
    }))
}

/// Packed strings one by one, or why the buffer is not valid (the host checks buffers
/// itself only when it converts them to Arrow).
fn unpack(b: &n::Utf8Buffer) -> Result<Vec<String>, String> {
    b.offsets
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            let bytes = b
                .data
                .get(w[0] as usize..w[1] as usize)
                .ok_or_else(|| format!("packed string {i} is out of bounds"))?;
            let s = std::str::from_utf8(bytes)
                .map_err(|_| format!("packed string {i} is not UTF-8"))?;
            Ok(s.to_string())
        })
        .collect()
}

fn column_values_up(v: o::ColumnValues) -> n::ColumnValues {
    same_variants!(v, o => n::ColumnValues,
    plain: [Int16, Int32, Int64, Float32, Float64, Boolean, Utf8, Binary], unit: [],
    other: {
        o::ColumnValues::Int128(x) => n::ColumnValues::Int128(int128s_up(x)),
        o::ColumnValues::Array(a) => n::ColumnValues::Array(n::ArrayValues {
            offsets: a.offsets,
            elements: elements_up(a.elements),
            element_validity: a.element_validity,
        }),
        o::ColumnValues::Utf8Buffer(b) => n::ColumnValues::Utf8Buffer(n::Utf8Buffer {
            offsets: b.offsets,
            data: b.data,
        }),
        o::ColumnValues::Map(m) => n::ColumnValues::Map(n::MapValues {
            offsets: m.offsets,
            keys: elements_up(m.keys),
            values: elements_up(m.values),
            value_validity: m.value_validity,
        }),
    })
}

fn column_values_down(v: n::ColumnValues) -> Result<o::ColumnValues, String> {
    Ok(same_variants!(v, n => o::ColumnValues,
    plain: [Int16, Int32, Int64, Float32, Float64, Boolean, Utf8, Binary], unit: [],
    other: {
        n::ColumnValues::Int128(x) => o::ColumnValues::Int128(int128s_down(x)),
        n::ColumnValues::Array(a) => o::ColumnValues::Array(o::ArrayValues {
            offsets: a.offsets,
            elements: elements_down(a.elements)?,
            element_validity: a.element_validity,
        }),
        n::ColumnValues::Utf8Buffer(b) => o::ColumnValues::Utf8Buffer(o::Utf8Buffer {
            offsets: b.offsets,
            data: b.data,
        }),
        n::ColumnValues::Map(m) => o::ColumnValues::Map(o::MapValues {
            offsets: m.offsets,
            keys: elements_down(m.keys)?,
            values: elements_down(m.values)?,
            value_validity: m.value_validity,
        }),
    }))
}

fn operation_up(op: o::Operation) -> n::Operation {
    same_variants!(op, o => n::Operation, plain: [], unit: [Insert, Upsert, Delete], other: {})
}

fn operation_down(op: n::Operation) -> o::Operation {
    same_variants!(op, n => o::Operation, plain: [], unit: [Insert, Upsert, Delete], other: {})
}

pub(crate) fn batch_up(b: o::ChangeBatch) -> n::ChangeBatch {
    n::ChangeBatch {
        table: b.table,
        operations: b.operations.into_iter().map(operation_up).collect(),
        columns: b
            .columns
            .into_iter()
            .map(|c| n::Column {
                name: c.name,
                values: column_values_up(c.values),
                validity: c.validity,
                unchanged: c.unchanged,
            })
            .collect(),
    }
}

/// A batch for a 0.3 plugin; a malformed packed buffer is [`RuntimeError::MalformedBatch`].
pub(crate) fn batch_down(b: n::ChangeBatch) -> Result<o::ChangeBatch, RuntimeError> {
    Ok(o::ChangeBatch {
        table: b.table,
        operations: b.operations.into_iter().map(operation_down).collect(),
        columns: b
            .columns
            .into_iter()
            .map(|c| {
                Ok(o::Column {
                    values: column_values_down(c.values).map_err(|e| {
                        RuntimeError::MalformedBatch(format!("column '{}': {e}", c.name))
                    })?,
                    name: c.name,
                    validity: c.validity,
                    unchanged: c.unchanged,
                })
            })
            .collect::<Result<_, RuntimeError>>()?,
    })
}

/// Element types: the same cases in both versions.
macro_rules! element_type {
    ($t:expr, $from:ident => $to:ident) => {
        same_variants!($t, $from => $to::ElementType, plain: [],
        unit: [Int16, Int32, Int64, Float32, Float64, Boolean, Utf8, Date32, Timestamp,
               Timestamptz, Binary, Uuid, Time],
        other: {
            $from::ElementType::Decimal(d) => $to::ElementType::Decimal($to::DecimalType {
                precision: d.precision,
                scale: d.scale,
            }),
        })
    };
}

/// Data types: the same cases in both versions.
macro_rules! data_type {
    ($t:expr, $from:ident => $to:ident) => {
        same_variants!($t, $from => $to::DataType, plain: [],
        unit: [Int16, Int32, Int64, Float32, Float64, Boolean, Utf8, Date32, Timestamp,
               Timestamptz, Binary, Uuid, Time],
        other: {
            $from::DataType::Decimal(d) => $to::DataType::Decimal($to::DecimalType {
                precision: d.precision,
                scale: d.scale,
            }),
            $from::DataType::Array(e) => $to::DataType::Array(element_type!(e, $from => $to)),
            $from::DataType::Map(m) => $to::DataType::Map($to::MapType {
                key: element_type!(m.key, $from => $to),
                value: element_type!(m.value, $from => $to),
            }),
        })
    };
}

/// Schemas: the same records in both versions.
macro_rules! schema {
    ($s:expr, $from:ident => $to:ident) => {
        $to::TableSchema {
            fields: $s
                .fields
                .into_iter()
                .map(|f| $to::Field {
                    name: f.name,
                    data_type: data_type!(f.data_type, $from => $to),
                    nullable: f.nullable,
                    default: f.default,
                })
                .collect(),
            primary_key: $s.primary_key,
        }
    };
}

fn schema_up(s: o::TableSchema) -> n::TableSchema {
    schema!(s, o => n)
}

fn schema_down(s: n::TableSchema) -> o::TableSchema {
    schema!(s, n => o)
}

pub(crate) fn data_error_up(e: o::DataError) -> n::DataError {
    n::DataError {
        kind: same_variants!(e.kind, o => n::DataErrorKind, plain: [],
            unit: [Malformed, InvalidValue, InvalidRequest], other: {}),
        row: e.row,
        column: e.column,
        message: e.message,
    }
}

pub(crate) fn table_def_up(d: o::TableDef) -> n::TableDef {
    n::TableDef {
        name: d.name,
        schema: schema_up(d.schema),
        partition_by: d.partition_by,
    }
}

/// A 0.3 source event, as the host's.
pub(crate) fn source_event_up(
    e: o_source::SourceEvent,
) -> crate::bindings::source::exports::moonlink::plugin::source::SourceEvent {
    use crate::bindings::source::exports::moonlink::plugin::source as n_source;
    match e {
        o_source::SourceEvent::Changes(b) => n_source::SourceEvent::Changes(batch_up(b)),
        o_source::SourceEvent::Truncate(t) => n_source::SourceEvent::Truncate(t),
        o_source::SourceEvent::SchemaChange(d) => {
            n_source::SourceEvent::SchemaChange(table_def_up(d))
        }
        o_source::SourceEvent::Progress(p) => {
            n_source::SourceEvent::Progress(n_source::CopyProgress {
                table: p.table,
                rows_copied: p.rows_copied,
                rows_total: p.rows_total,
                done: p.done,
            })
        }
    }
}

/// A decode request for a 0.3 decoder.
pub(crate) fn request_info_down(
    info: &crate::bindings::exports::moonlink::plugin::rest_decoder::RequestInfo,
) -> crate::bindings::v03::exports::moonlink::plugin::rest_decoder::RequestInfo {
    crate::bindings::v03::exports::moonlink::plugin::rest_decoder::RequestInfo {
        table: info.table.clone(),
        schema: schema_down(info.schema.clone()),
        content_type: info.content_type.clone(),
        parameters: info.parameters.clone(),
    }
}

pub(crate) fn ingest_request_up(
    r: crate::bindings::v03::exports::moonlink::plugin::rest_decoder::IngestRequest,
) -> crate::bindings::exports::moonlink::plugin::rest_decoder::IngestRequest {
    use crate::bindings::exports::moonlink::plugin::rest_decoder as n_rest;
    use crate::bindings::v03::exports::moonlink::plugin::rest_decoder as o_rest;
    n_rest::IngestRequest {
        batch: batch_up(r.batch),
        request_mode: same_variants!(r.request_mode, o_rest => n_rest::RequestMode, plain: [],
            unit: [Async, Sync], other: {}),
    }
}

/// A request for a 0.3 receiver.
pub(crate) fn http_request_down(r: &crate::HttpRequest) -> o_receiver::HttpRequest {
    o_receiver::HttpRequest {
        method: r.method.clone(),
        path: r.path.clone(),
        query: r.query.clone(),
        headers: r.headers.clone(),
        body: r.body.clone(),
    }
}

pub(crate) fn http_response_up(r: o_receiver::HttpResponse) -> crate::HttpResponse {
    crate::HttpResponse {
        status: r.status,
        headers: r.headers,
        body: r.body,
    }
}

pub(crate) fn reception_up(r: o_receiver::Reception) -> crate::Reception {
    crate::Reception {
        batches: r.batches.into_iter().map(batch_up).collect(),
        response: http_response_up(r.response),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_elements_reach_a_0_3_plugin_as_strings_and_come_back_equal() {
        let batch = n::ChangeBatch {
            table: "t".into(),
            operations: vec![n::Operation::Insert; 2],
            columns: vec![n::Column {
                name: "attributes".into(),
                values: n::ColumnValues::Map(n::MapValues {
                    offsets: vec![0, 2, 3],
                    keys: n::ElementValues::Utf8Buffer(n::Utf8Buffer {
                        offsets: vec![0, 1, 3, 4],
                        data: b"abbc".to_vec(),
                    }),
                    values: n::ElementValues::Int128(vec![n::Int128 { lo: 1, hi: -1 }; 3]),
                    value_validity: Some(vec![true, false, true]),
                }),
                validity: None,
                unchanged: None,
            }],
        };
        let mut bad = batch.clone();
        if let n::ColumnValues::Map(m) = &mut bad.columns[0].values {
            m.keys = n::ElementValues::Utf8Buffer(n::Utf8Buffer {
                offsets: vec![0, 1, 9, 10],
                data: vec![b'a', 0xff, b'b'],
            });
        }
        let err = batch_down(bad).unwrap_err().to_string();
        assert!(
            err.contains("'attributes'") && err.contains("out of bounds"),
            "{err}"
        );
        let down = batch_down(batch).unwrap();
        let o::ColumnValues::Map(m) = &down.columns[0].values else {
            panic!("not a map: {down:?}");
        };
        assert!(matches!(&m.keys, o::ElementValues::Utf8(k) if k == &["a", "bb", "c"]));
        let up = batch_up(down);
        let n::ColumnValues::Map(m) = &up.columns[0].values else {
            panic!("not a map: {up:?}");
        };
        assert!(matches!(&m.keys, n::ElementValues::Utf8(k) if k == &["a", "bb", "c"]));
        assert_eq!(m.offsets, vec![0, 2, 3]);
        assert_eq!(m.value_validity, Some(vec![true, false, true]));
    }

    #[test]
    fn schemas_keep_maps_defaults_and_partitions() {
        let schema = n::TableSchema {
            fields: vec![n::Field {
                name: "m".into(),
                data_type: n::DataType::Map(n::MapType {
                    key: n::ElementType::Utf8,
                    value: n::ElementType::Decimal(n::DecimalType {
                        precision: 9,
                        scale: 2,
                    }),
                }),
                nullable: true,
                default: Some("{}".into()),
            }],
            primary_key: vec!["m".into()],
        };
        let back = schema_up(schema_down(schema.clone()));
        assert_eq!(format!("{back:?}"), format!("{schema:?}"));
    }
}
