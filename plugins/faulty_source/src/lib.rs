//! A datagen-like source that misbehaves on purpose. Settings: `table`, `rows`, `fault`
//! (`trap`, `loop`, `oom`, `malformed`, `error`, `block`, `foreign`) and `fault_at` (row
//! index; the poll that would cross it faults). Only a fresh instance faults: once restarted
//! from a committed checkpoint it behaves, so tests see one fault and a clean recovery.
//!
//! - `block`: the poll connects to `block_addr` (`host:port`, must be granted) and waits for
//!   a byte that never comes, i.e. it blocks inside a host call (`block_in = "open"` blocks in
//!   `open` instead, on every start).
//! - `foreign`: the poll emits `foreign_op` (`changes`, `truncate`, `schema` or `progress`)
//!   for `foreign_table`, a table it did not declare.
//!
//! Sandbox probes, run in `open` and logged as `probe connect <addr>: ok|denied (...)`,
//! `probe read <path>: ok|denied (...)` and `probe lookup <name>: ok (<addresses>)|failed
//! (...)`: settings `connect` (list of `host:port`), `read` (list of paths) and `lookup`
//! (list of host names), so tests can see what the sandbox lets through. With
//! `report_probes = true`, `open` fails with the probe lines as its message.

use std::io::Read;
use std::net::ToSocketAddrs;

use moonlink_sdk::source::{CopyProgress, PollResult, ResumePoint, Source, SourceEvent, TableDef};
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
                default: None,
            },
            Field {
                name: "payload".into(),
                data_type: DataType::Utf8,
                nullable: true,
                default: None,
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
    block_addr: Option<String>,
    foreign_table: String,
    foreign_op: String,
}

/// Connects to `addr` and waits for a byte that never comes (blocks in a host call).
fn block_on(addr: &str) -> String {
    match std::net::TcpStream::connect(addr) {
        Ok(mut stream) => {
            let mut byte = [0u8; 1];
            match stream.read(&mut byte) {
                Ok(n) => format!("faulty source: {addr} answered {n} byte(s)"),
                Err(e) => format!("faulty source: reading {addr}: {e}"),
            }
        }
        Err(e) => format!("faulty source: cannot connect to {addr}: {e}"),
    }
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
        let mut probes = Vec::new();
        for addr in config.str_list("connect")? {
            let outcome = match std::net::TcpStream::connect(addr.as_str()) {
                Ok(_) => "ok".to_string(),
                Err(e) => format!("denied ({e})"),
            };
            probes.push(format!("probe connect {addr}: {outcome}"));
        }
        for path in config.str_list("read")? {
            let outcome = match std::fs::read(&path) {
                Ok(_) => "ok".to_string(),
                Err(e) => format!("denied ({e})"),
            };
            probes.push(format!("probe read {path}: {outcome}"));
        }
        for name in config.str_list("lookup")? {
            let outcome = match (name.as_str(), 0).to_socket_addrs() {
                Ok(addrs) => {
                    let addrs: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                    format!("ok ({})", addrs.join(", "))
                }
                Err(e) => format!("failed ({e}; {:?})", e.kind()),
            };
            probes.push(format!("probe lookup {name}: {outcome}"));
        }
        for line in &probes {
            moonlink_sdk::info!("{line}");
        }
        if config.opt_bool("report_probes")?.unwrap_or(false) {
            return Err(probes.join("\n"));
        }
        let fault = config.opt_str("fault")?.unwrap_or("none").to_string();
        let block_addr = config.opt_str("block_addr")?.map(str::to_string);
        if fault == "block" && config.opt_str("block_in")? == Some("open") {
            let addr = block_addr
                .as_deref()
                .ok_or("fault = \"block\" needs block_addr")?;
            return Err(block_on(addr));
        }
        let source = FaultySource {
            table: table.clone(),
            rows: config.u64("rows")?,
            fault,
            fault_at: config.opt_u64("fault_at")?.unwrap_or(0),
            armed,
            next,
            block_addr,
            foreign_table: config
                .opt_str("foreign_table")?
                .unwrap_or("other.table")
                .to_string(),
            foreign_op: config
                .opt_str("foreign_op")?
                .unwrap_or("truncate")
                .to_string(),
        };
        Ok((source, vec![TableDef::new(table, schema())]))
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
                "block" => {
                    let addr = self
                        .block_addr
                        .as_deref()
                        .ok_or("fault = \"block\" needs block_addr")?;
                    return Err(block_on(addr));
                }
                "foreign" => {
                    let table = self.foreign_table.clone();
                    let event = match self.foreign_op.as_str() {
                        "changes" => SourceEvent::Changes(rows(&table, 1_000_000, 3)),
                        "schema" => SourceEvent::SchemaChange(TableDef::new(
                            table,
                            TableSchema::new(vec![Field::nullable("hijacked", DataType::Utf8)]),
                        )),
                        "progress" => SourceEvent::Progress(CopyProgress {
                            table,
                            rows_copied: 1,
                            rows_total: Some(1),
                            done: true,
                        }),
                        _ => SourceEvent::Truncate(table),
                    };
                    // Its own rows first: a refused poll must not apply them either.
                    let own = rows(&self.table, self.next, n);
                    return Ok(PollResult {
                        events: vec![SourceEvent::Changes(own), event],
                        checkpoint: Some((self.next + n).to_string()),
                        finished: false,
                    });
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
