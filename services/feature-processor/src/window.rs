//! A customer's rolling windows in event time, and the named features computed from them.
//!
//! State is a sparse ring of daily buckets (days with activity, at most [`RING_DAYS`]
//! back from the customer's latest day) plus the latest salary credits. The same code
//! computes features in the stream and in training, so the model sees in production
//! exactly what it was trained on. Formulas: docs/features.md.
//!
//! Days are compared as day numbers (days since 0001-01-01), not as calendar dates: the
//! feature pass looks at every bucket of the ring each time a customer is scored.

use std::collections::VecDeque;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};

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
const RING: i32 = RING_DAYS as i32;

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied; `new_day` when it is the first event of a later event-time day.
    Applied { new_day: bool },
    /// Further behind the customer's latest event than the allowed lateness; not applied.
    Late { behind: TimeDelta },
}

/// The day number (days since 0001-01-01, day 1) of a date.
pub fn day_number(day: NaiveDate) -> i32 {
    day.num_days_from_ce()
}

/// The date of a day number.
pub fn date_of(number: i32) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(number).expect("day numbers come from valid dates")
}

/// What the window needs of a transaction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Posting {
    pub event_time: DateTime<Utc>,
    pub kind: TransactionKind,
    pub amount_minor: i64,
    pub balance_after_minor: i64,
    pub merchant_category: Option<MerchantCategory>,
}

impl From<&TransactionEvent> for Posting {
    fn from(e: &TransactionEvent) -> Self {
        Posting {
            event_time: e.event_time,
            kind: e.kind,
            amount_minor: e.amount_minor,
            balance_after_minor: e.balance_after_minor,
            merchant_category: e.merchant_category,
        }
    }
}

impl Posting {
    fn is_discretionary(&self) -> bool {
        match self.kind {
            TransactionKind::Gambling | TransactionKind::BnplPurchase => true,
            TransactionKind::CardPurchase => matches!(
                self.merchant_category,
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
}

/// A daily bucket with its day number.
#[derive(Debug, Clone, PartialEq)]
struct Bucket {
    number: i32,
    data: DayBucket,
}

/// One customer's rolling state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomerWindow {
    latest_event_time: Option<DateTime<Utc>>,
    /// Day number of `latest_event_time`.
    latest: i32,
    days: VecDeque<Bucket>,
    salaries: Vec<SalaryCredit>,
    /// The last score emitted for this customer.
    pub last_score: Option<LastScore>,
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
        self.days.iter().map(|b| &b.data)
    }

    /// The bucket of day number `number`, if that day had activity.
    pub fn bucket(&self, number: i32) -> Option<&DayBucket> {
        if let Some(last) = self.days.back().filter(|b| b.number == number) {
            return Some(&last.data);
        }
        let i = self.days.binary_search_by_key(&number, |b| b.number).ok()?;
        Some(&self.days[i].data)
    }

    /// The latest salary credits, oldest first.
    pub fn salaries(&self) -> &[SalaryCredit] {
        &self.salaries
    }

    /// Applies `event` unless it is more than `allowed_lateness` behind the latest event.
    pub fn apply(&mut self, event: &TransactionEvent, allowed_lateness: TimeDelta) -> Applied {
        self.apply_posting(&Posting::from(event), allowed_lateness, &mut Vec::new())
    }

    /// Applies `p` unless it is late; the day numbers of buckets that fall out of the
    /// ring are pushed onto `evicted`.
    pub fn apply_posting(&mut self, p: &Posting, allowed_lateness: TimeDelta, evicted: &mut Vec<i32>) -> Applied {
        let day = p.event_time.date_naive();
        let number = day_number(day);
        let new_day = match self.latest_event_time {
            None => true,
            Some(latest) => {
                if p.event_time < latest {
                    let behind = latest - p.event_time;
                    if behind > allowed_lateness || self.latest - number >= RING {
                        return Applied::Late { behind };
                    }
                }
                number > self.latest
            }
        };

        let index = match self.days.back() {
            Some(b) if b.number == number => self.days.len() - 1,
            Some(b) if b.number > number => match self.days.binary_search_by_key(&number, |b| b.number) {
                Ok(i) => i,
                Err(i) => {
                    self.days.insert(i, Bucket::new(number, day, p));
                    i
                }
            },
            _ => {
                self.days.push_back(Bucket::new(number, day, p));
                self.days.len() - 1
            }
        };
        let bucket = &mut self.days[index].data;
        if p.event_time >= bucket.closing_time {
            bucket.closing_time = p.event_time;
            bucket.closing_balance_minor = p.balance_after_minor;
        }
        bucket.min_balance_minor = bucket.min_balance_minor.min(p.balance_after_minor);
        bucket.txn_count += 1;
        if p.amount_minor > 0 {
            bucket.inflow_minor += p.amount_minor;
        } else {
            bucket.outflow_minor -= p.amount_minor;
        }
        let spent = -p.amount_minor.min(0);
        if p.is_discretionary() {
            bucket.discretionary_minor += spent;
        }
        match p.kind {
            TransactionKind::AtmWithdrawal => bucket.atm_minor += spent,
            TransactionKind::Gambling => bucket.gambling_minor += spent,
            TransactionKind::DirectDebitFailed => bucket.failed_debits += 1,
            TransactionKind::LoanRepaymentMissed => bucket.missed_repayments += 1,
            TransactionKind::OverdraftFee => bucket.overdraft_fees += 1,
            TransactionKind::BnplPurchase => bucket.bnpl_count += 1,
            TransactionKind::SalaryCredit => {
                let credit = SalaryCredit { day, amount_minor: p.amount_minor };
                let at = self.salaries.partition_point(|s| s.day <= day);
                self.salaries.insert(at, credit);
                if self.salaries.len() > SALARIES_KEPT {
                    self.salaries.remove(0);
                }
            }
            _ => {}
        }

        if self.latest_event_time.is_none_or(|t| p.event_time > t) {
            self.latest_event_time = Some(p.event_time);
            self.latest = number;
        }
        self.roll(evicted);
        Applied::Applied { new_day }
    }

    /// Rolls the ring: drops the days that fell out of the longest window.
    fn roll(&mut self, evicted: &mut Vec<i32>) {
        while let Some(front) = self.days.front().filter(|b| self.latest - b.number >= RING) {
            evicted.push(front.number);
            self.days.pop_front();
        }
    }

    /// The window sums the features need, and the closing balances of each of the 30
    /// days ending with `as_of` (oldest first, carried forward over days without
    /// activity; `None` before the first known day), in one pass over the ring from
    /// its newest day: the ring does not fit in the cache, so each bucket is read once.
    fn sums(&self, as_of: i32) -> (Sums, [Option<i64>; 30]) {
        let mut s = Sums::default();
        // closing[i] is the closing balance of day as_of − 29 + i, where it had activity.
        let mut closing = [None; 30];
        let mut carried_in = None;
        for b in self.days.iter().rev() {
            let age = as_of - b.number;
            let b = &b.data;
            if age < 90 {
                s.missed_repayments_90 += i64::from(b.missed_repayments);
            }
            if age < 30 {
                closing[(29 - age) as usize] = Some(b.closing_balance_minor);
                s.inflow_30 += b.inflow_minor;
                s.outflow_30 += b.outflow_minor;
                s.discretionary_30 += b.discretionary_minor;
                s.atm_30 += b.atm_minor;
                s.gambling_30 += b.gambling_minor;
                s.failed_debits_30 += i64::from(b.failed_debits);
                s.overdraft_fees_30 += i64::from(b.overdraft_fees);
                s.bnpl_30 += i64::from(b.bnpl_count);
            } else {
                // The newest day before the 30-day window carries into it.
                carried_in.get_or_insert(b.closing_balance_minor);
                if age < 60 {
                    s.discretionary_previous_30 += b.discretionary_minor;
                }
            }
            if age < 7 {
                s.txn_count_7 += i64::from(b.txn_count);
                s.min_balance_7 =
                    Some(s.min_balance_7.map_or(b.min_balance_minor, |m: i64| m.min(b.min_balance_minor)));
            }
        }
        let mut carried = carried_in;
        for slot in &mut closing {
            match slot {
                Some(balance) => carried = Some(*balance),
                None => *slot = carried,
            }
        }
        (s, closing)
    }

    /// The named features as of the latest event-time day (all zero before any event).
    pub fn features(&self) -> FeatureValues {
        if self.latest_event_time.is_none() {
            return FeatureValues::default();
        }
        let as_of = self.latest;
        let (sums, closing_30) = self.sums(as_of);
        let closing_7 = &closing_30[23..];

        let salary_days_late = i64::from(match self.salaries.last() {
            Some(s) => as_of - day_number(s.day) - SALARY_CYCLE_DAYS as i32,
            None => {
                let first = self.days.front().map_or(as_of, |b| b.number);
                as_of - first + 1 - SALARY_CYCLE_DAYS as i32
            }
        })
        .max(0);
        let salary_drop_ratio = match self.salaries.split_last() {
            Some((last, previous)) if !previous.is_empty() => {
                let mean = previous.iter().map(|s| s.amount_minor as f64).sum::<f64>() / previous.len() as f64;
                (1.0 - last.amount_minor as f64 / mean).clamp(0.0, 1.0)
            }
            _ => 0.0,
        };

        // Lowest balance over 7 days: intraday minima, and carried balances on quiet days.
        let balance_min_7d =
            sums.min_balance_7.into_iter().chain(closing_7.iter().flatten().copied()).min().map_or(0.0, major);

        let mut points = [(0.0, 0.0); 30];
        let mut n = 0;
        for (i, b) in closing_30.iter().enumerate() {
            if let Some(b) = b {
                points[n] = (i as f64, major(*b));
                n += 1;
            }
        }
        let balance_trend_30d = slope(&points[..n]);
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

    /// The whole window as one record: the features and every bucket. (The stream's
    /// changelog writes one record per changed day and a record of the rest instead: [`crate::changelog`].)
    pub fn to_record(&self, customer_id: &str, event_id: uuid::Uuid) -> Option<CustomerFeatures> {
        let event_time = self.latest_event_time?;
        Some(CustomerFeatures {
            event_id,
            event_time,
            schema_version: SCHEMA_VERSION,
            customer_id: customer_id.to_owned(),
            as_of: event_time.date_naive(),
            features: self.features(),
            days: self.days().cloned().collect(),
            salaries: self.salaries.clone(),
            last_score: self.last_score,
        })
    }

    /// Rebuilds a window from one record holding all of it.
    pub fn from_record(record: &CustomerFeatures) -> Self {
        let mut window = CustomerWindow::default();
        window.merge_record(record);
        window
    }

    /// Folds a `customer_id` changelog record into the window: its customer-wide state
    /// (latest event time, salaries, last score) replaces the window's, since a later
    /// record is newer, and the buckets it holds (none in the per-day format) replace
    /// those of the same days. Days out of the ring are dropped.
    pub fn merge_record(&mut self, record: &CustomerFeatures) {
        for bucket in &record.days {
            self.merge_day(bucket.clone());
        }
        self.latest_event_time = Some(record.event_time);
        self.latest = day_number(record.event_time.date_naive());
        self.salaries.clone_from(&record.salaries);
        self.last_score = record.last_score;
        self.roll(&mut Vec::new());
    }

    /// Folds a day's bucket from the changelog into the window, replacing that day's.
    pub fn merge_day(&mut self, bucket: DayBucket) {
        let number = day_number(bucket.day);
        match self.days.binary_search_by_key(&number, |b| b.number) {
            Ok(i) => self.days[i].data = bucket,
            Err(i) => self.days.insert(i, Bucket { number, data: bucket }),
        }
    }

    /// Forgets the bucket of day number `number` (its changelog tombstone).
    pub fn remove_day(&mut self, number: i32) {
        if let Ok(i) = self.days.binary_search_by_key(&number, |b| b.number) {
            self.days.remove(i);
        }
    }
}

impl Bucket {
    fn new(number: i32, day: NaiveDate, p: &Posting) -> Self {
        Bucket {
            number,
            data: DayBucket {
                day,
                closing_balance_minor: p.balance_after_minor,
                closing_time: p.event_time,
                min_balance_minor: p.balance_after_minor,
                ..Default::default()
            },
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
