//! The dashboard's own Prometheus metrics, next to the stage metrics every service has
//! (`eventpipe_records_consumed` etc.): what it read per topic, what it skipped and why,
//! how much it holds and how many live streams are open.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label: the logical topic name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

/// Labels of a skipped record: logical topic and reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MalformedLabel {
    pub topic: String,
    pub reason: String,
}

/// The dashboard's metrics (prefix `eventpipe_dashboard_`).
#[derive(Debug, Clone, Default)]
pub struct DashboardMetrics {
    /// Records read, by topic.
    pub records: Family<TopicLabel, Counter>,
    /// Records skipped as unusable, by topic and reason.
    pub malformed: Family<MalformedLabel, Counter>,
    /// Customers held in memory.
    pub customers: Gauge,
    /// Open `/api/stream` connections.
    pub stream_clients: Gauge,
    /// 1 once the catch-up at start is done.
    pub caught_up: Gauge,
    /// Seconds the catch-up took.
    pub catch_up_seconds: Gauge<f64, AtomicU64>,
}

impl DashboardMetrics {
    /// New, unregistered metrics.
    pub fn new() -> Arc<Self> {
        Arc::new(DashboardMetrics::default())
    }

    /// Registers the metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("eventpipe_dashboard");
        r.register("records", "Records read by the dashboard, by topic", self.records.clone());
        r.register(
            "malformed_records",
            "Records the dashboard skipped as unusable, by topic and reason",
            self.malformed.clone(),
        );
        r.register("customers_tracked", "Customers held in memory", self.customers.clone());
        r.register("stream_clients", "Open /api/stream connections", self.stream_clients.clone());
        r.register("caught_up", "1 once the catch-up at start is done", self.caught_up.clone());
        r.register("catch_up_seconds", "Seconds the catch-up at start took", self.catch_up_seconds.clone());
    }

    /// Counts one record read from `topic`.
    pub fn record_read(&self, topic: &str) {
        self.records.get_or_create(&TopicLabel { topic: topic.to_owned() }).inc();
    }

    /// Counts one record of `topic` skipped for `reason`.
    pub fn record_malformed(&self, topic: &str, reason: &str) {
        self.malformed.get_or_create(&MalformedLabel { topic: topic.to_owned(), reason: reason.to_owned() }).inc();
    }
}
