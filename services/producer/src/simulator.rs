//! The population of customers, simulated one UTC day at a time into events.
//!
//! Deterministic: the same seed, customer count and start day give the same events,
//! ids included, whatever the pacing (backfill or live) — event ids come from each
//! customer's own random stream.

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeDelta, Utc};
use uuid::{Builder, Uuid};

use eventpipe_common::events::{CustomerOutcome, TransactionEvent, SCHEMA_VERSION};
use eventpipe_common::topics::Topic;

use crate::customer::{Customer, OutcomeChange, Posting, Trajectory};

/// The currency of every simulated account.
pub const CURRENCY: &str = "GBP";

/// Parameters of a simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Number of customers.
    pub customers: u32,
    /// Random seed.
    pub seed: u64,
    /// The first simulated UTC day.
    pub start: NaiveDate,
}

/// An event the simulator emits.
#[derive(Debug, Clone, PartialEq)]
pub enum SimEvent {
    Transaction(TransactionEvent),
    Outcome(CustomerOutcome),
}

impl SimEvent {
    /// The customer (the Kafka key).
    pub fn customer_id(&self) -> &str {
        match self {
            SimEvent::Transaction(e) => &e.customer_id,
            SimEvent::Outcome(e) => &e.customer_id,
        }
    }

    /// The event time.
    pub fn event_time(&self) -> DateTime<Utc> {
        match self {
            SimEvent::Transaction(e) => e.event_time,
            SimEvent::Outcome(e) => e.event_time,
        }
    }

    /// The topic it belongs to.
    pub fn topic(&self) -> Topic {
        match self {
            SimEvent::Transaction(_) => Topic::Transactions,
            SimEvent::Outcome(_) => Topic::CustomerOutcomes,
        }
    }

    /// Appends the JSON encoding to `buf`.
    pub fn write_json(&self, buf: &mut Vec<u8>) {
        let result = match self {
            SimEvent::Transaction(e) => serde_json::to_writer(&mut *buf, e),
            SimEvent::Outcome(e) => serde_json::to_writer(&mut *buf, e),
        };
        result.expect("events serialize to JSON");
    }
}

/// The customers and the simulated calendar.
pub struct Simulator {
    config: SimConfig,
    customers: Vec<Customer>,
    day: u32,
    postings: Vec<Posting>,
    outcomes: Vec<OutcomeChange>,
}

fn uuid_from(bits: u128) -> Uuid {
    Builder::from_random_bytes(bits.to_le_bytes()).into_uuid()
}

impl Simulator {
    /// A new population, before its first day.
    pub fn new(config: SimConfig) -> Self {
        let customers = (0..config.customers).map(|i| Customer::new(config.seed, i, config.start)).collect();
        Simulator { config, customers, day: 0, postings: Vec::new(), outcomes: Vec::new() }
    }

    /// The parameters.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The customers.
    pub fn customers(&self) -> &[Customer] {
        &self.customers
    }

    /// The trajectory of each customer, by index.
    pub fn trajectories(&self) -> impl Iterator<Item = Trajectory> + '_ {
        self.customers.iter().map(|c| c.trajectory)
    }

    /// The day the next call to [`Simulator::next_day`] simulates.
    pub fn next_date(&self) -> NaiveDate {
        self.config.start + Days::new(u64::from(self.day))
    }

    /// Simulates the next `days` days and returns their events, day after day.
    pub fn run(&mut self, days: u32) -> Vec<SimEvent> {
        let mut events = Vec::new();
        for _ in 0..days {
            self.next_day(&mut events);
        }
        events
    }

    /// Simulates the next `days` days and returns their transactions only (the
    /// ground-truth outcomes left out), day after day.
    pub fn run_transactions(&mut self, days: u32) -> Vec<TransactionEvent> {
        self.run(days)
            .into_iter()
            .filter_map(|e| match e {
                SimEvent::Transaction(t) => Some(t),
                SimEvent::Outcome(_) => None,
            })
            .collect()
    }

    /// Simulates the next day for every customer and appends its events to `out`:
    /// customer by customer, each customer's events in time order.
    pub fn next_day(&mut self, out: &mut Vec<SimEvent>) {
        let date = self.next_date();
        let midnight = date.and_time(NaiveTime::MIN).and_utc();
        for customer in &mut self.customers {
            self.postings.clear();
            self.outcomes.clear();
            customer.simulate_day(self.day, date, &mut self.postings, &mut self.outcomes);
            let mut outcomes = self.outcomes.drain(..).peekable();
            for p in self.postings.drain(..) {
                // Outcomes interleave with postings by time (a cure follows its repayment).
                while let Some(o) = outcomes.next_if(|o| o.second < p.second) {
                    out.push(outcome_event(customer, midnight, o));
                }
                out.push(SimEvent::Transaction(TransactionEvent {
                    event_id: uuid_from(p.id_bits),
                    event_time: midnight + TimeDelta::seconds(i64::from(p.second)),
                    schema_version: SCHEMA_VERSION,
                    customer_id: customer.customer_id.clone(),
                    account_id: customer.account_id.clone(),
                    kind: p.kind,
                    amount_minor: p.amount_minor,
                    currency: CURRENCY.to_owned(),
                    balance_after_minor: p.balance_after_minor,
                    merchant_category: p.merchant_category,
                    channel: p.channel,
                }));
            }
            for o in outcomes {
                out.push(outcome_event(customer, midnight, o));
            }
        }
        self.day += 1;
    }
}

fn outcome_event(customer: &Customer, midnight: DateTime<Utc>, o: OutcomeChange) -> SimEvent {
    SimEvent::Outcome(CustomerOutcome {
        event_id: uuid_from(o.id_bits),
        event_time: midnight + TimeDelta::seconds(i64::from(o.second)),
        schema_version: SCHEMA_VERSION,
        customer_id: customer.customer_id.clone(),
        outcome: o.outcome,
        days_in_arrears: o.days_in_arrears,
        arrears_minor: o.arrears_minor,
    })
}
