//! Strimzi's `KafkaTopic` (`kafka.strimzi.io/v1`): the fields the operator writes and
//! the status it reads. Only these fields are modelled; the topic operator owns the
//! rest.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The label that tells Strimzi's topic operator which cluster a KafkaTopic is for.
pub const CLUSTER_LABEL: &str = "strimzi.io/cluster";
/// The annotation that stops Strimzi from managing (and so deleting) a topic.
pub const MANAGED_ANNOTATION: &str = "strimzi.io/managed";

/// A Kafka topic managed by Strimzi's topic operator.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "kafka.strimzi.io", version = "v1", kind = "KafkaTopic", namespaced, status = "KafkaTopicStatus")]
#[serde(rename_all = "camelCase")]
pub struct KafkaTopicSpec {
    /// The topic's name in Kafka (when it differs from the object's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Topic configuration (`cleanup.policy`, `retention.ms`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

/// What the topic operator reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTopicStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<StrimziCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
}

/// A Strimzi status condition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StrimziCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An empty KafkaTopic (what API test doubles build objects from).
impl Default for KafkaTopic {
    fn default() -> Self {
        KafkaTopic::new("", KafkaTopicSpec::default())
    }
}

impl KafkaTopic {
    /// Whether the topic operator reports `Ready=True`, and its message otherwise.
    pub fn readiness(&self) -> (bool, Option<String>) {
        let ready = self.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
        match ready {
            Some(c) if c.status == "True" => (true, None),
            Some(c) => (false, c.message.clone().or_else(|| c.reason.clone())),
            None => (false, Some("the topic operator has not reported on it yet".to_owned())),
        }
    }
}
