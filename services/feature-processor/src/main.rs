//! `feature-processor`: keeps per-customer rolling features and scores the risk model.
//! `train` fits the model on simulated customers.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use feature_processor::train::{train, TrainConfig};

#[derive(Parser)]
#[command(
    name = "feature-processor",
    version,
    about = "eventpipe's feature and risk-scoring stage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    match Cli::parse().command {
        Command::Train {
            customers,
            days,
            seed,
            horizon_days,
            out,
        } => {
            let config = TrainConfig {
                customers,
                days,
                seed,
                horizon_days,
            };
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
