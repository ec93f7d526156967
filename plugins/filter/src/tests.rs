use super::*;
use moonlink_sdk::{BatchBuilder, DataType, Field, TableSchema};
use serde_json::json;

fn batch() -> ChangeBatch {
    let schema = TableSchema::new(vec![
        Field::required("id", DataType::Int64),
        Field::nullable("kind", DataType::Utf8),
        Field::nullable("score", DataType::Float32),
        Field::nullable("tags", DataType::Array(moonlink_sdk::ElementType::Utf8)),
    ]);
    let mut b = BatchBuilder::new("t", &schema);
    for (id, kind) in [(1, Some("a")), (2, Some("b")), (3, None)] {
        let mut row = b.row();
        row.set("id", id as i64).unwrap();
        row.set("kind", kind).unwrap();
        row.set("score", id as f32 / 2.0).unwrap();
        row.set("tags", vec![Value::from(format!("t{id}")); id])
            .unwrap();
        row.finish(Operation::Insert).unwrap();
    }
    let mut row = b.row();
    row.set("id", 4_i64).unwrap();
    row.finish(Operation::Delete).unwrap();
    b.finish()
}

fn ids(batches: &[ChangeBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(|r| b.row(r).get("id")))
        .map(|v| match v {
            Some(Value::Int(i)) => i,
            other => panic!("{other:?}"),
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
        vec![2, 4]
    );
    assert_eq!(
        run(json!({"column": "kind", "op": "ne", "value": "b"})),
        vec![1, 4]
    );
    assert_eq!(
        run(json!({"column": "id", "op": "ge", "value": 2})),
        vec![2, 3, 4]
    );
    assert_eq!(
        run(json!({"column": "id", "op": "lt", "value": 2.5})),
        vec![1, 2, 4]
    );
    assert_eq!(
        run(json!({"column": "score", "op": "le", "value": 1})),
        vec![1, 2, 4]
    );
    assert_eq!(run(json!({"column": "kind", "op": "is_null"})), vec![3, 4]);
    assert_eq!(
        run(json!({"column": "kind", "op": "not_null"})),
        vec![1, 2, 4]
    );
    assert_eq!(
        run(json!({"column": "id", "op": "gt", "value": 9})),
        vec![4]
    );
}

#[test]
fn bad_settings() {
    assert!(
        Filter::configure(Config::parse(r#"{"column":"x","op":"like","value":1}"#).unwrap())
            .is_err()
    );
    assert!(Filter::configure(Config::parse(r#"{"column":"x","op":"eq"}"#).unwrap()).is_err());
}

#[test]
fn kept_rows_keep_their_values_in_every_column() {
    let mut f =
        Filter::configure(Config::parse(r#"{"column":"kind","op":"eq","value":"b"}"#).unwrap())
            .unwrap();
    let out = f.apply(batch()).unwrap();
    let row = out[0].row(0);
    assert_eq!(row.str("kind"), Some("b"));
    assert_eq!(row.get("score"), Some(Value::Float(1.0)));
    assert_eq!(
        row.get("tags"),
        Some(Value::List(vec![Value::from("t2"), Value::from("t2")]))
    );
    assert_eq!(out[0].row(1).operation(), Operation::Delete);
    // A batch with nothing left is dropped; a missing column is an error.
    let mut none =
        Filter::configure(Config::parse(r#"{"column":"id","op":"gt","value":9}"#).unwrap())
            .unwrap();
    let mut inserts = batch();
    inserts.retain_rows(|r| r.operation() == Operation::Insert);
    assert!(none.apply(inserts).unwrap().is_empty());
    let mut missing =
        Filter::configure(Config::parse(r#"{"column":"x","op":"is_null"}"#).unwrap()).unwrap();
    assert!(missing
        .apply(batch())
        .unwrap_err()
        .contains("no column 'x'"));
}
