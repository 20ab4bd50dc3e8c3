//! Everything the dashboard shows, as plain data: no I/O, no clocks (callers pass
//! `now`), so it is tested directly.
//!
//! [`DashboardState`] is fed [`Record`]s by the Kafka loop and read by the HTTP
//! handlers through the views in [`view`]. Every collection in it is bounded: the
//! customers ([`customers`]), the rings ([`ring`]), the 15-minute rate window
//! ([`rates`]); model quality is computed by [`quality`].

pub mod customers;
pub mod quality;
pub mod rates;
pub mod ring;
#[cfg(test)]
pub(crate) mod testing;
pub mod view;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use eventpipe_common::events::Intervention;

use crate::record::Record;
use customers::{Applied, Customer, CustomerBook};
use quality::QualityCounts;
use rates::StageRates;
use ring::Ring;

/// Sizes and horizons of the state (from the stage settings).
#[derive(Debug, Clone, PartialEq)]
pub struct StateConfig {
    /// Rows of the top-risk table.
    pub top_n: usize,
    /// Interventions kept for the feed.
    pub recent_interventions: usize,
    /// Customers tracked at most.
    pub max_customers: usize,
    /// Recent scores kept per customer.
    pub scores_per_customer: usize,
    /// Interventions kept per customer.
    pub interventions_per_customer: usize,
    /// A flag is judged against defaults up to this long after its last score.
    pub quality_horizon: TimeDelta,
    /// Length of the rate and lag window, in seconds.
    pub rate_window_secs: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            top_n: 20,
            recent_interventions: 500,
            max_customers: 100_000,
            scores_per_customer: 10,
            interventions_per_customer: 5,
            quality_horizon: TimeDelta::days(30),
            rate_window_secs: 15 * 60,
        }
    }
}

/// Records seen since start, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// New RiskScores applied.
    pub risk_scores: u64,
    /// New Interventions applied.
    pub interventions: u64,
    /// New CustomerOutcomes applied.
    pub customer_outcomes: u64,
    /// StageStats records inside the rate window.
    pub stage_stats: u64,
    /// Records with an event id already held (skipped).
    pub duplicates: u64,
    /// Records that could not be used (skipped; see `eventpipe_dashboard_malformed_records`).
    pub malformed: u64,
}

/// The dashboard's whole in-memory state.
#[derive(Debug, Clone)]
pub struct DashboardState {
    config: StateConfig,
    customers: CustomerBook,
    interventions: Ring<Intervention>,
    rates: StageRates,
    /// Decided quality counts of customers evicted from the book.
    retired: QualityCounts,
    /// Latest event time seen on risk-scores and customer-outcomes.
    watermark: Option<DateTime<Utc>>,
    totals: Totals,
    caught_up: bool,
}

impl DashboardState {
    /// An empty state.
    pub fn new(config: StateConfig) -> Self {
        DashboardState {
            customers: CustomerBook::new(
                config.max_customers,
                config.scores_per_customer,
                config.interventions_per_customer,
            ),
            interventions: Ring::new(config.recent_interventions),
            rates: StageRates::new(config.rate_window_secs),
            retired: QualityCounts::default(),
            watermark: None,
            totals: Totals::default(),
            caught_up: false,
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &StateConfig {
        &self.config
    }

    /// Applies one record; `now` is the wall clock (for the rate window).
    pub fn apply(&mut self, record: Record, now: DateTime<Utc>) -> Applied {
        let (applied, evicted) = match record {
            Record::RiskScore(score) => {
                self.advance_watermark(score.event_time);
                let (applied, evicted) = self.customers.apply_score(score);
                self.count(applied, |t| &mut t.risk_scores);
                (applied, evicted)
            }
            Record::Intervention(intervention) => {
                let (applied, evicted) = self.customers.apply_intervention(&intervention);
                if applied == Applied::New {
                    self.interventions.push(intervention);
                }
                self.count(applied, |t| &mut t.interventions);
                (applied, evicted)
            }
            Record::Outcome(outcome) => {
                self.advance_watermark(outcome.event_time);
                let (applied, evicted) = self.customers.apply_outcome(outcome);
                self.count(applied, |t| &mut t.customer_outcomes);
                (applied, evicted)
            }
            Record::StageStats(stats) => {
                if self.rates.record(&stats, now) {
                    self.totals.stage_stats += 1;
                }
                (Applied::New, None)
            }
        };
        if let Some(customer) = evicted {
            self.retire(customer);
        }
        applied
    }

    fn count(&mut self, applied: Applied, field: impl FnOnce(&mut Totals) -> &mut u64) {
        match applied {
            Applied::New => *field(&mut self.totals) += 1,
            Applied::Duplicate => self.totals.duplicates += 1,
        }
    }

    fn advance_watermark(&mut self, t: DateTime<Utc>) {
        self.watermark = Some(self.watermark.map_or(t, |w| w.max(t)));
    }

    /// Keeps an evicted customer's decided flags and defaults in the totals. Its
    /// pending flags are dropped: nobody is left to decide them.
    fn retire(&mut self, customer: Customer) {
        if let Some(watermark) = self.watermark {
            let c = customer.history.evaluate(watermark, self.config.quality_horizon);
            self.retired += QualityCounts { pending: 0, ..c };
        }
    }

    /// Counts a record that could not be used.
    pub fn record_malformed(&mut self) {
        self.totals.malformed += 1;
    }

    /// Marks the catch-up as done (or not).
    pub fn set_caught_up(&mut self, caught_up: bool) {
        self.caught_up = caught_up;
    }

    /// Whether the catch-up is done.
    pub fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// Drops rate buckets older than the window.
    pub fn evict(&mut self, now: DateTime<Utc>) {
        self.rates.evict(now);
    }

    /// Records seen so far.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Number of customers tracked.
    pub fn customers_tracked(&self) -> usize {
        self.customers.len()
    }

    /// Model quality over every tracked customer plus the evicted ones' decided counts.
    pub fn quality(&self) -> QualityCounts {
        let mut total = self.retired;
        if let Some(watermark) = self.watermark {
            for h in self.customers.histories().filter(|h| !h.is_empty()) {
                total += h.evaluate(watermark, self.config.quality_horizon);
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testing::{day, intervention, outcome, score};
    use eventpipe_common::events::Outcome;

    fn state(config: StateConfig) -> DashboardState {
        DashboardState::new(config)
    }

    #[test]
    fn quality_sums_customers_and_survives_eviction() {
        let config = StateConfig { max_customers: 2, ..Default::default() };
        let mut s = state(config);
        let now = day(0);
        // C1: flagged day 0, defaults day 10 (true positive, caught).
        s.apply(Record::RiskScore(score("C1", 0, 0.6)), now);
        s.apply(Record::Outcome(outcome("C1", 10, Outcome::Defaulted)), now);
        // C2: flagged day 1, nothing after: false positive once the watermark passes day 31.
        s.apply(Record::RiskScore(score("C2", 1, 0.3)), now);
        s.apply(Record::RiskScore(score("C2", 40, 0.01)), now);
        let q = s.quality();
        assert_eq!((q.true_positives, q.false_positives, q.pending, q.defaults, q.caught_defaults), (1, 1, 0, 1, 1));
        // C3 evicts C1 (least recently updated); C1's decided counts stay.
        s.apply(Record::RiskScore(score("C3", 41, 0.9)), now);
        assert_eq!(s.customers_tracked(), 2);
        let q = s.quality();
        assert_eq!((q.true_positives, q.false_positives, q.pending, q.defaults, q.caught_defaults), (1, 1, 1, 1, 1));
        assert_eq!(q.precision(), Some(0.5));
        assert_eq!(q.recall(), Some(1.0));
    }

    #[test]
    fn intervention_feed_is_bounded_and_deduplicated() {
        let config = StateConfig { recent_interventions: 3, ..Default::default() };
        let mut s = state(config);
        for d in 0..10 {
            s.apply(Record::Intervention(intervention("C1", d, "sms_nudge")), day(0));
        }
        s.apply(Record::Intervention(intervention("C1", 9, "sms_nudge")), day(0));
        assert_eq!(s.totals().interventions, 10);
        assert_eq!(s.totals().duplicates, 1);
        let feed = s.interventions(100);
        assert_eq!(feed.len(), 3);
        assert_eq!(feed.iter().map(|i| i.event_time).collect::<Vec<_>>(), [day(9), day(8), day(7)]);
        assert_eq!(s.interventions(2).len(), 2);
    }
}
