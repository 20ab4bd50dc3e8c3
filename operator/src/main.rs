//! `eventpipe-operator`: `run` (the controller), `crd` (print the CRD), `render FILE`
//! (print what an EventPipeline becomes), `local FILE` (run it on this machine).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand};
use eventpipe_common::config::LogFormat;
use eventpipe_common::http::{cancel_on_signal, router, serve, HealthState, Readiness};
use eventpipe_operator::controller::{self, Context};
use eventpipe_operator::leader::{LeaderElector, Timing};
use eventpipe_operator::local::{self, supervisor::Policy, LocalOptions, EMBEDDED_BROKER_LIMITS};
use eventpipe_operator::metrics::Metrics;
use eventpipe_operator::render::{crd_yaml, parse_pipeline, render};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "eventpipe-operator",
    version,
    about = "Runs EventPipelines: on Kubernetes (run), or on this machine (local)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller: reconcile EventPipelines into KafkaTopics, Deployments, a
    /// ConfigMap and Services.
    Run {
        /// Port of /healthz, /readyz and /metrics.
        #[arg(long, env = "HTTP_PORT", default_value_t = 8080)]
        http_port: u16,
        /// Watch only this namespace (default: all).
        #[arg(long, env = "WATCH_NAMESPACE")]
        watch_namespace: Option<String>,
        /// Elect a leader through a Lease, so several replicas are safe.
        #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
        leader_election: bool,
        /// The Lease's name.
        #[arg(long, env = "LEASE_NAME", default_value = "eventpipe-operator")]
        lease_name: String,
        /// The Lease's namespace (the operator's own).
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        namespace: String,
        /// This replica's identity in the Lease and in Events.
        #[arg(long, env = "POD_NAME")]
        pod_name: Option<String>,
        /// Log format: json or pretty.
        #[arg(long, env = "LOG_FORMAT", default_value = "json")]
        log_format: String,
    },
    /// Print the EventPipeline CRD as YAML.
    Crd,
    /// Print every object the operator would create for an EventPipeline, as YAML,
    /// without a cluster.
    Render {
        /// The EventPipeline YAML file.
        file: PathBuf,
    },
    /// Run an EventPipeline on this machine: topics on an embedded broker (or the one
    /// given), each stage's rendered container as local processes, restarted when they
    /// die, until Ctrl-C or SIGTERM.
    #[command(after_help = EMBEDDED_BROKER_LIMITS)]
    Local {
        /// The EventPipeline YAML file.
        file: PathBuf,
        /// Use this broker instead of the embedded one (topics are created on it).
        #[arg(long)]
        bootstrap_servers: Option<String>,
        /// Port of the dashboard.
        #[arg(long, default_value_t = 8080)]
        dashboard_port: u16,
        /// Directory of the stage binaries (default: next to this binary, then PATH).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// The stages' log format: pretty or json.
        #[arg(long, default_value = "pretty")]
        log_format: String,
    },
}

fn read_pipeline(file: &PathBuf) -> Result<eventpipe_operator::crd::EventPipeline, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    parse_pipeline(&text).map_err(|e| format!("{}: {e}", file.display()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Render { file } => match read_pipeline(&file)
            .and_then(|p| render(&p).map_err(|e| format!("{}: invalid EventPipeline: {e}", file.display())))
        {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Local { file, bootstrap_servers, dashboard_port, bin_dir, log_format } => {
            let pipeline = match read_pipeline(&file) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let options = LocalOptions {
                bootstrap_servers,
                dashboard_port,
                bin_dir,
                log_format,
                config_dir: None,
                policy: Policy::default(),
            };
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            rt.block_on(async {
                let shutdown = CancellationToken::new();
                cancel_on_signal(shutdown.clone());
                match local::run(&pipeline, options, shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("{e:#}");
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Command::Run { http_port, watch_namespace, leader_election, lease_name, namespace, pod_name, log_format } => {
            let format = match log_format.as_str() {
                "pretty" => LogFormat::Pretty,
                "json" => LogFormat::Json,
                other => {
                    eprintln!("invalid configuration: LOG_FORMAT: `{other}` is not one of json, pretty");
                    return ExitCode::from(2);
                }
            };
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            let watch_namespace = watch_namespace.filter(|ns| !ns.is_empty());
            rt.block_on(run(http_port, watch_namespace, leader_election, lease_name, namespace, pod_name, format))
        }
    }
}

async fn run(
    http_port: u16,
    watch_namespace: Option<String>,
    leader_election: bool,
    lease_name: String,
    namespace: String,
    pod_name: Option<String>,
    format: LogFormat,
) -> ExitCode {
    let _telemetry = eventpipe_common::telemetry::init("eventpipe-operator", format);
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let readiness = Readiness::default();
    let health = HealthState { readiness: readiness.clone(), registry: Arc::new(Mutex::new(registry)) };
    let server = match serve(http_port, router(health), shutdown.clone()).await {
        Ok((addr, task)) => {
            tracing::info!(%addr, "serving /healthz, /readyz, /metrics");
            task
        }
        Err(e) => {
            eprintln!("cannot serve on port {http_port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot reach the Kubernetes API: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Ready means: connected, and either leading or standing by.
    readiness.set(true);
    let identity = pod_name.clone().unwrap_or_else(|| format!("eventpipe-operator-{}", std::process::id()));
    let ctx = Arc::new(Context::new(client.clone(), Some(identity.clone()), metrics.clone()));

    let code = if leader_election {
        let elector = LeaderElector::new(client, &namespace, &lease_name, &identity, Timing::default());
        tracing::info!(lease = %lease_name, %namespace, %identity, "waiting to lead");
        tokio::select! {
            _ = elector.acquire() => {}
            _ = shutdown.cancelled() => return ExitCode::SUCCESS,
        }
        metrics.leader.set(1);
        tracing::info!(%identity, "leading");
        let controller_stop = shutdown.child_token();
        let lost = tokio::select! {
            _ = controller::run(ctx, watch_namespace, controller_stop.clone()) => false,
            _ = elector.hold() => true,
        };
        controller_stop.cancel();
        metrics.leader.set(0);
        if lost {
            // Another replica may lead now; a clean restart makes this one a candidate again.
            tracing::error!("lost the leader lease; exiting");
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    } else {
        controller::run(ctx, watch_namespace, shutdown.clone()).await;
        ExitCode::SUCCESS
    };
    shutdown.cancel();
    let _ = server.await;
    code
}
