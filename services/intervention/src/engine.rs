//! The decision core, with no Kafka in it: RiskScores in, Interventions and state
//! changes out.
//!
//! Scores are offered one by one and decided together when the batch ends, highest
//! score first, so within a batching window the riskiest customers get the limited
//! capacity first. For each score the matching rules are taken by priority:
//!
//! - the highest-priority matching rule decides; if it is in its cooldown for this
//!   customer, nothing is done (the customer was just handled by the most important
//!   rule that applies);
//! - if its action's daily capacity is used up, the next matching rule is tried (no
//!   agent left today → offer a payment holiday), and so on;
//! - a rule that fires starts its cooldown for the customer (event time).
//!
//! **Capacity across instances.** A daily capacity is for the whole pipeline, which runs
//! as several instances each owning some partitions. Rather than coordinate instances
//! on every decision, the capacity is divided between the input partitions
//! (`capacity / partitions`, the remainder to the lowest partitions), and each
//! partition's usage is part of its state in the changelog. The sum over partitions never
//! exceeds the capacity, whichever instance owns which partition, across rebalances and
//! restarts, with no cross-instance traffic — the way Kafka Streams keeps all state
//! task-local. The price: a partition with an unusually risky day cannot borrow another
//! partition's unused share.
//!
//! State is kept per input partition, so a revoked partition can be dropped and an
//! assigned one restored from `intervention-state` without touching the rest.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use eventpipe_common::events::{derived_event_id, Intervention, RiskBand, RiskScore, SCHEMA_VERSION};

use crate::rules::{band_name, InterventionRule};

/// Days of capacity usage kept (late scores within this many days still count).
const CAPACITY_DAYS_KEPT: i64 = 7;

/// Key prefix of a partition's capacity record in `intervention-state` (customer
/// records are keyed by customer id).
pub const CAPACITY_KEY_PREFIX: &str = "~capacity/";

/// One record of the compacted `intervention-state` topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StateRecord {
    /// A customer's running cooldowns: rule name → until (event time).
    Customer { customer_id: String, cooldowns: BTreeMap<String, DateTime<Utc>> },
    /// A partition's share of the daily capacities used: day → action → count.
    Capacity { partition: i32, used: BTreeMap<NaiveDate, BTreeMap<String, u32>> },
}

impl StateRecord {
    /// The record's Kafka key.
    pub fn key(&self) -> String {
        match self {
            StateRecord::Customer { customer_id, .. } => customer_id.clone(),
            StateRecord::Capacity { partition, .. } => format!("{CAPACITY_KEY_PREFIX}{partition}"),
        }
    }
}

/// Why a matching rule did not act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppression {
    /// The deciding rule is in its cooldown for the customer.
    Cooldown,
    /// Every matching rule's action is out of capacity for the day.
    Capacity,
}

impl Suppression {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Suppression::Cooldown => "cooldown",
            Suppression::Capacity => "capacity",
        }
    }
}

/// What happened to one score.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// No rule matched.
    NoRule,
    /// A rule acted.
    Fired(Intervention),
    /// Rules matched but none could act.
    Suppressed { rule: String, why: Suppression, detail: String },
}

/// A decided score, with what came in with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided<T> {
    pub partition: i32,
    pub score: RiskScore,
    pub decision: Decision,
    /// Whatever the caller attached to the offer (e.g. trace headers).
    pub tag: T,
}

#[derive(Debug, Default)]
struct PartitionState {
    customers: HashMap<String, BTreeMap<String, DateTime<Utc>>>,
    used: BTreeMap<NaiveDate, BTreeMap<String, u32>>,
}

/// Rules, capacities and the per-partition state they act on.
pub struct Engine<T> {
    /// By priority, highest first; ties keep the configured order.
    rules: Vec<InterventionRule>,
    capacity: BTreeMap<String, u32>,
    partitions_total: u32,
    state: HashMap<i32, PartitionState>,
    pending: Vec<(i32, RiskScore, T)>,
    dirty_customers: BTreeSet<(i32, String)>,
    dirty_capacity: BTreeSet<i32>,
}

impl<T> Engine<T> {
    /// An engine with empty state. `partitions_total` is the input topic's partition
    /// count, over which capacities are divided.
    pub fn new(rules: &[InterventionRule], capacity: BTreeMap<String, u32>, partitions_total: u32) -> Self {
        let mut rules = rules.to_vec();
        rules.sort_by_key(|r| std::cmp::Reverse(r.priority));
        Engine {
            rules,
            capacity,
            partitions_total: partitions_total.max(1),
            state: HashMap::new(),
            pending: Vec::new(),
            dirty_customers: BTreeSet::new(),
            dirty_capacity: BTreeSet::new(),
        }
    }

    /// Partition `partition`'s share of the daily capacity of `action` (`None`: unlimited).
    pub fn quota(&self, partition: i32, action: &str) -> Option<u32> {
        let total = *self.capacity.get(action)?;
        let n = self.partitions_total;
        let p = partition.max(0) as u32 % n;
        Some(total / n + u32::from(p < total % n))
    }

    /// How many `action`s partition `partition` has taken on `day`.
    pub fn used(&self, partition: i32, day: NaiveDate, action: &str) -> u32 {
        self.state.get(&partition).and_then(|s| s.used.get(&day)).and_then(|d| d.get(action)).copied().unwrap_or(0)
    }

    /// The cooldowns running for a customer of `partition`.
    pub fn cooldowns(&self, partition: i32, customer: &str) -> Option<&BTreeMap<String, DateTime<Utc>>> {
        self.state.get(&partition)?.customers.get(customer)
    }

    /// Queues a score for the end of the batch.
    pub fn offer(&mut self, partition: i32, score: RiskScore, tag: T) {
        self.pending.push((partition, score, tag));
    }

    /// Decides every queued score, highest score first (ties: earlier event, then id).
    pub fn decide(&mut self) -> Vec<Decided<T>> {
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_by(|a, b| {
            b.1.score
                .total_cmp(&a.1.score)
                .then(a.1.event_time.cmp(&b.1.event_time))
                .then(a.1.event_id.cmp(&b.1.event_id))
        });
        pending
            .into_iter()
            .map(|(partition, score, tag)| {
                let decision = self.decide_one(partition, &score);
                Decided { partition, score, decision, tag }
            })
            .collect()
    }

    fn decide_one(&mut self, partition: i32, score: &RiskScore) -> Decision {
        let matching: Vec<usize> = (0..self.rules.len()).filter(|&i| self.rules[i].when.holds(score)).collect();
        let Some(&first) = matching.first() else { return Decision::NoRule };
        let at = score.event_time;
        if let Some(until) = self.cooldown_until(partition, &score.customer_id, &self.rules[first].name) {
            if at < until {
                return Decision::Suppressed {
                    rule: self.rules[first].name.clone(),
                    why: Suppression::Cooldown,
                    detail: format!("rule {} is in cooldown for this customer until {until}", self.rules[first].name),
                };
            }
        }
        let day = at.date_naive();
        let mut out_of_capacity = Vec::new();
        for &i in &matching {
            let rule = &self.rules[i];
            if i != first && self.cooldown_until(partition, &score.customer_id, &rule.name).is_some_and(|u| at < u) {
                continue;
            }
            if self.quota(partition, &rule.action).is_some_and(|q| self.used(partition, day, &rule.action) >= q) {
                out_of_capacity.push(rule.action.clone());
                continue;
            }
            let mut reason = rule.when.explain(score);
            if !out_of_capacity.is_empty() {
                reason.push_str(&format!("; instead of {} (daily capacity used up)", out_of_capacity.join(", ")));
            }
            let intervention = Intervention {
                event_id: derived_event_id("intervention", &[score.event_id.as_bytes(), rule.name.as_bytes()]),
                event_time: at,
                schema_version: SCHEMA_VERSION,
                customer_id: score.customer_id.clone(),
                action: rule.action.clone(),
                rule: rule.name.clone(),
                reason,
                score: score.score,
                band: score.band,
                model_version: score.model_version.clone(),
                trigger_score_id: score.event_id,
            };
            let (name, action, cooldown) = (rule.name.clone(), rule.action.clone(), rule.cooldown);
            self.record_fired(partition, score, &name, &action, cooldown);
            return Decision::Fired(intervention);
        }
        Decision::Suppressed {
            rule: self.rules[first].name.clone(),
            why: Suppression::Capacity,
            detail: format!("daily capacity of {} used up for {day}", out_of_capacity.join(", ")),
        }
    }

    fn cooldown_until(&self, partition: i32, customer: &str, rule: &str) -> Option<DateTime<Utc>> {
        self.state.get(&partition)?.customers.get(customer)?.get(rule).copied()
    }

    fn record_fired(
        &mut self,
        partition: i32,
        score: &RiskScore,
        rule: &str,
        action: &str,
        cooldown: std::time::Duration,
    ) {
        let state = self.state.entry(partition).or_default();
        let at = score.event_time;
        let cooldowns = state.customers.entry(score.customer_id.clone()).or_default();
        cooldowns.retain(|_, until| *until > at);
        if !cooldown.is_zero() {
            let span = TimeDelta::from_std(cooldown).unwrap_or(TimeDelta::MAX);
            cooldowns.insert(rule.to_owned(), at.checked_add_signed(span).unwrap_or(DateTime::<Utc>::MAX_UTC));
        }
        self.dirty_customers.insert((partition, score.customer_id.clone()));
        if self.capacity.contains_key(action) {
            let day = at.date_naive();
            *state.used.entry(day).or_default().entry(action.to_owned()).or_default() += 1;
            let oldest = day - TimeDelta::days(CAPACITY_DAYS_KEPT);
            state.used.retain(|d, _| *d >= oldest);
            self.dirty_capacity.insert(partition);
        }
    }

    /// The state records changed since the last call, with their partitions.
    pub fn take_changelog(&mut self) -> Vec<(i32, StateRecord)> {
        let mut out = Vec::new();
        for (partition, customer) in std::mem::take(&mut self.dirty_customers) {
            let cooldowns = self.cooldowns(partition, &customer).cloned().unwrap_or_default();
            out.push((partition, StateRecord::Customer { customer_id: customer, cooldowns }));
        }
        for partition in std::mem::take(&mut self.dirty_capacity) {
            let used = self.state.get(&partition).map(|s| s.used.clone()).unwrap_or_default();
            out.push((partition, StateRecord::Capacity { partition, used }));
        }
        out
    }

    /// Forgets queued scores and unwritten changes (the batch was aborted; the state is
    /// about to be restored).
    pub fn discard(&mut self) {
        self.pending.clear();
        self.dirty_customers.clear();
        self.dirty_capacity.clear();
    }

    /// Loads a state record into `partition`.
    pub fn restore(&mut self, partition: i32, record: StateRecord) {
        let state = self.state.entry(partition).or_default();
        match record {
            StateRecord::Customer { customer_id, cooldowns } => {
                state.customers.insert(customer_id, cooldowns);
            }
            StateRecord::Capacity { used, .. } => state.used = used,
        }
    }

    /// Drops `partition`'s state (revoked, or about to be restored).
    pub fn drop_partition(&mut self, partition: i32) {
        self.state.remove(&partition);
        self.pending.retain(|(p, ..)| *p != partition);
        self.dirty_customers.retain(|(p, _)| *p != partition);
        self.dirty_capacity.remove(&partition);
    }

    /// Customers with state in `partition`.
    pub fn customers_in(&self, partition: i32) -> usize {
        self.state.get(&partition).map_or(0, |s| s.customers.len())
    }
}

/// A line for the logs about a critical customer.
pub fn describe_critical(score: &RiskScore, decision: &Decision) -> Option<String> {
    if score.band != RiskBand::Critical {
        return None;
    }
    Some(match decision {
        Decision::Fired(i) => format!("{} ({}): {}", i.action, i.rule, i.reason),
        Decision::Suppressed { detail, .. } => format!("no action: {detail}"),
        Decision::NoRule => format!("no rule matches band {}", band_name(score.band)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Condition;
    use eventpipe_common::events::RiskFactor;
    use std::time::Duration;

    fn rule(name: &str, when: &str, action: &str, priority: i32, cooldown_days: u64) -> InterventionRule {
        InterventionRule {
            name: name.into(),
            when: Condition::parse(when).unwrap(),
            action: action.into(),
            priority,
            cooldown: Duration::from_secs(cooldown_days * 86_400),
        }
    }

    fn score(customer: &str, value: f64, band: RiskBand, time: &str) -> RiskScore {
        RiskScore {
            event_id: derived_event_id("test", &[customer.as_bytes(), time.as_bytes(), &value.to_le_bytes()]),
            event_time: time.parse().unwrap(),
            schema_version: 1,
            customer_id: customer.into(),
            score: value,
            band,
            model_version: "m1".into(),
            top_factors: vec![RiskFactor { feature: "failed_debits_30d".into(), value: 2.0, contribution: 1.2 }],
            trigger_event_id: uuid::Uuid::nil(),
        }
    }

    fn rules() -> Vec<InterventionRule> {
        vec![
            rule("nudge", "band >= medium", "sms_nudge", 10, 7),
            rule("call", "band >= critical", "agent_call", 100, 14),
            rule("holiday", "band >= high and factor failed_debits_30d > 0", "payment_holiday_offer", 80, 30),
        ]
    }

    fn decide(engine: &mut Engine<()>, scores: &[RiskScore]) -> Vec<(String, Option<String>)> {
        for s in scores {
            engine.offer(0, s.clone(), ());
        }
        engine
            .decide()
            .into_iter()
            .map(|d| {
                let action = match d.decision {
                    Decision::Fired(i) => Some(i.action),
                    _ => None,
                };
                (d.score.customer_id, action)
            })
            .collect()
    }

    #[test]
    fn highest_priority_matching_rule_decides() {
        let mut engine = Engine::new(&rules(), BTreeMap::new(), 1);
        let got = decide(
            &mut engine,
            &[
                score("C1", 0.7, RiskBand::Critical, "2026-03-01T10:00:00Z"),
                score("C2", 0.3, RiskBand::High, "2026-03-01T10:00:00Z"),
                score("C3", 0.1, RiskBand::Medium, "2026-03-01T10:00:00Z"),
                score("C4", 0.01, RiskBand::Low, "2026-03-01T10:00:00Z"),
            ],
        );
        let expected = [
            ("C1", Some("agent_call")),
            ("C2", Some("payment_holiday_offer")),
            ("C3", Some("sms_nudge")),
            ("C4", None),
        ];
        let expected: Vec<(String, Option<String>)> =
            expected.iter().map(|(c, a)| (c.to_string(), a.map(str::to_owned))).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn cooldown_blocks_the_deciding_rule_until_it_ends() {
        let mut engine = Engine::new(&rules(), BTreeMap::new(), 1);
        let first = decide(&mut engine, &[score("C1", 0.7, RiskBand::Critical, "2026-03-01T10:00:00Z")]);
        assert_eq!(first[0].1.as_deref(), Some("agent_call"));
        // 13 days later: still inside the 14-day cooldown, and lower rules do not step in.
        engine.offer(0, score("C1", 0.8, RiskBand::Critical, "2026-03-14T10:00:00Z"), ());
        let d = engine.decide();
        assert!(
            matches!(&d[0].decision, Decision::Suppressed { why: Suppression::Cooldown, rule, .. } if rule == "call")
        );
        // 14 days later: the cooldown is over.
        let later = decide(&mut engine, &[score("C1", 0.8, RiskBand::Critical, "2026-03-15T10:00:00Z")]);
        assert_eq!(later[0].1.as_deref(), Some("agent_call"));
        let until = engine.cooldowns(0, "C1").unwrap()["call"];
        assert_eq!(until, "2026-03-29T10:00:00Z".parse::<DateTime<Utc>>().unwrap());
    }

    #[test]
    fn capacity_goes_to_the_highest_scores_then_falls_back() {
        let capacity = BTreeMap::from([("agent_call".to_owned(), 2)]);
        let mut engine = Engine::new(&rules(), capacity, 1);
        let got = decide(
            &mut engine,
            &[
                score("C1", 0.55, RiskBand::Critical, "2026-03-01T09:00:00Z"),
                score("C2", 0.90, RiskBand::Critical, "2026-03-01T10:00:00Z"),
                score("C3", 0.60, RiskBand::Critical, "2026-03-01T11:00:00Z"),
            ],
        );
        let actions: Vec<(&str, Option<&str>)> = got.iter().map(|(c, a)| (c.as_str(), a.as_deref())).collect();
        assert_eq!(
            actions,
            [("C2", Some("agent_call")), ("C3", Some("agent_call")), ("C1", Some("payment_holiday_offer"))]
        );
        assert_eq!(engine.used(0, "2026-03-01".parse().unwrap(), "agent_call"), 2);
        // A new event-time day has fresh capacity.
        let next = decide(&mut engine, &[score("C4", 0.6, RiskBand::Critical, "2026-03-02T09:00:00Z")]);
        assert_eq!(next[0].1.as_deref(), Some("agent_call"));
    }

    #[test]
    fn reason_and_ids_are_deterministic() {
        let mut a = Engine::new(&rules(), BTreeMap::new(), 1);
        let mut b = Engine::new(&rules(), BTreeMap::new(), 1);
        let s = score("C1", 0.3, RiskBand::High, "2026-03-01T10:00:00Z");
        a.offer(0, s.clone(), ());
        b.offer(0, s.clone(), ());
        let (da, db) = (a.decide(), b.decide());
        let Decision::Fired(ia) = &da[0].decision else { panic!("{:?}", da[0].decision) };
        assert_eq!(da[0].decision, db[0].decision);
        assert_eq!(ia.reason, "band high >= high and factor failed_debits_30d 2 > 0");
        assert_eq!(ia.trigger_score_id, s.event_id);
        assert_eq!(ia.event_id, derived_event_id("intervention", &[s.event_id.as_bytes(), b"holiday"]));
    }

    #[rstest::rstest]
    #[case(200, 6, [34, 34, 33, 33, 33, 33])]
    #[case(5, 6, [1, 1, 1, 1, 1, 0])]
    #[case(12, 3, [4, 4, 4, 0, 0, 0])]
    fn capacity_is_divided_between_partitions(#[case] total: u32, #[case] n: u32, #[case] expected: [u32; 6]) {
        let engine: Engine<()> = Engine::new(&rules(), BTreeMap::from([("agent_call".to_owned(), total)]), n);
        let quotas: Vec<u32> = (0..n as i32).map(|p| engine.quota(p, "agent_call").unwrap()).collect();
        assert_eq!(quotas, expected[..n as usize]);
        assert_eq!(quotas.iter().sum::<u32>(), total);
        assert_eq!(engine.quota(0, "sms_nudge"), None);
    }

    #[test]
    fn changelog_restores_the_same_decisions() {
        let capacity = BTreeMap::from([("agent_call".to_owned(), 1)]);
        let mut engine = Engine::new(&rules(), capacity.clone(), 1);
        decide(&mut engine, &[score("C1", 0.7, RiskBand::Critical, "2026-03-01T10:00:00Z")]);
        let changelog = engine.take_changelog();
        assert_eq!(changelog.len(), 2, "{changelog:?}");
        let mut restored = Engine::new(&rules(), capacity, 1);
        for (p, record) in changelog {
            let json = serde_json::to_vec(&record).unwrap();
            restored.restore(p, serde_json::from_slice(&json).unwrap());
        }
        // Same customer inside the cooldown: suppressed; another critical customer the
        // same day: the single agent call is used, so the fallback rule acts.
        let got = decide(
            &mut restored,
            &[
                score("C1", 0.9, RiskBand::Critical, "2026-03-02T10:00:00Z"),
                score("C2", 0.7, RiskBand::Critical, "2026-03-01T12:00:00Z"),
            ],
        );
        assert_eq!(got[0], ("C1".to_owned(), None));
        assert_eq!(got[1], ("C2".to_owned(), Some("payment_holiday_offer".to_owned())));
    }
}
