//! The wasmtime engine, the sandbox every plugin call runs in, and the compiled-component cache.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::error::RuntimeError;

/// How often the epoch advances; per-call time limits are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits applied to every plugin call.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub memory_limit_bytes: u64,
    pub call_timeout: Duration,
    /// Where compiled components are cached; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            memory_limit_bytes: 256 * 1024 * 1024,
            call_timeout: Duration::from_secs(5),
            cache_dir: None,
        }
    }
}

/// What a plugin may touch beyond computing. Nothing unless granted.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// `host:port` pairs the plugin may connect to, checked on every connect.
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
    limits: StoreLimits,
    pub(crate) name: String,
    call_timeout: Duration,
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
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A wasmtime engine configured for plugins. Cheap to clone.
#[derive(Clone)]
pub struct PluginRuntime {
    engine: Engine,
    linker: Arc<Linker<PluginState>>,
    config: RuntimeConfig,
}

impl PluginRuntime {
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let mut wasm_config = Config::new();
        wasm_config.epoch_interruption(true);
        let engine = Engine::new(&wasm_config).map_err(|e| RuntimeError::Load {
            path: PathBuf::new(),
            message: format!("cannot configure wasmtime: {e:#}"),
        })?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| RuntimeError::Load {
            path: PathBuf::new(),
            message: format!("cannot link WASI: {e:#}"),
        })?;
        crate::bindings::source::moonlink::plugin::host::add_to_linker::<
            PluginState,
            wasmtime::component::HasSelf<PluginState>,
        >(&mut linker, |state| state)
        .map_err(|e| RuntimeError::Load {
            path: PathBuf::new(),
            message: format!("cannot link the host interface: {e:#}"),
        })?;
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
        Ok(PluginRuntime {
            engine,
            linker: Arc::new(linker),
            config,
        })
    }

    /// Compiles a component, or loads its compiled form from the cache.
    pub(crate) fn load_component(&self, path: &Path) -> Result<Component, RuntimeError> {
        let load_error = |message: String| RuntimeError::Load {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| load_error(e.to_string()))?;
        let cached = self.config.cache_dir.as_ref().map(|dir| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut hasher);
            self.engine
                .precompile_compatibility_hash()
                .hash(&mut hasher);
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("plugin");
            dir.join(format!("{stem}-{:016x}.cwasm", hasher.finish()))
        });
        if let Some(cached) = cached.as_ref().filter(|p| p.exists()) {
            // SAFETY: the cache directory holds only artifacts this runtime serialized itself,
            // keyed by the component bytes and the engine's compatibility hash.
            if let Ok(component) = unsafe { Component::deserialize_file(&self.engine, cached) } {
                return Ok(component);
            }
        }
        let component = Component::from_binary(&self.engine, &bytes)
            .map_err(|e| load_error(format!("not a valid WebAssembly component: {e:#}")))?;
        if let Some(cached) = cached {
            if let Err(e) = write_cache(&cached, &component) {
                tracing::warn!(path = %cached.display(), error = %e, "cannot cache compiled plugin");
            }
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
        let limits = StoreLimitsBuilder::new()
            .memory_size(
                capabilities
                    .memory_limit_bytes
                    .unwrap_or(self.config.memory_limit_bytes) as usize,
            )
            .trap_on_grow_failure(true)
            .build();
        let mut wasi = WasiCtx::builder();
        if !capabilities.network.is_empty() {
            let mut allowed = Vec::new();
            for target in &capabilities.network {
                let resolved =
                    std::net::ToSocketAddrs::to_socket_addrs(target.as_str()).map_err(|e| {
                        RuntimeError::Capability(format!("network address '{target}': {e}"))
                    })?;
                allowed.extend(resolved);
            }
            let allowed = std::sync::Arc::new(allowed);
            // Name lookups are allowed so `localhost` resolves; connects are still checked.
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
            },
        );
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_trap();
        self.arm_deadline(&mut store);
        Ok(store)
    }

    /// Gives the next call on `store` the configured time limit.
    pub(crate) fn arm_deadline(&self, store: &mut Store<PluginState>) {
        let timeout = store.data().call_timeout;
        let ticks = (timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
    }

    /// Turns a wasmtime error from a call into the error the host reports.
    pub(crate) fn classify(&self, error: wasmtime::Error) -> RuntimeError {
        if let Some(trap) = error.downcast_ref::<Trap>() {
            if *trap == Trap::Interrupt {
                return RuntimeError::Timeout;
            }
        }
        let text = format!("{error:#}");
        if text.contains("growing memory") || text.contains("memory limit") {
            return RuntimeError::MemoryLimit;
        }
        RuntimeError::Trap(text)
    }
}

fn write_cache(path: &Path, component: &Component) -> Result<(), String> {
    let bytes = component.serialize().map_err(|e| format!("{e:#}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    // Write-then-rename: a crash never leaves a half-written artifact under the final name.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}
