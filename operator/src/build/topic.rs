//! KafkaTopics: one per topic of the pipeline, in the Kafka cluster's namespace.
//!
//! They carry no owner reference, even in the pipeline's own namespace: garbage
//! collection would delete them, and with them the data, whatever
//! `topicDeletionPolicy` says. The finalizer handles them instead.

use eventpipe_common::topics::TopicSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::labels::{labels, PIPELINE_NAMESPACE_LABEL};
use crate::strimzi::{KafkaTopic, KafkaTopicSpec, CLUSTER_LABEL};
use crate::validate::{Pipeline, StrimziTarget};

/// The KafkaTopic object's name for a topic: `P-<logical>`.
pub fn object_name(pipeline: &Pipeline, topic: &TopicSpec) -> String {
    format!("{}-{}", pipeline.name, topic.topic.logical())
}

/// Every KafkaTopic of `pipeline`; none when Kafka is not Strimzi's.
pub fn kafka_topics(pipeline: &Pipeline) -> Vec<KafkaTopic> {
    let Some(StrimziTarget { cluster, namespace }) = &pipeline.strimzi else {
        return Vec::new();
    };
    pipeline
        .topics
        .iter()
        .map(|topic| {
            let mut l = labels(pipeline, "topic");
            l.insert(CLUSTER_LABEL.into(), cluster.clone());
            l.insert(PIPELINE_NAMESPACE_LABEL.into(), pipeline.namespace.clone());
            KafkaTopic {
                metadata: ObjectMeta {
                    name: Some(object_name(pipeline, topic)),
                    namespace: Some(namespace.clone()),
                    labels: Some(l),
                    ..Default::default()
                },
                spec: KafkaTopicSpec {
                    topic_name: Some(topic.name.clone()),
                    partitions: Some(topic.partitions),
                    replicas: Some(topic.replicas),
                    config: topic.config.clone(),
                },
                status: None,
            }
        })
        .collect()
}
