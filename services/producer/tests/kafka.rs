//! The producer through a real Kafka protocol: the embedded broker by default, or the
//! broker in EVENTPIPE_TEST_BOOTSTRAP_SERVERS.

use std::collections::HashMap;
use std::time::Duration;

use chrono::NaiveDate;
use futures::StreamExt;
use prometheus_client::registry::Registry;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use eventpipe_common::broker::TestBroker;
use eventpipe_common::config::LogFormat;
use eventpipe_common::stats::StageMetrics;
use eventpipe_common::telemetry::{self, header_str, TRACEPARENT};
use eventpipe_common::topics::Topic;
use producer::publish::{backfill, Publisher};
use producer::simulator::{SimConfig, Simulator};

fn validator(stem: &str) -> jsonschema::Validator {
    let path = format!("{}/../common/schemas/{stem}.schema.json", env!("CARGO_MANIFEST_DIR"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::options().should_validate_formats(true).build(&schema).unwrap()
}

fn is_traceparent(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    parts.len() == 4
        && parts[0] == "00"
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[1..3].iter().all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
        && parts[1] != "00000000000000000000000000000000"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_reaches_a_consumer_group_keyed_by_customer_with_trace_context() {
    let _telemetry = telemetry::init("producer-test", LogFormat::Pretty);
    let broker = TestBroker::start("producer-it").await;
    let mut registry = Registry::default();
    let metrics = StageMetrics::new(&mut registry, "producer", "test-0");
    let kafka_producer = broker.kafka.idempotent_producer("producer-test").unwrap();
    let mut publisher = Publisher::new(kafka_producer, &broker.pipeline, metrics.clone());
    let mut sim =
        Simulator::new(SimConfig { customers: 150, seed: 3, start: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap() });
    let summary = backfill(&mut sim, 45, &mut publisher, &CancellationToken::new()).await.unwrap();
    assert_eq!(summary.days, 45);
    assert!(summary.events > 5_000, "{summary:?}");
    let stats = metrics.take_window(chrono::Utc::now());
    assert_eq!(stats.produced, summary.events, "every record acknowledged");

    let consumer: StreamConsumer =
        broker.kafka.consumer_config("producer-test-reader", &format!("{}.reader", broker.pipeline)).create().unwrap();
    let transactions = broker.topic(Topic::Transactions);
    let outcomes = broker.topic(Topic::CustomerOutcomes);
    consumer.subscribe(&[&transactions, &outcomes]).unwrap();

    let tx_schema = validator("transaction-event");
    let outcome_schema = validator("customer-outcome");
    let mut partition_of: HashMap<(String, String), i32> = HashMap::new();
    let mut last_time: HashMap<String, String> = HashMap::new();
    let mut seen = 0u64;
    let mut outcomes_seen = 0u64;
    let mut stream = consumer.stream();
    while seen < summary.events {
        let message = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .unwrap_or_else(|_| panic!("timed out after {seen} of {} records", summary.events))
            .unwrap()
            .unwrap();
        seen += 1;
        let key = std::str::from_utf8(message.key().unwrap()).unwrap().to_owned();
        let event: Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
        assert_eq!(event["customer_id"], key.as_str(), "key is the customer id");
        let schema = if message.topic() == transactions {
            &tx_schema
        } else {
            outcomes_seen += 1;
            &outcome_schema
        };
        let errors: Vec<String> = schema.iter_errors(&event).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{event} does not match its schema: {errors:?}");
        let partition = *partition_of.entry((message.topic().to_owned(), key.clone())).or_insert(message.partition());
        assert_eq!(partition, message.partition(), "customer {key} spread over partitions");
        let traceparent = header_str(message.headers().expect("headers"), TRACEPARENT).expect("traceparent header");
        assert!(is_traceparent(traceparent), "{traceparent}");
        if message.topic() == transactions {
            let time = event["event_time"].as_str().unwrap().to_owned();
            if let Some(prev) = last_time.insert(key.clone(), time.clone()) {
                assert!(prev <= time, "customer {key}: {time} after {prev}");
            }
        }
    }
    assert_eq!(last_time.len(), 150, "every customer has transactions");
    assert!(outcomes_seen > 0, "some customers defaulted in 45 days");
    // Keys spread over the partitions (murmur2 over 150 customers hits all six).
    let partitions: std::collections::HashSet<i32> =
        partition_of.iter().filter(|((t, _), _)| *t == transactions).map(|(_, p)| *p).collect();
    assert_eq!(partitions.len(), 6);
}
