//! The initial copy: a new slot's exported snapshot, read table by table in chunks of pages
//! (`ctid` ranges, which Postgres scans directly) over several connections, so the server
//! produces the next chunks while this plugin decodes the current one.
//!
//! Chunks are read in COPY's binary format into typed columns (`binary.rs`) unless
//! `copy_format = "text"`, or a table has a column with no binary plan (then that table is
//! copied in text format, and the log says so).
//!
//! The replication connection that created the slot stays idle meanwhile: the exported
//! snapshot lives only until its next command, which is `START_REPLICATION` from the slot's
//! consistent point. So the copy and the stream meet exactly: no gap, no duplicate.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use moonlink_sdk::source::{CopyProgress, SourceEvent};

use crate::binary::{BatchSize, BinaryBatch, BinaryPlan};
use crate::conn::{col, Connection, CopyRows, COPY_READ_BYTES};
use crate::copy_point::{copy_hash, CopyPoint};
use crate::sql::{parse_lsn, quote_ident, quote_literal};
use crate::stream::Stream;
use crate::tables::{MirroredTable, Mode};
use crate::types::split_copy_row;
use crate::wire::PgError;
use crate::{pg, Settings};

/// A range of a table's pages: `[first, end)`, open-ended for the last chunk (the table may
/// have grown past the size read at the start; the snapshot hides those rows anyway).
#[derive(Debug, Clone)]
struct Chunk {
    /// Position in this copy's chunk order (chunks are handed out in that order).
    seq: usize,
    table: usize,
    first_page: u64,
    end_page: Option<u64>,
}

struct Worker {
    conn: Connection,
    copying: Option<Chunk>,
    /// A binary copy's header is still to come (it leads the first CopyData message).
    header: bool,
}

struct TableProgress {
    copied: u64,
    estimate: Option<u64>,
    chunks_left: usize,
}

pub struct Snapshot {
    /// The connection that created the slot (idle: it holds the exported snapshot), or none
    /// when a copy resumes under a snapshot of its own.
    repl: Option<Connection>,
    consistent_lsn: u64,
    /// (table, first page) of every chunk, by `seq`, and which are complete.
    order: Vec<(usize, u64)>,
    complete: Vec<bool>,
    /// The first chunk not complete: every chunk before it is handed to the host.
    complete_prefix: usize,
    /// Per table: the hash its copy points carry.
    hashes: Vec<u16>,
    workers: VecDeque<Worker>,
    chunks: VecDeque<Chunk>,
    progress: Vec<TableProgress>,
    /// COPY statements' column lists and table names, per table.
    selects: Vec<String>,
    /// Per table: how its binary copy is decoded, or none for a text copy.
    binary: Vec<Option<BinaryPlan>>,
    /// Per table: the binary rows of this poll.
    batches: Vec<Option<BinaryBatch>>,
    /// Per table: how large its last batch grew (the next one is reserved as large).
    sizes: Vec<BatchSize>,
    /// Values of the current message stored as null for want of an Iceberg form.
    unrepresentable: Vec<(usize, &'static str)>,
    truncated: bool,
    /// The tables are new to the host: announce each (the host creates it) before emptying it.
    added: bool,
    /// A copy resumed from a copy point: tables are announced, not emptied.
    resumed: bool,
    /// A first copy of every table (neither resumed nor an added table's): see `poll`.
    fresh: bool,
}

/// Why taking copied rows failed: the connection, or a row that does not decode.
enum Fail {
    Pg(PgError),
    Decode(String),
}

impl From<PgError> for Fail {
    fn from(e: PgError) -> Self {
        Fail::Pg(e)
    }
}

/// The slot a copy reads the snapshot of.
pub struct CopySlot<'a> {
    pub name: &'a str,
    /// A slot of that name exists (left by a copy cut short) and is dropped first.
    pub exists: bool,
}

impl Snapshot {
    /// The initial copy of every table, from the source's own slot.
    pub fn start(
        settings: &Settings,
        tables: &[MirroredTable],
        slot_exists: bool,
    ) -> Result<Snapshot, String> {
        let slot = CopySlot {
            name: &settings.slot,
            exists: slot_exists,
        };
        Snapshot::start_from(settings, tables, slot, false)
    }

    /// A copy of `tables` from the snapshot of a new slot `slot`; `added`: the tables are new
    /// to the host (see [`Snapshot::added`]).
    pub fn start_from(
        settings: &Settings,
        tables: &[MirroredTable],
        slot: CopySlot,
        added: bool,
    ) -> Result<Snapshot, String> {
        let mut repl = Connection::connect(&settings.connect, true)
            .map_err(pg("opening a replication connection"))?;
        let slot_exists = slot.exists;
        let slot_name = slot.name;
        let slot = quote_ident(slot_name);
        if slot_exists {
            // Nothing was acknowledged from it: its position is worthless without a copy.
            repl.execute(&format!("DROP_REPLICATION_SLOT {slot} WAIT"))
                .map_err(pg(&format!("dropping the unfinished slot {slot}")))?;
        }
        let created = repl
            .query(&format!(
                "CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput (SNAPSHOT 'export')"
            ))
            .map_err(pg(&format!("creating replication slot {slot}")))?;
        let row = created
            .first()
            .ok_or("CREATE_REPLICATION_SLOT returned nothing")?;
        let consistent_lsn = row
            .get(1)
            .and_then(|v| v.as_deref())
            .and_then(parse_lsn)
            .ok_or("CREATE_REPLICATION_SLOT returned no consistent point")?;
        let snapshot_name = row
            .get(2)
            .and_then(|v| v.clone())
            .ok_or("CREATE_REPLICATION_SLOT returned no snapshot")?;
        moonlink_sdk::info!(
            "created slot {} at {}; copying {} tables",
            slot_name,
            crate::sql::format_lsn(consistent_lsn),
            tables.len()
        );

        let mut workers = VecDeque::new();
        for _ in 0..settings.snapshot_connections {
            let mut conn = Connection::connect(&settings.connect, false)
                .map_err(pg("opening a copy connection"))?;
            conn.execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
                quote_literal(&snapshot_name)
            ))
            .map_err(pg("importing the slot's snapshot"))?;
            workers.push_back(Worker {
                conn,
                copying: None,
                header: false,
            });
        }
        let mut snapshot = Snapshot::plan(settings, tables, workers, consistent_lsn, &[])?;
        snapshot.repl = Some(repl);
        snapshot.added = added;
        snapshot.fresh = !added;
        snapshot.start_workers()?;
        Ok(snapshot)
    }

    /// Resumes a copy cut short at `from`, under a new snapshot: the chunks from there on
    /// are copied, then the slot streams from where it stands (see `copy_point.rs` for why
    /// that converges). `None` when this copy cannot resume and must start over.
    pub fn resume(
        settings: &Settings,
        tables: &[MirroredTable],
        from: CopyPoint,
        committed: &[(String, CopyPoint)],
    ) -> Result<Option<Snapshot>, String> {
        if from.table >= tables.len() {
            return Ok(None);
        }
        let mut workers = VecDeque::new();
        let mut snapshot_name = String::new();
        for i in 0..settings.snapshot_connections {
            let mut conn = Connection::connect(&settings.connect, false)
                .map_err(pg("opening a copy connection"))?;
            let begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
            if i == 0 {
                // The first transaction's snapshot, shared by the others (it stays open
                // while they import it).
                let rows = conn
                    .query(&format!("{begin}; SELECT pg_export_snapshot()"))
                    .map_err(pg("exporting a snapshot"))?;
                snapshot_name = rows
                    .first()
                    .and_then(|r| col(r, 0))
                    .ok_or("pg_export_snapshot() returned nothing")?
                    .to_string();
            } else {
                conn.execute(&format!(
                    "{begin}; SET TRANSACTION SNAPSHOT {}",
                    quote_literal(&snapshot_name)
                ))
                .map_err(pg("importing a snapshot"))?;
            }
            workers.push_back(Worker {
                conn,
                copying: None,
                header: false,
            });
        }
        // Streaming starts where the slot stands: its consistent point, unless it was
        // confirmed further while nothing was pending (no change for us in between).
        let rows = workers[0]
            .conn
            .query(&format!(
                "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = {}",
                quote_literal(&settings.slot)
            ))
            .map_err(pg("reading the slot's position"))?;
        let Some(slot_lsn) = rows.first().and_then(|r| col(r, 0)).and_then(parse_lsn) else {
            return Ok(None);
        };
        // Each table resumes from the acknowledged point, or from the point its own snapshot
        // committed if that is further: its rows up to there are durable, whatever the rest.
        let mut points = vec![(None, from)];
        for (target, point) in committed {
            if let Some(index) = tables.iter().position(|t| &t.target == target) {
                points.push((Some(index), *point));
            }
        }
        let mut snapshot = Snapshot::plan(settings, tables, workers, slot_lsn, &points)?;
        if let Some(t) = tables
            .iter()
            .zip(&snapshot.progress)
            .find(|(t, p)| t.mode == Mode::AppendOnly && p.chunks_left > 0)
            .map(|(t, _)| t)
        {
            moonlink_sdk::info!(
                "the initial copy was cut short before keyless table {} was copied: starting \
                 it over (a keyless table cannot absorb changes replayed over a newer copy)",
                t.source_name
            );
            for worker in snapshot.workers {
                worker.conn.close();
            }
            return Ok(None);
        }
        if snapshot.hashes[from.table] != from.hash {
            moonlink_sdk::info!(
                "the initial copy was cut short, and the tables or {} were rewritten since: \
                 starting it over",
                tables[from.table].source_name
            );
            for worker in snapshot.workers {
                worker.conn.close();
            }
            return Ok(None);
        }
        moonlink_sdk::info!(
            "resuming the initial copy at {} page {} (slot at {})",
            tables[from.table].source_name,
            from.page,
            crate::sql::format_lsn(slot_lsn)
        );
        // Nothing is emptied: the chunks before `from` are committed.
        snapshot.truncated = true;
        snapshot.resumed = true;
        snapshot.start_workers()?;
        Ok(Some(snapshot))
    }

    /// Sizes the tables and splits them into chunks. With `points` (copy points, each for
    /// every table or for one), a table is split only from the furthest point that holds
    /// for it: complete if the point is in a later table, from its page (when the point's
    /// hash still matches the table) if in this one.
    fn plan(
        settings: &Settings,
        tables: &[MirroredTable],
        mut workers: VecDeque<Worker>,
        consistent_lsn: u64,
        points: &[(Option<usize>, CopyPoint)],
    ) -> Result<Snapshot, String> {
        let names: Vec<&str> = tables.iter().map(|t| t.source_name.as_str()).collect();
        let shapes: Vec<String> = tables
            .iter()
            .map(|t| {
                let columns: Vec<String> = t
                    .columns
                    .iter()
                    .map(|c| format!("{}:{}:{}", c.name, c.type_oid, c.type_modifier))
                    .collect();
                columns.join(",")
            })
            .collect();
        let mut hashes = Vec::new();
        let mut chunks = VecDeque::new();
        let mut progress = Vec::new();
        let mut selects = Vec::new();
        let mut binary = Vec::new();
        let sizing = &mut workers[0].conn;
        let per_chunk = settings.snapshot_chunk_pages;
        for (index, table) in tables.iter().enumerate() {
            let (schema, name) = table
                .source_name
                .split_once('.')
                .unwrap_or(("public", &table.source_name));
            let qualified = format!("{}.{}", quote_ident(schema), quote_ident(name));
            let size = sizing
                .query(&format!(
                    "SELECT pg_relation_size(c.oid) / current_setting('block_size')::bigint, \
                            c.reltuples::bigint, coalesce(pg_relation_filenode(c.oid), 0) \
                     FROM pg_class c WHERE c.oid = to_regclass({})",
                    quote_literal(&qualified)
                ))
                .map_err(pg(&format!("sizing {}", table.source_name)))?;
            let cell = |i: usize| -> Option<i64> {
                size.first()
                    .and_then(|r| r.get(i).cloned().flatten())
                    .and_then(|v| v.parse().ok())
            };
            let pages = cell(0).unwrap_or(0).max(0) as u64;
            let estimate = cell(1).filter(|n| *n >= 0).map(|n| n as u64);
            let hash = copy_hash(
                &names,
                cell(2).unwrap_or(0).max(0) as u64,
                &shapes[index..].join(";"),
            );
            hashes.push(hash);
            // Where this table starts (at a chunk boundary); u64::MAX: it is complete.
            let start = points
                .iter()
                .filter(|(only, _)| only.is_none_or(|t| t == index))
                .filter_map(|(_, p)| match p.table.cmp(&index) {
                    std::cmp::Ordering::Greater => Some(u64::MAX),
                    std::cmp::Ordering::Equal if p.hash == hash => {
                        Some(p.page - p.page % per_chunk)
                    }
                    std::cmp::Ordering::Equal => None,
                    std::cmp::Ordering::Less => Some(0),
                })
                .max()
                .unwrap_or(0);
            let first_page = (start != u64::MAX).then_some(start);
            let mut n = 0;
            if let Some(mut first) = first_page {
                while first + per_chunk < pages {
                    chunks.push_back(Chunk {
                        seq: chunks.len(),
                        table: index,
                        first_page: first,
                        end_page: Some(first + per_chunk),
                    });
                    first += per_chunk;
                    n += 1;
                }
                chunks.push_back(Chunk {
                    seq: chunks.len(),
                    table: index,
                    first_page: first,
                    end_page: None,
                });
                n += 1;
            }
            progress.push(TableProgress {
                // A table a resumed copy skips is complete: its estimate is what it holds. One
                // it resumes holds about its share of the rows in the pages before `start`,
                // so progress counts what is committed, not only what this run copies.
                copied: match first_page {
                    None => estimate.unwrap_or(0),
                    Some(start) if start > 0 && pages > 0 => estimate.map_or(0, |e| {
                        (e as u128 * start.min(pages) as u128 / pages as u128) as u64
                    }),
                    Some(_) => 0,
                },
                estimate,
                chunks_left: n,
            });
            let plan = match crate::binary::plan(table) {
                _ if !settings.copy_binary => None,
                Ok(plan) => {
                    if !plan.as_text.is_empty() {
                        moonlink_sdk::info!(
                            "table {}: copying {} in their text form (binary COPY of the rest)",
                            table.source_name,
                            plan.as_text.join(", ")
                        );
                    }
                    Some(plan)
                }
                Err(column) => {
                    moonlink_sdk::info!(
                        "table {}: column {column} has no binary decoder: the table is copied \
                         in COPY's text format",
                        table.source_name
                    );
                    None
                }
            };
            let columns = match &plan {
                Some(plan) => plan.select_list.clone(),
                None => {
                    let columns: Vec<String> =
                        table.columns.iter().map(|c| quote_ident(&c.name)).collect();
                    columns.join(", ")
                }
            };
            selects.push(format!("SELECT {columns} FROM {qualified}"));
            binary.push(plan);
        }
        Ok(Snapshot {
            repl: None,
            consistent_lsn,
            order: chunks.iter().map(|c| (c.table, c.first_page)).collect(),
            complete: vec![false; chunks.len()],
            complete_prefix: 0,
            hashes,
            workers,
            chunks,
            progress,
            selects,
            batches: binary.iter().map(|_| None).collect(),
            sizes: binary.iter().map(|_| BatchSize::default()).collect(),
            binary,
            unrepresentable: Vec::new(),
            truncated: false,
            added: false,
            resumed: false,
            fresh: false,
        })
    }

    fn start_workers(&mut self) -> Result<(), String> {
        for worker in &mut self.workers {
            worker.conn.set_read_bytes(COPY_READ_BYTES);
        }
        for i in 0..self.workers.len() {
            self.start_next(i)?;
        }
        Ok(())
    }

    /// The checkpoint of the copy so far: every chunk before it is handed to the host.
    pub fn copy_point(&self) -> String {
        let (table, page) = self
            .order
            .get(self.complete_prefix)
            .copied()
            .unwrap_or((self.hashes.len().saturating_sub(1), u64::MAX));
        CopyPoint {
            table,
            page,
            hash: self.hashes.get(table).copied().unwrap_or(0),
        }
        .checkpoint()
    }

    pub fn consistent_lsn(&self) -> u64 {
        self.consistent_lsn
    }

    /// Starts the next chunk on worker `i`, if any is left.
    fn start_next(&mut self, i: usize) -> Result<(), String> {
        let Some(chunk) = self.chunks.pop_front() else {
            return Ok(());
        };
        let mut sql = format!(
            "COPY ({} WHERE ctid >= '({},0)'::tid",
            self.selects[chunk.table], chunk.first_page
        );
        if let Some(end) = chunk.end_page {
            sql.push_str(&format!(" AND ctid < '({end},0)'::tid"));
        }
        sql.push_str(") TO STDOUT");
        let binary = self.binary[chunk.table].is_some();
        if binary {
            sql.push_str(" (FORMAT binary)");
        }
        let worker = &mut self.workers[i];
        worker.header = binary;
        worker
            .conn
            .start_copy_out(&sql)
            .map_err(pg("starting a copy"))?;
        worker.copying = Some(chunk);
        Ok(())
    }

    /// Copies up to `max_rows` rows into `events`, for at most `timeout_ms` of waiting.
    /// Returns true once every table is copied.
    pub fn poll(
        &mut self,
        tables: &mut [MirroredTable],
        max_rows: usize,
        timeout_ms: u32,
        events: &mut Vec<SourceEvent>,
    ) -> Result<bool, String> {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms as u64);
        if !self.truncated {
            // A copy cut short earlier may have left rows behind: start from empty tables.
            for table in tables.iter() {
                if self.added {
                    // Declares the table to the host, which creates it if it has none.
                    events.push(SourceEvent::SchemaChange(table.def()));
                }
                events.push(SourceEvent::Truncate(table.target.clone()));
                // A table left by a copy cut short may have an older shape than the one
                // copied now; the emptied table takes the current one.
                if !self.added {
                    events.push(SourceEvent::SchemaChange(table.def()));
                }
            }
            self.truncated = true;
            if self.fresh {
                // On a first start the host has no checkpoint to give this poll's steps but
                // its last: the rows come in the next polls, so every table's snapshot
                // carries a checkpoint of this source (`resume.tables` then tells, at a
                // restart, which tables the host holds; see `publication.rs`).
                return Ok(false);
            }
        }
        if self.resumed {
            // Shapes need no announcement: the host's are those of the copy's start, and a
            // resumed copy has the same for every table it copies (the copy point's hash).
            // Tables the resumed copy skips are complete.
            for (index, table) in tables.iter().enumerate() {
                let p = &self.progress[index];
                if p.chunks_left == 0 {
                    events.push(SourceEvent::Progress(CopyProgress {
                        table: table.target.clone(),
                        rows_copied: p.copied,
                        rows_total: p.estimate,
                        done: true,
                    }));
                }
            }
            self.resumed = false;
        }
        let mut rows = 0;
        let mut touched = vec![false; tables.len()];
        // Copying connections in a row found with nothing received: rows are taken from
        // whichever connection has them (so every backend keeps producing while this plugin
        // decodes), and only once every one is dry is there a (short) wait.
        let mut dry = 0;
        while rows < max_rows {
            let all_dry = dry >= self.workers.len();
            let Some(worker) = self.workers.front_mut() else {
                break;
            };
            let Some(chunk) = worker.copying.clone() else {
                // Nothing left for this worker: end its transaction.
                if let Some(w) = self.workers.pop_front() {
                    w.conn.close();
                }
                continue;
            };
            if all_dry && Instant::now() >= deadline {
                // Rows so far go out at the deadline; the copy goes on at the next poll.
                break;
            }
            let until = all_dry.then(|| deadline.min(Instant::now() + Duration::from_millis(1)));
            let table = &mut tables[chunk.table];
            let plan = &self.binary[chunk.table];
            let batch = &mut self.batches[chunk.table];
            let size = &self.sizes[chunk.table];
            let unrepresentable = &mut self.unrepresentable;
            let header = &mut worker.header;
            let got =
                worker
                    .conn
                    .copy_rows(until, max_rows - rows, |body| -> Result<usize, Fail> {
                        let failed =
                            |e: String| Fail::Decode(format!("table {}: {e}", table.source_name));
                        match plan {
                            Some(plan) => {
                                let batch = batch.get_or_insert_with(|| {
                                    BinaryBatch::with_size(plan, table.mode, size)
                                });
                                let added = batch
                                    .decode(body, header, unrepresentable)
                                    .map_err(failed)?;
                                for (column, what) in unrepresentable.drain(..) {
                                    table.report_unrepresentable(column, what);
                                }
                                Ok(added)
                            }
                            None => {
                                let fields = split_copy_row(body).map_err(failed)?;
                                let values: Vec<Option<&str>> =
                                    fields.iter().map(|f| f.as_deref()).collect();
                                table.insert(&values).map_err(Fail::Decode)?;
                                Ok(1)
                            }
                        }
                    });
            let got = match got {
                Ok(got) => got,
                Err(Fail::Pg(e)) => return Err(pg("copying")(e)),
                Err(Fail::Decode(e)) => return Err(e),
            };
            match got {
                CopyRows::Rows(added) => {
                    self.progress[chunk.table].copied += added as u64;
                    touched[chunk.table] = true;
                    rows += added;
                    dry = 0;
                }
                CopyRows::Waiting => {
                    dry += 1;
                    self.workers.rotate_left(1);
                }
                CopyRows::End => {
                    dry = 0;
                    worker.copying = None;
                    self.progress[chunk.table].chunks_left -= 1;
                    let p = &self.progress[chunk.table];
                    if self.fresh && p.chunks_left == 0 && p.copied == 0 {
                        // An empty table gets no rows to carry a checkpoint: emptying it
                        // again (a no-op) commits one.
                        events.push(SourceEvent::Truncate(tables[chunk.table].target.clone()));
                    }
                    self.complete[chunk.seq] = true;
                    while self.complete.get(self.complete_prefix) == Some(&true) {
                        self.complete_prefix += 1;
                    }
                    touched[chunk.table] = true;
                    self.start_next(0)?;
                    // Let the other connections' copies (already running) drain next.
                    self.workers.rotate_left(1);
                }
            }
        }
        for ((table, batch), size) in tables
            .iter_mut()
            .zip(&mut self.batches)
            .zip(&mut self.sizes)
        {
            if let Some(batch) = batch.take().filter(|b| !b.is_empty()) {
                *size = batch.size();
                events.push(SourceEvent::Changes(batch.finish(&table.target)));
            }
            table.flush(events);
        }
        for index in (0..tables.len()).filter(|i| touched[*i]) {
            let p = &self.progress[index];
            events.push(SourceEvent::Progress(CopyProgress {
                table: tables[index].target.clone(),
                rows_copied: p.copied,
                rows_total: p.estimate.map(|e| e.max(p.copied)),
                done: p.chunks_left == 0,
            }));
            if p.chunks_left == 0 {
                moonlink_sdk::info!("copied {} rows of {}", p.copied, tables[index].source_name);
            }
        }
        Ok(self.workers.is_empty() && self.chunks.is_empty())
    }

    /// Ends a copy whose slot is kept only as a marker (an added table's): closes the
    /// connection that created it and returns the slot's consistent point.
    pub fn finish(self) -> u64 {
        for worker in self.workers {
            worker.conn.close();
        }
        if let Some(repl) = self.repl {
            repl.close();
        }
        self.consistent_lsn
    }

    /// Starts streaming from the slot's consistent point on the connection that created it.
    pub fn into_stream(self, settings: &Settings) -> Result<Stream, String> {
        match self.repl {
            Some(repl) => {
                Stream::from_connection(repl, settings, self.consistent_lsn, Default::default())
            }
            None => Stream::start(settings, self.consistent_lsn, Default::default()),
        }
    }
}
