//! The dead-letter topic: where input a stage cannot process goes, with the reason, so
//! bad input never stops a stage and nothing is lost.
//!
//! A dead letter keeps the original key and bytes untouched; headers say where it came
//! from and why (names in [`headers`]). Stages with transactions send it through their
//! transactional producer (build the record with [`DeadLetterWriter::record`]), so the
//! dead letter commits together with the input offset.
//!
//! A dead letter must always fit in a record, or the input that caused it would stop
//! the stage: every retry would fail the same way. So the error message is cut to
//! [`MAX_ERROR_BYTES`] (it can quote the bad input, a field of hundreds of kilobytes),
//! and an input so large that it no longer fits with the headers beside it (the
//! producer's `message.max.bytes`) keeps as many of its first bytes as fit, with
//! [`headers::PAYLOAD_TRUNCATED`] giving its length; the whole record is still at its
//! source topic, partition and offset.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::kafka::DEFAULT_MAX_MESSAGE_BYTES;
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
    /// The error message (its first [`super::MAX_ERROR_BYTES`] bytes when longer).
    pub const ERROR: &str = "eventpipe.error";
    /// Set when the payload was too large to keep whole: its length in bytes (the
    /// payload holds its first bytes).
    pub const PAYLOAD_TRUNCATED: &str = "eventpipe.payload.truncated";
    /// Set when the key was too large to keep whole: its length in bytes.
    pub const KEY_TRUNCATED: &str = "eventpipe.key.truncated";
}

/// Longest error message a dead letter carries, in bytes.
pub const MAX_ERROR_BYTES: usize = 1_000;

/// `text` cut to at most `max` bytes at a character boundary, saying how long it was.
fn cut(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len()).into()
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
    max_message_bytes: usize,
}

impl DeadLetterWriter {
    /// A writer for `stage` into `topic` (`P.dead-letter`), for a producer with the
    /// default `message.max.bytes`.
    pub fn new(topic: impl Into<String>, stage: impl Into<String>) -> Self {
        DeadLetterWriter { topic: topic.into(), stage: stage.into(), max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES }
    }

    /// The same writer for a producer whose `message.max.bytes` is `max`.
    pub fn with_max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }

    /// The record for `letter`, to send with any producer (also a transactional one).
    /// It fits in `message.max.bytes` whatever the letter holds (see the module docs).
    pub fn record<'a>(&'a self, letter: &'a DeadLetter) -> FutureRecord<'a, [u8], [u8]> {
        let partition = letter.source_partition.to_string();
        let offset = letter.source_offset.to_string();
        let error = cut(&letter.error, MAX_ERROR_BYTES);
        let mut list: Vec<(&str, &[u8])> = vec![
            (headers::SOURCE_TOPIC, letter.source_topic.as_bytes()),
            (headers::SOURCE_PARTITION, partition.as_bytes()),
            (headers::SOURCE_OFFSET, offset.as_bytes()),
            (headers::STAGE, self.stage.as_bytes()),
            (headers::REASON, letter.reason.as_bytes()),
            (headers::ERROR, error.as_bytes()),
        ];
        if let Some(tp) = &letter.traceparent {
            list.push((TRACEPARENT, tp.as_bytes()));
        }
        // librdkafka counts key, payload and serialized headers (a few bytes of lengths
        // each, allowed for generously) against message.max.bytes; the two headers that
        // may be added below are allowed for too.
        let header_bytes = |list: &[(&str, &[u8])]| list.iter().map(|(k, v)| k.len() + v.len() + 16).sum::<usize>();
        let mut room = self.max_message_bytes.saturating_sub(header_bytes(&list) + 2 * 64);
        let mut key = letter.key.as_deref();
        let mut payload = letter.payload.as_deref();
        let (key_len, payload_len) = (key.map_or(0, <[u8]>::len), payload.map_or(0, <[u8]>::len));
        let (key_total, payload_total) = (key_len.to_string(), payload_len.to_string());
        if key_len > room / 2 && key_len + payload_len > room {
            key = key.map(|k| &k[..room / 2]);
            list.push((headers::KEY_TRUNCATED, key_total.as_bytes()));
        }
        room -= key.map_or(0, <[u8]>::len);
        if payload_len > room {
            payload = payload.map(|p| &p[..room]);
            list.push((headers::PAYLOAD_TRUNCATED, payload_total.as_bytes()));
        }
        let h = list.iter().fold(OwnedHeaders::new_with_capacity(list.len()), |h, (key, value)| {
            h.insert(Header { key, value: Some(*value) })
        });
        let mut record = FutureRecord::to(&self.topic).headers(h);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        record
    }

    /// Sends `letter` and waits for the acknowledgement.
    pub async fn send(&self, producer: &FutureProducer, letter: &DeadLetter) -> Result<(), KafkaError> {
        producer.send(self.record(letter), Duration::from_secs(30)).await.map(|_| ()).map_err(|(e, _)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Headers;

    fn letter(key: usize, payload: usize, error: &str) -> DeadLetter {
        DeadLetter {
            key: Some(vec![b'k'; key]),
            payload: Some(vec![b'p'; payload]),
            source_topic: "p.transactions".into(),
            source_partition: 3,
            source_offset: 12_345,
            reason: "schema_invalid".into(),
            error: error.into(),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        }
    }

    /// What librdkafka counts against message.max.bytes: key, payload, and each
    /// header's name and value with their varint lengths.
    fn size(record: &FutureRecord<'_, [u8], [u8]>) -> usize {
        let headers = record
            .headers
            .as_ref()
            .map_or(0, |h| h.iter().map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len) + 2 * 5).sum::<usize>());
        record.key.map_or(0, <[u8]>::len) + record.payload.map_or(0, <[u8]>::len) + headers
    }

    fn header<'a>(record: &'a FutureRecord<'_, [u8], [u8]>, name: &str) -> Option<&'a str> {
        let h = record.headers.as_ref()?.iter().find(|h| h.key == name)?;
        std::str::from_utf8(h.value?).ok()
    }

    #[test]
    fn an_ordinary_letter_is_written_whole() {
        let writer = DeadLetterWriter::new("p.dead-letter", "feature-processor");
        let letter = letter(8, 300, "expected ident at line 1 column 2");
        let record = writer.record(&letter);
        assert_eq!(record.payload, letter.payload.as_deref());
        assert_eq!(record.key, letter.key.as_deref());
        assert_eq!(header(&record, headers::ERROR), Some("expected ident at line 1 column 2"));
        assert_eq!(header(&record, headers::PAYLOAD_TRUNCATED), None);
        assert_eq!(header(&record, headers::KEY_TRUNCATED), None);
    }

    #[test]
    fn a_letter_too_large_for_a_record_is_cut_to_fit() {
        let writer = DeadLetterWriter::new("p.dead-letter", "feature-processor");
        // An error quoting 600 KB of bad input, about a 999 990-byte record.
        let error = format!("currency `{}é` is not an ISO 4217 code", "X".repeat(600_000));
        let letter = letter(8, 999_990, &error);
        let record = writer.record(&letter);
        assert!(size(&record) <= DEFAULT_MAX_MESSAGE_BYTES, "{} bytes", size(&record));
        assert_eq!(record.key, letter.key.as_deref(), "a short key is kept whole");
        let payload = record.payload.unwrap();
        assert!(payload.len() > 990_000 && letter.payload.as_ref().unwrap().starts_with(payload));
        assert_eq!(header(&record, headers::PAYLOAD_TRUNCATED), Some("999990"));
        let cut = header(&record, headers::ERROR).unwrap();
        assert!(cut.len() < MAX_ERROR_BYTES + 40 && cut.starts_with("currency `XXX"), "{cut}");
        assert!(cut.ends_with(&format!("… ({} bytes in all)", error.len())), "{cut}");
        assert_eq!(header(&record, headers::SOURCE_OFFSET), Some("12345"));

        // A key too large as well, and a smaller limit.
        let small = writer.clone().with_max_message_bytes(10_000);
        let letter = super::tests::letter(50_000, 50_000, "x");
        let record = small.record(&letter);
        assert!(size(&record) <= 10_000, "{} bytes", size(&record));
        assert_eq!(header(&record, headers::KEY_TRUNCATED), Some("50000"));
        assert_eq!(header(&record, headers::PAYLOAD_TRUNCATED), Some("50000"));
    }

    #[test]
    fn errors_are_cut_at_a_character_boundary() {
        // "é" is two bytes: 999 falls inside the 500th.
        let text = "é".repeat(600);
        let cut = cut(&text, 999);
        assert_eq!(cut, format!("{}… (1200 bytes in all)", "é".repeat(499)));
        assert_eq!(super::cut("short", 10), "short");
    }
}
