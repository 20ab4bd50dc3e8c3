//! The customers the dashboard knows about, with what the drill-down shows (latest
//! score, recent scores, interventions, outcome) and the indexes behind the overview
//! (band distribution of latest scores, ranking by latest score).
//!
//! Bounded: at most `capacity` customers; adding one more forgets the customer updated
//! least recently, and hands it back so its decided quality counts can be kept.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use eventpipe_common::events::{CustomerOutcome, Intervention, RiskBand, RiskScore};

use super::quality::CustomerHistory;
use super::ring::Ring;

/// One of a customer's recent scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScorePoint {
    /// The RiskScore's id.
    pub event_id: Uuid,
    /// Its event time.
    pub event_time: DateTime<Utc>,
    /// Probability of default.
    pub score: f64,
    /// Band.
    pub band: RiskBand,
    /// Model that scored.
    pub model_version: String,
}

/// What the dashboard keeps about one customer.
#[derive(Debug, Clone)]
pub struct Customer {
    /// The score with the latest event time.
    pub latest: Option<RiskScore>,
    /// The last scores received.
    pub recent_scores: Ring<ScorePoint>,
    /// The last interventions received.
    pub interventions: Ring<Intervention>,
    /// The outcome with the latest event time.
    pub outcome: Option<CustomerOutcome>,
    /// Flagging scores and outcomes, for model quality.
    pub history: CustomerHistory,
    touched: u64,
}

/// Whether a record was new or already known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The record changed the state.
    New,
    /// Same event id as one already held; ignored.
    Duplicate,
}

/// Every tracked customer, bounded, with the overview's indexes kept in step.
#[derive(Debug, Clone)]
pub struct CustomerBook {
    customers: HashMap<String, Customer>,
    /// Update counter → customer, oldest first (least recently updated is evicted).
    recency: BTreeMap<u64, String>,
    clock: u64,
    capacity: usize,
    scores_per_customer: usize,
    interventions_per_customer: usize,
    /// Customers per band of their latest score, indexed by [`band_index`].
    bands: [u64; 4],
    /// (latest score as ordered bits, customer id), for the top-N.
    ranking: BTreeSet<(u64, String)>,
}

/// Position of `band` in [`RiskBand`] order (low = 0 … critical = 3).
pub fn band_index(band: RiskBand) -> usize {
    match band {
        RiskBand::Low => 0,
        RiskBand::Medium => 1,
        RiskBand::High => 2,
        RiskBand::Critical => 3,
    }
}

/// Scores are checked to be finite and in 0..=1 before they get here, and the bits of
/// non-negative floats order like the floats.
fn rank_key(score: &RiskScore) -> (u64, String) {
    (score.score.to_bits(), score.customer_id.clone())
}

impl CustomerBook {
    /// An empty book of at most `capacity` customers.
    pub fn new(capacity: usize, scores_per_customer: usize, interventions_per_customer: usize) -> Self {
        CustomerBook {
            customers: HashMap::new(),
            recency: BTreeMap::new(),
            clock: 0,
            capacity: capacity.max(1),
            scores_per_customer,
            interventions_per_customer,
            bands: [0; 4],
            ranking: BTreeSet::new(),
        }
    }

    /// Number of customers tracked.
    pub fn len(&self) -> usize {
        self.customers.len()
    }

    /// Whether no customer is tracked.
    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
    }

    /// A customer, if tracked.
    pub fn get(&self, id: &str) -> Option<&Customer> {
        self.customers.get(id)
    }

    /// Customers per band of their latest score: [low, medium, high, critical].
    pub fn bands(&self) -> [u64; 4] {
        self.bands
    }

    /// The `n` customers with the highest latest score, highest first (ties: larger id first).
    pub fn top(&self, n: usize) -> impl Iterator<Item = &RiskScore> {
        self.ranking.iter().rev().take(n).filter_map(|(_, id)| self.customers.get(id)?.latest.as_ref())
    }

    /// Every customer's quality history.
    pub fn histories(&self) -> impl Iterator<Item = &CustomerHistory> {
        self.customers.values().map(|c| &c.history)
    }

    /// Marks `id` as just updated, creating it (and evicting the least recently updated
    /// customer when full). Returns the evicted customer.
    fn touch(&mut self, id: &str) -> Option<Customer> {
        self.clock += 1;
        if let Some(c) = self.customers.get_mut(id) {
            self.recency.remove(&c.touched);
            c.touched = self.clock;
            self.recency.insert(self.clock, id.to_owned());
            return None;
        }
        let evicted = if self.customers.len() >= self.capacity { self.evict_oldest() } else { None };
        let customer = Customer {
            latest: None,
            recent_scores: Ring::new(self.scores_per_customer),
            interventions: Ring::new(self.interventions_per_customer),
            outcome: None,
            history: CustomerHistory::default(),
            touched: self.clock,
        };
        self.customers.insert(id.to_owned(), customer);
        self.recency.insert(self.clock, id.to_owned());
        evicted
    }

    fn evict_oldest(&mut self) -> Option<Customer> {
        let (_, id) = self.recency.pop_first()?;
        let customer = self.customers.remove(&id)?;
        if let Some(latest) = &customer.latest {
            self.bands[band_index(latest.band)] -= 1;
            self.ranking.remove(&rank_key(latest));
        }
        Some(customer)
    }

    /// Adds a score; returns whether it was new and the customer evicted to make room.
    pub fn apply_score(&mut self, score: RiskScore) -> (Applied, Option<Customer>) {
        let evicted = self.touch(&score.customer_id);
        let CustomerBook { customers, bands, ranking, .. } = self;
        let c = customers.get_mut(&score.customer_id).expect("touched customer exists");
        if c.recent_scores.any(|p| p.event_id == score.event_id) {
            return (Applied::Duplicate, evicted);
        }
        if score.band >= RiskBand::High {
            c.history.record_flagging_score(score.event_time);
        }
        c.recent_scores.push(ScorePoint {
            event_id: score.event_id,
            event_time: score.event_time,
            score: score.score,
            band: score.band,
            model_version: score.model_version.clone(),
        });
        // A score older than the latest (read late from another partition or replayed)
        // joins the history but does not replace the latest.
        if c.latest.as_ref().is_none_or(|l| score.event_time >= l.event_time) {
            if let Some(old) = c.latest.take() {
                bands[band_index(old.band)] -= 1;
                ranking.remove(&rank_key(&old));
            }
            bands[band_index(score.band)] += 1;
            ranking.insert(rank_key(&score));
            c.latest = Some(score);
        }
        (Applied::New, evicted)
    }

    /// Adds an intervention to its customer; returns whether it was new and the evicted customer.
    pub fn apply_intervention(&mut self, intervention: &Intervention) -> (Applied, Option<Customer>) {
        let evicted = self.touch(&intervention.customer_id);
        let c = self.customers.get_mut(&intervention.customer_id).expect("touched customer exists");
        if c.interventions.any(|i| i.event_id == intervention.event_id) {
            return (Applied::Duplicate, evicted);
        }
        c.interventions.push(intervention.clone());
        (Applied::New, evicted)
    }

    /// Adds an outcome; returns whether it was new and the evicted customer.
    pub fn apply_outcome(&mut self, outcome: CustomerOutcome) -> (Applied, Option<Customer>) {
        let evicted = self.touch(&outcome.customer_id);
        let c = self.customers.get_mut(&outcome.customer_id).expect("touched customer exists");
        if c.outcome.as_ref().is_some_and(|o| o.event_id == outcome.event_id) {
            return (Applied::Duplicate, evicted);
        }
        c.history.record_outcome(outcome.event_time, outcome.outcome);
        if c.outcome.as_ref().is_none_or(|o| outcome.event_time >= o.event_time) {
            c.outcome = Some(outcome);
        }
        (Applied::New, evicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testing::{intervention, score};

    #[test]
    fn band_counts_follow_each_customers_latest_score() {
        let mut book = CustomerBook::new(100, 5, 5);
        book.apply_score(score("C1", 0, 0.02));
        book.apply_score(score("C2", 0, 0.3));
        assert_eq!(book.bands(), [1, 0, 1, 0]);
        book.apply_score(score("C1", 1, 0.7));
        assert_eq!(book.bands(), [0, 0, 1, 1]);
        // An older score read late changes nothing in the overview.
        book.apply_score(score("C1", -5, 0.1));
        assert_eq!(book.bands(), [0, 0, 1, 1]);
        assert_eq!(book.get("C1").unwrap().latest.as_ref().unwrap().score, 0.7);
        assert_eq!(book.get("C1").unwrap().recent_scores.len(), 3);
    }

    #[test]
    fn top_n_is_ordered_by_latest_score() {
        let mut book = CustomerBook::new(100, 5, 5);
        for (id, s) in [("A", 0.4), ("B", 0.9), ("C", 0.1), ("D", 0.65), ("E", 0.9)] {
            book.apply_score(score(id, 0, s));
        }
        book.apply_score(score("C", 1, 0.95));
        let top: Vec<&str> = book.top(3).map(|s| s.customer_id.as_str()).collect();
        assert_eq!(top, ["C", "E", "B"]);
        assert_eq!(book.top(100).count(), 5);
    }

    #[test]
    fn duplicates_are_ignored() {
        let mut book = CustomerBook::new(100, 5, 5);
        let s = score("C1", 0, 0.5);
        assert_eq!(book.apply_score(s.clone()).0, Applied::New);
        assert_eq!(book.apply_score(s).0, Applied::Duplicate);
        let i = intervention("C1", 0, "sms_nudge");
        assert_eq!(book.apply_intervention(&i).0, Applied::New);
        assert_eq!(book.apply_intervention(&i).0, Applied::Duplicate);
        assert_eq!(book.get("C1").unwrap().recent_scores.len(), 1);
        assert_eq!(book.bands(), [0, 0, 0, 1]);
    }

    #[test]
    fn the_least_recently_updated_customer_is_evicted_and_indexes_follow() {
        let mut book = CustomerBook::new(3, 2, 2);
        book.apply_score(score("A", 0, 0.9));
        book.apply_score(score("B", 0, 0.5));
        book.apply_score(score("C", 0, 0.1));
        book.apply_score(score("A", 1, 0.8)); // A is now the most recent
        let (_, evicted) = book.apply_score(score("D", 0, 0.3));
        assert_eq!(evicted.unwrap().latest.unwrap().customer_id, "B");
        assert_eq!(book.len(), 3);
        assert!(book.get("B").is_none());
        assert_eq!(book.bands(), [0, 1, 1, 1], "C medium, D high, A critical");
        let top: Vec<&str> = book.top(10).map(|s| s.customer_id.as_str()).collect();
        assert_eq!(top, ["A", "D", "C"]);
        for i in 0..10 {
            book.apply_score(score("A", 10 + i, 0.5));
            book.apply_intervention(&intervention("A", 10 + i, "sms_nudge"));
        }
        let a = book.get("A").unwrap();
        assert_eq!((a.recent_scores.len(), a.interventions.len()), (2, 2), "per-customer rings are bounded");
    }
}
