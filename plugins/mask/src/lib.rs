//! mask: hides PII in string columns.
//!
//! Settings: `columns` (names), `mode` = `hash` (default: hex SHA-256 of `salt` + value, so
//! equal inputs still join) or `redact` (replaced by `***`), and `salt`: required for `hash`,
//! a secret of at least 16 characters. Without one an unsalted hash of an e-mail address or
//! a phone number is reversed by hashing a list of candidates, so hashing would hide nothing.
//! Nulls stay null; a listed column that is not a string column is an error.

use moonlink_sdk::transform::Transform;
use moonlink_sdk::{ChangeBatch, Config};
use sha2::{Digest, Sha256};

/// The shortest salt accepted for `hash`: shorter ones can be guessed along with the values.
const MIN_SALT_CHARS: usize = 16;

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
        let salt = config.opt_str("salt")?.unwrap_or("");
        if hash && salt.chars().count() < MIN_SALT_CHARS {
            return Err(format!(
                "setting `salt`: {} (mode = \"hash\" needs a secret of at least {MIN_SALT_CHARS} \
                 characters; without one, hashed values such as e-mail addresses are recovered by \
                 hashing lists of candidates). Set salt to a long random secret, e.g. the output \
                 of `openssl rand -hex 32`, keep it private and keep it stable (changing it \
                 changes every hash)",
                if salt.is_empty() {
                    "missing or empty".to_string()
                } else {
                    format!("only {} characters", salt.chars().count())
                }
            ));
        }
        Ok(Mask {
            columns,
            hash,
            salt: salt.to_string(),
        })
    }

    fn apply(&mut self, mut batch: ChangeBatch) -> Result<Vec<ChangeBatch>, String> {
        for column in &mut batch.columns {
            if self.columns.contains(&column.name) {
                column
                    .map_strings(|value| self.mask_value(value))
                    .map_err(|e| format!("mask: {e}"))?;
            }
        }
        Ok(vec![batch])
    }
}

moonlink_sdk::export_transform!(Mask);

#[cfg(test)]
mod tests {
    use super::*;
    use moonlink_sdk::{Column, ColumnValues, Operation};

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
            Mask::configure(Config::parse(&settings("salt-s-0123456789abcdef")).unwrap()).unwrap();
        let out = m.apply(batch()).unwrap();
        let v = out[0].columns[0].strings().unwrap();
        assert_eq!(v[0].unwrap().len(), 64);
        assert_eq!(v[0].unwrap(), m.mask_value("a@b.c"));
        assert_ne!(
            v[0].unwrap(),
            Mask::configure(Config::parse(&settings("salt-t-0123456789abcdef")).unwrap())
                .unwrap()
                .mask_value("a@b.c")
        );
        assert_eq!(v[1], None);
    }

    fn settings(salt: &str) -> String {
        format!(r#"{{"columns":["email"],"salt":"{salt}"}}"#)
    }

    #[test]
    fn hashing_needs_a_long_secret_salt() {
        for config in [
            r#"{"columns":["email"]}"#.to_string(),
            r#"{"columns":["email"],"mode":"hash"}"#.to_string(),
            settings(""),
            settings("demo-salt"),
        ] {
            let err = Mask::configure(Config::parse(&config).unwrap())
                .err()
                .unwrap();
            assert!(
                err.contains("setting `salt`") && err.contains("long random secret"),
                "{err}"
            );
        }
        assert!(Mask::configure(Config::parse(&settings("0123456789abcdef")).unwrap()).is_ok());
        // Redacting needs no salt.
        assert!(Mask::configure(
            Config::parse(r#"{"columns":["email"],"mode":"redact"}"#).unwrap()
        )
        .is_ok());
    }

    #[test]
    fn redacts_and_rejects_bad_settings() {
        let mut m =
            Mask::configure(Config::parse(r#"{"columns":"email","mode":"redact"}"#).unwrap())
                .unwrap();
        let out = m.apply(batch()).unwrap();
        assert_eq!(
            out[0].columns[0].strings().unwrap(),
            vec![Some("***"), None]
        );
        let mut ids = batch();
        ids.columns[0].values = ColumnValues::Int64(vec![1, 2]);
        assert!(m
            .apply(ids)
            .unwrap_err()
            .contains("'email' is not a string column"));
        assert!(Mask::configure(Config::parse(r#"{"columns":[]}"#).unwrap()).is_err());
        assert!(
            Mask::configure(Config::parse(r#"{"columns":["x"],"mode":"rot13"}"#).unwrap()).is_err()
        );
    }
}
