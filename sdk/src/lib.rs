//! moonlink-sdk: write moonlink plugins as WebAssembly components.
//!
//! A plugin implements one trait and calls one export macro:
//!
//! ```ignore
//! use moonlink_sdk::rest::{DataError, IngestRequest, RequestInfo, RestDecoder};
//!
//! struct MyDecoder;
//!
//! impl RestDecoder for MyDecoder {
//!     fn decode(info: RequestInfo, body: Vec<u8>) -> Result<IngestRequest, DataError> {
//!         // parse `body` and fill a `moonlink_sdk::BatchBuilder` for `info.schema`
//!         # unimplemented!()
//!     }
//! }
//!
//! moonlink_sdk::export_rest_decoder!(MyDecoder);
//! ```
//!
//! and builds with `cargo build --target wasm32-wasip2 --release`. The plugin logic is plain
//! Rust: it can be unit-tested natively with `cargo test`, no wasm involved.

mod batch;

pub use batch::{BatchBuilder, Value};

/// Bindings generated from the WIT package `moonlink:plugin` (`wit/plugin.wit`).
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "rest-ingest",
        pub_export_macro: true,
        export_macro_name: "__export_rest_ingest_world",
        default_bindings_module: "moonlink_sdk::bindings",
    });
}

/// The shared vocabulary: schemas, change batches, errors.
pub use bindings::moonlink::plugin::types::{
    Column, ColumnValues, DataError, DataErrorKind, DataType, DecimalType, Field, Int128,
    Operation, TableSchema,
};

/// The rest-ingest plugin kind: HTTP request bodies in, one change batch out.
pub mod rest {
    pub use crate::bindings::exports::moonlink::plugin::rest_decoder::{
        Guest as RestDecoder, IngestRequest, RequestInfo, RequestMode,
    };
    pub use crate::{ChangeBatch, DataError, DataErrorKind};
}

pub use bindings::moonlink::plugin::types::ChangeBatch;

/// Exports a type implementing [`rest::RestDecoder`] as the plugin's `rest-decoder`.
#[macro_export]
macro_rules! export_rest_decoder {
    ($decoder:ident) => {
        // Exports exist only in the component; natively the plugin is a plain library, so
        // its logic can be unit-tested with `cargo test`.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_rest_ingest_world!($decoder with_types_in $crate::bindings);
    };
}

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
