//! The dead-letter topic: where input a stage cannot process goes, with the reason, so
//! bad input never stops a stage and nothing is lost.
//!
//! A dead letter keeps the original key and bytes untouched; headers say where it came
//! from and why (names in [`headers`]). Stages with transactions send it through their
//! transactional producer (build the record with [`DeadLetterWriter::record`]), so the
//! dead letter commits together with the input offset.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::telemetry::TRACEPARENT;

/// Header names of a dead letter.
pub mod headers {
    /// Topic the record was read from.
    pub const SOURCE_TOPIC: &str = "eventpipe.source.topic";
    /// Partition it was read from.
    pub const SOURCE_PARTITION: &str = "eventpipe.source.partition";
    /// Offset it was read from.
    pub const SOURCE_OFFSET: &str = "eventpipe.source.offset";
    /// Stage that rejected it.
    pub const STAGE: &str = "eventpipe.stage";
    /// Short machine-readable reason: `malformed`, `schema_invalid`, `unknown_kind`, `late`, ...
    pub const REASON: &str = "eventpipe.reason";
    /// The full error message.
    pub const ERROR: &str = "eventpipe.error";
}

/// A record a stage rejected, with where it came from and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub reason: String,
    pub error: String,
    /// The input's `traceparent`, kept so the trace shows where the record ended.
    pub traceparent: Option<String>,
}

impl DeadLetter {
    /// A dead letter for consumed message `message`.
    pub fn from_message<M: Message>(message: &M, reason: &str, error: impl Into<String>) -> Self {
        let traceparent = message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == TRACEPARENT).and_then(|h| h.value))
            .map(|v| String::from_utf8_lossy(v).into_owned());
        DeadLetter {
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            source_topic: message.topic().to_owned(),
            source_partition: message.partition(),
            source_offset: message.offset(),
            reason: reason.to_owned(),
            error: error.into(),
            traceparent,
        }
    }
}

/// Writes dead letters of one stage to the pipeline's dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetterWriter {
    topic: String,
    stage: String,
}

impl DeadLetterWriter {
    /// A writer for `stage` into `topic` (`P.dead-letter`).
    pub fn new(topic: impl Into<String>, stage: impl Into<String>) -> Self {
        DeadLetterWriter { topic: topic.into(), stage: stage.into() }
    }

    /// The record for `letter`, to send with any producer (also a transactional one).
    pub fn record<'a>(&'a self, letter: &'a DeadLetter) -> FutureRecord<'a, [u8], [u8]> {
        let partition = letter.source_partition.to_string();
        let offset = letter.source_offset.to_string();
        let mut h = OwnedHeaders::new_with_capacity(7)
            .insert(Header { key: headers::SOURCE_TOPIC, value: Some(letter.source_topic.as_bytes()) })
            .insert(Header { key: headers::SOURCE_PARTITION, value: Some(partition.as_bytes()) })
            .insert(Header { key: headers::SOURCE_OFFSET, value: Some(offset.as_bytes()) })
            .insert(Header { key: headers::STAGE, value: Some(self.stage.as_bytes()) })
            .insert(Header { key: headers::REASON, value: Some(letter.reason.as_bytes()) })
            .insert(Header { key: headers::ERROR, value: Some(letter.error.as_bytes()) });
        if let Some(tp) = &letter.traceparent {
            h = h.insert(Header { key: TRACEPARENT, value: Some(tp.as_bytes()) });
        }
        let mut record = FutureRecord::to(&self.topic).headers(h);
        if let Some(key) = &letter.key {
            record = record.key(key.as_slice());
        }
        if let Some(payload) = &letter.payload {
            record = record.payload(payload.as_slice());
        }
        record
    }

    /// Sends `letter` and waits for the acknowledgement.
    pub async fn send(&self, producer: &FutureProducer, letter: &DeadLetter) -> Result<(), KafkaError> {
        producer.send(self.record(letter), Duration::from_secs(30)).await.map(|_| ()).map_err(|(e, _)| e)
    }
}
