//! Helpers for the services' integration tests: a stage binary run as a child process
//! against a [`TestBroker`], its metrics, and polling.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::broker::TestBroker;

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("local addr").port()
}

/// A stage binary running as a child process; SIGKILLed when dropped.
pub struct StageProcess {
    pub child: Child,
    /// Its HTTP port.
    pub port: u16,
}

impl StageProcess {
    /// Runs `binary run` for `stage` on `broker`, as pod `pod`, with `section` (YAML) as
    /// its `stages.<stage>` section.
    pub fn spawn(binary: &Path, stage: &str, broker: &TestBroker, pod: &str, section: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("eventpipe-test-{}-{pod}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("pipeline.yaml");
        std::fs::write(&file, format!("stages:\n  {stage}: {section}\n")).expect("write the pipeline file");
        let port = free_port();
        let child = Command::new(binary)
            .arg("run")
            .env("KAFKA_BOOTSTRAP_SERVERS", &broker.kafka.bootstrap_servers)
            .env("PIPELINE_NAME", &broker.pipeline)
            .env("PIPELINE_CONFIG", &file)
            .env("POD_NAME", pod)
            .env("HTTP_PORT", port.to_string())
            .env("LOG_FORMAT", "pretty")
            .env_remove("KAFKA_GROUP_ID")
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the stage binary");
        StageProcess { child, port }
    }

    /// A sample from the process's `/metrics` whose line starts with `name` (labels
    /// included, e.g. `eventpipe_interventions_total{action="agent_call"}`), if it answers.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).ok()?;
        sample(&body, name)
    }

    /// SIGKILL: no commit, no abort, no leaving the group.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// SIGTERM, then whether it exited successfully.
    pub fn terminate(mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().is_ok_and(|s| s.success());
        sent && self.child.wait().is_ok_and(|s| s.success())
    }
}

impl Drop for StageProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `done` every 50 ms; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many times each item occurs.
pub fn counts<T: std::hash::Hash + Eq>(items: impl IntoIterator<Item = T>) -> HashMap<T, usize> {
    let mut counts = HashMap::new();
    for i in items {
        *counts.entry(i).or_default() += 1;
    }
    counts
}

/// The value of the sample in Prometheus text `exposition` whose line starts with `name`
/// (labels included), if there is one.
pub fn sample(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The value of sample `name` in `registry` (as [`sample`], on its text encoding).
pub fn registry_sample(registry: &prometheus_client::registry::Registry, name: &str) -> Option<f64> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encode the registry");
    sample(&text, name)
}
