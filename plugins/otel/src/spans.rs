//! `ExportTraceServiceRequest` → rows of the spans table, one per span; events and links
//! become parallel lists.

use moonlink_sdk::Value;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::error::OtelError;
use crate::rows::Rows;
use crate::tables::spans::C;
use crate::tables::Tables;
use crate::values::{
    attribute_map, attributes_json, check_nanos, hex_id, micros, non_empty, resource_map, Refused,
};

pub fn rows(request: ExportTraceServiceRequest, tables: &Tables) -> Result<Rows, OtelError> {
    let mut rows = Rows::new(&tables.spans, &tables.spans_schema);
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| r.attributes)
            .unwrap_or_default();
        let (resource_attributes, service) = resource_map(resource);
        for scope_spans in resource_spans.scope_spans {
            let scope = scope_spans.scope.unwrap_or_default();
            for span in scope_spans.spans {
                let checked = check(&span);
                let (times, event_times) = match checked {
                    Ok(checked) => checked,
                    Err(why) => {
                        rows.refuse(why);
                        continue;
                    }
                };
                rows.start();
                let [start, end, start_nanos, duration] = times;
                rows.set(C::TraceId as usize, hex_id(&span.trace_id).into())?;
                rows.set(C::SpanId as usize, hex_id(&span.span_id).into())?;
                rows.set(
                    C::ParentSpanId as usize,
                    hex_id(&span.parent_span_id).into(),
                )?;
                rows.set(C::TraceState as usize, non_empty(span.trace_state))?;
                rows.set(C::Name as usize, Value::Str(span.name))?;
                rows.set(C::Kind as usize, Value::Str(kind(span.kind)))?;
                rows.set(C::StartTime as usize, start)?;
                rows.set(C::EndTime as usize, end)?;
                rows.set(C::StartTimeUnixNano as usize, start_nanos)?;
                rows.set(C::DurationNs as usize, duration)?;
                let status = span.status.unwrap_or_default();
                rows.set(C::StatusCode as usize, Value::Str(status_code(status.code)))?;
                rows.set(C::StatusMessage as usize, non_empty(status.message))?;
                rows.set(C::Attributes as usize, attribute_map(span.attributes))?;
                let mut names = Vec::with_capacity(span.events.len());
                let mut attributes = Vec::with_capacity(span.events.len());
                for event in span.events {
                    names.push(Value::Str(event.name));
                    attributes.push(Value::Str(attributes_json(event.attributes)));
                }
                rows.set(C::EventNames as usize, Value::List(names))?;
                rows.set(C::EventTimes as usize, Value::List(event_times))?;
                rows.set(C::EventAttributes as usize, Value::List(attributes))?;
                let mut trace_ids = Vec::with_capacity(span.links.len());
                let mut span_ids = Vec::with_capacity(span.links.len());
                let mut attributes = Vec::with_capacity(span.links.len());
                for link in span.links {
                    trace_ids.push(hex_id(&link.trace_id).into());
                    span_ids.push(hex_id(&link.span_id).into());
                    attributes.push(Value::Str(attributes_json(link.attributes)));
                }
                rows.set(C::LinkTraceIds as usize, Value::List(trace_ids))?;
                rows.set(C::LinkSpanIds as usize, Value::List(span_ids))?;
                rows.set(C::LinkAttributes as usize, Value::List(attributes))?;
                rows.set(C::ServiceName as usize, service.clone())?;
                rows.set(C::ResourceAttributes as usize, resource_attributes.clone())?;
                rows.set_str(C::ScopeName as usize, &scope.name)?;
                rows.set_str(C::ScopeVersion as usize, &scope.version)?;
                rows.finish_row()?;
            }
        }
    }
    Ok(rows)
}

/// Start, end, start in nanoseconds and the exact duration, plus the events' times; a span
/// without ids or with a time past 2262 is refused.
fn check(span: &Span) -> Result<([Value; 4], Vec<Value>), Refused> {
    if span.trace_id.is_empty() || span.span_id.is_empty() {
        return Err(Refused(format!(
            "span '{}' has no trace_id or span_id",
            span.name
        )));
    }
    let start = micros(span.start_time_unix_nano, "start_time_unix_nano")?;
    let end = micros(span.end_time_unix_nano, "end_time_unix_nano")?;
    let start_nanos = check_nanos(span.start_time_unix_nano, "start_time_unix_nano")?;
    let end_nanos = check_nanos(span.end_time_unix_nano, "end_time_unix_nano")?;
    let known = span.start_time_unix_nano != 0 && span.end_time_unix_nano != 0;
    let duration = if known {
        Value::Int(end_nanos - start_nanos)
    } else {
        Value::Null
    };
    let start_nanos = if span.start_time_unix_nano != 0 {
        Value::Int(start_nanos)
    } else {
        Value::Null
    };
    let event_times = span
        .events
        .iter()
        .map(|e| micros(e.time_unix_nano, "event time_unix_nano"))
        .collect::<Result<_, _>>()?;
    Ok(([start, end, start_nanos, duration], event_times))
}

/// `SpanKind` by its short name (`server`, `client`, ...); an unknown number as itself.
fn kind(kind: i32) -> String {
    let name = match kind {
        0 => "unspecified",
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        other => return other.to_string(),
    };
    name.to_string()
}

/// `Status.StatusCode` by its short name: `unset`, `ok`, `error`.
fn status_code(code: i32) -> String {
    let name = match code {
        0 => "unset",
        1 => "ok",
        2 => "error",
        other => return other.to_string(),
    };
    name.to_string()
}
