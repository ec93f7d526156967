//! The fast path must agree with the general path: same batch when it accepts, and never
//! accept what the general path refuses. Checked on hand-picked and on generated bodies.

use moonlink_sdk::rest::RequestInfo;
use moonlink_sdk::{DataType, DecimalType, Field, TableSchema};

use crate::{decode_general, fast};

fn info(content_type: &str, parameters: &[(&str, &str)]) -> RequestInfo {
    let field = |name: &str, data_type, nullable| Field {
        nullable,
        ..Field::nullable(name, data_type)
    };
    RequestInfo {
        table: "demo.t".into(),
        schema: TableSchema {
            fields: vec![
                field("id", DataType::Int64, false),
                field("i16", DataType::Int16, true),
                field("f", DataType::Float32, true),
                field("s", DataType::Utf8, true),
                field("b", DataType::Boolean, true),
                field("d", DataType::Date32, true),
                field("ts", DataType::Timestamp, true),
                field(
                    "dec",
                    DataType::Decimal(DecimalType {
                        precision: 6,
                        scale: 2,
                    }),
                    true,
                ),
                field("u", DataType::Uuid, true),
                field("t", DataType::Time, true),
                field("l", DataType::Array(moonlink_sdk::ElementType::Int32), true),
                field("i32", DataType::Int32, true),
                field("f64", DataType::Float64, true),
                field("tz", DataType::Timestamptz, true),
                field("bin", DataType::Binary, true),
            ],
            primary_key: vec!["id".into()],
        },
        content_type: Some(content_type.into()),
        parameters: parameters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Fast and general agree on `body`; returns whether the fast path took it.
fn agree(info: &RequestInfo, body: &str) -> bool {
    let general = decode_general(info, body.as_bytes());
    match fast::decode(info, body.as_bytes()) {
        Some(fast) => {
            let general = general.unwrap_or_else(|e| {
                panic!("fast path accepted what the general path refuses ({e:?}): {body}")
            });
            assert_eq!(format!("{fast:?}"), format!("{general:?}"), "{body}");
            true
        }
        None => false,
    }
}

#[test]
fn common_bodies_take_the_fast_path() {
    let json = info("application/json", &[]);
    let ndjson = info("application/x-ndjson", &[("operation", "upsert")]);
    let row = r#"{"id":1,"i16":-5,"f":1.5,"s":"héllo","b":true,"d":"2024-02-29","ts":"2024-01-01 00:00:00.5","dec":"12.5","u":"123e4567-e89b-12d3-a456-426614174000","t":"23:59:59"}"#;
    for body in [
        format!(r#"{{"operation":"insert","request_mode":"sync","data":[{row},{row}]}}"#),
        format!(r#" {{ "data" : {row} , "table": "x" }} "#),
        r#"{"request_mode":null,"data":[]}"#.to_string(),
        r#"{"data":[{"id":2,"s":null,"f":1e3,"dec":-1.25}, {"id":-0}]}"#.to_string(),
    ] {
        assert!(agree(&json, &body), "{body}");
    }
    let body = format!("{row}\r\n\n  {{\"id\":3}}\n");
    assert!(agree(&ndjson, &body));
    // Escapes in string values are decoded on the fast path.
    assert!(agree(
        &json,
        r#"{"data":[{"id":1,"s":"a\"b\\\/\b\f\n\r\t\u00e9\uD83D\uDE00"}]}"#
    ));
    // Arrays, duplicates and errors go the general way.
    for body in [
        r#"{"data":[{"id":1,"l":[1,2]}]}"#,
        r#"{"data":[{"id":1,"id":2}]}"#,
        r#"{"data":[{"id":1,"i16":40000}]}"#,
        r#"{"data":[{"s":"x"}]}"#,
        r#"{"data":[{"id":01}]}"#,
        r#"{"data":[{"id":1}],"operation":"delete"}"#,
        r#"{"data":[{"id":1}],"data":[]}"#,
        r#"{"data":[{"id":1,}]}"#,
        r#"{"data":[{"id":+1}]}"#,
    ] {
        assert!(!agree(&json, body), "{body}");
    }
}

/// Values of every kind, valid and invalid for each column.
const VALUES: &[&str] = &[
    "1",
    "-7",
    "0",
    "40000",
    "1.5",
    "1e2",
    "-0.0",
    "1E+2",
    "01",
    "1.",
    ".5",
    "-",
    "9223372036854775808",
    "\"x\"",
    "\"\"",
    "\"a\\nb\"",
    "\"2024-01-01\"",
    "\"2024-13-01\"",
    "\"12.345\"",
    "\"99.99\"",
    "\"12:00:00\"",
    "\"24:00:00\"",
    "\"2024-01-01T00:00:00\"",
    "\"123e4567-e89b-12d3-a456-426614174000\"",
    "true",
    "false",
    "null",
    "nul",
    "[1,2]",
    "[]",
    "{}",
    "\"\u{7}\"",
    "\"日本\"",
    "tru",
    "2147483648",
    "-2147483649",
    "-32769",
    "-9223372036854775808",
    "1.5e300",
    "1e400",
    "-2.5E-3",
    "3.5e38",
    "123456789.123456789",
    "\"\\u00e9\\t\\\"\"",
    "\"\\uD83D\\uDE00\"",
    "\"\\uD83D\"",
    "\"\\uDE00\"",
    "\"\\uD83Dx\"",
    "\"\\uD83D\\u0041\"",
    "\"\\u00G1\"",
    "\"\\x\"",
    "\"\\u12\"",
    "\"AAEC\"",
    "\"2024-01-01 00:00:00+02:00\"",
    "\"2024-02-30\"",
    "\"0000-01-01\"",
    "-1",
    "86399999999",
];

/// Every column with every value, one row each: whatever the general path accepts, the fast
/// path takes too (so the typed decoding is compared, not skipped) and builds identically;
/// whatever it refuses, the fast path refuses (the general path then gives the error).
#[test]
fn every_column_with_every_value() {
    let ndjson = info("application/x-ndjson", &[]);
    let json = info("application/json", &[]);
    let mut taken = 0;
    for column in ndjson.schema.fields.iter().map(|f| f.name.as_str()) {
        for value in VALUES {
            let row = if column == "id" {
                format!("{{\"id\":{value}}}")
            } else {
                format!("{{\"id\":1,\"{column}\":{value}}}")
            };
            let general = decode_general(&ndjson, row.as_bytes());
            let fast = agree(&ndjson, &row);
            agree(&json, &format!("{{\"data\":[{row},{row}]}}"));
            let scalar = !value.starts_with(['[', '{']);
            if general.is_ok() && scalar {
                assert!(fast, "the fast path gave up on {row}");
                taken += 1;
            }
        }
    }
    assert!(taken > 120, "only {taken} rows took the fast path");
}

/// A body that is not UTF-8 is refused with the general path's error, NDJSON or JSON.
#[test]
fn bad_utf8_goes_the_general_way() {
    for content_type in ["application/x-ndjson", "application/json"] {
        let info = info(content_type, &[]);
        let body = b"{\"id\":1,\"s\":\"\xff\"}\n";
        assert!(fast::decode(&info, body).is_none());
        assert!(decode_general(&info, body).is_err());
    }
}

/// NDJSON rows are one per line: two rows on a line, or a row across lines, are refused.
#[test]
fn ndjson_rows_are_lines() {
    let info = info("application/x-ndjson", &[]);
    for body in [
        "{\"id\":1}{\"id\":2}\n",
        "{\"id\":1,\n\"s\":\"x\"}\n",
        "{\"id\":1} x\n",
    ] {
        assert!(!agree(&info, body), "{body}");
        assert!(decode_general(&info, body.as_bytes()).is_err(), "{body}");
    }
    assert!(agree(&info, "\n \r\n{\"id\":1} \t\r\n\n{\"id\":2}"));
    assert!(agree(&info, ""));
}

/// Generated bodies mixing valid and invalid pieces: whatever the fast path accepts, the
/// general path accepts identically.
#[test]
fn generated_bodies_agree() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let keys = [
        "id", "i16", "f", "s", "b", "d", "ts", "dec", "u", "t", "l", "zz", "i\\u0031",
    ];
    let values = VALUES;
    let ws = ["", " ", "\t", "\r", " \n "];
    let mut accepted = 0;
    for case in 0..8000 {
        let mut pick = |n: usize| (next() % n as u64) as usize;
        let mut rows = Vec::new();
        for _ in 0..pick(4) {
            let mut members = Vec::new();
            if pick(4) != 0 {
                members.push(format!("\"id\":{}", pick(1000)));
            }
            for _ in 0..pick(5) {
                members.push(format!(
                    "{}\"{}\"{}:{}{}",
                    ws[pick(ws.len())],
                    keys[pick(keys.len())],
                    ws[pick(ws.len())],
                    ws[pick(ws.len())],
                    values[pick(values.len())]
                ));
            }
            rows.push(format!("{{{}}}", members.join(",")));
        }
        let operation = ["insert", "upsert", "delete", "merge"][pick(4)];
        let mode = ["async", "sync", "later"][pick(3)];
        let (info, body) = if case % 2 == 0 {
            let info = info(
                "application/x-ndjson",
                &[("operation", operation), ("request_mode", mode)],
            );
            (info, rows.join(["\n", "\r\n", "\n\n"][pick(3)]))
        } else {
            let mut fields = vec![format!("\"data\":[{}]", rows.join(","))];
            if pick(2) == 0 {
                fields.push(format!("\"operation\":\"{operation}\""));
            }
            if pick(2) == 0 {
                fields.push(format!("\"request_mode\":\"{mode}\""));
            }
            if pick(4) == 0 {
                fields.push("\"table\":\"t\"".into());
            }
            let at = pick(fields.len());
            let first = fields.remove(at);
            fields.push(first);
            (
                info("application/json", &[]),
                format!("{{{}}}", fields.join(",")),
            )
        };
        if agree(&info, &body) {
            accepted += 1;
        }
    }
    // Enough of the generated bodies must take the fast path for this test to mean anything.
    assert!(accepted > 400, "only {accepted} bodies took the fast path");
}

/// The word-at-a-time search stops exactly where the byte-by-byte one does.
#[test]
fn special_byte_matches_a_plain_search() {
    let mut seed = 0x1234_5678_9abc_def1u64;
    let alphabet = b"ab\"\\\x01\x1f \x7f\x80\xff0~";
    for _ in 0..5000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 40) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|i| {
                let pick = (seed >> (i % 50)) as usize;
                if pick.is_multiple_of(5) {
                    alphabet[pick % alphabet.len()]
                } else {
                    b'a' + (pick % 26) as u8
                }
            })
            .collect();
        for start in 0..=len {
            let plain = bytes[start..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .map(|n| start + n);
            assert_eq!(
                fast::special_byte(&bytes, start),
                plain,
                "{bytes:?} from {start}"
            );
        }
    }
}

/// Keys are matched in place against the predicted column name: a key that only starts like
/// the name, or runs past the end of the body, is not taken for it.
#[test]
fn predicted_keys_match_exactly() {
    let info = info("application/x-ndjson", &[]);
    for body in [
        "{\"id\":1,\"i16\":2,\"f\":3}",
        "{\"id\":1,\"i1\":2}",
        "{\"id\":1,\"i166\":2}",
        "{\"id\":1,\"i16",
        "{\"id\":1,\"f64\":2.5,\"f\":1}",
        "{\"id\":1,\"tz\":\"2024-01-01 00:00:00Z\",\"bin\":\"AAEC\",\"i32\":7}",
        "{\"id\":1,\"i32\":7,\"f64\":1e5,\"tz\":0}",
    ] {
        agree(&info, body);
    }
    assert!(agree(&info, "{\"id\":1,\"i32\":7,\"f64\":1e5,\"tz\":0}"));
}
