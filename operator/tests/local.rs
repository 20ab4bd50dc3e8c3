//! `eventpipe-operator local` end to end: the example pipeline on the embedded broker,
//! checked through the dashboard's API; then a stage process is killed and must be
//! restarted while the pipeline keeps going; then SIGTERM stops everything cleanly.
//!
//! Needs the stage binaries in the same target directory, which `cargo test
//! --workspace` (the README's test command) builds.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventpipe_common::testing::free_port;
use serde_json::Value;

fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_eventpipe-operator")).parent().unwrap().to_path_buf();
    for stage in ["producer", "feature-processor", "intervention", "dashboard"] {
        assert!(
            dir.join(stage).is_file(),
            "{} is missing: run the workspace's tests (cargo test --workspace), which build every stage",
            dir.join(stage).display()
        );
    }
    dir
}

fn get_json(port: u16, path: &str) -> Option<Value> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let body = response.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

fn totals(port: u16) -> Option<(u64, u64)> {
    let stats = get_json(port, "/api/stats")?;
    Some((stats["totals"]["risk_scores"].as_u64()?, stats["totals"]["interventions"].as_u64()?))
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The pids a `[instance] started (pid N, ...)` line gave so far.
fn started_pids(lines: &Mutex<Vec<String>>, instance: &str) -> Vec<i32> {
    let prefix = format!("[{instance}] started (pid ");
    lines.lock().unwrap().iter().filter_map(|l| l.strip_prefix(&prefix)?.split(',').next()?.parse().ok()).collect()
}

#[test]
fn local_runs_the_example_and_restarts_a_killed_stage() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s/examples/pre-delinquency.yaml");
    let port = free_port();
    let mut operator = Command::new(env!("CARGO_BIN_EXE_eventpipe-operator"))
        .args(["local", example.to_str().unwrap(), "--dashboard-port", &port.to_string(), "--bin-dir"])
        .arg(bin_dir())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start eventpipe-operator local");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        let out = operator.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                println!("{line}");
                lines.lock().unwrap().push(line);
            }
        })
    };

    wait_for("the dashboard URL", Duration::from_secs(30), || {
        lines.lock().unwrap().iter().any(|l| l == &format!("dashboard: http://127.0.0.1:{port}/")).then_some(())
    });
    let (scores, interventions) =
        wait_for("risk scores and interventions on the dashboard", Duration::from_secs(180), || {
            totals(port).filter(|&(s, i)| s > 0 && i > 0)
        });
    println!("dashboard: {scores} risk scores, {interventions} interventions");

    let instance = "pre-delinquency-feature-processor-0";
    let first = started_pids(&lines, instance)[0];
    // SIGKILL: no commit, no leaving the group, as when a pod's node dies.
    send_signal(first, 9);
    let second = wait_for("the killed stage to be restarted", Duration::from_secs(60), || {
        started_pids(&lines, instance).get(1).copied()
    });
    assert_ne!(first, second);
    assert!(lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.starts_with(&format!("[{instance}] exited")) && l.contains("restart 1")));

    let (before, _) = totals(port).unwrap();
    wait_for("new risk scores after the restart", Duration::from_secs(120), || {
        totals(port).filter(|&(s, _)| s > before).map(|_| ())
    });

    send_signal(operator.id() as i32, 15);
    let status = wait_for("local to stop after SIGTERM", Duration::from_secs(60), || operator.try_wait().unwrap());
    assert!(status.success(), "local exited with {status}");
    reader.join().unwrap();
    let lines = lines.lock().unwrap();
    assert_eq!(lines.last().map(String::as_str), Some("stopped"));
    for stage in ["producer", "feature-processor", "intervention", "dashboard"] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("[pre-delinquency-{stage}-0] stopped"))),
            "{stage} did not stop cleanly"
        );
    }
}

fn send_signal(pid: i32, signal: i32) {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}
