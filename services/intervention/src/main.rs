//! `intervention`: the stage binary. `run` is what the Deployment runs; `check` parses
//! and validates the rules of a pipeline file and prints them, for CI and for people
//! editing rules.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use eventpipe_common::config::{RuntimeArgs, Settings};
use eventpipe_common::runtime::StageRuntime;
use eventpipe_common::stream;
use eventpipe_common::topics::Topic;
use intervention::settings::InterventionSettings;
use intervention::stage::{InterventionMetrics, InterventionStage};

#[derive(Parser)]
#[command(name = "intervention", version, about = "eventpipe's intervention engine")]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume RiskScores, apply the rules, write Interventions (exactly once by default) until SIGTERM.
    Run,
    /// Check the rules in the pipeline file and print them in the order they are tried.
    Check,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if matches!(cli.command, Command::Check) {
        // `check` never connects: it needs neither a broker nor a pipeline name.
        cli.runtime.bootstrap_servers.get_or_insert_with(|| "unused:9092".into());
        cli.runtime.pipeline_name.get_or_insert_with(|| "check".into());
    }
    let settings = Settings::load("intervention", &cli.runtime).unwrap_or_else(|e| e.exit());
    let section: InterventionSettings = settings.stage_settings().unwrap_or_else(|e| e.exit());
    section.validate().unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Run => tokio::runtime::Runtime::new().expect("tokio runtime").block_on(run(settings, section)),
        Command::Check => {
            let mut rules = section.rules.clone();
            rules.sort_by_key(|r| std::cmp::Reverse(r.priority));
            for r in &rules {
                let capacity =
                    section.capacity.get(&r.action).map(|c| format!(", at most {c}/day")).unwrap_or_default();
                println!(
                    "{:>4}  {:<28} {:<24} cooldown {}{}  when {}",
                    r.priority,
                    r.name,
                    r.action,
                    humantime::format_duration(r.cooldown),
                    capacity,
                    r.when
                );
            }
            println!("{} rules OK", rules.len());
            ExitCode::SUCCESS
        }
    }
}

async fn run(settings: Settings, section: InterventionSettings) -> ExitCode {
    let mut runtime = match StageRuntime::start(settings.clone(), None).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the HTTP server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics = InterventionMetrics::new(&mut runtime.registry.lock().unwrap_or_else(|e| e.into_inner()));
    tracing::info!(rules = section.rules.len(), guarantee = ?section.processing_guarantee, "intervention starting");
    match settings.kafka.idempotent_producer(&format!("{}-stats", settings.instance)) {
        Ok(p) => runtime.spawn_stats_publisher(p),
        Err(e) => tracing::warn!(error = %e, "no stage stats: cannot create their producer"),
    }
    let partitions = settings.topic(Topic::RiskScores).partitions as u32;
    let stage = InterventionStage::new(&section, partitions, metrics);
    let config = section.stream_config();
    runtime.run_stream(move |handles| stream::run(handles, config, stage)).await
}
