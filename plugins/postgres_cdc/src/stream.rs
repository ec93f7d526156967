//! Streaming: `START_REPLICATION` on the slot, pgoutput changes into change batches, and the
//! slot advanced only to what the host has acknowledged (committed in Iceberg).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moonlink_sdk::source::SourceEvent;

use crate::conn::Connection;
use crate::lag::LagMeter;
use crate::pgoutput::{
    parse_change, parse_stream_message, Change, Relation, StreamMessage, TupleValue,
};
use crate::sql::{format_lsn, quote_ident, quote_literal};
use crate::tables::{MirroredTable, Mode, PgColumn};
use crate::{pg, Settings};

/// How often the slot hears from us even when nothing happens (well inside Postgres's
/// default `wal_sender_timeout` of 60 s). Each such update asks for a keepalive back, so a
/// server gone silent is noticed within the reply timeout.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// How many stream messages a poll reads between looks at the clock for a status update
/// (a few milliseconds of messages while streaming; every poll looks once at its start).
const STATUS_CHECK_EVERY: u32 = 256;

pub struct Stream {
    conn: Connection,
    /// Relation oid → index of the mirrored table.
    by_oid: HashMap<u32, usize>,
    /// The relation of the last change applied and its table's index: resolved, announced,
    /// and unchanged since (a Relation message clears it). Saves the look-ups per row.
    current: Option<(u32, usize)>,
    /// Tables already committed further than the resume point: their changes in transactions
    /// that committed before this LSN are already in Iceberg.
    skip_before: HashMap<String, u64>,
    /// The commit LSN of the transaction being read.
    in_transaction: Option<u64>,
    /// End LSN of the last transaction handed to the host.
    emitted: u64,
    /// The highest LSN the host acknowledged (or that is safe to confirm when idle).
    confirmed: u64,
    last_status: Instant,
    /// How often to send a status update (and ask for a keepalive).
    status_interval: Duration,
    warned: HashSet<String>,
    /// Relations whose shape this stream has announced to the host.
    announced: HashSet<u32>,
    /// Relations published but not mirrored (yet): a table added to the publication is
    /// described before the source adopts it, and Postgres does not describe it again.
    unknown: HashMap<u32, Relation>,
    /// How far behind the server the acknowledged position is.
    lag: Box<LagMeter>,
    /// For catalog look-ups beside the stream (defaults of added columns).
    connect: Box<crate::conn::ConnectOptions>,
}

fn text(value: &TupleValue) -> Result<Option<&str>, String> {
    match value {
        TupleValue::Text(bytes) => std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| "a value is not UTF-8".to_string()),
        _ => Ok(None),
    }
}

fn texts(values: &[TupleValue]) -> Result<Vec<Option<&str>>, String> {
    values.iter().map(text).collect()
}

impl Stream {
    /// Connects and starts streaming the slot from `lsn`.
    pub fn start(
        settings: &Settings,
        lsn: u64,
        skip_before: HashMap<String, u64>,
    ) -> Result<Stream, String> {
        let conn = Connection::connect(&settings.connect, true)
            .map_err(pg("opening a replication connection"))?;
        Stream::from_connection(conn, settings, lsn, skip_before)
    }

    pub fn from_connection(
        mut conn: Connection,
        settings: &Settings,
        lsn: u64,
        skip_before: HashMap<String, u64>,
    ) -> Result<Stream, String> {
        conn.start_replication(&format!(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '1', publication_names {})",
            quote_ident(&settings.slot),
            format_lsn(lsn),
            quote_literal(&quote_ident(&settings.publication))
        ))
        .map_err(|e| {
            let hint = if e.code() == Some("55006") {
                " (another connection is using the slot; it is released when that one ends)"
            } else {
                ""
            };
            format!(
                "starting replication from slot '{}': {e}{hint}",
                settings.slot
            )
        })?;
        Ok(Stream {
            conn,
            by_oid: HashMap::new(),
            current: None,
            skip_before,
            in_transaction: None,
            emitted: lsn,
            confirmed: lsn,
            last_status: Instant::now(),
            status_interval: STATUS_INTERVAL.min(settings.connect.reply_timeout / 2),
            warned: HashSet::new(),
            announced: HashSet::new(),
            unknown: HashMap::new(),
            lag: Box::new(LagMeter::new(settings.connect.clone())),
            connect: Box::new(settings.connect.clone()),
        })
    }

    /// Reads changes until `max_rows` rows are built (at a transaction boundary) or no more
    /// arrive within `timeout_ms`. Returns the end LSN of the last complete transaction read.
    /// No read waits past `timeout_ms`: an idle stream returns empty in time.
    pub fn poll(
        &mut self,
        tables: &mut [MirroredTable],
        max_rows: usize,
        timeout_ms: u32,
        events: &mut Vec<SourceEvent>,
    ) -> Result<Option<u64>, String> {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms as u64);
        self.lag
            .probe_if_due(Duration::from_millis(timeout_ms as u64 / 2));
        let mut rows = 0;
        let mut complete = None;
        // The clock is read every STATUS_CHECK_EVERY messages (each read is a host call).
        let mut messages = 0u32;
        loop {
            if messages.is_multiple_of(STATUS_CHECK_EVERY)
                && self.last_status.elapsed() >= self.status_interval
            {
                self.send_status(true)?;
            }
            messages = messages.wrapping_add(1);
            if rows >= max_rows && (self.in_transaction.is_none() || rows >= 4 * max_rows) {
                // At a transaction boundary, or a huge transaction handed over in parts.
                break;
            }
            // Once a transaction is complete, hand it over as soon as the stream pauses.
            let wait_until = if complete.is_some() && self.in_transaction.is_none() {
                Instant::now()
            } else {
                deadline
            };
            let Some(data) = self
                .conn
                .replication_data(wait_until)
                .map_err(pg("reading the replication stream"))?
            else {
                break;
            };
            match parse_stream_message(data)? {
                StreamMessage::Keepalive { wal_end, reply } => {
                    // Idle and everything handed over is acknowledged: WAL up to here holds
                    // nothing for us, so the slot may advance (no unbounded WAL growth).
                    let idle = self.in_transaction.is_none() && rows == 0 && complete.is_none();
                    if idle && self.emitted <= self.confirmed {
                        self.confirmed = self.confirmed.max(wal_end);
                        self.lag.confirmed(self.confirmed);
                    }
                    if reply {
                        self.send_status(false)?;
                    }
                }
                StreamMessage::XLogData { message, .. } => {
                    if let Some(end) = self.apply(message, tables, events, &mut rows)? {
                        complete = Some(end);
                    }
                }
            }
        }
        for table in tables.iter_mut() {
            table.flush(events);
        }
        if let Some(end) = complete {
            self.emitted = end;
        }
        self.lag.report(self.confirmed);
        Ok(complete)
    }

    /// Confirms `confirmed` to the server; `reply` asks it to answer at once.
    fn send_status(&mut self, reply: bool) -> Result<(), String> {
        self.last_status = Instant::now();
        self.conn
            .send_status(self.confirmed, self.confirmed, reply)
            .map_err(pg("confirming a position to Postgres"))
    }

    /// The host committed everything up to `lsn`: let the slot advance there.
    pub fn acknowledge(&mut self, lsn: u64) -> Result<(), String> {
        if lsn > self.confirmed {
            self.confirmed = lsn;
        }
        self.lag.confirmed(self.confirmed);
        self.send_status(false)
    }

    /// Everything up to here is committed in Iceberg (or held nothing for the host).
    pub fn confirmed(&self) -> u64 {
        self.confirmed
    }

    /// The table `target` holds every transaction that committed before `lsn` (an added
    /// table's copy): skip its changes in those, apply the rest.
    pub fn skip_before(&mut self, target: &str, lsn: u64) {
        self.skip_before.insert(target.to_string(), lsn);
    }

    /// Keeps the slot's connection alive while the stream is not read (an added table's
    /// copy): a status update when due, well inside the server's timeout.
    pub fn keep_alive(&mut self) -> Result<(), String> {
        if self.last_status.elapsed() >= self.status_interval {
            self.send_status(false)?;
        }
        Ok(())
    }

    fn skipped(&self, table: &MirroredTable) -> bool {
        if self.skip_before.is_empty() {
            return false;
        }
        match (self.skip_before.get(&table.target), self.in_transaction) {
            (Some(&before), Some(commit_lsn)) => commit_lsn < before,
            _ => false,
        }
    }

    /// The table a change is for, unless the change is already committed for it. Before a
    /// table's first applied change of this stream, its shape is announced: the host may be
    /// ahead of (or behind) the shape of this point of the WAL after a crash.
    fn table<'t>(
        &mut self,
        relation: u32,
        tables: &'t mut [MirroredTable],
        events: &mut Vec<SourceEvent>,
    ) -> Result<Option<&'t mut MirroredTable>, String> {
        if let Some((oid, index)) = self.current {
            if oid == relation {
                let table = &mut tables[index];
                return Ok((!self.skipped(table)).then_some(table));
            }
        }
        if !self.by_oid.contains_key(&relation) {
            // Described while not mirrored; the source may have adopted the table since.
            let Some(described) = self.unknown.remove(&relation) else {
                return Ok(None);
            };
            self.relation(described, tables, events)?;
        }
        let Some(&index) = self.by_oid.get(&relation) else {
            return Ok(None);
        };
        let table = &mut tables[index];
        if self.skipped(table) {
            return Ok(None);
        }
        if self.announced.insert(relation) {
            table.flush(events);
            events.push(SourceEvent::SchemaChange(table.def()));
        }
        self.current = Some((relation, index));
        Ok(Some(table))
    }

    /// A Relation message: the table's shape at this point of the WAL.
    fn relation(
        &mut self,
        relation: Relation,
        tables: &mut [MirroredTable],
        events: &mut Vec<SourceEvent>,
    ) -> Result<(), String> {
        self.current = None;
        let name = format!("{}.{}", relation.namespace, relation.name);
        let Some(index) = tables.iter().position(|t| t.source_name == name) else {
            // Published, but not mirrored by this source (or not yet).
            self.unknown.insert(relation.oid, relation);
            return Ok(());
        };
        self.by_oid.insert(relation.oid, index);
        let columns: Vec<PgColumn> = relation
            .columns
            .into_iter()
            .map(|c| PgColumn {
                name: c.name,
                type_oid: c.type_oid,
                type_modifier: c.type_modifier,
                type_name: String::new(),
            })
            .collect();
        let announce = !self.skipped(&tables[index]);
        let first = announce && self.announced.insert(relation.oid);
        let added: Vec<String> = columns
            .iter()
            .filter(|c| !tables[index].columns.iter().any(|o| o.name == c.name))
            .map(|c| c.name.clone())
            .collect();
        if tables[index].change_columns(columns, announce, first, events)? && announce {
            moonlink_sdk::info!("table {name} changed its columns");
            crate::defaults::attach(&self.connect, &tables[index], &added, events);
        }
        Ok(())
    }

    fn warn_once(&mut self, key: String, message: String) {
        if self.warned.insert(key) {
            moonlink_sdk::warn!("{message}");
        }
    }

    /// Applies one pgoutput message; returns the end LSN when it commits a transaction.
    fn apply(
        &mut self,
        message: Bytes,
        tables: &mut [MirroredTable],
        events: &mut Vec<SourceEvent>,
        rows: &mut usize,
    ) -> Result<Option<u64>, String> {
        match parse_change(message)? {
            Change::Begin {
                final_lsn,
                commit_time_micros,
                ..
            } => {
                self.in_transaction = Some(final_lsn);
                self.lag.begin(commit_time_micros);
            }
            Change::Commit {
                end_lsn,
                commit_time_micros,
                ..
            } => {
                self.in_transaction = None;
                self.lag.commit(end_lsn, commit_time_micros);
                return Ok(Some(end_lsn));
            }
            Change::Relation(relation) => self.relation(relation, tables, events)?,
            Change::Insert { relation, new } => {
                if let Some(table) = self.table(relation, tables, events)? {
                    table.insert(&texts(&new)?)?;
                    *rows += 1;
                }
            }
            Change::Update { relation, old, new } => {
                let Some(table) = self.table(relation, tables, events)? else {
                    return Ok(None);
                };
                if table.mode == Mode::AppendOnly {
                    let name = table.source_name.clone();
                    self.warn_once(
                        format!("update {name}"),
                        format!("table {name} has no key: its updates are not mirrored"),
                    );
                    return Ok(None);
                }
                let new_values: Vec<Option<Option<&str>>> = new
                    .iter()
                    .map(|v| match v {
                        TupleValue::UnchangedToast => Ok(None),
                        other => text(other).map(Some),
                    })
                    .collect::<Result<_, _>>()?;
                if let Some(old) = &old {
                    let old_values = texts(old)?;
                    let new_flat: Vec<Option<&str>> =
                        new_values.iter().map(|v| v.flatten()).collect();
                    if table.key_of(&old_values) != table.key_of(&new_flat) {
                        // The key changed: the old row goes, the new one comes.
                        table.delete(&old_values)?;
                        *rows += 1;
                    }
                }
                table.upsert(&new_values)?;
                *rows += 1;
            }
            Change::Delete { relation, old } => {
                let Some(table) = self.table(relation, tables, events)? else {
                    return Ok(None);
                };
                if table.mode == Mode::AppendOnly {
                    let name = table.source_name.clone();
                    self.warn_once(
                        format!("delete {name}"),
                        format!("table {name} has no key: its deletes are not mirrored"),
                    );
                    return Ok(None);
                }
                table.delete(&texts(&old)?)?;
                *rows += 1;
            }
            Change::Truncate { relations } => {
                for relation in relations {
                    if let Some(table) = self.table(relation, tables, events)? {
                        table.flush(events);
                        events.push(SourceEvent::Truncate(table.target.clone()));
                    }
                }
            }
            Change::Other => {}
        }
        Ok(None)
    }
}
