//! `ExportMetricsServiceRequest` → rows of the metrics table, one per data point, whatever
//! the metric's type; columns a type does not have stay null.

use moonlink_sdk::Value;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;

use crate::error::OtelError;
use crate::rows::Rows;
use crate::tables::metrics::C;
use crate::tables::Tables;
use crate::values::{attribute_entries, micros, nanos_value, non_empty, Refused, Resource};

/// What every point of one metric shares.
struct Metric {
    name: String,
    description: Value,
    unit: Value,
    kind: &'static str,
    temporality: Value,
    monotonic: Value,
}

/// A point's own columns, checked before anything of it is written.
struct Point {
    times: [Value; 3],
    attributes: Vec<KeyValue>,
    flags: u32,
    values: Vec<(C, Value)>,
}

pub fn rows(request: ExportMetricsServiceRequest, tables: &Tables) -> Result<Rows, OtelError> {
    let mut rows = Rows::new(&tables.metrics, &tables.metrics_schema, 0);
    for resource_metrics in request.resource_metrics {
        let resource = resource_metrics
            .resource
            .map(|r| r.attributes)
            .unwrap_or_default();
        let resource = Resource::new(&resource);
        for scope_metrics in resource_metrics.scope_metrics {
            let scope = scope_metrics.scope.unwrap_or_default();
            for metric in scope_metrics.metrics {
                let Some(data) = metric.data else { continue };
                let (kind, temporality, monotonic, points) = points(data);
                let common = Metric {
                    name: metric.name,
                    description: non_empty(metric.description),
                    unit: non_empty(metric.unit),
                    kind,
                    temporality,
                    monotonic,
                };
                for point in points {
                    let point = match point {
                        Ok(point) => point,
                        Err(why) => {
                            rows.refuse(Refused(format!("metric '{}': {}", common.name, why.0)));
                            continue;
                        }
                    };
                    rows.start();
                    rows.set_str(C::MetricName as usize, &common.name)?;
                    rows.set(C::MetricDescription as usize, common.description.clone())?;
                    rows.set(C::MetricUnit as usize, common.unit.clone())?;
                    rows.set_str(C::MetricType as usize, common.kind)?;
                    rows.set(C::Temporality as usize, common.temporality.clone())?;
                    rows.set(C::IsMonotonic as usize, common.monotonic.clone())?;
                    let [time, start, nanos] = point.times;
                    rows.set(C::Timestamp as usize, time)?;
                    rows.set(C::StartTimestamp as usize, start)?;
                    rows.set(C::TimeUnixNano as usize, nanos)?;
                    rows.set_map(C::Attributes as usize, attribute_entries(&point.attributes))?;
                    for (column, value) in point.values {
                        rows.set(column as usize, value)?;
                    }
                    if point.flags != 0 {
                        rows.set(C::Flags as usize, Value::Int(point.flags.into()))?;
                    }
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
    }
    Ok(rows)
}

type Points = Vec<Result<Point, Refused>>;

/// The metric's type name, temporality, monotonicity and its points.
fn points(data: Data) -> (&'static str, Value, Value, Points) {
    match data {
        Data::Gauge(g) => {
            let points = g.data_points.into_iter().map(|p| {
                let times = times(p.time_unix_nano, p.start_time_unix_nano)?;
                Ok(Point {
                    times,
                    attributes: p.attributes,
                    flags: p.flags,
                    values: number(p.value),
                })
            });
            ("gauge", Value::Null, Value::Null, points.collect())
        }
        Data::Sum(s) => {
            let points = s.data_points.into_iter().map(|p| {
                let times = times(p.time_unix_nano, p.start_time_unix_nano)?;
                Ok(Point {
                    times,
                    attributes: p.attributes,
                    flags: p.flags,
                    values: number(p.value),
                })
            });
            let temporality = temporality(s.aggregation_temporality);
            (
                "sum",
                temporality,
                Value::Bool(s.is_monotonic),
                points.collect(),
            )
        }
        Data::Histogram(h) => {
            let points = h.data_points.into_iter().map(|p| {
                let times = times(p.time_unix_nano, p.start_time_unix_nano)?;
                let values = vec![
                    (C::Count, count(p.count, "count")?),
                    (C::Sum, p.sum.into()),
                    (C::Min, p.min.into()),
                    (C::Max, p.max.into()),
                    (C::BucketCounts, counts(p.bucket_counts)?),
                    (
                        C::ExplicitBounds,
                        Value::List(p.explicit_bounds.into_iter().map(Value::Float).collect()),
                    ),
                ];
                Ok(Point {
                    times,
                    attributes: p.attributes,
                    flags: p.flags,
                    values,
                })
            });
            (
                "histogram",
                temporality(h.aggregation_temporality),
                Value::Null,
                points.collect(),
            )
        }
        Data::ExponentialHistogram(h) => {
            let points = h.data_points.into_iter().map(|p| {
                let times = times(p.time_unix_nano, p.start_time_unix_nano)?;
                let positive = p.positive.unwrap_or_default();
                let negative = p.negative.unwrap_or_default();
                let values = vec![
                    (C::Count, count(p.count, "count")?),
                    (C::Sum, p.sum.into()),
                    (C::Min, p.min.into()),
                    (C::Max, p.max.into()),
                    (C::Scale, Value::Int(p.scale.into())),
                    (C::ZeroCount, count(p.zero_count, "zero_count")?),
                    (C::ZeroThreshold, Value::Float(p.zero_threshold)),
                    (C::PositiveOffset, Value::Int(positive.offset.into())),
                    (C::PositiveBucketCounts, buckets(positive)?),
                    (C::NegativeOffset, Value::Int(negative.offset.into())),
                    (C::NegativeBucketCounts, buckets(negative)?),
                ];
                Ok(Point {
                    times,
                    attributes: p.attributes,
                    flags: p.flags,
                    values,
                })
            });
            let temporality = temporality(h.aggregation_temporality);
            (
                "exponential_histogram",
                temporality,
                Value::Null,
                points.collect(),
            )
        }
        Data::Summary(s) => {
            let points = s.data_points.into_iter().map(|p| {
                let times = times(p.time_unix_nano, p.start_time_unix_nano)?;
                let (quantiles, values): (Vec<_>, Vec<_>) = p
                    .quantile_values
                    .into_iter()
                    .map(|q| (Value::Float(q.quantile), Value::Float(q.value)))
                    .unzip();
                let values = vec![
                    (C::Count, count(p.count, "count")?),
                    (C::Sum, Value::Float(p.sum)),
                    (C::Quantiles, Value::List(quantiles)),
                    (C::QuantileValues, Value::List(values)),
                ];
                Ok(Point {
                    times,
                    attributes: p.attributes,
                    flags: p.flags,
                    values,
                })
            });
            ("summary", Value::Null, Value::Null, points.collect())
        }
    }
}

/// `timestamp`, `start_timestamp` and `time_unix_nano`.
fn times(time: u64, start: u64) -> Result<[Value; 3], Refused> {
    Ok([
        micros(time, "time_unix_nano")?,
        micros(start, "start_time_unix_nano")?,
        nanos_value(time, "time_unix_nano")?,
    ])
}

/// A gauge or sum value: `value` as a double always, `int_value` too for integer points.
fn number(value: Option<number_data_point::Value>) -> Vec<(C, Value)> {
    match value {
        Some(number_data_point::Value::AsDouble(d)) => vec![(C::Value, Value::Float(d))],
        Some(number_data_point::Value::AsInt(i)) => {
            vec![
                (C::Value, Value::Float(i as f64)),
                (C::IntValue, Value::Int(i)),
            ]
        }
        None => Vec::new(),
    }
}

fn count(n: u64, what: &str) -> Result<Value, Refused> {
    i64::try_from(n)
        .map(Value::Int)
        .map_err(|_| Refused(format!("{what} {n} does not fit int64")))
}

fn counts(counts: Vec<u64>) -> Result<Value, Refused> {
    counts
        .into_iter()
        .map(|c| count(c, "bucket count"))
        .collect::<Result<_, _>>()
        .map(Value::List)
}

fn buckets(buckets: Buckets) -> Result<Value, Refused> {
    counts(buckets.bucket_counts)
}

/// `AggregationTemporality` by its short name: `delta`, `cumulative`; unspecified is null.
fn temporality(t: i32) -> Value {
    match t {
        1 => Value::Str("delta".into()),
        2 => Value::Str("cumulative".into()),
        0 => Value::Null,
        other => Value::Str(other.to_string()),
    }
}
