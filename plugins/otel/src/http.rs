//! The OTLP/HTTP protocol: paths, methods, content types, request decoding and the
//! `Export*ServiceResponse` / `google.rpc.Status` answers, in protobuf or JSON as the client
//! spoke.

use moonlink_sdk::receiver::{header, HttpRequest, HttpResponse, Reception};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::bytes::Bytes;
use prost::Message;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::OtelError;
use crate::rows::Rows;
use crate::tables::Tables;
use crate::{logs, metrics, spans};

/// The two OTLP/HTTP encodings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Encoding {
    Protobuf,
    Json,
}

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

impl Encoding {
    /// From a `content-type` header, parameters (`; charset=utf-8`) ignored.
    fn of(content_type: Option<&str>) -> Option<Encoding> {
        let media = content_type?.split(';').next()?.trim();
        if media.eq_ignore_ascii_case(PROTOBUF) {
            Some(Encoding::Protobuf)
        } else if media.eq_ignore_ascii_case(JSON) {
            Some(Encoding::Json)
        } else {
            None
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => PROTOBUF,
            Encoding::Json => JSON,
        }
    }
}

#[derive(Clone, Copy)]
enum Signal {
    Logs,
    Traces,
    Metrics,
}

/// Answers one request: rows for one table and the export response, or an error answer
/// with nothing written.
pub fn receive(tables: &Tables, request: HttpRequest) -> Reception {
    let encoding = Encoding::of(request.header("content-type")).unwrap_or(Encoding::Protobuf);
    match handle(tables, request) {
        Ok(reception) => reception,
        Err(e) => {
            let mut response = status_response(encoding, e.status(), &e.to_string());
            if let OtelError::MethodNotAllowed(_) = e {
                response.headers.push(("allow".into(), "POST".into()));
            }
            Reception::respond(response)
        }
    }
}

fn handle(tables: &Tables, request: HttpRequest) -> Result<Reception, OtelError> {
    let signal = match request.path.trim_end_matches('/') {
        "/v1/logs" => Signal::Logs,
        "/v1/traces" => Signal::Traces,
        "/v1/metrics" => Signal::Metrics,
        other => return Err(OtelError::NotFound(other.to_string())),
    };
    if request.method != "POST" {
        return Err(OtelError::MethodNotAllowed(request.method));
    }
    let content_type = request.header("content-type");
    let encoding = Encoding::of(content_type).ok_or_else(|| {
        OtelError::UnsupportedMediaType(format!(
            "content type {} is not OTLP: send {PROTOBUF} or {JSON}",
            content_type.map_or("(none)".to_string(), |c| format!("'{c}'"))
        ))
    })?;
    // The host undoes gzip and deflate and removes the header; anything left is a coding
    // we cannot read.
    if let Some(coding) = request.header("content-encoding") {
        if !coding.eq_ignore_ascii_case("identity") {
            return Err(OtelError::UnsupportedMediaType(format!(
                "Content-Encoding '{coding}' is not supported: send gzip, deflate or none"
            )));
        }
    }
    // Owned bytes (no copy): prost then takes each `bytes` field (trace and span ids) as a
    // slice of the body instead of allocating and copying it twice.
    let body = Bytes::from(request.body);
    let (rows, response): (Rows, ResponseBody) = match signal {
        Signal::Logs => (
            logs::rows(decode::<ExportLogsServiceRequest>(encoding, &body)?, tables)?,
            logs_response,
        ),
        Signal::Traces => (
            spans::rows(
                decode::<ExportTraceServiceRequest>(encoding, &body)?,
                tables,
            )?,
            traces_response,
        ),
        Signal::Metrics => (
            metrics::rows(
                decode::<ExportMetricsServiceRequest>(encoding, &body)?,
                tables,
            )?,
            metrics_response,
        ),
    };
    let (batch, rejected, message) = rows.finish();
    let body = response(encoding, rejected, message);
    let response = HttpResponse::new(200, encoding.content_type(), body);
    Ok(Reception::write(batch.into_iter().collect(), response))
}

/// Encodes an `Export*ServiceResponse` from the rejected count and message.
type ResponseBody = fn(Encoding, u64, String) -> Vec<u8>;

fn decode<T: Message + Default + DeserializeOwned>(
    encoding: Encoding,
    body: &Bytes,
) -> Result<T, OtelError> {
    match encoding {
        Encoding::Protobuf => T::decode(body.clone()).map_err(|e| {
            OtelError::Malformed(format!(
                "the body is not a valid OTLP protobuf message: {e}"
            ))
        }),
        // An empty body is the empty message in both encodings.
        Encoding::Json if body.iter().all(u8::is_ascii_whitespace) => Ok(T::default()),
        Encoding::Json => serde_json::from_slice(body)
            .map_err(|e| OtelError::Malformed(format!("the body is not valid OTLP/JSON: {e}"))),
    }
}

/// OTLP/JSON's `partialSuccess` object; int64 counts are strings in proto3 JSON.
fn partial_json(count_field: &str, rejected: u64, message: String) -> Vec<u8> {
    if rejected == 0 && message.is_empty() {
        return b"{}".to_vec();
    }
    let partial = json!({ count_field: rejected.to_string(), "errorMessage": message });
    json!({ "partialSuccess": partial })
        .to_string()
        .into_bytes()
}

fn partial<T>(rejected: u64, message: String, make: impl FnOnce(i64, String) -> T) -> Option<T> {
    (rejected > 0 || !message.is_empty()).then(|| make(rejected as i64, message))
}

fn logs_response(encoding: Encoding, rejected: u64, message: String) -> Vec<u8> {
    match encoding {
        Encoding::Json => partial_json("rejectedLogRecords", rejected, message),
        Encoding::Protobuf => ExportLogsServiceResponse {
            partial_success: partial(rejected, message, |n, m| ExportLogsPartialSuccess {
                rejected_log_records: n,
                error_message: m,
            }),
        }
        .encode_to_vec(),
    }
}

fn traces_response(encoding: Encoding, rejected: u64, message: String) -> Vec<u8> {
    match encoding {
        Encoding::Json => partial_json("rejectedSpans", rejected, message),
        Encoding::Protobuf => ExportTraceServiceResponse {
            partial_success: partial(rejected, message, |n, m| ExportTracePartialSuccess {
                rejected_spans: n,
                error_message: m,
            }),
        }
        .encode_to_vec(),
    }
}

fn metrics_response(encoding: Encoding, rejected: u64, message: String) -> Vec<u8> {
    match encoding {
        Encoding::Json => partial_json("rejectedDataPoints", rejected, message),
        Encoding::Protobuf => ExportMetricsServiceResponse {
            partial_success: partial(rejected, message, |n, m| ExportMetricsPartialSuccess {
                rejected_data_points: n,
                error_message: m,
            }),
        }
        .encode_to_vec(),
    }
}

/// `google.rpc.Status` (the OTLP/HTTP error body), without `details`.
#[derive(Clone, PartialEq, Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The gRPC code that matches an HTTP status, as OTLP maps them.
fn grpc_code(status: u16) -> i32 {
    match status {
        400 | 415 => 3,  // INVALID_ARGUMENT
        404 | 405 => 12, // UNIMPLEMENTED
        413 | 429 => 8,  // RESOURCE_EXHAUSTED
        503 => 14,       // UNAVAILABLE
        _ => 13,         // INTERNAL
    }
}

/// An error answer: a `Status` in the request's encoding (protobuf when it had none we read).
pub fn status_response(encoding: Encoding, status: u16, message: &str) -> HttpResponse {
    let code = grpc_code(status);
    let body = match encoding {
        Encoding::Protobuf => Status {
            code,
            message: message.to_string(),
        }
        .encode_to_vec(),
        Encoding::Json => json!({ "code": code, "message": message })
            .to_string()
            .into_bytes(),
    };
    HttpResponse::new(status, encoding.content_type(), body)
}

/// The host's failure answer (413, 429, 500, 503) for a request with `headers`.
pub fn failure(headers: &[(String, String)], status: u16, message: &str) -> HttpResponse {
    let encoding = Encoding::of(header(headers, "content-type")).unwrap_or(Encoding::Protobuf);
    status_response(encoding, status, message)
}
