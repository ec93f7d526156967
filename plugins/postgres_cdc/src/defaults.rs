//! Defaults of added columns: `ALTER TABLE t ADD COLUMN c int DEFAULT 7` gives the rows that
//! existed before `7` without rewriting them (Postgres keeps it as `pg_attribute`'s
//! `attmissingval`). The stream never carries those rows again, so the plugin reads the value
//! from the catalog and sends it as the field's default (Iceberg `initial-default`).
//!
//! A volatile default (`DEFAULT now()`, `random()`) makes Postgres rewrite the table, and the
//! rewrite is not replicated: old rows read null in Iceberg. That case is only logged.

use moonlink_sdk::source::SourceEvent;
use moonlink_sdk::{DataType, Value};

use crate::conn::{col, ConnectOptions, Connection};
use crate::sql::quote_literal;
use crate::tables::MirroredTable;
use crate::types::{decode_column, Decoded};

/// Sets the defaults of `added` columns of `table` on the schema change just pushed to
/// `events` (the last one for the table). Failures are logged, never fatal: the column is
/// still added, its old rows read null.
pub fn attach(
    connect: &ConnectOptions,
    table: &MirroredTable,
    added: &[String],
    events: &mut [SourceEvent],
) {
    if added.is_empty() {
        return;
    }
    let Some(SourceEvent::SchemaChange(def)) = events
        .iter_mut()
        .rev()
        .find(|e| matches!(e, SourceEvent::SchemaChange(d) if d.name == table.target))
    else {
        return;
    };
    let found = match missing_values(connect, &table.source_name, added) {
        Ok(found) => found,
        Err(e) => {
            moonlink_sdk::warn!(
                "table {}: cannot read the defaults of added columns ({e}); rows written \
                 before them read null",
                table.source_name
            );
            return;
        }
    };
    for (name, missing, has_default) in found {
        let Some(i) = table.columns.iter().position(|c| c.name == name) else {
            continue;
        };
        match missing {
            Some(text) => match iceberg_json(&def.schema.fields[i].data_type, table, i, &text) {
                Some(json) => def.schema.fields[i].default = Some(json),
                None => moonlink_sdk::warn!(
                    "table {} column '{name}': default '{text}' has no Iceberg form; rows \
                     written before the column read null",
                    table.source_name
                ),
            },
            None if has_default => moonlink_sdk::warn!(
                "table {} column '{name}': its default is not stored for old rows (a volatile \
                 default, or the table was rewritten since: Postgres rewrote the table, which \
                 is not replicated): rows written before the column read null",
                table.source_name
            ),
            None => {}
        }
    }
}

/// (column, the `attmissingval` element as text, whether the column has a default at all).
fn missing_values(
    connect: &ConnectOptions,
    table: &str,
    columns: &[String],
) -> Result<Vec<(String, Option<String>, bool)>, String> {
    let mut conn = Connection::connect(connect, false).map_err(|e| e.to_string())?;
    let names: Vec<String> = columns.iter().map(|c| quote_literal(c)).collect();
    let rows = conn
        .query(&format!(
            "SELECT a.attname, CASE WHEN a.atthasmissing \
             THEN (a.attmissingval::text::text[])[1] END, d.adbin IS NOT NULL \
             FROM pg_attribute a LEFT JOIN pg_attrdef d \
             ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE a.attrelid = {}::regclass AND a.attname IN ({}) AND NOT a.attisdropped",
            quote_literal(&quote_table(table)),
            names.join(", ")
        ))
        .map_err(|e| e.to_string())?;
    conn.close();
    Ok(rows
        .iter()
        .filter_map(|row| {
            Some((
                col(row, 0)?.to_string(),
                col(row, 1).map(str::to_string),
                col(row, 2) == Some("t"),
            ))
        })
        .collect())
}

fn quote_table(table: &str) -> String {
    table
        .split('.')
        .map(crate::sql::quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}

/// Postgres's text of a value as Iceberg's JSON single-value form (spec appendix D).
fn iceberg_json(
    data_type: &DataType,
    table: &MirroredTable,
    index: usize,
    text: &str,
) -> Option<String> {
    let value = match decode_column(table.decoders[index], text).ok()? {
        Decoded::Value(v) => v,
        Decoded::Unrepresentable(_) => return None,
    };
    let json = match (data_type, value) {
        (DataType::Int16 | DataType::Int32 | DataType::Int64, Value::Int(i)) => i.into(),
        (DataType::Float32 | DataType::Float64, Value::Float(f)) if f.is_finite() => f.into(),
        (DataType::Boolean, Value::Bool(b)) => b.into(),
        (DataType::Utf8 | DataType::Uuid, _) => text.into(),
        (DataType::Decimal(_), _) => text.into(),
        (DataType::Date32, Value::Int(days)) => date(days).into(),
        (DataType::Time, _) => text.into(),
        (DataType::Timestamp, Value::Int(us)) => timestamp(us).into(),
        (DataType::Timestamptz, Value::Int(us)) => format!("{}+00:00", timestamp(us)).into(),
        (DataType::Binary, Value::Bytes(b)) => {
            serde_json::Value::from(b.iter().map(|x| format!("{x:02x}")).collect::<String>())
        }
        _ => return None,
    };
    Some(json.to_string())
}

/// `YYYY-MM-DD` of days since 1970-01-01 (Howard Hinnant's civil_from_days).
fn date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff` of microseconds since the epoch.
fn timestamp(micros: i64) -> String {
    let day = micros.div_euclid(86_400_000_000);
    let us = micros.rem_euclid(86_400_000_000);
    let (s, f) = (us / 1_000_000, us % 1_000_000);
    format!(
        "{}T{:02}:{:02}:{:02}.{f:06}",
        date(day),
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_and_timestamps_in_iceberg_form() {
        assert_eq!(super::date(0), "1970-01-01");
        assert_eq!(super::date(19_753), "2024-01-31");
        assert_eq!(super::date(-1), "1969-12-31");
        assert_eq!(
            super::timestamp(1_706_695_200_000_001),
            "2024-01-31T10:00:00.000001"
        );
    }
}
