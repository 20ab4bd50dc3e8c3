//! `eventpipe-operator local FILE`: the pipeline on this machine, from the same
//! builders as in a cluster. The rendered ConfigMap is written to a directory, the
//! topics are created (on an embedded broker unless one is given), and every rendered
//! Deployment's container — command, args, env — runs as `replicas` local processes,
//! each with its own `POD_NAME` and HTTP port, restarted when it dies.

pub mod supervisor;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use eventpipe_common::broker::EmbeddedBroker;
use eventpipe_common::kafka::{create_topics, KafkaSettings};
use eventpipe_common::testing::free_port;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use tokio_util::sync::CancellationToken;

use crate::build::desired;
use crate::crd::EventPipeline;
use crate::stage::Stage;
use crate::validate::{validate, PIPELINE_FILE};
use supervisor::{supervise, Policy, ProcessSpec};

/// What `--help` and the README say about the embedded broker.
pub const EMBEDDED_BROKER_LIMITS: &str = "The embedded broker is librdkafka's mock cluster, in this process: \
data is in memory only (gone when local stops), and it keeps about 5 MB (or 100 000 batches) per partition, \
silently dropping older records, so long runs lose old history. Give --bootstrap-servers for a real broker.";

/// Options of `local`.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// An existing broker; default: the embedded one.
    pub bootstrap_servers: Option<String>,
    /// The dashboard's HTTP port (replica i gets port + i).
    pub dashboard_port: u16,
    /// Where the stage binaries are; default: next to this binary, then PATH.
    pub bin_dir: Option<PathBuf>,
    /// `LOG_FORMAT` of the stages.
    pub log_format: String,
    /// Where the ConfigMap is written; default: a new directory under the temp dir.
    pub config_dir: Option<PathBuf>,
    pub policy: Policy,
}

/// Runs `pipeline` until `shutdown`.
pub async fn run(pipeline: &EventPipeline, options: LocalOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let validated = validate(pipeline).map_err(|e| anyhow::anyhow!("invalid EventPipeline: {e}"))?;
    let objects = desired(&validated);

    // The embedded broker lives as long as this function.
    let (_broker, bootstrap) = match &options.bootstrap_servers {
        Some(servers) => {
            create_topics(&KafkaSettings::plain(servers.clone()), &validated.topics)
                .await
                .with_context(|| format!("cannot create the topics on {servers}"))?;
            (None, servers.clone())
        }
        None => {
            let broker = EmbeddedBroker::start(&validated.topics).context("cannot start the embedded broker")?;
            let servers = broker.bootstrap_servers().to_owned();
            println!("embedded broker on {servers} (in memory; about 5 MB per partition)");
            (Some(broker), servers)
        }
    };
    for t in &validated.topics {
        println!("topic {} ({} partitions)", t.name, t.partitions);
    }

    let config_dir = match &options.config_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("eventpipe-local-{}-{}", validated.name, std::process::id())),
    };
    write_config_map(&objects.config_map, &config_dir)?;
    let config_file = config_dir.join(PIPELINE_FILE);
    println!("configuration in {}", config_dir.display());

    let mut processes = Vec::new();
    for deployment in &objects.deployments {
        processes.extend(processes_of(deployment, &options, &bootstrap, &config_file)?);
    }
    if processes.is_empty() {
        bail!("every stage is disabled or suspended: nothing to run");
    }
    if let Some(dashboard) = processes.iter().find(|p| p.name.ends_with(&format!("-{}-0", Stage::Dashboard.name()))) {
        println!("dashboard: http://127.0.0.1:{}/", dashboard.http_port);
    }

    let tasks: Vec<_> =
        processes.into_iter().map(|spec| tokio::spawn(supervise(spec, options.policy, shutdown.clone()))).collect();
    for task in tasks {
        let _ = task.await;
    }
    let _ = std::fs::remove_dir_all(&config_dir);
    println!("stopped");
    Ok(())
}

/// Writes every key of the ConfigMap as a file in `dir`, as a volume mount would.
pub fn write_config_map(config_map: &ConfigMap, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (key, value) in config_map.data.iter().flatten() {
        let path = dir.join(key);
        std::fs::write(&path, value).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The local processes of one Deployment: its container's command, args and env, with
/// what only a pod has replaced — `POD_NAME`, the broker, the config path, the port.
pub fn processes_of(
    deployment: &Deployment,
    options: &LocalOptions,
    bootstrap: &str,
    config_file: &Path,
) -> anyhow::Result<Vec<ProcessSpec>> {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let spec = deployment.spec.as_ref().context("a Deployment without spec")?;
    let replicas = spec.replicas.unwrap_or(1).max(0) as u16;
    let container =
        spec.template.spec.as_ref().and_then(|p| p.containers.first()).context("a Deployment without a container")?;
    let command = container.command.clone().unwrap_or_default();
    let program = command.first().with_context(|| format!("{name}: the container has no command"))?;
    let program = find_binary(program, options.bin_dir.as_deref())?;
    let mut args: Vec<String> = command[1..].to_vec();
    args.extend(container.args.clone().unwrap_or_default());
    let is_dashboard = container.name == Stage::Dashboard.name();

    let mut out = Vec::new();
    for i in 0..replicas {
        let instance = format!("{name}-{i}");
        let http_port = if is_dashboard { options.dashboard_port + i } else { free_port() };
        let mut env = BTreeMap::new();
        for var in container.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) if from.field_ref.as_ref().is_some_and(|f| f.field_path == "metadata.name") => {
                    instance.clone()
                }
                _ => continue,
            };
            env.insert(var.name.clone(), value);
        }
        env.insert("KAFKA_BOOTSTRAP_SERVERS".into(), bootstrap.to_owned());
        env.insert("PIPELINE_CONFIG".into(), config_file.display().to_string());
        env.insert("HTTP_PORT".into(), http_port.to_string());
        env.insert("LOG_FORMAT".into(), options.log_format.clone());
        if let Ok(filter) = std::env::var("RUST_LOG") {
            env.insert("RUST_LOG".into(), filter);
        }
        out.push(ProcessSpec { name: instance, program: program.clone(), args: args.clone(), env, http_port });
    }
    Ok(out)
}

/// A stage binary: in `dir`, else next to this executable, else on PATH.
pub fn find_binary(name: &str, dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf));
    let path_dirs = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    dir.map(Path::to_path_buf)
        .into_iter()
        .chain(beside)
        .chain(path_dirs)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("cannot find the `{name}` binary next to eventpipe-operator or on PATH (build it: cargo build --release)")
        })
}
