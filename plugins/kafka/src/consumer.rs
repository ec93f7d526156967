//! Partition positions and the fetch loop: which partitions exist and who leads them
//! (refreshed on a timer and whenever a broker says the metadata is stale), where each one
//! resumes, and the records fetched but not yet turned into rows.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use kafka_protocol::records::Record;

use crate::checkpoint::Position;
use crate::client::{Cluster, FetchTarget, EARLIEST, LATEST};
use crate::error::{KafkaError, Result};
use crate::records::decode_batches;
use crate::settings::Settings;

/// A topic and partition.
pub type Tp = (String, i32);

/// What the fetch loop hands over, per partition, in offset order.
#[derive(Debug)]
pub enum Item {
    /// A record.
    Record(Record),
    /// Nothing left below this offset (the end of a batch: control records and records
    /// removed by compaction are skipped this way).
    Through(i64),
    /// A batch that does not decode, at its base offset.
    Bad(i64, String),
}

#[derive(Debug)]
struct PartitionState {
    /// The next offset to hand over; `None` until ListOffsets said where to start.
    next: Option<i64>,
    /// Where to start when `next` is unknown ([`EARLIEST`] or [`LATEST`]).
    start_at: i64,
    /// The leading broker (-1: none known).
    leader: i32,
    /// The next offset to fetch (past what is queued).
    fetch_from: i64,
    /// Fetched, not yet handed over.
    queue: VecDeque<Item>,
}

/// The partitions of the configured topics and their fetched records.
pub struct Consumer {
    cluster: Cluster,
    topics: Vec<String>,
    partitions: BTreeMap<Tp, PartitionState>,
    /// Where the source resumes (offsets of partitions it already knew).
    resumed: Position,
    /// Nothing was ever checkpointed and metadata not read yet: partitions start per `start`.
    fresh: bool,
    start_earliest: bool,
    last_metadata: Option<Instant>,
    stale: bool,
    refresh_every: Duration,
    fetch_max_bytes: usize,
    partition_max_bytes: usize,
    /// Topic ids from metadata (a changed id: the topic was recreated).
    topic_ids: BTreeMap<String, [u8; 16]>,
    /// Brokers that failed recently: their address and why (logged once per failure spell).
    failing: BTreeMap<i32, String>,
}

impl Consumer {
    /// A consumer of `settings`' topics, resuming at `resumed` (`fresh`: no checkpoint yet).
    pub fn new(settings: &Settings, resumed: Position, fresh: bool) -> Consumer {
        Consumer {
            cluster: Cluster::new(
                settings.bootstrap.clone(),
                settings.request_timeout,
                settings.fetch_max_bytes + (16 << 20),
            ),
            topics: settings.topics.iter().map(|t| t.topic.clone()).collect(),
            partitions: BTreeMap::new(),
            resumed,
            fresh,
            start_earliest: settings.start_earliest,
            last_metadata: None,
            stale: true,
            refresh_every: settings.metadata_refresh,
            fetch_max_bytes: settings.fetch_max_bytes,
            partition_max_bytes: settings.partition_max_bytes,
            failing: BTreeMap::new(),
            topic_ids: BTreeMap::new(),
        }
    }

    /// The next offset of every partition whose start is known, for the checkpoint.
    /// Partitions whose start is not resolved yet keep the resumed offset (if any).
    pub fn position(&self) -> BTreeMap<String, BTreeMap<i32, i64>> {
        let mut out = self.resumed.offsets.clone();
        for ((topic, partition), state) in &self.partitions {
            if let Some(next) = state.next {
                out.entry(topic.clone())
                    .or_default()
                    .insert(*partition, next);
            }
        }
        out
    }

    /// Marks the partition's items before `offset` as handed over.
    pub fn advance(&mut self, tp: &Tp, offset: i64) {
        if let Some(state) = self.partitions.get_mut(tp) {
            state.next = Some(state.next.map_or(offset, |n| n.max(offset)));
        }
    }

    /// The next item of some partition, round-robin by partition order; `None` when every
    /// queue is empty.
    pub fn next_item(&mut self, after: Option<&Tp>) -> Option<(Tp, Item)> {
        let keys: Vec<Tp> = self
            .partitions
            .iter()
            .filter(|(_, s)| !s.queue.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        let pick = after
            .and_then(|a| keys.iter().find(|k| *k > a))
            .or_else(|| keys.first())?
            .clone();
        let item = self.partitions.get_mut(&pick)?.queue.pop_front()?;
        Some((pick, item))
    }

    /// Puts an item back at the front of its queue (the poll ended before it).
    pub fn unread(&mut self, tp: &Tp, item: Item) {
        if let Some(state) = self.partitions.get_mut(tp) {
            state.queue.push_front(item);
        }
    }

    /// The next offset of a partition, once known.
    pub fn next_offset(&self, tp: &Tp) -> Option<i64> {
        self.partitions.get(tp).and_then(|s| s.next)
    }

    /// Reads metadata when it is due: new partitions are added (resumed, else per `start`,
    /// else from the earliest offset for partitions created after the first start), leaders
    /// updated. A topic that does not exist is an error; a broker that cannot be reached is
    /// logged and retried.
    pub fn refresh(&mut self) -> Result<()> {
        let due = self.stale
            || self
                .last_metadata
                .is_none_or(|t| t.elapsed() >= self.refresh_every);
        if !due {
            return Ok(());
        }
        let meta = self.cluster.metadata(&self.topics)?;
        self.last_metadata = Some(Instant::now());
        self.stale = false;
        for topic in &self.topics.clone() {
            let partitions = match meta.get(topic) {
                None => {
                    return Err(KafkaError::UnknownTopic {
                        topic: topic.clone(),
                        reason: "not in the metadata".into(),
                    })
                }
                Some(Err(reason)) if reason.contains("UnknownTopicOrPartition") => {
                    return Err(KafkaError::UnknownTopic {
                        topic: topic.clone(),
                        reason: reason.clone(),
                    })
                }
                Some(Err(reason)) => {
                    moonlink_sdk::warn!("topic '{topic}': metadata error {reason}; retrying");
                    self.stale = true;
                    continue;
                }
                Some(Ok((id, p))) => {
                    self.check_topic_id(topic, *id);
                    p
                }
            };
            for (&partition, &leader) in partitions {
                let tp = (topic.clone(), partition);
                if leader < 0 {
                    self.stale = true;
                }
                match self.partitions.get_mut(&tp) {
                    Some(state) => state.leader = leader,
                    None => {
                        let next = self.resumed.offset(topic, partition);
                        let start_at = if self.fresh && !self.start_earliest {
                            LATEST
                        } else {
                            EARLIEST
                        };
                        if next.is_none() && !self.fresh {
                            moonlink_sdk::info!(
                                "new partition {topic}/{partition}: reading from its first offset"
                            );
                        }
                        self.partitions.insert(
                            tp,
                            PartitionState {
                                next,
                                start_at,
                                leader,
                                fetch_from: next.unwrap_or(0),
                                queue: VecDeque::new(),
                            },
                        );
                    }
                }
            }
        }
        // Partitions found from now on were created while the source ran: from their start.
        self.fresh = false;
        self.resolve_starts()
    }

    /// A topic whose id changed was deleted and created again: its offsets name other
    /// records now, so every partition starts over at its earliest offset.
    fn check_topic_id(&mut self, topic: &str, id: [u8; 16]) {
        if id == [0; 16] {
            return;
        }
        let known = self.topic_ids.insert(topic.to_string(), id);
        if known.is_none_or(|k| k == id) {
            return;
        }
        moonlink_sdk::warn!(
            "topic '{topic}' was deleted and created again (its id changed): reading it from \
             the earliest offset of every partition"
        );
        self.resumed.offsets.remove(topic);
        for ((t, _), state) in self.partitions.iter_mut() {
            if t == topic {
                state.queue.clear();
                state.next = None;
                state.start_at = EARLIEST;
            }
        }
    }

    /// Asks the leaders where partitions without a position start.
    fn resolve_starts(&mut self) -> Result<()> {
        let mut wanted: BTreeMap<(i32, String, i64), Vec<i32>> = BTreeMap::new();
        for ((topic, partition), s) in &self.partitions {
            if s.next.is_none() && s.leader >= 0 {
                wanted
                    .entry((s.leader, topic.clone(), s.start_at))
                    .or_default()
                    .push(*partition);
            }
        }
        for ((leader, topic, at), partitions) in wanted {
            match self.cluster.list_offsets(leader, &topic, &partitions, at) {
                Ok(found) => {
                    for (partition, offset) in found {
                        let tp = (topic.clone(), partition);
                        match (offset, self.partitions.get_mut(&tp)) {
                            (Ok(offset), Some(s)) => {
                                s.next = Some(offset);
                                s.fetch_from = offset;
                            }
                            (Err(e), _) => {
                                moonlink_sdk::warn!(
                                    "{topic}/{partition}: cannot list offsets: {e}"
                                );
                                self.stale = true;
                            }
                            _ => {}
                        }
                    }
                }
                Err(e) => self.broker_failed(leader, e),
            }
        }
        Ok(())
    }

    fn broker_failed(&mut self, leader: i32, e: KafkaError) {
        if !self.failing.contains_key(&leader) {
            moonlink_sdk::warn!("{e}; retrying after a metadata refresh");
        }
        self.failing.insert(leader, e.to_string());
        self.cluster.disconnect(leader);
        self.stale = true;
    }

    /// The topic, key and value of every queued record (schema inference looks ahead).
    pub fn queued_records(&self) -> Vec<(String, Option<bytes::Bytes>, Option<bytes::Bytes>)> {
        self.partitions
            .iter()
            .flat_map(|((topic, _), s)| {
                s.queue.iter().filter_map(move |item| match item {
                    Item::Record(r) => Some((topic.clone(), r.key.clone(), r.value.clone())),
                    _ => None,
                })
            })
            .collect()
    }

    /// Whether some partition has items queued.
    pub fn has_queued(&self) -> bool {
        self.partitions.values().any(|s| !s.queue.is_empty())
    }

    /// Fetches once from every leader of partitions with empty queues, waiting at most
    /// `wait` in all. Errors that metadata can cure (a moved leader, a broker gone) only
    /// mark the metadata stale; `OFFSET_OUT_OF_RANGE` moves the partition to its earliest
    /// offset (the records it had were deleted by retention), with a warning.
    pub fn fetch(&mut self, wait: Duration) -> Result<()> {
        let mut by_leader: BTreeMap<i32, Vec<FetchTarget>> = BTreeMap::new();
        for ((topic, partition), s) in &self.partitions {
            if s.queue.is_empty() && s.next.is_some() && s.leader >= 0 {
                by_leader.entry(s.leader).or_default().push(FetchTarget {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: s.fetch_from,
                });
            }
        }
        if by_leader.is_empty() {
            std::thread::sleep(wait.min(Duration::from_millis(100)));
            return Ok(());
        }
        let share = wait / by_leader.len() as u32;
        let mut reset = Vec::new();
        for (leader, targets) in by_leader {
            let response = match self.cluster.fetch(
                leader,
                &targets,
                &self.topic_ids,
                share,
                self.fetch_max_bytes,
                self.partition_max_bytes,
            ) {
                Ok(r) => r,
                Err(e) => {
                    self.broker_failed(leader, e);
                    continue;
                }
            };
            if self.failing.remove(&leader).is_some() {
                moonlink_sdk::info!("broker {} answers again", self.cluster.address(leader));
            }
            for topic in response.responses {
                let name = topic.topic.0.as_str().to_string();
                for p in topic.partitions {
                    let tp = (name.clone(), p.partition_index);
                    let Some(state) = self.partitions.get_mut(&tp) else {
                        continue;
                    };
                    match p.error_code {
                        0 => {}
                        1 => {
                            reset.push((leader, tp));
                            continue;
                        }
                        code => {
                            use kafka_protocol::error::ParseResponseErrorCode;
                            moonlink_sdk::warn!(
                                "{}/{}: fetch error {:?} ({code}); refreshing metadata",
                                tp.0,
                                tp.1,
                                code.err()
                            );
                            self.stale = true;
                            continue;
                        }
                    }
                    let Some(records) = p.records else { continue };
                    let (batches, bad) =
                        decode_batches(records, self.fetch_max_bytes.max(64 << 20));
                    for batch in batches {
                        if batch.next_offset <= state.fetch_from {
                            continue;
                        }
                        for r in batch.records {
                            if r.offset >= state.fetch_from {
                                state.queue.push_back(Item::Record(r));
                            }
                        }
                        state.queue.push_back(Item::Through(batch.next_offset));
                        state.fetch_from = batch.next_offset;
                    }
                    if let Some(bad) = bad {
                        state
                            .queue
                            .push_back(Item::Bad(bad.offset.max(state.fetch_from), bad.reason));
                    }
                }
            }
        }
        for (leader, tp) in reset {
            let found = self.cluster.list_offsets(leader, &tp.0, &[tp.1], EARLIEST);
            match found.map(|v| v.into_iter().next()) {
                Ok(Some((_, Ok(earliest)))) => {
                    if let Some(s) = self.partitions.get_mut(&tp) {
                        moonlink_sdk::warn!(
                            "{}/{}: offset {} is out of range (deleted by retention, or the \
                             topic was recreated); continuing at the earliest offset {earliest}",
                            tp.0,
                            tp.1,
                            s.fetch_from
                        );
                        s.queue.clear();
                        s.next = Some(earliest);
                        s.fetch_from = earliest;
                    }
                }
                Ok(_) => self.stale = true,
                Err(e) => self.broker_failed(leader, e),
            }
        }
        Ok(())
    }

    /// Partitions known, for messages.
    pub fn partition_count(&self) -> usize {
        self.partitions.len()
    }

    /// Topics with at least one partition known.
    pub fn known_topics(&self) -> BTreeSet<String> {
        self.partitions.keys().map(|(t, _)| t.clone()).collect()
    }
}
