//! Following the publication while streaming (publication mode only: configured `tables` are
//! the user's fixed choice). Every `publication_check_ms` the publication's tables are read:
//!
//! - A table added to it gets its own initial copy. A new slot (`SLOT_copy_HASH`) is created
//!   with an exported snapshot; its consistent point C splits the WAL exactly: transactions
//!   whose commit record lies before C are in the snapshot, the later ones are not. The main
//!   stream is not read while the table is copied (its connection is kept alive), and then
//!   applies the table's changes only from transactions committing at or after C: no gap and
//!   no duplicate, keyed or not.
//! - The copy slot is a marker saying "this table's copy is not durable yet", created as
//!   soon as the table is seen (before its copy starts) and kept after it: it is dropped once the host acknowledges a position at or past C (then a restart
//!   resumes past every change the copy holds). A restart that finds the marker copies the
//!   table again, emptied first.
//! - A table removed from it stops being mirrored: once everything up to the removal is
//!   committed, the source restarts without it, so the host sees it is no longer declared.
//! - At a restart, a table to mirror that the host does not list as committed by this source
//!   (`resume.tables`: added while moonlink was stopped, or dropped from Iceberg by the user)
//!   gets the same copy before the stream is read. This also holds with configured `tables`
//!   (one added to the setting), where the publication itself is not followed.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use moonlink_sdk::source::SourceEvent;

use crate::conn::{col, Connection};
use crate::snapshot::{CopySlot, Snapshot};
use crate::sql::{format_lsn, parse_lsn, quote_literal};
use crate::stream::Stream;
use crate::tables::MirroredTable;
use crate::{describe_table, pg, Settings};

/// The copy slot (and marker) of an added table: the source's slot name, `_copy_`, and a
/// hash of the table's name (slot names are at most 63 bytes).
pub fn copy_slot(settings: &Settings, source_name: &str) -> String {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = source_name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{}{hash:016x}", copy_slot_prefix(settings))
}

fn copy_slot_prefix(settings: &Settings) -> String {
    let base: String = settings.slot.chars().take(40).collect();
    format!("{base}_copy_")
}

/// An added table's copy in progress.
struct AddedCopy {
    table: usize,
    slot: String,
    snapshot: Snapshot,
}

pub struct Watch {
    conn: Option<Connection>,
    /// Publication mode: tables joining or leaving the publication are looked for.
    follow: bool,
    interval: Duration,
    next_check: Instant,
    /// Added tables (indices into the mirrored tables) waiting for their copy.
    pending: VecDeque<usize>,
    copying: Option<AddedCopy>,
    /// Copy slots to drop once the host acknowledges their consistent point.
    markers: Vec<(u64, String)>,
    /// Tables that left the publication, and the WAL position when that was seen.
    removed: Option<(Vec<String>, u64)>,
}

impl Watch {
    /// Starts watching. `known`: the stream resumes from a checkpoint, and these tables (by
    /// target name) hold what the host committed from this source. A marker slot left for a
    /// table means its copy must be made again, and a table not known was never copied.
    /// Without `known` (a fresh initial copy of everything) every marker is stale. `follow`:
    /// the publication's tables are followed while streaming (publication mode). `None` when
    /// there is nothing to do.
    pub fn new(
        settings: &Settings,
        tables: &[MirroredTable],
        known: Option<&HashSet<String>>,
        follow: bool,
    ) -> Result<Option<Watch>, String> {
        let mut conn = Connection::connect(&settings.connect, false)
            .map_err(pg("connecting to watch the publication"))?;
        let prefix = copy_slot_prefix(settings);
        let mut markers: HashSet<String> = conn
            .query("SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'logical'")
            .map_err(pg("reading replication slots"))?
            .iter()
            .filter_map(|r| col(r, 0).map(str::to_string))
            .filter(|s| s.starts_with(&prefix))
            .collect();
        let mut pending = VecDeque::new();
        if let Some(known) = known {
            for (i, table) in tables.iter().enumerate() {
                if markers.remove(&copy_slot(settings, &table.source_name)) {
                    moonlink_sdk::info!(
                        "the copy of added table {} was cut short: copying it again",
                        table.source_name
                    );
                    pending.push_back(i);
                } else if !known.contains(&table.target) {
                    moonlink_sdk::info!(
                        "table {} is to be mirrored but holds nothing committed from this \
                         source (added while moonlink was stopped, or its Iceberg table \
                         dropped): copying it",
                        table.source_name
                    );
                    pending.push_back(i);
                }
            }
        }
        for stale in markers {
            drop_slot(&mut conn, &stale);
        }
        if !follow && pending.is_empty() {
            conn.close();
            return Ok(None);
        }
        Ok(Some(Watch {
            conn: Some(conn),
            follow,
            interval: settings.publication_check,
            next_check: Instant::now(),
            pending,
            copying: None,
            markers: Vec::new(),
            removed: None,
        }))
    }

    /// Follows the publication. Returns true while an added table is being copied: the
    /// stream is not read meanwhile, and `events` holds the copy's rows.
    pub fn poll(
        &mut self,
        settings: &Settings,
        tables: &mut Vec<MirroredTable>,
        stream: &mut Stream,
        max_rows: usize,
        timeout_ms: u32,
        events: &mut Vec<SourceEvent>,
    ) -> Result<bool, String> {
        if let Some((names, at)) = &self.removed {
            if stream.confirmed() >= *at {
                return Err(format!(
                    "{} left publication '{}': everything up to {} is committed; restarting \
                     without {}",
                    names.join(", "),
                    settings.publication,
                    format_lsn(*at),
                    if names.len() == 1 { "it" } else { "them" }
                ));
            }
        }
        if self.follow && self.copying.is_none() && Instant::now() >= self.next_check {
            self.check(settings, tables)?;
            self.next_check = Instant::now() + self.interval;
        }
        if self.copying.is_none() {
            if let Some(table) = self.pending.pop_front() {
                let slot = copy_slot(settings, &tables[table].source_name);
                let exists = self.slot_exists(settings, &slot)?;
                let snapshot = Snapshot::start_from(
                    settings,
                    std::slice::from_ref(&tables[table]),
                    CopySlot {
                        name: &slot,
                        exists,
                    },
                    true,
                )?;
                self.copying = Some(AddedCopy {
                    table,
                    slot,
                    snapshot,
                });
            }
        }
        let Some(copy) = &mut self.copying else {
            return Ok(false);
        };
        stream.keep_alive()?;
        let table = std::slice::from_mut(&mut tables[copy.table]);
        if copy.snapshot.poll(table, max_rows, timeout_ms, events)? {
            if let Some(done) = self.copying.take() {
                let consistent = done.snapshot.finish();
                let table = &tables[done.table];
                stream.skip_before(&table.target, consistent);
                moonlink_sdk::info!(
                    "added table {} copied; streaming its changes from {}",
                    table.source_name,
                    format_lsn(consistent)
                );
                self.markers.push((consistent, done.slot));
            }
        }
        Ok(true)
    }

    /// The host committed everything up to `lsn`: drop the markers of copies it covers.
    pub fn acknowledged(&mut self, settings: &Settings, lsn: u64) {
        if self.markers.iter().all(|(at, _)| *at > lsn) {
            return;
        }
        let Some(conn) = connection(&mut self.conn, settings) else {
            return;
        };
        self.markers
            .retain(|(at, slot)| *at > lsn || !drop_slot(conn, slot));
    }

    fn slot_exists(&mut self, settings: &Settings, slot: &str) -> Result<bool, String> {
        let conn = connection(&mut self.conn, settings)
            .ok_or("cannot connect to Postgres to copy an added table")?;
        Ok(!conn
            .query(&format!(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = {}",
                quote_literal(slot)
            ))
            .map_err(pg("reading replication slots"))?
            .is_empty())
    }

    /// Reads the publication: new tables wait for their copy, removed ones are noted.
    fn check(
        &mut self,
        settings: &Settings,
        tables: &mut Vec<MirroredTable>,
    ) -> Result<(), String> {
        let Some(conn) = connection(&mut self.conn, settings) else {
            return Ok(()); // tried again at the next check
        };
        let published = match conn.query(&format!(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables \
             WHERE pubname = {} ORDER BY 1",
            quote_literal(&settings.publication)
        )) {
            Ok(rows) => rows
                .iter()
                .filter_map(|r| col(r, 0).map(str::to_string))
                .collect::<Vec<_>>(),
            Err(e) => {
                moonlink_sdk::warn!("cannot read publication '{}': {e}", settings.publication);
                self.conn = None;
                return Ok(());
            }
        };
        for name in &published {
            if tables.iter().any(|t| &t.source_name == name) {
                continue;
            }
            let table = describe_table(conn, settings, name)?;
            // The marker first: from here on a restart knows the table still needs its copy.
            let slot = copy_slot(settings, name);
            conn.execute(&format!(
                "SELECT pg_create_logical_replication_slot({0}, 'pgoutput') \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = {0})",
                quote_literal(&slot)
            ))
            .map_err(pg(&format!("creating copy slot {slot} for table {name}")))?;
            moonlink_sdk::info!(
                "table {name} joined publication '{}': copying it",
                settings.publication
            );
            tables.push(table);
            self.pending.push_back(tables.len() - 1);
        }
        if self.removed.is_none() {
            let gone: Vec<String> = tables
                .iter()
                .filter(|t| !published.contains(&t.source_name))
                .map(|t| t.source_name.clone())
                .collect();
            if !gone.is_empty() {
                // Changes made before the removal end before this position: once it is
                // confirmed, every one of them is committed.
                let at = conn
                    .query("SELECT pg_current_wal_lsn()")
                    .map_err(pg("reading the WAL position"))?
                    .first()
                    .and_then(|r| col(r, 0))
                    .and_then(parse_lsn)
                    .ok_or("pg_current_wal_lsn() returned nothing")?;
                moonlink_sdk::info!(
                    "{} left publication '{}': mirroring stops once {} is committed",
                    gone.join(", "),
                    settings.publication,
                    format_lsn(at)
                );
                self.removed = Some((gone, at));
            }
        }
        Ok(())
    }
}

/// The watch's SQL connection, connected again if it was lost.
fn connection<'c>(
    conn: &'c mut Option<Connection>,
    settings: &Settings,
) -> Option<&'c mut Connection> {
    if conn.is_none() {
        match Connection::connect(&settings.connect, false) {
            Ok(c) => *conn = Some(c),
            Err(e) => moonlink_sdk::warn!("cannot connect to watch the publication: {e}"),
        }
    }
    conn.as_mut()
}

/// Drops a copy slot; false (with a warning) when it cannot.
fn drop_slot(conn: &mut Connection, slot: &str) -> bool {
    match conn.execute(&format!(
        "SELECT pg_drop_replication_slot({}) FROM pg_replication_slots WHERE slot_name = {0}",
        quote_literal(slot)
    )) {
        Ok(()) => true,
        Err(e) => {
            moonlink_sdk::warn!("cannot drop copy slot {slot}: {e}");
            false
        }
    }
}
