//! Plugins built against earlier WIT packages, on a host that works in the current one
//! (`moonlink:plugin@0.4`). Each earlier package is kept verbatim under `wit/compat/` and its
//! values are converted one version at a time: 0.2 ↔ 0.3 (`v02`), 0.3 ↔ 0.4 (`v03`), so a
//! 0.2 plugin's values go through both and no conversion is written twice.

/// Variants that carry the same (plain) payload in both versions, or none.
macro_rules! same_variants {
    ($value:expr, $from:ident => $to:ident :: $ty:ident,
     plain: [$($plain:ident),*], unit: [$($unit:ident),*], other: { $($rest:tt)* }) => {
        match $value {
            $($from::$ty::$plain(x) => $to::$ty::$plain(x),)*
            $($from::$ty::$unit => $to::$ty::$unit,)*
            $($rest)*
        }
    };
}

pub(crate) mod v02;
pub(crate) mod v03;

use crate::bindings::exports::moonlink::plugin::rest_decoder as rest;
use crate::bindings::moonlink::plugin::types as wit;
use crate::bindings::source::exports::moonlink::plugin::source;
use crate::bindings::v02::exports::moonlink::plugin::rest_decoder as rest02;
use crate::bindings::v02::moonlink::plugin::types as wit02;
use crate::bindings::v02::source::exports::moonlink::plugin::source as source02;
use crate::error::RuntimeError;

/// A 0.2 plugin's batch, as the host's.
pub(crate) fn batch_from_v02(b: wit02::ChangeBatch) -> wit::ChangeBatch {
    v03::batch_up(v02::batch_up(b))
}

/// A batch for a 0.2 plugin (a map column, or a malformed packed buffer, is refused).
pub(crate) fn batch_to_v02(b: &wit::ChangeBatch) -> Result<wit02::ChangeBatch, RuntimeError> {
    v02::batch_down(v03::batch_down(b.clone())?)
}

/// A 0.2 source's table definition, as the host's.
pub(crate) fn table_def_from_v02(d: source02::TableDef) -> wit::TableDef {
    v03::table_def_up(v02::table_def_up(d))
}

/// A 0.2 source's event, as the host's.
pub(crate) fn source_event_from_v02(e: source02::SourceEvent) -> source::SourceEvent {
    v03::source_event_up(v02::source_event_up(e))
}

/// A decode request for a 0.2 decoder (the table's schema must be expressible in 0.2).
pub(crate) fn request_info_to_v02(
    info: &rest::RequestInfo,
) -> Result<rest02::RequestInfo, RuntimeError> {
    v02::request_info_down(&v03::request_info_down(info))
}

/// A 0.2 decoder's result, as the host's.
pub(crate) fn decoded_from_v02(
    r: Result<rest02::IngestRequest, wit02::DataError>,
) -> Result<rest::IngestRequest, wit::DataError> {
    r.map(|r| v03::ingest_request_up(v02::ingest_request_up(r)))
        .map_err(|e| v03::data_error_up(v02::data_error_up(e)))
}
