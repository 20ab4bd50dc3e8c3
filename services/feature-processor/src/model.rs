//! The explainable risk model: logistic regression over standardized features.
//!
//! score = σ(intercept + Σ coefficientᵢ · (valueᵢ − meanᵢ) / stdᵢ). Each term is a
//! feature's contribution to the log-odds, so the top factors of a score are the terms
//! that pushed it up the most. The model file (JSON) holds everything needed to score
//! and to judge it: feature order, standardization, coefficients, band thresholds and
//! the held-out metrics from training.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use eventpipe_common::events::{FeatureValues, RiskBand, RiskFactor};

/// Score thresholds of the bands: a score at or above a threshold is in that band.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BandThresholds {
    pub medium: f64,
    pub high: f64,
    pub critical: f64,
}

impl BandThresholds {
    /// The band of `score`.
    pub fn band(&self, score: f64) -> RiskBand {
        if score >= self.critical {
            RiskBand::Critical
        } else if score >= self.high {
            RiskBand::High
        } else if score >= self.medium {
            RiskBand::Medium
        } else {
            RiskBand::Low
        }
    }
}

/// Precision and recall when flagging every score at or above a band's threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandMetrics {
    pub band: RiskBand,
    pub threshold: f64,
    /// Share of held-out customer-days flagged.
    pub flagged_share: f64,
    pub precision: f64,
    pub recall: f64,
}

/// How the model did on held-out customers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetrics {
    pub roc_auc: f64,
    pub brier_score: f64,
    /// Share of positive customer-days in the held-out set.
    pub base_rate: f64,
    pub train_rows: usize,
    pub test_rows: usize,
    pub train_customers: usize,
    pub test_customers: usize,
    pub bands: Vec<BandMetrics>,
}

/// How the model was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    pub customers: u32,
    pub days: u32,
    pub seed: u64,
    /// A customer-day is positive when the customer defaults within this many days.
    pub horizon_days: u32,
    pub library: String,
}

/// A trained model, as stored in its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskModel {
    pub version: String,
    pub features: Vec<String>,
    pub means: Vec<f64>,
    pub stds: Vec<f64>,
    pub coefficients: Vec<f64>,
    pub intercept: f64,
    pub bands: BandThresholds,
    pub metrics: ModelMetrics,
    pub training: TrainingInfo,
}

/// Why a model file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("model file {path} is not a valid model: {source}")]
    Parse { path: String, source: serde_json::Error },
    #[error("model {version}: {message}")]
    Invalid { version: String, message: String },
}

/// A scored customer: probability, band and the three strongest upward factors.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub score: f64,
    pub band: RiskBand,
    pub top_factors: Vec<RiskFactor>,
}

impl RiskModel {
    /// Loads and checks a model file.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let display = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| ModelError::Read { path: display.clone(), source })?;
        let model: RiskModel =
            serde_json::from_str(&text).map_err(|source| ModelError::Parse { path: display, source })?;
        model.check()?;
        Ok(model)
    }

    /// Checks internal consistency: known features, matching lengths, positive stds,
    /// ordered thresholds.
    pub fn check(&self) -> Result<(), ModelError> {
        let invalid = |message: String| ModelError::Invalid { version: self.version.clone(), message };
        let n = self.features.len();
        if n == 0 || self.means.len() != n || self.stds.len() != n || self.coefficients.len() != n {
            return Err(invalid(format!(
                "features, means, stds and coefficients must have the same non-zero length ({n}, {}, {}, {})",
                self.means.len(),
                self.stds.len(),
                self.coefficients.len()
            )));
        }
        if let Some(unknown) = self.features.iter().find(|f| FeatureValues::index_of(f).is_none()) {
            return Err(invalid(format!("unknown feature `{unknown}`")));
        }
        if self.stds.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(invalid("every std must be positive".into()));
        }
        let b = self.bands;
        if !(0.0 < b.medium && b.medium <= b.high && b.high <= b.critical && b.critical <= 1.0) {
            return Err(invalid(format!(
                "band thresholds must satisfy 0 < medium <= high <= critical <= 1, got {b:?}"
            )));
        }
        Ok(())
    }

    /// Scores `features`.
    pub fn score(&self, features: &FeatureValues) -> Scored {
        let positions = self.positions();
        let values = features.values();
        let score = Linear::of(self, &positions).probability(&values);
        Scored { score, band: self.bands.band(score), top_factors: self.top_factors(&positions, &values) }
    }

    /// Where each of the model's features is in [`FeatureValues::values`].
    fn positions(&self) -> Vec<usize> {
        self.features.iter().map(|name| FeatureValues::index_of(name).expect("checked at load")).collect()
    }

    fn contribution(&self, i: usize, value: f64) -> f64 {
        self.coefficients[i] * (value - self.means[i]) / self.stds[i]
    }

    /// The three largest contributions, largest first (ties in feature order).
    fn top_factors(&self, positions: &[usize], values: &[f64; 16]) -> Vec<RiskFactor> {
        let mut top: [(usize, f64); 3] = [(0, 0.0); 3];
        let mut len = 0;
        for (i, &at) in positions.iter().enumerate() {
            let c = self.contribution(i, values[at]);
            let Some(slot) = (0..3).find(|&j| j >= len || c.total_cmp(&top[j].1).is_gt()) else { continue };
            top.copy_within(slot..2, slot + 1);
            top[slot] = (i, c);
            len = (len + 1).min(3);
        }
        top[..len]
            .iter()
            .map(|&(i, contribution)| RiskFactor {
                feature: self.features[i].clone(),
                value: values[positions[i]],
                contribution,
            })
            .collect()
    }
}

/// The model's log-odds as one weight per feature, in [`FeatureValues::NAMES`]' order,
/// and a bias: intercept + Σ cᵢ·(xᵢ − mᵢ)/sᵢ = bias + Σ wᵢ·xᵢ, with wᵢ = cᵢ/sᵢ and
/// bias = intercept − Σ wᵢ·mᵢ. A score is then sixteen products, with no lookups or
/// divisions; the contributions of the top factors keep the standardized form.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Linear {
    weights: [f64; 16],
    bias: f64,
}

impl Linear {
    fn of(model: &RiskModel, positions: &[usize]) -> Self {
        let mut linear = Linear { weights: [0.0; 16], bias: model.intercept };
        for (i, &at) in positions.iter().enumerate() {
            let weight = model.coefficients[i] / model.stds[i];
            linear.weights[at] += weight;
            linear.bias -= weight * model.means[i];
        }
        linear
    }

    /// σ(log-odds) of `values` (in [`FeatureValues::values`]' order).
    fn probability(&self, values: &[f64; 16]) -> f64 {
        let logit = self.bias + self.weights.iter().zip(values).map(|(w, x)| w * x).sum::<f64>();
        1.0 / (1.0 + (-logit).exp())
    }
}

/// A model prepared for the stream: feature positions and weights computed once, and
/// the explanation (top factors) built only for scores that are emitted.
#[derive(Debug, Clone)]
pub struct Scorer {
    model: Arc<RiskModel>,
    positions: Vec<usize>,
    linear: Linear,
}

impl Scorer {
    /// Prepares `model` (checked).
    pub fn new(model: Arc<RiskModel>) -> Self {
        let positions = model.positions();
        Scorer { linear: Linear::of(&model, &positions), positions, model }
    }

    /// The model.
    pub fn model(&self) -> &Arc<RiskModel> {
        &self.model
    }

    /// Score and band of `features`, as [`RiskModel::score`] gives them.
    pub fn score(&self, features: &FeatureValues) -> (f64, RiskBand) {
        let score = self.linear.probability(&features.values());
        (score, self.model.bands.band(score))
    }

    /// The top factors of `features`, as [`RiskModel::score`] gives them.
    pub fn top_factors(&self, features: &FeatureValues) -> Vec<RiskFactor> {
        self.model.top_factors(&self.positions, &features.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> RiskModel {
        RiskModel {
            version: "test".into(),
            features: vec![
                "failed_debits_30d".into(),
                "balance_min_7d".into(),
                "gambling_share_30d".into(),
                "txn_count_7d".into(),
            ],
            means: vec![0.5, 1000.0, 0.01, 10.0],
            stds: vec![1.0, 500.0, 0.05, 5.0],
            coefficients: vec![0.8, -0.6, 0.4, 0.1],
            intercept: -3.0,
            bands: BandThresholds { medium: 0.1, high: 0.3, critical: 0.6 },
            metrics: ModelMetrics {
                roc_auc: 0.9,
                brier_score: 0.01,
                base_rate: 0.02,
                train_rows: 1,
                test_rows: 1,
                train_customers: 1,
                test_customers: 1,
                bands: vec![],
            },
            training: TrainingInfo { customers: 1, days: 1, seed: 1, horizon_days: 30, library: "test".into() },
        }
    }

    #[test]
    fn score_is_the_logistic_of_standardized_terms_with_top_factors() {
        let features = FeatureValues {
            failed_debits_30d: 2.5,   // z = 2    → +1.6
            balance_min_7d: -500.0,   // z = -3   → +1.8
            gambling_share_30d: 0.06, // z = 1    → +0.4
            txn_count_7d: 5.0,        // z = -1   → -0.1
            ..Default::default()
        };
        let scored = model().score(&features);
        let logit: f64 = -3.0 + 1.6 + 1.8 + 0.4 - 0.1;
        assert!((scored.score - 1.0 / (1.0 + (-logit).exp())).abs() < 1e-12);
        assert_eq!(scored.band, RiskBand::Critical); // σ(0.7) = 0.668 ≥ 0.6
        let names: Vec<&str> = scored.top_factors.iter().map(|f| f.feature.as_str()).collect();
        assert_eq!(names, ["balance_min_7d", "failed_debits_30d", "gambling_share_30d"]);
        assert!((scored.top_factors[0].contribution - 1.8).abs() < 1e-12);
        assert_eq!(scored.top_factors[0].value, -500.0);
    }

    #[test]
    fn top_factors_are_the_largest_contributions_ties_in_feature_order() {
        let mut m = model();
        m.features =
            ["overdraft_fees_30d", "failed_debits_30d", "bnpl_count_30d", "txn_count_7d"].map(String::from).to_vec();
        (m.means, m.stds, m.coefficients) = (vec![0.0; 4], vec![1.0; 4], vec![1.0; 4]);
        let features = FeatureValues {
            overdraft_fees_30d: 2.0,
            failed_debits_30d: 2.0,
            bnpl_count_30d: 3.0,
            txn_count_7d: 1.0,
            ..Default::default()
        };
        let scored = m.score(&features);
        let top: Vec<_> = scored.top_factors.iter().map(|f| (f.feature.as_str(), f.contribution)).collect();
        assert_eq!(top, [("bnpl_count_30d", 3.0), ("overdraft_fees_30d", 2.0), ("failed_debits_30d", 2.0)]);
        assert!((scored.score - 1.0 / (1.0 + (-(-3.0 + 8.0f64)).exp())).abs() < 1e-12);
        let scorer = Scorer::new(Arc::new(m.clone()));
        assert_eq!(scorer.score(&features), (scored.score, scored.band));
        assert_eq!(scorer.top_factors(&features), scored.top_factors);
    }

    #[test]
    fn bands_follow_thresholds() {
        let b = model().bands;
        assert_eq!(b.band(0.05), RiskBand::Low);
        assert_eq!(b.band(0.1), RiskBand::Medium);
        assert_eq!(b.band(0.3), RiskBand::High);
        assert_eq!(b.band(0.99), RiskBand::Critical);
    }

    #[test]
    fn inconsistent_models_are_rejected() {
        let mut m = model();
        m.features[0] = "shoe_size".into();
        assert!(m.check().unwrap_err().to_string().contains("unknown feature `shoe_size`"));
        let mut m = model();
        m.stds[1] = 0.0;
        assert!(m.check().is_err());
        let mut m = model();
        m.coefficients.pop();
        assert!(m.check().is_err());
        let mut m = model();
        m.bands.high = 0.05;
        assert!(m.check().is_err());
    }
}
