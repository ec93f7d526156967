//! Typed access to a plugin's settings (the `[settings]` table of its config file, handed to
//! the plugin as a JSON object), with errors that name the setting and say what was expected.

use serde_json::{Map, Value};

/// A settings error, ready to return from `open` or `configure`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<ConfigError> for String {
    fn from(e: ConfigError) -> String {
        e.0
    }
}

/// A plugin's settings.
#[derive(Debug, Clone, Default)]
pub struct Config {
    values: Map<String, Value>,
}

impl Config {
    /// Parses the JSON object the host passes.
    pub fn parse(json: &str) -> Result<Config, ConfigError> {
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(values)) => Ok(Config { values }),
            Ok(other) => Err(ConfigError(format!(
                "settings must be a table, got {other}"
            ))),
            Err(e) => Err(ConfigError(format!("settings are not valid JSON: {e}"))),
        }
    }

    /// Settings from `key = value` pairs (for native tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Config {
        Config {
            values: pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    /// The JSON value of `key` (`None` when absent or null).
    pub fn raw(&self, key: &str) -> Option<&Value> {
        self.values.get(key).filter(|v| !v.is_null())
    }

    fn wrong(key: &str, expected: &str, got: &Value) -> ConfigError {
        ConfigError(format!("setting `{key}`: expected {expected}, got {got}"))
    }

    fn missing(key: &str, expected: &str) -> ConfigError {
        ConfigError(format!("setting `{key}` is required ({expected})"))
    }

    /// An optional string setting.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(Self::wrong(key, "a string", other)),
        }
    }

    /// A required string setting.
    pub fn str(&self, key: &str) -> Result<&str, ConfigError> {
        self.opt_str(key)?
            .ok_or_else(|| Self::missing(key, "a string"))
    }

    /// An optional non-negative integer setting.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| Self::wrong(key, "a non-negative integer", v)),
        }
    }

    /// A required non-negative integer setting.
    pub fn u64(&self, key: &str) -> Result<u64, ConfigError> {
        self.opt_u64(key)?
            .ok_or_else(|| Self::missing(key, "a non-negative integer"))
    }

    /// An optional number setting.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| Self::wrong(key, "a number", v)),
        }
    }

    /// An optional `true`/`false` setting.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| Self::wrong(key, "true or false", v)),
        }
    }

    /// A list of strings; a single string counts as a list of one.
    pub fn str_list(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        match self.raw(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| Self::wrong(key, "a list of strings", i))
                })
                .collect(),
            Some(other) => Err(Self::wrong(key, "a list of strings", other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_access_names_the_setting() {
        let c = Config::parse(r#"{"rows": 10, "table": "t", "rate": "fast", "cols": ["a", "b"]}"#)
            .unwrap();
        assert_eq!(c.u64("rows").unwrap(), 10);
        assert_eq!(c.str("table").unwrap(), "t");
        assert_eq!(c.str_list("cols").unwrap(), vec!["a", "b"]);
        let err = c.opt_f64("rate").unwrap_err();
        assert_eq!(err.0, "setting `rate`: expected a number, got \"fast\"");
        assert!(c.str("nope").unwrap_err().0.contains("`nope` is required"));
        assert!(Config::parse("[1]").is_err());
        assert_eq!(Config::from_pairs([("x", json!(1))]).u64("x").unwrap(), 1);
    }
}
