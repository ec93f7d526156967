//! The cluster as the plugin sees it: which broker leads which partition (Metadata), where a
//! partition starts and ends (ListOffsets), and one connection per broker for Fetch.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::conn::Connection;
use crate::error::{KafkaError, Result};

/// ListOffsets timestamps meaning "the first offset" and "the next offset to be written".
pub const EARLIEST: i64 = -2;
/// See [`EARLIEST`].
pub const LATEST: i64 = -1;

/// A topic's id (all zero when the broker does not send ids) and its partitions' leaders, or
/// the broker's reason it has none.
pub type TopicMeta = std::result::Result<([u8; 16], BTreeMap<i32, i32>), String>;

/// A partition to fetch from: topic, partition, offset.
#[derive(Debug, Clone)]
pub struct FetchTarget {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The next offset wanted.
    pub offset: i64,
}

/// Connections to a cluster's brokers.
pub struct Cluster {
    bootstrap: Vec<String>,
    /// Broker id → `host:port`, from the last metadata.
    brokers: HashMap<i32, String>,
    conns: HashMap<i32, Connection>,
    /// The connection metadata is asked on (any broker).
    meta: Option<Connection>,
    timeout: Duration,
    max_response: usize,
}

fn broker_error(name: &str, code: i16) -> String {
    use kafka_protocol::error::ParseResponseErrorCode;
    match code.err() {
        Some(e) => format!("{e:?} (error {code})"),
        None => format!("{name} error {code}"),
    }
}

impl Cluster {
    /// A cluster reached through `bootstrap` (connections open lazily).
    pub fn new(bootstrap: Vec<String>, timeout: Duration, max_response: usize) -> Cluster {
        Cluster {
            bootstrap,
            brokers: HashMap::new(),
            conns: HashMap::new(),
            meta: None,
            timeout,
            max_response,
        }
    }

    fn meta_connection(&mut self) -> Result<&mut Connection> {
        if self.meta.is_none() {
            let mut candidates = self.bootstrap.clone();
            candidates.extend(self.brokers.values().cloned());
            let mut last = None;
            for peer in candidates {
                match Connection::connect(&peer, self.timeout, self.max_response) {
                    Ok(c) => {
                        self.meta = Some(c);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if self.meta.is_none() {
                return Err(last.unwrap_or_else(|| KafkaError::Config("no brokers".into())));
            }
        }
        self.meta
            .as_mut()
            .ok_or_else(|| KafkaError::Config("no brokers".into()))
    }

    /// The partitions of `topics` and their leaders (-1: none now). Learns the brokers.
    pub fn metadata(&mut self, topics: &[String]) -> Result<BTreeMap<String, TopicMeta>> {
        let request = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                    })
                    .collect(),
            ))
            .with_allow_auto_topic_creation(false);
        let timeout = self.timeout;
        let response = match self.meta_connection()?.send(request, Some(timeout)) {
            Ok(r) => r,
            Err(e) => {
                self.meta = None;
                return Err(e);
            }
        };
        self.brokers = response
            .brokers
            .iter()
            .map(|b| {
                let host = b.host.as_str();
                let addr = if host.contains(':') {
                    format!("[{host}]:{}", b.port)
                } else {
                    format!("{host}:{}", b.port)
                };
                (b.node_id.0, addr)
            })
            .collect();
        let mut out = BTreeMap::new();
        for t in response.topics {
            let Some(name) = t.name.map(|n| n.0.as_str().to_string()) else {
                continue;
            };
            let meta = if t.error_code != 0 {
                Err(broker_error("metadata", t.error_code))
            } else {
                Ok((
                    *t.topic_id.as_bytes(),
                    t.partitions
                        .iter()
                        .map(|p| (p.partition_index, p.leader_id.0))
                        .collect(),
                ))
            };
            out.insert(name, meta);
        }
        Ok(out)
    }

    fn broker(&mut self, id: i32) -> Result<&mut Connection> {
        if !self.conns.contains_key(&id) {
            let peer = self
                .brokers
                .get(&id)
                .cloned()
                .ok_or_else(|| KafkaError::Io {
                    broker: format!("id {id}"),
                    message: "not in the cluster's metadata".into(),
                })?;
            let conn = Connection::connect(&peer, self.timeout, self.max_response)?;
            self.conns.insert(id, conn);
        }
        self.conns.get_mut(&id).ok_or_else(|| KafkaError::Io {
            broker: format!("id {id}"),
            message: "no connection".into(),
        })
    }

    /// Forgets a broker's connection (it broke, or leads nothing we read any more).
    pub fn disconnect(&mut self, id: i32) {
        self.conns.remove(&id);
        self.meta = None;
    }

    /// The address of a broker, for messages.
    pub fn address(&self, id: i32) -> String {
        self.brokers
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("broker id {id}"))
    }

    /// The offset at `timestamp` ([`EARLIEST`] or [`LATEST`]) of partitions led by `leader`:
    /// per partition, the offset or the broker's error.
    pub fn list_offsets(
        &mut self,
        leader: i32,
        topic: &str,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<Vec<(i32, std::result::Result<i64, String>)>> {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_timeout_ms(self.timeout.as_millis() as i32)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(*p)
                                .with_timestamp(timestamp)
                        })
                        .collect(),
                )]);
        let timeout = self.timeout;
        let response = self.with_broker(leader, |c| c.send(request, Some(timeout)))?;
        Ok(response
            .topics
            .into_iter()
            .flat_map(|t| t.partitions)
            .map(|p| {
                let r = if p.error_code == 0 {
                    Ok(p.offset)
                } else {
                    Err(broker_error("list offsets", p.error_code))
                };
                (p.partition_index, r)
            })
            .collect())
    }

    /// Fetches from the partitions `leader` leads, waiting at most `max_wait` for data. Topics
    /// are named by id (Fetch v13) when every one has a known id, so a topic deleted and
    /// created again answers `UNKNOWN_TOPIC_ID` instead of the new topic's records; the
    /// response's topics are named again either way.
    pub fn fetch(
        &mut self,
        leader: i32,
        targets: &[FetchTarget],
        ids: &BTreeMap<String, [u8; 16]>,
        max_wait: Duration,
        max_bytes: usize,
        partition_max_bytes: usize,
    ) -> Result<FetchResponse> {
        let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
        for t in targets {
            topics.entry(&t.topic).or_default().push(
                FetchPartition::default()
                    .with_partition(t.partition)
                    .with_fetch_offset(t.offset)
                    .with_partition_max_bytes(partition_max_bytes as i32),
            );
        }
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait.as_millis() as i32)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes as i32)
            .with_isolation_level(0)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(topic, partitions)| {
                        let id = ids.get(topic).copied().unwrap_or_default();
                        FetchTopic::default()
                            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                            .with_topic_id(uuid::Uuid::from_bytes(id))
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        let wait = self.timeout + max_wait;
        let by_id = request.topics.iter().all(|t| !t.topic_id.is_nil());
        let mut response = self.with_broker(leader, |c| {
            let version = c.version(ApiKey::Fetch);
            let version = if by_id { version } else { version.min(12) };
            c.send_at(request, version, Some(wait))
        })?;
        for t in &mut response.responses {
            if !t.topic_id.is_nil() {
                let id = *t.topic_id.as_bytes();
                if let Some((name, _)) = ids.iter().find(|(_, v)| **v == id) {
                    t.topic = TopicName(StrBytes::from_string(name.clone()));
                }
            }
        }
        Ok(response)
    }

    /// Runs `call` on the leader's connection; a failed call drops the connection.
    fn with_broker<T>(
        &mut self,
        leader: i32,
        call: impl FnOnce(&mut Connection) -> Result<T>,
    ) -> Result<T> {
        let result = call(self.broker(leader)?);
        if result.is_err() {
            self.conns.remove(&leader);
        }
        result
    }
}
