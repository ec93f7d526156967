//! Just enough of Postgres's `pg_catalog` for clients that list tables through it: psql's
//! `\dt` and `\dn`, and tools that read `pg_namespace` / `pg_class` before they query.
//! Columns come from `information_schema.columns` (DataFusion's, always on).
//!
//! The tables are built per query from the engine's table list: `pg_namespace` (one row per
//! Iceberg namespace, plus `pg_catalog` and `information_schema`), `pg_class` (one ordinary
//! table, `relkind = 'r'`, per Iceberg table) and an empty `pg_am`. Oids are positions in the
//! sorted list, stable only within one query. The functions `\dt` calls
//! (`pg_get_userbyid`, `pg_table_is_visible`) answer "moonlink" and true: every table is
//! visible, whatever its namespace.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use datafusion::catalog::{MemTable, MemorySchemaProvider, SchemaProvider};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::SessionContext;
use moonlink_engine::TableInfo;

/// The schema name clients qualify catalog tables with.
pub(crate) const NAME: &str = "pg_catalog";

/// Owner of every table, as `pg_get_userbyid` names it.
const OWNER: &str = "moonlink";
/// Oid of the owner.
const OWNER_OID: i64 = 10;
/// Namespace oids start here (Postgres's first user oid); table oids follow.
const FIRST_OID: i64 = 16384;

fn table(fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<Arc<MemTable>> {
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

fn oid(name: &str) -> Field {
    Field::new(name, DataType::Int64, false)
}

fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

/// `pg_catalog` over `tables` (the open ones).
pub(crate) fn schema(tables: &[TableInfo]) -> Result<Arc<dyn SchemaProvider>> {
    let mut namespaces: BTreeMap<&str, i64> = BTreeMap::new();
    for name in tables.iter().map(|t| t.namespace.as_str()) {
        namespaces.entry(name).or_default();
    }
    let fixed = [(NAME, 11), ("information_schema", 13000)];
    for (i, (_, oid)) in namespaces.iter_mut().enumerate() {
        *oid = FIRST_OID + i as i64;
    }
    let mut nsp_oid: Vec<i64> = namespaces.values().copied().collect();
    let mut nsp_name: Vec<&str> = namespaces.keys().copied().collect();
    for (name, oid) in fixed {
        if !namespaces.contains_key(name) {
            nsp_oid.push(oid);
            nsp_name.push(name);
        }
    }
    let provider = MemorySchemaProvider::new();
    let owners = Int64Array::from(vec![OWNER_OID; nsp_oid.len()]);
    provider.register_table(
        "pg_namespace".into(),
        table(
            vec![oid("oid"), text("nspname"), oid("nspowner")],
            vec![
                Arc::new(Int64Array::from(nsp_oid)),
                Arc::new(StringArray::from(nsp_name)),
                Arc::new(owners),
            ],
        )?,
    )?;

    let first_table = FIRST_OID + namespaces.len() as i64;
    let n = tables.len();
    let rel_oid: Vec<i64> = (0..n as i64).map(|i| first_table + i).collect();
    let rel_nsp: Vec<i64> = tables
        .iter()
        .map(|t| namespaces[t.namespace.as_str()])
        .collect();
    let rows: Vec<f32> = tables
        .iter()
        .map(|t| (t.total_records.saturating_sub(t.deleted_rows) + t.buffered_rows as u64) as f32)
        .collect();
    provider.register_table(
        "pg_class".into(),
        table(
            vec![
                oid("oid"),
                text("relname"),
                oid("relnamespace"),
                text("relkind"),
                oid("relowner"),
                oid("relam"),
                text("relpersistence"),
                Field::new("relhasindex", DataType::Boolean, false),
                Field::new("relispartition", DataType::Boolean, false),
                Field::new("reltuples", DataType::Float32, false),
            ],
            vec![
                Arc::new(Int64Array::from(rel_oid)),
                Arc::new(StringArray::from_iter_values(
                    tables.iter().map(|t| &t.table),
                )),
                Arc::new(Int64Array::from(rel_nsp)),
                Arc::new(StringArray::from(vec!["r"; n])),
                Arc::new(Int64Array::from(vec![OWNER_OID; n])),
                Arc::new(Int64Array::from(vec![0; n])),
                Arc::new(StringArray::from(vec!["p"; n])),
                Arc::new(BooleanArray::from(vec![false; n])),
                Arc::new(BooleanArray::from(vec![false; n])),
                Arc::new(Float32Array::from(rows)),
            ],
        )?,
    )?;
    provider.register_table(
        "pg_am".into(),
        table(
            vec![oid("oid"), text("amname")],
            vec![
                Arc::new(Int64Array::from(Vec::<i64>::new())),
                Arc::new(StringArray::from(Vec::<&str>::new())),
            ],
        )?,
    )?;
    Ok(Arc::new(provider))
}

/// Registers the catalog functions psql's `\dt` calls, plain and `pg_catalog.`-qualified.
pub(crate) fn register_functions(ctx: &SessionContext) {
    let owner = create_udf(
        "pg_get_userbyid",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(OWNER.into()))))),
    )
    .with_aliases(["pg_catalog.pg_get_userbyid"]);
    let visible = create_udf(
        "pg_table_is_visible",
        vec![DataType::Int64],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))),
    )
    .with_aliases(["pg_catalog.pg_table_is_visible"]);
    ctx.register_udf(owner);
    ctx.register_udf(visible);
}
