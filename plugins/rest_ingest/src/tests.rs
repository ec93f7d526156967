use moonlink_sdk::rest::{RequestInfo, RequestMode, RestDecoder};
use moonlink_sdk::{ColumnValues, DataErrorKind, DataType, DecimalType, Field, TableSchema};

use crate::decode;
use moonlink_sdk::text::{parse_date, parse_decimal, parse_timestamp, parse_uuid};

fn field(name: &str, data_type: DataType, nullable: bool) -> Field {
    Field {
        nullable,
        ..Field::nullable(name, data_type)
    }
}

fn info(fields: Vec<Field>) -> RequestInfo {
    RequestInfo {
        table: "demo.t".into(),
        schema: TableSchema {
            fields,
            primary_key: vec![],
        },
        content_type: Some("application/json".into()),
        parameters: vec![],
    }
}

fn all_types() -> RequestInfo {
    info(vec![
        field("i16", DataType::Int16, true),
        field("i32", DataType::Int32, false),
        field("i64", DataType::Int64, true),
        field("f32", DataType::Float32, true),
        field("f64", DataType::Float64, true),
        field("b", DataType::Boolean, true),
        field("s", DataType::Utf8, true),
        field("d", DataType::Date32, true),
        field(
            "dec",
            DataType::Decimal(DecimalType {
                precision: 10,
                scale: 2,
            }),
            true,
        ),
        field("ts", DataType::Timestamp, true),
        field("tz", DataType::Timestamptz, true),
        field("bin", DataType::Binary, true),
        field("u", DataType::Uuid, true),
    ])
}

fn column<'a>(req: &'a moonlink_sdk::rest::IngestRequest, name: &str) -> &'a moonlink_sdk::Column {
    req.batch.columns.iter().find(|c| c.name == name).unwrap()
}

#[test]
fn decodes_every_type() {
    let body = br#"{"operation":"insert","request_mode":"sync","data":[
        {"i16":-32768,"i32":2147483647,"i64":-9223372036854775808,"f32":1.5,"f64":-2,
         "b":true,"s":"h\u00e9llo","d":"1969-12-31","dec":"-12345678.90","ts":"2024-02-29 23:59:59.123456",
         "tz":"2024-01-01T02:00:00+02:00","bin":"AAEC","u":"123e4567-e89b-12d3-a456-426614174000"},
        {"i32":1}]}"#;
    let req = decode(&all_types(), body).unwrap();
    assert!(matches!(req.request_mode, RequestMode::Sync));
    assert_eq!(req.batch.operations.len(), 2);
    assert!(matches!(&column(&req, "i16").values, ColumnValues::Int16(v) if v[0] == -32768));
    assert!(matches!(&column(&req, "i64").values, ColumnValues::Int64(v) if v[0] == i64::MIN));
    assert!(matches!(&column(&req, "f64").values, ColumnValues::Float64(v) if v[0] == -2.0));
    assert_eq!(column(&req, "s").values.strings().unwrap()[0], "héllo");
    assert!(matches!(&column(&req, "d").values, ColumnValues::Int32(v) if v[0] == -1));
    assert!(
        matches!(&column(&req, "dec").values, ColumnValues::Int128(v) if v[0].lo as i64 == -1234567890 && v[0].hi == -1)
    );
    assert!(
        matches!(&column(&req, "tz").values, ColumnValues::Int64(v) if v[0] == 1_704_067_200_000_000)
    );
    assert!(
        matches!(&column(&req, "bin").values, ColumnValues::Binary(v) if v[0] == vec![0, 1, 2])
    );
    assert!(
        matches!(&column(&req, "u").values, ColumnValues::Binary(v) if v[0][0] == 0x12 && v[0][15] == 0x00)
    );
    // Row 1 left everything but i32 out: nulls, marked in validity.
    assert_eq!(
        column(&req, "s").validity.as_ref().unwrap(),
        &vec![true, false]
    );
    assert!(column(&req, "i32").validity.is_none());
}

#[test]
fn single_row_object_and_defaults() {
    let req = decode(&all_types(), br#"{"data":{"i32":5}}"#).unwrap();
    assert!(matches!(req.request_mode, RequestMode::Async));
    assert_eq!(req.batch.operations.len(), 1);
    // The exported entry point is the SDK's RestDecoder trait.
    let body = br#"{"data":[{"i32":5},{"i32":6}]}"#.to_vec();
    let req = <crate::RestIngest as RestDecoder>::decode(all_types(), body).unwrap();
    assert_eq!(req.batch.num_rows(), 2);
}

#[test]
fn ndjson_takes_operation_and_mode_from_the_query() {
    let mut i = all_types();
    i.content_type = Some("application/x-ndjson".into());
    i.parameters = vec![("request_mode".into(), "sync".into())];
    let req = decode(&i, b"{\"i32\":1}\n\n{\"i32\":2}\n").unwrap();
    assert_eq!(req.batch.operations.len(), 2);
    assert!(matches!(req.request_mode, RequestMode::Sync));
    let err = decode(&i, b"{\"i32\":1}\n{\"i32\":\n").unwrap_err();
    assert!(matches!(err.kind, DataErrorKind::Malformed));
    assert!(err.message.contains("line 2"), "{}", err.message);
}

#[test]
fn errors_name_the_row_and_column() {
    /// (body, expected kind, expected row, expected column)
    type Case<'a> = (&'a [u8], DataErrorKind, Option<u32>, Option<&'a str>);
    let cases: &[Case] = &[
        (b"{not json", DataErrorKind::Malformed, None, None),
        (
            br#"{"operation":"merge","data":[]}"#,
            DataErrorKind::InvalidRequest,
            None,
            None,
        ),
        (
            br#"{"request_mode":"later","data":[]}"#,
            DataErrorKind::InvalidRequest,
            None,
            None,
        ),
        (
            br#"{"operation":"insert"}"#,
            DataErrorKind::InvalidRequest,
            None,
            None,
        ),
        (br#"[1,2]"#, DataErrorKind::InvalidRequest, None, None),
        (
            br#"{"data":[{"i32":1},{"i32":"abc"}]}"#,
            DataErrorKind::InvalidValue,
            Some(1),
            Some("i32"),
        ),
        (
            br#"{"data":[{"i32":1},{"i32":2},{"i32":null}]}"#,
            DataErrorKind::InvalidValue,
            Some(2),
            Some("i32"),
        ),
        (
            br#"{"data":[{"i64":1}]}"#,
            DataErrorKind::InvalidValue,
            Some(0),
            Some("i32"),
        ),
        (
            br#"{"data":[{"i32":1,"nope":1}]}"#,
            DataErrorKind::InvalidValue,
            Some(0),
            Some("nope"),
        ),
        (
            br#"{"data":[{"i32":1.5}]}"#,
            DataErrorKind::InvalidValue,
            Some(0),
            Some("i32"),
        ),
        (
            br#"{"data":[{"i32":3000000000}]}"#,
            DataErrorKind::InvalidValue,
            Some(0),
            Some("i32"),
        ),
        (
            br#"{"data":[{"i32":1,"i16":40000}]}"#,
            DataErrorKind::InvalidValue,
            Some(0),
            Some("i16"),
        ),
        (
            br#"{"data":[{"i32":1,"dec":"1.234"}]}"#,
            DataErrorKind::InvalidValue,
            Some(0),
            Some("dec"),
        ),
        (
            br#"{"data":[{"i32":1,"d":"2023-02-30"}]}"#,
            DataErrorKind::InvalidValue,
            Some(0),
            Some("d"),
        ),
        (
            br#"{"data":[{"i32":1,"bin":"***"}]}"#,
            DataErrorKind::InvalidValue,
            Some(0),
            Some("bin"),
        ),
        (
            br#"{"data":[{"i32":1,"u":"not-a-uuid"}]}"#,
            DataErrorKind::InvalidValue,
            Some(0),
            Some("u"),
        ),
        (
            br#"{"data":[{"i32":1,"b":"true"}]}"#,
            DataErrorKind::InvalidValue,
            Some(0),
            Some("b"),
        ),
        (
            br#"{"data":[{"i32":1,"ts":"2024-01-01T00:00:00+01:00"}]}"#,
            DataErrorKind::InvalidValue,
            Some(0),
            Some("ts"),
        ),
        (
            br#"{"data":[{"i32":1},7]}"#,
            DataErrorKind::InvalidValue,
            Some(1),
            None,
        ),
    ];
    for (body, kind, row, column) in cases {
        let err = decode(&all_types(), body).unwrap_err();
        let text = String::from_utf8_lossy(body);
        assert_eq!(
            std::mem::discriminant(&err.kind),
            std::mem::discriminant(kind),
            "{text}: {}",
            err.message
        );
        assert_eq!(err.row, *row, "{text}");
        assert_eq!(err.column.as_deref(), *column, "{text}");
    }
}

#[test]
fn value_parsers_are_exact() {
    assert_eq!(parse_date("1970-01-01").unwrap(), 0);
    assert_eq!(parse_date("2000-03-01").unwrap(), 11017);
    assert_eq!(parse_date("1900-01-01").unwrap(), -25567);
    assert!(parse_date("2023-13-01").is_err());
    assert_eq!(
        parse_timestamp("1970-01-01 00:00:01", false).unwrap(),
        1_000_000
    );
    assert_eq!(
        parse_timestamp("1969-12-31T23:59:59.999999", false).unwrap(),
        -1
    );
    assert_eq!(parse_timestamp("1970-01-01T00:00:00Z", true).unwrap(), 0);
    assert_eq!(
        parse_timestamp("1970-01-01T01:00:00+01:00", true).unwrap(),
        0
    );
    assert_eq!(
        parse_timestamp("1970-01-01T00:00:00-0130", true).unwrap(),
        5_400_000_000
    );
    assert!(parse_timestamp("1970-01-01T00:00:00.0000001", false).is_err());
    assert_eq!(parse_decimal("12.5", 5, 2).unwrap(), 1250);
    assert_eq!(parse_decimal("-0.01", 5, 2).unwrap(), -1);
    assert_eq!(parse_decimal("1e2", 5, 2).unwrap(), 10000);
    assert_eq!(parse_decimal("1.50", 5, 1).unwrap(), 15);
    assert!(parse_decimal("1234.5", 5, 2).is_err());
    assert!(parse_decimal("1.2.3", 5, 2).is_err());
    assert_eq!(
        parse_decimal("99999999999999999999999999999999999999", 38, 0).unwrap(),
        99999999999999999999999999999999999999
    );
    assert_eq!(
        parse_uuid("00000000-0000-0000-0000-0000000000FF").unwrap()[15],
        255
    );
}

/// The error of decoding `body` against `all_types()` plus a time column `t` and a
/// decimal(38,10) column `big`.
fn error_of(body: &str) -> moonlink_sdk::DataError {
    let mut i = all_types();
    i.schema.fields.push(field("t", DataType::Time, true));
    i.schema.fields.push(field(
        "big",
        DataType::Decimal(DecimalType {
            precision: 38,
            scale: 10,
        }),
        true,
    ));
    match decode(&i, body.as_bytes()) {
        Ok(_) => panic!("accepted: {body}"),
        Err(e) => e,
    }
}

#[test]
fn duplicate_keys_are_refused_naming_the_key() {
    for body in [
        r#"{"data":{"i32":1,"i32":2}}"#,
        r#"{"data":[{"i32":1},{"i32":1,"s":"a","s":"b"}]}"#,
    ] {
        let err = error_of(body);
        assert!(matches!(err.kind, DataErrorKind::InvalidValue), "{body}");
        assert!(err.message.contains("duplicate key"), "{}", err.message);
        assert!(err.column.is_some(), "{body}");
    }
    let err = error_of(r#"{"data":[{"i32":1}],"data":[{"i32":2}]}"#);
    assert!(matches!(err.kind, DataErrorKind::InvalidRequest));
    assert!(
        err.message.contains("duplicate field \"data\""),
        "{}",
        err.message
    );
    let err = error_of(r#"{"operation":"delete","operation":"insert","data":[]}"#);
    assert!(err.message.contains("\"operation\""), "{}", err.message);
    // NDJSON rows too.
    let mut i = all_types();
    i.content_type = Some("application/x-ndjson".into());
    let err = decode(&i, b"{\"i32\":1}\n{\"i32\":1,\"i32\":1}\n").unwrap_err();
    assert_eq!((err.row, err.column.as_deref()), (Some(1), Some("i32")));
}

#[test]
fn json_numbers_follow_the_column_type() {
    // (body, column, words the message must contain)
    let cases = [
        (r#"{"data":{"i32":1,"f32":1e39}}"#, "f32", "float32"),
        (r#"{"data":{"i32":1,"f32":-1e39}}"#, "f32", "float32"),
        (r#"{"data":{"i32":1,"f64":1e309}}"#, "f64", "float64"),
        (r#"{"data":{"i32":1,"t":-5}}"#, "t", "out of range"),
        (
            r#"{"data":{"i32":1,"t":1000000000000000}}"#,
            "t",
            "out of range",
        ),
        (r#"{"data":{"i32":1,"t":"24:00:00"}}"#, "t", "24:00:00"),
        (
            r#"{"data":{"i32":1,"i64":9223372036854775808}}"#,
            "i64",
            "out of range",
        ),
        (r#"{"data":{"i32":1,"d":2147483648}}"#, "d", "date"),
        (r#"{"data":{"i32":1,"dec":1e-5}}"#, "dec", "decimal(10,2)"),
        (
            r#"{"data":{"i32":1,"dec":1e-999999999}}"#,
            "dec",
            "decimal(10,2)",
        ),
        (
            r#"{"data":{"i32":1,"dec":123456789}}"#,
            "dec",
            "decimal(10,2)",
        ),
        (
            r#"{"data":{"i32":1,"u":"0ééé0-0000-0000-0000-000000000000"}}"#,
            "u",
            "UUID",
        ),
        (
            r#"{"data":{"i32":1,"ts":"2026-01-0é 00:00:00"}}"#,
            "ts",
            "timestamp",
        ),
    ];
    for (body, column, words) in cases {
        let err = error_of(body);
        assert!(
            matches!(err.kind, DataErrorKind::InvalidValue),
            "{body}: {}",
            err.message
        );
        assert_eq!(err.column.as_deref(), Some(column), "{body}");
        assert!(err.message.contains(words), "{body}: {}", err.message);
    }
}

#[test]
fn decimal_numbers_are_read_from_the_literal() {
    let mut i = all_types();
    i.schema.fields.push(field(
        "big",
        DataType::Decimal(DecimalType {
            precision: 38,
            scale: 10,
        }),
        true,
    ));
    // 20 significant digits: an f64 keeps only about 17 of them.
    let req = decode(
        &i,
        br#"{"data":[{"i32":1,"big":1234567890.1234567891},{"i32":2,"big":-5e-10,"dec":1E3}]}"#,
    )
    .unwrap();
    let ColumnValues::Int128(v) = &column(&req, "big").values else {
        panic!("not decimal")
    };
    let unscaled = |x: &moonlink_sdk::Int128| ((x.hi as i128) << 64) | x.lo as i128;
    assert_eq!(unscaled(&v[0]), 12_345_678_901_234_567_891);
    assert_eq!(unscaled(&v[1]), -5);
    let ColumnValues::Int128(d) = &column(&req, "dec").values else {
        panic!("not decimal")
    };
    assert_eq!(unscaled(&d[1]), 100_000);
}
