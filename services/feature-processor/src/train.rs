//! Training the risk model (`feature-processor train`).
//!
//! Data comes from the producer's simulator; features come from [`CustomerWindow`], the
//! code the stream uses. Every customer-day with activity is a row, featured as of the
//! end of that day, and labelled positive when the customer defaults within the horizon
//! (the simulator's ground truth). Days while a customer is in default, and days whose
//! horizon runs past the end of the simulation without a default (unknown outcome), are
//! left out. Customers, not rows, are split into train and test, so the metrics are on
//! customers the model never saw. The fit is linfa's logistic regression (L-BFGS, L2).

use std::collections::BTreeSet;

use chrono::{NaiveDate, TimeDelta};
use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};

use eventpipe_common::events::{FeatureValues, Outcome, RiskBand};
use producer::simulator::{SimConfig, SimEvent, Simulator};

use crate::model::{BandMetrics, BandThresholds, ModelMetrics, RiskModel, TrainingInfo};
use crate::window::CustomerWindow;

/// Band thresholds written into trained models.
pub const DEFAULT_BANDS: BandThresholds = BandThresholds { medium: 0.05, high: 0.20, critical: 0.50 };

/// What to train on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainConfig {
    pub customers: u32,
    pub days: u32,
    pub seed: u64,
    pub horizon_days: u32,
}

/// One customer-day.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub customer: u32,
    pub day: u32,
    pub features: FeatureValues,
    pub label: bool,
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("no defaults in the training data: simulate more customers or days")]
    NoPositives,
    #[error("logistic regression failed: {0}")]
    Fit(#[from] linfa_logistic::error::Error),
}

/// Every labelled customer-day of a simulation.
pub fn build_dataset(config: &TrainConfig) -> Vec<Row> {
    let start = NaiveDate::from_ymd_opt(2026, 1, 1).expect("valid date");
    let mut sim = Simulator::new(SimConfig { customers: config.customers, seed: config.seed, start });
    let n = config.customers as usize;
    let mut windows = vec![CustomerWindow::default(); n];
    let mut in_default = vec![false; n];
    let mut default_days: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut snapshots: Vec<(u32, u32, FeatureValues)> = Vec::new();
    let mut events = Vec::new();
    // Events arrive in order here; the stream's default lateness is irrelevant.
    let lateness = TimeDelta::days(1);
    for day in 0..config.days {
        events.clear();
        sim.next_day(&mut events);
        let mut touched = BTreeSet::new();
        for event in &events {
            let i = customer_index(event.customer_id());
            match event {
                SimEvent::Transaction(t) => {
                    windows[i].apply(t, lateness);
                    touched.insert(i);
                }
                SimEvent::Outcome(o) => match o.outcome {
                    Outcome::Defaulted => {
                        in_default[i] = true;
                        default_days[i].push(day);
                    }
                    Outcome::Cured => in_default[i] = false,
                },
            }
        }
        for i in touched {
            if !in_default[i] {
                snapshots.push((i as u32, day, windows[i].features()));
            }
        }
    }
    let horizon = config.horizon_days;
    snapshots
        .into_iter()
        .filter_map(|(customer, day, features)| {
            let label = default_days[customer as usize].iter().any(|&d| d > day && d <= day + horizon);
            let observed = day + horizon < config.days;
            (label || observed).then_some(Row { customer, day, features, label })
        })
        .collect()
}

fn customer_index(id: &str) -> usize {
    id[1..].parse().expect("simulator customer ids are C + digits")
}

/// Whether `customer` is held out for testing (about one in five, fixed by the seed).
pub fn is_test_customer(customer: u32, seed: u64) -> bool {
    let mut x = u64::from(customer) ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)) % 5 == 0
}

/// Trains a model on a fresh simulation.
pub fn train(config: &TrainConfig) -> Result<RiskModel, TrainError> {
    let rows = build_dataset(config);
    let (test, train): (Vec<&Row>, Vec<&Row>) = rows.iter().partition(|r| is_test_customer(r.customer, config.seed));
    if !train.iter().any(|r| r.label) || !test.iter().any(|r| r.label) {
        return Err(TrainError::NoPositives);
    }
    let names = FeatureValues::NAMES;
    let k = names.len();
    let raw = |rows: &[&Row]| {
        Array2::from_shape_vec((rows.len(), k), rows.iter().flat_map(|r| r.features.values()).collect())
            .expect("rows have k features")
    };
    let x_train = raw(&train);
    let means: Vec<f64> = (0..k).map(|j| x_train.column(j).mean().unwrap_or(0.0)).collect();
    let stds: Vec<f64> = (0..k)
        .map(|j| {
            let s = x_train.column(j).std(0.0);
            if s > 1e-9 {
                s
            } else {
                1.0
            }
        })
        .collect();
    let mut z = x_train.clone();
    for j in 0..k {
        z.column_mut(j).mapv_inplace(|v| (v - means[j]) / stds[j]);
    }
    let y: Array1<bool> = train.iter().map(|r| r.label).collect();
    let fitted = LogisticRegression::default().alpha(0.1).max_iterations(300).fit(&Dataset::new(z, y))?;
    // linfa's "positive" class is the larger one (no default): flip to P(default).
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    let coefficients: Vec<f64> = fitted.params().iter().map(|c| sign * c).collect();
    let intercept = sign * fitted.intercept();

    let mut model = RiskModel {
        version: String::new(),
        features: names.iter().map(|s| (*s).to_owned()).collect(),
        means,
        stds,
        coefficients,
        intercept,
        bands: DEFAULT_BANDS,
        metrics: ModelMetrics {
            roc_auc: 0.0,
            brier_score: 0.0,
            base_rate: 0.0,
            train_rows: train.len(),
            test_rows: test.len(),
            train_customers: distinct_customers(&train),
            test_customers: distinct_customers(&test),
            bands: Vec::new(),
        },
        training: TrainingInfo {
            customers: config.customers,
            days: config.days,
            seed: config.seed,
            horizon_days: config.horizon_days,
            library: "linfa-logistic 0.8 (L-BFGS, L2 alpha 0.1)".into(),
        },
    };

    // Bands by probability of default within the horizon: medium from 5 %, high from
    // 20 %, critical when default is more likely than not.
    model.bands = DEFAULT_BANDS;

    // Held-out metrics, scored through the same path as the stream.
    let scored: Vec<(f64, bool)> = test.iter().map(|r| (model.score(&r.features).score, r.label)).collect();
    model.metrics.roc_auc = roc_auc(&scored);
    model.metrics.brier_score =
        scored.iter().map(|(p, y)| (p - f64::from(u8::from(*y))).powi(2)).sum::<f64>() / scored.len() as f64;
    model.metrics.base_rate = scored.iter().filter(|(_, y)| *y).count() as f64 / scored.len() as f64;
    model.metrics.bands = [
        (RiskBand::Medium, model.bands.medium),
        (RiskBand::High, model.bands.high),
        (RiskBand::Critical, model.bands.critical),
    ]
    .into_iter()
    .map(|(band, threshold)| band_metrics(&scored, band, threshold))
    .collect();
    model.version = version(&model);
    Ok(model)
}

fn distinct_customers(rows: &[&Row]) -> usize {
    rows.iter().map(|r| r.customer).collect::<BTreeSet<_>>().len()
}

/// Precision and recall of flagging scores ≥ `threshold`.
fn band_metrics(scored: &[(f64, bool)], band: RiskBand, threshold: f64) -> BandMetrics {
    let flagged = scored.iter().filter(|(p, _)| *p >= threshold).count();
    let hits = scored.iter().filter(|(p, y)| *p >= threshold && *y).count();
    let positives = scored.iter().filter(|(_, y)| *y).count();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    BandMetrics {
        band,
        threshold,
        flagged_share: ratio(flagged, scored.len()),
        precision: ratio(hits, flagged),
        recall: ratio(hits, positives),
    }
}

/// Area under the ROC curve (Mann–Whitney, ties counted half).
pub fn roc_auc(scored: &[(f64, bool)]) -> f64 {
    let mut sorted: Vec<(f64, bool)> = scored.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = sorted.iter().filter(|(_, y)| *y).count() as f64;
    let negatives = sorted.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return 0.5;
    }
    // Sum of the positives' average ranks.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1].0 == sorted[i].0 {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += average_rank * sorted[i..=j].iter().filter(|(_, y)| *y).count() as f64;
        i = j + 1;
    }
    (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

/// A version string that changes with the parameters: `pd<horizon>-s<seed>-<hash>`.
fn version(model: &RiskModel) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for v in model.coefficients.iter().chain(&model.means).chain(&model.stds).chain([&model.intercept]) {
        for b in v.to_bits().to_le_bytes() {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("pd{}-s{}-{:08x}", model.training.horizon_days, model.training.seed, hash as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_known_rankings() {
        assert_eq!(roc_auc(&[(0.1, false), (0.2, false), (0.8, true), (0.9, true)]), 1.0);
        assert_eq!(roc_auc(&[(0.1, true), (0.2, true), (0.8, false), (0.9, false)]), 0.0);
        // One tie between a positive and a negative counts half: (1 + 0.5) / 2.
        assert_eq!(roc_auc(&[(0.1, false), (0.5, false), (0.5, true), (0.9, true)]), 0.875);
    }

    #[test]
    fn test_customers_are_about_a_fifth_and_fixed_by_seed() {
        let held_out = (0..10_000).filter(|c| is_test_customer(*c, 42)).count();
        assert!((1_800..2_200).contains(&held_out), "{held_out}");
        assert_ne!(
            (0..100).filter(|c| is_test_customer(*c, 42)).collect::<Vec<_>>(),
            (0..100).filter(|c| is_test_customer(*c, 43)).collect::<Vec<_>>()
        );
    }
}
