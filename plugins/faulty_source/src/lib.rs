//! A datagen-like source that misbehaves on purpose. Settings: `table`, `rows`, `fault`
//! (`trap`, `loop`, `oom`, `malformed`, `error`) and `fault_at` (row index; the poll that
//! would cross it faults). Only a fresh instance faults: once restarted from a committed
//! checkpoint it behaves, so tests see one fault and a clean recovery.
//!
//! Sandbox probes, run in `open` and logged as `probe connect <addr>: ok|denied (...)` and
//! `probe read <path>: ok|denied (...)`: settings `connect` (list of `host:port`) and `read`
//! (list of paths), so tests can see what the sandbox lets through.

use moonlink_sdk::source::{PollResult, ResumePoint, Source, TableDef};
use moonlink_sdk::{
    BatchBuilder, ChangeBatch, ColumnValues, Config, DataType, Field, Operation, TableSchema, Value,
};

fn schema() -> TableSchema {
    TableSchema {
        fields: vec![
            Field {
                name: "id".into(),
                data_type: DataType::Int64,
                nullable: false,
            },
            Field {
                name: "payload".into(),
                data_type: DataType::Utf8,
                nullable: true,
            },
        ],
        primary_key: vec![],
    }
}

/// Rows `start..start + n`: `(id, "row-<id>")`.
fn rows(table: &str, start: u64, n: u64) -> ChangeBatch {
    let mut batch = BatchBuilder::new(table, &schema());
    for id in start..start + n {
        batch.start_row(Operation::Insert);
        batch.set(0, Value::Int(id as i64)).expect("int64 column");
        batch
            .set(1, Value::Str(format!("row-{id}")))
            .expect("string column");
        batch.finish_row().expect("complete row");
    }
    batch.finish()
}

pub struct FaultySource {
    table: String,
    rows: u64,
    fault: String,
    fault_at: u64,
    armed: bool,
    next: u64,
}

impl Source for FaultySource {
    fn open(config: Config, resume: ResumePoint) -> Result<(Self, Vec<TableDef>), String> {
        let table = config.str("table")?.to_string();
        let resume_from = resume.for_table(&table);
        let armed = resume_from.is_none();
        let next = match resume_from {
            Some(cp) => cp.parse().map_err(|_| format!("bad checkpoint '{cp}'"))?,
            None => 0,
        };
        for addr in config.str_list("connect")? {
            let outcome = match std::net::TcpStream::connect(addr.as_str()) {
                Ok(_) => "ok".to_string(),
                Err(e) => format!("denied ({e})"),
            };
            moonlink_sdk::info!("probe connect {addr}: {outcome}");
        }
        for path in config.str_list("read")? {
            let outcome = match std::fs::read(&path) {
                Ok(_) => "ok".to_string(),
                Err(e) => format!("denied ({e})"),
            };
            moonlink_sdk::info!("probe read {path}: {outcome}");
        }
        let fault = config.opt_str("fault")?.unwrap_or("none").to_string();
        let source = FaultySource {
            table: table.clone(),
            rows: config.u64("rows")?,
            fault,
            fault_at: config.opt_u64("fault_at")?.unwrap_or(0),
            armed,
            next,
        };
        Ok((
            source,
            vec![TableDef {
                name: table,
                schema: schema(),
            }],
        ))
    }

    fn poll(&mut self, max_rows: u32, _timeout_ms: u32) -> Result<PollResult, String> {
        let n = (self.rows - self.next).min(max_rows as u64);
        if self.armed
            && self.fault != "none"
            && self.next <= self.fault_at
            && self.fault_at < self.next + n.max(1)
        {
            match self.fault.as_str() {
                "trap" => panic!("faulty source: trap at row {}", self.next),
                "loop" => loop {
                    std::hint::black_box(&mut self.next);
                },
                "oom" => {
                    let mut hoard = Vec::new();
                    loop {
                        hoard.push(vec![7u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                "malformed" => {
                    let mut batch = rows(&self.table, self.next, n);
                    batch.columns[0].values = ColumnValues::Int64(vec![1]);
                    return Ok(PollResult::batches(vec![batch], None, false));
                }
                _ => {
                    return Err(format!(
                        "faulty source: upstream unavailable at row {}",
                        self.next
                    ))
                }
            }
        }
        if n == 0 {
            return Ok(PollResult::batches(vec![], None, true));
        }
        let batch = rows(&self.table, self.next, n);
        self.next += n;
        Ok(PollResult::batches(
            vec![batch],
            Some(self.next.to_string()),
            self.next == self.rows,
        ))
    }
}

moonlink_sdk::export_source!(FaultySource);
