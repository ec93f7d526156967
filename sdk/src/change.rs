//! Reading and reshaping change batches without touching their physical form: a transform
//! asks for a row's values by column name, keeps the rows it wants, rewrites string columns,
//! and never sees the two string encodings (`utf8` and packed `utf8-buffer`) or array offsets.

use crate::{
    ArrayValues, ChangeBatch, Column, ColumnValues, ElementValues, Int128, MapValues, Operation,
    Utf8Buffer, Value,
};

impl ChangeBatch {
    /// Rows in the batch.
    pub fn num_rows(&self) -> usize {
        self.operations.len()
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The column named `name`, to change.
    pub fn column_mut(&mut self, name: &str) -> Option<&mut Column> {
        self.columns.iter_mut().find(|c| c.name == name)
    }

    /// Row `row` (0-based) to read.
    pub fn row(&self, row: usize) -> RowRef<'_> {
        RowRef { batch: self, row }
    }

    /// Keeps the rows for which `keep` returns true, in order, in every column.
    ///
    /// ```
    /// # use moonlink_sdk::{BatchBuilder, DataType, Field, Operation, TableSchema, Value};
    /// # let schema = TableSchema::new(vec![Field::required("id", DataType::Int64)]);
    /// # let mut batch = BatchBuilder::new("t", &schema);
    /// # for id in 1..=4_i64 { let mut row = batch.row(); row.set("id", id)?; row.finish(Operation::Insert)?; }
    /// let mut batch = batch.finish();
    /// batch.retain_rows(|row| row.get("id") != Some(Value::Int(2)));
    /// assert_eq!(batch.num_rows(), 3);
    /// # Ok::<(), moonlink_sdk::DataError>(())
    /// ```
    pub fn retain_rows(&mut self, mut keep: impl FnMut(RowRef<'_>) -> bool) {
        let keep: Vec<bool> = (0..self.num_rows()).map(|r| keep(self.row(r))).collect();
        if keep.iter().all(|k| *k) {
            return;
        }
        self.operations = pick(std::mem::take(&mut self.operations), &keep);
        for c in &mut self.columns {
            c.validity = c.validity.take().map(|v| pick(v, &keep));
            c.unchanged = c.unchanged.take().map(|v| pick(v, &keep));
            let values = std::mem::replace(&mut c.values, ColumnValues::Boolean(Vec::new()));
            c.values = pick_values(values, &keep);
        }
    }
}

/// One row of a [`ChangeBatch`], read by column name.
#[derive(Clone, Copy)]
pub struct RowRef<'a> {
    batch: &'a ChangeBatch,
    row: usize,
}

impl RowRef<'_> {
    /// The row's position in the batch.
    pub fn index(&self) -> usize {
        self.row
    }

    /// What the row does to its table.
    pub fn operation(&self) -> Operation {
        self.batch.operations[self.row]
    }

    /// The value of `column` (`Value::Null` when null or not sent); `None` when the batch has
    /// no such column.
    pub fn get(&self, column: &str) -> Option<Value> {
        Some(self.batch.column(column)?.value(self.row))
    }

    /// The value of a string column as text, whichever encoding it travels in; `None` when
    /// null, not a string, or no such column.
    pub fn str(&self, column: &str) -> Option<&str> {
        self.batch.column(column)?.str(self.row)
    }
}

impl Column {
    /// Whether row `row` holds a value (not null, not marked unchanged).
    pub fn is_valid(&self, row: usize) -> bool {
        self.validity.as_ref().is_none_or(|v| v[row])
            && self.unchanged.as_ref().is_none_or(|u| !u[row])
    }

    /// The value at `row` as a [`Value`] (integer forms for dates, times and timestamps;
    /// unscaled integers for decimals), or `Value::Null`.
    pub fn value(&self, row: usize) -> Value {
        if !self.is_valid(row) {
            return Value::Null;
        }
        match &self.values {
            ColumnValues::Int16(v) => Value::Int(v[row].into()),
            ColumnValues::Int32(v) => Value::Int(v[row].into()),
            ColumnValues::Int64(v) => Value::Int(v[row]),
            ColumnValues::Float32(v) => Value::Float(v[row].into()),
            ColumnValues::Float64(v) => Value::Float(v[row]),
            ColumnValues::Boolean(v) => Value::Bool(v[row]),
            ColumnValues::Binary(v) => Value::Bytes(v[row].clone()),
            ColumnValues::Int128(v) => Value::Int128(int128(v[row])),
            ColumnValues::Utf8(_) | ColumnValues::Utf8Buffer(_) => {
                Value::Str(self.str(row).unwrap_or_default().to_string())
            }
            ColumnValues::Array(a) => {
                let (start, end) = (a.offsets[row] as usize, a.offsets[row + 1] as usize);
                Value::List(
                    (start..end)
                        .map(|i| match &a.element_validity {
                            Some(valid) if !valid[i] => Value::Null,
                            _ => element_value(&a.elements, i),
                        })
                        .collect(),
                )
            }
            ColumnValues::Map(m) => {
                let (start, end) = (m.offsets[row] as usize, m.offsets[row + 1] as usize);
                Value::Map(
                    (start..end)
                        .map(|i| {
                            let value = match &m.value_validity {
                                Some(valid) if !valid[i] => Value::Null,
                                _ => element_value(&m.values, i),
                            };
                            (element_value(&m.keys, i), value)
                        })
                        .collect(),
                )
            }
        }
    }

    /// The text at `row` of a string column, whichever encoding it travels in; `None` when
    /// null or not a string column.
    pub fn str(&self, row: usize) -> Option<&str> {
        if !self.is_valid(row) {
            return None;
        }
        match &self.values {
            ColumnValues::Utf8(v) => Some(&v[row]),
            ColumnValues::Utf8Buffer(b) => {
                let bytes = &b.data[b.offsets[row] as usize..b.offsets[row + 1] as usize];
                Some(std::str::from_utf8(bytes).unwrap_or(""))
            }
            _ => None,
        }
    }

    /// Every row of a string column as text (`None` for nulls), whichever encoding it
    /// travels in; `None` when the column does not hold strings.
    pub fn strings(&self) -> Option<Vec<Option<&str>>> {
        let values = self.values.strings()?;
        Some(
            values
                .into_iter()
                .enumerate()
                .map(|(row, s)| self.is_valid(row).then_some(s))
                .collect(),
        )
    }

    /// Replaces every non-null value of a string column with `f(value)`; nulls stay null.
    /// The error names the column when it does not hold strings.
    pub fn map_strings(&mut self, mut f: impl FnMut(&str) -> String) -> Result<(), String> {
        let Some(values) = self.strings() else {
            return Err(format!("column '{}' is not a string column", self.name));
        };
        let mut out = Utf8Buffer {
            offsets: vec![0],
            data: Vec::new(),
        };
        for value in values {
            if let Some(s) = value {
                out.data.extend_from_slice(f(s).as_bytes());
            }
            out.offsets.push(out.data.len() as u32);
        }
        self.values = ColumnValues::Utf8Buffer(out);
        Ok(())
    }
}

fn int128(v: Int128) -> i128 {
    (i128::from(v.hi) << 64) | i128::from(v.lo)
}

fn element_value(elements: &ElementValues, i: usize) -> Value {
    match elements {
        ElementValues::Int16(v) => Value::Int(v[i].into()),
        ElementValues::Int32(v) => Value::Int(v[i].into()),
        ElementValues::Int64(v) => Value::Int(v[i]),
        ElementValues::Float32(v) => Value::Float(v[i].into()),
        ElementValues::Float64(v) => Value::Float(v[i]),
        ElementValues::Boolean(v) => Value::Bool(v[i]),
        ElementValues::Utf8(v) => Value::Str(v[i].clone()),
        ElementValues::Binary(v) => Value::Bytes(v[i].clone()),
        ElementValues::Int128(v) => Value::Int128(int128(v[i])),
        ElementValues::Utf8Buffer(b) => {
            let bytes = &b.data[b.offsets[i] as usize..b.offsets[i + 1] as usize];
            Value::Str(String::from_utf8_lossy(bytes).into_owned())
        }
    }
}

fn pick<T>(v: Vec<T>, keep: &[bool]) -> Vec<T> {
    v.into_iter()
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|(x, _)| x)
        .collect()
}

fn pick_values(values: ColumnValues, keep: &[bool]) -> ColumnValues {
    match values {
        ColumnValues::Int16(v) => ColumnValues::Int16(pick(v, keep)),
        ColumnValues::Int32(v) => ColumnValues::Int32(pick(v, keep)),
        ColumnValues::Int64(v) => ColumnValues::Int64(pick(v, keep)),
        ColumnValues::Float32(v) => ColumnValues::Float32(pick(v, keep)),
        ColumnValues::Float64(v) => ColumnValues::Float64(pick(v, keep)),
        ColumnValues::Boolean(v) => ColumnValues::Boolean(pick(v, keep)),
        ColumnValues::Utf8(v) => ColumnValues::Utf8(pick(v, keep)),
        ColumnValues::Binary(v) => ColumnValues::Binary(pick(v, keep)),
        ColumnValues::Int128(v) => ColumnValues::Int128(pick(v, keep)),
        ColumnValues::Array(a) => ColumnValues::Array(pick_array(a, keep)),
        ColumnValues::Utf8Buffer(b) => ColumnValues::Utf8Buffer(pick_strings(b, keep)),
        ColumnValues::Map(m) => {
            let (offsets, k) = pick_ranges(&m.offsets, keep);
            ColumnValues::Map(MapValues {
                offsets,
                value_validity: m.value_validity.map(|v| pick(v, &k)),
                keys: pick_elements(m.keys, &k),
                values: pick_elements(m.values, &k),
            })
        }
    }
}

/// The offsets of the kept rows' ranges, re-based, and which entries they keep.
fn pick_ranges(offsets: &[u32], keep: &[bool]) -> (Vec<u32>, Vec<bool>) {
    let total = offsets.last().copied().unwrap_or(0) as usize;
    let mut entry_keep = vec![false; total];
    let mut out = vec![0u32];
    for (row, kept) in keep.iter().enumerate() {
        let (start, end) = (offsets[row], offsets[row + 1]);
        if *kept {
            entry_keep[start as usize..end as usize].fill(true);
            out.push(out.last().unwrap() + (end - start));
        }
    }
    (out, entry_keep)
}

fn pick_elements(elements: ElementValues, k: &[bool]) -> ElementValues {
    match elements {
        ElementValues::Int16(v) => ElementValues::Int16(pick(v, k)),
        ElementValues::Int32(v) => ElementValues::Int32(pick(v, k)),
        ElementValues::Int64(v) => ElementValues::Int64(pick(v, k)),
        ElementValues::Float32(v) => ElementValues::Float32(pick(v, k)),
        ElementValues::Float64(v) => ElementValues::Float64(pick(v, k)),
        ElementValues::Boolean(v) => ElementValues::Boolean(pick(v, k)),
        ElementValues::Utf8(v) => ElementValues::Utf8(pick(v, k)),
        ElementValues::Binary(v) => ElementValues::Binary(pick(v, k)),
        ElementValues::Int128(v) => ElementValues::Int128(pick(v, k)),
        ElementValues::Utf8Buffer(b) => ElementValues::Utf8Buffer(pick_strings(b, k)),
    }
}

/// Keeps the rows of an array column where `keep[row]`: their element ranges, re-based.
fn pick_array(a: ArrayValues, keep: &[bool]) -> ArrayValues {
    let (offsets, k) = pick_ranges(&a.offsets, keep);
    ArrayValues {
        offsets,
        element_validity: a.element_validity.map(|v| pick(v, &k)),
        elements: pick_elements(a.elements, &k),
    }
}

/// Keeps the packed strings of the rows where `keep[row]`.
fn pick_strings(b: Utf8Buffer, keep: &[bool]) -> Utf8Buffer {
    let mut out = Utf8Buffer {
        offsets: vec![0],
        data: Vec::with_capacity(b.data.len()),
    };
    for (row, kept) in keep.iter().enumerate() {
        if *kept {
            let (start, end) = (b.offsets[row] as usize, b.offsets[row + 1] as usize);
            out.data.extend_from_slice(&b.data[start..end]);
            out.offsets.push(out.data.len() as u32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::{BatchBuilder, ChangeBatch, Column, ColumnValues, Operation, Value};
    use crate::{DataType, Field, TableSchema};

    /// The same strings in both encodings, with a null.
    fn batch(packed: bool) -> ChangeBatch {
        let schema = TableSchema::new(vec![
            Field::required("id", DataType::Int64),
            Field::nullable("s", DataType::Utf8),
        ]);
        let mut b = BatchBuilder::new("t", &schema);
        for (id, s) in [(1, Some("a")), (2, None), (3, Some("ccc"))] {
            let mut row = b.row();
            row.set("id", id as i64).unwrap();
            row.set("s", s).unwrap();
            row.finish(Operation::Upsert).unwrap();
        }
        let mut batch = b.finish();
        if !packed {
            let strings: Vec<String> = batch.columns[1]
                .values
                .strings()
                .unwrap()
                .iter()
                .map(|s| s.to_string())
                .collect();
            batch.columns[1].values = ColumnValues::Utf8(strings);
        }
        batch
    }

    #[test]
    fn rows_read_and_filter_the_same_in_both_string_encodings() {
        for packed in [true, false] {
            let mut b = batch(packed);
            assert_eq!(
                b.columns[1].strings(),
                Some(vec![Some("a"), None, Some("ccc")])
            );
            assert_eq!(b.row(1).str("s"), None);
            assert_eq!(b.row(2).get("s"), Some(Value::from("ccc")));
            assert_eq!(b.row(0).get("nope"), None);
            b.retain_rows(|row| row.index() != 0);
            assert_eq!(b.num_rows(), 2);
            assert_eq!(b.columns[1].validity, Some(vec![false, true]));
            assert_eq!(b.row(1).str("s"), Some("ccc"));
            assert_eq!(b.row(0).get("id"), Some(Value::Int(2)));
            b.column_mut("s")
                .unwrap()
                .map_strings(|s| s.to_uppercase())
                .unwrap();
            assert_eq!(b.columns[1].strings(), Some(vec![None, Some("CCC")]));
        }
        let mut ids: Column = batch(true).columns.remove(0);
        assert!(ids
            .map_strings(|s| s.into())
            .unwrap_err()
            .contains("'id' is not a string"));
    }
}
