//! The consume–transform–produce loop shared by the stateful stages (feature-processor,
//! intervention): consume the input topic, hand each record to a [`StatefulProcessor`],
//! produce its outputs, changelog records and dead letters, and commit the consumed
//! offsets — in one Kafka transaction per batch (exactly once), or flush-then-commit
//! (at least once).
//!
//! Runs on one thread of its own. Rebalance callbacks run inside `poll` on that thread:
//! on revocation the open batch is committed first (its offsets belong to this group
//! generation) and the revoked partitions' state is dropped; on assignment the new
//! partitions' state is rebuilt from the stage's compacted changelog topic before `poll`
//! can return any of their records, with `/readyz` false meanwhile. An aborted
//! transaction leaves the in-memory state ahead of Kafka, so the state of every assigned
//! partition is restored again and the consumer rewinds to the committed offsets, as
//! Kafka Streams does with a task closed dirty.
//!
//! At least once, a batch's offsets are committed once every record it produced is
//! acknowledged, but the loop does not stop to wait for that: it goes on with the next
//! batch while up to [`MAX_IN_FLIGHT`] earlier ones are on their way, and commits their
//! offsets in order as their acknowledgements arrive (as Kafka Connect commits the
//! offsets of acknowledged records). Revocation and shutdown wait for all of them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::dead_letter::{DeadLetter, DeadLetterWriter};
use crate::http::Readiness;
use crate::kafka::{flush, send_threaded, with_opaque};
use crate::stats::StageMetrics;
use crate::telemetry::{append_headers, continue_trace, trace_headers, TRACEPARENT};
use crate::topics::Topic;

/// Processing guarantee of a stateful stage (`processing_guarantee` in its section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Kafka transactions: outputs, changelog and input offsets commit together.
    ExactlyOnce,
    /// No transactions (for brokers without them): a batch's offsets are committed once
    /// its outputs are acknowledged; a crash can repeat outputs, with the same
    /// deterministic ids.
    AtLeastOnce,
}

/// How the loop batches and commits, and which topics it reads.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub guarantee: Guarantee,
    /// Commit at least this often while records flow (an open batch is also committed
    /// as soon as the input is caught up: no record within [`IDLE_POLL`]).
    pub commit_interval: Duration,
    /// Commit after this many input records.
    pub max_batch: usize,
    /// The input topic.
    pub input: Topic,
    /// The compacted topic the processor's state is written to and restored from.
    pub changelog: Topic,
}

/// Why an input record goes to dead-letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The dead-letter reason (`malformed`, `schema_invalid`, ...).
    pub reason: &'static str,
    /// The detail, for the dead-letter's error header.
    pub error: String,
}

impl Rejected {
    /// A rejection for `reason`.
    pub fn new(reason: &'static str, error: impl Into<String>) -> Self {
        Rejected { reason, error: error.into() }
    }
}

/// Dead-letter reasons every stage uses.
pub mod reasons {
    /// Not JSON, or no payload.
    pub const MALFORMED: &str = "malformed";
    /// JSON, but not a valid event of the input's type.
    pub const SCHEMA_INVALID: &str = "schema_invalid";
}

/// Decodes a JSON input record of type `T`: no payload or broken JSON is
/// [`reasons::MALFORMED`], JSON that is not a `T` is [`reasons::SCHEMA_INVALID`].
pub fn decode_json<T: serde::de::DeserializeOwned>(payload: Option<&[u8]>) -> Result<T, Rejected> {
    let payload = payload.ok_or_else(|| Rejected::new(reasons::MALFORMED, "record has no payload"))?;
    serde_json::from_slice(payload).map_err(|e| {
        let reason =
            if e.is_syntax() || e.is_eof() || e.is_io() { reasons::MALFORMED } else { reasons::SCHEMA_INVALID };
        Rejected::new(reason, e.to_string())
    })
}

/// The checks every keyed input event passes: a supported `schema_version`, a
/// customer id, and the record key equal to it (the partitioning the state relies on).
/// Failures are [`reasons::SCHEMA_INVALID`].
pub fn check_keyed_event(key: Option<&[u8]>, customer_id: &str, schema_version: u32) -> Result<(), Rejected> {
    let invalid = |message: String| Err(Rejected::new(reasons::SCHEMA_INVALID, message));
    if schema_version == 0 || schema_version > crate::events::SCHEMA_VERSION {
        let supported = crate::events::SCHEMA_VERSION;
        return invalid(format!("schema_version {schema_version} is not supported (1..={supported})"));
    }
    if customer_id.is_empty() {
        return invalid("customer_id is empty".into());
    }
    if key != Some(customer_id.as_bytes()) {
        return invalid(format!(
            "record key {:?} is not the customer_id {customer_id}",
            key.map(String::from_utf8_lossy)
        ));
    }
    Ok(())
}

/// One input record, as the processor sees it.
pub struct Input<'a> {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// The processing span, continuing the record's `traceparent`: for a processor's
    /// own events and child spans to join the record's trace (neither processor records
    /// any today; their outputs carry `trace`).
    pub span: &'a tracing::Span,
    /// That span's trace-context headers, to put on the records the input causes
    /// (computed once per span, see [`crate::telemetry::trace_headers`]).
    pub trace: &'a [(String, String)],
}

/// A record to produce, borrowed from the processor's own buffers: [`Outputs::send`]
/// copies it into the producer, so a record allocates nothing of its own. Outputs go
/// to the input's partition number on co-partitioned topics, so a customer's outputs
/// and state stay with the instance that owns it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputRef<'r> {
    pub topic: Topic,
    pub partition: i32,
    pub key: &'r str,
    /// The value; `None` is a tombstone (on a compacted topic: forget this key).
    pub payload: Option<&'r [u8]>,
    /// Record timestamp (the event time), in milliseconds.
    pub timestamp_ms: i64,
    /// Headers, e.g. the trace context of the input that caused the record.
    pub headers: &'r [(String, String)],
}

/// Where a processor puts the records it produces. Each is handed to the producer at
/// once, inside the open batch, so that a batch's outputs (its changelog can hold a
/// record per customer) are never all held in memory together.
pub struct Outputs<'a> {
    settings: &'a Settings,
    producer: &'a StageProducer,
    batch: &'a mut Batch,
    /// The first failure to produce; later outputs are dropped, as the batch fails.
    error: Option<KafkaError>,
}

impl<'a> Outputs<'a> {
    fn new(settings: &'a Settings, producer: &'a StageProducer, batch: &'a mut Batch) -> Self {
        Outputs { settings, producer, batch, error: None }
    }

    /// Produces a copy of `output` in the open batch.
    pub fn send(&mut self, output: OutputRef<'_>) {
        if self.error.is_some() {
            return;
        }
        let topic = self.settings.topic_name(output.topic);
        let mut record = BaseRecord::with_opaque_to(topic, self.batch.number)
            .partition(output.partition)
            .key(output.key)
            .timestamp(output.timestamp_ms);
        if let Some(payload) = output.payload {
            record = record.payload(payload);
        }
        if !output.headers.is_empty() {
            record = record.headers(append_headers(OwnedHeaders::new_with_capacity(1), output.headers));
        }
        match send_threaded(self.producer, record) {
            Ok(()) => self.batch.produced += 1,
            Err(e) => self.error = Some(e),
        }
    }

    /// Whether every output was handed over.
    fn finish(self) -> Result<(), KafkaError> {
        self.error.map_or(Ok(()), Err)
    }
}

/// The pure part of a stateful stage, driven by [`run`]. State is kept per input
/// partition so that partitions can be dropped and restored independently.
pub trait StatefulProcessor: Send + 'static {
    /// Processes one input record, pushing what it produces onto `out`; a rejected
    /// record goes to dead-letter and the stage goes on.
    fn process(&mut self, input: &Input<'_>, out: &mut Outputs<'_>) -> Result<(), Rejected>;

    /// The batch is about to commit: push what it still owes — decisions taken over the
    /// whole batch, and the changelog records of the state it changed.
    fn end_batch(&mut self, out: &mut Outputs<'_>);

    /// The open batch was aborted: forget what it changed (the state is restored next).
    fn abort_batch(&mut self);

    /// Loads one changelog record (`payload` `None` is a tombstone) into `partition`.
    fn restore(&mut self, partition: i32, key: Option<&[u8]>, payload: Option<&[u8]>) -> Result<(), String>;

    /// Drops the state of `partition` (revoked, or about to be restored).
    fn drop_partition(&mut self, partition: i32);

    /// How many entries (e.g. customers) `partition` holds, for the restore log.
    fn entries_in(&self, partition: i32) -> usize;
}

/// Why the loop stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("cannot create a Kafka client: {0}")]
    Client(KafkaError),
    #[error("cannot subscribe to {topic}: {source}")]
    Subscribe { topic: String, source: KafkaError },
    #[error("cannot initialise transactions for {id}: {source}")]
    InitTransactions { id: String, source: KafkaError },
    #[error("fatal Kafka error in {step}: {source}")]
    Fatal { step: &'static str, source: KafkaError },
    #[error("cannot restore state of partition {partition}: {message}")]
    Restore { partition: i32, message: String },
}

/// The loop's mutable state, shared with the rebalance callbacks (same thread; the
/// mutex is never contended).
struct Loop<P> {
    settings: Settings,
    config: StreamConfig,
    processor: P,
    producer: StageProducer,
    dead_letters: DeadLetterWriter,
    metrics: Arc<StageMetrics>,
    readiness: Readiness,
    batch: Batch,
    spans: Spans,
    /// At least once: committed batches whose outputs are not all acknowledged yet,
    /// oldest first; their offsets are committed when they are.
    in_flight: VecDeque<InFlight>,
    /// The number of the next at-least-once batch (from 1).
    next_batch: usize,
    /// Assigned partitions whose state is rebuilt: their records are processed.
    assigned: Vec<i32>,
    /// The rebuild of the other assigned partitions' state, if any (they are paused).
    restoring: Option<Restoration>,
    /// Records of partitions still being rebuilt that came anyway (fetched before the
    /// pause): the lowest offset per partition, sought back to when it resumes.
    skipped: BTreeMap<i32, i64>,
    /// An output the producer refused at once in the open batch (see
    /// [`Loop::note_refusal`]).
    refused_at_once: Option<KafkaError>,
    fatal: Option<StreamError>,
}

/// A rebuild of partitions' state from the changelog. The loop advances it between
/// polls of the group consumer, so the member stays in its group however long the
/// state takes to read (as Kafka Streams restores); its partitions stay paused, and
/// each resumes as soon as its own state is read to the end.
struct Restoration {
    restorer: BaseConsumer<QuietEof>,
    /// Partitions not yet read to their end.
    pending: Vec<i32>,
    /// The offset after the last record read, per partition: where a partition goes on
    /// when the restore consumer is assigned again (its position is lost then).
    next: BTreeMap<i32, i64>,
    records: u64,
    started: Instant,
    /// When the last record or partition end was read.
    progress: Instant,
}

/// The open batch.
#[derive(Default)]
struct Batch {
    /// Whether a transaction is open.
    open: bool,
    /// Next offset to consume, per input partition.
    offsets: BTreeMap<i32, i64>,
    /// When each input record was received (for latency).
    received: Vec<Instant>,
    /// Records produced in this batch.
    produced: u64,
    /// At least once, the batch's number, which its records carry to the delivery
    /// callback; 0 exactly once (the transaction's commit answers for its records).
    number: usize,
    started: Option<Instant>,
}

/// Trace-context headers (`traceparent`, `tracestate`), as name and value.
type TraceHeaders = Vec<(String, String)>;

/// The open batch's processing spans, one per incoming `traceparent` (empty key: records
/// without one), with the records each covered; they close when the batch ends.
#[derive(Default)]
struct Spans {
    /// Each span, the records it covered and its trace-context headers.
    spans: Vec<(tracing::Span, u64, TraceHeaders)>,
    /// Where each `traceparent`'s span is in `spans`.
    span_index: HashMap<Vec<u8>, usize>,
    /// The last record's `traceparent` and its span's index: runs of records share one,
    /// and comparing with it spares hashing the header for each record.
    last_span: Option<(Vec<u8>, usize)>,
}

impl Spans {
    /// The processing span for `message` (its index in `spans`; `None` when spans are
    /// not recorded): a child of the trace its `traceparent` header carries, shared by
    /// the batch's records from that trace.
    ///
    /// A producer stamps one trace context on a whole chunk of records, and a span per
    /// record cost more than processing the record (≈ 2 µs with the OpenTelemetry layer,
    /// against ≈ 1.5 µs for the feature-processor's core); per batch and trace, each
    /// output still continues its input's trace.
    fn span(&mut self, message: &BorrowedMessage<'_>) -> Option<(&tracing::Span, &[(String, String)])> {
        // Reading the headers makes librdkafka parse them: only worth it when the span
        // is recorded (a disabled span has no parent to set, nor context to pass on).
        if !tracing::enabled!(kind: tracing::metadata::Kind::SPAN, target: module_path!(), tracing::Level::INFO) {
            return None;
        }
        let headers = message.headers();
        let parent = headers.and_then(|h| h.iter().find(|h| h.key == TRACEPARENT)).and_then(|h| h.value);
        let key = parent.unwrap_or_default();
        let index = match &mut self.last_span {
            Some((last, index)) if last.as_slice() == key => *index,
            last => {
                let index = match self.span_index.get(key) {
                    Some(&index) => index,
                    None => {
                        let span = tracing::info_span!(
                            "process",
                            partition = message.partition(),
                            offset = message.offset(),
                            records = tracing::field::Empty
                        );
                        continue_trace(&span, headers);
                        let trace = trace_headers(&span);
                        self.spans.push((span, 0, trace));
                        self.span_index.insert(key.to_vec(), self.spans.len() - 1);
                        self.spans.len() - 1
                    }
                };
                let (last_key, last_index) = last.get_or_insert_with(|| (Vec::new(), 0));
                last_key.clear();
                last_key.extend_from_slice(key);
                *last_index = index;
                index
            }
        };
        let (span, records, trace) = &mut self.spans[index];
        *records += 1;
        Some((span, trace))
    }

    /// Closes the spans, each with the number of records it covered.
    fn close(&mut self) {
        for (span, records, _) in self.spans.drain(..) {
            span.record("records", records);
        }
        self.span_index.clear();
        self.last_span = None;
    }
}

/// An at-least-once batch whose outputs are on their way.
struct InFlight {
    number: usize,
    /// Its offsets, committed once all its `produced` records are acknowledged.
    offsets: BTreeMap<i32, i64>,
    received: Vec<Instant>,
    produced: u64,
}

/// The stage's producer. Its own thread serves the delivery reports, which are counted
/// per batch in its context: a record costs no future nor allocation of its own.
type StageProducer = ThreadedProducer<StageProducerContext>;

/// Counts the stage producer's delivery reports per at-least-once batch (each record
/// carries its batch's number as the delivery opaque) and wakes the loop when one
/// arrives.
#[derive(Default)]
struct StageProducerContext {
    acks: Mutex<Acks>,
    changed: Condvar,
}

#[derive(Default)]
struct Acks {
    /// Acknowledged records, per batch number.
    acked: HashMap<usize, u64>,
    /// The first failed delivery of each batch (at least once).
    failed: BTreeMap<usize, KafkaError>,
    /// The first delivery the broker refused for good (see [`refused_for_good`]), with
    /// its batch (0 exactly once: the open transaction's).
    refused: Option<(usize, KafkaError)>,
    /// Reports for batches before this one are dropped: they were abandoned.
    floor: usize,
}

impl ClientContext for StageProducerContext {}

impl ProducerContext for StageProducerContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: usize) {
        let mut acks = lock(&self.acks);
        if batch != 0 && batch < acks.floor {
            return;
        }
        if let Err((error, _)) = result {
            if refused_for_good(error) && acks.refused.is_none() {
                acks.refused = Some((batch, error.clone()));
            }
        }
        if batch == 0 {
            return;
        }
        match result {
            Ok(_) => *acks.acked.entry(batch).or_default() += 1,
            Err((error, _)) => {
                acks.failed.entry(batch).or_insert_with(|| error.clone());
            }
        }
        drop(acks);
        self.changed.notify_all();
    }
}

/// Whether the broker would refuse the record again: a rewind would only replay its
/// batch and fail on it once more, for ever. (Kafka Streams stops on these too, where a
/// passing failure — a timeout, a leader moving — retries the task.)
fn refused_for_good(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as Code;
    matches!(
        error,
        KafkaError::MessageProduction(
            Code::MessageSizeTooLarge
                | Code::MessageBatchTooLarge
                | Code::InvalidRecord
                | Code::InvalidTopic
                | Code::InvalidRequiredAcks
                | Code::TopicAuthorizationFailed
                | Code::UnsupportedForMessageFormat
                | Code::PolicyViolation
        )
    )
}

impl StageProducerContext {
    /// The first delivery the broker refused for good, of a batch not abandoned since.
    fn refused(&self) -> Option<KafkaError> {
        lock(&self.acks).refused.as_ref().map(|(_, e)| e.clone())
    }

    /// Whether all `expected` records of batch `batch` are acknowledged (then forgets
    /// it), waiting for them when `wait`; the error of one that failed.
    fn complete(&self, batch: usize, expected: u64, wait: bool) -> Result<bool, KafkaError> {
        let mut acks = lock(&self.acks);
        loop {
            if let Some(error) = acks.failed.get(&batch) {
                return Err(error.clone());
            }
            if acks.acked.get(&batch).copied().unwrap_or(0) >= expected {
                acks.acked.remove(&batch);
                return Ok(true);
            }
            if !wait {
                return Ok(false);
            }
            acks = self.changed.wait(acks).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Forgets the batches before `batch` (they are consumed again), and drops their
    /// reports still to come.
    fn abandon_before(&self, batch: usize) {
        let mut acks = lock(&self.acks);
        acks.acked.retain(|b, _| *b >= batch);
        acks.failed.retain(|b, _| *b >= batch);
        // Exactly once (batch 0) a refusal always stops the stage; it stays.
        if acks.refused.as_ref().is_some_and(|(b, _)| *b != 0 && *b < batch) {
            acks.refused = None;
        }
        acks.floor = batch;
    }
}

struct StageContext<P> {
    state: Arc<Mutex<Loop<P>>>,
    metrics: Arc<StageMetrics>,
    input: String,
}

impl<P: StatefulProcessor> ClientContext for StageContext<P> {
    /// Lag from librdkafka's statistics (every second, served inside `poll`): per
    /// assigned partition, the last stable offset (read_committed) minus the position.
    /// The watermarks come with the fetch responses, so no request to the broker is
    /// made on the processing thread.
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.input) else { return };
        let lag = topic
            .partitions
            .values()
            .filter(|p| p.partition >= 0 && p.desired && p.app_offset >= 0)
            .map(|p| {
                let end = if p.ls_offset >= 0 { p.ls_offset } else { p.hi_offset };
                (end - p.app_offset).max(0) as u64
            })
            .sum();
        self.metrics.set_lag(lag);
    }
}

impl<P: StatefulProcessor> ConsumerContext for StageContext<P> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut state = lock(&self.state);
            let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(?revoked, "partitions revoked; committing the open batch");
            if let Err(e) = state.commit_all(consumer) {
                state.fail_or_recover(consumer, e);
            }
            for p in &revoked {
                state.processor.drop_partition(*p);
                state.skipped.remove(p);
            }
            state.assigned.retain(|p| !revoked.contains(p));
            if let Some(r) = &mut state.restoring {
                // The restorer still reads them; their records are ignored from now on.
                r.pending.retain(|p| !revoked.contains(p));
            }
            state.finish_restore_if_done();
        }
    }

    /// The outcome of an asynchronous offset commit (at least once): a failed one is
    /// logged, and the next commit covers its offsets.
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(error) = result {
            let partitions: Vec<i32> = offsets.elements().iter().map(|e| e.partition()).collect();
            tracing::warn!(%error, ?partitions, "offset commit failed; the next commit covers these offsets");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut state = lock(&self.state);
            let assigned: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(?assigned, "partitions assigned; restoring their state");
            if tracing::enabled!(tracing::Level::DEBUG) {
                let committed = consumer.committed_offsets((*tpl).clone(), Duration::from_secs(5));
                tracing::debug!(?committed, "committed offsets at assignment");
            }
            if let Err(e) = state.begin_restore(consumer, &assigned) {
                state.fatal = Some(e);
            }
        }
    }
}

fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

type StageConsumer<P> = BaseConsumer<StageContext<P>>;

/// The restore consumer's context: reaching the end of a partition is what it waits
/// for, not an error worth logging.
struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || matches!(error, KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF));
        if !eof {
            tracing::error!(%error, reason, "restore consumer error");
        }
    }
}

impl ConsumerContext for QuietEof {}

impl<P: StatefulProcessor> Loop<P> {
    fn topic(&self, topic: Topic) -> &str {
        self.settings.topic_name(topic)
    }

    /// Handles one input record, received at `now`, inside the open batch.
    fn handle(&mut self, message: &BorrowedMessage<'_>, now: Instant) -> Result<(), KafkaError> {
        if !self.batch.open {
            if self.config.guarantee == Guarantee::ExactlyOnce {
                self.producer.begin_transaction()?;
            }
            self.batch.open = true;
            self.batch.started = Some(now);
            if self.config.guarantee == Guarantee::AtLeastOnce {
                self.batch.number = self.next_batch;
                self.next_batch += 1;
            }
        }
        self.batch.received.push(now);
        self.metrics.record_consumed(1);
        self.batch.offsets.insert(message.partition(), message.offset() + 1);

        let none = tracing::Span::none();
        let (span, trace) = self.spans.span(message).unwrap_or((&none, &[]));
        let input = Input {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key(),
            payload: message.payload(),
            span,
            trace,
        };
        let mut outputs = Outputs::new(&self.settings, &self.producer, &mut self.batch);
        let result = self.processor.process(&input, &mut outputs);
        outputs.finish().map_err(|e| self.note_refusal(e))?;
        if let Err(rejected) = result {
            tracing::debug!(reason = rejected.reason, error = %rejected.error, "dead-lettering input");
            self.metrics.record_dead_letter(rejected.reason);
            let letter = DeadLetter::from_message(message, rejected.reason, rejected.error);
            let record = with_opaque(self.dead_letters.record(&letter), self.batch.number);
            send_threaded(&self.producer, record).map_err(|e| self.note_refusal(e))?;
            self.batch.produced += 1;
        }
        Ok(())
    }

    /// How long `poll` may wait at `now`: the idle wait, cut short so an open batch is
    /// committed when its interval ends, not up to an idle wait later.
    fn poll_timeout(&self, now: Instant) -> Duration {
        // While state is being rebuilt, the loop comes back to it at once.
        if self.restoring.is_some() {
            return Duration::ZERO;
        }
        // Acknowledgements come within milliseconds: look for them that often.
        let idle = if self.in_flight.is_empty() { IDLE_POLL } else { ACK_POLL };
        match self.batch.started.filter(|_| self.batch.open) {
            Some(started) => idle.min((started + self.config.commit_interval).saturating_duration_since(now)),
            None => idle,
        }
    }

    /// Whether the open batch should be committed at `now`.
    fn due(&self, now: Instant) -> bool {
        self.batch.open
            && (self.batch.received.len() >= self.config.max_batch
                || self.batch.started.is_some_and(|s| now - s >= self.config.commit_interval))
    }

    /// Writes what the batch still owes and commits outputs and offsets together (at
    /// least once: hands the batch to those in flight, whose offsets are committed as
    /// their outputs are acknowledged).
    fn commit(&mut self, consumer: &StageConsumer<P>) -> Result<(), KafkaError> {
        if !self.batch.open {
            return Ok(());
        }
        let mut outputs = Outputs::new(&self.settings, &self.producer, &mut self.batch);
        self.processor.end_batch(&mut outputs);
        outputs.finish().map_err(|e| self.note_refusal(e))?;
        match self.config.guarantee {
            Guarantee::ExactlyOnce => {
                let group = consumer.group_metadata().ok_or(KafkaError::NoMessageReceived)?;
                let offsets = self.offsets(&self.batch.offsets)?;
                self.producer.send_offsets_to_transaction(&offsets, &group, Duration::from_secs(10))?;
                // Delivered first, so that the commit's own flush finds nothing left (see
                // `kafka::flush`).
                flush(&self.producer, Duration::from_secs(30))?;
                self.producer.commit_transaction(Duration::from_secs(30))?;
                tracing::debug!(offsets = ?self.batch.offsets, "transaction committed");
            }
            Guarantee::AtLeastOnce => {
                let batch = std::mem::take(&mut self.batch);
                self.in_flight.push_back(InFlight {
                    number: batch.number,
                    offsets: batch.offsets,
                    received: batch.received,
                    produced: batch.produced,
                });
                self.spans.close();
                return self.settle(consumer, MAX_IN_FLIGHT);
            }
        }
        self.metrics.record_produced(self.batch.produced);
        let now = Instant::now();
        self.metrics.record_latencies(self.batch.received.drain(..).map(|r| now - r));
        self.spans.close();
        self.batch = Batch::default();
        Ok(())
    }

    /// Commits the open batch and waits until every batch in flight is acknowledged
    /// and its offsets committed (before revocation, and at shutdown).
    fn commit_all(&mut self, consumer: &StageConsumer<P>) -> Result<(), KafkaError> {
        self.commit(consumer)?;
        self.settle(consumer, 0)
    }

    /// At least once: commits the offsets of the batches in flight whose outputs are all
    /// acknowledged, oldest first, waiting while more than `keep` are left. Offsets
    /// committed without waiting are committed asynchronously.
    fn settle(&mut self, consumer: &StageConsumer<P>, keep: usize) -> Result<(), KafkaError> {
        while let Some(front) = self.in_flight.front() {
            let wait = self.in_flight.len() > keep;
            if !self.producer.context().complete(front.number, front.produced, wait)? {
                return Ok(());
            }
            let done = self.in_flight.pop_front().expect("the front, just looked at");
            let offsets = self.offsets(&done.offsets)?;
            if offsets.count() > 0 {
                consumer.commit(&offsets, if wait { CommitMode::Sync } else { CommitMode::Async })?;
            }
            self.metrics.record_produced(done.produced);
            let now = Instant::now();
            self.metrics.record_latencies(done.received.into_iter().map(|r| now - r));
        }
        Ok(())
    }

    /// `offsets` of the input topic as a partition list.
    fn offsets(&self, offsets: &BTreeMap<i32, i64>) -> Result<TopicPartitionList, KafkaError> {
        let topic = self.topic(self.config.input);
        let mut list = TopicPartitionList::new();
        for (partition, offset) in offsets {
            list.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        Ok(list)
    }

    /// Notes an error producing a record at once. An output the producer refused (too
    /// large, no such partition) would be refused again after any rewind, so
    /// [`Self::fail_or_recover`] stops the stage on it, as Kafka Streams' default
    /// production exception handler does, rather than rebuild its state and fail on the
    /// same record for ever. (`State`: exactly once, the transaction refuses records
    /// until it is aborted, which is no refusal of the record.)
    fn note_refusal(&mut self, error: KafkaError) -> KafkaError {
        if matches!(error, KafkaError::MessageProduction(code) if code != RDKafkaErrorCode::State) {
            self.refused_at_once.get_or_insert_with(|| error.clone());
        }
        error
    }

    /// The output refused for good behind the batch's failure, if any: refused at once
    /// by the producer, or on delivery by the broker.
    fn refusal(&mut self) -> Option<StreamError> {
        if let Some(source) = self.refused_at_once.take() {
            return Some(StreamError::Fatal { step: "produce", source });
        }
        self.producer.context().refused().map(|source| StreamError::Fatal { step: "deliver", source })
    }

    /// After a failed batch: abort and rewind when the error allows it, else stop. A
    /// batch with an output refused for good (see [`Self::note_refusal`] and
    /// [`refused_for_good`]) stops the stage however it failed: replayed, it would fail
    /// the same way. The open batch is left to [`Self::take_fatal`], which abandons it.
    fn fail_or_recover(&mut self, consumer: &StageConsumer<P>, error: KafkaError) {
        if let Some(refused) = self.refusal() {
            tracing::error!(%refused, %error, "an output was refused; stopping without committing its batch");
            self.fatal = Some(refused);
            return;
        }
        let abortable = match &error {
            KafkaError::Transaction(e) => e.txn_requires_abort() && !e.is_fatal(),
            // Exactly once, a failed delivery makes the transaction refuse every record
            // until it is aborted.
            KafkaError::MessageProduction(RDKafkaErrorCode::State) => self.config.guarantee == Guarantee::ExactlyOnce,
            _ => self.config.guarantee == Guarantee::AtLeastOnce,
        };
        if !abortable {
            tracing::error!(%error, "fatal error committing the batch");
            self.fatal = Some(StreamError::Fatal { step: "commit", source: error });
            return;
        }
        tracing::warn!(%error, "batch failed; aborting, restoring state and rewinding to the committed offsets");
        if self.config.guarantee == Guarantee::ExactlyOnce {
            if let Err(e) = self.producer.abort_transaction(Duration::from_secs(30)) {
                self.fatal = Some(StreamError::Fatal { step: "abort", source: e });
                return;
            }
        }
        self.spans.close();
        self.batch = Batch::default();
        // The abort waited for the transaction's delivery reports: a refusal for good
        // may have come with them, after the error that failed the batch.
        if let Some(refused) = self.refusal() {
            tracing::error!(%refused, "an output was refused; stopping");
            self.fatal = Some(refused);
            return;
        }
        // Batches in flight are not committed: their inputs are consumed again.
        self.in_flight.clear();
        self.producer.context().abandon_before(self.next_batch);
        self.processor.abort_batch();
        // Every partition's state is rebuilt from the start, those still being rebuilt too.
        let mut partitions = self.assigned.clone();
        partitions.extend(self.restoring.take().map_or(Vec::new(), |r| r.pending));
        // Rewound here, paused by the rebuild (no poll comes in between).
        if let Err(e) = rewind(consumer, self.topic(self.config.input), &partitions) {
            self.fatal = Some(StreamError::Fatal { step: "rewind", source: e });
            return;
        }
        for p in &partitions {
            self.skipped.remove(p);
        }
        if let Err(e) = self.begin_restore(consumer, &partitions) {
            self.fatal = Some(e);
        }
    }

    /// Pauses (`true`) or resumes `partitions` of the input on `consumer`.
    fn pause(&self, consumer: &StageConsumer<P>, partitions: &[i32], pause: bool) -> Result<(), StreamError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let topic = self.topic(self.config.input);
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition(topic, p);
        }
        let result = if pause { consumer.pause(&tpl) } else { consumer.resume(&tpl) };
        result.map_err(|source| StreamError::Fatal { step: if pause { "pause" } else { "resume" }, source })
    }

    /// Starts rebuilding the state of `partitions` from the changelog (committed records
    /// only). They are paused until each is rebuilt, and `/readyz` is false until all
    /// are. A rebuild already running goes on where it is, with them added: with the
    /// cooperative protocol every rebalance of the group calls the assignment callback,
    /// most often with no partition for this member, and starting over at each would
    /// never end a large rebuild in a group whose members come and go.
    fn begin_restore(&mut self, consumer: &StageConsumer<P>, partitions: &[i32]) -> Result<(), StreamError> {
        let pending = self.restoring.as_ref().map_or(&[][..], |r| &r.pending[..]);
        let mut new: Vec<i32> = partitions.iter().copied().filter(|p| !pending.contains(p)).collect();
        new.sort_unstable();
        new.dedup();
        if new.is_empty() {
            if self.restoring.is_none() {
                self.readiness.set(true);
            }
            return Ok(());
        }
        self.readiness.set(false);
        self.assigned.retain(|p| !new.contains(p));
        self.pause(consumer, &new, true)?;
        for &p in &new {
            self.processor.drop_partition(p);
        }
        let topic = self.topic(self.config.changelog).to_owned();
        // The partitions already being read continue from their positions; the new
        // ones start from the beginning.
        let mut tpl = TopicPartitionList::new();
        let restore_error = |p: i32, e: KafkaError| StreamError::Restore { partition: p, message: e.to_string() };
        if let Some(r) = &self.restoring {
            for &p in &r.pending {
                let offset = r.next.get(&p).map_or(Offset::Beginning, |o| Offset::Offset(*o));
                tpl.add_partition_offset(&topic, p, offset).map_err(|e| restore_error(p, e))?;
            }
        }
        for &p in &new {
            tpl.add_partition_offset(&topic, p, Offset::Beginning).map_err(|e| restore_error(p, e))?;
        }
        let now = Instant::now();
        let r = match self.restoring.take() {
            Some(mut r) => {
                // A partition read before (then revoked) starts over: its state was dropped.
                for p in &new {
                    r.next.remove(p);
                }
                r.pending.extend(&new);
                r.pending.sort_unstable();
                r.progress = now;
                r
            }
            None => {
                let mut config = self.settings.kafka.consumer_config(
                    &format!("{}-restore", self.settings.instance),
                    &format!("{}.restore", self.settings.group_id),
                );
                config.set("enable.partition.eof", "true");
                let restorer: BaseConsumer<QuietEof> =
                    config.create_with_context(QuietEof).map_err(StreamError::Client)?;
                Restoration { restorer, pending: new, next: BTreeMap::new(), records: 0, started: now, progress: now }
            }
        };
        r.restorer.assign(&tpl).map_err(StreamError::Client)?;
        self.restoring = Some(r);
        Ok(())
    }

    /// Advances the rebuild for about `budget`; each partition read to its end resumes.
    fn restore_step(&mut self, consumer: &StageConsumer<P>, budget: Duration) -> Result<(), StreamError> {
        let Loop { restoring, processor, metrics, .. } = self;
        let Some(r) = restoring.as_mut() else { return Ok(()) };
        let until = Instant::now() + budget;
        let mut done = Vec::new();
        let read_before = r.records;
        while !r.pending.is_empty() {
            let now = Instant::now();
            if now >= until {
                break;
            }
            // A large state takes as long as it takes; only a rebuild that stops moving
            // (no record and no partition's end for RESTORE_STALL) is an error.
            if now - r.progress > RESTORE_STALL {
                let message = format!(
                    "no changelog record and no partition end for {} s ({} records read)",
                    RESTORE_STALL.as_secs(),
                    r.records
                );
                return Err(StreamError::Restore { partition: r.pending[0], message });
            }
            match r.restorer.poll(until - now) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    if r.pending.contains(&p) {
                        r.pending.retain(|x| *x != p);
                        done.push(p);
                    }
                    r.progress = Instant::now();
                }
                Some(Err(e)) => tracing::warn!(error = %e, "restore consumer error"),
                Some(Ok(m)) => {
                    r.next.insert(m.partition(), m.offset() + 1);
                    // A partition revoked meanwhile is still read, and ignored.
                    if r.pending.contains(&m.partition()) {
                        match processor.restore(m.partition(), m.key(), m.payload()) {
                            Ok(()) => r.records += 1,
                            Err(error) => {
                                tracing::warn!(partition = m.partition(), offset = m.offset(), %error, "skipping unreadable changelog record")
                            }
                        }
                    }
                    r.progress = Instant::now();
                }
            }
        }
        metrics.record_restored(r.records - read_before);
        for p in done {
            if let Some(offset) = self.skipped.remove(&p) {
                let topic = self.topic(self.config.input);
                consumer
                    .seek(topic, p, Offset::Offset(offset), Duration::from_secs(10))
                    .map_err(|source| StreamError::Fatal { step: "seek", source })?;
            }
            self.pause(consumer, &[p], false)?;
            self.assigned.push(p);
            self.assigned.sort_unstable();
        }
        self.finish_restore_if_done();
        Ok(())
    }

    /// Ends the rebuild once no partition is left to read: metrics, log, `/readyz`.
    fn finish_restore_if_done(&mut self) {
        if self.restoring.as_ref().is_none_or(|r| !r.pending.is_empty()) {
            return;
        }
        let r = self.restoring.take().expect("just looked at");
        let took = r.started.elapsed();
        let entries: usize = self.assigned.iter().map(|p| self.processor.entries_in(*p)).sum();
        self.metrics.record_restore(took);
        tracing::info!(
            assigned = ?self.assigned,
            records = r.records,
            entries,
            seconds = took.as_secs_f64(),
            "state restored"
        );
        self.readiness.set(true);
    }

    /// The error that stops the loop, if any. The open batch is abandoned first: it can
    /// hold a record whose outputs were not all produced, so neither its offsets nor its
    /// changelog may be committed, not even by the revocation that closing the consumer
    /// runs. Exactly once, its transaction is aborted (or, if the producer cannot, ended
    /// by the broker after `transaction.timeout.ms`).
    fn take_fatal(&mut self) -> Option<StreamError> {
        let error = self.fatal.take()?;
        if self.batch.open {
            if self.config.guarantee == Guarantee::ExactlyOnce {
                if let Err(e) = self.producer.abort_transaction(Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "cannot abort the open transaction");
                }
            }
            self.spans.close();
            self.batch = Batch::default();
            self.processor.abort_batch();
        }
        Some(error)
    }

    /// A record of `partition`, still being rebuilt, came anyway: it is not processed,
    /// and the partition is sought back to it when it resumes.
    fn skip(&mut self, partition: i32, offset: i64) {
        let lowest = self.skipped.entry(partition).or_insert(offset);
        *lowest = (*lowest).min(offset);
    }
}

/// Seeks `partitions` of `topic` back to their committed offsets (or the beginning).
fn rewind<P: StatefulProcessor>(
    consumer: &StageConsumer<P>,
    topic: &str,
    partitions: &[i32],
) -> Result<(), KafkaError> {
    if partitions.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    let mut seek = TopicPartitionList::new();
    for e in committed.elements() {
        // A partition whose committed offset could not be read is not replayed from
        // the beginning: that would repeat its whole history.
        e.error()?;
        let offset = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        seek.add_partition_offset(topic, e.partition(), offset)?;
    }
    for e in consumer.seek_partitions(seek, Duration::from_secs(10))?.elements() {
        match e.error() {
            // Not fetching yet (just assigned, or being stopped): it starts at its
            // committed offset anyway.
            Err(KafkaError::OffsetFetch(RDKafkaErrorCode::State | RDKafkaErrorCode::PreviousInProgress)) | Ok(()) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// A restore that reads no changelog record and reaches no partition's end for this
/// long has failed (the changelog is unreadable, not merely large).
const RESTORE_STALL: Duration = Duration::from_secs(120);

/// How long the loop reads the changelog at a time while state is being rebuilt,
/// before it polls the group consumer (and processes the partitions already rebuilt).
const RESTORE_SLICE: Duration = Duration::from_millis(50);

/// How long `poll` waits for a record before the loop counts the input as caught up
/// (and commits an open batch early).
const IDLE_POLL: Duration = Duration::from_millis(50);

/// How long `poll` waits while batches are in flight (at least once), so that their
/// offsets are committed soon after their acknowledgements arrive.
const ACK_POLL: Duration = Duration::from_millis(2);

/// At least once: how many committed batches may wait for acknowledgements while the
/// loop goes on; with more, it waits for the oldest.
const MAX_IN_FLIGHT: usize = 4;

/// What [`run`] needs besides the processor: the stage's settings, metrics, readiness
/// and shutdown signal (from [`crate::runtime::StageRuntime`], or a test's own).
pub struct StageHandles {
    pub settings: Settings,
    pub metrics: Arc<StageMetrics>,
    pub readiness: Readiness,
    pub shutdown: CancellationToken,
}

/// Runs the stage until `shutdown`, then commits the open batch and leaves the group.
/// Blocking: run it on a thread of its own.
pub fn run<P: StatefulProcessor>(stage: StageHandles, config: StreamConfig, processor: P) -> Result<(), StreamError> {
    let StageHandles { settings, metrics, readiness, shutdown } = stage;
    let client_id = settings.instance.clone();
    let producer: StageProducer = match config.guarantee {
        Guarantee::ExactlyOnce => {
            settings.kafka.transactional_producer_config(&client_id, &settings.transactional_id())
        }
        Guarantee::AtLeastOnce => settings.kafka.producer_config(&client_id),
    }
    .create_with_context(StageProducerContext::default())
    .map_err(StreamError::Client)?;
    if config.guarantee == Guarantee::ExactlyOnce {
        let id = settings.transactional_id();
        producer
            .init_transactions(Duration::from_secs(30))
            .map_err(|source| StreamError::InitTransactions { id, source })?;
    }
    let input = settings.topic_name(config.input).to_owned();
    let dead_letters = DeadLetterWriter::new(settings.topic_name(Topic::DeadLetter), settings.stage.clone())
        .with_max_message_bytes(settings.kafka.max_message_bytes());
    let mut consumer_config = settings.kafka.consumer_config(&client_id, &settings.group_id);
    consumer_config.set("statistics.interval.ms", "1000");
    let context_metrics = metrics.clone();
    let state = Arc::new(Mutex::new(Loop {
        settings,
        config,
        processor,
        producer,
        dead_letters,
        metrics,
        readiness,
        batch: Batch::default(),
        spans: Spans::default(),
        in_flight: VecDeque::new(),
        next_batch: 1,
        assigned: Vec::new(),
        restoring: None,
        skipped: BTreeMap::new(),
        refused_at_once: None,
        fatal: None,
    }));
    let consumer: StageConsumer<P> = consumer_config
        .create_with_context(StageContext { state: state.clone(), metrics: context_metrics, input: input.clone() })
        .map_err(StreamError::Client)?;
    consumer.subscribe(&[&input]).map_err(|source| StreamError::Subscribe { topic: input.clone(), source })?;
    tracing::info!(topic = %input, guarantee = ?lock(&state).config.guarantee, "consuming");

    // While state is rebuilt, reading the changelog and processing the partitions
    // already rebuilt take turns of RESTORE_SLICE (the changelog gets every turn the
    // input has nothing for): one record per slice would all but stop them.
    let (mut restore_turn, mut idle) = (Instant::now(), true);
    while !shutdown.is_cancelled() {
        let timeout = {
            let mut st = lock(&state);
            if st.restoring.is_some() && (idle || Instant::now() >= restore_turn) {
                if let Err(e) = st.restore_step(&consumer, RESTORE_SLICE) {
                    // Through take_fatal, as any other fatal error: the open batch is abandoned.
                    st.fatal = Some(e);
                    return Err(st.take_fatal().expect("just set"));
                }
                restore_turn = Instant::now() + RESTORE_SLICE;
            }
            st.poll_timeout(Instant::now())
        };
        let polled = consumer.poll(timeout);
        idle = polled.is_none();
        // One clock read per record: it is a visible cost at these rates.
        let now = Instant::now();
        let mut st = lock(&state);
        if let Some(e) = st.take_fatal() {
            return Err(e);
        }
        // (While state is rebuilt the poll does not wait, and an empty one says nothing.)
        let caught_up = polled.is_none() && !timeout.is_zero();
        match polled {
            None => {}
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            Some(Ok(message)) if !st.assigned.contains(&message.partition()) => {
                st.skip(message.partition(), message.offset());
            }
            Some(Ok(message)) => {
                if let Err(e) = st.handle(&message, now) {
                    drop(message);
                    st.fail_or_recover(&consumer, e);
                }
            }
        }
        // A record that could not be handled stops the loop before its batch commits.
        if let Some(e) = st.take_fatal() {
            return Err(e);
        }
        // Caught up (nothing came within the wait): nothing more would join the batch,
        // so its outputs' changelog and offsets are committed now.
        if st.due(now) || (caught_up && st.batch.open) {
            if let Err(e) = st.commit(&consumer) {
                st.fail_or_recover(&consumer, e);
            }
        } else if !st.in_flight.is_empty() {
            if let Err(e) = st.settle(&consumer, MAX_IN_FLIGHT) {
                st.fail_or_recover(&consumer, e);
            }
        }
        if let Some(e) = st.take_fatal() {
            return Err(e);
        }
    }
    tracing::info!("shutting down: committing the open batch and leaving the group");
    {
        let mut st = lock(&state);
        if let Err(e) = st.commit_all(&consumer) {
            st.fail_or_recover(&consumer, e);
        }
        st.readiness.set(false);
    }
    // Leaving the group revokes the partitions (the callback finds nothing open).
    consumer.unsubscribe();
    let _ = consumer.poll(Duration::from_millis(100));
    let mut st = lock(&state);
    if let Some(e) = st.take_fatal() {
        return Err(e);
    }
    flush(&st.producer, Duration::from_secs(10)).map_err(|source| StreamError::Fatal { step: "flush", source })?;
    Ok(())
}
