//! `ExportLogsServiceRequest` → rows of the logs table, one per log record.

use moonlink_sdk::Value;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord;

use crate::error::OtelError;
use crate::render::AttributeText;
use crate::rows::Rows;
use crate::tables::logs::C;
use crate::tables::Tables;
use crate::values::{any_text_ref, micros, nanos_value, Refused, Resource};

pub fn rows(request: ExportLogsServiceRequest, tables: &Tables) -> Result<Rows, OtelError> {
    let expected = request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum();
    let mut rows = Rows::new(&tables.logs, &tables.logs_schema, expected);
    // Reused from record to record.
    let mut attributes = AttributeText::default();
    let no_scope = Default::default();
    for resource_logs in &request.resource_logs {
        let resource = resource_logs.resource.as_ref();
        let resource = Resource::new(resource.map_or(&[][..], |r| &r.attributes));
        for scope_logs in &resource_logs.scope_logs {
            let scope = scope_logs.scope.as_ref().unwrap_or(&no_scope);
            for record in &scope_logs.log_records {
                // Times first: a record whose time does not fit is refused before any of it
                // is written.
                let times = match times(record) {
                    Ok(times) => times,
                    Err(why) => {
                        rows.refuse(why);
                        continue;
                    }
                };
                rows.start();
                let [timestamp, observed, nanos] = times;
                rows.set(C::Timestamp as usize, timestamp)?;
                rows.set(C::ObservedTimestamp as usize, observed)?;
                rows.set(C::TimeUnixNano as usize, nanos)?;
                if record.severity_number != 0 {
                    rows.set(
                        C::SeverityNumber as usize,
                        Value::Int(record.severity_number.into()),
                    )?;
                }
                rows.set_str(C::SeverityText as usize, &record.severity_text)?;
                if let Some(body) = any_text_ref(record.body.as_ref()) {
                    rows.set_text(C::Body as usize, &body)?;
                }
                rows.set_id(C::TraceId as usize, &record.trace_id)?;
                rows.set_id(C::SpanId as usize, &record.span_id)?;
                if record.flags != 0 {
                    rows.set(C::Flags as usize, Value::Int(record.flags.into()))?;
                }
                rows.set_str(C::EventName as usize, &record.event_name)?;
                attributes.render(&record.attributes);
                rows.set_map(C::Attributes as usize, attributes.entries())?;
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

/// `timestamp` (the record's time, or its observed time when the client set none),
/// `observed_timestamp` and `time_unix_nano` (the nanoseconds of `timestamp`).
fn times(record: &LogRecord) -> Result<[Value; 3], Refused> {
    let time = if record.time_unix_nano != 0 {
        record.time_unix_nano
    } else {
        record.observed_time_unix_nano
    };
    Ok([
        micros(time, "time_unix_nano")?,
        micros(record.observed_time_unix_nano, "observed_time_unix_nano")?,
        nanos_value(time, "time_unix_nano")?,
    ])
}
