//! The EventPipeline's status, computed (purely) from what the reconcile saw: the
//! Deployments' ready replicas, the KafkaTopics' `Ready` conditions, and why a
//! reconcile stopped. Conditions keep their `lastTransitionTime` while their status
//! stays the same, so an unchanged pipeline gets an identical status and no write.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::build::topic::object_name;
use crate::crd::{EventPipelineStatus, Phase, StageStatus, TopicStatus};
use crate::strimzi::KafkaTopic;
use crate::validate::Pipeline;

/// Condition types.
pub const READY: &str = "Ready";
pub const TOPICS_READY: &str = "TopicsReady";
pub const STAGES_READY: &str = "StagesReady";
pub const SUSPENDED: &str = "Suspended";

/// What the status is computed from.
pub struct Observed<'a> {
    pub generation: Option<i64>,
    pub previous: Option<&'a EventPipelineStatus>,
    pub now: Time,
}

/// The status when the spec was not (fully) applied — invalid, or the API refused a
/// write: `Ready` is false with `reason`; what was last seen of the stages and topics
/// stays, since they still run as before.
pub fn not_applied(observed: &Observed, phase: Phase, reason: &str, message: &str) -> EventPipelineStatus {
    let mut status = observed.previous.cloned().unwrap_or_default();
    status.observed_generation = observed.generation;
    status.phase = Some(phase);
    let ready = condition(observed, READY, false, reason, message);
    status.conditions.retain(|c| c.type_ != READY);
    status.conditions.insert(0, ready);
    status
}

/// The status of a pipeline whose objects were applied.
pub fn applied(
    observed: &Observed,
    pipeline: &Pipeline,
    deployments: &[Deployment],
    topics: &[KafkaTopic],
) -> EventPipelineStatus {
    let stages: Vec<StageStatus> = pipeline
        .stages
        .iter()
        .map(|plan| {
            let name = crate::build::deployment::name(pipeline, plan.stage);
            let ready = deployments
                .iter()
                .find(|d| d.name_any() == name)
                .and_then(|d| d.status.as_ref()?.ready_replicas)
                .unwrap_or(0);
            StageStatus { name: plan.stage.name().to_owned(), replicas: plan.replicas, ready_replicas: ready }
        })
        .collect();
    let topic_statuses: Vec<TopicStatus> = if pipeline.strimzi.is_some() {
        pipeline
            .topics
            .iter()
            .map(|t| {
                let object = object_name(pipeline, t);
                let (ready, message) = topics
                    .iter()
                    .find(|k| k.name_any() == object)
                    .map(KafkaTopic::readiness)
                    .unwrap_or((false, Some("KafkaTopic not created yet".to_owned())));
                TopicStatus { name: t.name.clone(), ready, message }
            })
            .collect()
    } else {
        Vec::new()
    };

    let stages_ready = stages.iter().filter(|s| s.ready_replicas >= s.replicas).count();
    let topics_ready = topic_statuses.iter().filter(|t| t.ready).count();
    let all_stages = stages_ready == stages.len();
    let all_topics = topics_ready == topic_statuses.len();

    let topics_condition = if pipeline.strimzi.is_none() {
        condition(
            observed,
            TOPICS_READY,
            true,
            "External",
            "Kafka is not Strimzi's: the topics are managed outside the cluster",
        )
    } else if all_topics {
        condition(
            observed,
            TOPICS_READY,
            true,
            "AllTopicsReady",
            &format!("{topics_ready}/{} topics ready", topic_statuses.len()),
        )
    } else {
        let first = topic_statuses.iter().find(|t| !t.ready).expect("some topic is not ready");
        let why = first.message.as_deref().unwrap_or("not ready");
        condition(
            observed,
            TOPICS_READY,
            false,
            "TopicsNotReady",
            &format!("{topics_ready}/{} topics ready; {}: {why}", topic_statuses.len(), first.name),
        )
    };
    let stages_condition = if all_stages {
        condition(
            observed,
            STAGES_READY,
            true,
            "AllStagesReady",
            &format!("{stages_ready}/{} stages ready", stages.len()),
        )
    } else {
        let waiting: Vec<String> = stages
            .iter()
            .filter(|s| s.ready_replicas < s.replicas)
            .map(|s| format!("{} {}/{}", s.name, s.ready_replicas, s.replicas))
            .collect();
        condition(observed, STAGES_READY, false, "StagesNotReady", &format!("waiting for {}", waiting.join(", ")))
    };
    let suspended_condition = if pipeline.suspended {
        condition(observed, SUSPENDED, true, "SuspendedBySpec", "spec.suspend is true: every stage is scaled to 0")
    } else {
        condition(observed, SUSPENDED, false, "NotSuspended", "stages run as specified")
    };

    let was_running =
        observed.previous.and_then(|p| p.phase).is_some_and(|p| matches!(p, Phase::Running | Phase::Degraded));
    let (phase, ready) = if pipeline.suspended {
        (Phase::Suspended, condition(observed, READY, false, "Suspended", "spec.suspend is true"))
    } else if all_stages && all_topics {
        (Phase::Running, condition(observed, READY, true, "Running", "every topic and stage is ready"))
    } else {
        let (reason, message) = if all_topics {
            ("StagesNotReady", &stages_condition.message)
        } else {
            ("TopicsNotReady", &topics_condition.message)
        };
        let phase = if was_running { Phase::Degraded } else { Phase::Provisioning };
        (phase, condition(observed, READY, false, reason, message))
    };

    EventPipelineStatus {
        observed_generation: observed.generation,
        phase: Some(phase),
        conditions: vec![ready, topics_condition, stages_condition, suspended_condition],
        stages_summary: Some(format!("{stages_ready}/{}", stages.len())),
        topics_summary: (!topic_statuses.is_empty()).then(|| format!("{topics_ready}/{}", topic_statuses.len())),
        stages,
        topics: topic_statuses,
    }
}

/// A condition, keeping the previous `lastTransitionTime` when its status is unchanged.
fn condition(observed: &Observed, type_: &str, status: bool, reason: &str, message: &str) -> Condition {
    let status = if status { "True" } else { "False" }.to_owned();
    let last_transition_time = observed
        .previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| observed.now.clone());
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: observed.generation,
        last_transition_time,
    }
}
