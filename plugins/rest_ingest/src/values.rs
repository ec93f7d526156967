//! JSON values to typed column values, per logical type. Strict: nothing is rounded or guessed.

use base64::Engine as _;
use moonlink_sdk::text::{parse_date, parse_decimal, parse_time, parse_timestamp, parse_uuid};
use moonlink_sdk::{DataType, Value};
use serde_json::Value as Json;

/// A short description of a JSON value for error messages: `string "abc"`, `number 1.5`.
pub fn describe(json: &Json) -> String {
    let mut text = json.to_string();
    if text.len() > 40 {
        text.truncate(37);
        text.push_str("...");
    }
    let kind = match json {
        Json::Null => return "null".into(),
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    };
    format!("{kind} {text}")
}

fn expected(what: &str, json: &Json) -> String {
    format!("expected {what}, got {}", describe(json))
}

pub fn convert(data_type: &DataType, json: &Json) -> Result<Value, String> {
    if json.is_null() {
        return Ok(Value::Null);
    }
    match data_type {
        DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            let name = match data_type {
                DataType::Int16 => "int16",
                DataType::Int32 => "int32",
                _ => "int64",
            };
            json.as_i64()
                .map(Value::Int)
                .ok_or_else(|| expected(&format!("an {name} integer"), json))
        }
        DataType::Float32 | DataType::Float64 => json
            .as_f64()
            .filter(|_| json.is_number())
            .map(Value::Float)
            .ok_or_else(|| expected("a number", json)),
        DataType::Boolean => json
            .as_bool()
            .map(Value::Bool)
            .ok_or_else(|| expected("true or false", json)),
        DataType::Utf8 => json
            .as_str()
            .map(|s| Value::Str(s.to_string()))
            .ok_or_else(|| expected("a string", json)),
        DataType::Date32 => match json {
            Json::String(s) => parse_date(s).map(|d| Value::Int(d as i64)),
            Json::Number(n) if n.is_i64() => Ok(Value::Int(n.as_i64().unwrap())),
            _ => Err(expected("a date \"YYYY-MM-DD\"", json)),
        },
        DataType::Timestamp | DataType::Timestamptz => match json {
            Json::String(s) => {
                parse_timestamp(s, matches!(data_type, DataType::Timestamptz)).map(Value::Int)
            }
            Json::Number(n) if n.is_i64() => Ok(Value::Int(n.as_i64().unwrap())),
            _ => Err(expected(
                "a timestamp \"YYYY-MM-DD HH:MM:SS[.ffffff]\" or integer microseconds",
                json,
            )),
        },
        DataType::Decimal(d) => {
            let text = match json {
                Json::String(s) => s.clone(),
                Json::Number(n) => n.to_string(),
                _ => return Err(expected("a decimal (string or number)", json)),
            };
            parse_decimal(&text, d.precision, d.scale).map(Value::Int128)
        }
        DataType::Binary => match json {
            Json::String(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map(Value::Bytes)
                .map_err(|e| format!("expected base64, {e}")),
            _ => Err(expected("a base64 string", json)),
        },
        DataType::Uuid => match json {
            Json::String(s) => parse_uuid(s).map(|b| Value::Bytes(b.to_vec())),
            _ => Err(expected("a UUID string", json)),
        },
        DataType::Time => match json {
            Json::String(s) => parse_time(s).map(Value::Int),
            Json::Number(n) if n.is_i64() => Ok(Value::Int(n.as_i64().unwrap())),
            _ => Err(expected("a time \"HH:MM:SS[.ffffff]\"", json)),
        },
        DataType::Array(element) => match json {
            Json::Array(items) => {
                let element = moonlink_sdk::element_data_type(element);
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        convert(&element, item).map_err(|e| format!("element {i}: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::List)
            }
            _ => Err(expected("a JSON array", json)),
        },
    }
}
