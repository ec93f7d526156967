//! Map columns: type names, Arrow and Iceberg forms, and their nested field ids.

use super::*;

fn col(name: &str, data_type: ColumnType) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        data_type,
        nullable: true,
    }
}

fn map(key: ColumnType, value: ColumnType) -> ColumnType {
    ColumnType::Map {
        key: Box::new(key),
        value: Box::new(value),
    }
}

#[test]
fn map_type_names_parse_and_print_back() {
    for (name, ty, canonical) in [
        (
            "map<string, string>",
            map(ColumnType::Utf8, ColumnType::Utf8),
            "map<string, string>",
        ),
        (
            "MAP<text,bigint>",
            map(ColumnType::Utf8, ColumnType::Int64),
            "map<string, int64>",
        ),
        (
            "map<decimal(10, 2), date>",
            map(
                ColumnType::Decimal {
                    precision: 10,
                    scale: 2,
                },
                ColumnType::Date32,
            ),
            "map<decimal(10,2), date32>",
        ),
    ] {
        assert_eq!(ColumnType::parse(name).unwrap(), ty, "{name}");
        assert_eq!(ty.name(), canonical);
        assert_eq!(ColumnType::parse(&ty.name()).unwrap(), ty);
    }
    for bad in [
        "map<string>",
        "map<>",
        "map<list<int32>, string>",
        "map<string, map<string, string>>",
        "map<foo, string>",
        "list<map<string, string>>",
    ] {
        assert!(ColumnType::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_map_has_key_and_value_ids_in_arrow_and_iceberg() {
    let schema = TableSchema::new(
        vec![
            col("id", ColumnType::Int64),
            col("attributes", map(ColumnType::Utf8, ColumnType::Utf8)),
            col("tags", ColumnType::List(Box::new(ColumnType::Utf8))),
        ],
        vec![],
    );
    schema.validate().unwrap();
    // Columns 1..=3, then the map's key 4 and value 5, then the list's element 6.
    assert_eq!((schema.element_id(1), schema.element_id(2)), (4, 6));
    assert_eq!(schema.max_field_id(), 6);

    let iceberg = schema.iceberg_schema().unwrap();
    let field = iceberg.field_by_name("attributes").unwrap();
    let Type::Map(m) = field.field_type.as_ref() else {
        panic!("{field:?}")
    };
    assert_eq!((m.key_field.id, m.value_field.id), (4, 5));
    assert!(m.key_field.required && !m.value_field.required);
    assert_eq!(iceberg.field_by_id(6).unwrap().name, "element");

    let DataType::Map(entries, false) = schema.arrow_type(1) else {
        panic!()
    };
    let DataType::Struct(fields) = entries.data_type() else {
        panic!()
    };
    let id = |f: &Field| f.metadata()[PARQUET_FIELD_ID_KEY].clone();
    assert_eq!(
        (fields[0].name().as_str(), id(&fields[0])),
        ("key", "4".into())
    );
    assert_eq!(
        (fields[1].name().as_str(), id(&fields[1])),
        ("value", "5".into())
    );
    assert!(!fields[0].is_nullable() && fields[1].is_nullable());
}

#[test]
fn an_added_map_gets_two_fresh_ids_and_cannot_be_a_key() {
    let schema = TableSchema::new(vec![col("id", ColumnType::Int64)], vec![]);
    let evolved = schema
        .evolve(
            &[
                col("id", ColumnType::Int64),
                col("m", map(ColumnType::Utf8, ColumnType::Int64)),
                col("x", ColumnType::Int32),
            ],
            1,
        )
        .unwrap();
    assert_eq!(evolved.field_ids, vec![1, 2, 5]);
    assert_eq!(evolved.element_id(1), 3);
    assert_eq!(evolved.max_field_id(), 5);

    let mut keyed = TableSchema::new(
        vec![ColumnSchema {
            nullable: false,
            ..col("m", map(ColumnType::Utf8, ColumnType::Utf8))
        }],
        vec!["m".into()],
    );
    let err = keyed.validate().unwrap_err().to_string();
    assert!(err.contains("'m'") && err.contains("scalar"), "{err}");
    keyed.primary_key.clear();
    keyed.validate().unwrap();
}
