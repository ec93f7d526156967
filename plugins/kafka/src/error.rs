//! The plugin's one error type.

use thiserror::Error;

/// Everything that can go wrong between the broker and a change batch.
#[derive(Debug, Error)]
pub enum KafkaError {
    /// The settings are wrong.
    #[error("{0}")]
    Config(String),
    /// A broker could not be reached, or the connection broke.
    #[error("broker {broker}: {message}")]
    Io {
        /// `host:port` of the broker.
        broker: String,
        /// What happened.
        message: String,
    },
    /// A broker answered something that does not follow the protocol.
    #[error("broker {broker}: protocol error: {message}")]
    Protocol {
        /// `host:port` of the broker.
        broker: String,
        /// What was wrong.
        message: String,
    },
    /// A topic the settings name does not exist (or is not visible to us).
    #[error("topic '{topic}' does not exist on the cluster ({reason})")]
    UnknownTopic {
        /// The topic.
        topic: String,
        /// The broker's error.
        reason: String,
    },
    /// A record or record batch could not be decoded (and `on_error` is `refuse`).
    #[error("topic '{topic}' partition {partition} offset {offset}: {reason}")]
    Record {
        /// Where the record is.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset (the batch's first offset for a batch that does not decode).
        offset: i64,
        /// Why it cannot be used.
        reason: String,
    },
    /// A checkpoint the host handed back cannot be read.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}

impl From<KafkaError> for String {
    fn from(e: KafkaError) -> String {
        e.to_string()
    }
}

impl From<moonlink_sdk::ConfigError> for KafkaError {
    fn from(e: moonlink_sdk::ConfigError) -> Self {
        KafkaError::Config(e.0)
    }
}

/// Results of this crate.
pub type Result<T, E = KafkaError> = std::result::Result<T, E>;
