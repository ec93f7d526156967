//! kafka: a source plugin that reads Kafka topics into Iceberg tables, exactly once.
//!
//! The plugin speaks the Kafka protocol itself over WASI sockets (messages encoded and decoded
//! by `kafka-protocol`; metadata, offsets, fetching, leader changes and out-of-range offsets
//! handled in [`consumer`]). Each poll turns fetched records into rows ([`rows`]) and ends with
//! a checkpoint holding the next offset of every partition ([`checkpoint`]); the host commits
//! it in the Iceberg snapshot with the rows and hands it back after a restart, so every record
//! lands exactly once. Nothing is committed to the brokers' consumer groups.
//!
//! Settings: see `plugins/kafka/README.md` and [`settings::Settings`].

pub mod checkpoint;
pub mod client;
pub mod conn;
pub mod consumer;
pub mod error;
pub mod records;
pub mod rows;
pub mod settings;
pub mod types;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use moonlink_sdk::source::{PollResult, ResumePoint, Source, SourceEvent, TableDef};
use moonlink_sdk::Config;

use checkpoint::{Position, Sequencer};
use consumer::{Consumer, Item, Tp};
use error::{KafkaError, Result};
use rows::{Origin, TableRows};
use settings::{Format, OnError, SchemaSetting, Settings};

/// The running source.
pub struct KafkaSource {
    settings: Settings,
    consumer: Consumer,
    /// Tables by the source's name.
    tables: BTreeMap<String, TableRows>,
    /// Dead-letter tables by the table they serve.
    rejected: BTreeMap<String, TableRows>,
    /// Tables committed so far, each at its own position when ahead of the resumed checkpoint
    /// (else at it): their rows below these offsets are committed already.
    ahead: HashMap<String, Position>,
    sequencer: Sequencer,
    /// A record that stopped the source, reported by the next poll.
    stopped: Option<KafkaError>,
    /// The partition handed over last (round-robin).
    last_tp: Option<Tp>,
}

/// The dead-letter table of `table`.
pub fn rejected_name(table: &str) -> String {
    format!("{table}_rejected")
}

impl KafkaSource {
    /// Opens the source natively (the component export calls this too).
    pub fn start(config: &Config, resume: &ResumePoint) -> Result<(KafkaSource, Vec<TableDef>)> {
        let settings = Settings::parse(config)?;
        let mut resumed_texts: Vec<&str> = resume.checkpoint.iter().map(String::as_str).collect();
        resumed_texts.extend(resume.tables.iter().map(|(_, c)| c.as_str()));
        let sequencer = Sequencer::after(resumed_texts)?;
        let global = match &resume.checkpoint {
            Some(c) => Some(checkpoint::parse(c)?.1),
            None => None,
        };
        let mut ahead = HashMap::new();
        for (table, c) in &resume.tables {
            ahead.insert(table.clone(), checkpoint::parse(c)?.1);
        }
        // Where every partition resumes: the acknowledged checkpoint, or the position of a
        // table ahead when there is none (its offsets are past what was acknowledged, and
        // other tables' rows below them are skipped... so start at the lowest known).
        let mut start = global.clone().unwrap_or_default();
        if global.is_none() {
            for p in ahead.values() {
                for (topic, parts) in &p.offsets {
                    for (partition, offset) in parts {
                        let e = start.offsets.entry(topic.clone()).or_default();
                        let v = e.entry(*partition).or_insert(*offset);
                        *v = (*v).min(*offset);
                    }
                }
            }
        }
        let fresh = global.is_none() && ahead.is_empty();
        let mut tables = BTreeMap::new();
        let mut rejected = BTreeMap::new();
        for t in &settings.topics {
            if tables.contains_key(&t.table) {
                continue;
            }
            let table = match settings.format {
                Format::Raw => {
                    TableRows::new(&t.table, rows::raw_fields(), vec![], false, Format::Raw)
                }
                Format::Json => {
                    let key = settings.primary_key.clone();
                    match settings.schemas.get(&t.table) {
                        Some(SchemaSetting::Declared(fields)) => {
                            let mut fields = fields.clone();
                            for f in &mut fields {
                                if key.contains(&f.name) {
                                    f.nullable = false;
                                }
                            }
                            TableRows::new(&t.table, fields, key, false, Format::Json)
                        }
                        _ => {
                            // The columns known at the resumed position (the newest of the
                            // table's own checkpoint and the acknowledged one).
                            let known = ahead
                                .get(&t.table)
                                .or(global.as_ref())
                                .and_then(|p| p.schemas.get(&t.table));
                            let fields = match known {
                                Some(pairs) => rows::fields_from(pairs, &key)
                                    .map_err(KafkaError::Checkpoint)?,
                                None => Vec::new(),
                            };
                            TableRows::new(&t.table, fields, key, true, Format::Json)
                        }
                    }
                }
            };
            if settings.on_error == OnError::DeadLetter {
                let name = rejected_name(&t.table);
                rejected.insert(
                    t.table.clone(),
                    TableRows::new(&name, rows::rejected_fields(), vec![], false, Format::Raw),
                );
            }
            tables.insert(t.table.clone(), table);
        }
        let consumer = Consumer::new(&settings, start, fresh);
        let mut source = KafkaSource {
            settings,
            consumer,
            tables,
            rejected,
            ahead,
            sequencer,
            stopped: None,
            last_tp: None,
        };
        source.consumer.refresh()?;
        source.infer_first_columns()?;
        let mut defs: Vec<TableDef> = source.tables.values().map(TableRows::def).collect();
        defs.extend(source.rejected.values().map(TableRows::def));
        moonlink_sdk::info!(
            "reading {} topic(s), {} partition(s) from {}",
            source.settings.topics.len(),
            source.consumer.partition_count(),
            source.settings.bootstrap.join(", ")
        );
        Ok((source, defs))
    }

    /// Inferred tables with no columns yet learn them from the first records (fetched here
    /// and kept for the first poll): a table cannot be created without columns.
    fn infer_first_columns(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.settings.request_timeout.min(Duration::from_secs(2));
        loop {
            let waiting: Vec<String> = self
                .tables
                .values()
                .filter(|t| !t.ready())
                .map(|t| t.name.clone())
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            self.consumer.fetch(Duration::from_millis(200))?;
            let mut scratch = Vec::new();
            for (topic, key, value) in self.consumer.queued_records() {
                let Some(table) = self.settings.table_of(&topic).map(str::to_string) else {
                    continue;
                };
                if let Some(t) = self.tables.get_mut(&table) {
                    if !t.ready() {
                        t.learn(key.as_deref(), value.as_deref(), &mut scratch);
                    }
                }
            }
            if Instant::now() >= deadline && self.tables.values().any(|t| !t.ready()) {
                return Err(KafkaError::Config(format!(
                    "schema = \"infer\": no record yet to infer the columns of {} from (every \
                     key column must appear in a record); the source retries, or declare \
                     `schema`",
                    waiting.join(", ")
                )));
            }
        }
    }

    /// One poll: rows from queued and fetched records, up to `max_rows`, for at most
    /// `timeout`.
    pub fn poll_once(&mut self, max_rows: usize, timeout: Duration) -> Result<PollResult> {
        if let Some(e) = self.stopped.take() {
            let message = e.to_string();
            self.stopped = Some(KafkaError::Config(message.clone()));
            return Err(e);
        }
        let deadline = Instant::now() + timeout;
        let limit = max_rows.min(self.settings.max_poll_records).max(1);
        match self.consumer.refresh() {
            Ok(()) => {}
            Err(e @ KafkaError::UnknownTopic { .. }) => return Err(e),
            Err(e) => moonlink_sdk::warn!("cannot read metadata: {e}; retrying"),
        }
        let before = self.consumer.position();
        let mut events = Vec::new();
        let mut rows = 0usize;
        loop {
            while rows < limit && self.stopped.is_none() {
                let Some((tp, item)) = self.consumer.next_item(self.last_tp.as_ref()) else {
                    break;
                };
                self.last_tp = Some(tp.clone());
                match self.take(&tp, item, &mut events) {
                    Ok(added) => rows += added,
                    Err(e) if rows == 0 && events.is_empty() => return Err(e),
                    // The rows before it land; the next poll reports it.
                    Err(e) => self.stopped = Some(e),
                }
            }
            let now = Instant::now();
            if rows >= limit || self.stopped.is_some() || now >= deadline {
                break;
            }
            let wait = if rows > 0 {
                Duration::ZERO
            } else {
                deadline - now
            };
            self.consumer.fetch(wait)?;
            if rows > 0 && !self.consumer.has_queued() {
                break;
            }
        }
        for t in self.tables.values_mut().chain(self.rejected.values_mut()) {
            t.flush(&mut events);
        }
        let after = self.consumer.position();
        if events.is_empty() && after == before {
            return Ok(PollResult::batches(vec![], None, false));
        }
        let position = Position {
            offsets: after,
            schemas: self
                .tables
                .values()
                .filter(|t| t.infer && t.ready())
                .map(|t| (t.name.clone(), rows::describe_fields(&t.fields)))
                .collect(),
        };
        Ok(PollResult {
            events,
            checkpoint: Some(self.sequencer.next(&position)),
            finished: false,
        })
    }

    /// Hands over one item: the rows it makes (0 or 1). A record that cannot be used is
    /// refused (the error) or sent to the dead-letter table.
    fn take(&mut self, tp: &Tp, item: Item, events: &mut Vec<SourceEvent>) -> Result<usize> {
        let (topic, partition) = (tp.0.as_str(), tp.1);
        let record = match item {
            Item::Through(offset) => {
                self.consumer.advance(tp, offset);
                return Ok(0);
            }
            Item::Bad(offset, reason) => {
                self.consumer.unread(tp, Item::Bad(offset, reason.clone()));
                return Err(KafkaError::Record {
                    topic: topic.to_string(),
                    partition,
                    offset,
                    reason: format!("record batch does not decode: {reason}"),
                });
            }
            Item::Record(r) => r,
        };
        if self
            .consumer
            .next_offset(tp)
            .is_some_and(|n| record.offset < n)
        {
            return Ok(0);
        }
        let Some(table_name) = self.settings.table_of(topic).map(str::to_string) else {
            self.consumer.advance(tp, record.offset + 1);
            return Ok(0);
        };
        let committed = |table: &str| {
            self.ahead
                .get(table)
                .and_then(|p| p.offset(topic, partition))
                .is_some_and(|o| record.offset < o)
        };
        let (skip_main, skip_rejected) = if self.ahead.is_empty() {
            (false, false)
        } else {
            (
                committed(&table_name),
                committed(&rejected_name(&table_name)),
            )
        };
        let origin = Origin { topic, partition };
        let mut added = 0;
        let Some(table) = self.tables.get_mut(&table_name) else {
            return Ok(0);
        };
        table.learn(record.key.as_deref(), record.value.as_deref(), events);
        let outcome = if skip_main {
            Ok(false)
        } else {
            table.add(origin, &record)
        };
        match outcome {
            Ok(wrote) => added += wrote as usize,
            Err(reason) => match self.rejected.get_mut(&table_name) {
                Some(dead) => {
                    if !skip_rejected {
                        dead.add_rejected(origin, &record, &reason).map_err(|e| {
                            KafkaError::Record {
                                topic: topic.to_string(),
                                partition,
                                offset: record.offset,
                                reason: e,
                            }
                        })?;
                        added += 1;
                    }
                }
                None => {
                    let offset = record.offset;
                    self.consumer.unread(tp, Item::Record(record));
                    return Err(KafkaError::Record {
                        topic: topic.to_string(),
                        partition,
                        offset,
                        reason,
                    });
                }
            },
        }
        self.consumer.advance(tp, record.offset + 1);
        Ok(added)
    }
}

impl Source for KafkaSource {
    fn open(config: Config, resume: ResumePoint) -> Result<(Self, Vec<TableDef>), String> {
        KafkaSource::start(&config, &resume).map_err(String::from)
    }

    fn poll(&mut self, max_rows: u32, timeout_ms: u32) -> Result<PollResult, String> {
        self.poll_once(max_rows as usize, Duration::from_millis(timeout_ms as u64))
            .map_err(String::from)
    }
}

#[cfg(feature = "component")]
moonlink_sdk::export_source!(KafkaSource);
