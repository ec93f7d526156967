//! The wasmtime engine, the sandbox every plugin call runs in, and the compiled-component cache.
//!
//! Every call runs on wasmtime's async path (WASI's host calls are futures) under a deadline:
//! the epoch interrupts a plugin that computes past its time limit, and a tokio timeout ends a
//! call that is blocked in a host call (a socket that never answers, a connect that hangs).

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasData, InstancePre, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup as wasi_lookup;
use wasmtime_wasi::p2::bindings::sockets::network::{
    self as wasi_network, ErrorCode, IpAddress, Network,
};
use wasmtime_wasi::p2::{DynPollable, SocketError};
use wasmtime_wasi::sockets::WasiSocketsCtxView;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::cache::CompiledCache;
use crate::call_io::{self, LocalIo};
use crate::error::RuntimeError;

/// How often the epoch advances; per-call time limits are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Fixed memory headroom of the rest decoder on top of what the largest body needs.
const DECODER_HEADROOM_BYTES: u64 = 64 * 1024 * 1024;
/// Decoder memory per body byte: the body itself, the decoded columns and the growth slack
/// of the vectors holding them (measured: a 58 MB JSON body of short rows peaks below 4x).
const DECODER_BYTES_PER_BODY_BYTE: u64 = 5;

/// Limits applied to every plugin call.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub memory_limit_bytes: u64,
    pub call_timeout: Duration,
    /// Where compiled components are cached; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// The largest request body the host accepts. The rest decoder's memory limit grows with
    /// the body it decodes, up to `5 x max_body_bytes + 64 MiB` (never below
    /// `memory_limit_bytes`), so every accepted body can be decoded.
    pub max_body_bytes: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            memory_limit_bytes: 256 * 1024 * 1024,
            call_timeout: Duration::from_secs(5),
            cache_dir: None,
            max_body_bytes: 64 * 1024 * 1024,
        }
    }
}

impl RuntimeConfig {
    /// The memory limit of the rest-decoder instance that decodes a body of `body_len` bytes:
    /// `5 x body + 64 MiB` for bodies up to `max_body_bytes`, and never below
    /// `memory_limit_bytes`.
    pub fn decoder_memory_limit_bytes(&self, body_len: usize) -> u64 {
        (body_len as u64)
            .min(self.max_body_bytes)
            .saturating_mul(DECODER_BYTES_PER_BODY_BYTE)
            .saturating_add(DECODER_HEADROOM_BYTES)
            .max(self.memory_limit_bytes)
    }
}

/// What a plugin may touch beyond computing. Nothing unless granted.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// `host:port` pairs the plugin may connect to, checked on every connect. Naming a host
    /// also grants the lookup of that name (and only of granted names: IP literals need none).
    pub network: Vec<String>,
    /// Host directories the plugin may use, with the path it sees each at.
    pub directories: Vec<(PathBuf, String)>,
    /// Overrides the runtime's memory limit for this plugin.
    pub memory_limit_bytes: Option<u64>,
    /// Overrides the runtime's per-call time limit for this plugin.
    pub call_timeout: Option<Duration>,
    /// Environment variables the plugin sees (nothing of the host's environment otherwise).
    pub env: Vec<(String, String)>,
}

/// The state of one sandboxed instance: WASI with only the granted capabilities, its limits,
/// and its name for log lines.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: TrackedLimits,
    pub(crate) name: String,
    call_timeout: Duration,
    memory_limit_bytes: u64,
    /// Host names the plugin may look up (lowercase, no trailing dot).
    lookup_names: Arc<[String]>,
    /// The source's newest `report-lag`, taken by the next poll's result.
    pub(crate) reported_lag: Option<SourceLag>,
}

/// How far a source is behind its upstream, as the source itself measures it (`report-lag`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SourceLag {
    /// Upstream log not yet acknowledged, in bytes (Postgres: WAL end − acknowledged LSN).
    pub bytes: Option<u64>,
    /// Age of the oldest change not yet acknowledged, in seconds.
    pub seconds: Option<f64>,
}

impl crate::bindings::source::moonlink::plugin::host::Host for PluginState {
    fn log(
        &mut self,
        level: crate::bindings::source::moonlink::plugin::host::LogLevel,
        message: String,
    ) {
        use crate::bindings::source::moonlink::plugin::host::LogLevel;
        let plugin = self.name.as_str();
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn report_lag(&mut self, bytes: Option<u64>, millis: Option<u64>) {
        self.reported_lag = Some(SourceLag {
            bytes,
            seconds: millis.map(|ms| ms as f64 / 1000.0),
        });
    }
}

/// The 0.3 host interface (plugins built against 0.3.x): the same calls.
impl crate::bindings::v03::source::moonlink::plugin::host::Host for PluginState {
    fn log(
        &mut self,
        level: crate::bindings::v03::source::moonlink::plugin::host::LogLevel,
        message: String,
    ) {
        use crate::bindings::source::moonlink::plugin::host::{Host, LogLevel as N};
        use crate::bindings::v03::source::moonlink::plugin::host::LogLevel as O;
        let level = match level {
            O::Trace => N::Trace,
            O::Debug => N::Debug,
            O::Info => N::Info,
            O::Warn => N::Warn,
            O::Error => N::Error,
        };
        Host::log(self, level, message)
    }

    fn report_lag(&mut self, bytes: Option<u64>, millis: Option<u64>) {
        crate::bindings::source::moonlink::plugin::host::Host::report_lag(self, bytes, millis)
    }
}

/// The 0.2 host interface (plugins built before 0.3.0): the same calls.
impl crate::bindings::v02::source::moonlink::plugin::host::Host for PluginState {
    fn log(
        &mut self,
        level: crate::bindings::v02::source::moonlink::plugin::host::LogLevel,
        message: String,
    ) {
        use crate::bindings::source::moonlink::plugin::host::{Host, LogLevel as N};
        use crate::bindings::v02::source::moonlink::plugin::host::LogLevel as O;
        let level = match level {
            O::Trace => N::Trace,
            O::Debug => N::Debug,
            O::Info => N::Info,
            O::Warn => N::Warn,
            O::Error => N::Error,
        };
        Host::log(self, level, message)
    }

    fn report_lag(&mut self, bytes: Option<u64>, millis: Option<u64>) {
        crate::bindings::source::moonlink::plugin::host::Host::report_lag(self, bytes, millis)
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// `wasi:sockets/ip-name-lookup`, gated: a name the plugin was not granted is refused with
/// `access-denied` before any resolver sees it (a lookup is a message to whoever runs the
/// name's DNS zone, so an ungated lookup is an exfiltration channel). Granted names and IP
/// literals go to wasmtime-wasi's resolver.
struct GatedLookup;

impl HasData for GatedLookup {
    type Data<'a> = GatedLookupView<'a>;
}

struct GatedLookupView<'a> {
    plugin: &'a str,
    names: &'a [String],
    sockets: WasiSocketsCtxView<'a>,
}

impl PluginState {
    fn gated_lookup(&mut self) -> GatedLookupView<'_> {
        GatedLookupView {
            plugin: &self.name,
            names: &self.lookup_names,
            sockets: WasiSocketsCtxView {
                ctx: self.wasi.sockets(),
                table: &mut self.table,
            },
        }
    }
}

/// Whether resolving `name` is allowed given the granted host names.
pub(crate) fn lookup_allowed(name: &str, granted: &[String]) -> bool {
    if is_ip_literal(name) {
        return true;
    }
    let name = normalise_host(name);
    !name.is_empty() && granted.contains(&name)
}

fn is_ip_literal(name: &str) -> bool {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    bare.parse::<IpAddr>().is_ok()
}

fn normalise_host(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The host part of a granted `host:port` (`[v6]:port` too), if it is a name to look up.
fn granted_host_name(target: &str) -> Option<String> {
    let host = match target.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => target,
    };
    if host.is_empty() || is_ip_literal(host) {
        return None;
    }
    Some(normalise_host(host))
}

impl wasi_lookup::Host for GatedLookupView<'_> {
    fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> Result<Resource<wasi_lookup::ResolveAddressStream>, SocketError> {
        if !lookup_allowed(&name, self.names) {
            tracing::warn!(
                plugin = self.plugin,
                name = %name.escape_debug(),
                "name lookup denied: the plugin was not granted this host name \
                 ([capabilities] network = [\"host:port\"] grants its lookup)"
            );
            return Err(ErrorCode::AccessDenied.into());
        }
        wasi_lookup::Host::resolve_addresses(&mut self.sockets, network, name)
    }
}

// The lookup interface uses the network interface's error type; delegate its conversions.
impl wasi_network::Host for GatedLookupView<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        wasi_network::Host::convert_error_code(&mut self.sockets, error)
    }

    fn network_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        wasi_network::Host::network_error_code(&mut self.sockets, err)
    }
}

impl wasi_network::HostNetwork for GatedLookupView<'_> {
    fn drop(&mut self, network: Resource<Network>) -> wasmtime::Result<()> {
        wasi_network::HostNetwork::drop(&mut self.sockets, network)
    }
}

impl wasi_lookup::HostResolveAddressStream for GatedLookupView<'_> {
    fn resolve_next_address(
        &mut self,
        stream: Resource<wasi_lookup::ResolveAddressStream>,
    ) -> Result<Option<IpAddress>, SocketError> {
        wasi_lookup::HostResolveAddressStream::resolve_next_address(&mut self.sockets, stream)
    }

    fn subscribe(
        &mut self,
        stream: Resource<wasi_lookup::ResolveAddressStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        wasi_lookup::HostResolveAddressStream::subscribe(&mut self.sockets, stream)
    }

    fn drop(
        &mut self,
        stream: Resource<wasi_lookup::ResolveAddressStream>,
    ) -> wasmtime::Result<()> {
        wasi_lookup::HostResolveAddressStream::drop(&mut self.sockets, stream)
    }
}

/// A wasmtime engine configured for plugins. Cheap to clone.
#[derive(Clone)]
pub struct PluginRuntime {
    engine: Engine,
    linker: Arc<Linker<PluginState>>,
    config: RuntimeConfig,
    cache: Option<Arc<CompiledCache>>,
    /// Drives WASI's I/O (sockets, timers, lookups) for every plugin call.
    io: tokio::runtime::Handle,
}

impl PluginRuntime {
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let mut wasm_config = Config::new();
        wasm_config.epoch_interruption(true);
        // For profiling with `perf`: plugin code shows by function name (/tmp/perf-PID.map).
        if std::env::var_os("MOONLINK_WASM_PERFMAP").is_some() {
            wasm_config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&wasm_config).map_err(|e| RuntimeError::Load {
            path: PathBuf::new(),
            message: format!("cannot configure wasmtime: {e:#}"),
        })?;
        let link_error = |what: &str, e: wasmtime::Error| RuntimeError::Load {
            path: PathBuf::new(),
            message: format!("cannot link {what}: {e:#}"),
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| link_error("WASI", e))?;
        // Replace the name lookup with the gated one (same interface, same resource type).
        linker.allow_shadowing(true);
        wasi_lookup::add_to_linker::<PluginState, GatedLookup>(
            &mut linker,
            PluginState::gated_lookup,
        )
        .map_err(|e| link_error("the gated name lookup", e))?;
        linker.allow_shadowing(false);
        crate::bindings::source::moonlink::plugin::host::add_to_linker::<
            PluginState,
            wasmtime::component::HasSelf<PluginState>,
        >(&mut linker, |state| state)
        .map_err(|e| link_error("the host interface", e))?;
        crate::bindings::v03::source::moonlink::plugin::host::add_to_linker::<
            PluginState,
            wasmtime::component::HasSelf<PluginState>,
        >(&mut linker, |state| state)
        .map_err(|e| link_error("the 0.3 host interface", e))?;
        crate::bindings::v02::source::moonlink::plugin::host::add_to_linker::<
            PluginState,
            wasmtime::component::HasSelf<PluginState>,
        >(&mut linker, |state| state)
        .map_err(|e| link_error("the 0.2 host interface", e))?;
        // The ticker only holds a weak reference, so it ends with the last engine clone.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("moonlink-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            })
            .map_err(|e| RuntimeError::Load {
                path: PathBuf::new(),
                message: format!("cannot start the epoch ticker: {e}"),
            })?;
        let cache = config.cache_dir.as_ref().and_then(|dir| {
            CompiledCache::open(dir, &engine)
                .map(Arc::new)
                .map_err(|e| {
                    tracing::warn!(dir = %dir.display(), error = %e,
                        "compiled-plugin cache disabled: plugins are compiled on every start");
                })
                .ok()
        });
        Ok(PluginRuntime {
            engine,
            linker: Arc::new(linker),
            config,
            cache,
            io: call_io::shared_io()?,
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Compiles a component, or loads its compiled form from the (verified) cache.
    pub(crate) fn load_component(&self, path: &Path) -> Result<Component, RuntimeError> {
        let load_error = |message: String| RuntimeError::Load {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| load_error(e.to_string()))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("plugin");
        let entry = self.cache.as_ref().map(|cache| cache.entry(stem, &bytes));
        if let (Some(cache), Some(entry)) = (&self.cache, &entry) {
            if let Some(component) = cache.load(entry) {
                return Ok(component);
            }
        }
        let component = Component::from_binary(&self.engine, &bytes)
            .map_err(|e| load_error(format!("not a valid WebAssembly component: {e:#}")))?;
        if let (Some(cache), Some(entry)) = (&self.cache, &entry) {
            cache.store(entry, &component);
        }
        Ok(component)
    }

    pub(crate) fn instantiate_pre(
        &self,
        component: &Component,
        path: &Path,
    ) -> Result<InstancePre<PluginState>, RuntimeError> {
        self.linker
            .instantiate_pre(component)
            .map_err(|e| RuntimeError::Load {
                path: path.to_path_buf(),
                message: format!("imports cannot be satisfied: {e:#}"),
            })
    }

    /// A store for one plugin instance: only `capabilities`, bounded memory, a deadline for
    /// the next call (reset with [`PluginRuntime::arm_deadline`] before each later call).
    pub(crate) fn new_store(
        &self,
        name: &str,
        capabilities: &Capabilities,
    ) -> Result<Store<PluginState>, RuntimeError> {
        let memory_limit_bytes = capabilities
            .memory_limit_bytes
            .unwrap_or(self.config.memory_limit_bytes);
        let limits = TrackedLimits {
            inner: StoreLimitsBuilder::new()
                .memory_size(usize::try_from(memory_limit_bytes).unwrap_or(usize::MAX))
                .trap_on_grow_failure(true)
                .build(),
            memory_bytes: 0,
        };
        let mut wasi = WasiCtx::builder();
        let mut lookup_names = Vec::new();
        if !capabilities.network.is_empty() {
            let mut allowed = Vec::new();
            for target in &capabilities.network {
                let resolved =
                    std::net::ToSocketAddrs::to_socket_addrs(target.as_str()).map_err(|e| {
                        RuntimeError::Capability(format!("network address '{target}': {e}"))
                    })?;
                allowed.extend(resolved);
                lookup_names.extend(granted_host_name(target));
            }
            let allowed = std::sync::Arc::new(allowed);
            // Lookups are gated by name (see `GatedLookup`); connects are checked against
            // the addresses the granted names had when the instance started.
            wasi.allow_tcp(true)
                .allow_udp(false)
                .allow_ip_name_lookup(true)
                .socket_addr_check(move |addr, usage| {
                    use wasmtime_wasi::sockets::SocketAddrUse;
                    let ok = match usage {
                        // A connect first binds implicitly to an ephemeral local port; allow
                        // that, but never a listening socket on a chosen address.
                        SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                        SocketAddrUse::TcpConnect => allowed.contains(&addr),
                        _ => false,
                    };
                    Box::pin(async move { ok })
                });
        }
        for (key, value) in &capabilities.env {
            wasi.env(key, value);
        }
        for (host_dir, guest_dir) in &capabilities.directories {
            if let Some(cache) = &self.cache {
                if cache.is_inside(host_dir) {
                    return Err(RuntimeError::Capability(format!(
                        "directory '{}' contains the compiled-plugin cache ({}): grant a directory outside the data directory",
                        host_dir.display(),
                        cache.dir().display()
                    )));
                }
            }
            wasi.preopened_dir(host_dir, guest_dir, wasmtime_wasi::FsPerms::ReadWrite)
                .map_err(|e| {
                    RuntimeError::Capability(format!("directory '{}': {e:#}", host_dir.display()))
                })?;
        }
        let mut store = Store::new(
            &self.engine,
            PluginState {
                wasi: wasi.build(),
                table: ResourceTable::new(),
                limits,
                name: name.to_string(),
                call_timeout: capabilities
                    .call_timeout
                    .unwrap_or(self.config.call_timeout),
                memory_limit_bytes,
                lookup_names: lookup_names.into(),
                reported_lag: None,
            },
        );
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_trap();
        self.arm_deadline(&mut store);
        Ok(store)
    }

    /// Gives the next call on `store` the configured time limit, and returns it.
    pub(crate) fn arm_deadline(&self, store: &mut Store<PluginState>) -> Duration {
        let timeout = store.data().call_timeout;
        let ticks = (timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        timeout
    }

    /// Runs one plugin call to completion on this thread, within `limit`: the epoch stops a
    /// plugin computing past it, and the timeout stops one blocked in a host call (the call's
    /// future is dropped, which unwinds the instance: its store must not be used again).
    ///
    /// Blocks the calling thread (any thread: the call's I/O is driven by the runtime's own
    /// tokio runtime, not the caller's). From an async task, prefer `spawn_blocking`: the
    /// worker it blocks cannot run other tasks meanwhile.
    pub(crate) fn block_on_call<R>(
        &self,
        limit: Duration,
        memory_limit_bytes: u64,
        call: impl Future<Output = wasmtime::Result<R>>,
    ) -> Result<R, RuntimeError> {
        let _io = self.io.enter();
        let outcome = call_io::block_on(async move { tokio::time::timeout(limit, call).await });
        self.outcome(outcome, limit, memory_limit_bytes)
    }

    /// [`PluginRuntime::block_on_call`] with the call's I/O driven by `io` on this thread
    /// (see [`LocalIo`]): for an instance that waits on sockets call after call (a source).
    /// Every call of the instance must use the same `io`.
    pub(crate) fn block_on_local_call<R>(
        &self,
        io: &LocalIo,
        limit: Duration,
        memory_limit_bytes: u64,
        call: impl Future<Output = wasmtime::Result<R>> + Send,
    ) -> Result<R, RuntimeError>
    where
        R: Send,
    {
        let outcome = io.block_on(async move { tokio::time::timeout(limit, call).await })?;
        self.outcome(outcome, limit, memory_limit_bytes)
    }

    fn outcome<R>(
        &self,
        outcome: Result<wasmtime::Result<R>, tokio::time::error::Elapsed>,
        limit: Duration,
        memory_limit_bytes: u64,
    ) -> Result<R, RuntimeError> {
        match outcome {
            Ok(result) => result.map_err(|e| self.classify(e, limit, memory_limit_bytes)),
            Err(_elapsed) => Err(RuntimeError::Timeout {
                ms: limit.as_millis() as u64,
            }),
        }
    }

    /// Turns a wasmtime error from a call into the error the host reports.
    pub(crate) fn classify(
        &self,
        error: wasmtime::Error,
        limit: Duration,
        memory_limit_bytes: u64,
    ) -> RuntimeError {
        if let Some(trap) = error.downcast_ref::<Trap>() {
            if *trap == Trap::Interrupt {
                return RuntimeError::Timeout {
                    ms: limit.as_millis() as u64,
                };
            }
        }
        let text = format!("{error:#}");
        if text.contains("growing memory") || text.contains("memory limit") {
            return RuntimeError::MemoryLimit {
                limit_bytes: memory_limit_bytes,
            };
        }
        RuntimeError::Trap(text)
    }
}

/// The limits a store's calls run under.
/// Bytes of linear memory the store's instances have grown to (all memories together).
pub(crate) fn memory_bytes(store: &Store<PluginState>) -> usize {
    store.data().limits.memory_bytes
}

/// The store's limits, counting the memory granted (a reused instance keeps its memory: the
/// decoder pool drops instances that grew too large).
struct TrackedLimits {
    inner: StoreLimits,
    memory_bytes: usize,
}

impl wasmtime::ResourceLimiter for TrackedLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let granted = self.inner.memory_growing(current, desired, maximum)?;
        if granted {
            self.memory_bytes = self
                .memory_bytes
                .saturating_add(desired.saturating_sub(current));
        }
        Ok(granted)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

pub(crate) fn store_limits(store: &Store<PluginState>) -> (Duration, u64) {
    let state = store.data();
    (state.call_timeout, state.memory_limit_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_granted_names_and_ip_literals_may_be_looked_up() {
        let granted: Vec<String> = [
            "db.internal:5432",
            "[::1]:5432",
            "127.0.0.1:1",
            "LocalHost.:80",
        ]
        .iter()
        .filter_map(|t| granted_host_name(t))
        .collect();
        assert_eq!(granted, vec!["db.internal", "localhost"]);
        assert!(lookup_allowed("db.internal", &granted));
        assert!(lookup_allowed("DB.Internal.", &granted));
        assert!(lookup_allowed("localhost", &granted));
        assert!(lookup_allowed("10.1.2.3", &granted));
        assert!(lookup_allowed("::1", &granted));
        assert!(lookup_allowed("[fe80::1]", &granted));
        assert!(!lookup_allowed("secret-abc123.exfil.example.com", &granted));
        assert!(!lookup_allowed("db.internal.exfil.example.com", &granted));
        assert!(!lookup_allowed("internal", &granted));
        assert!(!lookup_allowed("", &granted));
        assert!(
            !lookup_allowed("127.1", &granted),
            "not a literal std accepts"
        );
        assert!(!lookup_allowed("anything", &[]));
    }

    #[test]
    fn decoder_memory_grows_with_the_body() {
        let mib = 1024 * 1024;
        let config = RuntimeConfig {
            max_body_bytes: 64 * mib,
            ..RuntimeConfig::default()
        };
        let limit = |len: u64| config.decoder_memory_limit_bytes(len as usize);
        assert_eq!(limit(58 * mib), (5 * 58 + 64) * mib);
        assert_eq!(limit(64 * mib), (5 * 64 + 64) * mib);
        assert_eq!(
            limit(640 * mib),
            (5 * 64 + 64) * mib,
            "capped by the largest body"
        );
        assert_eq!(
            limit(1024),
            config.memory_limit_bytes,
            "never below the plugin limit"
        );
    }
}
