//! The three tables and their columns, following the OpenTelemetry data model. Every table is
//! append-only and partitioned by day of its main timestamp. Times are `timestamptz`
//! (microseconds, truncated); the nanosecond value of the main time is kept in an int64
//! `*_unix_nano` column, and a span's exact length in `duration_ns`.

use moonlink_sdk::{DataType, ElementType, Field, MapType, TableDef, TableSchema};

/// Attributes: `map<string, string>`.
fn attrs() -> DataType {
    DataType::Map(MapType {
        key: ElementType::Utf8,
        value: ElementType::Utf8,
    })
}

fn list(element: ElementType) -> DataType {
    DataType::Array(element)
}

/// Declares a table's columns once: an enum `C` of column positions and `fields()` in the
/// same order, so a column is addressed by position (no name lookups per value).
macro_rules! table {
    ($m:ident { $($c:ident: $name:literal $ty:expr, $req:ident;)* }) => {
        pub mod $m {
            #[allow(unused_imports)]
            use super::*;
            /// Column positions.
            #[derive(Clone, Copy)]
            #[repr(usize)]
            pub enum C { $($c),* }
            /// The columns in order.
            pub fn fields() -> Vec<Field> {
                vec![$(super::field($name, $ty, super::$req)),*]
            }
        }
    };
}

const REQUIRED: bool = false;
const NULLABLE: bool = true;

fn field(name: &str, data_type: DataType, nullable: bool) -> Field {
    if nullable {
        Field::nullable(name, data_type)
    } else {
        Field::required(name, data_type)
    }
}

table!(logs {
    Timestamp: "timestamp" DataType::Timestamptz, NULLABLE;
    ObservedTimestamp: "observed_timestamp" DataType::Timestamptz, NULLABLE;
    TimeUnixNano: "time_unix_nano" DataType::Int64, NULLABLE;
    SeverityNumber: "severity_number" DataType::Int32, NULLABLE;
    SeverityText: "severity_text" DataType::Utf8, NULLABLE;
    Body: "body" DataType::Utf8, NULLABLE;
    TraceId: "trace_id" DataType::Utf8, NULLABLE;
    SpanId: "span_id" DataType::Utf8, NULLABLE;
    Flags: "flags" DataType::Int64, NULLABLE;
    EventName: "event_name" DataType::Utf8, NULLABLE;
    Attributes: "attributes" attrs(), NULLABLE;
    ServiceName: "service_name" DataType::Utf8, NULLABLE;
    ResourceAttributes: "resource_attributes" attrs(), NULLABLE;
    ScopeName: "scope_name" DataType::Utf8, NULLABLE;
    ScopeVersion: "scope_version" DataType::Utf8, NULLABLE;
});

table!(spans {
    TraceId: "trace_id" DataType::Utf8, REQUIRED;
    SpanId: "span_id" DataType::Utf8, REQUIRED;
    ParentSpanId: "parent_span_id" DataType::Utf8, NULLABLE;
    TraceState: "trace_state" DataType::Utf8, NULLABLE;
    Name: "name" DataType::Utf8, NULLABLE;
    Kind: "kind" DataType::Utf8, NULLABLE;
    StartTime: "start_time" DataType::Timestamptz, NULLABLE;
    EndTime: "end_time" DataType::Timestamptz, NULLABLE;
    StartTimeUnixNano: "start_time_unix_nano" DataType::Int64, NULLABLE;
    DurationNs: "duration_ns" DataType::Int64, NULLABLE;
    StatusCode: "status_code" DataType::Utf8, NULLABLE;
    StatusMessage: "status_message" DataType::Utf8, NULLABLE;
    Attributes: "attributes" attrs(), NULLABLE;
    EventNames: "event_names" list(ElementType::Utf8), NULLABLE;
    EventTimes: "event_times" list(ElementType::Timestamptz), NULLABLE;
    EventAttributes: "event_attributes" list(ElementType::Utf8), NULLABLE;
    LinkTraceIds: "link_trace_ids" list(ElementType::Utf8), NULLABLE;
    LinkSpanIds: "link_span_ids" list(ElementType::Utf8), NULLABLE;
    LinkAttributes: "link_attributes" list(ElementType::Utf8), NULLABLE;
    ServiceName: "service_name" DataType::Utf8, NULLABLE;
    ResourceAttributes: "resource_attributes" attrs(), NULLABLE;
    ScopeName: "scope_name" DataType::Utf8, NULLABLE;
    ScopeVersion: "scope_version" DataType::Utf8, NULLABLE;
});

table!(metrics {
    MetricName: "metric_name" DataType::Utf8, REQUIRED;
    MetricDescription: "metric_description" DataType::Utf8, NULLABLE;
    MetricUnit: "metric_unit" DataType::Utf8, NULLABLE;
    MetricType: "metric_type" DataType::Utf8, REQUIRED;
    Temporality: "aggregation_temporality" DataType::Utf8, NULLABLE;
    IsMonotonic: "is_monotonic" DataType::Boolean, NULLABLE;
    Timestamp: "timestamp" DataType::Timestamptz, NULLABLE;
    StartTimestamp: "start_timestamp" DataType::Timestamptz, NULLABLE;
    TimeUnixNano: "time_unix_nano" DataType::Int64, NULLABLE;
    Attributes: "attributes" attrs(), NULLABLE;
    Value: "value" DataType::Float64, NULLABLE;
    IntValue: "int_value" DataType::Int64, NULLABLE;
    Count: "count" DataType::Int64, NULLABLE;
    Sum: "sum" DataType::Float64, NULLABLE;
    Min: "min" DataType::Float64, NULLABLE;
    Max: "max" DataType::Float64, NULLABLE;
    BucketCounts: "bucket_counts" list(ElementType::Int64), NULLABLE;
    ExplicitBounds: "explicit_bounds" list(ElementType::Float64), NULLABLE;
    Scale: "exp_scale" DataType::Int32, NULLABLE;
    ZeroCount: "exp_zero_count" DataType::Int64, NULLABLE;
    ZeroThreshold: "exp_zero_threshold" DataType::Float64, NULLABLE;
    PositiveOffset: "exp_positive_offset" DataType::Int32, NULLABLE;
    PositiveBucketCounts: "exp_positive_bucket_counts" list(ElementType::Int64), NULLABLE;
    NegativeOffset: "exp_negative_offset" DataType::Int32, NULLABLE;
    NegativeBucketCounts: "exp_negative_bucket_counts" list(ElementType::Int64), NULLABLE;
    Quantiles: "quantiles" list(ElementType::Float64), NULLABLE;
    QuantileValues: "quantile_values" list(ElementType::Float64), NULLABLE;
    Flags: "flags" DataType::Int64, NULLABLE;
    ServiceName: "service_name" DataType::Utf8, NULLABLE;
    ResourceAttributes: "resource_attributes" attrs(), NULLABLE;
    ScopeName: "scope_name" DataType::Utf8, NULLABLE;
    ScopeVersion: "scope_version" DataType::Utf8, NULLABLE;
});

/// The table names in use (settings `namespace`, `logs_table`, `spans_table`,
/// `metrics_table`) and their schemas.
#[derive(Debug, Clone)]
pub struct Tables {
    pub logs: String,
    pub spans: String,
    pub metrics: String,
    pub logs_schema: TableSchema,
    pub spans_schema: TableSchema,
    pub metrics_schema: TableSchema,
}

impl Tables {
    pub fn new(logs: String, spans: String, metrics: String) -> Tables {
        Tables {
            logs,
            spans,
            metrics,
            logs_schema: TableSchema::new(logs::fields()),
            spans_schema: TableSchema::new(spans::fields()),
            metrics_schema: TableSchema::new(metrics::fields()),
        }
    }

    /// What `open` declares: the three tables, each partitioned by day of its time.
    pub fn defs(&self) -> Vec<TableDef> {
        vec![
            TableDef::new(&self.logs, self.logs_schema.clone()).partitioned_by(["day(timestamp)"]),
            TableDef::new(&self.spans, self.spans_schema.clone())
                .partitioned_by(["day(start_time)"]),
            TableDef::new(&self.metrics, self.metrics_schema.clone())
                .partitioned_by(["day(timestamp)"]),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_match_names() {
        let logs = logs::fields();
        assert_eq!(logs[logs::C::Body as usize].name, "body");
        assert_eq!(logs[logs::C::ScopeVersion as usize].name, "scope_version");
        let spans = spans::fields();
        assert_eq!(spans[spans::C::DurationNs as usize].name, "duration_ns");
        assert_eq!(spans[spans::C::ScopeVersion as usize].name, "scope_version");
        let metrics = metrics::fields();
        assert_eq!(
            metrics[metrics::C::NegativeBucketCounts as usize].name,
            "exp_negative_bucket_counts"
        );
        assert_eq!(
            metrics[metrics::C::ScopeVersion as usize].name,
            "scope_version"
        );
        assert_eq!(metrics.len(), metrics::C::ScopeVersion as usize + 1);
    }
}
