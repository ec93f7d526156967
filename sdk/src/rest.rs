//! The rest-ingest plugin kind: HTTP request bodies in, one change batch out. Implement
//! [`RestDecoder`] and call [`export_rest_decoder!`](crate::export_rest_decoder).

pub use crate::bindings::rest::exports::moonlink::plugin::rest_decoder::{
    IngestRequest, RequestInfo, RequestMode,
};
pub use crate::{ChangeBatch, DataError, DataErrorKind};

/// The generated `rest-decoder` interface, for plugins written against it directly (SDK 0.1).
pub use crate::bindings::rest::exports::moonlink::plugin::rest_decoder::Guest as RawRestDecoder;

/// A decoder of `POST /ingest/{table}` bodies.
///
/// ```
/// use moonlink_sdk::rest::{IngestRequest, RequestInfo, RequestMode, RestDecoder};
/// use moonlink_sdk::{BatchBuilder, DataError, DataType, Field, Operation, TableSchema};
///
/// /// One row per line of the body: the line in the table's first column.
/// pub struct Lines;
///
/// impl RestDecoder for Lines {
///     fn decode(info: RequestInfo, body: Vec<u8>) -> Result<IngestRequest, DataError> {
///         let column = &info.schema.fields[0].name;
///         let mut batch = BatchBuilder::new(&info.table, &info.schema);
///         for line in String::from_utf8_lossy(&body).lines() {
///             let mut row = batch.row();
///             row.set(column, line)?;
///             row.finish(Operation::Insert)?;
///         }
///         let sync = info.param("request_mode") == Some("sync");
///         let request_mode = if sync { RequestMode::Sync } else { RequestMode::Async };
///         Ok(IngestRequest { batch: batch.finish(), request_mode })
///     }
/// }
///
/// moonlink_sdk::export_rest_decoder!(Lines);
///
/// fn main() {
///     let info = RequestInfo {
///         table: "demo.lines".into(),
///         schema: TableSchema::new(vec![Field::required("line", DataType::Utf8)]),
///         content_type: Some("text/plain".into()),
///         parameters: vec![("request_mode".into(), "sync".into())],
///     };
///     let request = Lines::decode(info, b"a\nb\n".to_vec()).unwrap();
///     assert_eq!(request.batch.num_rows(), 2);
///     assert!(matches!(request.request_mode, RequestMode::Sync));
/// }
/// ```
pub trait RestDecoder {
    /// Turns one request body into one batch for `info.table` (whose current schema is
    /// `info.schema`) and says when the host may answer. An error names the row and column.
    fn decode(info: RequestInfo, body: Vec<u8>) -> Result<IngestRequest, DataError>;
}

impl RequestInfo {
    /// The value of query parameter `key`, if given.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[doc(hidden)]
pub fn __decode<D: RestDecoder>(
    info: RequestInfo,
    body: Vec<u8>,
) -> Result<IngestRequest, DataError> {
    D::decode(info, body)
}

/// Exports a type implementing [`RestDecoder`] as the plugin's `rest-decoder`.
#[macro_export]
macro_rules! export_rest_decoder {
    ($decoder:ident) => {
        // Exports exist only in the component; natively the plugin is a plain library, so
        // its logic can be unit-tested with `cargo test`.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct MoonlinkRestExport;
            impl $crate::rest::RawRestDecoder for MoonlinkRestExport {
                fn decode(
                    info: $crate::rest::RequestInfo,
                    body: Vec<u8>,
                ) -> Result<$crate::rest::IngestRequest, $crate::DataError> {
                    $crate::rest::__decode::<$decoder>(info, body)
                }
            }
            $crate::bindings::rest::__export_rest_ingest_world!(
                MoonlinkRestExport with_types_in $crate::bindings::rest
            );
        };
    };
}
