//! The builders on the example pipeline: a snapshot of everything rendered (a change
//! in output is a reviewed diff), each object read back through its k8s-openapi type,
//! and the properties every stage's Deployment must have.

use std::path::Path;

use eventpipe_operator::build::desired;
use eventpipe_operator::render::{crd_yaml, parse_pipeline, render};
use eventpipe_operator::validate::validate;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use serde_json::Value;

fn example() -> eventpipe_operator::crd::EventPipeline {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s/examples/pre-delinquency.yaml");
    parse_pipeline(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn example_renders_as_snapshotted() {
    insta::assert_snapshot!("pre_delinquency", render(&example()).unwrap());
}

#[test]
fn the_committed_crd_is_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/eventpipe-operator/crds/eventpipelines.eventpipe.dev.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == crd_yaml(),
        "{} is stale: run `cargo run -p eventpipe-operator -- crd > charts/eventpipe-operator/crds/eventpipelines.eventpipe.dev.yaml`",
        path.display()
    );
}

/// Parses `object` as `T` and back: nothing is lost, nothing unknown to Kubernetes.
fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(object: &Value) {
    let typed: T = serde_json::from_value(object.clone()).unwrap_or_else(|e| panic!("{e}: {object}"));
    assert_eq!(&serde_json::to_value(&typed).unwrap(), object);
}

#[test]
fn rendered_objects_round_trip_through_their_kubernetes_types() {
    let objects = desired(&validate(&example()).unwrap()).objects();
    let mut kinds = Vec::new();
    for object in &objects {
        let kind = object["kind"].as_str().unwrap().to_owned();
        match kind.as_str() {
            "Deployment" => round_trip::<Deployment>(object),
            "Service" => round_trip::<Service>(object),
            "ConfigMap" => round_trip::<ConfigMap>(object),
            "ServiceAccount" => round_trip::<ServiceAccount>(object),
            "KafkaTopic" => round_trip::<eventpipe_operator::strimzi::KafkaTopic>(object),
            other => panic!("unexpected kind {other}"),
        }
        kinds.push(kind);
    }
    let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
    assert_eq!(
        (count("ServiceAccount"), count("ConfigMap"), count("KafkaTopic"), count("Service"), count("Deployment")),
        (1, 1, 8, 2, 4)
    );
}

#[test]
fn every_stage_runs_restricted_with_the_contract_env_and_probes() {
    let pipeline = validate(&example()).unwrap();
    for d in desired(&pipeline).deployments {
        let name = d.metadata.name.clone().unwrap();
        let template = d.spec.unwrap().template;
        let annotations = template.metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{name}");
        assert_eq!(annotations["eventpipe.dev/config-hash"].len(), 16, "{name}");
        let pod = template.spec.unwrap();
        let psc = pod.security_context.unwrap();
        assert_eq!((psc.run_as_non_root, psc.seccomp_profile.unwrap().type_.as_str()), (Some(true), "RuntimeDefault"));
        let c = &pod.containers[0];
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]), "{name}");
        let env: Vec<&str> = c.env.as_ref().unwrap().iter().map(|e| e.name.as_str()).collect();
        for var in
            ["KAFKA_BOOTSTRAP_SERVERS", "PIPELINE_NAME", "PIPELINE_CONFIG", "KAFKA_GROUP_ID", "POD_NAME", "HTTP_PORT"]
        {
            assert!(env.contains(&var), "{name} lacks {var}");
        }
        let pod_name = c.env.as_ref().unwrap().iter().find(|e| e.name == "POD_NAME").unwrap();
        assert_eq!(pod_name.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path, "metadata.name");
        let group = c.env.as_ref().unwrap().iter().find(|e| e.name == "KAFKA_GROUP_ID").unwrap();
        assert_eq!(group.value.as_deref(), Some(format!("pre-delinquency.{}", c.name).as_str()));
        assert_eq!(c.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/healthz"));
        assert_eq!(c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(), Some("/readyz"));
        let labels = d.metadata.labels.unwrap();
        for key in ["name", "instance", "component", "part-of", "managed-by"] {
            assert!(labels.contains_key(&format!("app.kubernetes.io/{key}")), "{name} lacks label {key}");
        }
    }
}

#[test]
fn a_settings_change_changes_the_pod_hash_but_a_model_change_does_not() {
    let hash = |p: &eventpipe_operator::crd::EventPipeline| {
        let d = &desired(&validate(p).unwrap()).deployments[1];
        d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()
            ["eventpipe.dev/config-hash"]
            .clone()
    };
    let base = example();
    let mut changed = example();
    changed.spec.stages.feature_processor.min_score_change = Some(0.1);
    assert_ne!(hash(&base), hash(&changed));

    let model = include_str!("../../services/feature-processor/models/default.json");
    let mut with_model = example();
    with_model.spec.stages.feature_processor.model = Some(model.to_owned());
    let mut other_model = example();
    let mut newer: Value = serde_json::from_str(model).unwrap();
    newer["version"] = "retrained".into();
    other_model.spec.stages.feature_processor.model = Some(newer.to_string());
    assert_eq!(hash(&with_model), hash(&other_model), "a model change reloads in place, no rollout");
    let cm = desired(&validate(&with_model).unwrap()).config_map;
    assert_eq!(cm.data.unwrap()["model.json"], model);
}

#[test]
fn suspend_scales_every_stage_to_zero() {
    let mut p = example();
    p.spec.suspend = true;
    let replicas: Vec<i32> = desired(&validate(&p).unwrap())
        .deployments
        .iter()
        .map(|d| d.spec.as_ref().unwrap().replicas.unwrap())
        .collect();
    assert_eq!(replicas, [0, 0, 0, 0]);
}

#[test]
fn render_of_an_invalid_file_exits_2_naming_the_field_in_one_line() {
    let dir = std::env::temp_dir().join(format!("eventpipe-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    let bad =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s/examples/pre-delinquency.yaml"))
            .unwrap()
            .replace("when: band >= critical", "when: band => critical");
    std::fs::write(&file, bad).unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_eventpipe-operator")).arg("render").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "nothing rendered");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("invalid EventPipeline: spec.stages.intervention.rules[0].when: in `band => critical`: unknown operator `=>`"), "{stderr}");
}
