//! `moonlink-host`: the HTTP API and CLI over the engine and the plugin runtime.

mod api;
mod budget;
mod cli_status;
mod error;
mod metrics;
mod openapi;
mod pg_wire;
mod plugin_config;
mod progress;
mod status;
mod storage_args;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use moonlink_engine::{Engine, EngineConfig, TableConfig, Warehouse};
use moonlink_runtime::{PluginRuntime, RestDecoder, RuntimeConfig};

/// jemalloc keeps freed pages for reuse a while: each request allocates and frees a few MiB
/// (body, lifted columns, WAL payload), which glibc's malloc gave back to the kernel and faulted
/// in again (measured in BENCHMARKS.md, "HTTP ingest (issue 12)"; mimalloc's defaults were
/// worse than glibc here).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Ingest inserts, updates and deletes into Apache Iceberg v3 tables.
///
/// Starts the HTTP API (`GET /health`, `POST /tables/{name}`, `POST /ingest/{name}`, ...) on
/// `--listen`, keeps tables under `--data-dir`, and decodes HTTP bodies with the
/// `rest_ingest.wasm` plugin found in `--plugin-dir`.
#[derive(Debug, Parser)]
#[command(name = "moonlink-host", version, about, long_about = None)]
struct Cli {
    /// Data directory: SQLite catalog (`catalog.db`), Iceberg warehouse (`warehouse/`) and the
    /// local cache with the write-ahead log (`cache/`). Created if missing.
    #[arg(long, env = "MOONLINK_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,

    /// Address the HTTP API listens on. Binding beyond loopback requires --auth-token.
    #[arg(long, env = "MOONLINK_LISTEN", default_value = "127.0.0.1:3030")]
    listen: SocketAddr,

    /// Directory holding the plugins (`rest_ingest.wasm`, ...). Defaults to where
    /// `cargo build --target wasm32-wasip2 --release` puts them.
    #[arg(long, env = "MOONLINK_PLUGIN_DIR", default_value_os_t = default_plugin_dir())]
    plugin_dir: PathBuf,

    /// The longest buffered rows wait for an Iceberg commit while writes keep arriving. Also
    /// committed at once: `sync` request batches, explicit commits, and a source's tables when
    /// it goes idle or finishes an initial copy.
    #[arg(long, env = "MOONLINK_COMMIT_INTERVAL_MS", default_value_t = 2000)]
    commit_interval_ms: u64,

    /// Arrow bytes a table buffers before a commit starts early. Writers are held back while
    /// a table buffers twice this (one buffer being committed, one filling).
    #[arg(long, env = "MOONLINK_MAX_BUFFER_BYTES", default_value_t = 256 * 1024 * 1024)]
    max_buffer_bytes: usize,

    /// How long an HTTP write (ingest or receiver) waits for room in a full table buffer
    /// before it is refused with 503 `backlogged` and `Retry-After`; nothing is written.
    #[arg(long, env = "MOONLINK_BACKLOG_WAIT_MS", default_value_t = 5000)]
    backlog_wait_ms: u64,

    /// Target size of Parquet data files, in bytes; small files are merged toward it.
    #[arg(long, env = "MOONLINK_TARGET_FILE_SIZE", default_value_t = 128 * 1024 * 1024)]
    target_file_size: u64,

    /// Snapshots older than this many seconds are expired (their unreferenced files deleted),
    /// except the newest --snapshot-min-keep.
    #[arg(long, env = "MOONLINK_SNAPSHOT_MAX_AGE_SECS", default_value_t = 600)]
    snapshot_max_age_secs: u64,

    /// Snapshots always kept, however old.
    #[arg(long, env = "MOONLINK_SNAPSHOT_MIN_KEEP", default_value_t = 10)]
    snapshot_min_keep: usize,

    /// Largest accepted request body, in bytes; larger requests get 413.
    #[arg(long, env = "MOONLINK_MAX_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    max_body_bytes: usize,

    /// Request body bytes all requests together may hold in memory at once; a body that would
    /// pass it is answered 503 with `Retry-After` before it is read. Default: 4 ×
    /// --max-body-bytes (256 MiB with the default body limit). Must be at least
    /// --max-body-bytes.
    #[arg(long, env = "MOONLINK_MAX_INFLIGHT_BYTES")]
    max_inflight_bytes: Option<usize>,

    /// Bearer token required on every route but /health. Required when --listen is not a
    /// loopback address.
    #[arg(long, env = "MOONLINK_AUTH_TOKEN")]
    auth_token: Option<String>,

    /// A source plugin to run (repeatable). The N-th --plugin takes its settings from the
    /// N-th --config.
    #[arg(long = "plugin", value_name = "PATH.wasm")]
    plugins: Vec<PathBuf>,

    /// A plugin config file (repeatable): settings, target tables, transform chain,
    /// capabilities. A file may describe several plugins as `[[plugins]]` entries with `path`.
    #[arg(long = "config", value_name = "FILE.toml")]
    configs: Vec<PathBuf>,

    #[command(flatten)]
    storage: storage_args::StorageArgs,

    /// Where compiled plugins are cached (verified by an HMAC under a key kept there), so a
    /// plugin is compiled once per version rather than at every start. Default: the user's
    /// cache, `$XDG_CACHE_HOME/moonlink/plugins` or `~/.cache/moonlink/plugins` (shared by
    /// every data directory), else `<data-dir>/cache/plugins`.
    #[arg(long, env = "MOONLINK_PLUGIN_CACHE_DIR")]
    plugin_cache_dir: Option<PathBuf>,

    /// Memory limit per plugin instance, in MiB.
    #[arg(long, default_value_t = 256)]
    plugin_memory_mib: u64,

    /// Time limit per plugin call, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    plugin_timeout_ms: u64,

    /// Memory one query (`POST /query`, Postgres wire) may use for sorts, joins, aggregates
    /// and its result, in bytes; a query needing more fails with a clear error.
    #[arg(long, env = "MOONLINK_QUERY_MEMORY_BYTES", default_value_t = 512 * 1024 * 1024)]
    query_memory_bytes: usize,

    /// A query running longer than this many milliseconds is cancelled.
    #[arg(long, env = "MOONLINK_QUERY_TIMEOUT_MS", default_value_t = 30_000)]
    query_timeout_ms: u64,

    /// Serve read-only SQL over the Postgres wire protocol on this address (e.g.
    /// 127.0.0.1:5433; off by default). The password is --auth-token when set (any user name);
    /// without a token only a loopback address is allowed and no password is asked.
    #[arg(long, env = "MOONLINK_PG_LISTEN")]
    pg_listen: Option<SocketAddr>,

    /// Log lines on stderr: `text`, or `json` (one object per line, for log shippers).
    #[arg(long, env = "MOONLINK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Without a subcommand: run the server.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print a running server's status (tables, sources, recent faults) from its GET /status.
    Status(cli_status::StatusArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Sets up logging on stderr. On a terminal (text logs) returns the initial-copy progress
/// bars, drawn below the log lines.
fn init_logging(format: LogFormat) -> Option<progress::Bars> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match format {
        LogFormat::Json => {
            builder.json().with_writer(std::io::stderr).init();
            None
        }
        LogFormat::Text if terminal => {
            let bars = progress::Bars::new();
            builder.with_ansi(true).with_writer(bars.clone()).init();
            Some(bars)
        }
        // Colour codes only for a terminal: log files and collectors get plain text.
        LogFormat::Text => {
            builder.with_ansi(false).with_writer(std::io::stderr).init();
            None
        }
    }
}

/// The compiled-plugin cache: `--plugin-cache-dir`, else the user's cache directory, else
/// the data directory's.
fn plugin_cache_dir(cli: &Cli) -> PathBuf {
    if let Some(dir) = &cli.plugin_cache_dir {
        return dir.clone();
    }
    let user_cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")));
    match user_cache {
        Some(dir) => dir.join("moonlink").join("plugins"),
        None => cli.data_dir.join("cache").join("plugins"),
    }
}

fn default_plugin_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("wasm32-wasip2").join("release")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if let Some(Command::Status(args)) = cli.command.take() {
        return cli_status::run(args).await;
    }
    let bars = init_logging(cli.log_format);
    // Before anything records: the engine and the pipeline record through the facade.
    metrics::install().context("installing the metrics recorder")?;

    if !cli.listen.ip().is_loopback() && cli.auth_token.is_none() {
        bail!(
            "--listen {} is reachable beyond this machine: set --auth-token (or MOONLINK_AUTH_TOKEN)",
            cli.listen
        );
    }

    if let Some(pg) = cli.pg_listen {
        if !pg.ip().is_loopback() && cli.auth_token.is_none() {
            bail!("--pg-listen {pg} is reachable beyond this machine: set --auth-token (or MOONLINK_AUTH_TOKEN)");
        }
    }

    let max_inflight_bytes = cli
        .max_inflight_bytes
        .unwrap_or_else(|| cli.max_body_bytes.saturating_mul(4));
    if max_inflight_bytes < cli.max_body_bytes {
        bail!(
            "--max-inflight-bytes {max_inflight_bytes} is below --max-body-bytes {}: a body of the largest accepted size could never be admitted",
            cli.max_body_bytes
        );
    }

    let runtime = PluginRuntime::new(RuntimeConfig {
        memory_limit_bytes: cli.plugin_memory_mib * 1024 * 1024,
        call_timeout: Duration::from_millis(cli.plugin_timeout_ms),
        cache_dir: Some(plugin_cache_dir(&cli)),
        // The rest decoder's memory limit grows with the body, up to what this one needs.
        max_body_bytes: cli.max_body_bytes as u64,
    })
    .context("starting the plugin runtime")?;
    let mut plugin_configs = plugin_config::load(&cli.plugins, &cli.configs, &cli.plugin_dir)?;
    let decoders: Vec<_> = plugin_configs
        .iter()
        .filter(|c| c.kind == plugin_config::PluginKind::RestIngest)
        .filter_map(|c| c.path.clone())
        .collect();
    if decoders.len() > 1 {
        bail!("more than one plugin has kind = \"rest-ingest\": keep one");
    }
    plugin_configs.retain(|c| c.kind == plugin_config::PluginKind::Source);
    // HTTP receivers (e.g. otel.wasm) are told apart from sources by their component's world.
    let receivers =
        api::receive::split_receivers(&runtime, &mut plugin_configs, cli.auth_token.as_deref())?;
    let decoder_path = decoders
        .into_iter()
        .next()
        .unwrap_or_else(|| cli.plugin_dir.join("rest_ingest.wasm"));
    if !decoder_path.exists() {
        bail!(
            "{} not found: build the plugins with `cargo build -p rest_ingest --target wasm32-wasip2 --release` or pass --plugin-dir",
            decoder_path.display()
        );
    }
    let decoder = RestDecoder::load(&runtime, &decoder_path)
        .with_context(|| format!("loading {}", decoder_path.display()))?;

    let engine_config = EngineConfig {
        data_dir: cli.data_dir.clone(),
        table: TableConfig {
            commit_interval: Duration::from_millis(cli.commit_interval_ms.max(10)),
            target_file_size: cli.target_file_size,
            max_buffer_bytes: cli.max_buffer_bytes.max(1),
            backlog_wait: Duration::from_millis(cli.backlog_wait_ms),
            retention: moonlink_engine::SnapshotRetention {
                max_age: Duration::from_secs(cli.snapshot_max_age_secs),
                min_keep: cli.snapshot_min_keep.max(1),
            },
            ..TableConfig::default()
        },
        catalog: cli.storage.catalog.clone(),
    };
    let engine = match cli.storage.warehouse_spec() {
        None => Engine::open(engine_config).await,
        Some(spec) => {
            let cache = (
                cli.data_dir.join("cache").join("files"),
                cli.storage.cache_bytes,
            );
            let warehouse = Warehouse::open(&spec, Some(cache)).await?;
            tracing::info!(warehouse = %warehouse.root(), "warehouse reachable");
            Engine::open_with_warehouse(engine_config, warehouse).await
        }
    }
    .with_context(|| format!("opening data directory {}", cli.data_dir.display()))?;

    let registry = moonlink_pipeline::SourceRegistry::default();
    let specs = plugin_configs.iter().map(|c| c.spec()).collect();
    let source_threads = moonlink_pipeline::start_all(&runtime, &engine, specs, &registry);

    let query = moonlink_query::QueryEngine::new(
        engine.clone(),
        moonlink_query::QueryConfig {
            memory_bytes: cli.query_memory_bytes,
            timeout: Duration::from_millis(cli.query_timeout_ms.max(1)),
            ..Default::default()
        },
    )
    .context("starting the query engine")?;
    if let Some(address) = cli.pg_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding --pg-listen {address}"))?;
        tracing::info!(listen = %address, "Postgres wire protocol ready");
        tokio::spawn(pg_wire::serve(
            listener,
            query.clone(),
            cli.auth_token.clone(),
        ));
    }
    let state = api::AppState {
        engine: engine.clone(),
        decoder,
        sources: registry.clone(),
        receivers: Default::default(),
        max_body_bytes: cli.max_body_bytes,
        budget: budget::InflightBudget::new(max_inflight_bytes),
        auth_token: cli.auth_token.clone(),
        iceberg_client_config: cli.storage.client_config(),
        query,
    };
    let receivers = api::receive::open(&state, receivers).await?;
    let app = api::router(state.clone()).merge(api::receive::main_routes(&state, &receivers));
    let (stop_receivers, receivers_stopped) = tokio::sync::watch::channel(false);
    let receiver_listeners =
        api::receive::spawn_listeners(&state, &receivers, receivers_stopped).await?;
    status::spawn_fault_watcher(engine.clone(), registry.clone());
    if let Some(bars) = &bars {
        bars.follow(registry.clone());
    }
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    tracing::info!(listen = %cli.listen, data_dir = %cli.data_dir.display(), "moonlink-host ready");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("shutting down: stopping sources, committing buffered rows");
    let _ = stop_receivers.send(true);
    for listener in receiver_listeners {
        let _ = tokio::time::timeout(Duration::from_secs(10), listener).await;
    }
    // Bounded: a plugin call ends within its time limit; a thread still running after that is
    // left behind (what it applied is committed below, the rest is replayed from its
    // acknowledged checkpoint on the next start).
    let stuck = moonlink_pipeline::stop_all(&registry, source_threads).await;
    engine.shutdown().await;
    if !stuck.is_empty() {
        tracing::warn!(threads = ?stuck, "source threads did not stop in time; exiting anyway");
        std::process::exit(0);
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
