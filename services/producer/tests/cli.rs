//! The `producer` binary as a user runs it: bad configuration ends with one line naming
//! the key; a backfill against a broker sends exactly the simulator's stream.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::NaiveDate;
use futures::StreamExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;

use eventpipe_common::broker::TestBroker;
use eventpipe_common::events::StageStats;
use eventpipe_common::topics::Topic;
use producer::simulator::{SimConfig, Simulator};

const CONTRACT_ENV: [&str; 8] = [
    "KAFKA_BOOTSTRAP_SERVERS",
    "PIPELINE_NAME",
    "PIPELINE_CONFIG",
    "KAFKA_GROUP_ID",
    "POD_NAME",
    "HTTP_PORT",
    "LOG_FORMAT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

fn producer() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_producer"));
    for var in CONTRACT_ENV {
        cmd.env_remove(var);
    }
    cmd
}

fn stderr_of(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn missing_bootstrap_servers_is_one_line_naming_the_env_var() {
    let (code, stderr) = stderr_of(producer().args(["--pipeline-name", "demo", "backfill"]));
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("invalid configuration: KAFKA_BOOTSTRAP_SERVERS: missing"), "{stderr}");
}

#[test]
fn bad_stage_setting_in_the_file_names_its_path() {
    let dir = std::env::temp_dir().join(format!("producer-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pipeline.yaml");
    std::fs::write(
        &file,
        "name: demo\nkafka:\n  bootstrap_servers: localhost:9\nstages:\n  producer:\n    customers: -5\n",
    )
    .unwrap();
    let (code, stderr) = stderr_of(producer().env("PIPELINE_CONFIG", &file).arg("backfill"));
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("invalid configuration: stages.producer.customers: "), "{stderr}");

    let (code, stderr) = stderr_of(producer().env("PIPELINE_CONFIG", &file).env("HTTP_PORT", "eighty").arg("backfill"));
    assert_eq!(code, 2);
    assert!(stderr.starts_with("invalid configuration: HTTP_PORT: "), "{stderr}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_binary_sends_the_simulated_stream_and_stage_stats() {
    let broker = TestBroker::start("producer-cli").await;
    let start = NaiveDate::from_ymd_opt(2026, 2, 1).unwrap();
    let status = tokio::task::spawn_blocking({
        let bootstrap = broker.kafka.bootstrap_servers.clone();
        let pipeline = broker.pipeline.clone();
        move || {
            producer()
                .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
                .env("PIPELINE_NAME", pipeline)
                .env("HTTP_PORT", free_port().to_string())
                .env("POD_NAME", "producer-cli-0")
                .args(["backfill", "--days", "20", "--customers", "60", "--seed", "8", "--start", "2026-02-01"])
                .stdout(Stdio::null())
                .status()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(status.success(), "{status}");

    let expected = Simulator::new(SimConfig { customers: 60, seed: 8, start }).run(20);
    let expected: HashSet<String> =
        expected.iter().map(|e| e_json(e)["event_id"].as_str().unwrap().to_owned()).collect();

    let consumer: StreamConsumer =
        broker.kafka.consumer_config("cli-reader", &format!("{}.cli", broker.pipeline)).create().unwrap();
    let stats_topic = broker.topic(Topic::PipelineStats);
    consumer
        .subscribe(&[&broker.topic(Topic::Transactions), &broker.topic(Topic::CustomerOutcomes), &stats_topic])
        .unwrap();
    let mut ids = HashSet::new();
    let mut produced_in_stats = 0;
    let mut stream = consumer.stream();
    while ids.len() < expected.len() || produced_in_stats < expected.len() as u64 {
        let m = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!("timed out: {} of {} events, {produced_in_stats} in stats", ids.len(), expected.len())
            })
            .unwrap()
            .unwrap();
        let payload = m.payload().unwrap();
        if m.topic() == stats_topic {
            let stats: StageStats = serde_json::from_slice(payload).unwrap();
            assert_eq!((stats.stage.as_str(), stats.instance.as_str()), ("producer", "producer-cli-0"));
            produced_in_stats += stats.produced;
        } else {
            let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
            assert!(ids.insert(v["event_id"].as_str().unwrap().to_owned()), "duplicate {v}");
        }
    }
    assert_eq!(ids, expected, "the binary sends exactly the simulated stream");
    assert_eq!(produced_in_stats, expected.len() as u64, "stage stats count every acknowledged record");
}

fn e_json(e: &producer::simulator::SimEvent) -> serde_json::Value {
    let mut buf = Vec::new();
    e.write_json(&mut buf);
    serde_json::from_slice(&buf).unwrap()
}
