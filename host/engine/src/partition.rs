//! Partitioned tables: `partition_by` expressions (`day(created_at)`, `bucket(16, id)`,
//! `region`, `truncate(4, sku)`) become an Iceberg partition spec, and rows are split by their
//! partition value with iceberg's own transform functions (`PartitionValueCalculator`), so
//! every data file holds one partition and its manifest entry carries the partition tuple
//! (spec "Partitioning"; the manifest writer adds the manifest list's partition summaries).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{RecordBatch, UInt32Array};
use iceberg::arrow::{arrow_struct_to_literal, PartitionValueCalculator};
use iceberg::spec::{
    Literal, PartitionSpec, Schema as IcebergSchema, Struct, StructType, TableMetadata, Transform,
    Type, UnboundPartitionSpec,
};

use crate::error::{EngineError, Result};

fn refused(expr: &str, why: impl std::fmt::Display) -> EngineError {
    EngineError::InvalidPartition(format!("'{expr}': {why}"))
}

/// The transforms `partition_by` accepts, as they are written.
const TRANSFORMS: &str =
    "identity(c) or c, year(c), month(c), day(c), hour(c), bucket(N, c), truncate(W, c)";

/// One parsed expression: (source column, transform, partition field name).
fn parse_expression(expr: &str) -> Result<(String, Transform, String)> {
    let text = expr.trim();
    if text.is_empty() {
        return Err(refused(expr, "an empty partition expression"));
    }
    let Some(open) = text.find('(') else {
        return Ok((text.to_string(), Transform::Identity, text.to_string()));
    };
    let Some(inner) = text[open + 1..].strip_suffix(')') else {
        return Err(refused(
            expr,
            format!("expected name(args); transforms: {TRANSFORMS}"),
        ));
    };
    let name = text[..open].trim().to_ascii_lowercase();
    let args: Vec<&str> = inner.split(',').map(str::trim).collect();
    let width = |what: &str| -> Result<u32> {
        if args.len() != 2 {
            return Err(refused(
                expr,
                format!("{name} needs {what} and a column: {name}(N, column)"),
            ));
        }
        match args[0].parse::<u32>() {
            Ok(n) if n > 0 && n <= i32::MAX as u32 => Ok(n),
            _ => Err(refused(
                expr,
                format!("{what} '{}' must be a positive integer", args[0]),
            )),
        }
    };
    let one = || -> Result<String> {
        match args.as_slice() {
            [column] if !column.is_empty() => Ok(column.to_string()),
            _ => Err(refused(
                expr,
                format!("{name} takes one column: {name}(column)"),
            )),
        }
    };
    let (column, transform, suffix) = match name.as_str() {
        "identity" => {
            let c = one()?;
            (c.clone(), Transform::Identity, None)
        }
        "year" | "years" => (one()?, Transform::Year, Some("year")),
        "month" | "months" => (one()?, Transform::Month, Some("month")),
        "day" | "days" => (one()?, Transform::Day, Some("day")),
        "hour" | "hours" => (one()?, Transform::Hour, Some("hour")),
        "bucket" => {
            let n = width("the number of buckets")?;
            (args[1].to_string(), Transform::Bucket(n), Some("bucket"))
        }
        "truncate" => {
            let w = width("the width")?;
            (args[1].to_string(), Transform::Truncate(w), Some("trunc"))
        }
        other => {
            return Err(refused(
                expr,
                format!("unknown transform '{other}' (transforms: {TRANSFORMS})"),
            ))
        }
    };
    if column.is_empty() {
        return Err(refused(expr, "no column named"));
    }
    // Partition field names as Java's `PartitionSpec.Builder` gives them.
    let field_name = match suffix {
        Some(s) => format!("{column}_{s}"),
        None => column.clone(),
    };
    Ok((column, transform, field_name))
}

/// The partition spec `partition_by` describes over `schema` (unpartitioned when empty).
/// Refused with [`EngineError::InvalidPartition`] naming the expression: an unknown transform,
/// a bucket or truncate without its number, a missing column, a transform the column's type
/// does not take (`day(name)` on a string), the same field twice.
pub fn partition_spec(
    schema: &IcebergSchema,
    partition_by: &[String],
) -> Result<UnboundPartitionSpec> {
    if partition_by.len() > 32 {
        return Err(EngineError::InvalidPartition(format!(
            "{} partition fields; at most 32",
            partition_by.len()
        )));
    }
    let mut builder = PartitionSpec::builder(Arc::new(schema.clone()));
    for expr in partition_by {
        let (column, transform, field_name) = parse_expression(expr)?;
        let Some(field) = schema.field_by_name(&column) else {
            return Err(refused(expr, format!("no column '{column}' in the table")));
        };
        let Type::Primitive(primitive) = field.field_type.as_ref() else {
            return Err(refused(
                expr,
                format!(
                    "column '{column}' is a {}; only scalar columns partition",
                    field.field_type
                ),
            ));
        };
        if transform.result_type(&field.field_type).is_err() {
            return Err(refused(
                expr,
                format!("transform {transform} cannot be applied to column '{column}' of type {primitive}"),
            ));
        }
        builder = builder
            .add_partition_field(&column, field_name, transform)
            .map_err(|e| refused(expr, e.message()))?;
    }
    Ok(builder
        .build()
        .map_err(|e| EngineError::InvalidPartition(e.to_string()))?
        .into_unbound())
}

/// A data file's partition: the spec it was written in and its partition tuple.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct FilePartition {
    /// The partition spec id.
    pub spec_id: i32,
    /// The partition tuple (empty for an unpartitioned spec).
    pub value: Struct,
}

impl FilePartition {
    /// The partition of files of an unpartitioned spec `spec_id`.
    pub fn unpartitioned(spec_id: i32) -> Self {
        FilePartition {
            spec_id,
            value: Struct::empty(),
        }
    }

    /// The partition of a data file written in spec `spec_id` (its manifest's spec, which the
    /// table tracks per file: iceberg 0.10 keeps a data file's own spec id crate-private).
    pub fn of(file: &iceberg::spec::DataFile, spec_id: i32) -> Self {
        FilePartition {
            spec_id,
            value: file.partition().clone(),
        }
    }
}

/// Splits rows by the table's default partition spec.
pub(crate) struct Partitioner {
    spec_id: i32,
    calculator: Option<(PartitionValueCalculator, StructType)>,
}

impl Partitioner {
    /// The partitioner of `metadata`'s default spec and current schema.
    pub fn new(metadata: &TableMetadata) -> Result<Partitioner> {
        let spec = metadata.default_partition_spec();
        let schema = metadata.current_schema();
        let calculator = if spec.is_unpartitioned() {
            None
        } else {
            Some((
                PartitionValueCalculator::try_new(spec, schema)?,
                spec.partition_type(schema)?,
            ))
        };
        Ok(Partitioner {
            spec_id: spec.spec_id(),
            calculator,
        })
    }

    /// The default spec's id (new files are written in it).
    pub fn spec_id(&self) -> i32 {
        self.spec_id
    }

    /// Whether the default spec has fields.
    pub fn is_partitioned(&self) -> bool {
        self.calculator.is_some()
    }

    /// Each partition of `batch` with the indices of its rows (in row order), partitions in
    /// order of first appearance.
    pub fn group_rows(&self, batch: &RecordBatch) -> Result<Vec<(FilePartition, Vec<u32>)>> {
        let Some((calculator, partition_type)) = &self.calculator else {
            let all = (0..batch.num_rows() as u32).collect();
            return Ok(vec![(FilePartition::unpartitioned(self.spec_id), all)]);
        };
        let values = arrow_struct_to_literal(&calculator.calculate(batch)?, partition_type)?;
        let mut groups: Vec<(FilePartition, Vec<u32>)> = Vec::new();
        let mut index: HashMap<Struct, usize> = HashMap::new();
        // Neighbouring rows mostly share a partition (a day, a region): compared with the
        // previous row's first, hashed only on a change, cloned only for a new partition.
        let mut previous: Option<usize> = None;
        for (row, value) in values.into_iter().enumerate() {
            let value = match value {
                Some(Literal::Struct(s)) => s,
                _ => Struct::empty(),
            };
            let slot = match previous {
                Some(slot) if groups[slot].0.value == value => slot,
                _ => match index.get(&value) {
                    Some(&slot) => slot,
                    None => {
                        index.insert(value.clone(), groups.len());
                        groups.push((
                            FilePartition {
                                spec_id: self.spec_id,
                                value,
                            },
                            Vec::new(),
                        ));
                        groups.len() - 1
                    }
                },
            };
            previous = Some(slot);
            groups[slot].1.push(row as u32);
        }
        Ok(groups)
    }

    /// `batches` split by partition: each partition's rows, in order, partitions in order of
    /// first appearance.
    pub fn split(&self, batches: &[RecordBatch]) -> Result<Vec<(FilePartition, Vec<RecordBatch>)>> {
        if !self.is_partitioned() {
            return Ok(vec![(
                FilePartition::unpartitioned(self.spec_id),
                batches.to_vec(),
            )]);
        }
        let mut out: Vec<(FilePartition, Vec<RecordBatch>)> = Vec::new();
        let mut index: HashMap<FilePartition, usize> = HashMap::new();
        for batch in batches {
            for (partition, rows) in self.group_rows(batch)? {
                let rows = take_rows(batch, &rows)?;
                let slot = *index.entry(partition.clone()).or_insert_with(|| {
                    out.push((partition, Vec::new()));
                    out.len() - 1
                });
                out[slot].1.push(rows);
            }
        }
        Ok(out)
    }
}

/// The rows of `batch` at `indices`.
pub(crate) fn take_rows(batch: &RecordBatch, indices: &[u32]) -> Result<RecordBatch> {
    if indices.len() == batch.num_rows() && indices.iter().enumerate().all(|(i, r)| i as u32 == *r)
    {
        return Ok(batch.clone());
    }
    Ok(arrow_select::take::take_record_batch(
        batch,
        &UInt32Array::from(indices.to_vec()),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ColumnSchema, ColumnType, TableSchema};

    fn schema() -> IcebergSchema {
        let col = |name: &str, data_type| ColumnSchema {
            name: name.into(),
            data_type,
            nullable: true,
        };
        TableSchema::new(
            vec![
                col("id", ColumnType::Int64),
                col("name", ColumnType::Utf8),
                col("created_at", ColumnType::TimestampTz),
                col("day", ColumnType::Date32),
                col("f", ColumnType::Float64),
                col("tags", ColumnType::List(Box::new(ColumnType::Utf8))),
            ],
            vec![],
        )
        .iceberg_schema()
        .unwrap()
    }

    fn exprs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn expressions_become_a_spec_with_java_field_names() {
        let spec = partition_spec(
            &schema(),
            &exprs(&[
                "day(created_at)",
                "bucket(16, id)",
                "name",
                "truncate(4, name)",
                "month(day)",
            ]),
        )
        .unwrap()
        .bind(Arc::new(schema()))
        .unwrap();
        let fields: Vec<(String, String)> = spec
            .fields()
            .iter()
            .map(|f| (f.name.clone(), f.transform.to_string()))
            .collect();
        assert_eq!(
            fields,
            [
                ("created_at_day", "day"),
                ("id_bucket", "bucket[16]"),
                ("name", "identity"),
                ("name_trunc", "truncate[4]"),
                ("day_month", "month"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(spec.fields()[0].field_id, 1000);
    }

    #[test]
    fn rows_group_by_partition_in_order_of_first_appearance() {
        use arrow_array::{ArrayRef, Int64Array, StringArray};
        use iceberg::spec::{FormatVersion, SortOrder, TableMetadataBuilder};
        let table = TableSchema::new(
            vec![
                ColumnSchema {
                    name: "id".into(),
                    data_type: ColumnType::Int64,
                    nullable: false,
                },
                ColumnSchema {
                    name: "region".into(),
                    data_type: ColumnType::Utf8,
                    nullable: false,
                },
            ],
            vec![],
        );
        let iceberg = table.iceberg_schema().unwrap();
        let spec = partition_spec(&iceberg, &exprs(&["region"])).unwrap();
        let metadata = TableMetadataBuilder::new(
            iceberg,
            spec,
            SortOrder::unsorted_order(),
            "/w/t".to_string(),
            FormatVersion::V3,
            HashMap::new(),
        )
        .unwrap()
        .build()
        .unwrap()
        .metadata;
        let partitioner = Partitioner::new(&metadata).unwrap();
        let regions = ["eu", "eu", "us", "eu", "ap", "us", "us"];
        let batch = RecordBatch::try_new(
            table.arrow_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..regions.len() as i64)) as ArrayRef,
                Arc::new(StringArray::from(regions.to_vec())) as ArrayRef,
            ],
        )
        .unwrap();
        let groups: Vec<(String, Vec<u32>)> = partitioner
            .group_rows(&batch)
            .unwrap()
            .into_iter()
            .map(|(p, rows)| (format!("{:?}", p.value), rows))
            .collect();
        let rows: Vec<Vec<u32>> = groups.iter().map(|(_, r)| r.clone()).collect();
        assert_eq!(rows, vec![vec![0, 1, 3], vec![2, 5, 6], vec![4]]);
        assert!(groups[0].0.contains("eu") && groups[1].0.contains("us"));
        assert!(groups[2].0.contains("ap"));
        let split = partitioner.split(&[batch.clone(), batch]).unwrap();
        assert_eq!(split.len(), 3);
        assert_eq!(split[0].1.iter().map(|b| b.num_rows()).sum::<usize>(), 6);
    }

    #[test]
    fn bad_expressions_name_the_problem() {
        for (expr, words) in [
            ("week(created_at)", "unknown transform 'week'"),
            ("day(name)", "cannot be applied to column 'name'"),
            ("hour(day)", "cannot be applied"),
            ("bucket(id)", "bucket needs the number of buckets"),
            ("bucket(0, id)", "positive integer"),
            ("truncate(x, name)", "positive integer"),
            ("missing", "no column 'missing'"),
            ("day(nope)", "no column 'nope'"),
            ("bucket(4, f)", "cannot be applied"),
            ("tags", "only scalar columns"),
            ("day(created_at", "expected name(args)"),
            ("", "empty"),
        ] {
            let e = partition_spec(&schema(), &exprs(&[expr])).unwrap_err();
            assert!(matches!(e, EngineError::InvalidPartition(_)), "{expr}: {e}");
            assert!(e.to_string().contains(words), "{expr}: {e}");
        }
        let e =
            partition_spec(&schema(), &exprs(&["day(created_at)", "day(created_at)"])).unwrap_err();
        assert!(matches!(e, EngineError::InvalidPartition(_)), "{e}");
    }
}
