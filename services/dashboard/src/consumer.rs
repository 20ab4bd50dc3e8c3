//! The Kafka loop that feeds [`DashboardState`]: reads `P.risk-scores`,
//! `P.interventions`, `P.customer-outcomes` and `P.pipeline-stats`, decodes each record
//! and applies it. Blocking: it runs on a thread of its own.
//!
//! **Partitions and offsets.** The dashboard is a read-only view, and every replica
//! must show everything, so it does not join a consumer group (which would split the
//! partitions between replicas): it assigns itself every partition of the four topics.
//! The client is still configured with the stage's own group id (`P.dashboard`), which
//! it never joins and never commits to, so nothing the dashboard does touches another
//! stage's group or offsets.
//!
//! **Catch-up.** At start each partition is read from `max(low, high - N)`, with `N` =
//! `catch_up_records` and `low`/`high` its watermarks at that moment, so a restart
//! shows recent history instead of a blank page, in bounded time and memory. The
//! catch-up is done (and `/readyz` turns true) when the consumer's position reaches the
//! `high` noted at start on every partition; if that takes longer than
//! `catch_up_timeout_secs` (say a transaction left open upstream keeps the
//! read_committed end below `high`), it is declared done with a warning. Records
//! older than the rate window are read but leave no trace in the rates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use eventpipe_common::config::Settings;
use eventpipe_common::http::Readiness;
use eventpipe_common::stats::StageMetrics;
use eventpipe_common::topics::Topic;

use crate::metrics::DashboardMetrics;
use crate::record::{decode, Malformed, Record};
use crate::state::DashboardState;

/// The state shared between the Kafka loop and the HTTP handlers.
pub type SharedState = Arc<Mutex<DashboardState>>;

/// Locks the state, whether or not a holder panicked (the state stays consistent
/// record by record).
pub fn lock(state: &SharedState) -> MutexGuard<'_, DashboardState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The topics the dashboard reads.
pub const TOPICS: [Topic; 4] = [Topic::RiskScores, Topic::Interventions, Topic::CustomerOutcomes, Topic::PipelineStats];

/// Records decoded per lock of the state.
const BATCH: usize = 500;

/// How the loop starts.
#[derive(Debug, Clone)]
pub struct CatchUp {
    /// Latest records read per partition at start.
    pub records: i64,
    /// Longest wait for the catch-up before reporting ready anyway.
    pub timeout: Duration,
}

/// Where the loop reports.
#[derive(Clone)]
pub struct Sinks {
    pub state: SharedState,
    pub metrics: Arc<DashboardMetrics>,
    pub stage: Arc<StageMetrics>,
    pub readiness: Readiness,
}

/// Why the loop stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("cannot create the Kafka consumer: {0}")]
    Client(KafkaError),
    #[error("cannot read the watermarks of {topic} [{partition}]: {source}")]
    Watermarks { topic: String, partition: i32, source: KafkaError },
    #[error("cannot assign the partitions: {0}")]
    Assign(KafkaError),
}

/// Waits until every topic exists and returns (topic, name, partition count).
fn wait_for_topics(
    consumer: &BaseConsumer,
    names: &[(Topic, String)],
    shutdown: &CancellationToken,
) -> Option<Vec<(Topic, String, i32)>> {
    let mut logged = false;
    loop {
        let mut found = Vec::new();
        for (topic, name) in names {
            match consumer.fetch_metadata(Some(name), Duration::from_secs(5)) {
                Ok(m) => match m.topics().first() {
                    Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                        found.push((*topic, name.clone(), t.partitions().len() as i32))
                    }
                    _ => {}
                },
                Err(e) => tracing::debug!(topic = %name, error = %e, "no metadata yet"),
            }
        }
        if found.len() == names.len() {
            return Some(found);
        }
        if !logged {
            tracing::info!(found = found.len(), wanted = names.len(), "waiting for the topics to exist");
            logged = true;
        }
        if shutdown.is_cancelled() {
            return None;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Runs the loop until `shutdown`. Never commits offsets.
pub fn run(
    settings: &Settings,
    catch_up: CatchUp,
    sinks: Sinks,
    shutdown: CancellationToken,
) -> Result<(), ConsumerError> {
    let config = settings.kafka.consumer_config(&settings.instance, &settings.group_id);
    let consumer: BaseConsumer = config.create().map_err(ConsumerError::Client)?;
    let names: Vec<(Topic, String)> = TOPICS.iter().map(|t| (*t, settings.topic_name(*t).to_owned())).collect();
    let by_name: HashMap<String, Topic> = names.iter().map(|(t, n)| (n.clone(), *t)).collect();
    let Some(topics) = wait_for_topics(&consumer, &names, &shutdown) else { return Ok(()) };

    // Start offsets and the end each partition must reach for the catch-up.
    let started = Instant::now();
    let mut tpl = TopicPartitionList::new();
    let mut pending: HashMap<(String, i32), i64> = HashMap::new();
    let mut backlog = 0i64;
    for (_, name, partitions) in &topics {
        for p in 0..*partitions {
            let (low, high) = consumer
                .fetch_watermarks(name, p, Duration::from_secs(10))
                .map_err(|source| ConsumerError::Watermarks { topic: name.clone(), partition: p, source })?;
            let start = low.max(high - catch_up.records);
            tpl.add_partition_offset(name, p, Offset::Offset(start)).map_err(ConsumerError::Assign)?;
            if start < high {
                pending.insert((name.clone(), p), high);
                backlog += high - start;
            }
        }
    }
    consumer.assign(&tpl).map_err(ConsumerError::Assign)?;
    tracing::info!(partitions = tpl.count(), backlog, "reading the latest records of every partition");

    let mut caught_up = false;
    let mut last_check = Instant::now();
    let mut last_lag = Instant::now();
    let mut last_evict = Instant::now();
    let mut batch: Vec<(Topic, Result<Record, Malformed>)> = Vec::with_capacity(BATCH);
    while !shutdown.is_cancelled() {
        let mut timeout = Duration::from_millis(100);
        while batch.len() < BATCH {
            match consumer.poll(timeout) {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    break;
                }
                Some(Ok(m)) => {
                    let Some(topic) = by_name.get(m.topic()).copied() else { continue };
                    let key = (m.topic().to_owned(), m.partition());
                    if pending.get(&key).is_some_and(|high| m.offset() + 1 >= *high) {
                        pending.remove(&key);
                    }
                    batch.push((topic, decode(topic, m.payload())));
                }
            }
            timeout = Duration::ZERO;
        }
        apply(&sinks, &mut batch);

        if !caught_up && (pending.is_empty() || last_check.elapsed() >= Duration::from_millis(200)) {
            last_check = Instant::now();
            if let Ok(positions) = consumer.position() {
                for e in positions.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        let key = (e.topic().to_owned(), e.partition());
                        if pending.get(&key).is_some_and(|high| o >= *high) {
                            pending.remove(&key);
                        }
                    }
                }
            }
            let timed_out = started.elapsed() >= catch_up.timeout;
            if pending.is_empty() || timed_out {
                if timed_out && !pending.is_empty() {
                    let behind: Vec<_> = pending.keys().collect();
                    tracing::warn!(?behind, "catch-up timed out; reporting ready with these partitions behind");
                }
                caught_up = true;
                finish_catch_up(&sinks, started.elapsed());
            }
        }
        if last_evict.elapsed() >= Duration::from_secs(1) {
            lock(&sinks.state).evict(Utc::now());
            last_evict = Instant::now();
        }
        if last_lag.elapsed() >= Duration::from_secs(5) {
            update_lag(&consumer, &sinks.stage);
            last_lag = Instant::now();
        }
    }
    sinks.readiness.set(false);
    tracing::info!("dashboard consumer stopped");
    Ok(())
}

/// Applies a batch under one lock and counts it.
fn apply(sinks: &Sinks, batch: &mut Vec<(Topic, Result<Record, Malformed>)>) {
    if batch.is_empty() {
        return;
    }
    let now = Utc::now();
    let read = batch.len() as u64;
    let mut state = lock(&sinks.state);
    for (topic, record) in batch.drain(..) {
        sinks.metrics.record_read(topic.logical());
        match record {
            Ok(r) => {
                state.apply(r, now);
            }
            Err(e) => {
                tracing::debug!(topic = %topic, reason = e.reason, error = %e.detail, "skipping unusable record");
                sinks.metrics.record_malformed(topic.logical(), e.reason);
                state.record_malformed();
            }
        }
    }
    sinks.metrics.customers.set(state.customers_tracked() as i64);
    drop(state);
    sinks.stage.record_consumed(read);
}

fn finish_catch_up(sinks: &Sinks, took: Duration) {
    let totals = {
        let mut state = lock(&sinks.state);
        state.set_caught_up(true);
        state.totals()
    };
    sinks.metrics.caught_up.set(1);
    sinks.metrics.catch_up_seconds.set(took.as_secs_f64());
    sinks.readiness.set(true);
    tracing::info!(
        seconds = took.as_secs_f64(),
        risk_scores = totals.risk_scores,
        interventions = totals.interventions,
        outcomes = totals.customer_outcomes,
        malformed = totals.malformed,
        "catch-up done; ready"
    );
}

/// Records behind the end of the assigned partitions, for the stage's own StageStats.
fn update_lag(consumer: &BaseConsumer, stage: &StageMetrics) {
    let Ok(positions) = consumer.position() else { return };
    let mut lag = 0u64;
    for e in positions.elements() {
        let Offset::Offset(position) = e.offset() else { continue };
        if let Ok((_, high)) = consumer.fetch_watermarks(e.topic(), e.partition(), Duration::from_millis(500)) {
            lag += (high - position).max(0) as u64;
        }
    }
    stage.set_lag(lag);
}
