//! Rows of one table built by column position, and the count of records refused on the way
//! (OTLP's `partial_success`).

use moonlink_sdk::{BatchBuilder, ChangeBatch, Operation, TableSchema, Value};

use crate::error::OtelError;
use crate::values::Refused;

/// A batch being built for one table plus the records refused so far.
pub struct Rows {
    batch: BatchBuilder,
    pub rejected: u64,
    first_refusal: Option<String>,
}

impl Rows {
    pub fn new(table: &str, schema: &TableSchema) -> Rows {
        Rows {
            batch: BatchBuilder::new(table, schema),
            rejected: 0,
            first_refusal: None,
        }
    }

    /// Starts an inserted row; every column is null until set.
    pub fn start(&mut self) {
        self.batch.start_row(Operation::Insert);
    }

    /// Sets column `column` (a position from `tables`). The plugin declared the schema, so a
    /// refusal here is a bug of the plugin, reported as a 500.
    pub fn set(&mut self, column: usize, value: Value) -> Result<(), OtelError> {
        self.batch
            .set(column, value)
            .map_err(|e| self.internal(column, e))
    }

    /// Sets a string column (no allocation); an empty string stays null.
    pub fn set_str(&mut self, column: usize, value: &str) -> Result<(), OtelError> {
        if value.is_empty() {
            return Ok(());
        }
        self.batch
            .set_str(column, value)
            .map_err(|e| self.internal(column, e))
    }

    pub fn finish_row(&mut self) -> Result<(), OtelError> {
        self.batch
            .finish_row()
            .map_err(|e| OtelError::Internal(e.describe()))
    }

    fn internal(&self, column: usize, message: String) -> OtelError {
        OtelError::Internal(format!(
            "column '{}': {message}",
            self.batch.field(column).name
        ))
    }

    /// Counts a record that is not written.
    pub fn refuse(&mut self, why: Refused) {
        self.rejected += 1;
        self.first_refusal.get_or_insert(why.0);
    }

    /// The rows (none: no batch) and the partial-success message, if any record was refused.
    pub fn finish(self) -> (Option<ChangeBatch>, u64, String) {
        let message = match (self.rejected, self.first_refusal) {
            (0, _) | (_, None) => String::new(),
            (1, Some(first)) => first,
            (n, Some(first)) => format!("{n} records refused; the first: {first}"),
        };
        let batch = (!self.batch.is_empty()).then(|| self.batch.finish());
        (batch, self.rejected, message)
    }
}
