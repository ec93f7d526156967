//! Plugins built against `moonlink:plugin@0.2.x` (`wit/compat/0.2`): their values to and
//! from 0.3 values (`wit/compat/0.3`), which `super::v03` takes to and from the host's.
//!
//! A 0.2 plugin's values become 0.3 values losslessly (0.3 only added to 0.2: a field gets
//! no default, a table def no partition spec). Values the host hands to a 0.2 plugin (table
//! schemas to decoders, batches to transforms) go back to 0.2; what 0.2 cannot express (a
//! map column) is an [`RuntimeError::Incompatible`] naming the plugin's WIT version, never a
//! panic.

use crate::bindings::v02::moonlink::plugin::types as o;
use crate::bindings::v02::source::exports::moonlink::plugin::source as o_source;
use crate::bindings::v03::moonlink::plugin::types as n;
use crate::error::RuntimeError;

/// The WIT version 0.2 plugins speak, for error messages.
pub(crate) const V02: &str = "moonlink:plugin@0.2";

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

fn elements_down(v: n::ElementValues) -> o::ElementValues {
    same_variants!(v, n => o::ElementValues,
        plain: [Int16, Int32, Int64, Float32, Float64, Boolean, Utf8, Binary], unit: [],
        other: { n::ElementValues::Int128(x) => o::ElementValues::Int128(int128s_down(x)), })
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
    })
}

fn column_values_down(v: n::ColumnValues, column: &str) -> Result<o::ColumnValues, RuntimeError> {
    Ok(same_variants!(v, n => o::ColumnValues,
    plain: [Int16, Int32, Int64, Float32, Float64, Boolean, Utf8, Binary], unit: [],
    other: {
        n::ColumnValues::Int128(x) => o::ColumnValues::Int128(int128s_down(x)),
        n::ColumnValues::Array(a) => o::ColumnValues::Array(o::ArrayValues {
            offsets: a.offsets,
            elements: elements_down(a.elements),
            element_validity: a.element_validity,
        }),
        n::ColumnValues::Utf8Buffer(b) => o::ColumnValues::Utf8Buffer(o::Utf8Buffer {
            offsets: b.offsets,
            data: b.data,
        }),
        n::ColumnValues::Map(_) => return Err(no_map(column)),
    }))
}

fn no_map(column: &str) -> RuntimeError {
    RuntimeError::Incompatible(format!(
        "column '{column}' is a map, which a plugin built against {V02} cannot take \
         (maps came in moonlink:plugin@0.3.0): rebuild the plugin with moonlink-sdk 0.3"
    ))
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

pub(crate) fn batch_down(b: n::ChangeBatch) -> Result<o::ChangeBatch, RuntimeError> {
    Ok(o::ChangeBatch {
        table: b.table,
        operations: b.operations.into_iter().map(operation_down).collect(),
        columns: b
            .columns
            .into_iter()
            .map(|c| {
                Ok(o::Column {
                    values: column_values_down(c.values, &c.name)?,
                    name: c.name,
                    validity: c.validity,
                    unchanged: c.unchanged,
                })
            })
            .collect::<Result<_, RuntimeError>>()?,
    })
}

fn element_type_up(t: o::ElementType) -> n::ElementType {
    same_variants!(t, o => n::ElementType, plain: [],
    unit: [Int16, Int32, Int64, Float32, Float64, Boolean, Utf8, Date32, Timestamp,
           Timestamptz, Binary, Uuid, Time],
    other: {
        o::ElementType::Decimal(d) => n::ElementType::Decimal(n::DecimalType {
            precision: d.precision,
            scale: d.scale,
        }),
    })
}

fn element_type_down(t: n::ElementType) -> o::ElementType {
    same_variants!(t, n => o::ElementType, plain: [],
    unit: [Int16, Int32, Int64, Float32, Float64, Boolean, Utf8, Date32, Timestamp,
           Timestamptz, Binary, Uuid, Time],
    other: {
        n::ElementType::Decimal(d) => o::ElementType::Decimal(o::DecimalType {
            precision: d.precision,
            scale: d.scale,
        }),
    })
}

fn data_type_up(t: o::DataType) -> n::DataType {
    same_variants!(t, o => n::DataType, plain: [],
    unit: [Int16, Int32, Int64, Float32, Float64, Boolean, Utf8, Date32, Timestamp,
           Timestamptz, Binary, Uuid, Time],
    other: {
        o::DataType::Decimal(d) => n::DataType::Decimal(n::DecimalType {
            precision: d.precision,
            scale: d.scale,
        }),
        o::DataType::Array(e) => n::DataType::Array(element_type_up(e)),
    })
}

fn data_type_down(t: n::DataType, column: &str) -> Result<o::DataType, RuntimeError> {
    Ok(same_variants!(t, n => o::DataType, plain: [],
    unit: [Int16, Int32, Int64, Float32, Float64, Boolean, Utf8, Date32, Timestamp,
           Timestamptz, Binary, Uuid, Time],
    other: {
        n::DataType::Decimal(d) => o::DataType::Decimal(o::DecimalType {
            precision: d.precision,
            scale: d.scale,
        }),
        n::DataType::Array(e) => o::DataType::Array(element_type_down(e)),
        n::DataType::Map(_) => return Err(no_map(column)),
    }))
}

pub(crate) fn schema_up(s: o::TableSchema) -> n::TableSchema {
    n::TableSchema {
        fields: s
            .fields
            .into_iter()
            .map(|f| n::Field {
                name: f.name,
                data_type: data_type_up(f.data_type),
                nullable: f.nullable,
                default: None,
            })
            .collect(),
        primary_key: s.primary_key,
    }
}

/// A schema for a 0.2 plugin; defaults are dropped (0.2 plugins never see them).
pub(crate) fn schema_down(s: n::TableSchema) -> Result<o::TableSchema, RuntimeError> {
    Ok(o::TableSchema {
        fields: s
            .fields
            .into_iter()
            .map(|f| {
                Ok(o::Field {
                    data_type: data_type_down(f.data_type, &f.name)?,
                    name: f.name,
                    nullable: f.nullable,
                })
            })
            .collect::<Result<_, RuntimeError>>()?,
        primary_key: s.primary_key,
    })
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

pub(crate) fn table_def_up(d: o_source::TableDef) -> n::TableDef {
    n::TableDef {
        name: d.name,
        schema: schema_up(d.schema),
        partition_by: Vec::new(),
    }
}

/// A 0.2 source event, as the host's 0.3 source event.
pub(crate) fn source_event_up(
    e: o_source::SourceEvent,
) -> crate::bindings::v03::source::exports::moonlink::plugin::source::SourceEvent {
    use crate::bindings::v03::source::exports::moonlink::plugin::source as n_source;
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

/// A decode request for a 0.2 decoder: the table's schema must be expressible in 0.2.
pub(crate) fn request_info_down(
    info: &crate::bindings::v03::exports::moonlink::plugin::rest_decoder::RequestInfo,
) -> Result<crate::bindings::v02::exports::moonlink::plugin::rest_decoder::RequestInfo, RuntimeError>
{
    Ok(
        crate::bindings::v02::exports::moonlink::plugin::rest_decoder::RequestInfo {
            table: info.table.clone(),
            schema: schema_down(info.schema.clone())
                .map_err(|e| RuntimeError::Incompatible(format!("table '{}': {e}", info.table)))?,
            content_type: info.content_type.clone(),
            parameters: info.parameters.clone(),
        },
    )
}

pub(crate) fn ingest_request_up(
    r: crate::bindings::v02::exports::moonlink::plugin::rest_decoder::IngestRequest,
) -> crate::bindings::v03::exports::moonlink::plugin::rest_decoder::IngestRequest {
    use crate::bindings::v02::exports::moonlink::plugin::rest_decoder as o_rest;
    use crate::bindings::v03::exports::moonlink::plugin::rest_decoder as n_rest;
    n_rest::IngestRequest {
        batch: batch_up(r.batch),
        request_mode: same_variants!(r.request_mode, o_rest => n_rest::RequestMode, plain: [],
            unit: [Async, Sync], other: {}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_survives_the_round_trip_and_a_map_is_refused_by_name() {
        let batch = n::ChangeBatch {
            table: "t".into(),
            operations: vec![n::Operation::Upsert, n::Operation::Delete],
            columns: vec![
                n::Column {
                    name: "d".into(),
                    values: n::ColumnValues::Int128(vec![n::Int128 { lo: 7, hi: -1 }; 2]),
                    validity: Some(vec![true, false]),
                    unchanged: None,
                },
                n::Column {
                    name: "tags".into(),
                    values: n::ColumnValues::Array(n::ArrayValues {
                        offsets: vec![0, 1, 1],
                        elements: n::ElementValues::Utf8(vec!["a".into()]),
                        element_validity: None,
                    }),
                    validity: None,
                    unchanged: Some(vec![false, true]),
                },
            ],
        };
        let back = batch_up(batch_down(batch.clone()).unwrap());
        assert_eq!(format!("{back:?}"), format!("{batch:?}"));

        let mut with_map = batch;
        with_map.columns.push(n::Column {
            name: "attributes".into(),
            values: n::ColumnValues::Map(n::MapValues {
                offsets: vec![0, 0, 0],
                keys: n::ElementValues::Utf8(vec![]),
                values: n::ElementValues::Utf8(vec![]),
                value_validity: None,
            }),
            validity: None,
            unchanged: None,
        });
        let err = batch_down(with_map).unwrap_err().to_string();
        assert!(err.contains("'attributes'") && err.contains(V02), "{err}");

        let schema = n::TableSchema {
            fields: vec![n::Field {
                name: "m".into(),
                data_type: n::DataType::Map(n::MapType {
                    key: n::ElementType::Utf8,
                    value: n::ElementType::Int64,
                }),
                nullable: true,
                default: None,
            }],
            primary_key: vec![],
        };
        let err = schema_down(schema).unwrap_err().to_string();
        assert!(err.contains("'m'") && err.contains(V02), "{err}");
    }
}
