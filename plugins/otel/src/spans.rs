//! `ExportTraceServiceRequest` → rows of the spans table, one per span; events and links
//! become parallel lists.

use std::borrow::Cow;

use moonlink_sdk::Value;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::error::OtelError;
use crate::render::{AttributeText, ListText};
use crate::rows::Rows;
use crate::tables::spans::C;
use crate::tables::Tables;
use crate::values::{check_nanos, hex_id, micros, Refused, Resource};

pub fn rows(request: ExportTraceServiceRequest, tables: &Tables) -> Result<Rows, OtelError> {
    let expected = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    let mut rows = Rows::new(&tables.spans, &tables.spans_schema, expected);
    // Text buffers reused from span to span.
    let mut attributes = AttributeText::default();
    let mut event_texts = ListText::default();
    let mut link_texts = ListText::default();
    let no_scope = Default::default();
    for resource_spans in &request.resource_spans {
        let resource = resource_spans.resource.as_ref();
        let resource = Resource::new(resource.map_or(&[][..], |r| &r.attributes));
        for scope_spans in &resource_spans.scope_spans {
            let scope = scope_spans.scope.as_ref().unwrap_or(&no_scope);
            for span in &scope_spans.spans {
                let checked = check(span);
                let (times, event_times) = match checked {
                    Ok(checked) => checked,
                    Err(why) => {
                        rows.refuse(why);
                        continue;
                    }
                };
                rows.start();
                let [start, end, start_nanos, duration] = times;
                rows.set_id(C::TraceId as usize, &span.trace_id)?;
                rows.set_id(C::SpanId as usize, &span.span_id)?;
                rows.set_id(C::ParentSpanId as usize, &span.parent_span_id)?;
                rows.set_str(C::TraceState as usize, &span.trace_state)?;
                rows.set_text(C::Name as usize, &span.name)?;
                rows.set_text(C::Kind as usize, &kind(span.kind))?;
                rows.set(C::StartTime as usize, start)?;
                rows.set(C::EndTime as usize, end)?;
                rows.set(C::StartTimeUnixNano as usize, start_nanos)?;
                rows.set(C::DurationNs as usize, duration)?;
                let (code, message) = span
                    .status
                    .as_ref()
                    .map_or((0, ""), |s| (s.code, &s.message));
                rows.set_text(C::StatusCode as usize, &status_code(code))?;
                rows.set_str(C::StatusMessage as usize, message)?;
                attributes.render(&span.attributes);
                rows.set_map(C::Attributes as usize, attributes.entries())?;
                let events = &span.events;
                rows.set_list(C::EventNames as usize, events.iter().map(|e| Some(&e.name)))?;
                rows.set(C::EventTimes as usize, Value::List(event_times))?;
                event_texts.clear();
                events
                    .iter()
                    .for_each(|e| event_texts.push_object(&e.attributes));
                rows.set_list(C::EventAttributes as usize, event_texts.items())?;
                let links = &span.links;
                let trace_ids = links.iter().map(|l| hex_id(&l.trace_id));
                rows.set_list(C::LinkTraceIds as usize, trace_ids)?;
                rows.set_list(
                    C::LinkSpanIds as usize,
                    links.iter().map(|l| hex_id(&l.span_id)),
                )?;
                link_texts.clear();
                links
                    .iter()
                    .for_each(|l| link_texts.push_object(&l.attributes));
                rows.set_list(C::LinkAttributes as usize, link_texts.items())?;
                rows.set_resource(
                    C::ServiceName as usize,
                    C::ResourceAttributes as usize,
                    &resource,
                )?;
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
fn kind(kind: i32) -> Cow<'static, str> {
    Cow::Borrowed(match kind {
        0 => "unspecified",
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        other => return Cow::Owned(other.to_string()),
    })
}

/// `Status.StatusCode` by its short name: `unset`, `ok`, `error`.
fn status_code(code: i32) -> Cow<'static, str> {
    Cow::Borrowed(match code {
        0 => "unset",
        1 => "ok",
        2 => "error",
        other => return Cow::Owned(other.to_string()),
    })
}
