//! Binary COPY decoding against hand-built messages in Postgres's binary forms.

use super::*;
use crate::tables::PgColumn;
use moonlink_sdk::ColumnValues;

fn column(name: &str, type_oid: u32, type_modifier: i32) -> PgColumn {
    PgColumn {
        name: name.into(),
        type_oid,
        type_modifier,
        type_name: format!("oid {type_oid}"),
    }
}

fn table(columns: Vec<PgColumn>) -> MirroredTable {
    let key = vec![columns[0].name.clone()];
    MirroredTable::new("public.t".into(), "public.t".into(), columns, key).expect("table")
}

/// A numeric's binary form: (digits in base 10000, weight, sign, dscale).
fn numeric(digits: &[u16], weight: i16, sign: u16, dscale: u16) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend((digits.len() as u16).to_be_bytes());
    out.extend(weight.to_be_bytes());
    out.extend(sign.to_be_bytes());
    out.extend(dscale.to_be_bytes());
    for d in digits {
        out.extend(d.to_be_bytes());
    }
    out
}

fn unscaled(data: &[u8], precision: u8, scale: u8) -> Result<i128, String> {
    numeric_unscaled(data, precision, scale).map(|r| r.unwrap_or(i128::MIN))
}

#[test]
fn numerics_become_unscaled_integers_at_the_column_scale() {
    // 12.50 as numeric(12,2): digits [12, 5000], weight 0.
    assert_eq!(unscaled(&numeric(&[12, 5000], 0, 0, 2), 12, 2), Ok(1250));
    assert_eq!(
        unscaled(&numeric(&[12, 5000], 0, 0x4000, 2), 12, 2),
        Ok(-1250)
    );
    // 10000 (one digit, weight 1) at scale 3.
    assert_eq!(unscaled(&numeric(&[1], 1, 0, 0), 10, 3), Ok(10_000_000));
    // 0.0005 at scale 4: digit 5 at weight -1.
    assert_eq!(unscaled(&numeric(&[5], -1, 0, 4), 10, 4), Ok(5));
    // 0.05 at scale 2: digit 500 at weight -1, whose last two digits are below the scale.
    assert_eq!(unscaled(&numeric(&[500], -1, 0, 2), 5, 2), Ok(5));
    assert!(unscaled(&numeric(&[501], -1, 0, 3), 5, 2).is_err());
    assert_eq!(unscaled(&numeric(&[], 0, 0, 2), 5, 2), Ok(0));
    // 38 nines at scale 37: 9.999...; the last group is padded with zeros beyond the scale.
    let mut digits = vec![9];
    digits.extend([9999; 9]);
    digits.push(9000);
    let max = 10i128.pow(38) - 1;
    assert_eq!(unscaled(&numeric(&digits, 0, 0, 37), 38, 37), Ok(max));
    assert_eq!(unscaled(&numeric(&digits, 0, 0x4000, 37), 38, 37), Ok(-max));
    // Beyond the precision, and special values.
    assert!(unscaled(&numeric(&[1], 1, 0, 0), 4, 0).is_err());
    assert_eq!(
        numeric_unscaled(&numeric(&[], 0, 0xC000, 0), 5, 2),
        Ok(Err("NaN"))
    );
    assert_eq!(
        numeric_unscaled(&numeric(&[], 0, 0xF000, 0), 5, 2),
        Ok(Err("-Infinity"))
    );
    assert!(numeric_unscaled(&numeric(&[10000], 0, 0, 0), 5, 0).is_err());
    assert!(numeric_unscaled(&[0, 1, 0, 0], 5, 0).is_err());
}

fn message(header: bool, rows: &[Vec<Option<Vec<u8>>>], trailer: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if header {
        out.extend(SIGNATURE);
        out.extend(0i32.to_be_bytes());
        out.extend(0i32.to_be_bytes());
    }
    for row in rows {
        out.extend((row.len() as i16).to_be_bytes());
        for field in row {
            match field {
                None => out.extend((-1i32).to_be_bytes()),
                Some(data) => {
                    out.extend((data.len() as i32).to_be_bytes());
                    out.extend(data);
                }
            }
        }
    }
    if trailer {
        out.extend((-1i16).to_be_bytes());
    }
    out
}

fn array(element_oid: u32, items: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(1i32.to_be_bytes());
    out.extend(0i32.to_be_bytes());
    out.extend(element_oid.to_be_bytes());
    out.extend((items.len() as i32).to_be_bytes());
    out.extend(1i32.to_be_bytes());
    for item in items {
        match item {
            None => out.extend((-1i32).to_be_bytes()),
            Some(d) => {
                out.extend((d.len() as i32).to_be_bytes());
                out.extend(d);
            }
        }
    }
    out
}

#[test]
fn rows_decode_into_typed_columns() {
    let t = table(vec![
        column("id", 20, -1),
        column("name", 25, -1),
        column("at", 1184, -1),
        column("day", 1082, -1),
        column("doc", 3802, -1),
        column("tags", 1007, -1),
        column("x", 142, -1),
    ]);
    let plan = plan(&t).expect("plan");
    assert_eq!(
        plan.select_list,
        r#""id", "name", "at", "day", "doc", "tags", "x"::text"#
    );
    let mut batch = BinaryBatch::new(&plan, Mode::Keyed);
    let mut header = true;
    let mut unrepresentable = Vec::new();
    let row1 = vec![
        Some(7i64.to_be_bytes().to_vec()),
        Some(b"ada".to_vec()),
        Some(0i64.to_be_bytes().to_vec()),
        Some(i32::MAX.to_be_bytes().to_vec()),
        Some(b"\x01{\"a\": 1}".to_vec()),
        Some(array(23, &[Some(1i32.to_be_bytes().to_vec()), None])),
        Some(b"<a/>".to_vec()),
    ];
    let row2 = vec![
        Some(8i64.to_be_bytes().to_vec()),
        None,
        Some(i64::MIN.to_be_bytes().to_vec()),
        Some((-1i32).to_be_bytes().to_vec()),
        None,
        Some(array(23, &[])),
        None,
    ];
    let n = batch
        .decode(
            &message(true, &[row1], false),
            &mut header,
            &mut unrepresentable,
        )
        .expect("row 1");
    assert_eq!((n, header), (1, false));
    let n = batch
        .decode(
            &message(false, &[row2], true),
            &mut header,
            &mut unrepresentable,
        )
        .expect("row 2 and trailer");
    assert_eq!(n, 1);
    assert_eq!(unrepresentable, vec![(3, "infinity"), (2, "-infinity")]);
    let out = batch.finish("public.t");
    assert_eq!(out.operations, vec![Operation::Upsert; 2]);
    assert!(matches!(&out.columns[0].values, ColumnValues::Int64(v) if v == &[7, 8]));
    assert_eq!(out.columns[1].strings(), Some(vec![Some("ada"), None]));
    assert!(matches!(&out.columns[2].values, ColumnValues::Int64(v) if v[0] == PG_EPOCH_MICROS));
    assert_eq!(out.columns[2].validity, Some(vec![true, false]));
    assert!(matches!(&out.columns[3].values, ColumnValues::Int32(v) if v[1] == 10_956));
    assert_eq!(out.columns[3].validity, Some(vec![false, true]));
    assert_eq!(
        out.columns[4].strings(),
        Some(vec![Some("{\"a\": 1}"), None])
    );
    let ColumnValues::Array(tags) = &out.columns[5].values else {
        panic!("{:?}", out.columns[5].values)
    };
    assert_eq!(tags.offsets, vec![0, 2, 2]);
    assert_eq!(tags.element_validity, Some(vec![true, false]));
    assert_eq!(out.columns[6].strings(), Some(vec![Some("<a/>"), None]));
}

#[test]
fn bad_messages_are_errors_not_wrong_values() {
    let t = table(vec![column("id", 23, -1), column("tags", 1007, -1)]);
    let plan = plan(&t).expect("plan");
    let decode = |msg: Vec<u8>| {
        let mut batch = BinaryBatch::new(&plan, Mode::Keyed);
        batch.decode(&msg, &mut true, &mut Vec::new())
    };
    let id = Some(1i32.to_be_bytes().to_vec());
    let ok = message(true, &[vec![id.clone(), None]], true);
    assert_eq!(decode(ok.clone()), Ok(1));
    for cut in [3, 12, ok.len() - 5] {
        assert!(decode(ok[..cut].to_vec()).is_err(), "cut at {cut}");
    }
    let err = decode(message(true, &[vec![None, None]], false)).unwrap_err();
    assert!(err.contains("non-nullable"), "{err}");
    let err = decode(message(true, &[vec![Some(vec![0; 8]), None]], false)).unwrap_err();
    assert!(err.contains("int4") && err.contains("'id'"), "{err}");
    // An array of another element type, and a two-dimensional one.
    let err = decode(message(
        true,
        &[vec![id.clone(), Some(array(20, &[]))]],
        false,
    ))
    .unwrap_err();
    assert!(err.contains("type oid 20"), "{err}");
    let mut two_d = array(23, &[]);
    two_d[3] = 2;
    let err = decode(message(true, &[vec![id, Some(two_d)]], false)).unwrap_err();
    assert!(err.contains("multi-dimensional"), "{err}");
    let err = decode(b"PGCOPY\n\xff\r\n\x01".to_vec()).unwrap_err();
    assert!(err.contains("signature"), "{err}");
}

#[test]
fn edge_values_match_the_text_path() {
    let v = |kind, data: &[u8]| {
        let mut values = Values::scalar(kind, false, 1);
        let pushed = push_value(&mut values, kind, data);
        (pushed.map(|p| matches!(p, Pushed::Value)), values)
    };
    // 0001-01-01 is AD, the day before BC.
    assert!(
        matches!(v(Kind::Date, &FIRST_AD_DAY.to_be_bytes()), (Ok(true), Values::I32(d)) if d == [-719_162])
    );
    assert!(matches!(
        v(Kind::Date, &(FIRST_AD_DAY - 1).to_be_bytes()),
        (Ok(false), _)
    ));
    assert!(matches!(
        v(Kind::Timestamp, &(FIRST_AD_MICROS - 1).to_be_bytes()),
        (Ok(false), _)
    ));
    assert!(matches!(
        v(Kind::Time, &END_OF_DAY.to_be_bytes()),
        (Ok(false), _)
    ));
    assert!(v(Kind::Time, &(END_OF_DAY + 1).to_be_bytes()).0.is_err());
    assert!(
        matches!(v(Kind::Oid, &u32::MAX.to_be_bytes()), (Ok(true), Values::I64(o)) if o == [u32::MAX as i64])
    );
    assert!(v(Kind::Text, b"\xff").0.is_err());
    assert!(v(Kind::Jsonb, b"{}").0.is_err());
    let (_, nan) = v(Kind::Float8, &f64::NAN.to_be_bytes());
    assert!(matches!(nan, Values::F64(f) if f[0].is_nan()));
}

/// `unscaled / 10^scale` in Postgres's binary numeric form, as `numeric_send` writes it:
/// base-10000 digits around the decimal point, leading and trailing zero digits stripped.
fn encode_numeric(unscaled: i128, scale: u8) -> Vec<u8> {
    let text = unscaled.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = format!("{text:0>width$}", width = scale + 1);
    let (int_part, frac_part) = padded.split_at(padded.len() - scale);
    // Integer groups from the point leftwards, fraction groups from the point rightwards.
    let int_groups = int_part.len().div_ceil(4);
    let int_text = format!("{int_part:0>width$}", width = int_groups * 4);
    let frac_groups = frac_part.len().div_ceil(4);
    let frac_text = format!("{frac_part:0<width$}", width = frac_groups * 4);
    let all = format!("{int_text}{frac_text}");
    let mut digits: Vec<u16> = all
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap().parse().unwrap())
        .collect();
    let mut weight = int_groups as i16 - 1;
    while digits.first() == Some(&0) {
        digits.remove(0);
        weight -= 1;
    }
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    let sign = if unscaled < 0 { 0x4000 } else { 0 };
    numeric(&digits, weight, sign, scale as u16)
}

#[test]
fn numerics_of_every_size_and_scale_round_trip() {
    // A small deterministic generator: values of 1 to 38 digits at every scale, both signs,
    // so both the u64 and the checked i128 paths are taken.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let digits = (next() % 38 + 1) as u32;
        let scale = (next() % (digits as u64 + 1)) as u8;
        let magnitude = ((next() as u128) << 64 | next() as u128) % 10u128.pow(digits);
        let value = if next() % 2 == 0 {
            magnitude as i128
        } else {
            -(magnitude as i128)
        };
        let encoded = encode_numeric(value, scale);
        assert_eq!(
            unscaled(&encoded, 38, scale),
            Ok(value),
            "{value} at scale {scale}"
        );
        // At its own precision it fits; one digit less does not (unless it is shorter).
        let precision = digits as u8;
        assert_eq!(unscaled(&encoded, precision, scale), Ok(value));
        if magnitude >= 10u128.pow(digits - 1) && digits > 1 {
            assert!(unscaled(&encoded, precision - 1, scale).is_err());
        }
    }
}
