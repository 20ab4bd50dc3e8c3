//! The one place that turns settings into Kafka clients.
//!
//! Every producer, consumer and admin client of eventpipe is configured here, so the
//! bootstrap servers, the passed-through security properties, batching and the
//! partitioner are the same everywhere. Producers hash keys with `murmur2_random`, the
//! Java client's partitioner, so keys land on the same partition as they would from
//! Kafka Streams or any JVM client (co-partitioning across writers).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{
    BaseRecord, DeliveryFuture, FutureProducer, FutureRecord, Partitioner, Producer, ProducerContext, ThreadedProducer,
};

use crate::topics::TopicSpec;

/// Where the brokers are and how to talk to them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KafkaSettings {
    /// host:port,...
    pub bootstrap_servers: String,
    /// librdkafka properties passed through as is (security.protocol, sasl.*, ssl.*, ...).
    pub properties: BTreeMap<String, String>,
}

/// librdkafka's default `message.max.bytes`.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

impl KafkaSettings {
    /// Settings for a broker list with no extra properties.
    pub fn plain(bootstrap_servers: impl Into<String>) -> Self {
        KafkaSettings { bootstrap_servers: bootstrap_servers.into(), properties: BTreeMap::new() }
    }

    fn base(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap_servers).set("client.id", client_id);
        config
    }

    /// Applies the user's pass-through properties last, so they can override our defaults.
    fn finish(&self, mut config: ClientConfig) -> ClientConfig {
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// The producers' `message.max.bytes`: the user's pass-through value, else
    /// librdkafka's default.
    pub fn max_message_bytes(&self) -> usize {
        self.properties
            .get("message.max.bytes")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES)
    }

    /// An idempotent, acks=all producer config with throughput-friendly batching.
    pub fn producer_config(&self, client_id: &str) -> ClientConfig {
        let mut config = self.base(client_id);
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("batch.size", "1000000")
            .set("batch.num.messages", "10000")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "200000")
            .set("message.timeout.ms", "120000");
        self.finish(config)
    }

    /// A transactional producer config (`transactional.id`), for consume-transform-produce.
    /// `transaction.timeout.ms` is short, as in Kafka Streams, so a dead instance's open
    /// transaction is aborted by the broker quickly.
    pub fn transactional_producer_config(&self, client_id: &str, transactional_id: &str) -> ClientConfig {
        let mut config = self.producer_config(client_id);
        // librdkafka requires message.timeout.ms <= transaction.timeout.ms.
        config
            .set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", "10000")
            .set("message.timeout.ms", "10000");
        self.finish(config)
    }

    /// A consumer config for group `group_id`: manual commits, `read_committed`.
    pub fn consumer_config(&self, client_id: &str, group_id: &str) -> ClientConfig {
        let mut config = self.base(client_id);
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", "10000")
            .set("fetch.wait.max.ms", "100");
        self.finish(config)
    }

    /// An admin client config.
    pub fn admin_config(&self, client_id: &str) -> ClientConfig {
        self.finish(self.base(client_id))
    }

    /// Creates the idempotent producer.
    pub fn idempotent_producer(&self, client_id: &str) -> Result<FutureProducer, KafkaError> {
        self.producer_config(client_id).create()
    }
}

/// Hands `record` to the producer, waiting (serving delivery reports) while its queue
/// is full. For blocking loops; async code can await an older delivery instead.
// The closures pass on rdkafka's own result, which hands the record back on error.
#[allow(clippy::result_large_err)]
pub fn send_waiting<K, P>(
    producer: &FutureProducer,
    record: FutureRecord<'_, K, P>,
) -> Result<DeliveryFuture, KafkaError>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    send_while_full(
        record,
        |r| producer.send_result(r),
        || {
            producer.poll(Duration::from_millis(5));
        },
    )
}

/// Hands `record` to a [`ThreadedProducer`] (whose own thread serves the delivery
/// reports, to its context), waiting while the producer's queue is full.
#[allow(clippy::result_large_err)]
pub fn send_threaded<C, K, P>(
    producer: &ThreadedProducer<C>,
    record: BaseRecord<'_, K, P, C::DeliveryOpaque>,
) -> Result<(), KafkaError>
where
    C: ProducerContext + 'static,
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    // The polling thread frees room as acknowledgements arrive.
    send_while_full(record, |r| producer.send(r), || std::thread::sleep(Duration::from_millis(1)))
}

/// Sends `record` with `send`, which hands it back when the producer's queue is full:
/// then `wait`s for room and tries again. Any other error is returned.
fn send_while_full<R, T>(
    mut record: R,
    mut send: impl FnMut(R) -> Result<T, (KafkaError, R)>,
    mut wait: impl FnMut(),
) -> Result<T, KafkaError> {
    loop {
        match send(record) {
            Ok(sent) => return Ok(sent),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                wait();
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// `record` as a [`BaseRecord`] carrying `opaque` to the producer context's delivery
/// callback.
pub fn with_opaque<'a, K, P, D>(record: FutureRecord<'a, K, P>, opaque: D) -> BaseRecord<'a, K, P, D>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
    D: rdkafka::util::IntoOpaque,
{
    let FutureRecord { topic, partition, payload, key, timestamp, headers } = record;
    BaseRecord { topic, partition, payload, key, timestamp, headers, delivery_opaque: opaque }
}

/// Waits up to `timeout` until every record `producer` holds is delivered or has
/// failed (its delivery report served), as `Producer::flush` promises, but without that
/// call's stall.
///
/// rust-rdkafka's `flush` (and so `commit_transaction`, which calls it) serves the
/// delivery-report queue itself, in waits of up to 100 ms. On a `FutureProducer` or a
/// `ThreadedProducer` a thread of its own serves that queue, so each such wait runs its
/// whole 100 ms: every flush or transaction commit with a record in flight took at least
/// 100 ms, which capped an exactly-once stage at a few transactions per second.
/// librdkafka's own flush, with delivery reports as events (how rust-rdkafka configures
/// it), instead waits for the count of outstanding records to reach zero while that
/// thread serves the reports.
pub fn flush<C, Part>(producer: &impl Producer<C, Part>, timeout: Duration) -> Result<(), KafkaError>
where
    C: ProducerContext<Part>,
    Part: Partitioner,
{
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the pointer is the producer's live librdkafka handle, borrowed for the
    // call, and rd_kafka_flush is thread-safe.
    let code = unsafe { rdkafka::bindings::rd_kafka_flush(producer.client().native_ptr(), millis) };
    match code {
        rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => Ok(()),
        code => Err(KafkaError::Flush(code.into())),
    }
}

/// Creates the given topics, leaving any that already exist as they are.
pub async fn create_topics(settings: &KafkaSettings, topics: &[TopicSpec]) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = settings.admin_config("eventpipe-admin").create()?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|spec| {
            let mut topic = NewTopic::new(&spec.name, spec.partitions, TopicReplication::Fixed(spec.replicas));
            for (k, v) in &spec.config {
                topic = topic.set(k, v);
            }
            topic
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                tracing::error!(topic = %name, %code, "cannot create topic");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;
    use crate::broker::TestBroker;
    use crate::topics::Topic;

    /// Through a real broker protocol: when `flush` returns, every record sent before it
    /// has its delivery report, and the producer holds nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flush_returns_once_every_record_is_delivered() {
        let broker = TestBroker::start("flush").await;
        let producer = broker.kafka.idempotent_producer("flush-test").unwrap();
        let topic = broker.topic(Topic::Transactions);
        let mut deliveries = Vec::new();
        for i in 0..2_000 {
            let key = format!("c-{}", i % 37);
            let record = FutureRecord::to(&topic).key(&key).payload("x");
            deliveries.push(send_waiting(&producer, record).unwrap());
        }
        assert!(producer.in_flight_count() > 0, "records still on their way before the flush");
        tokio::task::block_in_place(|| flush(&producer, Duration::from_secs(30))).unwrap();
        assert_eq!(producer.in_flight_count(), 0);
        let delivered =
            deliveries.into_iter().filter_map(|d| d.now_or_never()).filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(delivered, 2_000, "every delivery report was in before flush returned");
    }

    #[test]
    fn user_properties_override_defaults() {
        let mut settings = KafkaSettings::plain("b:9092");
        settings.properties.insert("linger.ms".into(), "50".into());
        settings.properties.insert("security.protocol".into(), "SASL_SSL".into());
        let config = settings.producer_config("p");
        assert_eq!(config.get("linger.ms"), Some("50"));
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        let consumer = settings.consumer_config("c", "g");
        assert_eq!(consumer.get("isolation.level"), Some("read_committed"));
        assert_eq!(consumer.get("security.protocol"), Some("SASL_SSL"));
        let tx = settings.transactional_producer_config("t", "demo.feature-processor.pod-0");
        assert_eq!(tx.get("transactional.id"), Some("demo.feature-processor.pod-0"));
        assert_eq!(tx.get("transaction.timeout.ms"), Some("10000"));
    }

    #[test]
    fn max_message_bytes_is_the_users_or_librdkafkas_default() {
        let mut settings = KafkaSettings::plain("b:9092");
        assert_eq!(settings.max_message_bytes(), 1_000_000);
        settings.properties.insert("message.max.bytes".into(), "5242880".into());
        assert_eq!(settings.max_message_bytes(), 5_242_880);
        assert_eq!(settings.producer_config("p").get("message.max.bytes"), Some("5242880"));
    }
}
