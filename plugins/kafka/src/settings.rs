//! The plugin's settings (`[settings]` of its config file).

use std::collections::BTreeMap;
use std::time::Duration;

use moonlink_sdk::{Config, Field};
use serde_json::Value as Json;

use crate::error::{KafkaError, Result};
use crate::types::parse_type;

/// How record values become rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per record value.
    Json,
    /// Key, value, headers and position as they are.
    Raw,
}

/// What an undecodable record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// The source stops with the record's position and the reason.
    Refuse,
    /// The record goes to `<table>_rejected` with its bytes and the reason.
    DeadLetter,
}

/// A table's columns: declared, or inferred from the records.
#[derive(Debug, Clone)]
pub enum SchemaSetting {
    /// Declared in the settings.
    Declared(Vec<Field>),
    /// `schema = "infer"`.
    Infer,
}

/// One topic and the table it lands in.
#[derive(Debug, Clone)]
pub struct TopicSetting {
    /// The topic.
    pub topic: String,
    /// The table (`namespace.name`), by the source's name for it.
    pub table: String,
}

/// Every setting, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `host:port` of brokers to ask for metadata.
    pub bootstrap: Vec<String>,
    /// The topics read, in a stable order.
    pub topics: Vec<TopicSetting>,
    /// How values are decoded.
    pub format: Format,
    /// Columns per table (json format); the same for every table unless `schemas` names it.
    pub schemas: BTreeMap<String, SchemaSetting>,
    /// Key columns (empty: append-only).
    pub primary_key: Vec<String>,
    /// Start at the earliest offset (else the latest) for a partition with no checkpoint.
    pub start_earliest: bool,
    /// Records per poll at most.
    pub max_poll_records: usize,
    /// Bytes per Fetch response at most.
    pub fetch_max_bytes: usize,
    /// Bytes per partition per Fetch at most.
    pub partition_max_bytes: usize,
    /// What an undecodable record does.
    pub on_error: OnError,
    /// Longest wait for a connection or an answer.
    pub request_timeout: Duration,
    /// How often metadata is read again (new partitions, moved leaders).
    pub metadata_refresh: Duration,
}

fn bad(message: impl Into<String>) -> KafkaError {
    KafkaError::Config(message.into())
}

/// A table name for a topic: dots and other characters a table name cannot hold become `_`.
fn table_for_topic(namespace: &str, topic: &str) -> String {
    let name: String = topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{namespace}.{name}")
}

fn parse_columns(key: &str, value: &Json) -> Result<SchemaSetting> {
    if value.as_str() == Some("infer") {
        return Ok(SchemaSetting::Infer);
    }
    let items = value.as_array().ok_or_else(|| {
        bad(format!(
            "setting `{key}`: expected \"infer\" or a list of columns \
             ({{name = \"id\", data_type = \"int64\", nullable = false}}), got {value}"
        ))
    })?;
    let mut fields = Vec::new();
    for item in items {
        let name = item.get("name").and_then(Json::as_str);
        let data_type = item.get("data_type").and_then(Json::as_str);
        let (Some(name), Some(data_type)) = (name, data_type) else {
            return Err(bad(format!(
                "setting `{key}`: every column needs `name` and `data_type`, got {item}"
            )));
        };
        let nullable = item.get("nullable").and_then(Json::as_bool).unwrap_or(true);
        let data_type = parse_type(data_type).map_err(|e| bad(format!("setting `{key}`: {e}")))?;
        fields.push(Field {
            nullable,
            ..Field::nullable(name, data_type)
        });
    }
    if fields.is_empty() {
        return Err(bad(format!("setting `{key}`: no columns")));
    }
    Ok(SchemaSetting::Declared(fields))
}

impl Settings {
    /// Reads and checks the settings.
    pub fn parse(config: &Config) -> Result<Settings> {
        let bootstrap: Vec<String> = config
            .str_list("bootstrap_servers")?
            .iter()
            .flat_map(|s| s.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if bootstrap.is_empty() {
            return Err(bad(
                "setting `bootstrap_servers` is required (a list of \"host:port\")",
            ));
        }
        for b in &bootstrap {
            if b.rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(bad(format!(
                    "setting `bootstrap_servers`: '{b}' is not host:port"
                )));
            }
        }
        let namespace = config.opt_str("namespace")?.unwrap_or("kafka").to_string();
        if namespace.is_empty() || namespace.contains('.') {
            return Err(bad("setting `namespace`: one non-empty name without dots"));
        }
        let mut topics = Vec::new();
        for topic in config.str_list("topics")? {
            let table = table_for_topic(&namespace, &topic);
            topics.push(TopicSetting { topic, table });
        }
        if let Some(map) = config.raw("tables") {
            let map = map.as_object().ok_or_else(|| {
                bad("setting `tables`: expected a table of topic = \"namespace.table\"")
            })?;
            for (topic, table) in map {
                let table = table.as_str().ok_or_else(|| {
                    bad(format!("setting `tables.{topic}`: expected a table name"))
                })?;
                let table = if table.contains('.') {
                    table.to_string()
                } else {
                    format!("{namespace}.{table}")
                };
                topics.retain(|t: &TopicSetting| &t.topic != topic);
                topics.push(TopicSetting {
                    topic: topic.clone(),
                    table,
                });
            }
        }
        if topics.is_empty() {
            return Err(bad(
                "no topics: set `topics = [\"orders\", ...]` or a `[settings.tables]` map of topic = table",
            ));
        }
        topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        let format = match config.opt_str("format")?.unwrap_or("json") {
            "json" => Format::Json,
            "raw" => Format::Raw,
            other => {
                return Err(bad(format!(
                    "setting `format`: expected \"json\" or \"raw\", got \"{other}\""
                )))
            }
        };
        let primary_key = config.str_list("primary_key")?;
        match config.opt_str("key")? {
            None => {}
            Some("none") if primary_key.is_empty() => {}
            Some("none") => {
                return Err(bad(
                    "`key = \"none\"` and `primary_key` contradict each other",
                ))
            }
            Some(other) => {
                return Err(bad(format!(
                "setting `key`: expected \"none\" (or set `primary_key = [...]`), got \"{other}\""
            )))
            }
        }
        if format == Format::Raw && !primary_key.is_empty() {
            return Err(bad(
                "format = \"raw\" lands every record as it is (append-only): drop `primary_key`",
            ));
        }
        let mut schemas = BTreeMap::new();
        if format == Format::Json {
            let default = config
                .raw("schema")
                .map(|v| parse_columns("schema", v))
                .transpose()?;
            let per_table = match config.raw("schemas") {
                None => serde_json::Map::new(),
                Some(Json::Object(m)) => m.clone(),
                Some(other) => {
                    return Err(bad(format!(
                        "setting `schemas`: expected a table of topic = columns, got {other}"
                    )))
                }
            };
            for t in &topics {
                let schema = match per_table.get(&t.topic) {
                    Some(v) => parse_columns(&format!("schemas.{}", t.topic), v)?,
                    None => default.clone().ok_or_else(|| {
                        bad(format!(
                            "format = \"json\" needs the columns of topic '{}': set `schema = \
                             [{{name = \"id\", data_type = \"int64\"}}, ...]` or `schema = \"infer\"`",
                            t.topic
                        ))
                    })?,
                };
                if let SchemaSetting::Declared(fields) = &schema {
                    for k in &primary_key {
                        if !fields.iter().any(|f| &f.name == k) {
                            return Err(bad(format!(
                                "primary_key column '{k}' is not a column of topic '{}'",
                                t.topic
                            )));
                        }
                    }
                }
                schemas.insert(t.table.clone(), schema);
            }
        }
        let start_earliest = match config.opt_str("start")?.unwrap_or("earliest") {
            "earliest" => true,
            "latest" => false,
            other => {
                return Err(bad(format!(
                    "setting `start`: expected \"earliest\" or \"latest\", got \"{other}\""
                )))
            }
        };
        let on_error = match config.opt_str("on_error")?.unwrap_or("refuse") {
            "refuse" => OnError::Refuse,
            "dead_letter" => OnError::DeadLetter,
            other => {
                return Err(bad(format!(
                    "setting `on_error`: expected \"refuse\" or \"dead_letter\", got \"{other}\""
                )))
            }
        };
        let positive = |key: &str, default: u64| -> Result<u64> {
            match config.opt_u64(key)? {
                Some(0) => Err(bad(format!("setting `{key}` must be positive"))),
                Some(n) => Ok(n),
                None => Ok(default),
            }
        };
        let fetch_max_bytes = positive("fetch_max_bytes", 32 * 1024 * 1024)?.min(1 << 30) as usize;
        Ok(Settings {
            bootstrap,
            topics,
            format,
            schemas,
            primary_key,
            start_earliest,
            max_poll_records: positive("max_poll_records", 50_000)? as usize,
            fetch_max_bytes,
            partition_max_bytes: positive("max_partition_fetch_bytes", 4 * 1024 * 1024)?
                .min(fetch_max_bytes as u64) as usize,
            on_error,
            request_timeout: Duration::from_millis(positive("request_timeout_ms", 3000)?),
            metadata_refresh: Duration::from_millis(positive("metadata_refresh_ms", 5000)?),
        })
    }

    /// The table a topic lands in.
    pub fn table_of(&self, topic: &str) -> Option<&str> {
        self.topics
            .iter()
            .find(|t| t.topic == topic)
            .map(|t| t.table.as_str())
    }
}
