//! otel.wasm: an OpenTelemetry OTLP/HTTP receiver. `POST /v1/logs`, `/v1/traces` and
//! `/v1/metrics` bodies (protobuf or JSON; gzip undone by the host) become rows of three
//! append-only Iceberg tables, `otel.logs`, `otel.spans` and `otel.metrics` by default,
//! each partitioned by day of its time. Attributes are `map<string, string>` columns
//! (non-string values as their JSON text) and `service.name` is promoted to a column.
//!
//! Settings: `namespace` (default `otel`), `logs_table`, `spans_table`, `metrics_table`
//! (a name without a dot goes into `namespace`). `listen` is read by the host.

#[cfg(any(target_arch = "wasm32", test))]
mod alloc;
mod error;
mod http;
mod logs;
mod metrics;
mod render;
mod rows;
mod spans;
pub mod tables;
mod values;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod tests;

use moonlink_sdk::receiver::{HttpRequest, HttpResponse, Receiver, Reception};
use moonlink_sdk::{Config, TableDef};

pub use error::OtelError;

/// Size-class free lists: the allocation pattern of decoding one request after another.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: alloc::SizeClasses = alloc::SizeClasses::new();
pub use tables::Tables;

/// The receiver: its settings are the table names.
pub struct Otel {
    tables: Tables,
}

impl Otel {
    /// The receiver for `config` and the tables it writes.
    pub fn from_config(config: &Config) -> Result<Otel, String> {
        let namespace = config.opt_str("namespace")?.unwrap_or("otel").to_string();
        if namespace.is_empty() || namespace.contains('.') {
            return Err(format!(
                "namespace '{namespace}' must be one non-empty name without dots"
            ));
        }
        let name = |key: &str, default: &str| -> Result<String, String> {
            let table = config.opt_str(key)?.unwrap_or(default);
            if table.is_empty() {
                return Err(format!("{key} must not be empty"));
            }
            Ok(if table.contains('.') {
                table.to_string()
            } else {
                format!("{namespace}.{table}")
            })
        };
        let tables = Tables::new(
            name("logs_table", "logs")?,
            name("spans_table", "spans")?,
            name("metrics_table", "metrics")?,
        );
        Ok(Otel { tables })
    }

    /// One request (natively: the whole plugin minus the WIT boundary).
    pub fn handle(&self, request: HttpRequest) -> Reception {
        http::receive(&self.tables, request)
    }
}

impl Receiver for Otel {
    fn open(config: Config) -> Result<(Self, Vec<TableDef>), String> {
        let otel = Otel::from_config(&config)?;
        let defs = otel.tables.defs();
        Ok((otel, defs))
    }

    fn receive(&mut self, request: HttpRequest) -> Reception {
        self.handle(request)
    }

    fn failure(
        &self,
        request_headers: &[(String, String)],
        status: u16,
        message: &str,
    ) -> HttpResponse {
        http::failure(request_headers, status, message)
    }
}

moonlink_sdk::export_receiver!(Otel);
