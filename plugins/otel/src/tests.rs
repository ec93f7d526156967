//! The plugin natively: OTLP requests in, batches and responses out.

use moonlink_sdk::receiver::{HttpRequest, Reception};
use moonlink_sdk::{ChangeBatch, Column, ColumnValues, Config, ElementValues, MapValues};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{self as m, metric::Data, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::http::Status;
use crate::Otel;

fn otel() -> Otel {
    Otel::from_config(&Config::default()).unwrap()
}

fn kv(key: &str, value: Any) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", Any::StringValue("checkout".into())),
            kv("host.cpus", Any::IntValue(8)),
        ],
        ..Default::default()
    })
}

fn column<'a>(batch: &'a ChangeBatch, name: &str) -> &'a Column {
    batch
        .columns
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no column {name}"))
}

fn strings(batch: &ChangeBatch, name: &str) -> Vec<Option<String>> {
    let c = column(batch, name);
    let values = c.values.strings().unwrap();
    values
        .iter()
        .enumerate()
        .map(|(i, s)| {
            c.validity
                .as_ref()
                .is_none_or(|v| v[i])
                .then(|| s.to_string())
        })
        .collect()
}

fn ints(batch: &ChangeBatch, name: &str) -> Vec<Option<i64>> {
    let c = column(batch, name);
    let values: Vec<i64> = match &c.values {
        ColumnValues::Int64(v) => v.clone(),
        ColumnValues::Int32(v) => v.iter().map(|&x| x.into()).collect(),
        other => panic!("{name} is {other:?}"),
    };
    values
        .iter()
        .enumerate()
        .map(|(i, &x)| c.validity.as_ref().is_none_or(|v| v[i]).then_some(x))
        .collect()
}

fn floats(batch: &ChangeBatch, name: &str) -> Vec<Option<f64>> {
    let c = column(batch, name);
    let ColumnValues::Float64(values) = &c.values else {
        panic!("{name}")
    };
    values
        .iter()
        .enumerate()
        .map(|(i, &x)| c.validity.as_ref().is_none_or(|v| v[i]).then_some(x))
        .collect()
}

/// Row `row` of a map column as (key, value) pairs in key order.
fn map_row(batch: &ChangeBatch, name: &str, row: usize) -> Vec<(String, Option<String>)> {
    let ColumnValues::Map(MapValues {
        offsets,
        keys,
        values,
        value_validity,
    }) = &column(batch, name).values
    else {
        panic!("{name} is not a map")
    };
    // Keys and values cross the boundary packed (WIT 0.4.0), one buffer each.
    let (ElementValues::Utf8Buffer(_), ElementValues::Utf8Buffer(_)) = (keys, values) else {
        panic!("{name} is not a packed map<string,string>")
    };
    let (keys, values) = (keys.strings().unwrap(), values.strings().unwrap());
    let mut pairs: Vec<_> = (offsets[row] as usize..offsets[row + 1] as usize)
        .map(|i| {
            let valid = value_validity.as_ref().is_none_or(|v| v[i]);
            (keys[i].to_string(), valid.then(|| values[i].to_string()))
        })
        .collect();
    pairs.sort();
    pairs
}

fn only_batch(reception: &Reception) -> &ChangeBatch {
    assert_eq!(
        reception.response.status,
        200,
        "{}",
        String::from_utf8_lossy(&reception.response.body)
    );
    assert_eq!(reception.batches.len(), 1);
    &reception.batches[0]
}

fn log_request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "app".into(),
                    version: "1.2".into(),
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn protobuf_logs_become_rows() {
    let record = LogRecord {
        time_unix_nano: 1_700_000_000_123_456_789,
        observed_time_unix_nano: 1_700_000_001_000_000_000,
        severity_number: 9,
        severity_text: "INFO".into(),
        body: Some(AnyValue {
            value: Some(Any::KvlistValue(KeyValueList {
                values: vec![kv("user", Any::IntValue(7))],
            })),
        }),
        attributes: vec![
            kv("http.route", Any::StringValue("/pay".into())),
            kv("retry", Any::BoolValue(true)),
        ],
        trace_id: vec![0xab; 16],
        span_id: vec![0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08],
        ..Default::default()
    };
    let body = log_request(vec![record]).encode_to_vec();
    let reception = otel().handle(HttpRequest::post(
        "/v1/logs",
        "application/x-protobuf",
        body,
    ));
    let batch = only_batch(&reception);
    assert_eq!(batch.table, "otel.logs");
    assert_eq!(ints(batch, "timestamp"), vec![Some(1_700_000_000_123_456)]);
    assert_eq!(
        ints(batch, "time_unix_nano"),
        vec![Some(1_700_000_000_123_456_789)]
    );
    assert_eq!(
        ints(batch, "observed_timestamp"),
        vec![Some(1_700_000_001_000_000)]
    );
    assert_eq!(ints(batch, "severity_number"), vec![Some(9)]);
    assert_eq!(strings(batch, "body"), vec![Some(r#"{"user":7}"#.into())]);
    assert_eq!(strings(batch, "trace_id"), vec![Some("ab".repeat(16))]);
    assert_eq!(
        strings(batch, "span_id"),
        vec![Some("0102030405060708".into())]
    );
    assert_eq!(
        strings(batch, "service_name"),
        vec![Some("checkout".into())]
    );
    assert_eq!(strings(batch, "scope_version"), vec![Some("1.2".into())]);
    assert_eq!(
        map_row(batch, "attributes", 0),
        vec![
            ("http.route".into(), Some("/pay".into())),
            ("retry".into(), Some("true".into()))
        ]
    );
    assert_eq!(
        map_row(batch, "resource_attributes", 0)[0],
        ("host.cpus".into(), Some("8".into()))
    );
    assert_eq!(reception.response.headers[0].1, "application/x-protobuf");
    let response = ExportLogsServiceResponse::decode(&reception.response.body[..]).unwrap();
    assert_eq!(response.partial_success, None);
}

#[test]
fn a_record_whose_time_does_not_fit_is_refused_alone() {
    let good = LogRecord {
        time_unix_nano: 5_000,
        ..Default::default()
    };
    let bad = LogRecord {
        time_unix_nano: u64::MAX,
        ..Default::default()
    };
    let body = log_request(vec![good, bad]).encode_to_vec();
    let reception = otel().handle(HttpRequest::post(
        "/v1/logs",
        "application/x-protobuf",
        body,
    ));
    assert_eq!(only_batch(&reception).operations.len(), 1);
    let response = ExportLogsServiceResponse::decode(&reception.response.body[..]).unwrap();
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_log_records, 1);
    assert!(
        partial.error_message.contains("2262"),
        "{}",
        partial.error_message
    );
}

const JSON_TRACE: &str = r#"{"resourceSpans":[{"resource":{"attributes":[
  {"key":"service.name","value":{"stringValue":"api"}}]},
  "scopeSpans":[{"scope":{"name":"manual"},"spans":[{
    "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
    "parentSpanId":"eee19b7ec3c1b173","name":"GET /users","kind":2,
    "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000500,
    "attributes":[{"key":"http.status_code","value":{"intValue":"200"}},
                  {"key":"ratio","value":{"doubleValue":0.5}},
                  {"key":"tags","value":{"arrayValue":{"values":[{"stringValue":"a"},{"intValue":3}]}}}],
    "events":[{"timeUnixNano":"1544712660500000000","name":"cache miss",
               "attributes":[{"key":"key","value":{"stringValue":"u1"}}]}],
    "links":[{"traceId":"00000000000000000000000000000001","spanId":"0000000000000002"}],
    "status":{"code":2,"message":"boom"},
    "unknownField":{"ignored":true}}]}]}]}"#;

#[test]
fn json_traces_follow_the_otlp_json_rules() {
    let request = HttpRequest::post(
        "/v1/traces",
        "application/json; charset=utf-8",
        JSON_TRACE.into(),
    );
    let reception = otel().handle(request);
    let batch = only_batch(&reception);
    assert_eq!(batch.table, "otel.spans");
    assert_eq!(
        strings(batch, "trace_id"),
        vec![Some("5b8efff798038103d269b633813fc60c".into())]
    );
    assert_eq!(
        strings(batch, "parent_span_id"),
        vec![Some("eee19b7ec3c1b173".into())]
    );
    assert_eq!(strings(batch, "kind"), vec![Some("server".into())]);
    assert_eq!(strings(batch, "status_code"), vec![Some("error".into())]);
    assert_eq!(strings(batch, "status_message"), vec![Some("boom".into())]);
    assert_eq!(ints(batch, "start_time"), vec![Some(1_544_712_660_000_000)]);
    assert_eq!(ints(batch, "duration_ns"), vec![Some(1_000_000_500)]);
    assert_eq!(
        map_row(batch, "attributes", 0),
        vec![
            ("http.status_code".into(), Some("200".into())),
            ("ratio".into(), Some("0.5".into())),
            ("tags".into(), Some(r#"["a",3]"#.into())),
        ]
    );
    let ColumnValues::Array(events) = &column(batch, "event_attributes").values else {
        panic!()
    };
    let ElementValues::Utf8Buffer(_) = &events.elements else {
        panic!("list elements are not packed")
    };
    assert_eq!(events.elements.strings().unwrap(), vec![r#"{"key":"u1"}"#]);
    assert_eq!(reception.response.headers[0].1, "application/json");
    assert_eq!(reception.response.body, b"{}");
}

#[test]
fn every_metric_type_is_one_row_per_point() {
    let number = |v| m::NumberDataPoint {
        time_unix_nano: 2_000_000_000,
        start_time_unix_nano: 1_000_000_000,
        attributes: vec![kv("route", Any::StringValue("/a".into()))],
        value: Some(v),
        ..Default::default()
    };
    let metric = |name: &str, data| m::Metric {
        name: name.into(),
        unit: "ms".into(),
        data: Some(data),
        ..Default::default()
    };
    let metrics = vec![
        metric(
            "g",
            Data::Gauge(m::Gauge {
                data_points: vec![number(number_data_point::Value::AsDouble(1.5))],
            }),
        ),
        metric(
            "s",
            Data::Sum(m::Sum {
                data_points: vec![number(number_data_point::Value::AsInt(42))],
                aggregation_temporality: 2,
                is_monotonic: true,
            }),
        ),
        metric(
            "h",
            Data::Histogram(m::Histogram {
                data_points: vec![m::HistogramDataPoint {
                    time_unix_nano: 3,
                    count: 3,
                    sum: Some(6.0),
                    min: Some(1.0),
                    max: Some(3.0),
                    bucket_counts: vec![1, 2, 0],
                    explicit_bounds: vec![1.0, 5.0],
                    ..Default::default()
                }],
                aggregation_temporality: 1,
            }),
        ),
        metric(
            "e",
            Data::ExponentialHistogram(m::ExponentialHistogram {
                data_points: vec![m::ExponentialHistogramDataPoint {
                    count: 2,
                    scale: 3,
                    zero_count: 1,
                    positive: Some(m::exponential_histogram_data_point::Buckets {
                        offset: -2,
                        bucket_counts: vec![1],
                    }),
                    ..Default::default()
                }],
                aggregation_temporality: 2,
            }),
        ),
        metric(
            "q",
            Data::Summary(m::Summary {
                data_points: vec![m::SummaryDataPoint {
                    count: 4,
                    sum: 10.0,
                    quantile_values: vec![m::summary_data_point::ValueAtQuantile {
                        quantile: 0.5,
                        value: 2.0,
                    }],
                    ..Default::default()
                }],
            }),
        ),
    ];
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![m::ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![m::ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let reception = otel().handle(HttpRequest::post(
        "/v1/metrics",
        "application/x-protobuf",
        request.encode_to_vec(),
    ));
    let batch = only_batch(&reception);
    let types: Vec<_> = strings(batch, "metric_type")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(
        types,
        [
            "gauge",
            "sum",
            "histogram",
            "exponential_histogram",
            "summary"
        ]
    );
    assert_eq!(
        floats(batch, "value"),
        vec![Some(1.5), Some(42.0), None, None, None]
    );
    assert_eq!(
        ints(batch, "int_value"),
        vec![None, Some(42), None, None, None]
    );
    assert_eq!(
        ints(batch, "count"),
        vec![None, None, Some(3), Some(2), Some(4)]
    );
    assert_eq!(
        ints(batch, "exp_positive_offset"),
        vec![None, None, None, Some(-2), None]
    );
    assert_eq!(
        strings(batch, "aggregation_temporality"),
        vec![
            None,
            Some("cumulative".into()),
            Some("delta".into()),
            Some("cumulative".into()),
            None
        ]
    );
    assert_eq!(ints(batch, "start_timestamp")[0], Some(1_000_000));
    assert_eq!(
        map_row(batch, "attributes", 1),
        vec![("route".into(), Some("/a".into()))]
    );
    let ColumnValues::Array(buckets) = &column(batch, "bucket_counts").values else {
        panic!()
    };
    assert_eq!(buckets.offsets, vec![0, 0, 0, 3, 3, 3]);
}

#[test]
fn malformed_bodies_are_400_with_a_status_and_nothing_written() {
    let reception = otel().handle(HttpRequest::post(
        "/v1/traces",
        "application/x-protobuf",
        vec![0x0a, 0xff, 0xff],
    ));
    assert_eq!(reception.response.status, 400);
    assert!(reception.batches.is_empty());
    let status = Status::decode(&reception.response.body[..]).unwrap();
    assert_eq!(status.code, 3);
    assert!(status.message.contains("protobuf"), "{}", status.message);

    let reception = otel().handle(HttpRequest::post(
        "/v1/logs",
        "application/json",
        b"{\"resourceLogs\":[1]}".to_vec(),
    ));
    assert_eq!(reception.response.status, 400);
    assert!(reception.batches.is_empty());
    let status: serde_json::Value = serde_json::from_slice(&reception.response.body).unwrap();
    assert_eq!(status["code"], 3);
}

#[test]
fn wrong_path_method_and_content_type() {
    let o = otel();
    assert_eq!(
        o.handle(HttpRequest::post(
            "/v1/profiles",
            "application/x-protobuf",
            vec![]
        ))
        .response
        .status,
        404
    );
    let mut get = HttpRequest::post("/v1/logs", "application/x-protobuf", vec![]);
    get.method = "GET".into();
    let reception = o.handle(get);
    assert_eq!(reception.response.status, 405);
    assert!(reception
        .response
        .headers
        .contains(&("allow".into(), "POST".into())));
    assert_eq!(
        o.handle(HttpRequest::post("/v1/logs", "text/plain", vec![]))
            .response
            .status,
        415
    );
    let mut brotli = HttpRequest::post("/v1/logs", "application/x-protobuf", vec![]);
    brotli
        .headers
        .push(("content-encoding".into(), "br".into()));
    assert_eq!(o.handle(brotli).response.status, 415);
}

#[test]
fn empty_exports_write_nothing() {
    for (path, content_type, body) in [
        ("/v1/traces", "application/x-protobuf", vec![]),
        ("/v1/metrics", "application/json", b"{}".to_vec()),
        (
            "/v1/logs",
            "application/json",
            b"{\"resourceLogs\":[]}".to_vec(),
        ),
    ] {
        let reception = otel().handle(HttpRequest::post(path, content_type, body));
        assert_eq!(reception.response.status, 200);
        assert!(reception.batches.is_empty());
    }
    let response = otel()
        .handle(HttpRequest::post(
            "/v1/traces",
            "application/x-protobuf",
            vec![],
        ))
        .response;
    assert_eq!(
        ExportTraceServiceResponse::decode(&response.body[..])
            .unwrap()
            .partial_success,
        None
    );
}

#[test]
fn failures_answer_in_the_request_encoding() {
    let headers = vec![("content-type".to_string(), "application/json".to_string())];
    let response = crate::http::failure(&headers, 503, "backlogged");
    assert_eq!(response.status, 503);
    let status: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(
        (status["code"].as_i64(), status["message"].as_str()),
        (Some(14), Some("backlogged"))
    );
    let response = crate::http::failure(&[], 413, "too large");
    assert_eq!(Status::decode(&response.body[..]).unwrap().code, 8);
}

#[test]
fn table_names_come_from_the_settings() {
    let config = Config::parse(r#"{"namespace":"obs","spans_table":"traces","logs_table":"x.y","listen":"127.0.0.1:4318"}"#).unwrap();
    let otel = Otel::from_config(&config).unwrap();
    assert_eq!(
        (
            otel.tables.logs.as_str(),
            otel.tables.spans.as_str(),
            otel.tables.metrics.as_str()
        ),
        ("x.y", "obs.traces", "obs.metrics")
    );
    let defs = otel.tables.defs();
    assert_eq!(defs[1].partition_by, vec!["day(start_time)".to_string()]);
    assert!(Otel::from_config(&Config::parse(r#"{"namespace":"a.b"}"#).unwrap()).is_err());
}
