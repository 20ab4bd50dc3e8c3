//! Runs one rendered container as a local process, like a kubelet runs a pod's
//! container: restart on exit with exponential backoff (1 s doubling to 30 s, reset
//! after a minute of running), SIGTERM then SIGKILL after a grace period on shutdown.
//! Each output line is printed with the instance's name in front.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// One local instance of a stage.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Instance name (its `POD_NAME`), e.g. `demo-feature-processor-0`.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Its HTTP port (`/healthz`, `/metrics`).
    pub http_port: u16,
}

/// Restart backoff and the shutdown grace period.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A process that ran this long counts as healthy: the backoff starts over.
    pub healthy_after: Duration,
    pub grace: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
            grace: Duration::from_secs(30),
        }
    }
}

/// Keeps `spec` running until `shutdown`; returns how many times it was restarted.
pub async fn supervise(spec: ProcessSpec, policy: Policy, shutdown: CancellationToken) -> u32 {
    let mut restarts = 0;
    let mut backoff = policy.initial_backoff;
    loop {
        let started = tokio::time::Instant::now();
        let mut child = match spawn(&spec) {
            Ok(child) => child,
            Err(e) => {
                eprintln!("[{}] cannot start {}: {e}", spec.name, spec.program.display());
                if wait_or_shutdown(backoff, &shutdown).await {
                    return restarts;
                }
                backoff = (backoff * 2).min(policy.max_backoff);
                continue;
            }
        };
        println!(
            "[{}] started (pid {}, http://127.0.0.1:{}/metrics)",
            spec.name,
            child.id().unwrap_or_default(),
            spec.http_port
        );
        let status = tokio::select! {
            status = child.wait() => status,
            _ = shutdown.cancelled() => {
                stop(&spec.name, &mut child, policy.grace).await;
                return restarts;
            }
        };
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        if started.elapsed() >= policy.healthy_after {
            backoff = policy.initial_backoff;
        }
        restarts += 1;
        println!("[{}] exited ({status}); restart {restarts} in {:?}", spec.name, backoff);
        if wait_or_shutdown(backoff, &shutdown).await {
            return restarts;
        }
        backoff = (backoff * 2).min(policy.max_backoff);
    }
}

/// Sleeps `d`; whether shutdown came first.
async fn wait_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.cancelled() => true,
    }
}

fn spawn(spec: &ProcessSpec) -> std::io::Result<Child> {
    let mut child = Command::new(&spec.program)
        .args(&spec.args)
        .env_clear()
        .envs(inherited_env())
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward(spec.name.clone(), out));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward(spec.name.clone(), err));
    }
    Ok(child)
}

/// What a pod would not have but a local process needs (PATH, HOME, the terminal),
/// without the environment's own pipeline settings leaking in.
fn inherited_env() -> impl Iterator<Item = (String, String)> {
    const KEEP: [&str; 5] = ["PATH", "HOME", "TERM", "TMPDIR", "LANG"];
    std::env::vars().filter(|(k, _)| KEEP.contains(&k.as_str()))
}

async fn forward(name: String, stream: impl AsyncRead + Unpin) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        println!("[{name}] {line}");
    }
}

/// SIGTERM, then SIGKILL after `grace`.
async fn stop(name: &str, child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(Ok(status)) => println!("[{name}] stopped ({status})"),
        _ => {
            println!("[{name}] did not stop within {grace:?}; killing it");
            let _ = child.kill().await;
        }
    }
}
