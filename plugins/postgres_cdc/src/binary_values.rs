//! Binary COPY values into column builders: fixed-width values, packed strings, numerics as
//! unscaled 128-bit integers, dates and timestamps moved to the Unix epoch (see `binary.rs`).

use moonlink_sdk::{ArrayValues, ColumnValues, ElementValues, Int128, Utf8Buffer};

use super::Kind;

/// A column being built: values in WIT physical form.
pub(super) enum Values {
    Bool(Vec<bool>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    I128(Vec<Int128>),
    /// Top-level strings: `data[offsets[i]..offsets[i + 1]]`.
    Packed {
        offsets: Vec<u32>,
        data: Vec<u8>,
    },
    /// Strings as array elements (WIT elements are not packed).
    Strings(Vec<String>),
    Bytes(Vec<Vec<u8>>),
    List {
        offsets: Vec<u32>,
        elements: Box<Values>,
        validity: Vec<bool>,
    },
}

impl Values {
    pub(super) fn new(kind: Kind, array: bool, capacity: usize) -> Values {
        if array {
            return Values::List {
                offsets: vec![0],
                elements: Box::new(Values::scalar(kind, true, 0)),
                validity: Vec::new(),
            };
        }
        Values::scalar(kind, false, capacity)
    }

    pub(super) fn scalar(kind: Kind, element: bool, n: usize) -> Values {
        match kind {
            Kind::Bool => Values::Bool(Vec::with_capacity(n)),
            Kind::Int2 => Values::I16(Vec::with_capacity(n)),
            Kind::Int4 | Kind::Date => Values::I32(Vec::with_capacity(n)),
            Kind::Int8 | Kind::Oid | Kind::Time | Kind::Timestamp => {
                Values::I64(Vec::with_capacity(n))
            }
            Kind::Float4 => Values::F32(Vec::with_capacity(n)),
            Kind::Float8 => Values::F64(Vec::with_capacity(n)),
            Kind::Numeric { .. } => Values::I128(Vec::with_capacity(n)),
            Kind::Text | Kind::Jsonb if element => Values::Strings(Vec::new()),
            Kind::Text | Kind::Jsonb => {
                let mut offsets = Vec::with_capacity(n + 1);
                offsets.push(0);
                Values::Packed {
                    offsets,
                    data: Vec::new(),
                }
            }
            Kind::Bytea | Kind::Uuid => Values::Bytes(Vec::with_capacity(n)),
        }
    }

    /// Makes room for `rows` more values (and `bytes` more of packed strings).
    pub(super) fn reserve(&mut self, rows: usize, bytes: usize) {
        match self {
            Values::Bool(v) => v.reserve(rows),
            Values::I16(v) => v.reserve(rows),
            Values::I32(v) => v.reserve(rows),
            Values::I64(v) => v.reserve(rows),
            Values::F32(v) => v.reserve(rows),
            Values::F64(v) => v.reserve(rows),
            Values::I128(v) => v.reserve(rows),
            Values::Packed { offsets, data } => {
                offsets.reserve(rows);
                data.reserve(bytes);
            }
            Values::Strings(v) => v.reserve(rows),
            Values::Bytes(v) => v.reserve(rows),
            Values::List { offsets, .. } => offsets.reserve(rows),
        }
    }

    /// The bytes of packed strings held (0 for other columns).
    pub(super) fn packed_bytes(&self) -> usize {
        match self {
            Values::Packed { data, .. } => data.len(),
            _ => 0,
        }
    }

    /// Adds a null (a placeholder value; validity says null).
    pub(super) fn push_null(&mut self) {
        match self {
            Values::Bool(v) => v.push(false),
            Values::I16(v) => v.push(0),
            Values::I32(v) => v.push(0),
            Values::I64(v) => v.push(0),
            Values::F32(v) => v.push(0.0),
            Values::F64(v) => v.push(0.0),
            Values::I128(v) => v.push(Int128 { lo: 0, hi: 0 }),
            Values::Packed { offsets, data } => offsets.push(data.len() as u32),
            Values::Strings(v) => v.push(String::new()),
            Values::Bytes(v) => v.push(Vec::new()),
            Values::List { offsets, .. } => {
                let end = offsets.last().copied().unwrap_or(0);
                offsets.push(end);
            }
        }
    }

    pub(super) fn into_wit(self) -> ColumnValues {
        match self {
            Values::Bool(v) => ColumnValues::Boolean(v),
            Values::I16(v) => ColumnValues::Int16(v),
            Values::I32(v) => ColumnValues::Int32(v),
            Values::I64(v) => ColumnValues::Int64(v),
            Values::F32(v) => ColumnValues::Float32(v),
            Values::F64(v) => ColumnValues::Float64(v),
            Values::I128(v) => ColumnValues::Int128(v),
            Values::Packed { offsets, data } => {
                ColumnValues::Utf8Buffer(Utf8Buffer { offsets, data })
            }
            Values::Strings(v) => ColumnValues::Utf8(v),
            Values::Bytes(v) => ColumnValues::Binary(v),
            Values::List {
                offsets,
                elements,
                validity,
            } => {
                let has_null = validity.iter().any(|v| !v);
                ColumnValues::Array(ArrayValues {
                    offsets,
                    elements: elements.into_elements(),
                    element_validity: has_null.then_some(validity),
                })
            }
        }
    }

    fn into_elements(self) -> ElementValues {
        match self {
            Values::Bool(v) => ElementValues::Boolean(v),
            Values::I16(v) => ElementValues::Int16(v),
            Values::I32(v) => ElementValues::Int32(v),
            Values::I64(v) => ElementValues::Int64(v),
            Values::F32(v) => ElementValues::Float32(v),
            Values::F64(v) => ElementValues::Float64(v),
            Values::I128(v) => ElementValues::Int128(v),
            Values::Strings(v) => ElementValues::Utf8(v),
            Values::Bytes(v) => ElementValues::Binary(v),
            // Elements are built by `Values::scalar(_, true, _)`: never packed or nested.
            Values::Packed { .. } | Values::List { .. } => ElementValues::Utf8(Vec::new()),
        }
    }
}

/// Microseconds from 1970-01-01 to Postgres's epoch, 2000-01-01.
pub(super) const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
pub(super) const PG_EPOCH_DAYS: i32 = 10_957;
/// 0001-01-01 in Postgres days and microseconds: anything before is BC.
pub(super) const FIRST_AD_DAY: i32 = -730_119;
pub(super) const FIRST_AD_MICROS: i64 = -63_082_281_600_000_000;
/// `time '24:00:00'`.
pub(super) const END_OF_DAY: i64 = 86_400_000_000;

pub(super) fn fixed<const N: usize>(data: &[u8], what: &str) -> Result<[u8; N], String> {
    data.try_into().map_err(|_| {
        format!(
            "a binary {what} value of {} bytes (expected {N})",
            data.len()
        )
    })
}

/// What happened to one value: stored, or null because Iceberg has no form for it.
pub(super) enum Pushed {
    Value,
    Unrepresentable(&'static str),
}

/// Appends one non-null value of `kind` to `values`.
pub(super) fn push_value(values: &mut Values, kind: Kind, data: &[u8]) -> Result<Pushed, String> {
    match (kind, values) {
        (Kind::Bool, Values::Bool(v)) => v.push(fixed::<1>(data, "bool")?[0] != 0),
        (Kind::Int2, Values::I16(v)) => v.push(i16::from_be_bytes(fixed(data, "int2")?)),
        (Kind::Int4, Values::I32(v)) => v.push(i32::from_be_bytes(fixed(data, "int4")?)),
        (Kind::Int8, Values::I64(v)) => v.push(i64::from_be_bytes(fixed(data, "int8")?)),
        (Kind::Oid, Values::I64(v)) => v.push(u32::from_be_bytes(fixed(data, "oid")?) as i64),
        (Kind::Float4, Values::F32(v)) => v.push(f32::from_be_bytes(fixed(data, "float4")?)),
        (Kind::Float8, Values::F64(v)) => v.push(f64::from_be_bytes(fixed(data, "float8")?)),
        (Kind::Numeric { precision, scale }, Values::I128(v)) => {
            match numeric_unscaled(data, precision, scale)? {
                Ok(i) => v.push(Int128 {
                    lo: i as u64,
                    hi: (i >> 64) as i64,
                }),
                Err(special) => {
                    v.push(Int128 { lo: 0, hi: 0 });
                    return Ok(Pushed::Unrepresentable(special));
                }
            }
        }
        (Kind::Text, values) => push_str(values, text(data)?),
        (Kind::Jsonb, values) => match data.split_first() {
            Some((1, json)) => push_str(values, text(json)?),
            _ => return Err("a binary jsonb value without version 1".into()),
        },
        (Kind::Bytea, Values::Bytes(v)) => v.push(data.to_vec()),
        (Kind::Uuid, Values::Bytes(v)) => v.push(fixed::<16>(data, "uuid")?.to_vec()),
        (Kind::Date, Values::I32(v)) => {
            let days = i32::from_be_bytes(fixed(data, "date")?);
            let special = match days {
                i32::MAX => Some("infinity"),
                i32::MIN => Some("-infinity"),
                d if d < FIRST_AD_DAY => Some("a BC date"),
                _ => None,
            };
            match special {
                // Postgres's last date (5874897 AD) is far from i32::MAX: no overflow.
                None => v.push(days.saturating_add(PG_EPOCH_DAYS)),
                Some(special) => {
                    v.push(0);
                    return Ok(Pushed::Unrepresentable(special));
                }
            }
        }
        (Kind::Time, Values::I64(v)) => {
            let micros = i64::from_be_bytes(fixed(data, "time")?);
            if micros == END_OF_DAY {
                v.push(0);
                return Ok(Pushed::Unrepresentable("24:00:00"));
            }
            v.push(moonlink_sdk::text::check_time(micros)?);
        }
        (Kind::Timestamp, Values::I64(v)) => {
            let micros = i64::from_be_bytes(fixed(data, "timestamp")?);
            let special = match micros {
                i64::MAX => Some("infinity"),
                i64::MIN => Some("-infinity"),
                m if m < FIRST_AD_MICROS => Some("a BC timestamp"),
                _ => None,
            };
            match special {
                // Postgres's range (4713 BC to 294276 AD) leaves room to shift the epoch.
                None => v.push(micros.saturating_add(PG_EPOCH_MICROS)),
                Some(special) => {
                    v.push(0);
                    return Ok(Pushed::Unrepresentable(special));
                }
            }
        }
        (kind, _) => return Err(format!("internal: no {kind:?} column builder")),
    }
    Ok(Pushed::Value)
}

pub(super) fn text(data: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(data).map_err(|_| "a value is not UTF-8".to_string())
}

pub(super) fn push_str(values: &mut Values, s: &str) {
    match values {
        Values::Packed { offsets, data } => {
            data.extend_from_slice(s.as_bytes());
            offsets.push(data.len() as u32);
        }
        Values::Strings(v) => v.push(s.to_string()),
        // Text kinds build only the two string forms (see `Values::scalar`).
        _ => {}
    }
}

/// A binary `numeric` as an unscaled integer at `scale`, checked against `precision`, or
/// `Err(name)` of a special value (NaN, ±Infinity).
pub(super) fn numeric_unscaled(
    data: &[u8],
    precision: u8,
    scale: u8,
) -> Result<Result<i128, &'static str>, String> {
    let bad = |why: &str| format!("invalid binary numeric: {why}");
    if data.len() < 8 {
        return Err(bad("shorter than its header"));
    }
    let word = |i: usize| u16::from_be_bytes([data[i], data[i + 1]]);
    let ndigits = word(0) as usize;
    let weight = word(2) as i16 as i32;
    let sign = word(4);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok(Err("NaN")),
        0xD000 => return Ok(Err("Infinity")),
        0xF000 => return Ok(Err("-Infinity")),
        other => return Err(bad(&format!("sign {other:#x}"))),
    }
    if data.len() != 8 + 2 * ndigits {
        return Err(bad("its length does not match its digit count"));
    }
    let overflow = || bad(&format!("out of range for decimal({precision},{scale})"));
    let limit = POW10[precision.min(38) as usize];
    let scale = scale as i32;
    // The value is below 10000^(weight + 1): when that, scaled, has at most 18 digits, plain
    // u64 arithmetic cannot overflow (wasm has no cheap overflow checks for 64-bit multiply).
    let digits_at_most = 4 * (weight + 1) + scale;
    let digit = |i: usize| scaled_digit(word(8 + 2 * i), 4 * (weight - i as i32) + scale);
    if digits_at_most <= 18 && scale <= 18 {
        // All in u64 (no 128-bit multiply): the value, scaled, is below 10^18.
        let mut acc: u64 = 0;
        let mut unit = 0i32;
        for i in 0..ndigits {
            let (value, at) = digit(i)?;
            acc = acc * POW10_U64[(unit - at).max(0) as usize] + value as u64;
            unit = at;
        }
        let acc = acc * POW10_U64[unit.max(0) as usize];
        if precision < 19 && acc >= POW10_U64[precision as usize] {
            return Err(overflow());
        }
        let acc = acc as i128;
        return Ok(Ok(if sign == 0x4000 { -acc } else { acc }));
    }
    // Horner over base-10000 digits, in units of 10^-scale, checked.
    let mut acc: i128 = 0;
    let mut unit = 0i32; // the exponent (relative to 10^-scale) of acc's units
    for i in 0..ndigits {
        let (value, at) = digit(i)?;
        let shift = 10i128
            .checked_pow((unit - at).max(0) as u32)
            .ok_or_else(overflow)?;
        acc = acc
            .checked_mul(shift)
            .and_then(|a| a.checked_add(value as i128))
            .ok_or_else(overflow)?;
        unit = at;
    }
    let shift = 10i128
        .checked_pow(unit.max(0) as u32)
        .ok_or_else(overflow)?;
    acc = acc.checked_mul(shift).ok_or_else(overflow)?;
    if acc.unsigned_abs() >= limit {
        return Err(overflow());
    }
    Ok(Ok(if sign == 0x4000 { -acc } else { acc }))
}

/// A base-10000 digit whose units sit at decimal `exponent` (relative to 10^-scale), as a
/// value in units of 10^max(exponent, 0): digits below 10^-scale must be zero (Postgres
/// rounds values to the column's scale, so they are).
pub(super) fn scaled_digit(digit: u16, exponent: i32) -> Result<(u16, i32), String> {
    if digit > 9999 {
        return Err("invalid binary numeric: a digit above 9999".into());
    }
    if exponent >= 0 {
        return Ok((digit, exponent));
    }
    let divisor = POW10[exponent.unsigned_abs().min(5) as usize] as u32;
    if !(digit as u32).is_multiple_of(divisor) {
        return Err(
            "invalid binary numeric: more fractional digits than the column's scale".into(),
        );
    }
    Ok(((digit as u32 / divisor) as u16, 0))
}

/// Powers of ten up to 10^19 (the most a u64 holds).
const POW10_U64: [u64; 20] = {
    let mut table = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// Powers of ten up to 10^38.
pub(super) const POW10: [u128; 39] = {
    let mut table = [1u128; 39];
    let mut i = 1;
    while i < 39 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};
