//! `spec.kafka`, `spec.topics` and `spec.image`: where the pipeline's Kafka is, how its
//! topics differ from the defaults, and which image runs the stages.

use std::collections::BTreeMap;

use eventpipe_common::topics::{Topic, TopicOverride};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The Kafka cluster: a Strimzi `Kafka` in this Kubernetes cluster (topics become
/// KafkaTopics), or plain bootstrap servers (topics must already exist).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.strimzi) != has(self.bootstrapServers)", "message": "set exactly one of strimzi or bootstrapServers"}
]))]
pub struct KafkaSpec {
    /// A Strimzi-managed Kafka cluster: the operator creates the pipeline's topics as
    /// KafkaTopics in the cluster's namespace and connects the stages to its bootstrap
    /// service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strimzi: Option<StrimziRef>,
    /// Plain broker list (`host:port,...`) for a Kafka not managed by Strimzi. The
    /// pipeline's topics must exist there; the stages wait for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<String>,
    /// librdkafka client properties passed to every stage as they are (for example
    /// `security.protocol: SASL_SSL`, `sasl.mechanism: SCRAM-SHA-512`). Put secrets in
    /// `credentialsSecret`, not here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// Name of a Secret in the pipeline's namespace whose keys are environment variables
    /// for every stage; keys named `KAFKA_PROP_<NAME>` set a client property
    /// (`KAFKA_PROP_SASL_PASSWORD` sets `sasl.password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

/// A Strimzi `Kafka` resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StrimziRef {
    /// Name of the `Kafka` resource (its `strimzi.io/cluster` label value).
    #[schemars(length(min = 1))]
    pub cluster: String,
    /// Namespace of the `Kafka` resource, where the KafkaTopics are created; default:
    /// the EventPipeline's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Port of the cluster's plain listener on its bootstrap service.
    #[serde(default = "default_bootstrap_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
}

fn default_bootstrap_port() -> u16 {
    9092
}

/// Overrides of one topic's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(oldSelf.partitions) || (has(self.partitions) && self.partitions >= oldSelf.partitions)",
     "message": "partitions may not decrease (Kafka cannot remove partitions)"}
]))]
pub struct TopicOverrideSpec {
    /// Number of partitions. Kafka can add partitions but never remove them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub partitions: Option<i32>,
    /// Replication factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub replicas: Option<i32>,
    /// `retention.ms` of a delete-policy topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub retention_ms: Option<u64>,
    /// Extra topic configuration passed to Kafka as it is (e.g. `min.insync.replicas`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

/// Overrides by topic; a topic not listed keeps the defaults of the contract table
/// (6 partitions — pipeline-stats 1, dead-letter 3 — replication factor 1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicsSpec {
    /// `<pipeline>.transactions`: the producer's transactions (delete, 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactions: Option<TopicOverrideSpec>,
    /// `<pipeline>.customer-outcomes`: the simulator's ground truth (co-partitioned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_outcomes: Option<TopicOverrideSpec>,
    /// `<pipeline>.customer-features`: the feature-processor's compacted changelog (co-partitioned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_features: Option<TopicOverrideSpec>,
    /// `<pipeline>.risk-scores` (co-partitioned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_scores: Option<TopicOverrideSpec>,
    /// `<pipeline>.intervention-state`: the intervention engine's compacted changelog (co-partitioned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervention_state: Option<TopicOverrideSpec>,
    /// `<pipeline>.interventions`: the audit trail of actions (co-partitioned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interventions: Option<TopicOverrideSpec>,
    /// `<pipeline>.pipeline-stats`: every stage's StageStats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_stats: Option<TopicOverrideSpec>,
    /// `<pipeline>.dead-letter`: rejected input with the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<TopicOverrideSpec>,
}

impl TopicsSpec {
    /// The override of `topic`, if any.
    pub fn get(&self, topic: Topic) -> Option<&TopicOverrideSpec> {
        match topic {
            Topic::Transactions => self.transactions.as_ref(),
            Topic::CustomerOutcomes => self.customer_outcomes.as_ref(),
            Topic::CustomerFeatures => self.customer_features.as_ref(),
            Topic::RiskScores => self.risk_scores.as_ref(),
            Topic::InterventionState => self.intervention_state.as_ref(),
            Topic::Interventions => self.interventions.as_ref(),
            Topic::PipelineStats => self.pipeline_stats.as_ref(),
            Topic::DeadLetter => self.dead_letter.as_ref(),
        }
    }

    /// The overrides in the pipeline file's terms.
    pub fn overrides(&self) -> BTreeMap<Topic, TopicOverride> {
        Topic::ALL
            .into_iter()
            .filter_map(|topic| {
                let o = self.get(topic)?;
                Some((
                    topic,
                    TopicOverride {
                        partitions: o.partitions,
                        replicas: o.replicas,
                        retention_ms: o.retention_ms,
                        config: o.config.clone(),
                    },
                ))
            })
            .collect()
    }
}

/// The container image with every stage's binary (`producer`, `feature-processor`,
/// `intervention`, `dashboard`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// Image repository.
    #[serde(default = "default_repository")]
    pub repository: String,
    /// Image tag; default: the operator's own version.
    #[serde(default = "default_tag")]
    pub tag: String,
    /// When the kubelet pulls the image.
    #[serde(default)]
    pub pull_policy: ImagePullPolicy,
}

/// The default image repository.
pub const DEFAULT_REPOSITORY: &str = "ghcr.io/eventpipe/eventpipe";

fn default_repository() -> String {
    DEFAULT_REPOSITORY.to_owned()
}

fn default_tag() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec { repository: default_repository(), tag: default_tag(), pull_policy: ImagePullPolicy::default() }
    }
}

impl ImageSpec {
    /// `repository:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

/// Kubernetes image pull policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ImagePullPolicy {
    /// Pull on every start.
    Always,
    /// Pull only when the node does not have the image.
    #[default]
    IfNotPresent,
    /// Never pull (the image is loaded onto the nodes, e.g. `kind load docker-image`).
    Never,
}

impl ImagePullPolicy {
    /// The value of a container's `imagePullPolicy`.
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}
