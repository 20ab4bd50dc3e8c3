//! `spec.stages`: the four stages, what every stage has (enabled, replicas, resources)
//! and each one's settings. Settings left out keep the stage's own defaults; the
//! operator writes the ones given into the stage's section of `pipeline.yaml`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The pipeline's stages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StagesSpec {
    /// The transaction simulator (`producer live`): writes `transactions` and
    /// `customer-outcomes`.
    #[serde(default)]
    pub producer: ProducerStage,
    /// Per-customer features and the risk model (`feature-processor run`): reads
    /// `transactions`, writes `risk-scores` and the `customer-features` changelog.
    #[serde(default)]
    pub feature_processor: FeatureProcessorStage,
    /// Rules, cooldowns and capacity (`intervention run`): reads `risk-scores`, writes
    /// `interventions` and the `intervention-state` changelog.
    #[serde(default)]
    pub intervention: InterventionStage,
    /// The live web UI, REST API and SSE stream (`dashboard run`).
    #[serde(default)]
    pub dashboard: DashboardStage,
}

/// What every stage has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageCommon {
    /// Whether the stage runs at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Instances; each is a member of the stage's consumer group.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// CPU and memory of the stage's container; default: requests 100m CPU and 128Mi,
    /// limit 512Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn yes() -> bool {
    true
}

fn one() -> i32 {
    1
}

impl Default for StageCommon {
    fn default() -> Self {
        StageCommon { enabled: true, replicas: 1, resources: None }
    }
}

/// Kafka processing guarantee of a stateful stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ProcessingGuarantee {
    /// Kafka transactions: outputs, changelog and input offsets commit together.
    #[default]
    ExactlyOnce,
    /// No transactions (for brokers without them); a crash can repeat outputs, with
    /// the same deterministic ids.
    AtLeastOnce,
}

impl ProcessingGuarantee {
    /// The value in the pipeline file.
    pub fn file_value(self) -> &'static str {
        match self {
            ProcessingGuarantee::ExactlyOnce => "exactly_once",
            ProcessingGuarantee::AtLeastOnce => "at_least_once",
        }
    }
}

/// The producer stage: a deterministic simulator of bank customers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProducerStage {
    #[serde(flatten)]
    pub common: StageCommon,
    /// Simulated customers (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000000))]
    pub customers: Option<u32>,
    /// Random seed: the same seed gives the same event stream (default 42).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Days of history sent at start, as fast as the broker takes them (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 3650))]
    pub backfill_days: Option<u32>,
    /// Live rate after the backfill, in events per second (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub rate: Option<u32>,
}

/// The feature-processor stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeatureProcessorStage {
    #[serde(flatten)]
    pub common: StageCommon,
    /// `ExactlyOnce` (Kafka transactions, the default) or `AtLeastOnce`.
    #[serde(default)]
    pub processing_guarantee: ProcessingGuarantee,
    /// A risk model, the JSON written by `feature-processor train`; default: the model
    /// built into the image. A change is picked up by the running pods without a
    /// restart (the file in the ConfigMap is reloaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A new RiskScore is emitted when the score moves at least this much or the band
    /// changes (default 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_score_change: Option<f64>,
    /// How far behind a customer's latest event an event may arrive and still count,
    /// in seconds (default 86400); later ones are dead-lettered as `late`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_lateness_seconds: Option<u64>,
    /// Commit (transaction) interval in milliseconds (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60000))]
    pub commit_interval_ms: Option<u64>,
}

/// One intervention rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleSpec {
    /// Unique name; it appears in each Intervention's `rule`.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Condition on the score: `band` (low < medium < high < critical), `score`,
    /// `factor NAME` or `contribution NAME` compared with `>= > <= < == !=`, joined by
    /// `and`, `or`, `not` and parentheses; e.g. `band >= high and factor failed_debits_30d > 0`.
    pub when: String,
    /// The action: sms_nudge, payment_holiday_offer, budgeting_tool_invite, agent_call,
    /// hardship_review, or one listed in `actions`.
    pub action: String,
    /// Higher goes first when several rules match (default 0).
    #[serde(default)]
    pub priority: i32,
    /// After firing for a customer, the rule waits this long (event time) before firing
    /// for them again, e.g. `7d`, `12h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<String>,
}

/// The intervention stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InterventionStage {
    #[serde(flatten)]
    pub common: StageCommon,
    /// `ExactlyOnce` (Kafka transactions, the default) or `AtLeastOnce`.
    #[serde(default)]
    pub processing_guarantee: ProcessingGuarantee,
    /// Ordered rules; the highest-priority matching rule decides. Default: the built-in
    /// rules (`intervention check` prints them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<RuleSpec>>,
    /// Action names added to the built-in ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// Most actions of each kind per event-time day, for the whole pipeline (default:
    /// agent_call 200, hardship_review 100); actions not listed are unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<BTreeMap<String, u32>>,
    /// Commit (transaction) interval in milliseconds (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60000))]
    pub commit_interval_ms: Option<u64>,
}

/// How the dashboard is exposed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ServiceType {
    /// Inside the cluster only (reach it with `kubectl port-forward`).
    #[default]
    ClusterIP,
    /// On every node's `nodePort`.
    NodePort,
    /// Through the cloud's load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The value of a Service's `spec.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The dashboard's Service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceExposure {
    /// Service type.
    #[serde(default, rename = "type")]
    pub service_type: ServiceType,
    /// Service port.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Node port for `NodePort` and `LoadBalancer` (default: chosen by Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
}

fn default_port() -> i32 {
    8080
}

impl Default for ServiceExposure {
    fn default() -> Self {
        ServiceExposure { service_type: ServiceType::default(), port: default_port(), node_port: None }
    }
}

/// The dashboard stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DashboardStage {
    #[serde(flatten)]
    pub common: StageCommon,
    /// The dashboard's Service.
    #[serde(default)]
    pub service: ServiceExposure,
    /// Rows of the top-risk table (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub top_n: Option<u32>,
}
