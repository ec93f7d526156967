//! datagen: a source of deterministic synthetic rows.
//!
//! Settings: `table` (required), `rows` (required; 0 = endless), `rate` (rows per second,
//! optional), `seed` (default 0), `preset` (`events`, the default, or `users`, keyed by `id`).
//! Row `i` depends only on `(seed, i)`, so a resumed run produces exactly the rows a
//! continuous run would. The checkpoint is the index of the next row.

use std::time::{Duration, Instant};

use moonlink_sdk::source::{PollResult, ResumePoint, Source, TableDef};
use moonlink_sdk::{
    BatchBuilder, ChangeBatch, Config, DataType, DecimalType, Field, Operation, TableSchema, Value,
};

/// The shape of generated rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Append-only events: id, ts, user_id, kind, amount, note (nullable).
    Events,
    /// A keyed table of users: id (key), name, email, score, updated_at.
    Users,
}

impl Preset {
    pub fn parse(name: &str) -> Result<Preset, String> {
        match name {
            "events" => Ok(Preset::Events),
            "users" => Ok(Preset::Users),
            other => Err(format!(
                "setting `preset`: unknown preset '{other}' (expected events or users)"
            )),
        }
    }

    pub fn schema(self) -> TableSchema {
        let f = |name: &str, data_type, nullable| Field {
            name: name.into(),
            data_type,
            nullable,
        };
        match self {
            Preset::Events => TableSchema {
                fields: vec![
                    f("id", DataType::Int64, false),
                    f("ts", DataType::Timestamp, false),
                    f("user_id", DataType::Int32, false),
                    f("kind", DataType::Utf8, false),
                    f(
                        "amount",
                        DataType::Decimal(DecimalType {
                            precision: 10,
                            scale: 2,
                        }),
                        false,
                    ),
                    f("note", DataType::Utf8, true),
                ],
                primary_key: vec![],
            },
            Preset::Users => TableSchema {
                fields: vec![
                    f("id", DataType::Int64, false),
                    f("name", DataType::Utf8, false),
                    f("email", DataType::Utf8, true),
                    f("score", DataType::Float64, false),
                    f("updated_at", DataType::Timestamp, false),
                ],
                primary_key: vec!["id".into()],
            },
        }
    }
}

/// splitmix64: a fast, well-mixed function of (seed, row).
fn mix(seed: u64, row: u64) -> u64 {
    let mut z = seed ^ row.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const KINDS: [&str; 4] = ["click", "view", "purchase", "signup"];
const BASE_TS: i64 = 1_700_000_000_000_000;

/// Generates rows `start..start + n` of `preset` for `table`: the whole generator, shared by
/// the plugin and the native benchmark baseline.
pub fn generate(table: &str, preset: Preset, seed: u64, start: u64, n: u64) -> ChangeBatch {
    let schema = preset.schema();
    let mut batch = BatchBuilder::new(table, &schema);
    for row in start..start + n {
        let r = mix(seed, row);
        batch.start_row(Operation::Insert);
        let set = |b: &mut BatchBuilder, i: usize, v: Value| {
            b.set(i, v).expect("generator matches its schema")
        };
        match preset {
            Preset::Events => {
                set(&mut batch, 0, Value::Int(row as i64));
                set(
                    &mut batch,
                    1,
                    Value::Int(BASE_TS + row as i64 * 1000 + (r % 1000) as i64),
                );
                set(&mut batch, 2, Value::Int((r % 100_000) as i64));
                set(
                    &mut batch,
                    3,
                    Value::Str(KINDS[(r >> 20) as usize % 4].to_string()),
                );
                set(&mut batch, 4, Value::Int128(((r >> 8) % 1_000_000) as i128));
                if row % 7 != 0 {
                    set(&mut batch, 5, Value::Str(format!("note-{}", r % 1000)));
                }
            }
            Preset::Users => {
                set(&mut batch, 0, Value::Int(row as i64));
                set(&mut batch, 1, Value::Str(format!("user-{row}")));
                if row % 5 != 0 {
                    set(&mut batch, 2, Value::Str(format!("user{row}@example.com")));
                }
                set(&mut batch, 3, Value::Float((r % 10_000) as f64 / 100.0));
                set(&mut batch, 4, Value::Int(BASE_TS + row as i64 * 1000));
            }
        }
        batch
            .finish_row()
            .expect("generator fills required columns");
    }
    batch.finish()
}

pub struct Datagen {
    table: String,
    preset: Preset,
    seed: u64,
    /// Total rows; 0 = endless.
    rows: u64,
    rate: Option<f64>,
    next: u64,
    started: Instant,
    produced_since_start: u64,
}

impl Source for Datagen {
    fn open(config: Config, resume: ResumePoint) -> Result<(Self, Vec<TableDef>), String> {
        let table = config.str("table")?.to_string();
        let resume_from = resume.for_table(&table);
        let preset = Preset::parse(config.opt_str("preset")?.unwrap_or("events"))?;
        let rate = config.opt_f64("rate")?;
        if rate.is_some_and(|r| r <= 0.0) {
            return Err("setting `rate`: must be a positive number of rows per second".into());
        }
        let next = match resume_from {
            Some(cp) => cp
                .parse()
                .map_err(|_| format!("cannot resume from checkpoint '{cp}': not a row index"))?,
            None => 0,
        };
        let source = Datagen {
            table: table.clone(),
            preset,
            seed: config.opt_u64("seed")?.unwrap_or(0),
            rows: config.u64("rows")?,
            rate,
            next,
            started: Instant::now(),
            produced_since_start: 0,
        };
        moonlink_sdk::info!(
            "datagen: table {table}, {} rows, starting at row {next}",
            source.rows
        );
        Ok((
            source,
            vec![TableDef {
                name: table,
                schema: preset.schema(),
            }],
        ))
    }

    fn poll(&mut self, max_rows: u32, timeout_ms: u32) -> Result<PollResult, String> {
        let remaining = if self.rows == 0 {
            u64::MAX
        } else {
            self.rows - self.next
        };
        let mut n = remaining.min(max_rows as u64);
        if let Some(rate) = self.rate {
            let deadline = Instant::now() + Duration::from_millis(timeout_ms as u64);
            loop {
                let allowed = (self.started.elapsed().as_secs_f64() * rate) as u64;
                let budget = allowed.saturating_sub(self.produced_since_start);
                if budget > 0 || Instant::now() >= deadline {
                    n = n.min(budget);
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if n == 0 {
            return Ok(PollResult::batches(vec![], None, remaining == 0));
        }
        let batch = generate(&self.table, self.preset, self.seed, self.next, n);
        self.next += n;
        self.produced_since_start += n;
        Ok(PollResult::batches(
            vec![batch],
            Some(self.next.to_string()),
            self.rows != 0 && self.next == self.rows,
        ))
    }
}

#[cfg(feature = "component")]
moonlink_sdk::export_source!(Datagen);

#[cfg(test)]
mod tests {
    use super::*;
    use moonlink_sdk::ColumnValues;
    use serde_json::json;

    fn config(rows: u64) -> Config {
        Config::from_pairs([
            ("table", json!("demo.events")),
            ("rows", json!(rows)),
            ("seed", json!(7)),
        ])
    }

    fn ids(batch: &ChangeBatch) -> Vec<i64> {
        match &batch.columns[0].values {
            ColumnValues::Int64(v) => v.clone(),
            _ => panic!("id is int64"),
        }
    }

    #[test]
    fn resuming_from_a_checkpoint_continues_exactly() {
        let (mut a, tables) = Datagen::open(config(25), ResumePoint::fresh()).unwrap();
        assert_eq!(tables[0].name, "demo.events");
        let first = a.poll(10, 0).unwrap();
        assert_eq!(first.checkpoint.as_deref(), Some("10"));
        let (mut b, _) =
            Datagen::open(config(25), ResumePoint::at(first.checkpoint.clone())).unwrap();
        let rest: Vec<i64> = (0..3)
            .flat_map(|_| b.poll(10, 0).unwrap().into_batches())
            .flat_map(|x| ids(&x))
            .collect();
        assert_eq!(rest, (10..25).collect::<Vec<_>>());
        let done = b.poll(10, 0).unwrap();
        assert!(done.finished && done.events.is_empty());
        // Same seed, same rows.
        let again = |seed| format!("{:?}", generate("t", Preset::Events, seed, 3, 2).columns);
        assert_eq!(again(7), again(7));
        assert_ne!(again(7), again(8));
    }

    #[test]
    fn bad_settings_are_explained() {
        let err = Datagen::open(
            Config::from_pairs([("table", json!("t"))]),
            ResumePoint::fresh(),
        )
        .err()
        .unwrap();
        assert!(err.contains("`rows` is required"), "{err}");
        let err = Datagen::open(
            Config::from_pairs([
                ("table", json!("t")),
                ("rows", json!(1)),
                ("preset", json!("x")),
            ]),
            ResumePoint::fresh(),
        )
        .err()
        .unwrap();
        assert!(err.contains("unknown preset"), "{err}");
    }
}
