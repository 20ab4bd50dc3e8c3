//! Sending simulated events to Kafka: keyed by customer_id, through the idempotent
//! producer, with a bounded window of unacknowledged records and a `traceparent` per
//! record.
//!
//! Each chunk of records is sent inside one `produce` span whose context goes into the
//! records' headers: a span per record would cost more than generating the record.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use eventpipe_common::stats::StageMetrics;
use eventpipe_common::telemetry::{append_headers, trace_headers};
use eventpipe_common::topics::Topic;

use crate::simulator::{SimEvent, Simulator};

/// Records in one traced chunk.
const CHUNK: usize = 500;
/// Unacknowledged records allowed before waiting for acknowledgements.
const MAX_IN_FLIGHT: usize = 100_000;

/// Why publishing stopped.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("delivery to Kafka failed: {0}")]
    Delivery(KafkaError),
    #[error("the producer was closed before a delivery report arrived")]
    Canceled,
}

/// Sends events and tracks their acknowledgements.
pub struct Publisher {
    producer: FutureProducer,
    transactions: String,
    outcomes: String,
    acks: Acks,
    buf: Vec<u8>,
    sent: u64,
}

/// Records sent and not yet acknowledged, oldest first.
struct Acks {
    metrics: Arc<StageMetrics>,
    in_flight: VecDeque<(Instant, DeliveryFuture)>,
}

impl Publisher {
    /// A publisher to pipeline `pipeline`'s transactions and customer-outcomes topics.
    pub fn new(producer: FutureProducer, pipeline: &str, metrics: Arc<StageMetrics>) -> Self {
        Publisher {
            producer,
            transactions: Topic::Transactions.name(pipeline),
            outcomes: Topic::CustomerOutcomes.name(pipeline),
            acks: Acks { metrics, in_flight: VecDeque::new() },
            buf: Vec::with_capacity(512),
            sent: 0,
        }
    }

    /// Records handed to the producer so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Sends `events` (in order); returns once all are queued, not acknowledged.
    pub async fn publish(&mut self, events: &[SimEvent]) -> Result<(), PublishError> {
        for chunk in events.chunks(CHUNK) {
            let span = tracing::info_span!("produce", records = chunk.len());
            let trace = trace_headers(&span);
            for event in chunk {
                self.send(event, &trace).await?;
            }
            self.acks.reap_ready()?;
        }
        Ok(())
    }

    async fn send(&mut self, event: &SimEvent, trace: &[(String, String)]) -> Result<(), PublishError> {
        self.buf.clear();
        event.write_json(&mut self.buf);
        let topic = match event.topic() {
            Topic::CustomerOutcomes => &self.outcomes,
            _ => &self.transactions,
        };
        let mut record = FutureRecord::to(topic)
            .key(event.customer_id())
            .payload(&self.buf[..])
            .timestamp(event.event_time().timestamp_millis())
            .headers(append_headers(OwnedHeaders::new_with_capacity(trace.len()), trace));
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.acks.in_flight.push_back((Instant::now(), delivery));
                    self.sent += 1;
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.acks.wait_oldest().await?;
                }
                Err((e, _)) => return Err(PublishError::Delivery(e)),
            }
        }
        if self.acks.in_flight.len() >= MAX_IN_FLIGHT {
            self.acks.wait_oldest().await?;
        }
        Ok(())
    }

    /// Waits until every record sent so far is acknowledged.
    pub async fn flush(&mut self) -> Result<(), PublishError> {
        while !self.acks.in_flight.is_empty() {
            self.acks.wait_oldest().await?;
        }
        Ok(())
    }
}

impl Acks {
    fn acknowledge(
        &self,
        sent_at: Instant,
        result: <DeliveryFuture as std::future::Future>::Output,
    ) -> Result<(), PublishError> {
        match result {
            Ok(Ok(_)) => {
                self.metrics.record_produced(1);
                self.metrics.record_latency(sent_at.elapsed());
                Ok(())
            }
            Ok(Err((e, _))) => Err(PublishError::Delivery(e)),
            Err(_) => Err(PublishError::Canceled),
        }
    }

    /// Waits for the oldest unacknowledged record (or briefly, when there is none).
    async fn wait_oldest(&mut self) -> Result<(), PublishError> {
        match self.in_flight.pop_front() {
            Some((sent_at, delivery)) => self.acknowledge(sent_at, delivery.await),
            None => {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(())
            }
        }
    }

    /// Counts the acknowledgements that have already arrived, oldest first.
    fn reap_ready(&mut self) -> Result<(), PublishError> {
        while let Some((_, delivery)) = self.in_flight.front_mut() {
            match delivery.now_or_never() {
                Some(result) => {
                    let (sent_at, _) = self.in_flight.pop_front().expect("front exists");
                    self.acknowledge(sent_at, result)?;
                }
                None => break,
            }
        }
        Ok(())
    }
}

/// Summary of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunSummary {
    /// Simulated days begun.
    pub days: u32,
    /// Records sent (transactions + outcomes).
    pub events: u64,
    /// Of which customer outcomes.
    pub outcomes: u64,
}

/// Simulates `days` days as fast as the broker takes them. Stops early (after the day in
/// progress) when `shutdown` is cancelled. Waits for every acknowledgement.
pub async fn backfill(
    sim: &mut Simulator,
    days: u32,
    publisher: &mut Publisher,
    shutdown: &CancellationToken,
) -> Result<RunSummary, PublishError> {
    let mut events = Vec::new();
    let mut summary = RunSummary::default();
    for _ in 0..days {
        if shutdown.is_cancelled() {
            break;
        }
        events.clear();
        let date = sim.next_date();
        sim.next_day(&mut events);
        publisher.publish(&events).await?;
        summary.days += 1;
        summary.events += events.len() as u64;
        summary.outcomes += events.iter().filter(|e| matches!(e, SimEvent::Outcome(_))).count() as u64;
        tracing::debug!(%date, events = events.len(), "day sent");
    }
    publisher.flush().await?;
    Ok(summary)
}

/// Continues the simulation at `rate` events per wall-clock second until `shutdown`.
///
/// Event time is the simulated time: the customers' calendar continues from where it
/// stands and advances as fast as `rate` requires (a day of all customers' events per
/// `events_per_day / rate` seconds), so every customer's history stays consistent.
pub async fn live(
    sim: &mut Simulator,
    rate: f64,
    publisher: &mut Publisher,
    shutdown: &CancellationToken,
) -> Result<RunSummary, PublishError> {
    const TICK: Duration = Duration::from_millis(20);
    let mut summary = RunSummary::default();
    let mut day: Vec<SimEvent> = Vec::new();
    let mut next = 0usize;
    let started = Instant::now();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_time: Option<DateTime<Utc>> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        // Send what the rate allows by now, so the average rate holds over time.
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while summary.events < due {
            if next == day.len() {
                day.clear();
                next = 0;
                sim.next_day(&mut day);
                summary.days += 1;
                // Send the day in time order across customers, as it would happen.
                day.sort_by_key(SimEvent::event_time);
            }
            let take = ((due - summary.events) as usize).min(day.len() - next);
            publisher.publish(&day[next..next + take]).await?;
            last_time = day.get(next + take - 1).map(SimEvent::event_time).or(last_time);
            summary.outcomes +=
                day[next..next + take].iter().filter(|e| matches!(e, SimEvent::Outcome(_))).count() as u64;
            next += take;
            summary.events += take as u64;
        }
    }
    publisher.flush().await?;
    if let Some(t) = last_time {
        tracing::info!(last_event_time = %t, "live simulation stopped");
    }
    Ok(summary)
}
