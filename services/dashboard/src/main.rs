//! `dashboard`: the web UI, REST API and live stream over the pipeline's topics
//! (`run`, what the Deployment runs).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use dashboard::app::Dashboard;
use dashboard::settings::DashboardSettings;
use eventpipe_common::config::{RuntimeArgs, Settings};

#[derive(Parser)]
#[command(name = "dashboard", version, about = "eventpipe's live dashboard")]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read the pipeline's topics and serve the page, the API and the stream on HTTP_PORT until SIGTERM.
    Run,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run => tokio::runtime::Runtime::new().expect("tokio runtime").block_on(run(cli.runtime)),
    }
}

async fn run(args: RuntimeArgs) -> ExitCode {
    let settings = Settings::load("dashboard", &args).unwrap_or_else(|e| e.exit());
    let section: DashboardSettings = settings.stage_settings().unwrap_or_else(|e| e.exit());
    section.validate().unwrap_or_else(|e| e.exit());
    let dashboard = match Dashboard::start(settings, section).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot start the HTTP server: {e}");
            return ExitCode::FAILURE;
        }
    };
    match dashboard.wait().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
