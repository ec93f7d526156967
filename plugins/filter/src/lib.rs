//! filter: keeps rows whose `column` satisfies `op` against `value`.
//!
//! Settings: `column`; `op` one of `eq ne lt le gt ge` (compare with `value`, a number or a
//! string) or `is_null`, `not_null`. Deletes always pass: dropping one would leave a row
//! behind in a keyed table. A null never satisfies a comparison.

use std::cmp::Ordering;

use moonlink_sdk::transform::Transform;
use moonlink_sdk::{
    ArrayValues, ChangeBatch, ColumnValues, Config, ElementValues, Operation, Utf8Buffer,
};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    IsNull,
    NotNull,
}

pub struct Filter {
    column: String,
    op: Op,
    value: Option<Value>,
}

impl Filter {
    fn keep(&self, column: &moonlink_sdk::Column, row: usize) -> bool {
        let valid = column.validity.as_ref().is_none_or(|v| v[row]);
        let ordering = |value: &Value| -> Option<Ordering> {
            if !valid {
                return None;
            }
            match (&column.values, value) {
                (ColumnValues::Int16(v), Value::Number(n)) => {
                    (v[row] as f64).partial_cmp(&n.as_f64()?)
                }
                (ColumnValues::Int32(v), Value::Number(n)) => {
                    (v[row] as f64).partial_cmp(&n.as_f64()?)
                }
                (ColumnValues::Int64(v), Value::Number(n)) => match n.as_i64() {
                    Some(i) => Some(v[row].cmp(&i)),
                    None => (v[row] as f64).partial_cmp(&n.as_f64()?),
                },
                (ColumnValues::Float32(v), Value::Number(n)) => {
                    (v[row] as f64).partial_cmp(&n.as_f64()?)
                }
                (ColumnValues::Float64(v), Value::Number(n)) => v[row].partial_cmp(&n.as_f64()?),
                (ColumnValues::Boolean(v), Value::Bool(b)) => Some(v[row].cmp(b)),
                (ColumnValues::Utf8(v), Value::String(s)) => Some(v[row].as_str().cmp(s.as_str())),
                (ColumnValues::Utf8Buffer(b), Value::String(s)) => {
                    let bytes = &b.data[b.offsets[row] as usize..b.offsets[row + 1] as usize];
                    Some(bytes.cmp(s.as_bytes()))
                }
                _ => None,
            }
        };
        match self.op {
            Op::IsNull => !valid,
            Op::NotNull => valid,
            op => {
                let Some(ord) = self.value.as_ref().and_then(ordering) else {
                    return false;
                };
                match op {
                    Op::Eq => ord == Ordering::Equal,
                    Op::Ne => ord != Ordering::Equal,
                    Op::Lt => ord == Ordering::Less,
                    Op::Le => ord != Ordering::Greater,
                    Op::Gt => ord == Ordering::Greater,
                    Op::Ge => ord != Ordering::Less,
                    Op::IsNull | Op::NotNull => unreachable!(),
                }
            }
        }
    }
}

fn pick<T: Clone>(v: Vec<T>, keep: &[bool]) -> Vec<T> {
    v.into_iter()
        .zip(keep)
        .filter(|(_, k)| **k)
        .map(|(x, _)| x)
        .collect()
}

/// Keeps the rows of an array column where `keep[row]`: their element ranges, re-based.
fn pick_array(a: ArrayValues, keep: &[bool]) -> ArrayValues {
    let total = a.offsets.last().copied().unwrap_or(0) as usize;
    let mut element_keep = vec![false; total];
    let mut offsets = vec![0u32];
    for (row, kept) in keep.iter().enumerate() {
        let (start, end) = (a.offsets[row], a.offsets[row + 1]);
        if *kept {
            element_keep[start as usize..end as usize].fill(true);
            offsets.push(offsets.last().unwrap() + (end - start));
        }
    }
    let k = &element_keep;
    ArrayValues {
        offsets,
        element_validity: a.element_validity.map(|v| pick(v, k)),
        elements: match a.elements {
            ElementValues::Int16(v) => ElementValues::Int16(pick(v, k)),
            ElementValues::Int32(v) => ElementValues::Int32(pick(v, k)),
            ElementValues::Int64(v) => ElementValues::Int64(pick(v, k)),
            ElementValues::Float32(v) => ElementValues::Float32(pick(v, k)),
            ElementValues::Float64(v) => ElementValues::Float64(pick(v, k)),
            ElementValues::Boolean(v) => ElementValues::Boolean(pick(v, k)),
            ElementValues::Utf8(v) => ElementValues::Utf8(pick(v, k)),
            ElementValues::Binary(v) => ElementValues::Binary(pick(v, k)),
            ElementValues::Int128(v) => ElementValues::Int128(pick(v, k)),
        },
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

/// Keeps the rows of `batch` where `keep[row]`, column by column.
pub fn select_rows(batch: ChangeBatch, keep: &[bool]) -> ChangeBatch {
    ChangeBatch {
        table: batch.table,
        operations: pick(batch.operations, keep),
        columns: batch
            .columns
            .into_iter()
            .map(|c| moonlink_sdk::Column {
                name: c.name,
                validity: c.validity.map(|v| pick(v, keep)),
                unchanged: c.unchanged.map(|v| pick(v, keep)),
                values: match c.values {
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
                },
            })
            .collect(),
    }
}

impl Transform for Filter {
    fn configure(config: Config) -> Result<Self, String> {
        let column = config.str("column")?.to_string();
        let op = match config.str("op")? {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "lt" => Op::Lt,
            "le" => Op::Le,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "is_null" => Op::IsNull,
            "not_null" => Op::NotNull,
            other => {
                return Err(format!(
                    "setting `op`: unknown operator '{other}' (expected eq, ne, lt, le, gt, ge, is_null, not_null)"
                ))
            }
        };
        let value = config.raw("value").cloned();
        if !matches!(op, Op::IsNull | Op::NotNull) && value.is_none() {
            return Err("setting `value` is required for comparison operators".into());
        }
        Ok(Filter { column, op, value })
    }

    fn apply(&mut self, batch: ChangeBatch) -> Result<Vec<ChangeBatch>, String> {
        let Some(column) = batch.columns.iter().find(|c| c.name == self.column) else {
            return Err(format!(
                "filter: batch for '{}' has no column '{}'",
                batch.table, self.column
            ));
        };
        let keep: Vec<bool> = (0..batch.operations.len())
            .map(|row| batch.operations[row] == Operation::Delete || self.keep(column, row))
            .collect();
        if keep.iter().all(|k| *k) {
            return Ok(vec![batch]);
        }
        let selected = select_rows(batch, &keep);
        Ok(if selected.operations.is_empty() {
            vec![]
        } else {
            vec![selected]
        })
    }
}

moonlink_sdk::export_transform!(Filter);

#[cfg(test)]
mod tests {
    use super::*;
    use moonlink_sdk::{BatchBuilder, Value as V};
    use moonlink_sdk::{DataType, Field, TableSchema};
    use serde_json::json;

    fn batch() -> ChangeBatch {
        let schema = TableSchema {
            fields: vec![
                Field {
                    name: "id".into(),
                    data_type: DataType::Int64,
                    nullable: false,
                },
                Field {
                    name: "kind".into(),
                    data_type: DataType::Utf8,
                    nullable: true,
                },
            ],
            primary_key: vec![],
        };
        let mut b = BatchBuilder::new("t", &schema);
        for (id, kind) in [(1, Some("a")), (2, Some("b")), (3, None)] {
            b.start_row(Operation::Insert);
            b.set(0, V::Int(id)).unwrap();
            if let Some(k) = kind {
                b.set(1, V::Str(k.into())).unwrap();
            }
            b.finish_row().unwrap();
        }
        b.finish()
    }

    fn ids(batches: &[ChangeBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| match &b.columns[0].values {
                ColumnValues::Int64(v) => v.clone(),
                _ => vec![],
            })
            .collect()
    }

    fn run(settings: serde_json::Value) -> Vec<i64> {
        let mut f = Filter::configure(Config::parse(&settings.to_string()).unwrap()).unwrap();
        ids(&f.apply(batch()).unwrap())
    }

    #[test]
    fn predicates() {
        assert_eq!(
            run(json!({"column": "kind", "op": "eq", "value": "b"})),
            vec![2]
        );
        assert_eq!(
            run(json!({"column": "kind", "op": "ne", "value": "b"})),
            vec![1]
        );
        assert_eq!(
            run(json!({"column": "id", "op": "ge", "value": 2})),
            vec![2, 3]
        );
        assert_eq!(run(json!({"column": "kind", "op": "is_null"})), vec![3]);
        assert_eq!(
            run(json!({"column": "id", "op": "gt", "value": 9})),
            Vec::<i64>::new()
        );
    }

    #[test]
    fn bad_settings() {
        assert!(Filter::configure(
            Config::parse(r#"{"column":"x","op":"like","value":1}"#).unwrap()
        )
        .is_err());
        assert!(Filter::configure(Config::parse(r#"{"column":"x","op":"eq"}"#).unwrap()).is_err());
    }
}
