//! Schema changes asked for over HTTP (`POST /tables/{name}/schema`) and column defaults.
//!
//! A list of [`SchemaChange`]s is applied to a copy of the schema, one after the other, and the
//! result validated as a whole before anything is written: bad input changes nothing. Iceberg
//! rules (spec "Schema Evolution"): columns are matched by field id, so a rename keeps the id
//! and the data; a dropped id is never reused; only the type promotions the spec allows are
//! accepted (int → long, float → double, decimal precision up).
//!
//! Defaults (spec v3 `initial-default` / `write-default`): an added column may carry a value
//! that rows written before it existed read as (every reader fills it in for files without the
//! column), and that rows written without a value get. Both are the same value here; it is kept
//! in Iceberg's JSON single-value form in [`TableSchema::defaults`] and travels with the Arrow
//! schema as field metadata ([`INITIAL_DEFAULT_KEY`]) so that our own reads of old files
//! (merges, compaction, real-time reads) fill it in as other readers do.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Float32Array, Float64Array, Int32Array, Int64Array, StringArray, Time64MicrosecondArray,
    TimestampMicrosecondArray,
};
use arrow_schema::{DataType, TimeUnit};
use iceberg::spec::{Literal, PrimitiveLiteral, PrimitiveType, Type};

use crate::error::{EngineError, Result};
use crate::schema::{ColumnSchema, ColumnType, TableSchema};

/// Arrow field metadata key carrying a column's `initial-default` (Iceberg JSON single value).
pub const INITIAL_DEFAULT_KEY: &str = "moonlink:initial-default";

/// One change of a table's schema.
#[derive(Debug, Clone, PartialEq)]
pub enum SchemaChange {
    /// Adds a column (a new field id); `default` is its `initial-default` and `write-default`
    /// in Iceberg's JSON single-value form. A non-nullable column needs a default.
    Add {
        /// The new column's name.
        name: String,
        /// Its type.
        data_type: ColumnType,
        /// Whether it may hold nulls.
        nullable: bool,
        /// The value old rows read as and rows written without one get.
        default: Option<serde_json::Value>,
    },
    /// Drops a column (not a key column, not a partition source).
    Drop(String),
    /// Renames a column in place: same field id, so its data stays.
    Rename {
        /// The current name.
        from: String,
        /// The new name.
        to: String,
    },
    /// Promotes a column's type (int → long, float → double, decimal precision up).
    Widen {
        /// The column.
        name: String,
        /// The wider type.
        to: ColumnType,
    },
    /// Makes a required column nullable (not a key column).
    Nullable(String),
}

fn refused(message: impl Into<String>) -> EngineError {
    EngineError::InvalidSchemaChange(message.into())
}

fn key_column(message: impl Into<String>) -> EngineError {
    EngineError::KeyColumnChange(message.into())
}

impl TableSchema {
    /// The schema after `changes`, applied in order. `last_column_id` is the table's highest
    /// field id ever assigned (new ids go above it); `partition_sources` are the field ids the
    /// partition spec reads, which cannot be dropped. Errors: [`EngineError::KeyColumnChange`]
    /// for key columns and partition sources, [`EngineError::InvalidSchemaChange`] for the rest.
    pub fn apply_changes(
        &self,
        changes: &[SchemaChange],
        last_column_id: i32,
        partition_sources: &[i32],
    ) -> Result<TableSchema> {
        if changes.is_empty() {
            return Err(refused("no changes given"));
        }
        // Explicit ids from here on: positions no longer follow ids once columns move.
        let mut next = self.clone();
        next.field_ids = (0..self.columns.len()).map(|i| self.field_id(i)).collect();
        next.element_ids = (0..self.columns.len())
            .map(|i| match self.columns[i].data_type.nested_ids() {
                0 => 0,
                _ => self.element_id(i),
            })
            .collect();
        let mut last_id = last_column_id.max(self.max_field_id());
        for change in changes {
            next.apply_change(change, &mut last_id, partition_sources)?;
        }
        next.validate()
            .map_err(|e| refused(e.to_string().replace("invalid table definition: ", "")))?;
        Ok(next)
    }

    fn find(&self, name: &str) -> Result<usize> {
        self.column_index(name)
            .ok_or_else(|| refused(format!("column '{name}' does not exist")))
    }

    fn apply_change(
        &mut self,
        change: &SchemaChange,
        last_id: &mut i32,
        partition_sources: &[i32],
    ) -> Result<()> {
        match change {
            SchemaChange::Add {
                name,
                data_type,
                nullable,
                default,
            } => {
                if self.column(name).is_some() {
                    return Err(refused(format!("column '{name}' already exists")));
                }
                let column = ColumnSchema {
                    name: name.clone(),
                    data_type: data_type.clone(),
                    nullable: *nullable,
                };
                let default = match default {
                    Some(serde_json::Value::Null) | None => None,
                    Some(value) => Some(canonical_default(&column, value)?),
                };
                if !nullable && default.is_none() {
                    return Err(refused(format!(
                        "column '{name}' is not nullable: it needs a \"default\" for the rows \
                         written before it existed"
                    )));
                }
                *last_id += 1;
                let id = *last_id;
                let element = match data_type.nested_ids() {
                    0 => 0,
                    nested => {
                        *last_id += nested;
                        *last_id - nested + 1
                    }
                };
                self.columns.push(column);
                self.field_ids.push(id);
                self.element_ids.push(element);
                if let Some(default) = default {
                    self.defaults.insert(id, default);
                }
            }
            SchemaChange::Drop(name) => {
                let i = self.find(name)?;
                if self.primary_key.contains(name) {
                    return Err(key_column(format!(
                        "column '{name}' is part of the primary key and cannot be dropped"
                    )));
                }
                let id = self.field_id(i);
                if partition_sources.contains(&id) {
                    return Err(key_column(format!(
                        "column '{name}' is a partition source and cannot be dropped (change the \
                         partitioning first)"
                    )));
                }
                self.columns.remove(i);
                self.field_ids.remove(i);
                self.element_ids.remove(i);
                self.defaults.remove(&id);
            }
            SchemaChange::Rename { from, to } => {
                let i = self.find(from)?;
                if self.column(to).is_some() {
                    return Err(refused(format!(
                        "cannot rename '{from}' to '{to}': column '{to}' already exists"
                    )));
                }
                self.columns[i].name = to.clone();
                for key in self.primary_key.iter_mut().filter(|k| *k == from) {
                    *key = to.clone();
                }
            }
            SchemaChange::Widen { name, to } => {
                let i = self.find(name)?;
                if self.primary_key.contains(name) {
                    return Err(key_column(format!(
                        "column '{name}' is part of the primary key; key columns keep their type"
                    )));
                }
                let from = &self.columns[i].data_type;
                check_promotion(name, from, to)?;
                self.columns[i].data_type = to.clone();
            }
            SchemaChange::Nullable(name) => {
                let i = self.find(name)?;
                if self.primary_key.contains(name) {
                    return Err(key_column(format!(
                        "column '{name}' is part of the primary key and cannot be nullable"
                    )));
                }
                self.columns[i].nullable = true;
            }
        }
        Ok(())
    }

    /// The default of column `index` (Iceberg JSON single value), if it has one.
    pub fn default_of(&self, index: usize) -> Option<&serde_json::Value> {
        self.defaults.get(&self.field_id(index))
    }

    /// This schema as the body decoder should see it: a column with a default may be left
    /// out (it is filled in with the default by [`crate::ChangeBatch::from_columns`]).
    pub fn for_decoding(&self) -> TableSchema {
        let mut schema = self.clone();
        for i in 0..schema.columns.len() {
            if self.default_of(i).is_some() {
                schema.columns[i].nullable = true;
            }
        }
        schema
    }
}

/// The promotions Iceberg allows (spec "Schema Evolution", type promotion): int → long,
/// float → double, decimal(P, S) → decimal(P', S) with P' > P. `int16` is an Iceberg `int`.
fn check_promotion(name: &str, from: &ColumnType, to: &ColumnType) -> Result<()> {
    use ColumnType::*;
    let allowed = match (from, to) {
        (Int16, Int32 | Int64) | (Int32, Int64) | (Float32, Float64) => true,
        (
            Decimal {
                precision: p1,
                scale: s1,
            },
            Decimal {
                precision: p2,
                scale: s2,
            },
        ) => {
            if s1 != s2 {
                return Err(refused(format!(
                    "column '{name}': a decimal's scale cannot change ({} to {}); Iceberg only \
                     widens the precision",
                    from.name(),
                    to.name()
                )));
            }
            p2 > p1
        }
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    let reason = if from == to {
        format!("column '{name}' is already {}", from.name())
    } else {
        format!(
            "column '{name}' cannot be widened from {} to {}: Iceberg allows only int → long, \
             float → double and a decimal's precision up (a narrower or different type would \
             not read the existing files)",
            from.name(),
            to.name()
        )
    };
    Err(refused(reason))
}

/// Checks `value` as a default of `column` and returns it in canonical Iceberg JSON form.
pub(crate) fn canonical_default(
    column: &ColumnSchema,
    value: &serde_json::Value,
) -> Result<serde_json::Value> {
    let bad = |why: String| {
        refused(format!(
            "default {value} of column '{}' ({}): {why}",
            column.name,
            column.data_type.name()
        ))
    };
    if column.data_type.nested_ids() > 0 {
        return Err(bad("list and map columns cannot have a default".into()));
    }
    let arrow_type = column.data_type.arrow_type();
    let ty = iceberg_type_of(&arrow_type).ok_or_else(|| bad("no Iceberg type".into()))?;
    let literal = Literal::try_from_json(value.clone(), &ty)
        .map_err(|e| {
            bad(format!(
                "{e} (Iceberg's JSON form: numbers, true/false, strings; dates 'YYYY-MM-DD', \
                 timestamps 'YYYY-MM-DDTHH:MM:SS[.ffffff]', timestamptz ending '+00:00', \
                 decimals as strings, binary as hex)"
            ))
        })?
        .ok_or_else(|| bad("null is not a default".into()))?;
    // Whatever a batch would refuse (a decimal over its precision, a time past midnight).
    let array = literal_array(&literal, &arrow_type, 1)
        .ok_or_else(|| bad("no Arrow value for it".into()))?;
    crate::batch::check_values(column, &array).map_err(|e| bad(e.to_string()))?;
    literal.try_into_json(&ty).map_err(|e| bad(e.to_string()))
}

/// The Iceberg type of one of our Arrow column types (a 16-byte fixed binary is a UUID).
fn iceberg_type_of(arrow_type: &DataType) -> Option<Type> {
    match arrow_type {
        DataType::FixedSizeBinary(16) => Some(Type::Primitive(PrimitiveType::Uuid)),
        other => iceberg::arrow::arrow_type_to_type(other).ok(),
    }
}

/// The `initial-default` a field of a table's Arrow schema carries (the value rows written
/// before the column existed read as) as a one-row array; `None` without one.
pub fn initial_default(field: &arrow_schema::Field) -> Option<ArrayRef> {
    default_array(
        field.metadata().get(INITIAL_DEFAULT_KEY)?,
        field.data_type(),
        1,
    )
}

/// `rows` copies of the default `json` (Iceberg JSON single value) as an array of
/// `arrow_type`; `None` if it does not parse as that type.
pub(crate) fn default_array(json: &str, arrow_type: &DataType, rows: usize) -> Option<ArrayRef> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let ty = iceberg_type_of(arrow_type)?;
    let literal = Literal::try_from_json(value, &ty).ok()??;
    literal_array(&literal, arrow_type, rows)
}

/// `rows` copies of `literal` as an array of `arrow_type`.
fn literal_array(literal: &Literal, arrow_type: &DataType, rows: usize) -> Option<ArrayRef> {
    let Literal::Primitive(value) = literal else {
        return None;
    };
    use PrimitiveLiteral as P;
    let array: ArrayRef = match (arrow_type, value) {
        (DataType::Boolean, P::Boolean(v)) => Arc::new(BooleanArray::from(vec![*v; rows])),
        (DataType::Int32, P::Int(v)) => Arc::new(Int32Array::from(vec![*v; rows])),
        (DataType::Int64, P::Long(v)) => Arc::new(Int64Array::from(vec![*v; rows])),
        (DataType::Int64, P::Int(v)) => Arc::new(Int64Array::from(vec![*v as i64; rows])),
        (DataType::Float32, P::Float(v)) => Arc::new(Float32Array::from(vec![v.0; rows])),
        (DataType::Float64, P::Double(v)) => Arc::new(Float64Array::from(vec![v.0; rows])),
        (DataType::Float64, P::Float(v)) => Arc::new(Float64Array::from(vec![v.0 as f64; rows])),
        (DataType::Utf8, P::String(v)) => Arc::new(StringArray::from(vec![v.as_str(); rows])),
        (DataType::Date32, P::Int(v)) => Arc::new(Date32Array::from(vec![*v; rows])),
        (DataType::Decimal128(p, s), P::Int128(v)) => Arc::new(
            Decimal128Array::from(vec![*v; rows])
                .with_precision_and_scale(*p, *s)
                .ok()?,
        ),
        (DataType::Timestamp(TimeUnit::Microsecond, tz), P::Long(v)) => {
            Arc::new(TimestampMicrosecondArray::from(vec![*v; rows]).with_timezone_opt(tz.clone()))
        }
        (DataType::Time64(TimeUnit::Microsecond), P::Long(v)) => {
            Arc::new(Time64MicrosecondArray::from(vec![*v; rows]))
        }
        (DataType::Binary, P::Binary(v)) => Arc::new(BinaryArray::from(vec![v.as_slice(); rows])),
        (DataType::FixedSizeBinary(16), P::UInt128(v)) => {
            let bytes = v.to_be_bytes();
            Arc::new(FixedSizeBinaryArray::try_from_iter(std::iter::repeat_n(bytes, rows)).ok()?)
        }
        _ => return None,
    };
    Some(array)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn users() -> TableSchema {
        let col = |name: &str, data_type, nullable| ColumnSchema {
            name: name.into(),
            data_type,
            nullable,
        };
        TableSchema::new(
            vec![
                col("id", ColumnType::Int64, false),
                col("n", ColumnType::Int32, true),
                col("f", ColumnType::Float32, false),
                col(
                    "d",
                    ColumnType::Decimal {
                        precision: 9,
                        scale: 2,
                    },
                    true,
                ),
            ],
            vec!["id".into()],
        )
    }

    fn add(
        name: &str,
        ty: ColumnType,
        nullable: bool,
        default: Option<serde_json::Value>,
    ) -> SchemaChange {
        SchemaChange::Add {
            name: name.into(),
            data_type: ty,
            nullable,
            default,
        }
    }

    #[test]
    fn changes_apply_in_order_and_keep_field_ids() {
        let schema = users();
        let next = schema
            .apply_changes(
                &[
                    add("score", ColumnType::Int64, false, Some(json!(7))),
                    SchemaChange::Rename {
                        from: "n".into(),
                        to: "count".into(),
                    },
                    SchemaChange::Widen {
                        name: "count".into(),
                        to: ColumnType::Int64,
                    },
                    SchemaChange::Nullable("f".into()),
                    SchemaChange::Drop("d".into()),
                ],
                4,
                &[],
            )
            .unwrap();
        let names: Vec<&str> = next.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "count", "f", "score"]);
        assert_eq!(next.field_ids, vec![1, 2, 3, 5]);
        assert_eq!(next.columns[1].data_type, ColumnType::Int64);
        assert!(next.columns[2].nullable);
        assert_eq!(next.default_of(3), Some(&json!(7)));
        let iceberg = next.iceberg_schema().unwrap();
        let score = iceberg.field_by_id(5).unwrap();
        assert_eq!(score.initial_default, Some(Literal::long(7)));
        assert_eq!(score.write_default, Some(Literal::long(7)));
        // A dropped id is never reused.
        let again = next
            .apply_changes(&[add("d", ColumnType::Int32, true, None)], 5, &[])
            .unwrap();
        assert_eq!(again.field_id(4), 6);
    }

    #[test]
    fn bad_changes_are_refused_and_say_why() {
        let schema = users();
        let refused = |changes: &[SchemaChange], partition: &[i32]| {
            schema.apply_changes(changes, 4, partition).unwrap_err()
        };
        let is_key = |e: EngineError| matches!(e, EngineError::KeyColumnChange(_));
        let is_422 = |e: &EngineError| matches!(e, EngineError::InvalidSchemaChange(_));
        assert!(is_key(refused(&[SchemaChange::Drop("id".into())], &[])));
        assert!(is_key(refused(&[SchemaChange::Nullable("id".into())], &[])));
        assert!(is_key(refused(&[SchemaChange::Drop("n".into())], &[2])));
        for (change, words) in [
            (
                SchemaChange::Widen {
                    name: "n".into(),
                    to: ColumnType::Int16,
                },
                "cannot be widened",
            ),
            (
                SchemaChange::Widen {
                    name: "f".into(),
                    to: ColumnType::Int64,
                },
                "cannot be widened",
            ),
            (
                SchemaChange::Widen {
                    name: "d".into(),
                    to: ColumnType::Decimal {
                        precision: 12,
                        scale: 3,
                    },
                },
                "scale",
            ),
            (SchemaChange::Drop("nope".into()), "does not exist"),
            (add("n", ColumnType::Int32, true, None), "already exists"),
            (
                add("r", ColumnType::Int32, false, None),
                "needs a \"default\"",
            ),
            (
                add("r", ColumnType::Int32, true, Some(json!("x"))),
                "default",
            ),
            (
                add(
                    "r",
                    ColumnType::Decimal {
                        precision: 3,
                        scale: 1,
                    },
                    true,
                    Some(json!("1234.5")),
                ),
                "default",
            ),
            (
                SchemaChange::Rename {
                    from: "n".into(),
                    to: "f".into(),
                },
                "already exists",
            ),
        ] {
            let e = refused(std::slice::from_ref(&change), &[]);
            assert!(is_422(&e), "{change:?}: {e}");
            assert!(e.to_string().contains(words), "{change:?}: {e}");
        }
        assert!(is_422(&refused(&[], &[])));
    }

    #[test]
    fn defaults_become_arrays_of_every_scalar_type() {
        for (ty, value) in [
            (ColumnType::Int32, json!(3)),
            (ColumnType::Int64, json!(3)),
            (ColumnType::Float64, json!(1.5)),
            (ColumnType::Boolean, json!(true)),
            (ColumnType::Utf8, json!("x")),
            (ColumnType::Date32, json!("2026-01-02")),
            (
                ColumnType::Decimal {
                    precision: 9,
                    scale: 2,
                },
                json!("1.25"),
            ),
            (ColumnType::Timestamp, json!("2026-01-02T03:04:05")),
            (ColumnType::TimestampTz, json!("2026-01-02T03:04:05+00:00")),
            (ColumnType::Time, json!("03:04:05")),
            (
                ColumnType::Uuid,
                json!("f79c3e09-677c-4bbd-a479-3f349cb785e7"),
            ),
            (ColumnType::Binary, json!("0aff")),
        ] {
            let column = ColumnSchema {
                name: "c".into(),
                data_type: ty.clone(),
                nullable: true,
            };
            let canonical = canonical_default(&column, &value).unwrap();
            let array = default_array(&canonical.to_string(), &ty.arrow_type(), 3)
                .unwrap_or_else(|| panic!("{ty:?}"));
            assert_eq!(array.len(), 3);
            assert_eq!(array.data_type(), &ty.arrow_type());
        }
    }
}
