//! Producer throughput, printed (not asserted):
//!
//! 1. generation + JSON serialization alone, on one core (target ≥ 300 000 events/s);
//! 2. backfill into a broker (the embedded one, or EVENTPIPE_BENCH_BOOTSTRAP_SERVERS),
//!    next to a raw rdkafka producer sending the same bytes to the same broker, so the
//!    two compare as a ratio within one run.
//!
//! Run: `cargo bench -p producer --bench producer` (BENCH_CUSTOMERS, BENCH_DAYS to size).

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use prometheus_client::registry::Registry;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;

use eventpipe_common::broker::EmbeddedBroker;
use eventpipe_common::kafka::{create_topics, send_waiting, KafkaSettings};
use eventpipe_common::stats::StageMetrics;
use eventpipe_common::topics::{resolve_topics, Topic};
use producer::publish::{backfill, Publisher};
use producer::simulator::{SimConfig, Simulator};

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn sim(customers: u32) -> Simulator {
    Simulator::new(SimConfig { customers, seed: 42, start: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() })
}

fn generation(customers: u32, days: u32) {
    // Generation alone.
    let mut s = sim(customers);
    let mut events = Vec::new();
    let started = Instant::now();
    let mut count = 0usize;
    for _ in 0..days {
        events.clear();
        s.next_day(&mut events);
        count += events.len();
    }
    let gen_secs = started.elapsed().as_secs_f64();

    // Generation + serialization, as the producer does it.
    let mut s = sim(customers);
    let mut buf = Vec::with_capacity(512);
    let mut bytes = 0usize;
    let started = Instant::now();
    for _ in 0..days {
        events.clear();
        s.next_day(&mut events);
        for e in &events {
            buf.clear();
            e.write_json(&mut buf);
            bytes += buf.len();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "generation only:            {:>10.0} events/s  ({count} events, {customers} customers x {days} days)",
        count as f64 / gen_secs
    );
    println!(
        "generation + serialization: {:>10.0} events/s  ({:.0} bytes/event, one core)",
        count as f64 / secs,
        bytes as f64 / count as f64
    );
}

async fn broker_backfill(customers: u32, days: u32) {
    let external = std::env::var("EVENTPIPE_BENCH_BOOTSTRAP_SERVERS").ok().filter(|s| !s.is_empty());
    let pipeline = format!("bench-{}", std::process::id());
    let topics = resolve_topics(&pipeline, &Default::default());
    let (_embedded, kafka) = match external {
        Some(b) => {
            let kafka = KafkaSettings::plain(b);
            create_topics(&kafka, &topics).await.expect("create topics");
            (None, kafka)
        }
        None => {
            let broker = EmbeddedBroker::start(&topics).expect("embedded broker");
            let kafka = KafkaSettings::plain(broker.bootstrap_servers());
            (Some(broker), kafka)
        }
    };
    let where_ = if _embedded.is_some() { "embedded mock broker" } else { "external broker" };

    // Raw rdkafka: the same serialized bytes, same producer config, no simulator.
    let events = sim(customers).run(days);
    let payloads: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| {
            let mut b = Vec::new();
            e.write_json(&mut b);
            (e.customer_id().to_owned(), b)
        })
        .collect();
    let raw: FutureProducer = kafka.idempotent_producer("bench-raw").unwrap();
    let topic = Topic::Transactions.name(&pipeline);
    warm_up(&raw, &topic).await;
    let started = Instant::now();
    let mut pending = Vec::with_capacity(payloads.len());
    for (key, payload) in &payloads {
        let record = FutureRecord::to(&topic).key(key.as_str()).payload(payload.as_slice());
        pending.push(send_waiting(&raw, record).unwrap());
    }
    for f in pending {
        f.await.unwrap().unwrap();
    }
    let raw_secs = started.elapsed().as_secs_f64();
    raw.flush(Duration::from_secs(10)).unwrap();

    // The producer's backfill path: simulate, serialize, trace headers, acks.
    let mut registry = Registry::default();
    let metrics = StageMetrics::new(&mut registry, "producer", "bench");
    let producer = kafka.idempotent_producer("bench-backfill").unwrap();
    warm_up(&producer, &topic).await;
    let mut publisher = Publisher::new(producer, &pipeline, metrics);
    let mut s = sim(customers);
    let started = Instant::now();
    let summary = backfill(&mut s, days, &mut publisher, &CancellationToken::new()).await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    let raw_rate = payloads.len() as f64 / raw_secs;
    let rate = summary.events as f64 / secs;
    println!("raw rdkafka produce:        {raw_rate:>10.0} events/s  ({} events, {where_}, acks=all)", payloads.len());
    println!("producer backfill:          {rate:>10.0} events/s  ({} events, {where_}, acks=all)", summary.events);
    println!("backfill / raw ratio:       {:>10.2}", rate / raw_rate);
}

/// Connects and gets the idempotent producer id before timing starts.
async fn warm_up(producer: &FutureProducer, topic: &str) {
    producer
        .send(FutureRecord::to(topic).key("warm-up").payload("{}"), Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .expect("warm-up record");
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful: run small.
    let quick = !std::env::args().any(|a| a == "--bench");
    let customers = env_u32("BENCH_CUSTOMERS", if quick { 200 } else { 10_000 });
    let days = env_u32("BENCH_DAYS", if quick { 3 } else { 30 });
    generation(customers, days);
    let broker_days = env_u32("BENCH_BROKER_DAYS", if quick { 2 } else { 10 });
    let broker_customers = env_u32("BENCH_BROKER_CUSTOMERS", if quick { 200 } else { 5_000 });
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(broker_backfill(broker_customers, broker_days));
}
