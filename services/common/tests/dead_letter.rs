//! The dead-letter writer through a real Kafka protocol.

use std::time::Duration;

use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use eventpipe_common::broker::TestBroker;
use eventpipe_common::dead_letter::{headers, DeadLetter, DeadLetterWriter};
use eventpipe_common::telemetry::{header_str, TRACEPARENT};
use eventpipe_common::topics::Topic;

async fn next(consumer: &StreamConsumer) -> rdkafka::message::OwnedMessage {
    tokio::time::timeout(Duration::from_secs(60), consumer.stream().next())
        .await
        .expect("a record within 60 s")
        .unwrap()
        .unwrap()
        .detach()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_keeps_key_bytes_and_says_where_from_and_why() {
    let broker = TestBroker::start("dlq-it").await;
    let producer = broker.kafka.idempotent_producer("dlq-test").unwrap();
    let transactions = broker.topic(Topic::Transactions);
    let garbage: &[u8] = b"{not json\xff";
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    producer
        .send(
            FutureRecord::to(&transactions)
                .key("C0000042")
                .payload(garbage)
                .headers(OwnedHeaders::new().insert(Header { key: TRACEPARENT, value: Some(tp) })),
            Duration::from_secs(30),
        )
        .await
        .unwrap();

    let consumer: StreamConsumer =
        broker.kafka.consumer_config("dlq-reader", &format!("{}.a", broker.pipeline)).create().unwrap();
    consumer.subscribe(&[&transactions]).unwrap();
    let original = next(&consumer).await;

    let writer = DeadLetterWriter::new(broker.topic(Topic::DeadLetter), "feature-processor");
    let letter = DeadLetter::from_message(&original, "malformed", "expected ident at line 1 column 2");
    writer.send(&producer, &letter).await.unwrap();

    let dlq: StreamConsumer =
        broker.kafka.consumer_config("dlq-reader", &format!("{}.b", broker.pipeline)).create().unwrap();
    dlq.subscribe(&[&broker.topic(Topic::DeadLetter)]).unwrap();
    let dead = next(&dlq).await;
    assert_eq!(dead.key(), Some(&b"C0000042"[..]));
    assert_eq!(dead.payload(), Some(garbage));
    let h = dead.headers().unwrap();
    assert_eq!(header_str(h, headers::SOURCE_TOPIC), Some(transactions.as_str()));
    assert_eq!(header_str(h, headers::SOURCE_PARTITION), Some(original.partition().to_string().as_str()));
    assert_eq!(header_str(h, headers::SOURCE_OFFSET), Some(original.offset().to_string().as_str()));
    assert_eq!(header_str(h, headers::STAGE), Some("feature-processor"));
    assert_eq!(header_str(h, headers::REASON), Some("malformed"));
    assert_eq!(header_str(h, headers::ERROR), Some("expected ident at line 1 column 2"));
    assert_eq!(header_str(h, TRACEPARENT), Some(tp));
}
