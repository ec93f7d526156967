//! The initial copy in COPY's binary format (`COPY ... TO STDOUT (FORMAT binary)`), decoded
//! straight into typed columns: fixed-width values into vectors, strings into one packed
//! buffer per column, numerics into unscaled 128-bit integers, arrays into offsets and
//! elements. No per-value `Value` boxing; a batch leaves as WIT column values.
//!
//! Every supported type is read in its binary form except three whose binary form is not
//! their text output: `"char"` (a raw byte; text escapes high bytes), `xml` (the binary form
//! may rewrite its declaration) and `numeric` mirrored as text (unconstrained, or wider than
//! 38 digits: its text keeps the value's scale). Those columns are selected `::text` (or
//! `::text[]`), whose binary form *is* the text output, so they hold exactly what the text
//! copy gives. Values with no Iceberg form (NaN and ±infinity of numeric, dates and
//! timestamps, BC dates and timestamps, `time '24:00'`) become null like in the text path.

use moonlink_sdk::{
    ArrayValues, ChangeBatch, Column, ColumnValues, ElementValues, Int128, Operation, Utf8Buffer,
};

use crate::sql::quote_ident;
use crate::tables::{MirroredTable, Mode};
use crate::types::{array_element, Decoder};

/// How one binary value is read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    Numeric {
        precision: u8,
        scale: u8,
    },
    /// text, varchar, bpchar, name, json, and columns selected `::text`.
    Text,
    /// jsonb: a version byte (1), then the text.
    Jsonb,
    Bytea,
    Date,
    Time,
    /// timestamp and timestamptz (both microseconds since 2000-01-01, UTC for timestamptz).
    Timestamp,
    Uuid,
}

/// How one column of a table is copied in binary.
#[derive(Debug, Clone)]
struct ColumnPlan {
    name: String,
    kind: Kind,
    /// An array column, and the element type oid its values must carry.
    array: Option<u32>,
    nullable: bool,
}

/// A table's binary copy: the select list and how each column is read.
#[derive(Debug, Clone)]
pub struct BinaryPlan {
    columns: Vec<ColumnPlan>,
    /// The COPY query's column list (some columns cast to text).
    pub select_list: String,
    /// Columns read through their text form, as `name (type)`, for the log.
    pub as_text: Vec<String>,
}

/// The binary plan of a table, or the name of a column whose type has none (the table is
/// then copied in text format).
pub fn plan(table: &MirroredTable) -> Result<BinaryPlan, String> {
    let mut columns = Vec::with_capacity(table.columns.len());
    let mut select = Vec::with_capacity(table.columns.len());
    let mut as_text = Vec::new();
    for (i, c) in table.columns.iter().enumerate() {
        let decoder = table.decoders[i];
        let element = array_element(c.type_oid);
        let scalar_oid = element.unwrap_or(c.type_oid);
        let kind = match (scalar_oid, decoder.scalar) {
            (16, _) => Some(Kind::Bool),
            (21, _) => Some(Kind::Int2),
            (23, _) => Some(Kind::Int4),
            (20, _) => Some(Kind::Int8),
            (26, _) => Some(Kind::Oid),
            (700, _) => Some(Kind::Float4),
            (701, _) => Some(Kind::Float8),
            (1700, Decoder::Decimal { precision, scale }) => {
                Some(Kind::Numeric { precision, scale })
            }
            (25 | 1043 | 1042 | 19 | 114, Decoder::Text) => Some(Kind::Text),
            (3802, Decoder::Text) => Some(Kind::Jsonb),
            (17, _) => Some(Kind::Bytea),
            (1082, _) => Some(Kind::Date),
            (1083, _) => Some(Kind::Time),
            (1114 | 1184, _) => Some(Kind::Timestamp),
            (2950, _) => Some(Kind::Uuid),
            _ => None,
        };
        let name = quote_ident(&c.name);
        let (kind, element_oid) = match kind {
            Some(kind) => {
                select.push(name);
                (kind, scalar_oid)
            }
            // Any other text-decoded type: its text form, exactly as the text copy has it.
            None if decoder.scalar == Decoder::Text => {
                select.push(format!(
                    "{name}::text{}",
                    if element.is_some() { "[]" } else { "" }
                ));
                as_text.push(format!("{} ({})", c.name, c.type_name));
                (Kind::Text, 25)
            }
            None => return Err(format!("{} ({})", c.name, c.type_name)),
        };
        columns.push(ColumnPlan {
            name: c.name.clone(),
            kind,
            array: element.map(|_| element_oid),
            nullable: table.schema.fields[i].nullable,
        });
    }
    Ok(BinaryPlan {
        columns,
        select_list: select.join(", "),
        as_text,
    })
}

/// A column being built: values in WIT physical form.
enum Values {
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
    fn new(kind: Kind, array: bool, capacity: usize) -> Values {
        if array {
            return Values::List {
                offsets: vec![0],
                elements: Box::new(Values::scalar(kind, true, 0)),
                validity: Vec::new(),
            };
        }
        Values::scalar(kind, false, capacity)
    }

    fn scalar(kind: Kind, element: bool, n: usize) -> Values {
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

    /// Adds a null (a placeholder value; validity says null).
    fn push_null(&mut self) {
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

    fn into_wit(self) -> ColumnValues {
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
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
/// 0001-01-01 in Postgres days and microseconds: anything before is BC.
const FIRST_AD_DAY: i32 = -730_119;
const FIRST_AD_MICROS: i64 = -63_082_281_600_000_000;
/// `time '24:00:00'`.
const END_OF_DAY: i64 = 86_400_000_000;

fn fixed<const N: usize>(data: &[u8], what: &str) -> Result<[u8; N], String> {
    data.try_into().map_err(|_| {
        format!(
            "a binary {what} value of {} bytes (expected {N})",
            data.len()
        )
    })
}

/// What happened to one value: stored, or null because Iceberg has no form for it.
enum Pushed {
    Value,
    Unrepresentable(&'static str),
}

/// Appends one non-null value of `kind` to `values`.
fn push_value(values: &mut Values, kind: Kind, data: &[u8]) -> Result<Pushed, String> {
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

fn text(data: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(data).map_err(|_| "a value is not UTF-8".to_string())
}

fn push_str(values: &mut Values, s: &str) {
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
fn numeric_unscaled(
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
        let mut acc: u64 = 0;
        let mut unit = 0i32;
        for i in 0..ndigits {
            let (value, at) = digit(i)?;
            acc = acc * POW10[(unit - at).max(0) as usize] as u64 + value as u64;
            unit = at;
        }
        let acc = acc as u128 * POW10[unit.max(0) as usize];
        if acc >= limit {
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
fn scaled_digit(digit: u16, exponent: i32) -> Result<(u16, i32), String> {
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

/// Powers of ten up to 10^38.
const POW10: [u128; 39] = {
    let mut table = [1u128; 39];
    let mut i = 1;
    while i < 39 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// A COPY binary stream's header: signature, flags, header extension.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Reads big-endian integers off a message body.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.data.len());
        let end = end.ok_or_else(|| {
            format!(
                "a binary COPY message is truncated: {n} bytes wanted at byte {} of {}",
                self.at,
                self.data.len()
            )
        })?;
        let slice = &self.data[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn i16(&mut self) -> Result<i16, String> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    #[inline]
    fn i32(&mut self) -> Result<i32, String> {
        match self.data.get(self.at..self.at + 4) {
            Some(&[a, b, c, d]) => {
                self.at += 4;
                Ok(i32::from_be_bytes([a, b, c, d]))
            }
            _ => self.take(4).map(|_| 0),
        }
    }

    /// A length-prefixed value: `None` for null (-1).
    #[inline]
    fn value(&mut self) -> Result<Option<&'a [u8]>, String> {
        let n = self.i32()?;
        if n < 0 {
            return match n {
                -1 => Ok(None),
                n => Err(format!("a binary COPY value of length {n}")),
            };
        }
        let end = self.at + n as usize;
        match self.data.get(self.at..end) {
            Some(value) => {
                self.at = end;
                Ok(Some(value))
            }
            None => self.take(n as usize).map(Some),
        }
    }
}

/// One column's values and validity.
struct ColumnData {
    values: Values,
    validity: Vec<bool>,
    has_null: bool,
}

/// Rows of one table decoded from binary COPY messages.
pub struct BinaryBatch {
    plan: BinaryPlan,
    operation: Operation,
    operations: Vec<Operation>,
    columns: Vec<ColumnData>,
}

impl BinaryBatch {
    pub fn new(plan: &BinaryPlan, mode: Mode) -> BinaryBatch {
        let capacity = 4096;
        BinaryBatch {
            columns: plan
                .columns
                .iter()
                .map(|c| ColumnData {
                    values: Values::new(c.kind, c.array.is_some(), capacity),
                    validity: Vec::with_capacity(capacity),
                    has_null: false,
                })
                .collect(),
            plan: plan.clone(),
            operation: match mode {
                Mode::Keyed => Operation::Upsert,
                Mode::AppendOnly => Operation::Insert,
            },
            operations: Vec::with_capacity(capacity),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// Decodes one CopyData message: the stream's header if `header` (then cleared), and
    /// rows, or the trailer. Returns the number of rows added; `unrepresentable` gets
    /// (column, what) of each value stored as null for want of an Iceberg form.
    pub fn decode(
        &mut self,
        message: &[u8],
        header: &mut bool,
        unrepresentable: &mut Vec<(usize, &'static str)>,
    ) -> Result<usize, String> {
        let mut r = Reader {
            data: message,
            at: 0,
        };
        if *header {
            if r.take(SIGNATURE.len())? != SIGNATURE {
                return Err("a binary COPY stream without its signature".into());
            }
            let flags = r.i32()?;
            if flags & (1 << 16) != 0 {
                return Err("a binary COPY stream with OIDs".into());
            }
            let extension = r.i32()?;
            if extension < 0 {
                return Err(format!(
                    "a binary COPY header extension of {extension} bytes"
                ));
            }
            r.take(extension as usize)?;
            *header = false;
        }
        let mut rows = 0;
        while r.at < message.len() {
            let fields = r.i16()?;
            if fields == -1 {
                if r.at != message.len() {
                    return Err("bytes after a binary COPY trailer".into());
                }
                break;
            }
            if fields as usize != self.columns.len() {
                return Err(format!(
                    "a binary COPY row has {fields} columns, the table {}",
                    self.columns.len()
                ));
            }
            let row = self.operations.len();
            for i in 0..self.columns.len() {
                let field = r.value()?;
                self.push_field(i, field, row, unrepresentable)?;
            }
            self.operations.push(self.operation);
            rows += 1;
        }
        Ok(rows)
    }

    fn push_field(
        &mut self,
        i: usize,
        field: Option<&[u8]>,
        row: usize,
        unrepresentable: &mut Vec<(usize, &'static str)>,
    ) -> Result<(), String> {
        let plan = &self.plan.columns[i];
        let column = &mut self.columns[i];
        let in_column = |e: String| format!("column '{}': {e}", plan.name);
        let valid = match field {
            None => false,
            Some(data) => match plan.array {
                Some(element_oid) => {
                    push_array(&mut column.values, plan.kind, element_oid, data)
                        .map_err(in_column)?;
                    true
                }
                None => match push_value(&mut column.values, plan.kind, data).map_err(in_column)? {
                    Pushed::Value => true,
                    Pushed::Unrepresentable(what) => {
                        unrepresentable.push((i, what));
                        false
                    }
                },
            },
        };
        if !valid {
            if !plan.nullable {
                return Err(format!(
                    "row {row}, column '{}': null in a non-nullable column",
                    plan.name
                ));
            }
            if field.is_none() {
                column.values.push_null();
            }
            column.has_null = true;
        }
        column.validity.push(valid);
        Ok(())
    }

    /// The rows so far as one change batch for `table`.
    pub fn finish(self, table: &str) -> ChangeBatch {
        ChangeBatch {
            table: table.to_string(),
            operations: self.operations,
            columns: self
                .plan
                .columns
                .iter()
                .zip(self.columns)
                .map(|(plan, c)| Column {
                    name: plan.name.clone(),
                    values: c.values.into_wit(),
                    validity: c.has_null.then_some(c.validity),
                    unchanged: None,
                })
                .collect(),
        }
    }
}

/// Appends a one-dimensional array (Postgres's binary array form) as a list.
fn push_array(
    values: &mut Values,
    kind: Kind,
    element_oid: u32,
    data: &[u8],
) -> Result<(), String> {
    let Values::List {
        offsets,
        elements,
        validity,
    } = values
    else {
        return Err("internal: an array column without a list builder".into());
    };
    let mut r = Reader { data, at: 0 };
    let dimensions = r.i32()?;
    let _has_nulls = r.i32()?;
    let oid = r.i32()? as u32;
    if oid != element_oid {
        return Err(format!(
            "an array of type oid {oid}, expected elements of type oid {element_oid}"
        ));
    }
    let count = match dimensions {
        0 => 0,
        // The lower bound is dropped: lists start at 0 (as in the text path).
        1 => {
            let n = r.i32()?;
            r.i32()?;
            usize::try_from(n).map_err(|_| format!("an array of {n} elements"))?
        }
        n if n > 1 => return Err("multi-dimensional arrays are not supported".into()),
        n => return Err(format!("an array of {n} dimensions")),
    };
    for _ in 0..count {
        let valid = match r.value()? {
            None => {
                elements.push_null();
                false
            }
            // An element with no Iceberg form is a null element, as in the text path.
            Some(item) => matches!(push_value(elements, kind, item)?, Pushed::Value),
        };
        validity.push(valid);
    }
    if r.at != data.len() {
        return Err("bytes after an array's elements".into());
    }
    offsets.push(validity.len() as u32);
    Ok(())
}

#[cfg(test)]
#[path = "binary_tests.rs"]
mod tests;
