//! The rendered text against `serde_json` printing the same JSON.

use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValueList};
use serde_json::{json, Value as Json};

use super::*;

fn kv(key: &str, value: Any) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn any(value: Any) -> AnyValue {
    AnyValue { value: Some(value) }
}

fn object_text(attributes: &[KeyValue]) -> String {
    let mut out = String::new();
    push_object(&mut out, attributes);
    out
}

#[test]
fn objects_print_as_serde_json_prints_them() {
    let tricky = "quote \" backslash \\ nl \n tab \t cr \r bs \u{8} ff \u{c} nul \u{0} us \u{1f} \
                  del \u{7f} é 😀 / <";
    let nested = Any::KvlistValue(KeyValueList {
        values: vec![
            kv("z", Any::IntValue(-7)),
            kv(
                "a",
                Any::ArrayValue(ArrayValue {
                    values: vec![any(Any::DoubleValue(1e21)), AnyValue { value: None }],
                }),
            ),
        ],
    });
    let attributes = vec![
        kv("b", Any::StringValue(tricky.into())),
        kv("a", Any::DoubleValue(0.1)),
        kv("dup", Any::IntValue(1)),
        kv("c", Any::BoolValue(false)),
        kv("dup", Any::IntValue(2)),
        kv("bytes", Any::BytesValue(vec![0, 255, 7])),
        kv("nan", Any::DoubleValue(f64::NAN)),
        kv("inf", Any::DoubleValue(f64::NEG_INFINITY)),
        kv("whole", Any::DoubleValue(3.0)),
        kv("nested", nested),
        KeyValue {
            key: "none".into(),
            value: None,
            ..Default::default()
        },
        kv(tricky, Any::IntValue(i64::MIN)),
    ];
    let expected = json!({
        "b": tricky, "a": 0.1, "dup": 2, "c": false, "bytes": "AP8H", "nan": "NaN",
        "inf": "-Infinity", "whole": 3.0, "nested": {"z": -7, "a": [1e21, null]}, "none": null,
        tricky: i64::MIN,
    });
    assert_eq!(object_text(&attributes), expected.to_string());
    assert_eq!(object_text(&[]), "{}");
    let parsed: Json = serde_json::from_str(&object_text(&attributes)).unwrap();
    assert_eq!(parsed, expected);
}

#[test]
fn attribute_text_borrows_strings_and_renders_the_rest() {
    let attributes = vec![
        kv("s", Any::StringValue("text".into())),
        kv("i", Any::IntValue(42)),
        kv("d", Any::DoubleValue(2.5)),
        kv("s", Any::StringValue("again".into())),
        kv("b", Any::BoolValue(true)),
        kv("x", Any::BytesValue(b"hi".to_vec())),
        KeyValue {
            key: "n".into(),
            value: None,
            ..Default::default()
        },
    ];
    let mut text = AttributeText::default();
    text.render(&attributes[..1]);
    text.render(&attributes);
    let entries: Vec<_> = text.entries().collect();
    assert_eq!(
        entries,
        vec![
            ("s", Some("again")),
            ("i", Some("42")),
            ("d", Some("2.5")),
            ("b", Some("true")),
            ("x", Some("aGk=")),
            ("n", None),
        ]
    );
}

#[test]
fn list_text_items() {
    let mut list = ListText::default();
    list.push_object(&[kv("k", Any::StringValue("v".into()))]);
    list.clear();
    assert_eq!(list.items().count(), 0);
    list.push_object(&[kv("k", Any::StringValue("v".into()))]);
    list.push_object(&[]);
    list.push_object(&[kv("n", Any::IntValue(1))]);
    let items: Vec<_> = list.items().collect();
    assert_eq!(
        items,
        vec![Some(r#"{"k":"v"}"#), Some("{}"), Some(r#"{"n":1}"#)]
    );
}

#[test]
fn integers_print_as_display_prints_them() {
    let mut cases = vec![
        0,
        1,
        -1,
        9,
        10,
        -10,
        99,
        100,
        12_345,
        -987_654_321,
        i64::MAX,
        i64::MIN,
    ];
    cases.extend((0..64).map(|shift| 1i64 << shift));
    cases.extend((0..64).map(|shift| (1i64 << shift).wrapping_neg()));
    // Around the switch to 32-bit digits.
    let edge = i64::from(u32::MAX);
    cases.extend([
        edge - 1,
        edge,
        edge + 1,
        -edge,
        -edge - 1,
        edge * 10,
        edge * 10 + 9,
    ]);
    for value in cases {
        let mut out = String::from("x");
        push_int(&mut out, value);
        assert_eq!(out, format!("x{value}"));
    }
}
