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

use moonlink_sdk::{ChangeBatch, Column, Operation};

use crate::sql::quote_ident;
use crate::tables::{MirroredTable, Mode};
use crate::types::{array_element, Decoder};

#[path = "binary_values.rs"]
mod values;
#[cfg(test)]
use values::*;
use values::{push_value, Pushed, Values};

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
    /// Kept only from the column's first null on (then it covers every row): a column with
    /// no null costs no validity push per value.
    validity: Vec<bool>,
    has_null: bool,
}

/// How large a batch grew: rows, and the bytes of each packed string column (0 for others).
#[derive(Debug, Clone, Default)]
pub struct BatchSize {
    rows: usize,
    bytes: Vec<usize>,
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
                    validity: Vec::new(),
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

    /// A batch with room for as much as `size` (the last batch of the table, usually the
    /// size of the next): no regrowth of its vectors while a poll fills it.
    pub fn with_size(plan: &BinaryPlan, mode: Mode, size: &BatchSize) -> BinaryBatch {
        let mut batch = BinaryBatch::new(plan, mode);
        batch.operations.reserve(size.rows);
        for (i, column) in batch.columns.iter_mut().enumerate() {
            let bytes = size.bytes.get(i).copied().unwrap_or(0);
            column.values.reserve(size.rows, bytes);
        }
        batch
    }

    /// How large this batch grew.
    pub fn size(&self) -> BatchSize {
        BatchSize {
            rows: self.operations.len(),
            bytes: self
                .columns
                .iter()
                .map(|c| c.values.packed_bytes())
                .collect(),
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
            if !column.has_null {
                column.has_null = true;
                column.validity.resize(row, true);
            }
        }
        if column.has_null {
            column.validity.push(valid);
        }
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
