//! Live model quality: how well the high and critical bands predict defaults, judged
//! against the simulator's ground truth (`customer-outcomes`) as it arrives.
//!
//! # Definitions (all times are event times)
//!
//! Let `H` be the quality horizon (`quality_horizon_days`, 30 days by default).
//!
//! - A **flagging score** is a RiskScore in band `high` or `critical`, unless the
//!   customer is *in default* at its event time: their latest outcome strictly before
//!   it is `defaulted` (a customer already in arrears cannot be warned about it). A
//!   `cured` outcome ends the default.
//! - A customer's flagging scores form **flags** (alarm episodes): a flagging score
//!   joins the customer's current flag when it comes at most `H` after the flag's last
//!   score and no `defaulted` outcome lies between the two; otherwise it starts a new
//!   flag. A flag therefore covers `[first, last + H]`, which is exactly the union of
//!   `[t, t + H]` over its scores.
//! - A flag is a **true positive** when a `defaulted` outcome for the customer has an
//!   event time in `[first, last + H]`; a **false positive** when it has none and the
//!   watermark (the latest event time seen on risk-scores and customer-outcomes) has
//!   passed `last + H`; otherwise it is **pending**: not yet `H` old, it can still come
//!   true, so it counts in neither precision term.
//! - A `defaulted` outcome at `d` is **caught** when some flag covers `d`, i.e. the
//!   customer had a flagging score in `[d - H, d]`; otherwise it is **missed**.
//!
//! **precision** = true positives / (true positives + false positives), **recall** =
//! caught defaults / all defaults seen. Each is `None` while its denominator is zero.
//!
//! Outcomes and scores come from different topics and may be read in either order;
//! [`CustomerHistory::evaluate`] recomputes a customer's counts from the times it holds,
//! so the result does not depend on arrival order. Memory is bounded: a customer keeps
//! its latest [`MAX_FLAG_TIMES`] flagging-score times and [`MAX_OUTCOMES`] outcomes;
//! older ones are forgotten (their flags can then no longer change).

use std::ops::AddAssign;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use eventpipe_common::events::Outcome;

/// Flagging-score times kept per customer.
pub const MAX_FLAG_TIMES: usize = 32;

/// Outcomes kept per customer.
pub const MAX_OUTCOMES: usize = 16;

/// What the quality measure needs to know about one customer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomerHistory {
    /// Event times of high/critical scores, ascending, without repeats.
    flag_times: Vec<DateTime<Utc>>,
    /// Outcomes by event time, ascending.
    outcomes: Vec<(DateTime<Utc>, Outcome)>,
}

/// Counts behind precision and recall (see the module docs for the definitions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QualityCounts {
    /// Flags followed by a default within the horizon.
    pub true_positives: u64,
    /// Flags whose horizon passed without a default.
    pub false_positives: u64,
    /// Flags still inside their horizon with no default yet.
    pub pending: u64,
    /// `defaulted` outcomes seen.
    pub defaults: u64,
    /// Defaults preceded by a flagging score within the horizon.
    pub caught_defaults: u64,
}

impl QualityCounts {
    /// true positives / (true positives + false positives); `None` before any flag is decided.
    pub fn precision(&self) -> Option<f64> {
        let decided = self.true_positives + self.false_positives;
        (decided > 0).then(|| self.true_positives as f64 / decided as f64)
    }

    /// caught defaults / defaults; `None` before any default.
    pub fn recall(&self) -> Option<f64> {
        (self.defaults > 0).then(|| self.caught_defaults as f64 / self.defaults as f64)
    }
}

impl AddAssign for QualityCounts {
    fn add_assign(&mut self, o: Self) {
        self.true_positives += o.true_positives;
        self.false_positives += o.false_positives;
        self.pending += o.pending;
        self.defaults += o.defaults;
        self.caught_defaults += o.caught_defaults;
    }
}

/// One alarm episode: the first and last flagging score times.
#[derive(Debug, Clone, Copy)]
struct Flag {
    first: DateTime<Utc>,
    last: DateTime<Utc>,
}

impl CustomerHistory {
    /// Whether nothing is recorded (the customer cannot affect quality).
    pub fn is_empty(&self) -> bool {
        self.flag_times.is_empty() && self.outcomes.is_empty()
    }

    /// Records a high or critical score at `time`.
    pub fn record_flagging_score(&mut self, time: DateTime<Utc>) {
        if let Err(at) = self.flag_times.binary_search(&time) {
            self.flag_times.insert(at, time);
            if self.flag_times.len() > MAX_FLAG_TIMES {
                self.flag_times.remove(0);
            }
        }
    }

    /// Records an outcome at `time`.
    pub fn record_outcome(&mut self, time: DateTime<Utc>, outcome: Outcome) {
        if self.outcomes.contains(&(time, outcome)) {
            return;
        }
        let at = self.outcomes.partition_point(|(t, _)| *t <= time);
        self.outcomes.insert(at, (time, outcome));
        if self.outcomes.len() > MAX_OUTCOMES {
            self.outcomes.remove(0);
        }
    }

    /// Whether the customer is in default just before `time`.
    fn in_default(&self, time: DateTime<Utc>) -> bool {
        self.outcomes.iter().take_while(|(t, _)| *t < time).last().is_some_and(|(_, o)| *o == Outcome::Defaulted)
    }

    fn defaults(&self) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        self.outcomes.iter().filter(|(_, o)| *o == Outcome::Defaulted).map(|(t, _)| *t)
    }

    /// The customer's flags, oldest first.
    fn flags(&self, horizon: TimeDelta) -> Vec<Flag> {
        let mut flags: Vec<Flag> = Vec::new();
        for &t in &self.flag_times {
            if self.in_default(t) {
                continue;
            }
            match flags.last_mut() {
                Some(f) if t - f.last <= horizon && !self.defaults().any(|d| f.last < d && d < t) => f.last = t,
                _ => flags.push(Flag { first: t, last: t }),
            }
        }
        flags
    }

    /// This customer's counts, given the current `watermark` and `horizon`.
    pub fn evaluate(&self, watermark: DateTime<Utc>, horizon: TimeDelta) -> QualityCounts {
        let flags = self.flags(horizon);
        let covers = |f: &Flag, d: DateTime<Utc>| f.first <= d && d <= f.last + horizon;
        let mut counts = QualityCounts::default();
        for f in &flags {
            if self.defaults().any(|d| covers(f, d)) {
                counts.true_positives += 1;
            } else if watermark > f.last + horizon {
                counts.false_positives += 1;
            } else {
                counts.pending += 1;
            }
        }
        for d in self.defaults() {
            counts.defaults += 1;
            if flags.iter().any(|f| covers(f, d)) {
                counts.caught_defaults += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const D: Outcome = Outcome::Defaulted;
    const C: Outcome = Outcome::Cured;

    fn day(d: i64) -> DateTime<Utc> {
        "2026-03-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::days(d)
    }

    fn counts(tp: u64, fp: u64, pending: u64, defaults: u64, caught: u64) -> QualityCounts {
        QualityCounts { true_positives: tp, false_positives: fp, pending, defaults, caught_defaults: caught }
    }

    /// Flagging-score days, outcomes (day, outcome), watermark day → counts.
    #[rstest]
    #[case::flag_then_default_inside_horizon(&[0], &[(10, D)], 10, counts(1, 0, 0, 1, 1))]
    #[case::flag_young_is_pending(&[0], &[], 20, counts(0, 0, 1, 0, 0))]
    #[case::flag_exactly_horizon_old_still_pending(&[0], &[], 30, counts(0, 0, 1, 0, 0))]
    #[case::flag_past_horizon_is_false(&[0], &[], 31, counts(0, 1, 0, 0, 0))]
    #[case::default_on_the_last_day_counts(&[0], &[(30, D)], 30, counts(1, 0, 0, 1, 1))]
    #[case::default_after_horizon_is_missed(&[0], &[(31, D)], 31, counts(0, 1, 0, 1, 0))]
    #[case::repeated_flags_extend_one_flag(&[0, 20, 25], &[(50, D)], 50, counts(1, 0, 0, 1, 1))]
    #[case::gap_over_horizon_starts_a_new_flag(&[0, 40], &[(45, D)], 45, counts(1, 1, 0, 1, 1))]
    #[case::default_without_flag_is_missed(&[], &[(5, D)], 5, counts(0, 0, 0, 1, 0))]
    #[case::flag_at_the_default_instant_counts(&[5], &[(5, D)], 5, counts(1, 0, 0, 1, 1))]
    #[case::flags_while_in_default_are_ignored(&[6, 7], &[(5, D)], 60, counts(0, 0, 0, 1, 0))]
    #[case::flags_after_cure_start_a_new_flag(&[0, 6, 12], &[(5, D), (10, C)], 20, counts(1, 0, 1, 1, 1))]
    #[case::one_flag_can_catch_two_defaults(&[0], &[(5, D), (10, C), (20, D)], 20, counts(1, 0, 0, 2, 2))]
    #[case::flag_before_the_horizon_of_a_default_does_not_catch_it(
        &[0, 50],
        &[(40, D), (45, C), (90, D)],
        90,
        counts(0, 2, 0, 2, 0)
    )]
    fn counts_follow_the_definitions(
        #[case] flag_days: &[i64],
        #[case] outcomes: &[(i64, Outcome)],
        #[case] watermark: i64,
        #[case] expected: QualityCounts,
    ) {
        let mut h = CustomerHistory::default();
        for &d in flag_days {
            h.record_flagging_score(day(d));
        }
        for &(d, o) in outcomes {
            h.record_outcome(day(d), o);
        }
        assert_eq!(h.evaluate(day(watermark), TimeDelta::days(30)), expected);

        // The same history recorded in reverse arrival order gives the same counts.
        let mut reversed = CustomerHistory::default();
        for &(d, o) in outcomes.iter().rev() {
            reversed.record_outcome(day(d), o);
        }
        for &d in flag_days.iter().rev() {
            reversed.record_flagging_score(day(d));
        }
        assert_eq!(reversed, h);
    }

    #[rstest]
    #[case::nothing_decided(counts(0, 0, 3, 0, 0), None, None)]
    #[case::one_of_three(counts(1, 2, 1, 4, 1), Some(1.0 / 3.0), Some(0.25))]
    #[case::perfect(counts(5, 0, 0, 5, 5), Some(1.0), Some(1.0))]
    #[case::all_wrong(counts(0, 4, 0, 2, 0), Some(0.0), Some(0.0))]
    fn precision_and_recall_from_counts(
        #[case] c: QualityCounts,
        #[case] precision: Option<f64>,
        #[case] recall: Option<f64>,
    ) {
        assert_eq!(c.precision(), precision);
        assert_eq!(c.recall(), recall);
    }

    #[test]
    fn duplicates_are_recorded_once_and_history_is_bounded() {
        let mut h = CustomerHistory::default();
        h.record_flagging_score(day(1));
        h.record_flagging_score(day(1));
        h.record_outcome(day(2), D);
        h.record_outcome(day(2), D);
        assert_eq!(h.evaluate(day(2), TimeDelta::days(30)), counts(1, 0, 0, 1, 1));
        for i in 0..1000 {
            h.record_flagging_score(day(100) + TimeDelta::minutes(i));
            h.record_outcome(day(100) + TimeDelta::minutes(i), if i % 2 == 0 { C } else { D });
        }
        assert_eq!(h.flag_times.len(), MAX_FLAG_TIMES);
        assert_eq!(h.outcomes.len(), MAX_OUTCOMES);
        assert_eq!(*h.flag_times.last().unwrap(), day(100) + TimeDelta::minutes(999));
    }
}
