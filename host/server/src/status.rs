//! The operators' view: `GET /status` (JSON), `GET /ready` (readiness), `GET /` (the status
//! page, which polls `/status`), and the watcher that keeps failed commits among the recent
//! faults.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use moonlink_engine::Engine;
use moonlink_pipeline::{SourceRegistry, SourceState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::AppState;
use crate::metrics::now_ms;

/// `GET /status`: everything the status page shows.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct StatusReport {
    /// When this report was made (ms since the Unix epoch).
    pub(crate) generated_at_ms: i64,
    pub(crate) version: String,
    /// Same as `GET /ready`.
    pub(crate) ready: bool,
    /// Why the service is degraded (`GET /health`'s reasons; empty when healthy).
    pub(crate) reasons: Vec<String>,
    pub(crate) tables: Vec<TableStatus>,
    pub(crate) sources: Vec<SourceStatusView>,
    /// HTTP-receiver plugins (as `GET /plugins` lists them).
    #[serde(default)]
    pub(crate) receivers: Vec<crate::api::ReceiverView>,
    /// The newest plugin faults and commit failures, newest first (at most 50).
    pub(crate) faults: Vec<FaultView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TableStatus {
    pub(crate) name: String,
    /// Rows in live data files minus deleted rows (as `GET /tables`' `live_rows`).
    pub(crate) live_rows: u64,
    pub(crate) total_records: u64,
    pub(crate) deleted_rows: u64,
    pub(crate) data_files: u64,
    pub(crate) data_bytes: u64,
    pub(crate) snapshots: u64,
    /// Rows applied but not yet committed.
    pub(crate) buffered_rows: u64,
    /// Their Arrow bytes in memory.
    pub(crate) buffered_bytes: u64,
    pub(crate) committed_lsn: u64,
    /// When the current snapshot was committed (ms since the Unix epoch).
    pub(crate) last_commit_ms: Option<i64>,
    /// Seconds since the newest committed rows were committed: their arrival, to within one
    /// commit interval.
    pub(crate) freshness_seconds: Option<f64>,
    pub(crate) failed: bool,
    pub(crate) last_error: Option<String>,
    /// Initial-copy progress, when a source copies or copied this table.
    pub(crate) initial_copy: Option<CopyStatus>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct CopyStatus {
    pub(crate) table: String,
    pub(crate) rows_copied: u64,
    pub(crate) rows_total: Option<u64>,
    /// 0-100, when the total is known.
    pub(crate) percent: Option<f64>,
    pub(crate) done: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct SourceStatusView {
    pub(crate) name: String,
    /// starting | running | finished | restarting | failed
    pub(crate) state: String,
    pub(crate) tables: Vec<String>,
    pub(crate) rows: u64,
    pub(crate) restarts: u64,
    pub(crate) last_error: Option<String>,
    /// How far behind its upstream the source is, in seconds: the age of its oldest
    /// unacknowledged change when the source measures it (Postgres), otherwise
    /// `checkpoint_age_seconds`.
    pub(crate) lag_seconds: Option<f64>,
    /// Upstream log not yet acknowledged, in bytes (Postgres: WAL end − acknowledged LSN),
    /// when the source reports it.
    pub(crate) lag_bytes: Option<u64>,
    /// Seconds since the acknowledged checkpoint last advanced (since start before the first).
    pub(crate) checkpoint_age_seconds: Option<f64>,
    pub(crate) acked_checkpoint: Option<String>,
    pub(crate) copy_progress: Vec<CopyStatus>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct FaultView {
    /// When (ms since the Unix epoch).
    pub(crate) at_ms: i64,
    /// `source` (a plugin faulted) or `commit` (a table's commit failed).
    pub(crate) kind: String,
    /// The source's or table's name.
    pub(crate) origin: String,
    pub(crate) message: String,
}

/// `GET /ready`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReadyResponse {
    /// `ready` or `not_ready`.
    #[schema(example = "ready")]
    pub(crate) status: &'static str,
    /// What is not ready yet (empty when ready).
    pub(crate) waiting_for: Vec<String>,
}

/// What is not ready: sources still loading their plugin or opening (`starting`). Tables are
/// open before the server listens (a table that failed to open is reported by `/health`, not
/// here: the other tables serve).
fn not_ready(sources: &SourceRegistry) -> Vec<String> {
    sources
        .list()
        .into_iter()
        .filter(|s| s.state == SourceState::Starting)
        .map(|s| format!("source '{}' is starting", s.name))
        .collect()
}

/// Readiness: 200 once every configured source has started (left `starting`), 503 naming
/// what is not ready before. Needs no token.
#[utoipa::path(get, path = "/ready", tag = "service", security(()),
    responses(
        (status = 200, description = "Ready to serve", body = ReadyResponse),
        (status = 503, description = "Not ready yet; `waiting_for` says what", body = ReadyResponse),
    ))]
pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    let waiting_for = not_ready(&state.sources);
    let code = if waiting_for.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let status = if waiting_for.is_empty() {
        "ready"
    } else {
        "not_ready"
    };
    (
        code,
        Json(ReadyResponse {
            status,
            waiting_for,
        }),
    )
        .into_response()
}

fn copy_status(p: &moonlink_runtime::CopyProgress) -> CopyStatus {
    CopyStatus {
        table: p.table.clone(),
        rows_copied: p.rows_copied,
        rows_total: p.rows_total,
        percent: moonlink_pipeline::copy_percent(p.rows_copied, p.rows_total),
        done: p.done,
    }
}

/// Builds the report (shared by `/status` and its tests).
pub(crate) fn report(state: &AppState) -> StatusReport {
    let now = now_ms();
    let tables = state
        .engine
        .list_tables()
        .into_iter()
        .map(|t| TableStatus {
            live_rows: t.total_records.saturating_sub(t.deleted_rows),
            total_records: t.total_records,
            deleted_rows: t.deleted_rows,
            data_files: t.data_files,
            data_bytes: t.data_bytes,
            snapshots: t.snapshots as u64,
            buffered_rows: t.buffered_rows as u64,
            buffered_bytes: t.buffered_bytes as u64,
            committed_lsn: t.committed_lsn,
            last_commit_ms: t.last_commit_ms,
            freshness_seconds: t
                .last_rows_commit_ms
                .map(|ms| (now - ms).max(0) as f64 / 1000.0),
            failed: t.failed,
            last_error: t.last_error.clone(),
            initial_copy: state
                .sources
                .copy_progress(&t.name)
                .map(|p| copy_status(&p)),
            name: t.name,
        })
        .collect();
    let sources = state
        .sources
        .list()
        .into_iter()
        .map(|s| SourceStatusView {
            lag_seconds: state.sources.lag_seconds(&s),
            lag_bytes: s.reported_lag.and_then(|lag| lag.bytes),
            checkpoint_age_seconds: state
                .sources
                .checkpoint_age(&s.name)
                .map(|d| d.as_secs_f64()),
            state: s.state.to_string(),
            tables: s.tables,
            rows: s.rows,
            restarts: s.restarts,
            last_error: s.last_error,
            acked_checkpoint: s.acked_checkpoint,
            copy_progress: s.copy_progress.values().map(copy_status).collect(),
            name: s.name,
        })
        .collect();
    let faults = state
        .sources
        .recent_faults()
        .into_iter()
        .map(|f| FaultView {
            at_ms: f
                .at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            kind: f.kind.to_string(),
            origin: f.origin,
            message: f.message,
        })
        .collect();
    StatusReport {
        generated_at_ms: now,
        version: env!("CARGO_PKG_VERSION").to_string(),
        ready: not_ready(&state.sources).is_empty(),
        reasons: crate::api::degraded_reasons(state),
        tables,
        sources,
        receivers: crate::api::ReceiverView::list(state),
        faults,
    }
}

/// Tables, sources and recent faults: what the status page at `GET /` shows.
#[utoipa::path(get, path = "/status", tag = "service",
    responses(
        (status = 200, description = "Tables, sources and recent faults", body = StatusReport),
        (status = 401, description = "Missing or wrong bearer token", body = crate::error::ApiError),
    ))]
pub(crate) async fn status(State(state): State<AppState>) -> Json<StatusReport> {
    Json(report(&state))
}

/// The status page: one self-contained HTML file (inline CSS and script, no external assets).
/// Served without the token and never containing it: the page asks for the token and sends it
/// to `/status` itself.
pub(crate) async fn status_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        include_str!("status_page.html"),
    )
        .into_response()
}

/// Records each table's newly failing commit among the recent faults (checked every second;
/// a failure repeating with the same message is recorded once until a commit succeeds).
pub(crate) fn spawn_fault_watcher(engine: Engine, sources: SourceRegistry) {
    tokio::spawn(async move {
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut now_failing = BTreeMap::new();
            for table in engine.list_tables() {
                if let (Some(error), false) = (table.last_error, table.failed) {
                    if seen.get(&table.name) != Some(&error) {
                        sources.record_fault("commit", &table.name, &error);
                    }
                    now_failing.insert(table.name, error);
                }
            }
            seen = now_failing;
        }
    });
}
