//! Typed columns for the fast path: each JSON value is decoded straight into its column's
//! packed buffer (`Vec<i64>`, `Vec<f64>`, packed UTF-8, ...) plus a validity entry — no
//! `Value` per field and no per-row work for columns a row sets.
//!
//! Invariant: every method that returns `None` refuses a value (or a row) that the general
//! path would refuse, or one this module does not handle; the caller then abandons the whole
//! fast attempt and the general path produces the result or the exact error. Whatever is
//! accepted here converts to exactly what the general path builds (`fast_tests.rs` checks
//! both on generated bodies).

use moonlink_sdk::rest::{IngestRequest, RequestMode};
use moonlink_sdk::text::{check_date_days, check_time, parse_date, parse_time, parse_timestamp};
use moonlink_sdk::{
    BatchBuilder, ChangeBatch, Column, ColumnValues, DataType, Field, Operation, TableSchema,
    Utf8Buffer,
};

use crate::number;
use crate::values;

/// One column's values in their physical (WIT) form.
enum Data {
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    Utf8 {
        offsets: Vec<u32>,
        data: Vec<u8>,
    },
    /// Days since 1970-01-01.
    Date(Vec<i32>),
    /// Microseconds since the epoch (`zoned`: timestamptz, which accepts UTC offsets).
    Timestamp {
        values: Vec<i64>,
        zoned: bool,
    },
    /// Microseconds since midnight.
    Time(Vec<i64>),
    /// Any other type (decimal, binary, uuid, arrays, maps): a one-column builder fed by the
    /// general path's conversion, one row at a time.
    Other(Box<BatchBuilder>),
}

struct TypedColumn {
    field: Field,
    data: Data,
    /// One entry per row: `false` for null.
    validity: Vec<bool>,
    has_null: bool,
    /// `rows_started` when the current row set this column (duplicate keys are refused).
    set_in: usize,
}

/// The batch being built by the fast path.
pub struct Columns {
    table: String,
    operation: Operation,
    columns: Vec<TypedColumn>,
    /// The column names as JSON keys, to match in place (kept apart: small and hot).
    keys: Vec<KeyPattern>,
    /// Rows started so far (the current row is number `rows_started - 1`).
    rows_started: usize,
    /// Columns the current row has set so far.
    set_in_row: usize,
}

impl Columns {
    /// Empty columns for `schema`, with room for `rows` rows (a hint).
    pub fn new(table: &str, schema: &TableSchema, operation: Operation, rows: usize) -> Self {
        let columns = schema
            .fields
            .iter()
            .map(|field| {
                let data = match field.data_type {
                    DataType::Int16 => Data::I16(Vec::with_capacity(rows)),
                    DataType::Int32 => Data::I32(Vec::with_capacity(rows)),
                    DataType::Int64 => Data::I64(Vec::with_capacity(rows)),
                    DataType::Float32 => Data::F32(Vec::with_capacity(rows)),
                    DataType::Float64 => Data::F64(Vec::with_capacity(rows)),
                    DataType::Boolean => Data::Bool(Vec::with_capacity(rows)),
                    DataType::Utf8 => {
                        let mut offsets = Vec::with_capacity(rows + 1);
                        offsets.push(0);
                        Data::Utf8 {
                            offsets,
                            data: Vec::new(),
                        }
                    }
                    DataType::Date32 => Data::Date(Vec::with_capacity(rows)),
                    DataType::Timestamp | DataType::Timestamptz => Data::Timestamp {
                        values: Vec::with_capacity(rows),
                        zoned: matches!(field.data_type, DataType::Timestamptz),
                    },
                    DataType::Time => Data::Time(Vec::with_capacity(rows)),
                    _ => Data::Other(Box::new(BatchBuilder::new(
                        table,
                        &TableSchema::new(vec![field.clone()]),
                    ))),
                };
                TypedColumn {
                    field: field.clone(),
                    data,
                    validity: Vec::with_capacity(rows),
                    has_null: false,
                    set_in: 0,
                }
            })
            .collect();
        Columns {
            table: table.to_string(),
            operation,
            keys: schema
                .fields
                .iter()
                .map(|f| KeyPattern::new(&f.name))
                .collect(),
            columns,
            rows_started: 0,
            set_in_row: 0,
        }
    }

    /// The operation every row of the batch gets.
    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// Starts a row; columns it does not set are filled by [`Columns::finish_row`].
    pub fn start_row(&mut self) {
        self.rows_started += 1;
        self.set_in_row = 0;
    }

    /// The position of the column named `key`, trying `guess` first (keys usually come in the
    /// same order in every row).
    pub fn index(&self, key: &str, guess: usize) -> Option<usize> {
        match self.columns.get(guess) {
            Some(c) if c.field.name == key => Some(guess),
            _ => self.columns.iter().position(|c| c.field.name == key),
        }
    }

    /// If `bytes[pos..]` starts with column `index`'s name as a JSON string literal (quotes
    /// included, no escapes), that literal's length.
    pub fn match_key(&self, index: usize, bytes: &[u8], pos: usize) -> Option<usize> {
        self.keys.get(index)?.match_at(bytes, pos)
    }

    /// The column type, for the scanner to pick how to read a string value.
    pub fn is_utf8(&self, index: usize) -> bool {
        matches!(self.columns[index].data, Data::Utf8 { .. })
    }

    /// Marks column `index` as set in the current row; `None` if it already was.
    pub fn claim(&mut self, index: usize) -> Option<()> {
        let column = &mut self.columns[index];
        if column.set_in == self.rows_started {
            return None;
        }
        column.set_in = self.rows_started;
        self.set_in_row += 1;
        Some(())
    }

    /// Whether column `index` stores plain integers (int16/32/64), which the scanner parses
    /// while it reads them.
    pub fn is_integer(&self, index: usize) -> bool {
        matches!(
            self.columns[index].data,
            Data::I16(_) | Data::I32(_) | Data::I64(_)
        )
    }

    /// An integer column of the current row; `None` if `value` does not fit its width.
    pub fn set_integer(&mut self, index: usize, value: i64) -> Option<()> {
        let column = &mut self.columns[index];
        match &mut column.data {
            Data::I16(v) => v.push(i16::try_from(value).ok()?),
            Data::I32(v) => v.push(i32::try_from(value).ok()?),
            Data::I64(v) => v.push(value),
            _ => return None,
        }
        column.validity.push(true);
        Some(())
    }

    /// The packed string buffer of a string column, to append the current row's value to;
    /// [`Columns::end_str`] closes it.
    pub fn str_data(&mut self, index: usize) -> Option<&mut Vec<u8>> {
        match &mut self.columns[index].data {
            Data::Utf8 { data, .. } => Some(data),
            _ => None,
        }
    }

    /// Ends the string the scanner appended to column `index`'s buffer.
    pub fn end_str(&mut self, index: usize) {
        let column = &mut self.columns[index];
        if let Data::Utf8 { offsets, data } = &mut column.data {
            offsets.push(data.len() as u32);
        }
        column.validity.push(true);
    }

    /// A null in column `index` of the current row.
    pub fn set_null(&mut self, index: usize) -> Option<()> {
        let operation = self.operation;
        let column = &mut self.columns[index];
        if let Data::Other(builder) = &mut column.data {
            builder.start_row(operation);
            builder.finish_row().ok()?;
            column.validity.push(false);
            column.has_null = true;
            return Some(());
        }
        // A delete needs only the key: other columns may be null (the builder's rule).
        if !column.field.nullable && !matches!(operation, Operation::Delete) {
            return None;
        }
        column.push_default();
        column.validity.push(false);
        column.has_null = true;
        Some(())
    }

    /// Column `index` of the current row from a non-null raw JSON scalar as the scanner
    /// checked it (a number, `true`, `false`, or a string literal without escapes, quotes
    /// included).
    pub fn set_raw(&mut self, index: usize, raw: &str) -> Option<()> {
        let operation = self.operation;
        let column = &mut self.columns[index];
        let bytes = raw.as_bytes();
        let first = *bytes.first()?;
        let is_string = first == b'"';
        let inner = || &raw[1..raw.len() - 1];
        match &mut column.data {
            Data::I16(v) => v.push(i16::try_from(number::integer(bytes)?).ok()?),
            Data::I32(v) => v.push(i32::try_from(number::integer(bytes)?).ok()?),
            Data::I64(v) => v.push(number::integer(bytes)?),
            Data::F32(v) => v.push(number::float32(raw)?),
            Data::F64(v) => v.push(number::float64(raw)?),
            Data::Bool(v) => v.push(match (first, bytes.len()) {
                // `raw` is a scalar the scanner checked in full: of those, only `true` and
                // `false` start with these letters (strings start with '"', numbers with a
                // digit or '-').
                (b't', 4) => true,
                (b'f', 5) => false,
                _ => return None,
            }),
            Data::Utf8 { offsets, data } => {
                if !is_string {
                    return None;
                }
                data.extend_from_slice(inner().as_bytes());
                offsets.push(data.len() as u32);
            }
            Data::Date(v) => v.push(if is_string {
                number::date(inner().as_bytes()).or_else(|| parse_date(inner()).ok())?
            } else {
                check_date_days(number::integer(bytes)?).ok()?
            }),
            Data::Timestamp { values, zoned } => values.push(if is_string {
                parse_timestamp(inner(), *zoned).ok()?
            } else {
                number::integer(bytes)?
            }),
            Data::Time(v) => v.push(if is_string {
                parse_time(inner()).ok()?
            } else {
                check_time(number::integer(bytes)?).ok()?
            }),
            Data::Other(builder) => {
                let value = values::convert(&column.field.data_type, raw).ok()?;
                builder.start_row(operation);
                builder.set(0, value).ok()?;
                builder.finish_row().ok()?;
            }
        }
        column.validity.push(true);
        Some(())
    }

    /// Ends the current row: columns it did not set are null (refused where not nullable).
    pub fn finish_row(&mut self) -> Option<()> {
        if self.set_in_row == self.columns.len() {
            return Some(()); // the usual case: every column was set
        }
        let row = self.rows_started;
        for index in 0..self.columns.len() {
            if self.columns[index].set_in != row {
                self.set_null(index)?;
            }
        }
        Some(())
    }

    /// The finished request.
    pub fn finish(self, mode: RequestMode) -> IngestRequest {
        let rows = self.rows_started;
        let columns = self
            .columns
            .into_iter()
            .map(|c| {
                let values = match c.data {
                    Data::I16(v) => ColumnValues::Int16(v),
                    Data::I32(v) | Data::Date(v) => ColumnValues::Int32(v),
                    Data::I64(v) | Data::Time(v) | Data::Timestamp { values: v, .. } => {
                        ColumnValues::Int64(v)
                    }
                    Data::F32(v) => ColumnValues::Float32(v),
                    Data::F64(v) => ColumnValues::Float64(v),
                    Data::Bool(v) => ColumnValues::Boolean(v),
                    Data::Utf8 { offsets, data } => {
                        ColumnValues::Utf8Buffer(Utf8Buffer { offsets, data })
                    }
                    Data::Other(builder) => match builder.finish().columns.pop() {
                        Some(column) => column.values,
                        None => ColumnValues::Int64(Vec::new()), // unreachable: one column
                    },
                };
                Column {
                    name: c.field.name,
                    values,
                    validity: c.has_null.then_some(c.validity),
                    unchanged: None,
                }
            })
            .collect();
        IngestRequest {
            batch: ChangeBatch {
                table: self.table,
                operations: vec![self.operation; rows],
                columns,
            },
            request_mode: mode,
        }
    }
}

/// A column name as the JSON key `"name"`, compared eight bytes at a time (slice equality
/// calls the guest's byte-by-byte `memcmp`, which was a hot spot for keys).
struct KeyPattern {
    /// Length of `"name"` with its quotes; 0 when the name needs an escape in JSON (never
    /// matched: such keys go the general way anyway).
    len: usize,
    /// `"name"` in little-endian words, the last one zero-padded, with the masks of the
    /// bytes that count (most keys fit the first word).
    words: Vec<(u64, u64)>,
}

impl KeyPattern {
    fn new(name: &str) -> Self {
        if name.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
            return KeyPattern {
                len: 0,
                words: Vec::new(),
            };
        }
        let quoted = format!("\"{name}\"").into_bytes();
        let words = quoted
            .chunks(8)
            .map(|chunk| {
                let (mut word, mut mask) = ([0u8; 8], [0u8; 8]);
                word[..chunk.len()].copy_from_slice(chunk);
                mask[..chunk.len()].fill(0xff);
                (u64::from_le_bytes(word), u64::from_le_bytes(mask))
            })
            .collect();
        KeyPattern {
            len: quoted.len(),
            words,
        }
    }

    fn match_at(&self, bytes: &[u8], pos: usize) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let word_at = |at: usize| -> Option<u64> {
            let chunk: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
            Some(u64::from_le_bytes(chunk))
        };
        for (i, &(word, mask)) in self.words.iter().enumerate() {
            match word_at(pos + i * 8) {
                Some(x) if x & mask == word => {}
                Some(_) => return None,
                // Near the end of the body: whatever is left, byte by byte.
                None => {
                    let left = bytes.get(pos + i * 8..pos + self.len)?;
                    let expected = word.to_le_bytes();
                    return (left == &expected[..left.len()]).then_some(self.len);
                }
            }
        }
        Some(self.len)
    }
}

impl TypedColumn {
    /// The value a null slot holds (what the SDK's builder leaves there).
    fn push_default(&mut self) {
        match &mut self.data {
            Data::I16(v) => v.push(0),
            Data::I32(v) | Data::Date(v) => v.push(0),
            Data::I64(v) | Data::Time(v) | Data::Timestamp { values: v, .. } => v.push(0),
            Data::F32(v) => v.push(0.0),
            Data::F64(v) => v.push(0.0),
            Data::Bool(v) => v.push(false),
            Data::Utf8 { offsets, data } => offsets.push(data.len() as u32),
            Data::Other(_) => {}
        }
    }
}
