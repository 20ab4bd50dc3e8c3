//! One Deployment per enabled stage: the stage's binary and verb, the env of the
//! config contract, probes on `/healthz` and `/readyz`, the restricted pod-security
//! profile, Prometheus scrape annotations, and the ConfigMap at `/etc/eventpipe`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretEnvSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config_map::{self, config_hash, CONFIG_HASH_ANNOTATION};
use super::labels::{labels, object_meta, stage_selector};
use super::service_account;
use crate::stage::Stage;
use crate::validate::{Pipeline, StagePlan, CONFIG_DIR, PIPELINE_FILE};

/// The container port of every stage's `/healthz`, `/readyz` and `/metrics`.
pub const HTTP_PORT: i32 = 8080;
/// The uid and gid the stages run as (not root).
pub const RUN_AS: i64 = 65532;

/// The Deployment's name: `P-<stage>`.
pub fn name(pipeline: &Pipeline, stage: Stage) -> String {
    format!("{}-{}", pipeline.name, stage.name())
}

/// The Deployment of one stage.
pub fn deployment(pipeline: &Pipeline, plan: &StagePlan) -> Deployment {
    let stage = plan.stage;
    let pod_annotations = BTreeMap::from([
        (CONFIG_HASH_ANNOTATION.to_owned(), config_hash(pipeline)),
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ("prometheus.io/port".to_owned(), HTTP_PORT.to_string()),
        ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
    ]);
    Deployment {
        metadata: object_meta(pipeline, name(pipeline, stage), stage.name()),
        spec: Some(DeploymentSpec {
            replicas: Some(plan.replicas),
            selector: LabelSelector {
                match_labels: Some(stage_selector(pipeline, stage.name())),
                ..Default::default()
            },
            // Two producers at once would send the same simulated customers twice.
            strategy: (stage == Stage::Producer)
                .then(|| DeploymentStrategy { type_: Some("Recreate".into()), ..Default::default() }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(pipeline, stage.name())),
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(pod_spec(pipeline, plan)),
            },
            ..Default::default()
        }),
        status: None,
    }
}

fn pod_spec(pipeline: &Pipeline, plan: &StagePlan) -> PodSpec {
    PodSpec {
        service_account_name: Some(service_account::name(pipeline)),
        // The stages never call the Kubernetes API.
        automount_service_account_token: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
            ..Default::default()
        }),
        // SIGTERM ends the open transaction and commits; well within this.
        termination_grace_period_seconds: Some(30),
        containers: vec![container(pipeline, plan)],
        volumes: Some(vec![
            Volume {
                name: "config".into(),
                config_map: Some(ConfigMapVolumeSource { name: config_map::name(pipeline), ..Default::default() }),
                ..Default::default()
            },
            Volume { name: "tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
        ]),
        ..Default::default()
    }
}

/// The env of the config contract (ARCHITECTURE.md), `POD_NAME` from the downward API.
pub fn env(pipeline: &Pipeline, stage: Stage) -> Vec<EnvVar> {
    let value = |name: &str, value: String| EnvVar { name: name.into(), value: Some(value), value_from: None };
    vec![
        value("KAFKA_BOOTSTRAP_SERVERS", pipeline.bootstrap_servers.clone()),
        value("PIPELINE_NAME", pipeline.name.clone()),
        value("PIPELINE_CONFIG", format!("{CONFIG_DIR}/{PIPELINE_FILE}")),
        value("KAFKA_GROUP_ID", format!("{}.{}", pipeline.name, stage.name())),
        EnvVar {
            name: "POD_NAME".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".into()),
                    field_path: "metadata.name".into(),
                }),
                ..Default::default()
            }),
        },
        value("HTTP_PORT", HTTP_PORT.to_string()),
        value("LOG_FORMAT", "json".into()),
        value("RUST_LOG", "info".into()),
    ]
}

fn container(pipeline: &Pipeline, plan: &StagePlan) -> Container {
    let stage = plan.stage;
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    let command = stage.command();
    Container {
        name: stage.name().into(),
        image: Some(pipeline.image.reference()),
        image_pull_policy: Some(pipeline.image.pull_policy.as_str().into()),
        command: Some(command[..1].to_vec()),
        args: Some(command[1..].to_vec()),
        env: Some(env(pipeline, stage)),
        env_from: pipeline.credentials_secret.as_ref().map(|secret| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource { name: secret.clone(), optional: Some(false) }),
                ..Default::default()
            }]
        }),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: HTTP_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        // Restoring state from a changelog can take a while; readiness says when it is done.
        readiness_probe: Some(probe("/readyz", 5, 1)),
        resources: Some(plan.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount { name: "tmp".into(), mount_path: "/tmp".into(), ..Default::default() },
        ]),
        ..Default::default()
    }
}

/// Requests 100m CPU and 128Mi, limit 512Mi of memory (no CPU limit: throttling a
/// stream processor only adds lag).
pub fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([("cpu".to_owned(), q("100m")), ("memory".to_owned(), q("128Mi"))])),
        limits: Some(BTreeMap::from([("memory".to_owned(), q("512Mi"))])),
        ..Default::default()
    }
}
