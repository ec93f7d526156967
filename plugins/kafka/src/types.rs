//! Column types by name (the syntax of `POST /tables`), JSON values into column values, and
//! type inference for `schema = "infer"`.

use base64::Engine as _;
use moonlink_sdk::text::{
    parse_date, parse_decimal, parse_float, parse_time, parse_timestamp, parse_uuid,
};
use moonlink_sdk::{element_type_of, DataType, DecimalType, Value};
use serde_json::value::RawValue;

/// Parses a type name as `POST /tables` does: `int64`, `string`, `decimal(12,2)`, `list<int32>`.
pub fn parse_type(name: &str) -> Result<DataType, String> {
    let lower = name.trim().to_ascii_lowercase();
    if let Some(inner) = lower
        .strip_prefix("list<")
        .and_then(|rest| rest.strip_suffix('>'))
    {
        return match parse_scalar(inner.trim(), name)? {
            DataType::Array(_) => Err(format!("type '{name}': lists cannot nest")),
            scalar => element_type_of(&scalar)
                .map(DataType::Array)
                .ok_or_else(|| format!("type '{name}': not a list element type")),
        };
    }
    parse_scalar(&lower, name)
}

fn parse_scalar(lower: &str, original: &str) -> Result<DataType, String> {
    Ok(match lower {
        "int16" | "smallint" => DataType::Int16,
        "int32" | "int" | "integer" => DataType::Int32,
        "int64" | "bigint" | "long" => DataType::Int64,
        "float32" | "float" | "real" => DataType::Float32,
        "float64" | "double" => DataType::Float64,
        "bool" | "boolean" => DataType::Boolean,
        "string" | "text" | "utf8" => DataType::Utf8,
        "date32" | "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp,
        "timestamptz" => DataType::Timestamptz,
        "binary" | "bytes" | "bytea" => DataType::Binary,
        "uuid" => DataType::Uuid,
        "time" => DataType::Time,
        other => {
            let decimal = other
                .strip_prefix("decimal(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|r| r.split_once(','))
                .and_then(|(p, s)| Some((p.trim().parse().ok()?, s.trim().parse().ok()?)));
            match decimal {
                Some((precision, scale)) if (1..=38).contains(&precision) && scale <= precision => {
                    DataType::Decimal(DecimalType { precision, scale })
                }
                _ => {
                    return Err(format!(
                        "unknown data type '{original}' (expected one of int16, int32, int64, \
                         float32, float64, bool, string, date32, decimal(p,s), timestamp, \
                         timestamptz, binary, uuid, time, list<T>)"
                    ))
                }
            }
        }
    })
}

/// The canonical name of a type, accepted back by [`parse_type`].
pub fn type_name(t: &DataType) -> String {
    match t {
        DataType::Int16 => "int16".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::Float32 => "float32".into(),
        DataType::Float64 => "float64".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Utf8 => "string".into(),
        DataType::Date32 => "date32".into(),
        DataType::Decimal(d) => format!("decimal({},{})", d.precision, d.scale),
        DataType::Timestamp => "timestamp".into(),
        DataType::Timestamptz => "timestamptz".into(),
        DataType::Binary => "binary".into(),
        DataType::Uuid => "uuid".into(),
        DataType::Time => "time".into(),
        DataType::Array(e) => format!("list<{}>", type_name(&moonlink_sdk::element_data_type(e))),
        DataType::Map(m) => format!(
            "map<{}, {}>",
            type_name(&moonlink_sdk::element_data_type(&m.key)),
            type_name(&moonlink_sdk::element_data_type(&m.value))
        ),
    }
}

/// What a raw JSON value is, from its first byte (raw values are valid JSON, trimmed).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Null,
    Boolean,
    Number,
    String,
    Array,
    Object,
}

fn kind(raw: &str) -> Kind {
    match raw.as_bytes().first() {
        Some(b'n') => Kind::Null,
        Some(b't' | b'f') => Kind::Boolean,
        Some(b'"') => Kind::String,
        Some(b'[') => Kind::Array,
        Some(b'{') => Kind::Object,
        _ => Kind::Number,
    }
}

fn describe(raw: &str) -> String {
    let mut text: String = raw.chars().take(40).collect();
    if text.len() < raw.len() {
        text.push_str("...");
    }
    text
}

fn expected(what: &str, raw: &str) -> String {
    format!("expected {what}, got {}", describe(raw))
}

fn string(raw: &str) -> Result<String, String> {
    if kind(raw) != Kind::String {
        return Err(expected("a string", raw));
    }
    serde_json::from_str::<String>(raw).map_err(|e| format!("invalid string: {e}"))
}

fn integer(raw: &str, what: &str) -> Result<i64, String> {
    if kind(raw) != Kind::Number {
        return Err(expected(what, raw));
    }
    raw.parse::<i64>()
        .map_err(|_| expected(&format!("{what} (within int64)"), raw))
}

/// A raw JSON value as a value of `data_type`. Strict, as `POST /ingest` is: nothing is
/// rounded; `lenient_strings` stores any scalar's JSON text in a string column (inferred
/// schemas, where a field may change kind).
pub fn convert(data_type: &DataType, raw: &str, lenient_strings: bool) -> Result<Value, String> {
    let kind = kind(raw);
    if kind == Kind::Null {
        return Ok(Value::Null);
    }
    match data_type {
        DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            integer(raw, "an integer").map(Value::Int)
        }
        DataType::Float32 | DataType::Float64 => match kind {
            Kind::Number => {
                parse_float(raw, matches!(data_type, DataType::Float32)).map(Value::Float)
            }
            _ => Err(expected("a number", raw)),
        },
        DataType::Boolean => match raw {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(expected("true or false", raw)),
        },
        DataType::Utf8 => match kind {
            Kind::String => string(raw).map(Value::Str),
            _ if lenient_strings => Ok(Value::Str(raw.to_string())),
            _ => Err(expected("a string", raw)),
        },
        DataType::Date32 => match kind {
            Kind::String => parse_date(&string(raw)?).map(|d| Value::Int(d as i64)),
            _ => integer(raw, "a date \"YYYY-MM-DD\" or integer days").map(Value::Int),
        },
        DataType::Timestamp | DataType::Timestamptz => match kind {
            Kind::String => {
                parse_timestamp(&string(raw)?, matches!(data_type, DataType::Timestamptz))
                    .map(Value::Int)
            }
            _ => integer(raw, "an ISO 8601 timestamp or integer microseconds").map(Value::Int),
        },
        DataType::Decimal(d) => match kind {
            Kind::String => parse_decimal(&string(raw)?, d.precision, d.scale),
            Kind::Number => parse_decimal(raw, d.precision, d.scale),
            _ => Err(expected("a decimal (string or number)", raw)),
        }
        .map(Value::Int128),
        DataType::Binary => base64::engine::general_purpose::STANDARD
            .decode(string(raw)?.as_bytes())
            .map(Value::Bytes)
            .map_err(|e| format!("expected base64, {e}")),
        DataType::Uuid => parse_uuid(&string(raw)?).map(|b| Value::Bytes(b.to_vec())),
        DataType::Time => match kind {
            Kind::String => parse_time(&string(raw)?).map(Value::Int),
            _ => {
                integer(raw, "a time \"HH:MM:SS[.ffffff]\" or integer microseconds").map(Value::Int)
            }
        },
        DataType::Array(element) => {
            if kind != Kind::Array {
                return Err(expected("a JSON array", raw));
            }
            let items: Vec<&RawValue> =
                serde_json::from_str(raw).map_err(|e| format!("invalid array: {e}"))?;
            let element = moonlink_sdk::element_data_type(element);
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    convert(&element, item.get(), lenient_strings)
                        .map_err(|e| format!("element {i}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Value::List)
        }
        // `parse_type` never declares one; a map column is not something Kafka JSON fills.
        DataType::Map(_) => Err("map columns are not supported by the kafka source".into()),
    }
}

/// The column type a JSON value suggests, for `schema = "infer"`: integers are int64, other
/// numbers float64, objects their JSON text; `None` for null and for empty or all-null arrays
/// (the column waits for a value that says more).
pub fn infer(raw: &str) -> Option<DataType> {
    match kind(raw) {
        Kind::Null => None,
        Kind::Boolean => Some(DataType::Boolean),
        Kind::Number => Some(if raw.parse::<i64>().is_ok() {
            DataType::Int64
        } else {
            DataType::Float64
        }),
        Kind::String | Kind::Object => Some(DataType::Utf8),
        Kind::Array => {
            let items: Vec<&RawValue> = serde_json::from_str(raw).ok()?;
            let mut found: Option<DataType> = None;
            for item in items {
                let Some(t) = infer(item.get()) else { continue };
                found = Some(match (found, t) {
                    (_, DataType::Array(_)) => return Some(DataType::Utf8),
                    (None, t) => t,
                    (Some(f), t) if type_name(&f) == type_name(&t) => f,
                    (Some(DataType::Int64), DataType::Float64)
                    | (Some(DataType::Float64), DataType::Int64) => DataType::Float64,
                    _ => DataType::Utf8,
                });
            }
            found.and_then(|t| element_type_of(&t)).map(DataType::Array)
        }
    }
}
