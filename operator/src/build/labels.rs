//! The recommended `app.kubernetes.io` labels in one place, the selectors made from
//! them, and owner references.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::validate::Pipeline;

/// `app.kubernetes.io/managed-by` of everything this operator creates.
pub const MANAGER: &str = "eventpipe-operator";
/// `app.kubernetes.io/part-of` and `app.kubernetes.io/name`.
pub const APP: &str = "eventpipe";
/// On KafkaTopics (which may live in another namespace): the pipeline's namespace.
pub const PIPELINE_NAMESPACE_LABEL: &str = "eventpipe.dev/pipeline-namespace";

/// Labels of an object of `pipeline`; `component` is the stage (or `config`, `topic`, ...).
pub fn labels(pipeline: &Pipeline, component: &str) -> BTreeMap<String, String> {
    let mut l = selector(pipeline);
    l.insert("app.kubernetes.io/component".into(), component.into());
    l.insert("app.kubernetes.io/part-of".into(), APP.into());
    l.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
    l
}

/// What selects every pod of `pipeline`.
pub fn selector(pipeline: &Pipeline) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), APP.to_owned()),
        ("app.kubernetes.io/instance".to_owned(), pipeline.name.clone()),
    ])
}

/// What selects the pods of one stage.
pub fn stage_selector(pipeline: &Pipeline, component: &str) -> BTreeMap<String, String> {
    let mut l = selector(pipeline);
    l.insert("app.kubernetes.io/component".into(), component.into());
    l
}

/// The label selector (as a string) of everything this operator made for `pipeline`
/// in its own namespace.
pub fn owned_selector(pipeline: &Pipeline) -> String {
    format!("app.kubernetes.io/instance={},app.kubernetes.io/managed-by={MANAGER}", pipeline.name)
}

/// The label selector of `pipeline`'s KafkaTopics, which may share a namespace with
/// other namespaces' pipelines.
pub fn topic_selector(pipeline: &Pipeline) -> String {
    format!("{},{PIPELINE_NAMESPACE_LABEL}={}", owned_selector(pipeline), pipeline.namespace)
}

/// The owner reference to the EventPipeline, when its uid is known (not when rendering
/// a file): same-namespace objects are garbage-collected with it.
pub fn owner_references(pipeline: &Pipeline) -> Option<Vec<OwnerReference>> {
    let uid = pipeline.uid.clone()?;
    Some(vec![OwnerReference {
        api_version: "eventpipe.dev/v1alpha1".into(),
        kind: "EventPipeline".into(),
        name: pipeline.name.clone(),
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    }])
}

/// The metadata of an object `name` of `pipeline` in its namespace: the labels for
/// `component` and the owner reference.
pub fn object_meta(pipeline: &Pipeline, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(pipeline.namespace.clone()),
        labels: Some(labels(pipeline, component)),
        owner_references: owner_references(pipeline),
        ..Default::default()
    }
}
