//! What a stage counts, exposed two ways: Prometheus metrics on `/metrics`, and a
//! [`StageStats`] record published to `P.pipeline-stats` every second for the dashboard.
//!
//! The processing loop calls the `record_*` methods; counters are atomics and latency
//! goes into an HDR histogram per window, so the hot path stays cheap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram as Hdr;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::events::{LatencyPercentiles, StageStats, SCHEMA_VERSION};

/// Label of the dead-letter counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// The counters of one stage instance.
pub struct StageMetrics {
    stage: String,
    instance: String,
    consumed: Counter,
    produced: Counter,
    dead_lettered: Family<ReasonLabel, Counter>,
    latency: Histogram,
    lag: Gauge,
    restored: Counter,
    restore_seconds: Histogram,
    /// Latencies recorded: input records whose batch committed.
    committed: AtomicU64,
    window: Window,
}

struct Window {
    consumed: AtomicU64,
    produced: AtomicU64,
    dead_lettered: AtomicU64,
    lag: AtomicU64,
    latency_us: Mutex<Hdr<u64>>,
    started: Mutex<DateTime<Utc>>,
}

impl StageMetrics {
    /// Registers the stage's metrics (prefix `eventpipe_`) in `registry`.
    pub fn new(registry: &mut Registry, stage: &str, instance: &str) -> Arc<Self> {
        let metrics = StageMetrics {
            stage: stage.to_owned(),
            instance: instance.to_owned(),
            consumed: Counter::default(),
            produced: Counter::default(),
            dead_lettered: Family::default(),
            latency: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            lag: Gauge::default(),
            restored: Counter::default(),
            restore_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            committed: AtomicU64::new(0),
            window: Window {
                consumed: AtomicU64::new(0),
                produced: AtomicU64::new(0),
                dead_lettered: AtomicU64::new(0),
                lag: AtomicU64::new(0),
                latency_us: Mutex::new(Hdr::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")),
                started: Mutex::new(Utc::now()),
            },
        };
        let r = registry.sub_registry_with_prefix("eventpipe");
        r.register("records_consumed", "Records consumed from the input topics", metrics.consumed.clone());
        r.register("records_produced", "Records produced and acknowledged", metrics.produced.clone());
        r.register(
            "records_dead_lettered",
            "Records sent to the dead-letter topic, by reason",
            metrics.dead_lettered.clone(),
        );
        r.register(
            "processing_latency_seconds",
            "Time from receiving a record to its output being acknowledged",
            metrics.latency.clone(),
        );
        r.register("consumer_lag", "Records behind the end of the assigned input partitions", metrics.lag.clone());
        r.register(
            "state_restored_records",
            "Changelog records applied while rebuilding assigned partitions' state",
            metrics.restored.clone(),
        );
        r.register(
            "state_restore_seconds",
            "Time to rebuild assigned partitions' state from the changelog, per restore (the stage is not ready meanwhile)",
            metrics.restore_seconds.clone(),
        );
        Arc::new(metrics)
    }

    /// Counts `n` consumed records.
    pub fn record_consumed(&self, n: u64) {
        self.consumed.inc_by(n);
        self.window.consumed.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` produced (acknowledged) records.
    pub fn record_produced(&self, n: u64) {
        self.produced.inc_by(n);
        self.window.produced.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one dead-lettered record.
    pub fn record_dead_letter(&self, reason: &str) {
        self.dead_lettered.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc();
        self.window.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one processing latency.
    pub fn record_latency(&self, latency: Duration) {
        self.committed.fetch_add(1, Ordering::Relaxed);
        self.latency.observe(latency.as_secs_f64());
        let us = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
        self.window.latency_us.lock().unwrap_or_else(|e| e.into_inner()).saturating_record(us);
    }

    /// Records the latencies of a batch, taking the window's lock once.
    pub fn record_latencies(&self, latencies: impl IntoIterator<Item = Duration>) {
        let mut window = self.window.latency_us.lock().unwrap_or_else(|e| e.into_inner());
        for latency in latencies {
            self.committed.fetch_add(1, Ordering::Relaxed);
            self.latency.observe(latency.as_secs_f64());
            window.saturating_record((latency.as_micros() as u64).clamp(1, 3_600_000_000));
        }
    }

    /// How many latencies were recorded since the start: the input records whose
    /// processing was committed (the latency histogram's count, without encoding it).
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Sets the current consumer lag.
    pub fn set_lag(&self, lag: u64) {
        self.lag.set(lag as i64);
        self.window.lag.store(lag, Ordering::Relaxed);
    }

    /// Counts changelog records applied while rebuilding state, as they are (a
    /// rebuild's progress shows before it ends).
    pub fn record_restored(&self, records: u64) {
        self.restored.inc_by(records);
    }

    /// Records that a rebuild of state from the changelog ended after `took`.
    pub fn record_restore(&self, took: Duration) {
        self.restore_seconds.observe(took.as_secs_f64());
    }

    /// Changelog records applied in rebuilds since the start.
    pub fn restored_records(&self) -> u64 {
        self.restored.get()
    }

    /// Closes the current window and returns its StageStats.
    pub fn take_window(&self, now: DateTime<Utc>) -> StageStats {
        let started = std::mem::replace(&mut *self.window.started.lock().unwrap_or_else(|e| e.into_inner()), now);
        let latency = {
            let mut h = self.window.latency_us.lock().unwrap_or_else(|e| e.into_inner());
            let p = if h.is_empty() {
                LatencyPercentiles::default()
            } else {
                LatencyPercentiles {
                    p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
                    p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
                    max_ms: h.max() as f64 / 1000.0,
                }
            };
            h.reset();
            p
        };
        StageStats {
            event_id: Uuid::new_v4(),
            event_time: now,
            schema_version: SCHEMA_VERSION,
            stage: self.stage.clone(),
            instance: self.instance.clone(),
            window_start: started,
            window_ms: (now - started).num_milliseconds().max(0) as u64,
            consumed: self.window.consumed.swap(0, Ordering::Relaxed),
            produced: self.window.produced.swap(0, Ordering::Relaxed),
            dead_lettered: self.window.dead_lettered.swap(0, Ordering::Relaxed),
            lag: self.window.lag.load(Ordering::Relaxed),
            latency,
        }
    }
}

/// Publishes a StageStats record to `topic` every `interval` until `shutdown`, and a last
/// one on the way out. Keyed by `<stage>/<instance>`.
pub async fn publish_stats(
    metrics: Arc<StageMetrics>,
    producer: FutureProducer,
    topic: String,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let key = format!("{}/{}", metrics.stage, metrics.instance);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        let last = tokio::select! {
            _ = ticker.tick() => false,
            _ = shutdown.cancelled() => true,
        };
        let stats = metrics.take_window(Utc::now());
        let payload = serde_json::to_vec(&stats).expect("StageStats serializes");
        let record = FutureRecord::to(&topic).key(&key).payload(&payload);
        if let Err((e, _)) = producer.send(record, Duration::from_secs(5)).await {
            tracing::warn!(error = %e, %topic, "cannot publish stage stats");
        }
        if last {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_and_resets() {
        let mut registry = Registry::default();
        let m = StageMetrics::new(&mut registry, "producer", "p-0");
        m.record_consumed(5);
        m.record_produced(3);
        m.record_dead_letter("late");
        for ms in 1..=100 {
            m.record_latency(Duration::from_millis(ms));
        }
        m.set_lag(42);
        let start = *m.window.started.lock().unwrap();
        let s = m.take_window(start + chrono::Duration::milliseconds(1000));
        assert_eq!((s.consumed, s.produced, s.dead_lettered, s.lag, s.window_ms), (5, 3, 1, 42, 1000));
        assert!((s.latency.p50_ms - 50.0).abs() < 1.0, "{:?}", s.latency);
        assert!((s.latency.p99_ms - 99.0).abs() < 1.0, "{:?}", s.latency);
        let s = m.take_window(Utc::now());
        assert_eq!((s.consumed, s.produced, s.dead_lettered), (0, 0, 0));
        assert_eq!(s.latency, LatencyPercentiles::default());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("eventpipe_records_consumed_total 5"), "{text}");
        assert!(text.contains("eventpipe_records_dead_lettered_total{reason=\"late\"} 1"), "{text}");
        // Committed records outlive the window, as the histogram's count does.
        m.record_latencies([Duration::from_millis(3), Duration::from_millis(4)]);
        assert_eq!(m.committed(), 102);
        text.clear();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("eventpipe_processing_latency_seconds_count 102"), "{text}");
    }

    #[test]
    fn restores_are_counted_and_timed() {
        let mut registry = Registry::default();
        let m = StageMetrics::new(&mut registry, "feature-processor", "fp-0");
        m.record_restored(100);
        m.record_restored(20);
        m.record_restore(Duration::from_millis(300));
        m.record_restore(Duration::from_millis(20));
        assert_eq!(m.restored_records(), 120);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("eventpipe_state_restored_records_total 120"), "{text}");
        assert!(text.contains("eventpipe_state_restore_seconds_count 2"), "{text}");
        assert!(text.contains("eventpipe_state_restore_seconds_sum 0.32"), "{text}");
    }
}
