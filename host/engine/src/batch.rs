//! Change batches: rows for one table, in the table's Arrow schema, with one operation per row.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Time64MicrosecondType};
use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::schema::{ColumnSchema, ColumnType, TableSchema};

/// What a row does to its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// A new row; refused on a keyed table if the key is already present.
    Insert,
    /// Inserts the row, or replaces the live row with the same key.
    Upsert,
    /// Deletes the live row with the row's key (only key columns need values).
    Delete,
}

/// A validated batch of changes for one table.
///
/// Invariant: `rows` has exactly the table's Arrow schema (same fields, order and types), no
/// null in a non-nullable column, and `operations.len() == rows.num_rows()`.
#[derive(Debug, Clone)]
pub struct ChangeBatch {
    operations: Vec<Operation>,
    rows: RecordBatch,
    /// Per column index: rows whose value the source did not send (Postgres's unchanged
    /// TOAST). An upsert keeps the row's current value there; the table fills them in before
    /// the batch is buffered, so stored batches never carry this.
    unchanged: Vec<(usize, Vec<bool>)>,
}

impl ChangeBatch {
    /// Builds a batch from named columns, checking them against `schema`.
    ///
    /// Columns may come in any order; a nullable column may be missing (all null). Errors name
    /// the column, and the first offending row where there is one.
    pub fn from_columns(
        schema: &TableSchema,
        operations: Vec<Operation>,
        columns: Vec<(String, ArrayRef)>,
    ) -> Result<Self> {
        Self::from_columns_keeping(schema, operations, columns, Vec::new())
    }

    /// [`ChangeBatch::from_columns`], where `unchanged` names, per column, the rows whose value
    /// was not sent and must keep the row's current value (only for upserts on keyed tables).
    pub fn from_columns_keeping(
        schema: &TableSchema,
        operations: Vec<Operation>,
        columns: Vec<(String, ArrayRef)>,
        unchanged: Vec<(String, Vec<bool>)>,
    ) -> Result<Self> {
        let num_rows = operations.len();
        let mut unchanged_by_index = Vec::with_capacity(unchanged.len());
        for (name, mask) in unchanged {
            let Some(index) = schema.column_index(&name) else {
                return Err(EngineError::invalid_batch(
                    Some(&name),
                    "no such column in the table",
                ));
            };
            if mask.len() != num_rows {
                return Err(EngineError::invalid_batch(
                    Some(&name),
                    "unchanged-value mask length differs from the row count",
                ));
            }
            if !mask.iter().any(|u| *u) {
                continue;
            }
            if schema.primary_key.is_empty() || schema.primary_key.contains(&name) {
                return Err(EngineError::invalid_batch(
                    Some(&name),
                    "only non-key columns of keyed tables can keep unchanged values",
                ));
            }
            if let Some(row) =
                (0..num_rows).find(|&r| mask[r] && operations[r] != Operation::Upsert)
            {
                return Err(EngineError::InvalidBatch {
                    row: Some(row),
                    column: Some(name),
                    message: "an unchanged value is only meaningful in an upsert".into(),
                });
            }
            unchanged_by_index.push((index, mask));
        }
        let is_unchanged = |index: usize, row: usize| {
            unchanged_by_index
                .iter()
                .any(|(i, mask)| *i == index && mask[row])
        };
        let arrow_schema = schema.arrow_schema();
        let mut slots: Vec<Option<ArrayRef>> = vec![None; schema.columns.len()];
        for (name, array) in columns {
            let Some(index) = schema.column_index(&name) else {
                return Err(EngineError::invalid_batch(
                    Some(&name),
                    "no such column in the table",
                ));
            };
            if slots[index].is_some() {
                return Err(EngineError::invalid_batch(
                    Some(&name),
                    "column given twice",
                ));
            }
            if array.len() != num_rows {
                return Err(EngineError::invalid_batch(
                    Some(&name),
                    format!(
                        "has {} values but the batch has {num_rows} rows",
                        array.len()
                    ),
                ));
            }
            let expected = arrow_schema.field(index).data_type();
            if array.data_type() != expected {
                return Err(EngineError::invalid_batch(
                    Some(&name),
                    format!(
                        "expected {} values, got Arrow type {}",
                        schema.columns[index].data_type.name(),
                        array.data_type()
                    ),
                ));
            }
            check_values(&schema.columns[index], &array)?;
            slots[index] = Some(array);
        }
        let mut arrays = Vec::with_capacity(slots.len());
        for (index, slot) in slots.into_iter().enumerate() {
            let column = &schema.columns[index];
            let slot = match schema.default_of(index) {
                Some(default) => Some(fill_default(
                    slot,
                    default,
                    arrow_schema.field(index).data_type(),
                    &operations,
                    |row| is_unchanged(index, row),
                )?),
                None => slot,
            };
            let array = match slot {
                Some(a) => a,
                None if column.nullable => {
                    new_null_array(arrow_schema.field(index).data_type(), num_rows)
                }
                None => {
                    // A delete needs only the key: other columns are filled with nulls, which
                    // never reach a data file.
                    let all_deletes = operations.iter().all(|o| *o == Operation::Delete);
                    if all_deletes && !schema.primary_key.contains(&column.name) {
                        new_null_array(arrow_schema.field(index).data_type(), num_rows)
                    } else {
                        return Err(EngineError::invalid_batch(
                            Some(&column.name),
                            "missing value for a non-nullable column",
                        ));
                    }
                }
            };
            if !column.nullable && array.null_count() > 0 {
                let deletes_only_nulls = (0..num_rows).all(|r| {
                    array.is_valid(r)
                        || operations[r] == Operation::Delete
                        || is_unchanged(index, r)
                }) && !schema.primary_key.contains(&column.name);
                if !deletes_only_nulls {
                    let row = (0..num_rows)
                        .find(|&r| array.is_null(r) && operations[r] != Operation::Delete)
                        .or_else(|| (0..num_rows).find(|&r| array.is_null(r)));
                    return Err(EngineError::InvalidBatch {
                        row,
                        column: Some(column.name.clone()),
                        message: "null in a non-nullable column".into(),
                    });
                }
            }
            arrays.push(array);
        }
        // Nullability is enforced above per operation; the stored schema keeps declared
        // nullability, so build the record batch against a relaxed copy when deletes carry nulls
        // (made only then: copying every field per batch showed in ingest profiles).
        let has_null_in_required = arrays
            .iter()
            .zip(arrow_schema.fields())
            .any(|(a, f)| !f.is_nullable() && a.null_count() > 0);
        let batch_schema = if has_null_in_required {
            Arc::new(arrow_schema::Schema::new(
                arrow_schema
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            ))
        } else {
            arrow_schema
        };
        let rows = RecordBatch::try_new(batch_schema, arrays)?;
        Ok(ChangeBatch {
            operations,
            rows,
            unchanged: unchanged_by_index,
        })
    }

    /// Wraps an already-shaped record batch (e.g. replayed from the write-ahead log).
    pub(crate) fn from_parts(operations: Vec<Operation>, rows: RecordBatch) -> Self {
        debug_assert_eq!(operations.len(), rows.num_rows());
        ChangeBatch {
            operations,
            rows,
            unchanged: Vec::new(),
        }
    }

    /// Checks that the batch still has the shape of `arrow` (the table's Arrow schema): the
    /// table may have been dropped and recreated, or evolved, since the batch was decoded
    /// against its old schema. Nullability is not compared (deletes may carry nulls).
    pub(crate) fn check_shape(&self, table: &str, arrow: &arrow_schema::SchemaRef) -> Result<()> {
        let ours = self.rows.schema();
        // Batches built against the table's current schema share its `Arc` (see
        // `TableSchema::arrow_schema`).
        if Arc::ptr_eq(&ours, arrow) {
            return Ok(());
        }
        let same = ours.fields().len() == arrow.fields().len()
            && ours.fields().iter().zip(arrow.fields()).all(|(a, b)| {
                a.name() == b.name()
                    && a.data_type() == b.data_type()
                    && a.metadata() == b.metadata()
            });
        if same {
            Ok(())
        } else {
            Err(EngineError::SchemaChanged(table.to_string()))
        }
    }

    /// Re-checks every value against `schema` (see [`ChangeBatch::from_columns`]): used on
    /// batches read back from the write-ahead log, which older versions may have accepted.
    pub(crate) fn check_values(&self, schema: &TableSchema) -> Result<()> {
        for (column, array) in schema.columns.iter().zip(self.rows.columns()) {
            check_values(column, array)?;
        }
        Ok(())
    }

    /// Columns (by index) with rows whose value must be kept from the current row.
    pub fn unchanged(&self) -> &[(usize, Vec<bool>)] {
        &self.unchanged
    }

    /// The batch with `column` replaced and no unchanged values left (the table filled them).
    pub(crate) fn with_filled(mut self, filled: Vec<(usize, ArrayRef)>) -> Result<Self> {
        let mut columns = self.rows.columns().to_vec();
        for (index, array) in filled {
            columns[index] = array;
        }
        self.rows = RecordBatch::try_new(self.rows.schema(), columns)?;
        self.unchanged.clear();
        Ok(self)
    }

    /// The operation of each row, in row order.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// The rows, with the table's Arrow schema.
    pub fn rows(&self) -> &RecordBatch {
        &self.rows
    }

    /// The number of rows.
    pub fn num_rows(&self) -> usize {
        self.operations.len()
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }
}

/// Microseconds in a day: Iceberg `time` values lie in `0..TIME_MICROS_PER_DAY`.
const TIME_MICROS_PER_DAY: i64 = 86_400_000_000;

/// Refuses values the column's type can carry in Arrow but Iceberg or the Parquet writer would
/// refuse at commit: a `time` outside one day, a decimal wider than its precision. Checked
/// before a batch is logged, so nothing in the write-ahead log can fail a commit.
/// A column with a default (`write-default`): a value missing or null in an inserted or
/// upserted row gets the default (deletes and unchanged TOAST values are left alone).
fn fill_default(
    slot: Option<ArrayRef>,
    default: &serde_json::Value,
    data_type: &DataType,
    operations: &[Operation],
    unchanged: impl Fn(usize) -> bool,
) -> Result<ArrayRef> {
    let rows = operations.len();
    let array = slot.unwrap_or_else(|| new_null_array(data_type, rows));
    if array.null_count() == 0 {
        return Ok(array);
    }
    let Some(values) = crate::schema_change::default_array(&default.to_string(), data_type, rows)
    else {
        return Ok(array);
    };
    let mask: arrow_array::BooleanArray = (0..rows)
        .map(|r| Some(array.is_null(r) && operations[r] != Operation::Delete && !unchanged(r)))
        .collect();
    Ok(arrow_select::zip::zip(&mask, &values, &array)?)
}

pub(crate) fn check_values(column: &ColumnSchema, array: &ArrayRef) -> Result<()> {
    let bad = |row: Option<usize>, message: String| EngineError::InvalidBatch {
        row,
        column: Some(column.name.clone()),
        message,
    };
    let checked = |t: &ColumnType| matches!(t, ColumnType::Time | ColumnType::Decimal { .. });
    // A list's elements and a map's keys and values are checked as flat arrays; the error
    // names the row of the list or map.
    let (flat, offsets): (Vec<ArrayRef>, Option<&[i32]>) = match &column.data_type {
        ColumnType::List(element) if checked(element) => {
            let Some(list) = array.as_list_opt::<i32>() else {
                return Ok(());
            };
            (vec![list.values().clone()], Some(list.value_offsets()))
        }
        ColumnType::Map { key, value } => {
            let Some(map) = array.as_map_opt() else {
                return Ok(());
            };
            if map.keys().null_count() > 0 {
                let i = (0..map.keys().len()).find(|&i| map.keys().is_null(i));
                let row = i.map(|i| row_in(map.value_offsets(), i));
                return Err(bad(row, "a map key is null (keys never are)".into()));
            }
            let mut flat = Vec::new();
            if checked(key) {
                flat.push(map.keys().clone());
            }
            if checked(value) {
                flat.push(map.values().clone());
            }
            (flat, Some(map.value_offsets()))
        }
        scalar if checked(scalar) => (vec![array.clone()], None),
        _ => return Ok(()),
    };
    for values in flat {
        let row_of = |i: usize| match offsets {
            Some(offsets) => row_in(offsets, i),
            None => i,
        };
        check_flat(&values, row_of).map_err(|(row, message)| bad(Some(row), message))?;
    }
    Ok(())
}

/// The row whose range of `offsets` holds flat index `i`.
fn row_in(offsets: &[i32], i: usize) -> usize {
    offsets
        .partition_point(|&o| (o as usize) <= i)
        .saturating_sub(1)
}

/// Time and decimal values Arrow allows and Iceberg does not: (row, why).
fn check_flat(
    values: &ArrayRef,
    row_of: impl Fn(usize) -> usize,
) -> std::result::Result<(), (usize, String)> {
    let bad = |row: Option<usize>, message: String| (row.unwrap_or(0), message);
    match values.data_type() {
        DataType::Time64(_) => {
            let times = values.as_primitive::<Time64MicrosecondType>();
            if let Some(i) = (0..times.len())
                .find(|&i| times.is_valid(i) && !(0..TIME_MICROS_PER_DAY).contains(&times.value(i)))
            {
                return Err(bad(
                    Some(row_of(i)),
                    format!(
                        "time value {} µs is outside a day (0 to 86399999999 µs, \
                         00:00:00 to 23:59:59.999999)",
                        times.value(i)
                    ),
                ));
            }
        }
        DataType::Decimal128(precision, scale) => {
            let decimals = values.as_primitive::<Decimal128Type>();
            let max = 10i128.pow(u32::from(*precision));
            if let Some(i) = (0..decimals.len())
                .find(|&i| decimals.is_valid(i) && decimals.value(i).unsigned_abs() >= max as u128)
            {
                return Err(bad(
                    Some(row_of(i)),
                    format!(
                        "decimal value {} has more than {precision} digits \
                         (decimal({precision},{scale}))",
                        decimals.value_as_string(i)
                    ),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};

    fn schema() -> TableSchema {
        TableSchema::new(
            vec![
                ColumnSchema {
                    name: "id".into(),
                    data_type: ColumnType::Int64,
                    nullable: false,
                },
                ColumnSchema {
                    name: "name".into(),
                    data_type: ColumnType::Utf8,
                    nullable: true,
                },
            ],
            vec![],
        )
    }

    #[test]
    fn missing_nullable_column_becomes_nulls() {
        let b = ChangeBatch::from_columns(
            &schema(),
            vec![Operation::Insert; 2],
            vec![(
                "id".into(),
                Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
            )],
        )
        .unwrap();
        assert_eq!(b.rows().column(1).null_count(), 2);
    }

    #[test]
    fn null_in_required_column_names_row_and_column() {
        let err = ChangeBatch::from_columns(
            &schema(),
            vec![Operation::Insert; 3],
            vec![(
                "id".into(),
                Arc::new(Int64Array::from(vec![Some(1), Some(2), None])) as ArrayRef,
            )],
        )
        .unwrap_err();
        match err {
            EngineError::InvalidBatch { row, column, .. } => {
                assert_eq!(row, Some(2));
                assert_eq!(column.as_deref(), Some("id"));
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn wrong_type_and_unknown_column_are_rejected() {
        let wrong = ChangeBatch::from_columns(
            &schema(),
            vec![Operation::Insert],
            vec![(
                "id".into(),
                Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
            )],
        );
        assert!(matches!(wrong, Err(EngineError::InvalidBatch { .. })));
        let unknown = ChangeBatch::from_columns(
            &schema(),
            vec![Operation::Insert],
            vec![
                ("id".into(), Arc::new(Int64Array::from(vec![1])) as ArrayRef),
                (
                    "nope".into(),
                    Arc::new(Int64Array::from(vec![1])) as ArrayRef,
                ),
            ],
        );
        assert!(matches!(unknown, Err(EngineError::InvalidBatch { .. })));
    }

    #[test]
    fn batches_of_one_schema_share_its_arrow_schema() {
        let a = ChangeBatch::from_columns(
            &schema(),
            vec![Operation::Insert; 2],
            vec![(
                "id".into(),
                Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
            )],
        )
        .unwrap();
        // Built once per schema: the shape check against the table is a pointer comparison.
        let table = schema().arrow_schema();
        assert!(Arc::ptr_eq(&a.rows().schema(), &table));
        assert!(a.check_shape("t", &table).is_ok());
        // A different schema gets its own.
        let other = TableSchema::new(schema().columns[..1].to_vec(), vec![]);
        assert!(!Arc::ptr_eq(&other.arrow_schema(), &table));
        assert!(a.check_shape("t", &other.arrow_schema()).is_err());
    }
}
