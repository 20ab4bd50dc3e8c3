//! The JSON shapes of the API, read from [`DashboardState`]: the overview
//! (`/api/stats`, also pushed on `/api/stream`), one customer (`/api/customers/{id}`)
//! and the intervention feed (`/api/interventions`).

use chrono::{DateTime, Utc};
use serde::Serialize;

use eventpipe_common::events::{CustomerOutcome, Intervention, RiskBand, RiskScore};

use super::customers::ScorePoint;
use super::quality::QualityCounts;
use super::rates::StageView;
use super::{DashboardState, Totals};

/// Customers per band of their latest score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BandCounts {
    pub low: u64,
    pub medium: u64,
    pub high: u64,
    pub critical: u64,
}

/// One row of the top-risk table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopRisk {
    pub customer_id: String,
    pub score: f64,
    pub band: RiskBand,
    /// Event time of the score.
    pub event_time: DateTime<Utc>,
    pub model_version: String,
    /// The factor that pushed the score up the most.
    pub top_factor: Option<String>,
}

/// Live model quality (definitions in [`super::quality`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityView {
    /// Bands that count as a flag.
    pub flagged_bands: [RiskBand; 2],
    /// The horizon in days.
    pub horizon_days: i64,
    /// true positives / decided flags; null before any flag is decided.
    pub precision: Option<f64>,
    /// caught defaults / defaults; null before any default.
    pub recall: Option<f64>,
    /// The counts behind the two numbers.
    #[serde(flatten)]
    pub counts: QualityCounts,
}

/// The overview: everything on the page except the drill-down.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsView {
    /// Wall-clock time the view was made.
    pub generated_at: DateTime<Utc>,
    /// Whether the catch-up at start is done (what `/readyz` says).
    pub caught_up: bool,
    /// Latest event time seen on risk-scores and customer-outcomes.
    pub watermark: Option<DateTime<Utc>>,
    /// Records seen since start.
    pub totals: Totals,
    /// Customers in memory.
    pub customers_tracked: usize,
    /// Band distribution of the tracked customers' latest scores.
    pub bands: BandCounts,
    /// The riskiest customers by latest score, highest first.
    pub top_risk: Vec<TopRisk>,
    /// Model quality.
    pub quality: QualityView,
    /// Per-stage rates and lag over the window, by stage name.
    pub stages: Vec<StageView>,
}

/// One customer, for the drill-down.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomerView {
    pub customer_id: String,
    /// The score with the latest event time, with its top factors.
    pub latest: Option<RiskScore>,
    /// Recent scores, newest (by event time) first.
    pub recent_scores: Vec<ScorePoint>,
    /// Recent interventions, newest first.
    pub interventions: Vec<Intervention>,
    /// The latest outcome, if any.
    pub outcome: Option<CustomerOutcome>,
    /// This customer's part of the model quality counts.
    pub quality: QualityCounts,
}

impl DashboardState {
    /// The overview at wall-clock time `now`.
    pub fn stats(&self, now: DateTime<Utc>) -> StatsView {
        let [low, medium, high, critical] = self.customers.bands();
        let counts = self.quality();
        StatsView {
            generated_at: now,
            caught_up: self.caught_up,
            watermark: self.watermark,
            totals: self.totals,
            customers_tracked: self.customers.len(),
            bands: BandCounts { low, medium, high, critical },
            top_risk: self
                .customers
                .top(self.config.top_n)
                .map(|s| TopRisk {
                    customer_id: s.customer_id.clone(),
                    score: s.score,
                    band: s.band,
                    event_time: s.event_time,
                    model_version: s.model_version.clone(),
                    top_factor: s.top_factors.first().map(|f| f.feature.clone()),
                })
                .collect(),
            quality: QualityView {
                flagged_bands: [RiskBand::High, RiskBand::Critical],
                horizon_days: self.config.quality_horizon.num_days(),
                precision: counts.precision(),
                recall: counts.recall(),
                counts,
            },
            stages: self.rates.view(now),
        }
    }

    /// One customer, if tracked.
    pub fn customer(&self, id: &str) -> Option<CustomerView> {
        let c = self.customers.get(id)?;
        let mut recent_scores: Vec<ScorePoint> = c.recent_scores.newest_first().cloned().collect();
        recent_scores.sort_by_key(|x| std::cmp::Reverse(x.event_time));
        let mut interventions: Vec<Intervention> = c.interventions.newest_first().cloned().collect();
        interventions.sort_by_key(|x| std::cmp::Reverse(x.event_time));
        let quality = match self.watermark {
            Some(w) => c.history.evaluate(w, self.config.quality_horizon),
            None => QualityCounts::default(),
        };
        Some(CustomerView {
            customer_id: id.to_owned(),
            latest: c.latest.clone(),
            recent_scores,
            interventions,
            outcome: c.outcome.clone(),
            quality,
        })
    }

    /// The latest `limit` interventions of the feed, newest (by event time) first.
    pub fn interventions(&self, limit: usize) -> Vec<Intervention> {
        let mut all: Vec<&Intervention> = self.interventions.newest_first().collect();
        // Stable: equal event times keep the newest-received first.
        all.sort_by_key(|x| std::cmp::Reverse(x.event_time));
        all.into_iter().take(limit).cloned().collect()
    }

    /// How many interventions the feed holds at most.
    pub fn interventions_capacity(&self) -> usize {
        self.interventions.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;
    use crate::state::testing::{day, intervention, outcome, score};
    use crate::state::StateConfig;
    use eventpipe_common::events::Outcome;

    #[test]
    fn overview_and_drill_down_show_what_was_applied() {
        let mut s = DashboardState::new(StateConfig { top_n: 2, ..Default::default() });
        s.apply(Record::RiskScore(score("C1", 0, 0.3)), day(0));
        s.apply(Record::RiskScore(score("C1", 1, 0.7)), day(0));
        s.apply(Record::RiskScore(score("C2", 0, 0.01)), day(0));
        s.apply(Record::RiskScore(score("C3", 0, 0.5)), day(0));
        s.apply(Record::Intervention(intervention("C1", 1, "agent_call")), day(0));
        s.apply(Record::Outcome(outcome("C1", 5, Outcome::Defaulted)), day(0));
        s.record_malformed();

        let v = s.stats(day(0));
        assert_eq!(v.bands, BandCounts { low: 1, medium: 0, high: 0, critical: 2 });
        assert_eq!(v.top_risk.iter().map(|t| t.customer_id.as_str()).collect::<Vec<_>>(), ["C1", "C3"]);
        assert_eq!(v.top_risk[0].top_factor.as_deref(), Some("missed_repayments_90d"));
        assert_eq!((v.totals.risk_scores, v.totals.interventions, v.totals.malformed), (4, 1, 1));
        assert_eq!((v.quality.precision, v.quality.recall), (Some(1.0), Some(1.0)));
        assert_eq!(v.watermark, Some(day(5)));

        let c = s.customer("C1").unwrap();
        assert_eq!(c.latest.unwrap().score, 0.7);
        assert_eq!(c.recent_scores.iter().map(|p| p.score).collect::<Vec<_>>(), [0.7, 0.3]);
        assert_eq!(c.interventions[0].action, "agent_call");
        assert_eq!(c.outcome.unwrap().outcome, Outcome::Defaulted);
        assert!(s.customer("nobody").is_none());

        let json = serde_json::to_value(s.stats(day(0))).unwrap();
        assert_eq!(json["quality"]["true_positives"], 1, "counts are flattened into quality: {json}");
        assert_eq!(json["bands"]["critical"], 2);
    }
}
