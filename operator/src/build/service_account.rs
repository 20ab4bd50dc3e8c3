//! The ServiceAccount the stages run as: no roles bound, token not mounted.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::labels::{labels, owner_references};
use crate::validate::Pipeline;

/// The ServiceAccount's name: `P-stages`.
pub fn name(pipeline: &Pipeline) -> String {
    format!("{}-stages", pipeline.name)
}

/// The stages' ServiceAccount.
pub fn service_account(pipeline: &Pipeline) -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name(pipeline)),
            namespace: Some(pipeline.namespace.clone()),
            labels: Some(labels(pipeline, "stages")),
            owner_references: owner_references(pipeline),
            ..Default::default()
        },
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}
