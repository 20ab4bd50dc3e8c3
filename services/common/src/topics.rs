//! The pipeline's topics: logical names, defaults and the naming rule `P.<logical>`.
//!
//! One table (ARCHITECTURE.md "Topics") used by the services, the test brokers and the
//! operator, so a topic's name, partition count and cleanup policy are decided once.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A topic of the pipeline, by its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Topic {
    Transactions,
    CustomerOutcomes,
    CustomerFeatures,
    RiskScores,
    InterventionState,
    Interventions,
    PipelineStats,
    DeadLetter,
}

/// How Kafka cleans a topic up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// Delete segments older than the retention (milliseconds).
    Delete { retention_ms: u64 },
    /// Keep the latest record per key.
    Compact,
}

/// Defaults of one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicDefaults {
    pub partitions: i32,
    pub cleanup: Cleanup,
    /// Must have as many partitions as `transactions` (state is restored per partition).
    pub co_partitioned: bool,
}

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

impl Topic {
    /// Every topic, in the order of the contract table.
    pub const ALL: [Topic; 8] = [
        Topic::Transactions,
        Topic::CustomerOutcomes,
        Topic::CustomerFeatures,
        Topic::RiskScores,
        Topic::InterventionState,
        Topic::Interventions,
        Topic::PipelineStats,
        Topic::DeadLetter,
    ];

    /// The logical name, e.g. `risk-scores`.
    pub const fn logical(self) -> &'static str {
        match self {
            Topic::Transactions => "transactions",
            Topic::CustomerOutcomes => "customer-outcomes",
            Topic::CustomerFeatures => "customer-features",
            Topic::RiskScores => "risk-scores",
            Topic::InterventionState => "intervention-state",
            Topic::Interventions => "interventions",
            Topic::PipelineStats => "pipeline-stats",
            Topic::DeadLetter => "dead-letter",
        }
    }

    /// Parses a logical name.
    pub fn from_logical(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.logical() == name)
    }

    /// The defaults of ARCHITECTURE.md.
    pub const fn defaults(self) -> TopicDefaults {
        let (partitions, cleanup, co_partitioned) = match self {
            Topic::Transactions => (6, Cleanup::Delete { retention_ms: 7 * DAY_MS }, false),
            Topic::CustomerOutcomes => (6, Cleanup::Delete { retention_ms: 30 * DAY_MS }, true),
            Topic::CustomerFeatures => (6, Cleanup::Compact, true),
            Topic::RiskScores => (6, Cleanup::Delete { retention_ms: 30 * DAY_MS }, true),
            Topic::InterventionState => (6, Cleanup::Compact, true),
            Topic::Interventions => (6, Cleanup::Delete { retention_ms: 90 * DAY_MS }, true),
            Topic::PipelineStats => (1, Cleanup::Delete { retention_ms: DAY_MS }, false),
            Topic::DeadLetter => (3, Cleanup::Delete { retention_ms: 14 * DAY_MS }, false),
        };
        TopicDefaults { partitions, cleanup, co_partitioned }
    }

    /// The Kafka topic name for pipeline `pipeline`: `P.<logical>`.
    pub fn name(self, pipeline: &str) -> String {
        format!("{pipeline}.{}", self.logical())
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.logical())
    }
}

/// Per-topic overrides in the pipeline config (`topics.<logical>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct TopicOverride {
    /// Number of partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// Replication factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// `retention.ms` for delete-policy topics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    /// Extra topic configuration passed to Kafka as is.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

/// One resolved topic: its name and settings for this pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub topic: Topic,
    pub name: String,
    pub partitions: i32,
    pub replicas: i32,
    /// Kafka topic configuration (`cleanup.policy`, `retention.ms`, extras).
    pub config: BTreeMap<String, String>,
}

/// Resolves every topic of pipeline `pipeline` from the defaults and the overrides.
pub fn resolve_topics(pipeline: &str, overrides: &BTreeMap<Topic, TopicOverride>) -> Vec<TopicSpec> {
    Topic::ALL
        .into_iter()
        .map(|topic| {
            let defaults = topic.defaults();
            let over = overrides.get(&topic).cloned().unwrap_or_default();
            let mut config = BTreeMap::new();
            match defaults.cleanup {
                Cleanup::Delete { retention_ms } => {
                    config.insert("cleanup.policy".to_owned(), "delete".to_owned());
                    let retention = over.retention_ms.unwrap_or(retention_ms);
                    config.insert("retention.ms".to_owned(), retention.to_string());
                }
                Cleanup::Compact => {
                    config.insert("cleanup.policy".to_owned(), "compact".to_owned());
                }
            }
            config.extend(over.config);
            TopicSpec {
                topic,
                name: topic.name(pipeline),
                partitions: over.partitions.unwrap_or(defaults.partitions),
                replicas: over.replicas.unwrap_or(1),
                config,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        assert_eq!(Topic::RiskScores.name("demo"), "demo.risk-scores");
        assert_eq!(Topic::from_logical("dead-letter"), Some(Topic::DeadLetter));
        assert_eq!(Topic::from_logical("nope"), None);
        for t in Topic::ALL {
            assert_eq!(Topic::from_logical(t.logical()), Some(t));
        }
    }

    #[test]
    fn overrides_apply_on_top_of_defaults() {
        let mut over = BTreeMap::new();
        over.insert(
            Topic::Transactions,
            TopicOverride {
                partitions: Some(12),
                retention_ms: Some(1000),
                config: [("min.insync.replicas".to_owned(), "2".to_owned())].into(),
                ..Default::default()
            },
        );
        let specs = resolve_topics("p", &over);
        let tx = &specs[0];
        assert_eq!(tx.name, "p.transactions");
        assert_eq!(tx.partitions, 12);
        assert_eq!(tx.config["retention.ms"], "1000");
        assert_eq!(tx.config["min.insync.replicas"], "2");
        let features = specs.iter().find(|s| s.topic == Topic::CustomerFeatures).unwrap();
        assert_eq!(features.config["cleanup.policy"], "compact");
        assert!(!features.config.contains_key("retention.ms"));
        let stats = specs.iter().find(|s| s.topic == Topic::PipelineStats).unwrap();
        assert_eq!((stats.partitions, stats.config["retention.ms"].as_str()), (1, "86400000"));
    }
}
