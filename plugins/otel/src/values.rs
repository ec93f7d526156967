//! OTLP values → column values: attributes as `map<string, string>` entries, `AnyValue`s as
//! text (strings as they are, everything else as its JSON text), ids as lower-case hex,
//! nanosecond times as microseconds.

use std::borrow::Cow;

use moonlink_sdk::Value;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};

/// A record the plugin refuses (counted in `partial_success`), with why.
#[derive(Debug)]
pub struct Refused(pub String);

/// Nanoseconds since the epoch → microseconds (truncated toward zero, as Iceberg keeps
/// microseconds); 0 ("unknown" in OTLP) → null. A time past `i64::MAX` ns (year 2262) does
/// not fit the `*_unix_nano` columns and refuses the record.
pub fn micros(nanos: u64, what: &str) -> Result<Value, Refused> {
    if nanos == 0 {
        return Ok(Value::Null);
    }
    check_nanos(nanos, what)?;
    Ok(Value::Int((nanos / 1000) as i64))
}

/// The time as a signed nanosecond count, or the refusal when it does not fit.
pub fn check_nanos(nanos: u64, what: &str) -> Result<i64, Refused> {
    i64::try_from(nanos).map_err(|_| {
        Refused(format!(
            "{what} {nanos} ns is after 2262-04-11 and does not fit a timestamp"
        ))
    })
}

/// Nanoseconds as an int64 column value (0 → null).
pub fn nanos_value(nanos: u64, what: &str) -> Result<Value, Refused> {
    if nanos == 0 {
        return Ok(Value::Null);
    }
    Ok(Value::Int(check_nanos(nanos, what)?))
}

/// A trace or span id as lower-case hex; an empty (absent) id is null.
pub fn hex_id(id: &[u8]) -> Option<String> {
    if id.is_empty() {
        return None;
    }
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(id.len() * 2);
    for b in id {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    Some(s)
}

/// A string column value, null when empty (proto3 cannot tell empty from absent).
pub fn non_empty(s: String) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::Str(s)
    }
}

/// An attribute or body value as column text: a string as it is (borrowed, not copied),
/// bytes as base64, anything else as its JSON text (`42`, `true`, `1.5`, `["a",1]`,
/// `{"k":"v"}`); no value is null.
pub fn any_text_ref(value: Option<&AnyValue>) -> Option<Cow<'_, str>> {
    match value?.value.as_ref()? {
        Any::StringValue(s) => Some(Cow::Borrowed(s)),
        // The JSON text of the common scalars without building a JSON value.
        Any::BoolValue(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Any::IntValue(i) => {
            let mut text = String::new();
            crate::render::push_int(&mut text, *i);
            Some(Cow::Owned(text))
        }
        other => {
            let mut text = String::new();
            crate::render::push_text(&mut text, other);
            Some(Cow::Owned(text))
        }
    }
}

/// Attributes as map entries, borrowed from the request where they are strings. OTLP
/// requires unique keys; when a client repeats one, the last value wins so the map never
/// holds duplicates.
pub fn attribute_entries(attributes: &[KeyValue]) -> Vec<(&str, Option<Cow<'_, str>>)> {
    let mut entries: Vec<(&str, Option<Cow<'_, str>>)> = Vec::with_capacity(attributes.len());
    for kv in attributes {
        let value = any_text_ref(kv.value.as_ref());
        match entries.iter().position(|(k, _)| *k == kv.key) {
            Some(i) => entries[i].1 = value,
            None => entries.push((&kv.key, value)),
        }
    }
    entries
}

/// A resource's attributes, rendered once and copied into each of its rows, and its
/// `service.name` (promoted to its own column).
pub struct Resource {
    pub attributes: Vec<(String, Option<String>)>,
    pub service: Option<String>,
}

impl Resource {
    pub fn new(attributes: &[KeyValue]) -> Resource {
        let attributes: Vec<(String, Option<String>)> = attribute_entries(attributes)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.map(Cow::into_owned)))
            .collect();
        let service = attributes
            .iter()
            .find(|(k, _)| k == "service.name")
            .and_then(|(_, v)| v.clone());
        Resource {
            attributes,
            service,
        }
    }

    /// The attributes as `set_map` takes them.
    pub fn entries(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn kv(key: &str, value: Any) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    #[test]
    fn values_render_as_json_text() {
        let text = |v| {
            let value = AnyValue { value: Some(v) };
            any_text_ref(Some(&value)).unwrap().into_owned()
        };
        assert_eq!(text(Any::StringValue("a\"b".into())), "a\"b");
        assert_eq!(text(Any::IntValue(-42)), "-42");
        assert_eq!(text(Any::BoolValue(true)), "true");
        assert_eq!(text(Any::DoubleValue(1.5)), "1.5");
        assert_eq!(text(Any::DoubleValue(f64::NAN)), "\"NaN\"");
        assert_eq!(text(Any::BytesValue(b"hi".to_vec())), "aGk=");
        let array = Any::ArrayValue(ArrayValue {
            values: vec![
                AnyValue {
                    value: Some(Any::StringValue("x".into())),
                },
                AnyValue {
                    value: Some(Any::IntValue(1)),
                },
                AnyValue { value: None },
            ],
        });
        assert_eq!(text(array), r#"["x",1,null]"#);
        let list = Any::KvlistValue(KeyValueList {
            values: vec![kv("k", Any::BoolValue(false))],
        });
        assert_eq!(text(list), r#"{"k":false}"#);
        assert_eq!(any_text_ref(None), None);
        assert_eq!(any_text_ref(Some(&AnyValue { value: None })), None);
    }

    #[test]
    fn duplicate_keys_keep_the_last_value() {
        let attributes = vec![
            kv("a", Any::IntValue(1)),
            kv("b", Any::StringValue("2".into())),
            kv("a", Any::IntValue(3)),
        ];
        let entries = attribute_entries(&attributes);
        assert_eq!(
            entries,
            vec![
                ("a", Some(Cow::Borrowed("3"))),
                ("b", Some(Cow::Borrowed("2")))
            ]
        );
        // A string is borrowed from the request, not copied.
        assert!(matches!(entries[1].1, Some(Cow::Borrowed(_))));
    }

    #[test]
    fn service_name_is_promoted() {
        let resource = Resource::new(&[
            kv("service.name", Any::StringValue("api".into())),
            kv("n", Any::IntValue(1)),
        ]);
        assert_eq!(resource.service.as_deref(), Some("api"));
        let entries: Vec<_> = resource.entries().collect();
        assert_eq!(
            entries,
            vec![("service.name", Some("api")), ("n", Some("1"))]
        );
    }

    #[test]
    fn times_and_ids() {
        assert_eq!(micros(0, "t").unwrap(), Value::Null);
        assert_eq!(
            micros(1_700_000_000_123_456_789, "t").unwrap(),
            Value::Int(1_700_000_000_123_456)
        );
        assert!(micros(u64::MAX, "time").is_err());
        assert_eq!(hex_id(&[0x0a, 0xff]).as_deref(), Some("0aff"));
        assert_eq!(hex_id(&[]), None);
    }
}
