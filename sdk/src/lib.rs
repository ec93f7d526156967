//! moonlink-sdk: write moonlink plugins as WebAssembly components.
//!
//! A plugin implements one trait and calls one export macro:
//!
//! ```text
//! impl moonlink_sdk::source::Source for MySource { fn open(..); fn poll(..); fn ack(..) }
//! moonlink_sdk::export_source!(MySource);
//! ```
//!
//! `sdk/README.md` is the tutorial: a complete source and a transform, compiled and run as
//! doctests of this crate.
//!
//! Enable the matching cargo feature (`source`, `transform` or `rest-ingest`), build with
//! `cargo build --target wasm32-wasip2 --release`, and point `moonlink-host` at the `.wasm`.
//! The plugin logic is plain Rust: unit-test it natively with `cargo test`, no wasm involved.
//! `sdk/README.md` walks through a whole source.
//!
//! Building rows: [`BatchBuilder::row`] sets columns by name with typed values, and every
//! batch-building error is one type, [`DataError`], naming row and column. Reading and
//! filtering rows: [`ChangeBatch::retain_rows`], [`ChangeBatch::row`], [`Column::strings`]
//! and [`Column::map_strings`] (no string encodings to handle). Checkpoints that sort
//! correctly: [`Checkpoint`].

#![warn(missing_docs)]

mod batch;
mod change;
mod checkpoint;
mod config;
pub mod log;
mod map;
pub mod text;
mod values;

/// The tutorial in `sdk/README.md`; its code blocks run as doctests, so it cannot rot.
#[cfg(all(doctest, feature = "source", feature = "transform"))]
#[doc = include_str!("../README.md")]
mod tutorial {}

pub use batch::{element_data_type, element_type_of, BatchBuilder, Row, Value};
pub use change::RowRef;
pub use checkpoint::Checkpoint;
pub use config::{Config, ConfigError};
pub use map::MapColumnBuilder;

/// Bindings generated from the WIT package `moonlink:plugin` (`wit/plugin.wit`). The shared
/// types are generated once and reused by every world, so one `ChangeBatch` type serves all.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings {
    pub mod types {
        wit_bindgen::generate!({
            path: "../wit",
            world: "plugin-types",
        });
    }

    #[cfg(any(feature = "source", feature = "transform", feature = "receiver"))]
    pub mod host {
        wit_bindgen::generate!({
            path: "../wit",
            world: "plugin-host",
        });
    }

    #[cfg(feature = "rest-ingest")]
    pub mod rest {
        wit_bindgen::generate!({
            path: "../wit",
            world: "rest-ingest",
            pub_export_macro: true,
            export_macro_name: "__export_rest_ingest_world",
            default_bindings_module: "moonlink_sdk::bindings::rest",
            with: { "moonlink:plugin/types@0.4.0": crate::bindings::types::moonlink::plugin::types },
        });
    }

    #[cfg(feature = "source")]
    pub mod source {
        wit_bindgen::generate!({
            path: "../wit",
            world: "source-plugin",
            pub_export_macro: true,
            export_macro_name: "__export_source_world",
            default_bindings_module: "moonlink_sdk::bindings::source",
            with: {
                "moonlink:plugin/types@0.4.0": crate::bindings::types::moonlink::plugin::types,
                "moonlink:plugin/host@0.4.0": crate::bindings::host::moonlink::plugin::host,
            },
        });
    }

    #[cfg(feature = "receiver")]
    pub mod receiver {
        wit_bindgen::generate!({
            path: "../wit",
            world: "http-receiver",
            pub_export_macro: true,
            export_macro_name: "__export_receiver_world",
            default_bindings_module: "moonlink_sdk::bindings::receiver",
            with: {
                "moonlink:plugin/types@0.4.0": crate::bindings::types::moonlink::plugin::types,
                "moonlink:plugin/host@0.4.0": crate::bindings::host::moonlink::plugin::host,
            },
        });
    }

    #[cfg(feature = "transform")]
    pub mod transform {
        wit_bindgen::generate!({
            path: "../wit",
            world: "transform-plugin",
            pub_export_macro: true,
            export_macro_name: "__export_transform_world",
            default_bindings_module: "moonlink_sdk::bindings::transform",
            with: {
                "moonlink:plugin/types@0.4.0": crate::bindings::types::moonlink::plugin::types,
                "moonlink:plugin/host@0.4.0": crate::bindings::host::moonlink::plugin::host,
            },
        });
    }
}

/// The shared vocabulary: schemas, change batches, errors.
pub use bindings::types::moonlink::plugin::types::{
    ArrayValues, ChangeBatch, Column, ColumnValues, DataError, DataErrorKind, DataType,
    DecimalType, ElementType, ElementValues, Field, Int128, MapType, MapValues, Operation,
    TableDef, TableSchema, Utf8Buffer,
};

impl ColumnValues {
    /// The values of a string column, whichever form it travels in (`utf8` or packed
    /// `utf8-buffer`); `None` for other columns.
    pub fn strings(&self) -> Option<Vec<&str>> {
        match self {
            ColumnValues::Utf8(v) => Some(v.iter().map(String::as_str).collect()),
            ColumnValues::Utf8Buffer(b) => ColumnValues::packed_strings(b),
            _ => None,
        }
    }
}

impl ElementValues {
    /// The elements of a list or the keys or values of a map as text, whichever form they
    /// travel in (`utf8` or packed `utf8-buffer`); `None` when they are not strings.
    pub fn strings(&self) -> Option<Vec<&str>> {
        match self {
            ElementValues::Utf8(v) => Some(v.iter().map(String::as_str).collect()),
            ElementValues::Utf8Buffer(b) => ColumnValues::packed_strings(b),
            _ => None,
        }
    }
}

impl ColumnValues {
    fn packed_strings(b: &Utf8Buffer) -> Option<Vec<&str>> {
        Some(
            b.offsets
                .windows(2)
                .map(|w| std::str::from_utf8(&b.data[w[0] as usize..w[1] as usize]).unwrap_or(""))
                .collect(),
        )
    }
}

#[cfg(feature = "rest-ingest")]
pub mod rest;

#[cfg(feature = "source")]
pub mod source;

#[cfg(feature = "transform")]
pub mod transform;

#[cfg(feature = "receiver")]
pub mod receiver;

impl Field {
    /// A column that may hold nulls.
    pub fn nullable(name: &str, data_type: DataType) -> Field {
        Field {
            name: name.to_string(),
            data_type,
            nullable: true,
            default: None,
        }
    }

    /// The same column with a default: the value rows written before the column existed
    /// read (Iceberg `initial-default`), in Iceberg's JSON single-value form, e.g. `"7"`,
    /// `"\"abc\""`, `"\"2024-01-31\""`. Only a column being added takes it.
    pub fn with_default(mut self, json: impl Into<String>) -> Field {
        self.default = Some(json.into());
        self
    }

    /// A column that must hold a value in every inserted or upserted row.
    pub fn required(name: &str, data_type: DataType) -> Field {
        Field {
            nullable: false,
            ..Field::nullable(name, data_type)
        }
    }
}

impl TableDef {
    /// An unpartitioned table named `name` (the plugin's own name for it).
    pub fn new(name: impl Into<String>, schema: TableSchema) -> TableDef {
        TableDef {
            name: name.into(),
            schema,
            partition_by: Vec::new(),
        }
    }

    /// The same table partitioned by `spec` when the host creates it, in `POST /tables`
    /// form: `["day(created_at)", "bucket(16, id)", "region"]`.
    pub fn partitioned_by<'a>(mut self, spec: impl IntoIterator<Item = &'a str>) -> TableDef {
        self.partition_by = spec.into_iter().map(str::to_string).collect();
        self
    }
}

impl TableSchema {
    /// An append-only schema (no primary key) of `fields`, in order.
    pub fn new(fields: Vec<Field>) -> TableSchema {
        TableSchema {
            fields,
            primary_key: Vec::new(),
        }
    }

    /// The same schema keyed by the columns `key`.
    pub fn with_key<'a>(mut self, key: impl IntoIterator<Item = &'a str>) -> TableSchema {
        self.primary_key = key.into_iter().map(str::to_string).collect();
        self
    }
}

/// For `?` in `poll`, `open`, `configure` and `apply`, which return `String` errors.
impl From<DataError> for String {
    fn from(e: DataError) -> String {
        e.describe()
    }
}

/// The batch-building error type: a [`Config`] error while building is a request error.
impl From<ConfigError> for DataError {
    fn from(e: ConfigError) -> DataError {
        DataError::new(DataErrorKind::InvalidRequest, e.0)
    }
}

impl DataError {
    /// The message with its row and column, e.g. `row 3, column 'id': expected an integer`.
    pub fn describe(&self) -> String {
        match (self.row, &self.column) {
            (Some(row), Some(column)) => format!("row {row}, column '{column}': {}", self.message),
            (Some(row), None) => format!("row {row}: {}", self.message),
            (None, Some(column)) => format!("column '{column}': {}", self.message),
            (None, None) => self.message.clone(),
        }
    }

    /// An error about one value: row (0-based) and column named.
    pub fn invalid_value(row: usize, column: &str, message: impl Into<String>) -> Self {
        DataError {
            kind: DataErrorKind::InvalidValue,
            row: Some(row as u32),
            column: Some(column.to_string()),
            message: message.into(),
        }
    }

    /// An error about the request as a whole.
    pub fn new(kind: DataErrorKind, message: impl Into<String>) -> Self {
        DataError {
            kind,
            row: None,
            column: None,
            message: message.into(),
        }
    }
}
