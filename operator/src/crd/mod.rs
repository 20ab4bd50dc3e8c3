//! The `EventPipeline` custom resource (group `eventpipe.dev`, version `v1alpha1`): the
//! user's whole pipeline in one object. The spec is split by concern — Kafka and topics
//! ([`kafka`]), the stages ([`stages`]) — and the status is here. Every field carries a
//! doc comment, which becomes its description in the CRD, so `kubectl explain evp.spec`
//! is useful; bounds and enums live in the schema where the API server can check them.

pub mod kafka;
pub mod stages;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use kafka::{ImagePullPolicy, ImageSpec, KafkaSpec, StrimziRef, TopicOverrideSpec, TopicsSpec};
pub use stages::{
    DashboardStage, FeatureProcessorStage, InterventionStage, ProcessingGuarantee, ProducerStage, RuleSpec,
    ServiceExposure, ServiceType, StageCommon, StagesSpec,
};

/// Desired state of an eventpipe pipeline: where its Kafka is, how its topics are sized,
/// which image runs the stages, and each stage's settings.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "eventpipe.dev",
    version = "v1alpha1",
    kind = "EventPipeline",
    plural = "eventpipelines",
    shortname = "evp",
    namespaced,
    status = "EventPipelineStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Stages","type":"string","description":"ready/desired stages","jsonPath":".status.stagesSummary"}"#,
    printcolumn = r#"{"name":"Topics","type":"string","description":"ready/desired topics","jsonPath":".status.topicsSummary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EventPipelineSpec {
    /// The Kafka cluster the pipeline runs on.
    pub kafka: KafkaSpec,
    /// Overrides of the default topic settings, by topic. Topic names are
    /// `<pipeline>.<logical>`; co-partitioned topics must keep the partition count of
    /// `transactions`.
    #[serde(default)]
    pub topics: TopicsSpec,
    /// The container image that holds every stage's binary.
    #[serde(default)]
    pub image: ImageSpec,
    /// The pipeline's stages: one Deployment (one consumer group) each.
    #[serde(default)]
    pub stages: StagesSpec,
    /// Scale every stage to 0 replicas, keeping topics and configuration.
    #[serde(default)]
    pub suspend: bool,
    /// What happens to the topics when the EventPipeline is deleted: `Retain` (the
    /// default) keeps the KafkaTopics and their data and stops managing them; `Delete`
    /// deletes them, and with them the data.
    #[serde(default)]
    pub topic_deletion_policy: TopicDeletionPolicy,
}

/// An empty EventPipeline (what API test doubles build objects from).
impl Default for EventPipeline {
    fn default() -> Self {
        EventPipeline::new("", EventPipelineSpec::default())
    }
}

/// What happens to a pipeline's topics when it is deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TopicDeletionPolicy {
    /// Keep the KafkaTopics and their data; they are marked `strimzi.io/managed: "false"`.
    #[default]
    Retain,
    /// Delete the KafkaTopics, and with them the data.
    Delete,
}

/// Observed state of an EventPipeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPipelineStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Summary of the pipeline's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// `Ready`, `TopicsReady`, `StagesReady` and `Suspended`, following the Kubernetes
    /// API conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Replicas of every enabled stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageStatus>,
    /// Readiness of every topic, from its KafkaTopic's status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<TopicStatus>,
    /// Ready stages out of the enabled ones, e.g. `4/4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages_summary: Option<String>,
    /// Ready topics out of all, e.g. `8/8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics_summary: Option<String>,
}

/// Summary of a pipeline's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Seen, nothing applied yet.
    Pending,
    /// Objects applied; topics or stages not ready yet.
    Provisioning,
    /// Every topic and every stage ready.
    Running,
    /// Was running; some topic or stage is not ready now.
    Degraded,
    /// `spec.suspend` is true: stages scaled to 0.
    Suspended,
    /// The spec is invalid or applying failed; the `Ready` condition says why.
    Failed,
}

/// Replicas of one stage's Deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageStatus {
    /// The stage: producer, feature-processor, intervention or dashboard.
    pub name: String,
    /// Desired replicas.
    pub replicas: i32,
    /// Ready replicas, from the Deployment's status.
    pub ready_replicas: i32,
}

/// Readiness of one topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// The Kafka topic name, `<pipeline>.<logical>`.
    pub name: String,
    /// Whether the KafkaTopic reports `Ready=True`.
    pub ready: bool,
    /// The KafkaTopic's message when it is not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
