//! Pure builders: from a validated [`Pipeline`] to the Kubernetes objects it needs, one
//! file per kind. `render`, `local` and the reconciler all use [`desired`].

pub mod config_map;
pub mod deployment;
pub mod labels;
pub mod service;
pub mod service_account;
pub mod topic;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use serde_json::Value;

use crate::strimzi::KafkaTopic;
use crate::validate::Pipeline;

/// Everything a pipeline needs, by kind.
#[derive(Debug, Clone)]
pub struct Desired {
    pub service_account: ServiceAccount,
    pub config_map: ConfigMap,
    pub topics: Vec<KafkaTopic>,
    pub services: Vec<Service>,
    pub deployments: Vec<Deployment>,
}

/// The objects `pipeline` needs.
pub fn desired(pipeline: &Pipeline) -> Desired {
    Desired {
        service_account: service_account::service_account(pipeline),
        config_map: config_map::config_map(pipeline),
        topics: topic::kafka_topics(pipeline),
        services: service::services(pipeline),
        deployments: pipeline.stages.iter().map(|plan| deployment::deployment(pipeline, plan)).collect(),
    }
}

impl Desired {
    /// Every object as JSON with `apiVersion` and `kind`, in apply order: what the
    /// stages need exists before they start (account, config, topics), Services
    /// before the pods behind them.
    pub fn objects(&self) -> Vec<Value> {
        let json = |v: Result<Value, serde_json::Error>| v.expect("Kubernetes objects serialize");
        let mut out =
            vec![json(serde_json::to_value(&self.service_account)), json(serde_json::to_value(&self.config_map))];
        out.extend(self.topics.iter().map(|t| json(serde_json::to_value(t))));
        out.extend(self.services.iter().map(|s| json(serde_json::to_value(s))));
        out.extend(self.deployments.iter().map(|d| json(serde_json::to_value(d))));
        out
    }
}
