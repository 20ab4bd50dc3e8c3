//! Shared fixtures of the feature-processor's Kafka tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::NaiveDate;
use prometheus_client::registry::Registry;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use eventpipe_common::broker::TestBroker;
use eventpipe_common::config::{PipelineFile, RuntimeArgs, Settings};
use eventpipe_common::events::{CustomerFeatures, RiskScore, TransactionEvent};
use eventpipe_common::http::Readiness;
use eventpipe_common::stats::StageMetrics;
use eventpipe_common::stream::StageHandles;
pub use eventpipe_common::testing::{counts, wait_until};
use eventpipe_common::topics::Topic;
use feature_processor::changelog::{self, CustomerDay};
use feature_processor::model::RiskModel;
use feature_processor::model_watch::ModelHandle;
use feature_processor::processor::{Core, CoreConfig};
use feature_processor::settings::{FeatureProcessorSettings, BUILT_IN_MODEL};
use feature_processor::stream::{self, StreamError};
use feature_processor::window::day_number;
use producer::simulator::{SimConfig, Simulator};

pub fn built_in_model() -> RiskModel {
    serde_json::from_str(BUILT_IN_MODEL).unwrap()
}

/// Settings of instance `instance` of the feature-processor on `broker`, with the
/// stage section given as YAML.
pub fn settings(broker: &TestBroker, instance: &str, section: &str) -> (Settings, FeatureProcessorSettings) {
    settings_with_env(broker, instance, section, &[])
}

/// As [`settings`], with environment variables (e.g. `KAFKA_PROP_*`) as a pod has them.
pub fn settings_with_env(
    broker: &TestBroker,
    instance: &str,
    section: &str,
    env: &[(&str, &str)],
) -> (Settings, FeatureProcessorSettings) {
    let args = RuntimeArgs {
        pipeline_name: Some(broker.pipeline.clone()),
        bootstrap_servers: Some(broker.kafka.bootstrap_servers.clone()),
        pod_name: Some(instance.to_owned()),
        http_port: Some("0".into()),
        ..Default::default()
    };
    let yaml = format!("stages:\n  feature-processor:\n{}", indent(section));
    let file = PipelineFile::parse(&yaml).unwrap();
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let settings = Settings::resolve("feature-processor", file, &args, env).unwrap();
    let section: FeatureProcessorSettings = settings.stage_settings().unwrap();
    (settings, section)
}

fn indent(section: &str) -> String {
    let body: String = section.lines().map(|l| format!("    {l}\n")).collect();
    if body.is_empty() {
        "    {}\n".into()
    } else {
        body
    }
}

/// A processor running in a thread of this test process.
pub struct Running {
    pub shutdown: CancellationToken,
    pub readiness: Readiness,
    pub metrics: Arc<StageMetrics>,
    /// What `/metrics` would show.
    pub registry: Registry,
    pub handle: JoinHandle<Result<(), StreamError>>,
}

impl Running {
    pub fn stop(self) {
        self.shutdown.cancel();
        self.handle.join().unwrap().unwrap();
    }
}

/// Logs of the processors under test (RUST_LOG, shown with --nocapture).
pub fn logs() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let guard =
            eventpipe_common::telemetry::init("feature-processor-test", eventpipe_common::config::LogFormat::Pretty);
        std::mem::forget(guard);
    });
}

pub fn start(settings: Settings, section: &FeatureProcessorSettings, model: ModelHandle) -> Running {
    logs();
    let mut registry = Registry::default();
    let metrics = StageMetrics::new(&mut registry, "feature-processor", &settings.instance);
    let shutdown = CancellationToken::new();
    let readiness = Readiness::default();
    let stage =
        StageHandles { settings, metrics: metrics.clone(), readiness: readiness.clone(), shutdown: shutdown.clone() };
    let (config, core) = (section.stream_config(), section.core_config());
    let handle = std::thread::spawn(move || stream::run(stage, config, core, model));
    Running { shutdown, readiness, metrics, registry, handle }
}

/// Simulated transactions (outcomes left out), in the order the producer sends them.
pub fn simulated(customers: u32, days: u32, seed: u64) -> Vec<TransactionEvent> {
    let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    Simulator::new(SimConfig { customers, seed, start }).run_transactions(days)
}

pub async fn send_raw(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    producer
        .send(FutureRecord::to(topic).key(key).payload(payload), Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

pub async fn send_events(broker: &TestBroker, events: &[TransactionEvent]) {
    send_in_chunks(broker, events, events.len().max(1), || {}).await;
}

/// Sends `events` in chunks of `chunk` records, 50 ms apart, calling `between` after
/// each (to act on running stages mid-stream), then waits for every acknowledgement.
pub async fn send_in_chunks(broker: &TestBroker, events: &[TransactionEvent], chunk: usize, mut between: impl FnMut()) {
    let producer = broker.kafka.idempotent_producer("test-input").unwrap();
    let topic = broker.topic(Topic::Transactions);
    let mut pending = Vec::with_capacity(events.len());
    for records in events.chunks(chunk) {
        for e in records {
            let payload = serde_json::to_vec(e).unwrap();
            let record = FutureRecord::to(&topic).key(e.customer_id.as_str()).payload(&payload);
            pending.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        }
        if chunk < events.len() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        between();
    }
    for p in pending {
        p.await.unwrap().unwrap();
    }
}

/// The RiskScores the pure core emits for `events`, in order: what the stream must emit.
pub fn reference_scores(events: &[TransactionEvent], model: RiskModel) -> (Vec<RiskScore>, Core) {
    let mut core = Core::new(CoreConfig::default(), Arc::new(model));
    let scores = events.iter().filter_map(|e| core.apply(0, e).ok().and_then(|p| p.score)).collect();
    (scores, core)
}

/// Reads `topic` from the beginning with read_committed until `expected` records have
/// arrived and then `quiet` passes with nothing new (to catch duplicates), or panics
/// after `timeout`.
pub fn read_committed(
    broker: &TestBroker,
    topic: Topic,
    expected: usize,
    quiet: Duration,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    broker.read_committed(topic, expected, quiet, timeout)
}

pub fn scores_of(messages: &[OwnedMessage]) -> Vec<RiskScore> {
    messages.iter().map(|m| serde_json::from_slice(m.payload().unwrap()).unwrap()).collect()
}

/// Reads the risk scores (read_committed) until as many as `expected` have come and
/// `quiet` has passed with nothing new, and asserts each expected score came once
/// ([`assert_each_score_once`]).
pub fn assert_scores_each_once(broker: &TestBroker, expected: &[RiskScore], quiet: Duration, timeout: Duration) {
    let got = scores_of(&read_committed(broker, Topic::RiskScores, expected.len(), quiet, timeout));
    assert_each_score_once(&got, expected);
}

/// Asserts that `got` holds each of the `expected` scores exactly once (by event id):
/// none repeated, none missing, none extra, and each with the expected values (a score
/// computed from state that applied some input twice would differ).
pub fn assert_each_score_once(got: &[RiskScore], expected: &[RiskScore]) {
    let counts = counts(got.iter().map(|s| s.event_id));
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "duplicates: {repeated:?}");
    assert_eq!(
        counts.keys().copied().collect::<std::collections::HashSet<_>>(),
        expected.iter().map(|s| s.event_id).collect::<std::collections::HashSet<_>>()
    );
    let by_id: HashMap<_, _> = expected.iter().map(|s| (s.event_id, s)).collect();
    for score in got {
        assert_eq!(score, by_id[&score.event_id], "the score emitted for {}", score.trigger_event_id);
    }
}

/// Asserts that the committed changelog rebuilds, for each of `customers` customers,
/// exactly the reference core's window (buckets, salaries, last score, latest event
/// time), and that each customer's latest `customer_id` record holds the reference's
/// features.
pub fn assert_changelog_matches(broker: &TestBroker, customers: usize, reference: &Core) {
    let changelog =
        read_committed(broker, Topic::CustomerFeatures, customers, Duration::from_secs(2), Duration::from_secs(60));
    let mut rebuilt = Core::new(CoreConfig::default(), Arc::new(built_in_model()));
    let mut latest: HashMap<String, CustomerFeatures> = HashMap::new();
    for m in &changelog {
        rebuilt.restore_record(0, m.key(), m.payload()).unwrap();
        let key = std::str::from_utf8(m.key().unwrap()).unwrap();
        match (changelog::parse_day_key(key), m.payload()) {
            (Some(_), Some(payload)) => {
                let record: CustomerDay = serde_json::from_slice(payload).unwrap();
                assert_eq!(
                    changelog::parse_day_key(key),
                    Some((record.customer_id.as_str().into(), day_number(record.bucket.day))),
                    "the customer and the day are in the key"
                );
            }
            (None, Some(payload)) => {
                let record: CustomerFeatures = serde_json::from_slice(payload).unwrap();
                assert_eq!(key, changelog::customer_key(&record.customer_id));
                let days: Vec<_> = record.days.iter().map(|b| b.day).collect();
                assert_eq!(days, [record.as_of], "the customer record carries its latest day only");
                latest.insert(record.customer_id.clone(), record);
            }
            (_, None) => {}
        }
    }
    assert_eq!(latest.len(), customers);
    assert_eq!(rebuilt.customers_in(0), customers);
    for (customer, record) in &latest {
        let window = reference.window(0, customer).unwrap();
        assert_eq!(record.features, window.features(), "{customer}");
        assert_eq!(rebuilt.window(0, customer).unwrap(), window, "{customer}");
    }
}
