//! The record payload's format: `encode_batch` reuses an encoded schema message instead of
//! running a `StreamWriter` per batch, and must still write exactly the bytes a `StreamWriter`
//! writes (logs written before that change replay unchanged, and so do new logs with an older
//! reader).

use super::*;
use crate::schema::{ColumnSchema, ColumnType, TableSchema};
use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};

fn column(name: &str, data_type: ColumnType, nullable: bool) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        data_type,
        nullable,
    }
}

/// A table with nested, zoned and decimal columns (left null here) and a default: their field
/// metadata and child fields are all part of the schema message.
fn wide_schema() -> TableSchema {
    let mut schema = TableSchema::new(
        vec![
            column("id", ColumnType::Int64, false),
            column("name", ColumnType::Utf8, true),
            column("score", ColumnType::Float64, true),
            column("active", ColumnType::Boolean, false),
            column("at", ColumnType::TimestampTz, true),
            column(
                "price",
                ColumnType::Decimal {
                    precision: 12,
                    scale: 2,
                },
                true,
            ),
            column("tags", ColumnType::List(Box::new(ColumnType::Utf8)), true),
            column(
                "labels",
                ColumnType::Map {
                    key: Box::new(ColumnType::Utf8),
                    value: Box::new(ColumnType::Int64),
                },
                true,
            ),
        ],
        vec!["id".into()],
    );
    schema.defaults.insert(3, serde_json::json!(0.5));
    schema
}

fn wide_batch(rows: usize) -> ChangeBatch {
    let ids: Vec<i64> = (0..rows as i64).collect();
    let names: Vec<Option<String>> = (0..rows)
        .map(|i| (i % 3 != 0).then(|| format!("name-{i}")))
        .collect();
    ChangeBatch::from_columns(
        &wide_schema(),
        vec![Operation::Upsert; rows],
        vec![
            ("id".into(), Arc::new(Int64Array::from(ids)) as ArrayRef),
            (
                "name".into(),
                Arc::new(StringArray::from(names)) as ArrayRef,
            ),
            (
                "score".into(),
                Arc::new(Float64Array::from_iter(
                    (0..rows).map(|i| Some(i as f64 / 3.0)),
                )) as ArrayRef,
            ),
            (
                "active".into(),
                Arc::new(BooleanArray::from_iter((0..rows).map(|i| Some(i % 2 == 0)))) as ArrayRef,
            ),
        ],
    )
    .unwrap()
}

fn narrow_batch(values: Vec<i64>) -> ChangeBatch {
    let schema = TableSchema::new(vec![column("id", ColumnType::Int64, false)], vec![]);
    ChangeBatch::from_columns(
        &schema,
        vec![Operation::Insert; values.len()],
        vec![("id".into(), Arc::new(Int64Array::from(values)) as ArrayRef)],
    )
    .unwrap()
}

/// What `encode_batch` wrote for the rows before it cached schema messages.
fn stream_writer_bytes(rows: &RecordBatch) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut writer = StreamWriter::try_new(&mut bytes, rows.schema_ref()).unwrap();
    writer.write(rows).unwrap();
    writer.finish().unwrap();
    drop(writer);
    bytes
}

#[test]
fn payload_rows_are_exactly_a_stream_writers_bytes() {
    // Alternating schemas: a cached schema message is never used for another schema.
    let batches = [wide_batch(100), narrow_batch(vec![1, 2, 3]), wide_batch(7)];
    for round in 0..2 {
        for batch in &batches {
            let payload = encode_batch(batch).unwrap();
            let rows_at = 4 + batch.num_rows();
            assert_eq!(
                &payload[rows_at..],
                stream_writer_bytes(batch.rows()).as_slice(),
                "round {round}, {} columns",
                batch.rows().num_columns()
            );
            let decoded = decode_batch(&payload).unwrap();
            assert_eq!(decoded.rows(), batch.rows());
            assert_eq!(decoded.operations(), batch.operations());
        }
    }
}

#[tokio::test]
async fn a_log_written_by_a_stream_writer_replays() {
    // A segment as the log wrote it before: the payload's rows from a `StreamWriter`.
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), 0).unwrap();
    let old = wide_batch(10);
    let mut payload = vec![10, 0, 0, 0];
    payload.extend(std::iter::repeat_n(1u8, 10)); // upserts
    payload.extend(stream_writer_bytes(old.rows()));
    wal.append(1, payload).await.unwrap().unwrap();
    let new = wide_batch(5);
    wal.append(2, encode_batch(&new).unwrap())
        .await
        .unwrap()
        .unwrap();
    drop(wal);
    let (_, replay) = Wal::open(dir.path(), 0).unwrap();
    assert_eq!(replay.len(), 2);
    assert_eq!(replay[0].batch.rows(), old.rows());
    assert_eq!(replay[1].batch.rows(), new.rows());
}
