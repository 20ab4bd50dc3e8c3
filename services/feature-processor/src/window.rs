//! A customer's rolling windows in event time, and the named features computed from them.
//!
//! State is a sparse ring of daily buckets (days with activity, at most [`RING_DAYS`]
//! back from the customer's latest day) plus the latest salary credits. The same code
//! computes features in the stream and in training, so the model sees in production
//! exactly what it was trained on. Formulas: docs/features.md.
//!
//! Days are compared as day numbers (days since 0001-01-01), not as calendar dates. The
//! window sums are kept up to date per event rather than summed per score; a test
//! checks them against the sums by definition after every event of long simulated
//! histories with gaps, late events and restores.

use std::collections::VecDeque;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use smallvec::SmallVec;

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

/// The UTC day of `time`: `date_naive()` without its (here zero) offset addition,
/// which is a checked date-time addition on the hot path.
pub fn utc_day(time: DateTime<Utc>) -> NaiveDate {
    time.naive_utc().date()
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

/// What every score reads of a day: its number, closing and lowest balance, kept apart
/// from the rest of the bucket so that scoring reads 24 bytes per day of the last 30.
#[derive(Debug, Clone, Copy, PartialEq)]
struct DayKey {
    number: i32,
    closing: i64,
    low: i64,
}

impl DayKey {
    fn of(number: i32, bucket: &DayBucket) -> Self {
        DayKey { number, closing: bucket.closing_balance_minor, low: bucket.min_balance_minor }
    }
}

/// The sparse ring of daily buckets, oldest first: `keys[i]` and `data[i]` are one day.
#[derive(Debug, Clone, Default, PartialEq)]
struct Ring {
    keys: VecDeque<DayKey>,
    data: VecDeque<DayBucket>,
}

impl Ring {
    /// Where day `number` is (`Ok`) or would go (`Err`).
    fn find(&self, number: i32) -> Result<usize, usize> {
        let at = self.first_at(number);
        match self.keys.get(at) {
            Some(k) if k.number == number => Ok(at),
            _ => Err(at),
        }
    }

    /// The index of the first day at or after day `number`. Days are distinct and
    /// increasing, so the day `d` places before the newest is at most `d` days before
    /// it: the search starts there, which for a customer active every day is the answer.
    fn first_at(&self, number: i32) -> usize {
        let Some(newest) = self.keys.back().map(|k| k.number).filter(|n| *n >= number) else {
            return self.keys.len();
        };
        let mut i = (self.keys.len() - 1).saturating_sub((newest - number) as usize);
        while self.keys[i].number < number {
            i += 1;
        }
        i
    }

    fn insert(&mut self, at: usize, number: i32, bucket: DayBucket) {
        self.keys.insert(at, DayKey::of(number, &bucket));
        self.data.insert(at, bucket);
    }

    fn replace(&mut self, at: usize, bucket: DayBucket) {
        self.keys[at] = DayKey::of(self.keys[at].number, &bucket);
        self.data[at] = bucket;
    }

    fn remove(&mut self, at: usize) {
        self.keys.remove(at);
        self.data.remove(at);
    }

    fn pop_front(&mut self) -> Option<(i32, DayBucket)> {
        let key = self.keys.pop_front()?;
        Some((key.number, self.data.pop_front().expect("keys and data are one day each")))
    }
}

/// The windows a bucket counts towards, by its age (days before the customer's latest
/// day): 0 — the last 7 days; 1 — days 7–29 (with 0, the 30-day window); 2 — days
/// 30–59 (the previous 30 days); 3 — days 60–89 (with all others, the 90-day window).
fn class(age: i32) -> usize {
    match age {
        ..7 => 0,
        7..30 => 1,
        30..60 => 2,
        _ => 3,
    }
}

/// Sums of buckets' fields (money in minor units).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    inflow: i64,
    outflow: i64,
    discretionary: i64,
    atm: i64,
    gambling: i64,
    txn_count: i64,
    failed_debits: i64,
    missed_repayments: i64,
    overdraft_fees: i64,
    bnpl: i64,
}

impl Totals {
    fn of(b: &DayBucket) -> Self {
        Totals {
            inflow: b.inflow_minor,
            outflow: b.outflow_minor,
            discretionary: b.discretionary_minor,
            atm: b.atm_minor,
            gambling: b.gambling_minor,
            txn_count: b.txn_count.into(),
            failed_debits: b.failed_debits.into(),
            missed_repayments: b.missed_repayments.into(),
            overdraft_fees: b.overdraft_fees.into(),
            bnpl: b.bnpl_count.into(),
        }
    }

    /// `self + sign × other`, field by field.
    fn add(&mut self, other: &Totals, sign: i64) {
        self.inflow += sign * other.inflow;
        self.outflow += sign * other.outflow;
        self.discretionary += sign * other.discretionary;
        self.atm += sign * other.atm;
        self.gambling += sign * other.gambling;
        self.txn_count += sign * other.txn_count;
        self.failed_debits += sign * other.failed_debits;
        self.missed_repayments += sign * other.missed_repayments;
        self.overdraft_fees += sign * other.overdraft_fees;
        self.bnpl += sign * other.bnpl;
    }
}

/// The window sums as of the customer's latest day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sums {
    /// Every field, over the last 30 days.
    last_30: Totals,
    txn_count_7: i64,
    discretionary_previous_30: i64,
    missed_repayments_90: i64,
}

impl Sums {
    /// Adds (`sign` 1) or takes away (−1) a bucket of age class `class`.
    fn add(&mut self, class: usize, bucket: &Totals, sign: i64) {
        self.missed_repayments_90 += sign * bucket.missed_repayments;
        match class {
            0 => {
                self.txn_count_7 += sign * bucket.txn_count;
                self.last_30.add(bucket, sign);
            }
            1 => self.last_30.add(bucket, sign),
            2 => self.discretionary_previous_30 += sign * bucket.discretionary,
            _ => {}
        }
    }

    /// Moves a bucket from age class `was` to `is`.
    fn age(&mut self, was: usize, is: usize, bucket: &Totals) {
        if was != is {
            self.add(was, bucket, -1);
            self.add(is, bucket, 1);
        }
    }
}

/// One customer's rolling state.
///
/// Besides the buckets it keeps the window sums (30 days, the 30 before, 7 and 90 days)
/// up to date as events arrive and days age, so a score reads the sums and the last 30
/// days' keys instead of every bucket of the ring: the rings of many customers do not
/// fit in the cache, and reading them was the largest cost of scoring.
#[derive(Debug, Clone, Default)]
pub struct CustomerWindow {
    latest_event_time: Option<DateTime<Utc>>,
    /// Day number of `latest_event_time`.
    latest: i32,
    ring: Ring,
    salaries: SmallVec<[SalaryCredit; SALARIES_KEPT + 1]>,
    /// The last score emitted for this customer.
    pub last_score: Option<LastScore>,
    /// The window sums; `None` when the ring was changed from the changelog since
    /// (they are summed again when next needed).
    sums: Option<Sums>,
}

/// Windows are equal when their state is: the running sums follow from it.
impl PartialEq for CustomerWindow {
    fn eq(&self, other: &Self) -> bool {
        self.latest_event_time == other.latest_event_time
            && self.latest == other.latest
            && self.ring == other.ring
            && self.salaries == other.salaries
            && self.last_score == other.last_score
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
        self.latest_event_time.map(utc_day)
    }

    /// The daily buckets, oldest first.
    pub fn days(&self) -> impl Iterator<Item = &DayBucket> {
        self.ring.data.iter()
    }

    /// The bucket of day number `number`, if that day had activity.
    pub fn bucket(&self, number: i32) -> Option<&DayBucket> {
        self.ring.find(number).ok().map(|i| &self.ring.data[i])
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
        let day = utc_day(p.event_time);
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

        // Age the sums to the new latest day first, then add the posting.
        let (had_latest, previous_latest) = (self.latest_event_time.is_some(), self.latest);
        if self.latest_event_time.is_none_or(|t| p.event_time > t) {
            self.latest_event_time = Some(p.event_time);
            self.latest = number;
        }
        let mut sums = match self.sums.take() {
            Some(sums) if had_latest => self.aged(sums, previous_latest),
            _ => self.sums_by_pass(),
        };

        let index = match self.ring.find(number) {
            Ok(i) => i,
            Err(i) => {
                let opening = DayBucket {
                    day,
                    closing_balance_minor: p.balance_after_minor,
                    closing_time: p.event_time,
                    min_balance_minor: p.balance_after_minor,
                    ..Default::default()
                };
                self.ring.insert(i, number, opening);
                i
            }
        };
        let bucket = &mut self.ring.data[index];
        let before = Totals::of(bucket);
        if p.event_time >= bucket.closing_time {
            bucket.closing_time = p.event_time;
            bucket.closing_balance_minor = p.balance_after_minor;
        }
        bucket.min_balance_minor = bucket.min_balance_minor.min(p.balance_after_minor);
        self.ring.keys[index] = DayKey::of(number, bucket);
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
        let class = class(self.latest - number);
        sums.add(class, &Totals::of(bucket), 1);
        sums.add(class, &before, -1);

        self.roll(&mut sums, evicted);
        self.sums = Some(sums);
        Applied::Applied { new_day }
    }

    /// `sums`, as of the `previous` latest day, moved to the current latest day: the
    /// buckets that crossed an edge of an age class move to their new class. Those are
    /// found by day number, so a day's advance looks at a few buckets, not the ring.
    fn aged(&self, mut sums: Sums, previous: i32) -> Sums {
        if previous == self.latest {
            return sums;
        }
        let keys = &self.ring.keys;
        // Buckets already moved: one that crossed several edges moves once, at the oldest.
        let mut done = 0;
        for edge in [60, 30, 7] {
            // Crossed `edge`: previous − n < edge ≤ latest − n.
            let to = self.ring.first_at(self.latest - edge + 1);
            let from = self.ring.first_at(previous - edge + 1).max(done).min(to);
            for (key, bucket) in keys.range(from..to).zip(self.ring.data.range(from..to)) {
                let n = key.number;
                sums.age(class(previous - n), class(self.latest - n), &Totals::of(bucket));
            }
            done = done.max(to);
        }
        sums
    }

    /// The window sums, from every bucket.
    fn sums_by_pass(&self) -> Sums {
        let mut sums = Sums::default();
        for (key, bucket) in self.ring.keys.iter().zip(&self.ring.data) {
            sums.add(class(self.latest - key.number), &Totals::of(bucket), 1);
        }
        sums
    }

    /// Rolls the ring: drops the days that fell out of the longest window.
    fn roll(&mut self, sums: &mut Sums, evicted: &mut Vec<i32>) {
        while self.ring.keys.front().is_some_and(|k| self.latest - k.number >= RING) {
            let (number, bucket) = self.ring.pop_front().expect("the ring has a front day");
            sums.add(class(self.latest - number), &Totals::of(&bucket), -1);
            evicted.push(number);
        }
    }

    /// The named features as of the latest event-time day (all zero before any event).
    pub fn features(&self) -> FeatureValues {
        if self.latest_event_time.is_none() {
            return FeatureValues::default();
        }
        let as_of = self.latest;
        let sums = self.sums.unwrap_or_else(|| self.sums_by_pass());
        let last_30 = sums.last_30;

        // The 30 days ending with `as_of`: each day's closing balance is its own, or
        // carried forward from the last earlier active day (the newest day before the
        // window carries into it; before the first balance there is none). A balance
        // holds for a run of days, up to the next active day: the runs are summed
        // whole, so this looks at each active day once, not at each day.
        let window_start = as_of - 29;
        let from = self.ring.first_at(window_start);
        let mut run = from.checked_sub(1).map(|i| (self.ring.keys[i].closing, window_start));
        let mut balances = Balances::default();
        for key in self.ring.keys.range(from..).take_while(|k| k.number <= as_of) {
            if let Some((closing, since)) = run {
                balances.hold(closing, key.number - since, as_of - key.number < 6);
            }
            run = Some((key.closing, key.number));
            if as_of - key.number < 7 {
                balances.low(key.low);
            }
        }
        if let Some((closing, since)) = run {
            balances.hold(closing, as_of + 1 - since, true);
        }

        let salary_days_late = i64::from(match self.salaries.last() {
            Some(s) => as_of - day_number(s.day) - SALARY_CYCLE_DAYS as i32,
            None => {
                let first = self.ring.keys.front().map_or(as_of, |k| k.number);
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
        let balance_min_7d = balances.low_7.map_or(0.0, major);
        let balance_trend_30d = balances.slope();
        let days_overdrawn_30d = f64::from(balances.overdrawn);

        let (inflow, outflow) = (last_30.inflow, last_30.outflow);
        let share = |part: i64| {
            if outflow > 0 {
                part as f64 / outflow as f64
            } else {
                0.0
            }
        };
        let (discretionary, discretionary_before) = (last_30.discretionary, sums.discretionary_previous_30);

        FeatureValues {
            salary_days_late: salary_days_late as f64,
            salary_drop_ratio,
            balance_min_7d,
            balance_trend_30d,
            days_overdrawn_30d,
            failed_debits_30d: last_30.failed_debits as f64,
            missed_repayments_90d: sums.missed_repayments_90 as f64,
            overdraft_fees_30d: last_30.overdraft_fees as f64,
            atm_cash_share_30d: share(last_30.atm),
            gambling_share_30d: share(last_30.gambling),
            bnpl_count_30d: last_30.bnpl as f64,
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
            as_of: utc_day(event_time),
            features: self.features(),
            days: self.days().cloned().collect(),
            salaries: self.salaries.to_vec(),
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
    /// record is newer, and the buckets it holds replace those of the same days. Days
    /// out of the ring are dropped.
    pub fn merge_record(&mut self, record: &CustomerFeatures) {
        for bucket in &record.days {
            self.merge_day(bucket.clone());
        }
        self.latest_event_time = Some(record.event_time);
        self.latest = day_number(utc_day(record.event_time));
        self.salaries = record.salaries.iter().copied().collect();
        self.last_score = record.last_score;
        // The sums are summed again when next needed.
        self.roll(&mut Sums::default(), &mut Vec::new());
        self.sums = None;
    }

    /// Folds a day's bucket from the changelog into the window, replacing that day's.
    pub fn merge_day(&mut self, bucket: DayBucket) {
        let number = day_number(bucket.day);
        match self.ring.find(number) {
            Ok(i) => self.ring.replace(i, bucket),
            Err(i) => self.ring.insert(i, number, bucket),
        }
        self.sums = None;
    }

    /// Forgets the bucket of day number `number` (its changelog tombstone).
    pub fn remove_day(&mut self, number: i32) {
        if let Ok(i) = self.ring.find(number) {
            self.ring.remove(i);
            self.sums = None;
        }
    }
}

/// The closing balances of a run of consecutive days (minor units), taken in runs of
/// days that hold one balance, oldest first.
#[derive(Debug, Default)]
struct Balances {
    /// Days so far; they are numbered 0, 1, … in order.
    days: i64,
    /// Σ y and Σ i·yᵢ over those days, exact.
    sum: i128,
    sum_weighted: i128,
    /// Days closing below zero.
    overdrawn: u32,
    /// The lowest balance of the last 7 days, intraday lows included.
    low_7: Option<i64>,
}

impl Balances {
    /// `days` more days closing at `balance`; `recent` when the last of them is one of
    /// the last 7.
    fn hold(&mut self, balance: i64, days: i32, recent: bool) {
        if days <= 0 {
            return;
        }
        let (g, first) = (i64::from(days), self.days);
        let y = i128::from(balance);
        self.sum += y * i128::from(g);
        // Σ over i = first … first + g − 1 of i·y (the day counts are small).
        self.sum_weighted += y * i128::from(g * first + g * (g - 1) / 2);
        self.days += g;
        if balance < 0 {
            self.overdrawn += days as u32;
        }
        if recent {
            self.low(balance);
        }
    }

    fn low(&mut self, balance: i64) {
        self.low_7 = Some(self.low_7.map_or(balance, |m| m.min(balance)));
    }

    /// The least-squares slope of the balances over their days, in major units per
    /// day: with x = 0, 1, …, n − 1, n·Σ(x − x̄)(y − ȳ) = n·Σxy − Σx·Σy and
    /// n·Σ(x − x̄)² = n²(n² − 1)/12. The sums are exact integers, so only the final
    /// division rounds ([`slope`]'s value, to within its own rounding). 0 for fewer
    /// than two days.
    fn slope(&self) -> f64 {
        if self.days < 2 {
            return 0.0;
        }
        let n = self.days;
        let numerator = i128::from(n) * self.sum_weighted - i128::from(n * (n - 1) / 2) * self.sum;
        let denominator = n * n * (n * n - 1) / 12;
        // Exact as an i64 for any balance a bank holds; the i128 conversion otherwise.
        let numerator = i64::try_from(numerator).map_or_else(|_| numerator as f64, |v| v as f64);
        numerator / (denominator as f64 * 100.0)
    }
}

/// Least-squares slope of y over x; 0 with fewer than two distinct x (the definition
/// [`slope_of_days`] is tested against).
#[cfg(test)]
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

/// Simulated histories for the crate's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use chrono::{NaiveDate, TimeDelta};
    use eventpipe_common::events::TransactionEvent;
    use producer::simulator::{SimConfig, Simulator};

    /// The first simulated day.
    pub const START: NaiveDate = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();

    /// The transactions of `customers` simulated customers over `days`.
    pub fn simulated(customers: u32, seed: u64, days: u32) -> Vec<TransactionEvent> {
        Simulator::new(SimConfig { customers, seed, start: START }).run_transactions(days)
    }

    /// Holds back every `every`th event by up to 20 hours (still within a day's
    /// lateness): it moves to just before the first event 20 hours after it.
    pub fn hold_back(events: &mut Vec<TransactionEvent>, every: usize) {
        for i in (0..events.len()).step_by(every) {
            let held = events[i].clone();
            let to = events[i..].iter().position(|e| e.event_time > held.event_time + TimeDelta::hours(20));
            if let Some(to) = to {
                events.remove(i);
                events.insert(i + to - 1, held);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulated customers' transactions over `days`, with quiet spells of 30, 70 and
    /// 100 days (so days jump across every window edge at once, and the whole ring
    /// falls out) and every 7th event held back up to 20 hours (late, but within a day).
    fn history(days: u32) -> Vec<TransactionEvent> {
        let quiet = |customer: &str, day: i64| {
            let spell = match customer.bytes().last().unwrap() % 4 {
                0 => 20..50,
                1 => 60..130,
                2 => 40..140,
                _ => 0..0,
            };
            spell.contains(&day)
        };
        let mut events = testing::simulated(8, 11, days);
        events.retain(|t| !quiet(&t.customer_id, (t.event_time.date_naive() - testing::START).num_days()));
        testing::hold_back(&mut events, 7);
        events
    }

    /// The sums the features are made of, summed over the buckets by their age, the
    /// way the formulas in docs/features.md state them.
    fn by_definition(w: &CustomerWindow) -> [f64; 9] {
        let as_of = day_number(w.latest_day().unwrap());
        let sum = |range: std::ops::Range<i32>, field: fn(&DayBucket) -> i64| -> f64 {
            w.days().filter(|b| range.contains(&(as_of - day_number(b.day)))).map(field).sum::<i64>() as f64
        };
        [
            sum(0..30, |b| b.inflow_minor) / 100.0,
            sum(0..30, |b| b.outflow_minor) / 100.0,
            sum(0..30, |b| b.failed_debits.into()),
            sum(0..90, |b| b.missed_repayments.into()),
            sum(0..30, |b| b.overdraft_fees.into()),
            sum(0..30, |b| b.bnpl_count.into()),
            sum(0..7, |b| b.txn_count.into()),
            sum(0..30, |b| b.discretionary_minor),
            sum(30..60, |b| b.discretionary_minor),
        ]
    }

    fn reported(w: &CustomerWindow) -> [f64; 7] {
        let f = w.features();
        [
            f.inflow_30d,
            f.outflow_30d,
            f.failed_debits_30d,
            f.missed_repayments_90d,
            f.overdraft_fees_30d,
            f.bnpl_count_30d,
            f.txn_count_7d,
        ]
    }

    /// The balance features as docs/features.md defines them, from the buckets: each
    /// of the 30 days ending with the latest gets the closing balance of its own or the
    /// last earlier active day (none before the first).
    fn balances_by_definition(w: &CustomerWindow) -> [f64; 3] {
        let as_of = day_number(w.latest_day().unwrap());
        let closing_on =
            |day: i32| w.days().filter(|b| day_number(b.day) <= day).last().map(|b| b.closing_balance_minor);
        let days: Vec<(i32, i64)> =
            (as_of - 29..=as_of).filter_map(|d| closing_on(d).map(|c| (d - (as_of - 29), c))).collect();
        let lows = w.days().filter(|b| as_of - day_number(b.day) < 7).map(|b| b.min_balance_minor);
        let closings_7 = days.iter().filter(|(i, _)| *i >= 23).map(|(_, c)| *c);
        let points: Vec<(f64, f64)> = days.iter().map(|&(i, c)| (f64::from(i), c as f64 / 100.0)).collect();
        [
            lows.chain(closings_7).min().map_or(0.0, |m| m as f64 / 100.0),
            slope(&points),
            days.iter().filter(|(_, c)| *c < 0).count() as f64,
        ]
    }

    #[test]
    fn first_at_finds_the_first_day_at_or_after_a_day_in_sparse_rings() {
        let mut ring = Ring::default();
        let bucket = DayBucket { day: NaiveDate::MIN, ..Default::default() };
        assert_eq!(ring.first_at(5), 0);
        // Days 100..190 with every third, and a run of ten, missing.
        for number in (100..190).filter(|n| n % 3 != 0 && !(140..150).contains(n)) {
            ring.insert(ring.keys.len(), number, bucket.clone());
        }
        for number in 90..200 {
            let expected = ring.keys.partition_point(|k| k.number < number);
            assert_eq!(ring.first_at(number), expected, "day {number}");
        }
    }

    #[test]
    fn running_sums_equal_the_sums_by_definition_after_every_event_and_restore() {
        let events = history(200);
        let mut windows: std::collections::HashMap<String, CustomerWindow> = Default::default();
        let (mut late, mut restored, mut evicted) = (0, 0, Vec::new());
        for (i, e) in events.iter().enumerate() {
            let w = windows.entry(e.customer_id.clone()).or_default();
            if let Applied::Late { .. } = w.apply_posting(&Posting::from(e), TimeDelta::days(1), &mut evicted) {
                late += 1;
                continue;
            }
            assert_eq!(w.sums, Some(w.sums_by_pass()), "event {i}");
            let expected = by_definition(w);
            assert_eq!(reported(w), expected[..7], "event {i}");
            let f = w.features();
            let [min_7d, trend, overdrawn] = balances_by_definition(w);
            assert_eq!([f.balance_min_7d, f.days_overdrawn_30d], [min_7d, overdrawn], "event {i}");
            // The slope from exact sums; the definition rounds at every step.
            assert!(
                (f.balance_trend_30d - trend).abs() <= 1e-9 + 1e-12 * trend.abs(),
                "event {i}: {} {trend}",
                f.balance_trend_30d
            );
            let (disc, before) = (expected[7], expected[8]);
            let change = ((disc - before) / before.max(RATIO_FLOOR_MINOR as f64)).clamp(-1.0, 5.0);
            assert_eq!(w.features().discretionary_spend_change, change, "event {i}");
            // Now and then the window goes through its changelog record and goes on
            // from there, with its sums summed again.
            if i % 37 == 0 {
                let record = w.to_record(&e.customer_id, e.event_id).unwrap();
                let back = CustomerWindow::from_record(&record);
                assert_eq!(back.sums, None);
                assert_eq!(back.features(), w.features());
                *w = back;
                restored += 1;
            }
        }
        assert_eq!(late, 0, "held-back events are within the allowed lateness");
        assert!(restored > 20);
        assert!(evicted.len() > 400, "days left the ring: {}", evicted.len());
    }
}
