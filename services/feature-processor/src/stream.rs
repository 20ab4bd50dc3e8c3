//! The Kafka shell around [`Core`]: consume transactions, update state, produce
//! RiskScores, changelog records and dead letters, and commit the consumed offsets —
//! in one Kafka transaction per batch (exactly once), or flush-then-commit (at least
//! once).
//!
//! Runs on one thread of its own. Rebalance callbacks run inside `poll` on that thread:
//! on revocation the open batch is committed first (its offsets belong to this group
//! generation) and the revoked partitions' state is dropped; on assignment the new
//! partitions' state is rebuilt from the compacted `customer-features` changelog
//! before `poll` can return any of their records, with `/readyz` false meanwhile. An
//! aborted transaction leaves the in-memory state ahead of Kafka, so the state of
//! every assigned partition is restored again and the consumer rewinds to the
//! committed offsets, as Kafka Streams does with a task closed dirty.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use eventpipe_common::config::Settings;
use eventpipe_common::dead_letter::{DeadLetter, DeadLetterWriter};
use eventpipe_common::events::CustomerFeatures;
use eventpipe_common::http::Readiness;
use eventpipe_common::kafka::send_waiting;
use eventpipe_common::stats::StageMetrics;
use eventpipe_common::telemetry::{continue_trace, inject_trace};
use eventpipe_common::topics::Topic;

use crate::model_watch::ModelHandle;
use crate::processor::{Core, CoreConfig};

/// Processing guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Kafka transactions: outputs and input offsets commit together.
    ExactlyOnce,
    /// No transactions (for brokers without them): outputs are flushed, then offsets
    /// committed; a crash can repeat outputs, with the same deterministic ids.
    AtLeastOnce,
}

/// How the loop batches and commits.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub guarantee: Guarantee,
    /// Commit at least this often while records flow.
    pub commit_interval: Duration,
    /// Commit after this many input records.
    pub max_batch: usize,
    pub core: CoreConfig,
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
struct Loop {
    settings: Settings,
    config: StreamConfig,
    core: Core,
    model: ModelHandle,
    model_generation: u64,
    producer: FutureProducer,
    dead_letters: DeadLetterWriter,
    metrics: Arc<StageMetrics>,
    readiness: Readiness,
    batch: Batch,
    /// Partitions currently assigned to this instance.
    assigned: Vec<i32>,
    fatal: Option<StreamError>,
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
    /// Delivery reports to wait for (at-least-once only).
    deliveries: Vec<DeliveryFuture>,
    started: Option<Instant>,
}

struct StageContext {
    state: Arc<Mutex<Loop>>,
}

impl ClientContext for StageContext {}

impl ConsumerContext for StageContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut state = lock(&self.state);
            let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(?revoked, "partitions revoked; committing the open batch");
            if let Err(e) = state.commit(consumer) {
                state.fail_or_recover(consumer, e);
            }
            for p in &revoked {
                state.core.drop_partition(*p);
            }
            state.assigned.retain(|p| !revoked.contains(p));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut state = lock(&self.state);
            let assigned: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(?assigned, "partitions assigned; restoring their state");
            state.readiness.set(false);
            if let Err(e) = state.restore(&assigned) {
                state.fatal = Some(e);
                return;
            }
            if tracing::enabled!(tracing::Level::DEBUG) {
                let committed = consumer.committed_offsets((*tpl).clone(), Duration::from_secs(5));
                tracing::debug!(?committed, "committed offsets at assignment");
            }
            state.assigned.extend(&assigned);
            state.assigned.sort_unstable();
            state.readiness.set(true);
        }
    }
}

fn lock(state: &Mutex<Loop>) -> MutexGuard<'_, Loop> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

type StageConsumer = BaseConsumer<StageContext>;

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

impl Loop {
    fn topic(&self, topic: Topic) -> &str {
        self.settings.topic_name(topic)
    }

    /// Handles one input record inside the open batch.
    fn handle(&mut self, message: &BorrowedMessage<'_>) -> Result<(), KafkaError> {
        if self.model.generation() != self.model_generation {
            self.model_generation = self.model.generation();
            self.core.set_model(self.model.get());
        }
        if !self.batch.open {
            if self.config.guarantee == Guarantee::ExactlyOnce {
                self.producer.begin_transaction()?;
            }
            self.batch.open = true;
            self.batch.started = Some(Instant::now());
        }
        self.batch.received.push(Instant::now());
        self.metrics.record_consumed(1);
        self.batch.offsets.insert(message.partition(), message.offset() + 1);

        let span = tracing::info_span!("process", partition = message.partition(), offset = message.offset());
        continue_trace(&span, message.headers());
        let result = self.core.process(message.partition(), message.key(), message.payload());
        match result {
            Ok(processed) => {
                if let Some(score) = processed.score {
                    let payload = serde_json::to_vec(&score).expect("RiskScore serializes");
                    let topic = self.topic(Topic::RiskScores).to_owned();
                    let record = FutureRecord::to(&topic)
                        .partition(message.partition())
                        .key(score.customer_id.as_str())
                        .payload(&payload)
                        .timestamp(score.event_time.timestamp_millis())
                        .headers(inject_trace(&span, OwnedHeaders::new_with_capacity(1)));
                    self.send(record)?;
                }
            }
            Err(rejected) => {
                tracing::debug!(reason = rejected.reason, error = %rejected.error, "dead-lettering input");
                self.metrics.record_dead_letter(rejected.reason);
                let letter = DeadLetter::from_message(message, rejected.reason, rejected.error);
                let record = self.dead_letters.record(&letter);
                let delivery = send_waiting(&self.producer, record)?;
                self.track(delivery);
            }
        }
        Ok(())
    }

    fn send(&mut self, record: FutureRecord<'_, str, Vec<u8>>) -> Result<(), KafkaError> {
        let delivery = send_waiting(&self.producer, record)?;
        self.track(delivery);
        Ok(())
    }

    fn track(&mut self, delivery: DeliveryFuture) {
        self.batch.produced += 1;
        if self.config.guarantee == Guarantee::AtLeastOnce {
            self.batch.deliveries.push(delivery);
        }
    }

    /// Whether the open batch should be committed now.
    fn due(&self) -> bool {
        self.batch.open
            && (self.batch.received.len() >= self.config.max_batch
                || self.batch.started.is_some_and(|s| s.elapsed() >= self.config.commit_interval))
    }

    /// Writes the changelog of the batch and commits outputs and offsets together.
    fn commit(&mut self, consumer: &StageConsumer) -> Result<(), KafkaError> {
        if !self.batch.open {
            return Ok(());
        }
        let changelog_topic = self.topic(Topic::CustomerFeatures).to_owned();
        for (partition, record) in self.core.take_changelog() {
            let payload = serde_json::to_vec(&record).expect("CustomerFeatures serializes");
            let record = FutureRecord::to(&changelog_topic)
                .partition(partition)
                .key(record.customer_id.as_str())
                .payload(&payload)
                .timestamp(record.event_time.timestamp_millis());
            self.send(record)?;
        }
        let topic = self.topic(Topic::Transactions).to_owned();
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in &self.batch.offsets {
            offsets.add_partition_offset(&topic, *partition, Offset::Offset(*offset))?;
        }
        match self.config.guarantee {
            Guarantee::ExactlyOnce => {
                let group = consumer.group_metadata().ok_or(KafkaError::NoMessageReceived)?;
                self.producer.send_offsets_to_transaction(&offsets, &group, Duration::from_secs(10))?;
                self.producer.commit_transaction(Duration::from_secs(30))?;
                tracing::debug!(offsets = ?self.batch.offsets, "transaction committed");
            }
            Guarantee::AtLeastOnce => {
                for delivery in self.batch.deliveries.drain(..) {
                    match futures::executor::block_on(delivery) {
                        Ok(Ok(_)) => {}
                        Ok(Err((e, _))) => return Err(e),
                        Err(_) => return Err(KafkaError::Canceled),
                    }
                }
                if offsets.count() > 0 {
                    consumer.commit(&offsets, CommitMode::Sync)?;
                }
            }
        }
        self.metrics.record_produced(self.batch.produced);
        for received in self.batch.received.drain(..) {
            self.metrics.record_latency(received.elapsed());
        }
        self.batch = Batch::default();
        Ok(())
    }

    /// After a failed commit: abort and rewind when the error allows it, else stop.
    fn fail_or_recover(&mut self, consumer: &StageConsumer, error: KafkaError) {
        let abortable = match &error {
            KafkaError::Transaction(e) => e.txn_requires_abort() && !e.is_fatal(),
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
        self.batch = Batch::default();
        self.core.discard_changelog();
        let assigned = self.assigned.clone();
        if let Err(e) = self.restore(&assigned) {
            self.fatal = Some(e);
            return;
        }
        if let Err(e) = rewind(consumer, self.topic(Topic::Transactions), &assigned) {
            self.fatal = Some(StreamError::Fatal { step: "rewind", source: e });
        }
    }

    /// Rebuilds `partitions`' state from the changelog (committed records only).
    fn restore(&mut self, partitions: &[i32]) -> Result<(), StreamError> {
        for &p in partitions {
            self.core.drop_partition(p);
        }
        if partitions.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let topic = self.topic(Topic::CustomerFeatures).to_owned();
        let mut config = self.settings.kafka.consumer_config(
            &format!("{}-restore", self.settings.instance),
            &format!("{}.restore", self.settings.group_id),
        );
        config.set("enable.partition.eof", "true");
        let restorer: BaseConsumer<QuietEof> = config.create_with_context(QuietEof).map_err(StreamError::Client)?;
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .map_err(|e| StreamError::Restore { partition: p, message: e.to_string() })?;
        }
        restorer.assign(&tpl).map_err(StreamError::Client)?;
        let mut pending: Vec<i32> = partitions.to_vec();
        let mut records = 0u64;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !pending.is_empty() {
            if Instant::now() > deadline {
                return Err(StreamError::Restore { partition: pending[0], message: "timed out after 120 s".into() });
            }
            match restorer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => pending.retain(|x| *x != p),
                Some(Err(e)) => tracing::warn!(error = %e, "restore consumer error"),
                Some(Ok(m)) => match m.payload().map(serde_json::from_slice::<CustomerFeatures>) {
                    Some(Ok(record)) => {
                        self.core.restore(m.partition(), &record);
                        records += 1;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(partition = m.partition(), offset = m.offset(), error = %e, "skipping unreadable changelog record")
                    }
                    None => {}
                },
            }
        }
        let customers: usize = partitions.iter().map(|p| self.core.customers_in(*p)).sum();
        tracing::info!(?partitions, records, customers, seconds = started.elapsed().as_secs_f64(), "state restored");
        Ok(())
    }

    fn update_lag(&self, consumer: &StageConsumer) {
        let Ok(positions) = consumer.position() else { return };
        let mut lag = 0u64;
        for e in positions.elements() {
            let Offset::Offset(position) = e.offset() else { continue };
            if let Ok((_, high)) = consumer.fetch_watermarks(e.topic(), e.partition(), Duration::from_millis(500)) {
                lag += (high - position).max(0) as u64;
            }
        }
        self.metrics.set_lag(lag);
    }
}

/// Seeks `partitions` of `topic` back to their committed offsets (or the beginning).
fn rewind(consumer: &StageConsumer, topic: &str, partitions: &[i32]) -> Result<(), KafkaError> {
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
        let offset = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        seek.add_partition_offset(topic, e.partition(), offset)?;
    }
    consumer.seek_partitions(seek, Duration::from_secs(10))?;
    Ok(())
}

/// Runs the stage until `shutdown`, then commits the open batch and leaves the group.
/// Blocking: run it on a thread of its own.
pub fn run(
    settings: Settings,
    config: StreamConfig,
    model: ModelHandle,
    metrics: Arc<StageMetrics>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<(), StreamError> {
    let client_id = settings.instance.clone();
    let producer: FutureProducer = match config.guarantee {
        Guarantee::ExactlyOnce => {
            settings.kafka.transactional_producer_config(&client_id, &settings.transactional_id())
        }
        Guarantee::AtLeastOnce => settings.kafka.producer_config(&client_id),
    }
    .create()
    .map_err(StreamError::Client)?;
    if config.guarantee == Guarantee::ExactlyOnce {
        let id = settings.transactional_id();
        producer
            .init_transactions(Duration::from_secs(30))
            .map_err(|source| StreamError::InitTransactions { id, source })?;
    }
    let input = settings.topic_name(Topic::Transactions).to_owned();
    let dead_letters = DeadLetterWriter::new(settings.topic_name(Topic::DeadLetter), settings.stage.clone());
    let consumer_config = settings.kafka.consumer_config(&client_id, &settings.group_id);
    let core = Core::new(config.core, model.get());
    let state = Arc::new(Mutex::new(Loop {
        model_generation: model.generation(),
        settings,
        config,
        core,
        model,
        producer,
        dead_letters,
        metrics,
        readiness,
        batch: Batch::default(),
        assigned: Vec::new(),
        fatal: None,
    }));
    let consumer: StageConsumer =
        consumer_config.create_with_context(StageContext { state: state.clone() }).map_err(StreamError::Client)?;
    consumer.subscribe(&[&input]).map_err(|source| StreamError::Subscribe { topic: input.clone(), source })?;
    tracing::info!(topic = %input, guarantee = ?lock(&state).config.guarantee, "consuming");

    let mut last_lag = Instant::now();
    while !shutdown.is_cancelled() {
        let polled = consumer.poll(Duration::from_millis(50));
        let mut st = lock(&state);
        if let Some(e) = st.fatal.take() {
            return Err(e);
        }
        match polled {
            None => {}
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            Some(Ok(message)) => {
                if let Err(e) = st.handle(&message) {
                    drop(message);
                    st.fail_or_recover(&consumer, e);
                }
            }
        }
        if st.due() {
            if let Err(e) = st.commit(&consumer) {
                st.fail_or_recover(&consumer, e);
            }
        }
        if let Some(e) = st.fatal.take() {
            return Err(e);
        }
        if last_lag.elapsed() >= Duration::from_secs(1) {
            st.update_lag(&consumer);
            last_lag = Instant::now();
        }
    }
    tracing::info!("shutting down: committing the open batch and leaving the group");
    {
        let mut st = lock(&state);
        if let Err(e) = st.commit(&consumer) {
            st.fail_or_recover(&consumer, e);
        }
        st.readiness.set(false);
    }
    // Leaving the group revokes the partitions (the callback finds nothing open).
    consumer.unsubscribe();
    let _ = consumer.poll(Duration::from_millis(100));
    let mut st = lock(&state);
    if let Some(e) = st.fatal.take() {
        return Err(e);
    }
    st.producer.flush(Duration::from_secs(10)).map_err(|source| StreamError::Fatal { step: "flush", source })?;
    Ok(())
}
