use std::sync::Arc;

use arrow_array::types::Int32Type;
use arrow_array::{
    Array, Decimal128Array, Float64Array, Int16Array, Int64Array, ListArray, RecordBatch,
    StringArray, TimestampNanosecondArray,
};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{Field, Schema};
use moonlink_engine::ColumnSchema;

use super::*;

fn table() -> TableSchema {
    let col = |name: &str, ty: &str, nullable: bool| ColumnSchema {
        name: name.into(),
        data_type: ColumnType::parse(ty).unwrap(),
        nullable,
    };
    TableSchema::new(
        vec![
            col("id", "int64", false),
            col("name", "string", true),
            col("small", "int16", true),
            col("price", "decimal(6,2)", true),
            col("ts", "timestamp", true),
            col("tags", "list<int32>", true),
        ],
        vec![],
    )
}

fn stream(batches: &[RecordBatch]) -> Bytes {
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, &batches[0].schema()).unwrap();
    for b in batches {
        writer.write(b).unwrap();
    }
    writer.finish().unwrap();
    drop(writer);
    Bytes::from(out)
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).unwrap()
}

fn decode(body: Bytes) -> Result<ChangeBatch, ApiError> {
    decode_arrow_stream(&table(), Operation::Insert, body)
}

#[test]
fn casts_by_name_and_concatenates_batches() {
    let a = batch(vec![
        (
            "name",
            Arc::new(StringArray::from(vec![Some("a"), None])) as ArrayRef,
        ),
        ("id", Arc::new(arrow_array::Int32Array::from(vec![1, 2]))),
        ("small", Arc::new(Int64Array::from(vec![Some(-5), None]))),
        (
            "tags",
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                Some(vec![Some(1), None]),
                None,
            ])),
        ),
    ]);
    let b = batch(vec![
        (
            "name",
            Arc::new(StringArray::from(vec![Some("c")])) as ArrayRef,
        ),
        ("id", Arc::new(arrow_array::Int32Array::from(vec![3]))),
        ("small", Arc::new(Int64Array::from(vec![Some(7)]))),
        (
            "tags",
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                Some(vec![Some(3)]),
            ])),
        ),
    ]);
    let decoded = decode(stream(&[a, b])).unwrap();
    assert_eq!(decoded.num_rows(), 3);
    let rows = decoded.rows();
    assert_eq!(rows.schema(), table().arrow_schema());
    assert_eq!(rows.column(0).as_primitive::<Int64Type>().value(2), 3);
    assert!(rows.column(3).is_null(0)); // missing nullable column
}

#[test]
fn refusals_name_column_and_row() {
    let extra = batch(vec![
        ("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ("nope", Arc::new(Int64Array::from(vec![1]))),
    ]);
    let e = decode(stream(&[extra])).unwrap_err();
    assert_eq!(
        (e.status, e.column.as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("nope"))
    );

    let missing = batch(vec![(
        "name",
        Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
    )]);
    let e = decode(stream(&[missing])).unwrap_err();
    assert_eq!(
        (e.status, e.column.as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("id"))
    );

    let lossy = batch(vec![(
        "id",
        Arc::new(Float64Array::from(vec![1.5])) as ArrayRef,
    )]);
    let e = decode(stream(&[lossy])).unwrap_err();
    assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(e.message.contains("no lossless cast"), "{}", e.message);

    let too_big = batch(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        (
            "small",
            Arc::new(arrow_array::Int32Array::from(vec![1, 70_000])),
        ),
    ]);
    let e = decode(stream(&[too_big])).unwrap_err();
    assert_eq!((e.row, e.column.as_deref()), (Some(1), Some("small")));

    let digits = batch(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        (
            "price",
            Arc::new(
                Decimal128Array::from(vec![100, 100_000_000])
                    .with_precision_and_scale(38, 2)
                    .unwrap(),
            ),
        ),
    ]);
    let e = decode(stream(&[digits])).unwrap_err();
    assert_eq!((e.row, e.column.as_deref()), (Some(1), Some("price")));

    let nanos = batch(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        (
            "ts",
            Arc::new(TimestampNanosecondArray::from(vec![1_000, 1_001])),
        ),
    ]);
    let e = decode(stream(&[nanos])).unwrap_err();
    assert_eq!((e.row, e.column.as_deref()), (Some(1), Some("ts")));

    let null_key = batch(vec![(
        "id",
        Arc::new(Int64Array::from(vec![Some(1), None])) as ArrayRef,
    )]);
    let e = decode(stream(&[null_key])).unwrap_err();
    assert_eq!((e.row, e.column.as_deref()), (Some(1), Some("id")));

    let small_ok = batch(vec![
        ("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ("small", Arc::new(Int16Array::from(vec![-3]))),
    ]);
    assert!(decode(stream(&[small_ok])).is_ok());
}

/// Truncations, bit flips and absurd declared lengths: always a 400 or a 422, never a panic or
/// a huge allocation.
#[test]
fn hostile_streams_are_refused() {
    let good = stream(&[batch(vec![
        (
            "id",
            Arc::new(Int64Array::from((0..100).collect::<Vec<i64>>())) as ArrayRef,
        ),
        (
            "name",
            Arc::new(StringArray::from(
                (0..100).map(|i| format!("n{i}")).collect::<Vec<_>>(),
            )),
        ),
    ])]);
    assert!(decode(good.clone()).is_ok());
    // A cut at a message boundary is a valid stream without its end marker (all or nothing);
    // any other cut is a 400.
    for cut in 0..good.len() {
        match decode(good.slice(0..cut)) {
            Ok(b) => assert!(b.num_rows() == 0 || b.num_rows() == 100, "cut at {cut}"),
            Err(e) => assert_eq!(
                e.status,
                StatusCode::BAD_REQUEST,
                "cut at {cut}: {}",
                e.message
            ),
        }
    }
    // Seeded byte mutations (xorshift): any answer but a panic is fine.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let mut bytes = good.to_vec();
        for _ in 0..(1 + next() % 4) {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = next() as u8;
        }
        if let Err(e) = decode(Bytes::from(bytes)) {
            assert!(e.status.is_client_error(), "{}: {}", e.status, e.message);
        }
    }
    // A message header declaring 2 GiB of metadata, and garbage.
    let mut huge = vec![0xff, 0xff, 0xff, 0xff];
    huge.extend_from_slice(&0x7fff_fff0u32.to_le_bytes());
    huge.extend_from_slice(&[0u8; 64]);
    assert_eq!(
        decode(Bytes::from(huge)).unwrap_err().status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        decode(Bytes::from_static(b"{\"id\": 1}"))
            .unwrap_err()
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        decode(Bytes::new()).unwrap_err().status,
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn schema_only_stream_is_empty_batch() {
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, &schema).unwrap();
    writer.finish().unwrap();
    drop(writer);
    assert_eq!(decode(Bytes::from(out)).unwrap().num_rows(), 0);
    assert!(is_arrow_stream(Some(
        "Application/vnd.apache.arrow.stream; charset=x"
    )));
    assert!(!is_arrow_stream(Some("application/json")));
}
