//! Plugin configuration files (`--config FILE.toml`).
//!
//! One file describes one plugin at its top level, or several as `[[plugins]]` entries:
//!
//! ```toml
//! name = "datagen"                 # defaults to the wasm file's stem
//! path = "datagen.wasm"            # relative to the config file, then to --plugin-dir;
//!                                  # optional when the file follows a --plugin PATH flag
//! [settings]                       # handed to the plugin's `open`, as a JSON object
//! table = "demo.events"
//! rows = 100000
//! [tables]                         # optional: the plugin's table name -> the host's
//! "demo.events" = "demo.events"
//! [[transforms]]                   # the chain every batch goes through, in order
//! path = "filter.wasm"
//! settings = { column = "kind", op = "eq", value = "purchase" }
//! [capabilities]                   # nothing is granted unless listed
//! network = ["127.0.0.1:5432"]
//! directories = [{ host = "/var/spool/in", guest = "/in" }]
//! memory_mib = 128                 # limits; default to --plugin-memory-mib / -timeout-ms
//! timeout_ms = 2000
//! [poll]
//! max_rows = 10000
//! timeout_ms = 500
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use moonlink_pipeline::{PollLimits, SourceSpec, TransformSpec};
use moonlink_runtime::Capabilities;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    pub path: PathBuf,
    pub name: Option<String>,
    #[serde(default)]
    pub settings: toml::Table,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryGrant {
    pub host: PathBuf,
    pub guest: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilityConfig {
    #[serde(default)]
    pub network: Vec<String>,
    #[serde(default)]
    pub directories: Vec<DirectoryGrant>,
    /// Memory limit for this plugin, in MiB (default: --plugin-memory-mib).
    pub memory_mib: Option<u64>,
    /// Time limit per call for this plugin, in milliseconds (default: --plugin-timeout-ms).
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    #[serde(default = "default_max_rows")]
    pub max_rows: u32,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            max_rows: default_max_rows(),
            timeout_ms: default_timeout_ms(),
        }
    }
}

fn default_max_rows() -> u32 {
    10_000
}

fn default_timeout_ms() -> u32 {
    500
}

/// One plugin, resolved: a source (the default), or the HTTP body decoder when
/// `kind = "rest-ingest"` (which replaces `--plugin-dir/rest_ingest.wasm`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    #[serde(default)]
    pub kind: PluginKind,
    pub name: Option<String>,
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub settings: toml::Table,
    #[serde(default)]
    pub tables: BTreeMap<String, String>,
    #[serde(default)]
    pub transforms: Vec<TransformConfig>,
    #[serde(default)]
    pub capabilities: CapabilityConfig,
    #[serde(default)]
    pub poll: PollConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    #[default]
    Source,
    RestIngest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MultiConfig {
    plugins: Vec<SourceConfig>,
}

impl SourceConfig {
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.path
                .as_ref()
                .and_then(|p| p.file_stem())
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "source".into())
        })
    }

    /// The settings as the JSON object plugins receive.
    pub fn settings_json(settings: &toml::Table) -> String {
        serde_json::to_string(settings).unwrap_or_else(|_| "{}".into())
    }

    /// Addresses the plugin may connect to: `[capabilities] network`, plus the server its
    /// own settings name (`host` and `port`), so a connector reaches exactly what it is
    /// configured for and nothing else.
    pub fn granted_network(&self) -> Vec<String> {
        let mut network = self.capabilities.network.clone();
        let port = self.settings.get("port").and_then(|p| p.as_integer());
        if let (Some(host), Some(port)) = (self.settings.get("host").and_then(|h| h.as_str()), port)
        {
            let target = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            if !network.contains(&target) {
                network.push(target);
            }
        }
        // Kafka-style settings: every `host:port` in `bootstrap_servers` (a cluster's other
        // brokers, learned from metadata, need a grant of their own in [capabilities] network
        // or their own entry in `bootstrap_servers`).
        let servers = match self.settings.get("bootstrap_servers") {
            Some(toml::Value::String(s)) => s.split(',').map(str::trim).map(String::from).collect(),
            Some(toml::Value::Array(items)) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        for target in servers {
            if !target.is_empty() && !network.contains(&target) {
                network.push(target);
            }
        }
        network
    }

    /// Environment variables passed into the plugin: each named by a setting ending in
    /// `_env` (e.g. `password_env = "PGPASSWORD"`), so secrets stay out of config files.
    pub fn granted_env(&self) -> Vec<(String, String)> {
        self.settings
            .iter()
            .filter(|(key, _)| key.ends_with("_env"))
            .filter_map(|(_, value)| value.as_str())
            .filter_map(|var| std::env::var(var).ok().map(|v| (var.to_string(), v)))
            .collect()
    }

    /// What the source driver needs of this plugin: names resolved, settings as JSON,
    /// capabilities granted.
    pub fn spec(&self) -> SourceSpec {
        SourceSpec {
            name: self.name(),
            path: self.path.clone().unwrap_or_default(),
            settings_json: Self::settings_json(&self.settings),
            tables: self.tables.clone(),
            transforms: self
                .transforms
                .iter()
                .map(|t| TransformSpec {
                    name: t.name.clone().unwrap_or_else(|| {
                        t.path
                            .file_stem()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    }),
                    path: t.path.clone(),
                    settings_json: Self::settings_json(&t.settings),
                })
                .collect(),
            capabilities: Capabilities {
                network: self.granted_network(),
                env: self.granted_env(),
                directories: self
                    .capabilities
                    .directories
                    .iter()
                    .map(|d| (d.host.clone(), d.guest.clone()))
                    .collect(),
                memory_limit_bytes: self.capabilities.memory_mib.map(|m| m * 1024 * 1024),
                call_timeout: self.capabilities.timeout_ms.map(Duration::from_millis),
            },
            poll: PollLimits {
                max_rows: self.poll.max_rows,
                timeout_ms: self.poll.timeout_ms,
            },
        }
    }
}

/// Finds a plugin file: as given if absolute or present relative to the config's directory,
/// else in the plugin directory.
fn resolve(path: &Path, config_dir: Option<&Path>, plugin_dir: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    if let Some(dir) = config_dir {
        let candidate = dir.join(path);
        if candidate.exists() {
            return candidate;
        }
    }
    if path.exists() {
        return path.to_path_buf();
    }
    plugin_dir.join(path)
}

/// Pairs `--plugin` flags with `--config` files (in order) and expands multi-plugin files.
pub fn load(
    plugins: &[PathBuf],
    configs: &[PathBuf],
    plugin_dir: &Path,
) -> anyhow::Result<Vec<SourceConfig>> {
    let mut sources = Vec::new();
    for (index, config_path) in configs.iter().enumerate() {
        let text = std::fs::read_to_string(config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let config_dir = config_path.parent();
        let mut entries: Vec<SourceConfig> = if text.contains("[[plugins]]") {
            toml::from_str::<MultiConfig>(&text)
                .with_context(|| format!("parsing {}", config_path.display()))?
                .plugins
        } else {
            vec![toml::from_str(&text)
                .with_context(|| format!("parsing {}", config_path.display()))?]
        };
        if let Some(flag) = plugins.get(index) {
            if entries.len() != 1 {
                bail!(
                    "{} describes {} plugins but follows --plugin {}: give it alone",
                    config_path.display(),
                    entries.len(),
                    flag.display()
                );
            }
            entries[0].path = Some(flag.clone());
        }
        for entry in &mut entries {
            let Some(path) = entry.path.clone() else {
                bail!(
                    "{}: a plugin needs `path` (or a --plugin flag before --config)",
                    config_path.display()
                );
            };
            entry.path = Some(resolve(&path, config_dir, plugin_dir));
            for t in &mut entry.transforms {
                t.path = resolve(&t.path, config_dir, plugin_dir);
            }
        }
        sources.extend(entries);
    }
    for flag in plugins.iter().skip(configs.len()) {
        sources.push(SourceConfig {
            kind: PluginKind::Source,
            name: None,
            path: Some(resolve(flag, None, plugin_dir)),
            settings: toml::Table::new(),
            tables: BTreeMap::new(),
            transforms: Vec::new(),
            capabilities: CapabilityConfig::default(),
            poll: PollConfig::default(),
        });
    }
    let mut names = std::collections::HashSet::new();
    for s in &sources {
        if !names.insert(s.name()) {
            bail!("two plugins are named '{}': give one a `name`", s.name());
        }
    }
    Ok(sources)
}
