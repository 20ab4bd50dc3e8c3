//! The dashboard's API against a running dashboard fed through a broker (the embedded
//! one by default, EVENTPIPE_TEST_BOOTSTRAP_SERVERS when set): scripted records go in
//! through the topics, hand-computed numbers must come out of the endpoints.

mod support;

use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use eventpipe_common::broker::TestBroker;
use eventpipe_common::events::Outcome;
use eventpipe_common::topics::Topic;
use support::*;

fn stage<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["stages"].as_array().unwrap().iter().find(|s| s["stage"] == name).unwrap_or_else(|| panic!("{name}: {stats}"))
}

fn sum(values: &Value) -> f64 {
    values.as_array().unwrap().iter().filter_map(Value::as_f64).sum()
}

/// The scripted population (times are days after 2026-03-01; H = 30 days):
///
/// | customer | scores (day: score)       | outcomes       | flags → verdict at watermark day 45 |
/// |----------|---------------------------|----------------|-------------------------------------|
/// | C1       | 0: 0.30, 1: 0.62          | defaulted 10   | [0,1] true positive; default caught |
/// | C2       | 0: 0.25                   |                | [0,0] false positive (45 > 30)      |
/// | C3       | 0: 0.08, 45: 0.04         | defaulted 20   | no flag; default missed             |
/// | C4       | 40: 0.55                  |                | [40,40] pending (45 ≤ 70)           |
/// | C5       | 0: 0.02, 2: 0.90          | defaulted 35   | [2,2] false positive (35 > 32); missed |
/// | C6       | 6: 0.70                   | defaulted 5    | score while in default: no flag; missed |
///
/// precision = 1 / (1 + 2) = 1/3; recall = 1 caught / 4 defaults = 0.25.
/// Latest bands: C1 critical, C2 high, C3 low, C4 critical, C5 critical, C6 critical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_reports_counts_bands_top_n_quality_and_the_intervention_feed() {
    let broker = TestBroker::start("dash-api").await;
    let feed = Feeder::new(&broker);

    // Written before the dashboard starts: read by the catch-up.
    feed.score(&score("C1", day(0), 0.30)).await;
    feed.score(&score("C1", day(1), 0.62)).await;
    feed.score(&score("C2", day(0), 0.25)).await;
    feed.score(&score("C3", day(0), 0.08)).await;
    feed.score(&score("C3", day(45), 0.04)).await;
    let nudge = intervention("C1", day(0), "sms_nudge", 0.30);
    feed.intervention(&nudge).await;
    feed.intervention(&intervention("C1", day(1), "agent_call", 0.62)).await;
    feed.outcome(&outcome("C1", day(10), Outcome::Defaulted)).await;
    feed.raw(Topic::RiskScores, "C9", None, b"\x00 not json").await;
    let mut out_of_range = serde_json::to_value(score("C9", day(0), 0.5)).unwrap();
    out_of_range["score"] = 1.7.into();
    feed.send(Topic::RiskScores, "C9", &out_of_range).await;

    // Stage stats: two feature-processor instances and a producer, 20 whole seconds
    // ending 5 s ago, plus one record from two hours ago (outside the window).
    let now = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap();
    for i in 0..20 {
        let end = now - TimeDelta::seconds(24 - i);
        feed.stats(&stage_stats("feature-processor", "fp-0", end, 100, 100, 10)).await;
        feed.stats(&stage_stats("feature-processor", "fp-1", end, 50, 50, 5)).await;
        feed.stats(&stage_stats("producer", "p-0", end, 0, 200, 0)).await;
    }
    feed.stats(&stage_stats("feature-processor", "fp-0", now - TimeDelta::hours(2), 999, 999, 999)).await;

    let dashboard = start(&broker, "{top_n: 3}").await;
    let addr = dashboard.http_addr();
    wait_ready(addr, Duration::from_secs(30)).await;
    let stats = get(addr, "/api/stats").await.json();
    assert_eq!(stats["caught_up"], true);
    assert_eq!(stats["totals"]["risk_scores"], 5, "the catch-up read everything written before the start: {stats}");

    // Written while the dashboard runs: read live.
    feed.score(&score("C4", day(40), 0.55)).await;
    feed.score(&score("C5", day(0), 0.02)).await;
    feed.score(&score("C5", day(2), 0.90)).await;
    feed.score(&score("C6", day(6), 0.70)).await;
    feed.outcome(&outcome("C3", day(20), Outcome::Defaulted)).await;
    feed.outcome(&outcome("C5", day(35), Outcome::Defaulted)).await;
    feed.outcome(&outcome("C6", day(5), Outcome::Defaulted)).await;
    feed.intervention(&intervention("C5", day(2), "payment_holiday", 0.90)).await;
    feed.intervention(&nudge).await; // a duplicate

    let stats = wait_for_stats(addr, "every scripted record", Duration::from_secs(30), |s| {
        let t = &s["totals"];
        t["risk_scores"] == 9 && t["customer_outcomes"] == 4 && t["interventions"] == 3 && t["duplicates"] == 1
    })
    .await;
    assert_eq!(stats["totals"]["malformed"], 2);
    assert_eq!(stats["customers_tracked"], 6);
    assert_eq!(stats["watermark"], "2026-04-15T00:00:00Z");
    assert_eq!(stats["bands"], serde_json::json!({"low": 1, "medium": 0, "high": 1, "critical": 4}));

    let top: Vec<(&str, f64)> = stats["top_risk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["customer_id"].as_str().unwrap(), r["score"].as_f64().unwrap()))
        .collect();
    assert_eq!(top, [("C5", 0.90), ("C6", 0.70), ("C1", 0.62)]);
    assert_eq!(stats["top_risk"][0]["band"], "critical");
    assert_eq!(stats["top_risk"][0]["top_factor"], FACTORS[0]);

    let q = &stats["quality"];
    assert_eq!(
        (&q["true_positives"], &q["false_positives"], &q["pending"], &q["defaults"], &q["caught_defaults"]),
        (&1.into(), &2.into(), &1.into(), &4.into(), &1.into()),
        "{q}"
    );
    assert!((q["precision"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-12, "{q}");
    assert_eq!(q["recall"], 0.25);
    assert_eq!(q["horizon_days"], 30);
    assert_eq!(q["flagged_bands"], serde_json::json!(["high", "critical"]));

    // Per-stage rates and lag: instances add up per second; the old record is ignored.
    let fp = stage(&stats, "feature-processor");
    assert_eq!(fp["instances"], serde_json::json!(["fp-0", "fp-1"]));
    assert!((sum(&fp["series"]["consumed"]) - 20.0 * 150.0).abs() < 1e-6, "{fp}");
    let lags: Vec<u64> = fp["series"]["lag"].as_array().unwrap().iter().filter_map(Value::as_u64).collect();
    assert_eq!(lags.iter().max(), Some(&15), "{fp}");
    assert!(fp["series"]["consumed"].as_array().unwrap().iter().filter(|v| v.as_f64() == Some(150.0)).count() == 20);
    let producer = stage(&stats, "producer");
    assert!((sum(&producer["series"]["produced"]) - 20.0 * 200.0).abs() < 1e-6, "{producer}");
    assert_eq!(sum(&producer["series"]["consumed"]), 0.0);
    let start = fp["series"]["start"].as_i64().unwrap();
    assert!(start >= (now - TimeDelta::minutes(16)).timestamp(), "the two-hour-old record is not in the window");

    // One customer.
    let c1 = get(addr, "/api/customers/C1").await;
    assert_eq!(c1.status, 200);
    assert!(c1.headers.to_ascii_lowercase().contains("cache-control: no-store"));
    let c1 = c1.json();
    assert_eq!(c1["latest"]["score"], 0.62);
    assert_eq!(c1["latest"]["band"], "critical");
    let factors: Vec<&str> =
        c1["latest"]["top_factors"].as_array().unwrap().iter().map(|f| f["feature"].as_str().unwrap()).collect();
    assert_eq!(factors, FACTORS);
    assert_eq!(c1["latest"]["top_factors"][0]["contribution"], 1.2);
    let recent: Vec<f64> =
        c1["recent_scores"].as_array().unwrap().iter().map(|p| p["score"].as_f64().unwrap()).collect();
    assert_eq!(recent, [0.62, 0.30]);
    let actions: Vec<&str> =
        c1["interventions"].as_array().unwrap().iter().map(|i| i["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["agent_call", "sms_nudge"]);
    assert_eq!(c1["outcome"]["outcome"], "defaulted");
    assert_eq!((&c1["quality"]["true_positives"], &c1["quality"]["caught_defaults"]), (&1.into(), &1.into()));

    let unknown = get(addr, "/api/customers/NOPE").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json(), serde_json::json!({"error": "unknown customer", "customer_id": "NOPE"}));

    // The feed: newest (event time) first, deduplicated, limited.
    let feed_json = get(addr, "/api/interventions?limit=2").await.json();
    let feed_rows: Vec<(&str, &str)> = feed_json["interventions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["customer_id"].as_str().unwrap(), i["action"].as_str().unwrap()))
        .collect();
    assert_eq!(feed_rows, [("C5", "payment_holiday"), ("C1", "agent_call")]);
    assert_eq!(get(addr, "/api/interventions").await.json()["interventions"].as_array().unwrap().len(), 3);
    let bad = get(addr, "/api/interventions?limit=lots").await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("limit"));

    // Health, readiness and the skipped records in the metrics.
    assert_eq!(get(addr, "/healthz").await.status, 200);
    assert_eq!(get(addr, "/readyz").await.status, 200);
    let metrics = get(addr, "/metrics").await.body;
    for line in [
        r#"eventpipe_dashboard_malformed_records_total{topic="risk-scores",reason="malformed"} 1"#,
        r#"eventpipe_dashboard_malformed_records_total{topic="risk-scores",reason="invalid"} 1"#,
        "eventpipe_dashboard_customers_tracked 6",
        "eventpipe_dashboard_caught_up 1",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }

    // The dashboard publishes its own StageStats, which it reads back.
    let stats = wait_for_stats(addr, "the dashboard's own stage stats", Duration::from_secs(20), |s| {
        s["stages"].as_array().unwrap().iter().any(|st| st["stage"] == "dashboard")
    })
    .await;
    assert_eq!(stage(&stats, "dashboard")["instances"], serde_json::json!(["dashboard-test"]));
    dashboard.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_reads_only_the_latest_records_of_each_partition_and_commits_nothing() {
    let broker = TestBroker::start("dash-catchup").await;
    let feed = Feeder::new(&broker);
    for d in 0..12 {
        let s = score("A1", day(d), 0.01 * d as f64);
        feed.raw(Topic::RiskScores, "A1", Some(0), &serde_json::to_vec(&s).unwrap()).await;
    }
    for d in 0..3 {
        let s = score("B1", day(d), 0.5);
        feed.raw(Topic::RiskScores, "B1", Some(1), &serde_json::to_vec(&s).unwrap()).await;
    }

    let dashboard = start(&broker, "{catch_up_records: 5}").await;
    let addr = dashboard.http_addr();
    wait_ready(addr, Duration::from_secs(30)).await;
    // Give a consumer that wrongly read more a moment to show it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = get(addr, "/api/stats").await.json();
    assert_eq!(stats["totals"]["risk_scores"], 5 + 3, "{stats}");
    let a1 = get(addr, "/api/customers/A1").await.json();
    let days: Vec<&str> =
        a1["recent_scores"].as_array().unwrap().iter().map(|p| p["event_time"].as_str().unwrap()).collect();
    assert_eq!(
        days,
        [
            "2026-03-12T00:00:00Z",
            "2026-03-11T00:00:00Z",
            "2026-03-10T00:00:00Z",
            "2026-03-09T00:00:00Z",
            "2026-03-08T00:00:00Z"
        ]
    );

    // After the catch-up, new records arrive live.
    feed.score(&score("A1", day(20), 0.9)).await;
    let stats =
        wait_for_stats(addr, "the live score", Duration::from_secs(20), |s| s["totals"]["risk_scores"] == 9).await;
    assert_eq!(stats["top_risk"][0]["customer_id"], "A1");
    dashboard.stop().await.unwrap();

    // A read-only view: no offsets were committed for the dashboard's group.
    let consumer: BaseConsumer =
        broker.kafka.consumer_config("check", &format!("{}.dashboard", broker.pipeline)).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..6 {
        tpl.add_partition(&broker.topic(Topic::RiskScores), p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    for e in committed.elements() {
        assert_eq!(e.offset(), Offset::Invalid, "partition {} has a committed offset", e.partition());
    }
}

/// Reads Server-Sent Events from `/api/stream`: (arrival time, event name, data).
struct EventStream {
    lines: tokio::io::Lines<BufReader<tokio::net::TcpStream>>,
}

impl EventStream {
    async fn open(addr: std::net::SocketAddr) -> Self {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", addr.port())).await.unwrap();
        stream
            .write_all(b"GET /api/stream HTTP/1.0\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
            .await
            .unwrap();
        let mut lines = BufReader::new(stream).lines();
        let status = lines.next_line().await.unwrap().unwrap();
        assert!(status.contains(" 200 "), "{status}");
        loop {
            let line = lines.next_line().await.unwrap().unwrap();
            if line.is_empty() {
                break;
            }
            if let Some(ct) = line.to_ascii_lowercase().strip_prefix("content-type: ") {
                assert_eq!(ct, "text/event-stream");
            }
        }
        EventStream { lines }
    }

    /// The next event, or None when the server closed the stream.
    async fn next(&mut self) -> Option<(Instant, String, Value)> {
        let mut name = String::new();
        let mut data = String::new();
        loop {
            let line = self.lines.next_line().await.unwrap()?;
            if line.is_empty() {
                if !data.is_empty() {
                    return Some((Instant::now(), name, serde_json::from_str(&data).unwrap()));
                }
                continue; // a keep-alive comment ended
            }
            if let Some(v) = line.strip_prefix("event: ") {
                name = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_pushes_a_snapshot_every_second_and_ends_on_shutdown() {
    let broker = TestBroker::start("dash-stream").await;
    let dashboard = start(&broker, "{}").await;
    let addr = dashboard.http_addr();
    wait_ready(addr, Duration::from_secs(30)).await;

    let mut events = EventStream::open(addr).await;
    let (first_at, name, first) = tokio::time::timeout(Duration::from_secs(2), events.next()).await.unwrap().unwrap();
    assert_eq!(name, "snapshot");
    assert_eq!(first["stats"]["totals"]["risk_scores"], 0, "{first}");
    assert!(first["interventions"].as_array().unwrap().is_empty());

    let feed = Feeder::new(&broker);
    let at: DateTime<Utc> = day(3);
    feed.score(&score("S1", at, 0.8)).await;
    feed.intervention(&intervention("S1", at, "agent_call", 0.8)).await;

    let mut last = first_at;
    let mut seen_score = false;
    for _ in 0..8 {
        let (t, name, snapshot) = tokio::time::timeout(Duration::from_secs(3), events.next()).await.unwrap().unwrap();
        assert_eq!(name, "snapshot");
        assert!(t - last <= Duration::from_millis(1500), "{:?} between snapshots", t - last);
        last = t;
        if snapshot["stats"]["totals"]["risk_scores"] == 1 && snapshot["interventions"][0]["customer_id"] == "S1" {
            seen_score = true;
            assert_eq!(snapshot["stats"]["top_risk"][0]["customer_id"], "S1");
            break;
        }
    }
    assert!(seen_score, "a snapshot showed the new score and intervention");
    let metrics = get(addr, "/metrics").await.body;
    assert!(metrics.contains("eventpipe_dashboard_stream_clients 1"), "{metrics}");

    // Shutting down ends the open stream instead of waiting for it.
    tokio::time::timeout(Duration::from_secs(15), dashboard.stop()).await.expect("stop in time").unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), async { while events.next().await.is_some() {} }).await;
    assert!(end.is_ok(), "the stream was closed");
}
