//! Data files: dictionary encoding only for the columns where it pays, the table's compression,
//! rows unchanged.

use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray};
use parquet::file::reader::{FileReader, SerializedFileReader};

use super::*;
use crate::compression::ParquetCompression;
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
        ParquetCompression::default(),
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
                ("n".to_string(), false),
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
fn sampling_judges_byte_and_primitive_columns() {
    use arrow_array::{BooleanArray, Float64Array, TimestampMicrosecondArray};
    let ids: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..100).map(|i| i.to_string()),
    ));
    let repeated: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..100).map(|i| (i % 10).to_string()),
    ));
    let numbers: ArrayRef = Arc::new(Int64Array::from_iter_values(0..100));
    let few_numbers: ArrayRef = Arc::new(Int64Array::from_iter_values((0..100).map(|i| i % 7)));
    let scores: ArrayRef = Arc::new(Float64Array::from_iter_values(
        (0..100).map(|i| i as f64 / 3.0),
    ));
    let times: ArrayRef = Arc::new(TimestampMicrosecondArray::from_iter_values(
        (0..100).map(|i| 1_700_000_000_000_000 + i * 1000),
    ));
    let flags: ArrayRef = Arc::new(BooleanArray::from_iter((0..100).map(|i| Some(i % 2 == 0))));
    // Sliced: the sample reads the slice's values, not the buffer's start.
    let sliced: ArrayRef = Arc::new(
        Int64Array::from_iter_values((0..300).map(|i| if i < 200 { i } else { 5 })).slice(200, 100),
    );
    let batch = RecordBatch::try_from_iter([
        ("a", ids),
        ("b", repeated),
        ("c", numbers),
        ("d", few_numbers),
        ("e", scores),
        ("f", times),
        ("g", flags),
        ("h", sliced),
    ])
    .unwrap();
    let batches = [batch];
    let judged: Vec<bool> = (0..8).map(|i| mostly_distinct(&batches, i)).collect();
    assert_eq!(judged, [true, false, true, false, true, true, false, false]);
}

/// Writes `batches` with the compression `properties` ask for; the file's bytes.
async fn written_with(
    schema: &TableSchema,
    batches: &[RecordBatch],
    properties: &[(&str, &str)],
) -> bytes::Bytes {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = Warehouse::local(dir.path()).unwrap();
    let iceberg = Arc::new(schema.iceberg_schema().unwrap());
    let location = format!("{}/data/file.parquet", warehouse.root());
    let properties = properties
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    write_data_file(
        &warehouse.file_io(),
        &iceberg,
        &location,
        batches,
        &FilePartition::unpartitioned(0),
        ParquetCompression::of(&properties),
    )
    .await
    .unwrap();
    let read = read_data_file(&warehouse, &location, &schema.arrow_schema())
        .await
        .unwrap();
    assert_eq!(
        arrow_select::concat::concat_batches(&schema.arrow_schema(), &read).unwrap(),
        arrow_select::concat::concat_batches(&schema.arrow_schema(), batches).unwrap()
    );
    warehouse.get(&location).await.unwrap()
}

#[tokio::test]
async fn files_are_compressed_as_the_table_properties_say() {
    use crate::compression::{CODEC, LEVEL};
    use parquet::basic::Compression as C;
    let table = TableSchema::new(vec![column("text", ColumnType::Utf8)], vec![]);
    // Repetitive but not dictionary-friendly text: every value distinct, long shared runs.
    let text: Vec<String> = (0..20_000)
        .map(|i| {
            format!(
                "GET /api/v1/orders/{i}?expand=customer,items&trace={}",
                i * 7919 % 1000
            )
        })
        .collect();
    let batch = RecordBatch::try_new(
        table.arrow_schema(),
        vec![Arc::new(StringArray::from(text)) as ArrayRef],
    )
    .unwrap();
    let batches = [batch];
    let codec_of = |bytes: &bytes::Bytes| {
        let reader = SerializedFileReader::new(bytes.clone()).unwrap();
        let codecs: Vec<C> = reader
            .metadata()
            .row_groups()
            .iter()
            .flat_map(|g| g.columns().iter().map(|c| c.compression()))
            .collect();
        assert!(!codecs.is_empty());
        assert!(codecs.iter().all(|c| *c == codecs[0]), "{codecs:?}");
        codecs[0]
    };

    let unset = written_with(&table, &batches, &[]).await;
    assert!(matches!(codec_of(&unset), C::ZSTD(_)));
    let snappy = written_with(&table, &batches, &[(CODEC, "snappy")]).await;
    assert_eq!(codec_of(&snappy), C::SNAPPY);
    let plain = written_with(&table, &batches, &[(CODEC, "uncompressed")]).await;
    assert_eq!(codec_of(&plain), C::UNCOMPRESSED);
    let gzip = written_with(&table, &batches, &[(CODEC, "gzip"), (LEVEL, "9")]).await;
    assert!(matches!(codec_of(&gzip), C::GZIP(_)));
    // The level reaches the encoder: the same rows at zstd 19 are different bytes.
    let zstd19 = written_with(&table, &batches, &[(CODEC, "zstd"), (LEVEL, "19")]).await;
    assert!(matches!(codec_of(&zstd19), C::ZSTD(_)));
    assert_ne!(zstd19.len(), unset.len());
    let zstd1 = written_with(&table, &batches, &[(LEVEL, "1")]).await;
    assert_eq!(zstd1, unset);
    assert!(unset.len() < plain.len());
}
