//! Data files: dictionary encoding only for the columns where it pays, rows unchanged.

use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray};
use parquet::file::reader::{FileReader, SerializedFileReader};

use super::*;
use crate::schema::{ColumnSchema, ColumnType, TableSchema};

fn column(name: &str, data_type: ColumnType) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        data_type,
        nullable: true,
    }
}

/// 2,000 rows in two batches: `trace_id` unique, `kind` one of three, `payload` unique bytes,
/// `note` mostly null (too few values to judge), `n` an integer.
fn batches(schema: &SchemaRef) -> Vec<RecordBatch> {
    (0..2)
        .map(|b| {
            let rows = 1000 * b..1000 * (b + 1);
            let ids: Vec<String> = rows.clone().map(|i| format!("{i:032x}")).collect();
            let kinds = ["server", "client", "internal"];
            let kind: Vec<&str> = rows.clone().map(|i| kinds[i % 3]).collect();
            let payload: Vec<Vec<u8>> = rows.clone().map(|i| i.to_le_bytes().to_vec()).collect();
            let note: Vec<Option<String>> = rows
                .clone()
                .map(|i| (i % 100 == 0).then(|| format!("note {i}")))
                .collect();
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(StringArray::from(kind)),
                Arc::new(BinaryArray::from_iter_values(payload)),
                Arc::new(StringArray::from(note)),
                Arc::new(Int64Array::from_iter_values(rows.map(|i| i as i64))),
            ];
            RecordBatch::try_new(schema.clone(), columns).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn dictionary_only_for_repetitive_columns_and_rows_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = Warehouse::local(dir.path()).unwrap();
    let table = TableSchema::new(
        vec![
            column("trace_id", ColumnType::Utf8),
            column("kind", ColumnType::Utf8),
            column("payload", ColumnType::Binary),
            column("note", ColumnType::Utf8),
            column("n", ColumnType::Int64),
        ],
        vec![],
    );
    let schema = table.arrow_schema();
    let iceberg = Arc::new(table.iceberg_schema().unwrap());
    let written = batches(&schema);
    let location = format!("{}/data/file.parquet", warehouse.root());
    let file = write_data_file(
        &warehouse.file_io(),
        &iceberg,
        &location,
        &written,
        &FilePartition::unpartitioned(0),
    )
    .await
    .unwrap();
    assert_eq!(file.record_count(), 2000);

    let bytes = warehouse.get(&location).await.unwrap();
    let reader = SerializedFileReader::new(bytes).unwrap();
    let metadata = reader.metadata();
    assert!(metadata.num_row_groups() >= 1);
    for group in metadata.row_groups() {
        let dictionary: Vec<(String, bool)> = group
            .columns()
            .iter()
            .map(|c| {
                let path = c.column_path().string();
                (path, c.dictionary_page_offset().is_some())
            })
            .collect();
        assert_eq!(
            dictionary,
            vec![
                ("trace_id".to_string(), false),
                ("kind".to_string(), true),
                ("payload".to_string(), false),
                ("note".to_string(), true),
                ("n".to_string(), true),
            ]
        );
    }

    let read = read_data_file(&warehouse, &location, &schema)
        .await
        .unwrap();
    let read = arrow_select::concat::concat_batches(&schema, &read).unwrap();
    let written = arrow_select::concat::concat_batches(&schema, &written).unwrap();
    assert_eq!(read, written);
}

#[test]
fn sampling_judges_byte_columns_only() {
    let ids: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..100).map(|i| i.to_string()),
    ));
    let repeated: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..100).map(|i| (i % 10).to_string()),
    ));
    let numbers: ArrayRef = Arc::new(Int64Array::from_iter_values(0..100));
    let batch = RecordBatch::try_from_iter([("a", ids), ("b", repeated), ("c", numbers)]).unwrap();
    let batches = [batch];
    assert!(mostly_distinct(&batches, 0));
    assert!(!mostly_distinct(&batches, 1));
    assert!(!mostly_distinct(&batches, 2));
}
