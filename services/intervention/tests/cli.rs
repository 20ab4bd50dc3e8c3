//! The binary's start-up checks: bad rules stop it with one line naming the key, the
//! line and the reason (exit 2); `check` prints the rules in the order they are tried.

use std::process::Command;

fn run(yaml: &str, verb: &str) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("iv-cli-{}-{}", std::process::id(), yaml.len()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("pipeline.yaml");
    std::fs::write(&file, yaml).unwrap();
    Command::new(env!("CARGO_BIN_EXE_intervention"))
        .args(["--config", file.to_str().unwrap(), verb])
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("PIPELINE_NAME")
        .output()
        .unwrap()
}

#[test]
fn bad_rule_stops_the_stage_with_one_line() {
    let yaml = "name: demo\nkafka: {bootstrap_servers: 127.0.0.1:1}\nstages:\n  intervention:\n    rules:\n      - name: calls\n        when: band ~= critical\n        action: agent_call\n";
    let out = run(yaml, "run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.trim_end(),
        "invalid configuration: stages.intervention.rules[0].when: in `band ~= critical`: unknown operator `~=` (expected one of >=, >, <=, <, ==, !=) at line 6 column 9"
    );
}

#[test]
fn check_prints_rules_by_priority() {
    let yaml = "stages:\n  intervention:\n    capacity: {agent_call: 5}\n    rules:\n      - {name: nudge, when: score >= 0.05, action: sms_nudge, priority: 1, cooldown: 3d}\n      - {name: calls, when: band >= critical and factor failed_debits_30d > 1, action: agent_call, priority: 9}\n";
    let out = run(yaml, "check");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].contains("calls") && lines[0].contains("at most 5/day"), "{stdout}");
    assert!(lines[0].ends_with("when band >= critical and factor failed_debits_30d > 1"), "{stdout}");
    assert!(lines[1].contains("nudge") && lines[1].contains("cooldown 3days"), "{stdout}");
    assert_eq!(lines[2], "2 rules OK");
}
