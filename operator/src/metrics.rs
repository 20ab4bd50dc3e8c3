//! The operator's Prometheus metrics: reconciles, failures by reason, durations, and
//! whether this replica leads.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The `reason` label of a failed reconcile.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// The operator's metrics.
pub struct Metrics {
    pub reconciles: Counter,
    pub failures: Family<ReasonLabel, Counter>,
    pub duration: Histogram,
    pub leader: Gauge<i64, AtomicI64>,
}

impl Metrics {
    /// New metrics, registered in `registry` under `eventpipe_operator_`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics {
            reconciles: Counter::default(),
            failures: Family::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            leader: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("eventpipe_operator");
        r.register("reconciles", "Reconciles of EventPipelines", m.reconciles.clone());
        r.register("reconcile_failures", "Failed reconciles, by reason", m.failures.clone());
        r.register("reconcile_duration_seconds", "Time one reconcile took", m.duration.clone());
        r.register("leader", "1 while this replica holds the leader lease", m.leader.clone());
        m
    }

    /// Records one reconcile.
    pub fn observe(&self, took: Duration, failure: Option<&str>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(reason) = failure {
            self.failures.get_or_create(&ReasonLabel { reason: reason.to_owned() }).inc();
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(&mut Registry::default())
    }
}
