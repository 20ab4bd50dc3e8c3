//! Invariants of the simulated population: balances, salary cadence, the share of
//! stressed customers, ground truth, determinism.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use eventpipe_common::events::{Outcome, TransactionKind};
use producer::customer::{Trajectory, DEFAULT_AFTER_DAYS};
use producer::simulator::{SimConfig, SimEvent, Simulator};

fn config(customers: u32, seed: u64) -> SimConfig {
    SimConfig { customers, seed, start: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() }
}

fn run(config: SimConfig, days: u32) -> (Simulator, Vec<SimEvent>) {
    let mut sim = Simulator::new(config);
    let events = sim.run(days);
    (sim, events)
}

fn customer_index(id: &str) -> usize {
    id[1..].parse().unwrap()
}

#[test]
fn balance_after_is_previous_balance_plus_amount() {
    let (_, events) = run(config(1_000, 7), 90);
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut checked = 0;
    for e in &events {
        if let SimEvent::Transaction(t) = e {
            if let Some(prev) = last.get(&t.customer_id) {
                assert_eq!(t.balance_after_minor, prev + t.amount_minor, "{t:?}");
                checked += 1;
            }
            if matches!(t.kind, TransactionKind::DirectDebitFailed | TransactionKind::LoanRepaymentMissed) {
                assert_eq!(t.amount_minor, 0, "refused collections move no money: {t:?}");
            }
            let debit = matches!(
                t.kind,
                TransactionKind::CardPurchase
                    | TransactionKind::DirectDebit
                    | TransactionKind::AtmWithdrawal
                    | TransactionKind::TransferOut
                    | TransactionKind::LoanRepayment
                    | TransactionKind::OverdraftFee
                    | TransactionKind::Gambling
                    | TransactionKind::BnplPurchase
            );
            if debit {
                assert!(t.amount_minor < 0, "debits are negative: {t:?}");
            }
            if matches!(t.kind, TransactionKind::SalaryCredit | TransactionKind::TransferIn) {
                assert!(t.amount_minor > 0, "credits are positive: {t:?}");
            }
            last.insert(t.customer_id.clone(), t.balance_after_minor);
        }
    }
    assert!(checked > 100_000, "only {checked} postings checked");
}

#[test]
fn each_customers_events_are_in_time_order_within_their_day() {
    let cfg = config(500, 3);
    let start = cfg.start;
    let (_, events) = run(cfg, 40);
    let mut last = HashMap::new();
    for e in &events {
        let t = e.event_time();
        assert!(t.date_naive() >= start && t.date_naive() < start + chrono::Days::new(40), "{e:?}");
        if let Some(prev) = last.insert(e.customer_id().to_owned(), t) {
            assert!(prev <= t, "{e:?} after {prev}");
        }
    }
}

#[test]
fn healthy_customers_are_paid_monthly() {
    let (sim, events) = run(config(1_000, 11), 150);
    let mut salaries: HashMap<usize, Vec<NaiveDate>> = HashMap::new();
    for e in &events {
        if let SimEvent::Transaction(t) = e {
            if t.kind == TransactionKind::SalaryCredit {
                salaries.entry(customer_index(&t.customer_id)).or_default().push(t.event_time.date_naive());
            }
        }
    }
    let mut healthy = 0;
    for (i, trajectory) in sim.trajectories().enumerate() {
        if trajectory != Trajectory::Healthy {
            continue;
        }
        healthy += 1;
        let days = &salaries[&i];
        // 150 days from Jan 1st: January to May, one salary a month.
        assert!((4..=5).contains(&days.len()), "customer {i}: {days:?}");
        for pair in days.windows(2) {
            let gap = (pair[1] - pair[0]).num_days();
            assert!((25..=35).contains(&gap), "customer {i}: salary gap {gap} days in {days:?}");
        }
    }
    assert!(healthy > 600);
}

#[test]
fn about_thirty_percent_of_customers_are_stressed() {
    let sim = Simulator::new(config(10_000, 42));
    let stressed = sim.trajectories().filter(Trajectory::is_stressed).count();
    let share = stressed as f64 / 10_000.0;
    assert!((0.27..=0.33).contains(&share), "stressed share {share}");
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for t in sim.trajectories() {
        let name = match t {
            Trajectory::Healthy => "healthy",
            Trajectory::GradualStress { .. } => "gradual",
            Trajectory::IncomeShock { .. } => "shock",
            Trajectory::Recovery { .. } => "recovery",
        };
        *kinds.entry(name).or_default() += 1;
    }
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert!(kinds.values().all(|&n| n >= 500), "{kinds:?}");
}

#[test]
fn stressed_customers_produce_distress_signals_and_defaults() {
    let (sim, events) = run(config(2_000, 5), 120);
    let trajectories: Vec<Trajectory> = sim.trajectories().collect();
    let mut kinds: BTreeMap<TransactionKind, usize> = BTreeMap::new();
    let mut distress = [0usize; 2]; // [healthy, stressed] counts of distress postings
    let mut defaulted: HashSet<usize> = HashSet::new();
    let mut cured = 0;
    for e in &events {
        match e {
            SimEvent::Transaction(t) => {
                *kinds.entry(t.kind).or_default() += 1;
                if matches!(
                    t.kind,
                    TransactionKind::DirectDebitFailed
                        | TransactionKind::LoanRepaymentMissed
                        | TransactionKind::OverdraftFee
                ) {
                    distress[usize::from(trajectories[customer_index(&t.customer_id)].is_stressed())] += 1;
                }
            }
            SimEvent::Outcome(o) => {
                let i = customer_index(&o.customer_id);
                match o.outcome {
                    Outcome::Defaulted => {
                        assert_eq!(o.days_in_arrears, DEFAULT_AFTER_DAYS, "{o:?}");
                        assert!(o.arrears_minor > 0, "{o:?}");
                        assert!(defaulted.insert(i), "defaulted twice without a cure: {o:?}");
                    }
                    Outcome::Cured => {
                        assert!(defaulted.remove(&i), "cured without a default: {o:?}");
                        assert_eq!(o.arrears_minor, 0);
                        cured += 1;
                    }
                }
            }
        }
    }
    for kind in TransactionKind::ALL {
        assert!(kinds.get(&kind).copied().unwrap_or(0) > 0, "no {kind:?} in {kinds:?}");
    }
    let stressed = trajectories.iter().filter(|t| t.is_stressed()).count();
    let healthy = trajectories.len() - stressed;
    let (h, s) = (distress[0] as f64 / healthy as f64, distress[1] as f64 / stressed as f64);
    assert!(
        s > 5.0 * h,
        "stressed customers show distress far more often: healthy {h:.2}/customer, stressed {s:.2}/customer"
    );
    let ever_defaulted = defaulted.len() + cured;
    assert!(ever_defaulted >= 50, "only {ever_defaulted} defaults among {stressed} stressed customers");
    let healthy_defaults = defaulted.iter().filter(|&&i| !trajectories[i].is_stressed()).count();
    assert!(healthy_defaults * 100 <= healthy, "{healthy_defaults} healthy customers defaulted");
    println!("kinds: {kinds:?}\ndistress/customer healthy {h:.2} stressed {s:.2}; defaults {ever_defaulted}, cured {cured}, stressed {stressed}");
}

#[test]
fn same_seed_gives_the_same_stream_and_another_seed_does_not() {
    let encode = |seed| {
        let (_, events) = run(config(300, seed), 45);
        let mut buf = Vec::new();
        for e in &events {
            e.write_json(&mut buf);
            buf.push(b'\n');
        }
        buf
    };
    let a = encode(9);
    assert_eq!(a, encode(9));
    assert_ne!(a, encode(10));
}

#[test]
fn a_customers_history_does_not_depend_on_the_population_size() {
    let of_customer_3 = |customers| {
        let (_, events) = run(config(customers, 1), 30);
        events.into_iter().filter(|e| e.customer_id() == "C0000003").collect::<Vec<_>>()
    };
    let small = of_customer_3(5);
    assert!(!small.is_empty());
    assert_eq!(small, of_customer_3(50));
}
