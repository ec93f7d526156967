//! Data files are read by Iceberg field id, not by column name: a renamed column keeps its
//! data, a column dropped and added again under the same name reads as null (or its
//! `initial-default`) in files written before, and a widened column (int → long, float →
//! double) is cast from the narrower type stored in old files.
//!
//! DataFusion's Parquet scan adapts each file to the table schema through a
//! [`PhysicalExprAdapter`]; the default one matches columns by name. This one matches the
//! table field's `PARQUET:field_id` with the file's. A file without field ids (written by
//! another engine without them) falls back to names, as Iceberg's name mapping would.

use std::sync::Arc;

use arrow_schema::{Field, SchemaRef};
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::physical_expr::expressions::{CastExpr, Column, Literal};
use datafusion::physical_expr_adapter::{
    DefaultPhysicalExprAdapter, DefaultPhysicalExprAdapterFactory, PhysicalExprAdapter,
    PhysicalExprAdapterFactory,
};
use datafusion::physical_expr_common::physical_expr::PhysicalExprRef;
use parquet::arrow::PARQUET_FIELD_ID_META_KEY;

/// Creates a [`FieldIdAdapter`] per data file.
#[derive(Debug)]
pub(crate) struct FieldIdAdapterFactory;

impl PhysicalExprAdapterFactory for FieldIdAdapterFactory {
    fn create(
        &self,
        logical_file_schema: SchemaRef,
        physical_file_schema: SchemaRef,
    ) -> Result<Arc<dyn PhysicalExprAdapter>> {
        let has_ids = physical_file_schema
            .fields()
            .iter()
            .any(|f| field_id(f).is_some());
        if !has_ids {
            return DefaultPhysicalExprAdapterFactory
                .create(logical_file_schema, physical_file_schema);
        }
        Ok(Arc::new(FieldIdAdapter {
            by_name: DefaultPhysicalExprAdapter::new(
                logical_file_schema.clone(),
                physical_file_schema.clone(),
            ),
            logical: logical_file_schema,
            physical: physical_file_schema,
        }))
    }
}

fn field_id(field: &Field) -> Option<&String> {
    field.metadata().get(PARQUET_FIELD_ID_META_KEY)
}

/// Rewrites the table's column references into one data file's columns, by field id.
#[derive(Debug)]
struct FieldIdAdapter {
    logical: SchemaRef,
    physical: SchemaRef,
    /// For a table column without a field id (never the case for our tables).
    by_name: DefaultPhysicalExprAdapter,
}

impl FieldIdAdapter {
    fn column(&self, column: &Column) -> Result<PhysicalExprRef> {
        let as_is = || -> PhysicalExprRef { Arc::new(column.clone()) };
        let Ok(logical) = self.logical.field_with_name(column.name()) else {
            return self.by_name.rewrite(as_is());
        };
        let Some(id) = field_id(logical) else {
            return self.by_name.rewrite(as_is());
        };
        let found = self
            .physical
            .fields()
            .iter()
            .position(|f| field_id(f) == Some(id));
        let Some(index) = found else {
            // Not in this file: the column was added after it was written.
            let value = match moonlink_engine::initial_default(logical) {
                Some(array) => ScalarValue::try_from_array(&array, 0)?,
                None => ScalarValue::Null.cast_to(logical.data_type())?,
            };
            return Ok(Arc::new(Literal::new_with_metadata(
                value,
                Some(logical.into()),
            )));
        };
        let physical = self.physical.field(index);
        let resolved: PhysicalExprRef = Arc::new(Column::new(physical.name(), index));
        if physical == logical {
            return Ok(resolved);
        }
        // Another name, a narrower type, or other metadata: cast to the table's field.
        Ok(Arc::new(CastExpr::new_with_target_field(
            resolved,
            Arc::new(logical.clone()),
            None,
        )))
    }
}

impl PhysicalExprAdapter for FieldIdAdapter {
    fn rewrite(&self, expr: PhysicalExprRef) -> Result<PhysicalExprRef> {
        expr.transform(|e| match e.downcast_ref::<Column>() {
            Some(column) => Ok(Transformed::yes(self.column(column)?)),
            None => Ok(Transformed::no(e)),
        })
        .data()
    }
}
