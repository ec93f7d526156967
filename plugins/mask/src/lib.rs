//! mask: hides PII in string columns.
//!
//! Settings: `columns` (names), `mode` = `hash` (default: hex SHA-256 of `salt` + value, so
//! equal inputs still join) or `redact` (replaced by `***`), `salt` (string, default empty).
//! Nulls stay null; a listed column that is not a string column is an error.

use moonlink_sdk::transform::Transform;
use moonlink_sdk::{ChangeBatch, ColumnValues, Config};
use sha2::{Digest, Sha256};

pub struct Mask {
    columns: Vec<String>,
    hash: bool,
    salt: String,
}

impl Mask {
    pub fn mask_value(&self, value: &str) -> String {
        if !self.hash {
            return "***".into();
        }
        let digest = Sha256::new()
            .chain_update(self.salt.as_bytes())
            .chain_update(value.as_bytes())
            .finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Transform for Mask {
    fn configure(config: Config) -> Result<Self, String> {
        let columns = config.str_list("columns")?;
        if columns.is_empty() {
            return Err("setting `columns` must list at least one column".into());
        }
        let hash = match config.opt_str("mode")?.unwrap_or("hash") {
            "hash" => true,
            "redact" => false,
            other => {
                return Err(format!(
                    "setting `mode`: unknown mode '{other}' (expected hash or redact)"
                ))
            }
        };
        Ok(Mask {
            columns,
            hash,
            salt: config.opt_str("salt")?.unwrap_or("").to_string(),
        })
    }

    fn apply(&mut self, mut batch: ChangeBatch) -> Result<Vec<ChangeBatch>, String> {
        for column in &mut batch.columns {
            if !self.columns.contains(&column.name) {
                continue;
            }
            let Some(values) = column.values.strings() else {
                return Err(format!(
                    "mask: column '{}' is not a string column",
                    column.name
                ));
            };
            let masked: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(row, value)| {
                    if column.validity.as_ref().is_none_or(|v| v[row]) {
                        self.mask_value(value)
                    } else {
                        String::new()
                    }
                })
                .collect();
            column.values = ColumnValues::Utf8(masked);
        }
        Ok(vec![batch])
    }
}

moonlink_sdk::export_transform!(Mask);

#[cfg(test)]
mod tests {
    use super::*;
    use moonlink_sdk::{Column, Operation};

    fn batch() -> ChangeBatch {
        ChangeBatch {
            table: "t".into(),
            operations: vec![Operation::Insert; 2],
            columns: vec![Column {
                name: "email".into(),
                values: ColumnValues::Utf8(vec!["a@b.c".into(), String::new()]),
                validity: Some(vec![true, false]),
                unchanged: None,
            }],
        }
    }

    #[test]
    fn hashes_with_salt_and_keeps_nulls() {
        let mut m =
            Mask::configure(Config::parse(r#"{"columns":["email"],"salt":"s"}"#).unwrap()).unwrap();
        let out = m.apply(batch()).unwrap();
        let ColumnValues::Utf8(v) = &out[0].columns[0].values else {
            panic!()
        };
        assert_eq!(v[0].len(), 64);
        assert_eq!(v[0], m.mask_value("a@b.c"));
        assert_ne!(
            v[0],
            Mask::configure(Config::parse(r#"{"columns":["email"],"salt":"t"}"#).unwrap())
                .unwrap()
                .mask_value("a@b.c")
        );
        assert_eq!(v[1], "");
    }

    #[test]
    fn redacts_and_rejects_bad_settings() {
        let mut m =
            Mask::configure(Config::parse(r#"{"columns":"email","mode":"redact"}"#).unwrap())
                .unwrap();
        let out = m.apply(batch()).unwrap();
        let ColumnValues::Utf8(v) = &out[0].columns[0].values else {
            panic!()
        };
        assert_eq!(v[0], "***");
        assert!(Mask::configure(Config::parse(r#"{"columns":[]}"#).unwrap()).is_err());
        assert!(
            Mask::configure(Config::parse(r#"{"columns":["x"],"mode":"rot13"}"#).unwrap()).is_err()
        );
    }
}
