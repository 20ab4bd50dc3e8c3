//! `feature-processor`: keeps per-customer rolling features and scores the risk model
//! (`run`, what the Deployment runs); `train` fits the model on simulated customers.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use eventpipe_common::config::{RuntimeArgs, Settings};
use eventpipe_common::runtime::StageRuntime;
use feature_processor::model_watch::{self, ModelHandle};
use feature_processor::settings::FeatureProcessorSettings;
use feature_processor::stream;
use feature_processor::train::{train, TrainConfig};

#[derive(Parser)]
#[command(name = "feature-processor", version, about = "eventpipe's feature and risk-scoring stage")]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume transactions, keep features, emit RiskScores (exactly once by default) until SIGTERM.
    Run,
    /// Train the risk model on simulated customers and write the model file.
    Train {
        /// Simulated customers.
        #[arg(long, default_value_t = 4_000)]
        customers: u32,
        /// Simulated days.
        #[arg(long, default_value_t = 180)]
        days: u32,
        /// Simulation seed (also fixes the train/test split).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// A customer-day is positive when the customer defaults within this many days.
        #[arg(long, default_value_t = 30)]
        horizon_days: u32,
        /// Where to write the model (JSON).
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run => tokio::runtime::Runtime::new().expect("tokio runtime").block_on(run(cli.runtime)),
        Command::Train { customers, days, seed, horizon_days, out } => {
            let config = TrainConfig { customers, days, seed, horizon_days };
            let started = std::time::Instant::now();
            let model = match train(&config) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("training failed: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let json = serde_json::to_string_pretty(&model).expect("model serializes") + "\n";
            if let Err(e) = std::fs::write(&out, json) {
                eprintln!("cannot write {}: {e}", out.display());
                return ExitCode::FAILURE;
            }
            let m = &model.metrics;
            println!(
                "model {} -> {}: ROC AUC {:.3}, Brier {:.4}, base rate {:.3}, {} train / {} test rows, {:.1}s",
                model.version,
                out.display(),
                m.roc_auc,
                m.brier_score,
                m.base_rate,
                m.train_rows,
                m.test_rows,
                started.elapsed().as_secs_f64()
            );
            for b in &m.bands {
                println!(
                    "  {:?} (score >= {:.3}): flags {:.1}% of days, precision {:.3}, recall {:.3}",
                    b.band,
                    b.threshold,
                    100.0 * b.flagged_share,
                    b.precision,
                    b.recall
                );
            }
            ExitCode::SUCCESS
        }
    }
}

async fn run(args: RuntimeArgs) -> ExitCode {
    let settings = Settings::load("feature-processor", &args).unwrap_or_else(|e| e.exit());
    let section: FeatureProcessorSettings = settings.stage_settings().unwrap_or_else(|e| e.exit());
    let section = section.resolve_model_path(args.config.as_deref());
    section.validate().unwrap_or_else(|e| e.exit());
    let model = ModelHandle::new(section.load_model().unwrap_or_else(|e| e.exit()));

    let mut runtime = match StageRuntime::start(settings.clone(), None).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the HTTP server: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(model = %model.get().version, guarantee = ?section.processing_guarantee, "feature-processor starting");
    match settings.kafka.idempotent_producer(&format!("{}-stats", settings.instance)) {
        Ok(p) => runtime.spawn_stats_publisher(p),
        Err(e) => tracing::warn!(error = %e, "no stage stats: cannot create their producer"),
    }
    if let Some(path) = section.model.clone() {
        tokio::spawn(model_watch::watch(path, model.clone(), Duration::from_secs(1), runtime.shutdown.clone()));
    }
    let (config, core) = (section.stream_config(), section.core_config());
    runtime.run_stream(move |stage| stream::run(stage, config, core, model)).await
}
