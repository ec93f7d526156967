//! Tests of the batch builder: every value path against the packed columns it must produce.

use super::*;
use crate::{ColumnValues, ElementValues, MapType};

fn builder(data_type: DataType) -> BatchBuilder {
    let schema = TableSchema {
        fields: vec![Field {
            name: "c".into(),
            data_type,
            nullable: true,
            default: None,
        }],
        primary_key: vec![],
    };
    let mut batch = BatchBuilder::new("t", &schema);
    batch.start_row(Operation::Insert);
    batch
}

#[test]
fn values_outside_the_logical_type_are_refused() {
    let time = || builder(DataType::Time);
    for bad in [-5, 86_400_000_000, 1_000_000_000_000_000] {
        let err = time().set(0, Value::Int(bad)).unwrap_err();
        assert!(
            err.contains("out of range") && err.contains("time"),
            "{err}"
        );
    }
    assert!(time().set(0, Value::Int(86_399_999_999)).is_ok());

    let float32 = || builder(DataType::Float32);
    for bad in [1e39, -1e39, f64::MAX] {
        let err = float32().set(0, Value::Float(bad)).unwrap_err();
        assert!(err.contains("float32"), "{err}");
    }
    // Infinity and NaN written as such stay accepted.
    assert!(float32().set(0, Value::Float(f64::INFINITY)).is_ok());
    assert!(float32().set(0, Value::Float(f64::NAN)).is_ok());

    let decimal = || {
        builder(DataType::Decimal(DecimalType {
            precision: 5,
            scale: 2,
        }))
    };
    let err = decimal().set(0, Value::Int128(100_000)).unwrap_err();
    assert!(err.contains("decimal(5,2)"), "{err}");
    assert!(decimal().set(0, Value::Int(-100_000)).is_err());
    assert!(decimal().set(0, Value::Int128(-99_999)).is_ok());

    let err = builder(DataType::Uuid)
        .set(0, Value::Bytes(vec![1, 2, 3]))
        .unwrap_err();
    assert!(err.contains("16 bytes"), "{err}");

    let err = builder(DataType::Date32)
        .set(0, Value::Int(i64::from(i32::MAX) + 1))
        .unwrap_err();
    assert!(err.contains("date"), "{err}");

    let err = builder(DataType::Array(ElementType::Time))
        .set(
            0,
            Value::List(vec![Value::Int(0), Value::Null, Value::Int(-1)]),
        )
        .unwrap_err();
    assert!(err.contains("element 2"), "{err}");
    let err = builder(DataType::Array(ElementType::Float32))
        .set(0, Value::List(vec![Value::Float(1e39)]))
        .unwrap_err();
    assert!(err.contains("float32"), "{err}");
}

fn users() -> TableSchema {
    TableSchema::new(vec![
        Field::required("id", DataType::Int32),
        Field::nullable("name", DataType::Utf8),
        Field::nullable("tags", DataType::Array(ElementType::Int64)),
    ])
}

#[test]
fn rows_by_name_share_one_error_type_and_fail_whole() {
    let mut batch = BatchBuilder::new("t", &users());
    let mut row = batch.row();
    row.set("id", 1).unwrap();
    row.set("name", Some("ada")).unwrap();
    row.set("tags", vec![Value::Int(1), Value::Null]).unwrap();
    row.finish(Operation::Upsert).unwrap();

    // Every failure is a DataError naming row and column; the row is left out.
    let mut row = batch.row();
    row.set("name", "half a row").unwrap();
    row.set("tags", vec![Value::Int(2), Value::Int(3)]).unwrap();
    let err = row.set("id", i64::MAX).unwrap_err();
    assert_eq!((err.row, err.column.as_deref()), (Some(1), Some("id")));
    assert!(err.message.contains("int32"), "{}", err.message);
    let err = row.set("nope", 1).unwrap_err();
    assert_eq!(err.column.as_deref(), Some("nope"));
    let err = row.finish(Operation::Insert).unwrap_err();
    assert_eq!((err.row, err.column.as_deref()), (Some(1), Some("id")));
    {
        let mut dropped = batch.row();
        dropped.set("id", 9).unwrap();
    }
    let mut delete = batch.row();
    delete.set("id", 2_i16).unwrap();
    delete.set("name", None::<&str>).unwrap();
    delete.finish(Operation::Delete).unwrap();
    assert!(String::from(err).starts_with("row 1, column 'id': "));

    let batch = batch.finish();
    assert_eq!(batch.operations, vec![Operation::Upsert, Operation::Delete]);
    assert!(matches!(&batch.columns[0].values, ColumnValues::Int32(v) if v == &[1, 2]));
    assert_eq!(batch.row(0).str("name"), Some("ada"));
    assert_eq!(batch.row(1).get("name"), Some(Value::Null));
    assert_eq!(
        batch.row(0).get("tags"),
        Some(Value::List(vec![Value::Int(1), Value::Null]))
    );
    assert_eq!(batch.row(1).get("tags"), Some(Value::Null));
    let ColumnValues::Array(tags) = &batch.columns[2].values else {
        panic!()
    };
    assert_eq!(tags.offsets, vec![0, 2, 2]);
    assert_eq!(batch.columns[1].strings(), Some(vec![Some("ada"), None]));
}

#[test]
fn text_maps_and_lists_equal_their_value_forms_and_travel_packed() {
    let attrs = DataType::Map(MapType {
        key: ElementType::Utf8,
        value: ElementType::Utf8,
    });
    let schema = TableSchema::new(vec![
        Field::nullable("m", attrs),
        Field::nullable("l", DataType::Array(ElementType::Utf8)),
    ]);
    let mut fast = BatchBuilder::new("t", &schema);
    fast.reserve(3); // a hint only: the batch is the same
    let mut slow = BatchBuilder::new("t", &schema);
    for row in 0..3 {
        fast.start_row(Operation::Insert);
        slow.start_row(Operation::Insert);
        let entries = [("a", Some(format!("{row}"))), ("b", None)];
        // A row set twice keeps the second value, as `set` does.
        fast.set_str_map(0, [("x", Some("y"))]).unwrap();
        fast.set_str_map(0, entries.clone()).unwrap();
        fast.set_str_list(1, [Some("p"), None, Some("q")]).unwrap();
        let map = entries
            .iter()
            .map(|(k, v)| (Value::from(*k), Value::from(v.clone())))
            .collect();
        slow.set(0, Value::Map(map)).unwrap();
        let list = vec![Value::from("p"), Value::Null, Value::from("q")];
        slow.set(1, Value::List(list)).unwrap();
        fast.finish_row().unwrap();
        slow.finish_row().unwrap();
    }
    let (fast, slow) = (fast.finish(), slow.finish());
    assert_eq!(format!("{fast:?}"), format!("{slow:?}"));
    let ColumnValues::Map(m) = &fast.columns[0].values else {
        panic!("not a map")
    };
    assert!(matches!(m.keys, ElementValues::Utf8Buffer(_)));
    assert_eq!(
        fast.row(2).get("m"),
        Some(Value::from(vec![("a", Some("2")), ("b", None)]))
    );
    let mut wrong = BatchBuilder::new("t", &schema);
    wrong.start_row(Operation::Insert);
    assert!(wrong.set_str_map(1, [("a", Some("b"))]).is_err());
    assert!(wrong.set_str_list(0, [Some("a")]).is_err());
}

#[test]
fn a_wrong_call_order_is_an_error_not_a_panic() {
    let mut batch = BatchBuilder::new("t", &users());
    assert!(batch
        .set(0, Value::Int(1))
        .unwrap_err()
        .contains("before start_row"));
    assert!(batch
        .set_str(1, "x")
        .unwrap_err()
        .contains("before start_row"));
    assert!(batch
        .finish_row()
        .unwrap_err()
        .message
        .contains("before start_row"));
    batch.start_row(Operation::Insert);
    assert!(batch
        .set(7, Value::Int(1))
        .unwrap_err()
        .contains("does not exist"));
    // Null after a value is null.
    batch.set(1, Value::from("x")).unwrap();
    batch.set(1, Value::Null).unwrap();
    batch.set(0, Value::Int(1)).unwrap();
    batch.finish_row().unwrap();
    assert_eq!(batch.finish().row(0).get("name"), Some(Value::Null));
}

#[test]
fn columns_set_in_any_order_land_in_their_own_column() {
    let mut batch = BatchBuilder::new("t", &users());
    let orders: [&[&str]; 4] = [
        &["id", "name", "tags"],
        &["tags", "name", "id"],
        &["name", "name", "id"],
        &["id", "id", "tags"],
    ];
    for (r, order) in orders.iter().enumerate() {
        let mut row = batch.row();
        for column in order.iter() {
            match *column {
                "id" => row.set("id", r as i64).unwrap(),
                "name" => row.set_str("name", &format!("n{r}")).unwrap(),
                _ => row.set("tags", vec![Value::Int(r as i64)]).unwrap(),
            }
        }
        row.finish(Operation::Insert).unwrap();
    }
    let batch = batch.finish();
    for (r, order) in orders.iter().enumerate() {
        let row = batch.row(r);
        assert_eq!(row.get("id"), Some(Value::Int(r as i64)));
        let name = order.contains(&"name").then(|| format!("n{r}"));
        assert_eq!(row.str("name"), name.as_deref());
        let tags = order.contains(&"tags");
        assert_eq!(
            row.get("tags"),
            Some(if tags {
                Value::List(vec![Value::Int(r as i64)])
            } else {
                Value::Null
            })
        );
    }
}
