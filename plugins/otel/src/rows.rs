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
    /// Rows for `table`, with room for `expected` of them.
    pub fn new(table: &str, schema: &TableSchema, expected: usize) -> Rows {
        let mut batch = BatchBuilder::new(table, schema);
        batch.reserve(expected);
        Rows {
            batch,
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

    /// Sets a string column, an empty string included.
    pub fn set_text(&mut self, column: usize, value: &str) -> Result<(), OtelError> {
        self.batch
            .set_str(column, value)
            .map_err(|e| self.internal(column, e))
    }

    /// Sets a trace or span id as lower-case hex (no allocation); an empty id stays null.
    pub fn set_id(&mut self, column: usize, id: &[u8]) -> Result<(), OtelError> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buffer = [0u8; 64];
        if id.len() * 2 > buffer.len() {
            return match crate::values::hex_id(id) {
                Some(hex) => self.set_text(column, &hex),
                None => Ok(()),
            };
        }
        for (i, b) in id.iter().enumerate() {
            buffer[2 * i] = DIGITS[(b >> 4) as usize];
            buffer[2 * i + 1] = DIGITS[(b & 15) as usize];
        }
        // Hex digits are ASCII.
        let hex = std::str::from_utf8(&buffer[..id.len() * 2]).unwrap_or_default();
        self.set_str(column, hex)
    }

    /// Sets a `map<string, string>` column from text entries (copied, no `Value`).
    pub fn set_map<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        column: usize,
        entries: impl IntoIterator<Item = (K, Option<V>)>,
    ) -> Result<(), OtelError> {
        self.batch
            .set_str_map(column, entries)
            .map_err(|e| self.internal(column, e))
    }

    /// Sets a `list<string>` column from text elements (copied, no `Value`).
    pub fn set_list<S: AsRef<str>>(
        &mut self,
        column: usize,
        items: impl IntoIterator<Item = Option<S>>,
    ) -> Result<(), OtelError> {
        self.batch
            .set_str_list(column, items)
            .map_err(|e| self.internal(column, e))
    }

    /// Sets a resource's `service.name` and attributes columns.
    pub fn set_resource(
        &mut self,
        service_column: usize,
        attributes_column: usize,
        resource: &crate::values::Resource,
    ) -> Result<(), OtelError> {
        if let Some(service) = &resource.service {
            self.set_text(service_column, service)?;
        }
        self.set_map(attributes_column, resource.entries())
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
