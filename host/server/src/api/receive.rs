//! HTTP-receiver plugins (WIT `http-receiver`, e.g. otel.wasm): mounted on their own
//! listener (`listen = "127.0.0.1:4318"` in the plugin's settings) or under
//! `/receive/{plugin}` on the main one.
//!
//! A request: body read against `--max-body-bytes` and the in-flight budget; `gzip`/`deflate`
//! undone within the same limits; the plugin's `receive`; every batch checked against its
//! table before anything is written; the batches logged durably (as `POST /ingest` async);
//! then the plugin's response. When the host cannot take the request (413, 503, a batch
//! refused) nothing is written and the plugin's `failure` answers, in the client's format.
//!
//! Tokens: under `/receive` on the main listener `--auth-token` applies as on every route.
//! On a plugin's own listener it applies only with `auth = "token"` in the settings (OTLP
//! exporters send it as `Authorization: Bearer ...` through their `headers` option); such a
//! listener must then be loopback-only unless `auth = "token"`.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use anyhow::{bail, Context};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use moonlink_engine::{CreateTable, Durability, EngineError, TableOptions};
use moonlink_runtime::{
    into_engine_batch, HttpRequest, HttpResponse, PluginRuntime, ReceiverPlugin,
};

use super::body::{read_body, too_large};
use super::{token_matches, AppState};
use crate::budget::BodyPermit;
use crate::error::ApiError;
use crate::plugin_config::SourceConfig;

/// The receivers the host serves, as the operators' views (`/plugins`, `/status`) show them.
#[derive(Clone, Default)]
pub struct ReceiverRegistry(Arc<RwLock<Vec<Arc<ReceiverStats>>>>);

/// One receiver: where it is mounted and what it served so far.
pub struct ReceiverStats {
    pub name: String,
    /// The component's path.
    pub path: String,
    /// Its own listener (`listen` in its settings), if any.
    pub listen: Option<String>,
    /// Its mount on the main listener (`/receive/{name}`) when it has no listener of its own.
    pub route: Option<String>,
    /// The host tables it writes.
    pub tables: Vec<String>,
    /// Requests answered, whatever their status.
    pub requests: AtomicU64,
    /// Requests answered with a status of 400 or more.
    pub errors: AtomicU64,
    /// Rows written to the log.
    pub rows: AtomicU64,
    /// The newest refusal by the host (413, 503, a refused batch ...), with its status.
    pub last_error: Mutex<Option<String>>,
}

impl ReceiverRegistry {
    /// Every receiver, in configuration order.
    pub fn list(&self) -> Vec<Arc<ReceiverStats>> {
        self.0.read().map(|r| r.clone()).unwrap_or_default()
    }

    fn add(&self, stats: Arc<ReceiverStats>) {
        if let Ok(mut r) = self.0.write() {
            r.push(stats);
        }
    }
}

/// A receiver plugin ready to serve.
#[derive(Clone)]
pub struct Mounted {
    plugin: ReceiverPlugin,
    stats: Arc<ReceiverStats>,
    /// The plugin's table names → the host's (`[tables]` in its config, else the same).
    tables: Arc<BTreeMap<String, String>>,
    /// Its own listener, if any.
    listen: Option<SocketAddr>,
    /// Whether the bearer token is required (always under `/receive` when one is set).
    require_token: bool,
}

/// A receiver plugin loaded, not yet opened.
pub struct Loaded {
    plugin: ReceiverPlugin,
    config: SourceConfig,
    listen: Option<SocketAddr>,
    require_token: bool,
}

/// Takes the receiver plugins out of `configs` (a plugin is a receiver when its component
/// exports the `http-receiver` world) and loads them; the rest stay sources.
pub fn split_receivers(
    runtime: &PluginRuntime,
    configs: &mut Vec<SourceConfig>,
    auth_token: Option<&str>,
) -> anyhow::Result<Vec<Loaded>> {
    let mut receivers = Vec::new();
    let mut sources = Vec::new();
    for config in configs.drain(..) {
        let path = config.path.clone().unwrap_or_default();
        let spec = config.spec();
        let loaded = ReceiverPlugin::try_load(
            runtime,
            &path,
            &spec.name,
            &spec.settings_json,
            spec.capabilities.clone(),
        );
        // Not a receiver, or not loadable at all: a source, whose driver reports the fault.
        let Ok(Some(plugin)) = loaded else {
            sources.push(config);
            continue;
        };
        if !config.transforms.is_empty() {
            bail!(
                "plugin '{}' is an HTTP receiver: transforms are not supported",
                spec.name
            );
        }
        let listen = match config.settings.get("listen") {
            None => None,
            Some(toml::Value::String(s)) => Some(s.parse::<SocketAddr>().with_context(|| {
                format!(
                    "plugin '{}': listen = \"{s}\" is not an address:port",
                    spec.name
                )
            })?),
            Some(other) => bail!(
                "plugin '{}': listen must be a string, got {other:?}",
                spec.name
            ),
        };
        let require_token = match (listen, config.settings.get("auth").and_then(|a| a.as_str())) {
            (None, _) => auth_token.is_some(),
            (Some(_), Some("token")) if auth_token.is_none() => bail!(
                "plugin '{}': auth = \"token\" needs --auth-token (or MOONLINK_AUTH_TOKEN)",
                spec.name
            ),
            (Some(_), Some("token")) => true,
            (Some(address), None | Some("none")) if !address.ip().is_loopback() => bail!(
                "plugin '{}': listen = \"{address}\" is reachable beyond this machine: set auth = \"token\"",
                spec.name
            ),
            (Some(_), None | Some("none")) => false,
            (Some(_), Some(other)) => {
                bail!("plugin '{}': auth = \"{other}\": use \"token\" or \"none\"", spec.name)
            }
        };
        receivers.push(Loaded {
            plugin,
            config,
            listen,
            require_token,
        });
    }
    *configs = sources;
    Ok(receivers)
}

/// Opens each receiver (its first instance) and creates its tables that do not exist yet,
/// with their partition specs.
pub async fn open(state: &AppState, receivers: Vec<Loaded>) -> anyhow::Result<Vec<Mounted>> {
    let mut mounted = Vec::new();
    for Loaded {
        plugin,
        config,
        listen,
        require_token,
    } in receivers
    {
        let opener = plugin.clone();
        let defs = tokio::task::spawn_blocking(move || opener.open())
            .await?
            .with_context(|| format!("opening plugin '{}'", plugin.name()))?;
        let mut tables = BTreeMap::new();
        for def in defs {
            let host = config
                .tables
                .get(&def.name)
                .cloned()
                .unwrap_or(def.name.clone());
            if state.engine.table_info(&host).is_err() {
                let (namespace, table) = moonlink_pipeline::split_table_name(&host);
                let created = state
                    .engine
                    .create_table(CreateTable {
                        name: host.clone(),
                        namespace,
                        table,
                        schema: def.schema,
                        options: TableOptions {
                            partition_by: def.partition_by,
                            ..Default::default()
                        },
                    })
                    .await;
                match created {
                    Ok(_) => tracing::info!(plugin = plugin.name(), table = %host, "table created"),
                    Err(EngineError::TableExists(_)) => {}
                    Err(e) => return Err(e).with_context(|| format!("creating table '{host}'")),
                }
            }
            tables.insert(def.name, host);
        }
        let stats = Arc::new(ReceiverStats {
            name: plugin.name().to_string(),
            path: config
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            listen: listen.map(|a| a.to_string()),
            route: listen
                .is_none()
                .then(|| format!("/receive/{}", plugin.name())),
            tables: tables.values().cloned().collect(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            last_error: Mutex::new(None),
        });
        state.receivers.add(stats.clone());
        mounted.push(Mounted {
            plugin,
            stats,
            tables: Arc::new(tables),
            listen,
            require_token,
        });
    }
    Ok(mounted)
}

#[derive(Clone)]
struct Routes {
    app: AppState,
    by_name: Arc<BTreeMap<String, Mounted>>,
}

/// `/receive/{plugin}/...` on the main listener, for receivers without a listener of their
/// own.
pub fn main_routes(state: &AppState, mounted: &[Mounted]) -> Router {
    let by_name = mounted
        .iter()
        .filter(|m| m.listen.is_none())
        .map(|m| (m.plugin.name().to_string(), m.clone()))
        .collect();
    let routes = Routes {
        app: state.clone(),
        by_name: Arc::new(by_name),
    };
    Router::new()
        .route("/receive/{plugin}", any(on_main))
        .route("/receive/{plugin}/{*rest}", any(on_main))
        .layer(axum::middleware::from_fn(crate::metrics::track_requests))
        .with_state(routes)
}

async fn on_main(State(routes): State<Routes>, request: Request) -> Response {
    // `/receive/{plugin}{rest}`: the plugin sees `rest` (at least `/`).
    let path = request.uri().path().to_string();
    let tail = path.strip_prefix("/receive/").unwrap_or("");
    let (name, rest) = match tail.find('/') {
        Some(i) => (&tail[..i], &tail[i..]),
        None => (tail, "/"),
    };
    let Some(mounted) = routes.by_name.get(name) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no receiver plugin named '{name}'"),
        )
        .into_response();
    };
    serve(&routes.app, mounted, rest.to_string(), request).await
}

/// Binds the receivers that have their own listener; each serves until `shutdown` fires.
pub async fn spawn_listeners(
    state: &AppState,
    mounted: &[Mounted],
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for m in mounted {
        let Some(address) = m.listen else { continue };
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| {
                format!(
                    "plugin '{}': binding listen = \"{address}\"",
                    m.plugin.name()
                )
            })?;
        tracing::info!(plugin = m.plugin.name(), listen = %address, "receiver listening");
        let app = state.clone();
        let mounted = m.clone();
        let router = Router::new().fallback(move |request: Request| {
            let (app, mounted) = (app.clone(), mounted.clone());
            async move {
                let path = request.uri().path().to_string();
                serve(&app, &mounted, path, request).await
            }
        });
        let mut shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let stop = async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(listen = %address, error = %e, "receiver listener failed");
            }
        }));
    }
    Ok(tasks)
}

/// One request to one receiver, start to end; counted by plugin, path and status.
async fn serve(app: &AppState, mounted: &Mounted, path: String, request: Request) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let response = handle(app, mounted, path.clone(), request).await;
    let status = response.status();
    // The path only when the plugin knows it (404: anything a client sent, unbounded).
    let route = if status == StatusCode::NOT_FOUND {
        "other".to_string()
    } else {
        path
    };
    mounted.stats.requests.fetch_add(1, Ordering::Relaxed);
    if status.as_u16() >= 400 {
        mounted.stats.errors.fetch_add(1, Ordering::Relaxed);
    }
    let plugin = mounted.plugin.name().to_string();
    metrics::histogram!("moonlink_receiver_request_seconds", "plugin" => plugin.clone(), "path" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("moonlink_receiver_requests_total", "plugin" => plugin, "path" => route,
        "method" => method, "status" => status.as_u16().to_string())
    .increment(1);
    response
}

async fn handle(app: &AppState, mounted: &Mounted, path: String, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if mounted.require_token {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !token_matches(presented, app.auth_token.as_deref().unwrap_or_default()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token (Authorization: Bearer <token>)",
            )
            .into_response();
        }
    }
    let mut headers = header_pairs(&parts.headers);
    // `_permit` holds the body's bytes (and its decompressed bytes) in the in-flight budget
    // until the batches are logged.
    let (body, _permit) = match read_body(app, &parts.headers, body).await {
        Ok((body, permit)) => (body, permit),
        Err(e) => return failure(mounted, headers, e).await,
    };
    let (body, _inflated) = match inflate(app, &mut headers, body.to_vec()) {
        Ok(decoded) => decoded,
        Err(e) => return failure(mounted, headers, e).await,
    };
    let request = HttpRequest {
        method: parts.method.as_str().to_string(),
        path,
        query: parts.uri.query().map(str::to_string),
        headers: headers.clone(),
        body,
    };
    let plugin = mounted.clone();
    let engine = app.engine.clone();
    let body_len = request.body.len();
    let received = tokio::task::spawn_blocking(move || receive(&plugin, &engine, &request)).await;
    let (batches, response) = match received {
        Ok(Ok(received)) => received,
        Ok(Err(e)) => return failure(mounted, headers, e).await,
        Err(e) => {
            let e = ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string());
            return failure(mounted, headers, e).await;
        }
    };
    // Backpressure before anything is written: a backlogged table refuses the whole request
    // (503 with Retry-After, which OTLP exporters retry).
    for (table, _) in &batches {
        if let Err(e) = app.engine.admit(table).await {
            return failure(mounted, headers, ApiError::from(e)).await;
        }
    }
    for (table, batch) in batches {
        let rows = batch.num_rows() as u64;
        if let Err(e) = app.engine.apply(&table, batch, Durability::Logged).await {
            return failure(mounted, headers, ApiError::from(e)).await;
        }
        crate::metrics::record_ingest(
            &table,
            super::IngestOperation::Insert,
            rows,
            body_len as u64,
        );
        mounted.stats.rows.fetch_add(rows, Ordering::Relaxed);
    }
    into_response(response)
}

type Received = (Vec<(String, moonlink_engine::ChangeBatch)>, HttpResponse);

/// The plugin's call and the check of every batch against its table (nothing written yet).
fn receive(
    mounted: &Mounted,
    engine: &moonlink_engine::Engine,
    request: &HttpRequest,
) -> Result<Received, ApiError> {
    let reception = mounted.plugin.receive(request).map_err(|e| match &e {
        moonlink_runtime::RuntimeError::ResourceExhausted { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("{e} (this body: {} bytes)", request.body.len()),
        ),
        moonlink_runtime::RuntimeError::Timeout { .. } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!("the receiver ran out of time: {e}; retry later"),
        ),
        _ => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "plugin_failed",
            e.to_string(),
        ),
    })?;
    let mut batches = Vec::with_capacity(reception.batches.len());
    for mut batch in reception.batches {
        let refused = |message: String| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "invalid_batch", message)
        };
        let Some(table) = mounted.tables.get(&batch.table) else {
            return Err(refused(format!(
                "the plugin wrote table '{}', which it did not declare in open",
                batch.table
            )));
        };
        let schema = engine.table_schema(table).map_err(ApiError::from)?;
        batch.table = table.clone();
        let batch = into_engine_batch(table, &schema, batch)
            .map_err(|e| refused(format!("a batch for table '{table}' was refused: {e}")))?;
        batches.push((table.clone(), batch));
    }
    Ok((batches, reception.response))
}

/// Undoes a `gzip` or `deflate` Content-Encoding within `--max-body-bytes` and the in-flight
/// budget, and removes the header; other codings are left for the plugin to refuse.
fn inflate(
    app: &AppState,
    headers: &mut Vec<(String, String)>,
    body: Vec<u8>,
) -> Result<(Vec<u8>, Option<BodyPermit>), ApiError> {
    let Some(at) = headers.iter().position(|(k, _)| k == "content-encoding") else {
        return Ok((body, None));
    };
    let coding = headers[at].1.trim().to_ascii_lowercase();
    let reader: Box<dyn Read> = match coding.as_str() {
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
        // RFC 9110 `deflate` is zlib; some clients send raw deflate.
        "deflate" if is_zlib(&body) => Box::new(flate2::read::ZlibDecoder::new(&body[..])),
        "deflate" => Box::new(flate2::read::DeflateDecoder::new(&body[..])),
        "identity" => {
            headers.remove(at);
            return Ok((body, None));
        }
        _ => return Ok((body, None)),
    };
    headers.remove(at);
    let mut permit = app.budget.empty();
    let mut out = Vec::new();
    let mut reader = reader.take(app.max_body_bytes as u64 + 1);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut chunk).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_body",
                format!("the body is not valid {coding}: {e}"),
            )
        })?;
        if n == 0 {
            break;
        }
        if out.len() + n > app.max_body_bytes {
            let mut e = too_large(app);
            e.message = format!("{} after {coding} decompression", e.message);
            return Err(e);
        }
        if !app.budget.grow_to(&mut permit, out.len() + n) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "request bodies in flight use the whole --max-inflight-bytes; retry later",
            ));
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok((out, Some(permit)))
}

fn is_zlib(body: &[u8]) -> bool {
    matches!(body, [cmf, flg, ..] if cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0)
}

/// Header names in lower case (as `http` keeps them), values that are not text skipped.
fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// The plugin's answer for a request the host refused (its `failure`), with `Retry-After`
/// on 429 and 503; our own error body when the plugin cannot answer.
async fn failure(mounted: &Mounted, headers: Vec<(String, String)>, error: ApiError) -> Response {
    if let Ok(mut last) = mounted.stats.last_error.lock() {
        *last = Some(format!("{}: {}", error.status.as_u16(), error.message));
    }
    let plugin = mounted.plugin.clone();
    let status = error.status.as_u16();
    let message = error.message.clone();
    let answered =
        tokio::task::spawn_blocking(move || plugin.failure(&headers, status, &message)).await;
    match answered {
        Ok(Ok(mut response)) => {
            response.status = status;
            into_response(response)
        }
        _ => error.into_response(),
    }
}

/// The plugin's response as sent: its status and headers (framing headers are the host's).
fn into_response(response: HttpResponse) -> Response {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = Response::new(Body::from(response.body));
    *out.status_mut() = status;
    let out_headers = out.headers_mut();
    for (name, value) in response.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) else {
            continue;
        };
        if matches!(
            name,
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION
        ) {
            continue;
        }
        out_headers.append(name, value);
    }
    let retry = matches!(
        status,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
    );
    if retry && !out_headers.contains_key(header::RETRY_AFTER) {
        out_headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zlib_headers_are_told_from_raw_deflate() {
        assert!(is_zlib(&[0x78, 0x9c, 1]));
        assert!(is_zlib(&[0x78, 0x01]));
        assert!(!is_zlib(&[0xcb, 0x48]));
        assert!(!is_zlib(&[]));
    }

    #[test]
    fn plugin_responses_keep_status_and_headers_but_not_framing() {
        let response = into_response(HttpResponse {
            status: 503,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("content-length".into(), "999".into()),
                ("bad header".into(), "x".into()),
            ],
            body: b"{}".to_vec(),
        });
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert!(response.headers().get(header::CONTENT_LENGTH).is_none());
        let odd = into_response(HttpResponse {
            status: 42,
            headers: vec![],
            body: vec![],
        });
        assert_eq!(odd.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
