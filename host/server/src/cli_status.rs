//! `moonlink-host status`: the status page's summary in a terminal (for SSH sessions), from a
//! running server's `GET /status`.

use anyhow::{bail, Context};

use crate::status::StatusReport;

/// `moonlink-host status [--url URL] [--token T]`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The server's base URL.
    #[arg(long, env = "MOONLINK_URL", default_value = "http://127.0.0.1:3030")]
    url: String,

    /// Bearer token, when the server runs with --auth-token.
    #[arg(long, env = "MOONLINK_AUTH_TOKEN")]
    token: Option<String>,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let url = format!("{}/status", args.url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    let mut request = client.get(&url);
    if let Some(token) = &args.token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.with_context(|| format!("GET {url}"))?;
    let code = response.status();
    let body = response
        .text()
        .await
        .with_context(|| format!("reading {url}"))?;
    if code.as_u16() == 401 {
        bail!("GET {url}: 401, the server needs a token: pass --token or MOONLINK_AUTH_TOKEN");
    }
    if !code.is_success() {
        bail!("GET {url}: {code}: {body}");
    }
    let report: StatusReport =
        serde_json::from_str(&body).with_context(|| format!("GET {url}: not a status report"))?;
    print!("{}", render(&report, &args.url));
    Ok(())
}

/// Bytes as B, KiB, MiB, GiB.
pub(crate) fn human_bytes(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// Seconds as `42s`, `3m12s`, `2h05m`.
pub(crate) fn human_age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A text progress bar: `[#####-----] 50.0%` (or the rows copied when the total is unknown).
fn bar(copy: &crate::status::CopyStatus) -> String {
    if copy.done {
        return format!("done ({} rows)", copy.rows_copied);
    }
    match copy.percent {
        Some(p) => {
            let filled = ((p / 10.0).round() as usize).min(10);
            format!(
                "[{}{}] {p:.1}% ({} rows)",
                "#".repeat(filled),
                "-".repeat(10 - filled),
                copy.rows_copied
            )
        }
        None => format!("{} rows copied", copy.rows_copied),
    }
}

/// The summary, as printed.
pub(crate) fn render(report: &StatusReport, url: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let health = if report.reasons.is_empty() {
        "healthy"
    } else {
        "degraded"
    };
    let ready = if report.ready { "ready" } else { "not ready" };
    let _ = writeln!(
        out,
        "moonlink-host {} at {url}: {ready}, {health}",
        report.version
    );
    for reason in &report.reasons {
        let _ = writeln!(out, "  ! {reason}");
    }
    let _ = writeln!(
        out,
        "\nTABLES\n{:<28} {:>12} {:>6} {:>10} {:>12} {:>10}  INITIAL COPY",
        "NAME", "ROWS", "FILES", "SIZE", "LAST COMMIT", "FRESHNESS"
    );
    let now = report.generated_at_ms;
    for t in &report.tables {
        let last_commit = t
            .last_commit_ms
            .map(|ms| format!("{} ago", human_age((now - ms) as f64 / 1000.0)))
            .unwrap_or_else(|| "never".into());
        let freshness = t
            .freshness_seconds
            .map(human_age)
            .unwrap_or_else(|| "-".into());
        let copy = t.initial_copy.as_ref().map(bar).unwrap_or_default();
        let name = if t.failed {
            format!("{} (FAILED)", t.name)
        } else {
            t.name.clone()
        };
        let _ = writeln!(
            out,
            "{name:<28} {:>12} {:>6} {:>10} {last_commit:>12} {freshness:>10}  {copy}",
            t.live_rows,
            t.data_files,
            human_bytes(t.data_bytes)
        );
    }
    if !report.sources.is_empty() {
        let _ = writeln!(
            out,
            "\nSOURCES\n{:<20} {:<11} {:>12} {:>8} {:>10} {:>8}  LAST ERROR",
            "NAME", "STATE", "ROWS", "LAG", "BEHIND", "RESTARTS"
        );
        for s in &report.sources {
            let lag = s.lag_seconds.map(human_age).unwrap_or_else(|| "-".into());
            let behind = s.lag_bytes.map(human_bytes).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "{:<20} {:<11} {:>12} {lag:>8} {behind:>10} {:>8}  {}",
                s.name,
                s.state,
                s.rows,
                s.restarts,
                s.last_error.as_deref().unwrap_or("")
            );
        }
    }
    if !report.receivers.is_empty() {
        let _ = writeln!(
            out,
            "\nRECEIVERS\n{:<20} {:<26} {:>10} {:>8} {:>12}  LAST ERROR",
            "NAME", "LISTEN / ROUTE", "REQUESTS", "ERRORS", "ROWS"
        );
        for r in &report.receivers {
            let at = r.listen.as_deref().or(r.route.as_deref()).unwrap_or("-");
            let _ = writeln!(
                out,
                "{:<20} {at:<26} {:>10} {:>8} {:>12}  {}",
                r.name,
                r.requests,
                r.errors,
                r.rows,
                r.last_error.as_deref().unwrap_or("")
            );
        }
    }
    if !report.faults.is_empty() {
        let _ = writeln!(out, "\nRECENT FAULTS");
        for f in report.faults.iter().take(10) {
            let age = human_age((now - f.at_ms) as f64 / 1000.0);
            let _ = writeln!(out, "{age:>8} ago  {} {}: {}", f.kind, f.origin, f.message);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_age(42.4), "42s");
        assert_eq!(human_age(192.0), "3m12s");
        assert_eq!(human_age(7500.0), "2h05m");
    }

    #[test]
    fn report_renders_tables_sources_and_faults() {
        let report: StatusReport = serde_json::from_value(serde_json::json!({
            "generated_at_ms": 10_000, "version": "0.1.0", "ready": false,
            "reasons": ["source 'pg' is restarting: boom"],
            "tables": [{"name": "public.users", "live_rows": 7, "total_records": 7,
                "deleted_rows": 0, "data_files": 1, "data_bytes": 2048, "snapshots": 2,
                "buffered_rows": 0, "buffered_bytes": 0, "committed_lsn": 3, "last_commit_ms": 8000,
                "freshness_seconds": 2.0, "failed": false, "last_error": null,
                "initial_copy": {"table": "public.users", "rows_copied": 5, "rows_total": 10,
                    "percent": 50.0, "done": false}}],
            "sources": [{"name": "pg", "state": "restarting", "tables": ["public.users"],
                "rows": 7, "restarts": 1, "last_error": "boom", "lag_seconds": 3.0,
                "lag_bytes": 4_194_304, "checkpoint_age_seconds": 5.0, "acked_checkpoint": null, "copy_progress": []}],
            "receivers": [{"name": "otel", "path": "otel.wasm", "listen": "127.0.0.1:4318",
                "route": null, "tables": ["otel.spans"], "requests": 12, "errors": 2, "rows": 900,
                "last_error": "503: backlogged"}],
            "faults": [{"at_ms": 9000, "kind": "source", "origin": "pg", "message": "boom"}]
        }))
        .expect("a report");
        let text = render(&report, "http://h");
        assert!(text.contains("not ready, degraded"), "{text}");
        assert!(text.contains("public.users"), "{text}");
        assert!(text.contains("[#####-----] 50.0%"), "{text}");
        assert!(text.contains("restarting"), "{text}");
        assert!(text.contains("4.0 MiB"), "{text}");
        assert!(text.contains("1s ago  source pg: boom"), "{text}");
        assert!(text.contains("RECEIVERS"), "{text}");
        let line = text
            .lines()
            .find(|l| l.starts_with("otel "))
            .expect("a receiver line");
        assert!(
            line.contains("127.0.0.1:4318") && line.contains("503: backlogged"),
            "{line}"
        );
        // A report without receivers (an older server) still reads.
        let older: StatusReport = serde_json::from_value(serde_json::json!({
            "generated_at_ms": 0, "version": "0.1.0", "ready": true, "reasons": [],
            "tables": [], "sources": [], "faults": []
        }))
        .expect("an older report");
        assert!(older.receivers.is_empty());
    }
}
