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

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;

use crate::kafka::{create_topics, KafkaSettings};
use crate::topics::{resolve_topics, TopicSpec};

/// Env var naming an external broker for the integration tests.
pub const TEST_BOOTSTRAP_ENV: &str = "EVENTPIPE_TEST_BOOTSTRAP_SERVERS";

/// librdkafka's mock cluster, owned by a thread of its own (the handle is not `Send`).
pub struct EmbeddedBroker {
    bootstrap_servers: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a one-broker mock cluster with `topics` created.
    pub fn start(topics: &[TopicSpec]) -> Result<Self, KafkaError> {
        let topics: Vec<(String, i32)> = topics
            .iter()
            .map(|t| (t.name.clone(), t.partitions))
            .collect();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
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
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Runs until the owner drops the broker (or the sender goes away).
                let _ = stop_rx.recv();
                drop(cluster);
            })
            .expect("spawn embedded broker thread");
        let bootstrap_servers = ready_rx.recv().expect("embedded broker thread answers")?;
        Ok(EmbeddedBroker {
            bootstrap_servers,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The broker list to connect to.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        drop(self.stop.take());
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
}

static NEXT_TEST_PIPELINE: AtomicU32 = AtomicU32::new(0);

impl TestBroker {
    /// Starts (or connects to) a broker and creates a fresh pipeline's topics at their
    /// default partition counts. `name` prefixes the pipeline name.
    pub async fn start(name: &str) -> Self {
        let n = NEXT_TEST_PIPELINE.fetch_add(1, Ordering::Relaxed);
        let pipeline = format!("{name}-{}-{n}", std::process::id());
        let topics = resolve_topics(&pipeline, &Default::default());
        match std::env::var(TEST_BOOTSTRAP_ENV)
            .ok()
            .filter(|s| !s.is_empty())
        {
            Some(bootstrap) => {
                let kafka = KafkaSettings::plain(bootstrap);
                create_topics(&kafka, &topics)
                    .await
                    .expect("create topics on the external test broker");
                TestBroker {
                    pipeline,
                    kafka,
                    topics,
                    external: true,
                    _embedded: None,
                }
            }
            None => {
                let broker = EmbeddedBroker::start(&topics).expect("start the embedded broker");
                let kafka = KafkaSettings::plain(broker.bootstrap_servers());
                TestBroker {
                    pipeline,
                    kafka,
                    topics,
                    external: false,
                    _embedded: Some(broker),
                }
            }
        }
    }

    /// The Kafka name of a topic of this test's pipeline.
    pub fn topic(&self, topic: crate::topics::Topic) -> String {
        topic.name(&self.pipeline)
    }
}
