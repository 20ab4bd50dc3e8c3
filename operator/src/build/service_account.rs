//! The ServiceAccount the stages run as: no roles bound, token not mounted.

use k8s_openapi::api::core::v1::ServiceAccount;

use super::labels::object_meta;
use crate::validate::Pipeline;

/// The ServiceAccount's name: `P-stages`.
pub fn name(pipeline: &Pipeline) -> String {
    format!("{}-stages", pipeline.name)
}

/// The stages' ServiceAccount.
pub fn service_account(pipeline: &Pipeline) -> ServiceAccount {
    ServiceAccount {
        metadata: object_meta(pipeline, name(pipeline), "stages"),
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}
