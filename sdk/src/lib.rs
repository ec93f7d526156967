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

mod batch;
mod config;
pub mod log;
pub mod text;

/// The tutorial in `sdk/README.md`; its code blocks run as doctests, so it cannot rot.
#[cfg(all(doctest, feature = "source", feature = "transform"))]
#[doc = include_str!("../README.md")]
mod tutorial {}

pub use batch::{element_data_type, BatchBuilder, Value};
pub use config::{Config, ConfigError};

/// Bindings generated from the WIT package `moonlink:plugin` (`wit/plugin.wit`). The shared
/// types are generated once and reused by every world, so one `ChangeBatch` type serves all.
#[doc(hidden)]
pub mod bindings {
    pub mod types {
        wit_bindgen::generate!({
            path: "../wit",
            world: "plugin-types",
        });
    }

    #[cfg(any(feature = "source", feature = "transform"))]
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
            with: { "moonlink:plugin/types@0.2.0": crate::bindings::types::moonlink::plugin::types },
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
                "moonlink:plugin/types@0.2.0": crate::bindings::types::moonlink::plugin::types,
                "moonlink:plugin/host@0.2.0": crate::bindings::host::moonlink::plugin::host,
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
                "moonlink:plugin/types@0.2.0": crate::bindings::types::moonlink::plugin::types,
                "moonlink:plugin/host@0.2.0": crate::bindings::host::moonlink::plugin::host,
            },
        });
    }
}

/// The shared vocabulary: schemas, change batches, errors.
pub use bindings::types::moonlink::plugin::types::{
    ArrayValues, ChangeBatch, Column, ColumnValues, DataError, DataErrorKind, DataType,
    DecimalType, ElementType, ElementValues, Field, Int128, Operation, TableSchema, Utf8Buffer,
};

impl ColumnValues {
    /// The values of a string column, whichever form it travels in (`utf8` or packed
    /// `utf8-buffer`); `None` for other columns.
    pub fn strings(&self) -> Option<Vec<&str>> {
        match self {
            ColumnValues::Utf8(v) => Some(v.iter().map(String::as_str).collect()),
            ColumnValues::Utf8Buffer(b) => Some(
                b.offsets
                    .windows(2)
                    .map(|w| {
                        std::str::from_utf8(&b.data[w[0] as usize..w[1] as usize]).unwrap_or("")
                    })
                    .collect(),
            ),
            _ => None,
        }
    }
}

/// The rest-ingest plugin kind: HTTP request bodies in, one change batch out.
#[cfg(feature = "rest-ingest")]
pub mod rest {
    pub use crate::bindings::rest::exports::moonlink::plugin::rest_decoder::{
        Guest as RestDecoder, IngestRequest, RequestInfo, RequestMode,
    };
    pub use crate::{ChangeBatch, DataError, DataErrorKind};
}

/// Exports a type implementing [`rest::RestDecoder`] as the plugin's `rest-decoder`.
#[cfg(feature = "rest-ingest")]
#[macro_export]
macro_rules! export_rest_decoder {
    ($decoder:ident) => {
        // Exports exist only in the component; natively the plugin is a plain library, so
        // its logic can be unit-tested with `cargo test`.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::rest::__export_rest_ingest_world!($decoder with_types_in $crate::bindings::rest);
    };
}

#[cfg(feature = "source")]
pub mod source;

#[cfg(feature = "transform")]
pub mod transform;

impl DataError {
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
