//! Shared fixtures of the dashboard's integration tests: a dashboard started in this
//! process on a test broker, events to feed it, and a tiny HTTP client.
#![allow(dead_code)]

pub mod cdp;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use dashboard::app::Dashboard;
use dashboard::settings::DashboardSettings;
use eventpipe_common::broker::TestBroker;
use eventpipe_common::config::{PipelineFile, RuntimeArgs, Settings};
use eventpipe_common::events::{
    CustomerOutcome, Intervention, LatencyPercentiles, Outcome, RiskBand, RiskFactor, RiskScore, StageStats,
    SCHEMA_VERSION,
};
use eventpipe_common::topics::Topic;

/// The dashboard's settings on `broker`, HTTP on a free port, with the stage section as
/// YAML flow mapping (e.g. `{top_n: 3}`).
pub fn settings(broker: &TestBroker, section: &str) -> (Settings, DashboardSettings) {
    let args = RuntimeArgs {
        pipeline_name: Some(broker.pipeline.clone()),
        bootstrap_servers: Some(broker.kafka.bootstrap_servers.clone()),
        pod_name: Some("dashboard-test".into()),
        http_port: Some("0".into()),
        log_format: Some("pretty".into()),
        ..Default::default()
    };
    let file = PipelineFile::parse(&format!("stages:\n  dashboard: {section}\n")).unwrap();
    let settings = Settings::resolve("dashboard", file, &args, []).unwrap();
    let section: DashboardSettings = settings.stage_settings().unwrap();
    section.validate().unwrap();
    (settings, section)
}

/// Starts a dashboard in this process.
pub async fn start(broker: &TestBroker, section: &str) -> Dashboard {
    let (settings, section) = settings(broker, section);
    Dashboard::start(settings, section).await.expect("start the dashboard")
}

/// Day `d` (plus `h` hours) after 2026-03-01, UTC.
pub fn day(d: i64) -> DateTime<Utc> {
    "2026-03-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::days(d)
}

pub fn band_of(score: f64) -> RiskBand {
    match score {
        s if s >= 0.5 => RiskBand::Critical,
        s if s >= 0.2 => RiskBand::High,
        s if s >= 0.05 => RiskBand::Medium,
        _ => RiskBand::Low,
    }
}

pub const FACTORS: [&str; 3] = ["missed_repayments_90d", "days_overdrawn_30d", "failed_debits_30d"];

pub fn score(customer: &str, at: DateTime<Utc>, score: f64) -> RiskScore {
    RiskScore {
        event_id: Uuid::new_v4(),
        event_time: at,
        schema_version: SCHEMA_VERSION,
        customer_id: customer.into(),
        score,
        band: band_of(score),
        model_version: "test-model-1".into(),
        top_factors: FACTORS
            .iter()
            .enumerate()
            .map(|(i, f)| RiskFactor {
                feature: (*f).into(),
                value: 3.0 - i as f64,
                contribution: 1.2 - 0.4 * i as f64,
            })
            .collect(),
        trigger_event_id: Uuid::new_v4(),
    }
}

pub fn intervention(customer: &str, at: DateTime<Utc>, action: &str, score: f64) -> Intervention {
    Intervention {
        event_id: Uuid::new_v4(),
        event_time: at,
        schema_version: SCHEMA_VERSION,
        customer_id: customer.into(),
        action: action.into(),
        rule: format!("{action}-rule"),
        reason: format!("score {score} in band {:?}", band_of(score)),
        score,
        band: band_of(score),
        model_version: "test-model-1".into(),
        trigger_score_id: Uuid::new_v4(),
    }
}

pub fn outcome(customer: &str, at: DateTime<Utc>, outcome: Outcome) -> CustomerOutcome {
    CustomerOutcome {
        event_id: Uuid::new_v4(),
        event_time: at,
        schema_version: SCHEMA_VERSION,
        customer_id: customer.into(),
        outcome,
        days_in_arrears: 91,
        arrears_minor: 125_000,
    }
}

/// One instance's StageStats for the second window ending at `end`.
pub fn stage_stats(
    stage: &str,
    instance: &str,
    end: DateTime<Utc>,
    consumed: u64,
    produced: u64,
    lag: u64,
) -> StageStats {
    StageStats {
        event_id: Uuid::new_v4(),
        event_time: end,
        schema_version: SCHEMA_VERSION,
        stage: stage.into(),
        instance: instance.into(),
        window_start: end - TimeDelta::seconds(1),
        window_ms: 1000,
        consumed,
        produced,
        dead_lettered: 0,
        lag,
        latency: LatencyPercentiles::default(),
    }
}

/// Writes events to a test pipeline's topics.
pub struct Feeder {
    producer: FutureProducer,
    pipeline: String,
}

impl Feeder {
    pub fn new(broker: &TestBroker) -> Self {
        Feeder { producer: broker.kafka.idempotent_producer("test-feeder").unwrap(), pipeline: broker.pipeline.clone() }
    }

    /// Sends raw bytes keyed by `key`, to `partition` when given.
    pub async fn raw(&self, topic: Topic, key: &str, partition: Option<i32>, payload: &[u8]) {
        let name = topic.name(&self.pipeline);
        let mut record = FutureRecord::to(&name).key(key).payload(payload);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        self.producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("produce");
    }

    pub async fn send<T: Serialize>(&self, topic: Topic, key: &str, event: &T) {
        self.raw(topic, key, None, &serde_json::to_vec(event).unwrap()).await;
    }

    pub async fn score(&self, s: &RiskScore) {
        self.send(Topic::RiskScores, &s.customer_id, s).await;
    }

    pub async fn intervention(&self, i: &Intervention) {
        self.send(Topic::Interventions, &i.customer_id, i).await;
    }

    pub async fn outcome(&self, o: &CustomerOutcome) {
        self.send(Topic::CustomerOutcomes, &o.customer_id, o).await;
    }

    pub async fn stats(&self, s: &StageStats) {
        self.send(Topic::PipelineStats, &format!("{}/{}", s.stage, s.instance), s).await;
    }
}

/// A response: status and body.
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// GET over HTTP/1.0 (the server closes the connection after the body).
pub async fn get(addr: SocketAddr, path: &str) -> Response {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", addr.port())).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("response in 10 s")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    Response { status, headers: head.to_owned(), body: body.to_owned() }
}

/// Polls `/api/stats` until `done` holds; panics with the last answer after `timeout`.
pub async fn wait_for_stats(
    addr: SocketAddr,
    what: &str,
    timeout: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let stats = get(addr, "/api/stats").await.json();
        if done(&stats) {
            return stats;
        }
        assert!(started.elapsed() < timeout, "timed out waiting for {what}; last /api/stats: {stats:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `/readyz` answers 200.
pub async fn wait_ready(addr: SocketAddr, timeout: Duration) {
    let started = Instant::now();
    while get(addr, "/readyz").await.status != 200 {
        assert!(started.elapsed() < timeout, "the dashboard did not become ready in {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
