//! Postgres types to moonlink column types, and Postgres's text output to typed values.
//!
//! Values arrive in text form from both `pgoutput` (protocol version 1) and `COPY ... TO
//! STDOUT`, with the session's formats fixed at connect time (ISO dates, UTC, hex bytea), so
//! one parser per type serves the initial copy and the stream.

use moonlink_sdk::text::{
    parse_date, parse_decimal, parse_float, parse_time, parse_timestamp, parse_uuid,
};
use std::borrow::Cow;

use moonlink_sdk::{element_type_of, DataType, DecimalType, Value};

/// How a column's text values are parsed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decoder {
    Bool,
    Int,
    Float,
    Decimal { precision: u8, scale: u8 },
    Text,
    Bytea,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Uuid,
}

/// The moonlink type and decoder of a Postgres column, or `Err(type name)` if unsupported.
///
/// `numeric(p,s)` with p <= 38 becomes `decimal(p,s)`; an unconstrained `numeric` (or one
/// wider than Iceberg's 38 digits) is mirrored exactly as text. json/jsonb are text.
pub fn map_type(type_oid: u32, type_modifier: i32) -> Option<(DataType, Decoder)> {
    Some(match type_oid {
        16 => (DataType::Boolean, Decoder::Bool),
        21 => (DataType::Int16, Decoder::Int),
        23 => (DataType::Int32, Decoder::Int),
        20 => (DataType::Int64, Decoder::Int),
        26 => (DataType::Int64, Decoder::Int), // oid
        700 => (DataType::Float32, Decoder::Float),
        701 => (DataType::Float64, Decoder::Float),
        1700 => {
            let typmod = type_modifier - 4;
            let precision = (typmod >> 16) & 0xffff;
            let scale = typmod & 0xffff;
            if type_modifier >= 4 && (1..=38).contains(&precision) && scale <= precision {
                let (precision, scale) = (precision as u8, scale as u8);
                (
                    DataType::Decimal(DecimalType { precision, scale }),
                    Decoder::Decimal { precision, scale },
                )
            } else {
                (DataType::Utf8, Decoder::Text)
            }
        }
        // text, varchar, bpchar, "char", name, json, jsonb, xml, citext-like domains over text
        25 | 1043 | 1042 | 18 | 19 | 114 | 3802 | 142 => (DataType::Utf8, Decoder::Text),
        17 => (DataType::Binary, Decoder::Bytea),
        1082 => (DataType::Date32, Decoder::Date),
        1083 => (DataType::Time, Decoder::Time),
        1114 => (DataType::Timestamp, Decoder::Timestamp),
        1184 => (DataType::Timestamptz, Decoder::TimestampTz),
        2950 => (DataType::Uuid, Decoder::Uuid),
        _ => return None,
    })
}

/// How one column's text is parsed: a scalar, or a one-dimensional array of scalars.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColumnDecoder {
    pub scalar: Decoder,
    pub array: bool,
}

/// The element type of a Postgres array type.
pub fn array_element(type_oid: u32) -> Option<u32> {
    Some(match type_oid {
        1000 => 16,
        1005 => 21,
        1007 => 23,
        1016 => 20,
        1021 => 700,
        1022 => 701,
        1231 => 1700,
        1009 => 25,
        1015 => 1043,
        1014 => 1042,
        1001 => 17,
        1182 => 1082,
        1183 => 1083,
        1115 => 1114,
        1185 => 1184,
        2951 => 2950,
        199 => 114,
        3807 => 3802,
        _ => return None,
    })
}

/// [`map_type`] for any column: arrays of supported types become lists of them (the array
/// type's modifier is its element's, e.g. `numeric(10,2)[]`).
pub fn map_column_type(type_oid: u32, type_modifier: i32) -> Option<(DataType, ColumnDecoder)> {
    match array_element(type_oid) {
        Some(element) => {
            let (data_type, scalar) = map_type(element, type_modifier)?;
            Some((
                DataType::Array(element_type_of(&data_type)?),
                ColumnDecoder {
                    scalar,
                    array: true,
                },
            ))
        }
        None => map_type(type_oid, type_modifier).map(|(data_type, scalar)| {
            (
                data_type,
                ColumnDecoder {
                    scalar,
                    array: false,
                },
            )
        }),
    }
}

/// Splits a one-dimensional array literal (`{1,NULL,"a b","q\"x"}`) into element texts.
pub fn parse_array(text: &str) -> Result<Vec<Option<String>>, String> {
    let bad = |why: &str| format!("invalid array '{text}': {why}");
    // A non-default lower bound prefix (`[0:1]={...}`) is dropped: lists start at 0.
    let body = match text.find('=') {
        Some(eq) if text.starts_with('[') => &text[eq + 1..],
        _ => text,
    };
    let inner = body
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or_else(|| bad("expected {...}"))?;
    let mut items = Vec::new();
    if inner.is_empty() {
        return Ok(items);
    }
    let mut chars = inner.chars().peekable();
    loop {
        let mut item = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => item.push(chars.next().ok_or_else(|| bad("dangling escape"))?),
                    Some('"') => break,
                    Some(c) => item.push(c),
                    None => return Err(bad("unterminated quote")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '{' {
                    return Err(bad("multi-dimensional arrays are not supported"));
                }
                item.push(c);
                chars.next();
            }
        }
        items.push(if !quoted && item == "NULL" {
            None
        } else {
            Some(item)
        });
        match chars.next() {
            Some(',') => continue,
            None => return Ok(items),
            Some(_) => return Err(bad("expected ',' between elements")),
        }
    }
}

/// Parses a column's text: a scalar, or an array of them.
pub fn decode_column(decoder: ColumnDecoder, text: &str) -> Result<Decoded, String> {
    if !decoder.array {
        return decode(decoder.scalar, text);
    }
    let values = parse_array(text)?
        .into_iter()
        .map(|item| match item {
            None => Ok(Value::Null),
            Some(t) => match decode(decoder.scalar, &t)? {
                Decoded::Value(v) => Ok(v),
                Decoded::Unrepresentable(_) => Ok(Value::Null),
            },
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Decoded::Value(Value::List(values)))
}

/// What a value that moonlink cannot represent exactly becomes (see [`decode`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Value(Value),
    /// `NaN`, `infinity`, BC dates, `time '24:00:00'` and the like: stored as null, reported
    /// once per column.
    Unrepresentable(String),
}

/// Parses one value of Postgres's text output.
pub fn decode(decoder: Decoder, text: &str) -> Result<Decoded, String> {
    let special = |t: &str| {
        matches!(
            t,
            "NaN" | "infinity" | "-infinity" | "Infinity" | "-Infinity"
        )
    };
    Ok(Decoded::Value(match decoder {
        Decoder::Bool => match text {
            "t" | "true" => Value::Bool(true),
            "f" | "false" => Value::Bool(false),
            _ => return Err(format!("invalid boolean '{text}'")),
        },
        Decoder::Int => Value::Int(
            text.parse()
                .map_err(|_| format!("invalid integer '{text}'"))?,
        ),
        // NaN and ±Infinity are kept (floats have them); float4 range is checked on build.
        Decoder::Float => Value::Float(parse_float(text, false)?),
        Decoder::Decimal { precision, scale } => {
            if special(text) {
                return Ok(Decoded::Unrepresentable(text.to_string()));
            }
            Value::Int128(parse_decimal(text, precision, scale)?)
        }
        Decoder::Text => Value::Str(text.to_string()),
        Decoder::Bytea => {
            let hex = text
                .strip_prefix("\\x")
                .ok_or_else(|| format!("bytea value is not in hex form: '{text}'"))?;
            if hex.len() % 2 != 0 {
                return Err("bytea hex value has an odd length".into());
            }
            // Bytes, not string slices: a multibyte character must not split a slice.
            let nibble = |b: u8| (b as char).to_digit(16);
            let bytes = hex
                .as_bytes()
                .chunks_exact(2)
                .map(|p| Some((nibble(p[0])? * 16 + nibble(p[1])?) as u8))
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| "invalid bytea hex value".to_string())?;
            Value::Bytes(bytes)
        }
        Decoder::Date => {
            if special(text) || text.ends_with(" BC") {
                return Ok(Decoded::Unrepresentable(text.to_string()));
            }
            Value::Int(parse_date(text)? as i64)
        }
        Decoder::Time => {
            // Postgres allows 24:00:00; Iceberg's time ends at 23:59:59.999999.
            if text == "24:00:00" {
                return Ok(Decoded::Unrepresentable(text.to_string()));
            }
            Value::Int(parse_time(text)?)
        }
        Decoder::Timestamp | Decoder::TimestampTz => {
            if special(text) || text.ends_with(" BC") {
                return Ok(Decoded::Unrepresentable(text.to_string()));
            }
            let with_zone = decoder == Decoder::TimestampTz;
            Value::Int(parse_timestamp(text, with_zone)?)
        }
        Decoder::Uuid => Value::Bytes(parse_uuid(text)?.to_vec()),
    }))
}

/// Undoes COPY's text-format escaping of one field (`\N` is handled by the caller).
/// Borrows when there is nothing to undo (the common case).
pub fn unescape_copy(field: &[u8]) -> Result<Cow<'_, str>, String> {
    if !field.contains(&b'\\') {
        return std::str::from_utf8(field)
            .map(Cow::Borrowed)
            .map_err(|_| "a value is not UTF-8".to_string());
    }
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' || i + 1 == field.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let next = field[i + 1];
        i += 2;
        match next {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut value = (next - b'0') as u32;
                let mut digits = 1;
                while digits < 3 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                    value = value * 8 + (field[i] - b'0') as u32;
                    i += 1;
                    digits += 1;
                }
                out.push(value as u8);
            }
            b'x' => {
                let mut value = 0u32;
                let mut digits = 0;
                while digits < 2 && i < field.len() && field[i].is_ascii_hexdigit() {
                    value = value * 16 + (field[i] as char).to_digit(16).unwrap();
                    i += 1;
                    digits += 1;
                }
                out.push(value as u8);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| "a value is not UTF-8".to_string())
}

/// Splits one COPY text row into fields (`None` for `\N`), unescaped.
pub fn split_copy_row(row: &[u8]) -> Result<Vec<Option<Cow<'_, str>>>, String> {
    let row = row.strip_suffix(b"\n").unwrap_or(row);
    row.split(|b| *b == b'\t')
        .map(|field| {
            if field == b"\\N" {
                Ok(None)
            } else {
                unescape_copy(field).map(Some)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use moonlink_sdk::ElementType;

    fn value(d: Decoder, t: &str) -> Value {
        match decode(d, t).unwrap() {
            Decoded::Value(v) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn maps_the_documented_types() {
        let ty = |oid, typmod| map_type(oid, typmod).map(|(t, _)| t);
        assert!(matches!(ty(20, -1), Some(DataType::Int64)));
        let numeric_10_2 = ((10 << 16) | 2) + 4;
        assert!(matches!(
            ty(1700, numeric_10_2),
            Some(DataType::Decimal(DecimalType {
                precision: 10,
                scale: 2
            }))
        ));
        assert!(matches!(ty(1700, -1), Some(DataType::Utf8)));
        assert!(matches!(ty(3802, -1), Some(DataType::Utf8)));
        assert!(matches!(ty(1083, -1), Some(DataType::Time)));
        assert!(ty(600, -1).is_none()); // point
    }

    #[test]
    fn parses_postgres_text_output() {
        assert_eq!(value(Decoder::Bool, "t"), Value::Bool(true));
        assert_eq!(value(Decoder::Int, "-32768"), Value::Int(-32768));
        assert_eq!(
            value(
                Decoder::Decimal {
                    precision: 10,
                    scale: 2
                },
                "-12.50"
            ),
            Value::Int128(-1250)
        );
        assert_eq!(value(Decoder::Bytea, "\\x00ff"), Value::Bytes(vec![0, 255]));
        assert!(decode(Decoder::Bytea, "\\x0é0").is_err()); // sliced mid-character before
        assert_eq!(value(Decoder::Date, "2000-01-01"), Value::Int(10957));
        assert_eq!(value(Decoder::Time, "00:00:01.5"), Value::Int(1_500_000));
        assert_eq!(
            value(Decoder::TimestampTz, "1970-01-01 01:00:00+01"),
            Value::Int(0)
        );
        assert_eq!(
            decode(Decoder::Timestamp, "infinity").unwrap(),
            Decoded::Unrepresentable("infinity".into())
        );
        assert!(decode(Decoder::Int, "x").is_err());
    }

    #[test]
    fn time_24_00_is_unrepresentable_not_an_error() {
        // Postgres's end-of-day time has no Iceberg form: null (logged), the source goes on.
        assert_eq!(
            decode(Decoder::Time, "24:00:00").unwrap(),
            Decoded::Unrepresentable("24:00:00".into())
        );
        let time_array = map_column_type(1183, -1).unwrap().1;
        assert_eq!(
            decode_column(time_array, "{00:00:01,24:00:00}").unwrap(),
            Decoded::Value(Value::List(vec![Value::Int(1_000_000), Value::Null]))
        );
        assert_eq!(
            value(Decoder::Time, "23:59:59.999999"),
            Value::Int(86_399_999_999)
        );
    }

    #[test]
    fn arrays_become_lists() {
        assert_eq!(
            parse_array(r#"{1,NULL,"a b","q\"x",NULL}"#).unwrap(),
            vec![
                Some("1".into()),
                None,
                Some("a b".into()),
                Some("q\"x".into()),
                None
            ]
        );
        assert_eq!(parse_array("{}").unwrap(), Vec::<Option<String>>::new());
        assert!(parse_array("{{1,2},{3,4}}").is_err());
        let int_array = map_column_type(1007, -1).unwrap().1;
        assert_eq!(
            decode_column(int_array, "{1,NULL,3}").unwrap(),
            Decoded::Value(Value::List(vec![Value::Int(1), Value::Null, Value::Int(3)]))
        );
        assert!(matches!(
            map_column_type(1007, -1).unwrap().0,
            DataType::Array(ElementType::Int32)
        ));
    }

    #[test]
    fn copy_rows_unescape() {
        assert_eq!(
            split_copy_row(b"1\t\\N\ta\\tb\\\\c\\n\n").unwrap(),
            vec![Some("1".into()), None, Some(Cow::Owned("a\tb\\c\n".into()))]
        );
    }
}
