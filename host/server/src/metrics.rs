//! `GET /metrics` in Prometheus text format.
//!
//! Two kinds of series. Events (WAL fsyncs, commits and their outcome, compaction and expiry
//! work, plugin calls, source faults and restarts, requests, rows ingested) are recorded where
//! they happen through the `metrics` facade — the engine and the pipeline depend only on the
//! facade — and rendered by the Prometheus recorder installed here. State (per table: rows,
//! files, bytes, deleted fraction, snapshots, buffered rows, LSNs, freshness; per source: state,
//! rows, lag, initial copy) is read at scrape time from `Engine::list_tables` and
//! `SourceRegistry::list`, so a dropped table or a finished source leaves no stale series.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::api::{AppState, IngestOperation};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets (seconds) for every `*_seconds` histogram: fsyncs take ~0.1-10 ms,
/// commits 10 ms to seconds (object stores).
const SECONDS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide recorder (once, at start-up). Without it (unit tests) the facade
/// calls are no-ops and `/metrics` shows only the scrape-time state.
pub fn install() -> anyhow::Result<()> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)?
        .install_recorder()?;
    let _ = HANDLE.set(handle);
    Ok(())
}

/// Rows and body bytes of one accepted ingest request.
pub(crate) fn record_ingest(table: &str, operation: IngestOperation, rows: u64, bytes: u64) {
    let operation = match operation {
        IngestOperation::Insert => "insert",
        IngestOperation::Upsert => "upsert",
        IngestOperation::Delete => "delete",
    };
    metrics::counter!("moonlink_ingested_rows_total", "table" => table.to_string(), "operation" => operation)
        .increment(rows);
    metrics::counter!("moonlink_ingested_bytes_total", "table" => table.to_string(), "operation" => operation)
        .increment(bytes);
}

/// Middleware: requests by route template (never the raw path: unbounded cardinality),
/// method and status, and their latency.
pub(crate) async fn track_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("moonlink_http_request_seconds", "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("moonlink_http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"),
        (status = 401, description = "Missing or wrong bearer token", body = crate::error::ApiError),
    ))]
pub(crate) async fn metrics_text(State(state): State<AppState>) -> Response {
    let mut text = match HANDLE.get() {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    };
    render_state(&state, &mut text);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One gauge family: `# HELP`, `# TYPE`, then one sample per (labels, value).
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn start<'a>(out: &'a mut String, name: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
    }
}

/// Label value escaping of the text format: backslash, double quote, newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

type TableGauge = (
    &'static str,
    &'static str,
    fn(&moonlink_engine::TableInfo, i64) -> Option<f64>,
);

const TABLE_GAUGES: [TableGauge; 12] = [
    ("moonlink_table_live_rows", "Rows in live data files minus deleted rows", |t, _| {
        Some(t.total_records.saturating_sub(t.deleted_rows) as f64)
    }),
    ("moonlink_table_data_files", "Live data files", |t, _| Some(t.data_files as f64)),
    ("moonlink_table_data_bytes", "Bytes of live data files", |t, _| Some(t.data_bytes as f64)),
    ("moonlink_table_deleted_fraction", "Deleted rows / rows in live data files", |t, _| {
        Some(if t.total_records == 0 { 0.0 } else { t.deleted_rows as f64 / t.total_records as f64 })
    }),
    ("moonlink_table_snapshots", "Snapshots kept in the metadata", |t, _| Some(t.snapshots as f64)),
    ("moonlink_table_buffered_rows", "Rows applied but not yet committed", |t, _| {
        Some(t.buffered_rows as f64)
    }),
    (
        "moonlink_table_buffered_bytes",
        "Arrow bytes of rows applied but not yet committed",
        |t, _| Some(t.buffered_bytes as f64),
    ),
    ("moonlink_table_committed_lsn", "Last log sequence number in a committed snapshot", |t, _| {
        Some(t.committed_lsn as f64)
    }),
    ("moonlink_table_last_lsn", "Last log sequence number applied", |t, _| Some(t.last_lsn as f64)),
    ("moonlink_table_failed", "1 if the table could not be opened", |t, _| {
        Some(if t.failed { 1.0 } else { 0.0 })
    }),
    ("moonlink_table_last_commit_age_seconds", "Seconds since the current snapshot was committed", |t, now| {
        t.last_commit_ms.map(|ms| (now - ms).max(0) as f64 / 1000.0)
    }),
    ("moonlink_table_freshness_seconds", "Seconds since the newest committed rows were committed (their arrival, to within one commit interval)", |t, now| {
        t.last_rows_commit_ms.map(|ms| (now - ms).max(0) as f64 / 1000.0)
    }),
];

/// Appends the scrape-time state of every table and source.
fn render_state(state: &AppState, out: &mut String) {
    let now = now_ms();
    let tables = state.engine.list_tables();
    for (name, help, value) in TABLE_GAUGES {
        let mut family = Family::start(out, name, help);
        for table in &tables {
            if let Some(v) = value(table, now) {
                family.sample(name, &[("table", &table.name)], v);
            }
        }
    }
    let sources = state.sources.list();
    let mut family = Family::start(
        out,
        "moonlink_source_state",
        "1 for the state each source is in (starting, running, finished, restarting, failed)",
    );
    for source in &sources {
        for s in [
            moonlink_pipeline::SourceState::Starting,
            moonlink_pipeline::SourceState::Running,
            moonlink_pipeline::SourceState::Finished,
            moonlink_pipeline::SourceState::Restarting,
            moonlink_pipeline::SourceState::Failed,
        ] {
            let v = if source.state == s { 1.0 } else { 0.0 };
            family.sample(
                "moonlink_source_state",
                &[("source", &source.name), ("state", s.as_str())],
                v,
            );
        }
    }
    let mut family = Family::start(
        out,
        "moonlink_source_rows",
        "Rows the source applied (after transforms) since start",
    );
    for source in &sources {
        family.sample(
            "moonlink_source_rows",
            &[("source", &source.name)],
            source.rows as f64,
        );
    }
    let mut family = Family::start(
        out,
        "moonlink_source_lag_seconds",
        "How far behind its upstream the source is: the age of its oldest unacknowledged change when the source measures it (Postgres), else seconds since its checkpoint advanced",
    );
    for source in &sources {
        if let Some(lag) = state.sources.lag_seconds(source) {
            family.sample(
                "moonlink_source_lag_seconds",
                &[("source", &source.name)],
                lag,
            );
        }
    }
    let mut family = Family::start(
        out,
        "moonlink_source_lag_bytes",
        "Upstream log the source has not had acknowledged, in bytes (Postgres: WAL end minus the acknowledged LSN)",
    );
    for source in &sources {
        if let Some(bytes) = source.reported_lag.and_then(|lag| lag.bytes) {
            family.sample(
                "moonlink_source_lag_bytes",
                &[("source", &source.name)],
                bytes as f64,
            );
        }
    }
    let mut family = Family::start(
        out,
        "moonlink_source_checkpoint_age_seconds",
        "Seconds since the source's acknowledged checkpoint last advanced",
    );
    for source in &sources {
        if let Some(age) = state.sources.checkpoint_age(&source.name) {
            family.sample(
                "moonlink_source_checkpoint_age_seconds",
                &[("source", &source.name)],
                age.as_secs_f64(),
            );
        }
    }
    let progress: Vec<_> = sources
        .iter()
        .flat_map(|s| s.copy_progress.values().map(move |p| (&s.name, p)))
        .collect();
    let mut family = Family::start(
        out,
        "moonlink_initial_copy_rows",
        "Rows of the initial copy done, per source and table",
    );
    for (source, p) in &progress {
        family.sample(
            "moonlink_initial_copy_rows",
            &[("source", source), ("table", &p.table)],
            p.rows_copied as f64,
        );
    }
    let mut family = Family::start(
        out,
        "moonlink_initial_copy_rows_expected",
        "Rows the initial copy will copy, when the source knows",
    );
    for (source, p) in &progress {
        if let Some(total) = p.rows_total {
            family.sample(
                "moonlink_initial_copy_rows_expected",
                &[("source", source), ("table", &p.table)],
                total as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
        let mut out = String::new();
        let mut family = Family::start(&mut out, "m", "help");
        family.sample("m", &[("table", "t\"1")], 2.5);
        assert_eq!(
            out,
            "# HELP m help\n# TYPE m gauge\nm{table=\"t\\\"1\"} 2.5\n"
        );
    }
}
