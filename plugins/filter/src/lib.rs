//! filter: keeps rows whose `column` satisfies `op` against `value`.
//!
//! Settings: `column`; `op` one of `eq ne lt le gt ge` (compare with `value`, a number or a
//! string) or `is_null`, `not_null`. Deletes always pass: dropping one would leave a row
//! behind in a keyed table. A null never satisfies a comparison.

use std::cmp::Ordering::{self, Equal, Greater, Less};

use moonlink_sdk::transform::Transform;
use moonlink_sdk::{ChangeBatch, Config, Operation, Value};
use serde_json::Value as Json;

/// The transform: one predicate on one column.
pub struct Filter {
    column: String,
    /// `Some(true)` for `is_null`, `Some(false)` for `not_null`, `None` for comparisons.
    null_test: Option<bool>,
    /// The orderings of (column value, `value`) that pass a comparison.
    accept: &'static [Ordering],
    value: Json,
}

/// How a column value compares with the configured one (`None`: not comparable, or null).
fn compare(value: &Value, with: &Json) -> Option<Ordering> {
    match (value, with) {
        (Value::Int(i), Json::Number(n)) => match n.as_i64() {
            Some(j) => Some(i.cmp(&j)),
            None => (*i as f64).partial_cmp(&n.as_f64()?),
        },
        (Value::Float(f), Json::Number(n)) => f.partial_cmp(&n.as_f64()?),
        (Value::Bool(b), Json::Bool(c)) => Some(b.cmp(c)),
        (Value::Str(s), Json::String(t)) => Some(s.as_str().cmp(t)),
        _ => None,
    }
}

impl Filter {
    /// Whether a row whose column holds `value` passes.
    fn keep(&self, value: &Value) -> bool {
        match self.null_test {
            Some(is_null) => (*value == Value::Null) == is_null,
            None => compare(value, &self.value).is_some_and(|o| self.accept.contains(&o)),
        }
    }
}

impl Transform for Filter {
    fn configure(config: Config) -> Result<Self, String> {
        let column = config.str("column")?.to_string();
        let (null_test, accept): (_, &'static [Ordering]) = match config.str("op")? {
            "eq" => (None, &[Equal]),
            "ne" => (None, &[Less, Greater]),
            "lt" => (None, &[Less]),
            "le" => (None, &[Less, Equal]),
            "gt" => (None, &[Greater]),
            "ge" => (None, &[Greater, Equal]),
            "is_null" => (Some(true), &[]),
            "not_null" => (Some(false), &[]),
            other => {
                let expected = "eq, ne, lt, le, gt, ge, is_null, not_null";
                return Err(format!(
                    "setting `op`: unknown operator '{other}' (expected {expected})"
                ));
            }
        };
        let value = config.raw("value").cloned();
        if null_test.is_none() && value.is_none() {
            return Err("setting `value` is required for comparison operators".into());
        }
        let value = value.unwrap_or(Json::Null);
        Ok(Filter {
            column,
            null_test,
            accept,
            value,
        })
    }

    fn apply(&mut self, mut batch: ChangeBatch) -> Result<Vec<ChangeBatch>, String> {
        if batch.column(&self.column).is_none() {
            let (table, column) = (&batch.table, &self.column);
            return Err(format!(
                "filter: batch for '{table}' has no column '{column}'"
            ));
        }
        batch.retain_rows(|row| {
            row.operation() == Operation::Delete || self.keep(&row.get(&self.column).unwrap())
        });
        Ok((batch.num_rows() > 0)
            .then_some(batch)
            .into_iter()
            .collect())
    }
}

moonlink_sdk::export_transform!(Filter);

#[cfg(test)]
mod tests;
