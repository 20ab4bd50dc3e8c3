//! One simulated customer: a latent financial-health trajectory and the account
//! behaviour it drives.
//!
//! Each customer owns a random stream seeded from the simulation seed and its index, so
//! its history does not depend on how many other customers there are or on pacing.
//! A day is simulated in two steps: draw the day's intended postings with their times,
//! then apply them in time order against the balance, where a collection that cannot
//! be afforded becomes a failed direct debit or a missed repayment. See docs/simulator.md.

use chrono::{Datelike, NaiveDate};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Poisson};
use rand_pcg::Pcg64Mcg;

use eventpipe_common::events::{Channel, MerchantCategory, Outcome, TransactionKind};

/// Days arrears must stay unpaid before a customer is `defaulted` (ground truth rule).
pub const DEFAULT_AFTER_DAYS: u32 = 30;

/// Fee charged for each day that closes overdrawn, in minor units.
pub const OVERDRAFT_FEE_MINOR: i64 = 600;

/// The latent path of a customer's financial health.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trajectory {
    /// Stable income, spending within means.
    Healthy,
    /// Stress builds linearly from `onset` over `ramp` days (reduced hours, rising costs).
    GradualStress { onset: u32, ramp: u32 },
    /// Income falls by `severity` (0..1) on day `at` (job loss when severe).
    IncomeShock { at: u32, severity: f64 },
    /// Starts fully stressed and recovers linearly from day `from` over `ramp` days.
    Recovery { from: u32, ramp: u32 },
}

impl Trajectory {
    /// Stress on `day` (days since the simulation start), 0 = healthy, 1 = fully stressed.
    pub fn stress(&self, day: u32) -> f64 {
        match *self {
            Trajectory::Healthy => 0.0,
            Trajectory::GradualStress { onset, ramp } => {
                (f64::from(day.saturating_sub(onset)) / f64::from(ramp.max(1))).min(1.0)
            }
            Trajectory::IncomeShock { at, .. } => {
                if day >= at {
                    1.0
                } else {
                    0.0
                }
            }
            Trajectory::Recovery { from, ramp } => {
                1.0 - (f64::from(day.saturating_sub(from)) / f64::from(ramp.max(1))).min(1.0)
            }
        }
    }

    /// Whether this trajectory ever leaves the healthy state.
    pub fn is_stressed(&self) -> bool {
        !matches!(self, Trajectory::Healthy)
    }
}

/// A posting as the simulator decided it (before it becomes an event).
#[derive(Debug, Clone, PartialEq)]
pub struct Posting {
    /// Seconds since midnight UTC.
    pub second: u32,
    pub kind: TransactionKind,
    pub amount_minor: i64,
    pub balance_after_minor: i64,
    pub merchant_category: Option<MerchantCategory>,
    pub channel: Channel,
    /// Random bits for the event id.
    pub id_bits: u128,
}

/// A change of ground truth on a day.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeChange {
    pub second: u32,
    pub outcome: Outcome,
    pub days_in_arrears: u32,
    pub arrears_minor: i64,
    pub id_bits: u128,
}

/// A recurring bill collected by direct debit.
#[derive(Debug, Clone, Copy)]
struct Bill {
    day_of_month: u32,
    amount_minor: i64,
    category: MerchantCategory,
}

/// What a customer intends to do at a moment of the day; applied in time order.
#[derive(Debug, Clone, Copy)]
enum Intent {
    Credit {
        kind: TransactionKind,
        amount: i64,
        channel: Channel,
    },
    /// A payment the customer chooses to make (card, ATM, transfer): made only if the
    /// funds are there, otherwise silently not made (declined).
    Spend {
        kind: TransactionKind,
        amount: i64,
        category: Option<MerchantCategory>,
        channel: Channel,
    },
    /// A collection by the bank or a biller: refused when funds are short.
    Collect {
        kind: TransactionKind,
        failed: TransactionKind,
        amount: i64,
        category: MerchantCategory,
        channel: Channel,
    },
    /// Pay arrears off if the customer can.
    SettleArrears,
    /// End of day: overdraft fee.
    CloseDay,
}

/// One simulated customer.
#[derive(Debug, Clone)]
pub struct Customer {
    pub index: u32,
    pub customer_id: String,
    pub account_id: String,
    pub trajectory: Trajectory,
    rng: Pcg64Mcg,
    salary_minor: i64,
    pay_day: u32,
    bills: Vec<Bill>,
    loan: Option<Bill>,
    daily_spend_minor: f64,
    gambler: bool,
    overdraft_limit_minor: i64,
    balance_minor: i64,
    arrears_minor: i64,
    arrears_since: Option<u32>,
    defaulted: bool,
    /// Salaries planned but not yet paid: (day index, amount). Planned on the 1st; a
    /// late one may fall into the next month.
    pending_salaries: Vec<(u32, i64)>,
    months_paid: u32,
}

fn draw_trajectory(rng: &mut Pcg64Mcg) -> Trajectory {
    let u: f64 = rng.random();
    if u < 0.70 {
        Trajectory::Healthy
    } else if u < 0.84 {
        Trajectory::GradualStress { onset: rng.random_range(0..120), ramp: rng.random_range(20..75) }
    } else if u < 0.92 {
        Trajectory::IncomeShock { at: rng.random_range(5..150), severity: rng.random_range(0.5..1.0) }
    } else {
        Trajectory::Recovery { from: rng.random_range(10..80), ramp: rng.random_range(20..60) }
    }
}

impl Customer {
    /// Customer `index` of a simulation seeded with `seed`, starting on `start` (day 0).
    pub fn new(seed: u64, index: u32, start: NaiveDate) -> Self {
        // Mix seed and index so neighbouring customers get unrelated streams.
        let mixed = seed ^ (u64::from(index).wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rng = Pcg64Mcg::seed_from_u64(mixed);
        let trajectory = draw_trajectory(&mut rng);
        let salary = LogNormal::new(f64::ln(2_400.0), 0.35).expect("valid lognormal").sample(&mut rng);
        let salary_minor = (salary * 100.0).round() as i64;
        let mut bills = vec![Bill {
            day_of_month: rng.random_range(1..=28),
            amount_minor: (salary_minor as f64 * rng.random_range(0.22..0.33)) as i64,
            category: MerchantCategory::Housing,
        }];
        for (category, share) in [
            (MerchantCategory::Utilities, 0.045),
            (MerchantCategory::Telecoms, 0.02),
            (MerchantCategory::Entertainment, 0.008),
            (MerchantCategory::Health, 0.015),
        ] {
            if rng.random_bool(0.85) {
                bills.push(Bill {
                    day_of_month: rng.random_range(1..=28),
                    amount_minor: (salary_minor as f64 * share * rng.random_range(0.7..1.3)) as i64,
                    category,
                });
            }
        }
        let loan = rng.random_bool(0.45).then(|| Bill {
            day_of_month: rng.random_range(1..=28),
            amount_minor: (salary_minor as f64 * rng.random_range(0.05..0.14)) as i64,
            category: MerchantCategory::Lending,
        });
        let stressed_start = matches!(trajectory, Trajectory::Recovery { .. });
        let balance_factor = if stressed_start { rng.random_range(-0.2..0.3) } else { rng.random_range(0.2..1.5) };
        let overdraft_limit_minor = [0, 25_000, 50_000, 100_000, 150_000][rng.random_range(0..5)];
        Customer {
            index,
            customer_id: format!("C{index:07}"),
            account_id: format!("GB{:02}EVPB{index:010}", index % 97),
            trajectory,
            salary_minor,
            pay_day: rng.random_range(1..=28),
            bills,
            loan,
            // Discretionary card spending: 20-35% of take-home pay over a month.
            daily_spend_minor: salary_minor as f64 * rng.random_range(0.20..0.35) / 30.0,
            gambler: rng.random_bool(if trajectory.is_stressed() { 0.35 } else { 0.05 }),
            overdraft_limit_minor,
            balance_minor: (salary_minor as f64 * balance_factor) as i64,
            arrears_minor: 0,
            arrears_since: None,
            defaulted: false,
            pending_salaries: Vec::new(),
            months_paid: 0,
            rng,
        }
        .with_first_month(start)
    }

    fn with_first_month(mut self, start: NaiveDate) -> Self {
        self.plan_salary(start, 0);
        self
    }

    /// Current balance in minor units.
    pub fn balance_minor(&self) -> i64 {
        self.balance_minor
    }

    /// Whether the customer is currently in default.
    pub fn is_defaulted(&self) -> bool {
        self.defaulted
    }

    /// Decides this month's pay date and amount (from the pay day, stress and drift).
    fn plan_salary(&mut self, date: NaiveDate, day: u32) {
        let stress = self.trajectory.stress(day);
        let mut amount = self.salary_minor as f64 * (1.0 + 0.002 * f64::from(self.months_paid));
        amount *= self.rng.random_range(0.97..1.03);
        let mut lateness = if self.rng.random_bool(0.1) { self.rng.random_range(1..=2) } else { 0 };
        match self.trajectory {
            Trajectory::IncomeShock { severity, .. } if stress > 0.0 => {
                if severity > 0.8 {
                    // Job lost: no salary any more.
                    return;
                }
                amount *= 1.0 - severity;
                lateness += self.rng.random_range(0..=3);
            }
            _ => {
                amount *= 1.0 - 0.55 * stress * self.rng.random_range(0.5..1.0);
                lateness += (stress * self.rng.random_range(0.0..8.0)) as u32;
            }
        }
        let pay_date_day = self.pay_day + lateness;
        let first_of_month = date.with_day(1).expect("day 1 exists");
        let offset = (first_of_month - date).num_days() + i64::from(pay_date_day) - 1;
        let pay_index = i64::from(day) + offset;
        if pay_index >= i64::from(day) {
            self.pending_salaries.push((pay_index as u32, amount.round() as i64));
        }
    }

    /// Simulates `day` (index since the start) on `date`; appends the postings in time
    /// order to `postings` and a ground-truth change, if any, to `outcomes`.
    pub fn simulate_day(
        &mut self,
        day: u32,
        date: NaiveDate,
        postings: &mut Vec<Posting>,
        outcomes: &mut Vec<OutcomeChange>,
    ) {
        if date.day() == 1 && day > 0 {
            self.plan_salary(date, day);
        }
        let stress = self.trajectory.stress(day);
        let mut intents: Vec<(u32, Intent)> = Vec::with_capacity(8);
        let dom = date.day();

        while let Some(i) = self.pending_salaries.iter().position(|(d, _)| *d == day) {
            let (_, amount) = self.pending_salaries.swap_remove(i);
            self.months_paid += 1;
            let second = self.rng.random_range(3_600..25_200);
            intents.push((
                second,
                Intent::Credit { kind: TransactionKind::SalaryCredit, amount, channel: Channel::BankTransfer },
            ));
        }
        for bill in &self.bills {
            if bill.day_of_month == dom {
                intents.push((
                    self.rng.random_range(10_800..21_600),
                    Intent::Collect {
                        kind: TransactionKind::DirectDebit,
                        failed: TransactionKind::DirectDebitFailed,
                        amount: bill.amount_minor,
                        category: bill.category,
                        channel: Channel::DirectDebit,
                    },
                ));
            }
        }
        if let Some(loan) = self.loan.filter(|l| l.day_of_month == dom) {
            intents.push((
                self.rng.random_range(14_400..18_000),
                Intent::Collect {
                    kind: TransactionKind::LoanRepayment,
                    failed: TransactionKind::LoanRepaymentMissed,
                    amount: loan.amount_minor,
                    category: MerchantCategory::Lending,
                    channel: Channel::Internal,
                },
            ));
        }
        self.draw_spending(stress, &mut intents);
        if self.arrears_minor > 0 {
            intents.push((self.rng.random_range(43_200..72_000), Intent::SettleArrears));
        }
        intents.push((84_600, Intent::CloseDay));
        intents.sort_by_key(|(second, _)| *second);

        for (second, intent) in intents {
            self.apply(day, second, intent, postings, outcomes);
        }
        if let Some(since) = self.arrears_since {
            let days_in_arrears = day - since;
            if !self.defaulted && days_in_arrears >= DEFAULT_AFTER_DAYS {
                self.defaulted = true;
                outcomes.push(OutcomeChange {
                    second: 86_399,
                    outcome: Outcome::Defaulted,
                    days_in_arrears,
                    arrears_minor: self.arrears_minor,
                    id_bits: self.rng.random(),
                });
            }
        }
    }

    /// Card spending, cash, transfers, gambling and BNPL for one day.
    fn draw_spending(&mut self, stress: f64, intents: &mut Vec<(u32, Intent)>) {
        let rng = &mut self.rng;
        // Stress raises the number of purchases: spending does not fall with income.
        let rate = 1.3 + 0.4 * stress;
        let purchases = Poisson::new(rate).expect("valid rate").sample(rng) as u32;
        for _ in 0..purchases {
            let (category, weight) = [
                (MerchantCategory::Groceries, 0.9),
                (MerchantCategory::Restaurants, 0.9),
                (MerchantCategory::Transport, 0.5),
                (MerchantCategory::Fuel, 1.2),
                (MerchantCategory::Clothing, 1.4),
                (MerchantCategory::Electronics, 2.5),
                (MerchantCategory::Entertainment, 0.8),
                (MerchantCategory::Travel, 3.0),
            ][rng.random_range(0..8)];
            // Mean weight 1.4 and 1.3 purchases a day: the month's spend averages daily_spend × 30.
            let amount = self.daily_spend_minor * weight / (1.4 * 1.3) * rng.random_range(0.4..1.6);
            let channel = if rng.random_bool(0.7) { Channel::CardPresent } else { Channel::CardNotPresent };
            intents.push((
                rng.random_range(28_800..79_200),
                Intent::Spend {
                    kind: TransactionKind::CardPurchase,
                    amount: amount as i64,
                    category: Some(category),
                    channel,
                },
            ));
        }
        if rng.random_bool(0.06 + 0.22 * stress) {
            let amount = [2_000, 3_000, 5_000, 10_000][rng.random_range(0..4)];
            intents.push((
                rng.random_range(32_400..82_800),
                Intent::Spend {
                    kind: TransactionKind::AtmWithdrawal,
                    amount,
                    category: Some(MerchantCategory::Cash),
                    channel: Channel::Atm,
                },
            ));
        }
        if rng.random_bool(0.04 * (1.0 - stress)) {
            let amount = self.salary_minor as f64 * rng.random_range(0.02..0.10);
            intents.push((
                rng.random_range(28_800..75_600),
                Intent::Spend {
                    kind: TransactionKind::TransferOut,
                    amount: amount as i64,
                    category: None,
                    channel: Channel::BankTransfer,
                },
            ));
        }
        if rng.random_bool(0.02 + 0.05 * stress) {
            let amount = self.salary_minor as f64 * rng.random_range(0.01..0.08);
            intents.push((
                rng.random_range(28_800..75_600),
                Intent::Credit {
                    kind: TransactionKind::TransferIn,
                    amount: amount as i64,
                    channel: Channel::BankTransfer,
                },
            ));
        }
        if self.gambler && rng.random_bool(0.01 + 0.30 * stress) {
            let amount = rng.random_range(1_000..8_000) as f64 * (1.0 + stress);
            intents.push((
                rng.random_range(57_600..86_000),
                Intent::Spend {
                    kind: TransactionKind::Gambling,
                    amount: amount as i64,
                    category: Some(MerchantCategory::Gambling),
                    channel: Channel::CardNotPresent,
                },
            ));
        }
        if rng.random_bool(0.008 + 0.12 * stress) {
            let amount = rng.random_range(2_500..20_000);
            let category = [MerchantCategory::Clothing, MerchantCategory::Electronics][rng.random_range(0..2)];
            intents.push((
                rng.random_range(36_000..82_800),
                Intent::Spend {
                    kind: TransactionKind::BnplPurchase,
                    amount,
                    category: Some(category),
                    channel: Channel::CardNotPresent,
                },
            ));
        }
    }

    fn post(
        &mut self,
        second: u32,
        kind: TransactionKind,
        amount: i64,
        category: Option<MerchantCategory>,
        channel: Channel,
        out: &mut Vec<Posting>,
    ) {
        self.balance_minor += amount;
        out.push(Posting {
            second,
            kind,
            amount_minor: amount,
            balance_after_minor: self.balance_minor,
            merchant_category: category,
            channel,
            id_bits: self.rng.random(),
        });
    }

    fn available(&self) -> i64 {
        self.balance_minor + self.overdraft_limit_minor
    }

    fn add_arrears(&mut self, day: u32, amount: i64) {
        if self.arrears_minor == 0 {
            self.arrears_since = Some(day);
        }
        self.arrears_minor += amount;
    }

    fn apply(
        &mut self,
        day: u32,
        second: u32,
        intent: Intent,
        postings: &mut Vec<Posting>,
        outcomes: &mut Vec<OutcomeChange>,
    ) {
        match intent {
            Intent::Credit { kind, amount, channel } => self.post(second, kind, amount, None, channel, postings),
            Intent::Spend { kind, amount, category, channel } => {
                // Stressed customers keep spending into the overdraft; a payment beyond
                // the limit is declined and leaves no posting.
                if amount <= self.available() {
                    self.post(second, kind, -amount, category, channel, postings);
                }
            }
            Intent::Collect { kind, failed, amount, category, channel } => {
                if amount <= self.available() {
                    self.post(second, kind, -amount, Some(category), channel, postings);
                } else {
                    self.post(second, failed, 0, Some(category), channel, postings);
                    self.add_arrears(day, amount);
                }
            }
            Intent::SettleArrears => {
                // Pay arrears only out of a positive balance with a cushion left over.
                let cushion = self.salary_minor / 10;
                if self.arrears_minor > 0 && self.balance_minor - self.arrears_minor >= cushion {
                    let amount = self.arrears_minor;
                    self.post(
                        second,
                        TransactionKind::LoanRepayment,
                        -amount,
                        Some(MerchantCategory::Lending),
                        Channel::Internal,
                        postings,
                    );
                    self.arrears_minor = 0;
                    self.arrears_since = None;
                    if self.defaulted {
                        self.defaulted = false;
                        outcomes.push(OutcomeChange {
                            second,
                            outcome: Outcome::Cured,
                            days_in_arrears: 0,
                            arrears_minor: 0,
                            id_bits: self.rng.random(),
                        });
                    }
                }
            }
            Intent::CloseDay => {
                if self.balance_minor < 0 {
                    self.post(
                        second,
                        TransactionKind::OverdraftFee,
                        -OVERDRAFT_FEE_MINOR,
                        None,
                        Channel::Internal,
                        postings,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(Trajectory::Healthy, 50, 0.0)]
    #[case(Trajectory::GradualStress { onset: 10, ramp: 20 }, 5, 0.0)]
    #[case(Trajectory::GradualStress { onset: 10, ramp: 20 }, 20, 0.5)]
    #[case(Trajectory::GradualStress { onset: 10, ramp: 20 }, 40, 1.0)]
    #[case(Trajectory::IncomeShock { at: 7, severity: 0.9 }, 6, 0.0)]
    #[case(Trajectory::IncomeShock { at: 7, severity: 0.9 }, 7, 1.0)]
    #[case(Trajectory::Recovery { from: 10, ramp: 40 }, 0, 1.0)]
    #[case(Trajectory::Recovery { from: 10, ramp: 40 }, 30, 0.5)]
    #[case(Trajectory::Recovery { from: 10, ramp: 40 }, 60, 0.0)]
    fn stress_follows_the_trajectory(#[case] t: Trajectory, #[case] day: u32, #[case] expected: f64) {
        assert!((t.stress(day) - expected).abs() < 1e-9, "{t:?} day {day}: {}", t.stress(day));
    }

    #[test]
    fn refused_collection_posts_zero_and_opens_arrears() {
        let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let mut c = Customer::new(1, 0, start);
        c.balance_minor = 100;
        c.overdraft_limit_minor = 0;
        let mut postings = Vec::new();
        let mut outcomes = Vec::new();
        let intent = Intent::Collect {
            kind: TransactionKind::LoanRepayment,
            failed: TransactionKind::LoanRepaymentMissed,
            amount: 5_000,
            category: MerchantCategory::Lending,
            channel: Channel::Internal,
        };
        c.apply(3, 100, intent, &mut postings, &mut outcomes);
        assert_eq!(postings.len(), 1);
        assert_eq!(postings[0].kind, TransactionKind::LoanRepaymentMissed);
        assert_eq!((postings[0].amount_minor, postings[0].balance_after_minor), (0, 100));
        assert_eq!((c.arrears_minor, c.arrears_since), (5_000, Some(3)));
        // Paid off once the money is there; a defaulted customer is then cured.
        c.defaulted = true;
        c.balance_minor = 5_000 + c.salary_minor;
        c.apply(40, 200, Intent::SettleArrears, &mut postings, &mut outcomes);
        assert_eq!(postings[1].amount_minor, -5_000);
        assert_eq!(c.arrears_minor, 0);
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].outcome, Outcome::Cured);
    }
}
