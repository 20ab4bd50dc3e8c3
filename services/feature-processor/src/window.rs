//! A customer's rolling windows in event time, and the named features computed from them.
//!
//! State is a sparse ring of daily buckets (days with activity, at most [`RING_DAYS`]
//! back from the customer's latest day) plus the latest salary credits. The same code
//! computes features in the stream and in training, so the model sees in production
//! exactly what it was trained on. Formulas: docs/features.md.

use std::collections::VecDeque;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

use eventpipe_common::events::{
    CustomerFeatures, DayBucket, FeatureValues, LastScore, MerchantCategory, SalaryCredit, TransactionEvent,
    TransactionKind, SCHEMA_VERSION,
};

/// Days of history kept per customer (the longest window, `missed_repayments_90d`).
pub const RING_DAYS: i64 = 90;
/// Salary credits remembered for `salary_drop_ratio` (the latest and three before it).
pub const SALARIES_KEPT: usize = 4;
/// Expected longest gap between two monthly salaries, in days.
pub const SALARY_CYCLE_DAYS: i64 = 31;
/// Floor of the denominators of ratios, in minor units (£100), so small amounts do not
/// produce huge ratios.
const RATIO_FLOOR_MINOR: i64 = 10_000;

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied; `new_day` when it is the first event of a later event-time day.
    Applied { new_day: bool },
    /// Further behind the customer's latest event than the allowed lateness; not applied.
    Late { behind: TimeDelta },
}

/// One customer's rolling state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomerWindow {
    latest_event_time: Option<DateTime<Utc>>,
    days: VecDeque<DayBucket>,
    salaries: Vec<SalaryCredit>,
    /// The last score emitted for this customer.
    pub last_score: Option<LastScore>,
}

fn is_discretionary(e: &TransactionEvent) -> bool {
    match e.kind {
        TransactionKind::Gambling | TransactionKind::BnplPurchase => true,
        TransactionKind::CardPurchase => matches!(
            e.merchant_category,
            Some(
                MerchantCategory::Restaurants
                    | MerchantCategory::Entertainment
                    | MerchantCategory::Clothing
                    | MerchantCategory::Electronics
                    | MerchantCategory::Travel
            )
        ),
        _ => false,
    }
}

fn major(minor: i64) -> f64 {
    minor as f64 / 100.0
}

impl CustomerWindow {
    /// The event time of the latest event applied.
    pub fn latest_event_time(&self) -> Option<DateTime<Utc>> {
        self.latest_event_time
    }

    /// The customer's latest event-time day.
    pub fn latest_day(&self) -> Option<NaiveDate> {
        self.latest_event_time.map(|t| t.date_naive())
    }

    /// The daily buckets, oldest first.
    pub fn days(&self) -> impl Iterator<Item = &DayBucket> {
        self.days.iter()
    }

    /// Applies `event` unless it is more than `allowed_lateness` behind the latest event.
    pub fn apply(&mut self, event: &TransactionEvent, allowed_lateness: TimeDelta) -> Applied {
        let day = event.event_time.date_naive();
        if let Some(latest) = self.latest_event_time {
            let behind = latest - event.event_time;
            if behind > allowed_lateness || (latest.date_naive() - day).num_days() >= RING_DAYS {
                return Applied::Late { behind };
            }
        }
        let new_day = self.latest_day().is_none_or(|d| day > d);

        let index = match self.days.binary_search_by_key(&day, |b| b.day) {
            Ok(i) => i,
            Err(i) => {
                self.days.insert(
                    i,
                    DayBucket {
                        day,
                        closing_balance_minor: event.balance_after_minor,
                        closing_time: event.event_time,
                        min_balance_minor: event.balance_after_minor,
                        ..Default::default()
                    },
                );
                i
            }
        };
        let bucket = &mut self.days[index];
        if event.event_time >= bucket.closing_time {
            bucket.closing_time = event.event_time;
            bucket.closing_balance_minor = event.balance_after_minor;
        }
        bucket.min_balance_minor = bucket.min_balance_minor.min(event.balance_after_minor);
        bucket.txn_count += 1;
        if event.amount_minor > 0 {
            bucket.inflow_minor += event.amount_minor;
        } else {
            bucket.outflow_minor -= event.amount_minor;
        }
        let spent = -event.amount_minor.min(0);
        if is_discretionary(event) {
            bucket.discretionary_minor += spent;
        }
        match event.kind {
            TransactionKind::AtmWithdrawal => bucket.atm_minor += spent,
            TransactionKind::Gambling => bucket.gambling_minor += spent,
            TransactionKind::DirectDebitFailed => bucket.failed_debits += 1,
            TransactionKind::LoanRepaymentMissed => bucket.missed_repayments += 1,
            TransactionKind::OverdraftFee => bucket.overdraft_fees += 1,
            TransactionKind::BnplPurchase => bucket.bnpl_count += 1,
            TransactionKind::SalaryCredit => {
                let credit = SalaryCredit { day, amount_minor: event.amount_minor };
                let at = self.salaries.partition_point(|s| s.day <= day);
                self.salaries.insert(at, credit);
                if self.salaries.len() > SALARIES_KEPT {
                    self.salaries.remove(0);
                }
            }
            _ => {}
        }

        if self.latest_event_time.is_none_or(|t| event.event_time > t) {
            self.latest_event_time = Some(event.event_time);
        }
        // Roll the ring: drop days that fell out of the longest window.
        let latest_day = self.latest_day().expect("set above");
        while self.days.front().is_some_and(|b| (latest_day - b.day).num_days() >= RING_DAYS) {
            self.days.pop_front();
        }
        Applied::Applied { new_day }
    }

    /// The window sums the features need, in one pass over the ring.
    fn sums(&self, as_of: NaiveDate) -> Sums {
        let mut s = Sums::default();
        for b in &self.days {
            let age = (as_of - b.day).num_days();
            if age < 90 {
                s.missed_repayments_90 += i64::from(b.missed_repayments);
            }
            if age < 30 {
                s.inflow_30 += b.inflow_minor;
                s.outflow_30 += b.outflow_minor;
                s.discretionary_30 += b.discretionary_minor;
                s.atm_30 += b.atm_minor;
                s.gambling_30 += b.gambling_minor;
                s.failed_debits_30 += i64::from(b.failed_debits);
                s.overdraft_fees_30 += i64::from(b.overdraft_fees);
                s.bnpl_30 += i64::from(b.bnpl_count);
            } else if age < 60 {
                s.discretionary_previous_30 += b.discretionary_minor;
            }
            if age < 7 {
                s.txn_count_7 += i64::from(b.txn_count);
                s.min_balance_7 =
                    Some(s.min_balance_7.map_or(b.min_balance_minor, |m: i64| m.min(b.min_balance_minor)));
            }
        }
        s
    }

    /// Closing balances of each of the `window` days ending with `as_of`, oldest first,
    /// carried forward over days without activity; `None` before the first known day.
    fn closing_balances(&self, as_of: NaiveDate, window: i64) -> Vec<Option<i64>> {
        let first = as_of - TimeDelta::days(window - 1);
        let mut carried = self.days.iter().take_while(|b| b.day < first).last().map(|b| b.closing_balance_minor);
        let mut buckets = self.days.iter().skip_while(|b| b.day < first).peekable();
        (0..window)
            .map(|i| {
                let day = first + TimeDelta::days(i);
                if let Some(b) = buckets.next_if(|b| b.day == day) {
                    carried = Some(b.closing_balance_minor);
                }
                carried
            })
            .collect()
    }

    /// The named features as of the latest event-time day (all zero before any event).
    pub fn features(&self) -> FeatureValues {
        let Some(as_of) = self.latest_day() else {
            return FeatureValues::default();
        };
        let closing_30 = self.closing_balances(as_of, 30);
        let closing_7 = &closing_30[23..];

        let salary_days_late = match self.salaries.last() {
            Some(s) => (as_of - s.day).num_days() - SALARY_CYCLE_DAYS,
            None => {
                let first = self.days.front().map_or(as_of, |b| b.day);
                (as_of - first).num_days() + 1 - SALARY_CYCLE_DAYS
            }
        }
        .max(0);
        let salary_drop_ratio = match self.salaries.split_last() {
            Some((last, previous)) if !previous.is_empty() => {
                let mean = previous.iter().map(|s| s.amount_minor as f64).sum::<f64>() / previous.len() as f64;
                (1.0 - last.amount_minor as f64 / mean).clamp(0.0, 1.0)
            }
            _ => 0.0,
        };

        let sums = self.sums(as_of);
        // Lowest balance over 7 days: intraday minima, and carried balances on quiet days.
        let balance_min_7d =
            sums.min_balance_7.into_iter().chain(closing_7.iter().flatten().copied()).min().map_or(0.0, major);

        let points: Vec<(f64, f64)> =
            closing_30.iter().enumerate().filter_map(|(i, b)| b.map(|b| (i as f64, major(b)))).collect();
        let balance_trend_30d = slope(&points);
        let days_overdrawn_30d = closing_30.iter().flatten().filter(|b| **b < 0).count() as f64;

        let (inflow, outflow) = (sums.inflow_30, sums.outflow_30);
        let share = |part: i64| {
            if outflow > 0 {
                part as f64 / outflow as f64
            } else {
                0.0
            }
        };
        let (discretionary, discretionary_before) = (sums.discretionary_30, sums.discretionary_previous_30);

        FeatureValues {
            salary_days_late: salary_days_late as f64,
            salary_drop_ratio,
            balance_min_7d,
            balance_trend_30d,
            days_overdrawn_30d,
            failed_debits_30d: sums.failed_debits_30 as f64,
            missed_repayments_90d: sums.missed_repayments_90 as f64,
            overdraft_fees_30d: sums.overdraft_fees_30 as f64,
            atm_cash_share_30d: share(sums.atm_30),
            gambling_share_30d: share(sums.gambling_30),
            bnpl_count_30d: sums.bnpl_30 as f64,
            spend_to_income_30d: (outflow as f64 / inflow.max(RATIO_FLOOR_MINOR) as f64).min(10.0),
            discretionary_spend_change: ((discretionary - discretionary_before) as f64
                / discretionary_before.max(RATIO_FLOOR_MINOR) as f64)
                .clamp(-1.0, 5.0),
            txn_count_7d: sums.txn_count_7 as f64,
            inflow_30d: major(inflow),
            outflow_30d: major(outflow),
        }
    }

    /// The changelog record of this window (the features and everything to rebuild it).
    pub fn to_record(&self, customer_id: &str, event_id: uuid::Uuid) -> Option<CustomerFeatures> {
        let event_time = self.latest_event_time?;
        Some(CustomerFeatures {
            event_id,
            event_time,
            schema_version: SCHEMA_VERSION,
            customer_id: customer_id.to_owned(),
            as_of: event_time.date_naive(),
            features: self.features(),
            days: self.days.iter().cloned().collect(),
            salaries: self.salaries.clone(),
            last_score: self.last_score,
        })
    }

    /// Rebuilds a window from its changelog record.
    pub fn from_record(record: &CustomerFeatures) -> Self {
        CustomerWindow {
            latest_event_time: Some(record.event_time),
            days: record.days.iter().cloned().collect(),
            salaries: record.salaries.clone(),
            last_score: record.last_score,
        }
    }
}

/// Sums over the windows ending with the customer's latest day (money in minor units).
#[derive(Debug, Default)]
struct Sums {
    inflow_30: i64,
    outflow_30: i64,
    discretionary_30: i64,
    discretionary_previous_30: i64,
    atm_30: i64,
    gambling_30: i64,
    failed_debits_30: i64,
    overdraft_fees_30: i64,
    bnpl_30: i64,
    missed_repayments_90: i64,
    txn_count_7: i64,
    min_balance_7: Option<i64>,
}

/// Least-squares slope of y over x; 0 with fewer than two distinct x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    if sxx == 0.0 {
        0.0
    } else {
        sxy / sxx
    }
}
