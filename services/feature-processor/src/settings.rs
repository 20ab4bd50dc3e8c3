//! The feature-processor's section of the pipeline file (`stages.feature-processor`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::TimeDelta;
use serde::Deserialize;

use eventpipe_common::config::ConfigError;

use crate::model::RiskModel;
use crate::processor::CoreConfig;
use crate::window::RING_DAYS;
use eventpipe_common::stream::{Guarantee, StreamConfig};
use eventpipe_common::topics::Topic;

/// The model shipped in the binary, used when the config names none.
pub const BUILT_IN_MODEL: &str = include_str!("../models/default.json");

/// `stages.feature-processor` in the pipeline file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureProcessorSettings {
    /// Model file, relative to the pipeline file's directory unless absolute; reloaded
    /// when it changes. Default: the model built into the binary.
    pub model: Option<PathBuf>,
    /// `exactly_once` (Kafka transactions) or `at_least_once`.
    pub processing_guarantee: Guarantee,
    /// How far (seconds) behind a customer's latest event an event may still be applied.
    pub allowed_lateness_secs: u64,
    /// A new RiskScore is emitted when the score moves at least this much (or the band changes).
    pub min_score_change: f64,
    /// Commit interval in milliseconds.
    pub commit_interval_ms: u64,
    /// Commit after this many input records at most.
    pub max_batch: usize,
}

impl Default for FeatureProcessorSettings {
    fn default() -> Self {
        FeatureProcessorSettings {
            model: None,
            processing_guarantee: Guarantee::ExactlyOnce,
            allowed_lateness_secs: 86_400,
            min_score_change: 0.05,
            commit_interval_ms: 100,
            max_batch: 50_000,
        }
    }
}

const KEY: &str = "stages.feature-processor";

impl FeatureProcessorSettings {
    /// Checks ranges; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.min_score_change.is_finite() && (0.0..=1.0).contains(&self.min_score_change)) {
            return Err(ConfigError::new(format!("{KEY}.min_score_change"), "must be between 0 and 1"));
        }
        let max_lateness = RING_DAYS as u64 * 86_400;
        if self.allowed_lateness_secs > max_lateness {
            return Err(ConfigError::new(
                format!("{KEY}.allowed_lateness_secs"),
                format!("must be at most {max_lateness} ({RING_DAYS} days: older days have left the window)"),
            ));
        }
        if self.commit_interval_ms == 0 {
            return Err(ConfigError::new(format!("{KEY}.commit_interval_ms"), "must be at least 1"));
        }
        if self.max_batch == 0 {
            return Err(ConfigError::new(format!("{KEY}.max_batch"), "must be at least 1"));
        }
        Ok(())
    }

    /// A relative `model` path names a file beside the pipeline file (`config`), so a
    /// ConfigMap holding both can be mounted, or written to a directory, anywhere.
    pub fn resolve_model_path(mut self, config: Option<&Path>) -> Self {
        if let (Some(model), Some(dir)) = (&self.model, config.and_then(Path::parent)) {
            if model.is_relative() {
                self.model = Some(dir.join(model));
            }
        }
        self
    }

    /// Loads the configured model (or the built-in one); errors name the key.
    pub fn load_model(&self) -> Result<RiskModel, ConfigError> {
        match &self.model {
            Some(path) => RiskModel::load(path).map_err(|e| ConfigError::new(format!("{KEY}.model"), e)),
            None => {
                let model: RiskModel = serde_json::from_str(BUILT_IN_MODEL).expect("the built-in model parses");
                model.check().expect("the built-in model is valid");
                Ok(model)
            }
        }
    }

    /// The loop's configuration.
    pub fn stream_config(&self) -> StreamConfig {
        StreamConfig {
            guarantee: self.processing_guarantee,
            commit_interval: Duration::from_millis(self.commit_interval_ms),
            max_batch: self.max_batch,
            input: Topic::Transactions,
            changelog: Topic::CustomerFeatures,
        }
    }

    /// The core's configuration.
    pub fn core_config(&self) -> CoreConfig {
        CoreConfig {
            allowed_lateness: TimeDelta::seconds(self.allowed_lateness_secs as i64),
            min_score_change: self.min_score_change,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_values_name_their_key() {
        let error = |s: FeatureProcessorSettings| s.validate().unwrap_err().to_string();
        let lateness = |secs| FeatureProcessorSettings { allowed_lateness_secs: secs, ..Default::default() };
        assert!(lateness(90 * 86_400).validate().is_ok());
        assert_eq!(
            error(lateness(90 * 86_400 + 1)),
            "invalid configuration: stages.feature-processor.allowed_lateness_secs: must be at most 7776000 (90 days: older days have left the window)"
        );
        assert!(error(lateness(u64::MAX))
            .starts_with("invalid configuration: stages.feature-processor.allowed_lateness_secs: "));
        let change = FeatureProcessorSettings { min_score_change: f64::NAN, ..Default::default() };
        assert!(error(change).starts_with("invalid configuration: stages.feature-processor.min_score_change: "));
        let batch = FeatureProcessorSettings { max_batch: 0, ..Default::default() };
        assert_eq!(error(batch), "invalid configuration: stages.feature-processor.max_batch: must be at least 1");
    }

    #[test]
    fn a_relative_model_path_is_beside_the_pipeline_file() {
        let with = |model: &str| FeatureProcessorSettings { model: Some(model.into()), ..Default::default() };
        let config = Path::new("/etc/eventpipe/pipeline.yaml");
        assert_eq!(
            with("model.json").resolve_model_path(Some(config)).model,
            Some(PathBuf::from("/etc/eventpipe/model.json"))
        );
        assert_eq!(
            with("/models/m.json").resolve_model_path(Some(config)).model,
            Some(PathBuf::from("/models/m.json"))
        );
        assert_eq!(with("model.json").resolve_model_path(None).model, Some(PathBuf::from("model.json")));
        assert_eq!(FeatureProcessorSettings::default().resolve_model_path(Some(config)).model, None);
    }
}
