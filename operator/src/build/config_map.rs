//! The ConfigMap every stage mounts at `/etc/eventpipe`: `pipeline.yaml`, and
//! `model.json` when the spec carries a model.
//!
//! The hash of `pipeline.yaml` goes on the pod templates, so a settings change rolls
//! the pods; the model is left out of it on purpose: the feature-processor reloads a
//! changed model file without a restart.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};

use super::labels::object_meta;
use crate::validate::{Pipeline, MODEL_FILE, PIPELINE_FILE};

/// The pod-template annotation carrying [`config_hash`].
pub const CONFIG_HASH_ANNOTATION: &str = "eventpipe.dev/config-hash";

/// The ConfigMap's name: `P-config`.
pub fn name(pipeline: &Pipeline) -> String {
    format!("{}-config", pipeline.name)
}

/// The pipeline's ConfigMap.
pub fn config_map(pipeline: &Pipeline) -> ConfigMap {
    let mut data = BTreeMap::from([(PIPELINE_FILE.to_owned(), pipeline.pipeline_file.clone())]);
    if let Some(model) = &pipeline.model {
        data.insert(MODEL_FILE.to_owned(), model.clone());
    }
    ConfigMap { metadata: object_meta(pipeline, name(pipeline), "config"), data: Some(data), ..Default::default() }
}

/// The first 16 hex digits of the SHA-256 of `pipeline.yaml`.
pub fn config_hash(pipeline: &Pipeline) -> String {
    let digest = Sha256::digest(pipeline.pipeline_file.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
