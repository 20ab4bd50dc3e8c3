//! Turns an `EventPipeline` into a [`Pipeline`]: the checked, resolved model every
//! builder works from. Pure — no API calls — so `render`, `local` and the reconciler
//! agree, and the checks are table-tested.
//!
//! Checks the schema cannot hold live here: the pipeline name, one Kafka source,
//! replicas against partitions, the model file, and — by parsing the `pipeline.yaml`
//! the stages will read with the stages' own code — co-partitioning, rules, capacities
//! and every stage setting. Errors name the resource field (`spec.stages.intervention.rules[0].when`).

use std::collections::BTreeMap;

use eventpipe_common::config::{
    validate_pipeline_name, ConfigError, KafkaSection, PipelineFile, RuntimeArgs, Settings,
};
use eventpipe_common::topics::{resolve_topics, Topic, TopicSpec};
use feature_processor::model::RiskModel;
use feature_processor::settings::FeatureProcessorSettings;
use intervention::settings::InterventionSettings;
use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::ResourceExt;
use serde_yaml::{Mapping, Value};

use crate::crd::{
    DashboardStage, EventPipeline, EventPipelineSpec, FeatureProcessorStage, ImageSpec, InterventionStage,
    ProducerStage, ServiceExposure, StageCommon, TopicDeletionPolicy,
};
use crate::stage::Stage;

/// Where the ConfigMap is mounted in every stage's pod.
pub const CONFIG_DIR: &str = "/etc/eventpipe";
/// The pipeline file's key in the ConfigMap.
pub const PIPELINE_FILE: &str = "pipeline.yaml";
/// The model's key in the ConfigMap, when the spec carries a model.
pub const MODEL_FILE: &str = "model.json";

/// A spec the operator will not apply, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSpec {
    /// The resource field, e.g. `spec.topics.riskScores.partitions`.
    pub field: String,
    /// What is wrong, in one line.
    pub message: String,
}

impl InvalidSpec {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidSpec { field: field.into(), message: message.into() }
    }
}

/// A validated pipeline: everything the builders need, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// Pipeline name P (the EventPipeline's name).
    pub name: String,
    /// The EventPipeline's namespace, where the stages run.
    pub namespace: String,
    /// The EventPipeline's uid, for owner references (absent when rendering a file).
    pub uid: Option<String>,
    /// Broker list the stages connect to.
    pub bootstrap_servers: String,
    /// The Strimzi cluster and the namespace of its KafkaTopics, if Strimzi manages Kafka.
    pub strimzi: Option<StrimziTarget>,
    /// Secret whose keys become every stage's env vars.
    pub credentials_secret: Option<String>,
    /// Every topic, resolved.
    pub topics: Vec<TopicSpec>,
    /// The stages' image.
    pub image: ImageSpec,
    /// The enabled stages, in pipeline order.
    pub stages: Vec<StagePlan>,
    /// `pipeline.yaml`: what every stage reads.
    pub pipeline_file: String,
    /// The model file, when the spec carries one.
    pub model: Option<String>,
    /// The dashboard's Service, when the dashboard is enabled.
    pub dashboard_service: Option<ServiceExposure>,
    /// Whether the stages are scaled to 0.
    pub suspended: bool,
    /// What deletion does to the topics.
    pub topic_deletion_policy: TopicDeletionPolicy,
}

/// Where KafkaTopics go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrimziTarget {
    /// The `strimzi.io/cluster` label value.
    pub cluster: String,
    /// The namespace of the Kafka cluster and its KafkaTopics.
    pub namespace: String,
}

/// One enabled stage.
#[derive(Debug, Clone, PartialEq)]
pub struct StagePlan {
    pub stage: Stage,
    /// Desired replicas (0 when suspended).
    pub replicas: i32,
    pub resources: Option<ResourceRequirements>,
}

impl Pipeline {
    /// The resolved spec of `topic`.
    pub fn topic(&self, topic: Topic) -> &TopicSpec {
        self.topics.iter().find(|t| t.topic == topic).expect("every topic is resolved")
    }

    /// The plan of `stage`, if enabled.
    pub fn stage(&self, stage: Stage) -> Option<&StagePlan> {
        self.stages.iter().find(|s| s.stage == stage)
    }
}

/// Validates `pipeline` and resolves it.
pub fn validate(pipeline: &EventPipeline) -> Result<Pipeline, InvalidSpec> {
    let name = pipeline.name_any();
    validate_pipeline_name(&name).map_err(|e| InvalidSpec::new("metadata.name", e.message))?;
    let namespace = pipeline.namespace().unwrap_or_else(|| "default".to_owned());
    let spec = &pipeline.spec;

    let (bootstrap_servers, strimzi) = kafka_target(spec, &namespace)?;
    let topics = resolve_topics(&name, &spec.topics.overrides());
    let partitions = |topic: Topic| topics.iter().find(|t| t.topic == topic).map_or(0, |t| t.partitions);

    let stages = &spec.stages;
    let producer = &stages.producer.common;
    if producer.enabled && producer.replicas > 1 {
        return Err(InvalidSpec::new(
            "spec.stages.producer.replicas",
            format!(
                "must be 0 or 1, got {}: every producer replica would send the same simulated customers",
                producer.replicas
            ),
        ));
    }
    for (stage, common, input) in [
        ("featureProcessor", &stages.feature_processor.common, Topic::Transactions),
        ("intervention", &stages.intervention.common, Topic::RiskScores),
    ] {
        let available = partitions(input);
        if common.enabled && common.replicas > available {
            return Err(InvalidSpec::new(
                format!("spec.stages.{stage}.replicas"),
                format!(
                    "{} replicas but {input} has {available} partitions: a consumer group member without a partition sits idle; raise spec.topics partitions or lower replicas",
                    common.replicas
                ),
            ));
        }
    }
    let model = stages.feature_processor.model.clone();
    if let Some(text) = &model {
        let parsed: RiskModel = serde_json::from_str(text)
            .map_err(|e| InvalidSpec::new("spec.stages.featureProcessor.model", format!("not a model file: {e}")))?;
        parsed.check().map_err(|e| InvalidSpec::new("spec.stages.featureProcessor.model", e.to_string()))?;
    }

    let file = PipelineFile {
        name: Some(name.clone()),
        kafka: KafkaSection {
            bootstrap_servers: Some(bootstrap_servers.clone()),
            properties: spec.kafka.properties.clone(),
        },
        topics: spec.topics.overrides().into_iter().map(|(t, o)| (t.logical().to_owned(), o)).collect(),
        stages: stage_sections(spec),
        source: None,
    };
    let pipeline_file = serde_yaml::to_string(&file).expect("the pipeline file serializes");
    check_with_the_stages_code(&pipeline_file, spec)?;

    let plan = |stage: Stage, common: &StageCommon| {
        common.enabled.then(|| StagePlan {
            stage,
            replicas: if spec.suspend { 0 } else { common.replicas },
            resources: common.resources.clone(),
        })
    };
    let stage_plans = [
        plan(Stage::Producer, &stages.producer.common),
        plan(Stage::FeatureProcessor, &stages.feature_processor.common),
        plan(Stage::Intervention, &stages.intervention.common),
        plan(Stage::Dashboard, &stages.dashboard.common),
    ]
    .into_iter()
    .flatten()
    .collect();

    Ok(Pipeline {
        name,
        namespace,
        uid: pipeline.metadata.uid.clone(),
        bootstrap_servers,
        strimzi,
        credentials_secret: spec.kafka.credentials_secret.clone(),
        topics,
        image: spec.image.clone(),
        stages: stage_plans,
        pipeline_file,
        model,
        dashboard_service: stages.dashboard.common.enabled.then(|| stages.dashboard.service.clone()),
        suspended: spec.suspend,
        topic_deletion_policy: spec.topic_deletion_policy,
    })
}

fn kafka_target(spec: &EventPipelineSpec, namespace: &str) -> Result<(String, Option<StrimziTarget>), InvalidSpec> {
    match (&spec.kafka.strimzi, &spec.kafka.bootstrap_servers) {
        (Some(strimzi), None) => {
            if !is_dns_label(&strimzi.cluster) {
                return Err(InvalidSpec::new(
                    "spec.kafka.strimzi.cluster",
                    format!("`{}` is not a Kubernetes object name", strimzi.cluster),
                ));
            }
            let ns = strimzi.namespace.clone().unwrap_or_else(|| namespace.to_owned());
            let bootstrap = format!("{}-kafka-bootstrap.{ns}.svc:{}", strimzi.cluster, strimzi.port);
            Ok((bootstrap, Some(StrimziTarget { cluster: strimzi.cluster.clone(), namespace: ns })))
        }
        (None, Some(servers)) if !servers.trim().is_empty() => Ok((servers.trim().to_owned(), None)),
        (None, Some(_)) => Err(InvalidSpec::new("spec.kafka.bootstrapServers", "must not be empty")),
        _ => Err(InvalidSpec::new("spec.kafka", "set exactly one of strimzi or bootstrapServers")),
    }
}

/// An RFC 1123 label: what a Kubernetes object name of this kind may be.
fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Parses `pipeline_file` as every enabled stage will at start, with the stages' own
/// settings types, and maps an error's file key back to the resource field.
fn check_with_the_stages_code(pipeline_file: &str, spec: &EventPipelineSpec) -> Result<(), InvalidSpec> {
    let file = PipelineFile::parse(pipeline_file).map_err(to_invalid)?;
    let args = RuntimeArgs::default();
    let settings = |stage: Stage| Settings::resolve(stage.name(), file.clone(), &args, []).map_err(to_invalid);
    // Topics (co-partitioning) are checked by any stage's resolve, so once even when
    // every stage is disabled.
    let dashboard = settings(Stage::Dashboard)?;
    if spec.stages.dashboard.common.enabled {
        let s: dashboard::settings::DashboardSettings = dashboard.stage_settings().map_err(to_invalid)?;
        s.validate().map_err(to_invalid)?;
    }
    if spec.stages.feature_processor.common.enabled {
        let s: FeatureProcessorSettings = settings(Stage::FeatureProcessor)?.stage_settings().map_err(to_invalid)?;
        s.validate().map_err(to_invalid)?;
    }
    if spec.stages.intervention.common.enabled {
        let s: InterventionSettings = settings(Stage::Intervention)?.stage_settings().map_err(to_invalid)?;
        s.validate().map_err(to_invalid)?;
    }
    if spec.stages.producer.common.enabled {
        let _: producer::settings::ProducerSettings =
            settings(Stage::Producer)?.stage_settings().map_err(to_invalid)?;
    }
    Ok(())
}

fn to_invalid(e: ConfigError) -> InvalidSpec {
    // The position is in the generated file, which the user never sees.
    let message = match e.message.rfind(" at line ") {
        Some(at) => e.message[..at].to_owned(),
        None => e.message,
    };
    InvalidSpec::new(spec_field(&e.key), message)
}

/// Maps a pipeline-file key (`stages.feature-processor.min_score_change`) to the
/// resource field it came from (`spec.stages.featureProcessor.minScoreChange`).
pub fn spec_field(file_key: &str) -> String {
    if file_key == "PIPELINE_NAME" {
        return "metadata.name".to_owned();
    }
    let mut out = vec!["spec".to_owned()];
    let mut verbatim = false;
    for part in file_key.split('.') {
        if verbatim {
            out.push(part.to_owned());
            continue;
        }
        // The one setting whose resource name is not its file name in camelCase.
        out.push(if part == "allowed_lateness_secs" { "allowedLatenessSeconds".to_owned() } else { camel(part) });
        // Map keys below these are names the user chose, not fields.
        verbatim = matches!(part, "properties" | "config" | "capacity");
    }
    out.join(".")
}

fn camel(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    let mut upper = false;
    for c in part.chars() {
        if c == '_' || c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The `stages` map of the pipeline file: only what the spec sets, so the stages'
/// own defaults apply to the rest.
fn stage_sections(spec: &EventPipelineSpec) -> BTreeMap<String, Value> {
    let s = &spec.stages;
    [
        (Stage::Producer, producer_section(&s.producer)),
        (Stage::FeatureProcessor, feature_processor_section(&s.feature_processor)),
        (Stage::Intervention, intervention_section(&s.intervention)),
        (Stage::Dashboard, dashboard_section(&s.dashboard)),
    ]
    .into_iter()
    .filter(|(_, section)| !section.is_empty())
    .map(|(stage, section)| (stage.name().to_owned(), Value::Mapping(section)))
    .collect()
}

fn put(section: &mut Mapping, key: &str, value: Option<impl Into<Value>>) {
    if let Some(v) = value {
        section.insert(key.into(), v.into());
    }
}

fn producer_section(p: &ProducerStage) -> Mapping {
    let mut m = Mapping::new();
    put(&mut m, "customers", p.customers);
    put(&mut m, "seed", p.seed);
    put(&mut m, "backfill_days", p.backfill_days);
    put(&mut m, "rate", p.rate.map(f64::from));
    m
}

fn feature_processor_section(f: &FeatureProcessorStage) -> Mapping {
    let mut m = Mapping::new();
    put(&mut m, "processing_guarantee", Some(f.processing_guarantee.file_value()));
    // Relative: beside pipeline.yaml wherever the ConfigMap is mounted or written.
    put(&mut m, "model", f.model.as_ref().map(|_| MODEL_FILE));
    put(&mut m, "min_score_change", f.min_score_change);
    put(&mut m, "allowed_lateness_secs", f.allowed_lateness_seconds);
    put(&mut m, "commit_interval_ms", f.commit_interval_ms);
    m
}

fn intervention_section(i: &InterventionStage) -> Mapping {
    let mut m = Mapping::new();
    put(&mut m, "processing_guarantee", Some(i.processing_guarantee.file_value()));
    if let Some(rules) = &i.rules {
        let rules = rules
            .iter()
            .map(|r| {
                let mut rule = Mapping::new();
                put(&mut rule, "name", Some(r.name.as_str()));
                put(&mut rule, "when", Some(r.when.as_str()));
                put(&mut rule, "action", Some(r.action.as_str()));
                put(&mut rule, "priority", Some(i64::from(r.priority)));
                put(&mut rule, "cooldown", r.cooldown.as_deref());
                Value::Mapping(rule)
            })
            .collect::<Vec<_>>();
        m.insert("rules".into(), Value::Sequence(rules));
    }
    if !i.actions.is_empty() {
        m.insert("actions".into(), Value::Sequence(i.actions.iter().map(|a| a.as_str().into()).collect()));
    }
    if let Some(capacity) = &i.capacity {
        let capacity = capacity.iter().map(|(k, v)| (Value::from(k.as_str()), Value::from(*v))).collect();
        m.insert("capacity".into(), Value::Mapping(capacity));
    }
    put(&mut m, "commit_interval_ms", i.commit_interval_ms);
    m
}

fn dashboard_section(d: &DashboardStage) -> Mapping {
    let mut m = Mapping::new();
    put(&mut m, "top_n", d.top_n);
    m
}
