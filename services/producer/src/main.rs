//! `producer`: simulates bank customers and sends their transactions and outcomes to
//! Kafka. `backfill --days N` sends history as fast as the broker takes it; `live
//! --rate EPS` (after an optional backfill) keeps going at a steady rate.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rdkafka::producer::Producer;

use eventpipe_common::config::{RuntimeArgs, Settings};
use eventpipe_common::runtime::StageRuntime;
use eventpipe_common::topics::Topic;
use producer::publish::{backfill, live, Publisher};
use producer::settings::{ProducerSettings, SimArgs};
use producer::simulator::Simulator;

#[derive(Parser)]
#[command(
    name = "producer",
    version,
    about = "eventpipe's transaction simulator: sends customers' transactions and outcomes to Kafka"
)]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Send N days of history (event time from today minus N days) as fast as the broker takes it, then exit.
    Backfill {
        /// Days of history [file: stages.producer.backfill_days, default 30].
        #[arg(long)]
        days: Option<u32>,
        #[command(flatten)]
        sim: SimArgs,
    },
    /// Optionally backfill, then keep sending at a steady rate until SIGTERM.
    Live {
        /// Events per second [file: stages.producer.rate, default 200].
        #[arg(long)]
        rate: Option<f64>,
        /// Days of history to send first (0 for none) [file: stages.producer.backfill_days, default 30].
        #[arg(long)]
        backfill_days: Option<u32>,
        #[command(flatten)]
        sim: SimArgs,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = Settings::load("producer", &cli.runtime).unwrap_or_else(|e| e.exit());
    let section: ProducerSettings = settings.stage_settings().unwrap_or_else(|e| e.exit());
    let (section, go_live) = match &cli.mode {
        Mode::Backfill { days, sim } => (section.merge(sim, *days, None), false),
        Mode::Live { rate, backfill_days, sim } => (section.merge(sim, *backfill_days, *rate), true),
    };
    let section = section.unwrap_or_else(|e| e.exit());

    let mut runtime = match StageRuntime::start(settings, None).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the HTTP server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match run(&mut runtime, &section, go_live).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "producer failed");
            ExitCode::FAILURE
        }
    };
    runtime.finish().await;
    code
}

async fn run(runtime: &mut StageRuntime, section: &ProducerSettings, go_live: bool) -> anyhow::Result<()> {
    let settings = &runtime.settings;
    let kafka_producer = settings.kafka.idempotent_producer(&settings.instance)?;
    wait_for_topic(&kafka_producer, settings.topic_name(Topic::Transactions), &runtime.shutdown).await?;
    runtime.readiness.set(true);
    runtime.spawn_stats_publisher(kafka_producer.clone());

    let sim_config = section.sim_config(section.backfill_days);
    tracing::info!(customers = sim_config.customers, seed = sim_config.seed, start = %sim_config.start, "simulation starting");
    let mut sim = Simulator::new(sim_config);
    let mut publisher = Publisher::new(kafka_producer.clone(), &runtime.settings.pipeline, runtime.metrics.clone());
    let shutdown = runtime.shutdown.clone();

    let started = std::time::Instant::now();
    let summary = backfill(&mut sim, section.backfill_days, &mut publisher, &shutdown).await?;
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        days = summary.days,
        events = summary.events,
        transactions = summary.events - summary.outcomes,
        outcomes = summary.outcomes,
        seconds = secs,
        events_per_second = (summary.events as f64 / secs.max(1e-9)) as u64,
        "backfill done"
    );
    if go_live {
        tracing::info!(rate = section.rate, from = %sim.next_date(), "going live");
        let summary = live(&mut sim, section.rate, &mut publisher, &shutdown).await?;
        tracing::info!(events = summary.events, days = summary.days, "live stopped");
    }
    eventpipe_common::kafka::flush(&kafka_producer, Duration::from_secs(10))?;
    Ok(())
}

/// Waits until the broker answers and knows `topic`, so a missing topic is reported
/// clearly instead of records timing out.
async fn wait_for_topic(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(200);
    loop {
        let client = producer.clone();
        let name = topic.to_owned();
        let found = tokio::task::spawn_blocking(move || {
            client.client().fetch_metadata(Some(&name), Duration::from_secs(5)).map(|m| {
                m.topics().iter().any(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty())
            })
        })
        .await?;
        match found {
            Ok(true) => return Ok(()),
            Ok(false) => tracing::warn!(%topic, "topic does not exist yet; waiting"),
            Err(e) => tracing::warn!(error = %e, "broker not reachable yet; waiting"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => anyhow::bail!("shut down while waiting for topic {topic}"),
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
