//! datagen: a source of deterministic synthetic rows.
//!
//! Settings: `table` (required), `rows` (required; 0 = endless), `rate` (rows per second,
//! optional), `seed` (default 0), `preset` (`events`, the default, or `users`, keyed by `id`).
//! Row `i` depends only on `(seed, i)`, so a resumed run produces exactly the rows a
//! continuous run would. The checkpoint is the index of the next row.

use std::time::{Duration, Instant};

use moonlink_sdk::source::{PollResult, ResumePoint, Source, TableDef};
use moonlink_sdk::{
    BatchBuilder, ChangeBatch, Checkpoint, Config, DataError, DataType, DecimalType, Field,
    Operation, TableSchema,
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
    /// The preset named `name` (the `preset` setting).
    pub fn parse(name: &str) -> Result<Preset, String> {
        match name {
            "events" => Ok(Preset::Events),
            "users" => Ok(Preset::Users),
            other => Err(format!(
                "setting `preset`: unknown preset '{other}' (expected events or users)"
            )),
        }
    }

    /// The table the preset's rows fill.
    pub fn schema(self) -> TableSchema {
        match self {
            Preset::Events => TableSchema {
                fields: vec![
                    Field::required("id", DataType::Int64),
                    Field::required("ts", DataType::Timestamp),
                    Field::required("user_id", DataType::Int32),
                    Field::required("kind", DataType::Utf8),
                    Field::required(
                        "amount",
                        DataType::Decimal(DecimalType {
                            precision: 10,
                            scale: 2,
                        }),
                    ),
                    Field::nullable("note", DataType::Utf8),
                ],
                primary_key: vec![],
            },
            Preset::Users => TableSchema {
                fields: vec![
                    Field::required("id", DataType::Int64),
                    Field::required("name", DataType::Utf8),
                    Field::nullable("email", DataType::Utf8),
                    Field::required("score", DataType::Float64),
                    Field::required("updated_at", DataType::Timestamp),
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
        add_row(&mut batch, preset, seed, row).expect("the generator matches its schema");
    }
    batch.finish()
}

/// Row `row` of `preset` into `batch`.
fn add_row(batch: &mut BatchBuilder, preset: Preset, seed: u64, row: u64) -> Result<(), DataError> {
    let r = mix(seed, row);
    let id = row as i64;
    let mut out = batch.row();
    out.set("id", id)?;
    match preset {
        Preset::Events => {
            out.set("ts", BASE_TS + id * 1000 + (r % 1000) as i64)?;
            out.set("user_id", (r % 100_000) as i64)?;
            out.set_str("kind", KINDS[(r >> 20) as usize % 4])?;
            out.set("amount", ((r >> 8) % 1_000_000) as i128)?;
            if !row.is_multiple_of(7) {
                out.set("note", format!("note-{}", r % 1000))?;
            }
        }
        Preset::Users => {
            out.set("name", format!("user-{row}"))?;
            if !row.is_multiple_of(5) {
                out.set("email", format!("user{row}@example.com"))?;
            }
            out.set("score", (r % 10_000) as f64 / 100.0)?;
            out.set("updated_at", BASE_TS + id * 1000)?;
        }
    }
    out.finish(Operation::Insert)
}

/// The source: rows `next..rows` of one preset.
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
        let preset = Preset::parse(config.opt_str("preset")?.unwrap_or("events"))?;
        let rate = config.opt_f64("rate")?;
        if rate.is_some_and(|r| r <= 0.0) {
            return Err("setting `rate`: must be a positive number of rows per second".into());
        }
        // The checkpoint is the index of the next row.
        let next = resume.counter_for(&table)?.unwrap_or(0);
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
        Ok((source, vec![TableDef::new(table, preset.schema())]))
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
            Some(Checkpoint::counter(self.next).into()),
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
