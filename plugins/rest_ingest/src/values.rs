//! Raw JSON values to typed column values, per logical type. Strict: nothing is rounded or
//! guessed, and every range Iceberg has is checked here (the SDK's parsers and the batch
//! builder), so a value that is accepted can always be committed.

use std::borrow::Cow;

use base64::Engine as _;
use moonlink_sdk::text::{
    parse_date, parse_decimal, parse_float, parse_time, parse_timestamp, parse_uuid,
};
use moonlink_sdk::{DataType, Value};
use serde_json::value::RawValue;

/// What a raw JSON value is, from its first byte (raw values are valid JSON, trimmed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Null,
    Boolean,
    Number,
    String,
    Array,
    Object,
}

pub fn kind(raw: &str) -> Kind {
    match raw.as_bytes().first() {
        Some(b'n') => Kind::Null,
        Some(b't' | b'f') => Kind::Boolean,
        Some(b'"') => Kind::String,
        Some(b'[') => Kind::Array,
        Some(b'{') => Kind::Object,
        _ => Kind::Number,
    }
}

/// A short description of a raw JSON value for error messages: `string "abc"`, `number 1.5`.
pub fn describe(raw: &str) -> String {
    let name = match kind(raw) {
        Kind::Null => return "null".into(),
        Kind::Boolean => "boolean",
        Kind::Number => "number",
        Kind::String => "string",
        Kind::Array => "array",
        Kind::Object => "object",
    };
    if raw.len() <= 40 {
        return format!("{name} {raw}");
    }
    let mut end = 37;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    format!("{name} {}...", &raw[..end])
}

fn expected(what: &str, raw: &str) -> String {
    format!("expected {what}, got {}", describe(raw))
}

/// The text of a JSON string literal, borrowed when it has no escapes.
pub fn string(raw: &str) -> Result<Cow<'_, str>, String> {
    if kind(raw) != Kind::String {
        return Err(expected("a string", raw));
    }
    if !raw.contains('\\') && raw.len() >= 2 {
        return Ok(Cow::Borrowed(&raw[1..raw.len() - 1]));
    }
    serde_json::from_str::<String>(raw)
        .map(Cow::Owned)
        .map_err(|e| format!("invalid string: {e}"))
}

/// A JSON integer literal; a fraction or exponent is refused, as is a value beyond int64.
fn integer(raw: &str, what: &str) -> Result<i64, String> {
    if kind(raw) != Kind::Number {
        return Err(expected(what, raw));
    }
    raw.parse::<i64>().map_err(|_| {
        let digits = raw.strip_prefix('-').unwrap_or(raw);
        if digits.bytes().all(|b| b.is_ascii_digit()) {
            format!("{} is out of range for int64", describe(raw))
        } else {
            expected(what, raw)
        }
    })
}

pub fn convert(data_type: &DataType, raw: &str) -> Result<Value, String> {
    let kind = kind(raw);
    if kind == Kind::Null {
        return Ok(Value::Null);
    }
    match data_type {
        DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            let name = match data_type {
                DataType::Int16 => "an int16 integer",
                DataType::Int32 => "an int32 integer",
                _ => "an int64 integer",
            };
            integer(raw, name).map(Value::Int)
        }
        DataType::Float32 | DataType::Float64 => match kind {
            // JSON numbers have no inf/nan, so an infinite result is an overflow: refused.
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
        DataType::Utf8 => string(raw).map(|s| Value::Str(s.into_owned())),
        DataType::Date32 => match kind {
            Kind::String => parse_date(&string(raw)?).map(|d| Value::Int(d as i64)),
            // Days since 1970-01-01; the batch builder checks the 32-bit range.
            Kind::Number => integer(raw, "a date \"YYYY-MM-DD\" or integer days").map(Value::Int),
            _ => Err(expected("a date \"YYYY-MM-DD\"", raw)),
        },
        DataType::Timestamp | DataType::Timestamptz => match kind {
            Kind::String => {
                parse_timestamp(&string(raw)?, matches!(data_type, DataType::Timestamptz))
                    .map(Value::Int)
            }
            Kind::Number => integer(
                raw,
                "a timestamp \"YYYY-MM-DD HH:MM:SS[.ffffff]\" or integer microseconds",
            )
            .map(Value::Int),
            _ => Err(expected(
                "a timestamp \"YYYY-MM-DD HH:MM:SS[.ffffff]\" or integer microseconds",
                raw,
            )),
        },
        DataType::Decimal(d) => match kind {
            Kind::String => parse_decimal(&string(raw)?, d.precision, d.scale),
            // The literal itself, exactly (an f64 would drop digits past the 17th).
            Kind::Number => parse_decimal(raw, d.precision, d.scale),
            _ => Err(expected("a decimal (string or number)", raw)),
        }
        .map(Value::Int128),
        DataType::Binary => match kind {
            Kind::String => base64::engine::general_purpose::STANDARD
                .decode(string(raw)?.as_bytes())
                .map(Value::Bytes)
                .map_err(|e| format!("expected base64, {e}")),
            _ => Err(expected("a base64 string", raw)),
        },
        DataType::Uuid => match kind {
            Kind::String => parse_uuid(&string(raw)?).map(|b| Value::Bytes(b.to_vec())),
            _ => Err(expected("a UUID string", raw)),
        },
        DataType::Time => match kind {
            Kind::String => parse_time(&string(raw)?).map(Value::Int),
            // Microseconds since midnight; the batch builder checks Iceberg's range.
            Kind::Number => {
                integer(raw, "a time \"HH:MM:SS[.ffffff]\" or integer microseconds").map(Value::Int)
            }
            _ => Err(expected("a time \"HH:MM:SS[.ffffff]\"", raw)),
        },
        DataType::Array(element) => match kind {
            Kind::Array => {
                let items: Vec<&RawValue> =
                    serde_json::from_str(raw).map_err(|e| format!("invalid array: {e}"))?;
                let element = moonlink_sdk::element_data_type(element);
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        convert(&element, item.get()).map_err(|e| format!("element {i}: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::List)
            }
            _ => Err(expected("a JSON array", raw)),
        },
        DataType::Map(m) => match kind {
            Kind::Object => map_entries(
                &moonlink_sdk::element_data_type(&m.key),
                &moonlink_sdk::element_data_type(&m.value),
                raw,
            )
            .map(Value::Map),
            _ => Err(expected("a JSON object", raw)),
        },
    }
}

/// The entries of a JSON object for a map column, in order. Keys are JSON strings: a string
/// key as is, any other key type parsed from the key's text (`{"7": ..}` for int64 keys).
/// For string values, a value that is not a JSON string keeps its JSON text (`1`, `true`,
/// `{"x":1}`); JSON `null` is a null value.
fn map_entries(
    key_type: &DataType,
    value_type: &DataType,
    raw: &str,
) -> Result<Vec<(Value, Value)>, String> {
    let mut members = object::Members::parse(raw)?.0;
    // A key given twice: the last one counts, as in JSON parsers (keys are unique per row).
    let mut seen = std::collections::HashSet::new();
    members.reverse();
    members.retain(|(key, _)| seen.insert(key.clone()));
    members.reverse();
    members
        .into_iter()
        .map(|(key, value)| {
            let key_value = match key_type {
                DataType::Utf8 => Value::Str(key.clone()),
                other => {
                    let quoted = serde_json::to_string(&key).map_err(|e| e.to_string())?;
                    let text = if matches!(kind(&key), Kind::Number | Kind::Boolean)
                        && serde_json::from_str::<&RawValue>(&key).is_ok()
                    {
                        key.clone()
                    } else {
                        quoted
                    };
                    convert(other, &text).map_err(|e| format!("key {}: {e}", quote(&key)))?
                }
            };
            let raw_value = value.get();
            let value = match (value_type, kind(raw_value)) {
                (_, Kind::Null) => Value::Null,
                (DataType::Utf8, Kind::String) => convert(value_type, raw_value)?,
                (DataType::Utf8, _) => Value::Str(raw_value.to_string()),
                (other, _) => {
                    convert(other, raw_value).map_err(|e| format!("key {}: {e}", quote(&key)))?
                }
            };
            Ok((key_value, value))
        })
        .collect()
}

fn quote(key: &str) -> String {
    serde_json::to_string(key).unwrap_or_default()
}

/// A JSON object's members in document order, values kept raw (no map type reorders them).
mod object {
    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
    use serde_json::value::RawValue;

    pub struct Members<'a>(pub Vec<(String, &'a RawValue)>);

    impl<'a> Members<'a> {
        pub fn parse(raw: &'a str) -> Result<Self, String> {
            serde_json::from_str(raw).map_err(|e| format!("invalid object: {e}"))
        }
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Members<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
                    let mut entries = Vec::new();
                    while let Some((k, v)) = m.next_entry::<String, &'de RawValue>()? {
                        entries.push((k, v));
                    }
                    Ok(Members(entries))
                }
            }
            d.deserialize_map(V)
        }
    }
}
